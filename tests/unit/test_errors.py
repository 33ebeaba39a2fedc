"""facekit.errors' stop signals: SIGTERM and SIGHUP raise Terminated, each only over its default handler."""

from __future__ import annotations

import os
import pickle
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from facekit.errors import Interrupted, Terminated, hangup_stops, sigterm_raises, stops_said
from tests.helpers import sigterm_in_a_terminal


def test_sighup_raises_terminated_as_sigterm_does_with_its_own_exit_status(default_handlers: None) -> None:
    """Before: SIGHUP (the terminal closed) kept its default handler inside the block and ended the process on the
    spot. Now it raises Terminated as SIGTERM does, naming it, and exits 129 (128 + SIGHUP) where SIGTERM exits 143;
    a pickled Terminated keeps its signal."""
    for number, status in ((signal.SIGTERM, 143), (signal.SIGHUP, 129)):
        with pytest.raises(Terminated) as raised, sigterm_raises("stopped by {signal}: what was written stays"):
            assert signal.getsignal(number) != signal.SIG_DFL and hangup_stops()  # (raised, it would end pytest)
            signal.raise_signal(number)
        name = signal.Signals(number).name
        assert (str(raised.value), raised.value.signum, raised.value.exit_code) == (
            f"stopped by {name}: what was written stays",
            number,
            status,
        )
        again = pickle.loads(pickle.dumps(raised.value))
        assert (str(again), again.exit_code) == (str(raised.value), status)
        assert signal.getsignal(signal.SIGTERM) == signal.getsignal(signal.SIGHUP) == signal.SIG_DFL
    assert Terminated("stopped").exit_code == 143 and not hangup_stops()


def test_a_hangups_repeat_is_ignored_while_the_command_stops(default_handlers: None) -> None:
    """A closing terminal's shell and then the kernel each send the foreground command SIGHUP (0.2 ms apart): the
    second, with the default handler back as after a first SIGTERM, ended the process in the middle of its clean
    stop. Now SIGHUP is ignored from the first until the outermost block ends (the default handler back then); a
    second SIGTERM still ends the process at once."""
    stopped = []
    with pytest.raises(Terminated, match="outer"), sigterm_raises("outer"):
        try:
            with sigterm_raises("inner {signal}"):
                assert hangup_stops()  # (held no more, SIGHUP would end pytest, not fail the test)
                signal.raise_signal(signal.SIGHUP)
        except Terminated as exc:
            stopped.append(str(exc))
            assert signal.getsignal(signal.SIGHUP) == signal.SIG_IGN  # (the default handler would end pytest)
            assert signal.getsignal(signal.SIGTERM) == signal.SIG_DFL
            signal.raise_signal(signal.SIGHUP)
        raise Terminated("outer")
    assert stopped == ["inner SIGHUP"]
    assert signal.getsignal(signal.SIGHUP) == signal.SIG_DFL


def test_under_nohup_sighup_stays_ignored(default_handlers: None) -> None:
    """`nohup facekit train ... &` (SIGHUP ignored) must keep running when its terminal closes: the block holds
    SIGTERM only, SIGHUP stays ignored through it and after, and the block goes on to its end."""
    signal.signal(signal.SIGHUP, signal.SIG_IGN)
    with sigterm_raises("stopped by {signal}"):
        assert callable(signal.getsignal(signal.SIGTERM)) and not hangup_stops()
        signal.raise_signal(signal.SIGHUP)
        finished = True
    assert finished and signal.getsignal(signal.SIGHUP) == signal.SIG_IGN
    own: list[int] = []
    signal.signal(signal.SIGHUP, lambda signum, frame: own.append(signum))  # a program's own handler: kept
    with sigterm_raises("stopped by {signal}"):
        signal.raise_signal(signal.SIGHUP)
    assert own == [signal.SIGHUP]


