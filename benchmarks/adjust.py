"""White balance and exposure from the normalized face (the ``adjust`` app) against general white balancing.

1. **Consistency** (the paper's claim), LFW peopleDevTest people with 4+ photos (never trained on): each person's
   corrected face chromaticity (r, g) = (R, G) / (R + G + B) of the central face box, its mean distance to the
   person's mean, averaged over people (x 1e-3; lower = the same skin looks the same colour in every photo).
2. **Accuracy with known casts**: London *smiling* photos (their neutral photos were in training; the smiling ones
   were not), the grey studio background replaced by an LFW photo (scene content, what fools global methods), a
   blackbody illuminant of 2,500-10,000 K with a small green tint applied von Kries in linear RGB and an exposure of
   -1.5..+1.5 EV. Error on the person (the non-background pixels) against the uncast composite: angular error of the
   mean linear RGB (degrees) and exposure error (|EV|). Also the plain studio background with the same casts.
3. **Speed**: a 24-megapixel JPEG read, corrected and written, median of 3, ratio to gray-world in the same run.

    python benchmarks/adjust.py [--people 80] [--london 102] [--no-write]
    python benchmarks/adjust.py --selection [--model LABEL=FILE ... --variant adjust --variant 'adjust, face only']
    python benchmarks/adjust.py --profiles   # a 24 MP JPEG untagged vs in Display P3: time and peak memory
    python benchmarks/adjust.py --memory     # 24 and 48 MP JPEGs (sRGB, P3, turned): peak memory of adjust and serve

``--model`` compares models (the adjust variants of each, one table) instead of the shipped one.
"""

from __future__ import annotations

import argparse
import shlex
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
import numpy as np
from results import machine, publish
from rich.progress import track

from facekit.apps.adjust import (
    LUMINANCE,
    FaceAdjuster,
    apply_correction,
    box_of,
    encode_like,
    to_linear,
    to_srgb,
)
from facekit.apps.baselines import ESTIMATORS, GlobalWhiteBalance
from facekit.data.sources import lfw_photos, london_photos
from facekit.images import load_rgb
from facekit.normalize import Normalizer
from facekit.recipe import DataSection

#: adjust's settings compared (FaceAdjuster keywords). "adjust" is the default (chosen on the --selection set); "face
#: only" is the face's estimate alone.
ADJUST_VARIANTS: dict[str, dict[str, Any]] = {
    "adjust": {},
    "adjust, face only": {"fuse": None},
    "adjust, face only, refined once": {"fuse": None, "refine": 1},
    "adjust, agreement, refined once": {"fuse": "agreement", "refine": 1},
    "adjust, ycrcb, skin": {"mapping": "ycrcb", "fuse": None},
    "adjust, gains, box": {"region": "box", "fuse": None},
    "adjust, paper (ycrcb, box)": {"mapping": "ycrcb", "region": "box", "fuse": None},
}
#: Settings tried on the selection set only. Each names its face share where its label does (helper-94: the "0.5"
#: rows of shades-of-gray and gray-edge ran at the default share, 0.6 until stop 46).
SELECTION_VARIANTS: dict[str, dict[str, Any]] = {
    "adjust, refined once": {"refine": 1},
    "adjust + white-patch 0.3": {"fuse_weight": 0.3},
    "adjust + white-patch 0.5": {"fuse_weight": 0.5},
    "adjust + white-patch 0.6": {"fuse_weight": 0.6},
    "adjust + white-patch 0.7": {"fuse_weight": 0.7},
    "adjust + white-patch 0.8": {"fuse_weight": 0.8},
    "adjust + shades-of-gray 0.5": {"fuse": "shades-of-gray", "fuse_weight": 0.5},
    "adjust + shades-of-gray 0.7": {"fuse": "shades-of-gray", "fuse_weight": 0.7},
    "adjust + gray-edge 0.5": {"fuse": "gray-edge", "fuse_weight": 0.5},
    "adjust, agreement": {"fuse": "agreement"},
    "adjust, agreement sigma 2, refined once": {"fuse": "agreement", "fuse_sigma": 2.0, "refine": 1},
    "adjust, agreement sigma 4, refined once": {"fuse": "agreement", "fuse_sigma": 4.0, "refine": 1},
    "adjust, agreement, refined twice": {"fuse": "agreement", "refine": 2},
}
METHODS = ["none", *ADJUST_VARIANTS, *ESTIMATORS]
#: The selection set (choosing the algorithm): neutral photos of people whose neutral photos were in training.
SELECTION_SET = {"neutral_front": 60, "canada": 40}


