"""Inference: photo -> detect -> align to the encoder's template -> encode -> decode -> warp -> normalized face.

    from facekit import Normalizer
    normalizer = Normalizer.from_checkpoint()            # the default model shipped with facekit
    face = normalizer.normalize("photo.jpg")             # a path, PIL image or (H, W, 3) uint8 RGB -> NormalizedFace
    faces = normalizer.normalize(image, all_faces=True)  # every face, largest first

A checkpoint carries the names and params of the components it was trained with (decoder, encoder, warper, detector),
so nothing else is needed to rebuild the pipeline.
"""

from __future__ import annotations

import collections
import contextlib
import functools
import itertools
import logging
import numbers
import os
import sys
import threading
import weakref
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, TypeVar, cast, overload

import numpy as np

from facekit.detail import DECODER_ONLY, DetailSettings, photo_shape, transfer_detail
from facekit.errors import (
    DETECTOR_ERROR,
    NO_FACE,
    ComponentNotFoundError,
    DetectorFailed,
    FacekitError,
    NoFaceFound,
)
from facekit.images import is_encoded, is_torch_tensor, to_uint8_rgb
from facekit.registry import built_as, component_label
from facekit.types import FACE_CHOICES, LandmarkScheme, check_face_choice, frozen_encoder  # noqa: F401 (importable here as before)

if TYPE_CHECKING:  # torch is imported where a Normalizer is built or run: `from facekit import Normalizer` (or
    # NormalizedFace, for an annotation) took seconds and 200 MB for torch alone, as `import facekit` does not
    import torch

_Method = TypeVar("_Method", bound=Any)
#: What a Normalizer's ``detail`` takes (:func:`_detail_settings`): DetailSettings, a strength (0 = the decoder's face
#: alone, as ``--detail 0``), a mapping of DetailSettings' fields, or None (the default).
DetailArgument = DetailSettings | float | Mapping[str, Any] | None
logger = logging.getLogger(__name__)


#: Every object that has a turn lock (:func:`turn_of`), so that a forked child can give them new ones.
_TURN_TAKERS: weakref.WeakValueDictionary[int, Any] = weakref.WeakValueDictionary()  # (by id: a dataclass with
# equality, OwnPipelineJudge, is not hashable)


def _after_fork_in_child() -> None:
    """In a process forked from one where torch has run (``multiprocessing``'s default "fork" pool on Linux), torch
    works on one thread: its OpenMP thread pool does not survive a fork, and the child's first parallel operation
    waited forever on the parent's threads (helper-108). One thread a worker is also what a process pool wants (no
    oversubscription); a child that needs more should be started with "spawn".

    A Normalizer's turn lock held at the fork by another of the parent's threads (normalizing while this thread
    forked) would stay held in the child, where that thread does not exist: the child's first photo waited forever
    (stop 52's notes). Such a lock is replaced by a new one; one held by the forking thread itself is kept, which that
    thread releases as it would have in the parent."""
    torch = sys.modules.get("torch")
    if torch is not None:
        torch.set_num_threads(1)
    else:  # not imported yet (`from facekit import Normalizer` imports none): the child's torch, when it comes,
        # starts on one thread too, unless the user chose (before, torch was imported with this module, so a worker
        # of a pool forked before a Normalizer was built got one thread; without this, every core, in each worker)
        os.environ.setdefault("OMP_NUM_THREADS", "1")
    for taker in list(_TURN_TAKERS.values()):
        lock = taker.__dict__.get("_lock")
        if lock is not None and not lock._is_owned():  # (held by no thread, or by one the child does not have)
            taker.__dict__["_lock"] = threading.RLock()


if hasattr(os, "register_at_fork"):  # (POSIX's: Windows' os has none, and no fork to mend)
    os.register_at_fork(after_in_child=_after_fork_in_child)

DEFAULT_MODEL = "default-model.safetensors"

#: The models shipped in ``facekit/assets``, by the encoder they were trained on (``--model NAME``); each file has
#: its sha256 beside it (``FILE.sha256``). The first is the default.
SHIPPED_MODELS: dict[str, str] = {"dlib": DEFAULT_MODEL, "sface": "sface-model.safetensors"}
#: What ``facekit models list`` says of the shipped models' terms: facekit's code is Apache-2.0, but both were
#: trained on data built with dlib's 68-point predictor, trained on iBUG 300-W (README "Data and licences").
SHIPPED_LICENCE = (
    "facekit's (Apache-2.0 code); trained on data built with dlib's iBUG 300-W landmark model: non-commercial "
    "research use only"
)


def shipped_models() -> list[str]:
    """Names of the shipped models present in this install (``SHIPPED_MODELS`` whose file exists)."""
    return [name for name, file in SHIPPED_MODELS.items() if (_assets() / file).is_file()]


def _assets() -> Path:
    return Path(str(resources.files("facekit") / "assets"))


def model_path(name: str = "dlib", verify: bool = True) -> Path:
    """The shipped model ``name`` (a key of ``SHIPPED_MODELS``), checked against the sha256 shipped beside it: a
    damaged or altered file is a ChecksumError."""
    from facekit.models import verify_file

    name = name.lower() if isinstance(name, str) and name.lower() in SHIPPED_MODELS else name  # "SFace" too
    if name not in SHIPPED_MODELS:
        raise FacekitError(f"no shipped model named {name!r}; the shipped models are: {', '.join(SHIPPED_MODELS)}")
    path = _assets() / SHIPPED_MODELS[name]
    if not path.is_file():
        raise FacekitError(f"the shipped model {name!r} is missing from this install ({path}); pass --checkpoint")
    if verify:
        verify_file(path, model_sha256(name), f"the shipped model {name!r} (reinstall facekit)")
    return path


def model_file(path: str | os.PathLike[str] | None) -> Path:
    """The model file ``path`` names: the file, or a shipped model by name ("dlib", "sface", a str or a Path; a
    file of that name is the file; helper-72: a folder named sface in the working folder made it "checkpoint not
    found"); None: the default model. Its existence is the caller's to check."""
    if path is None:
        return default_model_path()
    if str(path).lower() in SHIPPED_MODELS and not Path(path).is_file():
        return model_path(str(path))
    return Path(path)


def model_sha256(name: str = "dlib") -> str:
    """The sha256 recorded for the shipped model ``name``."""
    record = _assets() / f"{SHIPPED_MODELS[name]}.sha256"
    if not record.is_file():
        raise FacekitError(f"the checksum of shipped model {name!r} is missing from this install ({record}); reinstall")
    return record.read_text().split()[0]


def default_model_path(verify: bool = True) -> Path:
    """The default model shipped inside the facekit package (``facekit/assets``), checksum-verified."""
    return model_path("dlib", verify)


def default_model_sha256() -> str:
    """The sha256 recorded for the shipped default model."""
    return model_sha256("dlib")


def resolve_model(model: str | None = None, checkpoint: str | Path | None = None) -> Path:
    """The model file a command was asked for: ``checkpoint`` (a path), else the shipped ``model`` (a name of
    ``SHIPPED_MODELS``), else the default; both given, or a checkpoint that is not a file, is an error (before any
    work: ``facekit adjust`` hashed a missing one with a traceback)."""
    if model is not None and checkpoint is not None:
        raise FacekitError("pass --model (a shipped model) or --checkpoint (a file), not both")
    if checkpoint is not None:
        if not Path(checkpoint).is_file():
            from facekit.checkpoints import checkpoint_not_found

            raise checkpoint_not_found(checkpoint)
        return Path(checkpoint)
    return model_path(model or "dlib")


#: Landmarks further than this many image sizes outside the frame mean a damaged or untrained model.
LANDMARK_FRAME_SLACK = 0.5


