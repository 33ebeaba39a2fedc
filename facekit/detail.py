"""Photo detail on the normalized face: fine luminance detail of the input photo, carried onto the decoder's output.

The decoder is trained with pixel losses towards per-person *averages*, so its texture is smooth: it keeps the
low frequencies (face shape, skin colour, even light) and loses the fine ones (pores, stubble, eyelids, the crisp
edges of brows and lips) that an independent recogniser also reads. The photo has them. This module moves only
that band, only where the photo shows it:

1. **Map**: a thin-plate spline from the output's predicted landmarks to the detector's landmarks in the photo gives,
   for every output pixel, where to read the photo (the expression and pose are undone by the same 68 points the
   decoder predicts the neutral face from). The photo is first shrunk (area filter) so the face has the output's scale.
2. **Band**: the log luminance of the resampled photo minus its Gaussian blur of sigma ``sigma`` output pixels (at
   112 px; scaled with the output size). A ratio in log space carries texture, not shading: a smooth light gradient
   or colour cast of the photo is below the band and stays out.
3. **Where**: the output's landmark hull (soft edge), reaching ``forehead`` interocular distances above the brows
   (forehead and hairline: the 68 points stop at the brows, and what lies above them is the person's too), times a
   foreshortening confidence (the map's local area ratio against its median: where the photo saw the surface at a
   grazing angle, or not at all, the map squeezes and the weight falls to zero), minus the inner mouth (a smile's
   teeth would otherwise show through a closed mouth).
4. **Apply**: ``output * exp(strength * weight * band)`` per channel (hue kept), clipped.

**Shape** (``shape``, applied before the band): the output's landmarks move ``shape`` of the way towards the photo's
own, carried into the output frame by the least-squares similarity onto the predicted ones (pose's roll and scale
undone), and the decoder's texture is warped onto them. Only the jaw, brows, nose and eyes move (iBUG 0-47); the
mouth stays the decoder's, closed and neutral. Without it the photo's band lands on the decoder's generic geometry
(an eyelid's crease beside the decoder's eyelid); half-way, the two agree better and an independent recogniser finds
the person more often (RESULTS.md "shape-selection", chosen on LFW DevTrain photos).

``strength`` 0 and ``shape`` 0 is the decoder's face unchanged. What it costs: the detail is the photo's, so it carries
what the photo shows at that scale: stubble, glasses frames, an occluding hand's edge, compression blocks, and above the
brows a fringe, a hat's brim or a hairline's texture; the shape
carries some of the photo's expression around the eyes and brows, and of a turned head's foreshortening; a wider band
(sigma 4 px) lets shading at the scale of the eyes and nose in, so a hard shadow's edge shows as a soft line. The
settings are chosen on LFW DevTrain photos: strength 1 on 200 (benchmarks/RESULTS.md, "Choosing the photo detail
setting"), then shape 0.5 and sigma 4 on 500 (sigma 2 before; "shape-selection"), then the forehead's reach on 500
("forehead-selection").
"""

from __future__ import annotations

import logging
from dataclasses import asdict, dataclass, replace
from typing import TYPE_CHECKING

from facekit.errors import FacekitError

if TYPE_CHECKING:  # numpy is imported where it is used: the CLI reads DetailSettings without paying for it
    import numpy as np

logger = logging.getLogger(__name__)

#: Reference size of ``sigma`` (px of a 112 px output).
REFERENCE_SIZE = 112
#: Local area ratio (against the face's median) below which the photo's detail is not trusted, and above which it is
#: fully trusted; linear in between.
SQUEEZE_RAMP = (0.35, 0.7)
#: Thin-plate smoothing of the output -> photo map (scipy's convention) at a :data:`REFERENCE_SIZE` output: the
#: detector's landmarks jitter by a pixel or two, and an exact interpolant would fold the map between close points.
#: The kernel r^2 log r grows with the square of the output's size, so the smoothing is scaled by it too (without,
#: a 224 px output was smoothed 4x less than the 112 px setting was chosen at).
MAP_SMOOTHING = 1.0
#: Largest |band| in log units (about a factor of 2): specular highlights and hard shadow edges stay bounded.
BAND_LIMIT = 0.7
#: How far above the brows the band reaches by default, in interocular distances of the output (``forehead``; chosen
#: on LFW DevTrain photos, benchmarks/RESULTS.md "forehead-selection"), and the most it may.
FOREHEAD_DEFAULT = 1.5
FOREHEAD_LIMIT = 2.0


class DetailError(FacekitError, ValueError):
    """A photo detail setting out of its range (a ValueError too, as it was before it was a FacekitError)."""