def test_a_stop_leaves_a_handler_the_command_set_since(default_handlers: None) -> None:
    """A command that sets its own handler for one of the signals inside the block (a plugin's SIGTERM handler for
    its own clean stop) keeps it when the other signal stops the block: before, the stop reset every signal the
    block had held, so after a SIGHUP a SIGTERM during the command's cleanup ended the process at once."""
    own: list[int] = []

    def cleanup_stop(signum: int, frame: object) -> None:
        own.append(signum)

    with pytest.raises(Terminated, match="SIGHUP"), sigterm_raises("stopped by {signal}"):
        signal.signal(signal.SIGTERM, cleanup_stop)
        assert hangup_stops()  # (held no more, SIGHUP would end pytest, not fail the test)
        signal.raise_signal(signal.SIGHUP)
    assert signal.getsignal(signal.SIGTERM) is cleanup_stop
    signal.raise_signal(signal.SIGTERM)
    assert own == [signal.SIGTERM]
    assert signal.getsignal(signal.SIGHUP) == signal.SIG_DFL


def _runs(pid: int) -> bool:
    """Whether process ``pid`` exists and is no zombie (a container's init may never reap an orphan)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] not in ("Z", "X")
    except (OSError, IndexError):
        return False


@pytest.mark.parametrize("hang_up", [False, True], ids=["sigterm", "closing-terminal"])
def test_a_command_that_does_not_stop_is_not_left_running_by_the_terminal_helper(tmp_path: Path, hang_up: bool) -> None:
    """tests.helpers.sigterm_in_a_terminal, the CLI's, training's and pool workers' stop tests: before, a command
    that did not end after its SIGTERM or hangup failed the test (TimeoutExpired) and was left running, with its
    whole session for a closing terminal (a training to its last step, its DataLoader workers), slowing every test
    after it on a 2-core machine. Now it is killed, its process group with it where it has its own."""
    pids = tmp_path / "pids"
    code = (
        "import os, signal, subprocess, sys, time\n"
        "for number in (signal.SIGTERM, signal.SIGHUP):\n"
        "    signal.signal(number, signal.SIG_IGN)\n"
        "child = subprocess.Popen(['sleep', '600']) if sys.argv[2] == 'group' else None\n"
        "open(sys.argv[1] + '.tmp', 'w').write(f'{os.getpid()} {child.pid if child else os.getpid()}')\n"
        "os.replace(sys.argv[1] + '.tmp', sys.argv[1])\n"
        "time.sleep(600)\n"
    )
    command = [sys.executable, "-c", code, str(pids), "group" if hang_up else "alone"]
    with pytest.raises(subprocess.TimeoutExpired):
        sigterm_in_a_terminal(command, pids.exists, "the command", hang_up=hang_up, stop_timeout=1)
    started = [int(pid) for pid in pids.read_text().split()]
    deadline = time.monotonic() + 30  # (a killed process is gone at once; the orphan's reaping may take a moment)
    while any(_runs(pid) for pid in started) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert [pid for pid in started if _runs(pid)] == []


def test_a_write_to_a_hung_up_terminal_stops_the_innermost_block_as_its_sighup_would(tmp_path: Path) -> None:
    """The write that fails with EIO before a closing terminal's SIGHUP comes stops the block the command is in, as
    the SIGHUP would: the innermost block's message (a training's names its checkpoint), stdout to /dev/null, the
    SIGHUP that follows ignored until the outermost block ends. Before: the OSError went through every block."""

    code = (
        "import signal, sys\n"
        "from facekit.errors import Terminated, sigterm_raises\n"
        "try:\n"
        "    with sigterm_raises('outer {signal}'):\n"
        "        try:\n"
        "            with sigterm_raises('inner {signal}'):\n"
        "                print('a table', flush=True)\n"
        "        except Terminated as stopped:\n"
        "            print(stopped, stopped.exit_code, file=sys.stderr)\n"
        "            signal.raise_signal(signal.SIGHUP)  # (the SIGHUP that follows the hang-up: ignored)\n"
        "            print('written to /dev/null', flush=True)\n"
        "except OSError as error:\n"
        "    print('raised', error, file=sys.stderr)\n"
        "print(signal.getsignal(signal.SIGHUP) == signal.SIG_DFL, file=sys.stderr)\n"
    )
    result = _on_a_hung_up_terminal(code)
    assert (result.returncode, result.stderr.decode().splitlines()) == (0, ["inner SIGHUP 129", "True"])


def test_a_disk_eio_naming_its_file_is_raised_as_it_was_even_after_the_terminal_hung_up() -> None:
    """A failing disk's EIO that names its file (an open, a rename of an output) while stdout is a terminal that hung
    up and whose SIGHUP has not come: no hangup (a write to the terminal names no file), raised as it was, for the
    log stderr goes to. Before: it read as the hangup, "stopped by SIGHUP" and exit 129, the disk's error lost. One
    with no file (the terminal's own write, or a disk's write to a file already open) still stops the block."""

    code = (
        "import errno, sys\n"
        "from facekit.errors import Terminated, sigterm_raises\n"
        "for named in ('out/face.png', None):\n"
        "    try:\n"
        "        with sigterm_raises('stopped by {signal}'):\n"
        "            raise OSError(errno.EIO, 'Input/output error', named)\n"
        "    except Terminated as stopped:\n"
        "        print(named, 'stopped:', stopped.exit_code, file=sys.stderr)\n"
        "    except OSError as error:\n"
        "        print(named, 'raised:', error, file=sys.stderr)\n"
    )
    result = _on_a_hung_up_terminal(code)
    assert result.stderr.decode().splitlines() == [
        "out/face.png raised: [Errno 5] Input/output error: 'out/face.png'",
        "None stopped: 129",
    ]


@pytest.mark.parametrize("what", ["disk", "terminal"])
def test_a_disk_eio_writing_a_file_already_open_is_raised_as_it_was_even_after_the_terminal_hung_up(
    tmp_path: Path, what: str
) -> None:
    """A failing disk's EIO from a write to a file already open names no file, as a write to the terminal does:
    before, while stdout was a terminal that had hung up (its SIGHUP not yet come, or never: a session of its own),
    it read as the hangup, "stopped by SIGHUP" and exit 129, the disk's error lost to the log stderr went to. Now
    the file the writing code holds tells it apart: raised as it was, naming that file, for the CLI's line (exit 1).
    The terminal's own failed write, rich's as the CLI's consoles make it, still stops the block (a fake disk: a
    file whose writes fail with EIO)."""
    out = tmp_path / "face.png"
    code = (
        "import errno, io, sys\n"
        "from rich.console import Console\n"
        "from facekit.errors import Terminated, sigterm_raises\n"
        "class FailingDisk(io.FileIO):\n"
        "    def write(self, data):\n"
        "        raise OSError(errno.EIO, 'Input/output error')\n"
        "def save(path):\n"
        "    with io.BufferedWriter(FailingDisk(path, 'w')) as handle:\n"
        "        handle.write(b'x' * 100_000)\n"
        "try:\n"
        "    with sigterm_raises('stopped by {signal}'):\n"
        "        save(sys.argv[1]) if sys.argv[2] == 'disk' else Console().print('a table')\n"
        "except Terminated as stopped:\n"
        "    print('stopped:', stopped.exit_code, file=sys.stderr)\n"
        "except OSError as error:\n"
        "    print('raised:', error, file=sys.stderr)\n"
    )
    said = f"raised: [Errno 5] Input/output error: '{out}'" if what == "disk" else "stopped: 129"
    result = _on_a_hung_up_terminal(code, str(out), what)
    assert result.stderr.decode().splitlines() == [said], result.stderr.decode()


def test_an_eio_with_no_hung_up_terminal_is_raised_as_it_was(default_handlers: None) -> None:
    """A failing disk's EIO (writing an output file) while stdout and stderr are no hung-up terminal is no hangup:
    raised as it was, the handlers back after the block."""
    import errno

    failing = OSError(errno.EIO, "Input/output error", "out/face.png")
    with pytest.raises(OSError) as raised, sigterm_raises("stopped by {signal}"):
        raise failing
    assert raised.value is failing
    assert signal.getsignal(signal.SIGTERM) == signal.getsignal(signal.SIGHUP) == signal.SIG_DFL


@pytest.mark.skipif(not hasattr(signal, "sigwaitinfo"), reason="stop_only_from_parent needs sigwaitinfo")
def test_a_worker_its_parent_left_ends_on_anyones_sigterm(tmp_path: Path) -> None:
    """A worker leaves a SIGTERM from anyone but its parent to the parent (a process group's, which reaches the parent
    too); one whose parent is gone (killed by the out-of-memory killer) has nobody to stop it: before, it took no
    SIGTERM at all, systemd's stop of the service waited its 90 s for a SIGKILL."""
    code = (
        "import os, sys, time\n"
        "from facekit.errors import stop_only_from_parent\n"
        "if os.fork() == 0:\n"
        "    stop_only_from_parent()\n"
        "    with open(sys.argv[1] + '.tmp', 'w') as f:\n"
        "        f.write(str(os.getpid()))\n"
        "    os.replace(sys.argv[1] + '.tmp', sys.argv[1])\n"
        "    time.sleep(120)\n"
        "    os._exit(3)\n"
        "while not os.path.exists(sys.argv[1]):  # the worker started under its parent\n"
        "    time.sleep(0.01)\n"
        "os._exit(0)\n"
    )
    marker = tmp_path / "worker.pid"
    subprocess.run([sys.executable, "-c", code, str(marker)], check=True, timeout=60)  # then the parent is gone
    pid = int(marker.read_text())

    def alive() -> bool:
        try:
            return Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()[0] not in ("Z", "X")
        except OSError:
            return False

    try:
        os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + 10
        while alive() and time.monotonic() < deadline:
            time.sleep(0.02)
        assert not alive(), "the worker its parent left took no SIGTERM"
    finally:
        if alive():
            os.kill(pid, signal.SIGKILL)


