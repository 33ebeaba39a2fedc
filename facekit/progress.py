"""rich progress bars that a log can follow: where the bar's console is not a terminal (``nohup facekit run ... >
run.log 2>&1``, a pipe, CI), rich draws nothing until the bar stops, so a training of hours left its log empty. There
:class:`Progress` also writes plain lines on stderr, at most every ``FACEKIT_PROGRESS_INTERVAL`` seconds (default 30)
or every tenth of the work, whichever comes first, and a last line when a task ends::

    train loss 0.0139: 1713/4000 (42 %), 1.9 s/step, ETA 1 h 12 min
    train loss 0.0120: 4000/4000 (100 %) done in 2 h 7 min, 1.9 s/step

In a terminal (or Jupyter) the bar is rich's, unchanged, and no line is written; elsewhere the plain lines are all
there is (rich's finished bar is not added after them on stdout). Every long CLI task uses this class or :func:`track`
instead of rich's, and every spinner :func:`status` instead of ``console.status``, so the rule lives in one place.
"""

from __future__ import annotations

import errno
import math
import os
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from operator import length_hint
from typing import Any, TypeVar

import rich.live
import rich.progress
import rich.status
from rich.console import Console
from rich.text import Text

from facekit.errors import FacekitError, hangup_seen_in_a_thread, stops_held

#: Seconds between two plain lines of a task at most (a tenth of the work done sooner writes one sooner).
DEFAULT_INTERVAL_S = 30.0
#: The share of a task's total after which a plain line is written however little time has passed.
STEP_FRACTION = 0.1

Item = TypeVar("Item")


def progress_interval() -> float:
    """``FACEKIT_PROGRESS_INTERVAL`` in seconds (0: a line at every update), else :data:`DEFAULT_INTERVAL_S`."""
    value = os.environ.get("FACEKIT_PROGRESS_INTERVAL", "")
    try:
        interval = float(value) if value else DEFAULT_INTERVAL_S
    except ValueError:
        raise FacekitError(f"FACEKIT_PROGRESS_INTERVAL must be a number of seconds, got {value!r}") from None
    if not 0 <= interval < math.inf:
        raise FacekitError(f"FACEKIT_PROGRESS_INTERVAL must be a finite number of seconds, 0 or more, got {value!r}")
    return interval


@dataclass
class _Reported:
    """What a task's plain lines have said so far."""

    started_s: float  # when the task was first seen, and its count then (a resumed training starts past 0)
    completed_at_start: float
    last_s: float
    next_fraction: float
    ended: bool = False
    said: bool = False  # a line was written


class _Live(rich.live.Live):
    """rich's live display, whose refresh thread (a bar's or a spinner's, ten times a second) ends when the terminal
    hangs up, and the command with it, as on the terminal's SIGHUP (:func:`facekit.errors.hangup_seen_in_a_thread`),
    which may come after, or never (a command in a session of its own: ``setsid``). Before, the command ran on
    unshown to its end (its display stopped drawing: a hung-up terminal is no tty) and then said it had been
    stopped, its last write failing; with ``FORCE_COLOR`` set, the thread also died with a traceback."""

    def start(self, refresh: bool = False) -> None:
        """rich's start, whole or not at all: a stop (SIGTERM, SIGHUP, Ctrl+C) that comes as it runs is held until it
        has started the display's thread (:func:`facekit.errors.stops_held`), and then stops the display before it is
        raised. Before, its handler raised inside the start (in ``Thread.start``), the display stayed on past the
        command's line, its thread drawing, and the terminal kept the cursor it hid (the log lost the bar's last
        line), as the ``with`` that starts it, which never began, never stopped it."""
        try:
            with stops_held():
                super().start(refresh)
        except BaseException:
            self.stop()
            raise

    def refresh(self) -> None:  # (ten times a second: its imports are the module's)
        thread = threading.current_thread()
        if not isinstance(thread, _REFRESH_THREAD):
            super().refresh()
            return
        try:
            super().refresh()
        except OSError as error:
            if error.errno != errno.EIO or not hangup_seen_in_a_thread():
                raise
            thread.stop()
            return
        if hangup_seen_in_a_thread():
            thread.stop()


