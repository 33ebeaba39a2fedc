"""The adjust app (white balance and exposure from the normalized face) and its baselines: a cast on a real face is
undone, strength and channel options do what they say, a photo without a face is left alone, files keep their
format, ICC profile and EXIF."""

from __future__ import annotations

import io
import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

from facekit.apps.adjust import LUMINANCE, Correction, FaceAdjuster, apply_correction, piecewise_lut
from facekit.apps.baselines import STATISTICAL, GlobalWhiteBalance, apply_gains
from facekit.errors import FacekitError
from facekit.testing import real_face
from tests.helpers import arrays_held_at_encode, run_cli


def angular_error(a: np.ndarray, b: np.ndarray) -> float:
    x, y = a.reshape(-1, 3).mean(0), b.reshape(-1, 3).mean(0)
    return float(np.degrees(np.arccos(np.clip(x @ y / np.linalg.norm(x) / np.linalg.norm(y), -1, 1))))


FACE_BOX = (slice(80, 150), slice(60, 140))  # cheeks, nose and mouth of the 200 px test face


@pytest.fixture
def adjuster(shipped_normalizer: Any) -> FaceAdjuster:
    return FaceAdjuster(shipped_normalizer)


def test_a_colour_cast_on_a_real_face_is_undone(adjuster: FaceAdjuster) -> None:
    photo = real_face().image.copy()
    cast = apply_gains(photo, np.array([1.15, 1.0, 0.8]))
    before = angular_error(cast[FACE_BOX], photo[FACE_BOX])
    corrected, correction = adjuster.correct(cast)
    assert correction is not None and correction.face["faces_used"] == 1
    after = angular_error(corrected[FACE_BOX], photo[FACE_BOX])
    assert before > 5.0 and after < before / 3, (before, after)
    # The uncast photo (the London studio light the model was trained towards) barely moves.
    _, own = adjuster.correct(photo)
    assert own is not None and own.mapping == "gains" and np.abs(own.gains - 1.0).max() < 0.08, own.gains
    _, paper = FaceAdjuster(adjuster.normalizer, mapping="ycrcb", region="box").correct(photo)
    assert paper is not None and max(abs(t - s) for s, t in zip(paper.source, paper.target, strict=True)) < 4.0


def test_a_small_face_in_a_large_photo_is_found(adjuster: FaceAdjuster) -> None:
    """Before: adjust looked for faces only on a copy shrunk to 1,024 px, so a face that normalize finds in a large
    frame (here ~90 px wide in 4,000 x 3,000, ~22 px on the copy) was 'no_face' and the photo was left as it was; a
    second copy of 2,048 px finds it."""
    from PIL import Image

    face = np.asarray(Image.fromarray(real_face().image).resize((160, 160), Image.Resampling.LANCZOS))
    large = np.full((3000, 4000, 3), 150, np.uint8)
    large[1400:1560, 2000:2160] = face  # a face box of ~90 px: ~22 px on the 1,024 px copy
    cast = apply_gains(large, np.array([1.15, 1.0, 0.8]))
    corrected, correction = adjuster.correct(cast)
    assert correction is not None and corrected.shape == cast.shape
    red, blue = correction.gains[0], correction.gains[2]
    assert red < 1.0 < blue  # it undoes the cast's direction


def test_a_small_face_in_a_large_photo_in_another_colour_profile_is_found(tmp_path: Path) -> None:
    """The same on the command line for a JPEG in a colour profile other than sRGB (a phone's Display P3), which
    adjust estimates on a small sRGB copy without converting the whole photo: that copy is 1,024 px, so the face was
    'no_face' there too until it fell back to the general path and its 2,048 px copy."""
    from facekit.testing import DISPLAY_P3_COLORANTS, matrix_icc

    face = np.asarray(Image.fromarray(real_face().image).resize((160, 160), Image.Resampling.LANCZOS))
    large = np.full((3000, 4000, 3), 150, np.uint8)
    large[1400:1560, 2000:2160] = face
    p3 = matrix_icc(DISPLAY_P3_COLORANTS, 2.2, "test Display P3")
    Image.fromarray(apply_gains(large, np.array([1.15, 1.0, 0.8]))).save(
        tmp_path / "group.jpg", quality=90, icc_profile=p3
    )
    result = run_cli("adjust", str(tmp_path / "group.jpg"), "-o", str(tmp_path / "out"))
    assert result.returncode == 0 and "adjusted" in result.stdout, result.stdout + result.stderr
    record = json.loads((tmp_path / "out" / "group.json").read_text())
    assert record["mapping"] == "gains" and record["gains_rgb"][0] < 1.0 < record["gains_rgb"][2], record
    assert record["written"]["profile"] == "kept" and record["face"]["faces_used"] == 1
    with Image.open(tmp_path / "out" / "group.jpg") as written:
        assert written.size == (4000, 3000) and written.info.get("icc_profile") == p3


def test_strength_and_channels() -> None:
    photo = real_face().image.copy()
    correction = Correction("adjust", (120.0, 140.0, 110.0), (130.0, 135.0, 118.0))
    assert np.array_equal(apply_correction(photo, correction.scaled(0.0)), photo)
    white = correction.scaled(1.0, "white-balance")
    assert white.target[0] == white.source[0] and white.target[1:] == correction.target[1:]
    exposure = correction.scaled(0.5, "exposure")
    assert exposure.target == (125.0, 140.0, 110.0)
    lut = piecewise_lut(100.0, 120.0)
    assert lut[0] == 0 and lut[100] == 120 and lut[255] == 255 and (np.diff(lut.astype(int)) >= 0).all()
    with pytest.raises(FacekitError, match="strength"):
        correction.scaled(1.5)


@pytest.mark.parametrize("method", STATISTICAL)
def test_baselines_remove_a_global_cast_on_a_grey_card(method: str) -> None:
    rng = np.random.default_rng(0)
    grey = np.clip(rng.normal(110, 25, (60, 80, 1)).repeat(3, axis=2), 0, 255).astype(np.uint8)  # unclipped cast
    cast = apply_gains(grey, np.array([1.2, 1.0, 0.75]))
    corrected, record = GlobalWhiteBalance(method).correct(cast)
    assert record["method"] == method
    assert angular_error(corrected, grey) < angular_error(cast, grey) / 3


@pytest.mark.parametrize("method", STATISTICAL)
def test_baselines_undo_an_illuminant_in_linear_light(method: str) -> None:
    """A cast as light makes it (von Kries in linear RGB) on a colourful, unclipped scene: each baseline corrects
    the cast scene to what it makes of the scene itself (its estimate moves with the light), to rounding."""
    from facekit.apps.adjust import apply_linear_gains

    rng = np.random.default_rng(1)
    scene = np.repeat(np.repeat(rng.integers(40, 170, (12, 16, 3)), 5, axis=0), 5, axis=1).astype(np.uint8)
    warm = apply_linear_gains(scene, np.array([1.35, 1.0, 0.6]))  # about 3,000 K
    balancer = GlobalWhiteBalance(method)
    assert np.abs(balancer.correct(warm)[0].astype(int) - balancer.correct(scene)[0].astype(int)).mean() < 1.5


def test_xphoto_applies_opencvs_own_gains_in_linear_light() -> None:
    """The xphoto baseline corrects the photo as OpenCV's LearningBasedWB corrects its linear 16-bit copy (gains read
    back in the right channel order, applied in linear light), up to the mean level facekit keeps."""
    import cv2

    from facekit.apps.adjust import LINEAR_LEVELS, apply_linear_gains

    rng = np.random.default_rng(3)
    scene = rng.integers(30, 200, (60, 80, 3)).astype(np.uint8)  # thousands of colours (see the next test)
    warm = apply_linear_gains(scene, np.array([1.3, 1.0, 0.55]))
    corrected, record = GlobalWhiteBalance("xphoto").correct(warm)
    assert record["method"] == "xphoto"
    linear = LINEAR_LEVELS[warm]
    balancer = cv2.xphoto.createLearningBasedWB()
    balancer.setRangeMaxVal(65535)
    theirs = balancer.balanceWhite(np.round(linear[..., ::-1] * 65535).astype(np.uint16))[..., ::-1] / 65535.0
    ours = LINEAR_LEVELS[corrected]
    assert np.ptp(record["gains_rgb"]) > 0.05  # it did change the colour: the comparison below means something
    chroma = ours / ours.sum(axis=2, keepdims=True), theirs / theirs.sum(axis=2, keepdims=True)
    assert np.abs(chroma[0] - chroma[1]).max() < 0.01


