"""Dataset readers: turn a recipe's ``data`` sources into photos grouped by identity."""

from __future__ import annotations

import os
from collections import Counter
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from facekit.errors import FacekitError

if TYPE_CHECKING:
    import numpy as np

    from facekit.recipe import DataSource


@dataclass(frozen=True)
class Photo:
    """One input photo: ``identity`` is ``<source>/<person>``, so people from different sources never merge."""

    identity: str
    path: Path
    source: str


def read_people_file(path: Path) -> dict[str, int]:
    """An LFW ``people*.txt`` file: ``name<TAB>count`` lines (count and fold-count lines are skipped). Every line is
    read: LFW's first line is a count, which the pattern skips, and a list of one's own may have none (before, its
    first person was dropped without a word, and a recipe's data.test check left them out). A first line whose
    count is not a number is a header (``name<TAB>count``), skipped as every first line was; such a line further
    down is a FacekitError naming it (before: a ValueError's traceback)."""
    people: dict[str, int] = {}
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        parts = line.split("\t")
        if len(parts) == 2 and not parts[0].isdigit():
            try:
                people[parts[0]] = int(parts[1])
            except ValueError:
                if number == 1:  # (a header: the first line was skipped unread before 4f35379)
                    continue
                raise FacekitError(
                    f"{path}, line {number}: {parts[1]!r} is not a number of photos: each line is name<TAB>count"
                ) from None
    return people


def lfw_photos(root: Path, people_file: str, min_photos: int = 1) -> list[Photo]:
    """Photos of the LFW people listed in ``people_file`` with at least ``min_photos`` photos."""
    photos = []
    for name, count in sorted(read_people_file(root / "lfw" / people_file).items()):
        if count < min_photos:
            continue
        for index in range(1, count + 1):
            photos.append(Photo(f"lfw/{name}", root / "lfw" / "images" / name / f"{name}_{index:04d}.jpg", "lfw"))
    return photos


def london_photos(root: Path, subset: str) -> list[Photo]:
    """London set photos (``neutral_front``/``smiling_front``: ``NNN_03.jpg``; ``canada``: ``NNNx.jpg``): one per
    person. Neutral and smiling photos of person NNN share the identity ``london/NNN``."""
    folder = root / "london" / subset
    photos = []
    for path in sorted(folder.glob("*.jpg")):
        person = path.stem.split("_")[0]
        identity = f"canada/{person}" if subset == "canada" else f"london/{person}"
        photos.append(Photo(identity, path, f"london-{subset}"))
    return photos


def read_ibug_pts(path: Path) -> np.ndarray:
    """An iBUG ``.pts`` file (68 ``x y`` lines, with or without the ``version``/``{ }`` header) -> (68, 2) float64
    in facekit's pixels: iBUG counts from 1 (Matlab), facekit puts pixel centres at integers from 0."""
    import numpy as np

    rows = [line.split() for line in path.read_text().splitlines()]
    points = [[float(row[0]), float(row[1])] for row in rows if len(row) == 2 and row[0][0] in "0123456789-."]
    if len(points) != 68:
        raise FacekitError(f"{path}: {len(points)} points, expected the 68 of iBUG's scheme")
    return np.asarray(points, np.float64) - 1.0


def helen_test(root: Path) -> list[tuple[Path, np.ndarray]]:
    """The HELEN test photos of ``root/ibug68/helen_test`` with their hand-placed iBUG-68 points (68, 2)."""
    folder = root / "ibug68" / "helen_test"
    return [(path, read_ibug_pts(path.with_suffix(".pts"))) for path in sorted(folder.glob("*.jpg"))]


def helen_photos(root: Path) -> list[Photo]:
    """The HELEN test photos as :class:`Photo` s, one identity each (``helen/NAME``): people outside LFW and London."""
    return [
        Photo(f"helen/{path.stem}", path, "helen") for path in sorted((root / "ibug68" / "helen_test").glob("*.jpg"))
    ]


def walk_visible(folder: Path, top: Path | None = None) -> Iterator[tuple[Path, list[str], list[str]]]:
    """``os.walk(folder)`` as the folder readers see it: hidden folders and files left out, links to folders followed
    (a person's folder that is a link, or a link inside it, holds that person's photos) unless they lead back into
    ``top`` (the photo folder ``folder`` is part of; default ``folder``), to it or above it: those are other people's
    photos, or these again (helper-71: a link inside carl/ to the folder above put ben's photos in carl's average).
    Each real folder is walked once; a linked file is left out where a walk of the photo folder reads it anyway
    (:func:`reached_anyway`: a link to ben's photo in carl/ averaged ben into carl). The recipe's train/test
    overlap check walks the same files, so a DevTest person reached through a link is found (helper-69: it was read
    for training but not checked)."""
    inside, start = os.path.realpath(top if top is not None else folder), os.path.realpath(folder)
    seen: set[str] = set()
    for base, folders, files in os.walk(folder, followlinks=True):
        real = os.path.realpath(base)
        if real in seen:
            folders[:] = []
            continue
        seen.add(real)
        folders[:] = sorted(
            name for name in folders if not name.startswith(".") and not leads_back(Path(base) / name, inside, start)
        )
        shown = [name for name in files if not name.startswith(".")]
        yield Path(base), folders, sorted(n for n in shown if not reached_anyway(Path(base) / n, inside, start))


