"""Recipes: YAML files validated into pydantic models, overridden with ``--set``, and resolved into a :class:`Plan`.

Every problem is collected and reported at once with its dotted path (``components.encoder.params.layr: extra field
not permitted``); nothing here uses ``cfg.get(key, default)``: an unknown key is an error, never silently ignored.
Components are named by registry name, never by import path.
"""

from __future__ import annotations

import difflib
import hashlib
import json
import os
import re
from collections.abc import Callable, Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from functools import cached_property
from importlib import resources
from pathlib import Path
from types import NoneType, UnionType
from typing import Annotated, Any, Literal, Union, get_args, get_origin

import yaml
from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    PlainSerializer,
    TypeAdapter,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)

from facekit.detail import FOREHEAD_LIMIT
from facekit.errors import (
    ComponentNotFoundError,
    DuplicateComponentError,
    FacekitError,
    OptionsRefused,
    Problem,
    RecipeError,
    did_you_mean,
)
from facekit.registry import (
    ComponentSpec,
    Params,
    build_checked,
    echo_cut,
    get_registry,
    no_boolean_for_number,
    problems_from_validation,
    refused_echo,
    setting_error,
)
from facekit.types import DEVICE_PATTERN, FaceRule, Kind

DEFAULT_DATA_ROOT = "../shared/data"
STAGES: tuple[str, ...] = ("prepare", "augment", "train", "evaluate", "infer")
Stage = Literal["prepare", "augment", "train", "evaluate", "infer"]
#: The sections whose unused settings (:meth:`Recipe.unused_settings`) concern each stage: the training pool makes its
#: morphs with augment's settings; evaluate and infer read none of those sections.
STAGE_SECTIONS: dict[str, tuple[str, ...]] = {
    "prepare": ("prepare.",),
    "augment": ("augment.",),
    "train": ("augment.", "train."),
    "evaluate": (),
    "infer": (),
}


