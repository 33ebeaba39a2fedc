"""The real console script, as a user runs it."""

from __future__ import annotations

import json
import os
import re
import signal
import stat
import sys
from pathlib import Path
from typing import Any

import pytest

import facekit
from tests.helpers import REPO, run_cli, sigterm_in_a_terminal

BAD_RECIPE = """
components:
  warper: {name: rbf-linear, params: {boundary_points: many}}
  encoder: {name: facenett}
trian: {steps: 3}
"""


def test_version() -> None:
    result = run_cli("--version")
    assert result.returncode == 0 and result.stdout.strip() == f"facekit {facekit.__version__}"


def test_plugins_lists_builtin() -> None:
    result = run_cli("plugins")
    assert result.returncode == 0, result.stderr
    assert "builtin" in result.stdout and "register_warpers" in result.stdout


def test_list_kind() -> None:
    result = run_cli("list", "warpers")
    assert result.returncode == 0, result.stderr
    assert "rbf-linear" in result.stdout and "piecewise-affine" in result.stdout
    bad = run_cli("list", "warpres")
    assert bad.returncode == 1 and "unknown kind 'warpres'" in bad.stderr


def test_check_shows_the_plan() -> None:
    result = run_cli("check", "recipes/demo.yaml", "--set", "train.steps=9")
    assert result.returncode == 0, result.stderr
    assert "valid" in result.stdout and "rbf-linear" in result.stdout and "steps = 9" in result.stdout
    # Where data.root (unset: $FACEKIT_DATA or the default) and the relative outputs lead.
    assert "data is read from " in result.stdout and "relative outputs are under " in result.stdout
    grid = run_cli("check", "benchmarks/encoders_x_warps.yaml")  # the bench grid is part of the plan too
    assert grid.returncode == 0 and "bench" in grid.stdout and "max_photos = 100" in grid.stdout, grid.stdout
    # A bench judge by name beside one with params: each shown (before: a name in a list beside a mapping, "[0]")
    judges = "bench.judges=[sface, {name: facenet, params: {variant: casia-webface-tf}}]"
    listed = run_cli("check", "benchmarks/encoders_x_warps.yaml", "--set", judges)
    assert listed.returncode == 0 and "[0] = 'sface'" in listed.stdout, listed.stdout
    assert "variant = 'casia-webface-tf'" in listed.stdout
    inside = run_cli("check", "recipes/demo.yaml", "--set", "data.train.0.peple=x")  # where in the list it is
    assert inside.returncode == 2 and "is not a key of data.train.0" in " ".join(inside.stderr.split())
    london = run_cli("check", "recipes/demo.yaml", "--set", "evaluate.data=london")  # not implemented: refused
    assert london.returncode == 2, london.stdout
    # The decoder's feature_size shown is what trains: the encoder's (its card), not the decoder's default 256.
    sface = run_cli("check", "recipes/demo.yaml", "--set", "components.encoder.name=sface")
    assert sface.returncode == 0, sface.stderr
    assert "feature_size = 128 (the encoder's" in sface.stdout and "feature_size = 256\n" not in sface.stdout


def long_folder(tmp_path: Path) -> Path:
    """A folder whose path is over 300 characters (in parts a file system takes)."""
    folder = tmp_path.joinpath(*["a-folder-with-a-long-name-" + str(i) * 30 for i in range(6)])
    folder.mkdir(parents=True)
    assert len(str(folder)) > 300
    return folder


def test_long_lines_come_out_whole_in_a_log(tmp_path: Path, data_root: Path) -> None:
    """Into a pipe (a log, CI, grep), a message and a tree's line are one line each, however long. Before, rich
    wrapped every line at the 160 columns of a non-terminal console: the path was cut in two, and grep for it in the
    log found nothing; a tree's line, once unwrapped, was cut at 160 columns."""
    folder = long_folder(tmp_path)
    verify = run_cli("models", "verify", env={"FACEKIT_HOME": str(folder)})
    assert verify.returncode == 0, verify.stderr
    assert f"the store is empty ({folder / 'models'})\n" in verify.stdout
    check = run_cli("check", str(REPO / "recipes" / "demo.yaml"), env={"FACEKIT_DATA": str(data_root)}, cwd=folder)
    assert check.returncode == 0, check.stderr
    assert f"data is read from {data_root.resolve()}; relative outputs are under {folder}\n" in check.stdout


