"""The training pool: prepared identities, on-the-fly morphs and (optionally) each person's own photos, with the
frozen encoder's features and embeddings computed once and cached (``train.output/pool.safetensors``).
"""

from __future__ import annotations

import json
import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors.torch import load_file

from facekit.checkpoints import save_tensors
from facekit.errors import FacekitError, data_batches, data_workers_lost_said, stop_only_from_parent
from facekit.locks import replace_durably
from facekit.recipe import BACKGROUND_FOREHEAD, BACKGROUND_MARGIN

logger = logging.getLogger(__name__)


@dataclass
class Pool:
    """The training items, in memory: images/textures (N, 3, S, S) uint8, landmarks (N, K, 2) float32, and the frozen
    encoder's cached ``features`` (N, F) and ``embeddings`` (N, D) of each image."""

    images: torch.Tensor
    textures: torch.Tensor
    landmarks: torch.Tensor
    features: torch.Tensor
    embeddings: torch.Tensor
    transforms: torch.Tensor  # (N, 2, 3) image -> encoder input, from the target landmarks
    # (N,) int64, who each item shows: an averaged identity's row (its own photos share it), each morph its own
    # number; the separation loss compares only items of different groups.
    groups: torch.Tensor
    # With components.identity_encoder, the encoder's own embeddings (N, D') and crop transforms (N, 2, 3), for
    # train.loss.identity_own; None without one.
    own_embeddings: torch.Tensor | None = None
    own_transforms: torch.Tensor | None = None

    def __len__(self) -> int:
        return int(self.images.shape[0])

    def batch(self, index: np.ndarray, device: torch.device) -> dict[str, torch.Tensor]:
        idx = torch.from_numpy(index)
        return {
            "image": self.images[idx].to(device).float() / 255.0,
            "texture": self.textures[idx].to(device).float() / 255.0,
            "landmarks": self.landmarks[idx].to(device),
            "features": self.features[idx].to(device),
            "embedding": self.embeddings[idx].to(device),
            "transform": self.transforms[idx].to(device),
            "group": self.groups[idx].to(device),
            **(
                {
                    "own_embedding": self.own_embeddings[idx].to(device),
                    "own_transform": self.own_transforms[idx].to(device),
                }
                if self.own_embeddings is not None and self.own_transforms is not None
                else {}
            ),
        }


def _uint8_chw(images: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(images)).permute(0, 3, 1, 2).contiguous()


