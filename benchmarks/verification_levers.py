"""Levers at inference for verification on normalized faces, tried on selection data (LFW View 1 training pairs).

    python benchmarks/verification_levers.py [--pairs pairsDevTrain.txt] [--max-pairs N] [--variant SPEC ...]
        [--no-write]

Issue #10 asks for LFW verification on the normalized faces (SFace through its own pipeline) of 97.5 %; the default
pipeline and the decoder's face alone are level just under it. This tries what can be changed without training: the
photo detail settings (how much of the photo's shape the face takes, the band's width and strength) and exaggerating
the decoder's face away from its mean face, which undoes the shrinkage towards the mean that pixel and landmark losses
teach a decoder (different people's normalized faces are more alike than their photos).

A variant is ``DETAIL[@MODE:K]``: DETAIL is ``STRENGTH:SIGMA:SHAPE:FOREHEAD`` as ``quality.py --detail`` takes it;
``output:K`` moves the decoder's texture and landmarks K times as far from those it decodes from the training set's
mean features (``shape:K`` its landmarks only, ``texture:K`` its texture only), ``feature:K`` decodes K times the
standardised features (the shipped ``paper`` decoder's layout), ``flip:K`` decodes the encoder's features mixed with
those of the mirrored crop ((1 - K) own + K mirrored), ``invert:K`` takes K Adam steps (rate 0.05) on the decoder's
standardised input so that the training encoder's embedding of the output's crop moves towards the photo's
(test-time inversion; the judge, SFace, is not used). The shipped model normalizes every photo of the pairs (central
face) once per variant; detection and the encoder's features are computed once. Each variant is scored with the
default pipeline and with the decoder's face alone. ``--framed-photos`` adds the photos themselves resampled into
the first variant's output frames, on their own background and on the plain one: what the frame, the size and the
background alone cost.

Writes the ``verification-levers`` section of benchmarks/RESULTS.md.
"""

from __future__ import annotations

import argparse
import hashlib
import shlex
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from quality import (
    PairPhotos,
    SharedDetections,
    accuracy_cell,
    check_pair_arguments,
    normalize_all,
    pair_arguments,
)
from results import machine, publish

from facekit.detail import DetailSettings
from facekit.fidelity import OwnPipelineJudge
from facekit.normalize import Normalizer
from facekit.recipe import DataSection
from facekit.types import DecoderOutput

DEFAULT = "1:4:0.5:1.5"
VARIANTS = [
    DEFAULT,
    "1:4:0:1.5",
    "1:4:0.35:1.5",
    "1:4:0.65:1.5",
    "1:4:1:1.5",
    "1:6:0.5:1.5",
    "1.5:4:0.5:1.5",
    f"{DEFAULT}@output:1.25",
    f"{DEFAULT}@output:1.5",
    f"{DEFAULT}@feature:1.25",
]
MODES = ("output", "shape", "texture", "feature", "flip", "invert")


class Wrapped(torch.nn.Module):
    """The shipped decoder behind a variant: what the normalizer reads of it (size, mean face, warp) and its texture
    warped onto landmarks."""

    def __init__(self, decoder: Any) -> None:
        super().__init__()
        self.inner = decoder
        self.image_size = decoder.image_size
        self.mean_landmarks = decoder.mean_landmarks
        self.warp = decoder.warp

    def render(self, landmarks: torch.Tensor, texture: torch.Tensor) -> DecoderOutput:
        source = self.inner.mean_landmarks.expand_as(landmarks).float()
        image, _ = self.inner.warp(texture, source, landmarks.float())
        return DecoderOutput(image=image, landmarks=landmarks, texture=texture)


class Exaggerated(Wrapped):
    """The shipped decoder with its face moved ``k`` times as far from its mean face (``mode`` output; shape: its
    landmarks only, texture: its texture only) or decoded from ``k`` times its standardised features (``mode``
    feature)."""

    def __init__(self, decoder: Any, mode: str, k: float) -> None:
        super().__init__(decoder)
        self.mode, self.k = mode, k

    def forward(self, features: torch.Tensor) -> DecoderOutput:
        decoder = self.inner
        z = decoder.standardise(features)
        hidden = decoder.shared(self.k * z if self.mode == "feature" else z)
        landmarks, texture = decoder.predict_landmarks(hidden), decoder.texture_head(hidden)
        if self.mode in ("output", "shape", "texture"):
            mean_hidden = decoder.shared(torch.zeros_like(z[:1]))
            mean_points, mean_texture = decoder.predict_landmarks(mean_hidden), decoder.texture_head(mean_hidden)
            if self.mode != "texture":
                landmarks = mean_points + self.k * (landmarks - mean_points)
            if self.mode != "shape":
                texture = (mean_texture + self.k * (texture - mean_texture)).clamp(0, 1)
        return self.render(landmarks, texture)


