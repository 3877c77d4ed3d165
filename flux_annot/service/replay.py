"""Start-up replay (docs/durability.md): rebuild the job table from the store.

The durable tree of a job is: its last `alloc` snapshot (which held
everything the job had then, volatile notes included), then every later
non-volatile `memo`/`annotate` patch in order, with `sched` discarded where
a pending job was denied, canceled or requeued. Everything volatile since
the job's last durable entry is, by construction, not in the store.

Two ways to the same durable tree:

- `durable_trees` folds a batch's entries into each touched job's previous
  durable tree when the batch is written (`Store.write_batch`, same
  transaction). The store keeps the result per job (`jobs.tree`, with the
  size of its `user` namespace and the last exception note), so a restart
  is one ordered scan of the jobs table and ONE bulk `annotate_many`:
  `restore`. The eventlog stays the RFC 18 record; the snapshot row is a
  cache of it that is always written with it.
- `restore_from_eventlog` replays the eventlog itself (the record): used
  for the jobs whose snapshot the table refuses (e.g. limits lowered since
  it was written: the eventlog replay then skips only the refused patches),
  and by tests to check the snapshot rows against the record.

Entry names and what replay does with them (see docs/DESIGN.md "Eventlog
entries"):

    alloc      {"annotations": T}   tree := T
    memo       M (the memo object)  merge {"user": M}
    annotate   P (the patch)        merge P
    exception / cancel / state      discard `sched` if the job never got an
                                    alloc (denied, requeued, canceled while pending)
    annotations {"annotations": T}  tree := T (a Flux mirror's copy of Flux's
                                    event, docs/flux.md); not an allocation
"""

import json
import logging
from array import array
from itertools import compress, repeat
from operator import is_not

from flux_annot.core import JobTable, Limits
from flux_annot.errors import AnnotError

log = logging.getLogger(__name__)

CHUNK = 100_000

# Job states by the small code `Store.snapshot_rows` reads them as.
STATE_CODES = ("NEW", "DEPEND", "PRIORITY", "SCHED", "RUN", "CLEANUP", "INACTIVE")
TREE_NAMES = ("alloc", "memo", "annotate", "exception", "cancel", "state", "annotations")
_TREE_NAMES = TREE_NAMES
_ALLOC_PREFIX = '{"annotations":'
_ALLOC_PREFIX_B = _ALLOC_PREFIX.encode()
_ALLOC_SLICE = len(_ALLOC_PREFIX_B)
_DISCARD_SCHED = b'{"sched":null}'
_EMPTY = b"{}"
_NS_USER = b"user"
_U64 = 1 << 64
_MISSING = object()

_permissive = None


def permissive_limits():
    """Limits that refuse no stored tree: what was stored passed the live limits.

    Used for merges of stored data where the config's limits are not known
    (the store) or must not drop data (sizing `user` of a restored tree).
    """
    global _permissive
    if _permissive is None:
        _permissive = Limits(depth=1 << 16, key_bytes=0xFFFFFFFF,
                             object_keys=0xFFFFFFFF, strict_keys=False)
    return _permissive


def _alloc_tree(ctx):
    """The snapshot tree of an `alloc` context, as JSON text or None."""
    if ctx.startswith(_ALLOC_PREFIX) and ctx.endswith("}"):
        tree = ctx[len(_ALLOC_PREFIX) : -1]
    else:  # written by something else than our encoder: parse it
        tree = json.dumps(json.loads(ctx).get("annotations"), separators=(",", ":"))
    return None if tree == "null" else tree


def _alloc_patches(ctx):
    """An `alloc` context (text) as the patch list that replaces the tree."""
    try:
        tree = _alloc_tree(ctx)
    except (ValueError, AttributeError) as exc:
        log.warning("replay: unreadable alloc snapshot skipped: %s", exc)
        return []
    return [tree.encode("utf-8")] if tree is not None else []


def user_bytes(table, jobid, tree=_MISSING):
    """Bytes of the job's `user` namespace (compact JSON) in `table`; 0 if none.

    tree: the job's text if the caller already has it (saves a lookup).
    """
    if tree is _MISSING:
        tree = table.get(jobid)
    if tree is None or b'"user"' not in tree:  # cheap filter, most trees have none
        return 0
    return table.apply(jobid, _EMPTY, permissive_limits(), _NS_USER, dryrun=True).old_ns_len


