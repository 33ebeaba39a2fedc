"""Automatic landmark -> vertex correspondence by voting (Cole et al. 2017, App. B.1), for landmark schemes that have
no hand-made mapping like eos's ``ibug_to_sfm.txt``.

Render the mean face (mean shape, the learned colour model's mean colours) through randomly jittered cameras, run the
landmark detector on each render, take for every detected point the nearest projected *visible* vertex (depth-tested
against the render's depth buffer), and keep the vertex that most renders voted for.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from facekit_avatar.fit import DISTANCE_MM, Camera
from facekit_avatar.model import LandmarkMap, SurreyModel

#: Jitter of the cameras: yaw and pitch (degrees, uniform +-), scale (fraction) and image shift (fraction of the side).
YAW_DEG, PITCH_DEG, SCALE, SHIFT = 15.0, 10.0, 0.08, 0.04


@dataclass
class Correspondence:
    """``vertices`` (K,) the voted vertex of each of the detector's K points (-1: never detected); ``share`` (K,) the
    fraction of successful renders that voted for it; ``renders`` how many renders had a face."""

    vertices: np.ndarray
    share: np.ndarray
    renders: int


def rotation(yaw_deg: float, pitch_deg: float) -> torch.Tensor:
    a, b = math.radians(yaw_deg), math.radians(pitch_deg)
    yaw = torch.tensor([[math.cos(a), 0, math.sin(a)], [0, 1, 0], [-math.sin(a), 0, math.cos(a)]])
    pitch = torch.tensor([[1, 0, 0], [0, math.cos(b), -math.sin(b)], [0, math.sin(b), math.cos(b)]])
    return (pitch @ yaw).float()


def vote(
    model: SurreyModel,
    detector: Any,
    colours: np.ndarray,
    renders: int = 24,
    size: int = 256,
    seed: int = 0,
    depth_tolerance: float = 2e-4,
    method: str = "mode",
) -> Correspondence:
    """Vote a vertex for each of ``detector``'s points over ``renders`` jittered renders of the mean face coloured
    with ``colours`` (N, 3) in [0, 1]."""
    from facekit_avatar.render import renderer

    rng = np.random.default_rng(seed)
    camera = Camera(size)
    projection = camera.projection_matrix()
    points = detector.card.landmarks
    votes: list[dict[int, int]] = [{} for _ in range(points)]
    found = 0
    mean = model.mean
    centre = mean.mean(0)
    for _ in range(renders):
        yaw, pitch = rng.uniform(-YAW_DEG, YAW_DEG), rng.uniform(-PITCH_DEG, PITCH_DEG)
        scale = 1.0 + rng.uniform(-SCALE, SCALE)
        shift = rng.uniform(-SHIFT, SHIFT, 2) * size * DISTANCE_MM / camera.focal
        # The face fills about 60 % of the render: 1 mm = size * 0.6 / 150 px.
        zoom = scale * (0.6 * size / 150.0) * DISTANCE_MM / camera.focal
        placed = (mean - centre) @ rotation(yaw, pitch).T * zoom
        placed = placed + torch.tensor([shift[0], shift[1], -DISTANCE_MM], dtype=torch.float32)
        shaded = colours * shading(placed, model.triangles)[:, None]
        rgb, depth = renderer().render_colours(
            placed.numpy(), model.triangles, shaded.astype(np.float32), projection, size
        )
        faces = detector.detect_array(rgb)
        if not faces or faces[0].landmarks is None:
            continue
        found += 1
        xy = camera.project(placed).numpy()
        visible = _visible(placed.numpy(), xy, depth, projection, depth_tolerance)
        index = np.flatnonzero(visible)
        for k, point in enumerate(np.asarray(faces[0].landmarks)):
            nearest = int(index[np.argmin(np.linalg.norm(xy[index] - point, axis=1))])
            votes[k][nearest] = votes[k].get(nearest, 0) + 1
    chosen = np.full(points, -1)
    share = np.zeros(points)
    surface = model.mean.numpy()
    for k, counts in enumerate(votes):
        if not counts:
            continue
        if method == "mode":  # the paper's vote: the vertex most renders chose
            vertex = max(counts.items(), key=lambda item: item[1])[0]
        else:  # "mean": the vote-weighted mean of the chosen vertices on the mean shape, snapped to its nearest vertex
            ids = np.array(list(counts))
            weights = np.array(list(counts.values()), np.float64)
            centre = (surface[ids] * weights[:, None]).sum(0) / weights.sum()
            vertex = int(np.argmin(np.linalg.norm(surface - centre, axis=1)))
        chosen[k], share[k] = vertex, counts.get(vertex, 0) / found
    return Correspondence(chosen, share, found)


#: Light from the camera's upper left: the render has the shading cues (nose, eye sockets, lips) a detector expects.
LIGHT = (-0.3, 0.5, 1.0)


def shading(vertices: torch.Tensor, triangles: np.ndarray, ambient: float = 0.45) -> np.ndarray:
    """Lambertian shading factor (N,) of camera-space ``vertices`` under ``LIGHT``."""
    from facekit_avatar.fit import vertex_normals

    normals = vertex_normals(vertices[None], triangles)[0]
    light = torch.nn.functional.normalize(torch.tensor(LIGHT), dim=0)
    return (ambient + (1 - ambient) * (normals @ light).clamp_min(0)).numpy()


def _visible(
    camera_points: np.ndarray, xy: np.ndarray, depth: np.ndarray, projection: np.ndarray, tolerance: float
) -> np.ndarray:
    """Vertices whose window depth is within ``tolerance`` of the depth buffer at their pixel (not hidden)."""
    size = depth.shape[0]
    clip = np.concatenate([camera_points, np.ones((len(camera_points), 1))], axis=1) @ projection.T
    window = (clip[:, 2] / clip[:, 3] + 1.0) / 2.0
    col = np.clip(np.round(xy[:, 0]).astype(int), 0, size - 1)
    row = np.clip(np.round(xy[:, 1]).astype(int), 0, size - 1)
    inside = (xy[:, 0] >= 0) & (xy[:, 0] < size) & (xy[:, 1] >= 0) & (xy[:, 1] < size)
    return np.asarray(inside & (window <= depth[row, col] + tolerance))


@dataclass
class Dispute:
    """A mapped iBUG point (0-based) where the vote chose neither ``ibug_to_sfm.txt``'s vertex nor a direct
    neighbour of it."""

    point: int
    mapped: int
    voted: int


def disputes(model: SurreyModel, found: np.ndarray) -> list[Dispute]:
    """The points of ``model.landmarks`` where the voted vertices ``found`` (68,) disagree with the mapping."""
    neighbours = model.neighbours()
    lm = model.landmarks
    return [
        Dispute(int(point), int(vertex), int(found[point]))
        for point, vertex in zip(lm.points, lm.vertices, strict=True)
        if int(found[point]) != vertex and int(found[point]) not in neighbours[vertex]
    ]


def with_votes(model: SurreyModel, disputed: list[Dispute]) -> LandmarkMap:
    """``model.landmarks`` with each disputed point's vertex replaced by the voted one."""
    from dataclasses import replace

    lm = model.landmarks
    vertices = lm.vertices.copy()
    for dispute in disputed:
        vertices[int(np.flatnonzero(lm.points == dispute.point)[0])] = dispute.voted
    return replace(lm, vertices=vertices)


