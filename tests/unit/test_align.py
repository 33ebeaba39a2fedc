from __future__ import annotations

import numpy as np
import pytest
import torch

from facekit.align import (
    align_paper,
    align_to_template,
    apply_transform,
    eye_centres,
    paper_eye_targets,
    similarity_transform,
    warp_image,
    warp_images_affine,
)
from facekit.types import AlignmentTemplate


def rotation(degrees: float, scale: float = 1.0, shift: tuple[float, float] = (0.0, 0.0)) -> np.ndarray:
    angle = np.radians(degrees)
    cos, sin = scale * np.cos(angle), scale * np.sin(angle)
    return np.array([[cos, -sin, shift[0]], [sin, cos, shift[1]]])


def fake_face(rng: np.random.Generator) -> np.ndarray:
    """68 points with eyes where the iBUG scheme puts them (36-41 image left, 42-47 image right)."""
    points = rng.uniform(40, 160, size=(68, 2))
    points[36:42] = np.array([80.0, 90.0]) + rng.normal(0, 2, (6, 2))
    points[42:48] = np.array([130.0, 95.0]) + rng.normal(0, 2, (6, 2))
    points[30] = np.array([106.0, 130.0])  # the nose tip, below the eyes
    points[48:68] = np.array([106.0, 150.0]) + rng.normal(0, 4, (20, 2))  # the mouth, below the nose
    return points


@pytest.mark.parametrize("roll", [0.0, 80.0, 100.0, 179.0, -135.0])
def test_alignment_undoes_any_roll(roll: float) -> None:
    """Before: the eyes were ordered by x, so beyond 90 degrees of roll they swapped and the face came out upside
    down (chin above the eyes). The nose says which way is down, in every scheme that has one."""
    face = fake_face(np.random.default_rng(2))
    face[8] = [106.0, 170.0]  # the chin
    rolled = apply_transform(rotation(roll, shift=(100.0, 100.0)), face - [105.0, 100.0])
    aligned = align_paper(np.zeros((300, 300, 3), np.uint8), rolled, size=224).landmarks
    assert np.allclose(np.stack(eye_centres(aligned)), paper_eye_targets(224), atol=1e-6)
    assert aligned[8, 1] > aligned[30, 1] > aligned[36:48, 1].mean()
    five = np.array([face[36:42].mean(0), face[42:48].mean(0), face[30], face[48], face[54]])
    spun = apply_transform(rotation(roll), five)
    assert np.allclose(eye_centres(spun, "eyes-nose-mouth5")[0], spun[0])  # the image-left eye as seen upright
    tilted = face.copy()
    tilted[30, 1] = tilted[36:48, 1].mean() - 2  # upright, the nose tip above the eye line (head tilted back)
    assert eye_centres(tilted)[0][0] < eye_centres(tilted)[1][0]  # the mouth says which way is down


def test_similarity_recovers_a_known_transform() -> None:
    rng = np.random.default_rng(0)
    source = rng.uniform(0, 100, (10, 2))
    truth = rotation(17, 1.7, (5.0, -3.0))
    estimate = similarity_transform(source, apply_transform(truth, source))
    assert np.allclose(estimate, truth, atol=1e-9)
    with pytest.raises(ValueError, match="coincide"):
        similarity_transform(np.ones((3, 2)), source[:3])


def test_similarity_never_reflects() -> None:
    source = np.array([[0.0, 0.0], [10.0, 0.0], [0.0, 10.0]])
    mirrored = source * [-1, 1]
    matrix = similarity_transform(source, mirrored)
    assert np.linalg.det(matrix[:, :2]) > 0


def test_paper_frame_levels_eyes_at_fixed_distance() -> None:
    rng = np.random.default_rng(1)
    image = rng.integers(0, 255, (220, 200, 3), dtype=np.uint8)
    landmarks = fake_face(rng)
    aligned = align_paper(image, landmarks, size=224)
    left, right = eye_centres(aligned.landmarks)
    assert aligned.image.shape == (224, 224, 3)
    assert np.allclose([left, right], paper_eye_targets(224), atol=1e-6)
    assert np.isclose(np.linalg.norm(right - left), 55.0)
    assert np.allclose(paper_eye_targets(112)[1] - paper_eye_targets(112)[0], [27.5, 0])


def test_pixel_convention_matches_transform() -> None:
    """A bright pixel at a landmark ends up at the transformed landmark (integer pixel centres)."""
    image = np.zeros((100, 100, 3), np.uint8)
    image[40, 30] = 255
    transform = rotation(0, 2.0, (10.0, 5.0))
    out = warp_image(image, transform, (220, 220))
    y, x = np.unravel_index(out[..., 0].argmax(), out.shape[:2])
    assert (x, y) == tuple(apply_transform(transform, np.array([30.0, 40.0])).astype(int))


def test_template_alignment_uses_five_points() -> None:
    rng = np.random.default_rng(2)
    landmarks = fake_face(rng)
    template = AlignmentTemplate(
        "t", ((30.0, 50.0), (80.0, 50.0), (55.0, 75.0), (35.0, 95.0), (75.0, 95.0)), "eyes-nose-mouth5"
    )
    image = rng.integers(0, 255, (220, 220, 3), dtype=np.uint8)
    aligned = align_to_template(image, landmarks, template, (112, 112))
    assert aligned.image.shape == (112, 112, 3)
    with pytest.raises(ValueError, match="unknown template scheme"):
        align_to_template(image, landmarks, AlignmentTemplate("t", ((0.0, 0.0),), "3pt"), (112, 112))


def test_torch_affine_warp_matches_opencv() -> None:
    rng = np.random.default_rng(3)
    image = rng.random((60, 80, 3)).astype(np.float32)
    transform = rotation(10, 1.3, (-8.0, 4.0))
    expected = warp_image((image * 255).astype(np.uint8), transform, (50, 70)).astype(np.float32) / 255
    tensor = torch.from_numpy((image * 255).astype(np.uint8)).permute(2, 0, 1)[None].float() / 255
    got = warp_images_affine(tensor, torch.from_numpy(transform)[None].float(), (50, 70))[0].permute(1, 2, 0).numpy()
    error = np.abs(got - expected)[2:-2, 2:-2].mean()
    assert error < 6e-3  # OpenCV quantises bilinear weights to 1/32 and rounds to uint8: ~1/255 on noise
    shifted = warp_images_affine(tensor, torch.from_numpy(rotation(10, 1.3, (-7.0, 4.0)))[None].float(), (50, 70))
    assert np.abs(shifted[0].permute(1, 2, 0).numpy() - expected)[2:-2, 2:-2].mean() > 20 * error


def test_torch_affine_warp_is_differentiable() -> None:
    images = torch.rand(2, 3, 20, 20, requires_grad=True)
    transform = torch.tensor(rotation(5, 1.1, (1.0, 2.0)), dtype=torch.float32)
    transforms = transform.expand(2, 2, 3).clone().requires_grad_()
    warp_images_affine(images, transforms, (16, 16)).sum().backward()
    assert images.grad is not None and transforms.grad is not None and transforms.grad.abs().sum() > 0
