"""Builtin apps: ``adjust`` (white balance and exposure from the normalized face), ``attributes`` (skin tone and face
shape measured on the normalized face), ``explore`` (interpolation between two people's features, models side by side)
and the general white-balance baselines (implemented in facekit.apps, imported when an app is built)."""

from __future__ import annotations

from typing import Any, ClassVar, Literal

from pydantic import Field, model_validator

from facekit.apps import FUSE_WEIGHT
from facekit.registry import ComponentSpec, Params, setting_error
from facekit.types import DEVICE_PATTERN, FaceRule

_STRENGTH = Field(default=1.0, ge=0.0, le=1.0, description="how far to move (0: unchanged, 1: the full correction)")
# Which face of a photo with several the app's own normalizer takes (facekit.normalize.choose_face); the fields are
# Literals, as the recipe's prepare.face, so that the params schema reads without importing the pipeline. A recipe's
# infer stage normalizes with its own settings (infer.device too) and hands apps the decoded faces: there, as model
# and checkpoint, neither face nor device applies.
_FACE = (
    "which face of a photo with several the app normalizes: largest, or central (the subject of a photo framed "
    "around it)"
)
_DEVICE = (
    "where the app's own normalizer runs: cpu, cuda, cuda:N, mps, xpu or auto (a GPU when one is visible), as facekit "
    "normalize --device (default: cpu)"
)


#: The params of an app built on :class:`facekit.apps.UsesNormalizer` that choose the normalizer it runs itself: a
#: recipe's infer stage hands its apps the faces ``infer.checkpoint`` made (``infer.face``, on ``infer.device``).
OWN_NORMALIZER: tuple[str, ...] = ("model", "checkpoint", "face", "device")


class AdjustParams(Params):
    # In a recipe the adjust app reports each normalized face's colour (face_ycrcb) and corrects nothing: how it
    # corrects a photo is `facekit adjust`'s and the API's.
    NOT_IN_PIPELINE: ClassVar[tuple[str, ...]] = (
        *OWN_NORMALIZER,
        *("strength", "only", "all_faces", "mapping", "region", "fuse", "fuse_weight", "fuse_sigma", "refine"),
    )

    strength: float = _STRENGTH
    only: Literal["both", "white-balance", "exposure"] = Field(default="both", description="what to correct")
    all_faces: bool = Field(default=False, description="average every face found (default: the one `face` picks)")
    face: FaceRule = Field(default="largest", description=_FACE)
    mapping: Literal["ycrcb", "gains"] = Field(
        default="gains", description="gains: von Kries in linear RGB; ycrcb: the paper's piecewise-linear YCrCb map"
    )
    model: str | None = Field(default=None, description="a shipped model by its encoder: dlib (default) or sface")
    checkpoint: str | None = Field(default=None, description="the normalizing model file (default: the shipped model)")
    device: str | None = Field(default=None, pattern=DEVICE_PATTERN, description=_DEVICE)
    region: Literal["box", "skin"] = Field(
        default="skin", description="skin: cheeks and forehead (no teeth or lips); box: the paper's central face box"
    )
    fuse: Literal["auto", "agreement", "white-patch", "gray-world", "shades-of-gray", "gray-edge"] | None = Field(
        default="auto",
        description="combine the face's white balance with global estimators': agreement (each weighted by how well "
        "it agrees with the face), one estimator's name (mixed at fuse_weight), None (the face alone); auto: "
        "white-patch with mapping gains, None with ycrcb",
    )
    fuse_weight: float = Field(
        default=FUSE_WEIGHT, ge=0.0, le=1.0, description="the face's share when fused with one named estimator"
    )
    fuse_sigma: float = Field(
        default=3.0,
        gt=0.0,
        le=90.0,
        description="agreement: the width (degrees) of an estimator's weight exp(-angle^2 / 2 sigma^2)",
    )
    refine: int = Field(
        default=0, ge=0, le=3, description="rounds of normalizing the face again from the corrected photo (gains only)"
    )

    @model_validator(mode="after")
    def _fuse_in_linear_light(self) -> AdjustParams:
        # Each rule is said at the setting it refuses, naming the one it reads (setting_error): in a recipe
        # `components.apps.0.params.refine: ...`, with the --set that gave either; on `facekit adjust`'s command line
        # as its options (cli.adjust). Before (helper-159), a ValueError said at `components.apps.0.params`, with
        # the command line's options in a recipe's words.
        if self.mapping != "gains":
            linear = [name for name, on in (("fuse", self.fuse not in (None, "auto")), ("refine", self.refine)) if on]
            if linear:
                raise setting_error(
                    "works in linear light and needs mapping gains; the paper's ycrcb map runs without it: leave it "
                    "out",
                    linear,
                    ["mapping"],
                )
        _one_model(self)
        if self.all_faces and self.face != "largest":
            raise setting_error(
                f"averages all found, and face {self.face} picks one: set one of them", ["all_faces"], ["face"]
            )
        return self


