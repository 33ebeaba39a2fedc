"""The prepare stage: photos -> filtered, aligned, per-person averaged faces split into landmarks and texture.

Paper Sec. 6.2: detect 68 landmarks, keep near-frontal neutral good photos, align (roll undone, fixed interocular
distance, 224 px crop), average each person's kept photos by morphing (warp each to the person's mean landmarks with
facekit's spline, average the pixels), then warp every average to the global mean landmarks to get its texture.

On-disk format of the dataset folder (all arrays are ``.npy``, readable lazily with ``np.load(mmap_mode="r")``):

================================  ======================================================================
``manifest.jsonl``                one row per input photo: identity, path, source, status (kept/rejected), reason,
                                  faces found, box, landmarks (original pixels), pose, quality measures
``identities.json``               row i of every array below: identity, source, photos, kept
``averages.npy``                  (N, S, S, 3) uint8: each identity's morphed average in the aligned frame
``landmarks.npy``                 (N, 68, 2) float32: its landmarks (x, y pixels of the S x S frame)
``textures.npy``                  (N, S, S, 3) uint8: the average warped onto the mean landmarks
``mean_landmarks.npy``            (68, 2) float32
``mean_face.png``                 the mean of the textures
``contact_sheet.png``             64 averages spread over all identities, with their landmarks
``summary.json``                  counts per status and reason, timing, settings
``progress*.jsonl``, ``work/``    resumable progress: one line and one ``.npz`` per finished identity
================================  ======================================================================

Resumable: every finished identity appends one complete JSON line (after its average is written atomically), so a
killed run continues where it stopped and never counts a photo twice. ``--shard i/n`` processes every n-th identity
(a cluster splits the work); whichever shard finishes last builds the arrays.
"""

from __future__ import annotations

import contextlib
import json
import logging
import multiprocessing
import os
import re
import time
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np

from facekit.data import FACE_WARP_REGULARIZATION
from facekit.data.dataset import DIGESTED, FINALIZING_MARK, prepared_digest
from facekit.data.sources import Photo, group_by_identity, photos_from_sources
from facekit.errors import DETECTOR_ERROR, FacekitError, Terminated, sigterm_raises, stops_said
from facekit.images import load_rgb
from facekit.locks import exclusive, replace_durably, temporary_beside

logger = logging.getLogger(__name__)

WORK = "work"


@dataclass(frozen=True)
class Shard:
    index: int = 0
    count: int = 1

    @classmethod
    def parse(cls, text: str) -> Shard:
        """``"i/n"`` with 0 <= i < n."""
        try:
            index, count = (int(v) for v in text.split("/"))
        except ValueError:
            raise FacekitError(f"--shard takes i/n (e.g. 0/4), got {text!r}") from None
        if not 0 <= index < count:
            raise FacekitError(f"--shard {text}: need 0 <= i < n")
        return cls(index, count)

    @property
    def progress_name(self) -> str:
        return "progress.jsonl" if self.count == 1 else f"progress.shard-{self.index}-of-{self.count}.jsonl"


@dataclass(frozen=True)
class WorkerConfig:
    """Everything a worker process needs, picklable."""

    detector: str
    detector_params: dict[str, Any]
    rules: dict[str, Any]
    sfm_folder: str
    work_dir: str


@dataclass
class PrepareReport:
    output: Path
    processed_identities: int
    processed_photos: int
    seconds: float
    finished: bool
    summary: dict[str, Any]


# ------------------------------------------------------------------------------------------------ one photo


#: The per-identity arrays prepare writes (NAME.npy), beside mean_landmarks.npy.
ARRAY_NAMES = ("averages", "landmarks", "textures")

_STATE: dict[str, Any] = {}


def _init_worker(config: WorkerConfig, quiet: bool = False) -> None:
    import torch

    import facekit
    from facekit.data.pose import load_mean_shape

    torch.set_num_threads(1)  # one process per core: threads inside would only fight
    if quiet:  # as the parent process (a spawned worker does not inherit its warnings filters)
        from facekit.errors import quiet_pillow_size_warning

        quiet_pillow_size_warning()
    _STATE["config"] = config
    _STATE["detector"] = facekit.load_component("detector", config.detector, **config.detector_params)
    _STATE["shape"] = load_mean_shape(Path(config.sfm_folder))


def _init_pool_worker(
    config: WorkerConfig, quiet: bool = False, parent: int | None = None, stop: Any = None, hangup: bool = False
) -> None:
    """A worker process of :func:`_in_workers`: :func:`_init_worker`, and a Ctrl+C (the terminal's, sent to the
    whole process group) that stops its identity between two photos instead of raising wherever the worker is, as
    does ``stop`` (a shared byte the parent sets when it stops for another reason: SIGTERM, an error). So does
    SIGHUP, which a closing terminal sends the whole group too, where the parent stops on it (``hangup``:
    :func:`facekit.errors.hangup_stops`); where the parent keeps going (under nohup, or a program's own handler)
    the worker ignores it too. Before, the default handler ended the worker wherever it was (an average it was
    writing left as a temporary for a later run to remove) and, where the program kept going, its run with "a
    prepare worker stopped without finishing". Raised
    while it waited for work or sent a result back, KeyboardInterrupt ended the worker inside the pool's queues (with
    their lock held), and the parent's shutdown could wait for it forever (ci108, ci109: the second-Ctrl+C test hung
    on a loaded machine). The parent cancels what has not started and stops the workers. A worker whose
    ``parent`` process is gone (killed: SIGKILL, the out-of-memory killer, a second SIGTERM) ends itself: before, the
    workers waited for work forever, each holding its models' memory. A SIGTERM to the whole process group (systemd,
    Slurm) is the parent's to act on (:func:`facekit.errors.stop_only_from_parent`): it stops the workers through
    ``stop`` as on a SIGTERM to it alone."""
    import signal

    from facekit.errors import stop_only_from_parent

    stop_only_from_parent()  # (first: before this process starts a thread)
    signal.signal(signal.SIGINT, _stop_between_photos)
    if hasattr(signal, "SIGHUP"):
        signal.signal(signal.SIGHUP, _stop_between_photos if hangup else signal.SIG_IGN)
    _STATE["stop"] = stop
    if parent is not None:
        _end_with(parent)
    _init_worker(config, quiet)


