"""The subscriber bound over the socket (docs/events.md "Slow subscribers"):
a subscriber that stops reading receives at most `subscriber_queue_bytes`
plus one batch (bytes counted here, at the client) and then its EOVERFLOW,
however little is published; one that reads keeps everything; its
snapshot is not counted."""

import errno
import os
import socket

import pytest

from flux_annot.wire.client import Client
from serverproc import Raw, ServerProc

ME = os.getuid()
LIMIT = 65536
PAD = 4000  # one annotation per batch: a frame of ~4.1 kB


@pytest.fixture
def server(tmp_path):
    cfg = tmp_path / "c.toml"
    cfg.write_text(f"[events]\nsubscriber_queue_bytes = {LIMIT}\n[batch]\nwindow = 0\n")
    s = ServerProc(config=cfg).start()
    yield s
    s.cleanup()


def frames(sock, stop_at_error=True):
    """(bytes of success frames, their count, the biggest, the frame that
    ended the stream or None) read from sock until an error frame (or 5 s
    of silence)."""
    from flux_annot.wire import protocol
    reader = protocol.FrameReader()
    total = count = biggest = 0
    sock.settimeout(5)
    while True:
        try:
            data = sock.recv(1 << 20)
        except socket.timeout:
            return total, count, biggest, None
        if not data:
            return total, count, biggest, None
        for body in reader.feed(data):
            r = protocol.parse_response(body)
            if r[1] != 0:
                return total, count, biggest, r
            total += 4 + len(body)
            count += 1
            biggest = max(biggest, 4 + len(body))


def publish(path, n, first=1):
    """n batches of one ~4 kB annotation each (each request answered
    before the next: window 0 closes a batch per loop turn)."""
    with Client(path, timeout=60) as c:
        for j in range(first, first + n):
            c.submit(j, ME)
        for j in range(first, first + n):
            c.annotate(j, {"workflow": {"pad": "p" * PAD}})
        return c.stats()


@pytest.mark.parametrize("batches", [75, 600], ids=["300kB-published", "2.4MB-published"])
def test_a_subscriber_that_stops_reading_gets_eoverflow_within_the_bound(server, batches):
    """300 kB published is less than the transport's 1 MiB buffer: before
    the bound counted it, this subscriber was never dropped and simply
    received every batch late."""
    stopped = Raw(server.path)
    stopped.send("job-manager.events", 1, {"topics": ["job-annotations"]})
    with Client(server.path) as c:
        c.stats()  # the subscription is in place
    stats = publish(server.path, batches)
    assert stats["dropped_subscribers"] == 1
    total, count, biggest, end = frames(stopped.sock)
    assert end is not None, f"no EOVERFLOW after {count} batches ({total} bytes)"
    assert end[1] == errno.EOVERFLOW and "too slow" in end[2], end
    assert 0 < count < batches
    assert total <= LIMIT + biggest, (total, biggest)
    stopped.close()


def test_a_subscriber_that_reads_keeps_batches_bigger_than_the_bound(server):
    """What the subscriber has read is not held any more (the kernel's
    count included): reading each 100 kB batch before the next is
    published, it is never dropped."""
    sub = Raw(server.path)
    sub.send("job-manager.events", 1, {"topics": ["job-annotations"]})
    with Client(server.path, timeout=60) as c:
        c.stats()
        for j in range(1, 21):
            c.submit(j, ME)
        for j in range(1, 21):
            c.annotate(j, {"workflow": {"pad": "p" * 100_000}})
            r = sub.recv()
            assert r["errnum"] == 0 and r["payload"]["annotations"][0][0] == j
        assert c.stats()["dropped_subscribers"] == 0
    sub.close()


def test_a_snapshot_bigger_than_the_bound_is_not_counted(server):
    """A 400 kB snapshot held unread does not drop the subscriber; the
    batches after it count as usual."""
    publish(server.path, 100)
    sub = Raw(server.path)
    sub.send("job-manager.events", 1, {"topics": ["job-annotations"], "snapshot": True})
    with Client(server.path) as c:
        c.stats()
    stats = publish(server.path, 10, first=1000)  # 40 kB: within the bound
    assert stats["dropped_subscribers"] == 0
    total, count, biggest, end = frames(sub.sock)
    assert end is None and count == 11 and biggest > 100 * PAD
    with Client(server.path) as c:
        assert c.stats()["subscribers"] == 1
    sub.close()
