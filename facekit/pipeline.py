"""Stages of a recipe run, in order: prepare -> augment -> train -> evaluate -> infer.

A stage whose implementation has not landed is ``None`` in :data:`STAGE_RUNNERS`: its recipe section still validates,
but running it raises :class:`StageNotBuiltError` before anything is written. Each runner takes the resolved plan and
the run options and returns the run folder it wrote.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Mapping, Sequence
from contextlib import nullcontext
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, NamedTuple

from facekit.errors import (
    FacekitError,
    OptionsRefused,
    Problem,
    SettingsRefused,
    StageNotBuiltError,
    data_workers_lost_said,
    did_you_mean,
    raise_first,
    stops_said,
)
from facekit.recipe import STAGES, Plan
from facekit.runs import RunDir, finish_run

StageRunner = Callable[[Plan, "RunOptions"], RunDir]


@dataclass(frozen=True)
class RunOptions:
    """Options of `facekit run` that are not recipe values."""

    resume: bool = False
    progress: bool = True


def run_prepare_stage(plan: Plan, options: RunOptions) -> RunDir:
    """The prepare stage (facekit.data.prepare), with a progress bar; its run record goes beside the dataset."""
    from facekit.data.prepare import check_preparable, run_prepare
    from facekit.runs import start_run

    groups = check_preparable(plan)  # a refused run leaves no folder and no run record
    runs: list[RunDir] = []

    def record() -> None:  # its run record, under the folder's lock: a prepare refused as another's leaves none
        runs.append(start_run(plan, "prepare", Path(plan.recipe.prepare.output) / "runs"))

    report = run_prepare(plan, progress=options.progress, groups=groups, on_locked=record)
    run = runs[0]
    (run.path / "summary.json").write_text(json.dumps(report.summary, indent=2) + "\n")
    return replace(run, note=prepare_note(report.summary, plan.recipe.prepare.output))


def prepare_note(summary: dict[str, Any], output: str) -> str:
    """What `facekit run` prints for the prepare stage: people and photos kept, and why the others were dropped; a
    FacekitError when nobody was kept (the later stages would have nothing to train on)."""
    from facekit.errors import FacekitError

    if not summary:  # another shard builds the arrays
        return f"this shard's photos are done; the arrays are built when every shard is ({output})"
    reasons = ", ".join(f"{count} {reason}" for reason, count in sorted(summary.get("reasons", {}).items()))
    faces = summary.get("faces_kept", summary.get("status", {}).get("kept", 0))
    kept = summary.get("photos_kept", faces)  # (a summary from before photos_kept: one face per photo)
    said = (
        f"{summary.get('identities_kept', 0)} of {summary.get('identities_seen', 0)} people and {kept} of "
        f"{summary.get('photos', 0)} photos kept"
        + (f" ({faces} faces)" if faces != kept else "")
        + (f" (dropped: {reasons})" if reasons else "")
    )
    if not summary.get("identities_kept"):
        raise FacekitError(f"prepare kept nobody: {said}; see {Path(output) / 'manifest.jsonl'} for each photo")
    return f"{said}: {output}"


def check_augment_output(output: Path) -> None:
    """A folder without the augment stage's index.json is not its own: a file of the user's there stops it (helper-74:
    its contact sheet replaced one of that name); in its own folder other files are left alone."""
    from facekit.batch import refuse_foreign_folder

    if not (output / "index.json").is_file():  # its own folder may hold anything else (helper-76: a README stopped it)
        refuse_foreign_folder(output, (), "augment.output")


def nothing_to_augment(plan: Plan) -> FacekitError:
    """The augment stage asked for with no morphs to write: which setting says so, and the one that writes some
    (helper-107: "augment.enabled is false or augment.count is 0: nothing to materialise", after prepare ran)."""
    return SettingsRefused(str(augment_problems(plan)[0]))


def augment_problems(plan: Plan) -> list[Problem]:
    """The augment stage's refusal from the settings alone (:func:`nothing_to_augment`): no morphs to write, at
    the setting that says so."""
    augment = plan.recipe.augment
    if augment.enabled and augment.count:
        return []
    turn_on = "" if augment.enabled else "--set augment.enabled=true "
    return [
        Problem(
            "augment.count" if augment.enabled else "augment.enabled",
            f"the augment stage has no morphs to write ({skip_reason('augment', plan)}): {turn_on}--set "
            "augment.count=N writes N to look at, or run the other stages without it (--stage prepare --stage train)",
        )
    ]


def prepare_problems(plan: Plan) -> list[Problem]:
    """The prepare stage's refusals from the settings alone (:func:`facekit.data.prepare.check_preparable` raises
    the first): a detector giving 68 iBUG points (what it aligns and averages) and data.train sources."""
    from facekit.types import LandmarkScheme

    problems = []
    detector = plan.components.get("detector")
    if detector is None:
        problems.append(
            Problem("components.detector", "the prepare stage needs components.detector (e.g. {name: dlib})")
        )
    else:
        scheme = detector.spec.card.landmark_scheme if detector.spec.card is not None else None
        if scheme != LandmarkScheme.IBUG68.value:
            problems.append(
                Problem(
                    "components.detector.name",
                    f"prepare needs a 68-point iBUG detector (scheme ibug68; e.g. facekit-dlib's 'dlib'); "
                    f"{detector.spec.name!r} gives {scheme or 'undeclared'} landmarks",
                )
            )
    if not plan.recipe.data.train:
        problems.append(Problem("data.train", "the prepare stage needs data.train sources"))
    return problems


def train_problems(plan: Plan) -> list[Problem]:
    """The train stage's refusals from the settings alone: an encoder and a decoder that takes its feature size
    (:func:`trainer_problems`) and, with the encoder's losses on, a differentiable warper (built to ask it: a warper
    has no weights; built once, the one the training then trains through), which is tried on a mean face when it says
    it is (:func:`warper_cut_problems`, on a build of its own)."""
    problems = trainer_problems(plan)
    if "warper" in plan.components and plan.recipe.train.loss.through_encoder():
        problems.extend(warper_problems(plan, plan.components["warper"].built_once) or warper_cut_problems(plan))
    return problems


def warper_cut_problems(plan: Plan) -> list[Problem]:
    """A warper that says ``differentiable = True``, tried on a mean face (:func:`warper_cut`): refused where its
    warped face is not connected to the texture or the destination points. Before (helper-223, helper-232), `facekit
    check` took the flag at its word and such a warper was refused only by the train stage, after the prepare stage
    and the training pool (:func:`facekit.train.check_warp_connected`, which still checks the real decoder's).
    facekit's own warpers are not tried: their gradients are its tests' (facekit.testing's warper ``gradients``
    check), and the try imports torch, which took `facekit check demo` from 0.6 to 2 s."""
    if plan.components["warper"].spec.plugin == "builtin":
        return []
    cut = warper_cut(plan)
    if cut is None:
        return []
    terms = plan.recipe.train.loss.through_encoder()
    message = warp_cut_message(plan.components["warper"].spec, cut, terms)
    return [Problem("components.warper.name", message, tuple(f"train.loss.{term}" for term in terms))]


def trainer_problems(plan: Plan) -> list[Problem]:
    """A training's encoder and decoder from the settings alone (:func:`facekit.train.check_trainable` raises the
    first): both named, the decoder with the feature size the trainer sets (:func:`decoder_problems`)."""
    problems = []
    if plan.components.get("encoder") is None:
        problems.append(Problem("components.encoder", "training needs components.encoder (e.g. {name: dlib-resnet})"))
    return problems + decoder_problems(plan)


def decoder_problems(plan: Plan) -> list[Problem]:
    """A training's decoder from the settings alone (:func:`facekit.train.build_decoder` raises the first): there
    is one, and its Params has the ``feature_size`` through which the trainer gives it the encoder's."""
    component = plan.components.get("decoder")
    if component is None:
        return [Problem("components.decoder", "training needs components.decoder (e.g. {name: paper})")]
    if "feature_size" not in type(component.params).model_fields:
        return [
            Problem(
                "components.decoder.name",
                f"decoder {component.spec.name!r}: its Params has no feature_size field, through which the trainer "
                "gives it the encoder's feature size (facekit.types.TrainableDecoder)",
            )
        ]
    return []


