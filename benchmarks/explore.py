"""Encoder comparison: each shipped model's consistency across photos of one person, under an independent judge.

    OMP_NUM_THREADS=1 python benchmarks/explore.py [--people 40] [--per-person 5] [--model NAME=PATH ...]

LFW peopleDevTest people with 4+ photos (never trained on), the first ``--people`` in name order, up to
``--per-person`` photos each. Per model (default: every shipped model), its judge is the recogniser it never saw
(dlib model -> SFace, SFace model -> dlib's ResNet), each through its own detector and alignment: the mean pairwise
distance of a person's normalized outputs, averaged over people, next to the same for their photos (lower = the model
maps one person's photos to more alike faces; the photos' figure is the judge's own spread). Writes the RESULTS.md
section "explore".
"""

from __future__ import annotations

import argparse
import shlex
import sys
from pathlib import Path

from results import machine, publish

from facekit.data.sources import lfw_photos
from facekit.recipe import DataSection


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--people", type=int, default=40)
    parser.add_argument("--per-person", type=int, default=5)
    parser.add_argument("--model", action="append", default=[], help="NAME=PATH (default: every shipped model)")
    parser.add_argument("--no-write", action="store_true")
    args = parser.parse_args()

    import facekit
    from facekit.normalize import Normalizer, model_path, shipped_models

    specs = [item.split("=", 1) for item in args.model] or [[name, str(model_path(name))] for name in shipped_models()]
    models = [(name, Normalizer.from_checkpoint(path)) for name, path in specs]
    root = DataSection().resolved_root()
    by_person: dict[str, list[Path]] = {}
    for photo in lfw_photos(root, "peopleDevTest.txt"):
        by_person.setdefault(photo.path.parent.name, []).append(photo.path)
    people = sorted(p for p, paths in by_person.items() if len(paths) >= 4)[: args.people]
    photos = [path for person in people for path in sorted(by_person[person])[: args.per_person]]
    explorer = facekit.load_component("app", "explore")
    result = explorer.compare(photos, models)
    lines = [
        f"Machine: {machine()}. {len(people)} LFW peopleDevTest people with 4+ photos, up to {args.per_person} each "
        f"({len(photos)} photos). Judge: the recogniser the model never saw, through its own detector and alignment.",
        "",
        "| model | judge | metric | people | photos judged | outputs: mean pairwise distance | photos: mean pairwise "
        "distance | outputs / photos |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for row in result.summary:
        ratio = row["outputs_mean_distance"] / row["inputs_mean_distance"] if row["inputs_mean_distance"] else None
        lines.append(
            f"| {row['model']} | {row['judge']} | {row['metric']} | {row['people']} | {row['judged']} | "
            f"{row['outputs_mean_distance']} | {row['inputs_mean_distance']} | "
            f"{'-' if ratio is None else f'{ratio:.2f}'} |"
        )
    lines += [
        "",
        "Below 1: a person's normalized faces are more alike than their photos (the model removes pose, light and "
        "expression); above 1: they differ more (the model adds variation the judge sees as identity).",
    ]
    command = "python benchmarks/explore.py" + (f" {shlex.join(sys.argv[1:])}" if sys.argv[1:] else "")
    publish(
        "explore", [f"## Encoder comparison: consistency of each model (`{command}`)", "", *lines], not args.no_write
    )


if __name__ == "__main__":
    main()
