"""Vertex colours from the normalized image and the learned colour model (Cole et al. 2017, App. B.3).

Sampling: every fitted vertex is projected into the normalized face and its colour read bilinearly; its confidence
is (inside the hull of the landmarks and a forehead band, softly) x (foreshortening: a ramp of the cosine between the
vertex normal and the direction to the camera, see ``GRAZING_COS``). Grazing vertices (the sides of the nose, the
cheeks' edges) get a smeared colour from few pixels, so they lean on the colour model.

The Surrey model has no colour basis, so one is learned: PCA of the training set's per-person average faces (the
``facekit prepare`` output) sampled at their fitted vertices (each person's missing or low-confidence vertices are
filled by an EM-style PCA reconstruction). A new face's colours are the regularised weighted least-squares fit onto
that basis (confidence as weights, a Gaussian prior on the coefficients), blended with the samples by confidence.
"""

from __future__ import annotations

import zipfile
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

import numpy as np
import torch

from facekit.errors import FacekitError
from facekit_avatar.fit import Camera, ShapeFit, vertex_normals
from facekit_avatar.model import SurreyModel

#: Foreshortening confidence: full where the surface faces the camera more than ``GRAZING_COS`` (cosine between
#: normal and view), falling linearly to 0 at grazing incidence. Chosen on 40 LFW DevTrain photos (SFace pass rate of
#: the renders at yaw 0, -30, +30: a cosine power of 2 gave 68, 62, 65 %; this ramp 92, 88, 82 %).
GRAZING_COS = 0.5


def foreshortening(cosine: np.ndarray) -> np.ndarray:
    """Confidence from the cosine between vertex normal and view direction."""
    return np.clip(cosine / GRAZING_COS, 0.0, 1.0)


#: Softness of the hull edge, in pixels of a 112-px frame.
HULL_SOFTNESS_PX = 3.0
COLOUR_MODEL_FILE = "colour_model.npz"


@dataclass
class Samples:
    """Per-face vertex samples: ``colours`` (B, N, 3) in [0, 1], ``confidence`` (B, N) in [0, 1], ``image_xy`` (B, N, 2)
    pixels of the normalized face."""

    colours: np.ndarray
    confidence: np.ndarray
    image_xy: np.ndarray


