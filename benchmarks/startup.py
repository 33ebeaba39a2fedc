"""Start-up cost of the CLI and the package: `facekit --help` and `import facekit`, median of N runs.

    python benchmarks/startup.py [--runs 5] [--no-write]

Target (issue 2): `facekit --help` under 0.5 s. Writes the `startup` section of benchmarks/RESULTS.md.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from results import machine, publish


def median_seconds(command: list[str], runs: int) -> tuple[float, list[float]]:
    subprocess.run(command, capture_output=True, check=True)  # warm the file cache once, untimed
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        subprocess.run(command, capture_output=True, check=True)
        times.append(time.perf_counter() - start)
    return statistics.median(times), times


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--no-write", action="store_true", help="do not rewrite RESULTS.md")
    args = parser.parse_args()
    exe = str(Path(sys.executable).with_name("facekit"))
    rows = [
        ("python -c pass (anchor)", [sys.executable, "-c", "pass"]),
        ("python -c 'import facekit'", [sys.executable, "-c", "import facekit"]),
        ("facekit --help", [exe, "--help"]),
        ("facekit list", [exe, "list"]),
    ]
    lines = [
        "## Start-up (`python benchmarks/startup.py`)",
        "",
        f"Machine: {machine()}. Median of {args.runs} runs after one untimed warm-up.",
        "Target: `facekit --help` < 0.5 s.",
        "",
        "| command | median (s) | all runs (s) |",
        "|---|---|---|",
    ]
    for label, command in rows:
        median, times = median_seconds(command, args.runs)
        print(f"{label:32s} {median:.3f} s")
        lines.append(f"| `{label}` | {median:.3f} | {', '.join(f'{t:.3f}' for t in times)} |")
    publish("startup", lines, write=not args.no_write)  # (before: no --no-write, a trial run rewrote the section)


if __name__ == "__main__":
    main()
