"""One test per hookspec (named test_hook_<name>), plus the meta-test that keeps it that way."""

from __future__ import annotations

import ast
import inspect
import re
from typing import Any

import numpy as np
import torch

from facekit import hookspecs, registry
from facekit.align import eye_centres
from facekit.cli import app, main
from facekit.recipe import resolve
from facekit.registry import ComponentSpec, NoParams
from facekit.testing import check_app, check_decoder, check_detector, check_encoder, check_warper
from facekit.types import AlignmentTemplate, DecoderOutput, FaceDetection, ModelCard, WeightsSource
from tests.helpers import REPO

HOOKS = sorted(name for name, f in inspect.getmembers(hookspecs, inspect.isfunction) if name.startswith("register_"))


class EyesDetector:
    """A third-party-style detector built on dlib's: only the two eye centres (scheme eyes2)."""

    card = ModelCard(landmarks=2, landmark_scheme="eyes2", weights=(WeightsSource("none", None, "MIT"),))

    def __init__(self) -> None:
        self.inner = registry.load_component("detector", "dlib")

    def detect_array(self, image: Any) -> list[FaceDetection]:
        faces = self.inner.detect_array(image)
        return [FaceDetection(f.box, f.score, np.stack(eye_centres(f.landmarks)), "eyes2") for f in faces]


class MeanEncoder(torch.nn.Module):
    card = ModelCard(
        input_size=(16, 16),
        embedding_size=4,
        feature_size=6,
        threshold=0.5,
        distance="cosine",
        differentiable=True,
        weights=(WeightsSource("random", None, "MIT"),),
        template=AlignmentTemplate("eyes-16", ((5.0, 6.0), (10.0, 6.0)), scheme="eyes2"),
    )

    def __init__(self, _params: Any) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.body = torch.nn.Linear(3 * 16 * 16, 6)
        self.head = torch.nn.Linear(6, 4)

    def features(self, images: torch.Tensor) -> torch.Tensor:
        return self.body(images.flatten(1))

    def embed(self, images: torch.Tensor) -> torch.Tensor:
        return torch.nn.functional.normalize(self.head(self.features(images)), dim=1)


class TinyDecoder(torch.nn.Module):
    """An inference-only decoder (no landmarks, nothing training needs)."""

    feature_size = 4

    def __init__(self, _params: Any) -> None:
        super().__init__()
        self.linear = torch.nn.Linear(4, 3 * 8 * 8)

    def decode(self, features: torch.Tensor) -> DecoderOutput:
        return DecoderOutput(image=torch.sigmoid(self.linear(features)).view(-1, 3, 8, 8))


class DelegatingWarper:
    """A third-party-style warper built on the builtin spline, declared non-differentiable."""

    differentiable = False

    def __init__(self) -> None:
        self.inner = registry.load_component("warper", "rbf-linear")

    def warp(self, image: torch.Tensor, source: torch.Tensor, destination: torch.Tensor) -> tuple[Any, Any]:
        return self.inner.warp(image, source, destination)


class EchoApp:
    def apply(self, faces: DecoderOutput) -> dict[str, Any]:
        return {"shape": tuple(faces.image.shape)}


def test_hook_register_detectors(add_plugin: Any) -> None:
    add_plugin(
        "t-det",
        register_detectors=lambda register: register(
            ComponentSpec("eyes", lambda p: EyesDetector(), NoParams, card=EyesDetector.card)
        ),
    )
    spec = registry.get_registry("detector").get("eyes")
    assert spec.plugin == "t-det"
    check_detector(spec)
    assert resolve({"components": {"detector": {"name": "eyes"}}}).components["detector"].spec is spec


def test_hook_register_encoders(add_plugin: Any) -> None:
    add_plugin(
        "t-enc",
        register_encoders=lambda register: register(
            ComponentSpec("mean", MeanEncoder, NoParams, card=MeanEncoder.card)
        ),
    )
    check_encoder(registry.get_registry("encoder").get("mean"), skip={"identity": "random weights"})
    plan = resolve({"components": {"encoder": {"name": "mean"}, "judge": {"name": "mean"}}})
    assert plan.components["judge"].kind == "encoder"


def test_hook_register_decoders(add_plugin: Any) -> None:
    add_plugin("t-dec", register_decoders=lambda register: register(ComponentSpec("tiny", TinyDecoder)))
    check_decoder(registry.get_registry("decoder").get("tiny"), skip={"trainable": "inference only"})


def test_hook_register_warpers(add_plugin: Any) -> None:
    add_plugin(
        "t-warp", register_warpers=lambda register: register(ComponentSpec("shift", lambda p: DelegatingWarper()))
    )
    spec = registry.get_registry("warper").get("shift")
    check_warper(spec)
    assert spec.plugin == "t-warp"


def test_hook_register_apps(add_plugin: Any) -> None:
    add_plugin("t-app", register_apps=lambda register: register(ComponentSpec("echo", lambda p: EchoApp())))
    spec = registry.get_registry("app").get("echo")
    check_app(spec)
    assert spec.build().apply(DecoderOutput(image=torch.zeros(1, 3, 4, 4))) == {"shape": (1, 3, 4, 4)}
    assert resolve({"components": {"apps": [{"name": "echo"}]}}).components["apps.0"].spec is spec


def test_hook_register_commands(add_plugin: Any, capsys: Any) -> None:
    def register_commands(app: Any) -> None:
        @app.command("hello-plugin")
        def hello() -> None:
            """Say hello from a plugin."""
            print("hello from a plugin")

    add_plugin("t-cmd", register_commands=register_commands)
    try:
        assert main(["hello-plugin"]) == 0
        assert "hello from a plugin" in capsys.readouterr().out
    finally:
        app.registered_commands[:] = [c for c in app.registered_commands if c.name != "hello-plugin"]


def test_every_hookspec_is_documented_and_tested() -> None:
    """Meta-test: each hookspec has a docstring, a section in CONTRIBUTING.md and a test_hook_<name> here."""
    assert HOOKS, "no hookspecs found"
    contributing = (REPO / "CONTRIBUTING.md").read_text()
    tree = ast.parse(open(__file__).read())
    tests = {node.name for node in ast.walk(tree) if isinstance(node, ast.FunctionDef)}
    for name in HOOKS:
        assert inspect.getdoc(getattr(hookspecs, name)), f"hookspec {name} has no docstring"
        assert re.search(rf"^#+ .*`{name}", contributing, re.M), f"CONTRIBUTING.md has no section for {name}"
        assert f"test_hook_{name}" in tests, f"no test_hook_{name} in {__file__}"
