"""Attributes measured on the normalized face against the same measures on the photo: are they the person's?

LFW people with 4+ photos from ``--people-file`` (default peopleDevTest.txt: people the model never saw), the first
``--people`` in name order, up to ``--per-person`` photos each; a person counts when 4+ of those photos have a face.
For each photo (the shipped dlib model unless ``--checkpoint``):

- **normalized**: ITA and the face-shape ratios of the ``attributes`` app on the normalized face (skin region and
  ratios from the decoder's predicted landmarks);
- **photo**: the same skin region on the photo aligned into the normalized frame (least-squares similarity from its
  detected landmarks onto the normalized face's, ``facekit.apps.attributes.photo_in_face_frame``), placed from the
  photo's *own* landmarks carried into that frame, and the ratios of the detector's landmarks; also the region placed
  from the normalized face's landmarks (``photo, normalized region``).

Per measure: the within-person SD (per-person sample SD, averaged over people), the between-person SD (SD of the
person means), their ratio (lower: the measure says more about the person and less about the photo), and the
correlation of the person means with the photo's. A measure that is constant for everyone has no within-person spread
and no between-person spread either: read the two together. Target: ITA within-person SD on the normalized face at
most half that on the photo. The skin region was fixed on DevTrain faces before this was run on DevTest.

    OMP_NUM_THREADS=1 python benchmarks/attributes.py [--people 60] [--per-person 6] [--no-write]
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
import numpy as np
from results import machine, publish
from rich.progress import track

from facekit.apps.attributes import MIN_B_STAR, RATIOS, measure_both, photo_in_face_frame, skin_tone
from facekit.data.sources import lfw_photos
from facekit.detail import DECODER_ONLY
from facekit.images import load_rgb
from facekit.normalize import Normalizer, resolve_model
from facekit.recipe import DataSection

MEASURES = ["ita_degrees", *RATIOS]
SOURCES = ["normalized", "photo", "photo, normalized region"]


def measure_person(normalizer: Normalizer, paths: list[Path]) -> list[dict[str, dict[str, float]]]:
    """Per photo with a face: {source: {measure: value}} (the ``photo, normalized region`` source has ITA only)."""
    images = [load_rgb(path)[0] for path in paths]
    values = []
    for photo, outcome in zip(images, normalizer.normalize_many(images, [p.stem for p in paths]), strict=True):
        if outcome.face is None or photo is None:
            continue
        face = outcome.face
        aligned, _ = photo_in_face_frame(photo, face)
        # As `facekit attributes` measures them (helper-87: measure_face kept the decoder's guessed ITA for a grey
        # photo, which the app reports as undefined).
        normalized, photo_values, _ = measure_both(photo, face)
        values.append(
            {
                "normalized": normalized,
                "photo": photo_values,
                "photo, normalized region": {"ita_degrees": skin_tone(aligned, face.decoder_landmarks).ita},
            }
        )
    return values


def spread(people: dict[str, list[dict[str, dict[str, float]]]], source: str, measure: str) -> dict[str, Any]:
    """Within-person SD (mean over people of the sample SD), between-person SD (of the person means), person means.
    An undefined value (ITA of a grey photo, NaN) is left out; a person with fewer than 2 defined values too."""
    groups = {}
    for person, rows in people.items():
        if measure in rows[0][source]:
            values = np.array([v[source][measure] for v in rows], np.float64)
            if np.isfinite(values).sum() >= 2:
                groups[person] = values[np.isfinite(values)]
    if not groups:
        return {}
    means = np.array([g.mean() for g in groups.values()])
    undefined = sum(
        int(np.isnan(v[source][measure]).sum()) for rows in people.values() for v in rows if measure in v[source]
    )
    return {
        "within": float(np.mean([g.std(ddof=1) for g in groups.values()])),
        "between": float(means.std(ddof=1)),
        "mean": float(means.mean()),
        "means": dict(zip(groups, means.tolist(), strict=True)),
        "undefined": undefined,
    }


def section(args: argparse.Namespace) -> str:
    """The RESULTS.md section a run writes: "attributes" on DevTest's people, "attributes-selection" on another list."""
    return "attributes" if args.people_file == "peopleDevTest.txt" else "attributes-selection"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--people", type=int, default=60, help="people with 4+ photos, first in name order")
    parser.add_argument("--per-person", type=int, default=6, help="photos per person at most")
    parser.add_argument("--people-file", default="peopleDevTest.txt", help="LFW people list (DevTrain: selection)")
    parser.add_argument("--checkpoint", default=None, help="a model file (default: the shipped dlib model)")
    parser.add_argument("--out", type=Path, default=Path("runs/eval/attributes"), help="values.json goes here")
    parser.add_argument("--no-write", action="store_true", help="do not rewrite RESULTS.md")
    args = parser.parse_args()
    root = DataSection().resolved_root()
    # What `facekit attributes` measures: the decoder's own face (photo detail and shape off, as the app loads it).
    normalizer = Normalizer.from_checkpoint(resolve_model(None, args.checkpoint), detail=DECODER_ONLY)
    by_person: dict[str, list[Path]] = {}
    for photo in lfw_photos(root, args.people_file, min_photos=4):
        by_person.setdefault(photo.identity, []).append(photo.path)
    chosen = sorted(by_person)[: args.people]
    began = time.perf_counter()
    people: dict[str, list[dict[str, dict[str, float]]]] = {}
    for person in track(chosen, description=f"{len(chosen)} people"):
        values = measure_person(normalizer, by_person[person][: args.per_person])
        if len(values) >= 4:
            people[person] = values
    seconds = time.perf_counter() - began
    photos = sum(len(v) for v in people.values())
    figures = {source: {m: spread(people, source, m) for m in MEASURES} for source in SOURCES}
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "values.json").write_text(json.dumps({"people": people, "figures": figures}, indent=1) + "\n")

    def row(measure: str, label: str, photo_source: str = "photo") -> str:
        norm, raw = figures["normalized"][measure], figures[photo_source][measure]
        common = sorted(set(norm["means"]) & set(raw["means"]))
        r = float(np.corrcoef([norm["means"][p] for p in common], [raw["means"][p] for p in common])[0, 1])
        return (
            f"| {label} | {norm['within']:.4g} | {raw['within']:.4g} | {norm['within'] / raw['within']:.2f} | "
            f"{norm['between']:.4g} | {raw['between']:.4g} | {norm['within'] / norm['between']:.2f} | "
            f"{raw['within'] / raw['between']:.2f} | {norm['mean']:.4g} / {raw['mean']:.4g} | {r:.2f} |"
        )

    ita = figures["normalized"]["ita_degrees"]["within"] / figures["photo"]["ita_degrees"]["within"]
    source = Path(str(normalizer.meta.get("source")))
    model = source.resolve().relative_to(Path.cwd()) if source.resolve().is_relative_to(Path.cwd()) else source
    split = "DevTest" if args.people_file == "peopleDevTest.txt" else args.people_file
    command = "python benchmarks/attributes.py" + (f" {shlex.join(sys.argv[1:])}" if sys.argv[1:] else "")
    lines = [
        f"## Attributes on the normalized face (`{command}`)",
        "",
        f"Machine: {machine()}; torch threads: {os.environ.get('OMP_NUM_THREADS', 'default')}; {seconds:.0f} s. "
        f"Model: `{model}`. {len(people)} LFW {split} people (of the first {len(chosen)} with 4+ "
        f"photos; those with 4+ photos where a face was found), up to {args.per_person} photos each: {photos} photos. "
        "Skin region: both cheeks and a forehead patch placed from the landmarks (`facekit/apps/attributes.py`; fixed "
        "on DevTrain faces before this run), median CIELAB (D65) -> ITA in degrees. *photo*: the same region on the "
        "photo aligned into the normalized frame (similarity from its detected landmarks), placed from the photo's own "
        "landmarks; ratios from the detector's landmarks. *photo, normalized region*: the region placed from the "
        "normalized face's landmarks instead.",
        "",
        "| measure | within-person SD, normalized | within, photo | normalized / photo | between-person SD, "
        "normalized | between, photo | within / between, normalized | within / between, photo | mean, normalized / "
        "photo | r of person means |",
        "|---|---|---|---|---|---|---|---|---|---|",
        row("ita_degrees", "ITA (deg)"),
        row("ita_degrees", "ITA (deg), photo with the normalized region", "photo, normalized region"),
        *(row(name, name) for name in RATIOS),
        "",
        f"ITA within-person SD, normalized / photo: **{ita:.2f}** (target <= 0.50: "
        f"{'met' if ita <= 0.5 else 'not met'}). ITA is undefined (b* below {MIN_B_STAR}: a grey or black-and-white "
        f"photo) for {figures['photo']['ita_degrees']['undefined']} photos and "
        f"{figures['normalized']['ita_degrees']['undefined']} normalized faces: left out, and a person with fewer "
        "than 2 defined values with them. The normalized faces measured are the decoder's own (photo detail and "
        "shape off), as `facekit attributes` measures them.",
    ]
    publish(section(args), lines, write=not args.no_write)


if __name__ == "__main__":
    main()
