"""Tests for facekit.warp (polyharmonic spline warp, piecewise-affine baseline)."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from facekit import warp as fw

scipy_interpolate = pytest.importorskip("scipy.interpolate")

KERNELS = {1: "linear", 2: "thin_plate_spline", 3: "cubic"}
H, W = 48, 64


def _points(n: int, seed: int, dtype: torch.dtype = torch.float64, batch: int = 1) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    p = torch.rand(batch, n, 2, generator=g, dtype=torch.float64)
    p = p * torch.tensor([W - 1.0, H - 1.0], dtype=torch.float64) * 0.8 + torch.tensor([0.1 * W, 0.1 * H])
    return p.to(dtype)


def _scipy_flow(src: torch.Tensor, dst: torch.Tensor, order: int, boundary: int = 3) -> np.ndarray:
    s, d = fw._with_boundary(src.double(), dst.double(), H, W, boundary)
    rbf = scipy_interpolate.RBFInterpolator(d[0].numpy(), (d - s)[0].numpy(), kernel=KERNELS[order], degree=1)
    ys, xs = np.mgrid[0:H, 0:W]
    return rbf(np.stack([xs.ravel(), ys.ravel()], -1).astype(np.float64)).reshape(H, W, 2)


def _naive_flow(
    src: torch.Tensor, dst: torch.Tensor, h: int, w: int, order: int = 1, boundary: int = 3
) -> torch.Tensor:
    """Straightforward autograd reference (float64)."""
    s, d = fw._with_boundary(src, dst, h, w, boundary)
    b, n, _ = d.shape
    a = fw._phi_autograd((d[:, :, None] - d[:, None]).square().sum(-1), order)
    p = torch.cat([d, torch.ones_like(d[..., :1])], -1)
    lhs = torch.cat([torch.cat([a, p], 2), torch.cat([p.transpose(1, 2), p.new_zeros(b, 3, 3)], 2)], 1)
    sol = torch.linalg.solve(lhs, torch.cat([d - s, p.new_zeros(b, 3, 2)], 1))
    ys, xs = torch.meshgrid(torch.arange(h, dtype=d.dtype), torch.arange(w, dtype=d.dtype), indexing="ij")
    q = torch.stack([xs.reshape(-1), ys.reshape(-1)], -1).expand(b, -1, -1)
    k = fw._phi_autograd((q[:, :, None] - d[:, None]).square().sum(-1), order)
    flow = k @ sol[:, :n] + torch.cat([q, torch.ones_like(q[..., :1])], -1) @ sol[:, n:]
    return flow.view(b, h, w, 2)


def _naive_warp(image: torch.Tensor, src: torch.Tensor, dst: torch.Tensor, order: int = 1) -> torch.Tensor:
    h, w = image.shape[-2:]
    flow = _naive_flow(src, dst, h, w, order)
    ys, xs = torch.meshgrid(torch.arange(h, dtype=image.dtype), torch.arange(w, dtype=image.dtype), indexing="ij")
    loc = torch.stack([xs, ys], -1) - flow
    grid = torch.stack([2 * loc[..., 0] / (w - 1) - 1, 2 * loc[..., 1] / (h - 1) - 1], -1)
    return F.grid_sample(image, grid, padding_mode="border", align_corners=True)


# ----------------------------------------------------------------------------------------------
# accuracy vs scipy
# ----------------------------------------------------------------------------------------------
@pytest.mark.parametrize("order", [1, 2, 3])
@pytest.mark.parametrize("dtype,tol", [(torch.float64, 1e-6), (torch.float32, 1e-3)])
def test_flow_matches_scipy(order: int, dtype: torch.dtype, tol: float) -> None:
    src = _points(20, seed=order)
    dst = src + 3.0 * torch.randn(src.shape, generator=torch.Generator().manual_seed(7), dtype=torch.float64)
    img = torch.rand(1, 3, H, W, dtype=dtype)
    _, flow = fw.sparse_image_warp(img, src.to(dtype), dst.to(dtype), order=order)
    ref = _scipy_flow(src, dst, order)
    assert flow.shape == (1, H, W, 2)
    err = np.abs(flow[0].double().numpy() - ref).max()
    assert err < tol, err


@pytest.mark.parametrize("order", [1, 2, 3])
def test_near_coincident_points_float32(order: int) -> None:
    src = _points(20, seed=11)
    src[0, 1] = src[0, 0] + torch.tensor([0.01, 0.0], dtype=torch.float64)
    dst = src + 3.0 * torch.randn(src.shape, generator=torch.Generator().manual_seed(3), dtype=torch.float64)
    dst[0, 1] = dst[0, 0] + torch.tensor([0.0, 0.01], dtype=torch.float64)
    img = torch.rand(1, 3, H, W)
    _, flow = fw.sparse_image_warp(img, src.float(), dst.float(), order=order)
    ref = _scipy_flow(src.float().double(), dst.float().double(), order)
    err = np.abs(flow[0].double().numpy() - ref).max()
    assert err < 1e-3, err


def test_near_coincident_points_float32_large_image() -> None:
    # 0.01 px apart with different displacements: weights ~1e3 cancel; float32 evaluation alone
    # would be ~0.06 px off at 224 px, the adaptive float64 fallback keeps it exact
    size = 224
    g = torch.Generator().manual_seed(0)
    src = torch.rand(1, 30, 2, generator=g, dtype=torch.float64) * 150 + 37
    dst = src + 3.0 * torch.randn(src.shape, generator=g, dtype=torch.float64)
    dst[0, 1] = dst[0, 0] + torch.tensor([0.01, 0.0], dtype=torch.float64)
    src32, dst32 = src.float(), dst.float()
    _, flow = fw.sparse_image_warp(torch.rand(1, 1, size, size), src32, dst32)
    s, d = fw._with_boundary(src32.double(), dst32.double(), size, size, 3)
    rbf = scipy_interpolate.RBFInterpolator(d[0].numpy(), (d - s)[0].numpy(), kernel="linear", degree=1)
    ys, xs = np.mgrid[0:size:3, 0:size:3]
    ref = rbf(np.stack([xs.ravel(), ys.ravel()], -1).astype(np.float64)).reshape(*xs.shape, 2)
    err = np.abs(flow[0, ::3, ::3].double().numpy() - ref).max()
    assert err < 1e-3, err


# ----------------------------------------------------------------------------------------------
# interpolate_spline
# ----------------------------------------------------------------------------------------------
@pytest.mark.parametrize("order", [1, 2, 3, 4])
def test_interpolate_reproduces_values_and_affine(order: int) -> None:
    c = _points(15, seed=5, batch=2)
    vals = torch.randn(2, 15, 3, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    out = fw.interpolate_spline(c, vals, c, order=order)
    torch.testing.assert_close(out, vals, atol=1e-7, rtol=0)
    # affine functions are reproduced exactly everywhere
    a = torch.tensor([[0.3, -1.2], [2.0, 0.5]], dtype=torch.float64)
    aff = c @ a + torch.tensor([1.0, -4.0], dtype=torch.float64)
    q = _points(40, seed=9, batch=2)
    out = fw.interpolate_spline(c, aff, q, order=order)
    torch.testing.assert_close(out, q @ a + torch.tensor([1.0, -4.0], dtype=torch.float64), atol=1e-7, rtol=0)


def test_interpolate_matches_scipy_and_regularization_convention() -> None:
    c = _points(25, seed=2)
    vals = torch.randn(1, 25, 2, dtype=torch.float64, generator=torch.Generator().manual_seed(2))
    q = _points(50, seed=3)
    for order, kern in KERNELS.items():
        ref = scipy_interpolate.RBFInterpolator(c[0].numpy(), vals[0].numpy(), kernel=kern, degree=1)(q[0].numpy())
        out = fw.interpolate_spline(c, vals, q, order=order)
        np.testing.assert_allclose(out[0].numpy(), ref, atol=1e-8)
        # documented: our regularization is scipy's smoothing, for every order
        s = 0.5
        ref_s = scipy_interpolate.RBFInterpolator(c[0].numpy(), vals[0].numpy(), kernel=kern, degree=1, smoothing=s)(
            q[0].numpy()
        )
        out_s = fw.interpolate_spline(c, vals, q, order=order, regularization=s)
        np.testing.assert_allclose(out_s[0].numpy(), ref_s, atol=1e-8)
        assert np.abs(ref_s - ref).max() > 1e-4  # smoothing actually changed the result


def test_smoothing_sign_matches_scipy_kernels_and_negative_is_refused() -> None:
    # scipy: linear -r, thin_plate_spline r^2 log r, cubic r^3, quintic -r^5
    assert [fw.smoothing_sign(k) for k in (1, 2, 3, 5)] == [-1.0, 1.0, 1.0, -1.0]
    c = _points(10, seed=4)
    vals = torch.randn(1, 10, 1, dtype=torch.float64)
    with pytest.raises(ValueError, match=">= 0"):
        fw.interpolate_spline(c, vals, c, regularization=-0.1)
    # Smoothing pulls the fit towards the affine part: more smoothing, further from the data at the points.
    errors = [
        (fw.interpolate_spline(c, vals, c, regularization=s) - vals).abs().max().item() for s in (0.0, 1.0, 100.0)
    ]
    assert errors[0] < 1e-9 < errors[1] < errors[2]


def test_interpolate_query_gradients() -> None:
    c = _points(8, seed=4).requires_grad_()
    vals = torch.randn(1, 8, 2, dtype=torch.float64, requires_grad=True)
    q = _points(5, seed=8).requires_grad_()
    for order in (1, 2, 3):
        assert torch.autograd.gradcheck(
            lambda c, v, q, order=order: fw.interpolate_spline(c, v, q, order=order), (c, vals, q)
        )


# ----------------------------------------------------------------------------------------------
# warp semantics
# ----------------------------------------------------------------------------------------------
def test_pure_translation_translates_image() -> None:
    img = torch.rand(2, 3, H, W, dtype=torch.float64)
    src = _points(10, seed=1, batch=2)
    shift = torch.tensor([3.0, -2.0], dtype=torch.float64)
    out, flow = fw.sparse_image_warp(img, src, src + shift, boundary_points=0, padding_mode="zeros")
    torch.testing.assert_close(flow, shift.expand(2, H, W, 2), atol=1e-9, rtol=0)
    # content at p moves to p + shift: out[y, x] = img[y + 2, x - 3]
    torch.testing.assert_close(out[:, :, : H - 2, 3:], img[:, :, 2:, : W - 3], atol=1e-9, rtol=0)
    assert out[:, :, :, :3].abs().max() < 1e-9  # sampled outside -> zeros padding


def test_landmark_content_moves_to_destination() -> None:
    img = torch.zeros(1, 1, H, W, dtype=torch.float64)
    img[0, 0, 20, 30] = 1.0  # bright pixel at (x=30, y=20)
    src = torch.tensor([[[30.0, 20.0], [15.0, 10.0], [50.0, 35.0], [12.0, 40.0]]], dtype=torch.float64)
    dst = src.clone()
    dst[0, 0] = torch.tensor([34.0, 23.0])
    out, _ = fw.sparse_image_warp(img, src, dst)
    assert out[0, 0, 23, 34] == pytest.approx(1.0, abs=1e-9)
    assert out[0, 0, 20, 30] < 0.5


def test_identity_when_source_equals_destination() -> None:
    img = torch.rand(1, 3, H, W)
    src = _points(12, seed=3, dtype=torch.float32)
    out, flow = fw.sparse_image_warp(img, src, src)
    assert flow.abs().max() < 1e-5
    torch.testing.assert_close(out, img, atol=1e-5, rtol=0)


@pytest.mark.parametrize("warp", [fw.sparse_image_warp, fw.piecewise_affine_warp])
def test_points_that_do_not_pair_or_are_not_finite_are_refused(warp: Any) -> None:
    """Source and destination of other point counts, or a source point that is NaN, are refused in one line (before:
    a torch size error deep inside, and piecewise-affine warped through the wrong pairs; a NaN source gave a finite,
    wrong image without a word)."""
    img = torch.rand(1, 3, H, W)
    src = _points(6, seed=1, dtype=torch.float32)
    with pytest.raises(ValueError, match=r"same K, got \(1, 7, 2\) and \(1, 6, 2\)"):
        warp(img, _points(7, seed=2, dtype=torch.float32), src)
    with pytest.raises(ValueError, match="same K"):
        warp(img, src, torch.cat([src, src[..., :1]], -1))  # (x, y, ?) destination
    broken = src.clone()
    broken[0, 2, 0] = float("nan")
    with pytest.raises(fw.SplineError, match="NaN or Inf"):
        warp(img, broken, src + 1.0)


def test_padding_modes_and_bad_mode() -> None:
    img = torch.rand(1, 1, H, W)
    src = _points(6, seed=1, dtype=torch.float32)
    shift = torch.tensor([5.0, 0.0])
    border, _ = fw.sparse_image_warp(img, src, src + shift, boundary_points=0, padding_mode="border")
    zeros, _ = fw.sparse_image_warp(img, src, src + shift, boundary_points=0, padding_mode="zeros")
    torch.testing.assert_close(border[..., :5], img[..., :1].expand(-1, -1, -1, 5), atol=1e-5, rtol=0)
    assert zeros[..., :4].abs().max() == 0
    with pytest.raises(ValueError, match="padding_mode"):
        fw.sparse_image_warp(img, src, src, padding_mode="wrap")


def _tfa_boundary_locations(height: int, width: int, num_boundary_points: int) -> set[tuple[float, float]]:
    """tfa's sparse_image_warp: ``_get_boundary_locations(h, w, num_boundary_points - 1)``, which takes
    ``linspace(0, size - 1, points_per_edge + 2)`` along each axis and keeps the grid points on the border; as
    (x, y)."""
    per_edge = num_boundary_points - 1
    ys, xs = np.meshgrid(
        np.linspace(0, height - 1, per_edge + 2), np.linspace(0, width - 1, per_edge + 2), indexing="ij"
    )
    border = (xs == 0) | (xs == width - 1) | (ys == 0) | (ys == height - 1)
    return {(round(float(x), 9), round(float(y), 9)) for x, y in zip(xs[border], ys[border], strict=True)}


@pytest.mark.parametrize("n", [1, 2, 3, 5])
def test_boundary_points_are_tfas_for_the_same_number(n: int) -> None:
    """Before: n gave 4n + 4 points (n inside each edge + corners), tfa's n gives 4n: ported code warped otherwise."""
    ours = fw.boundary_control_points(H, W, n, torch.float64)
    assert len(ours) == 4 * n
    assert {(round(x, 9), round(y, 9)) for x, y in ours.tolist()} == _tfa_boundary_locations(H, W, n)


