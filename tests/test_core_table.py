"""JobTable: the C job table through Python (every entry point, every error)."""

import json
from array import array

import pytest

from flux_annot import AnnotError, AnnotValueError, JobTable
from flux_annot.core import OWNER_LIMITS, ApplyInfo, Limits

SCHED = (b'{"sched":{"t_estimate":1700000123.5,'
         b'"reason_pending":"insufficient resources","jobs_ahead":1234}}')


def test_annotate_get_remove_len_contains():
    t = JobTable()
    assert len(t) == 0 and 5 not in t and t.get(5) is None
    assert t.annotate(5, SCHED) is True
    assert t.annotate(5, SCHED) is False  # same result: unchanged
    assert t.get(5) == SCHED and 5 in t and len(t) == 1
    assert t.annotate(5, {"sched": {"jobs_ahead": 1233}}) is True
    assert json.loads(t.get(5))["sched"]["jobs_ahead"] == 1233
    assert t.annotate(5, {"sched": None}) is True  # nothing left: entry gone
    assert t.get(5) is None and 5 not in t and len(t) == 0
    assert t.annotate(6, {"a": {"b": None}}) is False  # prunes to nothing
    assert 6 not in t
    t.annotate(7, {"x": 1})
    assert t.remove(7) is True and t.remove(7) is False and len(t) == 0


def test_ids_at_both_ends_of_the_range():
    t = JobTable()
    top = (1 << 64) - 1
    t.annotate(0, {"a": 1})
    t.annotate(top, {"a": 2})
    assert sorted(t.ids()) == [0, top]
    assert t.get(top) == b'{"a":2}'


@pytest.mark.parametrize("bad", [-1, 1 << 64, 2**80, "12", 1.5, None])
def test_bad_ids_are_einval(bad):
    t = JobTable()
    for call in (lambda: t.annotate(bad, b'{"a":1}'), lambda: t.get(bad),
                 lambda: t.remove(bad), lambda: t.annotate_many([bad], [b'{"a":1}']),
                 lambda: t.apply(bad, b'{"a":1}', OWNER_LIMITS)):
        with pytest.raises(AnnotValueError) as ei:
            call()
        assert ei.value.errno == 22
    assert len(t) == 0
    assert bad not in t


def test_patch_types():
    t = JobTable()
    assert t.annotate(1, '{"s":"\u00e9"}')
    assert t.annotate(1, {"d": [1, 2]})
    assert t.get(1) == '{"s":"é","d":[1,2]}'.encode()
    for bad in (5, [1], None, {"x": float("nan")}, {"x": object()}):
        with pytest.raises(AnnotValueError):
            t.annotate(1, bad)
    assert t.get(1) == '{"s":"é","d":[1,2]}'.encode()


def test_annotate_many_counts_and_stops_at_the_bad_patch():
    t = JobTable()
    ids = [1, 2, 1, 3, 4]
    patches = [b'{"a":1}', b'{"a":2}', b'{"a":1}', b'{"a":', b'{"a":4}']
    with pytest.raises(AnnotValueError) as ei:
        t.annotate_many(ids, patches)
    assert ei.value.index == 3
    assert ei.value.errno == 22
    assert "patch 3" in str(ei.value) and "unexpected end of input" in str(ei.value)
    assert t.get(1) == b'{"a":1}' and t.get(2) == b'{"a":2}'  # earlier ones applied
    assert t.get(3) is None and t.get(4) is None
    assert t.annotate_many(array("Q", [1, 2, 5]), [b'{"a":1}', {"a": 3}, '{"b":1}']) == 2
    assert t.annotate_many([], []) == 0
    gen = (p for p in [b'{"g":1}', b'{"g":2}'])
    assert t.annotate_many(iter([6, 7]), gen) == 2 and t.get(7) == b'{"g":2}'
    with pytest.raises(AnnotValueError, match="differ in length"):
        t.annotate_many([1, 2], [b"{}"])


def test_apply_info_replace_and_ns():
    t = JobTable()
    info = t.apply(1, b'{"user":{"a":"xyz"},"sched":{"t":1}}', OWNER_LIMITS, ns="user")
    assert info == ApplyInfo(True, 0, 36, 0, 11)
    info = t.apply(1, b'{"user":{"b":1}}', OWNER_LIMITS, ns=b"user", replace=True)
    assert info == ApplyInfo(True, 36, 16, 11, 7)
    assert t.get(1) == b'{"user":{"b":1}}'
    assert t.apply(1, b'{"user":{"b":1}}', OWNER_LIMITS, replace=True).changed is False


def test_dryrun_stages_and_commit_installs():
    t = JobTable()
    t.annotate(1, {"a": 1})
    info = t.apply(1, b'{"b":2}', OWNER_LIMITS, dryrun=True)
    assert info.changed and info.new_len == len(b'{"a":1,"b":2}')
    assert t.get(1) == b'{"a":1}'  # nothing installed yet
    t.commit()
    assert t.get(1) == b'{"a":1,"b":2}'
    with pytest.raises(AnnotValueError, match="nothing staged"):
        t.commit()
    t.apply(1, b'{"c":3}', OWNER_LIMITS, dryrun=True)
    t.annotate(2, {"x": 1})  # another change drops the staged result
    with pytest.raises(AnnotValueError, match="nothing staged"):
        t.commit()
    assert t.get(1) == b'{"a":1,"b":2}'


