"""facekit-insightface: insightface's ArcFace recognition models and SCRFD detector, run without the insightface
package (it downloads models in ``FaceAnalysis``'s constructor; facekit never downloads).

- encoder ``arcface-onnx``: an insightface ONNX recognition model (buffalo_l ``w600k_r50.onnx``) via onnxruntime;
- encoder ``arcface``: arcface_torch's iresnet in torch, loading a ``backbone.pth`` state dict (differentiable);
- detector ``scrfd``: insightface's SCRFD ONNX detector (buffalo_l ``det_10g.onnx``), 5 landmarks.

Registered through the ``facekit`` entry point ``insightface``. Importing this module is cheap: torch and
onnxruntime are imported only when a component is built.
"""

from __future__ import annotations

from typing import Any

from facekit import ComponentSpec, hookimpl
from facekit.hookspecs import Register
from facekit_insightface.cards import (
    ARCFACE_ONNX_CARD,
    SCRFD_CARD,
    ArcFaceOnnxParams,
    ArcFaceTorchParams,
    ScrfdParams,
    arcface_torch_card,
)


def _arcface_onnx(params: ArcFaceOnnxParams) -> Any:
    from facekit_insightface.arcface_onnx import ArcFaceOnnxEncoder

    return ArcFaceOnnxEncoder(params)


def _arcface_torch(params: ArcFaceTorchParams) -> Any:
    from facekit_insightface.iresnet import build_encoder

    return build_encoder(params)


def _scrfd(params: ScrfdParams) -> Any:
    from facekit_insightface.scrfd import ScrfdDetector

    return ScrfdDetector(params)


@hookimpl
def register_encoders(register: Register) -> None:
    register(
        ComponentSpec(
            "arcface-onnx",
            _arcface_onnx,
            ArcFaceOnnxParams,
            "ArcFace (insightface ONNX, e.g. buffalo_l w600k_r50) via onnxruntime: 512-D embedding, not differentiable",
            card=ARCFACE_ONNX_CARD,
        )
    )
    register(
        ComponentSpec(
            "arcface",
            _arcface_torch,
            ArcFaceTorchParams,
            "ArcFace iresnet18/34/50/100 in torch (arcface_torch backbone.pth): 512-D embedding, differentiable",
            card=arcface_torch_card("r50"),
        )
    )


@hookimpl
def register_detectors(register: Register) -> None:
    register(
        ComponentSpec(
            "scrfd",
            _scrfd,
            ScrfdParams,
            "SCRFD face detector (insightface ONNX, e.g. buffalo_l det_10g) via onnxruntime: boxes + 5 landmarks",
            card=SCRFD_CARD,
        )
    )
