"""Training the decoder through the warp: landmark MSE + texture L1 + identity loss (Cole et al. 2017, Sec. 4).

An explicit loop, no framework:

- **data**: the prepared identities (``prepare.output``) plus ``train.pool_size`` random morphs made on the fly at start
  (augment section), each an image in the aligned frame with its landmarks and texture;
- **frozen encoder**: its features (decoder input) and embeddings (identity-loss target) are computed once for the
  whole pool and cached; the identity loss runs the encoder on the decoder's output, cropped differentiably with the
  encoder's own alignment (or, with ``components.identity_encoder``, another recogniser, whose embeddings of the
  inputs are cached instead);
- **determinism**: batch ``t`` is drawn with ``default_rng([seed, t])``, so a resumed run sees the same batches;
- **checkpoints**: ``<output>/checkpoints/last.safetensors`` (weights, Adam state, step, decoder spec) written to a
  temporary file and renamed; ``--resume`` continues from it, losing at most one checkpoint interval;
- **logs**: ``metrics.csv`` (and TensorBoard when installed), sample grids ``samples/step-NNNNNN.png``;
- **DDP**: under ``torchrun`` each rank takes its slice of the same global batch (gloo on CPU, nccl on GPU); gradients
  are averaged and BatchNorm uses the global batch's statistics (:mod:`facekit.distributed`), so N processes follow
  the 1-process trajectory (to rounding, which Adam amplifies on near-zero gradients; not exactly with
  ``loss.perceptual``, whose per-layer normaliser is each rank's own mean |target map|, nor with ``loss.separation``,
  whose pairs are formed within each rank's slice); only rank 0 writes and the
  checkpoints record ``world_size``.
"""

from __future__ import annotations

import contextlib
import csv
import dataclasses
import json
import logging
import os
import re
import shutil
import time
from collections.abc import Callable
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import numpy as np
import torch

from facekit.batch import refuse_foreign_folder
from facekit.checkpoints import (
    load_decoder_state,
    load_optimizer,
    read_checkpoint,
    remove_temporaries,
    save_checkpoint,
)
from facekit.distributed import global_batchnorm, global_terms, setup_distributed
from facekit.errors import FacekitError, raise_first, sigterm_raises, stops_said
from facekit.locks import replace_durably
from facekit.losses import identity_items, jitter_transforms, losses
from facekit.normalize import model_file
from facekit.pool import CachedPool, Pool, cached_pool
from facekit.types import frozen_encoder
from facekit.warp import BOUNDARY_CONVENTION_KEY, SplineError

logger = logging.getLogger(__name__)

CHECKPOINT = "last.safetensors"
METRICS = [
    "step",
    "loss",
    "landmark",
    "texture",
    "image",
    "identity",
    "identity_own",
    "perceptual",
    "laplacian",
    "separation",
    "seconds",
]


def training_device(settings: Any) -> torch.device:
    """The device ``train`` settings ask for, refused in one line when there is none or its precision cannot run
    there."""
    device = choose_device(settings.device)
    if settings.precision == "fp16" and device.type == "cpu":  # device: auto on a machine without a GPU
        raise FacekitError("train.precision fp16 needs a GPU, and training would run on the CPU: use bf16 or fp32")
    return device


def choose_device(requested: str) -> torch.device:
    if requested == "cuda" or (requested == "auto" and torch.cuda.is_available()):
        if not torch.cuda.is_available():
            raise FacekitError("train.device is cuda but no GPU is visible; use device: cpu or auto")
        local = int(os.environ.get("LOCAL_RANK", "0"))
        return torch.device("cuda", local)
    return torch.device("cpu")


def build_decoder(plan: Any, feature_size: int, warper: Any = None) -> tuple[Any, Any]:
    """The recipe's decoder for encoder features of ``feature_size``, with the recipe's warper attached (``warper``
    when already built and checked, as training does before the pool), and the params it was built with (saved in
    checkpoints, to rebuild it)."""
    from facekit.pipeline import decoder_problems

    raise_first(decoder_problems(plan))  # the settings' (what `facekit check` says): a decoder, with feature_size
    component = plan.components["decoder"]
    params = component.params
    if params.feature_size != feature_size:
        params = params.model_copy(update={"feature_size": feature_size})
    decoder = component.spec.build(params, kind=component.kind, asked_for=f"components.{component.slot}")
    if "warper" in plan.components and hasattr(decoder, "warper"):
        if warper is None:
            warper = plan.components["warper"].build()
            check_warper_for_losses(plan, warper)
        decoder.warper = warper
    return decoder, params


def check_decoder_outputs(plan: Any, decoder: Any, features: torch.Tensor) -> None:
    """Run the built decoder (its warper attached, mean face and feature statistics set) once on two training items
    and refuse, naming it, outputs that are not what training reads (facekit.types.TrainableDecoder): a
    DecoderOutput whose image and texture are (B, 3, S, S) float tensors at its ``image_size`` and whose landmarks
    are (B, 68, 2) or None. Before, such a decoder ended in an AttributeError or a size mismatch from inside the
    losses or the sample grid (a warper returning another size: from inside the grid)."""
    from facekit.types import DecoderOutput

    was_training = decoder.training
    decoder.eval()  # no batch-norm statistics or dropout draws from the probe
    try:
        with torch.no_grad():
            out = decoder(features)
    finally:
        decoder.train(was_training)
    batch, size = len(features), int(decoder.image_size)

    def shaped(value: Any, shape: tuple[int, ...]) -> bool:
        return isinstance(value, torch.Tensor) and tuple(value.shape) == shape and value.is_floating_point()

    def described(value: Any) -> str:
        return f"{tuple(value.shape)} {value.dtype}" if isinstance(value, torch.Tensor) else type(value).__name__

    if not isinstance(out, DecoderOutput):
        problems = [f"it returned a {type(out).__name__}, not a facekit.types.DecoderOutput"]
    else:
        image = (batch, 3, size, size)
        problems = [
            f"{name} {described(value)}, not {want}"
            for name, value, want, ok in (
                ("image", out.image, f"{image} float", shaped(out.image, image)),
                ("texture", out.texture, f"{image} float or None", out.texture is None or shaped(out.texture, image)),
                (
                    "landmarks",
                    out.landmarks,
                    f"({batch}, 68, 2) float or None",
                    out.landmarks is None or shaped(out.landmarks, (batch, 68, 2)),
                ),
            )
            if not ok
        ]
    if problems:
        parts = [("decoder", plan.components["decoder"].spec)]
        if "warper" in plan.components and getattr(decoder, "warper", None) is not None:
            parts.append(("warper", plan.components["warper"].spec))
        named = " with ".join(f"{kind} {spec.name!r} (plugin {spec.plugin!r})" for kind, spec in parts)
        raise FacekitError(
            f"{named} gave, for a batch of {batch}: {'; '.join(problems)} (S = the decoder's image_size {size}; "
            "facekit.types.TrainableDecoder and Warper): fix that plugin"
        )


