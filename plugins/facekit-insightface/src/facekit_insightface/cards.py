"""Params, weight sources and model cards of the insightface components (no torch/onnxruntime here)."""

from __future__ import annotations

from dataclasses import replace
from typing import Literal

from pydantic import Field

from facekit.registry import Params
from facekit.types import ARCFACE_112_TEMPLATE, LandmarkScheme, ModelCard, WeightsSource

_NON_COMMERCIAL = (
    "insightface pretrained models: non-commercial research use only (insightface model licence; the code is MIT). "
    "Trained on {data}"
)
_BUFFALO = "https://github.com/deepinsight/insightface/releases/download/v0.7/buffalo_l.zip"
_SHA256_FIELD = Field(
    default=None,
    pattern=r"^[0-9a-f]{64}$",
    description="expected sha256 of the weight file; overrides the card's (None: the card's, if it has one)",
)

#: insightface's ``arcface_dst``: the five points (eye centres, nose tip, mouth corners; image-left first) in the
#: 112 x 112 crop its ``norm_crop`` makes with cv2.warpAffine (pixel centres at integer coordinates, like facekit).
ARCFACE_TEMPLATE = ARCFACE_112_TEMPLATE

W600K_R50 = WeightsSource(
    "w600k_r50.onnx",
    # 174,383,860 bytes; the sha256 many independent public projects pin for buffalo_l's file.
    "4c06341c33c2ca1f86781dab0e829f88ad5b64be9fba56e56bc9ebdefc619e43",
    _NON_COMMERCIAL.format(data="WebFace600K (WebFace260M subset; research-only terms)"),
    url=_BUFFALO,
    note="member of buffalo_l.zip; iresnet50 trained with ArcFace loss on WebFace600K",
)

DET_10G = WeightsSource(
    "det_10g.onnx",
    # 16,923,827 bytes; the sha256 many independent public projects pin for buffalo_l's file.
    "5838f7fe053675b1c7a08b633df49e7af5495cee0493c7dcf6697200b85b5b91",
    _NON_COMMERCIAL.format(data="WIDER FACE (non-commercial research terms)"),
    url=_BUFFALO,
    note="member of buffalo_l.zip; SCRFD-10GF with 5 keypoints",
)

Arch = Literal["r18", "r34", "r50", "r100"]


def arcface_torch_source(arch: Arch) -> WeightsSource:
    """The ``backbone.pth`` of arcface_torch for ``arch`` (released per training set, so no single checksum)."""
    return WeightsSource(
        f"arcface_torch_{arch}_backbone.pth",
        None,
        _NON_COMMERCIAL.format(data="the data set of the release you chose (MS1MV2/V3, Glint360K, WebFace42M ...)"),
        url="https://github.com/deepinsight/insightface/tree/master/recognition/arcface_torch",
        note="arcface_torch saves `backbone.pth`; rename it to this name for the store, or pass `weights` (and "
        "`sha256` to pin it): releases differ by training set, so the card pins no checksum",
    )


_ARCFACE_NOTES = (
    "embedding: L2-normalised output; threshold: cosine similarity 0.32 (same person above it), i.e. deepface's "
    "cosine distance 0.68 (1 - similarity) for ArcFace (insightface's LFW verification picks squared-L2 thresholds "
    "near 1.4-1.5, i.e. similarity 0.25-0.3); approximate, recalibrate for your data. Input: RGB, (255 x - 127.5) / "
    "127.5 (mean 0.5, std 0.5 in [0, 1] units), aligned to insightface's arcface_dst."
)

ARCFACE_ONNX_CARD = ModelCard(
    input_size=(112, 112),
    colour_order="RGB",
    mean=(0.5, 0.5, 0.5),
    std=(0.5, 0.5, 0.5),
    template=ARCFACE_TEMPLATE,
    embedding_size=512,
    feature_size=512,
    threshold=0.32,  # cosine similarity, see _ARCFACE_NOTES
    distance="cosine",
    differentiable=False,
    detector="scrfd",  # insightface's buffalo_l pairs them
    weights=(W600K_R50,),
    notes="features: the model's raw 512-D output (before normalisation; the ONNX graph exposes nothing lower "
    "that is not spatially varying). insightface's ArcFaceONNX feeds BGR images through blobFromImage(swapRB=True), "
    "so the network sees RGB. " + _ARCFACE_NOTES,
)


