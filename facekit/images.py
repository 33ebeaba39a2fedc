"""Reading photos and converting at component boundaries: files, PIL images and arrays -> (H, W, 3) uint8 RGB;
facekit's (B, 3, H, W) float RGB in [0, 1] <-> (H, W, 3) uint8 RGB arrays.

Numpy and Pillow at import (torch tensors are accepted but torch is not imported; OpenCV only inside
:func:`downscale`), so plugins and light modules can use it.
"""

from __future__ import annotations

import contextlib
import functools
import inspect
import io
import math
import os
import re
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np

from facekit.errors import FacekitError, PhotoUnreadable


def to_uint8_rgb(images: Any) -> list[np.ndarray]:
    """(B, 3, H, W) float in [0, 1] (torch, any float dtype, or numpy) -> list of B (H, W, 3) uint8 RGB arrays,
    clipped to [0, 1] and rounded."""
    array = images.detach().float().cpu().numpy() if hasattr(images, "detach") else np.asarray(images)
    if array.ndim != 4 or array.shape[1] != 3:
        raise ValueError(f"expected images of shape (B, 3, H, W), got {tuple(array.shape)}")
    return [
        np.ascontiguousarray((np.clip(img, 0, 1).transpose(1, 2, 0) * 255).round().astype(np.uint8)) for img in array
    ]


#: Photos larger than this are refused from their header, before any pixel is decoded (a 449 KB PNG can declare
#: 144 megapixels and take gigabytes to decode). ``FACEKIT_MAX_MEGAPIXELS`` changes it.
DEFAULT_MAX_MEGAPIXELS = 50.0


def max_megapixels() -> float:
    value = os.environ.get("FACEKIT_MAX_MEGAPIXELS", "")
    try:
        limit = float(value) if value else DEFAULT_MAX_MEGAPIXELS
    except ValueError:
        raise FacekitError(f"FACEKIT_MAX_MEGAPIXELS must be a number of megapixels, got {value!r}") from None
    if not limit > 0:
        raise FacekitError(f"FACEKIT_MAX_MEGAPIXELS must be positive, got {value!r}")
    if math.isinf(limit * 1e6):  # (before: 'inf', '1e400' or '1e303' ended in an OverflowError traceback, raising
        # Pillow's guard to int(limit * 1e6))
        raise FacekitError(
            f"FACEKIT_MAX_MEGAPIXELS must be a finite number of megapixels, at most 1e302, got {value!r}"
        )
    return limit


#: How :func:`load_rgb`'s reason begins when a photo is refused for its pixel count (before decoding).
TOO_LARGE = "too large"
#: How :func:`load_rgb`'s reason begins for a HEIC/HEIF photo (a phone's default), which Pillow does not decode.
HEIC = "a HEIC/HEIF photo"
#: Why :func:`load_rgb` refuses a photo whose file ends before its pixels do (a download or copy interrupted), in
#: the same words whether it was read from its path, from its bytes or as a PIL image (Pillow's differ: a mapped
#: TIFF's "buffer is not large enough" from its path, "image file is truncated (N bytes not processed)" from its
#: bytes; QOI's "index out of range").
CUT_SHORT = "cut short: the file ends before its picture does; copy or download it again"
#: The ISO base media brands of HEIC/HEIF stills and sequences (bytes 8-12 of the file, after ``ftyp``).
HEIC_BRANDS = (b"heic", b"heix", b"heim", b"heis", b"hevc", b"hevx", b"mif1", b"msf1")


_PILLOW_GUARD = threading.Lock()
_pillow_before: list[int | None] = []  # the limit the guard's holder puts back on leaving


def _pillow_guard_after_fork() -> None:
    """A forked child gets a new guard: one held at the fork by another of the parent's threads (reading a large
    photo) would stay held in the child, where that thread does not exist, and its next large photo waited forever;
    the limit that thread raised is put back, as it would have put it back on leaving."""
    global _PILLOW_GUARD
    if _PILLOW_GUARD.locked() and _pillow_before:
        from PIL import Image

        Image.MAX_IMAGE_PIXELS = _pillow_before[-1]
    _PILLOW_GUARD = threading.Lock()


if hasattr(os, "register_at_fork"):  # (POSIX's: Windows' os has none, and no fork to mend)
    os.register_at_fork(after_in_child=_pillow_guard_after_fork)


@contextlib.contextmanager
def open_image(source: Any) -> Iterator[Any]:
    """``PIL.Image.open(source)`` under the megapixel limit :func:`load_rgb` reads with (a photo it accepted never
    trips Pillow's own, lower guard when opened again, e.g. for its profile or EXIF)."""
    from PIL import Image

    with _pillow_limit(max_megapixels()), Image.open(source) as opened:
        yield opened


#: PIL modes whose colour :func:`load_rgb` converts from an embedded profile (grey and CMYK photos keep their values).
MANAGED_MODES = ("RGB", "RGBA", "RGBa", "P", "PA")


def managed_profile(opened: Any) -> bytes | None:
    """The ICC profile :func:`load_rgb` converts the opened PIL image ``opened`` from to sRGB, or None (no profile,
    sRGB, unusable, or a mode it does not convert)."""
    icc = opened.info.get("icc_profile")
    if opened.mode not in MANAGED_MODES or srgb_profile(icc) is not False:
        return None
    return bytes(icc)


