"""What the avatar app declares without importing torch, eos or OpenGL: its model file, licence and outputs."""

from __future__ import annotations

from facekit.types import WeightsSource

#: The model file's source: the sha256 of eos's ``share/sfm_shape_3448.bin``.
SFM_SOURCE = WeightsSource(
    file="sfm_shape_3448.bin",
    sha256="43750338ae533e7fb981e924b6f67ebde3d292f15ec4fc886ae5af14308ad980",
    licence="Surrey Face Model licence: free for non-commercial use only",
    url="https://cvssp.org/facemodel (also eos's share/ folder)",
    note="Surrey Face Model, shape only, 3,448 vertices, 63 components",
)
LICENCE = (
    "Avatar shape from the Surrey Face Model (University of Surrey), free for non-commercial use only: "
    "https://cvssp.org/facemodel"
)
#: Render yaws in degrees (positive turns the face towards the image's right).
YAWS = (-30.0, 0.0, 30.0)
#: The files written per photo, as suffixes of its base name (reserved when names are planned).
AVATAR_OUTPUTS = (
    ".obj",
    ".mtl",
    ".png",
    ".glb",
    ".json",
    "_yaw-30.png",
    "_yaw0.png",
    "_yaw+30.png",
    "_sheet.png",
)
