from __future__ import annotations

from typing import Any

import pytest

import facekit
from facekit.errors import ComponentNotFoundError, DuplicateComponentError, ParamsError
from facekit.registry import ComponentSpec, NoParams, Params, Registry
from facekit.types import ModelCard


class ScaleParams(Params):
    factor: float = 1.0


def make(name: str, plugin: str = "p") -> ComponentSpec[Any]:
    card = ModelCard()  # encoders and detectors must carry one
    return ComponentSpec(name=name, factory=lambda p: p, params=ScaleParams, summary="s", card=card, plugin=plugin)


def test_duplicate_name_names_both_plugins() -> None:
    registry: Registry[Any] = Registry("warper")
    registry.add(make("smooth", plugin="alpha"))
    with pytest.raises(DuplicateComponentError, match="'alpha' and 'beta'"):
        registry.add(make("smooth", plugin="beta"))
    registry.add(make("sharp", plugin="beta"))
    # Neither plugin's 'smooth' is used: asking for it says why; the other names work.
    with pytest.raises(DuplicateComponentError, match="'smooth' is registered by two plugins: 'alpha' and 'beta'"):
        registry.get("smooth")
    assert registry.names() == ["sharp"] and "smooth" not in registry
    with pytest.raises(DuplicateComponentError, match="3 plugins: 'alpha', 'beta' and 'gamma'; uninstall all but one"):
        registry.add(make("smooth", plugin="gamma"))
    # A plugin dropped (its hook failed half-way) gives up its claims: one claimant left owns the name again.
    registry.drop_plugin("gamma")
    with pytest.raises(DuplicateComponentError, match="two plugins: 'alpha' and 'beta'"):
        registry.get("smooth")
    registry.drop_plugin("beta")
    assert registry.get("smooth").plugin == "alpha" and registry.names() == ["smooth"]


def test_a_clash_with_a_builtin_name_says_to_rename_the_plugins_not_to_disable_builtin() -> None:
    """Before (helper-98): a plugin registering 'tps' was told "uninstall one, or disable it with
    FACEKIT_DISABLE_PLUGINS", and disabling the builtin plugin leaves out every one of facekit's own components."""
    registry: Registry[Any] = Registry("warper")
    registry.add(make("tps", plugin="builtin"))
    with pytest.raises(DuplicateComponentError) as raised:
        registry.add(make("tps", plugin="mine"))
    assert str(raised.value) == (
        "warper 'tps' is registered by two plugins: 'builtin' and 'mine'; the name is facekit's own: rename the "
        "component in plugin 'mine', or uninstall that plugin or set FACEKIT_DISABLE_PLUGINS=mine"
    )
    registry.add(make("smooth", plugin="alpha"))
    with pytest.raises(DuplicateComponentError, match=r"disable it with FACEKIT_DISABLE_PLUGINS=alpha \(or =beta\)$"):
        registry.add(make("smooth", plugin="beta"))


def test_unknown_name_suggests_close_matches_and_load_failures() -> None:
    registry: Registry[Any] = Registry("encoder", load_failures=("plugin 'x' failed to load: boom",))
    registry.add(make("facenet"))
    registry.add(make("vggface"))
    with pytest.raises(ComponentNotFoundError) as info:
        registry.get("facenett")
    message = str(info.value)
    assert "did you mean 'facenet'" in message
    assert "known: facenet, vggface" in message
    assert "plugin 'x' failed to load: boom" in message


def test_build_validates_params() -> None:
    spec = make("s")
    assert spec.build({"factor": 2}).factor == 2.0
    with pytest.raises(ParamsError, match="factr: extra field not permitted; did you mean 'factor'"):
        spec.build({"factr": 2})
    with pytest.raises(ParamsError, match="factor"):
        spec.build({"factor": "big"})


def test_register_rejects_non_specs() -> None:
    with pytest.raises(TypeError, match="ComponentSpec"):
        Registry("app").add({"name": "x"})  # type: ignore[arg-type]


