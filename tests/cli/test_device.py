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
        "recipes/demo.yaml",
        ["components.apps=[{name: attributes}, {name: gray-world, params: {strength: 0.5}}]"],
    )
    check_later_stages(plain, ["train", "infer"])  # a baseline's strength scales the gains its apply reports
    from facekit.builtin.apps import AdjustParams

    assert set(AdjustParams.NOT_IN_PIPELINE) == set(AdjustParams.model_fields)  # adjust's apply reads no param


@pytest.fixture
def one_gpu(monkeypatch: pytest.MonkeyPatch) -> None:
    """A machine with one visible GPU, as far as the device checks can tell (no CUDA call reaches a real GPU)."""
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)


@pytest.mark.usefixtures("one_gpu")
@pytest.mark.parametrize("command", ["normalize", *(c for c in COMMANDS if c != "serve")])
def test_each_command_loads_its_model_on_the_gpu_it_was_asked_for(
    command: str, data_root: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """Not pinned (helper-95's mutants): a command that checked --device but loaded its model without it (eval,
    attributes, explore interpolate and compare, normalize, avatar; an app's load_normalizer leaving out its device)
    passed every test on a machine without a GPU, where the CPU is the default anyway: `--device cuda:0` then ran
    on the CPU without a word. The GPU is stood in for; the model load is recorded and stopped."""
    from facekit.errors import FacekitError
    from facekit.normalize import Normalizer

    devices: list[Any] = []

    def recorded(cls: Any, *args: Any, **kwargs: Any) -> Any:
        devices.append(kwargs.get("device"))
        raise FacekitError("stopped at the model load")

    monkeypatch.setattr(Normalizer, "from_checkpoint", classmethod(recorded))
    from facekit.cli import main

    photo, other = photos(data_root)
    out = tmp_path / "out"
    arguments = [a.format(photo=photo, other=other, out=out) for a in COMMANDS.get(command, ["normalize", "{photo}"])]
    arguments += ["-o", str(out)] if command == "normalize" else []
    arguments += ["--sfm", str(data_root / "sfm" / "sfm_shape_3448.bin")] if command == "avatar" else []
    code = main([*arguments, "--device", "cuda:0"])
    error = " ".join(capsys.readouterr().err.split())
    assert code == 1 and "stopped at the model load" in error, (command, error)
    assert devices == ["cuda:0"], command


@pytest.mark.usefixtures("one_gpu")
def test_serve_loads_every_model_on_the_gpu_it_was_asked_for(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Not pinned (helper-95's mutants): `facekit serve --device cuda:0` handing Engine.load no device, or the page's
    comparison models loaded without it, passed every test on a machine without a GPU; the page's main model then
    ran on the CPU, or its comparison beside it on another device. The GPU is stood in for."""
    import signal

    from facekit_serve import cli as serve_cli
    from facekit_serve.engine import Engine

    from facekit.errors import FacekitError
    from facekit.normalize import Normalizer

    asked: list[Any] = []

    def engine_load(cls: Any, *args: Any, **kwargs: Any) -> Any:
        asked.append(kwargs.get("device"))
        raise FacekitError("stopped at the model load")

    monkeypatch.setattr(Engine, "load", classmethod(engine_load))
    monkeypatch.setattr(serve_cli, "check_port", lambda *args: None)
    monkeypatch.setattr("facekit_serve.offline.offline_environment", lambda: None)
    monkeypatch.setattr(signal, "signal", lambda *args: None)
    monkeypatch.setenv("GRADIO_TEMP_DIR", str(tmp_path / "gradio"))  # (serve sets its own; put back after the test)
    with pytest.raises(FacekitError, match="stopped at the model load"):
        serve_cli.serve(device="cuda:0", compare=True)
    assert asked == ["cuda:0"]
    monkeypatch.undo()  # the real Engine.load, with the model loads recorded
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    devices: list[Any] = []

    class Stopped(Exception):
        pass

    def recorded(cls: Any, *args: Any, **kwargs: Any) -> Any:
        devices.append(kwargs.get("device"))
        if len(devices) == 1:
            return object()  # the page's own model; the next is the first comparison model
        raise Stopped

    monkeypatch.setattr(Normalizer, "from_checkpoint", classmethod(recorded))
    with pytest.raises(Stopped):
        Engine.load(tmp_path / "results", compare=True, device="cuda:0")
    assert devices == ["cuda:0", "cuda:0"]


@pytest.mark.usefixtures("one_gpu")
def test_an_apps_device_is_where_its_own_normalizer_loads() -> None:
    """Not pinned (helper-95's mutants): an app built with a device and no normalizer compared that device with the
    CPU (what a missing normalizer runs on) and refused every GPU; or its load_normalizer left the device out. Both
    passed every test on a machine without a GPU. The GPU is stood in for; the load is stopped after its call."""
    from facekit.apps.adjust import FaceAdjuster
    from facekit.normalize import Normalizer

    calls: list[dict[str, Any]] = []

    class Stopped(Exception):
        pass

    def recorded(cls: Any, *args: Any, **kwargs: Any) -> Any:
        calls.append(kwargs)
        raise Stopped

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(Normalizer, "from_checkpoint", classmethod(recorded))
        adjuster = FaceAdjuster(device="cuda:0")
        assert adjuster.device == "cuda:0"
        with pytest.raises(Stopped):
            adjuster.normalizer  # noqa: B018 - loads it
    assert [call.get("device") for call in calls] == ["cuda:0"]


def test_one_gpu_is_not_another(monkeypatch: pytest.MonkeyPatch) -> None:
    """Not pinned (helper-95's mutants): on a machine with two GPUs, same_device called cuda:0 and cuda:1 one device
    when its index comparison was left out, so an app given a normalizer on cuda:0 took `device: cuda:1` without a
    word. ``cuda`` is the current GPU; the second GPU is made current here."""
    import types

    from facekit.apps.adjust import FaceAdjuster
    from facekit.errors import FacekitError
    from facekit.normalize import same_device

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    monkeypatch.setattr(torch.cuda, "current_device", lambda: 1)
    assert same_device("cuda", "cuda:1") and same_device(torch.device("cuda", 1), "cuda")
    assert not same_device("cuda", "cuda:0") and not same_device("cuda:0", "cuda:1")
    on_the_first = types.SimpleNamespace(device=torch.device("cuda", 0), face="largest")
    with pytest.raises(FacekitError, match=r"device 'cuda:1' asked of a normalizer that runs on cuda:0"):
        FaceAdjuster(on_the_first, device="cuda:1")


def test_every_device_the_option_takes_a_recipe_takes_and_no_other(monkeypatch: pytest.MonkeyPatch) -> None:
    """Not pinned (helper-95's mutants): the last GPU's number plus one (cuda:1 on a one-GPU machine) went on to
    torch when the count was compared with ``>``; xpu was refused as unknown when left out of the Intel/Apple branch;
    a recipe refused mps or xpu:N when DEVICE_PATTERN lost them; adjust's device in a recipe was any text (only
    attributes' was tested). The GPUs are stood in for."""
    from facekit.errors import FacekitError
    from facekit.normalize import inference_device
    from facekit.recipe import load_recipe

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    with pytest.raises(FacekitError, match=r"--device cuda:1: this machine has 1 GPU\(s\): cuda:0 to cuda:0"):
        inference_device("cuda:1")
    monkeypatch.setattr(torch.xpu, "is_available", lambda: True)
    assert (inference_device("xpu"), inference_device("xpu:1")) == ("xpu", "xpu:1")
    for device in ("mps", "xpu", "xpu:1", "cuda:2"):
        assert load_recipe("recipes/demo.yaml", [f"infer.device={device}"]).recipe.infer.device == device
        app = f"components.apps=[{{name: adjust, params: {{device: '{device}'}}}}]"
        assert load_recipe("recipes/demo.yaml", [app]).components["apps.0"].params.device == device  # type: ignore[attr-defined]
    with pytest.raises(FacekitError, match="device"):
        load_recipe("recipes/demo.yaml", ["components.apps=[{name: adjust, params: {device: tpu}}]"])


def test_a_run_that_trains_then_evaluates_refuses_an_unusable_infer_device_first() -> None:
    """Not pinned (helper-95's mutants): the evaluate stage runs on infer.device, and a run whose later stage it is
    checks that device before the first stage; without that check a CPU machine trained for hours and then refused
    `infer.device: cuda` (only `--stage evaluate` alone was tested)."""
    from facekit.errors import FacekitError
    from facekit.pipeline import check_later_stages
    from facekit.recipe import load_recipe

    plan = load_recipe("recipes/demo.yaml", ["infer.device=cuda"])
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(torch.cuda, "is_available", lambda: False)
        with pytest.raises(FacekitError, match=r"infer\.device cuda: no GPU is visible here"):
            check_later_stages(plan, ["prepare", "evaluate"])


def test_a_recipe_explore_apps_interpolation_settings_are_refused_too() -> None:
    """Not pinned (helper-95's mutants): explore's judge, steps and spherical choose how `facekit explore interpolate`
    goes between two photos; in a recipe the app lays a batch's faces in a strip and reads none of them. Only the
    model choice was tested, so `judge: sface` could drop out of NOT_IN_PIPELINE and be accepted and unused."""
    from facekit.errors import FacekitError
    from facekit.pipeline import check_later_stages
    from facekit.recipe import load_recipe

    for params, said in (("{judge: sface}", "judge"), ("{steps: 4, spherical: true}", "steps, spherical")):
        plan = load_recipe("recipes/demo.yaml", [f"components.apps=[{{name: explore, params: {params}}}]"])
        with pytest.raises(FacekitError, match=rf"components\.apps\.0\.params: {said} are for the explore app"):
            check_later_stages(plan, ["train", "infer"])


@pytest.mark.parametrize(
    ("sets", "label"),
    [
        (["components.apps=[{name: attributes}, {name: adjust, params: {strength: 0.5}}]"], 0),
        (["components.apps=[{name: explore}]", "components.apps.0.params.judge=sface"], 1),  # the nearer --set
        ([], None),  # set in the file the recipe extends: named with it
    ],
)
def test_facekit_check_refuses_a_recipe_apps_params_in_the_words_run_does(
    sets: list[str], label: int | None, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """helper-168: `facekit check` called a recipe valid whose apps' params `facekit run` refused as it started (the
    rule was the infer stage's alone, helper-94). Now check says it too, in run's words at the same path, named by
    the --set that gave the param, or by the base file that set it."""
    from facekit.cli import main
    from facekit.errors import FacekitError
    from facekit.pipeline import check_later_stages
    from facekit.recipe import load_recipe

    recipe = "recipes/demo.yaml"
    if not sets:
        base = tmp_path / "base.yaml"
        base.write_text(
            f"extends: {Path(recipe).resolve()}\ncomponents:\n  apps: [{{name: attributes, params: {{device: cpu}}}}]\n"
        )
        (tmp_path / "mine.yaml").write_text("extends: base.yaml\ninfer: {batch_size: 4}\n")
        recipe = str(tmp_path / "mine.yaml")
    with pytest.raises(FacekitError) as refused:
        check_later_stages(load_recipe(recipe, sets), ["train", "infer"])  # (run's refusal, unchanged)
    capsys.readouterr()
    assert main(["check", recipe, *(item for given in sets for item in ("--set", given))]) == 2
    said = " ".join(capsys.readouterr().err.split())
    named = f"--set {sets[label]}: {refused.value}" if label is not None else f"{refused.value} (set in {base})"
    assert f"1 problem: {named}" in said


@pytest.mark.usefixtures("one_gpu")
def test_the_evaluate_stage_loads_measures_and_records_on_infer_device(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Not pinned (helper-95's mutants): the evaluate stage loading the recipe's model without infer.device, handing
    evaluate_plan no device, or writing run.json's device as the CPU passed every test on a machine without a GPU
    (only the refusal of a GPU that is not there was tested). The GPU is stood in for; the evaluation is recorded."""
    import json
    import shutil
    import types

    import yaml

    from facekit import evaluate, runs
    from facekit.normalize import Normalizer, default_model_path
    from facekit.pipeline import RunOptions, run_evaluate_stage
    from facekit.recipe import load_recipe

    (tmp_path / "train" / "checkpoints").mkdir(parents=True)
    shutil.copy(default_model_path(), tmp_path / "train" / "checkpoints" / "last.safetensors")
    recipe = {
        "components": {"detector": {"name": "dlib-5pt"}},  # the stage then loads the model itself (prepared)
        "train": {"output": str(tmp_path / "train")},
        "evaluate": {"output": str(tmp_path / "eval"), "max_photos": 2},
        "infer": {"device": "cuda:0"},
    }
    (tmp_path / "r.yaml").write_text(yaml.safe_dump(recipe))
    loaded: list[Any] = []
    measured: list[Any] = []

    def load(cls: Any, *args: Any, **kwargs: Any) -> Any:
        loaded.append(kwargs.get("device"))
        return types.SimpleNamespace(device=torch.device(kwargs.get("device") or "cpu"))

    def evaluate_plan(*args: Any, **kwargs: Any) -> Any:
        measured.append(kwargs.get("device"))
        kwargs["on_locked"]()  # (the stage's run record, made under the folder's lock)
        return {}, tmp_path / "eval"

    monkeypatch.setattr(Normalizer, "from_checkpoint", classmethod(load))
    monkeypatch.setattr(evaluate, "evaluate_plan", evaluate_plan)
    monkeypatch.setattr(runs, "describe_device", lambda requested: {"requested": requested})  # (no CUDA call)
    run = run_evaluate_stage(load_recipe(str(tmp_path / "r.yaml")), RunOptions(progress=False))
    assert loaded == ["cuda:0"] and measured == ["cuda:0"]
    assert json.loads((run.path / "run.json").read_text())["device"] == {"requested": "cuda:0"}


def test_a_whole_photo_method_refuses_device(
    data_root: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Not pinned (helper-95's mutants): `facekit adjust --method gray-world --device auto` runs no model, and
    --device left out of the options of --method adjust was accepted and ignored, as --model would be refused."""
    from facekit.cli import main

    photo, _ = photos(data_root)
    code = main(["adjust", str(photo), "-o", str(tmp_path / "out"), "--method", "gray-world", "--device", "auto"])
    error = " ".join(capsys.readouterr().err.split())
    said = "--device: an option of --method adjust only; gray-world estimates from the whole photo: leave it out"
    assert code == 1 and said in error, error
    assert not (tmp_path / "out").exists()


def test_adjusts_mapping_refusals_name_the_options_typed(
    data_root: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """`facekit adjust --mapping ycrcb --refine 1` said "refine needs mapping 'gains'", the params' names, which the
    command line does not show (helper-97); --fuse's said only how to turn the mix off. The params now say their rules
    at the setting they refuse, in a recipe's words (helper-159); the command says them in its options."""
    from facekit.cli import main

    photo, _ = photos(data_root)
    light = "works in linear light and needs --mapping gains; the paper's ycrcb map runs without it: leave it out"
    for flags, said in (
        (["--mapping", "ycrcb", "--refine", "1"], f"error: --refine: {light}"),
        (["--mapping", "ycrcb", "--fuse", "white-patch", "--refine", "2"], f"error: --fuse, --refine: {light}"),
        (["--all-faces", "--face", "central"], "error: --all-faces: averages all found, and --face central picks one"),
    ):
        code = main(["adjust", str(photo), "-o", str(tmp_path / "out"), *flags])
        error = " ".join(capsys.readouterr().err.split())
        assert code == 1 and said in error, error
    assert not (tmp_path / "out").exists()


def test_an_infer_checkpoint_that_is_no_model_is_named_in_the_recipes_words() -> None:
    """Before (helper-98): `facekit run --stage infer` with infer.checkpoint: default said "from_checkpoint:
    PosixPath('default') is neither a model file nor a shipped model"; as a later stage it said "infer.checkpoint not
    found: default" without the shipped models' names."""
    from facekit.errors import FacekitError
    from facekit.pipeline import RunOptions, check_later_stages, run_infer_stage
    from facekit.recipe import load_recipe

    plan = load_recipe("recipes/demo.yaml", ["infer.checkpoint=default"])
    expected = r"^infer\.checkpoint not found: default \(a model file, or a shipped model: dlib, sface\)$"
    with pytest.raises(FacekitError, match=expected):
        run_infer_stage(plan, RunOptions())
    with pytest.raises(FacekitError, match=expected):
        check_later_stages(plan, ["evaluate", "infer"])