@dataclass(frozen=True)
class DetailSettings:
    """``strength`` (0 = off, 1 = the photo's band as it is), ``sigma`` (px of a 112 px output), ``shape`` (0 = the
    decoder's landmarks, 1 = the photo's) and ``forehead`` (how far above the brows the band reaches, in interocular
    distances; 0 = the landmarks' hull; module docstring). The defaults are the settings chosen on LFW DevTrain
    photos (benchmarks/RESULTS.md, "Choosing the photo detail setting", "shape-selection", "forehead-selection")."""

    strength: float = 1.0
    sigma: float = 4.0
    shape: float = 0.5
    forehead: float = FOREHEAD_DEFAULT

    def __post_init__(self) -> None:
        for name in ("strength", "sigma", "shape", "forehead"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int | float) or value != value:
                raise DetailError(f"detail {name} must be a number, got {value!r}")
        if not 0.0 <= self.strength <= 2.0:
            raise DetailError(f"detail strength must be in [0, 2], got {self.strength}")
        if not 0.3 <= self.sigma <= 20.0:
            raise DetailError(f"detail sigma must be in [0.3, 20] px, got {self.sigma}")
        if not 0.0 <= self.shape <= 1.0:
            raise DetailError(f"detail shape must be in [0, 1], got {self.shape}")
        if not 0.0 <= self.forehead <= FOREHEAD_LIMIT:
            raise DetailError(f"detail forehead must be in [0, {FOREHEAD_LIMIT:g}], got {self.forehead}")

    @classmethod
    def of(
        cls,
        strength: float | None = None,
        sigma: float | None = None,
        shape: float | None = None,
        forehead: float | None = None,
    ) -> DetailSettings:
        """The defaults with the given fields replaced, except that strength 0 starts from :data:`DECODER_ONLY` (the
        decoder's face: no shape either unless ``shape`` is given). What ``--detail``/``--detail-shape``/
        ``--detail-forehead`` and the
        benchmarks' ``STRENGTH[:SIGMA[:SHAPE[:FOREHEAD]]]`` mean."""
        fields = (("strength", strength), ("sigma", sigma), ("shape", shape), ("forehead", forehead))
        given = {k: v for k, v in fields if v is not None}
        unused = [name for name in ("sigma", "forehead") if name in given]
        if strength == 0 and unused:  # (before: accepted and unused; shape still moves the face's outline)
            raise DetailError(
                f"detail {' and '.join(unused)} shape the photo's band, which strength 0 (--detail 0) turns off: "
                "leave them out, or give a strength above 0"
            )
        return replace(DECODER_ONLY if strength == 0 else cls(), **given)

    @classmethod
    def parse(cls, text: str) -> DetailSettings:
        """``STRENGTH[:SIGMA[:SHAPE[:FOREHEAD]]]`` as benchmarks take it (:meth:`of`)."""
        values = [float(part) for part in text.split(":")]
        if not 1 <= len(values) <= 4:
            raise ValueError(f"photo detail is STRENGTH[:SIGMA[:SHAPE[:FOREHEAD]]], got {text!r}")
        return cls.of(*values)

    def as_record(self) -> dict[str, float]:
        """The settings as output records keep them: without the band (strength 0) its width and reach change no
        pixel, so the forehead is left out (a decoder-only face made before the setting existed is the same face)."""
        record = asdict(self)
        if not self.strength:
            record.pop("forehead")
        return record

    @property
    def active(self) -> bool:
        """Whether the photo changes the output at all (band or shape)."""
        return self.strength > 0 or self.shape > 0


#: No photo detail: the decoder's face alone. What evaluations of a trained model use (``facekit eval``, ``facekit
#: bench``): they measure the model, and the detail would lend every decoder the photo's pixels.
DECODER_ONLY = DetailSettings(strength=0.0, shape=0.0)


def detail_settings(
    strength: float | None, shape: float | None, forehead: float | None = None
) -> DetailSettings | None:
    """The photo detail settings of ``--detail``, ``--detail-shape`` and ``--detail-forehead`` (and the recipe's
    ``infer.detail``, ``infer.detail_shape``, ``infer.detail_forehead``) (:meth:`DetailSettings.of`; None: none given,
    the library's default for the detector)."""
    if strength is None and shape is None and forehead is None:
        return None
    return DetailSettings.of(strength=strength, shape=shape, forehead=forehead)


#: iBUG-68 points whose position the photo lends the output (``DetailSettings.shape``): jaw, brows, nose and eyes. The
#: mouth (48-67) stays the decoder's: a smile's or a speaker's mouth is expression, not the person.
SHAPE_POINTS = slice(0, 48)