def test_public_api_lists_and_loads_builtins() -> None:
    names = [spec.name for spec in facekit.list_components("warper")]
    assert {"rbf-linear", "tps", "cubic", "piecewise-affine"} <= set(names)
    assert all(spec.plugin == "builtin" for spec in facekit.list_components("warper"))
    warper = facekit.load_component("warper", "tps", boundary_points=3)
    assert warper.params.boundary_points == 3 and warper.order == 2
    with pytest.raises(ComponentNotFoundError, match="did you mean 'tps'"):
        facekit.load_component("warper", "tsp")
    with pytest.raises(ComponentNotFoundError, match="unknown component kind"):
        facekit.get_registry("warpers")  # type: ignore[arg-type]


def test_no_params_component() -> None:
    spec: ComponentSpec[Any] = ComponentSpec(name="n", factory=lambda p: p)
    assert isinstance(spec.build(), NoParams)


def test_every_encoder_card_says_same_person_for_close_embeddings_and_not_for_far_ones() -> None:
    """A cosine card's threshold is a similarity (same person above it), a Euclidean card's a distance (below it): a
    threshold copied from a library that counts cosine *distance* (1 - similarity) would reject genuine pairs.
    Published face-recognition thresholds lie between similarity 0.2 and 0.45, and Euclidean 0.5 and 1.3."""
    import numpy as np

    import facekit
    from facekit.evaluate import card_distance, card_passes

    def unit(angle: float) -> np.ndarray:
        return np.array([[np.cos(angle), np.sin(angle), 0.0, 0.0]])

    checked = 0
    for name in facekit.get_registry("encoder").names():
        card = facekit.get_registry("encoder").get(name).card
        if card is None or card.threshold is None:
            continue
        if card.distance == "cosine":
            close, far = unit(np.arccos(0.5)), unit(np.pi / 2)  # similarity 0.5 and 0
        else:
            close, far = unit(2 * np.arcsin(0.2)), unit(np.pi / 2)  # distance 0.4 and 1.41
        assert card_passes(card, card_distance(card, unit(0.0), close))[0], name
        assert not card_passes(card, card_distance(card, unit(0.0), far))[0], name
        checked += 1
    assert checked >= 4


def test_names_and_landmark_schemes_are_checked_when_registered() -> None:
    """Before: 'My Warp!' (which no recipe or command line can name) and a card's scheme 'ibug-68' (which the
    pipeline then reads as no known scheme) were registered and listed."""

    registry: Registry[Any] = Registry("warper")
    for bad in ("My Warp!", "", "-dash", "tps two"):
        with pytest.raises(ValueError, match="use lower-case letters"):
            registry.add(ComponentSpec(bad, lambda p: None, NoParams))
    registry.add(ComponentSpec("smooth_tps.v2-1", lambda p: None, NoParams))
    detectors: Registry[Any] = Registry("detector")
    card = ModelCard(landmarks=68, landmark_scheme="ibug-68")
    with pytest.raises(ValueError, match=r"detector 'mine' declares landmark scheme 'ibug-68'; known schemes: ibug68"):
        detectors.add(ComponentSpec("mine", lambda p: None, NoParams, card=card))


def test_a_warper_class_whose_warp_takes_the_pipelines_arguments_registers_however_it_is_defined() -> None:
    """call_mismatches read every method of a class factory as if it took the instance: a classmethod warp (bound to
    the class already) or a callable class attribute that binds nothing (a functools.partial) was refused at
    registration, "cannot be called as the pipeline calls it", although warp(image, source, destination) works."""
    import functools

    from facekit.errors import InvalidComponentSpec

    def plain_warp(image: Any, source: Any, destination: Any) -> Any:
        return image, None

    class Base:
        differentiable = False

        def __init__(self, params: Any) -> None:
            pass

    class ClassMethod(Base):
        @classmethod
        def warp(cls, image: Any, source: Any, destination: Any) -> Any:
            return image, None

    class StaticMethod(Base):
        warp = staticmethod(plain_warp)

    class Partial(Base):
        warp = functools.partial(plain_warp)

    class Args(Base):
        def warp(self, *args: Any) -> Any:
            return args[0], None

    class TwoArguments(Base):
        def warp(self, image: Any, points: Any) -> Any:
            return image, None

    class TwoArgumentsClassMethod(Base):
        @classmethod
        def warp(cls, image: Any, points: Any) -> Any:
            return image, None

    registry: Registry[Any] = Registry("warper")
    for cls in (ClassMethod, StaticMethod, Partial, Args):
        registry.add(ComponentSpec(cls.__name__.lower(), cls, NoParams))
        cls(None).warp(1, 2, 3)  # as the decoder calls it
    for cls in (TwoArguments, TwoArgumentsClassMethod):
        with pytest.raises(InvalidComponentSpec, match=r"warp\(.*points.*\) cannot be called as the pipeline calls"):
            registry.add(ComponentSpec(cls.__name__.lower(), cls, NoParams))


