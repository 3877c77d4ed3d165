"""The durable store (docs/durability.md): one SQLite file in WAL mode.

Data flow: the event hub closes a batch and calls `write_batch(seq, entries,
jobs)`; the store writes the batch's RFC 18 eventlog entries, the touched
jobs' metadata and the new last seq in ONE transaction and returns only
once it has committed. On start the service replays the file
(`flux_annot.replay.restore`, built on `snapshot_rows()`).

Durability choice: WAL with `synchronous=FULL`. Every commit fsyncs the WAL,
so an acknowledged entry survives `kill -9` *and* a power loss. (WAL with
NORMAL would survive `kill -9` but could lose the last commits on power
loss; batching makes the extra fsync cheap: one per batch, not per request.)

Schema (version in `PRAGMA user_version`, file identified by
`PRAGMA application_id`):

    jobs(id, userid, t_submit, state,             one row per job, current state,
         tree, user_bytes, allocated, note)       and its durable snapshot (below)
    eventlog(id, seq, idx, timestamp, name, context)   RFC 18 entries, context as JSON text,
                                                  keyed by (seq, idx): appended per batch
    meta(key, value)                              'last_seq'

The eventlog is the record (docs/durability.md). `jobs.tree` is the job's durable tree
(what replaying its eventlog gives: canonical JSON, NULL for none),
`user_bytes` the size of its `user` namespace, `allocated` whether it had
an `alloc` entry, `note` its last exception note. They are computed from the
previous row and the batch's entries (`replay.durable_trees`) and written in
the batch's transaction, so a restart reads one row per job instead of the
whole eventlog (schema 2; a schema-1 file, from before any release, is
refused rather than migrated). Schema 3 keys the eventlog by (seq, idx)
(see _MIGRATE_2); a schema-2 file is migrated in one transaction at open.
Schema 4 adds `estimate_log(seq, records)` and `estimate_queue(id, queue)`,
the jobs' estimate histories (docs/accuracy.md; see _ESTIMATES); a schema-3
file gets the tables, empty, at open.

Job ids are unsigned 64-bit; SQLite integers are signed, so an id >= 2**63
is stored as id - 2**64 (two's complement) and converted back on read.

A file that is not ours (not SQLite, another application's database, a
corrupt image) or that a newer flux-annot wrote is refused with an
`AnnotError` before anything is written to it.

One service per store (docs/durability.md): a `Store` on a file takes an
exclusive `flock` on `<store>.lock` beside it for as long as it is open and
writes its pid there. A second `Store` on the same file (another process, or
the same one) is refused with EBUSY naming the store and the holder's pid.
The kernel drops the lock with the process, so a `kill -9` leaves nothing
that blocks the next start (the file itself stays; it holds only a pid).
An `flock` on a file of our own, not on the database: SQLite's POSIX locks
on the database are independent of it, and an outside `sqlite3` shell or a
backup tool reading the store is not blocked by it.

A commit that fails raises `AnnotError` with ENOSPC when SQLite says the disk
is full (SQLITE_FULL), EIO otherwise (locked by another process, I/O error,
read-only file), the sentence naming the store and SQLite's own message.
The connection waits at most `BUSY_TIMEOUT` seconds for a lock held by
another process before a commit fails (the service then retries it).
"""

import errno
import fcntl
import itertools
import json
import os
import sqlite3

from flux_annot.service import replay as _replay
from flux_annot.errors import EINVAL, EPROTO, error

EIO = errno.EIO
ENOSPC = errno.ENOSPC
EBUSY = errno.EBUSY

#: seconds a commit waits for a lock another process holds on the database
BUSY_TIMEOUT = 1.0

_SQLITE_FULL = 13


def commit_error(path, exc):
    """The AnnotError of a failed commit: ENOSPC for a full disk, else EIO."""
    code = getattr(exc, "sqlite_errorcode", None)
    full = (code is not None and code & 0xFF == _SQLITE_FULL) or "full" in str(exc)
    return error(ENOSPC if full else EIO, f"{path}: store write failed ({exc})")


def _lock_path(path):
    return path + ".lock"


