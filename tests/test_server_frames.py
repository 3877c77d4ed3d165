"""Hostile request frames over a raw socket, the way a new user would try them.

Each case is sent to a real server; the reply must carry the errno the
protocol names (docs/protocol.md, "Error replies and matchtags"), the
request's matchtag whenever its `matchtag` member came before the fault,
and a sentence naming the limit. Nothing may change, and the same
connection must go on answering.
"""

import errno
import os
import struct

import pytest

from flux_annot.wire import protocol
from serverproc import NOBODY, Raw, ServerProc, is_root, run_as

ME = os.getuid()
DEEP = 100_000
START = {"user": {"note": "kept"}, "workflow": {"step": 1}}


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    s = ServerProc(store=tmp_path_factory.mktemp("frames") / "annot.db").start()
    raw = Raw(s.path)
    raw.send("job-manager.submit", 1, {"id": 1, "userid": ME})
    raw.send("job-manager.submit", 2, {"id": 2, "userid": NOBODY})
    raw.send("job-manager.annotate", 3, {"id": 1, "annotations": START})
    assert [raw.recv()["errnum"] for _ in range(3)] == [0, 0, 0]
    raw.close()
    yield s
    s.cleanup()


def annotate_body(value, mt=7, field="annotations", topic="job-manager.annotate"):
    """A request body whose annotations (or memo) value is the raw bytes `value`."""
    return (
        b'{"topic":"%s","matchtag":%d,"payload":{"id":1,"%s":%s,"volatile":true}}'
        % (topic.encode(), mt, field.encode(), value)
    )


def still_answers(raw, server):
    """The connection is usable and job 1 is as it was."""
    raw.send("job-manager.getattr", 99, {"id": 1})
    r = raw.recv()
    assert r["matchtag"] == 99 and r["errnum"] == 0, r
    assert r["payload"]["annotations"] == START


def reply_to(server, body):
    raw = Raw(server.path)
    raw.send_body(body)
    r = raw.recv()
    assert r is not None, "the server closed the connection"
    still_answers(raw, server)
    raw.close()
    return r


DEPTH_CASES = {
    "arrays": b'{"user":{"a":' + b"[" * DEEP + b"]" * DEEP + b"}}",
    "objects": b'{"user":' + b'{"a":' * DEEP + b"1" + b"}" * DEEP + b"}",
    "unclosed brackets": b'{"user":{"a":' + b"[" * DEEP,
    "unclosed objects": b'{"user":' + b'{"a":' * DEEP,
}


@pytest.mark.parametrize("case", list(DEPTH_CASES))
def test_deep_annotations_are_einval_naming_the_limit(server, case):
    r = reply_to(server, annotate_body(DEPTH_CASES[case], mt=41))
    assert r["errnum"] == errno.EINVAL, r
    assert r["matchtag"] == 41
    assert "nesting depth exceeds 64" in r["errstr"]
    assert "annotations" in r["errstr"]


def test_deep_memo_and_deep_other_fields_are_einval_too(server):
    r = reply_to(server, annotate_body(b"[" * DEEP, mt=42, field="memo", topic="job-manager.memo"))
    assert (r["errnum"], r["matchtag"]) == (errno.EINVAL, 42), r
    assert "nesting depth exceeds 64" in r["errstr"]
    body = b'{"topic":"job-manager.list","matchtag":43,"payload":{"states":' + b"[" * DEEP + b"}}"
    r = reply_to(server, body)
    assert (r["errnum"], r["matchtag"]) == (errno.EINVAL, 43), r
    assert "nesting depth exceeds 64" in r["errstr"]


def test_a_deep_envelope_member_is_eproto_with_the_matchtag(server):
    body = b'{"matchtag":44,"extra":' + b'{"a":' * DEEP
    r = reply_to(server, body)
    assert (r["errnum"], r["matchtag"]) == (errno.EPROTO, 44), r
    assert "nesting depth exceeds 64" in r["errstr"]


def test_a_matchtag_after_the_fault_cannot_be_read(server):
    body = (
        b'{"topic":"job-manager.annotate","payload":{"id":1,"annotations":'
        + b"[" * DEEP
        + b"]" * DEEP
        + b'},"matchtag":45}'
    )
    r = reply_to(server, body)
    assert (r["errnum"], r["matchtag"]) == (errno.EINVAL, 0), r
    assert "nesting depth exceeds 64" in r["errstr"]


BAD_UTF8 = {
    "ff fe": b"\xff\xfe",
    "truncated": b"\xe2\x82",
    "overlong /": b"\xc0\xaf",
    "encoded surrogate": b"\xed\xa0\x80",
    "latin-1": b"caf\xe9",
}


