"""facekit.batch: nothing the user owns is overwritten, writes are atomic, reruns skip finished work, memory is
bounded by the batch, and a kill leaves no partial output (the promises in facekit/batch.py's docstring)."""

from __future__ import annotations

import errno
import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image
from pydantic import Field

from facekit.batch import MANIFEST, NORMALIZE_OUTPUTS, normalize_folder, plan_folder, plan_outputs, scan_inputs
from facekit.errors import FacekitError
from facekit.images import load_rgb
from facekit.normalize import NormalizedFace, Outcome
from facekit.registry import Params
from tests.helpers import run_cli


class FakeNormalizer:
    """Stands in for the model (the file logic is under test): an image brighter than 10 has a 'face', whose
    'normalized face' is its top-left 32 x 32 corner. Records the size of every call."""

    def __init__(self) -> None:
        self.calls: list[int] = []

    def normalize_many(self, images: list[Any], names: list[str], batch_size: int = 16) -> list[Outcome]:
        self.calls.append(len(images))
        outcomes = []
        for image, name in zip(images, names, strict=True):
            if image.mean() < 10:
                outcomes.append(Outcome(name, "no_face"))
                continue
            face = NormalizedFace(image[:32, :32].copy(), np.zeros((68, 2)), None, np.zeros((68, 2)), (0, 0, 9, 9))
            outcomes.append(Outcome(name, "ok", face))
        return outcomes


def photo(path: Path, value: int) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.full((40, 40, 3), value, np.uint8)).save(path)
    return path


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture
def model(tmp_path: Path) -> Path:
    path = tmp_path / "model.safetensors"
    path.write_bytes(b"model one")
    return path


def manifest(out: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in (out / MANIFEST).read_text().splitlines()]


def test_same_names_in_different_folders_and_a_photo_named_grid_all_get_their_own_outputs(
    tmp_path: Path, model: Path
) -> None:
    a, b = photo(tmp_path / "a" / "face.jpg", 100), photo(tmp_path / "b" / "face.jpg", 150)
    grid = photo(tmp_path / "a" / "grid.png", 200)
    out = tmp_path / "out"
    summary = normalize_folder(FakeNormalizer(), [str(a), str(b), str(grid)], out, model)
    written = {Path(r.output).name for r in summary.rows}
    assert [r.status for r in summary.rows] == ["ok"] * 3 and len(written) == 3
    assert "grid.png" not in written and summary.grid == out / "grid.png"
    values = {int(np.asarray(Image.open(out / name))[0, 0, 0]) for name in written}
    assert values == {100, 150, 200}  # nothing overwrote anything
    assert [row["status"] for row in manifest(out)] == ["ok"] * 3


def test_a_photo_named_grid_given_as_input_in_the_output_folder_is_never_replaced_by_the_grid(
    tmp_path: Path, model: Path
) -> None:
    folder = tmp_path / "pics"
    face, grid = photo(folder / "face.jpg", 100), photo(folder / "grid.png", 200)
    kept = digest(grid)
    summary = normalize_folder(FakeNormalizer(), [str(face), str(grid)], folder, model, overwrite=True)
    assert [r.status for r in summary.rows] == ["ok", "ok"] and summary.grid is None
    assert summary.grid_left.endswith("not written: it is one of the inputs")
    assert digest(grid) == kept and (folder / "grid_png.png").is_file()


def test_adding_a_photo_with_the_same_name_keeps_the_finished_ones_outputs(tmp_path: Path, model: Path) -> None:
    folder, out = tmp_path / "pics", tmp_path / "out"
    photo(folder / "face.jpg", 100)
    normalize_folder(FakeNormalizer(), [str(folder)], out, model)
    made = digest(out / "face.png")
    photo(folder / "face.jpeg", 150)  # sorts first: it would take "face" and push face.jpg to "face_jpg"
    fake = FakeNormalizer()
    summary = normalize_folder(fake, [str(folder)], out, model)
    status = {Path(r.input).name: (r.status, Path(r.output).name if r.output else None) for r in summary.rows}
    assert status == {"face.jpeg": ("ok", "face_jpeg.png"), "face.jpg": ("done", "face.png")}
    assert fake.calls == [1] and digest(out / "face.png") == made
    assert not (out / "face_jpg.png").exists()
    again = normalize_folder(FakeNormalizer(), [str(folder)], out, model)
    assert [r.status for r in again.rows] == ["done", "done"] and again.failed == 0


