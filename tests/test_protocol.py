"""The wire format of docs/protocol.md: framing, request checks, response splicing."""

import json
import struct

import pytest
from hypothesis import given
from hypothesis import strategies as st

from flux_annot.wire import protocol
from flux_annot.errors import EMSGSIZE, EPROTO, AnnotError
from flux_annot.wire.protocol import ProtocolError


def body_of(frame):
    (n,) = struct.unpack(">I", frame[:4])
    assert n == len(frame) - 4
    return frame[4:]


def test_request_round_trip():
    frame = protocol.request("job-manager.annotate", 7, {"id": 1, "annotations": {"ü": [1]}})
    topic, mt, payload = protocol.parse_request(body_of(frame))
    assert (topic, mt, payload) == ("job-manager.annotate", 7, {"id": 1, "annotations": {"ü": [1]}})


def test_response_shapes():
    assert json.loads(body_of(protocol.response(3))) == {"matchtag": 3, "errnum": 0, "payload": {}}
    assert json.loads(body_of(protocol.response(4, {"a": 1}))) == {
        "matchtag": 4,
        "errnum": 0,
        "payload": {"a": 1},
    }
    err = json.loads(body_of(protocol.response_error(5, 22, 'bad "x"')))
    assert err == {"matchtag": 5, "errnum": 22, "errstr": 'bad "x"'}


def test_raw_payload_is_spliced_unchanged():
    raw = b'{"seq":1,"annotations":[[1,{"a":1.5e+16}]]}'
    frame = protocol.response_raw(9, raw)
    assert raw in frame
    assert protocol.parse_response(body_of(frame)) == (9, 0, None, json.loads(raw))


@pytest.mark.parametrize(
    "body, field, mt",
    [
        (b"\xff\xfe{}", "UTF-8", 0),
        # the matchtag came before the fault: the reply names the request
        (b'{"topic": "x", "matchtag": 1, "payload": {}', "JSON", 1),
        (b"", "JSON", 0),
        (b"[1, 2]", "object", 0),
        (b'{"topic": "x", "payload": {}}', "'matchtag' is missing", 0),
        (b'{"topic": "x", "matchtag": "1", "payload": {}}', "'matchtag'", 0),
        (b'{"topic": "x", "matchtag": true, "payload": {}}', "'matchtag'", 0),
        (b'{"topic": "x", "matchtag": -1, "payload": {}}', "'matchtag'", 0),
        (b'{"matchtag": 4, "payload": {}}', "'topic' is missing", 4),
        (b'{"topic": 5, "matchtag": 4, "payload": {}}', "'topic' must be", 4),
        (b'{"topic": "x", "matchtag": 4}', "'payload' is missing", 4),
        (b'{"topic": "x", "matchtag": 4, "payload": [1]}', "'payload' must be", 4),
        (b'{"topic": "x", "matchtag": 4, "payload": {"a": NaN}}', "JSON", 4),
        (b'{"topic": "x", "payload": {"a": NaN}, "matchtag": 4}', "JSON", 0),
        (b"[" * 100000 + b"]" * 100000, "not a JSON object", 0),
        (b'{"matchtag": 3, "x": ' + b"[" * 100000, "nesting depth exceeds 64", 3),
    ],
)
def test_malformed_requests_name_the_problem(body, field, mt):
    with pytest.raises(ProtocolError) as ei:
        protocol.parse_request(body)
    assert ei.value.errno == EPROTO
    assert field in str(ei.value)
    assert ei.value.matchtag == mt
    assert isinstance(ei.value, AnnotError)


def test_frame_reader_splits_and_keeps_partial():
    frames = [protocol.request("t", i, {"i": i}) for i in range(5)]
    stream = b"".join(frames)
    r = protocol.FrameReader()
    got = []
    for i in range(0, len(stream), 7):
        got += r.feed(stream[i : i + 7])
    assert [protocol.parse_request(b)[1] for b in got] == list(range(5))
    assert r.buf == bytearray()


def test_frame_reader_refuses_oversize_from_header_alone():
    r = protocol.FrameReader(limit=100)
    with pytest.raises(ProtocolError) as ei:
        r.feed(struct.pack(">I", 101))  # no body at all: decided from the header
    assert ei.value.errno == EMSGSIZE


def test_oversize_error_reply():
    err = json.loads(body_of(protocol.oversize_error(2000000, 1048576)))
    assert err["errnum"] == EMSGSIZE and err["matchtag"] == 0
    assert "2000000" in err["errstr"] and "1048576" in err["errstr"]


def test_dumps_keeps_lone_surrogates_as_escapes():
    out = protocol.dumps({"k": "\ud800"})
    assert json.loads(out) == {"k": "\ud800"}


def test_default_socket_path(monkeypatch):
    import os

    assert protocol.default_socket_path({"FLUX_ANNOT_SOCKET": "/x/s"}) == "/x/s"
    assert (
        protocol.default_socket_path({"XDG_RUNTIME_DIR": "/run/user/5"})
        == "/run/user/5/flux-annot/socket"
    )
    assert protocol.default_socket_path({}) == f"/tmp/flux-annot-{os.getuid()}/socket"


@given(
    st.lists(
        st.tuples(
            st.integers(0, 2**63 - 1),
            st.dictionaries(st.text(), st.one_of(st.integers(), st.text(), st.booleans())),
        ),
        max_size=20,
    ),
    st.integers(1, 50),
)
def test_any_chunking_gives_the_same_frames(items, chunk):
    stream = b"".join(protocol.request("job-manager.memo", mt, p) for mt, p in items)
    r = protocol.FrameReader()
    got = []
    for i in range(0, len(stream), chunk):
        got += r.feed(stream[i : i + chunk])
    assert [protocol.parse_request(b)[1:] for b in got] == [(mt, p) for mt, p in items]
