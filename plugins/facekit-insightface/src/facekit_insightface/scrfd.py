"""The ``scrfd`` detector: insightface's SCRFD ONNX models (e.g. buffalo_l ``det_10g.onnx``) with onnxruntime, and
our own numpy decoding (distance-to-box/keypoint offsets from anchor centres) and non-maximum suppression.

SCRFD (Guo et al. 2021) predicts, per feature-map stride ``s`` and per anchor at cell ``(i, j)`` (anchor centre
``(j s, i s)`` in input pixels, ``A`` anchors per cell), a score, four distances ``(left, top, right, bottom)`` and ten
keypoint offsets ``(dx, dy) x 5``, all in units of ``s``. Outputs are found by their shapes, not their names (the
names are graph-internal numbers such as ``448``): last dimension 1, 4 or 10 for scores, boxes or keypoints; the
number of rows ``(H / s) (W / s) A`` gives the stride.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import cv2
import numpy as np

from facekit.errors import FacekitError
from facekit.types import FaceDetection, LandmarkScheme, RebuiltOnUnpickle
from facekit_insightface.cards import DET_10G, SCRFD_CARD, ScrfdParams
from facekit_insightface.session import open_session, resolve

__all__ = ["ScrfdDetector", "decode", "letterbox", "nms"]

_STRIDES = {3: (8, 16, 32), 5: (8, 16, 32, 64, 128)}
_WIDTHS = {1: "scores", 4: "boxes", 10: "keypoints"}


@dataclass(frozen=True)
class _Level:
    stride: int
    anchors: int
    scores: int  # output indices
    boxes: int
    keypoints: int | None


def letterbox(image: np.ndarray, size: tuple[int, int]) -> tuple[np.ndarray, tuple[float, float]]:
    """``image`` (H, W, 3) float32 0..255 -> the (height, width) = ``size`` canvas with the image resized (aspect
    kept, as insightface sizes it) at the top-left and zeros elsewhere, and the (x, y) scale of the resize."""
    height, width = image.shape[:2]
    out_h, out_w = size
    if height / width > out_h / out_w:
        new_h, new_w = out_h, max(int(out_h * width / height), 1)
    else:
        new_w, new_h = out_w, max(int(out_w * height / width), 1)
    canvas = np.zeros((out_h, out_w, 3), np.float32)
    canvas[:new_h, :new_w] = cv2.resize(image, (new_w, new_h), interpolation=cv2.INTER_LINEAR)
    return canvas, (new_w / width, new_h / height)


def nms(boxes: np.ndarray, scores: np.ndarray, threshold: float) -> np.ndarray:
    """Indices of the boxes (N, 4) ``x0, y0, x1, y1`` kept by greedy NMS (IoU > ``threshold`` suppressed), best
    first."""
    order = np.argsort(-scores, kind="stable")
    areas = np.clip(boxes[:, 2] - boxes[:, 0], 0, None) * np.clip(boxes[:, 3] - boxes[:, 1], 0, None)
    keep = []
    while order.size:
        best, rest = order[0], order[1:]
        keep.append(best)
        x0 = np.maximum(boxes[best, 0], boxes[rest, 0])
        y0 = np.maximum(boxes[best, 1], boxes[rest, 1])
        x1 = np.minimum(boxes[best, 2], boxes[rest, 2])
        y1 = np.minimum(boxes[best, 3], boxes[rest, 3])
        inter = np.clip(x1 - x0, 0, None) * np.clip(y1 - y0, 0, None)
        iou = inter / np.maximum(areas[best] + areas[rest] - inter, 1e-12)
        order = rest[iou <= threshold]
    return np.asarray(keep, dtype=np.int64)


def anchor_centres(height: int, width: int, stride: int, anchors: int) -> np.ndarray:
    """(cells x anchors, 2) anchor centres (x, y) in input pixels, row-major cells, anchors innermost."""
    ys, xs = np.mgrid[: height // stride, : width // stride]
    centres = np.stack([xs, ys], axis=-1).reshape(-1, 2).astype(np.float32) * stride
    return np.repeat(centres, anchors, axis=0)


def decode(
    outputs: list[np.ndarray], levels: list[_Level], input_hw: tuple[int, int], threshold: float
) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    """Raw outputs -> (boxes (N, 4), scores (N,), keypoints (N, 5, 2) or None) in input pixels, score >= threshold."""
    boxes, scores, points = [], [], []
    for level in levels:
        score = outputs[level.scores].reshape(-1)
        keep = np.flatnonzero(score >= threshold)
        centres = anchor_centres(*input_hw, level.stride, level.anchors)[keep]
        distance = outputs[level.boxes].reshape(-1, 4)[keep] * level.stride
        boxes.append(np.concatenate([centres - distance[:, :2], centres + distance[:, 2:]], axis=1))
        scores.append(score[keep])
        if level.keypoints is not None:
            offsets = outputs[level.keypoints].reshape(-1, 5, 2)[keep] * level.stride
            points.append(centres[:, None, :] + offsets)
    return (
        np.concatenate(boxes).astype(np.float32),
        np.concatenate(scores).astype(np.float32),
        np.concatenate(points).astype(np.float32) if points else None,
    )


class ScrfdDetector(RebuiltOnUnpickle):
    """``detect(images (B, 3, H, W) RGB in [0, 1])`` -> per image, faces largest first: box (x0, y0, x1, y1), score,
    landmarks (5, 2) float32 (eye centres, nose tip, mouth corners; scheme ``eyes-nose-mouth5``), in the image's
    pixels."""

    #: An onnxruntime session cannot be pickled ("cannot pickle '...InferenceSession' object": no process pool, no
    #: deep copy of a Normalizer with this detector): the copy opens the weight file again, verified as on first load.
    _REBUILT = ("session", "_path")

    def __init__(self, params: ScrfdParams) -> None:
        self.params = params
        self.card = SCRFD_CARD
        what = "scrfd"
        self._rebuild()
        path = self._path
        inputs = self.session.get_inputs()
        shape = list(inputs[0].shape) if len(inputs) == 1 else []
        if len(shape) != 4 or shape[1] != 3:
            raise FacekitError(f"{what}: {path} is not an SCRFD detector: inputs {[(i.name, i.shape) for i in inputs]}")
        self.input_name = inputs[0].name
        fixed = all(isinstance(d, int) and d > 0 for d in shape[2:])
        self.input_hw = (int(shape[2]), int(shape[3])) if fixed else (params.input_size, params.input_size)
        self.output_names = [o.name for o in self.session.get_outputs()]
        if len(self.output_names) not in (6, 9, 10, 15):
            raise FacekitError(
                f"{what}: {path} has {len(self.output_names)} outputs; SCRFD models have 6 or 9 (strides 8-32) or "
                "10 or 15 (strides 8-128)"
            )
        self._levels: list[_Level] | None = None

    def _rebuild(self) -> None:
        """The session of the weight file ``params`` name, its sha256 checked (the card's, or ``params.sha256``)."""
        self._path = resolve(DET_10G, self.params.weights, self.params.sha256, "scrfd")
        self.session = open_session(self._path, "scrfd", self.params.threads)

    def _match_levels(self, outputs: list[np.ndarray]) -> list[_Level]:
        """Which output is which (kind, stride), from the output shapes of the first run."""
        groups: dict[str, list[tuple[int, int]]] = {"scores": [], "boxes": [], "keypoints": []}
        for index, out in enumerate(outputs):
            width = out.shape[-1] if out.ndim in (2, 3) else -1
            if width not in _WIDTHS or (out.ndim == 3 and out.shape[0] != 1):
                raise FacekitError(f"scrfd: output {self.output_names[index]!r} has shape {out.shape}: not SCRFD")
            groups[_WIDTHS[width]].append((out.shape[-2], index))
        count = len(groups["scores"])
        if count not in _STRIDES or len(groups["boxes"]) != count or len(groups["keypoints"]) not in (0, count):
            raise FacekitError(f"scrfd: {self._path} outputs {[o.shape for o in outputs]} are not SCRFD's")
        height, width = self.input_hw
        levels = []
        for rank, stride in enumerate(_STRIDES[count]):
            (rows, score_index), (box_rows, box_index) = (
                sorted(groups["scores"], reverse=True)[rank],
                sorted(groups["boxes"], reverse=True)[rank],
            )
            cells = (height // stride) * (width // stride)
            if rows != box_rows or rows % cells or rows // cells not in (1, 2):
                raise FacekitError(f"scrfd: {self._path} output rows {rows} do not fit stride {stride}")
            keypoints = sorted(groups["keypoints"], reverse=True)[rank][1] if groups["keypoints"] else None
            levels.append(_Level(stride, rows // cells, score_index, box_index, keypoints))
        return levels

    def detect_array(self, image: np.ndarray) -> list[FaceDetection]:
        """``image`` (H, W, 3) uint8 RGB (float32 in 0..255 reads the same) -> its faces, largest first (``max_faces``
        keeps the largest)."""
        canvas, (scale_x, scale_y) = letterbox(image, self.input_hw)
        blob = ((canvas - 127.5) / 128.0).transpose(2, 0, 1)[None]
        outputs = self.session.run(self.output_names, {self.input_name: np.ascontiguousarray(blob, np.float32)})
        if self._levels is None:
            self._levels = self._match_levels(outputs)
        boxes, scores, points = decode(outputs, self._levels, self.input_hw, self.params.score_threshold)
        keep = nms(boxes, scores, self.params.nms_threshold)
        # Largest box first, as every facekit detector: the pipeline normalizes faces[0] ("the largest face").
        sides = boxes[keep, 2:] - boxes[keep, :2]
        keep = keep[np.argsort(-(sides[:, 0] * sides[:, 1]), kind="stable")]
        if self.params.max_faces:
            keep = keep[: self.params.max_faces]
        # Back to the image's pixels: invert cv2.resize's mapping (pixel centres at integer coordinates).
        scale = np.array([scale_x, scale_y], np.float32)
        boxes = ((boxes.reshape(-1, 2, 2) + 0.5) / scale - 0.5).reshape(-1, 4)
        faces = []
        for index in keep:
            landmarks = None if points is None else (points[index] + 0.5) / scale - 0.5
            x0, y0, x1, y1 = (float(v) for v in boxes[index])
            faces.append(
                FaceDetection(
                    (x0, y0, x1, y1),
                    float(scores[index]),
                    landmarks,
                    LandmarkScheme.EYES_NOSE_MOUTH5.value if points is not None else None,
                )
            )  # type: ignore[arg-type]
        return faces

    def detect(self, images: Any) -> list[list[FaceDetection]]:
        """``images`` (B, 3, H, W) RGB in ``[0, 1]`` (torch or numpy) -> one list of faces per image, largest first."""
        array = images.detach().cpu().numpy() if hasattr(images, "detach") else np.asarray(images)
        if array.ndim != 4 or array.shape[1] != 3:
            raise ValueError(f"scrfd: expected (B, 3, H, W) RGB images, got {array.shape}")
        pixels = (array.astype(np.float32) * 255.0).transpose(0, 2, 3, 1)
        return [self.detect_array(np.ascontiguousarray(image)) for image in pixels]
