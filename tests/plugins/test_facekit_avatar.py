"""facekit-avatar: the Surrey-model fit, the colour model, the renders, the exports, the correspondence and the
command, on the real model (../shared/data/sfm) and the real face shipped with facekit.testing."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path
from typing import Any

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("eos")
pytest.importorskip("facekit_avatar")

from facekit_avatar.colour import ColourModel, learn  # noqa: E402
from facekit_avatar.fit import DISTANCE_MM, Camera, fit_shape, place  # noqa: E402
from facekit_avatar.model import SurreyModel, load_model  # noqa: E402

import facekit  # noqa: E402
from facekit.errors import FacekitError  # noqa: E402
from facekit.testing import check_app, real_face  # noqa: E402
from tests.helpers import run_cli, strict_obj_files  # noqa: E402


@pytest.fixture(scope="module")
def sfm(data_root: Path) -> str:
    return str(data_root / "sfm" / "sfm_shape_3448.bin")


@pytest.fixture(scope="module")
def model(sfm: str) -> SurreyModel:
    return load_model(sfm)


@pytest.fixture(scope="module")
def maker(sfm: str) -> Any:
    try:
        from facekit_avatar.render import context

        context()
    except Exception as error:  # noqa: BLE001 - the message says what to install
        pytest.skip(f"no headless OpenGL here: {error}")
    return facekit.load_component("app", "avatar", sfm=sfm)


def synthetic_landmarks(model: SurreyModel, coefficients: torch.Tensor, size: int = 112) -> torch.Tensor:
    """The 68 points of known faces: mapped vertices, and jaw points on the model's contour vertices."""
    camera = Camera(size)
    scale = torch.ones(len(coefficients))
    translation = torch.tensor([[2.0, -4.0, -DISTANCE_MM]]).expand(len(coefficients), 3)
    vertices = place(model.shape(coefficients), scale, translation)
    xy = camera.project(vertices)
    points = torch.zeros(len(coefficients), 68, 2)
    lm = model.landmarks
    points[:, lm.points] = xy[:, lm.vertices]
    right, left = model.contour
    points[:, lm.right_contour] = xy[:, right[5:13]]  # eight consecutive outline vertices per side
    points[:, lm.left_contour] = xy[:, left[5:13]]
    return points


def test_the_fit_recovers_known_faces_batched(model: SurreyModel) -> None:
    generator = torch.Generator().manual_seed(0)
    truth = torch.randn(4, model.components, generator=generator) * 0.7
    points = synthetic_landmarks(model, truth)
    fit = fit_shape(model, points.numpy(), 112)
    assert fit.reprojection_px.max() < 0.6, fit.reprojection_px
    assert fit.translation[:, :2].sub(torch.tensor([2.0, -4.0])).abs().max() < 3
    # The error is over the 66 points fitted (50 mapped, 16 on the contour); the inner mouth corners (iBUG 61 and 65)
    # have no vertex and are no error (before: zeros that pulled every mean down by 66/68).
    unfitted = sorted(
        set(range(68)) - {*model.landmarks.points, *model.landmarks.right_contour, *model.landmarks.left_contour}
    )
    assert unfitted == [60, 64] and fit.per_point_px[:, unfitted].isnan().all()
    fitted = fit.per_point_px[:, [i for i in range(68) if i not in unfitted]]
    assert torch.allclose(fit.reprojection_px, fitted.pow(2).mean(1).sqrt())

    # The shape itself (not only its 68 points), up to the scale the points cannot tell from the model's size: the
    # fit is clearly closer to the true face than the mean face is (68 frontal points say little about depth).
    def aligned_error(shape: torch.Tensor, truth_shape: torch.Tensor) -> torch.Tensor:
        centred, target = shape - shape.mean(1, keepdim=True), truth_shape - truth_shape.mean(1, keepdim=True)
        scale = (centred * target).sum((1, 2)) / centred.pow(2).sum((1, 2))
        return (scale[:, None, None] * centred - target).norm(dim=2).mean(1)

    truth_shape = model.shape(truth)
    error = aligned_error(model.shape(fit.coefficients), truth_shape)
    baseline = aligned_error(model.mean.expand_as(truth_shape), truth_shape)
    assert (error < 0.75 * baseline).all(), (error, baseline)
    single = fit_shape(model, points[2:3].numpy(), 112)
    assert torch.allclose(single.coefficients[0], fit.coefficients[2], atol=0.05)


def test_the_fit_refuses_other_landmark_schemes(model: SurreyModel) -> None:
    with pytest.raises(ValueError, match="68"):
        fit_shape(model, np.zeros((1, 5, 2)), 112)


def test_the_colour_model_fits_and_learns_a_low_rank_set() -> None:
    rng = np.random.default_rng(0)
    mean = rng.uniform(0.3, 0.7, (50, 3)).astype(np.float32)
    basis = rng.normal(0, 0.05, (50, 3, 3)).astype(np.float32)
    truth = ColourModel(mean, basis, people=1)
    coefficients = rng.normal(0, 1, (2, 3))
    colours = truth.reconstruct(coefficients).astype(np.float32)
    assert np.allclose(truth.fit(colours, np.ones((2, 50)), prior=1e-6), coefficients, atol=1e-3)
    # Half the vertices unseen: the fit on the rest still predicts them.
    seen = np.zeros((2, 50), np.float32)
    seen[:, ::2] = 1
    predicted = truth.reconstruct(truth.fit(colours, seen, prior=1e-3))
    assert np.abs(predicted - colours)[:, 1::2].max() < 1e-2
    # learn: 80 people on a rank-3 set with a fifth of each person's vertices missing recovers the set.
    people = truth.reconstruct(rng.normal(0, 1, (80, 3))).astype(np.float32)
    confidence = (rng.random((80, 50)) > 0.2).astype(np.float32)
    learned = learn(people, confidence, components=3)
    held = truth.reconstruct(rng.normal(0, 1, (5, 3))).astype(np.float32)
    recon = learned.reconstruct(learned.fit(held, np.ones((5, 50)), prior=1e-6))
    spread = np.abs(held - people.mean(0)).mean()
    assert np.abs(recon - held).mean() < 0.1 * spread, (np.abs(recon - held).mean(), spread)


def test_the_shipped_colour_model_is_a_skin_colour_basis() -> None:
    shipped = ColourModel.load()
    assert shipped.mean.shape == (3448, 3) and shipped.components == 20 and shipped.people > 1000
    cheek = shipped.mean[2000]  # skin: red above green above blue
    assert cheek[0] > cheek[1] > cheek[2]


