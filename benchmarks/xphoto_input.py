"""What OpenCV's learning-based white balance (``xphoto``) is fed, chosen on the selection set.

    python benchmarks/xphoto_input.py [--no-write]

OpenCV's LearningBasedWB was trained on linear raw photos (Gehler-Shi); facekit's photos are 8-bit sRGB. Three ways
to use it, on the known-cast test of ``benchmarks/adjust.py --selection`` (the London/Canada *neutral* photos of
training people, scene and studio backgrounds; the report uses the smiling photos and only the chosen input):

- ``linear 16-bit`` (facekit's ``xphoto`` baseline): the linear-light copy at 16 bits, its gains read back and applied
  in linear light;
- ``encoded 8-bit``: the 8-bit sRGB copy, its gains taken as encoded values (``g ** 2.2`` in linear light);
- ``OpenCV on the 8-bit photo``: ``balanceWhite`` on the 8-bit photo itself, as OpenCV's sample does.

Writes the RESULTS.md section "xphoto-input".
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import cv2
import numpy as np
from adjust import SELECTION_SET, cast_shots, errors
from results import machine, publish

from facekit.apps.adjust import ESTIMATE_SIDE, apply_linear_gains
from facekit.apps.baselines import GlobalWhiteBalance, gains_for
from facekit.images import downscale
from facekit.recipe import DataSection


def encoded_8bit(photo: np.ndarray) -> np.ndarray:
    small = np.ascontiguousarray(downscale(photo, ESTIMATE_SIDE)[..., ::-1])
    balanced = cv2.xphoto.createLearningBasedWB().balanceWhite(small)
    kept = (small.min(axis=2) > 0) & (balanced.max(axis=2) < 255)
    gains = balanced[kept].astype(np.float64).sum(axis=0) / small[kept].astype(np.float64).sum(axis=0)
    return apply_linear_gains(photo, gains_for(1.0 / gains[::-1] ** 2.2))


def opencv_8bit(photo: np.ndarray) -> np.ndarray:
    balanced = cv2.xphoto.createLearningBasedWB().balanceWhite(np.ascontiguousarray(photo[..., ::-1]))
    return np.ascontiguousarray(balanced[..., ::-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--no-write", action="store_true")
    args = parser.parse_args()
    began = time.perf_counter()
    root = DataSection().resolved_root()
    linear = GlobalWhiteBalance("xphoto")
    inputs = {
        "none": lambda photo: photo,
        "linear 16-bit (chosen)": lambda photo: linear.correct(photo)[0],
        "encoded 8-bit": encoded_8bit,
        "OpenCV on the 8-bit photo": opencv_8bit,
    }
    angles: dict[tuple[str, str], list[float]] = {}
    shots, counts = cast_shots(root, SELECTION_SET)  # the casts of benchmarks/adjust.py --selection
    for background, setting, clean, shot in shots:
        for name, correct in inputs.items():
            angles.setdefault((setting, name), []).append(errors(correct(shot), clean, ~background)[0])
    skipped = counts["skipped"]
    lines = [
        "## What xphoto is fed, chosen on the selection set (`python benchmarks/xphoto_input.py`)",
        "",
        f"Machine: {machine()}; {time.perf_counter() - began:.0f} s. OpenCV {cv2.__version__} (contrib). The "
        f"known-cast test of `benchmarks/adjust.py --selection` ({counts['photos'] - skipped} neutral photos of London "
        f"and Canada training people, {skipped} skipped), white balance only; angular error on the person (degrees).",
        "",
        "| background | xphoto input | median angle | mean angle | worst 25 % mean |",
        "|---|---|---|---|---|",
    ]
    for (setting, name), values in angles.items():
        a = np.sort(values)
        lines.append(
            f"| {setting} | {name} | {np.median(a):.2f} | {a.mean():.2f} | {a[int(len(a) * 0.75) :].mean():.2f} |"
        )
    scene = {name: float(np.median(angles[("scene background", name)])) for name in inputs if name != "none"}
    best = min(scene, key=scene.__getitem__)
    lines += [
        "",
        f"Lowest scene-background median: {best} ({scene[best]:.2f} deg; uncorrected "
        f"{np.median(angles[('scene background', 'none')]):.2f}). facekit's `xphoto` baseline feeds the linear 16-bit "
        "copy (what OpenCV's model was trained on).",
    ]
    publish("xphoto-input", lines, write=not args.no_write)


if __name__ == "__main__":
    main()
