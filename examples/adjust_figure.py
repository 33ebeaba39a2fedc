"""README figure for the adjust app: photos under a colour cast with a scene behind the person, corrected from their
normalized face and by gray-world, next to the uncast photo.

    python examples/adjust_figure.py --overwrite      # docs/adjust-before-after.jpg (--out FILE elsewhere)

It reads the known-cast helpers of ``benchmarks/adjust.py`` (the scenes the adjust benchmark measures).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
from _common import REPO, add_figure_out, add_overwrite, data_root, figure_path
from adjust import background_mask, blackbody_rgb, cast

from facekit.apps.adjust import FaceAdjuster
from facekit.apps.baselines import GlobalWhiteBalance
from facekit.images import load_rgb

PHOTOS = [
    ("london/smiling_front/005_08.jpg", "lfw/images/Amelie_Mauresmo/Amelie_Mauresmo_0002.jpg", 3200, 0.4),
    ("london/smiling_front/021_08.jpg", "lfw/images/Ben_Affleck/Ben_Affleck_0002.jpg", 9000, -0.6),
]


def read(path: Path) -> np.ndarray:
    photo = load_rgb(path)[0]
    if photo is None:
        raise SystemExit(f"cannot read {path}: see the data README")
    return photo


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add_figure_out(parser, REPO / "docs" / "adjust-before-after.jpg")
    add_overwrite(parser)
    args = parser.parse_args()
    out = figure_path(parser, args.out, args.overwrite)
    root = data_root()
    for person, scene_name, _, _ in PHOTOS:  # before the models load
        for path in (root / person, root / scene_name):
            if not path.is_file():
                raise SystemExit(f"cannot read {path}: see the data README")
    adjuster, gray = FaceAdjuster(), GlobalWhiteBalance("gray-world")
    rows = []
    for person, scene_path, kelvin, ev in PHOTOS:
        photo, scene_photo = read(root / person), read(root / scene_path)
        scene = np.asarray(Image.fromarray(scene_photo).resize(photo.shape[1::-1]))
        clean = np.where(background_mask(photo)[..., None], scene, photo)
        shot = cast(clean, blackbody_rgb(kelvin), ev)
        tiles = [shot, adjuster.correct(shot)[0], gray.correct(shot)[0], clean]
        rows.append(np.concatenate([np.asarray(Image.fromarray(t).resize((300, 300))) for t in tiles], axis=1))
    figure = Image.fromarray(np.concatenate(rows, axis=0))
    draw = ImageDraw.Draw(figure)
    for column, label in enumerate(["cast photo", "adjust (face + white-patch)", "gray-world", "before the cast"]):
        draw.text((column * 300 + 6, 6), label, fill=(255, 255, 255))
    out.parent.mkdir(parents=True, exist_ok=True)
    figure.save(out, quality=88)
    print(out)


if __name__ == "__main__":
    main()
