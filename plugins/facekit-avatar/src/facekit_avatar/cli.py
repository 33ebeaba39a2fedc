"""``facekit avatar PHOTO_OR_FOLDER... -o OUT``: normalize, fit, texture, export and render each photo's face."""

from __future__ import annotations

from enum import StrEnum
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from facekit.cli import DeviceOption
from facekit.errors import NO_FACE, FacekitError
from facekit.types import FACE_CHOICE_HELP, FaceChoice, face_record

if TYPE_CHECKING:  # numpy is imported where it is used: registering the command runs at every `facekit` start
    import numpy as np


class LandmarkMapChoice(StrEnum):
    """--landmarks: the fit's landmark -> vertex maps (``facekit_avatar.app.LANDMARK_MAPS``), refused by the command
    line like every other choice (before: a plain string, and a typo was the app's own error with exit 1)."""

    VOTED = "voted"
    IBUG_TO_SFM = "ibug_to_sfm"


#: Shares of a photo's progress in ``facekit avatar``'s bar: its face detection ends at the first (about 80 % of the
#: time of a 12-megapixel photo's avatar, a tenth of a 250 px one's), its fit, texture and renders at the second, its
#: files at the whole. Before, its detection alone moved the bar, by 0.9 of a photo (``facekit normalize``'s share):
#: ten LFW photos were at 90 % and "ETA 0.0 s" after 0.5 s of a 6 s run, which the bar then sat out.
DETECTED_SHARE, BUILT_SHARE = 0.5, 0.9


def _output_folder(value: str | None) -> str | None:
    from facekit.cli import output_folder  # facekit's own -o check (imported when the command runs)

    return output_folder(value)


def avatar(
    photos: Annotated[list[str], typer.Argument(help="photos or folders of photos")],
    out: Annotated[str, typer.Option("--out", "-o", help="output folder", callback=_output_folder)] = "avatars",
    checkpoint: Annotated[
        str | None, typer.Option(help="normalizing model file (default: the shipped --model)")
    ] = None,
    model: Annotated[str | None, typer.Option(help="a shipped normalizing model: dlib (default) or sface")] = None,
    sfm: Annotated[
        str | None, typer.Option(help="sfm_shape_3448.bin (default: the model store; `facekit models import`)")
    ] = None,
    texture_size: Annotated[int, typer.Option(min=64, max=4096, help="side of the UV texture map")] = 512,
    batch_size: Annotated[int, typer.Option(min=1, help="photos normalized and fitted at a time")] = 16,
    overwrite: Annotated[
        bool,
        typer.Option(
            help="replace outputs in -o made from another input or other settings, or not by facekit (default: leave "
            "them, status 'exists'); avatars of this photo with these settings stay 'done': delete them to remake them",
            show_default=False,
        ),
    ] = False,
    landmarks: Annotated[
        LandmarkMapChoice,
        typer.Option(
            help="landmark -> vertex map of the fit: voted (eos's with the 12 points the App. B.1 vote places "
            "differently, nearer on real faces) or ibug_to_sfm (eos's as it is)"
        ),
    ] = LandmarkMapChoice.VOTED,
    face: Annotated[
        FaceChoice,
        typer.Option(help=FACE_CHOICE_HELP),
    ] = FaceChoice.LARGEST,
    device: DeviceOption = "cpu",
) -> None:
    """Make a textured 3-D avatar of one face of each photo (the largest, or --face central; paper Sec. 7.3). Writes
    OUT/NAME.obj + .mtl + .png (UV texture), NAME.glb, renders NAME_yaw-30.png, NAME_yaw0.png, NAME_yaw+30.png,
    NAME_sheet.png (photo | normalized face | renders) and NAME.json (coefficients, pose, reprojection error, time,
    licence). The shape model is the Surrey Face Model: free for non-commercial use only. --device is where the
    normalizing model runs; the shape fit, texturing and renders run on the CPU (and OpenGL) whatever it says. Exit 3
    when some photos got no avatar."""
    import facekit
    from facekit.batch import FINISHED, plan_folder
    from facekit.cli import STATUS_COLUMNS, PhotosStopped, console, report_rows
    from facekit.models import WeightsNotFoundError, sha256_file
    from facekit.normalize import Normalizer, inference_device, resolve_model
    from facekit.progress import PhotoCount, Progress
    from facekit_avatar.cards import AVATAR_OUTPUTS

    # Output names without white space (plain): OBJ's mtllib and map_Kd cannot name a file with spaces.
    plan = plan_folder(photos, out, batch_size, outputs=AVATAR_OUTPUTS, plain=True)  # bad inputs before loading
    # A photo it made no avatar for (no face, a failed fit, unreadable) is done again: not finished (before: every
    # row was said finished, kept).
    stopped = PhotosStopped("avatar", out, len(plan.planned), lambda row: row["status"] in FINISHED)
    with stopped.saying():
        model_path = resolve_model(model, checkpoint)
        runs_on = inference_device(device)  # a GPU that is not there: one line before the Surrey model and normalizer
        # The avatar's own options (--sfm, --landmarks) are checked before the normalizing model loads (helper-65).
        try:
            maker = facekit.load_component(
                "app", "avatar", sfm=sfm, texture_size=texture_size, landmarks=landmarks.value
            )
        except WeightsNotFoundError as error:
            if sfm is not None:
                raise
            # The store's own advice leaves out the option this command has for it (an audit ran into it).
            raise WeightsNotFoundError(f"{error}. Or pass its path: --sfm PATH") from None
        normalizer = Normalizer.from_checkpoint(model_path, device=runs_on, face=face.value)
        with Progress(console=console, transient=True) as progress:
            task = progress.add_task("avatars", total=len(plan.planned), unit="photo")
            settings = {
                "model_sha256": sha256_file(model_path),
                "sfm_sha256": sha256_file(maker.model.path),
                "texture_size": texture_size,
                "landmarks": landmarks.value,
                "detail": normalizer.detail.as_record(),  # the normalized face the texture is projected from
                # Left out for the largest, so that avatars made before the choice existed are still done.
                **({"face": rule} if (rule := face_record(normalizer.face)) else {}),
            }
            # Moved per photo as its detection, its avatar and its files end, not per batch.
            with PhotoCount(progress, task, detection_share=DETECTED_SHARE) as count:
                rows = avatar_files(
                    plan,
                    normalizer,
                    maker,
                    on_row=stopped.counting(count.row),
                    overwrite=overwrite,
                    settings=settings,
                    on_detected=count.detected,
                    on_reached=count.reached,
                )
    failed = sum(row["status"] not in FINISHED for row in rows)
    report_rows(
        f"facekit avatar -> {out}",
        STATUS_COLUMNS,
        [(row["input"], row["status"], row.get("output") or row.get("reason", "")) for row in rows],
        f"{len(rows) - failed} of {len(rows)} avatars in {out}",
        failed,
    )


