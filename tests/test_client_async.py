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
