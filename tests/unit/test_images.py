"""Reading photos: a colour profile other than sRGB (a phone's Display P3) is converted to sRGB, one that is sRGB or
unusable leaves the values as stored; ``adjust`` writes such a photo's own values corrected, under its own profile.
Writing: normalize's PNGs are lossless at the shipped zlib level."""

from __future__ import annotations

import io
import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image, ImageCms

from facekit.errors import FacekitError, PhotoUnreadable
from facekit.images import CUT_SHORT, SRGB_COLORANTS, as_rgb, load_rgb
from facekit.testing import DISPLAY_P3_COLORANTS, matrix_icc
from tests.helpers import forked_while_held, run_cli

P3 = matrix_icc(DISPLAY_P3_COLORANTS, 2.2, "test Display P3")
PRIMARIES = np.array(DISPLAY_P3_COLORANTS)


def patches() -> np.ndarray:
    """A 6 x 6 grid of 8 px patches of colours inside both gamuts (as P3 values)."""
    rng = np.random.default_rng(5)
    colours = rng.integers(70, 190, (6, 6, 3)).astype(np.uint8)
    return np.repeat(np.repeat(colours, 8, axis=0), 8, axis=1)


def p3_to_srgb(values: np.ndarray) -> np.ndarray:
    """The ICC conversion done by hand: gamma 2.2 -> XYZ (D50) by P3's primaries -> sRGB's linear -> sRGB's curve."""
    linear = (values / 255.0) ** 2.2
    xyz = linear @ np.array(DISPLAY_P3_COLORANTS)
    srgb = np.clip(xyz @ np.linalg.inv(SRGB_COLORANTS), 0.0, 1.0)
    encoded = np.where(srgb <= 0.0031308, 12.92 * srgb, 1.055 * srgb ** (1 / 2.4) - 0.055)
    return np.asarray(encoded * 255.0)


def png(pixels: np.ndarray, icc: bytes | None) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, "PNG", **({"icc_profile": icc} if icc else {}))
    return buffer.getvalue()


def test_a_display_p3_photo_is_read_converted_to_srgb() -> None:
    stored = patches()
    image, note = load_rgb(png(stored, P3))
    assert image is not None and "converted" in note and "test Display P3" in note
    assert np.abs(image.astype(float) - p3_to_srgb(stored)).max() <= 2.0
    assert np.abs(image.astype(float) - stored).max() > 10  # the conversion is not a no-op on these colours
    raw, raw_note = load_rgb(png(stored, P3), colour_manage=False)
    assert raw is not None and np.array_equal(raw, stored) and raw_note == ""
    with Image.open(io.BytesIO(png(stored, P3))) as opened:  # the API's PIL path converts the same way
        assert np.array_equal(as_rgb(opened), image)
    grey = Image.fromarray(stored).convert("L")
    grey.info["icc_profile"] = P3  # a grey picture with an RGB profile: neither load_rgb nor the API converts it
    assert np.array_equal(as_rgb(grey), np.asarray(grey.convert("RGB")))


@pytest.mark.parametrize("turned", [False, True])
def test_a_display_p3_photo_is_converted_without_a_second_image_of_its_size(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, turned: bool
) -> None:
    """Before: load_rgb converted a P3 photo into a new PIL image beside the one read, and both were held while the
    array was made from it: 4 bytes a pixel more at the peak of reading a phone's photo (benchmarks/adjust.py
    --memory). Now the conversion is made in the pixels read, with the same values; a PIL image a caller gives
    (as_rgb) is left as it was. An EXIF-turned photo (``turned``) held Pillow's upright copy beside the image read
    too (+192 MB for a 48 MP one): it is now turned as its array is written, and the image read is the only one."""
    import gc

    from facekit import images

    stored = np.ascontiguousarray(np.tile(patches(), (2, 3, 1)))  # 96 x 144: no other image of its size is made
    photo = tmp_path / "phone.jpg"
    exif = Image.Exif()
    exif[0x0112] = 6 if turned else 1
    Image.fromarray(stored).save(photo, quality=95, icc_profile=P3, exif=exif.tobytes())
    with Image.open(photo) as opened:  # the conversion as it was: into a new image
        upright = opened.transpose(Image.Transpose.ROTATE_270) if turned else opened.convert("RGB")
        expected = np.asarray(images._transform(upright, P3))
        size = upright.size
    del opened, upright  # (a closed PIL image keeps its pixels)
    alive: list[int] = []
    rgb_array = images.rgb_array
    pixels = type(Image.new("RGB", (1, 1)).im)

    def counted(image: Any, *orientation: int) -> np.ndarray:  # the PIL images of the photo's size held as the
        # array is made
        gc.collect()
        found = [o for o in gc.get_objects() if issubclass(type(o), Image.Image) and o.size in (size, size[::-1])]
        alive.append(sum(isinstance(o._im, pixels) for o in found))
        return rgb_array(image, *orientation)

    monkeypatch.setattr(images, "rgb_array", counted)
    image, note = load_rgb(photo)
    assert image is not None and "converted" in note and np.array_equal(image, expected)
    assert alive == [1]  # (before, turned: 2, the image read and its upright copy)
    with Image.open(photo) as opened:
        opened.load()
        before = np.asarray(opened).copy()
        alive.clear()
        assert np.array_equal(as_rgb(opened), expected)
        assert np.array_equal(np.asarray(opened), before) and opened.info["icc_profile"] == P3  # the caller's
        assert alive == [2]  # the caller's image and the converted (upright) copy


def test_srgb_untagged_and_unusable_profiles_read_as_stored() -> None:
    stored = patches()
    srgb = ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()
    for icc in (None, srgb):
        image, note = load_rgb(png(stored, icc))
        assert image is not None and np.array_equal(image, stored) and note == ""
    image, note = load_rgb(png(stored, b"not an ICC profile at all"))
    assert image is not None and np.array_equal(image, stored) and "read as sRGB" in note


def test_gains_moved_into_p3_turn_the_same_colour_grey() -> None:
    from facekit.apps.adjust import gains_in_primaries

    gains = np.array([0.8, 1.0, 1.45])  # sRGB gains that turn the linear sRGB colour 1 / gains grey
    cast_p3 = (1.0 / gains) @ SRGB_COLORANTS @ np.linalg.inv(PRIMARIES)  # that colour in P3's linear light
    corrected = cast_p3 * gains_in_primaries(gains, PRIMARIES)
    assert np.allclose(corrected, corrected.mean(), atol=1e-9)
    assert np.allclose(gains_in_primaries(gains, SRGB_COLORANTS), gains)  # sRGB into sRGB: unchanged