class Section(BaseModel):
    """Base of every recipe model: unknown keys are errors, values are checked on assignment, numbers must be finite
    and ``true``/``false`` is never read as a number (``train.steps: true`` is an error, not one step)."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True, allow_inf_nan=False)

    @field_validator("*", mode="before")
    @classmethod
    def _no_boolean_for_number(cls, value: Any, info: ValidationInfo) -> Any:
        return no_boolean_for_number(cls.model_fields[str(info.field_name)].annotation, value)

    def differs_from_default(self, name: str) -> bool:
        """Whether field ``name`` holds another value than its default: what a setting that would be ignored is
        refused for (at its default it passes: a run folder's recipe.yaml lists every field, and must load again)."""
        return bool(getattr(self, name) != type(self).model_fields[name].default)


class ComponentRef(Section):
    """A component by registry name, with its parameters (validated against the component's ``Params``)."""

    name: str = Field(description="registry name, as listed by `facekit list`")
    params: dict[str, Any] = Field(default_factory=dict, description="the component's parameters")


class Components(Section):
    """Which registered component fills each slot of the pipeline."""

    detector: ComponentRef | None = Field(default=None, description="face detector + landmarks")
    encoder: ComponentRef | None = Field(default=None, description="frozen face-recognition encoder")
    decoder: ComponentRef | None = Field(default=None, description="features -> landmarks + texture")
    warper: ComponentRef = Field(
        default_factory=lambda: ComponentRef(name="rbf-linear", params={"regularization": 0.01}),
        description="the decoder's warp; a little regularisation keeps coincident inner-lip points solvable",
    )
    judge: ComponentRef | None = Field(default=None, description="encoder used only for evaluation")
    identity_encoder: ComponentRef | None = Field(
        default=None,
        description="the recogniser the identity loss (and perceptual, separation) runs on the output and the input "
        "photo in training; default: components.encoder. Another one trains the decoder to be recognisable to a "
        "network other than the one whose features it decodes",
    )
    apps: list[ComponentRef] = Field(default_factory=list)


SLOT_KINDS: dict[str, Kind] = {
    "detector": "detector",
    "encoder": "encoder",
    "decoder": "decoder",
    "warper": "warper",
    "judge": "encoder",
    "identity_encoder": "encoder",
    "apps": "app",
}


class DataSource(Section):
    """One source of photos under the data root."""

    source: Literal["lfw", "london", "folder"]
    people: str | None = Field(default=None, description="lfw: people list file, e.g. peopleDevTrain.txt")
    min_photos: int = Field(default=1, ge=1, description="lfw: keep people with at least this many photos")
    subset: Literal["neutral_front", "smiling_front", "canada"] | None = Field(default=None, description="london")
    path: str | None = Field(default=None, description="folder: a folder of <person>/<photo> files")

    def folder(self, root: Path) -> Path:
        """A folder source's folder: ``path`` with ``~`` expanded, under the data ``root`` when relative."""
        given = Path(str(self.path)).expanduser()
        return given if given.is_absolute() else root / given

    @model_validator(mode="after")
    def _fields_for_source(self) -> DataSource:
        needed = {"lfw": "people", "london": "subset", "folder": "path"}[self.source]
        if getattr(self, needed) is None:
            raise setting_error(f"must be given for source {self.source!r}", [needed], ["source"])
        belongs = {"people": "lfw", "min_photos": "lfw", "subset": "london", "path": "folder"}
        # A field of another source's kind that is set to something else than its default; its default is fine (a
        # run folder's recipe.yaml lists every field, and must load again).
        stray = sorted(
            f
            for f in self.model_fields_set
            if belongs.get(f, self.source) != self.source and self.differs_from_default(f)
        )
        if stray:  # given and silently ignored before: a folder source's min_photos kept one-photo people
            raise setting_error(
                f"is not a setting of source {self.source!r} (people and min_photos are lfw's, subset london's, "
                "path folder's)",
                stray,
                ["source"],
            )
        return self


class DataSection(Section):
    """Where the photos come from. ``root`` defaults to ``$FACEKIT_DATA`` or ``../shared/data``."""

    root: str | None = Field(default=None, description="data root; null = $FACEKIT_DATA or ../shared/data")
    train: list[DataSource] = Field(default_factory=list)
    test: list[DataSource] = Field(
        default_factory=list,
        description="people kept out of training (checked: none of them in data.train); evaluation scores "
        "evaluate.data",
    )

    def resolved_root(self) -> Path:
        return Path(self.root or os.environ.get("FACEKIT_DATA") or DEFAULT_DATA_ROOT).expanduser()


class PrepareSection(Section):
    """Build the training set: detect, filter, align, average per person, split into landmarks + texture.

    Filter defaults were calibrated on the London set's neutral vs smiling photos (see facekit/data/quality.py).
    """

    output: str = Field(default="runs/data", description="dataset folder (resumable: rerunning continues it)")
    image_size: int = Field(default=224, ge=32, description="aligned crop size in pixels")
    interocular_px: float = Field(default=55.0, gt=0, description="distance between eye centres in the crop")
    min_face_px: float = Field(default=30.0, ge=0, description="reject faces whose interocular distance is smaller")
    max_yaw_deg: float = Field(default=20.0, gt=0, description="reject faces turned further left/right")
    max_pitch_deg: float = Field(default=15.0, gt=0, description="reject faces nodding further from frontal_pitch_deg")
    frontal_pitch_deg: float = Field(
        default=-11.0, description="the pitch the SFM mean shape measures for a frontal face (London neutral mean)"
    )
    min_sharpness: float = Field(default=20.0, ge=0, description="variance of the Laplacian of the aligned face")
    min_colourfulness: float = Field(default=5.0, ge=0, description="reject grey or sepia photos below this")
    max_mouth_open: float = Field(default=0.08, gt=0, description="inner-lip gap / interocular distance")
    max_mouth_width: float = Field(default=0.95, gt=0, description="mouth width / interocular distance (smiles)")
    keep_all_faces: bool = Field(default=False, description="keep every face of a photo, not only one")
    face: FaceRule = Field(
        default="largest",
        description="without keep_all_faces, which face of a photo with several: the largest, or central (the face "
        "the photo is framed around, as LFW's are; facekit.normalize.choose_face)",
    )
    workers: int = Field(default=2, ge=1, description="worker processes")


class AugmentSection(Section):
    """Random morphs between nearest neighbours (paper Sec. 5)."""

    enabled: bool = True
    neighbours: int = Field(default=5, ge=1, description="k nearest neighbours to morph with")
    texture_weight: float = Field(default=1.0, ge=0, description="lambda in |L_i-L_j|^2 + lambda |T_i-T_j|^2")
    count: int = Field(default=10_000, ge=0, description="morphs to materialise with --stage augment")
    mask_blur_px: float = Field(default=8.0, ge=0, description="Gaussian blur of the compositing mask")
    output: str = Field(default="runs/augmented")


class LossWeights(Section):
    """Weights of the paper's three terms (facekit.losses.losses)."""

    landmark: float = Field(default=0.1, ge=0, description="landmark MSE, in pixels of a 100-px image")
    texture: float = Field(default=1.0, ge=0, description="texture L1 (image L1 for decoders without a texture)")
    identity: float = Field(default=1.0, ge=0, description="1 - cos of encoder embeddings of input and output")
    perceptual: float = Field(
        default=0.0,
        ge=0,
        description="feature matching: L1 between the encoder's early feature maps of output and target (each map "
        "divided by the target's mean magnitude), on the identity loss's crop; needs an encoder with embed_and_maps",
    )
    laplacian: float = Field(
        default=0.0, ge=0, description="L1 between the Laplacians of output and target texture (fine detail)"
    )
    separation: float = Field(
        default=0.0,
        ge=0,
        description="for the identity loss's items of different people, max(0, cos(E(out_i), E(out_j)) - "
        "cos(E(in_i), E(in_j)) + separation_margin) averaged over pairs: different people's outputs no more alike "
        "than their inputs (pairs within one process's slice under DDP)",
    )
    separation_margin: float = Field(
        default=0.0,
        ge=0,
        le=1,
        description="separation: outputs of different people this much less alike (cosine) than their inputs",
    )
    identity_own: float = Field(
        default=0.0,
        ge=0,
        description="with components.identity_encoder: a second identity term, 1 - cos of the embeddings of "
        "components.encoder (the one the decoder reads), so that both recognisers are in the loss; 0: the identity "
        "encoder's alone",
    )
    identity_share: float = Field(
        default=1.0,
        gt=0,
        le=1,
        description="the identity (and perceptual, separation) losses on this share of each batch (its first items; "
        "batches are random): for encoders whose forward+backward costs several times the decoder's (SFace: 9x "
        "dlib's on the CPU)",
    )

    def through_encoder(self) -> list[str]:
        """The terms switched on that run the encoder on the output (so need its gradient and a differentiable
        warp): of identity, perceptual and separation."""
        return [name for name in ("identity", "perceptual", "separation") if getattr(self, name) > 0]


Channel = Annotated[int, BeforeValidator(lambda value: no_boolean_for_number(int, value)), Field(ge=0, le=255)]
#: The kept region of ``train.background: plain`` (facekit.pool.background_mask): the brows raised by this many
#: interocular distances, and a margin of this share of the image side for hair and ears.
BACKGROUND_FOREHEAD = 1.0
BACKGROUND_MARGIN = 1 / 12


class TrainSection(Section):
    """The training loop."""

    steps: int = Field(default=1000, ge=1)
    batch_size: int = Field(default=32, ge=1)
    pool_size: int = Field(default=2000, ge=0, description="random morphs made at start (features cached)")
    lr: float = Field(default=1e-3, gt=0)
    seed: int = 0
    loss: LossWeights = Field(default_factory=LossWeights)
    identity_jitter: float = Field(
        default=0.0,
        ge=0,
        le=0.2,
        description="identity loss on a randomly shifted, scaled and rotated crop (std as a fraction of the crop "
        "side, of log-scale and of radians): patterns that fool the encoder only at one exact alignment stop paying",
    )
    identity_blur: float = Field(
        default=0.0,
        ge=0,
        le=8,
        description="identity loss on the output's crop blurred by a Gaussian of a random sigma, uniform in [0, this] "
        "px of the encoder's input, drawn per item and step: fine patterns that move the encoder's embedding stop "
        "paying, and identity has to be carried by what survives the blur",
    )
    photo_inputs: int = Field(
        default=0,
        ge=0,
        description="train on what inference sees: up to this many of each person's own photos (any expression, "
        "|yaw| <= photo_max_yaw_deg) feed the encoder, with the person's average as the target (0 = averages only)",
    )
    photo_max_yaw_deg: float = Field(default=40.0, gt=0, description="photo_inputs: most turned photo used")
    photo_casts: int = Field(
        default=0,
        ge=0,
        le=8,
        description="photo_inputs: this many colour-cast copies of each photo feed the encoder too, with the same "
        "uncast target (a random gain per channel in linear light, log-normal with std photo_cast_sigma, and an "
        "exposure of -1..+1 EV): the decoder learns the person's colours rather than the photo's light",
    )
    photo_cast_sigma: float = Field(
        default=0.15,
        ge=0,
        le=1,
        description="photo_casts: std of each channel's log gain as drawn; the three are then centred (geometric mean "
        "1), which leaves each a std of sigma x 0.82 (0.15: about +-12 %)",
    )
    background: Literal["keep", "plain"] = Field(
        default="keep",
        description="plain: composite every target onto one flat colour outside the face, forehead and a margin, so "
        "the decoder learns a clean background instead of each photo's",
    )
    background_rgb: tuple[Channel, Channel, Channel] = Field(
        default=(128, 128, 128), description="background: plain's colour"
    )
    background_forehead: float = Field(
        default=BACKGROUND_FOREHEAD,
        ge=0,
        le=3,
        description="background plain: how far above the brows the kept region reaches, in interocular distances",
    )
    background_margin: float = Field(
        default=BACKGROUND_MARGIN,
        ge=0,
        le=0.5,
        description="background plain: the kept region's margin around face and forehead (hair, ears), as a "
        "fraction of the image side",
    )
    init: str | None = Field(
        default=None,
        description="start from this model's decoder weights: a checkpoint or exported model of the same decoder, "
        "or a shipped model by name (dlib, sface: found from any folder, as a shipped recipe is); the optimizer "
        "starts fresh",
    )
    checkpoint_every: int = Field(default=500, ge=1)
    keep_every: int | None = Field(
        default=None, ge=1, description="also keep checkpoints/step-NNNNNN.safetensors every this many steps"
    )
    sample_every: int = Field(default=500, ge=1)
    device: Literal["auto", "cpu", "cuda"] = "auto"
    precision: Literal["fp32", "bf16", "fp16"] = "fp32"
    output: str = Field(default="runs/train")

    @model_validator(mode="after")
    def _mask_settings_need_a_plain_background(self) -> TrainSection:
        """background_forehead / background_margin set without ``background: plain`` would be ignored: refused (a
        value equal to its default is fine: a run folder's recipe.yaml lists every field)."""
        stray = [
            name
            for name in ("background_forehead", "background_margin", "background_rgb")
            if self.background != "plain" and self.differs_from_default(name)
        ]
        if stray:
            raise setting_error("shapes the plain background: set train.background: plain", stray, ["background"])
        return self

    @model_validator(mode="after")
    def _settings_of_parts_that_are_off(self) -> TrainSection:
        """A setting of a part of training that is switched off would be ignored: refused, as the background's are
        (at its default it is fine). Before, e.g. photo_cast_sigma without photo_casts trained as if it were not
        there. The identity crop's jitter and blur stay allowed with the identity loss off: turning the term off
        is the ablation (ablations/no-identity), and its settings come along from the recipe it extends."""
        rules = (
            ("photo_max_yaw_deg", "photo_inputs", "chooses photo_inputs' photos: set train.photo_inputs"),
            ("photo_cast_sigma", "photo_casts", "sizes photo_casts' casts: set train.photo_casts"),
        )
        for name, part, why in rules:
            if not getattr(self, part) and self.differs_from_default(name):
                raise setting_error(why, [name], [part])
        if self.loss.separation == 0 and self.loss.differs_from_default("separation_margin"):
            raise setting_error(
                "is the separation term's margin: set loss.separation", ["loss.separation_margin"], ["loss.separation"]
            )
        return self


class InferSection(Section):
    inputs: list[str] = Field(
        default_factory=list, description="photos or folders to normalize; relative paths are under data.root"
    )
    checkpoint: str | None = None
    batch_size: int = Field(default=16, ge=1)
    # What `facekit normalize` takes as options, so a recipe's inference is the command's.
    face: FaceRule = Field(
        default="largest", description="which face of a photo with several (facekit normalize --face)"
    )
    detail: float | None = Field(
        default=None,
        ge=0,
        le=2,
        description="strength of the photo's fine detail on the face (--detail; 0: the decoder's face alone; "
        "unset: the library's default for the detector)",
    )
    detail_shape: float | None = Field(
        default=None, ge=0, le=1, description="how far the face takes the photo's own shape (--detail-shape)"
    )
    detail_forehead: float | None = Field(
        default=None,
        ge=0,
        le=FOREHEAD_LIMIT,
        description="how far above the brows the photo's detail reaches (--detail-forehead)",
    )
    size: int | None = Field(
        default=None,
        ge=32,
        le=1024,
        description="side of the normalized face in pixels (facekit normalize --size; unset: the model's own)",
    )
    device: str = Field(
        default="cpu",
        pattern=DEVICE_PATTERN,
        description="where the infer and evaluate stages run the model (and the evaluate stage its judges): cpu, "
        "cuda, cuda:N, mps, xpu or auto (a GPU when one is visible), as facekit normalize --device",
    )
    overwrite: bool = Field(
        default=False,
        description="replace outputs made from another input, model or settings (facekit normalize --overwrite); "
        "without it they are left alone and counted as 'exists'",
    )
    output: str = Field(default="runs/infer")

    @model_validator(mode="after")
    def _detail_is_usable(self) -> InferSection:
        from facekit.detail import detail_settings

        if self.detail == 0 and self.detail_forehead is not None:  # (DetailSettings.of's rule, in the recipe's words)
            raise setting_error(
                "shapes the photo's detail band, which infer.detail 0 turns off: leave it out, or give a detail "
                "above 0",
                ["detail_forehead"],
                ["detail"],
            )
        detail_settings(self.detail, self.detail_shape, self.detail_forehead)  # (with the recipe, not after training)
        return self


class EvaluateSection(Section):
    data: Literal["lfw-devtest"] = "lfw-devtest"  # what the evaluate stage implements (pairs: facekit eval --pairs)
    max_photos: int = Field(default=500, ge=1)
    output: str = Field(default="runs/eval")


def _judge_ref(value: Any) -> Any:
    """A bench judge given by its name alone (``sface``) as the mapping it stands for (``{name: sface}``)."""
    if isinstance(value, str):
        return {"name": value}
    if not isinstance(value, (dict, ComponentRef)):
        raise ValueError("must be an encoder's name (sface) or a mapping {name: NAME, params: {KEY: VALUE}}")
    return value


def _judge_as_written(ref: ComponentRef) -> Any:
    """A bench judge as a recipe writes it: its name alone where it was given without params (the resolved recipe a
    run records keeps ``judges: [dlib-resnet, sface]`` as it was), else the mapping."""
    return {"name": ref.name, "params": ref.params} if "params" in ref.model_fields_set else ref.name


#: A ``bench.judges`` item: an encoder's name, or its name and params (as ``facekit eval --judge NAME:KEY=VALUE``).
JudgeRef = Annotated[ComponentRef, BeforeValidator(_judge_ref), PlainSerializer(_judge_as_written)]


class BenchSection(Section):
    """`facekit bench`: a grid of ``--set`` overrides over this recipe; each cell trains briefly and is evaluated."""

    grid: dict[str, list[Any]] = Field(default_factory=dict, description="recipe path -> values to try")
    data: Literal["helen-test", "london-smiling", "lfw-devtest"] = Field(
        default="helen-test",
        description="the photos each cell is scored on: helen-test (HELEN's test photos, people outside LFW and "
        "London, never trained on) or london-smiling to choose settings; lfw-devtest only to report on, never to "
        "choose (facekit.evaluate.photo_set)",
    )
    max_photos: int = Field(default=100, ge=1, description="photos of bench.data evaluated per cell")
    judges: list[JudgeRef] = Field(
        default_factory=list,
        description="judge encoders, each a name (sface) or a name with its params ({name: facenet, params: {variant: "
        "casia-webface-tf}}), as `facekit eval --judge NAME:KEY=VALUE` gives them: components.judge's params updated "
        "with them where it is that encoder, else they and the defaults (default: the recipe's components.encoder and "
        "components.judge, each with its params); a name alone is components.judge's, else components.encoder's, "
        "with its params, else the encoder's defaults; each judge once; keyed as the evaluate stage keys them",
    )
    output: str = Field(default="runs/bench")


class Recipe(Section):
    """A whole recipe. Every section has defaults, so a recipe states only what it changes."""

    description: str = ""
    components: Components = Field(default_factory=Components)
    data: DataSection = Field(default_factory=DataSection)
    prepare: PrepareSection = Field(default_factory=PrepareSection)
    augment: AugmentSection = Field(default_factory=AugmentSection)
    train: TrainSection = Field(default_factory=TrainSection)
    infer: InferSection = Field(default_factory=InferSection)
    evaluate: EvaluateSection = Field(default_factory=EvaluateSection)
    bench: BenchSection = Field(default_factory=BenchSection)

    def unused_settings(self) -> list[tuple[str, str]]:
        """Settings given a value (other than their default, and other than 0) that no stage will read because the
        part they shape is switched off, as (dotted name, why): said as a warning by ``facekit check``, ``run``,
        ``bench`` and ``prepare``, not refused, because a recipe that switches a part off usually inherits its
        settings from the recipe it extends (ablations/no-identity keeps the identity crop's jitter).
        Settings that a recipe could only have set by hand are refused instead (the validators of TrainSection and
        InferSection)."""
        rules: list[tuple[Section, str, tuple[str, ...], str]] = []
        if not self.augment.enabled:
            off = "augmentation is off (augment.enabled: false)"
            rules.append(
                (self.augment, "augment", ("neighbours", "texture_weight", "count", "mask_blur_px", "output"), off)
            )
            rules.append((self.train, "train", ("pool_size",), off))
        elif self.augment.count == 0 and self.train.pool_size == 0:  # on, but neither stage makes a morph
            none = "no morphs are made (augment.count and train.pool_size are 0)"
            rules.append((self.augment, "augment", ("neighbours", "texture_weight", "mask_blur_px"), none))
        if self.prepare.keep_all_faces:
            rules.append((self.prepare, "prepare", ("face",), "prepare.keep_all_faces keeps every face of a photo"))
        if not self.train.loss.through_encoder():
            off = "no loss term runs the encoder on the output (loss.identity, perceptual and separation are 0)"
            rules.append((self.train, "train", ("identity_jitter", "identity_blur"), off))
            rules.append((self.train.loss, "train.loss", ("identity_share",), off))
            rules.append((self.components, "components", ("identity_encoder",), off))
        return [
            (f"{prefix}.{name}", why)
            for section, prefix, names, why in rules
            for name in names
            if section.differs_from_default(name) and getattr(section, name) != 0
        ]


@dataclass(frozen=True)
class ResolvedComponent:
    """A recipe slot filled: the spec from the registry and its validated params."""

    slot: str
    kind: Kind
    spec: ComponentSpec[Any]
    params: Params

    def build(self) -> Any:
        return build_checked(self.kind, self.spec, self.params, asked_for=f"components.{self.slot}")

    @cached_property
    def built_once(self) -> Any:
        """:meth:`build`'s component, built on first use and then kept until a stage takes it (:meth:`take_built`):
        for one that a run's check asks before a stage runs it (the warper's ``differentiable``, an encoder's or
        judge's weights; before, a full run built the warper four times). A build that raises is tried again the
        next time. A check may ask it; what runs it takes it, so no two trainings of one plan share one (a plugin's
        warper may hold state: a cached solve, a learnable parameter) and no plan keeps one after its stage."""
        return self.build()

    def take_built(self) -> Any:
        """The component :attr:`built_once` kept, no longer kept (the caller owns it: moves it to its device, as the
        training does the encoder), else a new :meth:`build`: an encoder, judge or warper that `facekit run`'s check
        of the later stages built is the one the stage then runs, no later stage finds it on another stage's
        device, and a second training of the plan builds its own."""
        kept = self.__dict__.pop("built_once", None)
        return kept if kept is not None else self.build()

    def take_kept(self, kind: Kind, name: str, params: Mapping[str, Any]) -> Any:
        """The build :attr:`built_once` kept, taken as :meth:`take_built` takes it, where this component is the
        ``kind`` ``name`` with ``params`` as its params model reads them (what a run keys an encoder by: a training
        pool's :func:`facekit.pool.pool_encoder_key`); None where it is another, or none is kept (nothing is built)."""
        if (self.kind, self.spec.name) != (kind, name) or "built_once" not in self.__dict__:
            return None
        if self.spec.validate_params(params).model_dump(mode="json") != self.params.model_dump(mode="json"):
            return None
        return self.take_built()


@dataclass
class Plan:
    """A recipe that validated and resolved against the registries: ready to run."""

    recipe: Recipe
    source: str
    components: dict[str, ResolvedComponent] = field(default_factory=dict)
    overrides: tuple[str, ...] = ()
    #: The recipe files read, as :func:`load_recipe` read them (:func:`_sources`: each file of the ``extends``
    #: chain, once); none for a plan resolved from data. What each run's run.json records as ``recipe_files``.
    recipe_files: tuple[dict[str, Any], ...] = ()
    #: Dotted path -> the file of the ``extends`` chain that sets it last (:func:`_origins`), from the same
    #: reads; none for a plan resolved from data. What :meth:`unused_settings` names a base file by.
    origins: Mapping[str, Path] = field(default_factory=dict)

    @property
    def data_root(self) -> Path:
        return self.recipe.data.resolved_root()

    def to_dict(self) -> dict[str, Any]:
        """The resolved recipe (defaults filled in) as plain data, as saved beside every run."""
        return self.recipe.model_dump(mode="json")

    def unused_settings(self, stages: Sequence[str] | None = None, read: Collection[str] = ()) -> list[str]:
        """:meth:`Recipe.unused_settings` as lines ("train.identity_jitter: not used: ..."), each naming the base file
        of the ``extends`` chain that set it, as a refusal does; with ``stages`` only those that concern the stages
        (:data:`STAGE_SECTIONS`), and none named in ``read`` (read after all, as by a bench cell)."""
        sections = ("",) if not stages else tuple(p for stage in stages for p in STAGE_SECTIONS.get(stage, ()))
        found = [
            (name, why) for name, why in self.recipe.unused_settings() if name not in read and name.startswith(sections)
        ]
        if not found or not self.recipe_files:  # (a plan resolved from data: no file to name)
            return [f"{name}: not used: {why}" for name, why in found]
        # The files as load_recipe read them (before: the chain was read and parsed again here, so a base edited
        # meanwhile was named for what the plan had not read, and each call cost a read of every file)
        given = {_dotted(item.partition("=")[0].strip()) for item in self.overrides}
        origins, own = self.origins, Path(self.recipe_files[0]["file"])
        return [str(_located(Problem(name, f"not used: {why}"), origins, own, given)) for name, why in found]


# --------------------------------------------------------------------------------------------------- loading


#: A recipe is a few kB of settings; these bounds keep a hostile file from costing more than that to read.
MAX_RECIPE_BYTES = 1_000_000
MAX_RECIPE_VALUES = 100_000
#: How deep a recipe's YAML may nest (a real one: under 10 levels); deeper is refused as it is read.
MAX_RECIPE_DEPTH = 200


def _expanded_size(value: Any, memo: dict[int, int]) -> int:
    """How many values ``value`` holds once YAML aliases are expanded (as merging, validating or saving would),
    computed on the shared structure in linear time, capped just above :data:`MAX_RECIPE_VALUES`."""
    if not isinstance(value, (dict, list)):
        return 1
    key = id(value)
    if key not in memo:
        memo[key] = MAX_RECIPE_VALUES + 1  # a cycle (a recursive alias) counts as too large
        children = value.values() if isinstance(value, dict) else value
        total = 1
        for child in children:
            total = min(total + _expanded_size(child, memo), MAX_RECIPE_VALUES + 1)
        memo[key] = total
    return memo[key]


def _yaml_problem(error: yaml.YAMLError) -> str:
    """What is wrong and where (line, column), without quoting the file: an error about a file that is not a recipe
    must not echo its contents."""
    mark = getattr(error, "problem_mark", None)
    problem = getattr(error, "problem", None) or type(error).__name__
    return f"{problem} at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else str(problem)


class _RecipeLoader(yaml.SafeLoader):
    """Safe YAML that refuses a key given twice in one mapping (PyYAML keeps the last one silently, so a recipe
    with two ``train:`` sections trained on half of what its author wrote). Keys a ``<<`` merge brings in may still
    be overridden, as YAML intends."""

    _depth = 0

    def compose_node(self, parent: yaml.Node | None, index: Any) -> yaml.Node | None:
        """Nodes nested deeper than :data:`MAX_RECIPE_DEPTH` are refused as they are read: before, only the
        interpreter's RecursionError stopped them, which a process with a higher recursion limit (mypy's API sets
        2**14) never raised for 5,000 levels, and deeper ones could overflow the C stack."""
        self._depth += 1
        try:
            if self._depth > MAX_RECIPE_DEPTH:
                raise RecursionError(f"more than {MAX_RECIPE_DEPTH} levels")
            return super().compose_node(parent, index)  # type: ignore[no-any-return]
        finally:
            self._depth -= 1

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        seen: dict[Any, int] = {}
        for key_node, _ in node.value:
            if key_node.tag == "tag:yaml.org,2002:merge":
                continue
            key = self.construct_object(key_node, deep=True)
            try:
                repeated = key in seen
            except TypeError:  # an unhashable key: SafeConstructor's own error says so
                continue
            if repeated:  # (on the same line too: {steps: 5, steps: 6})
                raise yaml.constructor.ConstructorError(
                    None, None, f"the key first given at line {seen[key]} is given again", key_node.start_mark
                )
            seen[key] = key_node.start_mark.line + 1
        return super().construct_mapping(node, deep=deep)


# YAML 1.1 (PyYAML) reads 1e3, 1.5e3, .5e3 and 5e-4 as text, so `steps: 1e3` was "not a valid integer" and a rate
# of 5e-4 was a string until the schema converted it; YAML 1.2 and JSON read them as numbers, and so does a recipe.
_RecipeLoader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"^[-+]?(?:[0-9][0-9_]*(?:\.[0-9_]*)?|\.[0-9][0-9_]*)[eE][-+]?[0-9]+$"),
    list("-+.0123456789"),
)