# -- write side: the snapshot rows --------------------------------------------


def durable_trees(prev, pending):
    """Fold one batch's tree entries into the touched jobs' durable trees.

    prev: {jobid: (tree bytes or None, allocated)} before the batch (jobs
    absent: no tree, no alloc yet). pending: {jobid: [(name, context)]} in
    entry order, names from TREE_NAMES, contexts JSON text (str or bytes).
    Returns {jobid: (tree bytes or None, user namespace bytes, allocated)}.
    A patch that does not merge (not JSON, not an object) is logged and
    skipped, as replay does.

    Fast path: an `alloc` context given as bytes in our own spelling is the
    hub's snapshot straight from the C table (canonical), so a job whose
    tree is just that snapshot, without a `user` namespace, needs no merge
    and no size: the row takes the sliced bytes. (Were such bytes ever not
    canonical, restore's merge canonicalizes them, or refuses them and the
    job is replayed from its eventlog.)
    """
    out = {}
    ids, patches, merged = [], [], {}
    extend_ids, extend = ids.extend, patches.extend
    absent = (None, False)
    for jobid, ents in pending.items():
        tree, allocated = prev.get(jobid, absent)
        if len(ents) == 1 and ents[0][0] == "annotate":
            # the common batch entry: one patch on the previous tree
            ctx = ents[0][1]
            if tree:
                extend_ids((jobid, jobid))
                extend((tree, ctx if type(ctx) is bytes else ctx.encode("utf-8")))
            else:
                ids.append(jobid)
                patches.append(ctx if type(ctx) is bytes else ctx.encode("utf-8"))
            merged[jobid] = allocated
            continue
        mine = [tree] if tree else []
        exact = None  # the hub's own snapshot, when the tree is exactly it
        for name, ctx in ents:
            if name == "alloc":
                allocated = True
                if type(ctx) is bytes and ctx.startswith(_ALLOC_PREFIX_B) and ctx.endswith(b"}"):
                    exact = ctx[_ALLOC_SLICE:-1]
                    mine = [exact] if exact != b"null" else []
                else:
                    exact = None
                    mine = _alloc_patches(ctx if type(ctx) is str else ctx.decode("utf-8"))
            elif name == "annotations":  # a Flux mirror's tree (docs/flux.md)
                exact = None
                mine = _alloc_patches(ctx if type(ctx) is str else ctx.decode("utf-8"))
            elif name == "memo":
                mine.append(b'{"user":' + _as_bytes(ctx) + b"}")
            elif name == "annotate":
                mine.append(_as_bytes(ctx))
            elif not allocated and mine:
                mine.append(_DISCARD_SCHED)
        if not mine:
            out[jobid] = (None, 0, allocated)
        elif len(mine) == 1 and mine[0] is exact and b'"user"' not in exact:
            out[jobid] = (exact, 0, allocated)
        else:
            merged[jobid] = allocated
            extend_ids([jobid] * len(mine))
            extend(mine)
    if ids:
        scratch = JobTable(permissive_limits())
        _apply(scratch, ids, patches)
        get = scratch.get
        for jobid, allocated in merged.items():
            tree = get(jobid)
            # user_bytes(scratch, jobid, tree), its cheap filter inline
            if tree is None or b'"user"' not in tree:
                out[jobid] = (tree, 0, allocated)
            else:
                out[jobid] = (tree, user_bytes(scratch, jobid, tree), allocated)
    return out


def _as_bytes(ctx):
    return ctx if type(ctx) is bytes else ctx.encode("utf-8")


# -- start-up -----------------------------------------------------------------


class Restored:
    """What `restore` read, as aligned columns in stored id order, plus totals.

    ids (unsigned job ids), userids, t_submits, states, user_bytes (size of
    each job's `user` namespace); notes {jobid: last exception note};
    totals {userid: `user` bytes over the user's jobs not INACTIVE}.
    Columns, not rows: the caller builds its job records with C-level
    `map`/`zip`, so no Python statement runs per job.
    """

    __slots__ = ("ids", "userids", "t_submits", "states", "user_bytes", "notes", "totals")


