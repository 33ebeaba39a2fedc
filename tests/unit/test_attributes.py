"""The attributes app: ITA from CIELAB, the skin region, face-shape ratios, stability under a colour cast, and the
command's tables, status rows and output names."""

from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from PIL import Image

from facekit.apps.adjust import to_linear, to_srgb
from facekit.apps.attributes import (
    RATIOS,
    VALUE_COLUMNS,
    FaceAttributes,
    earlier_rows,
    individual_typology_angle,
    ita_category,
    overlay,
    shape_ratios,
    skin_mask,
    skin_polygons,
    skin_tone,
    srgb_to_lab,
)
from facekit.testing import real_face
from facekit.types import DecoderOutput
from tests.helpers import run_cli


@pytest.fixture(scope="module")
def normalized(shipped_normalizer: Any) -> Any:
    """The shipped model's normalized face of the test photo (112 px, 68 predicted landmarks)."""
    return shipped_normalizer.normalize(real_face().image)


def cast(photo: np.ndarray, gains: tuple[float, float, float], ev: float) -> np.ndarray:
    """``photo`` under another light: per-channel gains and an exposure change in linear light."""
    linear = to_linear(photo / 255.0) * np.array(gains) * 2.0**ev
    return np.asarray(to_srgb(linear) * 255 + 0.5).clip(0, 255).astype(np.uint8)


def test_ita_of_known_lab_colours() -> None:
    assert individual_typology_angle(75.0, 25.0) == pytest.approx(45.0)
    assert individual_typology_angle(50.0, 12.0) == pytest.approx(0.0)
    assert individual_typology_angle(30.0, 20.0) == pytest.approx(-45.0)
    assert individual_typology_angle(50.0 + 20.0 * np.sqrt(3.0), 20.0) == pytest.approx(60.0)
    values = individual_typology_angle(np.array([75.0, 30.0]), np.array([25.0, 20.0]))
    assert np.allclose(values, [45.0, -45.0])
    assert [ita_category(v) for v in (60, 45, 30, 20, 0, -40)] == [
        "very light",
        "light",
        "intermediate",
        "tan",
        "brown",
        "dark",
    ]
    # The bounds themselves (Chardon 1991; Del Bino 2013): each category lies strictly above its lower bound.
    bounds = [(55.0, "very light", "light"), (41.0, "light", "intermediate"), (28.0, "intermediate", "tan")]
    bounds += [(10.0, "tan", "brown"), (-30.0, "brown", "dark")]
    for bound, above, at in bounds:
        assert (ita_category(bound + 0.01), ita_category(bound), ita_category(bound - 0.01)) == (above, at, at), bound
    # Not a skin colour: grey (b* ~ 0) or blue (b* < 0) has no ITA, rather than +-90 degrees or more and a category.
    assert np.isnan(individual_typology_angle(80.0, 0.003)) and np.isnan(individual_typology_angle(60.0, -54.5))
    assert ita_category(float("nan")) == "undefined"


def test_srgb_to_lab_matches_reference_values() -> None:
    """D65 CIELAB of sRGB white, pure red and mid grey (published reference values)."""
    lab = srgb_to_lab(np.array([[255, 255, 255], [255, 0, 0], [119, 119, 119]], np.uint8))
    assert lab[0] == pytest.approx([100.0, 0.0, 0.0], abs=0.01)
    assert lab[1] == pytest.approx([53.24, 80.09, 67.20], abs=0.05)
    assert lab[2] == pytest.approx([50.03, 0.0, 0.0], abs=0.05)
    assert np.allclose(srgb_to_lab(np.array([1.0, 0.0, 0.0])), lab[1], atol=1e-6)  # floats in [0, 1] too


def test_a_known_colour_painted_on_the_skin_region_is_what_is_measured(normalized: Any) -> None:
    """Skin colour inside the region, saturated blue everywhere else: the measure sees only the skin colour."""
    skin = np.array([224, 172, 140], np.uint8)
    mask = skin_mask(normalized.landmarks, 112)
    image = np.zeros((112, 112, 3), np.uint8)
    image[...] = (0, 0, 255)
    image[mask] = skin
    tone = skin_tone(image, normalized.landmarks)
    expected = srgb_to_lab(skin[None])[0]
    assert tone.pixels == mask.sum() and tone.lightness == pytest.approx(expected[0], abs=1e-6)
    assert tone.ita == pytest.approx(float(individual_typology_angle(expected[0], expected[2])), abs=1e-6)
    assert 30 < tone.ita < 60
    # The mirror image's region is the mirror of the region: nothing is measured off the skin patches.
    flipped = skin_mask(normalized.landmarks * [-1, 1] + [111, 0], 112)
    mirrored = skin_mask(normalized.landmarks, 112)[:, ::-1]
    assert mirrored.sum() > 200 and (flipped & mirrored).sum() / (flipped | mirrored).sum() > 0.85  # intersection/union


