"""facekit.testing's checks catch components that conform on the surface but would crash the pipeline or give wrong
faces (found by helper-54 writing third-party plugins), and pass correct ones that trade exactness for smoothness."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import pytest
import torch

from facekit import testing
from facekit.models import WeightsNotFoundError
from facekit.registry import ComponentSpec, NoParams, get_registry
from facekit.testing import check_component, run_check


class _TinyEncoder(torch.nn.Module):
    """A correct small encoder (random weights) on ArcFace's 112 px crops."""

    def __init__(self, card: Any) -> None:
        super().__init__()
        self.card = card
        generator = torch.Generator().manual_seed(0)
        self.project = torch.nn.Parameter(torch.randn(3 * 16 * 16, 8, generator=generator))

    def features(self, crops: torch.Tensor) -> torch.Tensor:
        return torch.nn.functional.adaptive_avg_pool2d(crops, 16).flatten(1) @ self.project

    def embed(self, crops: torch.Tensor) -> torch.Tensor:
        return torch.nn.functional.normalize(self.features(crops), dim=1)


class _SqueezeEncoder(_TinyEncoder):
    """Right, except that a batch of one loses its batch axis (``.squeeze()``)."""

    def features(self, crops: torch.Tensor) -> torch.Tensor:
        return super().features(crops).squeeze()

    def embed(self, crops: torch.Tensor) -> torch.Tensor:
        return torch.nn.functional.normalize(_TinyEncoder.features(self, crops), dim=1).squeeze()


class _FirstRowEncoder(_TinyEncoder):
    """Every face gets the batch's first face's embedding."""

    def embed(self, crops: torch.Tensor) -> torch.Tensor:
        return super().embed(crops)[:1].expand(crops.shape[0], -1)


class _FirstRowFeatures(_TinyEncoder):
    """Right embeddings, but every face gets the first face's features (what the decoder reads)."""

    def features(self, crops: torch.Tensor) -> torch.Tensor:
        return super().features(crops)[:1].expand(crops.shape[0], -1)

    def embed(self, crops: torch.Tensor) -> torch.Tensor:
        return torch.nn.functional.normalize(super().features(crops), dim=1)


def _card(points: tuple[tuple[float, float], ...] | None = None, size: int = 112) -> Any:
    from dataclasses import replace

    from facekit.types import ARCFACE_112_TEMPLATE, ModelCard, WeightsSource

    template = ARCFACE_112_TEMPLATE if points is None else replace(ARCFACE_112_TEMPLATE, points=points)
    return ModelCard(
        input_size=(size, size),
        embedding_size=8,
        feature_size=8,
        threshold=0.5,
        distance="cosine",
        template=template,
        weights=(WeightsSource(file="", sha256="", licence="none: random test weights"),),
    )


def _encoder(name: str, cls: type, card: Any = None) -> ComponentSpec[Any]:
    card = card or _card()
    return ComponentSpec(name, lambda params: cls(card), NoParams, card=card)


def _upside_down() -> tuple[tuple[float, float], ...]:
    from facekit.types import ARCFACE_112_TEMPLATE

    return tuple((x, 111.0 - y) for x, y in ARCFACE_112_TEMPLATE.points)  # y up: the mouth above the eyes


def _mirrored() -> tuple[tuple[float, float], ...]:
    from facekit.types import ARCFACE_112_TEMPLATE

    eyes, nose, mouth = ARCFACE_112_TEMPLATE.points[:2], ARCFACE_112_TEMPLATE.points[2], ARCFACE_112_TEMPLATE.points[3:]
    return (eyes[1], eyes[0], nose, mouth[1], mouth[0])  # the right eye first: a mirror image


@pytest.mark.parametrize(
    ("spec", "check", "message"),
    [
        (_encoder("squeeze", _SqueezeEncoder), "deterministic", "batch of one has shape"),
        (_encoder("first-row", _FirstRowEncoder), "deterministic", "face 1's embedding depends"),
        (_encoder("first-row-features", _FirstRowFeatures), "deterministic", "face 1's features depend"),
        (_encoder("y-up", _TinyEncoder, _card(_upside_down())), "alignment", "not upright"),
        (_encoder("mirror", _TinyEncoder, _card(_mirrored())), "alignment", "px apart in a 112 px crop"),
        (_encoder("size", _TinyEncoder, _card(size=160)), "alignment", r"-23\.\d px from the middle of the 160 px"),
    ],
    ids=["squeeze", "first-row", "first-row-features", "y-up", "mirror", "112-points-at-160"],
)
def test_the_encoder_checks_catch_what_the_pipeline_would_get_wrong(
    spec: ComponentSpec[Any], check: str, message: str
) -> None:
    """Before: each passed every check but ``identity`` (which random weights declare failing): a squeezed batch
    of one was an 85-line IndexError in `facekit normalize`, a first-row encoder gave every face one embedding, a
    y-up template aligned faces upside down, and ArcFace's 112 px points on a card saying 160 px put the face in the
    crop's top-left corner (an encoder resizing to 112 inside then reads a small face, off-centre)."""
    with pytest.raises(AssertionError, match=message):
        run_check("encoder", spec, check)