def test_tables_in_a_log_keep_their_look(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    """In a log a table is laid out to 160 columns as before (its cells fold, a short title is centred over it),
    and a title longer than that comes out whole on its line (before: cut in two, as `facekit models list`'s store
    path was). Unwrapped lines alone left every title at the left."""
    from rich.table import Table

    from facekit import cli

    monkeypatch.setattr(cli, "console", cli._console(stderr=False))  # (capsys's stdout is no terminal)
    store = "/home/someone/" + "a-long-folder-name/" * 12 + "models"
    for title in ("facekit plugins", f"model files (store: {store})"):
        table = Table(title=title)
        table.add_column("found at", overflow="fold")
        table.add_row(store)
        cli.print_block(table)
    lines = capsys.readouterr().out.splitlines()
    assert len(store) > 160 and max(len(line) for line in lines) == len(f"model files (store: {store})")
    short_table = lines[: lines.index(next(line for line in lines[1:] if "(store:" in line))]
    assert max(len(line) for line in short_table) <= 160 and len(short_table) > 5  # the path folded in its cell
    centred = (len(short_table[1]) - len("facekit plugins")) // 2  # (over the table's top border)
    assert short_table[0].strip() == "facekit plugins" and short_table[0].index("facekit") == centred


def test_bad_recipe_one_message_exit_2_no_traceback(tmp_path: Path) -> None:
    recipe = tmp_path / "bad.yaml"
    recipe.write_text(BAD_RECIPE)
    result = run_cli("check", str(recipe), "--set", "train.stpes=4")
    assert result.returncode == 2
    assert "Traceback" not in result.stderr + result.stdout
    message = " ".join(result.stderr.split())  # rich may wrap; the message is one logical line
    assert "4 problems" in message
    for path in (
        "trian:",
        "components.encoder.name:",
        "components.warper.params.boundary_points:",
        "--set train.stpes:",
    ):
        assert path in message


def test_debug_shows_traceback(tmp_path: Path) -> None:
    recipe = tmp_path / "bad.yaml"
    recipe.write_text(BAD_RECIPE)
    result = run_cli("check", str(recipe), env={"FACEKIT_DEBUG": "1"})
    assert result.returncode != 0 and "Traceback" in result.stderr and "RecipeError" in result.stderr


def test_debug_zero_or_false_keeps_the_one_line_error(tmp_path: Path) -> None:
    """Before: any value, FACEKIT_DEBUG=0 included, turned tracebacks on."""
    recipe = tmp_path / "bad.yaml"
    recipe.write_text(BAD_RECIPE)
    for value in ("0", "false", ""):
        result = run_cli("check", str(recipe), env={"FACEKIT_DEBUG": value})
        assert result.returncode == 2 and "Traceback" not in result.stderr, value


def test_run_without_a_trained_model_is_one_line_exit_1(tmp_path: Path) -> None:
    result = run_cli(
        "run",
        "recipes/demo.yaml",
        "--stage",
        "evaluate",
        "--set",
        f"train.output={tmp_path}",
        "--set",
        f"evaluate.output={tmp_path / 'eval'}",
    )
    assert result.returncode == 1 and "checkpoint not found" in result.stderr and "Traceback" not in result.stderr


def test_a_missing_checkpoint_is_one_line_in_every_command(data_root: Path, tmp_path: Path) -> None:
    """Before: `facekit adjust --checkpoint` with no such file ended in a FileNotFoundError traceback."""
    photo = sorted((data_root / "london" / "smiling_front").glob("*.jpg"))[0]
    for command in ("normalize", "adjust", "attributes"):
        result = run_cli(command, str(photo), "-o", str(tmp_path / command), "--checkpoint", str(tmp_path / "nope"))
        assert result.returncode == 1, (command, result.stderr)
        assert "checkpoint not found" in result.stderr and "Traceback" not in result.stderr, command
        assert not (tmp_path / command).exists() or not any((tmp_path / command).iterdir()), command


def test_a_folder_given_as_the_checkpoint_is_named_as_a_folder(data_root: Path, tmp_path: Path) -> None:
    """Before: `--checkpoint runs/train/mine` (the training's folder, not its file) said "checkpoint not found" of a
    folder that is there, in every command and in Normalizer.from_checkpoint."""
    from facekit import Normalizer
    from facekit.errors import FacekitError

    photo = sorted((data_root / "london" / "smiling_front").glob("*.jpg"))[0]
    folder = tmp_path / "train"
    folder.mkdir()
    expected = f"checkpoint {folder} is a folder: give the model file itself"
    for command in ("normalize", "adjust"):
        result = run_cli(command, str(photo), "-o", str(tmp_path / command), "--checkpoint", str(folder))
        assert result.returncode == 1 and expected in result.stderr, (command, result.stderr)
        assert "Traceback" not in result.stderr and not (tmp_path / command).exists(), command
    exported = run_cli("export", str(folder), str(tmp_path / "model.safetensors"))
    assert exported.returncode == 1 and expected in exported.stderr, exported.stderr
    with pytest.raises(FacekitError, match="is a folder: give the model file itself"):
        Normalizer.from_checkpoint(str(folder))
    missing = run_cli("normalize", str(photo), "-o", str(tmp_path / "m"), "--checkpoint", str(tmp_path / "nope"))
    assert f"checkpoint not found: {tmp_path / 'nope'}" in missing.stderr, missing.stderr


def test_export_never_writes_over_its_metrics_file(data_root: Path, tmp_path: Path) -> None:
    """Before: `facekit export CKPT metrics.json --metrics metrics.json --overwrite` (OUT and --metrics swapped or
    repeated) replaced the evaluation's figures with the model file."""
    import shutil

    checkpoint = tmp_path / "model.safetensors"
    shutil.copyfile(Path(facekit.__file__).parent / "assets" / "default-model.safetensors", checkpoint)
    evaluated = run_cli("eval", "--checkpoint", str(checkpoint), "--max-photos", "1", "-o", str(tmp_path / "eval"))
    assert evaluated.returncode == 0, evaluated.stderr
    metrics = tmp_path / "eval" / "metrics.json"
    figures = metrics.read_bytes()
    result = run_cli("export", str(checkpoint), str(metrics), "--metrics", str(metrics), "--overwrite")
    assert result.returncode == 1 and "is the --metrics file" in result.stderr, result.stderr
    assert "Traceback" not in result.stderr and metrics.read_bytes() == figures


def test_an_export_removes_the_temporaries_a_killed_export_to_its_out_left(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Before (helper-222): an export killed outright (kill -9, out of memory) left its temporary beside OUT
    (``.OUT.XXXXXXXX.tmp``, a model's size), hidden, for good. The next export to that OUT removes those of its own
    pattern left untouched for an hour, never a fresh one (another export to it running) nor a file of the user's."""
    import shutil

    from facekit.checkpoints import export_model, remove_stale_temporaries_of
    from facekit.locks import STALE_AFTER_S

    checkpoint = tmp_path / "model.safetensors"
    shutil.copyfile(Path(facekit.__file__).parent / "assets" / "default-model.safetensors", checkpoint)
    out = tmp_path / "shipped.safetensors"
    killed, running = tmp_path / ".shipped.safetensors.k1ll_9ab.tmp", tmp_path / ".shipped.safetensors.runs_0ab.tmp"
    users = [tmp_path / name for name in (".shipped.safetensors.mine.tmp", ".other.safetensors.k1ll_9ab.tmp")]
    for path in (killed, running, *users):
        path.write_bytes(b"part of a model")
    old = os.path.getmtime(killed) - STALE_AFTER_S - 60
    for path in (killed, *users):
        os.utime(path, (old, old))
    export_model(checkpoint, out)
    assert out.is_file() and not killed.exists()
    assert running.exists() and all(path.exists() for path in users)
    # Another user's, as old, in a folder both write (a shared one): never this user's to remove
    theirs = tmp_path / ".shipped.safetensors.th31r_9a.tmp"
    theirs.write_bytes(b"part of a model")
    os.utime(theirs, (old, old))
    mine = os.getuid()
    monkeypatch.setattr(os, "getuid", lambda: mine + 1)
    assert remove_stale_temporaries_of(out) == 0 and theirs.exists()


def test_missing_recipe_file() -> None:
    result = run_cli("check", "nope.yaml")
    assert result.returncode == 2 and "recipe not found: nope.yaml" in result.stderr


def test_a_set_with_a_space_for_its_equals_sign_is_one_line_saying_key_equals_value(
    capsys: pytest.CaptureFixture[str],
) -> None:
    """helper-188: `facekit run demo --set train.steps 5` got Typer's boxed "Got unexpected extra argument (5)",
    nothing about --set: one line with the --set as it should be typed, whichever command takes --set, and before
    anything runs. A --set without '=' and no word Typer leaves over is the recipe check's (its line kept)."""
    from facekit.cli import USAGE_ERROR, main

    for args in (
        ["run", "demo", "--set", "train.steps", "5"],
        ["run", "--set", "train.steps", "5", "demo"],  # (5 taken for the recipe, demo left over)
        ["check", "demo", "-s", "train.steps", "5", "--stage", "train"],
        ["models", "bundle", "demo", "out.tar", "--set", "train.steps", "5"],
        ["run", "demo", "--set=train.steps", "5"],  # (the option's '=' typed, the value's not: helper-194)
    ):
        assert main(args) == USAGE_ERROR, args
        assert capsys.readouterr().err == "error: --set takes KEY=VALUE: --set train.steps=5\n", args
    assert main(["check", "demo", "--set", "train.steps"]) == 2
    said = capsys.readouterr().err
    assert said.startswith("error: demo: 1 problem: --set train.steps: expected KEY=VALUE, e.g. train.steps=100"), said
    assert main(["run", "demo", "--set", "train.steps", "5", "--help"]) == 0  # help first, as for any mistake
    assert "--set takes" not in capsys.readouterr().err
    for extra in (["run", "demo", "extra"], ["run", "demo", "--set", "train.steps=5", "7"]):  # Typer's, as before
        assert main(extra) == 2
        assert "unexpected extra argument" in capsys.readouterr().err


def test_a_negative_value_after_set_key_is_taken_for_the_value(capsys: pytest.CaptureFixture[str]) -> None:
    """`facekit run demo --set train.steps -5` got click's "No such option: -5" in a box, as if -5 were an option: a
    negative number after --set KEY is its value, said as a --set with a space for the '=' is (one line with the --set
    as it should be typed, exit 2), in --set KEY VALUE, --set=KEY VALUE and -s KEY VALUE, wherever the recipe is; so
    typed, the recipe's own check says it in its usual words. A word like an option (-x) keeps click's message."""
    from facekit.cli import USAGE_ERROR, main

    for args, value in (
        (["run", "demo", "--set", "train.steps", "-5"], "-5"),
        (["run", "demo", "--set=train.steps", "-5"], "-5"),
        (["run", "--set", "train.steps", "-5", "demo"], "-5"),
        (["check", "demo", "-s", "train.steps", "-1e-3", "--stage", "train"], "-1e-3"),
    ):
        assert main(args) == USAGE_ERROR, args
        assert capsys.readouterr().err == f"error: --set takes KEY=VALUE: --set train.steps={value}\n", args
    assert main(["run", "demo", "--stage", "train", "--set", "train.steps=-5"]) == 2
    said = capsys.readouterr().err
    assert said.endswith("--set train.steps=-5: train.steps must be at least 1 (got -5)\n"), said
    assert main(["run", "demo", "--set", "train.steps", "-x"]) == 2
    assert "No such option: -x" in capsys.readouterr().err


def test_the_cli_waits_passively_unless_told_otherwise(monkeypatch: pytest.MonkeyPatch) -> None:
    from facekit.cli import main

    monkeypatch.delenv("OMP_WAIT_POLICY", raising=False)
    main(["--version"])
    assert os.environ["OMP_WAIT_POLICY"] == "PASSIVE"  # see benchmarks/omp_wait.py
    monkeypatch.setenv("OMP_WAIT_POLICY", "ACTIVE")
    main(["--version"])
    assert os.environ["OMP_WAIT_POLICY"] == "ACTIVE"


def test_the_command_freezes_what_is_left_for_the_exit_rather_than_collecting_it(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Python's shutdown ran full garbage collections over every object left (torch's hundreds of thousands): 1.7-3 s
    after `facekit normalize` returned on a busy machine. The command (``main()``, argv from the command line) has
    them frozen at exit; ``main([...])`` called from Python (a test, a script that goes on) leaves the collector be."""
    import atexit
    import gc

    from facekit.cli import main

    registered: list[Any] = []
    monkeypatch.setattr(atexit, "register", registered.append)
    assert main(["--version"]) == 0 and registered == []
    monkeypatch.setattr(sys, "argv", ["facekit", "--version"])
    assert main() == 0 and registered == [gc.freeze]


def test_ctrl_c_says_what_is_kept(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """Typer turns Ctrl-C into exit 130 and says nothing; facekit says what stays and what a rerun skips."""
    import facekit.batch
    from facekit.cli import INTERRUPTED, main

    def interrupted(*args: object, **kwargs: object) -> None:
        raise KeyboardInterrupt

    monkeypatch.setattr(facekit.batch, "plan_folder", interrupted)  # (before its photos are known: nothing written)
    assert main(["normalize", str(tmp_path / "a.jpg"), "-o", str(tmp_path / "out")]) == INTERRUPTED == 130
    assert capsys.readouterr().err == "error: interrupted: what was written stays\n"
    # Ctrl-C while the plugins load, before Typer runs the command (before: a KeyboardInterrupt traceback).
    import facekit.cli

    monkeypatch.setattr(facekit.cli, "_register_plugin_commands", interrupted)
    assert main(["normalize", str(tmp_path / "a.jpg")]) == INTERRUPTED
    err = capsys.readouterr().err
    assert "interrupted: what was written stays" in err and "Traceback" not in err


#: Each photo command with its arguments, and the function that goes through its photos (module, name).
PHOTO_COMMANDS = {
    "normalize": (["normalize"], "facekit.batch", "normalize_planned"),
    "adjust": (["adjust", "--method", "gray-world"], "facekit.apps.adjust", "adjust_files"),
    "attributes": (["attributes"], "facekit.apps.attributes", "attributes_files"),
    "avatar": (["avatar"], "facekit_avatar.cli", "avatar_files"),
}
#: Each photo command's rows (RowsThenStop's keywords): the status of a photo with outputs, and one of a photo its
#: rerun does again (attributes keeps a no-face photo's row: its rerun reads an unreadable photo again).
PHOTO_ROWS: dict[str, dict[str, Any]] = {
    "normalize": {},
    "adjust": {"ok": "adjusted"},
    "attributes": {"no_face": "unreadable"},
    "avatar": {"as_dict": True},
}


@pytest.mark.parametrize("command", list(PHOTO_COMMANDS))
def test_a_stopped_photo_command_says_how_many_photos_it_finished_and_that_a_rerun_goes_on(
    command: str, data_root: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """helper-188: Ctrl+C, SIGTERM or SIGHUP in normalize, adjust, attributes or avatar said the CLI's line listing
    what every command does when run again (prepare's and the training's too). Each now says its own: how many of
    its photos it finished, where, and that the same command run again goes on with the rest (as a real Ctrl+C and
    rerun showed: normalize, adjust and avatar say the finished photos 'done', attributes keeps their rows)."""
    import importlib
    from types import SimpleNamespace

    from facekit.cli import INTERRUPTED, main
    from facekit.errors import Terminated
    from facekit.normalize import Normalizer
    from facekit.types import FaceChoice

    arguments, module, name = PHOTO_COMMANDS[command]
    photos = sorted((data_root / "london" / "smiling_front").glob("*.jpg"))[:3]
    from tests.helpers import RowsThenStop

    through = RowsThenStop(KeyboardInterrupt(), 2, **PHOTO_ROWS[command])  # two photos' outputs written, then the stop
    normalizer = SimpleNamespace(detail=SimpleNamespace(as_record=dict), face=FaceChoice.LARGEST)
    monkeypatch.setattr(importlib.import_module(module), name, through)
    monkeypatch.setattr(Normalizer, "from_checkpoint", classmethod(lambda *args, **kwargs: normalizer))
    # (attributes' measurer, avatar's maker: no model loaded)
    built = SimpleNamespace(normalizer=normalizer, model=SimpleNamespace(path=photos[0]))
    monkeypatch.setattr(facekit, "load_component", lambda *args, **kwargs: built)
    out = tmp_path / "out"
    line = [*arguments, *map(str, photos), "-o", str(out), *(["--sfm", str(photos[0])] if command == "avatar" else [])]
    assert main(line) == INTERRUPTED
    assert capsys.readouterr().err.splitlines()[-1:] == [  # (after the progress bar's lines)
        f"error: {command} stopped by Ctrl+C: 2 of 3 photos finished, kept in {out}; run the same command again to "
        "go on with the other 1"
    ]
    # A photo without outputs (no face found; attributes': unreadable) is done again by the rerun: not finished
    # (helper-231: adjust, attributes and avatar said 2 of 3, as normalize did before helper-226).
    through.finished, through.without = 1, 1
    assert main(line) == INTERRUPTED
    assert capsys.readouterr().err.splitlines()[-1:] == [
        f"error: {command} stopped by Ctrl+C: 1 of 3 photos finished, kept in {out}; run the same command again "
        "to go on with the other 2, the 1 it made no output for among them"
    ]
    if command == "attributes":  # a no-face photo's row its rerun keeps: finished
        through.no_face = "no_face"
        assert main(line) == INTERRUPTED
        assert capsys.readouterr().err.splitlines()[-1:] == [
            f"error: attributes stopped by Ctrl+C: 2 of 3 photos finished, kept in {out}; run the same command again "
            "to go on with the other 1"
        ]
    through.without = 0
    # (the CLI's line for every command)
    through.stop, through.finished = Terminated("stopped by {signal}", signal.SIGTERM), 0
    assert main(line) == 143
    assert capsys.readouterr().err.splitlines()[-1:] == [
        f"error: {command} stopped by SIGTERM before its first photo was done: run the same command again"
    ]


def test_a_stopped_export_says_its_model_file_is_as_it_was_and_leaves_no_part(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """helper-198: Ctrl+C or SIGTERM in `facekit export` said the CLI's general line, and left the part of the model
    file written (``.OUT.tmp``) beside OUT. The file is renamed into place whole, so OUT is the old one (or none):
    the line says so, and the part is removed."""
    import shutil

    import facekit.checkpoints
    from facekit.cli import INTERRUPTED, main
    from facekit.errors import Terminated

    checkpoint, out = tmp_path / "model.safetensors", tmp_path / "out.safetensors"
    shutil.copyfile(Path(facekit.__file__).parent / "assets" / "default-model.safetensors", checkpoint)
    out.write_bytes(b"the old model")
    stop: BaseException = KeyboardInterrupt()

    def stopped_halfway(tensors: Any, path: Path, metadata: Any) -> None:
        path.write_bytes(b"half")
        raise stop

    monkeypatch.setattr(facekit.checkpoints, "save_tensors", stopped_halfway)
    assert main(["export", str(checkpoint), str(out), "--overwrite"]) == INTERRUPTED
    assert capsys.readouterr().err.splitlines() == [
        f"error: export stopped by Ctrl+C: {out} is as it was (a model file is never half-written); run it again"
    ]
    assert out.read_bytes() == b"the old model" and sorted(p.name for p in tmp_path.iterdir()) == [
        "model.safetensors",
        "out.safetensors",
    ]
    # Where there was no OUT, there is none: "as it was" said nothing (helper-208).
    stop, new = Terminated("stopped by {signal}", signal.SIGTERM), tmp_path / "new.safetensors"
    assert main(["export", str(checkpoint), str(new)]) == 143
    assert capsys.readouterr().err.splitlines()[-1:] == [
        f"error: export stopped by SIGTERM: {new} was not written (a model file is never half-written); run it again"
    ]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model.safetensors", "out.safetensors"]


def test_an_export_stopped_beside_another_to_the_same_file_leaves_the_others_part(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """helper-208: both exports wrote the part to ``.OUT.tmp``, so the stopped one's cleanup removed the part the
    other was writing (whose rename then failed, or renamed the stopped one's part into place). Each now writes its
    own, uniquely named; the model file written has the permissions a written file gets (mkstemp makes 0600)."""
    import shutil

    import facekit.checkpoints
    from facekit.cli import INTERRUPTED, main

    checkpoint, out = tmp_path / "model.safetensors", tmp_path / "out.safetensors"
    shutil.copyfile(Path(facekit.__file__).parent / "assets" / "default-model.safetensors", checkpoint)
    others = tmp_path / ".out.safetensors.tmp"  # (the name both wrote before)
    others.write_bytes(b"the other export's part")
    save = facekit.checkpoints.save_tensors

    def stopped_halfway(tensors: Any, path: Path, metadata: Any) -> None:
        path.write_bytes(b"half")
        raise KeyboardInterrupt

    monkeypatch.setattr(facekit.checkpoints, "save_tensors", stopped_halfway)
    assert main(["export", str(checkpoint), str(out)]) == INTERRUPTED
    capsys.readouterr()
    assert others.read_bytes() == b"the other export's part" and not out.exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == [others.name, checkpoint.name]
    monkeypatch.setattr(facekit.checkpoints, "save_tensors", save)
    umask = os.umask(0o027)
    try:
        assert main(["export", str(checkpoint), str(out)]) == 0
    finally:
        os.umask(umask)
    assert others.read_bytes() == b"the other export's part" and stat.S_IMODE(out.stat().st_mode) == 0o640
    assert sorted(p.name for p in tmp_path.iterdir()) == [others.name, checkpoint.name, out.name]


def test_a_permission_error_says_file_or_folder_as_it_is(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """Before: "Permission denied (PATH): check the folder's permissions" even where PATH was a file (a weight
    file or photo the user may not read). A path that cannot be stat'ed is called neither."""
    import errno

    import facekit.batch
    from facekit.cli import main

    photo = tmp_path / "a.jpg"
    photo.write_bytes(b"")
    for path, said in ((photo, "the file's"), (tmp_path, "the folder's"), (tmp_path / "gone", "its")):

        def refused(*args: object, path: Path = path, **kwargs: object) -> None:
            raise PermissionError(errno.EACCES, "Permission denied", str(path))

        monkeypatch.setattr(facekit.batch, "plan_folder", refused)
        assert main(["normalize", str(tmp_path), "-o", str(tmp_path / "out")]) == 1
        err = capsys.readouterr().err
        assert f"Permission denied ({path}): check {said} permissions" in err, err
        assert "Traceback" not in err


def test_a_read_only_disk_is_said_as_such_not_as_permissions(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """Before: an output or run folder on a disk mounted read-only (EROFS) was told "check the folder's
    permissions", which no chmod mends."""
    import errno

    import facekit.batch
    from facekit.cli import main

    out = tmp_path / "out"

    def read_only(*args: object, **kwargs: object) -> None:
        raise OSError(errno.EROFS, "Read-only file system", str(out))

    monkeypatch.setattr(facekit.batch, "plan_folder", read_only)
    assert main(["normalize", str(tmp_path), "-o", str(out)]) == 1
    err = capsys.readouterr().err
    assert f"Read-only file system ({out}): the file system is mounted read-only: choose a folder on a disk" in err
    assert "permissions" not in err and "Traceback" not in err


def test_a_disk_input_output_error_is_one_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """Before: a failing disk's EIO (no hung-up terminal: facekit.errors.sigterm_raises) was a traceback."""
    import errno

    import facekit.batch
    from facekit.cli import main

    def failing(*args: object, **kwargs: object) -> None:
        raise OSError(errno.EIO, "Input/output error")

    monkeypatch.setattr(facekit.batch, "plan_folder", failing)
    assert main(["normalize", str(tmp_path), "-o", str(tmp_path / "out")]) == 1
    err = capsys.readouterr().err
    assert "Input/output error: a disk failed to read or write: check it" in err and "Traceback" not in err


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGHUP], ids=["sigterm", "closing-terminal"])
def test_sigterm_ends_a_command_as_ctrl_c_does(data_root: Path, tmp_path: Path, signum: int) -> None:
    """SIGTERM (timeout, systemd, docker stop, a job scheduler) during `facekit normalize FOLDER`: before, Python's
    default handler ended the process on the spot, without a word (status -15), and in a terminal the progress bar
    left the cursor hidden. Now the command stops as on Ctrl+C: one line, status 143, the cursor shown again, and the
    rows written stay for the rerun to skip.

    SIGHUP, which the shell (and then the kernel) sends the command's process group when its terminal or SSH session
    closes: before, the default handler ended it on the spot (status -1). Now it stops as on SIGTERM, status 129 and
    the line naming SIGHUP (for stderr sent to a log). The terminal, hung up, no longer fails the stop's last writes
    (the bar's: a traceback, exit 1), and the second SIGHUP does not cut the stop short."""
    import sys

    photos = tmp_path / "photos"
    photos.mkdir()
    for photo in sorted((data_root / "london" / "canada").glob("*.jpg"))[:40]:
        (photos / photo.name).write_bytes(photo.read_bytes())
    out = tmp_path / "out"
    command = [sys.executable, "-m", "facekit.cli", "normalize", str(photos), "-o", str(out), "--batch-size", "1"]
    manifest = out / "manifest.jsonl"
    status, said, shown = sigterm_in_a_terminal(
        command,
        lambda: manifest.exists() and len(manifest.read_text().splitlines()) >= 2,
        "normalize",
        hang_up=signum == signal.SIGHUP,
    )
    rows = [line for line in manifest.read_text().splitlines() if line]
    assert (status, said) == (
        128 + signum,
        [
            f"error: normalize stopped by {signal.Signals(signum).name}: {len(rows)} of 40 photos finished, kept in "
            f"{out}; run the same command again to go on with the other {40 - len(rows)}"
        ],
    )
    if signum == signal.SIGTERM:  # (a closed terminal shows nothing)
        assert shown.rfind(b"\x1b[?25h") > shown.rfind(b"\x1b[?25l") >= 0  # the cursor shown again after the bar
    assert len(rows) >= 2 and all(json.loads(row)["status"] == "ok" for row in rows)


def test_a_write_to_a_terminal_that_hung_up_before_its_sighup_came_stops_as_the_sighup_does(tmp_path: Path) -> None:
    """A closing terminal hangs up first; its SIGHUP comes after, once the shell has run. A write in between failed
    with EIO: a traceback, status 1. Now the command stops as on the SIGHUP: its line (for a stderr sent to a log),
    status 129. Here the terminal hangs up before the command starts and no SIGHUP comes at all: `facekit list`'s
    table, its first write, is the one that fails."""
    import subprocess
    import sys

    from tests.helpers import default_stop_signals

    leader, follower = os.openpty()
    os.close(leader)  # the terminal closes: it hangs up
    log = tmp_path / "stderr.log"
    try:
        with log.open("wb") as stderr:
            result = subprocess.run(
                [sys.executable, "-m", "facekit.cli", "list"],
                stdout=follower,
                stderr=stderr,
                start_new_session=True,  # (no controlling terminal: no signal from the hang-up)
                preexec_fn=default_stop_signals,
                timeout=120,
            )
    finally:
        os.close(follower)
    assert (result.returncode, log.read_text().splitlines()) == (
        129,
        ["error: stopped by SIGHUP: what was written stays"],
    )


def test_an_empty_output_folder_is_a_usage_error() -> None:
    """Before: `-o ""` (an unset shell variable) wrote into the current folder and the summary read 'in ;'."""
    for command in (["normalize"], ["adjust"], ["attributes"], ["avatar"], ["explore", "compare"]):
        result = run_cli(*command, "photo.jpg", "-o", "")
        assert result.returncode == 2 and "empty output folder" in result.stderr, (command, result.stderr)


def test_bench_without_a_grid_shows_an_example_that_parses(data_root: Path) -> None:
    """Before: the example in the message ended in '}}}}' (braces doubled in a string that is not an f-string), and
    YAML copied from it did not parse."""
    import yaml

    result = run_cli("bench", "recipes/demo.yaml")
    message = " ".join(result.stderr.split())
    assert result.returncode == 2 and "has no bench.grid" in message, message
    example = message.split("e.g. ", 1)[1].split(" (benchmarks", 1)[0]
    assert yaml.safe_load(example) == {"bench": {"grid": {"train.lr": [0.001, 0.0003]}}}


def test_an_output_folder_under_a_file_is_one_line_before_any_model_loads(data_root: Path, tmp_path: Path) -> None:
    """Before: `-o FILE/sub` was found only when the folder was made, after the model had loaded (a missing
    --checkpoint was said first; explore compare said it could not create its lock), and a stage's output under a
    file was called a file itself ('train.output FILE/sub is a file')."""
    photo = sorted((data_root / "london" / "smiling_front").glob("*.jpg"))[0]
    in_the_way = tmp_path / "a-file"
    in_the_way.write_text("not a folder")
    out = in_the_way / "sub"
    for command in (["normalize"], ["adjust"], ["attributes"], ["avatar"], ["explore", "compare"]):
        result = run_cli(*command, str(photo), "-o", str(out), "--checkpoint", str(tmp_path / "nope"))
        message = " ".join(result.stderr.split())
        assert result.returncode == 1 and "Traceback" not in message, (command, message)
        assert f"-o {out}: {in_the_way} is a file, not a folder" in message, (command, message)
    stage = run_cli("run", "recipes/demo.yaml", "--stage", "train", "--set", f"train.output={out}")
    message = " ".join(stage.stderr.split())
    assert stage.returncode == 1 and f"train.output {out}: {in_the_way} is a file, not a folder" in message, message
    assert in_the_way.read_text() == "not a folder" and sorted(tmp_path.iterdir()) == [in_the_way]


def test_plugins_says_what_the_environment_left_out_and_names_it_does_not_know() -> None:
    """Before: a plugin left out by FACEKIT_DISABLE_PLUGINS was missing from `facekit plugins` without a word, and a
    misspelled name there (or in FACEKIT_PLUGINS) was ignored: the plugin meant to be left out still loaded."""
    left_out = run_cli("plugins", env={"FACEKIT_DISABLE_PLUGINS": "builtin"})
    assert left_out.returncode == 0, left_out.stderr
    assert "skipped: builtin (facekit), left out by FACEKIT_DISABLE_PLUGINS\n" in left_out.stdout
    assert "warning" not in left_out.stderr
    # Which variable left it out (before: "left out by FACEKIT_PLUGINS or FACEKIT_DISABLE_PLUGINS" for every one).
    both = run_cli("plugins", env={"FACEKIT_PLUGINS": "builtin,dlib", "FACEKIT_DISABLE_PLUGINS": "dlib"})
    assert "skipped: opencv (facekit-opencv), left out by FACEKIT_PLUGINS, which does not name it\n" in both.stdout
    assert "skipped: dlib (facekit-dlib), left out by FACEKIT_DISABLE_PLUGINS\n" in both.stdout, both.stdout
    none = run_cli("plugins", env={"FACEKIT_PLUGINS": "", "FACEKIT_DISABLE_PLUGINS": "dlib"})
    said = "skipped: dlib (facekit-dlib), left out by FACEKIT_PLUGINS, which is empty, and by FACEKIT_DISABLE_PLUGINS"
    assert said in none.stdout, none.stdout
    misspelled = run_cli("plugins", env={"FACEKIT_DISABLE_PLUGINS": "builtn"})
    message = " ".join(misspelled.stderr.split())
    assert misspelled.returncode == 0 and "register_warpers" in misspelled.stdout, message
    assert "warning: FACEKIT_DISABLE_PLUGINS names 'builtn', which no installed plugin is called" in message
    assert "did you mean 'builtin'?" in message
    allowed = run_cli("plugins", env={"FACEKIT_PLUGINS": "builtin,nothing-of-that-name"})
    assert "FACEKIT_PLUGINS names 'nothing-of-that-name'" in " ".join(allowed.stderr.split()), allowed.stderr


def test_plugins_names_an_entry_point_declared_in_a_group_facekit_does_not_read(tmp_path: Path) -> None:
    """helper-98: a plugin declared under [project.entry-points."facekit.plugins"] was never loaded and nothing said
    so (Python ignores entry points in groups nobody reads); `facekit plugins` now names it and the group to use."""
    info = tmp_path / "facekit_mywarp-0.1.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: facekit-mywarp\nVersion: 0.1\n")
    groups = "[facekit.plugins]\nmywarp = facekit_mywarp\n\n[FaceKit]\ncased = facekit_mywarp\n\n[facekt]\ntypo = x\n\n"
    groups += "[console_scripts]\nmw = x:y\n\n[facekit_mywarp.storage]\nown = x:z\n\n[facet]\nother = x\n"
    (info / "entry_points.txt").write_text(groups)
    path = os.pathsep.join([str(tmp_path), os.environ.get("PYTHONPATH", "")])
    result = run_cli("plugins", env={"PYTHONPATH": path})
    message = " ".join(result.stderr.split())
    assert result.returncode == 0, message
    assert (
        "warning: facekit-mywarp declares entry point 'mywarp' in group 'facekit.plugins', which facekit does not "
        "read: declare it under [project.entry-points.facekit]"
    ) in message
    assert "entry point 'cased' in group 'FaceKit'" in message  # groups match exactly: never loaded either
    assert "entry point 'typo' in group 'facekt'" in message
    for other in ("'mw'", "'own'", "'other'"):  # other groups, a plugin's own among them, are none of facekit's
        assert other not in message, message
    assert "facekit.plugins" not in run_cli("plugins").stderr


def test_plugins_says_when_an_entry_point_names_a_module_without_hooks(tmp_path: Path) -> None:
    """helper-223: an entry point naming the package (``facekit_mine``) while the hooks live in a module it never
    imports (``facekit_mine.plugin``) loaded a plugin with no hooks: `facekit plugins` listed it with an empty hooks
    cell, `facekit list` had none of its components, and nothing said why."""
    info = tmp_path / "facekit_hookless-0.1.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: facekit-hookless\nVersion: 0.1\n")
    (info / "entry_points.txt").write_text("[facekit]\nhookless = facekit_hookless\n")
    (tmp_path / "facekit_hookless.py").write_text('"""The package; its hooks are in another module."""\n')
    path = os.pathsep.join([str(tmp_path), os.environ.get("PYTHONPATH", "")])
    result = run_cli("plugins", env={"PYTHONPATH": path})
    message = " ".join(result.stderr.split())
    assert result.returncode == 0, message
    assert (
        "warning: plugin 'hookless' (facekit-hookless) implements no facekit hook: its entry point names "
        "facekit_hookless, in which no function is marked @facekit.hookimpl; point the entry point at the module"
    ) in message
    assert "implements no facekit hook" not in run_cli("plugins").stderr


def test_a_command_group_alone_shows_its_commands() -> None:
    """`facekit models` and `facekit explore` without a subcommand list what they have, as `facekit` alone does
    (helper-85: 'Missing command.')."""
    for group, command in (("models", "import"), ("explore", "interpolate")):
        result = run_cli(group)
        assert "Missing command" not in result.stderr and command in result.stdout, result.stdout + result.stderr


def test_python_dash_m_facekit_is_the_command() -> None:
    """`python -m facekit` is the console script, exit codes included (helper-88: a failure exited 0)."""
    import subprocess
    import sys

    def run(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "facekit", *args], capture_output=True, text=True, timeout=300)

    listed = run("list")
    assert listed.returncode == 0 and "facekit components" in listed.stdout, listed.stdout + listed.stderr
    assert run("models", "import", "/nonexistent/weights.dat").returncode == 1


