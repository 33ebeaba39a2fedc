"""The prepare stage on real photos: odd inputs, resumability, shards, the on-disk format."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

from facekit.data.dataset import PreparedFaces
from facekit.data.prepare import Shard, read_progress, run_prepare
from facekit.errors import FacekitError
from facekit.recipe import resolve
from tests.helpers import (
    catches,
    default_stop_signals,
    ignores,
    kill_at_points,
    peak_in_fresh_process,
    run_cli,
    send_hangups,
    took,
)

pytest.importorskip("dlib")


def canada(data_root: Path, count: int, size: int = 300) -> list[Image.Image]:
    photos = sorted((data_root / "london" / "canada").glob("*.jpg"))[:count]
    return [
        Image.open(p).convert("RGB").resize((size, round(size * Image.open(p).height / Image.open(p).width)))
        for p in photos
    ]


def alice_and_bob(tmp_path: Path, data_root: Path, count: int) -> tuple[Path, list[Image.Image]]:
    """A folder of people: alice/a1.jpg and bob/b1.jpg from the first two of ``count`` Canada faces (returned)."""
    folder = tmp_path / "people"
    (folder / "alice").mkdir(parents=True)
    (folder / "bob").mkdir()
    faces = canada(data_root, count, size=240)
    faces[0].save(folder / "alice" / "a1.jpg")
    faces[1].save(folder / "bob" / "b1.jpg")
    return folder, faces


def recipe_for(folder: Path, output: Path, data_root: Path, workers: int = 1) -> dict:
    return {
        "description": "test",
        "components": {"detector": {"name": "dlib"}},
        "data": {"root": str(data_root), "train": [{"source": "folder", "path": str(folder)}]},
        "prepare": {"output": str(output), "image_size": 96, "interocular_px": 24, "workers": workers},
    }


def test_every_odd_file_gets_a_clear_row(tmp_path: Path, data_root: Path) -> None:
    folder = tmp_path / "odd"
    folder.mkdir()
    faces = canada(data_root, 4)
    faces[0].save(folder / "good.jpg")
    raw = (folder / "good.jpg").read_bytes()
    (folder / "corrupted.jpg").write_bytes(raw[: len(raw) // 3])
    (folder / "empty.jpg").write_bytes(b"")
    rgba = faces[1].convert("RGBA")
    rgba.putalpha(200)
    rgba.save(folder / "alpha.png")
    faces[2].convert("L").save(folder / "grey.jpg")
    Image.fromarray(np.full((240, 240, 3), (90, 140, 200), np.uint8)).save(folder / "noface.jpg")
    group = Image.new("RGB", (900, 400), (200, 200, 200))
    for i, face in enumerate(canada(data_root, 3)):
        group.paste(face, (i * 300, 0))
    group.save(folder / "three.jpg")
    (folder / "notes.txt").write_text("not a photo")

    report = run_prepare(resolve(recipe_for(folder, tmp_path / "out", data_root)))
    assert report.finished
    rows = {
        Path(r["path"]).name: r for r in map(json.loads, (tmp_path / "out" / "manifest.jsonl").read_text().splitlines())
    }
    assert set(rows) == {
        "good.jpg",
        "corrupted.jpg",
        "empty.jpg",
        "alpha.png",
        "grey.jpg",
        "noface.jpg",
        "three.jpg",
        "notes.txt",
    }
    assert rows["good.jpg"]["status"] == "kept" and len(rows["good.jpg"]["landmarks"]) == 68
    assert rows["corrupted.jpg"]["status"] == "rejected" and rows["corrupted.jpg"]["reason"].startswith("unreadable")
    assert rows["empty.jpg"]["reason"] == "unreadable (empty file)"
    assert rows["notes.txt"]["reason"].startswith("unreadable")
    assert rows["alpha.png"]["status"] == "kept" and "alpha" in rows["alpha.png"]["note"]
    assert rows["grey.jpg"]["reason"].startswith("monochrome") and rows["grey.jpg"]["note"] == "greyscale"
    assert rows["noface.jpg"]["reason"] == "no_face"
    assert rows["three.jpg"]["faces"] == 3 and "3 faces, largest kept" in rows["three.jpg"]["note"]
    summary = json.loads((tmp_path / "out" / "summary.json").read_text())
    assert summary["photos"] == 8 and summary["reasons"]["unreadable"] == 3


def test_killed_run_resumes_without_redoing_or_duplicating(tmp_path: Path, data_root: Path) -> None:
    folder = tmp_path / "people"
    folder.mkdir()
    for i, face in enumerate(canada(data_root, 10, size=240)):
        face.save(folder / f"person{i:02d}.jpg")
    output = tmp_path / "out"
    recipe = tmp_path / "recipe.yaml"
    import yaml

    recipe.write_text(yaml.safe_dump(recipe_for(folder, output, data_root)))
    exe = Path(sys.executable).with_name("facekit")
    process = subprocess.Popen([str(exe), "prepare", str(recipe)], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    progress = output / "progress.jsonl"
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and process.poll() is None:
        if progress.exists() and len(progress.read_text().splitlines()) >= 3:
            break
        time.sleep(0.05)
    assert process.poll() is None, "prepare finished before it could be killed: " + process.stderr.read().decode()
    os.kill(process.pid, signal.SIGKILL)
    process.wait()
    before = read_progress(output)
    assert 3 <= len(before) < 10
    stamps = {p.name: p.stat().st_mtime_ns for p in (output / "work").glob("*.npz")}

    report = run_prepare(resolve(recipe_for(folder, output, data_root)))
    assert report.finished and report.processed_identities == 10 - len(before)
    lines = [json.loads(line) for line in progress.read_text().splitlines()]
    assert len(lines) == len({line["identity"] for line in lines}) == 10  # no duplicates
    earlier = [entry["file"] for record in before.values() for entry in record["averages"]]
    assert earlier and set(earlier) <= set(stamps)
    for name in earlier:
        assert (output / "work" / name).stat().st_mtime_ns == stamps[name], f"{name} was redone"
    manifest = (output / "manifest.jsonl").read_text().splitlines()
    assert len(manifest) == 10


def test_shards_split_the_work_and_the_last_builds_the_arrays(tmp_path: Path, data_root: Path) -> None:
    folder, faces = alice_and_bob(tmp_path, data_root, 4)
    faces[0].transpose(Image.Transpose.FLIP_LEFT_RIGHT).save(folder / "alice" / "a2.jpg")
    faces[2].save(folder / "carol.jpg")
    plan = resolve(recipe_for(folder, tmp_path / "out", data_root))
    first = run_prepare(plan, shard=Shard.parse("0/2"))
    assert not first.finished and not (tmp_path / "out" / "landmarks.npy").exists()
    second = run_prepare(plan, shard=Shard.parse("1/2"))
    assert second.finished
    faces_ds = PreparedFaces(tmp_path / "out")
    assert len(faces_ds) == 3
    alice = next(i for i, e in enumerate(faces_ds.identities) if e["identity"] == "folder/alice")
    assert faces_ds.identities[alice]["kept"] == 2
    item = faces_ds[alice]
    assert item["image"].shape == (3, 96, 96) and item["texture"].shape == (3, 96, 96)
    assert item["landmarks"].shape == (68, 2)
    # The average sits in the paper frame: eyes level, 24 px apart, at 40 % of the height.
    points = item["landmarks"].numpy()
    left, right = points[36:42].mean(0), points[42:48].mean(0)
    assert abs(np.linalg.norm(right - left) - 24) < 0.5 and abs(left[1] - right[1]) < 0.5
    assert abs((left[1] + right[1]) / 2 - 0.4 * 95) < 0.5
    # Textures sit on the mean landmarks.
    assert np.allclose(np.load(tmp_path / "out" / "mean_landmarks.npy"), faces_ds.landmarks.mean(0), atol=1e-4)


def test_a_shard_waiting_for_another_to_build_the_set_says_so(
    tmp_path: Path, data_root: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Before: a shard finishing while another built the arrays (the merge's lock held) waited without a word, and
    seemed to hang for as long as a large set took to build."""
    import logging
    import threading

    from facekit import locks

    folder, _ = alice_and_bob(tmp_path, data_root, 2)
    output = tmp_path / "out"
    plan = resolve(recipe_for(folder, output, data_root))
    assert not run_prepare(plan, shard=Shard.parse("0/2")).finished
    said: list[str] = []
    told, held = threading.Event(), threading.Event()

    class Said(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            said.append(record.getMessage())
            told.set()

    def another_building() -> None:
        with locks.exclusive(output, "prepare (merge)", ".facekit.finalize.lock"):
            held.set()
            told.wait(timeout=60)  # (its line said, or, where none comes, a minute: the test fails, not hangs)

    monkeypatch.setattr(locks, "WAIT_SAID_AFTER", 0.0)
    handler = Said(logging.WARNING)
    logging.getLogger("facekit.data.prepare").addHandler(handler)
    builder = threading.Thread(target=another_building)
    builder.start()
    try:
        held.wait(timeout=60)
        assert run_prepare(plan, shard=Shard.parse("1/2")).finished
    finally:
        told.set()
        builder.join()
        logging.getLogger("facekit.data.prepare").removeHandler(handler)
    assert said == [f"prepare: waiting for another prepare into {output} to finish building the set..."]


def test_an_identity_redone_without_shards_keeps_its_latest_result(tmp_path: Path, data_root: Path) -> None:
    """Shard files sort after progress.jsonl: the record an unsharded rerun wrote must still win over the shard's."""
    folder, _ = alice_and_bob(tmp_path, data_root, 2)
    plan = resolve(recipe_for(folder, tmp_path / "out", data_root))
    run_prepare(plan, shard=Shard.parse("0/2"))
    run_prepare(plan, shard=Shard.parse("1/2"))
    assert len(PreparedFaces(tmp_path / "out")) == 2
    Image.new("RGB", (240, 300), (120, 120, 120)).save(folder / "alice" / "a1.jpg")  # no face any more
    assert run_prepare(plan).processed_identities == 1
    assert [e["identity"] for e in PreparedFaces(tmp_path / "out").identities] == ["folder/bob"]
    assert run_prepare(plan).processed_identities == 0  # and it stays done


def test_a_shard_does_not_finish_the_set_with_another_shards_stale_record(tmp_path: Path, data_root: Path) -> None:
    """Before: after bob's photo changed, the shard without bob reported the set finished (and a shard that rebuilt
    the arrays used bob's record of his old photo)."""
    folder, faces = alice_and_bob(tmp_path, data_root, 3)
    plan = resolve(recipe_for(folder, tmp_path / "out", data_root))
    assert not run_prepare(plan, shard=Shard.parse("0/2")).finished
    assert run_prepare(plan, shard=Shard.parse("1/2")).finished
    before = np.load(tmp_path / "out" / "averages.npy")
    # Another node sees bob's photo with another modification time (a copy): his record there still stands.
    os.utime(folder / "bob" / "b1.jpg", (1_000_000, 1_000_000))
    assert run_prepare(plan, shard=Shard.parse("0/2")).finished
    faces[2].save(folder / "bob" / "b1.jpg")  # bob (shard 1/2's) has another photo now
    alices = run_prepare(plan, shard=Shard.parse("0/2"))
    assert alices.processed_identities == 0 and not alices.finished
    bobs = run_prepare(plan, shard=Shard.parse("1/2"))
    assert bobs.processed_identities == 1 and bobs.finished
    after = np.load(tmp_path / "out" / "averages.npy")
    assert np.array_equal(before[0], after[0]) and not np.array_equal(before[1], after[1])


def test_shard_parsing() -> None:
    assert Shard.parse("2/4") == Shard(2, 4)
    for bad in ("4/4", "x", "1/0", "-1/2"):
        with pytest.raises(FacekitError):
            Shard.parse(bad)


def test_prepare_needs_a_68_point_detector(tmp_path: Path, data_root: Path) -> None:
    (tmp_path / "photos").mkdir()
    raw = recipe_for(tmp_path / "photos", tmp_path / "out", data_root)
    raw["components"]["detector"]["name"] = "dlib-5pt"
    with pytest.raises(FacekitError, match="68-point"):
        run_prepare(resolve(raw))


def test_prepare_and_augment_never_replace_a_users_files_in_their_folder(tmp_path: Path, data_root: Path) -> None:
    """helper-74: prepare.output holding the user's summary.json or contact_sheet.png had them replaced without a
    word (a summary.json that was not JSON: a traceback after all the work), augment.output its contact sheet."""
    from facekit.pipeline import check_augment_output

    folder, _ = alice_and_bob(tmp_path, data_root, 2)
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "summary.json").write_text('{"my": 1}')
    (mine / "contact_sheet.png").write_bytes(b"my picture")
    with pytest.raises(FacekitError, match=r"prepare.output .* holds files facekit did not write there"):
        run_prepare(resolve(recipe_for(folder, mine, data_root)))
    assert (mine / "summary.json").read_text() == '{"my": 1}' and sorted(p.name for p in mine.iterdir()) == [
        "contact_sheet.png",
        "summary.json",
    ]
    output = tmp_path / "out"  # prepare's own folder, written and written again, passes
    assert run_prepare(resolve(recipe_for(folder, output, data_root))).finished
    assert run_prepare(resolve(recipe_for(folder, output, data_root))).processed_identities == 0
    (output / "README.md").write_text("my notes")  # its own folder may hold the user's notes (helper-76)
    assert run_prepare(resolve(recipe_for(folder, output, data_root))).processed_identities == 0
    with pytest.raises(FacekitError, match=r"augment.output .* holds files facekit did not write there"):
        check_augment_output(mine)
    check_augment_output(tmp_path / "new")  # a new folder, or one augment wrote, passes
    (tmp_path / "aug").mkdir()
    (tmp_path / "aug" / "index.json").write_text('{"shards": []}')
    (tmp_path / "aug" / "contact_sheet.png").write_bytes(b"its sheet")
    (tmp_path / "aug" / "NOTES.txt").write_text("mine")
    check_augment_output(tmp_path / "aug")


