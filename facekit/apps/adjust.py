"""Automatic white balance and exposure from the normalized face (Cole et al. 2017, Sec. 7.4 and App. C).

The normalized face is the person's skin under even, neutral light. The photo's face is aligned into the normalized
face's frame (a similarity from the photo's landmarks onto the decoder's), the mean colour of a central box of both
(cheeks, nose, upper lip: the paper's central pixels scaled to our frame) is taken in YCrCb, and each channel of the
whole full-resolution photo gets the piecewise-linear map through (0, 0), (photo mean, normalized mean), (255, 255).
White balance moves Cr and Cb, exposure moves Y; ``strength`` scales the move. ``mapping="gains"`` instead multiplies
each channel in linear light by the ratio of the two boxes' mean linear RGB (von Kries; better on the selection set,
see benchmarks/RESULTS.md "Choosing the adjust algorithm").

The baselines (:mod:`facekit.apps.baselines`) estimate a per-channel RGB gain from the whole photo instead.

**Face + scene** (``fuse``, the default ``white-patch`` at ``fuse_weight`` 0.7): the face's white balance and a
global estimator's are combined as a weighted geometric mean of their chromatic gains (each divided by its own
luminance gain), in linear light; the exposure is the face's alone (a global estimator has none). The face and the
brightest scene points fail differently (a skin tone the decoder misjudges; a scene without a white object), so the
mean beats both on the selection set (benchmarks/RESULTS.md, "Choosing the adjust algorithm"). ``fuse=None`` is the
face alone. ``agreement`` weighs each of the four global estimators (:mod:`facekit.apps.baselines`) by how well it
agrees with the face, exp(-theta^2 / (2 sigma^2)) with theta the angle between the skin colour corrected by the face
and by the estimator (``fuse_sigma`` 3 degrees), the face's own weight 1 (the face as a guide to global estimates:
Bianco & Schettini, "Adaptive color constancy using faces", TPAMI 2014). It trusts the face more: better on the
selection set's studio backgrounds, worse on the report's smiling photos, where the face's estimate is off more
often (RESULTS.md "adjust"); so it is an option, not the default.

**Refining** (``refine``, default 0): the encoder is not blind to colour, so a cast photo gives a normalized face that
keeps part of the cast (on the selection set the face's first estimate undoes ~87 % of a red-blue cast). Each round
corrects the photo with the estimate so far, normalizes the face again from the corrected copy (same detection,
nothing re-detected) and multiplies in what is left. It helps the face alone on the selection set (2.57 -> 2.50
degrees median), not the fused default.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, replace
from typing import Any, Literal, get_args

import numpy as np

from facekit.apps import ESTIMATE_SIDE, FUSE_WEIGHT, Fuse, Mapping, Only, Region, UsesNormalizer, faces_on_copies
from facekit.errors import DETECTOR_ERROR, DetectorFailed, FacekitError

logger = logging.getLogger(__name__)

#: Rec. 709 luminance weights of linear RGB.
LUMINANCE = np.array([0.2126, 0.7152, 0.0722])

#: The central box of the normalized frame whose mean colour is compared, as fractions of the size (x0, y0, x1, y1):
#: between the eyes' lower lids and the upper lip, inside the cheeks (the paper's central 32 x 24 pixels of 224 px,
#: widened to 30 % x 25 % so that a 112 px face still gives ~370 pixels).
CENTRAL_BOX = (0.35, 0.45, 0.65, 0.70)


@dataclass(frozen=True)
class Correction:
    """How to move a photo's colours so that ``source`` becomes ``target``.

    ``mapping="ycrcb"`` (App. C): ``source``/``target`` are mean (Y, Cr, Cb) and channel ``c`` gets the piecewise-linear
    map through (0, 0), (source, target), (255, 255). ``mapping="gains"`` (von Kries): they are mean linear RGB and
    each channel is multiplied by target / source in linear light. ``method`` says who estimated it; ``face`` the face
    used (boxes, faces found), when one was."""

    method: str
    source: tuple[float, float, float]
    target: tuple[float, float, float]
    face: dict[str, Any] = field(default_factory=dict)
    mapping: Mapping = "ycrcb"

    @property
    def gains(self) -> np.ndarray:
        """Per-channel linear-RGB gains (``mapping="gains"``)."""
        return np.asarray(self.target, np.float64) / np.maximum(np.asarray(self.source, np.float64), 1e-9)

    def scaled(self, strength: float, only: Only = "both") -> Correction:
        """The correction moved ``strength`` (0..1) of the way, on Y only (exposure), Cr/Cb only (white balance)
        or all three."""
        if not 0.0 <= strength <= 1.0:
            raise FacekitError(f"strength must be between 0 and 1, got {strength}")
        if self.mapping == "gains":
            gains = self.gains
            luminance = float(gains @ (LUMINANCE * self.source) / max(float(LUMINANCE @ self.source), 1e-9))
            gains = {"both": gains, "white-balance": gains / luminance, "exposure": np.full(3, luminance)}[only]
            target = np.asarray(self.source) * gains**strength
            return replace(self, target=(float(target[0]), float(target[1]), float(target[2])))
        moved = [s + strength * (t - s) for s, t in zip(self.source, self.target, strict=True)]
        keep = {"both": (), "white-balance": (0,), "exposure": (1, 2)}[only]
        for channel in keep:
            moved[channel] = self.source[channel]
        return replace(self, target=(moved[0], moved[1], moved[2]))

    def to_json(self) -> dict[str, Any]:
        if self.mapping == "gains":
            return {**asdict(self), "gains_rgb": [round(float(g), 4) for g in self.gains]}
        return {**asdict(self), "shift_ycrcb": [round(t - s, 3) for s, t in zip(self.source, self.target, strict=True)]}


def piecewise_lut(source: float, target: float, top: int = 255, chroma: bool = False) -> np.ndarray:
    """(top + 1,) lookup table of the piecewise-linear map through (0, 0), (source, target), (255, 255), with
    ``source`` and ``target`` in 8-bit units and the table over ``top + 1`` levels (255: uint8; 65535: uint16). At
    16 bits a ``chroma`` channel (OpenCV's Cr, Cb: neutral at 32768, not 128 x 257) is placed by its offset from
    neutral."""
    source = float(np.clip(source, 1.0, 254.0))
    target = float(np.clip(target, 1.0, 254.0))
    if top != 255:
        scale, shift = top / 255.0, (-128.0 if chroma else 0.0)  # 8-bit 128 -> 128 * 257 - 128 = 32768
        source, target = source * scale + shift, target * scale + shift
    values = np.interp(np.arange(top + 1, dtype=np.float64), [0.0, source, top], [0.0, target, top])
    return np.clip(values + 0.5, 0, top).astype(np.uint8 if top == 255 else np.uint16)


def apply_correction(photo: np.ndarray, correction: Correction) -> np.ndarray:
    """``photo`` (H, W, 3) uint8 or uint16 RGB with ``correction`` applied to every pixel (three table lookups; the
    paper's map in YCrCb, gains in linear light), at the photo's own depth."""
    import cv2

    if correction.source == correction.target:
        return photo.copy()  # nothing to move: skip the colour-space round trip (it rounds by a grey level)
    if correction.mapping == "gains":
        return apply_linear_gains(photo, correction.gains)
    top = _top_level(photo)
    ycrcb = cv2.cvtColor(np.ascontiguousarray(photo), cv2.COLOR_RGB2YCrCb)
    luts = [piecewise_lut(correction.source[c], correction.target[c], top, chroma=c > 0) for c in range(3)]
    return cv2.cvtColor(apply_luts(ycrcb, luts), cv2.COLOR_YCrCb2RGB)


def apply_linear_gains(photo: np.ndarray, gains: np.ndarray) -> np.ndarray:
    """``photo`` (H, W, 3) uint8 or uint16 sRGB with each channel multiplied by its gain in linear light (three
    table lookups)."""
    top = _top_level(photo)
    levels = LINEAR_LEVELS if top == 255 else to_linear(np.arange(top + 1) / top)
    luts = [np.clip(to_srgb(levels * gain) * top + 0.5, 0, top).astype(photo.dtype) for gain in gains]
    return apply_luts(photo, luts)


def _top_level(image: np.ndarray) -> int:
    """The largest value of ``image``'s depth: 255 (uint8) or 65535 (uint16); other types are refused."""
    if image.dtype == np.uint8:
        return 255
    if image.dtype == np.uint16:
        return 65535
    raise FacekitError(f"colour corrections take 8- or 16-bit images, got {image.dtype}")


def apply_luts(image: np.ndarray, luts: list[np.ndarray]) -> np.ndarray:
    """``image`` (H, W, 3) uint8 or uint16 with channel ``c`` looked up in ``luts[c]`` (one level per value of the
    depth, same type): one pass over the image."""
    import cv2

    if image.dtype == np.uint8:
        return cv2.LUT(np.ascontiguousarray(image), np.stack(luts, axis=1)[:, None, :])
    out = np.empty_like(image)
    for channel, lut in enumerate(luts):  # cv2.LUT reads 8-bit images only
        out[..., channel] = lut[image[..., channel]]
    return out


def to_linear(values: np.ndarray) -> np.ndarray:
    """sRGB values in [0, 1] -> linear light."""
    v = np.asarray(values, np.float64)
    return np.where(v <= 0.04045, v / 12.92, ((v + 0.055) / 1.055) ** 2.4)


#: (256,) each 8-bit sRGB level in linear light: the table every linear-light lookup reads.
LINEAR_LEVELS = to_linear(np.arange(256) / 255.0)


def to_srgb(values: np.ndarray) -> np.ndarray:
    """Linear light -> sRGB values in [0, 1] (clipped)."""
    v = np.clip(values, 0, 1)
    return np.where(v <= 0.0031308, v * 12.92, 1.055 * v ** (1 / 2.4) - 0.055)


def box_of(image: np.ndarray, box: tuple[float, float, float, float] = CENTRAL_BOX) -> np.ndarray:
    """The ``box`` (fractions of width and height) of ``image`` (H, W, 3) as (N, 3) pixels."""
    height, width = image.shape[:2]
    x0, y0, x1, y1 = (round(box[0] * width), round(box[1] * height), round(box[2] * width), round(box[3] * height))
    return np.ascontiguousarray(image[y0:y1, x0:x1]).reshape(-1, 3)


def region_pixels(image: np.ndarray, landmarks: np.ndarray | None, region: Region) -> np.ndarray:
    """(N, 3) pixels of a face image in the normalized frame: the central ``box`` (App. C), or the ``skin`` of the
    cheeks and forehead placed from the face's 68 ``landmarks`` in that frame (``facekit.apps.attributes``: no
    teeth, lips, eyes or brows; the central box holds the teeth of a smile). Without iBUG-68 landmarks: the box."""
    if region == "box" or landmarks is None or np.shape(landmarks) != (68, 2):
        return box_of(image)
    from facekit.apps.attributes import skin_mask

    mask = skin_mask(np.asarray(landmarks, np.float64), image.shape[0], image.shape[1])
    return np.ascontiguousarray(image[mask]) if mask.any() else box_of(image)


def mean_colour(pixels: np.ndarray, mapping: Mapping) -> np.ndarray:
    """Mean of (N, 3) uint8 sRGB pixels in linear RGB (``gains``) or YCrCb (``ycrcb``)."""
    import cv2

    if mapping == "gains":
        return np.asarray(to_linear(pixels / 255.0).mean(axis=0), np.float64)
    return np.asarray(cv2.cvtColor(pixels[:, None, :], cv2.COLOR_RGB2YCrCb).reshape(-1, 3).mean(axis=0), np.float64)


def estimate_from_faces(
    photo: np.ndarray, faces: list[Any], mapping: Mapping = "gains", region: Region = "skin"
) -> Correction:
    """The face-based correction from one or more :class:`~facekit.normalize.NormalizedFace` of ``photo``: the mean
    of their ``region``'s colours (:func:`region_pixels`) in the photo and in the normalized faces, in YCrCb (App. C)
    or linear RGB (gains). The defaults are the adjust app's (gains from the skin), so every caller corrects alike."""
    from facekit.apps.attributes import photo_in_face_frame

    if not faces:
        raise FacekitError("no face to estimate the correction from")
    sources, targets = [], []
    for face in faces:
        aligned, own = photo_in_face_frame(photo, face)  # the photo's own landmarks carried into the frame
        # Without 68 points of its own (a 5-point detector) the photo is measured where the normalized face is: the
        # same region on both sides, never the box against the skin.
        own = own if own is not None else np.asarray(face.decoder_landmarks)
        sources.append(mean_colour(region_pixels(aligned, own, region), mapping))
        targets.append(mean_colour(region_pixels(face.decoder_image, face.decoder_landmarks, region), mapping))
    source, target = np.mean(sources, axis=0), np.mean(targets, axis=0)
    used = {"faces_used": len(faces), "faces_found": faces[0].faces_found, "boxes": [list(f.box) for f in faces]}
    return Correction(
        "adjust",
        (float(source[0]), float(source[1]), float(source[2])),
        (float(target[0]), float(target[1]), float(target[2])),
        used,
        mapping,
    )


def luminance_gain(gains: np.ndarray, source: np.ndarray) -> float:
    """How much ``gains`` (3,) brighten a colour ``source`` (3,) in linear RGB (Rec. 709 luminance ratio)."""
    return float(LUMINANCE @ (gains * source) / max(float(LUMINANCE @ source), 1e-9))


#: Degrees: how far a global estimate may disagree with the face's before ``agreement`` fusion stops listening to it
#: (the width of its Gaussian weight).
FUSE_SIGMA = 3.0


def angle_degrees(a: np.ndarray, b: np.ndarray) -> float:
    """The angle between two colours (3,) in degrees."""
    cosine = float(a @ b) / max(float(np.linalg.norm(a) * np.linalg.norm(b)), 1e-12)
    return float(np.degrees(np.arccos(np.clip(cosine, -1.0, 1.0))))


def fuse_white_balance(
    correction: Correction, photo: np.ndarray, method: Fuse, weight: float = FUSE_WEIGHT, sigma: float = FUSE_SIGMA
) -> Correction:
    """``correction`` (the face's, ``mapping="gains"``) with its white balance replaced by a weighted geometric mean
    of its chromatic gains and global estimators' on ``photo``, in linear light; its exposure kept. ``method``
    ``agreement``: every estimator of :data:`facekit.apps.baselines.STATISTICAL`, weighted by its agreement with the
    face (``sigma`` degrees), the face weighted 1; an estimator's name: that one at ``1 - weight``, the face at
    ``weight``. See the module docstring."""
    from facekit.apps.baselines import STATISTICAL, linear_illuminants

    if correction.mapping != "gains":
        raise FacekitError("fusing with a global white balance needs mapping 'gains' (linear light)")
    if not 0.0 <= weight <= 1.0:
        raise FacekitError(f"fuse weight must be between 0 and 1, got {weight}")
    if not sigma > 0:
        raise FacekitError(f"fuse sigma must be positive (degrees), got {sigma}")
    source = np.asarray(correction.source, np.float64)
    face = correction.gains
    exposure = luminance_gain(face, source)
    face_chroma = face / exposure
    names = list(STATISTICAL) if method == "agreement" else [method]
    illuminants = linear_illuminants(names, photo)
    scenes = {name: 1.0 / light / luminance_gain(1.0 / light, source) for name, light in illuminants.items()}
    if method == "agreement":
        weights = {
            name: float(np.exp(-0.5 * (angle_degrees(face_chroma * source, chroma * source) / sigma) ** 2))
            for name, chroma in scenes.items()
        }
        face_weight = 1.0
    else:
        weights, face_weight = {method: 1.0 - weight}, weight
    total = face_weight + sum(weights.values())
    log_chroma = face_weight * np.log(face_chroma) + sum(w * np.log(scenes[n]) for n, w in weights.items())
    chroma = np.exp(log_chroma / total)
    gains = chroma / luminance_gain(chroma, source) * exposure
    target = source * gains
    record: dict[str, Any] = {"face_gains_rgb": [round(float(g), 4) for g in face], "fuse": method}
    if method == "agreement":
        record["fuse_weights"] = {"face": 1.0, **{n: round(w, 4) for n, w in weights.items()}}
        record["fuse_sigma"] = sigma
    else:
        record["fuse_weight"] = weight
    return replace(
        correction,
        method=f"adjust+{method}",
        target=(float(target[0]), float(target[1]), float(target[2])),
        face={**correction.face, **record},
    )


#: The most refining rounds ``adjust`` takes (each normalizes the face once more).
MAX_REFINE = 3

#: A photo whose pixels' channels differ by at most this many levels (99th percentile; a grey JPEG stored as RGB
#: differs by a level or two) is black-and-white: it has no white balance to correct, and the face's would tint it
#: towards a skin colour (a sepia cast), so only its exposure moves.
MONOCHROME_SPREAD = 3


#: A face's mean colour (linear RGB) within this ratio between its channels is grey: skin in a colour photo is far
#: from it (its red is ~1.5x its blue in linear light), a grey photo's face is at it.
NEUTRAL_RATIO = 1.03


#: The pixels :func:`is_monochrome` reads: around each face used, this many box sizes on every side of its box.
MONOCHROME_MARGIN = 1.0


def around_faces(photo: np.ndarray, boxes: Any, margin: float = MONOCHROME_MARGIN) -> np.ndarray:
    """The pixels (N, 3) of ``photo`` within ``margin`` box sizes of any of the (x0, y0, x1, y1) ``boxes``; every
    pixel when there are none (or none on the photo)."""
    height, width = photo.shape[:2]
    keep = np.zeros((height, width), bool)
    for x0, y0, x1, y1 in boxes or ():
        dx, dy = margin * (x1 - x0), margin * (y1 - y0)
        left, top = max(0, int(np.floor(x0 - dx))), max(0, int(np.floor(y0 - dy)))
        right, bottom = min(width, int(np.ceil(x1 + dx))), min(height, int(np.ceil(y1 + dy)))
        keep[top:bottom, left:right] = True
    return photo[keep] if keep.any() else photo.reshape(-1, photo.shape[-1])


def is_monochrome(photo: np.ndarray, correction: Correction) -> bool:
    """Whether ``photo`` (H, W, 3) uint8 RGB, whose faces gave ``correction``, is black-and-white: its pixels around
    the faces (:data:`MONOCHROME_MARGIN`; a coloured border, caption or logo elsewhere does not count) are grey
    (:data:`MONOCHROME_SPREAD`) and so is the face's mean colour (a colour face framed by a large grey or black
    border is not black-and-white)."""
    pixels = around_faces(photo, correction.face.get("boxes"))
    spread = pixels.max(axis=-1).astype(np.int16) - pixels.min(axis=-1)
    if float(np.percentile(spread, 99)) > MONOCHROME_SPREAD:
        return False
    source = np.asarray(correction.source, np.float64)
    if correction.mapping == "ycrcb":  # (Y, Cr, Cb): grey at Cr = Cb = 128
        return bool(np.abs(source[1:] - 128.0).max() <= MONOCHROME_SPREAD / 2)
    return bool(source.max() <= NEUTRAL_RATIO * max(float(source.min()), 1e-9))


class FaceAdjuster(UsesNormalizer):
    """The ``adjust`` app: white balance and exposure of a photo from its normalized face.

    ``correct(photo)`` -> (corrected photo, :class:`Correction`) or (a copy of the photo, unchanged, None) when no face
    is found: a new array either way.
    ``apply(faces)`` (the App protocol) gives the normalized faces' central-box mean colours.
    """

    photo_detail = False
    #: It estimates on a copy at most this many pixels on its long side (``facekit adjust`` may hand it one).
    estimate_side = ESTIMATE_SIDE

    def __init__(
        self,
        normalizer: Any = None,
        strength: float = 1.0,
        only: Only = "both",
        all_faces: bool = False,
        mapping: Mapping = "gains",
        checkpoint: str | None = None,
        region: Region = "skin",
        fuse: Fuse | Literal["auto"] | None = "auto",
        fuse_weight: float = FUSE_WEIGHT,
        fuse_sigma: float = FUSE_SIGMA,
        refine: int = 0,
        face: str | None = None,
        model: str | None = None,
        device: str | None = None,
    ) -> None:
        super().__init__(normalizer, model, checkpoint, face, device)
        # Built directly (to share a normalizer) nothing else checks these: an unknown only was a KeyError at the
        # first photo, an unknown mapping or region was read as another one without a word (load_component checks).
        choices: dict[str, tuple[str, ...]] = {
            "only": get_args(Only),
            "mapping": get_args(Mapping),
            "region": get_args(Region),
        }
        for name, value in (("only", only), ("mapping", mapping), ("region", region)):
            if value not in choices[name]:
                raise FacekitError(f"unknown {name} {value!r}; known: {', '.join(choices[name])}")
        if not isinstance(all_faces, bool):
            raise FacekitError(f"all_faces must be True or False, got {all_faces!r}")
        if (
            isinstance(strength, bool)
            or not isinstance(strength, int | float | np.number)
            or not 0.0 <= strength <= 1.0
        ):
            raise FacekitError(f"strength must be between 0 and 1, got {strength!r}")
        self.strength, self.only, self.all_faces, self.mapping = strength, only, all_faces, mapping
        gains = mapping == "gains"  # fusing and refining work in linear light; the paper's YCrCb map is one pass
        if fuse == "auto":
            fuse = "white-patch" if gains else None
        self.region, self.fuse, self.fuse_weight = region, fuse, fuse_weight
        self.fuse_sigma, self.refine = fuse_sigma, refine
        from facekit.apps.baselines import STATISTICAL

        if fuse is not None and fuse != "agreement" and fuse not in STATISTICAL:
            known = ", ".join(["agreement", *STATISTICAL])
            raise FacekitError(
                f"unknown fuse {fuse!r}; known: {known}, None (the face alone; none on the command line) or 'auto'"
            )
        if not 0.0 <= fuse_weight <= 1.0:
            raise FacekitError(f"fuse weight must be between 0 and 1, got {fuse_weight}")
        if not fuse_sigma > 0:
            raise FacekitError(f"fuse sigma must be positive (degrees), got {fuse_sigma}")
        if fuse is not None and not gains:
            raise FacekitError("fuse needs mapping 'gains'; the paper's ycrcb mapping runs with fuse None")
        if not 0 <= refine <= MAX_REFINE:
            raise FacekitError(f"refine must be between 0 and {MAX_REFINE} rounds, got {refine}")
        if refine and not gains:
            raise FacekitError("refine needs mapping 'gains'; the paper's ycrcb mapping runs with refine 0")
        if all_faces and face is not None and self.face != "largest":  # asked for (a given normalizer's own: fine)
            raise FacekitError(f"face {self.face} picks one face; all_faces averages every face: give one")

    def estimate(self, photo: Any, *, bgr: bool = False) -> Correction | None:
        """The correction :meth:`correct` applies to ``photo`` ((H, W, 3) uint8 RGB, BGR with ``bgr=True`` as OpenCV
        reads it, or anything :meth:`Normalizer.normalize` takes, read the same way; its gains are in RGB order): at
        this app's ``strength`` and ``only``, exposure only
        for a black-and-white photo (:meth:`settle`), estimated on a copy at most :data:`ESTIMATE_SIDE` pixels on its
        long side (mean colours do not need more; detection at 24 MP would take seconds; a copy of
        :data:`facekit.apps.RETRY_SIDE` when that one shows no face), or None (no face). DetectorFailed when the
        detector raised on it. (Before, the estimate before :meth:`settle`: ``strength=0.5`` or ``only`` made no
        difference, and a grey photo got a colour cast, where :meth:`correct` gave another correction.)"""
        from facekit.images import as_rgb

        copy, correction = self._estimated(as_rgb(photo, bgr=bgr))
        return None if correction is None else self.settle(copy, correction)

    def _estimated(self, photo: np.ndarray) -> tuple[np.ndarray, Correction | None]:
        """(the copy of ``photo`` the correction was estimated on, the correction or None):
        :func:`facekit.apps.faces_on_copies`."""
        copy, faces = faces_on_copies(photo, self._faces)
        return copy, (self.estimate_faces(copy, faces) if faces else None)

    def _faces(self, photo: np.ndarray) -> list[Any]:
        """The normalized faces :meth:`estimate` uses in ``photo``: every one (``all_faces``) or the normalizer's
        choice; DetectorFailed when the detector raised on it."""
        if self.all_faces:
            return list(self.normalizer.normalize(photo, all_faces=True))
        outcome = self.normalizer.normalize_many([photo], ["photo"])[0]  # the others are never encoded and decoded
        if outcome.status == DETECTOR_ERROR:
            raise DetectorFailed(outcome.reason)
        return [outcome.face] if outcome.face is not None else []

    def estimate_faces(self, photo: np.ndarray, faces: list[Any]) -> Correction:
        """The correction from ``faces`` already normalized from ``photo`` (a copy of at most :data:`ESTIMATE_SIDE`
        pixels): the face's estimate with this app's mapping and region, refined ``refine`` times, fused as ``fuse``
        says."""
        correction = estimate_from_faces(photo, faces, self.mapping, self.region)
        for _ in range(self.refine):
            recoloured = apply_correction(photo, correction)
            again = estimate_from_faces(
                recoloured, self.normalizer.renormalize(recoloured, faces), "gains", self.region
            )
            target = np.asarray(correction.target) * again.gains  # the first estimate, then what is left of the cast
            face = {**correction.face, "refined": correction.face.get("refined", 0) + 1}
            correction = replace(correction, target=(float(target[0]), float(target[1]), float(target[2])), face=face)
        if self.fuse is None:
            return correction
        return fuse_white_balance(correction, photo, self.fuse, self.fuse_weight, self.fuse_sigma)

    def correct(self, photo: Any, *, bgr: bool = False) -> tuple[np.ndarray, Correction | None]:
        """(``photo`` corrected, the correction), or (a copy of ``photo``, None) without a face; ``photo`` is (H, W, 3)
        uint8 RGB or anything :meth:`Normalizer.normalize` takes, read the same way (helper-72: a path, a PIL image, a
        grey or RGBA array ended in an AttributeError, IndexError or OpenCV assertion), and comes back as (H, W, 3)
        RGB; with ``bgr=True`` an array in OpenCV's order, corrected and given back in that order (for
        ``cv2.imwrite``; before, there was no way to say so: a BGR photo was corrected with its red and blue swapped,
        without a word). The result is always a new array, never the caller's (before, a faceless RGB array came back
        as the caller's own object, so drawing on the result drew on the input). A black-and-white photo
        (:func:`is_monochrome`) gets its exposure only, and its record says ``monochrome``."""
        from facekit.images import as_rgb

        photo = as_rgb(photo, bgr=bgr)
        copy, correction = self._estimated(photo)
        order = (lambda rgb: np.ascontiguousarray(rgb[..., ::-1])) if bgr else (lambda rgb: rgb)  # (a new array)
        if correction is None:
            return order(photo.copy()), None
        settled = self.settle(copy, correction)
        return order(apply_correction(photo, settled)), settled

    def settle(self, photo: np.ndarray, correction: Correction) -> Correction:
        """``correction`` (estimated from the faces of ``photo``, a copy of at most :data:`ESTIMATE_SIDE` pixels) at
        this app's strength and channels; for a black-and-white photo (:func:`is_monochrome`) its exposure only,
        and its record says ``monochrome``."""
        strength, only = self.strength, self.only
        if is_monochrome(photo, correction):
            correction = replace(correction, face={**correction.face, "monochrome": True})
            strength, only = (0.0 if only == "white-balance" else strength), "exposure"
        return correction.scaled(strength, only)

    def apply(self, faces: Any) -> dict[str, Any]:
        """Central-box mean (Y, Cr, Cb) of each normalized face of ``faces`` (a DecoderOutput): (B, 3)."""
        from facekit.images import to_uint8_rgb

        images = to_uint8_rgb(faces.image)
        return {"face_ycrcb": np.stack([mean_colour(box_of(image), "ycrcb") for image in images])}


# ------------------------------------------------------------------------------------------------ files


@dataclass
class AdjustRow:
    """What happened to one photo: ``status`` is ``adjusted``, ``done`` (an earlier run made it with the same
    settings), ``no_face`` (left unchanged, not written), ``unreadable``, ``detector_error`` (the detector raised on
    it; not written), ``exists`` (outputs already there, left alone) or ``unwritable``."""

    input: str
    status: str
    output: str = ""
    record: dict[str, Any] = field(default_factory=dict)


#: The statuses of a photo whose adjusted file is written: a rerun skips it ('done'). The others have none (no face,
#: unreadable, the detector's error, a file of the user's in the way, unwritable), and a rerun looks at them again.
FINISHED = ("adjusted", "done")


#: Tags of a TIFF's first directory (which Pillow's getexif() returns as its EXIF) that describe that file's own
#: layout: its size, samples, compression, strips or tiles, free space, sub-directories, old-style JPEG data and
#: embedded profile. Carried into another file they would misdescribe it (an eXIf chunk naming strip offsets and a
#: width the PNG does not have).
TIFF_LAYOUT_TAGS = frozenset(
    {254, 255, 256, 257, 258, 259, 262, 266, 273, 277, 278, 279, 280, 281, 284, 288, 289, 317, 320, 322, 323, 324}
    | {325, 330, 338, 339, 340, 341, 347, 513, 514, 530, 531, 532, 34675}
)


def encode_like(
    source: Any, image: np.ndarray, alpha: np.ndarray | None = None, profile: bool = True
) -> tuple[bytes, str]:
    """``image`` (H, W, 3) RGB, uint8 or uint16, encoded in the format of the ``source`` photo (a path): JPEG at quality
    95 with 4:4:4 chroma, PNG otherwise (with ``alpha`` (H, W) of the same type when given, at 16 bits when the image
    is); one channel where the source is 8-bit grey (Pillow's "L") and the image still is (its three channels equal);
    the source's ICC profile (when it describes the output's RGB or grey) and EXIF are carried over, the EXIF
    orientation reset to 1 (the pixels are already upright); ``profile=False``: no profile (``image`` holds sRGB
    values, see :func:`kept_depth`). Returns (bytes, file suffix)."""
    import io

    from PIL import Image

    from facekit.images import open_image

    options: dict[str, Any] = {}
    with open_image(source) as original:
        icc = original.info.get("icc_profile")
        exif = original.getexif()
        jpeg = original.format in ("JPEG", "MPO")  # MPO: a phone's JPEG with a second embedded picture
        # A grey photo ("L") stays grey where the output is (a black-and-white photo's exposure alone moves; a
        # whole-photo estimator's gains on grey are equal): one channel, as it came (helper-202: a grey JPEG came
        # back as RGB, three times the pixels for the same picture). Any channel that differs keeps RGB.
        grey = (
            original.mode == "L"
            and alpha is None
            and image.dtype == np.uint8
            and bool((image[..., 0] == image[..., 1]).all() and (image[..., 1] == image[..., 2]).all())
        )
        if 0x0112 in exif:
            exif[0x0112] = 1
        for tag in TIFF_LAYOUT_TAGS & set(exif):  # a TIFF's own layout, wrong for the output (helper-86)
            del exif[tag]
        try:  # with the file open: a TIFF's EXIF directory is read from it when written (helper-86: lost)
            if len(exif):
                options["exif"] = exif.tobytes()
        except Exception as error:  # noqa: BLE001  (Pillow's EXIF writer raises many types on a malformed tag)
            # A tag of the wrong type decodes but cannot be written back: the photo is adjusted without its EXIF.
            logger.warning(
                "%s: its EXIF cannot be written back (%s: %s); left out", source, type(error).__name__, error
            )
    # A profile of the output's colour space only: RGB, or grey for a grey output (a CMYK one would misdescribe
    # either, and a TIFF's tag may hold a number).
    if profile and isinstance(icc, bytes) and icc[16:20] == (b"GRAY" if grey else b"RGB "):
        options["icc_profile"] = icc
    if grey:
        image = np.ascontiguousarray(image[..., 0])
    if jpeg and (image.dtype != np.uint8 or alpha is not None):
        raise FacekitError("a JPEG output takes 8-bit RGB without alpha")
    buffer = io.BytesIO()
    if jpeg:
        Image.fromarray(image).save(buffer, "JPEG", quality=95, subsampling=0, **options)
        return buffer.getvalue(), ".jpg"
    pixels = image if alpha is None else np.dstack([image, alpha.astype(image.dtype)])
    if image.dtype == np.uint16:  # Pillow writes no 16-bit colour PNG: OpenCV's, with the profile and EXIF added
        return png16(pixels, options.get("icc_profile"), options.get("exif")), ".png"
    Image.fromarray(pixels).save(buffer, "PNG", **options)
    return buffer.getvalue(), ".png"


def png16(pixels: np.ndarray, icc: bytes | None = None, exif: bytes | None = None) -> bytes:
    """(H, W, 3 or 4) uint16 RGB(A) as a 16-bit PNG (OpenCV's encoder) with an ``icc`` profile (iCCP chunk) and ``exif``
    (eXIf chunk, Pillow's ``Exif.tobytes()``) placed after the header, where the PNG specification wants them."""
    import struct
    import zlib

    import cv2

    order = cv2.COLOR_RGB2BGR if pixels.shape[2] == 3 else cv2.COLOR_RGBA2BGRA
    ok, encoded = cv2.imencode(".png", cv2.cvtColor(np.ascontiguousarray(pixels), order))
    if not ok:
        raise FacekitError("OpenCV could not encode a 16-bit PNG")
    data = encoded.tobytes()

    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body) & 0xFFFFFFFF)

    extra = b""
    if icc:
        extra += chunk(b"iCCP", b"ICC profile\x00\x00" + zlib.compress(icc))
    if exif:
        extra += chunk(b"eXIf", exif[6:] if exif.startswith(b"Exif\x00\x00") else exif)
    header_end = 8 + 8 + 13 + 4  # signature, then IHDR (length, type, 13 bytes, CRC)
    return data[:header_end] + extra + data[header_end:]


