"""Exploring what a recognition network's features encode (Cole et al. 2017, Figs. 8, 16 and the interpolations).

- **Interpolate**: encode one face of each of two photos (the largest, or the one the normalizer's ``face`` takes),
  decode the straight path between their encoder features (or the spherical one: directions slerped, lengths
  interpolated linearly, in the decoder's standardised feature space) and judge every frame against both photos
  with an *independent* judge, a recognition network the model was not trained with, run through its own detector
  and alignment (:class:`facekit.fidelity.OwnPipelineJudge`): a model trained on dlib's features is judged by SFace,
  one trained on SFace's by dlib's ResNet. The endpoints are exactly the two photos' normalized faces.
- **Compare**: the same photos through several models, a row per photo (first the photo aligned into the normalized
  frame of the first model that found its face), a column per model, and per model the **consistency** of each
  person's normalized faces: the mean pairwise judge distance between the outputs of one person's photos (1 - cosine
  similarity for cosine judges, Euclidean distance otherwise), beside the same for the input photos under the same
  judge (lower: more alike). A person is the folder a photo is in (``alice/holiday.jpg``; below a folder given,
  the sub-folder of it, as in training), or in a single folder whose every file is named ``Name_NNNN`` (LFW's
  names), the name without ``_NNNN``: see :func:`people_of`.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from facekit.apps import UsesNormalizer
from facekit.errors import FacekitError
from facekit.types import face_of

#: The independent judge of a model, by the encoder it was trained on.
INDEPENDENT_JUDGES = {"dlib-resnet": "sface", "sface": "dlib-resnet"}


def check_independent(judge: str, normalizer: Any) -> None:
    """Refuse a ``judge`` that loads a weight file the model's encoder loads (by the sha256 their cards pin): an
    encoder of another name wrapping the same network (a plugin's SFace variant, judged by SFace; helper-70) is no
    independent judge."""
    from facekit.registry import get_registry

    def pinned(card: Any) -> dict[str, str]:
        return {w.sha256: w.file for w in getattr(card, "weights", ()) if w.sha256}

    own = pinned(getattr(getattr(normalizer, "encoder", None), "card", None))
    shared = sorted(set(own) & set(pinned(get_registry("encoder").get(judge).card)))
    if shared:
        raise FacekitError(
            f"judge {judge!r} loads the weights the model's encoder {normalizer.meta.get('encoder')!r} was trained on "
            f"({own[shared[0]]}): it is no independent judge; choose another (explore's judge param; `facekit "
            "explore interpolate --judge NAME`)"
        )


def independent_judge(encoder: str) -> str:
    """The judge for a model trained on ``encoder``: never that encoder (dlib-resnet -> sface, sface -> dlib-resnet,
    anything else -> sface)."""
    return INDEPENDENT_JUDGES.get(encoder, "sface")


#: An LFW-style file name: ``Name_NNNN`` (the person's name, then the photo's number).
NUMBERED = re.compile(r"(.+)_\d+")
#: What cameras and phones put before a photo's number (``IMG_0001``, ``DSC_0042``, ``PXL_20240101_123456``):
#: no person's name, compared in lower case.
CAMERA_PREFIXES = frozenset(
    "img dsc dscn dscf dsci pxl mvimg vid gopr dji sam wp pano photo image pic picture screenshot scan p".split()
)


def person_named(path: str | Path) -> str | None:
    """The person an LFW-style file name (``Colin_Powell_0004.jpg``) names, or None: not ``Name_NNNN``, or a
    camera's name (``IMG_0001.jpg``; a name with digits, as ``PXL_20240101_123456`` gives, is none either)."""
    match = NUMBERED.fullmatch(Path(path).stem)
    if match is None:
        return None
    name = match.group(1)
    return None if name.lower() in CAMERA_PREFIXES or any(c.isdigit() for c in name) else name


def people_of(paths: Sequence[str | Path], names: Sequence[str | Path] | None = None) -> list[str]:
    """Who each photo shows, from its path. Photos in more than one folder: the folder's name (``alice/IMG_0001.jpg``
    and ``alice/beach.jpg`` -> ``alice``; LFW's ``Colin_Powell/Colin_Powell_0004.jpg`` -> ``Colin_Powell``). All in
    one folder: the file names without their trailing ``_NNNN`` when every name has one (LFW's names in a flat folder:
    ``Jean_Chretien_12.png`` -> ``Jean_Chretien``), else the folder's name; a camera's names (``IMG_0001.jpg``,
    :func:`person_named`) are no person's. Before, the ``_NNNN`` rule came first, so a camera's ``IMG_0001.jpg`` in
    ``alice/`` and ``IMG_0002.jpg`` in ``bob/`` were one person, ``IMG``; and one folder of ``IMG_0001.jpg`` and
    ``DSC_0002.jpg`` was two people, ``IMG`` and ``DSC``.

    A folder is the one the path names, links not followed (``people/anna/`` holding links into one shared folder of
    photos is anna's); two folders of one name are two people, told apart by their paths below their common parent
    (``alice/2019`` and ``bob/2019``). Before, links were resolved and folders known by their name alone: both made
    different people one, and their consistency was measured across people, with no warning.

    ``names``: each photo's path below the folder it was found in (:func:`facekit.batch.scan_inputs`' names; a file
    given: its name alone). Then a folder given is read as a ``folder`` training source is (README, "Training on your
    own photos"): a sub-folder is a person, every photo at any depth below it (``anna/2019/holiday/1.jpg`` is
    anna's), and a photo directly in a folder given that has such sub-folders is a person of its own. Before, the
    photo's own folder was its person: anna's holiday photos were another person, ``holiday``, and the loose photos
    beside the people's folders were all one, the folder given's name, their consistency measured across people. A
    folder given with no sub-folders, and files given, keep the rules above."""
    if names is None:
        return _people_by_folder(paths)
    found = [(Path(os.path.abspath(path)), Path(name).parts) for path, name in zip(paths, names, strict=True)]
    roots = [path.parents[len(parts) - 1] for path, parts in found]
    with_people = {root for root, (_, parts) in zip(roots, found, strict=True) if len(parts) > 1}
    person_folders = [root / parts[0] for root, (_, parts) in zip(roots, found, strict=True) if len(parts) > 1]
    labels = iter(folder_labels(person_folders))
    loose = [i for i, (root, (_, parts)) in enumerate(zip(roots, found, strict=True)) if len(parts) == 1]
    by_folder = iter(_people_by_folder([paths[i] for i in loose if roots[i] not in with_people]))
    return [
        next(labels) if len(parts) > 1 else path.name if root in with_people else next(by_folder)
        for root, (path, parts) in zip(roots, found, strict=True)
    ]


def _people_by_folder(paths: Sequence[str | Path]) -> list[str]:
    """:func:`people_of` without the folders given: each photo's own folder, or LFW's names in a single one."""
    folders = [photo_folder(path) for path in paths]
    if len(set(folders)) == 1:
        named = [person_named(path) for path in paths]
        if all(named):
            return [name for name in named if name]
    return folder_labels(folders)


def photo_folder(path: str | Path) -> Path:
    """The folder ``path`` names (absolute, ``..`` and ``.`` removed, links not followed)."""
    return Path(os.path.abspath(path)).parent


def folder_labels(folders: Sequence[Path]) -> list[str]:
    """A person's label for each folder: its name, or, where other folders have the same name, its path below the
    common parent of all of them (``alice/2019``, ``bob/2019``)."""
    distinct = sorted(set(folders))
    names = [folder.name for folder in distinct]
    clashing = {name for name in names if names.count(name) > 1}
    if not clashing:
        return [folder.name for folder in folders]
    try:
        common = Path(os.path.commonpath([str(folder) for folder in distinct]))
        base: Path | None = common.parent if common in distinct else common  # alice/, alice/alice/: "alice/alice"
    except ValueError:  # folders on different drives (Windows): their whole paths
        base = None
    return [
        (folder.relative_to(base) if base is not None else folder).as_posix()
        if folder.name in clashing
        else folder.name
        for folder in folders
    ]


def people_rule_warning(paths: Sequence[str | Path]) -> str | None:
    """A warning when :func:`people_of` takes one folder's photos as one person though their names say otherwise:
    some (not all) are named ``Name_NNNN`` with at least two names, so one stray file (``holiday.jpg`` among LFW
    photos) turns several people into one and their consistency is measured across people."""
    folders = {photo_folder(path) for path in paths}
    if len(folders) != 1:
        return None
    named = [person_named(path) for path in paths]
    names = {name for name in named if name}
    strays = [Path(path).name for path, name in zip(paths, named, strict=True) if name is None]
    if len(names) < 2 or not strays:
        return None
    folder = next(iter(folders)).name
    shown = ", ".join(strays[:3]) + (f" and {len(strays) - 3} more" if len(strays) > 3 else "")
    return (
        f"{len(paths) - len(strays)} photos are named Name_NNNN with {len(names)} different names, but {shown} "
        f"not: all {len(paths)} are taken as one person, {folder!r}. If they show different people, put each "
        "person's photos in a folder of their own (or leave the others out): else consistency is measured across "
        "people"
    )


def unscored_people(persons: Sequence[str]) -> str | None:
    """What the consistency table leaves out and why: the people with a single photo (consistency is between a
    person's photos), as one line, or None when everyone has two or more. Before, `explore compare` of one photo
    per person showed "0 people, 0 of 0, -" and a lone photo beside others vanished from the figures, unexplained."""
    from collections import Counter

    counts = Counter(persons)
    single = sorted(person for person, count in counts.items() if count < 2)
    if not single:
        return None
    shown = ", ".join(single[:3]) + (f" and {len(single) - 3} more" if len(single) > 3 else "")
    scored = len(counts) - len(single)
    whom = f"{len(single)} of {len(counts)} people" if scored else f"all {len(counts)} people"
    return (
        f"consistency needs 2+ photos of a person; not scored, with one photo: {shown} ({whom}); put each person's "
        "photos in a folder of their own (alice/1.jpg, alice/2.jpg)"
    )


# ------------------------------------------------------------------------------------------------ paths


def slerp(a: Any, b: Any, t: Any) -> Any:
    """Spherical interpolation of (F,) tensors ``a`` and ``b`` at (N,) ``t``: the direction moves along the great
    circle, the length linearly from |a| to |b|; (N, F). Nearly parallel vectors fall back to the straight line."""
    import torch

    t = torch.as_tensor(t, dtype=a.dtype, device=a.device)[:, None]
    length_a, length_b = a.norm(), b.norm()
    unit_a, unit_b = a / length_a.clamp_min(1e-12), b / length_b.clamp_min(1e-12)
    omega = torch.arccos((unit_a * unit_b).sum().clamp(-1.0, 1.0))
    if float(omega) < 1e-4:
        return (1 - t) * a + t * b
    direction = (torch.sin((1 - t) * omega) * unit_a + torch.sin(t * omega) * unit_b) / torch.sin(omega)
    return direction * ((1 - t) * length_a + t * length_b)


def feature_path(a: Any, b: Any, steps: int, spherical: bool = False, centre: Any = None, scale: Any = None) -> Any:
    """``steps`` feature vectors from (F,) ``a`` to (F,) ``b`` inclusive, evenly spaced in t: (steps, F), the first
    exactly ``a`` and the last exactly ``b``. ``spherical``: :func:`slerp` of ``(x - centre) / scale`` ((F,) each;
    default 0 and 1), the space the decoder reads features in (:func:`decoder_statistics`). A straight path is the
    same in any such space."""
    import torch

    if isinstance(steps, bool) or not isinstance(steps, int | np.integer) or steps < 2:  # (2.5: torch's TypeError)
        raise FacekitError(f"an interpolation needs a whole number of at least 2 steps (the two photos), got {steps!r}")
    t = torch.linspace(0.0, 1.0, steps, dtype=a.dtype, device=a.device)
    if spherical:
        centre = torch.zeros_like(a) if centre is None else torch.as_tensor(centre).to(a)
        scale = torch.ones_like(a) if scale is None else torch.as_tensor(scale).to(a)
        path = centre + scale * slerp((a - centre) / scale, (b - centre) / scale, t)
    else:
        path = (1 - t)[:, None] * a + t[:, None] * b
    path[0], path[-1] = a, b  # no rounding at the ends: they decode to the photos' own normalized faces
    return path


def decoder_statistics(normalizer: Any) -> tuple[Any, Any]:
    """The (F,) mean and spread the normalizer's decoder standardises its features with (``feature_mean``,
    ``feature_std``), or (None, None) for a decoder without them. A spherical path goes around that mean: encoder
    features share a large common part (dlib's: cosine about 0.96 between two people), so around the origin a slerp
    is the straight line to within a grey level, and the standardised length the decoder reads dips midway all the
    same (two LFW people: 20 and 17 at the ends, 12 midway)."""
    decoder = getattr(normalizer, "decoder", None)
    centre, scale = getattr(decoder, "feature_mean", None), getattr(decoder, "feature_std", None)
    return (centre, scale) if centre is not None and scale is not None else (None, None)


def encode(
    normalizer: Any, images: Sequence[np.ndarray | None], names: Sequence[str]
) -> tuple[list[Any], Any, list[tuple[float, float, float, float] | None]]:
    """The normalizer's first half on ``images`` (None = unreadable): (one Outcome per image, like
    ``normalize_many``, without the face; (B, F) encoder features of those with status ``ok``, in order; per image
    the box of the face taken, or None)."""
    from facekit.normalize import turn_of

    with turn_of(normalizer):  # its detector and encoder, as the Normalizer's own methods use them (helper-72)
        return _encode(normalizer, images, names)


def _encode(
    normalizer: Any, images: Sequence[np.ndarray | None], names: Sequence[str]
) -> tuple[list[Any], Any, list[tuple[float, float, float, float] | None]]:
    import torch

    from facekit.align import encoder_inputs
    from facekit.normalize import detect_one

    outcomes, pending = detect_one(normalizer.detector, images, names, normalizer.face)
    boxes: list[tuple[float, float, float, float] | None] = [None] * len(images)
    for index, _, face in pending:
        boxes[index] = tuple(float(v) for v in face.box)  # type: ignore[assignment]
    if not pending:
        return outcomes, None, boxes
    points = np.stack([np.asarray(face.landmarks, np.float64) for _, _, face in pending])
    crops = encoder_inputs(
        normalizer.encoder, [image for _, image, _ in pending], points, normalizer.detector.card.landmark_scheme
    ).to(normalizer.device)
    with torch.no_grad():
        return outcomes, normalizer.encoder.features(crops), boxes


def read_photo(photo: Any, name: str | None = None) -> tuple[str, np.ndarray | None, str]:
    """(name, (H, W, 3) uint8 RGB or None, why it is None) for a path, PIL image or array. A photo that cannot be
    read (a closed PIL image, damaged bytes: :class:`PhotoUnreadable`) is None with why, so that the error names it
    (before: "the PIL image given cannot be read", without saying which photo); a form no photo comes in stays a
    FacekitError."""
    import os

    from facekit.errors import PhotoUnreadable
    from facekit.images import as_rgb, load_rgb

    if isinstance(photo, str | os.PathLike):
        image, why = load_rgb(Path(photo))
        return name or str(photo), image, why
    try:
        return name or "photo", as_rgb(photo), ""
    except PhotoUnreadable as error:
        return name or "photo", None, str(error)


def photo_cell_reason(statuses: Sequence[str]) -> str:
    """Why a comparison row's photo cell is empty, as the models' cells say it (before: 'no face' beside the models'
    'unreadable'): unreadable when a model could not read it, else no_face."""
    return "unreadable" if "unreadable" in statuses else "no_face"


def status_and_reason(status: str, reason: str) -> str:
    """``status: reason`` for a message, the status once when the reason starts with it ('unreadable (OSError ...)';
    before, 'unreadable too large (...)' read as one phrase)."""
    if not reason or reason.startswith(status):
        return reason or status
    return f"{status}: {reason}"


def strip(frames: Sequence[np.ndarray], gap: int = 0) -> np.ndarray:
    """(S, S, 3) uint8 frames side by side, ``gap`` white pixels between them: (S, N*S + (N-1)*gap, 3)."""
    height = frames[0].shape[0]
    white = np.full((height, gap, 3), 255, np.uint8)
    pieces: list[np.ndarray] = []
    for index, frame in enumerate(frames):
        if index and gap:
            pieces.append(white)
        pieces.append(frame)
    return np.concatenate(pieces, axis=1)


# ------------------------------------------------------------------------------------------------ results


@dataclass
class Interpolation:
    """Frames decoded along the feature path from photo A to photo B and the judge's view of them.

    ``t`` (N,), ``frames`` N x (S, S, 3) uint8, ``landmarks`` (N, 68, 2); ``to_a``/``to_b`` (N,) the judge's score of
    each frame against photo A/B (cosine similarity when ``higher_is_same``, else Euclidean distance; NaN where the
    judge finds no face); ``photos`` the two inputs' names and statuses."""

    t: np.ndarray
    frames: list[np.ndarray]
    landmarks: np.ndarray
    spherical: bool
    model: str
    judge: str
    metric: str
    threshold: float
    higher_is_same: bool
    to_a: np.ndarray
    to_b: np.ndarray
    photos: list[dict[str, str]] = field(default_factory=list)
    #: Frames in which the judge finds no face (their scores are NaN).
    frames_without_face: int = 0
    #: Names of the photos (A, B) in which the judge finds no face: every score against that photo is NaN.
    photos_without_face: list[str] = field(default_factory=list)
    #: Which face of each photo was taken (:func:`facekit.normalize.choose_face`).
    face: str = "largest"
    #: The params the judge's encoder was built with (``--judge arcface:weights=FILE``).
    judge_params: dict[str, Any] = field(default_factory=dict)

    def strip(self) -> np.ndarray:
        """The frames side by side, (S, N*S + 2(N-1), 3) uint8."""
        return strip(self.frames, gap=2)

    def to_json(self) -> dict[str, Any]:
        def values(array: np.ndarray) -> list[float | None]:
            return [None if np.isnan(v) else round(float(v), 4) for v in array]

        return {
            "photos": self.photos,
            "model": self.model,
            "spherical": self.spherical,
            "judge": self.judge,
            **({"judge_params": self.judge_params} if self.judge_params else {}),
            "metric": self.metric,
            "threshold": self.threshold,
            "higher_is_same": self.higher_is_same,
            "t": [round(float(v), 4) for v in self.t],
            "to_a": values(self.to_a),
            "to_b": values(self.to_b),
            "frames_without_face_for_judge": self.frames_without_face,
            "photos_without_face_for_judge": self.photos_without_face,
            "face": self.face,
        }


def cell_label(stem: str, width: int) -> str:
    """A photo's file name in ``width`` characters under its cell: the end kept, where the photos of one person differ
    (``Amelie_Mauresmo_0004`` in 17: ``..e_Mauresmo_0004``; before, ``Amelie_Mauresmo_0`` for every photo of hers)."""
    if len(stem) <= width:
        return stem
    if width < 3:
        return stem[len(stem) - max(1, width) :]
    return ".." + stem[len(stem) - max(1, width - 2) :]


@dataclass
class Comparison:
    """Photos through several models: ``cells[label][i]`` the normalized face of photo ``i`` by model ``label`` (None
    without one; ``status[label][i]`` = (status, reason)), ``aligned[i]`` the photo aligned into the frame of the
    first model that found its face, ``consistency`` a row per (model, person) and ``summary`` a row per model (see
    the module docstring)."""

    photos: list[str]
    persons: list[str]
    labels: list[str]
    aligned: list[np.ndarray | None]
    cells: dict[str, list[np.ndarray | None]]
    status: dict[str, list[tuple[str, str]]]
    consistency: list[dict[str, Any]]
    summary: list[dict[str, Any]]
    #: Which face of each photo every model's normalizer took (:func:`facekit.normalize.choose_face`), by label.
    faces: dict[str, str] = field(default_factory=dict)

    def grid(self, cell: int = 128) -> np.ndarray:
        """A row per photo, a column per model after the aligned photo, ``cell`` px squares under a header of
        labels: (28 + R*cell, (1 + M)*cell, 3) uint8."""
        import textwrap

        from PIL import Image, ImageDraw

        header = 28
        columns = ["photo (aligned)", *self.labels]
        sheet = Image.new("RGB", (len(columns) * cell, header + len(self.photos) * cell), (255, 255, 255))
        draw = ImageDraw.Draw(sheet)
        for c, title in enumerate(columns):
            lines = textwrap.wrap(title, width=max(4, cell // 6))[:2]
            draw.multiline_text((c * cell + 4, 2), "\n".join(lines), fill=(0, 0, 0), spacing=1)
        for r in range(len(self.photos)):
            row = [self.aligned[r], *(self.cells[label][r] for label in self.labels)]
            statuses = [self.status[label][r][0] for label in self.labels]
            reasons = [photo_cell_reason(statuses), *statuses]
            for c, image in enumerate(row):
                x, y = c * cell, header + r * cell
                if image is None:
                    draw.rectangle((x, y, x + cell - 1, y + cell - 1), fill=(200, 200, 200))
                    draw.text((x + 6, y + cell // 2 - 6), reasons[c].replace("_", " "), fill=(0, 0, 0))
                    continue
                sheet.paste(Image.fromarray(image).resize((cell, cell), Image.Resampling.BICUBIC), (x, y))
            name = cell_label(Path(self.photos[r]).stem, (cell - 6) // 6)  # (rows of one person stay apart)
            draw.rectangle((0, header + (r + 1) * cell - 13, 6 * len(name) + 6, header + (r + 1) * cell - 1), (0, 0, 0))
            draw.text((3, header + (r + 1) * cell - 12), name, fill=(255, 255, 255))
        return np.asarray(sheet)

    def csv(self) -> bytes:
        """The consistency rows, then a row per model over all people (``person`` = ``(all people)``, ``people`` the
        number of people scored)."""
        from facekit.batch import csv_bytes

        columns = ["model", "judge", "metric", "person", "people", "photos", "judged", "outputs_mean_distance"]
        columns.append("inputs_mean_distance")
        rows = [*self.consistency, *({**row, "person": "(all people)"} for row in self.summary)]
        return csv_bytes(columns, ([row.get(c) for c in columns] for row in rows))

    def to_json(self) -> dict[str, Any]:
        return {
            "person_rule": "the photo's folder; in a single folder whose every file is named Name_NNNN (LFW), the "
            "name without _NNNN",
            "distance": "mean pairwise judge distance within a person (1 - cosine similarity for cosine judges, "
            "Euclidean otherwise) over photos where the model gave an output and the judge found a face in both the "
            "photo and the output; lower is more alike",
            "photos": [
                {
                    "input": photo,
                    "person": self.persons[i],
                    **{label: {"status": s[i][0], "reason": s[i][1]} for label, s in self.status.items()},
                }
                for i, photo in enumerate(self.photos)
            ],
            "consistency": self.consistency,
            "summary": self.summary,
            "face": self.faces,
        }


def judge_distance(judge: Any, a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Row-wise distance under ``judge`` (lower = more alike): 1 - cosine similarity, or Euclidean."""
    from facekit.evaluate import Judge

    values = Judge(judge.name, judge.encoder).distance(a, b)
    return 1.0 - values if judge.higher_is_same else values


def mean_pairwise(judge: Any, embeddings: np.ndarray) -> float:
    """Mean :func:`judge_distance` over every pair of rows of (K, D) ``embeddings``, K >= 2."""
    first, second = np.triu_indices(len(embeddings), k=1)
    return float(judge_distance(judge, embeddings[first], embeddings[second]).mean())


def consistency_rows(
    label: str, judge: Any, persons: list[str], inputs: np.ndarray, outputs: np.ndarray
) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """Per person with 2+ photos judged (judge face found in photo and output): mean pairwise distances of the
    outputs and of the inputs; and the model's summary (means over those people)."""
    metric = "1 - cosine similarity" if judge.higher_is_same else "euclidean distance"
    judged = ~np.isnan(inputs[:, 0]) & ~np.isnan(outputs[:, 0])
    rows = []
    for person in sorted(set(persons)):
        members = [i for i, p in enumerate(persons) if p == person]
        usable = [i for i in members if judged[i]]
        if len(members) < 2:
            continue
        row: dict[str, Any] = {"model": label, "judge": judge.name, "metric": metric, "person": person}
        row.update(photos=len(members), judged=len(usable), outputs_mean_distance=None, inputs_mean_distance=None)
        if len(usable) >= 2:
            row["outputs_mean_distance"] = round(mean_pairwise(judge, outputs[usable]), 4)
            row["inputs_mean_distance"] = round(mean_pairwise(judge, inputs[usable]), 4)
        rows.append(row)
    scored = [r for r in rows if r["outputs_mean_distance"] is not None]
    summary: dict[str, Any] = {"model": label, "judge": judge.name, "metric": metric, "people": len(scored)}
    # Every photo of the people with several (helper-70: of those scored only, so a folder of 2 people whose faces
    # the judge missed said "0 of 0"), and of them the photos the scores are over.
    summary["photos"] = sum(r["photos"] for r in rows)
    summary["judged"] = sum(r["judged"] for r in scored)
    for key in ("outputs_mean_distance", "inputs_mean_distance"):
        summary[key] = round(float(np.mean([r[key] for r in scored])), 4) if scored else None
    return rows, summary


# ------------------------------------------------------------------------------------------------ the app


class Explorer(UsesNormalizer):
    """The ``explore`` app: :meth:`interpolate` between two photos' features and :meth:`compare` models.

    ``apply(faces)`` (the App protocol) lays a batch of decoded faces out as a strip and measures how far the
    landmarks move from one face to the next (the smoothness of a path). It shows what the *model* makes of the
    encoder's features, so it reads the decoder's faces (``decoder_image``), never the photo's detail. Its
    normalizers (:meth:`load_normalizer`) run on ``device``; the independent judge (its own detector and encoder,
    :meth:`judge_for`) runs on the CPU whatever the device: a network of its own, a few faces per call."""

    photo_detail = False

    def __init__(
        self,
        normalizer: Any = None,
        model: str | None = None,
        checkpoint: str | None = None,
        steps: int = 8,
        spherical: bool = False,
        judge: str | None = None,
        face: str | None = None,
        device: str | None = None,
    ) -> None:
        super().__init__(normalizer, model, checkpoint, face, device)
        self.judge_name: str | None = None
        self.judge_params: dict[str, Any] = {}
        if judge is not None:  # an unknown name or param now, not after the model loaded and the photos were read
            from facekit.errors import ParamsError
            from facekit.evaluate import parse_judge
            from facekit.registry import get_registry

            self.judge_name, self.judge_params = parse_judge(judge)
            spec = get_registry("encoder").get(self.judge_name)  # (helper-72: "unknown encoder" came 3.7 s later)
            try:
                spec.validate_params(self.judge_params)
            except ParamsError as error:
                raise FacekitError(f"judge {judge!r}: {error}") from None
            if spec.card is not None and not spec.card.detector:  # (OwnPipelineJudge.build says it after the model)
                raise FacekitError(
                    f"encoder {self.judge_name!r} names no detector of its own (ModelCard.detector): it cannot judge "
                    "through its own pipeline; choose another judge (facekit list encoders)"
                )
        self.steps, self.spherical = steps, spherical
        self._judges: dict[tuple[str, str], Any] = {}

    def judge_for(self, normalizer: Any) -> Any:
        """The judge of ``normalizer``'s outputs: ``judge`` when given, else :func:`independent_judge` of its encoder
        (built once, with its own detector, under the app's lock as :attr:`normalizer` is: threads sharing the app
        build it once), taking the face of a photo the normalizer takes (``face``)."""
        from facekit.fidelity import OwnPipelineJudge
        from facekit.normalize import turn_of

        name = self.judge_name or independent_judge(str(normalizer.meta.get("encoder", "")))
        if name == normalizer.meta.get("encoder"):
            raise FacekitError(f"judge {name!r} is the model's own training encoder: choose an independent judge")
        check_independent(name, normalizer)
        face = face_of(normalizer)  # the judge takes the face the normalizer took
        params = self.judge_params if name == self.judge_name else {}
        if (name, face) not in self._judges:
            with turn_of(self):
                if (name, face) not in self._judges:  # (another thread may have built it while this one waited)
                    self._judges[name, face] = OwnPipelineJudge.build(name, face=face, params=params)
        return self._judges[name, face]

    def interpolate(
        self, a: Any, b: Any, steps: int | None = None, spherical: bool | None = None, names: Sequence[str] = ()
    ) -> Interpolation:
        """Decode ``steps`` points (default: the app's) of the path between the features of the faces the
        normalizer takes (the largest by default) of photos ``a`` and ``b`` (paths, PIL images or (H, W, 3) uint8
        RGB). A photo without a face, or unreadable, is a FacekitError naming it."""
        from facekit.evaluate import Judge
        from facekit.images import to_uint8_rgb
        from facekit.normalize import check_outputs

        steps = self.steps if steps is None else steps
        spherical = self.spherical if spherical is None else spherical
        given = list(names) + ["A", "B"][len(names) :]
        read = [read_photo(photo, name) for photo, name in zip((a, b), given, strict=False)]
        # The model and the judge before the photos are encoded: an unknown model, or a judge whose weights are
        # missing, is refused before the work (before: the judge was built last, after encoding and decoding).
        judge = self.judge_for(self.normalizer)
        images = [image for _, image, _ in read]
        outcomes, features, boxes = encode(self.normalizer, images, [name for name, _, _ in read])
        photos = [
            {"input": name, "status": o.status, "reason": why or o.reason}
            for (name, _, why), o in zip(read, outcomes, strict=True)
        ]
        bad = [p for p in photos if p["status"] != "ok"]
        if bad:
            detail = "; ".join(f"{p['input']}: {status_and_reason(p['status'], p['reason'])}" for p in bad)
            raise FacekitError(f"interpolation needs a face in both photos: {detail}")
        path = feature_path(features[0], features[1], steps, spherical, *decoder_statistics(self.normalizer))
        out = self.normalizer.decode_features(path)
        check_outputs(out.image, out.landmarks, self.normalizer.image_size, str(self.normalizer.meta.get("source")))
        frames = to_uint8_rgb(out.image)
        ends, along = judge.embed(images, near=boxes), judge.embed(list(frames))
        score = Judge(judge.name, judge.encoder).distance
        return Interpolation(
            t=np.linspace(0.0, 1.0, steps),
            frames=frames,
            landmarks=out.landmarks.detach().float().cpu().numpy(),
            spherical=spherical,
            model=str(self.normalizer.meta.get("source", "")),
            judge=judge.name,
            judge_params=judge.params,
            metric="cosine similarity" if judge.higher_is_same else "euclidean distance",
            threshold=float(judge.card.threshold),
            higher_is_same=judge.higher_is_same,
            to_a=score(along, np.repeat(ends[:1], steps, axis=0)),
            to_b=score(along, np.repeat(ends[1:], steps, axis=0)),
            photos=photos,
            frames_without_face=int(np.isnan(along[:, 0]).sum()),
            face=self.face,
            photos_without_face=[p["input"] for p, end in zip(photos, ends, strict=True) if np.isnan(end[0])],
        )

    def compare(
        self,
        photos: Sequence[str | Path],
        models: Sequence[tuple[str, Any]] | None = None,
        on_step: Callable[[int], None] | None = None,
        batch_size: int = 8,
        relative_names: Sequence[str | Path] | None = None,
    ) -> Comparison:
        """Every photo through every (label, Normalizer) of ``models`` (default: this app's model), with each model's
        consistency under its independent judge. ``on_step(n)`` is told as each n photos are done for a model.
        ``relative_names``: each photo's path below the folder it was found in, which then names its person as in
        training (:func:`people_of`)."""
        from facekit.apps.attributes import photo_in_face_frame
        from facekit.images import load_rgb

        if isinstance(photos, str | os.PathLike | bytes):  # (helper-72: a path's characters were 49 "photos")
            raise FacekitError(f"compare takes a list of photos' paths, got one: compare([{str(photos)!r}])")
        if len(photos) == 0:  # (a numpy array of paths has no truth value)
            raise FacekitError("compare needs at least one photo")
        for index, photo in enumerate(photos):  # (before: a TypeError from Path() for an array or PIL image)
            if not isinstance(photo, str | os.PathLike):
                raise FacekitError(
                    f"compare takes photos' paths (their folders name the people), got a {type(photo).__name__} at "
                    f"index {index}: save it to a file, or normalize it with the app's normalizer"
                )
        models = list(models) if models is not None else [(self.label(), self.normalizer)]
        if not models:
            raise FacekitError("compare needs at least one model")
        labels = [label for label, _ in models]
        if len(set(labels)) != len(labels):
            raise FacekitError(f"two models have the same label ({', '.join(labels)}): label each differently")
        names = [str(p) for p in photos]
        from facekit.images import downscale

        # Every photo is held for every model: at most COMPARE_SIDE px on its long side (the faces are normalized at
        # the model's 112-224 px), shrunk as it is read, so a folder of camera photos does not hold gigabytes.
        images: list[np.ndarray | None] = []
        reasons: list[str] = []
        for path in photos:
            image, why = load_rgb(Path(path))
            images.append(None if image is None else downscale(image, COMPARE_SIDE))
            reasons.append(why)
        persons = people_of(photos, relative_names)
        aligned: list[np.ndarray | None] = [None] * len(photos)
        cells: dict[str, list[np.ndarray | None]] = {}
        status: dict[str, list[tuple[str, str]]] = {}
        # The judge's embedding of each photo, of the face the model took (its box): per judge and set of boxes, as
        # models with one detector take the same faces.
        inputs: dict[tuple[str, tuple[Any, ...]], np.ndarray] = {}
        consistency: list[dict[str, Any]] = []
        summary: list[dict[str, Any]] = []
        for label, normalizer in models:
            outcomes: list[Any] = []
            judge = self.judge_for(normalizer)
            embedded = []
            for start in range(0, len(images), batch_size):
                chunk = normalizer.normalize_many(
                    images[start : start + batch_size], [Path(p).stem for p in photos[start : start + batch_size]]
                )
                outcomes.extend(chunk)
                embedded.append(judge.embed([o.face.decoder_image if o.face is not None else None for o in chunk]))
                if on_step is not None:
                    on_step(len(chunk))
            outputs = np.concatenate(embedded)
            cells[label] = [o.face.decoder_image if o.face is not None else None for o in outcomes]
            status[label] = [
                (o.status, why if o.status == "unreadable" else o.reason)
                for o, why in zip(outcomes, reasons, strict=True)
            ]
            for i, (image, outcome) in enumerate(zip(images, outcomes, strict=True)):
                if aligned[i] is None and outcome.face is not None and image is not None:
                    aligned[i] = photo_in_face_frame(image, outcome.face)[0]
            boxes = tuple(None if o.face is None else tuple(o.face.box) for o in outcomes)
            if (judge.name, boxes) not in inputs:
                inputs[judge.name, boxes] = judge.embed(images, near=boxes)
            rows, total = consistency_rows(label, judge, persons, inputs[judge.name, boxes], outputs)
            consistency.extend(rows)
            summary.append(total)
        faces = {label: face_of(normalizer) for label, normalizer in models}
        return Comparison(names, persons, labels, aligned, cells, status, consistency, summary, faces)

    def label(self) -> str:
        """This app's model as a column label: the shipped model's name, else the checkpoint's file name."""
        if self.checkpoint is not None:
            return Path(self.checkpoint).stem
        return self.model or "dlib"

    def apply(self, faces: Any) -> dict[str, Any]:
        """``faces`` (a DecoderOutput, B faces in a row, e.g. a path's frames) -> ``strip`` (S, B*S, 3) uint8 and
        ``landmark_steps`` (B-1,): the mean distance in pixels the landmarks move between consecutive faces (empty
        without landmarks)."""
        from facekit.images import to_uint8_rgb

        frames = to_uint8_rgb(faces.image)
        steps = np.zeros(0)
        if faces.landmarks is not None:
            points = faces.landmarks.detach().float().cpu().numpy()
            steps = np.linalg.norm(np.diff(points, axis=0), axis=-1).mean(axis=-1)
        return {"strip": strip(frames), "landmark_steps": steps}


# ------------------------------------------------------------------------------------------------ files

#: What ``facekit explore interpolate`` writes into its output folder.
INTERPOLATE_FILES = ("interpolate.png", "interpolate_strip.png", "interpolate.gif", "interpolate.json")
#: The most frames the interpolation figure shows above its plot (interpolate.png; the strip and GIF have them all).
FIGURE_FRAMES = 12
#: The long side, in pixels, of the copy of each photo ``compare`` keeps (detection and alignment run on it).
COMPARE_SIDE = 1024
#: What ``facekit explore compare`` writes into its output folder.
COMPARE_FILES = ("compare.png", "compare.csv", "compare.json")


def interpolation_figure(result: Interpolation, scale: int = 2) -> np.ndarray:
    """The strip of frames with the judge's scores against A and B plotted under it (matplotlib): (H, W, 3) uint8."""
    import io

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from PIL import Image

    # At most FIGURE_FRAMES frames above the plot, evenly spaced, A and B among them (before: every frame, 1.4 inches
    # each, so `-n 256` made a figure 35,840 px wide that no viewer shows whole); the plot has every frame's scores,
    # and interpolate_strip.png and the GIF every frame.
    shown = np.unique(np.linspace(0, len(result.frames) - 1, min(len(result.frames), FIGURE_FRAMES)).round()).astype(
        int
    )
    frames = strip([result.frames[i] for i in shown], gap=2)
    count = len(shown)
    width = max(6.0, 1.4 * count)
    figure, (top, bottom) = plt.subplots(
        2, 1, figsize=(width, width / count * 1.05 + 2.6), dpi=100, height_ratios=[width / count, 2.2]
    )
    top.imshow(frames, interpolation="bicubic")
    top.set_axis_off()
    # A file name that is not UTF-8 holds lone surrogates, which matplotlib's text refuses: its odd bytes escaped;
    # and a name is text, not mathtext ("cost_$5_$^.jpg" raised as it was drawn).
    a, b = (p["input"].split("/")[-1].encode("utf-8", "backslashreplace").decode() for p in result.photos)
    every = count == len(result.frames)
    more = "" if every else f"  ({count} of {len(result.frames)} frames shown, at the dotted lines)"
    top.set_title(f"{a}  ->  {b}{more}", fontsize=9, parse_math=False)
    size = {} if every else {"markersize": 2}
    bottom.plot(result.t, result.to_a, "o-", color="#4477aa", label="to photo A", **size)
    bottom.plot(result.t, result.to_b, "s-", color="#cc6677", label="to photo B", **size)
    for t in [] if every else result.t[shown]:
        bottom.axvline(float(t), color="#bbbbbb", linestyle=":", linewidth=0.8)
    bottom.axhline(
        result.threshold, color="#777777", linestyle="--", label=f"same-person threshold {result.threshold:g}"
    )
    bottom.set_xlim(-0.5 / (count - 1), 1 + 0.5 / (count - 1))
    bottom.set_xlabel(f"t along the {'spherical' if result.spherical else 'straight'} feature path (A = 0, B = 1)")
    bottom.set_ylabel(f"{result.judge}: {result.metric}", fontsize=8)
    bottom.legend(fontsize=7, loc="best")
    bottom.grid(alpha=0.3)
    figure.tight_layout()
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png")
    plt.close(figure)
    return np.asarray(Image.open(io.BytesIO(buffer.getvalue())).convert("RGB"))


def animation_bytes(frames: Sequence[np.ndarray], scale: int = 2, milliseconds: int = 120) -> bytes:
    """An endlessly looping GIF of ``frames`` there and back (A -> B -> A), each ``scale`` times its size, marked as
    a facekit figure (a folder scan does not read it as a photo)."""
    import io

    from PIL import Image

    from facekit.batch import GIF_FIGURE_COMMENT

    images = [
        Image.fromarray(f).resize((f.shape[1] * scale, f.shape[0] * scale), Image.Resampling.BICUBIC) for f in frames
    ]
    sequence = images + images[-2:0:-1]
    buffer = io.BytesIO()
    sequence[0].save(
        buffer,
        "GIF",
        save_all=True,
        append_images=sequence[1:],
        duration=milliseconds,
        loop=0,
        comment=GIF_FIGURE_COMMENT,
    )
    return buffer.getvalue()


def write_interpolation(
    result: Interpolation, out: Path, inputs: Sequence[str | Path] = (), overwrite: bool = False
) -> list[Path]:
    """OUT/interpolate.png (strip + plot), interpolate_strip.png, interpolate.gif and interpolate.json (files already
    there are a FacekitError unless ``overwrite``). The pictures are marked as facekit's figures: a folder scan (a
    later `explore compare` or `normalize` of a folder they ended up in) skips them rather than read them as photos."""
    import json

    from facekit.batch import FIGURE_MARK, check_fixed_outputs, png_bytes

    check_fixed_outputs(out, INTERPOLATE_FILES, inputs, overwrite, "facekit explore interpolate")
    contents = [
        png_bytes(interpolation_figure(result), FIGURE_MARK),
        png_bytes(result.strip(), FIGURE_MARK),
        animation_bytes(result.frames),
        (json.dumps(result.to_json(), indent=2) + "\n").encode(),
    ]
    return write_together(out, dict(zip(INTERPOLATE_FILES, contents, strict=True)))


def write_comparison(
    result: Comparison, out: Path, inputs: Sequence[str | Path] = (), cell: int = 128, overwrite: bool = False
) -> list[Path]:
    """OUT/compare.png (the grid, marked as a facekit figure: a folder scan skips it), compare.csv and compare.json
    (files already there are a FacekitError unless ``overwrite``)."""
    import json

    from facekit.batch import FIGURE_MARK, check_fixed_outputs, png_bytes

    check_fixed_outputs(out, COMPARE_FILES, inputs, overwrite, "facekit explore compare")
    contents = [
        png_bytes(result.grid(cell), FIGURE_MARK),
        result.csv(),
        (json.dumps(result.to_json(), indent=2) + "\n").encode(),
    ]
    return write_together(out, dict(zip(COMPARE_FILES, contents, strict=True)))


def write_together(out: Path, files: dict[str, bytes]) -> list[Path]:
    """Write ``files`` (name: bytes, all made before the first is written) into ``out``, each whole
    (:func:`facekit.batch.write_atomic`), as one set: a stop (Ctrl+C, SIGTERM) or an error part-way removes those
    this call made, which were not there before (before: they stayed, and the rerun without --overwrite refused them
    as already there). A file that was there before (--overwrite) stays replaced: its old content is gone."""
    from facekit.batch import write_atomic

    out.mkdir(parents=True, exist_ok=True)
    made: list[Path] = []
    written: list[Path] = []
    try:
        for name, data in files.items():
            path = out / name
            if not os.path.lexists(path):
                made.append(path)  # (before it is written: a stop just after its rename removes it too)
            write_atomic(path, data, out)
            written.append(path)
    except BaseException:
        for path in made:
            path.unlink(missing_ok=True)
        raise
    return written
