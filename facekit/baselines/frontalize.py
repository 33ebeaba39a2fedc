"""Frontalization baseline in the spirit of Hassner et al. 2015, "Effective Face Frontalization in Unconstrained
Images": one 3-D mean face (the Surrey Face Model's 845-vertex reference mesh) serves every photo.

1. **Reference view** (once): the mean mesh seen by a fixed frontal *orthographic* camera, scaled and shifted so the
   mean shape's eye centres land where :func:`facekit.align.paper_eye_targets` puts them in an S x S crop (the frame
   of facekit's normalized faces). A numpy z-buffer rasterises the mesh's triangles, giving each covered output pixel
   its 3-D point on the mesh (barycentric interpolation of the nearest triangle).
2. **Camera of the photo**: ``cv2.solvePnP`` (SQPnP, refined by Levenberg-Marquardt) from the 45 iBUG landmarks the
   reference mesh defines to their 3-D positions, with the pinhole intrinsics of
   :func:`facekit.data.pose.estimate_pose` (focal length max(width, height), principal point at the centre).
3. **Back-projection**: every covered output pixel's 3-D point is projected into the photo and its colour sampled
   bilinearly (``cv2.remap``). Pixels the mesh does not cover come from the plain similarity-aligned crop
   (:func:`facekit.align.align_paper`), blended over a one-pixel feather so there is no black background and no hard
   seam.

Not done (as in the brief): lighting, occlusion handling and Hassner's soft symmetry. On a turned face the far
cheek's pixels are sampled from whatever occludes it in the photo (usually the nose or the near cheek), and the
whole mesh is rigid: expressions and individual face shapes are not fitted.

**Reference landmarks** (``NormalizedFace.landmarks``): the frontal projection of the mean shape for the 45 iBUG
landmarks the 845-vertex mesh defines; the 23 it lacks are filled geometrically in the reference frame:

- jaw contour 0-7 and 9-16: 8 points per side at equal arc length along the frontal projection of the SFM model
  contour (``sfm_model_contours.json``, its vertices above the chin), from where it crosses 0.1 interocular
  distances below the eyes down to the chin (landmark 8);
- 20, 23 (eyebrows) and 32, 34 (under the nose): midpoints of their defined neighbours; 27 (top of the nose
  bridge): on the midline at the height of the upper eyelids; 60, 64 (inner mouth corners): a quarter of the way
  from the outer corner to the middle of the lips' inner contour points next to it.

Checked against dlib's landmarks on 30 London neutral photos similarity-aligned to this frame: the filled points are
off by 4.6 % of the interocular distance on average, the mesh-defined ones by 4.5 % (the mean mesh is not the mean
of those faces), so the fill is as good as the mesh itself.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from facekit.align import align_paper, apply_transform, paper_eye_targets, similarity_transform
from facekit.data.pose import MeanShape, load_mean_shape, read_obj_vertices
from facekit.errors import FacekitError
from facekit.normalize import NormalizedFace, Outcome

logger = logging.getLogger(__name__)

#: OpenCV camera axes from the SFM's (x right, y up, z towards the viewer): flip y and z.
SFM_TO_OPENCV = np.array([1.0, -1.0, -1.0])
#: Where the jaw contour starts, below the eye line, in interocular distances (see the module docstring).
JAW_START_BELOW_EYES = 0.1
#: Width of the blend between the frontalized mesh and the similarity-aligned background, in pixels (Gaussian sigma).
FEATHER_SIGMA = 1.0


def read_obj_triangles(path: Path) -> np.ndarray:
    """The ``f`` lines of a Wavefront OBJ as 0-based vertex indices (T, 3); polygons are fanned into triangles."""
    triangles: list[list[int]] = []
    for line in path.read_text().splitlines():
        if not line.startswith("f "):
            continue
        corners = [int(token.split("/")[0]) - 1 for token in line.split()[1:]]
        triangles.extend([corners[0], corners[i], corners[i + 1]] for i in range(1, len(corners) - 1))
    return np.array(triangles, dtype=np.int64).reshape(-1, 3)


def rasterize(xy: np.ndarray, depth: np.ndarray, triangles: np.ndarray, size: int) -> tuple[np.ndarray, np.ndarray]:
    """Z-buffer the mesh with vertex pixels ``xy`` (N, 2) and ``depth`` (N,) (smaller = nearer) into ``size`` x
    ``size`` pixels (centres at integer coordinates). Returns the triangle index per pixel (S, S) int, -1 where no
    triangle covers it, and the barycentric weights of the triangle's three corners (S, S, 3)."""
    zbuffer = np.full((size, size), np.inf)
    index = np.full((size, size), -1, dtype=np.int64)
    weights = np.zeros((size, size, 3))
    eps = 1e-9  # pixels on a shared edge belong to both triangles: no cracks
    for t, (a, b, c) in enumerate(triangles):
        pa, pb, pc = xy[a], xy[b], xy[c]
        corners = np.stack([pa, pb, pc])
        x0, y0 = np.maximum(np.ceil(corners.min(axis=0)).astype(int), 0)
        x1, y1 = np.minimum(np.floor(corners.max(axis=0)).astype(int), size - 1)
        if x0 > x1 or y0 > y1:
            continue
        e1, e2 = pb - pa, pc - pa
        det = e1[0] * e2[1] - e1[1] * e2[0]
        if abs(det) < 1e-12:
            continue  # seen edge-on
        ys, xs = np.mgrid[y0 : y1 + 1, x0 : x1 + 1].astype(np.float64)
        dx, dy = xs - pa[0], ys - pa[1]
        wb = (dx * e2[1] - dy * e2[0]) / det
        wc = (e1[0] * dy - e1[1] * dx) / det
        wa = 1.0 - wb - wc
        z = wa * depth[a] + wb * depth[b] + wc * depth[c]
        window = zbuffer[y0 : y1 + 1, x0 : x1 + 1]
        hit = (wa >= -eps) & (wb >= -eps) & (wc >= -eps) & (z < window)
        window[hit] = z[hit]
        index[y0 : y1 + 1, x0 : x1 + 1][hit] = t
        weights[y0 : y1 + 1, x0 : x1 + 1][hit] = np.stack([wa, wb, wc], axis=-1)[hit]
    return index, weights