def test_xphoto_leaves_a_photo_of_few_colours_alone() -> None:
    """OpenCV's learned estimate is undefined on a photo with fewer than 300 colours (it reads past its palette: the
    result changed from run to run), so xphoto leaves such a photo as it is, every time."""
    rng = np.random.default_rng(3)
    blocks = np.repeat(np.repeat(rng.integers(30, 200, (12, 16, 3)), 5, axis=0), 5, axis=1).astype(np.uint8)
    corrected, record = GlobalWhiteBalance("xphoto").correct(blocks)
    assert record["gains_rgb"] == [1.0, 1.0, 1.0] and np.array_equal(corrected, blocks)


def test_xphoto_without_the_contrib_build_says_how_to_get_it(monkeypatch: pytest.MonkeyPatch) -> None:
    import cv2

    monkeypatch.delattr(cv2, "xphoto")
    with pytest.raises(FacekitError, match="opencv-contrib-python-headless"):
        GlobalWhiteBalance("xphoto")  # when the corrector is made, before any photo


def test_cli_keeps_format_icc_and_exif_and_leaves_faceless_photos(tmp_path: Path) -> None:
    photos = tmp_path / "in"
    photos.mkdir()
    face = Image.fromarray(apply_gains(real_face().image.copy(), np.array([1.1, 1.0, 0.85])))
    exif = Image.Exif()
    exif[0x0112] = 1
    exif[0x010F] = "facekit-test-camera"
    from PIL import ImageCms

    srgb = ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()
    face.save(photos / "face.jpg", quality=95, exif=exif.tobytes(), icc_profile=srgb)
    lab = ImageCms.ImageCmsProfile(ImageCms.createProfile("LAB")).tobytes()  # not an RGB profile: not carried over
    face.save(photos / "lab.jpg", quality=95, icc_profile=lab)
    Image.new("RGB", (120, 120), (90, 120, 160)).save(photos / "wall.png")
    result = run_cli("adjust", str(photos), "-o", str(tmp_path / "out"))
    assert result.returncode == 3, result.stdout + result.stderr
    out = tmp_path / "out"
    written = sorted(p.name for p in out.iterdir() if not p.name.startswith("."))  # .facekit.lock: the folder's lock
    assert written == ["face.jpg", "face.json", "face_before_after.png", "lab.jpg", "lab.json", "lab_before_after.png"]
    with Image.open(out / "face.jpg") as adjusted:
        assert adjusted.format == "JPEG" and adjusted.size == face.size
        assert adjusted.info.get("icc_profile") == srgb
        assert adjusted.getexif()[0x010F] == "facekit-test-camera"
    with Image.open(out / "lab.jpg") as adjusted:
        assert "icc_profile" not in adjusted.info
    assert "no_face" in result.stdout
    # A rerun with the same settings finds its outputs done; a file of the user's at an output name is never replaced
    # (nor is an output made with other settings) unless --overwrite.
    (out / "lab.json").write_text("my notes\n")
    again = run_cli("adjust", str(photos / "lab.jpg"), str(photos / "face.jpg"), "-o", str(out))
    assert again.returncode == 3 and "exists" in again.stdout and "done" in again.stdout, again.stdout
    other = run_cli("adjust", str(photos / "face.jpg"), "-o", str(out), "--strength", "0.5")
    assert other.returncode == 3 and "exists" in other.stdout, other.stdout
    same = run_cli("adjust", str(photos / "face.jpg"), "-o", str(out))
    assert same.returncode == 0 and "done" in same.stdout, same.stdout
    # --face is a setting of the job: the largest face (the default) is left out of the record, as before the option,
    # so those outputs stay done; the central face's job is another one.
    assert "face" not in json.loads((out / "face.json").read_text())["settings"]
    central = run_cli("adjust", str(photos / "face.jpg"), "-o", str(out), "--face", "central")
    assert central.returncode == 3 and "exists" in central.stdout, central.stdout
    both = run_cli("adjust", str(photos / "face.jpg"), "-o", str(out), "--face", "central", "--all-faces")
    said = "--all-faces: averages all found, and --face central picks one"
    assert both.returncode == 1 and said in both.stderr, both.stderr
    # A run killed while writing (the record first, incomplete; the before/after not yet there) is redone.
    record = json.loads((out / "face.json").read_text())
    assert record["complete"] is True
    (out / "face_before_after.png").unlink()
    (out / "face.json").write_text(json.dumps({**record, "complete": False}))
    redone = run_cli("adjust", str(photos / "face.jpg"), "-o", str(out))
    assert redone.returncode == 0 and "adjusted" in redone.stdout, redone.stdout
    assert (out / "face_before_after.png").is_file() and json.loads((out / "face.json").read_text())["complete"]
    assert (out / "lab.json").read_text() == "my notes\n"
    replaced = run_cli("adjust", str(photos / "lab.jpg"), "-o", str(out), "--overwrite")
    assert replaced.returncode == 0 and (out / "lab.json").read_text() != "my notes\n"
    baseline = run_cli("adjust", str(photos / "wall.png"), "--method", "gray-world", "-o", str(tmp_path / "g"))
    assert baseline.returncode == 0 and (tmp_path / "g" / "wall.png").is_file()
    wall = str(photos / "wall.png")
    ignored = run_cli(
        "adjust", wall, "--method", "gray-world", "--fuse", "none", "--face", "central", "-o", str(tmp_path)
    )
    said = " ".join(ignored.stderr.split())
    assert ignored.returncode == 1 and "--face, --fuse: options of --method adjust only;" in said, said
    assert said.endswith("whole photo: leave them out"), said  # what to do (before: not said)
    # An app that is not a correction method is named as such (before: 'attributes params: strength: extra field').
    other = run_cli("adjust", wall, "--method", "attributes", "-o", str(tmp_path / "a"))
    assert other.returncode == 1 and "attributes app does not correct photos; methods: adjust," in other.stderr
    assert not (tmp_path / "a").exists()
    # An unknown one lists the methods only, with the nearest (before: every app, avatar and explore included).
    typo = run_cli("adjust", wall, "--method", "grey-world", "-o", str(tmp_path / "t"))
    assert typo.returncode == 1 and "did you mean 'gray-world'?" in typo.stderr and "avatar" not in typo.stderr
    # --model names a shipped model as the other face commands do (before: adjust had only --checkpoint).
    named = run_cli("adjust", wall, "--model", "nope", "-o", str(tmp_path / "m"))
    assert named.returncode == 1 and "shipped models are: dlib, sface" in named.stderr
    # A share for a fusion that takes none is refused (before: accepted and ignored).
    share = run_cli("adjust", wall, "--fuse", "none", "--fuse-weight", "0.3", "-o", str(tmp_path / "s"))
    assert share.returncode == 1 and "--fuse none takes none" in share.stderr and not (tmp_path / "s").exists()
    # The mix with the scene is the white balance's: with --only exposure it was accepted and unused.
    mixed = run_cli("adjust", wall, "--only", "exposure", "--fuse", "agreement", "-o", str(tmp_path / "e"))
    assert mixed.returncode == 1 and "--only exposure corrects no white balance" in mixed.stderr, mixed.stderr
    assert not (tmp_path / "e").exists()
    # A value no setting takes is a usage error naming every valid one, as out-of-range numbers are (before: exit 1,
    # "adjust params: ...", and --fuse's list left out none).
    for option, value in (("--fuse", "x"), ("--only", "colour"), ("--mapping", "lab"), ("--region", "eyes")):
        bad = run_cli("adjust", wall, option, value, "-o", str(tmp_path / "b"), env={"COLUMNS": "300"})
        said = bad.stderr
        assert bad.returncode == 2 and "must be " in said and f"(got '{value}')" in said, (option, said)
    assert "'none'" in " ".join(run_cli("adjust", wall, "--fuse", "x").stderr.split())
    with Image.open(io.BytesIO((tmp_path / "g" / "wall.png").read_bytes())) as grey:
        assert angular_error(np.asarray(grey), np.full((1, 1, 3), 128.0)) < 1.0