class _BlindToGrey(_TinyEncoder):
    """Reads the face without its mean level and left-right symmetrised: a face and its mirror image are one, and a
    plain grey crop has an embedding of zero length."""

    def features(self, crops: torch.Tensor) -> torch.Tensor:
        pooled = torch.nn.functional.adaptive_avg_pool2d(crops + crops.flip(-1), 16)
        return (pooled - pooled.mean(dim=(1, 2, 3), keepdim=True)).flatten(1) @ self.project


@pytest.mark.filterwarnings("ignore:invalid value encountered in divide:RuntimeWarning")  # the zero-length one
def test_the_identity_check_takes_no_distance_that_is_not_a_number() -> None:
    """Before (helper-105): the grey crop's zero embedding made its cosine NaN, which counted as "not the same
    person", so the check passed an encoder whose identity loss would be NaN on such a crop."""
    with pytest.raises(AssertionError, match=r"no finite cosine distance .*to a grey crop nan"):
        run_check("encoder", _encoder("blind-to-grey", _BlindToGrey), "identity")


def test_a_small_correct_encoder_passes_the_encoder_checks() -> None:
    check_component("encoder", _encoder("tiny", _TinyEncoder), skip={"identity": "random weights"})


def _warper(name: str, cls: type) -> ComponentSpec[Any]:
    return ComponentSpec(name, lambda params: cls(), NoParams)


class _FirstOnlyWarper:
    """Every item warped with the first item's points."""

    differentiable = False

    def warp(self, image: torch.Tensor, source: torch.Tensor, destination: torch.Tensor) -> Any:
        inner = get_registry("warper").get("rbf-linear").build()
        batch = image.shape[0]
        return inner.warp(image, source[:1].expand(batch, -1, -1), destination[:1].expand(batch, -1, -1))


class _PointsOnlyWarper:
    """Copies the source pixel of each control point to its destination, nothing else."""

    differentiable = False

    def warp(self, image: torch.Tensor, source: torch.Tensor, destination: torch.Tensor) -> Any:
        warped, flow = image.clone(), torch.zeros(*image.shape[:1], *image.shape[2:], 2)
        for b in range(image.shape[0]):
            for (sx, sy), (dx, dy) in zip(
                source[b].round().long().tolist(), destination[b].round().long().tolist(), strict=True
            ):
                warped[b, :, dy, dx] = image[b, :, sy, sx]
                flow[b, dy, dx] = torch.tensor([dx - sx, dy - sy], dtype=flow.dtype)
        return warped, flow


class _SqueezeWarper:
    """Right, except that a batch of one loses its batch axis (``.squeeze()``)."""

    differentiable = False

    def warp(self, image: torch.Tensor, source: torch.Tensor, destination: torch.Tensor) -> Any:
        warped, flow = get_registry("warper").get("rbf-linear").build().warp(image, source, destination)
        return warped.squeeze(), flow.squeeze()


class _NarrowGaussianWarper:
    """An exact Gaussian RBF interpolant without an affine part (sigma 2 px): fine on five points, ill-conditioned on
    a face's 68, where some nearly coincide."""

    differentiable = False

    def warp(self, image: torch.Tensor, source: torch.Tensor, destination: torch.Tensor) -> Any:
        import torch.nn.functional as F

        batch, _, height, width = image.shape
        d = destination.double()
        kernel = torch.exp(-(torch.cdist(d, d) ** 2) / 8.0)
        weights = torch.linalg.solve(kernel, (destination - source).double())
        ys, xs = torch.meshgrid(torch.arange(height).double(), torch.arange(width).double(), indexing="ij")
        grid = torch.stack([xs, ys], -1).reshape(1, -1, 2).expand(batch, -1, -1)
        flow = (torch.exp(-(torch.cdist(grid, d) ** 2) / 8.0) @ weights).reshape(batch, height, width, 2)
        sampled = torch.stack([xs, ys], -1)[None] - flow
        normalised = sampled / torch.tensor([(width - 1) / 2, (height - 1) / 2]).double() - 1
        warped = F.grid_sample(image.double(), normalised, align_corners=True, padding_mode="border")
        return warped.to(image.dtype), flow.float()


class _ViewWarper:
    """Right, except that it flattens the points with ``view``, which a source expanded over the batch (the decoder's
    mean face) does not allow."""

    differentiable = False

    def warp(self, image: torch.Tensor, source: torch.Tensor, destination: torch.Tensor) -> Any:
        batch, points = source.shape[:2]
        flat = source.view(batch * points, 2)
        return get_registry("warper").get("rbf-linear").build().warp(image, flat.reshape(batch, points, 2), destination)


class _ImageOnlyWarper:
    """Returns the warped image and forgets the flow."""

    differentiable = False

    def warp(self, image: torch.Tensor, source: torch.Tensor, destination: torch.Tensor) -> Any:
        return get_registry("warper").get("rbf-linear").build().warp(image, source, destination)[0]


