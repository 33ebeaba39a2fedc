"""`--device` in every command that runs the normalizer, as `facekit normalize` has it: a GPU that is not there is
one line (exit 1) before any model loads, and the device asked for is the one the model is loaded on."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch

#: Every command that runs the normalizer, with the arguments it needs to get as far as its device check.
COMMANDS = {
    "adjust": ["adjust", "{photo}", "-o", "{out}"],
    "attributes": ["attributes", "{photo}", "-o", "{out}"],
    "explore interpolate": ["explore", "interpolate", "{photo}", "{other}", "-o", "{out}"],
    "explore compare": ["explore", "compare", "{photo}", "{other}", "-o", "{out}"],
    "avatar": ["avatar", "{photo}", "-o", "{out}"],
    "serve": ["serve"],
    "eval": ["eval", "--max-photos", "2", "-o", "{out}"],
}


@pytest.fixture
def no_model_loads(monkeypatch: pytest.MonkeyPatch) -> None:
    """Loading a normalizing model, the Surrey model or the web page's models fails the test."""
    import facekit_avatar.app
    import facekit_serve.engine

    from facekit.normalize import Normalizer

    def loaded(*args: Any, **kwargs: Any) -> Any:
        raise AssertionError("a model was loaded before --device was checked")

    monkeypatch.setattr(Normalizer, "from_checkpoint", classmethod(loaded))
    monkeypatch.setattr(facekit_avatar.app, "load_model", loaded)
    monkeypatch.setattr(facekit_serve.engine.Engine, "load", classmethod(loaded))


def photos(data_root: Path) -> tuple[Path, Path]:
    first, second = sorted((data_root / "london" / "smiling_front").glob("*.jpg"))[:2]
    return first, second


