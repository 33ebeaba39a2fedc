"""dlib's face detectors (HOG + linear SVM, the CNN "mmod" detector, or HOG with the CNN as a fallback) followed by
its landmark predictor."""

from __future__ import annotations

import hashlib
import logging
import os
import pickle
import queue
import re
import threading
import time
from pathlib import Path
from typing import Any, Literal

import numpy as np
from pydantic import Field

from facekit.images import downscale, to_uint8_rgb
from facekit.locks import temporary_beside
from facekit.models import cache_home
from facekit.registry import Params
from facekit.types import FaceDetection, LandmarkScheme, ModelCard, RebuiltOnUnpickle
from facekit_dlib.models import HOG_SOURCE, SOURCES, model_path

#: The CNN fallback looks at a copy of at most this many pixels on the long side, without upsampling: mmod takes
#: ~0.6 s for 250 x 250 px on one CPU core and grows with the area (33 s at 800 px upsampled once), and the faces HOG
#: misses are turned ones, not small ones (HOG with ``upsample`` 1 already finds faces of 40 px).
FALLBACK_SIDE = 400
#: The CNN (mmod) is not run on an image (after its upsampling) shorter than this on a side: its window is 80 px, so
#: it finds no face there, and dlib fails on copies under ~10 px (a RuntimeError, or at 9 x 9 a corrupted heap that
#: aborts the process).
MIN_CNN_SIDE = 40
#: The narrowest face (px) HOG finds without upsampling: a face cropped to its box and shrunk was found from 56-68 px
#: (12 LFW and London photos), from 32-36 px upsampled once; each upsampling halves it.
HOG_SMALLEST_FACE = 64


class DetectorParams(Params):
    face_detector: Literal["hog", "cnn", "hog+cnn"] = Field(
        default="hog+cnn",
        description="HOG (fast, near-frontal faces), CNN mmod (also turned faces, slow), or hog+cnn: HOG, and the "
        f"CNN on a copy of at most {FALLBACK_SIDE} px when HOG finds no face",
    )
    upsample: int = Field(default=1, ge=0, le=3, description="upsample the photo this many times to find small faces")
    threshold: float = Field(default=0.0, description="detection score threshold (lower finds more faces)")


logger = logging.getLogger(__name__)


def hog_cache_path(dlib: Any) -> Path:
    """Where :func:`frontal_face_detector` keeps dlib's HOG detector for this dlib version (its sha256 beside it)."""
    return cache_home() / "dlib" / f"frontal_face_detector-{dlib.__version__}.svm"


#: The names :func:`frontal_face_detector` writes in its folder: a cache (any dlib version) with its digest, and the
#: temporaries it is written to first (``mkstemp``'s ``.frontal_face_detector-VERSION.svm.RANDOM``, its digest's
#: ``.sha256`` after). VERSION is digits and dots, as dlib's ``__version__`` is: a user's own
#: ``frontal_face_detector-mine.svm`` kept in that folder is no cache of ours. Nothing else there is ever removed.
CACHE_NAME = re.compile(r"frontal_face_detector-\d+(\.\d+)*\.svm(\.sha256)?")
TEMPORARY_NAME = re.compile(r"\.frontal_face_detector-\d+(\.\d+)*\.svm\.[^/]+")
#: A temporary older than this (s) is a killed process's leftover (one is written and renamed in well under a second).
STALE_TEMPORARY_AGE = 3600.0
#: How many dlib versions' copies a cache folder keeps, the one just written among them (the others: the most
#: recently written). Two environments with other dlib versions sharing one cache (a venv per project) each kept only
#: its own: each removed the other's as it wrote its own, and each process of the other decompressed dlib's model
#: again; a copy is a few hundred kB, so a few versions stay, and older ones go.
KEPT_VERSIONS = 3