class _AutocastAffineWarper:
    """A least-squares affine warp whose flow is a matmul left to the autocast: under train.precision bf16 it runs
    in bf16, whose spacing at 128-256 px is 1 px."""

    differentiable = False

    def warp(self, image: torch.Tensor, source: torch.Tensor, destination: torch.Tensor) -> Any:
        import torch.nn.functional as F

        batch, _, height, width = image.shape
        ones = torch.ones(*destination.shape[:2], 1)
        fit = torch.linalg.lstsq(torch.cat([destination, ones], -1).float(), source.float()).solution  # (B, 3, 2)
        ys, xs = torch.meshgrid(torch.arange(height).float(), torch.arange(width).float(), indexing="ij")
        grid = torch.stack([xs, ys, torch.ones_like(xs)], -1).reshape(1, -1, 3).expand(batch, -1, -1)
        sampled = (grid @ fit).reshape(batch, height, width, 2)  # bf16 under the autocast
        flow = torch.stack([xs, ys], -1)[None] - sampled
        normalised = sampled.float() / torch.tensor([(width - 1) / 2, (height - 1) / 2]) - 1
        return F.grid_sample(image, normalised.to(image.dtype), align_corners=True).to(image.dtype), flow


class _YXFlowWarper:
    """Warps right, but returns its flow as (dy, dx) (torch's grid order read the other way)."""

    differentiable = True

    def warp(self, image: torch.Tensor, source: torch.Tensor, destination: torch.Tensor) -> Any:
        warped, flow = get_registry("warper").get("rbf-linear").build().warp(image, source, destination)
        return warped, flow.flip(-1)


class _TwoArgumentWarper:
    """Takes the source points alone (the destination is its own idea): the decoder passes three arguments."""

    differentiable = False

    def warp(self, image: torch.Tensor, points: torch.Tensor) -> Any:
        return get_registry("warper").get("rbf-linear").build().warp(image, points, points)


@pytest.mark.parametrize(
    ("cls", "check", "message"),
    [
        (_TwoArgumentWarper, "protocol", r"warp\(image: 'torch.Tensor', points: 'torch.Tensor'\) cannot be called"),
        (_ViewWarper, "face_points", "not contiguous"),
        (_AutocastAffineWarper, "mixed_precision", "under a bf16 autocast the flow is up to .* px from float32's"),
        (_ImageOnlyWarper, "identity", "warp returns Tensor, not the pair"),
        (_ImageOnlyWarper, "moves_content", "warp returns Tensor, not the pair"),
        (_FirstOnlyWarper, "moves_content", "item 1: flow at the destination"),
        (_YXFlowWarper, "moves_content", r"not the move \(3.0, -2.0\) \(off by 5 px; the flow is \(y, x\): its last"),
        (_PointsOnlyWarper, "moves_content", "one pixel from the destination"),
        (_SqueezeWarper, "identity", "batch of 1"),
        (_NarrowGaussianWarper, "face_points", "flows of up to"),
    ],
)
def test_the_warper_checks_catch_what_the_pipeline_would_get_wrong(cls: type, check: str, message: str) -> None:
    """Before: each of these passed every warper check (the checks used one move for both items, a batch of two,
    one pixel, and five points far apart; helper-61: contiguous points only, so a ``view`` passed and crashed in
    training; a warper returning the image alone was unpacked along its batch axis into a misleading shape error)."""
    with pytest.raises(AssertionError, match=message):
        run_check("warper", _warper(cls.__name__.strip("_").lower(), cls), check)


def test_a_smoothing_warper_passes_the_warper_checks() -> None:
    """Before: rbf-linear with the shipped model's regularization 0.01 failed moves_content (its flow 0.0035 px off
    at the point moved a noise image's value by more than the 0.002 allowed)."""
    for regularization in (0.01, 0.1):
        check_component("warper", get_registry("warper").get("rbf-linear"), {"regularization": regularization})
    check_component("warper", get_registry("warper").get("tps"), {"regularization": 0.1})


class _ZeroingApp:
    def apply(self, faces: Any) -> dict[str, Any]:
        faces.image.zero_()
        return {"done": torch.ones(faces.image.shape[0])}


class _NaNApp:
    def apply(self, faces: Any) -> dict[str, Any]:
        return {"value": torch.full((faces.image.shape[0],), float("nan"))}


class _RaisingApp:
    def apply(self, faces: Any) -> dict[str, Any]:
        raise RuntimeError("cannot handle a batch")


class _TensorApp:
    def apply(self, faces: Any) -> Any:
        return faces.image.mean(dim=(1, 2, 3))


class _RaggedApp:
    def apply(self, faces: Any) -> dict[str, Any]:
        return {"points": [[1.0, 2.0], [3.0]][: faces.image.shape[0]] if faces.image.shape[0] > 1 else [[1.0]]}


class _DictsApp:
    def apply(self, faces: Any) -> dict[str, Any]:
        return {"meta": [{"index": index} for index in range(faces.image.shape[0])]}


class _BFloat16App:
    def apply(self, faces: Any) -> dict[str, Any]:
        return {"mean": faces.image.mean(dim=(1, 2, 3)).to(torch.bfloat16)}


