"""Photo detail on the normalized face (facekit.detail): what moves, what must not."""

from __future__ import annotations

from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from facekit.detail import (
    DECODER_ONLY,
    DetailSettings,
    detail_weight,
    forehead_points,
    photo_map,
    photo_shape,
    transfer_detail,
)
from facekit.errors import FacekitError
from facekit.fidelity import abs_laplacian, hull_mask

SIZE = 112


def face_points(size: int = SIZE) -> np.ndarray:
    """68 iBUG-like points: a jaw on an ellipse, the rest spread inside, inner lips (60-67) a small octagon."""
    centre = np.array([size / 2, size / 2 + 4])
    angles = np.linspace(np.pi * 0.05, np.pi * 0.95, 17)
    jaw = centre + np.stack([-np.cos(angles) * size * 0.33, np.sin(angles) * size * 0.38 - size * 0.08], 1)
    rng = np.random.default_rng(0)
    inner = centre + rng.uniform(-0.22, 0.22, (43, 2)) * size - [0, size * 0.08]
    lips_angles = np.linspace(0, 2 * np.pi, 8, endpoint=False)
    lips = centre + np.array([0, size * 0.17]) + np.stack([np.cos(lips_angles) * 9, np.sin(lips_angles) * 4], 1)
    return np.vstack([jaw, inner, lips])


def plain_face(size: int = SIZE) -> np.ndarray:
    return np.full((size, size, 3), (170, 130, 110), np.uint8)


def test_strength_zero_is_the_decoders_face() -> None:
    points = face_points()
    photo = np.random.default_rng(1).integers(0, 256, (SIZE * 2, SIZE * 2, 3), dtype=np.uint8)
    output = plain_face()
    same = transfer_detail(output, points, photo, points * 2, DetailSettings(strength=0.0))
    assert np.array_equal(same, output)


def test_fine_texture_moves_inside_the_face_only() -> None:
    points = face_points()
    noise = np.random.default_rng(2).normal(128, 40, (SIZE, SIZE)).clip(0, 255).astype(np.uint8)
    photo = np.repeat(noise[..., None], 3, axis=2)
    output = plain_face()
    result = transfer_detail(output, points, photo, points, DetailSettings(forehead=0.0))
    inside = hull_mask(points, SIZE) & (detail_weight(points, SIZE, *photo_map(points, points, SIZE)) > 0.9)
    outside = ~hull_mask(points, SIZE, dilate_px=6)
    sharpness = abs_laplacian(result)
    assert sharpness[inside].mean() > 10 * max(abs_laplacian(output)[inside].mean(), 0.1)
    assert np.array_equal(result[outside], output[outside])  # the background is the decoder's
    # Colour is kept: the gain is the same for the three channels, so hue ratios stay.
    ratio = result[inside].astype(float) / output[inside].astype(float)
    assert np.abs(ratio[:, 0] - ratio[:, 2]).mean() < 0.03


def real_points(size: int = SIZE) -> np.ndarray:
    """dlib's 68 points of facekit's test face (a 200 px photo), scaled to a ``size`` frame."""
    from facekit.testing import real_face

    return np.asarray(real_face().ibug68 * size / 200.0, np.float64)


def test_forehead_points_rise_perpendicular_to_the_eyes() -> None:
    points = real_points()
    iod = np.linalg.norm(points[42:48].mean(0) - points[36:42].mean(0))
    raised = forehead_points(points, 1.0)
    assert np.allclose(np.linalg.norm(raised - points[17:27], axis=1), iod)
    assert (raised[:, 1] < points[17:27, 1] - 0.9 * iod).all()  # up the (nearly upright) face
    # A rolled face: the points rise along the rolled face's up direction, not the image's.
    angle = np.deg2rad(30)
    rotation = np.array([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]])
    centre = points.mean(0)
    rolled = (points - centre) @ rotation.T + centre
    assert np.allclose(forehead_points(rolled, 1.0), (raised - centre) @ rotation.T + centre)


