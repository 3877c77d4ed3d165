"""The journal of a real Flux instance, as a journal source for the mirror
(flux_annot.mirror, docs/flux.md).

`FluxJournal(uri)` owns one thread and one Flux handle: it connects to the
instance (`uri`, else `$FLUX_URI`, as every Flux tool), sends the streaming
`job-manager.events-journal` request (`full`, only the events the mirror
maps), and queues each response as an item for `poll`. Memos to send come
from other threads through a queue and a pipe the thread's reactor
watches; each memo RPC's reply is queued after the journal responses that
arrived before it (one handle, messages in order), so when the reply is
applied the memo's own journal event already is. When the connection
breaks it queues ("disconnected", reason), then retries every
`reconnect` seconds; each new connection starts with its full history.

Flux's Python bindings are imported from the Flux installation (they are
not a dependency of this package), found as Flux's own tools find them
(`flux_bindings`): `load_flux()` says in one sentence what is missing.
"""

import collections
import json
import logging
import os
import threading

from errno import EIO, EPERM

from flux_annot.errors import AnnotError
from flux_annot.flux.mirror import EVENTS, SENTINEL_ID, ItemQueue

log = logging.getLogger("flux_annot.flux")

_U64 = 1 << 64


def load_flux():
    """Import Flux's bindings, found as Flux's own tools find them
    (flux_annot.flux_bindings); AnnotError with one sentence when they are
    missing."""
    from flux_annot.flux.flux_bindings import import_flux

    return import_flux()