def test_avatar_of_the_real_face_renders_exports_and_reloads(maker: Any, tmp_path: Path) -> None:
    import trimesh

    normalizer = facekit.Normalizer.from_checkpoint()
    face = normalizer.normalize(real_face().image)
    (avatar,) = maker.build(face.image[None], face.landmarks[None])
    assert avatar.record["reprojection_px"]["rms"] < 2.5  # a 112-px frame
    front = avatar.renders[0.0]
    assert front.shape == face.image.shape
    background = np.all(front == 128, axis=2)
    assert 0.2 < (~background).mean() < 0.8  # the face covers part of the frame, not all of it
    # The face's skin in the render has the normalized face's colour (same pixels, within a few grey levels).
    centre = (slice(50, 62), slice(46, 66))
    assert np.abs(front[centre].mean((0, 1)) - face.image[centre].mean((0, 1))).max() < 12
    # Turning the head moves the face sideways in opposite directions.
    left, right = (np.argwhere(~np.all(avatar.renders[y] == 128, axis=2))[:, 1].mean() for y in (-30.0, 30.0))
    assert abs(left - right) > 2

    files = maker.export(avatar, tmp_path, "face")
    names = {p.name for p in files}
    assert {"face.obj", "face.mtl", "face.png", "face.glb", "face.json", "face_yaw0.png", "face_yaw+30.png"} <= names
    for mesh_file in ("face.glb", "face.obj"):
        mesh = trimesh.load(tmp_path / mesh_file, force="mesh")
        assert mesh.vertices.shape == (3448, 3), mesh_file
        assert isinstance(mesh.visual, trimesh.visual.TextureVisuals) and mesh.visual.uv.shape == (3448, 2)
        material = mesh.visual.material
        image = getattr(material, "baseColorTexture", None) or getattr(material, "image", None)
        assert image is not None and image.size == (512, 512), mesh_file
        assert 0.10 < np.ptp(mesh.vertices[:, 0]) < 0.25  # metres: a face is ~15 cm wide
    # The GLB as viewers read it: skin is not metal (glTF's metallicFactor defaults to 1: a dark face), and it
    # carries normals (without them viewers shade it flat).
    glb = (tmp_path / "face.glb").read_bytes()
    gltf = json.loads(glb[20 : 20 + int.from_bytes(glb[12:16], "little")])
    assert gltf["materials"][0]["pbrMetallicRoughness"].get("metallicFactor", 1.0) == 0.0
    assert "NORMAL" in gltf["meshes"][0]["primitives"][0]["attributes"]
    # The OBJ carries normals too (helper-65: without them Blender and three.js shade it flat).
    obj_lines = (tmp_path / "face.obj").read_text().splitlines()
    assert sum(line.startswith("vn ") for line in obj_lines) == 3448
    assert all(len(line.split()[1].split("/")) == 3 for line in obj_lines if line.startswith("f "))
    record = json.loads((tmp_path / "face.json").read_text())
    assert "non-commercial" in record["licence"] and len(record["coefficients"]) == 63
    assert record["landmark_map"] == "ibug_to_sfm_voted.txt"  # the default

    # A file name that is not UTF-8 (Latin-1 'café' from an old disk): trimesh dropped the material and texture of
    # the OBJ without a word (an 'ok' row, a grey mesh); the OBJ now names the MTL and the MTL the PNG byte for byte.
    latin = os.fsdecode(b"caf\xe9")
    written = {os.fsencode(p.name) for p in maker.export(avatar, tmp_path / "latin", latin)}
    assert {b"caf\xe9.obj", b"caf\xe9.mtl", b"caf\xe9.png", b"caf\xe9.glb"} <= written
    obj = (tmp_path / "latin" / f"{latin}.obj").read_bytes()
    assert b"mtllib caf\xe9.mtl" in obj and b"map_Kd caf\xe9.png" in (tmp_path / "latin" / f"{latin}.mtl").read_bytes()

    hand = facekit.load_component("app", "avatar", sfm=str(maker.model.path), landmarks="ibug_to_sfm")
    (eos_map,) = hand.build(face.image[None], face.landmarks[None])
    assert eos_map.record["landmark_map"] == "ibug_to_sfm.txt"
    assert avatar.record["reprojection_px"]["rms"] < eos_map.record["reprojection_px"]["rms"]  # voted points fit closer
    with pytest.raises(FacekitError, match="landmarks"):
        facekit.load_component("app", "avatar", sfm=str(maker.model.path), landmarks="eos")
    with pytest.raises(FacekitError, match=r"not a colour model.*FileNotFoundError"):  # helper-65: a raw error
        facekit.load_component("app", "avatar", sfm=str(maker.model.path), colour_model=str(tmp_path / "no.npz"))
    # A .npy, a cut-short .npz (helper-66: raw TypeError, BadZipFile) and one made for another mesh: one line each.
    np.save(tmp_path / "arr.npy", np.zeros(3))
    (tmp_path / "cut.npz").write_bytes(b"PK\x03\x04 cut short")
    np.savez(tmp_path / "small.npz", mean=np.zeros((10, 3)), basis=np.zeros((10, 3, 2)), people=np.int64(5))
    for name, message in (
        ("arr.npy", "not a colour model"),
        ("cut.npz", "not a colour model"),
        ("small.npz", "another mesh"),
    ):
        with pytest.raises(FacekitError, match=message):
            facekit.load_component("app", "avatar", sfm=str(maker.model.path), colour_model=str(tmp_path / name))


def test_an_avatar_maker_built_directly_refuses_what_load_component_refuses(maker: Any) -> None:
    """Before (helper-108): AvatarMaker(...) built directly took steps 0, a 10 px texture or a negative landmark
    noise without a word (load_component's params refused them); now both refuse in the same words."""
    from importlib import resources

    from facekit_avatar.app import AvatarMaker

    sfm = str(maker.model.path)
    for settings, field in (
        ({"steps": 0}, "steps"),
        ({"texture_size": 10}, "texture_size"),
        ({"sigma_px": -1.0}, "sigma_px"),
        ({"colour_prior": 0.0}, "colour_prior"),
        ({"landmarks": "eos"}, "landmarks"),
        ({"steps": True}, "steps"),
    ):
        with pytest.raises(FacekitError, match=f"avatar: {field}: ") as direct:
            AvatarMaker(sfm=sfm, **settings)
        with pytest.raises(FacekitError) as loaded:
            facekit.load_component("app", "avatar", sfm=sfm, **settings)
        assert str(direct.value).removeprefix("avatar: ") == str(loaded.value).removeprefix("avatar params: ")
    assert AvatarMaker(sfm=sfm, steps=5).steps == 5
    # What load_component takes, built directly too, and kept as load_component keeps it: a path object for a file
    # (before: "sfm: Input should be a valid string"), numbers as the checked params hold them (before: "256" and
    # 5.0 were checked, then the unchecked values kept, and failed later in the texture and the fit).
    colours = Path(str(resources.files("facekit_avatar") / "data"))
    direct = AvatarMaker(sfm=Path(sfm), colour_model=colours, texture_size="256", steps=5.0)
    loaded = facekit.load_component("app", "avatar", sfm=sfm, colour_model=str(colours), texture_size="256", steps=5.0)
    for built in (direct, loaded):
        assert (type(built.texture_size), built.texture_size, type(built.steps), built.steps) == (int, 256, int, 5)


def test_the_blend_replaces_grazing_smears_with_the_colour_model(maker: Any) -> None:
    """Texels of vertices the camera saw face-on keep the image's colour; those it saw at grazing angles (or outside
    the face) take the colour model's reconstruction instead of the smeared image colour."""
    from facekit_avatar.colour import sample_vertices

    normalizer = facekit.Normalizer.from_checkpoint()
    face = normalizer.normalize(real_face().image)
    plain, blended = (maker.build(face.image[None], face.landmarks[None], yaws=(), blend=b)[0] for b in (False, True))
    fit = maker.fit(face.landmarks[None], 112)
    samples = sample_vertices(maker.model, fit, face.image[None], face.landmarks[None].astype(np.float32), 112)
    _, recon = maker.colour_model.blend(samples)
    size = plain.texture.shape[0]
    texel = np.clip((maker.model.uv * size).astype(int), 0, size - 1)

    def at(texture: np.ndarray, index: np.ndarray) -> np.ndarray:
        return texture[texel[index, 1], texel[index, 0]].astype(float)

    confidence = samples.confidence[0]
    trusted, grazing = np.flatnonzero(confidence > 0.99), np.flatnonzero(confidence < 0.01)
    assert len(trusted) > 300 and len(grazing) > 300
    assert np.abs(at(plain.texture, trusted) - at(blended.texture, trusted)).mean() < 2
    from_model = np.abs(at(blended.texture, grazing) - recon[0][grazing] * 255).mean()
    from_image = np.abs(at(plain.texture, grazing) - recon[0][grazing] * 255).mean()
    assert from_model < 4 < from_image, (from_model, from_image)


