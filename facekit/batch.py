"""Normalizing many photos into a folder without ever losing anything the user owns.

What ``facekit normalize`` and the recipe's infer stage promise (each tested in tests/cli/test_normalize_safety.py):

- **unique names**: every output name comes from the input's path relative to the folder it was found in (or its file
  name), and two inputs never share an output: ``a/face.jpg`` and ``b/face.jpg`` become ``face`` and ``face_jpg``
  (then ``face_jpg-2``, ...), and a photo already normalized there keeps its name when another with the same name is
  added; ``grid.png`` and ``manifest.jsonl`` are reserved, and the grid is never written over an input;
- **inputs are never written**: ``-o`` equal to an input folder is refused; ``-o`` inside an input folder is refused
  unless ``--inside-inputs`` is given, and then that folder is skipped when the inputs are scanned (facekit never
  normalizes its own outputs: a folder scan skips, with a warning, a marked grid and this command's outputs made
  from photos that are themselves among the inputs, while another command's outputs fed on stay inputs); an output
  that would land on an input is refused; a photo reached also through a link is read once, by the path without a
  link where there is one; files not read (``photo.heic``, by their suffix) are named in a warning;
- **atomic, never through a link**: each file is written to a temporary file in its folder and renamed over the target
  (a symlink there is replaced, never followed); folders inside the output must resolve inside it; a photo whose
  outputs cannot be written is a row (``unwritable``) and the batch goes on;
- **the folder's other files are the user's**: only facekit's own temporaries (``.facekit-*.tmp``) are cleared; a
  ``grid.png`` in a folder without facekit's manifest is left alone, and a ``manifest.jsonl`` that is not facekit's
  stops the run;
- **reruns**: an output whose record names the same input content (sha256), the same model (sha256), the same
  detector (:func:`detector_record`) and settings is skipped as ``done``; an output made from something else is left
  alone (``exists``) unless ``--overwrite``;
- **bounded memory, work that survives a kill**: photos are read, normalized and written ``batch_size`` at a time, and
  each batch appends its rows to ``manifest.jsonl`` (input, output, status, reason) before the next starts.
"""

from __future__ import annotations

import heapq
import io
import itertools
import json
import logging
import os
import re
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any, Literal

import numpy as np

from facekit.errors import NO_FACE, FacekitError
from facekit.locks import temporary_beside
from facekit.models import sha256_file
from facekit.types import face_of, face_record

logger = logging.getLogger(__name__)

MANIFEST = "manifest.jsonl"
GRID = "grid.png"
RESERVED = frozenset({GRID, MANIFEST})
GRID_ROWS = 16
#: Exit code of ``facekit normalize`` when it ran but some inputs gave no output (no face, unreadable, left alone).
EXIT_SOME_FAILED = 3


#: The files ``facekit normalize`` writes per photo, as suffixes of its base name (see :meth:`Planned.files`).
NORMALIZE_OUTPUTS = (".png", ".json", "_side.png")


@dataclass(frozen=True)
class Planned:
    """One input and the base name (relative, posix, no extension) of its outputs."""

    source: Path
    base: str

    def files(self, out: Path) -> tuple[Path, Path, Path]:
        """(normalized PNG, JSON record, side-by-side PNG): :data:`NORMALIZE_OUTPUTS` under ``out``."""
        png, record, side = self.outputs(out, NORMALIZE_OUTPUTS)
        return png, record, side

    def outputs(self, out: Path, suffixes: Sequence[str]) -> list[Path]:
        """The files named by ``suffixes`` of this base name under ``out``."""
        return [out / f"{self.base}{suffix}" for suffix in suffixes]


def _inside(path: Path, folder: Path) -> bool:
    return path == folder or folder in path.parents


def scan_inputs(
    items: Sequence[str],
    out: Path,
    inside_inputs: bool = False,
    outputs: Sequence[str] = (),
    inside_option: str = "",
    option: str = "-o",
) -> list[tuple[Path, str]]:
    """(photo, name relative to what was given) for every photo of ``items`` (files, or folders scanned recursively:
    :func:`_photos_below`).

    ``out`` equal to a folder given is refused; ``out`` inside one is refused unless ``inside_inputs`` (the refusal
    names ``inside_option``, how the command asks for it, when it has one), and is then left out of the scan. A
    file given that is this command's output of another photo in ``out`` (``outputs``: the suffixes it writes;
    :func:`_our_output`) is skipped with a warning; so is, in a folder scan, a marked grid and an output of this
    command whose record names a photo among the inputs (:func:`_recorded_source`). A photo reached twice (through a
    link) is read once, files that are not read are named in a warning. ``option``: how the command names ``out``
    in its messages (``infer.output`` for the infer stage)."""

    target = out.resolve()
    found: list[tuple[Path, str]] = []
    ours: list[Path] = []
    earlier: list[Path] = []  # outputs of an earlier run found in a folder given
    figures: list[Path] = []  # facekit's figures of faces found there (grids, explore's plots, strips, animations)
    skipped: list[Path] = []  # files in a folder given that are not photos by their suffix
    made_from_path: dict[Path, Path | None] = {}  # a scanned file's source, as its facekit record or mark names it
    for item in items:
        path = Path(item)
        if path.is_dir():
            folder = path.resolve()
            if target == folder:
                raise FacekitError(f"{option} {out} is the input folder {item}: choose a folder outside the inputs")
            if _inside(target, folder) and not inside_inputs:
                allowed = (
                    f", or pass {inside_option} (the output folder is then skipped when the inputs are scanned)"
                    if inside_option
                    else ""
                )
                raise FacekitError(
                    f"{option} {out} is inside the input folder {item}: choose a folder outside the inputs{allowed}"
                )
            if _inside(folder, target):
                raise FacekitError(
                    f"the input folder {item} is inside {option} {out}: facekit skips its own output folder when "
                    "scanning, "
                    "so none of its photos would be read; choose an output folder outside the inputs"
                )
            photos, others = _photos_below(path)
            skipped.extend(other for other in others if not _inside(other.resolve(), target))
            for photo in photos:
                if _inside(photo.resolve(), target):
                    continue  # facekit's own outputs
                text = png_text(photo) if photo.suffix.lower() == ".png" else None  # (read once for both marks)
                if _is_our_figure(photo, text):  # an earlier run's contact grid, or another figure of faces
                    figures.append(photo)
                    continue
                found.append((photo, photo.relative_to(path).as_posix()))
                made_from_path[photo] = _recorded_source(photo, outputs, text)
        elif path.is_file():
            if _inside(path.resolve(), target) and _our_output(path, outputs):
                # facekit's output of another photo, in -o (`facekit adjust *.jpg -o .` run twice): corrected again
                # it would become p_jpg_jpg.jpg and push its own photo's outputs to a new name.
                ours.append(path)
                continue
            found.append((path, path.name))
        elif path.exists():  # a FIFO, a socket, a device: nothing a photo is read from (helper-104: "no such photo")
            raise FacekitError(f"{path} is neither a file nor a folder: photos are read from files")
        else:
            stdin = " (photos are read from files: standard input is not supported)" if item == "-" else ""
            raise FacekitError(f"no such photo or folder: {path}{stdin}")
    if ours:
        _warn_skipped(
            "%d of the files given are facekit's outputs of other photos in -o (%s): skipped", ours, name=True
        )
    # An output of this command made by an earlier run from a photo that is itself among the inputs (`-o folder/out
    # --inside-inputs`, then another -o): normalized again it would be junk. Outputs of photos not among the inputs
    # (another command's, fed on: adjust's, then normalize) and photos beside an old record are the user's inputs.
    scanned = {photo.resolve() for photo, _ in found}
    derived = {
        photo
        for photo, source in made_from_path.items()
        if source is not None and source in scanned and source != photo.resolve()
    }
    earlier.extend(photo for photo, _ in found if photo in derived)
    found = [(photo, relative) for photo, relative in found if photo not in derived]
    if earlier:
        _warn_skipped(
            "%d files in the folders given are facekit's outputs of an earlier run from photos given here (%s): "
            "skipped",
            earlier,
        )
    if figures:
        _warn_skipped("%d files in the folders given are facekit's figures of faces, not photos (%s): skipped", figures)
    from facekit.outputs import photo_suffixes

    kinds = " ".join(sorted(photo_suffixes()))
    if skipped:
        shown = ", ".join(path.name for path in skipped[:3]) + (", ..." if len(skipped) > 3 else "")
        logger.warning("%d file(s) in the folders given not read (%s): facekit reads %s", len(skipped), shown, kinds)
    if not found:
        raise FacekitError("no photos found in " + ", ".join(items) + f" (facekit reads {kinds})")
    where: dict[Path, int] = {}
    unique: list[tuple[Path, str]] = []
    twice: list[Path] = []
    for photo, relative in found:  # the same file given twice (a.jpg a.jpg, or as a file and in its folder): once
        key = photo.resolve()
        if key not in where:
            where[key] = len(unique)
            unique.append((photo, relative))
            continue
        kept = unique[where[key]][0]
        if os.path.normpath(os.path.abspath(kept)) == os.path.normpath(os.path.abspath(photo)):
            continue  # the same path given twice, or as a file and in its folder: no link involved
        if _real_path(photo) and not _real_path(kept):  # the file's own path, not a link's, names the outputs
            unique[where[key]] = (photo, relative)
            kept, photo = photo, kept
        twice.append(photo)
    if twice:
        _warn_skipped(
            "%d photo(s) reached a second time through a link (%s): each is read once, as the path without a link "
            "where there is one",
            twice,
        )
    return unique


