"""Read a prepared dataset folder (see facekit.data.prepare) lazily, as numpy memmaps or a torch Dataset."""

from __future__ import annotations

import json
from functools import cached_property
from pathlib import Path
from typing import Any

import numpy as np

from facekit.errors import FacekitError

#: A file prepare writes before it rewrites a set's arrays and removes after their summary: a set holding it was
#: left half-written (a prepare killed while it finished).
FINALIZING_MARK = ".facekit.finalizing"
#: The files a prepared set's digest covers, in its order (``summary.json``'s ``arrays_sha256``).
DIGESTED = ("identities.json", "averages.npy", "landmarks.npy", "textures.npy", "mean_landmarks.npy")


def prepared_digest(folder: Path) -> str:
    """sha256 over a prepared set's identities and arrays (:data:`DIGESTED`; a missing file counts as empty): what
    ``summary.json`` records, so that a resumed training can tell the same set from one prepared again. Remembered
    per process by the files' identity, size and modification time (a training stage checks its set more than once;
    the arrays are GBs at 224 px)."""
    import hashlib

    from facekit.filestate import file_state

    key = (str(Path(folder).resolve()), tuple(file_state(folder / name) for name in DIGESTED))
    if key in _DIGESTS:
        return _DIGESTS[key]
    digest = hashlib.sha256()
    for name in DIGESTED:
        digest.update(f"{name}\n".encode())
        try:
            with (folder / name).open("rb") as handle:
                while chunk := handle.read(1 << 20):
                    digest.update(chunk)
        except FileNotFoundError:
            continue
    if len(_DIGESTS) > 16:
        _DIGESTS.clear()
    _DIGESTS[key] = digest.hexdigest()
    return _DIGESTS[key]


_DIGESTS: dict[tuple[str, tuple[tuple[int, ...] | None, ...]], str] = {}


class PreparedFaces:
    """The arrays of a prepared dataset, memory-mapped: nothing is read until an item is indexed.

    ``len(faces)`` identities; ``faces[i]`` is a dict of torch tensors: ``image`` (3, S, S) float32 in [0, 1] (the
    morphed average), ``texture`` (3, S, S) (the average on the mean landmarks), ``landmarks`` (68, 2).
    """

    def __init__(self, folder: str | Path) -> None:
        self.folder = Path(folder)
        if (self.folder / FINALIZING_MARK).exists():
            raise FacekitError(
                f"{self.folder} was left half-written (a prepare stopped while it wrote the arrays): run the prepare "
                "stage again to finish it"
            )
        if not (self.folder / "landmarks.npy").is_file():
            raise FacekitError(
                f"{self.folder} is not a prepared dataset (no landmarks.npy): run the prepare stage first "
                "(--stage prepare)"
            )
        rows = {name: len(getattr(self, name)) for name in ("averages", "textures", "landmarks")}
        if (self.folder / "identities.json").is_file():
            rows["identities.json"] = len(self.identities)
        if len(set(rows.values())) > 1:
            counts = ", ".join(f"{name} {count}" for name, count in rows.items())
            raise FacekitError(
                f"{self.folder}'s files disagree on how many faces it holds ({counts}): they come from different "
                "prepare runs; run the prepare stage again"
            )

    def _array(self, name: str, mapped: bool = True) -> np.ndarray:
        try:
            return np.load(self.folder / f"{name}.npy", mmap_mode="r" if mapped else None)
        except (OSError, ValueError) as error:  # missing, cut short (mmap longer than the file), not an array
            raise FacekitError(
                f"{self.folder / f'{name}.npy'} cannot be read ({error}): run the prepare stage again, which rebuilds "
                "the arrays from its finished work"
            ) from None

    @cached_property
    def averages(self) -> np.ndarray:
        return self._array("averages")

    @cached_property
    def textures(self) -> np.ndarray:
        return self._array("textures")

    @cached_property
    def landmarks(self) -> np.ndarray:
        return self._array("landmarks")

    @cached_property
    def mean_landmarks(self) -> np.ndarray:
        return self._array("mean_landmarks", mapped=False)  # (68, 2): read whole

    @cached_property
    def identities(self) -> list[dict[str, Any]]:
        return json.loads((self.folder / "identities.json").read_text())

    def __len__(self) -> int:
        return int(self.landmarks.shape[0])

    def __getitem__(self, index: int) -> dict[str, Any]:
        import torch

        def to_tensor(image: np.ndarray) -> torch.Tensor:
            return torch.from_numpy(np.array(image)).permute(2, 0, 1).float() / 255.0

        return {
            "image": to_tensor(self.averages[index]),
            "texture": to_tensor(self.textures[index]),
            "landmarks": torch.from_numpy(np.array(self.landmarks[index])),
        }

    def __getstate__(self) -> dict[str, Any]:
        # Memmaps are reopened in DataLoader workers rather than pickled.
        return {"folder": self.folder}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.folder = state["folder"]