def write_landmark_map(mapping: LandmarkMap, path: str | Path, comment: str) -> None:
    """``mapping`` as a TOML file that :func:`facekit_avatar.model.read_landmark_map` reads (eos's layout, 1-based
    iBUG numbers), ``comment`` lines first."""
    lines = [f"# {line}" if line else "#" for line in comment.splitlines()]
    lines += ["", "[landmark_mappings]"]
    lines += [f"{int(p) + 1} = {int(v)}" for p, v in zip(mapping.points, mapping.vertices, strict=True)]
    lines += ["", "[contour_landmarks]"]
    lines += [
        f"right = {[int(p) + 1 for p in mapping.right_contour]}",
        f"left = {[int(p) + 1 for p in mapping.left_contour]}",
    ]
    Path(path).write_text("\n".join(lines) + "\n")


def held_out_distances(model: SurreyModel, disputed: list[Dispute], landmarks: np.ndarray, size: int) -> np.ndarray:
    """Which vertex of each disputed point lies where faces have that point: fit the model to (B, 68, 2)
    ``landmarks`` in the ``size``-px frontal frame *without* the disputed points (so neither candidate shapes the
    fit), project both candidates, and return their distances to the landmark, (B, D, 2) px: [..., 0] the mapped
    vertex, [..., 1] the voted one."""
    from dataclasses import replace

    from facekit_avatar.fit import Camera, fit_shape

    lm = model.landmarks
    left_out = {d.point for d in disputed}
    keep = np.array([int(point) not in left_out for point in lm.points])
    without = replace(lm, points=lm.points[keep], vertices=lm.vertices[keep])
    fit = fit_shape(model, landmarks, size, landmark_map=without)
    xy = Camera(size).project(fit.vertices(model)).numpy()  # (B, N, 2)
    points = np.asarray(landmarks, np.float64)
    return np.stack(
        [
            np.stack([np.linalg.norm(xy[:, vertex] - points[:, d.point], axis=1) for vertex in (d.mapped, d.voted)], 1)
            for d in disputed
        ],
        axis=1,
    )


def frontal_in_frame(annotations: list[np.ndarray], frame: np.ndarray, max_asymmetry: float = 0.12) -> np.ndarray:
    """The near-frontal faces among (68, 2) iBUG ``annotations`` (the nose tip, point 31, about as far from one jaw
    end as from the other: |d(31, 1) - d(31, 17)| <= ``max_asymmetry`` x the jaw's width), each moved by the
    least-squares similarity onto the ``frame``'s (68, 2) landmarks (e.g. a model's mean face): (B, 68, 2)."""
    from facekit.align import apply_transform, similarity_transform

    kept = []
    for points in annotations:
        width = np.linalg.norm(points[16] - points[0])
        offset = abs(np.linalg.norm(points[30] - points[0]) - np.linalg.norm(points[30] - points[16]))
        if width > 0 and offset / width <= max_asymmetry:
            kept.append(apply_transform(similarity_transform(points, frame), points))
    return np.stack(kept) if kept else np.zeros((0, 68, 2))


def agreement(model: SurreyModel, found: np.ndarray) -> tuple[float, float]:
    """Against ``ibug_to_sfm.txt``: (share of its mapped points whose voted vertex is the same, share that is the same
    or a direct mesh neighbour), for an iBUG-68 ``found`` (68,)."""
    lm = model.landmarks
    neighbours = model.neighbours()
    exact = near = 0
    for point, vertex in zip(lm.points, lm.vertices, strict=True):
        got = int(found[point])
        exact += got == vertex
        near += got == vertex or got in neighbours[vertex]
    return exact / len(lm.points), near / len(lm.points)
