"""Properties of the core geometry and compositing (hypothesis): the spline warp, the paper alignment and the
gradient-domain composite keep the invariants the method relies on for every input drawn, not only the examples in
tests/unit. `make test` runs the "ci" profile (seconds); for a longer search run one property under the "fuzz" profile,
e.g. `FACEKIT_FUZZ_PROFILE=fuzz timeout 120 pytest tests/fuzz/test_geometry.py -k similarity`."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from hypothesis import assume, given
from hypothesis import strategies as st

from facekit import warp as fw
from facekit.align import align_paper, eye_centres, paper_eye_targets
from facekit.data.augment import procedural_landmarks
from facekit.data.poisson import composite, composite_reference, face_mask

H, W = 25, 31
ORDERS = st.sampled_from([1, 2, 3])


def _grid(h: int, w: int) -> torch.Tensor:
    ys, xs = torch.meshgrid(torch.arange(h, dtype=torch.float64), torch.arange(w, dtype=torch.float64), indexing="ij")
    return torch.stack([xs, ys], -1)


@st.composite
def _landmarks(draw: st.DrawFn, count: tuple[int, int] = (3, 9)) -> torch.Tensor:
    """(1, K, 2) float64 points inside the image, at least 0.5 px apart and not all on one line."""
    k = draw(st.integers(*count))
    xs = draw(st.lists(st.floats(2.0, W - 3.0), min_size=k, max_size=k))
    ys = draw(st.lists(st.floats(2.0, H - 3.0), min_size=k, max_size=k))
    points = torch.tensor([xs, ys], dtype=torch.float64).T
    gaps = torch.cdist(points, points) + torch.eye(k, dtype=torch.float64) * 1e9
    assume(float(gaps.min()) > 0.5)
    spread = torch.linalg.svdvals(points - points.mean(0))
    assume(float(spread[1]) > 0.5)
    return points[None]


@given(points=_landmarks(), order=ORDERS, boundary=st.sampled_from([0, 1, 3]))
def test_the_warp_to_the_same_points_is_the_identity(points: torch.Tensor, order: int, boundary: int) -> None:
    image = torch.rand(1, 2, H, W, dtype=torch.float64)
    out, flow = fw.sparse_image_warp(image, points, points, order=order, boundary_points=boundary)
    assert float(flow.abs().max()) < 1e-9
    torch.testing.assert_close(out, image, atol=1e-9, rtol=0)


@given(
    points=_landmarks(),
    order=ORDERS,
    angle=st.floats(-0.6, 0.6),
    scale=st.floats(0.7, 1.4),
    shift=st.tuples(st.floats(-4, 4), st.floats(-4, 4)),
)
def test_a_similarity_of_the_points_moves_the_image_by_it(
    points: torch.Tensor, order: int, angle: float, scale: float, shift: tuple[float, float]
) -> None:
    """Polyharmonic splines hold the linear part: the points moved by a similarity M (no zero-flow border to bend
    the map) move the whole image by M, for every kernel, and a linear ramp is sampled exactly."""
    cos, sin = scale * math.cos(angle), scale * math.sin(angle)
    matrix = torch.tensor([[cos, -sin], [sin, cos]], dtype=torch.float64)
    centre = torch.tensor([(W - 1) / 2, (H - 1) / 2], dtype=torch.float64)
    move = torch.tensor(shift, dtype=torch.float64)
    destination = (points - centre) @ matrix.T + centre + move
    ramp = (0.3 * _grid(H, W)[..., 0] - 0.2 * _grid(H, W)[..., 1] + 1.0)[None, None]
    out, flow = fw.sparse_image_warp(ramp, points, destination, order=order, boundary_points=0, padding_mode="zeros")
    pixels = _grid(H, W)
    sampled = (pixels - centre - move) @ torch.linalg.inv(matrix).T + centre  # where each output pixel reads
    torch.testing.assert_close(flow[0], pixels - sampled, atol=1e-7, rtol=0)
    inside = (sampled[..., 0] >= 0) & (sampled[..., 0] <= W - 1) & (sampled[..., 1] >= 0) & (sampled[..., 1] <= H - 1)
    expected = 0.3 * sampled[..., 0] - 0.2 * sampled[..., 1] + 1.0
    torch.testing.assert_close(out[0, 0][inside], expected[inside], atol=1e-7, rtol=0)
    # the piecewise-affine baseline holds it too, inside the triangles (outside them its flow is zero by design)
    _, mesh_flow = fw.piecewise_affine_warp(ramp, points, destination, boundary_points=0)
    covered = mesh_flow[0].abs().sum(-1) > 0
    torch.testing.assert_close(mesh_flow[0][covered], (pixels - sampled)[covered], atol=1e-7, rtol=0)


@given(points=_landmarks(), order=ORDERS, boundary=st.sampled_from([1, 2, 3, 6]), jitter=st.floats(-3, 3))
def test_border_points_have_zero_flow(points: torch.Tensor, order: int, boundary: int, jitter: float) -> None:
    height = width = 6 * 5 + 1  # every border point count drawn lands on pixel centres
    image = torch.rand(1, 1, height, width, dtype=torch.float64)
    _, flow = fw.sparse_image_warp(image, points, points + jitter, order=order, boundary_points=boundary)
    border = fw.boundary_control_points(height, width, boundary, torch.float64).round().long()
    assert float(flow[0, border[:, 1], border[:, 0]].abs().max()) < 1e-9


@given(
    points=_landmarks(count=(4, 7)),
    order=ORDERS,
    gap=st.floats(1e-12, 1e-2),
    push=st.tuples(st.floats(-2, 2), st.floats(-2, 2)),
    regularization=st.sampled_from([0.0, 1e-2]),
)
def test_nearly_coincident_points_raise_or_give_a_finite_warp(
    points: torch.Tensor, order: int, gap: float, push: tuple[float, float], regularization: float
) -> None:
    """Two landmarks a hair apart that carry different displacements (a closed mouth's inner lips): a SplineError
    that says so, or a finite image, never NaNs without a word."""
    src = points.clone()
    src[0, 1] = src[0, 0] + torch.tensor([gap, 0.0], dtype=torch.float64)
    destination = src.clone()
    destination[0, 1] += torch.tensor(push, dtype=torch.float64)
    for dtype in (torch.float32, torch.float64):
        image = torch.rand(1, 3, H, W, dtype=dtype)
        try:
            out, flow = fw.sparse_image_warp(
                image, src.to(dtype), destination.to(dtype), order=order, regularization=regularization
            )
        except fw.SplineError as error:
            assert "coincide" in str(error) or "singular" in str(error)
            continue
        assert bool(torch.isfinite(out).all()) and bool(torch.isfinite(flow).all())


@given(points=_landmarks(count=(3, 6)), order=ORDERS, regularization=st.sampled_from([0.0, 1e-2]))
def test_collinear_points_with_a_border_warp_and_without_one_are_refused(
    points: torch.Tensor, order: int, regularization: float
) -> None:
    line = points.clone()
    line[0, :, 1] = 0.5 * line[0, :, 0] - 2.0  # all on one line
    assume(float((torch.cdist(line[0], line[0]) + torch.eye(line.shape[1]) * 1e9).min()) > 0.5)
    image = torch.rand(1, 1, H, W, dtype=torch.float64)
    out, _ = fw.sparse_image_warp(image, line, line + 1.0, order=order, regularization=regularization)
    assert bool(torch.isfinite(out).all())
    with pytest.raises(fw.SplineError, match="collinear"):
        fw.sparse_image_warp(image, line, line + 1.0, order=order, regularization=regularization, boundary_points=0)


@given(
    roll=st.floats(-179.0, 179.0),
    scale=st.floats(0.3, 3.0),
    shift=st.tuples(st.floats(-200, 200), st.floats(-200, 200)),
    size=st.sampled_from([112, 224, 448]),
)
def test_alignment_undoes_a_known_similarity_exactly(
    roll: float, scale: float, shift: tuple[float, float], size: int
) -> None:
    """A face rolled, scaled and moved aligns to the same landmarks as the upright face: eye line level, the eye
    centres on the paper's targets, ``55 / 224`` of the size apart."""
    face = procedural_landmarks(224).astype(np.float64)
    angle = math.radians(roll)
    matrix = scale * np.array([[math.cos(angle), -math.sin(angle)], [math.sin(angle), math.cos(angle)]])
    moved = face @ matrix.T + np.asarray(shift)
    image = np.zeros((8, 8, 3), np.uint8)
    upright, rolled = align_paper(image, face, size=size), align_paper(image, moved, size=size)
    np.testing.assert_allclose(rolled.landmarks, upright.landmarks, atol=1e-6)
    left, right = eye_centres(rolled.landmarks)
    np.testing.assert_allclose(np.stack([left, right]), paper_eye_targets(size), atol=1e-6)
    assert math.hypot(*(right - left)) == pytest.approx(55.0 * size / 224, abs=1e-6)


@st.composite
def _scene(draw: st.DrawFn) -> tuple[np.ndarray, np.ndarray]:
    """A smooth background and a soft convex mask anywhere, also across the image's edges."""
    h, w = draw(st.integers(6, 40)), draw(st.integers(6, 40))
    seed = draw(st.integers(0, 2**16))
    rng = np.random.default_rng(seed)
    background = rng.random((h, w, 3)).astype(np.float32)
    corners = np.asarray(draw(st.lists(st.tuples(st.floats(-8, w + 8), st.floats(-8, h + 8)), min_size=3, max_size=6)))
    mask = face_mask(corners, h, w, draw(st.sampled_from([0.0, 1.0, 3.0])))
    return background, mask


@given(scene=_scene(), offset=st.floats(-0.5, 0.5))
def test_a_patch_with_the_backgrounds_gradients_composites_as_the_reference(
    scene: tuple[np.ndarray, np.ndarray], offset: float
) -> None:
    background, mask = scene
    np.testing.assert_array_equal(composite(background, background, mask), background)
    patch = background + np.float32(offset)
    fast = composite(patch, background, mask, tol=1e-6, max_iter=200)
    reference = composite_reference(patch, background, mask)
    np.testing.assert_allclose(fast, reference, atol=2e-4)
    # only the colour term holds the offset: outside the mask the composite stays within reach of the background
    assert float(np.abs(reference - background)[mask == 0].max(initial=0.0)) <= abs(offset) + 1e-6
