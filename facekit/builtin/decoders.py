"""Builtin decoders (implemented in facekit.decoder, which imports torch only when one is built)."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field

from facekit.registry import ComponentSpec, Params


class DecoderParams(Params):
    feature_size: int = Field(default=256, ge=1, description="size of the encoder features read (card.feature_size)")
    image_size: int = Field(default=112, ge=16, description="output and texture size in pixels")
    hidden: int = Field(default=512, ge=8, description="width of the shared fully connected layer")
    landmarks: int = Field(default=68, ge=3, description="landmarks predicted")
    grid: int = Field(default=7, ge=2, description="texture CNN: side of the first spatial map")
    channels: int = Field(default=256, ge=8, description="texture CNN: channels of the first map, halved per layer")
    norm: Literal["none", "batch"] = Field(
        default="none", description="texture CNN: normalisation after each transposed convolution (batch: BatchNorm2d)"
    )


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
