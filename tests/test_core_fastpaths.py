"""The core's fast paths give the same trees as the model (tests/model.py).

The merge copies a "plain" patch object (compact, canonical scalars, no
null / object / array value, no duplicate key) verbatim when the stored
object has the same keys in the same order, or when there is none; every
other case takes the general merge. These tests put each side of that line
next to each other: same keys in another order, a stored key more or less,
whitespace, a duplicate key, escapes, non-ASCII, numbers not yet canonical.
"""

import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from flux_annot import JobTable
from flux_annot.errors import AnnotValueError

import model

STORED = {"sched": {"t": 1, "r": "a", "j": 2}, "user": {"x": 1}}

PATCHES = [
    b'{"sched":{"t":5,"r":"b","j":3}}',            # same keys, same order: verbatim
    b'{"sched":{"r":"b","t":5,"j":3}}',            # same keys, other order
    b'{"sched":{"t":5,"r":"b"}}',                  # one key fewer than stored
    b'{"sched":{"t":5,"r":"b","j":3,"k":4}}',      # one key more
    b'{"sched":{"t":5, "r":"b","j":3}}',           # whitespace: not plain
    b'{"sched":{"t":5,"r":"b","t":6}}',            # duplicate key: last wins at first place
    b'{"sched":{"t":5,"r":"\\u00e9","j":3}}',      # escape re-encoded
    b'{"sched":{"t":5,"r":"\xc3\xa9","j":3}}',      # non-ASCII verbatim
    b'{"sched":{"t":1.50,"r":"b","j":3}}',         # number not canonical yet
    b'{"sched":{"t":5,"r":"b","j":null}}',         # null deletes
    b'{"sched":{"t":5,"r":"b","j":{}}}',           # empty object is pruned
    b'{"sched":{"t":5,"r":"b","j":[1, 2]}}',       # array re-written compact
    b'{"user":{"x":2},"sched":{"t":5,"r":"b","j":3}}',
    b'{"new":{"a":1,"b":"c"}}',                    # plain object under a new key
    b'{"user":7}',                                 # scalar over an object
    b'{"user":{"y":1}}',
    b'{"sched":{"t":{"deep":1},"r":"b","j":3}}',   # object over a scalar
]


@pytest.mark.parametrize("patch", PATCHES)
def test_each_side_of_the_verbatim_copy_matches_the_model(patch):
    t = JobTable()
    t.annotate(1, json.dumps(STORED, separators=(",", ":")).encode())
    changed = t.annotate(1, patch)
    want = model.merge(STORED, json.loads(patch))
    assert t.get(1) == model.canonical(want)
    assert changed == (want != STORED)


def test_plain_object_over_a_stored_scalar_and_into_nothing():
    t = JobTable()
    t.annotate(1, b'{"sched":3}')
    assert t.annotate(1, b'{"sched":{"a":1,"b":"x"}}')
    assert t.get(1) == b'{"sched":{"a":1,"b":"x"}}'
    assert t.annotate(2, b'{"sched":{"a":1,"b":"x"}}')
    assert t.get(2) == b'{"sched":{"a":1,"b":"x"}}'


def test_plain_object_still_counts_keys_against_the_limit():
    from flux_annot.core import Limits
    t = JobTable(Limits(object_keys=2))
    t.annotate(1, b'{"s":{"a":1,"b":2}}')
    with pytest.raises(AnnotValueError, match="more than 2 keys"):
        t.annotate(1, b'{"s":{"a":1,"b":2,"c":3}}')
    assert t.get(1) == b'{"s":{"a":1,"b":2}}'


keys = st.sampled_from(["a", "b", "c", "d"])
scalars = st.one_of(st.integers(-5, 5), st.sampled_from(["x", "y", "é", "a\nb"]),
                    st.sampled_from([1.5, 0.25, 1e16]), st.none(), st.booleans())
leaf = st.dictionaries(keys, scalars, max_size=4)
trees = st.dictionaries(st.sampled_from(["s", "u"]), st.one_of(leaf, scalars), max_size=2)


@settings(max_examples=300, deadline=None)
@given(st.lists(trees, min_size=1, max_size=6))
def test_random_leaf_patch_sequences_match_the_model(seq):
    t = JobTable()
    tree = None
    for patch in seq:
        text = json.dumps(patch, separators=(",", ":"), ensure_ascii=False).encode()
        t.annotate(1, text)
        tree = model.merge(tree, patch)
        assert t.get(1) == model.canonical(tree)
