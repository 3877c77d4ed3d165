"""Job ids (docs/data-model.md): every input form, round trips, output prefix, errors."""

import io
import random

import pytest

from flux_annot.errors import EINVAL, AnnotError
from flux_annot.ids import MAX_ID, JobID, encode_f58, output_is_utf8, parse_jobid

SAMPLES = [0, 1, 57, 58, 1234, 2**32, 123456789012345678, MAX_ID - 1, MAX_ID]


@pytest.mark.parametrize("value", SAMPLES)
def test_round_trips(value):
    assert parse_jobid(str(value)) == value
    assert parse_jobid(hex(value)) == value
    assert parse_jobid(encode_f58(value, ascii=False)) == value
    assert parse_jobid(encode_f58(value, ascii=True)) == value
    assert parse_jobid(JobID(value).dothex) == value


def test_random_round_trips():
    rng = random.Random(5)
    for _ in range(2000):
        v = rng.getrandbits(rng.choice([8, 32, 53, 64]))
        assert parse_jobid(encode_f58(v)) == v


def test_known_f58_values():
    # Values from Flux: F58 of 0 is ƒ1, the largest id is ƒjpXCZedGfVQ.
    assert encode_f58(0, ascii=False) == "ƒ1"
    assert encode_f58(0, ascii=True) == "f1"
    assert encode_f58(57, ascii=False) == "ƒz"
    assert encode_f58(58, ascii=False) == "ƒ21"
    assert encode_f58(MAX_ID, ascii=False) == "ƒjpXCZedGfVQ"


def test_blanks_and_upper_hex_accepted():
    assert parse_jobid("  42\n") == 42
    assert parse_jobid("0XfF") == 255
    assert parse_jobid("0000.0000.0001.0000") == 65536


def test_jobid_attributes_and_format():
    j = JobID("ƒ21")
    assert j == 58 and j.dec == 58 and isinstance(j.dec, int)
    assert j.hex == "0x3a"
    assert j.dothex == "0000.0000.0000.003a"
    assert j.f58plain == "f21"
    assert format(j, "d") == "58"
    assert format(j, "x") == "3a"
    assert len(format(j, ">10")) == 10 and format(j, ">10").endswith("21")


def test_prefix_follows_output_encoding(monkeypatch):
    utf8 = io.TextIOWrapper(io.BytesIO(), encoding="utf-8")
    latin = io.TextIOWrapper(io.BytesIO(), encoding="latin-1")
    assert output_is_utf8(utf8)
    assert not output_is_utf8(latin)
    monkeypatch.setattr("sys.stdout", latin)
    assert encode_f58(1) == "f2"
    assert str(JobID(1)) == "f2"
    monkeypatch.setattr("sys.stdout", utf8)
    assert encode_f58(1) == "ƒ2"


BAD = [
    ("", "empty"),
    ("   ", "empty"),
    ("ƒ", "no F58 digits"),
    ("f", "no F58 digits"),
    ("f0", "not an F58 digit"),  # 0, O, I, l are not in the alphabet
    ("fO", "not an F58 digit"),
    ("fl", "not an F58 digit"),
    ("ƒjpXCZedGfVR", "out of range"),  # MAX_ID + 1
    ("ƒ111111111111", "out of range"),
    ("18446744073709551616", "out of range"),
    ("0x10000000000000000", "out of range"),
    ("0x", "not a hex number"),
    ("0xg", "not a hex number"),
    ("-1", "expected decimal"),
    ("+1", "expected decimal"),
    ("1e3", "expected decimal"),
    ("１２", "expected decimal"),  # fullwidth digits
    ("²", "expected decimal"),
    ("abc", "expected decimal"),
    ("1.2.3", "dothex"),
    ("0000.0000.0000.00000", "dothex"),
    ("g000.0000.0000.0000", "dothex"),
]


@pytest.mark.parametrize("text,why", BAD)
def test_bad_ids_raise_einval_with_sentence(text, why):
    with pytest.raises(ValueError) as info:
        parse_jobid(text)
    assert isinstance(info.value, AnnotError)
    assert info.value.errno == EINVAL
    assert why in str(info.value)
    assert "invalid job id" in str(info.value)


@pytest.mark.parametrize("value", [-1, MAX_ID + 1, 1.5, None, True])
def test_bad_id_types(value):
    with pytest.raises(ValueError):
        parse_jobid(value)
