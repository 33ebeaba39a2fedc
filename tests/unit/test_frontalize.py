"""Frontalization baseline (Hassner et al. 2015 style): rasteriser and camera on synthetic inputs; on real photos,
frontal faces barely change, turned faces come out frontal, and evaluate_normalizer takes it unchanged."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from facekit.align import align_paper, eye_centres, paper_eye_targets
from facekit.baselines.frontalize import Frontalizer, estimate_camera, rasterize, read_obj_triangles
from facekit.data.pose import estimate_pose, load_mean_shape

# LFW DevTest photos whose head pose (estimate_pose on dlib's landmarks) is turned by more than 30 degrees.
TURNED = [
    "George_Robertson/George_Robertson_0022.jpg",
    "Bill_Frist/Bill_Frist_0007.jpg",
    "Gene_Orza/Gene_Orza_0001.jpg",
]


# ---- synthetic ---------------------------------------------------------------------------------------------------


def test_read_obj_triangles_fans_polygons_and_drops_texture_indices(tmp_path: Path) -> None:
    obj = tmp_path / "m.obj"
    obj.write_text("v 0 0 0\nv 1 0 0\nv 1 1 0\nv 0 1 0\nf 1/1 2/2 3/3\nf 1 2 3 4\n")
    assert read_obj_triangles(obj).tolist() == [[0, 1, 2], [0, 1, 2], [0, 2, 3]]


def test_rasterize_covers_the_triangles_and_keeps_the_nearest() -> None:
    # A square of two triangles at depth 5 covering pixels 2..7, and a small triangle in front (depth 1).
    xy = np.array([[2, 2], [7, 2], [7, 7], [2, 7], [3, 3], [5, 3], [3, 5]], dtype=np.float64)
    depth = np.array([5, 5, 5, 5, 1, 1, 1], dtype=np.float64)
    triangles = np.array([[0, 1, 2], [0, 2, 3], [4, 5, 6]])
    index, weights = rasterize(xy, depth, triangles, 10)
    covered = index >= 0
    expected = np.zeros((10, 10), bool)
    expected[2:8, 2:8] = True
    assert np.array_equal(covered, expected)  # shared edges leave no cracks, nothing outside
    assert index[3, 3] == 2 and index[4, 4] == 2 and index[6, 6] in (0, 1)
    np.testing.assert_allclose(weights[covered].sum(axis=1), 1.0)
    assert (weights[covered] >= -1e-9).all()
    # Barycentrics reproduce the pixel position.
    ys, xs = np.nonzero(covered)
    rebuilt = np.einsum("pc,pcd->pd", weights[ys, xs], xy[triangles[index[ys, xs]]])
    np.testing.assert_allclose(rebuilt, np.c_[xs, ys], atol=1e-9)


def test_rasterize_ignores_triangles_outside_the_frame() -> None:
    xy = np.array([[-9, -9], [-5, -9], [-5, -5]], dtype=np.float64)
    index, _ = rasterize(xy, np.zeros(3), np.array([[0, 1, 2]]), 8)
    assert (index == -1).all()


# ---- real data -----------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def frontalizer(data_root: Path) -> Frontalizer:
    return Frontalizer.from_data(data_root / "sfm")


def _face(frontalizer: Frontalizer, path: Path) -> tuple[np.ndarray, np.ndarray]:
    from facekit.images import load_rgb

    image = load_rgb(path)[0]
    assert image is not None
    faces = frontalizer.detector.detect_array(image)
    assert faces, f"dlib found no face in {path}"
    return image, np.asarray(faces[0].landmarks, np.float64)


def test_estimate_camera_recovers_a_known_projection(data_root: Path) -> None:
    import cv2

    shape = load_mean_shape(data_root / "sfm")
    camera = np.array([[300.0, 0, 149.5], [0, 300.0, 99.5], [0, 0, 1]])  # estimate_pose's intrinsics
    rotation, _ = cv2.Rodrigues(np.radians([10.0, -30.0, 5.0]))
    truth = camera @ np.hstack([rotation, [[5.0], [-10.0], [900.0]]])
    projected = np.c_[shape.points, np.ones(len(shape.points))] @ truth.T
    landmarks = np.zeros((68, 2))
    landmarks[shape.landmarks] = projected[:, :2] / projected[:, 2:]
    estimated = estimate_camera(landmarks, (300, 200), shape)
    np.testing.assert_allclose(estimated / estimated[2, 3], truth / truth[2, 3], atol=1e-6)


def test_reference_landmarks_in_the_paper_frame(frontalizer: Frontalizer) -> None:
    points = frontalizer.landmarks
    assert points.shape == (68, 2) and np.isfinite(points).all()
    assert (points > 0).all() and (points < frontalizer.size - 1).all()
    np.testing.assert_allclose(np.stack(eye_centres(points)), paper_eye_targets(frontalizer.size), atol=1e-9)
    # The jaw runs down one side to the chin and up the other; left-right mirror symmetric like the mean mesh.
    jaw = points[:17]
    assert np.all(np.diff(jaw[:9, 1]) > 0) and np.all(np.diff(jaw[8:, 1]) < 0) and np.all(np.diff(jaw[:, 0]) > 0)
    mirrored = points.copy()
    mirrored[:, 0] = frontalizer.size - 1 - mirrored[:, 0]
    np.testing.assert_allclose(mirrored[:17], points[16::-1], atol=1e-6)
    # Reference mask: the face, not the whole crop and not empty.
    assert 0.2 < frontalizer.view.mask.mean() < 0.6


def test_frontalize_shapes_and_errors(frontalizer: Frontalizer, data_root: Path) -> None:
    image, landmarks = _face(frontalizer, data_root / "london" / "neutral_front" / "001_03.jpg")
    out = frontalizer.frontalize(image, landmarks)
    assert out.shape == (112, 112, 3) and out.dtype == np.uint8
    small = Frontalizer.from_data(data_root / "sfm", size=64, detector=frontalizer.detector)
    assert small.frontalize(image, landmarks).shape == (64, 64, 3)
    with pytest.raises(ValueError, match="68"):
        frontalizer.frontalize(image, landmarks[:5])
    with pytest.raises(ValueError, match="uint8"):
        frontalizer.frontalize(image.astype(np.float32), landmarks)


def test_frontal_photo_is_close_to_its_similarity_crop(frontalizer: Frontalizer, data_root: Path) -> None:
    """On a frontal studio photo the 3-D warp should change little: a few pixels of shape difference between the
    mean mesh and the person, no big shift. A different person's crop is the control."""
    import cv2

    inner = cv2.erode(frontalizer.view.mask.astype(np.uint8), np.ones((9, 9), np.uint8)) > 0

    def blurred(image: np.ndarray) -> np.ndarray:
        return cv2.GaussianBlur(image, (0, 0), 2.0).astype(np.float64)

    folder = data_root / "london" / "neutral_front"
    image, landmarks = _face(frontalizer, folder / "003_03.jpg")
    other, other_landmarks = _face(frontalizer, folder / "010_03.jpg")
    out = blurred(frontalizer.frontalize(image, landmarks))
    same = np.abs(out - blurred(align_paper(image, landmarks, 112).image)).mean(-1)[inner].mean()
    control = np.abs(out - blurred(align_paper(other, other_landmarks, 112).image)).mean(-1)[inner].mean()
    assert same < 8.0, same
    assert same < control / 2, (same, control)
    # Outside the mesh the output is the similarity crop itself.
    outside = cv2.dilate(frontalizer.view.mask.astype(np.uint8), np.ones((5, 5), np.uint8)) == 0
    raw = frontalizer.frontalize(image, landmarks)
    assert np.array_equal(raw[outside], align_paper(image, landmarks, 112).image[outside])


