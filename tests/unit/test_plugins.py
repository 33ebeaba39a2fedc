"""Plugin loading: allow/block lists, check_pending, load failures."""

from __future__ import annotations

import types
from importlib import metadata
from pathlib import Path
from typing import Any

import pluggy
import pytest

import facekit
from facekit import plugins
from facekit.errors import FacekitError, PluginError
from facekit.recipe import load_recipe


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
    with pytest.raises(PluginError, match=r"register_warpres.*valid: register_apps"):
        plugins.check_pending(manager)
    # Loading: the plugin is unloaded and reported like one that failed to import; the others keep working.
    state = plugins.PluginState(manager)
    plugins.check_pending(manager, state)
    assert not manager.has_plugin("typo-plugin") and "register_warpres" in state.failures[0].message()


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


def _installed_beside(monkeypatch: pytest.MonkeyPatch, *added: _FakeEntryPoint) -> None:
    """The real plugins and ``added``, registries to be built afresh, their hook failures counted from none."""
    from facekit import registry

    real = plugins._entry_points()
    monkeypatch.setattr(plugins, "_entry_points", lambda: [*real, *added])
    monkeypatch.setattr(registry, "HOOK_FAILURES", [])
    plugins.reset()


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

    real = plugins._entry_points()
    monkeypatch.setattr(plugins, "_entry_points", lambda: [ep for ep in real if ep.name != "dlib"])  # not installed
    plugins.reset()
    with pytest.raises(
        ComponentNotFoundError, match="provided by the distribution facekit-dlib: pip install facekit-dlib"
    ):
        Normalizer.from_checkpoint()  # the shipped default model needs facekit-dlib (facekit[default])
    # Installed but left out by the environment: said so, not "pip install".
    monkeypatch.setattr(plugins, "_entry_points", lambda: real)
    monkeypatch.setenv("FACEKIT_DISABLE_PLUGINS", "dlib")
    plugins.reset()
    said = r"facekit-dlib, installed but left out by FACEKIT_DISABLE_PLUGINS \(plugin 'dlib'\)"
    with pytest.raises(ComponentNotFoundError, match=said):  # (before: "by FACEKIT_PLUGINS or ...", not saying which)
        Normalizer.from_checkpoint()
    monkeypatch.delenv("FACEKIT_DISABLE_PLUGINS")
    monkeypatch.setenv("FACEKIT_PLUGINS", "builtin")
    plugins.reset()
    with pytest.raises(ComponentNotFoundError, match="left out by FACEKIT_PLUGINS, which does not name it"):
        Normalizer.from_checkpoint()
    plugins.reset()


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


