"""Shared fixtures: the data root, a cache folder of the run's, a clean plugin state per test, in-process test
plugins, the stop signals' default handlers."""

from __future__ import annotations

import os
import signal
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

import facekit

REPO = Path(__file__).resolve().parents[1]
DATA = Path(os.environ.get("FACEKIT_DATA", REPO.parent / "shared" / "data"))


def pytest_report_header(config: pytest.Config) -> str:
    """Free space where the tests write: a CI run that fills the disk fails as hundreds of setup errors."""
    import shutil
    import tempfile

    free = shutil.disk_usage(tempfile.gettempdir()).free / 2**30
    return f"free disk space in {tempfile.gettempdir()}: {free:.1f} GiB (a run needs about 2)"


@pytest.fixture(scope="session")
def data_root() -> Path:
    if not DATA.is_dir():
        pytest.skip(f"real data not found at {DATA} (set FACEKIT_DATA)")
    return DATA


@pytest.fixture(scope="session", autouse=True)
def _cache_of_the_run(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """What facekit makes itself (dlib's unpacked HOG detector, built by any test that builds a dlib detector) goes
    to a folder of the run's (``FACEKIT_CACHE``, in the environment so the commands the tests start inherit it), not
    the user's ~/.cache/facekit. FACEKIT_HOME stays: tests read the weights of its model store."""
    folder = tmp_path_factory.mktemp("facekit-cache")
    before = os.environ.get("FACEKIT_CACHE")
    os.environ["FACEKIT_CACHE"] = str(folder)
    yield folder
    if before is None:
        os.environ.pop("FACEKIT_CACHE", None)
    else:
        os.environ["FACEKIT_CACHE"] = before


@pytest.fixture(autouse=True)
def _fresh_plugins(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Every test starts and ends with freshly loaded plugins (env vars may change what loads)."""
    from facekit import plugins

    monkeypatch.delenv("FACEKIT_PLUGINS", raising=False)
    monkeypatch.delenv("FACEKIT_DISABLE_PLUGINS", raising=False)
    plugins.reset()
    yield
    plugins.reset()


@pytest.fixture
def add_plugin() -> Iterator[Any]:
    """Register an in-process plugin module (hook functions in a namespace) on the live plugin manager."""
    from facekit import plugins
    from facekit.registry import get_registries

    added: list[str] = []

    def add(name: str, **hooks: Any) -> ModuleType:
        module = ModuleType(name)
        for hook_name, function in hooks.items():
            setattr(module, hook_name, facekit.hookimpl(function))
        plugins.get_plugin_manager().register(module, name=name)
        get_registries.cache_clear()
        added.append(name)
        return module

    yield add
    plugins.reset()


@pytest.fixture(scope="session")
def shipped_normalizer() -> Any:
    """The shipped default model, loaded once for every test that only runs it (about 3 s a load)."""
    from facekit.normalize import Normalizer

    return Normalizer.from_checkpoint()


@pytest.fixture
def default_handlers() -> Iterator[None]:
    """The test runs with SIGTERM's and SIGHUP's default handlers and Python's own for SIGINT (KeyboardInterrupt), as
    a command started from a terminal does; pytest's are back after. (A test run started in the background, `make
    test &` or nohup, inherits SIGINT ignored, and Python then leaves it so: a Ctrl+C test saw no stop.)"""
    numbers = (signal.SIGTERM, signal.SIGHUP, signal.SIGINT)
    before = {number: signal.getsignal(number) for number in numbers}
    for number in before:
        signal.signal(number, signal.default_int_handler if number == signal.SIGINT else signal.SIG_DFL)
    yield
    for number, handler in before.items():
        signal.signal(number, handler)