def warper_problems(plan: Plan, warper: Any) -> list[Problem]:
    """The encoder's losses (identity, perceptual, separation) reach the decoder through the warped face: with any
    on, a ``warper`` (the recipe's, built) that does not say ``differentiable = True`` is refused (it would train
    those losses into nothing; :func:`facekit.train.check_warper_for_losses` raises it). ``about``: the loss terms on,
    so that `facekit check` names the ``--set train.loss.*`` that turned one on (before: only a --set of the warper)."""
    flag = getattr(warper, "differentiable", None)
    terms = plan.recipe.train.loss.through_encoder()
    if not terms or flag is True:
        return []
    name = plan.components["warper"].spec.name
    said = "says it is not differentiable" if flag is False else "does not say it is differentiable"
    return [
        Problem(
            "components.warper.name",
            f"warper {name!r} {said} (its differentiable attribute), and the encoder's losses reach the decoder "
            "through the warped face: set train.loss.identity, perceptual and separation to 0 or choose "
            "a differentiable warper",
            tuple(f"train.loss.{term}" for term in terms),
        )
    ]


def warp_cut_message(spec: Any, cut: str, terms: Sequence[str]) -> str:
    """What a warper that says ``differentiable = True`` and whose warped face is not connected to ``cut`` (``the
    decoder``: its texture; ``the decoder's landmarks``) is refused with, the encoder's loss ``terms`` on: by
    `facekit check` and `facekit run` from :func:`warper_cut`'s probe, and by the train stage from its decoder's
    first output (:func:`facekit.train.check_warp_connected`)."""
    losses = ", ".join(f"train.loss.{term}" for term in terms)
    return (
        f"warper {spec.name!r} (plugin {spec.plugin!r}) says differentiable = True, but its warped face is not "
        f"connected to {cut} (warped under torch.no_grad, with its points detached, or through numpy?), and the "
        f"encoder's losses on ({losses}) reach the decoder through it: fix the warper (facekit.testing's warper "
        "gradients check shows where) or set those losses to 0"
    )


#: The side (px) of the shipped models' faces, whose mean landmarks :func:`warper_cut` warps (scaled to the decoder's).
PROBE_FACE_SIZE = 112


def warper_cut(plan: Plan) -> str | None:
    """Where the recipe's warper, which says ``differentiable = True``, cuts the gradient the encoder's losses need,
    tried from the settings alone as training runs it: a random texture of the decoder's ``image_size`` warped from
    the shipped model's mean face (68 iBUG points, none closer than 0.6 px at 112 px: the test face's two inner-lip
    points coincide, which an exact spline cannot solve) to a copy of it moved by a random pixel or so. ``"the
    decoder"`` when the warped image does not reach the texture, ``"the decoder's landmarks"`` when it does not reach
    the destination points, else None. A fresh build is tried (a warper may keep state, a cached solve: the one the
    training runs is left as built), on the CPU, with its own random numbers. A warper that raises here (one that
    runs on a GPU only) or a facekit without its shipped model is left to the train stage's own check of the real
    decoder's first output (:func:`facekit.train.check_warp_connected`)."""
    import torch
    from safetensors import safe_open

    from facekit.normalize import model_path

    try:
        with safe_open(str(model_path("dlib", verify=False)), "pt") as shipped:
            mean = shipped.get_tensor("model.mean_landmarks").float()
    except (FacekitError, OSError):
        return None
    size = int(
        getattr(plan.components["decoder"].params, "image_size", PROBE_FACE_SIZE)
        if "decoder" in plan.components
        else PROBE_FACE_SIZE
    )
    scale = size / PROBE_FACE_SIZE
    generator = torch.Generator().manual_seed(0)
    source = (mean * scale).expand(2, -1, -1).clone()
    destination = (source + torch.randn(source.shape, generator=generator) * scale).requires_grad_()
    texture = torch.rand(2, 3, size, size, generator=generator).requires_grad_()
    warper = plan.components["warper"].build()
    with torch.enable_grad():
        try:
            warped = warper.warp(texture, source, destination)[0]
            if not isinstance(warped, torch.Tensor) or not warped.requires_grad:
                return "the decoder"
            # (its backward too: one that raises on the CPU ended `facekit check` and `run` in its traceback)
            grads = torch.autograd.grad(warped.float().sum(), [texture, destination], allow_unused=True)
        except Exception:  # noqa: BLE001  (the probe is ours; its failure is the train stage's to say, on its device)
            return None
        to_texture, to_points = grads
    if to_texture is None:
        return "the decoder"
    return "the decoder's landmarks" if to_points is None else None


def infer_problems(plan: Plan) -> list[Problem]:
    """The infer stage's refusals from the settings alone: inputs to normalize (:func:`infer_items`) and apps'
    params it would leave unused (:func:`pipeline_app_problems`)."""
    empty = (
        [Problem("infer.inputs", "is empty: list photos or folders to normalize")]
        if not plan.recipe.infer.inputs
        else []
    )
    return empty + pipeline_app_problems(plan)


def run_augment_stage(plan: Plan, options: RunOptions) -> RunDir:
    """Materialise ``augment.count`` random morphs of the prepared set into shards, plus a 64-morph contact sheet."""
    import numpy as np
    from PIL import Image

    from facekit.data.augment import check_morphs_folder, contact_sheet, materialise, morph_dataset
    from facekit.locks import exclusive
    from facekit.models import sha256_file
    from facekit.runs import start_run

    augment = plan.recipe.augment
    if not augment.enabled or augment.count == 0:
        raise nothing_to_augment(plan)
    check_augment_output(Path(augment.output))
    # The folder's lock is held for the whole stage, as a training's (materialise is told so): a second run into it
    # is refused before it writes anything (before: materialise alone held it, so a refused run left its run record
    # under augment.output/runs, and the contact sheet was written after the lock was let go).
    with exclusive(Path(augment.output), "augment"):
        shards = [0, 0]  # whole, of all (materialise's on_whole)
        # A stop as the prepared set loads and is hashed says that no shard is whole (before: the CLI's general line).
        with stops_said(
            lambda by: augment_stopped(by, shards[0], shards[1], augment.output, plan.source, plan.overrides)
        ):
            dataset = morph_dataset(plan, length=augment.count)
            prepared = Path(plan.recipe.prepare.output)
            fingerprint = {  # what the morphs depend on: shards made from anything else are refused, never mixed in
                "prepared": {
                    name: sha256_file(prepared / f"{name}.npy") for name in ("landmarks", "textures", "averages")
                },
                "augment": augment.model_dump(exclude={"count", "output", "enabled"}, mode="json"),
                "seed": plan.recipe.train.seed,
            }
            # Morphs of other data or settings there: refused before the run record (helper-221: after it, a record
            # of a run that never ran stayed).
            check_morphs_folder(Path(augment.output), fingerprint)
            run = start_run(plan, "augment", Path(augment.output) / "runs")
        # A worker killed (the out-of-memory killer, kill -9) is one line, as the training pool's: the shards written
        # stay.
        with (
            stops_said(
                lambda by: augment_stopped(by, shards[0], shards[1], augment.output, plan.source, plan.overrides)
            ),
            data_workers_lost_said(
                "run the augment stage again (it goes on after the last whole shard), with prepare.workers=1 to use "
                "less memory"
            ),
        ):
            materialise(
                dataset,
                augment.count,
                augment.output,
                workers=plan.recipe.prepare.workers,
                progress=options.progress,
                fingerprint=fingerprint,
                on_whole=lambda whole, total: shards.__setitem__(slice(None), [whole, total]),
                output_locked=True,
            )
            picks = np.random.default_rng(plan.recipe.train.seed).choice(
                augment.count, size=min(64, augment.count), replace=False
            )
            sheet = contact_sheet(
                [np.round(dataset.morph(int(i)).image.clip(0, 1) * 255).astype(np.uint8) for i in picks]
            )
            Image.fromarray(sheet).save(Path(augment.output) / "contact_sheet.png")
    # The morphs' folder, not the run record's (helper-69: "wrote runs/.../runs/<stamp>-augment").
    return replace(run, note=f"{augment.count} morphs in {augment.output} (contact sheet: contact_sheet.png)")