@pytest.mark.parametrize("suffix", [".jpg", ".png"])
def test_adjust_writes_a_p3_photos_own_values_corrected_under_its_profile(tmp_path: Path, suffix: str) -> None:
    """A JPEG takes the quick path (estimated on a small converted copy), a PNG the general one (the whole photo
    converted, then its stored values corrected): both write the stored values corrected under the P3 profile."""
    from facekit.apps.adjust import _in_own_profile, apply_linear_gains, gains_in_primaries
    from facekit.apps.baselines import GlobalWhiteBalance

    stored = np.clip(patches().astype(int) + np.array([25, 0, -25]), 0, 255).astype(np.uint8)  # a warm cast
    photo = tmp_path / f"p3{suffix}"
    Image.fromarray(stored).save(photo, quality=98, subsampling=0, icc_profile=P3)
    quick = _in_own_profile(photo, GlobalWhiteBalance("gray-world"))
    assert (quick is not None) == (suffix == ".jpg")
    assert _in_own_profile(photo, object()) is None  # a corrector that does not say it estimates on a copy
    result = run_cli("adjust", str(photo), "--method", "gray-world", "-o", str(tmp_path / "out"))
    assert result.returncode == 0, result.stdout + result.stderr
    record = json.loads((tmp_path / "out" / "p3.json").read_text())
    assert record["written"]["profile"] == "kept"
    with Image.open(tmp_path / "out" / f"p3{suffix}") as adjusted:
        assert adjusted.info.get("icc_profile") == P3
        written = np.asarray(adjusted.convert("RGB")).astype(float)
    with Image.open(photo) as read:
        as_stored = np.asarray(read.convert("RGB"))  # the JPEG's own values (as load_rgb(colour_manage=False))
    # gray-world's sRGB gains moved into P3's primaries (what turns grey in sRGB turns grey in P3).
    expected = apply_linear_gains(as_stored, gains_in_primaries(np.asarray(record["gains_rgb"]), PRIMARIES))
    assert np.abs(written - expected).mean() < 1.5
    converted = apply_linear_gains(load_rgb(photo)[0], np.asarray(record["gains_rgb"]))  # the sRGB values: wrong here
    assert np.abs(written - converted).mean() > 5


def broken_profiles() -> dict[str, bytes]:
    """Profiles little CMS refuses or Pillow cannot describe: a Latin-1 description, a curve with a bad count."""
    latin = matrix_icc(DISPLAY_P3_COLORANTS, 2.2, "\u00c9cran P3".encode("latin-1"))
    curve = matrix_icc(DISPLAY_P3_COLORANTS, 2.2)
    at = curve.index(b"curv", curve.index(b"curv") + 1)  # the second curve's entry count
    bad_curve = curve[: at + 8] + b"\xff\xff\xff\xff" + curve[at + 12 :]
    return {"latin-1 description": latin, "bad curve": bad_curve}


@pytest.mark.parametrize("name", list(broken_profiles()))
def test_a_broken_profile_never_loses_the_photo(name: str) -> None:
    stored = patches()
    image, note = load_rgb(png(stored, broken_profiles()[name]))
    assert image is not None, note
    if "converted" not in note:  # little CMS refused it: the values as stored, and the note says so
        assert np.array_equal(image, stored) and "read as sRGB" in note


def test_a_broken_profile_does_not_end_an_adjust_batch(tmp_path: Path) -> None:
    photos = tmp_path / "in"
    photos.mkdir()
    for index, icc in enumerate([*broken_profiles().values(), None]):
        Image.fromarray(patches()).save(photos / f"{index}.jpg", quality=95, **({"icc_profile": icc} if icc else {}))
    result = run_cli("adjust", str(photos), "--method", "gray-world", "-o", str(tmp_path / "out"))
    assert result.returncode == 0, result.stdout + result.stderr
    assert sorted(p.name for p in (tmp_path / "out").glob("*.jpg")) == ["0.jpg", "1.jpg", "2.jpg"]


def test_srgb_primaries_with_another_curve_are_converted() -> None:
    """sRGB is recognised by what its conversion does (primaries and curve), not by the primaries alone."""
    linear = matrix_icc(tuple(map(tuple, SRGB_COLORANTS)), 1.0, "linear sRGB")
    image, note = load_rgb(png(np.full((8, 8, 3), 50, np.uint8), linear))
    assert image is not None and "converted" in note and abs(int(image[0, 0, 0]) - 124) <= 2


@pytest.mark.parametrize("mode", ["L", "RGBA"])
def test_other_modes_with_a_profile_still_read(mode: str) -> None:
    """A greyscale photo with a (grey) profile is read without a note about it; a transparent one in P3 is
    composited over grey, then converted."""
    stored = patches()
    image = Image.fromarray(stored).convert(mode)
    buffer = io.BytesIO()
    grey = ImageCms.ImageCmsProfile(ImageCms.createProfile("LAB")).tobytes()
    image.save(buffer, "PNG", icc_profile=grey if mode == "L" else P3)
    read, note = load_rgb(buffer.getvalue())
    assert read is not None and read.shape == stored.shape
    if mode == "L":
        assert note == "greyscale"
    else:
        assert "alpha composited over grey" in note and "converted" in note
        assert np.abs(read.astype(float) - p3_to_srgb(stored)).max() <= 2.0


def test_outputs_made_before_profiles_were_converted_are_not_taken_for_done(tmp_path: Path) -> None:
    """A P3 photo's record says it was read converted; a record without it (made before facekit converted profiles,
    from other numbers) makes the rerun leave the outputs alone (``exists``) instead of calling them done."""
    photo = tmp_path / "p3.jpg"
    Image.fromarray(patches()).save(photo, quality=95, icc_profile=P3)
    out = tmp_path / "out"
    first = run_cli("adjust", str(photo), "--method", "gray-world", "-o", str(out))
    assert first.returncode == 0, first.stdout + first.stderr
    record = json.loads((out / "p3.json").read_text())
    assert record["read"].startswith("converted")
    again = run_cli("adjust", str(photo), "--method", "gray-world", "-o", str(out))
    assert again.returncode == 0 and "done" in again.stdout, again.stdout
    del record["read"]
    (out / "p3.json").write_text(json.dumps(record))
    old = run_cli("adjust", str(photo), "--method", "gray-world", "-o", str(out))
    assert "exists" in old.stdout, old.stdout


