"""The normalized face as a user would judge it: identity under judges' own pipelines, verification, detail, background.

    python benchmarks/quality.py [--model NAME=PATH ...] [--no-baseline] [--photos 500] [--folds 10]
                                 [--face central] [--sheet docs/quality-sheet.png]

For each method (the shipped default model unless ``--model`` is given, and the frontalization baseline) on
``--photos`` LFW peopleDevTest photos (people never trained on):

- identity: each judge runs its *own* detector and alignment on the photo and on the normalized face
  (:class:`facekit.fidelity.OwnPipelineJudge`): pass rate at the judge's threshold and the median score, where a photo
  with no output, or an output in which the judge finds no face, counts as a fail (worst score). Photos in which the
  judge finds no face in the *input* are not judged (reported);
- detail and background medians (:func:`facekit.fidelity.detail_ratio`, :func:`facekit.fidelity.background_noise`);
- in a photo with several faces, every method and both judges take the same one (``--face``, default ``central``:
  LFW's photos are framed around their subject; :func:`facekit.normalize.choose_face`), for identity and verification;
- LFW verification on ``--folds`` folds of pairs.txt (10: the LFW protocol; each fold's threshold from the others)
  with both photos replaced by their normalized faces, judged by SFace through its own pipeline, beside the same on
  the original photos.

Writes the ``quality`` section of benchmarks/RESULTS.md, ``<out>/metrics.json`` and a contact sheet (a row per photo:
the photo, then each method's output).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shlex
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
import numpy as np
from results import machine, publish
from rich.progress import track

from facekit.errors import FacekitError, debug_requested
from facekit.evaluate import (
    EMPTY_PARAM,
    PHOTO_SETS,
    param_items,
    param_key,
    photo_set,
    read_pairs,
    tenfold_accuracy,
)
from facekit.fidelity import OwnPipelineJudge, background_noise, detail_ratio, identity_figures, people_figures
from facekit.images import load_rgb
from facekit.recipe import DataSection
from facekit.types import FaceChoice


class SharedDetections:
    """One detection pass for every method and judge that uses the same detector on the same photos (detection is most
    of the cost on the CPU). Only the photos given to :meth:`share` are remembered, by their pixels (the pipeline
    hands a detector a copy of the photo, :func:`facekit.normalize.detect_guarded`: remembered by the identity of
    their array, as before, none was ever found again and every method detected every photo anew); anything else,
    e.g. a method's output that a judge looks at once, is detected each time and not kept."""

    def __init__(self, detector: Any, photos: Sequence[np.ndarray | None] = ()) -> None:
        self.detector = detector
        self.card = detector.card  # a facekit Detector: the pipeline reads its landmark scheme
        self.memo: dict[tuple[Any, ...], list[Any] | None] = {}
        self.share(photos)

    @staticmethod
    def key(image: np.ndarray) -> tuple[Any, ...]:
        """What tells a photo from another: its shape, type and a digest of its pixels."""
        return (image.shape, image.dtype.str, hashlib.sha1(np.ascontiguousarray(image).data).hexdigest())

    def share(self, photos: Sequence[np.ndarray | None]) -> None:
        """Remember the faces of these photos once found (every user of this detector will look at them)."""
        for photo in photos:
            if photo is not None:
                self.memo.setdefault(self.key(photo), None)

    def detect_array(self, image: np.ndarray) -> list[Any]:
        key = self.key(image)
        if key not in self.memo:  # not a shared photo
            return self.detector.detect_array(image)
        faces = self.memo[key]
        if faces is None:
            faces = self.memo[key] = self.detector.detect_array(image)
        return faces


def share_detectors(holders: list[Any]) -> list[SharedDetections]:
    """Give every holder (method or judge) with an equal detector (same class and params) one SharedDetections; the
    shared detectors, for :meth:`SharedDetections.share`."""
    shared: dict[str, SharedDetections] = {}
    for holder in holders:
        detector = holder.detector
        # Class, params and point count (dlib's 68- and 5-point detectors share a class and params).
        key = f"{type(detector).__qualname__}:{getattr(detector, 'params', None)!r}:{getattr(detector, 'points', None)}"
        holder.detector = shared.setdefault(key, SharedDetections(detector))
    return list(shared.values())