def stage_command(recipe: str, stage: str, overrides: Sequence[str] = ()) -> str:
    """The command that runs ``stage`` of ``recipe`` again as this run did, its ``--set`` overrides included, quoted
    for a shell (helper-221: a stopped infer stage given `--set infer.inputs=[...] --set infer.output=...` said to
    run `facekit run walk.yaml --stage infer` again, which normalizes the recipe's own inputs into its own folder)."""
    import shlex

    given = "".join(f" --set {shlex.quote(value)}" for value in overrides)
    return f"facekit run {shlex.quote(recipe)} --stage {stage}{given}"


def augment_stopped(by: str, whole: int, total: int, output: str, recipe: str, overrides: Sequence[str] = ()) -> str:
    """What the augment stage stopped by ``by`` says: how many of its ``total`` shards of morphs are whole in
    ``output`` (each is renamed into place whole: a stop mid-shard leaves none of it), and that the stage run again
    makes only the others (each whole one holding its items from the same data and settings is kept). Before: the
    CLI's general line."""
    again = stage_command(recipe, "augment", overrides)
    if not whole:
        return f"augment stage stopped by {by} before its first shard of morphs was whole: run `{again}` again"
    if whole == total:  # (stopped in the index or the contact sheet)
        return (
            f"augment stage stopped by {by} as it finished: its {total} shards of morphs are whole in {output}; "
            f"`{again}` finishes it without making any again"
        )
    return (
        f"augment stage stopped by {by}: {whole} of {total} shards of morphs are whole in {output}; `{again}` goes "
        f"on with the other {total - whole}"
    )


def run_train_stage(plan: Plan, options: RunOptions) -> RunDir:
    """Train the decoder (facekit.train); ``--resume`` continues ``train.output``'s last checkpoint."""
    from facekit.checkpoints import read_checkpoint_meta
    from facekit.locks import exclusive
    from facekit.runs import is_rank_zero, start_run
    from facekit.train import checked_trainable, train

    # A refused training leaves no run record (nor a lock) in train.output; the training takes these findings
    # rather than checking again (before: three times a stage, each reading the prepared set and listing the photos).
    checked = checked_trainable(plan, options.resume)
    folder = Path(plan.recipe.train.output)  # (what train returns)
    last = folder / "checkpoints" / "last.safetensors"
    # The folder's lock is held from before the run record, as the augment stage's (helper-221: train took it after,
    # so a --resume into a folder a running training writes left a record "resumed_from_step" that never ran).
    with exclusive(folder, "training") if is_rank_zero() else nullcontext():
        # Which steps this run folder's run trained: a resumed run's record says the step it went on from (before: a
        # resumed run's folder read as a fresh run's, an interrupted one's beside it).
        resumed_from = int(read_checkpoint_meta(last).get("step", 0)) if options.resume and last.is_file() else None
        run = start_run(
            plan,
            "train",
            folder / "runs",
            plan.recipe.train.device,
            plan.recipe.train.seed,
            extra={"resumed_from_step": resumed_from},
        )
        train(plan, resume=options.resume, progress=options.progress, checked=checked, output_locked=True)
    steps = plan.recipe.train.steps
    step = int(read_checkpoint_meta(last).get("step", 0)) if last.is_file() else 0
    note = f"step {step} of train.steps {steps}"
    if resumed_from is not None:
        note += f" (resumed from step {resumed_from})"
    note += f"{_final_losses(folder / 'metrics.csv', step)}: {last}"
    if step > steps:
        note += f" (the checkpoint was already past train.steps {steps}: nothing was trained; raise train.steps)"
    return replace(run, note=note)


def _final_losses(metrics: Path, step: int) -> str:
    """The losses ``metrics`` (a training's metrics.csv) holds for ``step``, as the train stage's last line says
    them: ``, loss 0.3494 (landmark 0.5892, texture 0.1930, identity 0.0974; every step's in PATH)``; nothing where
    the file has no row for it. Before, the stage ended naming the checkpoint alone: the loss it reached and its
    terms were only in a file it did not name."""
    import csv

    try:
        with metrics.open(newline="") as handle:
            rows = [row for row in csv.DictReader(handle) if row.get("step") == str(step)]
    except (OSError, csv.Error):
        return ""
    if not rows or not rows[-1].get("loss"):
        return ""
    row = rows[-1]
    terms = ", ".join(
        f"{name} {float(value):.4f}" for name, value in row.items() if name not in ("step", "loss", "seconds") and value
    )
    return f", loss {float(row['loss']):.4f} ({terms}{'; ' if terms else ''}every step's in {metrics})"


#: How the evaluate stage's line marks a judge that is the model's own encoder.
OWN_ENCODER_JUDGE = " (the model's own encoder: a biased judge)"


def identity_rates(metrics: Mapping[str, Any], own: str | None) -> str:
    """The evaluate stage's pass rate per judge, the model's own encoder said to be one (``own``): it took part in
    training and flatters the model (helper-175: the demo's only judge, its 5 % read as any judge's)."""
    return ", ".join(
        f"{name}{OWN_ENCODER_JUDGE if name == own else ''} pass {figures['identity_pass_rate']:.1%}"
        for name, figures in metrics.get("judges", {}).items()
    )