def build_pool(plan: Any, encoder: Any, progress: bool = False, identity: Any = None) -> Pool:
    """Prepared identities + ``train.pool_size`` on-the-fly morphs, with the encoder's features and embeddings;
    with an ``identity`` encoder (``components.identity_encoder``), its embeddings and crop transforms instead of
    the encoder's: the identity loss runs it."""
    from facekit.align import encoder_input_transform
    from facekit.data.dataset import PreparedFaces

    recipe = plan.recipe
    faces = PreparedFaces(recipe.prepare.output)
    images = [np.asarray(faces.averages)]
    textures = [np.asarray(faces.textures)]
    landmarks = [np.asarray(faces.landmarks, dtype=np.float32)]
    if recipe.augment.enabled and recipe.train.pool_size > 0:
        from facekit.data.augment import morph_dataset

        morphs = morph_dataset(plan, length=recipe.train.pool_size)
        loader = torch.utils.data.DataLoader(
            morphs, batch_size=64, num_workers=recipe.prepare.workers, worker_init_fn=stop_only_from_parent
        )
        with data_workers_lost_said("run the training again, with prepare.workers=1 to use less memory"):
            batches = data_batches(loader)  # (before the bar: its threads start after the workers' forks)
            try:
                for batch in _track(batches, "making morphs", progress, unit="batch"):
                    images.append((batch["image"].clamp(0, 1) * 255).round().byte().permute(0, 2, 3, 1).numpy())
                    textures.append((batch["texture"].clamp(0, 1) * 255).round().byte().permute(0, 2, 3, 1).numpy())
                    landmarks.append(batch["landmarks"].numpy().astype(np.float32))
            finally:  # the workers end now, not once a stop's traceback (which holds the iterator) is let go
                batches.close()
    all_images, all_textures = np.concatenate(images), np.concatenate(textures)
    all_landmarks = np.concatenate(landmarks)
    groups = np.arange(len(all_images), dtype=np.int64)  # identities first (group = row), then one per morph
    features, embeddings, own = [], [], []  # own: the encoder's embeddings, with an identity encoder
    with torch.no_grad():
        for start in _track(range(0, len(all_images), 32), "encoding", progress):
            embedding, feature, own_embedding = encode(
                encoder, identity, all_images[start : start + 32], all_landmarks[start : start + 32]
            )
            features.append(feature)
            embeddings.append(embedding)
            if own_embedding is not None:
                own.append(own_embedding)
    if recipe.train.photo_inputs > 0:
        # Each person's own photos as inputs, the person's average (row i of the prepared arrays) as the target.
        targets, photo_features, photo_embeddings, photo_own = encode_photos(recipe, faces, encoder, progress, identity)
        all_images = np.concatenate([all_images, all_images[targets]])
        all_textures = np.concatenate([all_textures, all_textures[targets]])
        all_landmarks = np.concatenate([all_landmarks, all_landmarks[targets]])
        groups = np.concatenate([groups, targets])
        features.append(photo_features)
        embeddings.append(photo_embeddings)
        if photo_own is not None:
            own.append(photo_own)
    if recipe.train.background == "plain":
        # After encoding: the encoder keeps seeing the photos' own backgrounds, as it will at inference.
        all_images, all_textures = plain_background(
            all_images,
            all_textures,
            all_landmarks,
            np.asarray(faces.mean_landmarks),
            recipe.train.background_rgb,
            recipe.train.background_forehead,
            recipe.train.background_margin,
        )
    crop = identity if identity is not None else encoder
    transforms = np.stack([encoder_input_transform(crop, points) for points in all_landmarks]).astype(np.float32)
    if identity is not None:
        own_transforms = np.stack([encoder_input_transform(encoder, p) for p in all_landmarks]).astype(np.float32)
    return Pool(
        images=_uint8_chw(all_images),
        textures=_uint8_chw(all_textures),
        landmarks=torch.from_numpy(all_landmarks),
        features=torch.cat(features),
        embeddings=torch.cat(embeddings),
        transforms=torch.from_numpy(transforms),
        groups=torch.from_numpy(groups),
        own_embeddings=torch.cat(own) if identity is not None else None,
        own_transforms=torch.from_numpy(own_transforms) if identity is not None else None,
    )


