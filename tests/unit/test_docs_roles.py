"""The API pages' Sphinx roles (helper-79: 171 ``:class:`X``` showed as raw text) become inline code."""

from __future__ import annotations

import importlib.util
from pathlib import Path


def test_sphinx_roles_become_inline_code() -> None:
    path = Path(__file__).resolve().parents[2] / "docs" / "griffe_sphinx_roles.py"
    spec = importlib.util.spec_from_file_location("griffe_sphinx_roles", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    text = "a :class:`facekit.types.Face`, :func:`~facekit.normalize.normalize` and :data:`X` (``literal``)"
    assert module.plain(text) == "a `facekit.types.Face`, `normalize` and `X` (``literal``)"