def read_yaml(path: str | Path) -> dict[str, Any]:
    """Read a recipe file (safe YAML, at most :data:`MAX_RECIPE_BYTES`, at most :data:`MAX_RECIPE_VALUES` values with
    its aliases expanded); a top level that is not a mapping, or an empty file, is an error."""
    return _read_file(path).raw


@dataclass(frozen=True)
class _ReadFile:
    """One recipe file as it was read once: its parsed mapping, its text and the sha256 of the bytes both came from
    (before: each file of an ``extends`` chain was read and parsed again for run.json's ``recipe_files`` and hashed a
    third time, so a file edited meanwhile was recorded with a hash of what was not parsed)."""

    file: Path  # resolved
    raw: dict[str, Any]  # ``extends`` included
    text: str
    sha256: str


def _read_file(path: str | Path) -> _ReadFile:
    """:func:`read_yaml`'s reading, with the text and the bytes' sha256."""
    path = Path(path)
    try:
        if path.stat().st_size > MAX_RECIPE_BYTES:
            raise FacekitError(f"{path} is {path.stat().st_size:,} bytes: not a recipe (at most {MAX_RECIPE_BYTES:,})")
        data = path.read_bytes()
        # As read_text(encoding="utf-8") decoded it: universal newlines (\r\n and \r read as \n, so a problem's
        # marks and a value echoed as written fall where they did); a UTF-8 BOM is kept, and YAML skips it.
        text = data.decode("utf-8").replace("\r\n", "\n").replace("\r", "\n")
    except FileNotFoundError:
        raise FacekitError(f"recipe not found: {path}") from None
    except IsADirectoryError:
        raise FacekitError(f"{path} is a folder, not a recipe file") from None
    except UnicodeDecodeError:
        raise FacekitError(f"{path} is not a UTF-8 text file, so not a recipe") from None
    try:
        raw = yaml.load(text, Loader=_RecipeLoader)  # a SafeLoader subclass
    except yaml.YAMLError as exc:
        raise RecipeError([Problem("", f"not valid YAML: {_yaml_problem(exc)}")], str(path)) from None
    except RecursionError:
        raise RecipeError([Problem("", "nested too deeply to be a recipe")], str(path)) from None
    try:
        too_large = _expanded_size(raw, {}) > MAX_RECIPE_VALUES
    except RecursionError:
        raise RecipeError([Problem("", "nested too deeply to be a recipe")], str(path)) from None
    if too_large:
        problem = f"more than {MAX_RECIPE_VALUES:,} values once its YAML aliases are expanded: refused as an alias bomb"
        raise RecipeError([Problem("", problem)], str(path))
    if raw is None or raw == {}:  # all defaults would train on no data: a file emptied or saved by mistake
        raise RecipeError(
            [Problem("", "no sections: a recipe names at least its data (see `facekit list recipes`)")], str(path)
        )
    if not isinstance(raw, dict):
        raise RecipeError([Problem("", "the top level must be a mapping of sections")], str(path))
    return _ReadFile(path.resolve(), raw, text, hashlib.sha256(data).hexdigest())