def test_the_skin_region_keeps_clear_of_eyes_brows_nostrils_and_lips(normalized: Any) -> None:
    points = normalized.landmarks
    mask = skin_mask(points, 112)
    features = list(range(17, 27)) + list(range(31, 36)) + list(range(36, 48)) + list(range(48, 68))
    for index in features:
        x, y = np.round(points[index]).astype(int)
        assert not mask[max(0, y - 1) : y + 2, max(0, x - 1) : x + 2].any(), f"landmark {index} is in the region"
    polygons = skin_polygons(points)
    assert set(polygons) == {"left_cheek", "right_cheek", "forehead"}
    brow_top = points[17:27, 1].min()
    assert polygons["forehead"][:, 1].max() < brow_top  # above the brows
    for name in ("left_cheek", "right_cheek"):
        part = skin_mask(points, 112) & _polygon_mask(polygons[name])
        assert part.sum() > 80, name  # enough pixels at 112 px
        assert points[[40, 41, 46, 47], 1].max() < polygons[name][:, 1].min()  # below the lower eyelids
        assert polygons[name][:, 1].max() < points[57, 1]  # above the lower lip


@pytest.mark.parametrize("degrees", [0.0, 30.0, -120.0])
def test_the_skin_region_is_the_documented_geometry_in_any_position(degrees: float) -> None:
    """The region attributes.json describes, by hand from the landmarks and in any roll, scale and position: each
    cheek the polygon lower eyelid - nose wing - mouth corner - jaw (3, 2, 1 / 13, 14, 15) shrunk 40 % towards its
    centre; the forehead a 0.8 x 0.3 interocular-distance rectangle along the eye line, centred between the eyes,
    0.15 d above the highest brow point. (Before, a changed shrink, forehead size or an upright-only forehead passed
    every test.)"""
    angle = np.radians(degrees)
    rotation = np.array([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]])
    points = 1.7 * real_face().ibug68 @ rotation.T + [40.0, -25.0]
    polygons = skin_polygons(points)
    for name, ring in (("left_cheek", [(40, 41), 31, 48, 3, 2, 1]), ("right_cheek", [(46, 47), 35, 54, 13, 14, 15])):
        outline = np.stack([points[list(i)].mean(axis=0) if isinstance(i, tuple) else points[i] for i in ring])
        centre = outline.mean(axis=0)
        np.testing.assert_allclose(polygons[name], centre + 0.6 * (outline - centre), atol=1e-9)
    left, right = points[36:42].mean(axis=0), points[42:48].mean(axis=0)
    (ax, ay), (bx, by) = right - left, points[48:68].mean(axis=0) - (left + right) / 2
    if ax * by - ay * bx < 0:  # the mouth on the other side of the eye line: image-left as seen upright
        left, right = right, left
    d = np.linalg.norm(right - left)
    across = (right - left) / d
    up = np.array([-across[1], across[0]])  # at right angles to the eye line, towards the brows in any roll
    up = up if up @ (rotation @ [0.0, -1.0]) > 0 else -up
    low_left, low_right, high_right, high_left = polygons["forehead"]
    assert np.linalg.norm(low_right - low_left) == pytest.approx(0.8 * d)
    assert np.linalg.norm(high_left - low_left) == pytest.approx(0.3 * d)
    assert (low_right - low_left) @ across == pytest.approx(0.8 * d)  # along the eye line
    assert (high_left - low_left) @ up == pytest.approx(0.3 * d)  # towards the brows, at right angles to it
    np.testing.assert_allclose(high_right - low_right, high_left - low_left, atol=1e-9)  # a rectangle
    middle = (left + right) / 2
    np.testing.assert_allclose((low_left + low_right) / 2 - middle, ((low_left - middle) @ up) * up, atol=1e-9)
    assert (low_left - middle) @ up == pytest.approx(((points[17:27] - middle) @ up).max() + 0.15 * d)


def _polygon_mask(polygon: np.ndarray) -> np.ndarray:
    import cv2

    mask = np.zeros((112, 112), np.uint8)
    cv2.fillPoly(mask, [np.round(polygon * 16).astype(np.int32)], 1, shift=4)
    return mask.astype(bool)


