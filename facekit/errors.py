"""Errors that facekit knows how to explain.

Every error a user can cause (a bad recipe, a missing weight file, a broken plugin) is a
:class:`FacekitError`. The CLI prints its message on one line and exits with :attr:`exit_code`;
anything else is a bug and propagates with its traceback.
"""

from __future__ import annotations

import errno
import io
import os
import signal
import sys
import threading
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from types import TracebackType
from typing import Any

#: OSErrors that are the machine's or the user's paths, not a facekit bug (a full disk, a file one may not read):
#: the CLI says them in one line, exit 1, wherever they are raised (a component's factory too: not a plugin's bug).
ENVIRONMENT_ERRNOS = frozenset(
    {
        errno.ENOSPC,
        errno.EDQUOT,
        errno.EACCES,
        errno.EPERM,
        errno.EROFS,
        errno.ENOTDIR,
        errno.EEXIST,
        errno.EISDIR,
        errno.EIO,
    }
)


class FacekitError(Exception):
    """A problem the user can fix; ``str(err)`` says what and how."""

    exit_code: int = 1


@dataclass(frozen=True)
class Problem:
    """One problem found in a recipe, located by its dotted path (``components.encoder.params.x``); a cross-field
    rule's (``train.background_rgb`` needs ``train.background: plain``) names in ``about`` the other settings it reads,
    so that it is labelled with whichever of them the user set (:func:`facekit.recipe.resolve`)."""

    path: str
    message: str
    about: tuple[str, ...] = ()

    def __str__(self) -> str:
        return f"{self.path}: {self.message}" if self.path else self.message


def raise_first(problems: Sequence[Problem]) -> None:
    """Raise the first of ``problems`` as a :class:`SettingsRefused` (a stage refusing a recipe's settings as it
    starts, where `facekit check` says them all), if there are any."""
    if problems:
        raise SettingsRefused(str(problems[0]))


class SettingsRefused(FacekitError):
    """A recipe's setting that a stage refuses from the settings alone (one of :func:`facekit.pipeline.run_refusals`'
    problems, said as ``path: message``): a recipe problem, exit 2, as `facekit check` exits for the same one (before,
    `facekit run` exited 1 for it and `facekit check` 2)."""

    exit_code = 2


class OptionsRefused(FacekitError):
    """A command line whose options do not go together or name what is not there (``--resume`` where no training
    runs, an unknown ``--stage``, a recipe or bench grid that is neither a file nor a shipped recipe's name): a usage
    error, exit 2, as Typer's own (before, ``--resume`` without a training stage, and `facekit run Paper`, exited 1,
    the code of a problem with the machine or the data)."""

    exit_code = 2


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
#: The reason of a ``no_face`` outcome; a command given an empty one (a third-party normalizer's) says this too.
NO_FACE = "no face found"


class DetectorFailed(FacekitError):
    """The detector plugin raised on this photo (the message says which and what): a batch makes it that photo's
    ``detector_error`` row and goes on."""


class NoFaceFound(FacekitError):
    """The detector found no face in the photo given to :meth:`facekit.Normalizer.normalize` (without ``all_faces``,
    which gives an empty list instead): a batch makes it that photo's ``no_face`` outcome and goes on."""


class PhotoUnreadable(FacekitError):
    """The photo given cannot be read (a missing, damaged or oversized file, a closed or damaged PIL image, an image
    over the megapixel limit or without pixels): the photo's problem, not the call's, so a batch
    (``normalize_many``, ``measure_faces``) makes it that photo's ``unreadable`` outcome and goes on. A form the API
    cannot take (an array of the wrong shape or dtype, a file open in text mode) is a plain :class:`FacekitError`."""


