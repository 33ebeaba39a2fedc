"""The prepare stage on the paper recipe's training photos: throughput and what the filters kept.

    python benchmarks/prepare.py [--recipe recipes/paper.yaml] [--workers 2]

Runs prepare from scratch into a temporary folder (so nothing is resumed) and writes the `prepare` section of
benchmarks/RESULTS.md: photos/s on this machine, per-reason counts, identities per source.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from results import machine, write_section

from facekit.data.prepare import run_prepare
from facekit.recipe import load_recipe, path_override


def by_count(item: tuple[str, int]) -> int:
    return -item[1]


def sources(train: list) -> str:
    """The recipe's training sources in words (the caption said "3+ photos" whatever the recipe took)."""
    words = []
    for source in train:
        if source.source == "lfw":
            at_least = f", people with {source.min_photos}+ photos" if source.min_photos > 1 else ", every person"
            words.append(f"LFW {source.people}{at_least}")
        elif source.source == "london":
            words.append(f"London {source.subset}")
        else:
            words.append(f"folder {source.path}")
    return "; ".join(words)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--recipe", default="recipes/paper.yaml")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--no-write", action="store_true")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as folder:
        plan = load_recipe(args.recipe, [path_override("prepare.output", folder), f"prepare.workers={args.workers}"])
        start = time.perf_counter()
        report = run_prepare(plan, progress=True)
        seconds = time.perf_counter() - start
        sheet = Path(folder) / "contact_sheet.png"
        kept_sheet = Path("runs") / "benchmarks" / "prepare_contact_sheet.png"  # derived from photos: not committed
        kept_sheet.parent.mkdir(parents=True, exist_ok=True)
        if sheet.exists():
            kept_sheet.write_bytes(sheet.read_bytes())
    summary = report.summary
    rules = plan.recipe.prepare
    lines = [
        f"## Prepare (`python benchmarks/prepare.py --recipe {args.recipe} --workers {args.workers}`)",
        "",
        f"Machine: {machine()}. {summary['photos']} photos ({sources(plan.recipe.data.train)}) "
        f"in {seconds:.0f} s end to end: **{summary['photos'] / seconds:.1f} photos/s** with "
        f"{args.workers} worker processes (detection, pose, filters, alignment, per-person morph averages, textures).",
        f"Filters: |yaw| <= {rules.max_yaw_deg} deg, "
        f"|pitch - ({rules.frontal_pitch_deg})| <= {rules.max_pitch_deg} deg, "
        f"mouth open <= {rules.max_mouth_open}, mouth width <= {rules.max_mouth_width}, sharpness >= "
        f"{rules.min_sharpness}, colourfulness >= {rules.min_colourfulness}, interocular >= {rules.min_face_px} px.",
        "",
        "| outcome | photos |",
        "|---|---|",
        *[f"| {status} | {count} |" for status, count in sorted(summary["status"].items())],
        *[f"| rejected: {reason} | {count} |" for reason, count in sorted(summary["reasons"].items(), key=by_count)],
        "",
        f"**{summary['identities_kept']} averaged identities** of {summary['identities_seen']} people: "
        + ", ".join(f"{source} {count}" for source, count in sorted(summary.get("sources", {}).items()))
        + f". Contact sheet of 64 averages with their landmarks: `{kept_sheet}`.",
    ]
    print("\n".join(lines))
    if not args.no_write:
        write_section("prepare", "\n".join(lines))


if __name__ == "__main__":
    main()
