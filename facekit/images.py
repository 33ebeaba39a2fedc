"""Conversions at component boundaries: facekit's (B, 3, H, W) float RGB in [0, 1] <-> (H, W, 3) uint8 RGB arrays.

Numpy only (torch tensors are accepted but torch is not imported), so plugins and light modules can use it.
"""

from __future__ import annotations

from typing import Any

import numpy as np


def to_uint8_rgb(images: Any) -> list[np.ndarray]:
    """(B, 3, H, W) float in [0, 1] (torch, any float dtype, or numpy) -> list of B (H, W, 3) uint8 RGB arrays,
    clipped to [0, 1] and rounded."""
    array = images.detach().float().cpu().numpy() if hasattr(images, "detach") else np.asarray(images)
    if array.ndim != 4 or array.shape[1] != 3:
        raise ValueError(f"expected images of shape (B, 3, H, W), got {tuple(array.shape)}")
    return [
        np.ascontiguousarray((np.clip(img, 0, 1).transpose(1, 2, 0) * 255).round().astype(np.uint8)) for img in array
    ]
