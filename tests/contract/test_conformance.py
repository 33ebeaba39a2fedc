"""Every registered component passes facekit.testing's checks for its kind, one test per (component, check)."""

from __future__ import annotations

from typing import Any

import pytest

from facekit.models import WeightsNotFoundError
from facekit.registry import ComponentSpec
from facekit.testing import default_params, parametrize_with_checks, run_check
from facekit.types import Kind

#: Declared exceptions: (component, check) -> why. Strict xfails: a component that starts passing is noticed.
XFAIL: dict[tuple[str, str], str] = {}


@pytest.mark.parametrize(("kind", "spec", "check"), parametrize_with_checks(xfail=XFAIL))
def test_component_conforms(kind: Kind, spec: ComponentSpec[Any], check: str) -> None:
    if default_params(spec) is None:
        pytest.skip(f"{spec.name} has required params; its plugin's tests run the checks with real ones")
    try:
        run_check(kind, spec, check)
    except WeightsNotFoundError as missing:  # user-supplied weights; the plugin's tests run the checks on test files
        pytest.skip(f"{spec.name}: weights not on this machine ({missing})")
