"""How good is a normalized face, judged as a user would judge it (``benchmarks/quality.py`` reports these).

- **Judges with their own pipelines**: a judge is a recognition network *with its own detector and alignment*, run
  the same way on the photo and on the normalized face. Nothing of the normalizer reaches the judge: not the decoder's
  predicted landmarks (a crop made from them flatters the output, since the decoder placed the face where its own
  landmarks say), not its crop. A face the judge's detector cannot find in the output is a fail.
  The detector is the one the encoder's card names (``ModelCard.detector``): ``sface``: OpenCV's YuNet + SFace's
  5-point template (never used in training); ``dlib-resnet``: dlib's detector (HOG, its CNN where HOG finds none) + 68
  landmarks + dlib's chip (the training encoder: a biased judge).
- **Detail**: mean |Laplacian| of the luminance inside the output's landmark hull, divided by the same for the input
  photo aligned into the output frame by a least-squares similarity on the 68 landmarks (1.0 = as much fine detail as
  the photo at the output's resolution).
- **Background**: mean |Laplacian| (grey levels) in the side strips beside the face (x < 12 % or > 88 % of the width,
  y from 35 % to 95 %), outside the landmark hull dilated by S/14 px. A plain studio background is below 1.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from facekit.errors import FacekitError
from facekit.types import frozen_encoder

#: Side strips of the background measure, as fractions of the output size.
STRIP_X = (0.12, 0.88)
STRIP_Y = (0.35, 0.95)


def abs_laplacian(image: np.ndarray) -> np.ndarray:
    """|Laplacian| (4-neighbour, grey levels) of the luminance of an (H, W, 3) uint8 RGB image, (H, W) float32."""
    import cv2

    grey = cv2.cvtColor(np.ascontiguousarray(image), cv2.COLOR_RGB2GRAY).astype(np.float32)
    return np.abs(cv2.Laplacian(grey, cv2.CV_32F, ksize=1))


def hull_mask(landmarks: np.ndarray, size: int, dilate_px: float = 0.0) -> np.ndarray:
    """(S, S) bool: inside the convex hull of (K, 2) ``landmarks``, grown by ``dilate_px`` pixels."""
    import cv2

    from facekit.data.poisson import face_mask

    mask = face_mask(landmarks, size, size, blur_px=0.0) > 0.5
    if dilate_px > 0:
        radius = round(dilate_px)
        kernel = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * radius + 1, 2 * radius + 1))
        mask = cv2.dilate(mask.astype(np.uint8), kernel) > 0
    return np.asarray(mask)


def detail_ratio(
    output: np.ndarray, output_landmarks: np.ndarray, photo: np.ndarray, photo_landmarks: np.ndarray
) -> float:
    """Fine detail of the normalized face relative to its photo (see the module docstring).

    ``output`` (S, S, 3) uint8 with its (68, 2) landmarks; ``photo`` (H, W, 3) uint8 with the detector's (68, 2)."""
    from facekit.align import align_into

    size = output.shape[0]
    aligned = align_into(photo, photo_landmarks, output_landmarks, size).image
    inside = hull_mask(output_landmarks, size)
    reference = float(abs_laplacian(aligned)[inside].mean())
    return float(abs_laplacian(output)[inside].mean()) / max(reference, 1e-6)


def background_noise(output: np.ndarray, output_landmarks: np.ndarray) -> float:
    """Mean |Laplacian| in grey levels in the side strips beside the face of an (S, S, 3) uint8 output."""
    size = output.shape[0]
    ys, xs = np.mgrid[0:size, 0:size] / size
    strips = ((xs < STRIP_X[0]) | (xs > STRIP_X[1])) & (ys >= STRIP_Y[0]) & (ys <= STRIP_Y[1])
    region = strips & ~hull_mask(output_landmarks, size, dilate_px=size / 14)
    if not region.any():
        return float("nan")
    return float(abs_laplacian(output)[region].mean())