def adjusters(normalizer: Normalizer, variants: dict[str, dict[str, Any]]) -> dict[str, FaceAdjuster]:
    return {name: FaceAdjuster(normalizer, **settings) for name, settings in variants.items()}


def corrections(photo: np.ndarray, face: Any, variants: dict[str, FaceAdjuster]) -> dict[str, np.ndarray]:
    """Every method's corrected ``photo``: each ``adjust`` variant's from the already normalized ``face``, and the
    global baselines'."""
    out = {"none": photo}
    for name, adjuster in variants.items():
        out[name] = apply_correction(photo, adjuster.estimate_faces(photo, [face]))
    for method in ESTIMATORS:
        out[method] = GlobalWhiteBalance(method).correct(photo)[0]
    return out


def face_box_rgb(photo: np.ndarray, face: Any) -> np.ndarray:
    """Mean RGB of the central face box of ``photo`` aligned into ``face``'s normalized frame."""
    from facekit.apps.attributes import photo_in_face_frame

    return np.asarray(box_of(photo_in_face_frame(photo, face)[0]).astype(np.float64).mean(axis=0))


def chromaticity(rgb: np.ndarray) -> np.ndarray:
    return rgb[:2] / max(float(rgb.sum()), 1e-6)


def consistency(normalizer: Normalizer, root: Path, people: int, per_person: int) -> tuple[dict[str, float], int, int]:
    by_person: dict[str, list[Path]] = {}
    for photo in lfw_photos(root, "peopleDevTest.txt", min_photos=4):
        by_person.setdefault(photo.identity, []).append(photo.path)
    chosen = sorted(by_person)[:people]
    spreads: dict[str, list[float]] = {m: [] for m in [*METHODS, "normalized face"]}
    variants = adjusters(normalizer, ADJUST_VARIANTS)
    used = 0
    for person in track(chosen, description=f"consistency: {len(chosen)} people"):
        points: dict[str, list[np.ndarray]] = {m: [] for m in spreads}
        for path in by_person[person][:per_person]:
            image = load_rgb(path)[0]
            faces = normalizer.normalize(image, all_faces=True) if image is not None else []
            if image is None or not faces:
                continue
            face = faces[0]
            for method, corrected in corrections(image, face, variants).items():
                points[method].append(chromaticity(face_box_rgb(corrected, face)))
            points["normalized face"].append(chromaticity(box_of(face.image).astype(np.float64).mean(axis=0)))
        if len(points["none"]) < 4:
            continue
        used += 1
        for method, values in points.items():
            array = np.stack(values)
            spreads[method].append(float(np.linalg.norm(array - array.mean(axis=0), axis=1).mean()))
    return {m: float(np.mean(v)) * 1e3 for m, v in spreads.items()}, used, len(chosen)


# ------------------------------------------------------------------------------------------------ known casts


def blackbody_rgb(kelvin: float) -> np.ndarray:
    """Linear-light RGB of a blackbody at ``kelvin`` relative to 6,500 K (Tanner Helland's fit to the blackbody's
    sRGB colour, linearised): the illuminant of a cast."""

    def srgb(t: float) -> np.ndarray:
        t = t / 100.0
        red = 255.0 if t <= 66 else 329.698727446 * (t - 60) ** -0.1332047592
        green = 99.4708025861 * np.log(t) - 161.1195681661 if t <= 66 else 288.1221695283 * (t - 60) ** -0.0755148492
        blue = 255.0 if t >= 66 else (0.0 if t <= 19 else 138.5177312231 * np.log(t - 10) - 305.0447927307)
        return np.clip(np.array([red, green, blue]), 1, 255) / 255.0

    linear = to_linear(srgb(kelvin)) / to_linear(srgb(6500.0))
    return np.asarray(linear / linear.mean(), np.float64)


def background_mask(photo: np.ndarray) -> np.ndarray:
    """The London studio background: GrabCut (5 iterations) from a rectangle that leaves the top corners and the
    sides outside the person: (H, W) bool."""
    import cv2

    height, width = photo.shape[:2]
    mask = np.zeros((height, width), np.uint8)
    rect = (round(0.12 * width), round(0.08 * height), round(0.76 * width), height - round(0.08 * height))
    background, foreground = np.zeros((1, 65), np.float64), np.zeros((1, 65), np.float64)
    cv2.grabCut(np.ascontiguousarray(photo), mask, rect, background, foreground, 5, cv2.GC_INIT_WITH_RECT)
    return np.isin(mask, (cv2.GC_BGD, cv2.GC_PR_BGD))