#: How often (s) a pool worker looks whether its parent process is still there.
PARENT_CHECK_S = 0.5


def _end_with(parent: int) -> None:
    """End this process (at once: nobody is left to take its work) when process ``parent`` is no longer its parent."""
    import threading

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(PARENT_CHECK_S)
        os._exit(1)  # (a file being written is a temporary: the next run removes it)

    threading.Thread(target=watch, name="facekit-parent-watch", daemon=True).start()


def _stop_between_photos(signum: int, frame: Any) -> None:
    _STATE["interrupted"] = True


def _measure_photo(photo: Photo) -> tuple[list[dict[str, Any]], list[tuple[np.ndarray, np.ndarray]]]:
    """Manifest rows (one per face kept or per photo rejected) and the kept faces' (aligned crop, landmarks)."""
    from facekit.align import align_paper, interocular_distance
    from facekit.data.pose import estimate_pose
    from facekit.data.quality import FaceMeasures, colourfulness, mouth_measures, rejection_reason, sharpness
    from facekit.normalize import DETECTOR_ERROR, choose_face, detect_guarded

    config: WorkerConfig = _STATE["config"]
    rules = _Rules(config.rules)
    row: dict[str, Any] = {"identity": photo.identity, "path": str(photo.path), "source": photo.source}
    image, note = load_rgb(photo.path)
    if image is None:
        return [{**row, "status": "rejected", "reason": note, "faces": 0}], []
    if note:
        row["note"] = note
    faces, why = detect_guarded(_STATE["detector"], image, str(photo.path))
    if why:  # one photo the detector fails on is rejected; the others go on
        return [{**row, "status": "rejected", "reason": DETECTOR_ERROR, "detail": why, "faces": 0}], []
    if not faces:
        return [{**row, "status": "rejected", "reason": "no_face", "faces": 0}], []
    row["faces"] = len(faces)
    rows, kept = [], []
    indices = range(len(faces)) if rules.keep_all_faces else [choose_face(faces, image.shape, rules.face)]
    for index in indices:
        face = faces[index]
        landmarks = np.asarray(face.landmarks, dtype=np.float64)
        face_row = {**row, "face": index, "box": [round(v, 1) for v in face.box]}
        face_row["landmarks"] = np.round(landmarks, 2).tolist()
        pose = estimate_pose(landmarks, (image.shape[1], image.shape[0]), _STATE["shape"])
        aligned = align_paper(image, landmarks, rules.image_size, rules.interocular_px)
        mouth_open, mouth_width = mouth_measures(landmarks)
        measures = FaceMeasures(
            interocular_px=interocular_distance(landmarks),
            yaw=pose.yaw,
            pitch=pose.pitch,
            roll=pose.roll,
            mouth_open=mouth_open,
            mouth_width=mouth_width,
            sharpness=sharpness(aligned.image, aligned.landmarks),
            colourfulness=colourfulness(aligned.image),
        )
        face_row["measures"] = measures.to_dict()
        reason = rejection_reason(measures, rules)
        if len(faces) > 1 and not rules.keep_all_faces:
            face_row["note"] = (face_row.get("note", "") + f"; {len(faces)} faces, {rules.face} kept").lstrip("; ")
        if reason is None:
            face_row.update(status="kept", reason="")
            kept.append((aligned.image, aligned.landmarks.astype(np.float32)))
        else:
            face_row.update(status="rejected", reason=reason)
        rows.append(face_row)
    return rows, kept


class _Rules:
    """Attribute access to the prepare section's plain-dict thresholds (workers get plain data)."""

    def __init__(self, values: dict[str, Any]) -> None:
        self.__dict__.update(values)

    def __getattr__(self, name: str) -> Any:  # only reached for a missing key: a programming error
        raise AttributeError(f"prepare rule {name!r} missing")