def test_a_tiff_whose_profile_tag_is_a_number_is_read_with_a_note(tmp_path: Path) -> None:
    """Pillow hands a TIFF's ICC tag stored as SHORT or LONG back as an int: not a profile, never a crash."""
    from PIL import TiffImagePlugin

    from facekit.batch import reading

    tags = TiffImagePlugin.ImageFileDirectory_v2()
    tags[34675] = 7
    tags.tagtype[34675] = 3  # SHORT
    path = tmp_path / "odd.tif"
    Image.fromarray(patches()).save(path, tiffinfo=tags)
    with Image.open(path) as opened:
        assert isinstance(opened.info.get("icc_profile"), int)  # the case this test is about
    image, note = load_rgb(path)
    assert image is not None and np.array_equal(image, patches()) and "read as sRGB" in note
    assert reading(path) == {}


def test_the_cli_says_a_photo_over_pillows_limit_once_in_its_row(tmp_path: Path) -> None:
    """Before: Pillow's DecompressionBombWarning (its own 89 MP limit) was printed beside the row that refuses it."""
    Image.new("1", (12_000, 12_000)).save(tmp_path / "bomb.png")  # 144 MP in a few kB
    result = run_cli("normalize", str(tmp_path / "bomb.png"), "-o", str(tmp_path / "out"))
    assert result.returncode == 3, result.stdout + result.stderr
    assert "144 MP > 50 MP" in result.stdout and "Warning" not in result.stderr, result.stderr


def test_normalize_and_attributes_records_say_a_photo_was_converted(tmp_path: Path) -> None:
    """The records a rerun compares against carry ``read`` for a converted photo; attributes measures a P3 photo
    again when its earlier row lacks it (measured before profiles were converted)."""
    from facekit.testing import real_face

    photos = tmp_path / "in"
    photos.mkdir()
    Image.fromarray(real_face().image).save(photos / "face.jpg", quality=95, icc_profile=P3)
    normalized = run_cli("normalize", str(photos / "face.jpg"), "-o", str(tmp_path / "n"))
    assert normalized.returncode == 0, normalized.stdout + normalized.stderr
    assert json.loads((tmp_path / "n" / "face.json").read_text())["read"].startswith("converted")
    out = tmp_path / "a"
    first = run_cli("attributes", str(photos / "face.jpg"), "-o", str(out))
    assert first.returncode == 0, first.stdout + first.stderr
    table = json.loads((out / "attributes.json").read_text())
    assert table["photos"][0]["read"].startswith("converted")
    again = run_cli("attributes", str(photos / "face.jpg"), "-o", str(out))
    assert again.returncode == 0 and "earlier" in again.stdout, again.stdout  # its row reused
    del table["photos"][0]["read"]
    (out / "attributes.json").write_text(json.dumps(table))
    old = run_cli("attributes", str(photos / "face.jpg"), "-o", str(out))  # not reused: its overlay is in the way
    assert "earlier" not in old.stdout and "exists" in old.stdout, old.stdout


def test_the_quick_paths_before_after_is_as_sharp_as_the_general_paths(tmp_path: Path) -> None:
    """A wide P3 JPEG's before/after is drawn from a copy as high as it is shown, not from the 1,024-px estimate copy
    blown up (a 6:1 panorama's would be 171 px high)."""
    rng = np.random.default_rng(9)
    wide = np.repeat(rng.integers(40, 200, (60, 360, 3)), 10, axis=0).repeat(10, axis=1).astype(np.uint8)
    for suffix in (".jpg", ".png"):
        Image.fromarray(wide).save(tmp_path / f"wide{suffix}", quality=98, subsampling=0, icc_profile=P3)
        result = run_cli(
            "adjust", str(tmp_path / f"wide{suffix}"), "--method", "gray-world", "-o", str(tmp_path / suffix)
        )
        assert result.returncode == 0, result.stdout + result.stderr
    previews = [np.asarray(Image.open(tmp_path / s / "wide_before_after.png"), float) for s in (".jpg", ".png")]
    assert previews[0].shape == previews[1].shape == (480, 2 * 2880, 3)
    assert np.abs(previews[0] - previews[1]).mean() < 3  # the same picture, up to JPEG and the order of steps


def test_a_grey_jpeg_with_an_rgb_profile_is_written_without_it(tmp_path: Path) -> None:
    """load_rgb does not convert a grey photo; the written values are the sRGB estimate's, so a P3 label would lie."""
    photo = tmp_path / "grey.jpg"
    Image.fromarray(patches()).convert("L").save(photo, quality=95, icc_profile=P3)
    result = run_cli("adjust", str(photo), "--method", "gray-world", "-o", str(tmp_path / "out"))
    assert result.returncode == 0, result.stdout + result.stderr
    assert json.loads((tmp_path / "out" / "grey.json").read_text())["written"]["profile"] == "dropped"
    with Image.open(tmp_path / "out" / "grey.jpg") as written:
        assert "icc_profile" not in written.info


def test_a_photo_of_several_frames_says_which_was_read(tmp_path: Path) -> None:
    """An animated GIF or a multi-page TIFF is read as its first frame, and the note says so (before: silently, so a
    blank first frame was 'no face' with no hint that a later frame held one)."""
    frames = [Image.new("RGB", (20, 20), (10 * i, 0, 0)) for i in range(3)]
    frames[0].save(tmp_path / "moving.gif", save_all=True, append_images=frames[1:])
    image, note = load_rgb(tmp_path / "moving.gif")
    assert image is not None and note == "the first of 3 frames"
    frames[0].save(tmp_path / "pages.tif", save_all=True, append_images=frames[1:2])
    assert load_rgb(tmp_path / "pages.tif")[1] == "the first of 2 frames"
    assert load_rgb(_write(tmp_path / "one.png", frames[0]))[1] == ""


