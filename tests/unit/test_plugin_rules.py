"""Rules of the plugins and apps that a manual mutation test (helper-82, stop 43) could break without any test
failing; each test here fails under the mutant it was written for (e.g. alpha over black, a brow band moved down)."""

from __future__ import annotations

import types

import numpy as np
import pytest


def test_alpha_is_composited_over_mid_grey() -> None:
    from facekit.images import as_rgb

    rgba = np.zeros((1, 3, 4), np.uint8)
    rgba[..., :3] = 255
    rgba[0, :, 3] = (0, 255, 128)
    rgb = as_rgb(rgba)
    assert rgb[0, 0].tolist() == [128, 128, 128] and rgb[0, 1].tolist() == [255, 255, 255]
    assert np.abs(rgb[0, 2].astype(int) - 192).max() <= 1  # 255 * 128/255 + 128 * 127/255 = 191.75


def test_ita_is_defined_from_min_b_star() -> None:
    from facekit.apps.attributes import MIN_B_STAR, individual_typology_angle

    assert MIN_B_STAR == 2.0
    assert float(individual_typology_angle(60.0, MIN_B_STAR)) == pytest.approx(np.degrees(np.arctan(10 / MIN_B_STAR)))
    assert np.isnan(individual_typology_angle(60.0, MIN_B_STAR - 0.001))


def test_background_is_measured_in_the_side_strips_only() -> None:
    from facekit.fidelity import STRIP_X, background_noise

    image = np.full((112, 112, 3), 128, np.uint8)
    rng = np.random.default_rng(0)
    middle = slice(int(STRIP_X[0] * 112) + 4, int(STRIP_X[1] * 112) - 4)
    image[50:100, middle] = rng.integers(0, 256, (50, image[50:100, middle].shape[1], 3), dtype=np.uint8)
    hull = np.array([[50, 5], [62, 5], [62, 15], [50, 15]], np.float64)  # small, at the top
    assert background_noise(image, hull) == 0.0
    image[50:100, :8] = rng.integers(0, 256, (50, 8, 3), dtype=np.uint8)  # noise in the left strip counts
    assert background_noise(image, hull) > 1.0


def test_identity_counts_faceless_outputs_of_judged_photos_only() -> None:
    from facekit.fidelity import identity_figures

    def scores(a: np.ndarray, b: np.ndarray) -> np.ndarray:
        return np.where(np.isnan(b[:, 0]), -1.0, (a * b).sum(1))

    judge = types.SimpleNamespace(
        scores=scores, passes=lambda s: s > 0.5, higher_is_same=True, card=types.SimpleNamespace(threshold=0.5)
    )
    inputs = np.array([[np.nan, np.nan], [1.0, 0.0], [0.0, 1.0]])
    outputs = np.array([[np.nan, np.nan], [np.nan, np.nan], [0.0, 1.0]])
    figures = identity_figures(judge, inputs, outputs, np.array([True, True, True]))
    assert figures["judged"] == 2 and figures["not_judged_input_without_face"] == 1
    assert figures["output_without_face"] == 1 and figures["pass_rate"] == 0.5


def test_a_face_cut_by_any_image_edge_is_kept_and_one_outside_is_not() -> None:
    pytest.importorskip("facekit_opencv")
    from facekit_opencv.yunet import _inside

    from facekit.types import FaceDetection

    def face(box: tuple[float, float, float, float]) -> FaceDetection:
        return FaceDetection(box=box, score=0.9, landmarks=np.zeros((5, 2)), scheme="eyes-nose-mouth5")

    assert _inside(face((-20, 10, 30, 60)), 100, 100) and _inside(face((90, 10, 130, 60)), 100, 100)
    assert _inside(face((10, 90, 60, 130)), 100, 100) and _inside(face((10, -20, 60, 30)), 100, 100)
    assert not _inside(face((110, 10, 150, 60)), 100, 100) and not _inside(face((10, -60, 60, -5)), 100, 100)


def test_scrfd_keeps_a_score_equal_to_its_threshold() -> None:
    pytest.importorskip("facekit_insightface")
    from facekit_insightface.scrfd import _Level, decode

    level = _Level(stride=8, anchors=1, scores=0, boxes=1, keypoints=None)
    scores = np.full((4, 1), 0.1, np.float32)
    scores[3] = 0.5  # the cell at (8, 8)
    boxes = np.ones((4, 4), np.float32)  # one stride each way
    found, kept, _ = decode([scores, boxes], [level], (16, 16), threshold=0.5)
    assert kept.tolist() == [0.5] and found.tolist() == [[0.0, 0.0, 16.0, 16.0]]


