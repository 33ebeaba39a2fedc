"""`facekit normalize` on a quiet and on a busy machine, with OpenMP's default spin-waiting and with the passive
waiting facekit's CLI now sets (OMP_WAIT_POLICY=PASSIVE unless the user set it).

    python benchmarks/omp_wait.py [--photos 40]

Busy: two other processes spin on the cores meanwhile (what a training in the background does). Each cell runs the
real command in a fresh process on LFW peopleDevTest photos; seconds per photo, model loading included. The anchor is
the quiet machine with OpenMP's default, same run. Writes the `omp-wait` section of benchmarks/RESULTS.md.
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from results import machine, publish

from facekit.evaluate import lfw_devtest
from facekit.recipe import DataSection


def spin(stop: float) -> None:
    while time.monotonic() < stop:
        pass


def run(inputs: Path, policy: str, busy: bool) -> float:
    env = {**os.environ, "OMP_WAIT_POLICY": policy}
    burners = []
    if busy:
        stop = time.monotonic() + 600
        burners = [multiprocessing.Process(target=spin, args=(stop,), daemon=True) for _ in range(os.cpu_count() or 2)]
        for burner in burners:
            burner.start()
    try:
        with tempfile.TemporaryDirectory() as out:
            command = [str(Path(sys.executable).with_name("facekit")), "normalize", str(inputs), "-o", out]
            started = time.perf_counter()
            done = subprocess.run(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
            seconds = time.perf_counter() - started
            if done.returncode not in (0, 3):  # 3: some photos had no face, the others were normalized
                # Before: a failing command's second was published as the policy's time.
                raise SystemExit(f"{' '.join(command)} failed ({done.returncode}): {done.stderr.strip()[-500:]}")
            return seconds
    finally:
        for burner in burners:
            burner.terminate()
            burner.join()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--photos", type=int, default=40)
    parser.add_argument("--no-write", action="store_true")
    args = parser.parse_args()
    photos = lfw_devtest(DataSection().resolved_root(), args.photos)
    rows = []
    with tempfile.TemporaryDirectory() as folder:
        inputs = Path(folder)
        for photo in photos:
            (inputs / photo.path.name).symlink_to(photo.path.resolve())
        for busy in (False, True):
            for policy in ("ACTIVE", "PASSIVE"):
                seconds = run(inputs, policy, busy)
                rows.append((busy, policy, seconds))
                print(f"{'busy' if busy else 'quiet'} {policy}: {seconds:.1f} s")
    anchor = rows[0][2]
    lines = [
        "## OpenMP waiting policy (`python benchmarks/omp_wait.py`)",
        "",
        f"Machine: {machine()}. `facekit normalize` of {len(photos)} LFW DevTest photos in a fresh process (model "
        "loading included); busy = one spinning process per core meanwhile. ACTIVE is OpenMP's spin-waiting (the "
        "default before); PASSIVE is what the CLI now sets unless OMP_WAIT_POLICY is already set. Ratio to "
        "quiet/ACTIVE.",
        "",
        "| machine | OMP_WAIT_POLICY | seconds | ms per photo | ratio |",
        "|---|---|---|---|---|",
    ]
    for busy, policy, seconds in rows:
        lines.append(
            f"| {'busy' if busy else 'quiet'} | {policy} | {seconds:.1f} | {1000 * seconds / len(photos):.0f} | "
            f"{seconds / anchor:.2f} |"
        )
    publish("omp-wait", lines, write=not args.no_write)


if __name__ == "__main__":
    main()
