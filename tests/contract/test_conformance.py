"""Every registered component passes facekit.testing's checks for its kind, one test per (component, check)."""

from __future__ import annotations

from typing import Any

import pytest

from facekit.registry import ComponentSpec
from facekit.testing import parametrize_with_checks, run_check
from facekit.types import Kind

#: Declared exceptions: (component, check) -> why. Strict xfails: a component that starts passing is noticed.
XFAIL: dict[tuple[str, str], str] = {}


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
    with pytest.raises(ValueError, match=r"no detector check 'noface' of 'dlib'; known: .*no_face"):
        parametrize_with_checks("detector", plugin="dlib", xfail={("dlib", "noface"): "typo"})
