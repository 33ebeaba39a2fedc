"""Rules of the core that a manual mutation test (helper-80, stop 43) could break without any test failing: each test
here fails when its rule is broken as it was then (e.g. `1 + cos` for the identity loss, `yaw` for `abs(yaw)`)."""

from __future__ import annotations

import shutil
import types
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch


def test_the_warp_keeps_every_boundary_point_still() -> None:
    """Zero flow at each of tfa's boundary points, for 1 (the corners alone), 2 and 3 per edge (61 px: every point
    on a pixel)."""
    from facekit.warp import _with_boundary, boundary_control_points, sparse_image_warp

    generator = torch.Generator().manual_seed(0)
    source = torch.rand(1, 10, 2, generator=generator, dtype=torch.float64) * 30 + 15
    destination = source + 4 * torch.randn(1, 10, 2, generator=generator, dtype=torch.float64)
    image = torch.rand(1, 1, 61, 61, generator=generator, dtype=torch.float64)
    for n in (1, 2, 3):
        assert _with_boundary(source, destination, 61, 61, n)[0].shape[1] == 10 + 4 * n
        _, flow = sparse_image_warp(image, source, destination, boundary_points=n)
        assert flow[0, 30, 30].abs().max() > 0.1  # (the face moves)
        for x, y in boundary_control_points(61, 61, n, torch.float64).tolist():
            assert x == round(x) and y == round(y)
            assert flow[0, round(y), round(x)].abs().max() < 1e-6, (n, x, y)


def test_the_identity_loss_is_one_minus_cosine() -> None:
    from facekit.losses import identity_term

    e = torch.tensor([[1.0, 2.0, 3.0]])
    other = torch.tensor([[-2.0, 1.0, 0.0]])  # orthogonal to e
    assert float(identity_term(e, e)) == pytest.approx(0.0, abs=1e-6)
    assert float(identity_term(e, -e)) == pytest.approx(2.0)
    assert float(identity_term(e, other)) == pytest.approx(1.0)


def terms_of(image_size: int, offset: float, weights: Any) -> dict[str, torch.Tensor]:
    from facekit.losses import losses
    from facekit.types import DecoderOutput

    landmarks = torch.zeros(2, 68, 2)
    out = DecoderOutput(
        image=torch.zeros(2, 3, 8, 8), landmarks=landmarks + offset, texture=torch.full((2, 3, 8, 8), 0.25)
    )
    batch = {"landmarks": landmarks, "texture": torch.zeros(2, 3, 8, 8), "image": torch.zeros(2, 3, 8, 8)}
    return losses(out, batch, None, weights, image_size)


def test_the_landmark_loss_is_in_pixels_of_a_100_px_image_and_each_term_takes_its_weight() -> None:
    from facekit.recipe import LossWeights

    weights = LossWeights(landmark=0.1, texture=1.0, identity=0.0)
    terms = terms_of(200, 2.0, weights)  # 2 px of 200 = 1 px of 100: MSE 1
    assert float(terms["landmark"]) == pytest.approx(1.0)
    assert float(terms["texture"]) == pytest.approx(0.25)
    assert float(terms["loss"]) == pytest.approx(0.1 * 1.0 + 0.25)


def test_five_point_templates_take_the_eyes_nose_tip_and_mouth_corners_in_order() -> None:
    from facekit.align import eye_centres, template_points

    points = np.random.default_rng(0).uniform(0, 100, (68, 2))
    five = template_points(points, "eyes-nose-mouth5")
    left, right = eye_centres(points)
    np.testing.assert_allclose(five, np.stack([left, right, points[30], points[48], points[54]]))


def test_pair_rates_count_what_the_judge_passes_and_rejects() -> None:
    from facekit.evaluate import pair_rates

    judge = types.SimpleNamespace(passes=lambda values: np.asarray(values) < 0.6)  # a distance judge
    rates = pair_rates(judge, np.array([0.1, 0.7, 0.2]), np.array([0.9, 0.8, 0.5, 0.95]))
    assert rates == {"same_person_pass_rate": pytest.approx(2 / 3, abs=1e-4), "different_people_reject_rate": 0.75}
    assert pair_rates(judge, np.array([]), np.array([])) == {
        "same_person_pass_rate": None,
        "different_people_reject_rate": None,
    }


