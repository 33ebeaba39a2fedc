"""The explore app: feature paths (straight and spherical), interpolation endpoints that are the photos' own normalized
faces, the independent judge, the model comparison grid and consistency table, bad photos, and output names."""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from PIL import Image

from facekit.apps.explore import Explorer, feature_path, independent_judge, people_of, slerp
from facekit.errors import FacekitError
from facekit.testing import real_face
from facekit.types import DecoderOutput
from tests.helpers import run_cli
from tests.unit.test_attributes import cast


@pytest.fixture(scope="module")
def explorer(shipped_normalizer: Any) -> Explorer:
    return Explorer(shipped_normalizer, steps=5)


def test_straight_and_spherical_paths() -> None:
    a, b = torch.tensor([3.0, 0.0, 0.0]), torch.tensor([0.0, 1.0, 0.0])
    straight = feature_path(a, b, 5)
    assert torch.equal(straight[0], a) and torch.equal(straight[-1], b)
    assert torch.allclose(straight[2], (a + b) / 2)
    curved = feature_path(a, b, 5, spherical=True)
    assert torch.equal(curved[0], a) and torch.equal(curved[-1], b)
    lengths = curved.norm(dim=1)
    assert torch.allclose(lengths, torch.linspace(3.0, 1.0, 5))  # lengths move linearly
    angles = torch.atan2(curved[:, 1], curved[:, 0])
    assert torch.allclose(angles, torch.linspace(0, np.pi / 2, 5), atol=1e-6)  # the direction at an even pace
    same = slerp(a, 2 * a, torch.tensor([0.5]))
    assert torch.allclose(same[0], 1.5 * a)  # parallel vectors: the straight line
    with pytest.raises(FacekitError, match="at least 2"):
        feature_path(a, b, 1)