def test_the_overlay_shows_the_face_and_region_that_were_measured(normalized: Any) -> None:
    """Measures read the decoder's own face on its own landmarks (photo detail and shape off); the picture of the
    skin region must show that face and region, not the output with the photo's detail and shape."""
    from dataclasses import replace

    assert normalized.decoded is not None  # the shipped setting: the output carries the photo's detail and shape
    photo = real_face().image
    shown = overlay(normalized, photo)
    other = replace(normalized, image=np.zeros_like(normalized.image), landmarks=normalized.landmarks + 6.0)
    assert np.array_equal(overlay(other, photo), shown)


def test_shape_ratios_of_a_known_face_in_any_position() -> None:
    points = np.zeros((68, 2))
    points[0], points[16] = (0, 50), (100, 50)  # face width 100
    points[27], points[8] = (50, 40), (50, 160)  # face height 120
    points[36:42], points[42:48] = (30, 50), (70, 50)  # eye centres 40 apart
    points[31], points[35], points[48], points[54] = (40, 100), (60, 100), (35, 130), (65, 130)
    points[4], points[12], points[33] = (10, 120), (90, 120), (50, 100)
    expected = {
        "face_width_height": 100 / 120,
        "interocular_face_width": 0.4,
        "nose_mouth_width": 20 / 30,
        "jaw_face_width": 0.8,
        "lower_face_height": 0.5,
    }
    assert set(RATIOS) == set(expected)
    angle = np.radians(30)
    rotation = np.array([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]])
    for moved in (points, 2.5 * points @ rotation.T + [13, -7]):
        assert shape_ratios(moved) == pytest.approx(expected)


def test_the_normalized_face_keeps_its_tone_under_a_colour_cast(shipped_normalizer: Any) -> None:
    """The point of measuring on the normalized face: a warm cast, a cool cast and -1 EV move the photo's ITA by
    many degrees and the normalized face's by about one."""
    measurer = FaceAttributes(shipped_normalizer)
    photo = real_face().image.copy()
    shots = [photo, cast(photo, (1.15, 1.0, 0.8), -0.7), cast(photo, (0.85, 1.0, 1.2), 0.5), cast(photo, (1, 1, 1), -1)]
    outcomes = measurer.measure_faces(shots, [f"shot{i}" for i in range(len(shots))])
    normalized = np.array([o.extras["attributes"]["ita_degrees"] for o in outcomes])
    raw = np.array([o.extras["photo_attributes"]["ita_degrees"] for o in outcomes])
    assert np.ptp(raw) > 30, raw
    assert np.ptp(normalized) < 5 and np.ptp(normalized) < np.ptp(raw) / 6, (normalized, raw)
    shapes = np.array([o.extras["attributes"]["face_width_height"] for o in outcomes])
    assert np.ptp(shapes) < 0.02
    assert all(o.reason == "" for o in outcomes)  # a cast photo still has colour


def test_a_grey_photo_has_no_skin_tone(shipped_normalizer: Any) -> None:
    """Before: the decoder paints a grey photo's face in colour, and that guess was reported as the person's skin tone
    (ITA ~59, 'very light'). Now the tone is undefined and says why; the shape is still measured."""
    from facekit.apps.attributes import NO_COLOUR

    grey = np.repeat(real_face().image.mean(axis=2, keepdims=True).round().astype(np.uint8), 3, axis=2)
    outcome = FaceAttributes(shipped_normalizer).measure_faces([grey], ["grey"])[0]
    values = outcome.extras["attributes"]
    assert np.isnan(values["ita_degrees"]) and values["ita_category"] == "undefined" and outcome.reason == NO_COLOUR
    assert outcome.extras["photo_attributes"]["colourfulness"] < 1 and 0.8 < values["face_width_height"] < 1.3


