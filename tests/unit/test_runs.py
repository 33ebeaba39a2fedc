from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import yaml

from facekit.recipe import load_recipe, resolve
from facekit.runs import finish_run, git_sha, start_run


def test_run_folder_records_recipe_and_provenance(tmp_path: Path) -> None:
    plan = resolve({"train": {"steps": 5, "seed": 3}}, ("train.lr=0.01",), source="demo.yaml")
    run = start_run(plan, "train", tmp_path, device="cpu", seed=3)
    assert run.path.parent == tmp_path and run.path.name.endswith("-train")
    recipe = yaml.safe_load((run.path / "recipe.yaml").read_text())
    assert recipe["train"]["steps"] == 5 and recipe["train"]["lr"] == 0.01
    info = json.loads((run.path / "run.json").read_text())
    assert info["seed"] == 3 and info["overrides"] == ["train.lr=0.01"]
    assert info["plugins"]["builtin"].startswith("facekit ")
    assert info["components"]["warper"] == "rbf-linear (builtin)"
    assert info["device"]["requested"] == "cpu"
    assert "pydantic" in info["packages"]
    second = start_run(plan, "train", tmp_path)
    assert second.path != run.path  # never overwrite an earlier run
    assert "finished" not in info  # until the stage completes
    finish_run(run)
    finished = json.loads((run.path / "run.json").read_text())
    assert finished.pop("finished") and finished == info


