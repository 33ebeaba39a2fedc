"""The five kinds of component, as Protocols, and the small frozen records that cross their boundaries.

Conventions at every boundary (plugins convert inside themselves):

- images: ``(B, 3, H, W)`` float32 RGB in ``[0, 1]``;
- landmarks: ``(B, K, 2)`` (x, y) pixel coordinates, pixel centres at integer coordinates;
- components never choose a device: the runner moves them.

This module must stay importable without torch: tensors are typed as ``Any`` here.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal, Protocol, runtime_checkable

Kind = Literal["detector", "encoder", "decoder", "warper", "app"]
KINDS: tuple[Kind, ...] = ("detector", "encoder", "decoder", "warper", "app")

Distance = Literal["cosine", "euclidean"]


@dataclass(frozen=True)
class WeightsSource:
    """Where a model's weights come from: a file in a pip package, or a file the user supplies."""

    file: str
    sha256: str | None
    licence: str
    package: str | None = None
    url: str | None = None
    note: str = ""


@dataclass(frozen=True)
class AlignmentTemplate:
    """Where a model expects the face: named reference points in pixels of its ``input_size`` frame."""

    name: str
    points: tuple[tuple[float, float], ...]
    scheme: str = "5pt"  # which landmarks the points correspond to: "5pt" (eyes, nose, mouth corners) or "ibug68"


#: The 112 x 112 five-point template of ArcFace (insightface's ``arcface_dst``), also OpenCV's ``FaceRecognizerSF``
#: ``alignCrop`` target: image-left eye, image-right eye, nose tip, image-left and image-right mouth corners, pixel
#: centres at integer coordinates. Shared by every encoder trained on these crops.
ARCFACE_112_TEMPLATE = AlignmentTemplate(
    "arcface-112",
    ((38.2946, 51.6963), (73.5318, 51.5014), (56.0252, 71.7366), (41.5493, 92.3655), (70.7299, 92.2041)),
    scheme="5pt",
)


@dataclass(frozen=True)
class ModelCard:
    """The data contract that travels with a model's weights (see ARCHITECTURE.md, "Model cards").

    Alignment and normalisation are derived from the card, never hard-coded at call sites.
    """

    input_size: tuple[int, int] | None = None  # (width, height) in pixels
    colour_order: Literal["RGB", "BGR"] = "RGB"
    mean: tuple[float, float, float] = (0.0, 0.0, 0.0)
    std: tuple[float, float, float] = (1.0, 1.0, 1.0)
    template: AlignmentTemplate | None = None
    embedding_size: int | None = None
    feature_size: int | None = None
    threshold: float | None = None
    distance: Distance | None = None
    differentiable: bool = False
    landmarks: int | None = None  # for detectors: points per face
    weights: tuple[WeightsSource, ...] = ()
    notes: str = ""

    def summary_fields(self) -> dict[str, str]:
        """The card's non-empty fields as short strings, for ``facekit list``."""
        out: dict[str, str] = {}
        if self.input_size:
            out["input"] = f"{self.input_size[0]}x{self.input_size[1]} {self.colour_order}"
        if self.embedding_size:
            out["embedding"] = str(self.embedding_size)
        if self.feature_size:
            out["features"] = str(self.feature_size)
        if self.threshold is not None:
            out["threshold"] = f"{self.threshold} ({self.distance})"
        if self.landmarks:
            out["landmarks"] = str(self.landmarks)
        out["differentiable"] = "yes" if self.differentiable else "no"
        if self.weights:
            out["licence"] = ", ".join(sorted({w.licence for w in self.weights}))
        return out


@dataclass(frozen=True)
class FaceDetection:
    """One face found in one image. ``landmarks`` is ``(K, 2)`` (x, y) pixels, or ``None``."""

    box: tuple[float, float, float, float]  # x0, y0, x1, y1
    score: float
    landmarks: Any = None
    scheme: str | None = None  # "ibug68", "5pt", ...


@dataclass(frozen=True)
class InputSpec:
    """What an encoder wants: a ``size`` crop aligned to ``template``, normalised with ``mean``/``std``."""

    size: tuple[int, int]
    template: AlignmentTemplate
    mean: tuple[float, float, float] = (0.0, 0.0, 0.0)
    std: tuple[float, float, float] = (1.0, 1.0, 1.0)


@dataclass
class DecoderOutput:
    """What a decoder returns for ``B`` feature vectors.

    ``image``: ``(B, 3, S, S)`` the normalized face; ``landmarks``: ``(B, K, 2)`` or ``None``;
    ``texture``: ``(B, 3, S, S)`` the face registered to the mean landmarks, or ``None`` for decoders without one.
    """

    image: Any
    landmarks: Any = None
    texture: Any = None
    extras: dict[str, Any] = field(default_factory=dict)


@runtime_checkable
class Detector(Protocol):
    """Finds faces and their landmarks: ``detect(images (B, 3, H, W)) -> list (per image) of FaceDetection``."""

    card: ModelCard

    def detect(self, images: Any) -> list[list[FaceDetection]]: ...


@runtime_checkable
class Encoder(Protocol):
    """A frozen face-recognition network.

    ``embed(images (B, 3, H, W) aligned to card.template) -> (B, D)`` identity embedding;
    ``features(images) -> (B, F)`` the lowest spatially invariant layer (what the decoder reads).
    """

    card: ModelCard

    def embed(self, images: Any) -> Any: ...

    def features(self, images: Any) -> Any: ...


@runtime_checkable
class Decoder(Protocol):
    """``decode(features (B, F)) -> DecoderOutput``."""

    def decode(self, features: Any) -> DecoderOutput: ...


@runtime_checkable
class Warper(Protocol):
    """Moves an image so that ``source`` landmarks land on ``destination`` landmarks.

    ``warp(image (B, C, H, W), source (B, K, 2), destination (B, K, 2)) -> (warped (B, C, H, W), flow (B, H, W, 2))``.
    ``differentiable`` says whether gradients flow to image, source and destination.
    """

    differentiable: bool

    def warp(self, image: Any, source: Any, destination: Any) -> tuple[Any, Any]: ...


@runtime_checkable
class App(Protocol):
    """Something done with normalized faces: ``apply(faces: DecoderOutput) -> dict of named results``."""

    def apply(self, faces: DecoderOutput) -> dict[str, Any]: ...
