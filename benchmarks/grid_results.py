"""Write a `facekit bench` grid into benchmarks/RESULTS.md.

    python benchmarks/grid_results.py [runs/bench/encoders_x_warps]
    python benchmarks/grid_results.py runs/bench/default_model_grid --recipe benchmarks/default_model_grid.yaml \
        --section default-model-grid

Reads the bench's results.jsonl (one row per cell: overrides, recipe hash, git sha, device, metrics) and writes the
section: identity pass rates and median similarity under each judge and training time per cell.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from results import machine, write_section

from facekit.bench import cell_label, pass_rate


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("folder", nargs="?", type=Path, default=Path("runs/bench/encoders_x_warps"))
    parser.add_argument("--recipe", default="benchmarks/encoders_x_warps.yaml", help="the bench recipe (for the title)")
    parser.add_argument("--section", default="grid", help="RESULTS.md section name")
    parser.add_argument("--note", default="", help="a sentence on the conditions, added to the paragraph")
    args = parser.parse_args()
    folder = args.folder
    rows = [json.loads(line) for line in (folder / "results.jsonl").read_text().splitlines() if line.strip()]
    judges = sorted({j for row in rows for j in row["metrics"]["judges"]})
    first = rows[0]
    keys = ", ".join(item.split("=", 1)[0] for item in first["cell"])
    lines = [
        f"## Grid `{args.recipe}` (`facekit bench {args.recipe}`)",
        "",
        f"Machine: {machine()}. Each cell: {first['train_steps']} training steps of the recipe with the cell's "
        f"values of {keys}, then identity pass rates (and median distance or cosine) on {first['metrics']['photos']} "
        "LFW DevTest photos under each judge. Short cells: a ranking at equal (small) budget, not converged models. "
        f"Plot and report: `{folder / 'pass_rates.png'}`, `{folder / 'report.html'}`. {args.note}".rstrip(),
        "",
        "| cell | recipe hash | "
        + " | ".join(f"{j} pass | {j} median" for j in judges)
        + " | train s | torch threads | git sha |",
        "|---|---|" + "---|---|" * len(judges) + "---|---|---|",
    ]
    for row in rows:
        values = []
        for judge in judges:
            metrics = row["metrics"]["judges"].get(judge, {})
            median = metrics.get("identity", {}).get("median")
            values.append(f"{(pass_rate(row, judge) or 0):.1%} | {'' if median is None else f'{median:.3f}'}")
        lines.append(
            f"| {cell_label(row)} | {row['recipe_hash']} | {' | '.join(values)} | {row['train_seconds']} | "
            f"{row.get('torch_threads', '')} | {row['git_sha'][:12]} |"
        )
    print("\n".join(lines))
    write_section(args.section, "\n".join(lines))


if __name__ == "__main__":
    main()