@pytest.mark.parametrize(
    ("cls", "message"),
    [
        (_ZeroingApp, "changed the faces it was given"),
        (_NaNApp, "'value' is not finite"),
        (_RaisingApp, "apply raised on a batch of 2: RuntimeError: cannot handle a batch"),
        (_TensorApp, "apply returned Tensor, not a dict"),
        (_RaggedApp, "result 'points' is not an array of numbers or strings"),
        (_DictsApp, r"result 'meta' is not an array of numbers or strings \(it holds \{'index': 0\}\)"),
    ],
)
def test_the_app_check_catches_what_the_infer_stage_would_get_wrong(cls: type, message: str) -> None:
    """Before: the app check applied the app to one face and looked only at the type of what came back."""
    from facekit.errors import FacekitError

    with pytest.raises((AssertionError, FacekitError), match=message):
        run_check("app", ComponentSpec(cls.__name__.strip("_").lower(), lambda params: cls(), NoParams), "applies")


def test_an_app_with_bfloat16_results_passes_the_app_check() -> None:
    """The infer stage converts bfloat16 (which numpy lacks) to float32; before, a TypeError traceback."""
    run_check("app", ComponentSpec("bf16", lambda params: _BFloat16App(), NoParams), "applies")


class _DrawingDetector:
    """dlib's detector, drawing its boxes onto the image it is given (a debugging overlay left in)."""

    def __init__(self) -> None:
        self.inner = get_registry("detector").get("dlib").build()
        self.card = self.inner.card

    def detect_array(self, image: Any) -> Any:
        faces = self.inner.detect_array(image)
        for face in faces:
            x0, y0, x1, _ = (int(v) for v in face.box)
            image[max(y0, 0), max(x0, 0) : max(x1, 0)] = (0, 255, 0)
        return faces


def test_a_detector_that_draws_on_its_input_fails_conformance_and_cannot_change_the_photo() -> None:
    """Before (helper-61): it passed all six detector checks (each gave it a copy), and in the pipeline it changed the
    caller's photo and the normalized face (a green line across the forehead, up to 137 grey levels). The checks now
    compare the image before and after; the pipeline gives detectors a copy (helper-62: a read-only view failed
    detectors that write in place without changing a value, and did not stop one that set the flag back or wrote
    through torch), so the photo and the face are untouched."""
    from facekit.normalize import detect_photo
    from facekit.testing import real_face

    spec = ComponentSpec("drawing", lambda params: _DrawingDetector(), NoParams, card=_DrawingDetector().card)
    with pytest.raises(AssertionError, match="detect_array changed the image it was given"):
        run_check("detector", spec, "real_face")
    photo = real_face().image.copy()
    before = photo.copy()
    drawn, why = detect_photo(_DrawingDetector(), photo, "face.jpg")
    plain, _ = detect_photo(get_registry("detector").get("dlib").build(), photo, "face.jpg")
    assert why == "" and (photo == before).all()
    assert len(drawn) == len(plain) == 1 and (drawn[0].landmarks == plain[0].landmarks).all()


class _LockedDetector:
    """dlib's detector behind a lock of its own (a handle that cannot be pickled), as a plugin might guard it."""

    def __init__(self) -> None:
        import threading

        self.inner = get_registry("detector").get("dlib").build()
        self.card = self.inner.card
        self.lock = threading.Lock()

    def detect_array(self, image: Any) -> Any:
        with self.lock:
            return self.inner.detect_array(image)


class _RebuiltLockDetector(_LockedDetector):
    """The same, its lock left out when pickled and made again (as facekit.types.RebuiltOnUnpickle does)."""

    def __getstate__(self) -> dict[str, Any]:
        return {key: value for key, value in self.__dict__.items() if key != "lock"}

    def __setstate__(self, state: dict[str, Any]) -> None:
        import threading

        self.__dict__.update(state)
        self.lock = threading.Lock()


class _ReseededEncoder(_TinyEncoder):
    """Pickles, but comes back with other weights (a plugin that re-initialises instead of restoring)."""

    def __setstate__(self, state: dict[str, Any]) -> None:
        super().__setstate__(state)
        with torch.no_grad():
            self.project.add_(1.0)


def _pooled(crops: torch.Tensor) -> torch.Tensor:
    return torch.nn.functional.adaptive_avg_pool2d(crops, 16).flatten(1)


class _ScriptedEncoder(_TinyEncoder):
    """Right, with a TorchScript part (a plugin's network loaded with torch.jit.load), which pickle refuses with a
    RuntimeError."""

    def __init__(self, card: Any) -> None:
        super().__init__(card)
        self.pool = torch.jit.script(torch.nn.AdaptiveAvgPool2d(16))


class _ScriptFunctionEncoder(_TinyEncoder):
    """Right, with a scripted function, which pickle refuses with a pickle.PickleError (not a PicklingError)."""

    def __init__(self, card: Any) -> None:
        super().__init__(card)
        self.pool = torch.jit.script(_pooled)