def _model_in(annotation: Any) -> type[BaseModel] | None:
    """The BaseModel class inside ``annotation`` (``X``, ``X | None``), if there is one."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    if get_origin(annotation) in (Union, UnionType):
        models = [a for a in get_args(annotation) if a is not NoneType]
        if len(models) == 1:
            return _model_in(models[0])
    return None


def _is_free_mapping(annotation: Any) -> bool:
    return get_origin(annotation) is dict


def _is_list(annotation: Any) -> bool:
    return get_origin(annotation) is list


def _dotted(path: str) -> str:
    """A dotted path with list indexes as numbers (``apps.00.name`` is ``apps.0.name``)."""
    return ".".join(str(int(part)) if part.isdigit() else part for part in path.split("."))


def _set_path(
    raw: dict[str, Any],
    model: type[BaseModel],
    dotted: str,
    value: Any,
    prefix: str = "",
    given: Sequence[str] = (),
    text: str | None = None,
) -> Problem | None:
    """Set ``raw[dotted] = value`` if the schema knows the path; otherwise return the problem (``prefix``: where
    ``raw`` sits in the recipe, for the message; ``given``: the full paths the command line set before this one;
    ``text``: the value as the command line wrote it, taken as it is for a text field: :func:`text_value`)."""
    parts = dotted.split(".")
    node: Any = raw
    current_model: type[BaseModel] | None = model
    for depth, part in enumerate(parts):
        last = depth == len(parts) - 1
        where = ".".join([p for p in (prefix, *parts[:depth]) if p]) or "the top level"
        if current_model is None:  # inside a free mapping such as params: any key goes
            if not isinstance(node, dict):
                return Problem(f"--set {dotted}", f"{where} is not a mapping")
            if last:
                node[part] = text_value(None, text, value)
                return None
            node = node.setdefault(part, {})
            continue
        fields = current_model.model_fields
        if part not in fields:
            hint = did_you_mean(part, list(fields), cutoff=0.7)
            known = hint or f"keys: {', '.join(fields)}"
            return Problem(f"--set {dotted}", f"unknown path: {part!r} is not a key of {where} ({known})")
        annotation = fields[part].annotation
        if last:
            if current_model is ComponentRef and part == "name" and node.get("name") != value:
                # The params were the other component's (as ``extends:`` does), except those this command line set.
                at = _dotted(".".join(p for p in (prefix, *parts[:depth]) if p) + ".params")
                earlier = [_dotted(key) for key in given]
                params = node.get("params")
                if not isinstance(params, dict):
                    node["params"] = {}
                elif at not in earlier:  # (all of them when the command line set the whole mapping)
                    mine = {key[len(at) + 1 :].split(".")[0] for key in earlier if key.startswith(at + ".")}
                    node["params"] = {k: v for k, v in params.items() if k in mine}
            node[part] = text_value(annotation, text, value)
            return None
        child = node.get(part)
        if _is_list(annotation):
            index = parts[depth + 1]
            items = child if isinstance(child, list) else []
            if not index.isdigit() or int(index) >= len(items):
                return Problem(f"--set {dotted}", f"{'.'.join(parts[: depth + 1])} has {len(items)} items")
            item_model = _model_in(get_args(annotation)[0])
            rest = ".".join(parts[depth + 2 :])
            if not rest:
                items[int(index)] = text_value(get_args(annotation)[0], text, value)
                return None
            if item_model is None or not isinstance(items[int(index)], dict):
                return Problem(f"--set {dotted}", "cannot set inside this list item")
            inside = ".".join([p for p in (prefix, *parts[: depth + 2]) if p])
            problem = _set_path(items[int(index)], item_model, rest, value, inside, given, text)
            return Problem(f"--set {dotted}", problem.message) if problem else None
        if not isinstance(child, dict):
            # Start from the field's default so that setting one key keeps the others (e.g. the warper's name).
            default = fields[part].get_default(call_default_factory=True)
            child = default.model_dump() if isinstance(default, BaseModel) else {}
            node[part] = child
        node = child
        current_model = None if _is_free_mapping(annotation) else _model_in(annotation)
        if current_model is None and not _is_free_mapping(annotation):
            return Problem(f"--set {dotted}", f"{'.'.join(parts[: depth + 1])} is a value, not a section")
    return None


def path_override(key: str, path: str | Path) -> str:
    """``key=path`` as an override whose value stays the path as written: YAML would read a path with `` #`` as a
    comment, ``yes``/``null`` as a bool/None, ``0123`` as a number; a JSON string is a YAML string."""
    return f"{key}={json.dumps(str(path))}"


def text_value(annotation: Any, text: str | None, value: Any) -> Any:
    """A ``--set`` value as the command line wrote it where YAML would misread it (helper-74): an unquoted value YAML
    reads as text is the text as written (``evaluate.output=runs/eval #2`` lost `` #2`` as a comment and overwrote
    another model's results; a component's param or a list item too: helper-76); for a text field of type
    ``annotation`` (a path, a name) a value YAML reads as a number or bool is the text (``train.output=2024``), and
    ``null``/``~`` is None (a field that may be empty is emptied, a required one refused). Quoted values (as
    :func:`path_override` writes) and empty ones are YAML's: an empty required field is refused, not the current
    folder."""
    if text is None or not text.strip() or text.strip()[:1] in ("'", '"'):
        return value
    if isinstance(value, str):
        return text.strip()
    kinds = set(get_args(annotation)) if get_origin(annotation) in (Union, UnionType) else {annotation}
    if str not in kinds or kinds - {str, type(None)} or value is None:
        return value
    return text.strip()


def apply_overrides(raw: dict[str, Any], overrides: Iterable[str]) -> list[Problem]:
    """Apply ``a.b=value`` overrides in place (values parsed as YAML); return the problems found."""
    problems = []
    given: list[str] = []
    for item in overrides:
        key, sep, text = item.partition("=")
        if not sep or not key.strip():
            problems.append(Problem(f"--set {item}", "expected KEY=VALUE, e.g. train.steps=100"))
            continue
        grid_key = _dotted(key.strip()).removeprefix("bench.grid.") if key.strip().startswith("bench.grid.") else ""
        if "." in grid_key:  # (helper-150: it set bench.grid.train = {batch_size: ...}, "must be a list")
            problems.append(
                Problem(
                    f"--set {item.strip()}",
                    "bench.grid's keys are recipe paths, dots and all, so --set cannot reach one by path: set the "
                    f"grid whole, --set 'bench.grid={{{grid_key}: {text.strip()}}}'",
                )
            )
            continue
        value = _override_value(text)
        problem = _set_path(raw, Recipe, key.strip(), value, given=given, text=text)
        given.append(key.strip())
        if problem:
            problems.append(problem)
    return problems


def _override_value(text: str) -> Any:
    """A ``--set`` value as YAML reads it (an empty one is None; one that is not valid YAML, the text)."""
    try:
        return yaml.load(text, Loader=_RecipeLoader) if text.strip() else None  # (a SafeLoader)
    except yaml.YAMLError:
        return text


def _validate_sections(raw: Mapping[str, Any]) -> tuple[dict[str, Any], list[Problem]]:
    """Validate each top-level section on its own, so one bad section does not hide the others' problems."""
    values: dict[str, Any] = {}
    problems: list[Problem] = []
    fields = Recipe.model_fields
    for key in raw:
        if key not in fields:
            problems.append(Problem(str(key), "extra field not permitted"))
    for name, info in fields.items():
        if name not in raw:
            continue
        try:
            values[name] = TypeAdapter(info.annotation).validate_python(raw[name])  # type: ignore[arg-type]
        except ValidationError as exc:
            problems.extend(problems_from_validation(exc, prefix=name))
    return values, [_with_nearest_field(problem) for problem in problems]


def _with_nearest_field(problem: Problem) -> Problem:
    """An unknown key's problem with the nearest field of its section, when one is close ('train.stpes': did you
    mean 'steps'?); any other problem as it is."""
    if problem.message != "extra field not permitted":
        return problem
    *parents, key = problem.path.split(".")
    model: type[BaseModel] | None = Recipe
    for part in parents:
        info = model.model_fields.get(part) if model is not None else None
        model = _model_in(info.annotation) if info is not None else None
    hint = did_you_mean(key, list(model.model_fields), cutoff=0.7) if model is not None else ""
    return replace(problem, message=f"{problem.message}; {hint}") if hint else problem


def _resolve_components(components: Components) -> tuple[dict[str, ResolvedComponent], list[Problem]]:
    resolved: dict[str, ResolvedComponent] = {}
    problems: list[Problem] = []
    for slot, kind in SLOT_KINDS.items():
        value = getattr(components, slot)
        refs: list[tuple[str, ComponentRef]]
        if isinstance(value, list):
            refs = [(f"{slot}.{i}", ref) for i, ref in enumerate(value)]
        else:
            refs = [(slot, value)] if value is not None else []
        for key, ref in refs:
            path = f"components.{key}"
            try:  # unknown (close names listed), or registered by two plugins (both named)
                spec = get_registry(kind).get(ref.name)
            except (ComponentNotFoundError, DuplicateComponentError) as error:
                problems.append(Problem(f"{path}.name", str(error)))
                continue
            try:
                params = spec.params.model_validate(ref.params)
            except ValidationError as exc:
                fields = list(spec.params.model_fields)
                problems.extend(problems_from_validation(exc, prefix=f"{path}.params", fields=fields))
                continue
            resolved[key] = ResolvedComponent(key, kind, spec, params)
    return resolved, problems


def _bench_judge_problems(bench: BenchSection) -> list[Problem]:
    """Each ``bench.judges`` item that is no encoder (close names listed), or whose params its encoder's ``Params``
    refuses, at its path: before, a name was looked up only when the bench built its judges, after the recipe's
    checks, and no item had params to check."""
    problems: list[Problem] = []
    for index, ref in enumerate(bench.judges):
        path = f"bench.judges.{index}"
        try:
            spec = get_registry("encoder").get(ref.name)
        except (ComponentNotFoundError, DuplicateComponentError) as error:
            problems.append(Problem(f"{path}.name" if "params" in ref.model_fields_set else path, str(error)))
            continue
        try:
            spec.params.model_validate(ref.params)
        except ValidationError as exc:
            fields = list(spec.params.model_fields)
            problems.extend(problems_from_validation(exc, prefix=f"{path}.params", fields=fields))
    return problems


def bench_judge(ref: ComponentRef, components: Mapping[str, ResolvedComponent]) -> tuple[dict[str, Any], Any]:
    """A ``bench.judges`` item ``ref`` of a recipe whose resolved ``components`` are these, as the bench builds it:
    (its params where they are not its encoder's defaults, the resolved component it is built from or None: from
    those params). With params, as `facekit eval --judge NAME:KEY=VALUE`: those of components.judge updated with them
    where it is that encoder (as ``--set components.judge.params.KEY=VALUE``), else they and the defaults for the rest
    (before: components.judge's dropped, so ``{name: facenet, params: {sha256: null}}`` beside a CASIA judge was a
    vggface2 one, where eval's --judge kept CASIA); a name alone is components.judge's, else components.encoder's,
    with its params, else the encoder with its defaults."""
    judge = components.get("judge")
    if "params" in ref.model_fields_set:
        params = dict(ref.params)
        if judge is not None and judge.spec.name == ref.name:
            params = {**judge.params.model_dump(exclude_unset=True), **params}
        spec = get_registry("encoder").get(ref.name)
        built = spec.validate_params(params).model_dump(mode="json", exclude_defaults=True)
        same = judge is not None and judge.spec.name == ref.name and _non_default(judge) == built
        return built, judge if same else None
    component = next(
        (
            components[key]
            for key in ("judge", "encoder")
            if key in components and components[key].spec.name == ref.name
        ),
        None,
    )
    return (_non_default(component) if component is not None else {}), component


def _non_default(component: ResolvedComponent) -> dict[str, Any]:
    """The params a resolved ``component`` is built with, less its defaults."""
    return component.params.model_dump(mode="json", exclude_defaults=True)


def _bench_judge_repeats(bench: BenchSection, components: Mapping[str, ResolvedComponent]) -> list[Problem]:
    """Each ``bench.judges`` item that is an earlier one again (the same encoder built with the same params,
    :func:`bench_judge`), at its path, as `facekit eval` refuses a --judge given twice: before, dropped without a
    word, so the table had a judge fewer than the list. (No bench.judges: components.encoder and components.judge
    judge, once where they are one encoder with the same params, as the evaluate stage judges.)"""
    problems: list[Problem] = []
    first: dict[str, int] = {}
    for index, ref in enumerate(bench.judges):
        path = f"bench.judges.{index}"
        try:
            params, _ = bench_judge(ref, components)
        except ValidationError as exc:  # (components.judge's params with the item's: each valid alone)
            problems.extend(problems_from_validation(exc, prefix=f"{path}.params"))
            continue
        key = json.dumps([ref.name, params], sort_keys=True)
        if key in first:
            with_params = f" with params {params}" if params else " with its default params"
            problems.append(
                Problem(
                    path,
                    f"{ref.name}{with_params} is bench.judges.{first[key]} again: list each judge (encoder and "
                    "params) once",
                )
            )
        else:
            first[key] = index
    return problems


