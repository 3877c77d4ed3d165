"""Start-up replay (SPEC §7): rebuild the job table from the store.

The durable tree of a job is: its last `alloc` snapshot (which held
everything the job had then, volatile notes included), then every later
non-volatile `memo`/`annotate` patch in order, with `sched` discarded where
a pending job was denied, canceled or requeued. Everything volatile since
the job's last durable entry is, by construction, not in the store.

Speed (1M jobs in seconds): the store is asked only for the entries that
change a tree; per job only the entries from its last `alloc` on are kept;
patches stay JSON text (an `alloc` context is sliced, never parsed) and go
to the C table in bulk `annotate_many` calls of `CHUNK` patches.

Entry names and what replay does with them (see docs/DESIGN.md "Eventlog
entries"):

    alloc      {"annotations": T}   tree := T
    memo       M (the memo object)  merge {"user": M}
    annotate   P (the patch)        merge P
    exception / cancel / state      discard `sched` if the job never got an
                                    alloc (denied, requeued, canceled while pending)
"""

import json
import logging

from .errors import AnnotError

log = logging.getLogger(__name__)

CHUNK = 100_000

_TREE_NAMES = ("alloc", "memo", "annotate", "exception", "cancel", "state")
_ALLOC_PREFIX = '{"annotations":'
_DISCARD_SCHED = b'{"sched":null}'
_U64 = 1 << 64


def _alloc_tree(ctx):
    """The snapshot tree of an `alloc` context, as JSON text or None."""
    if ctx.startswith(_ALLOC_PREFIX) and ctx.endswith("}"):
        tree = ctx[len(_ALLOC_PREFIX) : -1]
    else:  # written by something else than our encoder: parse it
        tree = json.dumps(json.loads(ctx).get("annotations"), separators=(",", ":"))
    return None if tree == "null" else tree


def restore(store, table):
    """Apply the store's durable trees to `table` (tracking off) in bulk.

    Returns the job rows [(jobid, userid, t_submit, state), ...] in stored
    order; the caller builds its own job records from them. A stored patch
    the table refuses (e.g. limits lowered since it was written) is logged
    and skipped, so one bad entry does not block the start.
    """
    rows = []
    ids, patches = [], []
    cur = None  # stored (signed) id of the job being read
    jobid = None
    mine = []
    allocated = False
    for sid, userid, t_submit, state, name, ctx in store.jobs_with_entries(_TREE_NAMES):
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
            tree = _alloc_tree(ctx.decode("utf-8"))
            mine = [tree.encode("utf-8")] if tree is not None else []
            allocated = True
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


def _apply(table, ids, patches):
    start = 0
    while start < len(ids):
        try:
            table.annotate_many(ids[start:] if start else ids, patches[start:] if start else patches)
            return
        except AnnotError as exc:
            bad = start + _failed_index(exc)
            log.warning("replay: job %d: stored patch skipped: %s", ids[bad], exc)
            start = bad + 1


def _failed_index(exc):
    """The index annotate_many reports for its first bad patch."""
    index = getattr(exc, "index", None)
    if index is None:
        raise exc
    return int(index)