def test_model_files_from_before_the_switch_keep_their_warp() -> None:
    old = fw.tfa_boundary_points({"warper_params": {"boundary_points": 2, "regularization": 0.01}})["warper_params"]
    assert old == {"boundary_points": 3, "regularization": 0.01}
    new = {"warper_params": {"boundary_points": 2}, fw.BOUNDARY_CONVENTION_KEY: "tfa"}
    assert fw.tfa_boundary_points(new)["warper_params"] == {"boundary_points": 2}
    assert fw.tfa_boundary_points({"warper_params": {"boundary_points": 0}})["warper_params"] == {"boundary_points": 0}


def test_boundary_points_layout() -> None:
    bp = fw.boundary_control_points(H, W, 3)
    assert bp.shape == (12, 2)
    on_edge = (bp[:, 0] == 0) | (bp[:, 0] == W - 1) | (bp[:, 1] == 0) | (bp[:, 1] == H - 1)
    assert bool(on_edge.all())
    assert len({tuple(p) for p in bp.tolist()}) == 12
    assert fw.boundary_control_points(H, W, 0).shape == (0, 2)


# ----------------------------------------------------------------------------------------------
# gradients
# ----------------------------------------------------------------------------------------------
def test_gradcheck_image_source_destination() -> None:
    h, w = 7, 9
    g = torch.Generator().manual_seed(0)
    img = torch.rand(2, 1, h, w, dtype=torch.float64, generator=g).requires_grad_()
    src = torch.rand(2, 4, 2, dtype=torch.float64, generator=g) * torch.tensor([w - 3.0, h - 3.0]) + 1.3
    dst = (src + 0.7 * torch.randn(src.shape, dtype=torch.float64, generator=g)).requires_grad_()
    src.requires_grad_()
    for order, fast in ((1, False), (2, True), (3, True)):
        assert torch.autograd.gradcheck(
            lambda i, s, d, order=order: fw.sparse_image_warp(i, s, d, order=order, boundary_points=1)[0],
            (img, src, dst),
            atol=1e-6,
            fast_mode=fast,
        )


