"""Landmark schemes are read by meaning: a detector whose points an encoder cannot align from is refused, a
mislabelled scheme fails conformance, and 5 points are never guessed to be dlib's eye corners."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
import torch

import facekit
from facekit.align import check_alignable, eye_centres, template_points
from facekit.errors import FacekitError
from facekit.registry import ComponentSpec, NoParams
from facekit.testing import check_decoder, check_detector, real_face, run_check
from facekit.types import DecoderOutput, FaceDetection, LandmarkScheme, ModelCard, WeightsSource


def test_five_points_need_a_scheme() -> None:
    five = np.array([[10.0, 10.0], [30.0, 10.0], [20.0, 20.0], [12.0, 30.0], [28.0, 30.0]])
    with pytest.raises(ValueError, match="without a scheme"):
        eye_centres(five)
    left, right = eye_centres(five, "eyes-nose-mouth5")
    assert left.tolist() == [10.0, 10.0] and right.tolist() == [30.0, 10.0]
    left, right = eye_centres(five, "dlib5")  # corners 0-1 and 2-3
    assert left.tolist() == [16.0, 25.0] and right.tolist() == [20.0, 10.0]  # image-left first
    with pytest.raises(ValueError, match="has 68 points"):
        eye_centres(five, "ibug68")
    assert template_points(five, "eyes-nose-mouth5", "eyes-nose-mouth5").tolist() == five.tolist()
    with pytest.raises(ValueError, match="needs ibug68 or eyes-nose-mouth5"):
        template_points(five, "eyes-nose-mouth5", "dlib5")


def test_an_unknown_scheme_is_named() -> None:
    with pytest.raises(ValueError, match=r"yunet5.*known schemes: ibug68, dlib5, eyes-nose-mouth5, eyes2"):
        LandmarkScheme.parse("yunet5", "detector x")


def test_the_default_model_refuses_a_detector_it_cannot_align_from(shipped_normalizer: Any) -> None:
    """Before: YuNet's eyes-nose-mouth5 points were read as dlib's eye corners and the default model passed dlib's
    identity test for 0 % of photos, without an error."""
    from facekit.normalize import Normalizer

    shipped = shipped_normalizer
    yunet = facekit.load_component("detector", "yunet")
    with pytest.raises(FacekitError, match=r"eyes-nose-mouth5 landmarks.*only from dlib5, ibug68.*'dlib'"):
        Normalizer(shipped.decoder, shipped.encoder, yunet, shipped.meta)
    five = facekit.load_component("detector", "dlib-5pt")  # dlib's chips are defined for its 5 points too
    face = Normalizer(shipped.decoder, shipped.encoder, five, shipped.meta).normalize(real_face().image.copy())
    assert face.image.shape == (112, 112, 3)


def test_encoders_with_templates_accept_what_holds_their_points() -> None:
    sface = facekit.load_component("encoder", "sface")
    check_alignable(sface, "eyes-nose-mouth5")
    check_alignable(sface, "ibug68")
    with pytest.raises(FacekitError, match="dlib5 landmarks"):
        check_alignable(sface, "dlib5")
    with pytest.raises(FacekitError, match="does not declare"):
        check_alignable(sface, None)


class Mislabelled:
    """YuNet's points under dlib's 5-point label: right count, wrong meaning."""

    card = ModelCard(landmarks=5, landmark_scheme="dlib5", weights=(WeightsSource("none", None, "MIT"),))

    def __init__(self) -> None:
        self.inner = facekit.load_component("detector", "yunet")

    def detect_array(self, image: np.ndarray) -> list[FaceDetection]:
        return [FaceDetection(f.box, f.score, f.landmarks, "dlib5") for f in self.inner.detect_array(image)]


def test_conformance_catches_a_mislabelled_scheme() -> None:
    """Before: conformance ran on noise, found no face and never looked at boxes, landmarks or their scheme."""
    spec = ComponentSpec("mislabelled", lambda _p: Mislabelled(), NoParams, card=Mislabelled.card)
    run_check("detector", spec, "real_face")  # shapes and count are fine
    with pytest.raises(AssertionError, match="not in that scheme"):
        run_check("detector", spec, "scheme_semantics")


def test_a_detection_that_contradicts_its_card_is_refused() -> None:
    from facekit.normalize import check_detection

    dlib = facekit.load_component("detector", "dlib")
    face = dlib.detect_array(real_face().image.copy())[0]
    check_detection(dlib, face)
    wrong = FaceDetection(face.box, face.score, face.landmarks, "eyes-nose-mouth5")
    with pytest.raises(FacekitError, match="card declares scheme 'ibug68'"):
        check_detection(dlib, wrong)


def test_a_detection_with_landmarks_that_are_not_finite_costs_that_photo_only() -> None:
    """Before: NaN landmarks passed the card check and the normalizer ended in numpy's LinAlgError ("SVD did not
    converge") from inside the alignment, naming neither the detector nor the fix; then (stop 51) a FacekitError that
    stopped the whole batch for one photo the detector failed on numerically. Now that photo is a detector_error row
    that names the detector, and the others are normalized."""
    from facekit.normalize import DETECTOR_ERROR, check_detection, detect_one

    dlib = facekit.load_component("detector", "dlib")
    face = dlib.detect_array(real_face().image.copy())[0]
    poisoned = real_face().image.copy()
    poisoned[0, 0] = (1, 2, 3)  # the photo this detector fails on

    class NaNPoints:
        card = dlib.card

        def detect_array(self, image: np.ndarray) -> list[FaceDetection]:
            bad = tuple(image[0, 0]) == (1, 2, 3)
            points = np.full_like(face.landmarks, np.nan) if bad else face.landmarks
            return [FaceDetection(face.box, face.score, points, "ibug68")]

    outcomes, pending = detect_one(NaNPoints(), [real_face().image, poisoned], ["good.jpg", "bad.jpg"])
    assert [o.status for o in outcomes] == ["ok", DETECTOR_ERROR]
    assert "NaNPoints" in outcomes[1].reason and "not finite" in outcomes[1].reason
    assert [index for index, _, _ in pending] == [0]
    wrong = FaceDetection(face.box, face.score, np.full_like(face.landmarks, np.inf), "ibug68")
    with pytest.raises(FacekitError, match="landmarks that are not finite"):  # a face handed over directly
        check_detection(dlib, wrong)


class LargestLast:
    """dlib's detections in left-to-right order instead of largest first."""

    card = facekit.get_registry("detector").get("dlib").card

    def __init__(self) -> None:
        self.inner = facekit.load_component("detector", "dlib")

    def detect_array(self, image: np.ndarray) -> list[FaceDetection]:
        return sorted(self.inner.detect_array(image), key=lambda f: f.box[0])