def photo_shape(predicted: np.ndarray, photo_landmarks: np.ndarray, share: float) -> np.ndarray:
    """(68, 2): the ``predicted`` iBUG-68 landmarks of an output with :data:`SHAPE_POINTS` moved ``share`` of the way
    towards the photo's ``photo_landmarks`` (68, 2), which are first carried into the output frame by the
    least-squares similarity onto ``predicted`` (all 68 points)."""
    import numpy as np

    from facekit.align import apply_transform, similarity_transform

    target = np.asarray(predicted, np.float64)
    source = np.asarray(photo_landmarks, np.float64)
    if source.shape != (68, 2) or target.shape != (68, 2):
        raise FacekitError(f"the photo's shape needs iBUG-68 landmarks; got {source.shape} and {target.shape}")
    carried = apply_transform(similarity_transform(source, target), source)
    moved = target.copy()
    moved[SHAPE_POINTS] += share * (carried[SHAPE_POINTS] - target[SHAPE_POINTS])
    return moved


def photo_map(photo_landmarks: np.ndarray, output_landmarks: np.ndarray, size: int) -> tuple[np.ndarray, np.ndarray]:
    """Where each pixel of the ``size`` x ``size`` output reads the photo: (S, S) float32 x and y maps in photo
    pixels, from a smoothed thin-plate spline through the (K, 2) landmark pairs, evaluated in float64 on the pixel
    grid (separable distances: a third of the time of evaluating it at the grid's points as arbitrary queries)."""
    import numpy as np
    import torch

    from facekit.warp import dense_flow_from_solution, solve_spline

    centers = torch.from_numpy(np.asarray(output_landmarks, np.float64))[None]
    values = torch.from_numpy(np.asarray(photo_landmarks, np.float64))[None]
    smoothing = MAP_SMOOTHING * (size / REFERENCE_SIZE) ** 2
    w, v, origin = solve_spline(centers, values, order=2, regularization=smoothing)
    mapped = dense_flow_from_solution(centers, w, v, origin, size, size, order=2, dtype=torch.float64)[0].numpy()
    return np.ascontiguousarray(mapped[..., 0], np.float32), np.ascontiguousarray(mapped[..., 1], np.float32)


def squeeze_confidence(map_x: np.ndarray, map_y: np.ndarray, inside: np.ndarray) -> np.ndarray:
    """(S, S) in [0, 1]: the map's local area ratio det J against its median inside the face, through
    :data:`SQUEEZE_RAMP` (1 where the photo saw the surface about as large as the rest of the face). Where the map
    folds over (det J < 0: the far side of a turned face crossing the nose line) it reads the photo mirrored: 0."""
    import numpy as np

    dxx, dxy = np.gradient(map_x, axis=1), np.gradient(map_x, axis=0)
    dyx, dyy = np.gradient(map_y, axis=1), np.gradient(map_y, axis=0)
    area = np.maximum(dxx * dyy - dxy * dyx, 0.0)
    typical = float(np.median(area[inside])) if inside.any() else float(np.median(area))
    low, high = SQUEEZE_RAMP
    return np.asarray(np.clip((area / max(typical, 1e-9) - low) / (high - low), 0.0, 1.0), np.float32)


def forehead_points(landmarks: np.ndarray, reach: float) -> np.ndarray:
    """(10, 2): the iBUG-68 brow points (17-26) moved ``reach`` interocular distances up the face (perpendicular to
    the line through the eye centres, towards the brows): the top of the region the photo's band covers."""
    import numpy as np

    from facekit.align import eye_centres

    points = np.asarray(landmarks, np.float64)
    first, second = eye_centres(points)
    eyes = second - first  # its length is the interocular distance
    up = np.array([eyes[1], -eyes[0]])  # perpendicular; image y grows downwards
    if up @ (points[17:27].mean(0) - points[48:68].mean(0)) < 0:
        up = -up
    return np.asarray(points[17:27] + reach * up, np.float64)


