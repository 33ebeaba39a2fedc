"""Attributes measured on the normalized face instead of the raw photo: skin tone and face-shape ratios.

The normalized face is the person under even, neutral light, frontal, with a neutral expression. Measured there, skin
tone does not follow the photo's light and face shape does not follow its pose or expression, so repeated photos of one
person give nearly the same numbers (``benchmarks/attributes.py`` measures how nearly).

- **Skin tone**: the Individual Typology Angle, ``ITA = atan((L* - 50) / b*)`` in degrees (Chardon et al. 1991), from
  the median CIELAB L* and b* (D65, CIE 1931 2 degree observer; sRGB -> XYZ -> Lab by colour-science) of the pixels of a
  fixed skin region, :func:`skin_polygons`: the two cheeks and a forehead patch, placed from the decoder's 68 predicted
  landmarks so that they keep clear of the eyes, brows, nostrils and lips. The median (not the mean) so that a
  specular highlight, a strand of hair or a spectacle frame inside a patch does not move the tone.
- **Face shape**: ratios of distances between the predicted landmarks (:data:`RATIOS`), free of scale and roll.

The region and the statistic were fixed before any LFW DevTest number was seen (the region checked by eye on DevTrain
people's normalized faces).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from facekit.apps import UsesNormalizer
from facekit.errors import NO_FACE, FacekitError
from facekit.types import face_record

# ------------------------------------------------------------------------------------------------ skin region

#: How far each cheek polygon is shrunk towards its centroid (0: the polygon through the landmarks, 1: a point). The
#: polygon runs lower eyelid -> nose wing -> mouth corner -> jaw at mouth level -> jaw below the ear -> jaw at eye
#: level; shrinking it by 40 % keeps it off the eyelid, the alar crease, the nasolabial fold and the face's edge.
CHEEK_SHRINK = 0.4
#: The image-left cheek's polygon (iBUG-68, 0-based): lower eyelid (40, 41 averaged), nose wing 31, mouth corner 48,
#: jaw 3, 2, 1. The image-right cheek mirrors it: (46, 47), 35, 54, 13, 14, 15.
LEFT_CHEEK = ((40, 41), (31,), (48,), (3,), (2,), (1,))
RIGHT_CHEEK = ((46, 47), (35,), (54,), (13,), (14,), (15,))
#: The forehead patch, in interocular distances ``d``: a rectangle centred between the eyes, ``FOREHEAD_HALF_WIDTH``
#: d either side, from ``FOREHEAD_LOW`` d to ``FOREHEAD_HIGH`` d above the highest brow point (measured at right
#: angles to the eye line, so it follows a rolled face). No landmark lies on the forehead; 0.15 d clears the brows.
FOREHEAD_HALF_WIDTH = 0.4
FOREHEAD_LOW = 0.15
FOREHEAD_HIGH = 0.45


def _eyes(points: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    from facekit.align import eye_centres

    return eye_centres(points)


def skin_polygons(landmarks: np.ndarray) -> dict[str, np.ndarray]:
    """The skin region of a face with (68, 2) iBUG-68 ``landmarks``: ``left_cheek``, ``right_cheek`` (image-left
    and image-right) and ``forehead``, each an (N, 2) polygon in the same pixel frame (see the module docstring)."""
    points = np.asarray(landmarks, np.float64)
    if points.shape != (68, 2):
        raise FacekitError(f"skin regions need 68 iBUG landmarks, got an array of shape {points.shape}")
    polygons = {}
    for name, spec in (("left_cheek", LEFT_CHEEK), ("right_cheek", RIGHT_CHEEK)):
        outline = np.stack([points[list(indices)].mean(axis=0) for indices in spec])
        centre = outline.mean(axis=0)
        polygons[name] = centre + (1.0 - CHEEK_SHRINK) * (outline - centre)
    left, right = _eyes(points)
    distance = float(np.linalg.norm(right - left))
    across = (right - left) / max(distance, 1e-9)
    up = np.array([across[1], -across[0]])  # at right angles to the eye line, towards the brows (y grows downwards)
    middle = (left + right) / 2
    brow_top = float(((points[17:27] - middle) @ up).max())
    low, high = brow_top + FOREHEAD_LOW * distance, brow_top + FOREHEAD_HIGH * distance
    half = FOREHEAD_HALF_WIDTH * distance
    polygons["forehead"] = np.stack(
        [middle + sx * half * across + h * up for sx, h in ((-1, low), (1, low), (1, high), (-1, high))]
    )
    return polygons


def skin_mask(landmarks: np.ndarray, height: int, width: int | None = None) -> np.ndarray:
    """(H, W) bool: the pixels inside :func:`skin_polygons` (parts outside the image are dropped)."""
    import cv2

    width = height if width is None else width
    mask = np.zeros((height, width), np.uint8)
    for polygon in skin_polygons(landmarks).values():
        # fillPoly takes integer vertices; 4 fractional bits keep the sub-pixel positions of the landmarks.
        cv2.fillPoly(mask, [np.round(polygon * 16).astype(np.int32)], 1, lineType=cv2.LINE_8, shift=4)
    return mask.astype(bool)


# ------------------------------------------------------------------------------------------------ colour


def srgb_to_lab(pixels: np.ndarray) -> np.ndarray:
    """(..., 3) sRGB, uint8 (0-255) or float in [0, 1] -> (..., 3) CIELAB (L* in 0-100) under D65 (CIE 1931 2 degree
    observer), through linear sRGB and XYZ with colour-science."""
    import colour

    values = np.asarray(pixels)
    rgb = values / 255.0 if values.dtype == np.uint8 else values.astype(np.float64)
    xyz = colour.RGB_to_XYZ(rgb, colour.RGB_COLOURSPACES["sRGB"], apply_cctf_decoding=True)
    d65 = colour.CCS_ILLUMINANTS["CIE 1931 2 Degree Standard Observer"]["D65"]
    return np.asarray(colour.XYZ_to_Lab(xyz, illuminant=d65), np.float64)


#: Below this b* (yellowness) the ITA is undefined: skin has b* of about 8-30, and near 0 (a grey photo, a blue cast)
#: the angle swings to +-90 degrees and names a category the colour does not have.
MIN_B_STAR = 2.0


def individual_typology_angle(lightness: Any, b_star: Any) -> Any:
    """ITA in degrees, ``atan((L* - 50) / b*)``; NaN where b* < :data:`MIN_B_STAR` (not a skin colour: a greyscale
    photo or a strong blue cast)."""
    b = np.asarray(b_star, np.float64)
    angle = np.degrees(np.arctan(np.divide(np.asarray(lightness, np.float64) - 50.0, np.where(b > 0, b, 1.0))))
    return np.where(b >= MIN_B_STAR, angle, np.nan)


#: ITA skin-tone categories (Chardon et al. 1991; Del Bino & Bernerd 2013): the lower bound of each, in degrees.
ITA_CATEGORIES = (("very light", 55.0), ("light", 41.0), ("intermediate", 28.0), ("tan", 10.0), ("brown", -30.0))


def ita_category(ita: float) -> str:
    """The skin-tone category of an ITA in degrees: very light > 55 > light > 41 > intermediate > 28 > tan > 10 >
    brown > -30 > dark; "undefined" for NaN (see :func:`individual_typology_angle`)."""
    if not np.isfinite(ita):
        return "undefined"
    for name, lower in ITA_CATEGORIES:
        if ita > lower:
            return name
    return "dark"


@dataclass(frozen=True)
class SkinTone:
    """Median CIELAB of the skin region's ``pixels`` and its ITA (degrees) and category."""

    lightness: float
    a_star: float
    b_star: float
    ita: float
    category: str
    pixels: int
    colourfulness: float  # of the region's pixels (Hasler & Suesstrunk): ~0 for a grey photo
    coloured: bool  # whether the region has colour at all (:func:`has_colour`)


