"""Training the decoder through the warp: landmark MSE + texture L1 + identity loss (Cole et al. 2017, Sec. 4).

An explicit loop, no framework:

- **data**: the prepared identities (``prepare.output``) plus ``train.pool_size`` random morphs made on the fly at start
  (augment section), each an image in the aligned frame with its landmarks and texture;
- **frozen encoder**: its features (decoder input) and embeddings (identity-loss target) are computed once for the
  whole pool and cached; the identity loss runs the encoder on the decoder's output, cropped differentiably with the
  encoder's own alignment;
- **determinism**: batch ``t`` is drawn with ``default_rng([seed, t])``, so a resumed run sees the same batches;
- **checkpoints**: ``<output>/checkpoints/last.safetensors`` (weights, Adam state, step, decoder spec) written to a
  temporary file and renamed; ``--resume`` continues from it, losing at most one checkpoint interval;
- **logs**: ``metrics.csv`` (and TensorBoard when installed), sample grids ``samples/step-NNNNNN.png``;
- **DDP**: under ``torchrun`` each rank takes its slice of the same global batch (gloo on CPU, nccl on GPU); gradients
  are averaged and BatchNorm uses the global batch's statistics (:mod:`facekit.distributed`), so N processes follow
  the 1-process trajectory (to rounding, which Adam amplifies on near-zero gradients); only rank 0 writes and the
  checkpoints record ``world_size``.
"""

from __future__ import annotations

import csv
import json
import logging
import os
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from safetensors.torch import load_file, save_file

from facekit.distributed import global_batchnorm, global_terms, setup_distributed
from facekit.errors import FacekitError
from facekit.types import DecoderOutput
from facekit.warp import BOUNDARY_CONVENTION_KEY

logger = logging.getLogger(__name__)

CHECKPOINT = "last.safetensors"
METRICS = ["step", "loss", "landmark", "texture", "image", "identity", "perceptual", "laplacian", "seconds"]


# ------------------------------------------------------------------------------------------------ data


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
        }


def _uint8_chw(images: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(images)).permute(0, 3, 1, 2).contiguous()


def build_pool(plan: Any, encoder: Any, progress: bool = False) -> Pool:
    """Prepared identities + ``train.pool_size`` on-the-fly morphs, with the encoder's features and embeddings."""
    from facekit.align import encoder_input_transform, encoder_inputs
    from facekit.data.dataset import PreparedFaces

    recipe = plan.recipe
    faces = PreparedFaces(recipe.prepare.output)
    images = [np.asarray(faces.averages)]
    textures = [np.asarray(faces.textures)]
    landmarks = [np.asarray(faces.landmarks, dtype=np.float32)]
    if recipe.augment.enabled and recipe.train.pool_size > 0:
        from facekit.data.augment import morph_dataset

        morphs = morph_dataset(plan, length=recipe.train.pool_size)
        loader = torch.utils.data.DataLoader(morphs, batch_size=64, num_workers=recipe.prepare.workers)
        for batch in _track(loader, "making morphs", progress):
            images.append((batch["image"].clamp(0, 1) * 255).round().byte().permute(0, 2, 3, 1).numpy())
            textures.append((batch["texture"].clamp(0, 1) * 255).round().byte().permute(0, 2, 3, 1).numpy())
            landmarks.append(batch["landmarks"].numpy().astype(np.float32))
    all_images, all_textures = np.concatenate(images), np.concatenate(textures)
    all_landmarks = np.concatenate(landmarks)
    features, embeddings = [], []
    with torch.no_grad():
        for start in _track(range(0, len(all_images), 32), "encoding", progress):
            inputs = encoder_inputs(encoder, all_images[start : start + 32], all_landmarks[start : start + 32])
            embedding, feature = embed_and_features(encoder, inputs)
            features.append(feature)
            embeddings.append(embedding)
    if recipe.train.photo_inputs > 0:
        # Each person's own photos as inputs, the person's average (row i of the prepared arrays) as the target.
        targets, photo_features, photo_embeddings = encode_photos(recipe, faces, encoder, progress)
        all_images = np.concatenate([all_images, all_images[targets]])
        all_textures = np.concatenate([all_textures, all_textures[targets]])
        all_landmarks = np.concatenate([all_landmarks, all_landmarks[targets]])
        features.append(photo_features)
        embeddings.append(photo_embeddings)
    if recipe.train.background == "plain":
        # After encoding: the encoder keeps seeing the photos' own backgrounds, as it will at inference.
        all_images, all_textures = plain_background(
            all_images, all_textures, all_landmarks, np.asarray(faces.mean_landmarks), recipe.train.background_rgb
        )
    transforms = np.stack([encoder_input_transform(encoder, points) for points in all_landmarks]).astype(np.float32)
    return Pool(
        images=_uint8_chw(all_images),
        textures=_uint8_chw(all_textures),
        landmarks=torch.from_numpy(all_landmarks),
        features=torch.cat(features),
        embeddings=torch.cat(embeddings),
        transforms=torch.from_numpy(transforms),
    )