def _warn_skipped(message: str, paths: Sequence[Path], name: bool = False) -> None:
    """Warn ``message`` (``%d`` for how many, ``%s`` for the first of ``paths``, by its ``name`` alone if asked, and
    ", ..." when there are more) of files a scan passes over or reads once."""
    first = paths[0].name if name else str(paths[0])
    logger.warning(message, len(paths), first + (", ..." if len(paths) > 1 else ""))


def _real_path(path: Path) -> bool:
    """Whether ``path`` leads to its file through no link (in any of its parts)."""
    return os.path.realpath(path) == os.path.normpath(os.path.abspath(path))


def _recorded_source(path: Path, outputs: Sequence[str], text: Mapping[str, Any] | None = None) -> Path | None:
    """The photo a facekit output at ``path`` was made from, resolved, as its PNG mark (:data:`OUTPUT_MARK`) or the
    ``NAME.json`` record beside it names it (NAME + one of this command's ``outputs`` suffixes); None for a file
    neither names (a photo). ``text``: its :func:`png_text` when the caller has read it."""
    source: Any = None
    if path.suffix.lower() == ".png":
        source = (png_text(path) if text is None else text).get(OUTPUT_MARK)
    for _, record in _record_paths(path, outputs):
        if source is None:
            source = read_record(record).get("input_path")
    if not isinstance(source, str) or not source:
        return None
    try:
        return Path(source).resolve()
    except (OSError, RuntimeError, ValueError):
        return None


def _photos_below(folder: Path) -> tuple[list[Path], list[Path]]:
    """(the photos (a suffix of :func:`facekit.outputs.photo_suffixes`) at any depth below ``folder``, sorted; the
    other files, which are not photos: ``photo.heic``, ``notes.txt``). The
    real folders come first, each under its own path (as before links were followed, so outputs keep their names);
    then linked folders whose target was not scanned yet, the shallowest target first, unless it holds a scanned one (a
    link to a parent would pull in every sibling; a link into a linked folder is read with it, whatever the names).
    Hidden files and folders (``.thumbs``, macOS's ``._photo.jpg``) are skipped, as ``facekit prepare`` skips them."""
    from facekit.outputs import photo_suffixes

    suffixes = photo_suffixes()
    photos: list[Path] = []
    others: list[Path] = []
    seen: set[str] = set()
    pending: list[Path] = [folder]
    # Links to folders, the shallowest target first, then in the order listed: (target depth, order, its target,
    # resolved once, the link).
    links: list[tuple[int, int, str, Path]] = []
    order = itertools.count()
    while pending or links:
        if not pending:  # the real tree is done: the link that leads somewhere new, the shallowest target first
            # (helper-90: a_sub -> T/sub read before b_top -> T left T's other photos out without a word, as if T
            # were a parent of the folder given; b_top -> T and a link to T/sub read every photo of T once).
            _, _, target, link = heapq.heappop(links)
            if target not in seen and not any(s.startswith(target.rstrip(os.sep) + os.sep) for s in seen):
                pending.append(link)
            continue
        for root, folders, files in os.walk(pending.pop(0)):  # links are listed, not entered
            real = os.path.realpath(root)
            if real in seen:
                folders[:] = []
                continue
            seen.add(real)
            entered = []
            for name in sorted(folders):
                if name.startswith("."):
                    continue
                if (Path(root) / name).is_symlink():
                    target = os.path.realpath(Path(root) / name)
                    heapq.heappush(links, (target.count(os.sep), next(order), target, Path(root) / name))
                else:
                    entered.append(name)
            folders[:] = entered
            for name in files:
                candidate = Path(root) / name
                if name.startswith("."):
                    continue
                if not candidate.is_file():
                    # A link to nothing named like a photo is a photo the user meant and does not get: its status
                    # says so (helper-86: it was skipped without a word). A link to a folder was listed above.
                    if candidate.suffix.lower() in suffixes and candidate.is_symlink() and not candidate.exists():
                        photos.append(candidate)
                    continue
                if candidate.suffix.lower() in suffixes:
                    photos.append(candidate)
                elif candidate.suffix.lower() not in NOT_PHOTOS:
                    others.append(candidate)
    return sorted(photos), sorted(others)


#: Files a folder of photos holds beside them that are no photo and not worth a word: facekit's own records and
#: tables, sidecars.
NOT_PHOTOS = frozenset(
    {".json", ".jsonl", ".csv", ".txt", ".md", ".xmp", ".aae", ".ini", ".db", ".lock", ".html", ".yaml", ".yml"}
    | {".log", ".glb", ".obj", ".mtl", ".safetensors", ".npy", ".npz"}
)


def _stem(relative: str) -> tuple[str, str]:
    """(``a/face``, ``jpg``) of ``a/face.jpg``; (``a/photo``, "") of a name without an extension (a dot in a folder
    name or at the start of a hidden file's name is not one)."""
    suffix = PurePosixPath(relative).suffix
    return (relative[: -len(suffix)], suffix[1:].lower()) if suffix else (relative, "")


#: What OBJ and MTL readers take for something other than a file name's letters: white space (between names:
#: ``mtllib a b.mtl`` names two files: MeshLab, tinyobjloader and tobj look for "a"), ``#`` (a comment to the line's
#: end wherever it stands: obj-rs), ``\`` (tinyobjloader's escape character, a line continuation at a line's end, a
#: folder separator to a reader on Windows) and control characters.
NOT_PLAIN = re.compile(r"[\s#\\\x00-\x1f\x7f-\x9f]")


