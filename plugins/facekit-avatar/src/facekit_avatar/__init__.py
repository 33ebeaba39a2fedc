"""facekit-avatar: a textured 3-D avatar from the normalized face (Cole et al. 2017, Sec. 7.3 and App. B).

Registers the ``avatar`` app and the ``facekit avatar`` command through the ``facekit`` entry point ``avatar``.
Importing this module is cheap: eos, trimesh and moderngl load when the app is built.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field

from facekit import ComponentSpec, Params, hookimpl
from facekit.hookspecs import Register
from facekit.types import ModelCard


class AvatarParams(Params):
    sfm: str | None = Field(
        default=None, description="sfm_shape_3448.bin (default: the facekit model store; facekit models import)"
    )
    colour_model: str | None = Field(default=None, description="a learned colour model .npz (default: the shipped)")
    texture_size: int = Field(default=512, ge=64, le=4096, description="side of the UV texture map")
    colour_prior: float = Field(
        default=0.03, gt=0, description="ridge weight of the colour-model fit (the samples' noise variance)"
    )
    sigma_px: float = Field(default=1.5, gt=0, description="landmark noise (px of a 112-px frame) in the shape fit")
    steps: int = Field(default=40, ge=1, description="gradient steps of the shape fit (after its closed-form start)")
    landmarks: Literal["ibug_to_sfm", "voted"] = Field(
        default="voted",
        description="landmark -> vertex map of the fit: voted (default: eos's hand-made ibug_to_sfm.txt with the 12 "
        "points where the App. B.1 vote disagrees moved to the voted vertex, nearer on real faces: RESULTS.md "
        "'correspondence') or ibug_to_sfm (eos's as it is)",
    )


def card() -> ModelCard:
    from facekit_avatar.cards import AVATAR_OUTPUTS, SFM_SOURCE

    return ModelCard(
        landmarks=68,
        landmark_scheme="ibug68",
        weights=(SFM_SOURCE,),
        outputs=AVATAR_OUTPUTS,
        notes="Surrey Face Model fit to the decoder's 68 points (fixed camera, Gaussian prior), colours from a PCA "
        "colour model learned on the training set's averages, blended by foreshortening",
    )


def _build(params: AvatarParams) -> Any:
    from facekit_avatar.app import AvatarMaker

    return AvatarMaker(**params.model_dump())  # the params are the constructor's keywords


@hookimpl
def register_apps(register: Register) -> None:
    register(
        ComponentSpec(
            "avatar",
            _build,
            AvatarParams,
            "textured 3-D avatar (Surrey Face Model) from the normalized face: OBJ, GLB, renders",
            card=card(),
        )
    )


@hookimpl
def register_commands(app: Any) -> None:
    from facekit_avatar.cli import avatar

    app.command("avatar")(avatar)