def skin_tone(image: np.ndarray, landmarks: np.ndarray) -> SkinTone:
    """The skin tone of a face in ``image`` (H, W, 3) uint8 RGB with (68, 2) iBUG-68 ``landmarks`` in its pixels."""
    mask = skin_mask(landmarks, image.shape[0], image.shape[1])
    if not mask.any():
        raise FacekitError("the skin region lies outside the image: the landmarks do not belong to this image")
    from facekit.data.quality import colourfulness

    pixels = np.ascontiguousarray(image)[mask]
    lab = np.median(srgb_to_lab(pixels), axis=0)
    ita = float(individual_typology_angle(lab[0], lab[2]))
    tone = (float(lab[0]), float(lab[1]), float(lab[2]), ita, ita_category(ita))
    colourful = colourfulness(pixels[None])
    return SkinTone(*tone, int(mask.sum()), colourful, has_colour(pixels, colourful))


def has_colour(pixels: np.ndarray, colourful: float) -> bool:
    """Whether the (N, 3) uint8 RGB ``pixels`` of a skin region, of ``colourful`` colourfulness (Hasler &
    Suesstrunk, :func:`facekit.data.quality.colourfulness`), are in colour: a colourfulness of at least
    :data:`MIN_PHOTO_COLOURFULNESS`, or, in a region darker than :data:`DARK_REGION_LEVEL`, channels that differ by
    more than a grey JPEG's rounding (``facekit.apps.adjust.MONOCHROME_SPREAD``, at the median). The
    colourfulness is in sRGB levels and falls with the exposure: the shipped test face scores 21 as it is and 4.3 six
    stops under, its skin (25, 19, 15) still clearly warm, and such a dark colour photo was called one without
    colour; a grey photo's channels are equal at any exposure."""
    from facekit.apps.adjust import MONOCHROME_SPREAD

    if colourful >= MIN_PHOTO_COLOURFULNESS:
        return True
    if float(pixels.mean()) >= DARK_REGION_LEVEL:  # exposed well enough for the colourfulness to tell
        return False
    spread = pixels.max(axis=-1).astype(np.int16) - pixels.min(axis=-1)
    return float(np.median(spread)) > MONOCHROME_SPREAD


