"""The protocols say what the pipeline really calls, and the conformance checks hold components to it: a component
that follows the documented protocol works end to end, and one that deviates in a way the pipeline would turn into
a traceback or a wrong face is refused by the checks (found by a review with third-party components)."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
import yaml

import facekit
from facekit.decoder import PaperDecoder
from facekit.decoder_params import DecoderParams
from facekit.detail import DetailSettings
from facekit.errors import FacekitError
from facekit.registry import ComponentSpec, NoParams, Params
from facekit.testing import real_face, run_check
from facekit.types import ARCFACE_112_TEMPLATE, DecoderOutput, frozen_encoder

SFACE = facekit.get_registry("encoder").get("sface")


class PlainEncoder:
    """Meets types.Encoder without being a torch.nn.Module (an onnxruntime session would look like this)."""

    def __init__(self, mode: str = "ok", name: str = "sface") -> None:
        self.inner = facekit.load_component("encoder", name)
        self.card = self.inner.card
        self.mode = mode
        if hasattr(self.inner, "input_transform"):  # optional: dlib's chips have no fixed template points
            self.input_transform = self.inner.input_transform

    def embed(self, images: torch.Tensor) -> torch.Tensor:
        return self.inner.embed(images)

    def features(self, images: torch.Tensor) -> torch.Tensor:
        features = self.inner.features(images)
        if self.mode == "squeeze":  # a batch of one loses its axis
            return features.squeeze()
        return features.double() if self.mode == "float64" else features

    def embed_and_features(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        pair = (self.embed(images), self.features(images))
        return pair[::-1] if self.mode == "swapped" else pair


class Float64Projection:
    """An encoder whose outputs are float64 or numpy (the protocol says float32 tensors), without weights."""

    card = facekit.ModelCard(input_size=(112, 112), template=ARCFACE_112_TEMPLATE, embedding_size=8, feature_size=8)

    def __init__(self, mode: str) -> None:
        self.mode = mode

    def embed(self, images: torch.Tensor) -> Any:
        embedding = images.mean(dim=(2, 3)).repeat(1, 3)[:, :8]
        return embedding.numpy() if self.mode == "numpy embeddings" else embedding

    def features(self, images: torch.Tensor) -> torch.Tensor:
        return self.embed(images).double() if self.mode == "float64 features" else self.embed(images)


@pytest.mark.parametrize("mode", ["float64 features", "numpy embeddings"])
def test_encoder_outputs_that_are_not_float32_tensors_are_refused_naming_the_encoder(mode: str) -> None:
    """Before: float64 features passed the normalizer's check and the training pool took them unchecked, so training
    and inference ended in torch's "mat1 and mat2 must have the same dtype" from inside the decoder's first layer (and
    numpy embeddings in a TypeError from torch.cat in the pool)."""
    from facekit.normalize import check_features
    from facekit.pool import encode

    face = real_face()
    with pytest.raises(FacekitError, match=r"encoder Float64Projection returned .* not a \(2, F\) float32 tensor"):
        encode(Float64Projection(mode), None, np.stack([face.image] * 2), np.stack([face.ibug68] * 2))
    if mode == "float64 features":  # what the normalizer checks before its decoder
        with pytest.raises(FacekitError, match="dtype float64 for 1 face"):
            check_features(Float64Projection(mode), torch.zeros(1, 8, dtype=torch.float64), 1)


def test_an_encoder_that_is_not_a_module_runs_in_the_normalizer(shipped_normalizer: Any) -> None:
    """Before: Normalizer, train, eval and bench called encoder.to(device).eval(): AttributeError for any encoder
    that is not a Module (facekit's own arcface-onnx included)."""
    from facekit.normalize import Normalizer

    plain = PlainEncoder(name="dlib-resnet")
    assert frozen_encoder(plain) is plain
    run_check("encoder", ComponentSpec("plain", lambda _p: PlainEncoder(), NoParams, card=SFACE.card), "outputs")
    shipped = shipped_normalizer
    wrapped = Normalizer(shipped.decoder, plain, shipped.detector, shipped.meta)
    photo = real_face().image.copy()
    assert np.abs(wrapped.normalize(photo).image.astype(int) - shipped.normalize(photo).image).max() <= 1
    # An encoder that squeezes a batch of one: a one-line error naming it (before: an 85-line IndexError from the
    # decoder's first layer).
    squeezing = Normalizer(shipped.decoder, PlainEncoder("squeeze", name="dlib-resnet"), shipped.detector, shipped.meta)
    with pytest.raises(FacekitError, match=r"PlainEncoder returned features as a Tensor of shape \(256,\) for 1 face"):
        squeezing.normalize(photo)


@pytest.mark.parametrize(("mode", "message"), [("float64", "features dtype"), ("swapped", "embed_and_features")])
def test_conformance_catches_what_would_break_or_mislead_the_pipeline(mode: str, message: str) -> None:
    """float64 features were a dtype traceback in the decoder; an embed_and_features that disagreed with embed and
    features trained the decoder on the wrong vector with no error."""
    spec = ComponentSpec(f"plain-{mode}", lambda _p: PlainEncoder(mode), NoParams, card=SFACE.card)
    with pytest.raises(AssertionError, match=message):
        run_check("encoder", spec, "outputs")


class Pixels255(PaperDecoder):
    def decode(self, features: torch.Tensor) -> DecoderOutput:
        out = super().decode(features)
        return DecoderOutput(out.image * 255, out.landmarks, out.texture * 255)


class ForwardDiffers(PaperDecoder):
    def forward(self, features: torch.Tensor) -> DecoderOutput:
        out = self.decode(features)
        return DecoderOutput(torch.zeros_like(out.image), out.landmarks, out.texture)


class OtherParams(Params):
    size: int = 56


class NoFeatureSize(PaperDecoder):
    def __init__(self, params: OtherParams) -> None:
        super().__init__(DecoderParams(image_size=params.size, channels=16, hidden=16, feature_size=8))


@pytest.mark.parametrize(
    ("decoder", "params", "check", "message"),
    [
        (Pixels255, DecoderParams, "outputs", "not RGB in \\[0, 1\\]"),
        (ForwardDiffers, DecoderParams, "trainable", "is not decode"),
        (NoFeatureSize, OtherParams, "trainable", "feature_size field"),
    ],
)
def test_conformance_holds_decoders_to_what_training_and_inference_call(
    decoder: type, params: type[Params], check: str, message: str
) -> None:
    """Before: a 0-255 image gave white faces, a forward unlike decode gave black ones, a Params without
    feature_size failed in training: all three passed every check."""
    defaults = {"image_size": 56, "channels": 16, "hidden": 16, "feature_size": 8} if params is DecoderParams else {}
    spec = ComponentSpec(decoder.__name__, decoder, params)
    run_check("decoder", spec, "outputs" if check == "trainable" else "protocol", defaults)
    with pytest.raises(AssertionError, match=message):
        run_check("decoder", spec, check, defaults)


class StillWarper:
    """Declares itself not differentiable."""

    differentiable = False

    def warp(self, image: torch.Tensor, source: torch.Tensor, destination: torch.Tensor) -> tuple[Any, Any]:
        from facekit.warp import sparse_image_warp

        with torch.no_grad():
            return sparse_image_warp(image, source, destination)


def test_training_refuses_a_warper_the_identity_loss_cannot_pass_through(tmp_path: Path) -> None:
    """Before: trained with exit 0 while the identity term had no gradient (it reaches the decoder through the
    warped face). Refused before the training pool is made (that may take hours)."""
    from facekit.recipe import ResolvedComponent, resolve
    from facekit.train import build_decoder, train

    raw = {
        "components": {"encoder": {"name": "dlib-resnet"}, "decoder": {"name": "paper", "params": {"image_size": 112}}},
        "prepare": {"image_size": 112, "output": str(tmp_path / "not-prepared")},
        "train": {"output": str(tmp_path / "run")},
    }
    plan = resolve(raw)
    spec = ComponentSpec("still", lambda _p: StillWarper(), NoParams)
    plan.components["warper"] = ResolvedComponent("warper", "warper", spec, NoParams())
    with pytest.raises(FacekitError, match="warper 'still' says it is not differentiable"):
        build_decoder(plan, 256)
    with pytest.raises(FacekitError, match="warper 'still'"):  # not 'no prepared dataset': before the pool
        train(plan)
    quiet = resolve({**raw, "train": {"loss": {"identity": 0}, "output": str(tmp_path / "run")}})
    quiet.components["warper"] = plan.components["warper"]
    decoder, params = build_decoder(quiet, 256)
    assert params.feature_size == 256 and isinstance(decoder.warper, StillWarper)


def test_a_recipes_apps_run_in_the_infer_stage(data_root: Path, tmp_path: Path) -> None:
    """Before: components.apps validated and was never called (an app that raised on every call exited 0). The infer
    stage also takes `facekit normalize`'s face choice, photo detail, device and overwrite settings from the recipe
    (before: none of them), and says when outputs from other settings were left alone (before: "wrote", exit 0)."""
    from facekit.normalize import default_model_path

    photo = sorted((data_root / "london" / "smiling_front").glob("*.jpg"))[0]
    recipe = {
        "components": {
            "encoder": {"name": "dlib-resnet"},
            "decoder": {"name": "paper", "params": {"image_size": 112}},
            "apps": [
                {"name": "attributes"},
                {"name": "gray-world"},
                {"name": "gray-world", "params": {"strength": 0.5}},
            ],
        },
        "prepare": {"image_size": 112},
        "infer": {
            "inputs": [str(photo)],
            "checkpoint": str(default_model_path()),
            "output": str(tmp_path / "out"),
            "face": "central",
            "detail": 0.5,
            "detail_shape": 0.2,
            "detail_forehead": 1.0,
            "size": 224,
            "device": "auto",
        },
    }
    (tmp_path / "r.yaml").write_text(yaml.safe_dump(recipe))
    from tests.helpers import run_cli

    result = run_cli("run", str(tmp_path / "r.yaml"), "--stage", "infer")
    assert result.returncode == 0, result.stderr
    apps = json.loads((tmp_path / "out" / "apps.json").read_text())
    assert set(apps) == {"attributes", "gray-world (apps.1)", "gray-world (apps.2)"}  # the same app twice: both kept
    face = apps["attributes"]["faces"][str(photo)]
    assert 0 < face["ita_degrees"] < 90 and len(apps["gray-world (apps.1)"]["faces"][str(photo)]["gains_rgb"]) == 3
    record = json.loads((tmp_path / "out" / f"{photo.stem}.json").read_text())
    assert record["face"] == "central" and record["detail"] == DetailSettings.of(0.5, None, 0.2, 1.0).as_record()
    assert record["size"] == 224 and max(max(point) for point in record["landmarks"]) > 112  # infer.size: the face's
    from PIL import Image

    assert Image.open(tmp_path / "out" / f"{photo.stem}.png").size == (224, 224)
    (run,) = (tmp_path / "out" / "runs").glob("*-infer")
    info = json.loads((run / "run.json").read_text())
    assert info["device"]["requested"] == "auto" and info["finished"]  # `facekit run` marks a stage that completed

    # Other settings into the same folder: left alone and said so; with infer.overwrite, replaced. With no face
    # made, the earlier apps.json stays (helper-74: it was rewritten with no faces).
    written = (tmp_path / "out" / "apps.json").read_bytes()
    recipe["infer"]["detail"] = 0
    del recipe["infer"]["detail_forehead"]  # the band's reach, with the band off, is refused
    (tmp_path / "r.yaml").write_text(yaml.safe_dump(recipe))
    again = run_cli("run", str(tmp_path / "r.yaml"), "--stage", "infer")
    assert again.returncode == 3, again.stderr  # as `facekit normalize`: some photos have no output (before: 0)
    assert "0 of 1 photos have their normalized face" in again.stdout and "1 already there" in again.stdout
    assert "infer.overwrite" in again.stdout and (tmp_path / "out" / "apps.json").read_bytes() == written
    left = json.loads((tmp_path / "out" / "manifest.jsonl").read_text().splitlines()[-1])
    assert "infer.detail, infer.detail_shape" in left["reason"] and left["reason"].endswith("infer.overwrite replaces")
    # A user's apps.json where the apps would write theirs: refused before anything runs (helper-74: replaced).
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "apps.json").write_text('{"my": "notes"}')
    (tmp_path / "r2.yaml").write_text(
        yaml.safe_dump({**recipe, "infer": {**recipe["infer"], "output": str(tmp_path / "mine")}})
    )
    refused = run_cli("run", str(tmp_path / "r2.yaml"), "--stage", "infer")
    assert refused.returncode == 1 and "holds an apps.json facekit did not write" in refused.stderr, refused.stderr
    assert sorted(p.name for p in (tmp_path / "mine").iterdir()) == ["apps.json"]
    recipe["components"].pop("apps")
    recipe["infer"]["overwrite"] = True
    recipe["infer"]["checkpoint"] = "dlib"  # the shipped model by name (helper-74: a traceback hashing 'dlib')
    (tmp_path / "r.yaml").write_text(yaml.safe_dump(recipe))
    replaced = run_cli("run", str(tmp_path / "r.yaml"), "--stage", "infer")
    assert "1 of 1 photos have their normalized face" in replaced.stdout, replaced.stdout + replaced.stderr
    assert replaced.returncode == 0
    record = json.loads((tmp_path / "out" / f"{photo.stem}.json").read_text())
    assert record["detail"] == DetailSettings.of(0, None, 0.2).as_record()  # the decoder's face, shape 0.2


