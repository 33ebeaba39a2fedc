"""Applications of normalized faces, one module each: ``adjust`` (white balance and exposure from the face) with its
baselines (``baselines``: general white balancing), ``attributes`` (skin tone and face shape) and ``explore``
(feature interpolation, model comparison)."""

from __future__ import annotations

from typing import Any, Literal

#: ``adjust``'s settings (here, not in :mod:`facekit.apps.adjust`, so that the CLI validates them without numpy).
Only = Literal["both", "white-balance", "exposure"]
Fuse = Literal["agreement", "white-patch", "gray-world", "shades-of-gray", "gray-edge"]
Mapping = Literal["ycrcb", "gains"]
Region = Literal["box", "skin"]
#: ``facekit adjust --fuse``: a :data:`Fuse`, ``auto`` (white-patch with gains mapping) or ``none`` (the face alone).
FuseChoice = Literal["auto", "none", Fuse]

#: ``adjust``: the face's share when its white balance is fused with one named estimator (the default: white-patch).
#: Chosen with the default model v3 on the selection set by stop 26's rule (the lowest scene-background median among
#: white-patch at 0.5-0.8, shades-of-gray, face only): 0.6 on scenes that were DevTest photos ("adjust-models"), 0.7 in
#: its rerun on DevTrain scenes (benchmarks/RESULTS.md "adjust-selection": 1.73 vs 1.93 degrees; studio 2.25 vs 2.48).
#: Here, not in :mod:`facekit.apps.adjust`, so that the app's params and the CLI read it without importing numpy.
FUSE_WEIGHT = 0.7

#: ``adjust`` and the white-balance baselines estimate a correction on a copy this many pixels on its long side at most.
ESTIMATE_SIDE = 1024
#: The long side of the second, larger copy faces are looked for on when the first (ESTIMATE_SIDE) shows none: a
#: face of ~90 px in a 4,000 px photo is ~46 px there, which dlib's detector finds (~22 px on the first it does not).
RETRY_SIDE = 2048


def faces_on_copies(photo: Any, find: Any) -> tuple[Any, list[Any]]:
    """(the copy of ``photo`` (H, W, 3) the faces were found on, ``find(copy)``'s faces): a copy at most
    :data:`ESTIMATE_SIDE` pixels on its long side, or one of :data:`RETRY_SIDE` when that shows no face (a group
    photo, a distant face in a 12 MP frame), else the small copy and no face. ``adjust`` and ``facekit serve`` look
    for faces this way; the larger copy is made only when needed (a resize of a 12 MP photo is not free)."""
    from facekit.images import downscale

    small = downscale(photo, ESTIMATE_SIDE)
    faces = list(find(small))
    if faces or max(photo.shape[:2]) <= ESTIMATE_SIDE:  # found, or the small copy was the photo itself
        return small, faces
    larger = downscale(photo, RETRY_SIDE)
    found = list(find(larger))
    return (larger, found) if found else (small, [])


class UsesNormalizer:
    """An app that normalizes photos: the ``normalizer`` it was given, else the model file ``checkpoint`` or the
    shipped ``model`` (default: dlib), loaded on first use on ``device`` and taking the ``face`` of a photo with
    several that :func:`facekit.normalize.choose_face` names (a given normalizer takes its own face and runs on its
    own device; asking it for another is an error). ``device``: ``cpu``, ``cuda``, ``cuda:N``, ``mps``, ``xpu`` or
    ``auto`` (a GPU when one is visible), as ``facekit normalize --device``; None: the normalizer's default, the CPU. A
    GPU that is not there is a FacekitError here, before any model loads. The normalizer's encoder and decoder
    run on ``device``; what an app computes from the faces itself runs where its docstring says (adjust's and
    attributes' colours and ratios in numpy, explore's judge on the CPU).
    Apps that only measure colour set ``photo_detail`` False: they read
    :attr:`~facekit.normalize.NormalizedFace.decoder_image`, so the photo's detail would be work for nothing."""

    photo_detail = True

    def __init__(
        self,
        normalizer: Any = None,
        model: str | None = None,
        checkpoint: str | None = None,
        face: str | None = None,
        device: str | None = None,
    ) -> None:
        from facekit.errors import FacekitError
        from facekit.types import check_face_choice, face_of

        if face is not None:
            face = check_face_choice(face)
            own = face_of(normalizer)
            if normalizer is not None and own != face:
                raise FacekitError(
                    f"face {face!r} asked of a normalizer that takes the {own} face: leave face out, or build the "
                    f"normalizer with Normalizer.from_checkpoint(..., face={face!r})"
                )
        if device is not None:
            from facekit.normalize import _device_name, inference_device, same_device

            asked, device = device, inference_device(_device_name(device), "device")  # "auto" resolved, GPUs checked
            runs_on = getattr(normalizer, "device", None) or "cpu"  # (one without a device runs on the CPU)
            if normalizer is not None and not same_device(device, runs_on):
                raise FacekitError(
                    f"device {str(asked)!r} asked of a normalizer that runs on {runs_on}: leave device out, or build "
                    f"the normalizer with Normalizer.from_checkpoint(..., device={device!r})"
                )
        self._normalizer, self.model, self.checkpoint = normalizer, model, checkpoint
        #: Which face of a photo with several the app's normalizer takes (largest or central).
        self.face = face if face is not None else face_of(normalizer)
        #: The device the app loads its normalizer on (``auto`` resolved), or None: the normalizer's default (cpu).
        self.device: str | None = device

    @property
    def normalizer(self) -> Any:
        """The app's normalizer, loaded on first use. Threads sharing the app load it once, under the app's lock
        (:func:`facekit.normalize.turn_of`, which a forked child renews): before, two threads' first calls at once
        each loaded a model (twice the memory and seconds), and one of them was dropped."""
        if self._normalizer is None:
            from facekit.normalize import resolve_model, turn_of

            with turn_of(self):
                if self._normalizer is None:  # (another thread may have loaded it while this one waited)
                    self._normalizer = self.load_normalizer(resolve_model(self.model, self.checkpoint))
        return self._normalizer

    def __getstate__(self) -> dict[str, Any]:
        """Copied or pickled without its lock (:func:`facekit.normalize.without_turn`)."""
        from facekit.normalize import without_turn

        return without_turn(self)

    def load_normalizer(self, path: Any) -> Any:
        """The model file ``path`` as this app uses it (photo detail off where the app reads the decoder's face), on
        the app's ``device``."""
        from facekit.detail import DECODER_ONLY
        from facekit.normalize import Normalizer

        on: dict[str, Any] = {"device": self.device} if self.device is not None else {}  # None: from_checkpoint's
        detail = None if self.photo_detail else DECODER_ONLY
        return Normalizer.from_checkpoint(path, detail=detail, face=self.face, **on)
