"""Write the encoders x warps grid (`facekit bench benchmarks/encoders_x_warps.yaml`) into benchmarks/RESULTS.md.

    python benchmarks/grid_results.py [runs/bench/encoders_x_warps]

Reads the bench's results.jsonl (one row per cell: overrides, recipe hash, git sha, device, metrics) and writes the
`grid` section: identity pass rates under both judges and training time per cell.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from results import machine, write_section

from facekit.bench import cell_label, pass_rate


def main() -> None:
    folder = Path(sys.argv[1] if len(sys.argv) > 1 else "runs/bench/encoders_x_warps")
    rows = [json.loads(line) for line in (folder / "results.jsonl").read_text().splitlines() if line.strip()]
    judges = sorted({j for row in rows for j in row["metrics"]["judges"]})
    first = rows[0]
    lines = [
        "## Encoders x warpers grid (`facekit bench benchmarks/encoders_x_warps.yaml`)",
        "",
        f"Machine: {machine()}. Each cell: {first['train_steps']} training steps (batch 32, 112 px, identity loss from "
        "the cell's encoder) on the default model's prepared set, then identity pass rates on "
        f"{first['metrics']['photos']} LFW DevTest photos under both judges. Short cells: a ranking of the "
        "combinations at equal (small) budget, not converged models. Plot and report: "
        f"`{folder / 'pass_rates.png'}`, `{folder / 'report.html'}`.",
        "",
        "| encoder, warper | recipe hash | " + " | ".join(f"{j} pass" for j in judges) + " | train s | git sha |",
        "|---|---|" + "---|" * len(judges) + "---|---|",
    ]
    for row in rows:
        rates = " | ".join(f"{(pass_rate(row, j) or 0):.1%}" for j in judges)
        lines.append(
            f"| {cell_label(row)} | {row['recipe_hash']} | {rates} | {row['train_seconds']} | {row['git_sha'][:12]} |"
        )
    print("\n".join(lines))
    write_section("grid", "\n".join(lines))


if __name__ == "__main__":
    main()