def check_outputs(image: torch.Tensor, landmarks: torch.Tensor | None, size: int, source: str) -> None:
    """Refuse a decoder output that no working model gives: non-finite pixels or landmarks, or landmarks far outside
    the (size x size) frame."""
    import torch

    finite = bool(torch.isfinite(image).all()) and (landmarks is None or bool(torch.isfinite(landmarks).all()))
    low, high = -LANDMARK_FRAME_SLACK * size, (1 + LANDMARK_FRAME_SLACK) * size
    inside = landmarks is None or bool(((landmarks >= low) & (landmarks <= high)).all())
    if not (finite and inside):
        raise FacekitError(
            f"{source} gave {'non-finite values' if not finite else 'landmarks far outside the image'}: the model "
            "file is damaged or was not trained; use another model"
        )


@dataclass
class NormalizedFace:
    """One normalized face: ``image`` (S, S, 3) uint8 RGB (S: :attr:`Normalizer.output_size`), ``landmarks`` (K, 2)
    float32 predicted in it, (x, y) pixels with pixel centres at integers, in the order of the detector's scheme
    (iBUG-68's 68 points for the shipped models: 0-16 the jaw from the image's left, 36 and 45 the outer eye corners
    on the image's left and right), ``texture`` the decoder's (M, M, 3) uint8 texture at the model's size M
    (:attr:`Normalizer.image_size`, whatever ``size``) or None; ``source_landmarks`` (K, 2) (x, y) in the detector's
    ``source_scheme`` and ``box`` (x0, y0, x1, y1) of the face, both in the input photo's pixels (upright, as read);
    ``faces_found``: how many faces the photo showed; ``decoded`` and ``decoded_landmarks``: the decoder's
    own face and landmarks (M px) before photo detail, shape and ``size`` (:mod:`facekit.detail`), None when ``image``
    and ``landmarks`` are them."""

    image: np.ndarray
    landmarks: np.ndarray
    texture: np.ndarray | None
    source_landmarks: np.ndarray
    box: tuple[float, float, float, float]
    faces_found: int = 1
    source_scheme: str | None = None  # a LandmarkScheme value; None: iBUG-68 (68 points)
    decoded: np.ndarray | None = None
    decoded_landmarks: np.ndarray | None = None

    @property
    def decoder_image(self) -> np.ndarray:
        """The decoder's face alone (even light, no photo detail or shape): what colour measurements read."""
        return self.decoded if self.decoded is not None else self.image

    @property
    def decoder_landmarks(self) -> np.ndarray:
        """The decoder's own (K, 2) landmarks in :attr:`decoder_image` (the photo's shape moves :attr:`landmarks`)."""
        return self.decoded_landmarks if self.decoded_landmarks is not None else self.landmarks


@dataclass
class Outcome:
    """What happened to one input of :meth:`Normalizer.normalize_many`: ``name`` as given; ``status`` is ``ok``,
    ``no_face``, ``unreadable`` or ``detector_error`` (:data:`DETECTOR_ERROR`); ``face`` the :class:`NormalizedFace`
    for ``ok``, else None; ``reason`` says why for any but ``ok`` (:data:`NO_FACE`, what the photo's reading or the
    detector raised); ``extras``: ``faces_found``, how many faces the photo showed (for ``ok``). What
    :meth:`Normalizer.normalize` raises instead: :class:`~facekit.errors.NoFaceFound`,
    :class:`~facekit.errors.PhotoUnreadable`, :class:`~facekit.errors.DetectorFailed`."""

    name: str
    status: str
    face: NormalizedFace | None = None
    reason: str = ""
    extras: dict[str, Any] = field(default_factory=dict)


def inference_device(requested: str, option: str = "--device") -> str:
    """``--device`` (or the recipe value ``option``) as a torch device string: ``auto`` picks the first GPU when one
    is visible; a GPU that is not there is a FacekitError, not a CUDA traceback."""
    import torch

    if requested == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if requested.startswith("cuda") and not torch.cuda.is_available():
        raise FacekitError(f"{option} {requested}: no GPU is visible here; use {option} cpu or auto")
    kind, colon, index = requested.partition(":")
    if colon and not index.isdigit():  # (torch.device raised later, a traceback: "cuda:", "cuda:x")
        raise FacekitError(f"{option} {requested!r}: a device's number is a whole number, as in {kind}:0")
    if kind == "cuda" and colon and int(index) >= torch.cuda.device_count():
        count = torch.cuda.device_count()
        raise FacekitError(f"{option} {requested}: this machine has {count} GPU(s): cuda:0 to cuda:{count - 1}")
    if kind in ("mps", "xpu"):  # Apple's and Intel's GPUs, when this torch has them
        backend = getattr(torch.backends, "mps", None) if kind == "mps" else getattr(torch, "xpu", None)
        if backend is None or not backend.is_available():
            raise FacekitError(f"{option} {requested}: no {kind} device is visible here; use {option} cpu or auto")
        return requested
    if requested != "cpu" and kind != "cuda":
        raise FacekitError(f"{option} {requested!r}: use cpu, cuda, cuda:N, mps, xpu or auto")
    return requested


def same_device(a: Any, b: Any) -> bool:
    """Whether devices ``a`` and ``b`` (strings or torch.devices) are one: ``cuda`` is the current GPU's index
    (``cuda:0`` on most machines), as torch places a tensor sent to it."""
    import torch

    first, second = torch.device(a), torch.device(b)
    if first.type != second.type:
        return False
    module = getattr(torch, first.type, None) if first.type in ("cuda", "xpu") else None
    current = module.current_device() if module is not None and module.is_available() else 0
    return (current if first.index is None else first.index) == (current if second.index is None else second.index)


def _is_photo(item: Any) -> bool:
    """A path, PIL image, image array or torch tensor: what a list of photos holds (a nested list of pixel rows is not
    one)."""
    return isinstance(item, str | os.PathLike | np.ndarray) or hasattr(item, "mode") or is_torch_tensor(item)


def _check_normalize_options(bgr: Any, all_faces: Any, max_faces: Any, near: Any, image: Any) -> None:
    """:meth:`Normalizer.normalize`'s options, each of the type it takes and used only where it means something (an
    option that would be ignored is an error, not a silent default)."""
    import numbers

    for name, value in (("bgr", bgr), ("all_faces", all_faces)):
        if not isinstance(value, bool):
            raise FacekitError(f"normalize: {name} must be True or False, got {value!r}")
    several = len(image) if isinstance(image, list | tuple) and image and _is_photo(image[0]) else None
    if (isinstance(image, np.ndarray) or is_torch_tensor(image)) and image.ndim == 4 and image.shape[0] != 1:
        # (a batch of one is as_rgb's to name: "give x[0]")
        several = image.shape[0]
    if several is not None:
        raise FacekitError(
            f"normalize takes one photo per call, got {several} (a {type(image).__name__}); for several: "
            "normalize_many(images, names)"
        )
    if bgr and (is_encoded(image) or hasattr(image, "mode")):  # (a file's bytes or an io.BytesIO: bgr was ignored)
        raise FacekitError("normalize: bgr=True is for arrays in OpenCV's order; a file or PIL image has its own")
    if not all_faces and (max_faces is not None or near is not None):
        given = " and ".join(n for n, v in (("max_faces", max_faces), ("near", near)) if v is not None)
        raise FacekitError(f"normalize: {given} pick among every face found: pass all_faces=True too")
    whole = isinstance(max_faces, numbers.Integral) and not isinstance(max_faces, bool)
    if max_faces is not None and not (whole and max_faces >= 1):
        raise FacekitError(f"normalize: max_faces must be a whole number >= 1, got {max_faces!r}")
    if near is not None:
        try:
            box = [float(v) for v in near]
        except (TypeError, ValueError):
            box = []
        if len(box) != 4 or not all(np.isfinite(box)):
            raise FacekitError(f"normalize: near must be a box (x0, y0, x1, y1) of 4 numbers, got {near!r}")


