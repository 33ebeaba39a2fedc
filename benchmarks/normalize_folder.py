"""Time per photo of `facekit normalize` on a folder, detection and writing included: PNG level and parallel detection.

    python benchmarks/normalize_folder.py [--photos 64] [--repeats 3]

What a user waits for once the model is loaded: :func:`facekit.batch.normalize_folder` (as `facekit normalize` runs
it: detection, the normalized face, its record, NAME.png, NAME_side.png, the manifest and grid.png) on ``--photos``
LFW peopleDevTest photos into a fresh folder, with the shipped model and settings and torch's default threads. Each
variant (the zlib level of :data:`facekit.batch.PNG_LEVEL`; a batch's photos detected one at a time or on torch's
threads, :func:`facekit.normalize.detection_threads`) is timed in turn, ``--repeats`` rounds in rotating order
(median), with the seconds spent encoding PNGs and the bytes written. The anchor is what facekit did before
2026-12-05: PIL's default level 6, one photo at a time. Writes the ``normalize-folder`` section of
benchmarks/RESULTS.md.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # as the CLI runs torch (facekit.cli; RESULTS.md "omp-wait")
import numpy as np
import torch
from PIL import Image
from results import machine, publish

import facekit.batch
import facekit.normalize
from facekit.evaluate import lfw_devtest
from facekit.normalize import Normalizer, default_model_path
from facekit.recipe import DataSection

#: label -> (PNG zlib level, photos detected in parallel); the first is the anchor.
VARIANTS = {
    "PNG level 6, detection one photo at a time (anchor: before)": (6, False),
    "PNG level 3, one at a time": (3, False),
    "PNG level 3, detection in parallel (shipped)": (3, True),
    "PNG level 1, in parallel": (1, True),
}


def one_folder(normalizer: Normalizer, photos: list[str], level: int, parallel: bool, scratch: Path) -> dict[str, Any]:
    """One `facekit normalize` of ``photos`` into a fresh folder at PNG ``level``, the photos of a batch detected in
    parallel or one at a time: seconds, PNG seconds, bytes."""
    encode, threads, spent = facekit.batch.png_bytes, facekit.normalize.detection_threads, [0.0]

    def timed_png(*args: Any, **kwargs: Any) -> bytes:
        started = time.perf_counter()
        data = encode(*args, **kwargs)
        spent[0] += time.perf_counter() - started
        return data

    out = scratch / f"level-{level}-{parallel}"
    shutil.rmtree(out, ignore_errors=True)
    facekit.batch.PNG_LEVEL, facekit.batch.png_bytes = level, timed_png
    if not parallel:
        facekit.normalize.detection_threads = lambda detector: 1
    try:
        started = time.perf_counter()
        summary = facekit.batch.normalize_folder(normalizer, photos, out, default_model_path())
        seconds = time.perf_counter() - started
    finally:
        facekit.batch.png_bytes, facekit.normalize.detection_threads = encode, threads
    made = [Path(row.output) for row in summary.rows if row.output is not None]
    png = sum(path.stat().st_size for path in out.glob("*.png"))
    pixels = hashlib.sha256(b"".join(np.asarray(Image.open(path)).tobytes() for path in made)).hexdigest()
    return {"seconds": seconds, "png_seconds": spent[0], "png_bytes": png, "made": len(made), "pixels": pixels}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--photos", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--no-write", action="store_true", help="do not rewrite RESULTS.md")
    args = parser.parse_args()

    shipped_level = facekit.batch.PNG_LEVEL
    photos = [str(p.path) for p in lfw_devtest(DataSection().resolved_root(), args.photos)]
    normalizer = Normalizer.from_checkpoint()
    runs: dict[str, list[dict[str, Any]]] = {label: [] for label in VARIANTS}
    labels = list(VARIANTS)
    with tempfile.TemporaryDirectory(prefix="facekit-bench-") as folder:
        one_folder(normalizer, photos[:8], shipped_level, True, Path(folder))  # warm-up: first calls, caches
        for round_ in range(args.repeats):
            for label in labels[round_ % len(labels) :] + labels[: round_ % len(labels)]:
                runs[label].append(one_folder(normalizer, photos, *VARIANTS[label], Path(folder)))
    facekit.batch.PNG_LEVEL = shipped_level

    def median(label: str, key: str) -> float:
        return statistics.median(run[key] for run in runs[label])

    count = len(photos)
    anchor = median(labels[0], "seconds")
    rows = [
        f"| {label} | {1000 * median(label, 'seconds') / count:.0f} | {1000 * median(label, 'png_seconds') / count:.1f}"
        f" | {median(label, 'png_bytes') / count / 1024:.0f} | {median(label, 'seconds') / anchor:.2f} |"
        for label in labels
    ]
    made = min(run["made"] for label_runs in runs.values() for run in label_runs)
    same = len({run["pixels"] for label_runs in runs.values() for run in label_runs}) == 1
    lines = [
        "## `facekit normalize` on a folder: PNG level, parallel detection (`python benchmarks/normalize_folder.py`)",
        "",
        f"Machine: {machine()}; torch threads: {torch.get_num_threads()}. {count} LFW peopleDevTest photos "
        f"({made} with an output) normalized into a fresh folder by `facekit.batch.normalize_folder` (detection, "
        "the shipped model and settings, records, NAME.png, NAME_side.png, manifest, grid.png), the model loaded "
        f"beforehand; median of {args.repeats} rounds in rotating order. Ratio: time per photo against the anchor. "
        f"The normalized faces' pixels are {'the same in every run' if same else 'NOT the same in every run'}.",
        "",
        "| variant | ms per photo | of which PNG encoding (ms) | KiB of PNG per photo | ratio |",
        "|---|---|---|---|---|",
        *rows,
    ]
    publish("normalize-folder", lines, write=not args.no_write)


if __name__ == "__main__":
    main()