def test_a_tiff_whose_next_page_is_damaged_is_read_as_its_first(tmp_path: Path) -> None:
    """Before (helper-86): a TIFF whose pointer to a next page leads to a directory without the image's size (a damaged
    or cut-and-patched file) ended the batch in a TypeError traceback ('Missing dimensions', from counting frames),
    though its only picture is whole. It is read as that picture, turned by its own page's orientation tag (not left
    with the damaged directory's tags)."""
    import struct

    pixels = np.random.default_rng(3).integers(0, 256, (12, 10, 3), dtype=np.uint8)
    buffer = io.BytesIO()  # stored a quarter turn anticlockwise, its orientation tag says so (the first page's own)
    Image.fromarray(np.ascontiguousarray(np.rot90(pixels, 1))).save(buffer, "TIFF", tiffinfo={0x0112: 6})
    data = bytearray(buffer.getvalue())
    assert data[:4] == b"II*\x00"
    (first,) = struct.unpack_from("<I", data, 4)
    (entries,) = struct.unpack_from("<H", data, first)
    # The next page: a directory holding a Software tag only, at the end of the file.
    struct.pack_into("<I", data, first + 2 + 12 * entries, len(data))
    data += struct.pack("<H", 1) + struct.pack("<HHI", 0x0131, 2, 4) + b"abc\x00" + struct.pack("<I", 0)
    image, note = load_rgb(bytes(data))
    assert image is not None and np.array_equal(image, pixels) and note == ""
    with Image.open(io.BytesIO(bytes(data))) as opened:
        assert np.array_equal(as_rgb(opened), pixels)


def _write(path: Path, image: Image.Image) -> Path:
    image.save(path)
    return path


def test_premultiplied_alpha_and_8_bit_integer_images_read_as_their_plain_forms() -> None:
    """A PIL image with premultiplied alpha (RGBa, La) is composited over grey as its RGBA / LA form is (RGBa lost
    its transparency, La was refused: Pillow converts it to nothing but LA); a 32-bit integer image in 0..255 (what
    ``Image.fromarray`` makes of an int32 array) reads as its 8-bit form (it read at 1/257 of its brightness)."""
    rgba = np.dstack([patches(), np.full((48, 48), 255, np.uint8)])
    rgba[:, :16, 3] = 0  # a transparent third
    plain = as_rgb(Image.fromarray(rgba))
    assert np.abs(as_rgb(Image.fromarray(rgba).convert("RGBa")).astype(int) - plain).max() <= 1
    grey_alpha = Image.fromarray(rgba).convert("LA")
    assert np.abs(as_rgb(grey_alpha.convert("La")).astype(int) - as_rgb(grey_alpha)).max() <= 1
    assert (plain[:, :16] == 128).all()  # the transparent part is the grey it is composited over
    grey = np.asarray(Image.fromarray(patches()).convert("L"))
    wide = Image.fromarray(grey.astype(np.int32))
    assert wide.mode == "I" and np.array_equal(as_rgb(wide)[..., 0], grey)
    sixteen = Image.fromarray(grey.astype(np.uint16))  # declares 16 bits: dark, as its values say
    assert sixteen.mode.startswith("I;16") and as_rgb(sixteen).max() <= 1


@pytest.mark.parametrize("orientation", range(1, 9))
def test_the_orientation_table_turns_a_photo_as_pillow_does(orientation: int) -> None:
    """load_rgb (through its inverse, facekit.images.stored_view) and adjust's deep-pixel path turn numpy arrays
    upright with facekit.images.UPRIGHT: held to Pillow's own reading of the tag (ImageOps.exif_transpose)."""
    from PIL import ImageOps

    from facekit.images import UPRIGHT, stored_view

    stored = np.arange(5 * 7 * 3, dtype=np.uint8).reshape(5, 7, 3)  # not square, no symmetry
    image = Image.fromarray(stored)
    exif = image.getexif()
    exif[0x0112] = orientation
    buffer = io.BytesIO()
    image.save(buffer, "PNG", exif=exif)
    with Image.open(buffer) as opened:
        by_pil = np.asarray(ImageOps.exif_transpose(opened))
    assert np.array_equal(UPRIGHT[orientation](stored), by_pil)
    assert np.array_equal(stored_view(by_pil, orientation), stored)


def _turned_photos(orientation: int) -> dict[str, bytes]:
    """A photo of each kind load_rgb reads in its own way, stored under EXIF ``orientation``: an sRGB and a Display
    P3 JPEG (converted on reading), a 16-bit grey and an RGBA PNG (scaled to 8 bits; composited over grey)."""
    rgb = np.ascontiguousarray(np.tile(patches(), (1, 2, 1))[:40])  # 40 x 96: not square
    exif = Image.Exif()
    exif[0x0112] = orientation
    photos = {}
    for name, icc in (("srgb", None), ("p3", P3)):
        buffer = io.BytesIO()
        Image.fromarray(rgb).save(
            buffer, "JPEG", quality=95, exif=exif.tobytes(), **({"icc_profile": icc} if icc else {})
        )
        photos[name] = buffer.getvalue()
    grey = (rgb[..., 0].astype(np.uint16) * 257 + np.arange(96, dtype=np.uint16)).astype(np.uint16)
    alpha = np.dstack([rgb, np.linspace(0, 255, 96, dtype=np.uint8)[None].repeat(40, 0)])
    for name, pixels in (("grey16", grey), ("rgba", alpha)):
        buffer = io.BytesIO()
        Image.fromarray(pixels).save(buffer, "PNG", exif=exif.tobytes())
        photos[name] = buffer.getvalue()
    return photos


@pytest.mark.parametrize("strips", [False, True])
@pytest.mark.parametrize("orientation", range(1, 9))
def test_a_turned_photo_reads_as_pillows_upright_copy_did(
    monkeypatch: pytest.MonkeyPatch, orientation: int, strips: bool
) -> None:
    """Before: load_rgb turned the image read into an upright PIL copy (Pillow's transpose) and made the array from
    that; now it writes the array turned (``strips``: a strip of rows at a time, as of a large photo). The same
    pixels, byte for byte, for every orientation and every kind of photo read its own way."""
    from PIL import ImageOps

    from facekit import images

    if strips:
        monkeypatch.setattr(images, "ARRAY_STRIP_BYTES", 7 * 96 * 3)  # 7 rows of 96 px (not a divisor of 40)
    for name, data in _turned_photos(orientation).items():
        image, note = load_rgb(data)
        with Image.open(io.BytesIO(data)) as opened:
            expected = as_rgb(ImageOps.exif_transpose(opened))  # (an upright copy: no orientation left to apply)
        assert image is not None and image.shape == expected.shape and image.dtype == expected.dtype, (name, note)
        assert np.array_equal(image, expected), (name, orientation)
        assert not image.flags.writeable or name == "grey16", name  # as before: an RGB array is read-only


