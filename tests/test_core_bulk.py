"""JobTable.annotate_many's two C paths: NUL-joined patches (the common
case) and exact offsets (when a patch itself holds a NUL byte). A user
sees the same results and errors either way."""

import pytest

from flux_annot import JobTable
from flux_annot.errors import AnnotValueError


def test_nul_inside_a_patch_fails_at_its_own_index_and_changes_nothing_after():
    t = JobTable()
    # b'{"a":1}\0{"b":2}' would be two valid patches if split at the NUL
    patches = [b'{"x":1}', b'{"a":1}\0{"b":2}', b'{"y":1}']
    with pytest.raises(AnnotValueError) as ei:
        t.annotate_many([1, 2, 3], patches)
    assert ei.value.index == 1 and ei.value.errno == 22
    assert "patch 1" in str(ei.value)
    assert t.get(1) == b'{"x":1}'      # before the bad one: applied
    assert t.get(2) is None and t.get(3) is None
    assert len(t) == 1


def test_nul_joined_path_matches_per_call_results():
    patches = [b'{"s":{"t":%d,"r":"x"}}' % i for i in range(50)] + [b'{"s":{"t":null}}', b"{}"]
    ids = [i % 7 for i in range(len(patches))]
    bulk, single = JobTable(), JobTable()
    nchanged = bulk.annotate_many(ids, patches)
    assert nchanged == sum(single.annotate(i, p) for i, p in zip(ids, patches))
    assert sorted(bulk.ids()) == sorted(single.ids())
    assert all(bulk.get(i) == single.get(i) for i in single.ids())


def test_empty_patch_in_the_middle_is_an_error_at_its_index():
    t = JobTable()
    with pytest.raises(AnnotValueError) as ei:
        t.annotate_many([1, 2, 3], [b'{"a":1}', b"", b'{"a":3}'])
    assert ei.value.index == 1
    assert t.get(1) == b'{"a":1}' and t.get(3) is None