def test_the_forehead_takes_the_photos_detail_and_the_background_stays() -> None:
    """With ``forehead`` the band reaches above the brows (forehead, hairline), nowhere else: below the brows and
    outside both regions the face is what it is without."""
    import cv2

    points = real_points()
    noise = np.random.default_rng(5).normal(128, 40, (SIZE, SIZE)).clip(0, 255).astype(np.uint8)
    photo = np.repeat(noise[..., None], 3, axis=2)
    output = plain_face()
    without = transfer_detail(output, points, photo, points, DetailSettings(forehead=0.0))
    reach = transfer_detail(output, points, photo, points, DetailSettings(forehead=1.0))
    iod = np.linalg.norm(points[42:48].mean(0) - points[36:42].mean(0))
    brow_top = points[17:27, 1].min()
    x0, x1 = np.round(points[[19, 24], 0]).astype(int)
    forehead = (slice(int(brow_top - 0.8 * iod), int(brow_top - 0.3 * iod)), slice(x0, x1))
    assert np.array_equal(without[forehead], output[forehead])  # the 68 points' hull ends at the brows
    assert abs_laplacian(reach)[forehead].mean() > 10 * max(abs_laplacian(without)[forehead].mean(), 0.1)
    region = np.concatenate([points, forehead_points(points, 1.0)])
    outside = ~hull_mask(region, SIZE, dilate_px=6)
    assert np.array_equal(reach[outside], output[outside])
    below = hull_mask(points, SIZE) & (np.arange(SIZE)[:, None] > points[33, 1])  # nose tip to chin
    assert np.array_equal(reach[below], without[below])
    # The face inside its soft edge: the same band under the same weight.
    middle = cv2.erode(hull_mask(points, SIZE).astype(np.uint8), np.ones((9, 9), np.uint8)) > 0
    assert np.abs(reach[middle].astype(int) - without[middle].astype(int)).max() <= 1


def test_nothing_is_read_beyond_the_photos_edge() -> None:
    """A photo cropped just above the brows: the forehead maps above its top row. The band would read the replicated
    edge there (vertical streaks); the output keeps the decoder's pixels wherever the map leaves the photo, and the
    face inside the photo still takes the band."""
    points = real_points()
    noise = np.random.default_rng(6).normal(128, 40, (SIZE, SIZE)).clip(0, 255).astype(np.uint8)
    photo = np.repeat(noise[..., None], 3, axis=2)
    cropped = points - [0.0, points[17:27, 1].min() - 3.0]  # the brows 3 px below the photo's top row
    output = plain_face()
    result = transfer_detail(output, points, photo, cropped, DetailSettings())
    _, map_y = photo_map(cropped, points, SIZE)
    beyond = (map_y < -0.5) & hull_mask(np.concatenate([points, forehead_points(points, 1.5)]), SIZE)
    assert beyond.sum() > 200  # the case is there: a good part of the forehead maps above the photo
    assert np.array_equal(result[beyond], output[beyond])
    inside = hull_mask(points, SIZE) & (map_y > 20)
    assert abs_laplacian(result)[inside].mean() > 10 * max(abs_laplacian(output)[inside].mean(), 0.1)


def test_smooth_light_on_the_photo_does_not_move() -> None:
    """A strong left-right light gradient is below the detail band: the even light of the output stays."""
    points = face_points()
    ramp = np.linspace(30, 240, SIZE)[None, :].repeat(SIZE, 0)
    photo = np.repeat(ramp[..., None], 3, axis=2).round().astype(np.uint8)
    output = plain_face()
    result = transfer_detail(output, points, photo, points, DetailSettings())
    assert np.abs(result.astype(int) - output.astype(int)).max() <= 3


def test_the_inner_mouth_keeps_the_decoders_pixels() -> None:
    """A smile's teeth must not show through the neutral face's closed mouth."""
    points = face_points()
    noise = np.random.default_rng(3).normal(128, 40, (SIZE, SIZE)).clip(0, 255).astype(np.uint8)
    photo = np.repeat(noise[..., None], 3, axis=2)
    weight = detail_weight(points, SIZE, *photo_map(points, points, SIZE))
    lips_centre = np.round(points[60:68].mean(axis=0)).astype(int)
    assert weight[lips_centre[1], lips_centre[0]] < 0.05
    result = transfer_detail(plain_face(), points, photo, points, DetailSettings())
    x, y = lips_centre
    assert np.abs(result[y - 1 : y + 2, x - 1 : x + 2].astype(int) - plain_face()[0, 0].astype(int)).max() <= 3


def test_a_squeezed_side_is_not_trusted() -> None:
    """A turned face: the far half of the photo's face is compressed; its detail weight falls there."""
    points = face_points()
    turned = points.copy()
    left = turned[:, 0] < SIZE / 2
    turned[left, 0] = SIZE / 2 - (SIZE / 2 - turned[left, 0]) * 0.25  # left half seen at a grazing angle
    weight = detail_weight(points, SIZE, *photo_map(turned, points, SIZE))
    rows = slice(40, 70)
    assert weight[rows, 30:45].mean() < 0.2
    assert weight[rows, 67:82].mean() > 0.8


def test_a_large_photo_is_shrunk_to_the_faces_scale() -> None:
    points = face_points()
    noise = np.random.default_rng(4).normal(128, 40, (SIZE, SIZE)).clip(0, 255).astype(np.uint8)
    small = np.repeat(noise[..., None], 3, axis=2)
    big = np.repeat(np.repeat(small, 4, axis=0), 4, axis=1)  # the same photo at 4x
    a = transfer_detail(plain_face(), points, small, points, DetailSettings())
    b = transfer_detail(plain_face(), points, big, points * 4 + 1.5, DetailSettings())
    inside = hull_mask(points, SIZE)
    assert np.abs(a[inside].astype(int) - b[inside].astype(int)).mean() < 4