def _on_a_hung_up_terminal(code: str, *args: str) -> subprocess.CompletedProcess[bytes]:
    """``python -c code`` with stdout a terminal that has hung up, in a session of its own (no controlling terminal:
    no SIGHUP from the hang-up), the default stop signals, stderr captured."""
    from tests.helpers import default_stop_signals

    leader, follower = os.openpty()
    os.close(leader)  # hung up
    try:
        return subprocess.run(
            [sys.executable, "-c", code, *args],
            stdout=follower,
            stderr=subprocess.PIPE,
            start_new_session=True,
            preexec_fn=default_stop_signals,
            timeout=60,
        )
    finally:
        os.close(follower)


class _NeverReady:
    """A dataset whose one item never comes: its worker waits until killed."""

    def __len__(self) -> int:
        return 1

    def __getitem__(self, index: int) -> int:
        signal.pause()
        return index


@pytest.mark.skipif(not hasattr(signal, "SIGCHLD"), reason="torch reads a worker's death from SIGCHLD")
def test_a_data_worker_dying_as_a_bar_starts_its_thread_is_raised_by_the_loop(monkeypatch: pytest.MonkeyPatch) -> None:
    """A DataLoader worker killed (the out-of-memory killer) as a progress bar starts its refresh thread: before,
    torch's SIGCHLD handler raised its RuntimeError inside ``Thread.start`` (the CLI's one line, then the thread's
    "Exception ignored in thread started by ... KeyError" traceback, or a KeyError traceback instead of the line:
    both raced to ``del _limbo[thread]``). Now the bar starts, its thread runs, and the loop raises the worker's death
    as it asks for a batch. The SIGCHLD is held until the thread has started, then let in inside ``Thread.start``."""
    import multiprocessing
    import threading

    from torch.utils.data import DataLoader

    from facekit.errors import data_batches, stop_only_from_parent
    from facekit.progress import track

    # Held from here in every thread the loader starts, so that it comes to this one alone, when let in.
    blocked = signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGCHLD})
    try:
        before = set(multiprocessing.active_children())
        dataset: Any = _NeverReady()
        batches = data_batches(DataLoader(dataset, num_workers=1, worker_init_fn=stop_only_from_parent))
        (worker,) = set(multiprocessing.active_children()) - before
        pid = int(worker.pid or 0)
        os.kill(pid, signal.SIGKILL)
        os.waitid(os.P_PID, pid, os.WEXITED | os.WNOWAIT)  # dead, not reaped: torch's handler will see it
        started: list[threading.Thread] = []
        start_thread = threading._start_new_thread  # type: ignore[attr-defined]

        def start_then_let_sigchld_in(function: Any, args: Any) -> int:
            ident = start_thread(function, args)
            if not started:  # (the bar's refresh thread: rich's Live starts it first)
                started.append(function.__self__)
                signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGCHLD})  # its handler runs here
            return int(ident)

        unraisable: list[Any] = []
        monkeypatch.setattr(threading, "_start_new_thread", start_then_let_sigchld_in)
        monkeypatch.setattr(sys, "unraisablehook", unraisable.append)
        with pytest.raises(RuntimeError, match=rf"^DataLoader worker \(pid {pid}\) is killed by signal") as raised:
            for _ in track(batches, "morphs"):
                pass
        where = [entry.frame.code.raw for entry in raised.traceback]
        assert threading.Thread.start.__code__ not in where, "raised inside Thread.start"
        started[0].join()  # (it ended with the bar)
        assert unraisable == []
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, blocked)


