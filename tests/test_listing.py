"""Listing formats (docs/cli.md): fields, headings, padding, odd keys, and
robustness against anything one job's annotations may hold."""

import os
import pwd

import pytest

from flux_annot.views.listing import (
    DEFAULT_FORMAT,
    JSON_LIMIT,
    JobFormat,
    compact_json,
    parse_states,
    sort_jobs,
)

UID = os.getuid()
NAME = pwd.getpwuid(UID).pw_name


def job(id=1234, userid=UID, state="SCHED", annotations=None):
    return {"id": id, "userid": userid, "state": state, "annotations": annotations}


def fmt(f, j, **kw):
    return JobFormat(f, **kw).format(j)


def test_id_fields():
    j = job(id=58)
    assert fmt("{id}", j) == "ƒ21"
    assert fmt("{id.f58}", j) == "ƒ21"
    assert fmt("{id.dec}", j) == "58"
    assert fmt("{id.hex}", j) == "0x3a"
    assert fmt("{id.dothex}", j) == "0000.0000.0000.003a"
    assert fmt("{id.dec:>5}|{id:>6}|{id:d}", j) == "   58|   ƒ21|58"


def test_user_and_state_fields():
    j = job(state="RUN")
    assert fmt("{userid}|{username}|{state}|{state_single}", j) == f"{UID}|{NAME}|RUN|R"
    j = dict(job(state="INACTIVE"), exception="too big")
    assert fmt("{exception}|{exception.note:>8}|{exception:>2h}", j) + fmt("|{exception:>2h}", job()) == "too big| too big|too big| -"
    assert JobFormat("{exception.note}").header() == "EXCEPTION-NOTE"
    # a uid with no passwd entry prints as the number
    assert fmt("{username}", job(userid=4000000123)) == "4000000123"


def test_annotation_fields_and_shortcuts():
    ann = {"sched": {"t_estimate": 1700000000.5, "reason_pending": "no cores"}, "user": {"note": "hi"}}
    j = job(annotations=ann)
    assert fmt("{annotations}", j) == '{"sched":{"t_estimate":1700000000.5,"reason_pending":"no cores"},"user":{"note":"hi"}}'
    assert fmt("{annotations.sched.reason_pending}", j) == "no cores"
    assert fmt("{sched.reason_pending}", j) == "no cores"
    assert fmt("{user.note}", j) == "hi"
    assert fmt("{user}", j) == '{"note":"hi"}'
    assert fmt("{sched.t_estimate:.1f}", j) == "1700000000.5"
    assert fmt("{annotations}", job()) == ""


def test_missing_fields_print_empty_but_pad():
    j = job(annotations={"user": {"x": 1}})
    assert fmt("[{sched.t_estimate:>12}]", j) == "[            ]"
    assert fmt("[{sched.t_estimate:<6.1f}]", j) == "[      ]"
    assert fmt("[{user.x.y.z:^5}]", j) == "[     ]"
    assert fmt("[{annotations.nope:>3}]", job()) == "[   ]"
    assert fmt("[{sched.t_estimate:>4h}]", j) == "[   -]"  # flux's h suffix


@pytest.mark.parametrize("key", ["a-b", "1a", "class", "ünï", "12", "with space", "a[0]", "__class__", "-"])
def test_non_identifier_keys(key):
    j = job(annotations={"user": {key: "v", "other": 2}})
    assert fmt("{user." + key + "}|{user.other}", j) == "v|2"
    assert fmt("{annotations.user." + key + ":>3}", j) == "  v"


def test_array_index_step():
    j = job(annotations={"user": {"arr": [10, [20, 30]]}})
    assert fmt("{user.arr.0}|{user.arr.1.1}|{user.arr.9:>2}", j) == "10|30|"