def run_evaluate_stage(plan: Plan, options: RunOptions) -> RunDir:
    """Evaluate the recipe's trained model on its evaluate section; judges: the encoder and components.judge. The
    model and the judges run on ``infer.device``, the recipe's device for inference (as the infer stage's)."""
    from facekit.evaluate import evaluate_plan
    from facekit.normalize import inference_device
    from facekit.runs import start_run

    evaluate = plan.recipe.evaluate
    device = inference_device(plan.recipe.infer.device, "infer.device")  # no GPU: said before a run folder is made
    check_output_folders(plan, ["evaluate"])  # before the run folder is made in it
    model = Path(plan.recipe.train.output) / "checkpoints" / "last.safetensors"
    if not model.is_file():  # a refused stage writes nothing (no run record in evaluate.output)
        raise trained_model_missing(model)
    from facekit.checkpoints import read_checkpoint_meta

    # A stop while the model and the detector load says so (before: the CLI's general line); one in the evaluation
    # says evaluate_plan's own line (the inner one is kept).
    with stops_said(lambda by: evaluate_stage_stopped(by, evaluate.output, plan.source, plan.overrides)):
        model_components(plan, read_checkpoint_meta(model), model, stage="evaluate")
        named_detector = recipe_detector(plan)
        prepared = None
        if named_detector is not None:
            # A detector the model's encoder cannot align from, or without its weights: refused before the run
            # record (helper-81: after it, each try left a run.json naming the detector as used), as the infer stage
            # does.
            from facekit.detail import DECODER_ONLY
            from facekit.normalize import Normalizer

            # A components.judge that is the model's own encoder (default-model.yaml's), built by the run's check, is
            # that encoder: taken rather than built again (the judge then is normalizer.encoder: evaluate_plan).
            prepared = Normalizer.from_checkpoint(
                model,
                device=device,
                detail=DECODER_ONLY,
                detector=named_detector.build(),
                encoder=plan.components.get("judge"),
            )
        runs: list[RunDir] = []

        def record() -> None:  # its run record, under the folder's lock: an evaluation refused as another's leaves none
            runs.append(start_run(plan, "evaluate", Path(evaluate.output) / "runs", plan.recipe.infer.device))

        # No judges named: evaluate_plan's own, the model's encoder and components.judge, each with its params
        # (before: their names, and a judge of the encoder's name with other params was the encoder, so recorded).
        metrics, folder = evaluate_plan(
            plan,  # (not read again: the settings run.json hashed, the judge check_later_stages built)
            None,
            evaluate.data,
            (),
            evaluate.max_photos,
            evaluate.output,
            prepared=prepared,  # (not loaded twice)
            device=device,
            said_as=("evaluate stage", f"run `{stage_command(plan.source, 'evaluate', plan.overrides)}` again"),
            on_locked=record,
        )
        run = runs[0]
    own = plan.components["encoder"].spec.name if "encoder" in plan.components else None
    rates = identity_rates(metrics, own)
    note = f"{metrics.get('normalized', 0)} of {metrics.get('photos', 0)} photos normalized; identity kept: {rates}"
    return replace(run, note=f"{note} ({Path(folder) / 'metrics.json'}, report.html)")


def recipe_apps(plan: Plan) -> list[Any]:
    """The recipe's ``components.apps``, as resolved components, in their order (slots ``apps.0``, ``apps.1``...)."""
    return [component for slot, component in plan.components.items() if slot.startswith("apps.")]


def check_pipeline_apps(plan: Plan) -> None:
    """Refuse, before any photo is normalized, an app param the infer stage would leave unused (its params class's
    ``NOT_IN_PIPELINE``): a recipe's apps are handed the faces the recipe's model made and run ``apply`` on them
    (before: ``params: {model: sface}``, ``device: cuda`` or adjust's ``strength`` were accepted and unused, and an
    unusable device was refused only after every photo was normalized; helper-94)."""
    raise_first(pipeline_app_problems(plan))


def pipeline_app_problems(plan: Plan) -> list[Problem]:
    """:func:`check_pipeline_apps`' refusals, one per app, at ``components.apps.N.params`` (``about``: the params
    given, so that `facekit check` names the ``--set`` that gave one)."""
    problems = []
    for component in recipe_apps(plan):
        unused = type(component.params).NOT_IN_PIPELINE
        given = [name for name in unused if name in component.params.model_fields_set]
        if given:
            at = f"components.{component.slot}.params"
            problems.append(
                Problem(
                    at,
                    f"{', '.join(given)} are for the {component.spec.name} app's own command and the Python API; in "
                    "a recipe it is handed the faces infer.checkpoint made (with infer.face, on infer.device) and its "
                    "apply reads none of them: leave them out",
                    tuple(f"{at}.{name}" for name in given),
                )
            )
    return problems


def _none_from_the_settings(_plan: Plan) -> list[Problem]:
    """The evaluate stage's refusals from the settings alone: none (its own need the trained model's file)."""
    return []


#: Each stage's refusals from the recipe's settings alone (:func:`run_refusals`), an entry per stage.
STAGE_REFUSALS: dict[str, Callable[[Plan], list[Problem]]] = {
    "prepare": prepare_problems,
    "augment": augment_problems,
    "train": train_problems,
    "evaluate": _none_from_the_settings,
    "infer": infer_problems,
}


def run_refusals(plan: Plan, stages: Sequence[str] | None = None) -> list[Problem]:
    """What `facekit run` (with ``stages`` as its ``--stage``: :func:`stages_running`) refuses from the recipe's
    settings alone (no data read, no model weights loaded) after the recipe resolved, as problems, each at its
    setting's path: each stage raises the first of its own where it checks them (``STAGE_REFUSALS``' functions),
    and `facekit check` says them all (helper-168: it called valid a recipe whose apps' params `facekit run` refused
    as it started; helper-169: a detector prepare cannot use, no data.train, no encoder or decoder, a warper the
    encoder's losses cannot pass through). A stage that does not run refuses nothing (a recipe for ``--stage
    evaluate`` alone may name a 5-point detector). Machine-dependent refusals (a GPU not here) are not among them."""
    return [problem for stage in stages_running(plan, stages) for problem in STAGE_REFUSALS[stage](plan)]


def evaluate_stage_stopped(by: str, output: str, recipe: str, overrides: Sequence[str] = ()) -> str:
    """What the evaluate stage stopped by ``by`` before its evaluation began says (the model and the recipe's
    detector loading): nothing of its results is written (they are written together at the end); the stage run
    again starts it over."""
    return (
        f"evaluate stage stopped by {by} before measuring any photo: none of its results were written to {output}; "
        f"run `{stage_command(recipe, 'evaluate', overrides)}` again"
    )


