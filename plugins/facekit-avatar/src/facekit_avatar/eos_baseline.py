"""The established way to make the same avatar: eos's own fit on the original photo (the comparison of issue #13).

``eos.fitting.fit_shape_and_pose`` on the detector's 68 points of the photo (scaled-orthographic camera, shape and
the 6 expression blendshapes, eos's contour and edge fitting, its default 5 iterations and lambda 30), texture from the
photo by ``eos.render.extract_texture`` (its isomap, whose alpha marks the texels visible in the photo). For renders,
the texels the photo does not show are filled with the mean visible colour, and the eos mesh (neutral: expression
removed, so it is the same kind of avatar as ours) is drawn by the same renderer and camera as ours.

eos needs the model folder's ``sfm_3448_edge_topology.json`` and the blendshapes file beside the model (eos's
``share/``).
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np

from facekit_avatar.cache import locked_cache
from facekit_avatar.model import read_landmark_map, read_model_contour


@dataclass
class EosFit:
    """eos's fit of one photo: neutral model-space vertices (N, 3) mm, the photo-space projection of every vertex
    with expressions (N, 2), the RGBA isomap (T, T, 4), per-landmark reprojection error (68,) in photo px, and the
    fit time in seconds."""

    vertices: np.ndarray
    projected: np.ndarray
    isomap: np.ndarray
    per_point_px: np.ndarray
    seconds: float


@locked_cache(maxsize=1)
def _eos_setup(folder: str) -> tuple[Any, Any, Any, Any, Any, Any]:
    import eos

    root = Path(folder)
    data = Path(str(resources.files("facekit_avatar") / "data"))
    shape = eos.morphablemodel.load_model(str(root / "sfm_shape_3448.bin"))
    blendshapes = eos.morphablemodel.load_blendshapes(str(root / "expression_blendshapes_3448.bin"))
    model = eos.morphablemodel.MorphableModel(
        shape.get_shape_model(),
        blendshapes,
        color_model=eos.morphablemodel.PcaModel(),
        vertex_definitions=None,
        texture_coordinates=shape.get_texture_coordinates(),
    )
    mapper = eos.core.LandmarkMapper(str(data / "ibug_to_sfm.txt"))
    edges = eos.morphablemodel.load_edge_topology(str(root / "sfm_3448_edge_topology.json"))
    contour_landmarks = eos.fitting.ContourLandmarks.load(str(data / "ibug_to_sfm.txt"))
    model_contour = eos.fitting.ModelContour.load(str(data / "sfm_model_contours.json"))
    return model, shape, mapper, edges, contour_landmarks, model_contour


def eos_fit(photo: np.ndarray, landmarks: np.ndarray, sfm_folder: str | Path, texture_size: int = 512) -> EosFit:
    """Fit eos to ``photo`` (H, W, 3) uint8 RGB with its (68, 2) iBUG landmarks."""
    import eos

    began = time.perf_counter()
    model, shape, mapper, edges, contour_landmarks, model_contour = _eos_setup(str(sfm_folder))
    height, width = photo.shape[:2]
    points = [eos.core.Landmark(str(i + 1), [float(x), float(y)]) for i, (x, y) in enumerate(landmarks)]
    mesh, pose, coefficients, _ = eos.fitting.fit_shape_and_pose(
        model, points, mapper, width, height, edges, contour_landmarks, model_contour
    )
    rgba = np.ascontiguousarray(np.concatenate([photo, np.full((height, width, 1), 255, np.uint8)], axis=2))
    isomap = np.asarray(eos.render.extract_texture(mesh, pose, rgba, texturemap_resolution=texture_size))
    seconds = time.perf_counter() - began
    projected = project_eos(np.asarray(mesh.vertices, np.float64), pose, width, height)
    neutral = np.asarray(shape.get_shape_model().draw_sample(coefficients), np.float32).reshape(-1, 3)
    return EosFit(neutral, projected, isomap, landmark_errors(projected, landmarks), seconds)


def project_eos(vertices: np.ndarray, pose: Any, width: int, height: int) -> np.ndarray:
    """Vertices (N, 3) -> photo pixels (N, 2) through eos's scaled-orthographic pose (its clip -> screen mapping)."""
    homogeneous = np.concatenate([vertices, np.ones((len(vertices), 1))], axis=1)
    clip = homogeneous @ (np.asarray(pose.get_projection()) @ np.asarray(pose.get_modelview())).T
    x = (clip[:, 0] + 1.0) * width / 2.0
    y = height - (clip[:, 1] + 1.0) * height / 2.0
    return np.stack([x, y], axis=1)


def landmark_errors(projected: np.ndarray, landmarks: np.ndarray) -> np.ndarray:
    """(68,) distance of each iBUG point to its vertex: the mapped vertex for the 50 points ``ibug_to_sfm.txt`` maps,
    the nearest projected model-contour vertex of its side for the 16 jaw points (the rule both fits use); NaN for
    the 2 points with no vertex (neither fit uses them)."""
    lm = read_landmark_map()
    right, left = read_model_contour()
    errors = np.full(68, np.nan)
    errors[lm.points] = np.linalg.norm(projected[lm.vertices] - landmarks[lm.points], axis=1)
    for points, vertices in ((lm.right_contour, right), (lm.left_contour, left)):
        distances = np.linalg.norm(landmarks[points][:, None] - projected[vertices][None], axis=2)
        errors[points] = distances.min(axis=1)
    return errors


def fill_invisible(isomap: np.ndarray) -> np.ndarray:
    """The isomap's RGB with texels the photo does not show (alpha 0) set to the mean visible colour."""
    rgb = isomap[..., :3].copy()
    visible = isomap[..., 3] > 0
    if visible.any():
        rgb[~visible] = rgb[visible].mean(axis=0).round().astype(np.uint8)
    return rgb