class Terminated(BaseException):
    """SIGTERM (what ``timeout``, systemd, ``docker stop`` and job schedulers send) or SIGHUP (what the shell sends a
    command's process group when its terminal or SSH session closes) stopped a command, whose handler
    (:func:`sigterm_raises`) raises it as Ctrl+C raises KeyboardInterrupt, so that the run ends the same way: what
    is being written left whole, the progress display stopped, worker processes stopped. A BaseException, as
    KeyboardInterrupt, so that no ``except Exception`` (a bench cell's, which records the cell as failed and goes on)
    takes it for the run's own failure. :attr:`signum` is the signal; the CLI says the message on one line and exits
    :attr:`exit_code`, 128 + the signal, as a shell reports a process the signal ended (143 for SIGTERM, 129 for
    SIGHUP). :attr:`said`: its message is a command's own stop line (:func:`stops_said`), which an outer command's
    keeps, as it keeps an :class:`Interrupted`."""

    said = False

    def __init__(self, message: str = "", signum: int = signal.SIGTERM) -> None:
        super().__init__(message)
        self.signum = int(signum)

    @property
    def exit_code(self) -> int:
        return 128 + self.signum

    @property
    def signal_name(self) -> str:
        """``SIGTERM``, ``SIGHUP``."""
        return signal.Signals(self.signum).name

    def __reduce__(self) -> tuple[Any, tuple[str, int]]:  # (pickled with its signal, not only its message)
        return (type(self), (str(self), self.signum))


class Interrupted(KeyboardInterrupt):
    """Ctrl+C stopped a command that has more to say than the CLI's general line: a training, whose message names
    the step its last checkpoint holds (as a SIGTERM's :class:`Terminated` does). A KeyboardInterrupt, so that
    whatever takes Ctrl+C takes it; the CLI says its message instead of the general one, and exits 130."""


@contextmanager
def stops_said(line: Callable[[str], str]) -> Iterator[None]:
    """A stop in the block (Ctrl+C, or SIGTERM or SIGHUP where :func:`sigterm_raises` holds them) says ``line(by)``,
    ``by`` the stop's name (``Ctrl+C``, ``SIGTERM``, ``SIGHUP``): what the command left written and what running it
    again does, instead of the CLI's general line. Raised as :class:`Terminated` with the same signal (the same exit
    code), or as :class:`Interrupted`; either from an inner block is raised as it is, the inner command's line the
    more precise (a bench's cell training; before, the inner Terminated was said again by the outer line, so a
    SIGTERM and a Ctrl+C said different things). Before: these lines were copied into each command that said its
    own, :class:`facekit.cli.PhotosStopped`, a training, a prepare."""
    try:
        yield
    except Terminated as stop:
        if stop.said:
            raise
        said = Terminated(line(stop.signal_name), stop.signum)
        said.said = True
        raise said from None
    except Interrupted:
        raise
    except KeyboardInterrupt:
        raise Interrupted(line("Ctrl+C")) from None


#: SIGHUP, where the system has it (not on Windows).
_SIGHUP: int | None = getattr(signal, "SIGHUP", None)

#: The signals :func:`sigterm_raises` turns into :class:`Terminated`: a stop asked from outside (SIGTERM) and the
#: command's terminal closing (SIGHUP, to its whole process group).
STOP_SIGNALS: tuple[int, ...] = (signal.SIGTERM,) if _SIGHUP is None else (signal.SIGTERM, _SIGHUP)

#: Signals a :func:`sigterm_raises` handler set to SIG_IGN when it fired (SIGHUP: the repeats of a hangup), which the
#: outermost block gives back to the handler before it.
_IGNORED_AFTER_A_STOP: set[int] = set()


def _stops(handler: Any) -> bool:
    """Whether ``handler`` (``signal.getsignal``'s) is a :func:`sigterm_raises` block's."""
    return bool(getattr(handler, "_facekit_sigterm", False))


def hangup_stops() -> bool:
    """Whether SIGHUP raises :class:`Terminated` in this process now (a :func:`sigterm_raises` block holds it): not
    under ``nohup`` (SIGHUP ignored), nor where a program set its own handler, nor outside a block."""
    return _SIGHUP is not None and _stops(signal.getsignal(_SIGHUP))