def turn_of(normalizer: Any) -> threading.RLock:
    """The lock threads sharing ``normalizer`` take turns by (made on first use: a subclass that skips __init__, a
    copy or unpickled Normalizer has none yet); code that calls its detector or encoder itself holds it too."""
    lock: threading.RLock | None = normalizer.__dict__.get("_lock")
    if lock is None:
        lock = normalizer.__dict__.setdefault("_lock", threading.RLock())
        with contextlib.suppress(TypeError):  # (an object that cannot be weakly referred to keeps its lock)
            _TURN_TAKERS[id(normalizer)] = normalizer
    return lock


def without_turn(holder: Any) -> dict[str, Any]:
    """``holder``'s state without its turn lock (:func:`turn_of`), for its ``__getstate__``: a lock cannot be copied
    or pickled; the copy makes its own on first use."""
    return {key: value for key, value in holder.__dict__.items() if key != "_lock"}


def _one_at_a_time(method: _Method) -> _Method:
    """A Normalizer method that threads sharing the Normalizer call one at a time (its ``_lock``)."""

    @functools.wraps(method)
    def locked(self: Any, *args: Any, **kwargs: Any) -> Any:
        with turn_of(self):
            return method(self, *args, **kwargs)

    return cast(_Method, locked)


def _device_name(device: Any) -> str:
    """A device given as a string or a torch.device, as the string :func:`inference_device` checks."""
    if isinstance(device, str):
        return device
    if type(device).__name__ == "device":  # torch.device
        return str(device)
    raise FacekitError(f"device: use 'cpu', 'cuda', 'cuda:N', 'mps', 'xpu' or 'auto', got {device!r}")


def _detail_settings(detail: Any) -> DetailSettings | None:
    """``detail`` as given to a Normalizer: DetailSettings, None (the default), a number (the strength, as
    ``--detail``: 0 = the decoder's face alone, :data:`DECODER_ONLY`) or a mapping of DetailSettings' fields (as
    :meth:`DetailSettings.of` reads them)."""
    from dataclasses import fields

    if detail is None or isinstance(detail, DetailSettings):
        return detail
    if isinstance(detail, numbers.Real) and not isinstance(detail, bool | np.bool_):  # numpy's numbers too
        return DetailSettings.of(strength=float(detail))  # as `--detail N`: 0 is the decoder's face alone
    if isinstance(detail, Mapping):
        known = [f.name for f in fields(DetailSettings)]
        unknown = set(detail) - set(known)
        if unknown:
            raise FacekitError(f"detail: unknown setting(s) {sorted(unknown)}; known: {', '.join(known)}")
        return DetailSettings.of(**detail)
    raise FacekitError(
        f"detail: use facekit.detail.DetailSettings, a strength (0 = off) or a dict of its fields, got {detail!r}"
    )


def overlapping(faces: Sequence[Any], box: Sequence[float], least: float = 0.0) -> Any | None:
    """The one of ``faces`` whose box overlaps ``box`` most (:func:`box_overlap`), or None when none overlaps it by
    more than ``least``: how a face found by one detector is found again among another's (or another image's)."""
    overlaps = [box_overlap(face.box, box) for face in faces]
    if not overlaps or max(overlaps) <= least:
        return None
    return faces[int(np.argmax(overlaps))]


def box_overlap(a: Sequence[float], b: Sequence[float]) -> float:
    """Intersection over union of two (x0, y0, x1, y1) boxes."""
    width = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    height = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = width * height
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return float(inter / union) if union > 0 else 0.0


def check_detection(detector: Any, face: Any) -> None:
    """Refuse a detection whose scheme or point count differs from what the detector's card declares (the points
    would be read with the wrong meaning and give a wrong face without an error), or whose landmarks are not all
    finite (alignment's fit would end in a LinAlgError traceback)."""
    card = detector.card
    points = None if face.landmarks is None else np.asarray(face.landmarks)
    if face.scheme != card.landmark_scheme or points is None or points.shape != (card.landmarks, 2):
        got = f"scheme {face.scheme!r}, landmarks {None if points is None else points.shape}"
        raise FacekitError(
            f"{component_label(detector, 'detector')} returned a face with {got}, but its card declares scheme "
            f"{card.landmark_scheme!r} with {card.landmarks} points: fix the detector plugin"
        )
    if not np.isfinite(points.astype(np.float64)).all():  # else alignment's SVD fails far from the cause
        raise FacekitError(
            f"{component_label(detector, 'detector')} returned a face with landmarks that are not finite numbers "
            "(NaN or infinity): fix the detector plugin"
        )


def check_features(encoder: Any, features: Any, batch: int, what: str = "features") -> None:
    """Refuse encoder ``what`` (its features, or its embeddings) that are not a (``batch``, F) float32 tensor: the
    decoder would fail far from the cause (an encoder that squeezes a batch of one, or returns float64: torch's dtype
    error from inside the decoder's first layer) or read them wrongly."""
    import torch

    shape = tuple(getattr(features, "shape", ()))
    if not (
        isinstance(features, torch.Tensor) and len(shape) == 2 and shape[0] == batch and features.dtype == torch.float32
    ):
        got = f"{type(features).__name__} of shape {shape}" if shape else type(features).__name__
        if isinstance(features, torch.Tensor) and features.dtype != torch.float32:
            got += f" and dtype {str(features.dtype).removeprefix('torch.')}"
        raise FacekitError(
            f"{component_label(encoder, 'encoder')} returned {what} as a {got} for {batch} face(s), not a ({batch}, F) "
            "float32 tensor: fix the encoder plugin (facekit.testing's encoder checks show where)"
        )


def choose_face(faces: Sequence[Any], shape: Sequence[int], rule: str = "largest") -> int:
    """Index of the face to normalize among ``faces`` (FaceDetections, largest first as detectors give them) found in
    an image of ``shape`` (H, W, ...).

    ``largest``: the largest box. ``central``: the box's area minus twice the squared distance of its centre from the
    image's centre (both in px^2, so the choice does not depend on the photo's size; the rule of FaceNet's LFW
    alignment script): the subject of a photo framed around one face (LFW, ID and press crops) when a larger face is
    beside it. A face far off-centre loses to a smaller central one, so a group photo framed around nobody in
    particular is better served by ``largest`` (or ``normalize(all_faces=True)``)."""
    if check_face_choice(rule) == "largest" or len(faces) < 2:
        return 0
    centre_x, centre_y = shape[1] / 2, shape[0] / 2
    scores = [
        (x1 - x0) * (y1 - y0) - 2.0 * (((x0 + x1) / 2 - centre_x) ** 2 + ((y0 + y1) / 2 - centre_y) ** 2)
        for x0, y0, x1, y1 in (face.box for face in faces)
    ]
    return int(np.argmax(scores))


def the_detector(detector: Any) -> str:
    """How a line about a photo names the detector: ``the detector 'mine' (plugin 'myplugin')`` as the registry built
    it (:func:`facekit.registry.component_label`), ``the detector (MyDetector)`` for one made by hand."""
    return (
        f"the {component_label(detector, 'detector')}"
        if built_as(detector)
        else f"the detector ({type(detector).__name__})"
    )


def detector_failure(detector: Any, error: BaseException, limit: int = 300) -> str:
    """The reason of a :data:`DETECTOR_ERROR` row: which detector raised what (one line, at most ``limit`` chars)."""
    message = " ".join(str(error).split()) or "(no message)"
    if len(message) > limit:
        message = message[: limit - 3] + "..."
    return f"{the_detector(detector)} raised {type(error).__name__} on it: {message}"