@pytest.mark.parametrize("order", [1, 2, 3])
def test_custom_gradients_match_naive_autograd(order: int) -> None:
    h, w = 20, 24
    g = torch.Generator().manual_seed(1)
    img = torch.rand(3, 3, h, w, dtype=torch.float64, generator=g)
    src = torch.rand(3, 7, 2, dtype=torch.float64, generator=g) * torch.tensor([w - 1.0, h - 1.0])
    dst = src + 2.0 * torch.randn(src.shape, dtype=torch.float64, generator=g)
    weight = torch.randn(3, 3, h, w, dtype=torch.float64, generator=g)
    grads = []
    for fn in (
        lambda i, s, d: fw.sparse_image_warp(i, s, d, order=order)[0],
        lambda i, s, d: _naive_warp(i, s, d, order),
    ):
        ins = [t.clone().requires_grad_() for t in (img, src, dst)]
        out = fn(*ins)
        grads.append(torch.autograd.grad((out * weight).sum(), ins))
        grads[-1] = (*grads[-1], out.detach())
    for a, b in zip(grads[0], grads[1], strict=True):
        torch.testing.assert_close(a, b, atol=1e-9, rtol=1e-7)


def test_chunking_does_not_change_result(monkeypatch: pytest.MonkeyPatch) -> None:
    c = _points(9, seed=2, batch=2).requires_grad_()
    vals = torch.randn(2, 9, 2, dtype=torch.float64)
    out1 = fw.dense_flow(c, vals, H, W)
    g1 = torch.autograd.grad(out1.square().sum(), c)[0]
    monkeypatch.setattr(fw, "CHUNK_ELEMENTS", 1000)
    out2 = fw.dense_flow(c, vals, H, W)
    g2 = torch.autograd.grad(out2.square().sum(), c)[0]
    torch.testing.assert_close(out1, out2, atol=1e-10, rtol=0)
    torch.testing.assert_close(g1, g2, atol=1e-8, rtol=1e-10)