def test_gains_mapping_undoes_a_cast_and_splits_exposure_from_white_balance(shipped_normalizer: Any) -> None:
    photo = real_face().image.copy()
    cast = apply_gains(photo, np.array([1.15, 1.0, 0.8]))
    corrected, correction = FaceAdjuster(shipped_normalizer, mapping="gains").correct(cast)
    assert correction is not None and correction.mapping == "gains" and "gains_rgb" in correction.to_json()
    assert angular_error(corrected[FACE_BOX], photo[FACE_BOX]) < angular_error(cast[FACE_BOX], photo[FACE_BOX]) / 3
    full = Correction("adjust", (0.2, 0.2, 0.2), (0.3, 0.2, 0.1), mapping="gains")
    exposure, white = full.scaled(1.0, "exposure").gains, full.scaled(1.0, "white-balance").gains
    assert np.allclose(exposure, exposure[0]) and exposure[0] == pytest.approx(full.gains @ LUMINANCE)
    assert float(white @ LUMINANCE) == pytest.approx(1.0)
    assert np.allclose(full.scaled(0.0).gains, 1.0)


def test_outputs_never_land_on_an_input(tmp_path: Path) -> None:
    """Before: `facekit adjust a.jpg -o <a.jpg's folder>` wrote the corrected photo over a.jpg (only normalize's
    output names were checked against the inputs)."""
    photo = tmp_path / "wall.jpg"
    Image.new("RGB", (64, 48), (90, 120, 160)).save(photo, quality=95)
    original = photo.read_bytes()
    result = run_cli("adjust", str(photo), "--method", "gray-world", "-o", str(tmp_path))
    assert result.returncode == 0, result.stdout + result.stderr
    assert photo.read_bytes() == original
    assert (tmp_path / "wall_jpg.jpg").is_file() and (tmp_path / "wall_jpg.json").is_file()


def test_the_skin_region_ignores_what_a_smile_shows(shipped_normalizer: Any) -> None:
    """region="skin" reads the cheeks and forehead: painting the mouth white (teeth) moves the central box's mean
    but not the skin's, and a cast is still undone from the skin alone."""
    from facekit.apps.adjust import mean_colour, region_pixels

    face = shipped_normalizer.normalize(real_face().image)
    image = face.image.copy()
    mouth = face.landmarks[48:60]
    x0, y0 = mouth.min(0).astype(int)
    x1, y1 = mouth.max(0).astype(int) + 1
    teeth = image.copy()
    teeth[y0:y1, x0:x1] = 250
    for region, moves in (("box", True), ("skin", False)):
        before = mean_colour(region_pixels(image, face.landmarks, region), "ycrcb")
        after = mean_colour(region_pixels(teeth, face.landmarks, region), "ycrcb")
        assert bool(abs(after[0] - before[0]) > 3) is moves, (region, before, after)
    photo = real_face().image.copy()
    cast = apply_gains(photo, np.array([1.15, 1.0, 0.8]))
    corrected, correction = FaceAdjuster(shipped_normalizer, region="skin").correct(cast)
    assert correction is not None
    assert angular_error(corrected[FACE_BOX], photo[FACE_BOX]) < angular_error(cast[FACE_BOX], photo[FACE_BOX]) / 3


def test_fused_white_balance_mixes_chromaticity_and_keeps_the_faces_exposure() -> None:
    from facekit.apps.adjust import fuse_white_balance, luminance_gain, to_linear
    from facekit.errors import FacekitError

    photo = np.full((20, 20, 3), 90, np.uint8)
    photo[0, 0] = (255, 200, 150)  # the brightest point: a warm "white"
    face = Correction("adjust", (0.20, 0.18, 0.15), (0.22, 0.20, 0.20), mapping="gains")
    source = np.asarray(face.source)
    exposure = luminance_gain(face.gains, source)

    def chroma(gains: np.ndarray) -> np.ndarray:
        return gains / luminance_gain(gains, source)

    alone = fuse_white_balance(face, photo, "white-patch", 1.0)
    assert np.allclose(alone.gains, face.gains) and alone.method == "adjust+white-patch"
    scene = fuse_white_balance(face, photo, "white-patch", 0.0)
    white_patch = 1.0 / to_linear(np.array([255, 200, 150]) / 255.0)
    assert np.allclose(chroma(scene.gains), chroma(white_patch))
    half = fuse_white_balance(face, photo, "white-patch", 0.5)
    assert np.allclose(chroma(half.gains), chroma(np.sqrt(chroma(face.gains) * chroma(white_patch))))
    for fused in (scene, half):  # the exposure is the face's alone
        assert luminance_gain(fused.gains, source) == pytest.approx(exposure)
    assert half.face["face_gains_rgb"] == [round(float(g), 4) for g in face.gains]
    with pytest.raises(FacekitError, match="gains"):
        fuse_white_balance(Correction("adjust", (1.0, 2.0, 3.0), (1.0, 2.0, 3.0)), photo, "white-patch", 0.5)
    with pytest.raises(FacekitError, match="mapping 'gains'"):
        FaceAdjuster(mapping="ycrcb", fuse="white-patch")
    assert FaceAdjuster(mapping="ycrcb").fuse is None and FaceAdjuster().fuse == "white-patch"
    assert FaceAdjuster().refine == 0 and FaceAdjuster(fuse="agreement").fuse == "agreement"
    with pytest.raises(FacekitError, match="refine needs mapping 'gains'"):
        FaceAdjuster(mapping="ycrcb", refine=1)
    with pytest.raises(FacekitError, match="refine must be between 0 and 3"):
        FaceAdjuster(refine=4)
    with pytest.raises(FacekitError, match="fuse sigma must be positive"):
        FaceAdjuster(fuse_sigma=0.0)
    with pytest.raises(FacekitError, match="unknown fuse 'grey-world'; known: agreement, gray-world"):  # at once
        FaceAdjuster(fuse="grey-world")  # type: ignore[arg-type]
    with pytest.raises(FacekitError, match="fuse weight must be between 0 and 1"):
        FaceAdjuster(fuse_weight=1.5)


def test_settings_the_adjuster_is_built_with_are_checked_at_once() -> None:
    """Built directly (to share a normalizer), an unknown only was a KeyError at the first photo, and an unknown
    mapping or region, or all_faces "no", was read as another setting without a word."""
    for settings, message in (
        ({"only": "colour"}, "unknown only 'colour'; known: both, white-balance, exposure"),
        ({"mapping": "rgb"}, "unknown mapping 'rgb'; known: ycrcb, gains"),
        ({"region": "face"}, "unknown region 'face'; known: box, skin"),
        ({"all_faces": "no"}, "all_faces must be True or False"),
        ({"strength": "1"}, "strength must be between 0 and 1, got '1'"),
    ):
        with pytest.raises(FacekitError, match=message):
            FaceAdjuster(**settings)
    assert FaceAdjuster(strength=np.float32(0.5), only="exposure").strength == 0.5


def cast_texture(illuminant: np.ndarray) -> np.ndarray:
    """A grey texture (every pixel neutral, levels and edges everywhere) under ``illuminant`` (3,) in linear light:
    each of the four global estimators finds the illuminant's colour in it."""
    from facekit.apps.adjust import to_linear, to_srgb

    levels = np.random.default_rng(0).uniform(0.05, 0.6, (64, 64, 1))
    grey = to_linear(levels)  # linear light
    return np.asarray(to_srgb(grey * illuminant) * 255 + 0.5, np.float64).clip(0, 255).astype(np.uint8)


def test_agreement_fusion_listens_to_estimators_that_agree_with_the_face() -> None:
    """The global estimators all see the same cast here: a face estimate that agrees gets their weight, one far off
    is left alone (the estimators drop out), one a little off is pulled towards them."""
    from facekit.apps.adjust import angle_degrees, fuse_white_balance, luminance_gain

    illuminant = np.array([1.2, 1.0, 0.75])
    photo = cast_texture(illuminant)
    source = np.array([0.30, 0.20, 0.12])  # the face's skin in the photo, linear light
    truth = 1.0 / illuminant  # the gains that undo the cast

    def face_with(gains: np.ndarray) -> Correction:
        target = source * gains
        return Correction("adjust", tuple(source), (float(target[0]), float(target[1]), float(target[2])), {}, "gains")

    def off_by(degrees: float) -> np.ndarray:  # the true gains turned by ``degrees`` towards blue
        gains = truth * np.exp(np.array([-1.0, 0.0, 1.0]) * np.radians(degrees) * 0.8)
        return gains

    agreeing = fuse_white_balance(face_with(truth), photo, "agreement")
    weights = agreeing.face["fuse_weights"]
    assert set(weights) == {"face", *STATISTICAL} and min(weights.values()) > 0.9, weights
    assert angle_degrees(agreeing.gains * source, truth * source) < 0.3
    for off, pulled in ((2.5, True), (25.0, False)):
        face = face_with(off_by(off))
        error = angle_degrees(face.gains * source, truth * source)
        fused = fuse_white_balance(face, photo, "agreement")
        after = angle_degrees(fused.gains * source, truth * source)
        if pulled:
            assert after < error * 0.75, (error, after, fused.face["fuse_weights"])
        else:  # a scene estimate that far from the face counts for nothing: the face's own
            assert max(w for n, w in fused.face["fuse_weights"].items() if n != "face") < 1e-6
            assert after == pytest.approx(error, abs=0.01)
        # the exposure stays the face's
        assert luminance_gain(fused.gains, source) == pytest.approx(luminance_gain(face.gains, source))


