"""Decoders from identity features to a normalized face (Cole et al. 2017, Sec. 3-4) and the paper's comparisons.

The warp is the recipe's ``components.warper`` (attached as ``decoder.warper``), by default the paper's phi(r) = r.

- ``paper``: features -> FC+ReLU -> (a) landmark MLP -> (K, 2) landmarks, predicted as offsets from the mean face's
  landmarks; (b) texture CNN: FC to a ``grid`` x ``grid`` map, stride-2 transposed convolutions (ReLU, channels
  halving) up to the texture size, a 1x1 convolution to RGB. The texture is registered to the mean landmarks; the
  differentiable spline warp moves it onto the predicted landmarks.
- ``fc-texture``: the same, but the texture comes straight from a fully connected layer (the paper's comparison).
- ``plain-cnn``: one CNN straight to the image, no landmark/texture split (the paper's "plain CNN").

The mean landmarks are a buffer set from the training data (:meth:`set_mean_landmarks`) and saved with the weights.
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import nn

from facekit.decoder_params import DecoderParams
from facekit.types import DecoderOutput

#: Smoothing of the decoder's warp: predicted inner-lip points of a closed mouth may coincide (see facekit.data).
DECODER_WARP_REGULARIZATION = 1e-2


def _upsampling_stack(grid: int, size: int, channels: int, norm: str = "none") -> tuple[nn.Sequential, int]:
    """Stride-2 transposed convolutions (ReLU, channels halving) from ``grid`` to ``size`` pixels; ``norm="batch"``
    puts a BatchNorm2d between each convolution and its ReLU."""
    steps = math.log2(size / grid)
    if steps < 1 or abs(steps - round(steps)) > 1e-9:
        raise ValueError(f"image_size {size} must be grid {grid} times a power of two (>= 2)")
    layers: list[nn.Module] = []
    current = channels
    for _ in range(round(steps)):
        out = max(current // 2, 8)
        layers.append(nn.ConvTranspose2d(current, out, kernel_size=4, stride=2, padding=1, bias=norm == "none"))
        if norm == "batch":
            layers.append(nn.BatchNorm2d(out))
        layers.append(nn.ReLU(inplace=True))
        current = out
    return nn.Sequential(*layers), current


class _Base(nn.Module):
    def __init__(self, params: DecoderParams) -> None:
        super().__init__()
        self.params = params
        self.feature_size = params.feature_size
        self.image_size = params.image_size
        self.mean_landmarks: torch.Tensor
        self.register_buffer("mean_landmarks", torch.zeros(params.landmarks, 2))
        # Encoder features share a large common part (dlib's: mean 1.2, spread across faces 0.1); the decoder reads
        # them standardised with the training set's statistics, saved with the weights.
        self.feature_mean: torch.Tensor
        self.feature_std: torch.Tensor
        self.register_buffer("feature_mean", torch.zeros(params.feature_size))
        self.register_buffer("feature_std", torch.ones(params.feature_size))
        self.warper: Any = None  # a facekit Warper; set by the trainer/normalizer from the recipe

    def set_mean_landmarks(self, points: Any) -> None:
        """The mean face's (K, 2) landmarks in the output frame (from the prepared training set)."""
        self.mean_landmarks.copy_(torch.as_tensor(points, dtype=self.mean_landmarks.dtype))

    def set_feature_stats(self, features: torch.Tensor) -> None:
        """Standardise inputs with the mean and spread of the training set's (N, F) features."""
        self.feature_mean.copy_(features.mean(dim=0))
        self.feature_std.copy_(
            features.std(dim=0).clamp_min(1e-6) if len(features) > 1 else torch.ones_like(self.feature_std)
        )

    def standardise(self, features: torch.Tensor) -> torch.Tensor:
        return (features - self.feature_mean) / self.feature_std

    def forward(self, features: torch.Tensor) -> DecoderOutput:
        return self.decode(features)

    def decode(self, features: torch.Tensor) -> DecoderOutput:
        raise NotImplementedError