def run_infer_stage(plan: Plan, options: RunOptions) -> RunDir:
    """Normalize ``infer.inputs`` with ``infer.checkpoint`` (default: the model trained by this recipe)."""
    from facekit.batch import FINISHED, INFER_WORDS, normalize_planned
    from facekit.detail import detail_settings
    from facekit.normalize import Normalizer, inference_device, model_file
    from facekit.progress import PhotoCount, Progress
    from facekit.runs import start_run

    infer = plan.recipe.infer
    # A shipped model's name is its file (helper-74: infer.checkpoint=dlib loaded it, then hashing 'dlib' failed).
    checkpoint = model_file(infer.checkpoint or Path(plan.recipe.train.output) / "checkpoints" / "last.safetensors")
    if infer.checkpoint is not None and not checkpoint.is_file():  # (helper-98: "from_checkpoint: PosixPath(...)")
        raise FacekitError(infer_checkpoint_missing(infer.checkpoint))
    device = inference_device(infer.device, "infer.device")  # no GPU: said before a run folder is made
    apps = recipe_apps(plan)
    raise_first(infer_problems(plan))  # no inputs, apps' params it would not use: said before the model loads
    if infer.checkpoint is None and not checkpoint.exists():  # (a folder there: from_checkpoint says so)
        raise trained_model_missing(checkpoint)  # (after the settings' refusals, as a run says those first)
    # The recipe's own detector replaces the model's (its scheme checked); the encoder, decoder and warper are the
    # model's, and a recipe that names others is refused rather than silently overruled.
    # (the rows told, each photo's outputs written by then: those with outputs, and those without, done again)
    total, rows, without = [0], [0], [0]
    # A stop while the model, the detector and the apps load says no photo is done (before: the CLI's general line).
    with stops_said(
        lambda by: infer_stopped(by, rows[0], total[0], infer.output, plan.source, without[0], plan.overrides)
    ):
        named_detector = recipe_detector(plan)
        detector = named_detector.build() if named_detector is not None else None
        normalizer = Normalizer.from_checkpoint(
            checkpoint,
            device=device,
            detail=detail_settings(infer.detail, infer.detail_shape, infer.detail_forehead),
            face=infer.face,
            detector=detector,
            size=infer.size,
        )
        used = model_components(plan, normalizer.meta, checkpoint)
        folder_plan = plan_infer_outputs(plan)  # before the run record: a refusal leaves nothing among the photos
        built = build_apps(apps)
        per_face = probe_apps(built, normalizer)  # an app that would fail says so before the first photo
        runs: list[RunDir] = []

        def record() -> None:  # its run record, under the folder's lock: an infer refused as another's leaves none
            runs.append(start_run(plan, "infer", Path(infer.output) / "runs", infer.device, components=used))

        total[0] = len(folder_plan.planned)
        # A bar as `facekit normalize` has (before: the stage said nothing until its end, however many photos).
        with Progress(transient=True, disable=not options.progress) as progress:
            task = progress.add_task("normalizing", total=total[0], unit="photo")
            with PhotoCount(progress, task) as count:  # moved per photo, as its detection ends, not per batch

                def on_row(row: Any) -> None:
                    if row.status in FINISHED:
                        rows[0] += 1
                    else:  # (no face found, unreadable: no outputs, and the rerun does it again)
                        without[0] += 1
                    count.row(row)

                summary = normalize_planned(
                    normalizer,
                    folder_plan,
                    checkpoint,
                    infer.overwrite,
                    on_row=on_row,
                    on_detected=count.detected,
                    on_locked=record,
                    words=INFER_WORDS,
                )
        run = runs[0]
        statuses = {row.input: row.status for row in summary.rows}
        (run.path / "statuses.json").write_text(json.dumps(statuses, indent=2) + "\n")
        made = [row for row in summary.rows if row.output is not None]
        if apps and made:  # none (all left alone): an earlier apps.json stays (helper-74: it was emptied)
            results = run_apps(apps, made, Path(infer.output), built=built, per_face=per_face)
            write_apps_json(results, Path(infer.output))
    return replace(run, note=infer_note(summary, infer.output), failed=summary.failed)


def infer_stopped(
    by: str, done: int, total: int, output: str, recipe: str, without: int = 0, overrides: Sequence[str] = ()
) -> str:
    """What the infer stage stopped by ``by`` says: how many of its ``total`` photos it finished (``done``: their
    outputs are written in ``output``), and that the stage run again goes on with the others (it skips each photo
    whose outputs it finds made with the same model and settings, as `facekit normalize` does; a training run again
    would refuse its checkpoint without --resume, so the stage alone), ``without`` of them looked at already and left
    without outputs (no face found, unreadable), which it does again (before: they were said finished). The command
    named carries the run's ``overrides``. Before: the CLI's general line."""
    from facekit.batch import without_output

    again = stage_command(recipe, "infer", overrides)
    if not done:
        return f"infer stage stopped by {by} before its first photo was done: run `{again}` again"
    if done == total:  # (stopped in its apps or its statuses)
        return (
            f"infer stage stopped by {by} as it finished: its {total} photos are done in {output}; `{again}` "
            "finishes it without normalizing any again"
        )
    return (
        f"infer stage stopped by {by}: {done} of {total} photos finished, kept in {output}; `{again}` goes on "
        f"with the other {total - done}{without_output(without)}"
    )


def relative_to_working_folder(model: Path) -> str:
    """Where the trained model's relative path leads and the first thing to do about it, to open a refusal's list of
    what to do (``""`` for an absolute path)."""
    if model.is_absolute():
        return ""
    here = f"relative outputs are under {Path.cwd()}, the folder the command runs in"  # (as `facekit check` says)
    return f"{here}: run from the folder the train stage ran in, "


def trained_model_missing(model: Path) -> FacekitError:
    """The error for the recipe's trained model (train.output's last checkpoint) not there, for the infer and evaluate
    stages. A relative train.output is under the working folder, which that says (helper-188: run from another folder
    than the recipe's, "checkpoint not found: runs/mine/train/checkpoints/last.safetensors" alone)."""
    where = relative_to_working_folder(model)
    return FacekitError(f"checkpoint not found: {model} ({where}run the train stage first, or set train.output)")


def infer_checkpoint_missing(named: str) -> str:
    """The error for an ``infer.checkpoint`` that is no model file and no shipped model's name."""
    from facekit.normalize import SHIPPED_MODELS

    return f"infer.checkpoint not found: {named} (a model file, or a shipped model: {', '.join(SHIPPED_MODELS)})"


def recipe_detector(plan: Plan) -> Any:
    """The detector component the recipe names itself (it replaces the model's in the infer and evaluate stages), or
    None: the model's own detector runs."""
    if "detector" in plan.recipe.components.model_fields_set and "detector" in plan.components:
        return plan.components["detector"]
    return None


def model_components(plan: Plan, meta: dict[str, Any], checkpoint: Path, stage: str = "infer") -> dict[str, str]:
    """What the infer (or evaluate) stage runs, slot -> "name (plugin)": the model's encoder, decoder and warper, the
    detector (the recipe's when it names one, else the model's) and the recipe's apps. A FacekitError when the recipe
    names an encoder, decoder or warper other than the model's, or sets other params for them: the decoder was trained
    on that encoder's features and through that warp, and cannot take others."""
    import facekit
    from facekit.checkpoints import model_detector
    from facekit.errors import FacekitError
    from facekit.types import Kind

    given = plan.recipe.components.model_fields_set
    detector_ref = model_detector(meta)
    model: dict[str, str | None] = {slot: meta.get(slot) for slot in ("encoder", "decoder", "warper")}
    model["detector"] = detector_ref.get("name")
    clashes = [
        f"components.{slot} is {plan.components[slot].spec.name!r}, the model's is {model[slot]!r}"
        for slot in ("encoder", "decoder", "warper")
        if slot in given and slot in plan.components and model[slot] and plan.components[slot].spec.name != model[slot]
    ]
    # The same component with other params the recipe sets (helper-74: --set components.warper.params.regularization
    # =0.5 gave byte-identical faces, and the run's recipe.yaml recorded the value as used).
    model_params = {
        "encoder": ((meta.get("recipe", {}).get("components", {}) or {}).get("encoder") or {}).get("params") or {},
        "decoder": meta.get("decoder_params") or {},
        "warper": meta.get("warper_params") or {},
    }
    for slot in ("encoder", "decoder", "warper"):
        component = plan.components.get(slot)
        if slot not in given or component is None or component.spec.name != model[slot]:
            continue
        theirs = component.spec.validate_params(model_params[slot])
        clashes += [
            f"components.{slot}.params.{key} is {getattr(component.params, key)!r}, the model's is "
            f"{getattr(theirs, key)!r}"
            for key in sorted(component.params.model_fields_set)
            if getattr(component.params, key) != getattr(theirs, key)
        ]
    if clashes:
        which = "infer.checkpoint" if stage == "infer" else "the trained model"
        raise FacekitError(
            f"{which} {checkpoint}: " + "; ".join(clashes) + f". The {stage} stage runs the model's own "
            "encoder, decoder and warper with their params (the decoder was trained with them): drop these from the "
            "recipe, or train a model with them (only the detector may differ)"
        )
    used: dict[str, str] = {}
    kinds: tuple[Kind, ...] = ("detector", "encoder", "decoder", "warper")
    for kind in kinds:
        name = model[kind]
        named_detector = recipe_detector(plan) if kind == "detector" else None
        if named_detector is not None:
            spec = named_detector.spec
            used[kind] = f"{spec.name} ({spec.plugin})"
        elif name:
            used[kind] = f"{name} ({facekit.get_registry(kind).get(name).plugin})"
    used.update({c.slot: f"{c.spec.name} ({c.spec.plugin})" for c in recipe_apps(plan)})
    return used