def test_refining_normalizes_the_same_face_again_and_undoes_more_of_a_cast(shipped_normalizer: Any) -> None:
    """renormalize re-decodes each face from its own detection; on the uncast photo it gives the face normalize gave.
    A refining round keeps the first estimate's source and multiplies in the rest of the cast the second one finds."""
    photo = real_face().image.copy()
    face = shipped_normalizer.normalize(photo)
    again = shipped_normalizer.renormalize(photo, [face])[0]
    assert again.box == face.box and np.array_equal(again.source_landmarks, face.source_landmarks)
    assert np.abs(again.image.astype(int) - face.image.astype(int)).max() <= 1
    cast = apply_gains(photo, np.array([1.2, 1.0, 0.75]))
    faces = shipped_normalizer.normalize(cast, all_faces=True)
    one = FaceAdjuster(shipped_normalizer, fuse=None, refine=0).estimate_faces(cast, faces)
    two = FaceAdjuster(shipped_normalizer, fuse=None, refine=1).estimate_faces(cast, faces)
    assert two.source == one.source and two.face["refined"] == 1 and "refined" not in one.face
    # The second round finds a small rest of the cast (the normalized face of the corrected photo is near neutral):
    # its step is a fraction of the first one, and the result still undoes the cast.
    first, step = np.log(one.gains), np.log(two.gains / one.gains)
    assert np.abs(step - step.mean()).max() < 0.3 * np.abs(first - first.mean()).max(), (one.gains, two.gains)
    before = angular_error(cast[FACE_BOX], photo[FACE_BOX])
    assert angular_error(apply_correction(cast, two)[FACE_BOX], photo[FACE_BOX]) < before / 3


def test_a_phones_mpo_stays_jpeg_and_a_malformed_exif_is_left_out(tmp_path: Path) -> None:
    """Before: a multi-picture JPEG (Pillow's 'MPO', written by many phones) came back as a PNG several times larger,
    and a photo whose EXIF had one tag of the wrong type ended `facekit adjust`'s batch (and serve's result) with a
    traceback from re-encoding the EXIF."""
    import struct

    from facekit.apps.adjust import encode_like

    pixels = np.full((64, 64, 3), (150, 110, 90), np.uint8)
    phone = tmp_path / "phone.jpg"
    Image.fromarray(pixels).save(phone, "MPO", save_all=True, append_images=[Image.fromarray(pixels[:32, :32])])
    with Image.open(phone) as opened:
        assert opened.format == "MPO"
    data, suffix = encode_like(phone, pixels)
    assert suffix == ".jpg" and data[:2] == b"\xff\xd8"
    # EXIF with Make (0x010F) stored as a RATIONAL: Pillow reads it but cannot write it back.
    tiff = b"II*\x00" + struct.pack("<I", 8) + struct.pack("<H", 1) + struct.pack("<HHII", 0x010F, 5, 1, 26)
    tiff += struct.pack("<I", 0) + struct.pack("<II", 1, 3)
    odd = tmp_path / "odd.jpg"
    Image.fromarray(pixels).save(odd, quality=92, exif=b"Exif\x00\x00" + tiff)
    data, suffix = encode_like(odd, pixels)
    with Image.open(io.BytesIO(data)) as written:
        assert suffix == ".jpg" and written.size == (64, 64)