@pytest.mark.skipif(not hasattr(__import__("os"), "fork"), reason="fork is POSIX's")
def test_a_child_forked_while_another_thread_builds_the_registries_is_not_stuck() -> None:
    """Stop 53: the registries' lock, held at a fork by another thread building them, stayed held in the child,
    whose first component lookup waited forever. A forked child gets a new lock."""
    from facekit.registry import get_registries
    from tests.helpers import forked_while_held

    get_registries()
    assert forked_while_held(get_registries._lock, lambda: "paper" in facekit.get_registry("decoder")) == 0


def test_facekit_imports_where_there_is_no_fork() -> None:
    """Stop 53's at-fork hooks were registered with os.register_at_fork at import, which Windows' os does not have:
    facekit.images (the plugins' light module) and facekit.registry (every component lookup) failed to import there
    with AttributeError, as facekit.normalize already did since helper-108's hook. Where there is no fork there is
    nothing for a hook to do."""
    import subprocess
    import sys

    code = (
        "import os, random, torch  # (they ask sys.platform, or os.fork, before they register theirs)\n"
        "del os.fork, os.register_at_fork  # as on Windows\n"
        "import facekit.images, facekit.registry, facekit.normalize\n"
        "assert 'paper' in facekit.get_registry('decoder')\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]


class TupleDetector:
    """A plugin's detector whose points come out as (y, x) pairs in a wrong scheme (never asked to detect here)."""

    card = ModelCard(landmarks=68, landmark_scheme="ibug68")

    def __init__(self, params: NoParams) -> None:
        self.params = params


def test_lines_name_a_built_component_by_its_name_and_plugin_not_its_class() -> None:
    """A plugin author's walk (helper-229's brief): normalize's lines named a plugin's detector by its class ("the
    detector (TupleDetector) raised ..."), which a user who asked for 'tuple' in a recipe never typed: a component
    knew nothing of its spec. The registry now attaches what it built it as; one made by hand keeps its class."""
    import numpy as np

    from facekit.errors import FacekitError
    from facekit.normalize import check_detection, detector_failure
    from facekit.registry import built_as, component_label
    from facekit.types import FaceDetection

    spec = ComponentSpec("tuple", TupleDetector, NoParams, card=TupleDetector.card, plugin="mine")
    built = spec.build(kind="detector")
    assert built_as(built) is not None and built_as(built).params == {}  # type: ignore[union-attr]
    assert component_label(built, "detector") == "detector 'tuple' (plugin 'mine')"
    said = detector_failure(built, ValueError("bad box"))
    assert said == "the detector 'tuple' (plugin 'mine') raised ValueError on it: bad box"
    face = FaceDetection((0.0, 0.0, 9.0, 9.0), 1.0, np.zeros((5, 2)), "eyes-nose-mouth5")
    with pytest.raises(FacekitError, match=r"^detector 'tuple' \(plugin 'mine'\) returned a face with scheme"):
        check_detection(built, face)
    by_hand = TupleDetector(NoParams())
    assert built_as(by_hand) is None
    assert detector_failure(by_hand, ValueError("bad box")).startswith("the detector (TupleDetector) raised")