def test_apply_limits_are_per_call():
    t = JobTable()
    guest = Limits(depth=2)
    with pytest.raises(AnnotValueError, match="nesting depth exceeds 2"):
        t.apply(1, b'{"user":{"a":{}}}', guest)
    assert t.apply(1, b'{"user":{"a":{"b":1}}}', OWNER_LIMITS).changed


def test_limits_validation():
    with pytest.raises(AnnotValueError):
        Limits(depth=0)
    with pytest.raises(AnnotValueError):
        Limits(key_bytes=-1)
    lim = Limits(depth=8)
    with pytest.raises(AttributeError):
        lim.depth = 9


def test_get_view_and_encode():
    t = JobTable()
    t.annotate(1, {"sched": {"t": 1}, "user": {"m": "x"}, "site": {"s": 2}})
    t.annotate(2, {"user": {"m": "y"}})
    assert t.get_view(1, ["sched"]) == b'{"sched":{"t":1}}'
    assert t.get_view(1, ["sched", "site"]) == b'{"sched":{"t":1},"site":{"s":2}}'
    assert t.get_view(1, ["user"], exclude=True) == b'{"sched":{"t":1},"site":{"s":2}}'
    assert t.get_view(2, ["sched"]) is None
    assert t.get_view(3, ["sched"]) is None
    assert t.get_view(1, []) is None
    assert t.get_view(1, [], exclude=True) == t.get(1)
    out = t.encode([1, 2, 3], full=b"\x01\x00\x00", namespaces=["sched"])
    assert json.loads(out) == [[1, json.loads(t.get(1))], [2, None], [3, None]]
    assert json.loads(t.encode([2, 1])) == [[2, {"user": {"m": "y"}}],
                                              [1, json.loads(t.get(1))]]
    assert t.encode([]) == b"[]"


def test_batch_tracking_net_changes_and_encoding():
    t = JobTable()
    t.annotate(1, {"sched": {"t": 1}, "user": {"m": "x"}})
    t.annotate(2, {"sched": {"t": 2}})
    t.track(True)
    t.annotate(3, {"user": {"a": 1}})       # created
    t.annotate(1, {"user": {"m": "y"}})     # changed (user only)
    t.annotate(2, {"sched": {"t": 3}})      # changed then changed back: no net change
    t.annotate(2, {"sched": {"t": 2}})
    t.annotate(4, {"a": 1})
    t.remove(4)                              # created and removed: no net change
    t.annotate(1, {"sched": {"t": 5}})
    assert t.batch_count() == 4
    assert t.batch_ids() == [3, 1]
    assert json.loads(t.batch_encode()) == [
        [3, {"user": {"a": 1}}], [1, {"sched": {"t": 5}, "user": {"m": "y"}}]]
    assert json.loads(t.batch_encode(delta=True)) == [
        [3, {"user": {"a": 1}}], [1, {"sched": {"t": 5}, "user": {"m": "y"}}]]
    # a reader of sched only: job 3's view did not change (no sched): left out
    assert json.loads(t.batch_encode(full=b"\0\0", namespaces=["sched"])) == [
        [1, {"sched": {"t": 5}}]]
    assert json.loads(t.batch_encode(full=b"\0\0", namespaces=["sched"], delta=True)) == [
        [1, {"sched": {"t": 5}}]]
    assert json.loads(t.batch_encode(full=b"\1\0", namespaces=["sched"])) == [
        [3, {"user": {"a": 1}}], [1, {"sched": {"t": 5}}]]
    with pytest.raises(AnnotValueError):
        t.batch_encode(full=b"\0")
    t.batch_clear()
    assert t.batch_ids() == [] and t.batch_encode() == b"[]"
    t.remove(3)
    t.annotate(1, {"user": None})
    assert json.loads(t.batch_encode()) == [[3, None], [1, {"sched": {"t": 5}}]]
    assert json.loads(t.batch_encode(delta=True)) == [[3, {"user": None}], [1, {"user": None}]]
    t.batch_clear()
    t.track(False)
    t.annotate(9, {"a": 1})
    assert t.batch_ids() == [] and t.batch_count() == 0


def test_delta_applied_to_previous_gives_current():
    from flux_annot import merge
    t = JobTable()
    t.annotate(1, {"a": {"b": 1, "c": [1]}, "d": 1})
    prev = json.loads(t.get(1))
    t.track(True)
    t.annotate(1, {"a": {"b": None, "e": {"f": 1}}, "d": "x", "g": 2})
    [[jid, delta]] = json.loads(t.batch_encode(delta=True))
    assert merge(prev, delta) == json.loads(t.get(1))


def test_memory_grows_per_job_and_stays_under_target():
    t = JobTable()
    base = t.memory_bytes()
    assert base > 0
    t.annotate_many(range(10_000), [SCHED] * 10_000)
    per_job = (t.memory_bytes() - base) / 10_000
    assert 96 < per_job <= 175, per_job
    for i in range(10_000):
        t.remove(i)
    assert t.memory_bytes() - base < 10_000 * 40  # texts freed, slots kept


def test_errors_carry_errno_and_are_annot_errors():
    t = JobTable()
    with pytest.raises(AnnotError) as ei:
        t.annotate(1, b"[]")
    assert isinstance(ei.value, ValueError) and ei.value.errno == 22
    assert str(ei.value) == "annotations must be a JSON object"
