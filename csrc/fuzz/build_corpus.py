#!/usr/bin/env python3
"""Build the seed corpora of the fuzz targets (stdlib only).

    build_corpus.py --repo ROOT --out DIR

writes DIR/canonical/, DIR/merge/, DIR/frames/ and DIR/replies/, one file per seed, named by the
SHA-1 of its bytes (so rebuilding is idempotent). Sources:

- every case of JSONTestSuite's test_parsing/ (tests/data/jsontestsuite/):
  valid, invalid and implementation-defined JSON;
- the standard workload (bench/workload.py 200 2): each patch
  for the canonical target, each job's patch sequence for the merge target;
- a few hand-written edge cases (§2 examples, numbers, escapes, nesting);
- the crash inputs kept in tests/fuzz_regressions/ (canonical-* and
  merge-* files), so a fixed crash is re-checked by every fuzz run.

Merge seeds use the layout of fuzz_merge.c: a selector byte, then the
start tree and the patches separated by NUL bytes. Frame seeds use the
layout of fuzz_frames.c: a selector byte, then request bodies separated by
NUL bytes; they hold the hostile requests of tests/test_server_frames.py
(100,000-deep arrays and objects, unclosed brackets, a guest's nesting
1,000 against its limit 8, every invalid UTF-8 form in a key and a value,
a matchtag after the fault) beside well-formed requests of every shape.
Reply seeds use the layout of fuzz_replies.c: a selector byte, then reply
bodies (each also a patch for the encoder) separated by NUL bytes: the
hostile replies of tests/test_client_hostile.py beside the service's
replies of every kind, and patches as users write them.
"""

import argparse
import hashlib
import os
import subprocess
import sys
from collections import OrderedDict

# Selector bits of fuzz_merge.c.
STRICT = 0x01
DEPTH_64 = 0x06
NS_SCHED = 0x20
NS_USER = 0x40
ID_ZERO = 0x80

EDGE_VALUES = [
    b"0", b"-0", b"-0.0", b"0.0", b"1e308", b"1.7976931348623157e308", b"5e-324",
    b"2.2250738585072014e-308", b"2.225073858507201e-308", b"0.30000000000000004",
    b"9223372036854775807", b"-9223372036854775808", b"9223372036854775808",
    b"-9223372036854775809", b"18446744073709551616", b"1e400", b"-1e400",
    b"1e16", b"1e-05", b"123456789012345678901234567890", b"1E+2", b"1.5e-7",
    b'"\\u0000\\u001f\\"\\\\\\/\\b\\f\\n\\r\\t"', b'"\\ud83d\\ude00"', b'"\\ud800"',
    b'"\\udc00\\ud800"', b'"\xc3\xa9\xe2\x82\xac\xf0\x9f\x98\x80"', b'"\xed\xa0\x80"',
    b'"\xc0\x80"', b'"\xf4\x90\x80\x80"', b'"\x7f"', b"true", b"false", b"null",
    b"[]", b"{}", b"[1,[2,[3]]]", b'{"a":1,"a":2,"b":3}',
]

MERGE_CASES = [
    # (selector, [tree, patch, patch, ...])
    (DEPTH_64 | STRICT, [b'{"a":"foo"}', b'{"a":{"bb":{"ccc":null}}}']),
    (DEPTH_64 | STRICT, [b"", b'{"a":{"b":1}}', b'{"a":{"b":null}}', b'{"a":null}']),
    (DEPTH_64 | STRICT, [b'{"a":[1,2],"b":{"c":1}}', b'{"a":[3]}', b'{"b":{"c":{}}}']),
    (DEPTH_64 | STRICT, [b'{"x":1,"y":2}', b'{"x":3,"x":4,"z":{"q":null}}']),
    (DEPTH_64 | STRICT, [b"", b'{"a.b":1}', b'{"":1}', b'{"a":1}']),
    (DEPTH_64, [b"", b'{"a.b":1}', b'{"":1}']),
    (0x02 | STRICT, [b"", b'{"a":{"b":{"c":1}}}', b'{"a":[[[]]]}']),
    (DEPTH_64 | 0x08 | 0x10, [b"", b'{"abcdefghi":1}', b'{"a":1,"b":2,"c":3,"d":4,"e":5}']),
    (DEPTH_64 | STRICT | NS_USER,
     [b'{"user":{"n":1},"sched":{"t":2}}', b'{"user":{"n":null}}', b'{"sched":null}']),
    (DEPTH_64 | STRICT | ID_ZERO, [b'{"a":1}', b'{"a":null}', b'{"a":2}']),
    (DEPTH_64 | STRICT, [b"", b"[1]", b"null", b'"s"', b"{", b'{"a":1} x']),
    (DEPTH_64 | STRICT, [b'{"n":1}', b'{"n":1.0}', b'{"n":-0}', b'{"n":-0.0}', b'{"n":1e400}']),
]


