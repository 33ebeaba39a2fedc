"""The meta-test of `make fuzz`: it runs each hypothesis property of tests/fuzz under its own ``-k`` (FUZZ_SECONDS
apiece), so every property must be named in the Makefile's FUZZ_PROPERTIES, by a word that picks it alone (the
geometry properties were left out of it until helper-202; helper-88: a word that picks two gives the second no
time)."""

from __future__ import annotations

import ast
import re
from pathlib import Path

from tests.helpers import REPO

FUZZ = Path(__file__).parent


def _fuzz_properties() -> list[str]:
    makefile = (REPO / "Makefile").read_text().replace("\\\n", " ")
    found = re.search(r"^FUZZ_PROPERTIES\s*:?=(.*)$", makefile, re.MULTILINE)
    assert found, "the Makefile has no FUZZ_PROPERTIES"
    return found.group(1).split()


def _tests() -> dict[str, bool]:
    """Each test function of tests/fuzz by name, with whether it is a hypothesis property (``@given``)."""
    tests = {}
    for module in sorted(FUZZ.glob("test_*.py")):
        for node in ast.parse(module.read_text()).body:
            if isinstance(node, ast.FunctionDef) and node.name.startswith("test_"):
                decorators = [d.func if isinstance(d, ast.Call) else d for d in node.decorator_list]
                tests[node.name] = any(isinstance(d, ast.Name) and d.id == "given" for d in decorators)
    return tests


def test_make_fuzz_names_every_property_once_by_a_word_that_picks_it_alone() -> None:
    tests = _tests()
    # pytest -k also matches the names above a test (its module, its folders): a word in one picks a whole file
    parents = {p.name.lower() for p in FUZZ.glob("test_*.py")} | {"fuzz", "tests"}
    named: dict[str, str] = {}
    for word in _fuzz_properties():
        picked = [name for name in tests if word.lower() in name.lower()]
        assert len(picked) == 1, f"FUZZ_PROPERTIES' {word!r} picks {picked or 'no test'}, not one property"
        assert not any(word.lower() in parent for parent in parents), f"{word!r} picks a whole module"
        assert tests[picked[0]], f"{word!r} picks {picked[0]}, which is no hypothesis property"
        assert picked[0] not in named, f"{word!r} and {named.get(picked[0])!r} both pick {picked[0]}"
        named[picked[0]] = word
    missed = [name for name, is_property in tests.items() if is_property and name not in named]
    assert not missed, f"`make fuzz` never runs {missed}: add a word for each to FUZZ_PROPERTIES in the Makefile"


def test_make_fuzz_ends_each_property_with_a_signal_facekit_does_not_stop_on() -> None:
    """timeout's own SIGTERM landed inside the command-line property's ``main()``, which takes it as a user's stop
    (exit 143): the property failed, and `make fuzz` with it, at its time limit (helper-202)."""
    makefile = (REPO / "Makefile").read_text().replace("\\\n", " ")
    limits = re.findall(r"\btimeout\b(.*?)\$\(FUZZ_SECONDS\)", makefile)
    assert limits, "make fuzz runs no timeout"
    for options in limits:
        found = re.search(r"(?:--signal=|-s\s*)(?:SIG)?(\w+)", options)
        assert found and found.group(1).upper() not in ("TERM", "INT", "HUP"), options
