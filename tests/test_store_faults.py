"""A store that cannot commit, and one service per store (docs/durability.md
"When the store cannot commit"), with real faults: a full tmpfs, a lock held
by another process's `BEGIN EXCLUSIVE`, a second `serve` on the same store.

What a user sees: durable requests refused at once (ENOSPC / EIO, SQLite's
sentence), a request already applied answered ETIMEDOUT after
`[store] commit_timeout`, reads and volatile writes served, `stats` saying
`store_state`, recovery, and after a restart every acknowledged write and
no refused one."""

import errno
import os
import sqlite3
import subprocess
import sys
import time

import pytest

from flux_annot.wire.client import Client
from flux_annot.errors import AnnotError
from flux_annot.service.service import AnnotationService
from flux_annot.service.policy import Cred
from serverproc import Raw, ServerProc, is_root, kill9

ME = os.getuid()

needs_root = pytest.mark.skipif(not is_root(), reason="mounting a tmpfs needs root")


def wait_for(pred, what, limit=30.0):
    """Poll pred() until true (a bound on a wait, not a timed assertion)."""
    end = time.monotonic() + limit
    while time.monotonic() < end:
        v = pred()
        if v:
            return v
        time.sleep(0.05)
    raise AssertionError(f"never happened: {what}")


def config(tmp_path, timeout=1):
    cfg = tmp_path / "c.toml"
    cfg.write_text(f"[store]\ncommit_timeout = {timeout}\n[batch]\nwindow = 0.005\n")
    return cfg


def memo(c, jobid, m, volatile=False):
    """(errnum, errstr) of a memo RPC."""
    try:
        c.memo(jobid, m, volatile=volatile)
        return 0, ""
    except AnnotError as e:
        return e.errno, e.message


@pytest.fixture
def tmpfs(tmp_path):
    """A 2 MB tmpfs, unmounted at the end."""
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=2m", "tmpfs", str(mnt)], check=True)
    yield mnt
    subprocess.run(["umount", "-l", str(mnt)], check=False)


def fill(mnt):
    """Fill the filesystem up; returns the filler's path."""
    filler = mnt / "filler"
    fd = os.open(filler, os.O_WRONLY | os.O_CREAT, 0o600)
    try:
        while True:
            os.write(fd, b"\0" * 4096)
    except OSError as e:
        assert e.errno == errno.ENOSPC
    finally:
        os.close(fd)
    return filler


# -- one service per store ----------------------------------------------------


def test_second_serve_on_a_store_in_use_exits_1_naming_it(tmp_path):
    db = tmp_path / "annot.db"
    first = ServerProc(store=db).start()
    second = ServerProc(store=db)
    try:
        with Client(first.path) as c:
            c.submit(1, ME)
        r = subprocess.run(
            [sys.executable, "-m", "flux_annot.cli", "serve", "--store", str(db),
             "--socket", second.path],
            capture_output=True, text=True, timeout=60,
        )
        assert r.returncode == 1
        lines = r.stderr.strip().splitlines()
        assert len(lines) == 1, r.stderr
        assert str(db) in lines[0] and f"pid {first.proc.pid}" in lines[0]
        assert "in use" in lines[0]
        # the running one is untouched
        with Client(first.path) as c:
            c.memo(1, {"still": "here"})
            assert c.get(1)["annotations"] == {"user": {"still": "here"}}
        # kill -9 leaves no lock behind: the next start serves the same store
        kill9(first)
        second.start()
        with Client(second.path) as c:
            assert c.get(1)["annotations"] == {"user": {"still": "here"}}
    finally:
        first.cleanup()
        second.cleanup()


def test_in_process_service_takes_the_lock_too(tmp_path):
    db = tmp_path / "a.db"
    svc = AnnotationService(store=db)
    with pytest.raises(AnnotError) as e:
        AnnotationService(store=db)
    assert e.value.errno == errno.EBUSY and str(db) in e.value.message
    assert f"pid {os.getpid()}" in e.value.message
    svc.close()
    AnnotationService(store=db).close()  # released by close()


# -- disk full ------------------------------------------------------------------


