"""Average faces by morphing (the paper's Sec. 6.2 averaging), on the London set's hand-placed points.

Each face is warped with facekit's polyharmonic spline (the ``rbf-linear`` warper, the paper's phi(r) = r) from its
own 189 landmarks onto the mean landmarks, and the warped pixels are averaged. The grid shows a few inputs, the same
faces registered to the mean shape, the plain pixel average (blurry) and the morphed average (sharp).

    python examples/average_faces.py --out demo-output [--people 24] [--size 256] [--overwrite]

It writes OUT/average_faces.png and OUT/mean_face.png, and replaces them only with ``--overwrite``.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import torch
from _common import add_overwrite, data_root
from PIL import Image, ImageDraw

import facekit

OUTPUTS = ("average_faces.png", "mean_face.png")


def read_tem(path: Path) -> np.ndarray:
    """A webmorph .tem file's points: first line the count, then ``x<TAB>y`` lines. Returns ``(K, 2)``."""
    lines = path.read_text().splitlines()
    count = int(lines[0])
    return np.array([[float(v) for v in line.split()[:2]] for line in lines[1 : 1 + count]], dtype=np.float32)


def load_faces(folder: Path, people: int, size: int) -> tuple[torch.Tensor, torch.Tensor, list[str]]:
    """Photos ``(N, 3, size, size)`` in [0, 1] and their points ``(N, K, 2)`` rescaled to ``size``."""
    tems = sorted(folder.glob("*.tem"))[:people]
    if not tems:
        raise SystemExit(f"no .tem files in {folder}: set FACEKIT_DATA to the folder holding london/")
    images, points = [], []
    for tem in tems:
        photo = Image.open(tem.with_suffix(".jpg")).convert("RGB")
        scale = size / photo.width
        images.append(np.asarray(photo.resize((size, round(photo.height * scale)), Image.Resampling.BILINEAR))[:size])
        points.append(read_tem(tem) * scale)
    image_tensor = torch.from_numpy(np.stack(images)).permute(0, 3, 1, 2).float() / 255.0
    return image_tensor, torch.from_numpy(np.stack(points)), [t.stem for t in tems]


def to_pil(image: torch.Tensor) -> Image.Image:
    return Image.fromarray((image.clamp(0, 1).permute(1, 2, 0).numpy() * 255).round().astype(np.uint8))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--out",
        metavar="FOLDER",
        type=Path,
        default=Path("demo-output"),
        help=f"the folder to write {' and '.join(OUTPUTS)} into (made if missing; this script writes two images, so "
        "a folder, not a file; default: demo-output in the current folder)",
    )
    parser.add_argument("--people", type=int, default=24)
    parser.add_argument("--size", type=int, default=256)
    parser.add_argument("--warper", default="rbf-linear")
    add_overwrite(parser)
    args = parser.parse_args()
    if args.people < 2:  # (one face is its own average; 0 and below took every face or said the data was missing)
        parser.error("--people: at least 2 faces to average")
    if args.size < 16:
        parser.error("--size: at least 16 px")
    if args.out.exists() and not args.out.is_dir():
        parser.error(f"--out {args.out}: a folder (it gets {' and '.join(OUTPUTS)})")
    there = [name for name in OUTPUTS if (args.out / name).exists()]
    if there and not args.overwrite:
        parser.error(f"{args.out} holds {', '.join(there)}: --overwrite replaces them")
    try:
        warper = facekit.load_component("warper", args.warper)
    except facekit.FacekitError as error:
        raise SystemExit(str(error)) from None

    images, points, names = load_faces(data_root() / "london" / "neutral_front", args.people, args.size)
    mean_points = points.mean(dim=0, keepdim=True).expand_as(points).contiguous()
    start = time.perf_counter()
    with torch.no_grad():
        registered, _ = warper.warp(images, points, mean_points)
    seconds = time.perf_counter() - start
    morphed_average = registered.mean(dim=0)
    pixel_average = images.mean(dim=0)

    shown = min(6, len(names))
    tile = args.size
    sheet = Image.new("RGB", (tile * (shown + 1), tile * 2), "white")
    for i in range(shown):
        face = to_pil(images[i])
        ImageDraw.Draw(face).point([tuple(p) for p in points[i].tolist()], fill=(255, 40, 40))
        sheet.paste(face, (i * tile, 0))
        sheet.paste(to_pil(registered[i]), (i * tile, tile))
    sheet.paste(to_pil(pixel_average), (shown * tile, 0))
    sheet.paste(to_pil(morphed_average), (shown * tile, tile))
    args.out.mkdir(parents=True, exist_ok=True)
    sheet_path = args.out / "average_faces.png"
    sheet.save(sheet_path)
    to_pil(morphed_average).save(args.out / "mean_face.png")
    print(
        f"{len(names)} London faces warped onto their mean landmarks with {args.warper} in {seconds:.2f} s; "
        f"top row: inputs with their points, then the pixel average; bottom row: registered faces, then the "
        f"morphed average. Wrote {sheet_path}"
    )


if __name__ == "__main__":
    main()
