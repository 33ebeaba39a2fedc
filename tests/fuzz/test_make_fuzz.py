"""The meta-test of `make fuzz`: it runs each hypothesis property of tests/fuzz under its own ``-k`` (FUZZ_SECONDS
apiece), so every property must be named in the Makefile's FUZZ_PROPERTIES, by a word that picks it alone (the
geometry properties were left out of it until helper-202; helper-88: a word that picks two gives the second no
time)."""

from __future__ import annotations

import functools
import json
import os
import re
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

from tests.helpers import REPO

FUZZ = Path(__file__).parent


def _fuzz_properties() -> list[str]:
    makefile = (REPO / "Makefile").read_text().replace("\\\n", " ")
    found = re.search(r"^FUZZ_PROPERTIES\s*:?=(.*)$", makefile, re.MULTILINE)
    assert found, "the Makefile has no FUZZ_PROPERTIES"
    return found.group(1).split()


#: A pytest plugin that writes, for each test it collects, the names ``-k`` matches a word in (as substrings): every
#: node's above it (its function, module, folders, and the checkout's own folder, whose name is anyone's: "main",
#: "h214"; pytest 8.0-8.3.3 matched it, pyproject allows pytest>=8), its markers, extra keywords, and its function's
#: attributes (hypothesis's ``given`` adds "hypothesis" and "is_hypothesis_test" to each property).
_NAMES_PLUGIN = """
import json, os


def pytest_collection_finish(session):
    found = {}
    for item in session.items:
        names = {node.name for node in item.listchain()} | set(item.listextrakeywords())
        names |= {mark.name for mark in item.iter_markers()}
        function = getattr(item, "function", None)
        names |= {name for name in vars(function) if not name.startswith("_")} if function else set()
        found[item.name] = {"names": sorted(names), "property": bool(getattr(function, "is_hypothesis_test", False))}
    with open(os.environ["FACEKIT_K_NAMES"], "w") as out:
        json.dump(found, out)
"""


@functools.cache
def _tests() -> dict[str, dict[str, Any]]:
    """Each test of tests/fuzz by name, as pytest collects it: the names ``-k`` matches (lower case) and whether it
    is a hypothesis property."""
    with tempfile.TemporaryDirectory() as scratch:
        (Path(scratch) / "facekit_k_names.py").write_text(_NAMES_PLUGIN)
        output = Path(scratch) / "names.json"
        env = {**os.environ, "FACEKIT_K_NAMES": str(output)}
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [scratch, env.get("PYTHONPATH")]))
        command = [sys.executable, "-m", "pytest", str(FUZZ), "--collect-only", "-q", "-p", "facekit_k_names"]
        done = subprocess.run([*command, "-p", "no:cacheprovider"], cwd=REPO, env=env, capture_output=True, text=True)
        assert done.returncode == 0 and output.is_file(), done.stdout + done.stderr
        found: dict[str, dict[str, Any]] = json.loads(output.read_text())
    for test in found.values():
        test["names"] = [name.lower() for name in test["names"]]
    return found


def _picked(word: str) -> list[str]:
    """The tests of tests/fuzz that ``pytest -k WORD`` runs."""
    return [name for name, test in _tests().items() if any(word.lower() in n for n in test["names"])]


def test_make_fuzz_names_every_property_once_by_a_word_that_picks_it_alone() -> None:
    tests = _tests()
    named: dict[str, str] = {}
    for word in _fuzz_properties():
        picked = _picked(word)
        assert len(picked) == 1, f"FUZZ_PROPERTIES' {word!r} picks {picked or 'no test'}, not one property"
        assert tests[picked[0]]["property"], f"{word!r} picks {picked[0]}, which is no hypothesis property"
        assert picked[0] not in named, f"{word!r} and {named.get(picked[0])!r} both pick {picked[0]}"
        named[picked[0]] = word
    missed = [name for name, test in tests.items() if test["property"] and name not in named]
    assert not missed, f"`make fuzz` never runs {missed}: add a word for each to FUZZ_PROPERTIES in the Makefile"


def test_a_word_in_the_checkouts_folder_or_hypothesis_names_picks_more_than_one_property() -> None:
    """pytest -k also matches the names above a test and those added to it: the check above counted the module's
    and the folders' names only, so a word inside the checkout's own folder name ("main", "h214": every test, on
    pytest 8.0-8.3.3) or inside what hypothesis adds to each property passed it and made `make fuzz` run many
    properties under one time limit (helper-88: the second gets no time)."""
    tests = _tests()
    properties = {name for name, test in tests.items() if test["property"]}
    assert len(properties) > 1
    for word in (REPO.name, "fuzz", "test_geometry.py", "tests"):
        assert len(_picked(word)) > 1, word
    for word in ("hypothesis", "is_hyp"):
        assert properties <= set(_picked(word)), word


def test_make_fuzz_ends_each_property_with_a_signal_facekit_does_not_stop_on() -> None:
    """timeout's own SIGTERM landed inside the command-line property's ``main()``, which takes it as a user's stop
    (exit 143): the property failed, and `make fuzz` with it, at its time limit (helper-202)."""
    makefile = (REPO / "Makefile").read_text().replace("\\\n", " ")
    limits = re.findall(r"\btimeout\b(.*?)\$\(FUZZ_SECONDS\)", makefile)
    assert limits, "make fuzz runs no timeout"
    for options in limits:
        found = re.search(r"(?:--signal=|-s\s*)(?:SIG)?(\w+)", options)
        assert found and found.group(1).upper() not in ("TERM", "INT", "HUP"), options
