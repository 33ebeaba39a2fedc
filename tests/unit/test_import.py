"""`import facekit` stays light: no torch, dlib, onnxruntime or timm until a component is built."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

HEAVY = ("torch", "dlib", "onnxruntime", "timm", "cv2", "tensorflow")


def _modules_after(code: str) -> set[str]:
    out = subprocess.run(
        [sys.executable, "-c", f"{code}\nimport sys\nprint('\\n'.join(sys.modules))"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    return set(out.split())


def test_import_facekit_loads_no_heavy_module() -> None:
    loaded = _modules_after("import facekit")
    assert not [m for m in HEAVY if m in loaded]


def test_registries_and_cli_load_no_heavy_module() -> None:
    # Listing components and building the CLI touches every plugin's hooks: they must defer heavy imports too.
    loaded = _modules_after(
        "import facekit, facekit.cli\nfacekit.list_components()\nfacekit.cli._register_plugin_commands()"
    )
    assert not [m for m in HEAVY if m in loaded]


def test_the_normalizer_api_imports_no_torch_until_a_normalizer_is_built() -> None:
    """Before: `from facekit import Normalizer` (or NormalizedFace, for an annotation) imported torch at
    facekit.normalize's top: 4.8-6.1 s and 227 MB against 0.55-0.63 s and 31 MB now (one busy two-core machine,
    both in turn). Torch comes when a Normalizer is built (test_inference_imports_no_training_module builds one)."""
    loaded = _modules_after("from facekit import NormalizedFace, Normalizer, Outcome")
    assert "facekit.normalize" in loaded and not [m for m in HEAVY if m in loaded]


@pytest.mark.skipif(not hasattr(os, "fork"), reason="fork is POSIX's")
def test_a_worker_forked_before_torch_was_imported_gets_one_torch_thread_too() -> None:
    """A worker of a "fork" pool works on one torch thread (README; no workers times cores threads). Since
    `from facekit import Normalizer` imports no torch, a pool forked before a Normalizer was built had a torch that
    came later, in the worker, on every core: facekit.normalize's at-fork hook had nothing to set then. A choice of
    the user's (OMP_NUM_THREADS set) is kept."""
    code = (
        "import os, sys\n"
        "from facekit import Normalizer\n"
        "assert 'torch' not in sys.modules\n"
        "pid = os.fork()\n"
        "if pid == 0:\n"
        "    import torch\n"
        "    threads = (os.environ.get('OMP_NUM_THREADS'), torch.get_num_threads())\n"
        "    os._exit(0 if threads == (sys.argv[1], int(sys.argv[1])) else 3)\n"
        "_, status = os.waitpid(pid, 0)\n"
        "sys.exit(os.waitstatus_to_exitcode(status))\n"
    )
    env = {key: value for key, value in os.environ.items() if key != "OMP_NUM_THREADS"}
    for chosen in (None, "2"):
        run = subprocess.run(
            [sys.executable, "-c", code, chosen or "1"],
            env=env if chosen is None else {**env, "OMP_NUM_THREADS": chosen},
            capture_output=True,
            text=True,
        )
        assert run.returncode == 0, (chosen, run.stderr)


def test_the_check_itself_can_fail() -> None:
    assert "json" in _modules_after("import json")


def test_inference_imports_no_training_module() -> None:
    """Before: Normalizer.from_checkpoint imported facekit.train (checkpoint I/O lived there) and with it the pool,
    losses and the training loop."""
    loaded = _modules_after(
        "import facekit\nfrom facekit.testing import real_face\n"
        "facekit.Normalizer.from_checkpoint().normalize(real_face().image.copy())"
    )
    assert "facekit.checkpoints" in loaded
    assert not [m for m in ("facekit.train", "facekit.pool", "facekit.losses", "facekit.data.prepare") if m in loaded]


def test_help_imports_no_numpy() -> None:
    """`facekit --help` (every command starts the same way: the CLI, its plugins' commands, the warning filters) took
    0.35 s against 0.22 s when it was measured first; 40 ms of it was numpy, imported by the Pillow warning filter's
    module (facekit.images) and the avatar plugin's command module, neither of which needs it to start."""
    loaded = _modules_after(
        "from facekit.cli import main\nimport contextlib, io\n"
        "with contextlib.redirect_stdout(io.StringIO()):\n    main(['--help'])"
    )
    assert "facekit.cli" in loaded and "numpy" not in loaded


def test_adjust_by_a_whole_photo_method_imports_no_torch(tmp_path: Path) -> None:
    """Before: `facekit adjust --method gray-world` imported torch (facekit.normalize, for --device, which only
    --method adjust takes): 334 MB at 6 MP where it had taken 154 (RESULTS.md "adjust")."""
    photo, out = tmp_path / "photo.jpg", tmp_path / "out"
    loaded = _modules_after(
        "import numpy as np\nfrom PIL import Image\n"
        f"Image.fromarray(np.full((64, 96, 3), 120, np.uint8)).save({str(photo)!r})\n"
        "from facekit.cli import main\n"
        "try:\n"
        f"    main(['adjust', {str(photo)!r}, '-o', {str(out)!r}, '--method', 'gray-world'])\n"
        "except SystemExit as end:\n"
        "    assert not end.code, end.code"
    )
    assert (out / "photo.jpg").is_file() and "facekit.apps.adjust" in loaded and "torch" not in loaded


def test_the_compositing_module_imports_no_scipy_until_it_composites() -> None:
    """facekit.data.poisson's masks (face_mask, coverage) serve normalizes that never composite; scipy.linalg (the
    coarsest grid's pinvh) at its top made its import 0.25-0.54 s against 14-22 ms (min-median, numpy and cv2
    loaded, a busy two-core machine; helper-202). A composite still finds it."""
    assert "scipy.linalg" not in _modules_after("import facekit.data.poisson")
    assert "scipy.linalg" in _modules_after(
        "import numpy as np\nfrom facekit.data.poisson import composite\n"
        "composite(np.zeros((9, 9, 3), np.float32), np.ones((9, 9, 3), np.float32), np.full((9, 9), 0.5, np.float32))"
    )