@pytest.mark.filterwarnings("ignore:`torch.jit.script` is deprecated:DeprecationWarning")  # (plugins still ship it)
def test_the_pickle_check_names_the_way_out_for_torchscript_parts_too() -> None:
    """Before: the check caught only TypeError, AttributeError and PicklingError, so an encoder holding a TorchScript
    module (RuntimeError "Tried to serialize object ...") or function (pickle.PickleError) failed the check with that
    bare error instead of its message, which names facekit.types.RebuiltOnUnpickle."""
    for name, cls in (("scripted", _ScriptedEncoder), ("script-function", _ScriptFunctionEncoder)):
        with pytest.raises(AssertionError, match=rf"{name}: cannot be pickled .*facekit\.types\.RebuiltOnUnpickle"):
            run_check("encoder", _encoder(name, cls), "pickles")


def test_the_pickle_checks_catch_a_component_a_worker_process_could_not_receive() -> None:
    """Before: nothing checked that a component survives pickling; a Normalizer holding one that does not (an
    onnxruntime session: the insightface plugin's scrfd and arcface-onnx until stop 52) failed in the user's spawn
    pool with "cannot pickle ... object", and one restored wrongly gave other faces without a word."""
    card = _LockedDetector().card
    with pytest.raises(AssertionError, match=r"locked: cannot be pickled .*facekit\.types\.RebuiltOnUnpickle"):
        run_check("detector", ComponentSpec("locked", lambda params: _LockedDetector(), NoParams, card=card), "pickles")
    rebuilt = ComponentSpec("rebuilt", lambda params: _RebuiltLockDetector(), NoParams, card=card)
    run_check("detector", rebuilt, "pickles")
    with pytest.raises(AssertionError, match="a pickled copy gives other embeddings"):
        run_check("encoder", _encoder("reseeded", _ReseededEncoder), "pickles")


class _ReorderedDetector:
    """A shipped detector whose points come out in another order than its scheme's (``order``: index -> source)."""

    def __init__(self, base: str, order: list[int]) -> None:
        self.inner = get_registry("detector").get(base).build()
        self.card, self.order = self.inner.card, order

    def detect_array(self, image: Any) -> Any:
        from dataclasses import replace

        return [replace(f, landmarks=f.landmarks[self.order]) for f in self.inner.detect_array(image)]


#: iBUG-68 index of each point's mirror partner (the scheme labelled on the image's sides, not the subject's).
_IBUG68_MIRROR = testing._IBUG68_MIRROR


@pytest.mark.parametrize(
    ("base", "order", "message"),
    [
        ("dlib", _IBUG68_MIRROR, r"point\(s\) \[0, 1, 2, 3, 4, 5\] and 34 more of scheme 'ibug68'"),
        ("dlib", [*range(16, -1, -1), *range(17, 68)], r"point\(s\) \[0, 1, 2, 3, 4, 5\] and 10 more"),
        ("dlib", [*range(48), *_IBUG68_MIRROR[48:]], r"point\(s\) \[48, 54, 60, 64\] of scheme 'ibug68'"),
        ("dlib", [67, *range(67)], r"point\(s\) \[0, 17, 27, 36, 42, 48\] of scheme 'ibug68'"),
        ("yunet", [0, 1, 2, 4, 3], r"point\(s\) \[3, 4\] of scheme 'eyes-nose-mouth5'"),
        ("yunet", [1, 0, 2, 4, 3], r"point\(s\) \[0, 1, 3, 4\] of scheme 'eyes-nose-mouth5'"),
    ],
    ids=["mirrored-sides", "reversed-jaw", "mirrored-mouth", "off-by-one", "mouth-corners-swapped", "mirrored-5"],
)
def test_the_scheme_check_reads_every_point_not_only_the_eyes(base: str, order: list[int], message: str) -> None:
    """Before (helper-118): the check compared only the eye centres, which ``facekit.align.eye_centres`` reads by
    geometry (image-left first in any order), so each of these passed every detector check; with the 68 points on the
    image's sides, or the jaw reversed, the shipped model's face of the test photo came out 29 and 20 grey levels off
    on average (the photo detail is mapped through every point by its index), and 5 points in a mirrored order give
    the template fit a reflection it cannot make."""
    card = _ReorderedDetector(base, order).card
    spec = ComponentSpec(f"{base}-reordered", lambda params: _ReorderedDetector(base, order), NoParams, card=card)
    run_check("detector", spec, "real_face")  # count, shape and box are right
    with pytest.raises(AssertionError, match=rf"{message}.*in another order than"):
        run_check("detector", spec, "scheme_semantics")


class _SizeCachedDetector:
    """dlib's detector with the last result kept for the next image of the same size (written for video frames)."""

    def __init__(self) -> None:
        self.inner = get_registry("detector").get("dlib").build()
        self.card = self.inner.card
        self.last: tuple[Any, Any] = (None, None)

    def detect_array(self, image: Any) -> Any:
        if self.last[0] != image.shape:
            self.last = (image.shape, self.inner.detect_array(image))
        return self.last[1]