def infer_note(summary: Any, output: str) -> str:
    """What `facekit run` prints for the infer stage: how many photos have their face in ``output``, and why the
    others do not (outputs left alone from other settings named with what to do)."""
    from collections import Counter

    have = sum(row.status in ("ok", "done") for row in summary.rows)
    note = f"{have} of {len(summary.rows)} photos have their normalized face in {output}"
    others = Counter(row.status for row in summary.rows if row.status not in ("ok", "done"))
    if others:  # in words (before: "12 exists, 1 no_face"), a status facekit may add later by its name
        note += "; " + ", ".join(
            f"{count} {INFER_STATUS_WORDS.get(status, status)}" for status, count in sorted(others.items())
        )
    if others.get("exists"):
        note += (
            " (outputs made with another model, detector or settings are left alone: set infer.overwrite or "
            "infer.output)"
        )
    return note


#: How :func:`infer_note` says each status of a photo without its normalized face (:class:`facekit.batch.Row`).
INFER_STATUS_WORDS = {
    "exists": "already there",
    "no_face": "with no face found",
    "unreadable": "unreadable",
    "detector_error": "where the detector failed",
    "unwritable": "whose outputs could not be written",
}


def write_apps_json(results: dict[str, Any], out: Path) -> Path:
    """OUT/apps.json: :func:`run_apps`'s results, an app's NaN or infinity as null (the file stays JSON)."""
    from facekit.batch import finite_or_null

    path = out / "apps.json"
    path.write_text(json.dumps(finite_or_null(results), indent=2, allow_nan=False) + "\n")
    return path


def build_apps(apps: Sequence[Any]) -> list[tuple[str, str, Any, str]]:
    """The recipe's ``components.apps`` built, each as (name, slot, app, label for errors); an app listed twice
    (other params) is told apart by its slot: "adjust (apps.1)"."""
    names = [component.spec.name for component in apps]
    return [
        (
            name if names.count(name) == 1 else f"{name} ({component.slot})",
            component.slot,
            component.build(),
            f"app {name} (plugin {getattr(component.spec, 'plugin', '?')})",
        )
        for name, component in zip(names, apps, strict=True)
    ]


def probe_apps(built: Sequence[tuple[str, str, Any, str]], normalizer: Any) -> dict[str, set[str]]:
    """Each built app once on the model's mean face (the decoder's face of its training features' mean), at the size
    the infer stage's faces will have (``infer.size``: resampled, as the Normalizer renders them) and as the stage
    will apply it, so that an app that raises, cannot run here (its weights) or returns what the stage refuses stops
    it before the first photo is normalized (before: after the last; helper-98). Returns each app's results with one
    entry per face (:func:`_per_face_keys`), which :func:`run_apps` then need not probe again."""
    import torch

    from facekit.normalize import rescale_points, resize_faces

    if not built:
        return {}
    decoder = normalizer.decoder
    mean = getattr(decoder, "feature_mean", None)
    features = mean[None] if isinstance(mean, torch.Tensor) else torch.zeros(1, int(decoder.feature_size))
    with torch.no_grad():
        face = decoder(features.to(normalizer.device))
    from facekit.types import DecoderOutput

    # (a decoder without landmarks, the builtin plain-cnn: its faces reach the apps without them, as in run_apps)
    landmarks = face.landmarks.float().cpu() if face.landmarks is not None else None
    image = face.image.float().clamp(0, 1).cpu()
    size, model_size = getattr(normalizer, "output_size", None), image.shape[-1]
    if size and size != model_size:  # (before: at the model's size, so an app refusing that size passed the probe)
        image = resize_faces(image, size)
        landmarks = rescale_points(landmarks, model_size, size) if landmarks is not None else None
    faces = DecoderOutput(image=image, landmarks=landmarks)
    return {name: _per_face_keys(app, faces, _applied(app, faces, label), label) for name, _, app, label in built}


def run_apps(
    apps: Sequence[Any],
    rows: Sequence[Any],
    out: Path,
    batch_size: int = 16,
    built: Sequence[tuple[str, str, Any, str]] = (),
    per_face: Mapping[str, set[str]] | None = None,
) -> dict[str, Any]:
    """The pipeline's last step (photo -> ... -> warp -> apps): the recipe's ``components.apps`` on the normalized
    faces of ``rows`` (each output PNG with its NAME.json's landmarks, as normalize wrote them), ``batch_size`` at a
    time. Returns ``{app: {"faces": {input: {result: value}}, "batches": [{result: file}]}}``: a result with one
    entry per face (its first axis the batch, and it follows the batch: :func:`_per_face_keys`) is listed per input;
    any other (explore's strip) is saved as
    ``out/apps/SLOT-BATCH-RESULT.npy`` (``apps.0-0-strip.npy``). An app listed twice is ``NAME (apps.N)``.
    ``built``: the apps as :func:`build_apps` built them (default: built here); ``per_face``: their per-face
    results as :func:`probe_apps` found them (default: probed on the first batch)."""
    import numpy as np
    import torch

    from facekit.batch import read_record
    from facekit.images import load_rgb
    from facekit.types import DecoderOutput

    built = built or build_apps(apps)
    results: dict[str, Any] = {name: {"faces": {}, "batches": []} for name, _, _, _ in built}
    per_face_keys: dict[str, set[str]] = dict(per_face or {})
    for start in range(0, len(rows), batch_size):
        chunk = rows[start : start + batch_size]
        images, landmarks = [], []
        for row in chunk:
            image, _ = load_rgb(Path(row.output))
            points = read_record(Path(row.output).with_suffix(".json")).get("landmarks")
            images.append(torch.from_numpy(np.asarray(image, np.float32) / 255.0).permute(2, 0, 1))
            landmarks.append(torch.tensor(points, dtype=torch.float32) if points is not None else None)
        faces = DecoderOutput(
            image=torch.stack(images),
            landmarks=torch.stack(landmarks) if all(p is not None for p in landmarks) else None,  # type: ignore[arg-type]
        )
        for name, slot, app, label in built:
            applied = _applied(app, faces, label)
            if name not in per_face_keys:  # once per app: which results have one entry per face
                per_face_keys[name] = _per_face_keys(app, faces, applied, label)
            listed = {key: value for key, value in applied.items() if key in per_face_keys[name]}
            for index, row in enumerate(chunk):
                results[name]["faces"].setdefault(row.input, {}).update(
                    {key: value[index].tolist() for key, value in listed.items()}
                )
            saved = {}
            for key in applied.keys() - listed.keys():
                path = out / "apps" / f"{slot}-{start // batch_size}-{key}.npy"
                path.parent.mkdir(parents=True, exist_ok=True)
                np.save(path, applied[key])
                saved[key] = str(path)
            if saved:
                results[name]["batches"].append(saved)
    return results


