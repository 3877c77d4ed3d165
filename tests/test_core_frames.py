"""core.FrameScanner, ok_replies, check_nesting: the C request decoder as
Python sees it (also run against the ASan+UBSan build by scripts/sanitize.sh)."""

import errno
import json
import struct

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from flux_annot import core
from flux_annot.errors import AnnotError

TOPICS = ["job-manager.annotate", "job-manager.memo"]
W = core.FRAME_WORDS


def frames(*bodies):
    return b"".join(struct.pack(">I", len(b)) + b for b in bodies)


def records(recs):
    return [recs[i : i + W] for i in range(0, len(recs), W)]


def scanner(depth=64, **kw):
    return core.FrameScanner(TOPICS, core.Limits(depth=depth), 1 << 20, **kw)


def test_hot_records_carry_what_the_server_needs():
    body = (
        b'{"topic":"job-manager.annotate","matchtag":9,"payload":'
        b'{"id":42,"annotations":{"sched":{"t":1},"user":null},"volatile":true}}'
    )
    data = frames(body, body.replace(b":9,", b":10,"))
    recs, used, keys, err = scanner().scan(data)
    assert used == len(data) and err is None
    (a, b) = records(recs)
    st_, mt, jobid, voff, vlen, koff, klen = a[:7]
    assert st_ == core.F_MATCHTAG | core.F_HOT | core.F_VOLATILE | 1 << 16
    assert (mt, jobid) == (9, 42)
    assert json.loads(data[voff : voff + vlen]) == {"sched": {"t": 1}, "user": None}
    assert keys[koff : koff + klen] == b"sched\0user\0"
    assert b[1] == 10 and b[5:7] == a[5:7]  # the same namespaces: one key list


@pytest.mark.parametrize(
    "value, msg",
    [
        (b"[" * 100_000, "nesting depth exceeds 64"),
        (b'{"a":' * 100_000, "nesting depth exceeds 64"),
        (b'{"u":{"k":"caf\xe9"}}', "invalid UTF-8"),
        (b'{"u":{"\xed\xa0\x80":1}}', "invalid UTF-8"),
        (b'{"u":{"' + b"k" * 300 + b'":1}}', "key exceeds 256 bytes"),
    ],
)
def test_payload_faults_are_einval_with_the_matchtag(value, msg):
    body = b'{"matchtag":3,"topic":"x","payload":{"id":1,"annotations":' + value + b"}}"
    recs, used, keys, err = scanner().scan(frames(body))
    (r,) = records(recs)
    assert r[0] >> 32 == errno.EINVAL and r[0] & core.F_MATCHTAG and r[1] == 3
    assert msg in err and "annotations" in err


def test_a_guest_value_over_its_bound_is_only_delimited():
    body = b'{"matchtag":3,"topic":"x","payload":{"id":1,"memo":{"a":"' + b"x" * 100 + b'"}}}'
    recs, used, keys, err = scanner(depth=8, max_annotations=64, max_memo=55).scan(frames(body))
    (r,) = records(recs)
    assert r[0] & core.F_TOOBIG and r[0] & core.F_HOT and r[4] == 108 and err is None


def test_oversize_header_and_incomplete_frames():
    sc = core.FrameScanner(TOPICS, core.Limits(), 100)
    recs, used, keys, err = sc.scan(struct.pack(">I", 101))
    (r,) = records(recs)
    assert r[0] >> 32 == errno.EMSGSIZE and r[2] == 101 and used == 0
    assert "101 bytes" in err
    recs, used, keys, err = sc.scan(frames(b"{}")[:-1])
    assert recs == [] and used == 0 and err is None


def test_ok_replies_and_check_nesting():
    out = core.ok_replies([1, 2**63 - 1])
    bodies = []
    while out:
        (n,) = struct.unpack(">I", out[:4])
        bodies.append(json.loads(out[4 : 4 + n]))
        out = out[4 + n :]
    assert bodies == [{"matchtag": 1, "errnum": 0, "payload": {}},
                      {"matchtag": 2**63 - 1, "errnum": 0, "payload": {}}]
    assert scanner().ok_replies([5]) == core.ok_replies([5])
    core.check_nesting(b'[["[[["]]', 2)
    with pytest.raises(AnnotError) as ei:
        core.check_nesting(b"[" * 100_000, 512)
    assert ei.value.errno == errno.EINVAL and "exceeds 512" in str(ei.value)


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=300), st.integers(1, 8))
def test_any_bytes_give_records_or_a_fault_never_a_crash(data, cap):
    sc = core.FrameScanner(TOPICS, core.Limits(depth=8), 200, cap=cap)
    buf = frames(data, data[:50]) + data[:3]
    recs, used, keys, err = sc.scan(buf)
    rs = records(recs)
    assert len(rs) <= cap and used <= len(buf)
    for r in rs[:-1]:
        assert r[0] >> 32 == 0
    if rs and rs[-1][0] >> 32:
        assert rs[-1][0] >> 32 in (errno.EPROTO, errno.EINVAL, errno.EMSGSIZE) and err
    for r in rs:
        if r[0] >> 32 == 0:  # a decoded payload is JSON a bounded decoder may read
            json.loads(buf[r[7] : r[7] + r[8]])


def test_a_fault_record_keeps_the_topic_read_before_it():
    # the dispatch counts a refused request under its topic (metrics)
    bad = b'{"id":1,"annotations":{"u":{"":1}}}'
    body = b'{"matchtag":3,"topic":"' + TOPICS[1].encode() + b'","payload":' + bad + b"}"
    (r,) = records(scanner().scan(frames(body))[0])
    assert r[0] >> 32 == errno.EINVAL and (r[0] >> 16) & 0xFFFF == 2
    # a topic after the fault was never read: index 0
    body = b'{"matchtag":3,"payload":' + bad + b',"topic":"' + TOPICS[1].encode() + b'"}'
    (r,) = records(scanner().scan(frames(body))[0])
    assert r[0] >> 32 == errno.EINVAL and (r[0] >> 16) & 0xFFFF == 0
