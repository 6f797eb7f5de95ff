"""Hypothesis settings profiles; imported at the top of the property-test modules.

`HYPOTHESIS_PROFILE=ci` runs 2000 examples per property, the default `dev` 200.
"""

from __future__ import annotations

import os

from hypothesis import HealthCheck, settings

settings.register_profile(
    "ci", max_examples=2000, deadline=None, suppress_health_check=[HealthCheck.too_slow]
)
settings.register_profile("dev", max_examples=200, deadline=None)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "dev"))


def examples(fraction: float = 1.0, *, minimum: int = 10) -> int:
    """The active profile's example count scaled by `fraction` (for the slower properties)."""
    return max(minimum, int(settings().max_examples * fraction))