class FluxJournal(ItemQueue):
    """A journal source following a real Flux instance (module doc)."""

    def __init__(self, uri: str | None = None, reconnect: float = 1.0):
        super().__init__()
        self.flux = load_flux()
        self.uri = uri or os.environ.get("FLUX_URI")
        self.reconnect = reconnect
        self._memos = collections.deque()
        self._rfd, self._wfd = os.pipe()
        os.set_blocking(self._rfd, False)
        self._stop = False
        self._thread = None
        self.received = 0  # journal responses
        self._was_connected = False  # the last session got as far as connecting
        self._journal_cb = None  # the journal's C continuation (_session)

    def check_owner(self) -> None:
        """EPERM (a sentence) when Flux answers and we are not its owner: the
        journal and memos on users' behalf need the owner's credentials.
        Flux not answering is no error: the mirror serves what it has and
        connects when Flux is back."""
        try:
            h = self.flux.Flux(self.uri) if self.uri else self.flux.Flux()
        except OSError:
            return
        try:
            owner = int(h.attr_get("security.owner"))
        except (OSError, ValueError):
            return
        finally:
            del h  # the bindings close a handle when it is collected
        if owner != os.getuid():
            raise AnnotError(
                EPERM,
                f"serve --flux must run as the owner of the Flux instance at {self.uri} "
                f"(uid {owner}), not as uid {os.getuid()}: its journal and memos on "
                "users' behalf need the owner's credentials",
            )

    # -- the source interface (flux_annot.mirror) -------------------------

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="flux-annot-journal", daemon=True)
        self._thread.start()

    def send_memo(self, token: int, jobid: int, memo: dict, volatile: bool) -> None:
        self._memos.append((token, jobid, memo, volatile))
        try:
            os.write(self._wfd, b"m")
        except OSError:
            pass

    def close(self) -> None:
        self._stop = True
        try:
            os.write(self._wfd, b"q")
        except OSError:
            pass
        if self._thread is not None:
            self._thread.join(10)
        for fd in (self._rfd, self._wfd):
            try:
                os.close(fd)
            except OSError:
                pass

    # -- the thread ------------------------------------------------------------

    def _run(self):
        reported = None
        while not self._stop:
            try:
                reason = self._session()
            except Exception as exc:  # noqa: BLE001 - any failure: reconnect
                reason = f"{type(exc).__name__}: {exc}"
            if self._stop:
                break
            if reason != reported or self._was_connected:
                self._push(("disconnected", reason))
                reported = reason
            self._was_connected = False
            self._fail_memos(reason)
            self._sleep(self.reconnect)

    def _sleep(self, seconds):
        import select

        if self._stop:
            return
        r, _, _ = select.select([self._rfd], [], [], seconds)
        if r:
            self._drain_pipe()

    def _drain_pipe(self):
        try:
            while os.read(self._rfd, 4096):
                pass
        except (BlockingIOError, OSError):
            pass

    def _fail_memos(self, reason):
        while self._memos:
            token = self._memos.popleft()[0]
            self._push(
                (
                    "memo",
                    token,
                    EIO,
                    f"the Flux instance at {self.uri} is not reachable ({reason}); the memo was not sent",
                )
            )

    def _session(self):
        """One connection: returns the reason it ended."""
        flux = self.flux
        from flux.constants import FLUX_RPC_STREAMING

        try:
            h = flux.Flux(self.uri) if self.uri else flux.Flux()
        except OSError as exc:
            return f"cannot connect: {exc.strerror or exc}"
        if not self.uri:
            try:
                self.uri = h.attr_get("local-uri")
            except OSError:
                pass
        ended = []
        self._was_connected = True
        self._push(("connected", self.uri))
        payload = {"full": True, "allow": {name: 1 for name in EVENTS}}
        fut = h.rpc("job-manager.events-journal", payload, flags=FLUX_RPC_STREAMING)
        # Each journal response is taken with the C calls themselves
        # (flux_rpc_get, flux_future_reset from a plain cffi callback), not
        # through the bindings' Future.then/get_str/reset: those build
        # wrapper objects and a handle per response, several times this
        # thread's own work, all of it holding the GIL the event loop waits
        # for (the mirror's lag, docs/flux.md).
        from flux.core.inner import ffi, lib

        text_out = ffi.new("char *[1]")

        def on_journal(c_future, _arg):
            try:
                if lib.flux_rpc_get(c_future, text_out) < 0:
                    try:
                        fut.get_str()  # the same error, as the bindings word it
                        ended.append("journal ended")
                    except OSError as exc:
                        ended.append(f"journal ended: {exc.strerror or exc}")
                    h.reactor_stop()
                    return
                text = ffi.string(text_out[0]) if text_out[0] != ffi.NULL else b"{}"
                lib.flux_future_reset(c_future)
                self.received += 1
                d = json.loads(text)
                jobid = d.get("id")
                if jobid == -1 or jobid == SENTINEL_ID:
                    self._push(("sentinel",))
                else:
                    if jobid < 0:
                        jobid += _U64
                    self._push(("journal", jobid, d.get("events") or []))
            except Exception as exc:  # noqa: BLE001 - never raise into Flux's reactor
                ended.append(f"journal response not understood: {type(exc).__name__}: {exc}")
                h.reactor_stop()

        # kept on self: alive until the next session, after this one's
        # future (destroyed when _session returns) can no longer call it
        self._journal_cb = on_journal_c = ffi.callback("void(flux_future_t *, void *)", on_journal)

        def on_memo(f, token):
            try:
                f.get()
                self._push(("memo", token, 0, None))
            except OSError as exc:
                self._push(("memo", token, exc.errno or EIO, exc.strerror or str(exc)))

        def on_pipe(handle, watcher, fd, revents, args):
            self._drain_pipe()
            if self._stop:
                ended.append("closed")
                handle.reactor_stop()
                return
            while self._memos:
                token, jobid, memo, volatile = self._memos.popleft()
                body = {"id": jobid, "memo": memo}
                if volatile:
                    body["volatile"] = True
                h.rpc("job-manager.memo", body).then(on_memo, token)

        def on_timer(handle, watcher, revents, args):
            if self._stop:
                ended.append("closed")
                handle.reactor_stop()

        if lib.flux_future_then(fut.pimpl.handle, -1.0, on_journal_c, ffi.NULL) < 0:
            return "cannot follow the journal (flux_future_then failed)"
        pipe = h.fd_watcher_create(self._rfd, on_pipe)
        pipe.start()
        timer = h.timer_watcher_create(1.0, on_timer, repeat=1.0)
        timer.start()
        on_pipe(h, pipe, self._rfd, 0, None)  # memos queued before we were connected
        try:
            rc = h.reactor_run()
        except OSError as exc:
            ended.append(f"connection lost: {exc.strerror or exc}")
            rc = -1
        finally:
            pipe.stop()
            timer.stop()
        if not ended:
            ended.append("connection lost" if rc < 0 else "the reactor stopped")
        return ended[0]  # the handle closes when collected (the bindings refuse close())
