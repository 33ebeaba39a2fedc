"""facekit's builtin plugin: it registers through the same hooks (entry point ``builtin``) as any third party.

Keep this module light: specs point at factories that import torch only when a component is built.
"""

from __future__ import annotations

from facekit.builtin import apps, decoders, warpers
from facekit.hookspecs import Register, hookimpl


@hookimpl
def register_warpers(register: Register) -> None:
    for spec in warpers.specs():
        register(spec)


@hookimpl
def register_decoders(register: Register) -> None:
    for spec in decoders.specs():
        register(spec)


@hookimpl
def register_apps(register: Register) -> None:
    for spec in apps.specs():
        register(spec)
