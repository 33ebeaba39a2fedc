"""Plugin loading: allow/block lists, check_pending, load failures."""

from __future__ import annotations

import types

import pluggy
import pytest

import facekit
from facekit import plugins
from facekit.errors import PluginError


def test_builtin_plugin_is_loaded_once() -> None:
    state = plugins.get_plugin_state()
    assert [p.name for p in state.plugins].count("builtin") == 1
    assert plugins.get_plugin_state() is state  # cached: loading happens once per process
    builtin = next(p for p in state.plugins if p.name == "builtin")
    assert builtin.distribution == "facekit" and "register_warpers" in builtin.hooks


def test_disable_plugins_blocks_builtin(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FACEKIT_DISABLE_PLUGINS", "builtin")
    plugins.reset()
    assert "builtin" not in [p.name for p in plugins.get_plugin_state().plugins]
    assert facekit.list_components("warper") == []


def test_allow_list(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FACEKIT_PLUGINS", "")
    plugins.reset()
    assert plugins.get_plugin_state().plugins == []
    monkeypatch.setenv("FACEKIT_PLUGINS", "builtin")
    plugins.reset()
    assert [p.name for p in plugins.get_plugin_state().plugins] == ["builtin"]


def test_check_pending_catches_misspelled_hooks() -> None:
    from facekit import hookspecs

    class Typo:
        @facekit.hookimpl
        def register_warpres(self, register: object) -> None:  # misspelled on purpose
            pass

    manager = pluggy.PluginManager("facekit")
    manager.add_hookspecs(hookspecs)
    manager.register(Typo(), name="typo-plugin")
    with pytest.raises(PluginError, match=r"register_warpres.*Valid hook names: register_apps"):
        plugins.check_pending(manager)


def test_load_failure_message_says_how_to_disable() -> None:
    failure = plugins.LoadFailure("bad", "facekit-bad", "facekit_bad.plugin", "ImportError: nope")
    state = plugins.PluginState(pluggy.PluginManager("facekit"), failures=[failure])
    with pytest.raises(PluginError) as info:
        state.raise_failures()
    message = str(info.value)
    assert "facekit-bad" in message and "facekit_bad.plugin" in message
    assert "FACEKIT_DISABLE_PLUGINS=bad" in message and "ImportError: nope" in message


class _FakeEntryPoint:
    def __init__(self, name: str, distribution: str, module: object) -> None:
        self.name, self.value, self.module = name, f"{distribution}.module", module
        self.dist = types.SimpleNamespace(name=distribution, version="1.0")

    def load(self) -> object:
        return self.module


def test_a_second_distribution_with_a_taken_name_is_an_error(monkeypatch: pytest.MonkeyPatch) -> None:
    """Before: the second distribution's entry point was skipped without a word."""
    first, second = types.ModuleType("first_plugin"), types.ModuleType("second_plugin")
    points = [_FakeEntryPoint("shared", "facekit-first", first), _FakeEntryPoint("shared", "facekit-second", second)]
    monkeypatch.setattr(plugins, "_entry_points", lambda: points)
    plugins.reset()
    state = plugins.get_plugin_state()
    assert [p.distribution for p in state.plugins] == ["facekit-first"]
    with pytest.raises(PluginError, match=r"'shared' is already taken by distribution facekit-first.*facekit-second"):
        state.raise_failures()
    # The same distribution found twice on sys.path is one plugin, not an error.
    monkeypatch.setattr(
        plugins, "_entry_points", lambda: [points[0], _FakeEntryPoint("shared", "facekit-first", first)]
    )
    plugins.reset()
    assert plugins.get_plugin_state().failures == []
    plugins.reset()


def test_a_missing_first_party_component_names_its_distribution(monkeypatch: pytest.MonkeyPatch) -> None:
    """Before: 'unknown encoder dlib-resnet' and a list of what is installed; nothing said which package to add."""
    from facekit.errors import ComponentNotFoundError
    from facekit.normalize import Normalizer

    monkeypatch.setenv("FACEKIT_DISABLE_PLUGINS", "dlib")
    plugins.reset()
    with pytest.raises(
        ComponentNotFoundError, match="provided by the distribution facekit-dlib: pip install facekit-dlib"
    ):
        Normalizer.from_checkpoint()  # the shipped default model needs facekit-dlib (facekit[default])


def test_the_provider_table_matches_what_the_plugins_register() -> None:
    from facekit.registry import FIRST_PARTY_PROVIDERS
    from facekit.types import KINDS

    state = plugins.get_plugin_state()
    distribution = {p.name: p.distribution for p in state.plugins}
    registered = {
        (kind, spec.name): distribution[spec.plugin]
        for kind in KINDS
        for spec in facekit.get_registry(kind)
        if spec.plugin != "builtin"
    }
    assert registered == FIRST_PARTY_PROVIDERS
