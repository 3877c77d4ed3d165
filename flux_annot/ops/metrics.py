"""Prometheus metrics of `serve --metrics ADDR:PORT` (docs/operations.md).

How it is served: by prometheus_client's own HTTP server (`start_http_server`,
one daemon thread), not on the service's asyncio loop. It binds in the
caller's thread, so `serve` binds it first and a bad address, a port in use
or a refused bind stops it before it takes the store's lock; its HTTP
(content negotiation, HEAD, gzip, `name[]=` filters) is the library's, not
ours; and a scraper that connects and never sends cannot stall the loop.

What a scrape costs the service: nothing between scrapes. The service
already counts what `stats` shows (plain integers on its hot paths); the
one addition is the commit-duration histogram, a bucket increment per
commit on the writer thread (`events.CommitTimes`). At a scrape the HTTP
thread asks the loop for one snapshot of those counters (`read`, run with
`call_soon_threadsafe`: the loop is the only thread that changes them, so
the snapshot is consistent and no C call runs off the loop) and builds the
metric families from it in its own thread. A loop that does not answer
within LOOP_TIMEOUT seconds is itself reported (`flux_annot_loop_responsive
0`) instead of hanging the scrape.

The collector reads only: `service.counters()`, `hub.stats()`, the hub's
`commit_times`, the server's connection and request counters and, on a Flux
mirror, `service.flux_metrics()`.
"""

import collections
import concurrent.futures
import errno
import ipaddress
import re
import socket
import time

from flux_annot.errors import EINVAL, AnnotError, error
from flux_annot.service.events import COMMIT_BUCKETS

#: seconds a scrape waits for the loop's snapshot
LOOP_TIMEOUT = 2.0

#: events per second are averaged over at least this many seconds (between scrapes)
RATE_WINDOW = 5.0

#: the request kinds `stats` counts, by the topic they arrive as on the socket
TOPIC_OF_KIND = {
    "submit": "job-manager.submit",
    "state": "job-manager.state",
    "alloc-response": "job-manager.alloc-response",
    "annotate": "job-manager.annotate",
    "memo": "job-manager.memo",
    "get": "job-manager.getattr",
    "list": "job-manager.list",
    "subscribe": "job-manager.events",
}

#: the reasons the service counts refusals under (`stats` "rejected"), shown
#: at 0 from the start so that rate() and increase() see their first one
REJECTION_REASONS = ("exists", "flux_owned", "inactive", "invalid", "malformed",
                     "namespace_size", "payload_size", "permission", "rate", "store",
                     "transition", "unknown_job", "user_total")

INSTALL_HINT = "pip install 'flux-annot[metrics]'"

_HOST_PORT = re.compile(r"^(?:\[([^\]]*)\]|([^:\[\]]*)):(\d{1,5})$")


def parse_listen(text):
    """"ADDR:PORT" -> (host, port). ADDR: an IPv4 address, an IPv6 address in
    brackets ([::1]), or a host name; PORT 0..65535 (0: any free port).
    EINVAL with a sentence naming the text otherwise."""
    if not isinstance(text, str):
        raise error(EINVAL, f"metrics address must be a string, not {type(text).__name__}")
    m = _HOST_PORT.match(text.strip())
    why = None
    if m is None:
        why = "expected ADDR:PORT, e.g. 127.0.0.1:9464 or [::1]:9464"
    else:
        v6, host, port_s = m.group(1), m.group(2), m.group(3)
        port = int(port_s)
        if v6 is not None:
            try:
                ipaddress.IPv6Address(v6)
            except ValueError:
                why = f"{v6!r} is not an IPv6 address"
            host = v6
        elif not host:
            why = "the address is missing (0.0.0.0 listens on every IPv4 interface)"
        elif not re.fullmatch(r"[A-Za-z0-9.-]+", host):
            why = f"{host!r} is not an address or a host name"
        if why is None and port > 65535:
            why = f"port {port} is out of range (0-65535)"
    if why is not None:
        raise error(EINVAL, f"metrics address {text!r} does not parse: {why}")
    return host, port


