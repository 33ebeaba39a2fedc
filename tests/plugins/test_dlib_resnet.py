"""The torch port of dlib's face-recognition ResNet vs dlib itself (needs dlib + face_recognition_models)."""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path
from typing import Any

import numpy as np
import pytest

dlib = pytest.importorskip("dlib")
torch = pytest.importorskip("torch")
cv2 = pytest.importorskip("cv2")

from facekit_dlib.dat import read_dlib_net  # noqa: E402
from facekit_dlib.resnet import chips_to_tensor, extract_chip, load_dlib_resnet  # noqa: E402

REPO = Path(__file__).resolve().parents[2]
DATA = Path(os.environ.get("FACEKIT_DATA", REPO.parent / "shared" / "data"))
N_PHOTOS = 20


def _models_dir() -> Path:
    spec = importlib.util.find_spec("face_recognition_models")
    if spec is None or not spec.submodule_search_locations:
        pytest.skip("face_recognition_models is not installed")
    return Path(next(iter(spec.submodule_search_locations))) / "models"


@pytest.fixture(scope="module")
def models() -> Path:
    return _models_dir()


@pytest.fixture(scope="module")
def port(models: Path) -> Any:
    return load_dlib_resnet(models / "dlib_face_recognition_resnet_model_v1.dat")


@pytest.fixture(scope="module")
def lfw_faces(models: Path) -> list[tuple[str, np.ndarray, Any, np.ndarray]]:
    """(path, RGB image, 5-point shape, dlib chip) for the first photo of the first names with a HOG face."""
    root = DATA / "lfw" / "images"
    if not root.is_dir():
        pytest.skip(f"LFW not found at {root} (set FACEKIT_DATA)")
    detector = dlib.get_frontal_face_detector()
    predictor = dlib.shape_predictor(str(models / "shape_predictor_5_face_landmarks.dat"))
    out = []
    for name in sorted(os.listdir(root)):
        photos = sorted((root / name).glob(f"{name}_*.jpg"))
        if not photos:
            continue
        img = cv2.cvtColor(cv2.imread(str(photos[0])), cv2.COLOR_BGR2RGB)
        dets = detector(img, 1)
        if not dets:
            continue
        shape = predictor(img, dets[0])
        out.append((str(photos[0]), img, shape, dlib.get_face_chip(img, shape, 150, 0.25)))
        if len(out) == N_PHOTOS:
            break
    assert len(out) == N_PHOTOS
    return out


def test_dat_structure(models: Path) -> None:
    net = read_dlib_net(models / "dlib_face_recognition_resnet_model_v1.dat")
    assert net.loss.version == "loss_metric_2"
    assert net.input.attrs["nr"] == net.input.attrs["nc"] == 150
    np.testing.assert_allclose(
        [net.input.attrs[k] for k in ("avg_red", "avg_green", "avg_blue")],
        [122.782, 117.001, 104.298],
        atol=1e-4,
    )
    convs = [layer for layer in net.layers if layer.kind == "con"]
    assert len(convs) == 29
    assert convs[0].arrays["weight"].shape == (32, 3, 7, 7)
    assert (convs[0].attrs["stride_y"], convs[0].attrs["padding_y"]) == (2, 0)
    assert net.layers[-1].kind == "fc" and net.layers[-1].arrays["weight"].shape == (256, 128)
    assert "bias" not in net.layers[-1].arrays


def test_descriptors_match_dlib(port: Any, models: Path, lfw_faces: list) -> None:
    encoder = dlib.face_recognition_model_v1(str(models / "dlib_face_recognition_resnet_model_v1.dat"))
    chips = [face[3] for face in lfw_faces]
    ref = np.array([np.array(encoder.compute_face_descriptor(chip)) for chip in chips])
    # dlib's own image+shape path crops the same chip internally
    _, img, shape, _ = lfw_faces[0]
    np.testing.assert_allclose(np.array(encoder.compute_face_descriptor(img, shape)), ref[0], atol=1e-6)
    with torch.no_grad():
        emb, feats = port(chips_to_tensor(chips), return_features=True)
    emb = emb.numpy().astype(np.float64)
    assert emb.shape == (N_PHOTOS, 128) and feats.shape == (N_PHOTOS, 256)
    cos = (emb * ref).sum(1) / np.linalg.norm(emb, axis=1) / np.linalg.norm(ref, axis=1)
    assert np.abs(emb - ref).max() < 1e-4
    assert cos.min() > 0.99999
    # the features really are the fc input
    np.testing.assert_allclose(port.fc(feats).numpy(), emb, atol=1e-6)