def test_a_32_bit_integer_file_with_small_values_stays_on_the_16_bit_scale(tmp_path: Path) -> None:
    """The 0..255 reading is for PIL images made in memory: a file Pillow opens as "I" (older Pillow opens 16-bit
    PNGs so) with every value <= 255 is a dark 16-bit picture, not an 8-bit one (helper-94)."""
    values = np.array([[0, 100], [200, 255]], np.int32)
    Image.fromarray(values).save(tmp_path / "dark.tif")
    with Image.open(tmp_path / "dark.tif") as opened:
        assert opened.mode == "I"
    image, note = load_rgb(tmp_path / "dark.tif")
    assert image is not None and int(image.max()) <= 1 and "16-bit" in note
    assert as_rgb(Image.fromarray(values))[..., 0].tolist() == [[0, 100], [200, 255]]


def test_a_premultiplied_photo_in_another_profile_is_converted_as_its_plain_form() -> None:
    """RGBa was not among the colour-managed modes: its P3 values were taken as sRGB (helper-94)."""
    rgba = np.dstack([patches(), np.full((48, 48), 255, np.uint8)])
    plain, premultiplied = Image.fromarray(rgba), Image.fromarray(rgba).convert("RGBa")
    for image in (plain, premultiplied):
        image.info["icc_profile"] = P3
    expected = as_rgb(plain)
    assert np.abs(expected.astype(int) - patches()).max() > 5  # the conversion moves these colours
    assert np.abs(as_rgb(premultiplied).astype(int) - expected).max() <= 1


