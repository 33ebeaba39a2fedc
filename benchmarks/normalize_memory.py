"""Peak memory of `facekit normalize` with 10 and 200 photos: it streams batches, so the peak should not grow with
the number of photos (the reliability promise "bounded cost for any input").

    python benchmarks/normalize_memory.py [--counts 10 200] [--batch-size 16] [--sizes 112 1024]

Each count runs the real command in a fresh process on LFW peopleDevTest photos (symlinked into a temporary folder);
peak RSS comes from the kernel's accounting of that process (``VmHWM``). ``--sizes``: each count also at each output
size (``facekit normalize --size N``; memory grows with size x batch). Writes the `normalize-memory` section of
benchmarks/RESULTS.md, with the ratio to the first row (the anchor, same run).
"""

from __future__ import annotations

import argparse
import shlex
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from results import machine, publish

from facekit.evaluate import lfw_devtest
from facekit.recipe import DataSection


def peak_rss_mb(command: list[str], poll_s: float = 0.02) -> tuple[float, float, int]:
    """(peak RSS in MB, seconds, exit code) of ``command`` run as a child process.

    The peak is the kernel's high-water mark of the child's own address space (``VmHWM`` in /proc/PID/status, read
    until it exits; it only grows). Not ``ru_maxrss``: a forked child starts as a copy of this process and exec keeps
    that high-water mark, so a large benchmark process would be counted as the child's peak."""
    started = time.perf_counter()
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    status_file = Path(f"/proc/{process.pid}/status")
    peak_kb = 0
    while process.poll() is None:
        try:
            for line in status_file.read_text().splitlines():
                if line.startswith("VmHWM:"):
                    peak_kb = max(peak_kb, int(line.split()[1]))
        except (FileNotFoundError, ProcessLookupError, ValueError):
            pass
        time.sleep(poll_s)
    return peak_kb / 1024, time.perf_counter() - started, int(process.returncode)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--counts", type=int, nargs="+", default=[10, 200])
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--sizes", type=int, nargs="+", default=[], help="output sizes (default: the model's)")
    parser.add_argument("--no-write", action="store_true")
    args = parser.parse_args()
    photos = lfw_devtest(DataSection().resolved_root(), max(args.counts))
    exe = Path(sys.executable).with_name("facekit")
    rows = []
    for count, size in [(c, s) for c in args.counts for s in args.sizes or [None]]:
        with tempfile.TemporaryDirectory() as folder:
            inputs = Path(folder) / "in"
            inputs.mkdir()
            for photo in photos[:count]:
                (inputs / photo.path.name).symlink_to(photo.path.resolve())
            run = [str(exe), "normalize", str(inputs), "-o", str(Path(folder) / "out")]
            run += [] if size is None else ["--size", str(size)]
            peak, seconds, code = peak_rss_mb([*run, "--batch-size", str(args.batch_size)])
        count = len(photos[:count])  # the photos there are (before: the count asked for, past DevTest's 3,708)
        rows.append((count, "the model's" if size is None else f"{size} px", peak, seconds, code))
        print(f"{count} photos at {rows[-1][1]}: peak RSS {peak:.0f} MB, {seconds:.1f} s, exit {code}")
    anchor = rows[0][2]
    command = shlex.join(["python", "benchmarks/normalize_memory.py", *sys.argv[1:]])
    lines = [
        f"## Peak memory of `facekit normalize` (`{command}`)",
        "",
        f"Machine: {machine()}. LFW peopleDevTest photos, batch size {args.batch_size}, each count in a fresh process "
        f"(the shipped model loaded); ratio to the first row, same invocation.",
        "",
        "| photos | output size | peak RSS (MB) | ratio | seconds | exit code |",
        "|---|---|---|---|---|---|",
    ]
    lines += [f"| {c} | {z} | {p:.0f} | {p / anchor:.2f} | {s:.1f} | {code} |" for c, z, p, s, code in rows]
    publish("normalize-memory", lines, write=not args.no_write)


if __name__ == "__main__":
    main()
