"""The model files this plugin uses: where they are, their sha256 and their licences.

The files come from the ``face-recognition-models`` wheel (nothing is downloaded); facekit.models finds its folder
with ``importlib.util.find_spec`` because the package's ``__init__`` needs ``pkg_resources``.
"""

from __future__ import annotations

from pathlib import Path

from facekit.models import resolve_weights
from facekit.types import WeightsSource

PACKAGE = "face-recognition-models"

LICENCE_CC0 = "CC0-1.0 (released into the public domain by Davis King)"
LICENCE_IBUG = "CC0-1.0 file, but trained on iBUG 300-W: non-commercial research use only"

SOURCES: dict[str, WeightsSource] = {
    "shape_predictor_68_face_landmarks.dat": WeightsSource(
        "shape_predictor_68_face_landmarks.dat",
        "fbdc2cb80eb9aa7a758672cbfdda32ba6300efe9b6e6c7a299ff7e736b11b92f",
        LICENCE_IBUG,
        package=PACKAGE,
    ),
    "shape_predictor_5_face_landmarks.dat": WeightsSource(
        "shape_predictor_5_face_landmarks.dat",
        "c4b1e9804792707d3a405c2c16a80a20269e6675021f64a41d30fffafbc41888",
        LICENCE_CC0,
        package=PACKAGE,
    ),
    "mmod_human_face_detector.dat": WeightsSource(
        "mmod_human_face_detector.dat",
        "4cb19393e2fbaf2b1609a9319ad5386618c886a6234ec1b971f3e87c85d87fe6",
        LICENCE_CC0,
        package=PACKAGE,
    ),
    "dlib_face_recognition_resnet_model_v1.dat": WeightsSource(
        "dlib_face_recognition_resnet_model_v1.dat",
        "55533b28a95800a551ba546ba62fe69625c7e95a7061c338adffead08719da30",
        f"{LICENCE_CC0}; trained on face scrub and VGG-Face images (Creative Commons)",
        package=PACKAGE,
    ),
}

HOG_SOURCE = WeightsSource(
    "built into dlib", None, "Boost Software License 1.0 (dlib)", package="dlib-bin", module="dlib"
)


def model_path(name: str) -> Path:
    """The verified path of model file ``name``: ``$FACEKIT_HOME/models`` first, then the wheel's copy; a missing or
    altered file is a :class:`~facekit.errors.FacekitError` saying what to do."""
    return resolve_weights(SOURCES[name], what=f"dlib model {name}")