class _SmoothedDetector(_SizeCachedDetector):
    """dlib's detector with each face's points averaged with the previous call's (a video tracker's smoothing)."""

    def detect_array(self, image: Any) -> Any:
        from dataclasses import replace

        faces = self.inner.detect_array(image)
        if faces and self.last[1] is not None:
            faces[0] = replace(faces[0], landmarks=(faces[0].landmarks + self.last[1]) / 2)
        self.last = (None, faces[0].landmarks if faces else None)
        return faces


@pytest.mark.parametrize(
    ("cls", "message"),
    [
        (_SizeCachedDetector, r"test face at \(90, 30\) .* are \[80\.\d, 80\.\d\] px from that photo's pupils"),
        (_SmoothedDetector, r"test face at \(90, 30\) .* are \[40\.\d, 40\.\d\] px from that photo's pupils"),
    ],
)
def test_a_detector_that_keeps_state_between_photos_fails_conformance(cls: type, message: str) -> None:
    """Before (helper-118): both passed every detector check, each of which gives the detector photos of sizes no
    other check uses (the smoothed one failed only ``pickles``, saying a pickled copy finds other faces); in
    ``normalize_many`` the size-cached one gave the second of two 300 x 260 photos the first one's face (the shipped
    model's output 24 grey levels off on average)."""
    spec = ComponentSpec(cls.__name__.strip("_").lower(), lambda params: cls(), NoParams, card=cls().card)
    with pytest.raises(AssertionError, match=rf"{message}.*must keep no state between photos"):
        run_check("detector", spec, "stateless")


class _SmallCopyDetector:
    """dlib's detector on a copy of at most 1,024 px (for speed), its boxes and points left in the copy's pixels."""

    def __init__(self) -> None:
        self.inner = get_registry("detector").get("dlib").build()
        self.card = self.inner.card

    def detect_array(self, image: Any) -> Any:
        from facekit.images import downscale

        return self.inner.detect_array(downscale(image, 1024))


def test_a_detector_that_answers_in_a_smaller_copys_pixels_fails_conformance() -> None:
    """Before (helper-118): it passed every detector check, whose images are all under 1,024 px; the pipeline hands a
    detector photos of up to 2,048 px as they are, so every face in a 1,024-2,048 px photo was aligned from points
    at about half their place."""
    spec = ComponentSpec("small-copy", lambda params: _SmallCopyDetector(), NoParams, card=_SmallCopyDetector().card)
    with pytest.raises(AssertionError, match=r"2048 x 1152 photo .* px from its pupils .*not scaled back"):
        run_check("detector", spec, "large_photo")


class _SharedPhotoDetector:
    """Says it is thread-safe, but keeps the photo on the object while dlib searches it, then places the points on
    whatever photo is there by then (another thread's)."""

    thread_safe = True

    def __init__(self) -> None:
        self.inner = get_registry("detector").get("dlib").build()
        self.card = self.inner.card

    def detect_array(self, image: Any) -> Any:
        from facekit.types import FaceDetection

        self.photo = image
        boxes = [face.box for face in self.inner.detect_array(image)]  # dlib releases the GIL here
        scheme = self.card.landmark_scheme
        return [FaceDetection(box, 1.0, self.inner.landmarks_in_box(self.photo, box), scheme) for box in boxes]


def test_a_detector_that_says_it_is_thread_safe_and_is_not_fails_conformance() -> None:
    """Before (helper-118): it passed every detector check, which call detect_array from one thread; the pipeline
    detects a batch's photos on several threads at once for a detector with thread_safe = True, and a face's points
    came from another photo. (One that shares one dlib HOG object between threads is caught the same way, 8 or 9 of
    the 12 calls wrong, and sometimes crashes the process, so it is not the mutant tested here.)"""
    spec = ComponentSpec(
        "shared-photo", lambda params: _SharedPhotoDetector(), NoParams, card=_SharedPhotoDetector().card
    )
    with pytest.raises(AssertionError, match=r"says thread_safe = True, but \d+ of 12 calls .* or drop thread_safe"):
        run_check("detector", spec, "thread_safe")


