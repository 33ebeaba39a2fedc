"""Parity and speed of the torch port of dlib's face-recognition ResNet.

Usage: ``python benchmarks/dlib_resnet_parity.py [--photos 200]``

On the first photo of the first N LFW names (alphabetical) where dlib's HOG detector finds a face:
5-point landmarks -> ``dlib.get_face_chip(img, shape, 150, 0.25)`` -> dlib's
``compute_face_descriptor(chip)`` vs ``DlibResNet`` on the same chip (max abs diff, min cosine),
and ``extract_chip`` vs ``dlib.get_face_chip`` (pixel differences). Then CPU throughput of the
port at batch 1 and 32, forward (no grad) and forward + backward to the input pixels.
Writes the ``dlib-resnet`` section of ``benchmarks/RESULTS.md``.
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import sys
import time
from pathlib import Path

import dlib
import numpy as np
import torch
from facekit_dlib.resnet import chips_to_tensor, extract_chip, load_dlib_resnet

from facekit.images import load_rgb

sys.path.insert(0, str(Path(__file__).resolve().parent))
from results import machine, write_section

REPO = Path(__file__).resolve().parents[1]
DATA = Path(os.environ.get("FACEKIT_DATA", REPO.parent / "shared" / "data"))


def models_dir() -> Path:
    spec = importlib.util.find_spec("face_recognition_models")
    if spec is None or not spec.submodule_search_locations:
        raise SystemExit("face_recognition_models is not installed")
    return Path(next(iter(spec.submodule_search_locations))) / "models"


def lfw_chips(n: int, models: Path) -> tuple[list[np.ndarray], list[np.ndarray], int]:
    """dlib chips and our chips for the first n names with a detected face; also the number of names tried."""
    root = DATA / "lfw" / "images"
    detector = dlib.get_frontal_face_detector()
    predictor = dlib.shape_predictor(str(models / "shape_predictor_5_face_landmarks.dat"))
    theirs, ours, tried = [], [], 0
    for name in sorted(os.listdir(root)):
        photos = sorted((root / name).glob(f"{name}_*.jpg"))
        if not photos:
            continue
        tried += 1
        img = load_rgb(photos[0])[0]
        if img is None:  # unreadable: skipped like a photo without a face
            continue
        dets = detector(img, 1)
        if not dets:
            continue
        shape = predictor(img, dets[0])
        theirs.append(dlib.get_face_chip(img, shape, 150, 0.25))
        ours.append(extract_chip(img, shape, 150, 0.25))
        if len(theirs) == n:
            break
    return theirs, ours, tried


def throughput(model: torch.nn.Module, chips: list[np.ndarray], batch: int, backward: bool) -> float:
    """Images per second, median of timed repeats after a warm-up."""
    x = chips_to_tensor([chips[i % len(chips)] for i in range(batch)])
    reps = max(3, 64 // batch)

    def step() -> None:
        if backward:
            xi = x.clone().requires_grad_(True)
            model(xi).sum().backward()
        else:
            with torch.no_grad():
                model(x)

    step()
    times = []
    for _ in range(reps):
        t0 = time.perf_counter()
        step()
        times.append(time.perf_counter() - t0)
    return batch / float(np.median(times))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--photos", type=int, default=200)
    parser.add_argument("--no-write", action="store_true", help="print only, leave RESULTS.md alone")
    args = parser.parse_args()

    models = models_dir()
    dat = models / "dlib_face_recognition_resnet_model_v1.dat"
    t0 = time.perf_counter()
    model = load_dlib_resnet(dat)
    load_s = time.perf_counter() - t0
    encoder = dlib.face_recognition_model_v1(str(dat))

    theirs, ours, tried = lfw_chips(args.photos, models)
    ref = np.array([np.array(encoder.compute_face_descriptor(c)) for c in theirs])
    t0 = time.perf_counter()
    timed = theirs[:20]
    for c in timed:
        encoder.compute_face_descriptor(c)
    dlib_ips = len(timed) / (time.perf_counter() - t0)  # (before: 20 / the time of fewer: --photos 2 read 10x)
    embs = []
    with torch.no_grad():
        for i in range(0, len(theirs), 32):
            embs.append(model(chips_to_tensor(theirs[i : i + 32])).numpy())
    emb = np.concatenate(embs).astype(np.float64)
    diff = np.abs(emb - ref)
    cos = (emb * ref).sum(1) / np.linalg.norm(emb, axis=1) / np.linalg.norm(ref, axis=1)
    pairs = zip(ours, theirs, strict=True)
    pix = np.stack([np.abs(a.astype(np.int16) - b.astype(np.int16)) for a, b in pairs])
    pix_mean, pix_max = float(pix.mean()), int(pix.max())
    with torch.no_grad():
        emb_ours = model(chips_to_tensor(ours)).numpy().astype(np.float64) if len(ours) <= 256 else None
    chip_emb_diff = float(np.abs(emb_ours - ref).max()) if emb_ours is not None else float("nan")

    speed = {
        (b, bw): throughput(model, theirs, b, bw) for b in (1, 32) for bw in (False, True)
    }  # fmt: skip

    n = len(theirs)
    n_differ = int((pix.reshape(n, -1).max(1) > 0).sum())
    lines = [
        "## dlib face-recognition ResNet port (`python benchmarks/dlib_resnet_parity.py`)",
        "",
        f"Machine: {machine()}. torch {torch.__version__} ({torch.get_num_threads()} threads), "
        f"dlib {dlib.__version__}. Model: `dlib_face_recognition_resnet_model_v1.dat` "
        f"(face-recognition-models), parsed in pure Python in {load_s:.2f} s.",
        "",
        f"Parity on {n} LFW photos (first photo of the first {tried} names alphabetically; "
        f"{tried - n} without a HOG face skipped), 5-point landmarks, "
        "`dlib.get_face_chip(img, shape, 150, 0.25)`:",
        "",
        "| check | value |",
        "|---|---|",
        f"| descriptor max abs diff, port vs `compute_face_descriptor` (same chip) | {diff.max():.2e} |",
        f"| descriptor mean abs diff | {diff.mean():.2e} |",
        f"| min cosine (1 - min cosine) | {cos.min():.9f} ({1 - cos.min():.1e}) |",
        f"| `extract_chip` vs `dlib.get_face_chip`: mean / max abs pixel diff | {pix_mean:.4f} / {pix_max} |",
        f"| `extract_chip` vs `dlib.get_face_chip`: chips not bit-identical | {n_differ} of {n} |",
        f"| descriptor max abs diff, port on `extract_chip` chips vs dlib | {chip_emb_diff:.2e} |",
        "",
        "Throughput of the port on CPU (images/s, median of repeats after a warm-up; "
        f"dlib's own `compute_face_descriptor`, one chip at a time: {dlib_ips:.1f} images/s):",
        "",
        "| batch | forward (no grad) | forward + backward to pixels |",
        "|---|---|---|",
        f"| 1 | {speed[(1, False)]:.1f} | {speed[(1, True)]:.1f} |",
        f"| 32 | {speed[(32, False)]:.1f} | {speed[(32, True)]:.1f} |",
    ]
    body = "\n".join(lines)
    print(body)
    if not args.no_write:
        write_section("dlib-resnet", body)
        print("\nwrote the dlib-resnet section of benchmarks/RESULTS.md")


if __name__ == "__main__":
    main()