@contextlib.contextmanager
def _pillow_limit(limit: float) -> Iterator[None]:
    """Pillow's decompression-bomb guard raised to ``limit`` megapixels inside the block only, when the user allowed
    more than Pillow's own limit. The guard is a process-wide setting that other code in the process relies on, so it
    is restored on leaving; Pillow checks it in ``open`` and, for some formats, in ``load``/``seek``, so the block
    spans the decode. Threads that need the raised guard take turns (a lock); others never see it changed for long."""
    from PIL import Image

    if Image.MAX_IMAGE_PIXELS is None or limit * 1e6 <= Image.MAX_IMAGE_PIXELS:
        yield
        return
    with _PILLOW_GUARD:
        before = Image.MAX_IMAGE_PIXELS
        _pillow_before[:] = [before]
        Image.MAX_IMAGE_PIXELS = int(limit * 1e6)
        try:
            yield
        finally:
            Image.MAX_IMAGE_PIXELS = before


def load_rgb(path: Path | bytes | bytearray | memoryview, colour_manage: bool = True) -> tuple[np.ndarray | None, str]:
    """Read a photo (a file, or its bytes already read) as (H, W, 3) uint8 sRGB. Returns (image, note) or (None, why
    it is unreadable).

    Alpha is composited over mid-grey; greyscale is expanded to three equal channels (the monochrome filter then
    rejects it), 16-bit greyscale scaled to 8 bits; EXIF orientation is applied. An RGB photo with an embedded colour
    profile other than sRGB (a phone's Display P3, Adobe RGB) is converted to sRGB (:func:`to_srgb`; the note says
    so; ``colour_manage=False``: its values as stored). A photo whose header declares more than
    :func:`max_megapixels` is refused before decoding.
    """
    from PIL import Image, UnidentifiedImageError

    limit = max_megapixels()
    try:
        source: Path | io.BytesIO = Path(path) if isinstance(path, (str, Path)) else io.BytesIO(bytes(path))
        if (source.stat().st_size if isinstance(source, Path) else len(source.getbuffer())) == 0:
            return None, "unreadable (empty file)"
        with _pillow_limit(limit), Image.open(source) as opened:
            if opened.size[0] * opened.size[1] / 1e6 > limit:
                return None, _too_large(f"{opened.size[0]} x {opened.size[1]}", opened.size[0] * opened.size[1], limit)
            return pil_to_rgb(opened, colour_manage, own=True)
    except Image.DecompressionBombError as exc:  # Pillow's guard fired first (at twice its own limit)
        pixels = re.search(r"\((\d+) pixels\)", str(exc))
        return None, _too_large("", int(pixels.group(1)) if pixels else None, limit)
    except (OSError, UnidentifiedImageError, SyntaxError, ValueError, RuntimeError, IndexError) as exc:
        # (RuntimeError: Pillow's AVIF plugin, for a damaged file libavif cannot parse, "Missing or empty image item";
        # IndexError: its QOI decoder, for a file cut short, "index out of range")
        if isinstance(source, Path) and (dangling := broken_link(source)):  # (asked only when reading failed)
            return None, f"unreadable ({dangling})"
        if isinstance(exc, UnidentifiedImageError) and _is_heic(source):  # before: "cannot identify image file"
            return None, f"unreadable ({HEIC}, which facekit does not decode: convert it to JPEG or PNG first)"
        if isinstance(exc, UnidentifiedImageError):  # before: "UnidentifiedImageError: cannot identify image file
            # '/the/whole/path.jpg'", Pillow's class and the path the row already names
            return None, "unreadable (not an image file: damaged, or another kind of file under a photo's name)"
        if cut_short(exc):
            return None, f"unreadable ({CUT_SHORT})"
        return None, f"unreadable ({type(exc).__name__}: {exc})"


def cut_short(error: BaseException) -> bool:
    """Whether Pillow raised ``error`` reading a photo whose file ends before its pixels do (:data:`CUT_SHORT`)."""
    return (
        isinstance(error, IndexError)  # (QOI's decoder: "index out of range")
        # (a decoder's "image file is truncated (N bytes not processed)"; a TIFF directory's "Truncated File Read")
        or (isinstance(error, OSError) and str(error).lower().startswith(("image file is truncated", "truncated file")))
        # (an uncompressed TIFF read from its path: Pillow maps the file, and the map is shorter than its pixels)
        or (isinstance(error, ValueError) and str(error) == "buffer is not large enough")
    )


def broken_link(path: Path) -> str:
    """What is wrong with ``path`` when it is a link to nothing ("a link to X, which does not exist"), else ""."""
    try:
        if not path.is_symlink() or path.exists():
            return ""
        target = os.readlink(path)
        # (a chain of links ending nowhere, or a loop: the first link's target is there, as a link)
        ending = "which leads nowhere" if os.path.lexists(path.parent / target) else "which does not exist"
        return f"a link to {target}, {ending}"
    except OSError:
        return ""


def _is_heic(source: Path | io.BytesIO) -> bool:
    """Whether a file Pillow could not identify begins as a HEIC/HEIF photo (``ftyp`` box, a HEIF brand)."""
    try:
        if isinstance(source, Path):
            with source.open("rb") as handle:
                head = handle.read(12)
        else:
            head = source.getvalue()[:12]
    except OSError:
        return False
    return head[4:8] == b"ftyp" and head[8:12] in HEIC_BRANDS


def _megapixels_above(pixels: int, limit: float) -> str:
    """``pixels`` in megapixels, with the fewest digits (two significant at least) that read above ``limit``: whole
    megapixels read "0 MP > 0.01 MP" for a 200 x 200 photo and "50 MP > 50 MP" for a 50.3 MP one."""
    megapixels = pixels / 1e6
    shown = f"{megapixels:.0f}"
    for digits in range(2, 12):
        decimals = max(0, digits - 1 - math.floor(math.log10(megapixels))) if megapixels > 0 else 0
        shown = f"{megapixels:.{decimals}f}"
        shown = shown.rstrip("0").rstrip(".") if "." in shown else shown
        if float(shown) > limit:
            break
    return shown