# ----------------------------------------------------------------------------------------------
# dtypes, batches, degenerate inputs
# ----------------------------------------------------------------------------------------------
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_half_precision_inputs(dtype: torch.dtype) -> None:
    img = torch.rand(2, 3, H, W)
    src = _points(20, seed=4, dtype=torch.float32, batch=2)
    dst = src + 3.0 * torch.randn(src.shape, generator=torch.Generator().manual_seed(0))
    ref, ref_flow = fw.sparse_image_warp(img, src, dst)
    i, s, d = (t.to(dtype).requires_grad_() for t in (img, src, dst))
    out, flow = fw.sparse_image_warp(i, s, d)
    assert out.dtype == dtype
    assert torch.isfinite(out.float()).all() and torch.isfinite(flow).all()
    # difference comes from rounding the landmarks to half precision (~0.06 px at 40 px in bf16)
    atol = 0.05 if dtype == torch.float16 else 0.3
    assert (flow.float() - ref_flow).abs().max() < atol * 4
    assert (out.float() - ref).abs().mean() < atol
    out.float().sum().backward()
    for t in (i, s, d):
        assert t.grad is not None and torch.isfinite(t.grad.float()).all()


def test_batch_consistency_and_shared_destination() -> None:
    img = torch.rand(4, 3, H, W, dtype=torch.float64)
    src = _points(10, seed=6, batch=4)
    dst = src + 2.0 * torch.randn(src.shape, dtype=torch.float64, generator=torch.Generator().manual_seed(5))
    out, flow = fw.sparse_image_warp(img, src, dst)
    for b in range(4):
        o, f = fw.sparse_image_warp(img[b : b + 1], src[b : b + 1], dst[b : b + 1])
        torch.testing.assert_close(o, out[b : b + 1], atol=1e-10, rtol=0)
        torch.testing.assert_close(f, flow[b : b + 1], atol=1e-10, rtol=0)
    # shared destination (batch 1) == explicitly expanded destination
    d1 = dst[:1]
    o_shared, f_shared = fw.sparse_image_warp(img, src, d1)
    o_exp, f_exp = fw.sparse_image_warp(img, src, d1.expand(4, -1, -1))
    torch.testing.assert_close(f_shared, f_exp, atol=1e-10, rtol=0)
    torch.testing.assert_close(o_shared, o_exp, atol=1e-10, rtol=0)


