"""Files written for people to look at: normalized faces, side-by-side comparisons, grids."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from facekit.errors import FacekitError

PHOTO_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff"}


def expand_photos(items: Sequence[str]) -> list[Path]:
    """Files as given, folders expanded to the photos inside them (sorted); a missing path is an error."""
    paths: list[Path] = []
    for item in items:
        path = Path(item)
        if path.is_dir():
            paths.extend(sorted(p for p in path.rglob("*") if p.suffix.lower() in PHOTO_SUFFIXES))
        elif path.is_file():
            paths.append(path)
        else:
            raise FacekitError(f"no such photo or folder: {path}")
    if not paths:
        raise FacekitError("no photos found in " + ", ".join(items))
    return paths


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
        for x, y in face.landmarks:
            draw.ellipse((x - 0.8, y - 0.8, x + 0.8, y + 0.8), fill=(0, 255, 0))
    return np.hstack([_resize(np.asarray(left), height), _resize(np.asarray(right), height)])


def write_normalized(out: str | Path, source: Path, photo: np.ndarray, outcome: Any) -> Path:
    """NAME.png (the normalized face), NAME.json (landmarks, box), NAME_side.png; returns the PNG's path."""
    from PIL import Image

    folder = Path(out)
    folder.mkdir(parents=True, exist_ok=True)
    face = outcome.face
    png = folder / f"{source.stem}.png"
    Image.fromarray(face.image).save(png)
    record = {
        "source": str(source),
        "status": outcome.status,
        "box": [round(v, 1) for v in face.box],
        "faces_found": face.faces_found,
        "landmarks": None if face.landmarks is None else np.round(face.landmarks, 2).tolist(),
        "source_landmarks": np.round(face.source_landmarks, 2).tolist(),
    }
    (folder / f"{source.stem}.json").write_text(json.dumps(record) + "\n")
    Image.fromarray(side_by_side(photo, outcome)).save(folder / f"{source.stem}_side.png")
    return png


def write_grid(
    out: str | Path, paths: Sequence[Path], photos: Sequence[np.ndarray | None], outcomes: Sequence[Any]
) -> Path:
    """One image of input | normalized pairs, a row per photo that worked (at most 16), for a quick look."""
    from PIL import Image

    pairs = zip(photos, outcomes, strict=True)
    rows = [side_by_side(p, o, height=160) for p, o in pairs if o.face is not None and p is not None][:16]
    if not rows:
        raise FacekitError("no face was normalized: nothing to put in the grid")
    width = max(r.shape[1] for r in rows)
    padded = [np.pad(r, ((0, 4), (0, width - r.shape[1]), (0, 0)), constant_values=255) for r in rows]
    path = Path(out) / "grid.png"
    Image.fromarray(np.vstack(padded)).save(path)
    return path