def test_the_command_list_gives_each_command_its_first_sentence_on_one_line() -> None:
    """Before: `facekit --help` listed each command's whole first paragraph with the docstring's own line breaks,
    which rich then wrapped into ragged rows ('Exit 3 when the infer' alone on a line under `run`)."""
    from facekit.cli import first_sentence

    assert (
        first_sentence("Run a recipe's stages.\n    Exit 3 when\n    some failed.\n\nMore.") == "Run a recipe's stages."
    )
    assert first_sentence("Strip a checkpoint, e.g. the default\nmodel. `facekit x` too.") == (
        "Strip a checkpoint, e.g. the default model."
    )
    listed = run_cli("--help", env={"COLUMNS": "200"})
    assert listed.returncode == 0, listed.stderr
    rows = {
        line.split()[1]: line for line in listed.stdout.splitlines() if line.startswith("│ ") and len(line.split()) > 2
    }
    assert "print the run folders written." in rows["run"] and "Exit 3" not in listed.stdout
    models = run_cli("models", "--help", env={"COLUMNS": "200"})  # a group's commands too
    assert "and the models facekit ships (--model NAME)." in models.stdout


def test_the_command_lists_read_in_an_80_column_terminal() -> None:
    """In an 80-column terminal `facekit --help` listed adjust's whole output list in seven lines, avatar's in six,
    serve's in five, and the rows mixed commands ("List loaded plugins", "Normalize ...") with nouns ("White balance
    and exposure of ...", "A textured 3-D avatar ...", "Short trainings ..."). Each row now says what its command
    does in one sentence (an imperative: no leading article) of at most two lines, and its own --help starts with it
    (helper-232)."""
    for group in ((), ("models",), ("explore",)):
        listed = run_cli(*group, "--help", env={"COLUMNS": "80"})
        assert listed.returncode == 0, listed.stderr
        box = [line for line in listed.stdout.split("Commands")[1].splitlines() if line.startswith("│")]
        rows: dict[str, list[str]] = {}
        for line in box:
            cells = line.strip("│ ").split(None, 1)
            if line.startswith("│ ") and not line.startswith("│  "):  # a command's first line
                rows[cells[0]] = [cells[1]]
            elif rows and cells:
                rows[list(rows)[-1]].append(" ".join(cells))
        assert len(rows) >= 2, listed.stdout
        for name, lines in rows.items():
            text = " ".join(lines)
            assert len(lines) <= 2 and text.endswith("."), (group, name, lines)
            assert text.split()[0] not in ("A", "An", "The"), (group, name, text)
            own = run_cli(*group, name, "--help", env={"COLUMNS": "300"})
            assert text in " ".join(own.stdout.split()), (group, name, own.stdout)