def test_the_prepare_filters_reject_each_way() -> None:
    from facekit.data.quality import FaceMeasures, rejection_reason
    from facekit.recipe import PrepareSection

    rules = PrepareSection()
    good = {"interocular_px": 60, "yaw": 0, "pitch": rules.frontal_pitch_deg, "roll": 0, "mouth_open": 0}
    good |= {"mouth_width": 0.8, "sharpness": 100, "colourfulness": 20}
    assert rejection_reason(FaceMeasures(**good), rules) is None
    for yaw in (-rules.max_yaw_deg - 1, rules.max_yaw_deg + 1):  # turned either way
        assert (rejection_reason(FaceMeasures(**{**good, "yaw": yaw}), rules) or "").startswith("pose (yaw")
    smile = rejection_reason(FaceMeasures(**{**good, "mouth_width": rules.max_mouth_width + 0.01}), rules)
    assert (smile or "").startswith("expression (smile")
    assert rejection_reason(FaceMeasures(**{**good, "mouth_width": rules.max_mouth_width - 0.01}), rules) is None


def test_the_texture_weight_means_the_same_at_any_texture_size() -> None:
    """Textures constant over 8x8 blocks lose nothing when downsampled to 8 px: the same neighbours either way."""
    from facekit.data.augment import nearest_neighbours

    rng = np.random.default_rng(2)
    blocks = rng.integers(0, 256, (12, 8, 8, 3), dtype=np.uint8)
    textures = blocks.repeat(8, axis=1).repeat(8, axis=2)  # 64 px
    landmarks = rng.uniform(0, 64, (12, 68, 2)) * 0.05  # (without the size factor the landmarks would outweigh)
    full = nearest_neighbours(landmarks, textures, 3, texture_weight=1.0, texture_size=None)
    small = nearest_neighbours(landmarks, textures, 3, texture_weight=1.0, texture_size=8)
    np.testing.assert_array_equal(small, full)


def test_white_balance_alone_keeps_a_coloured_faces_luminance() -> None:
    from facekit.apps.adjust import Correction, luminance_gain

    correction = Correction("face", source=(0.3, 0.2, 0.1), target=(0.2, 0.25, 0.3), mapping="gains")
    balanced = correction.scaled(1.0, "white-balance")
    assert luminance_gain(balanced.gains, np.array(correction.source)) == pytest.approx(1.0)
    assert luminance_gain(correction.scaled(1.0, "exposure").gains, np.array(correction.source)) == pytest.approx(
        luminance_gain(correction.gains, np.array(correction.source))
    )


def test_a_name_exactly_at_the_limit_is_kept() -> None:
    from facekit.batch import fit_name

    assert fit_name("a" * 20, 20) == "a" * 20
    assert fit_name("a" * 21, 20) != "a" * 21 and len(fit_name("a" * 21, 20)) <= 20


def test_setting_one_past_a_lists_last_item_is_a_problem() -> None:
    from facekit.recipe import apply_overrides

    raw: dict[str, Any] = {"data": {"train": [{"source": "lfw"}]}}
    problems = apply_overrides(raw, ["data.train.1.source=london"])
    assert problems and "has 1 items" in str(problems[0])
    assert raw["data"]["train"] == [{"source": "lfw"}]