def morph_average(crops: list[np.ndarray], landmarks: list[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """Average faces by morphing: warp each (S, S, 3) uint8 crop from its landmarks (K, 2) onto their mean with the
    paper's spline (phi(r) = r) and average the pixels. Returns (uint8 image, mean landmarks (K, 2) float32)."""
    import torch

    from facekit.warp import sparse_image_warp

    mean = np.mean(np.stack(landmarks), axis=0).astype(np.float32)
    if len(crops) == 1:
        return crops[0], mean
    images = torch.from_numpy(np.stack(crops)).permute(0, 3, 1, 2).float() / 255.0
    source = torch.from_numpy(np.stack(landmarks)).float()
    destination = torch.from_numpy(mean).expand_as(source).contiguous()
    with torch.no_grad():
        warped, _ = sparse_image_warp(
            images, source, destination, order=1, regularization=FACE_WARP_REGULARIZATION, boundary_points=3
        )
    average = (warped.mean(dim=0).permute(1, 2, 0).clamp(0, 1) * 255).round().byte().numpy()
    return average, mean


def _safe_name(identity: str) -> str:
    """A file name for an identity: readable, and injective (a hash of the exact name tells apart ``a b`` and
    ``a_b``, which the readable part maps to the same string)."""
    import hashlib

    readable = "".join(c if c.isalnum() or c in "-_." else "_" for c in identity)[:80]
    return f"{readable}-{hashlib.sha256(identity.encode()).hexdigest()[:12]}"


#: Bump when the per-identity work changes meaning (invalidates every resumable prepare folder). 3: the morph
#: warp's 12 zero-flow border points again (from 2026-11-30 19:32 until 3, ``boundary_points=2`` meant 8 in tfa's
#: count; facekit.warp.boundary_control_points).
PREPARE_FORMAT = 3
FINGERPRINT = "fingerprint.json"


def recipe_fingerprint(plan: Any) -> dict[str, Any]:
    """:func:`settings_fingerprint` of the prepared set ``plan``'s recipe asks for (what training compares with the
    set's ``fingerprint.json``)."""
    detector = plan.components["detector"]
    rules = plan.recipe.prepare.model_dump(mode="json")
    return settings_fingerprint(WorkerConfig(detector.spec.name, detector.params.model_dump(), rules, "", ""))


def settings_fingerprint(config: WorkerConfig) -> dict[str, Any]:
    """What every per-identity result depends on besides its photos: detector, its params and the filter rules
    (not the output folder or the worker count)."""
    rules = {k: v for k, v in config.rules.items() if k not in ("output", "workers")}
    # The choice before it was a setting (largest), or none at all (every face kept): folders made then still match.
    if rules.get("face") == "largest" or rules.get("keep_all_faces"):
        rules.pop("face", None)
    return {
        "format": PREPARE_FORMAT,
        "detector": config.detector,
        "detector_params": config.detector_params,
        "rules": rules,
    }


def made_from(record: dict[str, Any], items: list[tuple[str, str]]) -> bool:
    """Whether an identity's ``record`` was made from its photos ``items`` as they are now (:func:`inputs_digest`;
    records made before the paths were made absolute there are compared as they were made, so they stay done)."""
    recorded = record.get("inputs")
    return recorded == inputs_digest(items) or recorded == inputs_digest(items, absolute=False)


def inputs_digest(items: list[tuple[str, str]], root: Path | None = None, absolute: bool = True) -> str:
    """sha256 over an identity's photos (path, source, size, modification time): a changed photo set is redone.
    Paths are made absolute (``absolute``), so data.root spelled another way (``../data`` from another folder, a
    trailing ``/``) is the same photos (before: every identity was done again, hours at the paper's scale).
    With the data ``root``: as any machine sharing the data sees them (paths relative to it, else as given, and
    sizes, not modification times): how a shard judges another shard's record (run on another node, the data
    mounted elsewhere or copied) before it builds the set from it."""
    import hashlib

    digest = hashlib.sha256()
    local = root is None and absolute
    for path, source in sorted(items, key=lambda item: (os.path.abspath(item[0]), item[1]) if local else item):
        shown = os.path.abspath(path) if local else path
        try:
            stat = os.stat(path)
            if root is None:
                digest.update(f"{shown}|{source}|{stat.st_size}|{stat.st_mtime_ns}\n".encode())
            else:
                name = os.path.relpath(path, root) if Path(path).is_relative_to(root) else path
                digest.update(f"{name}|{source}|{stat.st_size}\n".encode())
        except OSError:
            digest.update(f"{shown}|{source}|missing\n".encode())
    return digest.hexdigest()


def _flatten(value: Any, prefix: str = "") -> dict[str, Any]:
    """{"a": {"b": 1}} -> {"a.b": 1}, to name exactly which setting changed."""
    if not isinstance(value, dict):
        return {prefix or "(all)": value}
    flat: dict[str, Any] = {}
    for key, item in value.items():
        flat.update(_flatten(item, f"{prefix}.{key}" if prefix else str(key)))
    return flat


#: A fingerprint's keys as a recipe spells them (fingerprint_changes).
RECIPE_NAMES = {"rules": "prepare", "detector_params": "components.detector.params", "detector": "components.detector"}


def fingerprint_changes(before: Any, now: Any) -> list[str]:
    """The settings two fingerprints differ in, named as a recipe spells them (``prepare.max_yaw_deg``,
    ``components.detector.params.upsample``; ``format``: prepare's own format, a newer facekit's)."""
    old, new = _flatten(before), _flatten(now)
    changed = sorted(key for key in set(old) | set(new) if old.get(key) != new.get(key))
    named = []
    for key in changed:
        head, _, rest = key.partition(".")
        recipe = RECIPE_NAMES.get(head)
        named.append(
            f"{recipe}.{rest}" if recipe and rest else recipe or ("prepare's format" if key == "format" else key)
        )
    return named


def _check_fingerprint(output: Path, fingerprint: dict[str, Any], record: bool = True) -> None:
    """Refuse to continue a folder made with other settings; record the settings of a new one (``record``)."""
    path = output / FINGERPRINT
    if path.is_file():
        try:
            previous = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            previous = None
        if previous != fingerprint:
            changed = fingerprint_changes(previous, fingerprint)
            raise FacekitError(
                f"prepare.output {output} holds work made with other settings ({', '.join(changed) or 'unreadable'}"
                "): choose another prepare.output, or delete that folder to start again"
            )
        return
    if read_progress(output):
        raise FacekitError(
            f"prepare.output {output} holds work from an older facekit that did not record its settings: delete it "
            "or choose another prepare.output"
        )
    if record:
        _write_atomic(path, lambda h: h.write((json.dumps(fingerprint, indent=1, sort_keys=True) + "\n").encode()))


def process_identity(task: tuple[str, list[tuple[str, str]]]) -> dict[str, Any]:
    """Worker: measure and filter every photo of one identity, write its morphed average, return its record."""
    identity, items = task
    config: WorkerConfig = _STATE["config"]
    digest = inputs_digest(items)
    rows: list[dict[str, Any]] = []
    groups: dict[str, list[tuple[np.ndarray, np.ndarray]]] = {}
    for path, source in items:
        stop = _STATE.get("stop")
        if _STATE.get("interrupted") or (stop is not None and stop.value):  # (a pool worker's: _init_pool_worker)
            raise KeyboardInterrupt
        photo_rows, kept = _measure_photo(Photo(identity, Path(path), source))
        for row, face in zip([r for r in photo_rows if r["status"] == "kept"], kept, strict=True):
            # With keep_all_faces each face of each photo is its own identity (keyed by photo and face: the faces
            # ranked second in different photos are not one person); otherwise every kept face is the same person.
            key = f"{identity}#{Path(path).name}#{row['face']}" if config.rules["keep_all_faces"] else identity
            row["identity"] = key
            groups.setdefault(key, []).append(face)
        rows.extend(photo_rows)
    averages = []
    for key, faces in sorted(groups.items()):
        image, landmarks = morph_average([f[0] for f in faces], [f[1] for f in faces])
        target = Path(config.work_dir) / f"{_safe_name(key)}.npz"
        _write_atomic(target, partial(np.savez, image=image, landmarks=landmarks))
        averages.append({"identity": key, "file": target.name, "kept": len(faces)})
    return {"identity": identity, "photos": len(items), "inputs": digest, "rows": rows, "averages": averages}


def detector_failed(record: dict[str, Any]) -> bool:
    """Whether the detector raised on one of this identity's photos: the next run redoes it (the failure may be
    passing: a device out of memory, a plugin fixed since)."""
    return any(row.get("reason") == DETECTOR_ERROR for row in record.get("rows", ()))


def _same_outcome(record: dict[str, Any], previous: dict[str, Any] | None) -> bool:
    """A redone identity came out as its recorded one (the detector failed on the same photos again): nothing to
    append, so the arrays (and the training pool keyed on them) are not rebuilt for it."""
    if previous is None:
        return False
    keys = ("inputs", "rows", "averages")
    return json.loads(json.dumps({k: record.get(k) for k in keys})) == {k: previous.get(k) for k in keys}


# ------------------------------------------------------------------------------------------------ bookkeeping


def read_progress(output: Path) -> dict[str, dict[str, Any]]:
    """Finished identities from every ``progress*.jsonl`` (a torn last line from a killed run is ignored). An
    identity done more than once (a rerun with another shard count redid it) keeps its latest record: the one with
    the highest ``written`` stamp (records written before the stamp count as oldest, in file order)."""
    done: dict[str, dict[str, Any]] = {}
    for path in sorted(output.glob("progress*.jsonl")):
        for line in path.read_text(encoding="utf-8").splitlines():
            try:
                record = json.loads(line)
            except json.JSONDecodeError:
                continue
            earlier = done.get(record["identity"])
            if earlier is None or record.get("written", 0) >= earlier.get("written", 0):
                done[record["identity"]] = record
    return done


def _append(path: Path, record: dict[str, Any]) -> None:
    """Append ``record`` to the progress file ``path``, stamped with when it was written (ns; read_progress keeps
    the latest record of an identity)."""
    with path.open("a", encoding="utf-8") as handle:
        handle.write(json.dumps({**record, "written": time.time_ns()}) + "\n")
        handle.flush()
        os.fsync(handle.fileno())


def _repair_torn_line(path: Path) -> None:
    """Drop a partial last line left by a killed run, so the next append starts on a fresh line."""
    if not path.exists():
        return
    data = path.read_bytes()
    if data and not data.endswith(b"\n"):
        path.write_bytes(data[: data.rfind(b"\n") + 1])


def _items(photos: list[Photo]) -> list[tuple[str, str]]:
    """An identity's photos as a worker gets them (picklable (path, source) pairs)."""
    return [(str(p.path), p.source) for p in photos]


def _tasks(groups: dict[str, list[Photo]], todo: list[str]) -> Iterator[tuple[str, list[tuple[str, str]]]]:
    for identity in todo:
        yield identity, _items(groups[identity])


def run_prepare(
    plan: Any,
    shard: Shard = Shard(),
    progress: bool = False,
    limit: int | None = None,
    groups: dict[str, list[Photo]] | None = None,
    on_locked: Callable[[], object] | None = None,
) -> PrepareReport:
    """Run (or continue) the prepare stage of a resolved recipe ``plan``. ``limit`` caps identities (for tests);
    ``groups``: what :func:`check_preparable` returned, when the caller checked it already; ``on_locked``: called
    once the shard's lock is held, before any work (the caller's run record: a prepare refused as another's running
    into the folder leaves none; helper-221: it was written before the lock, and stayed, unfinished)."""
    if groups is None:
        groups = check_preparable(plan)
    output = Path(plan.recipe.prepare.output)
    (output / WORK).mkdir(parents=True, exist_ok=True)
    # One process per shard; the shards themselves may run at once (that is what they are for). SIGTERM and SIGHUP
    # (the terminal closed; not under nohup) end the run as Ctrl+C does: the workers stopped, what they finished kept.
    # Ctrl+C says what SIGTERM says (helper-188: the CLI's line for every command).
    with (
        stops_said(lambda by: TERMINATED.format(signal=by)),
        sigterm_raises(TERMINATED),
        exclusive(output, f"prepare (shard {shard.index}/{shard.count})", f".facekit.{shard.progress_name}.lock"),
    ):
        if on_locked is not None:
            on_locked()
        return _run_prepare(plan, output, groups, shard, progress, limit)


#: What a prepare stopped by SIGTERM or SIGHUP says, ``{signal}`` its name (:class:`facekit.errors.Terminated`).
TERMINATED = (
    "prepare stopped by {signal}: the people it finished are kept, and prepare run again goes on with the others"
)


def check_preparable(plan: Any) -> dict[str, list[Photo]]:
    """What prepare checks before it writes anything (the callers check it before their run record, so a refused
    run leaves no folder): a 68-point detector, data.train sources holding photos, and a prepare.output made with
    these settings if it holds work. Returns the photos by identity."""
    from facekit.errors import raise_first
    from facekit.pipeline import prepare_problems

    recipe = plan.recipe
    raise_first(prepare_problems(plan))  # the settings' (what `facekit check` says): detector, data.train
    groups = group_by_identity(photos_from_sources(recipe.data.resolved_root(), recipe.data.train))
    if not groups:
        sources = ", ".join(_described(s) for s in recipe.data.train)
        raise FacekitError(
            f"data.train's sources hold no photos ({sources}): a folder source "
            "wants <folder>/<person>/<photo> files (or photos directly in it, one person each), under data.root when "
            "the path is relative; an lfw source keeps the people of its list with at least min_photos photos"
        )
    output = Path(recipe.prepare.output)
    if output.is_dir():
        # A folder without prepare's settings record is not one of its own: any file in it is the user's, which its
        # fixed names (summary.json, contact_sheet.png, ...) would replace (helper-74: they were, without a word).
        from facekit.batch import refuse_foreign_folder

        _check_fingerprint(output, recipe_fingerprint(plan), record=False)  # (an older facekit's folder: said so)
        if not (output / FINGERPRINT).is_file():  # its own folder may hold anything else (helper-76: a README)
            refuse_foreign_folder(output, (), "prepare.output")
    elif output.exists():
        raise FacekitError(f"prepare.output {output} is a file, not a folder: choose another prepare.output")
    return groups


def _run_prepare(
    plan: Any, output: Path, groups: dict[str, list[Photo]], shard: Shard, progress: bool, limit: int | None
) -> PrepareReport:
    recipe = plan.recipe
    rules = recipe.prepare
    detector = plan.components["detector"]
    root = recipe.data.resolved_root()
    identities = sorted(groups)[:limit]
    mine = [identity for i, identity in enumerate(identities) if i % shard.count == shard.index]
    progress_file = output / shard.progress_name
    _repair_torn_line(progress_file)
    config = WorkerConfig(
        detector=detector.spec.name,
        detector_params=detector.params.model_dump(),
        rules=rules.model_dump(mode="json"),
        sfm_folder=str(root / "sfm"),
        work_dir=str(output / WORK),
    )
    _check_fingerprint(output, recipe_fingerprint(plan))  # the settings training checks the set against
    remove_stale_temporaries(output)
    done = read_progress(output)
    # An identity is done only if its record was made from the same photos (same paths, sizes and times) and the
    # detector did not fail on one of them (a failure may be passing: out of a device's memory, a plugin's bug).
    todo = [
        i
        for i in mine
        if i not in done
        or detector_failed(done[i])
        or not made_from(done[i], _items(groups[i]))
        or not _work_files_present(output, done[i])
    ]
    logger.info(
        "prepare: %d identities, %d done, %d to do in shard %s", len(mine), len(mine) - len(todo), len(todo), shard
    )
    start = time.perf_counter()
    photos_done = 0
    if todo:
        photos_done = _process(todo, groups, config, progress_file, rules.workers, progress, done, root)
    seconds = time.perf_counter() - start
    done = read_progress(output)
    retry = sorted(i for i in mine if i in done and detector_failed(done[i]))
    if retry:
        logger.warning(
            "prepare: the detector failed on photos of %d identities (%s; their rows' reason: %s): the next run "
            "retries them",
            len(retry),
            ", ".join(retry[:3]) + (", ..." if len(retry) > 3 else ""),
            DETECTOR_ERROR,
        )

    # Finished when every identity (this shard's and the others') has a record made from its photos as they are now:
    # another shard's record of photos changed since is stale until that shard runs again.
    def current(identity: str) -> bool:  # made from the photos as they are now
        record = done.get(identity)
        if record is None or not _work_files_present(output, record):
            return False
        if identity in mine:
            return made_from(record, _items(groups[identity]))
        portable = record.get("photos_sha256")  # another shard's, perhaps made on another node
        return portable is None or portable == inputs_digest(_items(groups[identity]), root)  # None: an older record

    stale = [identity for identity in identities if not current(identity)]
    finished = not stale
    if stale and shard.count > 1 and all(identity not in mine for identity in stale):
        logger.info(
            "prepare: %d identities of other shards are not done or their photos changed since (%s): the set is "
            "built when their shards have run",
            len(stale),
            ", ".join(stale[:3]) + (", ..." if len(stale) > 3 else ""),
        )
    summary: dict[str, Any] = {}
    if finished:
        # Shards finishing together build the arrays one after the other, and only once: a later shard finds the
        # summary newer than every progress file and leaves the arrays as they are. A wait of more than a moment is
        # said (before: the run sat silent, and seemed to hang, while another built a large set).
        def waiting() -> None:
            logger.warning("prepare: waiting for another prepare into %s to finish building the set...", output)

        with exclusive(output, "prepare (merge)", ".facekit.finalize.lock", wait=True, waiting=waiting):
            summary_path = output / "summary.json"
            newest = max(p.stat().st_mtime_ns for p in output.glob("progress*.jsonl"))
            built = summary_path.is_file() and (output / "identities.json").is_file()
            built = built and not (output / FINALIZING_MARK).exists()
            wanted = identities_digest(identities)  # the arrays hold these people: a changed list rebuilds them
            previous = json.loads(summary_path.read_text()) if built else {}
            fresh = built and summary_path.stat().st_mtime_ns > newest and previous.get("identities_sha256") == wanted
            stats = _array_stats(output)
            if fresh and _arrays_intact(output, previous, stats):
                summary = previous
                if summary.get("arrays_stat") != stats:  # checked the long way: remember the files
                    summary["arrays_stat"] = stats
                    text = json.dumps(summary, indent=2) + "\n"
                    before = summary_path.stat()
                    _write_atomic(summary_path, lambda h: h.write(text.encode()))
                    # Its old time: "newer than every progress file" must keep meaning "built from them" (a shard's
                    # record written meanwhile is then still seen as not in the arrays).
                    os.utime(summary_path, ns=(before.st_atime_ns, before.st_mtime_ns))
            else:
                # Marked while the files are rewritten, and the summary (written last) gone: a run killed here
                # leaves a set that training refuses (PreparedFaces) and the next prepare builds again.
                (output / FINALIZING_MARK).touch()
                summary_path.unlink(missing_ok=True)
                summary = finalize(output, [done[i] for i in identities], rules.image_size)
                summary["identities_sha256"] = wanted
                summary["arrays_sha256"] = prepared_digest(output)
                summary["arrays_stat"] = _array_stats(output)  # what a rerun compares before it reads GBs
                # The manifest keeps photo paths as given; where they were given from lets training elsewhere (a
                # GPU node, another folder) find them under its own data root (facekit.pool.manifest_photo).
                summary["paths_from"] = {"cwd": os.getcwd(), "data_root": os.path.abspath(root)}
                summary["last_run"] = {"photos": photos_done, "seconds": round(seconds, 1)}
                if photos_done:
                    summary["last_run"]["photos_per_second"] = round(photos_done / seconds, 2)
                text = json.dumps(summary, indent=2) + "\n"
                _write_atomic(summary_path, lambda h: h.write(text.encode()))
                (output / FINALIZING_MARK).unlink()
    return PrepareReport(output, len(todo), photos_done, seconds, finished, summary)


def _array_stats(output: Path) -> dict[str, list[int] | None]:
    """Size and modification time of each file a prepared set's digest covers (None: missing)."""
    stats: dict[str, list[int] | None] = {}
    for name in DIGESTED:
        try:
            found = (output / name).stat()
        except FileNotFoundError:
            stats[name] = None
            continue
        stats[name] = [found.st_size, found.st_mtime_ns]
    return stats


def _arrays_intact(output: Path, summary: dict[str, Any], stats: dict[str, list[int] | None]) -> bool:
    """Whether a built set's arrays are still those its summary records: unchanged files (size and time, as
    recorded) are; otherwise every array must open (not missing or cut short, unless nobody was kept) and, where
    the summary has one, match its sha256 (which reads GBs at 224 px, so only then). Missing, cut short or altered
    arrays are built again, else training refuses them and prepare would call them done, run after run. ``stats``:
    :func:`_array_stats` now."""
    if summary.get("arrays_stat") == stats:
        return True
    if summary.get("identities_kept", 1):
        for name in (*ARRAY_NAMES, "mean_landmarks"):
            try:
                np.load(output / f"{name}.npy", mmap_mode="r")
            except (OSError, ValueError):
                return False
    recorded = summary.get("arrays_sha256")
    return recorded is None or prepared_digest(output) == recorded


def _work_files_present(output: Path, record: dict[str, Any]) -> bool:
    """Whether the work files an identity's record names are there (``work/`` deleted by hand: redo the identity
    rather than fail when the arrays are built from them)."""
    return all((output / WORK / entry["file"]).is_file() for entry in record.get("averages", []))


def _described(source: Any) -> str:
    """A data source in a message: ``folder ~/photos``, ``lfw peopleDevTrain.txt``, ``london neutral_front``."""
    detail = {"folder": source.path, "lfw": source.people, "london": source.subset}.get(source.source)
    return f"{source.source} {detail}" if detail else source.source


def identities_digest(identities: list[str]) -> str:
    """sha256 of the sorted identity names a prepared set is built from."""
    import hashlib

    return hashlib.sha256("\n".join(sorted(identities)).encode()).hexdigest()


def _shutdown(executor: Any, stop: Any) -> None:
    """``executor.shutdown(wait=True, cancel_futures=True)`` that a second Ctrl+C cannot cut short. Interrupted while
    it waited, the shutdown left the workers waiting for work (or their stop) that never came and the process
    waiting for them at exit, forever (helper-113: CPython 3.11's ProcessPoolExecutor; `timeout -s INT` sends the
    command two). The wait is the identities the workers are on, which ``stop`` (shared with the workers) makes
    them leave between two photos, as a terminal's Ctrl+C does: before, on SIGTERM (sent to this process alone) or
    an error, each worker finished every photo of its person, whose record nobody wrote, and a person with hundreds
    of photos kept the stop waiting past systemd's 90 s or docker's 10 s."""
    import signal
    import threading

    stop.value = 1  # (at the end of a finished run the workers are idle: it changes nothing)

    if threading.current_thread() is not threading.main_thread():  # only the main thread gets KeyboardInterrupt
        executor.shutdown(wait=True, cancel_futures=True)
        return
    previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        executor.shutdown(wait=True, cancel_futures=True)
    finally:
        signal.signal(signal.SIGINT, previous)


def _start_resource_tracker_deaf_to_hangups() -> None:
    """Start multiprocessing's resource tracker (a process of its own that removes the pool's semaphores should
    everything else die; the pool's queues start it) with SIGHUP blocked, as multiprocessing starts it with SIGINT
    and SIGTERM blocked: a closing terminal's SIGHUP, which reaches the whole process group, ended it, and the
    stopping run then relaunched it, saying it had "died unexpectedly" and that resources might leak, and the new
    one a KeyError traceback. Blocked only in this thread, and only while it starts: a SIGHUP to this process
    meanwhile waits (or goes to another thread), never lost. A tracker already running is left as it is."""
    import signal
    from multiprocessing import resource_tracker

    if not hasattr(signal, "pthread_sigmask") or not hasattr(signal, "SIGHUP"):
        return
    before = signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGHUP})
    try:
        resource_tracker.ensure_running()
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, before)


