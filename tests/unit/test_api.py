"""The public Normalizer API as face-tools users expect it (insightface/deepface habits): top-level import, a path,
PIL image or array (RGB, or BGR with a flag), every face on request, clear errors for what it cannot read."""

from __future__ import annotations

import dataclasses
import json
import os
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

import facekit
from facekit.errors import FacekitError
from facekit.normalize import default_model_path
from facekit.testing import real_face, subject_beside_a_larger_face, two_faces


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


def test_the_fields_are_in_the_frames_the_docstring_gives(normalizer: facekit.Normalizer) -> None:
    """NormalizedFace's docstring (helper-172: it gave no coordinate order, dtype or point order): landmarks (K, 2)
    float32 (x, y) in the normalized image in iBUG-68's order, source landmarks (x, y) in the photo inside the box."""
    photo = real_face().image
    face = normalizer.normalize(photo)
    size = normalizer.output_size
    assert face.image.shape == (size, size, 3) and face.image.dtype == np.uint8
    points = face.landmarks
    assert points.shape == (68, 2) and points.dtype == np.float32
    assert ((points >= 0) & (points < size)).all()
    assert points[36, 0] < points[45, 0] and points[0, 0] < points[16, 0]  # x first: eyes and jaw left to right
    assert points[8, 1] > points[30, 1] > points[27, 1]  # y down: chin below the nose tip below the bridge
    x0, y0, x1, y1 = face.box
    inside = face.source_landmarks[17:]  # (the brows, eyes, nose and mouth: the jaw may leave dlib's box)
    assert ((inside[:, 0] > x0) & (inside[:, 0] < x1) & (inside[:, 1] > y0) & (inside[:, 1] < y1)).all()


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
    with pytest.raises(FacekitError, match=r"found no face in this 80 x 80 photo .*all_faces=True"):
        normalizer.normalize(np.full((80, 80, 3), 128, np.uint8))
    # Several photos at once (a list, or a batch array) are named as such, not as an odd shape (helper-63).
    face = real_face().image
    import torch

    tensors = [torch.tensor(face), torch.tensor(np.stack([face, face]))]  # (helper-233: said as a shape)
    for several in (
        [face, face],
        (face, face),
        [tmp_path / "a.jpg", tmp_path / "b.jpg"],
        np.stack([face, face]),
        [tensors[0], tensors[0]],
        tensors[1],
    ):
        with pytest.raises(FacekitError, match=r"one photo per call, got 2 .*normalize_many"):
            normalizer.normalize(several)


def test_no_face_says_why_as_a_batch_row_does(normalizer: facekit.Normalizer) -> None:
    """Before: NoFaceFound gave the photo's size alone, while a batch's no_face row (normalize_many, the CLI) said a
    20 x 20 photo was too small to show a face the detector finds. Now the error says the row's reason."""
    from facekit.errors import NO_FACE, NoFaceFound

    said = {(20, 20, 3): "too small", (30, 400, 3): "too thin", (80, 80, 3): "the detector finds faces about"}
    for shape, words in said.items():
        photo = np.full(shape, 128, np.uint8)
        (outcome,) = normalizer.normalize_many([photo], ["grey"])
        why = (outcome.reason or "").removeprefix(NO_FACE)
        assert outcome.status == "no_face" and words in why, outcome
        with pytest.raises(NoFaceFound) as raised:
            normalizer.normalize(photo)
        assert why in str(raised.value) and f"{shape[1]} x {shape[0]}" in str(raised.value), str(raised.value)


def test_no_face_and_the_outcome_type_are_public_names(normalizer: facekit.Normalizer) -> None:
    """Before (helper-172): no face was a plain FacekitError, told from an unreadable photo or a refused option only
    by its words, and the types normalize_many returns and normalize raises (Outcome, DetectorFailed) were not among
    facekit's names: a user annotated or caught them through facekit.normalize and facekit.errors."""
    blank = np.full((80, 80, 3), 128, np.uint8)
    with pytest.raises(facekit.NoFaceFound, match="found no face"):
        normalizer.normalize(blank)
    (outcome,) = normalizer.normalize_many([blank], ["blank"])
    assert isinstance(outcome, facekit.Outcome) and outcome.status == "no_face" and outcome.face is None
    assert issubclass(facekit.DetectorFailed, FacekitError) and issubclass(facekit.NoFaceFound, FacekitError)
    assert {"NoFaceFound", "DetectorFailed", "Outcome"} <= set(facekit.__all__)


def test_a_batch_of_opencv_arrays_is_read_as_normalize_reads_one(
    normalizer: facekit.Normalizer, tmp_path: Path
) -> None:
    """Before (helper-172): normalize took bgr=True for OpenCV's arrays but normalize_many had no such option, so a
    batch of cv2 frames was read as RGB (another, wrong face) unless the caller swapped every frame itself. A file
    or PIL image among bgr arrays is refused, as normalize refuses bgr for one: bgr would be ignored for it."""
    rgb = real_face().image
    bgr = np.ascontiguousarray(rgb[..., ::-1])
    (outcome,) = normalizer.normalize_many([bgr], ["frame"], bgr=True)
    assert outcome.face is not None
    assert np.array_equal(outcome.face.image, normalizer.normalize(bgr, bgr=True).image)
    (as_rgb,) = normalizer.normalize_many([bgr], ["frame"])  # without it: read as RGB
    assert as_rgb.face is not None and not np.array_equal(as_rgb.face.image, outcome.face.image)
    path = tmp_path / "face.png"
    Image.fromarray(rgb).save(path)
    with pytest.raises(FacekitError, match=r"normalize_many: file: bgr=True is for arrays .* give arrays only"):
        normalizer.normalize_many([bgr, path], ["frame", "file"], bgr=True)


def test_a_file_it_cannot_read_costs_that_photo_in_a_batch(normalizer: facekit.Normalizer, tmp_path: Path) -> None:
    """Before (helper-108): one missing or damaged file among normalize_many's paths raised, and the batch's other
    photos were lost with it; the command line's folder run already gave such a file its own row. A form it cannot
    take (an array of the wrong shape, a file open in text mode) is still the caller's error."""
    damaged = tmp_path / "damaged.jpg"
    damaged.write_bytes(b"\xff\xd8\xff\xe0 not a photo")
    face = real_face().image
    outcomes = normalizer.normalize_many(
        [tmp_path / "missing.jpg", face, damaged.read_bytes(), damaged], ["missing", "face", "bytes", "damaged"]
    )
    assert [o.status for o in outcomes] == ["unreadable", "ok", "unreadable", "unreadable"]
    assert "missing.jpg: unreadable" in outcomes[0].reason and outcomes[2].reason and outcomes[3].reason
    assert outcomes[1].face is not None and outcomes[1].reason == ""
    with pytest.raises(FacekitError, match=r"normalize_many: wrong: .*shape"):
        normalizer.normalize_many([face, np.zeros((4, 4, 2), np.uint8)], ["face", "wrong"])
    damaged.write_text("text")
    with open(damaged) as text, pytest.raises(FacekitError, match=r"normalize_many: text: .*open it with 'rb'"):
        normalizer.normalize_many([face, text], ["face", "text"])


