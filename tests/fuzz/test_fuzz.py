"""Property-based checks (hypothesis): whatever bytes, recipe or command line a user or an attacker gives, facekit
ends with a result or a FacekitError (one line, a documented exit code), never an uncaught exception.

`make test` runs the "ci" profile (seconds); `make fuzz` runs FACEKIT_FUZZ_PROFILE=fuzz for twenty minutes."""

from __future__ import annotations

import io
import struct
import tempfile
import zlib
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

from facekit.batch import NORMALIZE_OUTPUTS, scan_inputs
from facekit.errors import FacekitError
from facekit.images import as_rgb, load_rgb
from facekit.recipe import resolve


def _encoded(kind: str, size: tuple[int, int], mode: str) -> bytes:
    buffer = io.BytesIO()
    image = Image.new(mode, size, 77 if mode in ("L", "I;16") else (10, 200, 30, 128)[: len(mode)])
    image.save(buffer, format=kind)
    return buffer.getvalue()


def _several(kind: str, **options: Any) -> bytes:
    """A three-frame ``kind`` (GIF, TIFF pages) whose first frame's EXIF says it is turned, with a camera directory."""
    frames = [Image.new("RGB", (12, 10), (40 * i, 90, 200)) for i in range(3)]
    exif = Image.Exif()
    exif[0x0112] = 6
    exif[0x8769] = {0x9003: "2024:05:06 07:08:09"}
    buffer = io.BytesIO()
    frames[0].save(buffer, format=kind, save_all=True, append_images=frames[1:], exif=exif.tobytes(), **options)
    return buffer.getvalue()


VALID = {
    "png": _encoded("PNG", (40, 30), "RGB"),
    "png-rgba": _encoded("PNG", (40, 30), "RGBA"),
    "png-16": _encoded("PNG", (20, 20), "I;16"),
    "jpeg": _encoded("JPEG", (40, 30), "RGB"),
    "jpeg-grey": _encoded("JPEG", (40, 30), "L"),
    "bmp": _encoded("BMP", (8, 8), "RGB"),
    "gif": _encoded("GIF", (8, 8), "L"),
    "webp": _encoded("WEBP", (16, 16), "RGB"),
    "gif-frames": _several("GIF"),
    "tiff-pages": _several("TIFF"),
    "webp-frames": _several("WEBP", lossless=True),
}


def _png_with_header(width: int, height: int) -> bytes:
    """A PNG whose IHDR declares ``width`` x ``height`` (valid CRC) followed by a tiny image's data."""
    data = bytearray(VALID["png"])
    ihdr = struct.pack(">II", width, height) + bytes(data[24:29])
    data[16:29] = ihdr
    data[29:33] = struct.pack(">I", zlib.crc32(b"IHDR" + ihdr) & 0xFFFFFFFF)
    return bytes(data)


@st.composite
def image_bytes(draw: Any) -> bytes:
    choice = draw(st.sampled_from(["mutate", "truncate", "header", "noise"]))
    base = bytearray(VALID[draw(st.sampled_from(sorted(VALID)))])
    if choice == "mutate":
        for _ in range(draw(st.integers(1, 8))):
            base[draw(st.integers(0, len(base) - 1))] = draw(st.integers(0, 255))
        return bytes(base)
    if choice == "truncate":
        return bytes(base[: draw(st.integers(0, len(base)))])
    if choice == "header":
        side = st.one_of(st.integers(0, 70_000), st.integers(0, 2**31 - 1), st.just(2**32 - 1))
        return _png_with_header(draw(side), draw(side))
    return draw(st.binary(max_size=512))


@given(image_bytes(), st.sampled_from([".png", ".jpg", ".webp", ".bin"]))
def test_any_image_bytes_give_an_image_or_a_reason(data: bytes, suffix: str) -> None:
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / f"photo{suffix}"
        path.write_bytes(data)
        image, note = load_rgb(path)
    assert isinstance(note, str)
    if image is None:
        assert note.startswith(("unreadable", "too large"))
    else:
        assert image.dtype == np.uint8 and image.ndim == 3 and image.shape[2] == 3


@given(image_bytes())
def test_any_image_bytes_in_a_folder_are_scanned_as_a_photo(data: bytes) -> None:
    """Before (helper-86): a PNG whose header declares more pixels than Pillow's guard ended every command's folder
    scan (normalize, adjust, attributes, avatar) with a DecompressionBombError traceback: the scan reads a PNG's text
    chunks to know facekit's own outputs. Now it is a photo like any other, which load_rgb says is too large."""
    with tempfile.TemporaryDirectory() as folder:
        photos = Path(folder) / "in"
        photos.mkdir()
        (photos / "photo.png").write_bytes(data)
        found = scan_inputs([str(photos)], Path(folder) / "out", outputs=NORMALIZE_OUTPUTS)
    assert [relative for _, relative in found] == ["photo.png"]


