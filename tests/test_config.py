"""Configuration (docs/configuration.md): defaults, every key optional, bad input named."""

import errno

import pytest

from flux_annot.service.config import Config
from flux_annot.errors import AnnotError


def test_defaults_match_spec():
    c = Config()
    assert c.batch.window == 0.01 and c.batch.max_entries == 10000
    assert c.events.backlog == 4096 and c.events.subscriber_queue_bytes == 16777216
    lim = c.limits
    assert (lim.message_bytes, lim.guest_payload_bytes, lim.guest_namespace_bytes) == (
        1048576,
        4096,
        4096,
    )
    assert (lim.guest_user_total_bytes, lim.guest_rate, lim.guest_burst) == (1048576, 200, 400)
    assert (lim.depth_guest, lim.depth_owner, lim.key_bytes, lim.object_keys) == (8, 64, 256, 1024)
    assert c.rules("sched").write == {"sched"} and c.rules("sched").read == {"all"}
    assert c.rules("user").write == {"owner", "job-owner"}
    assert c.rules("user").read == {"owner", "job-owner"}
    assert c.rules("workflow").write == {"owner"} and c.rules("workflow").read == {"owner"}
    # both access styles
    assert c["limits"]["guest_rate"] == 200


def test_partial_config_keeps_other_defaults():
    c = Config({"limits": {"guest_rate": 5}, "namespace": {"site": {"read": ["all"]}}})
    assert c.limits.guest_rate == 5.0 and c.limits.guest_burst == 400
    assert c.rules("site").read == {"all"}
    assert c.rules("site").write == {"owner"}  # inherited from namespace.default
    assert "limits.guest_rate" in c.given and "limits.guest_burst" not in c.given


@pytest.mark.parametrize(
    "data, named",
    [
        ({"bogus": {}}, "'bogus'"),
        ({"limits": {"guest_rat": 1}}, "limits.guest_rat"),
        ({"batch": {"window": -1}}, "batch.window"),
        ({"batch": {"window": "fast"}}, "batch.window"),
        ({"batch": {"max_entries": 0}}, "batch.max_entries"),
        ({"batch": {"max_entries": 1.5}}, "batch.max_entries"),
        ({"limits": {"guest_burst": True}}, "limits.guest_burst"),
        ({"limits": {"depth_guest": -3}}, "limits.depth_guest"),
        ({"limits": {"guest_rate": float("nan")}}, "limits.guest_rate"),
        ({"limits": []}, "[limits]"),
        ({"namespace": {"user": {"write": ["root"]}}}, "namespace.user.write"),
        ({"namespace": {"user": {"read": ["sched"]}}}, "namespace.user.read"),
        ({"namespace": {"user": {"write": "owner"}}}, "namespace.user.write"),
        ({"namespace": {"user": {"delete": ["owner"]}}}, "namespace.user.delete"),
        ({"namespace": {"a.b": {}}}, "'a.b'"),
        ({"namespace": {"x": 3}}, "namespace.x"),
    ],
)
def test_bad_config_names_the_key(data, named):
    with pytest.raises(AnnotError) as ei:
        Config(data)
    assert ei.value.errno == errno.EINVAL
    assert named in str(ei.value)
    assert isinstance(ei.value, ValueError)


def test_not_a_dict():
    with pytest.raises(AnnotError) as ei:
        Config([("batch", {})])
    assert ei.value.errno == errno.EINVAL


def test_window_zero_allowed_and_as_dict_round_trips():
    c = Config({"batch": {"window": 0}})
    assert c.batch.window == 0.0
    again = Config(c.as_dict())
    assert again.as_dict() == c.as_dict()
