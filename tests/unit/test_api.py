"""The public Normalizer API as face-tools users expect it (insightface/deepface habits): top-level import, a path,
PIL image or array (RGB, or BGR with a flag), every face on request, clear errors for what it cannot read."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import facekit
from facekit.errors import FacekitError
from facekit.testing import real_face, two_faces


@pytest.fixture
def normalizer(shipped_normalizer: facekit.Normalizer) -> facekit.Normalizer:
    return shipped_normalizer


def test_one_face_from_a_path_pil_image_rgb_or_bgr_array(normalizer: facekit.Normalizer, tmp_path: Path) -> None:
    rgb = real_face().image.copy()
    path = tmp_path / "face.png"
    Image.fromarray(rgb).save(path)
    reference = normalizer.normalize(rgb).image
    assert reference.shape == (112, 112, 3) and reference.dtype == np.uint8
    for given, kwargs in ((str(path), {}), (path, {}), (Image.open(path), {}), (rgb[..., ::-1].copy(), {"bgr": True})):
        assert np.array_equal(normalizer.normalize(given, **kwargs).image, reference), type(given)
    swapped = normalizer.normalize(rgb[..., ::-1].copy()).image  # BGR read as RGB: another (wrong) face
    assert not np.array_equal(swapped, reference)


def test_every_face_largest_first(normalizer: facekit.Normalizer) -> None:
    canvas, _, _ = two_faces()
    faces = normalizer.normalize(canvas, all_faces=True)
    assert len(faces) == 2 and all(f.faces_found == 2 for f in faces)
    assert faces[0].box[0] > faces[1].box[0]  # the large face is on the right
    alone = normalizer.normalize(canvas).image.astype(int)  # a batch of one: float rounding may move a grey level
    assert np.abs(faces[0].image.astype(int) - alone).max() <= 2
    assert normalizer.normalize(np.full((80, 80, 3), 128, np.uint8), all_faces=True) == []
    largest = normalizer.normalize(canvas, all_faces=True, max_faces=1)  # a crowd costs what is kept
    assert len(largest) == 1 and largest[0].faces_found == 2 and largest[0].box == faces[0].box
    assert np.allclose(largest[0].landmarks, faces[0].landmarks, atol=0.05)  # a batch of one: float rounding
    (small,) = normalizer.normalize(canvas, all_faces=True, near=faces[1].box)  # the face at a given box
    assert small.box == faces[1].box and small.faces_found == 2
    (again,) = normalizer.normalize(canvas, all_faces=True, near=faces[1].box, max_faces=1)  # not only the largest
    assert again.box == faces[1].box
    assert normalizer.normalize(canvas, all_faces=True, near=(0.0, 0.0, 1.0, 1.0)) == []  # nothing there


def test_what_it_cannot_read_is_a_clear_error(normalizer: facekit.Normalizer, tmp_path: Path) -> None:
    with pytest.raises(FacekitError, match="uint8"):
        normalizer.normalize(real_face().image / 255.0)
    with pytest.raises(FacekitError, match="shape"):
        normalizer.normalize(np.zeros((4, 4, 2), np.uint8))
    with pytest.raises(FacekitError, match=r"missing\.jpg: unreadable"):
        normalizer.normalize(tmp_path / "missing.jpg")
    with pytest.raises(FacekitError, match="no face normalized: no_face"):
        normalizer.normalize(np.full((80, 80, 3), 128, np.uint8))