def test_a_dark_colour_photo_has_colour(shipped_normalizer: Any) -> None:
    """Before: the colourfulness that tells a grey photo is in sRGB levels and falls with the exposure, so the test
    face six stops under (its skin at (25, 19, 15), clearly warm) scored 4.3 and was called a photo without colour.
    Now a dark region's colour is judged by its channels' differences; the same dark photo in grey still has none."""
    from facekit.apps.attributes import MIN_PHOTO_COLOURFULNESS, NO_COLOUR

    dark = cast(real_face().image, (1, 1, 1), -6)
    grey = np.repeat(dark.mean(axis=2, keepdims=True).round().astype(np.uint8), 3, axis=2)
    coloured, grey_outcome = FaceAttributes(shipped_normalizer).measure_faces([dark, grey], ["dark", "grey"])
    assert coloured.extras["photo_attributes"]["colourfulness"] < MIN_PHOTO_COLOURFULNESS  # the case the rule missed
    values = coloured.extras["attributes"]
    assert coloured.reason == "" and np.isfinite(values["ita_degrees"]) and values["ita_category"] != "undefined"
    assert grey_outcome.reason == NO_COLOUR and np.isnan(grey_outcome.extras["attributes"]["ita_degrees"])


def test_apply_measures_each_face_of_a_decoder_output(normalized: Any) -> None:
    image = torch.from_numpy(normalized.image).permute(2, 0, 1).float()[None] / 255
    darker = image * 0.6
    points = torch.from_numpy(normalized.landmarks).float()[None]
    out = FaceAttributes().apply(DecoderOutput(torch.cat([image, darker]), torch.cat([points, points])))
    assert out["ita_degrees"].shape == (2,) and out["lab"].shape == (2, 3)
    assert out["ita_degrees"][1] < out["ita_degrees"][0] - 10  # darker skin: a smaller angle
    assert out["face_width_height"][0] == pytest.approx(out["face_width_height"][1])


def test_cli_tables_status_rows_and_outputs_that_never_replace_inputs(tmp_path: Path) -> None:
    photos = tmp_path / "in"
    photos.mkdir()
    Image.fromarray(real_face().image).save(photos / "face.jpg", quality=95)
    Image.new("RGB", (120, 120), (90, 120, 160)).save(photos / "wall.png")
    (photos / "broken.jpg").write_bytes(b"not a photo")
    # A photo named like face.jpg's overlay, given beside it and written into the same folder: it must survive.
    Image.new("RGB", (64, 64), (10, 200, 10)).save(photos / "face_attributes.png")
    before = (photos / "face_attributes.png").read_bytes()
    inputs = [str(photos / n) for n in ("face.jpg", "wall.png", "broken.jpg", "face_attributes.png")]
    result = run_cli("attributes", *inputs, "-o", str(photos))
    assert result.returncode == 3, result.stdout + result.stderr
    assert (photos / "face_attributes.png").read_bytes() == before
    with (photos / "attributes.csv").open() as handle:
        rows = list(csv.DictReader(handle))
    assert list(rows[0]) == ["input", "status", "reason", *VALUE_COLUMNS]
    status = {Path(r["input"]).name: r for r in rows}
    assert status["wall.png"]["status"] == "no_face" and status["broken.jpg"]["status"] == "unreadable"
    assert status["broken.jpg"]["reason"].startswith("unreadable")
    face = status["face.jpg"]
    assert face["status"] == "ok" and 30 < float(face["ita_degrees"]) < 80 and float(face["face_width_height"]) > 0.8
    assert Path(face["output"]).name == "face_jpg_attributes.png" and Path(face["output"]).is_file()
    record = json.loads((photos / "attributes.json").read_text())
    assert [p["status"] for p in record["photos"]] == [r["status"] for r in rows] and "skin_region" in record
    # A table name that is an input is refused before anything is written.
    table = tmp_path / "out" / "attributes.csv"
    table.parent.mkdir()
    Image.fromarray(real_face().image).save(table, format="JPEG")
    kept = table.read_bytes()
    refused = run_cli("attributes", str(table), "-o", str(table.parent))
    assert refused.returncode == 1 and "one of the inputs" in refused.stderr and table.read_bytes() == kept
    # A rerun with the same model resumes: the unchanged photo keeps its row and picture, the earlier tables' other
    # photos stay in them; a changed photo is measured again. The rerun names the photos by other paths (relative,
    # from another folder): the same files (before: rows 'exists', and the photo listed twice in the tables).
    picture = photos / "face_jpg_attributes.png"
    made = picture.stat().st_mtime_ns
    again = run_cli("attributes", "in/face.jpg", "in/./wall.png", "-o", "in", cwd=tmp_path)
    assert again.returncode == 3, again.stdout + again.stderr  # wall.png: still no face
    assert "exists" not in again.stdout, again.stdout
    resumed = json.loads((photos / "attributes.json").read_text())
    assert len(resumed["photos"]) == 4, [p["input"] for p in resumed["photos"]]
    by_name = {Path(p["input"]).name: p for p in resumed["photos"]}
    assert set(by_name) == {"face.jpg", "wall.png", "broken.jpg", "face_attributes.png"}
    assert by_name["face.jpg"]["reason"].startswith("measured by an earlier run") and picture.stat().st_mtime_ns == made
    assert by_name["face.jpg"]["ita_degrees"] == pytest.approx(float(face["ita_degrees"]), abs=1e-4)
    assert by_name["face.jpg"]["input_sha256"] and resumed["model_sha256"] == record["model_sha256"]
    Image.fromarray(real_face().image[:, ::-1]).save(photos / "face.jpg", quality=95)  # the photo changed
    picture.unlink()
    changed = run_cli("attributes", *inputs, "-o", str(photos))  # the same inputs: the same picture names
    assert changed.returncode == 3, changed.stdout + changed.stderr
    redone = {Path(p["input"]).name: p for p in json.loads((photos / "attributes.json").read_text())["photos"]}
    assert redone["face.jpg"]["status"] == "ok" and redone["face.jpg"]["reason"] == "" and picture.is_file()
    assert redone["face.jpg"]["input_sha256"] != by_name["face.jpg"]["input_sha256"]
    # Tables made with another model (or not facekit's) are left alone unless --overwrite, before any model loads.
    tables = (photos / "attributes.csv").read_bytes()
    other = run_cli("attributes", str(photos / "face.jpg"), "-o", str(photos), "--model", "sface")
    assert other.returncode == 1 and "attributes.csv" in other.stderr and "--overwrite" in other.stderr
    assert (photos / "attributes.csv").read_bytes() == tables
    # So are tables that took another face of each photo (--face); the default's record says None (the largest), and
    # tables made before --face (no key) are the largest face's.
    assert json.loads((photos / "attributes.json").read_text())["face"] is None
    old = json.loads((photos / "attributes.json").read_text())
    del old["face"]
    (photos / "attributes.json").write_text(json.dumps(old))
    assert earlier_rows(photos, old["model_sha256"]) is not None
    assert earlier_rows(photos, old["model_sha256"], "central") is None
    central = run_cli("attributes", str(photos / "face.jpg"), "-o", str(photos), "--face", "central")
    assert central.returncode == 1 and "attributes.csv" in central.stderr and "--overwrite" in central.stderr
    assert (photos / "attributes.csv").read_bytes() == tables


