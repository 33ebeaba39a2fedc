"""Helpers shared by tests."""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]


def run_cli(*args: str, env: dict[str, str] | None = None, cwd: Path = REPO) -> Any:
    """Run the real ``facekit`` console script in a subprocess (what a user types)."""
    import subprocess

    full_env = {**os.environ, **(env or {})}
    full_env.pop("FACEKIT_DEBUG", None)
    if env and "FACEKIT_DEBUG" in env:
        full_env["FACEKIT_DEBUG"] = env["FACEKIT_DEBUG"]
    exe = Path(sys.executable).with_name("facekit")
    return subprocess.run([str(exe), *args], capture_output=True, text=True, cwd=cwd, env=full_env, timeout=300)


def checksum_refused(path: Path, expected: str) -> str:
    """A ``pytest.raises(ChecksumError, match=...)`` pattern for the load-time refusal of ``path`` (as it is now)
    against ``expected``: the file and both sha256s, shortened to 12 digits as the message says them."""
    import hashlib
    import re

    with path.open("rb") as handle:
        actual = hashlib.file_digest(handle, "sha256").hexdigest()
    return re.escape(f"{path} has sha256 {actual[:12]}..., expected {expected[:12]}...: the file is damaged")


class PicklePayload:
    """Unpickling this would create ``marker`` (a harmless stand-in for arbitrary code in a weights file)."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[Any, tuple[str, str]]:
        return (open, (str(self.marker), "w"))


def kill_at_points(command: list[str], progress: Any, points: tuple[int, ...], timeout: float = 240) -> int:
    """Start ``command`` once per point and kill -9 it as soon as ``progress()`` (a count of finished work) reaches
    the point; returns how many runs were killed while alive (a run may finish first on a fast machine)."""
    import signal
    import subprocess
    import time

    kills = 0
    for point in points:
        process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and process.poll() is None:
            if progress() >= point:
                break
            time.sleep(0.005)
        if process.poll() is None:
            os.kill(process.pid, signal.SIGKILL)
            kills += 1
        process.wait()
    return kills


def peak_in_fresh_process(code: str, argument: str) -> tuple[list[str], int]:
    """Run ``code`` (which reads ``sys.argv[1]``) in a fresh interpreter: (what it printed, split into words; how many
    kB its peak memory grew while the code ran). A fresh process, so the peak is not hidden under what earlier
    tests allocated."""
    import subprocess

    probe = (
        "import resource, sys\nbefore = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss\n"
        f"{code}\nprint(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before)"
    )
    done = subprocess.run([sys.executable, "-c", probe, argument], capture_output=True, text=True, check=True)
    *words, extra_kb = done.stdout.split()
    return words, int(extra_kb)


def forked_while_held(lock: Any, child: Any, timeout: float = 120) -> int:
    """Fork while another thread holds ``lock`` (entered as a context manager, as facekit's own code does), run
    ``child()`` in the forked child, and return its exit status: 0 if it returned True, 1 if it returned anything
    else or raised. A child still running after ``timeout`` seconds (stuck on the lock) is killed and fails the
    test. The holding thread lets go once the child is done."""
    import signal
    import threading
    import time

    import pytest

    held, release = threading.Event(), threading.Event()

    def hold() -> None:
        with lock:
            held.set()
            release.wait(timeout + 30)

    thread = threading.Thread(target=hold, daemon=True)
    thread.start()
    try:
        assert held.wait(30)
        pid = os.fork()
        if pid == 0:  # the child: never returns into pytest
            code = 1
            try:
                code = 0 if child() is True else 1
            finally:
                os._exit(code)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            done, status = os.waitpid(pid, os.WNOHANG)
            if done:
                return os.waitstatus_to_exitcode(status)
            time.sleep(0.05)
        os.kill(pid, signal.SIGKILL)
        os.waitpid(pid, 0)
        pytest.fail(f"the forked child was still waiting after {timeout} s (on the lock its parent's thread held)")
    finally:
        release.set()
        thread.join(30)


def default_stop_signals() -> None:
    """In a test's child process (``subprocess.Popen(preexec_fn=...)``): SIGTERM and SIGHUP at their default
    handlers, as a command typed in a terminal has them. A child inherits an ignored signal, and the test run may
    have been started with SIGHUP ignored (CI under ``nohup``): then every "closing terminal" test saw the command
    ignore the hangup and failed (ci121)."""
    import signal

    for number in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(number, signal.SIG_DFL)


def sigterm_in_a_terminal(
    command: list[str],
    ready: Any,
    what: str,
    timeout: float = 240,
    hang_up: bool = False,
    stop_timeout: float = 120,
    to_group: bool = False,
) -> tuple[int, list[str], bytes]:
    """Run ``command`` with its stdout on a pseudo-terminal (where a progress bar hides the cursor while it runs) and
    send it SIGTERM once ``ready()`` is true; returns its exit status, its stderr's lines and what it wrote to the
    terminal. ``what`` names the command in the failure said when it ends before SIGTERM.

    With ``hang_up``, the terminal closes instead, as its window or SSH session does: it hangs up (a write to it
    fails with EIO from then on) and the command's process group (its own session here) gets SIGHUP from the shell
    and the kernel (:func:`send_hangups`). With ``to_group``, SIGTERM goes to the command's whole process group (its
    own session here: its worker processes get it too), as systemd's `systemctl stop`, Slurm's scancel or
    ``kill -TERM -- -PGID`` send it.

    A command still running ``stop_timeout`` s after it was stopped fails the test (subprocess.TimeoutExpired) and is
    killed, with its process group where it has its own (``hang_up``, ``to_group``): before, it ran on after the test
    (a training to its last step, its DataLoader workers with it), slowing every test after it."""
    import pty
    import select
    import signal
    import subprocess
    import threading
    import time

    leader, follower = pty.openpty()
    process = subprocess.Popen(
        command,
        stdout=follower,
        stderr=subprocess.PIPE,
        env={**os.environ, "TERM": "xterm-256color"},
        start_new_session=hang_up or to_group,
        preexec_fn=default_stop_signals,
    )
    os.close(follower)
    shown = bytearray()
    closed = threading.Event()

    def read() -> None:
        while not closed.is_set():
            if not select.select([leader], [], [], 0.05)[0]:
                continue
            try:
                data = os.read(leader, 65536)
            except OSError:  # the process ended (EIO)
                return
            if not data:
                return
            shown.extend(data)

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    try:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and process.poll() is None and not ready():
            time.sleep(0.02)
        assert process.poll() is None, f"{what} ended before it was stopped: " + process.communicate()[1].decode()
        if hang_up:
            closed.set()
            reader.join(timeout=10)
            os.close(leader)  # the terminal closes: it hangs up
            leader = -1
            send_hangups(process)
        elif to_group:
            os.killpg(process.pid, signal.SIGTERM)
        else:
            process.send_signal(signal.SIGTERM)
        _, err = process.communicate(timeout=stop_timeout)
    finally:
        if process.poll() is None:  # (it did not stop: the test fails)
            if hang_up or to_group:
                os.killpg(process.pid, signal.SIGKILL)
            else:
                process.kill()
            process.communicate()
        reader.join(timeout=10)  # (it reads on until the terminal's last byte)
        closed.set()  # (before the terminal is closed: never a read of a closed or reused descriptor)
        reader.join()
        if leader >= 0:
            os.close(leader)
    return process.returncode, err.decode().splitlines(), bytes(shown)


def strict_obj_files(obj: Path) -> tuple[Path, Path]:
    """The material library and texture that ``obj`` names, found as a strict reader finds them: each statement's
    words split at white space, everything from ``#`` to the line's end dropped (obj-rs's lexer; MeshLab and
    tinyobjloader split ``mtllib`` and ``map_Kd`` at white space too). Fails unless the OBJ names one library, its
    ``usemtl`` is the library's ``newmtl`` and that material names one texture, each one word, and the library is
    there (the texture is the caller's to look for)."""

    def statements(path: Path) -> dict[bytes, list[bytes]]:
        found: dict[bytes, list[bytes]] = {}
        for line in path.read_bytes().splitlines():
            words = line.split(b"#", 1)[0].split()
            if words:
                found.setdefault(words[0], words[1:])
        return found

    mesh = statements(obj)
    assert len(mesh.get(b"mtllib", [])) == 1, f"{obj.name}: mtllib names {mesh.get(b'mtllib')}"
    library = obj.parent / os.fsdecode(mesh[b"mtllib"][0])
    assert library.is_file(), f"{obj.name}: its material library {library.name!r} is not beside it"
    material = statements(library)
    assert material.get(b"newmtl") == mesh.get(b"usemtl"), f"{material.get(b'newmtl')} != {mesh.get(b'usemtl')}"
    assert len(material.get(b"map_Kd", [])) == 1, f"{library.name}: map_Kd names {material.get(b'map_Kd')}"
    return library, obj.parent / os.fsdecode(material[b"map_Kd"][0])


def send_hangups(process: Any) -> None:
    """Send the process group ``process`` leads (``start_new_session``) the SIGHUPs a closing terminal makes: the
    shell's, then the kernel's as the shell ends (a foreground job gets both, 0.2 ms apart; the second is sent once
    the command shows it has begun to stop, SIGHUP ignored, or after 30 s)."""
    import signal
    import time

    os.killpg(process.pid, signal.SIGHUP)
    deadline = time.monotonic() + 30
    while process.poll() is None and time.monotonic() < deadline and not ignores(process.pid, signal.SIGHUP):
        time.sleep(0.01)
    if process.poll() is None:
        os.killpg(process.pid, signal.SIGHUP)


def took(pid: int, signum: int) -> bool:
    """Whether process ``pid`` has taken the signal ``signum`` sent to it and what it did with it is seen: it has ended
    and its parent has collected it (a zombie has not: its parent has yet to act on its end), or it runs without the
    signal pending (a handler, an ignore or a ``sigwaitinfo`` took it)."""
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return True
    if any(line.split()[1:2] == ["Z"] for line in status.splitlines() if line.startswith("State:")):
        return False
    return (_signal_mask(pid, "SigPnd") | _signal_mask(pid, "ShdPnd")) >> (signum - 1) & 1 == 0


def ignores(pid: int, signum: int) -> bool:
    """Whether process ``pid`` ignores signal ``signum`` (SIG_IGN: /proc's SigIgn; False once it has ended)."""
    return _signal_mask(pid, "SigIgn") >> (signum - 1) & 1 == 1


def catches(pid: int, signum: int) -> bool:
    """Whether process ``pid`` has a handler of its own for signal ``signum`` (/proc's SigCgt; False once ended)."""
    return _signal_mask(pid, "SigCgt") >> (signum - 1) & 1 == 1


def _signal_mask(pid: int, field: str) -> int:
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return 0
    return next((int(line.split()[1], 16) for line in status.splitlines() if line.startswith(f"{field}:")), 0)


class TwoThreadsAtOnce:
    """Two threads ask at once for a lazily built value, the second while the first's build is under way, without
    a sleep: :attr:`lock` stands in for the lock that guards the build (it tells when the second thread asks for it),
    :meth:`building` is called by the stand-in build (it records whether the lock is held and holds the first build
    until the second thread waits), :meth:`run` starts both threads and returns what each got. A build done once,
    under the lock, leaves :attr:`calls` ``[True]``."""

    def __init__(self) -> None:
        import threading

        self.entered, self.go, self.arrived = threading.Event(), threading.Event(), threading.Event()
        self.calls: list[bool] = []
        self.lock = _RecordingLock(self)

    def building(self, make: Any) -> Any:
        """What the stand-in build returns: ``make()``, the first call held until the second thread has asked."""
        self.calls.append(self.lock.owned())
        if len(self.calls) > 1:  # (a second build: what the lock is there to prevent)
            self.arrived.set()
        else:
            self.entered.set()
            self.go.wait(60)
        return make()

    def run(self, ask: Any) -> list[Any]:
        """What ``ask()`` gave the first and the second thread."""
        import threading

        got: list[Any] = [None, None]
        try:
            first = threading.Thread(target=lambda: got.__setitem__(0, ask()))
            first.start()
            assert self.entered.wait(60)
            second = threading.Thread(target=lambda: got.__setitem__(1, ask()))
            second.start()
            assert self.arrived.wait(60)
            self.go.set()
            first.join(60)
            second.join(60)
        finally:
            self.go.set()
        return got


class _RecordingLock:
    """A re-entrant lock that sets its :class:`TwoThreadsAtOnce`'s ``arrived`` when asked for after the first build
    began."""

    def __init__(self, at_once: TwoThreadsAtOnce) -> None:
        import threading

        self.at_once = at_once
        self.lock = threading.RLock()

    def __enter__(self) -> Any:
        if self.at_once.entered.is_set():
            self.at_once.arrived.set()
        return self.lock.__enter__()

    def __exit__(self, *exc: Any) -> Any:
        return self.lock.__exit__(*exc)

    def owned(self) -> bool:
        return bool(self.lock._is_owned())  # type: ignore[attr-defined]


def arrays_held_at_encode(monkeypatch: Any, encoder: str) -> tuple[list[Any], list[int]]:
    """Follows every photo array ``facekit.images.load_rgb`` reads (weak references) and, at each call of
    ``facekit.apps.adjust.<encoder>``, counts how many of them are still alive: (the references, the counts). A
    large photo's read must be let go before its encoder runs (adjust and serve's downloads)."""
    import weakref

    from facekit import images
    from facekit.apps import adjust

    read: list[weakref.ref[Any]] = []
    held: list[int] = []
    load_rgb, encode = images.load_rgb, getattr(adjust, encoder)

    def tracked_load(*args: Any, **kwargs: Any) -> Any:
        photo, why = load_rgb(*args, **kwargs)
        if photo is not None:
            read.append(weakref.ref(photo))
        return photo, why

    def tracked_encode(*args: Any, **kwargs: Any) -> Any:
        held.append(sum(ref() is not None for ref in read))
        return encode(*args, **kwargs)

    monkeypatch.setattr(images, "load_rgb", tracked_load)
    monkeypatch.setattr(adjust, encoder, tracked_encode)
    return read, held


class RowsThenStop:
    """A stand-in for a command's loop over its photos (``normalize_planned`` and the like): tells ``finished``
    photos' rows (``on_row``, status ``ok``), then ``without`` rows of photos left without outputs (status
    ``no_face``), then raises ``stop``; each may be changed between runs. ``ok`` and ``no_face``: the statuses the
    command's rows have for them (adjust's: ``adjusted``); ``as_dict``: rows as dicts (avatar's), not objects."""

    def __init__(
        self,
        stop: BaseException,
        finished: int,
        without: int = 0,
        ok: str = "ok",
        no_face: str = "no_face",
        as_dict: bool = False,
    ) -> None:
        self.stop, self.finished, self.without = stop, finished, without
        self.ok, self.no_face, self.as_dict = ok, no_face, as_dict

    def __call__(self, *args: Any, on_row: Any, **kwargs: Any) -> None:
        from types import SimpleNamespace

        for status in [self.ok] * self.finished + [self.no_face] * self.without:
            on_row({"status": status} if self.as_dict else SimpleNamespace(status=status))
        raise self.stop