def test_none_or_a_non_photo_among_a_batch_says_what_it_is(normalizer: facekit.Normalizer, tmp_path: Path) -> None:
    """Before: None among normalize_many's photos was an `unreadable` outcome with an empty reason, and a number was
    "expected a uint8 image (0-255), got dtype int64" as if it were pixels. A str that is no file is that file's
    unreadable row; a dict, int, float or flat list is the caller's mistake, said as what it is."""
    from facekit.apps.attributes import FaceAttributes

    face = real_face().image
    outcomes = normalizer.normalize_many([None, face, str(tmp_path / "nofile.jpg")], ["none", "face", "nofile"])
    assert [o.status for o in outcomes] == ["unreadable", "ok", "unreadable"]
    assert outcomes[0].reason == "no photo: None was given in its place"
    assert "nofile.jpg: unreadable" in outcomes[2].reason
    for odd, kind in ((5, "int"), (3.5, "float"), (True, "bool"), ({"a": 1}, "dict"), ([1, 2], "list")):
        with pytest.raises(FacekitError, match=rf"^normalize_many: odd: expected a photo .*, got {kind}$"):
            normalizer.normalize_many([face, odd], ["face", "odd"])
    # measure_faces keeps why a photo could not be read, and says None's too.
    measured = FaceAttributes(normalizer).measure_faces([tmp_path / "missing.jpg", None], ["missing", "none"])
    assert "missing.jpg: unreadable" in measured[0].reason and measured[1].reason == outcomes[0].reason