def detail_weight(
    output_landmarks: np.ndarray, size: int, map_x: np.ndarray, map_y: np.ndarray, forehead: float = 0.0
) -> np.ndarray:
    """(S, S) float32 in [0, 1]: where the photo's detail goes (see the module docstring, step 3); with
    ``forehead`` > 0 (iBUG-68 only) the region reaches that many interocular distances above the brows."""
    import cv2
    import numpy as np

    from facekit.data.poisson import coverage, face_mask

    points = np.asarray(output_landmarks, np.float64)
    soft = size / REFERENCE_SIZE
    hull = face_mask(points, size, size, blur_px=2.0 * soft)
    region = hull
    if forehead > 0 and len(points) == 68:
        region = face_mask(np.concatenate([points, forehead_points(points, forehead)]), size, size, blur_px=2.0 * soft)
    weight = region * squeeze_confidence(map_x, map_y, hull > 0.5)
    if len(points) == 68:  # iBUG-68: the inner lip contour is 60-67
        lips = coverage(points[60:68], size, size)  # each pixel's share inside the inner lip contour
        mouth = cv2.GaussianBlur(lips, (0, 0), 1.5 * soft)
        weight = weight * (1.0 - np.clip(2.0 * mouth, 0.0, 1.0))
    return np.asarray(weight, np.float32)


def inside_photo(map_x: np.ndarray, map_y: np.ndarray, width: int, height: int, ramp_px: float) -> np.ndarray:
    """(S, S) float32 in [0, 1]: 1 where the map reads the photo at least ``ramp_px`` photo pixels inside its edges,
    falling to 0 at the edge and beyond. Outside, the band would read the replicated border row (streaks), and within
    about two blur widths of it the blur mixes those in; a photo cropped close above the brows meets this at the
    forehead."""
    import numpy as np

    distance = np.minimum(np.minimum(map_x + 0.5, width - 0.5 - map_x), np.minimum(map_y + 0.5, height - 0.5 - map_y))
    return np.asarray(np.clip(distance / max(ramp_px, 1e-6), 0.0, 1.0), np.float32)


def detail_band(photo: np.ndarray, map_x: np.ndarray, map_y: np.ndarray, sigma_px: float) -> np.ndarray:
    """(S, S) float32: log luminance of ``photo`` (H, W, 3) uint8 RGB read through the maps, minus its blur."""
    import cv2
    import numpy as np

    grey = cv2.cvtColor(np.ascontiguousarray(photo), cv2.COLOR_RGB2GRAY)
    sampled = cv2.remap(grey, map_x, map_y, interpolation=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
    log = np.log1p(sampled.astype(np.float32))
    band = log - cv2.GaussianBlur(log, (0, 0), sigma_px)
    return np.asarray(np.clip(band, -BAND_LIMIT, BAND_LIMIT), np.float32)


def transfer_detail(
    output: np.ndarray,
    output_landmarks: np.ndarray,
    photo: np.ndarray,
    photo_landmarks: np.ndarray,
    settings: DetailSettings,
) -> np.ndarray:
    """The normalized face ``output`` (S, S, 3) uint8 with (K, 2) ``output_landmarks``, given the fine detail of
    ``photo`` (H, W, 3) uint8 RGB whose face has the detector's (K, 2) ``photo_landmarks`` (same scheme)."""
    import cv2
    import numpy as np

    from facekit.warp import SplineError

    if not settings.strength:
        return output
    size = output.shape[0]
    source = np.asarray(photo_landmarks, np.float64)
    target = np.asarray(output_landmarks, np.float64)
    if source.shape != target.shape:
        raise FacekitError(
            f"photo detail needs the detector's landmarks in the decoder's scheme; got {source.shape} for the photo "
            f"and {target.shape} predicted: use a 68-point detector or turn photo detail off"
        )
    # Shrink the photo so the face has the output's scale (area filter: no aliasing in the band).
    spread = float(np.sqrt(np.prod(np.ptp(source, axis=0)) / max(np.prod(np.ptp(target, axis=0)), 1e-9)))
    scale = min(1.0, 1.0 / spread) if spread > 0 else 1.0
    if scale < 0.95:
        height, width = photo.shape[:2]
        shape = (max(1, round(width * scale)), max(1, round(height * scale)))
        photo = cv2.resize(photo, shape, interpolation=cv2.INTER_AREA)
        factors = np.array([shape[0] / width, shape[1] / height])
        source = (source + 0.5) * factors - 0.5  # pixel centres of the shrunk photo
    try:
        map_x, map_y = photo_map(source, target, size)
    except SplineError as error:  # degenerate landmarks (e.g. all on one line): the decoder's face, never a failure
        logger.warning("photo detail skipped for one face: %s", error)
        return output
    sigma_px = settings.sigma * size / REFERENCE_SIZE
    band = detail_band(photo, map_x, map_y, sigma_px)
    weight = detail_weight(target, size, map_x, map_y, settings.forehead)
    weight = weight * inside_photo(map_x, map_y, photo.shape[1], photo.shape[0], 2.0 * sigma_px)
    gain = np.exp(settings.strength * weight * band)[..., None]
    return np.asarray(np.clip(np.round(output.astype(np.float32) * gain), 0, 255).astype(np.uint8))