def test_a_face_that_cannot_be_measured_is_its_own_status_row(normalized: Any, tmp_path: Path) -> None:
    """A face whose skin region falls outside its image (landmarks far off) gets ``not_measured``; the photo after it in
    the same batch is still measured."""
    from dataclasses import replace

    from facekit.apps.attributes import attributes_files
    from facekit.batch import plan_folder
    from facekit.normalize import Outcome

    class Stub:
        def __init__(self) -> None:
            self.meta = {"source": "stub"}

        def normalize_many(self, images: list[Any], names: list[str]) -> list[Outcome]:
            off = replace(normalized, landmarks=normalized.landmarks + 500.0, decoded_landmarks=None, decoded=None)
            return [Outcome(names[0], "ok", off), Outcome(names[1], "ok", normalized)]

    for name in ("first.jpg", "second.jpg"):
        Image.fromarray(real_face().image).save(tmp_path / name)
    plan = plan_folder([str(tmp_path / "first.jpg"), str(tmp_path / "second.jpg")], tmp_path / "out", batch_size=2)
    rows = attributes_files(plan, FaceAttributes(Stub()))
    assert [r.status for r in rows] == ["not_measured", "ok"] and "outside the image" in rows[0].reason
    # A picture already there (a user's file, or an earlier run's) is left alone unless overwrite: that photo's row.
    mine = tmp_path / "out" / "first_attributes.png"
    mine.write_bytes(b"mine")
    (tmp_path / "out" / "attributes.csv").unlink()
    (tmp_path / "out" / "attributes.json").unlink()
    again = attributes_files(plan, FaceAttributes(Stub()))
    assert [r.status for r in again] == ["exists", "exists"] and mine.read_bytes() == b"mine"
    expected = skin_tone(normalized.decoder_image, normalized.decoder_landmarks).ita
    assert rows[1].values["ita_degrees"] == pytest.approx(expected)


