"""The ``avatar`` app: normalized face -> fitted Surrey-model mesh with a blended texture, exported and rendered.

maker = facekit.load_component("app", "avatar", sfm="sfm_shape_3448.bin")
result = maker.apply(decoder_output)          # batched: coefficients, vertices, colours, reprojection errors
avatars = maker.build(images, landmarks)      # Avatar objects with texture map and renders
maker.export(avatars[0], folder, "name")      # NAME.obj/.mtl/.png, NAME.glb, renders, NAME.json
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from facekit.errors import FacekitError
from facekit_avatar.cards import LICENCE, YAWS
from facekit_avatar.colour import ColourModel, sample_vertices
from facekit_avatar.fit import Camera, ShapeFit, fit_shape, place, yaw_rotation
from facekit_avatar.model import SurreyModel, data_file, load_model, read_landmark_map

#: The fit's landmark -> vertex maps (AvatarParams.landmarks): eos's, and eos's with the vote's disputed points.
LANDMARK_MAPS = {"ibug_to_sfm": "ibug_to_sfm.txt", "voted": "ibug_to_sfm_voted.txt"}


def yaw_name(yaw: float) -> str:
    return f"yaw{yaw:+.0f}" if yaw else "yaw0"


@dataclass
class Avatar:
    """One fitted, textured avatar. ``vertices`` (N, 3) in mm, model space (the fitted shape, before placement);
    ``camera_vertices`` (N, 3) where the fit placed them in front of the camera; ``colours`` (N, 3) in [0, 1];
    ``texture`` (T, T, 3) uint8 UV map (row 0 = v 0); ``renders`` by yaw (S, S, 3) uint8."""

    vertices: np.ndarray
    camera_vertices: np.ndarray
    colours: np.ndarray
    texture: np.ndarray
    renders: dict[float, np.ndarray]
    record: dict[str, Any] = field(default_factory=dict)


def check_faces(images: Any, landmarks: Any) -> None:
    """Refuse what :meth:`AvatarMaker.build` cannot read, in one line (before: a torch error on an empty batch, "data
    size mismatch" for float images, an IndexError for batches of two sizes)."""
    if not isinstance(images, np.ndarray) or images.dtype != np.uint8 or images.ndim != 4 or images.shape[3] != 3:
        got = f"{images.dtype} {images.shape}" if isinstance(images, np.ndarray) else type(images).__name__
        raise FacekitError(f"avatar: images must be a (B, S, S, 3) uint8 array of normalized faces, got {got}")
    if images.shape[0] == 0 or images.shape[1] != images.shape[2]:
        raise FacekitError(f"avatar: images must hold at least one square face, got shape {images.shape}")
    points = np.asarray(landmarks)
    if points.shape != (images.shape[0], 68, 2):  # a face with points that are not finite is that face's fit_failed
        raise FacekitError(
            f"avatar: landmarks must be ({images.shape[0]}, 68, 2) iBUG points, one set per image, got {points.shape}"
        )


class AvatarMaker:
    """Fits, textures, renders and exports avatars (see the module docstring).

    It runs on the CPU and has no device setting: the batched shape fit is small (68 points and 63 components a
    face, a few ms per face in a batch) and its results go straight to numpy, the texture and OpenGL. A normalizer on
    a GPU (``facekit avatar --device cuda``) hands it its faces as numpy arrays; :meth:`apply` takes decoder outputs
    on any device."""

    def __init__(
        self,
        sfm: str | os.PathLike[str] | None = None,
        colour_model: str | os.PathLike[str] | None = None,
        texture_size: int = 512,
        colour_prior: float = 0.03,
        sigma_px: float = 1.5,
        steps: int = 40,
        landmarks: str = "voted",
    ) -> None:
        from facekit_avatar import AvatarParams

        # Built directly (a test, a shared model), as load_component builds it: steps 0, a texture of 10 px or a
        # negative landmark noise gave NaN fits or a failed render far from the cause (helper-108). The checked
        # values are the ones kept, as load_component's are: "512" or 40.0 stay what they were and failed later.
        # A path object is a file name as a recipe's string is (AvatarParams holds strings).
        files = {"sfm": sfm, "colour_model": colour_model}
        files = {key: os.fspath(value) if isinstance(value, os.PathLike) else value for key, value in files.items()}
        settings = {"texture_size": texture_size, "colour_prior": colour_prior, "sigma_px": sigma_px, "steps": steps}
        params = AvatarParams.checked({**files, "landmarks": landmarks, **settings}, "avatar")
        self.model: SurreyModel = load_model(params.sfm)
        self.landmarks = params.landmarks
        self.landmark_map = read_landmark_map(data_file(LANDMARK_MAPS[params.landmarks]))
        self.colour_model = ColourModel.load(params.colour_model)
        mean, basis = self.colour_model.mean, self.colour_model.basis
        if mean.shape != (self.model.vertices, 3) or basis.ndim != 3 or basis.shape[:2] != mean.shape:
            raise FacekitError(  # a colour model of another mesh failed later, inside the blend (helper-66)
                f"colour_model: made for another mesh (mean {mean.shape}, basis {basis.shape}); this shape model has "
                f"{self.model.vertices} vertices: learn one for it (python -m facekit_avatar.learn)"
            )
        self.texture_size = params.texture_size
        self.colour_prior = params.colour_prior
        self.sigma_px = params.sigma_px
        self.steps = params.steps

    # ------------------------------------------------------------------------------------------------ batched core
    def fit(self, landmarks: np.ndarray, size: int) -> ShapeFit:
        points = np.asarray(landmarks, np.float32)
        return fit_shape(self.model, points, size, self.sigma_px, self.steps, landmark_map=self.landmark_map)

    def apply(self, faces: Any) -> dict[str, Any]:
        """``faces`` a DecoderOutput (images (B, 3, S, S) in [0, 1], landmarks (B, 68, 2)) -> shape coefficients
        (B, K), scale (B,), translation (B, 3), vertices (B, N, 3) in camera space, colours (B, N, 3), the RMS
        reprojection error (B,) in px, and ``fit_failed`` (B,): why a face's fit is no avatar ("" when it is one;
        such a face's numbers are NaN, null in the infer stage's apps.json). What :meth:`build` refuses is refused
        here too, in one line."""
        from facekit.images import to_uint8_rgb

        image, points = faces.image, faces.landmarks
        if not isinstance(image, torch.Tensor) or image.ndim != 4 or image.shape[1] != 3:
            got = tuple(image.shape) if hasattr(image, "shape") else type(image).__name__
            raise FacekitError(f"avatar: apply takes images as a (B, 3, S, S) tensor in [0, 1], got {got}")
        if not isinstance(points, torch.Tensor):
            got = "none" if points is None else type(points).__name__
            raise FacekitError(f"avatar: apply needs the decoder's 68 iBUG landmarks as a (B, 68, 2) tensor, got {got}")
        if image.numel() and (float(image.min()) < -1e-3 or float(image.max()) > 1 + 1e-3):
            raise FacekitError(
                f"avatar: apply takes images in [0, 1], these run from {float(image.min()):g} to "
                f"{float(image.max()):g} (0..255? divide by 255)"
            )
        images = np.stack(to_uint8_rgb(image)) if image.shape[0] else np.zeros((0, *image.shape[2:], 3), np.uint8)
        landmarks = points.detach().float().cpu().numpy()
        check_faces(images, landmarks)
        fit = self.fit(landmarks, images.shape[1])
        vertices = fit.vertices(self.model)
        samples = sample_vertices(self.model, fit, images, landmarks, images.shape[1], vertices)
        colours, _ = self.colour_model.blend(samples, self.colour_prior)
        results = {
            "coefficients": fit.coefficients.numpy(),
            "scale": fit.scale.numpy(),
            "translation": fit.translation.numpy(),
            "vertices": vertices.numpy(),
            "colours": colours,
            "confidence": samples.confidence,
            "reprojection_px": fit.reprojection_px.numpy(),
        }
        problems = fit_problems(fit, landmarks)
        failed = np.array([problem is not None for problem in problems])
        results = {
            key: np.where(failed.reshape(-1, *[1] * (np.ndim(v) - 1)), np.nan, v).astype(np.asarray(v).dtype)
            for key, v in results.items()
        }
        results["fit_failed"] = np.array([problem or "" for problem in problems])
        return results

    def build(
        self,
        images: np.ndarray,
        landmarks: np.ndarray,
        yaws: tuple[float, ...] = YAWS,
        blend: bool = True,
        on_each: Callable[[int], None] | None = None,
    ) -> list[Avatar]:
        """``images`` (B, S, S, 3) uint8 normalized faces and their (B, 68, 2) landmarks -> textured avatars with
        renders at ``yaws`` (degrees) through the fit's camera. ``blend=False`` textures every texel from the image
        (no colour model): the grazing-angle smears the blend removes, for comparison. ``on_each`` is told each
        face's index as its texture and renders are done (most of the time, after one fit of them all)."""
        from facekit_avatar.render import renderer

        check_faces(images, landmarks)
        landmarks = np.asarray(landmarks)  # (nested lists passed the check, then failed in the colour sampling)
        began = time.perf_counter()
        size = images.shape[1]
        fit = self.fit(landmarks, size)
        shape = self.model.shape(fit.coefficients)  # (B, N, 3) model space, placed once for the camera
        placed = place(shape, fit.scale, fit.translation)
        samples = sample_vertices(self.model, fit, images, landmarks, size, placed)
        colours, recon = self.colour_model.blend(samples, self.colour_prior)
        camera_vertices, model_vertices = placed.numpy(), shape.numpy()
        draw = renderer()
        avatars = []
        for b in range(images.shape[0]):
            texture = draw.bake(
                self.model.uv,
                self.model.triangles,
                images[b],
                samples.image_xy[b],
                samples.confidence[b] if blend else np.ones_like(samples.confidence[b]),
                recon[b].astype(np.float32),
                self.texture_size,
            )
            renders = {yaw: render_avatar(camera_vertices[b], self.model, texture, size, yaw) for yaw in yaws}
            if on_each is not None:
                on_each(b)
            avatars.append(
                Avatar(
                    vertices=model_vertices[b],
                    camera_vertices=camera_vertices[b],
                    colours=colours[b],
                    texture=texture,
                    renders=renders,
                    record={
                        "coefficients": [round(float(c), 5) for c in fit.coefficients[b]],
                        "pose": {
                            "scale": float(fit.scale[b]),
                            "translation_mm": [float(t) for t in fit.translation[b]],
                            "camera": {"focal_px": Camera(size).focal, "image_size": size},
                        },
                        "reprojection_px": {
                            "rms": float(fit.reprojection_px[b]),
                            "mean": float(fit.per_point_px[b, fit.fitted_points].mean()),
                            "max": float(fit.per_point_px[b, fit.fitted_points].max()),
                            "interocular_px": interocular(landmarks[b]),
                        },
                        "landmark_map": LANDMARK_MAPS[self.landmarks],
                        "licence": LICENCE,
                    },
                )
            )
        for avatar, problem in zip(avatars, fit_problems(fit, landmarks), strict=True):
            if problem is not None:  # its numbers are not a fit: no files are written from it (export refuses)
                avatar.record["fit_failed"] = problem
        seconds = time.perf_counter() - began
        for avatar in avatars:
            avatar.record["fit_seconds"] = fit.seconds / len(avatars)
            avatar.record["seconds"] = seconds / len(avatars)
        return avatars

    # ------------------------------------------------------------------------------------------------ files
    def export(
        self,
        avatar: Avatar,
        folder: str | Path,
        name: str,
        root: str | Path | None = None,
        extra: Sequence[tuple[Path, bytes]] = (),
    ) -> list[Path]:
        """NAME.obj + NAME.mtl + NAME.png (UV texture), NAME.glb, NAME_yaw*.png renders and NAME.json, atomically,
        into ``folder``, which must lie inside ``root`` (default: ``folder`` itself) without leaving it through a
        link; ``extra`` (path, bytes) files are written with them (e.g. the CLI's contact sheet). NAME.json is written
        first with ``"complete": false`` and last with ``true``: a run killed in between leaves outputs a rerun knows
        as its own and redoes. A file that cannot be written is a FacekitError."""
        from facekit.batch import plain_name, png_bytes, with_record, write_files

        if avatar.record.get("fit_failed"):
            raise FacekitError(f"no avatar for this face: {avatar.record['fit_failed']}")
        if not name or "\0" in name or name.endswith("/"):  # ("..": a photo named ...jpg, whose files are ...obj)
            raise FacekitError(f"export: the avatar's files need a name (NAME.obj, NAME.glb, ...), got {name!r}")
        if Path(name).name != name:  # (before: written into the subfolder, where its OBJ's mtllib and the MTL's
            # map_Kd named "sub/face.mtl" and "sub/face.png" beside it, files a reader does not find)
            parent, leaf = Path(name).parent.as_posix(), Path(name).name
            raise FacekitError(
                f"export: {name!r} is a path, not a name: the OBJ names its .mtl and texture by NAME, beside it; give "
                f"the folder as folder (export(avatar, Path(folder) / {parent!r}, {leaf!r}))"
            )
        if plain_name(name) != name:  # the rule the CLI's output names follow (facekit.batch.plain_name)
            raise FacekitError(
                f"export: {name!r} has characters that the OBJ's mtllib and MTL's map_Kd lines cannot name a file "
                f"with (white space, '#', '\\', control characters, a leading '-': readers split or cut the name "
                f"there): use e.g. {plain_name(name)!r}"
            )

        folder = Path(folder)
        files = [(folder / file, data) for file, data in mesh_files(avatar, self.model, name).items()]
        files += [(folder / f"{name}_{yaw_name(yaw)}.png", png_bytes(image)) for yaw, image in avatar.renders.items()]
        files += list(extra)
        path = folder / f"{name}.json"
        record = {**avatar.record, "files": [p.name for p, _ in files] + [path.name], "units": "metres"}
        failed = write_files(with_record(path, record, files, indent=2), Path(root) if root is not None else folder)
        if failed:
            raise FacekitError(failed)
        return [path for path, _ in files] + [path]


def interocular(landmarks: np.ndarray) -> float:
    """Distance between the eye centres (mean of iBUG points 37-42 and 43-48)."""
    return float(np.linalg.norm(landmarks[36:42].mean(0) - landmarks[42:48].mean(0)))


def render_avatar(
    camera_vertices: np.ndarray, model: SurreyModel, texture: np.ndarray, size: int, yaw: float
) -> np.ndarray:
    """The textured mesh turned by ``yaw`` degrees about the vertical axis through its centre, seen by the fit's
    camera: (size, size, 3) uint8 on the plain mid-grey of the training frame."""
    from facekit_avatar.render import renderer

    points = torch.from_numpy(np.ascontiguousarray(camera_vertices, np.float32))
    centre = points.mean(0)
    turned = (points - centre) @ yaw_rotation(yaw).T + centre
    return renderer().render_textured(
        turned.numpy(), model.triangles, model.uv, texture, Camera(size).projection_matrix(), size
    )


def fit_problems(fit: Any, landmarks: np.ndarray) -> list[str | None]:
    """Per face, why its fit is no avatar (None: it is one): landmarks that are not finite or have no extent (all in
    one place), or a fit whose scale, coefficients, pose or error are not finite numbers (a start the weak-perspective
    solution could not give: mirrored or scrambled points). Before, such a face was exported with NaN vertices and
    marked done, or as a 'perfect' fit of scale 0."""
    points = np.asarray(landmarks, np.float64)
    problems: list[str | None] = []
    for b in range(points.shape[0]):
        numbers = [fit.coefficients[b], fit.scale[b : b + 1], fit.translation[b], fit.reprojection_px[b : b + 1]]
        if not np.isfinite(points[b]).all():
            problems.append("its landmarks are not all finite numbers")
        elif float(np.ptp(points[b], axis=0).min()) < 1.0:
            problems.append("its landmarks have no extent (all in one place)")
        elif not all(bool(torch.isfinite(n).all()) for n in numbers) or float(fit.scale[b]) <= 0:
            problems.append("the model could not be fitted to its landmarks (mirrored or out of order?)")
        else:
            problems.append(None)
    return problems


def trimesh_of(avatar: Avatar, model: SurreyModel, name: str) -> Any:
    """The avatar as a textured trimesh in metres (model space: x left, y up, z out of the face)."""
    import trimesh
    from PIL import Image
    from trimesh.visual.material import SimpleMaterial

    material = SimpleMaterial(
        image=Image.fromarray(avatar.texture),
        diffuse=(255, 255, 255, 255),
        ambient=(255, 255, 255, 255),
        specular=(0, 0, 0, 255),
        name=name,
    )
    uv = np.stack([model.uv[:, 0], 1.0 - model.uv[:, 1]], axis=1)  # trimesh/OBJ: v up; our texture: row 0 = v 0
    visual = trimesh.visual.TextureVisuals(uv=uv, material=material)
    return trimesh.Trimesh(avatar.vertices / 1000.0, model.triangles, visual=visual, process=False)


def mesh_files(avatar: Avatar, model: SurreyModel, name: str) -> dict[str, bytes]:
    """{file name: bytes} for NAME.obj, NAME.mtl, NAME.png and NAME.glb (written by trimesh)."""
    from PIL import Image
    from trimesh.exchange.gltf import export_glb
    from trimesh.exchange.obj import export_obj
    from trimesh.visual.material import PBRMaterial

    # trimesh writes the name into the OBJ and MTL as text and drops the material, silently, for a name that is not
    # UTF-8 (a file system's Latin-1 'caf\xe9'): it writes a stand-in, replaced by the name's own bytes afterwards.
    stand_in = "facekit-avatar-name"
    mesh = trimesh_of(avatar, model, stand_in)
    # Normals, as in the GLB: without them Blender and three.js draw the OBJ flat-shaded (helper-65).
    text, extra = export_obj(
        mesh, include_normals=True, include_texture=True, mtl_name=f"{stand_in}.mtl", return_texture=True
    )
    raw = os.fsencode(name)

    def named(data: bytes) -> bytes:
        return data.replace(stand_in.encode(), raw)

    files = {f"{name}.obj": named(text.encode())}
    for key, value in extra.items():
        # (trimesh ends the MTL without a newline: a text file's last line ends with one, as the OBJ's does)
        data = named(bytes(value)).rstrip(b"\n") + b"\n" if key.endswith(".mtl") else bytes(value)
        files[key.replace(stand_in, name)] = data
    if not {f"{name}.mtl", f"{name}.png"} <= files.keys():
        raise FacekitError(f"the OBJ export left out its material or texture ({', '.join(sorted(files))})")
    # glTF's metallicFactor defaults to 1 (bare metal: a dark face in three.js, Blender, model-viewer) and a mesh
    # without normals is drawn flat-shaded: skin is a rough dielectric, and the normals go in.
    # The mesh is an open mask: single-sided, it vanished when turned to be seen from behind (doubleSided).
    glb = mesh.copy()
    gltf_name = name.encode("utf-8", "backslashreplace").decode()  # glTF is UTF-8 JSON
    glb.visual.material = PBRMaterial(
        baseColorTexture=Image.fromarray(avatar.texture),
        metallicFactor=0.0,
        roughnessFactor=1.0,
        doubleSided=True,
        name=gltf_name,
    )
    scene = glb.scene()
    scene.metadata["licence"] = LICENCE  # trimesh writes scene metadata as the glTF scene's extras
    files[f"{name}.glb"] = export_glb(
        scene, include_normals=True, tree_postprocessor=lambda tree: gltf_finished(tree, gltf_name)
    )
    return files


#: The texture's sampler: clamped at the edges (glTF's default, REPEAT, blends the opposite edge of the texture into
#: the mask's rim wherever a UV lies on it) with linear filters (trilinear when drawn small).
GLTF_SAMPLER = {"magFilter": 9729, "minFilter": 9987, "wrapS": 33071, "wrapT": 33071}

#: bufferView.target of a primitive's vertex attributes (ARRAY_BUFFER) and its indices (ELEMENT_ARRAY_BUFFER).
GLTF_VERTEX_TARGET, GLTF_INDEX_TARGET = 34962, 34963


def gltf_finished(tree: dict[str, Any], name: str) -> None:
    """What trimesh leaves out of the glTF ``tree`` (in place): each mesh's bufferViews say whether they hold vertex
    attributes or indices (the Khronos validator's hint BUFFER_VIEW_TARGET_MISSING; a loader binds them so), every
    texture uses :data:`GLTF_SAMPLER`, and the mesh and its node are called ``name``, as the material is (trimesh's
    "geometry_0" is what an editor lists for every avatar imported)."""
    views = tree.get("bufferViews", [])
    for entry in [*tree.get("meshes", []), *tree.get("nodes", [])]:
        entry["name"] = name
    for mesh in tree.get("meshes", []):
        for primitive in mesh["primitives"]:
            used = [(index, GLTF_VERTEX_TARGET) for index in primitive["attributes"].values()]
            used += [(primitive["indices"], GLTF_INDEX_TARGET)] if "indices" in primitive else []
            for accessor, target in used:
                views[tree["accessors"][accessor]["bufferView"]]["target"] = target
    if tree.get("textures"):
        tree["samplers"] = [dict(GLTF_SAMPLER)]
        for texture in tree["textures"]:
            texture["sampler"] = 0
