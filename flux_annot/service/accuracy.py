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

The records live in C (csrc/fa_hist.c: the scheduler's hot path records
there in the same call that applies its note, no Python work per
request); `History` is the Python view the report reads. Memory per job:
a 48-byte record, its pairs (16 bytes a value, grown by doubling) and two
hash slots; measured in bench/bench_accuracy.py.

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
MAX_VALUES = 64  # = FA_HIST_MAX (csrc/fa.h)

DEFAULT_QUEUE = "default"

#: the store's estimate log is compacted past this many bytes (and twice the records)
COMPACT_BYTES = 8 << 20


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
    """Every job's estimate history (see the module docstring): the
    records live in C (`core.EstimateHistory`, which the scheduler's hot
    path fills directly, `JobTable.annotate_sched`); the queues here."""

    def __init__(self, horizons: Iterable[float] = (60, 600, 3600)) -> None:
        from flux_annot.core import EstimateHistory

        self.horizons = [float(h) for h in horizons]
        self.keys = [horizon_key(h) for h in horizons]
        self.hist = EstimateHistory()
        self.queues: dict[int, str] = {}  # jobid -> its sched.queue (jobs that have one)
        self._names: dict[str, str] = {}  # one string object per queue name
        self._qversion = 0
        self._queue_dirty: set[int] = set()  # queues not written yet
        self.logged = 0  # bytes of records in the store's log since it was compacted

    # -- recording ------------------------------------------------------------

    def estimate(self, jobid: int, value: float, at: float, queue: str | None = None) -> None:
        """Job `jobid` was given estimate `value` (finite) at time `at`."""
        if queue is not None:
            self.set_queue(jobid, queue)
        self.hist.estimate(jobid, value, at)

    def set_queue(self, jobid: int, queue: str) -> None:
        q = self._names.get(queue)
        if q is None:
            q = queue
            if len(self._names) < 4096:
                self._names[queue] = queue
        if self.queues.get(jobid) is not q:
            self.queues[jobid] = q
            self._qversion += 1
            self._queue_dirty.add(jobid)

    def started(self, jobid: int, at: float) -> None:
        """Job `jobid` was allocated at `at` (only jobs with an estimate matter)."""
        self.hist.end(jobid, at, True)

    def left(self, jobid: int, at: float) -> None:
        """Job `jobid` became inactive at `at`: if it never started, it counts so."""
        self.hist.end(jobid, at, False)

    def count_bad(self) -> None:
        self.hist.add_bad(1)

    @property
    def bad(self) -> int:
        return self.hist.bad()

    @property
    def version(self) -> int:
        return self.hist.version() + self._qversion

    def __len__(self) -> int:
        return len(self.hist)

    def get(self, jobid: int) -> History | None:
        """The job's history as a `History`, or None."""
        got = self.hist.get(jobid)
        if got is None:
            return None
        pairs, n, start, ended = got
        h = History()
        h.values = array("d", pairs)
        h.n, h.start, h.ended = n, start, ended
        h.queue = self.queues.get(jobid)
        return h

    # -- the store ------------------------------------------------------------

    @property
    def dirty(self) -> bool:
        return self.hist.dirty_count() > 0 or bool(self._queue_dirty)

    def rows(self, all: bool = False) -> tuple[bytes, list[tuple[int, str]], bool]:
        """What the next batch writes (Store.write_batch's `estimates`): the
        changed records in the store's form (one bytes object, built in C:
        no Python work per job) and the changed queues [(jobid, queue)];
        forgets that they changed (`redirty` if the write failed). all:
        every record (a compaction)."""
        queues = self.queues
        qrows = [(j, queues[j]) for j in self._queue_dirty if j in queues]
        self._queue_dirty = set()
        # The log grows by every batch's records: once it holds twice what
        # the records take (and COMPACT_BYTES), this write is all of them and
        # replaces the log (Store.write_batch: compact): each byte written is
        # rewritten at most about once more.
        compact = all or (self.logged > COMPACT_BYTES and self.logged > 2 * self.hist.memory_bytes())
        blob = self.hist.dump(compact)
        self.logged = len(blob) if compact else self.logged + len(blob)
        return blob, qrows, compact

    def redirty(self, rows: tuple[bytes, list[tuple[int, str]], bool]) -> None:
        blob, qrows, _compact = rows
        self.hist.redirty_dump(blob)
        self._queue_dirty.update(j for j, _ in qrows)

    def load(self, dumps: Iterable[bytes], queues: Iterable[tuple[int, str]]) -> None:
        """The store's dumps (in order) and queues, at start."""
        for blob in dumps:
            self.hist.load_dump(blob)
            self.logged += len(blob)
        for jobid, queue in queues:
            q = self._names.get(queue)
            if q is None:
                q = self._names.setdefault(queue, queue) if len(self._names) < 4096 else queue
            self.queues[jobid] = q
        self._qversion += 1

    def memory_bytes(self) -> int:
        """Bytes the histories hold: the C records, and the queue map."""
        import sys

        return self.hist.memory_bytes() + sys.getsizeof(self.queues)

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
        notes (None: all). by "user" adds "by_user". The errors come from C
        (`EstimateHistory.rows`: one call, a row of numbers per job)."""
        nh = len(self.horizons)
        total = _Group(nh)
        queues: dict[str, _Group] = {}
        users: dict[int, _Group] = {}
        records = []
        qmap = self.queues
        ids, vals, w = self.hist.rows(self.horizons)
        flat = vals.tolist()
        for i, jobid in enumerate(ids.tolist()):
            row = flat[i * w : (i + 1) * w]
            start, ended = row[0], row[1]
            started = start == start  # not nan
            if since is not None and (start if started else ended) < since:
                continue
            q = qmap.get(jobid) or DEFAULT_QUEUE
            if queue is not None and q != queue:
                continue
            uid = userid_of(jobid)
            if uid is None or (visible is not None and not visible(jobid, uid)):
                continue
            g2 = queues.get(q)
            if g2 is None:
                g2 = queues[q] = _Group(nh)
            groups = [total, g2]
            if by == "user":
                g3 = users.get(uid)
                if g3 is None:
                    g3 = users[uid] = _Group(nh)
                groups.append(g3)
            if not started:
                for g in groups:
                    g.never += 1
            else:
                e_first = start - row[3]
                e_last = start - row[5]
                e_h = row[7:]
                for g in groups:
                    g.started += 1
                    g.first.append(e_first)
                    g.last.append(e_last)
                    for k, e in enumerate(e_h):
                        if e == e:
                            g.horizons[k].append(e)
            if jobs:
                records.append({  # one job's record (docs/accuracy.md)
                    "id": jobid,
                    "userid": uid,
                    "queue": q,
                    "start": start if started else None,
                    "estimates": int(row[2]),
                    "first": {"t_estimate": row[3], "at": row[4]},
                    "last": {"t_estimate": row[5], "at": row[6]},
                })
        keys = self.keys
        out = total.out(keys)
        out["by_queue"] = {q: queues[q].out(keys) for q in sorted(queues)}
        if by == "user":
            out["by_user"] = {str(u): users[u].out(keys) for u in sorted(users)}
        if jobs:
            records.sort(key=lambda r: int(r["id"]))  # type: ignore[call-overload]
            out["jobs"] = records
        return out

    def last_errors(self, userid_of: Callable[[int], int | None],
                    visible: Callable[[int, int], bool] | None = None) -> list[float]:
        """start - last estimate of every started job the reader may see (the histogram)."""
        ids, vals, w = self.hist.rows([])
        flat = vals.tolist()
        out: list[float] = []
        for i, jobid in enumerate(ids.tolist()):
            start = flat[i * w]
            if start != start:
                continue
            if visible is not None:
                uid = userid_of(jobid)
                if uid is None or not visible(jobid, uid):
                    continue
            out.append(start - flat[i * w + 5])
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
