"""Shared pytest configuration: hypothesis profiles.

Profiles:
  * ``dev`` (default): the normal number of examples.
  * ``ci``: fewer examples, selected automatically when the environment has ``CI=true``.
  * ``thorough``: many examples, select with ``HYPOTHESIS_PROFILE=thorough``.

Tests that need a different number of examples than the profile default use
``_helpers.examples(n)``, which scales ``n`` down under the ``ci`` profile.
"""

import os

from hypothesis import HealthCheck, settings

_COMMON = dict(
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    print_blob=True,
)

settings.register_profile("dev", max_examples=60, **_COMMON)
settings.register_profile("ci", max_examples=20, derandomize=True, **_COMMON)
settings.register_profile("thorough", max_examples=1000, **_COMMON)


def _selected_profile() -> str:
    explicit = os.environ.get("HYPOTHESIS_PROFILE")
    if explicit:
        return explicit
    if os.environ.get("CI", "").strip().lower() in ("1", "true", "yes"):
        return "ci"
    return "dev"


settings.load_profile(_selected_profile())