class MetricsEndpoint:
    """The /metrics HTTP endpoint of one `serve` (module doc).

    Created (and bound) before the service exists; `attach(server)` once
    the socket accepts connections; `close()` at the end. Before `attach`
    a scrape shows `flux_annot_ready 0` and the process's own metrics."""

    def __init__(self, listen):
        host, port = parse_listen(listen)
        try:
            from prometheus_client import CollectorRegistry, start_http_server
            from prometheus_client.process_collector import ProcessCollector
        except ImportError as exc:
            raise error(
                EINVAL,
                f"--metrics needs prometheus_client ({exc.name or exc} is missing): "
                f"{INSTALL_HINT}",
            ) from None
        self.listen = listen
        self.server = None
        self._loop = None
        self._rate = _Rate()
        registry = CollectorRegistry()
        ProcessCollector(registry=registry)  # memory, CPU, fds, start time of this process
        registry.register(ServiceCollector(self))
        try:
            self._httpd, self._thread = start_http_server(port, addr=host, registry=registry)
        except socket.gaierror as exc:
            raise AnnotError(
                EINVAL, f"cannot listen for metrics on {listen}: cannot resolve {host!r} "
                f"({exc.strerror or exc})") from None
        except OSError as exc:
            raise AnnotError(
                exc.errno or errno.EADDRNOTAVAIL,
                f"cannot listen for metrics on {listen}: {exc.strerror or exc}") from None
        self.address = self._httpd.server_address[:2]

    def url(self):
        host, port = self.address
        if ":" in host:
            host = f"[{host}]"
        return f"http://{host}:{port}/metrics"

    def attach(self, server):
        """Scrapes read this `Server`'s service from now on (call on its loop)."""
        self._loop = server.loop
        self.server = server

    def detach(self):
        self.server = None
        self._loop = None

    def close(self):
        self.detach()
        self._httpd.shutdown()
        self._httpd.server_close()

    def snapshot(self):
        """The counters, read on the loop; None when not attached or the
        loop did not answer in LOOP_TIMEOUT s (then `responsive` is False)."""
        server, loop = self.server, self._loop
        if server is None or loop is None:
            return None, True
        fut = concurrent.futures.Future()

        rate = self._rate

        def run():
            if fut.set_running_or_notify_cancel():
                try:
                    snap = read(server)
                    snap["events_per_second"] = rate.update(snap["entries_published"])
                    fut.set_result(snap)
                except BaseException as exc:  # reported to the scrape, not the loop
                    fut.set_exception(exc)

        try:
            loop.call_soon_threadsafe(run)
            snap = fut.result(LOOP_TIMEOUT)
        except RuntimeError:  # the loop is closed: shutting down
            return None, True
        except concurrent.futures.TimeoutError:
            fut.cancel()
            return None, False
        return snap, True


class _Rate:
    """Entries published per second, averaged since the latest scrape at
    least RATE_WINDOW s old (or since start-up). Updated on the loop only."""

    def __init__(self):
        self._samples = collections.deque([(time.monotonic(), 0)])

    def update(self, count):
        now = time.monotonic()
        s = self._samples
        s.append((now, count))
        while len(s) > 2 and now - s[1][0] >= RATE_WINDOW:
            s.popleft()  # s[1] is old enough to be the base
        t0, c0 = s[0]
        return (count - c0) / (now - t0) if now > t0 else 0.0