def _too_large(size: str, pixels: int | None, limit: float) -> str:
    """Why a photo of ``size`` (``"W x H"``, or "") and ``pixels`` (None: past Pillow's own limit) is refused."""
    shown = f"{_megapixels_above(pixels, limit)} MP" if pixels is not None else "over Pillow's limit"
    return f"{TOO_LARGE} ({f'{size} = ' if size else ''}{shown} > {limit:g} MP; set FACEKIT_MAX_MEGAPIXELS to allow it)"


def pil_to_rgb(opened: Any, colour_manage: bool = True, own: bool = False) -> tuple[np.ndarray, str]:
    """An opened PIL image as (H, W, 3) uint8 sRGB and a note, as :func:`load_rgb` reads photos: EXIF orientation
    applied, 16-bit greyscale scaled to 8 bits, alpha composited over mid-grey, an RGB profile other than sRGB
    converted (``colour_manage``); of an animated GIF or WebP or a multi-page TIFF, the first frame (the note says
    so). ``own``: ``opened`` is this call's to change (:func:`load_rgb`'s, closed after): its profile is converted
    in its own pixels, not into a copy beside them; else ``opened`` is left as it is."""
    # A phone's JPEG with a second, embedded image opens as MPO with 2 frames: the photo is the first, no news.
    frames = _frame_count(opened) if opened.format != "MPO" else 1
    rgb, note = _frame_to_rgb(opened, colour_manage, own)
    if frames > 1:
        note = "; ".join(n for n in (note, f"the first of {frames} frames") if n)
    return rgb, note


def _frame_count(opened: Any) -> int:
    """How many frames the opened PIL image ``opened`` holds; 1 when a later one is too damaged to be counted (a TIFF
    whose next-page pointer leads to garbage: Pillow raises TypeError or KeyError from ``n_frames``; helper-86: the
    batch ended in a traceback), with ``opened`` back at its first frame, the photo."""
    import struct

    try:
        return int(getattr(opened, "n_frames", 1) or 1)
    except (OSError, SyntaxError, ValueError, TypeError, KeyError, IndexError, struct.error):
        opened.seek(0)
        return 1


#: EXIF orientation (:func:`exif_orientation`: EXIF's, or XMP's, as Pillow reads both) -> the numpy view of stored
#: pixels ``(H, W, ...)`` that shows them upright: the turns of Pillow's ``Image.Transpose`` (FLIP_LEFT_RIGHT,
#: ROTATE_180, FLIP_TOP_BOTTOM, TRANSPOSE, ROTATE_270, TRANSVERSE, ROTATE_90). Not ``ImageOps.exif_transpose``, which
#: after turning the pixels writes the EXIF back without the tag and raises on any tag it read but cannot write
#: (helper-86: such a photo's batch ended in a traceback).
UPRIGHT: dict[int, Callable[[np.ndarray], np.ndarray]] = {
    1: lambda a: a,
    2: lambda a: a[:, ::-1],
    3: lambda a: a[::-1, ::-1],
    4: lambda a: a[::-1],
    5: lambda a: np.swapaxes(a, 0, 1),
    6: lambda a: np.rot90(a, -1),
    7: lambda a: np.swapaxes(a, 0, 1)[::-1, ::-1],
    8: lambda a: np.rot90(a, 1),
}


def stored_view(upright: np.ndarray, orientation: int) -> np.ndarray:
    """The view of ``upright`` pixels in the layout the photo stores them under EXIF ``orientation``: writing the
    stored pixels into it turns them upright in ``upright`` itself (every turn but 6 and 8, each other's inverse,
    undoes itself)."""
    return UPRIGHT[{6: 8, 8: 6}.get(orientation, orientation)](upright)


def exif_orientation(opened: Any) -> int:
    """The EXIF orientation (1-8) of the PIL image ``opened``; 1 (as stored) when it has none or a value of another
    type than the tag's."""
    orientation = opened.getexif().get(0x0112)
    return orientation if isinstance(orientation, int) and 1 <= orientation <= 8 else 1


#: Why :func:`as_rgb` refuses a PIL image of a turned, uncompressed TIFF that Pillow loaded by mapping its file
#: (:func:`_load_unmapped`): its pixels are scrambled in the image itself, past mending from them.
SCRAMBLED_TIFF = (
    "it is an uncompressed TIFF turned by its Orientation tag, whose pixels Pillow scrambled as it loaded them from "
    "the file: give the path, or the image as Image.open(path) returns it, before anything loads it"
)


def _turned_tiff(opened: Any) -> bool:
    """Whether the opened PIL image ``opened`` is a TIFF stored turned a quarter (EXIF/TIFF orientation 5-8)."""
    return opened.format == "TIFF" and getattr(opened, "tag_v2", {}).get(0x0112) in (5, 6, 7, 8)


def _load_unmapped(opened: Any) -> None:
    """``opened.load()``, an uncompressed TIFF turned a quarter read from the file Pillow holds open, not mapped.

    Pillow (11-12.3) maps an uncompressed TIFF's pixels (RGBA, CMYK, grey, palette, 16-bit grey) with the size it
    reports, already turned upright for these orientations, then turns them again: rows of the wrong length, a
    scrambled photo from its path (its bytes read right). Without a file name Pillow reads from the file it holds open
    instead of mapping it; a caller's image (:func:`as_rgb`) gets its name back after (before, helper-158: a photo
    opened by the caller, ``normalize(Image.open(path))``, was scrambled where its path read right). One a caller
    already loaded that way is refused (:data:`SCRAMBLED_TIFF`): Pillow took the turn off its tags as it turned it,
    so the file it still holds mapped says what it was."""
    if getattr(opened, "tile", None) and getattr(opened, "filename", "") and _turned_tiff(opened):
        filename, opened.filename = opened.filename, ""
        try:
            opened.load()
        finally:
            opened.filename = filename
        return
    opened.load()
    mapped = getattr(opened, "map", None)
    if (
        opened.format == "TIFF"
        and mapped is not None
        and opened.tag_v2.get(0x0112) is None
        and opened.size == (opened.tag_v2.get(0x0100), opened.tag_v2.get(0x0101))  # its stored size, not turned
        and opened.size[0] != opened.size[1]  # (a square one maps right: its stored and turned sizes are the same)
    ):
        from PIL import Image

        try:
            # (the map read as a file, from its start: its directory only, no pixel decoded and no copy made)
            mapped.seek(0)
            with Image.open(mapped) as stored:
                stored.seek(opened.tell())
                turned = _turned_tiff(stored)
        except (OSError, SyntaxError, ValueError, EOFError):  # (the file changed under the map since)
            turned = False
        if turned:
            raise ValueError(SCRAMBLED_TIFF)


