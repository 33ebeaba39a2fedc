"""Face alignment by similarity transforms: undo roll, fix the interocular distance, crop.

The paper's frame is 224 x 224 with the eye centres 55 px apart (proportional for other sizes); the same code aligns
a face to any encoder's own template (``ModelCard.template``). Coordinates are (x, y) pixels with pixel centres at
integer coordinates, the convention of ``cv2.warpAffine`` and of every facekit boundary.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

import numpy as np

from facekit.errors import FacekitError
from facekit.types import AlignmentTemplate, LandmarkScheme, alignment_gap

#: Eye-centre height in the paper frame, as a fraction of the crop size. Cole et al. give the 224 px size and 55 px
#: interocular distance but not the height; 0.40 leaves room for the forehead above and the chin below
#: (chin ~ 1.6 interocular distances under the eyes).
PAPER_EYE_HEIGHT = 0.40
PAPER_SIZE = 224
PAPER_INTEROCULAR = 55.0

# iBUG 68-point indices (0-based) of the two eyes' contours: 36-41 the subject's right eye (image left), 42-47 left.
IBUG_RIGHT_EYE = slice(36, 42)
IBUG_LEFT_EYE = slice(42, 48)


@dataclass(frozen=True)
class AlignedFace:
    """A crop and how it was made: ``image`` (S, S, 3) uint8, ``landmarks`` (K, 2) in the crop,
    ``transform`` (2, 3) mapping original pixels to crop pixels."""

    image: np.ndarray
    landmarks: np.ndarray
    transform: np.ndarray


def scheme_of(landmarks: np.ndarray, scheme: str | LandmarkScheme | None) -> LandmarkScheme:
    """The scheme of ``landmarks`` (K, 2): ``scheme`` when given (checked against K), else iBUG-68 for 68 points.
    Five points without a scheme are refused: dlib's eye corners and the eyes-nose-mouth layout look alike."""
    count = len(landmarks)
    if scheme is None:
        if count == LandmarkScheme.IBUG68.points:
            return LandmarkScheme.IBUG68
        raise ValueError(f"{count} landmarks without a scheme: say which LandmarkScheme they are in")
    parsed = LandmarkScheme.parse(scheme, "these landmarks")
    if parsed.points != count:
        raise ValueError(f"scheme {parsed.value} has {parsed.points} points, got {count}")
    return parsed


def eye_centres(landmarks: np.ndarray, scheme: str | LandmarkScheme | None = None) -> tuple[np.ndarray, np.ndarray]:
    """The eye centres (image-left eye first) of ``landmarks`` (K, 2) in ``scheme`` (default: iBUG-68 for 68 points;
    other counts must name their scheme)."""
    points = np.asarray(landmarks, dtype=np.float64)
    kind = scheme_of(points, scheme)
    if kind is LandmarkScheme.IBUG68:  # below: the mouth's centre (the nose tip may reach the eye line)
        a, b, below = points[IBUG_RIGHT_EYE].mean(axis=0), points[IBUG_LEFT_EYE].mean(axis=0), points[48:68].mean(0)
    elif kind is LandmarkScheme.DLIB5:
        # dlib's 5-point scheme: two corners of each eye (0-1 and 2-3), then the base of the nose (4).
        a, b, below = points[0:2].mean(axis=0), points[2:4].mean(axis=0), points[4]
    elif kind is LandmarkScheme.EYES_NOSE_MOUTH5:
        a, b, below = points[0], points[1], points[3:5].mean(axis=0)
    else:  # eyes2: nothing to tell up from down
        a, b, below = points[0], points[1], None
    # Image-left first as seen with the face upright: the mouth (dlib-5: the nose's base) lies below the line from
    # the first eye to the second (a positive cross product in image coordinates, y down), whatever the roll.
    # Sorting by x, as before, swapped the eyes beyond 90 degrees of roll and the face came out upside down. Where
    # the points do not say (no such point, or it lies on the eye line) the x order stands.
    by_x = (a, b) if a[0] <= b[0] else (b, a)
    if below is None:
        return by_x
    across, down = b - a, below - (a + b) / 2
    cross = across[0] * down[1] - across[1] * down[0]
    if abs(cross) < 0.1 * float(across @ across):  # below lies within ~6 degrees of the eye line
        return by_x
    return (a, b) if cross > 0 else (b, a)


