"""Folder locks: two facekit processes never write into the same output at once.

An advisory ``flock`` on a lock file inside the folder: the operating system releases it when the process ends, even
by ``kill -9``, so a crash never leaves a stale lock behind (nothing to clean up, no pid guessing).
"""

from __future__ import annotations

import errno
import fcntl
import os
import re
import stat
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

from facekit.errors import FacekitError

LOCK = ".facekit.lock"

#: The lock files' descriptors this process holds (:func:`exclusive`): closed in each child it forks, since a forked
#: child's copy holds the ``flock`` too. A training's or an augment's DataLoader workers, forked while it held the
#: lock, kept the folder locked after the run had ended (a stopped run in a notebook, its iterator not yet collected:
#: the rerun was refused as "another facekit training is writing"). The parent's own descriptor still holds it.
_HELD: set[int] = set()


def _close_held_in_child() -> None:
    for descriptor in _HELD:
        try:
            os.close(descriptor)
        except OSError:
            pass
    _HELD.clear()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_close_held_in_child)


#: How long (s) :func:`exclusive` waits for another holder before it calls its ``waiting`` (says it waits).
WAIT_SAID_AFTER = 1.0


@contextmanager
def exclusive(
    folder: str | Path,
    what: str,
    name: str = LOCK,
    wait: bool = False,
    waiting: Callable[[], object] | None = None,
) -> Iterator[Path]:
    """Hold ``folder/name`` for the duration; another holder is a FacekitError naming ``what`` (or, with ``wait``,
    is waited for, ``waiting`` called once the wait has lasted :data:`WAIT_SAID_AFTER`: the command says why it
    does nothing; before, `facekit models import` sat silent behind another import). The lock file is opened
    without following a symbolic link. A folder this call made that holds nothing but the lock at the end (the run
    failed before writing anything) is removed with it by the holder, and so are the empty parents it made: a
    failed run leaves no trace. A lock file removed so, after another process opened it, is noticed by that process
    once it holds it (the file it locked is no longer the folder's lock): it starts again on a new one."""
    folder = Path(folder)
    try:
        kind = folder.stat().st_mode  # one look: another run's clean-up may remove the folder between two
    except (FileNotFoundError, NotADirectoryError):
        kind = None
    if kind is not None and not stat.S_ISDIR(kind):
        raise FacekitError(f"{folder} is a file, not a folder")
    made = [] if wait else _missing_folders(folder)  # a waiter's folder may be another holder's: never removed
    path = folder / name
    for _ in range(100):
        try:
            folder.mkdir(parents=True, exist_ok=True)
            descriptor, writable = open_lock(path)
        except (FileExistsError, FileNotFoundError):  # the folder went while it was made (a holder's clean-up)
            continue
        except OSError as error:
            if error.errno in (errno.EROFS, errno.EACCES, errno.EPERM):  # the folder, not the lock, is the problem
                raise FacekitError(
                    f"cannot write into {folder}: {error.strerror}; choose an output folder you can write to"
                ) from None
            raise FacekitError(f"cannot create the lock {path}: {error.strerror}") from None
        try:
            if wait:
                _wait_for(descriptor, waiting)
            else:
                fcntl.flock(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(descriptor)
            raise FacekitError(busy_message(folder, what)) from None
        except OSError as error:  # a file system that locks only files one may write (NFS), given one read-only
            os.close(descriptor)
            if writable:
                raise
            raise FacekitError(
                f"cannot lock {path}, a lock file another user made that this file system locks only for those who "
                f"may write it ({error.strerror}): ask its owner to let you write it (chmod g+w), or remove it"
            ) from None
        except BaseException:  # a stop (Ctrl+C, SIGTERM) while waiting: the file waited on is not kept open
            os.close(descriptor)
            raise
        if _is_the_file(descriptor, path):
            break
        os.close(descriptor)  # locked a lock file its holder removed as it finished: take the folder's new one
    else:
        raise FacekitError(f"cannot take the lock {path}: it keeps being removed")
    _HELD.add(descriptor)
    try:
        if writable:  # (who holds it, for a person looking: another user's lock file keeps its own)
            os.ftruncate(descriptor, 0)
            os.write(descriptor, f"{os.getpid()}\n".encode())
        yield path
    finally:
        if made:
            _remove_if_only(path, made)
        _HELD.discard(descriptor)
        os.close(descriptor)  # closing releases the lock (no forked child holds a copy: _HELD)


def open_lock(path: Path) -> tuple[int, bool]:
    """Open (or make) the lock file ``path`` for :func:`exclusive`: (its descriptor, whether it is open for writing).
    A new one gets the user's usual permissions (``0o666`` less the umask), as every file facekit writes: made
    ``0o644`` whatever the umask, the first user's lock shut every other member of a group out of a folder they
    share (a group-writable output folder, a shared FACEKIT_HOME's model store, since imports lock it), each told
    they could not write into it. One another user made that this user may not write, in a folder this user may
    write, is opened to read: ``flock`` needs no more, and the other user's pid stays in it; one this user may not
    even read (made 0600 under another user's umask 077) is a FacekitError saying so (before: "cannot write into"
    a folder this user could write into). Any other refusal (a folder that cannot be written, a read-only file
    system) is raised as it is."""
    try:
        return os.open(path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW, 0o666), True
    except PermissionError as error:
        if not os.access(path.parent, os.W_OK | os.X_OK):
            raise
        try:
            return os.open(path, os.O_RDONLY | os.O_NOFOLLOW), False
        except PermissionError:  # (there, and neither writable nor readable by this user)
            if not os.path.lexists(path):  # (none there: the refusal is the first open's)
                raise error from None
            raise FacekitError(
                f"cannot lock {path}, a lock file another user made that you may neither write nor read "
                f"({error.strerror}): ask its owner to let you read it (chmod a+r), or remove it while no facekit "
                "writes there"
            ) from None
        except OSError:  # (none there: the refusal is the first open's)
            raise error from None


def _wait_for(descriptor: int, waiting: Callable[[], object] | None) -> None:
    """Take the lock on ``descriptor``, waiting for its holder; ``waiting`` is called once, after
    :data:`WAIT_SAID_AFTER` seconds of it (not at all where the lock comes sooner: an import is short)."""
    import time

    if waiting is not None:
        deadline = time.monotonic() + WAIT_SAID_AFTER
        while True:
            try:
                fcntl.flock(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
                return
            except BlockingIOError:
                if time.monotonic() >= deadline:
                    break
            time.sleep(0.05)
        waiting()
    fcntl.flock(descriptor, fcntl.LOCK_EX)


def _is_the_file(descriptor: int, path: Path) -> bool:
    """Whether the open ``descriptor`` is the file at ``path`` now (not one removed or replaced since it was opened)."""
    try:
        mine, there = os.fstat(descriptor), os.stat(path, follow_symlinks=False)
    except FileNotFoundError:
        return False
    return (mine.st_dev, mine.st_ino) == (there.st_dev, there.st_ino)


def busy_message(folder: str | Path, what: str) -> str:
    """What a run refused by another's lock on ``folder`` says (``what``: the other run, "training")."""
    return (
        f"another facekit {what} is writing into {folder} right now: wait for it to finish, or choose another output "
        "folder"
    )


def held(folder: str | Path, name: str = LOCK, *, own: bool = True) -> bool:
    """Whether ``folder/name`` (:func:`exclusive`'s lock) is held now: tried without waiting and let go at once,
    making nothing (none there: nobody holds it). A shared lock, which a descriptor open to read may take on any
    file system (NFS locks only a file open to write exclusively), and which no other reader blocks. This process's
    own hold counts unless ``own`` is False (a bench holding a training's folder is not another training). For a
    command that only reads to say whether a writer is running (`facekit models verify` during an import), and for a
    refusal to say what is really in the way (helper-221: a second training into a folder a running one writes was
    told its checkpoint "exists: pass --resume", which then refused it as another training's): never before taking
    the lock."""
    try:
        descriptor = os.open(Path(folder) / name, os.O_RDONLY | os.O_NOFOLLOW)
    except OSError:
        return False
    try:
        if any(os.path.sameopenfile(descriptor, mine) for mine in _HELD):
            return own
        fcntl.flock(descriptor, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    except OSError:  # a file system that cannot lock: nothing can be said of a writer
        return False
    finally:
        os.close(descriptor)  # (releases the probe's hold)
    return False


#: How long (s) a leftover must have been untouched to be a killed writer's (:func:`remove_stale`): one in progress
#: (another run writing the same folder now) is rewritten within seconds.
STALE_AFTER_S = 3600.0


def remove_stale(folder: str | Path, pattern: re.Pattern[str], folders: bool = False, mine: bool = True) -> int:
    """Delete the leftovers in ``folder`` that a writer killed outright (kill -9, the out-of-memory killer, a power
    cut) left there: entries whose names are ``pattern`` exactly (a temporary's own naming, never a file of the
    user's), plain files (or, with ``folders``, folders; never a link), of this user where ``mine``, untouched for
    :data:`STALE_AFTER_S` (another run writing there now keeps its own). The one rule of export's temporaries beside
    OUT, evaluate's hidden results folders and prepare's temporaries (each had its copy). Returns how many."""
    import shutil
    import time

    removed, now = 0, time.time()
    try:
        entries = list(os.scandir(folder))
    except OSError:
        return 0
    for entry in entries:
        try:
            if not pattern.fullmatch(entry.name):
                continue
            if not (entry.is_dir(follow_symlinks=False) if folders else entry.is_file(follow_symlinks=False)):
                continue
            found = entry.stat(follow_symlinks=False)
            if (mine and found.st_uid != os.getuid()) or now - found.st_mtime <= STALE_AFTER_S:
                continue
            if folders:
                shutil.rmtree(entry.path)
            else:
                os.unlink(entry.path)
            removed += 1
        except OSError:
            continue
    return removed


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


def current_umask() -> int:
    """The process's umask: read from /proc (Linux) where it can be, since setting it to read it back (the portable
    way) briefly gives any file another thread creates meanwhile a umask of 0."""
    try:
        with open("/proc/self/status", encoding="ascii") as status:
            for line in status:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    current = os.umask(0)
    os.umask(current)
    return current


def temporary_beside(target: Path, prefix: str | None = None) -> Path:
    """A new empty file in ``target``'s folder, hidden, named ``.NAME.XXXXXXXX.tmp`` (``prefix`` instead of
    ``.NAME.``), for ``target``'s contents to be written to and renamed over it: its own name (made with O_EXCL, never
    another run's file nor a link planted there), with the permissions a plain write gives (mkstemp's are 0600).
    Before, the names were fixed: two imports (or exports) at once wrote into one file, and the first to finish
    removed the other's. The model store's files, its bundles, and checkpoints and exported models."""
    import tempfile

    descriptor, name = tempfile.mkstemp(suffix=".tmp", prefix=prefix or f".{target.name}.", dir=target.parent)
    try:
        os.fchmod(descriptor, 0o666 & ~current_umask())
    except OSError:  # a file system without permissions (vfat, some network mounts)
        pass
    finally:
        os.close(descriptor)
    return Path(name)


def replace_durably(temporary: str | Path, target: str | Path) -> None:
    """Rename the finished ``temporary`` file over ``target`` so that a power cut leaves the old file or the new one
    whole, never an empty or partial one: the file's data is flushed to disk first, the folder's entry after. For
    the files a long job resumes from (checkpoints, prepared arrays, the training pool). The file gets the user's
    usual permissions (safetensors and mkstemp make 0600: a checkpoint or exported model others could not read)."""
    try:
        os.chmod(temporary, 0o666 & ~current_umask())
    except OSError:  # a file system without permissions (vfat, some network mounts): the file is written all the same
        pass
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