def normalize_all(method: Any, images: list[np.ndarray | None], names: list[str], label: str) -> list[Any]:
    outcomes: list[Any] = []
    for start in track(range(0, len(images), 32), description=f"{label}: normalizing {len(images)} photos"):
        outcomes.extend(method.normalize_many(images[start : start + 32], names[start : start + 32]))
    return outcomes


def timed_normalize(
    method: Any, images: list[np.ndarray | None], names: list[str], label: str
) -> tuple[list[Any], float]:
    """``method``'s outcomes on ``images`` and the seconds they took after detection: every photo is detected first
    (shared, and not part of the method's own time) and one photo normalized untimed, so that first calls (torch's
    kernels, lazily built state) are not either (before: the first method's time counted them; 8 LFW photos took 0.29
    s of CPU at one torch thread in the first call, 0.15 in the next)."""
    for image in images:
        if image is not None:
            method.detector.detect_array(image)
    readable = [i for i, image in enumerate(images) if image is not None][:1]
    if readable:
        method.normalize_many([images[i] for i in readable], [names[i] for i in readable])
    begun = time.perf_counter()
    outcomes = normalize_all(method, images, names, label)
    return outcomes, time.perf_counter() - begun


def outputs_of(outcomes: list[Any]) -> list[np.ndarray | None]:
    return [o.face.image if o.face is not None else None for o in outcomes]


def face_argument(parser: argparse.ArgumentParser, who: str) -> None:
    """--face: which face of a photo with several ``who`` (e.g. "every method and both judges take"), central by
    default in the benchmarks on LFW."""
    parser.add_argument(
        "--face",
        choices=[choice.value for choice in FaceChoice],
        default=FaceChoice.CENTRAL.value,
        help=f"which face of a photo with several {who} (facekit.normalize.choose_face): central (default here: "
        "LFW's photos are framed around their subject, and about 1 in 20 has another face, sometimes larger) or "
        "largest (facekit normalize's default; what runs before stop 29 used)",
    )


def pair_arguments(parser: argparse.ArgumentParser) -> None:
    """--pairs (default: View 1 training pairs, selection data), --folds, --max-pairs and --no-write: the options of
    the benchmarks that choose on LFW pairs (face_choice.py, verification_levers.py)."""
    parser.add_argument(
        "--pairs", default="pairsDevTrain.txt", choices=["pairsDevTrain.txt", "pairsDevTest.txt", "pairs.txt"]
    )
    parser.add_argument("--folds", type=int, default=10, help="the first this many of the pairs' 10 folds")
    parser.add_argument(
        "--max-pairs", type=int, default=0, help="every n-th pair of each fold, so that about this many (0: all)"
    )
    parser.add_argument("--no-write", action="store_true", help="do not rewrite RESULTS.md")


