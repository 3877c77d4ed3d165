"""AsyncClient (pipelining, async events) and Client helpers over a real server."""

import asyncio
import errno
import os

import pytest

from flux_annot import AnnotError, AsyncClient, Client, UnknownJobError
from serverproc import ServerProc

ME = os.getuid()


@pytest.fixture
def server(tmp_path):
    s = ServerProc(store=tmp_path / "annot.db").start()
    yield s
    s.cleanup()


def test_pipelined_requests_are_matched_by_matchtag(server):
    async def main():
        async with AsyncClient(server.path) as c:
            await asyncio.gather(*(c.submit(i, ME) for i in range(1, 101)))
            # non-volatile replies wait for their commit, volatile ones do not:
            # they come back out of order and must still reach their caller.
            calls = []
            for i in range(1, 101):
                calls.append(c.annotate(i, {"workflow": {"n": i}}, volatile=i % 2 == 0))
            calls.append(c.get(7))
            results = await asyncio.gather(*calls, c.annotate(999, {"user": {}}), return_exceptions=True)
            assert results[:100] == [None] * 100
            assert isinstance(results[-1], UnknownJobError)
            jobs = await c.list()
            assert {j["id"]: j["annotations"]["workflow"]["n"] for j in jobs} == {
                i: i for i in range(1, 101)
            }
            st = await c.stats()
            assert st["jobs"]["SCHED"] == 100

    asyncio.run(main())


def test_async_events_iterator(server):
    async def main():
        async with AsyncClient(server.path) as c:
            await c.submit(1, ME)
            stream = c.events(snapshot=True)
            got = []
            async for ev in stream:
                got.append(ev)
                if len(got) == 1:
                    assert ev["snapshot"] is True
                    await c.annotate(1, {"workflow": {"x": 1}})
                else:
                    break
            await stream.aclose()
            assert got[1]["annotations"] == [[1, {"workflow": {"x": 1}}]]
            assert got[1]["seq"] == got[0]["seq"] + 1

    asyncio.run(main())


def test_async_errors_and_since_too_old(server):
    async def main():
        async with AsyncClient(server.path) as c:
            with pytest.raises(AnnotError) as ei:
                await c.rpc("job-manager.bogus", {})
            assert ei.value.errno == errno.ENOSYS
            await c.submit(1, ME)
            with pytest.raises(AnnotError) as ei:
                await c.submit(1, ME)
            assert ei.value.errno == errno.EEXIST
            assert (await c.get(1))["id"] == 1  # the connection stays usable

    asyncio.run(main())


def test_connect_error_is_clear(tmp_path):
    with pytest.raises(AnnotError, match="cannot connect"):
        Client(str(tmp_path / "nothing"))

    async def main():
        with pytest.raises(AnnotError, match="cannot connect"):
            await AsyncClient.connect(str(tmp_path / "nothing"))

    asyncio.run(main())


def test_blocking_pipelined_helper_and_job_id_strings(server):
    with Client(server.path) as c:
        for i in range(1, 11):
            c.submit(i, ME)
        n = c.annotate_pipelined(list(range(1, 11)) * 20, [{"workflow": {"k": i}} for i in range(200)])
        assert n == 200
        assert c.get("0xa")["annotations"] == {"workflow": {"k": 199}}
        with pytest.raises(UnknownJobError):
            c.annotate_pipelined([1, 55], [{"workflow": {}}, {"workflow": {"a": 1}}])
        assert c.get(1)["annotations"] == {"workflow": {"k": 190}}  # an empty patch changes nothing


def test_async_calls_are_awaitables_tasks_and_wait_for_take(server):
    """Each call is sent at once and returns its reply; create_task,
    wait_for and gather take it as they took the coroutines of before."""

    async def main():
        async with AsyncClient(server.path) as c:
            await c.submit(1, ME)
            task = asyncio.create_task(c.annotate(1, {"workflow": {"a": 1}}, volatile=True))
            assert await task is None
            assert await asyncio.wait_for(c.get(1), 10) == {
                "id": 1, "userid": ME, "state": "SCHED", "annotations": {"workflow": {"a": 1}}}
            failing = asyncio.create_task(c.get(99))
            with pytest.raises(UnknownJobError):
                await failing
            jobs = await asyncio.create_task(c.list())
            assert [j["id"] for j in jobs] == [1]

    asyncio.run(main())


def test_async_requests_of_one_turn_keep_their_order(server):
    """annotate calls are encoded together at the end of the turn: a get
    queued after them must still see them (it is written after them)."""

    async def main():
        async with AsyncClient(server.path) as c:
            await c.submit(1, ME)
            calls = [c.annotate(1, {"workflow": {"n": i}}, volatile=True) for i in range(300)]
            seen = c.get(1)
            calls.append(c.memo(1, {"m": 1}, volatile=True))
            after = c.get(1)
            await asyncio.gather(*calls)
            assert (await seen)["annotations"] == {"workflow": {"n": 299}}
            assert (await after)["annotations"] == {"workflow": {"n": 299}, "user": {"m": 1}}

    asyncio.run(main())