def test_automatic_correspondence_agrees_with_the_hand_made_mapping(
    model: SurreyModel, maker: Any, data_root: Path
) -> None:
    """App. B.1: vote the vertex of each dlib point over jittered renders of the mean face and compare with eos's
    ibug_to_sfm.txt. Measured: 74-76 % of the 50 mapped points exactly or as a direct mesh neighbour (the issue asks
    90 %). The floor guards the level reached. Where the two disagree (nose base, mouth corners, inner lips, bridge),
    human iBUG-68 annotations side with the vote: fitted without those points, HELEN's near-frontal faces have the
    point nearer the voted vertex than the mapped one (benchmarks/correspondence.py: all 12 at 24 renders)."""
    from facekit_avatar.correspondence import agreement, disputes, frontal_in_frame, held_out_distances, vote

    from facekit.data.sources import helen_test
    from facekit.normalize import Normalizer, default_model_path

    detector = facekit.load_component("detector", "dlib")
    found = vote(model, detector, ColourModel.load().mean, renders=12)
    assert found.renders == 12 and (found.vertices >= 0).all()
    exact, near = agreement(model, found.vertices)
    assert near >= 0.68 and exact >= 0.2, (exact, near)

    disputed = disputes(model, found.vertices)
    assert len(disputed) == round((1 - near) * len(model.landmarks.points))
    frame = Normalizer.from_checkpoint(default_model_path()).decoder.mean_landmarks.numpy()
    faces = frontal_in_frame([points for _, points in helen_test(data_root)], frame)
    assert len(faces) > 80
    distances = np.median(held_out_distances(model, disputed, faces, 112), axis=0)  # (D, 2): mapped, voted
    assert (distances[:, 1] < distances[:, 0]).mean() >= 0.75, distances


def test_a_vote_share_counts_only_renders_with_a_face(model: SurreyModel, monkeypatch: pytest.MonkeyPatch) -> None:
    """``share`` is the fraction of the renders *with a face* that chose the vertex (the Correspondence docstring):
    a stub renderer (every vertex visible) and a stub detector that finds a face in every other render and puts its
    two points exactly on vertices 100 and 2000. Dividing by all renders would halve the share."""
    from types import SimpleNamespace

    import facekit_avatar.render as render
    from facekit_avatar.correspondence import vote

    size, placed = 64, {}

    class Renderer:
        def render_colours(self, vertices: np.ndarray, *_: Any) -> tuple[np.ndarray, np.ndarray]:
            placed["vertices"] = vertices
            return np.zeros((size, size, 3), np.uint8), np.ones((size, size), np.float32)  # far: all visible

    class Detector:
        card = SimpleNamespace(landmarks=2)
        calls = 0

        def detect_array(self, rgb: np.ndarray) -> list[Any]:
            Detector.calls += 1
            if Detector.calls % 2:
                return []
            xy = Camera(size).project(torch.from_numpy(placed["vertices"])).numpy()
            return [SimpleNamespace(landmarks=xy[[100, 2000]])]

    monkeypatch.setattr(render, "renderer", Renderer)
    found = vote(model, Detector(), np.full((model.vertices, 3), 0.5), renders=6, size=size)
    assert found.renders == 3 and list(found.vertices) == [100, 2000]
    assert np.allclose(found.share, 1.0), found.share


def test_the_voted_landmark_map_moves_only_points_that_faces_put_there(model: SurreyModel, data_root: Path) -> None:
    """The shipped ``--landmarks voted`` map is eos's with a few points moved to the vote's vertex; on HELEN's
    hand-annotated near-frontal faces (fitted without those points) each moved point lies nearer the new vertex."""
    from facekit_avatar.correspondence import Dispute, frontal_in_frame, held_out_distances
    from facekit_avatar.model import data_file, read_landmark_map

    from facekit.data.sources import helen_test
    from facekit.normalize import Normalizer, default_model_path

    hand, voted = model.landmarks, read_landmark_map(data_file("ibug_to_sfm_voted.txt"))
    assert np.array_equal(hand.points, voted.points) and np.array_equal(hand.left_contour, voted.left_contour)
    pairs = zip(hand.points, hand.vertices, voted.vertices, strict=True)
    moved = [Dispute(int(p), int(a), int(b)) for p, a, b in pairs if a != b]
    assert 8 <= len(moved) <= 16 and all(0 <= d.voted < model.vertices for d in moved)
    frame = Normalizer.from_checkpoint(default_model_path()).decoder.mean_landmarks.numpy()
    faces = frontal_in_frame([points for _, points in helen_test(data_root)], frame)
    distances = np.median(held_out_distances(model, moved, faces, 112), axis=0)  # (D, 2): eos's, voted
    assert (distances[:, 1] < distances[:, 0]).all(), distances


def test_the_avatar_app_passes_the_app_checks(sfm: str, maker: Any) -> None:
    check_app(facekit.get_registry("app").get("avatar"), {"sfm": sfm})


def test_eos_on_the_photo_is_the_comparison(data_root: Path, model: SurreyModel) -> None:
    from facekit_avatar.eos_baseline import eos_fit, fill_invisible

    face = real_face()
    result = eos_fit(face.image, face.ibug68, data_root / "sfm", texture_size=256)
    interocular = np.linalg.norm(face.ibug68[36:42].mean(0) - face.ibug68[42:48].mean(0))
    assert np.isnan(result.per_point_px[[60, 64]]).all() and np.isfinite(np.delete(result.per_point_px, [60, 64])).all()
    assert np.nanmean(result.per_point_px) < 0.1 * interocular
    assert result.vertices.shape == (3448, 3) and result.isomap.shape == (256, 256, 4)
    assert 0.2 < (result.isomap[..., 3] > 0).mean() < 0.9
    assert fill_invisible(result.isomap).shape == (256, 256, 3)


def test_the_command_makes_avatars_and_reports_bad_photos(
    data_root: Path, sfm: str, maker: Any, tmp_path: Path
) -> None:
    from PIL import Image

    photos = tmp_path / "photos"
    photos.mkdir()
    Image.fromarray(real_face().image).save(photos / "a face.jpg")  # white space: plain output names (helper-65)
    # A photo already named so, after it in the folder: it keeps the plain name, "a face.jpg" takes a_face_jpg.
    Image.fromarray(real_face().image[:, ::-1]).save(photos / "a_face.jpg")
    (photos / "0broken.jpg").write_bytes(b"not a jpeg")
    Image.new("RGB", (120, 120), (90, 140, 200)).save(photos / "sky.png")
    out = tmp_path / "out"
    args = ("avatar", str(photos), "-o", str(out), "--sfm", sfm, "--texture-size", "128", "--face", "central")
    result = run_cli(*args)
    assert result.returncode == 3, result.stdout + result.stderr
    text = " ".join(result.stdout.split())
    assert "2 of 4 avatars" in text and "unreadable" in text and "no_face" in text
    assert {p.name for p in out.iterdir()} >= {"a_face.glb", "a_face.obj", "a_face_sheet.png", "a_face_yaw-30.png"}
    made = {base: json.loads((out / f"{base}.json").read_text())["input_path"] for base in ("a_face", "a_face_jpg")}
    assert made == {"a_face": str(photos / "a_face.jpg"), "a_face_jpg": str(photos / "a face.jpg")}
    files = {path: path.stat().st_mtime_ns for path in out.glob("[!.]*")}  # (not the lock each run takes)
    # OBJ readers split mtllib and map_Kd at spaces (pywavefront: "Unknown material"): the names have none.
    assert "mtllib a_face.mtl" in (out / "a_face.obj").read_text()
    assert "map_Kd a_face.png" in (out / "a_face.mtl").read_text()
    assert strict_obj_files(out / "a_face.obj") == (out / "a_face.mtl", out / "a_face.png")
    assert all((out / f"a_face.{kind}").read_bytes().endswith(b"\n") for kind in ("obj", "mtl"))  # text files
    sheet = np.asarray(Image.open(out / "a_face_sheet.png"))
    assert sheet.shape[0] == 224 and sheet.shape[1] > 5 * 200
    record = json.loads((out / "a_face.json").read_text())
    assert record["settings"]["face"] == "central"  # the choice reached it
    assert record["faces_found"] == 1 and len(record["box"]) == 4 and "reading" not in record  # which face, as read
    again = run_cli(*args)  # the plain name is found again: done, nothing remade
    assert again.returncode == 3 and "done" in again.stdout and not (out / "a face.obj").exists()
    # Each photo is found under the names the first run gave it: nothing made again, nothing new.
    assert again.stdout.count("│ done") == 2 and "│ ok" not in again.stdout, again.stdout
    assert {path: path.stat().st_mtime_ns for path in out.glob("[!.]*")} == files
    # The order given (0broken, a face, sky), read by their statuses: a long temporary path wraps the names across
    # the table's lines wherever its length falls (the test failed on a machine whose pytest-NN had two digits).
    table = again.stdout
    assert table.index("unreadable") < table.index("│ done") < table.index("no_face")
    listing = run_cli("list", "apps")
    assert "avatar" in listing.stdout and "non-commercial" in " ".join(listing.stdout.split())


