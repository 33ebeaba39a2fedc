"""dlib's face detectors (HOG + linear SVM, or the CNN "mmod" detector) followed by its landmark predictor."""

from __future__ import annotations

from typing import Any, Literal

import numpy as np
from pydantic import Field

from facekit.images import to_uint8_rgb
from facekit.registry import Params
from facekit.types import FaceDetection, LandmarkScheme, ModelCard
from facekit_dlib.models import HOG_SOURCE, SOURCES, model_path


class DetectorParams(Params):
    face_detector: Literal["hog", "cnn"] = Field(default="hog", description="HOG (fast) or CNN mmod (robust, slow)")
    upsample: int = Field(default=1, ge=0, le=3, description="upsample the photo this many times to find small faces")
    threshold: float = Field(default=0.0, description="detection score threshold (lower finds more faces)")


class DlibDetector:
    """Faces and their ``points``-point landmarks (68: iBUG scheme; 5: dlib's eye corners + nose)."""

    def __init__(self, params: DetectorParams, points: int) -> None:
        import dlib

        self.params = params
        self.points = points
        self.card = card(points, params.face_detector)
        self._dlib = dlib
        if params.face_detector == "hog":
            self._hog = dlib.get_frontal_face_detector()
        else:
            self._cnn = dlib.cnn_face_detection_model_v1(str(model_path("mmod_human_face_detector.dat")))
        name = "shape_predictor_68_face_landmarks.dat" if points == 68 else "shape_predictor_5_face_landmarks.dat"
        self._predictor = dlib.shape_predictor(str(model_path(name)))

    def detect(self, images: Any) -> list[list[FaceDetection]]:
        """``images`` (B, 3, H, W) in [0, 1] -> per image, the faces found, largest first."""
        return [self.detect_array(image) for image in to_uint8_rgb(images)]

    def detect_array(self, image: np.ndarray) -> list[FaceDetection]:
        """``image`` (H, W, 3) uint8 RGB -> the faces found, largest first, each with (K, 2) float32 landmarks."""
        if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
            raise ValueError(f"expected an (H, W, 3) uint8 RGB image, got {image.shape} {image.dtype}")
        if self.params.face_detector == "hog":
            rects, scores, _ = self._hog.run(image, self.params.upsample, self.params.threshold)
            found = list(zip(rects, scores, strict=True))
        else:
            found = [(d.rect, d.confidence) for d in self._cnn(image, self.params.upsample)]
            found = [(r, s) for r, s in found if s >= self.params.threshold]
        faces = []
        for rect, score in found:
            shape = self._predictor(image, rect)
            points = np.array([[p.x, p.y] for p in shape.parts()], dtype=np.float32)
            box = (float(rect.left()), float(rect.top()), float(rect.right()), float(rect.bottom()))
            faces.append(FaceDetection(box, float(score), points, self.card.landmark_scheme))
        faces.sort(key=lambda f: (f.box[2] - f.box[0]) * (f.box[3] - f.box[1]), reverse=True)
        return faces

    def landmarks_in_box(self, image: np.ndarray, box: tuple[float, float, float, float]) -> np.ndarray:
        """The landmark predictor alone on ``box`` (x0, y0, x1, y1) of ``image`` (H, W, 3) uint8 -> (K, 2) float32."""
        rect = self._dlib.rectangle(*(round(v) for v in box))
        shape = self._predictor(image, rect)
        return np.array([[p.x, p.y] for p in shape.parts()], dtype=np.float32)


def card(points: int, face_detector: str = "hog") -> ModelCard:
    predictor = SOURCES[f"shape_predictor_{points}_face_landmarks.dat"]
    detector = HOG_SOURCE if face_detector == "hog" else SOURCES["mmod_human_face_detector.dat"]
    return ModelCard(
        colour_order="RGB",
        landmarks=points,
        landmark_scheme=(LandmarkScheme.IBUG68 if points == 68 else LandmarkScheme.DLIB5).value,
        differentiable=False,
        weights=(detector, predictor),
        notes="HOG finds near-frontal faces of >= 80 px (40 px with upsample=1); CNN (mmod) also finds turned faces",
    )
