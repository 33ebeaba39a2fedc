"""Per-face measurements and the filters that keep the paper's "frontal, neutral, evenly lit" faces.

Expression and sharpness are measured on the landmarks and on the aligned crop, so thresholds do not depend on the
photo's resolution. Defaults were calibrated on the London set (102 people, neutral vs smiling, same studio), with
dlib's 68 landmarks (see benchmarks/RESULTS.md, "prepare"):

| measure | neutral 5-50-95 % | smiling 50 % |
|---|---|---|
| inner-lip gap / interocular | 0.004 0.012 0.033 | 0.084 |
| mouth width / interocular | 0.75 0.81 0.87 | 0.93 |
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from facekit.align import interocular_distance

# iBUG 68 (0-based): inner-lip pairs (upper, lower) and the mouth corners.
INNER_LIP_PAIRS = ((61, 67), (62, 66), (63, 65))
MOUTH_CORNERS = (48, 54)


@dataclass(frozen=True)
class FaceMeasures:
    """What the filters look at, for one face."""

    interocular_px: float
    yaw: float
    pitch: float
    roll: float
    mouth_open: float
    mouth_width: float
    sharpness: float
    colourfulness: float

    def to_dict(self) -> dict[str, float]:
        return {k: round(float(v), 4) for k, v in asdict(self).items()}


def mouth_measures(landmarks: np.ndarray) -> tuple[float, float]:
    """(inner-lip gap, mouth width), both divided by the interocular distance, from 68 landmarks (K, 2)."""
    iod = interocular_distance(landmarks)
    gap = np.mean([np.linalg.norm(landmarks[a] - landmarks[b]) for a, b in INNER_LIP_PAIRS]) / iod
    width = np.linalg.norm(landmarks[MOUTH_CORNERS[0]] - landmarks[MOUTH_CORNERS[1]]) / iod
    return float(gap), float(width)


def sharpness(aligned: np.ndarray, landmarks: np.ndarray) -> float:
    """Variance of the Laplacian of the grey face region (bounding box of the landmarks) of an aligned crop."""
    import cv2

    grey = cv2.cvtColor(aligned, cv2.COLOR_RGB2GRAY)
    x0, y0 = np.floor(landmarks.min(axis=0)).astype(int).clip(0)
    x1, y1 = np.ceil(landmarks.max(axis=0)).astype(int)
    region = grey[y0 : max(y1, y0 + 3), x0 : max(x1, x0 + 3)]
    return float(cv2.Laplacian(region, cv2.CV_64F).var())


def colourfulness(image: np.ndarray) -> float:
    """Hasler & Süsstrunk's colourfulness of an RGB uint8 image: ~0 for grey photos, 15+ for natural colour."""
    rgb = image.astype(np.float64)
    rg = rgb[..., 0] - rgb[..., 1]
    yb = 0.5 * (rgb[..., 0] + rgb[..., 1]) - rgb[..., 2]
    return float(np.hypot(rg.std(), yb.std()) + 0.3 * np.hypot(rg.mean(), yb.mean()))


def rejection_reason(measures: FaceMeasures, rules: Any) -> str | None:
    """The first rule of ``rules`` (a recipe's ``prepare`` section) that the face breaks, or ``None`` to keep it."""
    if measures.interocular_px < rules.min_face_px:
        return f"too_small (interocular {measures.interocular_px:.0f} px < {rules.min_face_px:g})"
    if abs(measures.yaw) > rules.max_yaw_deg:
        return f"pose (yaw {measures.yaw:.0f} deg)"
    if abs(measures.pitch - rules.frontal_pitch_deg) > rules.max_pitch_deg:
        return f"pose (pitch {measures.pitch:.0f} deg)"
    if measures.sharpness < rules.min_sharpness:
        return f"blur (Laplacian variance {measures.sharpness:.0f})"
    if measures.colourfulness < rules.min_colourfulness:
        return f"monochrome (colourfulness {measures.colourfulness:.1f})"
    if measures.mouth_open > rules.max_mouth_open:
        return f"expression (mouth open {measures.mouth_open:.2f})"
    if measures.mouth_width > rules.max_mouth_width:
        return f"expression (smile: mouth width {measures.mouth_width:.2f})"
    return None
