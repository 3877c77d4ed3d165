"""`flux-annotate dashboard`: a live web page of the queue (docs/dashboard.md).

Data flow. The dashboard process holds ONE `live.LiveModel`, fed by ONE
subscription to the service (`live.follow`: snapshot + deltas, `since` on
reconnect, a `list` re-read after EOVERFLOW), as the user who runs the
dashboard, so the page shows exactly what that user may see. The model's
listener turns each change into one Server-Sent Events frame, encoded once
and shared by every open page:

- `snapshot`: every job the model holds (a page's stream starts with one;
  after a resynchronisation every page gets a new one);
- `batch`: the service's delta batch as it came (docs/events.md: whole
  annotations replaced by merge patches), which the page merges itself
  (static/merge.js, the rules of docs/data-model.md);
- `status`: `connecting` / `live` / `resync` / `disconnected` (the banner);
- `accuracy`: the estimate accuracy report with the histogram of the last
  estimate's error (docs/accuracy.md), which the model asks of the service
  when jobs start or end (`follow(accuracy=True)`); a page gets the latest
  one right after its snapshot.

Job ids travel as decimal strings (a JavaScript number cannot hold a
64-bit id). A job born after the snapshot is introduced by its first
transition; the frame carries its owner (`owners`) and the names of new
users (`users`).

Each page has a bounded queue of frames in this process. The writer of a
page awaits the socket (aiohttp's drain); a page that stops reading lets its
queue grow to `page_buffer` bytes and is then dropped (its connection is
closed; the browser's EventSource reconnects and starts again from a new
snapshot). So N pages cost the service one subscription in total, and a
stalled browser costs this process at most `page_buffer` bytes.

Every request needs the token printed at start: `?token=T` on any URL, or
the cookie (`flux-annot-dashboard-PORT`) that the first load with the token sets (it then redirects to
the bare URL so the token leaves the address bar). Anything else is 403.
"""

import asyncio
import collections
import hmac
import json
import logging
import pwd
import secrets
import signal
import sys
import time
from pathlib import Path

from aiohttp import web

log = logging.getLogger("flux_annot.dashboard")

STATIC_DIR = Path(__file__).resolve().parent / "dashboard_static"
DEFAULT_PAGE_BUFFER = 16 << 20
_NO_RAW = object()
OWNER_POLL = 0.05  # seconds between looks for owners the model has learnt
OWNER_WAIT = 10.0  # seconds to wait for the owner of one job
KEEPALIVE = 15.0  # seconds between SSE comments on an idle stream
RETRY_MS = 2000  # EventSource reconnect delay the stream announces

# What the server answers with: file name -> content type. Nothing else is served.
STATIC_FILES = {
    "dashboard.js": "text/javascript; charset=utf-8",
    "merge.js": "text/javascript; charset=utf-8",
    "dashboard.css": "text/css; charset=utf-8",
}

SECURITY_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
        "connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
    ),
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-store",
    "X-Frame-Options": "DENY",
}


def _dumps(obj):
    return json.dumps(obj, separators=(",", ":"), ensure_ascii=False, allow_nan=False)


def sse_frame(event, data):
    """One SSE frame: `event: NAME` and the JSON text on one `data:` line
    (compact JSON holds no newline)."""
    return f"event: {event}\ndata: {data}\n\n".encode("utf-8")


class Page:
    """One open page: a bounded queue of frames and the task writing them."""

    __slots__ = ("queue", "queued", "bound", "wake", "dropped", "transport", "peer")

    def __init__(self, bound, transport, peer):
        self.queue = collections.deque()
        self.queued = 0
        self.bound = bound
        self.wake = asyncio.Event()
        self.dropped = False
        self.transport = transport
        self.peer = peer

    def push(self, frame):
        """Queue a frame; returns False (and drops the page) past the bound."""
        if self.dropped:
            return False
        self.queue.append(frame)
        self.queued += len(frame)
        if self.queued > self.bound:
            self.drop()
            return False
        self.wake.set()
        return True

    def drop(self):
        self.dropped = True
        self.queue.clear()
        self.queued = 0
        self.wake.set()
        if self.transport is not None:
            self.transport.abort()  # a writer blocked in drain() wakes with an error

    async def run(self, resp):
        """Write queued frames until the page goes away or is dropped."""
        while not self.dropped:
            if not self.queue:
                self.wake.clear()
                try:
                    await asyncio.wait_for(self.wake.wait(), KEEPALIVE)
                except asyncio.TimeoutError:
                    self.queue.append(b": keepalive\n\n")
                    self.queued += 13
                continue
            frame = self.queue.popleft()
            self.queued -= len(frame)
            await resp.write(frame)