def test_check_and_run_warn_of_settings_no_stage_reads() -> None:
    """The no-identity ablation inherits the identity crop's jitter, which nothing reads without an encoder term:
    `check` says so on stderr and stays valid (exit 0); `run` (for the stages it runs), `prepare` (its own) and
    `bench` say it before any work (here, refused at once)."""
    check = run_cli("check", "recipes/ablations/no-identity.yaml")
    assert check.returncode == 0 and "valid" in check.stdout, check.stderr
    assert "warning: train.identity_jitter: not used: no loss term runs the encoder" in check.stderr
    assert "paper.yaml)" in check.stderr and "warning" not in run_cli("check", "recipes/demo.yaml").stderr
    # `run` says those of the stages it runs: training's for --stage train (refused at once here: the paper recipe
    # trains on a GPU), none of them for --stage infer.
    run = run_cli("run", "recipes/ablations/no-identity.yaml", "--stage", "train", "--resume")
    assert run.returncode == 1 and run.stderr.startswith("warning: train.identity_jitter: not used"), run.stderr
    infer = run_cli("run", "recipes/ablations/no-identity.yaml", "--stage", "infer")  # (no infer.inputs: exit 2)
    assert infer.returncode == 2 and "warning" not in infer.stderr, infer.stderr
    # `facekit prepare` runs one stage: its own settings alone (not the inherited jitter).
    prepare = run_cli(
        "prepare",
        "recipes/ablations/no-identity.yaml",
        "--shard",
        "9/2",
        "--set",
        "prepare.keep_all_faces=true",
        "--set",
        "prepare.face=central",
    )
    assert prepare.returncode == 1 and "--shard 9/2" in prepare.stderr, prepare.stderr
    assert prepare.stderr.startswith("warning: prepare.face: not used: prepare.keep_all_faces keeps every face")
    assert "identity_jitter" not in prepare.stderr
    bench = run_cli("bench", "recipes/ablations/no-identity.yaml")  # the recipe's own settings; then no grid: exit 2
    assert bench.returncode == 2 and bench.stderr.startswith("warning: train.identity_jitter: not used"), bench.stderr


