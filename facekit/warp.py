"""Differentiable image warps driven by sparse control points (landmarks).

Reference PyTorch implementation of the polyharmonic-spline warp used by Cole et al.,
"Synthesizing Normalized Faces from Facial Identity Features" (CVPR 2017), which relied on
TensorFlow Addons' ``interpolate_spline`` / ``sparse_image_warp``, plus a piecewise-affine baseline.

Conventions
-----------
* Points are ``(x, y)`` pixel coordinates (tfa uses ``(y, x)``!), pixel centres at integer
  coordinates: the top-left pixel centre is ``(0, 0)``, the bottom-right one ``(W - 1, H - 1)``.
* Images are ``(B, C, H, W)``.
* Dense flows are returned as ``(B, H, W, 2)`` with the last axis ``(dx, dy)`` (the layout of tfa's
  flow and of ``grid_sample``'s grid).
* Warp semantics are tfa's: the flow is fitted at the *destination* points with value
  ``destination - source`` and output pixel ``p`` samples the input at ``p - flow(p)``. Hence the
  image content found at ``source[k]`` ends up at ``destination[k]``.

Spline
------
``f(q) = sum_n w_n phi(|q - c_n|) + A^T [q, 1]`` with ``sum_n w_n = 0`` and ``sum_n w_n c_n = 0``.
Kernels (identical to tfa): order 1 ``phi(r) = r``; order 2 ``r^2 log r`` (thin plate); order 3
``r^3``; in general odd ``k`` -> ``r^k`` and even ``k`` -> ``r^k log r``.

Regularisation is *smoothing*, as in ``scipy.interpolate.RBFInterpolator(degree=1, smoothing=s)``:
``regularization=s >= 0`` always trades exactness at the points for smoothness, for every order.
Internally ``sign(k) * s * I`` is added to the kernel matrix ``[phi(|c_i - c_j|)]``, where ``sign(k)``
makes ``sign(k) * phi`` conditionally positive definite (-1 for ``r`` and ``r^5``, +1 for ``r^2 log r``
and ``r^3``; scipy writes those kernels as ``-r``, ``r^2 log r``, ``r^3``, ``-r^5``). tfa adds ``+s * I``
for every order, which for its default ``phi(r) = r`` does not smooth but drives the system towards
singularity; so for order 1 tfa's ``regularization=s`` is our ``-s`` (we refuse negative values).

Numerics
--------
* Distances always use exact differences ``(q - c)`` (never ``|q|^2 + |c|^2 - 2 q.c``).
* The small ``(N + 3) x (N + 3)`` system is built and solved in float64 (after centring the points,
  which leaves the interpolant unchanged). The dense evaluation of order 1 runs in float32 (up to
  ~6e-4 px from float64 at 224 px on a face with a few px of landmark jitter) unless the worst-case
  bound ``2 eps32 * diag * max_b sum|w|`` on its rounding error exceeds 1e-2 px (a typical face at
  224 px: ~5e-3; huge cancelling weights, e.g. centres 0.01 px apart carrying different values: ~0.6),
  then it runs in float64 (one host sync, ~2x time in that rare case). The choice is made per batch:
  a partner with such weights puts the whole batch in float64, so an item's flow can differ by that
  float32 error (<1e-3 px) between batches. Orders >= 2 are evaluated in float64 because ``r^k`` reaches ~1e7
  at 224 px and cancels (~1e-3 px error in float32). Float64 inputs are evaluated in float64.
  Flows are float32 (float64 for float64 inputs); warped images are cast back to the input dtype,
  so float16/bfloat16 inputs are safe (sampling runs in float32).
* Exactly (or to 1e-9 of the point spread) coincident centres raise :class:`SplineError` naming the
  points, unless ``regularization != 0`` (then the regularised system is solved, which is well
  defined). Fewer than 3 centres, or all centres collinear, always raise :class:`SplineError` (the
  affine part is then undetermined). Pass ``check=False`` to skip these checks (they cost one
  device-to-host synchronisation).

Speed / memory
--------------
The dense evaluation over every pixel is a custom ``torch.autograd.Function`` that works in chunks
(:data:`CHUNK_ELEMENTS` pixel-centre pairs, one reused buffer) and recomputes distances in backward,
so nothing of size ``(B, H*W, N)`` is ever kept: only the centres and weights are saved. On the pixel
grid the squared distance is separable, ``r^2 = (x_j - c_x)^2 + (y_i - c_y)^2`` (exact differences
from two small tables), so it costs one add per (pixel, centre) on top of the kernel. Forward is
``add, sqrt, (C x N) @ (N x P) matmul`` per chunk; backward is ``add, rsqrt`` and two batched matmuls
contracting ``grad * phi'(r)/r`` over rows and over columns, from which the gradients of centres and
weights follow by separability (no ``(P, N)`` gradient tensor is formed). Gradients w.r.t. arbitrary
queries are supported by the general (non-grid) path used by :func:`interpolate_spline`.

What can be cached (:class:`PolyharmonicWarp`)
----------------------------------------------
With tfa semantics the spline centres are the *destination* points. If the destination points are
fixed (e.g. aligning faces *to* the mean face / a template), the system matrix inverse ``L^-1`` and
the pixel-to-centre matrix ``[phi(|p - c|), p, 1]`` are constant, and so is their product
``E = [phi, p, 1] L^-1[:, :N]`` of shape ``(H*W, N)``: the flow of any batch is then one matmul
``E @ (destination - source)``, linear in the source points, and the whole warp is exportable to ONNX
(matmul + grid_sample). In the decoder of Cole et al. the texture is registered to the mean
landmarks (the *source*, fixed) and warped to the predicted landmarks (the *destination*, varying),
so the centres change per sample and nothing pixel-sized can be cached exactly; fitting the map at
the fixed mean points instead gives the forward map (texture -> output), which would need splatting
or inversion and is *not* the same warp. For that direction use :func:`sparse_image_warp`; when one
destination set is shared by the whole batch pass it with batch size 1 and the pixel kernel is
evaluated once for the whole batch.
"""

from __future__ import annotations

import functools
import logging
import math
from collections.abc import Callable
from typing import Any, TypeVar, cast

import torch
import torch.nn.functional as F
from torch.autograd.function import once_differentiable

logger = logging.getLogger(__name__)

