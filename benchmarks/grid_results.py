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
import shlex
import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from results import machine, write_section

from facekit.bench import cell_label, pass_rate, train_time

#: How a bench's ``bench.data`` reads in the section.
SET_WORDS = {"lfw-devtest": "LFW DevTest", "helen-test": "HELEN test", "london-smiling": "London smiling"}


def current_rows(rows: list[dict[str, Any]], last: dict[str, Any] | None = None) -> list[dict[str, Any]]:
    """Of a results.jsonl's rows, the ones the last bench showed (``last``: its last.json, the cells' hashes and
    how they were scored; a bench that found every cell cached appends nothing, helper-76); without it, each cell's
    last row scored as the last row was. Rows of earlier runs, retrained or scored another way, are history, not
    this grid (before: every row was listed, a cell twice)."""
    if last is not None:
        scored = {row["recipe_hash"]: row for row in rows if row.get("evaluation") == last.get("evaluation")}
        return [scored[digest] for digest in last.get("recipe_hashes", []) if digest in scored]
    if not rows:
        return []
    latest = {tuple(row["cell"]): row for row in rows}
    evaluation = rows[-1].get("evaluation")
    return [row for row in latest.values() if row.get("evaluation") == evaluation]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("folder", nargs="?", type=Path, default=Path("runs/bench/encoders_x_warps"))
    parser.add_argument("--recipe", default="benchmarks/encoders_x_warps.yaml", help="the bench recipe (for the title)")
    parser.add_argument("--section", default="grid", help="RESULTS.md section name")
    parser.add_argument("--note", default="", help="a sentence on the conditions, added to the paragraph")
    args = parser.parse_args()
    folder = args.folder
    results = folder / "results.jsonl"
    if not results.is_file():
        raise SystemExit(f"{results} not found: run `facekit bench {args.recipe}` first")
    last = json.loads((folder / "last.json").read_text()) if (folder / "last.json").is_file() else None
    rows = current_rows([json.loads(line) for line in results.read_text().splitlines() if line.strip()], last)
    if not rows:
        raise SystemExit(f"{results} holds no cells: nothing written")
    scored = [row for row in rows if "metrics" in row]  # a failed cell (facekit.bench) is listed with its reason
    judges = sorted({j for row in scored for j in row["metrics"]["judges"]})
    evaluation = rows[-1].get("evaluation") or {}
    photos = sorted({row["metrics"]["photos"] for row in scored})
    steps = sorted({row["train_steps"] for row in rows if "train_steps" in row})
    shas = sorted({row["git_sha"][:12] for row in rows})
    keys = ", ".join(item.split("=", 1)[0] for item in rows[0]["cell"])
    where = SET_WORDS.get(evaluation.get("data", "lfw-devtest"), evaluation.get("data"))
    # The heading names both steps (helper-139: it named the bench alone, and this step rerun without --section
    # wrote the default-model grid over the "grid" section).
    written = ["python", "benchmarks/grid_results.py", str(folder)]
    for option, value in (("--recipe", args.recipe), ("--section", args.section)):
        if value != parser.get_default(option.lstrip("-")):
            written += [option, value]
    lines = [
        f"## Grid `{args.recipe}` (`facekit bench {args.recipe}`, then `{shlex.join(written)}`)",
        "",
        f"Machine: {machine()}. Each cell: {' or '.join(map(str, steps))} training steps of the recipe with the "
        f"cell's values of {keys}, then identity pass rates (and median distance or cosine) on "
        f"{' or '.join(map(str, photos))} {where} photos under each judge (-: not judged). Short cells: a ranking "
        "at equal (small) budget, not converged models. Train s: the training's seconds, of which making its pool. "
        f"Plot and report: `{folder / 'pass_rates.png'}`, `{folder / 'report.html'}`. {args.note}".rstrip(),
        "",
        "| cell | recipe hash | "
        + " | ".join(f"{j} pass | {j} median" for j in judges)
        + (" | steps" if len(steps) > 1 else "")
        + " | train s | torch threads"
        + (" | git sha |" if len(shas) > 1 else " |"),
        "|---|---|" + "---|---|" * len(judges) + "---|" * (2 + (len(steps) > 1) + (len(shas) > 1)),
    ]
    for row in rows:
        values = []
        if "failed" in row:
            values.append(" | ".join(["failed"] * 2 * len(judges)))
        for judge in judges if "metrics" in row else []:
            rate = pass_rate(row, judge)
            median = row["metrics"]["judges"].get(judge, {}).get("identity", {}).get("median")
            values.append(f"{'-' if rate is None else f'{rate:.1%}'} | {'-' if median is None else f'{median:.3f}'}")
        lines.append(
            f"| {cell_label(row)} | {row['recipe_hash']} | {' | '.join(values)} | "
            + (f"{row.get('train_steps', '-')} | " if len(steps) > 1 else "")
            + f"{train_time(row)} | {row.get('torch_threads', '')} |"
            + (f" {row['git_sha'][:12]} |" if len(shas) > 1 else "")
        )
    if len(shas) == 1:
        lines.append(f"\ngit sha of every cell: {shas[0]}")
    for row in rows:
        if "failed" in row:
            lines.append(f"\nFailed cell {cell_label(row)}: {row['failed']}")
    print("\n".join(lines))
    write_section(args.section, "\n".join(lines))


if __name__ == "__main__":
    main()
