"""facekit-vggface: the VGG-Face network (Parkhi et al. 2015) as a facekit encoder reading fc7.

Registered through the ``facekit`` entry point ``vggface``. Importing this module is cheap: torch is imported only
when the encoder is built (:mod:`facekit_vggface.model`).
"""

from __future__ import annotations

from typing import Any

from facekit import ComponentSpec, hookimpl
from facekit.hookspecs import Register
from facekit_vggface.cards import CARD, VggFaceParams


def _build(params: VggFaceParams) -> Any:
    from facekit_vggface.model import build_encoder

    return build_encoder(params)


@hookimpl
def register_encoders(register: Register) -> None:
    register(
        ComponentSpec(
            "vggface",
            _build,
            VggFaceParams,
            "VGG-Face (VGG-16, Oxford weights via vgg_face_dag.pth): 4096-D fc7 features and embedding",
            card=CARD,
        )
    )
