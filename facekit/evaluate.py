"""Does the normalized face keep the identity, and is it stable across photos of one person?

For LFW DevTest photos (people never trained on): normalize each photo, then under each judge encoder measure

- **identity preservation**: the distance between the input photo and its normalized face (the paper's Fig. 12),
  and the share within the judge's verification threshold;
- **consistency**: distances between the normalized faces of two photos of one person vs of two different people;
- **landmark plausibility**: the detector's landmarks on the output vs the decoder's predicted landmarks.

Judges align their inputs themselves (their card's template or own chips): the input photo with the detector's
landmarks, the normalized face with the predicted ones. Writes ``metrics.json``, histograms and ``report.html``.
"""

from __future__ import annotations

import functools
import itertools
import json
import logging
import math
import re
import time
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
import torch

from facekit.data.sources import Photo, lfw_photos
from facekit.errors import FacekitError, stops_said
from facekit.types import LandmarkScheme, frozen_encoder

if TYPE_CHECKING:
    from facekit.recipe import Plan

logger = logging.getLogger(__name__)
#: Faces a judge embeds at once (:meth:`Judge.embed`), and between two steps of the judging bar.
JUDGE_BATCH = 32
#: Photos a normalizer is given at once (:func:`_normalize_all`), and between two steps of the normalizing bar.
NORMALIZE_BATCH = 32


def _nothing(_count: int) -> None:
    """An ``advance`` that tells no progress bar."""


def lfw_devtest(root: Path, max_photos: int) -> list[Photo]:
    """``max_photos`` photos of LFW's ``peopleDevTest.txt`` people, spread evenly over the (sorted) list."""
    return lfw_spread(root, max_photos, "peopleDevTest.txt")


#: Photo sets a model may be scored on, by name (:func:`photo_set`): lfw-devtest is for reports only; settings are
#: chosen on the others (helen-test: people outside LFW and London; london-smiling: the London people's smiling
#: photos, never trained on; lfw-devtrain: the training people's wild photos, for settings that leave the model as
#: it is).
PHOTO_SETS = ("lfw-devtest", "helen-test", "london-smiling", "lfw-devtrain")


def photo_set(root: Path, name: str, max_photos: int) -> list[Photo]:
    """Up to ``max_photos`` photos of the set ``name`` (:data:`PHOTO_SETS`): LFW's spread evenly over the sorted
    list, the others' first ones."""
    from facekit.data.sources import helen_photos, london_photos

    if name == "lfw-devtest":
        return lfw_devtest(root, max_photos)
    if name == "lfw-devtrain":
        return lfw_spread(root, max_photos, "peopleDevTrain.txt")
    if name == "helen-test":
        return helen_photos(root)[:max_photos]
    if name == "london-smiling":
        return london_photos(root, "smiling_front")[:max_photos]
    raise FacekitError(f"unknown photo set {name!r}; one of {', '.join(PHOTO_SETS)}")


def lfw_spread(root: Path, max_photos: int, people: str) -> list[Photo]:
    """``max_photos`` photos of the LFW ``people`` list (e.g. ``peopleDevTrain.txt``), spread evenly over the
    (sorted) list."""
    photos = lfw_photos(root, people)
    if len(photos) <= max_photos:
        return photos
    picks = np.linspace(0, len(photos) - 1, max_photos).round().astype(int)
    return [photos[i] for i in picks]


@dataclass(frozen=True)
class Judge:
    name: str
    encoder: Any
    #: The params it was built with where they are not its defaults (``--judge NAME:KEY=VALUE``, a recipe's
    #: ``components.judge``, the model's own encoder): in metrics.json.
    params: dict[str, Any] = field(default_factory=dict)

    @property
    def card(self) -> Any:
        return self.encoder.card

    def embed(self, images: list[np.ndarray], landmarks: np.ndarray, scheme: str | None = None) -> np.ndarray:
        """(N, D) embeddings of ``images`` cropped for the judge from their (N, K, 2) ``landmarks`` in ``scheme``, on
        the encoder's device (a ``torch.nn.Module``'s: a normalizer's own encoder on a GPU, ``facekit eval --device``;
        any other encoder takes them on the CPU)."""
        from facekit.align import encoder_inputs
        from facekit.normalize import check_features

        out = []
        # (parameters or buffers: SFace's port holds its weights as buffers, and its crops stayed on the CPU)
        module = self.encoder if isinstance(self.encoder, torch.nn.Module) else None
        on = next(itertools.chain(module.parameters(), module.buffers()), None) if module is not None else None
        with torch.no_grad():
            for start in range(0, len(images), JUDGE_BATCH):
                chunk = slice(start, start + JUDGE_BATCH)
                crops = encoder_inputs(self.encoder, images[chunk], landmarks[chunk], scheme)
                crops = crops.to(on.device) if on is not None else crops
                embedded = self.encoder.embed(crops)
                if not (isinstance(embedded, torch.Tensor) and embedded.ndim == 2 and len(embedded) == len(crops)):
                    check_features(self.encoder, embedded, len(crops), "embeddings")  # its one line, not a traceback
                out.append(embedded.float().cpu().numpy())
        return np.concatenate(out) if out else np.zeros((0, self.card.embedding_size))

    def distance(self, a: np.ndarray, b: np.ndarray) -> np.ndarray:
        """Row-wise distance on the card's metric: Euclidean, or cosine *similarity* for cosine cards."""
        return card_distance(self.card, a, b)

    def passes(self, values: np.ndarray) -> np.ndarray:
        return card_passes(self.card, values)


