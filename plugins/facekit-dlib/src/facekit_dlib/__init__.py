"""facekit-dlib: dlib's face detectors and landmark predictors (and its ResNet encoder ported to torch).

Registered through the ``facekit`` entry point ``dlib``. Importing this module is cheap: dlib is imported only when a
component is built.
"""

from __future__ import annotations

from facekit import ComponentSpec, hookimpl
from facekit.hookspecs import Register


@hookimpl
def register_detectors(register: Register) -> None:
    from facekit_dlib.detector import DetectorParams, DlibDetector, card

    register(
        ComponentSpec(
            "dlib",
            lambda params: DlibDetector(params, 68),
            DetectorParams,
            "dlib HOG or CNN face detector + 68 iBUG landmarks",
            card=card(68),
        )
    )
    register(
        ComponentSpec(
            "dlib-5pt",
            lambda params: DlibDetector(params, 5),
            DetectorParams,
            "dlib HOG or CNN face detector + 5 landmarks (eye corners, nose)",
            card=card(5),
        )
    )