def test_a_damaged_shipped_model_is_refused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import facekit.normalize as normalize
    from facekit.models import ChecksumError

    assets = tmp_path / "assets"
    shutil.copytree(normalize._assets(), assets)
    model = assets / normalize.SHIPPED_MODELS["dlib"]
    data = bytearray(model.read_bytes())
    data[len(data) // 2] ^= 1
    model.write_bytes(bytes(data))
    monkeypatch.setattr(normalize, "_assets", lambda: assets)
    with pytest.raises(ChecksumError):
        normalize.model_path("dlib")
    assert normalize.model_path("dlib", verify=False) == model


def test_the_plain_backgrounds_kept_region_reaches_as_far_as_asked() -> None:
    """train.background_forehead / background_margin: a point 2.5 interocular distances above the brows is background
    by default (forehead 1) and kept with forehead 2.5; the defaults are the shipped models' mask."""
    from facekit.align import interocular_distance
    from facekit.pool import background_mask
    from facekit.testing import real_face

    points = real_face().ibug68 * 0.5 + np.array([50.0, 70.0])  # the face smaller, low in a 200 px frame
    above = points[17:27].mean(0) - np.array([0.0, 2.5 * interocular_distance(points)])
    x, y = (int(v) for v in np.round(above))
    assert background_mask(points, 200)[y, x] < 0.05
    assert background_mask(points, 200, forehead=2.5)[y, x] > 0.95
    default = background_mask(points, 200)
    assert np.array_equal(default, background_mask(points, 200, 1.0, 1 / 12))
    wider = background_mask(points, 200, margin=1 / 6)
    assert (wider >= default - 1e-6).all() and wider.sum() > default.sum() * 1.2


def test_the_kept_regions_settings_need_a_plain_background_and_name_its_pool() -> None:
    """Set without ``background: plain`` they would be ignored: refused (helper-88); with it, only values other than
    the defaults give the pool a key of its own (0.0833 is 1/12 within rounding: the same mask, the same pool)."""
    from pydantic import ValidationError

    from facekit.pool import other_mask
    from facekit.recipe import TrainSection

    with pytest.raises(ValidationError, match=r"background_margin shapes the plain background"):
        TrainSection(background_margin=0.2)
    assert not other_mask(TrainSection(background_forehead=1.0))  # the default, even when written out
    assert not other_mask(TrainSection(background="plain", background_margin=1 / 12))
    assert other_mask(TrainSection(background="plain", background_margin=0.125))
    assert other_mask(TrainSection(background="plain", background_forehead=2.0))


def test_settings_of_a_part_of_training_that_is_off_are_refused() -> None:
    """Each was accepted and trained as if it were not there: photo_inputs' yaw limit or photo_casts' sigma without
    them, the separation's margin without the separation, the plain background's colour with the background kept.
    At their defaults (a run folder's recipe.yaml writes every field) they are fine, and the identity crop's jitter
    stays allowed with the identity loss off (the ablation extends a recipe that sets it)."""
    from pydantic import ValidationError

    from facekit.recipe import LossWeights, TrainSection, load_recipe

    for settings, message in (
        ({"photo_max_yaw_deg": 20.0}, r"photo_max_yaw_deg chooses photo_inputs' photos"),
        ({"photo_inputs": 4, "photo_cast_sigma": 0.3}, r"photo_cast_sigma sizes photo_casts' casts"),
        ({"loss": LossWeights(separation_margin=0.02)}, r"loss\.separation_margin is the separation term's margin"),
        ({"background_rgb": (0, 0, 0)}, r"background_rgb shapes the plain background"),
    ):
        with pytest.raises(ValidationError, match=message):
            TrainSection(**settings)
    # The same settings where their part is on, or at their defaults where it is off.
    TrainSection(photo_inputs=4, photo_max_yaw_deg=20.0, photo_casts=2, photo_cast_sigma=0.3)
    TrainSection(loss=LossWeights(separation=1.0, separation_margin=0.02))
    TrainSection(photo_max_yaw_deg=40.0, background_rgb=(128, 128, 128))
    ablation = load_recipe("recipes/ablations/default-no-identity.yaml").recipe.train
    assert ablation.loss.identity == 0 and ablation.identity_jitter > 0


def test_inherited_settings_of_a_part_that_is_off_are_warned_of(tmp_path: Path) -> None:
    """Settings a recipe inherits for a part it switches off are not refused (the ablations extend recipes that set
    them) but said: augmentation off, every face kept, no loss term through the encoder; each names the file that
    set it, and nothing is said of a value at its default or at 0 (which agrees with the part being off)."""
    from facekit.recipe import Recipe, load_recipe

    assert Recipe().unused_settings() == []
    off = Recipe.model_validate(
        {
            "augment": {"enabled": False, "neighbours": 3, "count": 0},
            "prepare": {"keep_all_faces": True, "face": "central"},
            "train": {"identity_jitter": 0.05, "pool_size": 0, "loss": {"identity": 0, "identity_share": 0.5}},
            "components": {"identity_encoder": {"name": "sface"}},
        }
    )
    assert [name for name, _ in off.unused_settings()] == [
        "augment.neighbours",
        "prepare.face",
        "train.identity_jitter",
        "train.loss.identity_share",
        "components.identity_encoder",
    ]
    # Where the part is on, the same values are read.
    on = Recipe.model_validate(
        {
            "augment": {"neighbours": 3},
            "prepare": {"face": "central"},
            "train": {"identity_jitter": 0.05, "loss": {"identity_share": 0.5}},
            "components": {"identity_encoder": {"name": "sface"}},
        }
    )
    assert on.unused_settings() == []
    base = tmp_path / "base.yaml"
    base.write_text("train: {identity_jitter: 0.05, loss: {identity: 1.0}}\n")
    child = tmp_path / "child.yaml"
    child.write_text("extends: base.yaml\ntrain: {identity_blur: 1.0, loss: {identity: 0}}\n")
    said = load_recipe(child).unused_settings()
    assert len(said) == 2 and said[0].startswith("train.identity_jitter: not used: no loss term runs the encoder")
    assert said[0].endswith(f"(set in {base.resolve()})") and "set in" not in said[1]  # the child's own: no file
    assert load_recipe(child, overrides=["train.loss.perceptual=0.1"]).unused_settings() == []


def test_every_setting_of_augmentation_off_is_warned_of_and_attributed_as_given(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Each augment setting and train.pool_size is said with augmentation off; a value given with --set names no
    file, and neither does the child's own when the recipe is given as a relative path (it is compared resolved)."""
    from facekit.recipe import Recipe, load_recipe

    off = Recipe.model_validate(
        {
            "augment": {
                "enabled": False,
                "neighbours": 3,
                "texture_weight": 2.0,
                "count": 5,
                "mask_blur_px": 4.0,
                "output": "runs/elsewhere",
            },
            "train": {"pool_size": 100},
        }
    )
    assert [name for name, _ in off.unused_settings()] == [
        "augment.neighbours",
        "augment.texture_weight",
        "augment.count",
        "augment.mask_blur_px",
        "augment.output",
        "train.pool_size",
    ]
    # On, but no stage makes a morph (pool_size and count 0): how morphs would be made is read by none. augment.output
    # with count 0 is not said: recipes/paper.yaml names it for a later --set augment.count=N.
    idle = {"augment": {"neighbours": 3, "mask_blur_px": 4.0, "count": 0, "output": "x"}, "train": {"pool_size": 0}}
    assert [name for name, _ in Recipe.model_validate(idle).unused_settings()] == [
        "augment.neighbours",
        "augment.mask_blur_px",
    ]
    assert Recipe.model_validate(idle | {"train": {"pool_size": 100}}).unused_settings() == []  # training makes them
    assert Recipe.model_validate(idle | {"augment": {"neighbours": 3, "count": 10}}).unused_settings() == []
    (tmp_path / "base.yaml").write_text("train: {identity_jitter: 0.05}\n")
    (tmp_path / "child.yaml").write_text("extends: base.yaml\ntrain: {identity_blur: 1.0, loss: {identity: 0}}\n")
    monkeypatch.chdir(tmp_path)
    said = load_recipe("child.yaml", overrides=["train.identity_jitter=0.1"]).unused_settings()
    assert len(said) == 2 and not any("set in" in line for line in said), said
