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


@hookimpl
def register_encoders(register: Register) -> None:
    from facekit_dlib.cards import RESNET_CARD  # torch-free; the encoder module (torch) loads in the factory

    def build(params: object) -> object:
        from facekit_dlib.encoder import DlibResNetEncoder

        return DlibResNetEncoder(params)  # type: ignore[arg-type]

    register(
        ComponentSpec(
            "dlib-resnet",
            build,
            summary="dlib's ResNet face recogniser ported to torch: 128-D, LFW 98.90% (benchmarks/encoders.py), "
            "differentiable",
            card=RESNET_CARD,
        )
    )
