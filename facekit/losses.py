"""Training losses: landmark MSE, texture L1, identity (1 - cosine of encoder embeddings of input and output, on
a jittered crop made differentiably with the encoder's own alignment), and the optional perceptual and Laplacian terms.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
import torch.nn.functional as F

from facekit.errors import FacekitError
from facekit.types import DecoderOutput

if TYPE_CHECKING:
    from facekit.recipe import LossWeights


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
    # In float32 whatever the autocast: a bf16 transform (8 bits of mantissa) misplaces a 224 px crop by ~0.5 px.
    with torch.autocast(images.device.type, enabled=False):
        return warp_images_affine(images.float(), transform.float(), (height, width))


def blur_each(images: torch.Tensor, sigmas: torch.Tensor) -> torch.Tensor:
    """(B, C, H, W) images, each blurred by a Gaussian of its own ``sigmas`` (B,) px (0: unchanged), differentiably:
    one separable kernel per image, reflected border; the kernel reaches 3 sigma, or the image's side less one px."""
    batch, channels = images.shape[:2]
    reach = math.ceil(3 * float(sigmas.max())) if len(sigmas) else 0
    radius = max(0, min(reach, min(images.shape[2:]) - 1))
    offsets = torch.arange(-radius, radius + 1, dtype=images.dtype, device=images.device)
    width = sigmas.to(images.dtype).clamp_min(1e-3)[:, None]
    kernels = torch.exp(-0.5 * (offsets[None] / width) ** 2)
    kernels = kernels / kernels.sum(1, keepdim=True)  # (B, K); sigma ~0 leaves a one-tap kernel: the image itself
    weight = kernels.repeat_interleave(channels, 0)[:, None]  # (B*C, 1, K)
    flat = F.pad(images.reshape(1, batch * channels, *images.shape[2:]), (radius, radius, radius, radius), "reflect")
    flat = F.conv2d(flat, weight[:, :, None, :], groups=batch * channels)  # along x
    flat = F.conv2d(flat, weight[:, :, :, None], groups=batch * channels)  # along y
    return flat.reshape(images.shape)


