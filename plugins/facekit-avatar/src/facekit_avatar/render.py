"""Headless OpenGL rendering with moderngl: textured avatar renders, the UV texture bake, and vertex-coloured renders
with depth (for the automatic correspondence).

Why moderngl: a maintained, pip-installable binding (wheels for this Python) that opens a standalone context through
EGL, which Mesa provides on a machine without a GPU (llvmpipe) and the NVIDIA driver on a GPU node; no window, no X
server, no OSMesa build (pyrender's headless path) and no browser. One context per process, made on first use; a
forked child renders with the one it inherits (see :data:`LLVMPIPE_THREADS`).
"""

from __future__ import annotations

import os
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import numpy as np

from facekit.errors import FacekitError
from facekit_avatar.cache import locked_cache

_MESH_VS = """
#version 330
uniform mat4 projection;
in vec3 position;
in vec2 uv;
out vec2 v_uv;
void main() { v_uv = uv; gl_Position = projection * vec4(position, 1.0); }
"""
_MESH_FS = """
#version 330
uniform sampler2D texture_map;
in vec2 v_uv;
out vec4 colour;
void main() { colour = vec4(texture(texture_map, v_uv).rgb, 1.0); }
"""
_COLOUR_VS = """
#version 330
uniform mat4 projection;
in vec3 position;
in vec3 rgb;
out vec3 v_rgb;
void main() { v_rgb = rgb; gl_Position = projection * vec4(position, 1.0); }
"""
_COLOUR_FS = """
#version 330
in vec3 v_rgb;
out vec4 colour;
void main() { colour = vec4(v_rgb, 1.0); }
"""
# The bake draws the mesh in UV space; each texel looks up the photo where its surface point projects, and mixes it
# with the colour model's reconstruction by the interpolated confidence.
_BAKE_VS = """
#version 330
in vec2 uv;
in vec2 image_xy;
in float weight;
in vec3 fallback;
out vec2 v_xy;
out float v_weight;
out vec3 v_fallback;
void main() {
    v_xy = image_xy; v_weight = weight; v_fallback = fallback;
    gl_Position = vec4(uv * 2.0 - 1.0, 0.0, 1.0);
}
"""
_BAKE_FS = """
#version 330
uniform sampler2D image;
in vec2 v_xy;
in float v_weight;
in vec3 v_fallback;
out vec4 colour;
void main() { colour = vec4(mix(v_fallback, texture(image, v_xy).rgb, v_weight), 1.0); }
"""


#: llvmpipe (Mesa's software OpenGL: the renderer on a machine without a GPU) draws on threads of its own, made with
#: the process's first context and shared by every later one. A child forked after the parent rendered has none of
#: them (fork copies only the forking thread), and its first render waited for them forever (in the framebuffer's
#: read); a new context made in the child waited too (it shares them). With this variable 0 llvmpipe draws on the
#: thread that asks, and a forked child renders with its inherited context as the parent does. :func:`context` sets it
#: when it is not set; a value of your own (more threads) is kept, and then a forked child's render is an error.
LLVMPIPE_THREADS = "LP_NUM_THREADS"

#: Set when the process's context was made by llvmpipe with drawing threads (LP_NUM_THREADS set above 0): the value.
_THREADED: str | None = None
#: Set in a forked child whose inherited context is such a one: why it cannot render.
_FORKED_FROM_THREADS: str | None = None


@locked_cache(maxsize=1)
def context() -> Any:
    """The process's moderngl context (EGL, headless); a clear error when no OpenGL 3.3 driver is found."""
    import moderngl

    global _THREADED
    os.environ.setdefault(LLVMPIPE_THREADS, "0")  # (read by Mesa when the first context is made)
    errors = []
    for backend in ("egl", None):
        try:
            ctx = (
                moderngl.create_standalone_context(backend=backend)  # type: ignore[arg-type]  # stubs: a dict
                if backend
                else moderngl.create_context(standalone=True)
            )
        except Exception as error:  # noqa: BLE001 - moderngl raises plain Exceptions for a missing library or driver
            errors.append(f"{backend or 'default'}: {error}")
            continue
        threads = os.environ.get(LLVMPIPE_THREADS, "")
        with _CONTEXT_TURN, ctx:
            software = "llvmpipe" in str(ctx.info.get("GL_RENDERER", ""))
        _THREADED = threads if software and _draws_on_threads(threads) else None
        return ctx
    raise FacekitError(
        "no headless OpenGL 3.3 context for the avatar renders ("
        + "; ".join(errors)
        + "). On Debian/Ubuntu: apt-get install libegl1 libgl1-mesa-dri"
    )


#: Held while a thread has the process's context current (:meth:`Renderer._current`; re-entrant: bake holds it
#: through its coverage render). One for the context, which every Renderer shares.
_CONTEXT_TURN = threading.RLock()