def test_app_results_are_per_face_only_when_they_follow_the_batch(tmp_path: Path) -> None:
    """An app's result of a fixed length that equals the batch (an RGB triple for 3 faces) is the batch's, saved
    once, not handed out as three faces' values (before: by length alone); a tensor that requires grad (an app with
    layers of its own) is taken without a traceback; and autograd stays on inside ``apply`` (an app that optimises,
    as the avatar's fit does, works in a recipe)."""
    import numpy as np
    import torch
    from PIL import Image

    from facekit.batch import Row
    from facekit.pipeline import run_apps

    class Head(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.linear = torch.nn.Linear(3, 2)

        def apply(self, faces: Any) -> dict[str, Any]:  # type: ignore[override]
            means = faces.image.mean(dim=(2, 3))  # (B, 3)
            fitted = means.clone().requires_grad_(True)
            (slope,) = torch.autograd.grad((fitted**2).sum(), fitted)  # raises under no_grad
            return {"mean_rgb": means, "batch_rgb": means.mean(0), "logits": self.linear(means), "slope": slope}

    class Built:
        spec = type("Spec", (), {"name": "head"})()
        slot = "apps.0"

        def build(self) -> Head:
            return Head()

    rows = []
    for index, grey in enumerate((60, 120, 180)):
        png = tmp_path / f"face{index}.png"
        Image.fromarray(np.full((16, 16, 3), grey, np.uint8)).save(png)
        png.with_suffix(".json").write_text(json.dumps({"landmarks": None}))
        rows.append(Row(f"in{index}.jpg", "ok", str(png)))
    results = run_apps([Built()], rows, tmp_path / "out")["head"]
    assert set(results["faces"]) == {"in0.jpg", "in1.jpg", "in2.jpg"}
    assert set(results["faces"]["in1.jpg"]) == {"mean_rgb", "logits", "slope"}
    assert np.allclose(results["faces"]["in1.jpg"]["slope"], [2 * 120 / 255] * 3, atol=1e-5)
    assert np.allclose(results["faces"]["in1.jpg"]["mean_rgb"], [120 / 255] * 3, atol=1e-6)
    (saved,) = results["batches"]
    assert set(saved) == {"batch_rgb"} and np.allclose(np.load(saved["batch_rgb"]), [120 / 255] * 3, atol=1e-6)


def test_apps_that_change_their_input_give_bfloat16_nan_or_raise_are_handled(tmp_path: Path) -> None:
    """Before (helper-54): an app that zeroed its input in place made the next app measure black faces; a bfloat16
    result was a TypeError traceback; a NaN was written into apps.json as bare NaN (not JSON); an app that raised was
    a 50-line traceback naming neither app nor plugin."""
    import torch

    from facekit.pipeline import run_apps

    class Zeroing:
        def apply(self, faces: Any) -> dict[str, Any]:
            faces.image.zero_()
            return {}

    class Mean:
        def apply(self, faces: Any) -> dict[str, Any]:
            means = faces.image.mean(dim=(1, 2, 3))
            return {"mean": means, "half": means.to(torch.bfloat16), "nan": means * float("nan")}

    class Raising:
        def apply(self, faces: Any) -> dict[str, Any]:
            raise RuntimeError("out of ideas")

    rows = _grey_face_rows(tmp_path)
    results = run_apps([_built_app("zeroing", Zeroing(), 0), _built_app("mean", Mean(), 1)], rows, tmp_path / "out")
    face = results["mean"]["faces"]["in1.jpg"]
    assert face["mean"] == pytest.approx(180 / 255) and face["half"] == pytest.approx(180 / 255, rel=1e-2)
    from facekit.pipeline import write_apps_json

    written = json.loads(write_apps_json(results, tmp_path).read_text())  # what the infer stage writes
    assert written["mean"]["faces"]["in1.jpg"]["nan"] is None
    with pytest.raises(
        FacekitError, match=r"app raising \(plugin facekit-raising\) failed on a batch of 2 .*out of ideas"
    ):
        run_apps([_built_app("raising", Raising(), 0)], rows, tmp_path / "out")


def test_app_results_that_are_no_arrays_are_refused_naming_the_app_and_result(tmp_path: Path) -> None:
    """Before (helper-98): a per-face list of dicts passed the app check and ended the infer stage, every photo
    normalized, in an AttributeError traceback ('dict' object has no attribute 'tolist'); rows of different lengths
    in a ValueError one."""

    from facekit.pipeline import run_apps

    class Dicts:
        def apply(self, faces: Any) -> dict[str, Any]:
            return {"meta": [{"index": index} for index in range(faces.image.shape[0])]}

    class Ragged:
        def apply(self, faces: Any) -> dict[str, Any]:
            return {"rows": [list(range(index + 1)) for index in range(faces.image.shape[0])]}

    rows = _grey_face_rows(tmp_path)
    for name, app, result in (("dicts", Dicts(), "meta"), ("ragged", Ragged(), "rows")):
        with pytest.raises(FacekitError, match=rf"app {name} \(plugin facekit-{name}\): result '{result}' is not an"):
            run_apps([_built_app(name, app)], rows, tmp_path / "out")


def test_the_infer_stage_tries_its_apps_before_the_first_photo(
    shipped_normalizer: Any, data_root: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Before (helper-98): an app whose result the stage refuses, or that raised, stopped the infer stage only after
    every photo was normalized (hours on a large folder). Now each app runs once on the model's mean face first."""
    import facekit.batch
    from facekit.pipeline import build_apps, probe_apps

    class Dicts:
        def apply(self, faces: Any) -> dict[str, Any]:
            return {"meta": [{"index": index} for index in range(faces.image.shape[0])]}

    class Sizes:
        def apply(self, faces: Any) -> dict[str, Any]:
            assert faces.image.shape[1:] == (3, 112, 112) and faces.landmarks.shape[1:] == (68, 2)
            return {"size": faces.image.shape[-1] * torch.ones(faces.image.shape[0])}

    with pytest.raises(FacekitError, match=r"app dicts \(plugin facekit-dicts\): result 'meta' is not an"):
        probe_apps(build_apps([_built_app("dicts", Dicts())]), shipped_normalizer)
    probe_apps(build_apps([_built_app("sizes", Sizes())]), shipped_normalizer)  # a good app passes
    # ... and the stage tries them before normalizing: a recipe with the refused app normalizes nothing.
    from facekit.normalize import default_model_path
    from facekit.pipeline import RunOptions, run_infer_stage
    from facekit.recipe import ResolvedComponent, load_recipe

    photo = sorted((data_root / "london" / "smiling_front").glob("*.jpg"))[0]
    infer = {"inputs": [str(photo)], "checkpoint": str(default_model_path()), "output": str(tmp_path / "out")}
    (tmp_path / "r.yaml").write_text(yaml.safe_dump({"infer": infer}))
    plan = load_recipe(str(tmp_path / "r.yaml"))
    spec = ComponentSpec("dicts", lambda _p: Dicts(), NoParams, plugin="facekit-dicts")
    plan.components["apps.0"] = ResolvedComponent("apps.0", "app", spec, NoParams())
    monkeypatch.setattr(facekit.batch, "normalize_planned", lambda *a, **k: pytest.fail("a photo was normalized"))
    with pytest.raises(FacekitError, match=r"app dicts \(plugin facekit-dicts\): result 'meta' is not an"):
        run_infer_stage(plan, RunOptions(progress=False))
    assert not (tmp_path / "out").exists()  # no run folder either


def test_a_stopped_infer_stage_says_how_many_photos_it_finished_and_that_the_stage_goes_on(
    data_root: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """helper-203: Ctrl+C or SIGTERM in the infer stage said the CLI's general line. It now says, as `facekit
    normalize` does, how many of its photos are finished and that the stage run again goes on with the others (it
    skips the done ones; the whole `facekit run` again would refuse the trained checkpoint without --resume)."""
    import signal

    import facekit.batch
    from facekit.cli import INTERRUPTED, main
    from facekit.errors import Terminated
    from facekit.normalize import default_model_path

    photos = sorted((data_root / "london" / "smiling_front").glob("*.jpg"))[:3]
    out = tmp_path / "out"
    infer = {"inputs": [str(p) for p in photos], "checkpoint": str(default_model_path()), "output": str(out)}
    recipe = tmp_path / "r.yaml"
    recipe.write_text(yaml.safe_dump({"infer": infer}))
    from tests.helpers import RowsThenStop

    through = RowsThenStop(KeyboardInterrupt(), 2)  # two photos' outputs written, then the stop
    monkeypatch.setattr(facekit.batch, "normalize_planned", through)
    assert main(["run", str(recipe), "--stage", "infer"]) == INTERRUPTED
    assert capsys.readouterr().err.splitlines()[-1:] == [
        f"error: infer stage stopped by Ctrl+C: 2 of 3 photos finished, kept in {out}; `facekit run {recipe} --stage "
        "infer` goes on with the other 1"
    ]
    # A photo without a face has no outputs, and the stage run again does it again: not said finished (before: 2 of 3).
    through.finished, through.without = 1, 1
    assert main(["run", str(recipe), "--stage", "infer"]) == INTERRUPTED
    assert capsys.readouterr().err.splitlines()[-1:] == [
        f"error: infer stage stopped by Ctrl+C: 1 of 3 photos finished, kept in {out}; `facekit run {recipe} --stage "
        "infer` goes on with the other 2, the 1 it made no output for among them"
    ]
    through.without = 0
    through.stop, through.finished = Terminated("stopped by {signal}", signal.SIGTERM), 0
    assert main(["run", str(recipe), "--stage", "infer"]) == 143
    assert capsys.readouterr().err.splitlines()[-1:] == [
        f"error: infer stage stopped by SIGTERM before its first photo was done: run `facekit run {recipe} --stage "
        "infer` again"
    ]
    # A stop as the model loads, before the photos' loop (helper-208: the CLI's general line).
    from facekit.normalize import Normalizer

    monkeypatch.setattr(Normalizer, "from_checkpoint", classmethod(lambda *a, **k: (_ for _ in ()).throw(through.stop)))
    assert main(["run", str(recipe), "--stage", "infer"]) == 143
    assert capsys.readouterr().err.splitlines()[-1:] == [
        f"error: infer stage stopped by SIGTERM before its first photo was done: run `facekit run {recipe} --stage "
        "infer` again"
    ]


def test_the_apps_are_tried_on_a_decoder_without_landmarks() -> None:
    """The builtin plain-cnn decoder gives no landmarks: probe_apps ended the infer stage of such a model with an
    AttributeError traceback ('NoneType' object has no attribute 'float') before any photo, whatever its apps; run_apps
    hands them such faces without landmarks, and the probe does the same."""
    from types import SimpleNamespace

    from facekit.pipeline import build_apps, probe_apps

    seen = []

    class Sizes:
        def apply(self, faces: Any) -> dict[str, Any]:
            seen.append(faces.landmarks)
            return {"size": faces.image.shape[-1] * torch.ones(faces.image.shape[0])}

    decoder = facekit.load_component("decoder", "plain-cnn").eval()
    probe_apps(build_apps([_built_app("sizes", Sizes())]), SimpleNamespace(decoder=decoder, device=torch.device("cpu")))
    assert seen and all(landmarks is None for landmarks in seen)


def test_the_apps_are_tried_at_the_size_the_stage_gives_them(shipped_normalizer: Any) -> None:
    """``infer.size`` 224: the stage hands its apps 224 px faces, and the probe does too (before: the model's 112 px
    mean face, so an app refusing the stage's size passed the probe and failed after every photo)."""
    import copy

    from facekit.pipeline import build_apps, probe_apps

    seen: list[tuple[int, float]] = []

    class Sizes:
        def apply(self, faces: Any) -> dict[str, Any]:
            seen.append((faces.image.shape[-1], float(faces.landmarks[..., 0].max())))
            return {"size": faces.image.shape[-1] * torch.ones(faces.image.shape[0])}

    sized = copy.copy(shipped_normalizer)
    sized.size = 224
    probe_apps(build_apps([_built_app("sizes", Sizes())]), shipped_normalizer)
    probe_apps(build_apps([_built_app("sizes", Sizes())]), sized)
    (model, own), (stage, scaled) = seen[0], seen[-1]
    assert (model, stage) == (112, 224) and scaled == pytest.approx((own + 0.5) * 2 - 0.5, abs=1e-4)


def test_the_infer_stage_runs_the_recipes_detector_and_refuses_other_model_parts(
    data_root: Path, tmp_path: Path
) -> None:
    """Before: the infer stage took detector, encoder and warper from the model file whatever the recipe named, and
    run.json recorded the recipe's (a recipe's `warper: tps` gave the rbf-linear model's faces under a 'tps' label).
    Now the recipe's detector is the one run (its scheme checked against the model's encoder), run.json names what
    ran, and an encoder, decoder or warper other than the model's is refused before a run folder is made."""
    from facekit.normalize import default_model_path
    from tests.helpers import run_cli

    photo = sorted((data_root / "london" / "smiling_front").glob("*.jpg"))[0]
    recipe: dict[str, Any] = {
        "components": {"detector": {"name": "dlib-5pt"}},
        "infer": {"inputs": [str(photo)], "checkpoint": str(default_model_path()), "output": str(tmp_path / "out")},
    }
    (tmp_path / "r.yaml").write_text(yaml.safe_dump(recipe))
    result = run_cli("run", str(tmp_path / "r.yaml"), "--stage", "infer")
    assert result.returncode == 0, result.stderr
    (run,) = (tmp_path / "out" / "runs").glob("*-infer")
    components = json.loads((run / "run.json").read_text())["components"]
    assert components["detector"].startswith("dlib-5pt ") and components["warper"].startswith("rbf-linear ")
    assert components["encoder"].startswith("dlib-resnet ") and components["decoder"].startswith("paper ")
    record = json.loads((tmp_path / "out" / f"{photo.stem}.json").read_text())
    assert len(record["source_landmarks"]) == 5  # the recipe's 5-point detector found the face

    recipe["components"] = {"warper": {"name": "tps"}, "encoder": {"name": "sface"}}
    recipe["infer"]["output"] = str(tmp_path / "refused")
    (tmp_path / "r.yaml").write_text(yaml.safe_dump(recipe))
    refused = run_cli("run", str(tmp_path / "r.yaml"), "--stage", "infer")
    assert refused.returncode == 1 and "Traceback" not in refused.stderr
    assert "components.encoder is 'sface', the model's is 'dlib-resnet'" in refused.stderr
    assert "components.warper is 'tps', the model's is 'rbf-linear'" in refused.stderr
    assert not (tmp_path / "refused" / "runs").exists()
    # The model's own components with other params are refused too (helper-74: ignored, the faces unchanged); params
    # that match the model's pass.
    recipe["components"] = {
        "warper": {"name": "rbf-linear", "params": {"regularization": 0.5}},
        "decoder": {"name": "paper", "params": {"image_size": 112, "channels": 64}},
    }
    recipe["prepare"] = {"image_size": 112}
    (tmp_path / "r.yaml").write_text(yaml.safe_dump(recipe))
    refused = run_cli("run", str(tmp_path / "r.yaml"), "--stage", "infer")
    assert refused.returncode == 1, refused.stderr
    said = " ".join(refused.stderr.split())
    assert "components.warper.params.regularization is 0.5, the model's is 0.01" in said
    assert "components.decoder.params.channels is 64, the model's is 256" in said and "image_size" not in said


def shipped_model_as_trained(tmp_path: Path, components: dict[str, Any], model: str = "dlib") -> Path:
    """tmp_path/r.yaml: a recipe naming ``components`` whose train.output holds the shipped ``model`` (by default the
    default model) as its trained checkpoint (evaluate.output tmp_path/eval, 2 photos); returns the checkpoints
    folder."""
    import shutil

    from facekit.normalize import model_path

    checkpoints = tmp_path / "train" / "checkpoints"
    checkpoints.mkdir(parents=True)
    shutil.copy(model_path(model), checkpoints / "last.safetensors")
    recipe: dict[str, Any] = {
        "components": components,
        "train": {"output": str(tmp_path / "train")},
        "evaluate": {"output": str(tmp_path / "eval"), "max_photos": 2},
    }
    (tmp_path / "r.yaml").write_text(yaml.safe_dump(recipe))
    return checkpoints


def test_the_evaluate_stage_refuses_model_parts_the_recipe_sets_otherwise(data_root: Path, tmp_path: Path) -> None:
    """As the infer stage: the evaluate stage (and `facekit eval RECIPE`) measured train.output's model with its own
    params whatever the recipe said by then, and recorded the recipe's as used. Now refused before a run folder."""
    from tests.helpers import run_cli

    shipped_model_as_trained(tmp_path, {"warper": {"name": "rbf-linear", "params": {"regularization": 0.5}}})
    for command in (["run", str(tmp_path / "r.yaml"), "--stage", "evaluate"], ["eval", str(tmp_path / "r.yaml")]):
        refused = run_cli(*command)
        assert refused.returncode == 1 and "Traceback" not in refused.stderr, refused.stderr
        said = " ".join(refused.stderr.split())
        assert "components.warper.params.regularization is 0.5, the model's is 0.01" in said
        assert "The evaluate stage runs the model's own" in said
        assert not (tmp_path / "eval" / "runs").exists() and not (tmp_path / "eval" / "metrics.json").exists()


def test_the_evaluate_stage_runs_the_recipes_detector(data_root: Path, tmp_path: Path) -> None:
    """A detector the recipe names is the one the evaluation runs, as in the infer stage (before: the model's own,
    while the run record named the recipe's). Seen in the landmark check: a 5-point detector gives no iBUG-68 points
    to compare with the decoder's, so that error is not measured (the model's 68-point detector measured it)."""
    from tests.helpers import run_cli

    checkpoints = shipped_model_as_trained(tmp_path, {"detector": {"name": "dlib-5pt"}})
    result = run_cli("eval", str(tmp_path / "r.yaml"))
    assert result.returncode == 0, result.stderr
    metrics = json.loads((tmp_path / "eval" / "metrics.json").read_text())
    assert metrics["landmarks"]["of"] == 2 and metrics["landmarks"]["nme_vs_predicted"] == {}
    assert metrics["detector"] == "dlib-5pt"  # said in the record (helper-81)
    # Such figures are not the model's own: export will not record them in the model file.
    exported = run_cli(
        "export",
        str(checkpoints / "last.safetensors"),
        str(tmp_path / "m.safetensors"),
        "--metrics",
        str(tmp_path / "eval" / "metrics.json"),
    )
    assert exported.returncode == 1 and "found its faces with detector 'dlib-5pt'" in " ".join(exported.stderr.split())
    assert not (tmp_path / "m.safetensors").exists()


def test_the_evaluate_stage_loads_the_model_and_the_recipes_detector_once(
    data_root: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The stage builds the model with the recipe's detector to refuse a bad one before its run record; the evaluation
    then measures that same normalizer (before: it loaded the model and built the detector a second time)."""
    from facekit.normalize import Normalizer
    from facekit.pipeline import RunOptions, run_evaluate_stage
    from facekit.recipe import load_recipe

    shipped_model_as_trained(tmp_path, {"detector": {"name": "dlib-5pt"}})
    built: list[Any] = []
    load = Normalizer.from_checkpoint.__func__  # type: ignore[attr-defined]

    def counted(cls: type, *args: Any, **kwargs: Any) -> Any:
        built.append(kwargs.get("detector"))
        return load(cls, *args, **kwargs)

    monkeypatch.setattr(Normalizer, "from_checkpoint", classmethod(counted))
    run_evaluate_stage(load_recipe(str(tmp_path / "r.yaml")), RunOptions(progress=False))
    assert len(built) == 1 and built[0] is not None, built
    assert json.loads((tmp_path / "eval" / "metrics.json").read_text())["detector"] == "dlib-5pt"


def test_an_evaluate_or_infer_stage_refused_as_another_runs_into_its_folder_leaves_no_run_record(
    data_root: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """helper-221: a second `facekit run --stage evaluate` (or infer) started while the first wrote into the same
    folder made its run record there, then was refused by the first's lock: runs/ kept an unfinished record of a run
    that never ran. The record is made under the lock now; and eval's line said "another facekit facekit eval"."""
    import fcntl
    import os

    from facekit.cli import main

    shipped_model_as_trained(tmp_path, {})
    recipe = tmp_path / "r.yaml"
    raw = yaml.safe_load(recipe.read_text())
    photos = sorted((data_root / "london" / "smiling_front").glob("*.jpg"))[:1]
    raw["infer"] = {"inputs": [str(p) for p in photos], "output": str(tmp_path / "infer")}
    recipe.write_text(yaml.safe_dump(raw))
    for stage, who in (("evaluate", "eval"), ("infer", "infer stage or normalize")):
        folder = tmp_path / ("eval" if stage == "evaluate" else stage)
        folder.mkdir()
        other = os.open(folder / ".facekit.lock", os.O_RDWR | os.O_CREAT)  # as another run holds it
        try:
            fcntl.flock(other, fcntl.LOCK_EX | fcntl.LOCK_NB)
            assert main(["run", str(recipe), "--stage", stage]) == 1
        finally:
            os.close(other)
        said = capsys.readouterr().err
        assert said.splitlines()[-1].startswith(f"error: another facekit {who} is writing into {folder} "), said
        assert not (folder / "runs").exists()


def test_a_stop_as_the_evaluate_stage_loads_its_model_says_nothing_is_written(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """helper-208: a stop while the stage loaded the model with the recipe's detector, before the evaluation (which
    says its own line), said the CLI's general line. It now says that no result was written and how to run it again."""
    import signal

    from facekit.cli import INTERRUPTED, main
    from facekit.errors import Terminated
    from facekit.normalize import Normalizer

    shipped_model_as_trained(tmp_path, {"detector": {"name": "dlib-5pt"}})
    stop: BaseException = KeyboardInterrupt()
    monkeypatch.setattr(Normalizer, "from_checkpoint", classmethod(lambda *a, **k: (_ for _ in ()).throw(stop)))
    recipe, out = tmp_path / "r.yaml", tmp_path / "eval"
    assert main(["run", str(recipe), "--stage", "evaluate"]) == INTERRUPTED
    said = (
        f"before measuring any photo: none of its results were written to {out}; run `facekit run {recipe} --stage "
        "evaluate` again"
    )
    assert capsys.readouterr().err.splitlines()[-1:] == [f"error: evaluate stage stopped by Ctrl+C {said}"]
    stop = Terminated("stopped by {signal}", signal.SIGTERM)
    assert main(["run", str(recipe), "--stage", "evaluate"]) == 143
    assert capsys.readouterr().err.splitlines()[-1:] == [f"error: evaluate stage stopped by SIGTERM {said}"]
    assert not out.exists()


def test_the_judge_facekit_runs_check_built_is_the_one_the_evaluate_stage_runs(
    data_root: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Before: `facekit run` built components.judge to check its weights before the first stage, and the evaluate
    stage built it again; it now judges with that build (moved to infer.device there). The stage measures the plan
    as the run read it (before, evaluate_plan read the recipe file again: one edited during the run, hours later,
    gave settings other than those run.json hashed, or, here, a refusal)."""
    from facekit.pipeline import RunOptions, check_later_stages, run_evaluate_stage
    from facekit.recipe import ResolvedComponent, load_recipe

    shipped_model_as_trained(tmp_path, {"judge": {"name": "sface"}})
    builds: list[str] = []
    real = ResolvedComponent.build
    monkeypatch.setattr(ResolvedComponent, "build", lambda self: builds.append(self.slot) or real(self))
    plan = load_recipe(str(tmp_path / "r.yaml"))
    check_later_stages(plan, ["train", "evaluate"])
    assert builds == ["judge"]
    (tmp_path / "r.yaml").write_text("edited: [after it was read\n")
    run_evaluate_stage(plan, RunOptions(progress=False))
    assert builds == ["judge"] and "built_once" not in vars(plan.components["judge"])
    assert "sface" in json.loads((tmp_path / "eval" / "metrics.json").read_text())["judges"]


def test_a_judge_that_is_the_models_own_encoder_is_the_build_the_model_runs(
    data_root: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A components.judge with the model's own encoder's name and params (default-model.yaml's dlib-resnet): the
    evaluate stage judged with the model's encoder and left the build `facekit run`'s check made of the judge unused
    (and kept by the plan), having built that encoder again in from_checkpoint. The model now takes that build; a
    judge with other params is another encoder, not taken."""
    from facekit.pipeline import RunOptions, check_later_stages, run_evaluate_stage
    from facekit.recipe import load_recipe
    from facekit.registry import ComponentSpec

    shipped_model_as_trained(tmp_path, {"judge": {"name": "dlib-resnet"}, "detector": {"name": "dlib"}})
    encoders: list[object] = []
    real = ComponentSpec.build

    def counted(self: Any, *args: Any, **kwargs: Any) -> Any:
        built = real(self, *args, **kwargs)
        if kwargs.get("kind") == "encoder":
            encoders.append(built)
        return built

    monkeypatch.setattr(ComponentSpec, "build", counted)
    plan = load_recipe(str(tmp_path / "r.yaml"))
    check_later_stages(plan, ["train", "evaluate"])
    assert len(encoders) == 1  # the judge's, by the run's check
    run_evaluate_stage(plan, RunOptions(progress=False))
    assert len(encoders) == 1 and "built_once" not in vars(plan.components["judge"])
    assert "dlib-resnet" in json.loads((tmp_path / "eval" / "metrics.json").read_text())["judges"]


def test_a_judge_of_the_models_encoder_with_other_params_is_another_judge(data_root: Path, tmp_path: Path) -> None:
    """A components.judge of the model's encoder's name with other params (SFace from another weights file here;
    FaceNet of another variant) was never built: the evaluate stage and `facekit eval` judged with the model's own
    encoder alone, and recorded it under that name. Both judge now, each under its own key and files (the model's
    under its name, as before), and `facekit eval --judge` takes one encoder twice with other params."""
    from facekit_opencv.sface import SOURCE

    from facekit.evaluate import evaluate_plan
    from facekit.models import resolve_weights
    from facekit.pipeline import RunOptions, run_evaluate_stage
    from facekit.recipe import load_recipe

    weights = str(resolve_weights(SOURCE, None, what="SFace encoder"))
    shipped_model_as_trained(tmp_path, {"judge": {"name": "sface", "params": {"weights": weights}}}, model="sface")
    other = f"sface (weights={weights})"
    run_evaluate_stage(load_recipe(str(tmp_path / "r.yaml")), RunOptions(progress=False))
    judges = json.loads((tmp_path / "eval" / "metrics.json").read_text())["judges"]
    assert list(judges) == ["sface", other], list(judges)
    assert "params" not in judges["sface"] and "encoder" not in judges["sface"]
    assert judges[other]["params"] == {"weights": weights} and judges[other]["encoder"] == "sface"
    assert judges[other]["identity"] == judges["sface"]["identity"]  # (the same network, from its own file)
    assert (tmp_path / "eval" / "identity-sface.npy").is_file()
    files = {p.name for p in (tmp_path / "eval").glob("identity-*.npy")} - {"identity-sface.npy"}
    assert len(files) == 1 and re.fullmatch(r"identity-sface-[0-9a-f]{8}\.npy", files.pop()), files
    given = [f"sface:weights={weights}", "sface"]  # the bare name: the model's own encoder
    metrics, _ = evaluate_plan(None, None, "lfw-devtest", given, 1, str(tmp_path / "b"), model="sface")
    assert list(metrics["judges"]) == ["sface", "sface (default params)"]
    assert metrics["judges"]["sface"]["params"] == {"weights": weights}
    assert "params" not in metrics["judges"]["sface (default params)"]
    with pytest.raises(FacekitError, match="--judge sface is given twice with the same params"):
        evaluate_plan(None, None, "lfw-devtest", ["sface", "sface:weights=null"], 1, str(tmp_path / "c"), model="sface")


def test_a_kept_build_is_taken_only_for_its_own_kind_name_and_params() -> None:
    """ResolvedComponent.take_kept, what from_checkpoint's ``encoder`` asks: the build a run kept, where it is the
    encoder asked for with the same params as its params model reads them (defaults filled in); else None, and the
    build stays kept (nothing is built)."""
    from facekit.recipe import resolve

    plan = resolve({"components": {"judge": {"name": "facenet", "params": {"variant": "vggface2"}}}})
    judge = plan.components["judge"]
    judge.__dict__["built_once"] = kept = object()  # as `facekit run`'s check leaves it, without loading weights
    assert judge.take_kept("encoder", "facenet", {"variant": "casia-webface"}) is None
    assert judge.take_kept("encoder", "sface", {}) is None and judge.take_kept("detector", "facenet", {}) is None
    assert judge.built_once is kept
    assert judge.take_kept("encoder", "facenet", {}) is kept  # the default variant: the same encoder
    assert "built_once" not in vars(judge) and judge.take_kept("encoder", "facenet", {}) is None


def test_a_detector_the_model_cannot_align_from_is_refused_before_the_evaluate_run_record(
    data_root: Path, tmp_path: Path
) -> None:
    """helper-81: the params were checked before the run record, the recipe's detector only after it: each try left a
    run.json naming a detector that never ran."""
    from tests.helpers import run_cli

    shipped_model_as_trained(tmp_path, {"detector": {"name": "yunet"}})
    refused = run_cli("run", str(tmp_path / "r.yaml"), "--stage", "evaluate")
    assert refused.returncode == 1 and "Traceback" not in refused.stderr, refused.stderr
    assert "eyes-nose-mouth5 landmarks" in " ".join(refused.stderr.split())
    assert not (tmp_path / "eval").exists()


def test_eval_with_another_model_says_the_recipes_components_are_not_applied(
    data_root: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """`facekit eval RECIPE --model NAME` measures the named model as it is: the recipe's detector is not run, and
    that is said (helper-81: in silence)."""
    from facekit.evaluate import evaluate_plan

    shipped_model_as_trained(tmp_path, {"detector": {"name": "dlib-5pt"}})
    with caplog.at_level("WARNING", logger="facekit.evaluate"):
        metrics, _ = evaluate_plan(
            str(tmp_path / "r.yaml"), None, "lfw-devtest", [], 1, str(tmp_path / "eval"), model="dlib"
        )
    said = " ".join(record.getMessage() for record in caplog.records)
    assert "--model: the model file is measured with its own detector" in said
    assert "not applied from the recipe: components.detector" in said and metrics["detector"] == "dlib"
    # As a user of the command sees it (stderr), with --checkpoint too.
    from tests.helpers import run_cli

    checkpoint = str(tmp_path / "train" / "checkpoints" / "last.safetensors")
    args = ["--checkpoint", checkpoint, "--max-photos", "1", "-o", str(tmp_path / "eval2")]
    shown = run_cli("eval", str(tmp_path / "r.yaml"), *args)
    assert shown.returncode == 0, shown.stderr
    assert "--checkpoint: the model file is measured with its own detector" in " ".join(shown.stderr.split())


def _built_app(name: str, app: Any, slot: int = 0) -> Any:
    """A resolved ``apps.SLOT`` component of plugin ``facekit-NAME`` whose build gives ``app``."""
    spec = type("Spec", (), {"name": name, "plugin": f"facekit-{name}"})()
    return type("Built", (), {"spec": spec, "slot": f"apps.{slot}", "build": lambda self: app})()


def _grey_face_rows(folder: Path) -> list[Any]:
    """Two normalize rows, inputs in0.jpg and in1.jpg, whose outputs are 16 px faces of grey 60 and 180 without
    landmarks, as the infer stage hands them to its apps."""
    import numpy as np
    from PIL import Image

    from facekit.batch import Row

    rows = []
    for index, grey in enumerate((60, 180)):
        png = folder / f"face{index}.png"
        Image.fromarray(np.full((16, 16, 3), grey, np.uint8)).save(png)
        png.with_suffix(".json").write_text(json.dumps({"landmarks": None}))
        rows.append(Row(f"in{index}.jpg", "ok", str(png)))
    return rows
