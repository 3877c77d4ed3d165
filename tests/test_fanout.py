"""Fan-out (docs/events.md): every subscriber's stream is what encoding its
view on its own gives, and no guest ever reads another user's private
namespaces, with many guests on mixed batches.

The views are spliced from a few shared encodings (flux_annot/service/fanout.py).
`reference_annotations` below is the per-subscriber encoding the hub used
before (one C pass with per-job flags for each view): every live payload
is compared with it, byte for byte, while the C table still holds the
batch's pre-images.
"""

import json
import os

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import test_events_delta_property as delta_cases
from serverproc import Raw, ServerProc, is_root
from test_events_delta_property import rebuild

from flux_annot import AnnotationService, Client, Cred, sched
from flux_annot.errors import AnnotError
from flux_annot.service.events import Pieces

OWNER = 1000
GUESTS = tuple(3000 + i for i in range(8))
OTHERS = (2001, 2002)  # users that own jobs but never subscribe
USERS = GUESTS + OTHERS
IDS = tuple(range(1, 17))

# "sched" readable by all (the default: the public view keeps listed
# namespaces), or every unnamed namespace readable by all except "user"
# and "secret" (the public view drops listed namespaces).
CONFIGS = {
    "keep": {"namespace": {"pub": {"read": ["all"]}}},
    "drop": {"namespace": {"default": {"read": ["all"]},
                           "secret": {"write": ["owner"], "read": ["owner"]}}},
}
UNLIMITED = {"limits": {"guest_rate": 1e9, "guest_burst": 1 << 30,
                        "guest_user_total_bytes": 1 << 30}}


def owner_of(jobid):
    return USERS[jobid % len(USERS)]


def reference_annotations(hub, ids, view, delta):
    """The annotations array of `view` encoded alone, per-job flags: the
    hub's encoding before the fan-out was shared (the old `_encode_view`)."""
    table, jobs = hub.table, hub.jobs
    kind = view[0]
    if kind == "full":
        return table.batch_encode(delta=delta)
    flags = bytes([1 if jobs[i].userid == view[1] else 0 for i in ids])
    if kind == "guest":
        return table.batch_encode(flags, hub._view_ns, hub._view_exclude, delta=delta)
    if kind == "user":
        return table.batch_encode(flags, (), False, delta=delta)
    data = table.batch_encode(b"\0" * len(ids), hub._view_ns, hub._view_exclude, delta=delta)
    return json.dumps([e for e in json.loads(data) if jobs[e[0]].userid == view[1]],
                      separators=(",", ":"), ensure_ascii=False).encode()


class Checked:
    """Wraps the hub's payload step: each subscription's `annotations`
    bytes must equal the reference encoding of its view."""

    def __init__(self, hub):
        self.hub = hub
        self.batches = 0
        self.spliced = 0  # payloads of a guest with own jobs in the batch
        inner = hub._payloads

        def payloads(seq, ids, transitions, owner):
            out = inner(seq, ids, transitions, owner)
            for sub, payload in out.items():
                if isinstance(payload, Pieces):  # a spliced view, joined into its frame
                    joined = payload.join()
                    assert len(payload) == len(joined)  # the frame's length header
                    payload = joined
                topics, view, delta = sub.key
                if "job-annotations" not in topics:
                    continue
                want = reference_annotations(hub, ids, view, delta)
                got = json.loads(payload).get("annotations") if payload else None
                assert (got if got is not None else []) == json.loads(want), (view, delta)
                if want != b"[]":
                    # byte for byte: the spliced array is the one in the payload
                    assert b'"annotations":' + want in payload, (view, delta, payload, want)
                if view[0] == "guest" and any(hub.jobs[i].userid == view[1] for i in ids):
                    self.spliced += 1
            self.batches += 1
            return out

        hub._payloads = payloads


def patches(keys):
    leaf = st.one_of(st.none(), st.integers(-3, 3), st.text("xy", max_size=2))
    value = st.recursive(leaf, lambda inner: st.dictionaries(st.sampled_from("abc"), inner,
                                                             max_size=2), max_leaves=3)
    return st.dictionaries(st.sampled_from("abc"), value, min_size=1, max_size=2)