def test_a_file_name_that_is_not_utf8_is_written_escaped(tmp_path: Path) -> None:
    """Before: a Latin-1 name ('caf\\xe9.jpg', as old disks hold them) ended `facekit attributes` in a
    UnicodeEncodeError with no tables, leaving overlays a rerun then called 'exists'."""
    import os

    from facekit.apps.attributes import AttributesRow, write_tables

    name = os.fsdecode(b"caf\xe9.jpg")
    write_tables([AttributesRow(name, "no_face", "no face found")], tmp_path)
    (row,) = list(csv.DictReader((tmp_path / "attributes.csv").open(encoding="utf-8")))
    assert row["input"] == "caf\\udce9.jpg" and row["status"] == "no_face"
    (photo,) = json.loads((tmp_path / "attributes.json").read_text())["photos"]
    assert os.fsencode(photo["input"]) == b"caf\xe9.jpg"  # JSON keeps the name exactly


def test_names_that_begin_like_a_formula_stay_text_in_the_table(tmp_path: Path) -> None:
    """A photo named ``=HYPERLINK(...)`` or ``@SUM(...)`` is a formula to a spreadsheet that opens attributes.csv (CSV
    injection); its cell gets a leading ``'``, negative numbers stay numbers, and the JSON keeps the name exactly."""
    from facekit.apps.attributes import AttributesRow, write_tables

    names = ['=HYPERLINK("http://x","y").jpg', "@SUM(A1).jpg", "+1.jpg", "-2.jpg", "\tcmd.jpg", "plain.jpg"]
    rows = [AttributesRow(name, "ok", "", {"ita_degrees": -12.5}) for name in names]
    write_tables(rows, tmp_path)
    read = list(csv.DictReader((tmp_path / "attributes.csv").open(encoding="utf-8", newline="")))
    assert [row["input"] for row in read] == ["'" + name for name in names[:-1]] + ["plain.jpg"]
    assert all(row["ita_degrees"] == "-12.5000" for row in read)  # a number that begins with '-' stays a number
    photos = json.loads((tmp_path / "attributes.json").read_text())["photos"]
    assert [photo["input"] for photo in photos] == names