def test_a_photo_object_it_cannot_read_costs_that_photo_in_a_batch(
    normalizer: facekit.Normalizer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Before (stop 52's notes): a closed or damaged PIL image, an array over the megapixel limit or without pixels,
    or a closed file among normalize_many's photos raised, and the batch's other photos were lost with it; like a
    damaged file, each is now that photo's own `unreadable` outcome (facekit.errors.PhotoUnreadable)."""
    import io

    face = real_face().image
    buffer = io.BytesIO()
    Image.fromarray(face).save(buffer, "PNG")
    with Image.open(io.BytesIO(buffer.getvalue())) as opened:
        closed_pil = opened
    cut = Image.open(io.BytesIO(buffer.getvalue()[: len(buffer.getvalue()) // 2]))  # its data ends early
    closed_file = io.BytesIO(buffer.getvalue())
    closed_file.close()

    class Trickle(io.RawIOBase):  # a raw stream: at most 1,000 bytes a read, as a pipe or socket gives them
        def __init__(self, data: bytes | None) -> None:
            self.data, self.at = data, 0

        def readable(self) -> bool:
            return True

        def readinto(self, into: Any) -> int:
            size = min(len(into), 1000)
            if self.data is None:  # endless, as /dev/zero
                into[:size] = bytes(size)
                return size
            chunk = self.data[self.at : self.at + size]
            into[: len(chunk)] = chunk
            self.at += len(chunk)
            return len(chunk)

    monkeypatch.setenv("FACEKIT_MAX_MEGAPIXELS", "0.2")
    photos = [closed_pil, cut, np.zeros((600, 600, 3), np.uint8), np.zeros((0, 5, 3), np.uint8), closed_file]
    photos += [Trickle(None), Trickle(buffer.getvalue()), face]
    names = ["closed", "cut", "huge", "empty", "closed file", "endless", "trickle", "face"]
    outcomes = normalizer.normalize_many(photos, names)
    assert [o.status for o in outcomes] == ["unreadable"] * 6 + ["ok", "ok"]
    assert "PIL image given cannot be read" in outcomes[0].reason and "PIL image" in outcomes[1].reason
    assert "too large" in outcomes[2].reason and "empty image" in outcomes[3].reason
    assert "closed file" in outcomes[4].reason
    assert "too large: over 18 MB" in outcomes[5].reason  # (before: read until memory ran out)
    assert np.array_equal(outcomes[6].face.image, outcomes[7].face.image)  # read to its end, not its first read
    with pytest.raises(FacekitError, match="too large"):  # one photo alone is still an error
        normalizer.normalize(photos[2])


def test_every_form_of_one_photo_is_read_the_same_way(
    normalizer: facekit.Normalizer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A PIL image, an array, the file's bytes or an open file are read as the file is (before, a PIL image kept
    its EXIF rotation, a 16-bit one was clipped to white, RGBA arrays and PIL images dropped alpha where a file's is
    composited over grey, and arrays escaped the megapixel limit)."""
    import io

    rgb = real_face().image.copy()
    sideways = Image.fromarray(rgb).rotate(90, expand=True)  # a phone's photo: stored turned, EXIF says how to show
    exif = sideways.getexif()
    exif[0x0112] = 6
    jpeg = io.BytesIO()
    sideways.save(jpeg, "JPEG", exif=exif, quality=95)
    from_file = normalizer.normalize(jpeg.getvalue()).image
    # Turned upright by hand (the tag travels along with a derived image, whose format is None): not turned again.
    by_hand = Image.open(io.BytesIO(jpeg.getvalue())).rotate(-90, expand=True)
    assert by_hand.getexif().get(0x0112) == 6 and by_hand.format is None
    assert np.abs(normalizer.normalize(by_hand).image.astype(int) - from_file.astype(int)).mean() < 2
    assert np.array_equal(normalizer.normalize(Image.open(io.BytesIO(jpeg.getvalue()))).image, from_file)
    assert np.array_equal(normalizer.normalize(io.BytesIO(jpeg.getvalue())).image, from_file)
    grey = np.asarray(Image.fromarray(rgb).convert("L"))
    deep = Image.fromarray(grey.astype(np.uint16) * 257)  # 16-bit grey
    png = tmp_path / "deep.png"
    deep.save(png)
    assert np.array_equal(normalizer.normalize(deep).image, normalizer.normalize(png).image)
    rgba = np.dstack([rgb, np.full(rgb.shape[:2], 255, np.uint8)])
    rgba[:, : rgb.shape[1] // 4, 3] = 0  # the left quarter transparent
    Image.fromarray(rgba).save(tmp_path / "alpha.png")
    from_png = normalizer.normalize(tmp_path / "alpha.png").image
    assert np.array_equal(normalizer.normalize(rgba).image, from_png)
    assert np.array_equal(normalizer.normalize(Image.fromarray(rgba)).image, from_png)
    monkeypatch.setenv("FACEKIT_MAX_MEGAPIXELS", str(rgb.shape[0] * rgb.shape[1] / 2e6))  # half this photo
    for given in (rgb, Image.fromarray(rgb), tmp_path / "alpha.png"):
        with pytest.raises(FacekitError, match="too large"):
            normalizer.normalize(given)


def test_options_that_would_be_ignored_or_misread_are_errors(normalizer: facekit.Normalizer) -> None:
    """Before: max_faces/near without all_faces were ignored, max_faces=-1 gave [], all_faces='no' a list, bgr on a
    file was ignored, and an empty array, a bad device or detail=0 ended in ZeroDivisionError, AssertionError or
    AttributeError tracebacks."""
    rgb = real_face().image
    for options, message in (
        ({"max_faces": 1}, "max_faces pick among every face found: pass all_faces=True"),
        ({"near": (0, 0, 9, 9)}, "near pick among every face found"),
        ({"all_faces": True, "max_faces": -1}, "max_faces must be a whole number >= 1"),
        ({"all_faces": True, "max_faces": 1.5}, "max_faces must be a whole number"),
        ({"all_faces": "no"}, "all_faces must be True or False"),
        ({"all_faces": True, "near": (0, 0, 1)}, "near must be a box"),
    ):
        with pytest.raises(FacekitError, match=message):
            normalizer.normalize(rgb, **options)
    import io

    encoded = io.BytesIO()
    Image.fromarray(rgb).save(encoded, "PNG")
    # A file's bytes and an io.BytesIO too, as a path is (before: bgr=True was ignored on them without a word).
    for given in (Image.fromarray(rgb), encoded.getvalue(), bytearray(encoded.getvalue()), encoded):
        with pytest.raises(FacekitError, match="bgr=True is for arrays"):
            normalizer.normalize(given, bgr=True)
    for empty in (np.zeros((0, 0, 3), np.uint8), np.zeros((0, 10, 3), np.uint8)):
        with pytest.raises(FacekitError, match="empty image"):
            normalizer.normalize(empty)
    with pytest.raises(FacekitError, match="got None"):
        normalizer.normalize(None)
    with pytest.raises(FacekitError, match=r"in 0\.\.255: x\.round\(\)\.astype\(np\.uint8\)"):
        normalizer.normalize(rgb.astype(np.float32))
    with pytest.raises(FacekitError, match="4 images but 3 names"):
        normalizer.normalize_many([rgb] * 4, ["a", "b", "c"])
    with pytest.raises(FacekitError, match="batch_size must be"):
        normalizer.normalize_many([rgb], ["a"], batch_size=0)
    (outcome,) = normalizer.normalize_many([Image.fromarray(rgb)], ["pil"])  # read as normalize reads it
    assert outcome.status == "ok"
    import torch

    devices = [("gpu", "use cpu, cuda, cuda:N, mps, xpu or auto"), (None, "device: use")]
    devices += [] if torch.cuda.is_available() else [("cuda:0", "no GPU")]
    devices += [] if torch.backends.mps.is_available() else [("mps", "no mps device is visible here")]
    for device, message in devices:
        with pytest.raises(FacekitError, match=message):
            facekit.Normalizer.from_checkpoint(device=device)
    off = facekit.Normalizer.from_checkpoint(detail=0)  # a number is the strength: 0 = the decoder's face alone
    assert not off.detail.active
    # numpy's numbers too, as size takes them (before: np.float32(0.0), e.g. from a sweep, was "use ... a strength")
    assert facekit.Normalizer.from_checkpoint(detail=np.float32(0.5)).detail.strength == 0.5
    for detail, message in ((False, "a strength"), ({"bogus": 1}, "unknown setting"), (-1, "strength must be in")):
        with pytest.raises(FacekitError, match=message):
            facekit.Normalizer.from_checkpoint(detail=detail)
    assert facekit.Normalizer.from_checkpoint("sface").meta["source"].endswith("sface-model.safetensors")
    with pytest.raises(FacekitError, match="expected a model file's path"):
        facekit.Normalizer.from_checkpoint(3)  # type: ignore[arg-type]


class CountedDetector:
    """``inner`` noting the most calls inside it at once (each held 20 ms, wide enough for another thread to come in,
    were it let); ``thread_safe`` as it says."""

    def __init__(self, inner: Any, thread_safe: bool = False) -> None:
        import threading

        self.inner, self.card, self.thread_safe = inner, inner.card, thread_safe
        self.inside, self.most, self.lock = 0, 0, threading.Lock()

    def detect_array(self, image: np.ndarray) -> list:
        import time

        with self.lock:
            self.inside += 1
            self.most = max(self.most, self.inside)
        time.sleep(0.02)
        try:
            return self.inner.detect_array(image)
        finally:
            with self.lock:
                self.inside -= 1


def test_threads_sharing_one_normalizer_take_turns(normalizer: facekit.Normalizer) -> None:
    """dlib's detector is not safe to share: two threads at once sometimes got another box (about 1 call in 100-300,
    a face up to 39 levels off, no error). Calls on one Normalizer now take turns: a detector that notes how many
    calls are inside it at once never sees two, and every thread gets the face one thread gets."""
    import threading

    watched = CountedDetector(normalizer.detector)
    shared = facekit.Normalizer.from_checkpoint(detector=watched)
    photos = [real_face().image, two_faces()[0]]
    expected = [shared.normalize(photo).box for photo in photos]
    got: list[bool] = []

    def work() -> None:
        for index in range(6):
            if index % 3 == 2:  # every face: its own path through the detector, locked as well
                got.append(shared.normalize(photos[1], all_faces=True)[0].box == expected[1])
            else:
                got.append(shared.normalize(photos[index % 2]).box == expected[index % 2])

    threads = [threading.Thread(target=work) for _ in range(3)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert watched.most == 1 and len(got) == 18 and all(got)
    # A copy (or a pickled and unpickled one) has its own lock, made on first use.
    import copy

    twin = copy.copy(shared)
    assert "_lock" not in twin.__dict__ and twin.normalize(photos[0]).box == expected[0]


def test_a_thread_safe_detector_gets_a_batchs_photos_at_once(
    normalizer: facekit.Normalizer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A detector that says it is ``thread_safe`` (dlib's) is given as many of a batch's photos at once as torch has
    threads (before: one at a time, while a second core idled through half the time of `facekit normalize`), and the
    outcomes keep the photos' order; any other detector still gets one photo at a time."""
    import torch

    monkeypatch.setattr(torch, "get_num_threads", lambda: 3)
    faces = [real_face().image, two_faces()[0], np.full((64, 64, 3), 128, np.uint8)] * 2
    names = [f"photo-{index}" for index in range(len(faces))]
    expected = [(o.status, o.face and o.face.box) for o in normalizer.normalize_many(faces, names)]
    assert [status for status, _ in expected] == ["ok", "ok", "no_face"] * 2
    # Every outcome but ok says why (before: a no_face outcome's reason was "", each command wrote its own text).
    assert [o.reason for o in normalizer.normalize_many(faces[:3], names[:3])] == [
        "",
        "",
        "no face found (the detector finds faces about 32 pixels wide or more in a photo this size)",
    ]
    for thread_safe, most in ((True, 3), (False, 1)):
        counted = CountedDetector(normalizer.detector, thread_safe)
        outcomes = facekit.Normalizer.from_checkpoint(detector=counted).normalize_many(faces, names)
        assert counted.most == most and [o.name for o in outcomes] == names
        assert [(o.status, o.face and o.face.box) for o in outcomes] == expected
    from facekit.normalize import MAX_DETECTION_THREADS, detection_threads

    monkeypatch.setattr(torch, "get_num_threads", lambda: 64)  # a large server: no more threads than that
    assert detection_threads(CountedDetector(normalizer.detector, True)) == MAX_DETECTION_THREADS == 8


def test_a_photo_too_small_or_too_thin_for_a_face_is_told_so_in_every_commands_row(
    normalizer: facekit.Normalizer, tmp_path: Path
) -> None:
    """Before: a 20 x 20 photo's row was "no face found" in normalize, adjust, avatar and explore, where ``facekit
    serve`` said it was too small. The reason is the core's now: by the detector's own smallest face (dlib's HOG,
    upsampled once: 32 px, found in a face cropped to 32 px), scaled to the photo over 2,048 px as it is searched
    on a 2,048 px copy; a detector that does not say keeps "no face found"."""
    from facekit.apps.adjust import ADJUST_OUTPUTS, FaceAdjuster, adjust_files
    from facekit.batch import plan_folder
    from facekit.normalize import no_face_reason
    from tests.helpers import run_cli

    assert normalizer.detector.smallest_face == 32
    box = [round(v) for v in normalizer.normalize(real_face().image).box]
    tight = Image.fromarray(real_face().image).crop(box).resize((32, 32), Image.Resampling.LANCZOS)
    assert normalizer.normalize(np.asarray(tight), all_faces=True)  # the figure is one the detector holds
    grey = {(20, 20): "only 20 x 20 pixels, too small", (3000, 20): "3000 x 20 pixels, too thin"}
    reasons = [
        o.reason for o in normalizer.normalize_many([np.full((h, w, 3), 128, np.uint8) for w, h in grey], ["a", "b"])
    ]
    assert reasons == [
        "no face found: the photo is only 20 x 20 pixels, too small to show a face the detector finds (about 32 "
        "pixels wide at least)",
        "no face found: the photo is 3000 x 20 pixels, too thin to show a face the detector finds (about 47 pixels "
        "in a photo this size; it is only 20 pixels high)",
    ]
    assert no_face_reason(object(), 20, 20) == "no face found"
    folder = tmp_path / "in"
    folder.mkdir()
    Image.fromarray(np.full((20, 20, 3), 128, np.uint8)).save(folder / "tiny.png")
    plan = plan_folder([str(folder)], str(tmp_path / "adjusted"), 8, outputs=ADJUST_OUTPUTS)
    (row,) = adjust_files(plan, FaceAdjuster(normalizer))
    assert row.status == "no_face" and row.record["reason"] == f"{reasons[0]}; the photo is left unchanged"
    done = run_cli("normalize", str(folder / "tiny.png"), "-o", str(tmp_path / "out"))
    assert (
        done.returncode == 3 and "only 20 x 20 pixels, too small" in (tmp_path / "out" / "manifest.jsonl").read_text()
    )


def test_detection_threads_run_in_the_callers_torch_modes() -> None:
    """helper-106 (stop 51): grad and inference modes are per thread, so a torch detector declaring thread_safe,
    called under torch.no_grad() or torch.inference_mode(), recorded graphs on the detection threads (more memory,
    tensors that cannot be used in inference mode). The workers now take the caller's modes."""
    import torch

    from facekit.normalize import each_photo_in_turn

    def modes(_: int) -> tuple[bool, bool]:
        return torch.is_grad_enabled(), torch.is_inference_mode_enabled()

    for grad, inference in ((True, False), (False, False), (False, True)):
        with torch.inference_mode(inference), torch.set_grad_enabled(grad):
            seen = list(each_photo_in_turn(modes, list(range(6)), threads=3))
        assert set(seen) == {(grad, inference)}
    assert torch.is_grad_enabled() and not torch.is_inference_mode_enabled()


_FORKED: Any = None  # the normalizer a forked worker inherits


def _normalize_in_a_fork(index: int) -> Any:
    return _FORKED.normalize(real_face().image).image


@pytest.mark.skipif(not hasattr(os, "fork"), reason="fork is POSIX's")
def test_a_forked_worker_normalizes_after_torch_ran_in_the_parent(normalizer: facekit.Normalizer) -> None:
    """helper-108 (stop 51): a worker of a "fork" pool (Linux's default) started after the parent had run torch on
    two or more threads waited forever in its first parallel operation (torch's OpenMP pool does not survive a
    fork); facekit.normalize now puts a forked child on one torch thread. Its faces are the parent's."""
    import multiprocessing

    import torch

    global _FORKED
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        want = normalizer.normalize(real_face().image).image  # torch runs on two threads in this process first
        _FORKED = normalizer
        pool = multiprocessing.get_context("fork").Pool(2)
        try:
            faces = pool.map_async(_normalize_in_a_fork, range(4)).get(timeout=120)  # before: never
        finally:
            pool.terminate()
    finally:
        torch.set_num_threads(before)
        _FORKED = None
    for face in faces:
        assert np.abs(face.astype(int) - want.astype(int)).max() <= 1


@pytest.mark.skipif(not hasattr(os, "fork"), reason="fork is POSIX's")
def test_a_child_forked_while_another_thread_normalizes_is_not_stuck(normalizer: facekit.Normalizer) -> None:
    """Stop 52's notes: a child forked while another of the parent's threads was normalizing (holding the
    Normalizer's turn lock) waited forever on its first photo: the lock stayed held in the child, where that thread
    does not exist. A forked child now gets a new lock."""
    from facekit.normalize import turn_of
    from tests.helpers import forked_while_held

    want = normalizer.normalize(real_face().image).image

    def child() -> bool:
        return bool(np.abs(normalizer.normalize(real_face().image).image.astype(int) - want.astype(int)).max() <= 1)

    assert forked_while_held(turn_of(normalizer), child) == 0

    @dataclasses.dataclass
    class Judge:  # (a dataclass with equality is not hashable: the explore app's OwnPipelineJudge takes turns too)
        name: str = "judge"

    judge = Judge()

    def take_its_turn() -> bool:
        with turn_of(judge):
            return True

    assert forked_while_held(turn_of(judge), take_its_turn) == 0
    # The forking thread's own turn is kept: it leaves the lock as it would have in the parent.
    with turn_of(normalizer):
        pid = os.fork()
        if pid == 0:
            code = 1
            try:
                with turn_of(normalizer):  # re-entered, as a nested call would
                    code = 0
            finally:
                os._exit(code)
        assert os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1]) == 0


def test_the_central_face_on_request(normalizer: facekit.Normalizer) -> None:
    import copy

    from facekit.normalize import choose_face

    canvas, alone = subject_beside_a_larger_face()
    assert normalizer.face == "largest" and normalizer.normalize(canvas).box[0] > 600
    central = copy.copy(normalizer)
    central.face = "central"
    chosen = central.normalize(canvas)
    assert 350 < chosen.box[0] < 450 and chosen.faces_found == 2  # the subject, and the count of every face
    assert np.abs(chosen.image.astype(int) - central.normalize(alone).image.astype(int)).max() <= 2  # same face
    outcome = central.normalize_many([canvas], ["canvas"])[0]
    assert outcome.face is not None and outcome.face.box == chosen.box
    faces = normalizer.detector.detect_array(canvas)
    scaled = [type(f)(tuple(2 * v for v in f.box), f.score) for f in faces]  # the same photo twice as large
    assert choose_face(scaled, (520, 1800), "central") == choose_face(faces, canvas.shape, "central")
    with pytest.raises(FacekitError, match=r"unknown face choice 'middle'.*largest, central"):
        choose_face(faces, canvas.shape, "middle")
    with pytest.raises(FacekitError, match="unknown face choice"):
        facekit.Normalizer(normalizer.decoder, normalizer.encoder, normalizer.detector, normalizer.meta, face="middle")


def test_the_command_line_passes_the_face_choice(tmp_path: Path) -> None:
    """`facekit normalize --face central` normalizes the subject, and says so in the record; a bad choice is refused
    before anything is read."""
    import json

    from tests.helpers import run_cli

    canvas, _ = subject_beside_a_larger_face()
    Image.fromarray(canvas).save(tmp_path / "two.png")
    done = run_cli("normalize", str(tmp_path / "two.png"), "-o", str(tmp_path / "out"), "--face", "central")
    assert done.returncode == 0, done.stdout + done.stderr
    record = json.loads((tmp_path / "out" / "two.json").read_text())
    assert record["face"] == "central" and record["faces_found"] == 2 and 350 < record["box"][0] < 450
    refused = run_cli("normalize", str(tmp_path / "two.png"), "-o", str(tmp_path / "out2"), "--face", "middle")
    assert refused.returncode != 0 and "--face" in refused.stdout + refused.stderr
    assert not (tmp_path / "out2").exists()
    measured = run_cli("attributes", str(tmp_path / "two.png"), "-o", str(tmp_path / "attr"), "--face", "central")
    assert measured.returncode == 0, measured.stdout + measured.stderr
    assert json.loads((tmp_path / "attr" / "attributes.json").read_text())["face"] == "central"  # the measurer's rule


def test_the_apps_take_the_face_they_are_asked_for(shipped_normalizer: Any) -> None:
    """adjust, attributes and explore load their model with their params' face rule (their commands' --face): the
    subject beside a larger face is measured; a normalizer given with another rule, or adjust's all_faces with one
    face chosen, is refused."""
    from facekit.apps.adjust import FaceAdjuster
    from facekit.apps.explore import Explorer

    canvas, _ = subject_beside_a_larger_face()
    measurer = facekit.load_component("app", "attributes", face="central")
    subject = measurer.measure_faces([canvas], ["two"])[0]
    assert measurer.normalizer.face == "central" and 350 < subject.face.box[0] < 450, subject.face.box
    assert "attributes" in subject.extras
    largest = facekit.load_component("app", "attributes").measure_faces([canvas], ["two"])[0]
    assert largest.face.box[0] > 600  # the default is unchanged: the larger face
    explorer = facekit.load_component("app", "explore", face="central")
    assert explorer.load_normalizer(default_model_path()).face == "central"  # `explore compare` loads each model so
    assert facekit.load_component("app", "adjust", face="central").face == "central"
    assert FaceAdjuster(shipped_normalizer).face == shipped_normalizer.face == "largest"  # a normalizer's own rule
    with pytest.raises(FacekitError, match="asked of a normalizer that takes the largest face"):
        Explorer(shipped_normalizer, face="central")
    with pytest.raises(FacekitError, match=r"adjust params: all_faces: averages all found, and face central picks one"):
        facekit.load_component("app", "adjust", all_faces=True, face="central")
    with pytest.raises(FacekitError, match="unknown face choice"):
        FaceAdjuster(face="middle")


def _loaded_once_by_two_threads(app: Any, load: Any, patch: Any) -> list[Any]:
    """Two threads ask ``app`` for what ``load()`` gives, the second while the first is inside the loader ``patch``
    wraps (``patch(loader)`` installs it): what each got, after checking that the loader ran once, under the app's
    lock. The app's lock records who waits for it, so the second thread is known to be waiting without a sleep."""
    from facekit.normalize import turn_of
    from tests.helpers import TwoThreadsAtOnce

    at_once = TwoThreadsAtOnce()
    app.__dict__["_lock"] = at_once.lock
    patch(lambda real: at_once.building(real))
    got = at_once.run(load)
    assert at_once.calls == [True], at_once.calls  # loaded once, holding the app's lock
    assert got[0] is got[1] is not None
    assert turn_of(app) is at_once.lock
    return got


def test_threads_sharing_an_app_load_its_model_and_judge_once(
    shipped_normalizer: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Before: adjust's, attributes' and explore's normalizer, and explore's judge, were loaded on first use without
    a lock, so two threads' first calls at once each loaded one (twice the memory and seconds). Now the second waits
    for the first's. The lock is facekit's turn lock, which a forked child renews (the child of a fork while another
    thread loads is not stuck), and an app holding it still pickles."""
    import pickle

    from facekit.apps.adjust import FaceAdjuster
    from facekit.apps.attributes import FaceAttributes
    from facekit.apps.explore import Explorer
    from facekit.fidelity import OwnPipelineJudge
    from facekit.normalize import turn_of
    from tests.helpers import forked_while_held

    for kind in (FaceAdjuster, FaceAttributes, Explorer):
        app = kind()

        def patch(loader: Any, app: Any = app) -> None:
            app.load_normalizer = lambda path: loader(lambda: shipped_normalizer)

        _loaded_once_by_two_threads(app, lambda app=app: app.normalizer, patch)
    explorer, judge = Explorer(shipped_normalizer), object()

    def patch_build(loader: Any) -> None:
        monkeypatch.setattr(OwnPipelineJudge, "build", staticmethod(lambda *args, **kwargs: loader(lambda: judge)))

    _loaded_once_by_two_threads(explorer, lambda: explorer.judge_for(shipped_normalizer), patch_build)
    held = Explorer(model="sface", steps=3)
    turn_of(held)
    copy = pickle.loads(pickle.dumps(held))
    assert (copy.model, copy.steps, copy._normalizer) == ("sface", 3, None)
    if hasattr(os, "fork"):
        lazy = FaceAdjuster()
        lazy.load_normalizer = lambda path: shipped_normalizer  # type: ignore[method-assign]
        assert forked_while_held(turn_of(lazy), lambda: lazy.normalizer is shipped_normalizer) == 0


def test_the_apps_load_their_model_on_the_device_they_are_asked_for(shipped_normalizer: Any) -> None:
    """adjust, attributes and explore take ``device`` as Normalizer.from_checkpoint does (before: none; their model
    always loaded on the CPU): a GPU that is not there is refused when the app is built, before any model loads;
    ``cpu`` (and ``auto`` here) loads the decoder there; a normalizer given with another device is refused, one given
    with its own is taken."""
    import types

    import torch

    from facekit.apps.adjust import FaceAdjuster
    from facekit.apps.explore import Explorer

    if not torch.cuda.is_available():
        with pytest.raises(FacekitError, match="device cuda: no GPU is visible here"):
            FaceAdjuster(device="cuda")
        for app in ("adjust", "attributes", "explore"):  # the params take it too (the commands' way in)
            with pytest.raises(FacekitError, match="device cuda:0: no GPU is visible here"):
                facekit.load_component("app", app, device="cuda:0")
    with pytest.raises(FacekitError, match="device 'tpu'"):
        Explorer(device="tpu")
    adjuster = FaceAdjuster(device="cpu")
    assert adjuster.device == "cpu" and {p.device.type for p in adjuster.normalizer.decoder.parameters()} == {"cpu"}
    assert Explorer(device="auto").device == ("cuda" if torch.cuda.is_available() else "cpu")  # resolved
    assert FaceAdjuster(shipped_normalizer, device="cpu").normalizer is shipped_normalizer  # its own device: fine
    assert FaceAdjuster(shipped_normalizer).device is None  # none asked: the given normalizer's
    on_a_gpu = types.SimpleNamespace(device=torch.device("cuda", 0), face="largest")  # (a normalizer placed on one)
    with pytest.raises(FacekitError, match=r"device 'cpu' asked of a normalizer that runs on cuda:0"):
        FaceAdjuster(on_a_gpu, device="cpu")
    assert Explorer(types.SimpleNamespace(face="largest"), device="cpu").device == "cpu"  # no device: the CPU's


@pytest.mark.parametrize("scale", [0.5, 1.0, 3.0])
def test_the_central_rule_is_the_same_at_any_photo_size(scale: float) -> None:
    """Near the rule's tie (area minus twice the centre's squared offset): the same choice however large the photo."""
    from facekit.normalize import choose_face
    from facekit.types import FaceDetection

    def box(cx: float, cy: float, side: float) -> FaceDetection:
        half = side / 2
        return FaceDetection(tuple(scale * v for v in (cx - half, cy - half, cx + half, cy + half)), 1.0)

    shape = (round(250 * scale), round(250 * scale), 3)
    centred = box(125, 125, 100)  # score 10,000 at scale 1
    for offset, larger_wins in ((58.6, True), (58.9, False)):  # 16,900 - 2 offset^2 = 10,032 / 9,962
        faces = [box(125 + offset, 125, 130), centred]  # largest first, as detectors give them
        assert choose_face(faces, shape, "central") == (0 if larger_wins else 1), (scale, offset)
        assert choose_face(faces, shape, "largest") == 0


class _RaisesOnSmallPhotos:
    """A third-party detector with a bug: it raises on photos narrower than 190 px and works on the others, giving
    its boxes and scores as numpy float32 (what most detectors compute; records are JSON)."""

    def __init__(self, inner: Any) -> None:
        self.inner, self.card = inner, inner.card

    def detect_array(self, image: np.ndarray) -> list[Any]:
        from facekit.types import FaceDetection

        if image.shape[1] < 190:
            raise IndexError("index 3 is out of bounds for axis 0 with size 3")
        return [
            FaceDetection(np.asarray(f.box, np.float32), np.float32(f.score), f.landmarks, f.scheme)
            for f in self.inner.detect_array(image)
        ]


def test_a_detector_out_of_memory_still_raises_and_none_is_no_face() -> None:
    """A detector's error costs its photo only, except running out of memory (host, or a device's: torch's
    OutOfMemoryError, onnxruntime's message), which is not that photo's problem and would fail every photo after;
    a detector returning None found no face (was: a TypeError reported as the detector's failure)."""
    from facekit.normalize import detect_guarded

    class OutOfMemoryError(RuntimeError):  # torch.OutOfMemoryError's name; CPU torch cannot raise the real one
        pass

    image = np.zeros((8, 8, 3), np.uint8)
    onnxruntime = (
        "[ONNXRuntimeError] : 6 : RUNTIME_EXCEPTION : Non-zero status code returned while running Conv node. Name:'"
        "Conv_0' Status Message: /onnxruntime_src/onnxruntime/core/framework/bfc_arena.cc:376 void* onnxruntime::"
        "BFCArena::AllocateRawInternal(size_t, bool, onnxruntime::Stream*, bool, onnxruntime::WaitNotificationFn) "
        "Failed to allocate memory for requested buffer of size 1073741824"
    )
    errors = (
        MemoryError(),
        OutOfMemoryError("CUDA"),
        RuntimeError("CUDA error: out of memory"),
        Exception(onnxruntime),  # onnxruntime's Fail is not a RuntimeError
        RuntimeError("cuDNN error: CUDNN_STATUS_ALLOC_FAILED"),
    )
    for error in errors:

        class Raises:
            card = None

            def detect_array(self, image: np.ndarray, error: Exception = error) -> list:
                raise error

        with pytest.raises(type(error)):
            detect_guarded(Raises(), image)

    class Nothing:
        def detect_array(self, image: np.ndarray) -> None:
            return None

    assert detect_guarded(Nothing(), image) == ([], "")

    class Broken:
        def detect_array(self, image: np.ndarray) -> list:
            raise ValueError("bad shape")

    faces, why = detect_guarded(Broken(), image)
    assert faces == [] and "ValueError" in why and "bad shape" in why


def test_a_detector_whose_faces_are_not_face_detections_is_one_line() -> None:
    """helper-223: a detector plugin returning (box, score, landmarks) tuples ended the infer stage in an
    AttributeError traceback from facekit.normalize ('tuple' object has no attribute 'landmarks'), naming neither the
    detector nor what it should return. A type of the plugin's own with FaceDetection's fields still passes."""
    from types import SimpleNamespace

    from facekit.normalize import detect_guarded

    image = np.zeros((8, 8, 3), np.uint8)
    points = np.zeros((5, 2))

    class Tuples:
        def detect_array(self, image: np.ndarray) -> list:
            return [((0.0, 0.0, 4.0, 4.0), 0.9, points)]

    with pytest.raises(FacekitError, match=r"^the detector \(Tuples\) returned a tuple among its faces, not a facekit"):
        detect_guarded(Tuples(), image)

    class Own:
        def detect_array(self, image: np.ndarray) -> list:
            return [SimpleNamespace(box=(0.0, 0.0, 4.0, 4.0), score=0.9, landmarks=points, scheme="dlib5")]

    faces, why = detect_guarded(Own(), image)
    assert len(faces) == 1 and why == ""


def test_a_detector_that_raises_on_one_photo_costs_that_photo_only_and_numpy_boxes_are_fine(
    shipped_normalizer: facekit.Normalizer, tmp_path: Path
) -> None:
    """The batch goes on: the photo's row is ``detector_error`` with what the detector raised, the others are
    normalized, the exit status is the one for 'some inputs gave no output'; the one-photo API raises a FacekitError
    that says the same."""
    from facekit.batch import normalize_folder
    from facekit.normalize import DETECTOR_ERROR, Normalizer

    base = shipped_normalizer
    normalizer = Normalizer(base.decoder, base.encoder, _RaisesOnSmallPhotos(base.detector), base.meta)
    face = real_face().image
    face_box = base.detector.detect_array(face)[0].box
    folder = tmp_path / "in"
    folder.mkdir()
    Image.fromarray(face).save(folder / "a_large.png")
    Image.fromarray(np.ascontiguousarray(face[:, 6:186])).save(folder / "b_narrow.png")
    Image.fromarray(face).save(folder / "c_large.png")
    model = tmp_path / "model.safetensors"
    model.write_bytes(b"model")
    summary = normalize_folder(normalizer, [str(folder)], tmp_path / "out", model, batch_size=8)
    statuses = {Path(row.input).name: (row.status, row.reason) for row in summary.rows}
    assert statuses["a_large.png"][0] == statuses["c_large.png"][0] == "ok"
    status, reason = statuses["b_narrow.png"]
    assert status == DETECTOR_ERROR and "_RaisesOnSmallPhotos) raised IndexError on it: index 3" in reason
    assert summary.failed == 1 and (tmp_path / "out" / "c_large.png").is_file()
    assert json.loads((tmp_path / "out" / "c_large.json").read_text())["box"] == [round(v, 1) for v in face_box]
    with pytest.raises(FacekitError, match=r"no face normalized: detector_error .*IndexError"):
        normalizer.normalize(np.ascontiguousarray(face[:, 6:186]))
    for all_faces in (False, True):  # adjust: the photo's row, left unchanged; the batch goes on
        from facekit.apps.adjust import ADJUST_OUTPUTS, FaceAdjuster, adjust_files
        from facekit.batch import plan_folder

        adjusted = tmp_path / f"adjusted-{all_faces}"
        plan = plan_folder([str(folder)], str(adjusted), 8, outputs=ADJUST_OUTPUTS)
        rows = {Path(r.input).name: r for r in adjust_files(plan, FaceAdjuster(normalizer, all_faces=all_faces))}
        assert rows["a_large.png"].status == rows["c_large.png"].status == "adjusted"
        narrow = rows["b_narrow.png"]
        assert narrow.status == DETECTOR_ERROR and "raised IndexError" in narrow.record["reason"]
        assert not list(adjusted.glob("b_narrow*"))


def test_a_large_photo_is_searched_on_copies_and_its_face_located_on_a_crop(normalizer: facekit.Normalizer) -> None:
    """Before: every detector ran on the whole photo (dlib's: ~17 s and 2 GB for 36 MP). Over 2,048 px the faces
    are found on a 2,048 px copy and each located again on a crop of the photo: the detector never sees more than
    2,048 px, and the landmarks stay within ~1.5 % of the interocular distance of those found on the whole photo."""
    import cv2

    from facekit.normalize import detect_guarded, detect_photo

    seen: list[tuple[int, ...]] = []

    class Counting:
        def __init__(self, inner: Any) -> None:
            self.inner, self.card = inner, inner.card

        def detect_array(self, image: np.ndarray) -> Any:
            seen.append(image.shape)
            return self.inner.detect_array(image)

    big = cv2.resize(real_face().image, (2600, 2600), interpolation=cv2.INTER_CUBIC)
    (whole,), _ = detect_guarded(normalizer.detector, big)
    faces, why = detect_photo(Counting(normalizer.detector), big, "big")
    assert why == "" and len(faces) == 1 and max(max(shape[:2]) for shape in seen) <= 2048, seen
    assert len(seen) == 2  # the copy, then the crop
    expected, got = np.asarray(whole.landmarks), np.asarray(faces[0].landmarks)
    interocular = np.linalg.norm(expected[36:42].mean(0) - expected[42:48].mean(0))
    assert np.abs(expected - got).mean() < 0.015 * interocular
    assert np.abs(np.subtract(whole.box, faces[0].box)).max() < 0.1 * interocular
    small = real_face().image  # up to 2,048 px: the photo itself, once
    seen.clear()
    detect_photo(Counting(normalizer.detector), small)
    assert seen == [small.shape]
    out = normalizer.normalize(big)  # and the normalizer takes that way
    assert np.abs(np.subtract(out.box, faces[0].box)).max() < 1e-6
    # A large face and a small one (2 % of the width) that only the 2,048 px copy shows: both found (a first version
    # looked at 2,048 px only when 1,024 px showed nothing, and lost the small one).
    group = np.full((3072, 4096, 3), 128, np.uint8)
    group[200:1700, 0:1500] = cv2.resize(real_face().image, (1500, 1500), interpolation=cv2.INTER_CUBIC)
    group[1456:1616, 1968:2128] = cv2.resize(real_face().image, (160, 160), interpolation=cv2.INTER_AREA)
    found, _ = detect_photo(normalizer.detector, group)
    assert any(1900 < (f.box[0] + f.box[2]) / 2 < 2200 for f in found), [f.box for f in found]

    class Odd:
        card = normalizer.detector.card

        def __init__(self, box: tuple[float, ...]) -> None:
            self.box = box

        def detect_array(self, image: np.ndarray) -> Any:
            from facekit.types import FaceDetection

            return [FaceDetection(self.box, 0.9, np.zeros((68, 2)), "ibug68")]

    for box in [(float("nan"),) * 4, (5000.0, 10.0, 5100.0, 110.0), (0.0, 0.0, float("inf"), 50.0)]:
        odd, why = detect_photo(Odd(box), big)  # a plugin's odd box ends nothing (before: ValueError, cv2.error)
        assert len(odd) == 1 and why == ""


def test_the_apps_read_every_photo_form_the_normalizer_reads(
    shipped_normalizer: Any, tmp_path: Path, data_root: Path
) -> None:
    """helper-72: adjust.correct/estimate and attributes.measure_faces normalized a path, a PIL image or a grey or
    RGBA array (normalize_many reads them) and then measured the unread object: AttributeError, IndexError, an
    OpenCV assertion or a matmul error."""
    from facekit.apps.adjust import FaceAdjuster
    from facekit.apps.attributes import FaceAttributes
    from facekit.images import load_rgb

    path = sorted((data_root / "london" / "smiling_front").glob("*.jpg"))[0]
    rgb = load_rgb(path)[0]
    assert rgb is not None
    grey = np.asarray(Image.fromarray(rgb).convert("L"))
    rgba = np.dstack([rgb, np.full(rgb.shape[:2], 255, np.uint8)])
    adjuster = FaceAdjuster(shipped_normalizer)
    reference = adjuster.correct(rgb)
    for form in (str(path), path, Image.open(path), rgba):
        corrected, correction = adjuster.correct(form)
        assert correction is not None and corrected.shape == rgb.shape
        assert np.abs(corrected.astype(int) - reference[0]).max() <= 1, type(form)
        assert adjuster.estimate(form) is not None
    grey_out, grey_correction = adjuster.correct(grey)
    assert grey_out.shape == rgb.shape and grey_correction is not None and grey_correction.face.get("monochrome")
    measurer = FaceAttributes(shipped_normalizer)
    missing = tmp_path / "missing.jpg"
    outcomes = measurer.measure_faces([str(path), grey, rgba, None, missing], ["path", "grey", "rgba", "none", "gone"])
    assert [o.status for o in outcomes[:3]] == ["ok"] * 3 and outcomes[3].face is None
    # A file it cannot read costs that photo, with why, as in normalize_many (before, helper-108: the batch raised).
    assert outcomes[4].status == "unreadable" and "missing.jpg: unreadable" in outcomes[4].reason
    with pytest.raises(FacekitError, match=r"measure_faces: bad: expected a photo .*, got float$"):
        measurer.measure_faces([3.5], ["bad"])


def test_a_model_by_name_pickles_and_odd_inputs_are_one_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, data_root: Path
) -> None:
    """helper-72: a folder named sface in the working folder made from_checkpoint("sface") "checkpoint not found";
    a Normalizer could not be pickled (dlib's detector); a cut-short or closed PIL image, a file open in text mode
    and one path given to explore's compare gave raw errors or 49 one-letter "photos"."""
    import io
    import pickle
    from copy import deepcopy

    from facekit.normalize import Normalizer

    monkeypatch.chdir(tmp_path)
    (tmp_path / "sface").mkdir()
    sface = Normalizer.from_checkpoint("SFace")
    assert sface.meta["encoder"] == "sface"
    with pytest.raises(FacekitError, match=r"'sfase' is neither a model file nor a shipped model \(dlib, sface\)"):
        Normalizer.from_checkpoint("sfase")
    copy = pickle.loads(pickle.dumps(sface))
    from facekit_dlib.detector import DlibDetector

    from facekit.normalize import resolve_model

    assert resolve_model("SFace") == resolve_model("sface")  # the commands' --model too (helper-73)

    class Scaled(DlibDetector):  # a subclass with its own __init__ and attributes (helper-73: TypeError, lost)
        def __init__(self, params: Any, points: int, extra: int) -> None:
            super().__init__(params, points)
            self.extra = extra

    scaled = Scaled(sface.detector.params, 68, extra=3)
    scaled.scale = 3
    restored = deepcopy(scaled)  # (a local class cannot be pickled by name; a copy takes the same state path)
    assert (restored.extra, restored.scale, restored.params) == (3, 3, scaled.params) and restored.detect_array
    face = real_face().image
    assert np.array_equal(copy.normalize(face).image, sface.normalize(face).image)
    path = sorted((data_root / "london" / "smiling_front").glob("*.jpg"))[0]
    cut = path.read_bytes()[:4000]
    with pytest.raises(FacekitError, match="the PIL image given cannot be read"):
        sface.normalize(Image.open(io.BytesIO(cut)))
    with Image.open(path) as opened:
        pass
    with pytest.raises(FacekitError, match="the PIL image given cannot be read"):
        sface.normalize(opened)
    with open(path) as text, pytest.raises(FacekitError, match="open it with 'rb'"):
        sface.normalize(text)
    with pytest.raises(FacekitError, match=r"compare takes a list of photos' paths, got one"):
        facekit.load_component("app", "explore").compare(str(path))
    with pytest.raises(FacekitError, match=r"normalize_many takes a list of photos and a list of their names"):
        sface.normalize_many(str(path), str(path))
    (done,) = sface.normalize_many((photo for photo in [face]), (name for name in ["face"]))  # generators
    assert done.status == "ok"
    with pytest.raises(FacekitError, match=r"detector=facekit.load_component\('detector', 'dlib'\)"):
        Normalizer.from_checkpoint(detector="dlib")
    from facekit.apps.explore import feature_path

    with pytest.raises(FacekitError, match="a whole number of at least 2 steps"):
        feature_path(np.zeros(3), np.ones(3), 2.5)  # type: ignore[arg-type]


def test_decode_features_says_what_features_it_takes(normalizer: facekit.Normalizer) -> None:
    """Features of another size or shape, or not a tensor, are one line naming the size the decoder reads (before: a
    torch size error from inside the decoder, or an AttributeError for a numpy array); float64 features are read."""
    import torch

    size = normalizer.decoder.feature_size
    for features, got in (
        (torch.zeros(2, size + 1), rf"got a Tensor of shape \(2, {size + 1}\)"),
        (torch.zeros(size), rf"got a Tensor of shape \({size},\)"),
        (np.zeros((2, size), np.float32), "got a ndarray"),
    ):
        with pytest.raises(FacekitError, match=rf"decode_features takes a \(B, {size}\) torch tensor .*{got}"):
            normalizer.decode_features(features)  # type: ignore[arg-type]
    out = normalizer.decode_features(torch.zeros(2, size, dtype=torch.float64))
    assert out.image.shape == (2, 3, normalizer.image_size, normalizer.image_size)


class _CountsDetections:
    """The shipped detector, counting the photos it has been given (one at a time: it does not say thread_safe)."""

    def __init__(self, inner: Any) -> None:
        self.inner, self.card, self.calls = inner, inner.card, 0

    def detect_array(self, image: np.ndarray) -> list[Any]:
        self.calls += 1
        return list(self.inner.detect_array(image))


def test_photos_given_as_paths_are_decoded_a_batch_at_a_time_not_all_at_once(
    normalizer: facekit.Normalizer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Before: normalize_many decoded every photo given as a path before it detected the first, and held them all
    until it returned (twelve 20 MP JPEGs: 1.31 GB against one's 0.64 GB). Now a photo is read as its turn comes and
    let go once its face is normalized: no more photos are alive at once than a batch and the one being read, or
    than :data:`HELD_MEGAPIXELS` of them; the faces are those of the same photos given as arrays."""
    import weakref

    import torch

    import facekit.images
    import facekit.normalize

    monkeypatch.setattr(torch, "get_num_threads", lambda: 1)  # one photo detected at a time: the count is exact
    face = real_face().image
    arrays = [face, np.ascontiguousarray(face[:, ::-1]), np.full((64, 64, 3), 128, np.uint8)] * 3
    paths = []
    for index, array in enumerate(arrays):
        paths.append(tmp_path / f"{index}.png")
        Image.fromarray(array).save(paths[-1])
    names = [path.stem for path in paths]
    # (a batch's faces differ from the same faces' in another batch by float rounding: compared at the same batches)
    expected = {size: normalizer.normalize_many(arrays, names, size) for size in (1, 2, 16)}
    decoded: list[weakref.ref[np.ndarray]] = []
    alive: list[int] = []
    read = facekit.images.as_rgb

    def counted(image: Any, bgr: bool = False) -> np.ndarray:
        array = read(image, bgr=bgr)
        decoded.append(weakref.ref(array))
        alive.append(sum(ref() is not None for ref in decoded))
        return array

    monkeypatch.setattr(facekit.images, "as_rgb", counted)
    # A batch of two faces: two photos alive at most (one waiting, one read); of sixteen: the six with faces and the
    # one read (a photo without a face is let go at once); a batch's decoded photos at the megapixels: one at a time.
    for batch_size, megapixels, most, batches in ((2, 40, 2, 2), (16, 40, 7, 16), (16, 0.01, 1, 1)):
        monkeypatch.setattr(facekit.normalize, "HELD_MEGAPIXELS", megapixels)
        decoded.clear(), alive.clear()
        outcomes = normalizer.normalize_many(paths, names, batch_size)
        assert len(alive) == len(paths) and max(alive) == most, (batch_size, megapixels, alive)
        assert [o.status for o in outcomes] == [o.status for o in expected[batches]] == ["ok", "ok", "no_face"] * 3
        for made, again in zip(outcomes, expected[batches], strict=True):
            assert (made.face is None and again.face is None) or np.array_equal(made.face.image, again.face.image)


def test_a_folder_s_progress_is_told_as_each_photo_s_detection_ends_not_when_its_batch_does(
    shipped_normalizer: facekit.Normalizer, tmp_path: Path
) -> None:
    """helper-196: `facekit normalize` on eight 4000 px photos showed no progress for 26 s, then all of it at once:
    the bar moved as a batch's rows came, and the detection of every photo of the batch, 90 % of the time, came
    first. Now ``on_detected`` is told of each photo as its detection ends, in order, before the batch's rows; the
    faces are the same as without it."""
    from facekit.batch import normalize_planned, plan_folder
    from facekit.normalize import Normalizer

    base = shipped_normalizer
    detector = _CountsDetections(base.detector)
    normalizer = Normalizer(base.decoder, base.encoder, detector, base.meta)
    face = real_face().image
    images = [face, None, np.ascontiguousarray(face[:, ::-1])]
    told: list[tuple[int, int]] = []
    outcomes = normalizer.normalize_many(
        images, ["a", "b", "c"], on_detected=lambda i: told.append((i, detector.calls))
    )
    assert told == [(0, 1), (1, 1), (2, 2)]  # each as its detection ended (the None at its turn), in order
    with pytest.raises(FacekitError, match="on_detected must be a function of the input's index, got 3"):
        normalizer.normalize_many(images, ["a", "b", "c"], on_detected=3)  # type: ignore[arg-type]
    plain = normalizer.normalize_many(images, ["a", "b", "c"])
    assert [o.status for o in outcomes] == [o.status for o in plain] == ["ok", "unreadable", "ok"]
    for made, again in zip(outcomes, plain, strict=True):
        assert (made.face is None and again.face is None) or np.array_equal(made.face.image, again.face.image)
    folder = tmp_path / "in"
    folder.mkdir()
    for name in "abc":
        Image.fromarray(face).save(folder / f"{name}.png")
    model = tmp_path / "model.safetensors"
    model.write_bytes(b"model")
    events: list[str] = []
    calls = detector.calls
    summary = normalize_planned(
        normalizer,
        plan_folder([str(folder)], tmp_path / "out", 16),
        model,
        on_row=lambda row: events.append("row"),
        on_detected=lambda: events.append(f"detected {detector.calls - calls}"),
    )
    assert events == ["detected 1", "detected 2", "detected 3", "row", "row", "row"]
    assert [row.status for row in summary.rows] == ["ok"] * 3