def _out_of_memory(error: BaseException) -> bool:
    """Whether ``error`` is running out of memory: torch's ``OutOfMemoryError`` (CUDA, MPS), or an error whose
    message says so: older torch's and CUDA's "out of memory", onnxruntime's arena "Failed to allocate memory",
    cuDNN/cuBLAS "ALLOC_FAILED"."""
    message = str(error).lower()
    return type(error).__name__ == "OutOfMemoryError" or any(
        sign in message for sign in ("out of memory", "failed to allocate memory", "alloc_failed")
    )


#: What the pipeline reads of each face a detector returns (a facekit.types.FaceDetection, or a type of the plugin's
#: own with these fields).
FACE_FIELDS = ("box", "score", "landmarks", "scheme")


def detect_guarded(detector: Any, image: np.ndarray, name: str = "") -> tuple[list[Any], str]:
    """``(detector.detect_array(image), "")``, or ``([], why)`` when the detector raised on this image or
    returned a face whose landmarks are not finite (logged under ``name``; :func:`detector_failure`): every loop
    over photos goes on past one a detector plugin fails on. A detector that returns None found no face; one whose
    faces lack :data:`FACE_FIELDS` (tuples, dicts) is a FacekitError, as its plugin's bug, not the photo's. Running
    out of memory (host or accelerator) is not a photo's problem and still raises. The detector is given a copy
    of ``image``: the photo is the caller's, and the encoder's crop and the photo detail are taken from it
    afterwards (a detector that drew on it changed the face without a word; a read-only view would not stop one
    that sets it writable again or writes through torch)."""
    try:
        found = [] if (faces := detector.detect_array(image.copy())) is None else list(faces)
    except MemoryError:
        raise
    except Exception as error:  # any plugin's error: that photo's row says which
        if _out_of_memory(error):
            raise
        why = detector_failure(detector, error)
        logger.warning("%s: %s", name or "a photo", why, exc_info=logger.isEnabledFor(logging.DEBUG))
        return [], why
    odd = next((face for face in found if not all(hasattr(face, field) for field in FACE_FIELDS)), None)
    if odd is not None:  # the plugin's contract, not this photo: before, an AttributeError traceback further on
        raise FacekitError(
            f"{the_detector(detector)} returned a {type(odd).__name__} among its faces, not a "
            "facekit.types.FaceDetection (box, score, landmarks, scheme): fix the detector plugin (facekit.testing's "
            "detector checks show where)"
        )
    if any(not _finite_points(face) for face in found):  # one photo's numerical failure, not the batch's
        why = (
            f"{the_detector(detector)} returned landmarks that are not finite numbers (NaN or "
            "infinity) for a face in it: fix the detector plugin"
        )
        logger.warning("%s: %s", name or "a photo", why)
        return [], why
    return found, ""


def _finite_points(face: Any) -> bool:
    """Whether ``face``'s landmarks are all finite numbers (True when it has none, or they cannot be read as numbers:
    left to :func:`check_detection`, which reads the chosen face's)."""
    points = getattr(face, "landmarks", None)
    if points is None:
        return True
    try:
        return bool(np.isfinite(np.asarray(points, dtype=np.float64)).all())
    except (TypeError, ValueError):
        return True


#: Photos longer than this (px) are searched for faces on a copy of this size (:func:`detect_photo`).
LARGE_SIDE = 2048
#: A face found on the copy is located again on a crop of the full photo (twice its box), shrunk so that the face's
#: box is at most this many pixels on its long side (the crop ~800 px): enough for the 68 points of a face
#: normalized at 112-224 px.
REFINE_SIDE = 400


def detect_photo(detector: Any, image: np.ndarray, name: str = "") -> tuple[list[Any], str]:
    """:func:`detect_guarded` on a photo up to :data:`LARGE_SIDE` px; on a larger one, faces are found on a copy of
    :data:`LARGE_SIDE` px and each is located again on a crop of the photo around it (twice its box, the face shrunk
    to :data:`REFINE_SIDE` px; the copy's detection scaled up where the crop shows none), in the photo's pixels.
    dlib's detector took ~17 s and 2 GB on a 36 MP photo at full size; a face too small to show on the copy (under
    ~1 % of a 36 MP photo's width, as on any 2,048 px photo) is not found."""
    if max(image.shape[:2]) <= LARGE_SIDE:
        return detect_guarded(detector, image, name)
    from facekit.images import downscale

    copy = downscale(image, LARGE_SIDE)
    faces, why = detect_guarded(detector, copy, name)
    if why or not faces:
        return [], why
    scale = (image.shape[1] / copy.shape[1], image.shape[0] / copy.shape[0])
    return [_refine(detector, image, _scaled(face, scale), name) for face in faces], ""


def smallest_face(detector: Any, width: int, height: int, side: int = LARGE_SIDE) -> int | None:
    """About the narrowest face, in the pixels of a ``width`` x ``height`` photo, that ``detector`` finds when faces
    are looked for on a copy at most ``side`` px on its long side (:func:`detect_photo`'s :data:`LARGE_SIDE`; adjust
    and serve's largest copy, ``facekit.apps.RETRY_SIDE``, is as long): the detector's optional ``smallest_face``
    (px of the image it is given, :class:`facekit.types.Detector`) scaled to the photo, or None for a detector that
    does not say."""
    own = getattr(detector, "smallest_face", None)
    if isinstance(own, bool) or not isinstance(own, numbers.Real) or not float(own) > 0:
        return None
    return max(1, round(float(own) * max(1.0, max(width, height) / side)))


def no_face_reason(detector: Any, width: int, height: int, side: int = LARGE_SIDE) -> str:
    """The reason of a ``no_face`` row for a ``width`` x ``height`` photo: :data:`NO_FACE`, with what is wrong with a
    photo too small or too thin to hold a face ``detector`` finds (:func:`smallest_face`), else the narrowest face
    it finds in a photo this size; :data:`NO_FACE` alone for a detector that does not say (before: a 40 x 40 photo
    was only "no face found" on the command line, where ``facekit serve`` said it was too small)."""
    smallest = smallest_face(detector, width, height, side)
    if smallest is None:
        return NO_FACE
    if min(width, height) < smallest and max(width, height) < 2 * smallest:  # (a face is about as high as wide)
        return (
            f"{NO_FACE}: the photo is only {width} x {height} pixels, too small to show a face the detector finds "
            f"(about {smallest} pixels wide at least)"
        )
    if min(width, height) < smallest:
        short = f"{height} pixels high" if height < width else f"{width} pixels wide"
        return (
            f"{NO_FACE}: the photo is {width} x {height} pixels, too thin to show a face the detector finds (about "
            f"{smallest} pixels in a photo this size; it is only {short})"
        )
    return f"{NO_FACE} (the detector finds faces about {smallest} pixels wide or more in a photo this size)"


def _scaled(face: Any, scale: tuple[float, float], offset: tuple[float, float] = (0.0, 0.0)) -> Any:
    """``face`` in the pixels of an image ``scale`` (x, y) times as large, whose origin lies at ``offset`` in them;
    landmarks by pixel centres (a centre x maps to (x + 0.5) * scale - 0.5)."""
    from dataclasses import is_dataclass, replace

    from facekit.types import FaceDetection

    sx, sy = scale
    x0, y0, x1, y1 = face.box
    box = (x0 * sx + offset[0], y0 * sy + offset[1], x1 * sx + offset[0], y1 * sy + offset[1])
    points = None
    if face.landmarks is not None:
        points = (np.asarray(face.landmarks, np.float64) + 0.5) * (sx, sy) - 0.5 + offset
    if is_dataclass(face) and not isinstance(face, type):
        return replace(face, box=box, landmarks=points)
    return FaceDetection(box, face.score, points, face.scheme)  # a plugin's own type with FaceDetection's fields


