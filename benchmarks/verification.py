"""LFW pairs verification with normalized faces vs the original photos, for the default model and the baseline.

    python benchmarks/verification.py [--folds 10] [--identity-photos 500]

For each method (the shipped default model; the frontalization baseline of facekit.baselines), both photos of every
pair in the first ``--folds`` folds of pairs.txt are replaced by their normalized faces and verified by each judge
(10-fold protocol: threshold from the other folds), beside the same judge on the original photos. Also the identity
pass rates on LFW DevTest photos for the baseline, so its figures sit next to the model's. Writes the
`verification` section of benchmarks/RESULTS.md.
"""

from __future__ import annotations

import argparse
import shlex
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from results import machine, write_section

import facekit
from facekit.baselines.frontalize import Frontalizer
from facekit.evaluate import Judge, evaluate_normalizer, lfw_devtest, verify_pairs
from facekit.normalize import Normalizer
from facekit.recipe import DataSection


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--folds", type=int, default=10)
    parser.add_argument("--identity-photos", type=int, default=500)
    parser.add_argument("--out", type=Path, default=Path("runs/eval/verification-benchmark"))
    parser.add_argument("--no-write", action="store_true")
    args = parser.parse_args()
    if not 2 <= args.folds <= 10:  # before: --folds 1 was accepted and called "threshold chosen on the other folds"
        parser.error("--folds: 2 to 10 (each fold's threshold comes from the others; LFW's pairs have 10 folds)")
    root = DataSection().resolved_root()
    judges = [Judge(name, facekit.load_component("encoder", name).eval()) for name in ("dlib-resnet", "sface")]
    methods: list[tuple[str, Any]] = [
        ("default model", Normalizer.from_checkpoint()),
        ("frontalization baseline", Frontalizer.from_data(root / "sfm", size=112)),
    ]
    rows = []
    for name, normalizer in methods:
        start = time.perf_counter()
        pairs = verify_pairs(normalizer, root, judges, args.folds, progress=True)
        folder = args.out / name.replace(" ", "-")
        photos = lfw_devtest(root, args.identity_photos)
        identity = evaluate_normalizer(normalizer, photos, judges, folder, progress=True)
        rows.append((name, pairs, identity, time.perf_counter() - start))
    first = rows[0][1]
    command = shlex.join(["python", "benchmarks/verification.py", *sys.argv[1:]])  # as given (before: --folds only)
    lines = [
        f"## LFW verification with normalized faces (`{command}`)",
        "",
        f"Machine: {machine()}. {first['pairs']} pairs ({args.folds} folds of pairs.txt, {first['photos']} photos). "
        f"Both photos of each pair replaced by their normalized faces; {args.folds}-fold protocol (threshold chosen on "
        "the other folds); a photo that could not be normalized makes its pairs count as 'different' in both columns.",
        "",
        "| method | judge | accuracy on originals | accuracy on normalized faces | not normalized | seconds |",
        "|---|---|---|---|---|---|",
    ]
    for name, pairs, _, seconds in rows:
        for judge in judges:
            columns = pairs[judge.name]
            original, normalized = columns["originals"], columns["normalized"]
            lines.append(
                f"| {name} | {judge.name} | {original['accuracy']:.2%} ± {original['std']:.2%} | "
                f"{normalized['accuracy']:.2%} ± {normalized['std']:.2%} | {pairs['not_normalized']} | {seconds:.0f} |"
            )
    lines += [
        "",
        f"Identity preservation on {len(photos)} LFW DevTest photos (pass rate: normalized face within the "
        "judge's threshold of its photo):",
        "",
        "| method | dlib-resnet pass | SFace pass | same-person median (dlib) | different-people median (dlib) |",
        "|---|---|---|---|---|",
    ]
    for name, _, identity, _ in rows:
        dlib, sface = identity["judges"]["dlib-resnet"], identity["judges"]["sface"]
        lines.append(
            f"| {name} | {dlib['identity_pass_rate']:.1%} | {sface['identity_pass_rate']:.1%} | "
            f"{dlib['consistency_same_person'].get('median')} | {dlib['consistency_different_people'].get('median')} |"
        )
    print("\n".join(lines))
    if not args.no_write:
        write_section("verification", "\n".join(lines))


if __name__ == "__main__":
    main()