def plain_name(name: str) -> str:
    """``name`` with each character of :data:`NOT_PLAIN` as ``_``, and a leading ``-`` too (MTL readers take a
    ``map_Kd`` word that begins with one for a texture option: Assimp skips it, and the texture): ``John Smith`` ->
    ``John_Smith``, ``IMG #2`` -> ``IMG__2``. File names that formats naming other files by name (OBJ's ``mtllib``,
    MTL's ``map_Kd``) can hold; other letters (``é``, ``张``, bytes that are not UTF-8) are kept as they are."""
    plain = NOT_PLAIN.sub("_", name)
    return f"_{plain[1:]}" if plain.startswith("-") else plain


def _name_candidates(relative: str, room: int | None = None, plain: bool = False) -> Iterator[str]:
    """The base names an input may get, in order (made as they are asked for): ``face``, ``face_jpg``,
    ``face_jpg-2``, ... (``photo``, ``photo-2``, ... for a name without an extension), each fitted into ``room``
    bytes (:func:`fit_name`); with ``plain``, the file's name is :func:`plain_name`'s (``John Smith`` ->
    ``John_Smith``: OBJ's ``mtllib`` and ``map_Kd`` cannot name a file with spaces)."""
    stem, suffix = _stem(relative)
    if plain:
        folder, slash, name = stem.rpartition("/")
        stem, suffix = folder + slash + plain_name(name), plain_name(suffix)
    first = f"{stem}_{suffix}" if suffix else stem
    names = itertools.chain([stem], [first] if suffix else [], (f"{first}-{n}" for n in range(2, 10_000)))
    return names if room is None else (fit_name(name, room) for name in names)


#: What the name of a shortened output base ends with: "~" and this many hex digits of its full name's sha256.
SHORTENED_DIGITS = 8


def fit_name(base: str, room: int) -> str:
    """``base`` (``a/face``) with its last part cut to at most ``room`` bytes (in the file system's encoding) when
    longer: its leading bytes (never half a UTF-8 character), then ``~`` and :data:`SHORTENED_DIGITS` hex digits of
    the whole part's sha256, so that two long names sharing a beginning stay apart. A photo's name may use the file
    system's whole limit, and its outputs add a suffix (``_yaw+30.png``) that would not fit."""
    import hashlib

    folder, slash, name = base.rpartition("/")
    raw = os.fsencode(name)
    if len(raw) <= room:
        return base
    tag = "~" + hashlib.sha256(raw).hexdigest()[:SHORTENED_DIGITS]
    cut = raw[: max(room - len(tag), 0)]
    for drop in range(4):  # a UTF-8 character is at most 4 bytes: drop a split one's start
        try:
            head = cut[: len(cut) - drop].decode("utf-8")
            break
        except UnicodeDecodeError:
            continue
    else:  # not UTF-8 at all: kept byte for byte, as the file system gave it
        head = os.fsdecode(cut)
    return f"{folder}{slash}{head}{tag}"


def _nearest_existing(folder: Path) -> Path:
    """``folder``, or its nearest parent that exists."""
    while not folder.exists() and folder != folder.parent:
        folder = folder.parent
    return folder


def name_limit(folder: Path) -> int:
    """The longest file name in bytes the file system of ``folder`` (or its nearest existing parent) takes."""
    try:
        return int(os.pathconf(_nearest_existing(folder), "PC_NAME_MAX"))
    except (OSError, ValueError):
        return 255


def _kept_names(
    found: Sequence[tuple[Path, str]], out: Path, outputs: Sequence[str], room: int | None = None, plain: bool = False
) -> dict[Path, str]:
    """Inputs whose earlier outputs are in ``out`` under one of their candidate names (that name's ``.json`` record
    holds the input's sha256), among inputs that share a name with another: they keep it, so that adding
    ``face.jpeg`` beside a finished ``face.jpg`` neither renames the finished photo's outputs nor makes the new one
    clash with them. Only such groups are read (one sha256 per member), and only when ``outputs`` has a record."""
    if ".json" not in outputs:
        return {}
    groups: dict[str, list[tuple[Path, str]]] = {}
    for photo, relative in found:
        groups.setdefault(next(_name_candidates(relative, None, plain)), []).append((photo, relative))
    kept: dict[Path, str] = {}
    for members in groups.values():
        if len(members) < 2:
            continue
        for photo, relative in members:
            sha: str | None = None
            for base in itertools.islice(_name_candidates(relative, room, plain), len(members) + 1):
                recorded = read_record(out / f"{base}.json").get("input_sha256")
                if not recorded or base in kept.values():
                    continue
                sha = sha if sha is not None else (input_sha256(photo)[0] or "")
                if recorded == sha:
                    kept[photo] = base
                    break
    return kept


def plan_outputs(
    found: Sequence[tuple[Path, str]], out: Path, outputs: Sequence[str] = NORMALIZE_OUTPUTS, plain: bool = False
) -> list[Planned]:
    """Unique output base names: the relative name without its extension; on a clash the extension is kept
    (``face_jpg``), then a counter is added (``face_jpg-2``), except that an input whose earlier outputs are already
    in ``out`` under one of these names keeps it (:func:`_kept_names`). None of the ``outputs`` (suffixes of the base
    name the caller writes) lands on an input, a reserved name or another photo's output, and every one fits the
    file system's name limit (a longer base is shortened, :func:`fit_name`). ``plain``: no white space in a base's
    file name (:func:`_name_candidates`), and a photo whose name needs no change is named before those made plain
    (``John_Smith.jpg`` -> ``John_Smith``, ``John Smith.jpg`` -> ``John_Smith_jpg``, in any order)."""
    inputs = {photo.resolve() for photo, _ in found}
    taken: set[str] = set(RESERVED)
    room = name_limit(out) - max((len(os.fsencode(suffix)) for suffix in outputs), default=0)
    listings: dict[Path, set[str]] = {}

    def records_in(folder: Path) -> set[str]:
        """The ``.json`` names in ``folder``, listed once (helper-66: building and opening every output name's
        possible records, per photo, was a quarter of the planning time on 5,000 avatars)."""
        if folder not in listings:
            try:
                listings[folder] = {entry.name for entry in os.scandir(folder) if entry.name.endswith(".json")}
            except OSError:  # no such folder yet: no records
                listings[folder] = set()
        return listings[folder]

    def free(base: str, photo: Path | None = None) -> set[str] | None:
        names = {f"{base}{suffix}" for suffix in outputs}
        if names & taken or any((out / name).resolve() in inputs for name in names):
            return None
        if photo is not None and ".json" in outputs and _made_for_another(out / f"{base}.json", photo):
            return None
        # A name that is another photo's output under its own record (foo.jpg's foo_side.png for a new foo_side.jpg,
        # whose foo_side.png would replace it while foo.jpg stayed "done"; helper-65).
        head, _, stem = base.rpartition("/")  # by string: a base "." (a photo named ..jpg) is no folder of its own
        folder, own = (out / head if head else out), f"{stem}.json"
        # A photo whose finished outputs are at this base keeps it (helper-68: a folder where two photos' outputs
        # had come to share names renamed both on a rerun; only the one whose files are not its own moves).
        if (
            photo is not None
            and ".json" in outputs
            and (listing := records_in(folder))
            and not _names_this(folder / own, photo, listing)
        ):
            # The records that name these files as their outputs, by name (no Path per candidate).
            others = {record for output in outputs for _, record in _record_names(f"{stem}{output}", outputs)} & listing
            if any(_names_another(folder / record, photo) for record in sorted(others - {own})):
                return None
        return names

    # With ``plain``, the photos whose names need no change are named first: ``John_Smith.jpg`` keeps ``John_Smith``
    # and ``John Smith.jpg`` takes ``John_Smith_jpg``, whatever their order (before, the first in the folder's order
    # took it, and the user's plainly named photo became ``John_Smith_jpg-2``). The order is the same in every run of
    # the same folder, and _kept_names goes by it too, so a rerun gives each photo the names the first run gave.
    naming = sorted(found, key=lambda item: not _already_plain(item[1])) if plain else found
    bases: dict[Path, str] = {}
    for photo, base in _kept_names(naming, out, outputs, room, plain).items():
        if (names := free(base)) is not None:
            taken |= names
            bases[photo] = base
    for photo, relative in naming:
        if photo not in bases:
            for base in _name_candidates(relative, room, plain):
                if (names := free(base, photo)) is not None:
                    taken |= names
                    bases[photo] = base
                    break
    return [Planned(photo, bases[photo]) for photo, _ in found if photo in bases]