def _one_model(params: AdjustParams | ModelChoice) -> None:
    """A shipped model by name or a model file, not both."""
    if params.model is not None and params.checkpoint is not None:
        raise setting_error("is a file, and model names a shipped one: give one of them", ["checkpoint"], ["model"])


class ModelChoice(Params):
    """Which normalizing model an app uses (a shipped one by name, or a file; not both), which face it takes and
    where it runs."""

    NOT_IN_PIPELINE: ClassVar[tuple[str, ...]] = OWN_NORMALIZER

    model: str | None = Field(default=None, description="a shipped model by its encoder: dlib (default) or sface")
    checkpoint: str | None = Field(default=None, description="a model file instead of a shipped model")
    face: FaceRule = Field(default="largest", description=_FACE)
    device: str | None = Field(default=None, pattern=DEVICE_PATTERN, description=_DEVICE)

    @model_validator(mode="after")
    def _one_model(self) -> ModelChoice:
        _one_model(self)
        return self


class AttributesParams(ModelChoice):
    pass


class ExploreParams(ModelChoice):
    # In a recipe the explore app lays the faces of a batch in a strip; interpolating is its command's and the API's.
    NOT_IN_PIPELINE: ClassVar[tuple[str, ...]] = (*OWN_NORMALIZER, "steps", "spherical", "judge")

    steps: int = Field(default=8, ge=2, le=256, description="frames of an interpolation, both photos included")
    spherical: bool = Field(
        default=False, description="interpolate the standardised features' directions on the sphere (slerp), not a line"
    )
    judge: str | None = Field(
        default=None, description="the judge encoder (default: independent of the model: dlib-resnet <-> sface)"
    )


class WhiteBalanceParams(Params):
    strength: float = _STRENGTH


def _adjust(params: AdjustParams) -> Any:
    from facekit.apps.adjust import FaceAdjuster

    return FaceAdjuster(**params.model_dump())  # the params are the constructor's keywords


def _attributes(params: AttributesParams) -> Any:
    from facekit.apps.attributes import FaceAttributes

    return FaceAttributes(**params.model_dump())


def _explore(params: ExploreParams) -> Any:
    from facekit.apps.explore import Explorer

    return Explorer(**params.model_dump())


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
    "xphoto": "white balance: OpenCV xphoto's learning-based estimate (Cheng et al. 2015; contrib build; baseline)",
}


def specs() -> list[ComponentSpec[Any]]:
    from facekit.apps.adjust import ADJUST_OUTPUTS
    from facekit.apps.attributes import ATTRIBUTE_OUTPUTS, TABLES
    from facekit.apps.explore import COMPARE_FILES, INTERPOLATE_FILES
    from facekit.types import ModelCard

    def card(outputs: tuple[str, ...]) -> ModelCard:
        return ModelCard(outputs=outputs)

    return [
        ComponentSpec(
            "adjust",
            _adjust,
            AdjustParams,
            "white balance and exposure from the normalized face",
            card=card(ADJUST_OUTPUTS),
        ),
        ComponentSpec(
            "attributes",
            _attributes,
            AttributesParams,
            "skin tone (ITA) and face shape, normalized",
            card=card((*ATTRIBUTE_OUTPUTS, *TABLES)),
        ),
        ComponentSpec(
            "explore",
            _explore,
            ExploreParams,
            "interpolate between two faces' features; compare models",
            card=card((*INTERPOLATE_FILES, *COMPARE_FILES)),
        ),
        *(
            ComponentSpec(name, _baseline(name), WhiteBalanceParams, summary, card=card(ADJUST_OUTPUTS))
            for name, summary in BASELINES.items()
        ),
    ]