class PaperDecoder(_Base):
    """``decode(features (B, F)) -> DecoderOutput(image (B, 3, S, S), landmarks (B, K, 2), texture (B, 3, S, S))``."""

    def __init__(self, params: DecoderParams) -> None:
        super().__init__(params)
        hidden = params.hidden
        self.shared = nn.Sequential(nn.Linear(params.feature_size, hidden), nn.ReLU(inplace=True))
        last = nn.Linear(hidden, params.landmarks * 2)
        nn.init.zeros_(last.weight)  # start at the mean face
        nn.init.zeros_(last.bias)
        self.landmark_mlp = nn.Sequential(nn.Linear(hidden, hidden), nn.ReLU(inplace=True), last)
        self.texture_head: nn.Module = self._texture_head(params)

    def _texture_head(self, params: DecoderParams) -> nn.Module:
        stack, out_channels = _upsampling_stack(params.grid, params.image_size, params.channels, params.norm)
        return nn.Sequential(
            nn.Linear(params.hidden, params.channels * params.grid * params.grid),
            nn.ReLU(inplace=True),
            nn.Unflatten(1, (params.channels, params.grid, params.grid)),
            stack,
            nn.Conv2d(out_channels, 3, kernel_size=1),
            nn.Sigmoid(),
        )

    def predict_landmarks(self, hidden: torch.Tensor) -> torch.Tensor:
        # Offsets in units of 1/10 of the image so the MLP's outputs stay O(1).
        offsets = self.landmark_mlp(hidden).view(-1, self.params.landmarks, 2) * (self.image_size / 10)
        return self.mean_landmarks + offsets

    def decode(self, features: torch.Tensor) -> DecoderOutput:
        hidden = self.shared(self.standardise(features))
        landmarks = self.predict_landmarks(hidden)
        texture = self.texture_head(hidden)
        # The points stay float32 under a bf16 autocast (bf16 spaces 128-256 px 1 px apart); the warp returns the
        # texture's dtype.
        mean = self.mean_landmarks.expand_as(landmarks).float()
        image, _ = self.warp(texture, mean, landmarks.float())
        return DecoderOutput(image=image, landmarks=landmarks, texture=texture)

    def warp(self, texture: torch.Tensor, source: torch.Tensor, destination: torch.Tensor) -> tuple[Any, Any]:
        """The recipe's warper when one was attached (``decoder.warper = ...``), else the paper's phi(r) = r spline."""
        if self.warper is not None:
            return self.warper.warp(texture, source, destination)
        from facekit.warp import sparse_image_warp

        return sparse_image_warp(
            texture, source, destination, order=1, regularization=DECODER_WARP_REGULARIZATION, boundary_points=3
        )


class FCTextureDecoder(PaperDecoder):
    """The paper's comparison: the texture comes straight from one fully connected layer (no convolutions)."""

    def _texture_head(self, params: DecoderParams) -> nn.Module:
        size = params.image_size
        return nn.Sequential(nn.Linear(params.hidden, 3 * size * size), nn.Unflatten(1, (3, size, size)), nn.Sigmoid())


class PlainCNNDecoder(_Base):
    """The paper's "plain CNN": features -> FC -> transposed convolutions -> the image; no landmarks, no warp."""

    def __init__(self, params: DecoderParams) -> None:
        super().__init__(params)
        stack, out_channels = _upsampling_stack(params.grid, params.image_size, params.channels, params.norm)
        self.net = nn.Sequential(
            nn.Linear(params.feature_size, params.hidden),
            nn.ReLU(inplace=True),
            nn.Linear(params.hidden, params.channels * params.grid * params.grid),
            nn.ReLU(inplace=True),
            nn.Unflatten(1, (params.channels, params.grid, params.grid)),
            stack,
            nn.Conv2d(out_channels, 3, kernel_size=1),
            nn.Sigmoid(),
        )

    def decode(self, features: torch.Tensor) -> DecoderOutput:
        return DecoderOutput(image=self.net(self.standardise(features)))
