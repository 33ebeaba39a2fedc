"""The hypothesis profiles of tests/fuzz: "ci" (what `make test` runs, seconds, derandomized) and "fuzz" (`make fuzz`,
FACEKIT_FUZZ_PROFILE=fuzz: as many examples as its time allows)."""

from __future__ import annotations

import os

from hypothesis import HealthCheck, settings

settings.register_profile(
    "ci", max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow], derandomize=True
)
settings.register_profile("fuzz", max_examples=1_000_000, deadline=None, suppress_health_check=list(HealthCheck))
settings.load_profile(os.environ.get("FACEKIT_FUZZ_PROFILE", "ci"))