def check_warp_connected(plan: Any, decoder: Any, features: torch.Tensor) -> None:
    """With the encoder's losses on (identity, perceptual, separation: they reach the decoder through the warped
    face), run the built decoder once on two training items with gradients and refuse, naming the warper, a warped
    image that is not connected to the decoder (a warp under torch.no_grad, or through numpy) or to its landmarks
    (source and destination detached). Before, a warper that says ``differentiable = True`` and is not trained
    without a word: the identity term was reported each step and moved neither texture nor landmarks
    (facekit.testing's warper ``gradients`` check says it too, for a plugin's own tests)."""
    terms = plan.recipe.train.loss.through_encoder()
    if not terms or getattr(decoder, "warper", None) is None or "warper" not in plan.components:
        return
    was_training = decoder.training
    decoder.eval()  # no batch-norm statistics or dropout draws from the probe
    try:
        with torch.enable_grad():
            out = decoder(features)
            cut = None if out.image.requires_grad else "the decoder"
            points = out.landmarks
            if cut is None and isinstance(points, torch.Tensor) and points.requires_grad:
                (grad,) = torch.autograd.grad(out.image.float().sum(), [points], allow_unused=True)
                cut = None if grad is not None else "the decoder's landmarks"
    finally:
        decoder.train(was_training)
    if cut is not None:  # (`facekit check` tries the warper on a mean face: pipeline.warper_cut; this, the decoder)
        from facekit.pipeline import warp_cut_message

        raise FacekitError(warp_cut_message(plan.components["warper"].spec, cut, terms))


def check_warper_for_losses(plan: Any, warper: Any) -> None:
    """The encoder's losses (identity, perceptual, separation) reach the decoder through the warped face: with any on,
    a warper that does not say ``differentiable = True`` is refused (it would train those losses into nothing)."""
    from facekit.pipeline import warper_problems

    raise_first(warper_problems(plan, warper))  # (what `facekit check` says of the recipe's warper)


#: How far (px) a train.init model's mean face may lie from the prepared set's before it is refused.
MEAN_FACE_TOLERANCE_PX = 0.5

#: Recipe settings a resumed run may change: how long it runs, how often it writes, where it runs. Anything else
#: (data, components, losses, lr, batch size, seed, ...) would continue one run with another's state.
RESUMABLE_CHANGES = frozenset(
    {
        "description",
        "train.steps",
        "train.checkpoint_every",
        "train.keep_every",
        "train.sample_every",
        "train.device",
        "prepare.workers",
        # The augment stage's own files (how many morphs it writes, where): training makes its pool's morphs itself.
        "augment.count",
        "augment.output",
        # Where the checkpoint is (helper-69: a training folder copied or moved elsewhere could not be resumed). A
        # moved prepared set (prepare.output) may be resumed on when both record their arrays' digest and it is the
        # same (check_trainable).
        "train.output",
    }
)


#: What a training (and the recipe's train stage, and a bench cell) writes in train.output.
TRAIN_ENTRIES = ("checkpoints", "samples", "metrics.csv", "pool.safetensors", "tensorboard", "runs", "eval")
#: How facekit's own files among them begin (refuse_foreign_folder): a user's metrics.csv does not pass for ours.
TRAIN_SIGNATURES = {"metrics.csv": b"step,"}


#: Recipe parts that do not touch training, free to change on resume: the other stages' sections, the judge and the
#: apps.
FREE_ON_RESUME = ("evaluate.", "infer.", "bench.", "components.judge", "components.apps", "data.test")
#: Settings holding a path, compared as paths (``./runs/x/`` is ``runs/x``).
PATH_KEYS = frozenset({"output", "init", "root", "path", "checkpoint"})


def recipe_changes(old: Any, new: Any, prefix: str = "", defaults: Any = None) -> list[str]:
    """Dotted paths where two recipe dictionaries differ. A key on one side only counts, unless it is a setting
    added since ``old`` was written that ``new`` leaves at its default (``defaults``: a default recipe's dict), or
    one removed since; paths are compared normalized."""
    if isinstance(old, dict) and isinstance(new, dict):
        changed = []
        for key in sorted(set(old) | set(new)):
            path = f"{prefix}{key}"
            default = defaults.get(key, _MISSING) if isinstance(defaults, dict) else _MISSING
            if key not in old:
                if default is _MISSING or new[key] != default:
                    changed.append(path)
            elif key not in new:
                if isinstance(defaults, dict) and key not in defaults:
                    continue  # a setting this facekit no longer has: nothing to compare it with
                changed.append(path)  # e.g. a component's param no longer given: its own default now
            elif key in PATH_KEYS and isinstance(old[key], str) and isinstance(new[key], str):
                # Absolute: the same folder spelled from here (runs/x, ./runs/x/, /home/me/runs/x) is no change, nor
                # a shipped model's file named by path before and by its name now (train.init: dlib).
                if _as_path(old[key], key) != _as_path(new[key], key):
                    changed.append(path)
            else:
                changed += recipe_changes(old[key], new[key], f"{path}.", None if default is _MISSING else default)
        return changed
    if isinstance(old, list) and isinstance(new, list) and len(old) == len(new):
        return [c for i, (a, b) in enumerate(zip(old, new, strict=True)) for c in recipe_changes(a, b, f"{prefix}{i}.")]
    return [] if old == new else [prefix.rstrip(".")]


_MISSING = object()


def _as_path(value: str, key: str) -> str:
    """A path setting as the absolute path it names; ``train.init``'s shipped model name (``dlib``) as its file."""
    from facekit.normalize import SHIPPED_MODELS, model_path

    if key == "init" and value.lower() in SHIPPED_MODELS and not Path(value).is_file():
        with contextlib.suppress(FacekitError):  # (not in this install: compared as the name it is)
            return str(model_path(value, verify=False))
    return os.path.abspath(os.path.expanduser(value))


def _schema_defaults() -> dict[str, Any]:
    """A default recipe's settings, for :func:`recipe_changes`; without ``components``, whose params hold only what
    a recipe gave (a param added or dropped there is the component's own default, not the recipe's)."""
    from facekit.recipe import Recipe

    defaults = Recipe().model_dump(mode="json")
    defaults.pop("components", None)
    return defaults


def _data_root_resolved(recipe: dict[str, Any]) -> dict[str, Any]:
    """``recipe`` with data.root as the folder it names (unset: FACEKIT_DATA or the default), so that a root given
    by path and the same folder left to FACEKIT_DATA are no change (helper-74: "data.root changed" on resume)."""
    from facekit.recipe import DataSection

    data = recipe.get("data")
    if not isinstance(data, dict) or not (data.get("root") is None or isinstance(data.get("root"), str)):
        return recipe
    root = os.path.abspath(DataSection(root=data.get("root")).resolved_root())
    return {**recipe, "data": {**data, "root": root}}


