"""Every registered component passes facekit.testing's checks for its kind (new components get them for free)."""

from __future__ import annotations

from typing import Any

import pytest

from facekit.models import WeightsNotFoundError
from facekit.registry import ComponentSpec
from facekit.testing import check_component, default_params, parametrize_components
from facekit.types import KINDS, Kind

CASES = [(kind, param) for kind in KINDS for param in parametrize_components(kind)]


@pytest.mark.parametrize(("kind", "spec"), [pytest.param(k, p.values[0], id=f"{k}-{p.id}") for k, p in CASES])
def test_component_conforms(kind: Kind, spec: ComponentSpec[Any]) -> None:
    if default_params(spec) is None:
        pytest.skip(f"{spec.name} has required params; its plugin's tests run the checks with real ones")
    try:
        check_component(kind, spec)
    except WeightsNotFoundError as missing:  # user-supplied weights; the plugin's tests run the checks on test files
        pytest.skip(f"{spec.name}: weights not on this machine ({missing})")