def test_other_schemes_and_bad_settings_are_refused() -> None:
    with pytest.raises(FacekitError, match="decoder's scheme"):
        transfer_detail(plain_face(), face_points(), plain_face(), face_points()[:5], DetailSettings())
    with pytest.raises(ValueError, match="strength"):
        DetailSettings(strength=-1)
    with pytest.raises(ValueError, match="sigma"):
        DetailSettings(sigma=100)
    with pytest.raises(ValueError, match="forehead"):
        DetailSettings(forehead=3.0)
    assert DetailSettings.parse("1:4:0.5:0.25").forehead == 0.25
    with pytest.raises(ValueError, match="FOREHEAD"):
        DetailSettings.parse("1:4:0.5:1:2")


def test_the_shipped_pipeline_gets_sharper_and_keeps_its_background(shipped_normalizer: Any, data_root: Path) -> None:
    """On a real photo: photo detail on (the default) raises the detail ratio well above the decoder's alone and leaves
    every pixel outside the face as the decoder made it."""
    import facekit
    from facekit.data.sources import london_photos
    from facekit.fidelity import detail_ratio
    from facekit.images import load_rgb
    from facekit.normalize import Normalizer

    assert shipped_normalizer.detail == DetailSettings()
    image = load_rgb(london_photos(data_root, "smiling_front")[0].path)[0]
    # The band alone: the decoder's face on the same (photo-shaped) landmarks, without the photo's fine detail.
    plain = Normalizer(*parts(shipped_normalizer), detail=DetailSettings(strength=0.0)).normalize(image)
    sharp = shipped_normalizer.normalize(image)
    assert np.array_equal(plain.landmarks, sharp.landmarks)
    ratio = [detail_ratio(f.image, f.landmarks, image, f.source_landmarks) for f in (plain, sharp)]
    assert ratio[1] > ratio[0] + 0.15, ratio
    region = np.concatenate([sharp.landmarks, forehead_points(sharp.landmarks, DetailSettings().forehead)])
    outside = ~hull_mask(region, SIZE, dilate_px=6)  # the face and the forehead above it take the band
    assert np.array_equal(plain.image[outside], sharp.image[outside])
    # Colour measurements (adjust, attributes) read the decoder's own face on its own landmarks, which neither the band
    # nor the shape touches.
    alone = Normalizer(*parts(shipped_normalizer), detail=DECODER_ONLY).normalize(image)
    assert np.array_equal(sharp.decoder_image, alone.image) and np.array_equal(plain.decoder_image, alone.image)
    assert np.array_equal(sharp.decoder_landmarks, alone.landmarks)
    assert alone.decoded is None and alone.decoded_landmarks is None

    five = facekit.load_component("detector", "dlib-5pt")
    assert Normalizer(*parts(shipped_normalizer)[:2], five, shipped_normalizer.meta).detail == DECODER_ONLY
    # (a recipe's infer stage reaches this too: the way out is named for both; before, `facekit normalize` only)
    with pytest.raises(FacekitError, match=r"68 iBUG.*--detail 0.*infer\.detail: 0"):
        Normalizer(*parts(shipped_normalizer)[:2], five, shipped_normalizer.meta, detail=DetailSettings())


def parts(normalizer: Any) -> tuple[Any, Any, Any, Any]:
    return normalizer.decoder, normalizer.encoder, normalizer.detector, normalizer.meta


def test_degenerate_landmarks_give_the_decoders_face(caplog: pytest.LogCaptureFixture) -> None:
    """Landmarks all on one line cannot define a map: the face comes back unchanged instead of failing the batch. A
    textured photo, so that a working map would change the face (the last line shows it does)."""
    points = face_points()
    noise = np.random.default_rng(2).normal(128, 40, (SIZE, SIZE)).clip(0, 255).astype(np.uint8)
    photo = np.repeat(noise[..., None], 3, axis=2)
    line = np.stack([np.linspace(10, 100, 68), np.linspace(10, 100, 68)], axis=1)
    output = plain_face()
    # The photo's points on a line: the map squeezes the face onto it, and a squeezed side is not trusted.
    assert np.array_equal(transfer_detail(output, points, photo, line, DetailSettings()), output)
    # The predicted points on a line: no spline through them (SplineError), said in the log.
    with caplog.at_level("WARNING", logger="facekit.detail"):
        assert np.array_equal(transfer_detail(output, line, photo, points, DetailSettings()), output)
    assert "photo detail skipped for one face" in caplog.text and "collinear" in caplog.text
    assert not np.array_equal(transfer_detail(output, points, photo, points, DetailSettings()), output)


