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


#: A figure that is not a number: a run that measured nothing (no photos found, too few people).
NOT_A_NUMBER = re.compile(r"(?<![A-Za-z])nan(?![A-Za-z])", re.I)


def notes_marker(name: str) -> str:
    """Where section ``name``'s notes begin: what is written from this line to the section's end (figures measured
    by other commands, before/after rows of a change, where a figure comes from) is kept when the script rewrites
    the section. Before, a rerun dropped them."""
    return f"<!-- {name}:notes -->"


def write_section(name: str, body: str) -> None:
    """Replace the text between ``<!-- name:start -->`` and ``<!-- name:end -->`` (append the section if new), keeping
    the section's notes (:func:`notes_marker`) after the new body. A body with a NaN figure is refused, RESULTS.md left
    as it is (helper-75: a run without data wrote "0 photos ... nan" over the published figures)."""
    if NOT_A_NUMBER.search(body):
        raise SystemExit(f"section {name!r} has NaN figures (nothing measured?): RESULTS.md left as it is")
    text = RESULTS.read_text() if RESULTS.exists() else HEADER
    pattern = re.compile(rf"<!-- {re.escape(name)}:start -->.*?<!-- {re.escape(name)}:end -->", re.S)
    found = pattern.search(text)
    marker = notes_marker(name)
    notes = ""
    if found and marker in found.group(0) and marker not in body:
        notes = "\n\n" + marker + found.group(0).split(marker, 1)[1].removesuffix(f"<!-- {name}:end -->").rstrip()
    block = f"<!-- {name}:start -->\n{body.rstrip()}{notes}\n<!-- {name}:end -->"
    text = pattern.sub(lambda _: block, text) if found else text.rstrip() + "\n\n" + block + "\n"
    temporary = RESULTS.with_name(f".{RESULTS.name}.tmp")  # never half a file
    temporary.write_text(text)
    temporary.replace(RESULTS)


def publish(name: str, lines: list[str], write: bool = True) -> None:
    """Print a section and, unless ``write`` is false (``--no-write``), put it into RESULTS.md."""
    body = "\n".join(lines)
    print(body)
    if write:
        write_section(name, body)