def check_pair_arguments(parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    if args.folds < 2:
        parser.error("--folds must be at least 2 (each fold's threshold comes from the others)")


def detector_params(value: str) -> dict[str, str]:
    """--detector's ``KEY:VALUE[,KEY:VALUE]`` (after ``NAME=``) -> params, as text (pydantic converts them). Split as
    ``--judge``'s params are (:func:`facekit.evaluate.param_items`, with ``:`` for ``=``): at a comma that a ``KEY:``
    follows, so a value may hold commas (before, every comma split: ``weights:/m/a,b.onnx`` was refused), and a
    quoted value anything (read as YAML reads it). ValueError for an item that is not KEY:VALUE or a KEY twice."""
    import yaml

    params: dict[str, str] = {}
    for item in param_items(value, ":"):
        if not item.strip():
            raise ValueError(EMPTY_PARAM.format(sep=":"))
        pair = param_key(item, ":")
        if pair is None:
            raise ValueError(f"{item!r} is not KEY:VALUE")
        key, text = pair
        if key in params:
            raise ValueError(f"{key!r} is given twice")
        quoted = text.strip()[:1] in ("'", '"')
        try:
            params[key] = str(yaml.safe_load(text)) if quoted else text.strip()
        except yaml.YAMLError:
            params[key] = text.strip()
    return params


def number(value: float | None, spec: str) -> str:
    """``value`` formatted by ``spec``, "-" for None (a figure with nothing to measure)."""
    return "-" if value is None else format(value, spec)


def accuracy_cell(result: dict[str, Any] | None) -> str:
    """A 10-fold accuracy as a table cell: mean +- spread over the folds ('-' for none)."""
    return "-" if result is None else f"{result['accuracy']:.2%} ± {result['std']:.2%}"


@dataclass
class PairPhotos:
    """LFW pairs with their photos read once: pair k is ``images[first[k]]`` and ``images[second[k]]``."""

    paths: list[Path]
    images: list[np.ndarray | None]
    same: np.ndarray
    fold_of: np.ndarray
    first: np.ndarray
    second: np.ndarray

    @classmethod
    def read(cls, root: Path, folds: int, name: str = "pairs.txt", max_pairs: int = 0) -> PairPhotos:
        """``name``'s pairs in its first ``folds`` folds (View 1 is dealt into 10); with ``max_pairs`` every n-th pair
        of each fold, so that about that many are kept and every fold keeps its share (0: all)."""
        pairs = read_pairs(root, folds, name)
        if max_pairs:
            step = max(1, -(-len(pairs) // max_pairs))
            folds_kept = sorted({pair.fold for pair in pairs})
            pairs = [pair for fold in folds_kept for pair in [q for q in pairs if q.fold == fold][::step]]
        paths = sorted({p for pair in pairs for p in (pair.first, pair.second)})
        where = {p: i for i, p in enumerate(paths)}
        images = [load_rgb(p)[0] for p in track(paths, description=f"reading {len(paths)} pair photos")]
        first, second = (np.array([where[getattr(p, side)] for p in pairs]) for side in ("first", "second"))
        same, fold_of = np.array([pair.same for pair in pairs]), np.array([pair.fold for pair in pairs])
        return cls(paths, images, same, fold_of, first, second)

    def accuracy(
        self, judge: OwnPipelineJudge, embeddings: np.ndarray, per_pair: list[dict[str, Any]] | None = None
    ) -> dict[str, Any]:
        """The folds' accuracy of ``judge``'s scores between (photos, D) ``embeddings`` of each pair; with
        ``per_pair`` (one dict per pair), each pair's score, its fold's threshold and whether it was called right
        are added to its dict (:func:`pair_calls`)."""
        scores = judge.scores(embeddings[self.first], embeddings[self.second])
        if per_pair is not None:
            for row, call in zip(
                per_pair, pair_calls(scores, self.same, self.fold_of, judge.higher_is_same), strict=True
            ):
                row.update(call)
        return tenfold_accuracy(scores, self.same, self.fold_of, judge.higher_is_same)

    def rows(self) -> list[dict[str, Any]]:
        """One dict per pair: its fold, same or not, and its two photos (the file names), for :meth:`accuracy`'s
        ``per_pair``."""
        return [
            {"fold": int(fold), "same": bool(same), "first": self.paths[a].name, "second": self.paths[b].name}
            for fold, same, a, b in zip(self.fold_of, self.same, self.first, self.second, strict=True)
        ]


def pair_calls(scores: np.ndarray, same: np.ndarray, folds: np.ndarray, higher_is_same: bool) -> list[dict[str, Any]]:
    """Per pair: its score, the threshold its fold was judged at (chosen on the other folds,
    :func:`facekit.evaluate.tenfold_folds`) and whether the pair was called right there; a failed pair (no output, no
    face for the judge) has the judge's worst score. Which pairs one method gets wrong and another right is what the
    folds' accuracy hides (helper-207: the pairs the normalized faces lose that the photos keep)."""
    from facekit.evaluate import tenfold_folds

    _, thresholds = tenfold_folds(scores, same, folds, higher_is_same)
    threshold_of = dict(zip(np.unique(folds).tolist(), thresholds.tolist(), strict=True))
    calls = []
    for score, is_same, fold in zip(scores.tolist(), same.tolist(), folds.tolist(), strict=True):
        threshold = threshold_of[fold]
        called_same = bool(np.isfinite(threshold)) and (score >= threshold if higher_is_same else score <= threshold)
        calls.append(
            {"score": round(score, 4), "threshold": round(threshold, 4), "right": called_same == bool(is_same)}
        )
    return calls


def write_pair_scores(path: Path, pairs: list[dict[str, Any]], methods: dict[str, list[dict[str, Any]]]) -> None:
    """A CSV row per pair: fold, same, the two photos, then each method's score, threshold and right (1/0)."""
    import csv

    with path.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(
            ["pair", "fold", "same", "first", "second"]
            + [f"{name} {column}" for name in methods for column in ("score", "threshold", "right")]
        )
        for k, pair in enumerate(pairs):
            row = [k, pair["fold"], int(pair["same"]), pair["first"], pair["second"]]
            for calls in methods.values():
                call = calls[k]
                row += [call["score"], call["threshold"], int(call["right"])]
            writer.writerow(row)


def verification(
    methods: list[tuple[str, Any]],
    root: Path,
    judge: OwnPipelineJudge,
    folds: int,
    name: str = "pairs.txt",
    shared: Sequence[SharedDetections] = (),
    pair_scores: Path | None = None,
) -> dict[str, dict[str, Any]]:
    """Each method's (and the photos') accuracy on ``name``'s pairs; with ``pair_scores``, a CSV of every pair's
    score, threshold and call per method is written there (:func:`write_pair_scores`)."""
    pairs = PairPhotos.read(root, folds, name)
    for detector in shared:
        detector.share(pairs.images)
    calls: dict[str, list[dict[str, Any]]] = {}

    def kept(label: str) -> list[dict[str, Any]] | None:
        if pair_scores is None:
            return None
        calls[label] = [{} for _ in pairs.same]
        return calls[label]

    result = {
        "originals": {
            **pairs.accuracy(judge, judge.embed(pairs.images), kept("photos (no normalization)")),
            "pairs": len(pairs.same),
            "photos": len(pairs.paths),
        }
    }
    for name, method in methods:
        outcomes = normalize_all(method, pairs.images, [p.stem for p in pairs.paths], f"{name} (pairs)")
        embeddings = judge.embed(outputs_of(outcomes))
        result[name] = {
            **pairs.accuracy(judge, embeddings, kept(name)),
            "no_output": sum(o.face is None for o in outcomes),
        }
    if pair_scores is not None:
        pair_scores.parent.mkdir(parents=True, exist_ok=True)
        write_pair_scores(pair_scores, pairs.rows(), calls)
    return result


def contact_sheet(photos: list[np.ndarray | None], columns: list[tuple[str, list[Any]]], rows: int, size: int) -> Any:
    """A row per photo (evenly spread): the whole photo fitted into a ``size`` px square, then each method's output."""
    import textwrap

    from PIL import Image, ImageDraw

    picks = np.linspace(0, len(photos) - 1, rows).round().astype(int)
    header = 30
    sheet = Image.new("RGB", ((1 + len(columns)) * size, header + rows * size), (255, 255, 255))
    draw = ImageDraw.Draw(sheet)
    for c, title in enumerate(["photo"] + [name for name, _ in columns]):
        lines = textwrap.wrap(title, width=size // 6)[:2]
        draw.multiline_text((c * size + 3, 2), "\n".join(lines), fill=(0, 0, 0), spacing=2)
    for r, index in enumerate(picks):
        photo = photos[index]
        if photo is not None:  # the whole photo, fitted into the square (centred)
            scale = size / max(photo.shape[:2])
            width, height = max(1, round(photo.shape[1] * scale)), max(1, round(photo.shape[0] * scale))
            thumb = Image.fromarray(photo).resize((width, height), Image.Resampling.BICUBIC)
            sheet.paste(thumb, ((size - width) // 2, header + r * size + (size - height) // 2))
        for c, (_, outcomes) in enumerate(columns, start=1):
            face = outcomes[index].face
            if face is not None:
                image = Image.fromarray(face.image)
                sheet.paste(image.resize((size, size), Image.Resampling.BICUBIC), (c * size, header + r * size))
    return sheet


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", action="append", default=[], help="NAME=PATH of a model file (repeatable)")
    parser.add_argument(
        "--detail",
        action="append",
        default=[],
        help="NAME=STRENGTH[:SIGMA[:SHAPE[:FOREHEAD]]]: photo detail for model NAME (facekit.detail; 0 = the decoder "
        "alone; "
        "default: the library's setting)",
    )
    parser.add_argument(
        "--detector",
        action="append",
        default=[],
        help="NAME=KEY:VALUE[,KEY:VALUE]: detector params for model NAME over its recipe's (e.g. "
        "'hog only=face_detector:hog'; the frontalization baseline keeps the dlib detector's defaults). A value may "
        "hold commas (a comma starts the next param only where a KEY: follows), and a quoted one anything",
    )
    parser.add_argument(
        "--size",
        action="append",
        default=[],
        help="NAME=PIXELS: the output side for model NAME (Normalizer.size, `facekit normalize --size`; default: the "
        "model's); detail is then measured against the photo aligned at that size",
    )
    parser.add_argument("--no-baseline", action="store_true", help="leave out the frontalization baseline")
    face_argument(parser, "every method and both judges take")
    parser.add_argument("--photos", type=int, default=500, help="photos for identity, detail and background")
    parser.add_argument(
        "--set",
        dest="photo_set",
        choices=PHOTO_SETS,
        default="lfw-devtest",
        help="lfw-devtest: people never trained on (report); london-smiling: the London people's smiling photos, never "
        "trained on though their neutral ones were; lfw-devtrain: wild photos of the training people (identity "
        "flattered; for settings that do not change the model); helen-test: 330 Flickr photos (HELEN test split), not "
        "from LFW or London (ibug68/helen_test; many turned or smiling), never trained on: for choosing between "
        "models. Choose models and settings on the last three, never on DevTest",
    )
    parser.add_argument("--folds", type=int, default=10, help="folds of pairs.txt for verification (0 = skip)")
    parser.add_argument(
        "--pairs",
        default="pairs.txt",
        choices=["pairs.txt", "pairsDevTrain.txt", "pairsDevTest.txt"],
        help="verification pairs: pairs.txt (View 2, the issue's report; 4,853 of its 6,000 pairs involve "
        "peopleDevTrain people, whom the models were trained on), pairsDevTrain.txt (View 1 training people, for "
        "choosing settings) or pairsDevTest.txt (View 1, people never trained on); View 1 is dealt into 10 folds",
    )
    parser.add_argument(
        "--pair-scores",
        action="store_true",
        help="also write <out>/pairs.csv: each verification pair's score, its fold's threshold and whether it was "
        "called right, for the photos and each method (which pairs a method loses that the photos keep)",
    )
    parser.add_argument("--sheet", type=Path, default=None, help="also write the contact sheet here")
    parser.add_argument("--sheet-rows", type=int, default=8)
    parser.add_argument(
        "--out",
        type=Path,
        default=Path("runs/eval/quality"),
        help="metrics.json and the contact sheet go here, with --no-write too (the default is the folder the README's "
        "`facekit export --metrics` reads: give a trial run another)",
    )
    parser.add_argument("--no-write", action="store_true", help="do not rewrite RESULTS.md (--out is still written)")
    parser.add_argument("--section", default="quality", help="RESULTS.md section to write (default: quality)")
    parser.add_argument("--title", default="Quality of the normalized face", help="the section's heading")
    parser.add_argument(
        "--include",
        type=Path,
        action="append",
        default=[],
        help="metrics.json of an earlier run: its methods, and figures this run skipped, join the table (marked)",
    )
    args = parser.parse_args()
    if args.folds == 1:
        parser.error("--folds 1 leaves no held-out fold (the threshold would be chosen on the pairs it scores)")
    if args.pair_scores and args.folds == 0:
        parser.error("--pair-scores needs verification (--folds 2 to 10)")
    if not 0 <= args.folds <= 10:  # before: --folds 11 headed the table "11-fold" over LFW's 10
        parser.error("--folds: 0 (skip verification) or 2 to 10 (LFW's pairs have 10 folds)")
    # Before: `--model model.safetensors` (no NAME=), a --detail that is not numbers or a --detector without KEY:VALUE
    # ended in a ValueError traceback; a model file that is not there in FacekitError's (see the end of this file).
    overrides: dict[str, dict[str, str]] = {}
    for option, items, form in (
        ("--model", args.model, "NAME=PATH"),
        ("--detail", args.detail, "NAME=STRENGTH[:SIGMA[:SHAPE[:FOREHEAD]]]"),
        ("--detector", args.detector, "NAME=KEY:VALUE[,KEY:VALUE]"),
        ("--size", args.size, "NAME=PIXELS"),
    ):
        for item in items:
            name, _, value = item.partition("=")
            if not name.strip() or not value.strip():
                parser.error(f"{option} takes {form}, got {item!r}")
            if option == "--detector":
                try:
                    overrides[name] = detector_params(value)
                except ValueError as error:
                    parser.error(f"--detector takes {form}, got {item!r}: {error}")
    named = [item.split("=", 1)[0] for item in args.model]
    if len(set(named)) < len(named):  # before: both ran, one row shown, one key in metrics.json
        parser.error(f"--model: each NAME once ({', '.join(sorted({n for n in named if named.count(n) > 1}))} twice)")

    import facekit
    from facekit.baselines.frontalize import Frontalizer
    from facekit.detail import DetailSettings
    from facekit.normalize import Normalizer, check_output_size, default_model_path

    root = DataSection().resolved_root()
    specs = [item.split("=", 1) for item in args.model] or [["default model", str(default_model_path())]]
    pairs_given = (item.split("=", 1) for item in args.detail)
    details = {}
    for name, value in pairs_given:
        try:
            details[name] = DetailSettings.parse(value)
        except (ValueError, FacekitError) as error:  # "abc", or a strength out of range
            parser.error(f"--detail {name}={value}: {error}")
    if unknown := set(details) - {name for name, _ in specs}:
        parser.error(f"--detail names no --model: {', '.join(sorted(unknown))}")
    if unknown := set(overrides) - {name for name, _ in specs}:
        parser.error(f"--detector names no --model: {', '.join(sorted(unknown))}")
    sizes = {}
    for name, value in (item.split("=", 1) for item in args.size):
        try:
            sizes[name] = check_output_size(int(value))
        except (ValueError, FacekitError) as error:
            parser.error(f"--size {name}={value}: {error}")
    if unknown := set(sizes) - {name for name, _ in specs}:
        parser.error(f"--size names no --model: {', '.join(sorted(unknown))}")
    methods: list[tuple[str, Any]] = [
        (name, Normalizer.from_checkpoint(path, detail=details.get(name), face=args.face, size=sizes.get(name)))
        for name, path in specs
    ]
    for name, method in methods:
        if name in overrides:  # the same detector with other params (strings: pydantic converts them)
            reference = method.meta["recipe"]["components"]["detector"]
            params = {**reference.get("params", {}), **overrides[name]}
            method.detector = facekit.load_component("detector", reference["name"], **params)
    if not args.no_baseline:
        methods.append(("frontalization baseline", Frontalizer.from_data(root / "sfm", size=112, face=args.face)))
    judges = [OwnPipelineJudge.build(name, face=args.face) for name in ("sface", "dlib-resnet")]
    sface = judges[0]
    shared = share_detectors([method for _, method in methods] + judges)

    started = time.perf_counter()
    photos = photo_set(root, args.photo_set, args.photos)
    images = [load_rgb(p.path)[0] for p in photos]
    names = [p.path.stem for p in photos]
    people = [p.identity for p in photos]
    for detector in shared:
        detector.share(images)
    inputs = {judge.name: judge.embed(images) for judge in judges}
    figures: dict[str, Any] = {}
    columns = []
    for name, method in methods:
        outcomes, seconds = timed_normalize(method, images, names, name)
        outputs = outputs_of(outcomes)
        has_output = np.array([o is not None for o in outputs])
        ok = [i for i, o in enumerate(outcomes) if o.face is not None]
        ratios = [  # a photo with an output was read
            detail_ratio(o.face.image, o.face.landmarks, photo, o.face.source_landmarks)
            for o, photo in zip(outcomes, images, strict=True)
            if o.face is not None and photo is not None
        ]
        backgrounds = [background_noise(outcomes[i].face.image, outcomes[i].face.landmarks) for i in ok]
        embedded = {judge.name: judge.embed(outputs) for judge in judges}
        figures[name] = {
            "photos": len(photos),
            "weights_sha256": getattr(method, "meta", {}).get("weights_sha256"),  # what facekit export checks
            "no_output": len(photos) - len(ok),
            "ms_per_photo": round(1000 * seconds / len(photos), 1),
            "identity": {j.name: identity_figures(j, inputs[j.name], embedded[j.name], has_output) for j in judges},
            # SFace (never trained on): are different people's outputs as distinct as their photos?
            "people_sface": people_figures(sface, people, inputs[sface.name], embedded[sface.name]),
            "detail_median": round(float(np.median(ratios)), 3),
            "background_median": round(float(np.nanmedian(backgrounds)), 2),
        }
        columns.append((name, outcomes))
    if args.folds > 0:
        pair_scores = args.out / "pairs.csv" if args.pair_scores else None
        pairs = verification(methods, root, sface, args.folds, args.pairs, shared, pair_scores)
        for name in figures:
            figures[name]["verification_sface"] = {**pairs[name], "pairs_file": args.pairs}
        figures["photos (no normalization)"] = {"verification_sface": {**pairs["originals"], "pairs_file": args.pairs}}
    for row in figures.values():
        row["face"] = args.face  # which face of a photo with several (runs before the setting: the largest)

    included = []
    for path in args.include:
        for name, row in json.loads(path.read_text()).items():
            rule = row.get("face", "largest")
            if name not in figures:  # a method of that run only: its rule, whatever this run's
                figures[name] = {"face": rule}
            mine = figures[name]
            added = [key for key in row if key not in mine]
            mine.update({key: row[key] for key in added})
            if added:
                other = f" (taking the {rule} face)" if rule != args.face else ""
                included.append(f"{name}: {', '.join(added)} from {path}{other}")

    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "metrics.json").write_text(json.dumps(figures, indent=2) + "\n")
    sheet = contact_sheet(images, columns, args.sheet_rows, 112)
    sheet.save(args.out / "contact-sheet.png")
    if args.sheet is not None:
        args.sheet.parent.mkdir(parents=True, exist_ok=True)
        sheet.save(args.sheet)

    threads = os.environ.get("OMP_NUM_THREADS", "default")
    lines = [
        f"## {args.title} (`python benchmarks/quality.py {shlex.join(sys.argv[1:])}`)",
        "",
        f"Machine: {machine()}; torch threads: {threads}; {time.perf_counter() - started:.0f} s in all. "
        f"{len(photos)} photos of {args.photo_set}; in a photo with several faces every method and judge takes the "
        f"{args.face} one (`--face`). Each judge runs its own detector and "
        "alignment on photo and output (SFace: YuNet + its 5-point template, never used in training; dlib: its "
        "detector (HOG, its CNN where HOG finds none) + 68 points + dlib's chip, the training encoder). A photo with "
        "no output, or an output where the judge finds no "
        "face, is a fail; photos whose input the judge cannot find are not judged. Detail: output |Laplacian| inside "
        "the landmark hull / the same for the photo aligned into the output frame (1.0 = as sharp as the photo). "
        "Background: |Laplacian| grey levels in the side strips outside the dilated hull (plain studio < 1).",
        "",
        "| method | SFace pass (>0.363) | SFace median cos | dlib pass (<0.6) | dlib median dist | detail | background "
        f"| LFW {f'{args.folds}-fold' if args.folds else 'verification'}, SFace | ms/photo after detection |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for name, row in figures.items():
        accuracy = accuracy_cell(row.get("verification_sface"))
        scored_on = (row.get("verification_sface") or {}).get("pairs_file", args.pairs)
        if scored_on != args.pairs:  # an included run's, on other pairs (before: labelled as this run's)
            accuracy += f" ({scored_on})"
        if "identity" not in row:
            lines.append(f"| {name} | - | - | - | - | - | - | {accuracy} | - |")
            continue
        sface, dlib = row["identity"]["sface"], row["identity"]["dlib-resnet"]
        lines.append(
            f"| {name} | {sface['pass_rate']:.1%} | {sface['median']:.3f} | {dlib['pass_rate']:.1%} | "
            f"{dlib['median']:.3f} | {row['detail_median']:.2f} | {row['background_median']:.2f} | {accuracy} | "
            f"{row['ms_per_photo']:.0f} |"
        )
    first = next(iter(figures.values()))
    lines += [
        "",
        f"Judged photos: SFace {first['identity']['sface']['judged']}, "
        f"dlib {first['identity']['dlib-resnet']['judged']} of {len(photos)}; "
        "photos without an output, or whose output the judge finds no face in, per method: "
        + "; ".join(
            f"{n}: {r['no_output']} no output, {r['identity']['sface']['output_without_face']} (SFace) / "
            f"{r['identity']['dlib-resnet']['output_without_face']} (dlib) without a face"
            for n, r in figures.items()
            if "identity" in r
        )
        + ".",
    ]
    people_rows = [(n, r["people_sface"]) for n, r in figures.items() if "people_sface" in r]
    if people_rows:
        lines += [
            "",
            "Different people under SFace (never trained on): the mean cosine between the outputs of different people "
            "and between their photos, over the same pairs (photos whose output has a face; lower = more distinct), "
            f"and rank-1 identification: the share of the {people_rows[0][1]['judged']} photos whose output is "
            "nearest a photo of the same person among them all (its own included).",
            "",
            "| method | SFace mean cos, different people | the same pairs' photos | rank-1 identification |",
            "|---|---|---|---|",
            *(
                f"| {n} | {number(r['different_people'], '.3f')} | {number(r['different_people_photos'], '.3f')} | "
                f"{number(r['rank1'], '.1%')} |"
                for n, r in people_rows
            ),
            "",
        ]
    if "photos (no normalization)" in figures:
        verify = figures["photos (no normalization)"]["verification_sface"]
        scored = verify.get("pairs_file", args.pairs)
        lines.append(
            f"Verification: {verify['pairs']} pairs ({verify['folds']}-fold protocol on {scored}, threshold chosen "
            f"on the other folds; {verify['photos']} photos); a "
            "pair with a photo that has no output or no face for the judge counts with the worst score."
            + (
                " pairs.txt (View 2) is LFW's protocol but not disjoint from training: 4,853 of its 6,000 pairs "
                "involve peopleDevTrain people, whose averages the model was trained on (pairsDevTest.txt: none)."
                if scored == "pairs.txt"
                else ""
            )
        )
    if included:
        lines.append("From earlier runs of this script on the same machine: " + "; ".join(included) + ".")
    publish(args.section, lines, write=not args.no_write)


if __name__ == "__main__":
    try:
        main()
    except FacekitError as error:  # one line, as the facekit command says it (a model file not there, say)
        if debug_requested():
            raise
        sys.exit(f"error: {error}")