def test_coincident_points_raise_or_regularise() -> None:
    src = _points(10, seed=1)
    src[0, 7] = src[0, 2]
    dst = src.clone()
    img = torch.rand(1, 1, H, W, dtype=torch.float64)
    with pytest.raises(fw.SplineError, match=r"centres 2 and 7 of batch element 0 coincide"):
        fw.sparse_image_warp(img, src, dst)
    assert issubclass(fw.SplineError, ValueError)
    # documented: a regularised system is well defined
    # constants lie in the polynomial part, so they are reproduced exactly even when regularised
    out, flow = fw.sparse_image_warp(img, src, dst + 1.0, regularization=1e-3, boundary_points=0)
    assert torch.isfinite(flow).all()
    assert (flow - 1.0).abs().max() < 1e-9
    vals = torch.randn(1, 10, 1, dtype=torch.float64)
    out = fw.interpolate_spline(dst, vals, dst, regularization=1e-3)
    assert torch.isfinite(out).all() and (out - vals).abs().max() > 1e-6  # smoothed, not interpolated


def test_collinear_and_too_few_points_raise() -> None:
    t = torch.linspace(0, 1, 6, dtype=torch.float64)
    line = torch.stack([5 + 40 * t, 3 + 20 * t], -1)[None]
    vals = torch.randn(1, 6, 2, dtype=torch.float64)
    with pytest.raises(fw.SplineError, match="collinear"):
        fw.interpolate_spline(line, vals, line)
    with pytest.raises(fw.SplineError, match="collinear"):
        fw.interpolate_spline(line, vals, line, regularization=0.1)
    with pytest.raises(fw.SplineError, match=">= 3"):
        fw.interpolate_spline(line[:, :2], vals[:, :2], line)
    # collinear landmarks are fine once the boundary points are added
    img = torch.rand(1, 1, H, W, dtype=torch.float64)
    _, flow = fw.sparse_image_warp(img, line, line + 1.0)
    assert torch.isfinite(flow).all()