def test_bench_does_not_warn_of_a_setting_a_grid_cell_reads(tmp_path: Path) -> None:
    """A grid that turns the identity loss on for a cell reads the inherited jitter there: not said as unused (the
    grid's prepare.output then refuses the bench before any training)."""
    recipe = tmp_path / "grid.yaml"
    ablation = Path("recipes/ablations/no-identity.yaml").resolve()
    recipe.write_text(
        f"extends: {ablation}\nbench: {{grid: {{train.loss.identity: [0.0, 1.0], prepare.output: [runs/data/x]}}}}\n"
    )
    bench = run_cli("bench", str(recipe))
    assert bench.returncode == 1 and "prepare.output" in bench.stderr and "warning" not in bench.stderr, bench.stderr


def test_no_help_text_shows_docstring_markup() -> None:
    """Before: `facekit models --help` and `models bundle --help` printed "a file its ``weights`` param names": the
    rich help shows a docstring as written, so reST's double backticks and roles reach the user."""
    import typer

    from facekit import cli

    cli._register_plugin_commands()

    def walk(command: object, path: str) -> list[tuple[str, object]]:
        found = [(path, command)]
        for name, sub in getattr(command, "commands", {}).items():
            found += walk(sub, f"{path} {name}")
        return found

    commands = walk(typer.main.get_command(cli.app), "facekit")
    assert len(commands) > 15  # every command, the plugins' and the groups' included
    for path, command in commands:
        texts = [getattr(command, "help", None) or ""]
        texts += [getattr(param, "help", None) or "" for param in getattr(command, "params", [])]
        for text in texts:
            assert "``" not in text and ":func:" not in text and ":meth:" not in text, (path, text)