@needs_root
def test_disk_full_bounded_answers_reads_recovery_restart(tmp_path, tmpfs):
    db = tmpfs / "annot.db"
    s = ServerProc(store=db, config=config(tmp_path)).start()
    try:
        c = Client(s.path, timeout=60)
        for j in (1, 2, 3):
            c.submit(j, ME)
        c.memo(1, {"before": 1})
        filler = fill(tmpfs)
        # applied, then its commit fails: ETIMEDOUT after commit_timeout
        err, msg = memo(c, 1, {"during": 1})
        assert err == errno.ETIMEDOUT, msg
        assert "applied in memory" in msg and "written when the store recovers" in msg
        st = wait_for(lambda: c.stats()["store_state"] == "failing" and c.stats(), "failing")
        fault = st["store_fault"]
        assert fault["errno"] == errno.ENOSPC and "full" in fault["cause"]
        assert fault["since"] <= time.time()
        # refused at once, before any change, ENOSPC naming the store
        err, msg = memo(c, 2, {"refused": 1})
        assert err == errno.ENOSPC and str(db) in msg and "full" in msg
        with pytest.raises(AnnotError) as e:
            c.submit(9, ME)
        assert e.value.errno == errno.ENOSPC
        # reads and volatile writes go on
        assert c.get(1)["annotations"] == {"user": {"before": 1, "during": 1}}
        assert c.get(2)["annotations"] is None
        c.memo(3, {"volatile": 1}, volatile=True)
        assert c.get(3)["annotations"] == {"user": {"volatile": 1}}
        assert [j["id"] for j in c.list()] == [1, 2, 3]
        # space comes back: recovery, durable writes accepted again
        os.unlink(filler)
        wait_for(lambda: c.stats()["store_state"] == "ok", "recovered")
        assert c.stats()["store_fault"] is None
        c.memo(2, {"after": 1})
        c.close()
        assert s.stop() == 0
        log = s.stderr
        assert log.count("durable changes are refused") == 1, log
        assert log.count("recovered") == 1, log
        assert "Traceback" not in log
        s2 = ServerProc(store=db, config=config(tmp_path)).start()
        try:
            with Client(s2.path) as c:
                assert c.get(1)["annotations"] == {"user": {"before": 1, "during": 1}}
                assert c.get(2)["annotations"] == {"user": {"after": 1}}
                assert c.get(3)["annotations"] is None  # volatile only
                assert [j["id"] for j in c.list()] == [1, 2, 3]  # 9 was refused
        finally:
            s2.cleanup()
    finally:
        s.cleanup()


@needs_root
def test_sigterm_while_the_disk_is_full_ends_and_says_what_was_lost(tmp_path, tmpfs):
    db = tmpfs / "annot.db"
    s = ServerProc(store=db, config=config(tmp_path, timeout=30)).start()
    try:
        c = Raw(s.path)
        c.send("job-manager.submit", 1, {"id": 1, "userid": ME})
        assert c.recv()["errnum"] == 0
        fill(tmpfs)
        c.send("job-manager.memo", 2, {"id": 1, "memo": {"lost": True}})
        with Client(s.path) as q:
            wait_for(lambda: q.stats()["store_state"] == "failing", "failing")
        t0 = time.monotonic()
        rc = s.stop(timeout=30)
        assert time.monotonic() - t0 < 20
        assert rc == 0
        assert "not written" in s.stderr and "lost" in s.stderr, s.stderr
        r = c.recv()  # the waiting client is answered, not left hanging
        assert r["matchtag"] == 2 and r["errnum"] == errno.ENOSPC, r
        assert "lost" in r["errstr"]
        c.close()
    finally:
        s.cleanup()


# -- locked by another process ------------------------------------------------


class Locker:
    """Another process holding `BEGIN EXCLUSIVE` on the store until released."""

    def __init__(self, db):
        code = (
            "import sqlite3, sys\n"
            "db = sqlite3.connect(sys.argv[1], isolation_level=None)\n"
            "db.execute('BEGIN EXCLUSIVE')\n"
            "print('locked', flush=True)\n"
            "sys.stdin.readline()\n"
            "db.execute('ROLLBACK')\n"
        )
        self.proc = subprocess.Popen(
            [sys.executable, "-c", code, str(db)],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
        )
        assert self.proc.stdout.readline().strip() == "locked"

    def release(self):
        if self.proc.poll() is None:
            self.proc.stdin.write("\n")
            self.proc.stdin.flush()
            self.proc.wait(30)