def test_avatar_output_names_are_names_an_obj_file_can_hold(tmp_path: Path) -> None:
    """Before (helper-130): only white space in a photo's name became ``_`` in the avatar's output names, so
    ``IMG#2.jpg`` gave ``mtllib IMG#2.mtl``, which obj-rs reads as ``mtllib IMG`` (``#`` begins a comment wherever it
    stands); a backslash is tinyobjloader's escape character and a folder separator on Windows, and a texture name
    that begins with ``-`` is a texture option to Assimp (``map_Kd -s.png``: skipped). Such characters are now ``_``
    too, as white space is; other letters stay (``é``, ``张``), and the names the photos gave stay apart."""
    from facekit_avatar.cards import AVATAR_OUTPUTS

    from facekit.batch import plain_name, plan_folder

    photos = tmp_path / "photos"
    photos.mkdir()
    given = {
        "IMG #2.jpg": "IMG__2",
        "a\\b.jpg": "a_b",
        "-s.jpg": "_s",
        "tab\there.jpg": "tab_here",
        "ctrl\x01.jpg": "ctrl_",
        "café 张.jpg": "café_张",
        "a-b c.jpg": "a-b_c",
    }
    for name in given:
        (photos / name).write_bytes(b"")
    plan = plan_folder([str(photos)], tmp_path / "out", outputs=AVATAR_OUTPUTS, plain=True)
    assert {Path(p.source).name: p.base for p in plan.planned} == given
    assert plain_name("IMG_1") == "IMG_1" and plain_name("x-1") == "x-1"  # a plain name is left as it is


def test_a_photo_whose_name_is_already_plain_keeps_it_and_every_run_gives_the_same_names(tmp_path: Path) -> None:
    """Before: ``John Smith.jpg`` and ``John#Smith.jpg``, first in the folder's order, took ``John_Smith`` and
    ``John_Smith_jpg``, and the user's plainly named ``John_Smith.jpg`` became ``John_Smith_jpg-2``. A photo whose
    name needs no change is now named first; a rerun finds every photo's outputs where the first run put them,
    whether it finished or not, and a folder an earlier version named keeps its names."""
    from facekit_avatar.cards import AVATAR_OUTPUTS

    from facekit.batch import made_from, plan_folder
    from facekit.models import sha256_file

    photos, out = tmp_path / "photos", tmp_path / "out"
    photos.mkdir()
    for number, name in enumerate(("John Smith.jpg", "John#Smith.jpg", "John_Smith.jpg", "Ann.jpg")):
        (photos / name).write_bytes(bytes([number]))  # each its own content: records tell them apart by sha256

    def names() -> dict[str, str]:
        plan = plan_folder([str(photos)], out, outputs=AVATAR_OUTPUTS, plain=True)
        assert [p.source.name for p in plan.planned] == sorted(p.name for p in photos.iterdir())  # the order given
        return {p.source.name: p.base for p in plan.planned}

    def made(name: str, base: str) -> None:  # what the command leaves for a finished avatar (the files it checks)
        record = {**made_from(photos / name), "input_sha256": sha256_file(photos / name), "complete": True}
        (out / f"{base}.json").write_text(json.dumps(record))
        (out / f"{base}.obj").write_text("v 0 0 0\n")

    first = names()
    assert first == {
        "John Smith.jpg": "John_Smith_jpg",
        "John#Smith.jpg": "John_Smith_jpg-2",
        "John_Smith.jpg": "John_Smith",
        "Ann.jpg": "Ann",
    }
    out.mkdir()
    made("John Smith.jpg", first["John Smith.jpg"])  # a run stopped after the first photo in the folder's order
    assert names() == first
    for name, base in first.items():
        made(name, base)
    assert names() == first
    # A folder named in the folder's order (as before): each photo keeps its outputs, none is renamed.
    for file in out.iterdir():
        file.unlink()
    before = {"John Smith.jpg": "John_Smith", "John#Smith.jpg": "John_Smith_jpg", "John_Smith.jpg": "John_Smith_jpg-2"}
    for name, base in before.items():
        made(name, base)
    assert names() == {**before, "Ann.jpg": "Ann"}


def test_depth_inside_matches_opencvs_point_polygon_test() -> None:
    """The vectorized hull confidence: inside a convex hull, the same distance to the boundary as OpenCV's per-point
    test; outside, never positive (the confidence clips it to 0)."""
    import cv2
    from facekit_avatar.colour import depth_inside

    rng = np.random.default_rng(0)
    for _ in range(5):
        polygon = cv2.convexHull(rng.uniform(0, 112, (30, 2)).astype(np.float32)).reshape(-1, 2)
        queries = rng.uniform(-10, 122, (2000, 2))
        reference = np.array([cv2.pointPolygonTest(polygon[:, None], (float(x), float(y)), True) for x, y in queries])
        got = depth_inside(queries, polygon)
        inside = reference > 0
        assert inside.sum() > 100 and np.allclose(got[inside], reference[inside], atol=1e-3)
        assert (got[~inside] <= 1e-6).all()