def test_a_tiffs_exif_is_carried_over_with_its_camera_directory(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Before (helper-86): the EXIF of a TIFF holding a camera's Exif directory (every camera TIFF: date, exposure) was
    left out of the adjusted photo with a warning that it 'cannot be written back (ValueError: seek of closed file)':
    Pillow reads that directory from the file, which was closed by then."""
    from facekit.apps.adjust import encode_like

    pixels = np.full((16, 16, 3), (150, 110, 90), np.uint8)
    exif = Image.Exif()
    exif[0x010F] = "facekit-test-camera"
    exif[0x8769] = {0x9003: "2024:05:06 07:08:09"}  # DateTimeOriginal, in the Exif directory
    Image.fromarray(pixels).save(tmp_path / "camera.tif", exif=exif.tobytes())
    data, suffix = encode_like(tmp_path / "camera.tif", pixels)
    with Image.open(io.BytesIO(data)) as written:
        assert suffix == ".png" and written.getexif()[0x010F] == "facekit-test-camera"
        assert written.getexif().get_ifd(0x8769)[0x9003] == "2024:05:06 07:08:09"
        # The TIFF's own layout (size, strips, compression) is not carried into the PNG's EXIF (helper-86).
        assert not {256, 257, 258, 259, 273, 278, 279} & set(written.getexif())
    with Image.open(tmp_path / "camera.tif") as source:
        assert {256, 257, 273, 279} <= set(source.getexif())  # (what there was to leave out)
    assert "cannot be written back" not in caplog.text


def test_a_grey_photo_that_stays_grey_is_written_grey(tmp_path: Path) -> None:
    """Before: a grey (one-channel) JPEG or PNG came back from adjust as RGB, three equal channels, and its grey
    profile was dropped. Now an output whose channels are equal (a black-and-white photo's exposure alone moves) is
    written grey with that profile; one whose channels differ stays RGB."""
    from PIL import ImageCms

    from facekit.apps.adjust import encode_like

    grey = np.tile(np.linspace(20, 230, 24).astype(np.uint8), (16, 1))
    profile = ImageCms.ImageCmsProfile(ImageCms.createProfile("LAB")).tobytes()  # a stand-in for its colour space
    gray_icc = profile[:16] + b"GRAY" + profile[20:]
    brighter = np.repeat(np.minimum(grey.astype(int) + 10, 255).astype(np.uint8)[..., None], 3, axis=2)
    tinted = brighter.copy()
    tinted[..., 0] += 1
    for kind, suffix in (("JPEG", ".jpg"), ("PNG", ".png")):
        path = tmp_path / f"grey{suffix}"
        Image.fromarray(grey).save(path, kind, icc_profile=gray_icc)
        data, written = encode_like(path, brighter)
        with Image.open(io.BytesIO(data)) as out:
            assert (out.mode, written, out.info.get("icc_profile")) == ("L", suffix, gray_icc), kind
            assert np.abs(np.asarray(out, int) - brighter[..., 0]).max() <= (2 if kind == "JPEG" else 0), kind
        data, _ = encode_like(path, tinted)
        with Image.open(io.BytesIO(data)) as out:
            assert out.mode == "RGB" and "icc_profile" not in out.info, kind
    colour = tmp_path / "colour.jpg"  # an RGB photo stays RGB, grey pixels or not
    Image.fromarray(np.repeat(grey[..., None], 3, axis=2)).save(colour)
    with Image.open(io.BytesIO(encode_like(colour, brighter)[0])) as out:
        assert out.mode == "RGB"


def test_a_grey_png_whose_transparency_is_one_grey_keeps_it(tmp_path: Path) -> None:
    """Before: a grey PNG whose transparency is one grey level (a tRNS chunk, as PNG optimizers store a grey cut-out's
    binary alpha) came back from adjust opaque: OpenCV, which reads the file's own depth and alpha, leaves that
    transparency out (an RGB PNG's transparent colour it turns into alpha, so that one was kept)."""
    from facekit.apps.adjust import read_deep

    grey = np.full((8, 12), 150, np.uint8)
    grey[:, :4] = 0  # the background: transparent
    for stored, opaque in ((grey, 255), (grey.astype(np.uint16) * 257, 65535)):
        path = tmp_path / f"cutout{opaque}.png"
        Image.fromarray(stored).save(path, transparency=0)
        read = read_deep(path)
        assert read is not None, opaque
        rgb, alpha = read
        assert np.array_equal(rgb, np.repeat(stored[..., None], 3, axis=2))
        assert alpha is not None and alpha.dtype == stored.dtype
        assert np.array_equal(alpha, np.where(grey == 0, 0, opaque))


def test_a_16_bit_or_transparent_png_keeps_its_depth_and_alpha(tmp_path: Path, shipped_normalizer: Any) -> None:
    """Before: every PNG came back as 8-bit RGB: a 16-bit photo lost its low byte and a transparent one its alpha
    (composited over grey, the grey corrected with the rest). Now the correction estimated on the 8-bit copy is applied
    at the file's own depth and the alpha is carried over untouched, orientation and profile included."""
    import cv2
    from PIL import ImageCms

    from facekit.apps.adjust import ADJUST_OUTPUTS, adjust_files, png16, read_deep
    from facekit.batch import plan_folder

    photos = tmp_path / "in"
    photos.mkdir()
    face = apply_gains(real_face().image.copy(), np.array([1.15, 1.0, 0.8]))
    rng = np.random.default_rng(0)
    deep = face.astype(np.uint16) * 257 + rng.integers(0, 257, face.shape).astype(np.uint16)  # low bytes differ
    srgb = ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()
    upside_down = Image.Exif()
    upside_down[0x0112] = 3  # stored turned half a turn
    upside_down[0x010F] = "facekit-test-camera"
    (photos / "deep.png").write_bytes(png16(np.ascontiguousarray(deep[::-1, ::-1]), srgb, upside_down.tobytes()))
    alpha = np.full(face.shape[:2], 255, np.uint8)
    alpha[:, :40] = 0  # a transparent strip, its colour a saturated green nobody sees
    alpha[:, 40:60] = 128
    rgba = np.dstack([face, alpha])
    rgba[:, :40, :3] = (0, 255, 0)
    exif = Image.Exif()
    exif[0x0112] = 6  # stored on its side: upright is a quarter turn clockwise
    exif[0x010F] = "facekit-test-camera"
    Image.fromarray(np.rot90(rgba, 1).copy()).save(photos / "cutout.png", exif=exif.tobytes(), icc_profile=srgb)
    read = read_deep(photos / "cutout.png")
    assert read is not None and np.array_equal(read[1], alpha) and np.array_equal(read[0][:, 40:], face[:, 40:])
    read = read_deep(photos / "deep.png")
    assert read is not None and np.array_equal(read[0], deep) and read[1] is None
    # A TIFF stays at 8 bits, read by Pillow (OpenCV turns it upright itself and premultiplies its alpha): its
    # values as stored and its alpha, upright.
    Image.fromarray(rgba).save(tmp_path / "cutout.tif", tiffinfo={0x0112: 3})
    read = read_deep(tmp_path / "cutout.tif")
    assert read is not None and np.array_equal(read[1], alpha[::-1, ::-1])
    assert np.array_equal(read[0], rgba[::-1, ::-1, :3])
    Image.fromarray(face).save(tmp_path / "plain.tif")
    assert read_deep(tmp_path / "plain.tif") is None  # 8-bit without alpha
    Image.fromarray(face).save(photos / "plain.png")
    assert read_deep(photos / "plain.png") is None  # 8-bit without alpha: load_rgb's pixels are all there is

    adjuster = FaceAdjuster(shipped_normalizer)
    plan = plan_folder([str(photos)], tmp_path / "out", outputs=ADJUST_OUTPUTS)
    rows = {Path(row.input).name: row for row in adjust_files(plan, adjuster)}
    assert {name: row.status for name, row in rows.items()} == dict.fromkeys(
        ("cutout.png", "deep.png", "plain.png"), "adjusted"
    )

    def as_recorded(name: str) -> Correction:
        record = rows[name].record
        return Correction(record["method"], tuple(record["source"]), tuple(record["target"]), mapping=record["mapping"])

    written16 = cv2.imread(rows["deep.png"].output, cv2.IMREAD_UNCHANGED)[..., ::-1]
    assert written16.dtype == np.uint16 and written16.shape == deep.shape
    assert rows["deep.png"].record["written"] == {"bits": 16, "alpha": False}
    # The correction at 16 bits (before: 8 bits only, so the file's values were multiples of 257), and it undoes the
    # cast as the 8-bit one does.
    assert np.array_equal(written16, apply_correction(deep, as_recorded("deep.png")))
    assert np.unique(written16 % 257).size > 100
    with Image.open(rows["deep.png"].output) as opened:  # upright, its profile and EXIF carried over
        assert opened.info.get("icc_profile") == srgb and opened.getexif()[0x010F] == "facekit-test-camera"
        assert opened.getexif().get(0x0112, 1) == 1
    truth = real_face().image[FACE_BOX]
    assert angular_error(written16[FACE_BOX] / 257.0, truth) < angular_error(deep[FACE_BOX] / 257.0, truth) / 2

    with Image.open(rows["cutout.png"].output) as cutout:
        assert cutout.mode == "RGBA" and cutout.size == (face.shape[1], face.shape[0])  # upright, orientation reset
        assert cutout.info.get("icc_profile") == srgb and cutout.getexif()[0x010F] == "facekit-test-camera"
        assert cutout.getexif().get(0x0112, 1) == 1
        pixels = np.asarray(cutout)
    assert np.array_equal(pixels[..., 3], alpha) and rows["cutout.png"].record["written"] == {"bits": 8, "alpha": True}
    # Every pixel corrected from its own colour (the hidden green stays a green, not the grey it was shown over).
    assert np.array_equal(
        pixels[..., :3], apply_correction(np.ascontiguousarray(rgba[..., :3]), as_recorded("cutout.png"))
    )
    assert pixels[:, :40, 1].min() > 200 and pixels[:, :40, 0].max() < 60


class Warmer:
    """An adjust method that warms every photo by the same gains, face or none."""

    correction = Correction("warm", (0.2, 0.2, 0.2), (0.3, 0.2, 0.1), mapping="gains")

    def correct(self, photo: np.ndarray) -> tuple[np.ndarray, Correction]:
        return apply_correction(photo, self.correction), self.correction


@pytest.mark.parametrize("record", ["correction", "another app's"])
def test_a_transparent_pngs_before_after_shows_both_halves_over_one_backdrop(tmp_path: Path, record: str) -> None:
    """Before: a transparent PNG's before/after showed the grey load_rgb composites it over, and that grey corrected
    (beige) in the after half, a change the written file (which keeps its alpha) does not have. Now both halves show
    the photo over one checkerboard: the transparent area is the same in both, the photo's own pixels differ."""
    from facekit.apps.adjust import ADJUST_OUTPUTS, CHECKER_GREYS, adjust_files, checkerboard
    from facekit.batch import plan_folder

    face = real_face().image.copy()
    alpha = np.full(face.shape[:2], 255, np.uint8)
    alpha[:, :60] = 0  # transparent, its colour a green nobody sees
    alpha[:, 60:70] = 128
    rgba = np.dstack([face, alpha])
    rgba[:, :60, :3] = (0, 255, 0)
    (tmp_path / "in").mkdir()
    Image.fromarray(rgba).save(tmp_path / "in" / "cutout.png")
    corrector: Any = Warmer()
    if record != "correction":  # a record that does not say how: the grey corrected is read off the photo
        corrector = type("Theirs", (), {"correct": lambda self, photo: (Warmer().correct(photo)[0], {"warm": 1})})()
    plan = plan_folder([str(tmp_path / "in")], tmp_path / "out", outputs=ADJUST_OUTPUTS)
    (row,) = adjust_files(plan, corrector)
    assert row.status == "adjusted" and row.record["written"]["alpha"]
    pair = np.asarray(Image.open(tmp_path / "out" / "cutout_before_after.png"), np.int16)
    before, after = pair[:, : pair.shape[1] // 2], pair[:, pair.shape[1] // 2 :]
    clear = slice(0, 60 * before.shape[1] // 200 - 2)  # the transparent strip, away from its edge
    board = np.repeat(checkerboard(*before.shape[:2]), 3, axis=2)[:, clear]
    assert set(np.unique(board)) == set(CHECKER_GREYS)
    assert np.abs(before[:, clear] - board).max() <= 1 and np.abs(after[:, clear] - board).max() <= 1
    opaque = slice(80 * before.shape[1] // 200, None)
    assert np.abs(after[:, opaque] - before[:, opaque]).mean() > 10  # the photo itself warmed
    assert (after[:, opaque, 0] - after[:, opaque, 2]).mean() > (before[:, opaque, 0] - before[:, opaque, 2]).mean()


@pytest.mark.parametrize("kind", ["tiff", "turned tiff", "gif"])
def test_a_transparent_tiff_or_gif_keeps_its_alpha_and_shows_the_backdrop_as_a_png_does(
    tmp_path: Path, kind: str
) -> None:
    """Before: only a PNG's or WebP's alpha was read (read_deep): a transparent TIFF's or GIF's adjusted photo (a PNG)
    was written without alpha, the grey load_rgb composited it over corrected to beige, and its before/after showed
    that grey where a PNG's showed a checkerboard. A TIFF's alpha is kept as it is, a GIF's transparent entry as
    alpha 0 (the rest 255); an uncompressed TIFF turned by its Orientation tag is read upright, as load_rgb reads it."""
    from facekit.apps.adjust import ADJUST_OUTPUTS, adjust_files, checkerboard
    from facekit.batch import plan_folder

    face = real_face().image.copy()
    alpha = np.full(face.shape[:2], 255, np.uint8)
    alpha[:, :60] = 0
    if kind != "gif":
        alpha[:, 60:70] = 128
    rgba = np.dstack([face, alpha])
    rgba[:, :60, :3] = (0, 255, 0)
    (tmp_path / "in").mkdir()
    path = tmp_path / "in" / f"cutout.{kind[-4:].strip()}"
    if kind == "gif":
        palette = Image.fromarray(face).quantize(255)  # entries 0..254; 255 is the transparent one
        indexes = np.asarray(palette).copy()
        indexes[alpha == 0] = 255
        gif = Image.fromarray(indexes, "P")
        gif.putpalette([*(palette.getpalette() or [])[: 255 * 3], 0, 255, 0])
        gif.save(path, transparency=255)
        with Image.open(path) as opened:  # the photo as it reads (the palette's colours)
            rgba = np.asarray(opened.convert("RGBA"))
    elif kind == "turned tiff":  # stored turned a quarter: upright is the photo above
        Image.fromarray(np.ascontiguousarray(np.rot90(rgba, -1))).save(path, tiffinfo={274: 8})
    else:
        Image.fromarray(rgba).save(path, compression="tiff_lzw")
    plan = plan_folder([str(tmp_path / "in")], tmp_path / "out", outputs=ADJUST_OUTPUTS)
    (row,) = adjust_files(plan, Warmer())
    assert row.status == "adjusted" and row.record["written"] == {"bits": 8, "alpha": True}, row
    with Image.open(row.output) as written:
        assert written.format == "PNG" and written.mode == "RGBA" and written.size == (face.shape[1], face.shape[0])
        pixels = np.asarray(written)
    assert np.array_equal(pixels[..., 3], rgba[..., 3])
    assert np.array_equal(pixels[..., :3], apply_correction(np.ascontiguousarray(rgba[..., :3]), Warmer.correction))
    pair = np.asarray(Image.open(tmp_path / "out" / "cutout_before_after.png"), np.int16)
    before, after = pair[:, : pair.shape[1] // 2], pair[:, pair.shape[1] // 2 :]
    clear = slice(0, 60 * before.shape[1] // 200 - 2)
    board = np.repeat(checkerboard(*before.shape[:2]), 3, axis=2)[:, clear]
    assert np.abs(before[:, clear] - board).max() <= 1 and np.abs(after[:, clear] - board).max() <= 1


@pytest.mark.parametrize("record", ["correction", "another app's"])
def test_a_transparent_png_in_another_profiles_before_after_shows_the_backdrop_too(tmp_path: Path, record: str) -> None:
    """load_rgb composites a transparent photo over grey 128 in the photo's own colour profile, then converts it to
    sRGB: under a profile whose curve is not sRGB's (gamma 1.8: ProPhoto RGB, Apple RGB) that grey is read as 147,
    not 128. Before: the before/after took it for 128, so both halves showed the checkerboard 18-21 levels too light,
    and the transparent area differed between them. Now the grey taken out is the one the photo was read over."""
    from facekit.apps.adjust import ADJUST_OUTPUTS, adjust_files, checkerboard
    from facekit.batch import plan_folder
    from facekit.testing import DISPLAY_P3_COLORANTS, matrix_icc

    face = real_face().image.copy()
    rgba = np.dstack([face, np.full(face.shape[:2], 255, np.uint8)])
    rgba[:, :60] = (0, 255, 0, 0)  # transparent
    (tmp_path / "in").mkdir()
    icc = matrix_icc(DISPLAY_P3_COLORANTS, 1.8, "test gamma 1.8")
    Image.fromarray(rgba).save(tmp_path / "in" / "cutout.png", icc_profile=icc)
    corrector: Any = Warmer()
    if record != "correction":
        corrector = type("Theirs", (), {"correct": lambda self, photo: (Warmer().correct(photo)[0], {"warm": 1})})()
    plan = plan_folder([str(tmp_path / "in")], tmp_path / "out", outputs=ADJUST_OUTPUTS)
    (row,) = adjust_files(plan, corrector)
    assert row.status == "adjusted" and row.record["written"]["alpha"], row
    pair = np.asarray(Image.open(tmp_path / "out" / "cutout_before_after.png"), np.int16)
    before, after = pair[:, : pair.shape[1] // 2], pair[:, pair.shape[1] // 2 :]
    clear = slice(0, 60 * before.shape[1] // 200 - 2)
    board = np.repeat(checkerboard(*before.shape[:2]), 3, axis=2)[:, clear]
    assert np.abs(before[:, clear] - board).max() <= 1 and np.abs(after[:, clear] - board).max() <= 1


def test_the_papers_ycrcb_map_at_16_bits_matches_it_in_floating_point() -> None:
    """OpenCV's 16-bit YCrCb has its neutral chroma at 32768, not 128 x 257: tables scaled from 8 bits without that
    offset moved the greys by a tenth of an 8-bit level (mean; 0.08-0.11 per channel before)."""
    import cv2

    ramp = np.linspace(0, 65535, 4096).astype(np.uint16).reshape(64, 64, 1)
    photo = np.repeat(ramp, 3, axis=2)  # greys, where every pixel's chroma sits at neutral
    correction = Correction("adjust", (100.0, 100.0, 160.0), (100.0, 128.0, 128.0), mapping="ycrcb")
    got = apply_correction(photo, correction).astype(np.float64) / 65535.0
    # The same map in floating point, OpenCV's chroma neutral at 0.5: an 8-bit value v is 0.5 + (v - 128) / 255.
    ycrcb = cv2.cvtColor(photo.astype(np.float32) / 65535.0, cv2.COLOR_RGB2YCrCb).astype(np.float64)
    for c in range(3):
        offset = 0.0 if c == 0 else 0.5 - 128.0 / 255.0
        source, target = correction.source[c] / 255.0 + offset, correction.target[c] / 255.0 + offset
        ycrcb[..., c] = np.interp(ycrcb[..., c], [0.0, source, 1.0], [0.0, target, 1.0])
    expected = np.clip(cv2.cvtColor(ycrcb.astype(np.float32), cv2.COLOR_YCrCb2RGB), 0, 1)
    bias = ((got - expected) * 255.0).reshape(-1, 3).mean(axis=0)  # in 8-bit levels
    assert np.abs(bias).max() < 0.02, bias


@pytest.mark.parametrize("mapping", ["gains", "ycrcb"])
def test_a_black_and_white_photo_stays_black_and_white(shipped_normalizer: Any, mapping: str) -> None:
    """Before: the face's colour tinted a grey photo sepia (gains 1.6 / 1.2 / 1.0). Now its exposure alone moves,
    and white balance alone leaves it as it is."""
    grey = np.asarray(Image.fromarray(real_face().image).convert("L").convert("RGB"))
    dark = (grey * 0.6).astype(np.uint8)
    corrected, record = FaceAdjuster(shipped_normalizer, mapping=mapping).correct(dark)
    assert record is not None and record.face["monochrome"] is True
    spread = corrected.max(axis=2).astype(int) - corrected.min(axis=2)
    assert spread.max() <= 1 and corrected.mean() > dark.mean() + 10, (spread.max(), corrected.mean(), dark.mean())
    same, record = FaceAdjuster(shipped_normalizer, mapping=mapping, only="white-balance").correct(dark)
    assert record is not None and np.array_equal(same, dark)
    # A coloured caption band along the bottom (12 % of the photo, far from the face) does not make it a colour one.
    captioned = np.full((800, 800, 3), 90, np.uint8)
    captioned[300:500, 300:500] = dark
    captioned[700:, :] = (200, 30, 40)
    _, record = FaceAdjuster(shipped_normalizer, mapping=mapping).correct(captioned)
    assert record is not None and record.face["monochrome"] is True
    # A colour photo is not taken for one, even a small colour face in a large grey frame (99 % grey pixels).
    _, colour = FaceAdjuster(shipped_normalizer, mapping=mapping).correct(real_face().image.copy())
    assert colour is not None and "monochrome" not in colour.face
    framed = np.full((1800, 2400, 3), 20, np.uint8)
    framed[800:1000, 1100:1300] = real_face().image
    _, small = FaceAdjuster(shipped_normalizer, mapping=mapping).correct(framed)
    assert small is not None and "monochrome" not in small.face


def test_estimate_is_the_correction_correct_applies(shipped_normalizer: Any) -> None:
    """Before: estimate gave the face's estimate before the app's settings, so strength 0.5 or only='exposure' made
    no difference to it, and a black-and-white photo got a colour cast (gains 1.23 / 0.94 / 0.81) that tinted it
    where correct moved its exposure alone."""
    colour = real_face().image.copy()
    grey = np.asarray(Image.fromarray(colour).convert("L"))
    for options in ({}, {"strength": 0.5}, {"only": "exposure"}, {"only": "white-balance"}):
        adjuster = FaceAdjuster(shipped_normalizer, **options)
        for photo in (colour, grey):
            corrected, applied = adjuster.correct(photo)
            estimated = adjuster.estimate(photo)
            assert applied is not None and estimated == applied, (options, photo.ndim)
            as_rgb = np.asarray(Image.fromarray(photo).convert("RGB"))
            assert np.array_equal(apply_correction(as_rgb, estimated), corrected), (options, photo.ndim)
    assert FaceAdjuster(shipped_normalizer).estimate(np.full((300, 300, 3), 128, np.uint8)) is None


def test_correct_never_returns_the_callers_array(shipped_normalizer: Any) -> None:
    """Before: a photo without a face came back as the caller's own array object (with a face, a new one), so a
    caller who drew on the result drew on their input. Now both are new arrays."""
    adjuster = FaceAdjuster(shipped_normalizer)
    for photo, found in ((np.full((300, 300, 3), 128, np.uint8), False), (real_face().image.copy(), True)):
        before = photo.copy()
        corrected, correction = adjuster.correct(photo)
        assert (correction is not None) is found
        assert not np.shares_memory(corrected, photo)
        corrected[:] = 0
        assert np.array_equal(photo, before)


def test_an_opencv_photo_is_corrected_and_measured_in_its_own_order(shipped_normalizer: Any) -> None:
    """helper-233: normalize takes bgr=True, but adjust's correct and estimate and attributes' measure had no way to be
    told: a photo from cv2.imread was corrected with red and blue swapped (gains (1.67, 0.76, 0.39) for a photo whose
    RGB read gives (0.81, 0.79, 0.87)) and came back in RGB, without a word. With bgr=True it is read as OpenCV's,
    corrected as its RGB read is and given back in its own order; a file or PIL image with bgr=True is refused, as
    normalize refuses it (it has its own order)."""
    from facekit.apps.attributes import FaceAttributes

    adjuster = FaceAdjuster(shipped_normalizer)
    rgb = real_face().image.copy()
    bgr = np.ascontiguousarray(rgb[..., ::-1])
    corrected, correction = adjuster.correct(rgb)
    corrected_bgr, correction_bgr = adjuster.correct(bgr, bgr=True)
    assert correction is not None and correction_bgr is not None
    assert np.array_equal(corrected_bgr, corrected[..., ::-1]) and not np.shares_memory(corrected_bgr, bgr)
    assert np.allclose(correction_bgr.gains, correction.gains)
    estimate = adjuster.estimate(bgr, bgr=True)
    assert estimate is not None and np.allclose(estimate.gains, correction.gains)
    faceless = np.full((300, 300, 3), (10, 128, 200), np.uint8)
    assert np.array_equal(adjuster.correct(faceless, bgr=True)[0], faceless)
    attributes = FaceAttributes(shipped_normalizer)
    assert attributes.measure(bgr, bgr=True) == attributes.measure(rgb)
    with pytest.raises(FacekitError, match="bgr=True is for arrays"):
        adjuster.correct(Image.fromarray(rgb), bgr=True)


def test_a_method_whose_record_gives_no_gains_writes_16_bits_as_8_and_says_why(tmp_path: Path) -> None:
    """Before: a third-party --method's 16-bit PNG came out at 8 bits without a word (a plugin-author audit)."""
    import cv2

    from facekit.apps.adjust import LOST_DEPTH, kept_depth

    deep = (np.linspace(0, 65535, 32 * 32 * 3) % 65536).astype(np.uint16).reshape(32, 32, 3)
    path = tmp_path / "deep.png"
    cv2.imwrite(str(path), deep[..., ::-1])
    photo = (deep >> 8).astype(np.uint8)
    warmer = np.clip(photo.astype(int) + np.array([8, 0, -8]), 0, 255).astype(np.uint8)
    written, _, kept = kept_depth(path, photo, warmer, {"method": "warm", "shift": [8, 0, -8]})
    assert written.dtype == np.uint8 and kept["written"]["bits"] == 8 and kept["written"]["why"] == LOST_DEPTH
    again, _, kept = kept_depth(path, photo, warmer, {"light": "linear", "gains_rgb": [1.1, 1.0, 0.9]})
    assert again.dtype == np.uint16 and kept["written"]["bits"] == 16 and "why" not in kept["written"]


def test_a_16_bit_tiff_is_written_at_16_bits_as_a_16_bit_png_is(tmp_path: Path) -> None:
    """helper-231: a 16-bit TIFF came out at 8 bits (its levels between the 8-bit steps lost) where the same pixels
    in a 16-bit PNG kept them; the correction is computed in float either way. Both now write the same 16-bit PNG."""
    import cv2

    from facekit.apps.adjust import encode_corrected

    deep = (np.linspace(0, 65535, 32 * 32 * 3) % 65536).astype(np.uint16).reshape(32, 32, 3)
    photo = (deep >> 8).astype(np.uint8)
    record = {"light": "linear", "gains_rgb": [1.1, 1.0, 0.9]}
    written = {}
    for suffix in ("tif", "png"):
        cv2.imwrite(str(tmp_path / f"deep.{suffix}"), deep[..., ::-1])
        data, out, kept = encode_corrected(tmp_path / f"deep.{suffix}", photo, photo, record)
        assert (out, kept["written"]) == (".png", {"bits": 16, "alpha": False}), suffix
        written[suffix] = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_UNCHANGED)
    assert written["tif"].dtype == np.uint16 and np.array_equal(written["tif"], written["png"])


def test_a_turned_16_bit_tiff_is_read_upright_at_16_bits(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """helper-237: OpenCV turns a TIFF upright by its Orientation tag itself, and read_deep turned its pixels again,
    so every turned 16-bit TIFF failed the check against Pillow's and was written at 8 bits with a warning."""
    import struct

    from facekit.apps.adjust import read_deep
    from facekit.images import UPRIGHT, load_rgb

    stored = np.random.default_rng(0).integers(0, 65536, (20, 30, 3)).astype(np.uint16)
    data = stored.astype("<u2").tobytes()
    tags = [(256, 3, 30), (257, 3, 20), (258, 3, 0), (259, 3, 1), (262, 3, 2), (273, 4, 0), (274, 3, 6)]
    tags += [(277, 3, 3), (278, 3, 20), (279, 4, len(data)), (284, 3, 1)]
    depths_at = 8 + 2 + 12 * len(tags) + 4  # (the bits per sample, three shorts, then the pixels)
    tiff = b"II*\x00" + struct.pack("<IH", 8, len(tags))
    for tag, kind, value in tags:
        value = {258: depths_at, 273: depths_at + 6}.get(tag, value)
        tiff += struct.pack("<HHI", tag, kind, 3 if tag == 258 else 1)
        tiff += struct.pack("<HH", value, 0) if kind == 3 and tag != 258 else struct.pack("<I", value)
    (tmp_path / "turned.tif").write_bytes(tiff + struct.pack("<I3H", 0, 16, 16, 16) + data)
    upright = UPRIGHT[6](stored)
    eight, _ = load_rgb(tmp_path / "turned.tif")
    assert eight is not None and np.array_equal(eight, (upright >> 8).astype(np.uint8))
    deep = read_deep(tmp_path / "turned.tif")
    assert deep is not None and np.array_equal(deep[0], upright) and deep[1] is None
    assert "written at 8 bits" not in caplog.text


class BadMethod:
    """A third-party adjust method whose correct() breaks the documented contract in one way."""

    def __init__(self, mode: str) -> None:
        self.mode = mode

    def correct(self, photo: np.ndarray) -> tuple[Any, Any]:
        if self.mode == "float":
            return photo / 255.0, {"gain": 1.0}
        if self.mode == "rgba":
            return np.dstack([photo, photo[..., :1]]), {"gain": 1.0}
        if self.mode == "smaller":
            return photo[::2, ::2].copy(), {"gain": 1.0}
        return photo.copy(), {"gains": np.ones(3)}


@pytest.mark.parametrize(
    ("mode", "message"),
    [
        ("float", r"photo of \(200, 200, 3\) float64"),
        ("rgba", r"photo of \(200, 200, 4\) uint8"),
        ("smaller", r"photo of \(100, 100, 3\) uint8"),
        ("numpy record", "record that is not a JSON-writable dict"),
    ],
)
def test_an_adjust_method_that_breaks_correct_is_refused_naming_it(tmp_path: Path, mode: str, message: str) -> None:
    """Before (a plugin-author audit): a float photo was refused as if the user's JPEG were at fault, an RGBA one
    ended in PIL's OSError, a smaller one was written as the adjusted photo without a word and a record with numpy
    arrays ended in json's TypeError."""
    from facekit.apps.adjust import ADJUST_OUTPUTS, adjust_files
    from facekit.batch import plan_folder

    Image.fromarray(real_face().image).save(tmp_path / "face.jpg")
    plan = plan_folder([str(tmp_path / "face.jpg")], tmp_path / "out", outputs=ADJUST_OUTPUTS)
    with pytest.raises(FacekitError, match=rf"adjust method 'theirs' returned a {message}"):
        adjust_files(plan, BadMethod(mode), settings={"method": "theirs"})
    assert not (tmp_path / "out" / "face.jpg").exists()


def test_a_photo_added_later_under_a_taken_name_gets_its_own_outputs(adjuster: FaceAdjuster, tmp_path: Path) -> None:
    """adjust's records name their photo (``input_path``, absolute; ``source`` is the correction's colour), so a photo
    adjusted in a later run whose name another photo's outputs hold gets the next free name, not 'exists'."""
    from facekit.apps.adjust import ADJUST_OUTPUTS, adjust_files
    from facekit.batch import plan_folder

    out = tmp_path / "out"
    for folder, gains in (("a", (1.1, 1.0, 0.9)), ("b", (0.9, 1.0, 1.1))):
        (tmp_path / folder).mkdir()
        Image.fromarray(apply_gains(real_face().image, np.array(gains))).save(tmp_path / folder / "face.jpg")
    (first,) = adjust_files(plan_folder([str(tmp_path / "a" / "face.jpg")], out, outputs=ADJUST_OUTPUTS), adjuster)
    record = json.loads((out / "face.json").read_text())
    assert record["input_path"] == str(tmp_path / "a" / "face.jpg") and len(record["source"]) == 3
    (second,) = adjust_files(plan_folder([str(tmp_path / "b" / "face.jpg")], out, outputs=ADJUST_OUTPUTS), adjuster)
    assert (first.status, second.status) == ("adjusted", "adjusted") and Path(second.output).name == "face_jpg.jpg"


def test_adjusting_files_into_their_own_folder_twice_is_done(adjuster: FaceAdjuster, tmp_path: Path) -> None:
    """`facekit adjust *.jpg -o .` run twice: the glob now holds the first run's outputs too. Before, the second run
    corrected p_jpg.jpg again (p_jpg_jpg.jpg) and redid p.jpg as p_jpg-2.jpg; facekit's outputs of other photos in
    -o are now skipped, and p.jpg is done."""
    from facekit.apps.adjust import ADJUST_OUTPUTS, adjust_files
    from facekit.batch import plan_folder

    Image.fromarray(apply_gains(real_face().image, np.array([1.1, 1.0, 0.9]))).save(tmp_path / "p.jpg")
    settings = {"method": "adjust"}  # what the command records: a rerun with the same is done
    plan = plan_folder([str(tmp_path / "p.jpg")], tmp_path, outputs=ADJUST_OUTPUTS)
    (first,) = adjust_files(plan, adjuster, settings=settings)
    assert first.status == "adjusted" and Path(first.output).name == "p_jpg.jpg"
    globbed = sorted(str(p) for p in tmp_path.glob("*.jpg"))  # p.jpg, p_jpg.jpg
    rows = adjust_files(plan_folder(globbed, tmp_path, outputs=ADJUST_OUTPUTS), adjuster, settings=settings)
    assert [(Path(r.input).name, r.status) for r in rows] == [("p.jpg", "done")]
    assert sorted(p.name for p in tmp_path.glob("*.jpg")) == ["p.jpg", "p_jpg.jpg"]


def _camera_jpeg(path: Path, size: tuple[int, int], icc: bytes | None = None) -> None:
    """The test face enlarged to ``size`` as a camera's JPEG: EXIF and a colour profile (sRGB unless ``icc``)."""
    from PIL import ImageCms

    exif = Image.Exif()
    exif[0x010F], exif[0x0112] = "facekit test", 1
    profile = icc or ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()
    Image.fromarray(real_face().image).resize(size, Image.Resampling.BICUBIC).save(
        path, quality=92, icc_profile=profile, exif=exif.tobytes()
    )


@pytest.mark.parametrize("profile", ["sRGB", "Display P3"])
def test_adjust_encodes_a_photo_without_holding_the_photo_read(
    adjuster: FaceAdjuster, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, profile: str
) -> None:
    """`facekit adjust` on a large photo peaked while encoding: the photo as read (or its stored values, in a P3
    JPEG), its correction and the encoder's copy, 10 bytes a pixel. The before/after is made first and every full-size
    array read is let go before the encoder runs; the files are byte for byte what encoding beside the photo gave."""

    from facekit import images
    from facekit.apps import adjust
    from facekit.apps.adjust import ADJUST_OUTPUTS, adjust_files, before_after, encode_corrected
    from facekit.batch import plan_folder, png_bytes
    from facekit.testing import DISPLAY_P3_COLORANTS, matrix_icc

    icc = matrix_icc(DISPLAY_P3_COLORANTS, 2.2, "test Display P3") if profile == "Display P3" else None
    source = tmp_path / "photo.jpg"
    _camera_jpeg(source, (600, 400), icc)
    read, held = arrays_held_at_encode(monkeypatch, "encode_like")
    plan = plan_folder([str(source)], tmp_path / "out", outputs=ADJUST_OUTPUTS)
    (row,) = adjust_files(plan, adjuster)
    assert row.status == "adjusted" and read and held == [0]  # every array read was gone when the encoder ran

    monkeypatch.undo()
    if profile == "sRGB":  # the old order: encoded with the photo held; the same bytes
        photo = images.load_rgb(source)[0]
        assert photo is not None
        corrected, record = adjuster.correct(photo)
        assert (tmp_path / "out" / "photo.jpg").read_bytes() == encode_corrected(source, photo, corrected, record)[0]
        assert (tmp_path / "out" / "photo_before_after.png").read_bytes() == png_bytes(before_after(photo, corrected))
    else:
        stored, small, shown, primaries = adjust._in_own_profile(source, adjuster) or ()
        record = adjuster.correct(small)[1]
        again = adjust.recolour(stored, record, primaries)
        assert again is not None
        assert (tmp_path / "out" / "photo.jpg").read_bytes() == adjust.encode_like(source, again, None, True)[0]
        pair = before_after(shown, adjust.recolour(shown, record))
        assert (tmp_path / "out" / "photo_before_after.png").read_bytes() == png_bytes(pair)