class _MapsWithoutGradients(_TinyEncoder):
    """Differentiable embed, but embed_and_maps (the perceptual loss's) computed under no_grad, for speed."""

    def embed_and_maps(self, crops: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
        with torch.no_grad():
            return self.embed(crops), [torch.nn.functional.adaptive_avg_pool2d(crops, 16)]


class _NumpyEncoder(_TinyEncoder):
    """Right values, computed through numpy (as a wrapped onnxruntime or dlib network would be)."""

    def embed(self, crops: torch.Tensor) -> torch.Tensor:
        return torch.from_numpy(super().embed(crops).detach().numpy().copy())


@pytest.mark.parametrize(
    ("cls", "what"), [(_MapsWithoutGradients, "embed_and_maps' embedding"), (_NumpyEncoder, "embed")]
)
def test_the_gradient_check_says_which_output_is_cut_off_from_the_pixels(cls: type, what: str) -> None:
    """Before (helper-118): the check backpropagated through embed alone, so embed_and_maps under no_grad passed
    every check while the perceptual loss trained nothing, and an embed through numpy ended the check in torch's
    "element 0 of tensors does not require grad" RuntimeError, which says neither what nor how to fix it."""
    card = replace(_card(), differentiable=True)
    with pytest.raises(AssertionError, match=rf"differentiable, but {what} is not connected to the input pixels"):
        run_check("encoder", _encoder(cls.__name__.strip("_").lower(), cls, card), "gradients")
    check_component("encoder", _encoder("tiny-differentiable", _TinyEncoder, card), skip={"identity": "random weights"})


class _NormalisesInPlace(_TinyEncoder):
    """Right, except that ``embed`` normalises its input in place (``images.sub_(0.5).div_(0.5)``): the training pool
    then reads the features of an image normalised twice."""

    def embed(self, crops: torch.Tensor) -> torch.Tensor:
        return super().embed(crops.sub_(0.5).div_(0.5))


class _ScalesNumpyView(_TinyEncoder):
    """Right, except that ``features`` scales a numpy view of its input (``x = images.numpy(); x *= 255``), as an
    encoder calling onnxruntime might: the tensor the caller holds changes too."""

    def features(self, crops: torch.Tensor) -> torch.Tensor:
        pixels = crops.numpy()
        pixels *= 255
        return super().features(torch.from_numpy(pixels) / 255)

    def embed(self, crops: torch.Tensor) -> torch.Tensor:
        return torch.nn.functional.normalize(_TinyEncoder.features(self, crops), dim=1)


class _InPlaceDecoder(torch.nn.Module):
    """A decoder that standardises its features in place."""

    def __init__(self, params: Any) -> None:
        super().__init__()
        from facekit.decoder import PaperDecoder
        from facekit.decoder_params import DecoderParams

        self.inner = PaperDecoder(DecoderParams(image_size=56, channels=16, hidden=16, feature_size=8))
        self.feature_size = 8

    def decode(self, features: torch.Tensor) -> Any:
        return self.inner.decode(features.sub_(features.mean(dim=1, keepdim=True)))


class _MovesItsSource:
    """rbf-linear, except that it centres the source points in place first (and the destination with them)."""

    differentiable = False

    def warp(self, image: torch.Tensor, source: torch.Tensor, destination: torch.Tensor) -> Any:
        centre = source.mean(dim=1, keepdim=True)
        source -= centre
        destination -= centre
        warped, flow = (
            get_registry("warper").get("rbf-linear").build().warp(image, source + centre, destination + centre)
        )
        return warped, flow


@pytest.mark.parametrize(
    ("kind", "spec", "message"),
    [
        ("encoder", _encoder("in-place", _NormalisesInPlace), "in-place: embed changed the images it was given"),
        ("encoder", _encoder("numpy-view", _ScalesNumpyView), "numpy-view: features changed the images it was given"),
        ("decoder", ComponentSpec("in-place", _InPlaceDecoder, NoParams), "in-place: decode changed the features"),
        ("warper", _warper("moves-source", _MovesItsSource), "moves-source: warp changed the source it was given"),
    ],
    ids=["encoder-embed", "encoder-features-numpy", "decoder", "warper"],
)
def test_a_component_that_edits_its_input_in_place_fails_conformance_naming_the_argument(
    kind: Any, spec: ComponentSpec[Any], message: str
) -> None:
    """Before: other checks failed on them for the wrong reason ("not deterministic in eval mode", "a pickled copy
    gives other embeddings", "face 0's features depend on the rest of the batch", "two identical calls differ") or
    with torch's own words ("a leaf Variable that requires grad is being used in an in-place operation", "more than
    one element of the written-to tensor refers to a single memory location"), none naming the argument changed;
    the decoder's outputs and batch checks passed it. In the pipeline they give features of an image normalised twice,
    change the user's features, or move the decoder's mean landmarks (a buffer saved with the model)."""
    with pytest.raises(AssertionError, match=message):
        run_check(kind, spec, "keeps_inputs")


def _chip_card() -> Any:
    from facekit.types import AlignmentTemplate

    chip = AlignmentTemplate("my-chip", (), scheme="dlib-chip", accepts=("ibug68",))
    return replace(_card(), template=chip)


class _ChipWrapper(_TinyEncoder):
    """An encoder wrapping one that aligns faces itself (dlib-resnet) and borrowing its card, as CONTRIBUTING.md's
    FlipSFace borrows SFace's, but without forwarding the inner encoder's input_transform."""


class _ChipWithTransform(_ChipWrapper):
    def input_transform(self, landmarks: Any) -> Any:
        import numpy as np

        return np.array([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0]])