def _refine(detector: Any, image: np.ndarray, face: Any, name: str) -> Any:
    """``face`` (found on a copy, scaled to ``image``) located again on a crop of ``image`` around it."""
    import cv2

    x0, y0, x1, y1 = face.box
    if not np.isfinite(face.box).all():
        return face  # a plugin's odd box: the copy's detection, judged later as any other
    side = max(x1 - x0, y1 - y0, 1.0)
    cx, cy = (x0 + x1) / 2, (y0 + y1) / 2
    left, top = max(0, int(cx - side)), max(0, int(cy - side))
    right, bottom = min(image.shape[1], int(np.ceil(cx + side))), min(image.shape[0], int(np.ceil(cy + side)))
    if right - left < 2 or bottom - top < 2:  # a box (nearly) outside the photo
        return face
    crop = image[top:bottom, left:right]
    factor = min(1.0, REFINE_SIDE / side)
    if factor < 1.0:
        size = (max(1, round(crop.shape[1] * factor)), max(1, round(crop.shape[0] * factor)))
        crop = cv2.resize(crop, size, interpolation=cv2.INTER_AREA)
    found, _ = detect_guarded(detector, crop, name)
    scale = ((right - left) / crop.shape[1], (bottom - top) / crop.shape[0])
    again = overlapping([_scaled(f, scale, (left, top)) for f in found], face.box, least=0.3)
    return face if again is None else again  # none: not the same face there, the copy's own detection


#: At most this many photos are detected at once (each thread holds a photo and the detector's buffers for it).
MAX_DETECTION_THREADS = 8


def detection_threads(detector: Any) -> int:
    """How many photos :func:`detect_one` gives ``detector`` at once: as many as torch's threads
    (``torch.get_num_threads()``, which OMP_NUM_THREADS and ``torch.set_num_threads`` set; at most
    :data:`MAX_DETECTION_THREADS`) for a detector that says it is ``thread_safe`` (:class:`facekit.types.Detector`),
    else one at a time."""
    import torch

    if getattr(detector, "thread_safe", False) is not True:
        return 1
    return max(1, min(torch.get_num_threads(), MAX_DETECTION_THREADS))


def each_photo_in_turn(work: Callable[[Any], Any], items: Iterable[Any], threads: int) -> Iterator[Any]:
    """``work(item)`` of each of ``items``, on up to ``threads`` threads at once, yielded in order, each as soon as it
    and those before it are done: a caller can tell its user of each photo while the others are still worked on.
    ``items`` is taken no further ahead than ``threads`` items being worked on: a generator that decodes photos as it
    is iterated (on the caller's thread) holds that many, not all of them (``normalize_many``; before, every item was
    taken at once). Each worker runs in the caller's torch grad and inference modes (they are per thread: a torch
    detector called under ``torch.no_grad()`` would otherwise record graphs on the workers)."""
    import torch

    # (Each item and result is let go, del, before the next is taken: a decoded photo is held no longer than needed.)
    items = iter(items)
    head = collections.deque(itertools.islice(items, 0 if threads <= 1 else 2))  # (one item needs no pool)
    if len(head) <= 1:
        for item in itertools.chain(head, items):
            done = work(item)
            del item
            yield done
            del done
        return
    from concurrent.futures import Future, ThreadPoolExecutor

    grad, inference = torch.is_grad_enabled(), torch.is_inference_mode_enabled()

    def in_callers_modes(item: Any) -> Any:
        with torch.inference_mode(inference), torch.set_grad_enabled(grad):
            return work(item)

    with ThreadPoolExecutor(threads, thread_name_prefix="facekit-detect") as pool:
        ahead: collections.deque[Future[Any]] = collections.deque()
        while head:
            ahead.append(pool.submit(in_callers_modes, head.popleft()))
        ahead.extend(pool.submit(in_callers_modes, item) for item in itertools.islice(items, threads - 2))
        while ahead:
            done = ahead.popleft().result()
            ahead.extend(pool.submit(in_callers_modes, item) for item in itertools.islice(items, 1))
            yield done
            del done


#: The reason of the ``unreadable`` outcome of a None among a batch's photos (:func:`detect_one`).
NO_PHOTO = "no photo: None was given in its place"


def detect_each(
    detector: Any,
    photos: Iterable[tuple[np.ndarray | None, str, str]],
    face: str = "largest",
    on_detected: Callable[[int], None] | None = None,
) -> Iterator[tuple[int, Outcome, np.ndarray | None, Any]]:
    """:func:`detect_one` of ``photos`` ((image or None, name, why it is None: "" for :data:`NO_PHOTO`)) one photo at
    a time, as each photo's detection ends: (index, outcome, image, the chosen FaceDetection or None). ``photos`` is
    taken no further ahead than the photos being detected (:func:`each_photo_in_turn`)."""
    check_face_choice(face)
    told = on_detected or (lambda index: None)

    def detected(photo: tuple[np.ndarray | None, str, str]) -> tuple[np.ndarray | None, str, str, Any]:
        image, name, why = photo
        return image, name, why, None if image is None else detect_photo(detector, image, name)

    def outcome(image: np.ndarray | None, name: str, unread: str, detection: Any) -> tuple[Outcome, Any]:
        if image is None:  # (before: an empty reason; a caller's own reason for it replaces this one)
            return Outcome(name, "unreadable", reason=unread or NO_PHOTO), None
        faces, why = detection
        if why:
            return Outcome(name, DETECTOR_ERROR, reason=why), None
        if not faces:
            return Outcome(name, "no_face", reason=no_face_reason(detector, image.shape[1], image.shape[0])), None
        chosen = faces[choose_face(faces, image.shape, face)]
        check_detection(detector, chosen)
        return Outcome(name, "ok", extras={"faces_found": len(faces)}), chosen

    index = -1  # (counted by hand: enumerate keeps its last tuple, and the photo in it, for its next)
    for photo in each_photo_in_turn(detected, photos, detection_threads(detector)):
        index += 1
        told(index)
        made, chosen = outcome(*photo)
        yield index, made, photo[0], chosen
        del photo  # (let go before the next photo is read: held only as long as the caller holds it)


def detect_one(
    detector: Any,
    images: Sequence[np.ndarray | None],
    names: Sequence[str],
    face: str = "largest",
    on_detected: Callable[[int], None] | None = None,
) -> tuple[list[Outcome], list[tuple[int, np.ndarray, Any]]]:
    """One :class:`Outcome` per input (``unreadable`` for None, :data:`NO_PHOTO` its reason; ``no_face``,
    :data:`DETECTOR_ERROR` when the detector raised on it (logged; the others go on), or ``ok`` still without a face)
    and, for the ``ok`` ones, (index, image, FaceDetection chosen by the ``face`` rule, :func:`choose_face`) to
    normalize: the first step of every normalizer. ``on_detected`` is called with each input's index, in order, as
    its detection ends (a None's at its turn)."""
    photos = [(image, name, "") for image, name in zip(images, names, strict=True)]
    outcomes: list[Outcome] = []
    pending: list[tuple[int, np.ndarray, Any]] = []
    for index, outcome, image, chosen in detect_each(detector, photos, face, on_detected):
        outcomes.append(outcome)
        if chosen is not None and image is not None:
            pending.append((index, image, chosen))
    return outcomes, pending