def read_deep(source: Any) -> tuple[np.ndarray, np.ndarray | None] | None:
    """What 8-bit RGB (:func:`facekit.images.load_rgb`, alpha composited over grey) would lose of a photo: a PNG's or
    WebP's pixels at their own depth, (H, W, 3) uint8 or uint16 RGB, upright, and its alpha (H, W) of the same type
    or None; an opaque 16-bit RGB TIFF's at 16 bits (:func:`_tiff16`); a transparent TIFF's or GIF's (any other
    format's) 8-bit pixels as stored and alpha (a GIF's transparent entry as alpha 0, the rest 255). None when there
    is nothing to keep (8-bit without alpha) or the file cannot be read so."""
    import cv2

    from facekit.images import UPRIGHT, exif_orientation, open_image, stored_rgba

    with open_image(source) as opened:
        # OpenCV for PNG and WebP (their 16 bits); JPEG has neither more than 8 bits nor alpha. Pillow for the
        # others: OpenCV turns a TIFF upright itself and premultiplies its alpha (libtiff's RGBA reader), and reads
        # no GIF. Before, a transparent TIFF or GIF was written without its alpha, over the grey load_rgb put
        # behind it, corrected, and its before/after showed that grey where a PNG's showed a checkerboard.
        if opened.format in ("JPEG", "MPO"):
            return None
        if opened.format == "TIFF" and opened.mode == "RGB" and opened.tag_v2.get(258) == (16, 16, 16):
            return _tiff16(source, opened)
        if opened.format not in ("PNG", "WEBP"):
            return stored_rgba(opened)
        orientation = exif_orientation(opened)  # (one reading with load_rgb's: a value of another type is none)
        # A grey PNG's transparent grey (tRNS), which OpenCV leaves out (an RGB PNG's it turns into alpha itself).
        key = opened.info.get("transparency") if opened.mode in ("L", "I", "I;16") else None
    pixels = cv2.imdecode(np.fromfile(source, np.uint8), cv2.IMREAD_UNCHANGED)  # as stored: orientation not applied
    if pixels is None or pixels.dtype not in (np.uint8, np.uint16):
        return None
    if pixels.ndim == 2:
        pixels = pixels[..., None]
    if isinstance(key, int) and pixels.shape[2] == 1:
        opaque = 65535 if pixels.dtype == np.uint16 else 255
        pixels = np.dstack([pixels, np.where(pixels[..., 0] == key, 0, opaque).astype(pixels.dtype)])
    if pixels.dtype == np.uint8 and pixels.shape[2] in (1, 3):
        return None
    channels = pixels.shape[2]
    alpha = pixels[..., -1] if channels in (2, 4) else None
    colour = pixels[..., :1] if channels <= 2 else pixels[..., 2::-1]  # BGR(A) -> RGB
    rgb = np.repeat(colour, 3, axis=2) if colour.shape[2] == 1 else colour
    turn = UPRIGHT[orientation]  # (load_rgb's turns: the same pixels where both read a photo)
    return np.ascontiguousarray(turn(rgb)), None if alpha is None else np.ascontiguousarray(turn(alpha))


