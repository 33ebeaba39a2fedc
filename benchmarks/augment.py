"""Data augmentation speed: the Poisson compositing solver and random morphs per second.

    python benchmarks/augment.py [--quick] [--dataset DIR] [--sheet PATH]

(1) Gradient-domain compositing of a 224 x 224 x 3 face: ours (multigrid-CG) vs ``cv2.seamlessClone`` (NORMAL_CLONE,
binarised mask; a different, Dirichlet problem, as the speed yardstick) vs the scipy sparse direct solve of the same
least-squares problem; median of N interleaved runs, 2 threads. Target: ours within 2x of seamlessClone.
(2) random morphs per second at 224 px, in-process and through a DataLoader with 2 workers.
``--dataset DIR`` reads a prepared dataset (facekit.data.prepare's format: ``landmarks.npy``, ``textures.npy``,
``mean_landmarks.npy``, and ``averages.npy`` as the seed photos' backgrounds), memory-mapped; without it, N = 500
synthetic identities. Writes the `augment` section of benchmarks/RESULTS.md.
"""

from __future__ import annotations

import argparse
import shlex
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import torch
from torch.utils.data import DataLoader

sys.path.insert(0, str(Path(__file__).resolve().parent))
from results import machine, write_section

from facekit.data import poisson
from facekit.data.augment import MorphDataset, contact_sheet, synthetic_identities
from facekit.data.poisson import composite, composite_reference, face_mask


def uncached(function: Any, *args: Any) -> Any:
    """``function(*args)`` with the Poisson solver's multigrid hierarchies forgotten first (built again)."""
    poisson._HIERARCHIES.clear()
    return function(*args)


