"""flux_annot.merge and JobTable.annotate against docs/data-model.md and tests/model.py."""

import json

import pytest
from hypothesis import given
from hypothesis import strategies as st

import flux_annot
from flux_annot import AnnotValueError, JobTable, merge
from flux_annot.core import Limits

import model

# RFC 7396 Appendix A, adapted by §2: trees are pruned, an empty root is None.
RFC7396 = [
    ({"a": "b"}, {"a": "c"}, {"a": "c"}),
    ({"a": "b"}, {"b": "c"}, {"a": "b", "b": "c"}),
    ({"a": "b"}, {"a": None}, None),
    ({"a": "b", "b": "c"}, {"a": None}, {"b": "c"}),
    ({"a": ["b"]}, {"a": "c"}, {"a": "c"}),
    ({"a": "c"}, {"a": ["b"]}, {"a": ["b"]}),
    ({"a": {"b": "c"}}, {"a": {"b": "d", "c": None}}, {"a": {"b": "d"}}),
    ({"a": [{"b": "c"}]}, {"a": [1]}, {"a": [1]}),
    ({"e": None}, {"a": 1}, {"a": 1}),  # the tree is pruned first
    ({"a": "foo"}, {"a": {"bb": {"ccc": None}}}, None),  # §2's example
    ({}, {"a": {"bb": {"ccc": None}}}, None),
    (None, {"a": {"b": {}}}, None),
    (None, {"a": [None, {}]}, {"a": [None, {}]}),  # arrays are values
    ({"a": {"b": 1}}, {"a": 5}, {"a": 5}),
    ({"a": 1, "b": 2, "c": 3}, {"b": {"x": 1}}, {"a": 1, "b": {"x": 1}, "c": 3}),
]


@pytest.mark.parametrize("tree, patch, want", RFC7396)
def test_rfc7396_examples_with_pruning(tree, patch, want):
    assert merge(tree, patch) == want
    assert model.merge(model.prune(tree), patch) == want


def test_replaced_key_keeps_its_place_and_new_keys_append():
    out = merge({"a": 1, "b": 2, "c": 3}, {"d": 4, "b": 20, "a": None})
    assert list(out) == ["b", "c", "d"]


def test_merge_accepts_bytes_and_str_and_returns_dict():
    assert merge(b'{"a":{"b":1}}', '{"a":{"c":"\u00e9"}}') == {"a": {"b": 1, "c": "é"}}
    assert merge(None, b'  {"x" : [1, 2.50]}  ') == {"x": [1, 2.5]}


def test_public_names():
    assert flux_annot.merge is merge
    assert issubclass(flux_annot.AnnotValueError, ValueError)


@pytest.mark.parametrize(
    "patch, errmsg",
    [
        (b"[1]", "annotations must be a JSON object"),
        (b'"x"', "annotations must be a JSON object"),
        (b"{", "invalid JSON at byte 1: unexpected end of input"),
        (b'{"a" 1}', "invalid JSON at byte 5: expected ':'"),
        (b'{"a":1,}', "invalid JSON at byte 7: expected a string key"),
        (b'{"a":1 "b":2}', "invalid JSON at byte 7: expected ',' or '}'"),
        (b'{"a":[1 2]}', "invalid JSON at byte 8: expected ',' or ']'"),
        (b'{"a":NaN}', "invalid JSON at byte 5: expected a value"),
        (b'{"a":01}', "leading zero"),
        (b'{"a":1} x', "trailing data"),
        (b'{"a.b":1}', "key contains '.': a.b"),
        (b'{"u":{"x.y":1}}', "key contains '.': x.y"),
        (b'{"u":[{"x.y":1}]}', "key contains '.': x.y"),
        (b'{"":1}', "empty key"),
        (b'{"a":1e400}', "number out of range"),
        (b'{"a":"\xff"}', "invalid UTF-8"),
        (b'{"a":"\\ud800"}', "lone surrogate"),
        (b'{"a":"\x01"}', "control character in string"),
        (b'{"a":"\\x"}', "invalid escape"),
    ],
)
def test_bad_patch_is_einval_and_changes_nothing(patch, errmsg):
    table = JobTable()
    table.annotate(7, b'{"user":{"keep":1}}')
    table.track(True)
    before = (table.get(7), len(table))
    with pytest.raises(AnnotValueError) as ei:
        table.annotate(7, patch)
    assert ei.value.errno == 22
    assert errmsg in str(ei.value)
    assert (table.get(7), len(table), table.batch_count()) == before + (0,)
    # scratch buffers are kept, but rejections do not make the table grow
    mem = table.memory_bytes()
    for _ in range(50):
        with pytest.raises(AnnotValueError):
            table.annotate(7, patch)
    assert table.memory_bytes() == mem
    with pytest.raises(AnnotValueError):
        merge({"a": 1}, patch)