def _tiff16(source: Any, opened: Any) -> tuple[np.ndarray, None] | None:
    """An opaque 16-bit RGB TIFF's pixels at 16 bits, (H, W, 3) uint16, upright: OpenCV's, checked against the 8-bit
    ones Pillow reads (and :func:`facekit.images.load_rgb` corrects), which are their high bytes; None (8 bits, with a
    warning) where they are not, a layout the two read otherwise. Before, such a TIFF was written at 8 bits without a
    word, though its correction is computed in float and a 16-bit PNG's kept its depth."""
    import cv2

    from facekit.images import UPRIGHT, exif_orientation

    turn = UPRIGHT[opened.tag_v2.get(274, 1) if opened.tag_v2.get(274, 1) in UPRIGHT else 1]  # (before loading)
    opened.load()  # (Pillow turns a TIFF upright as it loads it)
    eight = UPRIGHT[exif_orientation(opened)](np.asarray(opened))
    pixels = cv2.imdecode(np.fromfile(source, np.uint8), cv2.IMREAD_UNCHANGED)
    if pixels is not None and pixels.dtype == np.uint16 and pixels.ndim == 3 and pixels.shape[2] == 3:
        # OpenCV 4.14 turns a TIFF upright itself, even unchanged (before, turned again here: every turned 16-bit
        # TIFF was written at 8 bits with this warning); an OpenCV that does not leaves its pixels as stored.
        stored: np.ndarray = pixels[..., ::-1]
        for rgb in (stored, turn(stored)):
            if rgb.shape == eight.shape and np.array_equal(rgb[::7, ::7] >> 8, eight[::7, ::7]):
                return np.ascontiguousarray(rgb), None
    logger.warning("%s: its 16-bit pixels could not be read as Pillow reads the photo; written at 8 bits", source)
    return None


