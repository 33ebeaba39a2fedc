"""facekit.filestate: the one stat-based "has this file changed?" that a training's checkpoint, a prepared set's
arrays and the model store's manifest are remembered by, each with the fields it compares."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from facekit.filestate import CONTENTS, NOT_REPLACED, file_state


def test_the_contents_state_tells_a_file_rewritten_in_place_or_replaced(tmp_path: Path) -> None:
    path = tmp_path / "a.bin"
    path.write_bytes(b"12345")
    before = file_state(path)
    found = os.stat(path)
    assert before == (found.st_ino, found.st_size, found.st_mtime_ns) == file_state(path, CONTENTS)
    os.utime(path, ns=(found.st_atime_ns, found.st_mtime_ns + 10**9))  # rewritten in place: the same size
    assert file_state(path) != before
    other = tmp_path / "b.bin"
    other.write_bytes(b"12345")
    os.utime(other, ns=(found.st_atime_ns, found.st_mtime_ns))
    kept_open = path.open("rb")  # (so the replaced file's inode is not given to the new one)
    os.replace(other, path)  # replaced by another file of the same size and modification time
    kept_open.close()
    assert file_state(path) != before


def test_the_not_replaced_state_holds_the_device_and_change_time(tmp_path: Path) -> None:
    path = tmp_path / "manifest.json"
    path.write_text("{}")
    found = os.stat(path)
    assert file_state(path, NOT_REPLACED) == (found.st_dev, found.st_ino, found.st_size, found.st_ctime_ns)


def test_a_missing_file_is_none_and_a_file_in_place_of_its_folder_only_where_asked(tmp_path: Path) -> None:
    assert file_state(tmp_path / "none") is None and file_state(tmp_path / "none", NOT_REPLACED) is None
    (tmp_path / "file").write_text("x")
    with pytest.raises(NotADirectoryError):
        file_state(tmp_path / "file" / "inside")
    assert file_state(tmp_path / "file" / "inside", missing=(FileNotFoundError, NotADirectoryError)) is None


def test_the_three_callers_keep_their_own_fields(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The checkpoint (a file where its folder should be is no checkpoint), the store's manifest (device, inode,
    size, change time) and a prepared set's digest, remembered until an array changes."""
    import numpy as np

    from facekit import models
    from facekit.data.dataset import prepared_digest
    from facekit.train import checkpoint_state

    (tmp_path / "checkpoints").write_text("not a folder")
    assert checkpoint_state(tmp_path / "checkpoints" / "last.safetensors") is None
    (tmp_path / "last.safetensors").write_bytes(b"x")
    assert checkpoint_state(tmp_path / "last.safetensors") == file_state(tmp_path / "last.safetensors")

    monkeypatch.setattr(models, "store_dir", lambda: tmp_path / "store")
    assert models.manifest_identity() is None
    (tmp_path / "store").mkdir()
    (tmp_path / "store" / models.MANIFEST).write_text("{}")
    assert models.manifest_identity() == file_state(tmp_path / "store" / models.MANIFEST, NOT_REPLACED)

    folder = tmp_path / "prepared"
    folder.mkdir()
    np.save(folder / "landmarks.npy", np.zeros((2, 68, 2), np.float32))
    first = prepared_digest(folder)
    assert prepared_digest(folder) == first
    np.save(folder / "landmarks.npy", np.ones((2, 68, 2), np.float32))  # the same size, another file
    assert prepared_digest(folder) != first
