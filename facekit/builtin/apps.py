"""Builtin apps: ``adjust`` (white balance and exposure from the normalized face) and the general white-balance
baselines (implemented in facekit.apps, imported when an app is built)."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field

from facekit.registry import ComponentSpec, Params

_STRENGTH = Field(default=1.0, ge=0.0, le=1.0, description="how far to move (0: unchanged, 1: the full correction)")


class AdjustParams(Params):
    strength: float = _STRENGTH
    only: Literal["both", "white-balance", "exposure"] = Field(default="both", description="what to correct")
    all_faces: bool = Field(default=False, description="average every face found (default: the largest)")
    mapping: Literal["ycrcb", "gains"] = Field(
        default="ycrcb", description="ycrcb: the paper's piecewise-linear YCrCb map; gains: von Kries in linear RGB"
    )
    checkpoint: str | None = Field(default=None, description="the normalizing model (default: the one shipped)")


class WhiteBalanceParams(Params):
    strength: float = _STRENGTH


def _adjust(params: AdjustParams) -> Any:
    from facekit.apps.adjust import FaceAdjuster

    return FaceAdjuster(
        strength=params.strength,
        only=params.only,
        all_faces=params.all_faces,
        mapping=params.mapping,
        checkpoint=params.checkpoint,
    )


def _baseline(method: str) -> Any:
    def build(params: WhiteBalanceParams) -> Any:
        from facekit.apps.baselines import GlobalWhiteBalance

        return GlobalWhiteBalance(method, params.strength)

    return build


BASELINES = {
    "gray-world": "white balance: the mean colour is grey (baseline)",
    "white-patch": "white balance: the brightest value of each channel is white (max-RGB, baseline)",
    "shades-of-gray": "white balance: Minkowski p=6 mean is grey (baseline)",
    "gray-edge": "white balance: the mean edge colour is grey (baseline)",
}


def specs() -> list[ComponentSpec[Any]]:
    return [
        ComponentSpec("adjust", _adjust, AdjustParams, "white balance and exposure from the normalized face"),
        *(ComponentSpec(name, _baseline(name), WhiteBalanceParams, summary) for name, summary in BASELINES.items()),
    ]