def _applied(app: Any, faces: Any, label: str = "") -> dict[str, Any]:
    """``app.apply`` on a copy of ``faces`` (an app that changes its input in place leaves the next app's alone), its
    results as :func:`app_arrays`. Autograd stays on: an app may optimise inside ``apply`` (the avatar's fit does). An
    app that raises is a FacekitError naming it (``label``) and the batch; weights not on this machine stay
    :class:`facekit.models.WeightsNotFoundError` (what it says is the fix)."""
    import torch

    from facekit.models import WeightsNotFoundError
    from facekit.types import DecoderOutput

    def copy(tensor: Any) -> Any:
        return tensor.clone() if isinstance(tensor, torch.Tensor) else tensor

    mine = DecoderOutput(image=copy(faces.image), landmarks=copy(faces.landmarks), texture=copy(faces.texture))
    try:
        results = app.apply(mine)
    except WeightsNotFoundError:
        raise
    except Exception as error:
        count = int(faces.image.shape[0])
        raise FacekitError(
            f"{label or type(app).__name__} failed on a batch of {count} normalized face(s): "
            f"{type(error).__name__}: {error} (FACEKIT_DEBUG=1 for the traceback)"
        ) from error
    return app_arrays(results, label or type(app).__name__)


def app_arrays(results: Any, label: str) -> dict[str, Any]:
    """An app's results as numpy arrays (detached: a tensor an app's own layers made, one that requires grad,
    included; bfloat16, which numpy lacks, as float32); a result that is not a dict, or one that is no array of
    numbers or strings (rows of different lengths, dicts, None), is a FacekitError naming it. Before, such a result
    passed the conformance check (dicts) and then ended the infer stage, every photo normalized, in a ValueError or
    AttributeError traceback."""
    import reprlib

    import numpy as np
    import torch

    if not isinstance(results, dict):
        raise FacekitError(f"{label}: apply returned {type(results).__name__}, not a dict")

    def refused(key: str, why: str) -> FacekitError:
        return FacekitError(
            f"{label}: result {key!r} is not an array of numbers or strings ({why}): return a tensor, a numpy array or "
            "equal-length lists of numbers or strings (apps.json lists a face's values, other results are saved as "
            ".npy)"
        )

    def array(key: str, value: Any) -> Any:
        if isinstance(value, torch.Tensor):
            value = value.detach().cpu()
            return (value.float() if value.dtype == torch.bfloat16 else value).numpy()
        try:
            converted = np.asarray(value)
        except ValueError as error:  # rows of different lengths
            raise refused(key, str(error).split(". ")[0]) from None
        if converted.dtype == object:  # a dict, None, a nested list...: the first item that is none of these
            odd = next((v for v in converted.flat if not isinstance(v, int | float | str | np.generic)), None)
            raise refused(key, f"it holds {reprlib.repr(odd)}")
        return converted

    return {key: array(key, value) for key, value in results.items()}


def _per_face_keys(app: Any, faces: Any, applied: dict[str, Any], label: str = "") -> set[str]:
    """The results of ``applied`` (``app`` on ``faces``, B of them) that have one entry per face: their first axis
    is B here and follows the batch when the app is given another count (a result of a fixed length that happens to
    be B, say an RGB triple for 3 faces, is the batch's, not three faces'). The probe is one face (two when B is 1),
    so it costs the app little."""
    import torch

    from facekit.types import DecoderOutput

    count = int(faces.image.shape[0])
    candidates = {key for key, value in applied.items() if value.ndim and len(value) == count}
    if not candidates:
        return set()
    other = 1 if count > 1 else 2
    pick = torch.arange(other) % count

    def take(tensor: Any) -> Any:
        return None if tensor is None else tensor[pick]

    probe = _applied(
        app,
        DecoderOutput(image=take(faces.image), landmarks=take(faces.landmarks), texture=take(faces.texture)),
        label,
    )
    return {key for key in candidates if key in probe and probe[key].ndim and len(probe[key]) == other}


# A stage mapped to None validates in recipes but refuses to run (how new stages land before their code does).
STAGE_RUNNERS: dict[str, StageRunner | None] = {
    "prepare": run_prepare_stage,
    "augment": run_augment_stage,
    "train": run_train_stage,
    "evaluate": run_evaluate_stage,
    "infer": run_infer_stage,
}


def stages_to_run(requested: Sequence[str] | None) -> list[str]:
    """The requested stages in pipeline order (all of them when none are requested)."""
    if not requested:
        return list(STAGES)
    unknown = [s for s in requested if s not in STAGES]
    if unknown:  # a usage error: exit 2, like a recipe's
        hint = did_you_mean(unknown[0], STAGES)
        raise OptionsRefused(f"unknown stage {unknown[0]!r}; {hint or 'stages: ' + ', '.join(STAGES)}")
    return [s for s in STAGES if s in requested]


def stages_running(plan: Plan, stages: Sequence[str] | None) -> list[str]:
    """The stages `facekit run` runs of ``plan``: those asked for (``--stage``) in pipeline order, or without any,
    every stage with something to do (:func:`skip_reason`: a recipe with ``augment.enabled: false`` or no
    ``infer.inputs`` skips that stage)."""
    return [stage for stage in stages_to_run(stages) if stages or skip_reason(stage, plan) is None]


def skip_reason(stage: str, plan: Plan) -> str | None:
    """Why a stage has nothing to do in ``plan`` (it is then skipped when all stages run), or None."""
    recipe = plan.recipe
    if stage == "augment" and not recipe.augment.enabled:  # (helper-74: it said "count is 0 ... on the fly")
        return "augment.enabled is false: training uses the averages alone, no morphs"
    if stage == "augment" and recipe.augment.count == 0:
        return "augment.count is 0: morphs are made on the fly into the training pool"
    if stage == "infer" and not recipe.infer.inputs:
        return "infer.inputs is empty"
    return None


class StageResult(NamedTuple):
    """One stage of :func:`run_plan`: its run folder (None if skipped), what to print, and how many inputs it gave no
    output for."""

    stage: str
    path: Path | None
    note: str
    failed: int = 0


def check_output_folders(plan: Plan, stages: Sequence[str]) -> None:
    """Before the first stage runs: a fresh training's and the evaluate stage's folders hold no files of the user's
    (``refuse_foreign_folder``), so that a run does not train for hours and then stop at its evaluation."""
    if "augment" in stages and plan.recipe.augment.enabled and plan.recipe.augment.count:
        check_augment_output(Path(plan.recipe.augment.output))
    elif "augment" in stages:  # asked for with nothing to write: said before an earlier stage runs
        raise nothing_to_augment(plan)
    if "train" in stages:  # (imported here: a prepare-only run need not load torch for it)
        from facekit.train import check_train_output

        check_train_output(Path(plan.recipe.train.output))
    if "evaluate" in stages:
        from facekit.batch import refuse_foreign_folder
        from facekit.evaluate import EVALUATE_ENTRIES, EVALUATE_SIGNATURES

        refuse_foreign_folder(
            Path(plan.recipe.evaluate.output), EVALUATE_ENTRIES, "evaluate.output", EVALUATE_SIGNATURES
        )


def checkpoints_written(train: Any) -> set[str]:
    """The checkpoints (absolute paths) a training with ``train`` settings writes: ``checkpoints/last.safetensors``
    and, with ``keep_every``, ``step-NNNNNN.safetensors`` at its multiples up to ``steps`` (helper-73: any path under
    train.output passed for one the train stage would write, a typo too)."""
    folder = Path(os.path.abspath(train.output)) / "checkpoints"
    kept = range(train.keep_every, train.steps + 1, train.keep_every) if train.keep_every else range(0)
    return {str(folder / "last.safetensors"), *(str(folder / f"step-{step:06d}.safetensors") for step in kept)}


