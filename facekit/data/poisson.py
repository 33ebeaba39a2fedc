"""Gradient-domain compositing with a soft mask (Cole et al. CVPR 2017, Sec. 5, Eq. 3).

Formulation
-----------
Per channel, with foreground ``F``, background ``B`` and soft mask ``m`` in ``[0, 1]`` (1 = foreground), find the
image ``I`` minimising the over-constrained least-squares energy

    E(I) = sum_{(p, q) neighbours} (I_p - I_q - g_pq)^2 + sum_p w_p (I_p - c_p)^2

over the 4-connected pixel graph (each horizontal and vertical pair counted once), where

* target gradients ``g_pq = m_pq (F_p - F_q) + (1 - m_pq) (B_p - B_q)`` with the mask averaged on the edge,
  ``m_pq = (m_p + m_q) / 2``;
* colour targets ``c_p = m_p F_p + (1 - m_p) B_p``;
* colour weights ``w_p = background_weight * (1 - m_p) + colour_weight * m_p``.

``background_weight`` (``lambda_bg``, default 1) pins the background: where ``m = 0`` the colour term is as stiff as the
gradient terms, so a difference of colour at the face boundary decays within a pixel or two into the background.
``colour_weight`` (``lambda_fg``, default 1e-3) is small, so the face keeps its gradients but its colours shift to match
the surroundings (the point of Poisson blending); a colour offset imposed at the face boundary decays over about
``1 / sqrt(colour_weight)`` ~ 30 px into the face, so a large face is not entirely re-lit by its rim. With
``colour_weight = 0`` and ``mask = 1`` everywhere the problem only fixes ``I`` up to a constant per channel; the
solution with the mean of ``c`` (the limit of a vanishing uniform colour weight) is returned.

Boundary handling: Neumann. Pixels on the image border simply have fewer neighbours (no pair leaves the image), so
the normal equations are

    (L + diag(w)) I = D^T g + w * c

with ``L = D^T D`` the graph Laplacian of the pixel grid (degree 4, 3 on edges, 2 at corners) and ``D`` the
forward-difference operator; ``D^T g`` is the (negative) divergence of the target field.

Solver
------
:func:`composite` solves all channels at once with conjugate gradients on the stacked (block-diagonal) system,
warm-started from ``c`` and preconditioned by one geometric multigrid V-cycle: cell-centred coarsening with bilinear
prolongation ``P`` and restriction ``R = P^T`` (so the V-cycle is symmetric), one symmetric red-black Gauss-Seidel
sweep before and after the coarse correction, coarse operators ``L_c + R w`` and a dense (pseudo-)inverse on a
coarsest grid of at most 64 pixels. The Laplacian is a ``cv2.filter2D`` with ``BORDER_REPLICATE``, which is exactly
the Neumann graph Laplacian. Written here rather than taken from a library because the obvious alternatives were
measured and are slower on a 224 x 224 face (2 cores): a DCT-preconditioned CG needs 15-35 iterations at ~1-2 ms
each because ``w`` varies by three orders of magnitude between face and background, and ``scipy.sparse`` LU takes
~200-350 ms. Multigrid-CG needs 4-6 iterations to a relative residual of 1e-3 (max error ~5e-4, mean ~4e-5 on ``[0, 1]``
images). ``cv2.seamlessClone`` solves a different problem (hard mask, Dirichlet boundary, one DST) and cannot do
the soft-mask least squares.
:func:`composite_reference` solves the same problem with ``scipy.sparse.linalg.splu`` in float64.

Arrays: images ``(H, W, C)`` (``C`` in 1..4) or ``(H, W)`` float32, mask ``(H, W)`` float32 in ``[0, 1]``.
The result is not clipped (a Poisson solution may overshoot ``[0, 1]`` slightly).
"""

from __future__ import annotations

import hashlib
import logging
from collections import OrderedDict
from dataclasses import dataclass

import cv2
import numpy as np

logger = logging.getLogger(__name__)

__all__ = ["composite", "composite_reference", "face_mask", "poisson_targets"]

#: Default weight of the colour term under the background (``lambda_bg``).
BACKGROUND_WEIGHT = 1.0
#: Default weight of the colour term under the foreground (``lambda_fg``).
COLOUR_WEIGHT = 1e-3
#: Coarsest multigrid level: at most this many pixels, solved densely.
_COARSEST_PIXELS = 64