def identity_term(embedding: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """1 - cos(E(output), E(input)), averaged over the batch."""
    return (1 - F.cosine_similarity(embedding, target, dim=1)).mean()


def separation_term(
    embedding: torch.Tensor, target: torch.Tensor, groups: torch.Tensor, margin: float = 0.0
) -> torch.Tensor:
    """Different people's outputs no more alike than their inputs: over the batch's pairs (i, j) of different
    ``groups``, the mean of max(0, cos(E(out_i), E(out_j)) - cos(E(in_i), E(in_j)) + margin). The identity term pulls
    each output towards its own input; pixel losses towards per-person averages pull every face towards the mean face,
    which this term pushes back where two outputs have come closer than their photos were, or than ``margin`` less
    alike (0 without such a pair)."""
    # In float32 whatever the autocast: bf16 resolves a cosine near dlib's 0.83 to ~0.004, more than the term itself.
    with torch.autocast(embedding.device.type, enabled=False):
        out = F.normalize(embedding.float(), dim=1)
        given = F.normalize(target.float(), dim=1)
        excess = out @ out.T - given @ given.T
    pairs = torch.triu(groups[:, None] != groups[None, :], diagonal=1)
    if not bool(pairs.any()):
        return excess.new_zeros(())
    return F.relu(excess[pairs] + margin).mean()


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


def identity_items(batch_size: int, share: float, rank: int = 0, world: int = 1) -> tuple[int, float]:
    """Which items of rank ``rank``'s slice (``batch[rank::world]``) get the identity loss, and its weight there.

    One process puts the first ``n = ceil(share * batch_size)`` items of the batch through the encoder and averages
    over them; of those, this rank holds the first ``count`` of its slice. Each rank's terms are means over its slice
    weighted by its share of the batch (the training step's scaling), so the rank's identity mean is multiplied by
    ``count * batch_size / (n * slice size)``: summed over ranks it is the one process's mean. Returns
    ``(count, scale)``; (n, 1.0) for one process."""
    n = max(1, math.ceil(share * batch_size))
    count = len(range(rank, n, world))
    mine = len(range(rank, batch_size, world))
    return count, (count * batch_size / (n * mine) if count and mine else 0.0)


def _output_crops(encoder: Any, images: torch.Tensor, batch: dict[str, torch.Tensor], transform: torch.Tensor) -> Any:
    """The encoder's crops of the first ``len(images)`` outputs, blurred under ``train.identity_blur`` (the output's
    crop only: the identity target is the photo's embedding)."""
    crops = encoder_crops(encoder, images, transform)
    return blur_each(crops, batch["blur"][: len(images)]) if "blur" in batch else crops


def losses(
    out: DecoderOutput,
    batch: dict[str, torch.Tensor],
    encoder: Any,
    weights: LossWeights,
    image_size: int,
    identity: tuple[int, float] | None = None,
    own: Any = None,
) -> dict[str, torch.Tensor]:
    """The weighted terms. Landmark MSE is in pixels of a 100-px image (so it does not depend on the size).
    ``identity``: (items, scale) of :func:`identity_items` for one rank of several (default: this batch's first
    ``ceil(identity_share * size)`` items, scale 1). ``own``: the encoder the decoder reads, for
    ``weights.identity_own`` when ``encoder`` is another recogniser (the batch then has ``own_embedding`` and
    ``own_transform``)."""
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
    # A share of the batch (weights.identity_share) through the encoder; the rest gets the pixel terms only.
    through_encoder = weights.through_encoder()
    n, share_scale = identity if identity is not None else identity_items(out.image.shape[0], weights.identity_share)
    both = weights.identity_own > 0
    if both and "own_embedding" not in batch:
        raise FacekitError(
            "train.loss.identity_own needs the encoder's own embeddings in the batch: a pool made with "
            "components.identity_encoder holds them (Pool.own_embeddings)"
        )
    if both and n == 0:
        terms["identity_own"] = out.image.new_zeros((), dtype=torch.float32)
    elif both:  # the encoder the decoder reads, on its own crop, beside the identity encoder's term
        crops = _output_crops(own, out.image[:n], batch, batch["own_transform"][:n])
        terms["identity_own"] = identity_term(own.embed(crops), batch["own_embedding"][:n]) * share_scale
    if through_encoder and n == 0:  # none of the global batch's identity items is in this rank's slice
        for key in through_encoder:
            terms[key] = out.image.new_zeros((), dtype=torch.float32)
    elif through_encoder:
        crops = _output_crops(encoder, out.image[:n], batch, batch["transform"][:n])
        if weights.perceptual > 0:  # feature matching shares the identity loss's forward pass
            if not hasattr(encoder, "embed_and_maps"):  # (named as the registry built it, not by its class)
                from facekit.registry import component_label

                raise FacekitError(
                    f"train.loss.perceptual needs an encoder with embed_and_maps; {component_label(encoder, 'encoder')}"
                    " has none: set train.loss.perceptual to 0, or choose an encoder that has it (dlib-resnet)"
                )
            embedding, maps = encoder.embed_and_maps(crops)
            with torch.no_grad():
                given = encoder_crops(encoder, batch["image"][:n], batch["transform"][:n])
                if "blur" in batch:  # maps of the target under the same blur: the blur is no detail to make up for
                    given = blur_each(given, batch["blur"][:n])
                _, targets = encoder.embed_and_maps(given)
            terms["perceptual"] = feature_matching(maps, targets) * share_scale
        else:
            embedding = encoder.embed(crops)
        if weights.identity > 0:
            terms["identity"] = identity_term(embedding, batch["embedding"][:n]) * share_scale
        if weights.separation > 0:
            groups, margin = batch["group"][:n], weights.separation_margin
            terms["separation"] = separation_term(embedding, batch["embedding"][:n], groups, margin) * share_scale
    # Each term's weight is the LossWeights field of its name; the image L1 (no texture) takes the texture's.
    weighted = ((getattr(weights, "texture" if k == "image" else k) * v) for k, v in list(terms.items()))
    terms["loss"] = sum(weighted, torch.zeros((), device=out.image.device))
    return terms