# ------------------------------------------------------------------------------------------------ shape


def _distance(points: np.ndarray, a: int | tuple[int, ...], b: int | tuple[int, ...]) -> float:
    first = points[list(a)].mean(axis=0) if isinstance(a, tuple) else points[a]
    second = points[list(b)].mean(axis=0) if isinstance(b, tuple) else points[b]
    return float(np.linalg.norm(first - second))


#: Face-shape ratios from iBUG-68 points (0-based), each (numerator, denominator) as pairs of points whose distance is
#: taken (a tuple of points stands for their mean). Face width: jaw line at the ears (0-16, close to the cheekbones'
#: width); face height: nasion (27) to chin (8), the anthropometric morphological face height.
RATIOS: dict[str, tuple[tuple[Any, Any], tuple[Any, Any], str]] = {
    "face_width_height": (
        (0, 16),
        (27, 8),
        "face width (jaw line at the ears, 0-16) / face height (nasion-chin, 27-8)",
    ),
    "interocular_face_width": (
        ((36, 37, 38, 39, 40, 41), (42, 43, 44, 45, 46, 47)),
        (0, 16),
        "eye centres / face width",
    ),
    "nose_mouth_width": ((31, 35), (48, 54), "nose width (31-35) / mouth width (48-54)"),
    "jaw_face_width": ((4, 12), (0, 16), "jaw width at the gonial angles (4-12) / face width"),
    "lower_face_height": ((33, 8), (27, 8), "nose base to chin (33-8) / face height (27-8)"),
}


def shape_ratios(landmarks: np.ndarray) -> dict[str, float]:
    """The :data:`RATIOS` of a face's (68, 2) iBUG-68 ``landmarks``."""
    points = np.asarray(landmarks, np.float64)
    if points.shape != (68, 2):
        raise FacekitError(f"face-shape ratios need 68 iBUG landmarks, got an array of shape {points.shape}")
    return {
        name: _distance(points, *top) / max(_distance(points, *bottom), 1e-9)
        for name, (top, bottom, _) in RATIOS.items()
    }


def measure_face(image: np.ndarray, landmarks: np.ndarray) -> dict[str, Any]:
    """Skin tone and shape ratios of one face: ``ita_degrees``, ``ita_category``, ``L``, ``a``, ``b``,
    ``skin_pixels`` and every :data:`RATIOS` name."""
    tone = skin_tone(image, landmarks)
    return {
        "ita_degrees": tone.ita,
        "ita_category": tone.category,
        "L": tone.lightness,
        "a": tone.a_star,
        "b": tone.b_star,
        "skin_pixels": tone.pixels,
        **shape_ratios(landmarks),
    }


def photo_in_face_frame(photo: np.ndarray, face: Any) -> tuple[np.ndarray, np.ndarray | None]:
    """The photo's face in the normalized face's frame, for measuring it the same way: (aligned image (S, S, 3),
    the photo's own 68 landmarks carried into that frame, or None when the detector gave no iBUG-68 points). The
    alignment is the least-squares similarity from the photo's landmarks onto the normalized face's (as the adjust app
    and the detail measure align it)."""
    from facekit.align import align_into, eye_centres

    source = np.asarray(face.source_landmarks, np.float64)
    size = face.image.shape[0]
    if source.shape != (68, 2):
        eyes = np.stack(eye_centres(source, face.source_scheme))
        target = np.stack(eye_centres(np.asarray(face.decoder_landmarks, np.float64)))
        return align_into(photo, eyes, target, size).image, None
    aligned = align_into(photo, source, face.decoder_landmarks, size)
    return aligned.image, aligned.landmarks


