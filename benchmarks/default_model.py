"""Identity preservation of the default model on LFW DevTest people (never trained on), beside its ablations.

    python benchmarks/default_model.py [--max-photos 500] [--ablation NAME=CHECKPOINT ...]

The paper's Fig. 12 measurement: for each photo, the distance between the photo and its normalized face under a
judge encoder; the pass rate is the share within the judge's threshold. Judges: dlib's ResNet (the training encoder,
Euclidean 0.6) and SFace (never used in training, cosine 0.363). Writes metrics and reports under
runs/eval/default-model-benchmark/ and the `default-model` section of benchmarks/RESULTS.md.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from results import machine, write_section

import facekit
from facekit.detail import DECODER_ONLY
from facekit.evaluate import Judge, evaluate_normalizer, lfw_devtest
from facekit.normalize import Normalizer, default_model_path
from facekit.recipe import DataSection


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--max-photos", type=int, default=500)
    parser.add_argument("--ablation", action="append", default=[], help="NAME=CHECKPOINT, e.g. no-identity=runs/...")
    parser.add_argument("--out", type=Path, default=Path("runs/eval/default-model-benchmark"))
    parser.add_argument("--no-write", action="store_true")
    args = parser.parse_args()
    models = [("default model", default_model_path())] + [
        (name, Path(path)) for name, path in (item.split("=", 1) for item in args.ablation)
    ]
    judges = [Judge(name, facekit.load_component("encoder", name).eval()) for name in ("dlib-resnet", "sface")]
    photos = lfw_devtest(DataSection().resolved_root(), args.max_photos)
    rows = []
    for name, path in models:
        start = time.perf_counter()
        folder = args.out / name.replace(" ", "-")
        normalizer = Normalizer.from_checkpoint(path, detail=DECODER_ONLY)  # the model's own faces
        metrics = evaluate_normalizer(normalizer, photos, judges, folder, progress=True)
        rows.append((name, path, metrics, time.perf_counter() - start, folder))
    lines = [
        f"## Default model (`python benchmarks/default_model.py --max-photos {args.max_photos}"
        + "".join(f" --ablation {a}" for a in args.ablation)
        + "`)",
        "",
        f"Machine: {machine()}. {len(photos)} photos of LFW peopleDevTest.txt people (never trained on), spread evenly "
        "over the list. Pass rate: share of photos whose normalized face is within the judge's threshold of the photo "
        "(dlib: Euclidean distance < 0.6; SFace: cosine similarity > 0.363). Targets (issue 6): >= 95 % and >= 90 %.",
        "",
        "| model | normalized | dlib-resnet pass | dlib median distance | SFace pass | SFace median cosine | "
        "output landmarks found / NME vs predicted | seconds |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for name, path, metrics, seconds, _ in rows:
        dlib, sface = metrics["judges"]["dlib-resnet"], metrics["judges"]["sface"]
        marks = metrics["landmarks"]
        lines.append(
            f"| {name} (`{path}`) | {metrics['normalized']}/{metrics['photos']} | {dlib['identity_pass_rate']:.1%} | "
            f"{dlib['identity'].get('median')} | {sface['identity_pass_rate']:.1%} | "
            f"{sface['identity'].get('median')} | "
            f"{marks['detected']}/{marks['of']}, {marks['nme_vs_predicted'].get('median')} | {seconds:.0f} |"
        )
    lines += [
        "",
        "Consistency (normalized faces of two photos of one person vs of two different people, median):",
        "",
        "| model | judge | same person | different people | same-person pass | different-people reject |",
        "|---|---|---|---|---|---|",
    ]
    for name, _, metrics, _, _ in rows:
        for judge, values in metrics["judges"].items():
            lines.append(
                f"| {name} | {judge} | {values['consistency_same_person'].get('median')} | "
                f"{values['consistency_different_people'].get('median')} | {values['same_person_pass_rate']} | "
                f"{values['different_people_reject_rate']} |"
            )
    lines += ["", "Reports: " + ", ".join(f"`{folder / 'report.html'}`" for *_, folder in rows) + "."]
    print("\n".join(lines))
    if not args.no_write:
        write_section("default-model", "\n".join(lines))


if __name__ == "__main__":
    main()
