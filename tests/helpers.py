"""Helpers shared by tests."""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]


def run_cli(*args: str, env: dict[str, str] | None = None, cwd: Path = REPO) -> Any:
    """Run the real ``facekit`` console script in a subprocess (what a user types)."""
    import subprocess

    full_env = {**os.environ, **(env or {})}
    full_env.pop("FACEKIT_DEBUG", None)
    if env and "FACEKIT_DEBUG" in env:
        full_env["FACEKIT_DEBUG"] = env["FACEKIT_DEBUG"]
    exe = Path(sys.executable).with_name("facekit")
    return subprocess.run([str(exe), *args], capture_output=True, text=True, cwd=cwd, env=full_env, timeout=300)


class PicklePayload:
    """Unpickling this would create ``marker`` (a harmless stand-in for arbitrary code in a weights file)."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[Any, tuple[str, str]]:
        return (open, (str(self.marker), "w"))
