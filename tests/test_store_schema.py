"""Schema 3 (the eventlog keyed by batch, appended per commit) and 4 (the
estimate histories): a schema-2 store is migrated at open, keeping every
job, snapshot and entry (schema 3 -> 4: tests/test_accuracy.py)."""

import json
import sqlite3

from flux_annot.service.policy import Cred
from flux_annot.service.service import AnnotationService
from flux_annot.service.store import APPLICATION_ID, SCHEMA_VERSION, Store

_SCHEMA_2 = """
CREATE TABLE jobs (id INTEGER PRIMARY KEY, userid INTEGER NOT NULL, t_submit REAL,
    state TEXT NOT NULL, tree BLOB, user_bytes INTEGER NOT NULL DEFAULT 0,
    allocated INTEGER NOT NULL DEFAULT 0, note TEXT);
CREATE TABLE eventlog (id INTEGER NOT NULL, seq INTEGER NOT NULL, idx INTEGER NOT NULL,
    timestamp REAL NOT NULL, name TEXT NOT NULL, context TEXT NOT NULL,
    PRIMARY KEY (id, seq, idx)) WITHOUT ROWID;
CREATE TABLE meta (key TEXT PRIMARY KEY, value INTEGER NOT NULL);
"""


def make_schema_2(path):
    db = sqlite3.connect(path)
    db.executescript(_SCHEMA_2)
    db.execute("INSERT INTO meta VALUES ('last_seq', 2)")
    db.execute(
        "INSERT INTO jobs VALUES (7, 1000, 1.0, 'SCHED', ?, 7, 0, NULL)", (b'{"user":{"a":1}}',)
    )
    db.executemany(
        "INSERT INTO eventlog VALUES (?,?,?,?,?,?)",
        [
            (7, 1, 0, 1.0, "submit", '{"userid":1000}'),
            (7, 2, 0, 2.0, "memo", '{"a":1}'),
        ],
    )
    db.execute("PRAGMA user_version=2")
    db.execute(f"PRAGMA application_id={APPLICATION_ID}")
    db.commit()
    db.close()


def test_schema_2_store_is_migrated_with_everything_in_it(tmp_path):
    path = tmp_path / "old.db"
    make_schema_2(path)
    svc = AnnotationService(owner_uid=1000, store=path)
    own = Cred.owner_of(svc)
    assert svc.get(own, 7)["annotations"] == {"user": {"a": 1}}
    svc.memo(own, 7, {"b": 2})
    assert svc.flush() == 3  # seq goes on
    svc.close()
    db = sqlite3.connect(path)
    assert db.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION == 4
    assert db.execute("SELECT COUNT(*) FROM estimate_log").fetchone()[0] == 0
    cols = {r[1]: r[5] for r in db.execute("PRAGMA table_info(eventlog)")}  # name -> pk rank
    assert (cols["seq"], cols["idx"], cols["id"]) == (1, 2, 0)
    db.close()
    st = Store(path)
    assert [(e[1], json.loads(e[2])) for e in st.entries()] == [
        ("submit", {"userid": 1000}),
        ("memo", {"a": 1}),
        ("memo", {"b": 2}),
    ]
    st.close()
