"""Model cards of this plugin's encoders, importable without torch (the hooks read them)."""

from __future__ import annotations

from facekit.types import AlignmentTemplate, LandmarkScheme, ModelCard
from facekit_dlib.models import SOURCES

#: dlib's encoder reads dlib's own chips (get_face_chip_details), which its align() reproduces exactly; the template
#: has no fixed points because dlib fits its chip to 5 or 68 landmarks with its own mean-face model.
RESNET_CARD = ModelCard(
    input_size=(150, 150),
    colour_order="RGB",
    mean=(122.782 / 255, 117.001 / 255, 104.298 / 255),
    std=(256 / 255, 256 / 255, 256 / 255),
    template=AlignmentTemplate(
        "dlib-chip-150-pad0.25",
        (),
        scheme="dlib-chip",
        accepts=(LandmarkScheme.IBUG68.value, LandmarkScheme.DLIB5.value),
    ),
    embedding_size=128,
    feature_size=256,
    threshold=0.6,
    distance="euclidean",
    differentiable=True,
    detector="dlib",
    weights=(SOURCES["dlib_face_recognition_resnet_model_v1.dat"],),
    notes="dlib's metric-learning ResNet (29 conv layers), LFW 99.38% by its author; features: the 256-D average "
    "pool before the last fc; inputs are dlib chips (get_face_chip_details: 5 or 68 points, 150 px, padding 0.25)",
)
