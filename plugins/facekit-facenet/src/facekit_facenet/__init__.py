"""facekit-facenet: the FaceNet encoder (Inception-ResNet-v1, facenet-pytorch's weights) in torch.

Registered through the ``facekit`` entry point ``facenet``. Importing this module is cheap: torch is imported only
when the encoder is built (:mod:`facekit_facenet.model`).
"""

from __future__ import annotations

from typing import Any

from facekit import ComponentSpec, hookimpl
from facekit.hookspecs import Register
from facekit_facenet.cards import FaceNetParams, card


def _build(params: FaceNetParams) -> Any:
    from facekit_facenet.model import build_encoder

    return build_encoder(params)


@hookimpl
def register_encoders(register: Register) -> None:
    register(
        ComponentSpec(
            "facenet",
            _build,
            FaceNetParams,
            "FaceNet Inception-ResNet-v1 (facenet-pytorch weights): 512-D embedding, 1792-D pooled features",
            card=card("vggface2"),
        )
    )
