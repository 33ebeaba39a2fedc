"""Each first-party plugin declares the facekit releases it works with, and this facekit is one of them."""

from __future__ import annotations

import tomllib
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.version import Version

import facekit

ROOT = Path(__file__).resolve().parents[2]
PLUGINS = sorted(ROOT.glob("plugins/*/pyproject.toml"))


def test_facekit_says_the_version_it_is_packaged_as() -> None:
    """The ranges below are checked against ``facekit.__version__``: it must be the version pip sees."""
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    assert facekit.__version__ == project["version"]


@pytest.mark.parametrize("pyproject", PLUGINS, ids=[p.parent.name for p in PLUGINS])
def test_a_plugin_asks_for_a_facekit_range_this_facekit_is_in(pyproject: Path) -> None:
    """Before: ``"facekit"`` with no version, so pip paired a plugin with any facekit, one without the names the
    plugin imports (it then failed to load) or a later one whose plugin API changed. facekit is 0.x: a minor release
    may change the plugin API, so the range ends before the next minor (``>=0.1,<0.2``); a facekit release that
    moves its version fails here until the plugins' ranges are moved with it."""
    dependencies = [Requirement(d) for d in tomllib.loads(pyproject.read_text())["project"]["dependencies"]]
    wanted = [r for r in dependencies if r.name == "facekit"]
    assert len(wanted) == 1, f"{pyproject}: declare facekit once in dependencies"
    specifier = wanted[0].specifier
    assert any(s.operator in (">=", "~=", "==") for s in specifier), f"{pyproject}: {specifier} has no lower bound"
    assert any(s.operator in ("<", "~=", "==") for s in specifier), f"{pyproject}: {specifier} has no upper bound"
    version = Version(facekit.__version__)
    assert specifier.contains(version, prereleases=True), f"{pyproject}: facekit {version} is not in {specifier}"
    # The upper bound is before the next release that may break the plugin API (the next minor while facekit is 0.x).
    next_breaking = Version(f"0.{version.minor + 1}") if version.major == 0 else Version(f"{version.major + 1}")
    assert not specifier.contains(next_breaking, prereleases=True), f"{pyproject}: {specifier} admits {next_breaking}"
