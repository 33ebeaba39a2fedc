"""Every registered component passes facekit.testing's checks for its kind, one test per (component, check)."""

from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import Any

import pytest

from facekit.registry import ComponentSpec
from facekit.testing import parametrize_with_checks, run_check
from facekit.types import Kind

#: Declared exceptions: (component, check) -> why. Strict xfails: a component that starts passing is noticed.
XFAIL: dict[tuple[str, str], str] = {}
if importlib.util.find_spec("kornia") is not None:  # kornia-tps is registered only with kornia (the dev extra)
    XFAIL[("kornia-tps", "face_points")] = (
        "kornia's thin-plate spline centres its kernels on the targets, not on the points it interpolates: on a "
        "face's 68 points moved by under a pixel its flows reach thousands of px (a comparison only)"
    )
    XFAIL[("kornia-tps", "mixed_precision")] = (
        "the same ill-conditioned flows (thousands of px in float32 at 224 px) move by tens of thousands of px "
        "when its solve and kernel sums run under a bf16 autocast (a comparison only)"
    )


@pytest.mark.parametrize(("kind", "spec", "check"), parametrize_with_checks(xfail=XFAIL))
def test_component_conforms(kind: Kind, spec: ComponentSpec[Any], check: str) -> None:
    # Required params and weights not on this machine skip (parametrize_with_checks, run_check): the plugins' own
    # tests run these checks with real params and test weights.
    run_check(kind, spec, check)


def test_a_misspelled_plugin_or_xfail_name_is_an_error_not_a_silent_pass() -> None:
    """Before: plugin='facekit-dlib' (the distribution, not the entry point) gave no cases and pytest reported one
    skip, exit 0; an xfail key with a typo was never applied."""
    with pytest.raises(ValueError, match=r"'facekit-dlib' registered no detector.*its entry point is 'dlib'"):
        parametrize_with_checks("detector", plugin="facekit-dlib")
    assert {p.values[1].name for p in parametrize_with_checks("detector", plugin="dlib")} == {"dlib", "dlib-5pt"}
    with pytest.raises(ValueError, match="xfail names 'dlb'"):
        parametrize_with_checks("detector", plugin="dlib", xfail={("dlb", "no_face"): "typo"})
    with pytest.raises(ValueError, match=r"no check 'noface' of 'dlib'; known: .*no_face"):
        parametrize_with_checks("detector", plugin="dlib", xfail={("dlib", "noface"): "typo"})
    # One xfail table shared by per-kind parametrizations: a key for a registered component of another kind is fine.
    encoders = parametrize_with_checks("encoder", plugin="dlib", xfail={("dlib", "no_face"): "declared elsewhere"})
    assert {p.values[1].name for p in encoders} == {"dlib-resnet"}


def test_weights_missing_skip_only_the_default_params_case(tmp_path: Path) -> None:
    """With default params, weights not on this machine skip the case (user-supplied weights); with params a test
    gave (its own test weights) a missing file is that test's failure, not a skip."""
    from facekit.models import WeightsNotFoundError
    from facekit.registry import ComponentSpec, NoParams

    def build(params: Any) -> Any:
        raise WeightsNotFoundError(f"{tmp_path / 'model.pt'} not found")

    spec = ComponentSpec("needs-weights", build, NoParams)
    with pytest.raises(pytest.skip.Exception, match="weights not on this machine"):
        run_check("warper", spec, "protocol")
    with pytest.raises((WeightsNotFoundError, pytest.skip.Exception)) as raised:  # a skip must not pass here
        run_check("warper", spec, "protocol", params={})
    assert raised.type is WeightsNotFoundError


def test_a_component_with_required_params_is_skipped_with_a_call_that_runs_its_checks() -> None:
    """Before (helper-98): the skip said check_component(spec, params=...), which is a TypeError (check_component
    takes the kind first)."""
    import facekit.testing
    from facekit.registry import Params, get_registry

    class LevelParams(Params):
        level: float

    class Level:
        def __init__(self, params: LevelParams) -> None:
            self.level = params.level

        def apply(self, faces: Any) -> dict[str, Any]:
            return {"level": faces.image.mean(dim=(1, 2, 3)) * self.level}

    registry = get_registry("app")
    registry.add(ComponentSpec("needs-level", Level, LevelParams, plugin="needs"))
    try:
        cases = parametrize_with_checks("app", plugin="needs")
    finally:
        registry.drop_plugin("needs")
    (reason,) = {mark.kwargs["reason"] for case in cases for mark in case.marks}
    call = reason.split("run its checks with ")[1]
    assert call == "check_app(spec, params=...)"
    spec = next(case.values[1] for case in cases)
    getattr(facekit.testing, call.split("(")[0])(spec, params={"level": 0.5})