@pytest.mark.parametrize("form", list(BAD_UTF8))
@pytest.mark.parametrize("where", ["key", "value"])
def test_invalid_utf8_is_einval_with_the_matchtag(server, form, where):
    bad = BAD_UTF8[form]
    value = b'{"user":{"%s":1}}' % bad if where == "key" else b'{"user":{"k":"%s"}}' % bad
    r = reply_to(server, annotate_body(value, mt=50))
    assert (r["errnum"], r["matchtag"]) == (errno.EINVAL, 50), r
    assert "invalid UTF-8" in r["errstr"] and "annotations" in r["errstr"]


def test_a_lone_surrogate_escape_is_einval(server):
    r = reply_to(server, annotate_body(b'{"user":{"k":"\\ud800"}}', mt=51))
    assert (r["errnum"], r["matchtag"]) == (errno.EINVAL, 51), r
    assert "lone surrogate" in r["errstr"]


def test_key_and_width_limits_are_einval(server):
    r = reply_to(server, annotate_body(b'{"user":{"%s":1}}' % (b"k" * 257), mt=52))
    assert (r["errnum"], r["matchtag"]) == (errno.EINVAL, 52), r
    assert "key exceeds 256 bytes" in r["errstr"]
    wide = b"{" + b",".join(b'"k%d":1' % i for i in range(1025)) + b"}"
    r = reply_to(server, annotate_body(b'{"user":%s}' % wide, mt=53))
    assert (r["errnum"], r["matchtag"]) == (errno.EINVAL, 53), r
    assert "more than 1024 keys" in r["errstr"]


def test_malformed_json_is_eproto_and_keeps_the_matchtag_read_before(server):
    r = reply_to(server, annotate_body(b'{"user":{"a":1,}}', mt=54))
    assert (r["errnum"], r["matchtag"]) == (errno.EPROTO, 54), r
    assert "JSON" in r["errstr"]


def test_pipelined_requests_each_get_their_own_reply(server):
    raw = Raw(server.path)
    good = annotate_body(b'{"workflow":{"step":1}}', mt=61)
    bad = annotate_body(DEPTH_CASES["arrays"], mt=62)
    utf = annotate_body(b'{"user":{"k":"caf\xe9"}}', mt=63)
    late = b'{"topic":"job-manager.stats","payload":{"x":' + b"[" * 200 + b'},"matchtag":64}'
    frames = [good, bad, utf, late, good.replace(b":61,", b":65,")]
    raw.sock.sendall(b"".join(struct.pack(">I", len(f)) + f for f in frames))
    got = {}
    for _ in frames:
        r = raw.recv()
        got[r["matchtag"]] = r["errnum"]
    assert got == {61: 0, 62: errno.EINVAL, 63: errno.EINVAL, 0: errno.EINVAL, 65: 0}
    still_answers(raw, server)
    raw.close()


@pytest.mark.skipif(not is_root(), reason="dropping to another uid (nobody) needs root")
def test_guest_nesting_1000_against_its_limit_8(server):
    path = server.path

    def guest():
        raw = Raw(path)
        out = []
        for mt, value, field in [
            (71, b'{"user":{"a":' + b"[" * 1000 + b"]" * 1000 + b"}}", "annotations"),
            (72, b'{"a":' + b"[" * 1000 + b"]" * 1000 + b"}", "memo"),
            (73, b'{"user":{"a":[[[[[[1]]]]]]}}', "annotations"),  # depth 8: allowed
        ]:
            topic = "job-manager.memo" if field == "memo" else "job-manager.annotate"
            body = annotate_body(value, mt=mt, field=field, topic=topic).replace(
                b'"id":1', b'"id":2'
            )
            raw.send_body(body)
            r = raw.recv()
            out.append([r["matchtag"], r["errnum"], r.get("errstr")])
        raw.send("job-manager.getattr", 74, {"id": 2})
        out.append(raw.recv()["payload"]["annotations"])
        # longer than guest_payload_bytes (4096): refused by its length alone,
        # before anything is parsed (its depth, 1000 > 8, is never seen)
        big = b'{"k":"' + b"x" * 5000 + b'","bad":' + b"[" * 1000 + b"]" * 1000 + b"}"
        for mt, topic in [(75, "job-manager.memo"), (76, "job-manager.alloc-response")]:
            body = annotate_body(big, mt=mt, field="memo", topic=topic).replace(
                b'"id":1', b'"id":2'
            )
            raw.send_body(body)
            r = raw.recv()
            out.append([r["matchtag"], r["errnum"], r.get("errstr")])
        raw.close()
        return out

    r = run_as(NOBODY, guest)
    assert "value" in r, r
    deep_a, deep_m, ok, tree, big, big_other = r["value"]
    assert deep_a[:2] == [71, errno.EINVAL] and "nesting depth exceeds 8" in deep_a[2]
    assert deep_m[:2] == [72, errno.EINVAL] and "nesting depth exceeds 8" in deep_m[2]
    assert ok[:2] == [73, 0], ok
    assert tree == {"user": {"a": [[[[[[1]]]]]]}}
    assert big[:2] == [75, errno.E2BIG] and "4096 bytes" in big[2]
    assert big_other[:2] == [76, errno.E2BIG], big_other