def encode(
    encoder: Any, identity: Any, images: Any, landmarks: np.ndarray
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
    """(embeddings, features, the encoder's own embeddings or None) of photos with their landmarks: the features
    are the encoder's; with an ``identity`` encoder the embeddings are its (each from its own crop) and the third
    item the encoder's, without one the embeddings are the encoder's."""
    from facekit.align import encoder_inputs
    from facekit.normalize import check_features

    embedding, feature = embed_and_features(encoder, encoder_inputs(encoder, images, landmarks))
    check_features(encoder, feature, len(images))  # as inference checks them, before they reach the decoder
    check_features(encoder, embedding, len(images), "embeddings")
    if identity is None:
        return embedding, feature, None
    judged = identity.embed(encoder_inputs(identity, images, landmarks))
    check_features(identity, judged, len(images), "embeddings")
    return judged, feature, embedding


def embed_and_features(encoder: Any, inputs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(embeddings, features) of encoder inputs, in one pass when the encoder offers it (dlib-resnet, sface)."""
    both = getattr(encoder, "embed_and_features", None)
    if both is not None:
        embedding, feature = both(inputs)
        return embedding, feature
    return encoder.embed(inputs), encoder.features(inputs)


def manifest_photo(path: str, paths_from: dict[str, str] | None, data_root: Path) -> Path:
    """A prepare manifest's photo ``path`` as seen from here: as written when it exists; else, with where prepare
    ran (``paths_from``: its working folder and absolute data root, from summary.json), the same photo under this
    recipe's ``data_root`` (prepared in one folder or machine, trained in another)."""
    given = Path(path)
    if given.exists() or not paths_from:
        return given
    there = os.path.normpath(given if given.is_absolute() else Path(paths_from["cwd"]) / given)
    if os.path.exists(there):
        return Path(there)
    try:
        inside = Path(there).relative_to(os.path.normpath(paths_from["data_root"]))
    except ValueError:
        return given
    return data_root / inside


def encode_photos(
    recipe: Any, faces: Any, encoder: Any, progress: bool = False, identity: Any = None
) -> tuple[Any, Any, Any, Any]:
    """Train on what inference sees: up to ``train.photo_inputs`` photos of each prepared person (kept or rejected
    for expression, pose up to ``train.photo_max_yaw_deg``, any quality) read from the prepare manifest and encoded
    from the photo itself, as inference will. Returns (target rows (M,) int64, features (M, F), embeddings (M, D),
    the encoder's own embeddings or None); the embeddings are the ``identity`` encoder's when there is one
    (:func:`encode`)."""
    from facekit.images import load_rgb

    settings = recipe.train
    row_of = {record["identity"]: index for index, record in enumerate(faces.identities)}
    try:
        paths_from = json.loads((Path(recipe.prepare.output) / "summary.json").read_text()).get("paths_from")
    except (OSError, ValueError):
        paths_from = None
    data_root = recipe.data.resolved_root()
    keep_all = recipe.prepare.keep_all_faces
    candidates: dict[int, list[tuple[str, np.ndarray]]] = {}
    with (Path(recipe.prepare.output) / "manifest.jsonl").open() as handle:
        for line in handle:
            row = json.loads(line)
            target = row_of.get(row["identity"])
            # One row per photo unless prepare kept every face: then only each photo's first face (a person's
            # photos show others too). Without, the row is the face prepare chose (prepare.face), whatever its index.
            if target is None or "landmarks" not in row or (keep_all and row.get("face", 0) != 0):
                continue
            if abs(float(row["measures"]["yaw"])) > settings.photo_max_yaw_deg:
                continue
            path = str(manifest_photo(row["path"], paths_from, data_root))
            candidates.setdefault(target, []).append((path, np.asarray(row["landmarks"], np.float64)))
    rng = np.random.default_rng([settings.seed, 1])
    casts = np.random.default_rng([settings.seed, 2])
    chosen: list[tuple[int, str, np.ndarray]] = []
    for target in sorted(candidates):
        items = candidates[target]
        for pick in rng.permutation(len(items))[: settings.photo_inputs]:
            chosen.append((target, *items[pick]))
    targets: list[int] = []
    features, embeddings, own = [], [], []  # own: the encoder's embeddings, with an identity encoder
    unreadable: list[str] = []
    with torch.no_grad():
        for start in _track(range(0, len(chosen), 32), f"encoding {len(chosen)} photos", progress):
            block = []
            for target, path, points in chosen[start : start + 32]:
                image, _ = load_rgb(Path(path))
                if image is None:
                    unreadable.append(path)
                    continue
                block.append((target, image, points))
                for _ in range(settings.photo_casts):
                    block.append((target, random_cast(image, casts, settings.photo_cast_sigma), points))
            if not block:
                continue
            embedding, feature, own_embedding = encode(
                encoder, identity, [b[1] for b in block], np.stack([b[2] for b in block])
            )
            features.append(feature)
            embeddings.append(embedding)
            if own_embedding is not None:
                own.append(own_embedding)
            targets.extend(b[0] for b in block)
    photos = len(targets) // (1 + settings.photo_casts)
    logger.info(
        "photo inputs: %d photos of %d people (+%d cast copies each)", photos, len(candidates), settings.photo_casts
    )
    if len(unreadable) * 10 > len(chosen):  # not a few vanished files: the paths do not lead to the photos from here
        raise FacekitError(
            f"train.photo_inputs: {len(unreadable)} of {len(chosen)} photos in {recipe.prepare.output}/manifest.jsonl "
            f"cannot be read (e.g. {unreadable[0]}), also under this recipe's data root: check that data.root (or "
            "FACEKIT_DATA) is where the photos are; a set prepared before 2026-12-01 keeps its paths as prepare saw "
            "them: train from the folder it ran in; or set train.photo_inputs=0"
        )
    if unreadable:
        logger.warning(
            "train.photo_inputs: %d of %d photos cannot be read and are left out", len(unreadable), len(chosen)
        )
    if not targets:
        raise FacekitError(f"train.photo_inputs: no usable photo in {recipe.prepare.output}/manifest.jsonl")
    own_embeddings = torch.cat(own) if identity is not None else None
    return np.asarray(targets, np.int64), torch.cat(features), torch.cat(embeddings), own_embeddings


def random_cast(photo: np.ndarray, rng: np.random.Generator, sigma: float) -> np.ndarray:
    """``photo`` (H, W, 3) uint8 under another light: each channel's linear value times a log-normal gain (``sigma``
    drawn per channel, then centred so that the three gains' geometric mean is 1: each channel's log gain then has a
    std of sigma * sqrt(2/3)) and all times 2^U(-1, 1) (exposure), back to sRGB, clipped."""
    from facekit.apps.adjust import to_linear, to_srgb

    log_gains = rng.normal(0.0, sigma, 3)
    gains = np.exp(log_gains - log_gains.mean()) * 2.0 ** rng.uniform(-1.0, 1.0)
    linear = to_linear(photo / 255.0) * gains
    return np.asarray(np.clip(to_srgb(linear) * 255.0 + 0.5, 0, 255), np.uint8)


def background_mask(
    landmarks: np.ndarray, size: int, forehead: float = BACKGROUND_FOREHEAD, margin: float = BACKGROUND_MARGIN
) -> np.ndarray:
    """(S, S) float32 in [0, 1]: 1 on the face of (68, 2) iBUG ``landmarks``, its forehead up to about the hairline
    (the brows raised by ``forehead`` interocular distances) and a margin of ``margin`` x S for hair and ears,
    feathered over S/40 px. Outside it is what the quality benchmark counts as background (side strips beyond the
    hull grown by S/14)."""
    import cv2

    from facekit.align import interocular_distance
    from facekit.data.poisson import face_mask

    points = np.asarray(landmarks, np.float64)
    brows = points[17:27] - np.array([0.0, forehead * interocular_distance(points)])
    hard = face_mask(np.concatenate([points, brows]), size, size, blur_px=0.0)
    grow = max(1, round(size * margin)) if margin > 0 else 0  # (at least a pixel when asked for at all)
    kernel = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * grow + 1, 2 * grow + 1))
    grown = cv2.dilate((hard > 0.5).astype(np.float32), kernel)
    soft = cv2.GaussianBlur(grown, (0, 0), sigmaX=size / 40, borderType=cv2.BORDER_CONSTANT)
    return np.clip(soft, 0.0, 1.0).astype(np.float32)