def test_a_photo_over_the_limit_reads_as_more_megapixels_than_the_limit(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Before: whole megapixels, so a 250 x 250 photo under FACEKIT_MAX_MEGAPIXELS=0.01 was "0 MP > 0.01 MP" (and a
    50.3 MP photo under the default would have been "50 MP > 50 MP")."""
    path = tmp_path / "photo.png"
    Image.new("RGB", (201, 200)).save(path)  # 0.0402 MP
    monkeypatch.setenv("FACEKIT_MAX_MEGAPIXELS", "0.01")
    assert load_rgb(path) == (None, "too large (201 x 200 = 0.04 MP > 0.01 MP; set FACEKIT_MAX_MEGAPIXELS to allow it)")
    monkeypatch.setenv("FACEKIT_MAX_MEGAPIXELS", "0.04")  # two digits would read as the limit itself
    assert load_rgb(path)[1].startswith("too large (201 x 200 = 0.0402 MP > 0.04 MP;")


def test_a_file_that_is_no_image_says_so_in_words(tmp_path: Path) -> None:
    """Before: "unreadable (UnidentifiedImageError: cannot identify image file '/the/whole/path/notes.jpg')":
    Pillow's exception class and the path that the table's row (or the error line) already names."""
    path = tmp_path / "notes.jpg"
    path.write_text("not a photo")
    image, why = load_rgb(path)
    assert image is None
    assert why == "unreadable (not an image file: damaged, or another kind of file under a photo's name)"
    assert load_rgb(path.read_bytes())[1] == why  # the same for bytes


@pytest.mark.parametrize("value", ["inf", "1e400", "1e303"])
def test_an_infinite_pixel_limit_is_a_one_line_error(
    value: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Before: FACEKIT_MAX_MEGAPIXELS=inf passed the check and ended every read in an OverflowError traceback (Pillow's
    guard set to int(inf)); so did a finite limit whose pixel count is not (1e303 megapixels: int(1e303 * 1e6))."""
    path = tmp_path / "photo.png"
    Image.new("RGB", (20, 20)).save(path)
    monkeypatch.setenv("FACEKIT_MAX_MEGAPIXELS", value)
    with pytest.raises(
        FacekitError,
        match=f"FACEKIT_MAX_MEGAPIXELS must be a finite number of megapixels, at most 1e302, got '{value}'",
    ):
        load_rgb(path)


@pytest.mark.parametrize("mode", ["RGB", "L"])
def test_a_png_transparent_colour_is_composited_over_grey_as_alpha_is(mode: str, tmp_path: Path) -> None:
    """Before: an RGB or grey PNG whose transparency is one colour (a tRNS chunk, as PNG optimizers store a cut-out's
    binary alpha) read as that colour: its background black where it is meant to be gone, unlike the same cut-out
    saved as RGBA (over mid-grey)."""
    rgb = patches()
    rgb[:, :16] = 0  # the background, black and transparent
    path = tmp_path / "cutout.png"
    keyed = Image.fromarray(rgb).convert(mode)
    keyed.save(path, transparency=(0, 0, 0) if mode == "RGB" else 0)
    image, note = load_rgb(path)
    assert image is not None and note == "alpha composited over grey"
    assert (image[:, :16] == 128).all()
    assert np.array_equal(image[:, 16:], np.asarray(keyed.convert("RGB"))[:, 16:])


def test_a_damaged_avif_is_an_unreadable_photo_not_the_end_of_the_batch(tmp_path: Path) -> None:
    """Before: Pillow's AVIF plugin raises RuntimeError for a file libavif cannot parse ("Missing or empty image
    item"), which neither load_rgb nor the folder scan's look at a PNG's text chunks caught: one damaged AVIF, under its
    own name or a photo's, ended a whole `facekit normalize` (adjust, attributes, avatar) batch in a traceback, and a
    served upload in "something went wrong on the server"."""
    from PIL import features

    from facekit.batch import NORMALIZE_OUTPUTS, png_text, scan_inputs

    if not features.check("avif"):
        pytest.skip("this Pillow reads no AVIF")
    buffer = io.BytesIO()
    Image.new("RGB", (16, 16), (200, 120, 90)).save(buffer, "AVIF")
    data = bytearray(buffer.getvalue())
    item = data.index(b"pitm") + 8  # (the box's version and flags, then the primary item's id)
    data[item : item + 2] = b"\xff\xff"  # an item the file does not hold
    photos = tmp_path / "in"
    photos.mkdir()
    path = photos / "photo.png"  # under a PNG's name, the folder scan opens it for facekit's mark
    path.write_bytes(bytes(data))
    with pytest.raises(RuntimeError):  # (what Pillow makes of it)
        Image.open(path)
    image, why = load_rgb(path)
    assert image is None and why.startswith("unreadable (")
    assert load_rgb(bytes(data))[0] is None
    assert png_text(path) == {}
    found = scan_inputs([str(photos)], tmp_path / "out", outputs=NORMALIZE_OUTPUTS)
    assert [relative for _, relative in found] == ["photo.png"]


def test_a_qoi_photo_cut_short_is_an_unreadable_photo_not_the_end_of_the_batch(tmp_path: Path) -> None:
    """Before: Pillow's QOI decoder raises IndexError ("index out of range") for a file cut short (a download
    interrupted), which load_rgb let through: a traceback that ended the whole batch."""
    Image.init()  # (Image.SAVE is filled as the plugins load)
    if "QOI" not in Image.SAVE:
        pytest.skip("this Pillow writes no QOI")
    buffer = io.BytesIO()
    Image.fromarray(np.random.default_rng(0).integers(0, 256, (16, 16, 3), dtype=np.uint8)).save(buffer, "QOI")
    path = tmp_path / "photo.jpg"  # (a folder's photo is read whatever its name says)
    path.write_bytes(buffer.getvalue()[:522])  # cut off between two pixels
    with pytest.raises(IndexError), Image.open(path) as opened:  # (what Pillow makes of it)
        opened.load()
    assert load_rgb(path) == (None, f"unreadable ({CUT_SHORT})")
    with Image.open(path) as opened, pytest.raises(PhotoUnreadable, match=CUT_SHORT):  # (before: IndexError)
        as_rgb(opened)


def test_pngs_are_written_at_the_shipped_zlib_level_without_loss(monkeypatch: pytest.MonkeyPatch) -> None:
    """normalize's PNGs are written at zlib level 3 (at PIL's default, 6, encoding them was over a third of a
    photo's time: benchmarks/normalize_folder.py); the level is read when writing, so the benchmark can time others,
    and no level changes a pixel."""
    import facekit.batch
    from facekit.batch import png_bytes

    def zlib_level_class(data: bytes) -> int:
        """FLEVEL of the first IDAT chunk's zlib header: 0 for levels 0-1, 1 for 2-5, 2 for 6, 3 for 7-9."""
        return data[data.index(b"IDAT") + 5] >> 6

    rng = np.random.default_rng(0)
    image = np.repeat(rng.integers(0, 256, (64, 32, 3), dtype=np.uint8), 4, axis=1)
    shipped = png_bytes(image, {"facekit": "1"})
    assert zlib_level_class(shipped) == 1  # level 3 (PIL's default, 6, is class 2)
    for level, level_class in ((0, 0), (6, 2), (9, 3)):
        monkeypatch.setattr(facekit.batch, "PNG_LEVEL", level)
        data = png_bytes(image, {"facekit": "1"})
        assert zlib_level_class(data) == level_class
        assert np.array_equal(np.asarray(Image.open(io.BytesIO(data))), image)
    assert np.array_equal(np.asarray(Image.open(io.BytesIO(shipped))), image)


@pytest.mark.skipif(not hasattr(__import__("os"), "fork"), reason="fork is POSIX's")
def test_a_child_forked_while_another_thread_reads_a_large_photo_is_not_stuck() -> None:
    """Stop 53: the lock guarding Pillow's raised pixel limit, held at a fork by another thread reading a photo over
    Pillow's own limit, stayed held in the child, whose next such photo waited forever; and the raised limit stayed.
    A forked child gets a new lock and Pillow's limit as it was."""
    from facekit import images

    original = Image.MAX_IMAGE_PIXELS
    assert original is not None
    above = 2 * original / 1e6  # megapixels: over Pillow's own limit, so the guard is taken

    def child() -> bool:
        if Image.MAX_IMAGE_PIXELS != original:
            return False
        with images._pillow_limit(above):
            return Image.MAX_IMAGE_PIXELS == int(above * 1e6)

    assert forked_while_held(images._pillow_limit(above), child) == 0
    assert Image.MAX_IMAGE_PIXELS == original


def test_a_file_not_open_for_reading_bytes_is_the_callers_error_not_the_photos(tmp_path: Path) -> None:
    """Stop 53 made a file whose read() fails a PhotoUnreadable, the photo's own `unreadable` outcome in a batch; a
    file open for text by codecs (not an io.TextIOBase: its read() raised UnicodeDecodeError) or open for writing
    only (io.UnsupportedOperation) was swept in with it: every photo of such a batch 'unreadable', the codec's words
    or "read" its reason. Like a file open in text mode by open(), how the file was opened is the caller's mistake:
    one line naming the input."""
    import codecs

    from facekit.errors import PhotoUnreadable
    from facekit.images import read_photos

    path = tmp_path / "face.png"
    Image.new("RGB", (8, 8)).save(path)
    with open(path, "rb") as binary, open(tmp_path / "out.png", "wb") as written:
        text = codecs.getreader("utf-8")(binary)
        for given, name in ((text, "text"), (written, "written")):
            with pytest.raises(FacekitError, match=rf"normalize_many: {name}: .*open it with 'rb'"):
                read_photos([path, given], ["face", name], "normalize_many")
            binary.seek(0)
            with pytest.raises(FacekitError, match="open it with 'rb'") as raised:
                as_rgb(given)
            assert not isinstance(raised.value, PhotoUnreadable)


def test_a_file_object_whose_read_takes_no_size_is_read_as_before(monkeypatch: pytest.MonkeyPatch) -> None:
    """Stop 53 reads an open file a chunk at a time (read(n)) up to a cap, where before it called read() once: an
    object whose read() takes no size, as a hand-made wrapper of an upload's bytes has, was read before and raised
    TypeError ("read() takes 1 positional argument but 2 were given") after. It is read whole, as before, and still
    refused when that is more than the cap."""
    from facekit.errors import PhotoUnreadable

    buffer = io.BytesIO()
    Image.fromarray(np.full((8, 8, 3), 200, np.uint8)).save(buffer, "PNG")

    class Wrapper:  # read() without a size, as a wrapper of bytes already in memory may have
        def __init__(self, data: bytes) -> None:
            self.data = data

        def read(self) -> bytes:
            return self.data

    assert np.array_equal(as_rgb(Wrapper(buffer.getvalue())), np.full((8, 8, 3), 200, np.uint8))
    monkeypatch.setenv("FACEKIT_MAX_MEGAPIXELS", "0.2")  # (a cap of 16 MiB and 8 bytes a pixel of 0.2 MP)
    with pytest.raises(PhotoUnreadable, match="too large: over 18 MB"):
        as_rgb(Wrapper(buffer.getvalue() + bytes(20 * 2**20)))


def test_a_file_whose_read_must_be_awaited_is_a_one_line_error(tmp_path: Path) -> None:
    """An upload object whose read() is a coroutine (FastAPI's and Starlette's UploadFile, aiofiles) passed as a
    photo ended in TypeError ("object of type 'coroutine' has no len()"; before stop 53: "cannot convert 'coroutine'
    object to bytes") and a "coroutine ... was never awaited" warning. It says what to give instead, as the
    caller's mistake (in a batch too), and the coroutine it was handed is closed."""
    import inspect

    from facekit.errors import PhotoUnreadable
    from facekit.images import read_photos

    path = tmp_path / "face.png"
    Image.new("RGB", (8, 8)).save(path)
    started: list[Any] = []

    class AsyncUpload:  # as starlette.datastructures.UploadFile, whose read is an async def
        def __init__(self) -> None:
            self.file = io.BytesIO(path.read_bytes())

        def read(self, size: int = -1) -> Any:
            started.append(self._read(size))  # (kept: the test asks whether it was closed)
            return started[-1]

        async def _read(self, size: int) -> bytes:
            return self.file.read(size)

    with pytest.raises(FacekitError, match=r"reads asynchronously .*\.file") as raised:
        as_rgb(AsyncUpload())
    assert not isinstance(raised.value, PhotoUnreadable)
    assert started and all(inspect.getcoroutinestate(c) == inspect.CORO_CLOSED for c in started)
    with pytest.raises(FacekitError, match=r"measure_faces: upload: .* reads asynchronously"):
        read_photos([path, AsyncUpload()], ["face", "upload"], "measure_faces")


def test_a_large_photo_is_read_without_holding_its_pixels_twice_over(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Before: ``np.asarray`` of the decoded image made Pillow join the whole image's bytes from their chunks (two
    copies at once) and ``convert("RGB")`` copied an RGB image first, so a 48 MP JPEG took 650 MB to read (a
    ``facekit serve`` request peaked 176 MB higher). Now the array is filled a strip at a time, with the same values.
    The Python-side peak (tracemalloc: bytes and arrays) stays near the photo's own pixels, not twice them."""
    import tracemalloc

    import facekit.images

    monkeypatch.setattr(facekit.images, "ARRAY_STRIP_BYTES", 1 << 20, raising=False)
    rng = np.random.default_rng(5)
    path = tmp_path / "large.jpg"
    Image.fromarray(rng.integers(0, 256, (1500, 2000, 3), dtype=np.uint8)).save(path, quality=90)
    with Image.open(path) as opened:
        expected = np.asarray(opened.convert("RGB"))
    tracemalloc.start()
    try:
        photo, note = load_rgb(path)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert photo is not None and note == "" and np.array_equal(photo, expected)
    assert peak < 1.25 * expected.nbytes, (peak, expected.nbytes)


def test_a_photo_read_a_strip_at_a_time_is_as_read_only_as_one_read_whole(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``np.asarray`` of a PIL image is read-only, and so was every photo load_rgb and as_rgb read through it; the
    strip-wise read of a large one (2c6a297) gave a writable array, so code that wrote into a large photo failed on a
    small one ("assignment destination is read-only"), a difference by size alone (helper-125's review)."""
    import facekit.images

    monkeypatch.setattr(facekit.images, "ARRAY_STRIP_BYTES", 1 << 16, raising=False)
    rng = np.random.default_rng(6)
    flags = {}
    for side in (32, 400):  # read whole; read in strips of 54 rows
        pixels = rng.integers(0, 256, (side, side, 3), dtype=np.uint8)
        Image.fromarray(pixels).save(tmp_path / f"{side}.png")
        photo, _ = load_rgb(tmp_path / f"{side}.png")
        assert photo is not None and np.array_equal(photo, pixels)
        flags[side] = (photo.flags.writeable, as_rgb(Image.fromarray(pixels)).flags.writeable)
    assert flags[400] == flags[32] == (False, False), flags


@pytest.mark.parametrize("orientation", [5, 6, 7, 8])
@pytest.mark.parametrize("mode", ["RGBA", "CMYK", "L"])
def test_an_uncompressed_turned_tiff_reads_from_its_path_as_from_its_bytes(
    tmp_path: Path, mode: str, orientation: int
) -> None:
    """Pillow maps an uncompressed TIFF of these modes from its path with its upright size and turns it again: the
    photo came out scrambled (stored width, rows cut at the wrong length), while its bytes read upright."""
    stored = Image.fromarray(np.arange(5 * 7 * 4, dtype=np.uint8).reshape(5, 7, 4), "RGBA").convert(mode)
    stored.save(tmp_path / "turned.tif", tiffinfo={0x0112: orientation})
    from_path, _ = load_rgb(tmp_path / "turned.tif")
    from_bytes, _ = load_rgb((tmp_path / "turned.tif").read_bytes())
    assert from_path is not None and from_bytes is not None and from_path.shape == (7, 5, 3)
    assert np.array_equal(from_path, from_bytes)
    with Image.open(tmp_path / "turned.tif") as opened:
        assert opened.mode == mode and opened.tile[0][0] == "raw"  # (what Pillow maps)


@pytest.mark.parametrize("orientation", [5, 6, 7, 8])
@pytest.mark.parametrize("mode", ["RGBA", "CMYK", "L", "P", "I;16"])
def test_a_turned_uncompressed_tiff_the_caller_opened_reads_as_its_path_does(
    tmp_path: Path, mode: str, orientation: int
) -> None:
    """Before (helper-158): as_rgb of ``Image.open(path)`` let Pillow load the caller's image, which maps such a TIFF
    turned and turns it again (test above): scrambled, where load_rgb of the same path read it upright. Now read as
    load_rgb reads it, the caller's image left loaded upright under its own file name; one the caller had already
    loaded (scrambled in the image itself) is refused, in words that say what to give instead."""
    pixels = np.arange(5 * 7 * 4, dtype=np.uint8).reshape(5, 7, 4)
    stored = Image.fromarray(pixels[..., 0].astype(np.uint16) * 257) if mode == "I;16" else Image.fromarray(pixels)
    path = tmp_path / "turned.tif"
    (stored if mode == "I;16" else stored.convert(mode)).save(path, tiffinfo={0x0112: orientation})
    expected, _ = load_rgb(path)
    assert expected is not None and expected.shape == (7, 5, 3)
    with Image.open(path) as opened:
        assert np.array_equal(as_rgb(opened), expected)
        assert np.array_equal(as_rgb(opened), expected) and opened.filename == str(path)  # (read again: the same)
    with Image.open(path) as opened:
        opened.load()
        with pytest.raises(PhotoUnreadable, match="scrambled as it loaded them from the file: give the path"):
            as_rgb(opened)


@pytest.mark.parametrize("orientation", range(2, 9))
@pytest.mark.parametrize("kind", ["JPEG", "PNG", "TIFF-RGB", "TIFF-deflate"])
def test_a_turned_photo_the_caller_opened_reads_as_its_path_does(tmp_path: Path, kind: str, orientation: int) -> None:
    """The same for the photos Pillow loads without mapping them (compressed, or 3-byte RGB), opened and loaded by
    the caller or not: as_rgb of a caller's image turns it as load_rgb turns its file, once."""
    pixels = np.random.default_rng(orientation).integers(0, 256, (5, 7, 3), dtype=np.uint8)
    exif = Image.Exif()
    exif[0x0112] = orientation
    form, _, compression = kind.partition("-")
    options: dict[str, Any] = {"quality": 100} if form == "JPEG" else {}
    if compression:
        options["compression"] = "tiff_deflate"
    path = tmp_path / f"turned.{form.lower()}"
    Image.fromarray(pixels).save(path, form, exif=exif, **options)
    expected, _ = load_rgb(path)
    assert expected is not None and expected.shape == ((5, 7, 3) if orientation <= 4 else (7, 5, 3))
    for load_first in (False, True):
        with Image.open(path) as opened:
            if load_first:
                opened.load()
            assert np.array_equal(as_rgb(opened), expected), load_first


@pytest.mark.parametrize("mode", ["RGB", "L", "RGBA"])
def test_a_photo_cut_short_is_refused_in_the_same_words_from_its_path_its_bytes_or_as_an_image(
    tmp_path: Path, mode: str
) -> None:
    """Before (helper-158): an uncompressed grey or RGBA TIFF cut short was "unreadable (ValueError: buffer is not
    large enough)" from its path (Pillow maps the file) and "unreadable (OSError: image file is truncated (40 bytes
    not processed))" from its bytes, Pillow's words either way and neither saying what to do; a JPEG cut short had
    the latter's. Now one line, what is wrong and what to do, however it is read."""
    pixels = np.random.default_rng(1).integers(0, 256, (40, 30, 3), dtype=np.uint8)
    for form in ("TIFF", "JPEG"):
        if form == "JPEG" and mode == "RGBA":
            continue
        buffer = io.BytesIO()
        Image.fromarray(pixels).convert(mode).save(buffer, form)
        data = buffer.getvalue()
        path = tmp_path / f"cut.{form.lower()}"
        path.write_bytes(data[: len(data) - 200])
        assert load_rgb(path) == load_rgb(path.read_bytes()) == (None, f"unreadable ({CUT_SHORT})"), form
        with Image.open(path) as opened, pytest.raises(PhotoUnreadable) as refused:
            as_rgb(opened)
        assert str(refused.value) == f"the PIL image given cannot be read: {CUT_SHORT}", form


def test_a_torch_tensor_is_read_as_its_array_or_refused_in_facekits_words() -> None:
    """helper-233: a float tensor that needs grad (a model's output) ended in torch's RuntimeError, a bfloat16 one in
    a TypeError (numpy has no bfloat16), both raw; one on a GPU was torch's TypeError too, though its uint8 (H, W, 3)
    pixels are a photo (read here from the CPU: the same path). A (C, H, W) tensor or array, as torch and torchvision
    hold images, was told only that its shape was wrong, and a tensor's float hint was numpy's astype: each refusal now
    names the form and the expression that makes it (H, W, 3) uint8, its channels moved last in the same line."""
    import torch

    rgb = np.random.default_rng(0).integers(0, 256, (20, 30, 3), dtype=np.uint8)
    pixels = torch.from_numpy(rgb)
    assert np.array_equal(as_rgb(pixels), rgb)
    assert np.array_equal(as_rgb(pixels.permute(2, 0, 1).permute(1, 2, 0)), rgb)  # a view, not contiguous
    floats = pixels.permute(2, 0, 1).float() / 255  # (3, H, W) in 0..1, as torchvision's to_tensor gives
    float_hint = r"\(x\.permute\(1, 2, 0\) \* 255\)\.round\(\)\.to\(torch\.uint8\)"
    said: list[tuple[Any, str]] = [
        (floats.requires_grad_(), r"tensor of dtype torch\.float32 and shape \(3, 20, 30\); for floats in 0\.\.1: "),
        (floats, float_hint),
        (pixels.to(torch.bfloat16), r"tensor of dtype torch\.bfloat16; .*x\.round\(\)\.to\(torch\.uint8\)"),
        (pixels.permute(2, 0, 1), r"tensor of shape \(3, 20, 30\); channels first: give x\.permute\(1, 2, 0\)$"),
        (pixels.permute(2, 0, 1)[None], r"a batch of one image, channels first: give x\[0\]\.permute\(1, 2, 0\)$"),
        (rgb.transpose(2, 0, 1), r"got shape \(3, 20, 30\); channels first: give x\.transpose\(1, 2, 0\)$"),
        (rgb[None], r"got shape \(1, 20, 30, 3\); a batch of one image: give x\[0\]$"),
    ]
    for given, words in said:
        with pytest.raises(FacekitError, match=words) as raised:
            as_rgb(given)
        assert "\n" not in str(raised.value)
    # Back to (H, W, 3) uint8 as the hint says, it reads as the array it came from.
    again = (floats.detach().permute(1, 2, 0) * 255).round().to(torch.uint8)
    assert np.array_equal(as_rgb(again), rgb)
