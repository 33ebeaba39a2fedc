"""Every YAML under recipes/ and benchmarks/ validates (recursive search)."""

from __future__ import annotations

from pathlib import Path

import pytest

from facekit.recipe import load_recipe
from tests.helpers import REPO

RECIPES = sorted(p for folder in ("recipes", "benchmarks") for p in (REPO / folder).rglob("*.y*ml"))


def test_there_are_recipes() -> None:
    assert any(p.name == "paper.yaml" for p in RECIPES) and any(p.name == "demo.yaml" for p in RECIPES)


@pytest.mark.parametrize("path", RECIPES, ids=[str(p.relative_to(REPO)) for p in RECIPES])
def test_recipe_validates(path: Path, data_root: Path) -> None:
    plan = load_recipe(path)
    assert plan.recipe.description, f"{path} should say what it is in `description`"
    header = path.read_text().splitlines()[:6]
    assert any("facekit " in line for line in header if line.startswith("#")), f"{path}: header must show its command"