def avatar_files(
    plan: Any,
    normalizer: Any,
    maker: Any,
    on_row: Any = None,
    overwrite: bool = False,
    settings: dict[str, Any] | None = None,
    on_detected: Any = None,
    on_reached: Any = None,
) -> list[dict[str, str]]:
    """Every planned photo -> its avatar files; one row per photo with ``status`` ok (made now), done (already made
    with these settings), no_face, unreadable, exists
    (its files are already there: left alone unless ``overwrite``) or unwritable (a bad photo never ends the
    batch). With ``settings`` (models' sha256, options), each NAME.json holds them and the input's sha256, and a
    rerun with the same is ``done`` without redoing it. ``on_detected`` is called as the face detection of each photo
    to make ends (``normalize_many``'s), before its batch's rows, and ``on_reached`` with :data:`BUILT_SHARE` as its
    avatar is built (fit, texture, renders) and with 1.0 as its files are written (or refused); ``on_row`` sees a
    batch's rows all at once (a stop waits for them). The folder is locked against another facekit writing into it."""
    from facekit.locks import exclusive

    with exclusive(plan.out, "avatar"):
        return _avatars_locked(plan, normalizer, maker, on_row, overwrite, settings, on_detected, on_reached)


def _avatars_locked(
    plan: Any,
    normalizer: Any,
    maker: Any,
    on_row: Any,
    overwrite: bool,
    settings: dict[str, Any] | None,
    on_detected: Any = None,
    on_reached: Any = None,
) -> list[dict[str, str]]:
    import numpy as np

    from facekit.batch import (
        exists_reason,
        input_sha256,
        made_from,
        normalize_counting,
        occupied,
        png_bytes,
        read_record,
        reading,
        remove_temporaries,
        rerun_verdict,
    )
    from facekit.errors import stops_held
    from facekit.images import load_rgb
    from facekit_avatar.cards import AVATAR_OUTPUTS

    remove_temporaries(plan.out, plan.planned)
    rows: list[dict[str, str]] = []
    provenance: dict[str, dict[str, Any]] = {}
    for start in range(0, len(plan.planned), plan.batch_size):
        # Rows by the photo's place in the batch, emitted in the order given (before: those left alone came first).
        placed: dict[int, dict[str, str]] = {}
        chunk: list[tuple[int, Any]] = []
        for place, planned in enumerate(plan.planned[start : start + plan.batch_size]):
            row = {"input": str(planned.source)}
            source_sha, why = input_sha256(planned.source)
            provenance[row["input"]] = {"input_sha256": source_sha, "settings": settings, **reading(planned.source)}
            glb, obj, record = planned.outputs(plan.out, (".glb", ".obj", ".json"))
            taken = occupied(planned.outputs(plan.out, AVATAR_OUTPUTS))
            mine = provenance[row["input"]] if settings is not None else None
            previous = read_record(record)
            recorded = previous.get("files")
            listed = recorded if isinstance(recorded, list) else []
            # Made: the GLB and every file the record lists (the OBJ, its material and texture, the renders).
            made = glb.is_file() and all((record.parent / str(name)).is_file() for name in listed)
            verdict = rerun_verdict(previous, mine, made, taken, overwrite)
            if source_sha is None:
                row.update(status="unreadable", reason=why)
            elif verdict == "done":
                row.update(status="done", output=str(obj), reason="already made with these settings")
            elif verdict == "exists":
                row.update(status="exists", reason=exists_reason(taken[0]))
            else:
                chunk.append((place, planned))
                continue
            placed[place] = row
        photos = []
        reasons = []
        for _, planned in chunk:
            photo, why = load_rgb(planned.source)
            photos.append(photo)
            reasons.append(why)
        outcomes = normalize_counting(normalizer, photos, [str(p.source) for _, p in chunk], on_detected)
        good = [i for i, o in enumerate(outcomes) if o.face is not None]
        avatars = {}
        if good:
            images = np.stack([outcomes[i].face.image for i in good])
            landmarks = np.stack([outcomes[i].face.landmarks for i in good])
            built = {} if on_reached is None else {"on_each": lambda index: on_reached(BUILT_SHARE)}
            avatars = dict(zip(good, maker.build(images, landmarks, **built), strict=True))
        for i, (place, planned) in enumerate(chunk):
            row = {"input": str(planned.source)}
            photo = photos[i]
            if photo is None:
                row.update(status="unreadable", reason=reasons[i] or "unreadable")
            elif i not in avatars:
                row.update(status=outcomes[i].status or "no_face", reason=outcomes[i].reason or NO_FACE)
            elif avatars[i].record.get("fit_failed"):
                row.update(status="fit_failed", reason=avatars[i].record["fit_failed"])
            else:
                base = Path(planned.base)  # may name a subfolder (inputs from nested folders)
                face = outcomes[i].face
                avatars[i].record.update(
                    {
                        **provenance[row["input"]],
                        **made_from(planned.source),
                        # Which face of the photo, and how it was read (greyscale, alpha over grey, first frame), as
                        # normalize records them (helper-65); not part of what makes a rerun 'done'.
                        "box": [round(float(v), 1) for v in face.box],
                        "faces_found": face.faces_found,
                        **({"reading": reasons[i]} if reasons[i] else {}),
                    }
                )
                sheet = contact_sheet(photo, face, avatars[i])
                sheet_file = (plan.out / f"{planned.base}_sheet.png", png_bytes(sheet))
                failed = ""
                try:
                    files = maker.export(
                        avatars[i], plan.out / base.parent, base.name, root=plan.out, extra=[sheet_file]
                    )
                except FacekitError as error:
                    failed = str(error)
                if failed:
                    row.update(status="unwritable", reason=failed)
                else:
                    row.update(status="ok", output=str(Path(files[0])))
                if on_reached is not None:
                    on_reached(1.0)
            placed[place] = row
        with stops_held():  # a stop waits for the batch's rows to be told: the "stopped at" count is what was made
            for place in sorted(placed):
                rows.append(placed[place])
                if on_row is not None:
                    on_row(placed[place])
    return rows