@contextmanager
def sigterm_raises(message: str) -> Iterator[None]:
    """SIGTERM and SIGHUP raise :class:`Terminated` (``message``, where ``{signal}`` is the signal's name) while the
    block runs, as Ctrl+C raises KeyboardInterrupt (before: the default handlers ended the process on the spot,
    without a word, a terminal kept the cursor a progress bar hid, prepare's worker processes were left running,
    and a training lost the step it was on). Each signal only over its default handler or another block's (an
    inner block's message is the more precise): a program that set its own keeps it, and a command started under
    ``nohup`` (SIGHUP ignored) keeps running when its terminal closes. Only from the main thread (Python runs
    handlers there alone). The previous handlers are back after the block. After a first stop, a SIGTERM ends the
    process at once, as the default handler does, while a SIGHUP is ignored until the outermost block ends: when a
    terminal closes, its shell and then the kernel each send the foreground command one, 0.2 ms apart, and the
    second would cut the stop short.

    On SIGHUP, stdout and stderr that went to the terminal, which has hung up, go to /dev/null (every write there
    failed with EIO: the progress bar's last one turned the stop into a traceback and exit 1); a log file they
    were redirected to keeps the message. A write that fails so before the SIGHUP comes (the terminal hangs up
    first, the shell sends the signal after) stops the block as the SIGHUP would: an OSError EIO raised in it while
    stdout or stderr is a hung-up terminal becomes its :class:`Terminated` (a failing disk's EIO, where neither is
    or where it names a file or the code that wrote holds the file, is raised as it was). So does a progress bar's
    or spinner's refresh thread that finds the terminal hung up (:func:`hangup_seen_in_a_thread`), so that a command
    no SIGHUP reaches (``setsid``) stops too.

    A process forked inside the block (a torch DataLoader's worker) gets KeyboardInterrupt instead, as from a
    terminal's Ctrl+C, and leaves the stop to its parent, which the signal sent to the group reaches too (on
    Terminated, torch's workers died with a traceback)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = {number: signal.getsignal(number) for number in STOP_SIGNALS}
    held = [number for number, handler in previous.items() if handler == signal.SIG_DFL or _stops(handler)]
    if not held:
        yield
        return
    owner = os.getpid()

    def stop(signum: int, frame: Any) -> None:
        for number in held:
            if signal.getsignal(number) is not stop:  # (a handler the command set since is its own: kept)
                continue
            signal.signal(number, signal.SIG_IGN if number == _SIGHUP else signal.SIG_DFL)
            if number == _SIGHUP:
                _IGNORED_AFTER_A_STOP.add(number)
        if signum == _SIGHUP:
            leave_a_hung_up_terminal()
        if os.getpid() != owner:
            raise KeyboardInterrupt
        raise Terminated(message.replace("{signal}", signal.Signals(signum).name), signum)

    stop._facekit_sigterm = True  # type: ignore[attr-defined]
    for number in held:
        signal.signal(number, stop)
    try:
        yield
    except OSError as error:
        # A write to the terminal after it hung up and before its SIGHUP came (the shell's, sent once the shell has
        # run) fails with EIO: the same stop as the signal's. Only where stdout or stderr is that terminal: a failing
        # disk's EIO, with no such terminal, is raised as it was, and so is one that names a file (an open, a rename:
        # a write to the terminal names none), or one from a write to a file already open, which names none either
        # but whose file the writing code holds (before: while a hung-up terminal was there, it read as the hangup,
        # exit 129, the disk's error lost to the log stderr went to).
        terminals = hung_up() if error.errno == errno.EIO and error.filename is None else []
        if (
            terminals
            and _SIGHUP is not None
            and signal.getsignal(_SIGHUP) is stop
            and not _written_to_a_file(error, terminals)
        ):
            stop(_SIGHUP, None)
        raise
    finally:
        for number in held:
            current = signal.getsignal(number)
            if current is stop:  # (once a stop fired: SIGTERM's default, SIGHUP ignored, until the outermost block)
                signal.signal(number, previous[number])
            elif current == signal.SIG_IGN and number in _IGNORED_AFTER_A_STOP and not _stops(previous[number]):
                _IGNORED_AFTER_A_STOP.discard(number)
                signal.signal(number, previous[number])


#: What a stop asked for by the user raises from its handler in the main thread: SIGTERM and SIGHUP
#: (:func:`sigterm_raises`), SIGINT (Ctrl+C, Python's KeyboardInterrupt).
_USER_STOPS: frozenset[int] = frozenset((*STOP_SIGNALS, signal.SIGINT))


@contextmanager
def stops_held() -> Iterator[None]:
    """SIGTERM, SIGHUP and SIGINT held back while the block runs (a progress bar's display starting its refresh
    thread: :class:`facekit.progress.Progress`): one sent meanwhile raises its :class:`Terminated` or
    KeyboardInterrupt as the block ends, from its end, and never inside ``Thread.start`` or halfway through the
    block, which the code around it cannot undo (a bar's display left started: the terminal's cursor hidden after
    the command's line, the display's thread drawing on). Held by their Python handlers, which the main thread alone
    runs, whichever thread the kernel gave the signal to: before, by the main thread's signal mask, which held one
    only in a process of one thread (the kernel gave it to another, torch's OpenMP threads or any Python thread, and
    the main thread ran its handler at its next check, inside the block). A signal whose handler is no Python
    function (the default action, ignored) is left as it is; so is one whose handler the block sets. Elsewhere than
    in the main thread, which sets no handler, the block runs as it is."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    handlers = {number: signal.getsignal(number) for number in _USER_STOPS}
    held = {number: handler for number, handler in handlers.items() if callable(handler)}
    came: list[int] = []
    holding = [True]

    def hold(signum: int, frame: Any) -> None:
        if holding:
            came.append(signum)
        else:  # (the block has ended and this one is not given back yet: the handler it held)
            held[signum](signum, frame)

    for number in held:
        signal.signal(number, hold)
    try:
        yield
    finally:
        holding.clear()  # (one step: a signal from here on reaches its own handler)
        for number, handler in held.items():
            if signal.getsignal(number) is hold:
                signal.signal(number, handler)
        for number in dict.fromkeys(came):  # (each once, as the kernel keeps one of each pending)
            held[number](number, None)