def _in_workers(
    stack: contextlib.ExitStack, workers: int, config: WorkerConfig, tasks: Iterable[tuple[str, list[Any]]]
) -> _Finished:
    """process_identity's records for ``tasks`` from ``workers`` processes, as they finish (the tasks are handed to
    the workers as the records are first asked for: :class:`_Finished`). A worker that dies (the out-of-memory
    killer, kill -9) or cannot start is a FacekitError: multiprocessing.Pool replaced such a worker and waited for its
    lost task forever, at full CPU when every new worker failed to start."""
    from concurrent.futures import ProcessPoolExecutor

    from facekit.data.pose import load_mean_shape
    from facekit.errors import hangup_stops, pillow_size_warning_quiet

    load_mean_shape(Path(config.sfm_folder))  # what a worker loads first: a missing model is its one line here
    context = multiprocessing.get_context("spawn")
    _start_resource_tracker_deaf_to_hangups()
    # A byte without a lock: a worker killed while it held a lock (the out-of-memory killer) would leave the others
    # and the parent waiting for it forever.
    stop = context.RawValue("b", 0)
    executor = ProcessPoolExecutor(
        workers,
        mp_context=context,
        initializer=_init_pool_worker,
        initargs=(config, pillow_size_warning_quiet(), os.getpid(), stop, hangup_stops()),
    )
    stack.callback(_shutdown, executor, stop)  # on an error, SIGTERM or SIGHUP: no new identity starts, the others stop
    return _Finished(executor, stop, tasks)