@dataclass
class OwnPipelineJudge:
    """A recognition network with its own detector and alignment (see the module docstring).

    ``embed(images)`` -> (N, D) float32 with NaN rows for images where its detector finds no face. ``face``: which
    face of an image it judges (:func:`facekit.normalize.choose_face`): set it to the normalizer's, so that judge and
    normalizer take the same person from a photo with several faces."""

    name: str
    detector: Any
    encoder: Any
    face: str = "largest"
    #: The params the encoder was built with (``facenet``'s ``variant``, ...), for the record.
    params: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        from facekit.types import check_face_choice

        check_face_choice(self.face)  # refused when built, not at the first crop

    def __getstate__(self) -> dict[str, Any]:
        """Copied or pickled without its turn lock (:meth:`embed`; :func:`facekit.normalize.without_turn`)."""
        from facekit.normalize import without_turn

        return without_turn(self)

    @classmethod
    def build(cls, name: str, face: str = "largest", params: Mapping[str, Any] | None = None) -> OwnPipelineJudge:
        """The encoder ``name`` (built with ``params``) with the detector its card names (``ModelCard.detector``) and
        the card's alignment."""
        import facekit
        from facekit.align import check_alignable
        from facekit.types import check_face_choice

        check_face_choice(face)  # before loading anything
        encoder = frozen_encoder(facekit.load_component("encoder", name, **dict(params or {})))
        if not encoder.card.detector:
            raise FacekitError(f"encoder {name!r} names no detector of its own (ModelCard.detector): it cannot judge")
        detector = facekit.load_component("detector", encoder.card.detector)
        check_alignable(encoder, detector.card.landmark_scheme, f"detector {encoder.card.detector!r}")
        return cls(name, detector, encoder, face, dict(params or {}))

    @property
    def card(self) -> Any:
        return self.encoder.card

    def crop(self, image: np.ndarray, near: Sequence[float] | None = None) -> np.ndarray | None:
        """The judge's aligned input for the face :attr:`face` chooses in ``image`` (H, W, 3) uint8 RGB, or None (no
        face, or the judge's detector raised on it). With ``near``, an (x0, y0, x1, y1) box of another detector (the
        face a normalizer took): the judge's detection that overlaps it most, or None when none does. Two detectors
        box one face differently, so with two faces of nearly one size the :attr:`face` rule alone can take the
        other person."""
        from facekit.align import encoder_input_transform, warp_image
        from facekit.normalize import choose_face, detect_photo, overlapping, turn_of

        with turn_of(self):  # (see embed)
            faces, _ = detect_photo(self.detector, image, f"judge {self.name}")  # raised: no face (logged)
        if not faces:
            return None
        face = faces[choose_face(faces, image.shape, self.face)] if near is None else overlapping(faces, near)
        if face is None:
            return None  # the judge does not find that face: no score, rather than another person's
        points = np.asarray(face.landmarks, np.float64)
        width, height = self.card.input_size
        transform = encoder_input_transform(self.encoder, points, face.scheme)
        # Black where the crop reaches past the image, as the judges' own alignments leave it (OpenCV's alignCrop,
        # dlib's face chips): helper-119, the SFace crop of about 4 in 10 normalized faces (a tight 112 px frame)
        # reaches past its edge, and replicated edge pixels there moved their scores from OpenCV's own by up to 0.07.
        return warp_image(image, transform, (height, width), border="black")

    def embed(
        self,
        images: list[np.ndarray | None],
        batch_size: int = 32,
        near: Sequence[Sequence[float] | None] | None = None,
    ) -> np.ndarray:
        """(N, D) float32 embeddings, NaN rows where no face is found; ``near``: per image, the box of the face to
        judge (:meth:`crop`) or None for the :attr:`face` rule. Threads sharing a judge (an Explorer's, which
        threads may share as they share its Normalizer) take turns: its detector and encoder hold state (YuNet sets
        its input size, then detects; helper-116: four threads interpolating with one Explorer got other scores
        than one thread in four of twelve interpolations)."""
        import torch

        from facekit.normalize import turn_of

        boxes = list(near) if near is not None else [None] * len(images)
        if len(boxes) != len(images):
            raise FacekitError(f"judge {self.name}: {len(boxes)} boxes for {len(images)} images")
        crops = [None if image is None else self.crop(image, box) for image, box in zip(images, boxes, strict=True)]
        found = [i for i, c in enumerate(crops) if c is not None]
        out = np.full((len(images), int(self.card.embedding_size)), np.nan, np.float32)
        with torch.no_grad(), turn_of(self):
            for start in range(0, len(found), batch_size):
                rows = found[start : start + batch_size]
                batch = (
                    torch.from_numpy(np.stack([np.asarray(crops[i]) for i in rows])).permute(0, 3, 1, 2).float() / 255.0
                )
                out[rows] = self.encoder.embed(batch).float().numpy()
        return out

    def scores(self, a: np.ndarray, b: np.ndarray) -> np.ndarray:
        """Row-wise :meth:`facekit.evaluate.Judge.distance` (cosine similarity or Euclidean distance, by the card),
        the worst value where a row is NaN (no face found)."""
        from facekit.evaluate import card_distance

        values = card_distance(self.card, a, b)
        return np.where(np.isnan(values), self.worst, values)

    @property
    def worst(self) -> float:
        return -1.0 if self.higher_is_same else float("inf")

    @property
    def higher_is_same(self) -> bool:
        return bool(self.card.distance == "cosine")

    def passes(self, values: np.ndarray) -> np.ndarray:
        from facekit.evaluate import card_passes

        return np.asarray(card_passes(self.card, values))


