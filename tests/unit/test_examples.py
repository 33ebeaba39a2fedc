"""The example scripts as a user runs them (helper-79): outputs that exist are not replaced without --overwrite, the
defaults are the repository's docs/ (not the current folder's), data is found from anywhere, and bad options or
missing data are one line before any model loads."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def example(name: str, *args: str, cwd: Path = REPO, data: str | None = None) -> subprocess.CompletedProcess[str]:
    env = {**os.environ}
    if data is not None:
        env["FACEKIT_DATA"] = data
    script = REPO / "examples" / name
    return subprocess.run(
        [sys.executable, str(script), *args], capture_output=True, text=True, cwd=cwd, env=env, timeout=300
    )


def said(result: subprocess.CompletedProcess[str]) -> str:
    assert "Traceback" not in result.stderr, result.stderr
    return " ".join(result.stderr.split())


def test_figures_are_not_replaced_unasked(tmp_path: Path) -> None:
    existing = tmp_path / "figure.png"
    existing.write_bytes(b"the user's")
    for script in ("readme_figure.py", "adjust_figure.py"):
        refused = example(script, "--out", str(existing))
        assert refused.returncode == 2 and "exists: --overwrite replaces it" in said(refused)
        folder = example(script, "--out", str(tmp_path))
        assert folder.returncode == 2 and "give an image file name" in said(folder)
    assert existing.read_bytes() == b"the user's"
    # The default is the repository's own figure, wherever the script runs: refused there, and nothing made here.
    elsewhere = example("readme_figure.py", cwd=tmp_path)
    assert elsewhere.returncode == 2 and f"{REPO / 'docs' / 'demo-grid.png'} exists" in said(elsewhere)
    assert not (tmp_path / "docs").exists()
    both = example("explore_figures.py", "--compare", str(existing), "--interpolate", str(tmp_path / "i.jpg"))
    assert both.returncode == 2 and "--compare" in said(both)


def test_each_out_says_whether_it_is_a_file_or_a_folder() -> None:
    """helper-144: the figure scripts' --out (a file) had no help, beside average_faces.py's --out (a folder, as
    `make demo` gives it); each now says which it is."""
    for script, default in (
        ("readme_figure.py", "docs/demo-grid.png"),
        ("adjust_figure.py", "docs/adjust-before-after.jpg"),
        ("serve_screenshot.py", "docs/serve.png"),
    ):
        shown = example(script, "--help")
        assert shown.returncode == 0 and "[--out FILE]" in shown.stdout, shown.stdout
        assert f"this script writes one image, so a file, not a folder; default: the repository's {default})" in (
            " ".join(shown.stdout.split())
        )
    shown = example("average_faces.py", "--help")
    assert shown.returncode == 0 and "[--out FOLDER]" in shown.stdout, shown.stdout
    assert "the folder to write average_faces.png and mean_face.png into" in " ".join(shown.stdout.split())
    # explore_figures.py writes two figures, each named by an option of its own (helper-147: neither had help).
    shown = example("explore_figures.py", "--help")
    text = " ".join(shown.stdout.split())
    assert shown.returncode == 0 and "[--compare FILE] [--interpolate FILE]" in text, shown.stdout
    assert "--compare FILE where to write the comparison figure (the models side by side" in text
    assert "--interpolate FILE where to write the interpolation figure" in text
    assert "default: the repository's docs/explore-compare.jpg" in text
    assert "default: the repository's docs/explore-interpolate.jpg" in text


def test_bad_options_and_missing_data_are_one_line(tmp_path: Path) -> None:
    out = ["--compare", str(tmp_path / "c.jpg"), "--interpolate", str(tmp_path / "i.jpg")]
    label = example("explore_figures.py", "--checkpoint", "model.safetensors", *out)
    assert label.returncode == 2 and "LABEL=FILE" in said(label)
    for people in ("1", "0", "-3"):
        few = example("average_faces.py", "--people", people, "--out", str(tmp_path))
        assert few.returncode == 2 and "at least 2 faces" in said(few)
    (tmp_path / "mean_face.png").write_bytes(b"the user's")
    kept = example("average_faces.py", "--out", str(tmp_path))
    assert kept.returncode == 2 and "mean_face.png: --overwrite replaces them" in said(kept)
    no_data = example("adjust_figure.py", "--out", str(tmp_path / "a.jpg"), data=str(tmp_path / "none"))
    assert no_data.returncode == 1 and "no data folder" in said(no_data)
    (tmp_path / "empty" / "lfw").mkdir(parents=True)
    lacking = example("explore_figures.py", *out, data=str(tmp_path / "empty"))
    assert lacking.returncode == 1 and "lacks Amelie_Mauresmo/Amelie_Mauresmo_0001.jpg" in said(lacking)
    assert not (tmp_path / "c.jpg").exists()


def test_average_faces_from_another_folder(tmp_path: Path, data_root: Path) -> None:
    made = example("average_faces.py", "--people", "3", "--size", "64", "--out", str(tmp_path / "out"), cwd=tmp_path)
    assert made.returncode == 0, made.stderr
    assert {p.name for p in (tmp_path / "out").iterdir()} == {"average_faces.png", "mean_face.png"}
    again = example("average_faces.py", "--people", "3", "--size", "64", "--out", "out", "--overwrite", cwd=tmp_path)
    assert again.returncode == 0, again.stderr
