"""facekit-serve: the engine behind the page on the real shipped model, and the page itself driven in headless
Chromium (Playwright, Debian's Chromium; no browser download) against a real ``facekit serve`` on a free loopback
port, with a real LFW photo and the real Surrey model."""

from __future__ import annotations

import dataclasses
import errno
import io
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import pytest

pytest.importorskip("gradio")
pytest.importorskip("facekit_serve")

from facekit_serve.engine import (
    BUNDLE_TAG_DIGITS,
    DOWNLOAD_FALLBACK,
    DOWNLOAD_STEM_BYTES,
    MB,
    NAMED_VIEWS,
    VISITOR_AVATAR_NOTE,
    Engine,
    UploadError,
    download_stem,
    example_photos,
    normalized_display_side,
    read_upload,
)
from facekit_serve.testing import ServerDidNotStart, running_server
from facekit_serve.web import ALT_TEXT, AVATAR_CANVAS_LABEL
from PIL import Image, ImageCms

from facekit.images import load_rgb
from facekit.normalize import box_overlap
from tests.helpers import arrays_held_at_encode, run_cli

FACE = Path(__file__).resolve().parents[2] / "facekit" / "testing_data" / "face.jpg"  # CC BY, shipped
LFW_PHOTO = "lfw/images/Adrien_Brody/Adrien_Brody_0001.jpg"
LFW_AGAIN = "lfw/images/Ann_Veneman/Ann_Veneman_0001.jpg"


def image_size(path: Path) -> tuple[int, int]:
    with Image.open(path) as image:
        image.load()
        return image.size


# ------------------------------------------------------------------------------------------------ the engine