def test_the_command_line_follows_the_detector(shipped_normalizer: Any, tmp_path: Path) -> None:
    """`facekit normalize` without --detail gives photo detail where the detector has 68 points and the decoder's
    face behind any other; asking for detail behind a 5-point detector is an error that names the flag."""
    import json

    from safetensors import safe_open
    from safetensors.torch import load_file, save_file

    from facekit.checkpoints import META_DIGEST_KEY, text_digest
    from facekit.normalize import default_model_path
    from tests.helpers import run_cli

    source = str(default_model_path())
    with safe_open(source, framework="pt") as handle:
        header = handle.metadata()
    meta = json.loads(header["facekit"])
    meta["recipe"]["components"]["detector"] = {"name": "dlib-5pt"}
    five = tmp_path / "five-point.safetensors"
    text = json.dumps(meta)
    if META_DIGEST_KEY in header:  # a model that checks its metadata gets the new text's checksum
        header[META_DIGEST_KEY] = text_digest(text)
    save_file(load_file(source), str(five), metadata={**header, "facekit": text})
    face = Path(__file__).resolve().parents[2] / "facekit" / "testing_data" / "face.jpg"
    done = run_cli("normalize", str(face), "-o", str(tmp_path / "out"), "--checkpoint", str(five))
    assert done.returncode == 0, done.stdout + done.stderr
    record = json.loads((tmp_path / "out" / "face.json").read_text())
    assert record["detail"]["strength"] == 0.0, record["detail"]
    refused = run_cli("normalize", str(face), "-o", str(tmp_path / "out2"), "--checkpoint", str(five), "--detail", "1")
    assert refused.returncode == 1 and "--detail 0" in refused.stderr, refused.stderr


def test_a_folded_map_is_not_trusted() -> None:
    """Where the photo map folds over (the far side of a turned face crossing the nose line), it reads the photo
    mirrored: no detail there, however large the fold's area."""
    from facekit.detail import squeeze_confidence

    ys, xs = np.mgrid[0:SIZE, 0:SIZE].astype(np.float32)
    map_x = np.where(xs < 80, xs, 160 - xs)  # columns 80+ read the photo right to left
    inside = np.ones((SIZE, SIZE), bool)
    confidence = squeeze_confidence(map_x, ys, inside)
    assert confidence[:, 10:70].min() == 1.0 and confidence[:, 85:].max() == 0.0


def test_photo_shape_moves_jaw_brows_nose_and_eyes_half_way_and_keeps_the_mouth() -> None:
    """The photo's landmarks are carried into the output frame by a similarity (its pose's roll and scale undone)
    before points 0-47 move; the mouth (48-67) stays the decoder's."""
    from facekit.align import apply_transform

    predicted = face_points()
    own = predicted + np.random.default_rng(3).normal(0, 2.0, predicted.shape)
    turn = np.array([[0.0, -2.0, 300.0], [2.0, 0.0, 40.0]])  # 90 degrees, twice the size, shifted
    photo = apply_transform(turn, own)
    moved = photo_shape(predicted, photo, 0.5)
    assert np.array_equal(moved[48:], predicted[48:])
    half = predicted[:48] + 0.5 * (own[:48] - predicted[:48])
    assert np.abs(moved[:48] - half).max() < 1.0
    assert np.array_equal(photo_shape(predicted, photo, 0.0), predicted)
    with pytest.raises(FacekitError, match="iBUG-68"):
        photo_shape(predicted[:5], photo[:5], 0.5)


def test_the_shipped_pipeline_takes_the_photos_shape(shipped_normalizer: Any, data_root: Path) -> None:
    """On a real photo the output's landmarks 0-47 end up between the decoder's and the photo's own (in the output
    frame), the mouth is the decoder's, and the decoder-only setting gives the decoder's landmarks exactly."""
    from facekit.align import apply_transform, similarity_transform
    from facekit.data.sources import london_photos
    from facekit.images import load_rgb
    from facekit.normalize import Normalizer

    image = load_rgb(london_photos(data_root, "smiling_front")[1].path)[0]
    decoder_only = Normalizer(*parts(shipped_normalizer), detail=DECODER_ONLY).normalize(image)
    shaped = shipped_normalizer.normalize(image)
    own = decoder_only.source_landmarks
    carried = apply_transform(similarity_transform(own, decoder_only.landmarks), own)
    before = np.linalg.norm(decoder_only.landmarks[:48] - carried[:48], axis=1).mean()
    after = np.linalg.norm(shaped.landmarks[:48] - carried[:48], axis=1).mean()
    assert before > 0.5 and abs(after - before / 2) < 0.05 * before, (before, after)
    assert np.allclose(shaped.landmarks[48:], decoder_only.landmarks[48:], atol=1e-3)
    assert np.array_equal(shaped.decoder_image, decoder_only.image)
    assert np.array_equal(shaped.decoder_landmarks, decoder_only.landmarks)