def _take_lock(path):
    """An fd holding an exclusive flock on <path>.lock, or EBUSY naming the holder."""
    lock = _lock_path(path)
    try:
        fd = os.open(lock, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
    except OSError as exc:
        raise error(EINVAL, f"{path}: cannot create the store's lock file {lock} ({exc.strerror})") from None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError as exc:
        try:
            holder = os.pread(fd, 32, 0).decode("ascii", "replace").strip()
        except OSError:
            holder = ""
        os.close(fd)
        if exc.errno not in (errno.EWOULDBLOCK, errno.EAGAIN):
            raise error(EINVAL, f"{path}: cannot lock the store ({exc.strerror})") from None
        who = f" (pid {holder})" if holder.isdigit() else ""
        raise error(
            EBUSY,
            f"{path}: store is in use by another flux-annot service{who}; "
            f"one service per store",
        ) from None
    try:
        os.ftruncate(fd, 0)
        os.pwrite(fd, b"%d\n" % os.getpid(), 0)
    except OSError:
        pass  # the lock holds; the pid is only a courtesy
    return fd


SCHEMA_VERSION = 4
APPLICATION_ID = 0x464C5841  # "FLXA"

_EVENTLOG = """
CREATE TABLE %s (
    id INTEGER NOT NULL,
    seq INTEGER NOT NULL,
    idx INTEGER NOT NULL,
    timestamp REAL NOT NULL,
    name TEXT NOT NULL,
    context TEXT NOT NULL,
    PRIMARY KEY (seq, idx)
) WITHOUT ROWID;
"""

# Schema 4: the estimate histories (docs/accuracy.md). `estimate_log`: per
# batch that changed any, one row holding those jobs' whole records in the
# C core's form (fa_hist_dump: id, start, ended, n, kept, the kept pairs
# (t_estimate, at) as doubles); a later record of a job replaces an earlier
# one. One row a batch, not a row a job: the scheduler's notes change
# thousands of estimates a second, and a row per job cost the loop more
# than recording them. Compacted (every record in one row, older rows
# deleted) at start and when the log outgrows the records
# (`compact_estimates`). `estimate_queue`: the jobs' `sched.queue`.
_ESTIMATES = """
CREATE TABLE estimate_log (
    seq INTEGER PRIMARY KEY,
    records BLOB NOT NULL
);
CREATE TABLE estimate_queue (
    id INTEGER PRIMARY KEY,
    queue TEXT NOT NULL
);
"""

_SCHEMA = """
CREATE TABLE jobs (
    id INTEGER PRIMARY KEY,
    userid INTEGER NOT NULL,
    t_submit REAL,
    state TEXT NOT NULL,
    tree BLOB,
    user_bytes INTEGER NOT NULL DEFAULT 0,
    allocated INTEGER NOT NULL DEFAULT 0,
    note TEXT
);
""" + _EVENTLOG % "eventlog" + """
CREATE TABLE meta (
    key TEXT PRIMARY KEY,
    value INTEGER NOT NULL
);
INSERT INTO meta (key, value) VALUES ('last_seq', 0);
""" + _ESTIMATES

_EXPECTED_TABLES_3 = {"jobs", "eventlog", "meta"}

_EXPECTED_TABLES = {"jobs", "eventlog", "meta", "estimate_log", "estimate_queue"}

# Schema 2 -> 3: the eventlog keyed by (seq, idx) instead of (id, seq, idx).
# A batch's entries then go to the end of the table (a few pages per
# commit) instead of into one page per job touched (measured with 300k
# entries of 10k jobs, 1000 per commit: 25 -> 3 us of CPU per entry, half
# the WAL bytes). Reading one job's entries in order is then a sort, done
# only by replays of the record (rare).
_MIGRATE_2 = "BEGIN IMMEDIATE;" + _EVENTLOG % "eventlog3" + """
INSERT INTO eventlog3 SELECT id, seq, idx, timestamp, name, context FROM eventlog ORDER BY seq, idx;
DROP TABLE eventlog;
ALTER TABLE eventlog3 RENAME TO eventlog;
PRAGMA user_version=3;
COMMIT;
"""
# Schema 3 -> 4: the estimate tables, empty (the histories start now).
_MIGRATE_3 = "BEGIN IMMEDIATE;" + _ESTIMATES + "PRAGMA user_version=4;\nCOMMIT;\n"

_TREE_NAMES = frozenset(_replay.TREE_NAMES)
STATE_CODES = _replay.STATE_CODES
_STATE_CASE = (
    "CASE state "
    + " ".join(f"WHEN '{name}' THEN {i}" for i, name in enumerate(STATE_CODES))
    + " ELSE state END"
)
_IN_CHUNK = 500  # ids per "WHERE id IN (...)" (SQLite's variable limit is 999 on old builds)
# Snapshot rows (tree, allocated) a store keeps of the jobs it wrote last,
# so the next batch touching them merges onto them without reading them
# back (`Store._previous`): a scheduler's or a user's durable notes come
# back to the same jobs batch after batch. At most this many jobs (then
# it starts over): a few MB.
_RECENT_MAX = 32768

_U64 = 1 << 64
_I64_MAX = (1 << 63) - 1

_ROWS_CHUNK = 128  # rows per multi-row INSERT (x 7 columns < 999 variables)


def _insert_rows(db, head, width, rows, tail=""):
    """`db.executemany(head + "(?,...)" + tail, rows)`, many rows a statement.

    One statement of 128 rows, then of 64, 32, ... for the rest (a few
    distinct statements, all cached): sqlite3 runs each statement in one
    sqlite3_step and hands the GIL over once around it, not once per row,
    so the event loop running beside the writer thread costs it far fewer
    waits, and SQLite fewer statement starts (1.45 -> 0.8-1.1 us a row
    measured alone, 2000 eventlog rows a batch).
    """
    n = len(rows)
    one = "(" + ",".join("?" * width) + ")"
    chain = itertools.chain.from_iterable
    i = 0
    k = _ROWS_CHUNK
    while i < n:
        if n - i >= k:
            sql = head + ",".join([one] * k) + tail
            while n - i >= k:
                db.execute(sql, list(chain(rows[i : i + k])))
                i += k
        k //= 2


def _to_db(jobid):
    """Unsigned 64-bit job id -> signed SQLite integer."""
    return jobid - _U64 if jobid > _I64_MAX else jobid


def _from_db(value):
    return value + _U64 if value < 0 else value


def encode_context(context):
    """An entry context as compact JSON text; bytes/str are taken as already encoded.

    The hub passes pre-encoded text for `alloc` snapshots (straight from the
    C table) so no Python dict is built for them.
    """
    if isinstance(context, bytes):
        return context.decode("utf-8")
    if isinstance(context, str):
        return context
    return json.dumps(context, separators=(",", ":"), ensure_ascii=False)


def _note_of(ctx):
    """The note of an `exception` context (dict or JSON text), or None."""
    if not isinstance(ctx, dict):
        try:
            ctx = json.loads(ctx)
        except ValueError:
            return None
        if not isinstance(ctx, dict):
            return None
    note = ctx.get("note")
    return note if isinstance(note, str) and note else None


class Store:
    """SQLite store of jobs, their eventlog and the last published seq."""

    def __init__(self, path, synchronous="FULL", lock=True):
        """lock=False: no service lock (a reader beside a running service,
        e.g. a check of the eventlog); the service always locks."""
        self.path = os.fspath(path)
        if self.path != ":memory:":
            self.path = os.path.abspath(self.path)  # messages name the file wherever read
        self._db = None
        self._lock = None
        # {jobid: (tree, allocated)} as committed, of jobs write_batch wrote
        # (only write_batch writes snapshot rows; updated after its COMMIT)
        self._recent = {}
        if lock and self.path != ":memory:" and not os.path.isdir(self.path):
            self._lock = _take_lock(self.path)
        try:
            self._open(synchronous)
        except BaseException:
            self._unlock()
            raise

    def _unlock(self):
        if self._lock is not None:
            os.close(self._lock)
            self._lock = None

    def _open(self, synchronous):
        db = self._open_checked()
        try:
            db.execute("PRAGMA journal_mode=WAL")
            db.execute(f"PRAGMA synchronous={synchronous}")
            if self._migrate == 2:
                db.executescript(_MIGRATE_2)
            if self._migrate in (2, 3):
                db.executescript(_MIGRATE_3)
            if self._fresh:
                db.executescript(
                    "BEGIN;"
                    + _SCHEMA
                    + f"PRAGMA user_version={SCHEMA_VERSION};"
                    + f"PRAGMA application_id={APPLICATION_ID};"
                    + "COMMIT;"
                )
            self._last_seq = db.execute(
                "SELECT value FROM meta WHERE key='last_seq'"
            ).fetchone()[0]
            # 'clean_seq' is left by a close that lost no volatile change
            # (mark_clean); it speaks for this start only, so it goes now.
            row = db.execute("SELECT value FROM meta WHERE key='clean_seq'").fetchone()
            self.opened_clean = row is not None and row[0] == self._last_seq
            if row is not None:
                with db:
                    db.execute("DELETE FROM meta WHERE key='clean_seq'")
        except sqlite3.DatabaseError as exc:
            db.close()
            raise self._corrupt(exc) from None
        self._db = db

    # -- opening ---------------------------------------------------------

    def _corrupt(self, exc):
        return error(EPROTO, f"{self.path}: is not a flux-annot store or is corrupt ({exc})")

    def _open_checked(self):
        """Connect and check the file is ours, writing nothing to it."""
        if os.path.isdir(self.path):
            raise error(EINVAL, f"{self.path}: is a directory, not a flux-annot store")
        try:
            # isolation_level=None: we issue BEGIN/COMMIT ourselves.
            db = sqlite3.connect(
                self.path, isolation_level=None, check_same_thread=False, timeout=BUSY_TIMEOUT
            )
        except sqlite3.Error as exc:
            raise error(EINVAL, f"{self.path}: cannot open store ({exc})") from None
        try:
            version = db.execute("PRAGMA user_version").fetchone()[0]
            app_id = db.execute("PRAGMA application_id").fetchone()[0]
            tables = {
                row[0]
                for row in db.execute("SELECT name FROM sqlite_master WHERE type='table'")
            }
        except sqlite3.DatabaseError as exc:
            db.close()
            raise self._corrupt(exc) from None
        self._migrate = 0  # the schema to migrate from (done in _open), 0: none
        if not tables and version == 0 and app_id == 0:
            self._fresh = True
            return db
        self._fresh = False
        if app_id != APPLICATION_ID:
            db.close()
            raise error(
                EPROTO,
                f"{self.path}: is not a flux-annot store (another SQLite database)",
            )
        if version > SCHEMA_VERSION:
            db.close()
            raise error(
                EINVAL,
                f"{self.path}: store was written by a newer flux-annot "
                f"(schema {version}, this version reads up to {SCHEMA_VERSION})",
            )
        if version in (2, 3) and _EXPECTED_TABLES_3 <= tables:
            self._migrate = version  # done once the file is known to be ours (_open)
            return db
        if 1 <= version < SCHEMA_VERSION:
            db.close()
            raise error(
                EINVAL,
                f"{self.path}: store was written by an older development version of "
                f"flux-annot (schema {version}, this version reads schema {SCHEMA_VERSION}, migrates "
                f"schemas 2 and 3, and does not migrate schema {version})",
            )
        if version < 1 or not _EXPECTED_TABLES <= tables:
            db.close()
            raise error(EPROTO, f"{self.path}: is not a flux-annot store (missing tables)")
        return db

    # -- the seam --------------------------------------------------------

    def last_seq(self):
        return self._last_seq

    def write_batch(self, seq, entries, jobs, known=None, first_seq=None, estimates=None):
        """Write one batch in one transaction; returns once committed.

        entries: [(jobid, name, context, timestamp), ...] in order; context a
        dict or pre-encoded JSON text. jobs: {jobid: (userid, state, t_submit)}
        for every job the batch touched. known: {jobid: (tree bytes or None,
        user_bytes)}, the durable tree after this batch of jobs whose caller
        knows it (the service's live tree, when no volatile change happened
        since the job's last durable state): their snapshot row is written
        as given, without reading the previous row or merging. On failure
        nothing is written and the error is raised (the caller must not
        publish the batch). first_seq: this write also covers the seqs from
        first_seq on, batches that had nothing to write (published while
        the store was failing); default seq. estimates: (records, queues) of
        the estimate histories changed (`accuracy.Accuracy.rows`): the
        records' bytes become this batch's `estimate_log` row, the queues
        [(jobid, queue)] replace the jobs' previous ones.
        """
        if (seq if first_seq is None else first_seq) != self._last_seq + 1 or (
            first_seq is not None and first_seq > seq
        ):
            raise error(EINVAL, f"store: batch seq {seq} does not follow {self._last_seq}")
        rows = []
        pending = {}  # jobid -> [(name, context text)] of the entries that change its tree
        notes = {}  # jobid -> its last exception note in this batch
        allocs = set()  # jobs with an alloc entry in this batch
        append = rows.append
        if known is None:
            known = {}
        for idx, (jobid, name, ctx, ts) in enumerate(entries):
            # encode_context and _to_db inlined: this loop runs per entry
            t = type(ctx)
            text = ctx.decode("utf-8") if t is bytes else ctx if t is str else encode_context(ctx)
            append((
                jobid if jobid <= _I64_MAX else jobid - _U64,
                seq,
                idx,
                ts if type(ts) is float else float(ts),
                name,
                text,
            ))
            if name in _TREE_NAMES:
                if name == "exception":
                    note = _note_of(ctx)
                    if note:
                        notes[jobid] = note
                elif name == "alloc":
                    allocs.add(jobid)
                if jobid not in known:
                    mine = pending.get(jobid)
                    if mine is None:
                        mine = pending[jobid] = []
                    # bytes stay bytes: replay trusts the hub's own alloc snapshots
                    mine.append((name, ctx if t is bytes else text))
        # Jobs of `known` take their tree as given (the hub names only jobs
        # with a tree entry in the batch); `allocated` only ever goes 0 -> 1,
        # so it is 1 when the batch has an alloc, else unchanged.
        given = {jobid: (tree, ub, jobid in allocs) for jobid, (tree, ub) in known.items()}
        db = self._db
        try:
            db.execute("BEGIN IMMEDIATE")
            # The other touched jobs' new snapshots (reads their previous rows).
            trees = _replay.durable_trees(self._previous(pending), pending) if pending else {}
            if given:
                trees.update(given)
            jobrows, snaprows = [], []
            snapped = {}  # jobid -> (tree, allocated) of the merged rows (durable_trees)
            for jobid, (userid, state, t_submit) in jobs.items():
                snap = trees.pop(jobid, None)
                if snap is None:
                    jobrows.append((_to_db(jobid), userid, t_submit, state))
                else:
                    tree, ub, allocated = snap
                    snaprows.append((
                        _to_db(jobid), userid, t_submit, state,
                        # sqlite3 binds a bytearray as it is; bytes first go
                        # through its adapter lookup (a formatted, then
                        # cleared, AttributeError per value: ~1 us a row)
                        tree if tree is None else bytearray(tree),
                        ub, 1 if allocated else 0,
                    ))
                    if jobid not in given:
                        snapped[jobid] = (tree, bool(allocated))
            if jobrows:
                _insert_rows(
                    db, "INSERT INTO jobs (id, userid, t_submit, state) VALUES ", 4, jobrows,
                    " ON CONFLICT(id) DO UPDATE SET state=excluded.state",
                )
            if snaprows:
                _insert_rows(
                    db,
                    "INSERT INTO jobs (id, userid, t_submit, state, tree, user_bytes, allocated) "
                    "VALUES ",
                    7,
                    snaprows,
                    " ON CONFLICT(id) DO UPDATE SET state=excluded.state, "
                    "tree=excluded.tree, user_bytes=excluded.user_bytes, "
                    "allocated=max(allocated, excluded.allocated)",
                )
            if trees:  # entries of a job missing from `jobs` (the hub sends them all)
                db.executemany(
                    "UPDATE jobs SET tree=?, user_bytes=?, allocated=max(allocated, ?) WHERE id=?",
                    [
                        (tree, ub, 1 if allocated else 0, _to_db(jobid))
                        for jobid, (tree, ub, allocated) in trees.items()
                    ],
                )
            if rows:
                _insert_rows(
                    db, "INSERT INTO eventlog (id, seq, idx, timestamp, name, context) VALUES ",
                    6, rows,
                )
            if notes:
                db.executemany(
                    "UPDATE jobs SET note=? WHERE id=?",
                    [(note, _to_db(jobid)) for jobid, note in notes.items()],
                )
            if estimates:
                records, queues, compact = estimates
                if compact:  # the records are all of them: the older log goes
                    db.execute("DELETE FROM estimate_log")
                if records:
                    db.execute("INSERT OR REPLACE INTO estimate_log (seq, records) VALUES (?, ?)",
                               (seq, records))
                if queues:
                    db.executemany(
                        "INSERT OR REPLACE INTO estimate_queue (id, queue) VALUES (?, ?)",
                        [(_to_db(j), q) for j, q in queues],
                    )
            db.execute("UPDATE meta SET value=? WHERE key='last_seq'", (seq,))
            db.execute("COMMIT")
        except BaseException as exc:
            self._recent.clear()  # nothing of this batch is written: read back from now on
            if db.in_transaction:
                try:
                    db.execute("ROLLBACK")
                except sqlite3.Error:
                    pass  # SQLite rolls back itself when it cannot go on
            if isinstance(exc, sqlite3.Error):
                raise commit_error(self.path, exc) from None
            raise
        self._last_seq = seq
        recent = self._recent
        if given or trees:  # rows whose `allocated` is max()ed in SQL: read back next time
            for jobid in given:
                recent.pop(jobid, None)
            for jobid in trees:
                recent.pop(jobid, None)
        if snapped:
            if len(recent) + len(snapped) > _RECENT_MAX:
                recent.clear()
            recent.update(snapped)

    def _previous(self, pending):
        """{jobid: (tree, allocated)} before this batch, for the jobs that need it.

        A job whose first tree entry in the batch is an `alloc` starts over
        from the snapshot, so its previous row is not read.
        """
        recent = self._recent
        prev = {}
        need = []
        for j, ents in pending.items():
            if ents[0][0] != "alloc":
                row = recent.get(j)
                if row is None:
                    need.append(_to_db(j))
                elif row[0] is not None or row[1]:
                    prev[j] = row
        db = self._db
        for start in range(0, len(need), _IN_CHUNK):
            part = need[start : start + _IN_CHUNK]
            sql = "SELECT id, tree, allocated FROM jobs WHERE id IN (%s)" % ",".join(
                "?" * len(part)
            )
            for sid, tree, allocated in db.execute(sql, part):
                if tree is not None or allocated:  # _from_db inline
                    prev[sid if sid >= 0 else sid + _U64] = (tree, allocated != 0)
        return prev

    def snapshot_rows(self):
        """Every job with its durable snapshot, in stored id order, as a list.

        Rows (stored id, userid, t_submit, state, tree bytes or None,
        user_bytes). The id is the stored SIGNED integer (reinterpret as
        unsigned 64-bit): replay converts all of them at once. The state is
        its index in STATE_CODES (a small int: Python shares those, where
        a million state strings would each be a new object; measured
        -0.2..0.4 s per 1M rows), or the stored text if it is not listed.
        """
        return self._query(
            "SELECT id, userid, t_submit, %s, tree, user_bytes FROM jobs ORDER BY id"
            % _STATE_CASE
        )

    def estimate_dumps(self):
        """The estimate log's records, oldest batch first: [bytes]."""
        return [bytes(r[0]) for r in self._query("SELECT records FROM estimate_log ORDER BY seq")]

    def estimate_queues(self):
        """[(jobid, queue)] of the jobs with a `sched.queue`."""
        return [(_from_db(i), q) for i, q in self._query("SELECT id, queue FROM estimate_queue")]

    def estimate_log_bytes(self):
        """(rows, bytes) of the estimate log."""
        return tuple(self._query(
            "SELECT COUNT(*), COALESCE(SUM(length(records)), 0) FROM estimate_log")[0])

    def compact_estimates(self, records):
        """Replace the whole estimate log by one row of every record (the
        service's full dump), keyed by the last seq. One transaction; an
        error leaves the log as it was (it is compacted another time)."""
        try:
            with self._db:
                self._db.execute("DELETE FROM estimate_log")
                if records:
                    self._db.execute("INSERT INTO estimate_log (seq, records) VALUES (?, ?)",
                                     (self._last_seq, records))
        except sqlite3.Error:
            pass

    def estimates_bytes(self):
        """Bytes of the file's pages holding the estimate histories (SQLite's
        dbstat; the rows' own bytes where SQLite lacks it)."""
        try:
            return self._db.execute(
                "SELECT SUM(pgsize) FROM dbstat WHERE name IN ('estimate_log', 'estimate_queue')"
            ).fetchone()[0] or 0
        except sqlite3.Error:
            return self.estimate_log_bytes()[1]

    def notes(self):
        """{jobid: note} of the jobs with an exception note (few)."""
        rows = self._query("SELECT id, note FROM jobs WHERE note IS NOT NULL")
        return {_from_db(sid): note for sid, note in rows}

    def user_totals(self):
        """{userid: bytes} of the `user` namespaces of each user's jobs not INACTIVE."""
        return dict(
            self._query(
                "SELECT userid, SUM(user_bytes) FROM jobs "
                "WHERE user_bytes > 0 AND state != 'INACTIVE' GROUP BY userid"
            )
        )

    def _query(self, sql):
        try:
            return self._db.execute(sql).fetchall()
        except sqlite3.DatabaseError as exc:
            raise self._corrupt(exc) from None

    def job_rows(self):
        """All jobs as (jobid, userid, t_submit, state), in stored id order."""
        try:
            for jid, userid, t_submit, state in self._db.execute(
                "SELECT id, userid, t_submit, state FROM jobs ORDER BY id"
            ):
                yield _from_db(jid), userid, t_submit, state
        except sqlite3.DatabaseError as exc:
            raise self._corrupt(exc) from None

    def entries(self, names=None):
        """Eventlog rows (jobid, name, context_text, timestamp), per job in order.

        names: only entries with these names (replay reads only what changes
        a tree). Jobs come in stored id order.
        """
        sql = "SELECT id, name, context, timestamp FROM eventlog"
        args = ()
        if names:
            names = list(names)
            sql += " WHERE name IN (%s)" % ",".join("?" * len(names))
            args = names
        sql += " ORDER BY id, seq, idx"
        try:
            for jid, name, ctx, ts in self._db.execute(sql, args):
                yield _from_db(jid), name, ctx, ts
        except sqlite3.DatabaseError as exc:
            raise self._corrupt(exc) from None

    def jobs_with_entries(self, names, jobids=None):
        """One pass for replay: (jobid, userid, t_submit, state, name, patch).

        Every job appears (name/patch None when it has no entry of `names`),
        its entries in order; jobs in stored id order. `patch` is bytes, and
        SQLite already shapes it for the tree: a `memo` context comes wrapped
        as `{"user":...}`; an `alloc` context written by us comes as its
        snapshot tree, with the name `alloc-tree` (another `alloc` keeps its
        whole context). Job ids are the stored signed integers. jobids: only
        these jobs (default all).
        """
        names = list(names)
        if jobids is not None:
            rows = []
            ids = [_to_db(j) for j in jobids]
            for start in range(0, len(ids), _IN_CHUNK):
                rows.extend(self._jobs_with_entries(names, ids[start : start + _IN_CHUNK]))
            rows.sort(key=lambda r: r[0])  # chunks are in id order within; keep it overall
            yield from rows
            return
        yield from self._jobs_with_entries(names, None)

    def _jobs_with_entries(self, names, ids):
        sql = (
            "SELECT j.id, j.userid, j.t_submit, j.state, "
            "CASE WHEN e.name = 'alloc' AND substr(e.context, 1, 15) = '{\"annotations\":' "
            "THEN 'alloc-tree' ELSE e.name END, "
            "CAST(CASE WHEN e.name = 'memo' THEN '{\"user\":' || e.context || '}' "
            "WHEN e.name = 'alloc' AND substr(e.context, 1, 15) = '{\"annotations\":' "
            "THEN substr(e.context, 16, length(e.context) - 16) "
            "ELSE e.context END AS BLOB) "
            "FROM jobs j LEFT JOIN eventlog e ON e.id = j.id AND e.name IN (%s) "
            % ",".join("?" * len(names))
        )
        args = names
        if ids is not None:
            sql += "WHERE j.id IN (%s) " % ",".join("?" * len(ids))
            args = names + ids
        sql += "ORDER BY j.id, e.seq, e.idx"
        try:
            yield from self._db.execute(sql, args)
        except sqlite3.DatabaseError as exc:
            raise self._corrupt(exc) from None

    def replay(self):
        """Jobs in stored id order: (jobid, userid, t_submit, state, [entries]).

        entries are (name, context dict, timestamp) in order. Convenient and
        complete, but builds Python objects per entry: the service's start-up
        path uses `flux_annot.replay.restore`, which does not.
        """
        ents = self.entries()
        pending = next(ents, None)
        for jobid, userid, t_submit, state in self.job_rows():
            mine = []
            while pending is not None and pending[0] == jobid:
                _, name, ctx, ts = pending
                mine.append((name, json.loads(ctx), ts))
                pending = next(ents, None)
            yield jobid, userid, t_submit, state, mine

    def size_bytes(self):
        """Bytes on disk: the database file plus its WAL."""
        total = 0
        for suffix in ("", "-wal"):
            try:
                total += os.path.getsize(self.path + suffix)
            except OSError:
                pass
        return total

    def mark_clean(self):
        """Record that the state at `last_seq` holds no volatile change (every
        job's live tree is its durable tree): the next start may then accept
        a subscriber's `since` from before it (docs/events.md, "Resuming")."""
        try:
            with self._db:
                self._db.execute(
                    "INSERT OR REPLACE INTO meta (key, value) VALUES ('clean_seq', ?)",
                    (self._last_seq,),
                )
        except sqlite3.Error:
            pass  # no mark: the next start is merely cautious about `since`

    def close(self):
        if self._db is not None:
            self._db.close()
            self._db = None
        self._unlock()


def backup(path, dest):
    """Copy the store at `path` to a new file `dest` while a service may be
    writing it (docs/operations.md): SQLite's online backup API reads one
    committed state of the database (a WAL reader: the service's commits go
    on meanwhile), written to a temporary file beside `dest`, synced, and
    renamed into place, so `dest` is either absent or a whole store. The
    copy is a self-contained file (rollback journal; a service that opens it
    switches it back to WAL). Nothing is written to `path`.

    Returns (last seq, jobs) of the copy. AnnotError: EEXIST if `dest`
    exists, ENOENT if `path` does not, EPROTO if it is not a flux-annot
    store, EIO when SQLite or the file system fails (dest left absent).
    """
    path = os.path.abspath(os.fspath(path))
    dest = os.path.abspath(os.fspath(dest))
    if not os.path.isfile(path):
        raise error(errno.ENOENT, f"{path}: no such store")
    if os.path.lexists(dest):
        raise error(errno.EEXIST, f"{dest} exists: a backup is written to a new file")
    if not os.path.isdir(os.path.dirname(dest)):
        raise error(errno.ENOENT, f"{os.path.dirname(dest)}: no such directory")
    tmp = f"{dest}.tmp-{os.getpid()}"
    src = out = None
    try:
        src = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=BUSY_TIMEOUT,
                              isolation_level=None)
        app_id = src.execute("PRAGMA application_id").fetchone()[0]
        if app_id != APPLICATION_ID:
            raise error(EPROTO, f"{path}: is not a flux-annot store")
        out = sqlite3.connect(tmp, isolation_level=None)
        src.backup(out)  # every page in one step: one consistent snapshot
        out.execute("PRAGMA journal_mode=DELETE")
        seq = out.execute("SELECT value FROM meta WHERE key='last_seq'").fetchone()[0]
        jobs = out.execute("SELECT count(*) FROM jobs").fetchone()[0]
        out.close()
        out = None
        fd = os.open(tmp, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
        os.link(tmp, dest)  # fails (EEXIST) rather than replace a file made meanwhile
        dfd = os.open(os.path.dirname(dest), os.O_RDONLY)
        try:
            os.fsync(dfd)
        finally:
            os.close(dfd)
        return seq, jobs
    except sqlite3.DatabaseError as exc:
        raise error(EPROTO if "not a database" in str(exc) else EIO,
                    f"backup of {path} failed: {exc}") from None
    except OSError as exc:
        raise error(exc.errno or EIO, f"backup of {path} to {dest} failed: "
                    f"{exc.strerror or exc}") from None
    finally:
        for db in (src, out):
            if db is not None:
                db.close()
        for leftover in (tmp, tmp + "-journal"):
            try:
                os.unlink(leftover)
            except FileNotFoundError:
                pass