def cast(photo: np.ndarray, gains: np.ndarray, ev: float) -> np.ndarray:
    linear = to_linear(photo / 255.0) * gains * 2.0**ev
    return np.asarray(to_srgb(linear) * 255 + 0.5, np.float64).clip(0, 255).astype(np.uint8)


def errors(corrected: np.ndarray, original: np.ndarray, person: np.ndarray) -> tuple[float, float]:
    """(angular error in degrees of the mean linear RGB, |exposure error| in EV) over the ``person`` pixels."""
    a = to_linear(corrected[person] / 255.0).mean(axis=0)
    b = to_linear(original[person] / 255.0).mean(axis=0)
    angle = float(np.degrees(np.arccos(np.clip(a @ b / np.linalg.norm(a) / np.linalg.norm(b), -1, 1))))
    return angle, abs(float(np.log2(max(a @ LUMINANCE, 1e-9) / max(b @ LUMINANCE, 1e-9))))


def known_casts(
    normalizer: Normalizer,
    root: Path,
    subsets: dict[str, int],
    settings: dict[str, dict[str, Any]] = ADJUST_VARIANTS,
) -> tuple[dict[str, dict[str, list[float]]], dict[str, Any]]:
    """Every method's errors on the first photos of each London ``subsets`` (name -> count), cast as the module
    docstring says; and the counts: photos taken, skipped (unreadable, or GrabCut failed), and per setting the cast
    photos in which no face was found (no method is scored on them)."""
    variants = adjusters(normalizer, settings)
    results: dict[str, dict[str, list[float]]] = {}
    no_face = {"scene background": 0, "studio background": 0}
    shots, counts = cast_shots(root, subsets)
    for background, setting, clean, shot in shots:
        # Every face is normalized and the largest used, as when RESULTS.md was made (a batch of all faces rounds
        # the largest one's pixels slightly differently from a batch of one).
        faces = normalizer.normalize(shot, all_faces=True)
        if not faces:  # no method is scored on this photo
            no_face[setting] += 1
            continue
        for method, corrected in corrections(shot, faces[0], variants).items():
            angle, exposure = errors(corrected, clean, ~background)
            results.setdefault(setting, {}).setdefault(f"{method} angle", []).append(angle)
            results[setting].setdefault(f"{method} ev", []).append(exposure)
    return results, {**counts, "no_face": no_face}


def unscored(counts: dict[str, Any]) -> str:
    """What :func:`known_casts` left out, in words: photos skipped (unreadable, or GrabCut failed) and, per setting,
    cast photos in which no face was found (no method is scored on them)."""
    no_face = counts["no_face"]
    return (
        f"{counts['skipped']} skipped where the background segmentation (GrabCut) failed; no face found in the cast "
        f"photo, so no method scored: {no_face['scene background']} with the scene background, "
        f"{no_face['studio background']} with the studio one"
    )


def cast_shots(
    root: Path, subsets: dict[str, int]
) -> tuple[Iterator[tuple[np.ndarray, str, np.ndarray, np.ndarray]], dict[str, int]]:
    """The known-cast test's photos: for the first photos of each London ``subsets`` (name -> count), its background
    mask (the scene behind it an LFW photo: a DevTest one for the report's smiling photos, a DevTrain one for the
    selection set) and, per setting (scene background, studio background), the uncast photo and the cast one, as the
    module docstring says (seed 2017: the same casts in every run and script). The counts dict (photos, skipped) is
    filled as the iterator runs."""
    import cv2

    rng = np.random.default_rng(2017)
    london = [photo for subset, count in subsets.items() for photo in london_photos(root, subset)[:count]]
    # The report's scenes (the smiling photos) are DevTest photos; the selection set's are DevTrain photos (before:
    # DevTest too, and with the same seed the same scenes as the report's: settings chosen on the report's scenes).
    people = "peopleDevTest.txt" if set(subsets) == {"smiling_front"} else "peopleDevTrain.txt"
    scenes = lfw_photos(root, people)
    picks = rng.choice(len(scenes), size=len(london), replace=False)
    counts = {"photos": len(london), "skipped": 0}

    def shots() -> Iterator[tuple[np.ndarray, str, np.ndarray, np.ndarray]]:
        pairs = list(zip(london, picks, strict=True))
        for photo, pick in track(pairs, description=f"known casts: {len(london)} photos"):
            original = load_rgb(photo.path)[0]
            scene_photo = load_rgb(scenes[pick].path)[0]
            if original is None or scene_photo is None:
                counts["skipped"] += 1
                continue
            background = background_mask(original)
            if not 0.1 < background.mean() < 0.85:  # GrabCut took the person for background, or found none
                counts["skipped"] += 1
                continue
            scene = cv2.resize(scene_photo, original.shape[1::-1], interpolation=cv2.INTER_CUBIC)
            composite = np.where(background[..., None], scene, original)
            kelvin = rng.uniform(2500, 10000)  # drawn before the tint, as RESULTS.md's runs drew them
            illuminant = blackbody_rgb(kelvin) * np.array([1.0, 1.0 + rng.uniform(-0.03, 0.03), 1.0])
            ev = rng.uniform(-1.5, 1.5)
            for setting, clean in (("scene background", composite), ("studio background", original)):
                yield background, setting, clean, cast(clean, illuminant / illuminant.mean(), ev)

    return shots(), counts