def read(server):
    """One consistent snapshot of the counters (on the loop)."""
    service = server.service
    hub = server.hub
    snap = dict(hub.stats())
    snap.update(service.counters())
    times = hub.commit_times
    snap["commit_counts"] = list(times.counts)
    snap["commit_sum"] = times.sum
    snap["server"] = {
        "connections": len(server.conns),
        "connections_total": server.nconn_total,
        "requests": server.nrequests,
        "protocol_errors": server.nerrors,
        "streams": sum(len(c.streams) for c in server.conns),
    }
    topics = getattr(server, "topic_counts", None)
    snap["topics"] = topics() if topics is not None else None
    flux = getattr(service, "flux_metrics", None)
    snap["flux"] = flux() if flux is not None else None
    # the estimate accuracy summary (SPEC §16, stats' "accuracy"; cached by
    # the service, recomputed at most once a second) where the service keeps one
    accuracy = getattr(service, "_accuracy_summary", None)
    snap["accuracy"] = accuracy() if accuracy is not None else None
    return snap


class ServiceCollector:
    """prometheus_client's Collector API: the metric families of one
    snapshot, built at each scrape (names: docs/operations.md)."""

    def __init__(self, endpoint):
        self.endpoint = endpoint

    def collect(self):
        from prometheus_client.core import (
            CounterMetricFamily,
            GaugeMetricFamily,
            HistogramMetricFamily,
        )

        snap, responsive = self.endpoint.snapshot()
        yield GaugeMetricFamily(
            "flux_annot_loop_responsive",
            "1 if the service's event loop answered the scrape within "
            f"{LOOP_TIMEOUT:g} s",
            value=1 if responsive else 0,
        )
        yield GaugeMetricFamily(
            "flux_annot_ready", "1 once the service accepts requests", value=0 if snap is None else 1
        )
        if snap is None:
            return

        def counter(name, doc, value):
            return CounterMetricFamily("flux_annot_" + name, doc, value=value)

        def gauge(name, doc, value):
            return GaugeMetricFamily("flux_annot_" + name, doc, value=value)

        fam = CounterMetricFamily(
            "flux_annot_requests",
            "Requests received, refused ones included, by topic as on the wire",
            labels=["topic"],
        )
        for topic, n in sorted(_topics(snap).items()):
            fam.add_metric([topic], n)
        yield fam
        fam = CounterMetricFamily(
            "flux_annot_rejections", "Requests refused, by reason (as stats counts them)",
            labels=["reason"],
        )
        rejected = dict.fromkeys(REJECTION_REASONS, 0)
        rejected.update(snap["rejected"])
        for reason, n in sorted(rejected.items()):
            fam.add_metric([reason], n)
        yield fam
        yield counter("protocol_errors", "Frames refused before a topic handled them "
                      "(malformed, unknown topic, too large)", snap["server"]["protocol_errors"])
        yield counter("alloc_responses_ignored", "Alloc responses for jobs not pending",
                      snap["ignored"])
        fam = GaugeMetricFamily("flux_annot_jobs", "Jobs held, by state", labels=["state"])
        for state, n in sorted(snap["jobs"].items()):
            fam.add_metric([state], n)
        yield fam
        yield counter("batches", "Event batches published", snap["batches"])
        yield counter("published_entries", "State transitions and annotation entries "
                      "published in batches", snap["entries_published"])
        yield gauge("events_per_second", "Transitions and annotation entries published per "
                    f"second (averaged over at least {RATE_WINDOW:g} s between scrapes)",
                    snap["events_per_second"])
        yield gauge("seq", "Sequence number of the last batch published", snap["seq"])
        yield gauge("subscribers", "Open event subscriptions", snap["subscribers"])
        yield counter("dropped_subscribers", "Subscribers dropped for falling behind (EOVERFLOW)",
                      snap["dropped_subscribers"])
        yield counter("resyncs_refused", "Resumes (since) refused: too old or from before a "
                      "restart", snap["resync_refused"])
        yield gauge("backlog_batches", "Batches kept for subscribers resuming with since",
                    snap["backlog_batches"])
        yield gauge("backlog_bytes", "Bytes of the batches kept for since", snap["backlog_bytes"])
        yield gauge("store_up", "1 while the store commits, 0 while its commits fail",
                    1 if snap["store_state"] == "ok" else 0)
        yield counter("store_errors", "Failed commit attempts (retries included)",
                      snap["store_errors"])
        yield gauge("store_bytes", "Bytes of the store on disk (database and WAL)",
                    snap["store_bytes"])
        counts = snap["commit_counts"]
        buckets, total = [], 0
        for bound, n in zip(list(COMMIT_BUCKETS) + [float("inf")], counts):
            total += n
            buckets.append(("+Inf" if bound == float("inf") else repr(bound), total))
        fam = HistogramMetricFamily("flux_annot_commit_duration_seconds",
                                    "Duration of the store's successful commits")
        fam.add_metric([], buckets, snap["commit_sum"])
        yield fam
        yield gauge("table_memory_bytes", "Bytes the C core's job table holds",
                    snap["memory_bytes"])
        yield gauge("guest_users", "Guest users with notes on active jobs", snap["guest_users"])
        yield gauge("guest_rate_buckets", "Guest users with a rate bucket",
                    snap["guest_buckets"])
        server = snap["server"]
        yield gauge("connections", "Open client connections", server["connections"])
        yield counter("connections_accepted", "Client connections accepted",
                      server["connections_total"])
        yield gauge("streams", "Open event streams", server["streams"])
        yield from _accuracy_families(snap.get("accuracy"))
        flux = snap["flux"]
        if flux is not None:
            yield gauge("flux_connected", "1 while the mirror is connected to its Flux instance",
                        1 if flux["connected"] else 0)
            yield gauge("flux_synced", "1 once the mirror has caught up with Flux's journal",
                        1 if flux["synced"] else 0)
            if flux["lag"] is not None:
                yield gauge("flux_lag_seconds", "Seconds from a Flux event to its batch "
                            "published: the latest live event's, or the age of the oldest "
                            "one still unpublished", flux["lag"])
            yield counter("flux_events", "Journal events received from Flux", flux["events"])
            yield counter("flux_disconnects", "Connections to Flux lost", flux["disconnects"])
            yield counter("flux_memos_sent", "Memos sent to Flux for users", flux["memos_sent"])
            yield counter("flux_memos_refused", "Memos Flux refused",
                          flux["memos_refused_by_flux"])


