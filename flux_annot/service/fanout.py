"""One batch's `annotations` array for every view, from a few shared encodings.

A guest sees its own jobs whole and every other job through the namespaces
readable by "all" (docs/policy.md). Encoding that view anew for each guest
costs a full pass of the C encoder per guest and per batch (filtering and
diffing every entry again): 200 guest subscribers cut a scheduler's rate
twenty-fold. Yet all guests read the same thing except on their own jobs.

So a batch is encoded at most four times, whatever the number of
subscribers: the owner view (every job whole) and the public view (every
job filtered), each as whole trees and as deltas, each with its *cuts*
(where each entry lies, `JobTable.batch_encode_cuts`). A view is then:

- owner: the owner encoding as it is;
- guest `u` with no job of its own in the batch: the public encoding as it
  is (the same bytes object for all such guests);
- guest `u` with jobs in the batch: the public encoding with u's entries
  replaced by the owner encoding's, as pieces (memoryviews of the runs of
  public entries between them and of u's entries: O(u's entries) Python
  work, no copy; the server writes them with writev);
- one user's jobs (`userid` filter): u's entries of the owner encoding
  (u's own view, or the owner's) or of the public one (a guest following
  another user's jobs).

The C encoder decides every entry the same way whatever the other entries'
flags are (whole: in unless its delta is empty; filtered: in only when the
filtered view changed), so a spliced view is byte for byte what encoding
it with per-job flags gives (tests/test_fanout.py checks it against that
path on random batches).
"""

from collections import defaultdict
from collections.abc import Mapping, Sequence
from typing import Any

from flux_annot.core import JobTable

View = tuple[Any, ...]  # ("full",), ("guest", uid), ("user", uid), ...
Encoded = tuple[bytes, Sequence[int]]  # (bytes, cuts)
Piece = bytes | memoryview  # a part of a payload (b"".join takes both)

OWNER: View = ("full",)  # the instance owner's view: every job whole
PUBLIC: View = ("public",)  # what every guest reads of jobs not its own


class BatchViews:
    """The views of one batch, encoded on first use (the C table must still
    hold the batch's pre-images: call before `batch_clear`).

    table: the service's `JobTable`; jobs: {jobid: Job} (`.userid`); ids:
    the net-changed ids (`table.batch_ids()`); owner: {delta: (bytes,
    cuts)} already encoded by the caller (may be empty); view_ns /
    view_exclude: the namespaces readable by "all" (`Policy`).
    """

    __slots__ = ("_table", "_jobs", "_ids", "_n", "_ns", "_exclude", "_enc", "_by_uid", "_cut")

    def __init__(self, table: JobTable, jobs: Mapping[int, Any], ids: Sequence[int],
                 owner: Mapping[bool, Encoded], view_ns: Sequence[str],
                 view_exclude: bool) -> None:
        self._table = table
        self._jobs = jobs
        self._ids = ids
        self._n = len(ids)
        self._ns = view_ns
        self._exclude = view_exclude
        # (OWNER | PUBLIC, delta) -> (bytes, cuts)
        self._enc: dict[tuple[View, bool], Encoded] = {(OWNER, d): v for d, v in owner.items()}
        self._by_uid: dict[int, list[int]] | None = None
        # (OWNER | PUBLIC, delta) -> (memoryview, cuts as a list): what
        # splicing reads, made once per batch (list items are ints already
        # made; an array's are made at each read)
        self._cut: dict[tuple[View, bool], tuple[memoryview, list[int]]] = {}

    def _cuttable(self, which: View, delta: bool) -> tuple[memoryview, list[int]]:
        got = self._cut.get((which, delta))
        if got is None:
            data, cuts = self._encoded(which, delta)
            got = self._cut[(which, delta)] = (memoryview(data), list(cuts))
        return got

    def _encoded(self, which: View, delta: bool) -> Encoded:
        enc = self._enc.get((which, delta))
        if enc is None:
            if which is OWNER:
                enc = self._table.batch_encode_cuts(self._n, delta=delta)
            else:
                enc = self._table.batch_encode_cuts(
                    self._n, bytes(self._n), self._ns, self._exclude, delta=delta)
            self._enc[(which, delta)] = enc
        return enc

    def entries_of(self, uid: int) -> Sequence[int]:
        """Indices (ascending) of the batch's entries whose job `uid` owns."""
        by_uid = self._by_uid
        if by_uid is None:
            groups: defaultdict[int, list[int]] = defaultdict(list)
            jobs = self._jobs
            for k, jobid in enumerate(self._ids):
                groups[jobs[jobid].userid].append(k)
            self._by_uid = by_uid = dict(groups)
        return by_uid.get(uid, ())

    def shared(self, view: View) -> View:
        """The view whose encoding `view` reads in this batch: PUBLIC for a
        guest with no job in it (all such guests share one payload), else
        `view` itself."""
        if view[0] == "guest" and not self.entries_of(view[1]):
            return PUBLIC
        return view

    def pieces(self, view: View, delta: bool) -> tuple[list[Piece], int]:
        """b"[[id,tree-or-patch],...]" of `view` (events.EventHub views) as
        (pieces, their size): one bytes object for a view read as a whole
        (owner, public), else "[", entries or runs of entries (memoryviews
        of the shared encodings: nothing is copied until the subscriber's
        frame is written) and commas, "]"."""
        kind = view[0]
        if kind == "full" or kind == "public":
            data = self._encoded(OWNER if kind == "full" else PUBLIC, delta)[0]
            return [data], len(data)
        mine = self.entries_of(view[1])
        if kind == "guest":
            if not mine:
                data = self._encoded(PUBLIC, delta)[0]
                return [data], len(data)
            return self._splice(mine, delta)
        # "user": those jobs whole; "public-of": their public view
        mv, cuts = self._cuttable(OWNER if kind == "user" else PUBLIC, delta)
        n = self._n
        parts: list[Piece] = []
        size = 1
        sep = b"["
        for k in mine:
            s, e = cuts[k], cuts[n + k]
            if s < e:
                parts += (sep, mv[s:e])
                size += e - s + 1
                sep = b","
        if not parts:
            return [b"[]"], 2
        parts.append(b"]")
        return parts, size

    def _splice(self, mine: Sequence[int], delta: bool) -> tuple[list[Piece], int]:
        """The public encoding with the entries at `mine` taken from the
        owner's (the runs of public entries between them as single
        memoryviews), as `pieces` gives it."""
        pv, pc = self._cuttable(PUBLIC, delta)
        ov, oc = self._cuttable(OWNER, delta)
        n = self._n
        parts: list[Piece] = []
        size = 1
        sep = b"["
        p = 0  # first public entry not taken yet
        for k in mine:
            if k > p:
                s, e = pc[p], pc[n + k - 1]
                if s < e:
                    parts += (sep, pv[s:e])
                    size += e - s + 1
                    sep = b","
            s, e = oc[k], oc[n + k]
            if s < e:
                parts += (sep, ov[s:e])
                size += e - s + 1
                sep = b","
            p = k + 1
        if p < n:
            s, e = pc[p], pc[2 * n - 1]
            if s < e:
                parts += (sep, pv[s:e])
                size += e - s + 1
        if not parts:
            return [b"[]"], 2
        parts.append(b"]")
        return parts, size