def test_frontalized_landmarks_match_the_reference(frontalizer: Frontalizer, data_root: Path) -> None:
    """dlib's landmarks on frontalized London faces land on the reference landmarks (the NormalizedFace's)."""
    errors = []
    for name in ("001_03.jpg", "003_03.jpg", "010_03.jpg"):
        image, landmarks = _face(frontalizer, data_root / "london" / "neutral_front" / name)
        faces = frontalizer.detector.detect_array(frontalizer.frontalize(image, landmarks))
        assert faces
        found = np.asarray(faces[0].landmarks, np.float64)
        reference = frontalizer.landmarks
        errors.append(np.linalg.norm(found - reference, axis=1).mean() / np.linalg.norm(reference[36] - reference[45]))
    assert np.mean(errors) < 0.08, errors


def test_turned_faces_come_out_frontal(frontalizer: Frontalizer, data_root: Path) -> None:
    shape = load_mean_shape(data_root / "sfm")
    size = frontalizer.size
    for relative in TURNED:
        image, landmarks = _face(frontalizer, data_root / "lfw" / "images" / relative)
        before = estimate_pose(landmarks, (image.shape[1], image.shape[0]), shape).yaw
        assert abs(before) > 30, (relative, before)
        faces = frontalizer.detector.detect_array(frontalizer.frontalize(image, landmarks))
        assert faces, f"dlib found no face in the frontalized {relative}"
        after = estimate_pose(np.asarray(faces[0].landmarks, np.float64), (size, size), shape).yaw
        assert abs(after) < 10 and abs(after) < abs(before) / 3, (relative, before, after)


