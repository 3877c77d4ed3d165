"""The socket transport writes a stream's pieces with writev (docs/DESIGN.md
"The dispatch and its transports"): whatever the socket takes at once, the
reader gets exactly the joined bytes, in order, the rest through the
transport's buffer."""

import socket

from flux_annot.wire.unix_server import IOV_MAX, Connection


class FakeTransport:
    """What asyncio's transport would buffer: the bytes `write` was given."""

    def __init__(self):
        self.buffered = []

    def write(self, data):
        self.buffered.append(bytes(data))


def drain(sock):
    out = b""
    sock.setblocking(False)
    while True:
        try:
            data = sock.recv(1 << 20)
        except BlockingIOError:
            return out
        if not data:
            return out
        out += data


def _conn(sndbuf):
    a, b = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
    a.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, sndbuf)
    a.setblocking(False)
    conn = Connection.__new__(Connection)  # only fd is used by _writev
    conn.fd = a.fileno()
    return a, b, conn


def test_pieces_the_socket_takes_only_in_part_reach_the_reader_whole_and_in_order():
    a, b, conn = _conn(4096)
    blob = bytes(range(256)) * 800  # 200 kB: far more than the socket holds
    view = memoryview(blob)
    pieces = [b"head", view[:1000], b",", view[1000:150_000], b",", view[150_000:], b"}"]
    want = b"".join(pieces)
    t = FakeTransport()
    conn._writev(t, list(pieces), len(want))
    assert t.buffered, "the socket took it all: the test shows nothing"
    sent = len(want) - len(t.buffered[0])
    assert 0 < sent < len(want)
    got = drain(b)
    assert got + t.buffered[0] == want and got == want[:sent]
    a.close()
    b.close()


def test_more_pieces_than_one_writev_takes():
    a, b, conn = _conn(1 << 20)
    pieces = [b"%d," % i for i in range(3 * IOV_MAX + 5)]
    want = b"".join(pieces)
    t = FakeTransport()
    conn._writev(t, list(pieces), len(want))
    assert t.buffered == [] and drain(b) == want
    a.close()
    b.close()