__all__ = [
    "PolyharmonicWarp",
    "SplineError",
    "boundary_control_points",
    "dense_flow",
    "dense_flow_from_solution",
    "evaluate_spline",
    "full_precision",
    "interpolate_spline",
    "piecewise_affine_warp",
    "solve_spline",
    "sparse_image_warp",
    "warp_with_flow",
]

#: Target number of (query, centre) pairs processed per chunk by the dense evaluation on CPU
#: (2 MiB of float32: cache-sized, few enough chunks to keep per-op overhead small).
CHUNK_ELEMENTS = 1 << 19
#: Same for accelerators, where kernel-launch count matters more than cache size.
DEVICE_CHUNK_ELEMENTS = 1 << 25


def _chunk_elements(t: torch.Tensor) -> int:
    return CHUNK_ELEMENTS if t.device.type == "cpu" else DEVICE_CHUNK_ELEMENTS


_PADDING_MODES = ("border", "zeros", "reflection")


class SplineError(ValueError):
    """Raised when the spline system is singular (coincident / collinear / too few centres)."""


# ----------------------------------------------------------------------------------------------
# kernels
# ----------------------------------------------------------------------------------------------
def _check_order(order: int) -> int:
    if int(order) != order or order < 1:
        raise ValueError(f"spline order must be a positive integer, got {order!r}")
    return int(order)


def _phi_autograd(r2: torch.Tensor, order: int) -> torch.Tensor:
    """Kernel of the squared distance, with finite gradients at ``r2 == 0`` (autograd-safe)."""
    pos = r2 > 0
    safe = torch.where(pos, r2, torch.ones_like(r2))
    if order % 2 == 1:
        if order == 1:
            return torch.where(pos, safe.sqrt(), torch.zeros_like(r2))
        return torch.where(pos, safe.pow(0.5 * order), torch.zeros_like(r2))
    # r^k log r = 0.5 * r2^(k/2) * log(r2)
    return torch.where(pos, 0.5 * safe.pow(0.5 * order) * safe.log(), torch.zeros_like(r2))


def _phi_inplace(r2: torch.Tensor, order: int) -> torch.Tensor:
    """Kernel of the squared distance, overwriting ``r2`` (no autograd)."""
    if order == 1:
        return r2.sqrt_()
    if order == 2:
        # 0.5 * r2 * log(r2), 0 at r2 == 0
        lg = r2.clamp_min(torch.finfo(r2.dtype).tiny).log_()
        return r2.mul_(lg).mul_(0.5)
    if order % 2 == 1:
        return r2.pow_(0.5 * order)
    lg = r2.clamp_min(torch.finfo(r2.dtype).tiny).log_()
    return r2.pow_(0.5 * order).mul_(lg).mul_(0.5)


def _dphi_over_r(r2: torch.Tensor, order: int) -> torch.Tensor:
    """``phi'(r) / r`` as a function of ``r2``; 0 where ``r2 == 0`` (the gradient there is 0)."""
    pos = r2 > 0
    if order == 1:
        out = r2.rsqrt()
    elif order % 2 == 1:
        out = r2.pow(0.5 * (order - 2)) * order
    else:
        # d/dr (r^k log r) / r = r^(k-2) (k log r + 1)
        lg = r2.clamp_min(torch.finfo(r2.dtype).tiny).log()
        out = (0.5 * order) * lg + 1.0
        if order > 2:
            out = out * r2.pow(0.5 * (order - 2))
    return out.masked_fill_(~pos, 0.0)


def _compute_dtype(*tensors: torch.Tensor) -> torch.dtype:
    return torch.float64 if any(t.dtype == torch.float64 for t in tensors) else torch.float32


_F = TypeVar("_F", bound=Callable[..., Any])


def full_precision(function: _F) -> _F:
    """Run ``function`` with autocast off on its tensors' device: the warp chooses its own precision (float32, or
    float64 where float32 would cancel). Under a bf16/fp16 autocast (train.precision) its matmuls would otherwise
    run in bf16, whose spacing at 128-256 px is 1 px: flows off by up to ~6 px at 224 px."""

    @functools.wraps(function)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        device = next((a.device.type for a in (*args, *kwargs.values()) if isinstance(a, torch.Tensor)), "cpu")
        if not torch.is_autocast_enabled(device):
            return function(*args, **kwargs)
        with torch.autocast(device, enabled=False):
            return function(*args, **kwargs)

    return cast(_F, wrapper)


