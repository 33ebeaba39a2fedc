"""A real ``facekit serve`` in a subprocess, for tests, benchmarks and screenshots of the page.

    with running_server(folder, ["--sfm", str(sfm)]) as server:
        requests to server.url ...

The server runs with ``TMPDIR`` set to ``folder`` (its work folder and Gradio's land there, deleted with it), one
OpenMP thread unless the caller's environment says otherwise, and its output in ``folder / "server.log"``. It is
stopped as an operator would stop it (SIGTERM, then a kill after ``stop_seconds``).
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from facekit.errors import FacekitError


class ServerDidNotStart(FacekitError):
    """The server exited, or did not answer in time; the message ends with the tail of its log."""


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on now."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@dataclass
class Server:
    url: str
    port: int
    process: subprocess.Popen[bytes]
    folder: Path

    @property
    def log(self) -> Path:
        return self.folder / "server.log"

    def log_tail(self, characters: int = 3000) -> str:
        return self.log.read_text(errors="replace")[-characters:] if self.log.is_file() else ""


def answers(url: str) -> bool:
    """Whether ``url`` answers with HTTP 200 now."""
    try:
        with urllib.request.urlopen(url, timeout=2) as response:
            return bool(response.status == 200)
    except OSError:
        return False


@contextmanager
def running_server(
    folder: Path,
    arguments: Sequence[str] = (),
    env: Mapping[str, str] | None = None,
    start_seconds: float = 180.0,
    stop_seconds: float = 30.0,
) -> Iterator[Server]:
    """``facekit serve --port <free port> ARGUMENTS...`` running until the block ends (see the module docstring);
    ``env`` adds to the environment. Raises :class:`ServerDidNotStart`."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    port = free_port()
    environment = {**os.environ, "TMPDIR": str(folder), "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1")}
    environment.pop("GRADIO_TEMP_DIR", None)  # Gradio's copies go under TMPDIR too
    environment.update(env or {})
    command = [sys.executable, "-m", "facekit.cli", "serve", "--port", str(port), *arguments]
    with (folder / "server.log").open("wb") as log:
        process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, env=environment)
        server = Server(f"http://127.0.0.1:{port}/", port, process, folder)
        try:
            deadline = time.monotonic() + start_seconds
            while not answers(server.url):
                if process.poll() is not None:
                    raise ServerDidNotStart(f"facekit serve exited with {process.returncode}:\n{server.log_tail()}")
                if time.monotonic() > deadline:
                    raise ServerDidNotStart(
                        f"facekit serve did not answer within {start_seconds:.0f} s:\n{server.log_tail()}"
                    )
                time.sleep(0.25)
            yield server
        finally:
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
                try:
                    process.wait(timeout=stop_seconds)
                except subprocess.TimeoutExpired:
                    process.kill()
                    process.wait()