def contact_sheet(photo: np.ndarray, face: Any, avatar: Any, height: int = 224) -> np.ndarray:
    """photo (the face's box with a margin) | normalized face | renders at each yaw, ``height`` px high."""
    return side_by_side([face_crop(photo, face), face.image, *avatar.renders.values()], height)


def side_by_side(tiles: list[np.ndarray], height: int) -> np.ndarray:
    """Images resized to ``height`` px high (aspect kept) and joined left to right."""
    import cv2
    import numpy as np

    resized = [
        cv2.resize(t, (max(1, round(t.shape[1] * height / t.shape[0])), height), interpolation=cv2.INTER_AREA)
        for t in tiles
    ]
    return np.concatenate(resized, axis=1)


def face_crop(photo: np.ndarray, face: Any) -> np.ndarray:
    """The square around the face's detection box with a 35 % margin (clipped to the photo)."""
    x0, y0, x1, y1 = face.box
    margin = 0.35 * max(x1 - x0, y1 - y0)
    cx, cy, half = (x0 + x1) / 2, (y0 + y1) / 2, max(x1 - x0, y1 - y0) / 2 + margin
    h, w = photo.shape[:2]
    top, bottom = int(max(0, cy - half)), int(min(h, cy + half))
    left, right = int(max(0, cx - half)), int(min(w, cx + half))
    return photo[top:bottom, left:right]
