"""Head pose from 2-D landmarks and the Surrey Face Model's mean shape (``cv2.solvePnP``).

The 3-D points are the SFM reference mesh's vertices that ``ibug_to_sfm.txt`` maps iBUG landmarks to (the
845-vertex reference defines 48 of the 68). Both files are read from the data root (``<root>/sfm``); nothing is
copied into facekit.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import cache
from pathlib import Path

import numpy as np

from facekit.errors import FacekitError


@dataclass(frozen=True)
class MeanShape:
    """``points`` (M, 3) in OpenCV camera axes (x right, y down, z away from the viewer), mm; ``landmarks`` (M,) the
    0-based iBUG indices they belong to."""

    points: np.ndarray
    landmarks: np.ndarray


@dataclass(frozen=True)
class Pose:
    """Head rotation in degrees: yaw (turn left/right), pitch (nod), roll (tilt in the image plane)."""

    yaw: float
    pitch: float
    roll: float


def read_obj_vertices(path: Path) -> np.ndarray:
    rows = [line.split()[1:4] for line in path.read_text().splitlines() if line.startswith("v ")]
    return np.array(rows, dtype=np.float64)


def read_ibug_to_sfm(path: Path) -> dict[int, int]:
    """``[landmark_mappings]`` of ibug_to_sfm.txt: 1-based iBUG index -> SFM vertex index."""
    mapping = {}
    in_section = False
    for line in path.read_text().splitlines():
        stripped = line.split("#", 1)[0].strip()
        if stripped.startswith("["):
            in_section = stripped == "[landmark_mappings]"
            continue
        match = re.fullmatch(r"(\d+)\s*=\s*(\d+)", stripped)
        if in_section and match:
            mapping[int(match.group(1))] = int(match.group(2))
    return mapping


@cache
def load_mean_shape(sfm_folder: Path) -> MeanShape:
    """The mean 3-D positions of the iBUG landmarks that the SFM reference mesh defines."""
    obj, mapping_file = sfm_folder / "sfm_reference.obj", sfm_folder / "ibug_to_sfm.txt"
    if not obj.is_file() or not mapping_file.is_file():
        raise FacekitError(f"head pose needs the Surrey Face Model files {obj} and {mapping_file} (set data.root)")
    vertices = read_obj_vertices(obj)
    pairs = sorted(
        (ibug - 1, vertex) for ibug, vertex in read_ibug_to_sfm(mapping_file).items() if vertex < len(vertices)
    )
    landmarks = np.array([i for i, _ in pairs])
    points = vertices[[v for _, v in pairs]] * np.array([1.0, -1.0, -1.0])  # SFM: y up, z to viewer -> OpenCV axes
    return MeanShape(points, landmarks)


def fit_camera(
    landmarks: np.ndarray, image_size: tuple[int, int], shape: MeanShape, refine: bool = False
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(camera intrinsics (3, 3), rotation (3, 3), translation (3,)) of a photo of ``image_size`` (width, height)
    from its 68 ``landmarks`` (x, y pixels): a pinhole camera with focal length max(width, height) looking at the
    mean shape, pose by SQPnP (the global optimum; the iterative solver can converge to a mirror solution behind the
    camera), optionally refined with Levenberg-Marquardt."""
    import cv2

    width, height = image_size
    focal = float(max(width, height))
    camera = np.array([[focal, 0, (width - 1) / 2], [0, focal, (height - 1) / 2], [0, 0, 1]], dtype=np.float64)
    image_points = np.asarray(landmarks, dtype=np.float64)[shape.landmarks]
    ok, rvec, tvec = cv2.solvePnP(shape.points, image_points, camera, None, flags=cv2.SOLVEPNP_SQPNP)
    if not ok:
        raise FacekitError("solvePnP failed to fit a camera to the landmarks")
    if refine:
        rvec, tvec = cv2.solvePnPRefineLM(shape.points, image_points, camera, None, rvec, tvec)
    rotation, _ = cv2.Rodrigues(rvec)
    return camera, rotation, np.asarray(tvec, dtype=np.float64).reshape(3)


def estimate_pose(landmarks: np.ndarray, image_size: tuple[int, int], shape: MeanShape) -> Pose:
    """Yaw/pitch/roll of a face from its 68 landmarks (x, y pixels) in an image of ``image_size`` (width, height)
    (:func:`fit_camera`); positive yaw = the face turned to the image's left (the subject's right: its nose tip
    lies left of the eyes' midpoint), positive pitch = looking down."""
    _, rotation, _ = fit_camera(landmarks, image_size, shape)
    yaw = np.degrees(np.arcsin(np.clip(-rotation[2, 0], -1.0, 1.0)))
    pitch = np.degrees(np.arctan2(rotation[2, 1], rotation[2, 2]))
    roll = np.degrees(np.arctan2(rotation[1, 0], rotation[0, 0]))
    return Pose(float(yaw), float(pitch), float(roll))