def test_read_upload_says_what_is_wrong_in_plain_words(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    source = FACE
    data, photo = read_upload(source, 20 * MB)
    assert data == source.read_bytes() and photo.shape == (200, 200, 3) and photo.dtype == np.uint8
    assert np.array_equal(photo, load_rgb(source)[0])  # decoded from the bytes read: as from the file

    empty = tmp_path / "empty.jpg"
    empty.write_bytes(b"")
    truncated = tmp_path / "cut.jpg"
    truncated.write_bytes(source.read_bytes()[:3000])
    text = tmp_path / "notes.jpg"
    text.write_text("not a photo at all\n")
    heic = tmp_path / "IMG_0001.HEIC"  # a phone's photo: before, "may be damaged ... or not an image at all"
    heic.write_bytes(b"\x00\x00\x00\x18ftypheic\x00\x00\x00\x00mif1heic" + bytes(200))
    assert load_rgb(heic)[1].startswith("unreadable (a HEIC/HEIF photo, which facekit does not decode")
    cases = {
        empty: "The file is empty",
        heic: "This is a HEIC photo",
        truncated: "not a photo facekit can read",
        text: "not a photo facekit can read",
        tmp_path / "missing.jpg": "did not arrive",
    }
    for path, words in cases.items():
        with pytest.raises(UploadError, match=words) as caught:
            read_upload(path, 20 * MB)
        assert str(tmp_path) not in str(caught.value)  # no server paths in what the visitor reads
    with pytest.raises(UploadError, match=r"over this server's limit of 0.00977 MB"):
        read_upload(source, 10 * 1024)
    monkeypatch.setenv("FACEKIT_MAX_MEGAPIXELS", "0.01")  # refused from its header, before decoding
    # The size only: how the operator raises the limit (an environment variable) is not the visitor's to do.
    with pytest.raises(UploadError, match=r"The photo is too large \(200 x 200 = 0.04 MP > 0.01 MP\)\.") as refused:
        read_upload(source, 20 * MB)
    assert "FACEKIT_MAX_MEGAPIXELS" not in str(refused.value)


def test_geometry_helpers() -> None:
    assert normalized_display_side(112) == 448 and normalized_display_side(224) == 448
    assert normalized_display_side(160) == 320 and normalized_display_side(600) == 600
    assert box_overlap((0, 0, 10, 10), (0, 0, 10, 10)) == 1.0
    assert box_overlap((0, 0, 10, 10), (20, 20, 30, 30)) == 0.0
    assert box_overlap((0, 0, 10, 10), (5, 0, 15, 10)) == pytest.approx(50 / 150)


@pytest.fixture
def engine(shipped_normalizer: Any, tmp_path: Path) -> Iterator[Engine]:
    made = Engine(
        shipped_normalizer,
        "dlib",
        tmp_path / "results",
        20 * MB,
        others=[("dlib-again", shipped_normalizer)],
        avatar_note="no avatar in this test",
        cache_entries=2,
    )
    yield made
    made.close()


def test_engine_makes_every_result_and_caches_by_content(engine: Engine, tmp_path: Path) -> None:
    plain, warm, two = example_photos(tmp_path / "examples")
    analysis = engine.analyze(plain, "face.jpg")
    assert len(analysis.faces) == analysis.faces_found == 1 and analysis.size == (200, 200)
    result = engine.result(analysis.sha256, 0)
    assert image_size(result.normalized) == (448, 448)
    assert image_size(result.normalized_png) == (112, 112)
    assert image_size(result.adjusted) == image_size(result.adjusted_full) == (200, 200)
    assert result.adjusted_full.suffix == ".jpg"
    assert image_size(result.before_after) == (400, 200)
    assert image_size(result.detections) == (200, 200)
    assert -90 < result.attributes["ita_degrees"] < 90 and result.attributes["ita_category"]
    assert 0.5 < result.attributes["face_width_height"] < 1.6
    assert result.attributes_image is not None and result.attributes_image.is_file()
    assert result.avatar_glb is None and result.avatar_note == VISITOR_AVATAR_NOTE  # the reason: the console's
    assert result.comparison is not None and image_size(result.comparison) == (3 * 192, 28 + 192)
    assert result.comparison_note == ""  # the same model found the same face
    # The page corrects as `facekit adjust` does (gains fused with white-patch) and says by how much.
    expected = engine.adjuster.estimate(np.asarray(Image.open(plain).convert("RGB")))
    assert expected is not None and result.correction["gains_rgb"] == expected.to_json()["gains_rgb"]
    from facekit_serve.web import adjust_markdown

    text = adjust_markdown(result)
    assert "white-patch" in text
    assert f"x{result.correction['gains_rgb'][0]:.3f}" in text
    # A black-and-white photo is corrected in exposure only, and the note says that, not a white balance (helper-67).
    grey = dataclasses.replace(
        result, correction={**result.correction, "face": {"monochrome": True, "fuse": "white-patch"}}
    )
    text = adjust_markdown(grey)
    assert "black-and-white" in text and "only its exposure" in text and "white-patch" not in text
    tiff = dataclasses.replace(result, adjusted_full=result.adjusted_full.with_suffix(".png"))
    assert "below as PNG" in adjust_markdown(tiff) and "own format" not in adjust_markdown(tiff)  # helper-67
    # The landmarks are drawn: the enlarged face differs from a plain enlargement exactly where the dots are.
    marked = np.asarray(Image.open(result.normalized).convert("RGB"), np.int16)
    plain_big = np.asarray(
        Image.open(result.normalized_png).convert("RGB").resize((448, 448), Image.Resampling.BICUBIC)
    )
    green = (marked[..., 1] > 200) & (marked[..., 0] < 90) & (np.abs(marked - plain_big).max(axis=-1) > 60)
    assert green.sum() > 68 * 4

    # The same bytes under another name: the cached analysis and result, not a second run.
    copy = tmp_path / "renamed.jpg"
    shutil.copyfile(plain, copy)
    assert engine.analyze(copy) is analysis and engine.result(analysis.sha256, 0) is result

    # The warm-cast photo is adjusted towards the plain one: its face's red/blue ratio moves back.
    cast = engine.analyze(warm)
    corrected = np.asarray(Image.open(engine.result(cast.sha256, 0).adjusted_full).convert("RGB"), np.float64)
    before = np.asarray(Image.open(warm).convert("RGB"), np.float64)
    centre = (slice(70, 130), slice(70, 130))
    ratio = lambda image: image[centre][..., 0].mean() / image[centre][..., 2].mean()  # noqa: E731
    assert abs(ratio(corrected) - ratio(np.asarray(Image.open(plain).convert("RGB"), np.float64))) < abs(
        ratio(before) - ratio(np.asarray(Image.open(plain).convert("RGB"), np.float64))
    )

    # Two faces: largest first, each with its own results; a third upload evicts the oldest (cache of 2).
    pair = engine.analyze(two)
    assert (
        len(pair.faces) == 2
        and pair.faces[0].box[2] - pair.faces[0].box[0] > pair.faces[1].box[2] - pair.faces[1].box[0]
    )
    second = engine.result(pair.sha256, 1)
    assert second.index == 1 and not np.array_equal(
        np.asarray(Image.open(second.detections)), np.asarray(Image.open(engine.result(pair.sha256, 0).detections))
    )
    assert second.comparison is not None and second.comparison_note == ""  # the other model's face at that box
    assert engine.cached(analysis.sha256) is None and not analysis.folder.exists()
    with pytest.raises(UploadError, match="no longer in the server's memory"):
        engine.result(analysis.sha256, 0)
    with pytest.raises(UploadError, match="There is no face 3"):
        engine.result(pair.sha256, 2)


def glb_json(data: bytes) -> dict[str, Any]:
    """A GLB's JSON chunk, read as the file format says (12-byte header, then the chunk's length and type)."""
    length, kind = int.from_bytes(data[12:16], "little"), data[16:20]
    assert data[:4] == b"glTF" and kind == b"JSON" and int.from_bytes(data[8:12], "little") == len(data)
    assert length % 4 == 0 and data[20 + length + 4 : 20 + length + 8] == b"BIN\x00"
    return dict(json.loads(data[20 : 20 + length]))


def test_a_downloads_name_is_the_uploads_name_made_safe() -> None:
    """Before: every download had one name whatever the photo (normalized-face.png, adjusted-full.jpg, avatar.glb)."""
    persian = "\u0645\u06cc\u200c\u062e\u0648\u0627\u0647\u0645"  # "I want", a ZWNJ between its parts
    cases = {
        "IMG_1234.jpg": "IMG_1234",
        "_DSC0001.JPG": "_DSC0001",  # a camera's name keeps its underscore
        "holiday.2024.06.png": "holiday.2024.06",
        "../../etc/passwd": "passwd",  # no folder, no way out of one
        "C:\\Users\\ann\\Pictures\\me.jpg": "me",
        "..": DOWNLOAD_FALLBACK,
        ".jpg": "jpg",  # not a hidden file
        "...hidden.png": "hidden",
        "-rf.jpg": "rf",  # not an option to a shell command
        "  spaced   out \t name .jpg": "spaced out name",
        "line\nbreak\x00null\x1bescape.jpg": "line breaknullescape",
        "photo\u202egpj.exe.jpg": "photogpj.exe",  # no right-to-left override (shown as "photoexe.jpg")
        'what?*<>|:"`$!{}.jpg': "what____________",
        "Фото Анны.jpg": "Фото Анны",
        "cafe\u0301.jpg": "caf\u00e9",  # a Mac's decomposed "é" composed
        f"{persian}.jpg": persian,  # its zero-width non-joiner kept
        "": DOWNLOAD_FALLBACK,
        "\x00\x01.png": DOWNLOAD_FALLBACK,
        "   .png": DOWNLOAD_FALLBACK,
    }
    for name, stem in cases.items():
        assert download_stem(name) == stem, name
    assert download_stem(None) == DOWNLOAD_FALLBACK
    long = download_stem("面" * 200 + ".jpg")  # 3 bytes each: cut at a character, not inside one
    assert long == "面" * (DOWNLOAD_STEM_BYTES // 3) and len(long.encode()) <= DOWNLOAD_STEM_BYTES
    # What Gradio serves under the name is the name: nothing left for it to strip.
    from gradio_client.utils import strip_invalid_filename_characters

    for name in [*cases, "面" * 200 + ".jpg"]:
        download = f"{download_stem(name)}-face8-avatar-renders.png"
        assert strip_invalid_filename_characters(download) == download, name


def test_a_download_named_after_a_windows_device_is_not_one() -> None:
    """Windows reads a file name up to its first dot as a device's when that is CON, PRN, AUX, NUL, COM1-9 or
    LPT1-9: "CON.backup.jpg" gave CON.backup-normalized.png, which Gradio serves as _CON.backup-normalized.png (not
    the name given) and a Windows server could not write. The name keeps its words behind an underscore; a plain
    "CON.jpg" gives CON-normalized.png, no device's name, as it is."""
    from gradio_client.utils import strip_invalid_filename_characters

    for name in ("CON.backup.jpg", "nul.2024.png", "Com1 .x.jpg", "LPT\u00b9.a.jpg", "aux.tar.gz"):
        stem = download_stem(name)
        assert stem == f"_{name.rsplit('.', 1)[0]}", name
        download = f"{stem}-face2-normalized.png"
        assert strip_invalid_filename_characters(download) == download, name
    assert download_stem("CON.jpg") == "CON" and download_stem("CONTRACT.v2.jpg") == "CONTRACT.v2"


def test_downloads_are_named_after_each_visitors_photo(engine: Engine, tmp_path: Path) -> None:
    """Before: whatever photo was sent, its downloads were normalized-face.png, adjusted-full.jpg, avatar.glb, so a
    visitor who processed several photos had a Downloads folder of copies of one name. Now each is named after the
    visitor's own file, and a visitor who sends the same bytes as another (one cached result) never sees the
    other's name."""
    plain, _, two = example_photos(tmp_path / "examples")
    analysis = engine.analyze(plain, "IMG_1234.jpg")
    made = engine.result(analysis.sha256, 0)
    mine = engine.result(analysis.sha256, 0, name="IMG_1234.jpg")
    assert mine.normalized_png.name == "IMG_1234-normalized.png"
    assert mine.adjusted_full.name == "IMG_1234-adjusted.jpg"
    assert mine.normalized.name == "IMG_1234-landmarks.png" and mine.adjusted.name == "IMG_1234-adjusted-preview.jpg"
    assert mine.detections.name == "IMG_1234-detections.jpg" and mine.before_after.name == "IMG_1234-before-after.jpg"
    assert mine.comparison is not None and mine.comparison.name == "IMG_1234-models-compared.png"
    assert mine.attributes_image is not None and mine.attributes_image.name == "IMG_1234-skin-region.png"
    for field in ("normalized_png", "adjusted_full", "normalized", "detections", "comparison"):
        assert getattr(mine, field).read_bytes() == getattr(made, field).read_bytes(), field
        assert analysis.folder in getattr(mine, field).parents  # deleted with the upload
    assert engine.result(analysis.sha256, 0, name="IMG_1234.jpg") is mine  # made once per name

    # Another visitor, the same bytes under their own name: their names, in a folder of their own; nothing of the
    # first visitor's name, and the first visitor's files untouched.
    again = engine.analyze(plain, "bob's photo.jpg")
    assert again is analysis
    bobs = engine.result(analysis.sha256, 0, name="bob's photo.jpg")
    assert bobs.normalized_png.name == "bob's photo-normalized.png"
    assert bobs.normalized_png.parent != mine.normalized_png.parent and mine.normalized_png.is_file()
    assert not any("IMG_1234" in path.name for path in vars(bobs).values() if isinstance(path, Path))
    # Two photos of one name: their own folders, neither overwrites the other.
    other = engine.analyze(two, "IMG_1234.jpg")
    faces = [engine.result(other.sha256, index, name="IMG_1234.jpg") for index in (0, 1)]
    assert [face.normalized_png.name for face in faces] == [  # a photo with several faces: which face
        "IMG_1234-face1-normalized.png",
        "IMG_1234-face2-normalized.png",
    ]
    assert faces[0].normalized_png.read_bytes() != mine.normalized_png.read_bytes()
    assert mine.normalized_png.read_bytes() == made.normalized_png.read_bytes()
    # The same bytes under ever new names: a few names, then the fallback (each name's files are served anew).
    names = [engine.result(other.sha256, 0, name=f"copy{n}.jpg").normalized_png.name for n in range(NAMED_VIEWS)]
    assert names[: NAMED_VIEWS - 1] == [f"copy{n}-face1-normalized.png" for n in range(NAMED_VIEWS - 1)]
    assert names[-1] == f"{DOWNLOAD_FALLBACK}-face1-normalized.png"
    # They go with the upload.
    assert engine.forget(other.sha256) and not any(face.normalized_png.exists() for face in faces)
    with pytest.raises(UploadError, match="no longer in the server's memory"):
        engine.result(other.sha256, 0, name="IMG_1234.jpg")


def test_results_live_until_the_last_session_holding_them_ends(engine: Engine, tmp_path: Path) -> None:
    plain = example_photos(tmp_path / "examples")[0]
    analysis = engine.analyze(plain)
    engine.result(analysis.sha256, 0)
    engine.hold(analysis.sha256, "alice")
    engine.hold(analysis.sha256, "bob")
    assert engine.release("alice") == [] and analysis.folder.is_dir()
    assert engine.release("bob") == [analysis.sha256]
    assert not analysis.folder.exists() and engine.cached(analysis.sha256) is None


def test_an_evicted_result_tells_who_still_shows_it_before_its_files_go(engine: Engine, tmp_path: Path) -> None:
    """Before: the cache (2 entries here) dropped the oldest upload's files without a word, so the web layer never
    deleted its served copies (the visitor's full-size photo among them) until Gradio's hourly sweep."""
    told: list[tuple[list[Path], set[str]]] = []
    engine.on_evict = lambda files, holders, sha256: told.append((files, set(holders)))
    first, *others = example_photos(tmp_path / "examples")
    analysis = engine.analyze(first)
    engine.hold(analysis.sha256, "alice")
    engine.result(analysis.sha256, 0)
    for photo in others:
        engine.analyze(photo)
    assert len(told) == 1 and told[0][1] == {"alice"}
    files = told[0][0]
    assert files and all(analysis.folder in path.parents for path in files) and not analysis.folder.exists()
    # What is cached now (the served copies of these stay, whoever's page closes: the same bytes again give them)
    assert engine.cached_files() and not any(analysis.folder in path.parents for path in engine.cached_files())


def test_a_page_closing_leaves_what_another_page_shares(
    engine: Engine, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Before: two pages sending one picture in other bytes (a re-saved JPEG) got results of one content, which
    Gradio serves from one copy; the first page to close deleted it under the other (403s on its images and
    downloads). And two pages sending the same file share Gradio's upload: the first to close deleted it while the
    other's request still waited for it."""
    from facekit_serve.web import SessionUploads, delete_unused_copies, served_copies

    monkeypatch.setenv("GRADIO_TEMP_DIR", str(tmp_path / "gradio"))
    plain = example_photos(tmp_path / "examples")[0]
    again = tmp_path / "resaved.png"
    Image.open(plain).save(again, pnginfo=None, optimize=True)  # the same pixels in other bytes
    first, second = engine.analyze(plain), engine.analyze(again)
    assert first.sha256 != second.sha256
    engine.result(first.sha256, 0)
    engine.result(second.sha256, 0)
    engine.hold(first.sha256, "alice")
    engine.hold(second.sha256, "bob")
    copies = served_copies([path for path in first.folder.rglob("*.png") if path.is_file()])
    for copy in copies:  # Gradio's copies, made as the pages were served
        copy.parent.mkdir(parents=True, exist_ok=True)
        copy.write_bytes(b"served")
    bobs = set(served_copies([path for path in second.folder.rglob("*") if path.is_file()]))
    shared = [copy for copy in copies if copy in bobs]
    assert len(shared) >= 3, (copies, bobs)  # the normalized face, its renders ...: the same content, one copy
    engine.release("alice", before_delete=lambda files: delete_unused_copies(served_copies(files), engine))
    assert all(copy.exists() for copy in shared)  # bob's page still shows them
    assert not any(copy.exists() for copy in copies if copy not in bobs)  # alice's own are gone
    assert not first.folder.exists() and second.folder.is_dir()

    class Demo:
        def __init__(self) -> None:
            self.upload_file_set = {str(tmp_path / "upload" / "photo.jpg")}

    (tmp_path / "upload").mkdir()
    (tmp_path / "upload" / "photo.jpg").write_bytes(b"photo")
    uploads = SessionUploads(Demo())
    uploads.remember("alice", str(tmp_path / "upload" / "photo.jpg"))
    uploads.remember("bob", str(tmp_path / "upload" / "photo.jpg"))
    assert uploads.forget("alice") == 0 and (tmp_path / "upload" / "photo.jpg").is_file()
    assert uploads.forget("bob") == 1 and not (tmp_path / "upload").exists()


def test_a_page_closing_leaves_the_same_photo_sent_since_by_another_caller(tmp_path: Path) -> None:
    """Before: a page (or script) that sent a photo and closed deleted Gradio's upload of it even when another caller
    had just sent the same bytes (Gradio writes them to the same path) and its request had not yet claimed the file:
    that request answered "The upload did not arrive" (seen as a flaky API test)."""
    from facekit_serve.web import SessionUploads

    upload = tmp_path / "upload" / "photo.jpg"
    upload.parent.mkdir()
    upload.write_bytes(b"photo")

    class Demo:
        def __init__(self) -> None:
            self.upload_file_set = {str(upload)}

    demo = Demo()
    uploads = SessionUploads(demo)
    uploads.remember("alice", str(upload))
    incoming = tmp_path / "incoming.jpg"  # the same bytes sent again: Gradio moves its new file over the old one
    incoming.write_bytes(b"photo")
    incoming.replace(upload)
    assert uploads.forget("alice") == 0 and upload.is_file() and str(upload) in demo.upload_file_set
    uploads.remember("bob", str(upload))  # the other request claims it, and it goes when that page closes
    assert uploads.forget("bob") == 1 and not upload.parent.exists()


def test_a_photo_sent_again_after_another_is_not_deleted_as_an_earlier_one(tmp_path: Path) -> None:
    """Before: a page that sent A, then B, then A again (Gradio writes the same bytes to the same path, a new file)
    kept A in its first place among the page's uploads, so B's results showing deleted the new A while its
    request still waited in the queue: it answered "The upload did not arrive"."""
    from facekit_serve.web import SessionUploads

    first, second = tmp_path / "a" / "a.jpg", tmp_path / "b" / "b.jpg"
    for upload in (first, second):
        upload.parent.mkdir()
        upload.write_bytes(upload.name.encode())

    class Demo:
        def __init__(self) -> None:
            self.upload_file_set = {str(first), str(second)}

    uploads = SessionUploads(Demo())
    uploads.remember("alice", str(first))
    uploads.remember("alice", str(second))
    incoming = tmp_path / "incoming.jpg"  # A sent again: Gradio moves its new file over the old one
    incoming.write_bytes(b"a.jpg")
    incoming.replace(first)
    uploads.remember("alice", str(first))  # it arrives while B is read
    uploads.remember("alice", str(second))  # B's request claims its file (it keeps its place)
    assert uploads.forget("alice", keep=str(second)) == 0 and first.is_file()  # B shown: A waits for its turn
    assert uploads.forget("alice", keep=str(first)) == 1 and not second.exists() and first.is_file()


def test_a_page_closed_while_its_results_are_made_leaves_nothing_on_disk(
    engine: Engine, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    plain = example_photos(tmp_path / "examples")[0]
    estimate = engine.adjuster.estimate_faces

    def closed_midway(*args: Any, **kwargs: Any) -> Any:  # the first files are written by now
        assert engine.release("alice") == [analysis.sha256]
        return estimate(*args, **kwargs)

    class ClosedBefore(dict):  # result() looks for a made result, then makes one: the page closes in between
        def get(self, key: Any, default: Any = None) -> Any:
            engine.release("alice")
            return super().get(key, default)

    for closing in ("midway", "before"):
        analysis = engine.analyze(plain)
        engine.hold(analysis.sha256, "alice")
        with monkeypatch.context() as patch:
            if closing == "midway":
                patch.setattr(engine.adjuster, "estimate_faces", closed_midway)
            else:
                analysis.results = ClosedBefore()
            with pytest.raises(UploadError, match="no longer in the server's memory"):
                engine.result(analysis.sha256, 0)
        assert not analysis.folder.exists() and engine.cached(analysis.sha256) is None, closing
        assert not [path for path in engine.workdir.rglob("*") if path.is_file()], closing


def test_a_face_asked_for_twice_at_once_is_made_once(
    engine: Engine, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Before: two requests for one face of one upload at once (two tabs, a double click, two visitors sending the
    same bytes) both made it, each into a folder of its own, and the second's (the full-size photo among its files)
    stayed on disk until the upload went. Now the second waits for the first's result, told the first's progress,
    and gets its error when it fails."""
    plain = example_photos(tmp_path / "examples")[0]
    estimate = engine.adjuster.estimate_faces
    under_way, go_on = threading.Event(), threading.Event()
    makes: list[str] = []

    def held(*args: Any, **kwargs: Any) -> Any:  # a make stops here, its first files written
        makes.append(threading.current_thread().name)
        under_way.set()
        assert go_on.wait(60)
        if failing:
            raise RuntimeError("the fit diverged")
        return estimate(*args, **kwargs)

    def twice(sha256: str, meanwhile: Any = None) -> tuple[Future[Any], Future[Any]]:
        """Face 1 asked for, then asked for again while the first request makes it."""
        told = threading.Event()

        def second_tell(fraction: float, text: str) -> None:
            if text.startswith("adjusting"):  # the step the first is at (before: its own make's)
                told.set()

        under_way.clear()
        go_on.clear()
        makes.clear()
        first = pool.submit(engine.result, sha256, 0)
        assert under_way.wait(60)
        second = pool.submit(engine.result, sha256, 0, second_tell)
        assert told.wait(60)
        if meanwhile is not None:
            meanwhile()
        go_on.set()
        return first, second

    monkeypatch.setattr(engine.adjuster, "estimate_faces", held)
    with ThreadPoolExecutor(2) as pool:
        try:
            failing = False  # the page closes while both wait: as for one request, nothing stays on disk
            analysis = engine.analyze(plain)
            engine.hold(analysis.sha256, "alice")
            for request in twice(analysis.sha256, lambda: engine.release("alice")):
                with pytest.raises(UploadError, match="no longer in the server's memory"):
                    request.result(60)
            assert len(makes) == 1 and not [path for path in engine.workdir.rglob("*") if path.is_file()]

            failing = True  # the first fails: so does the second, without trying again
            analysis = engine.analyze(plain)
            for request in twice(analysis.sha256):
                with pytest.raises(RuntimeError, match="the fit diverged"):
                    request.result(60)
            assert len(makes) == 1, makes

            failing = False  # a request after the failure makes it again, once for both
            folders = set(analysis.folder.glob("face1-*"))
            first, second = twice(analysis.sha256)
            made = first.result(60)
            assert second.result(60) is made and len(makes) == 1, makes
            assert set(analysis.folder.glob("face1-*")) - folders == {made.normalized_png.parent}
        finally:
            go_on.set()


@pytest.mark.parametrize("closed", [False, True])
def test_a_failed_make_lets_go_of_the_photo_it_read(
    engine: Engine, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, closed: bool
) -> None:
    """Before: a failed make's error, which its waiters raise too, was held by a reference cycle (the error, its
    traceback, the frames that held the make in progress, the make holding the error) until the garbage collector
    ran, and with it the full-size photo arrays the make had read (hundreds of MB for a large photo); so did the
    "no longer in the server's memory" error raised from it when the page closed meanwhile (``closed``). Now they
    go when the last request for it returns; the collector is off here, as it is between its runs."""
    import gc
    import weakref

    analysis = engine.analyze(example_photos(tmp_path / "examples")[0])
    engine.hold(analysis.sha256, "alice")
    under_way, waiting, go_on = threading.Event(), threading.Event(), threading.Event()
    read: list[weakref.ref[np.ndarray]] = []
    said: list[str] = []

    def fails(_: Any, index: int, told: Any) -> Any:
        full_size = np.ones((3000, 4000, 3), np.uint8)  # as a make reads a 12 MP photo
        read.append(weakref.ref(full_size))
        told(0.5, "adjusting the photo")
        under_way.set()
        assert go_on.wait(60)
        raise RuntimeError("the fit diverged")

    def ask(tell: Any = None) -> None:
        try:
            engine.result(analysis.sha256, 0, tell)
        except (RuntimeError, UploadError) as error:  # (only its words kept: the test holds nothing of the error)
            said.append(str(error))

    monkeypatch.setattr(engine, "_make", fails)
    maker = threading.Thread(target=ask)
    waiter = threading.Thread(target=ask, args=(lambda fraction, text: waiting.set(),))  # told the maker's progress
    gc.disable()
    try:
        maker.start()
        assert under_way.wait(60)
        waiter.start()
        assert waiting.wait(60)
        if closed:
            assert engine.release("alice") == [analysis.sha256]
        go_on.set()
        maker.join(60)
        waiter.join(60)
        gone = "This photo is no longer in the server's memory. Please upload it again."
        assert said == [gone if closed else "the fit diverged"] * 2
        assert [photo() is None for photo in read] == [True]  # (the array itself, shown, is megabytes)
    finally:
        go_on.set()
        gc.enable()
        maker.join(60)
        waiter.join(60)


def test_downloads_are_linked_or_copied_outside_the_cache_lock(
    engine: Engine, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Before: a download's files were linked, or copied where the file system has no hard links (the avatar's OBJ
    zip always), under the lock every request's cache lookup takes: a large photo's full-size copy held up every
    other visitor. Now lookups go on meanwhile, a second request for the same name waits for the first's files (one
    set of them), and an upload released meanwhile leaves nothing on disk (no copy makes its folder again)."""
    plain = example_photos(tmp_path / "examples")[0]
    analysis = engine.analyze(plain)
    engine.hold(analysis.sha256, "alice")
    made = engine.result(analysis.sha256, 0)
    copy = shutil.copyfile
    copying, go_on, waiting = threading.Event(), threading.Event(), threading.Event()

    def no_links(source: Any, target: Any) -> None:
        raise OSError(errno.EPERM, "this file system has no hard links")

    def held(source: Any, target: Any) -> Any:
        copying.set()
        assert go_on.wait(60)
        return copy(source, target)

    monkeypatch.setattr(os, "link", no_links)
    monkeypatch.setattr(shutil, "copyfile", held)
    with ThreadPoolExecutor(3) as pool:
        try:
            mine = pool.submit(engine.result, analysis.sha256, 0, None, "IMG_1234.jpg")
            assert copying.wait(60)
            assert pool.submit(engine.cached, analysis.sha256).result(10) is analysis  # before: waited for the copy

            from facekit_serve.engine import Making

            wait = Making.wait

            def waits(making: Making, tell: Any) -> Any:
                waiting.set()
                return wait(making, tell)

            monkeypatch.setattr(Making, "wait", waits)
            again = pool.submit(engine.result, analysis.sha256, 0, None, "IMG_1234.jpg")
            assert waiting.wait(60)
            go_on.set()
            assert again.result(60) is mine.result(60)
            named = mine.result()
            assert named.adjusted_full.name == "IMG_1234-adjusted.jpg"
            assert named.adjusted_full.read_bytes() == made.adjusted_full.read_bytes()
            assert list(made.normalized_png.parent.glob("as-*")) == [named.normalized_png.parent]

            copying.clear()
            go_on.clear()
            bobs = pool.submit(engine.result, analysis.sha256, 0, None, "bob.jpg")
            assert copying.wait(60)
            assert pool.submit(engine.release, "alice").result(10) == [analysis.sha256]  # its folder deleted now
            assert not analysis.folder.exists()
            go_on.set()
            with pytest.raises(UploadError, match="no longer in the server's memory"):
                bobs.result(60)
            assert not analysis.folder.exists() and not list(engine.workdir.iterdir())
        finally:
            go_on.set()


def test_an_upload_evicted_while_its_download_is_copied_leaves_nothing_on_disk(
    engine: Engine, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The cache evicts an upload (two newer ones sent) while a download's files are copied outside the cache lock:
    the web layer is told its files first, the copy stops, and none of the upload's files stays on disk (no copy
    makes its deleted folder again); the newer uploads keep theirs."""
    plain, *others = example_photos(tmp_path / "examples")
    analysis = engine.analyze(plain)
    engine.hold(analysis.sha256, "alice")
    engine.result(analysis.sha256, 0)
    copying, go_on = threading.Event(), threading.Event()
    told: list[tuple[str, bool]] = []

    def no_links(source: Any, target: Any) -> None:
        raise OSError(errno.EPERM, "this file system has no hard links")

    def held(source: Any, target: Any) -> None:  # the source read, its copy not yet written
        data = Path(source).read_bytes()
        copying.set()
        assert go_on.wait(60)
        Path(target).write_bytes(data)

    def evicted(files: list[Path], holders: set[str], sha256: str) -> None:
        told.append((sha256, all(path.is_file() for path in files)))

    engine.on_evict = evicted
    monkeypatch.setattr(os, "link", no_links)
    monkeypatch.setattr(shutil, "copyfile", held)
    with ThreadPoolExecutor(1) as pool:
        try:
            named = pool.submit(engine.result, analysis.sha256, 0, None, "IMG_1234.jpg")
            assert copying.wait(60)
            newer = [engine.analyze(photo) for photo in others]  # a cache of 2: the first upload is evicted
            assert engine.cached(analysis.sha256) is None and told == [(analysis.sha256, True)]
            go_on.set()
            with pytest.raises(UploadError, match="no longer in the server's memory"):
                named.result(60)
        finally:
            go_on.set()
    assert not analysis.folder.exists() and not analysis.making
    assert sorted(engine.workdir.iterdir()) == sorted(entry.folder for entry in newer)


def test_a_page_closed_while_its_photo_is_read_leaves_nothing_on_disk(
    engine: Engine, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Before: a page closed while its photo was being read (seconds for a large photo) had not yet held it when its
    session's end was handled, so the request, finishing, held it for a session that was gone: the upload's copy and
    every result stayed on disk until the cache evicted them or the server stopped."""
    from types import SimpleNamespace

    from facekit_serve.web import build_app

    monkeypatch.setenv("GRADIO_TEMP_DIR", str(tmp_path / "gradio"))
    demo = build_app(engine, [], 20.0)
    handlers = {fn.fn.__name__: fn.fn for fn in demo.fns.values() if fn.fn is not None}
    page = SimpleNamespace(session_hash="alice", headers={"x-gradio-user": "app"})
    read = engine.analyze

    def closed_meanwhile(*args: Any, **kwargs: Any) -> Any:
        analysis = read(*args, **kwargs)
        handlers["session_ended"](page)  # the page closes before the request holds what it read
        return analysis

    monkeypatch.setattr(engine, "analyze", closed_meanwhile)
    photo = example_photos(tmp_path / "examples")[0]
    demo.upload_file_set.add(str(photo))  # as Gradio's copy of an upload is
    answer = handlers["analyze"](str(photo), page, lambda *args, **kwargs: None)
    # Nothing for a page that is gone, and a page still open whose session ended is told to reload (helper-88: it was
    # shown 'Waiting for a photo.' for every photo it sent); its upload, remembered after the end, is deleted too.
    assert answer[0] is None and "session has ended" in answer[2] and "reload the page" in answer[2]
    assert engine.cached_files() == [] and not [path for path in engine.workdir.rglob("*") if path.is_file()]
    assert not photo.exists()


def test_a_face_the_server_fails_on_leaves_none_of_its_files(
    engine: Engine, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Before: a face whose results failed (a fit that diverged, a full disk) left its folder, the detections and the
    normalized face drawn and plain in it, on disk until the upload went: one more folder each time it was asked for
    again. Now a failed make deletes what it wrote; the upload's own files stay, and the face can be made later."""
    plain = example_photos(tmp_path / "examples")[0]
    analysis = engine.analyze(plain)
    kept = sorted(engine.workdir.rglob("*"))

    def fails(*args: Any, **kwargs: Any) -> Any:  # the first files are written by now
        raise RuntimeError("the fit diverged")

    with monkeypatch.context() as patch:
        patch.setattr(engine.adjuster, "estimate_faces", fails)
        for _ in range(2):
            with pytest.raises(RuntimeError, match="the fit diverged"):
                engine.result(analysis.sha256, 0)
    assert sorted(engine.workdir.rglob("*")) == kept and not analysis.making
    made = engine.result(analysis.sha256, 0)
    assert [path.name for path in analysis.folder.glob("face1-*")] == [made.normalized_png.parent.name]


def test_a_face_the_server_fails_on_is_a_plain_message(
    engine: Engine, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """Before: when the server failed on another face of a photo (choose_face: an avatar fit, a full disk), the page
    showed Gradio's bare "Error" on every output and the status still said "showing face 1" beside face 2 chosen; a
    photo's first face already got a plain message. Now both do, and the traceback goes to the server's log."""
    from types import SimpleNamespace

    import gradio as gr
    from facekit_serve.web import SERVER_FAILED, build_app

    monkeypatch.setenv("GRADIO_TEMP_DIR", str(tmp_path / "gradio"))
    demo = build_app(engine, [], 20.0)
    handlers = {fn.fn.__name__: fn.fn for fn in demo.fns.values() if fn.fn is not None}
    page = SimpleNamespace(session_hash="alice", headers={"x-gradio-user": "app"})
    two = example_photos(tmp_path / "examples")[2]
    sha256 = handlers["analyze"](str(two), page, lambda *args, **kwargs: None)[0]
    assert sha256 is not None

    def fails(*args: Any, **kwargs: Any) -> Any:
        raise RuntimeError("the avatar fit diverged")

    monkeypatch.setattr(engine, "_make", fails)
    with caplog.at_level("ERROR", logger="facekit_serve.web"):
        answer = handlers["choose"](sha256, 1, page, lambda *args, **kwargs: None)
    assert SERVER_FAILED in answer[0] and "RuntimeError" in answer[0] and 'class="error"' in answer[0]
    assert "diverged" not in answer[0] and "Traceback" not in answer[0]  # the server's business
    assert all(value is None for value in answer[1:4])  # face 1's results are not left beside face 2 chosen
    assert "face 2 of two-faces.jpg failed" in caplog.text and "the avatar fit diverged" in caplog.text
    with pytest.raises(gr.Error, match="Something went wrong on the server"):  # a program calling the API
        handlers["choose"](sha256, 1, SimpleNamespace(session_hash="alice", headers={}), lambda *a, **k: None)


def test_a_face_chosen_on_a_page_open_across_a_restart_is_a_plain_message(
    engine: Engine, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Before (helper-234's walk in Chromium): a page still open when the server was restarted sent its photo's
    face 2 to a server whose session for it offered no face; Gradio's refusal came as a toast meant for programs
    ("There is no face to choose: send a photo first (/analyze).") and "Error" on every output, the status still
    saying "showing face 1". Now the page's status says the photo is gone and to upload it again; a program calling
    /choose_face before /analyze is still told to send a photo first, and a page whose session ended to reload."""
    from types import SimpleNamespace

    import gradio as gr
    from facekit_serve.web import PHOTO_GONE, SESSION_ENDED, build_app, status_error

    monkeypatch.setenv("GRADIO_TEMP_DIR", str(tmp_path / "gradio"))
    demo = build_app(engine, [], 20.0)
    handlers = {fn.fn.__name__: fn.fn for fn in demo.fns.values() if fn.fn is not None}
    chooser = next(block for block in demo.blocks.values() if getattr(block, "elem_id", None) == "faces")
    index = chooser.preprocess("face 2")  # what the page chose, on a server that holds no photo of its session
    page = SimpleNamespace(session_hash="alice", headers={"x-gradio-user": "app"})
    answer = handlers["choose"](None, index, page, lambda *args, **kwargs: None)
    assert answer[0] == status_error(PHOTO_GONE)
    assert all(value is None for value in answer[1:4])  # the earlier photo's results go
    with pytest.raises(gr.Error, match=r"no face to choose: send a photo first \(/analyze\)"):  # a program
        handlers["choose"](None, index, SimpleNamespace(session_hash="bob", headers={}), lambda *a, **k: None)
    handlers["session_ended"](page)
    assert handlers["choose"](None, index, page, lambda *args, **kwargs: None)[0] == status_error(SESSION_ENDED)


def test_a_page_keeps_only_the_photo_it_shows(engine: Engine, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Before: a page held every photo it had sent until it closed, and the served copies of those the cache evicted
    waited for its end (helper-89: one page or API client sending 150 photos left 1.15 MB and 13 files more per photo
    in Gradio's folder, towards the cap past which every visitor's upload is refused). A page shows one photo's
    results at a time: when the next photo's results replace them, the earlier ones go, their served copies too."""
    from types import SimpleNamespace

    from facekit_serve.web import build_app, served_copies

    monkeypatch.setenv("GRADIO_TEMP_DIR", str(tmp_path / "gradio"))
    demo = build_app(engine, [], 20.0)  # the engine caches 2 uploads
    handlers = {fn.fn.__name__: fn.fn for fn in demo.fns.values() if fn.fn is not None}
    page = SimpleNamespace(session_hash="alice", headers={"x-gradio-user": "app"})
    copies: list[set[Path]] = []
    for photo in example_photos(tmp_path / "examples"):  # three photos, one after the other
        sha256 = handlers["analyze"](str(photo), page, lambda *args, **kwargs: None)[0]
        analysis = engine.cached(sha256)
        assert analysis is not None
        made = set(served_copies([path for path in analysis.folder.rglob("*") if path.is_file()]))
        for copy in made:  # Gradio's copies, made as the page is served
            copy.parent.mkdir(parents=True, exist_ok=True)
            copy.write_bytes(b"served")
        copies.append(made)
    shown = copies[-1]
    assert [path for path in engine.cached_files() if path.parent == analysis.folder]  # the photo shown stays
    assert not any(analysis.folder not in path.parents for path in engine.cached_files())  # nothing else
    assert all(copy.exists() for copy in shown)
    assert not any(copy.exists() for earlier in copies[:-1] for copy in earlier - shown)
    handlers["session_ended"](page)
    assert engine.cached_files() == [] and not any(copy.exists() for copy in shown)


def test_a_page_keeps_only_the_upload_it_shows(engine: Engine, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Before: Gradio's copy of every photo a page sent stayed until the page closed (helper-89: one more upload in
    Gradio's folder per photo sent, towards the cap past which every visitor's upload is refused). Those sent
    before the photo the page shows go; one that arrived since, still waiting for its turn, stays."""
    from types import SimpleNamespace

    from facekit_serve.web import build_app

    cache = tmp_path / "gradio"
    monkeypatch.setenv("GRADIO_TEMP_DIR", str(cache))
    demo = build_app(engine, [], 20.0)
    handlers = {fn.fn.__name__: fn.fn for fn in demo.fns.values() if fn.fn is not None}
    page = SimpleNamespace(session_hash="alice", headers={"x-gradio-user": "app"})
    sent = []
    for index, photo in enumerate(example_photos(tmp_path / "examples")):  # as Gradio keeps uploads
        upload = cache / f"{index:08x}" / photo.name
        upload.parent.mkdir(parents=True)
        shutil.copyfile(photo, upload)
        demo.upload_file_set.add(str(upload))
        sent.append(upload)
    first, second, third = sent
    for upload in sent[:2]:
        handlers["received"](str(upload), page)
        handlers["analyze"](str(upload), page, lambda *args, **kwargs: None)
    assert not first.exists() and not first.parent.exists() and second.is_file()
    handlers["received"](str(third), page)  # arrives while the second is shown; its turn comes later
    handlers["analyze"](str(second), page, lambda *args, **kwargs: None)  # the second again (its request re-run)
    assert second.is_file() and third.is_file()
    handlers["analyze"](str(third), page, lambda *args, **kwargs: None)
    assert not second.exists() and third.is_file()
    # A photo that fails (no face) leaves the page showing no results: those shown before go, with their photo. The
    # failing photo stays while the page's upload box shows it, a link to download it (helper-91: it was deleted,
    # and the link answered 404), until the page's next photo or its end.
    walls = []
    for grey in (180, 90):
        wall = cache / f"wall{grey}" / "wall.png"
        wall.parent.mkdir()
        Image.fromarray(np.full((300, 400, 3), grey, np.uint8)).save(wall)
        demo.upload_file_set.add(str(wall))
        handlers["received"](str(wall), page)
        answer = handlers["analyze"](str(wall), page, lambda *args, **kwargs: None)
        assert answer[0] is None and "No face found" in answer[2]
        assert wall.is_file() and not third.exists() and engine.cached_files() == []
        walls.append(wall)
    assert not walls[0].exists() and not walls[0].parent.exists()
    handlers["session_ended"](page)
    assert not walls[1].exists()


def test_a_photo_without_a_face_is_a_plain_message(engine: Engine, tmp_path: Path) -> None:
    wall = tmp_path / "wall.png"
    Image.fromarray(np.full((300, 400, 3), 180, np.uint8)).save(wall)
    with pytest.raises(UploadError, match="No face found"):
        engine.analyze(wall)
    assert list((tmp_path / "results").iterdir()) == []  # nothing kept for it


def test_a_small_face_in_a_large_photo_is_found_and_the_message_scales(engine: Engine, tmp_path: Path) -> None:
    """A ~90 px face in a 4,000 x 3,000 photo is ~22 px on the 1,024 px copy faces were looked for on, so the page
    said "No face was found ... at least about 80 pixels wide" of a face wider than that; a second, 2,048 px copy
    (as ``facekit adjust`` takes) finds it. Where none is found the width asked for is in the photo's pixels."""
    from facekit.testing import real_face

    face = np.asarray(Image.fromarray(real_face().image).resize((160, 160), Image.Resampling.LANCZOS))
    large = np.full((3000, 4000, 3), 150, np.uint8)
    large[1400:1560, 2000:2160] = face
    Image.fromarray(large).save(tmp_path / "group.jpg", quality=90)
    analysis = engine.analyze(tmp_path / "group.jpg")
    assert len(analysis.faces) == 1 and analysis.size == (4000, 3000) and max(analysis.photo.shape) == 2048
    made = engine.result(analysis.sha256, 0)
    with Image.open(made.adjusted_full) as adjusted:  # the download stays full size
        assert adjusted.size == (4000, 3000)
    Image.fromarray(np.full((3000, 4000, 3), 150, np.uint8)).save(tmp_path / "wall.jpg")
    with pytest.raises(UploadError, match="finds faces about 62 pixels wide or more"):  # 32 px in 2,048
        engine.analyze(tmp_path / "wall.jpg")


def camera_photo(folder: Path, icc: bytes | None = None) -> Path:
    """A camera's JPEG: a real face at 2400 x 1600 (larger than the previews, so that they are copies and the photo
    can go) with an sRGB profile (or ``icc``) and EXIF, which the full-size download carries over."""
    from facekit.testing import real_face

    exif = Image.Exif()
    exif[0x010F], exif[0x0112] = "facekit test", 1
    srgb = ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()
    photo = folder / "camera.jpg"
    Image.fromarray(real_face().image).resize((2400, 1600), Image.Resampling.BICUBIC).save(
        photo, quality=92, icc_profile=icc or srgb, exif=exif.tobytes()
    )
    return photo


def test_the_full_size_download_is_encoded_without_the_photo_read(
    engine: Engine, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A large upload's peak was the full-size adjusted download: the photo read again, its correction and the
    encoder's copy, 10 bytes a pixel (a 48 MP photo: above reading it). The previews are made first and the photo read
    let go before the encoder runs; the download and the previews are byte for byte what the old order gave."""

    from facekit_serve.engine import PREVIEW_SIDE, jpeg_bytes

    from facekit import images
    from facekit.apps import adjust
    from facekit.apps.adjust import apply_correction, before_after

    photo = camera_photo(tmp_path)
    with Image.open(photo) as stored:  # (the photo's own: a profile made again differs in its creation time)
        srgb = stored.info["icc_profile"]
    read, held = arrays_held_at_encode(monkeypatch, "encode_corrected")
    analysis = engine.analyze(photo)
    made = engine.result(analysis.sha256, 0)
    assert read and held == [0]  # the photo read was gone when the encoder ran
    monkeypatch.undo()

    full = load_rgb(analysis.source)[0]
    assert full is not None and max(full.shape) > PREVIEW_SIDE
    correction = engine.adjuster.settle(
        analysis.photo, engine.adjuster.estimate_faces(analysis.photo, analysis.faces[:1])
    )
    after = apply_correction(full, correction)
    assert made.adjusted_full.read_bytes() == adjust.encode_corrected(analysis.source, full, after, correction)[0]
    shown_before, shown_after = images.downscale(full, PREVIEW_SIDE), images.downscale(after, PREVIEW_SIDE)
    assert made.adjusted.read_bytes() == jpeg_bytes(shown_after, 92)
    pair = before_after(shown_before, shown_after, min(480, shown_before.shape[0]))
    assert made.before_after.read_bytes() == jpeg_bytes(pair)
    with Image.open(made.adjusted_full) as written:  # the camera's EXIF and profile carried over
        assert written.getexif()[0x010F] == "facekit test" and written.info["icc_profile"] == srgb


def test_a_pages_request_decodes_the_photo_once(
    engine: Engine, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Before: a page's request decoded the upload twice, to find its faces and again for the full-size download,
    each time with Pillow's image and the array at once (a 48 MP upload's peak, twice; benchmarks/adjust.py
    --memory). Now the array decoded to find the faces is handed to the request's first face, let go before the
    encoder runs, and the files are byte for byte those of the upload read again; a block that makes no face lets go
    of it at its end."""
    from types import SimpleNamespace

    from facekit_serve.web import build_app

    photo = camera_photo(tmp_path)
    monkeypatch.setenv("GRADIO_TEMP_DIR", str(tmp_path / "gradio"))
    demo = build_app(engine, [], 20.0)
    handlers = {fn.fn.__name__: fn.fn for fn in demo.fns.values() if fn.fn is not None}
    page = SimpleNamespace(session_hash="alice", headers={"x-gradio-user": "app"})
    with monkeypatch.context() as patch:
        read, held = arrays_held_at_encode(patch, "encode_corrected")
        sha256 = handlers["analyze"](str(photo), page, lambda *args, **kwargs: None)[0]
    assert sha256 is not None and len(read) == 1 and held == [0]  # decoded once, and gone when the encoder ran
    made = engine.result(sha256, 0)
    written = [path.read_bytes() for path in (made.adjusted_full, made.adjusted, made.before_after)]
    analysis = engine.cached(sha256)
    assert analysis is not None and analysis.handover is None
    handlers["session_ended"](page)

    again = engine.analyze(photo)  # decoded here, then read again from the upload's copy for the download
    remade = engine.result(again.sha256, 0)
    assert [path.read_bytes() for path in (remade.adjusted_full, remade.adjusted, remade.before_after)] == written
    engine.forget(again.sha256)

    with monkeypatch.context() as patch:
        read, _ = arrays_held_at_encode(patch, "encode_corrected")
        with engine.analyzing(photo) as analysis:  # no face made: the photo goes when the block ends
            assert analysis.handover is not None and [ref() is not None for ref in read] == [True]
    assert analysis.handover is None and [ref() is None for ref in read] == [True]


@pytest.mark.parametrize("own_values", [True, False])
def test_a_p3_uploads_download_is_made_without_its_srgb_correction(
    engine: Engine, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, own_values: bool
) -> None:
    """Before: a photo in another colour profile (a phone's Display P3), whose download is its own stored values
    corrected, had them read and corrected while its full-size sRGB correction was held, which only their fallback
    writes: 4 bytes a pixel above an sRGB upload's peak. Now the sRGB correction goes first and is made again only
    for the fallback (``own_values`` False: the stored values cannot be corrected); the files are the same bytes."""
    import weakref

    from facekit import images
    from facekit.apps import adjust
    from facekit.apps.adjust import apply_correction, encode_corrected
    from facekit.testing import DISPLAY_P3_COLORANTS, matrix_icc

    p3 = matrix_icc(DISPLAY_P3_COLORANTS, 2.2, "test Display P3")
    photo = camera_photo(tmp_path, p3)
    made_srgb: list[weakref.ref[np.ndarray]] = []
    held: list[int] = []
    load_rgb, correct = images.load_rgb, adjust.apply_correction

    def tracked_correct(*args: Any, **kwargs: Any) -> Any:
        corrected = correct(*args, **kwargs)
        made_srgb.append(weakref.ref(corrected))
        return corrected

    def tracked_load(*args: Any, **kwargs: Any) -> Any:
        if kwargs.get("colour_manage") is False:  # the download's read of the stored values
            held.append(sum(ref() is not None for ref in made_srgb))
        return load_rgb(*args, **kwargs)

    with monkeypatch.context() as patch:
        patch.setattr(adjust, "apply_correction", tracked_correct)
        patch.setattr(images, "load_rgb", tracked_load)
        if not own_values:
            patch.setattr(adjust, "recolour", lambda *args, **kwargs: None)
        with engine.analyzing(photo) as analysis:
            made = engine.result(analysis.sha256, 0)
        assert held == [0]  # no sRGB correction alive when the stored values were read
        full = load_rgb(analysis.source)[0]
        assert full is not None
        correction = engine.adjuster.settle(
            analysis.photo, engine.adjuster.estimate_faces(analysis.photo, analysis.faces[:1])
        )
        expected = encode_corrected(analysis.source, full, apply_correction(full, correction), correction)[0]
    assert made.adjusted_full.read_bytes() == expected
    with Image.open(made.adjusted_full) as written:  # its own values under its profile, or sRGB's without it
        assert written.info.get("icc_profile") == (p3 if own_values else None)


@pytest.mark.parametrize("suffix", [".png", ".tiff"])
def test_a_transparent_uploads_before_after_shows_both_halves_over_one_backdrop(
    engine: Engine, tmp_path: Path, suffix: str
) -> None:
    """Before: serve's before/after of a transparent PNG showed the grey load_rgb composites it over, and in the after
    half that grey colour-corrected (the download, which keeps its alpha, has no such change). Now, as `facekit
    adjust`'s, both halves show the photo over one checkerboard: the transparent area is the same in both. A TIFF's
    too (before: its download was written without alpha and its before/after showed the grey)."""
    from facekit.apps.adjust import checkerboard
    from facekit.testing import real_face

    face = np.clip(real_face().image * np.array([1.12, 0.98, 0.78]) - 8.0, 0, 255).astype(np.uint8)  # a warm cast
    rgba = np.zeros((200, 320, 4), np.uint8)
    rgba[:, :112] = (0, 255, 0, 0)  # transparent, its colour a green nobody sees
    rgba[:, 120:, :3], rgba[:, 112:, 3] = face, 255
    rgba[:, 112:120, :3] = face[:, :8]
    photo = tmp_path / f"cutout{suffix}"
    Image.fromarray(rgba).save(photo)
    with engine.analyzing(photo) as analysis:
        made = engine.result(analysis.sha256, 0)
    with Image.open(made.adjusted_full) as written:
        assert written.mode == "RGBA"  # the download keeps its alpha
        assert np.array_equal(np.asarray(written)[..., 3], rgba[..., 3])
    pair = np.asarray(Image.open(made.before_after).convert("RGB"), np.int16)
    assert pair.shape == (200, 640, 3)
    before, after = pair[:, :320], pair[:, 320:]
    # JPEG codes each 16 x 16 block alone and the halves meet on a block edge: the same pixels come back the same
    # (away from that edge, where the decoder's chroma upsampling blends in the before half's face)
    clear = slice(16, 96)
    assert np.array_equal(before[:, clear], after[:, clear])
    board = np.repeat(checkerboard(200, 320), 3, axis=2)[:, clear]
    assert np.abs(before[:, clear] - board).mean() < 3  # the checkerboard, not the grey 128 it was read over
    assert np.abs(after[:, 128:] - before[:, 128:]).mean() > 5  # the face itself corrected


def test_an_image_too_small_or_too_thin_for_a_face_is_told_so(engine: Engine, tmp_path: Path) -> None:
    """Before: a 10000 x 2 image was asked for a face "at least about 391 pixels wide", and a 40 x 30 one for one of
    80: sizes neither image could hold. Now the message says what is wrong with the image itself, by the core's rule
    and the detector's own smallest face (dlib's HOG upsampled once: 32 px; the page said 80)."""
    cases = {
        (10000, 2): "10000 x 2 pixels, too thin .*about 156 pixels in a photo this size; it is only 2 pixels high",
        (3, 5000): "3 x 5000 pixels, too thin .*about 78 pixels in a photo this size; it is only 3 pixels wide",
        (40, 30): "only 40 x 30 pixels, too small .*about 32 pixels wide",
        (1, 1): "only 1 x 1 pixels, too small",
    }
    for (width, height), message in cases.items():
        path = tmp_path / f"{width}x{height}.png"
        Image.fromarray(np.full((height, width, 3), 150, np.uint8)).save(path)
        with pytest.raises(UploadError, match=message) as raised:
            engine.analyze(path)
        assert "or more" not in str(raised.value)
    # A panorama that could hold a face keeps the ordinary message, in the photo's pixels.
    Image.fromarray(np.full((400, 6000, 3), 150, np.uint8)).save(tmp_path / "panorama.png")
    with pytest.raises(UploadError, match=r"No face found \(the detector finds faces about 94 pixels wide or more"):
        engine.analyze(tmp_path / "panorama.png")


def test_without_the_surrey_model_the_avatar_tab_says_so_and_the_rest_works(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("FACEKIT_HOME", str(tmp_path / "empty-store"))
    engine = Engine.load(tmp_path / "results", compare=False)
    try:
        assert engine.avatar is None
        assert "needs the Surrey Face Model" in engine.avatar_note and "--sfm PATH" in engine.avatar_note
        analysis = engine.analyze(FACE)
        result = engine.result(analysis.sha256, 0)
        # Visitors read that there is no avatar; the reason, with the server's model store path, is the console's.
        assert result.avatar_glb is None and result.avatar_note == VISITOR_AVATAR_NOTE
        assert str(tmp_path) not in result.avatar_note
        assert image_size(result.normalized) == (448, 448) and result.attributes
    finally:
        engine.close()


def test_a_facekit_avatar_without_what_the_server_imports_is_a_note_not_a_traceback(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Before: a facekit-avatar of another release (its avatar app registered, mesh_files gone) let the server start
    and each avatar ended in an ImportError traceback; nothing said which facekit-avatar facekit-serve works with
    (no range was declared between them: now its ``avatar`` extra)."""
    import types
    from email.message import Message
    from importlib import metadata

    import facekit

    built = []
    load_component = facekit.load_component

    def avatar_app(kind: str, name: str, **params: Any) -> object:  # its app registered: the Surrey model not needed
        if (kind, name) != ("app", "avatar"):
            return load_component(kind, name, **params)
        built.append(name)
        return object()

    headers = Message()
    headers["Provides-Extra"] = "avatar"
    serve = types.SimpleNamespace(
        name="facekit-serve", version="0.1.0", metadata=headers, requires=['facekit-avatar>=9.0; extra == "avatar"']
    )
    real = metadata.distribution
    monkeypatch.setattr(metadata, "distribution", lambda name: serve if name == "facekit-serve" else real(name))
    monkeypatch.setattr(facekit, "load_component", avatar_app)
    monkeypatch.setitem(sys.modules, "facekit_avatar.app", types.ModuleType("facekit_avatar.app"))  # no mesh_files
    engine = Engine.load(tmp_path / "results", compare=False)
    try:
        assert built == ["avatar"] and engine.avatar is None
        note = engine.avatar_note
        assert note.startswith(
            "The 3-D avatar is not available on this server: ImportError: cannot import name 'mesh_files' from "
            "'facekit_avatar.app'"
        )
        installed = metadata.version("facekit-avatar")
        assert note.endswith(
            f"; facekit-serve 0.1.0 asks for facekit-avatar>=9.0 (with its extra avatar), and facekit-avatar "
            f"{installed} is installed: pip install 'facekit-avatar>=9.0'"
        )
        assert "\n" not in note
    finally:
        engine.close()


def test_a_comparison_model_that_cannot_load_is_left_out_not_the_server(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """helper-67: with facekit[default] only (no facekit-opencv), the shipped sface model's encoder is unknown and
    `facekit serve` did not start, though nobody asked for the comparison."""
    from facekit.apps.explore import Explorer
    from facekit.errors import FacekitError

    def unknown_encoder(self: Any, path: Any) -> Any:
        raise FacekitError(f"{path} was made with a component not available here: unknown encoder 'sface'")

    monkeypatch.setenv("FACEKIT_HOME", str(tmp_path / "empty-store"))
    monkeypatch.setattr(Explorer, "load_normalizer", unknown_encoder)
    engine = Engine.load(tmp_path / "results", compare=True)
    try:
        assert engine.others == [] and "left out sface" in engine.compare_note
        assert "unknown encoder 'sface'" in engine.compare_note
    finally:
        engine.close()


def test_serve_refuses_a_taken_port_in_one_line() -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen(1)
        port = taken.getsockname()[1]
        result = run_cli("serve", "--port", str(port))
    assert result.returncode == 1, result.stderr
    assert "cannot listen on 127.0.0.1" in result.stderr and "Traceback" not in result.stderr


def test_the_page_opens_on_the_avatar_only_when_there_is_one(
    engine: Engine, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Before (helper-84): without the Surrey model the page opened on the avatar tab, which holds only a note."""
    from facekit_serve.web import build_app

    monkeypatch.setenv("GRADIO_TEMP_DIR", str(tmp_path / "gradio"))

    def first_tab() -> str:
        demo = build_app(engine, [], 20.0)
        (tabs,) = [block for block in demo.blocks.values() if getattr(block, "elem_id", None) == "result-tabs"]
        return str(tabs.selected)

    assert engine.avatar is None and first_tab() == "adjust-tab"
    monkeypatch.setattr(engine, "avatar_note", "")  # as when the model loaded
    assert first_tab() == "avatar-tab"


def test_serve_says_a_wrong_model_before_loading_anything(monkeypatch: pytest.MonkeyPatch) -> None:
    """helper-85: `--model nope` was said only after the slow imports and loading."""
    from facekit_serve import cli as serve_cli

    from facekit.errors import FacekitError

    monkeypatch.setattr(Engine, "load", lambda *args, **kwargs: pytest.fail("the models were loaded"))
    monkeypatch.setattr(serve_cli, "check_port", lambda *args: pytest.fail("the port was checked"))
    cases = {"no shipped model named 'nope'": {"model": "nope"}, "checkpoint not found": {"checkpoint": "/nope"}}
    for said, given in cases.items():
        with pytest.raises(FacekitError, match=said):
            serve_cli.serve(**given)


def test_serve_gives_a_large_photos_freed_image_back(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """Before: Pillow's 16 MB blocks of a large upload's decoded image stayed in the request thread's heap once
    freed (glibc maps only blocks above its threshold on their own), resident under the photo's correction and the
    encoder's copy: a 48 MP upload's peak held 190 MB more (benchmarks/adjust.py --memory). The server sets larger
    blocks, each mapped on its own, before its models load."""
    import tempfile

    from facekit_serve import cli as serve_cli
    from facekit_serve import offline
    from facekit_serve.engine import PILLOW_BLOCK_BYTES

    from facekit.errors import FacekitError

    seen: list[int] = []

    def load(*args: Any, **kwargs: Any) -> Any:
        seen.append(Image.core.get_block_size())
        raise FacekitError("stopped before the models")

    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))  # the server's folder, and those it would tidy
    monkeypatch.setenv("GRADIO_TEMP_DIR", str(tmp_path / "gradio"))  # (serve sets it: put back after the test)
    monkeypatch.setattr(serve_cli, "_stop_on_signals", lambda: None)  # pytest's handlers stay
    monkeypatch.setattr(serve_cli, "check_port", lambda *args: None)
    monkeypatch.setattr(offline, "offline_environment", lambda: None)
    monkeypatch.setattr(Engine, "load", load)
    before = Image.core.get_block_size()
    Image.core.set_block_size(16 << 20)  # Pillow's own (an earlier serve in this process left the server's)
    try:
        with pytest.raises(FacekitError, match="stopped before the models"):
            serve_cli.serve()
    finally:
        Image.core.set_block_size(before)
    assert seen == [PILLOW_BLOCK_BYTES] and PILLOW_BLOCK_BYTES > 32 << 20


def test_serve_prints_whole_lines_into_a_log(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Into a pipe (nohup's log, a service's journal) serve prints as facekit's commands do: each message one line
    however long, and its table laid out to 160 columns (facekit.cli.print_block). Before, its own rich console
    wrapped everything at 80 columns there: the --host warning came out in two lines, the table was 80 wide and the
    server's folder cut in pieces in it."""
    import tempfile

    from facekit_serve import cli as serve_cli
    from facekit_serve import engine as serve_engine
    from facekit_serve import offline, web

    from facekit import cli

    parent = tmp_path.joinpath(*["a-folder-with-a-long-name-" + str(i) * 20 for i in range(3)])
    parent.mkdir(parents=True)
    abandoned = parent / f"{serve_cli.WORKDIR_PREFIX}abcd1234"  # a stopped server's, removed with a line saying so
    abandoned.mkdir()
    (abandoned / serve_cli.SERVE_LOCK).touch()
    loaded = dataclasses.make_dataclass("Loaded", ["labels", "compare_note", "avatar_note", "max_upload_bytes"])
    fake = loaded(["dlib"], "", "", 1 << 20)
    fake.warm_up = fake.close = lambda *args: None
    monkeypatch.setattr(cli, "console", cli._console(stderr=False))  # (capsys's stdout is no terminal)
    monkeypatch.setattr(tempfile, "tempdir", str(parent))
    monkeypatch.setenv("GRADIO_TEMP_DIR", str(tmp_path / "gradio"))  # (serve sets it: put back after the test)
    monkeypatch.setattr(serve_cli, "_stop_on_signals", lambda: None)  # pytest's handlers stay
    monkeypatch.setattr(serve_cli, "check_port", lambda *args: None)
    monkeypatch.setattr(offline, "offline_environment", lambda: None)
    monkeypatch.setattr(serve_engine, "return_freed_images", lambda: None)
    monkeypatch.setattr(Engine, "load", lambda *args, **kwargs: fake)
    monkeypatch.setattr(serve_engine, "example_photos", lambda folder: [FACE])
    monkeypatch.setattr(web, "build_app", lambda *args: None)
    monkeypatch.setattr(web, "launch", lambda *args, **kwargs: None)
    monkeypatch.setattr(serve_cli, "serve_until_stopped", lambda demo, launch: launch())
    serve_cli.serve(host="0.0.0.0", port=8765)
    out = capsys.readouterr().out
    warning = "makes the page reachable from other machines: anyone who can reach it can upload photos to this server"
    assert f"warning: --host 0.0.0.0 {warning}\n" in out
    assert f"removed 1 folder(s) a stopped server left in {parent} (its visitors' photos)\n" in out
    assert "open http://0.0.0.0:8765 in a browser; Ctrl+C stops the server\n" in out
    table = [line for line in out.splitlines() if line.startswith(("┏", "┃", "│", "└", "┌", "├", "┡"))]
    assert 80 < max(len(line) for line in table) <= 160 and not abandoned.exists()


def test_serve_refuses_a_surrey_model_it_was_told_to_use_and_cannot(tmp_path: Path) -> None:
    """helper-67: `--sfm PATH` with a typo or a damaged file started the server without the avatar, a console line
    the only sign; the operator asked for it, so it is an error (no --sfm and none in the store stays a note)."""
    from facekit.errors import FacekitError

    with socket.socket() as probe:  # a port that is free now
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    missing = run_cli("serve", "--port", str(port), "--sfm", str(tmp_path / "nope.bin"))
    assert missing.returncode == 1 and "file not found" in missing.stderr and "Traceback" not in missing.stderr
    damaged = tmp_path / "sfm_shape_3448.bin"
    damaged.write_bytes(b"not a model")
    with pytest.raises(FacekitError, match=f"--sfm {damaged}: "):
        Engine.load(tmp_path / "results", compare=False, sfm=str(damaged))


def test_the_command_is_registered_without_importing_gradio_or_torch() -> None:
    code = (
        "import sys\nfrom facekit.cli import _register_plugin_commands, app\n_register_plugin_commands()\n"
        "print([c.name for c in app.registered_commands if c.name == 'serve'], "
        "[m for m in ('gradio', 'torch', 'facekit_serve.web') if m in sys.modules])"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert result.stdout.strip() == "['serve'] []", result.stdout + result.stderr


# ------------------------------------------------------------------------------------------------ the page


def wait_until(check: Any, seconds: float, what: str) -> Any:
    """Poll ``check()`` until it returns something other than None or False, or ``seconds`` pass (then fail, saying
    ``what``)."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        value = check()
        if value is not None and value is not False:
            return value
        time.sleep(0.2)
    pytest.fail(f"timed out after {seconds:.0f} s waiting for {what}")


@pytest.fixture(scope="module")
def server(data_root: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    """``facekit serve`` in a subprocess on a free loopback port, its temporary files under a folder of the test."""
    sfm = data_root / "sfm" / "sfm_shape_3448.bin"
    if not sfm.is_file():
        pytest.skip(f"the Surrey model is not at {sfm}")
    folder = tmp_path_factory.mktemp("serve")
    arguments = ["--sfm", str(sfm), "--max-upload-mb", "2"]
    # A closed page is noticed within a second. GRADIO_TEMP_DIR names a folder of the user's: the server uses its own
    # anyway, deleted when it stops (before: Gradio's copies went there and stayed).
    env = {"GRADIO_HEARTBEAT_INTERVAL": "0.5", "GRADIO_TEMP_DIR": str(folder / "users-gradio")}
    try:
        with running_server(folder, arguments, env, start_seconds=120) as started:
            yield {
                "url": started.url,
                "port": started.port,
                "process": started.process,
                "folder": folder,
                "log": started.log,
            }
    except ServerDidNotStart as error:
        pytest.fail(str(error))


def chromium_executable() -> str:
    executable = shutil.which("chromium") or shutil.which("chromium-browser")
    if executable is None:
        pytest.skip("headless Chromium not found: `apt-get install -y chromium` (Debian) to run the page checks")
    return executable


def fetch_image(page: Any, selector: str) -> Image.Image:
    """The image shown by ``selector``'s <img>, fetched from the server and decoded."""
    source = page.locator(f"{selector} img").first.get_attribute("src")
    assert source, f"{selector} shows no image"
    response = page.request.get(source)
    assert response.ok, (source, response.status)
    image = Image.open(io.BytesIO(response.body()))
    image.load()
    return image


def upload(page: Any, path: Path) -> None:
    if page.locator("#upload .file-preview").count():  # a photo is there: clear it first, as a visitor would
        page.locator("#upload button[aria-label='Clear']").click()
        page.locator("#status").get_by_text("Waiting for a photo.").wait_for()
    page.locator("#upload input[type=file]").set_input_files(str(path))


def mesh_on_canvas(page: Any) -> np.ndarray | None:
    """The middle of the 3-D viewer's canvas as pixels once a mesh is drawn there, else None. The viewer clears to
    mid-grey (0.5) and an unused canvas is one flat colour; a rendered face covers much of the middle with shading
    and texture."""
    canvas = page.locator("#avatar canvas").first
    if not canvas.is_visible():
        return None
    box = canvas.bounding_box()
    if box is None or box["width"] < 10:  # the viewer is re-creating its canvas (a re-sent file): look again
        return None
    clip = {"x": box["x"] + box["width"] * 0.3, "y": box["y"] + box["height"] * 0.25}
    clip.update(width=box["width"] * 0.4, height=box["height"] * 0.5)
    pixels = np.asarray(Image.open(io.BytesIO(page.screenshot(clip=clip))).convert("RGB"), np.int16)
    covered = (np.abs(pixels - 128).max(axis=-1) > 12).mean()  # not the viewer's background
    return pixels if covered > 0.3 and pixels.std() > 15 else None  # and not uniform (a blank or white canvas)


@pytest.mark.chromium
def test_the_page_end_to_end_in_chromium(server: dict[str, Any], data_root: Path, tmp_path: Path) -> None:
    from playwright.sync_api import expect, sync_playwright

    url = server["url"]
    broken = tmp_path / "broken.jpg"
    broken.write_bytes((data_root / LFW_AGAIN).read_bytes()[:2500])
    too_big = tmp_path / "too-big.jpg"
    too_big.write_bytes(b"\xff\xd8" + bytes(3 * MB))
    elsewhere: list[str] = []
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=chromium_executable(),
            args=["--no-sandbox", "--use-angle=swiftshader", "--enable-unsafe-swiftshader", "--disable-gpu-sandbox"],
        )
        try:
            page = browser.new_page(viewport={"width": 1280, "height": 1300})
            page.on(
                "request",
                lambda request: (
                    None if request.url.startswith((url, "data:", "blob:")) else elsewhere.append(request.url)
                ),
            )
            page.goto(url)

            # A real LFW photo: the normalized face and the adjusted photo are real images of the right size. The
            # adjusted photo's tab is open while it works, so the 3-D viewer's tab is hidden when its GLB arrives.
            page.get_by_role("tab", name="Adjusted photo").click()
            upload(page, data_root / LFW_PHOTO)
            status = page.locator("#status")
            expect(status).to_contain_text("Adrien_Brody_0001.jpg: 250 x 250 px, 1 face found", timeout=60_000)
            assert fetch_image(page, "#normalized").size == (448, 448)
            detections = fetch_image(page, "#detections")
            assert detections.size == (250, 250)
            adjusted = fetch_image(page, "#adjusted")
            assert adjusted.size == (250, 250)
            assert np.asarray(adjusted.convert("RGB")).std() > 20  # a photo, not a blank
            assert fetch_image(page, "#before-after").size == (500, 250)
            # Screen readers: each result image says what it shows (Gradio's default alt="" marks it decorative), and
            # the status box is a live region, so "1 face found" or a problem is read out when it appears.
            for element in ("detections", "normalized", "adjusted", "before-after"):  # those on the open tab
                assert page.locator(f"#{element} img").first.get_attribute("alt") == ALT_TEXT[element], element
            assert status.get_attribute("aria-live") == "polite" and status.get_attribute("role") == "status"
            # The downloads are saved under the photo's name (before: normalized-face.png, adjusted-full.jpg for
            # every photo): the name the browser takes from the server's answer, not only the link's.
            for element, name in (("normalized-file", "normalized.png"), ("adjusted-file", "adjusted.jpg")):
                with page.expect_download() as download:
                    page.locator(f"#{element} a[download]").click()
                assert download.value.suggested_filename == f"Adrien_Brody_0001-{name}", element

            # The 3-D viewer draws the avatar (its tab opened after the result arrived), and the GLB is a real
            # binary glTF.
            page.get_by_role("tab", name="3-D avatar").click()
            pixels = wait_until(lambda: mesh_on_canvas(page), 30, "the avatar on the viewer's canvas")
            skin = (pixels[..., 0] > pixels[..., 2] + 15).mean()  # a textured face: mostly reddish skin
            assert skin > 0.2, skin
            # Keyboard and screen readers: the viewer keeps its place in the Tab order after a pointer moves over it
            # (before: Babylon.js's tabindex 1 made it the first stop on the page, ahead of the photo's own box), it
            # is named, and each file's download link says which file (before: its size alone, "381.0 KB").
            page.locator("#avatar canvas").first.hover()
            assert page.evaluate("[...document.querySelectorAll('[tabindex]')].filter(e => e.tabIndex > 0).length") == 0
            page.locator("h1").click()
            page.keyboard.press("Tab")
            assert page.evaluate("document.activeElement.closest('#upload') !== null"), "the first Tab skips the photo"
            expect(page.get_by_role("img", name=AVATAR_CANVAS_LABEL, exact=True)).to_be_visible()
            for name in ("normalized.png", "avatar.glb"):
                named = re.compile(rf"^Download Adrien_Brody_0001-{re.escape(name)}, [0-9.]+\sKB$")
                expect(page.get_by_role("link", name=named)).to_have_count(1)
            links = page.locator("#avatar-files a[download]")
            expect(links).to_have_count(2)
            # Downloads only: no button takes a file off the list (before: each had a "Remove this file" x).
            removes = page.locator("#avatar-files button[aria-label='Remove this file']")
            expect(removes).to_have_count(2)  # Gradio draws one per file (GLB, OBJ zip): a renamed label fails here
            for remove in removes.all():
                expect(remove).to_be_hidden()
            glb_link = page.locator("#avatar-files a[download='Adrien_Brody_0001-avatar.glb']")
            glb = page.request.get(glb_link.get_attribute("href"))
            assert glb.ok and glb.body()[:4] == b"glTF"
            assert page.locator("#renders img").first.get_attribute("alt") == ALT_TEXT["renders"]
            page.get_by_role("tab", name="Attributes").click()
            expect(page.locator("#attributes")).to_contain_text("ITA")
            assert page.locator("#skin img").first.get_attribute("alt") == ALT_TEXT["skin"]

            # Bad input: a message in plain words, and the server stays up.
            upload(page, broken)
            expect(status).to_contain_text("not a photo facekit can read", timeout=30_000)
            upload(page, too_big)
            expect(page.get_by_text("exceed the maximum allowed size of 2.0 Mb")).to_be_visible(timeout=10_000)
            wall = tmp_path / "wall.png"
            Image.fromarray(np.full((240, 320, 3), 150, np.uint8)).save(wall)
            upload(page, wall)
            expect(status).to_contain_text("No face found", timeout=30_000)
            assert "Traceback" not in page.locator("body").inner_text()

            # A good photo again works.
            upload(page, data_root / LFW_AGAIN)
            expect(status).to_contain_text("Ann_Veneman_0001.jpg: 250 x 250 px, 1 face found", timeout=60_000)
            assert fetch_image(page, "#normalized").size == (448, 448)

            # Two faces (a bundled example): choose the second.
            page.get_by_role("button", name="two faces").click()
            expect(status).to_contain_text("2 faces found", timeout=60_000)
            first = np.asarray(fetch_image(page, "#detections").convert("RGB"))
            # The faces are one radio group named by its label (before: each option a group of its own, the group
            # unnamed), so the arrow keys move through them, as in any radio group.
            faces = page.get_by_role("radiogroup", name="Faces (largest first)")
            faces.get_by_role("radio", name="face 1 (largest)").focus()
            page.keyboard.press("ArrowRight")
            expect(faces.get_by_role("radio", name="face 2")).to_be_checked()
            expect(status).to_contain_text("showing face 2", timeout=60_000)
            assert not np.array_equal(first, np.asarray(fetch_image(page, "#detections").convert("RGB")))

            gradio = next(server["folder"].glob("facekit-serve-*/gradio"))
            served = {p.name: p for p in gradio.rglob("*") if p.is_file()}
            # The photos sent before the one the page shows went when its results replaced theirs (helper-89).
            assert not {"Adrien_Brody_0001.jpg", "broken.jpg", "wall.png"} & set(served), sorted(served)
            uploaded = [served["Ann_Veneman_0001.jpg"]]
            shown = {"two-faces-face2-normalized.png", "two-faces-face2-adjusted.jpg", "two-faces-face2-avatar.glb"}
            assert shown <= set(served), sorted(served)
            page.close()
        finally:
            browser.close()
    assert elsewhere == [], f"the page fetched from outside the server: {elsewhere}"

    # The closed page's uploads and results are deleted (its session ended): the server's own files and the copies
    # Gradio served. What remains are the examples (no empty temporary files from Gradio's File: helper-89).
    wait_until(lambda: not any(p.exists() for p in uploaded), 20, "the closed page's uploads to be deleted")
    results = next(server["folder"].glob("facekit-serve-*/results"))
    wait_until(lambda: not any(results.iterdir()), 20, "the closed page's results to be dropped")
    left = {p.name for p in gradio.rglob("*") if p.is_file()}
    assert left <= {"face.jpg", "face-warm-cast.jpg", "two-faces.jpg"}, left
    with urllib.request.urlopen(url, timeout=5) as response:
        assert response.status == 200
    assert server["process"].poll() is None


def contrast_ratio(foreground: str, background: str) -> float:
    """WCAG's contrast ratio of two CSS ``rgb(...)``/``rgba(...)`` colours (4.5 is AA for normal text)."""

    def luminance(colour: str) -> float:
        channels = [float(value) / 255 for value in colour[colour.index("(") + 1 : -1].split(",")[:3]]
        linear = [c / 12.92 if c <= 0.04045 else ((c + 0.055) / 1.055) ** 2.4 for c in channels]
        return 0.2126 * linear[0] + 0.7152 * linear[1] + 0.0722 * linear[2]

    lighter, darker = sorted((luminance(foreground), luminance(background)), reverse=True)
    return (lighter + 0.05) / (darker + 0.05)


#: The colour of an element and of the first ancestor with a background of its own (the page's, where none has).
COLOURS_JS = """element => {
  let node = element, background = "rgba(0, 0, 0, 0)";
  while (node && /^rgba\\(.*, 0\\)$|^transparent$/.test(background)) {
    background = getComputedStyle(node).backgroundColor;
    node = node.parentElement;
  }
  return [getComputedStyle(element).color, background];
}"""


@pytest.mark.chromium
def test_a_problem_is_readable_in_dark_mode_too(server: dict[str, Any], data_root: Path, tmp_path: Path) -> None:
    """Before: the status box's problem was dark red (#b00020) in both colour schemes, 2.6:1 on Gradio's dark
    background (WCAG AA asks 4.5:1): barely legible on a phone or laptop set to dark mode."""
    from playwright.sync_api import expect, sync_playwright

    broken = tmp_path / "broken.jpg"
    broken.write_bytes((data_root / LFW_AGAIN).read_bytes()[:2500])
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=chromium_executable(), args=["--no-sandbox"])
        try:
            for scheme in ("light", "dark"):
                page = browser.new_page(color_scheme=scheme)
                page.goto(server["url"])
                upload(page, broken)
                problem = page.locator("#status .error")
                expect(problem).to_contain_text("not a photo facekit can read", timeout=30_000)
                colour, background = problem.evaluate(COLOURS_JS)
                assert contrast_ratio(colour, background) >= 4.5, (scheme, colour, background)
                page.close()
        finally:
            browser.close()


@pytest.mark.chromium
def test_the_attributes_table_fits_a_phone(server: dict[str, Any], data_root: Path) -> None:
    """Before: on a 375 px phone the table's header cells did not wrap ("normalized face" on one line), so the table
    was wider than its box and the photo's column was cut at the screen's edge, behind a sideways scroll."""
    from playwright.sync_api import expect, sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=chromium_executable(), args=["--no-sandbox"])
        try:
            page = browser.new_page(viewport={"width": 375, "height": 800})
            page.goto(server["url"])
            upload(page, data_root / LFW_PHOTO)
            expect(page.locator("#status")).to_contain_text("1 face found", timeout=60_000)
            page.get_by_role("button", name="More tabs").click()  # a phone's tab bar shows the first two
            page.get_by_role("button", name="Attributes", exact=True).click()
            table = page.locator("#attributes table")
            expect(table).to_contain_text("photo")
            box, inside = page.locator("#attributes").bounding_box(), table.bounding_box()
            assert box is not None and inside is not None
            assert inside["x"] + inside["width"] <= box["x"] + box["width"] + 0.5, (inside, box)
        finally:
            browser.close()


#: While the status box shows a request's progress: whether its earlier line still shows, whether the progress bar
#: ends inside the box, and whether the box is as high as it was before (``height``, in pixels), so that what is
#: below it stays where it was (None until the progress shows).
STATUS_WHILE_PENDING_JS = """(height) => {
  const status = document.getElementById("status");
  const earlier = status && status.querySelector(".pending");
  const bar = status && status.querySelector("[role=progressbar]");
  if (!earlier || !bar) return null;
  const box = status.getBoundingClientRect();
  return {
    earlier: getComputedStyle(earlier).visibility,
    barInside: bar.getBoundingClientRect().bottom <= box.bottom + 0.5,
    sameHeight: Math.abs(box.height - height) < 0.5,
  };
}"""


@pytest.mark.chromium
def test_the_status_shows_the_progress_alone_while_a_photo_is_processed(
    server: dict[str, Any], data_root: Path
) -> None:
    """Before: Gradio drew the progress over the status box's earlier line, faded, and in a box one line high the
    two were written over each other ("Waiting ffinding and normalizing the faces - 10.0%"), the bar cut off. A box
    that grew only while a photo was processed moved the faces to choose from below it."""
    from playwright.sync_api import expect, sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=chromium_executable(), args=["--no-sandbox"])
        try:
            for width in (1280, 390):
                page = browser.new_page(viewport={"width": width, "height": 800})
                page.goto(server["url"])
                status = page.locator("#status")
                expect(status).to_contain_text("Waiting for a photo.")
                before = status.bounding_box()
                assert before is not None
                upload(page, data_root / LFW_PHOTO)
                seen = page.wait_for_function(
                    STATUS_WHILE_PENDING_JS, arg=before["height"], polling="raf", timeout=60_000
                ).json_value()
                assert seen == {"earlier": "hidden", "barInside": True, "sameHeight": True}, (width, seen)
                expect(status).to_contain_text("1 face found", timeout=60_000)
                page.close()
        finally:
            browser.close()


@pytest.mark.chromium
def test_the_models_comparison_names_its_columns_on_a_phone(server: dict[str, Any], data_root: Path) -> None:
    """Before: on a 390 px phone the comparison filled its box's width and the box's label ("Models compared") and
    buttons, drawn over the picture's top, hid the names of its columns (helper-234's walk)."""
    from playwright.sync_api import expect, sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=chromium_executable(), args=["--no-sandbox"])
        try:
            page = browser.new_page(viewport={"width": 390, "height": 844})
            page.goto(server["url"])
            upload(page, data_root / LFW_PHOTO)
            expect(page.locator("#status")).to_contain_text("1 face found", timeout=60_000)
            page.get_by_role("button", name="More tabs").click()  # a phone's tab bar shows the first two
            menu = page.get_by_role("button", name="Compare models", exact=True)
            if not menu.count():
                pytest.skip("one shipped model is installed: the page has no comparison")
            menu.click()
            picture = page.locator("#comparison img")
            expect(picture).to_be_visible()
            label = page.locator("#comparison [data-testid='block-label']").bounding_box()
            shown = picture.bounding_box()
            assert label is not None and shown is not None
            assert shown["width"] > 0.9 * page.locator("#comparison").bounding_box()["width"]  # fills its box
            assert label["y"] + label["height"] <= shown["y"] + 0.5, (label, shown)
        finally:
            browser.close()


@pytest.mark.chromium
def test_the_last_face_chosen_is_the_one_shown(server: dict[str, Any], data_root: Path, tmp_path: Path) -> None:
    """Before: a face chosen while the one chosen just before was still being made was dropped (Gradio's default for
    an input event: nothing more while one is pending), so the chooser said face 3 and the page showed face 2."""
    from playwright.sync_api import expect, sync_playwright

    people = [data_root / "london" / "neutral_front" / f"00{n}_03.jpg" for n in (1, 2, 3)]
    group = Image.new("RGB", (900, 300))
    for n, person in enumerate(people):
        with Image.open(person) as face:
            group.paste(face.convert("RGB").resize((300, 300)), (300 * n, 0))
    photo = tmp_path / "three-people.jpg"
    group.save(photo, quality=92)
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=chromium_executable(), args=["--no-sandbox"])
        try:
            page = browser.new_page()
            page.goto(server["url"])
            upload(page, photo)
            status = page.locator("#status")
            expect(status).to_contain_text("3 faces found", timeout=60_000)
            faces = page.get_by_role("radiogroup", name="Faces (largest first)")
            faces.get_by_role("radio", name="face 1 (largest)").focus()
            page.keyboard.press("ArrowRight")  # face 2: made now, which takes a while
            page.keyboard.press("ArrowRight")  # face 3, chosen while face 2 is being made
            expect(faces.get_by_role("radio", name="face 3")).to_be_checked()
            expect(status).to_contain_text("showing face 3", timeout=30_000)
            expect(page.locator("#normalized-file a[download]")).to_have_attribute(
                "download", "three-people-face3-normalized.png"
            )
        finally:
            browser.close()


def raw_request(port: int, method: str, path: str, headers: dict[str, str], body: bytes = b"") -> tuple[int, str]:
    """Send a request as a browser or script would, headers exactly as given; the status and the start of the body."""
    import http.client

    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    try:
        connection.putrequest(method, path, skip_host=True, skip_accept_encoding=True)
        for name, value in {"Host": f"127.0.0.1:{port}", **headers}.items():
            connection.putheader(name, value)
        connection.endheaders(body or None)
        response = connection.getresponse()
        return response.status, response.read(300).decode(errors="replace")
    finally:
        connection.close()


def multipart(name: str, content: bytes) -> tuple[dict[str, str], bytes]:
    boundary = "facekitboundary"
    body = (
        (
            f'--{boundary}\r\nContent-Disposition: form-data; name="files"; filename="{name}"\r\n'
            "Content-Type: image/jpeg\r\n\r\n"
        ).encode()
        + content
        + f"\r\n--{boundary}--\r\n".encode()
    )
    return {"Content-Type": f"multipart/form-data; boundary={boundary}", "Content-Length": str(len(body))}, body


def test_the_server_refuses_other_sites_rebinding_names_and_endless_bodies(
    server: dict[str, Any], data_root: Path
) -> None:
    """Before: a page on another site uploaded photos to the server (a form POST needs no preflight), a DNS name
    re-pointed to 127.0.0.1 read every answer, and a 200 MB text body was read into memory whole."""
    port, folder = server["port"], server["folder"]
    photo = (data_root / LFW_PHOTO).read_bytes()
    status, text = raw_request(port, "GET", "/config", {"Host": f"rebind.attacker.example:{port}"})
    assert status == 421 and "does not answer to the name" in text
    headers, body = multipart("from-evil-site.jpg", photo)
    status, _ = raw_request(port, "POST", "/gradio_api/upload", {**headers, "Origin": "http://evil.test"}, body)
    assert status == 403
    assert not any(p.name == "from-evil-site.jpg" for p in folder.rglob("*"))
    join = {"Content-Type": "text/plain", "Content-Length": str(200 << 20)}  # the body is never sent: not read
    status, text = raw_request(port, "POST", "/gradio_api/queue/join", join)
    assert status == 413 and "request too large" in text
    big = {**headers, "Content-Length": str(4 * MB)}  # over --max-upload-mb 2 and the form's room
    assert raw_request(port, "POST", "/gradio_api/upload", big)[0] == 413
    # The same upload from the page's own origin is taken.
    own = {**headers, "Origin": server["url"].rstrip("/")}
    status, text = raw_request(port, "POST", "/gradio_api/upload", own, body)
    assert status == 200 and "from-evil-site.jpg" in text, text
    assert server["process"].poll() is None


def test_an_api_caller_gets_problems_as_errors(server: dict[str, Any], data_root: Path, tmp_path: Path) -> None:
    """Before: a program calling /analyze (gradio_client) got a success whose status was an HTML message; now a
    problem is an error it can catch, and a good photo is a result."""
    from gradio_client import Client, handle_file

    client = Client(server["url"], verbose=False, download_files=str(tmp_path / "downloads"))
    broken = tmp_path / "broken.jpg"
    broken.write_bytes((data_root / LFW_AGAIN).read_bytes()[:2500])
    tracebacks = server["log"].read_text(errors="replace").count("Traceback")
    with pytest.raises(Exception, match="not a photo facekit can read"):
        client.predict(handle_file(str(broken)), api_name="/analyze")
    # The visitor's file is wrong, not the server: no traceback in the server's log (Gradio prints one per gr.Error).
    assert server["log"].read_text(errors="replace").count("Traceback") == tracebacks
    result = client.predict(handle_file(str(data_root / LFW_PHOTO)), api_name="/analyze")
    status, detections = result[1], result[2]  # (the upload's State is not part of the API)
    assert "1 face found" in status and Path(detections).is_file()
    assert Path(result[4]).name == "Adrien_Brody_0001-normalized.png"  # the caller's file's name


def test_a_face_the_photo_does_not_offer_is_refused_in_one_line(
    server: dict[str, Any], data_root: Path, tmp_path: Path
) -> None:
    """Before: a value /choose_face does not offer ('face 9') was refused by Gradio's Radio before facekit's handler
    ran, with a 25-line traceback in the server's log for each call; now the caller's error says what is offered and
    the log has no line of it. A face the photo offers is still made."""
    from gradio_client import Client, handle_file

    client = Client(server["url"], verbose=False, download_files=str(tmp_path / "downloads"))
    before = server["log"].read_text(errors="replace")
    with pytest.raises(Exception, match="no face to choose: send a photo first"):
        client.predict("face 9", api_name="/choose_face")
    client.predict(handle_file(str(data_root / LFW_PHOTO)), api_name="/analyze")  # one face: 'face 1 (largest)'
    with pytest.raises(Exception, match=r"'face 9' is not a face of this photo: choose one of 'face 1 \(largest\)'"):
        client.predict("face 9", api_name="/choose_face")
    written = server["log"].read_text(errors="replace")[len(before) :]
    assert "Traceback" not in written and "face 9" not in written, written
    status = client.predict("face 1 (largest)", api_name="/choose_face")[0]
    assert "1 face found" in status, status


def test_only_the_pages_own_results_are_served(server: dict[str, Any], data_root: Path, tmp_path: Path) -> None:
    """Before: the server's whole folder was an allowed path, so anyone who named a file in it got it: its lock (the
    process id), every visitor's uploaded photo and results. Now only the copies Gradio serves to the page are."""
    from gradio_client import Client, handle_file

    client = Client(server["url"], verbose=False, download_files=str(tmp_path / "downloads"))
    detections = Path(client.predict(handle_file(str(data_root / LFW_PHOTO)), api_name="/analyze")[2])
    assert detections.is_file()  # the page's own copy reached the caller
    (workdir,) = server["folder"].glob("facekit-serve-*")
    private = [workdir / ".facekit-serve.lock", *workdir.glob("results/*/upload.*"), *workdir.glob("results/*/*/*")]
    assert len(private) >= 3, private
    for path in private:
        status, _ = raw_request(server["port"], "GET", f"/gradio_api/file={path}", {})
        assert status in (403, 404), (path, status)
    served = next(path for path in (workdir / "gradio").rglob("*") if path.is_file())  # Gradio's copies
    assert raw_request(server["port"], "GET", f"/gradio_api/file={served}", {})[0] == 200


def test_stopping_the_server_deletes_its_files(server: dict[str, Any]) -> None:
    """SIGTERM (`systemctl stop`, `docker stop`) closes the server and deletes its folder; serve says so in
    facekit's one line, not an error's, and exits 0, a server's normal end (a service manager reads 143 as a
    failure). Before (helper-210), Gradio's "Keyboard interruption in main thread... closing server." was the only
    line."""
    process = server["process"]
    process.send_signal(signal.SIGTERM)
    assert process.wait(timeout=30) == 0, server["log"].read_text()[-2000:]
    log = server["log"].read_text(errors="replace")
    assert log.splitlines()[-1] == (
        "serve stopped by SIGTERM: its folder of the visitors' uploads and results is deleted; what was "
        "downloaded from the page stays where it was saved"
    )
    assert "Keyboard interruption" not in log and "Closing server" not in log
    assert list(server["folder"].glob("facekit-serve-*")) == []
    users = server["folder"] / "users-gradio"
    assert not users.exists() or not any(p.is_file() for p in users.rglob("*"))


@pytest.mark.parametrize("nohup", [False, True])
def test_a_closing_terminal_stops_serve_as_sigterm_does(default_handlers: None, nohup: bool) -> None:
    """Before: serve took SIGTERM alone, so SIGHUP (its terminal closed) raised facekit's Terminated, which Gradio
    does not catch: the server was never closed, the exit was 129 with normalize's message, and facekit's handler
    reset serve's SIGTERM handler to the default one (a SIGTERM then ended the clean-up on the spot). Now SIGHUP
    stops it as SIGTERM does, its repeat ignored, serve's SIGTERM handler kept; under nohup it keeps serving."""
    from facekit_serve.cli import _stop_on_signals, _stop_on_sigterm

    from facekit.cli import TERMINATED_MESSAGE
    from facekit.errors import Terminated, sigterm_raises

    if nohup:
        signal.signal(signal.SIGHUP, signal.SIG_IGN)
    with sigterm_raises(TERMINATED_MESSAGE):  # as facekit's CLI runs every command
        _stop_on_signals()
        if nohup:
            signal.raise_signal(signal.SIGHUP)  # (held by no handler, it would end pytest)
            assert signal.getsignal(signal.SIGHUP) == signal.SIG_IGN
        else:
            with pytest.raises(Terminated) as stop:  # (serve's own: facekit's would be said by serve's line too)
                signal.raise_signal(signal.SIGHUP)
            assert stop.value.exit_code == 129 and not stop.value.said
            assert signal.getsignal(signal.SIGHUP) == signal.SIG_IGN  # the kernel's SIGHUP after the shell's
        assert signal.getsignal(signal.SIGTERM) is _stop_on_sigterm


def test_a_stopped_serve_says_whether_its_folder_went(tmp_path: Path) -> None:
    """The stop line is said after the clean-up and tells what is true then: a folder that could not be deleted (a
    file in it the user may not remove) is named for the user to delete, and a stop before the folder was made says
    nothing was written."""
    from facekit_serve.cli import serve_stopped

    assert serve_stopped("Ctrl+C", None) == "serve stopped by Ctrl+C before it served: it wrote nothing"
    assert serve_stopped("SIGTERM", tmp_path) == (
        f"serve stopped by SIGTERM: its folder {tmp_path} (the visitors' uploads and results) could not be deleted: "
        "delete it yourself"
    )
    assert serve_stopped("SIGHUP", tmp_path / "gone").startswith("serve stopped by SIGHUP: its folder of the")


def test_closing_the_servers_terminal_deletes_its_files(
    data_root: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The terminal serve runs in closes (hangs up: every write to it fails with EIO) while it serves: the server is
    closed, the files go, exit 0 as after SIGTERM (a server's normal end), and a stderr sent elsewhere (a log) says
    so."""
    from facekit_serve.testing import answers, free_port

    from tests.helpers import sigterm_in_a_terminal

    sfm = data_root / "sfm" / "sfm_shape_3448.bin"
    if not sfm.is_file():
        pytest.skip(f"the Surrey model is not at {sfm}")
    monkeypatch.setenv("TMPDIR", str(tmp_path))  # (the server's folder and Gradio's, for the server alone)
    monkeypatch.setenv("OMP_NUM_THREADS", os.environ.get("OMP_NUM_THREADS", "1"))
    monkeypatch.delenv("GRADIO_TEMP_DIR", raising=False)
    port = free_port()
    command = [sys.executable, "-m", "facekit.cli", "serve", "--port", str(port), "--sfm", str(sfm)]
    status, said, shown = sigterm_in_a_terminal(
        command, lambda: answers(f"http://127.0.0.1:{port}/"), "facekit serve", hang_up=True, stop_timeout=60
    )
    assert b"Ctrl+C stops the server" in shown  # (it served in the terminal)
    assert status == 0 and not any("Traceback" in line for line in said), said
    assert said[-1] == (
        "serve stopped by SIGHUP: its folder of the visitors' uploads and results is deleted; what was "
        "downloaded from the page stays where it was saved"
    )
    assert list(tmp_path.glob("facekit-serve-*")) == []


def test_the_photo_events_share_one_concurrency_limit(engine: Engine) -> None:
    """Before: an upload and a face choice each had their own limit, so --concurrency 1 ran two photos at once."""
    from facekit_serve.web import CONCURRENCY_GROUP, build_app

    demo = build_app(engine, [], 20.0)
    events = {fn.api_name: fn for fn in demo.fns.values() if fn.api_name in ("analyze", "choose_face")}
    assert set(events) == {"analyze", "choose_face"}
    assert {fn.concurrency_id for fn in events.values()} == {CONCURRENCY_GROUP}
    # The upload is the page's as it arrives: a handler outside the queue, on the same component as analyze.
    (received,) = [fn for fn in demo.fns.values() if fn.fn is not None and fn.fn.__name__ == "received"]
    assert not received.queue and [event for _, event in received.targets] == ["upload"]
    assert [block for block, _ in received.targets] == [block for block, _ in events["analyze"].targets]


def test_a_photo_sent_leaves_no_empty_file_in_gradios_folder(
    engine: Engine, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Before: Gradio's File made an empty temporary file in its folder for every photo it handed the page, which
    neither a page closing nor the cache sweep deleted (helper-89: 200 empty files after 200 requests, until the
    server stopped). The page's upload hands over the path alone, and is still Gradio's File to the page and API."""
    from facekit_serve.web import build_app
    from gradio.data_classes import FileData

    cache = tmp_path / "gradio"
    monkeypatch.setenv("GRADIO_TEMP_DIR", str(cache))
    demo = build_app(engine, [], 20.0)
    (upload,) = [block for block in demo.blocks.values() if getattr(block, "elem_id", None) == "upload"]
    assert upload.get_block_name() == "file" and upload.type == "filepath"
    sent = cache / "0123abcd" / "photo.jpg"  # where Gradio keeps an upload
    sent.parent.mkdir(parents=True)
    shutil.copyfile(FACE, sent)
    again = type(upload)(**{**upload.constructor_args, "render": False})  # as Gradio makes it anew on an update
    for component in (upload, upload, again, again):
        assert component.preprocess(FileData(path=str(sent), orig_name="photo.jpg")) == str(sent)
    assert sorted(path for path in cache.rglob("*") if path.is_file()) == [sent]


def test_the_status_names_this_visitors_file_not_the_cached_uploaders(engine: Engine, tmp_path: Path) -> None:
    """Before: a cache hit showed the first uploader's file name (and time) to whoever sent the same bytes, and the
    comparison picture carried it too."""
    from facekit_serve.web import status_markdown

    plain = example_photos(tmp_path / "examples")[0]
    first = engine.analyze(plain, "alice-holiday.jpg")
    result = engine.result(first.sha256, 0)
    again = engine.analyze(plain, "bob.jpg")
    assert again is first  # the cache, by content
    line = status_markdown(again, result, engine.labels, "bob.jpg", 0.01)
    assert "`bob.jpg`" in line and "alice" not in line and "Done in 0.0 s" in line


def test_a_crashed_servers_folder_is_removed_by_the_next_server(tmp_path: Path) -> None:
    """Before: a server killed by kill -9 or out of memory left its visitors' uploads in /tmp for good; each server
    now holds a lock in its folder, and the next one removes folders nobody holds."""
    import os

    from facekit_serve.cli import SERVE_LOCK, UNLOCKED_AGE_S, remove_abandoned

    from facekit.locks import exclusive

    running, crashed, older, old = (
        tmp_path / f"facekit-serve-{n}" for n in ("run_0001", "crash_01", "older_01", "old_0001")
    )
    for folder in (running, crashed, older, old):
        (folder / "gradio" / "0a1b").mkdir(parents=True)
        (folder / "gradio" / "0a1b" / "upload.jpg").write_bytes(b"a visitor's photo")
    (crashed / SERVE_LOCK).write_text("123\n")  # its server is gone: nobody holds the lock
    os.utime(old, (0, os.path.getmtime(old) - UNLOCKED_AGE_S - 60))  # no lock file (an older facekit), a day old
    with exclusive(running, "facekit serve", SERVE_LOCK):
        assert remove_abandoned(tmp_path) == 2
        assert running.is_dir() and older.is_dir() and not crashed.exists() and not old.exists()


def test_a_second_stop_waits_for_the_servers_clean_up_and_a_kill_there_leaves_its_lock(
    default_handlers: None, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Before (helper-222): a second SIGTERM (a service manager's, ``timeout``'s) as a stopped server deleted its
    folder cut the deletion short, and the folder, its lock perhaps deleted first, stayed a day before the next
    server swept it. The stop now comes once the folder is gone; and the lock goes last, so what a kill -9 leaves
    there is the next server's to sweep."""
    from facekit_serve.cli import SERVE_LOCK, _stop_on_signals, remove_abandoned, remove_server_folder

    from facekit.errors import Terminated

    def server_folder(name: str) -> Path:
        folder = tmp_path / f"facekit-serve-{name}"
        for part in ("gradio/0a1b", "results/0a1b"):
            (folder / part).mkdir(parents=True)
            (folder / part / "photo.jpg").write_bytes(b"a visitor's photo")
        (folder / SERVE_LOCK).write_text("1\n")
        return folder

    rmtree = shutil.rmtree

    def stopped_again(path: Any, *args: Any, **kwargs: Any) -> None:
        os.kill(os.getpid(), signal.SIGTERM)  # the second SIGTERM, as the clean-up runs
        rmtree(path, *args, **kwargs)

    _stop_on_signals()  # (serve's handlers; default_handlers gives pytest's back)
    stopping = server_folder("stop_001")
    monkeypatch.setattr(shutil, "rmtree", stopped_again)
    with pytest.raises(Terminated):
        remove_server_folder(stopping)
    assert not stopping.exists()

    class Killed(BaseException):
        pass

    def killed(path: Any, *args: Any, **kwargs: Any) -> None:
        rmtree(path, *args, **kwargs)
        raise Killed  # kill -9 after the first entry

    killing = server_folder("kill_001")
    monkeypatch.setattr(shutil, "rmtree", killed)
    with pytest.raises(Killed):
        remove_server_folder(killing)
    monkeypatch.setattr(shutil, "rmtree", rmtree)
    assert (killing / SERVE_LOCK).is_file()
    assert remove_abandoned(tmp_path) == 1 and not killing.exists()


@pytest.mark.parametrize("looks", [1, 2, 3, 99])  # (99: never; from the 4th on this sweep holds the folder's lock)
def test_a_folder_another_sweep_removes_meanwhile_is_passed_over(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, looks: int
) -> None:
    """Before: a server folder another server's sweep removed between this sweep's is_dir() and its stat() was a
    FileNotFoundError, and the server starting stopped on it. Here the other sweep removes it after this one's
    first, second or third look at it (before it holds the folder's lock, which the other sweep takes to remove it):
    passed over whenever that is, and not made again by the lock."""
    import os

    from facekit_serve.cli import SERVE_LOCK, remove_abandoned

    crashed = tmp_path / "facekit-serve-crash_01"
    (crashed / "gradio").mkdir(parents=True)
    (crashed / SERVE_LOCK).write_text("123\n")
    real_stat, seen = os.stat, []

    def other_sweep(path: Any, *args: Any, **kwargs: Any) -> os.stat_result:
        looked = real_stat(path, *args, **kwargs)
        if os.fspath(path) == str(crashed) and len(seen) < looks:
            seen.append(path)
            if len(seen) == looks:
                shutil.rmtree(crashed)
        return looked

    monkeypatch.setattr(os, "stat", other_sweep)
    removed = remove_abandoned(tmp_path)
    assert list(tmp_path.iterdir()) == []
    assert removed == (0 if len(seen) == looks else 1), (removed, seen)


def test_a_users_folder_named_like_a_servers_is_never_removed(tmp_path: Path) -> None:
    """Before: any folder in TMPDIR whose name began with facekit-serve- and that was a day old was deleted with its
    contents (a user's backup, notes)."""
    import os

    from facekit_serve.cli import SERVE_LOCK, UNLOCKED_AGE_S, remove_abandoned

    backup = tmp_path / "facekit-serve-backup"  # not mkdtemp's name
    notes = tmp_path / "facekit-serve-abcd1234"  # mkdtemp's name, but something a server never writes inside
    for folder in (backup, notes):
        (folder / "results").mkdir(parents=True)
        (folder / "my-notes.txt").write_text("mine")
        (folder / SERVE_LOCK).write_text("1\n")
        os.utime(folder, (0, os.path.getmtime(folder) - UNLOCKED_AGE_S - 60))
    assert remove_abandoned(tmp_path) == 0
    assert (backup / "my-notes.txt").is_file() and (notes / "my-notes.txt").is_file()


def test_the_page_offers_no_share_button_no_nan_and_says_how_many_faces_it_offers(engine: Engine) -> None:
    """Before: every result image had Gradio's Share button (only an error off Hugging Face Spaces, on a page that
    promises the photo stays here), a grey photo's table showed "nan", and "face 8 (of 12 found)" read as the
    eighth of twelve."""
    from types import SimpleNamespace

    import gradio as gr
    from facekit_serve.web import attributes_markdown, build_app, face_choices

    demo = build_app(engine, [], 20.0)
    images = [block for block in demo.blocks.values() if isinstance(block, gr.Image)]
    assert len(images) >= 7 and all("share" not in (image.buttons or ["share"]) for image in images)
    assert face_choices(8, 12)[-1] == "face 8 (the 8 largest of 12 found)" and face_choices(2, 2)[-1] == "face 2"
    ratios = {name: 0.5 for name in __import__("facekit.apps.attributes", fromlist=["RATIOS"]).RATIOS}
    grey = {"ita_degrees": float("nan"), "ita_category": "undefined", "L": 60.0, "b": float("nan"), **ratios}
    result = SimpleNamespace(attributes=grey, photo_attributes={**grey, "L": 55.0}, attributes_note="a grey photo")
    table = attributes_markdown(result)
    assert "nan" not in table and "| ITA (degrees) | - | - |" in table and "| L* | 60.0 | 55.0 |" in table


def test_two_avatars_unzipped_into_one_folder_keep_their_own_files(data_root: Path, tmp_path: Path) -> None:
    """Before: every ``NAME-avatar-obj.zip`` held avatar.obj, avatar.mtl and avatar.png, so a second avatar unzipped
    beside the first replaced its files (and the first OBJ wore the second's texture). Before (helper-130), a photo
    named with a space gave ``mtllib IMG 1-avatar.mtl`` and ``map_Kd IMG 1-avatar.png``, which trimesh reads but
    strict readers (MeshLab, tinyobjloader) take for the file "IMG": the files inside are now named as OBJ files can
    name them (``IMG_1``, ``#`` too). Before (helper-155), those plain names were the whole of it, so the zips of
    ``IMG 1.jpg`` and ``IMG_1.jpg``, or of two photos both sent as ``IMG_1.jpg``, held the same ``IMG_1-avatar.*``
    and unzipped onto each other: each zip now holds one folder named as the zip, whose name carries the start of
    the upload's sha256, and every avatar unzipped into one folder is whole."""
    import zipfile

    import trimesh

    from tests.helpers import strict_obj_files

    sfm = data_root / "sfm" / "sfm_shape_3448.bin"
    if not sfm.is_file():
        pytest.skip(f"the Surrey model is not at {sfm}")
    engine = Engine.load(tmp_path / "results", sfm=str(sfm), compare=False)
    try:
        if engine.avatar_note:
            pytest.skip(engine.avatar_note)
        plain, warm, two = example_photos(tmp_path / "examples")
        unzipped, bundles = tmp_path / "unzipped", []
        uploads = [(plain, "IMG 1.jpg", "IMG_1"), (warm, "IMG_1.jpg", "IMG_1"), (two, "IMG_1.jpg", "IMG_1")]
        uploads.append((warm, "IMG #2.jpg", "IMG__2"))  # the same bytes as another, under another name
        for photo, name, inside in uploads:
            analysis = engine.analyze(photo, name)
            result = engine.result(analysis.sha256, 0, name=name)
            bundles.append((result.avatar_files[-1], analysis, name, inside))
            with zipfile.ZipFile(result.avatar_files[-1]) as archive:
                archive.extractall(unzipped)
            # The content-named bundle the cache keeps is as it was (another visitor's name is their own).
            with zipfile.ZipFile(result.avatar_files[-1].parents[1] / "avatar-obj.zip") as archive:
                assert "avatar.obj" in archive.namelist()
            # The GLB's material, mesh and node are named as its file (before: "avatar", whatever the photo), and
            # the GLB read back is the one made, as trimesh (checking its chunks' lengths) reads it.
            assert result.avatar_glb is not None
            gltf = glb_json(result.avatar_glb.read_bytes())
            named = [gltf[key][0]["name"] for key in ("materials", "meshes", "nodes")]
            assert named == [result.avatar_glb.stem] * 3, named
            made = result.avatar_glb.parents[1] / "avatar.glb"
            assert [glb_json(made.read_bytes())[key][0]["name"] for key in ("materials", "meshes", "nodes")] == [
                "avatar"
            ] * 3
            ours, cached = trimesh.load(result.avatar_glb, force="mesh"), trimesh.load(made, force="mesh")
            assert np.array_equal(ours.vertices, cached.vertices) and np.array_equal(ours.faces, cached.faces)
        textures = []
        for bundle, *_ in bundles:  # every avatar unzipped whole: its OBJ, material and texture are its zip's
            with zipfile.ZipFile(bundle) as archive:
                (obj,) = (member for member in archive.namelist() if member.endswith(".obj"))
                library, texture = strict_obj_files(unzipped / obj)
                for path in (unzipped / obj, library, texture):
                    member = path.relative_to(unzipped).as_posix()
                    assert path.read_bytes() == archive.read(member), f"{bundle.name}: {member} is another's"
            textures.append(np.asarray(Image.open(texture).convert("RGB")))
            mesh = trimesh.load(unzipped / obj, force="mesh")
            image = mesh.visual.material.image
            assert image is not None, bundle.name
            assert np.array_equal(np.asarray(image.convert("RGB")), textures[-1]), bundle.name
        assert not any(np.array_equal(textures[a], textures[b]) for a, b in ((0, 1), (0, 2), (1, 2)))  # 3 photos
        for bundle, analysis, name, inside in bundles:  # the zip as the photo and which photo; a folder as the zip
            face = "face1-" if len(analysis.faces) > 1 else ""  # (the two faces' photo)
            folder = f"{download_stem(name)}-{face}avatar-obj-{analysis.sha256[:BUNDLE_TAG_DIGITS]}"
            assert bundle.name == f"{folder}.zip"
            files = {f"{inside}-{face}avatar{end}" for end in (".mtl", ".obj", ".png", "-LICENCE.txt")}
            with zipfile.ZipFile(bundle) as archive:
                assert sorted(archive.namelist()) == sorted(f"{folder}/{file}" for file in files)
        assert len(list(unzipped.iterdir())) == len(uploads)  # four folders side by side
    finally:
        engine.close()