class Inverted(Wrapped):
    """The shipped decoder, its standardised input moved by ``steps`` Adam steps (rate ``rate``) so that the training
    encoder's embedding of the output (cropped from the output's own landmarks, as training crops it) comes nearer the
    photo's: 1 - cosine, the identity loss of training, minimised for each face at inference. The photo's embedding is
    the encoder's last layer applied to its features (dlib's ResNet: ``net.fc``)."""

    def __init__(self, decoder: Any, encoder: Any, steps: int, rate: float = 0.05) -> None:
        super().__init__(decoder)
        self.encoder, self.steps, self.rate = encoder, steps, rate

    def decode(self, z: torch.Tensor) -> DecoderOutput:
        hidden = self.inner.shared(z)
        return self.render(self.inner.predict_landmarks(hidden), self.inner.texture_head(hidden))

    def forward(self, features: torch.Tensor) -> DecoderOutput:
        from facekit.align import encoder_input_transform
        from facekit.losses import encoder_crops, identity_term

        encoder = self.encoder
        with torch.no_grad():
            target, start = encoder.net.fc(features), self.inner.standardise(features)
        z = start.clone().requires_grad_(True)
        optimiser = torch.optim.Adam([z], lr=self.rate)
        with torch.enable_grad():
            for _ in range(self.steps):
                out = self.decode(z)
                assert out.landmarks is not None  # the paper decoder always predicts them
                points = out.landmarks.detach().double().cpu().numpy()
                transforms = torch.from_numpy(np.stack([encoder_input_transform(encoder, p) for p in points]))
                embedding = encoder.embed(encoder_crops(encoder, out.image, transforms.float()))
                optimiser.zero_grad()
                (identity_term(embedding, target) * len(z)).backward()
                optimiser.step()
        with torch.no_grad():
            return self.decode(z.detach())


class MirrorMixed:
    """The encoder's features of each crop mixed with those of its mirror image: (1 - k) f(crop) + k f(mirrored),
    k = 0.5 their mean (test-time augmentation, as face recognition averages a face's embedding with its mirror's)."""

    def __init__(self, encoder: Any, k: float) -> None:
        self.inner, self.k = encoder, k

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)

    def features(self, crops: torch.Tensor) -> torch.Tensor:
        own, mirrored = self.inner.features(crops), self.inner.features(crops.flip(-1))
        return (1 - self.k) * own + self.k * mirrored


class RememberedFeatures:
    """The encoder with its features of each batch of crops remembered (every variant encodes the same crops)."""

    def __init__(self, encoder: Any) -> None:
        self.inner = encoder
        self.memo: dict[str, torch.Tensor] = {}

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)

    def features(self, crops: torch.Tensor) -> torch.Tensor:
        key = hashlib.sha1(crops.detach().cpu().numpy().tobytes()).hexdigest()
        if key not in self.memo:
            self.memo[key] = self.inner.features(crops)
        return self.memo[key]


def framed_photo(photo: np.ndarray | None, face: Any, scale: int = 1, plain: bool = False) -> np.ndarray | None:
    """``photo`` resampled into its normalized ``face``'s frame (``scale`` x its size) by the similarity that takes
    the photo's landmarks onto the output's (the photo's pose, expression and light kept); ``plain``: everything outside
    the training mask (:func:`facekit.pool.background_mask`) set to the plain background's grey. None without a face."""
    from facekit.align import align_into
    from facekit.pool import background_mask
    from facekit.recipe import TrainSection

    if photo is None or face is None:
        return None
    size = face.image.shape[0] * scale
    aligned = align_into(photo, face.source_landmarks, face.landmarks * scale, size)
    if not plain:
        return aligned.image
    mask = background_mask(aligned.landmarks, size)[..., None]
    grey = np.asarray(TrainSection.model_fields["background_rgb"].default, np.float32)  # (no section built per photo)
    return (aligned.image * mask + grey * (1 - mask)).round().clip(0, 255).astype(np.uint8)


FRAMED = {  # --framed-photos: label -> (scale of the output frame, plain background)
    "photo in the output frame (112 px, no normalization)": (1, False),
    "photo in the output frame, plain background (112 px, no normalization)": (1, True),
    "photo in the output frame, plain background (224 px, no normalization)": (2, True),
}


def parse_variant(text: str) -> tuple[DetailSettings, str | None, float]:
    detail, _, exaggerate = text.partition("@")
    if not exaggerate:
        return DetailSettings.parse(detail), None, 1.0
    mode, _, k = exaggerate.partition(":")
    if mode not in MODES or not k:
        raise ValueError(f"a variant is DETAIL[@MODE:K] with MODE one of {', '.join(MODES)}, got {text!r}")
    return DetailSettings.parse(detail), mode, float(k)