def identity_figures(
    judge: OwnPipelineJudge, inputs: np.ndarray, outputs: np.ndarray, has_output: np.ndarray
) -> dict[str, Any]:
    """Identity kept under ``judge``: (N, D) embeddings of the photos (``inputs``) and of the outputs (NaN rows where
    the judge found no face), ``has_output`` (N,) whether a method produced an output. Photos whose input the judge
    cannot find are not judged; an output without a face counts as a fail (the worst score)."""
    judged = ~np.isnan(inputs[:, 0])
    scores = judge.scores(inputs[judged], outputs[judged])
    return {
        "judged": int(judged.sum()),
        "not_judged_input_without_face": int((~judged).sum()),
        "output_without_face": int((np.isnan(outputs[:, 0]) & has_output & judged).sum()),
        "pass_rate": round(float(judge.passes(scores).mean()), 4),
        "median": round(float(np.median(scores)), 4),
        "metric": "cosine similarity" if judge.higher_is_same else "euclidean distance",
        "threshold": judge.card.threshold,
    }


def people_figures(
    judge: OwnPipelineJudge, people: Sequence[str], inputs: np.ndarray, outputs: np.ndarray
) -> dict[str, Any]:
    """How distinct different people's outputs stay under ``judge``, beside their photos': (N, D) embeddings of the
    photos (``inputs``) and outputs (NaN rows: no face found or no output), ``people`` (N,) who each photo shows.

    - ``different_people``: the judge's mean score between the outputs of different people, and
      ``different_people_photos`` the same between their photos, both over the photos where the judge finds a face
      in photo and output alike (the same pairs): normalized faces that look alike push the first towards "same"
      (higher cosine, lower distance); None without such a pair;
    - ``rank1``: of the photos the judge finds a face in, the share whose output scores best against a photo of the
      same person among all those photos, its own photo included (identification in the set; an output without a
      face is a miss). With one photo per person (HELEN) the only right answer is the output's own photo.
    """
    from facekit.evaluate import card_distance

    who = np.asarray(people)
    judged = np.flatnonzero(~np.isnan(inputs[:, 0]))
    both = judged[~np.isnan(outputs[judged, 0])]
    first, second = np.triu_indices(len(both), k=1)
    different = who[both[first]] != who[both[second]]
    pairs = both[first[different]], both[second[different]]

    def mean_between_people(embeddings: np.ndarray) -> float | None:
        if not different.any():
            return None
        return round(float(card_distance(judge.card, embeddings[pairs[0]], embeddings[pairs[1]]).mean()), 4)

    hits = 0
    for i in both:
        scores = card_distance(judge.card, np.repeat(outputs[i][None], len(judged), 0), inputs[judged])
        best = judged[int(np.argmax(scores) if judge.higher_is_same else np.argmin(scores))]
        hits += bool(who[best] == who[i])
    return {
        "different_people": mean_between_people(outputs),
        "different_people_photos": mean_between_people(inputs),
        "rank1": round(hits / len(judged), 4) if len(judged) else None,
        "judged": len(judged),
    }