def restore(store, table):
    """Load every job's durable tree into `table` (tracking off) in bulk; a `Restored`.

    One ordered scan of the snapshot rows, one `annotate_many`. A snapshot
    the table refuses (limits lowered since it was written) is rebuilt from
    the eventlog, skipping only the refused patches (logged), and its user
    size and the totals follow the rebuilt tree.
    """
    out = Restored()
    rows = store.snapshot_rows()
    if rows:
        sids, out.userids, out.t_submits, codes, trees, ubs = zip(*rows)
    else:
        sids, out.userids, out.t_submits, codes, trees, ubs = ((),) * 6
    del rows
    names = dict(enumerate(STATE_CODES))
    out.states = list(map(names.get, codes, codes))
    del codes
    # Signed stored ids -> unsigned job ids in one C-level reinterpretation.
    ids = array("Q", array("q", sids).tobytes())
    del sids
    has = list(map(is_not, trees, repeat(None)))
    refused = _apply(
        table,
        array("Q", compress(ids, has)),
        list(compress(trees, has)),
        what="stored tree refused, replaying its eventlog",
    )
    del has, trees
    out.ids = ids.tolist()
    out.user_bytes = ubs
    out.notes = store.notes()
    out.totals = store.user_totals()
    if refused:
        _redo(store, table, out, refused)
    return out


def _redo(store, table, out, refused):
    """Rebuild refused snapshots from the eventlog; fix their sizes and totals."""
    for jobid in refused:
        table.remove(jobid)
    restore_from_eventlog(store, table, sorted(refused))
    ubs = list(out.user_bytes)
    totals = out.totals
    for i, jobid in enumerate(out.ids):
        if jobid in refused:
            new = user_bytes(table, jobid)
            delta, ubs[i] = new - ubs[i], new
            if delta and out.states[i] != "INACTIVE":
                uid = out.userids[i]
                totals[uid] = totals.get(uid, 0) + delta
                if not totals[uid]:
                    del totals[uid]
    out.user_bytes = ubs


def restore_from_eventlog(store, table, jobids=None):
    """Replay the eventlog (the record) into `table`, in bulk.

    jobids: only these jobs (default all). Returns the job rows
    [(jobid, userid, t_submit, state)] read. A stored patch the table
    refuses is logged and skipped, so one bad entry does not block the start.
    """
    rows = []
    ids, patches = [], []
    cur = None  # stored (signed) id of the job being read
    jobid = None
    mine = []
    allocated = False
    for sid, userid, t_submit, state, name, ctx in store.jobs_with_entries(_TREE_NAMES, jobids):
        if sid != cur:
            if mine:
                ids.extend([jobid] * len(mine))
                patches.extend(mine)
                if len(ids) >= CHUNK:
                    _apply(table, ids, patches)
                    ids, patches = [], []
            cur = sid
            jobid = sid if sid >= 0 else sid + _U64
            rows.append((jobid, userid, t_submit, state))
            mine = []
            allocated = False
        if name is None:
            continue
        if name == "alloc-tree":
            # The snapshot replaces everything before it.
            mine = [ctx] if ctx != b"null" else []
            allocated = True
        elif name == "alloc":  # not written by our encoder: parse it
            mine = _alloc_patches(ctx.decode("utf-8"))
            allocated = True
        elif name == "annotations":  # a Flux mirror's tree (docs/flux.md)
            mine = _alloc_patches(ctx.decode("utf-8"))
        elif name == "memo" or name == "annotate":
            mine.append(ctx)
        elif not allocated and mine:
            # exception/cancel/state of a job still pending: its sched notes go
            # (a no-op unless the config lets someone write `sched` durably).
            mine.append(_DISCARD_SCHED)
    if mine:
        ids.extend([jobid] * len(mine))
        patches.extend(mine)
    if ids:
        _apply(table, ids, patches)
    return rows


def _apply(table, ids, patches, what="stored patch skipped"):
    """annotate_many, skipping (and logging) refused patches; their job ids."""
    refused = set()
    start = 0
    while start < len(ids):
        try:
            table.annotate_many(ids[start:] if start else ids, patches[start:] if start else patches)
            break
        except AnnotError as exc:
            bad = start + _failed_index(exc)
            log.warning("replay: job %d: %s: %s", ids[bad], what, exc)
            refused.add(ids[bad])
            start = bad + 1
    return refused


def _failed_index(exc):
    """The index annotate_many reports for its first bad patch."""
    index = getattr(exc, "index", None)
    if index is None:
        raise exc
    return int(index)