def stop_only_from_parent(_worker_id: int | None = None) -> None:
    """In a worker process (a prepare worker; a torch DataLoader's, as its ``worker_init_fn``), before it starts a
    thread: a SIGTERM its parent sends (multiprocessing's ``terminate``, which a broken pool or a worker that does not
    join in time gets) ends it at once, as torch's own handler does; one from anyone else is left to the parent. Such
    a SIGTERM is sent to the whole process group or cgroup (systemd's ``systemctl stop``, Slurm's scancel,
    ``kill -TERM -- -PGID``), and so reaches the parent too, which stops its workers between two items as on a
    SIGTERM to it alone. Before, each worker ended wherever it was: torch's said "DataLoader worker is killed by
    signal: Terminated" in a traceback after the run's line, and a prepare that had the workers' signal before its
    own said "a prepare worker stopped without finishing", exit 1. A SIGTERM to a worker alone no longer ends it
    (its parent's does), unless its parent is gone (then anyone's does). Where the system cannot tell who sent a
    signal (no ``sigwaitinfo``: macOS, Windows), the worker keeps the handler it has."""
    _fd_receivers_hangups_unsaid()
    if not hasattr(signal, "sigwaitinfo"):
        return
    parent = os.getppid()
    # Blocked in this thread and so in every thread it starts after: the signal waits for sigwaitinfo below, never
    # reaching a handler (torch's, which ends the worker on a SIGTERM from anyone, sees none).
    signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGTERM})

    def wait() -> None:
        # (a worker its parent left, killed by the out-of-memory killer, takes anyone's: there is no parent to stop it)
        while signal.sigwaitinfo({signal.SIGTERM}).si_pid != parent and os.getppid() == parent:
            continue
        os._exit(0)

    threading.Thread(target=wait, name="facekit-stop-from-parent", daemon=True).start()


def _fd_receivers_hangups_unsaid() -> None:
    """In a worker process: a process that hangs up halfway through taking a tensor's shared memory from it (torch
    hands it over as a file descriptor, through multiprocessing's ``resource_sharer``, whose thread answers each
    taker) is no traceback on the run's stderr. The thread printed one for the ``EOFError`` or ``OSError`` of the
    handshake (``deliver_challenge``) when the parent, stopped by a SIGTERM to the process group as it unpickled a
    batch, dropped the connection: the run's one line came with a traceback after it (ci136, 1 run in ~14). The
    taker says what went wrong on its side; the worker has nothing to add, and the thread goes on serving. Any other
    error of that thread, and any other exception, still goes to the hook there was."""
    try:
        from multiprocessing import resource_sharer

        serve = resource_sharer._ResourceSharer._serve.__code__  # type: ignore[attr-defined]
    except (ImportError, AttributeError):  # (a Python without it: nothing to quiet)
        return
    before = sys.excepthook

    def hook(kind: type[BaseException], error: BaseException, trace: TracebackType | None) -> None:
        if trace is not None and trace.tb_frame.f_code is serve and isinstance(error, EOFError | OSError):
            return
        before(kind, error, trace)

    sys.excepthook = hook


