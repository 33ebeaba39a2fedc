"""Parameters of facekit's decoders (``facekit.decoder``), importable without torch: the builtin plugin registers
them and model files record them."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from facekit.registry import Params


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