def test_a_rerun_from_another_folder_keeps_the_rows_and_skips_its_own_pictures(
    normalized: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Before: a first run with a relative -o recorded its pictures relative to the folder it ran in, so the same
    command from another folder found none of them, marked every photo 'exists' and dropped every measurement from
    the tables; ``attributes *.jpg *.png -o .`` run twice measured its own pictures as photos; and (a first version
    of the fix) photos given in another order took each other's pictures, as names go by order."""
    from facekit.apps.attributes import ATTRIBUTE_OUTPUTS, attributes_files
    from facekit.batch import OUTPUT_MARK, plan_folder, png_text
    from facekit.normalize import Outcome

    class Stub:
        def __init__(self) -> None:
            self.meta = {"source": "stub"}

        def normalize_many(self, images: list[Any], names: list[str]) -> list[Outcome]:
            return [Outcome(name, "ok", normalized) for name in names]

    def run(photos: list[str]) -> list[Any]:
        plan = plan_folder(photos, Path(".") if Path.cwd() == tmp_path else tmp_path, outputs=ATTRIBUTE_OUTPUTS)
        return attributes_files(plan, FaceAttributes(Stub()), None, False, "m")

    for name in ("a.jpg", "a.png", "b.jpg"):
        Image.fromarray(real_face().image).save(tmp_path / name)
    monkeypatch.chdir(tmp_path)
    first = run(["a.jpg", "a.png", "b.jpg"])
    assert [r.status for r in first] == ["ok", "ok", "ok"]
    pictures = {r.input: r.values["output"] for r in first}
    (tmp_path / "elsewhere").mkdir()
    monkeypatch.chdir(tmp_path / "elsewhere")
    given = [str(tmp_path / n) for n in ("a.png", "a.jpg", "b.jpg")]  # another order: a.png now plans a's name
    again = run([*given, str(tmp_path / "b_attributes.png")])  # its own picture given too: not a photo
    assert [Path(r.input).name for r in again] == ["a.png", "a.jpg", "b.jpg"]
    assert [r.status for r in again] == ["ok", "ok", "ok"], [r.reason for r in again]
    assert all(r.reason.startswith("measured by an earlier run") for r in again)
    for row in again:  # each row names its own photo's picture, by its absolute path
        assert Path(row.values["output"]).is_absolute()
        assert Path(row.values["output"]).name == Path(pictures[Path(row.input).name]).name
        assert png_text(Path(row.values["output"]))[OUTPUT_MARK] == row.input
    table = json.loads((tmp_path / "attributes.json").read_text())["photos"]
    assert [p["status"] for p in table] == ["ok", "ok", "ok"]
    # The photos named through a link to their folder: the same files, their rows kept (not 'exists').
    (tmp_path / "elsewhere" / "link").symlink_to(tmp_path, target_is_directory=True)
    linked = run([str(tmp_path / "elsewhere" / "link" / n) for n in ("a.jpg", "a.png", "b.jpg")])
    assert [r.status for r in linked] == ["ok", "ok", "ok"], [r.reason for r in linked]


def test_a_picture_written_before_an_interruption_is_measured_again_not_exists(
    normalized: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """helper-58's audit: Ctrl-C between a photo's picture and its batch's tables left a picture without a row, and
    the rerun called it someone else's file ('exists ... --overwrite replaces it', exit 3). A picture marked as made
    from another photo, or a file of the user's, still stays."""
    from facekit.apps.attributes import ATTRIBUTE_OUTPUTS, attributes_files
    from facekit.batch import plan_folder
    from facekit.normalize import Outcome

    class Stub:
        def __init__(self) -> None:
            self.meta = {"source": "stub"}

        def normalize_many(self, images: list[Any], names: list[str]) -> list[Outcome]:
            return [Outcome(name, "ok", normalized) for name in names]

    def run() -> list[Any]:
        plan = plan_folder(
            [str(tmp_path / n) for n in ("a.jpg", "b.jpg", "c.jpg")], tmp_path / "out", outputs=ATTRIBUTE_OUTPUTS
        )
        return attributes_files(plan, FaceAttributes(Stub()), None, False, model)

    model = "m"
    for name in ("a.jpg", "b.jpg", "c.jpg"):
        Image.fromarray(real_face().image).save(tmp_path / name)
    assert [r.status for r in run()] == ["ok", "ok", "ok"]
    out = tmp_path / "out"
    (out / "attributes.csv").unlink()  # as if killed before the batch's tables were written
    (out / "attributes.json").unlink()
    (out / "c_attributes.png").write_bytes((out / "a_attributes.png").read_bytes())  # a's picture under c's name
    again = {Path(r.input).name: r for r in run()}
    assert {n: r.status for n, r in again.items()} == {"a.jpg": "ok", "b.jpg": "ok", "c.jpg": "exists"}
    assert again["a.jpg"].reason == "" and "another input or other settings" in again["c.jpg"].reason
    # c's row says 'exists' (no picture of its own): once its own picture is written and the tables are not (another
    # interruption), the rerun redoes it too (helper-60: only photos without any row were redone).
    tables = {name: (out / name).read_bytes() for name in ("attributes.csv", "attributes.json")}
    (out / "c_attributes.png").unlink()
    assert {Path(r.input).name: r.status for r in run()}["c.jpg"] == "ok"
    for name, data in tables.items():
        (out / name).write_bytes(data)
    assert {Path(r.input).name: r.status for r in run()}["c.jpg"] == "ok"
    # A photo changed since its ok row: its old picture stays, as before (only a picture no row owns is redone).
    Image.fromarray(real_face().image[:, ::-1]).save(tmp_path / "a.jpg")
    assert {Path(r.input).name: r.status for r in run()}["a.jpg"] == "exists"
    # Made with another model: left alone as before (its measurements are that model's).
    for name in ("attributes.csv", "attributes.json"):
        (out / name).unlink()
    model = "another"
    assert {r.status for r in run()} == {"exists"}


def test_a_stop_mid_batch_counts_no_row_the_tables_do_not_keep(
    normalized: Any, tmp_path: Path, default_handlers: None
) -> None:
    """helper-231: attributes told each row as it was measured but wrote the tables once its batch ended, so a stop
    in between said rows finished ("2 of 4 photos finished") that were in no table, and the rerun measured them
    again. A batch's rows are told once its tables are written, the stop held meanwhile. And an earlier run's rows
    of photos not reached yet stay in the tables each batch writes (before: the first batch's dropped them, the
    rows said finished as the run reached them were lost to a stop before its end)."""
    import os
    import signal

    from facekit.apps.attributes import ATTRIBUTE_OUTPUTS, AttributesRow, attributes_files
    from facekit.batch import plan_folder
    from facekit.normalize import Outcome

    class Stub:
        def __init__(self) -> None:
            self.meta = {"source": "stub"}

        def normalize_many(self, images: list[Any], names: list[str]) -> list[Outcome]:
            return [Outcome(name, "ok", normalized) for name in names]

    names = ("a.jpg", "b.jpg", "c.jpg", "d.jpg")
    for name in names:
        Image.fromarray(real_face().image).save(tmp_path / name)
    out = tmp_path / "out"

    def run(given: tuple[str, ...], stop_at: str = "") -> list[str]:
        """The photos told finished (as the CLI counts them) before a Ctrl+C as ``stop_at``'s row is told."""
        told: list[str] = []

        def on_row(row: AttributesRow) -> None:
            told.append(Path(row.input).name)
            if told[-1] == stop_at:
                os.kill(os.getpid(), signal.SIGINT)

        plan = plan_folder([str(tmp_path / n) for n in given], out, batch_size=2, outputs=ATTRIBUTE_OUTPUTS)
        if not stop_at:
            attributes_files(plan, FaceAttributes(Stub()), None, False, "m")
            return told
        with pytest.raises(KeyboardInterrupt):
            attributes_files(plan, FaceAttributes(Stub()), on_row, False, "m")
        return told

    def kept() -> list[str]:
        return sorted(Path(row["input"]).name for row in csv.DictReader((out / "attributes.csv").open()))

    assert run(names, stop_at="a.jpg") == ["a.jpg", "b.jpg"] == kept()  # before: ["a.jpg"] told, no tables
    (out / "attributes.csv").unlink(), (out / "attributes.json").unlink()
    for name in ("a", "b"):
        (out / f"{name}_attributes.png").unlink()
    run(("c.jpg", "d.jpg"))  # c and d measured; then a and b with them, stopped as d's earlier row is told
    assert run(names, stop_at="d.jpg") == list(names) and kept() == list(names)  # before: a and b kept


def test_readme_names_every_file_facekit_attributes_writes() -> None:
    """helper-188: README's `facekit attributes` line named attributes.csv|json, not the NAME_attributes.png it
    writes beside them for every photo with a face."""
    from facekit.apps.attributes import ATTRIBUTE_OUTPUTS

    lines = (Path(__file__).parents[2] / "README.md").read_text().splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("facekit attributes "))
    said = " ".join([lines[start], *(line for line in lines[start + 1 : start + 4] if line.lstrip().startswith("#"))])
    assert "attributes.csv|json" in said and all(f"NAME{suffix}" in said for suffix in ATTRIBUTE_OUTPUTS), said


def test_a_run_stopped_after_a_batch_keeps_the_earlier_rows_of_the_photos_it_had_not_reached(
    normalized: Any, tmp_path: Path
) -> None:
    """helper-237: the tables written after each batch held this run's rows and the photos it was not given, not the
    earlier run's rows of the photos it would reach later, so a rerun stopped after its first batch left those
    photos, measured and said finished before, to be measured again."""
    from facekit.apps.attributes import ATTRIBUTE_OUTPUTS, attributes_files, earlier_rows
    from facekit.batch import plan_folder
    from facekit.normalize import Outcome

    class Stub:
        def __init__(self, stop_at: int) -> None:
            self.meta, self.calls, self.stop_at = {"source": "stub"}, 0, stop_at

        def normalize_many(self, images: list[Any], names: list[str]) -> list[Outcome]:
            self.calls += 1
            if self.calls == self.stop_at:
                raise KeyboardInterrupt
            return [Outcome(name, "ok", normalized) for name in names]

    def run(names: list[str], stop_at: int = 0) -> list[Any]:
        photos = [str(tmp_path / n) for n in names]
        plan = plan_folder(photos, tmp_path / "out", batch_size=1, outputs=ATTRIBUTE_OUTPUTS)
        return attributes_files(plan, FaceAttributes(Stub(stop_at)), None, False, "m")

    for name in ("a.jpg", "b.jpg", "new.jpg", "newer.jpg"):
        Image.fromarray(real_face().image).save(tmp_path / name)
    assert [r.status for r in run(["a.jpg", "b.jpg"])] == ["ok", "ok"]
    with pytest.raises(KeyboardInterrupt):  # stopped as it measures newer.jpg, after new.jpg's batch
        run(["new.jpg", "newer.jpg", "a.jpg", "b.jpg"], stop_at=2)
    kept = earlier_rows(tmp_path / "out", "m")
    assert kept is not None and sorted(Path(name).name for name in kept) == ["a.jpg", "b.jpg", "new.jpg"]
    again = {Path(r.input).name: r for r in run(["new.jpg", "newer.jpg", "a.jpg", "b.jpg"])}
    assert all(again[n].reason.startswith("measured by an earlier run") for n in ("new.jpg", "a.jpg", "b.jpg"))