def frontal_face_detector(dlib: Any) -> Any:
    """dlib's HOG face detector (``dlib.get_frontal_face_detector()``), read from a copy in the user's cache folder
    (:func:`hog_cache_path`: keyed on dlib's version, checked against the sha256 written with it) in ~1.5 ms instead
    of decompressed from dlib's built-in model, 0.26 s on an idle core (0.7-0.8 s of CPU, 4-9 s wall, on a busy
    two-core machine: helper-202), once in every process that builds a detector (each worker of a pool). The copy
    is what ``save`` of that detector writes (dlib's own format, no pickle), made here, never downloaded; a missing,
    damaged or unreadable one is made again, and a cache that cannot be written is done without. The files get the
    user's usual permissions (mkstemp's 0600 made every other user of a shared FACEKIT_HOME decompress its own), and
    writing one removes the copies of dlib versions older than the :data:`KEPT_VERSIONS` written last and a killed
    process's temporaries (:func:`_clean_cache`)."""
    path = hog_cache_path(dlib)
    digest = path.with_name(path.name + ".sha256")
    try:
        if hashlib.sha256(path.read_bytes()).hexdigest() == digest.read_text().strip():
            return dlib.fhog_object_detector(str(path))
    except (OSError, RuntimeError, ValueError, UnicodeDecodeError):  # none yet, unreadable, or dlib refused it
        pass
    detector = dlib.get_frontal_face_detector()
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        # (its own name, the user's usual permissions, which dlib's save over it keeps; the digest, written by open(),
        # gets them anyway)
        temporary = str(temporary_beside(path))
        try:
            detector.save(temporary)
            written = hashlib.sha256(Path(temporary).read_bytes()).hexdigest()
            os.replace(temporary, path)  # (the digest last: a reader between the two makes its own and moves on)
            digest_temporary = f"{temporary}.sha256"
            Path(digest_temporary).write_text(written + "\n")
            os.replace(digest_temporary, digest)
        finally:
            for leftover in (temporary, f"{temporary}.sha256"):
                Path(leftover).unlink(missing_ok=True)
        _clean_cache(path)
    except (OSError, RuntimeError) as error:  # a read-only or full home: every process decompresses its own
        logger.debug("dlib's HOG detector not cached in %s: %s", path.parent, error)
    return detector


def _clean_cache(path: Path) -> None:
    """Remove, beside the cache ``path`` just written, the copies of other dlib versions (with their digests) but the
    :data:`KEPT_VERSIONS` written last (``path`` among them), and the temporaries older than
    :data:`STALE_TEMPORARY_AGE` (a process killed while it wrote); only facekit's own names (:data:`CACHE_NAME`,
    :data:`TEMPORARY_NAME`), and what cannot be removed (another user's) stays."""
    now = time.time()
    copies: list[tuple[float, Path]] = []  # other versions' copies, by when they were written
    for entry in path.parent.iterdir():
        try:
            if CACHE_NAME.fullmatch(entry.name) and entry.suffix == ".svm" and entry.name != path.name:
                copies.append((entry.lstat().st_mtime, entry))
            elif TEMPORARY_NAME.fullmatch(entry.name) and now - entry.lstat().st_mtime > STALE_TEMPORARY_AGE:
                entry.unlink()
        except OSError:  # gone meanwhile, a folder of that name, or not ours to remove
            pass
    copies.sort(reverse=True)
    kept = {path.name, *(copy.name for _, copy in copies[: KEPT_VERSIONS - 1])}
    for entry in path.parent.iterdir():  # (a digest goes with its copy, and a digest without one goes too)
        if CACHE_NAME.fullmatch(entry.name) and entry.name.removesuffix(".sha256") not in kept:
            try:
                entry.unlink()
            except OSError:
                pass