def test_the_trusted_face_region_raises_the_brows() -> None:
    pytest.importorskip("facekit_avatar")
    from facekit_avatar.colour import FOREHEAD, face_region

    points = np.zeros((68, 2), np.float32)
    points[36:42] = (30, 50)
    points[42:48] = (70, 50)
    points[17:27] = (50, 40)
    region = face_region(points)
    assert region.shape == (78, 2)
    np.testing.assert_allclose(region[68:78, 1], 40 - FOREHEAD * 40)  # image y points down: raised is smaller


def test_a_fit_of_scale_zero_is_no_avatar() -> None:
    import torch

    pytest.importorskip("facekit_avatar")
    from facekit_avatar.app import fit_problems

    fit = types.SimpleNamespace(
        coefficients=torch.zeros(1, 5),
        scale=torch.zeros(1),
        translation=torch.zeros(1, 3),
        reprojection_px=torch.zeros(1),
    )
    landmarks = np.random.default_rng(0).uniform(10, 100, (1, 68, 2))
    assert "could not be fitted" in (fit_problems(fit, landmarks)[0] or "")


def test_learned_colour_coefficients_have_unit_variance() -> None:
    """The colour basis is scaled so that the training people's coefficients are N(0, 1) (COLOUR_PRIOR assumes it)."""
    pytest.importorskip("facekit_avatar")
    from facekit_avatar.colour import learn

    rng = np.random.default_rng(3)
    factors = rng.normal(size=(80, 3)) * np.array([3.0, 2.0, 1.0])
    colours = 0.5 + 0.02 * (factors @ rng.normal(size=(3, 40 * 3))).reshape(80, 40, 3)
    ones = np.ones((80, 40))
    model = learn(colours, ones, components=3)
    coefficients = model.fit(colours, ones, prior=0.0)
    np.testing.assert_allclose(coefficients.std(axis=0, ddof=1), 1.0, atol=1e-4)


def test_the_skin_tone_is_the_median_colour_of_the_skin() -> None:
    """70 % of the skin region one colour, the rest white: the median is that colour (the mean would be paler)."""
    from facekit.apps.attributes import skin_mask, skin_tone, srgb_to_lab
    from facekit.data.augment import procedural_landmarks

    landmarks = procedural_landmarks(112)
    mask = skin_mask(landmarks, 112, 112)
    image = np.full((112, 112, 3), 255, np.uint8)
    where = np.flatnonzero(mask.reshape(-1))
    painted = where[: int(0.7 * len(where))]
    image.reshape(-1, 3)[painted] = (224, 172, 140)
    tone = skin_tone(image, landmarks)
    expected = srgb_to_lab(np.array([[224, 172, 140]], np.uint8))[0]
    assert (tone.lightness, tone.a_star, tone.b_star) == pytest.approx(tuple(float(v) for v in expected), abs=1e-6)


def test_vgg_face_pools_by_the_maximum() -> None:
    """One bright pixel through VGG-16 with identity kernels: 2 x 2 max pooling keeps it through all five pools
    (average pooling would leave 10 / 4^5)."""
    import torch

    pytest.importorskip("facekit_vggface")
    from facekit_vggface.model import BLOCKS, VggFace

    net = VggFace(num_classes=1).eval()
    with torch.no_grad():
        for parameter in net.parameters():
            parameter.zero_()
        for block, count, _ in BLOCKS:
            for index in range(1, count + 1):
                getattr(net, f"conv{block}_{index}").weight[0, 0, 1, 1] = 1.0
        net.fc6.weight[0, 0] = 1.0
        net.fc7.weight[0, 0] = 1.0
        x = torch.zeros(1, 3, 224, 224)
        x[0, 0, 0, 0] = 10.0
        assert float(net.fc7_preactivation(x)[0, 0]) == pytest.approx(10.0)