def alpha_kept(source: Any, shape: tuple[int, ...]) -> np.ndarray | None:
    """The alpha (H, W) uint8 the corrected photo ``source`` is written with (:func:`read_deep`, as
    :func:`kept_depth` reads it), for :func:`before_after`; None where it is written without one (none in the file,
    a format read_deep leaves out, or a picture other than the one read, of ``shape``)."""
    deep = read_deep(source)
    alpha = None if deep is None else deep[1]
    del deep  # (the pixels at their own depth: only the alpha is kept)
    if alpha is None or alpha.shape != tuple(shape[:2]):  # not the picture read: kept_depth writes no alpha
        return None
    return (alpha >> 8).astype(np.uint8) if alpha.dtype == np.uint16 else alpha


def recolour(image: np.ndarray, record: Any, primaries: np.ndarray | None = None) -> np.ndarray | None:
    """``image`` (any depth :func:`apply_correction` takes) corrected as ``record`` says: a :class:`Correction`, or a
    baseline's record with linear-light ``gains_rgb``; None when the record does not say how (another app's).
    ``primaries``: the image's values are in that RGB, not sRGB (:func:`gains_in_primaries`; the paper's YCrCb map is
    applied as it is)."""
    gains: np.ndarray | None = None
    if isinstance(record, Correction):
        if record.mapping != "gains" or primaries is None or record.source == record.target:
            return apply_correction(image, record)
        gains = record.gains
    elif isinstance(record, dict) and record.get("light") == "linear" and len(record.get("gains_rgb", ())) == 3:
        gains = np.asarray(record["gains_rgb"], np.float64)
    if gains is None:
        return None
    return apply_linear_gains(image, gains if primaries is None else gains_in_primaries(gains, primaries))