def _read_people(path: Path) -> set[str]:
    """Names in an LFW people file: the people prepare trains on (:func:`facekit.data.sources.read_people_file`)."""
    from facekit.data.sources import read_people_file

    return set(read_people_file(path))


def _differentiable(encoder: ResolvedComponent) -> bool:
    """Whether an encoder's card says gradients reach its input pixels (the identity-loss terms need them)."""
    card = encoder.spec.card
    return card is not None and bool(card.differentiable)


def _cross_checks(recipe: Recipe, components: dict[str, ResolvedComponent]) -> list[Problem]:
    """The rules between sections and components: each problem at the setting it refuses, with the others it reads
    in ``about`` (so named by whichever a ``--set`` gave), in words that follow its path."""
    problems = []
    prepare = recipe.prepare
    if prepare.interocular_px >= prepare.image_size / 2:
        problems.append(
            Problem(
                "prepare.interocular_px",
                f"must be less than half of prepare.image_size ({prepare.image_size})",
                ("prepare.image_size",),
            )
        )
    through_encoder = recipe.train.loss.through_encoder()
    if recipe.train.loss.identity_own > 0:
        if components.get("identity_encoder") is None:
            problems.append(
                Problem(
                    "train.loss.identity_own",
                    "is the encoder's own identity term beside components.identity_encoder's; without an identity "
                    "encoder, train.loss.identity is that term: set it, or name components.identity_encoder",
                    ("components.identity_encoder",),
                )
            )
        elif components.get("encoder") is not None:
            if not _differentiable(components["encoder"]):
                problems.append(
                    Problem(
                        "train.loss.identity_own",
                        f"needs gradients through encoder {components['encoder'].spec.name!r}, which is not "
                        "differentiable in torch (its card says so): set train.loss.identity_own to 0",
                        ("components.encoder.name",),
                    )
                )
    # The loss terms run components.identity_encoder when the recipe names one, else the encoder.
    encoder = components.get("identity_encoder") or components.get("encoder")
    if through_encoder and encoder is not None:
        if not _differentiable(encoder):
            slot = "components.identity_encoder" if encoder.slot == "identity_encoder" else "encoder"
            problems.append(
                Problem(
                    f"train.loss.{through_encoder[0]}",
                    f"needs gradients through {slot} {encoder.spec.name!r}, which is not differentiable in torch (its "
                    f"card says so): set train.loss.{' / '.join(through_encoder)} to 0 or choose a differentiable "
                    "encoder",
                    (*(f"train.loss.{term}" for term in through_encoder[1:]), f"components.{encoder.slot}.name"),
                )
            )
    decoder = components.get("decoder")
    decoder_size = getattr(decoder.params, "image_size", None) if decoder is not None else None
    if decoder_size is not None and decoder_size != prepare.image_size:
        problems.append(
            Problem(
                "components.decoder.params.image_size",
                f"must equal prepare.image_size ({prepare.image_size})",
                ("prepare.image_size",),
            )
        )
    if recipe.train.precision == "fp16" and recipe.train.device == "cpu":
        fp16 = "fp16 needs a GPU; use bf16 or fp32 on the CPU"
        problems.append(Problem("train.precision", fp16, ("train.device",)))
    if recipe.train.photo_casts and not recipe.train.photo_inputs:  # (helper-74: accepted, and it did nothing)
        casts = "casts copies of train.photo_inputs' photos: set photo_inputs"
        problems.append(Problem("train.photo_casts", casts, ("train.photo_inputs",)))
    problems.extend(_check_data(recipe.data, recipe.evaluate.data))
    problems.extend(_shared_outputs(recipe))
    problems.extend(_outputs_among_photos(recipe))
    for key, values in recipe.bench.grid.items():
        if not values:
            problems.append(Problem(f"bench.grid.{key}", "needs at least one value"))
        problem = _set_path(recipe.model_dump(mode="json"), Recipe, key, values[0] if values else None)
        if problem is not None:
            problems.append(Problem(f"bench.grid.{key}", problem.message))
    return problems


def _shared_outputs(recipe: Recipe) -> list[Problem]:
    """Each stage writes its own folder: two stages sharing one overwrite each other's files (augment's contact sheet
    over prepare's) or refuse them (infer reads prepare's manifest.jsonl as not its own)."""
    owners: dict[Path, str] = {}
    problems = []
    for stage in ("prepare", "augment", "train", "evaluate", "infer", "bench"):
        folder = Path(getattr(recipe, stage).output).expanduser().resolve()
        if folder in owners:
            problems.append(
                Problem(
                    f"{stage}.output",
                    f"is {owners[folder]}.output's folder too: give each stage its own",
                    (f"{owners[folder]}.output",),
                )
            )
        else:
            owners[folder] = stage
    return problems


def _outputs_among_photos(recipe: Recipe) -> list[Problem]:
    """No stage writes inside a photo folder the recipe reads (``data.train``/``data.test`` folder sources): its
    crops, arrays and sheets would be read back as a person's photos by the next prepare."""
    root = recipe.data.resolved_root()
    problems = []
    for section in ("train", "test"):
        for i, src in enumerate(getattr(recipe.data, section)):
            if src.source != "folder" or src.path is None:
                continue
            photos = src.folder(root).resolve()
            for stage in ("prepare", "augment", "train", "evaluate", "infer", "bench"):
                folder = Path(getattr(recipe, stage).output).expanduser().resolve()
                if folder == photos or photos in folder.parents:
                    problems.append(
                        Problem(
                            f"{stage}.output",
                            f"is inside data.{section}.{i}'s photo folder {photos}: what it writes would be read "
                            "as photos of a person; choose a folder outside it",
                            (f"data.{section}.{i}.path", "data.root"),
                        )
                    )
    return problems


#: The photo number LFW appends to a person's name in its file names.
LFW_NUMBER = re.compile(r"_\d{4}$")

#: London subsets no recipe may train on: they are what the benchmarks report on as photos never trained on.
HELD_OUT_LONDON = {
    "smiling_front": "the London smiling photos are held out (benchmarks/adjust.py's known-cast report and quality.py "
    "--set london-smiling judge on them as photos never trained on): train on neutral_front and canada",
}


def folder_people_names(folder: Path) -> frozenset[str]:
    """The names a photo folder may hold LFW people under, to find a DevTest person copied in: every folder name at
    any depth, and every file's name without its LFW number (``Adrien_Brody_0001.jpg`` loose in the folder, or in
    ``people/``, is ``Adrien_Brody``). The files are those the photo readers read
    (:func:`facekit.data.sources.walk_visible`: hidden entries skipped, links to folders followed), and a linked
    file's target too (``carl/x.jpg`` -> ``.../Adrien_Brody/Adrien_Brody_0001.jpg`` is his photo)."""
    from facekit.data.sources import walk_visible

    names: set[str] = set()
    for base, folders, files in walk_visible(folder):
        names.update(folders)
        for name in files:
            names.add(LFW_NUMBER.sub("", Path(name).stem))
            if (base / name).is_symlink():  # carl/x.jpg -> .../Adrien_Brody_0001.jpg is his photo, whatever its name
                target = Path(os.path.realpath(base / name))
                names.update((LFW_NUMBER.sub("", target.stem), target.parent.name))
    return frozenset(names)


def _is_dir(path: Path) -> bool:
    """``path.is_dir()``, and False for a name no file system holds (a part over 255 bytes: pathlib raises
    ENAMETOOLONG where it says False of any other missing path; helper-150: `--set data.root=` a long value was a
    traceback, not "data folder not found")."""
    try:
        return path.is_dir()
    except OSError:
        return False


def _is_file(path: Path) -> bool:
    """``path.is_file()``, False for a name no file system holds (:func:`_is_dir`)."""
    try:
        return path.is_file()
    except OSError:
        return False


def _check_data(data: DataSection, evaluated: str = "lfw-devtest") -> list[Problem]:
    """Sources exist, and no test person is used for training: the people of ``data.test`` and, since ``facekit
    eval`` and ``facekit bench`` score on LFW peopleDevTest (``evaluate.data`` lfw-devtest), those people too."""
    problems: list[Problem] = []
    root = data.resolved_root()
    if not (data.train or data.test):
        return problems
    if not _is_dir(root):
        where = "" if root.is_absolute() else f" (that is {root.absolute()}, from the folder the command runs in)"
        return [Problem("data.root", f"data folder not found: {root}{where}; set data.root or FACEKIT_DATA")]
    # Who each source trains or tests on, by the setting that names them (data.train.0.people): people (LFW names, a
    # folder source's person folders); lfw: the LFW names among them; deep: every name a folder source may hold LFW
    # photos under, matched against LFW names only (two folders' IMG_0001.jpg and IMG_0002.jpg are not one person).
    sides: dict[str, list[_Cast]] = {"train": [], "test": []}
    for section in ("train", "test"):
        for i, src in enumerate(getattr(data, section)):
            path = f"data.{section}.{i}"
            if src.source == "lfw":
                assert src.people is not None  # checked by DataSource
                file = root / "lfw" / src.people
                if not _is_file(file):
                    problems.append(Problem(f"{path}.people", f"file not found: {file}", ("data.root",)))
                    continue
                names = frozenset(_read_people(file))
                sides[section].append(_Cast(f"{path}.people", f"of {path}.people ({src.people})", names, names))
            elif src.source == "folder":
                assert src.path is not None
                folder = src.folder(root)
                if not _is_dir(folder):
                    relative = not Path(src.path).expanduser().is_absolute()
                    where = f" (a relative path is under data.root, {root})" if relative else ""
                    # A photo given where its folder belongs (helper-133: it said "folder not found" of a file that
                    # is there).
                    missing = (
                        f"{folder} is a file: a folder source's path is a folder of people, PATH/<person>/<photo>"
                        if _is_file(folder)
                        else f"folder not found: {folder}{where}"
                    )
                    problems.append(Problem(f"{path}.path", missing, ("data.root",) if relative else ()))
                    continue
                people = frozenset(p.name for p in folder.iterdir() if p.is_dir() and not p.name.startswith("."))
                sides[section].append(
                    _Cast(f"{path}.path", f"of {path}.path ({src.path})", people, deep=folder_people_names(folder))
                )
            elif not _is_dir(root / "london" / str(src.subset)):
                missing = f"folder not found: {root / 'london' / str(src.subset)}"
                problems.append(Problem(f"{path}.subset", missing, ("data.root",)))
            elif section == "train" and src.subset in HELD_OUT_LONDON:
                problems.append(Problem(f"{path}.subset", HELD_OUT_LONDON[str(src.subset)]))
    devtest = root / "lfw" / "peopleDevTest.txt"
    if evaluated == "lfw-devtest" and data.train and _is_file(devtest):
        names = frozenset(_read_people(devtest))
        scored = "of LFW's peopleDevTest.txt (what facekit eval and bench score on)"
        sides["test"].append(_Cast("", scored, names, names))
    for trained in sides["train"]:
        problem = _test_people_in(trained, sides["test"])
        if problem is not None:
            problems.append(problem)
    return problems


@dataclass(frozen=True)
class _Cast:
    """The people one data source names (:func:`_check_data`): ``setting`` names it (``data.train.0.people``; empty
    for the LFW DevTest people facekit eval scores on), ``said`` how a problem says it; ``lfw`` the LFW names among
    ``people``, ``deep`` the names a folder may hold LFW photos under."""

    setting: str
    said: str
    people: frozenset[str]
    lfw: frozenset[str] = frozenset()
    deep: frozenset[str] = frozenset()

    def shared(self, other: _Cast) -> set[str]:
        """The people of ``other`` found here too."""
        return set((self.people & other.people) | (self.deep & other.lfw) | (self.lfw & other.deep))