def arcface_torch_card(arch: Arch = "r50") -> ModelCard:
    """The card of the torch iresnet ``arch``: the ONNX model's input, template and threshold, differentiable."""
    return replace(
        ARCFACE_ONNX_CARD,
        differentiable=True,
        weights=(arcface_torch_source(arch),),
        notes="features: the output of `fc` (512-D, before the `features` BatchNorm1d): the lowest layer that is not "
        "spatially varying (everything below it, including the flattened 512x7x7 map fc reads, is spatial). "
        + _ARCFACE_NOTES,
    )


SCRFD_CARD = ModelCard(
    input_size=(640, 640),
    colour_order="RGB",
    mean=(0.5, 0.5, 0.5),
    std=(128 / 255, 128 / 255, 128 / 255),
    landmarks=5,
    landmark_scheme=LandmarkScheme.EYES_NOSE_MOUTH5.value,
    differentiable=False,
    weights=(DET_10G,),
    notes="landmarks: scheme 'eyes-nose-mouth5' (eye centres, nose tip, mouth corners; image-left first). Each image "
    "is letterboxed (aspect kept, top-left, zero padding) into the input size, as insightface does; the network sees "
    "RGB (insightface feeds BGR through blobFromImage(swapRB=True)), (255 x - 127.5) / 128. Outputs are matched by "
    "shape (scores/boxes/keypoints x strides 8, 16, 32), not by name.",
)


class ArcFaceOnnxParams(Params):
    """Parameters of the ``arcface-onnx`` encoder."""

    weights: str | None = Field(
        default=None,
        description="path to an insightface ONNX recognition model; None: w600k_r50.onnx from $FACEKIT_HOME/models",
    )
    sha256: str | None = _SHA256_FIELD
    threads: int = Field(default=0, ge=0, description="onnxruntime intra-op threads (0: onnxruntime's default)")
    input_scaling: Literal["auto", "insightface", "in-model"] = Field(
        default="auto",
        description="insightface: feed (255 x - 127.5) / 127.5; in-model: feed 255 x (MXNet-converted models that "
        "subtract and scale in their first nodes); auto: in-model when a Sub and a Mul are among the graph's first 8 "
        "nodes, as insightface decides",
    )


class ArcFaceTorchParams(Params):
    """Parameters of the ``arcface`` (torch iresnet) encoder."""

    weights: str | None = Field(
        default=None,
        description="path to arcface_torch's backbone.pth; None: arcface_torch_<arch>_backbone.pth from "
        "$FACEKIT_HOME/models",
    )
    arch: Arch = Field(default="r50", description="iresnet depth: r18, r34, r50 or r100 (must match the file)")
    sha256: str | None = _SHA256_FIELD


class ScrfdParams(Params):
    """Parameters of the ``scrfd`` detector."""

    weights: str | None = Field(
        default=None,
        description="path to an SCRFD ONNX model; None: det_10g.onnx from $FACEKIT_HOME/models",
    )
    sha256: str | None = _SHA256_FIELD
    input_size: int = Field(
        default=640, ge=32, multiple_of=32, description="square network input when the model's is not fixed"
    )
    score_threshold: float = Field(default=0.5, ge=0, le=1, description="keep faces scoring at least this")
    nms_threshold: float = Field(default=0.4, gt=0, le=1, description="IoU above which the lower-scored box is dropped")
    max_faces: int = Field(default=0, ge=0, description="keep at most this many faces per image (0: all)")
    threads: int = Field(default=0, ge=0, description="onnxruntime intra-op threads (0: onnxruntime's default)")
