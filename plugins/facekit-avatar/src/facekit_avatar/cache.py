"""``locked_cache``: functools.lru_cache whose values are built once, for the avatar's large loaders (the Surrey model,
the OpenGL context and renderer, eos's fitting set-up).

lru_cache does not lock the computation: two threads asking for a value that is not cached yet both built it (twice
the seconds and memory, two OpenGL contexts), and facekit serve makes avatars on a thread of its own while its other
threads may load the same. Here the build runs under a lock, so the second thread waits for the first's value.
"""

from __future__ import annotations

import functools
import os
import threading
from collections.abc import Callable
from typing import Any, Generic, ParamSpec, TypeVar

P = ParamSpec("P")
R = TypeVar("R")

#: Every locked cache, so that a forked child can give each a new lock.
_CACHES: list[LockedCache[Any, Any]] = []


class LockedCache(Generic[P, R]):
    """``function`` behind ``functools.lru_cache(maxsize)`` and a lock held while a value is looked up or built (a
    value being built for one thread makes the others wait, then they get it from the cache). Called, cleared and
    inspected as lru_cache's wrapper is (``cache_clear``, ``cache_info``), and pickled the same way, by its name."""

    def __init__(self, function: Callable[P, R], maxsize: int) -> None:
        self._cached = functools.lru_cache(maxsize=maxsize)(function)
        self._name = function.__qualname__
        self._lock = threading.RLock()  # (re-entrant: a value whose build asks the same cache again does not hang)
        functools.update_wrapper(self, function)
        _CACHES.append(self)

    def __call__(self, *args: P.args, **kwargs: P.kwargs) -> R:
        with self._lock:
            return self._cached(*args, **kwargs)  # type: ignore[arg-type]  # (lru_cache's stubs: hashable values)

    def cache_clear(self) -> None:
        with self._lock:
            self._cached.cache_clear()

    def cache_info(self) -> Any:
        return self._cached.cache_info()

    def __reduce__(self) -> str:
        return self._name  # the module's attribute of that name, as lru_cache's wrapper and functions pickle

    def _after_fork_in_child(self) -> None:
        """A lock held at the fork by another of the parent's threads (building) would stay held in the child, where
        that thread does not exist: the child's first call waited forever. One held by the forking thread itself is
        kept, which that thread releases as it would have in the parent."""
        if not self._lock._is_owned():  # type: ignore[attr-defined]  # (held by no thread, or by one the child lacks)
            self._lock = threading.RLock()


def locked_cache(maxsize: int) -> Callable[[Callable[P, R]], LockedCache[P, R]]:
    """A decorator: ``@locked_cache(1)`` where ``@functools.lru_cache(maxsize=1)`` was (see :class:`LockedCache`)."""

    def decorate(function: Callable[P, R]) -> LockedCache[P, R]:
        return LockedCache(function, maxsize)

    return decorate


def _after_fork_in_child() -> None:
    for cache in _CACHES:
        cache._after_fork_in_child()


if hasattr(os, "register_at_fork"):  # (POSIX's: Windows' os has none, and no fork to mend)
    os.register_at_fork(after_in_child=_after_fork_in_child)
