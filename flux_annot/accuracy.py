"""Estimate accuracy (docs/accuracy.md): every job's `sched.t_estimate` history and the report.

The service records (`Accuracy.estimate`, `started`, `left`); the store
keeps one row per job with a history (`rows()` after each change, `load()`
at start); `report()` builds the object of `flux-annotate accuracy --json`.

A job's history is an `array('d')` of pairs (t_estimate, at): each distinct
value (a repeat of the value in force is no new value) with the time it
took effect. At most MAX_VALUES pairs are kept: past that the third
oldest is dropped, so the first two and the latest 62 remain (`n` still
counts every value; the second's time closes the first's stretch). A
horizon whose moment falls in the dropped stretch (after the second
value took effect, before the third kept one) is not counted for that
job: the estimate then is not known.

Memory per job: a `History` (56 bytes) with its array (80 bytes + 16 per
value) and the dict slot holding it; measured in bench/bench_accuracy.py.

Choices where docs/accuracy.md leaves room: `median_abs` is the median
(the mean of the two middle values for an even count), `p90_abs` the
nearest-rank 90th percentile; a summary of no job has count 0 and null
statistics; `--since` keeps the jobs that started (or left without
starting) at or after the time.
"""

import math
from array import array
from collections.abc import Callable, Iterable
from typing import Any

#: pairs (t_estimate, at) kept per job: the first two and the latest MAX_VALUES - 2
MAX_VALUES = 64

DEFAULT_QUEUE = "default"


class History:
    """One job's estimates; `start` (its allocation) or `ended` (it left
    without starting) once known; `queue` its `sched.queue` (None: default)."""

    __slots__ = ("values", "n", "start", "ended", "queue")

    def __init__(self) -> None:
        self.values = array("d")
        self.n = 0
        self.start: float | None = None
        self.ended: float | None = None
        self.queue: str | None = None

    def first(self) -> tuple[float, float]:
        v = self.values
        return v[0], v[1]

    def last(self) -> tuple[float, float]:
        v = self.values
        return v[-2], v[-1]

    def in_force(self, t: float) -> float | None:
        """The estimate in force at time t (None: none yet, or not known)."""
        v = self.values
        if not v or v[1] > t:
            return None
        i = len(v) - 2
        while i >= 0 and v[i + 1] > t:
            i -= 2
        if i == 2 and self.n * 2 > len(v):
            return None  # t falls where dropped values were in force
        return v[i]


def summarize(errors: list[float]) -> dict[str, Any]:
    """{"count", "bias", "median_abs", "p90_abs"} of errors in seconds."""
    n = len(errors)
    if not n:
        return {"count": 0, "bias": None, "median_abs": None, "p90_abs": None}
    a = sorted(map(abs, errors))
    mid = n // 2
    median = a[mid] if n % 2 else (a[mid - 1] + a[mid]) / 2
    return {
        "count": n,
        "bias": math.fsum(errors) / n,
        "median_abs": median,
        "p90_abs": a[max(0, math.ceil(0.9 * n) - 1)],
    }


def horizon_key(h: float) -> str:
    """The report's key of a horizon: "60", "0.5"."""
    return str(int(h)) if float(h).is_integer() else repr(float(h))


class _Group:
    """Errors of the jobs of one group (the whole report, a queue, a user)."""

    __slots__ = ("started", "never", "first", "last", "horizons")

    def __init__(self, nh: int) -> None:
        self.started = 0
        self.never = 0
        self.first: list[float] = []
        self.last: list[float] = []
        self.horizons: list[list[float]] = [[] for _ in range(nh)]

    def out(self, keys: list[str]) -> dict[str, Any]:
        return {
            "jobs_started": self.started,
            "jobs_never_started": self.never,
            "first": summarize(self.first),
            "last": summarize(self.last),
            "horizons": {k: summarize(e) for k, e in zip(keys, self.horizons)},
        }