def test_avatar_files_leave_what_is_there_and_never_write_through_a_link(maker: Any, tmp_path: Path) -> None:
    """An avatar's files already in -o (a user's, or an earlier run's) are left alone unless overwrite; a subfolder
    that is a link out of -o gets nothing written through it, and the batch goes on."""
    from facekit_avatar.cards import AVATAR_OUTPUTS
    from facekit_avatar.cli import BUILT_SHARE, avatar_files
    from PIL import Image

    from facekit.batch import plan_folder

    inputs = tmp_path / "in"
    (inputs / "sub").mkdir(parents=True)
    face = Image.fromarray(real_face().image)
    face.save(inputs / "face.jpg", quality=95)
    face.save(inputs / "sub" / "other.jpg", quality=95)
    out, elsewhere = tmp_path / "out", tmp_path / "elsewhere"
    out.mkdir()
    elsewhere.mkdir()
    (out / "sub").symlink_to(elsewhere, target_is_directory=True)
    (out / "face.obj").write_text("my mesh\n")
    plan = plan_folder([str(inputs)], out, outputs=AVATAR_OUTPUTS)
    normalizer = facekit.Normalizer.from_checkpoint()
    rows = {Path(row["input"]).name: row for row in avatar_files(plan, normalizer, maker)}
    assert rows["face.jpg"]["status"] == "exists" and (out / "face.obj").read_text() == "my mesh\n"
    assert rows["other.jpg"]["status"] == "unwritable" and "leads outside" in rows["other.jpg"]["reason"]
    assert list(elsewhere.iterdir()) == []
    (out / "sub").unlink()
    # Each photo's detection, avatar and files, as each ends, before its batch's rows (helper-196, helper-201: the
    # bar moves; before helper-201 it sat still through the fits, renders and files, most of a small photo's time).
    told: list[object] = []
    remade = avatar_files(
        plan,
        normalizer,
        maker,
        on_row=lambda row: told.append("row"),
        overwrite=True,
        on_detected=lambda: told.append("detected"),
        on_reached=told.append,
    )
    assert told == ["detected", "detected", BUILT_SHARE, BUILT_SHARE, 1.0, 1.0, "row", "row"]
    again = {Path(row["input"]).name: row for row in remade}
    assert again["face.jpg"]["status"] == again["other.jpg"]["status"] == "ok"  # made now (before: "done")
    assert (out / "face.obj").read_text() != "my mesh\n" and (out / "sub" / "other.glb").is_file()
    # With settings in the records, a rerun with the same finds them made; other settings leave them alone.
    settings = {"texture_size": 512, "landmarks": "voted"}
    avatar_files(plan, normalizer, maker, overwrite=True, settings=settings)
    made = {Path(row["input"]).name: row for row in avatar_files(plan, normalizer, maker, settings=settings)}
    assert all(row["status"] == "done" for row in made.values()), made
    assert all(row["reason"] == "already made with these settings" for row in made.values()), made
    changed = avatar_files(plan, normalizer, maker, settings={**settings, "texture_size": 256})
    assert {row["status"] for row in changed} == {"exists"}
    # A run killed while writing (the record first, incomplete; the sheet not yet there) is redone, not "exists".
    record = json.loads((out / "face.json").read_text())
    assert record["complete"] is True and "face_sheet.png" in record["files"]
    (out / "face_sheet.png").unlink()
    (out / "face.json").write_text(json.dumps({**record, "complete": False}))
    redone = {Path(row["input"]).name: row for row in avatar_files(plan, normalizer, maker, settings=settings)}
    assert redone["face.jpg"]["status"] == "ok" and "reason" not in redone["face.jpg"], redone
    assert (out / "face_sheet.png").is_file() and json.loads((out / "face.json").read_text())["complete"] is True
    # Files the record lists deleted since (the OBJ and its texture): made again (before: "done", the OBJ missing).
    (out / "face.obj").unlink()
    (out / "face.png").unlink()
    remade = {Path(row["input"]).name: row for row in avatar_files(plan, normalizer, maker, settings=settings)}
    assert remade["face.jpg"]["status"] == "ok" and (out / "face.obj").is_file() and (out / "face.png").is_file()
    assert remade["other.jpg"]["status"] == "done"


def test_renders_release_their_buffers() -> None:
    """Before: each render left its colour and depth buffers behind (~2 MB at 512 px): a serving process grew
    ~2.5 MB per photo until it was killed."""
    psutil = pytest.importorskip("psutil")
    from facekit_avatar.render import Renderer

    renderer, process = Renderer(), psutil.Process()
    uv = np.random.default_rng(0).random((100, 2)).astype(np.float32)
    triangles = np.random.default_rng(1).integers(0, 100, (50, 3))
    renderer._coverage(uv, triangles, 512)
    before = process.memory_info().rss
    for _ in range(150):
        renderer._coverage(uv, triangles, 512)
    assert process.memory_info().rss - before < 60e6  # leaking, 150 renders held ~300 MB


def test_the_renderer_draws_from_any_thread() -> None:
    """Before: an OpenGL context is current only on the thread that made it, and every render from another thread
    (facekit serve's avatar thread once the process had rendered elsewhere, a second serve engine, a caller's thread
    pool) failed with moderngl's "cannot create renderbuffer" (ci114). Now each render makes the context current on
    its thread, one thread at a time, and draws the same pixels as on the thread that made it."""
    import threading
    from concurrent.futures import ThreadPoolExecutor

    from facekit_avatar.render import renderer

    draw = renderer()
    vertices = np.array([[-0.8, -0.8, 0.0], [0.8, -0.8, 0.0], [0.0, 0.8, 0.0]], np.float32)
    colours = np.array([[1, 0, 0], [0, 1, 0], [0, 0, 1]], np.float32)
    uv = vertices[:, :2] * 0.5 + 0.5

    def both() -> tuple[np.ndarray, np.ndarray]:
        rgb, _ = draw.render_colours(vertices, np.array([[0, 1, 2]]), colours, np.eye(4, dtype=np.float32), 64)
        return rgb, draw._coverage(uv, np.array([[0, 1, 2]]), 64)

    here = both()
    assert here[0].std() > 10 and 0 < here[1].mean() < 1  # a coloured triangle, covering part of the square
    results: list[tuple[np.ndarray, np.ndarray]] = []
    thread = threading.Thread(target=lambda: results.append(both()))
    thread.start()
    thread.join()
    with ThreadPoolExecutor(4) as pool:
        results += list(pool.map(lambda _: both(), range(8)))
    assert len(results) == 9
    for rgb, covered in results:
        assert np.array_equal(rgb, here[0]) and np.array_equal(covered, here[1])


@pytest.mark.skipif(not hasattr(os, "fork"), reason="fork is POSIX's")
def test_a_child_forked_while_another_thread_renders_can_take_the_context() -> None:
    """Before: the context's turn lock held at a fork by another of the parent's threads (rendering) stayed held in
    the child, where that thread does not exist: the child's first render waited forever. A forked child now gets a
    new lock; one held by the forking thread itself is kept, which that thread releases as it would have."""
    import threading

    from facekit_avatar import render

    from tests.helpers import forked_while_held

    def take_the_turn() -> bool:
        with render._CONTEXT_TURN:
            return True

    assert forked_while_held(render._CONTEXT_TURN, take_the_turn, timeout=30) == 0
    # The forking thread's own turn is kept: it is still that thread's in the child, where another thread waits for it.
    with render._CONTEXT_TURN:
        pid = os.fork()
        if pid == 0:  # the child: never returns into pytest
            code = 1
            try:
                taken: list[bool] = []
                other = threading.Thread(target=lambda: taken.append(render._CONTEXT_TURN.acquire(timeout=0)))
                other.start()
                other.join()
                code = 0 if taken == [False] else 1
            finally:
                os._exit(code)
    assert os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1]) == 0


#: Renders a triangle, forks a child that renders it again (multiprocessing's "fork" start method), and prints the
#: renderer's name and what the child said: "same pixels", its error, or that it still waited after 60 s.
FORKED_RENDER = """
import multiprocessing, sys
import numpy as np
from facekit_avatar.render import context, renderer

def draw():
    vertices = np.array([[-0.8, -0.8, 0.0], [0.8, -0.8, 0.0], [0.0, 0.8, 0.0]], np.float32)
    colours, projection = np.eye(3, dtype=np.float32), np.eye(4, dtype=np.float32)
    rgb, _ = renderer().render_colours(vertices, np.array([[0, 1, 2]]), colours, projection, 64)
    return rgb

def child(queue, here):
    try:
        queue.put("same pixels" if np.array_equal(draw(), here) else "other pixels")
    except Exception as error:
        queue.put(f"{type(error).__name__}: {error}")

if __name__ == "__main__":
    here = draw()
    print(context().info["GL_RENDERER"])
    fork = multiprocessing.get_context("fork")
    queue = fork.Queue()
    process = fork.Process(target=child, args=(queue, here))
    process.start()
    process.join(60)
    if process.is_alive():
        process.kill()
        print("the child's render still waited after 60 s")
    else:
        print(queue.get(timeout=30))
"""


