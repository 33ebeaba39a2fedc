"""The work behind ``facekit serve``: an uploaded photo -> every result the page shows, with the models loaded once.

    engine = Engine.load(model="dlib", sfm="sfm_shape_3448.bin", workdir=folder)
    analysis = engine.analyze(path)          # read, check, detect and normalize every face (cached by sha256)
    result = engine.result(analysis.sha256, 0)   # the largest face: detections, normalized face, adjust, avatar, ...
    mine = engine.result(analysis.sha256, 0, name="IMG_1234.jpg")   # the same, as IMG_1234-normalized.png, ...
    with engine.analyzing(path) as analysis:     # a page's request: the photo decoded once for both steps
        result = engine.result(analysis.sha256, 0)

No web framework here (:mod:`facekit_serve.web` holds the page), so the chain is tested without a browser. Every
problem with an upload is an :class:`UploadError` whose message is written for the person who sent the photo.

Threads: the page may run a few requests at once (``--concurrency``). The normalizers (torch, dlib) run one call at a
time under a lock; the avatar's OpenGL context belongs to the thread that made it, so every avatar is fitted,
rendered and exported on one dedicated thread. Results are cached per upload (by the sha256 of its bytes) in a
bounded LRU; an entry's files are deleted when it is evicted or when the last session holding it ends. A face's
results, and their files under a visitor's name, are made by the first request for them; the requests for the
same meanwhile wait for those (:class:`Making`). No file is written under the cache lock, which every request takes.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import hashlib
import io
import itertools
import json
import logging
import os
import re
import shutil
import struct
import threading
import time
import unicodedata
import zipfile
from collections import OrderedDict
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np

from facekit.apps import ESTIMATE_SIDE, RETRY_SIDE, faces_on_copies
from facekit.apps.adjust import FaceAdjuster
from facekit.errors import FacekitError

log = logging.getLogger(__name__)

#: Faces offered per photo (largest first); a crowd photo offers its 8 largest.
MAX_FACES = 8
#: The long side, in pixels, of the copy faces are detected, normalized and measured on (as ``facekit adjust``: one of
#: ``facekit.apps.RETRY_SIDE`` when that shows no face, :func:`facekit.apps.faces_on_copies`).
DETECT_SIDE = ESTIMATE_SIDE
#: The long side of the adjusted photo and the before/after shown on the page (the full-size file is a download).
PREVIEW_SIDE = 2048
#: The side of the normalized face shown with its landmarks (an integer multiple of the model's size).
NORMALIZED_SIDE = 448
#: A megabyte as the page counts it (Gradio's upload limit is in units of 1024 x 1024 bytes).
MB = 1024 * 1024
#: Uploads kept in the result cache.
CACHE_ENTRIES = 16
#: The start of a download's name when the upload's name leaves nothing usable (see :func:`download_stem`).
DOWNLOAD_FALLBACK = "photo"
#: The longest start of a download's name, in UTF-8 bytes (a file name may have 255 on most file systems).
DOWNLOAD_STEM_BYTES = 96
#: The names one upload's downloads are given (its visitors' file names); more fall back to DOWNLOAD_FALLBACK, so
#: that the same bytes sent under ever new names do not copy its results ever again.
NAMED_VIEWS = 4
#: The name of the avatar's files (GLB; OBJ, MTL and texture in the zip) as made, before a visitor's name is given.
AVATAR_NAME = "avatar"
#: The hex digits of the upload's sha256 in the name of its avatar's OBJ zip and of the folder inside
#: (``IMG_1234-avatar-obj-5f3a9c1e.zip``): as many as ``sha256sum``'s first that tell two photos' zips apart.
BUNDLE_TAG_DIGITS = 8

#: The most bytes of an image's rows Pillow puts in one block of memory, in the server's process (Pillow's own: 16 MB).
#: Above glibc's largest mmap threshold (32 MB), each block of a large photo is mapped on its own and given back to
#: the system when freed. With 16 MB blocks a photo's decoded image (4 bytes a pixel) stayed in the request thread's
#: heap once freed: a 48 MP upload's 190 MB were still resident under its correction and the encoder's copy
#: (benchmarks/adjust.py --memory). A small image's block is its own size, as before; the pixels are the same.
PILLOW_BLOCK_BYTES = 64 << 20

Progress = Callable[[float, str], None]


class UploadError(FacekitError):
    """A photo the page cannot use; the message is shown on the page as it is."""


def return_freed_images() -> None:
    """Make Pillow allocate images in blocks of :data:`PILLOW_BLOCK_BYTES`, given back to the system when freed (a
    process-wide setting: for the server's own process, set before its models load)."""
    from PIL import Image

    Image.core.set_block_size(PILLOW_BLOCK_BYTES)


def normalized_display_side(image_size: int) -> int:
    """The side of the normalized face as shown: the model's ``image_size`` times the largest whole factor that
    stays within :data:`NORMALIZED_SIDE` (at least 1)."""
    return image_size * max(1, NORMALIZED_SIDE // image_size)


# ------------------------------------------------------------------------------------------------ reading uploads


def read_upload_bytes(path: str | Path, max_bytes: int) -> bytes:
    """The bytes of an uploaded file, or an :class:`UploadError` that says in plain words what is wrong: missing,
    empty, over ``max_bytes``."""
    file = Path(path)
    if not file.is_file():
        raise UploadError("The upload did not arrive. Please send the photo again.")
    size = file.stat().st_size
    if size == 0:
        raise UploadError("The file is empty. Please choose a photo (JPEG, PNG or WebP).")
    if size > max_bytes:
        raise UploadError(
            f"The file is {size / MB:.1f} MB, over this server's limit of {max_bytes / MB:.3g} MB. Please send a "
            "smaller photo (or start the server with a larger --max-upload-mb)."
        )
    return file.read_bytes()


#: What visitors read when the server has no 3-D avatar (why, and how the operator fixes it, is the console's
#: ``avatar_note``: the server's model store paths are not the visitor's business).
VISITOR_AVATAR_NOTE = "The 3-D avatar is not available on this server."


def decode_upload(data: bytes, name: str = "upload") -> np.ndarray:
    """The (H, W, 3) uint8 RGB photo in an upload's bytes, or an :class:`UploadError`: not an image, damaged or cut
    short, too many pixels."""
    from facekit.images import HEIC, TOO_LARGE, load_rgb

    photo, why = load_rgb(data)
    if photo is None:
        log.info("unreadable upload %s: %s", name, why)
        if why.startswith(TOO_LARGE):
            # The size only: how the server's operator raises the limit (an environment variable) is not the
            # visitor's business.
            detail = why.removeprefix(TOO_LARGE).strip().removeprefix("(").split(";")[0].removesuffix(")")
            raise UploadError(f"The photo is too large ({detail}). Please send a smaller photo.")
        if HEIC in why:  # before: "may be damaged, cut short, or not an image at all"
            raise UploadError(
                "This is a HEIC photo (a phone's default format), which facekit does not read. Please upload it as "
                "JPEG, PNG or WebP (on an iPhone: Settings > Camera > Formats > Most Compatible, or share it as JPEG)."
            )
        raise UploadError(
            "This file is not a photo facekit can read: it may be damaged, cut short, or not an image at all. "
            "Please upload a JPEG, PNG or WebP photo."
        )
    return photo


def read_upload(path: str | Path, max_bytes: int) -> tuple[bytes, np.ndarray]:
    """The bytes and the (H, W, 3) uint8 RGB photo of an uploaded file (:func:`read_upload_bytes`, then
    :func:`decode_upload`; the file is read once)."""
    data = read_upload_bytes(path, max_bytes)
    return data, decode_upload(data, Path(path).name)


#: What a download's name keeps of no upload's name: characters that separate folders or are refused by Windows,
#: macOS or Gradio (which drops them from the file it serves: the name would not be the one given).
UNSAFE_IN_NAMES = re.compile(r'[<>:"/\\|?*`$!{}]')

#: The names Windows takes for a device's, up to a file name's first dot (``CON.backup-normalized.png`` is CON).
WINDOWS_DEVICES = frozenset(
    ["CON", "PRN", "AUX", "NUL"]
    + [f"{port}{digit}" for port in ("COM", "LPT") for digit in "0123456789\u00b9\u00b2\u00b3"]
)


def download_stem(name: str | None) -> str:
    """The start of the name of a download made from the upload ``name`` (its own name, without folder or
    extension): ``IMG_1234.jpg`` -> ``IMG_1234``. Control and format characters (a right-to-left override that shows
    ``gpj.exe`` as ``exe.jpg``) go, characters a file system refuses become ``_``, runs of spaces one space, leading and
    trailing dots, spaces and hyphens go (a hidden file, an option to a shell command), one that begins as a Windows
    device's name up to a dot (``CON.backup``) gets a ``_`` before it; at most
    :data:`DOWNLOAD_STEM_BYTES` bytes of UTF-8, in the NFC form of the name's letters (a Mac sends "é" as "e" and an
    accent); :data:`DOWNLOAD_FALLBACK` when nothing is left."""
    base = unicodedata.normalize("NFC", re.split(r"[/\\]", name or "")[-1])
    stem = os.path.splitext(base)[0]  # a name that is only an extension (".jpg") keeps it
    kept = "".join(
        " " if char.isspace() else char
        for char in stem
        if char.isspace() or char in "\u200c\u200d" or not unicodedata.category(char).startswith("C")
    )  # (zero-width non-joiner and joiner are letters' business in Persian, Indic scripts and emoji)
    stem = re.sub(r" +", " ", UNSAFE_IN_NAMES.sub("_", kept)).strip(" .-")
    if "." in stem and stem.partition(".")[0].rstrip(" ").upper() in WINDOWS_DEVICES:  # ("CON-..." is no device's)
        stem = f"_{stem}"
    while len(stem.encode()) > DOWNLOAD_STEM_BYTES:
        stem = stem[:-1]
    return stem.rstrip(" .-") or DOWNLOAD_FALLBACK


def no_face_message(width: int, height: int, detector: Any) -> str:
    """What the page says when ``detector`` found no face in a ``width`` x ``height`` photo: the core's reason
    (:func:`facekit.normalize.no_face_reason`: a photo too small or too thin to hold a face it finds, else the
    narrowest face it finds, in the photo's pixels; faces are looked for on a copy at most ``RETRY_SIDE`` px on its
    long side), as a sentence, and what to send instead. (Before, the page's own rule: "about 80 pixels" for dlib,
    which finds a face of 32 px; the command line said only "no face found".)"""
    from facekit.normalize import no_face_reason

    reason = no_face_reason(detector, width, height, RETRY_SIDE)
    return (
        f"{reason[:1].upper()}{reason[1:]}. Please try a photo where a face is clearly visible, roughly frontal and "
        "large enough."
    )


def renamed_glb(source: Path, target: Path, name: str) -> None:
    """Write the avatar's GLB ``source`` to ``target`` with its material, mesh and node named ``name`` where they
    are named :data:`AVATAR_NAME` (before, every visitor's GLB was linked as made: ``IMG_1234-avatar.glb`` held a
    material "avatar", which is what Blender and other editors list when several avatars are imported into one
    scene). glTF's JSON is UTF-8, so ``name`` is kept as it is; the JSON chunk is padded with spaces to 4 bytes, as
    GLB asks, and the binary chunk is copied unchanged."""
    data = source.read_bytes()
    magic, version, _ = struct.unpack_from("<4sII", data, 0)
    length, kind = struct.unpack_from("<I4s", data, 12)
    if magic != b"glTF" or version != 2 or kind != b"JSON":
        raise FacekitError(f"{source} is not a binary glTF 2.0 file: the avatar's GLB was not written whole")
    gltf = json.loads(data[20 : 20 + length])
    for key in ("materials", "meshes", "nodes"):
        for entry in gltf.get(key, []):
            if entry.get("name") == AVATAR_NAME:
                entry["name"] = name
    text = json.dumps(gltf, ensure_ascii=False, separators=(",", ":")).encode()
    text += b" " * (-len(text) % 4)
    rest = data[20 + length :]
    target.write_bytes(
        struct.pack("<4sII", b"glTF", 2, 20 + len(text) + len(rest))
        + struct.pack("<I4s", len(text), b"JSON")
        + text
        + rest
    )


def renamed_obj_bundle(source: Path, target: Path, name: str) -> None:
    """Write the avatar's OBJ zip ``source`` (``avatar.obj``, ``.mtl``, ``.png``, ``LICENCE.txt``) to ``target`` as
    one folder named as the zip (``IMG 1-avatar-obj-5f3a9c1e.zip`` holds ``IMG 1-avatar-obj-5f3a9c1e/``) with the
    files ``NAME.obj``, ``NAME.mtl``, ``NAME.png``, ``NAME-LICENCE.txt`` in it, the OBJ's ``mtllib`` and ``usemtl``
    and the MTL's ``newmtl`` and ``map_Kd`` naming them, where NAME is ``name`` as OBJ files can name it
    (``facekit.batch.plain_name``: ``IMG 1-avatar`` -> ``IMG_1-avatar``; before, ``mtllib IMG 1-avatar.mtl``, which
    MeshLab, tinyobjloader and loaders like them read as a file "IMG": a grey mesh). Before, every download held
    avatar.obj, avatar.mtl and avatar.png, and two avatars unzipped into one folder overwrote each other's (the first
    OBJ then wore the second one's texture); then the files were NAME's, loose, and the zips of ``IMG 1.jpg`` and
    ``IMG_1.jpg``, or of two photos sent as ``IMG_1.jpg``, still unzipped onto each other (helper-155): the folder
    is as unique as the zip's name (:meth:`Engine._named`)."""
    from facekit.batch import plain_name

    folder = target.name.removesuffix(".zip")
    name = plain_name(name)
    old, new = AVATAR_NAME.encode(), name.encode()
    renamed = {  # the lines that name a file or the material: nothing else in either file is touched
        f"{key} ".encode() + old + suffix: f"{key} ".encode() + new + suffix
        for key, suffix in (("mtllib", b".mtl"), ("usemtl", b""), ("newmtl", b""), ("map_Kd", b".png"))
    }
    with zipfile.ZipFile(source) as inside, zipfile.ZipFile(target, "w", zipfile.ZIP_DEFLATED) as outside:
        for member in inside.infolist():
            data = inside.read(member)
            stem, dot, suffix = member.filename.partition(".")
            if stem == AVATAR_NAME and suffix in ("obj", "mtl"):
                data = b"\n".join(renamed.get(line, line) for line in data.split(b"\n"))
            # (the licence too: the same words in every bundle, but unzip would ask to replace it)
            inner = f"{name}{dot}{suffix}" if stem == AVATAR_NAME else f"{name}-{member.filename}"
            outside.writestr(f"{folder}/{inner}", data)


# ------------------------------------------------------------------------------------------------ pictures


def converted_on_reading(source: Path) -> bool:
    """Whether the photo ``source`` is in a colour profile :func:`facekit.images.load_rgb` converts to sRGB (its
    download is its own values corrected: :func:`facekit.apps.adjust.kept_depth`)."""
    from facekit.images import managed_profile, open_image

    with open_image(source) as opened:
        return managed_profile(opened) is not None


def has_alpha(source: Path) -> bool:
    """Whether the photo ``source`` says in its header that it is transparent (an alpha band, or a transparent colour
    or palette entry), which :func:`facekit.images.load_rgb` composites over grey: only then is its alpha read."""
    from facekit.images import open_image

    with open_image(source) as opened:
        return bool({"A", "a"} & set(opened.getbands())) or "transparency" in opened.info


def corrected_again(source: Path, correction: Any) -> np.ndarray:
    """The photo ``source`` read again and corrected in sRGB: a download's fallback where its own values cannot be."""
    from facekit.apps.adjust import apply_correction
    from facekit.images import load_rgb

    photo, why = load_rgb(source)
    if photo is None:
        raise UploadError(f"The photo could not be read again on the server ({why}). Please upload it again.")
    return apply_correction(photo, correction)


def jpeg_bytes(image: np.ndarray, quality: int = 90) -> bytes:
    from PIL import Image

    buffer = io.BytesIO()
    Image.fromarray(image).save(buffer, "JPEG", quality=quality)
    return buffer.getvalue()


def draw_detections(photo: np.ndarray, boxes: list[tuple[float, float, float, float]], chosen: int) -> np.ndarray:
    """``photo`` with each face's box and number drawn (the ``chosen`` one thicker, in yellow)."""
    from PIL import Image, ImageDraw, ImageFont

    image = Image.fromarray(photo)
    draw = ImageDraw.Draw(image)
    width = max(2, round(max(photo.shape[:2]) / 250))
    font = ImageFont.load_default(size=max(12, 6 * width))
    for index, (x0, y0, x1, y1) in enumerate(boxes):
        colour = (255, 220, 0) if index == chosen else (255, 255, 255)
        draw.rectangle((x0, y0, x1, y1), outline=colour, width=width * (2 if index == chosen else 1))
        label = str(index + 1)
        left, top, right, bottom = draw.textbbox((x0, y0), label, font=font)
        draw.rectangle((left - 2, top - 2, right + 2, bottom + 2), fill=(0, 0, 0))
        draw.text((x0, y0), label, fill=colour, font=font)
    return np.asarray(image)


def draw_landmarks(image: np.ndarray, landmarks: np.ndarray, side: int) -> np.ndarray:
    """The (S, S, 3) normalized face enlarged to ``side`` px (bicubic) with its landmarks as green dots."""
    from PIL import Image, ImageDraw

    scale = side / image.shape[0]
    big = Image.fromarray(image).resize((side, side), Image.Resampling.BICUBIC)
    draw = ImageDraw.Draw(big)
    radius = max(1.5, side / 200)
    for x, y in (np.asarray(landmarks, np.float64) + 0.5) * scale - 0.5:
        draw.ellipse((x - radius, y - radius, x + radius, y + radius), fill=(40, 230, 60), outline=(0, 60, 0))
    return np.asarray(big)


# ------------------------------------------------------------------------------------------------ results


@dataclass
class FaceResult:
    """Everything the page shows for one face of one upload; paths are files in the engine's work folder, named for
    what they hold (``normalized.png``) or, asked for with the visitor's file name, after it
    (``IMG_1234-normalized.png``, :meth:`Engine.result`). A part that could not be made has ``None`` and a plain note
    saying why."""

    index: int
    detections: Path
    normalized: Path  # the normalized face enlarged with its landmarks drawn (PNG)
    normalized_png: Path  # the normalized face at the model's size, unmarked (download: normalized.png)
    adjusted: Path  # the adjusted photo, at most PREVIEW_SIDE (JPEG)
    adjusted_full: Path  # full size, in the upload's format with its ICC profile and EXIF (download)
    before_after: Path
    correction: dict[str, Any]
    attributes: dict[str, Any] = field(default_factory=dict)
    photo_attributes: dict[str, Any] = field(default_factory=dict)
    attributes_image: Path | None = None
    attributes_note: str = ""
    avatar_glb: Path | None = None
    avatar_files: list[Path] = field(default_factory=list)
    avatar_renders: Path | None = None
    avatar_note: str = ""  # shown on the page: VISITOR_AVATAR_NOTE, or why this face has no avatar
    comparison: Path | None = None
    comparison_note: str = ""
    seconds: dict[str, float] = field(default_factory=dict)


class Handover:
    """The photo (H, W, 3) uint8 RGB as a request decoded it (:meth:`Engine.analyzing`), for the first face that
    request makes to take (:meth:`Engine._take_photo`), so that the full-size download does not decode the upload
    again. Before, a page's request decoded it twice (to find the faces, then for the download), each time with
    Pillow's image and the array at once: a 48 MP upload's peak, twice (benchmarks/adjust.py --memory)."""

    def __init__(self) -> None:
        self.photo: np.ndarray | None = None


@dataclass
class Analysis:
    """One upload: its sha256, the copy of the photo its faces were found on (``photo``: :data:`DETECT_SIDE` on its long
    side at most, or ``facekit.apps.RETRY_SIDE`` when that showed no face), its full size
    (width, height), its normalized faces (largest first, at most :data:`MAX_FACES`), the results made so far by
    face."""

    sha256: str
    name: str
    source: Path  # the upload's bytes, kept for the full-size adjusted photo
    folder: Path
    size: tuple[int, int]
    photo: np.ndarray
    faces: list[Any]
    seconds: float
    results: dict[int, FaceResult] = field(default_factory=dict)
    #: The results under a visitor's file name, by (:func:`download_stem` of the name, face).
    named: dict[tuple[str, int], FaceResult] = field(default_factory=dict)
    #: The results being made now, by their key in ``results`` (a face) or ``named`` (a name and a face).
    making: dict[Any, Making] = field(default_factory=dict)
    #: The photo as decoded, while the request that decoded it has not made a face yet (:meth:`Engine.analyzing`).
    handover: Handover | None = field(default=None, repr=False)

    @property
    def faces_found(self) -> int:
        """Faces the detector found (``faces`` keeps at most :data:`MAX_FACES`)."""
        return int(self.faces[0].faces_found)


class Making:
    """One result being made by one request (:meth:`Engine.result`): the requests that ask for it meanwhile (two tabs,
    a double click, two visitors sending the same bytes) wait for it and are told the maker's progress, where before
    each made it again into a folder of its own and every one but the first stayed on disk until the upload went."""

    def __init__(self) -> None:
        self._changed = threading.Condition()
        self._progress: tuple[float, str] | None = None
        self._outcome: FaceResult | BaseException | None = None

    def tell(self, fraction: float, text: str) -> None:
        """The maker's progress, for those who wait."""
        with self._changed:
            self._progress = (fraction, text)
            self._changed.notify_all()

    def finish(self, outcome: FaceResult | BaseException) -> None:
        """The result, or the error every waiter raises (the same work fails the same way)."""
        with self._changed:
            self._outcome = outcome
            self._changed.notify_all()

    def wait(self, tell: Progress) -> FaceResult:
        """The result once made, telling ``tell`` the maker's progress meanwhile (on this thread: the latest step
        each time, from the one under way when this request came)."""
        shown = None
        while True:
            with self._changed:
                while self._outcome is None and self._progress == shown:
                    self._changed.wait()
                outcome, progress = self._outcome, self._progress
            if outcome is not None:
                break
            shown = progress
            if progress is not None:
                tell(*progress)
        if isinstance(outcome, BaseException):
            try:
                raise outcome
            finally:  # (this frame goes on the error's traceback: holding the error, or self that does, is a cycle)
                del outcome, self
        return outcome


class Engine:
    """The models, loaded once per process, and the result cache (see the module docstring)."""

    def __init__(
        self,
        normalizer: Any,
        label: str,
        workdir: str | Path,
        max_upload_bytes: int,
        others: list[tuple[str, Any]] | None = None,
        avatar: Any = None,
        avatar_note: str = "",
        cache_entries: int = CACHE_ENTRIES,
    ) -> None:
        self.normalizer, self.label = normalizer, label
        self.adjuster = FaceAdjuster(normalizer)  # corrects as `facekit adjust` does, with this page's normalizer
        self.others = list(others or [])
        self.avatar, self.avatar_note = avatar, avatar_note
        #: Shipped models the comparison leaves out, and why (the console says so; empty when none).
        self.compare_note = ""
        self.workdir = Path(workdir)
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.max_upload_bytes = max_upload_bytes
        self.cache_entries = cache_entries
        self._cache: OrderedDict[str, Analysis] = OrderedDict()
        self._holders: dict[str, set[str]] = {}
        self._cache_lock = threading.Lock()
        self._model_lock = threading.Lock()
        self._gl = ThreadPoolExecutor(max_workers=1, thread_name_prefix="facekit-serve-gl")
        self._serial = itertools.count()
        #: Called with (an evicted upload's files, the sessions still showing it, its sha256) before the files are
        #: deleted: the web layer deletes its served copies of them once those sessions end or show another upload
        #: (facekit_serve.web).
        self.on_evict: Callable[[list[Path], set[str], str], None] | None = None

    # -------------------------------------------------------------------------------------------- loading
    @classmethod
    def load(
        cls,
        workdir: str | Path,
        model: str | None = None,
        checkpoint: str | None = None,
        sfm: str | None = None,
        max_upload_mb: float = 20.0,
        compare: bool = True,
        device: str = "cpu",
    ) -> Engine:
        """Load the normalizing model (``checkpoint``, else the shipped ``model``, else the default), the other
        shipped models for the comparison (when ``compare``), and the avatar app with the Surrey model at ``sfm``
        (default: the model store). A missing Surrey model, avatar plugin or OpenGL driver is a note on the avatar
        tab, not an error: the rest of the page works; a Surrey model named by ``sfm`` that cannot load is one.
        ``device``: where the normalizers run (``facekit serve --device``; a GPU that is not there is a FacekitError
        before any model loads); the adjustment, attributes and avatar work on their faces on the CPU."""
        import facekit
        from facekit.apps.explore import Explorer
        from facekit.models import WeightsNotFoundError
        from facekit.normalize import Normalizer, inference_device, resolve_model, shipped_models

        device = inference_device(device, "device")  # before the models load
        path = resolve_model(model, checkpoint)
        label = Explorer(model=model, checkpoint=checkpoint).label()  # as `facekit explore compare` names columns
        normalizer = Normalizer.from_checkpoint(path, device=device)
        others: list[tuple[str, Any]] = []
        left_out: list[str] = []
        if compare:
            for name in shipped_models():
                other = resolve_model(name)
                if other.resolve() == path.resolve():
                    continue
                try:  # the grid reads decoder_image
                    others.append((name, Explorer(device=device).load_normalizer(other)))
                except (
                    FacekitError
                ) as error:  # its encoder's plugin is not installed (helper-67: the server did not start)
                    left_out.append(f"{name}: {error}")
        engine = cls(normalizer, label, workdir, round(max_upload_mb * MB), others)
        engine.compare_note = "; ".join(f"left out {line}" for line in left_out)
        try:
            maker = facekit.load_component("app", "avatar", sfm=sfm)
        except FacekitError as error:
            if sfm is not None:  # the operator named the model: a missing or damaged one stops the start (before:
                engine.close()  # the server started without the avatar, a console line the only sign)
                raise FacekitError(f"--sfm {sfm}: {error}") from None
            if isinstance(error, WeightsNotFoundError):
                engine.avatar_note = (
                    "The 3-D avatar needs the Surrey Face Model (sfm_shape_3448.bin, free for non-commercial use), "
                    "which this server does not have. Start it with `--sfm PATH`, or run `facekit models import "
                    f"sfm_shape_3448.bin` once. Everything else on this page works without it. ({error})"
                )
            else:  # the avatar plugin is not installed, or the store's model is damaged
                engine.avatar_note = f"The 3-D avatar is not available on this server: {error}"
        else:
            mismatch = _avatar_mismatch()
            if mismatch:  # an installed facekit-avatar without what this server imports from it
                engine.avatar_note = f"The 3-D avatar is not available on this server: {mismatch}"
            else:
                engine.avatar = maker
                engine.avatar_note = engine._gl.submit(_gl_ready).result()
        return engine

    def close(self) -> None:
        """Stop the avatar thread and delete every cached file."""
        self._gl.shutdown(wait=True)
        with self._cache_lock:
            entries = list(self._cache.values())
            self._cache.clear()
            self._holders.clear()
        for entry in entries:
            shutil.rmtree(entry.folder, ignore_errors=True)

    @property
    def labels(self) -> list[str]:
        """The models on the page: this one first, then the other shipped models compared with it."""
        return [self.label, *(label for label, _ in self.others)]

    # -------------------------------------------------------------------------------------------- cache
    def cached(self, sha256: str) -> Analysis | None:
        with self._cache_lock:
            entry = self._cache.get(sha256)
            if entry is not None:
                self._cache.move_to_end(sha256)
            return entry

    def _store(self, analysis: Analysis) -> Analysis:
        """Put ``analysis`` in the cache (or return the one another request stored first); evict the oldest."""
        evicted: list[tuple[Analysis, set[str]]] = []
        with self._cache_lock:
            existing = self._cache.get(analysis.sha256)
            if existing is not None:
                evicted.append((analysis, set()))
                analysis = existing
            else:
                self._cache[analysis.sha256] = analysis
            self._cache.move_to_end(analysis.sha256)
            while len(self._cache) > self.cache_entries:
                _, old = self._cache.popitem(last=False)
                evicted.append((old, self._holders.pop(old.sha256, set())))
        for old, holders in evicted:
            if self.on_evict is not None:
                self.on_evict(sorted(path for path in old.folder.rglob("*") if path.is_file()), holders, old.sha256)
            shutil.rmtree(old.folder, ignore_errors=True)
        return analysis

    def cached_files(self) -> list[Path]:
        """Every file of the uploads in the cache now."""
        with self._cache_lock:
            folders = [entry.folder for entry in self._cache.values()]
        return sorted(path for folder in folders for path in folder.rglob("*") if path.is_file())

    def hold(self, sha256: str, session: str) -> None:
        """Record that ``session`` shows the upload ``sha256`` (its results live until the last holder ends)."""
        with self._cache_lock:
            if sha256 in self._cache:
                self._holders.setdefault(sha256, set()).add(session)

    def release(
        self, session: str, before_delete: Callable[[list[Path]], None] | None = None, keep: str | None = None
    ) -> list[str]:
        """``session`` ended, or shows only the upload ``keep`` now (a page shows one photo at a time): forget the
        uploads only it held (but ``keep``) and delete their files (``before_delete`` is given the list of those
        files first, e.g. to delete copies the web framework made of them). Returns their sha256."""
        dropped: list[Analysis] = []
        with self._cache_lock:
            for sha256, sessions in list(self._holders.items()):
                if sha256 == keep:
                    continue
                sessions.discard(session)
                if not sessions:
                    del self._holders[sha256]
                    entry = self._cache.pop(sha256, None)
                    if entry is not None:
                        dropped.append(entry)
        for entry in dropped:
            if before_delete is not None:
                before_delete(sorted(path for path in entry.folder.rglob("*") if path.is_file()))
            shutil.rmtree(entry.folder, ignore_errors=True)
        return [entry.sha256 for entry in dropped]

    def forget(self, sha256: str) -> bool:
        """Drop the upload ``sha256`` from the cache and delete its files; whether it was there."""
        with self._cache_lock:
            entry = self._cache.pop(sha256, None)
            self._holders.pop(sha256, None)
        if entry is not None:
            shutil.rmtree(entry.folder, ignore_errors=True)
        return entry is not None

    def warm_up(self, photo: str | Path) -> float:
        """Put ``photo`` through the whole chain once and forget it, so that the first visitor does not wait for the
        lazy imports and the OpenGL set-up (seconds). Returns the seconds it took."""
        began = time.perf_counter()
        with self.analyzing(photo) as analysis:
            self.result(analysis.sha256, 0)
        self.forget(analysis.sha256)
        return time.perf_counter() - began

    # -------------------------------------------------------------------------------------------- work
    @contextlib.contextmanager
    def analyzing(
        self, path: str | Path, name: str | None = None, progress: Progress | None = None
    ) -> Iterator[Analysis]:
        """:meth:`analyze`, with the photo as decoded kept for the first face made (:meth:`result`) inside the block:
        the full-size download is made from it, not from the upload decoded again. It goes when that face takes it,
        or when the block ends (a cached upload keeps only its small copy, ``photo``). The same bytes found in the
        cache are not decoded, and their first face, if any is made, reads the upload again."""
        handover = Handover()
        analysis = self.analyze(path, name, progress, handover)
        try:
            yield analysis
        finally:
            with self._cache_lock:
                handover.photo = None
                if analysis.handover is handover:
                    analysis.handover = None

    def _take_photo(self, analysis: Analysis) -> np.ndarray | None:
        """The photo as decoded, handed over by the request that analyzed it (:meth:`analyzing`), to one make only:
        it lets go of the array when it is done with it (before the encoder runs). None: read the upload again."""
        with self._cache_lock:
            handover, analysis.handover = analysis.handover, None
            if handover is None:
                return None
            photo, handover.photo = handover.photo, None
        return photo

    def analyze(
        self,
        path: str | Path,
        name: str | None = None,
        progress: Progress | None = None,
        handover: Handover | None = None,
    ) -> Analysis:
        """Read and check the upload at ``path``, find its faces and normalize them (at most :data:`MAX_FACES`,
        largest first). The same bytes a second time come from the cache. A photo without a face, unreadable, empty
        or too large is an :class:`UploadError`. ``handover``: given the photo as decoded, for the face made next
        (:meth:`analyzing`, which lets it go)."""
        tell = progress or (lambda fraction, text: None)
        tell(0.02, "reading the photo")
        data = read_upload_bytes(path, self.max_upload_bytes)
        sha256 = hashlib.sha256(data).hexdigest()
        found = self.cached(sha256)
        if found is not None:  # the same bytes again: not even decoded
            return found
        began = time.perf_counter()
        full = decode_upload(data, Path(name or str(path)).name)
        tell(0.1, "finding and normalizing the faces")

        def find(copy: np.ndarray) -> list[Any]:
            return list(self.normalizer.normalize(copy, all_faces=True, max_faces=MAX_FACES))

        with self._model_lock:  # a second, larger copy when the first shows no face (a distant face, a group photo)
            photo, faces = faces_on_copies(full, find)
        if not faces:
            raise UploadError(no_face_message(full.shape[1], full.shape[0], self.normalizer.detector))
        folder = self.workdir / f"{sha256[:16]}-{next(self._serial)}"
        folder.mkdir(parents=True)
        suffix = Path(name or str(path)).suffix.lower()[:8] or ".img"
        source = folder / f"upload{suffix}"
        source.write_bytes(data)
        analysis = Analysis(
            sha256=sha256,
            name=Path(name or str(path)).name,
            source=source,
            folder=folder,
            size=(full.shape[1], full.shape[0]),
            photo=photo,
            faces=faces,
            seconds=time.perf_counter() - began,
        )
        stored = self._store(analysis)
        if handover is not None:  # (the same pixels when another request stored these bytes first)
            with self._cache_lock:
                if stored.handover is None:
                    handover.photo, stored.handover = full, handover
        return stored

    def result(
        self, sha256: str, index: int = 0, progress: Progress | None = None, name: str | None = None
    ) -> FaceResult:
        """Every result for face ``index`` (0 = largest) of the cached upload ``sha256``, made once and cached. With
        ``name``, the file name this visitor gave the photo, the files are named after it (:meth:`_named`)."""
        tell = progress or (lambda fraction, text: None)
        analysis = self.cached(sha256)
        if analysis is None:
            raise UploadError("This photo is no longer in the server's memory. Please upload it again.")
        if not 0 <= index < len(analysis.faces):
            raise UploadError(f"There is no face {index + 1} in this photo; choose one of 1-{len(analysis.faces)}.")
        # A new error each time one is raised: one held by a frame it goes through (this one) is a reference cycle,
        # which, raised from a failed make's error, held the make's photo arrays until the garbage collector ran.
        gone = functools.partial(UploadError, "This photo is no longer in the server's memory. Please upload it again.")
        done = analysis.results.get(index)
        if done is None:
            done = self._once(
                analysis, analysis.results, lambda: index, lambda _, told: self._make(analysis, index, told), tell, gone
            )
        return done if name is None else self._named(analysis, done, name, gone)

    def _once(
        self,
        analysis: Analysis,
        results: dict[Any, FaceResult],
        key: Callable[[], Any],
        make: Callable[[Any, Progress], FaceResult],
        tell: Progress,
        gone: Callable[[], UploadError],
    ) -> FaceResult:
        """``results[key()]`` (``key`` is called under the cache lock), made by ``make(key, progress)`` if it is not
        yet: by one request at a time, the others asking meanwhile wait for its result or its error
        (:class:`Making`). The work runs outside the cache lock, which every request's cache lookup takes; an upload
        released or evicted meanwhile (its folder deleted after it left the cache, perhaps while files were still
        being written into it) has all its files deleted once the work stops, and is ``gone()``."""
        with self._cache_lock:
            if self._cache.get(analysis.sha256) is not analysis:
                raise gone()
            wanted = key()
            if wanted in results:
                return results[wanted]
            making = analysis.making.get(wanted)
            mine = making is None
            if making is None:
                making = analysis.making[wanted] = Making()
        try:
            if not mine:
                return making.wait(tell)

            def told(fraction: float, text: str) -> None:
                if making is not None:  # (None once this request is done: the finally below)
                    making.tell(fraction, text)
                tell(fraction, text)

            try:
                made = make(wanted, told)
            except BaseException as error:
                with self._cache_lock:
                    del analysis.making[wanted]
                    kept = self._cache.get(analysis.sha256) is analysis
                if kept or not isinstance(error, Exception):
                    making.finish(error)
                    raise
                # The page closed meanwhile and its files went: say so, leave nothing behind.
                shutil.rmtree(analysis.folder, ignore_errors=True)
                making.finish(gone())
                raise gone() from error
            with self._cache_lock:
                del analysis.making[wanted]
                kept = self._cache.get(analysis.sha256) is analysis
                if kept:
                    results[wanted] = made
            if not kept:  # released (the page closed) or evicted while it was made: nothing of it may stay on disk
                shutil.rmtree(analysis.folder, ignore_errors=True)
                making.finish(gone())
                raise gone()
            making.finish(made)
            return made
        finally:
            # An error raised here holds this frame (its traceback), and ``making`` (``told`` too) holds the error,
            # which its waiters raise: a cycle that kept the error, and the full-size photo arrays in the failed
            # make's frames, until the garbage collector ran (concurrent.futures breaks the same cycle so).
            making = None

    def _named(self, analysis: Analysis, made: FaceResult, name: str, gone: Callable[[], UploadError]) -> FaceResult:
        """``made`` with its files named for a visitor who called the photo ``name``: ``IMG_1234.jpg`` ->
        ``IMG_1234-normalized.png``, ``IMG_1234-adjusted.jpg``, ``IMG_1234-avatar.glb`` (``IMG_1234-face2-...`` in a
        photo with several faces; :func:`download_stem`). Before, every download was ``normalized-face.png``,
        ``adjusted-full.jpg``, ``avatar.glb`` whatever the photo, and a visitor's Downloads folder filled with
        copies of one name. Links to the files (copies where the file system has none) in a folder of their own
        under the face's, made once per name: the results are cached by content, and a visitor who sends the same
        bytes as another must not see the other's file name. At most :data:`NAMED_VIEWS` names per upload (then
        :data:`DOWNLOAD_FALLBACK`): each name's files are served as copies of their own. Linked or copied outside the
        cache lock (:meth:`_once`): a large photo's full-size copy held up every other visitor's request."""
        wanted = download_stem(name)

        def key() -> tuple[str, int]:  # the names given or being given count towards NAMED_VIEWS
            stems = {known for known, _ in analysis.named}
            stems |= {pending[0] for pending in analysis.making if isinstance(pending, tuple)}
            stem = wanted if wanted in stems or len(stems) < NAMED_VIEWS else DOWNLOAD_FALLBACK
            return stem, made.index

        def link_all(named_key: tuple[str, int], _: Progress) -> FaceResult:
            stem = named_key[0]
            folder = made.detections.parent / f"as-{next(self._serial)}"
            face = f"face{made.index + 1}-" if len(analysis.faces) > 1 else ""
            links: dict[Path, Path] = {}

            def link(path: Path) -> Path:
                if path not in links:
                    links[path] = folder / f"{stem}-{face}{path.name}"
                    if path.suffix == ".zip":  # the OBJ bundle: its files get the name too, in a folder of its own
                        # named as the zip, which also carries the start of the upload's sha256: the zips of
                        # "IMG 1.jpg" and "IMG_1.jpg" (the same names inside), or of two photos sent under one name,
                        # unzip side by side.
                        links[path] = folder / f"{stem}-{face}{path.stem}-{analysis.sha256[:BUNDLE_TAG_DIGITS]}.zip"
                        renamed_obj_bundle(path, links[path], f"{stem}-{face}{AVATAR_NAME}")
                        return links[path]
                    if path.suffix == ".glb":  # its material named as the file
                        renamed_glb(path, links[path], links[path].stem)
                        return links[path]
                    try:
                        os.link(path, links[path])
                    except OSError:
                        shutil.copyfile(path, links[path])
                return links[path]

            def maybe(path: Path | None) -> Path | None:
                return None if path is None else link(path)

            try:
                folder.mkdir()  # not parents=True, nor a copy's: a released upload's deleted folder is never made again
                return dataclasses.replace(
                    made,
                    detections=link(made.detections),
                    normalized=link(made.normalized),
                    normalized_png=link(made.normalized_png),
                    adjusted=link(made.adjusted),
                    adjusted_full=link(made.adjusted_full),
                    before_after=link(made.before_after),
                    attributes_image=maybe(made.attributes_image),
                    avatar_glb=maybe(made.avatar_glb),
                    avatar_files=[link(path) for path in made.avatar_files],
                    avatar_renders=maybe(made.avatar_renders),
                    comparison=maybe(made.comparison),
                )
            except BaseException:  # (a full disk): no name's files half made
                shutil.rmtree(folder, ignore_errors=True)
                raise

        return self._once(analysis, analysis.named, key, link_all, lambda fraction, text: None, gone)

    def _make(self, analysis: Analysis, index: int, tell: Progress) -> FaceResult:
        """Every result for face ``index``, in a folder of its own; one that fails (a fit that diverged, a full disk)
        deletes what it wrote (before: its folder stayed until the upload went, one more each time it was asked for
        again)."""
        folder = analysis.folder / f"face{index + 1}-{next(self._serial)}"
        folder.mkdir()  # not parents=True: a released upload's deleted folder is never made again
        try:
            return self._make_in(folder, analysis, index, tell)
        except BaseException:
            shutil.rmtree(folder, ignore_errors=True)
            raise

    def _make_in(self, folder: Path, analysis: Analysis, index: int, tell: Progress) -> FaceResult:
        from facekit.apps.adjust import (
            LOADED_OVER,
            alpha_kept,
            apply_correction,
            before_after,
            encode_corrected,
            grey_corrected,
            grey_read_over,
        )
        from facekit.batch import png_bytes
        from facekit.images import downscale, load_rgb

        face = analysis.faces[index]
        seconds: dict[str, float] = {}
        began = time.perf_counter()

        tell(0.2, "drawing the faces and landmarks")
        boxes = [f.box for f in analysis.faces]
        detections = folder / "detections.jpg"
        detections.write_bytes(jpeg_bytes(draw_detections(analysis.photo, boxes, index)))
        side = normalized_display_side(face.image.shape[0])
        normalized = folder / "landmarks.png"
        normalized.write_bytes(png_bytes(draw_landmarks(face.image, face.landmarks, side)))
        normalized_png = folder / "normalized.png"
        normalized_png.write_bytes(png_bytes(face.image))

        tell(0.3, "adjusting white balance and exposure")
        start = time.perf_counter()
        correction = self.adjuster.settle(analysis.photo, self.adjuster.estimate_faces(analysis.photo, [face]))
        full = self._take_photo(analysis)  # the photo as this request decoded it, else the upload read again
        if full is None:
            full, why = load_rgb(analysis.source)
        if full is None:  # the bytes were read a moment ago: only a full disk or a removed folder gets here
            raise UploadError(f"The photo could not be read again on the server ({why}). Please upload it again.")
        after = apply_correction(full, correction)
        # The previews first, then the photo as read is let go: the full-size download is encoded with only its
        # correction and the encoder's copy of it in memory. Before, the photo read was held too (10 bytes a pixel
        # where 7 will do: a 48 MP upload's peak, above reading it; benchmarks/adjust.py --memory).
        shown_before, shown_after = downscale(full, PREVIEW_SIDE), downscale(after, PREVIEW_SIDE)
        shape = full.shape
        del full
        # A 16-bit or transparent PNG keeps its depth and alpha, a photo in another colour profile its own values:
        # those are read and corrected, and the sRGB correction, which only their fallback writes, is let go first
        # (made again only then). Before, it was held beside them: a P3 upload's peak, 4 bytes a pixel above an sRGB
        # one's (benchmarks/adjust.py --memory). The stored values are decoded again from the upload on purpose: kept
        # from the first decoding they would be held beside the sRGB photo through the faces, 3 bytes a pixel (a
        # 48 MP upload's reading peaked 230 MB higher in a trial), to save one decoding (0.6 s of the request's 20 s
        # without the avatar; helper-162).
        corrected: np.ndarray | Callable[[], np.ndarray] = after
        del after
        if converted_on_reading(analysis.source):
            corrected = functools.partial(corrected_again, analysis.source, correction)
        data, suffix, _ = encode_corrected(analysis.source, shape, corrected, correction)
        del corrected
        adjusted_full = folder / f"adjusted{suffix}"
        adjusted_full.write_bytes(data)
        del data
        adjusted = folder / "adjusted-preview.jpg"
        adjusted.write_bytes(jpeg_bytes(shown_after, 92))
        # A transparent upload's download keeps its alpha: its before/after shows both halves over one backdrop, as
        # `facekit adjust`'s, not the grey load_rgb put behind it, corrected in the after half. The alpha is read
        # (at full size, so after the download is encoded and let go) only where the header says there is one.
        alpha = alpha_kept(analysis.source, shape) if has_alpha(analysis.source) else None
        if alpha is not None:
            alpha = downscale(alpha, PREVIEW_SIDE)  # the previews' size
        over = LOADED_OVER if alpha is None else grey_read_over(analysis.source)
        grey = LOADED_OVER if alpha is None else grey_corrected(correction, shown_after, alpha, over)
        height = min(480, shown_before.shape[0])
        pair = folder / "before-after.jpg"
        pair.write_bytes(
            jpeg_bytes(before_after(shown_before, shown_after, height, alpha=alpha, grey_after=grey, grey_before=over))
        )
        del alpha
        seconds["adjust"] = time.perf_counter() - start

        result = FaceResult(
            index=index,
            detections=detections,
            normalized=normalized,
            normalized_png=normalized_png,
            adjusted=adjusted,
            adjusted_full=adjusted_full,
            before_after=pair,
            correction=correction.to_json(),
        )

        tell(0.4, "measuring skin tone and face shape")
        start = time.perf_counter()
        self._attributes(result, analysis.photo, face, folder)
        seconds["attributes"] = time.perf_counter() - start

        if self.avatar is not None and not self.avatar_note:
            tell(0.5, "fitting and texturing the 3-D avatar")
            start = time.perf_counter()
            self._gl.submit(self._avatar, result, face, folder).result()
            seconds["avatar"] = time.perf_counter() - start
        else:
            result.avatar_note = VISITOR_AVATAR_NOTE  # the reason, with server paths, is on the operator's console

        if self.others:
            tell(0.85, "comparing the models")
            start = time.perf_counter()
            self._compare(result, analysis, face, folder)
            seconds["compare"] = time.perf_counter() - start
        seconds["total"] = time.perf_counter() - began
        result.seconds = seconds
        return result

    def _attributes(self, result: FaceResult, photo: np.ndarray, face: Any, folder: Path) -> None:
        from facekit.apps.attributes import measure_both, overlay
        from facekit.batch import png_bytes

        try:
            result.attributes, result.photo_attributes, result.attributes_note = measure_both(photo, face)
            image = folder / "skin-region.png"
            image.write_bytes(png_bytes(overlay(face, photo)))
            result.attributes_image = image
        except FacekitError as error:  # e.g. the skin region falls outside the image: that tab says so
            result.attributes_note = f"The attributes could not be measured on this face: {error}"

    def _avatar(self, result: FaceResult, face: Any, folder: Path) -> None:
        """On the GL thread: fit, texture and export the avatar (GLB; OBJ + MTL + texture in a zip; the renders)."""
        from facekit_avatar.app import mesh_files

        from facekit.apps.explore import strip
        from facekit.batch import png_bytes

        try:
            avatar = self.avatar.build(face.image[None], np.asarray(face.landmarks)[None])[0]
            files = mesh_files(avatar, self.avatar.model, AVATAR_NAME)
        except FacekitError as error:
            result.avatar_note = f"The 3-D avatar could not be made for this face: {error}"
            return
        glb = folder / f"{AVATAR_NAME}.glb"
        glb.write_bytes(files.pop(f"{AVATAR_NAME}.glb"))
        bundle = folder / f"{AVATAR_NAME}-obj.zip"
        with zipfile.ZipFile(bundle, "w", zipfile.ZIP_DEFLATED) as archive:
            for name, data in files.items():
                archive.writestr(name, data)
            archive.writestr("LICENCE.txt", str(avatar.record.get("licence", "")) + "\n")
        renders = folder / "avatar-renders.png"
        renders.write_bytes(png_bytes(strip(list(avatar.renders.values()), gap=4)))
        result.avatar_glb, result.avatar_files, result.avatar_renders = glb, [glb, bundle], renders

    def _compare(self, result: FaceResult, analysis: Analysis, face: Any, folder: Path) -> None:
        """The same face through every other shipped model: a grid of the photo aligned into this model's frame and
        each model's normalized face (matched to the chosen face by box overlap)."""
        from facekit.apps.attributes import photo_in_face_frame
        from facekit.apps.explore import Comparison
        from facekit.batch import png_bytes
        from facekit.normalize import box_overlap

        cells: dict[str, list[np.ndarray | None]] = {self.label: [face.decoder_image]}  # as `facekit explore compare`
        status: dict[str, list[tuple[str, str]]] = {self.label: [("ok", "")]}
        missing = []
        for label, other in self.others:
            with self._model_lock:  # only the face at this one's box: a crowd costs one face per model
                theirs = other.normalize(analysis.photo, all_faces=True, near=face.box)
            if not theirs or box_overlap(face.box, theirs[0].box) < 0.3:
                cells[label], status[label] = [None], [("no_face", "")]
                missing.append(label)
                continue
            cells[label], status[label] = [theirs[0].decoder_image], [("ok", "")]
        aligned = photo_in_face_frame(analysis.photo, face)[0]
        labels = list(cells)
        # No file name on the picture: it is cached by content and shown to whoever uploads the same bytes.
        grid = Comparison(["photo"], [""], labels, [aligned], cells, status, [], []).grid(cell=192)
        result.comparison = folder / "models-compared.png"
        result.comparison.write_bytes(png_bytes(grid))
        if missing:
            result.comparison_note = f"No face here for {', '.join(missing)} (its own detector did not find it)."


def _avatar_mismatch() -> str:
    """ "" when the installed facekit-avatar has what this server imports from it; else the ImportError in one line,
    with what to install (facekit-serve's ``avatar`` extra names the facekit-avatar it works with; a module
    facekit-avatar itself misses is judged by facekit-avatar's requirements). Before, a facekit-avatar of another
    release (its app registered, a name gone) stopped the server's start, or each avatar, with a traceback."""
    try:
        from facekit_avatar.app import mesh_files  # noqa: F401
        from facekit_avatar.render import renderer  # noqa: F401
    except ImportError as error:
        from facekit.plugins import import_advice

        whose = "facekit-serve" if (error.name or "").split(".")[0] == "facekit_avatar" else "facekit-avatar"
        try:
            dist = metadata.distribution(whose)
        except metadata.PackageNotFoundError:
            dist = None
        return f"{type(error).__name__}: {error}{import_advice(error, dist)}"
    return ""


def _gl_ready() -> str:
    """On the GL thread: make the OpenGL context now, so a machine without a driver says so at start."""
    from facekit_avatar.render import renderer

    try:
        renderer()
    except FacekitError as error:
        return f"The 3-D avatar is not available on this server: {error}"
    return ""


# ------------------------------------------------------------------------------------------------ examples


def example_photos(folder: str | Path) -> list[Path]:
    """A few photos to try, made from the CC BY face shipped with facekit (``facekit/testing_data``, London set,
    DeBruine & Jones 2017): the face as it is, under a warm colour cast, and beside a smaller mirrored copy (two
    faces to choose from)."""
    from importlib import resources

    from PIL import Image

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    source = Path(str(resources.files("facekit") / "testing_data" / "face.jpg"))
    face = Image.open(source).convert("RGB")
    plain = folder / "face.jpg"
    shutil.copyfile(source, plain)
    pixels = np.asarray(face, np.float64)
    warm = np.clip(pixels * np.array([1.12, 0.98, 0.78]) - 8.0, 0, 255).astype(np.uint8)
    cast = folder / "face-warm-cast.jpg"
    Image.fromarray(warm).save(cast, quality=92)
    pair = Image.new("RGB", (face.width * 2 + 40, face.height + 20), (200, 200, 200))
    pair.paste(face, (10, 10))
    small = face.transpose(Image.Transpose.FLIP_LEFT_RIGHT).resize((face.width * 4 // 5, face.height * 4 // 5))
    pair.paste(small, (face.width + 30, 10 + (face.height - small.height) // 2))
    two = folder / "two-faces.jpg"
    pair.save(two, quality=92)
    return [plain, cast, two]
