"""JobTable.annotate_many hands its list of bytes to C where they lie
(flux_annot.core._bulk, in chunks of 256), and converts the list first when an
item is not bytes. A user sees the same results and errors as one
`annotate` call per patch, whatever the patches are given as."""

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


def test_bulk_matches_per_call_results():
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


def _one_by_one(ids, patches):
    t = JobTable()
    return t, sum(t.annotate(i, p) for i, p in zip(ids, patches))


def test_a_bad_patch_past_the_first_chunk_fails_at_its_own_index():
    patches = [b'{"n":%d}' % i for i in range(700)]
    patches[600] = b'{"n":}'
    ids = [i % 300 for i in range(700)]
    t = JobTable()
    with pytest.raises(AnnotValueError) as ei:
        t.annotate_many(ids, patches)
    assert ei.value.index == 600 and "patch 600" in str(ei.value)
    want, _ = _one_by_one(ids[:600], patches[:600])
    assert sorted(t.ids()) == sorted(want.ids()) == list(range(300))
    assert all(t.get(i) == want.get(i) for i in range(300))  # 0..599 applied, nothing after


def test_patches_not_all_bytes_are_converted_before_any_is_applied():
    # the dict comes last: bytes before it must not be applied twice or lost
    ids = list(range(600)) + [5]
    patches = ([b'{"k":%d}' % i for i in range(300)]
               + [bytearray(b'{"k":%d}' % i) for i in range(300, 600)] + [{"k": None, "z": 1}])
    want, nwant = _one_by_one(ids, patches)
    t = JobTable()
    assert t.annotate_many(ids, tuple(patches)) == nwant == 601
    assert all(t.get(i) == want.get(i) for i in range(600))
    assert t.get(5) == b'{"z":1}'


def test_a_bad_patch_among_converted_ones_fails_at_its_index_after_the_earlier_ones():
    t = JobTable()
    with pytest.raises(AnnotValueError) as ei:
        t.annotate_many([1, 2, 3], [{"a": 1}, b'{"a":', '{"c":1}'])
    assert ei.value.index == 1
    assert t.get(1) == b'{"a":1}' and t.get(2) is None and t.get(3) is None