@dataclass(frozen=True)
class ReferenceView:
    """The frontal view of the mean mesh: ``points`` (S, S, 3) the 3-D point (OpenCV camera axes, mm) behind each
    pixel, NaN where ``mask`` (S, S) bool is False; ``landmarks`` (68, 2) iBUG landmarks in the view (x, y pixels);
    ``transform`` (2, 3) mapping the mesh's (x, y) in mm to view pixels."""

    points: np.ndarray
    mask: np.ndarray
    landmarks: np.ndarray
    transform: np.ndarray


def reference_landmarks(shape: MeanShape, vertices_xy: np.ndarray, contours: dict[str, list[int]]) -> np.ndarray:
    """The 68 iBUG landmarks (68, 2) in the reference view: the mean shape's projection ``shape.points`` must already
    be in view pixels (its x, y), ``vertices_xy`` (N, 2) the mesh in view pixels; the missing landmarks are filled
    as the module docstring describes."""
    points = np.full((68, 2), np.nan)
    points[shape.landmarks] = shape.points[:, :2]
    if np.isnan(points[[8, 17, 19, 21, 22, 24, 28, 31, 33, 35, 36, 37, 38, 43, 44, 45, 48, 54, 61, 63, 65, 67]]).any():
        raise FacekitError("the SFM landmark mapping lacks points the frontalization needs; use eos's ibug_to_sfm.txt")
    interocular = float(np.linalg.norm(points[42:48].mean(axis=0) - points[36:42].mean(axis=0)))
    start_y = float((points[36:42, 1].mean() + points[42:48, 1].mean()) / 2 + JAW_START_BELOW_EYES * interocular)
    for key, jaw in (("right_contour", slice(0, 8)), ("left_contour", slice(16, 8, -1))):
        contour = vertices_xy[contours[key]]
        # The contour's last vertices wrap under the chin, lower than the chin landmark: stop above it.
        polyline = np.vstack([contour[contour[:, 1] < points[8, 1]], points[8]])
        below = np.nonzero(polyline[:, 1] >= start_y)[0]
        first = int(below[0]) if len(below) else len(polyline) - 1
        if first > 0:
            p, q = polyline[first - 1], polyline[first]
            t = (start_y - p[1]) / (q[1] - p[1])
            polyline = np.vstack([p + t * (q - p), polyline[first:]])
        arc = np.r_[0.0, np.cumsum(np.linalg.norm(np.diff(polyline, axis=0), axis=1))]
        stops = np.linspace(0.0, arc[-1], 9)[:8]
        points[jaw] = np.stack([np.interp(stops, arc, polyline[:, 0]), np.interp(stops, arc, polyline[:, 1])], 1)
    points[20] = (points[19] + points[21]) / 2
    points[23] = (points[22] + points[24]) / 2
    points[27] = [points[28, 0], points[[37, 38, 43, 44], 1].mean()]
    points[32] = (points[31] + points[33]) / 2
    points[34] = (points[33] + points[35]) / 2
    points[60] = 0.75 * points[48] + 0.25 * (points[61] + points[67]) / 2
    points[64] = 0.75 * points[54] + 0.25 * (points[63] + points[65]) / 2
    return points