class Accuracy:
    """Every job's estimate history (see the module docstring)."""

    def __init__(self, horizons: Iterable[float] = (60, 600, 3600)) -> None:
        self.horizons = [float(h) for h in horizons]
        self.keys = [horizon_key(h) for h in horizons]
        self.jobs: dict[int, History] = {}
        self.dirty: set[int] = set()  # changed since the store last took them
        self.bad = 0  # t_estimate values that were no finite number
        self.version = 0  # bumped by every change (caches)
        self._queues: dict[str, str] = {}  # one string object per queue name

    # -- recording ------------------------------------------------------------

    def estimate(self, jobid: int, value: float, at: float, queue: str | None = None) -> None:
        """Job `jobid` was given estimate `value` (finite) at time `at`."""
        h = self.jobs.get(jobid)
        if h is None:
            h = self.jobs[jobid] = History()
        elif h.start is not None or h.ended is not None:
            return  # only while pending
        v = h.values
        if queue is not None:
            self._set_queue(h, queue)
        if v and v[-2] == value:
            if queue is not None:
                self.dirty.add(jobid)
            return
        if len(v) >= 2 * MAX_VALUES:
            del v[4:6]
        v.append(value)
        v.append(at)
        h.n += 1
        self.dirty.add(jobid)
        self.version += 1

    def _set_queue(self, h: History, queue: str) -> None:
        q = self._queues.get(queue)
        if q is None:
            if len(self._queues) < 4096:
                q = self._queues[queue] = queue
            else:
                q = queue
        if h.queue is not q:
            h.queue = q
            self.version += 1

    def started(self, jobid: int, at: float) -> None:
        """Job `jobid` was allocated at `at` (only jobs with an estimate matter)."""
        h = self.jobs.get(jobid)
        if h is not None and h.start is None and h.ended is None:
            h.start = at
            self.dirty.add(jobid)
            self.version += 1

    def left(self, jobid: int, at: float) -> None:
        """Job `jobid` became inactive at `at`: if it never started, it counts so."""
        h = self.jobs.get(jobid)
        if h is not None and h.start is None and h.ended is None:
            h.ended = at
            self.dirty.add(jobid)
            self.version += 1

    def count_bad(self) -> None:
        self.bad += 1

    # -- the store ------------------------------------------------------------

    def rows(self) -> list[tuple[int, str | None, float | None, float | None, int, bytes]]:
        """The changed jobs' rows (jobid, queue, start, ended, n, history bytes);
        forgets that they changed (`redirty` if they could not be written)."""
        dirty = self.dirty
        if not dirty:
            return []
        jobs = self.jobs
        out = []
        for jobid in dirty:
            h = jobs.get(jobid)
            if h is not None:
                out.append((jobid, h.queue, h.start, h.ended, h.n, h.values.tobytes()))
        self.dirty = set()
        return out

    def redirty(self, rows: Iterable[tuple[Any, ...]]) -> None:
        self.dirty.update(r[0] for r in rows)

    def load(self, rows: Iterable[tuple[int, str | None, float | None, float | None, int, bytes]]) -> None:
        """Rows as `rows()` gives them (from the store at start)."""
        jobs = self.jobs
        for jobid, queue, start, ended, n, blob in rows:
            h = History()
            h.values.frombytes(blob)
            h.n = n
            h.start = start
            h.ended = ended
            if queue is not None:
                self._set_queue(h, queue)
            jobs[jobid] = h
        self.version += 1

    def memory_bytes(self) -> int:
        """Bytes the histories hold (objects, arrays, the dict), estimated."""
        import sys

        total = sys.getsizeof(self.jobs)
        for h in self.jobs.values():
            total += sys.getsizeof(h) + sys.getsizeof(h.values)
        return total

    # -- the report ---------------------------------------------------------------

    def report(
        self,
        userid_of: Callable[[int], int | None],
        visible: Callable[[int, int], bool] | None = None,
        since: float | None = None,
        queue: str | None = None,
        by: str = "queue",
        jobs: bool = False,
    ) -> dict[str, Any]:
        """The object of docs/accuracy.md. userid_of(jobid): its owner;
        visible(jobid, userid): whether the reader may see the job's `sched`
        notes (None: all). by "user" adds "by_user"."""
        nh = len(self.horizons)
        total = _Group(nh)
        queues: dict[str, _Group] = {}
        users: dict[int, _Group] = {}
        records = []
        hs = self.horizons
        for jobid, h in self.jobs.items():
            start = h.start
            t = start if start is not None else h.ended
            if t is None or not h.values:
                continue  # still pending (or no estimate)
            if since is not None and t < since:
                continue
            q = h.queue or DEFAULT_QUEUE
            if queue is not None and q != queue:
                continue
            uid = userid_of(jobid)
            if uid is None or (visible is not None and not visible(jobid, uid)):
                continue
            groups = [total, queues.get(q) or queues.setdefault(q, _Group(nh))]
            if by == "user":
                groups.append(users.get(uid) or users.setdefault(uid, _Group(nh)))
            v = h.values
            if start is None:
                for g in groups:
                    g.never += 1
            else:
                e_first = start - v[0]
                e_last = start - v[-2]
                e_h = [None if (e := h.in_force(start - x)) is None else start - e for x in hs]
                for g in groups:
                    g.started += 1
                    g.first.append(e_first)
                    g.last.append(e_last)
                    for i, e in enumerate(e_h):
                        if e is not None:
                            g.horizons[i].append(e)
            if jobs:
                records.append({
                    "id": jobid,
                    "userid": uid,
                    "queue": q,
                    "start": start,
                    "estimates": h.n,
                    "first": {"t_estimate": v[0], "at": v[1]},
                    "last": {"t_estimate": v[-2], "at": v[-1]},
                })
        keys = self.keys
        out = total.out(keys)
        out["by_queue"] = {q: queues[q].out(keys) for q in sorted(queues)}
        if by == "user":
            out["by_user"] = {str(u): users[u].out(keys) for u in sorted(users)}
        if jobs:
            records.sort(key=lambda r: r["id"])
            out["jobs"] = records
        return out

    def last_errors(self, userid_of: Callable[[int], int | None],
                    visible: Callable[[int, int], bool] | None = None) -> list[float]:
        """start - last estimate of every started job the reader may see (the histogram)."""
        out = []
        for jobid, h in self.jobs.items():
            if h.start is None or not h.values:
                continue
            if visible is not None:
                uid = userid_of(jobid)
                if uid is None or not visible(jobid, uid):
                    continue
            out.append(h.start - h.values[-2])
        return out


def histogram(errors: list[float], bins: int = 20) -> dict[str, Any]:
    """{"edges": [bins + 1 floats], "counts": [bins ints]} over the errors' range
    (symmetric around 0 so that early and late read at a glance); empty
    lists for no errors."""
    if not errors:
        return {"edges": [], "counts": []}
    m = max(abs(min(errors)), abs(max(errors))) or 1.0
    width = 2 * m / bins
    edges = [-m + i * width for i in range(bins + 1)]
    counts = [0] * bins
    for e in errors:
        i = int((e + m) / width)
        counts[min(max(i, 0), bins - 1)] += 1
    return {"edges": edges, "counts": counts}