def _frame_to_rgb(opened: Any, colour_manage: bool, own: bool = False) -> tuple[np.ndarray, str]:
    from PIL import Image

    _load_unmapped(opened)
    # EXIF orientation applies to an image as decoded from its file; a PIL image derived from one (rotated by hand,
    # resized: format None) carries the tag along but is already as its maker wants it. The pixels are turned as the
    # array is made (every step below is per pixel): before, Pillow's upright copy was held beside the image read,
    # 4 bytes a pixel more at the peak of reading a turned photo (a 48 MP one's: +192 MB); the values are the same.
    orientation = exif_orientation(opened) if opened.format else 1
    image = opened
    if image.mode in ("I", "F") or image.mode.startswith("I;16"):
        # PIL's convert("RGB") clips 16-bit values at 255 (a white photo): scale 16 bits to 8 (older Pillow opens
        # 16-bit PNGs as "I"; values past 16 bits are scaled by their own maximum). Every 16-bit layout, I;16N (native
        # order) too: it was left to convert (helper-86: white).
        # A float image ("F") in 0..255 keeps its scale, one in 0..1 (a float TIFF as science tools write it; it
        # read as black, helper-65) is scaled to 0..255: one that runs to 1 on a 0..255 scale is black either way.
        # One whose highlights overshoot 1 a little (up to 2, at most 1 % of pixels past 1: specular pixels after
        # processing) is 0..1 too, clipped at white: it read as black on the 0..255 scale (helper-66).
        # The scale is the finite values' (helper-86: a single inf pixel, read as 1.8e308, set it and made the whole
        # photo black); NaN reads black, and +-inf are clipped to white and black.
        wide = np.asarray(image, dtype=np.float64)
        finite = wide[np.isfinite(wide)]
        peak = float(finite.max()) if finite.size else 0.0
        wide = np.where(np.isnan(wide), 0.0, wide)
        unit = image.mode == "F" and 0.0 < peak <= 2.0 and (peak <= 1.0 or float(np.percentile(finite, 99)) <= 1.0)
        # A 32-bit integer PIL image made in memory ("I", no file format) whose values stay within 0..255 keeps that
        # scale, as a float one does: what ``Image.fromarray`` makes of an int32 array of 8-bit values (it read
        # black, 1/257 of its brightness). A file read as "I" (a 16-bit PNG under older Pillow) and one that
        # declares 16 bits (I;16*) are read on the 16-bit scale whatever their values (helper-94: a dark 16-bit
        # PNG would read 257 times too bright).
        in_memory_int = image.mode == "I" and opened.format is None
        eight_bit = (image.mode == "F" or in_memory_int) and peak <= 255.0
        top = 1.0 if unit else 255.0 if eight_bit else max(65535.0, peak)
        grey = np.clip(wide / top * 255.0 + 0.5, 0, 255).astype(np.uint8)
        note = "greyscale (float 0..1)" if unit else "greyscale" if top == 255.0 else "greyscale (16-bit)"
        return np.repeat(UPRIGHT[orientation](grey)[..., None], 3, axis=2), note
    note, colour = "", image.mode in MANAGED_MODES  # grey and CMYK photos are not converted
    if _transparent(image):
        rgba = _rgba(image)
        background = Image.new("RGBA", rgba.size, (128, 128, 128, 255))
        image = Image.alpha_composite(background, rgba)
        note = "alpha composited over grey"
    elif image.mode in ("L", "1"):
        note = "greyscale"
    rgb = image if image.mode == "RGB" else image.convert("RGB")  # (convert copies even an RGB image)
    if colour_manage and colour:
        # In place where the pixels are this call's (a copy made above, or load_rgb's own file): before, the
        # converted image was made beside the one read, 4 bytes a pixel more at the peak of reading a phone's P3
        # photo (benchmarks/adjust.py --memory); the values are the same (little CMS converts each pixel alone, so
        # before the turn as after it).
        # (never into a file's pixels Pillow mapped read-only: a raw RGBX or RGBA frame opened from a file)
        in_place = (own or rgb is not opened) and not getattr(rgb, "readonly", False)
        rgb, managed = to_srgb(rgb, opened.info.get("icc_profile"), in_place=in_place)
        note = "; ".join(n for n in (note, managed) if n)
    return rgb_array(rgb, orientation), note


def _transparent(image: Any) -> bool:
    """Whether the PIL ``image`` (8-bit) is transparent somewhere as :func:`load_rgb` reads it: an alpha band,
    premultiplied too (RGBa lost its transparency, La was refused), or a transparent colour or palette entry (a
    PNG's tRNS on an RGB or grey photo, as PNG optimizers store a cut-out's binary alpha: it read as that colour,
    black where the background was meant to be gone; a GIF's)."""
    return image.mode in ("RGBA", "LA", "PA", "RGBa", "La") or (
        image.mode in ("P", "RGB", "L", "1") and "transparency" in image.info
    )


