"""The VGG-Face network (VGG-16 with a 2622-identity classifier) in torch, with the module names of
``vgg_face_dag.pth`` (Samuel Albanie's conversion of the Oxford MatConvNet model) so that it loads strictly.

Written from the architecture (Simonyan & Zisserman 2015, configuration D; Parkhi et al. 2015): 13 3x3 convolutions
(padding 1) with ReLU in five blocks closed by 2x2 max pooling, then fc6 (25088 -> 4096), fc7 (4096 -> 4096) with
ReLU (dropout in training) and fc8 (4096 -> 2622). pool5 is flattened in (C, H, W) order, as the file's fc6 expects.
"""

from __future__ import annotations

import dataclasses

import torch
import torch.nn.functional as F
from torch import nn

from facekit.models import resolve_weights
from facekit.weights import load_state_dict_file, load_strict
from facekit_vggface.cards import CARD, FEATURE_SIZE, NUM_CLASSES, SOURCE, VggFaceParams

__all__ = ["BLOCKS", "VggFace", "VggFaceEncoder", "build_encoder"]

#: (block, convolutions, output channels) of VGG-16.
BLOCKS = ((1, 2, 64), (2, 2, 128), (3, 3, 256), (4, 3, 512), (5, 3, 512))


class VggFace(nn.Module):
    """VGG-16 with ``vgg_face_dag`` names: ``conv1_1`` ... ``conv5_3``, ``fc6``, ``fc7``, ``fc8``. Input: ``(B, 3,
    224, 224)`` RGB in 0..255 minus the mean."""

    def __init__(self, num_classes: int = NUM_CLASSES) -> None:
        super().__init__()
        channels = 3
        for block, count, width in BLOCKS:
            for index in range(1, count + 1):
                self.add_module(f"conv{block}_{index}", nn.Conv2d(channels, width, 3, padding=1))
                channels = width
        self.fc6 = nn.Linear(512 * 7 * 7, FEATURE_SIZE)
        self.fc7 = nn.Linear(FEATURE_SIZE, FEATURE_SIZE)
        self.fc8 = nn.Linear(FEATURE_SIZE, num_classes)

    def fc7_preactivation(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, 3, 224, 224)`` mean-subtracted -> ``(B, 4096)`` fc7 before its ReLU (dropout: identity in eval)."""
        for block, count, _ in BLOCKS:
            for index in range(1, count + 1):
                x = F.relu(getattr(self, f"conv{block}_{index}")(x))
            x = F.max_pool2d(x, 2, 2)
        x = F.relu(self.fc6(x.flatten(1)))
        return self.fc7(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Class scores ``(B, 2622)``."""
        return self.fc8(F.relu(self.fc7_preactivation(x)))


class VggFaceEncoder(nn.Module):
    """The ``vggface`` encoder: ``(B, 3, 224, 224)`` RGB in ``[0, 1]`` -> ``features`` ``(B, 4096)`` fc7,
    ``embed`` ``(B, 4096)`` L2-normalised fc7 after ReLU. Mean subtraction happens inside."""

    mean: torch.Tensor
    std: torch.Tensor

    def __init__(self, net: VggFace, features_relu: bool = True) -> None:
        super().__init__()
        self.net = net
        self.card = CARD
        self.features_relu = features_relu
        self.register_buffer("mean", torch.tensor(CARD.mean).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(CARD.std).view(1, 3, 1, 1), persistent=False)

    def _fc7(self, images: torch.Tensor) -> torch.Tensor:
        if images.ndim != 4 or tuple(images.shape[1:]) != (3, 224, 224):
            raise ValueError(f"vggface: expected (B, 3, 224, 224) RGB crops, got {tuple(images.shape)}")
        return self.net.fc7_preactivation((images - self.mean) / self.std)

    def features(self, images: torch.Tensor) -> torch.Tensor:
        """``(B, 3, 224, 224)`` in ``[0, 1]`` -> ``(B, 4096)`` fc7 (after ReLU unless ``features_relu`` is off)."""
        fc7 = self._fc7(images)
        return F.relu(fc7) if self.features_relu else fc7

    def embed(self, images: torch.Tensor) -> torch.Tensor:
        """``(B, 3, 224, 224)`` in ``[0, 1]`` -> ``(B, 4096)`` L2-normalised fc7 after ReLU."""
        return F.normalize(F.relu(self._fc7(images)), p=2, dim=1)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.embed(images)


def build_encoder(params: VggFaceParams) -> VggFaceEncoder:
    """Build the encoder from the verified ``vgg_face_dag.pth`` (frozen, eval mode)."""
    source = SOURCE if params.sha256 is None else dataclasses.replace(SOURCE, sha256=params.sha256)
    what = "vggface"
    path = resolve_weights(source, params.weights, what=what)
    state = load_state_dict_file(path, what)
    net = VggFace()
    load_strict(net, state, what, path)
    encoder = VggFaceEncoder(net, params.features_relu).eval()
    encoder.requires_grad_(False)
    return encoder