@pytest.fixture
def locked(tmp_path):
    """A server on a file store, and a way to lock its store from another
    process: yields (server, store path, lock()); everything ends with it."""
    db = tmp_path / "annot.db"
    s = ServerProc(store=db, config=config(tmp_path)).start()
    lockers = []

    def lock():
        lockers.append(Locker(db))
        return lockers[-1]

    yield s, db, lock
    for locker in lockers:
        locker.release()
    s.cleanup()


def test_store_locked_by_another_process(locked):
    s, db, lock = locked
    c = Client(s.path, timeout=60)
    c.submit(1, ME)
    c.submit(2, ME)
    locker = lock()
    err, msg = memo(c, 1, {"waited": 1})
    assert err == errno.ETIMEDOUT, msg
    wait_for(lambda: c.stats()["store_state"] == "failing", "failing")
    fault = c.stats()["store_fault"]
    assert fault["errno"] == errno.EIO and "locked" in fault["cause"]
    err, msg = memo(c, 2, {"refused": 1})
    assert err == errno.EIO and "locked" in msg and str(db) in msg
    assert c.get(1)["annotations"] == {"user": {"waited": 1}}
    c.annotate(2, {"workflow": {"v": 1}}, volatile=True)
    assert c.get(2)["annotations"] == {"workflow": {"v": 1}}
    locker.release()
    wait_for(lambda: c.stats()["store_state"] == "ok", "recovered")
    c.memo(2, {"after": 1})
    c.close()
    assert s.stop() == 0
    s2 = ServerProc(store=db).start()
    try:
        with Client(s2.path) as c:
            assert c.get(1)["annotations"] == {"user": {"waited": 1}}
            assert c.get(2)["annotations"] == {"user": {"after": 1}}
    finally:
        s2.cleanup()


def test_events_go_on_while_the_store_is_locked(locked):
    """A subscriber keeps getting batches (volatile changes) while durable
    writes are refused, with no gap in seq, and after recovery."""
    s, db, lock = locked
    c = Client(s.path, timeout=60)
    c.submit(1, ME)
    ev = Raw(s.path)
    ev.send("job-manager.events", 7, {"topics": ["job-annotations"], "snapshot": True})
    snap = ev.recv()["payload"]
    locker = lock()
    assert memo(c, 1, {"a": 1})[0] == errno.ETIMEDOUT
    wait_for(lambda: c.stats()["store_state"] == "failing", "failing")
    c.annotate(1, {"workflow": {"v": 2}}, volatile=True)
    got = [ev.recv()["payload"], ev.recv()["payload"]]
    assert [b["seq"] for b in got] == [snap["seq"] + 1, snap["seq"] + 2]
    assert got[1]["annotations"] == [[1, {"user": {"a": 1}, "workflow": {"v": 2}}]]
    locker.release()
    wait_for(lambda: c.stats()["store_state"] == "ok", "recovered")
    c.memo(1, {"b": 2})
    after = ev.recv()["payload"]
    assert after["seq"] == snap["seq"] + 3
    c.close()
    ev.close()
    assert s.stop() == 0
    # the seqs published while failing were written: the next start goes on
    s2 = ServerProc(store=db).start()
    try:
        with Client(s2.path) as c:
            assert c.stats()["seq"] == snap["seq"] + 3
    finally:
        s2.cleanup()


