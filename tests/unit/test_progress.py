"""facekit.progress: plain lines a log can follow where the bar's console is not a terminal; rich's bar, unchanged,
in one. A fake clock (rich's ``get_time``) stands in for time: no test sleeps."""

from __future__ import annotations

import contextlib
import io
import os
import signal
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import rich.progress
from rich.console import Console

from facekit.errors import FacekitError
from facekit.progress import Progress, track


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def consoles(terminal: bool) -> tuple[Console, Console, io.StringIO, io.StringIO]:
    shown, written = io.StringIO(), io.StringIO()
    bar = Console(file=shown, force_terminal=terminal, force_jupyter=False, width=100)
    return bar, Console(file=written, soft_wrap=True), shown, written


def test_a_log_gets_a_line_every_tenth_of_the_work_and_a_last_one(monkeypatch: pytest.MonkeyPatch) -> None:
    """Before: redirected to a file, the bar wrote nothing until the task ended (`tail -f run.log` said nothing for
    the hours of a training)."""
    monkeypatch.delenv("FACEKIT_PROGRESS_INTERVAL", raising=False)  # 30 s: a tenth below takes 8 s
    bar_console, lines, _, written = consoles(terminal=False)
    clock = Clock()
    with Progress(console=bar_console, lines=lines, get_time=clock, auto_refresh=False) as bar:
        task = bar.add_task("train", total=40, unit="step")
        for step in range(1, 41):
            clock.now += 2.0
            bar.update(task, advance=1, description=f"train loss {1 / step:.4f}")
            if step == 4:  # a tenth done: said while it runs, with what the bar shows
                assert written.getvalue() == "train loss 0.2500: 4/40 (10 %), 2.0 s/step, ETA 1 min 12 s\n"
            if step == 5:  # and nothing more until the next tenth
                assert written.getvalue().count("\n") == 1
    said = written.getvalue().splitlines()
    assert [line.split(": ")[1].split(" (")[0] for line in said] == [f"{n}/40" for n in range(4, 41, 4)]
    assert said[-1] == "train loss 0.0250: 40/40 (100 %) done in 1 min 20 s, 2.0 s/step"