def other_mask(train: Any) -> bool:
    """Whether ``train`` (a recipe's TrainSection) composites onto a plain background with another kept region
    than the default one (then its pool's cache key names the region)."""
    import math

    fields = type(train).model_fields
    return train.background == "plain" and not (
        math.isclose(train.background_forehead, fields["background_forehead"].default)
        and math.isclose(train.background_margin, fields["background_margin"].default)
    )


def plain_background(
    images: np.ndarray,
    textures: np.ndarray,
    landmarks: np.ndarray,
    mean_landmarks: np.ndarray,
    rgb: Any,
    forehead: float = BACKGROUND_FOREHEAD,
    margin: float = BACKGROUND_MARGIN,
) -> tuple[np.ndarray, np.ndarray]:
    """Targets on one flat colour: (N, S, S, 3) uint8 ``images`` outside :func:`background_mask` of their (N, K, 2)
    ``landmarks``, ``textures`` outside the mask of the mean landmarks (they are registered to the mean face)."""
    size = images.shape[1]
    colour = np.asarray(rgb, np.float32).reshape(1, 1, 3)

    def flatten(image: np.ndarray, mask: np.ndarray) -> np.ndarray:
        blended = image.astype(np.float32) * mask[..., None] + colour * (1 - mask[..., None])
        return np.asarray(blended.round().clip(0, 255).astype(np.uint8))

    texture_mask = background_mask(mean_landmarks, size, forehead, margin)
    flat_images = np.stack(
        [flatten(i, background_mask(p, size, forehead, margin)) for i, p in zip(images, landmarks, strict=True)]
    )
    flat_textures = np.stack([flatten(t, texture_mask) for t in textures])
    return flat_images, flat_textures


