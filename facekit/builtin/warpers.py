"""Builtin warpers: polyharmonic splines (the paper's warp), piecewise-affine, and kornia's TPS for comparison.

Every warper maps ``image (B, C, H, W)``, ``source (B, K, 2)`` and ``destination (B, K, 2)`` (x, y pixels) to
``(warped (B, C, H, W), flow (B, H, W, 2))``: the output has the content that was at ``source`` at ``destination``,
and output pixel ``p`` samples the input at ``p - flow(p)``.
"""

from __future__ import annotations

import importlib.util
from typing import Any, Literal

from pydantic import Field

from facekit.registry import ComponentSpec, Params

PaddingMode = Literal["border", "zeros", "reflection"]


class SplineParams(Params):
    regularization: float = Field(default=0.0, ge=0.0, description="smoothing: 0 interpolates the points exactly")
    boundary_points: int = Field(
        default=3, ge=0, description="tfa's num_boundary_points: 4 corners + (n - 1) zero-flow points inside each edge"
    )
    padding_mode: PaddingMode = Field(default="border", description="how samples outside the image are read")


class PolyharmonicParams(SplineParams):
    order: int = Field(default=1, ge=1, le=9, description="kernel: 1 r, 2 r^2 log r (thin plate), 3 r^3, ...")


class PolyharmonicWarper:
    """A polyharmonic spline warp (``facekit.warp.sparse_image_warp``) of a fixed order."""

    differentiable = True

    def __init__(self, order: int, params: SplineParams) -> None:
        self.order = order
        self.params = params

    def warp(self, image: Any, source: Any, destination: Any) -> tuple[Any, Any]:
        from facekit.warp import sparse_image_warp

        return sparse_image_warp(
            image,
            source,
            destination,
            order=self.order,
            regularization=self.params.regularization,
            boundary_points=self.params.boundary_points,
            padding_mode=self.params.padding_mode,
        )


class PiecewiseAffineParams(Params):
    boundary_points: int = Field(
        default=3, ge=0, description="fixed mesh points: 4 corners + (n - 1) inside each edge (tfa's count)"
    )
    padding_mode: PaddingMode = "border"


class PiecewiseAffineWarper:
    """Delaunay triangles of the destination points, one affine map per triangle (the classic morphing baseline)."""

    differentiable = True

    def __init__(self, params: PiecewiseAffineParams) -> None:
        self.params = params

    def warp(self, image: Any, source: Any, destination: Any) -> tuple[Any, Any]:
        from facekit.warp import piecewise_affine_warp

        return piecewise_affine_warp(
            image,
            source,
            destination,
            boundary_points=self.params.boundary_points,
            padding_mode=self.params.padding_mode,
        )


class KorniaTPSParams(Params):
    padding_mode: PaddingMode = "border"


class KorniaTPSWarper:
    """kornia's thin-plate spline, for comparison: no regularisation, no border points, normalised coordinates.
    Not for training or faces: kornia (0.9) centres its kernels on the targets rather than on the points it
    interpolates, and on a face's 68 points moved by under a pixel its flows reach thousands of px (the conformance
    check ``face_points`` fails, declared in tests/contract/test_conformance.py)."""

    differentiable = True

    def __init__(self, params: KorniaTPSParams) -> None:
        self.params = params

    def warp(self, image: Any, source: Any, destination: Any) -> tuple[Any, Any]:
        import torch
        from kornia.geometry.transform import get_tps_transform, warp_image_tps

        height, width = image.shape[-2:]
        scale = torch.tensor([2.0 / (width - 1), 2.0 / (height - 1)], dtype=image.dtype, device=image.device)

        def normalise(points: torch.Tensor) -> torch.Tensor:
            return points.to(image.dtype) * scale - 1.0

        # Measured (the conformance check pins it): get_tps_transform(dst, src) with kernel centres at src makes
        # warp_image_tps put the content of src at dst, i.e. its output pixel p samples the spline's f(p).
        dst, src = normalise(destination), normalise(source)
        kernel_weights, affine_weights = get_tps_transform(dst, src)
        warped = warp_image_tps(image, src, kernel_weights, affine_weights, align_corners=True)
        # kornia does not return the flow: evaluate its spline on the pixel grid to report it.
        ys, xs = torch.meshgrid(
            torch.arange(height, dtype=image.dtype, device=image.device),
            torch.arange(width, dtype=image.dtype, device=image.device),
            indexing="ij",
        )
        grid = torch.stack([xs, ys], dim=-1).reshape(1, -1, 2).expand(image.shape[0], -1, -1)
        from kornia.geometry.transform.thin_plate_spline import warp_points_tps

        sampled = (warp_points_tps(normalise(grid), src, kernel_weights, affine_weights) + 1.0) / scale
        flow = (grid - sampled).reshape(image.shape[0], height, width, 2)
        return warped, flow


def specs() -> list[ComponentSpec[Any]]:
    """The builtin warper specs (``kornia-tps`` only when kornia is installed)."""

    def fixed(order: int) -> Any:
        return lambda params: PolyharmonicWarper(order, params)

    out: list[ComponentSpec[Any]] = [
        ComponentSpec("rbf-linear", fixed(1), SplineParams, "polyharmonic spline, phi(r)=r (the paper's warp)"),
        ComponentSpec("tps", fixed(2), SplineParams, "thin-plate spline, phi(r)=r^2 log r"),
        ComponentSpec("cubic", fixed(3), SplineParams, "polyharmonic spline, phi(r)=r^3"),
        ComponentSpec(
            "polyharmonic",
            lambda params: PolyharmonicWarper(params.order, params),
            PolyharmonicParams,
            "polyharmonic spline of any order",
        ),
        ComponentSpec(
            "piecewise-affine", PiecewiseAffineWarper, PiecewiseAffineParams, "Delaunay piecewise-affine (baseline)"
        ),
    ]
    if importlib.util.find_spec("kornia") is not None:
        out.append(
            ComponentSpec(
                "kornia-tps",
                KorniaTPSWarper,
                KorniaTPSParams,
                "kornia's thin-plate spline (comparison; unstable on 68 face points)",
            )
        )
    return out
