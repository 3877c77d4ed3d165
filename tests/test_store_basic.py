"""The SQLite store alone: schema, one transaction per batch, refusals."""

import errno
import sqlite3

import pytest

from flux_annot.errors import EINVAL, EPROTO, AnnotError
from flux_annot.service.store import SCHEMA_VERSION, Store


def _batch(store, seq, entries, jobs):
    store.write_batch(seq, entries, jobs)


def test_fresh_store_starts_at_seq_zero_in_wal_mode(tmp_path):
    path = tmp_path / "s.db"
    st = Store(path)
    assert st.last_seq() == 0
    assert list(st.job_rows()) == []
    st.close()
    db = sqlite3.connect(path)
    assert db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert db.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION


def test_batches_survive_reopen_in_order(tmp_path):
    path = tmp_path / "s.db"
    st = Store(path)
    st.write_batch(
        1,
        [(7, "submit", {"userid": 100}, 1.0), (7, "memo", {"a": 1}, 1.5)],
        {7: (100, "SCHED", 1.0)},
    )
    st.write_batch(
        2,
        [(7, "alloc", b'{"annotations":{"sched":{"r":"x"}}}', 2.0), (8, "submit", {"userid": 5}, 2.0)],
        {7: (100, "RUN", 1.0), 8: (5, "SCHED", 2.0)},
    )
    st.close()
    st = Store(path)
    assert st.last_seq() == 2
    assert list(st.job_rows()) == [(7, 100, 1.0, "RUN"), (8, 5, 2.0, "SCHED")]
    got = list(st.replay())
    assert got[0][:4] == (7, 100, 1.0, "RUN")
    assert [(n, c) for n, c, _ in got[0][4]] == [
        ("submit", {"userid": 100}),
        ("memo", {"a": 1}),
        ("alloc", {"annotations": {"sched": {"r": "x"}}}),
    ]
    assert [n for n, _, _ in got[1][4]] == ["submit"]
    assert st.size_bytes() > 0


def test_a_large_batch_is_written_whole(tmp_path):
    """300 jobs and 600 entries in one batch (written many rows a
    statement): every entry in order, every job's row and tree."""
    path = tmp_path / "s.db"
    st = Store(path)
    ids = list(range(1, 301))
    entries = [(j, "submit", {"userid": 100}, 1.0) for j in ids]
    entries += [(j, "annotate", b'{"site":{"n":%d}}' % j, 2.0) for j in ids]
    st.write_batch(1, entries, {j: (100, "SCHED", 1.0) for j in ids})
    st.close()
    st = Store(path)
    assert [r[0] for r in st.job_rows()] == ids
    got = {jid: [(n, c) for n, c, _ in ents] for jid, _u, _t, _s, ents in st.replay()}
    assert got == {j: [("submit", {"userid": 100}), ("annotate", {"site": {"n": j}})] for j in ids}
    trees = {(sid, tree) for sid, _u, _t, _s, tree, _ub in st.snapshot_rows()}
    assert trees == {(j, b'{"site":{"n":%d}}' % j) for j in ids}
    st.close()


def test_unsigned_64bit_ids_round_trip(tmp_path):
    st = Store(tmp_path / "s.db")
    big = (1 << 64) - 1
    st.write_batch(1, [(big, "submit", {"userid": 1}, 0.0)], {big: (1, "SCHED", 0.0)})
    assert [r[0] for r in st.job_rows()] == [big]
    assert [e[0] for e in st.entries()] == [big]


def test_seq_gap_is_refused_and_writes_nothing(tmp_path):
    st = Store(tmp_path / "s.db")
    with pytest.raises(AnnotError) as ei:
        st.write_batch(2, [(1, "submit", {}, 0.0)], {1: (1, "SCHED", 0.0)})
    assert ei.value.errno == EINVAL
    assert st.last_seq() == 0
    assert list(st.job_rows()) == [] and list(st.entries()) == []


def test_failed_batch_rolls_back_whole(tmp_path):
    st = Store(tmp_path / "s.db")
    st.write_batch(1, [(1, "submit", {}, 0.0)], {1: (1, "SCHED", 0.0)})
    # The same (id, seq, idx) twice violates the primary key mid-batch.
    st._last_seq = 0  # force seq 1 again: its first entry is a duplicate key
    with pytest.raises(AnnotError) as ei:
        st.write_batch(1, [(1, "submit", {}, 0.0), (2, "submit", {}, 0.0)], {2: (2, "SCHED", 0.0)})
    assert ei.value.errno == errno.EIO and "store write failed" in str(ei.value)
    st._last_seq = 1
    assert [r[0] for r in st.job_rows()] == [1]
    assert [e[0] for e in st.entries()] == [1]


def test_newer_schema_is_refused_and_file_untouched(tmp_path):
    path = tmp_path / "s.db"
    Store(path).close()
    db = sqlite3.connect(path)
    db.execute(f"PRAGMA user_version={SCHEMA_VERSION + 1}")
    db.commit()
    db.close()
    before = path.read_bytes()
    with pytest.raises(AnnotError) as ei:
        Store(path)
    assert ei.value.errno == EINVAL
    assert "newer flux-annot" in str(ei.value)
    assert f"schema {SCHEMA_VERSION + 1}" in str(ei.value)
    assert str(path) in str(ei.value)
    assert path.read_bytes() == before


def test_not_sqlite_file_is_refused_and_untouched(tmp_path):
    path = tmp_path / "notes.txt"
    path.write_bytes(b"these are my precious notes\n" * 200)
    before = path.read_bytes()
    with pytest.raises(AnnotError) as ei:
        Store(path)
    assert ei.value.errno == EPROTO
    assert "not a flux-annot store" in str(ei.value)
    assert path.read_bytes() == before


def test_other_sqlite_database_is_refused_and_untouched(tmp_path):
    path = tmp_path / "other.db"
    db = sqlite3.connect(path)
    db.execute("CREATE TABLE t (x)")
    db.execute("INSERT INTO t VALUES (1)")
    db.commit()
    db.close()
    before = path.read_bytes()
    with pytest.raises(AnnotError) as ei:
        Store(path)
    assert ei.value.errno == EPROTO
    assert "another SQLite database" in str(ei.value)
    assert path.read_bytes() == before


def test_corrupt_store_is_refused_and_untouched(tmp_path):
    path = tmp_path / "s.db"
    st = Store(path)
    st.write_batch(1, [(1, "submit", {}, 0.0)], {1: (1, "SCHED", 0.0)})
    st.close()
    data = bytearray(path.read_bytes())
    # Keep the 100-byte header, scribble over the schema page.
    data[100:1000] = b"\xff" * 900
    path.write_bytes(bytes(data))
    with pytest.raises(AnnotError) as ei:
        Store(path)
    assert ei.value.errno == EPROTO
    assert path.read_bytes() == bytes(data)


def test_directory_is_refused(tmp_path):
    with pytest.raises(AnnotError) as ei:
        Store(tmp_path)
    assert ei.value.errno == EINVAL
