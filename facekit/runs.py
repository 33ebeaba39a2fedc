"""Run folders: every run writes what it ran beside its outputs.

``<output>/<YYYYmmdd-HHMMSS>-<stage>/`` holds ``recipe.yaml`` (the resolved recipe, defaults filled in) and
``run.json`` (facekit, plugin and package versions, git sha, device, seed, overrides, the recipe files read with
their sha256), so a result can always be traced back to the exact code and settings that made it.
"""

from __future__ import annotations

import importlib.metadata as metadata
import json
import os
import platform
import subprocess
import sys
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import yaml

import facekit
from facekit.plugins import get_plugin_state
from facekit.recipe import Plan

TRACKED_PACKAGES = (
    "torch",
    "numpy",
    "scipy",
    "pydantic",
    "pluggy",
    "dlib-bin",
    "opencv-contrib-python-headless",
    "onnxruntime",
)


def git_sha(cwd: Path | None = None) -> str | None:
    """The commit of facekit's own working tree (``cwd``: another one's), with ``-dirty`` when it has changes, or
    ``None`` where facekit is not in its own git checkout (an installed wheel, even one inside another repository's
    folder). Before: the folder the command ran from, so a run started inside another repository recorded that
    repository's commit."""
    package = Path(__file__).resolve().parent
    try:
        if cwd is None:  # facekit's checkout only: the package folder must be its top level's facekit/
            top = subprocess.run(
                ["git", "rev-parse", "--show-toplevel"], cwd=package, capture_output=True, text=True, timeout=10
            ).stdout.strip()
            if not top or (Path(top) / "facekit").resolve() != package:
                return None
            cwd = package
        sha = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=cwd, capture_output=True, text=True, check=True, timeout=10
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=cwd,
            capture_output=True,
            text=True,
            timeout=10,
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None
    return sha + ("-dirty" if dirty else "")


def package_versions() -> dict[str, str]:
    versions = {}
    for name in TRACKED_PACKAGES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return versions


def describe_device(requested: str) -> dict[str, Any]:
    """The device a run asked for and, when torch is already loaded, what it has and which device ``auto`` stands for
    there (``chosen``: the first GPU when one is visible, as training and inference pick; never imports torch)."""
    info: dict[str, Any] = {"requested": requested, "machine": platform.machine(), "processor": platform.processor()}
    torch = sys.modules.get("torch")
    if torch is not None:
        info["cuda_available"] = bool(torch.cuda.is_available())
        if requested == "auto":
            info["chosen"] = "cuda" if info["cuda_available"] else "cpu"
        if info["cuda_available"]:
            info["cuda_device"] = torch.cuda.get_device_name(0)
        info["threads"] = torch.get_num_threads()
    return info


@dataclass(frozen=True)
class RunDir:
    path: Path
    #: What `facekit run` prints for the stage instead of "wrote PATH" (e.g. how many photos the infer stage did).
    note: str = ""
    #: Inputs the stage gave no output for (the infer stage's photos without a face): `facekit run` then exits 3.
    failed: int = 0

    def file(self, name: str) -> Path:
        return self.path / name


def is_rank_zero() -> bool:
    """Whether this process writes shared files: rank 0 under ``torchrun`` (which sets RANK), or a plain process."""
    return os.environ.get("RANK", "0") == "0"


def start_run(
    plan: Plan,
    stage: str,
    output: str | Path,
    device: str = "cpu",
    seed: int | None = None,
    components: dict[str, str] | None = None,
    extra: dict[str, Any] | None = None,
) -> RunDir:
    """Create a fresh run folder for ``stage`` under ``output`` and write the recipe and provenance into it;
    ``components``: what the stage really runs, slot -> "name (plugin)" (default: the recipe's; the infer stage runs
    its model's encoder, decoder and warper); ``extra``: the stage's own entries (the train stage's
    ``resumed_from_step``).

    Under ``torchrun`` only rank 0 writes: the other ranks get the would-be path and create nothing, so N processes
    started in the same second never race for one folder name.
    """
    stamp = datetime.now(UTC).strftime("%Y%m%d-%H%M%S")
    base = Path(output)
    path = base / f"{stamp}-{stage}"
    if not is_rank_zero():
        return RunDir(path)
    base.mkdir(parents=True, exist_ok=True)
    suffix = 1
    while True:  # mkdir is the atomic claim: two runs started in the same second get two folders
        try:
            path.mkdir()
            break
        except FileExistsError:
            suffix += 1
            path = base / f"{stamp}-{stage}-{suffix}"
    (path / "recipe.yaml").write_text(yaml.safe_dump(plan.to_dict(), sort_keys=False), encoding="utf-8")
    info = {
        "stage": stage,
        "recipe": plan.source,  # as given: the same `facekit run RECIPE` reruns it
        "recipe_files": list(plan.recipe_files),  # as the recipe was read (facekit.recipe.load_recipe)
        "overrides": list(plan.overrides),
        "started": datetime.now(UTC).isoformat(timespec="seconds"),
        "facekit": facekit.__version__,
        "python": platform.python_version(),
        "platform": platform.platform(),
        "git_sha": git_sha(),
        "packages": package_versions(),
        "plugins": {p.name: f"{p.distribution} {p.version}" for p in get_plugin_state().plugins},
        "components": components
        if components is not None
        else {slot: f"{c.spec.name} ({c.spec.plugin})" for slot, c in plan.components.items()},
        "device": describe_device(device),
        "seed": seed,
        **(extra or {}),
    }
    (path / "run.json").write_text(json.dumps(info, indent=2) + "\n", encoding="utf-8")
    return RunDir(path)


def finish_run(run: RunDir) -> None:
    """Mark ``run`` finished in its ``run.json`` (``finished``: the time): a run folder without it did not complete
    (it failed, or was interrupted), though it holds the same recipe and provenance as one that did."""
    record = run.path / "run.json"
    if not is_rank_zero() or not record.is_file():
        return
    info = json.loads(record.read_text(encoding="utf-8"))
    info["finished"] = datetime.now(UTC).isoformat(timespec="seconds")
    record.write_text(json.dumps(info, indent=2) + "\n", encoding="utf-8")