op = st.one_of(
    st.tuples(st.just("sched"), st.sampled_from(IDS), patches("abc")),
    st.tuples(st.just("memo"), st.sampled_from(IDS), patches("abc"), st.booleans()),
    st.tuples(st.just("ns"), st.sampled_from(IDS), st.sampled_from(["site", "pub", "secret"]),
              patches("abc"), st.booleans()),
    st.tuples(st.just("success"), st.sampled_from(IDS)),
    st.tuples(st.just("deny"), st.sampled_from(IDS)),
    st.tuples(st.just("state"), st.sampled_from(IDS), st.sampled_from(["CLEANUP", "INACTIVE"])),
    st.tuples(st.just("flush")),
)


def apply(svc, o):
    """The ops of test_events_delta_property, with memos by each job's own
    user and notes in public and private namespaces."""
    try:
        if o[0] == "memo":  # the job's own user: the `user` namespace
            svc.memo(Cred(owner_of(o[1])), o[1], o[2], volatile=o[3])
        elif o[0] == "ns":
            svc.annotate(Cred.owner_of(svc), o[1], {o[2]: o[3]}, volatile=o[4])
        else:
            delta_cases.apply(svc, o)
    except AnnotError:
        pass


def private_seen(svc, uid, items):
    """Namespaces of other users' jobs a guest's stream showed that the
    public view does not (must be none)."""
    pol = svc.policy
    leaks = []
    for b in items:
        entries = ([(j["id"], j["annotations"]) for j in b["jobs"]] if b.get("snapshot")
                   else b.get("annotations", []))
        for jobid, tree in entries:
            if tree is None or svc.jobs[jobid].userid == uid:
                continue
            for ns in tree:
                public = (ns in pol.view_namespaces) != pol.view_exclude
                if not public:
                    leaks.append((b["seq"], jobid, ns))
    return leaks


@pytest.mark.parametrize("config", sorted(CONFIGS))
@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow,
                                                                  HealthCheck.function_scoped_fixture])
@given(before=st.lists(op, max_size=15), after=st.lists(op, min_size=1, max_size=40))
def test_every_view_equals_its_own_encoding_and_guests_see_no_private_namespace(
        config, before, after):
    svc = AnnotationService(owner_uid=OWNER, batch_window=3600.0,
                            config={**CONFIGS[config], **UNLIMITED})
    try:
        for i in IDS:
            svc.submit(i, owner_of(i))
        for o in before:
            apply(svc, o)
        checked = Checked(svc.hub)
        own = Cred.owner_of(svc)
        subs = {}
        for k, uid in enumerate(GUESTS):  # every kind of guest subscription
            c = Cred(uid)
            subs[("guest-delta", uid)] = (c, svc.subscribe(c, snapshot=True, delta=True))
            if k % 2:
                subs[("guest-whole", uid)] = (c, svc.subscribe(c, snapshot=True))
            if k % 3 == 0:
                subs[("guest-own", uid)] = (c, svc.subscribe(c, snapshot=True, delta=True,
                                                             userid=uid))
            if k % 4 == 1:
                subs[("guest-other", uid)] = (c, svc.subscribe(
                    c, snapshot=True, delta=True, userid=OTHERS[k % 2]))
            if k == 2:
                subs[("guest-annotations", uid)] = (c, svc.subscribe(
                    c, snapshot=True, delta=True, topics=["job-annotations"]))
        subs[("owner", OWNER)] = (own, svc.subscribe(own, snapshot=True, delta=True))
        subs[("owner-of", OWNER)] = (own, svc.subscribe(own, snapshot=True, delta=True,
                                                        userid=GUESTS[0]))
        got = {k: [] for k in subs}
        for o in after:
            apply(svc, o)
            if o[0] == "flush":
                for k, (_, s) in subs.items():
                    got[k].extend(s)
        svc.flush()
        for k, (_, s) in subs.items():
            got[k].extend(s)
        for (name, uid), (cred, sub) in subs.items():
            items = got[(name, uid)]
            if name.startswith("guest"):
                assert private_seen(svc, uid, items) == [], name
            if sub.key[2]:  # deltas on a snapshot rebuild what `get` shows this reader
                trees = rebuild(items)
                for i in IDS:
                    if sub.userid is None or svc.jobs[i].userid == sub.userid:
                        assert trees.get(i) == svc.get(cred, i)["annotations"], (name, uid, i)
    finally:
        svc.close()