def test_detail_settings_parse_like_the_command_line() -> None:
    from facekit.detail import detail_settings

    assert DetailSettings.parse("0") == DECODER_ONLY == detail_settings(0.0, None)
    assert DetailSettings.parse("1:4:0") == DetailSettings(shape=0.0) == detail_settings(None, 0.0)
    assert DetailSettings.parse("0.5") == DetailSettings(strength=0.5) == detail_settings(0.5, None)
    assert detail_settings(None, None) is None
    assert detail_settings(0.0, 0.5) == DetailSettings(strength=0.0, shape=0.5)
    with pytest.raises(ValueError, match="STRENGTH"):
        DetailSettings.parse("1:2:0.5:1:4")
    assert DetailSettings.parse("1:4:0.5:0") == DetailSettings(forehead=0.0) == detail_settings(None, None, 0.0)
    # Records: without the band the forehead's reach changes no pixel, so a decoder-only face keeps the record it had
    # before the setting existed (a rerun finds it made).
    assert DECODER_ONLY.as_record() == {"strength": 0.0, "sigma": 4.0, "shape": 0.0}
    assert DetailSettings().as_record() == asdict(DetailSettings())
    with pytest.raises(ValueError, match="shape"):
        DetailSettings(shape=1.5)
    # The band's width and reach with the band turned off were accepted and unused (`--detail 0 --detail-forehead 1`,
    # `infer.detail: 0` beside `infer.detail_forehead`); the shape still applies there.
    with pytest.raises(FacekitError, match=r"forehead shape the photo's band, which strength 0 \(--detail 0\)"):
        detail_settings(0.0, None, 1.0)
    with pytest.raises(FacekitError, match="sigma shape the photo's band"):
        DetailSettings.parse("0:6")
    from facekit.recipe import load_recipe

    with pytest.raises(  # with the recipe, named by the --set that gave it
        FacekitError, match=r"--set infer.detail_forehead=1.0: infer.detail_forehead shapes the photo's detail band"
    ):
        load_recipe("recipes/demo.yaml", ["infer.detail=0", "infer.detail_forehead=1.0"])
    assert load_recipe("recipes/demo.yaml", ["infer.detail=0", "infer.detail_shape=0.5"]).recipe.infer.detail == 0


def test_a_decoder_without_its_own_warp_keeps_its_landmarks(shipped_normalizer: Any, data_root: Path) -> None:
    """Photo shape re-warps the decoder's texture with the decoder's own warp and mean landmarks (optional in
    TrainableDecoder); a third-party decoder without them keeps its landmarks and image, and still gets the band."""
    import torch

    from facekit.data.sources import london_photos
    from facekit.images import load_rgb
    from facekit.normalize import Normalizer

    class Opaque(torch.nn.Module):
        def __init__(self, inner: Any) -> None:
            super().__init__()
            self.inner = inner
            self.feature_size, self.image_size = inner.feature_size, inner.image_size

        def forward(self, features: torch.Tensor) -> Any:
            return self.inner(features)

    decoder, encoder, detector, meta = parts(shipped_normalizer)
    image = load_rgb(london_photos(data_root, "smiling_front")[1].path)[0]
    opaque = Normalizer(Opaque(decoder), encoder, detector, meta).normalize(image)
    band_only = Normalizer(decoder, encoder, detector, meta, detail=DetailSettings(shape=0.0)).normalize(image)
    assert np.array_equal(opaque.landmarks, band_only.landmarks)
    assert np.array_equal(opaque.image, band_only.image)


def test_the_photo_map_smooths_alike_at_every_output_size() -> None:
    """Before: the smoothing was in kernel units of the output grid, and r^2 log r grows with the size squared, so a
    224 px output (the paper recipe) fitted the jittery landmarks 4x more tightly than the 112 px setting chosen."""
    from facekit.data.augment import procedural_landmarks

    rng = np.random.default_rng(3)
    base = np.round(procedural_landmarks(112)).astype(np.float64)
    photo = 1.7 * base + 20 + rng.normal(0, 1.5, base.shape)  # a photo's points with a detector's jitter
    residuals = []
    for size in (112, 224, 448):
        scale = size / 112
        map_x, map_y = photo_map(photo, base * scale, size)
        at = (base * scale).astype(int)  # on pixel centres at every size: the maps are read exactly there
        fitted = np.stack([map_x[at[:, 1], at[:, 0]], map_y[at[:, 1], at[:, 0]]], axis=1)
        residuals.append(float(np.sqrt(((fitted - photo) ** 2).sum(1).mean())))
    assert max(residuals) / min(residuals) < 1.01, residuals


