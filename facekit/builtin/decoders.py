"""Builtin decoders (implemented in facekit.decoder, which imports torch only when one is built)."""

from __future__ import annotations

from typing import Any

from facekit.decoder_params import DecoderParams
from facekit.registry import ComponentSpec


def _factory(class_name: str) -> Any:
    def build(params: DecoderParams) -> Any:
        from facekit import decoder

        return getattr(decoder, class_name)(params)

    return build


def specs() -> list[ComponentSpec[Any]]:
    return [
        ComponentSpec(
            "paper", _factory("PaperDecoder"), DecoderParams, "landmark MLP + texture CNN + spline warp (the paper's)"
        ),
        ComponentSpec(
            "fc-texture", _factory("FCTextureDecoder"), DecoderParams, "landmark MLP + fully connected texture + warp"
        ),
        ComponentSpec(
            "plain-cnn", _factory("PlainCNNDecoder"), DecoderParams, "one CNN straight to the image (paper's baseline)"
        ),
    ]