def test_conformance_catches_faces_out_of_order() -> None:
    spec = ComponentSpec("largest-last", lambda _p: LargestLast(), NoParams, card=LargestLast.card)
    with pytest.raises(AssertionError, match="not largest first"):
        check_detector(spec)


class InferenceOnly(torch.nn.Module):
    """Passed the old check_decoder (decode + feature_size) and then failed in training."""

    feature_size = 4

    def __init__(self, _params: Any = None) -> None:
        super().__init__()
        self.linear = torch.nn.Linear(4, 3 * 8 * 8)

    def decode(self, features: torch.Tensor) -> DecoderOutput:
        return DecoderOutput(image=torch.sigmoid(self.linear(features)).view(-1, 3, 8, 8))


def test_conformance_says_what_training_needs() -> None:
    spec = ComponentSpec("inference-only", InferenceOnly)
    with pytest.raises(
        AssertionError,
        match="lacks \\['image_size', 'warper', 'mean_landmarks', 'set_mean_landmarks', 'set_feature_stats'\\]",
    ):
        check_decoder(spec)


def test_eval_judges_photos_from_a_five_point_detector(shipped_normalizer: Any, data_root: Any, tmp_path: Any) -> None:
    """Before: evaluate_normalizer cropped the judge's input from the detector's points without their scheme, so a
    model run behind dlib's 5-point detector stopped with a ValueError (5 points without a scheme)."""
    from facekit.data.sources import london_photos
    from facekit.evaluate import Judge, evaluate_normalizer
    from facekit.normalize import Normalizer

    five = facekit.load_component("detector", "dlib-5pt")
    normalizer = Normalizer(shipped_normalizer.decoder, shipped_normalizer.encoder, five, shipped_normalizer.meta)
    photos = london_photos(data_root, "smiling_front")[:3]
    metrics = evaluate_normalizer(normalizer, photos, [Judge("dlib-resnet", normalizer.encoder)], tmp_path)
    assert metrics["normalized"] == 3