def test_extract_chip_matches_dlib(lfw_faces: list) -> None:
    # Measured on these 20 photos: identical chips (mean and max abs difference 0). Allow a
    # rounding flip (1 grey level) on a few pixels in case of float differences on other machines.
    for path, img, shape, chip in lfw_faces:
        ours = extract_chip(img, shape, size=150, padding=0.25)
        assert ours.shape == chip.shape == (150, 150, 3) and ours.dtype == np.uint8
        diff = np.abs(ours.astype(np.int16) - chip.astype(np.int16))
        assert diff.mean() < 0.01, path
        assert diff.max() <= 1, path
    # points given as a plain (5, 2) array give the same chip
    _, img, shape, chip = lfw_faces[0]
    pts = np.array([(p.x, p.y) for p in shape.parts()], dtype=np.float64)
    np.testing.assert_array_equal(extract_chip(img, pts), extract_chip(img, shape))


def test_gradients_reach_pixels(port: Any, lfw_faces: list) -> None:
    x = chips_to_tensor([lfw_faces[0][3], lfw_faces[1][3]]).requires_grad_(True)
    port(x).sum().backward()
    assert x.grad is not None
    assert torch.isfinite(x.grad).all()
    assert x.grad.abs().sum() > 0
    assert all(p.grad is None for p in port.parameters())


@pytest.mark.parametrize("scale", [1.0, 4.7])
def test_extract_chip_large_rotated_faces(models: Path, lfw_faces: list, scale: float) -> None:
    """Upscaled (dlib then samples from its pyramid_down<2> levels) and rotated faces, 5 and 68 points."""
    predictors = [
        dlib.shape_predictor(str(models / "shape_predictor_5_face_landmarks.dat")),
        dlib.shape_predictor(str(models / "shape_predictor_68_face_landmarks.dat")),
    ]
    detector = dlib.get_frontal_face_detector()
    for _, base, _, _ in lfw_faces[:3]:
        img = cv2.resize(base, None, fx=scale, fy=scale, interpolation=cv2.INTER_LINEAR)
        rot = cv2.getRotationMatrix2D((img.shape[1] / 2, img.shape[0] / 2), 17, 1.0)
        img = cv2.warpAffine(img, rot, (img.shape[1], img.shape[0]))
        box = detector(base, 1)[0]
        rect = dlib.rectangle(*(int(v * scale) for v in (box.left(), box.top(), box.right(), box.bottom())))
        for predictor in predictors:
            shape = predictor(img, rect)
            for size, padding in ((150, 0.25), (200, 0.6)):
                theirs = dlib.get_face_chip(img, shape, size, padding)
                ours = extract_chip(img, shape, size, padding)
                diff = np.abs(ours.astype(np.int16) - theirs.astype(np.int16))
                # measured: identical, or a handful of pixels off by one grey level (float rounding
                # before dlib's truncating cast)
                assert diff.max() <= 1
                assert (diff > 0).mean() < 1e-3


def test_embed_and_features_in_one_pass_equal_the_two_calls() -> None:
    import torch

    import facekit

    encoder = facekit.load_component("encoder", "dlib-resnet").eval()
    images = torch.rand(3, 3, 150, 150, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        embedding, features = encoder.embed_and_features(images)
        assert torch.equal(embedding, encoder.embed(images)) and torch.equal(features, encoder.features(images))


def test_embed_and_maps_gives_the_embedding_and_early_maps() -> None:
    import torch

    import facekit

    encoder = facekit.load_component("encoder", "dlib-resnet").eval()
    images = torch.rand(2, 3, 150, 150, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        embedding, maps = encoder.embed_and_maps(images)
        assert torch.allclose(embedding, encoder.embed(images), atol=1e-6)
    assert [tuple(m.shape[1:]) for m in maps] == [(32, 72, 72), (32, 35, 35), (64, 17, 17)]


def test_reading_a_dat_file_closes_it(models: Path) -> None:
    """helper-233: read_dlib_net left its file to the garbage collector (``open(path).read()``), so a user who turns
    warnings on (``python -W default``, pytest's summary) saw a ResourceWarning from building the default model."""
    import gc
    import warnings

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        read_dlib_net(models / "dlib_face_recognition_resnet_model_v1.dat")
        gc.collect()
    assert not [w for w in caught if issubclass(w.category, ResourceWarning)], [str(w.message) for w in caught]