#: How many megapixels of photos it decoded :meth:`Normalizer.normalize_many` gathers for one batch of faces: the
#: batch is normalized once its decoded photos reach it, with fewer than ``batch_size`` faces then (20 MP photos two
#: at a time, 60 MB each at 3 bytes a pixel; 2.5 MP ones thirteen at a time).
HELD_MEGAPIXELS = 32

#: The output sizes ``size`` takes (pixels): from a quarter of a 112 px model's to what a photo's detail can fill.
OUTPUT_SIZES = (32, 1024)


def check_output_size(size: Any) -> int | None:
    """``size`` as :attr:`Normalizer.size`: None, or a whole number of pixels in :data:`OUTPUT_SIZES`."""
    if size is None:
        return None
    low, high = OUTPUT_SIZES
    if isinstance(size, bool) or not isinstance(size, numbers.Integral) or not low <= int(size) <= high:
        raise FacekitError(f"the output size is a whole number of pixels from {low} to {high}, got {size!r}")
    return int(size)  # (numpy's integers too)


def resize_faces(images: torch.Tensor, size: int) -> torch.Tensor:
    """(B, C, S, S) images in [0, 1] resampled to ``size`` x ``size`` (bicubic; antialiased when shrinking)."""
    import torch.nn.functional as F

    shrink = size < images.shape[-1]
    return F.interpolate(images, size=(size, size), mode="bicubic", align_corners=False, antialias=shrink).clamp(0, 1)


def rescale_points(points: torch.Tensor, old: int, new: int) -> torch.Tensor:
    """Pixel coordinates (pixel centres at integers) in an ``old``-px frame -> the same places in a ``new``-px one."""
    return (points + 0.5) * (new / old) - 0.5