#: rich's refresh thread class (private to rich): a rich without it keeps its own refresh, bars and spinners unchanged.
_REFRESH_THREAD: Any = getattr(rich.live, "_RefreshThread", type(None))


def _refresh_thread_stops_on_a_hangup(live: rich.live.Live | None) -> None:
    """``live`` (made by rich's Progress or Status, which take no Live of ours) made a :class:`_Live`: the same
    object, state and all, with its refresh. Left as it is where it is not rich's own Live (a rich that changed)."""
    if type(live) is rich.live.Live and _REFRESH_THREAD is not type(None):
        live.__class__ = _Live


class Progress(rich.progress.Progress):
    """rich's :class:`~rich.progress.Progress`, plus plain lines on ``lines`` (default: stderr) when its console is
    not a terminal. A task's ``unit`` field names what it counts in those lines (default ``item``)."""

    def __init__(self, *columns: Any, lines: Console | None = None, **kwargs: Any) -> None:
        super().__init__(*columns, **kwargs)
        _refresh_thread_stops_on_a_hangup(self.live)
        self._writes_lines = not animates(self.console) and not self.disable
        if self._writes_lines:  # the lines say it all: rich's finished bar after them was the log's last line twice
            self.live.transient = True
        # (read even in a terminal: a bad value is said at once, not only when the output is redirected)
        self._interval = progress_interval()
        self._lines = lines or plain_lines()
        self._reported: dict[rich.progress.TaskID, _Reported] = {}

    def update(self, task_id: rich.progress.TaskID, **kwargs: Any) -> None:
        super().update(task_id, **kwargs)
        self._report(task_id)

    def advance(self, task_id: rich.progress.TaskID, advance: float = 1) -> None:
        super().advance(task_id, advance)
        self._report(task_id)

    def add_task(self, description: str, *args: Any, **kwargs: Any) -> rich.progress.TaskID:
        task_id = super().add_task(description, *args, **kwargs)
        if self._writes_lines:
            with self._lock:
                task = self._tasks[task_id]
                now = self.get_time()
                self._reported[task_id] = _Reported(now, task.completed, now, self._next_fraction(task))
        return task_id

    def stop(self) -> None:
        """rich's stop, then a last line for each task that has not had one (stopped before its end: an error, a
        signal). Where it writes lines, rich's own stop is left out after the display's: it printed a blank line on
        the bar's console (stdout) where that is no terminal."""
        if self._writes_lines:
            self.live.stop()
        else:
            super().stop()
        with self._lock:
            for task_id in self._reported:
                self._report(task_id, stopping=True)

    @staticmethod
    def _next_fraction(task: rich.progress.Task) -> float:
        if not task.total:
            return math.inf
        # (rounded: 900 / 3000 / 0.1 is 2.9999999999999996, which wrote 30 % twice)
        return (math.floor(round(task.completed / task.total / STEP_FRACTION, 9)) + 1) * STEP_FRACTION

    def _report(self, task_id: rich.progress.TaskID, stopping: bool = False) -> None:
        with self._lock:
            reported = self._reported.get(task_id)
            if reported is None or reported.ended:
                return
            task = self._tasks[task_id]
            now = self.get_time()
            finished = task.total is not None and task.completed >= task.total
            due = now - reported.last_s >= self._interval or (
                task.total and task.completed / task.total >= reported.next_fraction - 1e-9
            )
            if not (finished or stopping or due):
                return
            reported.last_s, reported.next_fraction = now, self._next_fraction(task)
            reported.ended = finished or stopping
            if stopping and not finished and not reported.said and task.completed == reported.completed_at_start:
                return  # nothing done and nothing said: the error or stop line says it (not "stopped at 0/1")
            reported.said = True
            self._lines.print(self._line(task, reported, now, finished, stopping))

    def _line(self, task: rich.progress.Task, reported: _Reported, now: float, finished: bool, stopping: bool) -> str:
        unit = str(task.fields.get("unit", "item"))
        # A task's "finished" field: the items finished whole, where its bar moves by parts of them (PhotoCount); the
        # count says those, the percentage, rate and ETA follow the bar.
        done = task.fields.get("finished", task.completed)
        count = _number(done) if task.total is None else f"{_number(done)}/{_number(task.total)}"
        if task.total:
            count += f" ({math.floor(round(100 * task.completed / task.total, 9))} %)"  # (29 %, not 28.999... %)
        elapsed = now - reported.started_s
        done_here = task.completed - reported.completed_at_start
        # The mean since the task began, not rich's speed over the last 30 s: rows that come a batch at a time made
        # that 60000 photos/s, and a line is read a while after it was written.
        speed = done_here / elapsed if elapsed > 0 and done_here > 0 else None
        rate = "" if speed is None else f", {_rate(speed, unit)}"
        if finished:
            return f"{task.description}: {count} done in {_duration(elapsed)}{rate}"
        if stopping:
            return f"{task.description}: stopped at {count} after {_duration(elapsed)}"
        eta = "" if speed is None or task.total is None else f", ETA {_duration((task.total - task.completed) / speed)}"
        return f"{task.description}: {count}{rate}{eta}"