def _already_plain(relative: str) -> bool:
    """Whether the output base of the photo named ``relative`` is its name as it is (:func:`plain_name` changes
    nothing in it)."""
    return next(_name_candidates(relative, None, plain=True)) == _stem(relative)[0]


def _our_output(path: Path, outputs: Sequence[str]) -> bool:
    """Whether ``path`` is a command's output of another photo: NAME + one of ``outputs`` (the suffixes it writes)
    beside a NAME.json recorded for another photo (:func:`_made_for_another`), a PNG output marked with the photo it
    was made from (:data:`OUTPUT_MARK`: a command without per-photo records), or a figure of faces (normalize's
    contact grid, explore's figures: :func:`_is_our_figure`)."""
    text = png_text(path) if path.suffix.lower() == ".png" else None  # (read once for both marks)
    if _is_our_figure(path, text):
        return True
    records = _record_paths(path, outputs)
    # (a .png suffix of outputs ends the file's name: its text is read above)
    if any(suffix.lower().endswith(".png") for suffix, _ in records) and (text or {}).get(OUTPUT_MARK):
        return True
    return any(_made_for_another(record, path) for _, record in records)


def _record_names(name: str, outputs: Sequence[str]) -> list[tuple[str, str]]:
    """(suffix, ``NAME.json``) for each of a command's ``outputs`` suffixes that the file name ``name`` is NAME +
    (the record that would say which photo it was made from)."""
    return [
        (suffix, f"{name[: -len(suffix)]}.json")
        for suffix in outputs
        if suffix != ".json" and len(name) > len(suffix) and name.endswith(suffix)
    ]


def _record_paths(path: Path, outputs: Sequence[str]) -> list[tuple[str, Path]]:
    """:func:`_record_names` of ``path``, as paths beside it."""
    return [(suffix, path.parent / record) for suffix, record in _record_names(path.name, outputs)]


#: The tEXt key of a PNG output that names the photo it was made from (its absolute path), so that a later run
#: given it as an input (``facekit attributes *.png -o .`` twice) knows it for an output, not a photo.
OUTPUT_MARK = "facekit-output-of"


def output_mark(photo: Path) -> dict[str, str]:
    """:func:`png_bytes` text marking an output of ``photo`` (:data:`OUTPUT_MARK`); a name that is not UTF-8 is
    written with its odd bytes escaped."""
    return {OUTPUT_MARK: os.fsencode(os.path.abspath(photo)).decode("utf-8", "backslashreplace")}


def png_text(path: Path) -> dict[str, Any]:
    """The text chunks of the PNG at ``path`` ({} when it is none or cannot be read, or declares more pixels than
    Pillow's guard allows: no output of facekit's, and reading it is left to :func:`facekit.images.load_rgb`, which
    says it is too large)."""
    from PIL import Image

    try:
        with Image.open(path) as image:
            return {str(key): value for key, value in image.info.items()} if image.format == "PNG" else {}
    except (OSError, ValueError, RuntimeError, Image.DecompressionBombError):
        # (helper-86: a bomb's header ended a folder scan; a damaged AVIF under a .png name did too, RuntimeError)
        return {}


def made_from(photo: Path) -> dict[str, str]:
    """The record item that says whose outputs these are: the photo's absolute path, the same from any working
    folder (:func:`_made_for_another` reads it; normalize, adjust and avatar write it)."""
    return {"input_path": os.path.abspath(photo)}


def _names_this(record_path: Path, photo: Path, listing: set[str]) -> bool:
    """Whether ``record_path`` (one of ``listing``'s names) is the complete record of this very file, ``photo``."""
    if record_path.name not in listing:
        return False
    record = read_record(record_path)
    return record.get("input_path") == os.path.abspath(photo) and bool(record.get("complete", True))


def _names_another(record_path: Path, photo: Path) -> bool:
    """Whether the record at ``record_path`` names a file other than ``photo``, by path as :func:`made_from` writes it
    (under a name that is not this photo's base, a copy of it (helper-66) or a link to it (helper-68) is another
    photo: its outputs are that file's)."""
    source = read_record(record_path).get("input_path")
    return isinstance(source, str) and source != os.path.abspath(photo)


def _made_for_another(record_path: Path, photo: Path) -> bool:
    """Whether the outputs under ``record_path``'s name were made by an earlier run from another photo: the record
    names another source file and holds another sha256 (a photo added later whose name clashes with a finished one
    gets the next free name, rather than "exists" and an --overwrite that would replace the other photo's outputs).
    A record without ``input_path`` (made before records had it) or naming this very file keeps the name."""
    record = read_record(record_path)
    source, recorded = record.get("input_path"), record.get("input_sha256")  # made_from's
    if not isinstance(source, str) or not recorded:
        return False
    try:
        if Path(source).resolve() == photo.resolve():
            return False
    except (OSError, RuntimeError, ValueError):
        return False
    return recorded != (input_sha256(photo)[0] or "")


#: How write_atomic's temporary files begin and end: a killed run's leftovers are recognised by both, never a
#: user's own hidden files.
TEMPORARY_PREFIX, TEMPORARY_SUFFIX = ".facekit-", ".tmp"


def write_atomic(path: Path, data: bytes, out: Path) -> None:
    """Write ``data`` to ``path`` inside ``out``: temporary file in the same folder, fsync, rename over the target (a
    symlink at ``path`` is replaced, not followed). A folder on the way that resolves outside ``out`` is refused
    before anything is created there."""
    folder = path.parent
    out.mkdir(parents=True, exist_ok=True)  # the output root itself is the caller's to choose
    existing = _nearest_existing(folder)
    if not _inside(existing.resolve(), out.resolve()) or (
        folder.exists() and not _inside(folder.resolve(), out.resolve())
    ):
        # Why, as far as the name tells (helper-65: '..' was put down to a link).
        lexical = os.path.normpath(os.path.abspath(folder)).startswith(os.path.abspath(out).rstrip(os.sep) + os.sep)
        how = " through a symbolic link" if lexical else " ('..' in the name)" if ".." in path.parts else ""
        raise FacekitError(f"{folder} leads outside the output folder {out}{how}: refusing to write there")
    folder.mkdir(parents=True, exist_ok=True)
    # The target's name, cut short: any name the file system takes for the target leaves room for the temporary's
    # (cut by characters: never half of a UTF-8 one). Its own name, the user's usual permissions, ends in .tmp
    # (TEMPORARY_SUFFIX: remove_temporaries finds it).
    temporary = temporary_beside(path, f"{TEMPORARY_PREFIX}{path.name[:40]}.")
    try:
        with temporary.open("wb") as stream:
            stream.write(data)
            stream.flush()
            os.fsync(stream.fileno())
        os.replace(temporary, path)
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise


