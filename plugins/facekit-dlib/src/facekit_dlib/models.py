"""The model files this plugin uses: where they are, their sha256 and their licences.

The files come from the ``face-recognition-models`` wheel (nothing is downloaded). Its ``__init__`` needs
``pkg_resources``, so the folder is found with ``importlib.util.find_spec`` instead of importing it.
"""

from __future__ import annotations

import hashlib
import importlib.util
from functools import cache
from pathlib import Path

from facekit.errors import FacekitError
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

HOG_SOURCE = WeightsSource("built into dlib", None, "Boost Software License 1.0 (dlib)", package="dlib-bin")


def models_folder() -> Path:
    spec = importlib.util.find_spec("face_recognition_models")
    if spec is None or not spec.submodule_search_locations:
        raise FacekitError(f"the dlib plugin needs its model files: pip install {PACKAGE}")
    return Path(next(iter(spec.submodule_search_locations))) / "models"


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


@cache
def model_path(name: str) -> Path:
    """The verified path of model file ``name``; a missing or altered file is a :class:`FacekitError`."""
    source = SOURCES[name]
    path = models_folder() / name
    if not path.is_file():
        raise FacekitError(f"{path} is missing: reinstall {PACKAGE} (pip install --force-reinstall {PACKAGE})")
    actual = sha256_of(path)
    if actual != source.sha256:
        raise FacekitError(f"{path} has sha256 {actual}, expected {source.sha256}: the file is damaged or altered")
    return path