# ----------------------------------------------------------------------------------------------
# cached warp
# ----------------------------------------------------------------------------------------------
def test_polyharmonic_warp_matches_sparse_image_warp() -> None:
    dst = _points(12, seed=2)
    src = dst + 2.0 * torch.randn(3, 12, 2, dtype=torch.float64, generator=torch.Generator().manual_seed(4))
    img = torch.rand(3, 3, H, W, dtype=torch.float64)
    pw = fw.PolyharmonicWarp(dst, (H, W), dtype=torch.float64)
    out, flow = pw(img, src)
    ref, ref_flow = fw.sparse_image_warp(img, src, dst)
    torch.testing.assert_close(flow, ref_flow, atol=1e-8, rtol=0)
    torch.testing.assert_close(out, ref, atol=1e-8, rtol=0)
    src.requires_grad_()
    g = torch.autograd.grad(pw(img, src)[0].sum(), src)[0]
    g_ref = torch.autograd.grad(fw.sparse_image_warp(img, src, dst)[0].sum(), src)[0]
    torch.testing.assert_close(g, g_ref, atol=1e-8, rtol=1e-6)


# ----------------------------------------------------------------------------------------------
# piecewise affine
# ----------------------------------------------------------------------------------------------
def test_piecewise_affine_identity() -> None:
    img = torch.rand(2, 3, H, W, dtype=torch.float64)
    src = _points(15, seed=1, batch=2)
    out, flow = fw.piecewise_affine_warp(img, src, src)
    assert flow.shape == (2, H, W, 2)
    assert flow.abs().max() < 1e-9
    torch.testing.assert_close(out, img, atol=1e-9, rtol=0)


def test_piecewise_affine_moves_landmark_neighbourhood() -> None:
    img = torch.zeros(1, 1, H, W, dtype=torch.float64)
    img[0, 0, 18:23, 28:33] = 1.0  # 5x5 block centred at (30, 20)
    src = torch.tensor([[[30.0, 20.0], [20.0, 12.0], [42.0, 12.0], [20.0, 30.0], [42.0, 30.0]]], dtype=torch.float64)
    dst = src.clone()
    dst[0, 0] += torch.tensor([3.0, 2.0], dtype=torch.float64)
    out, flow = fw.piecewise_affine_warp(img, src, dst)
    assert out[0, 0, 22, 33] == pytest.approx(1.0, abs=1e-9)  # centre moved by (+3, +2)
    torch.testing.assert_close(flow[0, 22, 33], torch.tensor([3.0, 2.0], dtype=torch.float64))
    assert flow[0, 0, 0].abs().max() == 0 and flow[0, H - 1, W - 1].abs().max() == 0
    assert out[0, 0, 20, 30] < 1.0