def test_a_guest_with_its_own_jobs_in_a_big_batch_gets_them_whole_in_place():
    """One batch over 600 jobs of 12 users: each guest's payload is the
    public view with its own jobs whole, in batch order, and guests without
    a job in the batch share one payload object."""
    svc = AnnotationService(owner_uid=OWNER, batch_window=3600.0, config=UNLIMITED)
    try:
        users = [3000 + u for u in range(12)]
        for j in range(1, 601):
            svc.submit(j, users[j % 12])
        svc.flush()
        checked = Checked(svc.hub)
        subs = {u: svc.subscribe(Cred(u), delta=True) for u in users + [4000, 4001]}
        for j in range(1, 601):
            svc.memo(Cred(users[j % 12]), j, {"note": j})
            svc.alloc_response(sched.annotate(j, t_estimate=float(j)))
        svc.flush()
        assert checked.batches == 1 and checked.spliced == 12
        for u in users:
            [b] = list(subs[u])
            ann = b["annotations"]
            assert [e[0] for e in ann] == list(range(1, 601))
            for jobid, patch in ann:
                if jobid % 12 == u - 3000:
                    assert patch == {"user": {"note": jobid}, "sched": {"t_estimate": float(jobid)}}
                else:
                    assert patch == {"sched": {"t_estimate": float(jobid)}}
        p1 = subs[4000]._queue[0] if subs[4000]._queue else None
        p2 = subs[4001]._queue[0] if subs[4001]._queue else None
        assert p1 is not None and p1 is p2  # one shared bytes object
        assert b'"user"' not in p1
    finally:
        svc.close()


# --- over the socket, each guest its own process and uid -------------------

SOCK_GUESTS = tuple(21000 + i for i in range(6))
SENTINEL = 999  # a job of the owner's: its last note ends the guests' reading


def _guest_stream(path, uid, w):
    """Child: as `uid`, subscribe snapshot+delta, say "ready", read until
    the sentinel's last note, then `get` every job; JSON result on w."""
    result = {}
    try:
        os.setgroups([])
        os.setgid(uid)
        os.setuid(uid)
        raw = Raw(path)
        raw.send("job-manager.events", 1, {"snapshot": True, "delta": True})
        items = [raw.recv()["payload"]]
        os.write(w, b"r")
        while True:
            r = raw.recv()
            assert r is not None and r["errnum"] == 0, r
            items.append(r["payload"])
            if [SENTINEL, {"sched": {"done": True}}] in r["payload"].get("annotations", []):
                break
        raw.close()
        with Client(path) as c:
            views = {j: c.get(j)["annotations"] for j in range(1, 41)}
        result = {"items": items, "views": views}
    except BaseException as e:  # reported to the parent, never hidden
        result = {"error": f"{type(e).__name__}: {e}"}
    finally:
        os.write(w, b"\n" + json.dumps(result).encode())
        os._exit(0)