def pool_encoder_key(plan: Any) -> list[Any]:
    """The encoder part of a training pool's cache key: [name, params as JSON], then the identity encoder's when
    the recipe names one (``facekit bench`` matches cells' pools by it)."""
    key = []
    for slot in ("encoder", "identity_encoder"):
        component = plan.components.get(slot)
        if component is not None:
            key += [component.spec.name, component.params.model_dump(mode="json")]
    return key


#: Metadata key of a cached pool's checksum (:func:`pool_checksum`), checked when it is read.
CHECKSUM_KEY = "tensors_crc32"

#: A cached pool's tensors as :func:`build_pool` makes them: each one's dtype and shape, a letter standing for a size
#: (N items in every tensor, S the images' and the textures' side); the identity encoder's two are there or not.
POOL_LAYOUT: dict[str, tuple[torch.dtype, tuple[int | str, ...]]] = {
    "images": (torch.uint8, ("N", 3, "S", "S")),
    "textures": (torch.uint8, ("N", 3, "S", "S")),
    "landmarks": (torch.float32, ("N", "K", 2)),
    "features": (torch.float32, ("N", "F")),
    "embeddings": (torch.float32, ("N", "D")),
    "transforms": (torch.float32, ("N", 2, 3)),
    "groups": (torch.int64, ("N",)),
    "own_embeddings": (torch.float32, ("N", "E")),
    "own_transforms": (torch.float32, ("N", 2, 3)),
}
_IDENTITY_TENSORS = {"own_embeddings", "own_transforms"}


def pool_checksum(tensors: dict[str, torch.Tensor]) -> str:
    """CRC-32 over every tensor's name, dtype, shape and bytes, in name order: a cached pool with a flipped byte was
    trained on as if whole (helper-123). A CRC, not the sha256 model files carry: it is to find damage, and a pool
    is GBs (0.7-1.4 s against sha256's 1.6-1.8 s for a 1.5 GB pool on 2 busy cores, a pool that took 11 minutes
    to make; loading it is lazy, reading every byte 0.2 s)."""
    import zlib

    crc = 0
    for name in sorted(tensors):
        tensor = tensors[name].contiguous()
        crc = zlib.crc32(f"{name}|{tensor.dtype}|{tuple(tensor.shape)}|".encode(), crc)
        crc = zlib.crc32(tensor.reshape(-1).view(torch.uint8).numpy().data, crc)  # (no copy)
    return f"{crc:08x}"


def layout_problem(
    tensors: dict[str, torch.Tensor], identity: bool | None = None, side: int | None = None
) -> str | None:
    """What keeps ``tensors`` from being a :class:`Pool` facekit trains on (:data:`POOL_LAYOUT`: a tensor missing
    or of another name, dtype or shape, items counted differently), or None. ``identity``: whether the identity
    encoder's tensors must be there (True) or not (False); None: both or neither. ``side``: the images' and
    textures' side the recipe trains at (None: any)."""
    names = set(tensors)
    unknown = sorted(names - set(POOL_LAYOUT))
    if unknown:
        return f"it holds tensors a pool has not: {', '.join(unknown)}"
    wanted = set(POOL_LAYOUT) - _IDENTITY_TENSORS
    if identity or (identity is None and names & _IDENTITY_TENSORS):
        wanted |= _IDENTITY_TENSORS
    missing = sorted(wanted - names)
    if missing:
        return f"it lacks the tensors {', '.join(missing)}"
    if identity is False and names & _IDENTITY_TENSORS:
        return "it holds an identity encoder's embeddings, and the recipe names none"
    sizes: dict[str, tuple[int, str]] = {}  # a letter's size, and the tensor it was first seen in
    for name in sorted(names, key=list(POOL_LAYOUT).index):
        dtype, shape = POOL_LAYOUT[name]
        tensor = tensors[name]
        spelled = f"{str(dtype).removeprefix('torch.')} ({', '.join(map(str, shape))})"
        found = f"{str(tensor.dtype).removeprefix('torch.')} {tuple(tensor.shape)}"
        if tensor.dtype != dtype or tensor.dim() != len(shape):
            return f"its tensor {name} is {found}, not {spelled}"
        for size, want in zip(tensor.shape, shape, strict=True):
            if isinstance(want, int) and size != want:
                return f"its tensor {name} is {found}, not {spelled}"
            if isinstance(want, str):
                seen, where = sizes.setdefault(want, (size, name))
                if size != seen:
                    also = f" as in its {where}" if where != name else ""
                    return f"its tensor {name} is {found}, not {spelled} with {want}={seen}{also}"
    if sizes["N"][0] == 0:
        return "it holds no items"
    if side is not None and sizes["S"][0] != side:  # (before: a size error from inside the losses, at the first step)
        return f"its images are {sizes['S'][0]} px, and the recipe's prepare.image_size is {side}"
    return None


