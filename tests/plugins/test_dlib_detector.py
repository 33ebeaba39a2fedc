"""dlib's detector plugin: HOG first, and the CNN (mmod) on a small copy only when HOG finds no face."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

cv2 = pytest.importorskip("cv2")
pytest.importorskip("dlib")

import facekit  # noqa: E402
from facekit.testing import real_face  # noqa: E402


def turned(image: np.ndarray, degrees: float, scale: float = 1.0) -> np.ndarray:
    """``image`` rolled by ``degrees`` about its centre (beyond what HOG's five filters cover) and resized."""
    height, width = image.shape[:2]
    matrix = cv2.getRotationMatrix2D((width / 2, height / 2), degrees, 1.0)
    rolled = cv2.warpAffine(image, matrix, (width, height), borderMode=cv2.BORDER_REPLICATE)
    return cv2.resize(rolled, (round(width * scale), round(height * scale)), interpolation=cv2.INTER_CUBIC)


def test_the_cnn_finds_the_face_hog_misses_at_the_photos_scale() -> None:
    hog = facekit.load_component("detector", "dlib", face_detector="hog")
    both = facekit.load_component("detector", "dlib")  # the default: hog+cnn
    assert both.params.face_detector == "hog+cnn" and len(both.card.weights) == 3  # HOG, mmod, the predictor
    face = real_face().image
    upright = face.copy()
    assert [f.box for f in both.detect_array(upright)] == [f.box for f in hog.detect_array(upright)]  # HOG's own
    for scale in (1.0, 4.0):  # 200 px, and 800 px (the CNN looks at a copy of at most 400 px)
        photo = turned(face, 60, scale)
        assert hog.detect_array(photo) == []
        found = both.detect_array(photo)
        assert len(found) == 1 and found[0].landmarks is not None and found[0].landmarks.shape == (68, 2)
        x0, y0, x1, y1 = (v / scale for v in found[0].box)  # in the photo's pixels, not the copy's
        assert 30 < x0 < x1 < 170 and 30 < y0 < y1 < 170 and 70 < x1 - x0 < 130, found[0].box
        # The points sit on the face: their centre is near the photo's centre, where the face was rolled about.
        centre = found[0].landmarks.mean(axis=0) / scale
        assert np.linalg.norm(centre - 100.0) < 25.0, centre
    assert both.detect_array(np.full((300, 300, 3), 128, np.uint8)) == []  # still nothing where there is nothing


def test_tiny_or_thin_images_have_no_face_rather_than_a_dlib_failure() -> None:
    """dlib's CNN raised a RuntimeError on copies under ~10 px a side (9 x 9 could corrupt the heap and abort), and a
    thin photo reaches it shrunk to the fallback's 400 px: every such photo ended the whole batch with a traceback."""
    for name in ("dlib", "dlib-5pt"):
        detector = facekit.load_component("detector", name)
        for shape in ((1, 1), (9, 9), (5, 300), (300, 5), (40, 5000), (5000, 40)):
            assert detector.detect_array(np.full((*shape, 3), 128, np.uint8)) == [], (name, shape)
    cnn = facekit.load_component("detector", "dlib", face_detector="cnn", upsample=0)
    assert cnn.detect_array(np.full((20, 20, 3), 128, np.uint8)) == []


def test_threads_detecting_at_once_get_what_one_thread_gets(data_root: Any) -> None:
    """The detector says it is ``thread_safe``, so the pipeline detects a batch's photos in parallel: dlib's HOG
    object is not (one object used by two threads at once gave another box for about 30 % of LFW photos), so each
    concurrent call takes a HOG object of its own. Four threads at once on LFW photos (and on a 60-degree roll, where
    the CNN fallback runs) give exactly the boxes, scores and points one thread gives, and pickling keeps it working."""
    import pickle
    from concurrent.futures import ThreadPoolExecutor

    from facekit.images import load_rgb

    detector = facekit.load_component("detector", "dlib")
    assert detector.thread_safe is True
    photos = [load_rgb(path)[0] for path in sorted((data_root / "lfw" / "images").glob("A*/*_0001.jpg"))[:20]]
    photos.append(turned(real_face().image, 60))

    def seen(faces: list[Any]) -> list[Any]:
        return [(face.box, face.score, face.landmarks.tolist()) for face in faces]

    alone = [seen(detector.detect_array(photo)) for photo in photos]
    assert sum(1 for faces in alone if faces) >= 18
    with ThreadPoolExecutor(4) as pool:
        together = list(pool.map(lambda photo: seen(detector.detect_array(photo)), photos * 3))
    assert together == alone * 3
    twin = pickle.loads(pickle.dumps(detector))
    assert seen(twin.detect_array(photos[0])) == alone[0]


def test_a_further_hog_of_the_pool_is_a_copy_not_made_again_by_dlib(
    tmp_path: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """dlib's ``get_frontal_face_detector`` decompresses its built-in model each time (0.26 s on an idle core,
    seconds on a busy machine): the detector makes one (here with an empty cache folder, which would hold it), and a
    call that finds every HOG object in use by other threads gets a copy of it (pickled, ~1 ms), which gives the
    same boxes, scores and points."""
    import dlib

    monkeypatch.setenv("FACEKIT_CACHE", str(tmp_path))
    made: list[int] = []
    original = dlib.get_frontal_face_detector

    def counted() -> Any:
        made.append(1)
        return original()

    monkeypatch.setattr(dlib, "get_frontal_face_detector", counted)
    detector = facekit.load_component("detector", "dlib", face_detector="hog")
    assert len(made) == 1
    photo = real_face().image
    alone = [(f.box, f.score, f.landmarks.tolist()) for f in detector.detect_array(photo)]
    held = detector._hogs.get_nowait()  # as another thread holds it while it detects: the pool is empty
    copied = [(f.box, f.score, f.landmarks.tolist()) for f in detector.detect_array(photo)]
    detector._hogs.put(held)
    assert len(made) == 1 and detector._hogs.qsize() == 2  # the copy was kept for the next concurrent call
    assert copied == alone and len(alone) == 1


def test_the_hog_detector_is_read_from_the_users_cache_once_made(
    tmp_path: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """dlib's get_frontal_face_detector decompresses its built-in model, 0.26 s on an idle core, in every process
    that builds a detector; a copy in the user's cache (keyed on dlib's version, checked by its sha256) reads in
    ~1.5 ms and finds the same faces with the same scores. A damaged copy is made again; no cache folder, no copy."""
    import types

    import dlib
    from facekit_dlib.detector import frontal_face_detector, hog_cache_path

    monkeypatch.setenv("FACEKIT_HOME", str(tmp_path / "home"))
    monkeypatch.delenv("FACEKIT_CACHE")  # (the tests' own, tests/conftest.py: the cache follows FACEKIT_HOME)
    built_in = dlib.get_frontal_face_detector()
    made = frontal_face_detector(dlib)
    path = hog_cache_path(dlib)
    assert path.is_file() and dlib.__version__ in path.name and path.parent == tmp_path / "home" / "dlib"

    def not_again() -> Any:
        raise AssertionError("decompressed again")

    cached = types.SimpleNamespace(
        __version__=dlib.__version__,
        fhog_object_detector=dlib.fhog_object_detector,
        get_frontal_face_detector=not_again,
    )
    read = frontal_face_detector(cached)
    face = real_face().image
    expected = built_in.run(face, 1, 0.0)
    for detector in (made, read):
        rects, scores, kinds = detector.run(face, 1, 0.0)
        assert ([str(r) for r in rects], scores, kinds) == ([str(r) for r in expected[0]], *expected[1:])
    assert len(expected[0]) == 1
    # Damaged (a byte changed): made again and written again; another dlib version has a copy of its own.
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))
    calls = []
    counting = types.SimpleNamespace(
        __version__=dlib.__version__,
        fhog_object_detector=dlib.fhog_object_detector,
        get_frontal_face_detector=lambda: calls.append(1) or dlib.get_frontal_face_detector(),
    )
    frontal_face_detector(counting)
    assert calls == [1] and path.read_bytes() != bytes(data)
    frontal_face_detector(cached)  # (the copy written again reads back)
    assert hog_cache_path(types.SimpleNamespace(__version__="99.0")) != path
    # A home that cannot hold a folder (a file there): the detector all the same, nothing cached.
    (tmp_path / "file").write_text("")
    monkeypatch.setenv("FACEKIT_HOME", str(tmp_path / "file"))
    assert len(frontal_face_detector(dlib).run(face, 1, 0.0)[0]) == 1
    assert not list(tmp_path.glob("file/**"))


def test_the_hog_cache_is_readable_as_any_file_written_and_clears_what_it_left_before(
    tmp_path: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The copy was written through mkstemp, 0600: in a FACEKIT_HOME shared by several users every other one
    decompressed dlib's model each time. It gets what a plain write gives (0666 less the umask), and writing it
    removes the copies of dlib versions older than the two other versions written last and the temporaries a killed
    process left (an hour old), none of the folder's other files (a user's own frontal_face_detector-mine.svm: only
    a version's digits and dots are ours), nor a temporary another process may be writing now."""
    import os
    import time

    import dlib
    from facekit_dlib.detector import frontal_face_detector, hog_cache_path

    monkeypatch.setenv("FACEKIT_HOME", str(tmp_path / "home"))
    monkeypatch.delenv("FACEKIT_CACHE", raising=False)
    folder = tmp_path / "home" / "dlib"
    folder.mkdir(parents=True)
    removed = [
        "frontal_face_detector-18.0.0.svm",  # the oldest other version (written two hours ago, the others later)
        "frontal_face_detector-18.0.0.svm.sha256",
        "frontal_face_detector-17.0.svm.sha256",  # a digest without its copy
        f".frontal_face_detector-{dlib.__version__}.svm.k1ll3d",
        ".frontal_face_detector-19.0.0.svm.k1ll3d.sha256",
    ]
    kept = [
        f".frontal_face_detector-{dlib.__version__}.svm.wr1t1ng",  # another process's, being written
        "notes.txt",
        "frontal_face_detector-19.0.0.svm.bak",
        "my-frontal_face_detector-19.0.0.svm",
        "frontal_face_detector-mine.svm",  # a user's own (helper-219: the pattern took any name, not a version's)
        "frontal_face_detector-mine.svm.sha256",
        ".frontal_face_detector-mine.svm.old",
        ".hidden",
    ]
    versions = ["frontal_face_detector-19.0.0.svm", "frontal_face_detector-19.1.svm"]  # written later than 18.0.0's
    kept += [*versions, *(f"{name}.sha256" for name in versions)]
    hour_ago = time.time() - 2 * 3600
    for name in removed + kept:
        (folder / name).write_text("x")
        if name != kept[0]:
            later = 60 * (name in versions)
            os.utime(folder / name, (hour_ago + later, hour_ago + later))
    previous = os.umask(0o027)
    try:
        frontal_face_detector(dlib)
    finally:
        os.umask(previous)
    path = hog_cache_path(dlib)
    for made in (path, path.with_name(path.name + ".sha256")):
        assert made.stat().st_mode & 0o777 == 0o640, (made.name, oct(made.stat().st_mode))
    assert sorted(p.name for p in folder.iterdir()) == sorted([*kept, path.name, path.name + ".sha256"])


def test_two_dlib_versions_sharing_one_cache_keep_each_its_copy(tmp_path: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    """Two environments with other dlib versions on one cache (a venv per project, one FACEKIT_HOME): writing its
    copy removed every other version's, so each process of one environment decompressed dlib's model again after
    a process of the other. The copies of the versions written last stay (KEPT_VERSIONS), older ones go."""
    import types

    import dlib
    from facekit_dlib.detector import KEPT_VERSIONS, frontal_face_detector, hog_cache_path

    monkeypatch.setenv("FACEKIT_CACHE", str(tmp_path / "cache"))
    made: list[str] = []

    def version(number: str) -> Any:
        def decompressed() -> Any:
            made.append(number)
            return dlib.get_frontal_face_detector()

        return types.SimpleNamespace(
            __version__=number, fhog_object_detector=dlib.fhog_object_detector, get_frontal_face_detector=decompressed
        )

    older, newer = version("19.24.2"), version("20.0.0")
    for _ in range(2):  # each environment in turn, twice: each decompresses once
        frontal_face_detector(older)
        frontal_face_detector(newer)
    assert made == ["19.24.2", "20.0.0"]
    assert hog_cache_path(older).is_file() and hog_cache_path(newer).is_file()
    assert KEPT_VERSIONS == 3
    for number in ("21.0", "22.0"):  # bounded: the oldest copy goes as a fourth version writes
        frontal_face_detector(version(number))
    assert sorted(p.name for p in (tmp_path / "cache" / "dlib").glob("*.svm")) == [
        "frontal_face_detector-20.0.0.svm",
        "frontal_face_detector-21.0.svm",
        "frontal_face_detector-22.0.svm",
    ]


def test_the_tests_write_dlibs_cache_in_a_folder_of_the_run_not_the_users(
    tmp_path_factory: pytest.TempPathFactory,
) -> None:
    """Every test that built a dlib detector wrote its HOG copy into the ~/.cache/facekit of whoever ran the suite:
    tests/conftest.py points FACEKIT_CACHE, which the commands the tests start inherit, at a folder of the run's,
    and leaves FACEKIT_HOME, whose model store the tests read weights from."""
    import os
    import types

    from facekit_dlib.detector import hog_cache_path

    from facekit.models import cache_home, facekit_home

    run = tmp_path_factory.getbasetemp()
    path = hog_cache_path(types.SimpleNamespace(__version__="19.0.0"))
    assert path.is_relative_to(run) and not path.is_relative_to(facekit_home()), path
    assert Path(os.environ["FACEKIT_CACHE"]) == cache_home() and cache_home().is_relative_to(run)
    assert not facekit_home().is_relative_to(run)