def test_piecewise_affine_gradients() -> None:
    h, w = 8, 9
    g = torch.Generator().manual_seed(3)
    img = torch.rand(1, 1, h, w, dtype=torch.float64, generator=g).requires_grad_()
    src = torch.tensor([[[0.53, 0.41], [7.62, 0.73], [7.31, 6.64], [0.81, 6.23], [4.13, 3.37]]], dtype=torch.float64)
    dst = (src + torch.tensor([0.17, -0.23], dtype=torch.float64)).requires_grad_()
    src.requires_grad_()
    assert torch.autograd.gradcheck(
        lambda i, s, d: fw.piecewise_affine_warp(i, s, d, boundary_points=0)[0], (img, src, dst)
    )


def test_the_warp_keeps_its_precision_under_a_bf16_autocast() -> None:
    """Before: under train.precision bf16 (recipes/paper.yaml) autocast ran the spline's matmuls in bf16 and the
    decoder cast its points to the texture's bf16: flows were off by up to ~6 px at 224 px."""
    from facekit.data.augment import procedural_landmarks
    from facekit.decoder import DECODER_WARP_REGULARIZATION, PaperDecoder
    from facekit.decoder_params import DecoderParams

    size = 224
    mean = torch.tensor(procedural_landmarks(size), dtype=torch.float32)[None].expand(2, -1, -1)
    moved = mean + 3 * torch.randn(mean.shape, generator=torch.Generator().manual_seed(1))
    texture = torch.rand(2, 3, size, size)
    exact = fw.sparse_image_warp(
        texture.double(), mean.double(), moved.double(), regularization=DECODER_WARP_REGULARIZATION
    )[1]
    for dtype in (torch.bfloat16, torch.float16):
        with torch.autocast("cpu", dtype=dtype):
            _, flow = fw.sparse_image_warp(texture, mean, moved, regularization=DECODER_WARP_REGULARIZATION)
        assert flow.dtype == torch.float32 and (flow.double() - exact).abs().max() < 1e-3
    decoder = PaperDecoder(DecoderParams(image_size=56, channels=16, hidden=16, feature_size=8))
    seen: list[torch.dtype] = []
    warp = decoder.warp

    def recording(texture: torch.Tensor, source: torch.Tensor, destination: torch.Tensor) -> tuple:
        seen.extend([source.dtype, destination.dtype])
        return warp(texture, source, destination)

    decoder.warp = recording  # type: ignore[method-assign]
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = decoder.decode(torch.randn(2, 8))
    assert seen == [torch.float32, torch.float32] and torch.isfinite(out.image.float()).all()


def test_the_point_evaluator_falls_back_to_float64_where_float32_cancels() -> None:
    """Before: only the grid evaluator had the float64 fallback; two centres 0.01 px apart with different values
    (weights summing to ~7,700) put interpolate_spline 0.3 px off in float32."""
    rbf = pytest.importorskip("scipy.interpolate").RBFInterpolator
    g = torch.Generator().manual_seed(0)
    centres = torch.rand(1, 30, 2, generator=g, dtype=torch.float64) * 150 + 37
    values = 3.0 * torch.randn(centres.shape, generator=g, dtype=torch.float64)
    centres[0, 1] = centres[0, 0] + torch.tensor([0.01, 0.0], dtype=torch.float64)
    centres, values = centres.float().double(), values.float().double()
    ys, xs = np.mgrid[0:224:3, 0:224:3]
    queries = np.stack([xs.ravel(), ys.ravel()], -1).astype(np.float64)
    exact = rbf(centres[0].numpy(), values[0].numpy(), kernel="linear", degree=1)(queries)
    got = fw.interpolate_spline(centres.float(), values.float(), torch.tensor(queries, dtype=torch.float32)[None])
    assert got.dtype == torch.float32 and np.abs(got[0].double().numpy() - exact).max() < 1e-3
    w, v, origin = fw.solve_spline(centres.float(), values.float())
    direct = fw.evaluate_spline(torch.tensor(queries, dtype=torch.float32)[None], centres.float(), w, v, origin)
    assert direct.dtype == torch.float32  # float32 in, float32 out, whatever precision it ran in