class RateColumn(rich.progress.ProgressColumn):
    """The task's rate in its ``unit``, as the plain lines say it (``1.9 s/step``, ``4.8 identity/s``), for a bar in
    a terminal: rich's own columns give an ETA but no rate, so a training in a terminal never said its s/step while
    its log did. Empty until rich has measured a speed."""

    def render(self, task: rich.progress.Task) -> Text:
        speed = task.finished_speed or task.speed
        if not speed:
            return Text("")
        return Text(_rate(speed, str(task.fields.get("unit", "item"))), style="progress.data.speed")


def plain_lines() -> Console:
    """Where the plain lines go: stderr, as written (no markup, highlighting or wrapping)."""
    return Console(stderr=True, markup=False, highlight=False, soft_wrap=True)


def animates(console: Console) -> bool:
    """Whether rich animates on ``console``: a terminal that is not dumb, or Jupyter. Anywhere else a bar shows
    nothing until it stops (rich.live.Live.refresh), and a spinner nothing at all (it is transient)."""
    return console.is_jupyter or (console.is_terminal and not console.is_dumb_terminal)


@contextmanager
def status(
    console: Console,
    message: str,
    lines: Console | None = None,
    get_time: Callable[[], float] = time.monotonic,
    **kwargs: Any,
) -> Iterator[None]:
    """``console.status(message)``, rich's spinner, where ``console`` animates (``kwargs`` go to it). Anywhere else
    (a log: ``nohup facekit serve > serve.log``) the spinner wrote nothing at all; there a plain line on ``lines``
    (default: stderr) says ``message ...`` as it starts and, when it lasted ``FACEKIT_PROGRESS_INTERVAL`` seconds or
    more, ``message: done in 2 min 5 s`` (or ``stopped after``, on an error) as it ends. Every spinner in facekit and
    its plugins is this one."""
    if animates(console):
        spinner = rich.status.Status(message, console=console, **kwargs)  # (console.status, with our refresh)
        _refresh_thread_stops_on_a_hangup(getattr(spinner, "_live", None))
        with spinner:
            yield
        return
    interval = progress_interval()
    lines = lines or plain_lines()
    lines.print(f"{message} ...")
    started = get_time()
    ended = "stopped after"
    try:
        yield
        ended = "done in"
    finally:
        elapsed = get_time() - started
        if elapsed >= interval:
            lines.print(f"{message}: {ended} {_duration(elapsed)}")


