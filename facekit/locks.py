"""Folder locks: two facekit processes never write into the same output at once.

An advisory ``flock`` on a lock file inside the folder: the operating system releases it when the process ends, even
by ``kill -9``, so a crash never leaves a stale lock behind (nothing to clean up, no pid guessing).
"""

from __future__ import annotations

import fcntl
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from facekit.errors import FacekitError

LOCK = ".facekit.lock"


@contextmanager
def exclusive(folder: str | Path, what: str, name: str = LOCK, wait: bool = False) -> Iterator[Path]:
    """Hold ``folder/name`` for the duration; another holder is a FacekitError naming ``what`` (or, with ``wait``,
    is waited for). The lock file is opened without following a symbolic link. A folder this call made that holds
    nothing but the lock at the end (the run failed before writing anything) is removed with it, and so are the
    empty parents it made: a failed run leaves no trace."""
    folder = Path(folder)
    if folder.exists() and not folder.is_dir():
        raise FacekitError(f"{folder} is a file, not a folder")
    made = [] if wait else _missing_folders(folder)  # a waiter's folder may be another holder's: never removed
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / name
    try:
        descriptor = os.open(path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW, 0o644)
    except OSError as error:
        raise FacekitError(f"cannot create the lock {path}: {error.strerror}") from None
    try:
        try:
            fcntl.flock(descriptor, fcntl.LOCK_EX | (0 if wait else fcntl.LOCK_NB))
        except BlockingIOError:
            raise FacekitError(
                f"another facekit {what} is writing into {folder} right now: wait for it to finish, or choose another "
                "output folder"
            ) from None
        os.ftruncate(descriptor, 0)
        os.write(descriptor, f"{os.getpid()}\n".encode())
        yield path
    finally:
        if made:
            _remove_if_only(path, made)
        os.close(descriptor)  # closing releases the lock


def _missing_folders(folder: Path) -> list[Path]:
    """``folder`` and those of its parents that do not exist yet, innermost first."""
    missing = []
    while not folder.exists() and folder != folder.parent:
        missing.append(folder)
        folder = folder.parent
    return missing


def _remove_if_only(lock: Path, made: list[Path]) -> None:
    """Remove ``lock`` and the folders ``made`` (innermost first) when the lock is all the innermost one holds (while
    the lock is still held: nobody else can have started writing there)."""
    try:
        if [entry.name for entry in made[0].iterdir()] != [lock.name]:
            return
        lock.unlink()
        for folder in made:
            folder.rmdir()  # stops at the first that is not empty (OSError)
    except OSError:
        pass


def replace_durably(temporary: str | Path, target: str | Path) -> None:
    """Rename the finished ``temporary`` file over ``target`` so that a power cut leaves the old file or the new one
    whole, never an empty or partial one: the file's data is flushed to disk first, the folder's entry after. For
    the files a long job resumes from (checkpoints, prepared arrays, the training pool)."""
    descriptor = os.open(temporary, os.O_RDONLY)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)
    os.replace(temporary, target)
    try:
        folder = os.open(Path(target).parent, os.O_RDONLY)
    except OSError:  # a folder that cannot be opened (some platforms): the rename stands
        return
    try:
        os.fsync(folder)
    except OSError:
        pass
    finally:
        os.close(folder)
