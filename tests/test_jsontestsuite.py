"""JSONTestSuite (test_parsing/) through the core's strict parser.

y_: accepted, and the canonical output decodes (Python json) to the value
Python's json reads from the file (big integers become doubles, as our
number rule says). n_: rejected with EINVAL. i_: either way, but the
choice is stated below and checked, and an accepted text is canonical
JSON that Python reads.
"""

import json
import math
from pathlib import Path

import pytest

from flux_annot import AnnotValueError
from flux_annot.core import canonical

import model

# The cases live in the repository (tests/data/jsontestsuite/README.md says
# where they come from); a missing case is a failure, never a skip.
SUITE = Path(__file__).resolve().parent / "data" / "jsontestsuite" / "test_parsing"
FILES = sorted(SUITE.glob("*.json"))

# Implementation-defined cases we accept; every other i_ file is rejected
# (invalid UTF-8, lone surrogates, UTF-16, BOM, and numbers that overflow
# a double: EINVAL "number out of range").
I_ACCEPTED = {
    "i_number_double_huge_neg_exp.json",  # underflows to 0.0
    "i_number_real_underflow.json",
    "i_number_too_big_neg_int.json",      # beyond int64: a double
    "i_number_too_big_pos_int.json",
    "i_number_very_big_negative_int.json",
    "i_structure_500_nested_arrays.json",
}



def test_the_whole_suite_is_here():
    # 95 y_, 188 n_ and 35 i_ cases: the copy in tests/data is complete.
    assert (len(Y), len(N), len(I)) == (95, 188, 35)


def same(a, b):
    if isinstance(a, float) and isinstance(b, float):
        return a == b and math.copysign(1, a) == math.copysign(1, b) or (a != a and b != b)
    if type(a) is not type(b):
        return False
    if isinstance(a, list):
        return len(a) == len(b) and all(same(x, y) for x, y in zip(a, b))
    if isinstance(a, dict):
        return list(a) == list(b) and all(same(a[k], b[k]) for k in a)
    return a == b


def ids(files):
    return [f.name for f in files]


Y = [f for f in FILES if f.name.startswith("y_")]
N = [f for f in FILES if f.name.startswith("n_")]
I = [f for f in FILES if f.name.startswith("i_")]


@pytest.mark.parametrize("path", Y, ids=ids(Y))
def test_y_accepted_same_value(path):
    data = path.read_bytes()
    out = canonical(data)
    want = model.normalize(json.loads(data.decode("utf-8")))
    assert same(json.loads(out), want), (data, out)
    assert canonical(out) == out  # canonical is a fixed point


@pytest.mark.parametrize("path", N, ids=ids(N))
def test_n_rejected(path):
    with pytest.raises(AnnotValueError) as ei:
        canonical(path.read_bytes())
    assert ei.value.errno == 22 and str(ei.value)


@pytest.mark.parametrize("path", I, ids=ids(I))
def test_i_as_documented(path):
    data = path.read_bytes()
    if path.name in I_ACCEPTED:
        out = canonical(data)
        json.loads(out)
        assert canonical(out) == out
    else:
        with pytest.raises(AnnotValueError) as ei:
            canonical(data)
        assert ei.value.errno == 22