def test_every_option_s_help_has_one_style() -> None:
    """Every option's and argument's help, in every command (the plugins' and the groups' included), is a few words
    in lower case without a full stop at its end or a second sentence inside, as most were: `--set`'s read "Override
    a recipe value: ... (repeatable).", --version's and Typer's own --help "Show the version and exit.", serve's
    --allow-host "...; repeatable. Requests naming ..." (helper-232). A name or an acronym may start one (LFW)."""
    import typer

    from facekit import cli

    cli._register_plugin_commands()

    root = typer.main.get_command(cli.app)
    ctx = root.make_context("facekit", [], resilient_parsing=True)

    def walk(command: Any, path: str) -> list[tuple[str, Any]]:
        found = [(path, command)]
        for name in getattr(command, "commands", {}):  # (as the command line finds each: its help option set)
            found += walk(command.get_command(ctx, name), f"{path} {name}")
        return found

    commands = walk(root, "facekit")
    assert len(commands) > 15  # every command, the plugins' and the groups' included
    checked = 0
    for path, command in commands:
        for param in [*command.params, command.get_help_option(ctx)]:
            text = param.help or ""
            where = (path, param.name, text)
            assert text, where  # every option and argument says what it is
            assert not re.match(r"[A-Z][a-z]", text), where  # lower case (not "Override")
            assert not text.endswith("."), where
            assert not re.search(r"[.;] +[A-Z][a-z]", text), where  # one sentence (not "repeatable. Requests")
            checked += 1
    assert checked > 100