def measure_photo(photo: np.ndarray, face: Any) -> dict[str, Any]:
    """The same measures on the raw photo: skin tone in the photo aligned into the normalized frame
    (:func:`photo_in_face_frame`), its region placed from the photo's own landmarks (the normalized face's where the
    detector gives no 68 points), and the region's colourfulness (Hasler & Suesstrunk); shape ratios from the
    detector's landmarks (when iBUG-68)."""
    return _photo_tone(photo, face)[0]


def _photo_tone(photo: np.ndarray, face: Any) -> tuple[dict[str, Any], SkinTone]:
    """:func:`measure_photo`'s values and the photo's :class:`SkinTone` they come from."""
    aligned, own = photo_in_face_frame(photo, face)
    tone = skin_tone(aligned, own if own is not None else face.decoder_landmarks)
    values: dict[str, Any] = {
        "ita_degrees": tone.ita,
        "L": tone.lightness,
        "b": tone.b_star,
        "colourfulness": tone.colourfulness,
    }
    if own is not None:
        values.update(shape_ratios(face.source_landmarks))
    return values, tone


# ------------------------------------------------------------------------------------------------ the app


def measure_both(photo: np.ndarray, face: Any) -> tuple[dict[str, Any], dict[str, Any], str]:
    """The normalized face's measures (:func:`measure_face`), the photo's (:func:`measure_photo`) and a note: a photo
    without colour in its skin region (:func:`has_colour`) has no skin tone, so the face's ITA, category, a* and b*
    are undefined (NaN, ``undefined``) and the note says why (before, a grey photo got the decoder's guessed colour
    as a confident category)."""
    values, (photo_values, tone) = measure_face(face.decoder_image, face.decoder_landmarks), _photo_tone(photo, face)
    if tone.coloured:
        return values, photo_values, ""
    values.update(ita_degrees=float("nan"), ita_category="undefined", a=float("nan"), b=float("nan"))
    return values, photo_values, NO_COLOUR


#: Below this colourfulness of the photo's skin region (Hasler & Suesstrunk; natural skin is 10+, a grey photo ~0, the
#: threshold ``facekit prepare`` rejects monochrome photos at) there is no skin tone to measure.
MIN_PHOTO_COLOURFULNESS = 5.0
#: Below this mean level (of 255) a skin region's colourfulness says little: a face some 3 stops under (a normally
#: exposed face's skin is at 100-200), whose colour :func:`has_colour` judges by its channels' differences instead.
DARK_REGION_LEVEL = 64
NO_COLOUR = "the photo has no colour: skin tone undefined (the normalized face's colour would be the decoder's guess)"


class FaceAttributes(UsesNormalizer):
    """The ``attributes`` app: skin tone (ITA) and face-shape ratios measured on the normalized face.

    ``measure(photo)`` normalizes one face (the largest, or the normalizer's ``face`` choice) and measures it (None
    when no face is found); ``apply(faces)`` (the App protocol) measures already normalized faces (a DecoderOutput
    with 68 landmarks).
    """

    photo_detail = False

    def measure_faces(self, photos: Sequence[Any], names: Sequence[str]) -> list[Any]:
        """:meth:`Normalizer.normalize_many` outcomes of ``photos`` (each (H, W, 3) uint8 RGB, anything
        :meth:`Normalizer.normalize` takes, or None: unreadable) with ``extras["attributes"]`` (normalized face)
        and ``extras["photo_attributes"]`` (the raw photo, :func:`measure_photo`) on those with a face."""
        from facekit.images import read_photos

        # Read here, as normalize_many reads them (helper-72: a path, grey or RGBA photo was normalized, then
        # measured unread).
        photos, names, unread = read_photos(photos, names, "measure_faces")
        outcomes = self.normalizer.normalize_many(photos, names)
        for index, reason in unread.items():
            outcomes[index].reason = reason  # why it could not be read (normalize_many saw only its None)
        for photo, outcome in zip(photos, outcomes, strict=True):
            if outcome.face is None or photo is None:
                continue
            try:
                values, photo_values, note = measure_both(photo, outcome.face)
            except FacekitError as error:  # one face that cannot be measured is its photo's status, not the batch's
                outcome.status, outcome.reason = "not_measured", str(error)
                continue
            outcome.reason = note or outcome.reason
            outcome.extras["attributes"], outcome.extras["photo_attributes"] = values, photo_values
        return list(outcomes)

    def measure(self, photo: Any, *, bgr: bool = False) -> dict[str, Any] | None:
        """Attributes of the face the normalizer takes (the largest by default) of ``photo`` (a path, PIL image or
        (H, W, 3) uint8 RGB; BGR with ``bgr=True``, as OpenCV reads it), or None."""
        from facekit.images import as_rgb

        outcome = self.measure_faces([as_rgb(photo, bgr=bgr)], ["photo"])[0]
        return outcome.extras.get("attributes")

    def apply(self, faces: Any) -> dict[str, Any]:
        """``faces`` (a DecoderOutput: images (B, 3, S, S) in [0, 1], landmarks (B, 68, 2)) -> ``ita_degrees``
        (B,), ``lab`` (B, 3) and each :data:`RATIOS` name (B,)."""
        from facekit.images import to_uint8_rgb

        if faces.landmarks is None:
            raise FacekitError("attributes need the decoder's predicted landmarks; this decoder gives none")
        points = (
            faces.landmarks.detach().float().cpu().numpy() if hasattr(faces.landmarks, "detach") else faces.landmarks
        )
        measured = [measure_face(image, p) for image, p in zip(to_uint8_rgb(faces.image), points, strict=True)]
        out: dict[str, Any] = {
            "ita_degrees": np.array([m["ita_degrees"] for m in measured]),
            "lab": np.array([[m["L"], m["a"], m["b"]] for m in measured]),
        }
        out.update({name: np.array([m[name] for m in measured]) for name in RATIOS})
        return out