def test_a_worker_says_nothing_when_a_taker_of_its_shared_memory_hangs_up_halfway() -> None:
    """A worker hands a tensor's shared memory over as a file descriptor (multiprocessing's resource_sharer); its
    parent, stopped by a SIGTERM to the process group as it unpickled a batch, hung up in the handshake, and the
    worker's serving thread printed a traceback after the run's one line (ci136). Now nothing; any other exception of
    the worker still reaches the hook it had."""
    code = (
        "import os, socket, sys, time\n"
        "from multiprocessing import resource_sharer\n"
        "from facekit.errors import stop_only_from_parent\n"
        "if sys.argv[1] == 'worker':\n"
        "    stop_only_from_parent()\n"
        "resource_sharer.DupFd(os.open(os.devnull, os.O_RDONLY))  # (starts the serving thread)\n"
        "for _ in range(2):  # a taker hangs up before answering the challenge\n"
        "    with socket.socket(socket.AF_UNIX) as taker:\n"
        "        taker.connect(resource_sharer._resource_sharer._address)\n"
        "    time.sleep(0.3)\n"
        "sys.excepthook(ValueError, ValueError('another error'), None)\n"
    )
    said = {
        role: subprocess.run(
            [sys.executable, "-c", code, role], capture_output=True, text=True, timeout=60, check=True
        ).stderr
        for role in ("worker", "plain")
    }
    assert said["worker"] == "ValueError: another error\n"
    assert said["plain"].count("in deliver_challenge") == 2  # (what the worker said before: the test sees a hangup)


@pytest.mark.parametrize("stop", [Terminated("stopped by SIGHUP", signal.SIGHUP), KeyboardInterrupt()])
def test_a_stop_an_inner_command_said_keeps_its_line_whichever_the_stop(stop: BaseException) -> None:
    """A command that runs another that says its own stop line (a bench's cell training: what its checkpoint holds
    and how the bench goes on) keeps the inner line: before, only Ctrl+C's Interrupted was raised as it was, and a
    SIGTERM's or SIGHUP's Terminated was said again by the outer command's line, so the two stops said different
    things. The signal (the exit code) is kept."""
    with pytest.raises(type(stop)) as raised:
        with stops_said(lambda by: f"bench stopped by {by}"), stops_said(lambda by: f"training stopped by {by}"):
            raise stop
    by = "SIGHUP" if isinstance(stop, Terminated) else "Ctrl+C"
    assert str(raised.value) == f"training stopped by {by}"
    assert isinstance(raised.value, Interrupted) or raised.value.exit_code == 129  # type: ignore[attr-defined]