# ----------------------------------------------------------------------------------------------
# custom autograd functions for the dense evaluation
# ----------------------------------------------------------------------------------------------
class _RBFPoints(torch.autograd.Function):
    """``out[b, m] = sum_n phi(|q_bm - c_bn|) w_bn`` for arbitrary queries, chunked over ``m``."""

    @staticmethod
    def forward(  # type: ignore[override]
        ctx: Any, queries: torch.Tensor, centers: torch.Tensor, weights: torch.Tensor, order: int
    ) -> torch.Tensor:
        b, m, _ = queries.shape
        n, c = weights.shape[1], weights.shape[2]
        out = weights.new_empty(b, m, c)
        step = max(1, _chunk_elements(weights) // max(1, b * n))
        for s in range(0, m, step):
            d = queries[:, s : s + step, None, :] - centers[:, None, :, :]
            r2 = d.square_().sum(-1)
            torch.bmm(_phi_inplace(r2, order), weights, out=out[:, s : s + step])
        ctx.save_for_backward(queries, centers, weights)
        ctx.order = order
        return out

    @staticmethod
    @once_differentiable
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[Any, ...]:  # type: ignore[override]
        queries, centers, weights = ctx.saved_tensors
        order = ctx.order
        b, m, _ = queries.shape
        n = centers.shape[1]
        need_q, need_c, need_w = ctx.needs_input_grad[:3]
        grad = grad.to(weights.dtype).contiguous()
        gq = torch.empty_like(queries) if need_q else None
        gc = torch.zeros_like(centers) if need_c else None
        gw = torch.zeros_like(weights) if need_w else None
        step = max(1, _chunk_elements(weights) // max(1, b * n))
        for s in range(0, m, step):
            d = queries[:, s : s + step, None, :] - centers[:, None, :, :]  # (B, m, N, 2)
            r2 = d.square().sum(-1)
            g = grad[:, s : s + step]
            if need_w:
                gw.baddbmm_(_phi_inplace(r2.clone(), order).transpose(1, 2), g)  # type: ignore[union-attr]
            if need_q or need_c:
                sc = torch.bmm(g, weights.transpose(1, 2)).mul_(_dphi_over_r(r2, order))  # (B, m, N)
                t = d.mul_(sc.unsqueeze(-1))  # d/dq of r is (q - c) / r
                if need_q:
                    gq[:, s : s + step] = t.sum(2)  # type: ignore[index]
                if need_c:
                    gc.sub_(t.sum(1))  # type: ignore[union-attr]
        return gq, gc, gw, None


class _RBFGrid(torch.autograd.Function):
    """``out[b, i, j] = sum_n phi(|(j, i) - c_bn|) w_bn`` over the full ``H x W`` pixel grid.

    Uses the separability of the squared distance on the grid and recomputes everything in
    backward; only ``centers`` and ``weights`` are saved.
    """

    @staticmethod
    def _tables(centers: torch.Tensor, height: int, width: int) -> tuple[torch.Tensor, torch.Tensor]:
        xs = torch.arange(width, device=centers.device, dtype=centers.dtype)
        ys = torch.arange(height, device=centers.device, dtype=centers.dtype)
        dx = xs[None, :, None] - centers[:, None, :, 0]  # (B, W, N)
        dy = ys[None, :, None] - centers[:, None, :, 1]  # (B, H, N)
        return dx, dy

    @staticmethod
    def _chunks(b: int, h: int, w: int, n: int, chunk: int) -> tuple[int, int]:
        per_image = h * w * n
        bstep = max(1, min(b, chunk // max(1, per_image)))
        rstep = max(1, min(h, chunk // max(1, bstep * w * n)))
        return bstep, rstep

    @staticmethod
    def forward(  # type: ignore[override]
        ctx: Any, centers: torch.Tensor, weights: torch.Tensor, height: int, width: int, order: int
    ) -> torch.Tensor:
        b, n, _ = centers.shape
        c = weights.shape[2]
        dx, dy = _RBFGrid._tables(centers, height, width)
        dx2, dy2 = dx.square(), dy.square()
        # channels-first accumulation: w^T (C, N) @ phi^T (N, P) is ~5x faster than phi @ w for C = 2
        out = weights.new_empty(b, c, height * width)
        wt = weights.transpose(1, 2)
        bstep, rstep = _RBFGrid._chunks(b, height, width, n, _chunk_elements(weights))
        buf = weights.new_empty(bstep, rstep, width, n)  # reused: no allocation per chunk
        for b0 in range(0, b, bstep):
            b1 = min(b, b0 + bstep)
            wb = wt[b0:b1]
            for r0 in range(0, height, rstep):
                r1 = min(height, r0 + rstep)
                r2 = buf[: b1 - b0, : r1 - r0]
                torch.add(dy2[b0:b1, r0:r1, None, :], dx2[b0:b1, None, :, :], out=r2)  # (b, h, W, N)
                phi = _phi_inplace(r2, order).view(b1 - b0, (r1 - r0) * width, n)
                out[b0:b1, :, r0 * width : r1 * width] = torch.bmm(wb, phi.transpose(1, 2))
        ctx.save_for_backward(centers, weights)
        ctx.shape = (height, width, order)
        return out.view(b, c, height, width).permute(0, 2, 3, 1)  # (B, H, W, C) view

    @staticmethod
    @once_differentiable
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[Any, ...]:  # type: ignore[override]
        # With s = phi'(r) / r, dL/dc_n = -sum_p (g_p . w_n) s_pn (p - c_n), and for the kernels
        # handled here phi = (r^2 s - [even] r^k) / k. Both only need the two partial contractions
        #   T[j, c, n] = sum_i g[i, j, c] s[i, j, n]   (over rows)   and
        #   U[i, c, n] = sum_j g[i, j, c] s[i, j, n]   (over columns),
        # because r^2 = dx^2 + dy^2 and p - c = (dx, dy) are separable on the grid. Per chunk this is
        # one add, one kernel pass and two batched matmuls; nothing (pixels x centres) is written.
        centers, weights = ctx.saved_tensors
        height, width, order = ctx.shape
        need_c, need_w = ctx.needs_input_grad[:2]
        b, n, _ = centers.shape
        c = weights.shape[2]
        dtype = weights.dtype
        grad = grad.to(dtype).contiguous()  # e.g. expanded grads of .sum() would hit slow bmm paths
        dx, dy = _RBFGrid._tables(centers, height, width)
        dx2, dy2 = dx.square(), dy.square()
        # a tiny offset keeps s finite at r == 0 without changing any representable r^2 > ~1e-22;
        # there the huge s is multiplied by dx = dy = 0 (whole column / row share the factor)
        dy2t = dy2 + (1e-30 if dtype != torch.float64 else 1e-280)
        t_acc = weights.new_zeros(b, width, c, n)
        u_acc = weights.new_empty(b, height, c, n)
        even_extra = order % 2 == 0 and order > 2
        pk = weights.new_zeros(b, n, c) if even_extra else None
        bstep, rstep = _RBFGrid._chunks(b, height, width, n, _chunk_elements(weights))
        buf = weights.new_empty(bstep, rstep, width, n)
        for b0 in range(0, b, bstep):
            b1 = min(b, b0 + bstep)
            nb = b1 - b0
            for r0 in range(0, height, rstep):
                r1 = min(height, r0 + rstep)
                nr = r1 - r0
                r2 = buf[:nb, :nr]
                torch.add(dy2t[b0:b1, r0:r1, None, :], dx2[b0:b1, None, :, :], out=r2)  # (b, h, W, N)
                if even_extra:
                    rk = r2.pow(0.5 * order).view(nb, nr * width, n)
                    g2 = grad[b0:b1, r0:r1].reshape(nb, nr * width, c)
                    pk[b0:b1].baddbmm_(rk.transpose(1, 2), g2)  # type: ignore[index]
                s = _dphi_over_r_inplace(r2, order)
                g = grad[b0:b1, r0:r1]  # (b, h, W, C)
                # U: batched over (b, i): (C, W) @ (W, N)
                gu = g.reshape(nb * nr, width, c).transpose(1, 2)
                u_acc[b0:b1, r0:r1] = torch.bmm(gu, s.view(nb * nr, width, n)).view(nb, nr, c, n)
                # T: batched over (b, j): (C, h) @ (h, N). The operands are made contiguous first: a
                # strided batch makes torch loop over per-matrix BLAS calls inside its own parallel
                # region (nested thread pools that spin-wait for seconds on a 2-core machine)
                gt = g.permute(0, 2, 3, 1).reshape(nb * width, c, nr)
                st = s.permute(0, 2, 1, 3).reshape(nb * width, nr, n)
                t_acc[b0:b1] += torch.bmm(gt, st).view(nb, width, c, n)
        gc = gw = None
        if need_c:
            w_t = weights.transpose(1, 2)[:, None]  # (B, 1, C, N)
            tw = (t_acc * w_t).sum(2)  # (B, W, N)
            uw = (u_acc * w_t).sum(2)  # (B, H, N)
            gc = -torch.stack([(tw * dx).sum(1), (uw * dy).sum(1)], -1)  # (B, N, 2)
        if need_w:
            # sum_p g r^2 s = sum_j dx2 T + sum_i dy2 U
            acc = (t_acc * dx2[:, :, None]).sum(1) + (u_acc * dy2[:, :, None]).sum(1)  # (B, C, N)
            gw = acc.transpose(1, 2)
            if order % 2 == 0:
                if order == 2:
                    # sum_p g r^2 = sum_j dx2 gsum_cols + sum_i dy2 gsum_rows
                    gcol = grad.sum(1)  # (B, W, C)
                    grow = grad.sum(2)  # (B, H, C)
                    extra = torch.bmm(dx2.transpose(1, 2), gcol) + torch.bmm(dy2.transpose(1, 2), grow)
                else:
                    assert pk is not None
                    extra = pk
                gw = gw - extra
            gw = gw / order
        return gc, gw, None, None, None


def _dphi_over_r_inplace(r2: torch.Tensor, order: int) -> torch.Tensor:
    """``phi'(r) / r`` from a strictly positive ``r2``, overwriting it."""
    if order == 1:
        return r2.rsqrt_()
    if order % 2 == 1:
        return r2.pow_(0.5 * (order - 2)).mul_(order) if order > 3 else r2.sqrt_().mul_(3.0)
    if order == 2:
        return r2.log_().add_(1.0)
    # r^(k-2) (k log r + 1) = r2^((k-2)/2) * (0.5 k log r2 + 1)
    lg = r2.log().mul_(0.5 * order).add_(1.0)
    return r2.pow_(0.5 * (order - 2)).mul_(lg)


# ----------------------------------------------------------------------------------------------
# fitting
# ----------------------------------------------------------------------------------------------
def smoothing_sign(order: int) -> float:
    """+1 or -1 such that ``sign * phi`` is conditionally positive definite for the order-``order`` kernel, so that
    adding ``sign * s * I`` (``s >= 0``) smooths (scipy's convention): odd k: (-1)^((k+1)/2); even k: (-1)^(k/2+1)."""
    if order % 2:
        return -1.0 if ((order + 1) // 2) % 2 else 1.0
    return 1.0 if (order // 2 + 1) % 2 == 0 else -1.0


def _check_centers(centers: torch.Tensor, regularization: float) -> None:
    """Raise :class:`SplineError` for too few, coincident (unregularised) or collinear centres."""
    n = centers.shape[1]
    if n < 3:
        raise SplineError(f"a polyharmonic spline with an affine term needs >= 3 centres, got {n}")
    with torch.no_grad():
        c = centers.detach().to(torch.float64)
        c = c - c.mean(1, keepdim=True)
        scale = c.abs().amax(dim=(1, 2)).clamp_min(1e-300)  # (B,)
        if not torch.isfinite(c).all():
            raise SplineError("spline centres contain NaN or Inf")
        # collinear: smallest singular value of the centred point cloud ~ 0. Computed on the
        # host: on CUDA, batched float64 svdvals (cuSOLVER Jacobi, hundreds of small copies) took
        # 56 of the warp forward's 72 ms of host time at batch 256 on an H200 (RESULTS.md
        # 'warp-cuda'); the CPU needs 0.35 ms, and the check synchronises on its answer anyway.
        sv = torch.linalg.svdvals(c.cpu())  # (B, 2)
        coll = sv[:, 1] <= 1e-9 * sv[:, 0].clamp_min(1e-300) * math.sqrt(n)
        if regularization == 0.0:
            d = (c[:, :, None, :] - c[:, None, :, :]).abs().amax(-1)  # (B, N, N) Chebyshev dist
            eye = torch.eye(n, dtype=torch.bool, device=c.device)
            close = (d <= 1e-9 * scale[:, None, None]) & ~eye
        else:
            close = None
        bad_coll = bool(coll.any())
        bad_close = close is not None and bool(close.any())
    if bad_close:
        assert close is not None
        bi, i, j = [int(v) for v in torch.nonzero(close)[0]]
        p = centers[bi, i].detach().double().tolist()
        raise SplineError(
            f"spline centres {i} and {j} of batch element {bi} coincide (at x={p[0]:.6g}, "
            f"y={p[1]:.6g}); the interpolation system is singular. Remove duplicates or pass "
            "regularization != 0."
        )
    if bad_coll:
        bi = int(torch.nonzero(coll)[0, 0])
        raise SplineError(
            f"all {n} spline centres of batch element {bi} are collinear; the affine part of the "
            "spline is undetermined (add boundary points or non-collinear centres)."
        )


@full_precision
def solve_spline(
    centers: torch.Tensor,
    values: torch.Tensor,
    order: int = 1,
    regularization: float = 0.0,
    check: bool = True,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Fit the polyharmonic spline system (in float64, differentiable).

    Args:
        centers: ``(B, N, 2)`` centre coordinates.
        values: ``(B, N, C)`` values at the centres.
        order: kernel order (see module docstring).
        regularization: smoothing >= 0 (scipy's convention, see the module docs).
        check: validate centres (coincident / collinear), raising :class:`SplineError`.

    Returns:
        ``(w, v, origin)``: kernel weights ``(B, N, C)`` float64, affine coefficients ``(B, 3, C)``
        float64 for the basis ``[x - ox, y - oy, 1]`` and the origin ``(B, 1, 2)`` float64 (the
        centroid of the centres) that queries must be shifted by.
    """
    order = _check_order(order)
    if centers.ndim != 3 or centers.shape[-1] != 2:
        raise ValueError(f"centers must be (B, N, 2), got {tuple(centers.shape)}")
    if values.ndim != 3 or values.shape[:2] != centers.shape[:2]:
        raise ValueError(f"values must be (B, N, C) matching centers, got {tuple(values.shape)}")
    if check:
        _check_centers(centers, regularization)
    b, n, _ = centers.shape
    cdim = values.shape[2]
    c = centers.to(torch.float64)
    origin = c.mean(1, keepdim=True).detach()
    c = c - origin
    f = values.to(torch.float64)
    r2 = (c[:, :, None, :] - c[:, None, :, :]).square().sum(-1)
    a = _phi_autograd(r2, order)
    if regularization < 0:
        raise ValueError(f"regularization is smoothing and must be >= 0, got {regularization}")
    if regularization != 0.0:
        a = a + smoothing_sign(order) * regularization * torch.eye(n, dtype=a.dtype, device=a.device)
    p = torch.cat([c, torch.ones_like(c[..., :1])], -1)  # (B, N, 3)
    top = torch.cat([a, p], 2)
    bottom = torch.cat([p.transpose(1, 2), p.new_zeros(b, 3, 3)], 2)
    lhs = torch.cat([top, bottom], 1)
    rhs = torch.cat([f, f.new_zeros(b, 3, cdim)], 1)
    sol, info = torch.linalg.solve_ex(lhs, rhs)
    if check and bool((info != 0).any() | ~torch.isfinite(f).all()):  # (one host sync for both)
        if not bool(torch.isfinite(f).all()):  # (a NaN source point gave a finite, wrong image without a word)
            raise SplineError("spline values contain NaN or Inf (a source point that is not a finite number)")
        raise SplineError("the spline system is singular (degenerate centres)")
    return sol[:, :n], sol[:, n:], origin


@full_precision
def evaluate_spline(
    queries: torch.Tensor,
    centers: torch.Tensor,
    w: torch.Tensor,
    v: torch.Tensor,
    origin: torch.Tensor,
    order: int = 1,
) -> torch.Tensor:
    """Evaluate a fitted spline at arbitrary queries (memory-bounded custom autograd).

    Args:
        queries: ``(B, M, 2)``.
        centers: ``(B, N, 2)``.
        w: ``(B, N, C)`` kernel weights; v: ``(B, 3, C)`` affine part; origin: ``(B, 1, 2)``
            (outputs of :func:`solve_spline`).
        order: kernel order.

    Returns:
        ``(B, M, C)`` in the compute dtype: float64 for order >= 2 or float64 inputs, else float32.
    """
    dt = torch.float64 if _check_order(order) >= 2 else _compute_dtype(queries, centers)
    if dt != torch.float64:
        # as dense_flow: huge weights (centres a hair apart with different values) cancel in float32
        with torch.no_grad():
            both = torch.cat([queries.detach().reshape(-1, 2), centers.detach().reshape(-1, 2)]).double()
            extent = (both.amax(0) - both.amin(0)).tolist() if len(both) else [0.0, 0.0]
        if _float32_error_bound(w, extent[1], extent[0]) > 1e-2:  # the box diagonal bounds every distance
            dt = torch.float64
    q = queries.to(dt) - origin.to(dt)
    c = centers.to(dt) - origin.to(dt)
    rbf = _RBFPoints.apply(q, c, w.to(dt), order)
    affine = torch.baddbmm(v[:, 2:].to(dt), q, v[:, :2].to(dt))
    # float32 inputs get float32 back, also where the evaluation fell back to float64 (orders >= 2 stay float64)
    return (rbf + affine).to(dt if order >= 2 else _compute_dtype(queries, centers))


@full_precision
def interpolate_spline(
    centers: torch.Tensor,
    values: torch.Tensor,
    queries: torch.Tensor,
    order: int = 1,
    regularization: float = 0.0,
    check: bool = True,
) -> torch.Tensor:
    """Polyharmonic spline interpolation with a degree-1 polynomial term (tfa semantics).

    Args:
        centers: ``(B, N, 2)`` (any float dtype; the batch dim may be 1 and broadcast).
        values: ``(B, N, C)``.
        queries: ``(B, M, 2)``.
        order: 1 -> ``r``, 2 -> ``r^2 log r``, 3 -> ``r^3``, odd k -> ``r^k``, even k -> ``r^k log r``.
        regularization: smoothing >= 0 (scipy's convention, see the module docs).
        check: raise :class:`SplineError` on coincident (if unregularised) / collinear centres.

    Returns:
        ``(B, M, C)`` interpolated values in the dtype of ``values``. Differentiable w.r.t.
        centres, values and queries.
    """
    bsz = max(centers.shape[0], values.shape[0], queries.shape[0])
    if centers.shape[0] != bsz:
        centers = centers.expand(bsz, -1, -1)
    if values.shape[0] != bsz:
        values = values.expand(bsz, -1, -1)
    if queries.shape[0] != bsz:
        queries = queries.expand(bsz, -1, -1)
    w, v, origin = solve_spline(centers, values, order, regularization, check)
    out = evaluate_spline(queries, centers, w, v, origin, order)
    return out.to(values.dtype)


# ----------------------------------------------------------------------------------------------
# dense warps
# ----------------------------------------------------------------------------------------------
def boundary_control_points(
    height: int, width: int, n: int, dtype: torch.dtype = torch.float32, device: Any = None
) -> torch.Tensor:
    """Boundary control points exactly as tfa's ``sparse_image_warp(num_boundary_points=n)``.

    ``n`` evenly spaced points along each edge counting one corner (``n + 1`` per edge with both corners): the
    four corners and ``n - 1`` points strictly inside each edge, ``4n`` points; ``n == 1`` -> the corners,
    ``n == 0`` -> none. (Before facekit 0.3 ``n`` gave ``4n + 4`` points; model files written before then are read
    with ``n + 1``, see :func:`facekit.warp.tfa_boundary_points`.)

    Returns:
        ``(P, 2)`` ``(x, y)`` points.
    """
    if n <= 0:
        return torch.zeros(0, 2, dtype=dtype, device=device)
    xs = torch.linspace(0, width - 1, n + 1, dtype=torch.float64)
    ys = torch.linspace(0, height - 1, n + 1, dtype=torch.float64)
    top = torch.stack([xs, torch.zeros_like(xs)], -1)
    bottom = torch.stack([xs, torch.full_like(xs, height - 1)], -1)
    left = torch.stack([torch.zeros_like(ys[1:-1]), ys[1:-1]], -1)
    right = torch.stack([torch.full_like(ys[1:-1], width - 1), ys[1:-1]], -1)
    return torch.cat([top, bottom, left, right], 0).to(dtype=dtype, device=device)


#: The model-file metadata key that says its warper's ``boundary_points`` count tfa's way.
BOUNDARY_CONVENTION_KEY = "boundary_convention"


def tfa_boundary_points(meta: dict[str, Any]) -> dict[str, Any]:
    """A model file's metadata with its ``warper_params`` in today's (tfa's) ``boundary_points`` count: files written
    before the switch (no ``boundary_convention`` in their metadata) meant ``n`` points inside each edge plus the
    corners, which is tfa's ``n + 1``. :func:`facekit.checkpoints.read_checkpoint` applies it to every file read."""
    if meta.get(BOUNDARY_CONVENTION_KEY) == "tfa" or not meta.get("warper_params"):
        return meta
    params = dict(meta["warper_params"])
    if params.get("boundary_points", 0) > 0:
        params["boundary_points"] += 1
    return {**meta, "warper_params": params, BOUNDARY_CONVENTION_KEY: "tfa"}


def _check_points(source: torch.Tensor, destination: torch.Tensor) -> None:
    """Refuse ``source`` and ``destination`` that are not (B, K, 2) with the same K (a K that differs was a torch size
    error far inside, or, in :func:`piecewise_affine_warp`, a warp through the wrong pairs of points without a word)."""
    if source.ndim != 3 or source.shape[-1] != 2 or destination.ndim != 3 or destination.shape[1:] != source.shape[1:]:
        raise ValueError(
            f"source / destination must be (B, K, 2) with the same K, got {tuple(source.shape)} and "
            f"{tuple(destination.shape)}"
        )


def _with_boundary(
    source: torch.Tensor, destination: torch.Tensor, height: int, width: int, n: int
) -> tuple[torch.Tensor, torch.Tensor]:
    if n <= 0:
        return source, destination
    bp = boundary_control_points(height, width, n, source.dtype, source.device)
    src = torch.cat([source, bp.expand(source.shape[0], -1, -1)], 1)
    dst = torch.cat([destination, bp.to(destination.dtype).expand(destination.shape[0], -1, -1)], 1)
    return src, dst


@full_precision
def dense_flow(
    centers: torch.Tensor,
    values: torch.Tensor,
    height: int,
    width: int,
    order: int = 1,
    regularization: float = 0.0,
    check: bool = True,
) -> torch.Tensor:
    """Spline through ``(centers, values)`` evaluated at every pixel centre.

    Args:
        centers: ``(B, N, 2)`` ``(x, y)`` pixel coordinates.
        values: ``(B, N, C)``.
        height: grid rows.
        width: grid columns.

    Returns:
        ``(B, H, W, C)`` in the compute dtype (float32, or float64 for float64 inputs).
    """
    w, v, origin = solve_spline(centers, values, order, regularization, check)
    dt = _compute_dtype(centers, values)
    # r^k for k >= 2 reaches ~1e7 at 224 px and cancels: float32 would cost ~1e-3 px, so the dense
    # evaluation of higher orders runs in float64 (order 1, the paper's, stays float32: <~6e-4 px)
    edt = torch.float64 if _check_order(order) >= 2 else dt
    if edt != torch.float64 and _float32_error_bound(w, height, width) > 1e-2:
        # huge weights (e.g. centres 0.01 px apart with different values) cancel in float32
        edt = torch.float64
    return dense_flow_from_solution(centers, w, v, origin, height, width, order, edt).to(dt)


def _float32_error_bound(w: torch.Tensor, height: float, width: float) -> float:
    """Rounding-error bound (px) of the float32 order-1 kernel sum: ``eps * max r * sum |w|``."""
    with torch.no_grad():
        total = w.detach().abs().sum(1).amax()
    return float(total) * math.hypot(height, width) * 2.0 * torch.finfo(torch.float32).eps


@full_precision
def warp_with_flow(image: torch.Tensor, flow: torch.Tensor, padding_mode: str = "border") -> torch.Tensor:
    """Bilinear backward warp: ``out(p) = image(p - flow(p))`` (tfa's ``dense_image_warp``).

    Args:
        image: ``(B, C, H, W)``.
        flow: ``(B, H, W, 2)`` ``(dx, dy)`` in pixels.
        padding_mode: ``"border"`` (clamp to the edge pixels), ``"zeros"`` or ``"reflection"``.

    Returns:
        ``(B, C, H, W)`` in the dtype of ``image`` (sampling runs in float32 or better).
    """
    if padding_mode not in _PADDING_MODES:
        raise ValueError(f"padding_mode must be one of {_PADDING_MODES}, got {padding_mode!r}")
    h, w = image.shape[-2:]
    if h < 2 or w < 2:
        raise ValueError(f"image must be at least 2x2, got {h}x{w}")
    dt = _compute_dtype(image, flow)
    f = flow.to(dt)
    sx = 2.0 / (w - 1)
    sy = 2.0 / (h - 1)
    gx = torch.arange(w, device=image.device, dtype=dt) * sx - 1.0
    gy = torch.arange(h, device=image.device, dtype=dt) * sy - 1.0
    base = torch.stack(torch.broadcast_tensors(gx[None, :], gy[:, None]), -1)  # (H, W, 2)
    scale = torch.tensor([sx, sy], device=image.device, dtype=dt)
    grid = base - f * scale
    out = F.grid_sample(image.to(dt), grid, mode="bilinear", padding_mode=padding_mode, align_corners=True)
    return out.to(image.dtype)


@full_precision
def sparse_image_warp(
    image: torch.Tensor,
    source: torch.Tensor,
    destination: torch.Tensor,
    order: int = 1,
    regularization: float = 0.0,
    boundary_points: int = 3,
    padding_mode: str = "border",
    check: bool = True,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Warp ``image`` so that the content at ``source`` moves to ``destination`` (tfa semantics).

    Args:
        image: ``(B, C, H, W)`` any float dtype.
        source: ``(B, K, 2)`` ``(x, y)`` pixel coordinates.
        destination: ``(B, K, 2)``, or ``(1, K, 2)`` shared by the batch (then the pixel kernel is
            evaluated once for the whole batch).
        order: spline order (1 = ``phi(r) = r``, the paper's choice).
        regularization: smoothing >= 0 (scipy's convention, see the module docs).
        boundary_points: tfa's ``num_boundary_points``: the 4 corners and ``n - 1`` zero-flow points
            inside each edge (``4n`` points); 0 = none.
        padding_mode: ``"border"`` (clamp), ``"zeros"`` or ``"reflection"``.
        check: raise :class:`SplineError` on degenerate control points.

    Returns:
        ``(warped, flow)``: ``(B, C, H, W)`` in the image dtype and ``(B, H, W, 2)`` ``(dx, dy)``
        dense flow (float32, or float64 for float64 inputs); ``warped(p) = image(p - flow(p))``.
        Differentiable w.r.t. image, source and destination.
    """
    if image.ndim != 4:
        raise ValueError(f"image must be (B, C, H, W), got {tuple(image.shape)}")
    b, _, h, w = image.shape
    _check_points(source, destination)
    if source.shape[0] != b:
        source = source.expand(b, -1, -1)
    dt = _compute_dtype(image, source, destination)
    src, dst = _with_boundary(source.to(dt), destination.to(dt), h, w, boundary_points)
    if dst.shape[0] == 1 and b > 1:
        # shared centres: the batch becomes channels, one pixel-kernel evaluation for all
        vals = (dst - src).permute(1, 0, 2).reshape(1, dst.shape[1], 2 * b)
        flow = dense_flow(dst, vals, h, w, order, regularization, check)  # (1, H, W, 2B)
        flow = flow.view(h, w, b, 2).permute(2, 0, 1, 3)
    else:
        if dst.shape[0] != b:
            raise ValueError("destination batch must be 1 or match the image batch")
        flow = dense_flow(dst, dst - src, h, w, order, regularization, check)
    return warp_with_flow(image, flow, padding_mode), flow


class PolyharmonicWarp:
    """Spline warp to *fixed* destination points with everything pixel-sized precomputed.

    ``E = [phi(|p - c|), p - o, 1] @ L^-1[:, :N]`` of shape ``(H*W, N)`` is built once (float64,
    chunked), so ``flow = E @ (destination - source)`` is one matmul per batch; the warp is linear in
    the source points, differentiable w.r.t. image and source, and ONNX-exportable (matmul +
    grid_sample). Exactly equal to :func:`sparse_image_warp` with the same destination.

    Args:
        destination: ``(K, 2)`` or ``(1, K, 2)`` fixed ``(x, y)`` points (e.g. the mean face).
        size: ``(H, W)``.
        order: as in :func:`sparse_image_warp`.
        regularization: as in :func:`sparse_image_warp`.
        boundary_points: as in :func:`sparse_image_warp`.
        padding_mode: as in :func:`sparse_image_warp`.
        dtype: dtype of the cached matrix (float32 default).
        device: device of the cache.
    """

    def __init__(
        self,
        destination: torch.Tensor,
        size: tuple[int, int],
        order: int = 1,
        regularization: float = 0.0,
        boundary_points: int = 3,
        padding_mode: str = "border",
        dtype: torch.dtype = torch.float32,
        device: Any = None,
    ) -> None:
        if padding_mode not in _PADDING_MODES:
            raise ValueError(f"padding_mode must be one of {_PADDING_MODES}, got {padding_mode!r}")
        dest = destination.detach().to(torch.float64).reshape(1, -1, 2)
        if device is None:
            device = destination.device
        dest = dest.to(device)
        h, w = int(size[0]), int(size[1])
        self.size = (h, w)
        self.order = _check_order(order)
        self.padding_mode = padding_mode
        self.num_points = dest.shape[1]
        bp = boundary_control_points(h, w, boundary_points, torch.float64, device)
        centers = torch.cat([dest, bp[None]], 1)  # (1, K', 2)
        kk = centers.shape[1]
        # columns of L^-1 for the K landmark values (boundary values are zero); solve with identity
        eye = torch.zeros(1, kk, self.num_points, dtype=torch.float64, device=device)
        eye[0, : self.num_points] = torch.eye(self.num_points, dtype=torch.float64, device=device)
        wmat, vmat, origin = solve_spline(centers, eye, self.order, regularization, check=True)
        with torch.no_grad():
            e = dense_flow_from_solution(centers, wmat, vmat, origin, h, w, self.order, torch.float64)
        self.matrix = e.reshape(h * w, self.num_points).to(dtype)
        self.destination = dest[0].to(dtype)

    def to(self, device: Any = None, dtype: torch.dtype | None = None) -> PolyharmonicWarp:
        """Move the cache (in place) and return ``self``."""
        self.matrix = self.matrix.to(device=device, dtype=dtype)
        self.destination = self.destination.to(device=device, dtype=dtype)
        return self

    @full_precision
    def flow(self, source: torch.Tensor) -> torch.Tensor:
        """Dense flow ``(B, H, W, 2)`` for source points ``(B, K, 2)``."""
        disp = self.destination.to(source.dtype) - source  # (B, K, 2)
        h, w = self.size
        out = torch.matmul(self.matrix.to(disp.dtype), disp)  # (B, H*W, 2)
        return out.view(source.shape[0], h, w, 2)

    @full_precision
    def __call__(self, image: torch.Tensor, source: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Warp ``image`` ``(B, C, H, W)`` so that ``source`` ``(B, K, 2)`` moves to the fixed points.

        Returns:
            ``(warped (B, C, H, W), flow (B, H, W, 2))``.
        """
        dt = _compute_dtype(image, source, self.matrix)
        flow = self.flow(source.to(dt))
        return warp_with_flow(image, flow, self.padding_mode), flow


@full_precision
def dense_flow_from_solution(
    centers: torch.Tensor,
    w: torch.Tensor,
    v: torch.Tensor,
    origin: torch.Tensor,
    height: int,
    width: int,
    order: int = 1,
    dtype: torch.dtype | None = None,
) -> torch.Tensor:
    """Evaluate a solved spline (:func:`solve_spline` outputs) on the pixel grid.

    Args:
        centers: ``(B, N, 2)``; w: ``(B, N, C)``; v: ``(B, 3, C)``; origin: ``(B, 1, 2)``.
        dtype: compute dtype; default float64 if ``centers`` is float64 else float32 (``w`` and
            ``v`` are float64 from the solve and are cast).

    Returns:
        ``(B, H, W, C)`` in the compute dtype.
    """
    dt = dtype if dtype is not None else _compute_dtype(centers)
    rbf = _RBFGrid.apply(centers.to(dt), w.to(dt), height, width, _check_order(order))
    xs = torch.arange(width, device=centers.device, dtype=dt)[None, :, None] - origin[:, :, 0:1].to(dt)
    ys = torch.arange(height, device=centers.device, dtype=dt)[None, :, None] - origin[:, :, 1:2].to(dt)
    vd = v.to(dt)
    # add the affine part in the channels-first layout of the kernel output (a broadcast add into a
    # channels-last view is pathologically slow on CPU), then return the (B, H, W, C) view
    ax = (xs * vd[:, None, 0]).transpose(1, 2)[:, :, None, :]  # (B, C, 1, W)
    ay = (ys * vd[:, None, 1] + vd[:, None, 2]).transpose(1, 2)[:, :, :, None]  # (B, C, H, 1)
    return (rbf.permute(0, 3, 1, 2) + ax + ay).permute(0, 2, 3, 1)


# ----------------------------------------------------------------------------------------------
# piecewise affine baseline
# ----------------------------------------------------------------------------------------------
def _locate_pixels(tris: torch.Tensor, pix: torch.Tensor, tol: float = 1e-9) -> torch.Tensor:
    """Index of a triangle containing each point (-1 if none), vectorised and chunked.

    (scipy's ``find_simplex`` builds its barycentric transforms with multi-threaded LAPACK, which can
    take ~0.2 s per triangulation when BLAS threads contend with torch's.)

    Args:
        tris: ``(T, 3, 2)`` float64 triangle vertices; pix: ``(P, 2)`` float64 points.

    Returns:
        ``(P,)`` int64.
    """
    a = tris[:, 0]
    e1 = tris[:, 1] - a
    e2 = tris[:, 2] - a
    den = e1[:, 0] * e2[:, 1] - e1[:, 1] * e2[:, 0]  # (T,)
    den = torch.where(den == 0, torch.ones_like(den), den)[:, None]
    out = torch.full((pix.shape[0],), -1, dtype=torch.long)
    step = max(1, (1 << 20) // max(1, tris.shape[0]))
    for s in range(0, pix.shape[0], step):
        e = pix[None, s : s + step] - a[:, None]  # (T, P, 2)
        l1 = (e[..., 0] * e2[:, None, 1] - e[..., 1] * e2[:, None, 0]) / den
        l2 = (e1[:, None, 0] * e[..., 1] - e1[:, None, 1] * e[..., 0]) / den
        inside = (l1 >= -tol) & (l2 >= -tol) & (l1 + l2 <= 1 + tol)  # (T, P)
        found = inside.any(0)
        first = inside.to(torch.uint8).argmax(0)
        out[s : s + step] = torch.where(found, first, torch.full_like(first, -1))
    return out


@full_precision
def piecewise_affine_warp(
    image: torch.Tensor,
    source: torch.Tensor,
    destination: torch.Tensor,
    boundary_points: int = 3,
    padding_mode: str = "border",
) -> tuple[torch.Tensor, torch.Tensor]:
    """Classic piecewise-affine warp over a Delaunay triangulation of the destination points.

    The triangulation (``scipy.spatial.Delaunay`` on detached CPU copies, one per batch element)
    is of the destination points plus the zero-flow boundary points; each pixel maps through the
    barycentric coordinates of its destination triangle to the same barycentric combination of the
    source vertices. Pixels outside the hull get zero flow. Differentiable w.r.t. image, source and
    destination (the triangle assignment itself is piecewise constant).

    Args:
        image: ``(B, C, H, W)``.
        source: ``(B, K, 2)`` ``(x, y)`` pixel coordinates.
        destination: ``(B, K, 2)`` ``(x, y)`` pixel coordinates.
        boundary_points: as in :func:`sparse_image_warp`.
        padding_mode: as in :func:`warp_with_flow`.

    Returns:
        ``(warped (B, C, H, W), flow (B, H, W, 2))`` with ``warped(p) = image(p - flow(p))``.
    """
    from scipy.spatial import Delaunay

    if image.ndim != 4:
        raise ValueError(f"image must be (B, C, H, W), got {tuple(image.shape)}")
    _check_points(source, destination)
    if not (bool(torch.isfinite(source).all()) and bool(torch.isfinite(destination).all())):
        raise SplineError("source / destination points contain NaN or Inf")  # (the hull test read them as outside)
    b, _, h, w = image.shape
    if source.shape[0] != b:
        source = source.expand(b, -1, -1)
    if destination.shape[0] != b:
        destination = destination.expand(b, -1, -1)
    dt = _compute_dtype(image, source, destination)
    src, dst = _with_boundary(source.to(dt), destination.to(dt), h, w, boundary_points)
    ys, xs = torch.meshgrid(torch.arange(h, dtype=torch.float64), torch.arange(w, dtype=torch.float64), indexing="ij")
    pix = torch.stack([xs.reshape(-1), ys.reshape(-1)], -1)  # (HW, 2)
    dst_np = dst.detach().to("cpu", torch.float64).numpy()
    idx = torch.zeros(b, h * w, 3, dtype=torch.long)
    inside = torch.zeros(b, h * w, dtype=torch.bool)
    for bi in range(b):  # scipy triangulation is per sample (CPU, detached)
        simplices = torch.from_numpy(Delaunay(dst_np[bi]).simplices.astype("int64"))
        simplex = _locate_pixels(torch.from_numpy(dst_np[bi])[simplices], pix)
        inside[bi] = simplex >= 0
        idx[bi] = simplices[simplex.clamp_min(0)]
    idx = idx.to(image.device)
    inside = inside.to(image.device)
    p = pix.to(device=image.device, dtype=dt)[None]  # (1, HW, 2)
    flat = idx.reshape(b, -1)

    def gather(pts: torch.Tensor) -> torch.Tensor:
        g = torch.gather(pts, 1, flat[..., None].expand(-1, -1, 2))
        return g.view(b, h * w, 3, 2)

    d = gather(dst)
    s = gather(src)
    e1 = d[:, :, 1] - d[:, :, 0]
    e2 = d[:, :, 2] - d[:, :, 0]
    e = p - d[:, :, 0]
    den = e1[..., 0] * e2[..., 1] - e1[..., 1] * e2[..., 0]
    den = torch.where(den.abs() > 0, den, torch.ones_like(den))
    l1 = (e[..., 0] * e2[..., 1] - e[..., 1] * e2[..., 0]) / den
    l2 = (e1[..., 0] * e[..., 1] - e1[..., 1] * e[..., 0]) / den
    l0 = 1.0 - l1 - l2
    loc = l0[..., None] * s[:, :, 0] + l1[..., None] * s[:, :, 1] + l2[..., None] * s[:, :, 2]
    flow = torch.where(inside[..., None], p - loc, torch.zeros_like(loc)).view(b, h, w, 2)
    return warp_with_flow(image, flow, padding_mode), flow