def embed_and_features(encoder: Any, inputs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(embeddings, features) of encoder inputs, in one pass when the encoder offers it (dlib-resnet, sface)."""
    both = getattr(encoder, "embed_and_features", None)
    if both is not None:
        embedding, feature = both(inputs)
        return embedding, feature
    return encoder.embed(inputs), encoder.features(inputs)


def encode_photos(recipe: Any, faces: Any, encoder: Any, progress: bool = False) -> tuple[Any, Any, Any]:
    """Train on what inference sees: up to ``train.photo_inputs`` photos of each prepared person (kept or rejected
    for expression, pose up to ``train.photo_max_yaw_deg``, any quality) read from the prepare manifest and encoded
    from the photo itself, as inference will. Returns (target rows (M,) int64, features (M, F), embeddings (M, D))."""
    from facekit.align import encoder_inputs
    from facekit.images import load_rgb

    settings = recipe.train
    row_of = {record["identity"]: index for index, record in enumerate(faces.identities)}
    candidates: dict[int, list[tuple[str, np.ndarray]]] = {}
    with (Path(recipe.prepare.output) / "manifest.jsonl").open() as handle:
        for line in handle:
            row = json.loads(line)
            target = row_of.get(row["identity"])
            if target is None or "landmarks" not in row or row.get("face", 0) != 0:
                continue
            if abs(float(row["measures"]["yaw"])) > settings.photo_max_yaw_deg:
                continue
            candidates.setdefault(target, []).append((row["path"], np.asarray(row["landmarks"], np.float64)))
    rng = np.random.default_rng([settings.seed, 1])
    chosen: list[tuple[int, str, np.ndarray]] = []
    for target in sorted(candidates):
        items = candidates[target]
        for pick in rng.permutation(len(items))[: settings.photo_inputs]:
            chosen.append((target, *items[pick]))
    targets: list[int] = []
    features, embeddings = [], []
    with torch.no_grad():
        for start in _track(range(0, len(chosen), 32), f"encoding {len(chosen)} photos", progress):
            block = []
            for target, path, points in chosen[start : start + 32]:
                image, _ = load_rgb(Path(path))
                if image is not None:
                    block.append((target, image, points))
            if not block:
                continue
            inputs = encoder_inputs(encoder, [b[1] for b in block], np.stack([b[2] for b in block]))
            embedding, feature = embed_and_features(encoder, inputs)
            features.append(feature)
            embeddings.append(embedding)
            targets.extend(b[0] for b in block)
    logger.info("photo inputs: %d photos of %d people", len(targets), len(candidates))
    if not targets:
        raise FacekitError(f"train.photo_inputs: no usable photo in {recipe.prepare.output}/manifest.jsonl")
    return np.asarray(targets, np.int64), torch.cat(features), torch.cat(embeddings)


def background_mask(landmarks: np.ndarray, size: int) -> np.ndarray:
    """(S, S) float32 in [0, 1]: 1 on the face of (68, 2) iBUG ``landmarks``, its forehead up to about the hairline
    (the brows raised by one interocular distance) and a margin of S/12 for hair and ears, feathered over S/40 px.
    Outside it is what the quality benchmark counts as background (side strips beyond the hull grown by S/14)."""
    import cv2

    from facekit.align import interocular_distance
    from facekit.data.poisson import face_mask

    points = np.asarray(landmarks, np.float64)
    forehead = points[17:27] - np.array([0.0, interocular_distance(points)])
    hard = face_mask(np.concatenate([points, forehead]), size, size, blur_px=0.0)
    margin = max(1, round(size / 12))
    kernel = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * margin + 1, 2 * margin + 1))
    grown = cv2.dilate((hard > 0.5).astype(np.float32), kernel)
    soft = cv2.GaussianBlur(grown, (0, 0), sigmaX=size / 40, borderType=cv2.BORDER_CONSTANT)
    return np.clip(soft, 0.0, 1.0).astype(np.float32)


def plain_background(
    images: np.ndarray, textures: np.ndarray, landmarks: np.ndarray, mean_landmarks: np.ndarray, rgb: Any
) -> tuple[np.ndarray, np.ndarray]:
    """Targets on one flat colour: (N, S, S, 3) uint8 ``images`` outside :func:`background_mask` of their (N, K, 2)
    ``landmarks``, ``textures`` outside the mask of the mean landmarks (they are registered to the mean face)."""
    size = images.shape[1]
    colour = np.asarray(rgb, np.float32).reshape(1, 1, 3)

    def flatten(image: np.ndarray, mask: np.ndarray) -> np.ndarray:
        blended = image.astype(np.float32) * mask[..., None] + colour * (1 - mask[..., None])
        return np.asarray(blended.round().clip(0, 255).astype(np.uint8))

    texture_mask = background_mask(mean_landmarks, size)
    flat_images = np.stack([flatten(i, background_mask(p, size)) for i, p in zip(images, landmarks, strict=True)])
    flat_textures = np.stack([flatten(t, texture_mask) for t in textures])
    return flat_images, flat_textures


def cached_pool(plan: Any, encoder: Any, path: Path, progress: bool = False) -> Pool:
    """:func:`build_pool`, cached in ``path`` (a resumed or repeated run skips the morphs and the encoding).

    The cache is used only when it was made from the same prepared set, pool size, augmentation, seed and encoder.
    """
    recipe = plan.recipe
    prepared = Path(recipe.prepare.output)
    key = json.dumps(
        {
            "prepared": str(prepared.resolve()),
            "prepared_mtime": (prepared / "landmarks.npy").stat().st_mtime_ns,
            "pool_size": recipe.train.pool_size if recipe.augment.enabled else 0,
            "augment": recipe.augment.model_dump(mode="json"),
            "seed": recipe.train.seed,
            "encoder": plan.components["encoder"].spec.name,
            "photo_inputs": [recipe.train.photo_inputs, recipe.train.photo_max_yaw_deg],
            "background": [recipe.train.background, list(recipe.train.background_rgb)],
        },
        sort_keys=True,
    )
    if path.is_file():
        from safetensors import safe_open

        with safe_open(str(path), framework="pt") as handle:
            if (handle.metadata() or {}).get("key") == key:
                logger.info("training pool from cache %s", path)
                return Pool(**load_file(str(path)))
    pool = build_pool(plan, encoder, progress)
    from facekit.runs import is_rank_zero

    if is_rank_zero():
        path.parent.mkdir(parents=True, exist_ok=True)
        temporary = path.with_name(f".{path.name}.tmp")
        save_file({k: v.contiguous() for k, v in pool.__dict__.items()}, str(temporary), metadata={"key": key})
        os.replace(temporary, path)
    return pool


def _track(iterable: Any, description: str, progress: bool) -> Any:
    if not progress:
        return iterable
    from rich.progress import track

    return track(iterable, description=description)


# ------------------------------------------------------------------------------------------------ losses


def jitter_transforms(transforms: torch.Tensor, size: tuple[int, int], draws: np.ndarray) -> torch.Tensor:
    """Compose (B, 2, 3) image -> crop transforms with a random similarity about the crop's centre.

    ``draws`` (B, 4) are standard-normal-scaled (shift x, shift y as fractions of the crop side, log scale, angle in
    radians); the caller draws them from the step's seeded generator so a resumed run repeats them.
    """
    width, height = size
    d = torch.as_tensor(draws, dtype=transforms.dtype, device=transforms.device)
    scale, angle = torch.exp(d[:, 2]), d[:, 3]
    cos, sin = scale * torch.cos(angle), scale * torch.sin(angle)
    rotation = torch.stack([torch.stack([cos, -sin], -1), torch.stack([sin, cos], -1)], 1)  # (B, 2, 2)
    centre = torch.tensor([(width - 1) / 2, (height - 1) / 2], dtype=transforms.dtype, device=transforms.device)
    shift = d[:, :2] * torch.tensor([width, height], dtype=transforms.dtype, device=transforms.device)
    offset = centre - rotation @ centre + shift  # (B, 2)
    linear = rotation @ transforms[:, :, :2]
    translation = (rotation @ transforms[:, :, 2:]).squeeze(-1) + offset
    return torch.cat([linear, translation.unsqueeze(-1)], dim=2)


def encoder_crops(encoder: Any, images: torch.Tensor, transform: torch.Tensor) -> torch.Tensor:
    """(B, 3, S, S) images cropped differentiably to the encoder's input with the (B, 2, 3) ``transform``."""
    from facekit.align import warp_images_affine

    width, height = encoder.card.input_size
    return warp_images_affine(images, transform.to(images.dtype), (height, width)).float()


def identity_term(embedding: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """1 - cos(E(output), E(input)), averaged over the batch."""
    return (1 - F.cosine_similarity(embedding, target, dim=1)).mean()


def laplacian(images: torch.Tensor) -> torch.Tensor:
    """4-neighbour Laplacian of each channel of (B, C, H, W) images (replicated border), same shape."""
    kernel = torch.tensor([[0.0, 1.0, 0.0], [1.0, -4.0, 1.0], [0.0, 1.0, 0.0]], dtype=images.dtype)
    channels = images.shape[1]
    weight = kernel.to(images.device).expand(channels, 1, 3, 3)
    return F.conv2d(F.pad(images, (1, 1, 1, 1), mode="replicate"), weight, groups=channels)


def feature_matching(maps: list[torch.Tensor], targets: list[torch.Tensor]) -> torch.Tensor:
    """Mean over layers of L1(map, target map) / mean |target map|, so every layer weighs the same."""
    terms = [F.l1_loss(m, t) / t.abs().mean().clamp_min(1e-6) for m, t in zip(maps, targets, strict=True)]
    return torch.stack(terms).mean()


def losses(
    out: DecoderOutput, batch: dict[str, torch.Tensor], encoder: Any, weights: Any, image_size: int
) -> dict[str, torch.Tensor]:
    """The weighted terms. Landmark MSE is in pixels of a 100-px image (so it does not depend on the size)."""
    terms: dict[str, torch.Tensor] = {}
    if out.landmarks is not None:
        scale = 100.0 / image_size
        terms["landmark"] = F.mse_loss(out.landmarks.float() * scale, batch["landmarks"] * scale)
    # Decoders without a texture (plain-cnn) learn the image directly.
    learned, target, name = (
        (out.texture, batch["texture"], "texture") if out.texture is not None else (out.image, batch["image"], "image")
    )
    terms[name] = F.l1_loss(learned.float(), target)
    if weights.laplacian > 0:
        terms["laplacian"] = F.l1_loss(laplacian(learned.float()), laplacian(target))
    if weights.identity > 0 or weights.perceptual > 0:
        crops = encoder_crops(encoder, out.image, batch["transform"])
        if weights.perceptual > 0:  # feature matching shares the identity loss's forward pass
            if not hasattr(encoder, "embed_and_maps"):
                raise FacekitError(
                    f"loss.perceptual needs an encoder with embed_and_maps; {type(encoder).__name__} has none"
                )
            embedding, maps = encoder.embed_and_maps(crops)
            with torch.no_grad():
                _, targets = encoder.embed_and_maps(encoder_crops(encoder, batch["image"], batch["transform"]))
            terms["perceptual"] = feature_matching(maps, targets)
        else:
            embedding = encoder.embed(crops)
        if weights.identity > 0:
            terms["identity"] = identity_term(embedding, batch["embedding"])
    weight_of = {"landmark": weights.landmark, "texture": weights.texture, "image": weights.texture}
    weight_of.update(identity=weights.identity, perceptual=weights.perceptual, laplacian=weights.laplacian)
    terms["loss"] = sum((weight_of[k] * v for k, v in list(terms.items())), torch.zeros((), device=out.image.device))
    return terms


# ------------------------------------------------------------------------------------------------ checkpoints


def save_checkpoint(
    path: Path, decoder: torch.nn.Module, optimizer: torch.optim.Optimizer, meta: dict[str, Any]
) -> None:
    """Weights + Adam state + metadata in one safetensors file, written atomically (temporary file + rename)."""
    tensors = {f"model.{k}": v.detach().cpu().contiguous() for k, v in decoder.state_dict().items()}
    state = optimizer.state_dict()
    for index, values in state["state"].items():
        for key, value in values.items():
            tensor = value if torch.is_tensor(value) else torch.tensor(value)
            tensors[f"optim.{index}.{key}"] = tensor.detach().cpu().contiguous()
    write_model_file(path, tensors, {**meta, "param_groups": state["param_groups"]})


def write_model_file(path: Path, tensors: dict[str, torch.Tensor], meta: dict[str, Any]) -> None:
    """``tensors`` + ``meta`` (JSON) + the tensors' sha256 as one safetensors file, written to a temporary file beside
    ``path`` and renamed: the format of checkpoints and exported models, read by :func:`read_checkpoint`."""
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(f".{path.name}.tmp")
    save_file(tensors, str(temporary), metadata={"facekit": json.dumps(meta), DIGEST_KEY: tensors_digest(tensors)})
    os.replace(temporary, path)


#: Metadata key of the sha256 over a checkpoint's tensors (names, dtypes, shapes and bytes), checked when read.
DIGEST_KEY = "tensors_sha256"


def tensors_digest(tensors: dict[str, torch.Tensor]) -> str:
    """sha256 over every tensor's name, dtype, shape and bytes, in name order."""
    import hashlib

    digest = hashlib.sha256()
    for name in sorted(tensors):
        tensor = tensors[name].detach().cpu().contiguous()
        digest.update(f"{name}|{tensor.dtype}|{tuple(tensor.shape)}|".encode())
        digest.update(tensor.reshape(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


def read_checkpoint(path: str | Path) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """(tensors, metadata) of a checkpoint written by :func:`save_checkpoint` (or a model from :func:`export_model`)."""
    from safetensors import SafetensorError, safe_open

    from facekit.models import ChecksumError

    path = Path(path)
    if not path.is_file():
        raise FacekitError(f"checkpoint not found: {path}")
    try:
        with safe_open(str(path), framework="pt") as handle:
            header = handle.metadata() or {}
        meta = json.loads(header.get("facekit", "{}"))
        tensors = load_file(str(path))
    except (OSError, ValueError, RuntimeError, SafetensorError) as error:  # a damaged header, JSON or file
        raise FacekitError(f"{path} is not a readable facekit model ({type(error).__name__}: {error})") from None
    expected = header.get(DIGEST_KEY)
    if expected is not None and tensors_digest(tensors) != expected:
        raise ChecksumError(f"{path} is damaged: its tensors do not match the checksum they were saved with")
    return tensors, meta


def load_decoder_state(decoder: torch.nn.Module, tensors: dict[str, torch.Tensor]) -> None:
    model = {k.removeprefix("model."): v for k, v in tensors.items() if k.startswith("model.")}
    decoder.load_state_dict({k: v.float() if v.is_floating_point() else v for k, v in model.items()})


def _load_optimizer(optimizer: torch.optim.Optimizer, tensors: dict[str, torch.Tensor], meta: dict[str, Any]) -> None:
    state: dict[int, dict[str, Any]] = {}
    for key, value in tensors.items():
        if key.startswith("optim."):
            _, index, name = key.split(".", 2)
            state.setdefault(int(index), {})[name] = value
    optimizer.load_state_dict({"state": state, "param_groups": meta["param_groups"]})


# ------------------------------------------------------------------------------------------------ the loop


def choose_device(requested: str) -> torch.device:
    if requested == "cuda" or (requested == "auto" and torch.cuda.is_available()):
        if not torch.cuda.is_available():
            raise FacekitError("train.device is cuda but no GPU is visible; use device: cpu or auto")
        local = int(os.environ.get("LOCAL_RANK", "0"))
        return torch.device("cuda", local)
    return torch.device("cpu")


def build_decoder(plan: Any, feature_size: int) -> Any:
    component = plan.components.get("decoder")
    if component is None:
        raise FacekitError("training needs components.decoder (e.g. {name: paper})")
    params = component.params
    if params.feature_size != feature_size:
        params = params.model_copy(update={"feature_size": feature_size})
    decoder = component.spec.build(params)
    warper = plan.components.get("warper")
    if warper is not None and hasattr(decoder, "warper"):
        decoder.warper = warper.build()
    return decoder


def train(plan: Any, resume: bool = False, progress: bool = False) -> Path:
    """Train ``plan``'s decoder; returns the output folder holding ``checkpoints/last.safetensors``. A second
    training into the same ``train.output`` at the same time is refused (a lock held by rank 0)."""
    from contextlib import nullcontext

    from facekit.locks import exclusive
    from facekit.runs import is_rank_zero

    output = Path(plan.recipe.train.output)
    with exclusive(output, "training") if is_rank_zero() else nullcontext():
        return _train(plan, resume, progress)


def _train(plan: Any, resume: bool, progress: bool) -> Path:
    from facekit.data.dataset import PreparedFaces

    recipe, settings = plan.recipe, plan.recipe.train
    encoder_component = plan.components.get("encoder")
    if encoder_component is None:
        raise FacekitError("training needs components.encoder (e.g. {name: dlib-resnet})")
    device = choose_device(settings.device)
    dist = setup_distributed(device)
    torch.manual_seed(settings.seed)
    output = Path(settings.output)
    checkpoint = output / "checkpoints" / CHECKPOINT
    if checkpoint.exists() and not resume:
        raise FacekitError(f"{checkpoint} exists: pass --resume to continue it, or choose another train.output")

    encoder = encoder_component.build().to(device).eval()
    for parameter in encoder.parameters():
        parameter.requires_grad_(False)
    pool = cached_pool(plan, encoder.cpu(), output / "pool.safetensors", progress=progress and dist.main)
    encoder.to(device)
    decoder = build_decoder(plan, int(pool.features.shape[1])).to(device)
    decoder.set_mean_landmarks(PreparedFaces(recipe.prepare.output).mean_landmarks)
    decoder.set_feature_stats(pool.features)
    if decoder.image_size != recipe.prepare.image_size:
        raise FacekitError(
            f"decoder image_size {decoder.image_size} != prepare.image_size {recipe.prepare.image_size}: set "
            "components.decoder.params.image_size to match"
        )
    if settings.init is not None and not (resume and checkpoint.exists()):
        # Weights and buffers (feature statistics, mean landmarks) of the starting model replace the fresh ones.
        init_tensors, _ = read_checkpoint(settings.init)
        try:
            load_decoder_state(decoder, init_tensors)
        except RuntimeError as error:
            raise FacekitError(f"train.init {settings.init} does not fit this recipe's decoder: {error}") from None
        logger.info("decoder initialised from %s", settings.init)
    optimizer = torch.optim.Adam(decoder.parameters(), lr=settings.lr)
    start_step = 0
    if resume and checkpoint.exists():
        tensors, meta = read_checkpoint(checkpoint)
        load_decoder_state(decoder, tensors)
        _load_optimizer(optimizer, tensors, meta)
        start_step = int(meta["step"])
        logger.info("resumed from %s at step %d", checkpoint, start_step)
    model: torch.nn.Module = decoder
    if dist.world > 1:
        # BatchNorm with the global batch's statistics: N processes follow one process (facekit.distributed).
        model = torch.nn.parallel.DistributedDataParallel(global_batchnorm(decoder))
    from facekit.runs import git_sha

    meta_base = {
        "train_git_sha": git_sha(),
        "decoder": plan.components["decoder"].spec.name,
        "decoder_params": decoder.params.model_dump(),
        "encoder": encoder_component.spec.name,
        "warper": plan.components["warper"].spec.name if "warper" in plan.components else None,
        "warper_params": plan.components["warper"].params.model_dump() if "warper" in plan.components else None,
        BOUNDARY_CONVENTION_KEY: "tfa",
        "recipe": plan.to_dict(),
        "recipe_source": plan.source,
        "world_size": dist.world,
    }
    if dist.main:
        _prepare_logs(output, start_step)
    writer = _tensorboard(output) if dist.main else None
    autocast = _autocast(device, settings.precision)
    fixed = np.arange(min(8, len(pool)))
    began = time.perf_counter()
    bar = _progress_bar(progress and dist.main, settings.steps, start_step)
    for step in range(start_step + 1, settings.steps + 1):
        rng = np.random.default_rng([settings.seed, step])
        index = rng.integers(len(pool), size=settings.batch_size)
        mine = index[dist.rank :: dist.world]
        batch = pool.batch(mine, device)
        if settings.identity_jitter > 0:
            draws = rng.normal(scale=settings.identity_jitter, size=(settings.batch_size, 4))[dist.rank :: dist.world]
            batch["transform"] = jitter_transforms(batch["transform"], encoder.card.input_size, draws)
        with autocast:
            out = model(batch["features"])
            terms = losses(out, batch, encoder, settings.loss, decoder.image_size)
        optimizer.zero_grad(set_to_none=True)
        # Each rank averages over its slice; scale so DDP's mean over ranks equals the mean over the global batch.
        (terms["loss"] * len(mine) * dist.world / len(index)).backward()
        optimizer.step()
        logged = global_terms(terms, len(mine) / len(index), dist)
        if dist.main:
            row = {k: float(v) for k, v in logged.items()}
            _log(output, writer, step, row, time.perf_counter() - began)
            if step % settings.sample_every == 0 or step == settings.steps:
                _sample_grid(decoder, pool, fixed, device, output / "samples" / f"step-{step:06d}.png")
            saved = step % settings.checkpoint_every == 0 or step == settings.steps
            if saved:
                save_checkpoint(checkpoint, decoder, optimizer, {**meta_base, "step": step})
            if settings.keep_every is not None and step % settings.keep_every == 0:
                kept = checkpoint.with_name(f"step-{step:06d}.safetensors")
                if saved:  # the same state was just written: copy the file rather than serialise it again
                    shutil.copyfile(checkpoint, kept)
                else:
                    save_checkpoint(kept, decoder, optimizer, {**meta_base, "step": step})
            if bar is not None:
                bar[0].update(bar[1], advance=1, description=f"train loss {row['loss']:.4f}")
    if bar is not None:
        bar[0].stop()
    if writer is not None:
        writer.close()
    return output


def _autocast(device: torch.device, precision: str) -> Any:
    if precision == "fp32":
        return torch.autocast(device.type, enabled=False)
    dtype = torch.bfloat16 if precision == "bf16" else torch.float16
    return torch.autocast(device.type, dtype=dtype)


def _prepare_logs(output: Path, start_step: int) -> None:
    """metrics.csv without rows past ``start_step`` (a killed run may have logged steps it never checkpointed)."""
    output.mkdir(parents=True, exist_ok=True)
    path = output / "metrics.csv"
    rows: list[dict[str, str]] = []
    if path.exists() and start_step > 0:
        with path.open(newline="") as handle:
            rows = [r for r in csv.DictReader(handle) if r.get("step", "").isdigit() and int(r["step"]) <= start_step]
    with path.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=METRICS)
        writer.writeheader()
        writer.writerows(rows)


def _log(output: Path, writer: Any, step: int, row: dict[str, float], seconds: float) -> None:
    with (output / "metrics.csv").open("a", newline="") as handle:
        csv.DictWriter(handle, fieldnames=METRICS).writerow(
            {"step": step, **{k: f"{row[k]:.6f}" for k in METRICS[1:-1] if k in row}, "seconds": f"{seconds:.2f}"}
        )
    if writer is not None:
        for key, value in row.items():
            writer.add_scalar(f"train/{key}", value, step)


def _tensorboard(output: Path) -> Any:
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:  # tensorboard is optional: metrics.csv always has the numbers
        return None
    return SummaryWriter(str(output / "tensorboard"))


def _progress_bar(enabled: bool, total: int, done: int) -> tuple[Any, Any] | None:
    if not enabled:
        return None
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    bar = Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn())
    bar.start()
    return bar, bar.add_task("train", total=total, completed=done)


def _sample_grid(decoder: torch.nn.Module, pool: Pool, index: np.ndarray, device: torch.device, path: Path) -> None:
    """Rows of input | output | texture for a fixed set of training items."""
    from PIL import Image

    decoder.eval()
    with torch.no_grad():
        batch = pool.batch(index, device)
        out = decoder(batch["features"])
    decoder.train()
    columns = [batch["image"], out.image.float()] + ([out.texture.float()] if out.texture is not None else [])
    grid = torch.cat([torch.cat(list(c.clamp(0, 1).cpu()), dim=1) for c in columns], dim=2)  # (3, rows*S, cols*S)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray((grid.permute(1, 2, 0).numpy() * 255).round().astype(np.uint8)).save(path)


def export_model(checkpoint: str | Path, out: str | Path, metrics: str | Path | None = None) -> int:
    """Write ``checkpoint``'s decoder weights in fp16 with its provenance (recipe, step, components, git sha and
    ``metrics`` if given) and no optimizer state: the format of the shipped default model. Returns the file size."""
    from facekit.runs import git_sha

    tensors, meta = read_checkpoint(Path(checkpoint))
    weights = {
        k: (v.half() if v.is_floating_point() and not k.endswith("mean_landmarks") else v)
        for k, v in tensors.items()
        if k.startswith("model.")
    }
    meta = {k: v for k, v in meta.items() if k != "param_groups"}
    meta["exported_from"] = str(checkpoint)
    meta["git_sha"] = git_sha()
    if metrics is not None:
        meta["metrics"] = json.loads(Path(metrics).read_text())
    out = Path(out)
    write_model_file(out, weights, meta)
    return out.stat().st_size