def test_limits_are_checked_and_named():
    lim = Limits(depth=3, key_bytes=4, object_keys=2)
    table = JobTable(lim)
    assert table.annotate(1, {"u": {"a": [1]}})  # depth 3 is allowed
    with pytest.raises(AnnotValueError, match="nesting depth exceeds 3"):
        table.annotate(1, {"u": {"a": [[1]]}})
    with pytest.raises(AnnotValueError, match="key exceeds 4 bytes"):
        table.annotate(1, {"u": {"abcde": 1}})
    assert table.annotate(1, {"u": {"\u00e9\u00e9": 1}})  # 4 bytes decoded
    with pytest.raises(AnnotValueError, match="object has more than 2 keys"):
        table.annotate(1, {"u": {"a": 1, "b": 2, "c": 3}})
    # the key count is checked on the merge result too
    with pytest.raises(AnnotValueError, match="object has more than 2 keys"):
        table.annotate(1, {"u": {"b": 2}})
    assert table.get(1) == '{"u":{"a":[1],"éé":1}}'.encode()


def test_non_strict_limits_allow_dots_and_empty_keys():
    table = JobTable(Limits(strict_keys=False))
    assert table.annotate(1, {"a.b": {"": 1}})
    assert table.get(1) == b'{"a.b":{"":1}}'


def test_duplicate_keys_last_wins_at_first_place():
    assert merge(None, b'{"a":1,"b":2,"a":3}') == {"a": 3, "b": 2}
    table = JobTable()
    table.annotate(1, b'{"a":{"x":1},"b":2,"a":{"y":2}}')
    assert table.get(1) == b'{"a":{"y":2},"b":2}'


def test_keys_compare_by_decoded_value():
    table = JobTable()
    table.annotate(1, b'{"\\u0061":1}')
    assert not table.annotate(1, b'{"a":1}')
    assert table.annotate(1, b'{"\\u00e9":1}')
    assert not table.annotate(1, '{"é":1}')
    assert table.get(1) == '{"a":1,"é":1}'.encode()


def test_hundred_thousand_deep_nesting_fails_fast():
    deep = b'{"a":' + b"[" * 100_000 + b"]" * 100_000 + b"}"
    with pytest.raises(AnnotValueError, match="nesting depth exceeds 64"):
        JobTable().annotate(1, deep)
    with pytest.raises(AnnotValueError, match="nesting depth exceeds 64"):
        merge(None, b'{"a":' * 100_000)


# ---- property tests against the model ----

keys = st.sampled_from(["a", "b", "c", "sched", "user", "é", "k\n"])
scalars = (st.none() | st.booleans() | st.integers(-(2**70), 2**70)
           | st.floats(allow_nan=False, allow_infinity=False) | st.text(max_size=5))
values = st.recursive(
    scalars,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(keys, inner, max_size=4),
    max_leaves=12,
)
patches = st.dictionaries(keys, values, max_size=4)


@given(st.one_of(st.none(), patches), patches)
def test_merge_matches_model(tree, patch):
    want = model.merge(model.prune(model.normalize(tree)), model.normalize(patch))
    got = merge(tree, patch)
    assert model.canonical(got) == model.canonical(want)


@given(st.lists(st.tuples(st.integers(0, 3), patches), max_size=12))
def test_table_annotate_sequences_match_model(ops):
    table = JobTable()
    state = {}
    for jobid, patch in ops:
        old = state.get(jobid)
        new = model.merge(old, model.normalize(patch))
        changed = table.annotate(jobid, patch)
        assert changed == (model.canonical(old) != model.canonical(new))
        if new is None:
            state.pop(jobid, None)
        else:
            state[jobid] = new
        assert table.get(jobid) == model.canonical(new)
    assert len(table) == len(state)
    assert sorted(table.ids()) == sorted(state)


@given(st.lists(st.tuples(st.integers(0, 3), patches), max_size=12))
def test_annotate_many_matches_one_by_one(ops):
    one, many = JobTable(), JobTable()
    changed = sum(one.annotate(i, p) for i, p in ops)
    assert many.annotate_many([i for i, _ in ops],
                              [json.dumps(p).encode() for _, p in ops]) == changed
    for i in range(4):
        assert many.get(i) == one.get(i)