def track(
    sequence: Iterable[Item], description: str, total: float | None = None, unit: str = "item", **kwargs: Any
) -> Iterator[Item]:
    """rich's :func:`~rich.progress.track` through :class:`Progress`; ``kwargs`` go to :class:`Progress`."""
    if total is None:
        total = float(length_hint(sequence)) or None
    with Progress(*Progress.get_default_columns(), **kwargs) as bar:
        yield from bar.track(sequence, task_id=bar.add_task(description, total=total, unit=unit))


#: The share of a photo's progress that its face detection stands for in a folder's bar (:class:`PhotoCount`): 1.57
#: of the 1.74 s of a 4000 px photo (``facekit normalize``, CPU), and what comes after it is done a batch at a time.
DETECTION_SHARE = 0.9


class PhotoCount:
    """A folder command's bar (``task`` of ``progress``, its total the photos), moved as each photo is worked on, not
    as each batch of them ends: :meth:`detected` as a photo's face detection ends (``detection_share`` of the photo,
    default :data:`DETECTION_SHARE`), :meth:`reached` as a command's later work on it ends (``facekit avatar``'s fit
    and renders, then its files), :meth:`row` as a photo's row is told (the rest of it; all of it for a photo never
    detected: done, exists, unreadable). Before, the bar of eight large photos sat at 0 for 26 s, then said "ETA 3
    min" just before "done". Used as a context manager, a stop (an error, Ctrl+C) leaves the count at the photos whose
    rows were told, as the "stopped at" line says, not at a part of one."""

    def __init__(
        self, progress: rich.progress.Progress, task: rich.progress.TaskID, detection_share: float = DETECTION_SHARE
    ) -> None:
        self._progress, self._task = progress, task
        self._detection_share = detection_share
        self.rows = 0
        self._parts: list[float] = []  # photos worked on whose rows are still to come: the share of each done

    def detected(self, *_: Any) -> None:
        self._parts.append(self._detection_share)
        self._show()

    def reached(self, share: float) -> None:
        """The next photo worked on has reached ``share`` of its work (the first one in flight below it: a command
        works on a batch's photos in turn)."""
        for place, part in enumerate(self._parts):
            if part < share:
                self._parts[place] = share
                break
        self._show()

    def row(self, *_: Any) -> None:
        self.rows += 1
        if self._parts:
            self._parts.pop(0)
        self._show()

    def _show(self) -> None:  # (whole when no photo waits for its row: a sum of shares ended at 23.999999)
        # The bar and its percentage move by parts of photos; the count a line says is of whole photos, those whose
        # rows were told (the task's "finished"). Before, a log read "normalizing: 1.8/12" of photos in a folder.
        self._progress.update(self._task, completed=self.rows + sum(self._parts), finished=self.rows)

    def __enter__(self) -> PhotoCount:
        return self

    def __exit__(self, kind: type[BaseException] | None, *_: Any) -> None:
        if kind is not None and self._parts:
            self._parts.clear()
            self._show()


def _number(count: float) -> str:
    """``1000000`` (``:g`` made it ``1e+06``), ``2.5``."""
    return str(int(count)) if float(count).is_integer() else f"{count:g}"


def _rate(per_second: float, unit: str) -> str:
    if per_second >= 1:
        return f"{per_second:.0f} {unit}/s" if per_second >= 100 else f"{per_second:.3g} {unit}/s"  # (not 1e+03)
    return f"{_duration(1 / per_second)}/{unit}"


def _duration(seconds: float) -> str:
    """``42 s``, ``3 min 20 s``, ``2 h 5 min``: a log reader's precision."""
    if seconds < 60:
        return f"{seconds:.1f} s" if seconds < 10 else f"{seconds:.0f} s"
    minutes, secs = divmod(round(seconds), 60)
    if minutes < 60:
        return f"{minutes} min {secs} s" if secs else f"{minutes} min"
    hours, minutes = divmod(minutes, 60)
    return f"{hours} h {minutes} min" if minutes else f"{hours} h"