# ------------------------------------------------------------------------------------------------ speed


def enlarged_jpeg(
    root: Path,
    path: Path,
    width: int,
    height: int,
    icc: bytes | None = None,
    exif: bytes = b"",
    orientation: int = 1,
) -> np.ndarray:
    """Write a London photo enlarged to ``width`` x ``height`` as a quality-92 JPEG at ``path`` (with the colour
    profile ``icc`` and the ``exif`` embedded when given); return the photo as it was (for warming up).
    ``orientation``: the pixels are stored turned as that EXIF orientation undoes (``exif`` should say it), so that
    the photo read upright is the same ``width`` x ``height`` one."""
    import cv2
    from PIL import Image

    from facekit.images import stored_view

    source = root / "london" / "smiling_front" / "005_08.jpg"
    face = load_rgb(source)[0]
    if face is None:
        raise SystemExit(f"cannot read {source}: see the data README")
    upright = cv2.resize(face, (width, height), interpolation=cv2.INTER_CUBIC)
    big = Image.fromarray(np.ascontiguousarray(stored_view(upright, orientation)))
    big.save(path, quality=92, icc_profile=icc, exif=exif)  # None: no profile
    return face


def speed(normalizer: Normalizer, root: Path, repeats: int = 3) -> dict[str, float]:
    times: dict[str, float] = {}
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "big.jpg"
        face = enlarged_jpeg(root, path, 6000, 4000)
        for name, corrector in (("adjust", FaceAdjuster(normalizer)), ("gray-world", GlobalWhiteBalance("gray-world"))):
            corrector.correct(face)  # warm up
            runs = []
            for _ in range(repeats):
                start = time.perf_counter()
                photo = load_rgb(path)[0]
                if photo is None:
                    raise SystemExit(f"cannot read back {path}")
                corrected, _ = corrector.correct(photo)
                encode_like(path, corrected)
                runs.append(time.perf_counter() - start)
            times[name] = float(np.median(runs))
    return times


#: The two photo sizes of the memory figure (6 and 24 megapixels).
MEMORY_SIZES = ((3000, 2000), (6000, 4000))


def adjust_in_fresh_process(path: Path, out: Path, method: str = "adjust") -> tuple[float, float]:
    """(peak RSS in MB, seconds) of ``facekit adjust PATH -o OUT --method METHOD`` in a fresh process (the kernel's
    accounting, as benchmarks/normalize_memory.py); a failed run ends the benchmark."""
    from normalize_memory import peak_rss_mb

    exe = Path(sys.executable).with_name("facekit")
    peak, seconds, code = peak_rss_mb([str(exe), "adjust", str(path), "-o", str(out), "--method", method])
    if code != 0:
        raise SystemExit(f"facekit adjust --method {method} on {path.name} exited {code}")
    return peak, seconds