# ------------------------------------------------------------------------------------------------ files

#: The per-photo file ``facekit attributes`` writes (a suffix of the photo's base name): the normalized face with the
#: skin region and landmarks drawn, beside the photo aligned into its frame with the same region.
ATTRIBUTE_OUTPUTS = ("_attributes.png",)
#: The tables ``facekit attributes`` writes into the output folder.
TABLES = ("attributes.csv", "attributes.json")
#: CSV columns after input, status and reason.
VALUE_COLUMNS = (
    "ita_degrees",
    "ita_category",
    "L",
    "a",
    "b",
    "skin_pixels",
    *RATIOS,
    "photo_ita_degrees",
    "photo_L",
    "photo_b",
    *(f"photo_{name}" for name in RATIOS),
    "output",
)


@dataclass
class AttributesRow:
    """One photo: ``status`` is ``ok``, ``no_face``, ``unreadable``, ``detector_error`` (the detector raised on it:
    ``reason`` says what) or ``not_measured`` (the skin region fell outside
    the image); ``values`` the measures (``photo_*``: the same
    on the raw photo)."""

    input: str
    status: str
    reason: str = ""
    values: dict[str, Any] = field(default_factory=dict)
    input_sha256: str = ""  # in attributes.json: what a rerun compares to reuse the row
    path: str = ""  # the input's absolute path when it was measured (in attributes.json; "": resolve ``input`` now)
    read: str = ""  # what reading did beyond decoding (facekit.batch.reading): a rerun reuses the row only if the same

    @classmethod
    def from_record(cls, photo: dict[str, Any]) -> AttributesRow:
        """A row read back from attributes.json's ``photos`` (null measures are NaN again)."""
        fixed = ("input", "status", "reason", "input_sha256", "path", "read")
        values = {k: _nan(v) for k, v in photo.items() if k not in fixed}
        return cls(
            str(photo["input"]),
            str(photo["status"]),
            str(photo.get("reason", "")),
            values,
            str(photo.get("input_sha256", "")),
            str(photo.get("path", "")),
            str(photo.get("read", "")),
        )

    def resolved(self) -> str:
        """The photo's absolute path: as recorded when it was measured, else ``input`` resolved now."""
        return self.path or str(Path(self.input).resolve())

    def csv_row(self) -> list[str]:
        def text(value: Any) -> str:
            return f"{value:.4f}" if isinstance(value, float) else "" if value is None else str(value)

        return [self.input, self.status, self.reason, *(text(self.values.get(c)) for c in VALUE_COLUMNS)]