def interocular_distance(landmarks: np.ndarray, scheme: str | LandmarkScheme | None = None) -> float:
    """Distance between the eye centres of ``landmarks`` (K, 2) in ``scheme``, in pixels."""
    left, right = eye_centres(landmarks, scheme)
    return float(np.linalg.norm(right - left))


def paper_eye_targets(
    size: int = PAPER_SIZE, interocular_px: float | None = None, eye_height: float = PAPER_EYE_HEIGHT
) -> np.ndarray:
    """Where the eye centres go in an ``size`` crop: (2, 2), image-left eye first. The interocular distance
    defaults to the paper's 55/224 of the size."""
    distance = interocular_px if interocular_px is not None else PAPER_INTEROCULAR * size / PAPER_SIZE
    centre_x, eye_y = (size - 1) / 2.0, eye_height * (size - 1)
    return np.array([[centre_x - distance / 2, eye_y], [centre_x + distance / 2, eye_y]])


def similarity_transform(source: np.ndarray, destination: np.ndarray) -> np.ndarray:
    """Least-squares similarity (rotation, uniform scale, translation) mapping ``source`` (K, 2) onto
    ``destination`` (K, 2) (Umeyama 1991); returns the (2, 3) matrix ``[sR | t]``."""
    src = np.asarray(source, dtype=np.float64)
    dst = np.asarray(destination, dtype=np.float64)
    if src.shape != dst.shape or src.ndim != 2 or src.shape[1] != 2 or len(src) < 2:
        raise ValueError(f"need two (K, 2) point sets with K >= 2, got {src.shape} and {dst.shape}")
    src_mean, dst_mean = src.mean(axis=0), dst.mean(axis=0)
    src_c, dst_c = src - src_mean, dst - dst_mean
    variance = (src_c**2).sum() / len(src)
    if variance <= 1e-12:
        raise ValueError("the source points coincide: no similarity transform is defined")
    covariance = dst_c.T @ src_c / len(src)
    u, singular, vt = np.linalg.svd(covariance)
    sign = np.eye(2)
    if np.linalg.det(u) * np.linalg.det(vt) < 0:
        sign[1, 1] = -1.0
    rotation = u @ sign @ vt
    scale = np.trace(np.diag(singular) @ sign) / variance
    translation = dst_mean - scale * rotation @ src_mean
    return np.hstack([scale * rotation, translation[:, None]])


def apply_transform(transform: np.ndarray, points: np.ndarray) -> np.ndarray:
    """Map ``points`` (..., 2) through the (2, 3) affine ``transform``."""
    pts = np.asarray(points, dtype=np.float64)
    return pts @ transform[:, :2].T + transform[:, 2]


def warp_image(
    image: np.ndarray, transform: np.ndarray, size: tuple[int, int], border: Literal["replicate", "black"] = "replicate"
) -> np.ndarray:
    """Resample ``image`` (H, W, C) uint8 with the (2, 3) ``transform`` into a (height, width) = ``size`` crop.
    Bilinear; outside the photo the border pixels are replicated (no black corners for the encoders to see), or with
    ``border="black"`` left black, as OpenCV's ``FaceRecognizerSF.alignCrop`` and dlib's face chips leave them."""
    import cv2

    height, width = size
    return cv2.warpAffine(
        np.ascontiguousarray(image),
        transform.astype(np.float64),
        (width, height),
        flags=cv2.INTER_LINEAR,
        borderMode=cv2.BORDER_REPLICATE if border == "replicate" else cv2.BORDER_CONSTANT,
    )


def align_into(photo: np.ndarray, photo_landmarks: np.ndarray, frame_landmarks: np.ndarray, size: int) -> AlignedFace:
    """``photo`` (H, W, 3) resampled into a ``size`` x ``size`` frame by the least-squares similarity that takes its
    ``photo_landmarks`` (K, 2) onto ``frame_landmarks`` (K, 2) (e.g. a normalized face's); the landmarks carried
    into the frame and the transform with it."""
    source = np.asarray(photo_landmarks, np.float64)
    transform = similarity_transform(source, np.asarray(frame_landmarks, np.float64))
    return AlignedFace(warp_image(photo, transform, (size, size)), apply_transform(transform, source), transform)