class DlibDetector(RebuiltOnUnpickle):
    """Faces and their ``points``-point landmarks (68: iBUG scheme; 5: dlib's eye corners + nose).

    Safe to call from several threads at once (:attr:`thread_safe`): dlib's HOG detector is not (one object used by
    two threads at once gave another box for about 30 % of LFW photos), so each concurrent call takes a HOG object
    of its own from a pool (made on demand, then kept: a copy of the first, pickled, in ~1 ms; the first is read
    from the user's cache folder, :func:`frontal_face_detector`); the CNN fallback runs one call at a time; the
    landmark predictor only reads its model and is shared. dlib releases the GIL while it searches, so two threads
    detect in about half the time on two cores (benchmarks/RESULTS.md "normalize-folder")."""

    #: detect_array may be called from several threads at once (facekit.types.Detector): the pipeline detects a
    #: batch's photos in parallel.
    thread_safe = True

    def __init__(self, params: DetectorParams, points: int) -> None:
        self.params = params
        self.points = points
        self.card = card(points, params.face_detector)
        self._rebuild()

    #: What cannot be pickled or copied (dlib's module and objects, the lock): left out, and made again from the
    #: settings by the copy (helper-72: a Normalizer could not be pickled, for a process pool, nor deep-copied).
    _REBUILT = ("_dlib", "_hogs", "_hog_state", "_cnn_lock", "_cnn", "_predictor")

    def _rebuild(self) -> None:
        """dlib's detectors and landmark predictor, loaded from the models for ``params`` and ``points``."""
        import dlib

        self._dlib = dlib
        self._hogs: queue.SimpleQueue[Any] = queue.SimpleQueue()  # idle HOG detectors, one per concurrent call
        self._cnn_lock = threading.Lock()
        if self.params.face_detector != "cnn":
            first = frontal_face_detector(dlib)
            self._hog_state = pickle.dumps(first)  # (the same filters and weights: the same boxes and scores)
            self._hogs.put(first)
        if self.params.face_detector != "hog":
            self._cnn = dlib.cnn_face_detection_model_v1(str(model_path("mmod_human_face_detector.dat")))
        name = "shape_predictor_68_face_landmarks.dat" if self.points == 68 else "shape_predictor_5_face_landmarks.dat"
        self._predictor = dlib.shape_predictor(str(model_path(name)))

    @property
    def smallest_face(self) -> int | None:
        """About the narrowest face (px of the image given) found (:class:`facekit.types.Detector`): HOG's, which
        runs first on the whole image (the CNN fallback looks on a smaller copy); None for ``cnn`` alone (not
        measured)."""
        if self.params.face_detector == "cnn":
            return None
        return max(1, HOG_SMALLEST_FACE >> self.params.upsample)

    def detect(self, images: Any) -> list[list[FaceDetection]]:
        """``images`` (B, 3, H, W) in [0, 1] -> per image, the faces found, largest first."""
        return [self.detect_array(image) for image in to_uint8_rgb(images)]

    def detect_array(self, image: np.ndarray) -> list[FaceDetection]:
        """``image`` (H, W, 3) uint8 RGB -> the faces found, largest first, each with (K, 2) float32 landmarks."""
        if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
            raise ValueError(f"expected an (H, W, 3) uint8 RGB image, got {image.shape} {image.dtype}")
        return self._detect(image)

    def _run_hog(self, image: np.ndarray) -> list[tuple[tuple[float, float, float, float], float]]:
        """HOG's faces in ``image`` with a HOG object no other thread is using (taken from the pool, or made)."""
        try:
            hog = self._hogs.get_nowait()
        except queue.Empty:  # every one is in use by another thread: one more, copied from the first
            hog = pickle.loads(self._hog_state)
        try:
            rects, scores, _ = hog.run(image, self.params.upsample, self.params.threshold)
        finally:
            self._hogs.put(hog)
        return [(_box(rect), float(score)) for rect, score in zip(rects, scores, strict=True)]

    def _detect(self, image: np.ndarray) -> list[FaceDetection]:
        found: list[tuple[tuple[float, float, float, float], float]] = []
        if self.params.face_detector != "cnn":
            found = self._run_hog(image)
        if self.params.face_detector == "cnn":
            found = self._run_cnn(image, self.params.upsample, 1.0)
        elif self.params.face_detector == "hog+cnn" and not found:
            small = downscale(image, FALLBACK_SIDE)
            found = self._run_cnn(small, 0, min(1.0, FALLBACK_SIDE / max(image.shape[:2])))
        faces = [
            FaceDetection(box, score, self.landmarks_in_box(image, box), self.card.landmark_scheme)
            for box, score in found
        ]
        faces.sort(key=lambda f: (f.box[2] - f.box[0]) * (f.box[3] - f.box[1]), reverse=True)
        return faces

    def _run_cnn(
        self, image: np.ndarray, upsample: int, scale: float
    ) -> list[tuple[tuple[float, float, float, float], float]]:
        """mmod's faces in ``image`` (a copy of the photo at ``scale``) as (box in the photo's pixels, confidence)."""
        if min(image.shape[:2]) * 2**upsample < MIN_CNN_SIDE:
            return []
        with self._cnn_lock:  # (one network, not known to be safe to share; it runs for few photos)
            found = [(d.rect, float(d.confidence)) for d in self._cnn(image, upsample)]
        return [(_box(rect, scale), score) for rect, score in found if score >= self.params.threshold]

    def landmarks_in_box(self, image: np.ndarray, box: tuple[float, float, float, float]) -> np.ndarray:
        """The landmark predictor alone on ``box`` (x0, y0, x1, y1) of ``image`` (H, W, 3) uint8 -> (K, 2) float32."""
        rect = self._dlib.rectangle(*(round(v) for v in box))
        shape = self._predictor(image, rect)
        return np.array([[p.x, p.y] for p in shape.parts()], dtype=np.float32)


def _box(rect: Any, scale: float = 1.0) -> tuple[float, float, float, float]:
    """A dlib rectangle found on a copy at ``scale`` as (x0, y0, x1, y1) in the photo's pixels."""
    return (rect.left() / scale, rect.top() / scale, rect.right() / scale, rect.bottom() / scale)


def card(points: int, face_detector: str = "hog+cnn") -> ModelCard:
    predictor = SOURCES[f"shape_predictor_{points}_face_landmarks.dat"]
    detectors = {
        "hog": (HOG_SOURCE,),
        "cnn": (SOURCES["mmod_human_face_detector.dat"],),
        "hog+cnn": (HOG_SOURCE, SOURCES["mmod_human_face_detector.dat"]),
    }[face_detector]
    return ModelCard(
        colour_order="RGB",
        landmarks=points,
        landmark_scheme=(LandmarkScheme.IBUG68 if points == 68 else LandmarkScheme.DLIB5).value,
        differentiable=False,
        weights=(*detectors, predictor),
        notes="HOG finds near-frontal faces of >= 80 px (40 px with upsample=1); CNN (mmod) also finds turned faces; "
        f"hog+cnn (default) runs the CNN on a copy of <= {FALLBACK_SIDE} px only when HOG finds none",
    )
