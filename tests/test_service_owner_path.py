"""The instance owner's annotate path (the RPC hot path): a dict without a
`user` key goes straight to the C table; every check still holds and a
rejected patch changes nothing."""

import errno

import pytest

from flux_annot import AnnotationService, Cred
from flux_annot.errors import AnnotError

OWNER_UID, ALICE = 1000, 2001
OWNER = Cred(OWNER_UID, owner=True)


@pytest.fixture
def svc(tmp_path):
    s = AnnotationService(owner_uid=OWNER_UID, store=tmp_path / "a.db")
    s.submit(1, ALICE)
    s.submit(2, OWNER_UID)
    s.flush()
    yield s
    s.close()


def state(svc):
    return [svc.get(OWNER, i) for i in (1, 2)], svc.stats()["jobs"]


def deep(depth):
    inner = 1
    for _ in range(depth - 1):
        inner = {"k": inner}
    return {"workflow": inner}


@pytest.mark.parametrize(
    "patch, message",
    [
        (deep(65), "depth"),
        ({"workflow": {"x": float("nan")}}, "not valid JSON"),
        ({"workflow": {"x": {1, 2}}}, "set is not JSON serializable"),
        ({"workflow": {"a.b": 1}}, "."),
        ({"workflow": 3}, "must be an object or null"),
        ({"sched": {"t": 1}, "workflow": {"a": 1}}, "reserved for the scheduler"),
    ],
)
def test_bad_owner_patch_changes_nothing(svc, patch, message):
    svc.annotate(OWNER, 1, {"workflow": {"keep": True}})
    before = state(svc)
    seq = svc.hub.last_seq
    with pytest.raises(AnnotError) as ei:
        svc.annotate(OWNER, 1, patch)
    assert ei.value.errno in (errno.EINVAL, errno.EPERM)
    assert message in str(ei.value)
    assert state(svc) == before
    assert svc.flush() == seq + 1  # only the earlier good update is in the batch
    assert sum(svc.stats()["rejected"].values()) == 1


def test_cyclic_dict_is_einval(svc):
    cyc = {}
    cyc["self"] = cyc
    with pytest.raises(AnnotError) as ei:
        svc.annotate(OWNER, 1, {"workflow": cyc})
    assert ei.value.errno == errno.EINVAL
    assert svc.get(OWNER, 1)["annotations"] is None


def test_owner_depth_64_is_accepted(svc):
    svc.annotate(OWNER, 1, deep(64))
    assert svc.get(OWNER, 1)["annotations"] == deep(64)


def test_unchanged_publishes_nothing_but_is_made_durable(svc, tmp_path):
    svc.annotate(OWNER, 1, {"workflow": {"a": 1}}, volatile=True)
    svc.flush()
    sub = svc.subscribe(OWNER)
    svc.annotate(OWNER, 1, {"workflow": {"a": 1}})  # same value, now durable
    seq = svc.flush()
    assert seq == svc.hub.last_seq  # a batch (the entry) ...
    assert list(sub) == []  # ... with nothing to publish
    svc.close()
    again = AnnotationService(owner_uid=OWNER_UID, store=tmp_path / "a.db")
    assert again.get(OWNER, 1)["annotations"] == {"workflow": {"a": 1}}
    again.close()


def test_user_bytes_follow_owner_writes(svc):
    guest = Cred(ALICE)
    svc.annotate(OWNER, 1, {"workflow": {"w": "x" * 100}})
    svc.annotate(OWNER, 1, {"user": {"u": "y" * 100}})
    assert svc.jobs[1].user_bytes == len('{"u":"' + "y" * 100 + '"}')
    svc.annotate(OWNER, 1, {"workflow": None})
    assert svc.jobs[1].user_bytes == len('{"u":"' + "y" * 100 + '"}')
    svc.memo(guest, 1, {"u": None})
    assert svc.jobs[1].user_bytes == 0


def test_durable_text_annotate_is_written_as_sent(svc, tmp_path):
    """The server's path (the value's text from the frame, its namespaces
    from the decoder): a durable note survives a restart, its eventlog
    entry is the text as sent; one the owner may not write changes nothing."""
    text = b'{"workflow": {"a": 1}, "site":{"b":[1, 2]}}'
    svc._annotate_text(OWNER, 1, text, {"workflow": None, "site": None}, False, False)
    with pytest.raises(AnnotError) as exc:
        svc._annotate_text(OWNER, 2, b'{"sched":{"x":1}}', {"sched": None}, False, False)
    assert exc.value.errno == errno.EPERM
    svc.flush()
    assert [(j, n, c) for j, n, c, _ in svc.store.entries(["annotate"])] == [
        (1, "annotate", text.decode())
    ]
    svc.close()
    again = AnnotationService(owner_uid=OWNER_UID, store=tmp_path / "a.db")
    assert again.get(OWNER, 1)["annotations"] == {"workflow": {"a": 1}, "site": {"b": [1, 2]}}
    assert again.get(OWNER, 2)["annotations"] is None
    again.close()