#: The height of the before/after preview ``facekit adjust`` writes.
PREVIEW_HEIGHT = 480

#: The backdrop the before/after shows a transparent photo over, as image editors show transparency: squares of this
#: many preview pixels, in these two greys.
CHECKER_SQUARE = 8
CHECKER_GREYS = (204, 255)

#: The grey :func:`facekit.images.load_rgb` composites a transparent photo over.
LOADED_OVER = 128


def checkerboard(height: int, width: int) -> np.ndarray:
    """The before/after's backdrop for a transparent photo: (height, width, 1) float32."""
    rows, columns = np.arange(height)[:, None] // CHECKER_SQUARE, np.arange(width)[None, :] // CHECKER_SQUARE
    return np.where((rows + columns) % 2 == 0, *CHECKER_GREYS).astype(np.float32)[..., None]


def before_after(
    before: np.ndarray,
    after: np.ndarray,
    height: int = PREVIEW_HEIGHT,
    alpha: np.ndarray | None = None,
    grey_after: Any = LOADED_OVER,
    grey_before: Any = LOADED_OVER,
) -> np.ndarray:
    """The photo and its correction side by side, ``height`` pixels high: (height, 2W', 3) uint8.

    ``alpha`` (H, W) uint8: the photo is transparent there, and ``before`` and ``after`` hold it composited over
    :data:`LOADED_OVER` grey (as :func:`facekit.images.load_rgb` reads it), read as ``grey_before`` (a value, or RGB:
    :func:`grey_read_over`, that grey converted from the photo's colour profile), and that grey corrected in ``after``
    to ``grey_after``. Both halves are then shown over one :func:`checkerboard` instead, as the written
    file (which keeps its alpha) shows over a backdrop: a transparent area looks the same in both halves and only the
    photo's own pixels differ (before: the grey it was shown over turned beige in the after half, a change the file
    does not have). Exact where the photo is opaque or transparent; a half-transparent edge is its colour over grey
    corrected, less the corrected grey's share."""
    import cv2

    width = max(1, round(before.shape[1] * height / before.shape[0]))
    pair = [cv2.resize(image, (width, height), interpolation=cv2.INTER_AREA) for image in (before, after)]
    if alpha is not None:
        shown = cv2.resize(alpha.astype(np.float32) / 255.0, (width, height), interpolation=cv2.INTER_AREA)
        clear, board = (1.0 - shown)[..., None], checkerboard(height, width)
        for index, grey in enumerate((grey_before, grey_after)):
            moved = pair[index] + clear * (board - np.asarray(grey, np.float32))
            pair[index] = np.clip(np.rint(moved), 0, 255).astype(np.uint8)
    return np.concatenate(pair, axis=1)