def sample_vertices(
    model: SurreyModel,
    fit: ShapeFit,
    images: np.ndarray,
    landmarks: np.ndarray,
    size: int,
    vertices: torch.Tensor | None = None,
) -> Samples:
    """Colours and confidences of every vertex from ``images`` (B, S, S, 3) uint8 and their (B, 68, 2) landmarks;
    ``vertices``: the fit's (B, N, 3) camera-space vertices when the caller has placed them already."""
    import cv2

    vertices = fit.vertices(model) if vertices is None else vertices
    xy = Camera(size).project(vertices).numpy()
    normals = vertex_normals(vertices, model.triangles)
    towards_camera = torch.nn.functional.normalize(-vertices, dim=2)
    facing = foreshortening((normals * towards_camera).sum(2).clamp_min(0).numpy())
    batch = images.shape[0]
    colours = np.empty((batch, model.vertices, 3), np.float32)
    hull = np.empty((batch, model.vertices), np.float32)
    soft = HULL_SOFTNESS_PX * size / 112
    for b in range(batch):
        maps = xy[b].astype(np.float32)
        sampled = cv2.remap(images[b], maps[:, 0:1], maps[:, 1:2], cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
        colours[b] = sampled.reshape(-1, 3).astype(np.float32) / 255.0
        polygon = cv2.convexHull(face_region(landmarks[b]).astype(np.float32)).reshape(-1, 2)
        hull[b] = np.clip(depth_inside(xy[b], polygon) / soft, 0.0, 1.0)  # 0 on the hull's edge, 1 inside
    return Samples(colours=colours, confidence=(hull * facing).astype(np.float32), image_xy=xy.astype(np.float32))


def depth_inside(points: np.ndarray, polygon: np.ndarray) -> np.ndarray:
    """(N,) distance of each of ``points`` (N, 2) to the boundary of the convex ``polygon`` (V, 2) when inside, and a
    negative value (minus the distance to the nearest edge's line) outside: the inside values of
    ``cv2.pointPolygonTest(..., measureDist=True)``, for all points at once (for a convex polygon the nearest boundary
    point of an inside point lies on the nearest edge's line)."""
    corners = np.asarray(polygon, np.float64)
    edges = np.roll(corners, -1, axis=0) - corners
    area = float(
        np.sum(corners[:, 0] * np.roll(corners, -1, axis=0)[:, 1] - np.roll(corners, -1, axis=0)[:, 0] * corners[:, 1])
    )
    offsets = np.asarray(points, np.float64)[:, None, :] - corners[None]  # (N, V, 2)
    cross = edges[None, :, 0] * offsets[..., 1] - edges[None, :, 1] * offsets[..., 0]
    lengths = np.maximum(np.linalg.norm(edges, axis=1), 1e-12)
    return np.asarray((np.sign(area) * cross / lengths).min(axis=1))


#: The forehead band: the eyebrows raised by this many interocular distances (the 68 points stop at the eyebrows; the
#: normalized face's forehead above them is the decoder's, with the photo's fine detail by default,
#: facekit.detail's ``forehead``).
FOREHEAD = 0.45


def face_region(landmarks: np.ndarray) -> np.ndarray:
    """The points whose convex hull is trusted: the 68 iBUG points and the eyebrows (17-26) raised by ``FOREHEAD``
    interocular distances."""
    eyes = landmarks[36:42].mean(0), landmarks[42:48].mean(0)
    up = FOREHEAD * float(np.linalg.norm(eyes[1] - eyes[0]))
    brows = landmarks[17:27] - np.array([0.0, up], np.float32)
    return np.concatenate([landmarks, brows])


#: The ridge weight of the colour-model fit. The basis is scaled to unit-variance coefficients, so the weight is the
#: samples' noise variance in [0, 1] units: 0.03 (about 44 levels of noise) was chosen on the learn split's 160
#: held-out training people (predicting unseen vertices: 16.3 levels RMS at 1.0, 14.3 at 0.1, 14.2 at 0.03-0.003).
COLOUR_PRIOR = 0.03


@dataclass
class ColourModel:
    """Mean (N, 3) and basis (N, 3, K) scaled by the standard deviations (coefficients ~ N(0, 1)), in [0, 1] sRGB."""

    mean: np.ndarray
    basis: np.ndarray
    people: int

    @property
    def components(self) -> int:
        return int(self.basis.shape[2])

    def fit(self, colours: np.ndarray, confidence: np.ndarray, prior: float = COLOUR_PRIOR) -> np.ndarray:
        """Coefficients (B, K) minimising sum_v w_v |x_v - mean_v - B_v c|^2 + prior |c|^2 (weighted ridge)."""
        n, _, k = self.basis.shape
        basis = self.basis.reshape(n * 3, k)
        out = np.empty((colours.shape[0], k), np.float64)
        for b in range(colours.shape[0]):
            w = np.repeat(confidence[b], 3)
            residual = (colours[b] - self.mean).reshape(-1)
            gram = basis.T @ (basis * w[:, None]) + prior * np.eye(k)
            out[b] = np.linalg.solve(gram, basis.T @ (w * residual))
        return out

    def reconstruct(self, coefficients: np.ndarray) -> np.ndarray:
        """(B, K) -> (B, N, 3) colours in [0, 1]."""
        return np.clip(self.mean + np.einsum("nck,bk->bnc", self.basis, coefficients), 0.0, 1.0)

    def blend(self, samples: Samples, prior: float = COLOUR_PRIOR) -> tuple[np.ndarray, np.ndarray]:
        """(final colours (B, N, 3), reconstruction (B, N, 3)): samples where confident, the model elsewhere."""
        recon = self.reconstruct(self.fit(samples.colours, samples.confidence, prior))
        w = samples.confidence[..., None]
        return w * samples.colours + (1 - w) * recon, recon

    def save(self, path: str | Path) -> None:
        np.savez_compressed(
            path, mean=self.mean.astype(np.float16), basis=self.basis.astype(np.float16), people=self.people
        )

    @classmethod
    def load(cls, path: str | Path | None = None) -> ColourModel:
        """The learned model (default: the one shipped with the plugin)."""
        source = Path(path) if path is not None else Path(str(resources.files("facekit_avatar") / "data"))
        if source.is_dir():
            source = source / COLOUR_MODEL_FILE
        try:
            with np.load(source) as data:
                return cls(data["mean"].astype(np.float32), data["basis"].astype(np.float32), int(data["people"]))
        # Missing, not an .npz (a .npy: TypeError; a cut-short zip: BadZipFile), or not a colour model's arrays.
        except (OSError, ValueError, KeyError, EOFError, TypeError, AttributeError, zipfile.BadZipFile) as error:
            raise FacekitError(
                f"colour_model {source}: not a colour model (an .npz with mean, basis and people, as "
                f"python -m facekit_avatar.learn writes): {type(error).__name__}: {error}"
            ) from None


def learn(
    colours: np.ndarray, confidence: np.ndarray, components: int = 20, threshold: float = 0.3, rounds: int = 5
) -> ColourModel:
    """PCA of (P, N, 3) per-person vertex colours where each person's vertices below ``threshold`` confidence are
    missing: fill with the confidence-weighted mean, then re-fill from the rank-``components`` reconstruction
    (``rounds`` times), then the basis of the filled data scaled by the singular values."""
    people, n, _ = colours.shape
    seen = confidence >= threshold  # (P, N)
    weights = seen.astype(np.float64)
    count = weights.sum(0)
    global_mean = (colours * weights[..., None]).sum((0, 1)) / max(weights.sum(), 1.0)
    mean = np.where(
        count[:, None] > 0, (colours * weights[..., None]).sum(0) / np.maximum(count, 1)[:, None], global_mean
    )
    data = np.where(seen[..., None], colours, mean).reshape(people, -1)
    flat_mean = mean.reshape(-1)
    k = min(components, people - 1)
    mask = np.repeat(seen, 3, axis=1)
    for _ in range(rounds):
        centred = data - flat_mean
        u, s, vt = np.linalg.svd(centred, full_matrices=False)
        low_rank = flat_mean + (u[:, :k] * s[:k]) @ vt[:k]
        data = np.where(mask, colours.reshape(people, -1), low_rank)
        flat_mean = data.mean(0)
    centred = data - flat_mean
    _, s, vt = np.linalg.svd(centred, full_matrices=False)
    basis = (vt[:k] * (s[:k, None] / np.sqrt(max(people - 1, 1)))).T  # (3N, K) scaled by the std of each component
    return ColourModel(flat_mean.reshape(n, 3).astype(np.float32), basis.reshape(n, 3, k).astype(np.float32), people)
