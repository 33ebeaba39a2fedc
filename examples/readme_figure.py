"""The README's picture: London set photos (CC BY 4.0) smiling, and their normalized faces by the default model.

    python examples/readme_figure.py --overwrite      # docs/demo-grid.png (--out FILE to write elsewhere)

The London set's *neutral* photos of these people were in the default model's training set; the smiling photos
were not. Photos: Face Research Lab London Set (DeBruine & Jones 2017, figshare 10.6084/m9.figshare.5047666.v5),
CC BY 4.0.
"""

from __future__ import annotations

import argparse

import numpy as np
from _common import REPO, add_figure_out, add_overwrite, data_root, figure_path
from PIL import Image

from facekit.normalize import Normalizer

PEOPLE = ("004", "010", "017", "031", "067", "102")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_figure_out(parser, REPO / "docs" / "demo-grid.png")
    parser.add_argument("--size", type=int, default=128)
    add_overwrite(parser)
    args = parser.parse_args()
    if args.size < 16:
        parser.error("--size: at least 16 px")
    out = figure_path(parser, args.out, args.overwrite)
    photos = data_root() / "london" / "smiling_front"
    missing = [p for p in PEOPLE if not (photos / f"{p}_08.jpg").is_file()]
    if missing:
        raise SystemExit(f"{photos} lacks {', '.join(f'{p}_08.jpg' for p in missing)}: see the data README")
    normalizer = Normalizer.from_checkpoint()
    columns = []
    for person in PEOPLE:
        photo = np.asarray(Image.open(photos / f"{person}_08.jpg").convert("RGB"))
        face = normalizer.normalize(photo)
        x0, y0, x1, y1 = face.box
        pad = 0.6 * (x1 - x0)
        crop = Image.fromarray(photo).crop((x0 - pad, y0 - pad, x1 + pad, y1 + pad)).resize((args.size, args.size))
        normalized = Image.fromarray(face.image).resize((args.size, args.size), Image.Resampling.BICUBIC)
        columns.append(np.vstack([np.asarray(crop), np.asarray(normalized)]))
    out.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.hstack(columns)).save(out, optimize=True)
    print(f"wrote {out}: top row smiling photos, bottom row their normalized faces")


if __name__ == "__main__":
    main()
