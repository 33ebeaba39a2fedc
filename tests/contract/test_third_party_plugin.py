"""A plugin distribution built outside the repo, installed like any third-party package, used through the CLI."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from tests.helpers import run_cli

PYPROJECT = """
[build-system]
requires = ["setuptools>=61"]
build-backend = "setuptools.build_meta"

[project]
name = "{dist}"
version = "1.2.3"

[project.entry-points.facekit]
{entry} = "{module}"
"""

GOOD = """
from pydantic import Field

import facekit
from facekit import ComponentSpec, Params


class SwirlParams(Params):
    boundary_points: int = Field(default=4, ge=0, description="zero-flow points per edge")


class Swirl:
    differentiable = True

    def __init__(self, params):
        self.inner = facekit.load_component("warper", "tps", boundary_points=params.boundary_points)

    def warp(self, image, source, destination):
        return self.inner.warp(image, source, destination)


@facekit.hookimpl
def register_warpers(register):
    register(ComponentSpec("swirl", Swirl, SwirlParams, summary="a third-party warper"))
"""

BROKEN = "raise ImportError('this plugin is broken on purpose')\n"

DUPLICATE = """
import facekit
from facekit import ComponentSpec


@facekit.hookimpl
def register_warpers(register):
    register(ComponentSpec("rbf-linear", lambda params: None, summary="clashes with the builtin"))
    register(ComponentSpec("dupe-warp", lambda params: None, summary="the clashing plugin's own warper"))
"""


def install(tmp_path: Path, dist: str, entry: str, source: str) -> Path:
    """Build and install a one-module distribution into its own folder; return the folder for PYTHONPATH."""
    module = dist.replace("-", "_")
    src = tmp_path / f"src-{dist}"
    src.mkdir()
    (src / "pyproject.toml").write_text(PYPROJECT.format(dist=dist, entry=entry, module=module))
    (src / f"{module}.py").write_text(textwrap.dedent(source))
    target = tmp_path / f"site-{dist}"
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "install",
            "--quiet",
            "--no-deps",
            "--no-build-isolation",
            "--target",
            str(target),
            str(src),
        ],
        check=True,
        capture_output=True,
    )
    return target


@pytest.fixture(scope="module")
def sites(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    tmp = tmp_path_factory.mktemp("plugins")
    return {
        "good": install(tmp, "facekit-swirl", "swirl", GOOD),
        "broken": install(tmp, "facekit-broken", "broken", BROKEN),
        "duplicate": install(tmp, "facekit-dupe", "dupe", DUPLICATE),
    }


def test_plugin_appears_in_plugins_and_list(sites: dict[str, Path]) -> None:
    env = {"PYTHONPATH": str(sites["good"])}
    plugins = run_cli("plugins", env=env)
    assert plugins.returncode == 0, plugins.stderr
    assert "swirl" in plugins.stdout and "facekit-swirl" in plugins.stdout and "1.2.3" in plugins.stdout
    listing = run_cli("list", "warpers", env=env)
    assert "swirl" in listing.stdout and "a third-party warper" in listing.stdout


def test_plugin_works_from_a_recipe(sites: dict[str, Path], tmp_path: Path) -> None:
    recipe = tmp_path / "swirl.yaml"
    recipe.write_text("components:\n  warper: {name: swirl, params: {boundary_points: 3}}\n")
    # (a recipe of the warper alone: what a plain run's prepare and train stages need is not there, and `facekit check`
    # says so as run would; the evaluate stage alone needs nothing of the settings that it lacks)
    refused = run_cli("check", str(recipe), env={"PYTHONPATH": str(sites["good"])})
    assert refused.returncode == 2 and "components.decoder" in refused.stderr, refused.stderr
    result = run_cli("check", str(recipe), "--stage", "evaluate", env={"PYTHONPATH": str(sites["good"])})
    assert result.returncode == 0, result.stderr
    assert "swirl (swirl)" in result.stdout and "boundary_points = 3" in result.stdout
    code = (
        "import torch, facekit\n"
        "from facekit.testing import check_warper\n"
        "check_warper(facekit.get_registry('warper').get('swirl'))\n"
        "w = facekit.load_component('warper', 'swirl')\n"
        "out, flow = w.warp(torch.rand(1, 3, 20, 20), torch.tensor([[[5., 5.]]]), torch.tensor([[[6., 5.]]]))\n"
        "print(tuple(out.shape), tuple(flow.shape))\n"
    )
    env_run = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env={**_env(), "PYTHONPATH": str(sites["good"])}
    )
    assert env_run.returncode == 0, env_run.stderr
    assert "(1, 3, 20, 20) (1, 20, 20, 2)" in env_run.stdout
    # Without the plugin installed, the same recipe fails with a helpful message.
    missing = run_cli("check", str(recipe))
    assert missing.returncode == 2 and "unknown warper 'swirl'" in missing.stderr


def test_broken_plugin_names_distribution_entry_point_and_fix(sites: dict[str, Path]) -> None:
    env = {"PYTHONPATH": str(sites["broken"])}
    result = run_cli("list", env=env)  # the broken plugin is left out with a warning; the rest works
    assert result.returncode == 0 and "Traceback" not in result.stderr and "rbf-linear" in result.stdout
    message = " ".join(result.stderr.split())
    for needle in (
        "facekit-broken",
        "entry point facekit_broken",
        "broken on purpose",
        "FACEKIT_DISABLE_PLUGINS=broken",
    ):
        assert needle in message
    report = run_cli("plugins", env=env)  # the report itself exits 1 and says each failure once
    assert report.returncode == 1 and "builtin" in report.stdout and report.stderr.count("broken on purpose") == 1
    skipped = run_cli("list", env={**env, "FACEKIT_DISABLE_PLUGINS": "broken"})
    assert skipped.returncode == 0 and "rbf-linear" in skipped.stdout


def test_duplicate_name_names_both_plugins_and_only_that_name_is_unusable(sites: dict[str, Path]) -> None:
    env = {"PYTHONPATH": str(sites["duplicate"])}
    clash = "'rbf-linear' is registered by two plugins: 'builtin' and 'dupe'"
    listing = run_cli("list", "warpers", env=env)  # the rest of facekit works (before: every command stopped)
    assert listing.returncode == 0, listing.stderr
    assert clash in " ".join(listing.stderr.split())
    listed = [cells[2].strip() for cells in (line.split("│") for line in listing.stdout.splitlines()) if len(cells) > 3]
    assert "tps" in listed and "dupe-warp" in listed and "rbf-linear" not in listed
    report = run_cli("plugins", env=env)
    assert report.returncode == 1 and clash in " ".join(report.stderr.split())
    # A recipe asking for the name is refused with both plugins named (neither is silently taken).
    used = run_cli("check", "recipes/paper.yaml", env=env)
    said = " ".join(used.stderr.split())
    assert used.returncode != 0 and f"components.warper.name: warper {clash}" in said, used.stdout + used.stderr
    assert "unknown warper" not in said


def _env() -> dict[str, str]:
    import os

    return dict(os.environ)