#: EXIF orientation -> how a camera stores an upright picture under that tag (what a viewer undoes to show it).
STORED = {
    1: lambda a: a,
    2: lambda a: a[:, ::-1],
    3: lambda a: a[::-1, ::-1],
    4: lambda a: a[::-1],
    5: lambda a: a.swapaxes(0, 1),
    6: lambda a: np.rot90(a, 1),  # shown turned a quarter clockwise: stored a quarter anticlockwise
    7: lambda a: a.swapaxes(0, 1)[::-1, ::-1],
    8: lambda a: np.rot90(a, -1),
}


def _exif(orientation: int, unwritable: bool) -> bytes:
    """EXIF (little-endian TIFF) holding ``orientation``, and with ``unwritable`` a Make tag stored as a RATIONAL as
    some cameras write odd tags: Pillow reads it but cannot write it back."""
    entries = [(0x010F, 5, 1, 0)] if unwritable else []
    entries.append((0x0112, 3, 1, orientation))
    data_at = 8 + 2 + 12 * len(entries) + 4
    ifd = struct.pack("<H", len(entries))
    for tag, kind, count, value in entries:
        ifd += struct.pack("<HHI", tag, kind, count) + (
            struct.pack("<I", data_at) if kind == 5 else struct.pack("<HH", value, 0)
        )
    return b"Exif\x00\x00II*\x00" + struct.pack("<I", 8) + ifd + struct.pack("<I", 0) + struct.pack("<II", 1, 3)


@given(
    st.integers(1, 6), st.integers(1, 6), st.booleans(), st.sampled_from(["PNG", "WEBP", "TIFF"]), st.integers(0, 255)
)
def test_a_photo_stored_under_any_exif_orientation_is_read_upright(
    height: int, width: int, unwritable: bool, kind: str, seed: int
) -> None:
    """Every orientation turns the stored pixels upright, as a file and as an opened PIL image, whatever else the EXIF
    holds. Before (helper-86): a tag Pillow reads but cannot write back (a number where text belongs) ended the batch
    of a turned photo in a traceback, as ImageOps.exif_transpose rewrote the EXIF after turning it."""
    upright = np.random.default_rng(seed).integers(0, 256, (height, width, 3), dtype=np.uint8)
    for orientation, store in STORED.items():
        buffer = io.BytesIO()
        # (A TIFF holds the tag in its own directory, and Pillow cannot write the odd one there.)
        options: dict[str, Any] = {"tiffinfo": {0x0112: orientation}} if kind == "TIFF" else {}
        options |= {"exif": _exif(orientation, unwritable)} if kind != "TIFF" else {}
        options |= {"lossless": True} if kind == "WEBP" else {}
        Image.fromarray(np.ascontiguousarray(store(upright))).save(buffer, kind, **options)
        image, note = load_rgb(buffer.getvalue())
        assert image is not None, (orientation, note)
        assert np.array_equal(image, upright), orientation
        with Image.open(io.BytesIO(buffer.getvalue())) as opened:
            assert np.array_equal(as_rgb(opened), upright), orientation


@given(st.integers(1, 5), st.integers(1, 5), st.integers(0, 2**32 - 1))
def test_a_16_bit_grey_image_in_any_layout_is_read_as_its_8_bit_rounding(height: int, width: int, seed: int) -> None:
    """A 16-bit grey PIL image, whatever its byte layout (I;16, I;16B, I;16L, I;16N, or a 32-bit "I" image holding
    16-bit values, as older Pillow opens 16-bit PNGs), reads as round(value / 257) in all three channels. Before
    (helper-86): an I;16N image was left to Pillow's convert, which clips at 255 (white). An "I" image made in memory
    whose values all stay within 0..255 keeps their 8-bit scale (helper-94's rule; `make fuzz` drew such a 1 x 1
    image, 30, once the property ran long enough: helper-202)."""
    grey = np.random.default_rng(seed).integers(0, 65536, (height, width), dtype=np.uint16)
    expected = np.repeat(np.floor(grey / 257.0 + 0.5).astype(np.uint8)[..., None], 3, axis=2)
    images = {
        "I;16": Image.fromarray(grey),
        "I;16B": Image.frombytes("I;16B", (width, height), grey.astype(">u2").tobytes()),
        "I;16L": Image.frombytes("I;16L", (width, height), grey.astype("<u2").tobytes()),
        "I;16N": Image.frombytes("I;16N", (width, height), grey.tobytes()),
        "I": Image.fromarray(grey.astype(np.int32)),
    }
    eight_bit = np.repeat(grey.astype(np.uint8)[..., None], 3, axis=2)
    for mode, image in images.items():
        assert image.mode == mode
        in_memory_8_bit = mode == "I" and int(grey.max()) <= 255
        assert np.array_equal(as_rgb(image), eight_bit if in_memory_8_bit else expected), mode