def grey_read_over(source: Any) -> np.ndarray:
    """The :data:`LOADED_OVER` grey as :func:`facekit.images.load_rgb` reads a transparent photo over it (RGB,
    float32): composited in the photo's own colour profile, then converted to sRGB with the photo, so not 128 under
    a profile whose curve is not sRGB's (gamma 1.8, ProPhoto's or Apple RGB's: 147)."""
    from PIL import Image

    from facekit.images import managed_profile, open_image, to_srgb

    with open_image(source) as opened:
        icc = managed_profile(opened)
    grey = Image.new("RGB", (1, 1), (LOADED_OVER,) * 3)
    read = grey if icc is None else to_srgb(grey, icc)[0]
    return np.asarray(read, np.float32)[0, 0]


def grey_corrected(record: Any, corrected: np.ndarray, alpha: np.ndarray, grey: Any = LOADED_OVER) -> Any:
    """What the correction ``record`` made of the ``grey`` a transparent photo was read over (RGB,
    :func:`grey_read_over`), for :func:`before_after`: the record's own mapping applied to it, or for one that does
    not say how (another app's) the corrected photo where it is wholly transparent, the grey itself where it is
    nowhere."""
    made = recolour(np.full((1, 1, 3), np.rint(grey), np.uint8), record)
    if made is not None:
        return made[0, 0].astype(np.float32)
    clear = alpha == 0
    return corrected[clear].mean(axis=0) if clear.any() else grey


#: The files ``facekit adjust`` may write per photo, as suffixes of its base name: the photo in its own format, the
#: record and the preview (all reserved when names are planned, so none lands on an input or another photo's output).
ADJUST_OUTPUTS = (".jpg", ".png", ".json", "_before_after.png")


