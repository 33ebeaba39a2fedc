"""Time per face of the normalized face after detection, and of the photo detail's map (facekit.detail.photo_map).

    python benchmarks/normalize_speed.py [--photos 64] [--batch-size 16] [--repeats 3] [--sizes 224 448]

On LFW peopleDevTest photos with the shipped model, one torch thread: each photo is detected once (remembered), then
``Normalizer.normalize_many`` is timed with the shipped settings (photo detail and shape), with the decoder's face
alone (``--detail 0``) and with the shipped settings at each of ``--sizes`` (``--size``), median of ``--repeats``
passes. The map from each output pixel to the photo (a smoothed thin-plate spline through the 68 landmark pairs) is
timed two ways on the same faces: evaluated on the pixel grid
(``photo_map``, separable distances) and at the grid's pixels as arbitrary query points (the anchor: what
``photo_map`` did before 2026-12-01), with the largest difference between the two. Writes the ``normalize-speed``
section of benchmarks/RESULTS.md.
"""

from __future__ import annotations

import argparse
import copy
import statistics
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
import numpy as np
import torch
from quality import SharedDetections
from results import machine, publish

from facekit.detail import DECODER_ONLY, MAP_SMOOTHING, photo_map
from facekit.evaluate import lfw_devtest
from facekit.images import load_rgb
from facekit.normalize import Normalizer
from facekit.recipe import DataSection
from facekit.warp import interpolate_spline


def map_at_points(photo_landmarks: np.ndarray, output_landmarks: np.ndarray, size: int) -> np.ndarray:
    """The same spline as photo_map, evaluated at the grid's pixels as arbitrary queries: (S, S, 2) float32."""
    ys, xs = np.mgrid[0:size, 0:size].astype(np.float64)
    queries = torch.from_numpy(np.stack([xs.ravel(), ys.ravel()], axis=1))[None]
    centers = torch.from_numpy(np.asarray(output_landmarks, np.float64))[None]
    values = torch.from_numpy(np.asarray(photo_landmarks, np.float64))[None]
    mapped = interpolate_spline(centers, values, queries, order=2, regularization=MAP_SMOOTHING)[0].numpy()
    return mapped.reshape(size, size, 2).astype(np.float32)


def timed(function: Any, repeats: int) -> float:
    """Median seconds of ``repeats`` calls."""
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        function()
        times.append(time.perf_counter() - started)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--photos", type=int, default=64)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--sizes", type=int, nargs="*", default=[224, 448], help="output sizes timed beside 112 px")
    parser.add_argument("--no-write", action="store_true", help="do not rewrite RESULTS.md")
    args = parser.parse_args()
    torch.set_num_threads(1)

    photos = lfw_devtest(DataSection().resolved_root(), args.photos)
    images = [load_rgb(p.path)[0] for p in photos]
    names = [p.path.stem for p in photos]
    shipped = Normalizer.from_checkpoint()
    alone = Normalizer.from_checkpoint(detail=DECODER_ONLY)
    shipped.detector = alone.detector = SharedDetections(shipped.detector, images)  # detected once, not timed
    outcomes = shipped.normalize_many(images, names, args.batch_size)  # detects, and warms up
    faces = [o.face for o in outcomes if o.face is not None]
    count = len(faces)

    def run(normalizer: Normalizer) -> float:
        return timed(lambda: normalizer.normalize_many(images, names, args.batch_size), args.repeats)

    per_face = {"shipped (photo detail + shape)": run(shipped), "decoder's face alone (--detail 0)": run(alone)}
    for side in args.sizes:  # the same faces rendered at another size (--size)
        sized = copy.copy(shipped)
        sized.size = side
        per_face[f"shipped at {side} px (--size {side})"] = run(sized)
    size = shipped.image_size
    pairs = [(f.source_landmarks, f.landmarks) for f in faces]
    grid_s = timed(lambda: [photo_map(s, t, size) for s, t in pairs], args.repeats)
    points_s = timed(lambda: [map_at_points(s, t, size) for s, t in pairs], args.repeats)
    difference = max(
        float(np.abs(np.stack(photo_map(s, t, size), -1) - map_at_points(s, t, size)).max()) for s, t in pairs
    )
    anchor = "at the grid's pixels as arbitrary points (anchor; before 2026-12-01)"

    lines = [
        "## Time per face after detection (`python benchmarks/normalize_speed.py`)",
        "",
        f"Machine: {machine()}; one torch thread. {count} of {len(photos)} LFW peopleDevTest photos normalized "
        f"(shipped model, {size} px, batches of {args.batch_size}), each detected once beforehand; median of "
        f"{args.repeats} passes. (Until 2026-12-05 the detections were not remembered: the pipeline hands a "
        "detector a copy of each photo, which the benchmarks' wrapper did not know again, so earlier runs of this "
        "section, and quality.py's ms/photo columns, counted detection too.)",
        "",
        "| pipeline | ms per face |",
        "|---|---|",
        *(f"| {name} | {1000 * seconds / count:.1f} |" for name, seconds in per_face.items()),
        "",
        "The photo detail's output-to-photo map (thin-plate spline through the 68 landmark pairs, float64):",
        "",
        "| evaluation | ms per face | ratio |",
        "|---|---|---|",
        f"| {anchor} | {1000 * points_s / count:.1f} | 1.00 |",
        f"| on the pixel grid (`photo_map`, separable distances) | {1000 * grid_s / count:.1f} | "
        f"{grid_s / points_s:.2f} |",
        "",
        f"Largest difference between the two maps on these faces: {difference:.1e} px (both kept as float32).",
    ]
    publish("normalize-speed", lines, write=not args.no_write)


if __name__ == "__main__":
    main()