def test_the_command_line_passes_the_foreheads_reach(tmp_path: Path) -> None:
    """`--detail-forehead` reaches the normalizer (the record says what made the face); other settings keep their
    defaults."""
    import json

    from tests.helpers import run_cli

    face = Path(__file__).resolve().parents[2] / "facekit" / "testing_data" / "face.jpg"
    done = run_cli("normalize", str(face), "-o", str(tmp_path / "out"), "--detail-forehead", "0.5")
    assert done.returncode == 0, done.stdout + done.stderr
    record = json.loads((tmp_path / "out" / "face.json").read_text())
    assert record["detail"] == {**asdict(DetailSettings()), "forehead": 0.5}
    refused = run_cli("normalize", str(face), "-o", str(tmp_path / "out2"), "--detail-forehead", "3")
    assert refused.returncode != 0 and "--detail-forehead" in refused.stdout + refused.stderr


def test_inside_photo_ramps_from_the_edge_of_the_outer_pixels() -> None:
    """Not pinned (helper-90's mutants): 0 at the outer edge of the border pixels (half a pixel beyond their centres),
    1 from ``ramp_px`` inside, linear in between, alike on all four sides."""
    from facekit.detail import inside_photo

    width, height, ramp = 40, 30, 4.0
    xs = np.array([-0.5, 0.0, 1.5, 3.5, 20.0, width - 2.5, width - 0.5], np.float32)
    along_x = inside_photo(xs[None], np.full((1, xs.size), 15.0, np.float32), width, height, ramp)[0]
    assert np.allclose(along_x, [0.0, 0.125, 0.5, 1.0, 1.0, 0.5, 0.0])
    ys = np.array([-0.5, 1.5, height - 2.5, height - 0.5], np.float32)
    along_y = inside_photo(np.full((1, ys.size), 20.0, np.float32), ys[None], width, height, ramp)[0]
    assert np.allclose(along_y, [0.0, 0.5, 0.5, 0.0])


def test_a_wide_photo_gives_the_face_at_its_right_the_same_detail() -> None:
    """Not pinned (helper-90's mutants; the other tests use square photos): the photo's edge is its width across and
    its height down, so a face beyond the photo's height from the left edge still takes its detail."""
    points = face_points()
    noise = np.random.default_rng(7).normal(128, 40, (SIZE, SIZE)).clip(0, 255).astype(np.uint8)
    square = np.repeat(noise[..., None], 3, axis=2)
    wide = np.zeros((SIZE, 3 * SIZE, 3), np.uint8)
    wide[:, 2 * SIZE :] = square
    alone = transfer_detail(plain_face(), points, square, points, DetailSettings(shape=0.0))
    beside = transfer_detail(plain_face(), points, wide, points + np.array([2 * SIZE, 0]), DetailSettings(shape=0.0))
    inside = hull_mask(points, SIZE)
    assert abs_laplacian(alone)[inside].mean() > 10
    assert np.abs(alone[inside].astype(int) - beside[inside].astype(int)).max() <= 1


def test_photo_detail_finer_than_the_output_is_filtered_out_when_the_photo_is_shrunk() -> None:
    """Not pinned (helper-90's mutants; the 4x test photo had no detail finer than its 1x copy): a large photo is shrunk
    with an area filter before the band is read, so noise of the photo's own pixels, finer than an output pixel,
    averages out instead of aliasing into the band as coarse texture."""
    points = face_points()
    fine = np.random.default_rng(8).normal(128, 40, (4 * SIZE, 4 * SIZE)).clip(0, 255).astype(np.uint8)
    coarse = np.random.default_rng(8).normal(128, 40, (SIZE, SIZE)).clip(0, 255).astype(np.uint8)
    big = transfer_detail(plain_face(), points, np.repeat(fine[..., None], 3, 2), points * 4 + 1.5, DetailSettings())
    own = transfer_detail(plain_face(), points, np.repeat(coarse[..., None], 3, 2), points, DetailSettings())
    inside = hull_mask(points, SIZE)
    assert abs_laplacian(big)[inside].mean() < 0.4 * abs_laplacian(own)[inside].mean()


def test_strength_scales_the_band_and_zero_skips_even_another_scheme() -> None:
    """Not pinned (helper-90's mutants): strength multiplies the band in log space (half the strength, about half the
    change), and strength 0 is the decoder's face before anything is read, even from landmarks of another scheme;
    shape alone is still photo detail at work (``active``)."""
    points = face_points()
    noise = np.random.default_rng(9).normal(128, 20, (SIZE, SIZE)).clip(0, 255).astype(np.uint8)
    photo = np.repeat(noise[..., None], 3, axis=2)
    output = plain_face()
    inside = hull_mask(points, SIZE)
    full = transfer_detail(output, points, photo, points, DetailSettings(shape=0.0))
    half = transfer_detail(output, points, photo, points, DetailSettings(strength=0.5, shape=0.0))
    change = [np.log(r[inside].astype(float) / output[inside]).std() for r in (full, half)]
    assert 0.4 < change[1] / change[0] < 0.6
    assert transfer_detail(output, points, photo, points[:5], DECODER_ONLY) is output
    assert DetailSettings.of(strength=0, shape=0.5).active and not DECODER_ONLY.active