def test_async_bad_patch_fails_only_its_own_call(server):
    async def main():
        async with AsyncClient(server.path, message_bytes=4096) as c:
            for i in (1, 2, 3, 4):
                await c.submit(i, ME)
            res = await asyncio.gather(
                c.annotate(1, {"workflow": {"a": 1}}),
                c.annotate(2, '{"workflow": '),  # not JSON: refused before sending
                c.annotate(3, b' {"workflow": {"b": 2}} '),  # JSON text goes as written
                c.annotate(4, {"workflow": {"big": "x" * 5000}}),  # over the message limit
                c.annotate(2, {"workflow": {"c": {1, 2}}}),  # a set is not JSON
                return_exceptions=True,
            )
            assert res[0] is None and res[2] is None
            assert isinstance(res[1], AnnotError) and res[1].errno == errno.EINVAL
            assert "invalid JSON" in str(res[1])
            assert isinstance(res[3], AnnotError) and res[3].errno == errno.EMSGSIZE
            assert isinstance(res[4], AnnotError) and res[4].errno == errno.EINVAL
            assert "not JSON" in str(res[4])
            got = {j["id"]: j["annotations"] for j in await c.list()}
            assert got == {1: {"workflow": {"a": 1}}, 2: None, 3: {"workflow": {"b": 2}}, 4: None}

    asyncio.run(main())


def test_pipelined_bad_patch_raises_after_the_sent_ones_are_answered(server):
    with Client(server.path) as c:
        for i in range(1, 4):
            c.submit(i, ME)
        patches = [{"workflow": {"n": i}} for i in range(600)]
        patches[400] = '{"workflow": {"n": }}'
        with pytest.raises(AnnotError) as ei:
            c.annotate_pipelined([1, 2, 3] * 200, patches, volatile=True, window=128)
        assert ei.value.errno == errno.EINVAL and ei.value.index == 400
        assert str(ei.value).startswith("patch 400: annotations: invalid JSON")
        # what was sent before it was applied, and no reply is left over:
        # the next call gets its own reply
        assert c.get(1)["annotations"]["workflow"]["n"] < 400
        assert c.get(3)["id"] == 3
        # text, bytes and dicts mixed; ids as strings
        n = c.annotate_pipelined(["1", 2, "0x3"], ['{"workflow":{"t":1}}', b'{"workflow":{"t":2}}',
                                                 {"workflow": {"t": 3}}])
        assert n == 3
        assert [j["annotations"]["workflow"]["t"] for j in c.list()] == [1, 2, 3]
        with pytest.raises(AnnotError) as ei:
            c.annotate_pipelined([1, 2], [{"workflow": {}}])
        assert ei.value.errno == errno.EINVAL and "differ in length" in str(ei.value)


class _Recording(Client):
    """A client with a transport of its own (as the Flux broker's): rpc only."""

    def __init__(self):
        self.sent = []

    def rpc(self, topic, payload):
        self.sent.append((topic, payload))
        return {"jobs": []} if topic == "job-manager.list" else {"id": 1}


class _AsyncRecording(AsyncClient):
    def __init__(self):
        self.sent = []

    def send(self, topic, payload):
        self.sent.append((topic, payload))
        fut = asyncio.get_running_loop().create_future()
        fut.set_result({"jobs": [{"id": 2}]} if topic == "job-manager.list" else {"id": 1})
        return fut


_EXPECTED = [
    ("job-manager.annotate", {"id": 5, "annotations": {"a": {"b": 1}}, "volatile": True}),
    ("job-manager.annotate", {"id": 5, "annotations": {"a": {"c": 2}}}),
    ("job-manager.memo", {"id": 6, "memo": {"m": 1}}),
    ("job-manager.getattr", {"id": 7}),
    ("job-manager.list", {"max": 3}),
    ("job-manager.submit", {"id": 8, "userid": 9}),
]


def test_a_subclass_with_its_own_transport_gets_every_call_through_it():
    """The seam other transports use (docs/DESIGN.md): the socket client
    writes annotate / memo / get frames itself, a subclass that brings its
    own rpc (or send) gets them as payload dicts through it."""
    c = _Recording()
    assert c.annotate(5, {"a": {"b": 1}}, volatile=True) is None
    c.annotate("5", '{"a": {"c": 2}}')
    c.memo(6, b'{"m": 1}')
    assert c.get(7) == {"id": 1}
    assert c.list(max=3) == []
    c.submit(8, 9)
    assert c.sent == _EXPECTED

    async def main():
        a = _AsyncRecording()
        assert await a.annotate(5, {"a": {"b": 1}}, volatile=True) is None
        await a.annotate("5", '{"a": {"c": 2}}')
        await a.memo(6, b'{"m": 1}')
        assert await a.get(7) == {"id": 1}
        assert await a.list(max=3) == [{"id": 2}]
        assert await a.submit(8, 9) is None
        assert a.sent == _EXPECTED

    asyncio.run(main())


def test_bad_text_is_refused_with_one_sentence_whatever_the_transport(server):
    with Client(server.path) as sock:
        c = _Recording()
        for call in (lambda x: x.memo(1, "{bad json"), lambda x: x.annotate(1, b"[" * 600),
                     lambda x: x.annotate(1, '{"a": NaN}'), lambda x: x.memo(1, '{"a": 1} x')):
            errs = []
            for client in (sock, c):
                with pytest.raises(AnnotError) as ei:
                    call(client)
                errs.append((ei.value.errno, str(ei.value)))
            assert errs[0] == errs[1] and errs[0][0] == errno.EINVAL
        assert c.sent == []  # nothing went out
        assert str(ei.value) == "memo: invalid JSON at byte 9: trailing data after the value"