def test_an_encoder_whose_template_has_no_points_needs_input_transform_and_is_told_so() -> None:
    """Before (helper-215, a wrapper of dlib-resnet with its card): the protocol check passed, and the alignment
    check, `facekit normalize` and training ended in align's bare ValueError "has no template points and no
    input_transform", which says neither what the method is nor that a wrapper forwards it."""
    from facekit.align import encoder_input_transform
    from facekit.errors import FacekitError
    from facekit.registry import build_checked
    from facekit.testing import real_face

    advice = r"template 'my-chip' has no points.*input_transform\(landmarks.*self\.inner\.input_transform"
    spec = ComponentSpec("chip-wrapper", lambda params: _ChipWrapper(_chip_card()), NoParams, card=_chip_card())
    with pytest.raises(AssertionError, match=advice):
        run_check("encoder", spec, "protocol")
    with pytest.raises(FacekitError, match=rf"encoder 'chip-wrapper'.*{advice}"):
        build_checked("encoder", spec)
    with pytest.raises(FacekitError, match=rf"encoder _ChipWrapper.*{advice}"):
        encoder_input_transform(_ChipWrapper(_chip_card()), real_face().ibug68)
    good = ComponentSpec("chip", lambda params: _ChipWithTransform(_chip_card()), NoParams, card=_chip_card())
    run_check("encoder", good, "protocol")
    build_checked("encoder", good)


class _SwappedDetector(_SmallCopyDetector):
    """dlib's detector with its points as (y, x), row then column (numpy's index order)."""

    def detect_array(self, image: Any) -> Any:
        return [replace(f, landmarks=f.landmarks[:, ::-1].copy()) for f in self.inner.detect_array(image)]


@pytest.mark.parametrize("check", ["scheme_semantics", "stateless", "large_photo"])
def test_a_detector_with_points_as_y_x_is_told_to_swap_them(check: str) -> None:
    """helper-223: these three checks failed it, saying its points were in another scheme, that its result depended
    on the call before (cached, smoothed), or that they were in a smaller copy's pixels, none of which was so."""
    spec = ComponentSpec("swapped", lambda params: _SwappedDetector(), NoParams, card=_SwappedDetector().card)
    with pytest.raises(AssertionError, match=r"^swapped: the landmarks are \(y, x\), row then column: .*swap the"):
        run_check("detector", spec, check)


class _NoGradWarper:
    """Says differentiable, but warps under torch.no_grad (for speed)."""

    differentiable = True

    def warp(self, image: torch.Tensor, source: torch.Tensor, destination: torch.Tensor) -> Any:
        with torch.no_grad():
            return get_registry("warper").get("rbf-linear").build().warp(image, source, destination)


class _NoGradDecoder(torch.nn.Module):
    """A decoder whose image is made under torch.no_grad."""

    feature_size = 4

    def decode(self, features: torch.Tensor) -> Any:
        from facekit.types import DecoderOutput

        with torch.no_grad():
            return DecoderOutput(image=torch.sigmoid(features.mean()).expand(features.shape[0], 3, 8, 8).clone())


def test_a_warp_or_decode_cut_off_from_its_inputs_is_one_line() -> None:
    """helper-223: both ended their gradients check in torch's "element 0 of tensors does not require grad"
    RuntimeError, which names neither the component nor the fix (the encoder's check says it since helper-118)."""
    with pytest.raises(AssertionError, match=r"^nograd: says differentiable = True, but the warped image is not conn"):
        run_check("warper", _warper("nograd", _NoGradWarper), "gradients")
    spec = ComponentSpec("nograd-decoder", lambda params: _NoGradDecoder(), NoParams)
    with pytest.raises(AssertionError, match=r"^nograd-decoder: the decoded image is not connected to the features"):
        run_check("decoder", spec, "gradients")


class _ArrayEncoder(_TinyEncoder):
    """Returns numpy arrays (a wrapped onnxruntime session's outputs, not turned into tensors)."""

    def embed(self, crops: torch.Tensor) -> Any:
        return torch.nn.functional.normalize(_TinyEncoder.features(self, crops), dim=1).detach().numpy()

    def features(self, crops: torch.Tensor) -> Any:
        return super().features(crops).detach().numpy()


class _ScaledAgain(torch.nn.Module):
    """The shipped SFace given its [0, 1] input divided by 255 again, as if it were 0-255."""

    def __init__(self) -> None:
        super().__init__()
        self.inner = get_registry("encoder").get("sface").build()
        self.card = self.inner.card

    def embed(self, crops: torch.Tensor) -> torch.Tensor:
        return self.inner.embed(crops / 255)

    def features(self, crops: torch.Tensor) -> torch.Tensor:
        return self.inner.features(crops / 255)


def test_an_encoder_giving_arrays_or_reading_0_255_fails_in_one_clear_line() -> None:
    """helper-223: numpy outputs failed outputs in one line but deterministic, pickles and identity in torch's and
    numpy's TypeError and AttributeError; SFace fed its input scaled as if 0-255 failed identity with only "the face
    matches a plain grey crop (0.786)"."""
    spec = _encoder("arrays", _ArrayEncoder)
    for check in ("outputs", "deterministic", "pickles", "identity"):
        with pytest.raises(AssertionError, match=r"^arrays: embeddings? is a ndarray, not a torch.Tensor$"):
            run_check("encoder", spec, check)
    try:
        card = _ScaledAgain().card
    except WeightsNotFoundError as error:
        pytest.skip(str(error))
    scaled = ComponentSpec("scaled", lambda params: _ScaledAgain(), NoParams, card=card)
    with pytest.raises(AssertionError, match=r"matches a plain grey crop .*RGB in \[0, 1\] \(scaled again as if"):
        run_check("encoder", scaled, "identity")