def _test_people_in(trained: _Cast, tests: Sequence[_Cast]) -> Problem | None:
    """A training source's test people: at the setting that names the source, with how many, who, of which test
    source and what to change (helper-159: before, "data.train: 1711 test people are also training people", at the
    section, naming neither the source nor the test set they are in, nor labelled by a --set of data.test)."""
    overlaps = [(test, shared) for test in tests if (shared := trained.shared(test))]
    if not overlaps:
        return None
    found = sorted(set().union(*(shared for _, shared in overlaps)))
    shown = ", ".join(found[:5]) if len(found) <= 5 else f"e.g. {', '.join(found[:5])}"
    who = "test person" if len(found) == 1 else "test people"
    settings = [test.setting for test, _ in overlaps if test.setting]
    if len(settings) < len(overlaps):  # facekit eval's: only the training data can change
        fix = "train on others"
        if trained.setting.endswith(".people"):
            fix += " (LFW's peopleDevTrain.txt shares none with peopleDevTest.txt)"
    else:
        fix = f"take them out of it or of {' or '.join(settings)}"
    of = " and ".join(test.said for test, _ in overlaps)
    message = f"holds {len(found)} {who} ({shown}) {of}: never train on test people; {fix}"
    return Problem(trained.setting, message, tuple(settings))


#: A recipe file's suffixes: a name given with one is a path, always the file (never a shipped recipe).
RECIPE_SUFFIXES = (".yaml", ".yml")


def recipes_folder() -> Path:
    """Where the shipped recipes are: ``facekit/recipes/`` in an installed wheel (pyproject maps the checkout's
    top-level ``recipes/`` there), else the checkout's ``recipes/`` beside the package (a source tree or an editable
    install, where the repository keeps them at its top level as its layout says)."""
    packaged = Path(str(resources.files("facekit") / "recipes"))
    return packaged if packaged.is_dir() else Path(__file__).resolve().parent.parent / "recipes"


def shipped_recipes() -> dict[str, Path]:
    """The recipes facekit ships (:func:`recipes_folder`) by name: the file's path under that folder without
    ``.yaml`` (``demo``, ``ablations/no-identity``), the top folder's first. None where there is no such folder."""
    folder = recipes_folder()
    names = {file.relative_to(folder).with_suffix("").as_posix(): file for file in folder.rglob("*.yaml")}
    return {name: names[name] for name in sorted(names, key=lambda name: (name.count("/"), name))}


def _as_name(given: str | Path) -> str:
    """``given`` as a shipped recipe's name is spelled: ``/`` between folders, also where it was typed with ``\\``
    as on Windows (``ablations\\no-identity``: on Linux and macOS a backslash is no separator, so the name was not
    found)."""
    return Path(given).as_posix().replace("\\", "/")


def _shipped_name(given: str | Path) -> str | None:
    """The shipped recipe a path that is not there may mean: ``recipes/demo.yaml`` (the checkout's path, typed where
    there is no checkout), ``../paper.yaml``, ``Paper.yaml``: the name its end spells (in any case), if one does."""
    if Path(given).suffix.lower() not in RECIPE_SUFFIXES:
        return None
    stem = _as_name(Path(given).with_suffix("")).casefold()
    return next(
        (name for name in shipped_recipes() if stem == name.casefold() or stem.endswith(f"/{name.casefold()}")), None
    )


def _suggestion(name: str, shipped: Sequence[str], files: Sequence[str] = ()) -> str:
    """'did you mean ...?' for a name that is no shipped recipe's: ``files`` (:func:`_files_like`), then the shipped
    name it spells in another case (``Demo``, ``PAPER``: difflib found ``demo`` for the first but nothing for the
    second), else the nearest in any case. Only a suggestion: a name in another case never runs the shipped recipe,
    as a case-insensitive file system would run a file of the working folder of that name."""
    folded = {choice.casefold(): choice for choice in shipped}
    same = folded.get(name.casefold())
    close = [same] if same is not None else difflib.get_close_matches(name.casefold(), list(folded), n=1, cutoff=0.6)
    meant = [*files, *(folded[choice.casefold()] for choice in close)]  # (0.6: did_you_mean's cutoff)
    return f"did you mean {' or '.join(map(repr, meant))}?" if meant else ""


def _files_like(given: Path) -> list[str]:
    """The recipe file (.yaml, .yml) of the folder ``given`` points into whose name, or name without its suffix
    (``mine`` for mine.yaml), is nearest to its own, as it would be typed; none where nothing there is as close as a
    typo (helper-188: `facekit run mine.yam` beside mine.yaml suggested only shipped names)."""
    folder = given.parent
    try:
        files = [file.name for file in folder.iterdir() if file.suffix.lower() in RECIPE_SUFFIXES and file.is_file()]
    except OSError:  # (no such folder, or not one to read)
        return []
    spelled = {key: name for name in files for key in (name.casefold(), Path(name).stem.casefold())}
    # (0.8, not difflib's 0.6: the suffix two names share made demo.yaml "close" to mine.yaml)
    close = difflib.get_close_matches(given.name.casefold(), list(spelled), n=1, cutoff=0.8)
    return [str(folder / spelled[key]) for key in close]


def find_recipe(given: str | Path) -> Path:
    """The recipe file ``given`` names: the file at that path when there is one (a path always means the file, and so
    does a name a file of the working directory has); else, for a name without ``.yaml`` (``demo``,
    ``ablations/no-identity``, or ``ablations\\no-identity`` as typed on Windows), the shipped recipe of that name
    (:func:`shipped_recipes`). Neither: a :class:`FacekitError` that says the shipped recipe meant (a name in another
    case is only suggested) or lists the shipped names."""
    path = Path(given)
    if path.is_file():
        return path
    shipped = shipped_recipes()
    if not str(given).strip():  # (Path("") is the working folder: "." is a folder, not a recipe file, it said)
        raise _empty_name("recipe name", "a recipe file's path or a shipped recipe's name", ", ".join(shipped))
    name = _as_name(path)
    if path.suffix.lower() not in RECIPE_SUFFIXES and name in shipped:
        return shipped[name]
    if path.exists():
        return path  # a folder: read_yaml says that it is not a recipe file
    files = _files_like(path)
    if path.suffix.lower() in RECIPE_SUFFIXES:
        meant = _shipped_name(path)
        hints = [_suggestion("", [], files)] if files else []
        hints += [f"a shipped recipe is given by its name alone: {meant}"] if meant else []
        said = "; ".join(hints)
        raise OptionsRefused(f"recipe not found: {given}{f' ({said})' if said else ''}")
    close = _suggestion(name, list(shipped), files)
    raise OptionsRefused(
        f"no recipe file or shipped recipe named '{given}'{f' ({close})' if close else ''}; "
        f"the shipped ones: {', '.join(shipped)}"
    )


def _empty_name(what: str, give: str, choices: str) -> FacekitError:
    """The refusal of an empty recipe name or path (``facekit run ""``, ``facekit bench ""``): ``what`` is empty,
    ``give`` what instead, ``choices`` listed after it."""
    return OptionsRefused(f"the {what} is empty: give {give} ({choices})")


def find_grid(given: str | Path) -> Path:
    """:func:`find_recipe` for ``facekit bench``, whose recipes (the grids, ``benchmarks/*.yaml``) are not installed
    with facekit: one not found, or an empty path, is refused as a path from the working folder, not by the shipped
    recipes' list (none of them has a grid), naming the grid of that name in facekit's source checkout where there is
    one, else the checkout's grids (where facekit runs from one) or where they are."""
    if str(given).strip() or Path(given).is_file():
        try:
            return find_recipe(given)
        except FacekitError:
            pass
    grids = _checkout_grids()  # (listed only for the refusal)
    listed = sorted(grids.glob("*.yaml")) if grids is not None else []
    elsewhere = "they are in a source checkout of facekit, benchmarks/*.yaml"
    choices = f"facekit's source checkout has {', '.join(map(str, listed))}" if listed else elsewhere
    if not str(given).strip() and not Path(given).is_file():  # (helper-180: it listed the shipped recipes)
        raise _empty_name("grid recipe's path", "a bench grid's file path", choices)
    meant = grids / f"{Path(_as_name(given)).stem}.yaml" if grids is not None else None
    # (helper-180: from a checkout without that name it said they are "in a source checkout", the one it runs from)
    where = (
        f"; the one of that name in facekit's source checkout: {meant}"
        if meant is not None and meant.is_file()
        else f"; {choices}"
    )
    raise OptionsRefused(
        f"grid recipe not found: {given} (looked for {Path(given).absolute()}: a grid is given by its file's path, "
        f"the bench grids not being installed with facekit{where})"
    )


def _checkout_grids() -> Path | None:
    """The ``benchmarks/`` folder of the source checkout facekit runs from (a source tree or an editable install), or
    None for an installed wheel."""
    top = Path(__file__).resolve().parent.parent
    return top / "benchmarks" if recipes_folder() == top / "recipes" and (top / "benchmarks").is_dir() else None


def _base_file(recipe: Path, base: str) -> Path:
    """The file ``extends: base`` of ``recipe`` reads: the path relative to the recipe's folder (a shipped recipe's
    ``../paper.yaml`` is its shipped sibling), else, for a name without ``.yaml`` that no file there has, the shipped
    recipe of that name (``extends: demo``, from a recipe of the user's own)."""
    path = (recipe.parent / base).resolve()
    if path.is_file() or Path(base).suffix.lower() in RECIPE_SUFFIXES:
        return path
    return shipped_recipes().get(_as_name(base), path).resolve()


def read_recipe(path: str | Path, _chain: tuple[Path, ...] = ()) -> dict[str, Any]:
    """A recipe file (or a shipped recipe's name, :func:`find_recipe`) as plain data, with ``extends: BASE.yaml``
    (relative to the file, or a shipped recipe's name) merged in.

    The file's mappings are merged into the base's key by key; lists and scalars replace the base's, and so does a
    component with another ``name`` (its params belong to the other component). So an ablation states only what it
    changes (``extends: ../paper.yaml`` + ``train: {loss: {identity: 0}}``).
    """
    return _read_chain(path, _chain, [])


def _read_chain(path: str | Path, _chain: tuple[Path, ...], read: list[_ReadFile]) -> dict[str, Any]:
    """:func:`read_recipe`, appending to ``read`` each file of the chain as it is read (the recipe's own first), once:
    run.json's ``recipe_files`` and a problem's echo of a value as written come from those reads."""
    path = find_recipe(path)
    read.append(_read_file(path))
    raw = {key: value for key, value in read[-1].raw.items() if key != "extends"}
    base = read[-1].raw.get("extends")
    if base is None:
        return raw
    if not isinstance(base, str):
        raise RecipeError([Problem("extends", "must be the path of another recipe file")], str(path))
    if not base.strip():  # (the recipe's own folder: "... is a folder, not a recipe file", it said)
        problem = "is empty: give another recipe file's path (relative to this one) or a shipped recipe's name"
        raise RecipeError([Problem("extends", problem)], str(path))
    base_path = _base_file(path, base)
    if not base_path.exists():
        # The nearest recipe file where it looked, as written beside extends: (`extends: bse.yaml` beside base.yaml:
        # before, no suggestion, while a recipe name on the command line got one: helper-188)
        nearest = [Path(file) for file in _files_like(base_path) if Path(file).resolve() != path.resolve()]
        files = [str(Path(base).parent / file.name) for file in nearest]  # (not the recipe itself: a cycle)
        meant = _shipped_name(base)
        hint = f"; {_suggestion('', [], files)}" if files else ""
        hint += f"; a shipped recipe is given by its name alone: extends: {meant}" if meant else ""
        if Path(base).suffix.lower() not in RECIPE_SUFFIXES:  # (`extends: Demo`: the shipped name, in any case)
            close = _suggestion(_as_name(base), list(shipped_recipes()), files)
            hint = f"; nor a shipped recipe's name: {close or 'facekit list recipes names them'}"
        problem = f"{base!r} not found (looked for {base_path}; the path is relative to this recipe's folder{hint})"
        raise RecipeError([Problem("extends", problem)], str(path))
    chain = (*_chain, path.resolve())
    if base_path in chain:
        cycle = " -> ".join(str(p) for p in (*chain, base_path))
        raise RecipeError([Problem("extends", f"recipes extend each other in a cycle: {cycle}")], str(path))
    return _merge(_read_chain(base_path, chain, read), raw)