def test_the_spherical_path_keeps_the_length_the_decoder_reads(
    explorer: Explorer, shipped_normalizer: Any, data_root: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Before, the slerp went around the origin of the raw features, which share a large common part (dlib's: cosine
    0.96 between these two people): the 'spherical' frames were the straight ones to within 1.5 grey levels, and the
    standardised length the decoder reads dipped midway as on the straight line (20 and 17 at the ends, 12)."""
    from facekit.apps.explore import decoder_statistics, encode
    from facekit.images import load_rgb

    images = data_root / "lfw" / "images"
    photos = [load_rgb(images / n / f"{n}_0001.jpg")[0] for n in ("Allyson_Felix", "Alan_Greenspan")]
    _, features, _ = encode(shipped_normalizer, photos, ["a", "b"])
    centre, scale = decoder_statistics(shipped_normalizer)
    assert centre is not None and decoder_statistics(object()) == (None, None)
    decoded: list[Any] = []
    real = shipped_normalizer.decode_features
    monkeypatch.setattr(shipped_normalizer, "decode_features", lambda path: decoded.append(path) or real(path))
    explorer.interpolate(photos[0], photos[1], steps=5, spherical=True)
    (path,) = decoded
    assert torch.equal(path[0], features[0]) and torch.equal(path[-1], features[1])
    lengths = ((path - centre) / scale).norm(dim=1)
    assert torch.allclose(lengths, torch.linspace(float(lengths[0]), float(lengths[-1]), 5), rtol=1e-4), lengths
    straight = ((feature_path(features[0], features[1], 5) - centre) / scale).norm(dim=1)
    assert straight[2] < 0.8 * min(lengths[0], lengths[-1])  # what the straight path does, and the slerp did


def test_person_names_and_independent_judges() -> None:
    lfw = ["lfw/Colin_Powell/Colin_Powell_0004.jpg", "lfw/Colin_Powell/Colin_Powell_0007.jpg", "lfw/Ann/Ann_0001.jpg"]
    assert people_of(lfw) == ["Colin_Powell", "Colin_Powell", "Ann"]
    # A camera's names in people's folders are the folders' people (before: all 'IMG', one person).
    camera = [
        "photos/alice/IMG_0001.jpg",
        "photos/alice/beach.jpg",
        "photos/bob/IMG_0002.jpg",
        "photos/bob/2019_07.jpg",
    ]
    assert people_of(camera) == ["alice", "alice", "bob", "bob"]
    flat = ["flat/Jean_Chretien_12.png", "flat/Jean_Chretien_3.png", "flat/Ann_0001.jpg"]
    assert people_of(flat) == ["Jean_Chretien", "Jean_Chretien", "Ann"]
    assert people_of(["me/IMG_0001.jpg", "me/beach.jpg"]) == ["me", "me"]  # one folder, not all numbered: its person
    # A camera's names are no person's (before: two people, 'IMG' and 'DSC'; phones' dated names likewise).
    assert people_of(["me/IMG_0001.jpg", "me/DSC_0002.jpg"]) == ["me", "me"]
    assert people_of(["me/PXL_20240101_123456.jpg", "me/PXL_20240102_000001.jpg"]) == ["me", "me"]
    assert people_of(["x/Madonna_0001.jpg", "x/AJ_Cook_0001.jpg"]) == ["Madonna", "AJ_Cook"]  # LFW's names stay
    # Two folders of one name are two people (helper-70: alice/2019 and bob/2019 were one, '2019').
    years = ["p/alice/2019/a.jpg", "p/alice/2019/b.jpg", "p/bob/2019/c.jpg", "p/carol/d.jpg"]
    assert people_of(years) == ["alice/2019", "alice/2019", "bob/2019", "carol"]
    assert people_of(["alice/a.jpg", "alice/alice/b.jpg"]) == ["alice", "alice/alice"]
    assert independent_judge("dlib-resnet") == "sface" and independent_judge("sface") == "dlib-resnet"
    assert independent_judge("arcface") == "sface"


def test_a_persons_folder_of_links_is_that_person(tmp_path: Path) -> None:
    """helper-70: people/anna/ and people/ben/ holding links into one shared folder were one person (the links were
    resolved), and their consistency was measured across the two."""
    shared = tmp_path / "library"
    shared.mkdir()
    paths = []
    for person, photo in (("anna", "IMG_0001.jpg"), ("anna", "IMG_0002.jpg"), ("ben", "IMG_0003.jpg")):
        (shared / photo).write_bytes(b"")
        (tmp_path / "people" / person).mkdir(parents=True, exist_ok=True)
        (tmp_path / "people" / person / photo).symlink_to(shared / photo)
        paths.append(tmp_path / "people" / person / photo)
    assert people_of(paths) == ["anna", "anna", "ben"]


def test_the_judge_takes_the_face_the_normalizer_takes(explorer: Explorer, shipped_normalizer: Any) -> None:
    """A normalizer told to take the central face is judged against the central face of the photos, not the largest."""
    import copy

    from facekit.testing import subject_beside_a_larger_face

    central = copy.copy(shipped_normalizer)
    central.face = "central"
    assert explorer.judge_for(shipped_normalizer).face == "largest"
    judge = explorer.judge_for(central)
    assert judge.face == "central" and explorer.judge_for(central) is judge  # built once per face rule
    canvas, alone = subject_beside_a_larger_face()
    assert np.abs(judge.crop(canvas).astype(int) - judge.crop(alone).astype(int)).mean() < 2


def test_interpolation_endpoints_are_the_photos_own_normalized_faces(
    explorer: Explorer, shipped_normalizer: Any
) -> None:
    a = real_face().image.copy()
    b = cast(a[:, ::-1].copy(), (0.8, 1.0, 1.25), 0.6)  # the mirror image under a cool, bright light
    result = explorer.interpolate(a, b)
    assert len(result.frames) == 5 and result.landmarks.shape == (5, 68, 2)
    own_a, own_b = (shipped_normalizer.normalize(x).decoder_image for x in (a, b))
    assert np.abs(result.frames[0].astype(int) - own_a).max() <= 1
    assert np.abs(result.frames[-1].astype(int) - own_b).max() <= 1
    middle = result.frames[2].astype(int)
    assert np.abs(middle - own_a).mean() > 0.5 and np.abs(middle - own_b).mean() > 0.5
    assert result.judge == "sface" and result.higher_is_same  # the dlib model is judged by SFace
    assert result.to_a[0] > result.threshold and result.to_b[-1] > result.threshold  # same person throughout
    record = result.to_json()
    assert record["t"] == [0.0, 0.25, 0.5, 0.75, 1.0] and len(record["to_b"]) == 5
    assert record["face"] == "largest"  # which face of each photo (the normalizer's rule)


def test_the_judge_scores_the_face_the_normalizer_took_not_its_own_pick(explorer: Explorer, data_root: Path) -> None:
    """Two faces of one size: dlib's detector (the normalizer's) and YuNet (SFace's) box them differently and take
    another one as the largest; the judge scores the face whose box overlaps the normalizer's (it scored the other
    person: B's own normalized face 0.12 "to B")."""
    from PIL import Image

    images = data_root / "lfw" / "images"
    powell = Image.open(images / "Colin_Powell" / "Colin_Powell_0001.jpg")
    canvas = Image.new("RGB", (520, 260), (128, 128, 128))
    canvas.paste(Image.open(images / "George_W_Bush" / "George_W_Bush_0001.jpg"), (0, 0))
    canvas.paste(powell.resize((250, 250)), (265, 0))
    result = explorer.interpolate(np.asarray(powell), np.asarray(canvas), steps=2)
    assert result.to_b[-1] > result.threshold and result.to_a[-1] > result.threshold  # Powell at both ends
    judge = explorer.judge_for(explorer.normalizer)
    assert judge.crop(np.asarray(canvas), near=(0.0, 0.0, 5.0, 5.0)) is None  # no face of the judge's there


def test_the_judge_is_built_with_the_params_given(shipped_normalizer: Any, tmp_path: Path) -> None:
    """``--judge NAME:KEY=VALUE``, as `facekit eval --judge` takes it (before: a name only, so a judge whose weights
    the user supplies, ArcFace or SFace from a file, could not be chosen). The params reach the encoder (a missing
    file is its error) and the record; a bad param, or an encoder without a detector of its own, is said before any
    photo is read."""
    import shutil

    from facekit_opencv.sface import SOURCE

    from facekit.models import resolve_weights

    weights = tmp_path / "my sface.onnx"
    shutil.copyfile(resolve_weights(SOURCE, None, what="SFace encoder"), weights)
    explorer = Explorer(shipped_normalizer, steps=2, judge=f"sface:weights={weights}")
    face = real_face().image
    result = explorer.interpolate(face, face[:, ::-1].copy())
    assert result.judge == "sface" and result.to_json()["judge_params"] == {"weights": str(weights)}
    assert explorer.judge_for(shipped_normalizer).params == {"weights": str(weights)}
    default = Explorer(shipped_normalizer, steps=2).interpolate(face, face[:, ::-1].copy())
    assert np.allclose(result.to_a, default.to_a, atol=1e-5) and "judge_params" not in default.to_json()
    gone = Explorer(shipped_normalizer, steps=2, judge=f"sface:weights={tmp_path / 'gone.onnx'}")
    with pytest.raises(FacekitError, match=r"gone\.onnx"):
        gone.interpolate(face, face)
    with pytest.raises(FacekitError, match=r"judge 'sface:colour=1'.*colour"):
        Explorer(object(), judge="sface:colour=1")
    with pytest.raises(FacekitError, match="'facenet' names no detector of its own"):
        Explorer(object(), judge="facenet:variant=casia-webface-tf")


def test_the_figure_takes_a_file_name_that_is_not_utf8(explorer: Explorer) -> None:
    """Before: matplotlib refused the lone surrogate such a name holds (a TypeError after the models had run)."""
    from facekit.apps.explore import interpolation_figure

    face = real_face().image
    result = explorer.interpolate(face, face[:, ::-1].copy(), steps=2, names=["bad\udcffname.jpg", "cost_$5_$^.jpg"])
    figure = interpolation_figure(result)  # nor is a name with dollar signs read as mathtext
    assert figure.ndim == 3 and figure.dtype == np.uint8


def test_compare_without_photos_or_models_is_one_line(explorer: Explorer) -> None:
    with pytest.raises(FacekitError, match="at least one photo"):  # before: numpy's "need at least one array"
        explorer.compare([])
    with pytest.raises(FacekitError, match="at least one model"):
        explorer.compare(["a.jpg"], models=[])
    result = explorer.compare(np.array(["missing.jpg", "gone.jpg"]))  # an array of paths: no truth value
    assert [status for status, _ in result.status[result.labels[0]]] == ["unreadable", "unreadable"]
    # A photo in another form is one line (before: Path()'s TypeError "expected str, bytes or os.PathLike object").
    for other in (real_face().image, Image.fromarray(real_face().image), b"bytes", None):
        with pytest.raises(FacekitError, match=rf"takes photos' paths .*got a {type(other).__name__} at index 1"):
            explorer.compare(["a.jpg", other])


def test_a_photo_without_a_face_is_named_in_the_error(explorer: Explorer) -> None:
    wall = np.full((120, 120, 3), 128, np.uint8)
    with pytest.raises(FacekitError, match=r"wall\.png: no_face"):
        explorer.interpolate(real_face().image, wall, names=["face.jpg", "wall.png"])
    # A photo object that cannot be read is named too (before: "the PIL image given cannot be read", not which).
    encoded = io.BytesIO()
    Image.fromarray(real_face().image).save(encoded, "PNG")
    with Image.open(io.BytesIO(encoded.getvalue())) as closed:
        pass
    for unreadable, why in ((closed, "the PIL image given cannot be read"), (b"no image", "not an image file")):
        with pytest.raises(FacekitError, match=rf"both photos: B: unreadable: .*{why}"):
            explorer.interpolate(real_face().image, unreadable)


def test_interpolating_between_two_people_moves_from_one_to_the_other(explorer: Explorer, data_root: Path) -> None:
    images = data_root / "lfw" / "images"
    # DevTest people (never trained on).
    a, b = images / "Amelie_Mauresmo" / "Amelie_Mauresmo_0002.jpg", images / "Alvaro_Uribe" / "Alvaro_Uribe_0003.jpg"
    result = explorer.interpolate(a, b, steps=4, spherical=True)
    assert result.spherical and not np.isnan(result.to_a).any()
    assert result.to_a[0] > result.to_b[0] and result.to_b[-1] > result.to_a[-1]
    assert result.to_a[0] > result.to_a[-1] and result.to_b[-1] > result.to_b[0]


def test_a_photo_the_judge_cannot_find_is_reported_apart_from_the_frames(explorer: Explorer, data_root: Path) -> None:
    """dlib's detector finds this face, the SFace judge's YuNet does not: every score against photo A is NaN, which
    is not "frames without a face"."""
    person = data_root / "lfw" / "images" / "Donald_Rumsfeld"
    result = explorer.interpolate(person / "Donald_Rumsfeld_0076.jpg", person / "Donald_Rumsfeld_0001.jpg", steps=4)
    record = result.to_json()
    assert np.isnan(result.to_a).all() and not np.isnan(result.to_b).any()
    assert record["photos_without_face_for_judge"] == ["A"] and record["frames_without_face_for_judge"] == 0


def test_compare_grid_status_and_consistency(explorer: Explorer, shipped_normalizer: Any, tmp_path: Path) -> None:
    face = real_face().image
    Image.fromarray(face).save(tmp_path / "alice_0001.jpg", quality=95)
    Image.fromarray(cast(face, (1.15, 1.0, 0.8), -0.5)).save(tmp_path / "alice_0002.jpg", quality=95)
    Image.new("RGB", (120, 120), (90, 120, 160)).save(tmp_path / "wall_0001.png")
    (tmp_path / "bob_0001.jpg").write_bytes(b"broken")
    photos = [tmp_path / n for n in ("alice_0001.jpg", "alice_0002.jpg", "wall_0001.png", "bob_0001.jpg")]
    result = explorer.compare(photos, [("first", shipped_normalizer), ("second", shipped_normalizer)])
    assert result.labels == ["first", "second"] and result.persons == ["alice", "alice", "wall", "bob"]
    assert [s for s, _ in result.status["first"]] == ["ok", "ok", "no_face", "unreadable"]
    assert result.cells["first"][2] is None and result.aligned[3] is None and result.aligned[0].shape == (112, 112, 3)
    assert result.to_json()["face"] == {"first": "largest", "second": "largest"}
    grid = result.grid(cell=64)
    assert grid.shape == (28 + 4 * 64, 3 * 64, 3)
    assert np.abs(grid[28 : 28 + 64, 64:128].astype(int) - grid[28 : 28 + 64, 128:192]).max() == 0  # same model
    # The empty photo cells say why as the models' cells do (the wall: no face; bob's file: unreadable; before, both
    # 'no face'), above the row's label.
    wall, bob = (grid[28 + r * 64 : 28 + r * 64 + 50, :64] for r in (2, 3))
    assert np.abs(wall.astype(int) - bob).max() > 0
    # Rows are labelled by file: the same result with other file names draws other labels (before: the person's).
    from dataclasses import replace

    renamed = replace(result, photos=[str(tmp_path / f"x{i}.jpg") for i in range(4)]).grid(cell=64)
    assert np.abs(renamed.astype(int) - grid).max() > 0
    assert np.abs(renamed[:, 64:].astype(int) - grid[:, 64:]).max() == 0  # only the labels in the photo column
    alice = [row for row in result.consistency if row["person"] == "alice"]
    assert len(alice) == 2 and alice[0]["judged"] == 2 and alice[0]["judge"] == "sface"
    # The distances are the judge's (SFace through its own pipeline: 1 - cosine) between alice's two outputs and her
    # two photos; both stay within SFace's threshold (the same person). Which one is smaller is the model's property,
    # measured over many people by benchmarks/explore.py, not something one photo shows.
    from facekit.images import load_rgb

    judge = explorer.judge_for(shipped_normalizer)

    def distance(images: list[Any]) -> float:
        a, b = judge.embed(images)
        return 1.0 - float(a @ b / np.linalg.norm(a) / np.linalg.norm(b))

    outputs = distance([result.cells["first"][0], result.cells["first"][1]])
    inputs = distance([load_rgb(photos[0])[0], load_rgb(photos[1])[0]])
    assert alice[0]["outputs_mean_distance"] == pytest.approx(outputs, abs=1e-4)
    assert alice[0]["inputs_mean_distance"] == pytest.approx(inputs, abs=1e-4)
    assert max(outputs, inputs) < 1.0 - judge.card.threshold
    assert [row["people"] for row in result.summary] == [1, 1]
    with pytest.raises(FacekitError, match="same label"):
        explorer.compare(photos[:1], [("x", shipped_normalizer), ("x", shipped_normalizer)])


def test_the_summary_counts_photos_and_judged_photos_apart() -> None:
    from types import SimpleNamespace

    from facekit.apps.explore import consistency_rows

    card = SimpleNamespace(distance="euclidean", threshold=0.6, embedding_size=2)
    judge = SimpleNamespace(name="stub", encoder=SimpleNamespace(card=card), higher_is_same=False, card=card)
    persons = ["a", "a", "a", "b", "b", "c"]  # c has one photo: not scored
    inputs = np.arange(12, dtype=float).reshape(6, 2)
    outputs = inputs + 0.5
    outputs[2] = np.nan  # a's third output: no face for the judge
    rows, summary = consistency_rows("m", judge, persons, inputs, outputs)
    assert [(r["person"], r["photos"], r["judged"]) for r in rows] == [("a", 3, 2), ("b", 2, 2)]
    assert (summary["people"], summary["photos"], summary["judged"]) == (2, 5, 4)
    # A person whose photos the judge missed counts among the photos, not the judged (before: "0 of 0" when nobody
    # could be scored).
    _, summary = consistency_rows(
        "m", judge, [*persons, "d", "d"], np.vstack([inputs, inputs[:2]]), np.vstack([outputs, np.full((2, 2), np.nan)])
    )
    assert (summary["people"], summary["photos"], summary["judged"]) == (2, 7, 4)
    _, summary = consistency_rows("m", judge, ["d", "d"], inputs[:2], np.full((2, 2), np.nan))
    assert (summary["people"], summary["photos"], summary["judged"]) == (0, 2, 0)


def test_consistency_is_the_mean_pairwise_distance_per_person_then_over_people() -> None:
    """By hand: a Euclidean judge's distances as they are (a cosine judge's as 1 - cosine), every pair of a person's
    judged photos once, and the model's figure the mean over people, not over photos. (Before, turning a Euclidean
    judge's distances into 1 - distance, as the SFace model's dlib judge gets, or weighting people by their photos
    passed every test.)"""
    from types import SimpleNamespace

    from facekit.apps.explore import consistency_rows

    def judge(distance: str) -> Any:
        card = SimpleNamespace(distance=distance, threshold=0.5, embedding_size=2)
        return SimpleNamespace(name="stub", encoder=SimpleNamespace(card=card), higher_is_same=distance == "cosine")

    persons = ["a", "a", "a", "b", "b"]
    outputs = np.array([[0.0, 0.0], [3.0, 0.0], [0.0, 4.0], [5.0, 5.0], [5.0, 7.0]])  # a: 3, 4, 5; b: 2
    inputs = np.array([[0.0, 0.0], [1.0, 0.0], [0.0, 1.0], [5.0, 5.0], [5.0, 6.0]])  # a: 1, 1, sqrt 2; b: 1
    rows, summary = consistency_rows("m", judge("euclidean"), persons, inputs, outputs)
    assert [(r["person"], r["outputs_mean_distance"]) for r in rows] == [("a", 4.0), ("b", 2.0)]
    assert rows[0]["inputs_mean_distance"] == pytest.approx((2 + np.sqrt(2)) / 3, abs=1e-4)
    assert summary["outputs_mean_distance"] == 3.0  # per person (4 and 2), not per photo (3.2)
    assert summary["inputs_mean_distance"] == pytest.approx((1 + (2 + np.sqrt(2)) / 3) / 2, abs=1e-4)
    assert summary["metric"] == "euclidean distance"
    unit = np.array([[1.0, 0.0], [0.0, 2.0], [3.0, 0.0], [1.0, 1.0], [2.0, 2.0]])
    rows, _ = consistency_rows("m", judge("cosine"), persons, unit, unit)
    assert [r["outputs_mean_distance"] for r in rows] == [pytest.approx(2 / 3, abs=1e-4), 0.0]
    assert rows[0]["metric"] == "1 - cosine similarity"


def test_apply_lays_out_a_path_and_measures_its_steps() -> None:
    face = real_face()
    image = torch.from_numpy(face.image.copy()).permute(2, 0, 1).float()[None] / 255
    points = torch.from_numpy(face.ibug68).float()[None]
    moved = torch.cat([points, points, points + torch.tensor([3.0, 4.0])])
    out = Explorer().apply(DecoderOutput(image.expand(3, -1, -1, -1), moved))
    assert out["strip"].shape == (200, 600, 3) and out["strip"].dtype == np.uint8
    assert np.allclose(out["landmark_steps"], [0.0, 5.0])


def test_a_judge_that_cannot_load_is_refused_before_any_photo_is_encoded(
    shipped_normalizer: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Before: the judge was built last, so one whose weights are missing (or an unknown --model, in the command)
    was refused only after both photos were encoded and decoded. The command loads the model and the judge before
    it says "encoding, decoding and judging"."""
    import facekit.apps.explore

    encoded: list[Any] = []

    def spy(*args: Any) -> Any:
        encoded.append(args)
        raise AssertionError("a photo was encoded before the judge was built")

    monkeypatch.setattr(facekit.apps.explore, "encode", spy)
    face = real_face().image
    gone = Explorer(shipped_normalizer, steps=2, judge=f"sface:weights={tmp_path / 'gone.onnx'}")
    with pytest.raises(FacekitError, match=r"gone\.onnx"):
        gone.interpolate(face, face)
    assert encoded == []
    a = tmp_path / "a.jpg"
    Image.fromarray(face).save(a, quality=95)
    for option, said in (
        (f"--judge=sface:weights={tmp_path / 'gone.onnx'}", "gone.onnx"),
        ("--model=nope", "no shipped model named 'nope'"),
    ):
        result = run_cli("explore", "interpolate", str(a), str(a), "-o", str(tmp_path / "out"), option)
        assert result.returncode == 1 and said in result.stderr, result.stderr
        assert "encoding, decoding and judging" not in result.stderr, result.stderr


def test_interpolate_table_tells_every_frame_apart() -> None:
    """Before: t was printed to 2 decimals whatever ``-n`` (at most 256): ``-n 256`` showed 0.00 twice and 0.01
    three times. Two decimals stay where they tell the frames apart (``-n 8``, ``-n 101``)."""
    from types import SimpleNamespace

    from rich.console import Console

    from facekit.cli import interpolation_table

    for steps, places in ((8, 2), (101, 2), (102, 3), (256, 3)):
        t = np.linspace(0.0, 1.0, steps)
        result = SimpleNamespace(judge="sface", metric="1 - cosine similarity", t=t, to_a=1 - t, to_b=t)
        table = interpolation_table(result)
        shown = list(table.columns[1].cells)
        assert len(set(shown)) == steps and shown[0] == "0." + "0" * places and shown[-1] == "1." + "0" * places
        Console(file=io.StringIO()).print(table)  # (a table rich can lay out)
    # Before: "facekit explore interpolate -> OUT (judge sface: 1 - cosine similarity)" wrapped onto three lines
    # in the width of the four narrow columns; the detail is in the caption, the title one line.
    drawn = io.StringIO()
    Console(file=drawn, width=100).print(interpolation_table(result))
    lines = drawn.getvalue().splitlines()
    assert lines[0].strip() == "facekit explore interpolate" and "┏" in lines[1]
    assert lines[-1].strip() == "to A, to B: 1 - cosine similarity, judge sface"


def test_cli_interpolate_and_compare(tmp_path: Path) -> None:
    face = real_face().image
    a, b = tmp_path / "a.jpg", tmp_path / "b.jpg"
    Image.fromarray(face).save(a, quality=95)
    Image.fromarray(cast(face, (1.1, 1.0, 0.85), 0.3)).save(b, quality=95)
    out = tmp_path / "out"
    result = run_cli("explore", "interpolate", str(a), str(b), "-o", str(out), "-n", "3")
    assert result.returncode == 0, result.stdout + result.stderr
    assert sorted(p.name for p in out.iterdir() if p.name != ".facekit.lock") == sorted(
        ["interpolate.png", "interpolate_strip.png", "interpolate.gif", "interpolate.json"]
    )
    record = json.loads((out / "interpolate.json").read_text())
    assert record["judge"] == "sface" and len(record["to_a"]) == 3 and record["photos"][1]["status"] == "ok"
    with Image.open(out / "interpolate.gif") as gif:
        assert gif.n_frames == 4 and gif.size == (224, 224)  # there and back, twice the size
    # Photo A named like an output, in the output folder: refused, and left as it was.
    clash = out / "interpolate.png"
    kept = clash.read_bytes()
    refused = run_cli("explore", "interpolate", str(clash), str(b), "-o", str(out))
    assert refused.returncode == 1 and "one of the inputs" in refused.stderr and clash.read_bytes() == kept
    # A second run into the same folder leaves the first one's files alone unless --overwrite.
    again = run_cli("explore", "interpolate", str(a), str(b), "-o", str(out), "-n", "3")
    assert again.returncode == 1 and "--overwrite replaces it" in again.stderr and clash.read_bytes() == kept
    replaced = run_cli(
        "explore", "interpolate", str(a), str(b), "-o", str(out), "-n", "3", "--overwrite", "--face", "central"
    )
    assert replaced.returncode == 0, replaced.stderr
    assert json.loads((out / "interpolate.json").read_text())["face"] == "central"  # --face reached the app
    # A folder is named as one (before: 'no such photo'), a truncated photo's status said once.
    folder = run_cli("explore", "interpolate", str(tmp_path), str(b), "-o", str(tmp_path / "f"))
    assert folder.returncode == 1 and "is a folder: interpolate goes between two photos" in folder.stderr
    (tmp_path / "cut.jpg").write_bytes(a.read_bytes()[:2000])
    cut = run_cli("explore", "interpolate", str(tmp_path / "cut.jpg"), str(b), "-o", str(tmp_path / "c"))
    assert cut.returncode == 1 and "cut.jpg: unreadable (" in cut.stderr and "unreadable unreadable" not in cut.stderr

    Image.new("RGB", (100, 100), (200, 30, 30)).save(tmp_path / "wall.png")
    shipped = Path(__file__).resolve().parents[2] / "facekit" / "assets" / "default-model.safetensors"
    (tmp_path / "empty.jpg").write_bytes(b"")
    compared = run_cli(
        "explore", "compare", str(a), str(b), str(tmp_path / "wall.png"), str(tmp_path / "empty.jpg"),
        "-o", str(tmp_path / "cmp"), "--model", "dlib", "--checkpoint", str(shipped), "--face", "central",
    )  # fmt: skip
    assert compared.returncode == 3, compared.stdout + compared.stderr  # the wall has no face
    assert "unreadable (" in compared.stdout and "unreadable unreadable" not in compared.stdout  # said once
    with (tmp_path / "cmp" / "compare.csv").open() as handle:
        rows = list(csv.DictReader(handle))
    assert {r["model"] for r in rows} == {"dlib", "default-model"}
    assert {r["person"] for r in rows} == {tmp_path.name, "(all people)"}  # no _NNNN: the folder names the person
    with Image.open(tmp_path / "cmp" / "compare.png") as grid:
        assert grid.size == (3 * 128, 28 + 4 * 128)
    compare_record = json.loads((tmp_path / "cmp" / "compare.json").read_text())
    status = compare_record["photos"]
    assert [p["dlib"]["status"] for p in status] == ["ok", "ok", "no_face", "unreadable"]
    assert compare_record["face"] == {"dlib": "central", "default-model": "central"}  # --face reached every model
    # One run at a time into a folder (before: two runs both computed and the last silently won, or the second
    # failed only after all its work); the lock is taken before any model loads.
    from facekit.locks import exclusive

    with exclusive(tmp_path / "busy", "test"):
        for command in (["compare", str(a)], ["interpolate", str(a), str(b)]):
            busy = run_cli("explore", *command, "-o", str(tmp_path / "busy"))
            assert busy.returncode == 1 and "is writing into" in busy.stderr, busy.stderr


def test_compare_defaults_to_every_shipped_model_and_warns_when_names_are_mixed(tmp_path: Path) -> None:
    """helper-58's audit: `explore compare` said "the photos through every model" and compared one (dlib); a stray
    file among LFW-named photos silently made several people one, and the grid said 'no face' for an unreadable
    photo beside the models' 'unreadable'."""
    from facekit.apps.explore import people_rule_warning, photo_cell_reason

    folder = tmp_path / "mixed"
    folder.mkdir()
    face = real_face().image
    for name in ("Anna_Smith_0001", "Anna_Smith_0002", "Bo_Li_0001", "holiday"):
        Image.fromarray(face).save(folder / f"{name}.jpg", quality=95)
    result = run_cli("explore", "compare", str(folder), "-o", str(tmp_path / "cmp"))
    assert result.returncode == 0, result.stdout + result.stderr
    said = " ".join(result.stdout.split())
    assert "warning: 3 photos are named Name_NNNN with 2 different names, but holiday.jpg not" in said
    record = json.loads((tmp_path / "cmp" / "compare.json").read_text())
    assert set(record["face"]) == {"dlib", "sface"}  # both shipped models, a column each
    names = [folder / f"{n}.jpg" for n in ("Anna_Smith_0001", "Anna_Smith_0002", "Bo_Li_0001")]
    assert people_rule_warning(names) is None  # LFW names only: each person by name
    assert people_rule_warning([tmp_path / "IMG_0001.jpg", tmp_path / "beach.jpg"]) is None  # one camera's folder
    camera = [tmp_path / n for n in ("IMG_0001.jpg", "DSC_0002.jpg", "beach.jpg")]  # before: warned of 2 names
    assert people_rule_warning(camera) is None
    assert photo_cell_reason(["unreadable", "unreadable"]) == "unreadable"
    assert photo_cell_reason(["no_face", "ok"]) == "no_face"
    from facekit.apps.explore import status_and_reason

    assert status_and_reason("unreadable", "too large (64 MP > 50 MP)") == "unreadable: too large (64 MP > 50 MP)"
    assert status_and_reason("unreadable", "unreadable (OSError)") == "unreadable (OSError)"  # the status once


def test_a_judge_that_loads_the_models_encoder_weights_is_refused() -> None:
    """helper-70: a model trained on a plugin encoder wrapping SFace (CONTRIBUTING's example) was judged by SFace,
    the same network, as if independent."""
    from types import SimpleNamespace

    from facekit.apps.explore import check_independent
    from facekit.registry import get_registry

    wrapped = SimpleNamespace(encoder=SimpleNamespace(card=get_registry("encoder").get("sface").card))
    normalizer = SimpleNamespace(meta={"encoder": "sface-flip"}, **vars(wrapped))
    with pytest.raises(FacekitError, match=r"judge 'sface' loads the weights .*'sface-flip'.*no independent judge"):
        check_independent("sface", normalizer)
    check_independent("dlib-resnet", normalizer)  # another network: independent
    with pytest.raises(FacekitError, match="no independent judge"):
        Explorer().judge_for(normalizer)  # the default judge for an encoder it does not know: SFace, refused
    with pytest.raises(FacekitError, match="unknown encoder 'nope'"):  # at once (helper-72: after the photos)
        Explorer(judge="nope")


def test_explore_uses_the_normalizers_parts_on_its_turn(
    shipped_normalizer: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """helper-72: explore's encode called the Normalizer's detector and encoder outside the lock by which threads
    sharing it take turns (a detector that is not thread-safe, the reason for the lock, could be called at once)."""
    import facekit.normalize as normalize
    from facekit.apps.explore import encode

    real = normalize.detect_one
    held: list[bool] = []

    def watched(*args: Any, **kwargs: Any) -> Any:
        held.append(normalize.turn_of(shipped_normalizer)._is_owned())  # type: ignore[attr-defined]
        return real(*args, **kwargs)

    monkeypatch.setattr(normalize, "detect_one", watched)
    outcomes, features, _ = encode(shipped_normalizer, [real_face().image], ["face"])
    assert held == [True] and features is not None and outcomes[0].status == "ok"


def test_threads_sharing_an_explorer_take_turns_at_its_judge(
    explorer: Explorer, shipped_normalizer: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """helper-116: the judge's detector (SFace's YuNet sets its input size, then detects) and encoder ran for threads
    sharing one Explorer at once, outside any lock; four threads interpolating twelve LFW photos with it got other
    scores than one thread for four of them. A judge still pickles after it took a turn (its lock stays behind)."""
    import pickle

    import facekit.normalize as normalize

    judge = explorer.judge_for(shipped_normalizer)
    held: list[bool] = []
    real_detect, real_embed = normalize.detect_photo, judge.encoder.embed

    def detect(*args: Any, **kwargs: Any) -> Any:
        held.append(normalize.turn_of(judge)._is_owned())  # type: ignore[attr-defined]
        return real_detect(*args, **kwargs)

    def embed(batch: Any) -> Any:
        held.append(normalize.turn_of(judge)._is_owned())  # type: ignore[attr-defined]
        return real_embed(batch)

    monkeypatch.setattr(normalize, "detect_photo", detect)
    monkeypatch.setattr(judge.encoder, "embed", embed)
    embedded = judge.embed([real_face().image])
    assert held == [True, True] and np.isfinite(embedded).all()
    monkeypatch.undo()
    copy = pickle.loads(pickle.dumps(judge))
    assert np.array_equal(copy.embed([real_face().image]), embedded)


def test_a_comparison_rows_label_keeps_the_end_of_the_file_name() -> None:
    """helper-79: the label was cut to its first characters, so every row of one person read Amelie_Mauresmo_0."""
    from facekit.apps.explore import cell_label

    assert cell_label("Amelie_Mauresmo_0004", 17) == "..e_Mauresmo_0004"
    assert len(cell_label("Amelie_Mauresmo_0004", 17)) == 17
    assert cell_label("Ben_Affleck_0002", 17) == "Ben_Affleck_0002"
    assert cell_label("abcdef", 2) == "ef"


def _two_frame_interpolation(face: np.ndarray) -> Any:
    """An interpolation result of two frames cut from ``face`` between photos a.jpg and b.jpg, as written files need
    one (no model run)."""
    from facekit.apps.explore import Interpolation

    frames = [face[:112, :112].copy(), face[:112, :112].copy()]
    return Interpolation(
        t=np.array([0.0, 1.0]), frames=frames, landmarks=np.zeros((2, 68, 2)), spherical=False, model="m",
        judge="sface", metric="cosine similarity", threshold=0.363, higher_is_same=True,
        to_a=np.array([1.0, 0.5]), to_b=np.array([0.5, 1.0]),
        photos=[{"input": "a.jpg", "status": "ok", "reason": ""}, {"input": "b.jpg", "status": "ok", "reason": ""}],
    )  # fmt: skip


def test_a_folder_scan_skips_explores_figures_left_among_the_photos(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """helper-171: `explore interpolate a.jpg b.jpg -o photos/path` (photos given by name: allowed) left its figure,
    strip and animation in the folder, and the next `explore compare photos/` read all three as photos of a person
    "path" (faces found in them, their consistency measured); compare's grid moved into a folder was read too. They
    are marked as facekit's figures, which a folder scan skips whatever their names, with a warning."""
    from facekit.apps.explore import Comparison, write_comparison, write_interpolation
    from facekit.batch import scan_inputs

    face = real_face().image
    photos = tmp_path / "photos"
    photos.mkdir()
    Image.fromarray(face).save(photos / "a.jpg", quality=95)
    result = _two_frame_interpolation(face)
    frames = result.frames
    write_interpolation(result, photos / "path")
    comparison = Comparison(
        ["a.jpg"], ["a"], ["dlib"], [frames[0]], {"dlib": [frames[0]]}, {"dlib": [("ok", "")]}, [], []
    )
    write_comparison(comparison, tmp_path / "cmp")
    (tmp_path / "cmp" / "compare.png").rename(photos / "my grid.png")  # a figure moved, and renamed
    with caplog.at_level("WARNING", logger="facekit.batch"):
        found = scan_inputs([str(photos)], tmp_path / "out")
    assert [relative for _, relative in found] == ["a.jpg"]
    said = " ".join(record.getMessage() for record in caplog.records)
    assert "4 files in the folders given are facekit's figures of faces, not photos" in said


def test_a_stopped_explore_leaves_none_of_its_new_files_and_says_so(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """helper-210: interpolate writes its 4 files and compare its 3 one after another; a stop (or an error) between
    two left the first ones, which the rerun without --overwrite refused as already there, and the CLI's general line
    said only "what was written stays". The files it made are removed and the line says so; with --overwrite, a file
    of the earlier run it replaced stays replaced, and the line names it."""
    import errno
    import signal

    import facekit
    from facekit import batch
    from facekit.apps.explore import COMPARE_FILES, INTERPOLATE_FILES, Comparison, Interpolation
    from facekit.cli import INTERRUPTED, main
    from facekit.errors import Terminated

    face = real_face().image
    a, b = tmp_path / "a.jpg", tmp_path / "b.jpg"
    Image.fromarray(face).save(a, quality=95)
    Image.fromarray(face).save(b, quality=95)
    interpolation = _two_frame_interpolation(face)
    frames = interpolation.frames
    comparison = Comparison(
        ["a.jpg"], ["a"], ["dlib"], [frames[0]], {"dlib": [frames[0]]}, {"dlib": [("ok", "")]}, [], []
    )

    class Explorer:  # the models' work done: what is left is the writing
        normalizer = None

        def judge_for(self, normalizer: Any) -> None:
            pass

        def interpolate(self, *args: Any, **kwargs: Any) -> Interpolation:
            return interpolation

        def load_normalizer(self, path: Path) -> None:
            pass

        def compare(self, *args: Any, **kwargs: Any) -> Comparison:
            return comparison

    monkeypatch.setattr(facekit, "load_component", lambda *args, **kwargs: Explorer())
    real_write = batch.write_atomic
    stop: BaseException | None = None
    at = ""

    def write_atomic(path: Path, data: bytes, out: Path) -> None:
        if path.name == at and stop is not None:
            raise stop
        real_write(path, data, out)

    monkeypatch.setattr(batch, "write_atomic", write_atomic)
    out = tmp_path / "out"
    interpolate = ["explore", "interpolate", str(a), str(b), "-o", str(out)]

    def said() -> str:  # (the status lines before it on stderr too)
        return capsys.readouterr().err.splitlines()[-1]

    def files() -> list[str]:
        return sorted(p.name for p in out.iterdir() if not p.name.startswith(".")) if out.exists() else []

    stop, at = KeyboardInterrupt(), "interpolate_strip.png"  # the figure written, the strip not
    assert main(interpolate) == INTERRUPTED
    assert said() == (
        f"error: explore interpolate stopped by Ctrl+C: none of its files was written into {out}; run it again"
    )
    assert files() == []
    stop = None
    assert main(interpolate) == 0, capsys.readouterr().err  # before: interpolate.png already there, exit 1
    assert files() == sorted(INTERPOLATE_FILES)
    capsys.readouterr()
    kept = {name: (out / name).stat().st_ino for name in INTERPOLATE_FILES}
    stop, at = Terminated("stopped by {signal}", signal.SIGTERM), "interpolate.gif"
    assert main([*interpolate, "--overwrite"]) == 143
    assert said() == (
        f"error: explore interpolate stopped by SIGTERM: interpolate.png, interpolate_strip.png in {out} replaced, "
        "the other files are still the earlier run's; run it again with --overwrite to write them all"
    )
    assert files() == sorted(INTERPOLATE_FILES)  # (the earlier run's files are never removed)
    assert [(out / name).stat().st_ino == kept[name] for name in INTERPOLATE_FILES] == [False, False, True, True]

    compare = ["explore", "compare", str(a), "--model", "dlib", "-o", str(tmp_path / "cmp")]
    out = tmp_path / "cmp"
    stop, at = OSError(errno.ENOSPC, "No space left on device"), "compare.json"  # an error removes them too
    assert main(compare) == 1
    assert said().startswith("error: No space left on device")
    assert files() == []
    stop, at = Terminated("stopped by {signal}", signal.SIGHUP), "compare.csv"
    assert main(compare) == 129
    assert said() == f"error: explore compare stopped by SIGHUP: none of its files was written into {out}; run it again"
    assert files() == []
    stop = None
    assert main(compare) == 0, capsys.readouterr().err
    assert files() == sorted(COMPARE_FILES)


def test_a_folder_given_names_its_people_as_training_does() -> None:
    """helper-185: `explore compare photos/` took each photo's own folder for its person: anna's photos in
    anna/2019/holiday/ were another person, 'holiday', and the loose photos beside the people's folders were all one,
    'photos', their consistency measured across people. Given where each was found, a sub-folder is a person at any
    depth and a loose photo beside them is one of its own, as a training recipe's folder source reads them."""
    paths = ["/p/anna/1.jpg", "/p/anna/2019/holiday/2.jpg", "/p/IMG_0001.jpg", "/p/IMG_0002.jpg", "/p/ben/3.jpg"]
    names = ["anna/1.jpg", "anna/2019/holiday/2.jpg", "IMG_0001.jpg", "IMG_0002.jpg", "ben/3.jpg"]
    assert people_of(paths, names) == ["anna", "anna", "IMG_0001.jpg", "IMG_0002.jpg", "ben"]
    assert people_of(paths) == ["anna", "holiday", "p", "p", "ben"]  # a list alone: each photo's folder, as before
    # Two folders given, each with an anna: two people (as two training sources); a folder of one person's photos
    # and files given keep their folder's name; LFW's names in a flat folder stay the people.
    two = ["/a/anna/1.jpg", "/b/anna/2.jpg", "/me/x.jpg", "/me/y.jpg", "/lone/z.jpg"]
    assert people_of(two, ["anna/1.jpg", "anna/2.jpg", "x.jpg", "y.jpg", "z.jpg"]) == [
        "a/anna", "b/anna", "me", "me", "lone"
    ]  # fmt: skip
    flat = ["/lfw/Ann_Li_0001.jpg", "/lfw/Ann_Li_0002.jpg"]
    assert people_of(flat, ["Ann_Li_0001.jpg", "Ann_Li_0002.jpg"]) == ["Ann_Li", "Ann_Li"]


def test_compare_says_who_has_too_few_photos_for_consistency(tmp_path: Path) -> None:
    """helper-171: consistency is between a person's photos, and `explore compare` of one photo per person printed
    "0 people, 0 of 0, -" without a word; a person with a single photo beside others vanished from the figures. It
    names them and says what it needs."""
    face = real_face().image
    for name in ("alice/1.jpg", "alice/2019/holiday/2.jpg", "bob/1.jpg"):
        (tmp_path / "in" / name).parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(face).save(tmp_path / "in" / name, quality=95)
    result = run_cli("explore", "compare", str(tmp_path / "in"), "-o", str(tmp_path / "cmp"), "--model", "dlib")
    assert result.returncode == 0, result.stdout + result.stderr
    said = " ".join(result.stdout.split())
    # helper-185: alice's holiday photo is alice's, as in training (before: a person 'holiday', and alice unscored)
    assert "consistency needs 2+ photos of a person; not scored, with one photo: bob (1 of 2 people)" in said
    from facekit.apps.explore import unscored_people

    assert unscored_people(["alice", "alice"]) is None
    alone = unscored_people(["a", "b", "c", "d"])
    assert alone is not None and "a, b, c and 1 more (all 4 people)" in alone


def test_the_interpolation_figure_stays_a_readable_width_for_many_frames() -> None:
    """helper-171: `explore interpolate -n 256` drew every frame 1.4 inches wide above the plot, a figure 35,840 px
    wide that no viewer shows whole. It shows 12 frames, evenly spaced (A and B among them), over every frame's
    scores; the strip and GIF keep every frame."""
    from facekit.apps.explore import Interpolation, interpolation_figure

    face = real_face().image[:112, :112]
    count = 40
    t = np.linspace(0.0, 1.0, count)
    result = Interpolation(
        t=t, frames=[face.copy() for _ in range(count)], landmarks=np.zeros((count, 68, 2)), spherical=False,
        model="m", judge="sface", metric="cosine similarity", threshold=0.363, higher_is_same=True, to_a=1 - t,
        to_b=t, photos=[{"input": name, "status": "ok", "reason": ""} for name in ("a.jpg", "b.jpg")],
    )  # fmt: skip
    figure = interpolation_figure(result)
    assert figure.shape[1] <= 1680 < 140 * count  # 12 frames of 1.4 inches at 100 dpi (before: every frame)
    assert result.strip().shape[1] == count * 112 + (count - 1) * 2  # the strip keeps them all