@pytest.mark.skipif(not hasattr(os, "fork"), reason="fork is POSIX's")
def test_a_child_forked_after_the_parent_rendered_renders_too() -> None:
    """Before (helper-130): a child forked after its parent rendered (a "fork" process pool's worker) waited forever
    in its first render: llvmpipe, Mesa's software OpenGL, draws on threads made with the parent's first context,
    which a fork does not copy, and a context the child made itself shares them (it waited as well). The renderer now
    has llvmpipe draw on the calling thread (LP_NUM_THREADS=0 unless set), and the child renders the parent's pixels
    with the context it inherits. With LP_NUM_THREADS set above 0 by the user, the child's render is an error that
    says so instead of a wait without end."""
    import subprocess
    import sys

    try:
        from facekit_avatar.render import context

        context()
    except Exception as error:  # noqa: BLE001 - the message says what to install
        pytest.skip(f"no headless OpenGL here: {error}")
    env = {key: value for key, value in os.environ.items() if key != "LP_NUM_THREADS"}
    done = subprocess.run([sys.executable, "-c", FORKED_RENDER], capture_output=True, text=True, env=env, timeout=240)
    assert done.returncode == 0, done.stderr[-2000:]
    gl_renderer, said = done.stdout.splitlines()[-2:]
    assert said == "same pixels", (gl_renderer, said)
    if "llvmpipe" in gl_renderer:
        threaded = {**env, "LP_NUM_THREADS": "2"}
        done = subprocess.run(
            [sys.executable, "-c", FORKED_RENDER], capture_output=True, text=True, env=threaded, timeout=240
        )
        said = done.stdout.splitlines()[-1]
        assert said.startswith(
            "FacekitError: the avatar renderer's OpenGL context (Mesa llvmpipe, LP_NUM_THREADS=2)"
        ), said
        assert "'spawn'" in said


def _built_once_by_two_threads(cache: Any, ask: Any, owner: Any, inner: str, make: Any) -> None:
    """Two threads call ``ask()`` (a call of the loader ``cache``) at once, the second while the first's build is
    under way (``owner.inner``, the build's expensive inner load, replaced by one that counts its calls and returns
    ``make(...)``): the build runs once, under the loader's lock, and both threads get its value."""
    from tests.helpers import TwoThreadsAtOnce

    at_once = TwoThreadsAtOnce()

    def build(*args: Any, **kwargs: Any) -> Any:
        return at_once.building(lambda: make(*args, **kwargs))

    cache.cache_clear()
    with pytest.MonkeyPatch.context() as patched:
        patched.setattr(cache, "_lock", at_once.lock, raising=False)
        patched.setattr(owner, inner, build)
        try:
            got = at_once.run(ask)
        finally:
            cache.cache_clear()  # (the stand-ins go: what asks next builds the real one)
    assert at_once.calls == [True], (cache.__name__, at_once.calls)
    assert got[0] is got[1] is not None, cache.__name__


def test_threads_asking_at_once_build_each_avatar_loader_once(data_root: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Before (helper-130): the avatar's loaders (the Surrey model, the OpenGL context and renderer, eos's set-up)
    were functools.lru_cache functions, which do not lock the build: two threads asking first at once (facekit serve
    makes avatars on a thread of its own) each built one, twice the memory and seconds, two OpenGL contexts. Now the
    second waits for the first's value; the loaders still pickle by their name, and a child forked while another
    thread builds is not stuck on the loader's lock."""
    import pickle

    import eos
    import moderngl
    from facekit_avatar import eos_baseline, render
    from facekit_avatar import model as model_module

    import facekit.models
    from tests.helpers import forked_while_held

    class Context:  # a stand-in for moderngl's (context() asks which renderer it is)
        def __init__(self) -> None:
            self.info = {"GL_RENDERER": "a stand-in"}

        def __enter__(self) -> Any:
            return self

        def __exit__(self, *exc: Any) -> None:
            return None

    monkeypatch.setattr(facekit.models, "resolve_weights", lambda *args, **kwargs: Path("sfm_shape_3448.bin"))
    sfm_folder = str(data_root / "sfm")
    real_eos_load = eos.morphablemodel.load_model  # (eos's set-up goes on with the model it loads)
    loaders = [
        (model_module.load_model, lambda: model_module.load_model("sfm_shape_3448.bin"), model_module, "SurreyModel"),
        (render.context, render.context, moderngl, "create_standalone_context"),
        (render.renderer, render.renderer, render, "Renderer"),
        (eos_baseline._eos_setup, lambda: eos_baseline._eos_setup(sfm_folder), eos.morphablemodel, "load_model"),
    ]
    for cache, ask, owner, inner in loaders:
        make = {"load_model": real_eos_load, "create_standalone_context": lambda **_: Context()}.get(
            inner, lambda *_: object()
        )
        _built_once_by_two_threads(cache, ask, owner, inner, make)
        assert pickle.loads(pickle.dumps(cache)) is cache  # by its name, as lru_cache's wrapper pickles
        if hasattr(os, "fork"):
            assert forked_while_held(cache._lock, lambda cache=cache: cache.cache_clear() is None, timeout=30) == 0


def test_landmarks_the_model_cannot_fit_are_no_avatar(maker: Any, shipped_normalizer: Any, tmp_path: Path) -> None:
    """Before: mirrored or non-finite landmarks gave NaN vertices exported as an OBJ of 'nan' lines and a JSON with
    bare NaN, marked done; all 68 points in one place was a 'perfect' fit of scale 0. A good face in the same batch
    is not affected."""
    face = shipped_normalizer.normalize(real_face().image)
    good = face.landmarks.astype(np.float64)
    nan = good.copy()
    nan[10] = np.nan
    same = np.repeat(good[:1], 68, axis=0)
    batch = np.stack([good, nan, same])
    avatars = maker.build(np.repeat(face.image[None], 3, axis=0), batch)
    assert "fit_failed" not in avatars[0].record and np.isfinite(avatars[0].vertices).all()
    assert "not all finite" in avatars[1].record["fit_failed"] and "no extent" in avatars[2].record["fit_failed"]
    with pytest.raises(FacekitError, match="no avatar for this face"):
        maker.export(avatars[1], tmp_path, "bad")
    assert not list(tmp_path.iterdir())


def test_what_build_and_export_cannot_take_is_one_line(maker: Any, tmp_path: Path) -> None:
    """Before: an empty batch was a torch error, float images "data size mismatch", batches of two sizes an
    IndexError, and export(..., "") wrote hidden files named .obj and .glb."""
    from facekit.errors import FacekitError

    face = np.zeros((1, 112, 112, 3), np.uint8)
    points = np.asarray(real_face().ibug68, np.float32)[None] * 112 / real_face().image.shape[0]
    for images, landmarks, message in [
        (face[:0], points[:0], "at least one square face"),
        (face.astype(np.float32), points, "uint8 array"),
        (np.concatenate([face, face]), points, r"must be \(2, 68, 2\)"),
        (face, points[:, :5], r"must be \(1, 68, 2\)"),
    ]:
        with pytest.raises(FacekitError, match=message):
            maker.build(images, landmarks)
    # apply (the infer stage's and the API's way in) refuses the same, and a face its fit fails is NaN with a
    # reason (helper-65: NaN landmarks gave NaN vertices silently, all-zero ones a 'perfect' fit of scale 0).
    from facekit.types import DecoderOutput

    tensor = torch.full((1, 3, 112, 112), 0.5)
    for image, marks, message in [
        (tensor[:0], torch.from_numpy(points[:0]), "at least one square face"),
        (tensor * 255, torch.from_numpy(points), r"in \[0, 1\].*255"),
        (tensor.repeat(2, 1, 1, 1), torch.from_numpy(points), r"must be \(2, 68, 2\)"),
        (tensor, points, "as a \\(B, 68, 2\\) tensor, got ndarray"),
        (tensor[0], torch.from_numpy(points), r"\(B, 3, S, S\) tensor"),
    ]:
        with pytest.raises(FacekitError, match=message):
            maker.apply(DecoderOutput(image=image, landmarks=marks))
    bad = torch.from_numpy(np.concatenate([points, points * np.nan, points * 0]))
    results = maker.apply(DecoderOutput(image=tensor.repeat(3, 1, 1, 1), landmarks=bad))
    assert list(results["fit_failed"]) == ["", "its landmarks are not all finite numbers", results["fit_failed"][2]]
    assert "no extent" in results["fit_failed"][2]
    assert np.isfinite(results["vertices"][0]).all() and np.isnan(results["vertices"][1:]).all()
    assert np.isnan(results["scale"][1:]).all() and np.isfinite(results["scale"][0])
    (avatar,) = maker.build(np.full((1, 112, 112, 3), 128, np.uint8), points)
    # Landmarks as nested lists (json's, an array's .tolist()) are read as the array is (helper-116: they passed the
    # check, then failed in the colour sampling with "'list' object has no attribute 'mean'").
    grey = np.full((1, 112, 112, 3), 128, np.uint8)
    (listed,), (array,) = (maker.build(grey, given, yaws=()) for given in (points.tolist(), points.astype(np.float64)))
    assert np.array_equal(listed.vertices, array.vertices) and np.array_equal(listed.texture, array.texture)
    with pytest.raises(FacekitError, match="need a name"):
        maker.export(avatar, tmp_path, "")
    with pytest.raises(FacekitError, match=r"white space.*'api_face'"):
        maker.export(avatar, tmp_path, "api face")
    for name, plain in (("api#face", "'api_face'"), ("-face", "'_face'")):  # (what the command's names avoid too)
        with pytest.raises(FacekitError, match=f"mtllib and MTL's map_Kd.*{plain}"):
            maker.export(avatar, tmp_path, name)
    # A name with a folder in it (helper-116: its OBJ, written in sub/, named "sub/face.mtl" beside it: no material).
    with pytest.raises(FacekitError, match=r"'sub/face' is a path, not a name.*Path\(folder\) / 'sub', 'face'"):
        maker.export(avatar, tmp_path, "sub/face")
    assert list(tmp_path.iterdir()) == []
    with pytest.raises(FacekitError, match=r"leads outside .*\('\.\.' in the name\)"):  # not "a symbolic link?"
        maker.export(avatar, tmp_path / "inside" / "..", "face", root=tmp_path / "inside")
    written = maker.export(avatar, tmp_path, "..")  # a photo named ...jpg: its files are ...obj, ...glb
    assert (tmp_path / "...obj").is_file() and all(tmp_path in Path(p).parents for p in written)