def overlay(face: Any, photo: np.ndarray, scale: int = 2) -> np.ndarray:
    """The normalized face that was measured (the decoder's own, :attr:`NormalizedFace.decoder_image`) with its skin
    region outlined and landmarks dotted, beside the photo aligned into its frame with the region placed from the
    photo's own landmarks; ``scale`` times the normalized size."""
    from PIL import Image, ImageDraw

    aligned, own = photo_in_face_frame(photo, face)
    measured, measured_points = face.decoder_image, face.decoder_landmarks
    tiles = []
    for image, points in ((measured, measured_points), (aligned, own if own is not None else measured_points)):
        size = image.shape[0] * scale
        tile = Image.fromarray(image).resize((size, size), Image.Resampling.BICUBIC)
        draw = ImageDraw.Draw(tile)
        for polygon in skin_polygons(points).values():
            draw.polygon([(float(x), float(y)) for x, y in (polygon + 0.5) * scale], outline=(255, 255, 0))
        for x, y in (np.asarray(points) + 0.5) * scale:
            draw.ellipse((x - 1, y - 1, x + 1, y + 1), fill=(0, 255, 0))
        tiles.append(np.asarray(tile))
    return np.hstack(tiles)


#: The statuses a rerun reuses from an earlier table (same photo, model and face rule): what the model decided, not
#: what the disk or the folder did (``unreadable``, ``unwritable`` and ``exists`` are tried again).
REUSED = ("ok", "no_face", "not_measured")
#: The reason of a row taken over from the earlier tables.
EARLIER = "measured by an earlier run (same photo, model and face rule)"


def earlier_rows(out: Path, model_sha256: str | None, face: str = "largest") -> dict[str, dict[str, Any]] | None:
    """The photos of the tables an earlier ``facekit attributes`` run left in ``out`` with the model whose file has
    ``model_sha256`` taking the same ``face`` of a photo, by the input's absolute path (a rerun may name a photo by
    another path): {} when there are no tables, None when there are tables this run cannot resume (not facekit's,
    another model or face rule, or made before the model's sha256 was recorded)."""
    from facekit.batch import read_record

    if not any((out / name).exists() for name in TABLES):
        return {}
    record = read_record(out / TABLES[1])
    photos = record.get("photos")
    if model_sha256 is None or record.get("model_sha256") != model_sha256 or not isinstance(photos, list):
        return None
    if record.get("face") != face_record(face):  # tables made before --face took the largest (no key)
        return None
    rows = [p for p in photos if isinstance(p, dict) and "input" in p and "status" in p]
    return {AttributesRow.from_record(p).resolved(): p for p in rows}


def check_tables_clear(
    plan: Any, overwrite: bool = False, model_sha256: str | None = None, face: str = "largest"
) -> None:
    """Refuse an output folder whose table names are inputs (a photo given by a path that ends in attributes.csv),
    and (unless ``overwrite``) one that already holds tables this run cannot resume (:func:`earlier_rows`)."""
    from facekit.batch import check_fixed_outputs

    inputs = [planned.source for planned in plan.planned]
    resumable = not overwrite and earlier_rows(plan.out, model_sha256, face) is not None
    check_fixed_outputs(plan.out, TABLES, inputs, overwrite or resumable, "facekit attributes")


def attributes_files(
    plan: Any,
    measurer: FaceAttributes,
    on_row: Callable[[AttributesRow], None] | None = None,
    overwrite: bool = False,
    model_sha256: str | None = None,
) -> list[AttributesRow]:
    """Measure every photo of ``plan`` (``facekit.batch.plan_folder(..., outputs=ATTRIBUTE_OUTPUTS)``) a batch at a
    time: OUT/NAME_attributes.png per photo with a face, and OUT/attributes.csv and OUT/attributes.json with the
    rows so far, rewritten after every batch.
    A photo that cannot be read, has no face, or whose picture cannot be written gets its status row; the others go
    on. Files already there are left alone unless ``overwrite`` (the tables: a FacekitError before any work), except
    an earlier run's tables made with the same model (``model_sha256``, the model file's; default: the measurer's)
    and face rule (the measurer's ``face``): the run resumes, each unchanged photo (same sha256) keeps its earlier
    row and the earlier tables' other photos stay in them."""
    from facekit.locks import exclusive
    from facekit.models import sha256_file

    if model_sha256 is None:
        try:
            model_sha256 = sha256_file(Path(measurer.normalizer.meta["source"]))
        except (OSError, KeyError, TypeError):  # a normalizer not loaded from a file: its tables cannot be resumed
            model_sha256 = None
    check_tables_clear(plan, overwrite, model_sha256, measurer.face)
    with exclusive(plan.out, "attributes"):
        return _measure_locked(plan, measurer, on_row, overwrite, model_sha256)