def align_paper(
    image: np.ndarray,
    landmarks: np.ndarray,
    size: int = PAPER_SIZE,
    interocular_px: float | None = None,
    eye_height: float = PAPER_EYE_HEIGHT,
) -> AlignedFace:
    """The paper's frame: roll undone (eye line horizontal), eye centres ``interocular_px`` apart (default 55/224 of
    ``size``) at ``eye_height`` of the crop, centred horizontally. ``image`` (H, W, 3) uint8, ``landmarks`` (K, 2)."""
    eyes = np.stack(eye_centres(landmarks))
    transform = similarity_transform(eyes, paper_eye_targets(size, interocular_px, eye_height))
    return AlignedFace(warp_image(image, transform, (size, size)), apply_transform(transform, landmarks), transform)


#: Which detector schemes hold the points of each template scheme.
_TEMPLATE_SOURCES: dict[str, frozenset[LandmarkScheme]] = {
    LandmarkScheme.EYES_NOSE_MOUTH5.value: frozenset({LandmarkScheme.IBUG68, LandmarkScheme.EYES_NOSE_MOUTH5}),
    LandmarkScheme.EYES2.value: frozenset(LandmarkScheme),
}


def alignable_schemes(template: AlignmentTemplate) -> frozenset[LandmarkScheme]:
    """The detector schemes a face can be aligned to ``template`` from (its ``accepts``, else those that hold the
    template's points)."""
    if template.accepts:
        return frozenset(LandmarkScheme.parse(value, f"template {template.name}") for value in template.accepts)
    return _TEMPLATE_SOURCES.get(template.scheme, frozenset())


def template_points(
    landmarks: np.ndarray, scheme: str, landmark_scheme: str | LandmarkScheme | None = None
) -> np.ndarray:
    """The points of ``landmarks`` (K, 2), in ``landmark_scheme`` (default: iBUG-68 for 68 points), that correspond
    to a template of ``scheme`` ("eyes-nose-mouth5": eye centres, nose tip, mouth corners, the layout of
    ArcFace/SFace/FaceNet templates; "eyes2": the two eye centres)."""
    points = np.asarray(landmarks, dtype=np.float64)
    kind = scheme_of(points, landmark_scheme)
    if scheme == LandmarkScheme.EYES2.value:
        return np.stack(eye_centres(points, kind))
    if scheme == LandmarkScheme.EYES_NOSE_MOUTH5.value:
        if kind is LandmarkScheme.EYES_NOSE_MOUTH5:
            return points
        if kind is LandmarkScheme.IBUG68:
            left, right = eye_centres(points, kind)
            return np.stack([left, right, points[30], points[48], points[54]])
        raise ValueError(f"an eyes-nose-mouth5 template needs ibug68 or eyes-nose-mouth5 landmarks, got {kind.value}")
    raise ValueError(f"unknown template scheme {scheme!r}; known: 'eyes-nose-mouth5', 'eyes2'")


def check_alignable(encoder: Any, scheme: str | LandmarkScheme | None, detector: str = "the detector") -> None:
    """Refuse, with a FacekitError that says what to use, a detector whose landmark ``scheme`` the ``encoder``'s
    alignment cannot read (dlib's chips need ibug68 or dlib5 points; a 5-point template needs eyes, nose, mouth)."""
    from facekit.registry import component_label

    template = encoder.card.template
    name = component_label(encoder, "encoder")
    if template is None:
        raise FacekitError(f"{name} has no alignment template in its model card")
    accepted = alignable_schemes(template)
    if scheme is None:
        raise FacekitError(f"{detector} does not declare its landmark scheme (ModelCard.landmark_scheme)")
    try:
        kind = LandmarkScheme.parse(scheme, detector)
    except ValueError as error:
        raise FacekitError(str(error)) from None
    if kind not in accepted:
        wanted = ", ".join(sorted(s.value for s in accepted)) or "none"
        hint = " (facekit-dlib's detector 'dlib' gives ibug68)" if LandmarkScheme.IBUG68 in accepted else ""
        raise FacekitError(
            f"{detector} gives {kind.value} landmarks, but {name} aligns faces (template {template.name}) only "
            f"from {wanted}: use a detector with one of those schemes{hint}"
        )