def leads_back(path: Path, top: str, start: str | None = None) -> bool:
    """Whether ``path`` is a link to a folder at or above the real folder ``top`` (or ``start``, where a walk began:
    a person's folder that is itself a link elsewhere), or inside ``top`` where a walk of it goes anyway (not
    through a hidden folder, which no walk enters: a link to ``.store/ann`` is followed; helper-73)."""
    if not path.is_symlink():
        return False
    target = os.path.realpath(path)
    if any(target == place or place.startswith(target + os.sep) for place in (top, start) if place):
        return True
    if not target.startswith(top + os.sep):
        return False
    return not any(part.startswith(".") for part in Path(os.path.relpath(target, top)).parts)


def reached_anyway(path: Path, top: str, start: str) -> bool:
    """Whether ``path`` is a link to a file inside the real folder ``top`` or ``start`` (not through a hidden folder):
    a walk of the photo folder reads that file as whoever's it is (another person's photo, a loose photo that is its
    own person) or reads it already (a second name for this person's photo, which would count twice in the
    average). A link to a file elsewhere, or hidden inside, is this person's photo."""
    if not path.is_symlink():
        return False
    target = os.path.realpath(path)
    for place in {top, start}:
        if target.startswith(place + os.sep):
            return not any(part.startswith(".") for part in Path(os.path.relpath(target, place)).parts)
    return False


def folder_photos(folder: Path, prefix: str = "folder") -> list[Photo]:
    """``<folder>/<person>/...<photo>`` (one identity per sub-folder, its photos at any depth below it) and
    ``<folder>/<photo>`` (one identity each), identities ``PREFIX/<person>``. Every file counts, whatever its suffix,
    so that unreadable files are reported rather than skipped; hidden files and folders (``.DS_Store``, ``.git``)
    do not."""
    if not folder.is_dir():
        raise FacekitError(f"photo folder not found: {folder}")
    photos: list[Photo] = []
    top = os.path.realpath(folder)
    entries = sorted(folder.iterdir())
    # A loose photo is a person of its own, named by its stem unless a person's folder or another loose file shares
    # it (anna/ and anna.jpg, solo.jpg and solo.png): then by its whole name, so that two people are not averaged.
    stems = Counter(path.name if path.is_dir() else path.stem for path in entries if not path.name.startswith("."))
    for path in entries:
        # A person's folder that is a link to the photo folder, above it or to another person's folder in it is
        # skipped, as the recipe's overlap check skips it (helper-73: people/all -> the data root trained on
        # DevTest photos the check never saw; people/alias -> people/ben trained ben twice).
        if path.name.startswith(".") or leads_back(path, top):
            continue
        if path.is_dir():
            inside = [base / name for base, _, files in walk_visible(path, top=folder) for name in files]
            photos.extend(Photo(f"{prefix}/{path.name}", p, "folder") for p in sorted(inside) if p.is_file())
        elif path.is_file():
            name = path.stem if stems[path.stem] == 1 else path.name
            photos.append(Photo(f"{prefix}/{name}", path, "folder"))
    # A linked file whose photo the walk reads as itself anywhere (another person's behind a linked person folder,
    # this person's in a linked folder) is that reading's, once (helper-76: eve's photo was still averaged into
    # carl, a photo of carl's linked folder counted twice); two links to one photo elsewhere count once too.
    read = {os.path.realpath(photo.path) for photo in photos if not photo.path.is_symlink()}
    kept: list[Photo] = []
    for photo in photos:
        real = os.path.realpath(photo.path)
        if photo.path.is_symlink():
            if real in read:
                continue
            read.add(real)
        kept.append(photo)
    return kept


def photos_from_sources(root: Path, sources: Iterable[DataSource]) -> list[Photo]:
    """All photos of a recipe's ``data.train`` (or ``data.test``) sources, in a stable order."""
    photos: list[Photo] = []
    folders = 0
    for src in sources:
        if src.source == "lfw" and src.people is not None:
            photos.extend(lfw_photos(root, src.people, src.min_photos))
        elif src.source == "london" and src.subset is not None:
            photos.extend(london_photos(root, src.subset))
        elif src.source == "folder" and src.path is not None:
            folders += 1  # the second folder's people are folder2/...: two folders' 'anna' are two people
            prefix = "folder" if folders == 1 else f"folder{folders}"
            photos.extend(folder_photos(src.folder(root), prefix))
    return photos


def group_by_identity(photos: Iterable[Photo]) -> dict[str, list[Photo]]:
    groups: dict[str, list[Photo]] = {}
    for photo in photos:
        groups.setdefault(photo.identity, []).append(photo)
    return groups