def _params_as_read(stored: dict[str, Any], current: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """``stored`` and ``current`` (recipes as dicts) with each component's params as its Params read them, defaults
    left out, where both name the same component and its Params take both (as :func:`facekit.bench.recipe_hash`
    names a cell: before, a bench cell named the same with a default param given or left out, resumed or scored
    again, was refused as "under another recipe"); other params stay as spelled, compared as before."""
    from facekit.recipe import SLOT_KINDS
    from facekit.registry import get_registry

    old, new = stored.get("components"), current.get("components")
    if not isinstance(old, dict) or not isinstance(new, dict):
        return stored, current
    old, new = dict(old), dict(new)
    for slot in set(old) & set(new):
        a, b, kind = old[slot], new[slot], SLOT_KINDS.get(slot)
        if kind is None or not isinstance(a, dict) or not isinstance(b, dict) or a.get("name") != b.get("name"):
            continue  # (apps, a list, are not training's: FREE_ON_RESUME)
        try:
            read = get_registry(kind).get(str(b["name"])).params
            both = [read.model_validate(ref.get("params") or {}) for ref in (a, b)]
        except Exception:  # noqa: BLE001 - an unknown component or params it no longer takes: compared as spelled
            continue
        old[slot], new[slot] = (
            {**ref, "params": params.model_dump(mode="json", exclude_defaults=True)}
            for ref, params in zip((a, b), both, strict=True)
        )
    return {**stored, "components": old}, {**current, "components": new}


def check_resumable(stored: Any, current: dict[str, Any], checkpoint: Path, also: frozenset[str] = frozenset()) -> None:
    """Refuse to resume ``checkpoint`` (its ``stored`` recipe) under a ``current`` recipe that changes more than
    :data:`RESUMABLE_CHANGES` (and :data:`FREE_ON_RESUME`: they do not touch training; ``also``: settings whose
    change was checked otherwise)."""
    if not isinstance(stored, dict):
        return  # a checkpoint from before recipes were recorded: nothing to compare
    stored, current = _data_root_resolved(stored), _data_root_resolved(current)
    stored, current = _params_as_read(stored, current)
    changes = [
        path
        for path in recipe_changes(stored, current, defaults=_schema_defaults())
        if path not in RESUMABLE_CHANGES | also and not path.startswith(FREE_ON_RESUME)
    ]
    if changes:
        raise FacekitError(
            f"--resume would continue {checkpoint} under another recipe ({', '.join(changes[:8])}"
            f"{', ...' if len(changes) > 8 else ''} changed; only {', '.join(sorted(RESUMABLE_CHANGES))} and the "
            "other stages' settings may): "
            "choose another train.output, or start from it with train.init"
        )


def prepared_data_id(folder: Path) -> dict[str, Any] | None:
    """What a prepared set was made from and how: its identities' sha256, its arrays' sha256 and prepare's format
    and settings (``summary.json``, ``fingerprint.json``); None when it has none (older sets, or none yet). Raises
    when the arrays are no longer those the summary records (files copied in by hand)."""
    from facekit.data.dataset import prepared_digest

    try:
        summary = json.loads((folder / "summary.json").read_text())
        fingerprint = json.loads((folder / "fingerprint.json").read_text())
    except (OSError, ValueError):
        return None
    recorded = summary.get("arrays_sha256")
    if recorded is not None and prepared_digest(folder) != recorded:
        raise FacekitError(
            f"{folder}'s arrays are not the ones its summary.json records (changed after prepare finished): run the "
            "prepare stage again"
        )
    return {
        "identities_sha256": summary.get("identities_sha256"),
        "arrays_sha256": recorded,
        "fingerprint": fingerprint,
    }


def same_prepared_data(earlier: dict[str, Any], now: dict[str, Any]) -> bool:
    """Whether two :func:`prepared_data_id` name the same set, by what both record (a checkpoint from before the
    arrays' digest was recorded is compared on the rest)."""
    return all(earlier[key] == now.get(key) for key in earlier if earlier[key] is not None and now.get(key) is not None)


def check_prepared_for_recipe(plan: Any, folder: Path, resuming: bool = False) -> None:
    """Refuse to train on a prepared set made with other prepare settings or detector than ``plan``'s recipe asks
    for (``fingerprint.json``), from other people than its data.train (not when ``resuming``: the checkpoint names
    its set, and people added to the photos since must not stop it), or at another image size (sets made by hand
    have no fingerprint)."""
    from facekit.data.prepare import FINGERPRINT, fingerprint_changes, recipe_fingerprint

    if folder.exists() and not folder.is_dir():
        raise FacekitError(f"prepare.output {folder} is a file, not a prepared set: set prepare.output to its folder")
    try:
        recorded = json.loads((folder / FINGERPRINT).read_text())
    except FileNotFoundError:
        recorded = None
    except (OSError, ValueError):
        recorded = {}
    if recorded is not None:
        wanted = recipe_fingerprint(plan)
        changed = fingerprint_changes(recorded, wanted)
        if changed:
            raise FacekitError(
                f"prepare.output {folder} was prepared with other settings than this recipe's ({', '.join(changed[:6])}"
                f"{', ...' if len(changed) > 6 else ''}): run this recipe's prepare stage (--stage prepare) into "
                "another prepare.output, or train with the recipe that prepared it"
            )
    if not resuming:
        check_prepared_people(plan, folder)
    from facekit.data.dataset import PreparedFaces

    check_prepared_has_faces(folder)
    size = int(PreparedFaces(folder).averages.shape[1])
    if size != plan.recipe.prepare.image_size:
        raise FacekitError(
            f"prepare.output {folder} holds {size} px faces and this recipe's prepare.image_size is "
            f"{plan.recipe.prepare.image_size}: run its prepare stage, or set prepare.image_size: {size}"
        )


def check_prepared_has_faces(folder: Path) -> None:
    """Refuse a prepared set of nobody by what its files hold, as the loader reads them (the arrays' rows from their
    headers, identities.json, mean_landmarks.npy): arrays of 0 rows (made by hand or by an older prepare), or a
    folder whose prepare kept nobody (identities.json lists nobody; it leaves no arrays). Before, the first ended in
    numpy's "need at least one array to stack" traceback while the pool was built, the second said to run the
    prepare that had just run; and the check trusted summary.json's ``identities_kept``, so a stale or edited one
    saying 0 refused a set of people, and one counting people whose arrays had been deleted let a
    FileNotFoundError through. summary.json only words the message where the arrays are gone."""
    from facekit.data.dataset import PreparedFaces

    try:
        recorded = json.loads((folder / "summary.json").read_text()).get("identities_kept")
    except (OSError, ValueError, AttributeError):
        recorded = None
    if (folder / "landmarks.npy").is_file():
        faces = PreparedFaces(folder)  # refuses arrays that are cut short, missing or of different runs
        faces.mean_landmarks  # noqa: B018 - read now: a missing one was a FileNotFoundError after the pool
        people = len(faces)
    else:
        try:
            people = len(json.loads((folder / "identities.json").read_text()))
        except (OSError, ValueError, TypeError):
            people = None
        if people != 0 and recorded != 0:
            if isinstance(recorded, int) and recorded > 0:
                raise FacekitError(
                    f"prepare.output {folder} has no landmarks.npy though its summary.json records {recorded} people "
                    "(its arrays were deleted or moved since): run the prepare stage again, which rebuilds them"
                )
            PreparedFaces(folder)  # not a prepared set: its own line
    if people:
        return
    manifest = folder / "manifest.jsonl"
    why = f" ({manifest} says why each photo was dropped)" if manifest.is_file() else ""
    raise FacekitError(
        f"prepare.output {folder} holds no faces (0 people): nothing to train on; give data.train photos of people "
        f"that prepare keeps{why} and run the prepare stage again, or set prepare.output to a prepared set"
    )


def check_prepared_people(plan: Any, folder: Path) -> None:
    """Refuse a prepared set made from other people than the recipe's ``data.train`` names (its ``summary.json``
    records their names' sha256; before, a set prepared from another folder trained in silence, and the checkpoint
    recorded this recipe's sources). Where the sources cannot be read here (a node that was given only the prepared
    set) there is nothing to compare, and the set is taken as it is."""
    from facekit.data.prepare import identities_digest
    from facekit.data.sources import group_by_identity, photos_from_sources

    try:
        recorded = json.loads((folder / "summary.json").read_text()).get("identities_sha256")
    except (OSError, ValueError, AttributeError):
        return
    if not recorded or not plan.recipe.data.train:
        return
    try:
        people = sorted(
            group_by_identity(photos_from_sources(plan.recipe.data.resolved_root(), plan.recipe.data.train))
        )
    except (OSError, FacekitError):
        return
    if people and identities_digest(people) != recorded:
        raise FacekitError(
            f"prepare.output {folder} holds the faces of other people than the {len(people)} this recipe's "
            "data.train names now: run its prepare stage again (it redoes only what changed), or train with the "
            "recipe that prepared the set"
        )


def check_train_output(output: Path) -> None:
    """A fresh training (no checkpoint in ``output`` yet) writes only into a folder holding no files of the
    user's (:func:`facekit.batch.refuse_foreign_folder`); a training with a checkpoint there goes on in its own."""
    if not (output / "checkpoints" / CHECKPOINT).exists():
        refuse_foreign_folder(output, TRAIN_ENTRIES, "train.output", TRAIN_SIGNATURES)


def check_checkpoint_resumed(output: Path, resume: bool) -> None:
    """A checkpoint in train.output is continued with --resume only: without it, refused, as another training's
    where one is writing it now (its checkpoint is a running training's: --resume would be refused as such).
    `facekit run` checks it before its first stage (helper-221: a rerun of a finished recipe ran prepare and augment
    again, then was refused at the train stage)."""
    checkpoint = output / "checkpoints" / CHECKPOINT
    if checkpoint.exists() and not resume:
        from facekit.locks import busy_message, held

        if held(output, own=False):
            raise FacekitError(busy_message(output, "training"))
        raise FacekitError(f"{checkpoint} exists: pass --resume to continue it, or choose another train.output")


def check_trainable(plan: Any, resume: bool) -> tuple[Any, dict[str, Any] | None]:
    """What a training checks before it writes anything in train.output (the recipe's train stage calls it before
    its run record, :func:`train` before its lock): an encoder and a decoder named (:func:`facekit.pipeline.
    trainer_problems`), the checkpoint there and --resume agree, a fresh training's
    folder holds no files of the user's, the warper passes the losses, the prepared set is this recipe's and, when
    resuming, the same set under a recipe that changes nothing but what :data:`RESUMABLE_CHANGES` allows. Returns
    the built warper (None without one) and the prepared set's :func:`prepared_data_id`."""
    from facekit.checkpoints import read_checkpoint_meta
    from facekit.pipeline import trainer_problems

    recipe = plan.recipe
    # An encoder and a decoder, before the training pool (hours of encoding at the paper's scale; before, a recipe
    # without a decoder was refused after it); what `facekit check` says. The warper's below.
    raise_first(trainer_problems(plan))
    output = Path(recipe.train.output)
    checkpoint = output / "checkpoints" / CHECKPOINT
    check_checkpoint_resumed(output, resume)
    check_train_output(output)
    # This training's own warper: the one a run's settings check built (taken from the plan, so a second training
    # of the plan, or its pickled copy, builds its own: a plugin's warper may hold state), else a new build
    built_warper = plan.components["warper"].take_built() if "warper" in plan.components else None
    if built_warper is not None:  # a recipe's mistake first, and before the pool, which may take hours to encode
        check_warper_for_losses(plan, built_warper)
    training_device(recipe.train)  # (helper-69: train.device cuda without a GPU left a run record and a lock)
    if recipe.augment.enabled and recipe.train.pool_size > 0:
        from facekit.data.augment import check_neighbours

        check_neighbours(plan)
    meta = None
    if resume and checkpoint.exists():
        try:
            meta = read_checkpoint_meta(checkpoint)
        except FacekitError as error:
            raise unreadable_checkpoint(checkpoint, error) from None
    # Resuming a checkpoint that names its prepared set: the set is compared with that, not with the photos now.
    prepared = None
    if meta is not None and meta.get("prepared_data") is not None:
        prepared = prepared_data_id(Path(recipe.prepare.output))
    check_prepared_for_recipe(plan, Path(recipe.prepare.output), resuming=prepared is not None)
    if prepared is None:
        prepared = prepared_data_id(Path(recipe.prepare.output))
    if recipe.train.init is not None and meta is None:
        # Read now, not after the training pool (hours of encoding at the paper's scale): a missing or damaged
        # file, or another decoder, is one line before anything is written.
        started_from = read_checkpoint_meta(model_file(recipe.train.init))
        wanted = plan.components["decoder"].spec.name if "decoder" in plan.components else None
        if started_from.get("decoder") not in (None, wanted):
            raise FacekitError(
                f"train.init {recipe.train.init} is a {started_from['decoder']!r} decoder; this recipe trains "
                f"{wanted!r}"
            )
        check_init_fits(plan, started_from, built_warper)
    if meta is not None:
        earlier = meta.get("prepared_data")
        # The same arrays in another folder (a prepared set moved or copied) are the same data.
        digests = [(earlier or {}).get("arrays_sha256"), (prepared or {}).get("arrays_sha256")]
        moved = frozenset({"prepare.output"}) if digests[0] and digests[0] == digests[1] else frozenset()
        check_resumable(meta.get("recipe"), plan.to_dict(), checkpoint, moved)
        if earlier is not None and prepared is not None and not same_prepared_data(earlier, prepared):
            raise FacekitError(
                f"--resume would continue {checkpoint} on other prepared data: {recipe.prepare.output} was prepared "
                "again from other photos or in another format since; choose another train.output, or start from it "
                "with train.init"
            )
        # read_checkpoint gives a file written before boundary_points counted tfa's way its params in today's
        # count; the same recipe text builds today's warper from its own number, which would be another warp.
        warper = plan.components.get("warper")
        trained, now = meta.get("warper_params"), warper.params.model_dump() if warper is not None else None
        if trained is not None and now is not None and trained != now:
            changed = ", ".join(
                f"{k} {trained.get(k)!r} -> {now.get(k)!r}" for k in sorted(now) if trained.get(k) != now.get(k)
            )
            raise FacekitError(
                f"{checkpoint} was written before boundary_points counted tfa's way, and the same recipe now builds "
                f"another warp ({changed}): it cannot be continued as it was; start a new run from its weights with "
                f"--set train.init={checkpoint} and another train.output"
            )
    return built_warper, prepared


@dataclasses.dataclass(frozen=True)
class TrainableChecked:
    """:func:`check_trainable`'s findings for one training of ``plan`` (``resume`` as given), made by
    :func:`checked_trainable`: what :func:`train` takes from a caller that checked before writing anything (the
    recipe's train stage, before its run record) instead of checking again. ``checkpoint_seen``: the identity, size
    and modification time of train.output's checkpoint then (None: there was none); under the training's lock a
    checkpoint that is no longer so (another training wrote it meanwhile) is checked again."""

    plan: Any
    resume: bool
    warper: Any
    prepared: dict[str, Any] | None
    checkpoint_seen: tuple[int, ...] | None


def checkpoint_state(checkpoint: Path) -> tuple[int, ...] | None:
    """``checkpoint``'s identity, size and modification time (:data:`facekit.filestate.CONTENTS`); None when there
    is none, a file in the place of its folder too."""
    from facekit.filestate import file_state

    return file_state(checkpoint, missing=(FileNotFoundError, NotADirectoryError))


def checked_trainable(plan: Any, resume: bool) -> TrainableChecked:
    """:func:`check_trainable`, its findings kept with the checkpoint it saw (:class:`TrainableChecked`)."""
    seen = checkpoint_state(Path(plan.recipe.train.output) / "checkpoints" / CHECKPOINT)
    warper, prepared = check_trainable(plan, resume)
    return TrainableChecked(plan, resume, warper, prepared, seen)


def unreadable_checkpoint(checkpoint: Path, error: FacekitError) -> FacekitError:
    """``error`` (``checkpoint`` cut short or damaged, refused on --resume) with the newest kept step copy beside it
    whose header reads, and how to resume from it (before: the error alone, though a ``train.keep_every`` copy
    could carry the run on)."""
    from facekit.checkpoints import read_checkpoint_meta

    copies = []
    for path in checkpoint.parent.glob("step-*.safetensors"):
        found = re.fullmatch(r"step-(\d+)\.safetensors", path.name)
        if found is not None and path.is_file():
            copies.append((int(found.group(1)), path))
    for step, path in sorted(copies, reverse=True):
        try:
            read_checkpoint_meta(path)
        except FacekitError:
            continue
        return type(error)(
            f"{error}; its newest kept step copy {path} (step {step}) may load: copy it over {checkpoint} and "
            "--resume again"
        )
    return error


def check_init_fits(plan: Any, started_from: dict[str, Any], warper: Any = None) -> None:
    """Before the training pool (helper-69: both were found after it, the first as six lines of torch's size
    mismatches): a train.init model of this encoder whose weights do not fit this recipe's decoder (their shapes and
    names compared with the decoder built from the recipe: a param that shapes no weight, as fc-texture's ``grid``,
    is no mismatch), or one trained on another prepared set (its mean face more than :data:`MEAN_FACE_TOLERANCE_PX`
    from this one's: its texture frame is not this data's), is one line. A model of another encoder keeps what fits
    and starts the rest afresh (:func:`_train`), so only its mean face is checked, where it has as many points."""
    from safetensors import safe_open

    from facekit.data.dataset import PreparedFaces

    init = plan.recipe.train.init
    with safe_open(str(model_file(init)), framework="pt") as handle:
        names = [key for key in handle.keys() if key.startswith("model.")]  # (not a checkpoint's optim.* state)
        theirs = {key.removeprefix("model."): tuple(handle.get_slice(key).get_shape()) for key in names}
        mean = handle.get_tensor("model.mean_landmarks").double() if "mean_landmarks" in theirs else None
    if not names:  # (before: refused only after the training pool, in twenty lines of torch's missing keys)
        raise FacekitError(
            f"train.init {init} holds no decoder weights (a training pool, or another program's file): give a "
            "training's checkpoints/*.safetensors or a model facekit export wrote"
        )
    trained = started_from.get("decoder_params")
    same_encoder = started_from.get("encoder") in (None, plan.components["encoder"].spec.name)
    if same_encoder and "decoder" in plan.components and isinstance(trained, dict) and "feature_size" in trained:
        decoder, _ = build_decoder(plan, int(trained["feature_size"]), warper)
        ours = {key: tuple(value.shape) for key, value in decoder.state_dict().items()}
        differ = [key for key in sorted(set(ours) | set(theirs)) if ours.get(key) != theirs.get(key)]
        if differ:
            shapes = "; ".join(
                f"{k} {theirs.get(k, 'missing')} there, {ours.get(k, 'missing')} here" for k in differ[:3]
            )
            now = plan.components["decoder"].params.model_dump()
            params = ", ".join(
                f"{k} {trained[k]!r} there, {now[k]!r} here"
                for k in sorted(now)
                if k in trained and k != "feature_size" and trained[k] != now[k]
            )
            more = "; ..." if len(differ) > 3 else ""
            raise FacekitError(
                f"train.init {init} does not fit this recipe's decoder ({shapes}{more})"
                + (f" (params: {params})" if params else "")
                + ": set components.decoder.params as that model's recipe did"
            )
    if mean is None or not (Path(plan.recipe.prepare.output) / "mean_landmarks.npy").is_file():
        return  # no prepared set: its own check says so
    ours_mean = torch.from_numpy(np.asarray(PreparedFaces(plan.recipe.prepare.output).mean_landmarks, np.float64))
    if mean.shape != ours_mean.shape:
        return  # another landmark count: started afresh (another encoder's model), or refused above
    moved = float((mean - ours_mean).abs().max())
    if moved > MEAN_FACE_TOLERANCE_PX:
        raise FacekitError(
            f"train.init {init} was trained on another prepared set: its mean face is up to {moved:.1f} px from "
            f"{plan.recipe.prepare.output}'s, so its texture frame would not be this data's; train from scratch or "
            "prepare the data as that model's recipe did"
        )


def copy_atomic(source: Path, target: Path) -> None:
    """``source`` copied to ``target`` through a temporary file renamed into place: a run killed while copying leaves
    no truncated ``target``."""
    temporary = target.with_name(f".{target.name}.tmp")
    shutil.copyfile(source, temporary)
    replace_durably(temporary, target)


def train(
    plan: Any,
    resume: bool = False,
    progress: bool = False,
    offered_pool: CachedPool | None = None,
    output_locked: bool = False,
    checked: TrainableChecked | None = None,
    stop_line: Callable[[str], str] | None = None,
) -> Path:
    """Train ``plan``'s decoder; returns the output folder holding ``checkpoints/last.safetensors``. A second
    training into the same ``train.output`` at the same time is refused (a lock held by rank 0). ``offered_pool``:
    the tensors of ``train.output/pool.safetensors`` as already read and checked (:func:`facekit.pool.cached_pool`).
    ``output_locked``: the caller holds ``train.output``'s training lock (:func:`facekit.locks.exclusive`; facekit
    bench, which copies that pool in under it), so the training does not take it again. ``checked``: this plan's
    :func:`checked_trainable` (same ``resume``) made by the caller before it wrote anything; without it the
    training checks its settings, prepared set and train.output itself (:func:`check_trainable`) before its lock.
    ``stop_line``: what a stop says instead of the training's own line (:func:`terminated`), ``stop_line(by)``: a
    caller's that goes on with the training by itself when run again (facekit bench, which says its finished cells
    too; helper-188: `facekit run` said both, the bench's beside the point).
    """
    from contextlib import nullcontext

    from facekit.locks import exclusive
    from facekit.runs import is_rank_zero

    output = Path(plan.recipe.train.output)
    if checked is None or checked.plan is not plan or checked.resume != resume:
        checked = checked_trainable(plan, resume)  # before its lock is made in train.output
    # Ctrl+C says what SIGTERM says (before: only the CLI's general line, without the step to resume from).
    with (
        stops_said(stop_line or (lambda by: terminated(output / "checkpoints" / CHECKPOINT, by))),
        sigterm_raises("training stopped by {signal}"),
        exclusive(output, "training") if is_rank_zero() and not output_locked else nullcontext(),
        ExitStack() as cleanup,
    ):
        return _train(plan, resume, progress, cleanup, checked, offered_pool)


def terminated(checkpoint: Path, by: str = "SIGTERM") -> str:
    """What a training stopped by ``by`` (SIGTERM, SIGHUP, Ctrl+C) says: the step its last checkpoint holds and that
    --resume goes on from it (a caller that goes on with it by itself says its own: :func:`train`'s ``stop_line``)."""
    from facekit.checkpoints import read_checkpoint_meta

    try:
        step = int(read_checkpoint_meta(checkpoint)["step"])
    except (FacekitError, KeyError, TypeError, ValueError):
        return f"training stopped by {by} before its first checkpoint: run it again to start it over"
    return f"training stopped by {by}: {checkpoint} holds step {step}, and --resume continues from it"


def _train(
    plan: Any,
    resume: bool,
    progress: bool,
    cleanup: ExitStack,
    checked: TrainableChecked,
    offered_pool: CachedPool | None = None,
) -> Path:
    """The training itself, under train.output's lock; ``cleanup`` (an ExitStack) stops its progress bar and log
    writer however it ends. ``checked``: :func:`check_trainable`'s findings from before the lock, made again only
    when train.output's checkpoint changed since (another training wrote it while this one came to its lock)."""
    from facekit.data.dataset import PreparedFaces

    called = time.perf_counter()  # (elapsed_seconds in the checkpoint: setup and pool included)
    recipe, settings = plan.recipe, plan.recipe.train
    device = training_device(settings)
    dist = setup_distributed(device)
    torch.manual_seed(settings.seed)
    output = Path(settings.output)
    checkpoint = output / "checkpoints" / CHECKPOINT
    if dist.main:  # (under the training's lock: no other write in progress there)
        remove_temporaries(checkpoint.parent)
    if checkpoint_state(checkpoint) != checked.checkpoint_seen:
        checked = checked_trainable(plan, resume)
    built_warper, prepared = checked.warper, checked.prepared
    encoder_component = plan.components["encoder"]  # there: check_trainable
    resumed: tuple[dict[str, torch.Tensor], dict[str, Any]] | None = None
    if resume and checkpoint.exists():
        try:
            resumed = read_checkpoint(checkpoint)
        except FacekitError as error:  # a header that reads, tensors that do not
            raise unreadable_checkpoint(checkpoint, error) from None
    elif resume:
        logger.warning("--resume: no checkpoint in %s yet: a fresh training starts", checkpoint.parent)
    # A module or not (types.Encoder); the one facekit run's check built, if it did, taken from the plan: the
    # training moves it to its device, and no later stage finds it there.
    encoder = frozen_encoder(encoder_component.take_built(), "cpu")
    # The recogniser the identity loss runs (components.identity_encoder), else the encoder itself.
    identity_component = plan.components.get("identity_encoder")
    identity = frozen_encoder(identity_component.build(), "cpu") if identity_component is not None else None
    pool_began = time.perf_counter()
    pool = cached_pool(
        plan, encoder, output / "pool.safetensors", progress and dist.main, identity, offered=offered_pool
    )
    pool_seconds = time.perf_counter() - pool_began  # (in the checkpoint: a bench tells training from pool time)
    encoder = frozen_encoder(encoder, device)
    recogniser = frozen_encoder(identity, device) if identity is not None else encoder
    # Seeded again: making the pool's morphs draws from torch's generator and reading the cached pool does not, so
    # a rerun over a cached pool (a run killed before its first checkpoint) would start from other weights.
    torch.manual_seed(settings.seed)
    decoder, decoder_params = build_decoder(plan, int(pool.features.shape[1]), built_warper)
    decoder = decoder.to(device)
    decoder.set_mean_landmarks(PreparedFaces(recipe.prepare.output).mean_landmarks)
    decoder.set_feature_stats(pool.features)
    if decoder.image_size != recipe.prepare.image_size:
        raise FacekitError(
            f"decoder image_size {decoder.image_size} != prepare.image_size {recipe.prepare.image_size}: set "
            "components.decoder.params.image_size to match"
        )
    check_decoder_outputs(plan, decoder, pool.features[:2].to(device))
    check_warp_connected(plan, decoder, pool.features[:2].to(device))
    if settings.init is not None and resumed is None:
        # Weights and buffers (feature statistics, mean landmarks) of the starting model replace the fresh ones.
        init_tensors, init_meta = read_checkpoint(model_file(settings.init))
        # (its decoder was checked by check_trainable)
        other_encoder = init_meta.get("encoder") not in (None, encoder_component.spec.name)
        fresh: list[str] = []
        if other_encoder:
            # A warm start from a model of another encoder: its decoder layers, but this encoder's feature statistics,
            # and a fresh input layer where the feature sizes differ (it relearns what the new features mean).
            own = decoder.state_dict()
            keep = {}
            for key, value in init_tensors.items():
                name = key.removeprefix("model.")
                if name.startswith("feature_") or (name in own and own[name].shape != value.shape):
                    fresh.append(name)
                else:
                    keep[key] = value
            init_tensors = keep
        try:
            if other_encoder:
                model_state = {
                    k.removeprefix("model."): v.float() if v.is_floating_point() else v
                    for k, v in init_tensors.items()
                    if k.startswith("model.")
                }
                decoder.load_state_dict(model_state, strict=False)
            else:
                load_decoder_state(decoder, init_tensors)
        except RuntimeError as error:
            raise FacekitError(f"train.init {settings.init} does not fit this recipe's decoder: {error}") from None
        logger.info(
            "decoder initialised from %s%s",
            settings.init,
            f" (trained on {init_meta['encoder']}; kept fresh: {', '.join(fresh)})" if other_encoder else "",
        )
    optimizer = torch.optim.Adam(decoder.parameters(), lr=settings.lr)
    start_step = 0
    if resumed is not None:
        tensors, meta = resumed
        load_decoder_state(decoder, tensors)
        load_optimizer(optimizer, tensors, meta)
        start_step = int(meta["step"])
        logger.info("resumed from %s at step %d", checkpoint, start_step)
        kept = checkpoint.with_name(f"step-{start_step:06d}.safetensors")
        keep_now = settings.keep_every is not None and start_step % settings.keep_every == 0 and not kept.is_file()
        if dist.main and keep_now:  # one rank writes it (all ranks' copies raced on one temporary name)
            copy_atomic(checkpoint, kept)  # the run was killed between last and its kept copy: this is that state
    model: torch.nn.Module = decoder
    if dist.world > 1:
        # BatchNorm with the global batch's statistics: N processes follow one process (facekit.distributed).
        model = torch.nn.parallel.DistributedDataParallel(global_batchnorm(decoder))
    from facekit.runs import git_sha

    # What the runs before a resume spent, carried on (helper-123: a resumed bench cell's time was its last run's).
    before = resumed[1] if resumed is not None else {}
    earlier_pool = float(before.get("pool_seconds", 0.0))
    earlier = float(before.get("elapsed_seconds", earlier_pool + float(before.get("train_seconds", 0.0))))
    meta_base = {
        "pool_seconds": round(earlier_pool + pool_seconds, 2),
        "train_git_sha": git_sha(),
        "decoder": plan.components["decoder"].spec.name,
        "decoder_params": decoder_params.model_dump(),
        "encoder": encoder_component.spec.name,
        **({"identity_encoder": identity_component.spec.name} if identity_component is not None else {}),
        "warper": plan.components["warper"].spec.name if "warper" in plan.components else None,
        "warper_params": plan.components["warper"].params.model_dump() if "warper" in plan.components else None,
        BOUNDARY_CONVENTION_KEY: "tfa",
        "prepared_data": prepared,
        "recipe": plan.to_dict(),
        "recipe_source": plan.source,
        "world_size": dist.world,
    }
    if dist.main:
        _prepare_logs(output, start_step)
    writer = _tensorboard(output, start_step) if dist.main else None
    if writer is not None:
        cleanup.callback(writer.close)
    autocast = _autocast(device, settings.precision)
    # fp16's small range flushes small gradients to zero: scale the loss up, unscale before Adam, skip steps with
    # inf/nan (torch.amp). bf16 has fp32's range and needs none; disabled, the scaler is a plain backward + step.
    scaler = torch.amp.GradScaler(device.type, enabled=settings.precision == "fp16")
    if resumed is not None and resumed[1].get("grad_scaler") and scaler.is_enabled():
        scaler.load_state_dict(resumed[1]["grad_scaler"])
    fixed = np.arange(min(8, len(pool)))
    # metrics.csv's seconds count the whole training: a resumed run goes on from the checkpoint's (helper-69: they
    # started from 0 again, so a resumed training's time could not be read off it).
    began = time.perf_counter() - (float(resumed[1].get("train_seconds", 0.0)) if resumed is not None else 0.0)
    bar = _progress_bar(progress and dist.main, max(settings.steps, start_step), start_step)  # (not "4/2")
    if bar is not None:
        # Stopped however the loop ends (Ctrl+C, a divergence, a full disk): before, the terminal kept its cursor
        # hidden after the command ended, and the error line was printed onto the bar's (helper-115). Its stop is
        # the cleanup's before it starts: a Ctrl+C or SIGTERM as the start returned left it started.
        cleanup.callback(bar[0].stop)
        bar[0].start()
    # The identity loss's items of the global batch that are this rank's (the same set N processes or one).
    slice_identity = identity_items(settings.batch_size, settings.loss.identity_share, dist.rank, dist.world)
    for step in range(start_step + 1, settings.steps + 1):
        rng = np.random.default_rng([settings.seed, step])
        index = rng.integers(len(pool), size=settings.batch_size)
        mine = index[dist.rank :: dist.world]
        batch = pool.batch(mine, device)
        if settings.identity_jitter > 0:
            draws = rng.normal(scale=settings.identity_jitter, size=(settings.batch_size, 4))[dist.rank :: dist.world]
            batch["transform"] = jitter_transforms(batch["transform"], recogniser.card.input_size, draws)
            if "own_transform" in batch:  # the encoder's own crop (loss.identity_own), jittered alike
                batch["own_transform"] = jitter_transforms(batch["own_transform"], encoder.card.input_size, draws)
        if settings.identity_blur > 0:  # drawn after the jitter: runs without a blur see the same draws as before
            sigmas = rng.uniform(0.0, settings.identity_blur, size=settings.batch_size)[dist.rank :: dist.world]
            batch["blur"] = torch.from_numpy(sigmas.astype(np.float32)).to(device)
        try:
            with autocast:
                out = model(batch["features"])
                terms = losses(
                    out, batch, recogniser, settings.loss, decoder.image_size, identity=slice_identity, own=encoder
                )
        except SplineError as error:
            if step == 1:  # the decoder as built, not trained yet: no divergence, the error as it is
                raise
            # Weights grown so far that the landmarks they give are degenerate (before: this traceback).
            raise diverged(settings, step, f"its landmarks can no longer be warped ({error})", checkpoint) from None
        optimizer.zero_grad(set_to_none=True)
        try:
            # Each rank averages over its slice; scale so DDP's mean over ranks equals the mean over the global batch.
            optimizer_step(terms["loss"] * len(mine) * dist.world / len(index), optimizer, scaler)
        except RuntimeError as error:
            if not update_overflows(error):
                raise
            # Adam's step size (lr / its bias correction) past float32's range (before: torch's traceback).
            raise diverged(settings, step, f"its update is too large for float32 ({error})", checkpoint) from None
        logged = global_terms(terms, len(mine) / len(index), dist)
        # Before anything of this step is logged or saved (before: NaN weights were written as last.safetensors and
        # the run said it finished). The loss is the global batch's and the weights are every rank's: all ranks stop.
        problem = not_finite(logged, decoder)
        if problem is not None:
            raise diverged(settings, step, problem, checkpoint)
        if dist.main:
            row = {k: float(v) for k, v in logged.items()}
            _log(output, writer, step, row, time.perf_counter() - began)
            if step % settings.sample_every == 0 or step == settings.steps:
                _sample_grid(decoder, pool, fixed, device, output / "samples" / f"step-{step:06d}.png")
            saved = step % settings.checkpoint_every == 0 or step == settings.steps
            meta = {**meta_base, "step": step, "train_seconds": round(time.perf_counter() - began, 2)}
            meta["elapsed_seconds"] = round(earlier + time.perf_counter() - called, 2)
            meta.update(_scaler_meta(scaler))
            if saved:
                save_checkpoint(checkpoint, decoder, optimizer, meta)
            if settings.keep_every is not None and step % settings.keep_every == 0:
                kept = checkpoint.with_name(f"step-{step:06d}.safetensors")
                if saved:  # the same state was just written: copy the file rather than serialise it again
                    copy_atomic(checkpoint, kept)
                else:
                    save_checkpoint(kept, decoder, optimizer, meta)
            if bar is not None:
                bar[0].update(bar[1], advance=1, description=f"train loss {row['loss']:.4f}")
    return output


def not_finite(terms: dict[str, torch.Tensor], decoder: torch.nn.Module) -> str | None:
    """What of a training step is not a finite number: its loss (naming the terms that are not), or the decoder's
    weights after the optimizer's step (one host sync for all of them); None when all are."""
    loss = float(terms["loss"])
    if not np.isfinite(loss):
        bad = [f"{key} {float(value)}" for key, value in terms.items() if key != "loss" and not torch.isfinite(value)]
        return f"its loss is {loss}" + (f" ({', '.join(bad)})" if bad else "")
    tensors = [t.detach() for t in (*decoder.parameters(), *decoder.buffers()) if t.is_floating_point()]
    if tensors and not bool(torch.stack([t.isfinite().all() for t in tensors]).all()):
        return f"its weights are no longer finite numbers after its update (loss {loss:.6g})"
    return None


def update_overflows(error: RuntimeError) -> bool:
    """Whether ``error`` is torch refusing an optimizer's step size that float32 cannot hold (Adam's lr over its
    bias correction: 1 - 0.9 at step 1, so a train.lr from about 3.4e37), the one RuntimeError of a step that means
    the training diverged rather than a bug."""
    return "cannot be converted to type float without overflow" in str(error)


class TrainingDiverged(FacekitError):
    """A training that diverged: its line says what to do in a training of one's own (train.output, train.init);
    ``step``, ``problem``, ``lr`` and ``kept`` (what the newest state written holds, None before any) let a caller
    that chose train.output itself (a bench cell) say its own."""

    def __init__(
        self, message: str, step: int = 0, problem: str = "", lr: float = 0.0, kept: str | None = None
    ) -> None:
        super().__init__(message)
        self.step, self.problem, self.lr, self.kept = step, problem, lr, kept


def diverged(settings: Any, step: int, problem: str, checkpoint: Path) -> TrainingDiverged:
    """The error for a training that diverged at ``step``: what was not finite, what was kept, what to do."""
    from facekit.checkpoints import read_checkpoint_meta

    # The newest state written: the checkpoint, or where train.keep_every is no multiple of train.checkpoint_every,
    # a step copy written before it.
    copies = [path for path in checkpoint.parent.glob("step-*.safetensors") if re.fullmatch(r"step-\d+", path.stem)]
    newest = checkpoint if checkpoint.is_file() else max(copies, key=lambda path: int(path.stem[5:]), default=None)
    if newest is None:
        # Nothing in train.output to keep: a fresh training there starts as this one did (before: "into another
        # train.output", as if the folder held something).
        return TrainingDiverged(
            f"training diverged at step {step}: {problem}; nothing of that step was written (no checkpoint yet): "
            f"train again with a lower train.lr (now {settings.lr:g}), into the same train.output or another",
            step,
            problem,
            settings.lr,
            None,
        )
    try:
        kept = (
            f"{newest} {'still ' if newest == checkpoint else ''}holds step {int(read_checkpoint_meta(newest)['step'])}"
        )
    except (FacekitError, KeyError, TypeError, ValueError):
        kept = f"{newest} is as it was"
    # A new training into this train.output would replace what it holds (and one with a checkpoint there is refused).
    return TrainingDiverged(
        f"training diverged at step {step}: {problem}; nothing of that step was written ({kept}): train again with "
        f"a lower train.lr (now {settings.lr:g}) into another train.output, or from {newest} with train.init",
        step,
        problem,
        settings.lr,
        kept,
    )


def optimizer_step(loss: torch.Tensor, optimizer: torch.optim.Optimizer, scaler: torch.amp.GradScaler) -> None:
    """Backward and one optimizer step through ``scaler`` (loss scaling when it is enabled: fp16)."""
    scaler.scale(loss).backward()
    scaler.step(optimizer)
    scaler.update()


def _scaler_meta(scaler: torch.amp.GradScaler) -> dict[str, Any]:
    """The loss scale and its growth counter, so a resumed fp16 run does not start again from 65536 and skip steps."""
    return {"grad_scaler": scaler.state_dict()} if scaler.is_enabled() else {}


def _autocast(device: torch.device, precision: str) -> Any:
    if precision == "fp32":
        return torch.autocast(device.type, enabled=False)
    dtype = torch.bfloat16 if precision == "bf16" else torch.float16
    return torch.autocast(device.type, dtype=dtype)


def _prepare_logs(output: Path, start_step: int) -> None:
    """metrics.csv without rows past ``start_step`` (a killed run may have logged steps it never checkpointed)."""
    output.mkdir(parents=True, exist_ok=True)
    path = output / "metrics.csv"
    rows: list[dict[str, str]] = []
    if path.exists() and start_step > 0:
        with path.open(newline="") as handle:
            rows = [r for r in csv.DictReader(handle) if r.get("step", "").isdigit() and int(r["step"]) <= start_step]
    # Through a temporary file renamed into place: a run killed while the rows are written keeps the loss history
    # (before: the file was truncated first and rewritten, ~8 MB at 100k steps).
    temporary = path.with_name(f".{path.name}.tmp")
    with temporary.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=METRICS)
        writer.writeheader()
        writer.writerows(rows)
    replace_durably(temporary, path)