def test_run_json_says_which_recipe_file_was_read_and_its_sha256(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """run.json held only the name given: a run of ``demo`` did not say whether the shipped recipe or a file called
    demo in the working folder was read, nor which version of it. Now each file of the ``extends`` chain, the recipe's
    first: where it is, the shipped recipe's name (None for the user's file) and its sha256."""
    import hashlib

    from facekit.recipe import shipped_recipes

    def read(source: str) -> dict:
        run = start_run(load_recipe(source, no_data), "train", tmp_path / "runs")
        finish_run(run)  # (what reads run.json back keeps it)
        return json.loads((run.path / "run.json").read_text())

    def sha256(file: Path) -> str:
        return hashlib.sha256(file.read_bytes()).hexdigest()

    monkeypatch.chdir(tmp_path)
    no_data = [f"data.root={tmp_path}", "data.train=[]", "data.test=[]"]  # (what is read, not the data, is checked)
    shipped = {name: file.resolve() for name, file in shipped_recipes().items()}
    info = read("ablations/no-identity")
    assert info["recipe"] == "ablations/no-identity" and info["finished"]
    assert info["recipe_files"] == [
        {"file": str(shipped[name]), "shipped": name, "sha256": sha256(shipped[name])}
        for name in ("ablations/no-identity", "paper")
    ]
    Path("demo").write_text("extends: paper\ndescription: mine\n")  # the working folder's file of that name is read
    (own, base) = read("demo")["recipe_files"]
    assert own == {"file": str(tmp_path.resolve() / "demo"), "shipped": None, "sha256": sha256(Path("demo"))}
    assert base["shipped"] == "paper"
    # The file as it was read: `facekit run` starts a later stage's run hours after (before: hashed then, a recipe
    # edited during the prepare stage was recorded as the one the training ran).
    plan, read_then = load_recipe("demo", no_data), sha256(Path("demo"))
    Path("demo").write_text("extends: paper\ndescription: edited since\n")
    run = start_run(plan, "train", tmp_path / "runs")
    assert json.loads((run.path / "run.json").read_text())["recipe_files"][0]["sha256"] == read_then
    for source in ("demo", "not-a-recipe"):  # a plan resolved from data read no file, whatever it is named
        run = start_run(resolve({}, source=source), "x", tmp_path)
        assert json.loads((run.path / "run.json").read_text())["recipe_files"] == []


def test_git_sha_outside_a_repository(tmp_path: Path) -> None:
    assert git_sha(tmp_path) is None


def test_git_sha_is_facekits_own_wherever_the_command_runs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Before: a run started inside another git repository recorded that repository's commit."""
    import subprocess

    import facekit

    own = git_sha(Path(facekit.__file__).resolve().parent)
    subprocess.run(["git", "init", "-q", str(tmp_path)], check=True)
    subprocess.run(
        [
            "git",
            "-C",
            str(tmp_path),
            "-c",
            "user.name=t",
            "-c",
            "user.email=t@t",
            "commit",
            "-q",
            "--allow-empty",
            "-m",
            "other",
        ],
        check=True,
    )
    monkeypatch.chdir(tmp_path)
    assert git_sha() == own != git_sha(tmp_path)
    # facekit installed (not checked out) inside another repository's folder: no commit, not that repository's.
    import facekit.runs

    (tmp_path / "site" / "facekit").mkdir(parents=True)
    monkeypatch.setattr(facekit.runs, "__file__", str(tmp_path / "site" / "facekit" / "runs.py"))
    assert git_sha() is None and git_sha(tmp_path) is not None


def test_only_rank_zero_writes_a_run_folder(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # Two torchrun ranks start in the same second: a second writer would race rank 0 for the folder name.
    plan = resolve({"train": {"steps": 5}})
    monkeypatch.setenv("RANK", "1")
    run = start_run(plan, "train", tmp_path)
    assert not run.path.exists() and not any(tmp_path.iterdir())
    monkeypatch.setenv("RANK", "0")
    assert (start_run(plan, "train", tmp_path).path / "run.json").exists()


def test_runs_started_together_get_their_own_folders(tmp_path: Path) -> None:
    from concurrent.futures import ThreadPoolExecutor

    plan = resolve({})
    with ThreadPoolExecutor(8) as pool:
        paths = list(pool.map(lambda _: start_run(plan, "infer", tmp_path).path, range(16)))
    assert len(set(paths)) == 16 and all((p / "run.json").is_file() for p in paths)


def test_files_a_long_job_resumes_from_reach_the_disk_before_their_rename(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Before: checkpoints, prepared arrays and the training pool were renamed into place without an fsync, so a power
    cut could leave an empty file under the final name, which the next run would take for the real one."""
    import os

    import numpy as np
    import torch

    from facekit import locks
    from facekit.checkpoints import write_model_file
    from facekit.data.prepare import _save_atomic
    from facekit.pool import _write_pool

    events: list[str] = []
    real_fsync, real_replace = os.fsync, os.replace
    monkeypatch.setattr(locks.os, "fsync", lambda fd: events.append("fsync") or real_fsync(fd))
    monkeypatch.setattr(
        locks.os, "replace", lambda a, b: events.append(f"replace {Path(b).name}") or real_replace(a, b)
    )
    write_model_file(tmp_path / "last.safetensors", {"model.w": torch.zeros(2)}, {"step": 1})
    _save_atomic(tmp_path / "landmarks.npy", np.zeros((2, 68, 2), np.float32))
    _write_pool(tmp_path / "pool.safetensors", {"images": torch.zeros(2, 3, 4, 4)}, "key")  # (helper-173: not pinned)
    assert events == [
        *("fsync", "replace last.safetensors", "fsync"),
        *("fsync", "replace landmarks.npy", "fsync"),
        *("fsync", "replace pool.safetensors", "fsync"),
    ]


def test_a_full_disk_while_saving_tensors_is_the_oserror_it_is(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """helper-74: a full disk while saving a checkpoint or the training pool was a SafetensorError traceback; as an
    OSError the command says it in one line ("free some space"), and the part written is removed."""
    import errno

    import torch
    from safetensors import SafetensorError

    from facekit import checkpoints

    def full(tensors: object, path: str, metadata: object = None) -> None:
        Path(path).write_bytes(b"part")
        raise SafetensorError("Error while serializing: I/O error: No space left on device (os error 28)")

    monkeypatch.setattr(checkpoints, "save_file", full)
    with pytest.raises(OSError) as caught:
        checkpoints.write_model_file(tmp_path / "last.safetensors", {"model.w": torch.zeros(2)}, {"step": 1})
    assert caught.value.errno == errno.ENOSPC
    assert re.fullmatch(r"\.last\.safetensors\.\w{8}\.tmp", Path(caught.value.filename).name)
    assert list(tmp_path.iterdir()) == []


def test_a_run_asking_for_auto_records_the_device_it_stands_for(monkeypatch: pytest.MonkeyPatch) -> None:
    """`auto` alone said nothing of where the run went; with torch loaded the record says the device it picks."""
    import torch

    from facekit.runs import describe_device

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert describe_device("auto")["chosen"] == "cpu"
    assert "chosen" not in describe_device("cpu")  # what was asked is what ran
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda index: "a GPU")
    info = describe_device("auto")
    assert info["chosen"] == "cuda" and info["cuda_device"] == "a GPU"


def test_a_model_files_checksum_hashes_its_tensors_in_place_and_as_before() -> None:
    """The sha256 over a checkpoint's tensors copied each one to bytes first (a 1.5 GB set: 960 MB more at its peak);
    now it hashes them where they are, and files written before still verify: the same digest, of every kind of
    tensor a checkpoint holds (the value below is the one the copying code gave)."""
    import tracemalloc

    import torch

    from facekit.checkpoints import tensors_digest

    known = {
        "model.weight": torch.arange(24, dtype=torch.float32).reshape(2, 3, 4) / 7,
        "model.half": (torch.arange(12, dtype=torch.float32) / 3).half().reshape(3, 4),
        "model.bf16": (torch.arange(6, dtype=torch.float32) - 2.5).bfloat16(),
        "model.t": torch.arange(12, dtype=torch.float32).reshape(3, 4).t(),  # not contiguous
        "optim.0.step": torch.tensor(7.0),
        "model.idx": torch.arange(5, dtype=torch.int64),
        "model.flag": torch.tensor([True, False, True]),
        "model.empty": torch.zeros(0, 3),
    }
    assert tensors_digest(known) == "f806ee6b2238d53bf7709aae57cde84d5903afc54a18ab5e0b24adcd8f961e8b"
    large = {"model.w": torch.zeros(4_000_000, dtype=torch.uint8)}
    tracemalloc.start()
    try:
        tensors_digest(large)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 1_000_000  # (the copy was the tensor's 4 MB)
