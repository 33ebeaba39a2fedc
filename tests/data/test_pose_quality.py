from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest

from facekit.data.pose import estimate_pose, load_mean_shape
from facekit.data.quality import colourfulness, mouth_measures


def project(shape_points: np.ndarray, yaw: float, pitch: float, size: int = 400) -> np.ndarray:
    rx, ry = np.radians(pitch), np.radians(yaw)
    rot_x = np.array([[1, 0, 0], [0, np.cos(rx), -np.sin(rx)], [0, np.sin(rx), np.cos(rx)]])
    rot_y = np.array([[np.cos(ry), 0, np.sin(ry)], [0, 1, 0], [-np.sin(ry), 0, np.cos(ry)]])
    rvec, _ = cv2.Rodrigues(rot_y @ rot_x)
    camera = np.array([[size, 0, (size - 1) / 2], [0, size, (size - 1) / 2], [0, 0, 1.0]])
    points, _ = cv2.projectPoints(shape_points, rvec, np.array([0, 0, 600.0]), camera, None)
    return points[:, 0]


@pytest.mark.parametrize(("yaw", "pitch"), [(0, 0), (25, 0), (-15, 10), (5, -20)])
def test_pose_recovers_synthetic_rotations(data_root: Path, yaw: float, pitch: float) -> None:
    shape = load_mean_shape(data_root / "sfm")
    landmarks = np.zeros((68, 2))
    landmarks[shape.landmarks] = project(shape.points, yaw, pitch)
    pose = estimate_pose(landmarks, (400, 400), shape)
    assert abs(pose.yaw - yaw) < 0.5 and abs(pose.pitch - pitch) < 0.5 and abs(pose.roll) < 0.5


def test_positive_yaw_is_a_face_turned_to_the_image_left(data_root: Path) -> None:
    """The sign estimate_pose documents: the nose tip (iBUG 30) then lies left of the eyes' midpoint in the image."""
    shape = load_mean_shape(data_root / "sfm")
    landmarks = np.zeros((68, 2))
    landmarks[shape.landmarks] = project(shape.points, 20, 0)
    assert landmarks[30, 0] < landmarks[36:48, 0].mean() - 5  # the nose points to the image's left
    assert estimate_pose(landmarks, (400, 400), shape).yaw == pytest.approx(20, abs=0.5)


def test_pose_sign_flips_with_a_mirrored_face(data_root: Path) -> None:
    shape = load_mean_shape(data_root / "sfm")
    landmarks = np.zeros((68, 2))
    landmarks[shape.landmarks] = project(shape.points, 20, 0)
    # Mirror and relabel: iBUG index i on one side becomes its mirror partner on the other.
    mirrored = landmarks.copy()
    mirrored[:, 0] = 399 - mirrored[:, 0]
    pose = estimate_pose(mirrored[MIRROR], (400, 400), shape)
    assert pose.yaw == pytest.approx(-20, abs=1.0)


MIRROR = np.array(
    [
        *range(16, -1, -1),
        *range(26, 16, -1),
        27,
        28,
        29,
        30,
        35,
        34,
        33,
        32,
        31,
        45,
        44,
        43,
        42,
        47,
        46,
        39,
        38,
        37,
        36,
        41,
        40,
        54,
        53,
        52,
        51,
        50,
        49,
        48,
        59,
        58,
        57,
        56,
        55,
        64,
        63,
        62,
        61,
        60,
        67,
        66,
        65,
    ]
)


def test_mouth_measures_and_colourfulness() -> None:
    points = np.zeros((68, 2))
    points[36:42] = [0.0, 0.0]
    points[42:48] = [100.0, 0.0]
    points[48], points[54] = [20.0, 80.0], [80.0, 80.0]
    points[[61, 62, 63]] = [[40, 78], [50, 78], [60, 78]]
    points[[67, 66, 65]] = [[40, 88], [50, 88], [60, 88]]
    gap, width = mouth_measures(points)
    assert gap == pytest.approx(0.1) and width == pytest.approx(0.6)
    grey = np.full((10, 10, 3), 120, np.uint8)
    assert colourfulness(grey) == 0.0
    colour = np.zeros((10, 10, 3), np.uint8)
    colour[::2, :, 0] = 255
    colour[1::2, :, 2] = 255
    assert colourfulness(colour) > 50