class _Finished:
    """The records of a pool's identities, as they finish (iterated; where a worker dies, those the others finished
    are given before the error), and those finished but not given yet when the run stopped (:meth:`after_stop`)."""

    def __init__(self, executor: Any, stop: Any, tasks: Iterable[tuple[str, list[Any]]]) -> None:
        self.executor, self.stop, self.tasks = executor, stop, tasks
        self.futures: list[Any] = []
        self.given: set[Any] = set()

    def __iter__(self) -> Iterator[dict[str, Any]]:
        from concurrent.futures import as_completed
        from concurrent.futures.process import BrokenProcessPool

        from facekit.errors import stops_held, workers_start_with_sigterm_held

        try:
            # The submits spawn the workers, born with SIGTERM blocked until their initializer's stop_only_from_parent
            # takes it: before, a SIGTERM to the process group in the second a worker took to import numpy, Pillow
            # and facekit (its default action then) ended it outright, "a prepare worker stopped without finishing".
            # Every stop is held until all are handed over, and comes here, in the caller's loop, whose after_stop
            # keeps what the first workers finished meanwhile: before, the submits ran before the caller's loop, and
            # a stop among them (Ctrl+C; SIGTERM as they ended) dropped the people finished by then, done again by
            # the rerun (their averages written).
            with stops_held(), _one_blas_thread(), workers_start_with_sigterm_held():
                for task in self.tasks:
                    self.futures.append(self.executor.submit(process_identity, task))
            for future in as_completed(self.futures):
                yield future.result()
                # Given once the caller asks for the next: a stop before (as its result was taken, or as the caller
                # wrote it) leaves it to after_stop, the caller keeping each person once (before: marked given first,
                # a stop as it was taken dropped it, and a rerun did it again)
                self.given.add(future)
        except BrokenProcessPool:
            # The people the other workers had finished (their records here, their averages written) are given
            # before the error, as after a stop: before, those not given yet were left out of the progress and done
            # again by the rerun. Those whose records the broken pool lost with its workers are done again.
            yield from self.after_stop()
            raise FacekitError(
                "a prepare worker stopped without finishing (out of memory, killed, or it could not start: a message "
                "above may say why); the identities finished so far are kept: run prepare again to go on, with "
                "prepare.workers=1 to see a worker's own error or to use less memory"
            ) from None

    def after_stop(self) -> Iterator[dict[str, Any]]:
        """The identities the workers finished (their averages written) and not given yet, once a stop came, wherever
        it landed: in the wait for the next one, while the caller wrote the last (helper-188: "stopped at 0/18"
        while workers had finished people, done again by the next run; helper-198: a stop in the caller's loop body
        dropped them still), or as the identities were handed to the workers. The workers stopped first: no more
        finish meanwhile."""
        _shutdown(self.executor, self.stop)
        for future in self.futures:
            if future not in self.given and not future.cancelled() and future.exception() is None:
                self.given.add(future)
                yield future.result()