def reference_view(
    vertices: np.ndarray, triangles: np.ndarray, shape: MeanShape, contours: dict[str, list[int]], size: int
) -> ReferenceView:
    """Render the mean mesh (``vertices`` (N, 3) OpenCV axes, ``triangles`` (T, 3)) frontally into a ``size`` crop
    with the mean shape's eye centres on :func:`facekit.align.paper_eye_targets`."""
    eyes = np.stack(
        [shape.points[np.isin(shape.landmarks, eye)].mean(axis=0) for eye in (range(36, 42), range(42, 48))]
    )
    transform = similarity_transform(eyes[:, :2], paper_eye_targets(size))
    xy = apply_transform(transform, vertices[:, :2])
    index, weights = rasterize(xy, vertices[:, 2], triangles, size)
    mask = index >= 0
    points = np.full((size, size, 3), np.nan)
    corners = vertices[triangles[index[mask]]]  # (P, 3 corners, 3)
    points[mask] = np.einsum("pc,pcd->pd", weights[mask], corners)
    in_view = MeanShape(np.c_[apply_transform(transform, shape.points[:, :2]), shape.points[:, 2]], shape.landmarks)
    return ReferenceView(points, mask, reference_landmarks(in_view, xy, contours), transform)


def estimate_camera(landmarks: np.ndarray, image_size: tuple[int, int], shape: MeanShape) -> np.ndarray:
    """The (3, 4) projection matrix of a photo of ``image_size`` (width, height) from its 68 ``landmarks`` (x, y
    pixels) and the mean shape: pinhole intrinsics as in :func:`facekit.data.pose.estimate_pose`, pose by SQPnP
    refined with Levenberg-Marquardt. Maps homogeneous 3-D points (OpenCV axes, mm) to homogeneous pixels."""
    from facekit.data.pose import fit_camera

    camera, rotation, tvec = fit_camera(landmarks, image_size, shape, refine=True)
    return np.asarray(camera @ np.hstack([rotation, tvec.reshape(3, 1)]), dtype=np.float64)


