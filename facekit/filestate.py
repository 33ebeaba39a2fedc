"""What tells a file changed since it was last looked at, without reading it: a few fields of its ``os.stat``.

One helper for the places that remember a file by its stat (a training's checkpoint, a prepared set's arrays, the
model store's manifest); each names the fields it compares, because they ask different questions (below)."""

from __future__ import annotations

import os

#: The same file, unchanged: its inode (a file replaced by another, as an atomic write does), size and modification
#: time (one rewritten in place). A training's checkpoint (:func:`facekit.train.checkpoint_state`) and a prepared
#: set's arrays (:func:`facekit.data.dataset.prepared_digest`).
CONTENTS = ("st_ino", "st_size", "st_mtime_ns")
#: The same file, not replaced since: its device and inode, and its size and change time, which tell a replace where a
#: file system gives every file one inode (0 on some network and FAT mounts); the change time, not the modification
#: time, since nothing sets it back (a copy that keeps times, ``os.utime``). The model store's manifest
#: (:func:`facekit.models.manifest_identity`).
NOT_REPLACED = ("st_dev", "st_ino", "st_size", "st_ctime_ns")


def file_state(
    path: str | os.PathLike[str],
    fields: tuple[str, ...] = CONTENTS,
    missing: tuple[type[OSError], ...] = (FileNotFoundError,),
) -> tuple[int, ...] | None:
    """``path``'s stat ``fields`` (:data:`CONTENTS` or :data:`NOT_REPLACED`), None when it is not there: an error
    of ``missing`` (a checkpoint's caller adds ``NotADirectoryError``, a file where its folder should be); any other
    (permissions) is raised."""
    try:
        found = os.stat(path)
    except missing:
        return None
    return tuple(getattr(found, name) for name in fields)