def _rgba(image: Any) -> Any:
    """The transparent PIL ``image`` (:func:`_transparent`) as RGBA (Pillow converts La to nothing but LA)."""
    return (image.convert("LA") if image.mode == "La" else image).convert("RGBA")


def stored_rgba(opened: Any) -> tuple[np.ndarray, np.ndarray] | None:
    """The opened PIL image's first frame as :func:`load_rgb` reads it before it composites its alpha over grey:
    (its RGB values as stored, no colour profile applied, (H, W, 3) uint8; its alpha, (H, W) uint8), both upright;
    None where it is not transparent (:func:`_transparent`; 16-bit grey has no alpha here). For a format whose
    alpha OpenCV does not read as stored (a TIFF's it premultiplies) or at all (a GIF's transparent entry), so that
    ``facekit adjust`` writes it with the photo it corrects."""
    _load_unmapped(opened)
    if not _transparent(opened):
        return None
    orientation = exif_orientation(opened)  # (after loading: Pillow takes a turned TIFF's off as it turns it)
    rgba = np.asarray(_rgba(opened))
    turn = UPRIGHT[orientation]
    return np.ascontiguousarray(turn(rgba[..., :3])), np.ascontiguousarray(turn(rgba[..., 3]))


#: The most bytes of pixels :func:`rgb_array` takes from a PIL image at a time.
ARRAY_STRIP_BYTES = 16 << 20


