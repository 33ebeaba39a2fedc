"""The Surrey Face Model (shape only, 3,448 vertices) read once with eos-py and kept as torch tensors.

The model file is user-supplied (non-commercial licence; https://cvssp.org/facemodel): ``facekit models import
sfm_shape_3448.bin`` puts it in the store, or pass its path. It is verified by sha256 like every weight file. The
iBUG-68 -> vertex mapping and the contour definitions are eos's own ``share/`` files (Apache-2.0), shipped here.
Coordinates are millimetres, x to the subject's left, y up, z out of the face (towards a frontal camera).
"""

from __future__ import annotations

import json
import tomllib
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

import numpy as np
import torch

from facekit_avatar.cache import locked_cache
from facekit_avatar.cards import SFM_SOURCE


def data_file(name: str) -> Path:
    """A file shipped in this package's ``data`` folder."""
    return Path(str(resources.files("facekit_avatar") / "data" / name))


@dataclass(frozen=True)
class LandmarkMap:
    """Which model vertex each iBUG-68 point is (0-based point -> vertex), and the 0-based contour points."""

    points: np.ndarray  # (M,) 0-based iBUG indices with a fixed vertex
    vertices: np.ndarray  # (M,) their vertex indices
    right_contour: np.ndarray  # 0-based iBUG indices of the right (image-left) jaw contour
    left_contour: np.ndarray


def read_landmark_map(path: str | Path | None = None) -> LandmarkMap:
    """eos's ``ibug_to_sfm.txt`` (TOML): 1-based iBUG numbers -> vertex indices, and the contour landmark lists."""
    data = tomllib.loads(Path(path or data_file("ibug_to_sfm.txt")).read_text())
    pairs = sorted((int(k) - 1, int(v)) for k, v in data["landmark_mappings"].items())
    contour = data["contour_landmarks"]
    return LandmarkMap(
        points=np.array([p for p, _ in pairs]),
        vertices=np.array([v for _, v in pairs]),
        right_contour=np.array(contour["right"]) - 1,
        left_contour=np.array(contour["left"]) - 1,
    )


def read_model_contour(path: str | Path | None = None) -> tuple[np.ndarray, np.ndarray]:
    """eos's ``sfm_model_contours.json``: the vertices along the right and left face outline, top to chin."""
    data = json.loads(Path(path or data_file("sfm_model_contours.json")).read_text())["model_contour"]
    return np.array(data["right_contour"]), np.array(data["left_contour"])


class SurreyModel:
    """Mean (N, 3), basis (N, 3, K) scaled by the standard deviations (coefficients ~ N(0, 1)), triangles (T, 3),
    UV coordinates (N, 2), the landmark map and the contours, and the mesh's vertex neighbours."""

    def __init__(self, path: str | Path) -> None:
        import eos

        model = eos.morphablemodel.load_model(str(path))
        shape = model.get_shape_model()
        self.path = Path(path)
        mean = np.asarray(shape.get_mean(), np.float32).reshape(-1, 3)
        basis = np.asarray(shape.get_rescaled_pca_basis(), np.float32)  # (3N, K): orthonormal basis * sqrt(eigenvalue)
        self.mean = torch.from_numpy(mean)
        self.basis = torch.from_numpy(basis.reshape(mean.shape[0], 3, -1))
        self.triangles = np.asarray(shape.get_triangle_list(), np.int64)
        self.uv = np.asarray(model.get_texture_coordinates(), np.float32)
        self.landmarks = read_landmark_map()
        self.contour = read_model_contour()

    @property
    def vertices(self) -> int:
        return int(self.mean.shape[0])

    @property
    def components(self) -> int:
        return int(self.basis.shape[2])

    def shape(self, coefficients: torch.Tensor, index: np.ndarray | None = None) -> torch.Tensor:
        """(B, K) coefficients -> (B, N, 3) vertices (or only the vertices ``index``)."""
        mean, basis = (self.mean, self.basis) if index is None else (self.mean[index], self.basis[index])
        k = coefficients.shape[1]
        return mean + torch.einsum("nck,bk->bnc", basis[:, :, :k], coefficients)

    def neighbours(self) -> list[set[int]]:
        """Each vertex's direct mesh neighbours (sharing a triangle edge)."""
        out: list[set[int]] = [set() for _ in range(self.vertices)]
        for a, b, c in self.triangles:
            out[a] |= {b, c}
            out[b] |= {a, c}
            out[c] |= {a, b}
        return out


@locked_cache(maxsize=2)
def load_model(path: str | None = None) -> SurreyModel:
    """The Surrey model from ``path`` or the facekit model store, verified by sha256 (loaded once per process)."""
    from facekit.models import resolve_weights

    return SurreyModel(resolve_weights(SFM_SOURCE, path, what="the avatar app's Surrey Face Model"))
