"""Files written for people to look at: normalized faces, side-by-side comparisons, grids."""

from __future__ import annotations

import functools
from typing import Any

import numpy as np

PHOTO_SUFFIXES = {".jpg", ".jpeg", ".jpe", ".jfif", ".png", ".bmp", ".webp", ".tif", ".tiff", ".gif", ".ppm", ".pgm"}


def photo_suffixes() -> set[str]:
    """What a folder scan reads: :data:`PHOTO_SUFFIXES`, and ``.avif`` where Pillow's build reads AVIF (12.x's
    wheels do; before, a folder's AVIF photos were skipped as not photos although a file given by name was read)."""
    return PHOTO_SUFFIXES | ({".avif"} if _reads_avif() else set())


@functools.cache
def _reads_avif() -> bool:
    from PIL import features

    return bool(features.check("avif"))


def _resize(image: np.ndarray, height: int) -> np.ndarray:
    from PIL import Image

    width = max(1, round(image.shape[1] * height / image.shape[0]))
    return np.asarray(Image.fromarray(image).resize((width, height), Image.Resampling.BILINEAR))


def side_by_side(photo: np.ndarray, outcome: Any, height: int = 224) -> np.ndarray:
    """The input photo (face box drawn) next to its normalized face with the predicted landmarks."""
    from PIL import Image, ImageDraw

    face = outcome.face
    left = Image.fromarray(photo)
    ImageDraw.Draw(left).rectangle(face.box, outline=(0, 255, 0), width=max(1, photo.shape[0] // 150))
    right = Image.fromarray(face.image)
    if face.landmarks is not None:
        draw = ImageDraw.Draw(right)
        r = 0.8 * max(1.0, face.image.shape[0] / 112)  # as large on a --size 448 face as on the model's 112 px
        for x, y in face.landmarks:
            draw.ellipse((x - r, y - r, x + r, y + r), fill=(0, 255, 0))
    return np.hstack([_resize(np.asarray(left), height), _resize(np.asarray(right), height)])