def test_the_fit_is_the_same_at_any_frame_size(model: SurreyModel) -> None:
    """helper-82: the landmark noise (sigma, in px of a 112 px frame) scaled the wrong way at other sizes survived
    every test. The camera scales with the frame, so the same face in a 224 px frame fits to the same shape; with
    landmarks that say nothing (huge sigma) the prior alone decides: the mean face."""
    generator = torch.Generator().manual_seed(0)
    truth = torch.randn(2, model.components, generator=generator) * 0.7
    noise = torch.randn(2, 68, 2, generator=torch.Generator().manual_seed(1)) * 1.5
    points = synthetic_landmarks(model, truth) + noise
    at_112 = fit_shape(model, points.numpy(), 112)
    at_224 = fit_shape(model, (points * 2 + 0.5).numpy(), 224)
    assert torch.allclose(at_112.coefficients, at_224.coefficients, atol=1e-3)
    uninformed = fit_shape(model, points.numpy(), 112, sigma_px=1e4)
    assert uninformed.coefficients.abs().max() < 0.05


def test_the_exported_texture_is_upright(model: SurreyModel, tmp_path: Path) -> None:
    """The texture's row 0 is v = 0, OBJ (and trimesh) put v = 0 at the bottom: the export flips v (a mutant without the
    flip survived every test). Top half red, bottom half blue: the vertices at small v read red from the GLB, and the
    OBJ's own vt lines hold 1 - v."""
    import trimesh
    from facekit_avatar.app import Avatar, mesh_files

    texture = np.zeros((64, 64, 3), np.uint8)
    texture[:32] = (255, 0, 0)
    texture[32:] = (0, 0, 255)
    mean = model.mean.numpy() if hasattr(model.mean, "numpy") else np.asarray(model.mean)
    avatar = Avatar(mean, mean, np.full(mean.shape, 0.5, np.float32), texture, {})
    files = mesh_files(avatar, model, "x")
    (tmp_path / "x.glb").write_bytes(files["x.glb"])
    scene = trimesh.load(tmp_path / "x.glb")
    mesh = next(iter(scene.geometry.values())) if hasattr(scene, "geometry") else scene
    colours = mesh.visual.to_color().vertex_colors[:, :3]
    uv = np.asarray(model.uv)
    assert (colours[uv[:, 1] < 0.25] == (255, 0, 0)).all(axis=1).mean() > 0.95
    assert (colours[uv[:, 1] > 0.75] == (0, 0, 255)).all(axis=1).mean() > 0.95
    vt = np.array([line.split()[1:3] for line in files["x.obj"].decode().splitlines() if line.startswith("vt ")], float)
    np.testing.assert_allclose(vt[:, 1], 1.0 - uv[:, 1], atol=1e-5)


def test_the_avatar_command_without_the_surrey_model_names_its_sfm_option(tmp_path: Path) -> None:
    """Before: with an empty model store, `facekit avatar photo.jpg` said to place the file in the store or run
    `facekit models import`, and not that this command takes it as --sfm PATH."""
    from PIL import Image

    photo = tmp_path / "face.jpg"
    Image.fromarray(real_face().image).save(photo)
    result = run_cli("avatar", str(photo), "-o", str(tmp_path / "out"), env={"FACEKIT_HOME": str(tmp_path / "home")})
    assert result.returncode == 1, result.stdout + result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "sfm_shape_3448.bin" in lines[0] and lines[0].endswith("--sfm PATH"), lines


def test_the_avatar_commands_landmark_map_is_a_choice_of_the_apps_maps(tmp_path: Path) -> None:
    """Before: --landmarks was a plain string, so a typo was the app's own error (exit 1) where the README says an
    option value the command line refuses gets Typer's usage message with exit 2, as --face does."""
    from facekit_avatar.app import LANDMARK_MAPS
    from facekit_avatar.cli import LandmarkMapChoice

    assert {choice.value for choice in LandmarkMapChoice} == set(LANDMARK_MAPS)
    result = run_cli("avatar", str(tmp_path / "face.jpg"), "-o", str(tmp_path / "out"), "--landmarks", "nope")
    assert result.returncode == 2 and "--landmarks" in result.stderr and "ibug_to_sfm" in result.stderr, result.stderr
    assert not (tmp_path / "out").exists()


def glb_arrays(data: bytes) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    """A GLB's JSON and its one primitive's arrays (POSITION, NORMAL, TEXCOORD_0, indices as (T, 3)), read through
    the accessors as a viewer reads them (not through trimesh, which wrote them)."""
    length = int.from_bytes(data[12:16], "little")
    gltf = json.loads(data[20 : 20 + length])
    binary = data[20 + length + 8 :]
    kinds = {5126: np.float32, 5125: np.uint32, 5123: np.uint16}
    widths = {"SCALAR": 1, "VEC2": 2, "VEC3": 3}

    def read(index: int) -> np.ndarray:
        accessor = gltf["accessors"][index]
        view = gltf["bufferViews"][accessor["bufferView"]]
        start = view.get("byteOffset", 0) + accessor.get("byteOffset", 0)
        width = widths[accessor["type"]]
        values = np.frombuffer(binary, kinds[accessor["componentType"]], accessor["count"] * width, start)
        return values.reshape(accessor["count"], width)

    (primitive,) = gltf["meshes"][0]["primitives"]
    arrays = {name: read(index) for name, index in primitive["attributes"].items()}
    arrays["indices"] = read(primitive["indices"]).reshape(-1, 3)
    return gltf, arrays


