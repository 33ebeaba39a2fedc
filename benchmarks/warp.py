"""Benchmark of the landmark-driven spline warp (facekit.warp) against reference implementations.

Usage::

    python benchmarks/warp.py [--quick] [--threads 2] [--device cpu|cuda] [--no-write]

Contenders (interleaved round-robin in one process, median of the repeats):

* ``facekit``  -- :func:`facekit.warp.sparse_image_warp` (custom chunked autograd Function).
* ``naive``    -- the straightforward torch implementation written below: float32 ``linalg.solve``,
  exact ``cdist`` from every pixel to every centre, ``grid_sample``, autograd through everything.
* ``kornia``   -- ``kornia.geometry.transform.get_tps_transform`` + ``warp_image_tps`` (thin plate,
  i.e. order 2; there is no order-1 option), if importable.
* ``tfa``      -- TensorFlow Addons ``sparse_image_warp`` if ``tensorflow_addons`` is importable
  (skipped with a note otherwise).

All contenders get the same 68 face-like landmarks (procedural mean-face layout in the central
region) plus tfa-style boundary points (2 per edge + corners = 12), destination = source + N(0, 3 px).
Forward+backward computes gradients w.r.t. the image, the source and the destination landmarks.

Peak memory: on CPU each (contender, configuration) runs once in a fresh subprocess and reports
``ru_maxrss`` (the process's resident high-water mark) minus the resident size measured just before
the run (after imports and input creation): the extra resident memory the warp needed. This is
reliable for the large tensors that matter here (glibc serves them with mmap / reuses freed heap).
On CUDA ``torch.cuda.max_memory_allocated`` around the run is used instead.

Results are printed and written between ``<!-- warp:start -->`` and ``<!-- warp:end -->`` in
``benchmarks/RESULTS.md`` (other sections are kept).
"""

from __future__ import annotations

import argparse
import datetime
import json
import math
import os
import platform
import resource
import shlex
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

if "--omp-passive" in sys.argv:  # must be set before torch (libgomp) is loaded
    os.environ["OMP_WAIT_POLICY"] = "PASSIVE"

import torch
import torch.nn.functional as F

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from facekit import warp as fw  # noqa: E402

RESULTS = ROOT / "benchmarks" / "RESULTS.md"
START, END = "<!-- warp:start -->", "<!-- warp:end -->"
NUM_BOUNDARY = 3  # tfa count: 4 corners + 2 inside each edge (12 points)
DISP_STD = 3.0
#: wall clock by default; ``--clock cpu`` uses the process CPU time (robust on a shared machine when
#: combined with ``--threads 1``; with more threads it also counts OpenMP spin-waiting)
CLOCK: Callable[[], float] = time.perf_counter


# ----------------------------------------------------------------------------------------------
# inputs
# ----------------------------------------------------------------------------------------------
def face_landmarks(size: int) -> torch.Tensor:
    """A procedural 68-point mean-face-like layout (iBUG 68 ordering), ``(68, 2)`` in pixels."""
    pts: list[tuple[float, float]] = []
    for t in torch.linspace(math.pi * 0.05, math.pi * 0.95, 17).tolist():  # jaw 0-16
        pts.append((0.5 - 0.38 * math.cos(t), 0.42 + 0.45 * math.sin(t) * (0.75 + 0.25 * math.sin(t))))
    for side in (-1, 1):  # brows 17-26
        xs = [0.12, 0.19, 0.27, 0.35, 0.42] if side < 0 else [0.58, 0.65, 0.73, 0.81, 0.88]
        for k, x in enumerate(xs):
            pts.append((x, 0.33 - 0.04 * math.sin(math.pi * k / 4)))
    for k in range(4):  # nose bridge 27-30
        pts.append((0.5, 0.42 + 0.07 * k))
    for k in range(5):  # nostrils 31-35
        pts.append((0.42 + 0.04 * k, 0.66 + 0.02 * math.sin(math.pi * k / 4)))
    for cx in (0.31, 0.69):  # eyes 36-47
        for k in range(6):
            a = math.pi * k / 3
            pts.append((cx - 0.08 * math.cos(a), 0.43 - 0.03 * math.sin(a)))
    for k in range(12):  # outer mouth 48-59
        a = 2 * math.pi * k / 12
        pts.append((0.5 - 0.15 * math.cos(a), 0.79 - 0.06 * math.sin(a)))
    for k in range(8):  # inner mouth 60-67
        a = 2 * math.pi * k / 8
        pts.append((0.5 - 0.1 * math.cos(a), 0.79 - 0.025 * math.sin(a)))
    p = torch.tensor(pts, dtype=torch.float64)
    # central region: [0.15, 0.85] of the image
    return (0.15 + 0.7 * p) * (size - 1)


