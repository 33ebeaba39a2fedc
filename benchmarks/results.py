"""Shared by the benchmark scripts: machine description and marker-delimited sections of RESULTS.md."""

from __future__ import annotations

import platform
import re
from datetime import date
from pathlib import Path

RESULTS = Path(__file__).resolve().with_name("RESULTS.md")
HEADER = (
    "# facekit benchmark results\n\n"
    "Each section is rewritten by the script named in it; the numbers are measured, never edited by hand.\n"
)


def machine() -> str:
    """CPU model, core count and Python, as one line."""
    model = platform.processor() or "unknown CPU"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    import os

    return f"{model}, {os.cpu_count()} cores, Python {platform.python_version()}, {date.today().isoformat()}"


def write_section(name: str, body: str) -> None:
    """Replace the text between ``<!-- name:start -->`` and ``<!-- name:end -->`` (append the section if new)."""
    text = RESULTS.read_text() if RESULTS.exists() else HEADER
    block = f"<!-- {name}:start -->\n{body.rstrip()}\n<!-- {name}:end -->"
    pattern = re.compile(rf"<!-- {re.escape(name)}:start -->.*?<!-- {re.escape(name)}:end -->", re.S)
    text = pattern.sub(lambda _: block, text) if pattern.search(text) else text.rstrip() + "\n\n" + block + "\n"
    RESULTS.write_text(text)


def publish(name: str, lines: list[str], write: bool = True) -> None:
    """Print a section and, unless ``write`` is false (``--no-write``), put it into RESULTS.md."""
    body = "\n".join(lines)
    print(body)
    if write:
        write_section(name, body)