def align_to_template(
    image: np.ndarray,
    landmarks: np.ndarray,
    template: AlignmentTemplate,
    size: tuple[int, int],
    scheme: str | LandmarkScheme | None = None,
) -> AlignedFace:
    """Align to an encoder's template (from its model card): least-squares similarity from the matching landmarks
    (in ``scheme``; default iBUG-68 for 68 points) to ``template.points``, crop ``size`` = (width, height)."""
    source = template_points(landmarks, template.scheme, scheme)
    transform = similarity_transform(source, np.asarray(template.points, dtype=np.float64))
    width, height = size
    return AlignedFace(warp_image(image, transform, (height, width)), apply_transform(transform, landmarks), transform)


def encoder_input_transform(
    encoder: Any, landmarks: np.ndarray, scheme: str | LandmarkScheme | None = None
) -> np.ndarray:
    """The (2, 3) map from image pixels to an encoder's input pixels for a face with ``landmarks`` (K, 2) in
    ``scheme`` (default: iBUG-68 for 68 points): the encoder's own ``input_transform`` when it has one (dlib's chips),
    else a similarity onto its card's template. A scheme the encoder cannot align from is a FacekitError."""
    kind = scheme_of(np.asarray(landmarks), scheme)
    check_alignable(encoder, kind, f"landmarks in scheme {kind.value}")
    own = getattr(encoder, "input_transform", None)
    if own is not None:
        return np.asarray(own(landmarks), dtype=np.float64)
    template = encoder.card.template
    from facekit.registry import component_label

    gap = alignment_gap(encoder, component_label(encoder, "encoder"))
    if gap:
        raise FacekitError(gap)
    return similarity_transform(template_points(landmarks, template.scheme, kind), np.asarray(template.points))


def encoder_inputs(encoder: Any, images: Any, landmarks: np.ndarray, scheme: str | LandmarkScheme | None = None) -> Any:
    """Aligned encoder inputs for B (H, W, 3) uint8 ``images`` (an array or a list of photos of any sizes) with
    (B, K, 2) ``landmarks`` in ``scheme``: (B, 3, h, w) float32
    torch tensor in [0, 1], cropped with :func:`encoder_input_transform` at the card's input size."""
    import torch

    width, height = encoder.card.input_size
    crops = [
        warp_image(image, encoder_input_transform(encoder, points, scheme), (height, width))
        for image, points in zip(images, landmarks, strict=True)
    ]
    return torch.from_numpy(np.stack(crops)).permute(0, 3, 1, 2).float() / 255.0


def warp_images_affine(images: Any, transforms: Any, size: tuple[int, int]) -> Any:
    """Differentiable batched version for torch: ``images`` (B, C, H, W), ``transforms`` (B, 2, 3) mapping input
    pixels to output pixels, output (B, C, height, width) with ``size`` = (height, width); border replication."""
    import torch
    import torch.nn.functional as F

    batch, _, in_h, in_w = images.shape
    out_h, out_w = size
    dtype, device = images.dtype, images.device
    full = torch.cat(
        [transforms.to(dtype), torch.tensor([0.0, 0.0, 1.0], dtype=dtype, device=device).expand(batch, 1, 3)], 1
    )
    inverse = torch.linalg.inv(full)[:, :2]  # output pixel -> input pixel
    ys, xs = torch.meshgrid(
        torch.arange(out_h, dtype=dtype, device=device), torch.arange(out_w, dtype=dtype, device=device), indexing="ij"
    )
    grid = torch.stack([xs, ys, torch.ones_like(xs)], -1).reshape(1, -1, 3)
    source = grid @ inverse.transpose(1, 2)  # (B, H*W, 2) in input pixels
    scale = torch.tensor([2.0 / max(in_w - 1, 1), 2.0 / max(in_h - 1, 1)], dtype=dtype, device=device)
    normalised = (source * scale - 1.0).reshape(batch, out_h, out_w, 2)
    return F.grid_sample(images, normalised, mode="bilinear", padding_mode="border", align_corners=True)