def _as_hwc(image: np.ndarray, name: str) -> np.ndarray:
    a = np.asarray(image, dtype=np.float32)
    if a.ndim == 2:
        a = a[..., None]
    if a.ndim != 3 or not 1 <= a.shape[2] <= 4:
        raise ValueError(f"{name} must be (H, W) or (H, W, C) with C in 1..4, got {a.shape}")
    return a


def _check(
    foreground: np.ndarray, background: np.ndarray, mask: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray, bool]:
    squeeze = np.ndim(foreground) == 2
    f = _as_hwc(foreground, "foreground")
    b = _as_hwc(background, "background")
    m = np.asarray(mask, dtype=np.float32)
    if f.shape != b.shape:
        raise ValueError(f"foreground {f.shape} and background {b.shape} differ")
    if m.shape != f.shape[:2]:
        raise ValueError(f"mask must be (H, W) = {f.shape[:2]}, got {m.shape}")
    return f, b, np.clip(m, 0.0, 1.0), squeeze


def poisson_targets(
    foreground: np.ndarray,
    background: np.ndarray,
    mask: np.ndarray,
    colour_weight: float = COLOUR_WEIGHT,
    background_weight: float = BACKGROUND_WEIGHT,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Right-hand side, colour targets and weights of the normal equations ``(L + diag(w)) I = rhs``.

    Args:
        foreground, background: ``(H, W, C)`` float32.
        mask: ``(H, W)`` float32 in ``[0, 1]``.

    Returns:
        ``(rhs (H, W, C), c (H, W, C), w (H, W, 1))`` float32, with ``rhs = D^T g + w * c``.
    """
    f, b, m, _ = _check(foreground, background, mask)
    m3 = m[..., None]
    mx = 0.5 * (m3[:, 1:] + m3[:, :-1])
    my = 0.5 * (m3[1:] + m3[:-1])
    d = f - b  # blend gradients and colours as b + m * (f - b): one product per term instead of two
    gx = (b[:, 1:] - b[:, :-1]) + mx * (d[:, 1:] - d[:, :-1])
    gy = (b[1:] - b[:-1]) + my * (d[1:] - d[:-1])
    c = b + m3 * d
    w = (background_weight + (colour_weight - background_weight) * m3).astype(np.float32)
    rhs = w * c
    rhs[:, 1:] += gx
    rhs[:, :-1] -= gx
    rhs[1:] += gy
    rhs[:-1] -= gy
    return rhs.astype(np.float32), c.astype(np.float32), w


# ----------------------------------------------------------------------------------------------
# multigrid-preconditioned conjugate gradients
# ----------------------------------------------------------------------------------------------
def _cv(a: np.ndarray, channels: int) -> np.ndarray:
    """cv2 drops a trailing singleton channel axis: put it back."""
    return a[..., None] if a.ndim == 2 and channels == 1 else a


# Cell-centred bilinear prolongation P (fine pixel 2i gets 3/4 of coarse i and 1/4 of coarse i - 1, fine 2i + 1 gets
# 3/4 of i and 1/4 of i + 1, clamped at the ends) is exactly cv2.resize(INTER_LINEAR) by 2 (cropped for odd sizes).
# Its exact transpose R = P^T (zero-pad to even, separable [1, 3, 3, 1] / 4 filter with BORDER_REFLECT, keep every
# other pixel) keeps the V-cycle symmetric, which conjugate gradients needs when w ~ 0 makes the coarse grids nearly
# singular (cv2.resize's area-down / linear-up pair is not adjoint and broke CG there).
_TRANSFER = np.array([0.25, 0.75, 0.75, 0.25], np.float32)


def _prolong(c: np.ndarray, h: int, w: int) -> np.ndarray:
    up = _cv(cv2.resize(c, (2 * c.shape[1], 2 * c.shape[0]), interpolation=cv2.INTER_LINEAR), c.shape[2])
    return up if up.shape[:2] == (h, w) else np.ascontiguousarray(up[:h, :w])


def _restrict(f: np.ndarray) -> np.ndarray:
    h, w = f.shape[:2]
    if h % 2 or w % 2:
        f = np.pad(f, ((0, h % 2), (0, w % 2), (0, 0)))
    out = cv2.sepFilter2D(f, -1, _TRANSFER, _TRANSFER, anchor=(1, 1), borderType=cv2.BORDER_REFLECT)
    return np.ascontiguousarray(_cv(out, f.shape[2])[0::2, 0::2])


_LAPLACIAN = np.array([[0, -1, 0], [-1, 4, -1], [0, -1, 0]], np.float32)


@dataclass
class _Level:
    """One grid of the hierarchy: operator ``L + diag(w)`` with Neumann boundaries.

    Coarse levels use ``A_c = L_c + R w``: the rediscretised operator at twice the spacing, ``L_c / 4 + avg(w)``,
    times the 4 that ``R = P^T`` (weights summing to 4) puts on the residual.
    """

    w: np.ndarray  # (h, w, C) colour weights, the same for every channel
    d_red: np.ndarray  # inverse diagonal on red pixels, 0 on black ones
    d_black: np.ndarray
    inverse: np.ndarray | None = None  # dense (pseudo-)inverse, coarsest level only

    @classmethod
    def build(cls, w: np.ndarray) -> _Level:
        h, wd, _ = w.shape
        deg = np.full((h, wd), 4.0, np.float32)
        deg[:, 0] -= 1
        deg[:, -1] -= 1
        deg[0] -= 1
        deg[-1] -= 1
        diag = deg[..., None] + w
        dinv = np.where(diag > 0, 1.0 / np.maximum(diag, 1e-30), 0.0).astype(np.float32)
        ii, jj = np.indices((h, wd))
        red = ((ii + jj) % 2 == 0)[..., None]
        return cls(w, np.where(red, dinv, 0).astype(np.float32), np.where(red, 0, dinv).astype(np.float32))

    def apply(self, x: np.ndarray) -> np.ndarray:
        out = _cv(cv2.filter2D(x, -1, _LAPLACIAN, borderType=cv2.BORDER_REPLICATE), x.shape[2])
        out += self.w * x
        return out

    def dense(self) -> np.ndarray:
        h, wd, _ = self.w.shape
        n = h * wd
        eye = np.eye(n, dtype=np.float32).reshape(n, h, wd)
        cols = [cv2.filter2D(e, -1, _LAPLACIAN, borderType=cv2.BORDER_REPLICATE).reshape(h, wd) for e in eye]
        return np.stack(cols, -1).reshape(n, n) + np.diag(self.w[..., 0].ravel())


def _hierarchy(w: np.ndarray) -> list[_Level]:
    levels = [_Level.build(w)]
    while w.shape[0] * w.shape[1] > _COARSEST_PIXELS:
        w = _restrict(w)
        levels.append(_Level.build(w))
    coarsest = levels[-1]
    # scipy's pinvh: numpy's eigh-based pinv takes ~15 ms on a 49 x 49 matrix here (thread start-up), scipy's 0.2 ms.
    # Imported here, not at the top: the module's masks (face_mask, coverage) serve normalizes that never composite,
    # and scipy.linalg was 0.25-0.54 s (min-median) of the module's import against 14-22 ms without it (helper-202)
    from scipy.linalg import pinvh

    coarsest.inverse = pinvh(coarsest.dense().astype(np.float64)).astype(np.float32)
    return levels


def _vcycle(levels: list[_Level], index: int, rhs: np.ndarray) -> np.ndarray:
    level = levels[index]
    channels = rhs.shape[2]
    if level.inverse is not None:
        return (level.inverse @ rhs.reshape(-1, channels)).reshape(rhs.shape)
    # symmetric red-black Gauss-Seidel: red, black before; black, red after (from zero, red is a scaling)
    x = rhs * level.d_red
    x += level.d_black * (rhs - level.apply(x))
    ec = _vcycle(levels, index + 1, _restrict(rhs - level.apply(x)))
    x += _prolong(ec, rhs.shape[0], rhs.shape[1])
    x += level.d_black * (rhs - level.apply(x))
    x += level.d_red * (rhs - level.apply(x))
    return x


_HIERARCHIES: OrderedDict[tuple[tuple[int, ...], int, bytes], list[_Level]] = OrderedDict()


def _cached_hierarchy(w: np.ndarray, channels: int) -> list[_Level]:
    """The multigrid hierarchy for weights ``w`` (H, W, 1), repeated over ``channels``; kept for the last few
    weight maps, since augmentation composites every morph with the same mask (a hit saves ~10 % of a solve)."""
    single = np.ascontiguousarray(np.broadcast_to(w, (*w.shape[:2], 1)), dtype=np.float32)
    key = (single.shape, channels, hashlib.blake2b(single.tobytes(), digest_size=16).digest())
    if key in _HIERARCHIES:
        _HIERARCHIES.move_to_end(key)
        return _HIERARCHIES[key]
    levels = _hierarchy(single)
    if channels > 1:  # broadcasting a (h, w, 1) array costs more than the copy
        for level in levels:
            level.w = np.ascontiguousarray(np.repeat(level.w, channels, axis=2))
            level.d_red = np.ascontiguousarray(np.repeat(level.d_red, channels, axis=2))
            level.d_black = np.ascontiguousarray(np.repeat(level.d_black, channels, axis=2))
    _HIERARCHIES[key] = levels
    while len(_HIERARCHIES) > 4:
        _HIERARCHIES.popitem(last=False)
    return levels


def _solve(rhs: np.ndarray, w: np.ndarray, x0: np.ndarray, tol: float, max_iter: int) -> np.ndarray:
    levels = _cached_hierarchy(w, rhs.shape[2])
    fine = levels[0]
    x = x0.copy()
    r = rhs - fine.apply(x)
    r0 = float(np.sqrt(np.vdot(r, r)))
    # the warm start can already be exact (e.g. mask = 1): measure progress against an absolute floor of 1e-6 RMS
    # per value so that CG never iterates on rounding noise
    floor = 1e-6 * float(np.sqrt(r.size))
    if r0 <= floor:
        return x
    r0 = max(r0, floor / tol)
    z = _vcycle(levels, 0, r)
    p = z.copy()
    rz = float(np.vdot(r, z))
    for it in range(max_iter):
        ap = fine.apply(p)
        alpha = rz / float(np.vdot(p, ap))
        x += alpha * p
        r -= alpha * ap
        rn = float(np.sqrt(np.vdot(r, r)))
        if rn <= tol * r0:
            logger.debug("composite: converged in %d iterations (relative residual %.2e)", it + 1, rn / r0)
            return x
        z_new = _vcycle(levels, 0, r)
        rz_new = float(np.vdot(r, z_new))
        beta = rz_new / rz
        z, rz = z_new, rz_new
        p *= beta
        p += z
    logger.warning("composite: no convergence in %d iterations (relative residual %.2e)", max_iter, rn / r0)
    return x


def composite(
    foreground: np.ndarray,
    background: np.ndarray,
    mask: np.ndarray,
    colour_weight: float = COLOUR_WEIGHT,
    background_weight: float = BACKGROUND_WEIGHT,
    tol: float = 1e-2,
    max_iter: int = 50,
) -> np.ndarray:
    """Paste ``foreground`` onto ``background`` in the gradient domain (see the module docstring).

    Args:
        foreground: ``(H, W, C)`` or ``(H, W)`` float32 (e.g. RGB in ``[0, 1]``).
        background: same shape.
        mask: ``(H, W)`` float32 in ``[0, 1]``, 1 where the foreground is wanted (soft edges welcome).
        colour_weight: ``lambda_fg``, weight of the colour term under the foreground (>= 0).
        background_weight: ``lambda_bg``, weight of the colour term under the background (>= 0).
        tol: stop when the residual norm has dropped by this factor from the warm start ``c``; on face crops the
            default 1e-2 leaves at most ~5e-4 of error on [0, 1] images (mean ~4e-5), 8x below one 8-bit grey
            level; on images with much fine structure (noise) the largest error reaches ~8e-3, two grey levels, so
            pass a smaller ``tol`` (and a larger ``max_iter``) where that matters.
        max_iter: conjugate-gradient iterations at most.

    Returns:
        ``(H, W, C)`` (or ``(H, W)``) float32, not clipped.
    """
    if colour_weight < 0 or background_weight < 0:
        raise ValueError("colour_weight and background_weight must be >= 0")
    f, b, m, squeeze = _check(foreground, background, mask)
    rhs, c, w = poisson_targets(f, b, m, colour_weight, background_weight)
    out = _solve(rhs, w, c, tol, max_iter)
    if not np.any(w):
        # only gradients constrained: pick the constant (per channel) that matches the mean colour target
        out += c.mean(axis=(0, 1)) - out.mean(axis=(0, 1))
    return out[..., 0] if squeeze else out


def composite_reference(
    foreground: np.ndarray,
    background: np.ndarray,
    mask: np.ndarray,
    colour_weight: float = COLOUR_WEIGHT,
    background_weight: float = BACKGROUND_WEIGHT,
) -> np.ndarray:
    """The same least-squares problem as :func:`composite`, solved directly (``scipy.sparse.linalg.splu``, float64).

    Slow (~0.4 s for 224 x 224); for tests and benchmarks. Shapes as :func:`composite`.
    """
    import scipy.sparse as sp
    from scipy.sparse.linalg import splu

    f, b, m, squeeze = _check(foreground, background, mask)
    f64, b64, m64 = f.astype(np.float64), b.astype(np.float64), m.astype(np.float64)[..., None]
    h, wd, channels = f.shape
    idx = np.arange(h * wd).reshape(h, wd)
    plus = np.concatenate([idx[:, 1:].ravel(), idx[1:].ravel()])
    minus = np.concatenate([idx[:, :-1].ravel(), idx[:-1].ravel()])
    ne = plus.size
    rows = np.concatenate([np.arange(ne), np.arange(ne)])
    diff = sp.csr_matrix((np.r_[np.ones(ne), -np.ones(ne)], (rows, np.r_[plus, minus])), shape=(ne, h * wd))
    m_edge = 0.5 * (m64.reshape(-1)[plus] + m64.reshape(-1)[minus])[:, None]
    fl, bl = f64.reshape(-1, channels), b64.reshape(-1, channels)
    g = m_edge * (fl[plus] - fl[minus]) + (1 - m_edge) * (bl[plus] - bl[minus])
    c = (m64 * f64 + (1 - m64) * b64).reshape(-1, channels)
    w = (background_weight * (1 - m64) + colour_weight * m64).reshape(-1)
    if not np.any(w):
        w = np.full_like(w, 1e-9)  # the limit of a vanishing uniform colour weight: mean(I) = mean(c)
    system = (diff.T @ diff + sp.diags(w)).tocsc()
    out = splu(system).solve(diff.T @ g + w[:, None] * c)
    out = out.reshape(h, wd, channels).astype(np.float32)
    return out[..., 0] if squeeze else out


#: Fill resolution of :func:`face_mask` per pixel side: a face-sized hull's area within ~0.4 %. OpenCV's fill also
#: takes the fine pixels whose centres lie on its right and bottom edges, so those edges sit up to 1/8 px out (a
#: face-sized hull: area +0.2 %, centroid +0.06 px), well under the masks' blur of 2 px or more.
MASK_SUPERSAMPLING = 8


def coverage(polygon: np.ndarray, height: int, width: int) -> np.ndarray:
    """(height, width) float32 in [0, 1]: how much of each pixel the (K, 2) ``polygon`` (x, y; any shape) covers,
    from a fill at :data:`MASK_SUPERSAMPLING` x the resolution averaged back (OpenCV anti-aliases 8-bit canvases
    only: a float canvas with LINE_AA is a hard 0/1 mask, too large, its edge moving in whole pixels). Pixel centres
    are at integers: x maps to x * f + (f - 1) / 2 on the fine grid."""
    f, shift = MASK_SUPERSAMPLING, 4  # fillPoly takes fixed-point coordinates with `shift` fractional bits
    points = np.asarray(polygon, np.float64).reshape(-1, 2)
    fixed = np.round((points * f + (f - 1) / 2) * (1 << shift)).astype(np.int32)
    fine = np.zeros((height * f, width * f), np.uint8)
    cv2.fillPoly(fine, [fixed], 255, lineType=cv2.LINE_8, shift=shift)
    return np.asarray(cv2.resize(fine, (width, height), interpolation=cv2.INTER_AREA), np.float32) / 255.0


def face_mask(landmarks: np.ndarray, height: int, width: int, blur_px: float) -> np.ndarray:
    """Soft face mask: the convex hull of ``landmarks`` filled with 1, blurred by a Gaussian of sigma ``blur_px``.

    Args:
        landmarks: ``(K, 2)`` ``(x, y)`` pixels (sub-pixel positions are honoured).
        height, width: mask size.
        blur_px: Gaussian sigma in pixels (0: no blur; edge pixels still hold their coverage).

    Returns:
        ``(height, width)`` float32 in ``[0, 1]``.
    """
    # (+ 0.0: -0.0 becomes 0.0; OpenCV's convexHull gave None for points that coincide but for a -0.0, which
    # `make fuzz` drew: helper-202. A None for any other reason keeps the points themselves.)
    pts = np.asarray(landmarks, dtype=np.float64).reshape(-1, 2) + 0.0
    hull = cv2.convexHull(pts.astype(np.float32))
    mask = coverage(pts if hull is None else hull.reshape(-1, 2), height, width)
    if blur_px > 0:
        mask = cv2.GaussianBlur(mask, (0, 0), sigmaX=float(blur_px), borderType=cv2.BORDER_CONSTANT)
    return np.clip(mask, 0.0, 1.0)