def test_inception_resnet_v1_has_facenet_pytorchs_residual_scales() -> None:
    """The published layout the weight files are loaded into (facenet-pytorch's InceptionResnetV1): Block35 x5 at
    0.17, Block17 x10 at 0.10, Block8 x5 at 0.20, then a last Block8 at 1.0 without ReLU."""
    pytest.importorskip("facekit_facenet")
    import torch
    from facekit_facenet.model import InceptionResnetV1

    net = InceptionResnetV1(num_classes=1)
    assert [b.scale for b in net.repeat_1] == [0.17] * 5 and [b.scale for b in net.repeat_2] == [0.10] * 10
    assert [b.scale for b in net.repeat_3] == [0.20] * 5 and not any(b.no_relu for b in net.repeat_3)
    assert net.block8.scale == 1.0 and net.block8.no_relu and isinstance(net.block8.relu, torch.nn.Identity)
    assert all(isinstance(b.relu, torch.nn.ReLU) for b in [*net.repeat_1, *net.repeat_2, *net.repeat_3])


def test_a_face_masks_coverage_is_centred_on_its_polygon() -> None:
    """Pixel centres at integer coordinates: a square from 10 to 20 has its coverage centred on 15, up to the fine
    grid's rasterisation (8x supersampled; fillPoly keeps its edge pixels: +1/16 px, 2.5 % more area). Dropping the
    fine grid's centre offset moved it by 7/16 px."""
    from facekit.data.poisson import face_mask

    square = np.array([[10.0, 10.0], [20.0, 10.0], [20.0, 20.0], [10.0, 20.0]])
    mask = face_mask(square, 32, 32, blur_px=0.0).astype(np.float64)
    ys, xs = np.mgrid[0:32, 0:32]
    assert float((mask * xs).sum() / mask.sum()) == pytest.approx(15.0, abs=0.1)
    assert float((mask * ys).sum() / mask.sum()) == pytest.approx(15.0, abs=0.1)
    assert float(mask.sum()) == pytest.approx(100.0, abs=3.0)


def _dlib_int(value: int) -> bytes:
    """dlib's serialised integer: a control byte (byte count, 0x80 for negative) then little-endian bytes."""
    raw = abs(value).to_bytes((abs(value).bit_length() + 7) // 8, "little")
    return bytes([len(raw) | (0x80 if value < 0 else 0)]) + raw


def _dlib_float(value: float) -> bytes:
    import math

    mantissa, exponent = math.frexp(value)
    return _dlib_int(int(mantissa * 2**53)) + _dlib_int(exponent - 53)


def _dlib_tensor(values: np.ndarray) -> bytes:
    dims = (1, values.size, 1, 1)
    return _dlib_int(2) + b"".join(map(_dlib_int, dims)) + values.astype("<f4").tobytes()


def test_a_dlib_batch_norm_layer_folds_to_the_affine_map_it_computes_at_inference() -> None:
    """A hand-serialised ``bn_con2`` layer (the shipped .dat has only ``affine_`` layers, so the parity tests never
    read one): the affine layer it becomes must give gamma * (x - running mean) / sqrt(running var + eps) + beta."""
    pytest.importorskip("facekit_dlib")
    from facekit_dlib.dat import _read_details, _Reader

    gamma, beta = np.array([1.5, -0.5], np.float32), np.array([0.25, 2.0], np.float32)
    mean, var, eps = np.array([3.0, -1.0], np.float32), np.array([4.0, 0.25], np.float32), 1e-5
    alias = _dlib_int(1) + b"".join(map(_dlib_int, (1, 2, 1, 1)))
    data = b"".join(
        [
            _dlib_int(len(b"bn_con2")) + b"bn_con2",
            _dlib_tensor(np.concatenate([gamma, beta])),
            alias,
            alias,
            *(_dlib_tensor(a) for a in (np.zeros(2), np.ones(2), mean, var)),  # means, invstds: training only
            _dlib_int(100),
            _dlib_int(1000),
            *(_dlib_float(v) for v in (1.0, 0.0, 1.0, 0.0, eps)),
        ]
    )
    layer = _read_details(_Reader(data))
    assert layer.kind == "affine" and layer.attrs["mode"] == "conv"
    x = np.array([0.5, 7.0], np.float32)
    expected = gamma * (x - mean) / np.sqrt(var + eps) + beta
    assert np.allclose(layer.arrays["gamma"] * x + layer.arrays["beta"], expected, atol=1e-6)