def adjust_files(
    plan: Any, corrector: Any, on_row: Any = None, overwrite: bool = False, settings: dict[str, Any] | None = None
) -> list[AdjustRow]:
    """Correct every photo of ``plan`` (from ``facekit.batch.plan_folder(..., outputs=ADJUST_OUTPUTS)``) with
    ``corrector`` (``correct(photo) -> (photo, record)``): OUT/NAME.jpg|png (the input's format),
    NAME_before_after.png, NAME.json (the correction and the face used). A photo without a face is left unchanged and
    not written; one whose outputs are already there is left alone (``exists``) unless ``overwrite``; one whose
    outputs cannot be written is ``unwritable``. With ``settings`` (what the corrector is: method, options, model
    sha256), each record holds them and the input's sha256, and a rerun with the same is ``done``. The folder is
    locked against another facekit writing into it."""
    from facekit.locks import exclusive

    with exclusive(plan.out, "adjust"):
        return _adjust_locked(plan, corrector, on_row, overwrite, settings)


def _adjust_one(planned: Any, out: Any, corrector: Any, provenance: dict[str, Any]) -> AdjustRow:
    """One photo of :func:`adjust_files`: read, correct, write its three files (its row says what happened); the
    record gets ``provenance`` (input sha256, settings). A detector that raises on the photo makes it a
    ``detector_error`` row (left unchanged)."""
    try:
        return _adjust_read_and_write(planned, out, corrector, provenance)
    except DetectorFailed as error:
        why = f"{error}: the photo is left unchanged"
        return AdjustRow(str(planned.source), DETECTOR_ERROR, record={"reason": why})


def _adjust_read_and_write(planned: Any, out: Any, corrector: Any, provenance: dict[str, Any]) -> AdjustRow:

    from facekit.batch import png_bytes, with_record, write_files
    from facekit.images import load_rgb

    name = str(planned.source)

    def no_face(shape: tuple[int, ...]) -> AdjustRow:  # why, for a photo too small or thin to hold a face
        from facekit.apps import RETRY_SIDE
        from facekit.normalize import no_face_reason

        detector = getattr(getattr(corrector, "normalizer", None), "detector", None)
        why = no_face_reason(detector, shape[1], shape[0], RETRY_SIDE)
        return AdjustRow(name, "no_face", record={"reason": f"{why}; the photo is left unchanged"})

    quick = _in_own_profile(planned.source, corrector)
    again: np.ndarray | None = None
    corrected: np.ndarray | None = None
    # Each full-size array is let go as soon as it is no longer needed, the before/after made before the encoder's
    # copy: the peak is reading the photo, not encoding it (before: the photo, its correction and the encoder's copy,
    # 10 bytes a pixel; benchmarks/adjust.py --memory).
    if quick is not None:  # a JPEG in another profile: estimated on a small sRGB copy, its stored values corrected
        stored, small, photo, primaries = quick
        quick = None
        record = corrector.correct(small)[1]
        if record is None and small.shape[:2] == stored.shape[:2]:
            return no_face(stored.shape)
        if record is not None:  # else a face too small for the copy: the general path looks on a larger one too
            # None only for a record that does not say how: the general path
            again = recolour(stored, record, primaries)
            corrected = recolour(photo, record)  # the before/after, from a copy as high as it is shown
        del stored
    if again is not None and corrected is not None:
        kept: dict[str, Any] = {"written": {"bits": 8, "alpha": False, "profile": "kept"}}
        pair = png_bytes(before_after(photo, corrected))
        data, suffix = encode_like(planned.source, again, None, profile=True)
        del again
    else:
        read, why = load_rgb(planned.source)
        if read is None:
            return AdjustRow(name, "unreadable", record={"reason": why})
        corrected, record = corrector.correct(read)
        if record is None:
            return no_face(read.shape)
        method = (provenance.get("settings") or {}).get("method") or type(corrector).__name__
        check_corrected(method, read, corrected, record)
        # A transparent photo keeps its alpha where it is written (read_deep, as kept_depth reads it): its
        # before/after shows both halves over one backdrop, not the grey load_rgb put behind it corrected.
        alpha = alpha_kept(planned.source, read.shape) if "alpha" in why else None
        # (the grey as read: converted from the photo's profile with it, not 128 under every profile)
        over = LOADED_OVER if alpha is None else grey_read_over(planned.source)
        grey = LOADED_OVER if alpha is None else grey_corrected(record, corrected, alpha, over)
        pair = png_bytes(before_after(read, corrected, alpha=alpha, grey_after=grey, grey_before=over))
        shape = read.shape
        del read, alpha
        data, suffix, kept = encode_corrected(planned.source, shape, corrected, record)
    del corrected
    target = out / f"{planned.base}{suffix}"
    record = {**(record.to_json() if hasattr(record, "to_json") else record), **kept, **provenance}
    pictures = [(target, data), (out / f"{planned.base}_before_after.png", pair)]
    failed = write_files(with_record(out / f"{planned.base}.json", record, pictures, indent=2), out)
    if failed:
        return AdjustRow(name, "unwritable", record={"reason": failed})
    return AdjustRow(name, "adjusted", str(target), record)


def check_corrected(method: str, photo: np.ndarray, corrected: Any, record: Any) -> None:
    """Refuse what an adjust method's ``correct(photo)`` returned when it is not the photo's own shape in uint8 with
    a record that JSON can write (a dict, or an object with ``to_json``): before, a float photo was refused as if the
    user's JPEG were at fault ('a JPEG output takes 8-bit RGB'), an RGBA one ended in PIL's OSError, a smaller one
    was written as the adjusted photo without a word and a record holding numpy arrays ended in json's TypeError."""
    import json

    problems = []
    if not (isinstance(corrected, np.ndarray) and corrected.dtype == np.uint8 and corrected.shape == photo.shape):
        got = f"{corrected.shape} {corrected.dtype}" if isinstance(corrected, np.ndarray) else type(corrected).__name__
        problems.append(f"returned a photo of {got} for a {photo.shape} uint8 photo")
    if not hasattr(record, "to_json"):
        try:
            json.dumps(dict(record))
        except (TypeError, ValueError) as error:
            problems.append(f"returned a record that is not a JSON-writable dict ({error})")
    if problems:
        raise FacekitError(
            f"adjust method {method!r} {'; '.join(problems)}: fix the app plugin (correct(photo (H, W, 3) uint8) -> "
            "(the corrected photo, same shape and dtype; a JSON-writable record dict, or None for no face))"
        )


def _in_own_profile(source: Any, corrector: Any) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray | None] | None:
    """For a JPEG whose colour profile :func:`facekit.images.load_rgb` converts, and a corrector that estimates on a
    copy of at most ``corrector.estimate_side`` pixels: (the stored values, that copy converted to sRGB, a copy
    :data:`PREVIEW_HEIGHT` high converted to sRGB for the before/after, the profile's primaries). The full photo is
    then never converted (little CMS at ~20 MP/s) and its corrected sRGB copy never made. The copy is shrunk, then
    converted (the general path converts, then shrinks): the record is nearly the same, not bit for bit (gains within
    about 2 % on a 3,360 x 2,520 face photo, under what another JPEG rotation of it moves them). None: the general
    path."""
    import cv2
    from PIL import Image

    from facekit.images import downscale, load_rgb, managed_profile, open_image, profile_primaries, to_srgb

    side = getattr(corrector, "estimate_side", None)
    if not side:
        return None
    try:
        with open_image(source) as opened:
            icc = managed_profile(opened) if opened.format in ("JPEG", "MPO") else None
    except Exception:  # noqa: BLE001  (the general path reads it and says why it cannot)
        return None
    if icc is None:
        return None
    stored, _ = load_rgb(source, colour_manage=False)
    if stored is None:
        return None
    small, note = to_srgb(Image.fromarray(downscale(stored, int(side))), icc)
    if not note.startswith("converted"):
        return None
    height, width = stored.shape[:2]
    scale = min(1.0, PREVIEW_HEIGHT / height)
    size = (max(1, round(width * scale)), max(1, round(height * scale)))
    shown = to_srgb(Image.fromarray(cv2.resize(stored, size, interpolation=cv2.INTER_AREA)), icc)[0]
    return stored, np.asarray(small), np.asarray(shown), profile_primaries(icc)