class Normalizer:
    """A trained decoder with the detector and encoder it was trained with."""

    #: The class's default for :attr:`size` (set by __init__): a Normalizer pickled before the option existed, or a
    #: subclass that skips __init__ (as :func:`turn_of` allows), renders at the model's size instead of failing.
    size: int | None = None

    def __init__(
        self,
        decoder: Any,
        encoder: Any,
        detector: Any,
        meta: dict[str, Any],
        device: str | torch.device = "cpu",
        detail: DetailArgument = None,
        face: str = "largest",
        size: int | None = None,
    ) -> None:
        import torch

        from facekit.align import check_alignable

        face = check_face_choice(face)
        device = inference_device(_device_name(device), "device")
        detail = _detail_settings(detail)
        card = getattr(detector, "card", None)
        scheme = card.landmark_scheme if card is not None else None
        check_alignable(encoder, scheme, component_label(detector, "detector"))
        self.decoder = decoder.to(device).eval()
        self.encoder = frozen_encoder(encoder, device)
        self.detector = detector
        self.meta = meta
        self.device = torch.device(device)
        #: Fine detail of the photo carried onto each output (:mod:`facekit.detail`); strength 0 = the decoder's face.
        #: It is mapped through the 68 iBUG points: behind another detector the default is off, and asking is an error.
        self.detail = detail if detail is not None else DetailSettings()
        if self.detail.active and scheme != LandmarkScheme.IBUG68:
            if detail is not None:
                raise FacekitError(
                    f"photo detail maps the photo through the 68 iBUG landmarks, but "
                    f"{component_label(detector, 'detector')} gives {scheme}: use a 68-point detector or detail "
                    "strength 0 (`--detail 0`; in a recipe, infer.detail: 0)"
                )
            self.detail = DECODER_ONLY
        #: Which face of a photo :meth:`normalize` and :meth:`normalize_many` take (:func:`choose_face`).
        self.face = face
        #: Side of the output in pixels (None: the model's own, :attr:`image_size`): see :meth:`output_size`.
        self.size = check_output_size(size)
        # Threads sharing this Normalizer take turns: a detector (dlib's) may not be safe to share.
        turn_of(self)

    def __getstate__(self) -> dict[str, Any]:
        """Copied or pickled without its lock (:func:`without_turn`)."""
        return without_turn(self)

    @classmethod
    def from_checkpoint(
        cls,
        path: str | os.PathLike[str] | None = None,
        device: str | torch.device = "cpu",
        detail: DetailArgument = None,
        face: str = "largest",
        detector: Any = None,
        size: int | None = None,
        encoder: Any = None,
    ) -> Normalizer:
        """Rebuild the pipeline from a training checkpoint or an exported model (default: the shipped one; a shipped
        model's name, ``"dlib"`` or ``"sface"``, takes that one); ``device``: ``cpu``, ``cuda``, ``cuda:N`` or
        ``auto``; ``detail``: photo detail on the output (default :class:`facekit.detail.DetailSettings`; a number is
        its strength, 0 = the decoder's face alone); ``face``: which face of a photo to take (:func:`choose_face`);
        ``detector``: a detector to use instead of the one the model was trained with (e.g.
        ``facekit.load_component("detector", "my-detector")``; its landmark scheme must be one the model's encoder
        aligns from, or a FacekitError says so); ``size``: the output's side in pixels (default: the model's own;
        :attr:`size`); ``encoder``: a recipe's resolved component (:class:`facekit.recipe.ResolvedComponent`, e.g. a
        `facekit run`'s ``components.judge``, whose check built it) whose kept build is taken for the model's own
        encoder where it is that encoder, the same name and params
        (:meth:`~facekit.recipe.ResolvedComponent.take_kept`), instead of building another; otherwise the model's own
        is built as without it. One Normalizer may be shared by threads: calls take turns."""
        import facekit
        from facekit.checkpoints import load_decoder_state, read_checkpoint, weights_digest
        from facekit.registry import build_checked
        from facekit.types import Kind

        if path is not None and not isinstance(path, str | os.PathLike):
            raise FacekitError(f"from_checkpoint: expected a model file's path or a shipped model's name, got {path!r}")
        if isinstance(detector, str):  # (helper-72: "detector str does not declare its landmark scheme")
            raise FacekitError(
                f"from_checkpoint: detector takes a detector, not its name: detector=facekit.load_component("
                f"'detector', {detector!r})"
            )
        checkpoint = model_file(path)
        if path is not None and not checkpoint.is_file() and os.sep not in str(path) and not checkpoint.suffix:
            raise FacekitError(
                f"from_checkpoint: {os.fspath(path)!r} is neither a model file nor a shipped model "
                f"({', '.join(SHIPPED_MODELS)})"
            )
        tensors, meta = read_checkpoint(checkpoint)
        # Which weights these are, the same for a checkpoint and the model file exported from it: an evaluation
        # records it, and `facekit export --metrics` records only an evaluation of the model it writes.
        meta = {**meta, "source": str(checkpoint), "weights_sha256": weights_digest(tensors)}
        if "decoder" not in meta:
            raise FacekitError(f"{checkpoint} is not a facekit model (no decoder in its metadata)")

        def model_component(kind: Kind, name: str, params: Any) -> Any:  # (a module it misses: said as the model's)
            spec = facekit.get_registry(kind).get(name)
            return build_checked(kind, spec, params, asked_for=f"{checkpoint}'s components.{kind}")

        try:  # the components the model was trained with: a missing one is named as the model's
            decoder = (
                facekit.get_registry("decoder")
                .get(meta["decoder"])
                .build(meta["decoder_params"], kind="decoder", asked_for=f"{checkpoint}'s components.decoder")
            )
            load_decoder_state(decoder, tensors)
            if meta.get("warper"):
                decoder.warper = model_component("warper", meta["warper"], meta.get("warper_params") or {})
            # The encoder the decoder was trained on, with the recipe's params (a facenet variant, an arcface weights
            # file): the same name with default params would give other features.
            encoder_ref = meta.get("recipe", {}).get("components", {}).get("encoder") or {}
            params = encoder_ref.get("params", {}) if encoder_ref.get("name") == meta["encoder"] else {}
            offered = encoder.take_kept("encoder", meta["encoder"], params) if encoder is not None else None
            encoder = offered if offered is not None else model_component("encoder", meta["encoder"], params)
            if detector is None:
                detector_ref = meta["recipe"]["components"].get("detector")
                if detector_ref is None:
                    raise FacekitError(f"{checkpoint} names no detector in its recipe; it cannot normalize photos")
                detector = model_component("detector", detector_ref["name"], detector_ref.get("params", {}))
        except ComponentNotFoundError as error:
            missing = f"{checkpoint} was made with a component not available here: {error}"
            raise ComponentNotFoundError(missing) from None
        return cls(decoder, encoder, detector, meta, device, detail, face, size)

    @property
    def image_size(self) -> int:
        return int(self.decoder.image_size)

    @property
    def output_size(self) -> int:
        """The side of :attr:`NormalizedFace.image`: :attr:`size` when set, else the model's :attr:`image_size`. At
        another size than the model's the decoder's texture is resampled (bicubic) and warped onto its landmarks at
        that size, and the photo detail band (:mod:`facekit.detail`) is taken from the photo at that size: a larger
        output holds the photo's finer detail where the photo has it, over the decoder's soft face; it is rendered,
        not a model of that size. :attr:`NormalizedFace.decoder_image` stays at the model's size."""
        return self.size or self.image_size

    def decode_features(self, features: torch.Tensor) -> Any:
        """The decoder's faces for (B, F) ``features`` of the model's encoder (``normalizer.encoder.features`` of its
        aligned crops, or points between two faces' features, as ``explore`` decodes): a DecoderOutput with ``image``
        (B, 3, M, M) in [0, 1] at the model's size M, without the photo's detail, and ``landmarks`` (B, K, 2) in it.
        Features of another shape are a FacekitError naming the size the decoder reads (before: a torch size error
        from inside the decoder)."""
        import torch

        size = getattr(self.decoder, "feature_size", None)
        shape = tuple(getattr(features, "shape", ()))
        if not isinstance(features, torch.Tensor) or len(shape) != 2 or (size is not None and shape[1] != size):
            got = f"a {type(features).__name__} of shape {shape}" if shape else f"a {type(features).__name__}"
            raise FacekitError(
                f"decode_features takes a (B, {size or 'F'}) torch tensor of the model's encoder features, got {got}"
            )
        with torch.no_grad():
            return self.decoder(features.to(self.device, torch.float32))

    @overload
    def normalize(self, image: Any, *, bgr: bool = ..., all_faces: Literal[False] = ...) -> NormalizedFace: ...

    @overload
    def normalize(
        self,
        image: Any,
        *,
        bgr: bool = ...,
        all_faces: Literal[True],
        max_faces: int | None = ...,
        near: tuple[float, float, float, float] | None = ...,
    ) -> list[NormalizedFace]: ...

    @_one_at_a_time
    def normalize(
        self,
        image: Any,
        *,
        bgr: bool = False,
        all_faces: bool = False,
        max_faces: int | None = None,
        near: tuple[float, float, float, float] | None = None,
    ) -> NormalizedFace | list[NormalizedFace]:
        """Normalize one face of ``image``, the largest or the one :attr:`face` chooses (every face, largest first,
        with ``all_faces=True``).

        Args:
            image: a path, a PIL image, or an (H, W, 3) uint8 array in RGB order (BGR with ``bgr=True``, as OpenCV
                reads them), 0-255; (H, W) greyscale and (H, W, 4) with alpha are accepted too, and a torch tensor
                of these (on any device; channels last). Floats, 16 bits and (3, H, W) are refused with the
                expression that converts them.
            bgr: the array is in BGR order.
            all_faces: return a list with every face found instead of one.
            max_faces: with ``all_faces``, normalize only the largest ``max_faces`` (a crowd photo costs what it
                shows); each face's ``faces_found`` still counts every face detected.
            near: with ``all_faces``, normalize only the detected face whose box overlaps this (x0, y0, x1, y1) box
                most (intersection over union; none when no box overlaps it), e.g. the face another model found;
                it is looked for among every face found, whatever ``max_faces``.

        Returns:
            A :class:`NormalizedFace`, or a list of them (empty when no face is found) with ``all_faces``.

        Raises:
            PhotoUnreadable: the photo cannot be read (a missing, damaged or oversized file, a closed PIL image).
            NoFaceFound: (without ``all_faces``) the detector found no face in it.
            DetectorFailed: the detector raised on it.
            FacekitError: (the base of all three) a form it cannot take (a float array, a (3, H, W) one) or an
                option it refuses.
        """
        from facekit.images import as_rgb

        _check_normalize_options(bgr, all_faces, max_faces, near, image)
        photo = as_rgb(image, bgr=bgr)
        if all_faces:
            faces, why = detect_photo(self.detector, photo, "image")
            if why:
                raise DetectorFailed(f"no face normalized: {DETECTOR_ERROR} {why}")
            for face in faces:
                check_detection(self.detector, face)
            kept = faces
            if near is not None:  # among every face found, then max_faces
                chosen = overlapping(faces, near)
                kept = [] if chosen is None else [chosen]
            kept = kept if max_faces is None else kept[:max_faces]
            return self._normalize_faces([(photo, face, len(faces)) for face in kept])
        outcome = self.normalize_many([photo], ["image"])[0]
        if outcome.status == DETECTOR_ERROR:
            raise DetectorFailed(f"no face normalized: {outcome.status} {outcome.reason}")
        if outcome.face is None and outcome.status == "no_face":
            # Why, as a batch's no_face row says it (no_face_reason: a photo too small or thin for a face the
            # detector finds); the photo's size where the reason does not give it (before: the size alone).
            height, width = photo.shape[:2]
            why = (outcome.reason or NO_FACE).removeprefix(NO_FACE)
            where = "" if f"{width} x {height}" in why else f" in this {width} x {height} photo"
            raise NoFaceFound(
                f"no face normalized: {the_detector(self.detector)} found no face{where}{why}; to "
                "get an empty list instead of this error: normalize(image, all_faces=True)"
            )
        if outcome.face is None:
            raise FacekitError(f"no face normalized: {outcome.status} {outcome.reason}".strip())
        return outcome.face

    @_one_at_a_time
    def renormalize(self, photo: np.ndarray, faces: Sequence[NormalizedFace]) -> list[NormalizedFace]:
        """``faces`` normalized again from ``photo`` (H, W, 3) uint8 RGB, a recoloured copy of the photo they came
        from (same size, same geometry): each is re-encoded and re-decoded from its own detection (box and landmarks),
        nothing is detected again, so every face stays the same face."""
        from facekit.types import FaceDetection

        found = []
        for face in faces:
            detection = FaceDetection(face.box, 1.0, np.asarray(face.source_landmarks), face.source_scheme)
            found.append((photo, detection, face.faces_found))
        return self._normalize_faces(found)

    @_one_at_a_time
    def normalize_many(
        self,
        images: Sequence[Any],
        names: Sequence[str],
        batch_size: int = 16,
        *,
        bgr: bool = False,
        on_detected: Callable[[int], None] | None = None,
    ) -> list[Outcome]:
        """Normalize one face of each image, chosen by :attr:`face` (:func:`choose_face`; the largest by default); one
        :class:`Outcome` per input. Each image is an (H, W, 3) uint8 RGB array (BGR with ``bgr=True``, as OpenCV
        reads them: then every image is an array) or anything :meth:`normalize` takes (a path, PIL image, greyscale
        or RGBA array), read the same way; a photo that cannot be read (a missing, damaged
        or too large file, a closed or damaged PIL image, an array over the megapixel limit:
        :class:`facekit.errors.PhotoUnreadable`), or None in its place, is that input's ``unreadable`` outcome, its
        ``reason`` saying why, and the others go on; a form it cannot take (a number, a dict) is a FacekitError naming
        the input (as its turn comes: the photos before it are worked on first). ``on_detected``, if given, is
        called with each input's index, in order and on the caller's thread, as the face detection of it ends (an
        unreadable one's at its turn): the detection takes most of the time on large photos, so a caller can show its
        progress there (``facekit normalize``'s bar). The photos are read, detected and normalized a few at a time:
        a batch of ``batch_size`` faces is normalized as soon as it is found, or sooner once the photos this call
        decoded for it (paths, bytes, files, PIL images; BGR, grey and RGBA arrays: copies) reach
        :data:`HELD_MEGAPIXELS`, and each photo is let go as its face is normalized (or found absent). Arrays the
        caller holds cost nothing more. Twelve 20 MP JPEGs given as paths peaked at 770 MB (max RSS, one: 672 MB),
        where they took 1,315 MB when every photo was held until the call returned (README "Using it": how it was
        measured)."""
        from facekit.images import photo_lists, read_photo

        if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
            raise FacekitError(f"normalize_many: batch_size must be a whole number >= 1, got {batch_size!r}")
        if not isinstance(bgr, bool):
            raise FacekitError(f"normalize_many: bgr must be True or False, got {bgr!r}")
        if on_detected is not None and not callable(on_detected):
            raise FacekitError(
                f"normalize_many: on_detected must be a function of the input's index, got {on_detected!r}"
            )
        images, names = photo_lists(images, names, "normalize_many", bgr)  # (helper-72: a path's characters)
        decoded: set[int] = set()  # the inputs whose photo this call decoded (or copied), not the caller's own array

        def photos() -> Iterator[tuple[np.ndarray | None, str, str]]:
            for index, (image, name) in enumerate(zip(images, names, strict=True)):
                array, why = read_photo(image, name, "normalize_many", bgr)
                if array is not None and array is not image:
                    decoded.add(index)
                yield array, name, why
                del array  # (let go before the next photo is read)

        outcomes: list[Outcome] = []
        pending: list[tuple[int, np.ndarray, Any]] = []
        held = 0  # the pixels of the decoded photos in pending
        for index, outcome, image, face in detect_each(self.detector, photos(), self.face, on_detected):
            outcomes.append(outcome)
            if face is not None and image is not None:
                pending.append((index, image, face))
                held += image.shape[0] * image.shape[1] if index in decoded else 0
                if len(pending) == batch_size or held >= HELD_MEGAPIXELS * 1e6:
                    self._normalize_pending(pending, outcomes)
                    pending, held = [], 0
            del image  # (let go before the next photo is read: held by pending alone)
        self._normalize_pending(pending, outcomes)
        return outcomes

    def _normalize_pending(self, pending: Sequence[tuple[int, np.ndarray, Any]], outcomes: list[Outcome]) -> None:
        """The faces of ``pending`` ((index, photo, FaceDetection)) normalized into their ``outcomes``."""
        found = [(image, face, outcomes[index].extras["faces_found"]) for index, image, face in pending]
        for (index, _, _), normalized in zip(pending, self._normalize_faces(found), strict=True):
            outcomes[index].face = normalized

    def _shaped_and_sized(self, out: Any, photo_landmarks: Sequence[np.ndarray]) -> tuple[torch.Tensor, Any] | None:
        """The decoder's texture warped onto landmarks moved towards the photos' own (``detail.shape``,
        :func:`facekit.detail.photo_shape`): ((B, 3, S, S) image, (B, K, 2) landmarks), or None when the setting is 0
        or the decoder has no texture, mean landmarks or warp of its own (a plain CNN; see TrainableDecoder). At an
        :attr:`output_size` other than the model's, the face at that size (the decoder's own shape where the setting
        is 0; a decoder without a warp of its own: its image resampled, and one without landmarks, plain-cnn: its
        image resampled with None for the landmarks)."""
        import torch

        share, size = self.detail.shape, self.output_size
        warp, mean = getattr(self.decoder, "warp", None), getattr(self.decoder, "mean_landmarks", None)
        if size == self.image_size and (not share or out.landmarks is None):
            return None
        if out.landmarks is None:  # a decoder without landmarks (plain-cnn): its image resampled, no points to move
            return resize_faces(out.image, size), None
        if out.texture is None or warp is None or mean is None:
            if size == self.image_size:
                return None
            return resize_faces(out.image, size), rescale_points(out.landmarks, self.image_size, size)
        predicted = out.landmarks.detach().double().cpu().numpy()
        moved = predicted.copy()
        for index, points in enumerate(photo_landmarks if share else ()):
            try:
                moved[index] = photo_shape(predicted[index], points, share)
            except (ValueError, FacekitError) as error:  # coincident points, or not iBUG-68: the decoder's shape stays
                logger.warning("photo shape skipped for one face: %s", error)
        texture = out.texture
        destination = torch.from_numpy(moved).to(texture.device, texture.dtype)
        source = mean.to(texture.device, texture.dtype).expand_as(destination)
        if size != self.image_size:
            texture = resize_faces(texture, size)
            source, destination = (rescale_points(p, self.image_size, size) for p in (source, destination))
        with torch.no_grad():
            image, _ = warp(texture, source, destination)
        return image, destination.to(out.landmarks.dtype)

    def _normalize_faces(self, found: Sequence[tuple[np.ndarray, Any, int]]) -> list[NormalizedFace]:
        """One batch of (photo, FaceDetection, faces found in that photo) -> their normalized faces."""
        import torch

        from facekit.align import encoder_inputs

        if not found:
            return []
        photos = [photo for photo, _, _ in found]  # photos of different sizes: encoder_inputs crops each on its own
        points = np.stack([np.asarray(face.landmarks, np.float64) for _, face, _ in found])
        crops = encoder_inputs(self.encoder, photos, points, self.detector.card.landmark_scheme).to(self.device)
        with torch.no_grad():
            features = self.encoder.features(crops)
            check_features(self.encoder, features, len(found))
            out = self.decoder(features)
        check_outputs(out.image, out.landmarks, self.image_size, self.meta.get("source", "the model"))
        shaped = self._shaped_and_sized(out, [face.landmarks for _, face, _ in found])
        image, points_out = shaped if shaped is not None else (out.image, out.landmarks)
        pictures = to_uint8_rgb(image)
        textures = to_uint8_rgb(out.texture) if out.texture is not None else [None] * len(found)
        landmarks = points_out.detach().float().cpu().numpy() if points_out is not None else [None] * len(found)
        # The decoder's own faces and landmarks, kept where the photo's detail or shape replaces them.
        plain: list[np.ndarray | None] = [None] * len(found)
        plain_points: list[np.ndarray | None] = [None] * len(found)
        if shaped is not None:
            plain = list(to_uint8_rgb(out.image))
            if out.landmarks is not None:
                plain_points = list(out.landmarks.detach().float().cpu().numpy())
        elif self.detail.active and points_out is not None:
            plain = list(pictures)
        if self.detail.active and points_out is not None:
            pictures = [
                transfer_detail(picture, points, photo, face.landmarks, self.detail)
                for picture, points, (photo, face, _) in zip(pictures, landmarks, found, strict=True)
            ]
        return [
            NormalizedFace(
                picture, points, texture, np.asarray(face.landmarks), face.box, count, face.scheme, own, own_points
            )
            for (_, face, count), picture, texture, points, own, own_points in zip(
                found, pictures, textures, landmarks, plain, plain_points, strict=True
            )
        ]