#: How a spreadsheet reads a cell as a formula: one that begins with one of these (OWASP's CSV injection list).
FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")


def spreadsheet_cell(value: Any) -> str:
    """``value`` as a CSV cell a spreadsheet shows as text: a text that begins like a formula (a photo named
    ``=HYPERLINK(...).jpg``, a folder named ``-x``) gets a leading ``'``, which spreadsheets take as "this is text";
    numbers, negative ones included, stay numbers."""
    text = "" if value is None else str(value)
    if not text.startswith(FORMULA_STARTS):
        return text
    try:
        float(text)
    except ValueError:
        return "'" + text
    return text


def csv_bytes(header: Sequence[str], rows: Iterable[Sequence[Any]]) -> bytes:
    """A CSV table (a header, then ``rows``) with :func:`spreadsheet_cell` cells, UTF-8 with a file name that is not
    (Latin-1 ``caf\\xe9`` from an old disk) shown with its odd bytes escaped."""
    import csv

    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(header)
    writer.writerows([spreadsheet_cell(cell) for cell in row] for row in rows)
    return buffer.getvalue().encode("utf-8", "backslashreplace")


def occupied(paths: Iterator[Path] | Sequence[Path]) -> list[Path]:
    """Those of ``paths`` that exist (a dangling symbolic link counts: something is there)."""
    return [path for path in paths if path.exists() or path.is_symlink()]


def refuse_occupied(paths: Sequence[Path], command: str) -> None:
    """A FacekitError naming the first of ``paths`` that exists: ``command``'s whole-folder outputs are never
    replaced without ``--overwrite``."""
    taken = occupied(paths)
    if taken:
        others = f" (and {len(taken) - 1} more)" if len(taken) > 1 else ""
        raise FacekitError(f"{taken[0]}{others} exists: {command} --overwrite replaces it, or choose another -o")


def refuse_file_in_the_way(folder: Path, option: str) -> None:
    """A FacekitError when the output ``folder`` (named ``option`` by the command) or a folder above it is a file:
    said before any model loads (before: a file above it stopped the run only once the model had loaded, and a
    stage's message called the folder itself a file)."""
    for part in [*reversed(folder.parents), folder]:
        if part.exists() and not part.is_dir():
            where = "" if part == folder else f": {part}"
            raise FacekitError(f"{option} {folder}{where} is a file, not a folder")


def refuse_folders_at(out: Path, names: Sequence[str], command: str, option: str = "-o") -> None:
    """A FacekitError naming the first of the file ``names`` in ``out`` that is a folder (not a link: a file is
    renamed over a link, never through it), --overwrite or not: no file can replace it, and a command writing several
    would stop partway, the files before it replaced (helper-228: `facekit eval --overwrite` with a folder
    ``metrics.json`` renamed its histograms in, then failed, "holding all of its results"; without --overwrite it
    was told "exists: --overwrite replaces it", which could not). ``option``: how the command names ``out``."""
    for name in names:
        path = out / name
        if path.is_dir() and not path.is_symlink():
            raise FacekitError(
                f"{path} is a folder where {command} writes its file {name}: move it away, or choose another {option}"
            )


def check_fixed_outputs(
    out: Path, names: Sequence[str], inputs: Sequence[str | Path], overwrite: bool, command: str
) -> None:
    """For a command that writes fixed file ``names`` into ``out`` (tables, figures): refuse ``-o`` naming a file,
    a name that is one of the ``inputs``, a name that is a folder (:func:`refuse_folders_at`), and (unless
    ``overwrite``) a name already there."""
    refuse_file_in_the_way(out, "-o")
    sources = {Path(p).resolve() for p in inputs}
    for name in names:
        if (out / name).resolve() in sources:
            raise FacekitError(f"{out / name} is one of the inputs: choose another output folder (-o)")
    refuse_folders_at(out, names, command)
    if not overwrite:
        refuse_occupied([out / name for name in names], command)


def refuse_foreign_folder(
    folder: Path, own: Sequence[str], setting: str, signatures: dict[str, bytes] | None = None
) -> None:
    """Refuse a stage's output ``folder`` that holds files of the user's: a file that is not one of ``own`` (names
    or glob patterns; hidden entries are facekit's locks and temporaries), or a file named in ``signatures`` whose
    first 4 kB lack its mark (a ``metrics.csv`` or ``report.html`` of the user's, which the stage would replace).
    Folders pass (other runs' output folders under a shared ``runs/eval``; the stage writes no folder but its own
    names). A missing or empty folder, or one of the stage's own, passes."""
    from fnmatch import fnmatchcase

    try:
        entries = sorted(os.scandir(folder), key=lambda entry: entry.name)
    except FileNotFoundError:
        return
    except NotADirectoryError:
        refuse_file_in_the_way(folder, setting)
        raise
    foreign = [
        entry.name
        for entry in entries
        if not entry.name.startswith(".")
        and not entry.is_dir(follow_symlinks=False)
        and not any(fnmatchcase(entry.name, pattern) for pattern in own)
    ]
    for name, mark in (signatures or {}).items():
        if (folder / name).is_file() and name not in foreign:
            try:
                with (folder / name).open("rb") as handle:
                    head = handle.read(4096)
            except OSError:
                head = b""
            if mark not in head:
                foreign.append(name)
    if foreign:
        shown = ", ".join(sorted(foreign)[:3]) + (", ..." if len(foreign) > 3 else "")
        writes = f"fixed names ({', '.join(own[:4])}, ...)" if own else "files of fixed names"
        raise FacekitError(
            f"{setting} {folder} holds files facekit did not write there ({shown}): it writes {writes} that would "
            f"replace files of yours; choose a new or empty folder for {setting}"
        )


