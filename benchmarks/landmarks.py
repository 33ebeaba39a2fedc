"""Landmark accuracy of a detector on iBUG-annotated HELEN test photos (330 in-the-wild faces, 68 points).

    python benchmarks/landmarks.py [--detector dlib] [--set face_detector=cnn] [--limit N]

Normalised mean error (NME): mean point-to-point distance over the 68 points divided by the outer-eye-corner distance
(points 37 and 46, 1-based), the 300-W convention. Two numbers: (a) the full detector (face detector + landmarks) on the
photos where it finds the annotated face, with the share found; (b) the landmark predictor alone, given a box derived
from the annotation (so every photo counts). HELEN's test split is not in 300-W's training set, which dlib's 68-point
predictor was trained on. Writes the `landmarks` section of benchmarks/RESULTS.md.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import numpy as np
from PIL import Image
from rich.progress import track

import facekit
from facekit.data.sources import read_ibug_pts
from facekit.normalize import box_overlap

sys.path.insert(0, str(Path(__file__).resolve().parent))
from results import machine, write_section

DATA = Path(os.environ.get("FACEKIT_DATA", Path(__file__).resolve().parents[2] / "shared" / "data"))


def nme(predicted: np.ndarray, truth: np.ndarray) -> float:
    return float(np.linalg.norm(predicted - truth, axis=1).mean() / np.linalg.norm(truth[36] - truth[45]))


def section(args: argparse.Namespace) -> str:
    """The RESULTS.md section a run writes: one per detector."""
    return f"landmarks-{args.detector}"


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--detector", default="dlib")
    parser.add_argument("--set", action="append", default=[], help="detector param, e.g. face_detector=cnn")
    parser.add_argument("--limit", type=int, default=None)
    parser.add_argument("--no-write", action="store_true")
    args = parser.parse_args()
    params = dict(item.split("=", 1) for item in args.set)
    detector = facekit.load_component("detector", args.detector, **params)
    photos = sorted((DATA / "ibug68" / "helen_test").glob("*.jpg"))[: args.limit]
    if not photos:  # before: "0 photos ... nan" written over the published figures
        raise SystemExit(f"no HELEN test photos under {DATA / 'ibug68' / 'helen_test'} (set FACEKIT_DATA)")
    found_errors, box_errors, missed = [], [], 0
    start = time.perf_counter()
    for photo in track(photos, description="detecting"):
        image = np.asarray(Image.open(photo).convert("RGB"))
        truth = read_ibug_pts(photo.with_suffix(".pts"))
        truth_box = (*truth.min(axis=0), *truth.max(axis=0))
        faces = detector.detect_array(image)
        best = max(faces, key=lambda f: box_overlap(f.box, truth_box), default=None)
        if best is None or box_overlap(best.box, truth_box) < 0.3:
            missed += 1
        else:
            found_errors.append(nme(best.landmarks, truth))
        box_errors.append(nme(detector.landmarks_in_box(image, truth_box), truth))
    seconds = time.perf_counter() - start
    found, boxed = np.array(found_errors), np.array(box_errors)
    summary = [
        f"## Landmarks on HELEN test (`python benchmarks/landmarks.py --detector {args.detector}"
        + "".join(f" --set {s}" for s in args.set)
        + "`)",
        "",
        f"Machine: {machine()}. {len(photos)} photos, {seconds:.1f} s in all ({len(photos) / seconds:.1f} photos/s, "
        "1 process). NME = mean error / outer-eye-corner distance. Target: <= 0.08.",
        "",
        "| setting | photos | NME mean | NME median | share with NME > 0.1 |",
        "|---|---|---|---|---|",
        f"| detector + landmarks (faces found: {len(found)}/{len(photos)}) | {len(found)} | {found.mean():.4f} | "
        f"{np.median(found):.4f} | {(found > 0.1).mean():.1%} |",
        f"| landmarks given the annotation's bounding box | {len(boxed)} | {boxed.mean():.4f} | "
        f"{np.median(boxed):.4f} | {(boxed > 0.1).mean():.1%} |",
    ]
    print("\n".join(summary))
    if not args.no_write:
        write_section(section(args), "\n".join(summary))


if __name__ == "__main__":
    main()