def test_parse_request_reports_payload_faults_as_einval_with_the_matchtag():
    body = annotate_body(DEPTH_CASES["objects"], mt=81)
    with pytest.raises(protocol.ProtocolError) as ei:
        protocol.parse_request(body)
    assert (ei.value.errno, ei.value.matchtag) == (errno.EINVAL, 81)
    topic, mt, payload = protocol.parse_request(annotate_body(b'{"a":{"b":[1]}}', mt=82))
    assert (topic, mt, payload["annotations"]) == ("job-manager.annotate", 82, {"a": {"b": [1]}})


def test_pipelined_annotates_each_checked_against_their_own_namespaces(server):
    raw = Raw(server.path)
    values = [
        (91, b'{"workflow":{"step":1}}', 0),
        (92, b'{"workflow":{"step":1}}', 0),
        (93, b'{"sched":{"t":1}}', errno.EPERM),  # reserved for the scheduler
        (94, b'{"workflow":{"step":1}}', 0),
        (95, b"{}", 0),
        (96, b'{"workflow":{"step":1},"sched":null}', errno.EPERM),
        (97, b'{"workflow":1}', errno.EINVAL),  # a namespace must be an object
        (98, b'{"workflow":{"step":1}}', 0),
    ]
    raw.sock.sendall(
        b"".join(protocol.frame(annotate_body(v, mt=mt)) for mt, v, _ in values)
    )
    got = {}
    for _ in values:
        r = raw.recv()
        got[r["matchtag"]] = r["errnum"]
    assert got == {mt: e for mt, _, e in values}
    still_answers(raw, server)
    raw.close()


@pytest.mark.skipif(not is_root(), reason="dropping to another uid (nobody) needs root")
def test_a_guest_flooding_refused_frames_still_spends_its_rate(tmp_path):
    s = ServerProc(store=tmp_path / "rate.db").start()
    try:
        raw = Raw(s.path)
        raw.send("job-manager.submit", 1, {"id": 2, "userid": NOBODY})
        assert raw.recv()["errnum"] == 0
        raw.close()
        deep = annotate_body(b'{"user":{"a":' + b"[" * 20 + b"]" * 20 + b"}}").replace(
            b'"id":1', b'"id":2'
        )
        path = s.path

        def guest():
            g = Raw(path)
            n = 450  # past the burst of 400
            g.sock.sendall(b"".join(protocol.frame(deep) for _ in range(n)))
            return sorted({g.recv()["errnum"] for _ in range(n)})

        r = run_as(NOBODY, guest)
        assert r.get("value") == [errno.EAGAIN, errno.EINVAL], r
    finally:
        s.cleanup()


def test_pipelined_alloc_responses_of_the_scheduler(tmp_path):
    s = ServerProc(store=tmp_path / "alloc.db").start()
    try:
        raw = Raw(s.path)
        for mt, jobid in [(1, 1), (2, 2)]:
            raw.send("job-manager.submit", mt, {"id": jobid, "userid": ME})
        raw.send("job-manager.state", 3, {"id": 2, "state": "INACTIVE"})
        assert [raw.recv()["errnum"] for _ in range(3)] == [0, 0, 0]
        alloc = b'{"topic":"job-manager.alloc-response","matchtag":%d,"payload":%s}'
        reqs = [
            (11, b'{"id":1,"type":1,"annotations":{"sched":{"t":1}}}', 0, {}),
            (12, b'{"annotations":{"sched":{"t":2,"q":null}},"type":1,"id":1}', 0, {}),
            (13, b'{"id":2,"type":1,"annotations":{"sched":{"t":3}}}', 0, {"ignored": True}),
            (14, b'{"id":1,"type":1,"annotations":{"sched":7}}', errno.EPROTO, None),
            (15, b'{"id":1,"type":1,"annotations":{"sched":[' + b"[" * 100 + b"]}}", errno.EINVAL,
             None),
            (16, b'{"id":1,"type":1,"annotations":{"sched":{"t":4}},"note":"x"}', 0, {}),
        ]
        raw.sock.sendall(b"".join(protocol.frame(alloc % (mt, p)) for mt, p, _, _ in reqs))
        got = {}
        for _ in reqs:
            r = raw.recv()
            got[r["matchtag"]] = (r["errnum"], r.get("payload"))
        assert got == {mt: (e, p) for mt, _, e, p in reqs}
        raw.send("job-manager.getattr", 20, {"id": 1})
        assert raw.recv()["payload"]["annotations"] == {"sched": {"t": 4}}
        raw.close()
    finally:
        s.cleanup()
