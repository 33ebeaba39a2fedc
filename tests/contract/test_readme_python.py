"""README's Python example as a user's own code: it passes ``mypy --strict`` against facekit's types (py.typed), as
a computer-vision engineer's type-checked project would check it. Before (helper-172): three errors in the README's
own lines, ``from_checkpoint("sface", detail=0)`` (typed ``DetailSettings | None``, though it takes a strength) and
``normalize_many(["a.jpg", "b.png"], ...)`` (typed as arrays only, though it takes paths), so such a project needed
``# type: ignore`` on the documented calls."""

from __future__ import annotations

import re
import sys
from pathlib import Path

from tests.helpers import REPO

#: Forms the docstrings promise beside the README's: a Path, a PIL image, bytes or None in a batch; a torch.device;
#: detail as a mapping of DetailSettings' fields.
MORE = """
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from facekit import Normalizer

normalizer = Normalizer.from_checkpoint(Path("model.safetensors"), device=torch.device("cpu"), detail={"strength": 0.5})
array = np.zeros((64, 64, 3), np.uint8)
outcomes = normalizer.normalize_many([Path("a.jpg"), Image.open("b.png"), None, b"...", array], list("abcde"))
first = outcomes[0].face.image if outcomes[0].face is not None else None
"""


def readme_python() -> str:
    blocks = re.findall(r"```python\n(.*?)```", (REPO / "README.md").read_text(), re.DOTALL)
    return next(block for block in blocks if "from facekit import Normalizer" in block)


def test_the_readme_example_type_checks_strictly(tmp_path: Path) -> None:
    """``--follow-imports=silent``: facekit's own modules are read for their types but not reported on, as mypy
    treats an installed package (the user's script is what is checked)."""
    from mypy import api

    files = [tmp_path / "readme_example.py", tmp_path / "more_forms.py"]
    files[0].write_text(readme_python())
    files[1].write_text(MORE)
    options = ["--strict", "--follow-imports=silent", "--no-color-output", "--cache-dir", str(tmp_path / "cache")]
    limit = sys.getrecursionlimit()
    try:
        report, errors, status = api.run([*options, *map(str, files)])
    finally:
        sys.setrecursionlimit(limit)  # (mypy's main sets 2**14 for the whole process)
    assert status == 0, f"mypy --strict on README's Python example:\n{report}{errors}"
