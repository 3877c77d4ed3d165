"""The service on a Unix socket (docs/protocol.md): `Server` = the dispatch
(flux_annot.dispatch: topics, checks, deferral, streams) + the socket
transport (flux_annot.unix_server: connections, SO_PEERCRED, throttling).
`serve --flux` adds the broker transport (flux_annot.broker_server).

Entry points (used by `flux-annotate serve`):

    await serve(socket_path=None, store=None, config=None, ready=None,
                service=None, stop=None, handle_signals=True)
        Run until `stop` (an asyncio.Event) is set or SIGTERM/SIGINT arrives
        (signals are handled when called from the main thread and
        handle_signals is true). `store`: SQLite path, or None / ":memory:"
        for none. `config`: dict, TOML path, or None. `ready`: called with
        the `Server` once the socket accepts connections (or `.set()` if it
        is an Event). `service`: an existing AnnotationService to serve
        instead of building one (it is not closed at the end).

    run_server(socket_path=None, store=None, config=None) -> int
        The blocking form: asyncio.run(serve(...)), returns exit status 0.

    python -m flux_annot.server [--socket P] [--store FILE|:memory:] [--config F]
        Prints "ready <socket path>" on stdout once listening (tests use it).

Shutdown (SIGTERM/SIGINT or `stop`): stop accepting, commit the open
batch, send the deferred replies and the queued batches, end every stream
with ENODATA, close the connections (waiting a few seconds for slow
readers), close the service, remove the socket file.
"""

import argparse
import asyncio
import logging
import os
import signal
import sys

from flux_annot.ops import daemon
from flux_annot.wire import protocol
from flux_annot.wire.dispatch import (  # noqa: F401  (re-exported: what importers used from here)
    Dispatch,
    _jobid,
    _object,
    _opt_bool,
)
from flux_annot.errors import AnnotError
from flux_annot.wire.unix_server import Connection, SocketTransport, prepare_socket_path  # noqa: F401

log = logging.getLogger("flux_annot.server")


class Server(Dispatch):
    """An AnnotationService served on one Unix socket (module doc); other
    transports (`add_transport`) share its dispatch."""

    def __init__(self, service, socket_path):
        super().__init__(service)
        self.socket_path = socket_path
        self.unix = SocketTransport(self, socket_path)
        self.add_transport(self.unix)

    async def start(self):
        self.loop = asyncio.get_running_loop()
        await self.unix.start()
        self.start_writer()


def _make_service(store, config):
    from flux_annot.service.service import AnnotationService

    if store in (None, ":memory:"):
        store = None
    if isinstance(config, (str, os.PathLike)):
        config = _load_config(config)
    return AnnotationService(owner_uid=os.getuid(), store=store, config=config)


def _load_config(path):
    try:
        from flux_annot.service import config as _config

        loader = getattr(_config, "load", None) or getattr(_config, "load_file", None)
    except ImportError:
        loader = None
    if loader is not None:
        return loader(path)
    import tomllib

    with open(path, "rb") as f:
        return tomllib.load(f)


async def serve(
    socket_path=None,
    store=None,
    config=None,
    ready=None,
    service=None,
    stop=None,
    handle_signals=True,
    server_class=None,
):
    """Serve until `stop` is set or SIGTERM/SIGINT (see module doc).
    server_class: a `Server` subclass to use (the Flux mirror's)."""
    path = socket_path or protocol.default_socket_path()
    own_service = service is None
    if own_service:
        service = _make_service(store, config)
    loop = asyncio.get_running_loop()
    stop = stop or asyncio.Event()
    srv = (server_class or Server)(service, path)
    installed = []
    try:
        await srv.start()
        if handle_signals and _is_main_thread():
            for sig in (signal.SIGTERM, signal.SIGINT):
                loop.add_signal_handler(sig, stop.set)
                installed.append(sig)
        if ready is not None:
            ready.set() if hasattr(ready, "set") else ready(srv)
        await stop.wait()
        log.info("stopping: committing the open batch, answering waiting requests")
        daemon.notify("STOPPING=1")
    finally:
        # Signals stay caught until the end: a second SIGTERM during the
        # shutdown must not kill the process halfway.
        try:
            await srv.stop()
            if own_service:
                service.close()
            log.info("stopped")
        finally:
            for sig in installed:
                loop.remove_signal_handler(sig)
    return 0


def _is_main_thread():
    import threading

    return threading.current_thread() is threading.main_thread()


def run_server(socket_path=None, store=None, config=None, ready=None):
    """Blocking form of `serve`; returns the exit status (0).

    For a process that only serves (the CLI, `python -m`): when `serve`
    hands its signal handlers back at its very end, SIGTERM/SIGINT are
    ignored from then on (a second signal during the last teardown would
    otherwise kill the process, status -15, after everything was answered).
    """

    async def main():
        status = await serve(socket_path, store, config, ready=ready)
        if _is_main_thread():
            for sig in (signal.SIGTERM, signal.SIGINT):
                signal.signal(sig, signal.SIG_IGN)
        return status

    return asyncio.run(main())


def main(argv=None):
    ap = argparse.ArgumentParser(prog="python -m flux_annot.server")
    ap.add_argument("--socket", default=None)
    ap.add_argument("--store", default=":memory:")
    ap.add_argument("--config", default=None)
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="flux-annot: %(message)s")

    def ready(srv):
        print(f"ready {srv.socket_path}", flush=True)

    try:
        return run_server(args.socket, args.store, args.config, ready=ready)
    except AnnotError as e:
        print(f"flux-annot: {e}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())