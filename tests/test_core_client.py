"""core.RequestEncoder and core.ReplyScanner: the client side of the wire
protocol in C as Python sees it (also run against the ASan+UBSan build by
scripts/sanitize.sh). What is encoded must be what the server decodes, and
any reply, however broken, is records or a sentence, never a crash."""

import errno
import json
import struct
from array import array

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from flux_annot import core
from flux_annot.wire import protocol
from flux_annot.errors import AnnotError

W = core.REPLY_WORDS
TOPIC, MEMBER = b"job-manager.annotate", b"annotations"


def frames(*bodies):
    return b"".join(struct.pack(">I", len(b)) + b for b in bodies)


def bodies(data):
    out, off = [], 0
    while off < len(data):
        (n,) = struct.unpack_from(">I", data, off)
        out.append(data[off + 4 : off + 4 + n])
        off += 4 + n
    return out


def test_encoded_frames_are_the_requests_the_server_decodes():
    enc = core.RequestEncoder(1 << 20, 512)
    patches = [{"sched": {"t": 1.5}}, {"user": {"é": [1, None]}}, {}]
    data = enc.encode(TOPIC, MEMBER, 40, array("Q", [7, 2**64 - 1, 0]),
                      protocol.dumps_patch(patches), 3, True, as_array=True)
    got = [protocol.parse_request(b) for b in bodies(data)]
    assert got == [("job-manager.annotate", 40 + i,
                    {"id": jid, "annotations": p, "volatile": True})
                   for i, (jid, p) in enumerate(zip([7, 2**64 - 1, 0], patches))]
    # text is sent as written, NUL-joined, not volatile
    data = enc.encode(b"job-manager.memo", b"memo", 1, array("Q", [3, 4]),
                      b' {"a": 1.50} \0{"b":"\\u00e9"}', 2, False)
    assert bodies(data) == [
        b'{"topic":"job-manager.memo","matchtag":1,"payload":{"id":3,"memo":{"a": 1.50}}}',
        b'{"topic":"job-manager.memo","matchtag":2,"payload":{"id":4,"memo":{"b":"\\u00e9"}}}']


def test_encoder_refusals_name_the_patch_and_send_nothing():
    enc = core.RequestEncoder(100, 8)
    with pytest.raises(AnnotError) as ei:
        enc.encode(TOPIC, MEMBER, 1, array("Q", [1, 2, 3]), b'{}\0{"a":}\0{}', 3, False)
    assert ei.value.errno == errno.EINVAL and ei.value.index == 1
    assert str(ei.value).startswith("annotations: invalid JSON at byte 5")
    with pytest.raises(AnnotError) as ei:
        enc.encode(TOPIC, MEMBER, 1, 5, b"[" * 9 + b"]" * 9, 1, False)
    assert ei.value.errno == errno.EINVAL and "nesting depth exceeds 8" in str(ei.value)
    with pytest.raises(AnnotError) as ei:
        enc.encode(TOPIC, MEMBER, 1, array("Q", [1, 2]), b'[{},{"a":"' + b"x" * 50 + b'"}]', 2,
                   False, as_array=True)
    assert ei.value.errno == errno.EMSGSIZE and ei.value.index == 1
    assert "exceeds the message limit of 100 bytes" in str(ei.value)
    with pytest.raises(AnnotError) as ei:
        enc.encode(TOPIC, MEMBER, 1, -1, b"{}", 1, False)
    assert ei.value.errno == errno.EINVAL and "out of range" in str(ei.value)


def test_scanner_records_and_spans():
    sc = core.ReplyScanner(512, cap=2)
    data = frames(b'{"matchtag":3,"errnum":0,"payload":{}}',
                  b'{"matchtag":4,"errnum":22,"errstr":"bad \\"x\\""}',
                  b'{"matchtag":5,"errnum":0,"payload":{"a":[1]}}')
    recs, used, nerr, err = sc.scan(data)
    assert (len(recs), nerr, err) == (2 * W, 1, None) and used < len(data)
    assert protocol.reply_tuple(data, recs, 0) == (3, 0, None, {})
    assert protocol.reply_tuple(data, recs, W) == (4, 22, 'bad "x"', None)
    recs, used2, nerr, err = sc.scan(data[used:])
    assert protocol.reply_tuple(data[used:], recs, 0) == (5, 0, None, {"a": [1]})
    assert used + used2 == len(data)


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=200))
def test_any_bytes_are_records_or_one_sentence(body):
    sc = core.ReplyScanner(16)
    data = frames(b'{"matchtag":1,"payload":{}}', body)
    recs, used, nerr, err = sc.scan(data)
    assert len(recs) in (W, 2 * W) and nerr <= 2
    if err is not None:
        assert err.startswith("malformed response from the service: ") and len(recs) == W
    else:
        assert used == len(data)
        mt, errnum, errstr, payload = protocol.reply_tuple(data, recs, W)
        doc = json.loads(body)
        assert doc["matchtag"] == mt and doc.get("errnum", 0) == errnum
        assert doc.get("errstr") == errstr and doc.get("payload") == payload


@settings(max_examples=200, deadline=None)
@given(st.recursive(st.none() | st.booleans() | st.integers(-2**63, 2**63 - 1) | st.text(),
                    lambda kids: st.lists(kids, max_size=3)
                    | st.dictionaries(st.text(max_size=5), kids, max_size=3), max_leaves=10))
def test_replies_the_server_writes_read_back_the_same(value):
    sc = core.ReplyScanner(512)
    payload = {"v": value}
    data = protocol.response(9, payload) + protocol.response_error(10, 61, "gone é")
    recs, used, nerr, err = sc.scan(data)
    assert err is None and used == len(data) and nerr == 1
    assert protocol.reply_tuple(data, recs, 0) == (9, 0, None, payload)
    assert protocol.reply_tuple(data, recs, W) == (10, 61, "gone é", None)
