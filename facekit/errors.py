"""Errors that facekit knows how to explain.

Every error a user can cause (a bad recipe, a missing weight file, a broken plugin) is a
:class:`FacekitError`. The CLI prints its message on one line and exits with :attr:`exit_code`;
anything else is a bug and propagates with its traceback.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any


class FacekitError(Exception):
    """A problem the user can fix; ``str(err)`` says what and how."""

    exit_code: int = 1


@dataclass(frozen=True)
class Problem:
    """One problem found in a recipe, located by its dotted path (``components.encoder.params.x``)."""

    path: str
    message: str

    def __str__(self) -> str:
        return f"{self.path}: {self.message}" if self.path else self.message


class RecipeError(FacekitError):
    """A recipe (or its ``--set`` overrides) does not validate. Holds every problem found, not just the first."""

    exit_code = 2

    def __init__(self, problems: Sequence[Problem], source: str = "recipe") -> None:
        self.problems = list(problems)
        self.source = source
        count = len(self.problems)
        if count == 1:
            super().__init__(f"{source}: 1 problem: {self.problems[0]}")
        else:  # one per line: a recipe with several typos is read down, not across
            lines = "".join(f"\n  - {p}" for p in self.problems)
            super().__init__(f"{source}: {count} problems:{lines}")


class ComponentNotFoundError(FacekitError):
    """A component name that no loaded plugin registered."""


class DuplicateComponentError(FacekitError):
    """Two plugins registered the same name for the same kind of component."""


class InvalidComponentSpec(FacekitError, ValueError):
    """A spec a plugin registers that no recipe could use (a name it cannot type, an unknown landmark scheme): left
    out alone, the plugin's other components stay."""


class ParamsError(FacekitError):
    """Parameters given to a component do not match its ``Params`` model."""

    def __init__(self, problems: Sequence[Problem], component: str) -> None:
        self.problems = list(problems)
        super().__init__(f"{component}: " + "; ".join(str(p) for p in self.problems))


class PluginError(FacekitError):
    """A plugin failed to import, or implements a hook that does not exist."""


#: Status of a photo on which the detector raised: the batch goes on, the photo's row says what it raised.
DETECTOR_ERROR = "detector_error"


class DetectorFailed(FacekitError):
    """The detector plugin raised on this photo (the message says which and what): a batch makes it that photo's
    ``detector_error`` row and goes on."""


class PhotoUnreadable(FacekitError):
    """The photo given cannot be read (a missing, damaged or oversized file, a closed or damaged PIL image, an image
    over the megapixel limit or without pixels): the photo's problem, not the call's, so a batch
    (``normalize_many``, ``measure_faces``) makes it that photo's ``unreadable`` outcome and goes on. A form the API
    cannot take (an array of the wrong shape or dtype, a file open in text mode) is a plain :class:`FacekitError`."""


class Terminated(BaseException):
    """SIGTERM (what ``timeout``, systemd, ``docker stop`` and job schedulers send) stopped a command, whose handler
    (:func:`sigterm_raises`) raises it as Ctrl+C raises KeyboardInterrupt, so that the run ends the same way: what
    is being written left whole, the progress display stopped, worker processes stopped. A BaseException, as
    KeyboardInterrupt, so that no ``except Exception`` (a bench cell's, which records the cell as failed and goes on)
    takes it for the run's own failure. The CLI says its message on one line and exits :attr:`exit_code` (128 +
    SIGTERM, as a shell reports a process SIGTERM ended)."""

    exit_code: int = 143


@contextmanager
def sigterm_raises(message: str) -> Iterator[None]:
    """SIGTERM raises :class:`Terminated` (``message``) while the block runs, as Ctrl+C raises KeyboardInterrupt
    (before: the default handler ended the process on the spot, without a word, a terminal kept the cursor a progress
    bar hid, and prepare's worker processes were left running). The previous handler is back after the block; after
    a first SIGTERM the default one is (a second ends the process at once). Only from the main thread (Python runs
    handlers there alone), and only over the default handler or another block's (an inner block's message is the
    more precise): a program that set its own keeps it."""
    import signal
    import threading

    previous = signal.getsignal(signal.SIGTERM)
    if threading.current_thread() is not threading.main_thread() or not (
        previous == signal.SIG_DFL or getattr(previous, "_facekit_sigterm", False)
    ):
        yield
        return

    def stop(signum: int, frame: Any) -> None:
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        raise Terminated(message)

    stop._facekit_sigterm = True  # type: ignore[attr-defined]
    signal.signal(signal.SIGTERM, stop)
    try:
        yield
    finally:
        if signal.getsignal(signal.SIGTERM) is stop:  # (once it fired: the default, until the outermost block ends)
            signal.signal(signal.SIGTERM, previous)


class StageNotBuiltError(FacekitError):
    """A recipe stage that validates but whose implementation has not landed yet."""


def did_you_mean(name: str, choices: Sequence[str], n: int = 1, cutoff: float = 0.6) -> str:
    """'did you mean 'a' or 'b'?' for the (up to ``n``) ``choices`` nearest ``name`` (difflib), or '' for none."""
    import difflib

    close = difflib.get_close_matches(name, list(choices), n=n, cutoff=cutoff)
    return "did you mean " + " or ".join(repr(c) for c in close) + "?" if close else ""


# ------------------------------------------------------------------------------ warnings the CLI leaves out
# Here rather than in facekit.images (numpy at its top), so that every command, --help included, sets the filter
# without importing numpy.

#: Pillow's DecompressionBombWarning as it says a photo is over its own limit (89 MP) while opening it.
PILLOW_SIZE_WARNING = r"Image size \(\d+ pixels\) exceeds limit of \d+ pixels"


def quiet_pillow_size_warning() -> None:
    """Leave out Pillow's DecompressionBombWarning: facekit refuses or allows each photo against
    :func:`facekit.images.max_megapixels` and says so in the photo's row, so the warning only repeats it as a
    traceback-like line. The CLI calls this at start; prepare's worker processes, which do not inherit a filter,
    follow their parent's (:func:`pillow_size_warning_quiet`)."""
    import warnings

    warnings.filterwarnings("ignore", message=PILLOW_SIZE_WARNING)


def pillow_size_warning_quiet() -> bool:
    """Whether this process leaves out Pillow's size warning (:func:`quiet_pillow_size_warning`)."""
    import warnings

    return any(
        action == "ignore" and message is not None and message.pattern == PILLOW_SIZE_WARNING
        for action, message, *_ in warnings.filters
    )


def debug_requested() -> bool:
    """``FACEKIT_DEBUG`` asks for tracebacks instead of one-line errors; unset, empty, 0, false, no and off do not."""
    import os

    return os.environ.get("FACEKIT_DEBUG", "").strip().lower() not in ("", "0", "false", "no", "off")