def test_value_types():
    j = job(annotations={"user": {"t": True, "f": False, "n": 3, "x": 2.5, "s": "str", "a": [1, "b"], "o": {"k": None}}})
    assert fmt("{user.t} {user.f} {user.n:>3} {user.x} {user.s} {user.a} {user.o}", j) == 'true false   3 2.5 str [1,"b"] {"k":null}'


def test_wrong_types_under_numeric_specs_print_plain():
    j = job(annotations={"sched": {"t_estimate": "soon", "jobs_ahead": [1]}, "user": {"b": True}})
    assert fmt("[{sched.t_estimate:>8.1f}]", j) == "[    soon]"
    assert fmt("[{sched.t_estimate:08d}]", j) == "[    soon]"
    assert fmt("[{sched.jobs_ahead:+5d}]", j) == "[  [1]]"
    assert fmt("[{user.b:x}]", j) == "[true]"
    assert fmt("[{sched.t_estimate!d:%H:%M::>6}]", j) == "[  soon]"
    assert fmt("[{sched.t_estimate!F:>6}]", j) == "[  soon]"
    assert fmt("[{id:.2f}]", j)  # a job id under a float spec still prints


def test_time_conversions():
    j = job(annotations={"sched": {"t_estimate": 0, "dur": 90, "long": 3 * 86400}})
    assert fmt("{sched.dur!F}|{sched.dur!H}|{sched.long!F}", j) == "1.5m|0:01:30|3d"
    import datetime

    expect = datetime.datetime.fromtimestamp(0).strftime("%Y %H:%M")
    assert fmt("{sched.t_estimate!d:%Y %H:%M}", j) == expect
    assert fmt("[{sched.t_estimate!D:%Y::>4}]", j) == "[    ]"


def test_plus_suffix_marks_cut_values():
    j = job(annotations={"sched": {"reason_pending": "insufficient resources"}})
    assert fmt("[{sched.reason_pending:<10.10+}]", j) == "[insuffici+]"
    assert fmt("[{sched.reason_pending:<30.30+}]", j) == "[insufficient resources        ]"


def deep_memo(depth):
    root = cur = {}
    for _ in range(depth - 1):
        nxt = {}
        cur["a"] = nxt
        cur = nxt
    cur["leaf"] = 1
    return {"user": root}


def test_1000_deep_memo_does_not_break_listing():
    jobs = [
        job(id=1, annotations=deep_memo(1000)),
        job(id=2, annotations={"sched": {"reason_pending": "fine"}, "user": {"n": 1}}),
    ]
    f = JobFormat("{id.dec} {sched.reason_pending:<6} {user.n:>2} {annotations}")
    lines = [f.format(j) for j in jobs]
    assert lines[1] == '2 fine    1 {"sched":{"reason_pending":"fine"},"user":{"n":1}}'
    assert lines[0].startswith('1           {"user":{"a":{"a":')
    assert lines[0].endswith("…")
    assert len(lines[0]) <= 12 + JSON_LIMIT
    # a path straight down the tree also works
    path = ".".join(["user"] + ["a"] * 999 + ["leaf"])
    assert fmt("{" + path + "}", jobs[0]) == "1"


def test_compact_json_any_depth_bounded():
    deep = []
    for _ in range(100000):
        deep = [deep]
    text = compact_json(deep, limit=50)
    assert len(text) == 50 and text.startswith("[[[[") and text.endswith("…")
    assert compact_json({"a": [1, 2.5, None, True, "é"]}) == '{"a":[1,2.5,null,true,"é"]}'


def test_control_characters_escaped():
    j = job(annotations={"user": {"note": "line1\nline2\x1b[31m\x07\u2028", "k\n": 1}})
    out = fmt("{user.note}", j)
    assert "\n" not in out and "\x1b" not in out and "\x07" not in out
    assert out == "line1\\nline2\\x1b[31m\\x07\\u2028"
    assert "\n" not in fmt("{user}", j)


