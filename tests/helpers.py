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


#: Display P3's primaries (Apple's profile: XYZ adapted to D50), the wide-gamut profile phones embed.
DISPLAY_P3_COLORANTS = ((0.5151, 0.2412, -0.0011), (0.2920, 0.6922, 0.0419), (0.1571, 0.0666, 0.7841))


def matrix_icc(
    colorants: tuple[tuple[float, float, float], ...], gamma: float, name: str | bytes = "test RGB"
) -> bytes:
    """A minimal ICC v2 RGB display profile (matrix + one gamma curve per channel), built byte by byte from the ICC
    specification so tests can embed a profile that is not sRGB without a file: primaries ``colorants`` (3 XYZ
    triples, D50) and a pure power ``gamma`` curve."""
    import struct

    def s15(value: float) -> bytes:
        return struct.pack(">i", round(value * 65536))

    def xyz(values: tuple[float, float, float]) -> bytes:
        return b"XYZ " + bytes(4) + b"".join(s15(v) for v in values)

    ascii_name = (name.encode("ascii") if isinstance(name, str) else name) + b"\x00"  # bytes: any (bad) encoding
    desc = b"desc" + bytes(4) + struct.pack(">I", len(ascii_name)) + ascii_name + bytes(4 + 4 + 2 + 1 + 67)
    curve = b"curv" + bytes(4) + struct.pack(">IH", 1, round(gamma * 256)) + bytes(2)
    tags = [
        (b"desc", desc),
        (b"wtpt", xyz((0.9642, 1.0, 0.8249))),
        (b"rXYZ", xyz(colorants[0])),
        (b"gXYZ", xyz(colorants[1])),
        (b"bXYZ", xyz(colorants[2])),
        (b"rTRC", curve),
        (b"gTRC", curve),
        (b"bTRC", curve),
        (b"cprt", b"text" + bytes(4) + b"no copyright, test data\x00"),
    ]
    offset = 128 + 4 + 12 * len(tags)
    table, body = struct.pack(">I", len(tags)), b""
    for signature, data in tags:
        data += bytes(-len(data) % 4)
        table += signature + struct.pack(">II", offset + len(body), len(data))
        body += data
    size = offset + len(body)
    header = (
        struct.pack(">I", size)
        + bytes(4)
        + struct.pack(">I", 0x02100000)
        + b"mntrRGB XYZ "
        + struct.pack(">6H", 2026, 1, 1, 0, 0, 0)
        + b"acsp"
        + bytes(4 + 4 + 4 + 4 + 8)
        + struct.pack(">I", 0)
        + s15(0.9642)
        + s15(1.0)
        + s15(0.8249)
        + bytes(4 + 16 + 28)
    )
    assert len(header) == 128
    return header + table + body
