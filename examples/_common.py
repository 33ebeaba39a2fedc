"""What the example scripts share: where the data is, and output files that are never replaced unasked.

Not an example itself. Each script puts ``examples/`` on ``sys.path`` by being run from it (``python examples/X.py``).
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

#: The repository (the figures' default folder, ``docs/``, is its own, wherever a script is run from).
REPO = Path(__file__).resolve().parents[1]
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")


def data_root() -> Path:
    """``$FACEKIT_DATA``, else the ``shared/data`` folder beside the repository (not the current folder's parent,
    which is what the recipes' own default reads: the scripts are run from anywhere)."""
    root = Path(os.environ["FACEKIT_DATA"]) if os.environ.get("FACEKIT_DATA") else REPO.parent / "shared" / "data"
    if not root.is_dir():
        raise SystemExit(f"no data folder at {root}: set FACEKIT_DATA to the folder that holds lfw/ and london/")
    return root


def add_overwrite(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--overwrite", action="store_true", help="replace output files that exist")


def add_figure_out(parser: argparse.ArgumentParser, default: Path) -> None:
    """``--out FILE``: the one image a figure script writes (a script that writes several, ``average_faces.py``,
    takes ``--out FOLDER``)."""
    parser.add_argument(
        "--out",
        metavar="FILE",
        default=default,
        help=f"the image file to write (.png, .jpg or .jpeg; this script writes one image, so a file, not a folder; "
        f"default: the repository's {default.relative_to(REPO)})",
    )


def add_figure_file(parser: argparse.ArgumentParser, option: str, default: Path, figure: str) -> None:
    """``option FILE``: one of the images a script that writes several figures (``explore_figures.py``) writes,
    each to a file of its own; ``figure`` says what the image shows."""
    parser.add_argument(
        option,
        metavar="FILE",
        default=default,
        help=f"where to write {figure}: an image file (.png, .jpg or .jpeg), not a folder; default: the repository's "
        f"{default.relative_to(REPO)}",
    )


def figure_path(parser: argparse.ArgumentParser, value: str | Path, overwrite: bool, option: str = "--out") -> Path:
    """``value`` as an image file to write: a folder, another kind of file, or a file that exists without
    ``--overwrite`` is a usage error (exit 2) before any work."""
    path = Path(value)
    if path.is_dir() or path.suffix.lower() not in IMAGE_SUFFIXES:
        parser.error(f"{option} {path}: give an image file name ending in {', '.join(IMAGE_SUFFIXES)}")
    if path.exists() and not overwrite:
        parser.error(f"{option} {path} exists: --overwrite replaces it")
    return path