@pytest.mark.skipif(torch.cuda.is_available(), reason="a GPU is visible here: --device cuda is no error")
@pytest.mark.parametrize("command", list(COMMANDS))
@pytest.mark.usefixtures("no_model_loads")
def test_device_cuda_without_a_gpu_is_one_line_before_any_model_loads(
    command: str, data_root: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Before: only `facekit normalize` took --device; adjust, attributes, explore, avatar, serve and eval ran on
    the CPU whatever the machine had, and refused the option as unknown (exit 2)."""
    from facekit.cli import main

    photo, other = photos(data_root)
    out = tmp_path / "out"
    arguments = [a.format(photo=photo, other=other, out=out) for a in COMMANDS[command]]
    code = main([*arguments, "--device", "cuda"])
    error = " ".join(capsys.readouterr().err.split())
    assert code == 1, (command, error)
    assert "--device cuda: no GPU is visible here; use --device cpu or auto" in error, (command, error)
    assert "Traceback" not in error and not out.exists(), command
    assert main([*arguments, "--device", "tpu"]) == 1  # a device torch has no name for: one line too
    assert "--device 'tpu': use cpu, cuda, cuda:N, mps, xpu or auto" in " ".join(capsys.readouterr().err.split())


@pytest.mark.skipif(torch.cuda.is_available(), reason="a GPU is visible here: infer.device cuda is no error")
@pytest.mark.usefixtures("no_model_loads")
def test_the_recipes_evaluate_stage_runs_on_infer_device(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """`facekit run --stage evaluate` loads the trained model on the recipe's infer.device, as the infer stage does
    (before: on the CPU whatever infer.device said); a GPU that is not there is said before a run folder is made."""
    from facekit.cli import main

    train = tmp_path / "train"
    (train / "checkpoints").mkdir(parents=True)
    (train / "checkpoints" / "last.safetensors").write_bytes(b"not read: the device is checked first")
    evaluated = tmp_path / "eval"
    overrides = ["--set", f"train.output={train}", "--set", f"evaluate.output={evaluated}"]
    code = main(["run", "recipes/demo.yaml", "--stage", "evaluate", *overrides, "--set", "infer.device=cuda"])
    error = " ".join(capsys.readouterr().err.split())
    assert code == 1 and "infer.device cuda: no GPU is visible here" in error, error
    assert not evaluated.exists()


def test_device_cpu_is_the_device_the_app_loads_its_model_on(
    data_root: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """`facekit attributes --device cpu` (and auto, the CPU on this machine) measures a real photo with the shipped
    model loaded on that device."""
    from facekit.cli import main
    from facekit.normalize import Normalizer

    load = Normalizer.from_checkpoint.__func__  # type: ignore[attr-defined]
    devices: list[Any] = []

    def recorded(cls: Any, *args: Any, **kwargs: Any) -> Any:
        normalizer = load(cls, *args, **kwargs)
        devices.append(next(normalizer.decoder.parameters()).device)
        return normalizer

    monkeypatch.setattr(Normalizer, "from_checkpoint", classmethod(recorded))
    photo, _ = photos(data_root)
    expected = "cuda" if torch.cuda.is_available() else "cpu"
    for device in ("cpu", "auto"):
        out = tmp_path / device
        code = main(["attributes", str(photo), "-o", str(out), "--device", device])
        assert code == 0, capsys.readouterr()
        assert devices.pop().type == ("cpu" if device == "cpu" else expected) and not devices
        assert (out / "attributes.csv").is_file() and "ok" in (out / "attributes.csv").read_text()


def test_a_judge_sends_its_crops_to_a_buffer_only_encoders_device() -> None:
    """SFace's torch port holds its weights as buffers, no parameters: the judge's device probe looked at parameters
    only, so under `facekit eval --device cuda` its crops stayed on the CPU beside a GPU encoder (helper-94). The
    'meta' device stands in for the GPU."""
    import numpy as np
    from facekit_opencv.sface import card as sface_card

    from facekit.evaluate import Judge

    seen: list[Any] = []

    class BufferOnly(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.card = sface_card()
            self.register_buffer("weight", torch.zeros(1))

        def embed(self, images: torch.Tensor) -> torch.Tensor:
            seen.append(images.device)
            return torch.zeros(len(images), 128)

    encoder = BufferOnly().to("meta")
    assert not list(encoder.parameters())
    landmarks = np.array([[[70, 80], [130, 80], [100, 110], [75, 140], [125, 140]]], np.float64)
    Judge("sface-like", encoder).embed([np.zeros((200, 200, 3), np.uint8)], landmarks, "eyes-nose-mouth5")
    assert [device.type for device in seen] == ["meta"]


@pytest.mark.parametrize("bad", ["cuda:x", "cuda:", "cuda:7", "xpu:a"])
def test_a_device_number_the_machine_has_not_is_one_line(bad: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """With a GPU visible, cuda:x / cuda: / cuda:7 (one GPU) went on to torch, whose error came later as a traceback
    (helper-94); a machine with one GPU is stood in for here."""
    from facekit.errors import FacekitError
    from facekit.normalize import inference_device

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    with pytest.raises(FacekitError, match="--device"):
        inference_device(bad)
    assert inference_device("cuda:0") == "cuda:0"


def test_a_recipe_apps_own_model_choice_is_refused_before_any_work() -> None:
    """An app's device in a recipe was any text (`facekit check` called `device: tpu` valid), and the infer stage,
    which hands its apps the faces infer.checkpoint made, left an app's model, checkpoint, face and device unused
    without a word, or refused an unusable device after every photo was normalized (helper-94). Now the recipe
    checks the text, and the infer stage (and a run whose later stage it is) refuses these params first."""
    from facekit.errors import FacekitError
    from facekit.pipeline import RunOptions, check_later_stages, run_infer_stage
    from facekit.recipe import load_recipe

    with pytest.raises(FacekitError, match="device"):
        load_recipe("recipes/demo.yaml", ["components.apps=[{name: attributes, params: {device: tpu}}]"])
    for params in ("{device: cpu}", "{model: sface}", "{face: central, strength: 0.5}"):
        name = "adjust" if "strength" in params else "attributes"
        plan = load_recipe("recipes/demo.yaml", [f"components.apps=[{{name: {name}, params: {params}}}]"])
        with pytest.raises(FacekitError, match=r"components\.apps\.0\.params: (device|model|face, strength) are for"):
            run_infer_stage(plan, RunOptions())
        with pytest.raises(FacekitError, match=r"infer\.checkpoint made"):
            check_later_stages(plan, ["train", "infer"])
    plain = load_recipe(
        "recipes/demo.yaml", ["components.apps=[{name: attributes}, {name: gray-world, params: {strength: 0.5}}]"]
    )
    check_later_stages(plain, ["train", "infer"])  # a baseline's strength scales the gains its apply reports
    from facekit.builtin.apps import AdjustParams

    assert set(AdjustParams.NOT_IN_PIPELINE) == set(AdjustParams.model_fields)  # adjust's apply reads no param