class PoolNotWhole(FacekitError):
    """A cached training pool that cannot be trained on as it is: ``problem`` says why (it cannot be read, it is
    damaged, or it is not laid out as facekit makes a pool)."""

    def __init__(self, path: Path, problem: str) -> None:
        super().__init__(f"the cached training pool {path} {problem}: delete it, and the next training makes it again")
        self.problem = problem


@dataclass
class CachedPool:
    """A cached pool's tensors as :func:`read_pool` read and checked them, with its cache key and checksum (None: it
    was cached before the checksum)."""

    key: str | None
    checksum: str | None
    tensors: dict[str, torch.Tensor]


def pool_header(path: Path) -> dict[str, str]:
    """The metadata of the cached pool ``path`` (its cache key and checksum), from its header alone."""
    from safetensors import SafetensorError, safe_open

    try:
        with safe_open(str(path), framework="pt") as handle:
            return handle.metadata() or {}
    except (SafetensorError, OSError, ValueError) as error:  # cut short (a copy killed), or not a pool at all
        raise PoolNotWhole(path, f"cannot be read ({error})") from None


def read_pool(path: Path) -> CachedPool:
    """The cached pool ``path``, whole: it reads, its tensors are laid out as :func:`build_pool` makes them
    (:func:`layout_problem`; before, a file of other tensors under the right key was a TypeError in the loader), and
    they match the checksum they were saved with. Else :class:`PoolNotWhole`, one line naming the file.
    A pool cached before the checksum is checked by its layout alone (:func:`cached_pool` then writes its checksum).
    """
    from safetensors import SafetensorError

    header = pool_header(path)
    try:
        tensors = load_file(str(path))
    except (SafetensorError, OSError, ValueError) as error:
        raise PoolNotWhole(path, f"cannot be read ({error})") from None
    problem = layout_problem(tensors)
    if problem is not None:
        raise PoolNotWhole(path, f"is not a pool this facekit makes ({problem})")
    expected = header.get(CHECKSUM_KEY)
    if expected is not None and pool_checksum(tensors) != expected:
        raise PoolNotWhole(path, "is damaged (its tensors do not match the checksum they were saved with)")
    return CachedPool(header.get("key"), expected, tensors)


def cached_pool(
    plan: Any,
    encoder: Any,
    path: Path,
    progress: bool = False,
    identity: Any = None,
    offered: CachedPool | None = None,
) -> Pool:
    """:func:`build_pool`, cached in ``path`` (a resumed or repeated run skips the morphs and the encoding).

    The cache is used only when it was made from the same prepared set, pool size, augmentation, seed and encoders
    (name and params; the identity encoder's too), and only whole (:func:`read_pool`): one cut short, damaged or
    laid out otherwise is made again, with a one-line warning. ``offered``: ``path``'s tensors as :func:`read_pool`
    read and checked them (``facekit bench`` copies a pool it checked into a cell: not read and checked again).
    """
    from facekit.runs import is_rank_zero

    key, keys = pool_keys(plan)
    if offered is None and path.is_file():
        try:
            if pool_header(path).get("key") in keys:  # (another pool's tensors are not read)
                offered = read_pool(path)
        except PoolNotWhole as not_whole:
            logger.warning("the cached training pool %s %s: it is made again", path, not_whole.problem)
    if offered is not None and offered.key in keys:
        problem = layout_problem(offered.tensors, identity is not None, plan.recipe.prepare.image_size)
        if problem is None:
            logger.info("training pool from cache %s", path)
            if offered.checksum is None and is_rank_zero():
                # Cached before the checksum: its layout checked, its checksum written now, so that every later read
                # checks its bytes (its key kept: a pool found under the prepared set's folder stays found).
                _add_checksum(path, offered.tensors, offered.key)
            return Pool(**offered.tensors)
        logger.warning("the cached training pool %s is not a pool of this recipe (%s): it is made again", path, problem)
    pool = build_pool(plan, encoder, progress, identity)
    if is_rank_zero():
        _write_pool(path, {k: v.contiguous() for k, v in pool.__dict__.items() if v is not None}, key)
    return pool