class Dashboard:
    """The dashboard: one live model, its pages, the aiohttp application."""

    def __init__(self, socket=None, token=None, page_buffer=DEFAULT_PAGE_BUFFER, model=None,
                 retry=1.0, flux_uri=None):
        from flux_annot.views.live import LiveModel

        self.socket = socket
        self.flux_uri = flux_uri  # the service as every client chooses it (flux_annot.target)
        self.token = token or secrets.token_urlsafe(32)
        self._token_b = self.token.encode("utf-8")
        self.page_buffer = page_buffer
        self.retry = retry
        self.model = model if model is not None else LiveModel()
        self.pages = set()
        self.dropped = 0
        self.port = None
        self.cookie = "flux-annot-dashboard"  # + "-PORT" once bound (cookies ignore ports)
        self._users = {}  # uid -> name (pwd lookups cached)
        self._snapshot = None  # (key, frame) of the last snapshot frame built
        self._generation = 0  # bumped by every snapshot/status the model reports
        self._unowned = {}  # job id -> until when to wait for its owner (pages not told yet)
        self._owner_task = None
        self._accuracy_frame = None  # the latest `accuracy` frame (new pages get it)
        self.model.add_listener(self._on_model)

    # --- the model's side --------------------------------------------------

    def username(self, uid):
        name = self._users.get(uid)
        if name is None:
            try:
                name = pwd.getpwuid(uid).pw_name
            except (KeyError, OverflowError, TypeError):
                name = str(uid)
            self._users[uid] = name
        return name

    def _status_fields(self):
        m = self.model
        return {"seq": m.seq, "status": m.status, "error": getattr(m, "error", None),
                "t": time.time(), "eps": round(m.events_per_second(), 1)}

    def snapshot_frame(self):
        """The snapshot frame of the model as it is now (cached per seq).
        Trees are copied as the model's canonical JSON text when it has it."""
        key = (self.model.seq, self._generation)
        if self._snapshot is not None and self._snapshot[0] == key:
            return self._snapshot[1]
        parts = []
        users = {}
        for jid, job in self.model.jobs.items():
            uid = job.userid
            if uid is None:
                self._unowned.setdefault(jid, time.monotonic() + OWNER_WAIT)
            elif uid not in users:
                users[uid] = self.username(uid)
            raw = getattr(job, "annotations_json", _NO_RAW)
            if raw is _NO_RAW:
                raw = _dumps(job.annotations).encode("utf-8")
            elif raw is None:
                raw = b"null"
            parts.append(b'["%d",%s,%s,%s]' % (jid, _dumps(uid).encode(), _dumps(job.state).encode(),
                                                raw))
        msg = self._status_fields()
        msg["users"] = {str(u): n for u, n in users.items()}
        head = _dumps(msg).encode("utf-8")
        data = head[:-1] + b',"jobs":[' + b",".join(parts) + b"]}"
        frame = b"event: snapshot\ndata: " + data + b"\n\n"
        self._snapshot = (key, frame)
        return frame

    def _owners(self, ids):
        """({id: userid}, {uid: name}) of the jobs in `ids` whose owner the
        model knows; the others are remembered (for OWNER_WAIT seconds) and
        sent in an `owners` frame once the model has asked the service."""
        jobs = self.model.jobs
        owners = {}
        users = {}
        unowned = self._unowned
        for jid in ids:
            job = jobs.get(jid)
            uid = job.userid if job is not None else None
            if uid is None:
                if job is not None and jid not in unowned:
                    unowned[jid] = time.monotonic() + OWNER_WAIT
                continue
            unowned.pop(jid, None)
            owners[str(jid)] = uid
            users[str(uid)] = self.username(uid)
        return owners, users

    def batch_frame(self, payload):
        """The relayed form of one delta batch: ids as strings, the owners
        of jobs named in transitions, names of users seen for the first time."""
        msg = self._status_fields()
        msg["seq"] = payload.get("seq", self.model.seq)
        transitions = payload.get("transitions") or ()
        msg["transitions"] = [[str(e[0])] + list(e[1:]) for e in transitions]
        msg["annotations"] = [[str(e[0]), e[1]] for e in payload.get("annotations") or ()]
        owners, users = self._owners([e[0] for e in transitions])
        if owners:
            msg["owners"] = owners
        if users:
            msg["users"] = users
        return sse_frame("batch", _dumps(msg))

    def owners_frame(self):
        """An `owners` frame for jobs whose owner the model learnt since, or None."""
        if not self._unowned:
            return None
        now = time.monotonic()
        for jid in [j for j, t in self._unowned.items() if t < now]:
            del self._unowned[jid]  # the service never said (the job is gone)
        owners, users = self._owners(list(self._unowned))
        if not owners:
            return None
        return sse_frame("owners", _dumps({"owners": owners, "users": users}))

    def _on_model(self, kind, payload):
        if kind == "batch":
            frame = self.batch_frame(payload)
        elif kind == "snapshot":
            self._generation += 1
            frame = self.snapshot_frame()
        elif kind == "status":
            self._generation += 1
            frame = sse_frame("status", _dumps(self._status_fields()))
        elif kind == "accuracy":
            frame = self._accuracy_frame = sse_frame("accuracy", _dumps(payload))
        else:
            return
        self.broadcast(frame)
        if self._unowned and self._owner_task is None:
            self._owner_task = asyncio.get_running_loop().call_later(OWNER_POLL, self._poll_owners)

    def _poll_owners(self):
        """Relay owners the model has learnt (it asks the service after
        applying a batch that names a job it did not know)."""
        self._owner_task = None
        frame = self.owners_frame()
        if frame is not None:
            self._generation += 1  # the next snapshot has these owners
            self.broadcast(frame)
        if self._unowned:
            self._owner_task = asyncio.get_running_loop().call_later(OWNER_POLL, self._poll_owners)

    def broadcast(self, frame):
        for page in list(self.pages):
            if not page.push(frame):
                self._forget(page, "it stopped reading")

    def _forget(self, page, why):
        if page in self.pages:
            self.pages.discard(page)
            self.dropped += 1
            log.warning("dropped the page at %s: %s (over %d bytes queued)", page.peer, why,
                        page.bound)

    # --- HTTP --------------------------------------------------------------

    def _token_ok(self, text):
        return text is not None and hmac.compare_digest(
            text.encode("utf-8", "surrogatepass"), self._token_b
        )

    def app(self):
        @web.middleware
        async def guard(request, handler):
            if not (self._token_ok(request.query.get("token"))
                    or self._token_ok(request.cookies.get(self.cookie))):
                return web.Response(
                    status=403, headers=SECURITY_HEADERS,
                    text="403 Forbidden: this dashboard needs its token; open the URL "
                         "that `flux-annotate dashboard` printed (it ends in ?token=...).\n")
            try:
                resp = await handler(request)
            except web.HTTPException as exc:
                exc.headers.update(SECURITY_HEADERS)
                raise
            return resp

        app = web.Application(middlewares=[guard], client_max_size=4096)
        app.router.add_get("/", self.h_index)
        app.router.add_get("/events", self.h_events)
        app.router.add_get("/static/{name}", self.h_static)
        app.router.add_get("/healthz", self.h_health)
        return app

    async def h_index(self, request):
        if "token" in request.query:
            # Keep the token out of the address bar from now on: the cookie carries it.
            resp = web.HTTPSeeOther("/", headers=SECURITY_HEADERS)
            resp.set_cookie(self.cookie, self.token, httponly=True, samesite="Strict", path="/")
            raise resp
        body = (STATIC_DIR / "index.html").read_bytes()
        return web.Response(body=body, content_type="text/html", charset="utf-8",
                            headers=SECURITY_HEADERS)

    async def h_static(self, request):
        name = request.match_info["name"]
        ctype = STATIC_FILES.get(name)
        if ctype is None:
            raise web.HTTPNotFound(text=f"404: no static file {name!r}\n")
        return web.Response(body=(STATIC_DIR / name).read_bytes(),
                            headers={**SECURITY_HEADERS, "Content-Type": ctype})

    async def h_health(self, request):
        m = self.model
        return web.json_response(
            {"status": m.status, "seq": m.seq, "jobs": len(m.jobs), "pages": len(self.pages),
             "dropped_pages": self.dropped}, headers=SECURITY_HEADERS)

    async def h_events(self, request):
        resp = web.StreamResponse(headers={
            **SECURITY_HEADERS,
            "Content-Type": "text/event-stream; charset=utf-8",
            "X-Accel-Buffering": "no",
        })
        await resp.prepare(request)
        page = Page(self.page_buffer, request.transport, request.remote)
        # No await between the snapshot and joining the fan-out: the next
        # batch this page gets is the one after the snapshot's seq.
        page.push(f"retry: {RETRY_MS}\n\n".encode())
        page.push(self.snapshot_frame())
        if self._accuracy_frame is not None:
            page.push(self._accuracy_frame)
        self.pages.add(page)
        try:
            await page.run(resp)
        except (ConnectionError, RuntimeError, OSError):
            pass  # the page went away (or was dropped)
        finally:
            if page.dropped:
                self._forget(page, "it stopped reading")
            self.pages.discard(page)
        return resp

    # --- running -----------------------------------------------------------

    async def serve(self, bind="127.0.0.1", port=0, ready=None, stop=None):
        """Serve until `stop` (an asyncio.Event) is set."""
        from flux_annot.views.live import follow

        runner = web.AppRunner(self.app(), access_log=None, handle_signals=False)
        await runner.setup()
        site = web.TCPSite(runner, bind, port, reuse_address=True)
        await site.start()
        sockets = site._server.sockets if site._server is not None else ()
        self.port = sockets[0].getsockname()[1] if sockets else port
        self.cookie = f"flux-annot-dashboard-{self.port}"
        stop = stop or asyncio.Event()
        follower = asyncio.ensure_future(
            follow(self.model, self.socket, retry=self.retry, stop=stop, flux_uri=self.flux_uri,
                   accuracy=True))
        if ready is not None:
            ready(self)
        try:
            waiter = asyncio.ensure_future(stop.wait())
            done, _ = await asyncio.wait({waiter, follower}, return_when=asyncio.FIRST_COMPLETED)
            if follower in done and not waiter.done():
                exc = follower.exception()
                waiter.cancel()
                if exc is not None:
                    raise exc
        finally:
            stop.set()
            if self._owner_task is not None:
                self._owner_task.cancel()
            pages, self.pages = list(self.pages), set()
            for page in pages:
                page.drop()
            follower.cancel()
            try:
                await follower
            except (asyncio.CancelledError, Exception):
                pass
            await runner.cleanup()

    def url(self, bind):
        host = bind
        if ":" in host and not host.startswith("["):
            host = f"[{host}]"
        if host in ("0.0.0.0", "[::]", ""):
            host = "127.0.0.1"
        return f"http://{host}:{self.port}/?token={self.token}"


def run_dashboard(socket=None, bind="127.0.0.1", port=0, page_buffer=DEFAULT_PAGE_BUFFER,
                  out=None, flux_uri=None):
    """The CLI's entry point: serve until SIGINT/SIGTERM; returns the exit status."""
    out = out or sys.stdout
    logging.basicConfig(level=logging.WARNING, format="flux-annotate dashboard: %(message)s")

    async def main():
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        dash = Dashboard(socket=socket, page_buffer=page_buffer, flux_uri=flux_uri)

        def ready(d):
            print(f"flux-annotate dashboard: serving on {d.url(bind)}", file=out, flush=True)

        await dash.serve(bind, port, ready=ready, stop=stop)

    try:
        asyncio.run(main())
    except OSError as e:
        # the bind failed (address in use, not available, no permission)
        print(f"flux-annotate dashboard: cannot listen on {bind}:{port}: {e.strerror or e}",
              file=sys.stderr)
        return 1
    return 0


