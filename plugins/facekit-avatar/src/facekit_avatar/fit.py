"""Shape fit to the normalized face's 68 landmarks (Cole et al. 2017, App. B.2), batched, by gradient descent in torch.

The normalized face is frontal and neutral, so the camera is fixed (:class:`Camera`: a pinhole ``FOCAL`` frame sizes
from the image, the face ``DISTANCE_MM`` away, looking straight at it) and only the shape coefficients (with the
paper's Gaussian prior towards the mean), a uniform scale and an image-plane translation are fitted.

Jaw contour: iBUG points 1-8 and 10-17 lie on the silhouette, not on fixed vertices. As eos does
(``fitting::get_nearest_contour_correspondences``), each is matched to the nearest projected vertex of the model's
contour list on its side, re-chosen as the fit moves (every ``CONTOUR_EVERY`` steps).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch

from facekit_avatar.model import LandmarkMap, SurreyModel

#: Focal length in frame sizes: at the fixed distance 1 mm of face is ~0.43 px of a 112 px frame, so the mean model's
#: eyes land ~27.5 px apart like the training frame's (interocular 55/224 of the side).
FOCAL = 2.3
DISTANCE_MM = 600.0
CONTOUR_EVERY = 10


@dataclass(frozen=True)
class Camera:
    """A pinhole camera at the origin looking down -z, y up, for a ``size`` x ``size`` image (pixels, y down)."""

    size: int

    @property
    def focal(self) -> float:
        return FOCAL * self.size

    def project(self, points: torch.Tensor) -> torch.Tensor:
        """(..., 3) camera-space points (z < 0 in front) -> (..., 2) pixels."""
        depth = (-points[..., 2]).clamp_min(1e-3)
        centre = (self.size - 1) / 2
        x = centre + self.focal * points[..., 0] / depth
        y = centre - self.focal * points[..., 1] / depth
        return torch.stack([x, y], dim=-1)

    def projection_matrix(self, near: float = 10.0, far: float = 5000.0) -> np.ndarray:
        """The OpenGL projection (column vectors) that maps camera space to clip space like :meth:`project`."""
        f = 2 * self.focal / self.size
        # Pixel centres: pixel i covers [i, i+1) in OpenGL window coordinates; project() puts the optical centre at
        # (size-1)/2 in pixel-centre coordinates, i.e. size/2 in window coordinates, so no offset is needed.
        return np.array(
            [
                [f, 0, 0, 0],
                [0, f, 0, 0],
                [0, 0, -(far + near) / (far - near), -2 * far * near / (far - near)],
                [0, 0, -1, 0],
            ],
            dtype=np.float32,
        )


@dataclass
class ShapeFit:
    """Fitted parameters for a batch: coefficients (B, K), scale (B,), translation (B, 3) in mm (camera space),
    the contour vertices chosen (B, 16), per-face reprojection error (B,) in px (RMS over the 66 points fitted: 50
    mapped, 16 on the contour) and the fit time in seconds for the whole batch."""

    coefficients: torch.Tensor
    scale: torch.Tensor
    translation: torch.Tensor
    contour_vertices: torch.Tensor
    reprojection_px: torch.Tensor
    per_point_px: torch.Tensor  # (B, 68) distance of each landmark to its projected vertex; NaN where none is mapped
    seconds: float
    fitted_points: torch.Tensor  # (66,) the iBUG indices fitted (mapped, then contour): where per_point_px is defined

    def vertices(self, model: SurreyModel) -> torch.Tensor:
        """(B, N, 3) fitted vertices in camera space."""
        return place(model.shape(self.coefficients), self.scale, self.translation)


def place(vertices: torch.Tensor, scale: torch.Tensor, translation: torch.Tensor) -> torch.Tensor:
    """Model (B, N, 3) -> camera space: uniform scale about the model origin, then translation."""
    return vertices * scale[:, None, None] + translation[:, None, :]


def fit_shape(
    model: SurreyModel,
    landmarks: torch.Tensor | np.ndarray,
    size: int,
    sigma_px: float = 1.5,
    steps: int = 40,
    components: int | None = None,
    landmark_map: LandmarkMap | None = None,
) -> ShapeFit:
    """Fit the model to (B, 68, 2) iBUG landmarks in a ``size``-px frontal frame, through ``landmark_map`` (default:
    the model's, eos's ``ibug_to_sfm.txt``).

    Minimises sum_i |proj(v_i) - l_i|^2 / (sigma^2) + |alpha|^2 (the prior: coefficients are standard normal), where
    ``sigma_px`` is the landmarks' noise in a 112-px frame (scaled with ``size``).
    """
    import time

    began = time.perf_counter()
    target = torch.tensor(np.asarray(landmarks), dtype=torch.float32)
    if target.ndim != 3 or target.shape[1:] != (68, 2):
        raise ValueError(f"expected (B, 68, 2) iBUG-68 landmarks, got {tuple(target.shape)}")
    batch = target.shape[0]
    camera = Camera(size)
    k = components or model.components
    lm = landmark_map or model.landmarks
    fixed_points = torch.as_tensor(lm.points)
    contour_points = torch.as_tensor(np.concatenate([lm.right_contour, lm.left_contour]))
    right, left = model.contour
    candidates = [torch.as_tensor(right), torch.as_tensor(left)]
    sides = [len(lm.right_contour), len(lm.left_contour)]
    sigma = sigma_px * size / 112

    # Start from the closed-form weak-perspective solution (alternating linear least squares: scale and shift, then
    # the coefficients with the prior), then gradient descent on the full perspective model.
    init_coefficients, init_scale, init_shift, chosen = _weak_perspective_start(
        model, target, camera, torch.as_tensor(lm.vertices), fixed_points, contour_points, candidates, sides, sigma, k
    )
    coefficients = init_coefficients.clone().requires_grad_(True)
    log_scale = init_scale.log().clone().requires_grad_(True)
    shift = init_shift.clone().requires_grad_(True)
    optimizer = torch.optim.Adam([coefficients, log_scale, shift], lr=0.02)

    def project_all(index: torch.Tensor | np.ndarray, coeffs: torch.Tensor) -> torch.Tensor:
        shape = model.shape(coeffs, np.asarray(index))
        translation = torch.cat([shift, torch.full((batch, 1), -DISTANCE_MM)], dim=1)
        return camera.project(place(shape, log_scale.exp(), translation))

    for step in range(steps):
        if step % CONTOUR_EVERY == 0:
            with torch.no_grad():  # nearest model-contour vertex to each contour landmark, per side (eos's way)
                parts, start = [], 0
                for cand, n in zip(candidates, sides, strict=True):
                    projected = project_all(cand.numpy(), coefficients)  # (B, C, 2)
                    wanted = target[:, contour_points[start : start + n]]  # (B, n, 2)
                    parts.append(cand[torch.cdist(wanted, projected).argmin(dim=2)])
                    start += n
                chosen = torch.cat(parts, dim=1)
        # Lower learning rate for the last quarter: the fit settles instead of circling the minimum.
        if step == 3 * steps // 4:
            for group in optimizer.param_groups:
                group["lr"] = 0.005
        fixed = project_all(lm.vertices, coefficients)
        contour = _project_chosen(model, camera, chosen, coefficients, log_scale, shift)
        residual = torch.cat([fixed - target[:, fixed_points], contour - target[:, contour_points]], dim=1)
        loss = (residual.pow(2).sum((1, 2)) / sigma**2 + coefficients.pow(2).sum(1)).sum()
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
    with torch.no_grad():
        fixed = project_all(lm.vertices, coefficients)
        contour = _project_chosen(model, camera, chosen, coefficients, log_scale, shift)
        fitted = torch.cat([fixed_points, contour_points])
        per_point = torch.full((batch, 68), float("nan"))  # the points the model has no vertex for stay NaN
        per_point[:, fixed_points] = (fixed - target[:, fixed_points]).norm(dim=2)
        per_point[:, contour_points] = (contour - target[:, contour_points]).norm(dim=2)
    translation = torch.cat([shift.detach(), torch.full((batch, 1), -DISTANCE_MM)], dim=1)
    return ShapeFit(
        coefficients=coefficients.detach(),
        scale=log_scale.detach().exp(),
        translation=translation,
        contour_vertices=chosen,
        reprojection_px=per_point[:, fitted].pow(2).mean(1).sqrt(),  # a NaN there shows
        per_point_px=per_point,
        seconds=time.perf_counter() - began,
        fitted_points=fitted,
    )


def _weak_perspective_start(
    model: SurreyModel,
    target: torch.Tensor,
    camera: Camera,
    fixed_vertices: torch.Tensor,
    fixed_points: torch.Tensor,
    contour_points: torch.Tensor,
    candidates: list[torch.Tensor],
    sides: list[int],
    sigma: float,
    k: int,
    rounds: int = 4,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Batched closed-form start under weak perspective (u = c + a x + tx, v = c - a y + ty): alternately the
    similarity (a, tx, ty) by least squares and the coefficients by ridge regression (the prior), re-choosing the
    contour vertices each round. Returns (coefficients, scale, shift in mm, contour vertices)."""
    batch = target.shape[0]
    centre = (camera.size - 1) / 2
    coefficients = torch.zeros(batch, k)
    chosen = torch.cat([c[torch.full((batch, n), len(c) // 2)] for c, n in zip(candidates, sides, strict=True)], 1)
    points = torch.cat([fixed_points, contour_points])
    wanted = target[:, points] - centre  # (B, P, 2)
    wanted_xy = torch.stack([wanted[..., 0], -wanted[..., 1]], dim=-1)  # y up, like the model
    for _ in range(rounds + 1):
        vertices = torch.cat([fixed_vertices.expand(batch, -1), chosen], dim=1)  # (B, P)
        mean = model.mean[vertices][..., :2]  # (B, P, 2)
        basis = model.basis[vertices][:, :, :2, :k]  # (B, P, 2, K)
        shape = mean + torch.einsum("bpck,bk->bpc", basis, coefficients)
        # Similarity: minimise |a * shape + t - wanted|^2 over a (scalar) and t (2,).
        shape_c = shape - shape.mean(1, keepdim=True)
        wanted_c = wanted_xy - wanted_xy.mean(1, keepdim=True)
        a = (shape_c * wanted_c).sum((1, 2)) / shape_c.pow(2).sum((1, 2))
        t = wanted_xy.mean(1) - a[:, None] * shape.mean(1)
        # Contour vertices: the nearest projected candidate of each side.
        start, parts = len(fixed_points), []
        for cand, n in zip(candidates, sides, strict=True):
            cand_xy = (
                a[:, None, None]
                * (model.mean[cand][:, :2] + torch.einsum("nck,bk->bnc", model.basis[cand][:, :2, :k], coefficients))
                + t[:, None]
            )
            parts.append(cand[torch.cdist(wanted_xy[:, start : start + n], cand_xy).argmin(dim=2)])
            start += n
        chosen = torch.cat(parts, dim=1)
        # Coefficients: ridge regression of the residual on the scaled basis (noise sigma px, prior N(0, I)).
        design = (a[:, None, None, None] * basis).reshape(batch, -1, k)  # (B, 2P, K)
        residual = (wanted_xy - t[:, None] - a[:, None, None] * mean).reshape(batch, -1)
        gram = design.transpose(1, 2) @ design / sigma**2 + torch.eye(k)
        coefficients = torch.linalg.solve(gram, (design.transpose(1, 2) @ residual[..., None]).squeeze(-1) / sigma**2)
    scale = a * DISTANCE_MM / camera.focal
    shift = t * DISTANCE_MM / camera.focal
    return coefficients, scale, shift, chosen


def _project_chosen(
    model: SurreyModel,
    camera: Camera,
    chosen: torch.Tensor,
    coefficients: torch.Tensor,
    log_scale: torch.Tensor,
    shift: torch.Tensor,
) -> torch.Tensor:
    """Project the per-face chosen contour vertices (B, C) -> (B, C, 2)."""
    k = coefficients.shape[1]
    mean = model.mean[chosen]  # (B, C, 3)
    basis = model.basis[chosen][..., :k]  # (B, C, 3, K)
    shape = mean + torch.einsum("bnck,bk->bnc", basis, coefficients)
    translation = torch.cat([shift, torch.full((shift.shape[0], 1), -DISTANCE_MM)], dim=1)
    return camera.project(place(shape, log_scale.exp(), translation))


def yaw_rotation(degrees: float) -> torch.Tensor:
    """(3, 3) rotation about the vertical (y) axis; positive turns the face towards the image's right."""
    a = math.radians(degrees)
    return torch.tensor([[math.cos(a), 0.0, math.sin(a)], [0.0, 1.0, 0.0], [-math.sin(a), 0.0, math.cos(a)]])


def vertex_normals(vertices: torch.Tensor, triangles: np.ndarray) -> torch.Tensor:
    """(B, N, 3) vertices -> (B, N, 3) unit normals (area-weighted mean of the adjacent triangles' normals)."""
    tri = torch.as_tensor(triangles)
    a, b, c = vertices[:, tri[:, 0]], vertices[:, tri[:, 1]], vertices[:, tri[:, 2]]
    face = torch.cross(b - a, c - a, dim=2)
    normals = torch.zeros_like(vertices)
    for corner in range(3):
        normals.index_add_(1, tri[:, corner], face)
    return torch.nn.functional.normalize(normals, dim=2)
