"""facekit: turn a face photo into a normalized face (frontal, neutral, evenly lit, same identity).

The public API is small and imports nothing heavy (no torch, dlib, onnxruntime or timm) until a component is built::

    import facekit
    facekit.list_components("warper")
    warper = facekit.load_component("warper", "rbf-linear")
"""

from __future__ import annotations

from importlib import import_module
from typing import TYPE_CHECKING, Any

from facekit.hookspecs import hookimpl

__version__ = "0.1.0"

if TYPE_CHECKING:
    from facekit.errors import DetectorFailed, FacekitError, NoFaceFound, PhotoUnreadable, RecipeError
    from facekit.normalize import NormalizedFace, Normalizer, Outcome
    from facekit.recipe import load_recipe, resolve
    from facekit.registry import ComponentSpec, NoParams, Params, get_registry, list_components, load_component
    from facekit.types import LandmarkScheme, ModelCard

# name -> module: resolved on first access so that ``import facekit`` stays cheap (pydantic, yaml load lazily).
_LAZY = {
    "ComponentSpec": "facekit.registry",
    "Params": "facekit.registry",
    "NoParams": "facekit.registry",
    "get_registry": "facekit.registry",
    "list_components": "facekit.registry",
    "load_component": "facekit.registry",
    "FacekitError": "facekit.errors",
    "RecipeError": "facekit.errors",
    "PhotoUnreadable": "facekit.errors",
    "NoFaceFound": "facekit.errors",
    "DetectorFailed": "facekit.errors",
    "ModelCard": "facekit.types",
    "load_recipe": "facekit.recipe",
    "resolve": "facekit.recipe",
    "Normalizer": "facekit.normalize",
    "NormalizedFace": "facekit.normalize",
    "Outcome": "facekit.normalize",
    "LandmarkScheme": "facekit.types",
}

__all__ = [
    "ComponentSpec",
    "DetectorFailed",
    "FacekitError",
    "LandmarkScheme",
    "ModelCard",
    "NoFaceFound",
    "NoParams",
    "NormalizedFace",
    "Normalizer",
    "Outcome",
    "Params",
    "PhotoUnreadable",
    "RecipeError",
    "__version__",
    "get_registry",
    "hookimpl",
    "list_components",
    "load_component",
    "load_recipe",
    "resolve",
]


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'facekit' has no attribute {name!r}")
    value = getattr(import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(__all__)