def test_a_photo_added_in_a_later_run_under_a_taken_name_gets_its_own(
    tmp_path: Path, model: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Before: normalizing b/face.jpg into a folder that held a/face.jpg's outputs was 'exists', and the --overwrite
    it suggested replaced a's face while the manifest still named a. Outputs recorded for another file with other
    content now leave the name to it; the same photo moved elsewhere (same content) is still done; a photo edited
    in place is still 'exists'."""
    out = tmp_path / "seq"
    first = photo(tmp_path / "a" / "face.jpg", 100)
    normalize_folder(FakeNormalizer(), [str(first)], out, model)
    made = digest(out / "face.png")
    second = photo(tmp_path / "b" / "face.jpg", 150)
    summary = normalize_folder(FakeNormalizer(), [str(second)], out, model)
    assert [(r.status, Path(r.output).name) for r in summary.rows] == [("ok", "face_jpg.png")]
    assert digest(out / "face.png") == made and json.loads((out / "face.json").read_text())["source"] == str(first)
    again = normalize_folder(FakeNormalizer(), [str(first), str(second)], out, model)  # both, either order: done
    assert sorted(r.status for r in again.rows) == ["done", "done"]
    moved = tmp_path / "c" / "face.jpg"
    moved.parent.mkdir()
    moved.write_bytes(first.read_bytes())
    assert normalize_folder(FakeNormalizer(), [str(moved)], out, model).rows[0].status == "done"
    photo(first, 60)  # edited in place: its own name, another photo: left alone unless --overwrite
    assert normalize_folder(FakeNormalizer(), [str(first)], out, model).rows[0].status == "exists"
    # Run from another folder with a relative path: the records hold absolute paths, so the verdicts are the same.
    third = photo(tmp_path / "d" / "face.jpg", 200)
    monkeypatch.chdir(third.parent)
    (row,) = normalize_folder(FakeNormalizer(), ["face.jpg"], out, model).rows
    assert (row.status, Path(row.output).name) == ("ok", "face_jpg-2.png")
    monkeypatch.chdir(first.parent)
    assert normalize_folder(FakeNormalizer(), ["face.jpg"], out, model).rows[0].status == "exists"


def test_a_later_photo_named_like_another_photos_output_gets_its_own_names(tmp_path: Path, model: Path) -> None:
    """helper-65: foo.jpg's foo_side.png was foo_side.jpg's foo_side.png too: the new photo was 'exists', and the
    --overwrite it suggested replaced foo's side-by-side while foo stayed 'done'. Either order, each keeps its own."""
    for order in (("foo", "foo_side"), ("foo_side", "foo")):
        folder, out = tmp_path / "-".join(order), tmp_path / f"out-{'-'.join(order)}"
        first = photo(folder / f"{order[0]}.jpg", 100)
        second = photo(folder / f"{order[1]}.jpg", 200)
        normalize_folder(FakeNormalizer(), [str(first)], out, model)
        before = {p.name: digest(p) for p in out.iterdir() if p.suffix == ".png" and p.name != "grid.png"}
        (row,) = normalize_folder(FakeNormalizer(), [str(second)], out, model).rows
        assert row.status == "ok" and Path(row.output).name == f"{order[1]}_jpg.png"
        assert {name: digest(out / name) for name in before} == before  # the first photo's files are as they were
        again = normalize_folder(FakeNormalizer(), [str(folder)], out, model)
        assert sorted(r.status for r in again.rows) == ["done", "done"]
    # A copy of the photo under the other name (the same bytes) is another photo too (helper-66).
    folder, out = tmp_path / "copy", tmp_path / "out-copy"
    first = photo(folder / "foo.jpg", 100)
    shutil.copy(first, folder / "foo_side.jpg")
    normalize_folder(FakeNormalizer(), [str(first)], out, model)
    (row,) = normalize_folder(FakeNormalizer(), [str(folder / "foo_side.jpg")], out, model).rows
    assert row.status == "ok" and Path(row.output).name == "foo_side_jpg.png"
    # A link to the photo under the other name is another photo too (helper-68), and so is a photo in a subfolder.
    (folder / "link").mkdir()
    (folder / "link" / "foo_side.jpg").symlink_to(first)
    (link,) = plan_outputs([(folder / "link" / "foo_side.jpg", "foo_side.jpg")], out, NORMALIZE_OUTPUTS)
    assert link.base == "foo_side_jpg"
    nested = photo(tmp_path / "nested" / "a" / "foo.jpg", 100)
    normalize_folder(FakeNormalizer(), [str(nested)], out / "n", model)
    photo(tmp_path / "nested" / "a" / "foo_side.jpg", 50)
    (row,) = normalize_folder(FakeNormalizer(), [str(tmp_path / "nested")], out / "n", model).rows[1:]
    assert row.status == "ok" and Path(row.output).name == "foo_side_jpg.png"
    # A folder where an earlier version let two photos' outputs share names: on a rerun the first keeps its finished
    # outputs and only the other moves (before: both were renamed and made again, their old files left behind).
    shared = tmp_path / "shared"
    normalize_folder(FakeNormalizer(), [str(first)], shared, model)
    other = photo(tmp_path / "other" / "foo_side.jpg", 30)
    (shared / "foo_side.json").write_text(
        json.dumps({"input_path": os.path.abspath(other), "input_sha256": digest(other), "complete": True})
    )
    rerun = plan_outputs([(first, "foo.jpg"), (other, "foo_side.jpg")], shared, NORMALIZE_OUTPUTS)
    assert [p.base for p in rerun] == ["foo", "foo_side_jpg"]
    # A photo named ..jpg (base "."): its candidates are checked in -o itself, not in -o's parent.
    dots = tmp_path / "dots" / "..jpg"
    dots.parent.mkdir()
    dots.write_bytes(first.read_bytes())
    (out / "._side.json").write_text(json.dumps({"input_path": "/elsewhere/x.jpg", "input_sha256": "x"}))
    (planned_dots,) = plan_outputs([(dots, "..jpg")], out, NORMALIZE_OUTPUTS)
    assert planned_dots.base != "."
    # The avatar's names plan the same way (foo_sheet.jpg beside foo.jpg's foo_sheet.png).
    avatar_like = (".obj", ".png", ".json", "_sheet.png")
    (out / "foo.json").write_text(json.dumps({"input_path": str(first.resolve()), "input_sha256": digest(first)}))
    sheet = photo(folder / "foo_sheet.jpg", 150)
    (planned,) = plan_outputs([(sheet, "foo_sheet.jpg")], out, avatar_like)
    assert planned.base == "foo_sheet_jpg"


def test_the_record_says_how_the_photo_was_read(tmp_path: Path, model: Path) -> None:
    """A greyscale photo gets a coloured face (the decoder's guess of skin colour): its record says it was read as
    greyscale, as load_rgb's note does (before: the note was dropped); a plain photo's record has no such entry."""
    grey = tmp_path / "in" / "grey.png"
    grey.parent.mkdir()
    Image.fromarray(np.full((40, 40), 120, np.uint8)).save(grey)
    plain = photo(tmp_path / "in" / "plain.png", 120)
    normalize_folder(FakeNormalizer(), [str(grey), str(plain)], tmp_path / "out", model)
    assert json.loads((tmp_path / "out" / "grey.json").read_text())["reading"] == "greyscale"
    assert "reading" not in json.loads((tmp_path / "out" / "plain.json").read_text())


def test_normalizing_a_glob_into_its_own_folder_twice_is_done(tmp_path: Path, model: Path) -> None:
    """`facekit normalize *.png -o .` run twice: the glob now holds the first run's grid and p_side.png. They are
    skipped (this command's outputs of another photo; the grid by its mark), and p.png is done, under its name."""
    first = photo(tmp_path / "p.png", 100)
    normalize_folder(FakeNormalizer(), [str(first)], tmp_path, model)
    made = sorted(p.name for p in tmp_path.glob("*.png"))
    assert made == ["grid.png", "p.png", "p_png.png", "p_png_side.png"]
    again = normalize_folder(FakeNormalizer(), sorted(str(p) for p in tmp_path.glob("*.png")), tmp_path, model)
    assert [(Path(r.input).name, r.status) for r in again.rows] == [("p.png", "done")]
    assert sorted(p.name for p in tmp_path.glob("*.png")) == made
    mine = photo(tmp_path / "p_png.jpg", 120)  # a user's photo beside them, of a suffix normalize never writes: read
    assert mine in [item.source for item in plan_folder([str(mine)], tmp_path).planned]


def test_a_folder_scan_skips_an_earlier_runs_outputs_links_twice_and_says_what_is_no_photo(
    tmp_path: Path, model: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """helper-63: a folder holding an earlier run's output folder (``-o folder/out --inside-inputs``, then another
    ``-o``) normalized those outputs again (5 of 7 "photos" were facekit's faces, side-by-sides and grid); a link to a
    photo beside the photo took its name and the photo itself vanished from the table without a word; a HEIC photo
    was skipped silently, and a folder of only such files said "no photos found" without saying what is one."""
    inputs = tmp_path / "in"
    photo(inputs / "a.jpg", 100)
    photo(inputs / "s" / "b.jpg", 110)
    normalize_folder(FakeNormalizer(), [str(inputs)], inputs / "out", model, inside_inputs=True)
    (inputs / "alink.jpg").symlink_to(inputs / "s" / "b.jpg")  # sorts before s/b.jpg
    (inputs / "photo.heic").write_bytes(b"not read here")
    (inputs / "notes.json").write_text("{}")  # a sidecar: not worth a word
    with caplog.at_level("WARNING", logger="facekit.batch"):
        found = scan_inputs([str(inputs)], tmp_path / "other", outputs=(".png", "_side.png"))
    assert [relative for _, relative in found] == ["a.jpg", "s/b.jpg"]
    said = " ".join(record.getMessage() for record in caplog.records)
    assert "files in the folders given are facekit's outputs of an earlier run from photos given here" in said
    assert "reached a second time through a link" in said and "alink.jpg" in said
    assert "1 file(s) in the folders given not read (photo.heic): facekit reads" in said and ".jpg" in said
    only = tmp_path / "only"
    only.mkdir()
    (only / "photo.heic").write_bytes(b"x")
    with pytest.raises(FacekitError, match=r"no photos found in .*only \(facekit reads .*\.jpg"):
        scan_inputs([str(only)], tmp_path / "o2")
    # helper-64: outputs of photos that are not among the inputs are inputs (one command's results fed to the next,
    # or a photo beside an old record): only the earlier run's outputs of the photos given here are skipped.
    chained = tmp_path / "chained"
    normalize_folder(FakeNormalizer(), [str(inputs / "a.jpg")], chained, model)
    assert [relative for _, relative in scan_inputs([str(chained)], tmp_path / "o3", outputs=(".png",))] == [
        "a.png",
        "a_side.png",
    ]
    # The same path twice, relative and absolute, is no link: no warning.
    caplog.clear()
    with caplog.at_level("WARNING", logger="facekit.batch"):
        twice = scan_inputs([str(inputs / "s"), str((inputs / "s" / "b.jpg").resolve())], tmp_path / "o4")
    assert len(twice) == 1 and "link" not in " ".join(record.getMessage() for record in caplog.records)


def test_the_grid_shows_the_folder_not_only_what_a_rerun_added(tmp_path: Path, model: Path) -> None:
    """helper-63: a rerun that added a photo replaced grid.png with that photo's row alone (the earlier rows were
    gone); it now holds the done photos' rows too (from their side-by-sides), and a rerun with nothing new leaves it
    as it is."""
    out = tmp_path / "out"
    first = [str(photo(tmp_path / "in" / f"{name}.jpg", value)) for name, value in (("a", 100), ("b", 120))]
    normalize_folder(FakeNormalizer(), first, out, model)
    rows_before = np.asarray(Image.open(out / "grid.png")).shape[0]
    added = str(photo(tmp_path / "in" / "c.jpg", 140))
    summary = normalize_folder(FakeNormalizer(), [*first, added], out, model)
    assert [row.status for row in summary.rows] == ["done", "done", "ok"]
    grid = np.asarray(Image.open(out / "grid.png"))
    assert grid.shape[0] == rows_before * 3 // 2  # three rows of 164 px, where the rerun used to write one
    untouched = digest(out / "grid.png")
    again = normalize_folder(FakeNormalizer(), [*first, added], out, model)
    assert {row.status for row in again.rows} == {"done"} and digest(out / "grid.png") == untouched
    (out / "grid.png").unlink()  # deleted (or a run killed before its grid): made again from the done photos
    normalize_folder(FakeNormalizer(), [*first, added], out, model)
    assert np.asarray(Image.open(out / "grid.png")).shape == grid.shape


def test_a_long_file_name_is_written(tmp_path: Path, model: Path) -> None:
    """Before: a name of 225-246 bytes without its extension was 'unwritable: File name too long', because the
    temporary file's name added 22 bytes to the output's."""
    long = photo(tmp_path / "in" / f"{'x' * 240}.jpg", 100)
    summary = normalize_folder(FakeNormalizer(), [str(long)], tmp_path / "out", model)
    assert summary.rows[0].status == "ok", summary.rows[0].reason


def test_a_name_at_the_file_systems_limit_gets_shortened_outputs_and_the_batch_goes_on(
    tmp_path: Path, model: Path
) -> None:
    """Before: a photo named with 251 of the 255 bytes a name may have ended the whole batch with a traceback
    (OSError: File name too long) as its outputs' names (NAME_side.png, an avatar's NAME_yaw+30.png) were checked.
    Its outputs now take the name's beginning, ~ and 8 hex digits of the whole name; two such names stay apart, a
    split UTF-8 character is dropped, and a rerun finds them done."""
    from facekit.batch import SHORTENED_DIGITS, fit_name

    inputs = tmp_path / "in"
    long_a = photo(inputs / f"{'M' * 247}.jpg", 100)
    long_b = photo(inputs / f"{'M' * 246}N.jpg", 110)
    short = photo(inputs / "ok.jpg", 120)
    summary = normalize_folder(FakeNormalizer(), [str(inputs)], tmp_path / "out", model)
    assert [r.status for r in summary.rows] == ["ok", "ok", "ok"], [r.reason for r in summary.rows]
    names = sorted(p.name for p in (tmp_path / "out").iterdir())
    assert all(len(os.fsencode(name)) <= 255 for name in names)
    sides = [name for name in names if name.endswith("_side.png")]
    assert len(sides) == 3 and "ok_side.png" in sides
    assert sum(name.startswith("M" * 200) and "~" in name for name in sides) == 2
    again = normalize_folder(FakeNormalizer(), [str(long_a), str(long_b), str(short)], tmp_path / "out", model)
    assert [r.status for r in again.rows] == ["done", "done", "done"]
    cut = fit_name("sub/" + "\u00e9" * 120, 20)  # 240 bytes of two-byte characters into 20
    assert cut.startswith("sub/") and len(cut[4:].encode()) <= 20 and cut.count("\u00e9") == 5
    assert len(cut.split("~")[1]) == SHORTENED_DIGITS


def test_a_folder_scan_follows_links_and_skips_hidden_files(tmp_path: Path) -> None:
    """Before: a linked folder inside an input folder was skipped without a word, .jfif and .gif photos (read fine
    when named) were skipped, and hidden files (macOS's ._photo.jpg, a .thumbs folder) were taken for photos."""
    inputs = tmp_path / "in"
    photo(inputs / "own" / "a.jpg", 100)
    photo(tmp_path / "elsewhere" / "b.jpg", 100)
    (inputs / "linked").symlink_to(tmp_path / "elsewhere", target_is_directory=True)
    (inputs / "loop").symlink_to(inputs, target_is_directory=True)  # a link back up: scanned once
    photo(inputs / "c.jfif", 100)
    Image.fromarray(np.full((40, 40, 3), 90, np.uint8)).save(inputs / "d.gif")
    photo(inputs / ".thumbs" / "e.jpg", 100)
    (inputs / "._a.jpg").write_bytes(b"\0\5\26\7")  # macOS's resource fork beside a copied photo
    names = [relative for _, relative in scan_inputs([str(inputs)], tmp_path / "out")]
    assert names == ["c.jfif", "d.gif", "linked/b.jpg", "own/a.jpg"]
    # A link that sorts before the real folder it leads to: the photos keep their real path (their outputs' names
    # from before links were followed); a link to a parent folder does not pull in its other folders.
    (inputs / "albums").mkdir()
    (inputs / "albums" / "best").symlink_to(inputs / "own", target_is_directory=True)
    (inputs / "up").symlink_to(tmp_path, target_is_directory=True)
    names = [relative for _, relative in scan_inputs([str(inputs)], tmp_path / "out")]
    assert names == ["c.jfif", "d.gif", "linked/b.jpg", "own/a.jpg"]


def test_a_link_to_a_parent_leaves_its_other_folders_out_and_a_link_to_a_folder_named_alike_is_read(
    tmp_path: Path,
) -> None:
    """Not pinned before (helper-90's mutants): the scan above has no folder beside the one given, so a link to the
    parent pulling in the user's other folders went unseen; and a linked folder whose path begins like a scanned
    one's (``alb`` beside ``album``) is another folder, read, not that folder's parent."""
    inputs = tmp_path / "album"
    photo(inputs / "a.jpg", 100)
    photo(tmp_path / "holiday" / "h.jpg", 100)  # the user's other folder, beside the one given
    (inputs / "up").symlink_to(tmp_path, target_is_directory=True)
    photo(tmp_path / "alb" / "b.jpg", 100)
    (inputs / "more").symlink_to(tmp_path / "alb", target_is_directory=True)
    names = [relative for _, relative in scan_inputs([str(inputs)], tmp_path / "out")]
    assert names == ["a.jpg", "more/b.jpg"]


def test_a_linked_folder_is_read_whole_whichever_link_into_it_sorts_first(tmp_path: Path) -> None:
    """helper-90: a link to T/sub that sorted before a link to T was read first, and T was then taken for the parent
    of a scanned folder: T's other photos were left out without a word. Either order, every photo of T is read once,
    under the link to T."""
    photo(tmp_path / "T" / "t.jpg", 100)
    photo(tmp_path / "T" / "sub" / "s.jpg", 100)
    for inner, outer in (("a_sub", "b_top"), ("b_sub", "a_top")):
        inputs = tmp_path / f"in-{inner}"
        photo(inputs / "own.jpg", 100)
        (inputs / inner).symlink_to(tmp_path / "T" / "sub", target_is_directory=True)
        (inputs / outer).symlink_to(tmp_path / "T", target_is_directory=True)
        names = [relative for _, relative in scan_inputs([str(inputs)], tmp_path / "out")]
        assert names == sorted(["own.jpg", f"{outer}/sub/s.jpg", f"{outer}/t.jpg"])


def test_a_link_to_nothing_named_like_a_photo_is_a_row_that_says_so(tmp_path: Path, model: Path) -> None:
    """Before: a broken link named ``*.jpg`` in an input folder was skipped without a word (helper-86)."""
    inputs = tmp_path / "in"
    photo(inputs / "a.jpg", 100)
    (inputs / "gone.jpg").symlink_to(tmp_path / "moved" / "gone.jpg")
    (inputs / "notes.txt").symlink_to(tmp_path / "moved" / "notes.txt")  # not named like a photo: not one
    summary = normalize_folder(FakeNormalizer(), [str(inputs)], tmp_path / "out", model)
    rows = {Path(r.input).name: r for r in summary.rows}
    assert sorted(rows) == ["a.jpg", "gone.jpg"]
    assert rows["a.jpg"].status == "ok"
    assert rows["gone.jpg"].status == "unreadable"
    assert f"a link to {tmp_path / 'moved' / 'gone.jpg'}, which does not exist" in rows["gone.jpg"].reason
    # Every command reads photos through load_rgb, which says the same.
    said = f"unreadable (a link to {tmp_path / 'moved' / 'gone.jpg'}, which does not exist)"
    assert load_rgb(inputs / "gone.jpg") == (None, said)
    (inputs / "loop.jpg").symlink_to("loop.jpg")  # a link to itself: its target "exists" as that link (helper-91)
    assert load_rgb(inputs / "loop.jpg") == (None, "unreadable (a link to loop.jpg, which leads nowhere)")


def test_outputs_never_land_on_inputs(tmp_path: Path, model: Path) -> None:
    inputs = tmp_path / "in"
    originals = [photo(inputs / "x.png", 90), photo(inputs / "y.jpg", 91)]
    before = [digest(p) for p in originals]
    with pytest.raises(FacekitError, match="is the input folder"):
        normalize_folder(FakeNormalizer(), [str(inputs)], inputs, model)
    with pytest.raises(FacekitError, match=r"inside the input folder.*pass inside_inputs=True"):
        normalize_folder(FakeNormalizer(), [str(inputs)], inputs / "out", model)
    # Commands without the option do not offer it (before: adjust, attributes, avatar and explore named normalize's
    # --inside-inputs, which they do not have).
    with pytest.raises(FacekitError, match="inside the input folder") as refused:
        plan_folder([str(inputs)], inputs / "out", outputs=(".png", ".json"))
    assert "inside" not in str(refused.value).split("input folder")[1]
    with pytest.raises(FacekitError, match="is inside -o"):  # not "no photos found"
        normalize_folder(FakeNormalizer(), [str(inputs)], tmp_path, model)
    # Allowed when asked: the output folder is skipped when scanning, so a rerun never normalizes its own outputs.
    for _ in range(2):
        summary = normalize_folder(FakeNormalizer(), [str(inputs)], inputs / "out", model, inside_inputs=True)
        assert sorted(Path(r.input).name for r in summary.rows) == ["x.png", "y.jpg"]
    assert [digest(p) for p in originals] == before
    # A photo given as a file, sitting where its own output would go: the output takes another name.
    out = tmp_path / "flat"
    inside = photo(out / "z.png", 92)
    kept = digest(inside)
    (planned,) = plan_outputs(scan_inputs([str(inside)], out), out)
    assert planned.base == "z_png"
    normalize_folder(FakeNormalizer(), [str(inside)], out, model)
    assert digest(inside) == kept and (out / "z_png.png").is_file()


def test_a_link_under_a_relative_output_folder_is_named_as_a_link(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """helper-66: with -o ../out, the '..' of -o itself was blamed instead of the link inside it."""
    from facekit.batch import write_atomic

    (tmp_path / "out").mkdir()
    (tmp_path / "elsewhere").mkdir()
    (tmp_path / "out" / "sub").symlink_to(tmp_path / "elsewhere", target_is_directory=True)
    (tmp_path / "work").mkdir()
    monkeypatch.chdir(tmp_path / "work")
    with pytest.raises(FacekitError, match="through a symbolic link"):
        write_atomic(Path("../out/sub/face.png"), b"x", Path("../out"))
    with pytest.raises(FacekitError, match=r"\('\.\.' in the name\)"):
        write_atomic(Path("../out/../elsewhere/face.png"), b"x", Path("../out"))
    assert list((tmp_path / "elsewhere").iterdir()) == []


def test_writes_replace_a_symlink_instead_of_following_it(tmp_path: Path, model: Path) -> None:
    victim = tmp_path / "victim.txt"
    victim.write_text("precious")
    out = tmp_path / "out"
    out.mkdir()
    (out / "face.png").symlink_to(victim)
    (out / MANIFEST).symlink_to(victim)
    source = photo(tmp_path / "in" / "face.jpg", 120)
    with pytest.raises(FacekitError, match="symbolic link"):
        normalize_folder(FakeNormalizer(), [str(source)], out, model)
    assert victim.read_text() == "precious" and (out / "face.png").is_symlink()  # refused before writing anything
    (out / MANIFEST).unlink()
    left = normalize_folder(FakeNormalizer(), [str(source)], out, model)
    assert left.rows[0].status == "exists" and (out / "face.png").is_symlink()  # not facekit's: left alone
    normalize_folder(FakeNormalizer(), [str(source)], out, model, overwrite=True)
    assert victim.read_text() == "precious" and not (out / "face.png").is_symlink()
    assert int(np.asarray(Image.open(out / "face.png"))[0, 0, 0]) == 120


def test_a_linked_subfolder_cannot_lead_writes_outside(tmp_path: Path, model: Path) -> None:
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    out = tmp_path / "out"
    out.mkdir()
    (out / "sub").symlink_to(elsewhere, target_is_directory=True)
    photo(tmp_path / "in" / "sub" / "face.jpg", 120)
    photo(tmp_path / "in" / "sub" / "deeper" / "face.jpg", 90)  # a folder to create on the way: not created there
    photo(tmp_path / "in" / "top.jpg", 60)
    summary = normalize_folder(FakeNormalizer(), [str(tmp_path / "in")], out, model)
    status = {Path(row.input).relative_to(tmp_path / "in").as_posix(): row for row in summary.rows}
    assert status["sub/face.jpg"].status == status["sub/deeper/face.jpg"].status == "unwritable"
    assert "leads outside the output folder" in status["sub/face.jpg"].reason
    assert "through a symbolic link" in status["sub/face.jpg"].reason
    assert status["top.jpg"].status == "ok"  # the batch goes on
    assert list(elsewhere.iterdir()) == []


def test_reruns_skip_finished_work_and_leave_other_outputs_alone(tmp_path: Path, model: Path) -> None:
    source = photo(tmp_path / "in" / "face.jpg", 120)
    dark = photo(tmp_path / "in" / "dark.jpg", 0)
    out = tmp_path / "out"
    first = normalize_folder(FakeNormalizer(), [str(tmp_path / "in")], out, model)
    assert sorted(r.status for r in first.rows) == ["no_face", "ok"] and first.failed == 1
    fake = FakeNormalizer()
    again = normalize_folder(fake, [str(source)], out, model)
    assert again.rows[0].status == "done" and fake.calls == [0]  # nothing recomputed
    made = digest(out / "face.png")
    photo(source, 200)  # another input under the same name: its outputs are not this photo's
    edited = normalize_folder(FakeNormalizer(), [str(source)], out, model)
    assert edited.rows[0].status == "exists" and digest(out / "face.png") == made
    photo(source, 120)
    other = tmp_path / "other.safetensors"
    other.write_bytes(b"model two")
    left = normalize_folder(FakeNormalizer(), [str(source)], out, other)
    assert left.rows[0].status == "exists" and "--overwrite" in left.rows[0].reason and digest(out / "face.png") == made
    replaced = normalize_folder(FakeNormalizer(), [str(source)], out, other, overwrite=True)
    assert replaced.rows[0].status == "ok"
    assert json.loads((out / "face.json").read_text())["model_sha256"] == digest(other)
    assert dark.is_file()


def test_a_finished_photo_whose_normalized_face_was_deleted_is_made_again(tmp_path: Path, model: Path) -> None:
    """Not pinned (helper-90's mutants): face.png deleted by hand, its record and side image left: the rerun makes it
    again, rather than a 'done' row naming a file that is not there."""
    source = photo(tmp_path / "in" / "face.jpg", 120)
    out = tmp_path / "out"
    normalize_folder(FakeNormalizer(), [str(source)], out, model)
    (out / "face.png").unlink()
    fake = FakeNormalizer()
    again = normalize_folder(fake, [str(source)], out, model)
    assert again.rows[0].status == "ok" and fake.calls == [1] and (out / "face.png").is_file()


def test_a_record_made_before_colour_profiles_were_converted_is_not_done(tmp_path: Path, model: Path) -> None:
    """Not pinned for normalize (helper-90's mutants; test_images covers adjust's records): a P3 photo's outputs whose
    record lacks ``read`` were made from the values as stored, not converted to sRGB: the rerun leaves them
    (``exists``) instead of calling them done."""
    from facekit.testing import DISPLAY_P3_COLORANTS, matrix_icc

    source = tmp_path / "in" / "p3.jpg"
    source.parent.mkdir()
    p3 = matrix_icc(DISPLAY_P3_COLORANTS, 2.2, "test Display P3")
    Image.fromarray(np.full((40, 40, 3), 120, np.uint8)).save(source, icc_profile=p3)
    out = tmp_path / "out"
    normalize_folder(FakeNormalizer(), [str(source)], out, model)
    record = json.loads((out / "p3.json").read_text())
    assert record["read"].startswith("converted")
    assert normalize_folder(FakeNormalizer(), [str(source)], out, model).rows[0].status == "done"
    del record["read"]
    (out / "p3.json").write_text(json.dumps(record) + "\n")
    assert normalize_folder(FakeNormalizer(), [str(source)], out, model).rows[0].status == "exists"


def test_outputs_whose_records_predate_input_path_and_complete_keep_their_names_and_are_done(
    tmp_path: Path, model: Path
) -> None:
    """Not pinned (helper-90's mutants): records written before ``input_path`` and ``complete`` existed hold only the
    photo's sha256. Such a finished photo is done (no ``complete`` is complete) and keeps its name when a photo of the
    same name sorts before it (face.jpeg beside face.jpg), also at a group's last candidate name (face_jpg-2 for two
    face.jpg)."""

    def legacy(out: Path) -> None:
        for path in out.glob("*.json"):
            record = json.loads(path.read_text())
            path.write_text(json.dumps({k: v for k, v in record.items() if k not in ("input_path", "complete")}))

    folder, out = tmp_path / "pics", tmp_path / "out"
    photo(folder / "face.jpg", 100)
    normalize_folder(FakeNormalizer(), [str(folder)], out, model)
    legacy(out)
    made = digest(out / "face.png")
    photo(folder / "face.jpeg", 150)  # sorts first
    fake = FakeNormalizer()
    summary = normalize_folder(fake, [str(folder)], out, model)
    status = {Path(r.input).name: (r.status, Path(r.output).name if r.output else None) for r in summary.rows}
    assert status == {"face.jpeg": ("ok", "face_jpeg.png"), "face.jpg": ("done", "face.png")}
    assert fake.calls == [1] and digest(out / "face.png") == made
    # Three photos named face.jpg made face, face_jpg and face_jpg-2; given again, the last with a new one.
    three = [photo(tmp_path / name / "face.jpg", value) for name, value in (("x", 60), ("y", 70), ("z", 80))]
    normalize_folder(FakeNormalizer(), [str(p) for p in three], tmp_path / "seq", model)
    legacy(tmp_path / "seq")
    new = photo(tmp_path / "w" / "face.jpg", 90)
    rows = normalize_folder(FakeNormalizer(), [str(new), str(three[2])], tmp_path / "seq", model).rows
    assert (rows[1].status, Path(rows[1].output).name) == ("done", "face_jpg-2.png")


def test_a_clash_adds_the_extension_in_lower_case(tmp_path: Path) -> None:
    """Not pinned (helper-90's mutants): the extension a clash adds to a name is lower case, as ``_stem`` promises
    (``face_jpg`` for a camera's FACE.JPG), so outputs are named the same whatever case a camera wrote."""
    first, second = photo(tmp_path / "a" / "face.JPG", 100), photo(tmp_path / "b" / "face.JPG", 100)
    planned = plan_outputs([(first, "face.JPG"), (second, "face.JPG")], tmp_path / "out")
    assert [item.base for item in planned] == ["face", "face_jpg"]


def test_another_photo_detail_setting_is_another_output(tmp_path: Path, model: Path) -> None:
    """The same model with other --detail gives other pixels: a rerun must not call the old output done."""
    from facekit.detail import DetailSettings

    source = photo(tmp_path / "in" / "face.jpg", 120)
    out = tmp_path / "out"
    fake = FakeNormalizer()
    fake.detail = DetailSettings()  # type: ignore[attr-defined]
    normalize_folder(fake, [str(source)], out, model)
    assert json.loads((out / "face.json").read_text())["detail"] == {
        "strength": 1.0,
        "sigma": 4.0,
        "shape": 0.5,
        "forehead": 1.5,
    }
    again = normalize_folder(fake, [str(source)], out, model)
    assert again.rows[0].status == "done"
    fake.detail = DetailSettings(strength=0.0)  # type: ignore[attr-defined]
    left = normalize_folder(fake, [str(source)], out, model)
    assert left.rows[0].status == "exists" and "--detail" in left.rows[0].reason
    # The reason names every setting compared (before: --detail alone of the three options the record keeps).
    fake.detail = DetailSettings(shape=0.2)  # type: ignore[attr-defined]
    shaped = normalize_folder(fake, [str(source)], out, model).rows[0]
    assert shaped.status == "exists" and shaped.reason == (
        f"{out / 'face.png'} exists (another input, model, detector, --detail, --detail-shape, --detail-forehead, "
        "--face or --size settings, or not facekit's): --overwrite replaces"
    )


def test_the_infer_stage_names_its_own_settings_and_itself(tmp_path: Path, model: Path) -> None:
    """The recipe's infer stage normalizes through the same code as `facekit normalize`, and said its words: a
    folder another writer held was "another facekit normalize", and an output left alone said "--detail ... --overwrite
    replaces", options the stage does not have (infer.detail, infer.overwrite)."""
    from facekit.batch import INFER_WORDS, normalize_planned
    from facekit.detail import DetailSettings
    from facekit.locks import exclusive

    source = photo(tmp_path / "in" / "face.jpg", 120)
    out = tmp_path / "out"
    plan = plan_folder([str(source)], out)
    with exclusive(out, "normalize"), pytest.raises(FacekitError) as refused:
        normalize_planned(FakeNormalizer(), plan, model, words=INFER_WORDS)
    assert str(refused.value).startswith(f"another facekit infer stage or normalize is writing into {out} right now")
    fake = FakeNormalizer()
    assert normalize_planned(fake, plan, model, words=INFER_WORDS).rows[0].status == "ok"
    fake.detail = DetailSettings(forehead=1.0)  # type: ignore[attr-defined]
    left = normalize_planned(fake, plan, model, words=INFER_WORDS).rows[0]
    assert left.status == "exists" and left.reason == (
        f"{out / 'face.png'} exists (another input, model, detector, infer.detail, infer.detail_shape, "
        "infer.detail_forehead, infer.face or infer.size settings, or not facekit's): infer.overwrite replaces"
    )


def test_another_face_choice_is_another_output(tmp_path: Path, model: Path) -> None:
    """--face central may take another person from the same photo: its outputs are not the largest face's. Records
    made before the choice existed (no "face" key) are the largest face's."""
    source = photo(tmp_path / "in" / "face.jpg", 120)
    out = tmp_path / "out"
    fake = FakeNormalizer()
    normalize_folder(fake, [str(source)], out, model)
    record = json.loads((out / "face.json").read_text())
    assert record["face"] is None
    del record["face"]  # as written before --face
    (out / "face.json").write_text(json.dumps(record))
    assert normalize_folder(fake, [str(source)], out, model).rows[0].status == "done"
    fake.face = "central"  # type: ignore[attr-defined]
    left = normalize_folder(fake, [str(source)], out, model)
    assert left.rows[0].status == "exists" and "--face" in left.rows[0].reason
    made = normalize_folder(fake, [str(source)], out, model, overwrite=True)
    assert made.rows[0].status == "ok" and json.loads((out / "face.json").read_text())["face"] == "central"
    assert normalize_folder(fake, [str(source)], out, model).rows[0].status == "done"
    fake.face = "largest"  # type: ignore[attr-defined]
    assert normalize_folder(fake, [str(source)], out, model).rows[0].status == "exists"


class Points(Params):
    upsample: int = Field(0, description="times the photo is upsampled")


class ADetector:
    """A detector as its plugin builds it (never called: the stand-in normalizer finds the faces)."""

    def __init__(self, params: Points) -> None:
        self.params = params


def test_another_detector_is_another_output(tmp_path: Path, model: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The plugin author's walk (helper-229's brief): a rerun into the same folder with another detector (a recipe's
    components.detector, a fixed plugin's under a new name) said every photo had its normalized face and kept the
    faces the old one found. The model's own detector, with the model's params, is recorded as null, and records made
    before the detector was recorded (no "detector" key) count as the model's own: such folders stay done."""
    import facekit.registry
    from facekit.registry import ComponentSpec, Registry
    from facekit.types import ModelCard

    card = ModelCard(landmarks=68, landmark_scheme="ibug68")
    detectors: Registry[Any] = Registry("detector")
    for name, plugin in (("dlib", "dlib"), ("tuple", "mine")):
        detectors.add(ComponentSpec(name, ADetector, Points, card=card, plugin=plugin))
    monkeypatch.setattr(facekit.registry, "get_registry", lambda kind: detectors)
    source = photo(tmp_path / "in" / "face.jpg", 120)
    out = tmp_path / "out"
    fake = FakeNormalizer()
    fake.meta = {"recipe": {"components": {"detector": {"name": "dlib", "params": {}}}}}  # type: ignore[attr-defined]
    fake.detector = detectors.get("dlib").build({"upsample": 0}, kind="detector")  # type: ignore[attr-defined]
    assert normalize_folder(fake, [str(source)], out, model).rows[0].status == "ok"
    record = json.loads((out / "face.json").read_text())
    assert record["detector"] is None  # the model's own, its params written out or not
    del record["detector"]  # as written before the detector was recorded
    (out / "face.json").write_text(json.dumps(record))
    assert normalize_folder(fake, [str(source)], out, model).rows[0].status == "done"
    fake.detector = detectors.get("tuple").build({}, kind="detector")  # type: ignore[attr-defined]
    left = normalize_folder(fake, [str(source)], out, model)
    assert left.rows[0].status == "exists" and "detector" in left.rows[0].reason
    assert normalize_folder(fake, [str(source)], out, model, overwrite=True).rows[0].status == "ok"
    record = json.loads((out / "face.json").read_text())
    assert record["detector"] == {"name": "tuple", "plugin": "mine", "params": {"upsample": 0}}
    assert normalize_folder(fake, [str(source)], out, model).rows[0].status == "done"
    # The model's detector with other params finds other faces too; one made by hand is named by its class.
    fake.detector = detectors.get("dlib").build({"upsample": 1}, kind="detector")  # type: ignore[attr-defined]
    assert normalize_folder(fake, [str(source)], out, model).rows[0].status == "exists"
    fake.detector = ADetector(Points())  # type: ignore[attr-defined]
    assert normalize_folder(fake, [str(source)], out, model, overwrite=True).rows[0].status == "ok"
    assert json.loads((out / "face.json").read_text())["detector"] == {"class": f"{__name__}.ADetector"}
    fake.detector = detectors.get("dlib").build({}, kind="detector")  # type: ignore[attr-defined]
    assert normalize_folder(fake, [str(source)], out, model).rows[0].status == "exists"


def test_memory_is_bounded_by_the_batch_and_bad_options_are_one_line(
    tmp_path: Path, model: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import weakref

    import facekit.batch
    import facekit.images
    import facekit.outputs

    for index in range(7):
        photo(tmp_path / "in" / f"p{index}.png", 50 + index)
    # Every photo read and every picture made from one, weakly: what is still held when a batch is normalized
    # (helper-173: a grid thumbnail kept for every photo, not only the grid's rows, grew with the folder unseen).
    held: list[weakref.ref[np.ndarray]] = []

    def tracked(function: Any) -> Any:
        def call(*args: Any, **kwargs: Any) -> Any:
            result = function(*args, **kwargs)
            image = result[0] if isinstance(result, tuple) else result
            if image is not None:
                held.append(weakref.ref(image))
            return result

        return call

    monkeypatch.setattr(facekit.images, "load_rgb", tracked(facekit.images.load_rgb))
    monkeypatch.setattr(facekit.outputs, "side_by_side", tracked(facekit.outputs.side_by_side))
    monkeypatch.setattr(facekit.batch, "GRID_ROWS", 1)
    alive: list[int] = []

    class Counting(FakeNormalizer):
        def normalize_many(self, images: list[Any], names: list[str], batch_size: int = 16) -> list[Outcome]:
            alive.append(sum(ref() is not None for ref in held))
            return super().normalize_many(images, names, batch_size)

    fake = Counting()
    normalize_folder(fake, [str(tmp_path / "in")], tmp_path / "out", model, batch_size=3)
    assert fake.calls == [3, 3, 1]  # read, normalize and write three at a time
    # The batch's 3 photos, the grid's 1 row and the previous batch's last side-by-side: never more as photos add up.
    assert max(alive) <= 3 + 1 + 1, alive
    assert len(manifest(tmp_path / "out")) == 7
    with pytest.raises(FacekitError, match="at least 1"):
        normalize_folder(fake, [str(tmp_path / "in")], tmp_path / "out2", model, batch_size=0)
    (tmp_path / "afile").write_text("x")
    with pytest.raises(FacekitError, match="is a file"):
        normalize_folder(fake, [str(tmp_path / "in")], tmp_path / "afile", model)


def test_kill_9_leaves_no_partial_output_and_a_consistent_manifest(tmp_path: Path, data_root: Path) -> None:
    pytest.importorskip("dlib")
    people = sorted((data_root / "lfw" / "images").iterdir())[:40]
    inputs = tmp_path / "in"
    inputs.mkdir()
    for person in people:
        first = sorted(person.glob("*.jpg"))[0]
        (inputs / first.name).symlink_to(first)
    out = tmp_path / "out"
    exe = Path(sys.executable).with_name("facekit")
    command = [str(exe), "normalize", str(inputs), "-o", str(out), "--batch-size", "2"]
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 240
    while time.monotonic() < deadline and process.poll() is None:
        if (out / MANIFEST).is_file() and len((out / MANIFEST).read_text().splitlines()) >= 4:
            break
        time.sleep(0.01)
    assert process.poll() is None, "finished before it could be killed: " + process.stderr.read().decode()
    os.kill(process.pid, signal.SIGKILL)
    process.wait()
    rows = manifest(out)  # every line is whole JSON
    for row in rows:
        if row["status"] == "ok":
            Image.open(row["output"]).verify()  # complete PNGs
    for png in out.glob("*.png"):
        Image.open(png).verify()
    rerun = subprocess.run(command, capture_output=True, text=True, timeout=300)
    assert rerun.returncode in (0, 3), rerun.stderr
    statuses = {}
    for row in manifest(out):
        statuses[row["input"]] = row["status"]
    assert len(statuses) == 40
    finished = [r for r in rows if r["status"] == "ok"]
    assert all(statuses[r["input"]] == "done" for r in finished)  # the rerun did not redo them
    assert not list(out.rglob(".*.tmp"))  # a killed write's temporary is cleaned up


def test_a_lock_file_that_is_a_link_is_never_written_through(tmp_path: Path, model: Path) -> None:
    """Not pinned (helper-173's mutants): a planted ``.facekit.lock`` link is refused in one line as the lock is opened
    (O_NOFOLLOW). Opened through the link, the run took 100 tries and said the lock 'keeps being removed'; with the
    check that the locked file is the folder's gone too, it truncated the file the link led to and wrote its pid."""
    from facekit.locks import LOCK

    victim = tmp_path / "victim.txt"
    victim.write_text("precious")
    out = tmp_path / "out"
    out.mkdir()
    (out / LOCK).symlink_to(victim)
    with pytest.raises(FacekitError, match="cannot create the lock"):
        normalize_folder(FakeNormalizer(), [str(photo(tmp_path / "in" / "face.jpg", 120))], out, model)
    assert victim.read_text() == "precious" and (out / LOCK).is_symlink()


def test_two_writers_into_one_folder_are_refused_and_a_finished_one_lets_go(tmp_path: Path, model: Path) -> None:
    from facekit.locks import exclusive

    source = photo(tmp_path / "in" / "face.jpg", 120)
    out = tmp_path / "out"
    with exclusive(out, "normalize"), pytest.raises(FacekitError, match="another facekit normalize or infer stage"):
        normalize_folder(FakeNormalizer(), [str(source)], out, model)
    assert not (out / "face.png").exists()
    assert normalize_folder(FakeNormalizer(), [str(source)], out, model).rows[0].status == "ok"


def test_a_run_that_fails_before_writing_leaves_no_folder_behind(tmp_path: Path) -> None:
    """Before: a failed run (``explore interpolate`` on a photo without a face, a bad --checkpoint) left the -o it
    made holding only its lock file. A folder that was there, or one with outputs in it, stays."""
    from facekit.locks import LOCK, exclusive

    out = tmp_path / "new" / "deeper"
    with pytest.raises(RuntimeError), exclusive(out, "explore interpolate"):
        raise RuntimeError("no face in B")
    assert not (tmp_path / "new").exists()
    with exclusive(out, "explore interpolate"):
        (out / "result.png").write_bytes(b"made")
    assert (out / "result.png").is_file()
    kept = tmp_path / "mine"
    kept.mkdir()
    with exclusive(kept, "normalize"):
        pass
    assert kept.is_dir() and [p.name for p in kept.iterdir()] == [LOCK]
    # A run refused while another holds the new folder removes nothing of the holder's (a first version did: the
    # holder's lock and folder went, and a third run took the lock beside it); a lock file removed after another
    # process opened it is not the folder's lock any more (that process starts again on a new one).
    from facekit.locks import _is_the_file

    with exclusive(out.parent / "shared", "normalize") as held:
        with pytest.raises(FacekitError, match="another facekit"), exclusive(out.parent / "shared", "normalize"):
            pass
        assert held.is_file()
        opened = os.open(held, os.O_RDONLY)
        assert _is_the_file(opened, held)
    try:
        assert not held.exists() and not _is_the_file(opened, held)  # the holder's clean-up: the folder was new
    finally:
        os.close(opened)
    result = run_cli("explore", "interpolate", str(photo(tmp_path / "a.png", 90)), str(photo(tmp_path / "b.png", 91)),
                     "-o", str(tmp_path / "failed"))  # fmt: skip
    assert result.returncode == 1 and not (tmp_path / "failed").exists(), result.stderr


def test_outputs_get_the_usual_permissions(tmp_path: Path, model: Path) -> None:
    source = photo(tmp_path / "in" / "face.jpg", 120)
    previous = os.umask(0o022)
    try:
        normalize_folder(FakeNormalizer(), [str(source)], tmp_path / "out", model)
    finally:
        os.umask(previous)
    assert (tmp_path / "out" / "face.png").stat().st_mode & 0o777 == 0o644


def test_a_full_disk_in_any_stage_is_one_line(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    import errno

    import facekit.pipeline
    from facekit.cli import main

    def full(*_: Any, **__: Any) -> None:
        raise OSError(errno.ENOSPC, "No space left on device", "runs/train/x/checkpoints/.last.tmp")

    monkeypatch.setattr(facekit.pipeline, "run_plan", full)
    monkeypatch.delenv("FACEKIT_DEBUG", raising=False)
    assert main(["run", "recipes/demo.yaml", "--stage", "train"]) == 1
    error = capsys.readouterr().err
    assert "No space left on device" in error and ".last.tmp" in error and "Traceback" not in error


def test_a_users_own_files_in_the_output_folder_are_never_touched(tmp_path: Path, model: Path) -> None:
    """Hidden *.tmp files, a grid.png and a manifest.jsonl that facekit did not write stay as they are; a killed
    run's own temporaries (write_atomic's names) are cleared."""
    from facekit.batch import GRID, TEMPORARY_PREFIX, TEMPORARY_SUFFIX

    source = photo(tmp_path / "in" / "face.jpg", 120)
    out = tmp_path / "out"
    out.mkdir()
    mine = [out / ".notes.txt.tmp", out / ".draft.tmp", source.parent / ".face.jpg.tmp"]
    for file in mine:
        file.write_text("mine")
    leftover = out / f"{TEMPORARY_PREFIX}face.png.abc123{TEMPORARY_SUFFIX}"
    leftover.write_bytes(b"half a png")
    photo(out / GRID, 200)  # the user's own picture called grid.png
    own_grid = digest(out / GRID)
    summary = normalize_folder(FakeNormalizer(), [str(source)], out, model)
    assert [row.status for row in summary.rows] == ["ok"] and summary.grid is None
    assert "a file not made by facekit is there" in summary.grid_left  # said, not silently skipped
    assert all(file.read_text() == "mine" for file in mine) and not leftover.exists()
    assert digest(out / GRID) == own_grid
    rerun = normalize_folder(FakeNormalizer(), [str(photo(tmp_path / "in" / "b.jpg", 90))], out, model)
    assert rerun.grid is None and digest(out / GRID) == own_grid  # still the user's, run after run
    fresh = tmp_path / "fresh"
    assert normalize_folder(FakeNormalizer(), [str(source)], fresh, model).grid == fresh / GRID
    again = normalize_folder(FakeNormalizer(), [str(tmp_path / "in" / "b.jpg")], fresh, model)
    assert again.grid == fresh / GRID  # facekit's own grid is replaced by the next run's

    foreign = tmp_path / "other"
    foreign.mkdir()
    (foreign / MANIFEST).write_text("my shopping list\n")
    with pytest.raises(FacekitError, match="is not a facekit manifest"):
        normalize_folder(FakeNormalizer(), [str(source)], foreign, model)
    assert (foreign / MANIFEST).read_text() == "my shopping list\n"


def test_a_photo_that_cannot_be_read_is_a_row_not_the_end(
    tmp_path: Path, model: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import facekit.batch

    sources = [photo(tmp_path / "in" / f"{name}.jpg", 120) for name in ("a", "b", "c")]
    real = facekit.batch.sha256_file

    def locked(path: Path) -> str:
        if Path(path).name == "b.jpg":
            raise PermissionError(13, "Permission denied")
        return real(path)

    monkeypatch.setattr(facekit.batch, "sha256_file", locked)
    summary = normalize_folder(FakeNormalizer(), [str(s) for s in sources], tmp_path / "out", model)
    status = {Path(row.input).name: row for row in summary.rows}
    assert {name: row.status for name, row in status.items()} == {"a.jpg": "ok", "b.jpg": "unreadable", "c.jpg": "ok"}
    assert "Permission denied" in status["b.jpg"].reason
    monkeypatch.undo()
    (tmp_path / "out2" / "b.png").mkdir(parents=True)  # a folder where an output goes: that photo's row too
    second = normalize_folder(FakeNormalizer(), [str(s) for s in sources], tmp_path / "out2", model, overwrite=True)
    status = {Path(row.input).name: row for row in second.rows}
    assert {name: row.status for name, row in status.items()} == {"a.jpg": "ok", "b.jpg": "unwritable", "c.jpg": "ok"}
    assert "could not write" in status["b.jpg"].reason and (tmp_path / "out2" / "c.png").is_file()


def test_the_table_and_manifest_keep_the_order_given_within_a_batch(tmp_path: Path, model: Path) -> None:
    """helper-63: in each batch, the photos left alone (done, unreadable) were listed before those normalized."""
    names = ("a", "b", "c", "d", "e")
    sources = [photo(tmp_path / "in" / f"{name}.jpg", 0 if name == "d" else 120) for name in names]
    (tmp_path / "in" / "c.jpg").write_bytes(b"not a photo")
    out = tmp_path / "out"
    normalize_folder(FakeNormalizer(), [str(sources[1])], out, model)  # b is done before the run
    summary = normalize_folder(FakeNormalizer(), [str(s) for s in sources], out, model)
    order = [(Path(row.input).stem, row.status) for row in summary.rows]
    assert order == [("a", "ok"), ("b", "done"), ("c", "unreadable"), ("d", "no_face"), ("e", "ok")]
    assert [(Path(r["input"]).stem, r["status"]) for r in manifest(out)[-5:]] == order


def test_an_output_a_killed_run_left_half_written_is_redone(tmp_path: Path, model: Path) -> None:
    """The record is written first (incomplete), then the pictures, then the record again: a run killed in between
    leaves outputs the rerun knows to be its own job, so it redoes them without --overwrite."""
    source = photo(tmp_path / "in" / "face.jpg", 120)
    out = tmp_path / "out"
    normalize_folder(FakeNormalizer(), [str(source)], out, model)
    record = json.loads((out / "face.json").read_text())
    assert record["complete"] is True
    # As if killed after the first record and the PNG: the side image missing, the record incomplete.
    (out / "face_side.png").unlink()
    (out / "face.json").write_text(json.dumps({**record, "complete": False}) + "\n")
    redo = normalize_folder(FakeNormalizer(), [str(source)], out, model)
    assert redo.rows[0].status == "ok" and (out / "face_side.png").is_file()
    assert json.loads((out / "face.json").read_text())["complete"] is True
    # Another input's half-written output is still not replaced without --overwrite.
    (out / "face.json").write_text(json.dumps({**record, "input_sha256": "0" * 64, "complete": False}) + "\n")
    assert normalize_folder(FakeNormalizer(), [str(source)], out, model).rows[0].status == "exists"


def test_odd_names_extensionless_and_repeated_inputs(tmp_path: Path, model: Path) -> None:
    folder = tmp_path / "in"
    plain = photo(folder / "myphoto.png", 100)
    bare = folder / "snapshot"
    bare.write_bytes(plain.read_bytes())  # a photo without an extension, given as a file
    dotted = photo(folder / "v1.2" / "face.png", 110)  # a dot in a folder name is not an extension
    found = scan_inputs([str(plain), str(bare), str(folder), str(dotted)], tmp_path / "out")
    assert [relative for _, relative in found] == ["myphoto.png", "snapshot", "v1.2/face.png"]  # each file once
    assert [p.base for p in plan_outputs(found, tmp_path / "out")] == ["myphoto", "snapshot", "v1.2/face"]


def test_names_in_brackets_are_shown_as_they_are(capsys: pytest.CaptureFixture[str]) -> None:
    import typer

    from facekit.cli import report_rows

    with pytest.raises(typer.Exit):
        report_rows("in [draft]", ["photo", "status"], [("a[/b]c.jpg", "ok"), ("photo [edited].jpg", "x")], "s", 1)
    out = capsys.readouterr().out
    assert "a[/b]c.jpg" in out and "photo [edited].jpg" in out and "in [draft]" in out


def test_every_print_of_the_cli_shows_names_as_they_are(capsys: pytest.CaptureFixture[str]) -> None:
    """Before: names were protected print by print (escape(...), markup=False), and explore's table, prepare's
    summary and `facekit check`'s params were not: "[/]" raised MarkupError, "[bold]" vanished. The consoles'
    markup is off; colour comes from Text styles."""
    from rich.table import Table

    from facekit.cli import console, say_error

    table = Table(title="runs/[bold]x")
    table.add_row("[/]odd.jpg", "[red]not red[/red]")
    console.print(table)
    console.print("wrote runs/[/]out")
    say_error("no such photo: [bold]me[/bold].jpg")
    captured = capsys.readouterr()
    for text in ("runs/[bold]x", "[/]odd.jpg", "[red]not red[/red]", "wrote runs/[/]out"):
        assert text in captured.out
    assert "error: no such photo: [bold]me[/bold].jpg" in captured.err


def test_a_folders_avif_photos_are_read_where_pillow_reads_avif(tmp_path: Path) -> None:
    """Before: a folder's .avif photos were skipped as not photos ("not read (phone.avif)"), although `facekit
    normalize phone.avif` read the same file."""
    from PIL import Image, features

    if not features.check("avif"):
        pytest.skip("this Pillow reads no AVIF")
    inputs = tmp_path / "in"
    photo(inputs / "a.jpg", 100)
    Image.open(inputs / "a.jpg").save(inputs / "phone.avif")
    assert [relative for _, relative in scan_inputs([str(inputs)], tmp_path / "out")] == ["a.jpg", "phone.avif"]


def test_a_fifo_given_as_a_photo_is_said_to_be_no_file(tmp_path: Path) -> None:
    """Before (helper-104): a named pipe given by name was "no such photo or folder", though it is there."""
    fifo = tmp_path / "camera.jpg"
    os.mkfifo(fifo)
    with pytest.raises(FacekitError, match=r"camera\.jpg is neither a file nor a folder"):
        scan_inputs([str(fifo)], tmp_path / "out")
    with pytest.raises(FacekitError, match=r"no such photo or folder: .*gone\.jpg"):
        scan_inputs([str(tmp_path / "gone.jpg")], tmp_path / "out")
    with pytest.raises(FacekitError, match=r"standard input is not supported"):
        scan_inputs(["-"], tmp_path / "out")


def test_a_ctrl_c_as_a_batch_s_rows_are_told_counts_every_row_written(
    tmp_path: Path, model: Path, default_handlers: None
) -> None:
    """helper-196: a Ctrl+C while a finished batch was told, row by row, to the progress bar said "stopped at 5/24"
    although the batch's 16 rows were written; now the stop waits for the batch's rows to be told."""
    folder, out = tmp_path / "pics", tmp_path / "out"
    for index in range(20):
        photo(folder / f"face{index:02}.jpg", 100)
    told: list[str] = []

    def row_told(row: Any) -> None:
        told.append(row.status)
        if len(told) == 5:
            os.kill(os.getpid(), signal.SIGINT)

    with pytest.raises(KeyboardInterrupt):
        normalize_folder(FakeNormalizer(), [str(folder)], out, model, on_row=row_told)
    assert told == ["ok"] * 16 and len(manifest(out)) == 16


@pytest.mark.parametrize("code", [errno.EROFS, errno.EACCES])
def test_an_output_folder_that_cannot_be_written_is_said_so(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, code: int
) -> None:
    """helper-201: `facekit avatar photo.jpg -o ro` (as adjust, normalize, explore) into a read-only folder said
    "cannot create the lock ro/.facekit.lock: Read-only file system", a file the user never asked for; now it names
    the folder and what to do. (Root writes through permissions: the refusal is the system's, stood in for.)"""
    import facekit.locks
    from facekit.locks import exclusive

    opened = os.open

    def refused(path: Any, *args: Any, **kwargs: Any) -> int:
        if str(path).endswith(facekit.locks.LOCK):
            raise OSError(code, os.strerror(code), str(path))
        return opened(path, *args, **kwargs)

    monkeypatch.setattr(facekit.locks.os, "open", refused)
    out = tmp_path / "ro"
    out.mkdir()
    with pytest.raises(FacekitError) as caught, exclusive(out, "avatar"):
        pass
    assert (
        str(caught.value) == f"cannot write into {out}: {os.strerror(code)}; choose an output folder you can write to"
    )


def test_a_lock_file_lets_in_whom_the_umask_lets_in(tmp_path: Path) -> None:
    """The lock file was made 0644 whatever the umask: in a folder a group shares (umask 002, the folder group-
    writable), the first member's lock shut every other member out of it for good, each told "cannot write into"
    a folder they could write into. It gets the user's usual permissions, as every file facekit writes."""
    from facekit.locks import LOCK, exclusive

    modes = []
    for umask, name in ((0o002, "shared"), (0o077, "private")):
        (tmp_path / name).mkdir()
        previous = os.umask(umask)
        try:
            with exclusive(tmp_path / name, "normalize"):
                modes.append((tmp_path / name / LOCK).stat().st_mode & 0o777)
        finally:
            os.umask(previous)
    assert modes == [0o664, 0o600], [oct(mode) for mode in modes]


def test_another_users_lock_file_in_a_folder_one_may_write_is_locked_read_only(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A lock file another member of the group made (0644 by an earlier facekit, or under their umask 022) cannot be
    opened for writing, but the folder can be written: it is opened to read, which ``flock`` needs no more than, and
    it locks as any other (a second run is refused), the other user's pid left in it. Before: "cannot write into
    OUT: Permission denied; choose an output folder you can write to", for a folder the user could write into.
    (Root writes through permissions: the refusal is the system's, stood in for.)"""
    import facekit.locks
    from facekit.locks import LOCK, exclusive

    out = tmp_path / "shared"
    out.mkdir()
    (out / LOCK).write_text("4242\n")  # (another user's run, ended)
    opened = os.open

    def theirs(path: Any, flags: int, *args: Any, **kwargs: Any) -> int:
        if str(path).endswith(LOCK) and flags & (os.O_RDWR | os.O_WRONLY):
            raise PermissionError(errno.EACCES, os.strerror(errno.EACCES), str(path))
        return opened(path, flags, *args, **kwargs)

    monkeypatch.setattr(facekit.locks.os, "open", theirs)
    with exclusive(out, "normalize"):
        with pytest.raises(FacekitError, match=f"another facekit avatar is writing into {out} right now"):
            with exclusive(out, "avatar"):
                pass
    assert (out / LOCK).read_text() == "4242\n"
    with exclusive(out, "normalize"):  # (let go)
        pass

    def private(path: Any, flags: int, *args: Any, **kwargs: Any) -> int:  # (made 0600 under a umask 077)
        if str(path).endswith(LOCK):
            raise PermissionError(errno.EACCES, os.strerror(errno.EACCES), str(path))
        return opened(path, flags, *args, **kwargs)

    monkeypatch.setattr(facekit.locks.os, "open", private)  # (before: "cannot write into OUT", which one can)
    with pytest.raises(FacekitError, match=r"cannot lock .*another user made that you may neither write nor read"):
        with exclusive(out, "normalize"):
            pass
    monkeypatch.setattr(facekit.locks.os, "open", theirs)

    def locks_only_for_writers(*args: Any) -> None:  # (NFS: flock is a POSIX lock, for writers only)
        raise OSError(errno.EBADF, os.strerror(errno.EBADF))

    monkeypatch.setattr(facekit.locks.fcntl, "flock", locks_only_for_writers)
    with pytest.raises(FacekitError, match=r"cannot lock .*another user made.*chmod g\+w\), or remove it"):
        with exclusive(out, "normalize"):
            pass


def test_normalize_counting_tells_each_detection_without_its_index_and_leaves_the_keyword_out_without_a_count() -> None:
    """The folder commands' one adapter (normalize, the infer stage, avatar): normalize_many's on_detected(index)
    moves a count that takes none; without a count the keyword is not passed, so a normalizer without it serves."""
    from facekit.batch import normalize_counting

    class Plain:  # takes no on_detected
        def normalize_many(self, images: list[Any], names: list[str], batch_size: int = 16) -> list[Any]:
            return [(name, batch_size) for name in names]

    class Telling:
        def normalize_many(self, images: list[Any], names: list[str], batch_size: int = 16, **told: Any) -> list[Any]:
            for index in range(len(images)):
                told["on_detected"](index)
            return list(names)

    assert normalize_counting(Plain(), [1, 2], ["a", "b"], None, 4) == [("a", 4), ("b", 4)]
    seen: list[str] = []
    assert normalize_counting(Telling(), [1, 2, 3], ["a", "b", "c"], lambda: seen.append("x")) == ["a", "b", "c"]
    assert seen == ["x", "x", "x"]


def test_a_child_forked_while_a_folder_is_locked_does_not_keep_it_locked(tmp_path: Path) -> None:
    """A forked child's copy of the lock file's descriptor holds the flock too: a training's or an augment's
    DataLoader workers, forked while it held its folder, kept the folder locked after the run had ended (until the
    workers went), and the rerun was refused as "another facekit ... is writing". Each forked child closes its copy."""
    from facekit.locks import exclusive

    started, told = os.pipe()
    with exclusive(tmp_path, "training"):
        child = os.fork()
        if child == 0:  # a worker that outlives the run's lock (os.fork returns here after the fork hooks ran)
            os.write(told, b"x")
            time.sleep(30)
            os._exit(0)
        os.close(told)
        assert os.read(started, 1) == b"x"
        os.close(started)
    try:
        with exclusive(tmp_path, "training"):  # the run again, its worker still there
            pass
        assert os.waitpid(child, os.WNOHANG) == (0, 0)  # (it still was)
    finally:
        os.kill(child, signal.SIGKILL)
        os.waitpid(child, 0)
