"""General white balancing, the baselines of the ``adjust`` app: each estimates the illuminant colour from the whole
photo in linear light and divides it out with per-channel gains in linear light (von Kries), keeping the mean level.

- ``gray-world``: the illuminant is the mean colour (Buchsbaum 1980);
- ``white-patch``: the illuminant is the per-channel maximum (max-RGB, Land's retinex);
- ``shades-of-gray``: the Minkowski p-norm of each channel, p = 6 (Finlayson & Trezzi 2004);
- ``gray-edge``: the mean gradient magnitude of each channel after a Gaussian of sigma 1 (van de Weijer et al. 2007);
- ``xphoto``: OpenCV's learning-based white balance (``cv2.xphoto.LearningBasedWB``, Cheng et al. 2015: regression
  trees on chromaticity features, OpenCV's default model trained on the Gehler-Shi raw photos). It needs OpenCV's
  contrib build (``opencv-contrib-python-headless<5``, which facekit installs as its one OpenCV distribution). Its model
  was trained on linear raw data, so it is fed the linear copy at 16 bits (``setRangeMaxVal(65535)``); its gains are
  read back as the ratio of its output to its input over the pixels it left unclipped. On the selection set
  (``python benchmarks/xphoto_input.py``, RESULTS.md "xphoto-input": London/Canada neutral photos with known casts,
  scene background) that input gave a median error of 7.96 deg, the 8-bit encoded copy 8.29 (its gains taken as
  encoded, ``g ** 2.2`` in linear light) and the 8-bit photo corrected by OpenCV itself 8.71; no correction 7.86.
  OpenCV's model does not transfer to sRGB photos (another sensor's colours): it is here because it is the learned
  method people reach for. On a photo of fewer than :data:`XPHOTO_MIN_COLOURS` colours it changes nothing.

Linear light, as a camera's illuminant acts and as ``adjust`` corrects: gains on the gamma-encoded values cannot undo
a cast (a correct estimate applied that way leaves 7 degrees at 2,500 K). The estimate is taken on a copy at most
``facekit.apps.ESTIMATE_SIDE`` px on its long side, like ``adjust``'s.

Each has the same ``correct(photo) -> (photo, record)`` as :class:`facekit.apps.adjust.FaceAdjuster`.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from facekit.apps import ESTIMATE_SIDE
from facekit.errors import FacekitError


def _gray_world(linear: np.ndarray) -> np.ndarray:
    return np.asarray(linear.reshape(-1, 3).mean(axis=0), np.float64)


def _white_patch(linear: np.ndarray) -> np.ndarray:
    return np.asarray(linear.reshape(-1, 3).max(axis=0), np.float64)


def _shades_of_gray(linear: np.ndarray, p: float = 6.0) -> np.ndarray:
    values = linear.reshape(-1, 3).astype(np.float64)
    return np.asarray(np.power(np.power(values, p).mean(axis=0), 1.0 / p), np.float64)


def _gray_edge(linear: np.ndarray, sigma: float = 1.0) -> np.ndarray:
    import cv2

    smooth = cv2.GaussianBlur(np.ascontiguousarray(linear, np.float32), (0, 0), sigma)
    dx = cv2.Sobel(smooth, cv2.CV_32F, 1, 0, ksize=3)
    dy = cv2.Sobel(smooth, cv2.CV_32F, 0, 1, ksize=3)
    return np.asarray(np.sqrt(dx**2 + dy**2).reshape(-1, 3).mean(axis=0), np.float64)


#: OpenCV's LearningBasedWB takes the mode of its 300 most common colours and reads 300 whether or not the photo has
#: that many (past the end of its list: undefined, different from run to run); below this, ``xphoto`` leaves the photo.
XPHOTO_MIN_COLOURS = 310


def _xphoto_module() -> Any:
    import cv2

    if not hasattr(cv2, "xphoto"):
        raise FacekitError(
            "white balance 'xphoto' needs OpenCV's contrib build: pip uninstall opencv-python-headless, then "
            "pip install 'opencv-contrib-python-headless<5' (one OpenCV distribution only; `make` does this)"
        )
    return cv2.xphoto


def _xphoto(linear: np.ndarray) -> np.ndarray:
    balancer = _xphoto_module().createLearningBasedWB()
    balancer.setRangeMaxVal(65535)
    bgr = np.ascontiguousarray(np.round(np.clip(linear[..., ::-1], 0.0, 1.0) * 65535.0).astype(np.uint16))
    # Its histogram: 64 bins per channel up to the photo's maximum (exclusive), over pixels below 98 % of the range.
    top = max(int(bgr.max()), 64)
    counted = bgr[(bgr.max(axis=2) < int(balancer.getSaturationThreshold() * 65535)) & (bgr.max(axis=2) < top)]
    bins = counted.astype(np.int64) * 64 // top
    if len(np.unique((bins[:, 0] * 64 + bins[:, 1]) * 64 + bins[:, 2])) < XPHOTO_MIN_COLOURS:
        return np.ones(3, np.float64)
    balanced = balancer.balanceWhite(bgr)
    # Its gains, read back over the pixels it did not clip (and not near black, where rounding dominates).
    kept = (bgr.min(axis=2) > 0) & (bgr.max(axis=2) > 655) & (balanced.max(axis=2) < 65535)
    if not kept.any():
        return np.ones(3, np.float64)
    gains = balanced[kept].astype(np.float64).sum(axis=0) / bgr[kept].astype(np.float64).sum(axis=0)
    return np.asarray(1.0 / np.maximum(gains[::-1], 1e-6), np.float64)


#: Estimators of the illuminant's colour: (H, W, 3) linear-light RGB in [0, 1] -> (3,) in linear light.
ESTIMATORS: dict[str, Callable[[np.ndarray], np.ndarray]] = {
    "gray-world": _gray_world,
    "white-patch": _white_patch,
    "shades-of-gray": _shades_of_gray,
    "gray-edge": _gray_edge,
    "xphoto": _xphoto,
}

#: The statistical estimators, which ``adjust``'s fusion may mix with the face (``agreement`` weighs all of these).
STATISTICAL: tuple[str, ...] = ("gray-world", "white-patch", "shades-of-gray", "gray-edge")


def linear_illuminant(method: str, photo: np.ndarray) -> np.ndarray:
    """The illuminant of ``photo`` (H, W, 3) uint8 sRGB by ``method``, in linear light (3,), estimated on a copy at
    most ESTIMATE_SIDE px on its long side."""
    return linear_illuminants([method], photo)[method]


def linear_illuminants(methods: Sequence[str], photo: np.ndarray) -> dict[str, np.ndarray]:
    """Each of ``methods``' illuminant of ``photo`` as :func:`linear_illuminant`, the copy shrunk and converted to
    linear light once for all of them."""
    from facekit.apps.adjust import LINEAR_LEVELS
    from facekit.images import downscale

    unknown = [m for m in methods if m not in ESTIMATORS]
    if unknown:
        raise FacekitError(f"unknown white balance {unknown[0]!r}; known: {', '.join(ESTIMATORS)}")
    small = downscale(np.ascontiguousarray(photo), ESTIMATE_SIDE)
    linear = LINEAR_LEVELS.astype(np.float32)[small]
    return {m: np.maximum(ESTIMATORS[m](linear), 1e-6) for m in methods}


def gains_for(illuminant: np.ndarray) -> np.ndarray:
    """Per-channel gains that make ``illuminant`` (3,) grey at its own mean level (both in linear light)."""
    illuminant = np.maximum(np.asarray(illuminant, np.float64), 1e-6)
    return np.asarray(illuminant.mean() / illuminant, np.float64)


def apply_gains(photo: np.ndarray, gains: np.ndarray) -> np.ndarray:
    """``photo`` (H, W, 3) uint8 with each channel's *encoded* value multiplied by its gain (table lookups, clipped):
    a cast as a gamma-space edit makes it, for tests; the baselines correct in linear light."""
    from facekit.apps.adjust import apply_luts

    return apply_luts(photo, [np.clip(np.arange(256) * gain + 0.5, 0, 255).astype(np.uint8) for gain in gains])


class GlobalWhiteBalance:
    """One of :data:`ESTIMATORS` as a corrector: ``correct(photo) -> (photo, {"method", "gains_rgb"})``."""

    #: It estimates on a copy at most this many pixels on its long side (``facekit adjust`` may hand it one).
    estimate_side = ESTIMATE_SIDE

    def __init__(self, method: str, strength: float = 1.0) -> None:
        if method not in ESTIMATORS:
            raise FacekitError(f"unknown white balance {method!r}; known: {', '.join(ESTIMATORS)}")
        if not 0.0 <= strength <= 1.0:
            raise FacekitError(f"strength must be between 0 and 1, got {strength}")
        if method == "xphoto":
            _xphoto_module()  # a missing contrib build stops the run here, not at every photo
        self.method, self.strength = method, strength

    def gains(self, photo: np.ndarray) -> np.ndarray:
        """Linear-light gains for ``photo``, ``strength`` of the way (geometrically) from 1 to the full correction."""
        return np.asarray(gains_for(linear_illuminant(self.method, photo)) ** self.strength, np.float64)

    def correct(self, photo: np.ndarray) -> tuple[np.ndarray, dict[str, Any]]:
        from facekit.apps.adjust import apply_linear_gains

        gains = self.gains(photo)
        record = {"method": self.method, "gains_rgb": [round(float(g), 4) for g in gains], "light": "linear"}
        return apply_linear_gains(photo, gains), record

    def apply(self, faces: Any) -> dict[str, Any]:
        """The App protocol: the gains this method would apply to each normalized face of ``faces``: (B, 3)."""
        from facekit.images import to_uint8_rgb

        return {"gains_rgb": np.stack([self.gains(image) for image in to_uint8_rgb(faces.image)])}
