"""Time per photo of `facekit normalize` on a folder, detection and writing included, by the PNG files' zlib level.

    python benchmarks/normalize_folder.py [--photos 64] [--repeats 3] [--levels 6 3 1]

What a user waits for once the model is loaded: :func:`facekit.batch.normalize_folder` (as `facekit normalize` runs
it: detection, the normalized face, its record, NAME.png, NAME_side.png, the manifest and grid.png) on ``--photos``
LFW peopleDevTest photos into a fresh folder, with the shipped model and settings and torch's default threads. Each
zlib level of :data:`facekit.batch.PNG_LEVEL` is timed in turn, ``--repeats`` rounds in rotating order (median),
with the seconds spent encoding PNGs and the bytes written; the anchor is the first level (6: PIL's default, what
facekit wrote before 2026-12-05). Writes the ``normalize-folder`` section of benchmarks/RESULTS.md.
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
import torch
from results import machine, publish

import facekit.batch
from facekit.evaluate import lfw_devtest
from facekit.normalize import Normalizer, default_model_path
from facekit.recipe import DataSection


def one_folder(normalizer: Normalizer, photos: list[str], level: int, scratch: Path) -> dict[str, Any]:
    """One `facekit normalize` of ``photos`` into a fresh folder at PNG ``level``: seconds, PNG seconds, bytes."""
    encode, spent = facekit.batch.png_bytes, [0.0]

    def timed_png(*args: Any, **kwargs: Any) -> bytes:
        started = time.perf_counter()
        data = encode(*args, **kwargs)
        spent[0] += time.perf_counter() - started
        return data

    out = scratch / f"level-{level}"
    shutil.rmtree(out, ignore_errors=True)
    facekit.batch.PNG_LEVEL, facekit.batch.png_bytes = level, timed_png
    try:
        started = time.perf_counter()
        summary = facekit.batch.normalize_folder(normalizer, photos, out, default_model_path())
        seconds = time.perf_counter() - started
    finally:
        facekit.batch.png_bytes = encode
    made = sum(1 for row in summary.rows if row.status == "ok")
    png = sum(path.stat().st_size for path in out.glob("*.png"))
    return {"seconds": seconds, "png_seconds": spent[0], "png_bytes": png, "made": made}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--photos", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--levels", type=int, nargs="+", default=[6, 3, 1], help="zlib levels; the first is the anchor")
    parser.add_argument("--no-write", action="store_true", help="do not rewrite RESULTS.md")
    args = parser.parse_args()
    if any(not 0 <= level <= 9 for level in args.levels):
        parser.error("--levels: zlib levels are 0-9")

    shipped_level = facekit.batch.PNG_LEVEL
    photos = [str(p.path) for p in lfw_devtest(DataSection().resolved_root(), args.photos)]
    normalizer = Normalizer.from_checkpoint()
    runs: dict[int, list[dict[str, Any]]] = {level: [] for level in args.levels}
    with tempfile.TemporaryDirectory(prefix="facekit-bench-") as folder:
        one_folder(normalizer, photos[:8], shipped_level, Path(folder))  # warm-up: first calls, caches
        for round_ in range(args.repeats):
            turn = args.levels[round_ % len(args.levels) :] + args.levels[: round_ % len(args.levels)]
            for level in turn:
                runs[level].append(one_folder(normalizer, photos, level, Path(folder)))
    facekit.batch.PNG_LEVEL = shipped_level

    def median(level: int, key: str) -> float:
        return statistics.median(run[key] for run in runs[level])

    count = len(photos)
    anchor = median(args.levels[0], "seconds")
    rows = []
    for level in args.levels:
        seconds, png = median(level, "seconds"), median(level, "png_seconds")
        mark = " (anchor: PIL's default, before)" if level == args.levels[0] else ""
        mark += " (shipped)" if level == shipped_level else ""
        rows.append(
            f"| {level}{mark} | {1000 * seconds / count:.0f} | {1000 * png / count:.1f} | "
            f"{median(level, 'png_bytes') / count / 1024:.0f} | {seconds / anchor:.2f} |"
        )
    made = min(run["made"] for level_runs in runs.values() for run in level_runs)
    lines = [
        "## `facekit normalize` on a folder, by the PNG files' zlib level (`python benchmarks/normalize_folder.py`)",
        "",
        f"Machine: {machine()}; torch threads: {torch.get_num_threads()}. {count} LFW peopleDevTest photos "
        f"({made} with an output) normalized into a fresh folder by `facekit.batch.normalize_folder` (detection, "
        "the shipped model and settings, records, NAME.png, NAME_side.png, manifest, grid.png), the model loaded "
        f"beforehand; median of {args.repeats} rounds in rotating order. Ratio: time per photo against the anchor.",
        "",
        "| PNG zlib level | ms per photo | of which PNG encoding (ms) | KiB of PNG per photo | ratio |",
        "|---|---|---|---|---|",
        *rows,
    ]
    publish("normalize-folder", lines, write=not args.no_write)


if __name__ == "__main__":
    main()