def finite_or_null(value: Any) -> Any:
    """``value`` with every float that is not a finite number (nested in dicts, lists and tuples) replaced by None:
    strict JSON (``allow_nan=False``), which other readers than Python's accept."""
    import math

    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {key: finite_or_null(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [finite_or_null(item) for item in value]
    return value


@dataclass(frozen=True)
class FolderWords:
    """How a folder normalization (:func:`normalize_planned`) names its caller in its rows' reasons and its lock's
    refusal: ``writers`` (what else may be writing into the folder, "another facekit WRITERS is writing"), the
    ``settings`` an output's record is compared on beyond its input, model and detector, and the ``overwrite`` setting
    that replaces an output made otherwise. Before, the recipe's infer stage said `facekit normalize`'s words (another
    facekit normalize, --detail, --overwrite), settings it has under other names (infer.detail, infer.overwrite)."""

    writers: str
    settings: str
    overwrite: str


#: `facekit normalize`'s words (:class:`FolderWords`): every setting a record is compared on (detail, the detail
#: shape and forehead, the face chosen, the size), by its option.
NORMALIZE_WORDS = FolderWords(
    "normalize or infer stage", "--detail, --detail-shape, --detail-forehead, --face or --size", "--overwrite"
)
#: The recipe's infer stage's words (:class:`FolderWords`): the same settings, by their recipe keys.
INFER_WORDS = FolderWords(
    "infer stage or normalize",
    "infer.detail, infer.detail_shape, infer.detail_forehead, infer.face or infer.size",
    "infer.overwrite",
)


def exists_reason(path: Path) -> str:
    """The status reason of a photo whose output ``path`` is already there, made from something else (normalize's
    wording; before: "exists (not replaced)", which did not say why a rerun with new settings left it)."""
    return f"{path} exists (another input or other settings, or not facekit's): --overwrite replaces it"


def with_record(
    path: Path, record: dict[str, Any], files: Sequence[tuple[Path, bytes]], indent: int | None = None
) -> list[tuple[Path, bytes]]:
    """``files`` for :func:`write_files` between two writes of the JSON ``record`` at ``path``: first with
    ``"complete": false``, last with ``true``. A run killed in between leaves outputs whose record says they are this
    job's, unfinished: a rerun redoes them without --overwrite (``previous.get("complete", True)``)."""

    def text(complete: bool) -> bytes:
        return (json.dumps({**record, "complete": complete}, indent=indent) + "\n").encode()

    return [(path, text(False)), *files, (path, text(True))]


def write_files(files: Sequence[tuple[Path, bytes]], out: Path) -> str:
    """Write every (path, data) inside ``out`` with :func:`write_atomic`, in order; '' when all were written, else
    why one could not be (a folder or a file that cannot be replaced, a full disk, a link leading out): the photo's
    status reason, so that the batch goes on."""
    for path, data in files:
        try:
            write_atomic(path, data, out)
        except FacekitError as error:
            return str(error)
        except OSError as error:
            return f"could not write {path}: {error.strerror or error}"
    return ""


def remove_temporaries(out: Path, planned: Sequence[Planned]) -> None:
    """Delete the temporary files a killed run of facekit left in the folders its outputs go to (write_atomic's
    names only: a user's own files, hidden or not, are never touched)."""
    folders = {out} | {(out / item.base).parent for item in planned}
    for folder in folders:
        if not folder.is_dir() or folder.is_symlink() or not _inside(folder.resolve(), out.resolve()):
            continue
        for stale in folder.glob(f"{TEMPORARY_PREFIX}*{TEMPORARY_SUFFIX}"):
            if stale.is_file() and not stale.is_symlink():
                stale.unlink()


#: zlib level of the PNGs :func:`png_bytes` writes (normalize's faces, side views and grid; the apps' figures).
#: At PIL's default, 6, encoding took 26 of the 74 ms a photo cost `facekit normalize` once the model was loaded
#: (mostly the 448 x 224 NAME_side.png); at 3, 10 ms for files 8 % larger: 0.79x the folder's time (0.61x with
#: the photos detected in parallel; benchmarks/RESULTS.md "normalize-folder").
#: Lossless at any level: the pixels are the same. (adjust's corrected photos keep PIL's default: whole photos.)
PNG_LEVEL = 3


def png_bytes(image: np.ndarray, text: dict[str, str] | None = None) -> bytes:
    """``image`` (H, W, 3) uint8 as PNG bytes (zlib level :data:`PNG_LEVEL`), with ``text`` as tEXt chunks."""
    from PIL import Image
    from PIL.PngImagePlugin import PngInfo

    info = PngInfo()
    for key, value in (text or {}).items():
        info.add_text(key, value)
    buffer = io.BytesIO()
    Image.fromarray(image).save(buffer, format="PNG", pnginfo=info, compress_level=PNG_LEVEL)
    return buffer.getvalue()


def _earlier_thumbnail(side: Path) -> list[np.ndarray]:
    """The grid's row of a photo an earlier run normalized: its side-by-side ``side`` at the grid's 160 px height
    ([] when it is gone or unreadable: the grid then shows the others)."""
    from PIL import Image, UnidentifiedImageError

    if not side.is_file():  # gone, or something that is no file (a FIFO would block the read)
        return []
    try:
        with Image.open(side) as opened:
            pair = opened.convert("RGB")
            width = max(1, round(pair.width * 160 / pair.height))
            return [np.asarray(pair.resize((width, 160), Image.Resampling.BILINEAR))]
    except (OSError, UnidentifiedImageError, ValueError, ZeroDivisionError, Image.DecompressionBombError):
        return []


#: The tEXt key that marks a grid.png as facekit's own (a rerun may replace it; a user's grid.png it leaves alone),
#: and any figure of facekit's that shows faces (explore's grids, strips and plots): no photo for a folder scan.
GRID_MARK = "facekit-grid"
#: :func:`png_bytes` text that marks a facekit figure (:data:`GRID_MARK`).
FIGURE_MARK = {GRID_MARK: "1"}
#: The comment that marks a GIF as a facekit figure (explore's animation), as :data:`GRID_MARK` marks a PNG.
GIF_FIGURE_COMMENT = GRID_MARK.encode()


def _is_our_grid(path: Path) -> bool:
    return png_text(path).get(GRID_MARK) == "1"


def _is_our_figure(path: Path, text: Mapping[str, Any] | None = None) -> bool:
    """Whether ``path`` is a figure facekit made of faces (a marked PNG, whatever its name, or a marked GIF): never
    a photo to read. Before, only normalize's grid.png was known, so `explore interpolate`'s figure, strip and
    animation, or `explore compare`'s grid, left in a folder of photos, were read as photos of a person "out" by the
    next `explore compare` (their faces measured as that person's consistency) or normalized by `facekit normalize`.
    ``text``: a PNG's :func:`png_text` when the caller has read it (a scan reads each PNG's once for all its marks)."""
    suffix = path.suffix.lower()
    if suffix == ".png":
        return (png_text(path) if text is None else text).get(GRID_MARK) == "1"
    if suffix != ".gif":
        return False
    from PIL import Image

    try:
        with Image.open(path) as image:
            return bool(image.format == "GIF" and image.info.get("comment") == GIF_FIGURE_COMMENT)
    except (OSError, ValueError, RuntimeError, Image.DecompressionBombError):
        return False


@dataclass
class Row:
    """One manifest line."""

    input: str
    status: str  # ok | done | no_face | unreadable | detector_error | exists | unwritable
    output: str | None = None
    reason: str = ""

    def to_json(self) -> str:
        return json.dumps({"input": self.input, "output": self.output, "status": self.status, "reason": self.reason})


#: The statuses of a photo whose outputs are written: a rerun skips it. Any other has none (no face found, the photo
#: unreadable, the detector's error, a file of the user's in the way), and a rerun looks at it again.
FINISHED = ("ok", "done")


def without_output(count: int) -> str:
    """What a stop line adds to the photos the rerun goes on with where ``count`` of them were looked at and left
    without outputs (a status not :data:`FINISHED`): it does those again too (before: they were said finished)."""
    return f", the {count} it made no output for among them" if count else ""


@dataclass
class Summary:
    rows: list[Row] = field(default_factory=list)
    grid: Path | None = None
    #: Why no grid.png was written where there were faces for one (a file there that is not facekit's, or an input).
    grid_left: str = ""

    @property
    def failed(self) -> int:
        return sum(r.status not in FINISHED for r in self.rows)


def read_record(path: Path) -> dict[str, Any]:
    """An earlier run's JSON record at ``path``; {} when there is none or it is not a JSON object (not facekit's)."""
    try:
        value = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        return {}
    return value if isinstance(value, dict) else {}


def input_sha256(path: Path) -> tuple[str | None, str]:
    """(sha256 of the input at ``path``, "") or (None, why it cannot be read): a photo's row, never the end of a
    batch."""
    try:
        return sha256_file(path), ""
    except OSError as error:
        from facekit.images import broken_link

        if dangling := broken_link(path):
            return None, f"cannot read it: {dangling}"
        return None, f"cannot read it: {error.strerror or error}"


def reading(path: Path) -> dict[str, str]:
    """What reading the photo at ``path`` does beyond decoding, as provenance items for its record:
    ``{"read": ...}`` when :func:`facekit.images.load_rgb` converts its colour profile to sRGB, else ``{}``.
    Outputs made before facekit converted profiles lack it, so a rerun does not take them for done. Never raises."""
    from facekit.images import managed_profile, open_image

    try:
        with open_image(path) as opened:
            converted = managed_profile(opened) is not None
    except Exception:  # noqa: BLE001  (unreadable or refused: its row says so when it is read)
        return {}
    return {"read": "converted to sRGB from its colour profile"} if converted else {}


def detector_record(normalizer: Any) -> dict[str, Any] | None:
    """Which detector ``normalizer`` finds faces with, as output records keep it: None for the model's own (the one
    its training recipe names, with the same params, as ``from_checkpoint`` builds it without ``detector``), else
    ``{"name", "plugin", "params"}`` as the registry built it (a recipe's components.detector, or
    ``load_component``'s), or ``{"class": ...}`` for a detector made without the registry. Records made before
    the detector was recorded read None: then only the model's own could run in ``facekit normalize``, and it is
    what the infer stage runs unless a recipe names another, so a folder of them stays done; one made by the infer
    stage with another detector is left alone on a rerun (``exists``, --overwrite replaces), never taken for done."""
    detector = getattr(normalizer, "detector", None)
    if detector is None:  # (a stand-in without one: its own)
        return None
    from facekit.registry import built_as

    built = built_as(detector)
    if built is None:
        return {"class": f"{type(detector).__module__}.{type(detector).__qualname__}"}
    used = {"name": built.name, "plugin": built.plugin, "params": built.params}
    recipe = (getattr(normalizer, "meta", None) or {}).get("recipe") or {}
    own = (recipe.get("components") or {}).get("detector") or {}
    if own.get("name") != built.name:
        return used
    from facekit.registry import get_registry

    try:  # the model's params as its detector is built with them: every field, defaults filled in
        spec = get_registry("detector").get(built.name)
        params = spec.validate_params(own.get("params") or {}).model_dump(mode="json")
    except FacekitError:  # (no longer registered, or params it now refuses: not what runs)
        return used
    return None if (spec.plugin, params) == (built.plugin, built.params) else used


def same_job(record: dict[str, Any], provenance: dict[str, Any]) -> bool:
    """Whether an earlier ``record`` was made from the same input and settings (every ``provenance`` item equal)."""
    return all(record.get(key) == value for key, value in provenance.items())


def rerun_verdict(
    previous: dict[str, Any], provenance: dict[str, Any] | None, made: bool, taken: Sequence[Path], overwrite: bool
) -> Literal["done", "exists", "make"]:
    """What a batch command does with one input, given what an earlier run left in -o: ``done`` (its outputs were
    made from the same input and settings, ``provenance``, and the record says complete: skipped), ``exists``
    (outputs ``taken`` by something else: left alone unless ``overwrite``), ``make`` (nothing there, --overwrite,
    or this job's own outputs left half done by a killed run). ``made``: the main output is there. ``provenance``
    None: nothing counts as this job's."""
    ours = provenance is not None and same_job(previous, provenance)
    if ours and made and previous.get("complete", True):
        return "done"
    if taken and not overwrite and not ours:
        return "exists"
    return "make"


def _batches(items: Sequence[Planned], size: int) -> Iterator[Sequence[Planned]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


@dataclass(frozen=True)
class FolderPlan:
    """What a batch normalization will do, checked before any model is loaded: the inputs and their outputs."""

    out: Path
    planned: list[Planned]
    batch_size: int


def plan_folder(
    items: Sequence[str],
    out: str | Path,
    batch_size: int = 16,
    inside_inputs: bool = False,
    outputs: Sequence[str] = NORMALIZE_OUTPUTS,
    inside_option: str = "",
    plain: bool = False,
    option: str = "-o",
) -> FolderPlan:
    """Check the options, scan the inputs and name every output (:func:`scan_inputs`, :func:`plan_outputs`;
    ``plain``: output names that OBJ files can name, :func:`plain_name`; ``option``: how the command names ``out``)."""
    from facekit.images import max_megapixels

    if batch_size < 1:
        raise FacekitError(f"--batch-size must be at least 1, got {batch_size}")
    max_megapixels()  # a bad FACEKIT_MAX_MEGAPIXELS is said before the model loads, not under a progress bar
    out = Path(out)
    refuse_file_in_the_way(out, option)
    found = scan_inputs(items, out, inside_inputs, outputs, inside_option, option)
    return FolderPlan(out, plan_outputs(found, out, outputs, plain), batch_size)


def normalize_folder(
    normalizer: Any,
    items: Sequence[str],
    out: str | Path,
    model: Path,
    batch_size: int = 16,
    overwrite: bool = False,
    inside_inputs: bool = False,
    on_row: Callable[[Row], None] | None = None,
    inside_option: str = "inside_inputs=True",
) -> Summary:
    """:func:`plan_folder` then :func:`normalize_planned`; ``inside_option``: how the caller allows ``out`` inside
    an input folder, named when it is refused ("": the caller has no way)."""
    plan = plan_folder(items, out, batch_size, inside_inputs, inside_option=inside_option)
    return normalize_planned(normalizer, plan, model, overwrite, on_row)


def normalize_planned(
    normalizer: Any,
    plan: FolderPlan,
    model: Path,
    overwrite: bool = False,
    on_row: Callable[[Row], None] | None = None,
    on_detected: Callable[[], None] | None = None,
    on_locked: Callable[[], object] | None = None,
    words: FolderWords = NORMALIZE_WORDS,
) -> Summary:
    """Normalize every planned photo into ``plan.out`` as the module docstring promises; ``model`` is the model
    file (its sha256 goes into each record). ``on_row`` sees each manifest row as it is written (a batch's rows all
    at once: a stop waits for them). ``on_detected`` (given to the normalizer's ``normalize_many``, which then must
    take it, as :class:`facekit.normalize.Normalizer`'s does) is called as the face detection of each photo to
    normalize ends, before the rows of its batch: most of a large photo's time. Another process writing into the
    folder at the same time is a FacekitError (a lock); ``on_locked`` is called once the lock is held, before any
    photo (the infer stage's run record: one refused as another's leaves none; helper-221). ``words``: how the rows'
    reasons and the lock's refusal name the caller's settings (:class:`FolderWords`)."""
    from facekit.locks import exclusive

    try:
        plan.out.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise FacekitError(f"cannot create the output folder {plan.out}: {error.strerror}") from None
    with exclusive(plan.out, words.writers):
        if on_locked is not None:
            on_locked()
        return _normalize_locked(normalizer, plan, model, overwrite, on_row, on_detected, words)


def _normalize_locked(
    normalizer: Any,
    plan: FolderPlan,
    model: Path,
    overwrite: bool,
    on_row: Callable[[Row], None] | None,
    on_detected: Callable[[], None] | None,
    words: FolderWords,
) -> Summary:
    from facekit.errors import stops_held
    from facekit.images import load_rgb
    from facekit.outputs import side_by_side

    out, batch_size = plan.out, plan.batch_size
    if (out / MANIFEST).is_symlink():
        raise FacekitError(f"{out / MANIFEST} is a symbolic link: refusing to write through it")
    _check_manifest(out / MANIFEST)
    # A user's grid.png stays, and one given as an input is never replaced, --overwrite or not.
    grid_is_input = (out / GRID).resolve() in {item.source.resolve() for item in plan.planned}
    write_grid = not grid_is_input and (overwrite or not occupied([out / GRID]) or _is_our_grid(out / GRID))
    remove_temporaries(out, plan.planned)
    model_sha = sha256_file(model)
    detail = normalizer.detail.as_record() if hasattr(normalizer, "detail") else None  # photo detail settings
    face_rule = face_record(face_of(normalizer))  # which face of a photo (--face)
    detector = detector_record(normalizer)  # which detector found it: None for the model's own
    # The output's side where it is not the model's (--size): recorded only then, and compared always (a record
    # without it, made before the option or without it, reads as None: done for a run without --size).
    size = getattr(normalizer, "size", None)
    if size == getattr(normalizer, "image_size", None):  # --size 112 of a 112 px model: the face without --size
        size = None
    sized = {"size": size} if size else {}
    summary = Summary()
    # The grid's rows in the order given: this run's faces, and the side-by-side files of photos already done (read
    # only when a grid is made). Past GRID_ROWS made faces none can be among the first GRID_ROWS rows.
    grid_rows: list[np.ndarray | Path] = []
    faces_made = 0
    grid_due = not (out / GRID).exists()  # a rerun with every photo done leaves the grid as it is, if there is one
    for batch in _batches(plan.planned, batch_size):
        # Rows and grid entries by the photo's place in the batch: the table, manifest and grid keep the order given
        # (before, the photos left alone came first in each batch, then those normalized).
        placed: dict[int, Row] = {}
        shown: dict[int, np.ndarray | Path] = {}
        todo: list[tuple[int, Planned, np.ndarray, str, dict[str, str], str]] = []
        for place, item in enumerate(batch):
            source_sha, why = input_sha256(item.source)
            if source_sha is None:  # unreadable (permissions, vanished): that photo's row, the batch goes on
                placed[place] = Row(str(item.source), "unreadable", None, why)
                continue
            png, record_path, _ = item.files(out)
            taken = occupied(item.files(out))
            read = reading(item.source)
            provenance = {
                "input_sha256": source_sha,
                "model_sha256": model_sha,
                "detector": detector,
                "detail": detail,
                "face": face_rule,
                "size": size,
                **read,
            }
            verdict = rerun_verdict(read_record(record_path), provenance, png.is_file(), taken, overwrite)
            if verdict == "done":
                placed[place] = Row(str(item.source), "done", str(png), "already normalized with this model")
                if faces_made < GRID_ROWS:  # the grid shows the folder, not only what this run added
                    shown[place] = item.files(out)[2]
                continue
            if verdict == "exists":
                reason = (
                    f"{taken[0]} exists (another input, model, detector, {words.settings} settings, or not "
                    f"facekit's): {words.overwrite} replaces"
                )
                placed[place] = Row(str(item.source), "exists", None, reason)
                continue
            image, note = load_rgb(item.source)
            if image is None:
                placed[place] = Row(str(item.source), "unreadable", None, note)
                continue
            todo.append((place, item, image, source_sha, read, note))
        outcomes = normalize_counting(
            normalizer, [t[2] for t in todo], [t[1].source.stem for t in todo], on_detected, batch_size
        )
        for (place, item, image, source_sha, read, note), outcome in zip(todo, outcomes, strict=True):
            if outcome.face is None:
                placed[place] = Row(str(item.source), outcome.status, None, outcome.reason or NO_FACE)
                continue
            png, record, side = item.files(out)
            face = outcome.face
            details = {
                "source": str(item.source),
                **made_from(item.source),
                "input_sha256": source_sha,
                "model": str(model),
                "model_sha256": model_sha,
                "detector": detector,
                "detail": detail,
                "face": face_rule,
                **sized,
                "status": outcome.status,
                "box": [round(v, 1) for v in face.box],
                "faces_found": face.faces_found,
                "landmarks": None if face.landmarks is None else np.round(face.landmarks, 2).tolist(),
                "source_landmarks": np.round(face.source_landmarks, 2).tolist(),
                **read,
                **({"reading": note} if note else {}),  # greyscale, alpha over grey, the first of N frames
            }
            pair = side_by_side(image, outcome, height=max(224, face.image.shape[0]))  # a --size 448 face at its size
            files = with_record(record, details, [(png, png_bytes(face.image)), (side, png_bytes(pair))])
            failed = write_files(files, out)
            if failed:
                placed[place] = Row(str(item.source), "unwritable", None, failed)
                continue
            placed[place] = Row(str(item.source), "ok", str(png))
            grid_due = True
            if faces_made < GRID_ROWS:
                shown[place] = side_by_side(image, outcome, height=160)
                faces_made += 1
        rows = [placed[place] for place in sorted(placed)]
        grid_rows.extend(shown[place] for place in sorted(shown))
        # A stop (Ctrl+C) waits for the batch's rows to be written and told: before, one as they were told said
        # "stopped at 5/24" with 16 written.
        with stops_held():
            _append_manifest(out, rows)
            summary.rows.extend(rows)
            for row in rows:
                if on_row is not None:
                    on_row(row)
    thumbnails: list[np.ndarray] = []
    for entry in grid_rows if grid_due else []:
        if len(thumbnails) < GRID_ROWS:
            thumbnails.extend(_earlier_thumbnail(entry) if isinstance(entry, Path) else [entry])
    if thumbnails and not write_grid:
        why = "it is one of the inputs" if grid_is_input else "a file not made by facekit is there (--overwrite)"
        summary.grid_left = f"{out / GRID} not written: {why}"
    if thumbnails and write_grid:
        width = max(t.shape[1] for t in thumbnails)
        padded = [np.pad(t, ((0, 4), (0, width - t.shape[1]), (0, 0)), constant_values=255) for t in thumbnails]
        summary.grid = out / GRID
        write_atomic(summary.grid, png_bytes(np.vstack(padded), FIGURE_MARK), out)
    return summary


def normalize_counting(
    normalizer: Any, images: list[Any], names: list[str], on_detected: Callable[[], None] | None, *more: Any
) -> list[Any]:
    """``normalizer.normalize_many(images, names, *more)`` with ``on_detected`` (a count that takes no index, as
    :meth:`facekit.progress.PhotoCount.detected`) called as each photo's face detection ends: the folder commands'
    per-photo bar (normalize, the infer stage, avatar). Without it, ``normalize_many`` is called without the keyword,
    so that a normalizer's own that does not take it still serves."""
    told = {} if on_detected is None else {"on_detected": lambda index: on_detected()}
    outcomes: list[Any] = normalizer.normalize_many(images, names, *more, **told)
    return outcomes


def _check_manifest(path: Path) -> bool:
    """Whether ``path`` is a manifest facekit wrote (its first line a row); False when there is none. Anything else
    there is a FacekitError: rows are never appended to someone else's file."""
    if not path.exists():
        return False
    try:
        with path.open(encoding="utf-8") as handle:
            first = handle.readline()
        row = json.loads(first) if first.strip() else {}
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        row = None
    if not isinstance(row, dict) or (row and not {"input", "status"} <= row.keys()):
        raise FacekitError(f"{path} is not a facekit manifest: choose another output folder (-o) or move it away")
    return True


def _append_manifest(out: Path, rows: list[Row]) -> None:
    path = out / MANIFEST
    if path.is_symlink():
        raise FacekitError(f"{path} is a symbolic link: refusing to write through it")
    try:
        with path.open("a", encoding="utf-8") as handle:
            handle.writelines(row.to_json() + "\n" for row in rows)
            handle.flush()
            os.fsync(handle.fileno())
    except OSError as error:
        raise FacekitError(f"could not write {path}: {error.strerror}") from None