def _accuracy_families(acc):
    """The estimate accuracy summary (stats' "accuracy", docs/accuracy.md):
    jobs counted, estimates left out, and the error of the last estimate a
    job had before it started (seconds; positive: it started later)."""
    if not acc:
        return
    from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

    fam = GaugeMetricFamily("flux_annot_estimate_jobs", "Jobs with start-time estimates: "
                            "all, started, left without starting", labels=["kind"])
    for kind, key in (("with_estimates", "jobs_with_estimates"), ("started", "jobs_started"),
                      ("never_started", "jobs_never_started")):
        if acc.get(key) is not None:
            fam.add_metric([kind], acc[key])
    yield fam
    if acc.get("bad_estimates") is not None:
        yield CounterMetricFamily("flux_annot_estimates_invalid", "t_estimate values that "
                                  "were not finite numbers (left out)",
                                  value=acc["bad_estimates"])
    last = acc.get("last") or {}
    fam = GaugeMetricFamily("flux_annot_estimate_error_seconds",
                            "Error of the last estimate before the start (start - estimate), "
                            "over the jobs that started", labels=["stat"])
    for stat in ("bias", "median_abs", "p90_abs"):
        if last.get(stat) is not None:
            fam.add_metric([stat], last[stat])
    yield fam


def _topics(snap):
    """Requests by wire topic: the server's own count per topic when it keeps
    one, else the service's count per request kind."""
    topics = snap["topics"]
    if topics is not None:
        return topics
    out = dict.fromkeys(TOPIC_OF_KIND.values(), 0)
    out.update((TOPIC_OF_KIND.get(k, k), n) for k, n in snap["requests"].items())
    return out