def _merge(base: Any, update: Any) -> Any:
    if isinstance(base, Mapping) and isinstance(update, Mapping):
        if "name" in base and "name" in update and base["name"] != update["name"]:
            return update
        return {**base, **{k: _merge(base[k], v) if k in base else v for k, v in update.items()}}
    return update


def load_recipe(
    path: str | Path,
    overrides: Sequence[str] = (),
    grid_cell: Collection[str] | Mapping[str, int] = (),
    checks: Callable[[Plan], Sequence[Problem]] | None = None,
) -> Plan:
    """Read (following ``extends``), override, validate and resolve a recipe; raise :class:`RecipeError` listing
    every problem, each set in a base file named with it. ``grid_cell``: those of ``overrides`` that are a bench cell's
    (``facekit.bench.cells``), named in a problem by the file of the ``bench.grid`` they come from and the cell, not
    as a ``--set`` the user did not type; as a mapping (``facekit.bench.placed_cells``), each with its value's place
    in its key's list, which a value listed twice needs to be named right. ``checks``: more rules for the resolved
    plan (:func:`resolve`)."""
    file = find_recipe(path)  # a shipped recipe's name: its file; source stays the name as given
    read: list[_ReadFile] = []  # each file of the chain, read once (bench reads the recipe once per grid cell)
    origins: dict[str, Path] | None = None
    labels: dict[str, str] = {}
    try:
        raw = _read_chain(file, (), read)
        origins = _origins(read)
        labels, written = _grid_cell_labels(path, file, overrides, grid_cell, origins, read) if grid_cell else ({}, {})
        plan = resolve(raw, overrides=overrides, source=str(path), labels=labels, checks=checks, written=written)
        # (hashed as read: `facekit run` starts each stage's run.json hours later, the file maybe edited meanwhile)
        return replace(plan, recipe_files=_sources(read), origins=origins)
    except RecipeError as error:
        # (the recipe's own problems, not a base's file: named as the working folder's file it read, when it is)
        source = (_shadowed(path, file) if error.source in (str(path), str(file)) else None) or error.source
        if origins is None:  # a file of the chain refused: the others as far as they were read
            origins = _origins(read)
        given = {_dotted(item.partition("=")[0].strip()) for item in overrides}
        own, named = file.resolve(), set(labels.values())
        texts: dict[Path, str | None] = {each.file: each.text for each in read}  # (echoed from the text parsed)
        problems = [p if p.path in named else _as_written(p, origins, given, texts) for p in error.problems]
        if not any(origin != own for origin in origins.values()):
            raise RecipeError(problems, source) from None
        located = [p if p.path in named else _located(p, origins, own, given) for p in problems]
        raise RecipeError(located, source) from None


def _shadowed(given: str | Path, file: Path) -> str | None:
    """How a refused recipe is named when ``given`` is a shipped recipe's name that a file of the working folder
    holds, so the file was read instead (helper-154: `facekit run demo` beside a file called demo, not a recipe, said
    only "demo: the top level must be a mapping of sections"): that file, and the shipped one's path to give."""
    shipped = shipped_recipes().get(_as_name(given)) if Path(given).suffix.lower() not in RECIPE_SUFFIXES else None
    if shipped is None or file.resolve() == shipped.resolve():
        return None
    return (
        f"{given} (the working folder's file {given}, read instead of the shipped recipe of that name: give {shipped})"
    )


#: Where a bench cell's value is written: the YAML text (a grid file's, or a --set's value) and the parts of its path
#: in it (``("bench", "grid", "train.lr", "2")``), for echoing it as written (:func:`_written`).
_WrittenAt = tuple[str, tuple[str, ...]]


def _grid_cell_labels(
    path: str | Path,
    file: Path,
    overrides: Sequence[str],
    cell: Collection[str] | Mapping[str, int],
    origins: Mapping[str, Path],
    read: Sequence[_ReadFile],
) -> tuple[dict[str, str], dict[str, _WrittenAt]]:
    """How a problem names each of a bench cell's values: ``bench.grid.train.lr.2 of benchmarks/lr.yaml (cell
    {train.lr: yes})``, its place in the grid's list and the file of the ``extends`` chain that writes that key's
    values in ``bench.grid`` (or the ``--set`` that gave the grid) (helper-147: it was named ``--set train.lr=true``,
    an override the user never typed, for a value written in the grid file), and where each value is written, so a
    refusal echoes it as written there (helper-180: ``(got true)`` for ``yes``, ``1000.0`` for ``1e3``, in the
    refusal and in the cell, and no place in the list). Per value, as a grid's keys may come from several files (a
    base's ``train.lr`` and its child's ``train.batch_size``, merged key by key): helper-150, the file that set
    ``bench.grid`` last was named for every value, so a refused ``train.lr: true`` of the base was looked for in the
    child. ``file``: the recipe file ``path`` names (:func:`find_recipe`), found once by the caller (before: again for
    each value of the cell); ``origins`` (:func:`_origins`) and ``read``: the caller's reading of its chain."""
    places = _grid_cell_places(path, file, overrides, cell, origins, read)
    shown = ", ".join(
        f"{item.partition('=')[0].strip()}: "
        f"{(_source_text(*at) if at is not None else None) or item.partition('=')[2].strip()}"
        for item, (_, _, at) in places.items()
    )
    labels = {item: f"{place} of {where} (cell {{{shown}}})" for item, (place, where, _) in places.items()}
    return labels, {item: at for item, (_, _, at) in places.items() if at is not None}


def _grid_cell_places(
    path: str | Path,
    file: Path,
    overrides: Sequence[str],
    cell: Collection[str] | Mapping[str, int],
    origins: Mapping[str, Path],
    read: Sequence[_ReadFile],
) -> dict[str, tuple[str, str, _WrittenAt | None]]:
    """Each item of a bench ``cell`` (:func:`_grid_cell_labels`' arguments) -> its key's place in ``bench.grid``
    (``bench.grid.train.lr.2``, or the key alone where its value is not found there), what names the grid (its file,
    or the --set that gave it), and where its value is written (None where not found)."""
    typed = [item for item in overrides if item not in cell]
    grid_set = [item for item in typed if _dotted(item.partition("=")[0].strip()).startswith("bench.grid")]
    own = file.resolve()
    files = {each.file: each for each in read}
    places: dict[str, tuple[str, str, _WrittenAt | None]] = {}  # item -> (its key's place, named by, written at)
    for item in cell:
        key, _, value = (part.strip() for part in item.partition("="))
        within: tuple[str, ...] | None
        if grid_set:
            where = f"--set {grid_set[-1].strip()}"
            grid_key, _, text = grid_set[-1].partition("=")
            within = ((key,) if _dotted(grid_key.strip()) == "bench.grid" else ()) if text.strip() else None
            values = _walk(_override_value(text), within) if within is not None else None
            document = text
        else:
            origin = origins.get(f"bench.grid.{key}") or origins.get("bench.grid")
            where = str(path) if origin is None or origin == own else str(origin)
            within = ("bench", "grid", key)
            values = _walk(files[origin].raw, within) if origin in files else None
            document = files[origin].text if origin in files else ""
        # Its place where the caller knows it (bench.placed_cells), else the first of its text: a value listed twice
        # makes cells of one text (before: a refusal of the second named the first's place and echoed its spelling)
        place = cell.get(item) if isinstance(cell, Mapping) else None
        listed = [n for n, each in enumerate(values) if json.dumps(each) == value] if isinstance(values, list) else []
        index = place if place in listed else next(iter(listed), None)
        if index is None or within is None:
            places[item] = (f"bench.grid.{key}", where, None)
        else:
            places[item] = (f"bench.grid.{key}.{index}", where, (document, (*within, str(index))))
    return places


def grid_cells_as_written(
    path: str | Path, overrides: Sequence[str], cells: Sequence[Mapping[str, int]]
) -> list[dict[str, Any]]:
    """Each of a grid's ``cells`` (``facekit.bench.placed_cells``, of ``path`` with the bench's ``overrides``) as the
    grid writes it: {key: its value with each scalar the text at its place in the grid's file, or --set, where it is
    a plain one on one line (``1e3``, ``0.10``, ``yes``, where the cell's JSON holds ``1000.0``, ``0.1``, ``true``),
    else None (a quoted scalar, which reads as itself)}, so the bench's table, plot and lines name a value as the user
    wrote it (helper-199: they showed the JSON, a value the grid does not hold). A key whose value is not found there
    is left out."""
    file = find_recipe(path)
    read: list[_ReadFile] = []
    _read_chain(file, (), read)
    origins = _origins(read)
    shown = []
    for cell in cells:
        places = _grid_cell_places(path, file, overrides, cell, origins, read)
        shown.append(
            {
                item.partition("=")[0].strip(): _written_like(json.loads(item.partition("=")[2]), _node_at(*at), at[0])
                for item, (_, _, at) in places.items()
                if at is not None
            }
        )
    return shown


def _written_like(value: Any, node: yaml.Node | None, text: str) -> Any:
    """``value`` (read from the YAML ``node`` of ``text``) with each scalar replaced by its plain text there
    (:func:`_plain_text`), or None where it has none; mappings and lists as they are, holding theirs."""
    if isinstance(value, Mapping):
        return {key: _written_like(inner, _child(node, str(key)), text) for key, inner in value.items()}
    if isinstance(value, list):
        return [_written_like(inner, _child(node, str(n)), text) for n, inner in enumerate(value)]
    return _plain_text(node, text)


def _child(node: yaml.Node | None, part: str) -> yaml.Node | None:
    return _yaml_child(node, part) if node is not None else None


def _walk(value: Any, parts: Sequence[str]) -> Any:
    """The value at ``parts`` (mapping keys) of ``value``, or None."""
    for part in parts:
        value = value.get(part) if isinstance(value, Mapping) else None
    return value


def recipe_files(path: str | Path) -> list[Path]:
    """The recipe and every file its ``extends`` chain reads, resolved (each base as :func:`read_recipe` finds it,
    one that sets nothing the recipe keeps too; a cycle or a base not there ends the list)."""
    files: list[Path] = []
    # (not resolved: the recipe's extends is relative to its folder as given, a symbolic link's, as read_recipe
    # reads it; before, the link's target's folder, so a base the link's folder holds was missed or another file
    # named, in run.json, a problem's "set in" and its value's echo)
    current = find_recipe(path)
    while current.resolve() not in files:
        files.append(current.resolve())
        try:
            base = read_yaml(current).get("extends")
        except (FacekitError, OSError):
            break
        if not isinstance(base, str):
            break
        current = _base_file(current, base)
    return files


def _sources(read: Sequence[_ReadFile]) -> tuple[dict[str, Any], ...]:
    """run.json's ``recipe_files``: the files of a recipe's ``extends`` chain as :func:`_read_chain` read them, itself
    first: ``file`` (resolved), ``shipped`` (the shipped recipe's name, or None for a file of the user's) and the
    ``sha256`` of the bytes parsed. Before, run.json held only the name as typed, so a run of ``demo`` did not say
    whether the shipped recipe or a file called demo in the working folder was read, nor which version of it."""
    names = {file.resolve(): name for name, file in shipped_recipes().items()}
    return tuple({"file": str(each.file), "shipped": names.get(each.file), "sha256": each.sha256} for each in read)