def memory(root: Path) -> dict[tuple[str, int], float]:
    """Peak RSS (MB) of ``facekit adjust`` (and ``--method gray-world``) on one JPEG of 6 and 24 megapixels, each in a
    fresh process."""
    peaks: dict[tuple[str, int], float] = {}
    with tempfile.TemporaryDirectory() as folder:
        for width, height in MEMORY_SIZES:
            path = Path(folder) / f"photo-{width}.jpg"
            enlarged_jpeg(root, path, width, height)
            for method in ("adjust", "gray-world"):
                out = Path(folder) / f"out-{method}-{width}"
                peaks[(method, width * height // 1_000_000)] = adjust_in_fresh_process(path, out, method)[0]
    return peaks


def profiles(root: Path, repeats: int = 3) -> dict[str, dict[str, float]]:
    """``facekit adjust`` on a 6000 x 4000 JPEG untagged and tagged Display P3 (a phone's profile, converted on
    reading), each in a fresh process: median wall time of ``repeats`` runs (model loading included) and peak RSS."""
    from facekit.testing import DISPLAY_P3_COLORANTS, matrix_icc

    figures: dict[str, dict[str, float]] = {}
    with tempfile.TemporaryDirectory() as folder:
        for name, icc in (("untagged", None), ("Display P3", matrix_icc(DISPLAY_P3_COLORANTS, 2.2, "Display P3"))):
            path = Path(folder) / f"{name.replace(' ', '')}.jpg"
            enlarged_jpeg(root, path, 6000, 4000, icc)
            runs = [adjust_in_fresh_process(path, Path(folder) / f"out-{path.stem}-{run}") for run in range(repeats)]
            figures[name] = {
                "seconds": float(np.median([seconds for _, seconds in runs])),
                "peak_mb": float(max(peak for peak, _ in runs)),
            }
    return figures


#: The photos of ``--memory`` (width, height, profile, EXIF orientation): a 24 MP camera's and a 48 MP phone's full
#: resolution in sRGB, the 48 MP one in Display P3 (a phone's profile, converted to sRGB on reading), and the 48 MP
#: one stored turned (EXIF orientation 6, as a phone held upright writes it; read upright, the upright row's picture:
#: the same size, its values within the JPEG's rounding).
LARGE_PHOTOS = (
    (6000, 4000, "sRGB", 1),
    (8000, 6000, "sRGB", 1),
    (8000, 6000, "Display P3", 1),
    (8000, 6000, "sRGB", 6),
)


def camera_jpeg(root: Path, path: Path, width: int, height: int, profile: str = "sRGB", orientation: int = 1) -> None:
    """:func:`enlarged_jpeg` as a camera writes one: an ICC profile (``profile``: sRGB, or Display P3 as a phone's)
    and EXIF (make, model, ``orientation``: the pixels stored turned, read upright at ``width`` x ``height``), which
    the full-size download carries over (turned upright, orientation 1)."""
    from PIL import Image, ImageCms

    from facekit.testing import DISPLAY_P3_COLORANTS, matrix_icc

    if profile == "sRGB":
        icc = ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()
    else:
        icc = matrix_icc(DISPLAY_P3_COLORANTS, 2.2, profile)
    exif = Image.Exif()
    exif[0x010F], exif[0x0110], exif[0x0112] = "facekit", "benchmark", orientation
    enlarged_jpeg(root, path, width, height, icc, exif.tobytes(), orientation)


def serve_request_peak(root: Path, photo: Path, folder: Path) -> dict[str, float]:
    """One upload of ``photo`` to a real ``facekit serve`` (shipped model, Surrey model; the whole chain through
    ``/analyze``, as benchmarks/serve.py): the RSS of the server's process tree before the request and its peak during
    it (sampled every 20 ms), and the server's own high-water mark (``VmHWM``: start-up and warm-up included), MB."""
    from facekit_serve.offline import offline_environment
    from facekit_serve.testing import running_server
    from gradio_client import Client, handle_file
    from serve import MemorySampler, tree_rss

    offline_environment()
    arguments = ["--sfm", str(root / "sfm" / "sfm_shape_3448.bin")]
    with running_server(folder, arguments, env={"OMP_WAIT_POLICY": "PASSIVE"}, stop_seconds=60) as server:
        pid = server.process.pid
        time.sleep(1.0)
        idle = tree_rss(pid)
        sampler = MemorySampler(pid, every=0.02)
        sampler.start()
        client = Client(server.url, verbose=False, download_files=str(folder / "downloads"), analytics_enabled=False)
        try:
            answer = client.predict(handle_file(str(photo)), api_name="/analyze")
        finally:
            client.close()
            sampler.stopped.set()
            sampler.join()
        status = str(answer[1]) if isinstance(answer, list | tuple) and len(answer) > 1 else str(answer)
        if 'class="error"' in status:
            raise SystemExit(f"facekit serve answered {photo.name} with a message: {status[:300]}")
        status_lines = Path(f"/proc/{pid}/status").read_text().splitlines()
        hwm_kib = next(int(line.split()[1]) for line in status_lines if line.startswith("VmHWM"))
    return {"idle": idle / 1e6, "peak": sampler.peak / 1e6, "hwm": hwm_kib * 1024 / 1e6}


def large_photo_memory(root: Path) -> list[dict[str, Any]]:
    """``--memory``: for each of :data:`LARGE_PHOTOS` (a camera JPEG, :func:`camera_jpeg`), the peak RSS of
    ``facekit adjust`` in a fresh process and of one ``facekit serve`` request (:func:`serve_request_peak`)."""
    rows: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="facekit-adjust-memory-") as temporary:
        folder = Path(temporary)
        for width, height, profile, orientation in LARGE_PHOTOS:
            name = f"{width}x{height}-{profile.replace(' ', '')}-{orientation}"
            path = folder / f"photo-{name}.jpg"
            camera_jpeg(root, path, width, height, profile, orientation)
            adjust_peak = adjust_in_fresh_process(path, folder / f"out-{name}")[0]
            serve = serve_request_peak(root, path, folder / f"serve-{name}")
            tagged = "" if profile == "sRGB" else f", {profile}"
            if orientation != 1:
                tagged += f", stored turned (EXIF orientation {orientation})"
            shown = f"{width} x {height} ({width * height / 1e6:.0f} MP){tagged}"
            rows.append({"photo": shown, "adjust": adjust_peak, **serve})
            print(rows[-1], flush=True)
            path.unlink()
    return rows


def accuracy_table(accuracy: dict[str, dict[str, list[float]]], methods: list[str]) -> list[str]:
    """Markdown rows: per background and method, median, mean and worst-quarter angle, median |EV|."""
    lines = [
        "| background | method | median angle (deg) | mean angle | worst 25 % mean | median |EV| |",
        "|---|---|---|---|---|---|",
    ]
    for setting, values in accuracy.items():
        for method in methods:
            angles = np.sort(np.asarray(values.get(f"{method} angle", [np.nan])))
            worst = angles[int(len(angles) * 0.75) :]
            ev = np.median(values.get(f"{method} ev", [np.nan]))
            lines.append(
                f"| {setting} | {method} | {np.median(angles):.2f} | {angles.mean():.2f} | {worst.mean():.2f} | "
                f"{ev:.2f} |"
            )
    return lines


def compare_models(args: Any, root: Path, began: float) -> None:
    """The known-cast selection test for each ``--model`` (its adjust variants), one table: section adjust-models."""
    variants = {**ADJUST_VARIANTS, **SELECTION_VARIANTS}
    if args.variant:
        unknown = [name for name in args.variant if name not in variants]
        if unknown:
            raise SystemExit(f"unknown variants {unknown}; known: {' | '.join(variants)}")
        variants = {name: variants[name] for name in args.variant}
    merged: dict[str, dict[str, list[float]]] = {}
    methods: list[str] = ["none"]
    left_out = []
    for item in args.model:
        label, _, path = item.partition("=")
        normalizer = FaceAdjuster(checkpoint=path).normalizer
        accuracy, counts = known_casts(normalizer, root, SELECTION_SET, variants)
        left_out.append(f"{label}: {unscored(counts)}")
        for setting, values in accuracy.items():
            into = merged.setdefault(setting, {})
            for key, value in values.items():
                method = key.rsplit(" ", 1)[0]
                if method in variants:
                    into[f"{label}: {key}"] = value
                else:  # "none" and the baselines do not depend on the model: the first model's
                    into.setdefault(key, value)
        methods += [f"{label}: {name}" for name in variants]
    command = "python benchmarks/adjust.py " + shlex.join(sys.argv[1:])
    lines = [
        f"## Models for adjust: known casts on London neutral photos (`{command}`)",
        "",
        f"Machine: {machine()}; {time.perf_counter() - began:.0f} s. The selection set of `--selection` "
        f"({sum(SELECTION_SET.values())} neutral photos of training people; the same casts for every model), each "
        "model's adjust variants; the global baselines and 'none' do not depend on the model (the first model's "
        f"photos). Left out: {'; '.join(left_out)}.",
        "",
        *accuracy_table(merged, [*methods, *ESTIMATORS]),
    ]
    publish(section(args), lines, write=not args.no_write)


def section(args: argparse.Namespace) -> str:
    """The RESULTS.md section a run writes: one per mode."""
    if args.profiles:
        return "adjust-profiles"
    if args.memory:
        return "adjust-memory"
    if args.selection:
        return "adjust-models" if args.model else "adjust-selection"
    return "adjust"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--people", type=int, default=80, help="LFW DevTest people with 4+ photos")
    parser.add_argument(
        "--per-person", type=int, default=8, help="photos per person at most (at least 4: a spread needs 4 faces)"
    )
    parser.add_argument("--london", type=int, default=102, help="London smiling photos")
    parser.add_argument("--no-write", action="store_true", help="do not rewrite RESULTS.md")
    parser.add_argument(
        "--selection",
        action="store_true",
        help="only the known-cast test on the selection set (60 London and 40 Canada *neutral* photos) with the "
        "adjust variants: the set to choose the algorithm on (the report uses the smiling photos)",
    )
    parser.add_argument(
        "--model",
        action="append",
        default=[],
        metavar="LABEL=FILE",
        help="with --selection: compare these models (checkpoints or exported) instead of the shipped one",
    )
    parser.add_argument(
        "--variant", action="append", default=[], help="with --model: an adjust variant to run (repeat; default: all)"
    )
    parser.add_argument(
        "--profiles",
        action="store_true",
        help="only `facekit adjust` on a 24 MP JPEG untagged vs tagged Display P3 (section adjust-profiles)",
    )
    parser.add_argument(
        "--memory",
        action="store_true",
        help="only the peak memory of `facekit adjust` and of one `facekit serve` request on a 24 and a 48 MP "
        "JPEG with an ICC profile and EXIF, and the 48 MP one in Display P3 and stored turned (section "
        "adjust-memory)",
    )
    args = parser.parse_args()
    if args.per_person < 4:  # before: no person kept, and a table of nan written
        parser.error("--per-person: at least 4 (a person's spread is measured over 4 or more faces)")
    if (args.model or args.variant) and not args.selection:  # before: ignored, yet named in the section's heading
        parser.error("--model and --variant go with --selection")
    root = DataSection().resolved_root()
    began = time.perf_counter()
    if args.profiles:
        figures = profiles(root)
        plain, p3 = figures["untagged"], figures["Display P3"]
        publish(
            section(args),
            [
                "## `facekit adjust` on a photo in a colour profile (`python benchmarks/adjust.py --profiles`)",
                "",
                f"Machine: {machine()}; {time.perf_counter() - began:.0f} s. The same 6000 x 4000 JPEG (a London photo "
                "enlarged, quality 92) untagged and with a Display P3 profile embedded, `facekit adjust PHOTO -o OUT` "
                "in a fresh process each (model loading included), median of 3; peak RSS the kernel's.",
                "",
                "| photo | wall time (s) | peak RSS (MB) |",
                "|---|---|---|",
                *(f"| {n} | {f['seconds']:.2f} | {f['peak_mb']:.0f} |" for n, f in figures.items()),
                "",
                f"P3 / untagged: time {p3['seconds'] / plain['seconds']:.2f}, memory "
                f"{p3['peak_mb'] / plain['peak_mb']:.2f}. The P3 photo is estimated on a 1,024-px copy converted to "
                "sRGB and its stored values corrected (`facekit/apps/adjust.py`, `_in_own_profile`).",
            ],
            write=not args.no_write,
        )
        return
    if args.memory:
        rows = large_photo_memory(root)
        publish(
            section(args),
            [
                "## Peak memory of a large photo's adjust (`python benchmarks/adjust.py --memory`)",
                "",
                f"Machine: {machine()}; {time.perf_counter() - began:.0f} s. A London photo enlarged to a quality-92 "
                "JPEG with an ICC profile (sRGB, or Display P3 where the row says so) and EXIF (orientation 1, or 6 "
                "where the row says the pixels are stored turned: read upright, the same picture); `facekit adjust "
                "PHOTO -o OUT` in a fresh process (peak RSS the kernel's), and one upload to a real `facekit serve` "
                "with the Surrey model (the whole chain: faces, adjust with the full-size download, attributes, "
                "avatar, comparison): the RSS of its process tree before the request and its peak during it "
                "(sampled every 20 ms), and the server's own high-water mark (start-up included). MB.",
                "",
                "| photo | `facekit adjust` peak | serve idle | serve request peak | serve VmHWM |",
                "|---|---|---|---|---|",
                *(
                    f"| {r['photo']} | {r['adjust']:.0f} | {r['idle']:.0f} | {r['peak']:.0f} | {r['hwm']:.0f} |"
                    for r in rows
                ),
            ],
            write=not args.no_write,
        )
        return
    if args.selection and args.model:
        compare_models(args, root, began)
        return
    normalizer = FaceAdjuster().normalizer  # the app's own (the decoder's face: no photo detail)
    if args.selection:
        variants = {**ADJUST_VARIANTS, **SELECTION_VARIANTS}
        accuracy, counts = known_casts(normalizer, root, SELECTION_SET, variants)
        # Before: the photos in which no face was found (no method scored) were left out without a word.
        skipped = counts["skipped"]
        lines = [
            "## Choosing the adjust algorithm: known casts on London neutral photos "
            "(`python benchmarks/adjust.py --selection`)",
            "",
            f"Machine: {machine()}; {time.perf_counter() - began:.0f} s. The known-cast test of the `adjust` "
            f"section on {counts['photos'] - skipped} *neutral* photos of the London set's training people "
            f"({SELECTION_SET['neutral_front']} London, {SELECTION_SET['canada']} Canada; {unscored(counts)}), the "
            "selection set (the report uses the London smiling photos). These people were in training: the face's "
            "estimate is flattered here.",
            "",
            *accuracy_table(accuracy, ["none", *variants, *ESTIMATORS]),
        ]
        publish(section(args), lines, write=not args.no_write)
        return
    spread, used, chosen = consistency(normalizer, root, args.people, args.per_person)
    if not used:
        raise SystemExit(f"no person of {chosen} had 4 photos with a face: no consistency figure, nothing written")
    accuracy, counts = known_casts(normalizer, root, {"smiling_front": args.london})
    skipped = counts["skipped"]
    seconds = speed(normalizer, root)
    peaks = memory(root)
    command = "python benchmarks/adjust.py" + (f" {shlex.join(sys.argv[1:])}" if sys.argv[1:] else "")
    lines = [
        f"## White balance and exposure from the normalized face (`{command}`)",
        "",
        f"Machine: {machine()}; {time.perf_counter() - began:.0f} s in all. The shipped "
        "default model; baselines estimate per-channel gains from the whole photo (white balance only).",
        "",
        f"**Consistency**: {used} LFW peopleDevTest people (of the first {chosen} with 4+ photos; those with 4+ photos "
        f"where a face was found), up to {args.per_person} photos each: mean distance of the central face box's (r, g) "
        "chromaticity to the person's mean, x 1e-3 (lower: the same skin looks the same in every photo).",
        "",
        "| method | spread (x 1e-3) |",
        "|---|---|",
        *(f"| {m} | {v:.2f} |" for m, v in spread.items()),
        "",
        f"**Known casts**: {counts['photos'] - skipped} London smiling photos (neutral photos of these people were in "
        f"training; {unscored(counts)}), blackbody 2,500-10,000 K, "
        "tint +-3 %, -1.5..+1.5 EV; errors on the person against the uncast photo (angular error of the mean linear "
        "RGB; |EV|).",
        "",
        *accuracy_table(accuracy, METHODS),
    ]
    lines += [
        "",
        f"**Speed**: a 6000 x 4000 JPEG read, corrected and written (quality 95), median of 3: adjust "
        f"{seconds['adjust']:.2f} s, gray-world {seconds['gray-world']:.2f} s "
        f"(ratio {seconds['adjust'] / seconds['gray-world']:.2f}); adjust estimates on a copy of at most 1,024 px "
        "and applies three table lookups at full size.",
        "",
        "**Memory**: peak RSS of `facekit adjust PHOTO -o OUT` in a fresh process (model loading included), one JPEG:",
        "",
        "| method | 6 MP (MB) | 24 MP (MB) | 24 MP / 6 MP | extra MB per added megapixel |",
        "|---|---|---|---|---|",
        *(
            f"| {m} | {peaks[(m, 6)]:.0f} | {peaks[(m, 24)]:.0f} | {peaks[(m, 24)] / peaks[(m, 6)]:.2f} | "
            f"{(peaks[(m, 24)] - peaks[(m, 6)]) / (24 - 6):.1f} |"
            for m in ("adjust", "gray-world")
        ),
    ]
    publish(section(args), lines, write=not args.no_write)


if __name__ == "__main__":
    main()