def infer_items(plan: Plan) -> list[str]:
    """The infer stage's inputs, a relative one under data.root; an empty list, or one not there, is a FacekitError
    that names the setting (helper-107: run with --stage infer alone, it was "no such photo or folder: ../shared/data/
    new", not said to be infer.inputs under data.root)."""
    from facekit.errors import FacekitError

    if not plan.recipe.infer.inputs:
        raise SettingsRefused(str(infer_problems(plan)[0]))
    items = [item if Path(item).is_absolute() else str(plan.data_root / item) for item in plan.recipe.infer.inputs]
    missing = [item for item in items if not Path(item).exists()]
    if missing:
        # The data.root hint only where one of those not found was given relative (helper-221: it was said of
        # /photos/new too, as if the absolute path had been looked for under the data root), as data.train's says.
        given = [given for given, item in zip(plan.recipe.infer.inputs, items, strict=True) if item in missing]
        relative = any(not Path(item).is_absolute() for item in given)
        raise FacekitError(
            f"infer.inputs: no such photo or folder: {', '.join(missing[:3])}{', ...' if len(missing) > 3 else ''}"
            + (f" (a relative path is under data.root, {plan.data_root})" if relative else "")
        )
    return items


def plan_infer_outputs(plan: Plan) -> Any:
    """The infer stage's inputs scanned and outputs named (:func:`facekit.batch.plan_folder`): infer.output that is
    a file, or inside an input folder, is refused in the recipe's words (helper-74: "-o", after training, with a run
    record left among the photos)."""
    from facekit.batch import plan_folder

    infer = plan.recipe.infer
    folder_plan = plan_folder(infer_items(plan), infer.output, infer.batch_size, option="infer.output")
    apps_json = Path(infer.output) / "apps.json"
    if recipe_apps(plan) and apps_json.is_file():
        with apps_json.open("rb") as handle:
            head = handle.read(4096)
        if head.strip() not in (b"{}", b"") and b'"faces"' not in head:  # (helper-74: a user's was replaced)
            raise FacekitError(
                f"infer.output {infer.output} holds an apps.json facekit did not write: the recipe's apps would "
                "replace it; move it, or choose another infer.output"
            )
    return folder_plan


def check_settings(plan: Plan, running: Sequence[str]) -> None:
    """Before anything of ``running`` stages is read or loaded (the output folders' check imports torch, the later
    stages' load the encoder): each one's refusals from the settings alone (``STAGE_REFUSALS``), as `facekit check`
    says them (helper-169's review: a recipe without a decoder, or a warper the losses cannot pass through, was refused
    after the prepare stage; the first stage's, before, as that stage started: 3.5 s into `facekit run demo --set
    components.detector.name=dlib-5pt`, where `facekit check` took 0.6 s). In pipeline order, as `facekit check` lists
    them (:func:`run_refusals`), so both lead with the same problem: before, the later stages' came first (kept so when
    the first stage's moved here), and a recipe refused by prepare and by train led with train's in run and prepare's
    in check."""
    for stage in stages_running(plan, running):  # (a later stage's are not sought: its warper probe imports torch)
        raise_first(STAGE_REFUSALS[stage](plan))


def check_later_stages(plan: Plan, running: Sequence[str]) -> None:
    """Before the first of ``running`` stages (after :func:`check_settings`), what a later one would stop on that no
    earlier stage can mend (helper-69: a missing infer input, or a judge whose weights are not here, stopped the run
    after hours of training): the infer stage's inputs, its checkpoint when the recipe names one (unless the train
    stage runs and writes it), its device, apps and output folder; the train stage's device, train.init model and
    encoder weights; the evaluate stage's device (``infer.device``) and judge, built once to load its weights."""
    from facekit.errors import FacekitError

    later = running[1:]
    if "infer" in later:
        from facekit.normalize import inference_device

        infer = plan.recipe.infer
        from facekit.normalize import model_file

        plan_infer_outputs(plan)  # infer_items: its inputs are there
        named = infer.checkpoint
        if named is not None and not model_file(named).is_file():
            if not ("train" in running and os.path.abspath(named) in checkpoints_written(plan.recipe.train)):
                raise FacekitError(infer_checkpoint_missing(named))
        elif named is not None:  # a model that is there: the recipe's components must be its own (helper-76)
            from facekit.checkpoints import read_checkpoint_meta

            model_components(plan, read_checkpoint_meta(model_file(named)), model_file(named))
        inference_device(infer.device, "infer.device")
        check_pipeline_apps(plan)
    if "train" in later:  # (helper-74: each of these stopped the run after the whole prepare stage)
        from facekit.checkpoints import read_checkpoint_meta
        from facekit.normalize import model_file
        from facekit.train import training_device

        training_device(plan.recipe.train)  # train.device cuda without a GPU (paper.yaml on a CPU machine)
        resuming = (Path(plan.recipe.train.output) / "checkpoints" / "last.safetensors").exists()
        if plan.recipe.train.init is not None and not resuming:  # (a resumed run does not read it: helper-76)
            try:
                read_checkpoint_meta(model_file(plan.recipe.train.init))  # a missing or damaged model file
            except FacekitError as error:
                raise FacekitError(f"train.init: {error}") from None
        if "encoder" in plan.components:
            # A missing weight file is its plugin's one line, naming the file; the training runs this build.
            plan.components["encoder"].built_once  # noqa: B018
    if "evaluate" in later:
        from facekit.normalize import inference_device

        inference_device(plan.recipe.infer.device, "infer.device")  # the evaluate stage runs there too
        if "judge" in plan.components:
            # A missing weight file is its plugin's one line, naming the file; the evaluate stage judges with it.
            plan.components["judge"].built_once  # noqa: B018


def run_plan(
    plan: Plan,
    stages: Sequence[str] | None = None,
    options: RunOptions | None = None,
    on_stage: Callable[[StageResult], None] | None = None,
) -> list[StageResult]:
    """Run ``stages`` of ``plan`` (all by default, skipping those with nothing to do); refuses up front (writing
    nothing) if one is not built yet. Returns a :class:`StageResult` per stage, each also given to ``on_stage`` as
    it ends (a later stage that fails leaves the finished ones said)."""
    todo = stages_to_run(stages)
    missing = [s for s in todo if STAGE_RUNNERS[s] is None]
    if missing:
        raise StageNotBuiltError(
            f"stage{'s' if len(missing) > 1 else ''} {', '.join(missing)} of {plan.source} "
            f"{'are' if len(missing) > 1 else 'is'} not built yet in facekit; the recipe validates "
            f"(`facekit check {plan.source}`), but only these stages run today: "
            f"{', '.join(s for s, r in STAGE_RUNNERS.items() if r is not None) or 'none'}"
        )
    running = stages_running(plan, stages)
    if options is not None and options.resume and "train" not in running:  # (helper-85: ignored without a word)
        raise OptionsRefused(
            f"--resume continues a training, but this run of {plan.source} does not train (stages: "
            f"{', '.join(running) or 'none'}): run without --resume, or add --stage train"
        )
    check_settings(plan, running)
    if "train" in running:  # (a checkpoint there without --resume: refused before an earlier stage runs)
        from facekit.train import check_checkpoint_resumed

        check_checkpoint_resumed(Path(plan.recipe.train.output), options is not None and options.resume)
    check_output_folders(plan, running)
    check_later_stages(plan, running)
    outputs: list[StageResult] = []
    for stage in todo:
        reason = skip_reason(stage, plan)
        if reason is not None and not stages:
            outputs.append(StageResult(stage, None, f"skipped: {reason}"))
        else:
            runner = STAGE_RUNNERS[stage]
            assert runner is not None
            run = runner(plan, options or RunOptions())
            finish_run(run)
            outputs.append(StageResult(stage, run.path, run.note, run.failed))
        if on_stage is not None:
            on_stage(outputs[-1])
    return outputs
