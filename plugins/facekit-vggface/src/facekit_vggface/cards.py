"""Params, weight source and model card of the VGG-Face encoder (no torch here: the registry reads these)."""

from __future__ import annotations

from pydantic import Field

from facekit.registry import Params
from facekit.types import AlignmentTemplate, LandmarkScheme, ModelCard, WeightsSource

INPUT_SIZE = 224
FEATURE_SIZE = 4096
NUM_CLASSES = 2622
#: The network's input mean (RGB, 0..255), from the meta data of the MatConvNet model and ``vgg_face_dag.py``.
MEAN_255 = (129.186279296875, 104.76238250732422, 93.59396362304688)

SOURCE = WeightsSource(
    "vgg_face_dag.pth",
    None,
    "Oxford VGG-Face weights (Parkhi, Vedaldi, Zisserman 2015): released for non-commercial research purposes only "
    "(see the VGG-Face page); PyTorch conversion by Samuel Albanie (pytorch-mcn)",
    url="https://www.robots.ox.ac.uk/~albanie/models/pytorch-mcn/vgg_face_dag.pth",
    note="state dict with keys conv1_1 ... conv5_3, fc6 (4096 x 25088), fc7, fc8 (2622); sha256 not pinned: we found "
    "no published checksum (pass `sha256` to pin the file you have)",
)

#: VGG-Face was trained on loosely cropped, unaligned detections (Parkhi et al. 2015, sec. 4: the face box extended
#: by a margin, resized to 256 and centre-cropped to 224). There is no official landmark template; this eyes-based
#: frame is our estimate of such crops: eye centres 70 px apart (0.31 of the width), centred, at 0.40 of the height.
TEMPLATE = AlignmentTemplate("vggface-224-eyes", ((76.5, 89.2), (146.5, 89.2)), scheme=LandmarkScheme.EYES2.value)


class VggFaceParams(Params):
    """Parameters of the ``vggface`` encoder."""

    weights: str | None = Field(
        default=None,
        description="path to vgg_face_dag.pth; None: the file named on the card, from $FACEKIT_HOME/models "
        "(`facekit models import PATH`)",
    )
    sha256: str | None = Field(
        default=None,
        pattern=r"^[0-9a-f]{64}$",
        description="expected sha256 of the weight file (the card pins none)",
    )
    features_relu: bool = Field(
        default=True,
        description="features() returns fc7 after its ReLU (the usual VGG-Face descriptor); False: before it",
    )


CARD = ModelCard(
    input_size=(INPUT_SIZE, INPUT_SIZE),
    colour_order="RGB",
    mean=tuple(m / 255 for m in MEAN_255),  # type: ignore[arg-type]
    std=(1 / 255, 1 / 255, 1 / 255),  # the network takes 0..255 minus the mean, unscaled
    template=TEMPLATE,
    embedding_size=FEATURE_SIZE,
    feature_size=FEATURE_SIZE,
    threshold=0.32,  # cosine similarity (facekit's convention for distance='cosine': same person above it)
    distance="cosine",
    differentiable=True,
    weights=(SOURCE,),
    notes=(
        "features: fc7 (4096-D, after ReLU unless features_relu=False), the paper's second encoder; embedding: "
        "L2-normalised fc7 after ReLU. threshold: cosine similarity 0.32, i.e. deepface's cosine distance 0.68 "
        "(1 - similarity) for its VGG-Face model (a Keras conversion of the same Oxford weights, L2-normalised "
        "4096-D fc7); its preprocessing differs from ours, so treat it as a starting point and recalibrate (e.g. on "
        "LFW pairs). template: eyes-based, ours (the network was trained on unaligned, loosely cropped faces)."
    ),
)
