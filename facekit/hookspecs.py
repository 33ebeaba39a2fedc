"""The hooks a facekit plugin may implement.

A plugin is a module (named by an entry point in the ``facekit`` group) with functions decorated by
``facekit.hookimpl`` whose names match the hooks below. Component hooks receive a ``register`` callback;
call it once per component::

    from facekit import hookimpl, ComponentSpec
    from facekit.hookspecs import Register

    @hookimpl
    def register_warpers(register: Register) -> None:
        register(ComponentSpec(name="my-warp", factory=MyWarp, params=MyWarp.Params, summary="..."))

The host calls every plugin's hook separately, so it knows which plugin registered each name: a duplicate name is
an error naming both plugins. Hooks must not import heavy libraries (torch, dlib, onnxruntime): do that inside the
factory, so that ``import facekit`` and ``facekit --help`` stay fast. Every hook is documented in CONTRIBUTING.md.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import pluggy

if TYPE_CHECKING:
    from facekit.registry import ComponentSpec

hookspec = pluggy.HookspecMarker("facekit")
hookimpl = pluggy.HookimplMarker("facekit")

Register = Callable[["ComponentSpec"], None]


@hookspec
def register_detectors(register: Register) -> None:
    """Register face detectors / landmark predictors (``facekit.types.Detector``)."""


@hookspec
def register_encoders(register: Register) -> None:
    """Register face-recognition encoders (``facekit.types.Encoder``), each with a model card."""


@hookspec
def register_decoders(register: Register) -> None:
    """Register decoders from identity features to a normalized face (``facekit.types.Decoder``)."""


@hookspec
def register_warpers(register: Register) -> None:
    """Register image warpers driven by landmark pairs (``facekit.types.Warper``)."""


@hookspec
def register_apps(register: Register) -> None:
    """Register applications of normalized faces (``facekit.types.App``): avatars, white balance, ..."""


@hookspec
def register_commands(app: Any) -> None:
    """Add commands to the ``facekit`` Typer app (``app`` is a ``typer.Typer``); keep them thin."""
