"""Shared pytest set-up (keep minimal): hypothesis profiles."""

from hypothesis import HealthCheck, settings

# "ci" is the default: bounded examples, no deadline (2 shared cores).
settings.register_profile("ci", max_examples=150, deadline=None,
                          suppress_health_check=[HealthCheck.too_slow])
settings.register_profile("long", max_examples=5000, deadline=None)
settings.load_profile("ci")
