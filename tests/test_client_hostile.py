"""A broken or hostile service must give the clients an AnnotError (EPROTO),
never a crash (RecursionError, AttributeError, ...) or a hang."""

import asyncio
import errno
import json
import os
import socket
import struct
import tempfile
import threading

import pytest

from flux_annot.wire.client import AsyncClient, Client
from flux_annot.errors import AnnotError

DEEP = 100_000

REPLIES = {
    "deep payload": b'{"matchtag":1,"errnum":0,"payload":{"a":' + b"[" * DEEP + b"]" * DEEP + b"}}",
    "deep unclosed": b'{"matchtag":1,"errnum":0,"payload":' + b'{"a":' * DEEP,
    "invalid UTF-8": b'{"matchtag":1,"errnum":0,"payload":{"a":"caf\xe9"}}',
    "not JSON": b"{matchtag",
    "not an object": b"[1,2]",
    "payload a list": b'{"matchtag":1,"errnum":0,"payload":[1]}',
    "errnum a string": b'{"matchtag":1,"errnum":"22"}',
    "errnum negative": b'{"matchtag":1,"errnum":-5,"errstr":"x"}',
    "errstr a number": b'{"matchtag":1,"errnum":22,"errstr":7}',
    "matchtag missing": b'{"errnum":0,"payload":{}}',
    "jobs not a list": b'{"matchtag":1,"errnum":0,"payload":{"jobs":{"a":1}}}',
}


class FakeService:
    """A Unix socket that answers every request frame with one canned body."""

    def __init__(self, body):
        self.dir = tempfile.mkdtemp(prefix="fa-hostile-")
        self.path = os.path.join(self.dir, "socket")
        self.body = body
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.bind(self.path)
        self.sock.listen(4)
        self.thread = threading.Thread(target=self.run, daemon=True)
        self.thread.start()

    def run(self):
        try:
            conn, _ = self.sock.accept()
        except OSError:
            return
        with conn:
            conn.settimeout(10)
            try:
                hdr = conn.recv(4, socket.MSG_WAITALL)
                if len(hdr) == 4:
                    conn.recv(struct.unpack(">I", hdr)[0], socket.MSG_WAITALL)
                    self.answer(conn)
                    conn.recv(1)  # wait until the client closes
            except OSError:
                pass

    def answer(self, conn):
        conn.sendall(struct.pack(">I", len(self.body)) + self.body)

    def close(self):
        self.sock.close()
        self.thread.join(10)
        try:
            os.unlink(self.path)
        except FileNotFoundError:
            pass
        os.rmdir(self.dir)


@pytest.mark.parametrize("case", list(REPLIES))
def test_client_gets_eproto_from_a_broken_service(case):
    fake = FakeService(REPLIES[case])
    try:
        with Client(fake.path, timeout=10) as c:
            with pytest.raises(AnnotError) as ei:
                c.list()
        assert ei.value.errno == errno.EPROTO
        assert "malformed response" in str(ei.value)
    finally:
        fake.close()


@pytest.mark.parametrize("case", ["deep payload", "invalid UTF-8", "payload a list", "errnum a string"])
def test_async_client_gets_eproto_from_a_broken_service(case):
    fake = FakeService(REPLIES[case])

    async def main():
        async with AsyncClient(fake.path) as c:
            return await asyncio.wait_for(c.stats(), 10)

    try:
        with pytest.raises(AnnotError) as ei:
            asyncio.run(main())
        assert ei.value.errno == errno.EPROTO
    finally:
        fake.close()


def test_a_deep_patch_given_as_text_is_refused_before_decoding():
    fake = FakeService(b'{"matchtag":1,"errnum":0,"payload":{}}')
    try:
        with Client(fake.path, timeout=10) as c:
            with pytest.raises(AnnotError) as ei:
                c.annotate(1, b'{"user":' + b"[" * DEEP + b"]" * DEEP + b"}")
            assert ei.value.errno == errno.EINVAL and "nesting depth" in str(ei.value)
            c.annotate(1, '{"user":{"a":1}}')  # a sane text still goes through
    finally:
        fake.close()


class SlowService(FakeService):
    """Answers the first request with some replies (`body`: a list of
    bodies), written a few bytes at a time."""

    def answer(self, conn):
        data = b"".join(struct.pack(">I", len(b)) + b for b in self.body)
        for i in range(0, len(data), 3):
            conn.sendall(data[i : i + 3])


def test_replies_in_pieces_and_stray_replies_are_read_right():
    # a stray reply (another matchtag) first, then the request's own
    fake = SlowService([b'{"matchtag":9,"errnum":0,"payload":{"x":1}}',
                        b'{"errnum":0, "payload": {"id": 1, "s": "caf\\u00e9 \\"q\\""},'
                        b' "matchtag": 1}'])
    try:
        with Client(fake.path, timeout=10) as c:
            assert c.get(1) == {"id": 1, "s": 'café "q"'}
    finally:
        fake.close()
    fake = SlowService([b'{"matchtag":1,"errnum":22,"errstr":"bad \\"id\\" \\u00e9"}'])
    try:
        with Client(fake.path, timeout=10) as c:
            with pytest.raises(AnnotError) as ei:
                c.annotate(1, {"user": {}})
            assert ei.value.errno == errno.EINVAL and str(ei.value) == 'bad "id" é'
    finally:
        fake.close()


def test_a_broken_reply_after_a_good_one_breaks_the_connection():
    fake = SlowService([b'{"matchtag":1,"errnum":0,"payload":{"a":1}}', b"[1,2]"])
    try:
        with Client(fake.path, timeout=10) as c:
            assert c.stats() == {"a": 1}
            for _ in range(2):  # and stays broken
                with pytest.raises(AnnotError) as ei:
                    c.stats()
                assert ei.value.errno == errno.EPROTO and "not a JSON object" in str(ei.value)
    finally:
        fake.close()


class ChunkedService(FakeService):
    """Answers with its replies in pieces of 64 KiB."""

    def answer(self, conn):
        data = b"".join(struct.pack(">I", len(b)) + b for b in self.body)
        for i in range(0, len(data), 65536):
            conn.sendall(data[i : i + 65536])


def test_a_large_reply_in_many_reads_is_read_whole():
    jobs = [{"id": i, "userid": 1, "state": "SCHED", "annotations": {"sched": {"x": "y" * 50}}}
            for i in range(40000)]
    body = json.dumps({"matchtag": 1, "errnum": 0, "payload": {"jobs": jobs}}).encode()
    assert len(body) > 3_000_000
    for client in ("sync", "async"):
        fake = ChunkedService([body])
        try:
            if client == "sync":
                with Client(fake.path, timeout=10) as c:
                    assert c.list() == jobs
            else:
                async def main():
                    async with AsyncClient(fake.path) as c:
                        return await asyncio.wait_for(c.list(), 10)

                assert asyncio.run(main()) == jobs
        finally:
            fake.close()