def test_normalize_many_outcomes(frontalizer: Frontalizer, data_root: Path) -> None:
    image, landmarks = _face(frontalizer, data_root / "london" / "neutral_front" / "001_03.jpg")
    blank = np.full((200, 200, 3), 128, np.uint8)
    outcomes = frontalizer.normalize_many([image, None, blank], ["face", "broken", "blank"])
    assert [o.status for o in outcomes] == ["ok", "unreadable", "no_face"]
    assert [o.name for o in outcomes] == ["face", "broken", "blank"]
    face = outcomes[0].face
    assert face is not None and outcomes[1].face is None and outcomes[2].face is None
    assert face.image.shape == (112, 112, 3) and face.image.dtype == np.uint8
    np.testing.assert_array_equal(face.image, frontalizer.frontalize(image, landmarks))
    np.testing.assert_array_equal(face.landmarks, frontalizer.landmarks)
    np.testing.assert_array_equal(face.source_landmarks, landmarks)
    assert face.texture is None and len(face.box) == 4 and face.faces_found == 1


def test_the_baseline_takes_the_face_it_is_told_to(frontalizer: Frontalizer, data_root: Path) -> None:
    """face="central": the subject a photo is framed around, as the normalizer and the judges take it."""
    from facekit.errors import FacekitError
    from facekit.testing import subject_beside_a_larger_face

    canvas, _ = subject_beside_a_larger_face()
    central = Frontalizer.from_data(data_root / "sfm", detector=frontalizer.detector, face="central")
    (largest,) = frontalizer.normalize_many([canvas], ["canvas"])
    (chosen,) = central.normalize_many([canvas], ["canvas"])
    assert largest.face is not None and chosen.face is not None
    assert largest.face.box[0] > 600 and 350 < chosen.face.box[0] < 450 and chosen.face.faces_found == 2
    with pytest.raises(FacekitError, match="unknown face choice"):
        Frontalizer.from_data(data_root / "sfm", detector=frontalizer.detector, face="middle")


def test_evaluate_normalizer_takes_the_frontalizer(frontalizer: Frontalizer, data_root: Path, tmp_path: Path) -> None:
    import facekit
    from facekit.evaluate import Judge, evaluate_normalizer, lfw_devtest

    photos = lfw_devtest(data_root, 6)
    judge = Judge("dlib-resnet", facekit.load_component("encoder", "dlib-resnet"))
    metrics: dict[str, Any] = evaluate_normalizer(frontalizer, photos, [judge], tmp_path)
    assert metrics["photos"] == 6 and metrics["normalized"] >= 5
    result = metrics["judges"]["dlib-resnet"]
    # The frontalized face keeps its identity for most photos under dlib's 0.6 threshold.
    assert result["identity_pass_rate"] >= 0.5, result
    assert metrics["landmarks"]["detected"] >= metrics["normalized"] - 1
    assert json.loads((tmp_path / "metrics.json").read_text())["normalized"] == metrics["normalized"]
    assert (tmp_path / "report.html").is_file() and (tmp_path / "identity-dlib-resnet.png").is_file()