def rgb_array(image: Any, orientation: int = 1) -> np.ndarray:
    """The RGB PIL ``image`` as an (H, W, 3) uint8 array, a strip of rows at a time when it is large, turned upright
    as EXIF ``orientation`` says (each strip written into its place: no second image). ``np.asarray`` holds the
    pixels twice over besides the image (Pillow's ``tobytes`` joins its chunks), and with the copy ``convert("RGB")``
    made of an RGB image, reading a 48 MP JPEG took 650 MB for its 144 MB of pixels (``facekit serve`` peaked at twice
    its usual memory); the values are the same."""
    width, height = image.size
    rows = max(1, ARRAY_STRIP_BYTES // (3 * width))
    if rows >= height and orientation == 1:
        return np.asarray(image)
    out = np.empty((height, width, 3) if orientation <= 4 else (width, height, 3), np.uint8)
    # (pixels as 3-byte items: numpy moves a turned pixel at once, twice as fast as its bytes one by one, and as fast
    # as Pillow's transpose was)
    stored = stored_view(out.view("V3")[..., 0], orientation)
    for top in range(0, height, rows):
        strip = image if rows >= height else image.crop((0, top, width, min(height, top + rows)))
        stored[top : top + rows] = np.asarray(strip).view("V3")[..., 0]
        del strip  # (let go before the next is cut: one strip held at a time)
    out.flags.writeable = False  # as np.asarray's of a whole image (before: writable when large, read-only when small)
    return out


#: sRGB's primaries as an ICC profile states them (XYZ of R, G, B, adapted to the D50 connection space).
SRGB_COLORANTS = np.array([[0.4361, 0.2225, 0.0139], [0.3851, 0.7169, 0.0971], [0.1431, 0.0606, 0.7141]])


def _ramps() -> Any:
    """A probe image: grey, red, green and blue ramps over all 256 levels and a few mixed colours (as PIL RGB)."""
    from PIL import Image

    levels = np.arange(256, dtype=np.uint8)
    zero = np.zeros(256, np.uint8)
    rows = [np.stack([levels, levels, levels], 1), np.stack([levels, zero, zero], 1)]
    rows += [np.stack([zero, levels, zero], 1), np.stack([zero, zero, levels], 1)]
    rows.append(np.stack([levels, levels[::-1], levels * np.uint8(7)], 1))  # the third wraps: mixed colours
    return Image.fromarray(np.stack(rows, 0))


def _transform(image: Any, icc: bytes, in_place: bool = False) -> Any:
    """``image`` (PIL RGB) from the profile ``icc`` to sRGB (little CMS, relative colorimetric): a new image, or
    ``image`` itself converted (``in_place``; little CMS reads each row before writing it: the same values). Raises
    on a profile it cannot use (ImageCms.PyCMSError, OSError, ValueError), ``image`` then unchanged (the transform
    is made before any pixel is)."""
    from PIL import ImageCms

    source = ImageCms.ImageCmsProfile(io.BytesIO(icc))
    target = ImageCms.createProfile("sRGB")
    converted = ImageCms.profileToProfile(
        image,
        source,
        target,
        renderingIntent=ImageCms.Intent.RELATIVE_COLORIMETRIC,
        outputMode="RGB",
        inPlace=in_place,
    )
    return image if in_place else converted


def srgb_profile(icc: Any) -> bool | None:
    """Whether the ICC profile ``icc`` describes sRGB (True for no profile): every level of a grey and three primary
    ramps goes through its conversion to sRGB within one level (so primaries and curve both match). None when it is
    not an RGB profile little CMS can use (unreadable, grey, CMYK, broken tags)."""
    if not icc:
        return True
    if not isinstance(icc, bytes | bytearray) or icc[16:20] != b"RGB ":  # a TIFF's tag may hold a number
        return None
    return _converts_as_srgb(bytes(icc))


@functools.lru_cache(maxsize=16)
def _converts_as_srgb(icc: bytes) -> bool | None:
    """:func:`srgb_profile` for an RGB profile's bytes, once per profile (reading, adjust and its checks ask several
    times per photo, and a photo folder shares one or two profiles; each answer is a little CMS transform)."""
    try:
        probe = _ramps()
        moved = np.abs(np.asarray(_transform(probe, icc), np.int16) - np.asarray(probe, np.int16)).max()
    except Exception:  # noqa: BLE001  (ImageCms.PyCMSError is a plain Exception; Pillow raises others on bad tags)
        return None
    return bool(moved <= 1)


def profile_primaries(icc: Any) -> np.ndarray | None:
    """The RGB colorants (3, 3: XYZ of R, G, B rows, D50) of a matrix ICC profile ``icc``; None without a profile, for
    sRGB (:func:`srgb_profile`) or when it states none (a table-only profile)."""
    if not icc or srgb_profile(icc) is not False:
        return None
    from PIL import ImageCms

    try:
        profile = ImageCms.ImageCmsProfile(io.BytesIO(icc)).profile
        colorants = [profile.red_colorant, profile.green_colorant, profile.blue_colorant]
        xyz = np.array([c[0] for c in colorants if c is not None], np.float64)
    except Exception:  # noqa: BLE001  (as srgb_profile)
        return None
    return xyz if xyz.shape == (3, 3) and abs(np.linalg.det(xyz)) > 1e-6 else None


def _profile_name(icc: bytes) -> str:
    from PIL import ImageCms

    try:
        name = ImageCms.getProfileDescription(ImageCms.ImageCmsProfile(io.BytesIO(icc)))
    except Exception:  # noqa: BLE001  (a description in another encoding than the tag's: PyCMSError)
        name = ""
    return (name or "").strip() or "unnamed"


def to_srgb(image: Any, icc: Any, in_place: bool = False) -> tuple[Any, str]:
    """The RGB PIL ``image`` converted from its embedded ICC profile ``icc`` to sRGB (relative colorimetric, little
    CMS through Pillow), and a note; as it is when the profile is sRGB or absent (no note) or unusable (a note).
    Never raises for a bad profile: a photo is never lost to its profile. ``in_place``: ``image``'s own pixels are
    converted (no second image of its size) and ``image`` is returned."""
    srgb = srgb_profile(icc)
    if srgb:
        return image, ""
    unusable = "colour profile not an RGB profile facekit can use: values read as sRGB"
    if srgb is None:
        return image, unusable
    assert icc is not None
    try:
        converted = _transform(image, icc, in_place)
    except Exception:  # noqa: BLE001  (as srgb_profile)
        return image, unusable
    return converted, f"converted from its colour profile ({_profile_name(icc)}) to sRGB"


def downscale(photo: np.ndarray, side: int) -> np.ndarray:
    """``photo`` shrunk (area averaging) so that its long side is at most ``side`` pixels; small photos as they are."""
    import cv2

    scale = side / max(photo.shape[:2])
    if scale >= 1.0:
        return photo
    size = (max(1, round(photo.shape[1] * scale)), max(1, round(photo.shape[0] * scale)))
    return cv2.resize(photo, size, interpolation=cv2.INTER_AREA)


def is_encoded(image: Any) -> bool:
    """Whether ``image`` is a photo still in its file's form (a path, the file's bytes, an open file), which
    :func:`as_rgb` decodes, rather than decoded pixels (an array, a PIL image)."""
    return isinstance(image, str | os.PathLike | bytes | bytearray | memoryview) or hasattr(image, "read")


def read_photos(
    images: Any, names: Any, caller: str, bgr: bool = False
) -> tuple[list[np.ndarray | None], list[str], dict[int, str]]:
    """``images`` each read by :func:`as_rgb` (``None`` stays None: unreadable) and ``names`` as lists, for
    ``caller``'s batch (``measure_faces``), with why each photo that cannot be read is None: {index: reason}. A
    damaged, missing or oversized file, a closed or damaged PIL image, or an image over the megapixel limit or
    without pixels costs that photo, not the batch (:class:`PhotoUnreadable`; the CLI's rule for a folder). A path or
    bytes given instead of a list (its characters were read as photos), lists of other lengths, or a form
    :func:`as_rgb` cannot take (an array of the wrong shape or dtype, a file open in text mode) is a FacekitError
    naming ``caller`` and the input: the caller's mistake, not the photo's. A plain RGB array comes back as it is (no
    copy). ``bgr``: the arrays are in OpenCV's order (:func:`as_rgb`); a file or PIL image among them is then a
    FacekitError (it has its own order, and bgr would be ignored for it). Every photo is decoded before this returns:
    :func:`photo_lists` and :func:`read_photo` read them one at a time (``normalize_many``)."""
    images, names = photo_lists(images, names, caller, bgr)
    read: list[np.ndarray | None] = []
    reasons: dict[int, str] = {}
    for index, (image, name) in enumerate(zip(images, names, strict=True)):
        array, why = read_photo(image, name, caller, bgr)
        read.append(array)
        if why:
            reasons[index] = why
    return read, names, reasons


def photo_lists(images: Any, names: Any, caller: str, bgr: bool = False) -> tuple[list[Any], list[str]]:
    """``images`` and ``names`` as lists of one length, for ``caller``'s batch, none of them read yet: what
    :func:`read_photos` refuses before it reads a photo (a path or bytes instead of a list, lists of other lengths, a
    file or PIL image with ``bgr``), refused in its words."""
    if isinstance(images, str | os.PathLike | bytes) or isinstance(names, str | os.PathLike | bytes):
        raise FacekitError(f"{caller} takes a list of photos and a list of their names: {caller}([photo], [name])")
    images, names = list(images), list(names)  # (a generator has no len)
    if len(images) != len(names):
        raise FacekitError(f"{caller}: {len(images)} images but {len(names)} names")
    for image, name in zip(images, names, strict=True):
        if bgr and (is_encoded(image) or hasattr(image, "mode")):
            raise FacekitError(
                f"{caller}: {name}: bgr=True is for arrays in OpenCV's order; a file or PIL image has its own: with "
                "bgr=True, give arrays only"
            )
    return images, names


def read_photo(image: Any, name: str, caller: str, bgr: bool = False) -> tuple[np.ndarray | None, str]:
    """One of ``caller``'s photos read by :func:`as_rgb`, as :func:`read_photos` reads each: (array, "") or, where
    the photo cannot be read, (None, why); None given is (None, ""). A form :func:`as_rgb` cannot take is a
    FacekitError naming ``caller`` and ``name``."""
    if image is None:
        return None, ""
    try:
        return as_rgb(image, bgr=bgr), ""
    except PhotoUnreadable as error:
        return None, str(error)
    except FacekitError as error:
        raise FacekitError(f"{caller}: {name}: {error}") from None


def as_rgb(image: Any, bgr: bool = False) -> np.ndarray:
    """A photo as (H, W, 3) uint8 RGB, read the same way whatever form it comes in: a path or the file's bytes (read
    with :func:`load_rgb`), an open binary file, a PIL image (as :func:`load_rgb` reads a file: EXIF orientation,
    16-bit grey, alpha over mid-grey, colour profile; one derived from an opened image, by ``convert``, ``resize`` or
    ``rotate``, is taken as its pixels are, its EXIF orientation not applied again: ``ImageOps.exif_transpose`` the
    opened image first), or an array: (H, W, 3) uint8 RGB (BGR with ``bgr=True``,
    OpenCV's order; ``bgr`` with a file or PIL image, which have their own order, is a FacekitError), (H, W) uint8
    greyscale, or (H, W, 4) uint8 with alpha
    (composited over mid-grey, as a file's); a torch tensor is read as such an array, from whatever device it is on
    (channels last: a (3, H, W) float tensor, as torchvision holds images, is refused with the expression that
    converts it). Every form is held to :func:`max_megapixels`. Anything else, or an
    empty image, is a FacekitError that says what was given (:class:`PhotoUnreadable` where the photo itself cannot be
    read: a missing, damaged or oversized file, a closed or damaged PIL image, too many megapixels, no pixels)."""
    if not isinstance(bgr, bool):
        raise FacekitError(f"bgr must be True or False, got {bgr!r}")
    if bgr and (is_encoded(image) or hasattr(image, "mode")):  # (it was ignored: the app's caller got no word)
        raise FacekitError("bgr=True is for arrays in OpenCV's order; a file or PIL image has its own: give it without")
    if is_encoded(image):
        if isinstance(image, io.TextIOBase):  # (helper-72: its read() raised UnicodeDecodeError before this was said)
            raise FacekitError("expected a photo; the file given is open in text mode: open it with 'rb'")
        reads, cap = hasattr(image, "read"), _max_file_bytes()
        try:
            data = _read_capped(image, cap) if reads else image
        except (UnicodeDecodeError, io.UnsupportedOperation):  # a text reader not an io.TextIOBase (codecs'), or a
            # file open for writing: how it was opened, the caller's mistake (both are ValueErrors: caught first)
            raise FacekitError(
                "expected a photo; the file given is not open for reading bytes (text mode, or writing): open it "
                "with 'rb'"
            ) from None
        except (OSError, ValueError) as error:  # closed (ValueError), or its device failed
            raise PhotoUnreadable(f"the file given cannot be read: {error}") from None
        if reads and isinstance(data, str):
            raise FacekitError("expected a photo; the file given is open in text mode: open it with 'rb'")
        if reads and len(data) > cap:  # (before: read whole: /dev/zero ran out memory)
            raise PhotoUnreadable(
                f"the file given is {TOO_LARGE}: over {cap / 1e6:.0f} MB, more than a photo of "
                f"{max_megapixels():g} megapixels takes (FACEKIT_MAX_MEGAPIXELS) even uncompressed"
            )
        array, why = load_rgb(Path(data) if isinstance(data, str | os.PathLike) else data)
        if array is None:
            raise PhotoUnreadable(f"{image if isinstance(image, str | os.PathLike) else 'the photo given'}: {why}")
        return array
    if hasattr(image, "convert") and hasattr(image, "mode"):  # a PIL image
        check_size(image.size[0], image.size[1])
        try:
            return pil_to_rgb(image)[0]
        except (OSError, ValueError, AssertionError, SyntaxError, IndexError) as error:  # cut short, closed, damaged
            # (helper-72: a raw "image file is truncated", or a bare AssertionError for a closed one)
            why = CUT_SHORT if cut_short(error) else str(error)
            why = why or "it is closed or its file is gone (use it inside its `with Image.open(...)` block)"
            raise PhotoUnreadable(f"the PIL image given cannot be read: {why}") from None
    if image is None:
        raise FacekitError("expected a photo (a path, PIL image or array), got None")
    tensor = is_torch_tensor(image)
    if tensor:
        if image.dtype != _torch_uint8():  # (said before numpy sees it: it has no bfloat16)
            raise FacekitError(_not_uint8(str(image.dtype), tuple(image.shape), tensor=True))
        # (one that needs grad, or on a GPU: np.asarray raised torch's RuntimeError or TypeError, not facekit's)
        image = image.detach().cpu()
    array = np.asarray(image)
    # A number or a flat list is no photo whatever its type (before: 5 was "expected a uint8 image, got dtype int64").
    if array.dtype == object or array.dtype.kind in "SU" or (array.ndim < 2 and not isinstance(image, np.ndarray)):
        raise FacekitError(f"expected a photo (a path, PIL image or array), got {type(image).__name__}")
    if array.dtype != np.uint8:
        raise FacekitError(_not_uint8(str(array.dtype), array.shape, tensor=False))
    if array.ndim == 3 and array.shape[2] == 1:
        array = array[..., 0]
    if array.ndim not in (2, 3) or (array.ndim == 3 and array.shape[2] not in (3, 4)):
        what = "a torch tensor of shape" if tensor else "shape"
        fix = _layout_fix(array.shape, tensor)
        raise FacekitError(f"expected an (H, W, 3) RGB image, got {what} {array.shape}" + (f"; {fix}" if fix else ""))
    check_size(array.shape[1], array.shape[0])
    if array.ndim == 2:
        return np.repeat(array[..., None], 3, axis=2)
    if array.shape[2] == 4:  # its alpha over mid-grey, as load_rgb reads a file's
        from PIL import Image

        rgba = array[..., [2, 1, 0, 3]] if bgr else array
        return pil_to_rgb(Image.fromarray(np.ascontiguousarray(rgba), "RGBA"))[0]
    return np.ascontiguousarray(array[..., ::-1] if bgr else array)


def is_torch_tensor(image: Any) -> bool:
    """Whether ``image`` is a torch tensor (torch is not imported for it: a tensor means torch already is)."""
    import sys

    torch = sys.modules.get("torch")
    return torch is not None and isinstance(image, torch.Tensor)


def _torch_uint8() -> Any:
    import torch

    return torch.uint8


def _channels_first(shape: tuple[int, ...]) -> bool:
    """Whether an image of ``shape`` holds its channels first, (C, H, W), as torch and torchvision hold images."""
    return len(shape) == 3 and shape[0] in (1, 3, 4) and shape[2] not in (1, 3, 4)


def _as_hwc(shape: tuple[int, ...], tensor: bool) -> str:
    """The expression that makes an image ``x`` of ``shape`` (H, W, C): ``x`` itself, its channels moved last
    (a (C, H, W) one), or the image of a batch of one, (1, H, W, C) or (1, C, H, W); "" when none fits."""
    one = len(shape) == 4 and shape[0] == 1
    inner = shape[1:] if one else shape
    base = "x[0]" if one else "x"
    if _channels_first(inner):
        return base + (".permute(1, 2, 0)" if tensor else ".transpose(1, 2, 0)")
    return base if len(inner) in (2, 3) else ""


def _layout_fix(shape: tuple[int, ...], tensor: bool) -> str:
    """What to give instead of an image of ``shape`` that is not (H, W, 3) (:func:`_as_hwc`); "" when it is not
    known."""
    fix = _as_hwc(shape, tensor)
    if fix == "x" or not fix:
        return ""
    said = "a batch of one image" if fix.startswith("x[0]") else ""
    said = ", ".join(w for w in (said, "channels first" if "(1, 2, 0)" in fix else "") if w)
    return f"{said}: give {fix}"


def _not_uint8(dtype: str, shape: tuple[int, ...], tensor: bool) -> str:
    """Why an array or torch tensor of ``dtype`` is refused, with the expression that makes it (H, W, 3) uint8: a
    tensor's in torch's words, its channels moved last where they come first (both fixes in one line)."""
    base = _as_hwc(shape, tensor) or "x"
    to = ".to(torch.uint8)" if tensor else ".astype(np.uint8)"
    floating = dtype.removeprefix("torch.") in ("float16", "bfloat16", "float32", "float64") or dtype.startswith(
        "float"
    )
    hint = (
        f"for floats in 0..1: ({base} * 255).round(){to}; in 0..255: {base}.round(){to}"
        if floating
        else f"for 16 bits: ({base} >> 8){to}"
        if dtype == "uint16" and not tensor
        else "convert it to uint8 (0-255)"
    )
    given = f"{'a torch tensor of ' if tensor else ''}dtype {dtype}" + (f" and shape {shape}" if base != "x" else "")
    return f"expected a uint8 image (0-255), got {given}; {hint}"


def _max_file_bytes() -> int:
    """The most bytes :func:`as_rgb` reads from an open file: a photo of :func:`max_megapixels` at 16 bits a channel
    with alpha, uncompressed (8 bytes a pixel), and room for its metadata."""
    return int(max_megapixels() * 8e6) + 16 * 2**20


def _read_capped(file: Any, cap: int) -> Any:
    """What is left in the open ``file``, read until its end or until more than ``cap`` bytes came (a raw or
    unbuffered file may give fewer bytes than asked for before its end); a file in text mode gives its first str. An
    object whose read() takes no size (a hand-made wrapper of bytes in memory) is read whole, as before the cap."""
    if not _takes_a_size(file.read):
        return _not_awaited(file.read())
    chunks: list[bytes] = []
    total = 0
    while total <= cap:
        chunk = _not_awaited(file.read(min(cap + 1 - total, 2**24)))
        if isinstance(chunk, str):
            return chunk
        if not chunk:  # (its end; None: a non-blocking file with nothing more now)
            break
        chunks.append(chunk)
        total += len(chunk)
    return b"".join(chunks)


def _not_awaited(chunk: Any) -> Any:
    """What a file's read() gave, unless it is to be awaited (an async upload object's): a FacekitError saying what
    to give instead, the coroutine closed (before: "object of type 'coroutine' has no len()", and "never awaited")."""
    if inspect.isawaitable(chunk):
        if inspect.iscoroutine(chunk):
            chunk.close()
        raise FacekitError(
            "expected a photo; the file given reads asynchronously (FastAPI's UploadFile, aiofiles): give its "
            "`.file`, or the bytes of `await upload.read()`"
        )
    return chunk


def _takes_a_size(read: Any) -> bool:
    """Whether the method ``read`` can be called with a number of bytes (True when it has no signature to read: a
    built-in file's, mmap's)."""
    try:
        inspect.signature(read).bind(1)
    except TypeError:
        return False
    except ValueError:
        return True
    return True


def check_size(width: int, height: int) -> None:
    """A photo given as an image rather than a file is held to the same :func:`max_megapixels` as a file (a
    :class:`PhotoUnreadable`), and an empty one is refused."""
    limit = max_megapixels()
    if width * height / 1e6 > limit:
        raise PhotoUnreadable(_too_large(f"{width} x {height}", width * height, limit))
    if width == 0 or height == 0:
        raise PhotoUnreadable(f"expected a photo, got an empty image ({width} x {height})")