def test_a_slow_task_gets_a_line_every_interval(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FACEKIT_PROGRESS_INTERVAL", "60")
    bar_console, lines, _, written = consoles(terminal=False)
    clock = Clock()
    with Progress(console=bar_console, lines=lines, get_time=clock, auto_refresh=False) as bar:
        task = bar.add_task("prepare", total=1000, unit="identity")
        for _ in range(25):  # 2.5 % of the work, 25 s each: a line each time a minute has passed
            clock.now += 25.0
            bar.advance(task)
    said = written.getvalue().splitlines()
    assert said[0] == "prepare: 3/1000 (0 %), 25 s/identity, ETA 6 h 55 min"  # 75 s: the first minute passed
    assert [line.split("/")[0] for line in said[:-1]] == [f"prepare: {n}" for n in range(3, 25, 3)]
    # Stopped before the end (an error, Ctrl+C): a last line says where.
    assert written.getvalue().splitlines()[-1] == "prepare: stopped at 25/1000 (2 %) after 10 min 25 s"


def test_a_task_stopped_before_any_work_writes_no_stopped_line(monkeypatch: pytest.MonkeyPatch) -> None:
    """Before: an error before the first photo (a model that cannot be read) was told after "adjusting: stopped at
    0/1 (0 %) after 0.1 s", as if work had begun. Nothing done and nothing said: no line; a stop after a line (the
    task was waited on) or after some work still says where it stopped."""
    monkeypatch.setenv("FACEKIT_PROGRESS_INTERVAL", "60")
    clock = Clock()
    bar_console, lines, _, written = consoles(terminal=False)
    with pytest.raises(FacekitError), Progress(console=bar_console, lines=lines, get_time=clock) as bar:
        bar.add_task("adjusting", total=1, unit="photo")
        raise FacekitError("not a readable facekit model")
    assert written.getvalue() == ""
    for seconds, work, said in ((61.0, 0, "waited: stopped at 0/1000 (0 %)"), (1.0, 1, "waited: stopped at 1/1000")):
        bar_console, lines, _, written = consoles(terminal=False)
        with Progress(console=bar_console, lines=lines, get_time=clock) as bar:
            task = bar.add_task("waited", total=1000, unit="photo")
            clock.now += seconds
            bar.update(task, advance=work)
        assert written.getvalue().splitlines()[-1].startswith(said)


def test_an_interval_of_0_writes_every_update(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FACEKIT_PROGRESS_INTERVAL", "0")
    bar_console, lines, _, written = consoles(terminal=False)
    items = list(track(range(3), "encoding", unit="batch", console=bar_console, lines=lines, auto_refresh=False))
    assert items == [0, 1, 2]
    said = written.getvalue().splitlines()
    assert [line.split(",")[0].split(" done")[0] for line in said] == [
        "encoding: 0/3 (0 %)",  # (track sets the count to 0 as it starts)
        "encoding: 1/3 (33 %)",
        "encoding: 2/3 (66 %)",
        "encoding: 3/3 (100 %)",
    ]


@pytest.mark.parametrize("value", ["soon", "-1", "inf", "nan"])
def test_a_bad_interval_is_said(monkeypatch: pytest.MonkeyPatch, value: str) -> None:
    monkeypatch.setenv("FACEKIT_PROGRESS_INTERVAL", value)
    with pytest.raises(FacekitError, match=f"FACEKIT_PROGRESS_INTERVAL must be .* seconds.*got '{value}'"):
        Progress(console=consoles(terminal=True)[0])


def test_in_a_terminal_the_bar_is_rich_s_and_no_line_is_written(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FACEKIT_PROGRESS_INTERVAL", "0")

    def draw(progress_class: type[rich.progress.Progress]) -> tuple[str, str]:
        bar_console, lines, shown, written = consoles(terminal=True)
        clock = Clock()
        extra = {"lines": lines} if progress_class is Progress else {}
        with progress_class(console=bar_console, get_time=clock, auto_refresh=False, transient=True, **extra) as bar:
            task = bar.add_task("normalizing", total=4, unit="photo")
            for _ in range(4):
                clock.now += 1.0
                bar.advance(task)
                bar.refresh()
        return shown.getvalue(), written.getvalue()

    shown, written = draw(Progress)
    assert written == ""
    assert "normalizing" in shown and "━" in shown  # drawn as it ran
    assert shown == draw(rich.progress.Progress)[0]  # as rich's own, to the byte


def test_a_training_or_prepare_bar_in_a_terminal_says_its_rate(monkeypatch: pytest.MonkeyPatch) -> None:
    """In a terminal the training's bar showed its loss, count and ETA but no rate, which its log's lines say
    ("2.0 s/step"): a user watching it could not see how long a step took (prepare's bar has the column too)."""
    import facekit.train as training
    from facekit.progress import RateColumn

    monkeypatch.setenv("FACEKIT_PROGRESS_INTERVAL", "0")
    bar_console, lines, shown, _ = consoles(terminal=True)
    clock = Clock()
    with Progress(RateColumn(), console=bar_console, lines=lines, get_time=clock, auto_refresh=False) as bar:
        task = bar.add_task("train", total=10, unit="step")
        for _ in range(3):
            clock.now += 2.0
            bar.advance(task)
        bar.refresh()
    assert "2.0 s/step" in shown.getvalue()
    made = training._progress_bar(True, 10, 0)
    assert made is not None
    made[0].stop()
    assert any(isinstance(column, RateColumn) for column in made[0].columns)


def test_every_progress_bar_is_facekit_s() -> None:
    """rich's own Progress or track (not its columns) anywhere else would be a bar that a log cannot follow."""
    import re
    from pathlib import Path

    root = Path(__file__).resolve().parents[2]
    sources = [*(root / "facekit").rglob("*.py"), *root.glob("plugins/*/src/**/*.py")]
    rich_bars = re.compile(
        r"from rich\.progress import [^\n]*\b(Progress|track)\b(?!Column)|rich\.progress\.(Progress|track)\("
    )
    offenders = [
        f"{path.relative_to(root)}"
        for path in sources
        if path != root / "facekit" / "progress.py" and rich_bars.search(path.read_text())
    ]
    assert offenders == []


def test_large_counts_and_shares_are_written_as_they_are(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FACEKIT_PROGRESS_INTERVAL", "0")
    bar_console, lines, _, written = consoles(terminal=False)
    clock = Clock()
    with Progress(console=bar_console, lines=lines, get_time=clock, auto_refresh=False) as bar:
        task = bar.add_task("train", total=2_000_000, unit="step")
        clock.now += 580.0
        bar.update(task, completed=580_000)  # 100 * 0.29 is 28.999999999999996
    assert written.getvalue().splitlines()[0] == "train: 580000/2000000 (29 %), 1000 step/s, ETA 23 min 40 s"


def test_a_log_holds_the_plain_lines_only(monkeypatch: pytest.MonkeyPatch) -> None:
    """helper-147: where the bar's console is no terminal, rich added its finished bar on it (stdout) after the plain
    "done" line on stderr (`... > run.log 2>&1` held the end twice), and a blank line where it was stopped early."""
    monkeypatch.setenv("FACEKIT_PROGRESS_INTERVAL", "0")
    for total in (3, 5):  # finished, and stopped before its end
        bar_console, lines, shown, written = consoles(terminal=False)
        with Progress(console=bar_console, lines=lines, get_time=Clock(), auto_refresh=False) as bar:
            task = bar.add_task("encoding", total=total, unit="batch")
            for _ in range(3):
                bar.advance(task)
        assert shown.getvalue() == ""
        assert (
            written.getvalue().splitlines()[-1].startswith(("encoding: 3/3 (100 %) done", "encoding: stopped at 3/5"))
        )


def test_a_spinner_in_a_terminal_is_rich_s_and_in_a_log_a_line(monkeypatch: pytest.MonkeyPatch) -> None:
    """helper-147: `console.status` spinners (facekit serve's "loading the models", models bundle, explore
    interpolate) wrote nothing at all where the console is no terminal: a log of `nohup facekit serve` said nothing for
    the minutes the models took to load. Now a line as it starts and, when it took the progress interval or more, one
    as it ends, on stderr; in a terminal rich's spinner, to the byte."""
    from facekit.progress import status

    monkeypatch.setenv("FACEKIT_PROGRESS_INTERVAL", "30")
    bar_console, lines, shown, written = consoles(terminal=True)
    with status(bar_console, "loading the models", lines=lines):
        pass
    rich_console, _, rich_shown, _ = consoles(terminal=True)
    with rich_console.status("loading the models"):
        pass
    assert written.getvalue() == "" and "loading the models" in shown.getvalue()
    assert shown.getvalue() == rich_shown.getvalue()

    clock = Clock()
    for seconds, fails, said in (
        (5.0, False, ["loading the models ..."]),  # short: its start is enough
        (125.0, False, ["loading the models ...", "loading the models: done in 2 min 5 s"]),
        (40.0, True, ["loading the models ...", "loading the models: stopped after 40 s"]),
    ):
        bar_console, lines, shown, written = consoles(terminal=False)
        with pytest.raises(FacekitError) if fails else contextlib.nullcontext():
            with status(bar_console, "loading the models", lines=lines, get_time=clock):
                clock.now += seconds
                if fails:
                    raise FacekitError("no weights")
        assert shown.getvalue() == "" and written.getvalue().splitlines() == said


def test_every_spinner_is_facekit_s() -> None:
    """rich's own spinner (console.status) anywhere else would write nothing to a log."""
    import re
    from pathlib import Path

    root = Path(__file__).resolve().parents[2]
    sources = [*(root / "facekit").rglob("*.py"), *root.glob("plugins/*/src/**/*.py")]
    offenders = [
        f"{path.relative_to(root)}"
        for path in sources
        if path != root / "facekit" / "progress.py" and re.search(r"\.status\(", path.read_text())
    ]
    assert offenders == []


@pytest.mark.skipif(not hasattr(signal, "pthread_kill") or not hasattr(os, "openpty"), reason="needs a pty and SIGHUP")
@pytest.mark.parametrize(
    ("display", "force_color"), [("bar", False), ("bar", True), ("spinner", False)], ids=["bar", "forced", "spinner"]
)
def test_a_terminal_that_hangs_up_under_a_refreshing_display_stops_the_command_as_its_sighup_would(
    tmp_path: Path, display: str, force_color: bool
) -> None:
    """A bar's or spinner's refresh thread draws on the terminal ten times a second. Once the terminal hung up, the
    display stopped drawing (a hung-up terminal is no tty), or with FORCE_COLOR set the thread's write failed with
    EIO and it died with a traceback that went to the dead terminal; either way the command ran on unshown to its
    end, then said it had been stopped (its display's last write failed). Now the refresh thread stops the command
    as a failed write of the main thread's does: the block's line, exit 129. Here no SIGHUP comes at all (the
    command has a session of its own, as under setsid) and the main thread writes nothing while it waits."""
    import subprocess
    import sys
    import time

    from tests.helpers import default_stop_signals

    code = (
        "import os, sys, threading, pathlib\n"
        "from rich.console import Console\n"
        "from facekit.errors import Terminated, sigterm_raises\n"
        "from facekit.progress import Progress, status\n"
        "try:\n"
        "    with sigterm_raises('stopped by {signal}'):\n"
        "        if sys.argv[2] == 'bar':\n"
        "            display = Progress()\n"
        "            display.add_task('work', total=10)\n"
        "        else:\n"
        "            display = status(Console(), 'loading')\n"
        "        with display:\n"
        "            pathlib.Path(sys.argv[1]).write_text('')  # (the display is up: the terminal may close)\n"
        "            threading.Event().wait(30)  # (work that writes nothing itself; its stop comes in 0.1 s)\n"
        "            os.write(2, b'the work went on to its end\\n')\n"
        "except Terminated as stopped:\n"
        "    print(stopped, stopped.exit_code, file=sys.stderr)\n"
    )
    shown = tmp_path / "shown"
    leader, follower = os.openpty()
    try:
        process = subprocess.Popen(
            [sys.executable, "-c", code, str(shown), display],
            stdout=follower,
            stderr=subprocess.PIPE,
            env={
                **{k: v for k, v in os.environ.items() if k not in ("FORCE_COLOR", "TTY_COMPATIBLE")},
                "TERM": "xterm-256color",
                **({"FORCE_COLOR": "1"} if force_color else {}),
            },
            start_new_session=True,  # (no controlling terminal: no SIGHUP from the hang-up)
            preexec_fn=default_stop_signals,
        )
        deadline = time.monotonic() + 60
        while not shown.exists() and process.poll() is None and time.monotonic() < deadline:
            time.sleep(0.01)
    finally:
        os.close(follower)
        os.close(leader)  # the terminal closes: it hangs up
    try:
        _, said = process.communicate(timeout=120)
    finally:
        if process.poll() is None:
            process.kill()
            process.communicate()
    assert said.decode().splitlines() == ["stopped by SIGHUP 129"]


def test_a_rich_without_its_refresh_thread_class_keeps_its_own_display(monkeypatch: pytest.MonkeyPatch) -> None:
    """The hang-up check hooks rich's private refresh thread; a rich that renamed it keeps its bars and spinners as they
    are (before, every bar's refresh would have raised AttributeError on rich's private name)."""
    import rich.live

    import facekit.progress as progress

    assert type(Progress().live) is progress._Live  # the pinned rich: hooked
    monkeypatch.setattr(progress, "_REFRESH_THREAD", type(None))
    bar = Progress()
    assert type(bar.live) is rich.live.Live
    with bar:
        bar.add_task("work", total=2)
        bar.refresh()


def _on_the_first_thread_start(monkeypatch: pytest.MonkeyPatch, then: Callable[[], object]) -> list[Any]:
    """``then()`` run inside the first ``Thread.start`` from now on, once its thread is started; the list holds that
    thread (a display's refresh thread)."""
    import threading

    started: list[Any] = []
    start_thread = threading._start_new_thread  # type: ignore[attr-defined]

    def start_then(function: object, args: object) -> int:
        ident = start_thread(function, args)
        if not started:
            started.append(function.__self__)  # type: ignore[attr-defined]
            then()
        return int(ident)

    monkeypatch.setattr(threading, "_start_new_thread", start_then)
    return started


def _assert_the_display_stopped(raised: pytest.ExceptionInfo[BaseException], started: list[Any], shown: Any) -> None:
    """The stop was raised outside ``Thread.start``, the display's thread was told to stop and has, and the cursor
    it hid is shown again."""
    import threading

    where = [entry.frame.code.raw for entry in raised.traceback]
    assert threading.Thread.start.__code__ not in where, "raised inside Thread.start"
    assert started[0].done.is_set(), "the display's thread draws on"
    started[0].join()
    drawn = shown.getvalue()
    assert drawn.rfind("\x1b[?25h") > drawn.rfind("\x1b[?25l"), "the cursor stays hidden"


@pytest.mark.skipif(not hasattr(signal, "pthread_sigmask"), reason="needs signals that a thread can hold")
@pytest.mark.parametrize("number", [signal.SIGTERM, signal.SIGINT], ids=["sigterm", "ctrl-c"])
@pytest.mark.parametrize("display", ["bar", "spinner"])
def test_a_stop_as_a_display_starts_its_thread_stops_the_display(
    monkeypatch: pytest.MonkeyPatch, default_handlers: None, number: int, display: str
) -> None:
    """A SIGTERM (under the CLI's handler) or a Ctrl+C that comes as a bar or spinner starts its refresh thread: its
    handler raised inside ``Thread.start``, out of the ``with`` that starts the display before the block began, so
    nothing stopped it: the terminal kept the cursor it hid after the command's line, and the thread drew on. Now
    the stop is raised once the display has started, which it stops first. The signal is sent to this thread right
    after the refresh thread starts, inside ``Thread.start``."""
    import threading

    from facekit.errors import Terminated, sigterm_raises
    from facekit.progress import status

    bar, lines, shown, _ = consoles(terminal=True)
    # (its handler runs inside Thread.start, or when let in)
    started = _on_the_first_thread_start(monkeypatch, lambda: signal.pthread_kill(threading.get_ident(), number))
    stops = Terminated if number == signal.SIGTERM else KeyboardInterrupt
    with pytest.raises(stops) as raised, sigterm_raises("stopped by {signal}"):
        with Progress(console=bar, lines=lines) if display == "bar" else status(bar, "loading"):
            pytest.fail("the block ran")
    _assert_the_display_stopped(raised, started, shown)


@pytest.mark.skipif(not hasattr(signal, "pthread_kill"), reason="sends the signal to one thread")
@pytest.mark.parametrize("number", [signal.SIGTERM, signal.SIGINT], ids=["sigterm", "ctrl-c"])
def test_a_stop_another_thread_takes_as_a_display_starts_is_raised_once_it_has_started(
    monkeypatch: pytest.MonkeyPatch, default_handlers: None, number: int
) -> None:
    """A Ctrl+C or SIGTERM sent to the process (not to one thread) goes to a thread that does not block it: where the
    main thread held it by its signal mask, as the display starts, the kernel gave it to another thread (torch's
    OpenMP threads, any Python thread started before), whose C handler marked it, and the main thread ran its Python
    handler at its next check, inside ``Thread.start``: the hold held only in a process of one thread. Here the other
    thread takes the signal (as the kernel would, the main thread holding it), and the main thread then waits for
    it, which is such a check."""
    import threading

    from facekit.errors import Terminated, sigterm_raises

    go, sent = threading.Event(), threading.Event()

    def takes_it() -> None:  # (started before the display: a thread of the process that does not block the signal)
        go.wait()
        signal.pthread_kill(threading.get_ident(), number)  # (its C handler runs in this thread)
        sent.set()

    other = threading.Thread(target=takes_it, daemon=True)
    other.start()

    def let_the_other_take_it() -> None:
        go.set()
        sent.wait()  # (the GIL given up and taken again: a pending signal's Python handler runs at the next check)

    bar, lines, shown, _ = consoles(terminal=True)
    started = _on_the_first_thread_start(monkeypatch, let_the_other_take_it)
    stops = Terminated if number == signal.SIGTERM else KeyboardInterrupt
    with pytest.raises(stops) as raised, sigterm_raises("stopped by {signal}"):
        with Progress(console=bar, lines=lines):
            pytest.fail("the block ran")
    other.join()
    _assert_the_display_stopped(raised, started, shown)


def test_a_photo_count_moves_through_a_photo_s_later_work_and_a_stop_keeps_the_rows_told(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """helper-201: `facekit avatar` on ten LFW photos said 9/10 and "ETA 0.0 s" once their detections were done (0.5
    s) and then sat there through the fits, renders and files (5.5 s): its bar now takes a share at each of them. A
    stop between them still says the photos whose rows were told."""
    from facekit.progress import PhotoCount

    monkeypatch.setenv("FACEKIT_PROGRESS_INTERVAL", "0")
    bar_console, lines, _, written = consoles(terminal=False)
    with (
        pytest.raises(KeyboardInterrupt),
        Progress(console=bar_console, lines=lines, get_time=Clock(), auto_refresh=False) as bar,
    ):
        task = bar.add_task("avatars", total=4, unit="photo")
        with PhotoCount(bar, task, detection_share=0.5) as count:
            count.detected()
            count.detected()
            count.reached(0.9)  # the first photo's avatar is built
            count.reached(1.0)  # and its files written
            count.reached(0.9)  # the second one's avatar
            count.row()
            count.row()
            count.detected()
            count.reached(0.9)
            raise KeyboardInterrupt
    said = [line.split(": ")[1].split(", ")[0] for line in written.getvalue().splitlines()]
    # The count is of whole photos, those whose rows were told (helper-229: the infer stage's log said
    # "normalizing: 1.8/12"); the percentage moves with the bar, through each photo's work.
    assert said == [
        "0/4 (12 %)",
        "0/4 (25 %)",
        "0/4 (35 %)",
        "0/4 (37 %)",
        "0/4 (47 %)",
        "1/4 (47 %)",
        "2/4 (50 %)",
        "2/4 (62 %)",
        "2/4 (72 %)",
        "2/4 (50 %)",
        "stopped at 2/4 (50 %) after 0.0 s",
    ]
