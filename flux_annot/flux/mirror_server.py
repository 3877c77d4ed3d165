"""`flux-annotate serve --flux`: the socket server in front of a
`MirrorService` (docs/flux.md).

`MirrorServer` is the usual `Server` (flux_annot.server) with four
differences: with `broker=True` (`run_mirror`) the same dispatch also
serves as the service `annot` of the instance (flux_annot.broker_server),
registered before it reports ready; the journal source's thread wakes
the event loop, which applies what arrived (`service.pump(0)`); the batch timer also releases
held annotations (`service.flush_live`); and the writes: a `memo` (or an
`annotate` of the `user` namespace alone) is checked here, sent to Flux,
and answered once it is back through the journal and committed; `submit`,
`state`, `alloc-response` and other namespaces are EPERM (the service
says why).
"""

import asyncio
import functools
import logging
import os
import sys

from flux_annot.errors import EPERM, AnnotError
from flux_annot.flux.mirror import MirrorService
from flux_annot.wire.protocol import response, response_error
from flux_annot.wire.dispatch import _jobid, _object, _opt_bool
from flux_annot.wire.server import Server, serve

log = logging.getLogger("flux_annot.mirror")

#: seconds between GIL hand-overs in `serve --flux` (Python's default: 0.005)
GIL_SWITCH = 0.0005

#: journal items applied per loop turn: a burst is applied in slices, each
#: closed into a batch and handed to the writer while the next is applied
#: (a first event of a burst does not wait for the whole burst)
PUMP_ITEMS = 128


class MirrorServer(Server):
    """A `Server` of a `MirrorService` (module doc)."""

    hot_writes = False  # memos go to Flux through h_memo / h_annotate

    def __init__(self, service, socket_path, broker=False, broker_uri=None):
        super().__init__(service, socket_path)
        self.broker = None
        if broker:
            from flux_annot.flux.broker_server import BrokerTransport

            self.broker = BrokerTransport(self, broker_uri or getattr(service.source, "uri", None))
            self.add_transport(self.broker)

    async def start(self):
        await super().start()
        if self.broker is not None:
            await self.broker.start()
        source = self.service.source
        loop = self.loop

        def wakeup():
            try:
                loop.call_soon_threadsafe(self.on_journal)
            except RuntimeError:  # the loop is closed: shutting down
                pass

        source.set_wakeup(wakeup)
        source.start()
        self.on_journal()

    def on_journal(self):
        """The source has items: apply them, then the usual I/O work."""
        if self.stopping:
            return
        n = 0
        try:
            n = self.service.pump(0, PUMP_ITEMS)
        except Exception:  # never let one bad item stop the mirror
            log.exception("applying journal events failed")
        self.after_io()
        if n == PUMP_ITEMS:  # more wait: after this turn's batch is on its way
            self.loop.call_soon(self.on_journal)

    def after_io(self):
        super().after_io()
        if self.timer is None and not self.stopping and self.service.holding():
            self.timer = self.loop.call_later(self.window or 0.001, self.on_timer)

    def on_timer(self):
        self.timer = None
        try:
            self.service.flush_live()
        except Exception:
            log.exception("closing the batch failed")
        self.after_io()

    # writes

    def _flux_memo(self, conn, mt, jobid, memo, volatile):
        body = self.service.check_memo(conn.cred, jobid, memo, volatile)
        self.service._n_memo += 1
        conn.ndeferred += 1

        def done(errnum, errstr):
            conn.push_deferred(response_error(mt, errnum, errstr) if errnum else response(mt))

        self.service.send_memo(jobid, body, volatile, done)

    def h_memo(self, conn, mt, p):
        jobid = _jobid(p)
        memo = _object(p, "memo")
        self._flux_memo(conn, mt, jobid, memo, _opt_bool(p, "volatile"))

    def h_annotate(self, conn, mt, p):
        jobid = _jobid(p)
        ann = _object(p, "annotations")
        volatile = _opt_bool(p, "volatile")
        other = [k for k in ann if k != "user"]
        if other:
            self.service.annotate(conn.cred, jobid, ann, volatile)  # raises EPERM
            raise AnnotError(EPERM, "only the user namespace can be written")
        user = ann.get("user")
        if user is None:
            user = {}
        self._flux_memo(conn, mt, jobid, user, volatile)

    def h_submit(self, conn, mt, p):
        self.service.submit(None, None)

    def h_state(self, conn, mt, p):
        self.service.state(None, None)

    def h_alloc_response(self, conn, mt, p):
        self.service.alloc_response(p)


def run_mirror(uri=None, socket_path=None, store=None, config=None, ready=None):
    """`serve --flux`: mirror the Flux instance at `uri` (default
    `$FLUX_URI`) until SIGTERM/SIGINT; returns the exit status (0).
    AnnotError when Flux's bindings are missing or the store refuses."""
    from flux_annot.flux.flux_source import FluxJournal

    source = FluxJournal(uri)
    source.check_owner()
    # Three threads share the GIL (the loop, the journal, the store writer);
    # hand it over sooner than the default 5 ms, or every wake-up of the
    # loop waits behind a burst of journal parsing (the lag, docs/flux.md).
    sys.setswitchinterval(GIL_SWITCH)
    # The default batch window (10 ms) unless the config sets one. A window
    # of 0 (a batch closes at the end of each loop turn) took a few ms off
    # the mirror's median lag, but a guest's stream opened through the
    # broker then sometimes never got its snapshot (tests/test_flux_broker.py,
    # a third of runs): kept at the default until that is understood.
    service = MirrorService(
        source, owner_uid=os.getuid(), store=store, config=config
    )
    try:
        return asyncio.run(
            serve(
                socket_path,
                ready=ready,
                service=service,
                server_class=functools.partial(MirrorServer, broker=True, broker_uri=source.uri),
            )
        )
    finally:
        source.close()
        service.close()
