"""dlib's face-recognition ResNet as a facekit encoder: the torch port (differentiable, the offline identity loss)."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch import nn

from facekit.registry import NoParams
from facekit_dlib.cards import RESNET_CARD
from facekit_dlib.models import model_path
from facekit_dlib.resnet import extract_chip, face_chip_transform, load_dlib_resnet


class DlibResNetEncoder(nn.Module):
    """``embed(images (B, 3, 150, 150) dlib chips in [0, 1]) -> (B, 128)`` dlib descriptors (not normalised:
    same person if the Euclidean distance < 0.6); ``features -> (B, 256)``."""

    card = RESNET_CARD

    def __init__(self, _params: NoParams) -> None:
        super().__init__()
        self.net = load_dlib_resnet(model_path("dlib_face_recognition_resnet_model_v1.dat"))

    def embed(self, images: torch.Tensor) -> torch.Tensor:
        return self.net(images)

    def features(self, images: torch.Tensor) -> torch.Tensor:
        return self.net.forward_features(images)

    def embed_and_maps(self, images: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """((B, 128) embedding, early feature maps (B, C, h, w) of the network) in one pass: feature matching."""
        return self.net.embed_and_maps(images)

    def embed_and_features(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Both in one pass: ((B, 128) embedding, (B, 256) features)."""
        embedding, features = self.net(images, return_features=True)
        return embedding, features

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.embed(images)

    @staticmethod
    def align(image: np.ndarray, landmarks: Any) -> np.ndarray:
        """dlib's chip of ``image`` (H, W, 3) uint8 RGB from 5 or 68 ``landmarks`` (K, 2): (150, 150, 3) uint8."""
        return extract_chip(image, np.asarray(landmarks), size=150, padding=0.25)

    @staticmethod
    def input_transform(landmarks: Any) -> np.ndarray:
        """The (2, 3) affine map from image pixels to chip pixels of dlib's chip for ``landmarks`` (K, 2) (the
        inverse of dlib's chip-to-image map), for differentiable chip extraction of decoder outputs."""
        chip_to_image = np.vstack([face_chip_transform(np.asarray(landmarks), size=150, padding=0.25), [0, 0, 1]])
        return np.linalg.inv(chip_to_image)[:2]
