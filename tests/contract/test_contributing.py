"""CONTRIBUTING.md's plugin examples, exactly as written: each registers and passes every facekit.testing check, the
testing snippet runs, and all of them pass mypy under the project's settings. Before: the warper example failed the
conformance check the same page told you to run, and the test snippet lacked an import."""

from __future__ import annotations

import re
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

import facekit
from facekit import plugins
from facekit.registry import get_registries
from facekit.testing import check_component
from facekit.types import KINDS
from tests.helpers import REPO

SNIPPET = re.compile(r"<!-- snippet: (\w+) -->\n```python\n(.*?)```", re.DOTALL)


def snippets() -> dict[str, str]:
    return {kind: code for kind, code in SNIPPET.findall((REPO / "CONTRIBUTING.md").read_text())}


def load_snippet(kind: str, plugin: str = "myplugin") -> ModuleType:
    """Run the snippet as a module and register it as plugin ``plugin`` on the live plugin manager."""
    module = ModuleType(f"facekit_snippet_{kind}")
    sys.modules[module.__name__] = module  # importable by name, as an installed plugin's module (pickle needs it)
    exec(compile(snippets()[kind], f"CONTRIBUTING.md:{kind}", "exec"), module.__dict__)
    plugins.get_plugin_manager().register(module, name=plugin)
    get_registries.cache_clear()
    return module


def test_there_is_an_example_of_each_kind_and_a_test() -> None:
    assert set(snippets()) == {*KINDS, "testing"}


@pytest.mark.parametrize("kind", KINDS)
def test_each_example_passes_every_check(kind: str) -> None:
    load_snippet(kind)
    mine = [spec for spec in facekit.get_registry(kind) if spec.plugin == "myplugin"]  # type: ignore[arg-type]
    assert len(mine) == 1
    check_component(kind, mine[0])  # type: ignore[arg-type]


def test_the_testing_snippet_runs_as_written() -> None:
    for kind in KINDS:
        load_snippet(kind, plugin="myplugin" if kind == "warper" else f"other-{kind}")
    namespace: dict[str, Any] = {}
    exec(compile(snippets()["testing"], "CONTRIBUTING.md:testing", "exec"), namespace)
    marker = next(m for m in namespace["test_conforms"].pytestmark if m.name == "parametrize")
    cases = marker.args[1]
    assert [case.id for case in cases][:2] == ["warper-smooth-tps-params_round_trip", "warper-smooth-tps-protocol"]
    for case in cases:
        namespace["test_conforms"](*case.values)


def test_the_examples_type_check(tmp_path: Path) -> None:
    """A plugin author's mypy reads facekit's types (py.typed), so a pasted example must pass it as their own code
    would, under pyproject's [tool.mypy] (every def annotated). Before: 15 errors, among them the decoder's buffers
    (torch types ``register_buffer``'s attributes as ``Tensor | Module``: "Tensor" not callable), the app's zip over
    the optional ``faces.landmarks``, the unannotated ``XFAIL`` and every hook's untyped ``register``. 16-24 s with
    its cold cache on two cores, so ``make test`` runs it (not marked slow)."""
    from mypy import api

    files = []
    for kind, code in snippets().items():
        files.append(tmp_path / f"snippet_{kind}.py")
        files[-1].write_text(code)
    config = ["--config-file", str(REPO / "pyproject.toml"), "--cache-dir", str(tmp_path / "cache")]
    limit = sys.getrecursionlimit()
    try:
        report, errors, status = api.run([*config, "--no-color-output", *map(str, files)])
    finally:
        sys.setrecursionlimit(limit)  # (mypy's main sets 2**14 for the whole process: the tests after it ran so)
    assert status == 0, f"mypy on CONTRIBUTING.md's examples:\n{report}{errors}"
