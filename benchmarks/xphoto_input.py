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
from adjust import SELECTION_SET, background_mask, blackbody_rgb, cast, errors
from results import machine, publish
from rich.progress import track

from facekit.apps.adjust import ESTIMATE_SIDE, apply_linear_gains
from facekit.apps.baselines import GlobalWhiteBalance, gains_for
from facekit.data.sources import lfw_photos, london_photos
from facekit.images import downscale, load_rgb
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
    # The casts and scenes exactly as benchmarks/adjust.py --selection draws them (same seed, same order).
    rng = np.random.default_rng(2017)
    london = [photo for subset, count in SELECTION_SET.items() for photo in london_photos(root, subset)[:count]]
    scenes = lfw_photos(root, "peopleDevTest.txt")
    picks = rng.choice(len(scenes), size=len(london), replace=False)
    angles: dict[tuple[str, str], list[float]] = {}
    skipped = 0
    for photo, pick in track(list(zip(london, picks, strict=True)), description=f"{len(london)} photos"):
        original, scene_photo = load_rgb(photo.path)[0], load_rgb(scenes[pick].path)[0]
        if original is None or scene_photo is None:
            skipped += 1
            continue
        background = background_mask(original)
        if not 0.1 < background.mean() < 0.85:
            skipped += 1
            continue
        scene = cv2.resize(scene_photo, original.shape[1::-1], interpolation=cv2.INTER_CUBIC)
        composite = np.where(background[..., None], scene, original)
        illuminant = blackbody_rgb(rng.uniform(2500, 10000)) * np.array([1.0, 1.0 + rng.uniform(-0.03, 0.03), 1.0])
        ev = rng.uniform(-1.5, 1.5)
        for setting, clean in (("scene background", composite), ("studio background", original)):
            shot = cast(clean, illuminant / illuminant.mean(), ev)
            for name, correct in inputs.items():
                angles.setdefault((setting, name), []).append(errors(correct(shot), clean, ~background)[0])
    lines = [
        "## What xphoto is fed, chosen on the selection set (`python benchmarks/xphoto_input.py`)",
        "",
        f"Machine: {machine()}; {time.perf_counter() - began:.0f} s. OpenCV {cv2.__version__} (contrib). The "
        f"known-cast test of `benchmarks/adjust.py --selection` ({len(london) - skipped} neutral photos of London "
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