def _log(output: Path, writer: Any, step: int, row: dict[str, float], seconds: float) -> None:
    with (output / "metrics.csv").open("a", newline="") as handle:
        csv.DictWriter(handle, fieldnames=METRICS).writerow(
            {"step": step, **{k: f"{row[k]:.6f}" for k in METRICS[1:-1] if k in row}, "seconds": f"{seconds:.2f}"}
        )
    if writer is not None:
        for key, value in row.items():
            writer.add_scalar(f"train/{key}", value, step)


def _tensorboard(output: Path, start_step: int = 0) -> Any:
    """TensorBoard's writer (None without tensorboard). On a resume at ``start_step`` it hides the killed run's events
    past the checkpoint (``purge_step``; a fresh run's, those of a run killed before its first checkpoint), as
    :func:`_prepare_logs` trims metrics.csv."""
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:  # tensorboard is optional: metrics.csv always has the numbers
        return None
    return SummaryWriter(str(output / "tensorboard"), purge_step=start_step + 1)


def _progress_bar(enabled: bool, total: int, done: int) -> tuple[Any, Any] | None:
    if not enabled:
        return None
    from rich.progress import BarColumn, MofNCompleteColumn, TextColumn, TimeRemainingColumn

    from facekit.progress import Progress, RateColumn

    bar = Progress(
        TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), RateColumn(), TimeRemainingColumn()
    )
    return bar, bar.add_task("train", total=total, completed=done, unit="step")  # (not started: the caller starts it)


def _sample_grid(decoder: torch.nn.Module, pool: Pool, index: np.ndarray, device: torch.device, path: Path) -> None:
    """Rows of input | output | texture for a fixed set of training items."""
    from PIL import Image

    decoder.eval()
    with torch.no_grad():
        batch = pool.batch(index, device)
        out = decoder(batch["features"])
    decoder.train()
    columns = [batch["image"], out.image.float()] + ([out.texture.float()] if out.texture is not None else [])
    grid = torch.cat([torch.cat(list(c.clamp(0, 1).cpu()), dim=1) for c in columns], dim=2)  # (3, rows*S, cols*S)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray((grid.permute(1, 2, 0).numpy() * 255).round().astype(np.uint8)).save(path)
