"""`facekit check RECIPE [--stage S]` refuses what `facekit run RECIPE [--stage S]` refuses from the settings alone."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from facekit import NoParams
from facekit.registry import ComponentSpec, get_registry


class StillWarper:
    """Declares itself not differentiable."""

    differentiable = False

    def warp(self, image: Any, source: Any, destination: Any) -> tuple[Any, Any]:
        raise AssertionError("never warps: refused from its flag")


@pytest.fixture
def odd_components(monkeypatch: pytest.MonkeyPatch) -> None:
    """A warper that says it is not differentiable and a decoder whose Params has no feature_size, registered."""
    warper = ComponentSpec("still", lambda _params: StillWarper(), NoParams, plugin="tests")
    decoder = ComponentSpec("featureless", lambda _params: None, NoParams, plugin="tests")
    monkeypatch.setitem(get_registry("warper")._specs, "still", warper)
    monkeypatch.setitem(get_registry("decoder")._specs, "featureless", decoder)


WARPER = (
    "components.warper.name: warper 'still' says it is not differentiable (its differentiable attribute), and the "
    "encoder's losses reach the decoder through the warped face: set train.loss.identity, perceptual and separation "
    "to 0 or choose a differentiable warper"
)
AUGMENT = (
    "augment.enabled: the augment stage has no morphs to write (augment.enabled is false: training uses the averages "
    "alone, no morphs): --set augment.enabled=true --set augment.count=N writes N to look at, or run the other "
    "stages without it (--stage prepare --stage train)"
)


@pytest.mark.usefixtures("odd_components")
@pytest.mark.parametrize(
    ("given", "refused_by", "passed_by", "said"),
    [
        (
            "components.detector.name=dlib-5pt",
            "prepare",
            "evaluate",  # (as tests/cli/test_device.py's evaluate recipe)
            "components.detector.name: prepare needs a 68-point iBUG detector (scheme ibug68; e.g. facekit-dlib's "
            "'dlib'); 'dlib-5pt' gives dlib5 landmarks",
        ),
        (
            "components.detector=null",
            "prepare",
            "train",
            "components.detector: the prepare stage needs components.detector (e.g. {name: dlib})",
        ),
        ("data.train=[]", "prepare", "train", "data.train: the prepare stage needs data.train sources"),
        (
            "components.encoder=null",
            "train",
            "prepare",
            "components.encoder: training needs components.encoder (e.g. {name: dlib-resnet})",
        ),
        (
            "components.decoder=null",
            "train",
            "prepare",
            "components.decoder: training needs components.decoder (e.g. {name: paper})",
        ),
        (
            "components.decoder={name: featureless}",
            "train",
            "infer",
            "components.decoder.name: decoder 'featureless': its Params has no feature_size field, through which the "
            "trainer gives it the encoder's feature size (facekit.types.TrainableDecoder)",
        ),
        ("components.warper={name: still}", "train", "prepare", WARPER),
        # Stages a plain run skips (augment.enabled false, no infer.inputs): refused only when asked for.
        ("augment.enabled=false", "augment", None, AUGMENT),
        ("infer.inputs=[]", "infer", None, "infer.inputs: is empty: list photos or folders to normalize"),
    ],
)
def test_check_refuses_what_run_refuses_from_the_settings_of_the_stages_it_runs(
    given: str,
    refused_by: str,
    passed_by: str | None,
    said: str,
    data_root: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """helper-169: `facekit check` passed these (exit 0) and `facekit run` refused them as the stage started (a
    decoder missing: after the prepare stage and the training pool). Now check says each, named by the --set that
    gave it, for the stages `run` with the same --stage runs, and run (and the stage's own check) refuses it in the
    same words at the same path, writing nothing; a stage that does not run refuses nothing. Both exit 2, a recipe
    problem's code (before: run exited 1 for what check exited 2 for)."""
    from facekit.cli import main
    from facekit.data.prepare import check_preparable
    from facekit.errors import FacekitError
    from facekit.pipeline import RunOptions, infer_items, run_augment_stage
    from facekit.recipe import load_recipe
    from facekit.train import check_trainable

    recipe = str(Path("recipes/demo.yaml").resolve())
    monkeypatch.setenv("FACEKIT_DATA", str(data_root))  # (the recipe's sources are checked; no photo is read)
    monkeypatch.chdir(tmp_path)  # (the recipe's relative outputs: nothing is written, but if it were, here)

    def said_by(*args: str) -> tuple[int, str]:
        code = main([*args, recipe, "--set", given])
        return code, " ".join(capsys.readouterr().err.split())

    code, err = said_by("check", "--stage", refused_by)
    assert code == 2 and f"1 problem: --set {given}: {said}" in err
    code, err = said_by("check")  # what a plain `facekit run` runs
    assert (code, f"--set {given}: {said}" in err) == ((0, False) if passed_by is None else (2, True)), err
    if passed_by is not None:
        assert said_by("check", "--stage", passed_by) == (0, "")
    code, err = said_by("run", "--stage", refused_by)
    assert (code, err) == (2, f"error: {said}")
    # Each stage refuses it where it did, in the same words (a direct caller: `facekit prepare`, facekit.train.train)
    plan = load_recipe(recipe, [given])
    stage_checks = {
        "prepare": lambda: check_preparable(plan),
        "train": lambda: check_trainable(plan, False),
        "augment": lambda: run_augment_stage(plan, RunOptions(progress=False)),
        "infer": lambda: infer_items(plan),
    }
    with pytest.raises(FacekitError) as refused:
        stage_checks[refused_by]()
    assert str(refused.value) == said
    assert not list(tmp_path.iterdir())


def test_check_names_the_set_that_turned_on_a_loss_the_warper_cannot_pass(
    odd_components: None,
    data_root: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """A recipe whose warper is not differentiable, with the encoder's losses off, and ``--set train.loss.identity=1``:
    `facekit check` named no --set (the refusal's path is the warper's, which the recipe file set), where it names the
    one that gave a value for every other refusal. `facekit run` says the same words as before."""
    from facekit.cli import main

    recipe = tmp_path / "still.yaml"
    demo = Path("recipes/demo.yaml").resolve()
    recipe.write_text(f"extends: {demo}\ncomponents: {{warper: {{name: still}}}}\ntrain: {{loss: {{identity: 0}}}}\n")
    monkeypatch.setenv("FACEKIT_DATA", str(data_root))
    monkeypatch.chdir(tmp_path)
    assert main(["check", str(recipe), "--stage", "train"]) == 0  # no loss through the warper: nothing to refuse
    capsys.readouterr()
    for given in ("train.loss.identity=1", "train.loss.perceptual=0.5"):
        assert main(["check", str(recipe), "--stage", "train", "--set", given]) == 2
        assert f"1 problem: --set {given}: {WARPER}" in " ".join(capsys.readouterr().err.split())
        assert main(["run", str(recipe), "--stage", "train", "--set", given]) == 2
        assert " ".join(capsys.readouterr().err.split()) == f"error: {WARPER}"
    assert [p.name for p in tmp_path.iterdir()] == ["still.yaml"]


class CutOffWarper:
    """Says differentiable, but warps under torch.no_grad (``mode`` "all") or with its points detached ("points")."""

    differentiable = True

    def __init__(self, mode: str) -> None:
        self.mode, self.inner = mode, get_registry("warper").get("rbf-linear").build()

    def warp(self, image: Any, source: Any, destination: Any) -> tuple[Any, Any]:
        import torch

        if self.mode == "points":
            return self.inner.warp(image, source.detach(), destination.detach())  # type: ignore[no-any-return]
        with torch.no_grad():
            return self.inner.warp(image, source, destination)  # type: ignore[no-any-return]


@pytest.mark.parametrize(("mode", "cut"), [("all", "the decoder"), ("points", "the decoder's landmarks")])
def test_check_and_run_try_a_warper_that_says_it_is_differentiable(
    mode: str,
    cut: str,
    data_root: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """helper-223 and helper-232: `facekit check` took a warper's ``differentiable = True`` at its word (exit 0), and
    `facekit run` refused such a warper only in the train stage, after the prepare stage and the training pool, from
    the decoder's first output. Both now try it on a mean face first and say why, in the train stage's words."""
    from facekit.cli import main

    spec = ComponentSpec("cut-off", lambda _params: CutOffWarper(mode), NoParams, plugin="tests")
    monkeypatch.setitem(get_registry("warper")._specs, "cut-off", spec)
    recipe = str(Path("recipes/demo.yaml").resolve())
    monkeypatch.setenv("FACEKIT_DATA", str(data_root))
    monkeypatch.chdir(tmp_path)
    said = (
        f"components.warper.name: warper 'cut-off' (plugin 'tests') says differentiable = True, but its warped face is "
        f"not connected to {cut} (warped under torch.no_grad, with its points detached, or through numpy?), and the "
        "encoder's losses on (train.loss.identity) reach the decoder through it: fix the warper (facekit.testing's "
        "warper gradients check shows where) or set those losses to 0"
    )
    given = "components.warper={name: cut-off}"
    assert main(["check", recipe, "--set", given]) == 2
    assert f"1 problem: --set {given}: {said}" in " ".join(capsys.readouterr().err.split())
    assert main(["run", recipe, "--set", given]) == 2
    assert " ".join(capsys.readouterr().err.split()) == f"error: {said}"
    assert main(["check", recipe, "--set", given, "--set", "train.loss.identity=0"]) == 0  # no loss through it
    assert not list(tmp_path.iterdir())


@pytest.mark.parametrize("recipe", ["demo", "paper"])  # (decoders of 112 and 224 px)
def test_the_warper_probe_passes_every_builtin_warper_and_the_contributing_example(recipe: str) -> None:
    """The probe warps the shipped model's mean face (the test face's coinciding inner-lip points made an exact
    spline's system singular: helper-223's try raised): every builtin warper and CONTRIBUTING's smooth-tps pass."""
    from facekit.pipeline import warper_cut, warper_cut_problems
    from facekit.recipe import ResolvedComponent, load_recipe
    from tests.contract.test_contributing import snippets

    namespace: dict[str, Any] = {}
    exec(compile(snippets()["warper"], "CONTRIBUTING.md:warper", "exec"), namespace)
    example = ComponentSpec("smooth-tps", namespace["SmoothTPSWarper"], namespace["SmoothTPSParams"], plugin="docs")
    warpers = [*get_registry("warper"), example]
    assert len(warpers) == 7
    plan = load_recipe(recipe)
    for spec in warpers:  # (`check` tries only plugins' warpers: warper_cut_problems; each passes the try itself)
        plan.components["warper"] = ResolvedComponent("warper", "warper", spec, spec.validate_params({}))
        assert warper_cut(plan) is None and warper_cut_problems(plan) == [], spec.name
    cut_off = ComponentSpec("cut-off", lambda _params: CutOffWarper("all"), NoParams, plugin="tests")
    plan.components["warper"] = ResolvedComponent("warper", "warper", cut_off, NoParams())
    assert warper_cut(plan) == "the decoder"  # (the probe does run on this plan)


class BackwardFailsWarper:
    """Says differentiable and is, but its backward raises (as a GPU-only kernel's does on the CPU)."""

    differentiable = True

    def warp(self, image: Any, source: Any, destination: Any) -> tuple[Any, Any]:
        import torch

        class Fails(torch.autograd.Function):
            @staticmethod
            def forward(ctx: Any, image: Any, points: Any) -> Any:
                return image * 1.0 + points.sum() * 0.0

            @staticmethod
            def backward(ctx: Any, grad: Any) -> Any:
                raise RuntimeError("this kernel's backward runs on a GPU only")

        return Fails.apply(image, destination), destination


def test_a_warper_whose_backward_raises_in_the_probe_is_left_to_the_train_stage() -> None:
    """helper-237: the probe caught a warp that raised, as its docstring says, but not a backward that raised: that
    warper ended `facekit check` and `facekit run` in its RuntimeError's traceback."""
    from facekit.pipeline import warper_cut
    from facekit.recipe import ResolvedComponent, load_recipe

    plan = load_recipe("demo")
    spec = ComponentSpec("backward-fails", lambda _params: BackwardFailsWarper(), NoParams, plugin="tests")
    plan.components["warper"] = ResolvedComponent("warper", "warper", spec, NoParams())
    assert warper_cut(plan) is None


def test_run_and_check_lead_with_the_same_problem(
    data_root: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """A recipe refused by its first stage (prepare: no detector) and by a later one (train: no decoder): `facekit
    check` lists both in pipeline order, and `facekit run` says the first of them, prepare's (before: run said the
    later stages' first, train's, and check led with prepare's: the user fixed one problem and was told another)."""
    from facekit.cli import main

    recipe = str(Path("recipes/demo.yaml").resolve())
    monkeypatch.setenv("FACEKIT_DATA", str(data_root))
    monkeypatch.chdir(tmp_path)
    given = ["--set", "components.detector=null", "--set", "components.decoder=null"]
    assert main(["check", recipe, *given]) == 2
    listed = [line.strip() for line in capsys.readouterr().err.splitlines() if line.strip().startswith("- ")]
    assert len(listed) == 2 and "components.detector" in listed[0] and "components.decoder" in listed[1], listed
    assert main(["run", recipe, *given]) == 2
    said = " ".join(capsys.readouterr().err.split())
    assert said == "error: components.detector: the prepare stage needs components.detector (e.g. {name: dlib})"
    assert listed[0].endswith(said.removeprefix("error: ")), (listed, said)
    assert not list(tmp_path.iterdir())


def test_a_first_stages_settings_refusal_is_said_before_torch_loads(data_root: Path, tmp_path: Path) -> None:
    """`facekit run demo --set components.detector.name=dlib-5pt` (its first stage, prepare, refuses a 5-point
    detector from the settings alone) said so 3.5 s in, after the output folders' check had imported torch and the
    train stage's had loaded the encoder, where `facekit check` says it in 0.6 s: a later stage's settings refusals
    were said up front, the first stage's only as it started. Now both, before anything loads."""
    import os
    import subprocess
    import sys

    script = (
        "import sys\nfrom facekit.cli import main\ncode = main(sys.argv[1:])\n"
        "print(sorted({'torch', 'dlib', 'onnxruntime'} & set(sys.modules)))\nsys.exit(code)"
    )
    env = {**os.environ, "FACEKIT_DATA": str(data_root)}
    env.pop("FACEKIT_DEBUG", None)
    result = subprocess.run(
        [sys.executable, "-c", script, "run", "demo", "--set", "components.detector.name=dlib-5pt"],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        env=env,
        timeout=300,
    )
    said = "prepare needs a 68-point iBUG detector (scheme ibug68; e.g. facekit-dlib's 'dlib'); 'dlib-5pt' gives dlib5"
    assert (result.returncode, result.stdout.strip()) == (2, "[]"), result.stderr
    assert " ".join(result.stderr.split()) == f"error: components.detector.name: {said} landmarks"
    assert not list(tmp_path.iterdir())


def test_stage_refusals_have_an_entry_per_stage() -> None:
    """``STAGE_REFUSALS[stage]`` for every stage a recipe has (before: ``.get`` with a public ``no_refusals`` as the
    default, used nowhere else)."""
    from facekit.pipeline import STAGE_REFUSALS
    from facekit.recipe import STAGES

    assert list(STAGE_REFUSALS) == list(STAGES)


def test_a_run_builds_the_warper_once(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A run that trains with the encoder's losses on asks the recipe's warper whether it is differentiable before its
    first stage, then trains through it: it built it four times (the settings check, the train stage's check,
    train's and its inner training's), each a new object."""
    import json

    import numpy as np

    from facekit import pipeline
    from facekit.data.augment import synthetic_identities
    from facekit.recipe import resolve
    from facekit.runs import RunDir

    pytest.importorskip("dlib")
    inner = get_registry("warper")._specs["rbf-linear"]
    built: list[object] = []

    def counted(params: Any) -> Any:
        built.append(inner.factory(params))
        return built[-1]

    monkeypatch.setitem(get_registry("warper")._specs, "counted", ComponentSpec("counted", counted, inner.params))
    prepared = tmp_path / "prepared"  # (facekit.data.prepare's format: tests/train/test_train.py's set, smaller)
    prepared.mkdir()
    (tmp_path / "photos").mkdir()
    data = synthetic_identities(8, size=32, seed=0)
    np.save(prepared / "landmarks.npy", data["landmarks"].astype(np.float32))
    np.save(prepared / "textures.npy", data["textures"])
    np.save(prepared / "averages.npy", data["backgrounds"])
    np.save(prepared / "mean_landmarks.npy", data["mean_landmarks"].astype(np.float32))
    (prepared / "identities.json").write_text(json.dumps([{"identity": f"s{i}"} for i in range(8)]))
    plan = resolve(
        {
            "components": {
                "detector": {"name": "dlib"},
                "encoder": {"name": "dlib-resnet"},
                "decoder": {"name": "paper", "params": {"image_size": 32, "grid": 4, "channels": 8, "hidden": 8}},
                "warper": {"name": "counted"},
            },
            "data": {"train": [{"source": "folder", "path": str(tmp_path / "photos")}]},  # (stubbed: not read)
            "prepare": {"output": str(prepared), "image_size": 32, "interocular_px": 8},
            "augment": {"enabled": False, "count": 0},
            "train": {"steps": 1, "batch_size": 4, "pool_size": 0, "device": "cpu", "output": str(tmp_path / "run")},
        }
    )
    assert plan.recipe.train.loss.through_encoder()  # (so the settings check asks the warper)
    monkeypatch.setitem(pipeline.STAGE_RUNNERS, "prepare", lambda plan, options: RunDir(tmp_path / "p"))
    monkeypatch.setattr(pipeline, "finish_run", lambda run: None)
    pipeline.run_plan(plan, ["prepare", "train"], pipeline.RunOptions(progress=False))
    # Two: the one asked and trained through, and the settings check's probe's own (helper-232: it warps a mean face
    # with a build of its own, so that a warper with state, a cached solve, is left as built for the training).
    assert len(built) == 2
    # The training took it: the plan keeps none, and another training of the plan builds its own (before: the
    # plan kept the first and handed it to every training of it, a plugin's warper with state shared by both).
    from facekit.train import check_trainable

    assert "built_once" not in vars(plan.components["warper"])
    again, _ = check_trainable(plan, resume=True)
    assert len(built) == 3 and again is built[2]


def test_a_recipe_or_grid_that_names_nothing_is_a_usage_error(
    data_root: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """`facekit run Paper`, `facekit check nosuch.yaml`, `facekit bench nosuch.yaml` and a bench of a recipe without
    a grid are the user's typing, refused in one line before anything loads: exit 2 as README says of a command line
    that names what is not there (helper-227: they exited 1, the code of a problem with the machine or the data)."""
    from facekit.cli import main

    monkeypatch.setenv("FACEKIT_DATA", str(data_root))
    monkeypatch.chdir(tmp_path)
    for args, said in (
        (["run", "Paper"], "no recipe file or shipped recipe named 'Paper' (did you mean 'paper'?)"),
        (["check", "nosuch.yaml"], "recipe not found: nosuch.yaml"),
        (["bench", "nosuch.yaml"], "grid recipe not found: nosuch.yaml"),
        (["bench", "demo"], "demo has no bench.grid"),
        (["run", ""], "the recipe name is empty"),
    ):
        assert main(args) == 2, args
        err = " ".join(capsys.readouterr().err.split())
        assert err.startswith(f"error: {said}") and "Traceback" not in err, (args, err)
    assert not list(tmp_path.iterdir())