def test_the_band_is_bounded_at_a_hard_edge() -> None:
    """Not pinned (helper-90's mutants): a black-to-white edge's band stops at BAND_LIMIT (a highlight or hard shadow
    at most doubles or halves a pixel)."""
    from facekit.detail import BAND_LIMIT, detail_band

    edge = np.zeros((SIZE, SIZE, 3), np.uint8)
    edge[:, SIZE // 2 :] = 255
    grid = np.meshgrid(np.arange(SIZE, dtype=np.float32), np.arange(SIZE, dtype=np.float32))
    band = detail_band(edge, grid[0], grid[1], 4.0)
    assert np.isclose(np.abs(band).max(), BAND_LIMIT)


def test_the_band_has_the_same_width_on_the_face_at_every_output_size() -> None:
    """``sigma`` is in px of a 112 px output: a 224 px model (the paper recipe) takes a band twice as wide in its
    own pixels, so the same photo carries the same detail onto the face (a mutant that left sigma unscaled took half
    the band's contrast at 224 px and no test noticed; helper-90)."""
    import cv2

    points = face_points()
    y, x = np.mgrid[0 : SIZE * 2, 0 : SIZE * 2]
    stripes = 128 + 40 * np.sin(2 * np.pi * (x + 0.5 * y) / 24.0)  # period 12 px at the 112 px output's scale
    photo = np.repeat(stripes[..., None], 3, axis=2).clip(0, 255).astype(np.uint8)
    contrasts = []
    for size in (SIZE, 2 * SIZE):
        scale = size / SIZE
        output = plain_face(size)
        result = transfer_detail(output, points * scale, photo, points * 2, DetailSettings(forehead=0.0))
        if size != SIZE:
            result = cv2.resize(result, (SIZE, SIZE), interpolation=cv2.INTER_AREA)
        inside = hull_mask(points, SIZE, dilate_px=-8)
        contrasts.append(float(np.log(result[..., 1][inside].astype(float)).std()))
    assert 0.85 < contrasts[1] / contrasts[0] < 1.15, contrasts


def test_a_larger_output_holds_the_photos_finer_detail(shipped_normalizer: Any, data_root: Path) -> None:
    """`facekit normalize --size N` (Normalizer.size): the face rendered at N px with the photo's band taken at N px.
    Before, a normalized face was the model's 112 px, and a larger one only that upsampled: a 600 px photo's eyelids
    and pores were shrunk away. The same face and places at every size; the decoder's own face stays at its size."""
    import torch

    from facekit.data.sources import london_photos
    from facekit.fidelity import abs_laplacian
    from facekit.images import load_rgb
    from facekit.normalize import Normalizer, resize_faces

    image = load_rgb(london_photos(data_root, "smiling_front")[0].path)[0]
    assert min(image.shape[:2]) >= 448  # a photo with more detail than 112 px hold
    small = shipped_normalizer.normalize(image)
    large = Normalizer(*parts(shipped_normalizer), size=224).normalize(image)
    assert small.image.shape == (SIZE, SIZE, 3) and large.image.shape == (224, 224, 3)
    assert np.allclose(large.landmarks, (small.landmarks + 0.5) * 2 - 0.5, atol=1e-3)
    assert np.array_equal(large.decoder_image, small.decoder_image)  # what colour measurements read: unchanged
    upsampled = (
        resize_faces(torch.from_numpy(small.image).permute(2, 0, 1)[None].float() / 255, 224)[0]
        .permute(1, 2, 0)
        .numpy()
    )
    upsampled = np.round(upsampled * 255).astype(np.uint8)
    inside = hull_mask(large.landmarks, 224)
    sharpness = [float(abs_laplacian(face)[inside].mean()) for face in (upsampled, large.image)]
    assert sharpness[1] > 1.5 * sharpness[0], sharpness
    # Overall the same face: the large one shrunk back is close to the small one.
    shrunk = resize_faces(torch.from_numpy(large.image).permute(2, 0, 1)[None].float() / 255, SIZE)[0]
    assert np.abs(shrunk.permute(1, 2, 0).numpy() * 255 - small.image.astype(np.float32)).mean() < 4.0
    # The decoder's face alone at 224 px (no band, no shape) is its face resampled and warped at that size.
    alone = Normalizer(*parts(shipped_normalizer), detail=DECODER_ONLY, size=224).normalize(image)
    assert alone.image.shape == (224, 224, 3) and alone.decoder_image.shape == (SIZE, SIZE, 3)
    assert Normalizer(*parts(shipped_normalizer), size=np.int64(224)).size == 224  # numpy's integers are numbers too
    for bad in (0, 16, 2048, 224.0, True, "224"):
        with pytest.raises(FacekitError, match="output size is a whole number of pixels from 32 to 1024"):
            Normalizer(*parts(shipped_normalizer), size=bad)


def test_the_command_line_records_the_output_size(tmp_path: Path, data_root: Path) -> None:
    """--size is part of what an output was made with: a rerun at another size does not count the outputs as done
    (it says 'exists'), the same size does, and a run without --size keeps records without the key (so outputs made
    before the option stay done)."""
    import json
    import shutil

    from facekit.data.sources import london_photos
    from tests.helpers import run_cli

    photos = tmp_path / "in"
    photos.mkdir()
    shutil.copy(london_photos(data_root, "smiling_front")[0].path, photos / "p.jpg")
    out = tmp_path / "out"
    made = run_cli("normalize", str(photos), "-o", str(out), "--size", "448")
    assert made.returncode == 0, made.stderr
    record = json.loads((out / "p.json").read_text())
    assert record["size"] == 448 and len(record["landmarks"]) == 68
    from PIL import Image

    assert Image.open(out / "p.png").size == (448, 448)
    assert Image.open(out / "p_side.png").size[1] == 448  # the face at its size beside the photo
    again = run_cli("normalize", str(photos), "-o", str(out), "--size", "448")
    assert again.returncode == 0 and "done" in again.stdout, again.stdout
    other = run_cli("normalize", str(photos), "-o", str(out))
    assert other.returncode == 3 and "exists" in other.stdout, other.stdout
    plain = run_cli("normalize", str(photos), "-o", str(tmp_path / "plain"))
    assert plain.returncode == 0 and "size" not in json.loads((tmp_path / "plain" / "p.json").read_text())
    wrong = run_cli("normalize", str(photos), "-o", str(tmp_path / "w"), "--size", "4096")
    assert wrong.returncode == 2 and "--size" in wrong.stderr


def test_a_decoder_without_landmarks_is_resampled_to_the_output_size(shipped_normalizer: Any, data_root: Path) -> None:
    """The plain-cnn ablation gives no landmarks: with `size` its face came back at the model's 112 px (output_size
    said 224, and `facekit normalize --size` recorded the size it had not made). Now its image is resampled."""
    import facekit
    from facekit.data.sources import london_photos
    from facekit.images import load_rgb
    from facekit.normalize import Normalizer

    image = load_rgb(london_photos(data_root, "smiling_front")[0].path)[0]
    plain = facekit.load_component("decoder", "plain-cnn", feature_size=shipped_normalizer.decoder.feature_size)
    _, encoder, detector, meta = parts(shipped_normalizer)
    for detail in (None, DECODER_ONLY):
        normalizer = Normalizer(plain.eval(), encoder, detector, meta, detail=detail, size=224)
        face = normalizer.normalize(image)
        assert normalizer.output_size == 224 and face.image.shape == (224, 224, 3), face.image.shape
        assert face.landmarks is None and face.decoder_landmarks is None
        assert face.decoder_image.shape == (SIZE, SIZE, 3)


def test_the_models_own_size_given_is_the_same_as_none(tmp_path: Path, data_root: Path) -> None:
    """`--size 112` with a 112 px model makes the same face as no --size: outputs made without it are done (before:
    'exists', exit 3, and with --overwrite a record with "size": 112 that a run without --size then called
    another's)."""
    import json
    import shutil

    from facekit.data.sources import london_photos
    from tests.helpers import run_cli

    photos = tmp_path / "in"
    photos.mkdir()
    shutil.copy(london_photos(data_root, "smiling_front")[0].path, photos / "p.jpg")
    out = tmp_path / "out"
    assert run_cli("normalize", str(photos), "-o", str(out)).returncode == 0
    same = run_cli("normalize", str(photos), "-o", str(out), "--size", str(SIZE))
    assert same.returncode == 0 and "done" in same.stdout, same.stdout
    given = run_cli("normalize", str(photos), "-o", str(tmp_path / "given"), "--size", str(SIZE))
    assert given.returncode == 0 and "size" not in json.loads((tmp_path / "given" / "p.json").read_text())


def test_a_normalizer_without_the_size_attribute_renders_at_the_models_size(
    shipped_normalizer: Any, data_root: Path
) -> None:
    """A Normalizer unpickled from a state saved before `size` existed (or a subclass that skips __init__) has no
    `size` in its __dict__: output_size raised AttributeError on every normalize."""
    import copy

    from facekit.data.sources import london_photos
    from facekit.images import load_rgb

    image = load_rgb(london_photos(data_root, "smiling_front")[0].path)[0]
    old = copy.copy(shipped_normalizer)
    del old.__dict__["size"]
    assert old.output_size == SIZE and old.normalize(image).image.shape == (SIZE, SIZE, 3)
