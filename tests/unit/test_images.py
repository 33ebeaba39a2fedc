"""Reading photos: a colour profile other than sRGB (a phone's Display P3) is converted to sRGB, one that is sRGB or
unusable leaves the values as stored; ``adjust`` writes such a photo's own values corrected, under its own profile."""

from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageCms

from facekit.images import SRGB_COLORANTS, as_rgb, load_rgb
from tests.helpers import DISPLAY_P3_COLORANTS, matrix_icc, run_cli

P3 = matrix_icc(DISPLAY_P3_COLORANTS, 2.2, "test Display P3")


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


def test_srgb_untagged_and_unusable_profiles_read_as_stored() -> None:
    stored = patches()
    srgb = ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()
    for icc in (None, srgb):
        image, note = load_rgb(png(stored, icc))
        assert image is not None and np.array_equal(image, stored) and note == ""
    image, note = load_rgb(png(stored, b"not an ICC profile at all"))
    assert image is not None and np.array_equal(image, stored) and "read as sRGB" in note


def test_adjust_writes_a_p3_photos_own_values_corrected_under_its_profile(tmp_path: Path) -> None:
    from facekit.apps.adjust import apply_linear_gains

    stored = np.clip(patches().astype(int) + np.array([25, 0, -25]), 0, 255).astype(np.uint8)  # a warm cast
    photo = tmp_path / "p3.jpg"
    Image.fromarray(stored).save(photo, quality=98, subsampling=0, icc_profile=P3)
    result = run_cli("adjust", str(photo), "--method", "gray-world", "-o", str(tmp_path / "out"))
    assert result.returncode == 0, result.stdout + result.stderr
    record = json.loads((tmp_path / "out" / "p3.json").read_text())
    assert record["written"]["profile"] == "kept"
    with Image.open(tmp_path / "out" / "p3.jpg") as adjusted:
        assert adjusted.info.get("icc_profile") == P3
        written = np.asarray(adjusted.convert("RGB")).astype(float)
    with Image.open(photo) as read:
        as_stored = np.asarray(read.convert("RGB"))  # the JPEG's own values (as load_rgb(colour_manage=False))
    expected = apply_linear_gains(as_stored, np.asarray(record["gains_rgb"]))
    assert np.abs(written - expected).mean() < 1.5
    converted = apply_linear_gains(load_rgb(photo)[0], np.asarray(record["gains_rgb"]))  # the sRGB values: wrong here
    assert np.abs(written - converted).mean() > 5


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
