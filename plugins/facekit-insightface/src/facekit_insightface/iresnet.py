"""arcface_torch's iresnet (Deng et al. 2019, "improved" pre-activation ResNet) in torch, with the module names of
its ``backbone.pth`` state dicts so that they load strictly.

Written from the architecture: 3x3 stem with PReLU; four stages of IBasicBlock (BN -> conv3x3 -> BN -> PReLU ->
conv3x3 (stride here) -> BN, plus an identity or conv1x1+BN shortcut), each stage halving the resolution
(112 -> 56 -> 28 -> 14 -> 7); BN; flatten (C, H, W); fc 25088 -> 512; BatchNorm1d ``features``.
"""

from __future__ import annotations

import dataclasses

import torch
import torch.nn.functional as F
from torch import nn

from facekit.models import resolve_weights
from facekit.weights import load_state_dict_file, load_strict
from facekit_insightface.cards import ArcFaceTorchParams, Arch, arcface_torch_card, arcface_torch_source

__all__ = ["LAYERS", "ArcFaceTorchEncoder", "IResNet", "build_encoder"]

#: Blocks per stage of each depth, as in arcface_torch.
LAYERS: dict[str, tuple[int, int, int, int]] = {
    "r18": (2, 2, 2, 2),
    "r34": (3, 4, 6, 3),
    "r50": (3, 4, 14, 3),
    "r100": (3, 13, 30, 3),
}


class IBasicBlock(nn.Module):
    def __init__(self, inplanes: int, planes: int, stride: int = 1, downsample: nn.Module | None = None) -> None:
        super().__init__()
        self.bn1 = nn.BatchNorm2d(inplanes, eps=1e-05)
        self.conv1 = nn.Conv2d(inplanes, planes, 3, stride=1, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes, eps=1e-05)
        self.prelu = nn.PReLU(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, stride=stride, padding=1, bias=False)
        self.bn3 = nn.BatchNorm2d(planes, eps=1e-05)
        self.downsample = downsample

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.bn3(self.conv2(self.prelu(self.bn2(self.conv1(self.bn1(x))))))
        identity = x if self.downsample is None else self.downsample(x)
        return out + identity


class IResNet(nn.Module):
    """``(B, 3, 112, 112)`` standardised RGB -> ``(B, 512)``; :meth:`fc_output` is the pre-``features`` layer."""

    def __init__(self, layers: tuple[int, int, int, int], num_features: int = 512) -> None:
        super().__init__()
        self.inplanes = 64
        self.conv1 = nn.Conv2d(3, 64, 3, stride=1, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(64, eps=1e-05)
        self.prelu = nn.PReLU(64)
        self.layer1 = self._make_layer(64, layers[0])
        self.layer2 = self._make_layer(128, layers[1])
        self.layer3 = self._make_layer(256, layers[2])
        self.layer4 = self._make_layer(512, layers[3])
        self.bn2 = nn.BatchNorm2d(512, eps=1e-05)
        self.dropout = nn.Dropout(p=0.0)
        self.fc = nn.Linear(512 * 7 * 7, num_features)
        self.features = nn.BatchNorm1d(num_features, eps=1e-05)

    def _make_layer(self, planes: int, blocks: int) -> nn.Sequential:
        downsample = nn.Sequential(
            nn.Conv2d(self.inplanes, planes, 1, stride=2, bias=False), nn.BatchNorm2d(planes, eps=1e-05)
        )
        layers = [IBasicBlock(self.inplanes, planes, 2, downsample)]
        self.inplanes = planes
        layers.extend(IBasicBlock(planes, planes) for _ in range(1, blocks))
        return nn.Sequential(*layers)

    def fc_output(self, x: torch.Tensor) -> torch.Tensor:
        """Standardised ``(B, 3, 112, 112)`` -> ``(B, 512)`` output of ``fc``."""
        x = self.prelu(self.bn1(self.conv1(x)))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        return self.fc(self.dropout(torch.flatten(self.bn2(x), 1)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.features(self.fc_output(x))


class ArcFaceTorchEncoder(nn.Module):
    """The ``arcface`` encoder: ``(B, 3, 112, 112)`` RGB in ``[0, 1]`` aligned to ``card.template`` -> ``embed``
    ``(B, 512)`` L2-normalised, ``features`` ``(B, 512)`` the ``fc`` output. Standardisation happens inside."""

    mean: torch.Tensor
    std: torch.Tensor

    def __init__(self, net: IResNet, arch: Arch) -> None:
        super().__init__()
        self.net = net
        self.card = arcface_torch_card(arch)
        self.register_buffer("mean", torch.tensor(self.card.mean).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(self.card.std).view(1, 3, 1, 1), persistent=False)

    def _standardise(self, images: torch.Tensor) -> torch.Tensor:
        if images.ndim != 4 or tuple(images.shape[1:]) != (3, 112, 112):
            raise ValueError(f"arcface: expected (B, 3, 112, 112) RGB crops, got {tuple(images.shape)}")
        return (images - self.mean) / self.std

    def features(self, images: torch.Tensor) -> torch.Tensor:
        """``(B, 3, 112, 112)`` in ``[0, 1]`` -> ``(B, 512)`` output of ``fc``."""
        return self.net.fc_output(self._standardise(images))

    def embed(self, images: torch.Tensor) -> torch.Tensor:
        """``(B, 3, 112, 112)`` in ``[0, 1]`` -> ``(B, 512)`` L2-normalised embedding."""
        return F.normalize(self.net.features(self.features(images)), p=2, dim=1)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.embed(images)


def build_encoder(params: ArcFaceTorchParams) -> ArcFaceTorchEncoder:
    """Build the iresnet ``params.arch`` from a verified ``backbone.pth`` (frozen, eval mode)."""
    source = arcface_torch_source(params.arch)
    if params.sha256 is not None:
        source = dataclasses.replace(source, sha256=params.sha256)
    what = f"arcface ({params.arch})"
    path = resolve_weights(source, params.weights, what=what)
    state = load_state_dict_file(path, what)
    net = IResNet(LAYERS[params.arch])
    load_strict(net, state, what, path)
    encoder = ArcFaceTorchEncoder(net, params.arch).eval()
    encoder.requires_grad_(False)
    return encoder