class Frontalizer:
    """Hassner-style frontalization with the SFM mean mesh; a drop-in for :class:`facekit.normalize.Normalizer` in
    :func:`facekit.evaluate.evaluate_normalizer`. ``detector``: any facekit detector with ``detect_array``."""

    def __init__(
        self,
        vertices: np.ndarray,
        triangles: np.ndarray,
        shape: MeanShape,
        contours: dict[str, list[int]],
        size: int = 112,
        detector: Any = None,
        face: str = "largest",
    ) -> None:
        from facekit.types import check_face_choice

        self.size = size
        self.shape = shape
        self.detector = detector
        #: Which face of a photo :meth:`normalize_many` takes, as :attr:`facekit.normalize.Normalizer.face`.
        self.face = check_face_choice(face)
        self.view = reference_view(vertices, triangles, shape, contours, size)
        logger.debug("frontal reference view: %d of %d pixels on the mesh", int(self.view.mask.sum()), size * size)
        import cv2

        feather = cv2.GaussianBlur(self.view.mask.astype(np.float32), (0, 0), FEATHER_SIGMA)
        self._alpha = (feather * self.view.mask)[..., None]  # fades to the background inside the mesh's edge
        self._points = self.view.points[self.view.mask]

    @classmethod
    def from_data(
        cls, sfm_folder: str | Path, size: int = 112, detector: Any = None, face: str = "largest"
    ) -> Frontalizer:
        """Build from the Surrey Face Model folder (``sfm_reference.obj``, ``ibug_to_sfm.txt``,
        ``sfm_model_contours.json``); ``detector`` defaults to facekit's ``dlib`` detector (68 landmarks); ``face``:
        which face of a photo with several (:func:`facekit.normalize.choose_face`)."""
        folder = Path(sfm_folder)
        contours_file = folder / "sfm_model_contours.json"
        if not contours_file.is_file():
            raise FacekitError(f"frontalization needs the Surrey Face Model's {contours_file} (set data.root)")
        shape = load_mean_shape(folder)
        vertices = read_obj_vertices(folder / "sfm_reference.obj") * SFM_TO_OPENCV
        triangles = read_obj_triangles(folder / "sfm_reference.obj")
        contours = json.loads(contours_file.read_text())["model_contour"]
        if detector is None:
            import facekit

            detector = facekit.load_component("detector", "dlib")
        return cls(vertices, triangles, shape, contours, size, detector, face)

    @property
    def image_size(self) -> int:
        return self.size

    @property
    def landmarks(self) -> np.ndarray:
        """The reference frame's 68 iBUG landmarks (68, 2), x, y pixels: where every frontalized face has them."""
        return self.view.landmarks.copy()

    def frontalize(self, image: np.ndarray, landmarks: np.ndarray) -> np.ndarray:
        """Frontalize the face of ``image`` (H, W, 3) uint8 RGB with 68 iBUG ``landmarks`` (68, 2) x, y pixels;
        returns the (S, S, 3) uint8 frontal view."""
        import cv2

        if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
            raise ValueError(f"expected an (H, W, 3) uint8 RGB image, got {image.shape} {image.dtype}")
        points = np.asarray(landmarks, dtype=np.float64)
        if points.shape != (68, 2):
            raise ValueError(f"frontalization needs 68 iBUG landmarks (68, 2), got {points.shape}")
        height, width = image.shape[:2]
        projection = estimate_camera(points, (width, height), self.shape)
        homogeneous = np.c_[self._points, np.ones(len(self._points))] @ projection.T
        pixels = homogeneous[:, :2] / homogeneous[:, 2:3]
        maps = np.full((self.size, self.size, 2), -1.0, dtype=np.float32)
        maps[self.view.mask] = pixels
        sampled = cv2.remap(
            np.ascontiguousarray(image),
            maps[..., 0],
            maps[..., 1],
            interpolation=cv2.INTER_LINEAR,
            borderMode=cv2.BORDER_REPLICATE,
        )
        background = align_paper(image, points, self.size).image
        blended = self._alpha * sampled.astype(np.float32) + (1.0 - self._alpha) * background.astype(np.float32)
        return np.asarray(np.clip(np.round(blended), 0, 255).astype(np.uint8))

    def normalize_many(
        self,
        images: Sequence[np.ndarray | None],
        names: Sequence[str],
        batch_size: int = 16,
        *,
        on_detected: Callable[[int], None] | None = None,
    ) -> list[Outcome]:
        """Frontalize one face of each image (``None`` = unreadable), chosen by :attr:`face`; one :class:`Outcome` per
        input, as :meth:`facekit.normalize.Normalizer.normalize_many` (``on_detected`` too). ``batch_size`` is
        accepted for the same signature (each photo is done on its own)."""
        from facekit.normalize import detect_one

        outcomes, pending = detect_one(self.detector, images, names, self.face, on_detected)
        for index, image, face in pending:
            source = np.asarray(face.landmarks, dtype=np.float64)
            if source.shape != (68, 2):
                raise FacekitError(f"frontalization needs a 68-landmark (iBUG) detector, got {source.shape[0]} points")
            found = outcomes[index].extras["faces_found"]
            outcomes[index].face = NormalizedFace(
                self.frontalize(image, source), self.landmarks, None, source, face.box, found
            )
        return outcomes