# Selector bits of fuzz_frames.c.
F_DEPTH8 = 0x01
F_GUEST_BOUNDS = 0x02
F_SMALL_MESSAGE = 0x04
F_CAP8 = 0x18
F_RAW_TAIL = 0x20

BAD_UTF8 = [b"\xff\xfe", b"\xe2\x82", b"\xc0\xaf", b"\xed\xa0\x80", b"caf\xe9"]


def request(value, mt=5, field=b"annotations", topic=b"job-manager.annotate", extra=b""):
    return (b'{"topic":"%s","matchtag":%d,"payload":{"id":1,"%s":%s,"volatile":true%s}}'
            % (topic, mt, field, value, extra))


def frame_seeds():
    deep = 100_000
    good = [
        request(b'{"sched":{"t_estimate":1700000000.5,"jobs_ahead":3}}'),
        request(b'{"user":{"n":[1,2]},"x":null}', extra=b',"volatile":false'),
        request(b'{"k":{"a":"\\u00e9"}}', field=b"memo", topic=b"job-manager.memo"),
        b'{"topic":"job-manager.stats","matchtag":1,"payload":{}}',
        b' { "payload" : { "states" : [ "R" ] } , "topic" : "job-manager.\\u006cist" ,'
        b' "matchtag" : 2 } ',
        b'{"topic":"job-manager.alloc-response","matchtag":3,"payload":{"id":1,"type":1,'
        b'"annotations":{"sched":{"reason_pending":"x"}}}}',
    ]
    hostile = [
        request(b'{"user":{"a":' + b"[" * deep + b"]" * deep + b"}}"),
        request(b'{"user":' + b'{"a":' * deep + b"1" + b"}" * deep + b"}"),
        request(b'{"user":{"a":' + b"[" * deep),
        request(b'{"user":{"a":' + b"[" * 1000 + b"]" * 1000 + b"}}"),
        b'{"topic":"job-manager.annotate","payload":{"id":1,"annotations":'
        + b"[" * 1000 + b"]" * 1000 + b'},"matchtag":9}',
        b'{"matchtag":4,"x":' + b"{" * 1000,
        b"[" * 1000 + b"]" * 1000,
        b"\xc3\x28",
        b"",
        request(b'{"user":{"%s":1}}' % (b"k" * 300)),
        request(b'{"user":{"a":1e400}}'),
        request(b'{"user":{"a.b":1}}'),
        request(b'{"user":{"a":"\\ud800"}}'),
    ]
    for bad in BAD_UTF8:
        hostile.append(request(b'{"user":{"%s":1}}' % bad))
        hostile.append(request(b'{"user":{"k":"%s"}}' % bad))
    seeds = []
    for sel in (0, F_DEPTH8, F_GUEST_BOUNDS | F_DEPTH8, F_CAP8, F_SMALL_MESSAGE):
        seeds.append(bytes([sel]) + b"\0".join(good))
        for h in hostile:
            seeds.append(bytes([sel | F_CAP8]) + good[0] + b"\0" + h + b"\0" + good[1])
    seeds.append(bytes([F_RAW_TAIL | F_CAP8]) + good[0] + b"\0" + b"\x00\x00\x01")
    return seeds


# Selector bits of fuzz_replies.c.
R_DEPTH64 = 0x02
R_DEPTH512 = 0x03
R_CAP8 = 0x0C
R_RAW_TAIL = 0x10


def reply_seeds():
    deep = 100_000
    good = [
        b'{"matchtag":7,"errnum":0,"payload":{}}',
        b'{"matchtag":8,"errnum":0,"payload":{"id":1,"userid":1000,"state":"SCHED",'
        b'"annotations":{"sched":{"t_estimate":1700000000.5,"reason_pending":"x"}}}}',
        b'{"matchtag":9,"errnum":22,"errstr":"payload field \'annotations\': nesting depth '
        b'exceeds 8"}',
        b'{"matchtag":0,"errnum":90,"errstr":"message of 2000000 bytes exceeds the limit"}',
        b'{"matchtag":1,"errnum":0,"payload":{"seq":4,"annotations":[[1,{"a":null}]],'
        b'"transitions":[[1,"RUN",1700000000.25]]}}',
        b' { "payload" : { "jobs" : [ ] } , "matchtag" : 3 , "errstr" : null } ',
        b'{"match\u0074ag":2,"errnum":61,"errstr":"caf\u00e9 \ud83d\ude00"}',
        b'{"sched":{"t":1}}',
        b'{"user":{"n":[1,2.5,"x",true,null]}}',
    ]
    hostile = [
        b'{"matchtag":1,"errnum":0,"payload":{"a":' + b"[" * deep + b"]" * deep + b"}}",
        b'{"matchtag":1,"errnum":0,"payload":' + b'{"a":' * deep,
        b'{"matchtag":1,"errnum":0,"payload":{"a":"caf\xe9"}}',
        b"{matchtag",
        b"[1,2]",
        b'{"matchtag":1,"errnum":0,"payload":[1]}',
        b'{"matchtag":1,"errnum":"22"}',
        b'{"matchtag":1,"errnum":-5,"errstr":"x"}',
        b'{"matchtag":1,"errnum":22,"errstr":7}',
        b'{"errnum":0,"payload":{}}',
        b'{"matchtag":1,"errnum":0,"payload":{"jobs":{"a":1}}}',
        b'{"matchtag":18446744073709551616}',
        b'{"matchtag":1,"x":1e400}',
        b"",
    ]
    seeds = []
    for sel in (0, R_DEPTH64, R_DEPTH512, R_CAP8 | R_DEPTH64, R_RAW_TAIL | R_DEPTH512):
        seeds.append(bytes([sel]) + b"\0".join(good))
        for h in hostile:
            seeds.append(bytes([sel | R_CAP8]) + good[0] + b"\0" + h + b"\0" + good[1])
    return seeds