@given(st.integers(1, 5), st.integers(1, 5), st.integers(0, 2**32 - 1), st.sampled_from([np.nan, np.inf, -np.inf]))
def test_a_float_image_in_0_to_1_is_read_as_its_8_bit_rounding_whatever_one_pixel_holds(
    height: int, width: int, seed: int, odd: float
) -> None:
    """A float ("F") image in 0..1 (a float TIFF as science tools write it) reads as round(value * 255), and one pixel
    that is NaN or infinite changes no other pixel (NaN and -inf read black, +inf white). Before (helper-86): an inf
    pixel, read as 1.8e308, set the scale and every pixel read black."""
    values = np.random.default_rng(seed).random((height, width)).astype(np.float32)
    expected = np.floor(values.astype(np.float64) * 255.0 + 0.5).astype(np.uint8)
    assert np.array_equal(as_rgb(Image.fromarray(values))[..., 0], expected)
    values[0, 0] = odd
    expected[0, 0] = 255 if odd == np.inf else 0
    read = as_rgb(Image.fromarray(values))
    assert np.array_equal(read, np.repeat(expected[..., None], 3, axis=2))


KEYS = [
    "description", "components", "data", "prepare", "augment", "train", "infer", "evaluate", "bench", "extends",
    "detector", "encoder", "decoder", "warper", "judge", "apps", "name", "params", "root", "train", "test",
    "source", "people", "subset", "path", "output", "image_size", "steps", "lr", "batch_size", "loss", "identity",
    "background", "background_rgb", "background_forehead", "background_margin", "init", "photo_inputs", "grid",
    "enabled", "count", "seed", "device",
]  # fmt: skip
SCALARS = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(2**70), 2**70),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=20),
    st.sampled_from(["paper", "dlib", "rbf-linear", "lfw", "cpu", "plain", "batch", "../x.yaml"]),
)
RECIPES = st.recursive(
    SCALARS,
    lambda inner: st.one_of(
        st.lists(inner, max_size=4), st.dictionaries(st.sampled_from(KEYS) | st.text(max_size=8), inner, max_size=5)
    ),
    max_leaves=30,
)


@given(st.dictionaries(st.sampled_from(KEYS), RECIPES, max_size=6))
def test_any_recipe_dictionary_resolves_or_is_a_facekit_error(raw: dict[str, Any]) -> None:
    try:
        plan = resolve(raw)
    except FacekitError:
        return
    assert plan.recipe is not None


DEMO_RECIPE = str(Path(__file__).resolve().parents[2] / "recipes" / "demo.yaml")
ARGUMENTS = st.lists(
    st.one_of(
        st.sampled_from(
            ["--set", "train.steps=3", "train.lr=.inf", "-o", "--out", "--batch-size", "0", "-1", "x=y", "--stage",
             "nonsense", "prepare", "--checkpoint", "/nonexistent.safetensors", DEMO_RECIPE, "--help",
             "/nonexistent/photo.jpg", ".", "..", "--overwrite", "--inside-inputs", "--max-photos", "--judge", "nobody"]
        ),
        st.text(alphabet=st.characters(blacklist_categories=["Cs"], blacklist_characters="\x00"), max_size=12),
    ),
    max_size=6,
)  # fmt: skip
COMMANDS = st.sampled_from(
    [["check"], ["normalize"], ["list"], ["models", "verify"], ["models", "import"], ["export"], ["plugins"]]
)


@settings(suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(command=COMMANDS, arguments=ARGUMENTS)
def test_any_command_line_ends_in_a_documented_exit_code(
    command: list[str], arguments: list[str], capsys: pytest.CaptureFixture[str], tmp_path: Path, monkeypatch: Any
) -> None:
    from facekit.cli import main

    # A scratch working folder: whatever the command line asks for (`normalize . --inside-inputs`) stays in it.
    scratch = tmp_path / "cwd" / "work"
    scratch.mkdir(parents=True, exist_ok=True)
    monkeypatch.chdir(scratch)
    monkeypatch.setenv("FACEKIT_HOME", str(tmp_path / "home"))
    monkeypatch.delenv("FACEKIT_DEBUG", raising=False)
    code = main([*command, *arguments])
    captured = capsys.readouterr()
    assert code in (0, 1, 2, 3), (command, arguments, code)
    assert "Traceback" not in captured.err + captured.out