def _origins(read: Sequence[_ReadFile]) -> dict[str, Path]:
    """Dotted path -> the file of an ``extends`` chain (its files as read, the recipe's own first) that sets it last
    (the recipe's own, else its bases')."""
    origins: dict[str, Path] = {}

    def walk(value: Any, prefix: str, file: Path) -> None:
        origins[prefix] = file
        if isinstance(value, Mapping):
            for key, inner in value.items():
                walk(inner, f"{prefix}.{key}", file)

    for each in reversed(read):  # the furthest base first: each file overrides the ones it extends
        for key, value in each.raw.items():
            if key != "extends":
                walk(value, str(key), each.file)
    return origins


def _as_written(problem: Problem, origins: dict[str, Path], given: set[str], texts: dict[Path, str | None]) -> Problem:
    """``problem`` echoing a value of a recipe file as it is written there (``(got 0x10)``, ``(got yes)``), not as
    YAML read it (``16``, ``true``): the file that sets its path (``origins``, the longest set prefix), unless the
    command line set it. ``texts`` keeps each file's text read (helper-159: only a --set's value was echoed as typed,
    so ``photo_casts: 0x10`` in a file said "(got 16)", a number the file does not hold)."""
    file = _setting_file(problem.path, origins, given)
    if file is None:
        return problem
    if file not in texts:
        try:
            texts[file] = file.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError):
            texts[file] = None
    text = texts[file]
    written = _written(text, problem.path.split(".")) if text is not None else None
    return replace(problem, message=_as_typed(problem.message, written))


def _setting_file(path: str, origins: Mapping[str, Path], given: set[str]) -> Path | None:
    """The recipe file that sets the dotted ``path`` (``origins``: the longest set prefix), or None where the command
    line set it (``given``: a --set of it or of a section holding it) or no file does."""
    parts = path.split(".")
    for end in range(len(parts), 0, -1):
        prefix = ".".join(parts[:end])
        if any(prefix == key or key.startswith(f"{prefix}.") for key in given):
            return None
        if prefix in origins:
            return origins[prefix]
    return None


def _written(text: str, parts: Sequence[str]) -> str | None:
    """The plain scalar at ``parts`` (a dotted path's parts: mapping keys, list indexes) of the YAML ``text``, as it
    is written there (``1e3``, ``yes``, ``0x1FF``), without the anchor or tag before it (``&steps 1e3``: an alias
    ``*steps`` elsewhere is the same value); None where the text holds none there (a section, a quoted scalar, which
    YAML reads as written, a plain scalar written over several lines, which YAML reads as one, or text that is not
    YAML)."""
    return _plain_text(_node_at(text, parts), text)


def _plain_text(node: yaml.Node | None, text: str) -> str | None:
    """A plain scalar ``node`` of the YAML ``text`` as written there, without its anchor or tag (:func:`_written`);
    None for any other node, or one written over several lines."""
    if not isinstance(node, yaml.ScalarNode) or node.style is not None:
        return None
    # (a node's marks are its event's: from its anchor or tag, which a plain scalar cannot start with)
    written = _NODE_PROPERTIES.sub("", text[node.start_mark.index : node.end_mark.index])
    return None if "\n" in written or "\r" in written else written


def _source_text(text: str, parts: Sequence[str]) -> str | None:
    """The node at ``parts`` of the YAML ``text`` as written there, a flow mapping or list too (``{name: tps, params:
    {regularization: 1e-2}}``), where it is on one line; None elsewhere."""
    node = _node_at(text, parts)
    if node is None:
        return None
    written = _NODE_PROPERTIES.sub("", text[node.start_mark.index : node.end_mark.index]).strip()
    return None if not written or "\n" in written or "\r" in written else written


def _node_at(text: str, parts: Sequence[str]) -> yaml.Node | None:
    """The node at ``parts`` (mapping keys, list indexes) of the YAML ``text``; None where there is none, or the text
    is not YAML."""
    try:
        node: yaml.Node | None = yaml.compose(text, Loader=_RecipeLoader)  # (a SafeLoader: nodes, nothing built)
    except (yaml.YAMLError, RecursionError):
        return None
    for part in parts:
        node = _yaml_child(node, part) if node is not None else None
    return node


#: The anchor (``&name``) and tag (``!!bool``, ``!local``) a YAML node may be written with, before its value.
_NODE_PROPERTIES = re.compile(r"^(?:[&!]\S*\s+)+")


def _yaml_child(node: yaml.Node, part: str) -> yaml.Node | None:
    """The node under ``node`` at ``part``: a list's item by its index, a mapping's value by its key (its own before
    one a ``<<`` merge brings in, as YAML reads them)."""
    if isinstance(node, yaml.SequenceNode):
        return node.value[int(part)] if part.isdigit() and int(part) < len(node.value) else None
    if not isinstance(node, yaml.MappingNode):
        return None
    merged: list[yaml.Node] = []
    for key, value in node.value:
        if key.tag == "tag:yaml.org,2002:merge":
            merged += value.value if isinstance(value, yaml.SequenceNode) else [value]
        elif isinstance(key, yaml.ScalarNode) and key.value == part:
            return value
    return next((found for inner in merged if (found := _yaml_child(inner, part)) is not None), None)


def _located(problem: Problem, origins: Mapping[str, Path], own: Path, given: set[str]) -> Problem:
    """``problem`` with the base file that sets its path (the longest set prefix), when that is not ``own`` and the
    command line did not set it (helper-74: a base's stray key was reported under the child's name)."""
    file = _setting_file(problem.path, origins, given)
    return problem if file is None or file == own else Problem(problem.path, f"{problem.message} (set in {file})")


def resolve(
    raw: Mapping[str, Any],
    overrides: Sequence[str] = (),
    source: str = "recipe",
    labels: Mapping[str, str] | None = None,
    checks: Callable[[Plan], Sequence[Problem]] | None = None,
    written: Mapping[str, _WrittenAt] | None = None,
) -> Plan:
    """Validate ``raw`` (a recipe as plain data) with ``overrides`` and resolve it against the registries; a problem
    of an override's value is named by that override (``--set ITEM``, or ``labels[ITEM]`` where it has one), and
    echoes its value as typed (or as ``written[ITEM]`` locates it: a YAML text and the path in it).
    ``checks``: rules a caller adds for the plan once it resolves, their problems named alike (`facekit check` adds
    the refusals `facekit run` makes from the settings alone, :func:`facekit.pipeline.run_refusals`)."""
    data: dict[str, Any] = _deep_copy(raw)
    problems = apply_overrides(data, overrides)
    values, section_problems = _validate_sections(data)
    problems.extend(_as_given(section_problems, overrides, labels or {}, written or {}))
    components: dict[str, ResolvedComponent] = {}
    if "components" in values or "components" not in data:
        components, component_problems = _resolve_components(values.get("components", Components()))
        problems.extend(_as_given(component_problems, overrides, labels or {}, written or {}))
    if "bench" in values:
        judge_problems = _bench_judge_problems(values["bench"])
        problems.extend(_as_given(judge_problems, overrides, labels or {}, written or {}))
    if not problems:
        recipe = Recipe(**values)
        problems.extend(_as_given(_cross_checks(recipe, components), overrides, labels or {}, written or {}))
        repeats = _bench_judge_repeats(recipe.bench, components)
        problems.extend(_as_given(repeats, overrides, labels or {}, written or {}))
    if problems:
        raise RecipeError(problems, source)
    plan = Plan(recipe=recipe, source=source, components=components, overrides=tuple(overrides))
    refused = _as_given(list(checks(plan)), overrides, labels or {}, written or {}) if checks is not None else []
    if refused:
        raise RecipeError(refused, source)
    return plan


def _as_given(
    problems: list[Problem], overrides: Sequence[str], labels: Mapping[str, str], written: Mapping[str, _WrittenAt]
) -> list[Problem]:
    """Each problem of a value an override set, named by that override as it was typed: ``--set train.steps=abc:
    train.steps must be a whole number (got 'abc')`` (helper-144: before, ``train.steps: Input should be a valid
    integer``, the same line as for the recipe file's own value, so a user did not see which of their --set it was); an
    override with a label (a bench cell's value) by its label, echoing its value as its grid writes it."""
    given: dict[str, str] = {}
    typed: dict[str, _WrittenAt] = {}  # a --set's value as typed, a bench cell's where written, by its path
    for item in overrides:  # the last of a key is the one that took effect
        key, sep, text = item.partition("=")
        if sep and key.strip():
            given[_dotted(key.strip())] = labels.get(item) or f"--set {item.strip()}"
            typed.pop(_dotted(key.strip()), None)
            if item not in labels or item in written:
                typed[_dotted(key.strip())] = written.get(item) or (text, ())
    named = []
    for problem in problems:
        # A cross-field rule's problem (its ``about``) by the --set of the setting it refuses, else of another it
        # reads: `--set train.background=keep` is what refused the file's background_rgb. Settings it names within
        # its path are refused with it: the --set of one (components.apps.0.params.strength) is the nearer.
        within = [path for path in problem.about if path.startswith(f"{problem.path}.")]
        keys = [key for path in (problem.path, *within) for key in _keys_setting(path, given)] or next(
            (found for path in problem.about if (found := _keys_setting(path, given))),
            [],
        )
        if not keys:
            named.append(problem)
            continue
        # "x must be ...", "x shapes the plain background" (a cross-field rule's words follow its path); "x: extra
        # field ...", "components.apps.0.params: strength are for ...", "components.warper.name: warper 'still' says
        # ..." (words that name the settings, or the component, first)
        first = [path.rpartition(".")[2] for path in within]
        if (component := re.fullmatch(r"components\.(\w+)\.name", problem.path)) is not None:
            first.append(component.group(1))
        names_first = any(re.match(rf"{re.escape(name)}\b", problem.message) for name in first)
        joint = " " if problem.message.startswith("must ") or (problem.about and not names_first) else ": "
        message = _as_typed(problem.message, _typed_at(problem.path, typed))
        named.append(Problem(given[max(keys, key=len)], f"{problem.path}{joint}{message}"))
    return named


def _typed_at(path: str, typed: Mapping[str, _WrittenAt]) -> str | None:
    """The value at ``path`` as a --set typed it: the --set's text for its own path, the item as written within it
    for a path inside (``--set train.background_rgb=[1, 2, 0x1FF]`` typed ``0x1FF`` at ``train.background_rgb.2``;
    helper-159: it echoed 511); a bench cell's as its grid writes it (``typed``: the text, and the path of the value
    of each key in it, none for a --set's own text)."""
    key = path if path in typed else max((key for key in typed if path.startswith(f"{key}.")), key=len, default=None)
    if key is None:
        return None
    text, within = typed[key]
    inside = tuple(path[len(key) + 1 :].split(".")) if key != path else ()
    return _written(text, (*within, *inside)) if within or inside else text


def _as_typed(message: str, text: str | None) -> str:
    """``message`` echoing the value of a ``--set`` of its path as it was typed, where it echoes YAML's reading of
    it: ``--set train.steps=yes`` "must be a whole number (got yes)", not "(got true)", nor 16 for 0x10, 1000.0 for
    1e3 (helper-150: the user could not find what they typed). Text YAML reads as the same text keeps its quotes
    (``(got 'abc')``); any other ``(got ...)`` (a list's length) is left as it is."""
    if text is None or not text.strip():
        return message
    read = refused_echo(_override_value(text))
    if read is None or not message.endswith(f" (got {read})") or _override_value(text) == text.strip():
        return message
    return f"{message.removesuffix(f' (got {read})')} (got {echo_cut(text.strip())})"


def _keys_setting(path: str, given: Iterable[str]) -> list[str]:
    """The keys among ``given`` (dotted paths) that set ``path``: itself or a section or list holding it."""
    return [key for key in given if path == key or path.startswith(f"{key}.")]


def _deep_copy(value: Any) -> Any:
    if isinstance(value, Mapping):
        return {k: _deep_copy(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_deep_copy(v) for v in value]
    return value