def make_inputs(
    batch: int, size: int, device: str, grad: bool, seed: int = 0
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    lm = face_landmarks(size).float()
    src = lm.expand(batch, -1, -1).clone()
    dst = src + DISP_STD * torch.randn(src.shape, generator=g)
    img = torch.rand(batch, 3, size, size, generator=g)
    return (
        img.to(device).requires_grad_(grad),
        src.to(device).requires_grad_(grad),
        dst.to(device).requires_grad_(grad),
    )


# ----------------------------------------------------------------------------------------------
# contenders
# ----------------------------------------------------------------------------------------------
def naive_sparse_image_warp(
    image: torch.Tensor, source: torch.Tensor, destination: torch.Tensor, num_boundary: int = NUM_BOUNDARY
) -> torch.Tensor:
    """Straightforward order-1 polyharmonic warp, autograd through everything."""
    b, _, h, w = image.shape
    bp = fw.boundary_control_points(h, w, num_boundary, image.dtype, image.device)
    src = torch.cat([source, bp.expand(b, -1, -1)], 1)
    dst = torch.cat([destination, bp.expand(b, -1, -1)], 1)
    n = dst.shape[1]
    a = torch.cdist(dst, dst, compute_mode="donot_use_mm_for_euclid_dist")
    p = torch.cat([dst, torch.ones_like(dst[..., :1])], -1)
    lhs = torch.cat([torch.cat([a, p], 2), torch.cat([p.transpose(1, 2), p.new_zeros(b, 3, 3)], 2)], 1)
    rhs = torch.cat([dst - src, p.new_zeros(b, 3, 2)], 1)
    sol = torch.linalg.solve(lhs, rhs)
    ys, xs = torch.meshgrid(
        torch.arange(h, dtype=image.dtype, device=image.device),
        torch.arange(w, dtype=image.dtype, device=image.device),
        indexing="ij",
    )
    q = torch.stack([xs.reshape(-1), ys.reshape(-1)], -1).expand(b, -1, -1)
    r = torch.cdist(q, dst, compute_mode="donot_use_mm_for_euclid_dist")  # (B, HW, N)
    flow = r @ sol[:, :n] + torch.cat([q, torch.ones_like(q[..., :1])], -1) @ sol[:, n:]
    loc = q - flow
    grid = torch.stack([2 * loc[..., 0] / (w - 1) - 1, 2 * loc[..., 1] / (h - 1) - 1], -1)
    return F.grid_sample(image, grid.view(b, h, w, 2), padding_mode="border", align_corners=True)


def facekit_warp(image: torch.Tensor, source: torch.Tensor, destination: torch.Tensor) -> torch.Tensor:
    return fw.sparse_image_warp(image, source, destination, order=1, boundary_points=NUM_BOUNDARY)[0]


def kornia_warp(image: torch.Tensor, source: torch.Tensor, destination: torch.Tensor) -> torch.Tensor:
    from kornia.geometry.transform import get_tps_transform, warp_image_tps

    b, _, h, w = image.shape
    bp = fw.boundary_control_points(h, w, NUM_BOUNDARY, image.dtype, image.device)
    src = torch.cat([source, bp.expand(b, -1, -1)], 1)
    dst = torch.cat([destination, bp.expand(b, -1, -1)], 1)
    scale = torch.tensor([2.0 / (w - 1), 2.0 / (h - 1)], dtype=image.dtype, device=image.device)
    src_n, dst_n = src * scale - 1, dst * scale - 1
    kw, aw = get_tps_transform(dst_n, src_n)
    return warp_image_tps(image, dst_n, kw, aw, align_corners=True, padding_mode="border")


def available_contenders() -> tuple[dict[str, Callable[..., torch.Tensor]], list[str]]:
    cont: dict[str, Callable[..., torch.Tensor]] = {"facekit": facekit_warp, "naive": naive_sparse_image_warp}
    notes: list[str] = []
    try:
        import kornia  # noqa: F401

        cont["kornia"] = kornia_warp
    except ImportError:
        notes.append("kornia not importable: skipped")
    try:
        import tensorflow_addons  # noqa: F401

        notes.append("tensorflow_addons importable but the tfa contender is not wired up (CPU-only box)")
    except ImportError:
        notes.append("tfa: `tensorflow_addons` not installed, skipped")
    return cont, notes


# ----------------------------------------------------------------------------------------------
# measurement
# ----------------------------------------------------------------------------------------------
def _sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def run_once(fn: Callable[..., torch.Tensor], inputs: tuple[torch.Tensor, ...], backward: bool) -> None:
    if backward:
        out = fn(*inputs)
        out.mul(0.5).sum().backward()
        for t in inputs:
            t.grad = None
    else:
        with torch.no_grad():
            fn(*inputs)


def time_round_robin(
    contenders: dict[str, Callable[..., torch.Tensor]],
    batch: int,
    size: int,
    backward: bool,
    repeats: int,
    device: str,
) -> dict[str, float]:
    inputs = make_inputs(batch, size, device, backward)
    times: dict[str, list[float]] = {k: [] for k in contenders}
    for fn in contenders.values():  # warm-up
        run_once(fn, inputs, backward)
    for _ in range(repeats):
        for k, fn in contenders.items():
            _sync(device)
            t0 = CLOCK()
            run_once(fn, inputs, backward)
            _sync(device)
            times[k].append(CLOCK() - t0)
    med = {k: statistics.median(v) for k, v in times.items()}
    return med | {f"{k}:min": min(v) for k, v in times.items()}


def _rss_bytes() -> int:
    with open("/proc/self/statm") as fh:
        return int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def measure_memory_child(name: str, batch: int, size: int, backward: bool, device: str) -> float:
    """Run in a subprocess: extra peak memory (MiB) of one call."""
    cont, _ = available_contenders()
    fn = cont[name]
    inputs = make_inputs(batch, size, device, backward)
    if device.startswith("cuda"):
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        base = torch.cuda.memory_allocated()
        run_once(fn, inputs, backward)
        torch.cuda.synchronize()
        return (torch.cuda.max_memory_allocated() - base) / 2**20
    # ru_maxrss is inherited from the forking parent on Linux, so use VmHWM, reset to the current
    # RSS by writing "5" to /proc/self/clear_refs right before the run
    try:
        Path("/proc/self/clear_refs").write_text("5")
        reset = True
    except OSError:
        reset = False
    base = _rss_bytes()
    run_once(fn, inputs, backward)
    peak = _hwm_bytes() if reset else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    return max(0, peak - base) / 2**20


def _hwm_bytes() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024
    raise RuntimeError("VmHWM not found")


def measure_memory(name: str, batch: int, size: int, backward: bool, device: str, threads: int) -> float:
    if device.startswith("cuda"):
        return measure_memory_child(name, batch, size, backward, device)
    cmd = [
        sys.executable,
        str(Path(__file__).resolve()),
        "--_mem",
        json.dumps([name, batch, size, backward]),
        "--threads",
        str(threads),
        "--device",
        device,
    ]
    out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
    return float(out.strip().splitlines()[-1])


# ----------------------------------------------------------------------------------------------
# reporting
# ----------------------------------------------------------------------------------------------
def machine_info(threads: int, device: str) -> str:
    cpu = platform.processor() or "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    dev = device
    if device.startswith("cuda") and torch.cuda.is_available():
        dev = f"{device} ({torch.cuda.get_device_name()})"
    return (
        f"CPU: {cpu} ({os.cpu_count()} logical cores), torch threads: {threads}, device: {dev}, "
        f"torch {torch.__version__}, python {platform.python_version()}, "
        f"date {datetime.datetime.now(datetime.UTC).strftime('%Y-%m-%d %H:%M UTC')}, "
        f"load average at start {os.getloadavg()[0]:.1f} (other processes share the cores), "
        f"OMP_WAIT_POLICY={os.environ.get('OMP_WAIT_POLICY', 'unset')}"
    )


def fmt_ms(t: float | None, tmin: float | None = None) -> str:
    if t is None:
        return "-"
    return f"{t * 1e3:.1f}" if tmin is None else f"{t * 1e3:.1f} ({tmin * 1e3:.1f})"


def section(args: argparse.Namespace) -> str:
    """The RESULTS.md section a run writes: "warp" on the CPU, "warp-cuda" on a GPU (helper-139: a GPU run without
    --no-write replaced the CPU section)."""
    return "warp-cuda" if args.device.startswith("cuda") else "warp"


def write_results(text: str, argv: list[str], name: str) -> None:
    """Section ``name`` of RESULTS.md, headed by the command that made it (helper-75: it had none, and the
    published table came from a --quick run)."""
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from results import write_section

    command = "python benchmarks/warp.py" + (f" {shlex.join(argv)}" if argv else "")
    title = "Warp on the GPU" if name == "warp-cuda" else "Warp"
    write_section(name, f"## {title} (`{command}`)\n\n{text.rstrip()}")


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="fewer repeats / configs (< ~2 min on 2 cores)")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--batch", type=int, default=None, help="large batch (default 32 cpu / 256 cuda)")
    ap.add_argument("--repeats", type=int, default=None)
    ap.add_argument("--no-memory", action="store_true")
    ap.add_argument(
        "--omp-passive",
        action="store_true",
        help="OMP_WAIT_POLICY=PASSIVE: on a loaded shared machine, spinning OpenMP workers stall every "
        "parallel region by a scheduler time slice (hits many-small-op code like the chunked warp hardest)",
    )
    ap.add_argument("--clock", choices=("wall", "cpu"), default="wall", help="wall or process CPU time")
    ap.add_argument("--no-write", action="store_true", help="do not update benchmarks/RESULTS.md")
    ap.add_argument("--_mem", default=None, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    global CLOCK
    CLOCK = time.process_time if args.clock == "cpu" else time.perf_counter
    if args._mem is not None:
        name, batch, size, backward = json.loads(args._mem)
        print(measure_memory_child(name, batch, size, backward, args.device))
        return

    cuda = args.device.startswith("cuda")
    big = args.batch or (256 if cuda else 32)
    repeats = args.repeats or (3 if args.quick else 7)
    contenders, notes = available_contenders()
    lines: list[str] = []

    def emit(s: str = "") -> None:
        print(s, flush=True)
        lines.append(s)

    emit(machine_info(args.threads, args.device))
    emit()
    nb = 4 * NUM_BOUNDARY
    emit(f"224x224x3, 68 landmarks + {nb} boundary points, displacement std {DISP_STD} px, ")
    emit(
        f"order 1 (kornia: thin plate); times ({args.clock} clock): median (min) ms of {repeats} "
        "interleaved repeats after a "
        "warm-up; ratios use medians; memory: extra peak resident MiB of one call in a fresh subprocess "
        "(VmHWM after clear_refs minus RSS before; on CUDA max_memory_allocated)."
    )
    emit()
    names = list(contenders)
    hdr = "| batch | pass | " + " | ".join(f"{n} ms" for n in names)
    hdr += " | naive/facekit | kornia/facekit | " + " | ".join(f"{n} MiB" for n in names) + " |"
    emit(hdr)
    emit("|" + "---|" * (hdr.count("|") - 1))
    for batch in (1, big):
        for backward in (False, True):
            t = time_round_robin(contenders, batch, 224, backward, repeats, args.device)
            mem: dict[str, float | None] = {n: None for n in names}
            if not args.no_memory and (backward or not args.quick):
                for n in names:
                    mem[n] = measure_memory(n, batch, 224, backward, args.device, args.threads)
            r_naive = t["naive"] / t["facekit"]
            r_k = f"{t['kornia'] / t['facekit']:.1f}x" if "kornia" in t else "-"
            row = f"| {batch} | {'fwd+bwd' if backward else 'fwd'} | "
            row += " | ".join(fmt_ms(t[n], t[n + ":min"]) for n in names)
            row += f" | {r_naive:.1f}x | {r_k} | "
            row += " | ".join("-" if mem[n] is None else f"{mem[n]:.0f}" for n in names) + " |"
            emit(row)
    emit()
    sb = 8 if not args.quick else 4
    # Fewer repeats than the table above (before, its caption's "median (min) of N" was read as this table's too:
    # with --quick, N = 3 above and 2 here, a median of 2 being their mean).
    scale_repeats = max(2, repeats - 2)
    emit(f"Scaling (batch {sb}, fwd+bwd, ms; median (min) of {scale_repeats} interleaved repeats):")
    emit()
    emit("| size | " + " | ".join(names) + " | naive/facekit | kornia/facekit |")
    emit("|" + "---|" * (len(names) + 3))
    for size in (128, 224, 512):
        cs = contenders
        if args.quick and size == 512:
            cs = {k: v for k, v in contenders.items() if k != "kornia"}
        t = time_round_robin(cs, sb, size, True, scale_repeats, args.device)
        r_k = f"{t['kornia'] / t['facekit']:.1f}x" if "kornia" in t else "-"
        emit(
            f"| {size} | "
            + " | ".join(fmt_ms(t.get(n), t.get(n + ":min")) for n in names)
            + f" | {t['naive'] / t['facekit']:.1f}x | {r_k} |"
        )
    emit()
    emit(f"Load average at end: {os.getloadavg()[0]:.1f}.")
    for n in notes:
        emit(f"- {n}")
    if not args.no_write:
        write_results("\n".join(lines), sys.argv[1:] if argv is None else argv, section(args))
        print(f"\nwrote {RESULTS}")


if __name__ == "__main__":
    main()