def pool_keys(plan: Any) -> tuple[str, set[str]]:
    """(the key a training pool made for ``plan`` is cached under, every key under which a cached pool is
    ``plan``'s): what :func:`cached_pool` takes a cached pool by, and ``facekit bench`` offers a cell an earlier
    cell's pool by."""
    recipe = plan.recipe
    prepared = Path(recipe.prepare.output)
    if not (prepared / "landmarks.npy").is_file():
        raise FacekitError(f"no prepared dataset in {prepared}: run the prepare stage first (--stage prepare)")
    where = {"prepared": str(prepared.resolve()), "prepared_mtime": (prepared / "landmarks.npy").stat().st_mtime_ns}
    settings = {
        "format": 2,  # 2: with groups
        "pool_size": recipe.train.pool_size if recipe.augment.enabled else 0,
        # How morphs are made; not the augment stage's own files (count, output), which the pool never reads.
        "augment": recipe.augment.model_dump(mode="json", exclude={"count", "output"}),
        "seed": recipe.train.seed,
        "encoder": pool_encoder_key(plan),
        # A pool with an identity encoder also holds the encoder's own embeddings and crops (format 3).
        **({"identity_format": 3} if plan.components.get("identity_encoder") is not None else {}),
        "photo_inputs": [recipe.train.photo_inputs, recipe.train.photo_max_yaw_deg],
        **(
            {"photo_casts": [recipe.train.photo_casts, recipe.train.photo_cast_sigma]}
            if recipe.train.photo_casts
            else {}
        ),
        "background": [recipe.train.background, list(recipe.train.background_rgb)]
        # (only when they shape the mask: pools made before these settings existed keep their key)
        + ([recipe.train.background_forehead, recipe.train.background_margin] if other_mask(recipe.train) else []),
    }
    # The prepared set by its arrays' digest, hashed here (a set moved or copied elsewhere is the same set: helper-71
    # saw a resume on a moved set make the pool again, hours at the paper's scale; a digest read from summary.json
    # would trust a set whose arrays were changed by hand, helper-73); a pool cached under the set's folder and
    # time, as every pool was before, is still found.
    from facekit.data.dataset import prepared_digest

    key = json.dumps({**settings, "prepared_arrays_sha256": prepared_digest(prepared)}, sort_keys=True)
    return key, {key, json.dumps({**settings, **where}, sort_keys=True)}


def _add_checksum(path: Path, tensors: dict[str, torch.Tensor], key: str) -> None:
    """Write the checksum of a pool cached before it (its ``tensors``, read from ``path``) into ``path``. A rewrite that
    fails (a full disk: it needs the pool's size once more, where the training needs only its checkpoints) costs the
    checksum, not the training: the pool is used as it is, and a later run gives it one."""
    try:
        _write_pool(path, tensors, key)  # (its key kept)
    except OSError as error:
        path.with_name(f".{path.name}.tmp").unlink(missing_ok=True)
        logger.warning(
            "the cached training pool %s could not be given the checksum of its tensors (%s): it is used as it is",
            path,
            error,
        )
        return
    logger.info("the cached training pool %s now carries the checksum of its tensors", path)


def _write_pool(path: Path, tensors: dict[str, torch.Tensor], key: str) -> None:
    """``tensors`` saved as the cached pool ``path`` under ``key``, with their checksum, through a temporary file
    renamed into place."""
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(f".{path.name}.tmp")
    save_tensors(tensors, temporary, {"key": key, CHECKSUM_KEY: pool_checksum(tensors)})
    replace_durably(temporary, path)


def _track(iterable: Any, description: str, progress: bool, unit: str = "batch") -> Any:
    if not progress:
        return iterable
    from facekit.progress import track

    return track(iterable, description=description, unit=unit)