def card_distance(card: Any, a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Row-wise distance of (N, D) embeddings on an encoder ``card``'s metric: Euclidean, or cosine *similarity*."""
    if card.distance == "cosine":
        a = a / np.linalg.norm(a, axis=1, keepdims=True)
        b = b / np.linalg.norm(b, axis=1, keepdims=True)
        return np.sum(a * b, axis=1)
    return np.linalg.norm(a - b, axis=1)


def card_passes(card: Any, values: np.ndarray) -> np.ndarray:
    """Whether :func:`card_distance` ``values`` say "same person" at the ``card``'s threshold."""
    threshold = float(card.threshold)
    return values > threshold if card.distance == "cosine" else values < threshold


def metrics_json(metrics: dict[str, Any]) -> str:
    """``metrics`` as strict JSON: a value that is not a finite number (a statistic of nothing) is null, not the
    ``NaN`` that Python writes and other JSON readers refuse."""
    from facekit.batch import finite_or_null

    return json.dumps(finite_or_null(metrics), indent=2, allow_nan=False) + "\n"


def _stats(values: np.ndarray) -> dict[str, float]:
    if len(values) == 0:
        return {}
    return {
        "mean": round(float(values.mean()), 4),
        "median": round(float(np.median(values)), 4),
        "p05": round(float(np.percentile(values, 5)), 4),
        "p95": round(float(np.percentile(values, 95)), 4),
    }


def evaluate_normalizer(
    normalizer: Any,
    photos: list[Photo],
    judges: list[Judge],
    out: Path,
    progress: bool = False,
    about: dict[str, str] | None = None,
    pairs: tuple[Path, int] | None = None,
) -> dict[str, Any]:
    """Normalize ``photos`` and measure them under ``judges``; writes metrics.json, plots and report.html.
    ``about``: what was evaluated (``model``, ``data``), at the top of both. ``pairs``: (data root, folds) to add LFW
    pairs verification (:func:`verify_pairs`) as ``lfw_pairs``, in the report too (before, `facekit eval --pairs`
    added it to metrics.json only). When no photo is normalized, the judges' pass rates are 0 and their other
    figures empty (before: a traceback)."""
    from facekit.batch import refuse_folders_at
    from facekit.images import load_rgb

    keys = judge_keys([(judge.name, judge.params) for judge in judges])
    stems = [judge_file(key, judge.name, judge.params) for key, judge in zip(keys, judges, strict=True)]
    # A folder at a result's name is refused before anything is measured (evaluate_plan's own check covers `facekit
    # eval` and the stage; this one bench and the scripts): renamed over in _write_results, it failed partway.
    results = ["metrics.json", "report.html", *(f"identity-{stem}.{kind}" for stem in stems for kind in ("png", "npy"))]
    refuse_folders_at(out, results, "the evaluation", "output folder")
    out.mkdir(parents=True, exist_ok=True)
    replaced = _earlier_judges(out)  # the evaluation this one replaces: its judges' histograms go with it (below)
    start = time.perf_counter()
    images = [load_rgb(p.path)[0] for p in photos]
    outcomes = _normalize_all(normalizer, images, [p.path.stem for p in photos], "normalizing" if progress else None)
    normalize_seconds = time.perf_counter() - start
    ok = [i for i, o in enumerate(outcomes) if o.face is not None]
    faces = _Faces.of(images, outcomes, ok, normalizer)
    people = np.array([photos[i].identity for i in ok])
    metrics: dict[str, Any] = {
        **(about or {}),
        "photos": len(photos),
        # The weights measured (None for a method without any, the baseline): `facekit export --metrics` checks it.
        "weights_sha256": getattr(normalizer, "meta", {}).get("weights_sha256"),
        # Their training step (from the model's metadata; None without one): a training's last.safetensors is
        # replaced as it trains, so its path alone did not say which weights were measured.
        "step": getattr(normalizer, "meta", {}).get("step"),
        "normalized": len(ok),
        "status": {s: sum(o.status == s for o in outcomes) for s in sorted({o.status for o in outcomes})},
        "judges": {},
        "seconds": {"normalize": round(normalize_seconds, 1)},
    }
    indices = _consistency_pairs(people, np.random.default_rng(0))
    # Who the same-person figures are about: a few people with many photos make most pairs (LFW's 500 DevTest photos:
    # 241 of 375 pairs are two people's).
    per_person = Counter(people[indices["same"][:, 0]].tolist())
    metrics["same_person_pairs"] = {
        "pairs": len(indices["same"]),
        "people": len(per_person),
        "largest_share": round(max(per_person.values()) / len(indices["same"]), 4) if per_person else None,
    }
    metrics["different_people_pairs"] = len(indices["different"])
    histograms: list[tuple[str, Judge, np.ndarray]] = []  # (written with the metrics: a stop before leaves no part)
    # Each judge embeds each photo and its normalized face, then the detector looks at each face: 13 s after the
    # normalizing bar for LFW's 500 photos, which had said nothing until the table.
    judging = "judging" if progress and ok else None
    with _bar(judging, (2 * len(judges) + 1) * len(ok), "face") as advance:
        for key, judge in zip(keys, judges, strict=True):
            if not ok:  # nothing to embed: every photo fails
                preserved = same = different = inputs_same = np.zeros(0)
            else:
                a, b = faces.embed(judge, advance)
                preserved = judge.distance(a, b)
                same, inputs_same = (judge.distance(e[indices["same"][:, 0]], e[indices["same"][:, 1]]) for e in (b, a))
                different = judge.distance(b[indices["different"][:, 0]], b[indices["different"][:, 1]])
            metrics["judges"][key] = {
                **({"encoder": judge.name} if key != judge.name else {}),  # (a second judge of one encoder)
                **({"params": judge.params} if judge.params else {}),
                "distance": "cosine similarity" if judge.card.distance == "cosine" else "euclidean",
                "threshold": judge.card.threshold,
                # Of all photos: one without an output is a fail (before, only the normalized ones were counted).
                "identity_pass_rate": round(float(judge.passes(preserved).sum()) / max(len(photos), 1), 4),
                "identity_pass_rate_normalized": round(float(judge.passes(preserved).mean()), 4) if ok else None,
                "identity": _stats(preserved),
                "consistency_same_person": _stats(same),
                "consistency_different_people": _stats(different),
                "inputs_same_person": _stats(inputs_same),
                **pair_rates(judge, same, different),
            }
            histograms.append((key, judge, preserved))
        metrics["landmarks"] = _landmark_plausibility(
            normalizer, faces.outputs, faces.output_landmarks if faces.predicted else None, advance
        )
    if pairs is not None:
        metrics["lfw_pairs"] = verify_pairs(normalizer, pairs[0], judges, pairs[1], progress=progress)
    metrics["seconds"]["total"] = round(time.perf_counter() - start, 1)
    from facekit.outputs import side_by_side

    examples = [side_by_side(_image(images[i]), outcomes[i], height=112) for i in ok[:: max(1, len(ok) // 24)][:24]]
    said = {**(about or {}), **({"weights": measured_weights(metrics)} if metrics["weights_sha256"] else {})}
    _write_results(out, metrics, stems, histograms, examples, said, replaced)
    return metrics


def measured_weights(metrics: dict[str, Any]) -> str:
    """The weights an evaluation's ``metrics`` measured, as its report and a training's warning say them: ``step
    4000, sha256 0123456789ab`` (the step where the model records one)."""
    step = metrics.get("step")
    digest = str(metrics.get("weights_sha256") or "")[:12]
    return ", ".join([*([f"step {step}"] if step is not None else []), f"sha256 {digest}"])


def training_writing(checkpoint: Path) -> Path | None:
    """The training folder of ``checkpoint`` (``OUTPUT/checkpoints/last.safetensors``) when a training in another
    process holds it now (:func:`facekit.locks.held`; this process's own hold is not another training), else None:
    the evaluation then measures a checkpoint the training replaces as it goes on (a kept ``step-NNNNNN`` one stays
    as it is)."""
    from facekit.locks import held

    folder = checkpoint.parent.parent
    ours = checkpoint.name == "last.safetensors" and checkpoint.parent.name == "checkpoints"  # (train.CHECKPOINT)
    return folder if ours and held(folder, own=False) else None


def _write_results(
    out: Path,
    metrics: dict[str, Any],
    stems: list[str],
    histograms: list[tuple[str, Judge, np.ndarray]],
    examples: list[np.ndarray],
    about: dict[str, str],
    replaced: set[str],
) -> None:
    """Write the results into ``out`` as one set: each judge's histogram (``identity-STEM.png`` and ``.npy``),
    metrics.json and report.html are made in a hidden temporary folder inside ``out``, then renamed into ``out``
    together, with stops held (:func:`facekit.errors.stops_held`): a stop leaves ``out`` as it was (the temporary
    folder removed) or holding the whole set, never part of it. The files of the judges of the evaluation replaced
    (``replaced``) that this one has not go with it. Before: written one by one into ``out`` (the histograms as each
    judge was judged, until helper-203), so a stop among them left part of the results beside an earlier
    evaluation's, which `facekit eval` run again refused, and `--overwrite` had to replace."""
    import html
    import os
    import shutil
    import tempfile

    from facekit.errors import stops_held
    from facekit.report import write_report

    remove_killed_results(out)  # (a killed evaluation's, left in the folder)
    making = Path(tempfile.mkdtemp(prefix=".eval.", suffix=".tmp", dir=out))  # hidden: facekit's, never the user's
    try:
        for stem, (key, judge, preserved) in zip(stems, histograms, strict=True):
            _histogram(preserved, judge, key, making / f"identity-{stem}.png")
            np.save(making / f"identity-{stem}.npy", preserved)
        (making / "metrics.json").write_text(metrics_json(metrics))
        figures = [making / f"identity-{stem}.png" for stem in stems]  # this run's (not an earlier run's others)
        said = "".join(f"<p><b>{html.escape(k)}</b>: {html.escape(v)}</p>" for k, v in about.items())
        write_report(making / "report.html", "facekit evaluation", metrics, examples, figures, [said] if said else [])
        names = [path.name for path in figures] + [f"identity-{stem}.npy" for stem in stems]
        with stops_held():
            for name in [*names, "metrics.json", "report.html"]:  # (files: made with the user's usual permissions)
                os.replace(making / name, out / name)
            # Before: `facekit eval --overwrite` with other judges left the earlier run's identity-OTHER.png/.npy
            # beside this run's metrics and report, one folder holding two evaluations. Only files the replaced
            # metrics.json names go.
            for stem in sorted(replaced - set(stems)):
                for kind in ("png", "npy"):
                    (out / f"identity-{stem}.{kind}").unlink(missing_ok=True)
    finally:
        shutil.rmtree(making, ignore_errors=True)


def remove_killed_results(out: Path) -> int:
    """Delete the hidden folders of results in the making (:func:`_write_results`'s ``.eval.XXXXXXXX.tmp``) that an
    evaluation killed outright (kill -9, the out-of-memory killer, a power cut) left in ``out``
    (:func:`facekit.locks.remove_stale`: mkdtemp's exact pattern, folders of this user, untouched for an hour).
    Before, each such kill left its histograms and report there, hidden, for good. Returns how many."""
    from facekit.locks import remove_stale

    return remove_stale(out, re.compile(r"\.eval\.[a-z0-9_]{8}\.tmp"), folders=True)


def results_state(folder: Path) -> dict[str, tuple[int, ...]]:
    """Each evaluation result file in ``folder`` (metrics.json, report.html, identity-*): its inode, size and
    modification time, to tell whether a stopped evaluation wrote any."""
    import os
    from fnmatch import fnmatchcase

    from facekit.filestate import CONTENTS, file_state

    try:
        entries = list(os.scandir(folder))
    except OSError:
        return {}
    found = {}
    for entry in entries:
        if any(fnmatchcase(entry.name, pattern) for pattern in EVALUATE_ENTRIES if pattern != "runs"):
            state = file_state(entry.path, CONTENTS, (OSError,))
            if state is not None:
                found[entry.name] = state
    return found


def evaluation_stopped(
    by: str, folder: Path, before: dict[str, tuple[int, ...]], overwrite: bool, who: str, again: str
) -> str:
    """What an evaluation (``who``: `facekit eval`, the evaluate stage) stopped by ``by`` says: its results are
    written together at its end, as one set (:func:`_write_results`), so a stop leaves ``folder`` as it was
    (``before``: :func:`results_state`) or holding them all, which ``again`` (how to run it again) measures anew,
    with --overwrite where it was not given. Before: the CLI's general line; then "holds part of them", as the
    results were written one by one."""
    if results_state(folder) == before:
        return f"{who} stopped by {by} before writing its results: {folder} is as it was; {again}"
    again = again if overwrite else f"{again} with --overwrite"
    return f"{who} stopped by {by} after writing its results: {folder} holds all of them; {again} to measure again"


@contextmanager
def _bar(description: str | None, total: int, unit: str) -> Iterator[Callable[[int], None]]:
    """An ``advance`` that moves a progress bar of ``total`` ``unit``s described ``description`` while the block
    runs; one that tells nothing (no bar) when it is None."""
    if description is None:
        yield _nothing
        return
    from facekit.progress import Progress

    with Progress(*Progress.get_default_columns()) as bar:
        yield functools.partial(bar.advance, bar.add_task(description, total=total, unit=unit))


def _normalize_all(normalizer: Any, images: list[np.ndarray | None], names: list[str], bar: str | None) -> list[Any]:
    """``normalizer``'s outcome for each of ``images``, :data:`NORMALIZE_BATCH` at a time, under a progress bar
    described ``bar`` (none when None): the evaluation's photos and the LFW pairs' alike."""
    steps: Any = range(0, len(images), NORMALIZE_BATCH)
    if bar is not None:
        from facekit.progress import track

        steps = track(steps, description=bar, unit="batch")
    outcomes: list[Any] = []
    for first in steps:
        chunk = slice(first, first + NORMALIZE_BATCH)
        outcomes.extend(normalizer.normalize_many(images[chunk], names[chunk]))
    return outcomes


def _earlier_judges(out: Path) -> set[str]:
    """The file names (``identity-NAME.png``'s NAME: :func:`judge_file`) of the judges an earlier evaluation's
    ``out/metrics.json`` names (none when there is none or it is not ours)."""
    try:
        earlier = json.loads((out / "metrics.json").read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError):
        return set()
    judges = earlier.get("judges") if isinstance(earlier, dict) and "photos" in earlier else None
    if not isinstance(judges, dict):
        return set()
    stems = set()
    for key, entry in judges.items():
        entry = entry if isinstance(entry, dict) else {}
        name, params = entry.get("encoder", key), entry.get("params") or {}
        if isinstance(key, str) and isinstance(name, str) and isinstance(params, dict):
            stems.add(judge_file(key, name, params))
    return {stem for stem in stems if stem and Path(stem).name == stem}


def params_text(params: dict[str, Any]) -> str:
    """A judge's params as `facekit eval`'s table says them: ``KEY=VALUE, KEY=VALUE``."""
    return ", ".join(f"{key}={value}" for key, value in params.items())


def judge_keys(judges: Sequence[tuple[str, dict[str, Any]]]) -> list[str]:
    """The keys of ``judges`` (each its encoder's name and the params it was built with, :attr:`Judge.params`) in
    metrics.json's ``judges``, the report and `facekit eval`'s table, in order: a judge's name where no judge before
    it has that name (one judge per encoder, the usual case: the keys as before); else its name and params,
    ``facenet (variant=casia-webface-tf)``, or ``facenet (default params)``. Before, judges were keyed by name alone,
    so a judge of the model's encoder with other params (components.judge facenet of another variant) was never
    built, or was recorded over the first."""
    keys, seen = [], set()
    for name, params in judges:
        keys.append(f"{name} ({params_text(params) or 'default params'})" if name in seen else name)
        seen.add(name)
    return keys


def judge_file(key: str, name: str, params: dict[str, Any]) -> str:
    """The NAME of a judge's ``identity-NAME.png`` and ``.npy`` (its :func:`judge_keys` ``key``, encoder ``name``
    and ``params``): its key where that is its name; else ``NAME-KEY=VALUE,KEY=VALUE`` (``NAME-defaults``), or, where
    that would not be a short plain file name (a path in a value), ``NAME-`` and 8 hex digits of the params' sha256."""
    if key == name:
        return name
    text = ",".join(f"{k}={v}" for k, v in params.items()) or "defaults"
    if not re.fullmatch(r"[\w.,=+-]{1,60}", text):
        import hashlib

        text = hashlib.sha256(json.dumps(params, sort_keys=True, default=str).encode()).hexdigest()[:8]
    return f"{name}-{text}"


def _stack(landmarks: list[np.ndarray]) -> np.ndarray:
    """(N, K, 2) float64 of N faces' landmarks; (0, 0, 2) for none."""
    return np.stack(landmarks).astype(np.float64) if landmarks else np.zeros((0, 0, 2))


@dataclass(frozen=True)
class _Faces:
    """The photos a normalizer gave a face for, and those faces, as judges embed them."""

    inputs: list[np.ndarray]
    input_landmarks: np.ndarray
    input_scheme: str | None
    outputs: list[np.ndarray]
    output_landmarks: np.ndarray
    predicted: bool  # the outputs' landmarks are the decoder's own (else the frame's mean face's)

    @classmethod
    def of(cls, images: list[np.ndarray | None], outcomes: list[Any], ok: list[int], normalizer: Any) -> _Faces:
        """A decoder without landmarks (the plain CNN) draws its face in the training frame: its outputs are cropped
        by the frame's mean landmarks (before: a TypeError, and the plain-cnn ablation could not be evaluated)."""
        faces = [outcomes[i].face for i in ok]
        predicted = all(face.landmarks is not None for face in faces)
        frame = getattr(getattr(normalizer, "decoder", None), "mean_landmarks", None)
        if not predicted and frame is None:
            raise FacekitError("the normalized faces have no landmarks and the model no mean face to crop them by")
        mean = np.asarray(frame.detach().cpu().double() if isinstance(frame, torch.Tensor) else frame, np.float64)
        return cls(
            [_image(images[i]) for i in ok],
            _stack([face.source_landmarks for face in faces]),
            faces[0].source_scheme if faces else None,
            [face.image for face in faces],
            _stack([face.landmarks if face.landmarks is not None else mean for face in faces]),
            predicted,
        )

    def embed(self, judge: Any, advance: Callable[[int], None] = _nothing) -> tuple[np.ndarray, np.ndarray]:
        """``judge``'s embeddings of the photos and of their normalized faces, :data:`JUDGE_BATCH` at a time, each
        batch's size told to ``advance`` (a progress bar's)."""

        def in_batches(images: list[np.ndarray], landmarks: np.ndarray, scheme: str | None) -> np.ndarray:
            if not images:
                return np.asarray(judge.embed(images, landmarks, scheme))
            out = []
            for start in range(0, len(images), JUDGE_BATCH):
                chunk = slice(start, start + JUDGE_BATCH)
                out.append(judge.embed(images[chunk], landmarks[chunk], scheme))
                advance(len(images[chunk]))
            return np.concatenate(out)

        return in_batches(self.inputs, self.input_landmarks, self.input_scheme), in_batches(
            self.outputs, self.output_landmarks, None
        )


def _image(image: np.ndarray | None) -> np.ndarray:
    assert image is not None  # only photos that were read and normalized get here
    return image


def _consistency_pairs(people: np.ndarray, rng: np.random.Generator, count: int = 1000) -> dict[str, np.ndarray]:
    """Index pairs of outputs of the same person (all) and of different people (``count`` random ones, each pair
    once; all of them when there are no more: before, drawn with replacement, 6 photos' 15 pairs gave 1,000 with
    repeats). Pairs are ``(i, j)`` with ``i < j``, the same-person ones in order."""
    groups: dict[Any, list[int]] = {}
    for index, person in enumerate(people.tolist()):
        groups.setdefault(person, []).append(index)
    same = sorted(pair for members in groups.values() for pair in itertools.combinations(members, 2))
    possible = len(people) * (len(people) - 1) // 2 - len(same)
    if possible <= 4 * count:  # few: list them and choose (drawing until done would take long in a skewed set)
        members = list(groups.values())
        every = [
            (min(a, b), max(a, b))
            for g, first in enumerate(members)
            for second in members[g + 1 :]
            for a in first
            for b in second
        ]
        chosen = rng.permutation(len(every))[:count] if every else np.zeros(0, int)
        different = [every[k] for k in chosen]
    else:  # many: draw, each pair once (at most a quarter of them wanted: few draws are repeats)
        drawn: dict[tuple[int, int], None] = {}
        while len(drawn) < count:
            i, j = sorted(int(k) for k in rng.integers(len(people), size=2))
            if people[i] != people[j]:
                drawn[(i, j)] = None
        different = list(drawn)
    return {
        "same": np.array(same, dtype=int).reshape(-1, 2),
        "different": np.array(different, dtype=int).reshape(-1, 2),
    }


def pair_rates(judge: Any, same: np.ndarray, different: np.ndarray) -> dict[str, float | None]:
    """The share of same-person pairs the judge passes and of different-people pairs it rejects (None without
    pairs), from the pairs' scores (distances or similarities, as the judge reads them)."""
    return {
        "same_person_pass_rate": round(float(np.mean(judge.passes(same))), 4) if len(same) else None,
        "different_people_reject_rate": round(float(np.mean(~judge.passes(different))), 4) if len(different) else None,
    }


def _landmark_plausibility(
    normalizer: Any, outputs: list[np.ndarray], predicted: np.ndarray | None, advance: Callable[[int], None] = _nothing
) -> dict[str, Any]:
    """The detector run on the normalized faces: how often it finds a face, and its NME against the prediction (the
    decoder's iBUG-68 points; only when the detector gives iBUG-68 points too, and the decoder predicts any); each
    face looked at is told to ``advance`` (a progress bar's)."""
    from facekit.normalize import detect_guarded

    errors, detected = [], 0
    for index, image in enumerate(outputs):
        points = predicted[index] if predicted is not None else None
        faces, _ = detect_guarded(normalizer.detector, image, "a normalized face")  # raised: not found (logged)
        advance(1)
        if not faces:
            continue
        detected += 1
        if points is not None and faces[0].scheme == LandmarkScheme.IBUG68.value:
            found = np.asarray(faces[0].landmarks, np.float64)
            scale = np.linalg.norm(points[36] - points[45])
            errors.append(float(np.linalg.norm(found - points, axis=1).mean() / scale))
    return {"detected": detected, "of": len(outputs), "nme_vs_predicted": _stats(np.array(errors))}


def _histogram(values: np.ndarray, judge: Judge, key: str, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axis = plt.subplots(figsize=(5, 3.2), dpi=100)
    axis.hist(values, bins=40, color="#4477aa")
    axis.axvline(
        float(judge.card.threshold), color="#cc3311", linestyle="--", label=f"threshold {judge.card.threshold}"
    )
    label = "cosine similarity" if judge.card.distance == "cosine" else "Euclidean distance"
    axis.set_xlabel(f"{key}: {label}, input photo vs normalized face")
    axis.set_ylabel("photos")
    axis.legend()
    figure.tight_layout()
    figure.savefig(path)
    plt.close(figure)


# ------------------------------------------------------------------------------------------------ LFW pairs


@dataclass(frozen=True)
class Pair:
    first: Path
    second: Path
    same: bool
    fold: int


def read_pairs(root: Path, folds: int | None = None, name: str = "pairs.txt") -> list[Pair]:
    """LFW ``pairs.txt``: 10 folds of 300 same-person then 300 different-people pairs (the first ``folds`` only).
    ``name="pairsDevTrain.txt"`` (or ``pairsDevTest.txt``): the View 1 pairs (N same, then N different, no folds),
    dealt round-robin into 10 folds so that the same ten-fold protocol applies."""
    lines = (root / "lfw" / name).read_text().splitlines()
    header = [int(v) for v in lines[0].split()]
    if len(header) == 1:  # View 1: one block of N same and N different pairs
        pairs = _parse_pairs(root, lines[1 : 1 + 2 * header[0]], lambda index: index % 10)
    else:
        count, per_fold = header
        pairs = _parse_pairs(root, lines[1 : 1 + count * 2 * per_fold], lambda index: index // (2 * per_fold))
    return [pair for pair in pairs if folds is None or pair.fold < folds]


def _parse_pairs(root: Path, lines: list[str], fold_of: Callable[[int], int]) -> list[Pair]:
    images = root / "lfw" / "images"
    pairs = []
    for index, line in enumerate(lines):
        fold = fold_of(index)
        parts = line.split("\t")
        if len(parts) == 3:
            name, i, j = parts
            first, second, same = (name, int(i)), (name, int(j)), True
        else:
            first, second, same = (parts[0], int(parts[1])), (parts[2], int(parts[3])), False
        path_a, path_b = (images / n / f"{n}_{k:04d}.jpg" for n, k in (first, second))
        pairs.append(Pair(path_a, path_b, same, fold))
    return pairs


def tenfold_accuracy(scores: np.ndarray, same: np.ndarray, folds: np.ndarray, higher_is_same: bool) -> dict[str, Any]:
    """LFW protocol: per fold, the threshold that is best on the other folds, applied to the held-out fold."""
    accuracies, thresholds = tenfold_folds(scores, same, folds, higher_is_same)
    return {
        "accuracy": round(float(np.mean(accuracies)), 4),
        "std": round(float(np.std(accuracies)), 4),
        "folds": len(accuracies),
        # None when no fold had a training pair with a score to choose a threshold from.
        "threshold_mean": round(float(np.nanmean(thresholds)), 4) if np.isfinite(thresholds).any() else None,
        # One fold: the threshold was chosen on the pairs it is scored on (an optimistic, in-sample figure).
        "in_sample": len(accuracies) == 1,
    }


def tenfold_folds(
    scores: np.ndarray, same: np.ndarray, folds: np.ndarray, higher_is_same: bool
) -> tuple[np.ndarray, np.ndarray]:
    """Each fold's accuracy at the threshold best on the other folds (the first of equally good ones; a pair is
    called 'same' at or past it), and that threshold in the scores' own units: the one protocol every benchmark
    uses (helper-75: encoders.py had its own, which disagreed on the same scores)."""
    signed = scores if higher_is_same else -scores
    accuracies, thresholds = [], []
    for fold in np.unique(folds):
        train, test = folds != fold, folds == fold
        if len(np.unique(folds)) == 1:  # a single fold: no held-out protocol possible, report the best threshold
            train = test
        values = np.unique(signed[train][np.isfinite(signed[train])])
        candidates = np.concatenate([(values[:-1] + values[1:]) / 2, values[:1] - 1e-6, values[-1:] + 1e-6])
        if not len(candidates):
            # Every training pair failed (no output): nothing to choose a threshold from, so every held-out pair is
            # called different, as failed pairs are, for similarity and distance judges alike (before: threshold 0,
            # which called positive cosines 'same' but every distance 'different'); no threshold is recorded.
            accuracies.append(float(np.mean(~same[test].astype(bool))))
            thresholds.append(math.nan)
            continue
        best = max(candidates, key=lambda t: float(np.mean((signed[train] >= t) == same[train])))
        accuracies.append(float(np.mean((signed[test] >= best) == same[test])))
        thresholds.append(float(best if higher_is_same else -best))
    return np.array(accuracies), np.array(thresholds)


def judge_encoder(name: str, configured: Any = None, device: Any = None, params: dict[str, Any] | None = None) -> Any:
    """The frozen judge encoder ``name``: built with ``params`` when given (``facekit eval --judge NAME:KEY=VALUE``),
    else with the recipe's params when it is the recipe's ``components.judge`` (``configured``, a resolved
    component), else with its defaults (the evaluate stage, ``facekit eval``, bench)."""
    from facekit.registry import load_component

    if params:
        return frozen_encoder(load_component("encoder", name, **params), device)
    if configured is not None and configured.spec.name == name:
        return frozen_encoder(configured.take_built(), device)  # (the build a run's check kept, if any)
    return frozen_encoder(load_component("encoder", name), device)


def non_default_params(name: str, params: dict[str, Any]) -> dict[str, Any]:
    """``params`` of the encoder ``name`` as its params model reads them, less those equal to its defaults: what
    metrics.json records of a judge (as a bench's ``judge_params``)."""
    from facekit.registry import get_registry

    spec = get_registry("encoder").get(name)
    return spec.validate_params(params).model_dump(mode="json", exclude_defaults=True)


def own_params(name: str, ref: dict[str, Any]) -> dict[str, Any]:
    """The non-default params of a model's own encoder ``name`` from its recipe's ``components.encoder`` (``ref``),
    as :meth:`facekit.normalize.Normalizer.from_checkpoint` builds it."""
    return non_default_params(name, ref.get("params") or {}) if ref.get("name") == name else {}


#: A param's KEY: a name's characters, and the "-" and "." of a mistyped one (``image-size``), which must reach the
#: component's params model to be named there, not join the value before it.
_KEY = r"[\w.-]+"
#: A comma that begins the next param (a KEY= follows; KEY: for a separator ':'), or ends the params (a trailing
#: comma: an empty item, refused as before), or that more commas follow before either (``a=1,,b=2``: an empty item,
#: refused; before, helper-147, it was the value ``1,``); a comma followed by none of these (a file name's, ``a,,b``
#: too) is its value's.
_NEXT_PARAM = {
    sep: re.compile(rf",(?=\s*(?:{_KEY}\s*{sep}|$|,(?:\s*,)*\s*(?:{_KEY}\s*{sep}|$)))") for sep in ("=", ":")
}
#: What is said of an empty item of a params list (two commas in a row, or one at an end).
EMPTY_PARAM = (
    "an empty param (nothing between two commas, or a comma at an end) is not KEY{sep}VALUE: separate KEY{sep}VALUE "
    "pairs with one comma"
)
#: A param's KEY= (KEY:) at the start of an item, and the spaces before its value.
_PARAM_KEY = {sep: re.compile(rf"\s*({_KEY})\s*{sep}\s*") for sep in ("=", ":")}


def param_items(rest: str, separator: Literal["=", ":"] = "=") -> list[str]:
    """The ``KEY=VALUE`` items of a params list (a --judge's after ``NAME:``; ``KEY:VALUE`` ones with ``separator``
    ``:``, benchmarks/quality.py's --detector): split at each comma that a ``KEY=`` follows, so a value may hold
    commas (``weights=/m/a,b.onnx``; before, every comma split, so such a file could not be named), and one in quotes
    anything (``weights="/m/x,y=1.onnx"``, read as YAML reads a quoted value). Commas with nothing but spaces between
    them before a ``KEY=`` or the end (``a=1,,b=2``) leave an empty item, for the caller to refuse
    (:data:`EMPTY_PARAM`)."""
    items: list[str] = []
    start = 0
    while True:
        search = start
        key = _PARAM_KEY[separator].match(rest, start)
        quote = rest[key.end() : key.end() + 1] if key is not None else ""
        if key is not None and quote in ("'", '"') and (closing := rest.find(quote, key.end() + 1)) != -1:
            search = closing + 1  # commas and KEY= inside the quotes are the value's
        found = _NEXT_PARAM[separator].search(rest, search)
        if found is None:
            items.append(rest[start:])
            return items
        items.append(rest[start : found.start()])
        start = found.start() + 1


def param_key(item: str, separator: Literal["=", ":"] = "=") -> tuple[str, str] | None:
    """An item of :func:`param_items` as (KEY, the value's text as written), or None where it is not KEY=VALUE."""
    found = _PARAM_KEY[separator].match(item)
    return None if found is None else (found.group(1), item[found.end() :])


def parse_judge(text: str) -> tuple[str, dict[str, Any]]:
    """``facekit eval --judge``: ``NAME`` or ``NAME:KEY=VALUE[,KEY=VALUE...]`` -> (name, params); a value is read as
    ``--set components.judge.params.KEY=VALUE`` reads it (``0.8``, ``true``, ``casia-webface-tf``; text YAML would
    cut, such as a path with `` #``, is kept as written: :func:`facekit.recipe.text_value`), and the encoder's own
    params model checks it when the judge is built (e.g. ``facenet:variant=casia-webface-tf``, before only reachable
    through a recipe's ``components.judge``). A value may hold commas (:func:`param_items`)."""
    import yaml

    from facekit.recipe import text_value

    name, colon, rest = text.partition(":")
    name = name.strip()
    if not name:
        raise FacekitError(f"--judge {text!r}: give an encoder's name (facekit plugins lists them), e.g. sface")
    params: dict[str, Any] = {}
    if colon and not rest.strip():
        raise FacekitError(f"--judge {text!r}: nothing after the ':'; give KEY=VALUE pairs or leave the ':' out")
    for item in param_items(rest) if rest.strip() else []:
        if not item.strip():
            raise FacekitError(f"--judge {text!r}: {EMPTY_PARAM.format(sep='=')}")
        pair = param_key(item)
        if pair is None:
            raise FacekitError(f"--judge {text!r}: {item!r} is not KEY=VALUE (e.g. facenet:variant=casia-webface-tf)")
        key, value = pair
        if key in params:
            raise FacekitError(f"--judge {text!r}: {key!r} is given twice")
        try:
            params[key] = text_value(None, value, yaml.safe_load(value)) if value.strip() else ""
        except yaml.YAMLError:
            params[key] = value.strip()
    return name, params


def verify_pairs(
    normalizer: Any, root: Path, judges: list[Judge], folds: int | None = None, progress: bool = False
) -> dict[str, Any]:
    """Verification accuracy on LFW pairs with both photos replaced by their normalized faces, beside the accuracy
    on the original photos (same detector, same judge). Pairs with a photo that could not be normalized count as
    answered 'different' in both columns, so the two columns are over the same pairs."""
    from facekit.images import load_rgb

    pairs = read_pairs(root, folds)
    paths = sorted({p for pair in pairs for p in (pair.first, pair.second)})
    images = [load_rgb(p)[0] for p in paths]
    outcomes = _normalize_all(
        normalizer, images, [p.stem for p in paths], "normalizing pair photos" if progress else None
    )
    ok = [i for i, o in enumerate(outcomes) if o.face is not None]
    where = {paths[i]: n for n, i in enumerate(ok)}
    same = np.array([pair.same for pair in pairs])
    fold_of = np.array([pair.fold for pair in pairs])
    result: dict[str, Any] = {"pairs": len(pairs), "photos": len(paths), "not_normalized": len(paths) - len(ok)}
    faces = _Faces.of(images, outcomes, ok, normalizer)
    keys = judge_keys([(judge.name, getattr(judge, "params", {})) for judge in judges])  # (as metrics.json's)
    for key, judge in zip(keys, judges, strict=True):
        # None normalized: every pair scores as a miss (before: a traceback).
        inputs, outputs = faces.embed(judge) if ok else (np.zeros((0, 1)), np.zeros((0, 1)))
        higher = judge.card.distance == "cosine"
        worst = -np.inf if higher else np.inf
        columns = {}
        for name, embeddings in (("originals", inputs), ("normalized", outputs)):
            scores = np.array(
                [
                    judge.distance(embeddings[[where[p.first]]], embeddings[[where[p.second]]])[0]
                    if p.first in where and p.second in where
                    else worst
                    for p in pairs
                ]
            )
            columns[name] = tenfold_accuracy(scores, same, fold_of, higher_is_same=higher)
        result[key] = columns
    return result


#: What an evaluation writes in its folder (and the recipe's evaluate stage its run records).
EVALUATE_ENTRIES = ("metrics.json", "report.html", "identity-*.png", "identity-*.npy", "runs")
#: How an evaluation's own metrics and report begin (refuse_foreign_folder).
EVALUATE_SIGNATURES = {"metrics.json": b'"photos"', "report.html": b"<title>facekit evaluation</title>"}


def evaluate_plan(
    recipe: str | Plan | None,
    checkpoint: str | None,
    data: str,
    judges: Sequence[str],
    max_photos: int | None,
    out: str | None,
    overrides: Sequence[str] = (),
    pair_folds: int = 0,
    baseline: str | None = None,
    overwrite: bool = True,
    model: str | None = None,
    prepared: Any = None,
    device: str = "cpu",
    said_as: tuple[str, str] = ("eval", "run the same command again"),
    on_locked: Callable[[], object] | None = None,
) -> tuple[dict[str, Any], Path]:
    """`facekit eval`: the recipe's model (or ``checkpoint``, or the shipped ``model``, by default dlib's) on ``data``
    under ``judges``;
    ``max_photos`` None: the recipe's ``evaluate.max_photos`` (500 without a recipe). Without ``overwrite`` (the
    command's default), files of an earlier evaluation (or the user's) under its names in the folder stop it before
    anything is measured; the recipe's evaluate stage replaces its own folder's (it refuses, before this, a folder
    holding the user's files: :func:`facekit.pipeline.check_output_folders`). ``prepared``: the recipe's model already
    loaded with the detector the recipe names (the evaluate stage builds it to refuse a bad detector before its run
    record), used instead of loading both again. ``device``: where the model and the judges run (``facekit eval
    --device``; a torch device string, checked by :func:`facekit.normalize.inference_device`); the detectors and
    the baseline run on the CPU. ``recipe``: a recipe's path or name, or the :class:`~facekit.recipe.Plan` the caller
    read (the evaluate stage's: not read again, so its settings are those run.json hashed, and its judge is the one
    `facekit run`'s check built; ``overrides`` are then in it). ``said_as``: who says a stop, and how to run it
    again (:func:`evaluation_stopped`). ``on_locked``: called once the folder's lock is held, before the model loads
    (the evaluate stage's run record: one refused as another's running there leaves none; helper-221)."""
    from facekit.detail import DECODER_ONLY
    from facekit.locks import exclusive
    from facekit.normalize import Normalizer, inference_device, resolve_model, same_device
    from facekit.recipe import DataSection, Plan, load_recipe

    device = inference_device(device, "device")  # no GPU: said before anything is read or loaded
    asked: list[tuple[str, dict[str, Any]]] = []  # --judge NAME[:KEY=VALUE,...], read before anything loads
    for text in judges:
        name, params = parse_judge(text)
        if (name, params) in asked:  # (one encoder with other params is another judge: judge_keys)
            raise FacekitError(
                f"--judge {text.strip()} is given twice: judge with each encoder and params once per run"
            )
        asked.append((name, params))
    if prepared is not None and not same_device(prepared.device, device):
        raise ValueError(f"prepared runs on {prepared.device}, not on the device asked for, {device}")
    if overrides and not recipe:  # before: ignored, and the run went on as if they had been applied
        raise FacekitError("--set changes a recipe's settings: name the recipe (facekit eval RECIPE --set ...)")
    if isinstance(recipe, Plan) and overrides:
        raise ValueError("overrides are for a recipe read here; a Plan holds its own")
    plan = recipe if isinstance(recipe, Plan) else load_recipe(recipe, overrides) if recipe else None
    if baseline is not None and (checkpoint is not None or model is not None):
        given = "--checkpoint" if checkpoint is not None else "--model"
        raise FacekitError(f"--baseline evaluates a method without a model: leave out {given}")
    recipes_model = checkpoint is None and model is None and plan is not None
    if prepared is not None and not (recipes_model and baseline is None):  # (it would be measured, another recorded)
        raise ValueError("prepared is the recipe's own model, not one beside checkpoint, model, baseline")
    if plan is not None and not recipes_model and baseline is None:
        given_slots = plan.recipe.components.model_fields_set
        named = [  # (an explicit null is no component)
            slot
            for slot in ("encoder", "decoder", "warper", "detector")
            if slot in given_slots and getattr(plan.recipe.components, slot) is not None
        ]
        if named:  # (helper-81: skipped in silence)
            logger.warning(
                "%s: the model file is measured with its own %s; not applied from the recipe: components.%s (they "
                "describe what the recipe trains: leave out %s to measure the recipe's model as it says)",
                "--checkpoint" if checkpoint is not None else "--model",
                ", ".join(named),
                ", components.".join(named),
                "--checkpoint" if checkpoint is not None else "--model",
            )
    if checkpoint is None and model is None and plan is not None:  # a --model given is the model measured
        checkpoint = str(Path(plan.recipe.train.output) / "checkpoints" / "last.safetensors")
        if baseline is None and not Path(checkpoint).exists():  # (helper-133: "checkpoint not found" alone)
            from facekit.pipeline import relative_to_working_folder

            where = relative_to_working_folder(Path(checkpoint))  # (helper-188: from another folder, said nowhere)
            opening = f"; {where}" if where else ": "
            raise FacekitError(
                f"checkpoint not found: {checkpoint} (the recipe's train.output{opening}run its train stage first, "
                f"facekit run {plan.source} --stage train, or measure another model: --checkpoint FILE or --model NAME)"
            )
    if data != "lfw-devtest":
        raise FacekitError(f"unknown evaluation data {data!r}; available: lfw-devtest")
    if baseline not in (None, "frontalize"):  # (before: after the recipe's model checks and the output's lock)
        raise FacekitError(f"unknown baseline {baseline!r}; available: frontalize")
    root = (plan.recipe.data if plan else DataSection()).resolved_root()
    if not (root / "lfw" / "peopleDevTest.txt").is_file():  # before minutes of model loading and measuring
        raise FacekitError(
            f"LFW's peopleDevTest.txt is not under {root / 'lfw'}: set FACEKIT_DATA (or the recipe's data.root) to "
            "the data folder that holds lfw/"
        )
    folder = Path(out or (plan.recipe.evaluate.output if plan else "runs/eval"))
    from facekit.batch import check_fixed_outputs

    detector = None
    if baseline is None:  # the file measured (a missing one is one line before anything is made), named absolutely
        checkpoint = str(resolve_model(model, checkpoint).resolve())
    if recipes_model and baseline is None and checkpoint is not None and plan is not None:
        # The recipe's trained model is measured as the recipe now describes it, as the infer stage does: other
        # params for its encoder, decoder or warper are refused (they were ignored, and the evaluation recorded them
        # as used), and a detector the recipe names is the one run.
        from facekit.checkpoints import read_checkpoint_meta
        from facekit.pipeline import model_components, recipe_detector

        if prepared is not None:
            detector = prepared.detector
        else:
            model_components(plan, read_checkpoint_meta(Path(checkpoint)), Path(checkpoint), stage="evaluate")
            named_detector = recipe_detector(plan)
            detector = named_detector.build() if named_detector is not None else None

    check_fixed_outputs(folder, ["metrics.json", "report.html"], [], overwrite, "facekit eval")
    before = results_state(folder)
    # The lock before the model loads: an output folder that cannot be written stops the run now, not after the work.
    with (
        stops_said(lambda by: evaluation_stopped(by, folder, before, overwrite, *said_as)),
        exclusive(folder, "eval"),
    ):
        if on_locked is not None:
            on_locked()
        normalizer: Any
        configured = plan.components.get("judge") if plan is not None else None
        if baseline == "frontalize":
            from facekit.baselines.frontalize import Frontalizer

            normalizer = Frontalizer.from_data(root / "sfm", size=112)
        else:
            normalizer = prepared or Normalizer.from_checkpoint(  # (the judge's build where it is the encoder)
                checkpoint, device=device, detail=DECODER_ONLY, detector=detector, encoder=configured
            )
            from facekit.checkpoints import model_detector

            training = training_writing(Path(checkpoint)) if checkpoint is not None else None
            if training is not None:  # (before: measured without a word; metrics.json did not say which step)
                logger.warning(
                    "%s is being trained now in %s: this evaluation measures its checkpoint as saved so far (%s, "
                    "recorded in metrics.json); evaluate it again once the training ends",
                    checkpoint,
                    training,
                    measured_weights(normalizer.meta),
                )
            detector_used = (
                plan.components["detector"].spec.name
                if detector is not None and plan is not None
                else str(model_detector(normalizer.meta).get("name", "the model's"))
            )
        # Which judges, each as (name, the params given, or None: the recipe's judge, the model's own, or defaults).
        wanted: list[tuple[str, dict[str, Any] | None]]
        if judges:
            wanted = [(name, params or None) for name, params in asked]
        elif baseline is None:
            wanted = [(normalizer.meta["encoder"], None)]
        elif plan is not None and "encoder" in plan.components:
            wanted = [(plan.components["encoder"].spec.name, None)]
        else:
            raise FacekitError("the baseline has no encoder of its own: name a judge (--judge NAME) or a recipe")
        # The model's own encoder is already loaded: judge with it rather than building a second copy. A judge the
        # recipe names (components.judge) is built with the recipe's params.
        own = getattr(normalizer, "meta", {}).get("encoder")
        ref = (getattr(normalizer, "meta", {}).get("recipe") or {}).get("components", {}).get("encoder") or {}
        own_built = own_params(own, ref) if own is not None else None
        recipes = (
            (configured.spec.name, configured.params.model_dump(mode="json", exclude_defaults=True))
            if configured
            else None
        )
        # Each judge as (name, params: Judge.params, how it is built). A judge is its name AND params: before, one
        # of the model's encoder's name with other params (components.judge facenet:variant=casia-webface-tf beside a
        # model trained on vggface2's) was the model's own encoder, recorded under its params.
        chosen: list[tuple[str, dict[str, Any], Callable[[], Any]]] = []

        def choose(name: str, params: dict[str, Any] | None, recipes_judge: bool = False) -> None:
            # Judge.params: what it was built with where not its defaults, however it was built (before: only the
            # --judge params, so a recipe's components.judge facenet:variant=casia-webface-tf or a model's own
            # encoder of another variant was recorded as the default judge, and --judge NAME:KEY=<its default>
            # was recorded as another judge).
            if params and configured is not None and configured.spec.name == name:  # as --set: the recipe's, updated
                params = {**configured.params.model_dump(exclude_unset=True), **params}
            if params:
                built = non_default_params(name, params)
            elif name == own and not recipes_judge:  # a bare name: the model's own encoder, else the recipe's judge
                built = own_built or {}
            else:
                built = recipes[1] if recipes is not None and recipes[0] == name else {}
            make: Callable[[], Any]
            if name == own and built == own_built:
                make = functools.partial(getattr, normalizer, "encoder")
            elif recipes == (name, built):  # (the build a run's check kept, if any)
                make = functools.partial(judge_encoder, name, configured, device)
            else:
                make = functools.partial(judge_encoder, name, None, device, params)
            if any((name, built) == (other, theirs) for other, theirs, _ in chosen):
                if recipes_judge:  # the recipe's judge is the model's own encoder (default-model.yaml's)
                    return
                raise FacekitError(f"--judge {name} is given twice with the same params: judge with each once per run")
            chosen.append((name, built, make))

        for judge_name, judge_params in wanted:
            choose(judge_name, judge_params)
        if not judges and configured is not None:  # as the evaluate stage judges
            # (helper-74: `facekit eval default-model-sface` left out the independent judge it names)
            choose(configured.spec.name, None, recipes_judge=True)
        keys = judge_keys([(name, built) for name, built, _ in chosen])
        stems = [judge_file(key, name, built) for key, (name, built, _) in zip(keys, chosen, strict=True)]
        files = [f"identity-{stem}.{kind}" for stem in stems for kind in ("png", "npy")]
        check_fixed_outputs(folder, files, [], overwrite, "facekit eval")
        judge_list = [Judge(name, make(), built) for name, built, make in chosen]
        if max_photos is None:  # the recipe's evaluate section, else its default
            max_photos = plan.recipe.evaluate.max_photos if plan is not None else 500
        photos = lfw_devtest(root, max_photos)
        count = f"{len(photos)} photo{'s' if len(photos) != 1 else ''}"
        about = {
            "model": f"baseline {baseline}" if baseline else str(checkpoint),
            # Which detector found the faces (the recipe's, or the model's own): export refuses another's figures.
            **({"detector": detector_used} if baseline is None else {}),
            "data": f"{data}: {count} of LFW peopleDevTest.txt people (never trained on) in {root}",
        }
        pairs = (root, pair_folds) if pair_folds else None
        metrics = evaluate_normalizer(normalizer, photos, judge_list, folder, True, about, pairs)
    return metrics, folder
