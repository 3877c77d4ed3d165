"""`serve` as a system service (docs/operations.md): its log lines and
systemd's readiness notification.

Logging: one line per event worth a line (start, ready, store failing and
recovered, Flux lost and back, stopping, stopped), on stderr, no timestamp
(the journal or the terminal adds its own). When stderr is the journal
($JOURNAL_STREAM names it, as systemd sets it) each line starts with its
syslog priority, `<4>` for a warning (sd-daemon(3)), which journald reads
as the entry's priority; elsewhere lines start with `flux-annotate: `.

Readiness: `notify("READY=1")` sends one datagram to $NOTIFY_SOCKET (a
path, or `@name` for an abstract socket) as sd_notify(3) does, so a unit
with `Type=notify` starts its dependants once the service answers. Without
$NOTIFY_SOCKET it does nothing; a manager that went away never stops the
service (the error is ignored).
"""

import logging
import os
import socket
import sys

#: sd-daemon(3) priority prefixes by logging level
_PRIORITY = {logging.DEBUG: 7, logging.INFO: 6, logging.WARNING: 4, logging.ERROR: 3,
             logging.CRITICAL: 2}


def journal_stream(stream=None):
    """Whether `stream` (stderr) is the journal: $JOURNAL_STREAM is its device:inode."""
    stream = stream if stream is not None else sys.stderr
    try:
        dev, ino = (int(x) for x in os.environ.get("JOURNAL_STREAM", "").split(":"))
        st = os.fstat(stream.fileno())
    except (ValueError, OSError, AttributeError):
        return False
    return (st.st_dev, st.st_ino) == (dev, ino)


class _Format(logging.Formatter):
    def __init__(self, prefix, journal):
        super().__init__()
        self.prefix = prefix
        self.journal = journal

    def format(self, record):
        text = record.getMessage()
        if record.exc_info:  # an unexpected fault: its traceback, one journal entry
            text += "\n" + self.formatException(record.exc_info)
        if self.journal:
            level = max((lv for lv in _PRIORITY if lv <= record.levelno), default=logging.DEBUG)
            return f"<{_PRIORITY[level]}>" + text
        return self.prefix + text


def setup_logging(prog, level=logging.INFO):
    """flux_annot's loggers to stderr, one line per record (module doc)."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(_Format(f"{prog}: ", journal_stream()))
    logger = logging.getLogger("flux_annot")
    logger.handlers[:] = [handler]
    logger.setLevel(level)
    logger.propagate = False
    return logger


def notify(*states):
    """Send `states` ("READY=1", "STOPPING=1", "STATUS=...") to systemd's
    $NOTIFY_SOCKET; True if sent, False without one or when it failed."""
    addr = os.environ.get("NOTIFY_SOCKET")
    if not addr or not states:
        return False
    if addr[0] == "@":
        addr = "\0" + addr[1:]  # an abstract socket
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as s:
            s.connect(addr)
            s.sendall("\n".join(states).encode())
    except OSError:
        return False
    return True