def _reused(
    planned: Any, earlier: dict[str, Any] | None, sha: str | None, read: str, picture: Path
) -> AttributesRow | None:
    """The earlier run's row of ``planned`` when it can stand: a status in :data:`REUSED`, the same input sha256 and
    reading (``read``: a P3 photo measured before profiles were converted is measured again), and (``ok``) its
    ``picture`` (where this run would write it) still there. The row's output is named as this run names it: the
    earlier run may have been started from another working folder, or the folder moved since."""
    if earlier is None or sha is None or earlier.get("input_sha256") != sha or earlier["status"] not in REUSED:
        return None
    if earlier.get("read", "") != read:
        return None
    row = AttributesRow.from_record(earlier)
    if row.status == "ok":
        found = _own_picture(planned.source, picture, Path(str(row.values.get("output", ""))))
        if found is None:
            return None
        row = replace(row, values={**row.values, "output": found})
    return replace(row, input=str(planned.source), reason=EARLIER if row.status == "ok" else row.reason)


def _own_picture(source: Path, planned: Path, recorded: Path) -> str | None:
    """The absolute path of ``source``'s picture from an earlier run: where this run would write it (``planned``),
    else where the row says (``recorded``, relative to the folder that run started in), whichever is there and marked
    as made from ``source`` (:data:`facekit.batch.OUTPUT_MARK`; a picture made before the mark counts where the row
    names it, or under its name where this run would write it). Names are given by order: another photo's picture
    may stand where this one's would go."""
    from facekit.batch import OUTPUT_MARK, output_mark, png_text

    mine = os.path.realpath(output_mark(source)[OUTPUT_MARK])  # by the file, however the photo was named
    for candidate in (planned, recorded):
        if not candidate.name or not candidate.is_file():
            continue
        mark = png_text(candidate).get(OUTPUT_MARK)
        if (isinstance(mark, str) and os.path.realpath(mark) == mine) or (
            mark is None and candidate.name == recorded.name
        ):
            return os.path.abspath(candidate)
    return None


#: The PNG text key of a picture's model file sha256: a picture this photo and model made whose row never reached
#: the tables (a run interrupted between the two) is measured again rather than called someone else's file.
MODEL_MARK = "facekit-model-sha256"


def _unrecorded_own_picture(source: Path, picture: Path, model_sha256: str | None) -> bool:
    """Whether ``picture`` is ``source``'s own, made with this model (:data:`MODEL_MARK`) though no row holds it."""
    from facekit.batch import png_text

    if model_sha256 is None or png_text(picture).get(MODEL_MARK) != model_sha256:
        return False
    return _own_picture(source, picture, Path()) is not None


def _measure_locked(
    plan: Any,
    measurer: FaceAttributes,
    on_row: Callable[[AttributesRow], None] | None,
    overwrite: bool,
    model_sha256: str | None,
) -> list[AttributesRow]:
    from facekit.batch import (
        exists_reason,
        input_sha256,
        occupied,
        output_mark,
        png_bytes,
        reading,
        remove_temporaries,
        write_files,
    )
    from facekit.errors import stops_held
    from facekit.images import load_rgb

    remove_temporaries(plan.out, plan.planned)
    earlier = {} if overwrite else (earlier_rows(plan.out, model_sha256, measurer.face) or {})
    rows: list[AttributesRow] = []
    given = {str(Path(planned.source).resolve()) for planned in plan.planned}
    # The earlier tables' photos this run was not given stay in the tables.
    kept = [AttributesRow.from_record(photo) for name, photo in earlier.items() if name not in given]
    reached: set[str] = set()  # the photos given whose rows are in `rows`

    def tables() -> None:
        # The earlier rows of the photos given but not reached yet stay too: a stop before their turn leaves them
        # to the rerun (before: the first batch's tables dropped them, and the rerun measured them again).
        waiting = [AttributesRow.from_record(photo) for name, photo in earlier.items() if name in given - reached]
        write_tables([*rows, *kept, *waiting], plan.out, measurer, model_sha256)

    written = -1  # rows in the tables on disk (none yet)
    for start in range(0, len(plan.planned), plan.batch_size):
        batch, hashes = [], []
        for planned in plan.planned[start : start + plan.batch_size]:
            reached.add(str(Path(planned.source).resolve()))
            sha, _ = input_sha256(planned.source)
            read = reading(planned.source).get("read", "")
            (picture,) = planned.outputs(plan.out, ATTRIBUTE_OUTPUTS)
            recorded = earlier.get(str(Path(planned.source).resolve()))
            reused = _reused(planned, recorded, sha, read, picture)
            if reused is not None:
                rows.append(reused)
            elif (
                (taken := occupied(planned.outputs(plan.out, ATTRIBUTE_OUTPUTS)))
                and not overwrite
                # a picture no row owns (only an 'ok' row has one; a photo changed since its ok row keeps 'exists')
                and not (
                    (recorded is None or recorded.get("status") != "ok")
                    and _unrecorded_own_picture(planned.source, picture, model_sha256)
                )
            ):
                rows.append(AttributesRow(str(planned.source), "exists", exists_reason(taken[0])))
            else:
                batch.append(planned)
                hashes.append((sha or "", read))
                continue
            if on_row is not None:
                on_row(rows[-1])
        if not batch:
            continue
        loaded = [load_rgb(planned.source) for planned in batch]
        outcomes = measurer.measure_faces([image for image, _ in loaded], [p.source.stem for p in batch])
        measured: list[AttributesRow] = []
        for planned, (photo, why), outcome, (sha, read) in zip(batch, loaded, outcomes, hashes, strict=True):
            name = str(planned.source)
            if photo is None:
                row = AttributesRow(name, "unreadable", why)
            elif "attributes" not in outcome.extras:
                row = AttributesRow(name, outcome.status, outcome.reason or NO_FACE, input_sha256=sha, read=read)
            else:
                (target,) = planned.outputs(plan.out, ATTRIBUTE_OUTPUTS)
                marks = output_mark(planned.source) | ({MODEL_MARK: model_sha256} if model_sha256 else {})
                picture = png_bytes(overlay(outcome.face, photo), marks)
                failed = write_files([(target, picture)], plan.out)
                values = dict(outcome.extras["attributes"])
                values.update({f"photo_{k}": v for k, v in outcome.extras["photo_attributes"].items()})
                values["output"] = "" if failed else os.path.abspath(target)  # the same from any working folder
                row = (
                    AttributesRow(name, "unwritable", failed)
                    if failed
                    else AttributesRow(name, "ok", outcome.reason or "", values=values, input_sha256=sha, read=read)
                )
            rows.append(row)
            measured.append(row)
        # After every batch: a killed run keeps the rows it finished. Its rows are told once they are in the tables,
        # a stop held meanwhile (before: told as measured, so a stop before the tables counted rows as kept that the
        # rerun measured again).
        with stops_held():
            tables()
            written = len(rows)
            for row in measured:
                if on_row is not None:
                    on_row(row)
    if written != len(rows):  # rows since the last write (photos reused, or whose outputs were already there)
        tables()
    return rows


