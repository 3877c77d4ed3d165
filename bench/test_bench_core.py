"""pytest-benchmark of the core's hot paths (not part of the test run:
`python -m pytest bench/test_bench_core.py`). The ratios vs the anchors
are printed by bench/run.py; this file tracks the raw paths over time."""

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))
import anchors  # noqa: E402

from flux_annot import JobTable, merge  # noqa: E402
from flux_annot.core import canonical  # noqa: E402

SCHED = (b'{"sched":{"t_estimate":1700000123.5,'
         b'"reason_pending":"insufficient resources","jobs_ahead":1234}}')


@pytest.fixture(scope="module")
def ops():
    return anchors.workload(2000, 3)


def test_annotate_per_call(benchmark, ops):
    def run():
        table = JobTable()
        annotate = table.annotate
        for jid, patch in ops:
            annotate(jid, patch)
        return table
    table = benchmark(run)
    assert len(table) == 2000


def test_annotate_many(benchmark, ops):
    ids = [j for j, _ in ops]
    patches = [p for _, p in ops]
    table = benchmark(lambda: JobTable().annotate_many(ids, patches))
    assert table > 0


def test_annotate_unchanged(benchmark):
    table = JobTable()
    table.annotate(1, SCHED)
    assert benchmark(table.annotate, 1, SCHED) is False


def test_get(benchmark):
    table = JobTable()
    table.annotate(1, SCHED)
    assert benchmark(table.get, 1) == SCHED


def test_merge_dict(benchmark):
    assert benchmark(merge, {"sched": {"a": 1}}, {"sched": {"b": 2}}) == {
        "sched": {"a": 1, "b": 2}}


def test_canonical(benchmark):
    assert benchmark(canonical, SCHED) == SCHED


def test_batch_encode_100k(benchmark):
    table = JobTable()
    table.track(True)
    table.annotate_many(range(100_000), [SCHED] * 100_000)
    out = benchmark(table.batch_encode)
    assert out.startswith(b"[[0,")


def test_batch_encode_delta_100k(benchmark):
    """Delta entries: each the merge patch from the job's pre-image."""
    table = JobTable()
    table.annotate_many(range(100_000), [b'{"sched":{"t_estimate":1.0}}'] * 100_000)
    table.track(True)
    table.annotate_many(range(100_000), [SCHED] * 100_000)
    out = benchmark(table.batch_encode, delta=True)
    assert out.startswith(b'[[0,{"sched":{"t_estimate":1700000123.5,')


def test_annotate_many_plain_repeat(benchmark, ops):
    """A scheduler cycle re-sent over the same jobs: the verbatim-copy path."""
    table = JobTable()
    ids = [j for j, _ in ops]
    patches = [p for _, p in ops]
    table.annotate_many(ids, patches)
    benchmark(table.annotate_many, ids, patches)
    assert len(table) == 2000
