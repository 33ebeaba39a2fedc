"""What a user installs is a wheel, not this checkout: every file of facekit's and each plugin's import packages (the
shipped models, the test face, the avatar's data, the ``py.typed`` markers) must be inside the wheel built from it,
and everything pip installs with them must be pinned in constraints.txt."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
import tomllib
import zipfile
from importlib import metadata
from pathlib import Path

import pytest
from packaging.requirements import Requirement

from tests.helpers import REPO

PROJECTS = [REPO, *sorted(p.parent for p in REPO.glob("plugins/*/pyproject.toml"))]
SKIPPED = shutil.ignore_patterns("__pycache__", "*.pyc", "build", "dist", "*.egg-info")


def normalized(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def project_name(project: Path) -> str:
    return str(tomllib.loads((project / "pyproject.toml").read_text())["project"]["name"])


def import_packages(project: Path) -> list[Path]:
    """The project's top-level import packages in this checkout (facekit's flat layout, the plugins' src/)."""
    if project == REPO:
        return [REPO / "facekit"]
    return sorted(p for p in (project / "src").iterdir() if (p / "__init__.py").is_file())


def package_files(project: Path) -> set[str]:
    """Every file of the project's import packages, as its path inside a wheel."""
    files = set()
    for package in import_packages(project):
        for path in package.rglob("*"):
            if path.is_file() and "__pycache__" not in path.parts and path.suffix != ".pyc":
                files.add(path.relative_to(package.parent).as_posix())
    return files


@pytest.fixture(scope="module")
def wheels(tmp_path_factory: pytest.TempPathFactory) -> dict[str, set[str]]:
    """Each project's wheel contents, built as ``pip wheel`` builds it for a user, from a copy of the project (a
    build in place would leave build/ and an .egg-info in the checkout, whose entry points the tests would read)."""
    tmp = tmp_path_factory.mktemp("wheels")
    copies = []
    for project in PROJECTS:
        copy = tmp / "src" / project.name
        if project == REPO:
            copy.mkdir(parents=True)
            for name in ("pyproject.toml", "README.md"):
                shutil.copy(REPO / name, copy / name)
            for folder in ("facekit", "recipes"):  # recipes/: the wheel's facekit/recipes/ (pyproject's package-dir)
                shutil.copytree(REPO / folder, copy / folder, ignore=SKIPPED)
        else:
            shutil.copytree(project, copy, ignore=SKIPPED)
        copies.append(str(copy))
    out = tmp / "out"
    command = [sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "--no-build-isolation", "-w", str(out)]
    subprocess.run([*command, *copies], check=True, capture_output=True, timeout=300)
    contents = {}
    for wheel in out.glob("*.whl"):
        with zipfile.ZipFile(wheel) as archive:
            contents[wheel.name.split("-")[0]] = set(archive.namelist())
    return contents


@pytest.mark.parametrize("project", PROJECTS, ids=[project_name(p) for p in PROJECTS])
def test_the_wheel_holds_every_file_of_its_packages(project: Path, wheels: dict[str, set[str]]) -> None:
    """The code opens its data beside its modules (importlib.resources): a file left out of the wheel works in the
    checkout and fails only for users (a shipped model, the conformance checks' face, the avatar's mapping)."""
    name = normalized(project_name(project)).replace("-", "_")
    assert name in wheels, f"no wheel was built for {project}"
    missing = sorted(package_files(project) - wheels[name])
    assert not missing, f"{project_name(project)}'s wheel lacks {missing}: add them to its package-data"


def test_the_facekit_wheel_holds_every_shipped_recipe(wheels: dict[str, set[str]]) -> None:
    """Before: the recipes were only in the checkout's recipes/, outside the package, so a user who installed the
    wheels could run none of the README's recipe commands; now the wheel holds each as facekit/recipes/, by its name."""
    from facekit.recipe import shipped_recipes

    folder = "facekit/recipes/"
    in_wheel = {
        n[len(folder) : -len(".yaml")] for n in wheels["facekit"] if n.startswith(folder) and n.endswith(".yaml")
    }
    assert "demo" in in_wheel and "ablations/no-identity" in in_wheel, sorted(in_wheel)
    assert in_wheel == set(shipped_recipes())


@pytest.mark.parametrize("project", PROJECTS, ids=[project_name(p) for p in PROJECTS])
def test_each_package_says_it_is_typed(project: Path) -> None:
    """Before: no ``py.typed``, so mypy in a plugin author's project skipped facekit as untyped ("module is
    installed, but missing library stubs or py.typed marker") and checked none of the calls into it (PEP 561)."""
    for package in import_packages(project):
        assert (package / "py.typed").is_file(), f"{package} has no py.typed"


def installed_requirements() -> set[str]:
    """Every distribution pip installs for facekit (with its dev and default extras, as the Makefile installs it)
    and the plugins here, read from their pyproject.toml and followed through the installed packages' own
    requirements, by normalized name."""
    pending: list[tuple[str, tuple[str, ...]]] = []
    local = set()
    for project in PROJECTS:
        table = tomllib.loads((project / "pyproject.toml").read_text())["project"]
        local.add(normalized(table["name"]))
        texts = list(table["dependencies"])
        if project == REPO:
            texts += [t for extra in ("dev", "default") for t in table["optional-dependencies"][extra]]
        pending += [(normalized(r.name), tuple(r.extras)) for r in map(Requirement, texts)]
    seen: set[str] = set()
    while pending:
        name, extras = pending.pop()
        if name in seen or name in local:
            continue
        seen.add(name)
        try:
            requires = metadata.requires(name) or []
        except metadata.PackageNotFoundError:
            continue  # not installed here (a requirement for another platform): nothing to follow
        for text in requires:
            requirement = Requirement(text)
            if requirement.marker is None or any(
                requirement.marker.evaluate({"extra": extra}) for extra in (*extras, "")
            ):
                pending.append((normalized(requirement.name), tuple(requirement.extras)))
    return seen


def test_constraints_pin_every_package_pip_installs() -> None:
    """constraints.txt gives a fresh machine the environment the tests ran in only if it names every package pip
    installs. Before: click (typer's own requirement) was not there, so pip took whichever click was newest."""
    pinned = set()
    for line in (REPO / "constraints.txt").read_text().splitlines():
        if line.strip() and not line.startswith("#"):
            pinned.add(normalized(Requirement(line).name))
    missing = sorted(installed_requirements() - pinned)
    assert not missing, f"constraints.txt lacks {missing}: add each with its exact version (pip freeze)"