def test_the_exported_mesh_is_in_gltfs_frame_in_metres_and_the_obj_is_the_same_mesh(
    model: SurreyModel, tmp_path: Path
) -> None:
    """What README says of the files: metres at the model's size, y up, the face looking +z (glTF's front), the person's
    left eye at +x (right-handed, not mirrored), triangles wound counter-clockwise seen from outside with the normals
    pointing out of the face, and the OBJ the GLB's mesh (same vertices, triangles and UVs, v flipped). Each of
    negating z, mirroring x, reversing the triangles or dropping the OBJ's v flip fails here."""
    import trimesh
    from facekit_avatar.app import Avatar, mesh_files

    coefficients = torch.randn(1, model.components, generator=torch.Generator().manual_seed(3)) * 0.7
    shape = model.shape(coefficients)[0].numpy()  # mm, model space, as the fit gives it
    texture = np.full((64, 64, 3), 180, np.uint8)
    files = mesh_files(Avatar(shape, shape, np.full(shape.shape, 0.5, np.float32), texture, {}), model, "x")
    gltf, glb = glb_arrays(files["x.glb"])

    np.testing.assert_allclose(glb["POSITION"], shape / 1000.0, atol=1e-6)
    position = gltf["accessors"][gltf["meshes"][0]["primitives"][0]["attributes"]["POSITION"]]
    np.testing.assert_allclose(position["min"], glb["POSITION"].min(0), atol=1e-7)  # glTF requires both, exact
    np.testing.assert_allclose(position["max"], glb["POSITION"].max(0), atol=1e-7)
    np.testing.assert_allclose(np.linalg.norm(glb["NORMAL"], axis=1), 1.0, atol=1e-5)
    np.testing.assert_allclose(glb["TEXCOORD_0"], model.uv, atol=1e-6)  # glTF's v = 0 is the image's top row, as ours
    assert (glb["TEXCOORD_0"] >= 0).all() and (glb["TEXCOORD_0"] <= 1).all()
    np.testing.assert_array_equal(glb["indices"], model.triangles)

    vertex = dict(zip(model.landmarks.points.tolist(), model.landmarks.vertices.tolist(), strict=True))
    points = glb["POSITION"].astype(np.float64)
    nose_tip, chin, right_eye, left_eye, brow_top = (points[vertex[i]] for i in (30, 8, 36, 45, 27))  # iBUG 31, 9, ...
    assert brow_top[1] - chin[1] > 0.08  # y up, metres: nose bridge 8+ cm above the chin
    assert left_eye[0] > 0.03 and right_eye[0] < -0.03  # the person's left eye (iBUG 46) at +x
    assert glb["NORMAL"][vertex[30], 2] > 0.9 and nose_tip[2] > np.percentile(points[:, 2], 99)  # looks +z
    mesh = trimesh.Trimesh(points, glb["indices"], process=False)
    assert mesh.is_winding_consistent
    agree = np.einsum("ij,ij->i", mesh.face_normals, glb["NORMAL"][glb["indices"]].mean(1))
    assert (agree > 0).mean() > 0.999  # the stored normals are the winding's (one sliver at the jaw's back folds)
    behind = points.mean(0) - (0.0, 0.0, 0.05)  # the open mask closed through a point behind it: outward = positive
    assert trimesh.Trimesh(points - behind, glb["indices"], process=False).volume > 0

    (tmp_path / "x.obj").write_bytes(files["x.obj"])
    (tmp_path / "x.mtl").write_bytes(files["x.mtl"])
    (tmp_path / "x.png").write_bytes(files["x.png"])
    obj = trimesh.load(tmp_path / "x.obj", process=False, force="mesh")
    np.testing.assert_allclose(obj.vertices, points, atol=1e-6)
    np.testing.assert_array_equal(obj.faces, glb["indices"])
    uv = obj.visual.uv
    np.testing.assert_allclose(np.stack([uv[:, 0], 1.0 - uv[:, 1]], axis=1), glb["TEXCOORD_0"], atol=1e-6)


def test_the_glb_passes_the_khronos_gltf_validator(model: SurreyModel, tmp_path: Path) -> None:
    """The Khronos glTF-Validator (npm's gltf-validator), independent of trimesh, which writes the GLB: no error,
    warning, info or hint (trimesh's GLB had four hints, BUFFER_VIEW_TARGET_MISSING, before :func:`gltf_finished`
    set the bufferViews' targets). Runs where
    `node` finds the package (NODE_PATH=DIR/node_modules after `npm install --prefix DIR gltf-validator`); this test
    installs nothing."""
    from facekit_avatar.app import Avatar, mesh_files

    node = shutil.which("node")
    if node is None:
        pytest.skip("node not found: the glTF-Validator check needs Node.js and npm's gltf-validator")
    found = subprocess.run(
        [node, "-e", "require.resolve('gltf-validator')"], capture_output=True, check=False, timeout=60
    )
    if found.returncode != 0:
        pytest.skip(
            "gltf-validator not found by node: `npm install --prefix DIR gltf-validator`, NODE_PATH=DIR/node_modules"
        )
    coefficients = torch.randn(1, model.components, generator=torch.Generator().manual_seed(4)) * 0.7
    shape = model.shape(coefficients)[0].numpy()
    texture = np.random.default_rng(0).integers(0, 256, (512, 512, 3), dtype=np.uint8)
    glb = tmp_path / "face.glb"
    glb.write_bytes(
        mesh_files(Avatar(shape, shape, np.zeros(shape.shape, np.float32), texture, {}), model, "face")["face.glb"]
    )
    script = (
        "const v = require('gltf-validator');"
        "const bytes = new Uint8Array(require('fs').readFileSync(process.argv[1]));"
        "v.validateBytes(bytes, {maxIssues: 0}).then(r => console.log(JSON.stringify(r.issues)),"
        " e => { console.error(String(e)); process.exit(1); });"
    )
    result = subprocess.run([node, "-e", script, str(glb)], capture_output=True, text=True, check=False, timeout=120)
    assert result.returncode == 0, result.stderr
    issues = json.loads(result.stdout)
    found_issues = [(m["severity"], m["code"], m.get("pointer"), m["message"]) for m in issues["messages"]]
    assert (issues["numErrors"], issues["numWarnings"], issues["numInfos"], issues["numHints"]) == (0, 0, 0, 0), (
        found_issues
    )


def test_the_glb_is_a_double_sided_mask_with_a_clamped_texture_and_its_buffer_views_typed(model: SurreyModel) -> None:
    """Read from the GLB's JSON as a viewer reads it: the material is double-sided (before, the open mask vanished
    when turned to be seen from behind) and named as the file (its mesh and node too), the texture clamps at its
    edges with linear filters (before, no sampler: glTF's default REPEAT blended the texture's opposite edge into the
    mask's rim), and each bufferView a primitive reads says what it holds (before, none did: the validator's
    BUFFER_VIEW_TARGET_MISSING hints, checked by the validator test where Node.js has it; this test runs
    everywhere)."""
    from facekit_avatar.app import Avatar, mesh_files

    shape = model.shape(torch.zeros(1, model.components))[0].numpy()
    texture = np.full((64, 64, 3), 180, np.uint8)
    files = mesh_files(Avatar(shape, shape, np.zeros(shape.shape, np.float32), texture, {}), model, "Zoë-face")
    gltf, _ = glb_arrays(files["Zoë-face.glb"])

    (material,) = gltf["materials"]
    assert material["doubleSided"] is True and material["name"] == "Zoë-face"
    assert [gltf["meshes"][0]["name"], gltf["nodes"][0]["name"]] == ["Zoë-face", "Zoë-face"]  # not "geometry_0"
    (texture_entry,) = gltf["textures"]
    sampler = gltf["samplers"][texture_entry["sampler"]]
    assert sampler == {"magFilter": 9729, "minFilter": 9987, "wrapS": 33071, "wrapT": 33071}  # LINEAR, CLAMP_TO_EDGE
    (primitive,) = gltf["meshes"][0]["primitives"]
    targets = {
        key: gltf["bufferViews"][gltf["accessors"][index]["bufferView"]].get("target")
        for key, index in [*primitive["attributes"].items(), ("indices", primitive["indices"])]
    }
    assert targets == {"POSITION": 34962, "NORMAL": 34962, "TEXCOORD_0": 34962, "indices": 34963}
    (image,) = gltf["images"]
    assert "target" not in gltf["bufferViews"][image["bufferView"]]  # an image's view is neither