def test_a_bad_pixel_limit_is_said_before_the_model_loads(tmp_path: Path) -> None:
    """helper-101: FACEKIT_MAX_MEGAPIXELS=abc was said from under `facekit normalize`'s progress bar, after the model
    loaded, with an empty line on stdout before it; now the folder plan checks it, first."""
    photo = tmp_path / "a.jpg"
    photo.write_bytes(b"not read")
    result = run_cli("normalize", str(photo), "-o", str(tmp_path / "out"), env={"FACEKIT_MAX_MEGAPIXELS": "abc"})
    assert result.returncode == 1 and result.stdout == "", (result.stdout, result.stderr)
    assert result.stderr.strip() == "error: FACEKIT_MAX_MEGAPIXELS must be a number of megapixels, got 'abc'"


def test_normalize_into_a_log_says_its_progress_while_it_runs(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """`facekit normalize ... > log 2>&1`: before, its transient bar wrote nothing at all there (not even at the
    end); now plain lines on stderr as the photos are done, and stdout holds the table alone."""
    from types import SimpleNamespace

    import facekit.batch
    import facekit.normalize
    from facekit.cli import main

    for variable in ("FORCE_COLOR", "TTY_COMPATIBLE"):  # (either makes rich take captured output for a terminal)
        monkeypatch.delenv(variable, raising=False)
    monkeypatch.setenv("FACEKIT_PROGRESS_INTERVAL", "3600")  # the tenths alone, whatever the machine's speed
    said_by_row: list[str] = []

    def normalized(normalizer: object, plan: object, model: object, overwrite: bool, on_row: Any, **_: Any) -> Any:
        for _ in range(20):
            on_row(SimpleNamespace(status="ok"))
            said_by_row.append(capsys.readouterr().err)
        return facekit.batch.Summary()

    monkeypatch.setattr(facekit.batch, "plan_folder", lambda *args, **kwargs: SimpleNamespace(planned=[0] * 20))
    monkeypatch.setattr(facekit.normalize, "resolve_model", lambda *args: tmp_path / "model.safetensors")
    monkeypatch.setattr(facekit.normalize.Normalizer, "from_checkpoint", lambda *args, **kwargs: None)
    monkeypatch.setattr(facekit.batch, "normalize_planned", normalized)
    assert main(["normalize", str(tmp_path / "photos"), "-o", str(tmp_path / "out")]) == 0
    assert said_by_row[1].startswith("normalizing: 2/20 (10 %), ") and "photo" in said_by_row[1]
    assert said_by_row[2] == ""  # nothing more before the next tenth
    assert said_by_row[-1].startswith("normalizing: 20/20 (100 %) done in ")
    assert "normalizing" not in capsys.readouterr().out


def test_normalize_s_progress_moves_as_each_photo_is_detected_and_a_stop_counts_the_photos_written(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """helper-196: on eight 4000 px photos the bar sat at 0 for 26 s (the detection of a batch's 16 photos, 90 % of
    the time), then all its lines came at once; now each photo's detection moves it (most of a photo), its row the
    rest, and a stop says the photos whose rows were written, not a part of one."""
    from types import SimpleNamespace

    import facekit.batch
    import facekit.normalize
    from facekit.cli import main

    for variable in ("FORCE_COLOR", "TTY_COMPATIBLE"):
        monkeypatch.delenv(variable, raising=False)
    monkeypatch.setenv("FACEKIT_PROGRESS_INTERVAL", "3600")  # the tenths alone
    said: list[str] = []

    def normalized(
        normalizer: object, plan: object, model: object, overwrite: bool, on_row: Any, on_detected: Any
    ) -> Any:
        for _ in range(3):  # a batch's detections, then its rows, then the next batch's detections and a Ctrl+C
            on_detected()
            said.append(capsys.readouterr().err)
        for _ in range(3):
            on_row(SimpleNamespace(status="ok"))  # (a row with outputs)
        said.append(capsys.readouterr().err)
        on_detected()
        raise KeyboardInterrupt

    monkeypatch.setattr(facekit.batch, "plan_folder", lambda *args, **kwargs: SimpleNamespace(planned=[0] * 20))
    monkeypatch.setattr(facekit.normalize, "resolve_model", lambda *args: tmp_path / "model.safetensors")
    monkeypatch.setattr(facekit.normalize.Normalizer, "from_checkpoint", lambda *args, **kwargs: None)
    monkeypatch.setattr(facekit.batch, "normalize_planned", normalized)
    assert main(["normalize", str(tmp_path / "photos"), "-o", str(tmp_path / "out")]) == 130
    assert said[:2] == ["", ""]  # (0.9 and 1.8 photos: not yet a tenth)
    # the batch's rows are still to come: the percentage moves, the count is of photos written (b64ec6d: not 2.7)
    assert said[2].startswith("normalizing: 0/20 (13 %), ")
    assert "normalizing: stopped at 3/20 (15 %) after " in capsys.readouterr().err  # not 3.9: a part of one


def test_a_refused_option_value_is_said_in_facekit_s_words() -> None:
    """Before: Typer parses values with pydantic, whose words filled the box: "Value error, 'middle' is not one of
    'largest', 'central'.", "Input should be less than or equal to 2", "Input should be a valid integer, unable to
    parse string as an integer". Now as a recipe's refused value is said, with the value as typed; a plugin's command
    (avatar, serve) and a nested group's (explore) say theirs the same way."""
    cases = {
        ("normalize", "x.jpg", "--face", "middle"): "'--face': must be 'largest' or 'central' (got 'middle')",
        ("normalize", "x.jpg", "--face", "centrl"): "(got 'centrl'); did you mean 'central'?",
        ("normalize", "x.jpg", "--detail", "3"): "'--detail': must be from 0 to 2 (got 3)",
        ("normalize", "x.jpg", "--batch-size", "0"): "'--batch-size': must be at least 1 (got 0)",
        ("normalize", "x.jpg", "--batch-size", "abc"): "'--batch-size': must be a whole number (got 'abc')",
        ("normalize", "x.jpg", "--detail", "a"): "'--detail': must be a number (got 'a')",
        ("avatar", "x.jpg", "--texture-size", "9"): "'--texture-size': must be from 64 to 4096 (got 9)",
        ("serve", "--max-upload-mb", "0"): "'--max-upload-mb': must be at least 0.01 (got 0)",
        ("explore", "interpolate", "a", "b", "--steps", "1"): "'--steps' / '-n': must be from 2 to 256 (got 1)",
    }
    for args, said in cases.items():
        result = run_cli(*args, env={"COLUMNS": "300"})
        assert result.returncode == 2 and said in result.stderr, (args, result.stderr)
        assert "Value error" not in result.stderr and "Input should" not in result.stderr, (args, result.stderr)
    assert "an empty output folder" in run_cli("normalize", "x.jpg", "-o", "", env={"COLUMNS": "300"}).stderr