@pytest.mark.skipif(not is_root(), reason="guests with their own uids need root")
def test_guests_on_the_socket_read_their_own_jobs_whole_and_nobody_elses_private_notes():
    server = ServerProc().start()
    try:
        with Client(server.path) as c:
            for j in range(1, 41):  # guests' jobs and two other users'
                c.submit(j, (SOCK_GUESTS + (22001, 22002))[j % 8])
            c.submit(SENTINEL, os.getuid())
            for j in range(1, 41):
                c.annotate(j, {"user": {"secret": f"of {j}"}, "site": {"rack": j}})
        kids = []
        for uid in SOCK_GUESTS:
            r, w = os.pipe()
            pid = os.fork()
            if pid == 0:
                os.close(r)
                _guest_stream(server.path, uid, w)
            os.close(w)
            assert os.read(r, 1) == b"r", f"guest {uid} did not subscribe"
            kids.append((uid, pid, r))
        with Client(server.path) as c:  # mixed batches: several per request burst
            for cycle in range(6):
                for j in range(1, 41):
                    c.alloc_response(sched.annotate(j, t_estimate=float(cycle * 100 + j)))
                    if (j + cycle) % 5 == 0:
                        c.annotate(j, {"user": {"secret": f"of {j} at {cycle}"}}, volatile=True)
                    if (j + cycle) % 7 == 0:
                        c.annotate(j, {"site": {"rack": cycle}})
            c.alloc_response(sched.annotate(SENTINEL, done=True))
        for uid, pid, r in kids:
            data = b""
            while chunk := os.read(r, 1 << 20):
                data += chunk
            os.close(r)
            os.waitpid(pid, 0)
            res = json.loads(data.split(b"\n", 1)[1])
            assert "error" not in res, (uid, res)
            items = res["items"]
            leaks = [(b["seq"], jobid, ns) for b in items
                     for jobid, tree in ([(x["id"], x["annotations"]) for x in b["jobs"]]
                                         if b.get("snapshot") else b.get("annotations", []))
                     if tree and jobid != SENTINEL and (SOCK_GUESTS + (22001, 22002))[jobid % 8] != uid
                     for ns in tree if ns != "sched"]
            assert leaks == [], (uid, leaks[:5])
            trees = rebuild(items)
            for j in range(1, 41):
                assert trees.get(j) == res["views"][str(j)], (uid, j)
            own = [j for j in range(1, 41) if (SOCK_GUESTS + (22001, 22002))[j % 8] == uid]
            assert own and all("user" in trees[j] and "site" in trees[j] for j in own)
    finally:
        server.cleanup()


def _read_batches(raw, n, out):
    """Reader thread: n batch frames from raw; out = (payloads, reads)."""
    reads = 0
    seen = []
    while len(seen) < n:
        data = raw.sock.recv(1 << 20)
        if not data:
            break
        reads += 1
        seen += [json.loads(b)["payload"] for b in raw.reader.feed(data)]
    out.append((seen, reads))


def test_with_many_subscribers_a_stream_gets_the_batches_published_meanwhile_in_one_write(
        monkeypatch):
    """Each stream is written at most every STREAM_GAP_PER_SUBSCRIBER x
    subscribers (capped): raised here so that two subscribers make it 50 ms,
    the 30 batches a client publishes one by one reach readers waiting in
    recv in fewer reads than batches (without the gap: one read each),
    whole and in order."""
    import threading

    from flux_annot.wire import dispatch
    from test_live_model import ThreadServer

    monkeypatch.setattr(dispatch, "STREAM_GAP_PER_SUBSCRIBER", 0.025)
    monkeypatch.setattr(dispatch, "STREAM_GAP_MAX", 0.05)
    s = ThreadServer(config={"batch": {"window": 0}}).start()
    try:
        subs = [Raw(s.path) for _ in range(2)]
        for r in subs:
            r.send("job-manager.events", 1, {"topics": ["job-annotations"]})
        got = [[] for _ in subs]
        threads = [threading.Thread(target=_read_batches, args=(r, 30, g))
                   for r, g in zip(subs, got)]
        with Client(s.path) as c:
            c.stats()
            c.submit(1, os.getuid())
            first = c.stats()["seq"] + 1
            for t in threads:
                t.start()
            for i in range(30):
                c.annotate(1, {"workflow": {"i": i}})
            last = c.stats()["seq"]
        for t in threads:
            t.join(30)
        assert last - first + 1 == 30
        for r, [(seen, reads)] in zip(subs, got):
            assert [b["seq"] for b in seen] == list(range(first, last + 1))
            assert [b["annotations"] for b in seen] == [[[1, {"workflow": {"i": i}}]]
                                                        for i in range(30)]
            assert reads < 20, reads
            r.close()
    finally:
        s.cleanup()