@pytest.mark.filterwarnings("ignore::PIL.Image.DecompressionBombWarning")  # Pillow's, before load_rgb refuses it
def test_a_decompression_bomb_is_refused_from_its_header(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from facekit.images import load_rgb

    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", Image.MAX_IMAGE_PIXELS)  # load_rgb may raise it; put it back
    bomb = tmp_path / "bomb.png"
    Image.new("1", (12_000, 12_000)).save(bomb)  # 144 MP in a few kB
    assert bomb.stat().st_size < 100_000
    code = (
        "from pathlib import Path; from facekit.images import load_rgb\n"
        "image, why = load_rgb(Path(sys.argv[1]))\n"
        "print(image is None)"
    )
    # Refused before decoding: decoding would hold 144 MP x 3 bytes (432 MB). No time bound here (a loaded CI
    # machine made it flaky; speed is for benchmarks/).
    (refused,), extra_kb = peak_in_fresh_process(code, str(bomb))
    assert refused == "True" and extra_kb < 200_000, (refused, extra_kb)
    image, why = load_rgb(bomb)
    assert image is None and "144 MP" in why and "FACEKIT_MAX_MEGAPIXELS" in why
    larger = tmp_path / "larger.png"
    Image.new("1", (15_000, 15_000)).save(larger)  # past Pillow's own guard (2 x 89 MP): still "too large", not damaged
    assert load_rgb(larger) == (None, "too large (225 MP > 50 MP; set FACEKIT_MAX_MEGAPIXELS to allow it)")
    monkeypatch.setenv("FACEKIT_MAX_MEGAPIXELS", "200")  # allowed when the user says so
    guard = Image.MAX_IMAGE_PIXELS
    assert load_rgb(bomb)[0] is not None
    assert Image.MAX_IMAGE_PIXELS == guard  # for that read only: Pillow's process-wide guard is left as it was
    monkeypatch.setenv("FACEKIT_MAX_MEGAPIXELS", "nonsense")
    with pytest.raises(FacekitError, match="FACEKIT_MAX_MEGAPIXELS"):
        load_rgb(bomb)


def test_prepare_workers_say_a_photo_over_pillows_limit_once(tmp_path: Path, data_root: Path) -> None:
    """Before: with prepare.workers >= 2, each worker printed Pillow's DecompressionBombWarning for a photo over its
    89 MP limit (spawned processes do not inherit the CLI's warnings filter) beside the photo's own rejection."""
    import yaml

    folder = tmp_path / "people"
    for i, face in enumerate(canada(data_root, 2, size=240)):
        (folder / f"p{i}").mkdir(parents=True)
        face.save(folder / f"p{i}" / "one.jpg")
    Image.new("1", (12_000, 12_000)).save(folder / "p1" / "bomb.png")  # 144 MP in a few kB
    recipe = tmp_path / "recipe.yaml"
    recipe.write_text(yaml.safe_dump(recipe_for(folder, tmp_path / "out", data_root, workers=2)))
    result = run_cli("prepare", str(recipe))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "exceeds limit" not in result.stderr, result.stderr
    rows = [json.loads(line) for line in (tmp_path / "out" / "manifest.jsonl").read_text().splitlines()]
    assert any("bomb.png" in row["path"] and "144 MP" in row.get("reason", "") for row in rows), rows


def test_sixteen_bit_greyscale_keeps_its_tones(tmp_path: Path) -> None:
    from facekit.images import load_rgb

    path = tmp_path / "grey16.png"
    values = np.array([[0, 30_000], [15_000, 20_000]], np.uint16)  # dark: not stretched to its own maximum
    Image.fromarray(values).save(path)
    image, note = load_rgb(path)
    assert image is not None and image.shape == (2, 2, 3) and "16-bit" in note
    assert image[..., 0].tolist() == [[0, 117], [58, 78]]
    # A float TIFF in 0..1 (helper-65: it read as black, 0 and 1 of 255) is scaled; one in 0..255 keeps its scale.
    for name, scale, note_is in (("unit.tif", 1.0, "float 0..1"), ("byte.tif", 255.0, "greyscale")):
        Image.fromarray(np.array([[0.0, 0.5], [0.25, 1.0]], np.float32) * np.float32(scale), "F").save(tmp_path / name)
        image, note = load_rgb(tmp_path / name)
        assert image is not None and image[..., 0].tolist() == [[0, 128], [64, 255]] and note_is in note, name
    # A 0..1 image whose few highlights overshoot 1 (helper-66: read on the 0..255 scale, black) clips at white.
    values = np.full((20, 20), 0.5, np.float32)
    values[0, :3] = 1.3
    Image.fromarray(values, "F").save(tmp_path / "over.tif")
    image, note = load_rgb(tmp_path / "over.tif")
    assert image is not None and image[1, 1, 0] == 128 and image[0, 0, 0] == 255 and "float 0..1" in note


def test_resumed_work_is_the_same_work(tmp_path: Path, data_root: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Other settings are refused (not silently reused); a changed photo set is redone; names map injectively."""
    from facekit.data.prepare import _safe_name

    assert _safe_name("a b") != _safe_name("a_b") and _safe_name("a/b") != _safe_name("a_b")
    folder = tmp_path / "people"
    for i, face in enumerate(canada(data_root, 3, size=240)):
        (folder / f"p{i}").mkdir(parents=True)
        face.save(folder / f"p{i}" / "one.jpg")
    output = tmp_path / "out"
    recipe = recipe_for(folder, output, data_root)
    assert run_prepare(resolve(recipe)).finished
    other = recipe_for(folder, output, data_root)
    other["prepare"]["image_size"] = 112
    with pytest.raises(FacekitError, match=r"other settings .*image_size"):
        run_prepare(resolve(other))
    more = recipe_for(folder, output, data_root)
    more["prepare"]["workers"] = 2  # how the work is done is not what it is: accepted
    assert run_prepare(resolve(more)).processed_identities == 0
    canada(data_root, 4, size=240)[3].save(folder / "p1" / "two.jpg")  # p1 has a new photo
    report = run_prepare(resolve(recipe))
    assert report.processed_identities == 1 and report.finished
    assert read_progress(output)["folder/p1"]["photos"] == 2
    # The same photos through a path spelled another way (a data.root given from another folder): nothing redone
    # (before: every identity, since the records hashed the paths as given).
    (tmp_path / "x").mkdir()
    spelled = recipe_for(tmp_path / "x" / ".." / "people", output, data_root)
    assert run_prepare(resolve(spelled)).processed_identities == 0
    from facekit.data.prepare import _items, inputs_digest, made_from
    from facekit.data.sources import Photo

    photos = [(str(tmp_path / "x" / ".." / "people" / "p0" / "one.jpg"), "folder")]
    assert made_from({"inputs": inputs_digest(photos, absolute=False)}, photos)  # a record made before: still done
    assert _items([Photo("folder/p0", Path(photos[0][0]), "folder")]) == photos
    # Training checks the set holds the recipe's people (before: a set prepared from another folder trained in
    # silence, and the checkpoint recorded this recipe's sources).
    from facekit.train import check_prepared_for_recipe

    check_prepared_for_recipe(resolve(recipe), output)
    fewer = tmp_path / "fewer"
    fewer.mkdir()
    for person in ("p0", "p1"):
        (fewer / person).symlink_to(folder / person)
    # The count is of the recipe's people, and says so (helper-133: "names (4180 people there now)" read as the
    # prepared set's own count).
    with pytest.raises(FacekitError, match=r"other people than the 2 this recipe's data.train names now: run"):
        check_prepared_for_recipe(resolve(recipe_for(fewer, output, data_root)), output)
    # Resuming: the checkpoint names its set; people added to (or gone from) the photos since must not stop it
    # (helper-55: preparing again, as the refusal said, changed the set and --resume refused that too).
    check_prepared_for_recipe(resolve(recipe_for(fewer, output, data_root)), output, resuming=True)
    (tmp_path / "a-file").write_text("not a set")
    with pytest.raises(FacekitError, match=r"is a file, not a prepared set"):  # before: 'other settings (...)'
        check_prepared_for_recipe(resolve(recipe_for(folder, tmp_path / "a-file", data_root)), tmp_path / "a-file")

    # Arrays missing, cut short or altered after prepare finished: training says so in one line, and the next
    # prepare builds them again from its finished work (before: a traceback, and prepare called the set done).
    from facekit.data.dataset import PreparedFaces

    reference = _arrays_digest(output)
    (output / "textures.npy").unlink()
    with pytest.raises(FacekitError, match=r"textures.npy cannot be read"):
        len(PreparedFaces(output).textures)
    assert run_prepare(resolve(recipe)).processed_identities == 0 and _arrays_digest(output) == reference
    with (output / "averages.npy").open("r+b") as handle:
        handle.truncate(1000)
    with pytest.raises(FacekitError, match=r"averages.npy cannot be read"):
        PreparedFaces(output)
    assert run_prepare(resolve(recipe)).processed_identities == 0 and _arrays_digest(output) == reference
    # A set from before summaries recorded the arrays' digest (helper-55: an array missing there was called done).
    summary = json.loads((output / "summary.json").read_text())
    for key in ("arrays_sha256", "arrays_stat"):
        summary.pop(key)
    (output / "summary.json").write_text(json.dumps(summary))
    (output / "textures.npy").unlink()
    assert run_prepare(resolve(recipe)).processed_identities == 0 and _arrays_digest(output) == reference
    # An unchanged set is not read again: its files' sizes and times are what the summary recorded.
    import facekit.data.prepare as prepare_module

    monkeypatch.setattr(prepare_module, "prepared_digest", lambda folder: pytest.fail("read the arrays again"))
    assert run_prepare(resolve(recipe)).processed_identities == 0
    monkeypatch.undo()
    # A copy that changed the arrays' times, not their bytes: checked the long way once, not rebuilt, remembered;
    # the summary keeps its time (it must not look newer than progress another shard wrote meanwhile).
    import os

    later = (output / "averages.npy").stat().st_mtime_ns + 10**9
    os.utime(output / "averages.npy", ns=(later, later))
    summary_time = (output / "summary.json").stat().st_mtime_ns
    assert run_prepare(resolve(recipe)).processed_identities == 0 and _arrays_digest(output) == reference
    assert json.loads((output / "summary.json").read_text())["arrays_stat"]["averages.npy"][1] == later
    assert (output / "summary.json").stat().st_mtime_ns == summary_time
    # work/ deleted by hand: its identities are done again (before: a FileNotFoundError when the set was rebuilt).
    import shutil

    shutil.rmtree(output / "work")
    canada(data_root, 5, size=240)[4].save(folder / "p2" / "two.jpg")  # a change that rebuilds the arrays
    report = run_prepare(resolve(recipe))
    assert report.finished and report.processed_identities == 3


def _arrays_digest(output: Path) -> dict[str, str]:
    import hashlib

    names = ("averages", "landmarks", "textures", "mean_landmarks")
    return {n: hashlib.sha256((output / f"{n}.npy").read_bytes()).hexdigest() for n in names}


def test_kill_9_at_five_points_gives_the_same_arrays(tmp_path: Path, data_root: Path) -> None:
    import yaml

    folder = tmp_path / "people"
    folder.mkdir()
    for i, face in enumerate(canada(data_root, 10, size=240)):
        face.save(folder / f"person{i:02d}.jpg")
    reference = run_prepare(resolve(recipe_for(folder, tmp_path / "reference", data_root)))
    assert reference.finished
    output = tmp_path / "killed"
    recipe = tmp_path / "recipe.yaml"
    recipe.write_text(yaml.safe_dump(recipe_for(folder, output, data_root)))
    exe = Path(sys.executable).with_name("facekit")
    progress = output / "progress.jsonl"

    def finished() -> int:  # identities finished
        return len(progress.read_text().splitlines()) if progress.exists() else 0

    kills = kill_at_points([str(exe), "prepare", str(recipe)], finished, (1, 3, 5, 7, 9), timeout=120)
    assert kills >= 3  # most points were reached while the run was alive
    assert run_prepare(resolve(recipe_for(folder, output, data_root))).finished
    assert _arrays_digest(output) == _arrays_digest(tmp_path / "reference")


def test_ibug_points_files_with_or_without_their_header(tmp_path: Path, data_root: Path) -> None:
    from facekit.data.sources import helen_test, read_ibug_pts

    photos = helen_test(data_root)
    assert len(photos) == 330 and all(points.shape == (68, 2) for _, points in photos[:5])
    path, points = photos[0]
    assert path.suffix == ".jpg" and np.allclose(points + 1, np.loadtxt(path.with_suffix(".pts")))  # 1-based files
    headed = tmp_path / "headed.pts"
    body = "\n".join(f"{x:.3f} {y:.3f}" for x, y in points + 1)
    headed.write_text(f"version: 1\nn_points:  68\n{{\n{body}\n}}\n")
    assert np.allclose(read_ibug_pts(headed), points, atol=1e-3)
    short = tmp_path / "short.pts"
    short.write_text("1 2\n3 4\n")
    with pytest.raises(FacekitError, match="2 points, expected the 68"):
        read_ibug_pts(short)


def test_fewer_people_rebuild_the_arrays(tmp_path: Path, data_root: Path) -> None:
    """Removing people from the data (e.g. ones that must not be trained on) and preparing again gives arrays
    without them, though nothing new had to be processed."""
    folder = tmp_path / "people"
    folder.mkdir()
    for i, face in enumerate(canada(data_root, 3, size=240)):
        face.save(folder / f"person{i:02d}.jpg")
    output = tmp_path / "out"
    first = run_prepare(resolve(recipe_for(folder, output, data_root)))
    assert first.finished and len(json.loads((output / "identities.json").read_text())) == 3
    (folder / "person02.jpg").unlink()
    second = run_prepare(resolve(recipe_for(folder, output, data_root)))
    assert second.finished and second.processed_identities == 0
    kept = json.loads((output / "identities.json").read_text())
    assert len(kept) == 2 and not any("person02" in json.dumps(entry) for entry in kept)
    assert np.load(output / "landmarks.npy").shape[0] == 2


def test_morph_averages_and_the_decoders_fallback_keep_twelve_border_points(monkeypatch: pytest.MonkeyPatch) -> None:
    """The morph and texture warps and the decoder's own warp pin 12 zero-flow points on the border (corners + 2
    inside each edge), as before boundary_points switched to tfa's count (where 2 means 8)."""
    import torch

    import facekit.warp as warp
    from facekit.data.augment import synthetic_identities
    from facekit.data.prepare import morph_average
    from facekit.decoder import PaperDecoder
    from facekit.decoder_params import DecoderParams

    counts: list[int] = []
    real = warp.sparse_image_warp

    def counting(*args: object, boundary_points: int = 3, **kwargs: object) -> object:
        counts.append(len(warp.boundary_control_points(8, 8, boundary_points)))
        return real(*args, boundary_points=boundary_points, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(warp, "sparse_image_warp", counting)
    faces = synthetic_identities(2, size=64, seed=1, jitter_px=4.0)
    morph_average([faces["backgrounds"][i] for i in range(2)], [faces["landmarks"][i] for i in range(2)])
    decoder = PaperDecoder(DecoderParams(image_size=32, grid=4, channels=8, hidden=16))
    points = torch.rand(1, 68, 2) * 30
    decoder.warp(torch.rand(1, 3, 32, 32), points, points)
    assert counts == [12, 12]


def test_keep_all_faces_never_averages_the_faces_of_different_photos(data_root: Path, tmp_path: Path) -> None:
    """Before: with keep_all_faces the key was the face's rank in its photo, so the second-largest faces of every
    photo in a folder were morph-averaged into one 'person' (two strangers here)."""
    from facekit.data import prepare
    from facekit.recipe import PrepareSection

    people = sorted((data_root / "london" / "canada").glob("*.jpg"))[:4]
    folder = tmp_path / "group"
    folder.mkdir()
    for name, (left, right) in {"p1.jpg": people[:2], "p2.jpg": people[2:]}.items():
        canvas = Image.new("RGB", (600, 400))
        canvas.paste(Image.open(left).convert("RGB").resize((300, 400)), (0, 0))
        canvas.paste(Image.open(right).convert("RGB").resize((300, 400)), (300, 0))
        canvas.save(folder / name)
    rules = PrepareSection(
        output=str(tmp_path / "out"), image_size=96, interocular_px=24, keep_all_faces=True, min_colourfulness=0,
        max_yaw_deg=40, max_pitch_deg=40, min_sharpness=0,
    ).model_dump(mode="json")  # fmt: skip
    (tmp_path / "out" / "work").mkdir(parents=True)
    prepare._init_worker(prepare.WorkerConfig("dlib", {}, rules, str(data_root / "sfm"), str(tmp_path / "out/work")))
    record = prepare.process_identity(("folder/group", [(str(folder / n), "folder") for n in ("p1.jpg", "p2.jpg")]))
    kept = [row for row in record["rows"] if row["status"] == "kept"]
    assert len(kept) >= 3  # most of the four faces pass these loose filters
    assert len(record["averages"]) == len(kept) and all(a["kept"] == 1 for a in record["averages"])
    # Faces are counted as faces, photos as photos (helper-69: "9 of 6 photos kept").
    from facekit.pipeline import prepare_note

    summary = prepare.finalize(tmp_path / "out", [record], 96)
    assert (summary["photos"], summary["photos_kept"], summary["faces_kept"]) == (2, 2, len(kept))
    assert f"1 people and 2 of 2 photos kept ({len(kept)} faces)" in prepare_note(summary, "out")


def test_prepare_takes_the_central_face_on_request(tmp_path: Path, data_root: Path) -> None:
    """prepare.face central keeps the face a photo is framed around (LFW's subject) rather than a larger one beside
    it; the default (largest) leaves the settings fingerprint as it was before the choice existed."""
    from facekit.testing import subject_beside_a_larger_face

    folder = tmp_path / "people" / "subject"
    folder.mkdir(parents=True)
    Image.fromarray(subject_beside_a_larger_face()[0]).save(folder / "two.png")
    for face, output in (("largest", tmp_path / "largest"), ("central", tmp_path / "central")):
        recipe = recipe_for(tmp_path / "people", output, data_root)
        recipe["prepare"]["face"] = face
        assert run_prepare(resolve(recipe)).finished
        (row,) = map(json.loads, (output / "manifest.jsonl").read_text().splitlines())
        assert f"2 faces, {face} kept" in row["note"]
        assert row["face"] == (1 if face == "central" else 0)  # the index of the face kept, among those found
        assert (row["box"][0] > 600) == (face == "largest") and (350 < row["box"][0] < 450) == (face == "central")
    assert "face" not in json.loads((tmp_path / "largest" / "fingerprint.json").read_text())["rules"]
    assert json.loads((tmp_path / "central" / "fingerprint.json").read_text())["rules"]["face"] == "central"


def test_a_detector_that_raises_on_one_photo_rejects_that_photo_only(
    tmp_path: Path, data_root: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A detector plugin that raises on one photo (here: on any photo 250 px wide) costs that photo a row, not the
    whole prepare run: its reason is ``detector_error`` with what was raised, the others are kept."""
    import facekit

    real = facekit.load_component

    class RaisesOnOne:
        def __init__(self, inner: object) -> None:
            self.inner, self.card = inner, inner.card  # type: ignore[attr-defined]

        def detect_array(self, image: np.ndarray) -> list:
            if image.shape[1] == 250:
                raise RuntimeError("Unsupported image type, must be 8bit gray or RGB image.")
            return self.inner.detect_array(image)  # type: ignore[attr-defined]

    def load(kind: str, name: str, **params: object) -> object:
        component = real(kind, name, **params)
        return RaisesOnOne(component) if kind == "detector" else component

    monkeypatch.setattr(facekit, "load_component", load)
    folder = tmp_path / "people"
    (folder / "alice").mkdir(parents=True)
    faces = canada(data_root, 2, size=240)
    faces[0].save(folder / "alice" / "a1.jpg")
    faces[1].resize((250, 250 * faces[1].height // faces[1].width)).save(folder / "alice" / "a2.jpg")
    report = run_prepare(resolve(recipe_for(folder, tmp_path / "out", data_root)))
    assert report.finished
    lines = (tmp_path / "out" / "manifest.jsonl").read_text().splitlines()
    rows = {Path(r["path"]).name: r for r in map(json.loads, lines)}
    assert rows["a1.jpg"]["status"] == "kept"
    assert rows["a2.jpg"]["status"] == "rejected" and rows["a2.jpg"]["reason"] == "detector_error"
    assert "RaisesOnOne) raised RuntimeError on it: Unsupported image type" in rows["a2.jpg"]["detail"]
    # The failure may be passing (a device out of memory, a plugin's bug fixed since): the next run retries that
    # identity. Failing the same way again changes nothing: no new record, the arrays (and the training pool keyed
    # on them) are not rebuilt.
    progress, arrays = tmp_path / "out" / "progress.jsonl", tmp_path / "out" / "landmarks.npy"
    lines_before, built = len(progress.read_text().splitlines()), arrays.stat().st_mtime_ns
    same = run_prepare(resolve(recipe_for(folder, tmp_path / "out", data_root)))
    assert same.finished and same.processed_identities == 1
    assert len(progress.read_text().splitlines()) == lines_before and arrays.stat().st_mtime_ns == built
    # A detector that works on it now keeps the photo.
    monkeypatch.setattr(facekit, "load_component", real)
    again = run_prepare(resolve(recipe_for(folder, tmp_path / "out", data_root)))
    assert again.finished and again.processed_identities == 1
    lines = (tmp_path / "out" / "manifest.jsonl").read_text().splitlines()
    assert all(row["status"] == "kept" for row in map(json.loads, lines))
    assert run_prepare(resolve(recipe_for(folder, tmp_path / "out", data_root))).processed_identities == 0


def test_folder_sources_never_merge_people_and_read_nested_photos(tmp_path: Path, data_root: Path) -> None:
    """Before: two folder sources' 'anna' were one person (averaged into one face); photos one folder below a
    person's were skipped without a word and a .DS_Store there was an 'unreadable photo'; an empty folder ended
    prepare in a ValueError traceback."""
    from facekit.data.sources import photos_from_sources
    from facekit.recipe import DataSource

    faces = canada(data_root, 3, size=240)
    first, second = tmp_path / "a", tmp_path / "b"
    (first / "anna" / "2019").mkdir(parents=True)
    (second / "anna").mkdir(parents=True)
    faces[0].save(first / "anna" / "2019" / "one.jpg")
    (first / "anna" / ".DS_Store").write_bytes(b"\0\0")
    (first / "anna" / ".git").mkdir()
    (first / "anna" / ".git" / "x.jpg").write_bytes(b"")
    faces[1].save(second / "anna" / "two.jpg")
    sources = [DataSource(source="folder", path=str(first)), DataSource(source="folder", path=str(second))]
    photos = photos_from_sources(tmp_path, sources)
    assert [(p.identity, p.path.name) for p in photos] == [("folder/anna", "one.jpg"), ("folder2/anna", "two.jpg")]
    empty = tmp_path / "empty"
    empty.mkdir()
    recipe = recipe_for(empty, tmp_path / "out-empty", data_root)
    with pytest.raises(FacekitError, match=rf"data\.train's sources hold no photos \(folder {empty}\)"):
        run_prepare(resolve(recipe))


def test_a_prepare_that_keeps_nobody_leaves_no_arrays_and_says_so(tmp_path: Path, data_root: Path) -> None:
    """Before: it exited 0 with a log line and left the previous recipe's arrays, which training then used."""
    from facekit.pipeline import RunOptions, run_prepare_stage

    folder, _ = alice_and_bob(tmp_path, data_root, 2)
    output = tmp_path / "out"
    run_prepare(resolve(recipe_for(folder, output, data_root)))
    assert (output / "landmarks.npy").is_file()
    blank = tmp_path / "blank"
    (blank / "nobody").mkdir(parents=True)
    Image.fromarray(np.full((240, 240, 3), (90, 140, 200), np.uint8)).save(blank / "nobody" / "wall.jpg")
    with pytest.raises(
        FacekitError, match=r"prepare kept nobody: 0 of 1 people and 0 of 1 photos kept \(dropped: 1 no_face\)"
    ):
        run_prepare_stage(resolve(recipe_for(blank, output, data_root)), RunOptions(progress=False))
    assert not any(
        (output / f"{name}.npy").exists() for name in ("averages", "landmarks", "textures", "mean_landmarks")
    )
    # `facekit prepare` says the same, exits non-zero and leaves its run record unfinished (it was marked finished).
    import yaml

    from tests.helpers import run_cli

    again = tmp_path / "again"
    (tmp_path / "blank.yaml").write_text(yaml.safe_dump(recipe_for(blank, again, data_root)))
    result = run_cli("prepare", str(tmp_path / "blank.yaml"))
    said = result.stderr + result.stdout
    assert result.returncode == 1 and "prepare kept nobody" in said
    assert "kept no identity" not in said  # (before: a warning line before the error, saying it twice: helper-202)
    (record,) = (again / "runs").glob("*-prepare/run.json")
    assert "finished" not in json.loads(record.read_text())


def test_a_prepare_stopped_while_it_writes_the_arrays_is_refused_then_finished(
    tmp_path: Path, data_root: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Before: a prepare killed between two arrays of its final step left the new averages beside the old
    landmarks and textures (the same number of rows), and training read that set as whole."""
    from facekit.data import prepare
    from facekit.data.dataset import prepared_digest

    folder, faces = alice_and_bob(tmp_path, data_root, 3)
    plan = resolve(recipe_for(folder, tmp_path / "out", data_root))
    assert run_prepare(plan).finished
    summary = json.loads((tmp_path / "out" / "summary.json").read_text())
    assert summary["arrays_sha256"] == prepared_digest(tmp_path / "out")
    faces[2].save(folder / "alice" / "a1.jpg")  # alice's photo changes: her row is made again

    real_save = prepare._save_atomic

    def killed_at_the_landmarks(path: Path, array: np.ndarray) -> None:
        if path.name == "landmarks.npy":
            raise KeyboardInterrupt  # as a kill between two renames
        real_save(path, array)

    monkeypatch.setattr(prepare, "_save_atomic", killed_at_the_landmarks)
    with pytest.raises(KeyboardInterrupt):
        run_prepare(plan)
    monkeypatch.setattr(prepare, "_save_atomic", real_save)
    assert not (tmp_path / "out" / "summary.json").exists()
    with pytest.raises(FacekitError, match="half-written"):
        PreparedFaces(tmp_path / "out")
    report = run_prepare(plan)  # nothing to redo per person: the arrays are built again
    assert report.finished and report.processed_identities == 0
    assert len(PreparedFaces(tmp_path / "out")) == 2
    assert not (tmp_path / "out" / prepare.FINALIZING_MARK).exists()
    fresh = run_prepare(resolve(recipe_for(folder, tmp_path / "fresh", data_root)))
    assert fresh.finished and _arrays_digest(tmp_path / "out") == _arrays_digest(tmp_path / "fresh")


def test_files_of_different_runs_are_refused(tmp_path: Path) -> None:
    folder = tmp_path / "set"
    folder.mkdir()
    np.save(folder / "averages.npy", np.zeros((3, 8, 8, 3), np.uint8))
    np.save(folder / "textures.npy", np.zeros((3, 8, 8, 3), np.uint8))
    np.save(folder / "landmarks.npy", np.zeros((2, 68, 2), np.float32))
    with pytest.raises(
        FacekitError, match=r"disagree on how many faces it holds \(averages 3, textures 3, landmarks 2"
    ):
        PreparedFaces(folder)


def test_a_worker_that_dies_or_cannot_start_is_one_line_not_a_hang(tmp_path: Path, data_root: Path) -> None:
    """Before (helper-53): with prepare.workers >= 2, multiprocessing.Pool replaced a worker that died (kill -9, the
    out-of-memory killer) and waited forever for its lost identity; one that could not start (no Surrey Face Model
    under data.root) was replaced again and again at full CPU (11 minutes before it was stopped)."""
    import contextlib

    from facekit.data import prepare
    from facekit.errors import FacekitError
    from facekit.recipe import PrepareSection

    rules = PrepareSection(output=str(tmp_path / "out"), image_size=96, interocular_px=24).model_dump(mode="json")
    tasks = [("folder/a", [(str(tmp_path / "a.jpg"), "folder")])]
    missing = prepare.WorkerConfig("dlib", {}, rules, str(tmp_path / "no-sfm"), str(tmp_path / "work"))
    with contextlib.ExitStack() as stack, pytest.raises(FacekitError, match="Surrey Face Model"):
        list(prepare._in_workers(stack, 2, missing, tasks))  # checked before any worker starts
    # A worker that fails as it starts (here: a detector no plugin registers) ends the run with a line saying so.
    broken = prepare.WorkerConfig("no-such-detector", {}, rules, str(data_root / "sfm"), str(tmp_path / "work"))
    with contextlib.ExitStack() as stack, pytest.raises(FacekitError, match="a prepare worker stopped without"):
        list(prepare._in_workers(stack, 2, broken, tasks))


def test_a_second_ctrl_c_while_the_workers_stop_ends_the_run_not_hangs_it(tmp_path: Path, data_root: Path) -> None:
    """Before (helper-113): `timeout -s INT 40 facekit prepare paper --shard 0/4` said "interrupted"
    and then never ended: timeout sends the command a SIGINT of its own besides its group's, and the second cut short
    the executor's shutdown, which left the workers waiting for work and the process waiting for them. Here the
    run is interrupted as a terminal's Ctrl+C does (the process and its workers), and again as the workers stop."""
    import textwrap

    photo = tmp_path / "face.jpg"
    canada(data_root, 1, size=240)[0].save(photo)
    (tmp_path / "work").mkdir()
    script = tmp_path / "interrupted.py"
    script.write_text(
        textwrap.dedent(
            f"""
            import contextlib, os, signal, sys
            from concurrent.futures import ProcessPoolExecutor
            from facekit.data import prepare
            from facekit.recipe import PrepareSection

            stop = ProcessPoolExecutor.shutdown
            def shutdown(self, *args, **kwargs):
                os.kill(os.getpid(), signal.SIGINT)  # the second Ctrl+C, as the workers are told to stop
                return stop(self, *args, **kwargs)
            ProcessPoolExecutor.shutdown = shutdown

            if __name__ == "__main__":  # the spawned workers import this file
                rules = PrepareSection(output="out", image_size=96, interocular_px=24).model_dump(mode="json")
                sfm, work = {str(data_root / "sfm")!r}, {str(tmp_path / "work")!r}
                config = prepare.WorkerConfig("dlib", {{}}, rules, sfm, work)
                tasks = [(f"folder/p{{i}}", [({str(photo)!r}, "folder")]) for i in range(10_000)]
                try:
                    with contextlib.ExitStack() as stack:
                        for _ in prepare._in_workers(stack, 2, config, tasks):
                            open("interrupting", "w").close()  # (the test's clock starts here)
                            os.killpg(0, signal.SIGINT)  # Ctrl+C in a terminal: this process and its workers
                except KeyboardInterrupt:
                    sys.exit(130)
            """
        )
    )
    log = (tmp_path / "stderr.txt").open("wb")  # (a file, not a pipe: nothing reads it while the test waits below)
    child = subprocess.Popen([sys.executable, str(script)], cwd=tmp_path, start_new_session=True, stderr=log)
    # Starting the workers and their first identity took over 60 s on a loaded CI machine (ci108): the 60 s for the
    # interrupted run to end are counted from the first Ctrl+C, the start gets its own 300.
    started = time.monotonic()
    while not (tmp_path / "interrupting").exists() and child.poll() is None and time.monotonic() - started < 300:
        time.sleep(0.1)
    try:
        child.wait(timeout=60)
    except subprocess.TimeoutExpired:
        os.killpg(child.pid, signal.SIGKILL)
        child.wait()
        pytest.fail("still running 60 s after two Ctrl+C (workers and process waiting for each other)")
    finally:
        log.close()
    said = (tmp_path / "stderr.txt").read_text(errors="replace")[-2000:]
    assert (tmp_path / "interrupting").exists(), said
    assert child.returncode == 130, said


def _session(leader: int) -> list[str]:
    """The command lines of the processes still in the session ``leader`` started (its workers included)."""
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                if os.getsid(int(entry)) == leader:
                    found.append((Path("/proc") / entry / "cmdline").read_bytes().replace(b"\0", b" ").decode())
            except OSError:  # (ended meanwhile)
                continue
    return found


def _prepare_in_workers(
    tmp_path: Path,
    data_root: Path,
    people: int = 60,
    first: int = 1,
    prefix: tuple[str, ...] = (),
    until: Callable[[subprocess.Popen], bool] | None = None,
) -> tuple[subprocess.Popen, Path, Path]:
    """`facekit prepare` with 2 workers in a session of its own, once it wrote its fourth person's record (or once
    ``until(process)`` is true); returns the process, the recipe and the output. The first person (p00, the first a
    worker takes) has ``first`` photos, the others one each. ``prefix``: what runs the command (``nohup``)."""
    import yaml

    folder = tmp_path / "people"
    faces = canada(data_root, 20, size=240)
    for i in range(people):
        (folder / f"p{i:02d}").mkdir(parents=True)
        for j in range(first if i == 0 else 1):
            faces[i % len(faces)].save(folder / f"p{i:02d}" / f"a{j:02d}.jpg")
    output = tmp_path / "out"
    recipe = tmp_path / "recipe.yaml"
    recipe.write_text(yaml.safe_dump(recipe_for(folder, output, data_root, workers=2)))
    log = (tmp_path / "stderr.txt").open("wb")  # (a file: nothing reads a pipe while the test waits)
    process = subprocess.Popen(
        [*prefix, sys.executable, "-m", "facekit.cli", "prepare", str(recipe)],
        stdout=subprocess.DEVNULL,
        stderr=log,
        stdin=subprocess.DEVNULL,
        start_new_session=True,
        preexec_fn=default_stop_signals,  # (nohup, where it is the prefix, then ignores SIGHUP itself)
    )
    log.close()
    progress = output / "progress.jsonl"
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline and process.poll() is None:
        if until(process) if until else progress.exists() and len(progress.read_text().splitlines()) >= 4:
            break
        time.sleep(0.01 if until else 0.05)
    said = (tmp_path / "stderr.txt").read_text(errors="replace")
    assert process.poll() is None, "prepare ended before it was stopped: " + said
    if until:
        return process, recipe, output
    assert len([line for line in _session(process.pid) if "spawn_main" in line]) == 2, _session(process.pid)
    return process, recipe, output


def _ended(process: subprocess.Popen, timeout: float = 60) -> list[str]:
    """Wait for ``process``, then up to ``timeout`` s for its session's other processes; those still there."""
    try:
        process.wait(timeout=timeout)
    finally:
        deadline = time.monotonic() + timeout
        while _session(process.pid) and time.monotonic() < deadline:
            time.sleep(0.1)
        left = _session(process.pid)
        if left:
            os.killpg(process.pid, signal.SIGKILL)  # (the session's processes share its group)
    return left


def _said(tmp_path: Path) -> list[str]:
    """The lines a prepare run by :func:`_prepare_in_workers` wrote on its stderr, less its plain progress lines
    (``prepare: 4/20 (20 %) ...``, written where stderr is no terminal)."""
    said = (tmp_path / "stderr.txt").read_text(errors="replace")
    return [line for line in said.splitlines() if not line.startswith("prepare: ")]


def test_sigterm_ends_a_prepare_and_its_workers(tmp_path: Path, data_root: Path) -> None:
    """Before: SIGTERM to `facekit prepare` (kill, docker stop, a job scheduler: the process alone, not its group)
    ended it on the spot without a word (status -15), and its worker processes waited for work forever, each holding
    its models' memory. Now it stops as on Ctrl+C: the workers stop between two photos and end, one line, status 143,
    and a rerun goes on with the people not yet done."""
    process, recipe, output = _prepare_in_workers(tmp_path, data_root)
    process.send_signal(signal.SIGTERM)
    left = _ended(process)
    said = _said(tmp_path)
    assert (process.returncode, said) == (
        143,
        [
            "error: prepare stopped by SIGTERM: the people it finished are kept, and prepare run again goes on with "
            "the others"
        ],
    )
    assert left == []
    done = len(read_progress(output))
    assert 4 <= done < 60
    again = run_cli("prepare", str(recipe))
    assert again.returncode == 0, again.stderr
    assert len(read_progress(output)) == 60 and (output / "summary.json").is_file()


def test_sigterm_stops_a_prepare_between_two_photos_of_a_person(tmp_path: Path, data_root: Path) -> None:
    """Before: after SIGTERM the workers finished the people they were on, every photo of them, so a person with
    hundreds of photos kept the stop waiting past systemd's 90 s or docker's 10 s (then SIGKILL; here 300 photos
    took 11 s on 2 cores). Now they stop between two photos, as on Ctrl+C (under a second here): the unfinished
    person is left for the rerun."""
    process, recipe, output = _prepare_in_workers(tmp_path, data_root, first=300)
    assert "folder/p00" not in read_progress(output)  # (one worker is on p00's photos, the other did 4 people)
    started = time.monotonic()
    process.send_signal(signal.SIGTERM)
    try:
        process.wait(timeout=5)
    finally:
        left = _ended(process)
    assert time.monotonic() - started < 10  # (its workers: when it ended they were ending)
    said = (tmp_path / "stderr.txt").read_text(errors="replace")
    assert (process.returncode, left) == (143, []), said
    assert "folder/p00" not in read_progress(output)
    again = run_cli("prepare", str(recipe))
    assert again.returncode == 0, again.stderr
    assert len(read_progress(output)) == 60 and read_progress(output)["folder/p00"]["photos"] == 300


def _workers(process: subprocess.Popen) -> list[int]:
    """The process ids of the prepare workers (spawned: interpreters of their own) in the session ``process`` leads."""
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                if (
                    os.getsid(int(entry)) == process.pid
                    and b"spawn_main" in (Path("/proc") / entry / "cmdline").read_bytes()
                ):
                    found.append(int(entry))
            except OSError:  # (ended meanwhile)
                continue
    return found


def _stopped_between_two_photos(
    process: subprocess.Popen, tmp_path: Path, recipe: Path, output: Path, signum: signal.Signals
) -> None:
    """A run of :func:`_prepare_in_workers` (20 people, the first of 40 photos) that ``signum`` reached, workers
    included: it ends within 10 s with one line naming the signal and status 128 + signum, no process left, the first
    person unfinished, no temporary file, and a rerun finishes every person."""
    try:
        process.wait(timeout=10)
    finally:
        left = _ended(process)
    assert (process.returncode, _said(tmp_path), left) == (
        128 + signum,
        [
            f"error: prepare stopped by {signum.name}: the people it finished are kept, and prepare run again goes on "
            "with the others"
        ],
        [],
    )
    assert "folder/p00" not in read_progress(output) and 4 <= len(read_progress(output)) < 20
    assert sorted(p.name for p in output.rglob("*.tmp")) == []
    again = run_cli("prepare", str(recipe))
    assert again.returncode == 0, again.stderr
    assert len(read_progress(output)) == 20 and read_progress(output)["folder/p00"]["photos"] == 40


def test_a_closing_terminal_stops_a_prepare_between_two_photos_as_sigterm_does(tmp_path: Path, data_root: Path) -> None:
    """SIGHUP, which a closing terminal (its window, an SSH session) has sent to the whole process group, workers
    included. Before: the default handler ended the run on the spot without a word (status -1) and each worker
    wherever it was, writing a person's average among others (left as a temporary). Now the run stops as on SIGTERM
    (one line naming SIGHUP, status 129) and the workers, which catch it, between two photos: no temporary left, and
    a rerun goes on with the people not yet done, the unfinished person among them."""
    process, recipe, output = _prepare_in_workers(tmp_path, data_root, people=20, first=40)
    workers = _workers(process)
    assert len(workers) == 2 and all(catches(pid, signal.SIGHUP) for pid in workers), workers
    send_hangups(process)
    _stopped_between_two_photos(process, tmp_path, recipe, output, signal.SIGHUP)


def test_under_nohup_a_closing_terminal_leaves_a_prepare_running(tmp_path: Path, data_root: Path) -> None:
    """`nohup facekit prepare RECIPE &` (SIGHUP ignored, and so in its workers) must outlive its terminal: the
    SIGHUPs its process group gets leave the run and its workers going to the last person, status 0 (neither the
    run nor a worker puts a handler over the ignored SIGHUP)."""
    import shutil

    nohup = shutil.which("nohup")
    if nohup is None:
        pytest.skip("no nohup on this machine")
    process, _, output = _prepare_in_workers(tmp_path, data_root, people=16, prefix=(nohup,))
    workers = _workers(process)
    assert len(workers) == 2 and all(ignores(pid, signal.SIGHUP) for pid in [process.pid, *workers]), workers
    send_hangups(process)
    try:
        process.wait(timeout=240)
    finally:
        left = _ended(process)
    said = (tmp_path / "stderr.txt").read_text(errors="replace")
    assert (process.returncode, left) == (0, []), said
    assert len(read_progress(output)) == 16 and (output / "summary.json").is_file()


def test_the_workers_of_a_killed_prepare_end_by_themselves(tmp_path: Path, data_root: Path) -> None:
    """Before: kill -9, the out-of-memory killer or a second SIGTERM (which ends the process at once) left prepare's
    workers waiting for work forever (their parent gone, nobody to stop them). Now a worker ends when its parent is
    gone."""
    process, _, _ = _prepare_in_workers(tmp_path, data_root)
    process.send_signal(signal.SIGKILL)
    assert _ended(process, timeout=30) == []


def test_a_killed_runs_temporary_files_are_removed_by_the_next(tmp_path: Path) -> None:
    """Before (helper-53): prepare's temporaries have unique names (.averages.npy.wv24xuvs.tmp), so those a kill -9
    left piled up run after run. Only its own names, untouched for an hour (a shard running beside it writes fresh
    ones), are removed; a user's hidden file is not."""
    import os
    import time

    from facekit.data.prepare import remove_stale_temporaries

    (tmp_path / "work").mkdir()
    old = [tmp_path / ".averages.npy.wv24xuvs.tmp", tmp_path / "work" / ".folder_Ana-1a2b.npz.njzvuwos.tmp"]
    fresh = tmp_path / ".summary.json.abcd1234.tmp"  # another shard's, being written
    mine = tmp_path / ".notes.txt.abcdefgh.tmp"  # not a name prepare writes
    for path in (*old, fresh, mine):
        path.write_bytes(b"x")
    hour_ago = time.time() - 3700
    for path in (*old, mine):
        os.utime(path, (hour_ago, hour_ago))
    assert remove_stale_temporaries(tmp_path) == 2
    assert not any(path.exists() for path in old) and fresh.exists() and mine.exists()


def test_a_refused_prepare_leaves_no_folder_and_no_run_record(tmp_path: Path, data_root: Path) -> None:
    """Before (helper-53): `facekit prepare` and the recipe's stage wrote their run record (and work/, a lock) into
    prepare.output before prepare refused an empty photo folder, a 5-point detector or other settings."""
    import yaml

    from tests.helpers import run_cli

    empty = tmp_path / "empty"
    empty.mkdir()
    recipe = recipe_for(empty, tmp_path / "new", data_root)
    (tmp_path / "r.yaml").write_text(yaml.safe_dump(recipe))
    for command in (["prepare", str(tmp_path / "r.yaml")], ["run", str(tmp_path / "r.yaml"), "--stage", "prepare"]):
        result = run_cli(*command)
        assert result.returncode == 1 and "hold no photos" in result.stderr, result.stderr
        assert not (tmp_path / "new").exists()
    # A set made with other settings: refused, and nothing new in it.
    folder, _ = alice_and_bob(tmp_path, data_root, 2)
    assert run_prepare(resolve(recipe_for(folder, tmp_path / "made", data_root))).finished
    before = sorted(p.relative_to(tmp_path) for p in (tmp_path / "made").rglob("*"))
    other = recipe_for(folder, tmp_path / "made", data_root)
    other["prepare"]["image_size"] = 112
    (tmp_path / "other.yaml").write_text(yaml.safe_dump(other))
    result = run_cli("prepare", str(tmp_path / "other.yaml"))
    assert result.returncode == 1 and "other settings" in result.stderr, result.stderr
    assert sorted(p.relative_to(tmp_path) for p in (tmp_path / "made").rglob("*")) == before


def test_a_prepare_refused_as_another_runs_into_its_folder_leaves_no_run_record(
    tmp_path: Path, data_root: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """helper-221: a second `facekit run` (or `facekit prepare`) started while the first prepared into the same
    folder wrote its run record there, then was refused by the first's lock: prepare.output/runs/ kept an unfinished
    record of a run that never ran. The record is made under the lock now."""
    import fcntl
    import os

    import yaml

    from facekit.cli import main

    folder, _ = alice_and_bob(tmp_path, data_root, 2)
    output = tmp_path / "out"
    output.mkdir()
    (tmp_path / "r.yaml").write_text(yaml.safe_dump(recipe_for(folder, output, data_root)))
    other = os.open(output / ".facekit.progress.jsonl.lock", os.O_RDWR | os.O_CREAT)  # as another prepare holds it
    try:
        fcntl.flock(other, fcntl.LOCK_EX | fcntl.LOCK_NB)
        for command in (["prepare", str(tmp_path / "r.yaml")], ["run", str(tmp_path / "r.yaml"), "--stage", "prepare"]):
            assert main(command) == 1
            assert capsys.readouterr().err.startswith("error: another facekit prepare (shard 0/1) is writing into ")
    finally:
        os.close(other)
    assert not (output / "runs").exists()
    assert main(["prepare", str(tmp_path / "r.yaml")]) == 0  # and once it is free, a run and its one record
    assert [json.loads(p.read_text())["finished"] is not None for p in (output / "runs").glob("*/run.json")] == [True]


def test_a_sigterm_to_the_whole_process_group_stops_a_prepare_as_one_to_it_alone(
    tmp_path: Path, data_root: Path
) -> None:
    """SIGTERM to the command's whole process group (systemd's `systemctl stop`, Slurm's scancel, kill -TERM --
    -PGID), its workers included."""
    process, recipe, output = _prepare_in_workers(tmp_path, data_root, people=20, first=40)
    workers = _workers(process)
    for pid in workers:  # (systemd signals the cgroup's processes one by one: the workers may come first)
        os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + 60
    while not all(took(pid, signal.SIGTERM) for pid in workers) and time.monotonic() < deadline:
        time.sleep(0.01)
    os.killpg(process.pid, signal.SIGTERM)
    _stopped_between_two_photos(process, tmp_path, recipe, output, signal.SIGTERM)


def test_a_sigterm_to_the_whole_process_group_as_the_workers_start_stops_a_prepare_as_one_to_it_alone(
    tmp_path: Path, data_root: Path
) -> None:
    """A SIGTERM to the group (systemd signals the cgroup's processes one by one: a worker's may come first) in the
    second a prepare worker takes to start, before its initializer sets its SIGTERM aside for its parent
    (facekit.errors.stop_only_from_parent). Before, the signal's default action ended the worker outright, and the
    run said "a prepare worker stopped without finishing", or its own line with a worker gone under it. Now workers
    are born with SIGTERM blocked: each keeps running, and the run stops as on a SIGTERM to it alone."""
    signalled: list[int] = []

    def starting(process: subprocess.Popen) -> bool:  # (each worker signalled as soon as it runs Python)
        workers = [pid for pid in _workers(process) if pid not in signalled]
        for pid in workers:
            os.kill(pid, signal.SIGTERM)
        signalled.extend(workers)
        return len(signalled) == 2

    process, _, _ = _prepare_in_workers(tmp_path, data_root, people=20, first=40, until=starting)
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and not all(
            took(pid, signal.SIGTERM) or pid not in _workers(process)
            for pid in signalled  # (an ended one: gone)
        ):
            time.sleep(0.01)
        assert sorted(_workers(process)) == sorted(signalled), "a worker ended on a SIGTERM as it started"
        os.killpg(process.pid, signal.SIGTERM)
        process.wait(timeout=60)
    finally:
        left = _ended(process)
    assert (process.returncode, _said(tmp_path), left) == (
        143,
        [
            "error: prepare stopped by SIGTERM: the people it finished are kept, and prepare run again goes on with "
            "the others"
        ],
        [],
    )


def test_a_killed_worker_ends_a_prepare_with_one_line_not_a_hang(tmp_path: Path, data_root: Path) -> None:
    """A worker killed on its own (the out-of-memory killer, kill -9) while the workers leave a SIGTERM from anyone but
    the run to it (a group's): the run says so in one line, status 1, and waits for no worker (the broken pool ends
    the others with a SIGTERM of the run's, which they take): no process left, and a rerun goes on."""
    process, recipe, output = _prepare_in_workers(tmp_path, data_root, people=20, first=40)
    os.kill(_workers(process)[0], signal.SIGKILL)
    try:
        process.wait(timeout=60)
    finally:
        left = _ended(process)
    said = _said(tmp_path)
    assert (process.returncode, left) == (1, []), said
    assert len(said) == 1 and said[0].startswith("error: a prepare worker stopped without finishing"), said
    again = run_cli("prepare", str(recipe))
    assert again.returncode == 0, again.stderr
    assert len(read_progress(output)) == 20


def test_a_killed_worker_keeps_the_people_the_others_finished(
    tmp_path: Path, data_root: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Before: a worker killed (the out-of-memory killer) broke the pool, and the people the other workers had
    finished but not handed over yet were left out of the progress, done again by the rerun (only a stop kept
    them). Now they are given before the error; a person the killed worker was on is not."""
    import concurrent.futures
    import contextlib
    from concurrent.futures import Future
    from concurrent.futures.process import BrokenProcessPool

    from facekit.data import prepare
    from facekit.errors import FacekitError
    from facekit.recipe import PrepareSection

    class Broken:  # a pool whose worker on "killed" died; the others had finished theirs
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            pass

        def submit(self, fn: Any, task: tuple[str, Any]) -> Future:
            future: Future = Future()
            if task[0] == "killed":
                future.set_exception(BrokenProcessPool("a process in the pool was terminated abruptly"))
            else:
                future.set_result({"identity": task[0]})
            return future

        def shutdown(self, *args: Any, **kwargs: Any) -> None:
            pass

    def first_then_the_broken(futures: list[Future]) -> Iterator[Future]:
        yield futures[0]
        yield futures[1]

    monkeypatch.setattr(concurrent.futures, "ProcessPoolExecutor", Broken)
    monkeypatch.setattr(concurrent.futures, "as_completed", first_then_the_broken)
    rules = PrepareSection(output=str(tmp_path / "out"), image_size=96, interocular_px=24).model_dump(mode="json")
    config = prepare.WorkerConfig("dlib", {}, rules, str(data_root / "sfm"), str(tmp_path / "work"))
    given = []
    with contextlib.ExitStack() as stack, pytest.raises(FacekitError, match="a prepare worker stopped without"):
        for record in prepare._in_workers(stack, 2, config, [(name, []) for name in ("a", "killed", "b", "c")]):
            given.append(record["identity"])
    assert given == ["a", "b", "c"]


def test_no_thread_of_a_prepare_worker_takes_a_sigterm_but_its_waiter(
    tmp_path: Path, data_root: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A SIGTERM sent to a worker's process goes to any of its threads that does not block it: only the one that
    waits for it (facekit.errors.stop_only_from_parent) may take it, or a SIGTERM from anyone but the parent ends the
    worker outright. Before: numpy's import in a spawned worker started an OpenBLAS thread that took it (where no
    thread count is set in the environment, as in CI: ci125's group-SIGTERM test failed so)."""
    for name in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "GOTO_NUM_THREADS"):
        monkeypatch.delenv(name, raising=False)
    process, _, _ = _prepare_in_workers(tmp_path, data_root, people=20, first=40)
    try:
        workers = _workers(process)
        assert len(workers) == 2, workers
        for pid in workers:
            takers = [
                task.name
                for task in Path(f"/proc/{pid}/task").iterdir()
                if not int(
                    next(
                        line.split()[1]
                        for line in (task / "status").read_text().splitlines()
                        if line.startswith("SigBlk:")
                    ),
                    16,
                )
                >> (signal.SIGTERM - 1)
                & 1
            ]
            assert len(takers) == 1, (pid, takers)  # the waiter (in sigwaitinfo, SIGTERM is unblocked for it)
    finally:
        process.send_signal(signal.SIGKILL)
        _ended(process)


@pytest.mark.parametrize("where", ["waiting", "writing", "giving"])
def test_a_prepare_stopped_anywhere_keeps_every_person_finished_before_the_stop(
    tmp_path: Path, data_root: Path, monkeypatch: pytest.MonkeyPatch, where: str
) -> None:
    """helper-198: a stop that landed in the loop that writes each finished person's record (not in the wait for the
    next one, where the finished ones were given) dropped the people the workers had finished meanwhile and the
    one in hand: a rerun did them again. Here the workers have finished a, b and c (one more failed, one was
    cancelled) and Ctrl+C comes as the run waits after a, as it writes b's record, or as the pool hands b over (its
    result taken, not yet the caller's: helper-204, b was counted as given and dropped): the progress file holds
    all three, each once, so a rerun has none of them to do."""
    import concurrent.futures
    from concurrent.futures import Future

    from facekit.data import prepare
    from facekit.recipe import PrepareSection

    class Finished:  # a pool whose workers have finished every identity, one failed and one cancelled
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            pass

        def submit(self, fn: Any, task: tuple[str, Any]) -> Future:
            future: Future = StoppedAsHanded() if where == "giving" and task[0] == "b" else Future()
            if task[0] == "cancelled":
                future.cancel()
            elif task[0] == "stopped":
                future.set_exception(KeyboardInterrupt())
            else:
                future.set_result({"identity": task[0], "photos": 1, "inputs": [], "rows": [], "averages": []})
            return future

        def shutdown(self, *args: Any, **kwargs: Any) -> None:
            pass

    class StoppedAsHanded(Future):  # Ctrl+C the first time its result is taken
        stops = 1

        def result(self, timeout: float | None = None) -> Any:
            if self.stops:
                self.stops -= 1
                raise KeyboardInterrupt
            return super().result(timeout)

    def done(futures: list[Future]) -> Iterator[Future]:
        yield futures[0]
        if where == "waiting":
            raise KeyboardInterrupt
        yield from (future for future in futures[1:] if future.done() and not future.cancelled())

    real_digest, digests = prepare.inputs_digest, []

    def ctrl_c_at_the_second(*args: Any, **kwargs: Any) -> str:  # (b's, as its record is written)
        digests.append(args)
        if where == "writing" and len(digests) == 2:
            raise KeyboardInterrupt
        return real_digest(*args, **kwargs)

    monkeypatch.setattr(concurrent.futures, "ProcessPoolExecutor", Finished)
    monkeypatch.setattr(concurrent.futures, "as_completed", done)
    monkeypatch.setattr(prepare, "inputs_digest", ctrl_c_at_the_second)
    output = tmp_path / "out"
    output.mkdir()
    rules = PrepareSection(output=str(output), image_size=96, interocular_px=24).model_dump(mode="json")
    config = prepare.WorkerConfig("dlib", {}, rules, str(data_root / "sfm"), str(tmp_path / "work"))
    names = ["a", "b", "stopped", "cancelled", "c"]
    groups: dict[str, list[Any]] = {name: [] for name in names}
    with pytest.raises(KeyboardInterrupt):
        prepare._process(names, groups, config, output / "progress.jsonl", 2, False, {}, data_root)
    assert sorted(read_progress(output)) == ["a", "b", "c"]
    lines = (output / "progress.jsonl").read_text().splitlines()
    assert sorted(json.loads(line)["identity"] for line in lines) == ["a", "b", "c"]


def test_a_stopped_prepare_writes_the_identities_its_workers_finished_and_says_how_it_goes_on(
    tmp_path: Path, data_root: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """helper-188: an interrupted prepare said "stopped at 0/18" while its workers had finished people: the records
    finished as it stopped were dropped (their averages written, done again by the next run). They are given after
    the stop, then the stop goes on; and Ctrl+C says what prepare does when run again (before: the CLI's line for
    every command)."""
    import concurrent.futures
    import contextlib
    from concurrent.futures import Future
    from types import SimpleNamespace

    from facekit.data import prepare
    from facekit.errors import Interrupted
    from facekit.recipe import PrepareSection

    class Finished:  # a pool whose workers have finished every identity, one failed and one cancelled
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            pass

        def submit(self, fn: Any, task: tuple[str, Any]) -> Future:
            future: Future = Future()
            if task[0] == "cancelled":
                future.cancel()
            elif task[0] == "stopped":
                future.set_exception(KeyboardInterrupt())
            else:
                future.set_result({"identity": task[0]})
            return future

        def shutdown(self, *args: Any, **kwargs: Any) -> None:
            pass

    def first_then_ctrl_c(futures: list[Future]) -> Iterator[Future]:
        yield futures[0]
        raise KeyboardInterrupt

    monkeypatch.setattr(concurrent.futures, "ProcessPoolExecutor", Finished)
    monkeypatch.setattr(concurrent.futures, "as_completed", first_then_ctrl_c)
    rules = PrepareSection(output=str(tmp_path / "out"), image_size=96, interocular_px=24).model_dump(mode="json")
    config = prepare.WorkerConfig("dlib", {}, rules, str(data_root / "sfm"), str(tmp_path / "work"))
    tasks = [(name, []) for name in ("a", "stopped", "b", "cancelled", "c")]
    given = []
    with contextlib.ExitStack() as stack, pytest.raises(KeyboardInterrupt):
        pool = prepare._in_workers(stack, 2, config, tasks)
        for record in pool:
            given.append(record["identity"])
    given += [record["identity"] for record in pool.after_stop()]
    assert given == ["a", "b", "c"]

    def ctrl_c(*args: Any) -> None:
        raise KeyboardInterrupt

    monkeypatch.setattr(prepare, "_run_prepare", ctrl_c)
    plan = SimpleNamespace(recipe=SimpleNamespace(prepare=SimpleNamespace(output=str(tmp_path / "out"))))
    with pytest.raises(Interrupted) as stop:
        prepare.run_prepare(plan, groups={})
    assert str(stop.value) == (
        "prepare stopped by Ctrl+C: the people it finished are kept, and prepare run again goes on with the others"
    )


def test_a_ctrl_c_as_prepare_hands_people_to_its_workers_keeps_those_finished(
    default_handlers: None, tmp_path: Path, data_root: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Before (helper-222): the identities were handed to the pool before prepare's loop and its stop handling, and
    Ctrl+C is not held there: a stop among the submits dropped the people the first workers had finished (their
    averages written, done again by the rerun). The stop now comes once all are handed over, and each finished
    person is kept, as after a stop anywhere else."""
    import concurrent.futures
    from concurrent.futures import Future

    from facekit.data import prepare
    from facekit.data.sources import Photo
    from facekit.recipe import PrepareSection

    class Quick:  # a pool whose workers finish each person as it is handed over; Ctrl+C comes at the third
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            self.handed = 0

        def submit(self, fn: Any, task: tuple[str, Any]) -> Future:
            self.handed += 1
            if self.handed == 3:
                os.kill(os.getpid(), signal.SIGINT)
            future: Future = Future()
            future.set_result({"identity": task[0], "photos": 0, "rows": [], "inputs": str(self.handed)})
            return future

        def shutdown(self, *args: Any, **kwargs: Any) -> None:
            pass

    monkeypatch.setattr(concurrent.futures, "ProcessPoolExecutor", Quick)
    rules = PrepareSection(output=str(tmp_path / "out"), image_size=96, interocular_px=24).model_dump(mode="json")
    config = prepare.WorkerConfig("dlib", {}, rules, str(data_root / "sfm"), str(tmp_path / "work"))
    people = [f"folder/p{i}" for i in range(5)]
    groups = {name: [Photo(name, tmp_path / f"{i}.jpg", "folder")] for i, name in enumerate(people)}
    progress = tmp_path / "progress.jsonl"
    with pytest.raises(KeyboardInterrupt):
        prepare._process(people, groups, config, progress, 2, False, {}, tmp_path)
    kept = [json.loads(line)["identity"] for line in progress.read_text().splitlines()] if progress.exists() else []
    assert sorted(kept) == people