def write_tables(
    rows: list[AttributesRow], out: Any, measurer: FaceAttributes | None = None, model_sha256: str | None = None
) -> None:
    """OUT/attributes.csv (a row per photo, :data:`VALUE_COLUMNS`) and OUT/attributes.json (the rows with their
    input's sha256, the model and its file's sha256, what every column means)."""
    import json

    from facekit.batch import csv_bytes, finite_or_null, write_atomic

    write_atomic(
        out / TABLES[0], csv_bytes(["input", "status", "reason", *VALUE_COLUMNS], map(AttributesRow.csv_row, rows)), out
    )
    model = None
    if measurer is not None and measurer._normalizer is not None:
        model = measurer.normalizer.meta.get("source")
    record = {
        "model": model,
        "model_sha256": model_sha256,
        "face": face_record(measurer.face if measurer is not None else "largest"),  # which face of a photo (--face)
        "skin_region": "both cheeks (lower eyelid - nose wing - mouth corner - jaw polygon shrunk 40 % towards its "
        "centre) and a forehead patch (0.8 x 0.3 interocular distances, 0.15 above the brows), from the decoder's "
        "predicted landmarks; median CIELAB (D65) of its pixels",
        "ita": "atan((L* - 50) / b*) in degrees; categories: " + ", ".join(f"{n} > {v:g}" for n, v in ITA_CATEGORIES),
        "ratios": {name: description for name, (_, _, description) in RATIOS.items()},
        "photo_columns": "photo_*: the same measures on the photo aligned into the normalized frame (skin region from "
        "the photo's own landmarks) and on the detector's landmarks",
        "photos": [
            {"input": r.input, "path": r.resolved(), "status": r.status, "reason": r.reason, **r.values}
            | ({"input_sha256": r.input_sha256} if r.input_sha256 else {})
            | ({"read": r.read} if r.read else {})
            for r in rows
        ],
    }
    # An undefined ITA is null: the file stays JSON.
    text = json.dumps(finite_or_null(record), indent=2, allow_nan=False)
    write_atomic(out / TABLES[1], (text + "\n").encode(), out)


def _nan(value: Any) -> Any:
    """A measure read back from attributes.json: null (an undefined ITA, written by
    :func:`facekit.batch.finite_or_null`) is NaN again."""
    return float("nan") if value is None else value
