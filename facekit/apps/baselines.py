"""General white balancing, the baselines of the ``adjust`` app: each estimates the illuminant colour from the whole
photo and divides it out with per-channel gains (von Kries), keeping the mean brightness.

- ``gray-world``: the illuminant is the mean colour (Buchsbaum 1980);
- ``white-patch``: the illuminant is the per-channel maximum (max-RGB, Land's retinex);
- ``shades-of-gray``: the Minkowski p-norm of each channel, p = 6 (Finlayson & Trezzi 2004);
- ``gray-edge``: the mean gradient magnitude of each channel after a Gaussian of sigma 1 (van de Weijer et al. 2007).

Each has the same ``correct(photo) -> (photo, record)`` as :class:`facekit.apps.adjust.FaceAdjuster`.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from facekit.errors import FacekitError


def _gray_world(photo: np.ndarray) -> np.ndarray:
    return photo.reshape(-1, 3).mean(axis=0)


def _white_patch(photo: np.ndarray) -> np.ndarray:
    return photo.reshape(-1, 3).max(axis=0).astype(np.float64)


def _shades_of_gray(photo: np.ndarray, p: float = 6.0) -> np.ndarray:
    values = photo.reshape(-1, 3).astype(np.float64) / 255.0
    return np.power(np.power(values, p).mean(axis=0), 1.0 / p) * 255.0


def _gray_edge(photo: np.ndarray, sigma: float = 1.0) -> np.ndarray:
    import cv2

    smooth = cv2.GaussianBlur(photo.astype(np.float32), (0, 0), sigma)
    dx = cv2.Sobel(smooth, cv2.CV_32F, 1, 0, ksize=3)
    dy = cv2.Sobel(smooth, cv2.CV_32F, 0, 1, ksize=3)
    return np.sqrt(dx**2 + dy**2).reshape(-1, 3).mean(axis=0).astype(np.float64)


ESTIMATORS: dict[str, Callable[[np.ndarray], np.ndarray]] = {
    "gray-world": _gray_world,
    "white-patch": _white_patch,
    "shades-of-gray": _shades_of_gray,
    "gray-edge": _gray_edge,
}


def gains_for(illuminant: np.ndarray) -> np.ndarray:
    """Per-channel gains that make ``illuminant`` (3,) grey at its own mean level."""
    illuminant = np.maximum(np.asarray(illuminant, np.float64), 1e-6)
    return np.asarray(illuminant.mean() / illuminant, np.float64)


def apply_gains(photo: np.ndarray, gains: np.ndarray) -> np.ndarray:
    """``photo`` (H, W, 3) uint8 with each channel multiplied by its gain (table lookups, clipped)."""
    from facekit.apps.adjust import apply_luts

    return apply_luts(photo, [np.clip(np.arange(256) * gain + 0.5, 0, 255).astype(np.uint8) for gain in gains])


class GlobalWhiteBalance:
    """One of :data:`ESTIMATORS` as a corrector: ``correct(photo) -> (photo, {"method", "gains_rgb"})``."""

    def __init__(self, method: str, strength: float = 1.0) -> None:
        if method not in ESTIMATORS:
            raise FacekitError(f"unknown white balance {method!r}; known: {', '.join(ESTIMATORS)}")
        if not 0.0 <= strength <= 1.0:
            raise FacekitError(f"strength must be between 0 and 1, got {strength}")
        self.method, self.strength = method, strength

    def gains(self, photo: np.ndarray) -> np.ndarray:
        return 1.0 + self.strength * (gains_for(ESTIMATORS[self.method](photo)) - 1.0)

    def correct(self, photo: np.ndarray) -> tuple[np.ndarray, dict[str, Any]]:
        gains = self.gains(photo)
        return apply_gains(photo, gains), {"method": self.method, "gains_rgb": [round(float(g), 4) for g in gains]}

    def apply(self, faces: Any) -> dict[str, Any]:
        """The App protocol: the gains this method would apply to each normalized face of ``faces``: (B, 3)."""
        from facekit.images import to_uint8_rgb

        return {"gains_rgb": np.stack([self.gains(image) for image in to_uint8_rgb(faces.image)])}
