"""Random morphs between similar identities: the training-data augmentation of Cole et al. CVPR 2017, Sec. 5.

A morph starts from a seed identity ``i``, picks a partner ``j`` uniformly among ``i``'s ``k`` nearest neighbours
(distance ``||L_i - L_j||^2 + texture_weight * ||T_i - T_j||^2``), and interpolates landmarks and textures with
independent weights ``a, b ~ U[0, 1]``: ``L = (1 - a) L_i + a L_j``, ``T = (1 - b) T_i + b T_j``. Textures are
registered to the mean landmarks, so pixel-wise interpolation is a morph. The texture is pasted onto the seed's
background *in the mean-face frame* (background_i warped from ``L_i`` to the mean landmarks; gradient-domain
compositing with the soft convex-hull mask of the mean landmarks, :mod:`facekit.data.poisson`), and the composite is
warped from the mean landmarks to ``L`` with the polyharmonic spline warp (:func:`facekit.warp.sparse_image_warp`).

Array inputs (any array-like indexed lazily, e.g. ``np.memmap``):

* ``landmarks``: ``(N, K, 2)`` float32 per-identity averaged landmarks, ``(x, y)`` pixels in the aligned
  ``S x S`` frame;
* ``textures``: ``(N, S, S, 3)`` uint8 per-identity average faces warped to the mean landmarks;
* ``mean_landmarks``: ``(K, 2)``;
* ``backgrounds``: ``(N, S, S, 3)`` uint8 per-identity aligned average images (the seed photos).

Materialised format (:func:`materialise`): ``out_dir/index.json`` plus one directory per shard, ``shard-00000/``
holding ``images.npy`` ``(n, S, S, 3)`` uint8, ``textures.npy`` ``(n, S, S, 3)`` uint8, ``landmarks.npy`` ``(n, K, 2)``
float32, ``items.npy`` ``(n,)`` int64 (the dataset indices) and ``fingerprint.json`` (what its items were made
from). Plain ``.npy`` files open as memmaps (``np.load(path, mmap_mode="r")``); a shard is written to
``shard-XXXXX.tmp/`` and renamed when complete, so an interrupted run never leaves a shard that looks finished, and a
rerun skips the shards that exist with the same items and fingerprint.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from facekit.data import FACE_WARP_REGULARIZATION
from facekit.data.poisson import BACKGROUND_WEIGHT, COLOUR_WEIGHT, composite, face_mask
from facekit.errors import data_batches, stop_only_from_parent
from facekit.images import to_uint8_rgb
from facekit.warp import sparse_image_warp

logger = logging.getLogger(__name__)

__all__ = [
    "Morph",
    "MorphDataset",
    "contact_sheet",
    "materialise",
    "nearest_neighbours",
    "procedural_landmarks",
    "random_morph",
    "synthetic_identities",
]

ArrayLike = Any  # np.ndarray, np.memmap or a path to a .npy file (MorphDataset)
FORMAT = "facekit-morphs-v1"


# ----------------------------------------------------------------------------------------------
# neighbours
# ----------------------------------------------------------------------------------------------
def _texture_features(textures: ArrayLike, size: int | None, chunk: int) -> tuple[np.ndarray, float]:
    """Flattened textures in ``[0, 1]`` (optionally area-downsampled to ``size``) and the factor that makes their
    squared distances comparable to full-resolution ones."""
    n = len(textures)
    s = int(np.shape(textures[0])[0])
    feats = []
    for start in range(0, n, chunk):
        block = np.asarray(textures[start : start + chunk], dtype=np.float32) / 255.0
        if size is not None and size != s:
            block = np.stack([cv2.resize(t, (size, size), interpolation=cv2.INTER_AREA) for t in block])
        feats.append(block.reshape(len(block), -1))
    scale = 1.0 if size is None else (s / size) ** 2
    return np.concatenate(feats).astype(np.float64), scale


def nearest_neighbours(
    landmarks: ArrayLike,
    textures: ArrayLike,
    k: int,
    texture_weight: float = 1.0,
    texture_size: int | None = 32,
    chunk: int = 512,
) -> np.ndarray:
    """The ``k`` nearest other identities of each identity under ``||L_i - L_j||^2 + texture_weight ||T_i - T_j||^2``.

    Args:
        landmarks: ``(N, K, 2)`` pixels.
        textures: ``(N, S, S, 3)`` uint8 (scaled to ``[0, 1]``), read ``chunk`` identities at a time.
        k: neighbours per identity (< N).
        texture_weight: ``lambda``.
        texture_size: area-downsample textures to ``texture_size^2`` before comparing (``None`` = full resolution).
            The squared distance is multiplied by ``(S / texture_size)^2`` so ``texture_weight`` means the same at
            any size. Choosing a partner only needs the low frequencies (skin tone, lighting, hair mass); at 32 px the
            features are 49x smaller for 224 px faces, so N = 5000 fits in ~120 MB and runs in seconds.
        chunk: rows of the distance matrix computed at once (memory ``chunk x N`` float64).

    Returns:
        ``(N, k)`` int64, nearest first; never contains the row's own index.
    """
    lm = np.asarray(landmarks, dtype=np.float64).reshape(len(landmarks), -1)
    n = lm.shape[0]
    if not 0 < k < n:
        raise ValueError(f"k must be in [1, N - 1] = [1, {n - 1}], got {k}")
    tex, scale = _texture_features(textures, texture_size, chunk)
    feats = np.concatenate([lm, np.sqrt(texture_weight * scale) * tex], axis=1)
    feats -= feats.mean(axis=0)  # centring keeps |a|^2 + |b|^2 - 2ab accurate
    sq = np.einsum("ij,ij->i", feats, feats)
    out = np.empty((n, k), np.int64)
    for start in range(0, n, chunk):
        stop = min(n, start + chunk)
        d = sq[start:stop, None] + sq[None, :] - 2.0 * (feats[start:stop] @ feats.T)
        d[np.arange(stop - start), np.arange(start, stop)] = np.inf  # never oneself
        part = np.argpartition(d, k - 1, axis=1)[:, :k]
        order = np.argsort(np.take_along_axis(d, part, axis=1), axis=1, kind="stable")
        out[start:stop] = np.take_along_axis(part, order, axis=1)
    return out


# ----------------------------------------------------------------------------------------------
# one morph
# ----------------------------------------------------------------------------------------------
@dataclass
class Morph:
    """One random morph: ``image`` ``(S, S, 3)`` float32 in ``[0, 1]``, ``landmarks`` ``(K, 2)`` float32,
    ``texture`` ``(S, S, 3)`` float32 (registered to the mean landmarks: a decoder training target)."""

    image: np.ndarray
    landmarks: np.ndarray
    texture: np.ndarray
    seed: int
    partner: int
    landmark_weight: float
    texture_weight: float


def _warp(image: np.ndarray, source: np.ndarray, destination: np.ndarray) -> np.ndarray:
    """``(S, S, C)`` float32 image: content at ``source`` ``(K, 2)`` moves to ``destination``."""
    img = torch.from_numpy(np.ascontiguousarray(image.transpose(2, 0, 1)))[None]
    src = torch.from_numpy(np.array(source, np.float32))[None]
    dst = torch.from_numpy(np.array(destination, np.float32))[None]
    with torch.no_grad():
        out, _ = sparse_image_warp(img, src, dst, regularization=FACE_WARP_REGULARIZATION)
    return out[0].numpy().transpose(1, 2, 0)


def random_morph(
    index: int,
    rng: np.random.Generator,
    landmarks: ArrayLike,
    textures: ArrayLike,
    mean_landmarks: np.ndarray,
    backgrounds: ArrayLike,
    neighbours: np.ndarray,
    *,
    mask: np.ndarray | None = None,
    blur_px: float = 4.0,
    colour_weight: float = COLOUR_WEIGHT,
    background_weight: float = BACKGROUND_WEIGHT,
    partner: int | None = None,
    landmark_weight: float | None = None,
    texture_weight: float | None = None,
) -> Morph:
    """A random morph seeded by identity ``index`` (see the module docstring for the arrays).

    Draws, in this order: the partner (uniform over ``neighbours[index]``), the landmark weight ``a`` and the texture
    weight ``b`` (both ``U[0, 1]``); ``partner`` / ``landmark_weight`` / ``texture_weight`` override a draw (the draw
    still happens, so the rest of the stream is unchanged).

    Args:
        mask: ``(S, S)`` compositing mask in the mean-face frame; default ``face_mask(mean_landmarks, S, S, blur_px)``.
        colour_weight, background_weight: see :func:`facekit.data.poisson.composite`.
    """
    nb = np.asarray(neighbours[index])
    j_draw = int(nb[rng.integers(len(nb))])
    a_draw, b_draw = float(rng.random()), float(rng.random())
    j = j_draw if partner is None else int(partner)
    a = a_draw if landmark_weight is None else float(landmark_weight)
    b = b_draw if texture_weight is None else float(texture_weight)

    mean = np.asarray(mean_landmarks, np.float32)
    li, lj = np.asarray(landmarks[index], np.float32), np.asarray(landmarks[j], np.float32)
    ti = np.asarray(textures[index], np.float32) / 255.0
    tj = np.asarray(textures[j], np.float32) / 255.0
    lm = ((1.0 - a) * li + a * lj).astype(np.float32)
    tex = ((1.0 - b) * ti + b * tj).astype(np.float32)
    s = tex.shape[0]
    if mask is None:
        mask = face_mask(mean, s, tex.shape[1], blur_px)

    background = np.asarray(backgrounds[index], np.float32) / 255.0
    bg_mean = _warp(background, li, mean)  # the seed's background in the mean-face frame
    pasted = np.clip(composite(tex, bg_mean, mask, colour_weight, background_weight), 0.0, 1.0)
    image = np.clip(_warp(pasted, mean, lm), 0.0, 1.0)
    return Morph(image, lm, tex, int(index), j, a, b)


# ----------------------------------------------------------------------------------------------
# dataset
# ----------------------------------------------------------------------------------------------
def _open(source: ArrayLike) -> Any:
    if isinstance(source, str | os.PathLike):
        return np.load(source, mmap_mode="r")
    return source


class MorphDataset(Dataset):
    """On-the-fly random morphs; item ``idx`` is deterministic given ``(seed, idx)``.

    Arrays may be given directly or as paths to ``.npy`` files, opened (memory-mapped) lazily in each process, so
    the dataset pickles cheaply into DataLoader workers. The seed identity of item ``idx`` is uniform over ``N``
    (``rng = np.random.default_rng([seed, idx])``).

    Items: ``{"image": (3, S, S) float32 in [0, 1], "landmarks": (K, 2) float32, "texture": (3, S, S) float32,
    "seed": int64, "partner": int64}`` tensors.
    """

    def __init__(
        self,
        landmarks: ArrayLike,
        textures: ArrayLike,
        mean_landmarks: ArrayLike,
        backgrounds: ArrayLike,
        *,
        length: int = 10000,
        seed: int = 0,
        neighbours: np.ndarray | None = None,
        k: int = 10,
        neighbour_texture_weight: float = 1.0,
        blur_px: float = 4.0,
        colour_weight: float = COLOUR_WEIGHT,
        background_weight: float = BACKGROUND_WEIGHT,
    ) -> None:
        self._sources = {"landmarks": landmarks, "textures": textures, "backgrounds": backgrounds}
        self._opened: dict[str, Any] = {}
        self.mean_landmarks = np.asarray(_open(mean_landmarks), np.float32)
        self.length, self.seed = int(length), int(seed)
        self.blur_px, self.colour_weight, self.background_weight = blur_px, colour_weight, background_weight
        if neighbours is None:
            neighbours = nearest_neighbours(
                self._array("landmarks"), self._array("textures"), k, neighbour_texture_weight
            )
        self.neighbours = np.asarray(neighbours, np.int64)
        self.size = int(np.shape(self._array("textures")[0])[0])
        self.mask = face_mask(self.mean_landmarks, self.size, self.size, blur_px)

    def _array(self, name: str) -> Any:
        if name not in self._opened:
            self._opened[name] = _open(self._sources[name])
        return self._opened[name]

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        # memmaps opened from paths are re-opened in the worker; arrays given directly travel as they are
        state["_opened"] = {
            k: v for k, v in self._opened.items() if not isinstance(self._sources[k], str | os.PathLike)
        }
        return state

    def __len__(self) -> int:
        return self.length

    def morph(self, idx: int) -> Morph:
        """The :class:`Morph` behind item ``idx`` (numpy, HWC)."""
        if not 0 <= idx < self.length:
            raise IndexError(idx)
        rng = np.random.default_rng([self.seed, int(idx)])
        seed_identity = int(rng.integers(len(self.neighbours)))
        return random_morph(
            seed_identity,
            rng,
            self._array("landmarks"),
            self._array("textures"),
            self.mean_landmarks,
            self._array("backgrounds"),
            self.neighbours,
            mask=self.mask,
            colour_weight=self.colour_weight,
            background_weight=self.background_weight,
        )

    def __getitem__(self, idx: int) -> dict[str, torch.Tensor]:
        m = self.morph(idx)
        return {
            "image": torch.from_numpy(np.ascontiguousarray(m.image.transpose(2, 0, 1))),
            "landmarks": torch.from_numpy(m.landmarks),
            "texture": torch.from_numpy(np.ascontiguousarray(m.texture.transpose(2, 0, 1))),
            "seed": torch.tensor(m.seed),
            "partner": torch.tensor(m.partner),
        }


# ----------------------------------------------------------------------------------------------
# materialise to disk
# ----------------------------------------------------------------------------------------------
#: Each shard's copy of what its items were made from (materialise's ``fingerprint``).
SHARD_FINGERPRINT = "fingerprint.json"


def _fingerprint_text(fingerprint: Any) -> str:
    """A shard's ``fingerprint.json``: materialise's ``fingerprint`` with sorted keys."""
    return json.dumps(fingerprint, sort_keys=True) + "\n"


def _write_shard(
    out_dir: Path, name: str, items: list[int], rows: list[dict[str, torch.Tensor]], fingerprint: str = "null\n"
) -> Path:
    """Shard ``name`` of ``items``; ``fingerprint``: what they were made from, as :func:`_fingerprint_text`."""
    tmp = out_dir / f"{name}.tmp"
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir()
    try:
        np.save(tmp / "images.npy", np.stack(to_uint8_rgb(torch.stack([r["image"] for r in rows]))))
        np.save(tmp / "textures.npy", np.stack(to_uint8_rgb(torch.stack([r["texture"] for r in rows]))))
        np.save(tmp / "landmarks.npy", np.stack([r["landmarks"].numpy().astype(np.float32) for r in rows]))
        np.save(tmp / "items.npy", np.asarray(items, np.int64))
        (tmp / SHARD_FINGERPRINT).write_text(fingerprint)
    except BaseException:  # (a stop, a full disk: no part of the shard left beside the whole ones)
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    final = out_dir / name
    if final.is_dir():  # facekit's own shard holding other items (count changed): replaced
        shutil.rmtree(final)
    os.replace(tmp, final)  # atomic: a shard directory either is complete or does not exist
    return final


def check_morphs_folder(out: Path, fingerprint: dict[str, Any] | None) -> None:
    """Refuse ``out`` when its index.json records morphs made from another ``fingerprint`` (the augment stage's:
    the prepared arrays' hashes, the augment settings, the seed), naming what differs as a recipe names it
    (helper-221: "(augment differ)" of a changed augment.neighbours). The augment stage calls it before its run
    record, so a refused stage leaves none; :func:`materialise` again, under its lock."""
    from facekit.errors import FacekitError

    if fingerprint is None or not (out / "index.json").is_file():
        return
    try:
        earlier = json.loads((out / "index.json").read_text()).get("fingerprint")
    except (ValueError, AttributeError):  # (before: a JSONDecodeError's traceback at every run into the folder)
        raise FacekitError(
            f"{out / 'index.json'} is not an index of morphs (cut short by a run killed as it wrote it, or not "
            f"facekit's): remove {out}, or choose another augment.output"
        ) from None
    if earlier == fingerprint:
        return
    earlier = earlier or {}
    differ: list[str] = []
    for key in sorted({*earlier, *fingerprint}):
        then, now = earlier.get(key), fingerprint.get(key)
        if then == now:
            continue
        if key == "augment" and isinstance(then, dict) and isinstance(now, dict):
            differ += [f"augment.{name}" for name in sorted({*then, *now}) if then.get(name) != now.get(name)]
        else:
            differ.append({"prepared": "the prepared set (prepare.output)", "seed": "train.seed"}.get(key, key))
    raise FacekitError(
        f"{out} holds morphs made from other prepared data or settings ({', '.join(differ)} differ): remove it or "
        "choose another augment.output"
    )


def materialise(
    dataset_like: Dataset,
    count: int,
    out_dir: str | os.PathLike[str],
    shard_size: int = 1000,
    workers: int = 2,
    progress: bool = True,
    fingerprint: dict[str, Any] | None = None,
    on_whole: Callable[[int, int], object] | None = None,
    output_locked: bool = False,
) -> list[Path]:
    """Write items ``0 .. count - 1`` of ``dataset_like`` (e.g. a :class:`MorphDataset`) into shards.

    Format: see the module docstring. Shard ``s`` holds items ``[s * shard_size, (s + 1) * shard_size)``; a shard
    that already holds exactly its items is skipped, so an interrupted run resumes where it stopped (items are
    deterministic, so a rerun never duplicates or changes them); one that holds others (``count`` changed) is made
    again. ``fingerprint`` (what the items depend on: prepared data, settings, seed) is kept in ``index.json``; shards
    made with another one are refused, never mixed in. ``index.json`` is (re)written at the end. ``on_whole(whole,
    total)``: how many of the ``total`` shards are whole in the folder, told once they are checked and as each is
    written (what a stop leaves: the augment stage's line).

    The folder is locked while it runs (:func:`facekit.locks.exclusive`): a second run into it at once is refused in
    one line, as a second normalize, training or bench into one output is (before: both wrote the same shards, each
    removing the other's ``shard-XXXXX.tmp/`` in progress). ``output_locked``: the caller holds that lock (the
    augment stage, from before its run record to after its contact sheet), so it is not taken again.

    Returns:
        the shard directories written by this call.
    """
    from contextlib import nullcontext

    from facekit.locks import exclusive

    with nullcontext() if output_locked else exclusive(Path(out_dir), "augment"):
        return _materialise(dataset_like, count, Path(out_dir), shard_size, workers, progress, fingerprint, on_whole)


def _materialise(
    dataset_like: Dataset,
    count: int,
    out: Path,
    shard_size: int,
    workers: int,
    progress: bool,
    fingerprint: dict[str, Any] | None,
    on_whole: Callable[[int, int], object] | None,
) -> list[Path]:
    """:func:`materialise`, its folder's lock held."""

    out.mkdir(parents=True, exist_ok=True)
    # Shards the folder's index.json lists (checked below to hold this run's fingerprint): (dir, start, count).
    listed: set[tuple[str, int, int]] = set()
    if fingerprint is not None and (out / "index.json").is_file():
        try:
            shards_of = json.loads((out / "index.json").read_text()).get("shards", [])
            listed = {(s["dir"], int(s["start"]), int(s["count"])) for s in shards_of}
        except (OSError, ValueError, KeyError, TypeError):
            listed = set()
    check_morphs_folder(out, fingerprint)
    shards = [
        (f"shard-{s:05d}", list(range(a, min(count, a + shard_size))))
        for s, a in enumerate(range(0, count, shard_size))
    ]

    shard_fingerprint = _fingerprint_text(fingerprint)

    def holds(name: str, items: list[int]) -> bool:
        """The shard is there with exactly its items, made from the same ``fingerprint`` (index.json is written
        last: a run killed before it, then run with another seed, kept the killed run's shards)."""
        path = out / name / "items.npy"
        if not (path.is_file() and np.load(path).tolist() == items):
            return False
        try:
            made_from = json.loads((out / name / SHARD_FINGERPRINT).read_text())
        except (OSError, ValueError):
            # A shard from before shards kept theirs: the folder's index.json (checked above to hold this run's
            # fingerprint) vouches for the shards it lists, which get their own copy; any other is made again.
            if fingerprint is None or (name, items[0], len(items)) in listed:
                if fingerprint is not None:
                    (out / name / SHARD_FINGERPRINT).write_text(shard_fingerprint)
                return True
            return False
        return bool(made_from == json.loads(shard_fingerprint))

    todo = [(name, items) for name, items in shards if not holds(name, items)]
    logger.info("materialise: %d of %d shards to write in %s", len(todo), len(shards), out)
    written: list[Path] = []
    if on_whole is not None:
        on_whole(len(shards) - len(todo), len(shards))
    if todo:
        order = [i for _, items in todo for i in items]
        loader = DataLoader(
            dataset_like, batch_size=None, sampler=order, num_workers=workers, worker_init_fn=stop_only_from_parent
        )
        bar = None
        if progress:
            from facekit.progress import Progress

            bar = Progress(transient=True)
            task = bar.add_task("morphs", total=len(order), unit="morph")
        it: Any = None
        try:
            # The workers first, as the pool's: forked while the bar's refresh thread ran, one could be born with a
            # lock that thread held (the console's, which its stderr, the bar's, takes), never to be let go there
            it = data_batches(loader)
            if bar is not None:  # (started in the try: a Ctrl+C or SIGTERM as its start returns still stops it)
                bar.start()
            for name, items in todo:
                rows = []
                for _ in items:
                    rows.append(next(it))
                    if bar is not None:
                        bar.advance(task)
                written.append(_write_shard(out, name, items, rows, shard_fingerprint))
                if on_whole is not None:
                    on_whole(len(shards) - len(todo) + len(written), len(shards))
                logger.debug("materialise: wrote %s", name)
        finally:
            # Its workers shut down here, not when the garbage collector finds the iterator (a stop's traceback holds
            # this frame, and torch's own where it came inside next(): dropping `it` alone left them running).
            try:
                if it is not None:
                    it.close()
            finally:  # (before: an error or a stop in the close left the bar started, the terminal's cursor hidden)
                it = None
                if bar is not None:
                    bar.stop()
    first = np.load(out / shards[0][0] / "images.npy", mmap_mode="r") if shards else None
    index = {
        "format": FORMAT,
        "count": count,
        "shard_size": shard_size,
        "image_size": None if first is None else int(first.shape[1]),
        "arrays": {
            "images": "uint8 (n, S, S, 3)",
            "textures": "uint8 (n, S, S, 3)",
            "landmarks": "float32 (n, K, 2)",
            "items": "int64 (n,)",
        },
        "shards": [{"dir": name, "start": items[0], "count": len(items)} for name, items in shards],
        "fingerprint": fingerprint,
    }
    from facekit.batch import write_atomic

    # Whole or not at all (before: write_text, and a kill in it left a cut index every later run stopped on)
    write_atomic(out / "index.json", (json.dumps(index, indent=2) + "\n").encode(), out)
    return written


# ----------------------------------------------------------------------------------------------
# helpers: contact sheet, synthetic data
# ----------------------------------------------------------------------------------------------
def contact_sheet(images: Sequence[np.ndarray] | np.ndarray, cols: int = 8, pad: int = 2) -> np.ndarray:
    """Tile ``(n, S, S, 3)`` images (uint8 or float in ``[0, 1]``) into an ``(H, W, 3)`` uint8 grid."""
    imgs = np.asarray(images)
    if imgs.dtype != np.uint8:
        imgs = np.round(np.clip(imgs, 0.0, 1.0) * 255.0).astype(np.uint8)
    n, h, w, c = imgs.shape
    rows = -(-n // cols)
    sheet = np.full((rows * (h + pad) + pad, cols * (w + pad) + pad, c), 255, np.uint8)
    for i, img in enumerate(imgs):
        r, q = divmod(i, cols)
        y, x = pad + r * (h + pad), pad + q * (w + pad)
        sheet[y : y + h, x : x + w] = img
    return sheet


def procedural_landmarks(size: int) -> np.ndarray:
    """A plausible frontal 68-point face (iBUG order) in an aligned ``size x size`` frame: ``(68, 2)`` float32.

    For tests and benchmarks on synthetic data: jaw 0-16, brows 17-26, nose 27-35, eyes 36-47, mouth 48-67.
    """
    pts: list[tuple[float, float]] = []
    t = np.linspace(np.pi, 0.0, 17)  # jaw: lower half of an ellipse from the left ear to the right
    pts += [(0.5 + 0.36 * np.cos(a), 0.42 + 0.42 * np.sin(a)) for a in t]
    for cx in (0.32, 0.68):  # brows
        pts += [(cx + 0.13 * u, 0.33 - 0.04 * (1 - u * u)) for u in np.linspace(-1, 1, 5)]
    pts += [(0.5, 0.40 + 0.05 * i) for i in range(4)]  # nose bridge
    pts += [(0.5 + 0.05 * u, 0.60 + 0.015 * (1 - abs(u))) for u in np.linspace(-1, 1, 5)]  # nostrils
    for cx in (0.34, 0.66):  # eyes: corner, upper lid x2, corner, lower lid x2
        pts += [(cx + 0.07 * np.cos(a), 0.41 - 0.025 * np.sin(a)) for a in np.linspace(np.pi, -np.pi, 7)[:-1]]
    pts += [(0.5 + 0.13 * np.cos(a), 0.73 - 0.05 * np.sin(a)) for a in np.linspace(np.pi, -np.pi, 13)[:-1]]  # outer lip
    pts += [(0.5 + 0.08 * np.cos(a), 0.73 - 0.02 * np.sin(a)) for a in np.linspace(np.pi, -np.pi, 9)[:-1]]  # inner lip
    return (np.asarray(pts, np.float32) * (size - 1)).astype(np.float32)


def synthetic_identities(n: int, size: int = 224, seed: int = 0, jitter_px: float = 3.0) -> dict[str, np.ndarray]:
    """Synthetic identities for tests and benchmarks (smooth random images, jittered procedural landmarks).

    Returns ``{"landmarks": (n, 68, 2) float32, "textures": (n, S, S, 3) uint8, "mean_landmarks": (68, 2) float32,
    "backgrounds": (n, S, S, 3) uint8}``; each background is its texture warped to the identity's landmarks under a
    different smooth colour field outside the face, as in the real averaged set.
    """
    rng = np.random.default_rng(seed)
    mean = procedural_landmarks(size)
    lms = (mean[None] + rng.normal(0.0, jitter_px, (n, *mean.shape))).astype(np.float32)
    lms += rng.normal(0.0, jitter_px, (n, 1, 2)).astype(np.float32)  # a global shift per identity
    small = max(4, size // 16)
    textures = np.empty((n, size, size, 3), np.uint8)
    backgrounds = np.empty_like(textures)
    mask = face_mask(mean, size, size, size / 40)[..., None]
    for i in range(n):
        tex = cv2.resize(rng.random((small, small, 3), dtype=np.float32), (size, size), interpolation=cv2.INTER_CUBIC)
        tex = np.clip(0.25 + 0.5 * tex, 0.0, 1.0)
        bg = cv2.resize(rng.random((small // 2, small // 2, 3), dtype=np.float32), (size, size))
        textures[i] = np.round(tex * 255)
        full = mask * tex + (1 - mask) * np.clip(bg, 0.0, 1.0)
        backgrounds[i] = np.round(np.clip(_warp(full.astype(np.float32), mean, lms[i]), 0.0, 1.0) * 255)
    return {"landmarks": lms, "textures": textures, "mean_landmarks": mean, "backgrounds": backgrounds}


def check_neighbours(plan: Any) -> None:
    """``augment.neighbours`` against the prepared set in ``prepare.output`` (nothing to check without one): a morph
    needs more identities than neighbours. Training checks it before its run record and lock (helper-69: a refused
    training left both)."""
    from facekit.errors import FacekitError

    folder = Path(plan.recipe.prepare.output)
    if not (folder / "landmarks.npy").is_file():
        return
    neighbours = plan.recipe.augment.neighbours
    identities = len(np.load(folder / "landmarks.npy", mmap_mode="r"))
    if identities < 2:  # no value of neighbours works (helper-185: the advice was to lower it, from 1 too)
        raise FacekitError(
            f"augmentation morphs between people, and {folder} has {identities} prepared: add people to data.train "
            "or turn augmentation off (--set augment.enabled=false)"
        )
    if not 0 < neighbours < identities:
        raise FacekitError(
            f"augment.neighbours {neighbours} needs more than that many prepared identities; {folder} has "
            f"{identities}: lower augment.neighbours (--set augment.neighbours={identities - 1}) or turn "
            "augmentation off (--set augment.enabled=false)"
        )


def morph_dataset(plan: Any, length: int) -> MorphDataset:
    """The :class:`MorphDataset` of a recipe: the prepared set in ``prepare.output`` (its averages are the seed
    photos whose backgrounds the morphs are pasted onto), neighbours and mask blur from ``augment``."""
    from facekit.errors import FacekitError

    folder = Path(plan.recipe.prepare.output)
    if not (folder / "textures.npy").is_file():
        raise FacekitError(f"no prepared dataset in {folder}: run the prepare stage first")
    check_neighbours(plan)
    augment = plan.recipe.augment
    return MorphDataset(
        folder / "landmarks.npy",
        folder / "textures.npy",
        folder / "mean_landmarks.npy",
        folder / "averages.npy",
        length=length,
        seed=plan.recipe.train.seed,
        k=augment.neighbours,
        neighbour_texture_weight=augment.texture_weight,
        blur_px=augment.mask_blur_px,
    )