def test_a_plugin_whose_hooks_raise_or_shadow_a_command_is_left_out_and_reported(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Before: a registration hook that raised was a traceback in every command that looks up a component, and a
    plugin's command named like one of facekit's silently replaced it."""
    import typer

    from facekit import cli, registry
    from facekit.registry import ComponentSpec, NoParams

    broken = types.ModuleType("broken_plugin")

    @facekit.hookimpl
    def register_warpers(register: object) -> None:
        register(ComponentSpec("half-registered", lambda params: None, NoParams))
        raise ModuleNotFoundError("No module named 'missing_dependency'")

    @facekit.hookimpl
    def register_commands(app: typer.Typer) -> None:
        @app.command("normalize")
        def shadow() -> None:
            """Not facekit's normalize."""

    broken.register_warpers = register_warpers  # type: ignore[attr-defined]
    broken.register_commands = register_commands  # type: ignore[attr-defined]
    real = plugins._entry_points()
    monkeypatch.setattr(plugins, "_entry_points", lambda: [*real, _FakeEntryPoint("broken", "facekit-broken", broken)])
    monkeypatch.setattr(registry, "HOOK_FAILURES", [])
    monkeypatch.setattr(cli, "COMMAND_FAILURES", [])
    monkeypatch.setattr(cli, "_COMMANDS_ADDED", set(cli._COMMANDS_ADDED))
    commands, groups = list(cli.app.registered_commands), list(cli.app.registered_groups)
    plugins.reset()
    try:
        warpers = facekit.get_registry("warper")
        assert "rbf-linear" in warpers.names() and "half-registered" not in warpers.names()
        assert (
            "missing_dependency" in registry.HOOK_FAILURES[0]
            and "FACEKIT_DISABLE_PLUGINS=broken" in (registry.HOOK_FAILURES[0])
        )
        plugins.reset()  # a rebuild in the same process lists the failure once, not once per build
        facekit.get_registry("warper")
        assert len(registry.HOOK_FAILURES) == 1
        cli._register_plugin_commands()
        normalize = [c for c in cli.app.registered_commands if (c.name or c.callback.__name__) == "normalize"]
        assert len(normalize) == 1 and normalize[0].callback is not None
        assert normalize[0].callback.__module__ == "facekit.cli"
        assert len(cli.COMMAND_FAILURES) == 1 and "'broken' registers command(s) normalize" in cli.COMMAND_FAILURES[0]
        cli._register_plugin_commands()  # again in the same process (main() run twice): nothing added, nothing failed
        assert len(cli.COMMAND_FAILURES) == 1
    finally:
        cli.app.registered_commands[:], cli.app.registered_groups[:] = commands, groups
        plugins.reset()


def test_a_plugins_unusable_component_is_left_out_alone(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """A spec named so no recipe can type it ('My Warp'), declaring an unknown landmark scheme, whose params are
    no facekit.Params (a dataclass: before, a traceback at `facekit check`; an instance: before, called "not a
    pydantic model"), or whose factory cannot take the params (before, a TypeError traceback in the stage that built
    it) is left out with a warning; the same hook's other components stay (the whole hook was dropped when the check
    first came)."""
    from pydantic import BaseModel, ConfigDict

    from facekit import registry
    from facekit.registry import ComponentSpec, NoParams
    from facekit.types import ModelCard

    class PlainModel(BaseModel):
        model_config = ConfigDict(extra="forbid")

    class LaxModel(BaseModel):
        strength: float = 1.0

    class NoParamsWarper:
        def __init__(self) -> None:
            pass

    class OddWarper:  # warp takes the points once: the decoder calls warp(image, source, destination)
        differentiable = True

        def __init__(self, params: Any) -> None:
            pass

        def warp(self, image: Any, points: Any) -> Any:
            return image, None

    mixed = types.ModuleType("mixed_plugin")

    @facekit.hookimpl
    def register_warpers(register: Any) -> None:
        register(ComponentSpec("My Warp", lambda params: None, NoParams))
        register(ComponentSpec("good-warp", lambda params: None, NoParams))
        register(ComponentSpec("odd-scheme", lambda params: None, NoParams, card=ModelCard(landmark_scheme="ibug-68")))
        register(ComponentSpec("dataclass-params", lambda params: None, dict))  # type: ignore[arg-type]
        register(ComponentSpec("pydantic-params", lambda params: None, PlainModel))  # a plain BaseModel: it works
        register(ComponentSpec("lax-params", lambda params: None, LaxModel))  # takes unknown keys: typos pass
        register(ComponentSpec("params-instance", lambda params: None, NoParams()))  # type: ignore[arg-type]
        register(ComponentSpec("no-params-factory", NoParamsWarper, NoParams))  # its __init__ takes no params
        register(ComponentSpec("odd-warp-class", OddWarper, NoParams))  # a class: its warp is read at registration
        register(ComponentSpec("odd-warp-made", lambda params: OddWarper(params), NoParams))  # read when built

    mixed.register_warpers = register_warpers  # type: ignore[attr-defined]
    _installed_beside(monkeypatch, _FakeEntryPoint("mixed", "facekit-mixed", mixed))
    try:
        names = facekit.get_registry("warper").names()
        assert "good-warp" in names and "rbf-linear" in names and "pydantic-params" in names
        assert "My Warp" not in names and "odd-scheme" not in names and "dataclass-params" not in names
        assert "lax-params" not in names and "params-instance" not in names and "no-params-factory" not in names
        assert "odd-warp-class" not in names and "odd-warp-made" in names
        assert len(registry.HOOK_FAILURES) == 7
        assert (
            "plugin 'mixed' registers an unusable warper, left out: warper name 'My Warp'" in registry.HOOK_FAILURES[0]
        )
        assert "known schemes" in registry.HOOK_FAILURES[1]
        assert "not a pydantic model: use a subclass of facekit.Params" in registry.HOOK_FAILURES[2]
        assert "takes unknown keys, so a misspelled setting" in registry.HOOK_FAILURES[3]
        assert "params is an instance of NoParams, not the class: register params=NoParams" in registry.HOOK_FAILURES[4]
        assert (
            "factory test_a_plugins_unusable_component_is_left_out_alone.<locals>.NoParamsWarper() cannot be called "
            "with the params alone: facekit builds a component as factory(params)"
        ) in registry.HOOK_FAILURES[5]
        # A warp with another signature: before, registered, built and checked fine, and training ended in a
        # TypeError traceback from inside the decoder.
        said = "left out: warper 'odd-warp-class': warp(self, image: 'Any', points: 'Any') cannot be called as the"
        assert said + " pipeline calls it, warp(image, source, destination)" in registry.HOOK_FAILURES[6]
        with pytest.raises(FacekitError, match=r"warper 'odd-warp-made' \(plugin 'mixed'\): warp\(image"):
            facekit.load_component("warper", "odd-warp-made")
        recipe = tmp_path / "odd.yaml"
        recipe.write_text("components: {warper: {name: odd-warp-made}}")
        with pytest.raises(FacekitError, match=r"odd-warp-made.*cannot be called as the pipeline calls it"):
            load_recipe(str(recipe)).components["warper"].build()  # how the train stage builds its warper
    finally:
        plugins.reset()


def test_a_hook_that_asks_for_registries_is_its_plugins_error_alone(monkeypatch: pytest.MonkeyPatch) -> None:
    """Before (helper-61): a register_* hook that called get_registry re-entered the build, which recursed until
    RecursionError; the error was then charged to whichever plugins' hooks were on the stack (30 'load error' lines
    naming dlib, opencv, ...), and which components survived changed from run to run. Now that hook alone fails, with
    a line saying what to do. An encoder or detector without a model card is left out the same way (before: listed,
    accepted by `facekit check`, then an AttributeError traceback in training)."""
    from facekit import registry
    from facekit.registry import ComponentSpec, NoParams

    eager = types.ModuleType("eager_plugin")

    @facekit.hookimpl
    def register_detectors(register: Any) -> None:
        dlib = facekit.get_registry("detector").get("dlib")  # the mistake: a lookup while registries are built
        register(ComponentSpec("eager-det", lambda params: dlib.build(), NoParams, card=dlib.card))

    @facekit.hookimpl
    def register_encoders(register: Any) -> None:
        register(ComponentSpec("card-less", lambda params: None, NoParams))

    eager.register_detectors = register_detectors  # type: ignore[attr-defined]
    eager.register_encoders = register_encoders  # type: ignore[attr-defined]
    _installed_beside(monkeypatch, _FakeEntryPoint("eager", "facekit-eager", eager))
    try:
        detectors, encoders = facekit.get_registry("detector"), facekit.get_registry("encoder")
        assert {"dlib", "yunet"} <= set(detectors.names()) and "eager-det" not in detectors.names()
        assert {"dlib-resnet", "sface"} <= set(encoders.names()) and "card-less" not in encoders.names()
        assert len(registry.HOOK_FAILURES) == 2, registry.HOOK_FAILURES
        assert registry.HOOK_FAILURES[0].startswith("plugin 'eager' failed in register_detectors: FacekitError")
        assert "in its factory" in registry.HOOK_FAILURES[0]
        assert "encoder 'card-less' has no model card" in registry.HOOK_FAILURES[1]
    finally:
        plugins.reset()


def test_clashes_are_reported_once_after_every_hook_ran_and_apart_from_load_failures(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """helper-62: a clash was reported as it happened, so a name given back when the claiming plugin's hook then
    failed was still called unusable; three claimants made two lines, one plugin registering a name twice read
    "two plugins: 'solo' and 'solo'"; clashes were listed among "plugins that failed to load" in every not-found
    message, and a misspelled clashing name got no "did you mean". `facekit adjust --method` with a clashing app
    said "no such method". Threads asking at once wait for one build."""
    import threading

    from facekit import cli, registry
    from facekit.errors import ComponentNotFoundError, DuplicateComponentError
    from facekit.registry import ComponentSpec, NoParams

    def module(name: str, hook: str, names: list[str], fail: bool = False) -> types.ModuleType:
        plugin = types.ModuleType(name)

        def register_all(register: Any) -> None:
            for component in names:
                register(ComponentSpec(component, lambda params: None, NoParams))
            if fail:
                raise RuntimeError("broken after registering")

        setattr(plugin, hook, facekit.hookimpl(register_all))
        plugin.__dict__[hook].__name__ = hook
        return plugin

    added = [
        _FakeEntryPoint("failing", "facekit-failing", module("failing", "register_warpers", ["tps"], fail=True)),
        _FakeEntryPoint("solo", "facekit-solo", module("solo", "register_warpers", ["twice", "twice"])),
        _FakeEntryPoint("a", "facekit-a", module("a", "register_warpers", ["shared-warp"])),
        _FakeEntryPoint("b", "facekit-b", module("b", "register_warpers", ["shared-warp"])),
        _FakeEntryPoint("c", "facekit-c", module("c", "register_warpers", ["shared-warp"])),
        _FakeEntryPoint("grey", "facekit-grey", module("grey", "register_apps", ["gray-world"])),
    ]
    _installed_beside(monkeypatch, *added)
    try:
        built: list[Any] = []
        threads = [threading.Thread(target=lambda: built.append(registry.get_registries())) for _ in range(4)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        assert len({id(registries) for registries in built}) == 1  # one build, every thread given it
        warpers = facekit.get_registry("warper")
        assert warpers.get("tps").plugin == "builtin"  # the failing plugin's claim was given up
        failures = registry.HOOK_FAILURES
        assert sum("'tps'" in line for line in failures) == 0 and len(failures) == 4, failures
        assert any("plugin 'solo' registers warper 'twice' 2 times: register it once" in line for line in failures)
        three = [line for line in failures if "'shared-warp'" in line]
        assert len(three) == 1 and "3 plugins: 'a', 'b' and 'c'; uninstall all but one" in three[0]
        with pytest.raises(ComponentNotFoundError) as info:
            warpers.get("shared-warps")
        assert "did you mean 'shared-warp'" in str(info.value) and "registered by" not in str(info.value)
        with pytest.raises(DuplicateComponentError, match="app 'gray-world' is registered by two plugins"):
            cli._corrector("gray-world", {})
    finally:
        plugins.reset()


class _BrokenEntryPoint(_FakeEntryPoint):
    def load(self) -> object:
        raise ModuleNotFoundError("No module named 'onnxruntime_extensions'")


def test_a_plugin_that_fails_to_import_is_left_out_and_the_rest_work(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """Before: one installed plugin with a missing dependency (or a misspelled hook) made every command that looks
    up a component exit 1 with a PluginError; now it is a warning, once per process, and the rest work."""
    from facekit.errors import ComponentNotFoundError

    real = plugins._entry_points()
    broken = _BrokenEntryPoint("broken", "facekit-broken", None)
    monkeypatch.setattr(plugins, "_entry_points", lambda: [*real, broken])
    plugins.reset()
    try:
        with caplog.at_level("WARNING", logger="facekit.plugins"):
            assert "rbf-linear" in facekit.get_registry("warper").names()
            facekit.get_registry("detector")
        warned = [r.getMessage() for r in caplog.records if "facekit-broken" in r.getMessage()]
        assert len(warned) == 1 and "FACEKIT_DISABLE_PLUGINS=broken" in warned[0]
        assert "onnxruntime_extensions" in warned[0]
        with pytest.raises(ComponentNotFoundError, match="facekit-broken"):  # what it might have registered: named
            facekit.get_registry("warper").get("shepard")
    finally:
        plugins.reset()


class _MadeForAnotherFacekit(_FakeEntryPoint):
    """A plugin built against a newer facekit: it imports a name this facekit's registry lacks."""

    def __init__(self) -> None:
        super().__init__("future", "facekit-future", None)
        self.dist = types.SimpleNamespace(
            name="facekit-future", version="2.0", requires=["numpy>=1.26", "facekit>=0.3,<0.4", "pytest; extra == 'x'"]
        )

    def load(self) -> object:
        raise ImportError("cannot import name 'register_v2' from 'facekit.registry'", name="facekit.registry")


def test_a_plugin_made_for_another_facekit_says_to_upgrade_one_of_them(monkeypatch: pytest.MonkeyPatch) -> None:
    """Before: 'failed to load: ImportError: cannot import name ... from facekit.registry' and 'Fix or uninstall it',
    which read like a bug in the plugin; the cause is a facekit older (or newer) than the one the plugin was made for.
    An ImportError of a plugin's own dependency says nothing of facekit versions."""
    from facekit import registry

    future = types.ModuleType("future_hook_plugin")

    @facekit.hookimpl
    def register_warpers(register: object) -> None:  # the same, where a plugin imports facekit inside its hook
        raise ImportError("cannot import name 'WarpCard' from 'facekit.types'", name="facekit.types")

    future.register_warpers = register_warpers  # type: ignore[attr-defined]
    broken = _BrokenEntryPoint("broken", "facekit-broken", None)
    _installed_beside(
        monkeypatch, _MadeForAnotherFacekit(), broken, _FakeEntryPoint("hooked", "facekit-hooked", future)
    )
    try:
        messages = {failure.name: failure.message() for failure in plugins.get_plugin_state().failures}
        assert "\n" not in messages["future"] and "plugin 'future' (distribution facekit-future" in messages["future"]
        assert (
            f"facekit {facekit.__version__} lacks what facekit-future imports (facekit-future 2.0 asks for facekit "
            ">=0.3,<0.4): upgrade facekit"
        ) in messages["future"]
        assert "install a facekit-future release" not in messages["future"]  # (one made for this facekit is older)
        assert "upgrade facekit" not in messages["broken"]
        assert "rbf-linear" in facekit.get_registry("warper").names()  # the rest work
        hooked = [line for line in registry.HOOK_FAILURES if "'hooked'" in line]
        assert len(hooked) == 1 and "facekit.types" in hooked[0] and "lacks what the plugin imports" in hooked[0]
    finally:
        plugins.reset()


def test_a_plugin_made_for_an_older_facekit_is_not_told_to_upgrade_facekit(monkeypatch: pytest.MonkeyPatch) -> None:
    """Before: every plugin failing on a facekit import was told "upgrade facekit, or install a release made for
    facekit X", also one whose range ends below this facekit (pip: "requires facekit<0.2, but you have facekit
    0.2.0"), which no newer facekit can serve; and its extras went into the range quoted ("facekit [serve]>=0.1").
    Now the advice follows where this facekit stands, as packaging judges it; inside the range (the plugin's lower
    bound too low) or a range it cannot judge (a pre-release), both ways as before."""
    error = ImportError("cannot import name 'Old' from 'facekit.types'", name="facekit.types")

    def advice(requirement: str, installed: str) -> str:
        monkeypatch.setattr(facekit, "__version__", installed)
        dist = types.SimpleNamespace(name="facekit-old", version="1.0", requires=["numpy", requirement])
        return plugins.facekit_mismatch(error, dist)  # type: ignore[arg-type]

    newer = advice('facekit[serve]<0.2,>=0.1 ; python_version >= "3.10"', "0.2.0")
    assert newer == (
        "; facekit 0.2.0 lacks what facekit-old imports (facekit-old 1.0 asks for facekit <0.2,>=0.1): install a "
        "facekit-old release made for facekit 0.2.0, or a facekit it asks for"
    )
    assert advice("facekit (~=0.3.1)", "0.2.0").endswith("asks for facekit ~=0.3.1): upgrade facekit")
    both = "upgrade facekit, or install a facekit-old release made for facekit"
    assert advice("facekit>=0.1,<0.3", "0.2.0").endswith(f"{both} 0.2.0")  # inside: its lower bound is too low
    assert advice("facekit>=0.3.0rc1", "0.2.0").endswith(f"{both} 0.2.0")


def test_a_plugin_made_for_another_facekit_is_judged_by_the_requirements_that_apply_here(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Before: of a requirement's marker only ``extra`` was read. A facekit range for another Python or platform was
    quoted and judged as this one's (the last such line won), and one that applies here with or without an extra was
    passed over. Now a marker is evaluated as pip does, for this interpreter and none of the plugin's extras."""
    error = ImportError("cannot import name 'New' from 'facekit.types'", name="facekit.types")
    monkeypatch.setattr(facekit, "__version__", "0.2.0")

    def advice(*requires: str) -> str:
        dist = types.SimpleNamespace(name="facekit-p", version="1.0", requires=["numpy", *requires])
        return plugins.facekit_mismatch(error, dist)  # type: ignore[arg-type]

    upgrade = "(facekit-p 1.0 asks for facekit >=0.3): upgrade facekit"
    both = ": upgrade facekit, or install a facekit-p release made for facekit 0.2.0"
    elsewhere, here = 'sys_platform == "no-such-platform"', 'sys_platform != "no-such-platform"'
    assert advice(f"facekit>=0.3; {here}", f"facekit<0.1; {elsewhere}").endswith(upgrade)
    assert advice(f"facekit<0.1; {elsewhere}", f"facekit>=0.3; {here}").endswith(upgrade)
    assert advice('facekit>=0.3; python_version < "3"').endswith(f"lacks what facekit-p imports{both}")
    assert advice('facekit>=0.3; extra == "gpu" or python_version >= "3"').endswith(upgrade)
    assert advice('facekit<0.1; extra == "gpu" and python_version >= "3"').endswith(f"imports{both}")
    assert advice("facekit>=0.3; no_such_name == '1'").endswith(f"imports{both}")  # unreadable: no range quoted


@pytest.mark.parametrize(
    "specifier",
    [">=0.1", "~=0.1.0", "~=0.1", "==0.1.*", "<0.2,>=0.1", ">=0.1,<0.2", "!=0.1.0", "!=0.1.*", ">0.1", "<=0.1",
     "==0.1", "==0.1.0.0", ">=0.2,<0.3", "~=0.2.1", "==1.*", "<1,>0.0.9", ""],
)  # fmt: skip
def test_facekit_side_agrees_with_packaging(specifier: str) -> None:
    """facekit_side judges a release as packaging does (and says which way it falls outside)."""
    from packaging.specifiers import SpecifierSet
    from packaging.version import Version

    for installed in ("0", "0.0.9", "0.1", "0.1.0", "0.1.1", "0.2.0", "0.2.1", "0.10.0", "1.0", "1.2"):
        side = plugins.facekit_side(installed, specifier)
        admitted = SpecifierSet(specifier).contains(Version(installed), prereleases=True)
        assert side is not None and (side == "") == admitted, (installed, specifier, side)
        if side in ("older", "newer"):  # which way: every version the range admits is above it, or below it
            others = map(Version, ("0.0.1", "0.1.0", "0.1.5", "0.2.0", "0.2.5", "0.3", "1.0", "1.5", "3"))
            admits = [v for v in others if SpecifierSet(specifier).contains(v)]
            assert all((v > Version(installed)) == (side == "older") for v in admits), (installed, specifier, side)


def test_a_plugin_without_a_named_distribution_made_for_another_facekit_is_one_line(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Before (helper-137): a plugin whose distribution has no name (metadata without ``Name``) failing in its hook
    with an ImportError of facekit's ended the registry build with metadata's "ValueError: A distribution name is
    required" (every command failed, not just the plugin), and one with no distribution to name was told to "install
    a the plugin release". Both are one line now; the rest of facekit works."""
    from facekit import registry

    def failing_hook() -> types.ModuleType:
        module = types.ModuleType("nameless_hook_plugin")

        @facekit.hookimpl
        def register_warpers(register: object) -> None:
            raise ImportError("cannot import name 'WarpCard' from 'facekit.types'", name="facekit.types")

        module.register_warpers = register_warpers  # type: ignore[attr-defined]
        return module

    nameless = _FakeEntryPoint("nameless", "", failing_hook())
    nameless.dist = types.SimpleNamespace(name=None, version="1.0", requires=["facekit>=0.3"])
    unpackaged = _FakeEntryPoint("unpackaged", "facekit-unpackaged", failing_hook())
    unpackaged.dist = None  # type: ignore[assignment]
    _installed_beside(monkeypatch, nameless, unpackaged)
    try:
        assert "rbf-linear" in facekit.get_registry("warper").names()  # the rest work
        for plugin in ("nameless", "unpackaged"):
            lines = [line for line in registry.HOOK_FAILURES if f"'{plugin}'" in line]
            assert len(lines) == 1 and "\n" not in lines[0], lines
            advice = "lacks what the plugin imports: upgrade facekit, or install a release of the plugin made for"
            assert advice in lines[0], lines[0]
    finally:
        plugins.reset()


def test_a_hook_with_another_argument_or_without_the_marker_is_left_out_and_reported(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Before: ``def register_warpers(reg)`` raised pluggy's PluginValidationError out of plugin loading, so every
    command (``facekit --help`` and ``facekit plugins`` included) ended in a traceback; a ``register_*`` function
    without ``@facekit.hookimpl`` was ignored without a word."""
    from facekit.registry import ComponentSpec, NoParams

    misnamed = types.ModuleType("misnamed_plugin")

    @facekit.hookimpl
    def register_warpers(reg: Any) -> None:
        reg(ComponentSpec("never-warp", lambda params: None, NoParams))

    misnamed.register_warpers = register_warpers  # type: ignore[attr-defined]
    unmarked = types.ModuleType("unmarked_plugin")
    unmarked.register_warpers = lambda register: None  # type: ignore[attr-defined]
    # One hook marked and another not (helper-173: its encoders were ignored without a word, the plugin listed).
    half = types.ModuleType("half_marked_plugin")

    @facekit.hookimpl
    def register_half_warpers(register: Any) -> None:
        register(ComponentSpec("half-warp", lambda params: None, NoParams))

    half.register_warpers = register_half_warpers  # type: ignore[attr-defined]
    half.register_encoders = lambda register: None  # type: ignore[attr-defined]
    real = plugins._entry_points()
    fakes = [
        _FakeEntryPoint("misnamed", "facekit-misnamed", misnamed),
        _FakeEntryPoint("unmarked", "facekit-un", unmarked),
        _FakeEntryPoint("half", "facekit-half", half),
    ]
    monkeypatch.setattr(plugins, "_entry_points", lambda: [*real, *fakes])
    plugins.reset()
    try:
        state = plugins.get_plugin_state()
        assert {p.name for p in state.plugins} >= {"builtin"} and not {"misnamed", "unmarked", "half"} & {
            p.name for p in state.plugins
        }
        messages = {failure.name: failure.message() for failure in state.failures}
        assert "{'reg'}" in messages["misnamed"] and "argument named register" in messages["misnamed"]
        assert "FACEKIT_DISABLE_PLUGINS=misnamed" in messages["misnamed"]
        assert "register_warpers not marked with @facekit.hookimpl" in messages["unmarked"]
        assert "register_encoders not marked with @facekit.hookimpl" in messages["half"]
        assert "half-warp" not in facekit.get_registry("warper").names()  # the half-marked plugin is left out whole
        assert "rbf-linear" in facekit.get_registry("warper").names()  # the rest work
    finally:
        plugins.reset()


def _distribution(name: str, *requires: str, extras: tuple[str, ...] = ()) -> types.SimpleNamespace:
    """A plugin's installed metadata, as importlib.metadata gives it: its requirements and the extras it offers."""
    from email.message import Message

    headers = Message()
    for extra in extras:
        headers["Provides-Extra"] = extra
    return types.SimpleNamespace(name=name, version="1.0", requires=list(requires), metadata=headers)


class _MissingADependency(_FakeEntryPoint):
    """A plugin whose module imports a package that is not installed (``import insightface`` at its top)."""

    def __init__(self, name: str, module: str, *requires: str) -> None:
        super().__init__(name, f"facekit-{name}", None)
        self.dist = _distribution(f"facekit-{name}", "facekit>=0.1,<0.2", *requires, extras=("casia",))
        self.missing = module

    def load(self) -> object:
        raise ModuleNotFoundError(f"No module named {self.missing!r}", name=self.missing)


def test_a_plugin_missing_a_dependency_says_what_to_install(monkeypatch: pytest.MonkeyPatch) -> None:
    """Before: 'failed to load: ModuleNotFoundError: No module named ...' and nothing of the package to install, its
    version (the plugin's requirement) or that an extra of the plugin asks for it; facekit's advice stays its own."""
    points = [
        _MissingADependency("declared", "absent_runtime.capi", "absent-runtime>=1.17"),
        _MissingADependency("extra", "absent_casia", 'absent-casia==0.1.0; extra == "casia"'),
        _MissingADependency("undeclared", "absent_thing"),
        _MissingADependency("old", "pluggy", "pluggy>=99"),  # installed, older than the plugin asks: a name is missing
    ]
    _installed_beside(monkeypatch, *points)
    try:
        messages = {failure.name: failure.message() for failure in plugins.get_plugin_state().failures}
        assert "\n" not in "".join(messages.values())
        assert (
            "No module named 'absent_runtime.capi'; facekit-declared 1.0 asks for absent-runtime>=1.17, which is not "
            "installed: pip install 'absent-runtime>=1.17'. Fix or uninstall it"
        ) in messages["declared"]
        assert (
            "facekit-extra 1.0 asks for absent-casia==0.1.0 (with its extra casia), which is not installed: pip "
            "install 'absent-casia==0.1.0'"
        ) in messages["extra"]
        assert (
            "facekit-undeclared 1.0 declares no requirement for absent_thing: install the package that provides"
            in (messages["undeclared"])
        )
        pluggy_version = metadata.version("pluggy")
        assert (
            f"asks for pluggy>=99, and pluggy {pluggy_version} is installed: pip install 'pluggy>=99'"
            in (messages["old"])
        )
        assert "rbf-linear" in facekit.get_registry("warper").names()  # the rest work
    finally:
        plugins.reset()
    # A dependency installed in the plugin's range that lacks what it imports: its lower bound is too low.
    error = ImportError("cannot import name 'New' from 'pluggy'", name="pluggy")
    advice = plugins.dependency_advice(error, _distribution("facekit-p", "pluggy>=1"))  # type: ignore[arg-type]
    assert advice == (
        f"; facekit-p 1.0 asks for pluggy>=1, and pluggy {pluggy_version} is installed, which lacks what facekit-p "
        f"imports: upgrade pluggy, or install a facekit-p release made for pluggy {pluggy_version}"
    )
    # Installed, yet the module is not there (a broken install; dlib-bin's wheel records no top-level name, so its
    # module is found by the requirement's name).
    monkeypatch.setattr(plugins.metadata, "packages_distributions", lambda: {})
    error = ModuleNotFoundError("No module named 'pluggy'", name="pluggy")
    advice = plugins.dependency_advice(error, _distribution("facekit-p", "pluggy>=1"))  # type: ignore[arg-type]
    assert advice.endswith(
        f"pluggy {pluggy_version} is installed without pluggy: pip install --force-reinstall 'pluggy>=1'"
    )
    # A requirement for another platform only is not the one to install here.
    elsewhere = 'absent-runtime>=1; sys_platform == "no-such-platform"'
    error = ModuleNotFoundError("No module named 'absent_runtime'", name="absent_runtime")
    advice = plugins.dependency_advice(error, _distribution("facekit-p", elsewhere))  # type: ignore[arg-type]
    assert advice == "; facekit-p 1.0 declares no requirement for absent_runtime: install the package that provides it"


def test_a_plugin_missing_a_module_of_its_own_is_told_to_reinstall_it(monkeypatch: pytest.MonkeyPatch) -> None:
    """A plugin whose own module is missing, or lacks a name (a broken install, a bug in it), was said to be a package
    it "declares no requirement for", to upgrade ("facekit-own 1.0 is installed, which lacks what facekit-own
    imports, and facekit-own 1.0 declares no requirement for it: upgrade facekit-own")."""
    _installed_beside(monkeypatch, _MissingADependency("own", "facekit_own.model"))
    try:
        (failure,) = [f for f in plugins.get_plugin_state().failures if f.name == "own"]
        assert (
            "No module named 'facekit_own.model'; facekit_own.model is facekit-own 1.0's own: reinstall it (pip "
            "install --force-reinstall --no-deps 'facekit-own==1.0'), and if that does not help, it is a bug in "
            "facekit-own: tell its authors. Fix or uninstall it"
        ) in failure.message()
    finally:
        plugins.reset()
    error = ImportError("cannot import name 'Net' from 'facekit_own.model'", name="facekit_own.model")
    advice = plugins.dependency_advice(error, _distribution("facekit-own", "numpy>=1"))  # type: ignore[arg-type]
    assert advice.startswith("; facekit_own.model is facekit-own 1.0's own: reinstall it")


def test_a_builtin_missing_a_module_of_facekits_own_is_told_to_reinstall_facekit() -> None:
    """A builtin component whose factory cannot import a facekit module (a broken install, a bug in facekit) was told
    "facekit 0.1.0 lacks what facekit imports: upgrade facekit, or install a facekit release made for facekit 0.1.0"."""
    from facekit.registry import ComponentSpec, NoParams

    def broken_factory(params: NoParams) -> object:
        raise ModuleNotFoundError("No module named 'facekit.gone'", name="facekit.gone")

    spec = ComponentSpec("broken-warp", broken_factory, NoParams, plugin="builtin")
    version = metadata.version("facekit")
    with pytest.raises(PluginError) as info:
        spec.build(kind="warper")
    assert str(info.value) == (
        "warper 'broken-warp' (plugin 'builtin') could not be built: ModuleNotFoundError: No module named "
        f"'facekit.gone'; facekit.gone is facekit {version}'s own: reinstall it (pip install --force-reinstall "
        f"--no-deps 'facekit=={version}'), and if that does not help, it is a bug in facekit: tell its authors"
    )


def test_a_component_whose_factory_misses_a_module_says_which_and_what_to_install(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Before: a plugin that loads fine but imports its runtime inside the factory (as heavy imports should be) gave
    the ImportError's traceback when the component was built, naming neither the component nor what to install."""
    from facekit import registry
    from facekit.recipe import ResolvedComponent
    from facekit.registry import ComponentSpec, NoParams

    lazy = types.ModuleType("lazy_plugin")

    @facekit.hookimpl
    def register_warpers(register: Any) -> None:
        register(ComponentSpec("lazy-warp", _misses_a_module, NoParams))

    lazy.register_warpers = register_warpers  # type: ignore[attr-defined]
    _installed_beside(monkeypatch, _FakeEntryPoint("lazy", "facekit-lazy", lazy))
    dist = _distribution("facekit-lazy", "facekit>=0.1,<0.2", "absent-runtime>=1.17")
    monkeypatch.setattr(registry, "_distribution", lambda plugin: dist if plugin == "lazy" else None)
    try:
        advice = (
            "facekit-lazy 1.0 asks for absent-runtime>=1.17, which is not installed: pip install 'absent-runtime>=1.17'"
        )
        with pytest.raises(PluginError) as info:
            facekit.load_component("warper", "lazy-warp")
        assert str(info.value) == (
            f"warper 'lazy-warp' (plugin 'lazy') could not be built: ModuleNotFoundError: No module named "
            f"'absent_runtime'; {advice}"
        )
        spec = facekit.get_registry("warper").get("lazy-warp")
        with pytest.raises(PluginError, match=r"^warper 'lazy-warp' \(plugin 'lazy', asked for at components.warper\)"):
            ResolvedComponent("warper", "warper", spec, NoParams()).build()  # as a recipe's run builds it
        with pytest.raises(PluginError, match=r"^warper 'lazy-warp' \(plugin 'lazy'\) could not be built"):
            spec.build()  # the kind found in the registries
    finally:
        plugins.reset()


def test_the_decoder_training_builds_and_a_method_say_where_they_were_asked_for(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """helper-168: the trainer's decoder and `facekit adjust --method`'s app were built without saying where they were
    asked for, so a module their factory missed was said without components.decoder (or --method NAME)."""
    from pydantic import Field

    from facekit import registry
    from facekit.cli import _corrector
    from facekit.registry import ComponentSpec, Params
    from facekit.train import build_decoder

    class LazyDecoderParams(Params):
        feature_size: int = Field(default=128, description="the encoder's")

    class LazyFixParams(Params):
        strength: float = Field(default=1.0, description="how much")

    lazy = types.ModuleType("lazy_plugin")

    @facekit.hookimpl
    def register_decoders(register: Any) -> None:
        register(ComponentSpec("lazy-decoder", _misses_a_module, LazyDecoderParams))

    @facekit.hookimpl
    def register_apps(register: Any) -> None:
        register(ComponentSpec("lazy-fix", _misses_a_module, LazyFixParams))

    lazy.register_decoders, lazy.register_apps = register_decoders, register_apps  # type: ignore[attr-defined]
    _installed_beside(monkeypatch, _FakeEntryPoint("lazy", "facekit-lazy", lazy))
    monkeypatch.setattr(registry, "_distribution", lambda plugin: None)
    try:
        plan = load_recipe("recipes/demo.yaml", ["components.decoder={name: lazy-decoder}"])
        said = r"\(plugin 'lazy', asked for at {}\) could not be built: ModuleNotFoundError: No module named"
        with pytest.raises(PluginError, match="^decoder 'lazy-decoder' " + said.format("components.decoder")):
            build_decoder(plan, 256)
        with pytest.raises(PluginError, match="^app 'lazy-fix' " + said.format("--method lazy-fix")):
            _corrector("lazy-fix", {})
    finally:
        plugins.reset()


def _misses_a_module(params: object) -> object:
    """A component's factory that imports its runtime when built (as heavy imports should be), not installed here."""
    import absent_runtime  # type: ignore[import-not-found]  # noqa: F401

    raise AssertionError("absent_runtime is not installed")


def test_a_component_whose_factory_asks_for_a_missing_one_is_named_with_the_one_it_builds_on() -> None:
    """Before (helper-215): a plugin's wrapper of dlib-resnet (its factory calls load_component, as CONTRIBUTING.md
    says), with facekit-dlib left out, was said as "unknown encoder 'dlib-resnet' ... did you mean
    'dlib-resnet-grey'?", and a model trained with the wrapper as "made with a component not available here:
    unknown encoder 'dlib-resnet'": the component the user asked for, or the model was made with, went unnamed."""
    from facekit.errors import ComponentNotFoundError
    from facekit.registry import ComponentSpec, NoParams

    def wrapper(params: NoParams) -> object:
        return facekit.load_component("encoder", "no-such-encoder")

    spec = ComponentSpec("grey-wrapper", wrapper, NoParams, plugin="myplugin")
    with pytest.raises(ComponentNotFoundError) as info:
        spec.build(kind="encoder", asked_for="components.encoder")
    assert str(info.value).startswith(
        "encoder 'grey-wrapper' (plugin 'myplugin', asked for at components.encoder) builds on another not available "
        "here: unknown encoder 'no-such-encoder'"
    )


def test_a_wrapper_asking_for_a_missing_component_is_not_offered_as_the_one_it_meant() -> None:
    """Before (helper-219): a wrapper 'dlib-resnet-grey' whose factory asks for 'dlib-resnet', with facekit-dlib left
    out, was told "unknown encoder 'dlib-resnet' ... did you mean 'dlib-resnet-grey'?": the very component that
    asked. Other close names are still offered, and a plain lookup still offers the wrapper. (Warpers here: an
    encoder needs a model card, beside the point.)"""
    from facekit.errors import ComponentNotFoundError
    from facekit.registry import ComponentSpec, NoParams, Registry

    warpers: Registry[object] = Registry("warper")

    def grey(params: NoParams) -> object:
        return warpers.get("tps").build(params)

    def other(params: NoParams) -> object:
        raise AssertionError("not built")

    warpers.add(ComponentSpec("tps-grey", grey, NoParams, plugin="myplugin"))
    warpers.add(ComponentSpec("tps-x", other, NoParams, plugin="other"))
    with pytest.raises(ComponentNotFoundError) as info:
        warpers.get("tps-grey").build(kind="warper", asked_for="components.warper")
    message = str(info.value)
    assert message.startswith("warper 'tps-grey' (plugin 'myplugin', asked for at components.warper) builds on")
    assert message.split("did you mean ", 1)[1].split("?", 1)[0] == "'tps-x'", message
    with pytest.raises(ComponentNotFoundError, match="did you mean 'tps-grey'"):
        warpers.get("tps-gray")


def test_a_factory_that_raises_is_one_line_naming_the_component_and_its_plugin(monkeypatch: pytest.MonkeyPatch) -> None:
    """helper-223: a component whose factory raised its own error (a RuntimeError of the plugin's code) ended the
    command in that error's traceback, which named neither the component, the plugin, where it was asked for, nor
    how to leave it out; errors in facekit's words, and running out of memory, are raised as they were."""
    from facekit import registry
    from facekit.models import WeightsNotFoundError
    from facekit.registry import ComponentSpec, NoParams

    def raising(error: BaseException) -> Any:
        def factory(params: NoParams) -> object:
            raise error

        return factory

    monkeypatch.setattr(registry, "_distribution", lambda plugin: _distribution("facekit-mine", "facekit>=0.1"))
    spec = ComponentSpec("mine-app", raising(RuntimeError("no model\nfile")), NoParams, plugin="mine")
    with pytest.raises(PluginError) as info:
        spec.build(kind="app", asked_for="components.apps.0")
    assert str(info.value) == (
        "app 'mine-app' (plugin 'mine', asked for at components.apps.0) could not be built: RuntimeError: no model "
        "file (FACEKIT_DEBUG=1 for the traceback); check its params, else it is a bug in plugin 'mine' (facekit-mine "
        "1.0): tell its authors, or leave it out with FACEKIT_DISABLE_PLUGINS=mine"
    )
    assert isinstance(info.value.__cause__, RuntimeError)  # the traceback FACEKIT_DEBUG shows
    for kept in (WeightsNotFoundError("place the file"), MemoryError(), RuntimeError("CUDA error: out of memory")):
        with pytest.raises(type(kept)) as same:
            ComponentSpec("mine-app", raising(kept), NoParams, plugin="mine").build(kind="app")
        assert same.value is kept


def test_a_factory_stopped_by_the_machine_is_said_as_the_machines_not_as_a_plugins_bug() -> None:
    """A weight file the user may not read, or a full disk, in a builtin's factory was the CLI's one line ("Permission
    denied (...): check the file's permissions", exit 1) before 2f6e511 wrapped every factory's error as "a bug in
    facekit ... tell facekit's authors": the machine's OSErrors (facekit.errors.ENVIRONMENT_ERRNOS) pass as they were;
    another OSError is still the plugin's one line."""
    import errno

    from facekit.cli import _os_error_line
    from facekit.registry import ComponentSpec, NoParams

    def raising(error: BaseException) -> Any:
        def factory(params: NoParams) -> object:
            raise error

        return factory

    unreadable = PermissionError(errno.EACCES, "Permission denied", "/store/models/w.onnx")
    for kept in (unreadable, OSError(errno.ENOSPC, "No space left on device")):
        with pytest.raises(OSError) as same:
            ComponentSpec("facenet-x", raising(kept), NoParams, plugin="builtin").build(kind="encoder")
        assert same.value is kept
    assert _os_error_line(unreadable) == "Permission denied (/store/models/w.onnx): check its permissions"
    with pytest.raises(PluginError, match=r"^encoder 'facenet-x' \(plugin 'builtin'\) could not be built: OSError"):
        ComponentSpec("facenet-x", raising(OSError(errno.ENXIO, "No such device")), NoParams, plugin="builtin").build(
            kind="encoder"
        )


def test_a_component_lacking_its_protocols_members_is_refused_when_built() -> None:
    """helper-223: a warper registered as an encoder (no card, embed or features) was built and ended `facekit eval
    --judge` in an AttributeError traceback from facekit.align ('AWarper' object has no attribute 'card')."""
    from facekit_opencv.cards import sface_card

    from facekit.registry import ComponentSpec, NoParams, build_checked

    class AWarper:
        differentiable = True

        def __init__(self, params: NoParams) -> None:
            pass

        def warp(self, image: Any, source: Any, destination: Any) -> Any:
            return image, None

    spec = ComponentSpec("a-warper", AWarper, NoParams, card=sface_card(), plugin="mine")
    with pytest.raises(FacekitError) as info:
        build_checked("encoder", spec)
    assert str(info.value) == (
        "encoder 'a-warper' (plugin 'mine') lacks card, embed, features, which the pipeline reads from every encoder "
        "(facekit.types.Encoder): add them, or register it as the kind it is"
    )
    assert isinstance(build_checked("warper", spec), AWarper)