@contextlib.contextmanager
def _one_blas_thread() -> Iterator[None]:
    """Workers spawned in the block start OpenBLAS with no thread of its own (``OPENBLAS_NUM_THREADS=1`` in the
    environment they inherit; this process's own BLAS has started already). numpy's import in a spawned worker,
    before its initializer runs, started an OpenBLAS thread that did not block SIGTERM, so a SIGTERM sent to the
    process group could land on it and end the worker outright, whatever :func:`facekit.errors.stop_only_from_parent`
    set (ci125: "a prepare worker stopped without finishing" where the run should stop between two photos). A worker
    computes on one thread anyway (one process per core)."""
    before = os.environ.get("OPENBLAS_NUM_THREADS")
    os.environ["OPENBLAS_NUM_THREADS"] = "1"
    try:
        yield
    finally:
        if before is None:
            os.environ.pop("OPENBLAS_NUM_THREADS", None)
        else:
            os.environ["OPENBLAS_NUM_THREADS"] = before


def _process(
    todo: list[str],
    groups: dict[str, list[Photo]],
    config: WorkerConfig,
    progress_file: Path,
    workers: int,
    show_progress: bool,
    previous: dict[str, dict[str, Any]],
    root: Path,
) -> int:
    """Process ``todo``'s identities, appending each record to ``progress_file`` unless it is ``previous``'s again
    (:func:`_same_outcome`); the number of photos read."""
    from rich.progress import BarColumn, MofNCompleteColumn, TextColumn, TimeRemainingColumn

    from facekit.progress import Progress, RateColumn

    photos = 0
    columns = (
        TextColumn("prepare"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("identities"),
        RateColumn(),
        TimeRemainingColumn(),
    )
    with Progress(*columns, disable=not show_progress) as bar, contextlib.ExitStack() as stack:
        task = bar.add_task("prepare", total=len(todo), unit="identity")
        results: Iterable[dict[str, Any]]
        finished_at_the_stop: Callable[[], Iterable[dict[str, Any]]] = tuple
        if workers == 1:
            _init_worker(config)
            results = map(process_identity, _tasks(groups, todo))
        else:  # spawn: a fresh interpreter per worker, so no torch/OpenMP state is inherited through fork
            results = pool = _in_workers(stack, workers, config, _tasks(groups, todo))
            finished_at_the_stop = pool.after_stop

        def keep(record: dict[str, Any]) -> None:
            record["photos_sha256"] = inputs_digest(_items(groups[record["identity"]]), root)
            if not _same_outcome(record, previous.get(record["identity"])):
                _append(progress_file, record)  # (twice at worst, after a stop: the latest record counts)

        in_hand: list[dict[str, Any]] = []
        try:
            for record in results:
                in_hand[:] = [record]
                keep(record)
                in_hand.clear()
                photos += record["photos"]
                bar.advance(task)
        except (KeyboardInterrupt, Terminated):
            # Every person finished before the stop is kept, wherever it landed: in the wait for the next person, or
            # in this loop's body, the one in hand included (before, there, those finished were redone by a rerun);
            # each once (the one in hand is the pool's not given yet too).
            again = {record["identity"]: record for record in [*in_hand, *finished_at_the_stop()]}
            for record in again.values():
                keep(record)
            raise
    return photos


def finalize(output: Path, records: list[dict[str, Any]], image_size: int) -> dict[str, Any]:
    """Build the arrays, the manifest, the mean face and the contact sheet from the finished identities."""
    import torch

    from facekit.warp import sparse_image_warp

    rows = [row for record in records for row in record["rows"]]
    manifest = "".join(json.dumps(row) + "\n" for row in rows)
    _write_atomic(output / "manifest.jsonl", lambda handle: handle.write(manifest.encode()))
    entries = [avg for record in records for avg in record["averages"]]
    source_of = {row["identity"]: row["source"] for row in rows}
    photos_of = {record["identity"]: record["photos"] for record in records}
    images, landmarks = [], []
    for entry in entries:
        with np.load(output / WORK / entry["file"]) as data:
            images.append(data["image"])
            landmarks.append(data["landmarks"])
    summary: dict[str, Any] = {
        "photos": len({row["path"] for row in rows}),
        # The photos averaged, and their faces (more with keep_all_faces: each a row of its own; helper-69: "9 of
        # 6 photos kept" counted faces as photos).
        "photos_kept": len({row["path"] for row in rows if row["status"] == "kept"}),
        "faces_kept": sum(row["status"] == "kept" for row in rows),
        "identities_seen": len(records),
        "identities_kept": len(entries),
        "status": dict(Counter(row["status"] for row in rows)),
        "reasons": dict(Counter(row["reason"].split(" ")[0] for row in rows if row["status"] != "kept")),
        "image_size": image_size,
    }
    identities = [
        {
            "identity": e["identity"],
            "source": source_of.get(e["identity"], ""),
            "kept": e["kept"],
            "photos": photos_of.get(e["identity"].split("#")[0], e["kept"]),
        }
        for e in entries
    ]
    listed = json.dumps(identities, indent=1) + "\n"
    _write_atomic(output / "identities.json", lambda handle: handle.write(listed.encode()))
    if not entries:  # nothing to train on: an earlier run's arrays must not pass for this one's
        for name in (*ARRAY_NAMES, "mean_landmarks"):
            (output / f"{name}.npy").unlink(missing_ok=True)
        # No log line: both callers (`facekit prepare`, the run's prepare stage) say it as their one-line error
        # (facekit.pipeline.prepare_note); a warning here came before it and said it twice (helper-202)
        return summary
    averages = np.stack(images)
    points = np.stack(landmarks).astype(np.float32)
    mean_points = points.mean(axis=0)
    textures = np.empty_like(averages)
    with torch.no_grad():
        for start in range(0, len(averages), 64):
            batch = torch.from_numpy(averages[start : start + 64]).permute(0, 3, 1, 2).float() / 255.0
            source = torch.from_numpy(points[start : start + 64])
            target = torch.from_numpy(mean_points).expand_as(source).contiguous()
            warped, _ = sparse_image_warp(
                batch, source, target, order=1, regularization=FACE_WARP_REGULARIZATION, boundary_points=3
            )
            textures[start : start + 64] = (warped.clamp(0, 1) * 255).round().byte().permute(0, 2, 3, 1).numpy()
    for name, array in zip(ARRAY_NAMES, (averages, points, textures), strict=True):
        _save_atomic(output / f"{name}.npy", array)
    _save_atomic(output / "mean_landmarks.npy", mean_points)
    from PIL import Image

    Image.fromarray(textures.mean(axis=0).round().astype(np.uint8)).save(output / "mean_face.png")
    shown = np.unique(np.linspace(0, len(averages) - 1, min(64, len(averages))).round().astype(int))  # every source
    contact_sheet(averages[shown], points[shown]).save(output / "contact_sheet.png")
    summary["sources"] = dict(Counter(i["source"] for i in identities))
    return summary


def _save_atomic(path: Path, array: np.ndarray) -> None:
    _write_atomic(path, lambda handle: np.save(handle, array))


#: A temporary file of :func:`_write_atomic` (``.NAME.XXXXXXXX.tmp``, NAME one of prepare's own files).
_TEMPORARY = re.compile(r"\..+\.(npy|npz|json|jsonl|png)\.[a-z0-9_]{8}\.tmp")


def remove_stale_temporaries(output: Path) -> int:
    """Delete the temporary files killed prepare runs left in ``output`` and its ``work/`` (unique names, so they
    piled up run after run): only :func:`_write_atomic`'s names, untouched for an hour
    (:func:`facekit.locks.remove_stale`; a shard running at the same time in the same folder is writing its own,
    which are fresh). Returns how many."""
    from facekit.locks import remove_stale

    return sum(remove_stale(folder, _TEMPORARY, mine=False) for folder in (output, output / WORK))


def _write_atomic(path: Path, write: Callable[[BinaryIO], Any]) -> None:
    """``write`` into a temporary file beside ``path``, then rename: a reader (or a resumed run) never sees half a
    file. The temporary name is unique (:func:`facekit.locks.temporary_beside`), so shards started together that
    write the same file (the fingerprint) do not share one."""
    temporary = temporary_beside(path)
    try:
        with temporary.open("wb") as handle:
            write(handle)
        replace_durably(temporary, path)
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise


def contact_sheet(images: np.ndarray, landmarks: np.ndarray | None = None, columns: int = 8) -> Any:
    """A grid (PIL image) of (n, S, S, 3) uint8 faces, with their (n, K, 2) landmarks drawn if given."""
    from PIL import Image, ImageDraw

    count, size = len(images), images.shape[1]
    rows = max(1, -(-count // columns))
    sheet = Image.new("RGB", (columns * size, rows * size), "white")
    for i, image in enumerate(images):
        tile = Image.fromarray(image)
        if landmarks is not None:
            draw = ImageDraw.Draw(tile)
            for x, y in landmarks[i]:
                draw.ellipse((x - 1, y - 1, x + 1, y + 1), fill=(0, 255, 0))
        sheet.paste(tile, ((i % columns) * size, (i // columns) * size))
    return sheet