def test_malformed_job_dicts_do_not_raise():
    f = JobFormat(DEFAULT_FORMAT + " {id.dec} {userid} {state_single}")
    for j in [{}, {"id": "x"}, {"id": -5, "userid": "root"}, {"annotations": "str"}, {"annotations": [1]},
              {"state": "BOGUS"}, {"id": 2**70}]:
        assert isinstance(f.format(j), str)


def test_headings():
    f = JobFormat(
        "{id.f58:>12} {username:<8.8} {userid:>5} {state:<8} {state_single} {sched.t_estimate:>12} "
        "{sched.reason_pending} {sched.resource_summary} {annotations.sched.t_estimate} {sched.jobs_ahead} "
        "{user.a-b} {annotations.workflow.step} {annotations} {sched} {user} {id.dec:.2f} {exception}"
    )
    assert f.header().split() == [
        "JOBID", "USER", "UID", "STATE", "ST", "T_ESTIMATE", "REASON", "RESOURCES", "T_ESTIMATE",
        "AHEAD", "USER.A-B", "WORKFLOW.STEP", "ANNOTATIONS", "SCHED", "MEMO", "JOBID", "EXCEPTION-NOTE",
    ]
    h = JobFormat("{id.f58:>12}|{username:<8.8}|{sched.t_estimate:>12.1f}|{userid:05d}").header()
    assert h == "       JOBID|USER    |  T_ESTIMATE|  UID"


def test_default_format_lines_up():
    f = JobFormat(DEFAULT_FORMAT)
    ann = {"sched": {"t_estimate": 1700000000, "reason_pending": "insufficient resources", "jobs_ahead": 3},
           "user": {"note": "ok"}}
    header = f.header()
    line = f.format(job(annotations=ann))
    for word in ("JOBID", "USER", "STATE", "AHEAD", "T_ESTIMATE", "REASON", "RESOURCES", "MEMO"):
        assert word in header
    # every column starts where its heading starts
    assert line.index("SCHED") == header.index("STATE")
    assert line.index("insufficient") == header.index("REASON")
    assert line.index('{"note":"ok"}') == header.index("MEMO")


@pytest.mark.parametrize(
    "bad,why",
    [
        ("{foo}", "unknown format field"),
        ("{id.nope}", "unknown format field"),
        ("{username.x}", "unknown format field"),
        ("{", "bad format string"),
        ("}", "bad format string"),
        ("{}", "need a name"),
        ("{0}", "need a name"),
        ("{id!z}", "unknown conversion"),
        ("{user..x}", "empty key"),
        ("{id:{w}}", "nested"),
    ],
)
def test_bad_formats_rejected_with_sentence(bad, why):
    with pytest.raises(ValueError, match=why):
        JobFormat(bad)


def test_extra_fields():
    f = JobFormat("{seq:>3} {event} {id.dec}", extra_fields=("seq", "event"))
    assert f.header() == "SEQ EVENT JOBID"
    assert f.format(job(id=7), {"seq": 5, "event": "RUN"}) == "  5 RUN 7"
    with pytest.raises(ValueError):
        JobFormat("{seq}")


def test_parse_states():
    assert parse_states("S,r") == ["SCHED", "RUN"]
    assert parse_states("sched, INACTIVE") == ["SCHED", "INACTIVE"]
    assert parse_states("running") == ["RUN", "CLEANUP"]
    assert parse_states("pending,S") == ["NEW", "DEPEND", "PRIORITY", "SCHED"]
    for bad in ["", "X", "RUNNING2", ","]:
        with pytest.raises(ValueError):
            parse_states(bad)


def test_sort_order_like_flux_jobs():
    jobs = [job(1, state="INACTIVE"), job(5, state="SCHED"), job(2, state="RUN"), job(3, state="SCHED"),
            job(4, state="RUN"), job(6, state="INACTIVE")]
    assert [j["id"] for j in sort_jobs(jobs)] == [3, 5, 4, 2, 6, 1]