@contextmanager
def workers_start_with_sigterm_held() -> Iterator[None]:
    """SIGTERM held back from this thread while the block starts worker processes (``iter`` of a torch DataLoader,
    the submits that spawn prepare's), which are born with it held until their :func:`stop_only_from_parent` takes
    it: a SIGTERM to the process group as they started reached them before that, under torch's handler or the
    default one (the worker ended, and the run with a traceback or "a prepare worker stopped without finishing").
    One sent to this process meanwhile comes as the block ends. (A thread started in the block, such as a process
    pool's manager thread, keeps it blocked: the signal goes to the others, Python's handler to the main thread.)"""
    if not hasattr(signal, "sigwaitinfo"):
        yield
        return
    before = signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGTERM})
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, before)


@contextmanager
def data_workers_lost_said(hint: str) -> Iterator[None]:
    """torch's RuntimeError for a DataLoader worker that ended while the block read from it (killed: the
    out-of-memory killer, kill -9) as one line, a :class:`FacekitError` ending with ``hint`` (what to do): before, a
    traceback ("DataLoader worker (pid N) is killed by signal: Killed"), status 1."""
    try:
        yield
    except RuntimeError as error:
        said = str(error).strip().splitlines()[0].rstrip(". ") if str(error).strip() else ""
        if not said.startswith("DataLoader worker (pid"):
            raise
        raise FacekitError(
            f"a worker process ended before its work was done ({said}; out of memory, or killed): {hint}"
        ) from None


def data_batches(loader: Any) -> _Batches:
    """The batches of a torch DataLoader with worker processes: ``iter(loader)`` now, its workers started with
    SIGTERM held (:func:`workers_start_with_sigterm_held`), and an iterator of its batches (with the loader's
    length, for a bar's total) under which a worker that dies (the out-of-memory killer, kill -9) is torch's
    RuntimeError only where the loop waits for a batch, or as it asks for the next (:func:`data_workers_lost_said`
    makes it one line). torch's SIGCHLD handler raised it wherever the main thread was: in ``Thread.start`` of a
    progress bar's refresh thread it broke the thread's start (``KeyError`` in ``del _limbo[self]``: a traceback
    instead of the line, or the thread's traceback after it), and in code that takes a lock with ``acquire()``
    before its ``try`` it could leave the lock taken."""
    _worker_deaths_raised_in_waits()
    _DEATHS_SEEN.clear()
    with workers_start_with_sigterm_held():
        batches = iter(loader)
    return _Batches(batches)


class _Batches:
    """A DataLoader iterator that first raises the worker death its SIGCHLD came with outside a wait."""

    def __init__(self, batches: Any) -> None:
        self._batches = batches

    def __iter__(self) -> _Batches:
        return self

    def __len__(self) -> int:
        return len(self._batches)

    def __next__(self) -> Any:
        if _DEATHS_SEEN:
            raise RuntimeError(_DEATHS_SEEN[0])
        return next(self._batches)

    def close(self) -> None:
        """Shut the workers down now (for the caller's ``finally``). Dropping the last reference is not enough where
        an error or a stop came inside ``next``: its traceback holds torch's iterator (its frames' ``self``), and the
        workers, each with its copy of the data set, ran on for as long as the error was kept (a notebook keeps the
        last one)."""
        shutdown = getattr(self._batches, "_shutdown_workers", None)  # (none without workers)
        if shutdown is not None:
            shutdown()


#: What torch said of a DataLoader worker's death whose SIGCHLD came while the main thread was not waiting for a
#: batch: :class:`_Batches` raises it as the loop asks for the next.
_DEATHS_SEEN: list[str] = []