def label(text: str) -> str:
    detail, mode, k = parse_variant(text)
    parts = [f"strength {detail.strength:g}, sigma {detail.sigma:g}, shape {detail.shape:g}"]
    if mode == "flip":
        parts.append(f"features mixed with the mirrored crop's, weight {k:g}")
    elif mode == "invert":
        parts.append(f"decoder's input inverted, {k:g} steps")
    elif mode is not None:
        parts.append(f"decoder x{k:g} from its mean ({mode})")
    return "; ".join(parts) + (" (default)" if text == DEFAULT else "")


def cosines(pairs: PairPhotos, embeddings: np.ndarray) -> tuple[float, float]:
    """Mean cosine of same-person and of different-people pairs (pairs with a missing face left out)."""
    unit = embeddings / np.linalg.norm(embeddings, axis=1, keepdims=True)
    scores = (unit[pairs.first] * unit[pairs.second]).sum(axis=1)
    finite = np.isfinite(scores)
    return float(scores[finite & pairs.same].mean()), float(scores[finite & ~pairs.same].mean())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    pair_arguments(parser)
    parser.add_argument("--variant", action="append", default=[], help=f"DETAIL[@MODE:K] (default: {len(VARIANTS)})")
    parser.add_argument(
        "--framed-photos",
        action="store_true",
        help="also judge the photos resampled into their normalized faces' frame, on their background and on the "
        "plain one (what the frame and background alone cost)",
    )
    args = parser.parse_args()
    check_pair_arguments(parser, args)
    variants = args.variant or VARIANTS
    for text in variants:
        try:
            parse_variant(text)
        except ValueError as error:
            parser.error(str(error))

    started = time.perf_counter()
    pairs = PairPhotos.read(DataSection().resolved_root(), args.folds, args.pairs, args.max_pairs)
    names = [path.stem for path in pairs.paths]
    normalizer = Normalizer.from_checkpoint(None, face="central")
    normalizer.detector = SharedDetections(normalizer.detector, pairs.images)
    normalizer.encoder = remembered = RememberedFeatures(normalizer.encoder)
    shipped = normalizer.decoder
    judge = OwnPipelineJudge.build("sface", face="central")
    judge.detector = SharedDetections(judge.detector, pairs.images)
    photos = judge.embed(pairs.images)
    Row = tuple[str, dict[str, Any], dict[str, Any] | None, tuple[float, float]]
    rows: list[Row] = [("photos (no normalization)", pairs.accuracy(judge, photos), None, cosines(pairs, photos))]
    for text in variants:
        detail, mode, k = parse_variant(text)
        normalizer.detail = detail
        normalizer.decoder = (
            shipped
            if mode in (None, "flip")
            else Inverted(shipped, remembered, int(k))
            if mode == "invert"
            else Exaggerated(shipped, mode, k)
        )
        normalizer.encoder = MirrorMixed(remembered, k) if mode == "flip" else remembered
        faces = [o.face for o in normalize_all(normalizer, pairs.images, names, label(text))]
        default = judge.embed([f.image if f is not None else None for f in faces])
        alone = judge.embed([f.decoder_image if f is not None else None for f in faces])
        scores = pairs.accuracy(judge, default), pairs.accuracy(judge, alone)
        rows.append((label(text), *scores, cosines(pairs, default)))
        if args.framed_photos and text == variants[0]:
            for place, (name, (scale, plain)) in enumerate(FRAMED.items(), start=1):  # after the photos' row
                images = [framed_photo(p, f, scale, plain) for p, f in zip(pairs.images, faces, strict=True)]
                framed = judge.embed(images)
                rows.insert(place, (name, pairs.accuracy(judge, framed), None, cosines(pairs, framed)))

    command = shlex.join(["python", "benchmarks/verification_levers.py", *sys.argv[1:]])
    lines = [
        f"## Levers at inference for verification on normalized faces (`{command}`)",
        "",
        f"Machine: {machine()}; {time.perf_counter() - started:.0f} s in all. {len(pairs.same)} pairs of {args.pairs} "
        f"({args.folds}-fold, threshold chosen on the other folds), {len(pairs.paths)} photos, the central face; "
        "judge SFace through its own pipeline. The shipped model; shape: how far the face takes the photo's own "
        "landmarks; sigma: the photo band's width (px); decoder xK: its face K times as far from its mean face.",
        "",
        "| variant | default pipeline | decoder alone | mean cosine, same person | mean cosine, different people |",
        "|---|---|---|---|---|",
        *(
            f"| {name} | {accuracy_cell(default)} | {accuracy_cell(alone)} | {same:.3f} | {different:.3f} |"
            for name, default, alone, (same, different) in rows
        ),
    ]
    publish("verification-levers", lines, write=not args.no_write)


if __name__ == "__main__":
    main()