def workload_lines(repo):
    script = os.path.join(repo, "bench", "workload.py")
    out = subprocess.run([sys.executable, script, "200", "2"], check=True,
                         capture_output=True).stdout
    lines = []
    for line in out.splitlines():
        jobid, _, patch = line.partition(b" ")
        lines.append((int(jobid), patch))
    return lines


def suite_cases(repo):
    d = os.path.join(repo, "tests", "data", "jsontestsuite", "test_parsing")
    cases = []
    for name in sorted(os.listdir(d)):
        with open(os.path.join(d, name), "rb") as f:
            cases.append((name, f.read()))
    return cases


def regressions(repo, target):
    d = os.path.join(repo, "tests", "fuzz_regressions")
    out = []
    if os.path.isdir(d):
        for name in sorted(os.listdir(d)):
            if name.startswith(target + "-"):
                with open(os.path.join(d, name), "rb") as f:
                    out.append(f.read())
    return out


def write_all(dirpath, seeds):
    os.makedirs(dirpath, exist_ok=True)
    n = 0
    for data in seeds:
        path = os.path.join(dirpath, hashlib.sha1(data).hexdigest())
        if not os.path.exists(path):
            with open(path, "wb") as f:
                f.write(data)
        n += 1
    return n


def merge_seed(selector, segments):
    return bytes([selector]) + b"\0".join(segments)


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repo", required=True, help="the repository root")
    ap.add_argument("--out", required=True, help="where to write the corpora")
    args = ap.parse_args()

    suite = suite_cases(args.repo)
    work = workload_lines(args.repo)

    canonical = [data for _, data in suite]
    canonical += list(OrderedDict.fromkeys(p for _, p in work))
    canonical += EDGE_VALUES
    canonical += [b"[" * 100 + b"]" * 100, b'{"a":' * 50 + b"1" + b"}" * 50]
    canonical += regressions(args.repo, "canonical")

    merge = [merge_seed(sel, segs) for sel, segs in MERGE_CASES]
    by_job = OrderedDict()
    for jobid, patch in work:
        by_job.setdefault(jobid, []).append(patch)
    for k, (jobid, patches) in enumerate(by_job.items()):
        if k % 4:  # a quarter of the jobs is plenty; they are alike
            continue
        sel = DEPTH_64 | STRICT | (NS_SCHED if k % 8 else NS_USER)
        merge.append(merge_seed(sel, [b""] + patches[:8]))
    tree = b'{"sched":{"t_estimate":1700000000.5,"jobs_ahead":3},"user":{"n":[1,2]}}'
    for name, data in suite:
        if name.startswith("y_") and data.lstrip().startswith(b"{"):
            merge.append(merge_seed(DEPTH_64, [tree, data]))
    for v in EDGE_VALUES:
        merge.append(merge_seed(DEPTH_64 | STRICT, [tree, b'{"sched":{"v":' + v + b"}}"]))
    merge += regressions(args.repo, "merge")

    frames = frame_seeds() + regressions(args.repo, "frames")
    replies = reply_seeds() + regressions(args.repo, "replies")

    nc = write_all(os.path.join(args.out, "canonical"), canonical)
    nm = write_all(os.path.join(args.out, "merge"), merge)
    nf = write_all(os.path.join(args.out, "frames"), frames)
    nr = write_all(os.path.join(args.out, "replies"), replies)
    print(f"build_corpus: {nc} canonical seeds, {nm} merge seeds, {nf} frame seeds, "
          f"{nr} reply seeds in {args.out}")


if __name__ == "__main__":
    main()