def _worker_deaths_raised_in_waits() -> None:
    """torch's SIGCHLD handler (set for every DataLoader of the process, set here first if need be), wrapped so
    that the RuntimeError it raises for a dead worker comes out only in the DataLoader's wait for a batch
    (``_try_get_data``, which turns any error into its own check of the workers), never inside ``Thread.start``;
    elsewhere it is kept in :data:`_DEATHS_SEEN`. From the main thread only (torch sets none from another)."""
    if threading.current_thread() is not threading.main_thread() or not hasattr(signal, "SIGCHLD"):
        return
    from torch.utils.data import dataloader
    from torch.utils.data._utils import signal_handling

    set_torchs = getattr(signal_handling, "_set_SIGCHLD_handler", None)
    if set_torchs is not None:
        set_torchs()  # (torch's, once per process: the loader's iter sets none after it)
    torchs = signal.getsignal(signal.SIGCHLD)
    if not callable(torchs) or getattr(torchs, "_facekit_waits", False):
        return
    # (a torch without it: no death is raised from the handler; each loop asks, and torch's own check of the
    # workers after 5 s without a batch finds the rest)
    wait = getattr(getattr(dataloader._MultiProcessingDataLoaderIter, "_try_get_data", None), "__code__", None)
    start = threading.Thread.start.__code__

    def handler(signum: int, frame: Any) -> None:
        try:
            torchs(signum, frame)
        except RuntimeError as error:
            codes = []
            while frame is not None:
                codes.append(frame.f_code)
                frame = frame.f_back
            if wait in codes and start not in codes:
                raise
            _DEATHS_SEEN.append(str(error))

    handler._facekit_waits = True  # type: ignore[attr-defined]
    signal.signal(signal.SIGCHLD, handler)


def hung_up(fds: Sequence[int] = (1, 2)) -> list[int]:
    """Those of ``fds`` (stdout and stderr) that write to a terminal that hung up (closed: an empty write fails with
    EIO there, and nowhere else: a file, a pipe, a live terminal, a closed descriptor take it or fail otherwise)."""
    found = []
    for fd in fds:
        try:
            os.write(fd, b"")
        except OSError as exc:
            if exc.errno == errno.EIO:
                found.append(fd)
    return found


def _written_to_a_file(error: OSError, terminals: Sequence[int]) -> bool:
    """Whether an OSError that names no file came from writing to a file other than the hung-up ``terminals`` (fds):
    the innermost Python frame it passed through, which made the failing call, holds a file object (a local, or a
    rich Console's file), none of them a terminal's. A closed one counts (``with open(...)`` closes it as the error
    leaves the block; stdout and stderr are never closed). Where that frame holds none (a ``print``, an
    ``os.write`` to a number), it cannot be told, and False. The file's name becomes the error's ``filename``, for
    the line that says it."""
    trace = error.__traceback__
    while trace is not None and trace.tb_next is not None:
        trace = trace.tb_next
    if trace is None:
        return False
    files = []
    for value in list(trace.tb_frame.f_locals.values()):
        if type(value).__module__ == "rich.console":  # (rich's write: self.file.write, self.file.flush)
            value = getattr(value, "file", None)
        if not isinstance(value, io.IOBase):
            continue
        if not value.closed:
            try:
                fd = value.fileno()
            except (OSError, ValueError):  # no file behind it (a BytesIO)
                continue
            if any(os.path.sameopenfile(fd, terminal) for terminal in terminals):
                return False
        try:
            name = getattr(value, "name", None)
        except ValueError:  # (a closed wrapper may refuse it)
            name = None
        files.append(name)
    if not files:
        return False
    error.filename = next((name for name in files if isinstance(name, str)), None)
    return True


def hangup_seen_in_a_thread() -> bool:
    """For a thread other than the main one (rich's refresh thread): whether stdout or stderr is a terminal that hung
    up (:func:`hung_up`), which the thread is to take as its end, quietly. Where a :func:`sigterm_raises` block holds
    SIGHUP, the main thread gets one now, and the command stops as on the terminal's own (which may come later, or
    never: a command in a session of its own, ``setsid``), as it does on a failed write of its own: the block's
    line, exit 129."""
    if _SIGHUP is None or not hung_up():
        return False
    main = threading.main_thread().ident
    if hangup_stops() and main is not None:
        signal.pthread_kill(main, _SIGHUP)
    return True


def leave_a_hung_up_terminal() -> None:
    """Point stdout and stderr at /dev/null where they write to a terminal that hung up (:func:`hung_up`), so that
    what a stopping command still writes (a progress bar's last refresh, its message) no longer fails. Also for a
    command's own SIGHUP handler (``facekit serve``'s)."""
    for fd in hung_up():
        null = os.open(os.devnull, os.O_WRONLY)
        try:
            os.dup2(null, fd)
        finally:
            os.close(null)


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