#: Why a 16-bit photo corrected by a method whose record gives no linear gains is written at 8 bits.
LOST_DEPTH = (
    "the method's record does not say how to correct the 16-bit pixels (a record with 'light': 'linear' and "
    "'gains_rgb' does), only its 8-bit result"
)


def kept_depth(
    source: Any, photo: np.ndarray | tuple[int, ...], corrected: np.ndarray | Callable[[], np.ndarray], record: Any
) -> tuple[np.ndarray, np.ndarray | None, dict[str, Any]]:
    """What to write for ``source`` once ``corrected`` (8-bit, from ``photo`` as :func:`facekit.images.load_rgb` read
    it): the same correction at the file's own depth with its alpha kept (a 16-bit or transparent PNG stays one), and
    what the record says about it. The estimate came from the 8-bit copy (alpha over grey); only the pixels written
    change. Of ``photo`` only its shape is read, and its shape will do: a caller that lets the photo go before
    encoding holds one full-size array less while the encoder makes its copy.

    A photo in a colour profile other than sRGB was read converted to sRGB, but ``encode_like`` keeps its profile: its
    own stored values are corrected instead (linear gains moved into its primaries, so that the colour the correction
    turns grey in sRGB is turned grey in them; the curve is taken as sRGB's, Display P3's own), and the record says
    ``profile: kept``; where that cannot be done the sRGB values are written without the profile (``dropped``).

    ``corrected`` may be a function that makes it, called only where the values written are the 8-bit sRGB ones: a
    caller that writes a photo in another profile need not hold its full-size sRGB correction while the file's own
    values are read and corrected (``facekit serve``: 4 bytes a pixel less at a P3 upload's peak)."""
    from facekit.images import load_rgb, managed_profile, open_image, profile_primaries, srgb_profile

    with open_image(source) as opened:
        icc = managed_profile(opened)
        # An RGB profile on a photo load_rgb does not convert (a grey or CMYK JPEG): the values written are the sRGB
        # estimate's, so the profile is not carried over.
        foreign = icc is None and srgb_profile(opened.info.get("icc_profile")) is False
    shape = photo if isinstance(photo, tuple) else photo.shape
    own = icc is not None  # load_rgb converted it: the file's values are not sRGB's
    primaries = profile_primaries(icc) if own else None
    dropped = {"profile": "dropped"} if own or foreign else {}
    profile = {"profile": "kept"} if own else dropped
    deep = read_deep(source)
    if deep is None:
        if not own:
            return _made(corrected), None, {"written": {"bits": 8, "alpha": False, **dropped}} if foreign else {}
        stored, _ = load_rgb(source, colour_manage=False)
        again = None if stored is None or stored.shape != shape else recolour(stored, record, primaries)
        if again is None:
            logger.warning("%s: its stored values could not be corrected; written in sRGB without its profile", source)
            return _made(corrected), None, {"written": {"bits": 8, "alpha": False, **dropped}}
        return again, None, {"written": {"bits": 8, "alpha": False, **profile}}
    pixels, alpha = deep
    bits = 16 if pixels.dtype == np.uint16 else 8
    if pixels.shape[:2] != shape[:2]:  # not the picture load_rgb read (a multi-frame file): 8-bit as read
        logger.warning("%s: its full-depth pixels do not match the photo read; written at 8 bits", source)
        return _made(corrected), None, {"written": {"bits": 8, "alpha": False, **dropped}}
    again = recolour(pixels, record, primaries)
    if again is None:  # a correction that says no more than its 8-bit result
        eight = None if alpha is None else (alpha >> 8 if bits == 16 else alpha).astype(np.uint8)
        written: dict[str, Any] = {"bits": 8, "alpha": alpha is not None, **dropped}
        if bits == 16:
            written["why"] = LOST_DEPTH
            logger.warning("%s: written at 8 bits: %s", source, LOST_DEPTH)
        return _made(corrected), eight, {"written": written}
    return again, alpha, {"written": {"bits": bits, "alpha": alpha is not None, **profile}}


def _made(corrected: np.ndarray | Callable[[], np.ndarray]) -> np.ndarray:
    """:func:`kept_depth`'s ``corrected``, made now where it was given as a function."""
    return corrected() if callable(corrected) else corrected


def keeps_profile(kept: dict[str, Any]) -> bool:
    """Whether the output described by :func:`kept_depth`'s record ``kept`` carries the photo's colour profile."""
    return bool(kept.get("written", {}).get("profile") != "dropped")


def encode_corrected(
    source: Any, photo: np.ndarray | tuple[int, ...], corrected: np.ndarray | Callable[[], np.ndarray], record: Any
) -> tuple[bytes, str, dict[str, Any]]:
    """The corrected photo as a file like ``source``: :func:`kept_depth` (the file's own depth, alpha and colour
    profile where it can; ``photo`` or its shape) then :func:`encode_like` with the profile only where the values
    written are in it. Returns (bytes, file suffix, what the record says about what was written). One call, so that
    no caller can write sRGB values under the photo's P3 label or the other way round."""
    written, alpha, kept = kept_depth(source, photo, corrected, record)
    data, suffix = encode_like(source, written, alpha, keeps_profile(kept))
    return data, suffix, kept


def gains_in_primaries(gains: np.ndarray, primaries: np.ndarray) -> np.ndarray:
    """Linear-sRGB white balance ``gains`` (3,) as gains in another RGB's linear light with ``primaries`` (3, 3: XYZ of
    its R, G, B, D50, as :data:`facekit.images.SRGB_COLORANTS`): the colour they turn grey (1 / gains) is turned the
    same grey there (both RGBs share the white, so grey is (1, 1, 1) in each)."""
    from facekit.images import SRGB_COLORANTS

    cast = (1.0 / np.maximum(np.asarray(gains, np.float64), 1e-9)) @ SRGB_COLORANTS @ np.linalg.inv(primaries)
    return np.asarray(1.0 / np.maximum(cast, 1e-9), np.float64)


def _adjust_locked(
    plan: Any, corrector: Any, on_row: Any, overwrite: bool, settings: dict[str, Any] | None
) -> list[AdjustRow]:
    from facekit.batch import (
        exists_reason,
        input_sha256,
        made_from,
        occupied,
        read_record,
        reading,
        remove_temporaries,
        rerun_verdict,
    )

    out = plan.out
    remove_temporaries(out, plan.planned)
    rows = []
    for planned in plan.planned:
        name = str(planned.source)
        source_sha, why = input_sha256(planned.source)
        provenance = {"input_sha256": source_sha, "settings": settings, **reading(planned.source)}
        # The adjusted photo an earlier run left, in the input's format (.jpg or .png).
        made = [path for path in planned.outputs(out, (".jpg", ".png")) if path.is_file()]
        taken = occupied(planned.outputs(out, ADJUST_OUTPUTS))
        previous = read_record(out / f"{planned.base}.json")
        verdict = rerun_verdict(previous, provenance if settings is not None else None, bool(made), taken, overwrite)
        if source_sha is None:
            row = AdjustRow(name, "unreadable", record={"reason": why})
        elif verdict == "done":
            row = AdjustRow(name, "done", str(made[0]), {"reason": "already adjusted with these settings"})
        elif verdict == "exists":
            row = AdjustRow(name, "exists", record={"reason": exists_reason(taken[0])})
        else:
            row = _adjust_one(planned, out, corrector, {**provenance, **made_from(planned.source)})
        rows.append(row)
        if on_row is not None:
            on_row(row)
    return rows
