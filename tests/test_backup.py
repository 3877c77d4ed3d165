"""`flux-annotate backup DEST` (docs/operations.md): a copy taken while a
service writes restores to a store that a new service replays, holding a
prefix of what was written: everything acknowledged before the backup
started, nothing after it ended. Bad input changes nothing."""

import os
import re
import subprocess
import threading

from flux_annot.wire.client import Client
from metricsproc import CMD, Serve


def backup(*args):
    return subprocess.run(CMD + ["backup", *map(str, args)], capture_output=True, text=True,
                          timeout=120)


def test_backup_while_writing_restores_to_a_replaying_store(tmp_path):
    src, dest = tmp_path / "annot.db", tmp_path / "copy" / "annot.db"
    dest.parent.mkdir()
    s = Serve(store=src).start()
    acked = []
    stop = threading.Event()
    uid = os.getuid()

    def write():
        with Client(s.socket) as c:
            j = 0
            while not stop.is_set():
                j += 1
                c.submit(j, uid)
                c.memo(j, {"n": j})  # durable: the reply follows the commit
                acked.append(j)

    t = threading.Thread(target=write)
    t.start()
    try:
        while len(acked) < 100:
            assert t.is_alive()
            t.join(0.05)
        before = len(acked)
        r = backup("--store", src, dest)
        after = len(acked)
        while len(acked) < after + 50:  # the service went on writing
            assert t.is_alive()
            t.join(0.05)
    finally:
        stop.set()
        t.join(60)
    assert r.returncode == 0, r.stderr
    m = re.fullmatch(rf"flux-annotate: backed up {src} to {dest} \(batch (\d+), (\d+) jobs\)\n",
                     r.stderr)
    assert m, r.stderr
    assert s.stop() == 0
    s.cleanup()
    assert before < after  # writes went on during the backup
    restored = Serve(store=dest).start()
    try:
        with Client(restored.socket) as c:
            jobs = c.list()
            st = c.stats()
        ids = [j["id"] for j in jobs]
        k = len(ids)
        assert ids == list(range(1, k + 1))  # a prefix of what was written, in order
        assert before <= k <= after + 1  # at least what was acknowledged before it started
        assert int(m.group(2)) == k and st["seq"] == int(m.group(1))
        for j in jobs[:-1]:  # every job's memo (the last job's may be after the copy)
            assert j["annotations"] == {"user": {"n": j["id"]}}, j
        with Client(restored.socket) as c:  # and it takes writes again
            c.memo(1, {"restored": True})
            assert c.get(1)["annotations"]["user"] == {"n": 1, "restored": True}
    finally:
        restored.cleanup()


def test_bad_backups_change_nothing(tmp_path):
    src = tmp_path / "annot.db"
    s = Serve(store=src).start()
    try:
        with Client(s.socket) as c:
            c.submit(1, os.getuid())
        existing = tmp_path / "old.db"
        existing.write_bytes(b"keep me")
        r = backup("--store", src, existing)
        assert r.returncode == 1
        assert r.stderr == (f"flux-annotate: backup: {existing} exists: a backup is written "
                            f"to a new file\n")
        assert existing.read_bytes() == b"keep me"
        r = backup("--store", tmp_path / "missing.db", tmp_path / "b.db")
        assert r.returncode == 1 and "missing.db: no such store" in r.stderr
        assert not (tmp_path / "b.db").exists()
        r = backup("--store", existing, tmp_path / "b.db")
        assert r.returncode == 1 and "not a database" in r.stderr
        r = backup("--store", src, tmp_path / "no-dir" / "b.db")
        assert r.returncode == 1 and "no-dir: no such directory" in r.stderr
        assert sorted(os.listdir(tmp_path)) == ["annot.db", "annot.db-shm", "annot.db-wal",
                                                "annot.db.lock", "old.db"]
    finally:
        s.cleanup()