def poisson_rows(runs: int, data: dict[str, np.ndarray]) -> tuple[list[str], dict[str, float]]:
    size = data["textures"].shape[1]
    mean = data["mean_landmarks"]
    fg = data["textures"][0].astype(np.float32) / 255
    bg = data["textures"][1].astype(np.float32) / 255 * 0.6 + 0.2
    mask = face_mask(mean, size, size, size / 56)
    fg8, bg8 = np.round(fg * 255).astype(np.uint8), np.round(bg * 255).astype(np.uint8)
    hard = ((mask > 0.5) * 255).astype(np.uint8)
    ys, xs = np.nonzero(hard)
    centre = (int((xs.min() + xs.max() + 1) // 2), int((ys.min() + ys.max() + 1) // 2))
    methods = {
        # Augmentation composites every morph with the same mask, so the multigrid hierarchy is built once (cached);
        # the second row rebuilds it on every call, for masks that change.
        "ours (multigrid-CG, float32)": lambda: composite(fg, bg, mask),
        "ours, hierarchy rebuilt per call": lambda: uncached(composite, fg, bg, mask),
        "cv2.seamlessClone NORMAL_CLONE": lambda: cv2.seamlessClone(fg8, bg8, hard, centre, cv2.NORMAL_CLONE),
        "scipy sparse splu (same problem)": lambda: composite_reference(fg, bg, mask),
    }
    times: dict[str, list[float]] = {k: [] for k in methods}
    for fn in methods.values():
        fn()  # warm-up
    for i in range(runs):
        for name, fn in methods.items():
            if name.startswith("scipy") and i >= max(3, runs // 4):
                continue  # the direct solve is ~20x slower: a few runs suffice
            start = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - start)
    med = {k: statistics.median(v) * 1e3 for k, v in times.items()}
    err = float(np.abs(composite(fg, bg, mask) - composite_reference(fg, bg, mask)).max())
    base = med["cv2.seamlessClone NORMAL_CLONE"]
    rows = [f"| {k} | {v:.1f} | {v / base:.2f}x | {len(times[k])} |" for k, v in med.items()]
    rows.append(f"\nMax abs difference ours vs scipy (same problem, [0, 1] images): {err:.1e}.")
    return rows, med


def morph_rate(ds: MorphDataset, count: int, workers: int) -> float:
    if workers == 0:
        ds[0]
        start = time.perf_counter()
        for i in range(1, count + 1):
            ds[i]
        return count / (time.perf_counter() - start)
    loader = DataLoader(ds, batch_size=None, num_workers=workers, sampler=range(count + 2 * workers))
    it = iter(loader)
    for _ in range(2 * workers):
        next(it)  # workers started and warm
    start = time.perf_counter()
    for _ in range(count):
        next(it)
    return count / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--dataset", type=Path)
    parser.add_argument("--sheet", type=Path, help="write a contact sheet PNG of 64 random morphs")
    parser.add_argument("--no-write", action="store_true", help="print the section, leave RESULTS.md as it is")
    args = parser.parse_args()
    torch.set_num_threads(2)
    cv2.setNumThreads(2)
    if args.dataset:
        data = {k: np.load(args.dataset / f"{k}.npy", mmap_mode="r") for k in ("landmarks", "textures")}
        data["backgrounds"] = np.load(args.dataset / "averages.npy", mmap_mode="r")
        data["mean_landmarks"] = np.load(args.dataset / "mean_landmarks.npy")
        source = f"dataset {args.dataset} (N = {len(data['landmarks'])})"
    else:
        n = 60 if args.quick else 500
        start = time.perf_counter()
        data = synthetic_identities(n, 224, seed=0)
        source = f"synthetic data, N = {n} identities (made in {time.perf_counter() - start:.1f} s)"
    print(source)
    runs = 10 if args.quick else 40
    rows, _ = poisson_rows(runs, data)
    for row in rows:
        print(row)

    start = time.perf_counter()
    ds = MorphDataset(data["landmarks"], data["textures"], data["mean_landmarks"], data["backgrounds"], length=10**6)
    t_nn = time.perf_counter() - start
    count = 10 if args.quick else 60
    rate0_t2 = morph_rate(ds, count // 2, 0)
    # torch's OpenMP pool (2 threads) and cv2's pool spin against each other on 2 cores: ~10x slower in-process
    torch.set_num_threads(1)
    rate0 = morph_rate(ds, count, 0)
    rate2 = morph_rate(ds, count, 2)
    print(
        f"nearest neighbours: {t_nn:.2f} s; morphs/s: {rate0:.1f} in-process (torch 1 thread; {rate0_t2:.1f} with "
        f"2 threads), {rate2:.1f} DataLoader(2 workers)"
    )

    if args.sheet:
        images = np.stack([ds.morph(i).image for i in range(64)])
        cv2.imwrite(str(args.sheet), cv2.cvtColor(contact_sheet(images, 8), cv2.COLOR_RGB2BGR))
        print(f"contact sheet: {args.sheet}")

    size = data["textures"].shape[1]
    # The command as given (before: --dataset was left out, so the heading did not reproduce the section).
    flags = [*(["--quick"] if args.quick else []), *(["--dataset", str(args.dataset)] if args.dataset else [])]
    command = "python benchmarks/augment.py" + (f" {shlex.join(flags)}" if flags else "")
    lines = [
        f"## Augmentation (`{command}`)",
        "",
        f"Machine: {machine()}. Torch/cv2 threads 2. Data: {source}.",
        "",
        f"Poisson compositing of one {size}x{size}x3 face, median of interleaved runs "
        "(target: ours within 2x of seamlessClone):",
        "",
        "| method | ms / face | vs seamlessClone | runs |",
        "|---|---|---|---|",
        *rows,
        "",
        f"Random morphs at {size} px (two spline warps + compositing each): {rate0:.1f} morphs/s in-process with "
        f"torch at 1 thread ({rate0_t2:.1f} with torch at 2 threads: OpenMP and cv2 pools contend), "
        f"{rate2:.1f} morphs/s with DataLoader(num_workers=2); {count} morphs each after warm-up ({count // 2} with "
        "torch at 2 threads). "
        f"Nearest neighbours (k = 10, 32 px textures): {t_nn:.2f} s.",
    ]
    print("\n".join(lines))
    if not args.no_write:
        write_section("augment", "\n".join(lines))


if __name__ == "__main__":
    main()