def test_cli_shows_the_refusal_as_one_line(locked):
    s, db, lock = locked
    with Client(s.path, timeout=60) as c:
        c.submit(1, ME)
        lock()  # held to the end (the fixture releases it)

        def cli(*args):
            return subprocess.run(
                [sys.executable, "-m", "flux_annot.cli", "--socket", s.path, *args],
                capture_output=True, text=True, timeout=60,
            )

        r = cli("memo", "1", "x=1")
        assert r.returncode == 1 and len(r.stderr.strip().splitlines()) == 1, r.stderr
        assert "did not commit" in r.stderr
        wait_for(lambda: c.stats()["store_state"] == "failing", "failing")
        r = cli("memo", "1", "y=1")
        assert r.returncode == 1 and len(r.stderr.strip().splitlines()) == 1, r.stderr
        assert "locked" in r.stderr and "refused" in r.stderr
        r = cli("memo", "--volatile", "1", "z=1")
        assert r.returncode == 0, r.stderr


# -- in-process -----------------------------------------------------------------


def test_in_process_flush_raises_and_refuses_until_it_commits(tmp_path):
    db = tmp_path / "a.db"
    svc = AnnotationService(store=db, batch_window=3600.0)
    own = Cred.owner_of(svc)
    svc.submit(1, ME)
    svc.flush()
    lock = sqlite3.connect(db, isolation_level=None)
    lock.execute("BEGIN EXCLUSIVE")
    svc.memo(own, 1, {"a": 1})
    with pytest.raises(AnnotError) as e:
        svc.flush()
    assert e.value.errno == errno.EIO and "locked" in e.value.message
    assert svc.stats()["store_state"] == "failing"
    with pytest.raises(AnnotError) as e:
        svc.memo(own, 1, {"b": 1})
    assert e.value.errno == errno.EIO
    assert svc.get(own, 1)["annotations"] == {"user": {"a": 1}}  # reads go on
    svc.memo(own, 1, {"v": 1}, volatile=True)
    lock.execute("ROLLBACK")
    lock.close()
    assert svc.flush() is not None
    assert svc.stats()["store_state"] == "ok"
    svc.memo(own, 1, {"c": 1})
    svc.close()
    again = AnnotationService(store=db)
    assert again.get(Cred.owner_of(again), 1)["annotations"] == {"user": {"a": 1, "c": 1}}
    again.close()


def test_commit_timeout_is_validated(tmp_path):
    assert AnnotationService(config={"store": {"commit_timeout": 0.5}}).hub.commit_timeout == 0.5
    for bad, words in ((0, "positive"), (-1, "negative"), ("5", "number")):
        with pytest.raises(AnnotError) as e:
            AnnotationService(config={"store": {"commit_timeout": bad}})
        assert e.value.errno == errno.EINVAL
        assert "store.commit_timeout" in e.value.message and words in e.value.message
    cfg = tmp_path / "bad.toml"
    cfg.write_text("[store]\ncommit_timeout = 0\n")
    r = subprocess.run(
        [sys.executable, "-m", "flux_annot.cli", "serve", "--store", ":memory:",
         "--socket", str(tmp_path / "s"), "--config", str(cfg)],
        capture_output=True, text=True, timeout=60,
    )
    assert r.returncode == 1 and "store.commit_timeout" in r.stderr
    assert len(r.stderr.strip().splitlines()) == 1


def test_served_after_in_process_use_goes_on_writing(tmp_path):
    """A service used in-process, then served: the writer starts from the
    batches already written (no seq gap, no failing store)."""
    import asyncio

    from flux_annot.wire.server import serve

    svc = AnnotationService(store=tmp_path / "a.db")
    svc.submit(1, ME)
    assert svc.flush() == 1
    sock = str(tmp_path / "s")

    async def main():
        stop = asyncio.Event()

        def ready(srv):
            async def work():
                c = await asyncio.to_thread(Client, sock, 30)
                try:
                    await asyncio.to_thread(c.memo, 1, {"served": 1})
                    return await asyncio.to_thread(c.stats)
                finally:
                    c.close()
                    stop.set()

            box.append(asyncio.ensure_future(work()))

        box = []
        await serve(sock, service=svc, ready=ready, stop=stop, handle_signals=False)
        return box[0].result()

    stats = asyncio.run(asyncio.wait_for(main(), 60))
    assert stats["store_state"] == "ok" and stats["seq"] == 2
    svc.close()
    again = AnnotationService(store=tmp_path / "a.db")
    assert again.get(Cred.owner_of(again), 1)["annotations"] == {"user": {"served": 1}}
    again.close()
