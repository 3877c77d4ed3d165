"""Policy of docs/policy.md at the unit level (the service tests cover it end to end),
with a hypothesis check against an obviously-correct model of the rules."""

import errno

import pytest
from hypothesis import given
from hypothesis import strategies as st

from flux_annot.service.config import Config
from flux_annot.errors import AnnotError
from flux_annot.service.limits import RateLimiter, UserBytes
from flux_annot.service.policy import SCHED_RESERVED, Cred, Policy


def test_cred():
    c = Cred(1000)
    assert (c.userid, c.owner) == (1000, False)
    assert Cred(5, owner=True) == Cred(5, True) and Cred(5) != Cred(5, True)

    class S:
        owner_uid = 42

    assert Cred.owner_of(S()) == Cred(42, owner=True)
    for bad in (-1, 1 << 32, "7", True, None):
        with pytest.raises(AnnotError) as ei:
            Cred(bad)
        assert ei.value.errno == errno.EINVAL


def test_default_rules():
    p = Policy(Config())
    p.check_sched(["sched"])
    p.check_owner(["user", "workflow"], own_job=False)
    p.check_guest(["user"])
    with pytest.raises(AnnotError, match=SCHED_RESERVED):
        p.check_owner(["sched"], own_job=True)
    with pytest.raises(AnnotError, match=SCHED_RESERVED):
        p.check_guest(["sched"])
    with pytest.raises(AnnotError, match="'workflow'") as ei:
        p.check_guest(["user", "workflow"])
    assert ei.value.errno == errno.EPERM
    with pytest.raises(AnnotError, match="scheduler may not write the 'user'"):
        p.check_sched(["user"])
    assert (p.view_namespaces, p.view_exclude) == (["sched"], False)


def test_view_exclude_mode_when_default_is_public():
    p = Policy(Config({"namespace": {"default": {"read": ["all"]}}}))
    assert p.view_exclude is True
    assert p.view_namespaces == ["user"]  # sched is public, user is not


ROLES = ["sched", "owner", "job-owner"]
NS = ["sched", "user", "workflow", "site", "x"]


@given(
    rules=st.dictionaries(
        st.sampled_from(["sched", "user", "site", "default"]),
        st.fixed_dictionaries({"write": st.lists(st.sampled_from(ROLES), unique=True)}),
    ),
    role=st.sampled_from(ROLES),
    ns=st.sampled_from(NS),
)
def test_writable_matches_model(rules, role, ns):
    cfg = Config({"namespace": rules})
    p = Policy(cfg)
    # model: the named table if any, else the default table, else the documented defaults (docs/policy.md)
    defaults = {"sched": ["sched"], "user": ["owner", "job-owner"], "default": ["owner"]}
    table = ns if ns in rules or ns in defaults else "default"
    write = rules.get(table, {}).get("write", defaults.get(table))
    if table == "default" and "default" in rules:
        write = rules["default"]["write"]
    assert p.writable(role, ns) == (role in write)


def test_rate_limiter_burst_refill_and_bounded():
    t = [0.0]
    r = RateLimiter(rate=10, burst=3, max_buckets=4, clock=lambda: t[0])
    for _ in range(3):
        assert r.take(1)
    with pytest.raises(AnnotError) as ei:
        r.check(1)
    assert ei.value.errno == errno.EAGAIN and "10 per second" in str(ei.value)
    t[0] += 0.1  # one token back
    assert r.take(1)
    assert not r.take(1)
    # a flood of distinct uids never grows the dict past its bound
    for uid in range(100, 200):
        r.take(uid)
        assert len(r) <= 4


def test_user_bytes():
    u = UserBytes(limit=10)
    u.add(7, 6)
    u.check(7, 4)
    u.check(7, -100)
    with pytest.raises(AnnotError) as ei:
        u.check(7, 5)
    assert ei.value.errno == errno.EDQUOT and "10-byte" in str(ei.value)
    u.add(7, -6)
    assert u.get(7) == 0 and len(u) == 0