def _draws_on_threads(value: str) -> bool:
    """Whether llvmpipe, given LP_NUM_THREADS ``value``, draws on threads of its own (Mesa reads a number; anything
    else, or nothing, is its default: one thread a core)."""
    try:
        return int(value.strip()) != 0
    except ValueError:
        return True


def _after_fork_in_child() -> None:
    """A forked child gets a new turn lock: one held at the fork by another of the parent's threads (rendering)
    would stay held in the child, where that thread does not exist, and the child's first render waited forever.
    One held by the forking thread itself is kept, which that thread releases as it would have in the parent.
    A child of a process whose context draws on llvmpipe's threads notes that it cannot render (see
    :data:`LLVMPIPE_THREADS`)."""
    global _CONTEXT_TURN, _FORKED_FROM_THREADS
    if not _CONTEXT_TURN._is_owned():  # type: ignore[attr-defined]  # (held by no thread, or by one the child lacks)
        _CONTEXT_TURN = threading.RLock()
    if _THREADED is not None:
        _FORKED_FROM_THREADS = _THREADED


if hasattr(os, "register_at_fork"):  # (POSIX's: Windows' os has none, and no fork to mend)
    os.register_at_fork(after_in_child=_after_fork_in_child)


class Renderer:
    """Draws triangle meshes into ``size`` x ``size`` RGB images (uint8, rows top to bottom)."""

    def __init__(self) -> None:
        ctx = context()
        self.ctx = ctx
        with self._current():
            self.mesh_program = ctx.program(vertex_shader=_MESH_VS, fragment_shader=_MESH_FS)
            self.colour_program = ctx.program(vertex_shader=_COLOUR_VS, fragment_shader=_COLOUR_FS)
            self.bake_program = ctx.program(vertex_shader=_BAKE_VS, fragment_shader=_BAKE_FS)

    @contextmanager
    def _current(self) -> Iterator[None]:
        """The context made current on the calling thread, one thread at a time. An OpenGL context is current on the
        thread that made it: before, a render from any other thread (facekit serve's avatar thread once the process
        had rendered elsewhere, a second serve engine, a caller's thread pool) failed with moderngl's "cannot create
        renderbuffer", and two threads at once would have shared its uniforms (a projection written between another
        thread's write and draw). In a child forked from a process whose context draws on llvmpipe's threads, an
        error instead of a render that would wait forever."""
        if _FORKED_FROM_THREADS is not None:
            raise FacekitError(
                f"the avatar renderer's OpenGL context (Mesa llvmpipe, {LLVMPIPE_THREADS}={_FORKED_FROM_THREADS}) was "
                "made before this process was forked, and llvmpipe's drawing threads do not survive a fork: a render "
                f"here would wait forever. Unset {LLVMPIPE_THREADS} (or set it to 0), or start this process with "
                "multiprocessing's 'spawn' or 'forkserver'"
            )
        with _CONTEXT_TURN, self.ctx:
            yield

    def _target(self, width: int, height: int, depth: bool = True) -> tuple[Any, list[Any]]:
        """A framebuffer and its attachments: releasing the framebuffer does not release them (each render leaked
        ~2.5 MB of colour and depth buffers until a long-running server was killed)."""
        colour = self.ctx.renderbuffer((width, height), 4)
        depth_buffer = self.ctx.depth_renderbuffer((width, height)) if depth else None
        fbo = self.ctx.framebuffer(color_attachments=[colour], depth_attachment=depth_buffer)
        return fbo, [colour, depth_buffer]

    def _draw(
        self,
        program: Any,
        arrays: dict[str, np.ndarray],
        triangles: np.ndarray,
        size: tuple[int, int],
        background: tuple[float, float, float],
        depth: bool = True,
        texture: np.ndarray | None = None,
        sampler: str = "texture_map",
    ) -> tuple[np.ndarray, np.ndarray | None]:
        ctx = self.ctx
        width, height = size
        made: list[Any] = []  # every GL object of this draw, released at the end whatever happens
        try:
            fbo, attachments = self._target(width, height, depth)
            made += [fbo, *attachments]
            buffers = []
            for name, values in arrays.items():
                buffers.append((ctx.buffer(np.ascontiguousarray(values, dtype="f4").tobytes()), values.shape[1], name))
                made.append(buffers[-1][0])
            content = [(buf, f"{dims}f", name) for buf, dims, name in buffers]
            index = ctx.buffer(np.ascontiguousarray(triangles, dtype="i4").tobytes())
            made.append(index)
            vao = ctx.vertex_array(program, content, index_buffer=index)
            made.append(vao)
            if texture is not None:
                tex = ctx.texture((texture.shape[1], texture.shape[0]), 3, np.ascontiguousarray(texture).tobytes())
                made.append(tex)
                tex.filter = (ctx.LINEAR, ctx.LINEAR)
                tex.repeat_x = tex.repeat_y = False
                tex.use(0)
                program[sampler].value = 0
            fbo.use()
            ctx.viewport = (0, 0, width, height)
            ctx.disable(ctx.CULL_FACE)
            if depth:
                ctx.enable(ctx.DEPTH_TEST)
            else:
                ctx.disable(ctx.DEPTH_TEST)
            fbo.clear(*background, 1.0, depth=1.0)
            vao.render()
            rgb = np.frombuffer(fbo.read(components=3), np.uint8).reshape(height, width, 3)[::-1].copy()
            z = None
            if depth:
                z = (
                    np.frombuffer(fbo.read(components=1, attachment=-1, dtype="f4"), np.float32)
                    .reshape(height, width)[::-1]
                    .copy()
                )
            return rgb, z
        finally:
            for obj in reversed(made):
                if obj is not None:
                    obj.release()

    def render_textured(
        self,
        vertices: np.ndarray,
        triangles: np.ndarray,
        uv: np.ndarray,
        texture: np.ndarray,
        projection: np.ndarray,
        size: int,
        background: tuple[int, int, int] = (128, 128, 128),
    ) -> np.ndarray:
        """Camera-space ``vertices`` (N, 3) with ``texture`` (H, W, 3) uint8 (row 0 = v 0) -> (size, size, 3)."""
        with self._current():
            self.mesh_program["projection"].write(np.ascontiguousarray(projection.T, dtype="f4").tobytes())
            # OpenGL textures start at the bottom row; the texture rows are uploaded top first, so v is used as is.
            rgb, _ = self._draw(
                self.mesh_program,
                {"position": vertices, "uv": uv},
                triangles,
                (size, size),
                tuple(c / 255 for c in background),  # type: ignore[arg-type]
                texture=texture,
            )
        return rgb

    def render_colours(
        self, vertices: np.ndarray, triangles: np.ndarray, colours: np.ndarray, projection: np.ndarray, size: int
    ) -> tuple[np.ndarray, np.ndarray]:
        """Vertex-coloured render (colours (N, 3) in [0, 1]) -> (RGB uint8, window depth in [0, 1], 1 = empty)."""
        with self._current():
            self.colour_program["projection"].write(np.ascontiguousarray(projection.T, dtype="f4").tobytes())
            rgb, z = self._draw(
                self.colour_program, {"position": vertices, "rgb": colours}, triangles, (size, size), (0.5, 0.5, 0.5)
            )
        assert z is not None
        return rgb, z

    def bake(
        self,
        uv: np.ndarray,
        triangles: np.ndarray,
        image: np.ndarray,
        image_xy: np.ndarray,
        weight: np.ndarray,
        fallback: np.ndarray,
        size: int = 512,
    ) -> np.ndarray:
        """UV texture map (size, size, 3) uint8: each texel mixes ``image`` at the surface point's projection
        (``image_xy`` (N, 2) in pixels) with ``fallback`` (N, 3) in [0, 1] by ``weight`` (N,) in [0, 1]; texels no
        triangle covers are filled from their nearest covered neighbours (no dark seams when a viewer filters)."""
        import cv2

        h, w = image.shape[:2]
        xy = (image_xy + 0.5) / np.array([w, h], np.float32)
        with self._current():
            rgb, _ = self._draw(
                self.bake_program,
                {"uv": uv, "image_xy": xy, "weight": weight[:, None], "fallback": fallback},
                triangles,
                (size, size),
                (0.0, 0.0, 0.0),
                depth=False,
                texture=image,
                sampler="image",
            )
            covered = self._coverage(uv, triangles, size)
        # Rows came back top first with v = 0 at the bottom of the GL target: flip so row 0 is v = 0 (the texture
        # convention render_textured reads), then fill the texels outside the UV islands.
        rgb = rgb[::-1].copy()
        return cv2.inpaint(rgb, (~covered).astype(np.uint8), 3, cv2.INPAINT_TELEA) if (~covered).any() else rgb

    def _coverage(self, uv: np.ndarray, triangles: np.ndarray, size: int) -> np.ndarray:
        white = np.ones((uv.shape[0], 3), np.float32)
        ident = np.eye(4, dtype=np.float32)
        position = np.concatenate([uv * 2 - 1, np.zeros((uv.shape[0], 1), np.float32)], axis=1)
        with self._current():
            self.colour_program["projection"].write(ident.tobytes())
            rgb, _ = self._draw(
                self.colour_program, {"position": position, "rgb": white}, triangles, (size, size), (0, 0, 0), False
            )
        return np.asarray(rgb[::-1, :, 0] > 127)


@locked_cache(maxsize=1)
def renderer() -> Renderer:
    return Renderer()
