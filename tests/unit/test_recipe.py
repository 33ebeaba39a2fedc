from __future__ import annotations

import re
from collections import Counter
from pathlib import Path

import pytest
import yaml

from facekit.errors import FacekitError, RecipeError, StageNotBuiltError
from facekit.pipeline import RunOptions, run_plan, stages_to_run
from facekit.recipe import InferSection, Recipe, apply_overrides, load_recipe, recipe_files, resolve


def problems_of(raw: dict, overrides: tuple[str, ...] = ()) -> list[str]:
    with pytest.raises(RecipeError) as info:
        resolve(raw, overrides)
    return [str(p) for p in info.value.problems]


def test_empty_recipe_gets_every_default() -> None:
    plan = resolve({})
    assert plan.recipe == Recipe()
    assert plan.components["warper"].spec.name == "rbf-linear"


def test_all_four_kinds_of_problem_reported_together() -> None:
    raw = {
        "components": {
            "warper": {"name": "rbf-linear", "params": {"boundary_points": "many"}},
            "encoder": {"name": "facenett"},
        },
        "trian": {"steps": 3},
    }
    problems = problems_of(raw, ("train.stpes=4",))
    assert len(problems) == 4, problems
    joined = "\n".join(problems)
    assert "trian: extra field not permitted" in joined
    assert "components.encoder.name: unknown encoder 'facenett'" in joined
    assert "components.warper.params.boundary_points: must be a whole number (got 'many')" in joined
    assert "--set train.stpes: unknown path" in joined


def test_a_refused_value_is_named_with_the_value_and_the_override_as_given() -> None:
    """helper-144: `--set train.steps=abc` said "train.steps: Input should be a valid integer, unable to parse string
    as an integer", naming neither the value nor which --set gave it (the same line as the recipe file's own)."""
    (problem,) = problems_of({}, ("train.steps=abc",))
    assert problem == "--set train.steps=abc: train.steps must be a whole number (got 'abc')"
    given = ("train.lr=-1", "components.warper={name: tps, params: {regularization: x}}", "train.device=tpu")
    assert problems_of({}, given) == [
        "--set train.lr=-1: train.lr must be greater than 0 (got -1)",
        "--set train.device=tpu: train.device must be 'auto', 'cpu' or 'cuda' (got 'tpu')",
        "--set components.warper={name: tps, params: {regularization: x}}: components.warper.params.regularization "
        "must be a number (got 'x')",
    ]
    # The recipe file's own values by their path, with the value; a section where a value belongs is not echoed.
    problems = problems_of({"train": {"steps": 2.5, "precision": "fp8", "batch_size": {"a": 1}}})
    assert sorted(problems) == [
        "train.batch_size: must be a whole number",
        "train.precision: must be 'fp32', 'bf16' or 'fp16' (got 'fp8')",
        "train.steps: must be a whole number (got 2.5)",
    ]


def test_every_kind_of_refused_value_is_said_in_our_words() -> None:
    """helper-147: `--set train.lr=true` said "train: lr: expected a number, got true" (the section's, without the
    --set), `--set infer.output=` "infer.output: Input should be a valid string (got null)"; lists, mappings, a
    device and a list's length kept pydantic's words too ("Field required" of background_rgb.2)."""
    said = {
        "train.lr=true": "train.lr must be a number (got true)",
        "train.steps=false": "train.steps must be a whole number (got false)",
        "infer.output=": "infer.output must be text, not empty",
        "infer.inputs=photo.jpg": "infer.inputs must be a list, written [A, B] (got 'photo.jpg')",
        "infer.device=gpu": "infer.device must be a device: cpu, cuda, cuda:N, mps, xpu or auto (got 'gpu')",
        "train.background_rgb=[1, 2]": "train.background_rgb must have 3 items (got 2)",
        "train.background_rgb=[1, 2, 3, 4]": "train.background_rgb must have at most 3 items (got 4)",
        "train.background_rgb=[true, 2, 3]": "train.background_rgb.0 must be a whole number (got true)",
        "train.loss=5": "train.loss must be a mapping, written {KEY: VALUE} (got 5)",
        "data.train=[{people: x.txt}]": "data.train.0.source must be given",
        "components.warper.params.regularization=true": "components.warper.params.regularization must be a number "
        "(got true)",
        # helper-150: these two kept pydantic's words ("Input should be a multiple of 32", "text matching
        # ^[0-9a-f]{64}$"), though a shipped plugin's params raise them.
        "components.detector={name: scrfd, params: {input_size: 100}}": "components.detector.params.input_size must be "
        "a multiple of 32 (got 100)",
        "components.judge={name: facenet, params: {sha256: abc}}": "components.judge.params.sha256 must be a SHA-256 "
        "checksum: 64 hexadecimal digits, 0-9 and a-f (got 'abc')",
    }
    for override, words in said.items():
        assert problems_of({}, (override,)) == [f"--set {override}: {words}"]
    # The recipe file's own values: the same words, by their path.
    assert problems_of({"train": {"lr": True}, "infer": {"output": None}}) == [
        "train.lr: must be a number (got true)",
        "infer.output: must be text, not empty",
    ]


def test_misspelled_param_key_has_its_full_path_and_the_nearest_field() -> None:
    """The nearest field since helper-61 (section keys had it, a component's params not)."""
    problems = problems_of({"components": {"warper": {"name": "tps", "params": {"regularisation": 1}}}})
    assert problems == [
        "components.warper.params.regularisation: extra field not permitted; did you mean 'regularization'?"
    ]
    far = problems_of({"components": {"warper": {"name": "tps", "params": {"smoothness": 1}}}})
    assert far == ["components.warper.params.smoothness: extra field not permitted"]


def test_overrides_parse_yaml_values_and_reach_params() -> None:
    plan = resolve({}, ("train.steps=12", "components.warper.params.boundary_points=0", "train.loss.identity=0.5"))
    assert plan.recipe.train.steps == 12
    assert plan.components["warper"].params.boundary_points == 0  # type: ignore[attr-defined]
    assert plan.recipe.train.loss.identity == 0.5
    # Numbers in exponent form, as YAML 1.2 and JSON read them (PyYAML read 1e3 as text: "not a valid integer").
    plan = resolve({}, ("train.steps=1e3", "train.lr=5e-4", "train.output=2e3"))
    assert (plan.recipe.train.steps, plan.recipe.train.lr, str(plan.recipe.train.output)) == (1000, 5e-4, "2e3")
    assert problems_of({}, ("train.steps=1.5e0",)) == [
        "--set train.steps=1.5e0: train.steps must be a whole number (got 1.5e0)"  # as typed
    ]


def test_a_recipe_file_reads_numbers_in_exponent_form(tmp_path: Path) -> None:
    (tmp_path / "r.yaml").write_text("train:\n  steps: 2E3\n  lr: 1.5e-4\n  batch_size: .5e2\n")
    train = load_recipe(tmp_path / "r.yaml").recipe.train
    assert (train.steps, train.lr, train.batch_size) == (2000, 1.5e-4, 50)
    # What YAML 1.1 already reads stays as it reads it: .5 a number, .inf infinity, .x text.
    (tmp_path / "r.yaml").write_text("train:\n  lr: .5\n  output: .x\n")
    train = load_recipe(tmp_path / "r.yaml").recipe.train
    assert (train.lr, str(train.output)) == (0.5, ".x")
    # Text that only looks like it (an underscore where the digit is) stays text (helper-94: float() raised on it).
    (tmp_path / "r.yaml").write_text("train:\n  output: ._e5\n")
    assert str(load_recipe(tmp_path / "r.yaml").recipe.train.output) == "._e5"


def test_overriding_a_components_name_drops_the_other_components_params() -> None:
    """As ``extends:`` does: the params belonged to the other component (before: --set components.warper.name=
    piecewise-affine kept rbf-linear's regularization and was refused as an extra field). Params set beside the
    name, before or after it on the command line, stay."""
    plan = resolve({}, ("components.warper.name=piecewise-affine",))
    assert plan.components["warper"].spec.name == "piecewise-affine"
    for overrides in (
        ("components.warper.name=tps", "components.warper.params.regularization=0.2"),
        ("components.warper.params.regularization=0.2", "components.warper.name=tps"),
    ):
        plan = resolve({}, overrides)
        assert plan.components["warper"].params.regularization == 0.2  # type: ignore[attr-defined]
    # Overrides apply in the order given (helper-55: moving names first let an earlier whole-component override win).
    last = resolve({}, ("components.warper={name: tps, params: {regularization: 0.2}}", "components.warper.name=cubic"))
    assert last.components["warper"].spec.name == "cubic"
    assert last.components["warper"].params.regularization == 0  # type: ignore[attr-defined]  # tps's: dropped
    # The whole params mapping given before the name, and list items spelled with leading zeros (helper-56).
    given = resolve({}, ("components.warper.params={regularization: 0.2}", "components.warper.name=tps"))
    assert given.components["warper"].params.regularization == 0.2  # type: ignore[attr-defined]
    raw: dict = {"components": {"apps": [{"name": "adjust", "params": {"strength": 0.5}}]}}
    assert not apply_overrides(raw, ["components.apps.00.params.fuse=none", "components.apps.0.name=xphoto"])
    assert raw["components"]["apps"][0] == {"name": "xphoto", "params": {"fuse": "none"}}
    same = resolve({}, ("components.warper.name=rbf-linear",))  # the same name: its params stay

    assert same.components["warper"].params.regularization == 0.01  # type: ignore[attr-defined]


def test_override_inside_a_list_item() -> None:
    raw = {"data": {"root": "/nonexistent", "train": [{"source": "folder", "path": "a"}]}}
    problems = apply_overrides(raw, ["data.train.0.path=b", "data.train.3.path=c", "data.train.0.nope=1", "oops"])
    assert raw["data"]["train"][0]["path"] == "b"
    assert [p.path for p in problems] == ["--set data.train.3.path", "--set data.train.0.nope", "--set oops"]


def test_override_cannot_descend_into_a_value() -> None:
    problems = apply_overrides({}, ["train.steps.x=1"])
    assert "is a value, not a section" in problems[0].message


def test_cross_field_rules() -> None:
    problems = problems_of(
        {"prepare": {"image_size": 64, "interocular_px": 40}, "train": {"precision": "fp16", "device": "cpu"}}
    )
    assert any(p.startswith("prepare.interocular_px:") for p in problems)
    assert any(p.startswith("train.precision: fp16 needs a GPU") for p in problems)


def test_data_source_needs_its_field() -> None:
    problems = problems_of({"data": {"train": [{"source": "lfw"}]}})
    assert problems == ["data.train.0.people: must be given for source 'lfw'"]


def test_test_people_never_train(data_root: Path) -> None:
    raw = {
        "data": {
            "root": str(data_root),
            "train": [{"source": "lfw", "people": "peopleDevTest.txt"}],
            "test": [{"source": "lfw", "people": "peopleDevTest.txt"}],
        }
    }
    # Said at the source that trains on them, with the test sources they are in and what to change (helper-159:
    # before, "data.train: 1711 test people are also training people (e.g. ...): never train on test people", at
    # the section, without the source, the test set or what to do, and never named by a --set of data.test).
    devtest = "of LFW's peopleDevTest.txt (what facekit eval and bench score on)"
    (problem,) = problems_of(raw)
    assert problem.startswith("data.train.0.people: holds 1711 test people (e.g. AJ_Lamas, "), problem
    assert problem.endswith(
        f"of data.test.0.people (peopleDevTest.txt) and {devtest}: never train on test people; train on others "
        "(LFW's peopleDevTrain.txt shares none with peopleDevTest.txt)"
    ), problem
    raw["data"]["train"] = [{"source": "lfw", "people": "peopleDevTrain.txt"}]
    assert resolve(raw).data_root == data_root
    # A test set of training people: either setting may change, and a --set of either names the problem.
    (problem,) = problems_of(raw, ("data.test.0.people=peopleDevTrain.txt",))
    assert problem.startswith(
        "--set data.test.0.people=peopleDevTrain.txt: data.train.0.people holds 4038 test people (e.g. AJ_Cook, "
    ), problem
    assert problem.endswith(
        "of data.test.0.people (peopleDevTrain.txt): never train on test people; take them out of it or of "
        "data.test.0.people"
    ), problem
    # Without data.test: facekit eval and bench score on peopleDevTest anyway, so training on them is refused too.
    everyone = {"data": {"root": str(data_root), "train": [{"source": "lfw", "people": "people.txt"}]}}
    (problem,) = problems_of(everyone)
    assert problem.startswith("data.train.0.people: holds 1711 test people") and problem.endswith(
        f"{devtest}: never train on test people; train on others (LFW's peopleDevTrain.txt shares none with "
        "peopleDevTest.txt)"
    ), problem


def test_a_people_file_of_ones_own_loses_no_line(data_root: Path, tmp_path: Path) -> None:
    """Before: the first line of every people file was skipped as LFW's count line, so a list of one's own
    (``name<TAB>count`` from its first line) trained without its first person and without a word, and a data.test
    list missed its first person in the check that no test person trains."""
    from facekit.data.sources import lfw_photos

    mine = tmp_path / "mine.txt"
    mine.write_text("Aaron_Peirsol\t4\nAbdullah\t4\n", encoding="utf-8")
    people = {photo.identity for photo in lfw_photos(data_root, str(mine))}
    assert people == {"lfw/Aaron_Peirsol", "lfw/Abdullah"}
    # LFW's own files keep their count line out (peopleDevTrain.txt's first line is 4038, its people 4038).
    assert len({photo.identity for photo in lfw_photos(data_root, "peopleDevTrain.txt")}) == 4038
    raw = {
        "data": {
            "root": str(data_root),
            "train": [{"source": "lfw", "people": "peopleDevTrain.txt"}],
            "test": [{"source": "lfw", "people": str(mine)}],
        }
    }
    (problem,) = problems_of(raw)
    assert problem.startswith("data.train.0.people: holds 2 test people (Aaron_Peirsol, Abdullah)"), problem


def test_a_people_file_with_a_header_line_still_reads(tmp_path: Path) -> None:
    """A list of one's own headed ``name<TAB>count`` read its people while every first line was skipped unread; once
    every line was read (4f35379) the header was a ValueError's traceback (int('count')). A first line whose count
    is not a number is a header again; one further down is a one-line error naming the file and line."""
    from facekit.data.sources import read_people_file

    mine = tmp_path / "mine.txt"
    mine.write_text("name\tcount\nAaron_Peirsol\t4\nAbdullah\t4\n", encoding="utf-8")
    assert read_people_file(mine) == {"Aaron_Peirsol": 4, "Abdullah": 4}
    mine.write_text("Aaron_Peirsol\t4\nAbdullah\tfour\n", encoding="utf-8")
    with pytest.raises(FacekitError) as info:
        read_people_file(mine)
    assert str(info.value) == f"{mine}, line 2: 'four' is not a number of photos: each line is name<TAB>count"


def test_the_held_out_london_smiling_photos_never_train(data_root: Path) -> None:
    """Before: the test-people check compared LFW names only, so a recipe could train on the London smiling photos
    that benchmarks/adjust.py and quality.py --set london-smiling report on as never trained on."""
    london = [{"source": "london", "subset": "neutral_front"}, {"source": "london", "subset": "smiling_front"}]
    problems = problems_of({"data": {"root": str(data_root), "train": london}})
    assert len(problems) == 1 and problems[0].startswith("data.train.1.subset: the London smiling photos are held out")
    assert resolve({"data": {"root": str(data_root), "train": london[:1], "test": london[1:]}}).data_root == data_root


def test_missing_data_is_reported(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    problems = problems_of(
        {"data": {"root": str(tmp_path / "none"), "train": [{"source": "london", "subset": "canada"}]}}
    )
    assert problems[0].startswith("data.root: data folder not found") and "that is" not in problems[0]
    # A relative root (the default ../shared/data) is read from the folder the command runs in: said, with where
    # that led (helper-97: run from elsewhere, "not found: ../shared/data" left the user to work it out).
    monkeypatch.chdir(tmp_path)
    relative = problems_of({"data": {"root": "../data", "train": [{"source": "london", "subset": "canada"}]}})
    assert f"not found: ../data (that is {tmp_path}/../data, from the folder the command runs in)" in relative[0]


def test_a_data_path_too_long_for_the_file_system_is_not_found_not_a_traceback(tmp_path: Path) -> None:
    """helper-150: pathlib's is_dir and is_file raise ENAMETOOLONG for a name over 255 bytes (False for any other
    missing path), so `facekit check --set data.root=` a long value ended in an OSError traceback."""
    long = "x" * 300
    london = [{"source": "london", "subset": "canada"}]
    (root,) = problems_of({"data": {"root": str(tmp_path / long), "train": london}})
    assert root.startswith(f"data.root: data folder not found: {tmp_path / long}")
    sources = [{"source": "lfw", "people": long}, {"source": "folder", "path": long}]
    assert problems_of({"data": {"root": str(tmp_path), "train": sources}}) == [
        f"data.train.0.people: file not found: {tmp_path / 'lfw' / long}",
        f"data.train.1.path: folder not found: {tmp_path / long} (a relative path is under data.root, {tmp_path})",
    ]


def test_load_recipe_errors(tmp_path: Path) -> None:
    (tmp_path / "list.yaml").write_text("- a\n- b\n")
    with pytest.raises(RecipeError, match="top level must be a mapping"):
        load_recipe(tmp_path / "list.yaml")
    (tmp_path / "bad.yaml").write_text("train: {steps: [\n")
    with pytest.raises(RecipeError, match="not valid YAML"):
        load_recipe(tmp_path / "bad.yaml")
    for empty in ("", "# only a comment\n", "{}\n"):  # all defaults would train on no data: refused, not run
        (tmp_path / "empty.yaml").write_text(empty)
        with pytest.raises(RecipeError, match=r"empty\.yaml: 1 problem: no sections"):
            load_recipe(tmp_path / "empty.yaml")


def test_unbuilt_stage_refuses_before_writing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from facekit import pipeline

    monkeypatch.setitem(pipeline.STAGE_RUNNERS, "evaluate", None)
    plan = resolve({"evaluate": {"output": str(tmp_path / "out")}})
    with pytest.raises(StageNotBuiltError, match="not built yet"):
        run_plan(plan, ["evaluate"])
    assert not (tmp_path / "out").exists()
    with pytest.raises(FacekitError, match="unknown stage 'trian'; did you mean 'train'") as typo:
        stages_to_run(["trian"])
    assert typo.value.exit_code == 2  # a usage error, as a recipe's
    with pytest.raises(FacekitError, match="unknown stage 'x'; stages: prepare, augment"):
        stages_to_run(["x"])
    (problem,) = problems_of({}, ("train.stpes=3",))
    assert problem == "--set train.stpes: unknown path: 'stpes' is not a key of train (did you mean 'steps'?)"
    assert stages_to_run(["infer", "prepare"]) == ["prepare", "infer"]


def test_resume_without_a_training_is_refused_before_anything_runs(
    tmp_path: Path, data_root: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """Before: --resume where no training runs was ignored without a word (helper-85); then refused with exit 1, the
    code of a problem with the machine or the data, where it is a command line whose options do not go together: exit
    2, a usage error's (README), one line."""
    from facekit.cli import main

    plan = resolve({"train": {"output": str(tmp_path / "t")}, "evaluate": {"output": str(tmp_path / "out")}})
    with pytest.raises(FacekitError, match=r"--resume continues a training.*does not train \(stages: evaluate\)") as no:
        run_plan(plan, ["evaluate"], RunOptions(resume=True))
    assert no.value.exit_code == 2
    assert not (tmp_path / "out").exists()
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("FACEKIT_DATA", str(data_root))
    assert main(["run", "demo", "--stage", "infer", "--resume"]) == 2
    assert capsys.readouterr().err == (
        "error: --resume continues a training, but this run of demo does not train (stages: infer): run without "
        "--resume, or add --stage train\n"
    )


def test_plan_round_trips_through_yaml() -> None:
    plan = resolve({"train": {"steps": 7}})
    again = resolve(yaml.safe_load(yaml.safe_dump(plan.to_dict())))
    assert again.recipe == plan.recipe


def test_extends_merges_mappings_and_replaces_the_rest(tmp_path: Path) -> None:
    (tmp_path / "base").mkdir()
    (tmp_path / "base" / "paper.yaml").write_text(
        yaml.safe_dump(
            {
                "description": "base",
                "components": {"decoder": {"name": "paper", "params": {"image_size": 64, "grid": 4, "norm": "batch"}}},
                "train": {"steps": 7, "lr": 0.01, "loss": {"landmark": 2.0, "identity": 1.0}},
                "data": {"train": [{"source": "london", "subset": "neutral_front"}]},
                "prepare": {"image_size": 64, "interocular_px": 16},
            }
        )
    )
    ablation = tmp_path / "ablation.yaml"
    ablation.write_text(
        yaml.safe_dump(
            {
                "extends": "base/paper.yaml",  # relative to the file, not the working directory
                "train": {"loss": {"identity": 0.0}},
                "data": {"train": [{"source": "london", "subset": "canada"}]},
            }
        )
    )
    recipe = load_recipe(ablation).recipe
    assert recipe.train.loss.identity == 0.0 and recipe.train.loss.landmark == 2.0 and recipe.train.steps == 7
    assert [s.subset for s in recipe.data.train] == ["canada"]  # lists replace
    assert load_recipe(ablation, ["train.steps=9"]).recipe.train.steps == 9

    other = tmp_path / "plain.yaml"  # another component name: the base's params do not leak into it
    other.write_text(
        yaml.safe_dump(
            {
                "extends": "base/paper.yaml",
                "components": {"decoder": {"name": "plain-cnn", "params": {"image_size": 64}}},
            }
        )
    )
    plan = load_recipe(other)
    assert plan.components["decoder"].spec.name == "plain-cnn" and plan.components["decoder"].params.grid == 7


def test_a_problem_set_in_a_base_recipe_names_that_file(tmp_path: Path) -> None:
    """helper-74: a stray key in the base was reported under the child's name only ("j.yaml: foo: extra field")."""
    from facekit.errors import RecipeError
    from facekit.recipe import load_recipe

    (tmp_path / "f.yaml").write_text("foo: 1\ntrain: {steps: 3, lr: -1}\n")
    (tmp_path / "j.yaml").write_text("extends: f.yaml\ntrain: {batch_size: 0}\n")
    with pytest.raises(RecipeError) as caught:
        load_recipe(tmp_path / "j.yaml")
    said = {problem.path: problem.message for problem in caught.value.problems}
    assert said["foo"].endswith(f"(set in {tmp_path / 'f.yaml'})")
    assert said["train.lr"].endswith(f"(set in {tmp_path / 'f.yaml'})")
    assert "set in" not in said["train.batch_size"]  # the recipe's own
    with pytest.raises(RecipeError) as caught:  # what the command line sets is the command line's
        load_recipe(tmp_path / "j.yaml", ["train.lr=-2"])
    said = {problem.path: problem.message for problem in caught.value.problems}
    assert said["--set train.lr=-2"] == "train.lr must be greater than 0 (got -2)"  # no "set in"


def test_a_bench_cells_refused_value_is_named_by_its_grid_file_and_cell(tmp_path: Path) -> None:
    """helper-147: a grid value the recipe refuses was named `--set train.lr=true`, an override the user never typed,
    for a value written in the grid file; now by the file that sets bench.grid (a base's too) and the cell."""
    from facekit.bench import cells
    from facekit.errors import RecipeError
    from facekit.recipe import load_recipe

    (tmp_path / "grid.yaml").write_text("bench:\n  grid: {train.lr: [0.001, true], train.batch_size: [4]}\n")
    (tmp_path / "child.yaml").write_text("extends: grid.yaml\ntrain: {steps: 2}\n")
    for recipe in ("grid.yaml", "child.yaml"):
        plan = load_recipe(tmp_path / recipe)
        refused = cells(plan)[1]
        with pytest.raises(RecipeError) as caught:
            load_recipe(tmp_path / recipe, ["train.steps=3", *refused], grid_cell=refused)
        assert [str(p) for p in caught.value.problems] == [
            f"bench.grid.train.lr.1 of {tmp_path / 'grid.yaml'} (cell {{train.lr: true, train.batch_size: 4}}): "
            "train.lr must be a number (got true)"
        ]
    # A grid given on the command line is named by that --set; the user's own --set by itself, as before.
    grid = "bench.grid={train.lr: [-1]}"
    with pytest.raises(RecipeError) as caught:
        load_recipe(tmp_path / "child.yaml", [grid, "train.lr=-1"], grid_cell=["train.lr=-1"])
    assert str(caught.value.problems[0]).startswith(f"bench.grid.train.lr.0 of --set {grid} (cell {{train.lr: -1}}):")
    with pytest.raises(RecipeError, match=r"1 problem: --set train\.steps=0: train\.steps must be at least 1"):
        load_recipe(tmp_path / "child.yaml", ["train.steps=0", *cells(plan)[0]], grid_cell=cells(plan)[0])


def test_a_bench_cells_refused_value_names_the_file_its_grid_key_is_written_in(tmp_path: Path) -> None:
    """helper-150: a grid merged from two files (a base's train.lr, its child's train.batch_size) named the child, the
    file that set bench.grid last, for every value: a refused `train.lr: true` written in the base was looked for in
    the child. Each value names the file that writes its key's values."""
    from facekit.bench import cells
    from facekit.errors import RecipeError
    from facekit.recipe import load_recipe

    (tmp_path / "base.yaml").write_text("bench:\n  grid: {train.lr: [true]}\n")
    (tmp_path / "child.yaml").write_text("extends: base.yaml\nbench:\n  grid: {train.batch_size: [0]}\n")
    (refused,) = cells(load_recipe(tmp_path / "child.yaml", ["train.steps=2"]))
    with pytest.raises(RecipeError) as caught:
        load_recipe(tmp_path / "child.yaml", refused, grid_cell=refused)
    cell = "(cell {train.lr: true, train.batch_size: 0})"
    assert [str(p) for p in caught.value.problems] == [
        f"bench.grid.train.batch_size.0 of {tmp_path / 'child.yaml'} {cell}: train.batch_size must be at least 1 "
        "(got 0)",
        f"bench.grid.train.lr.0 of {tmp_path / 'base.yaml'} {cell}: train.lr must be a number (got true)",
    ]


def test_a_bench_cells_labels_find_the_recipe_once_whatever_its_number_of_values(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Labelling a cell's values looked the recipe up again for each value (a shipped name: a walk of the shipped
    recipes' folder each time), so a cell of many values cost one lookup more per value; now the file load_recipe
    found is used for every value."""
    from facekit import recipe as recipe_module
    from facekit.bench import cells

    found: list[object] = []
    real = recipe_module.find_recipe

    def counted(given: str | Path) -> Path:
        found.append(given)
        return real(given)

    values = ["train.lr=0.001", "train.batch_size=4", "train.seed=1", "train.steps=2", "train.pool_size=8"]
    grid = ", ".join(f"{key}: [{value}]" for key, _, value in (v.partition("=") for v in values))
    (tmp_path / "grid.yaml").write_text(f"bench:\n  grid: {{{grid}}}\n")
    (tmp_path / "child.yaml").write_text("extends: grid.yaml\n")
    (cell,) = cells(recipe_module.load_recipe(tmp_path / "child.yaml"))
    assert sorted(cell) == sorted(values)
    monkeypatch.setattr(recipe_module, "find_recipe", counted)
    lookups = []
    for given in (cell[:1], cell):
        found.clear()
        plan = recipe_module.load_recipe(tmp_path / "child.yaml", given, grid_cell=given)
        assert plan.recipe.train.lr == 0.001
        lookups.append(len(found))
    assert lookups[0] == lookups[1], lookups


def test_a_cross_field_problem_is_named_by_the_set_that_gave_either_of_its_settings(tmp_path: Path) -> None:
    """helper-150: a rule between two settings (background_rgb needs background: plain) was said at the section,
    `train: train.background_rgb shape ...`, without the --set that gave the value, while a field's own refusal names
    it; and the rules between sections (interocular_px < image_size / 2) named no --set at all. Each is said at the
    setting it refuses, named by the --set of that setting or of the other one it reads, else by the base file."""
    plain = "shapes the plain background: set train.background: plain"
    assert problems_of({}, ("train.background_rgb=[1, 2, 3]",)) == [
        f"--set train.background_rgb=[1, 2, 3]: train.background_rgb {plain}"
    ]
    # The other setting of the rule given on the command line: that --set refused the file's colour.
    assert problems_of({"train": {"background": "plain", "background_rgb": [1, 2, 3]}}, ("train.background=keep",)) == [
        f"--set train.background=keep: train.background_rgb {plain}"
    ]
    assert problems_of({"train": {"background_rgb": [1, 2, 3]}}) == [f"train.background_rgb: {plain}"]
    said = {
        ("train.loss.separation_margin=0.1",): "train.loss.separation_margin is the separation term's margin",
        ("infer.detail=0", "infer.detail_forehead=1"): "infer.detail_forehead shapes the photo's detail band",
        ("data.train=[{source: lfw}]",): "data.train.0.people must be given for source 'lfw'",
        ("prepare.interocular_px=200",): "prepare.interocular_px must be less than half of prepare.image_size (224)",
        ("prepare.image_size=100",): "prepare.interocular_px must be less than half of prepare.image_size (100)",
        ("train.device=cpu", "train.precision=fp16"): "train.precision fp16 needs a GPU",
        ("train.device=cpu",): "train.precision fp16 needs a GPU",
    }
    for overrides, words in said.items():
        raw = {"train": {"precision": "fp16"}} if overrides == ("train.device=cpu",) else {}
        (problem,) = problems_of(raw, overrides)
        assert problem.startswith(f"--set {overrides[-1]}: {words}"), problem
    # Set in a base file: named by that file, as a field's own refusal is.
    (tmp_path / "base.yaml").write_text("train: {background_rgb: [1, 2, 3]}\n")
    (tmp_path / "child.yaml").write_text("extends: base.yaml\ntrain: {steps: 2}\n")
    with pytest.raises(RecipeError) as caught:
        load_recipe(tmp_path / "child.yaml")
    assert [str(p) for p in caught.value.problems] == [
        f"train.background_rgb: {plain} (set in {tmp_path / 'base.yaml'})"
    ]


def test_an_apps_own_rules_are_said_at_the_setting_they_refuse() -> None:
    """The built-in apps' rules between their params (adjust's refine and fuse need mapping gains, model or
    checkpoint...) were a ValueError said at `components.apps.0.params`, in `facekit adjust`'s options ("refine
    (--refine) needs mapping 'gains' (--mapping gains)"), and never named by the --set that gave the value. Each is
    said at the setting it refuses, named by the --set of it or of the setting it reads, as the recipe's own rules."""
    light = "works in linear light and needs mapping gains; the paper's ycrcb map runs without it: leave it out"
    adjust = {"components": {"apps": [{"name": "adjust", "params": {"mapping": "ycrcb", "fuse": "agreement"}}]}}
    assert problems_of(adjust) == [f"components.apps.0.params.fuse: {light}"]
    assert problems_of(adjust, ("components.apps.0.params.refine=2",)) == [
        f"components.apps.0.params.fuse: {light}",
        f"--set components.apps.0.params.refine=2: components.apps.0.params.refine {light}",
    ]
    adjust["components"]["apps"][0]["params"] = {"all_faces": True}
    assert problems_of(adjust, ("components.apps.0.params.face=central",)) == [
        "--set components.apps.0.params.face=central: components.apps.0.params.all_faces averages all found, and "
        "face central picks one: set one of them"
    ]
    both = "components.apps=[{name: attributes, params: {model: sface, checkpoint: m.safetensors}}]"
    assert problems_of({}, (both,)) == [
        f"--set {both}: components.apps.0.params.checkpoint is a file, and model names a shipped one: give one of them"
    ]


def test_a_refused_set_value_is_echoed_as_typed() -> None:
    """helper-150: the value echoed was YAML's reading, not what the user typed: `--set train.steps=yes` said
    "(got true)", 0x10 "(got 16)", 1e3 "(got 1000.0)". A --set's value is echoed as typed; text YAML reads as the same
    text keeps its quotes, and a recipe file's value is said in YAML's reading, as before."""
    said = {
        "train.steps=yes": "train.steps must be a whole number (got yes)",
        "train.photo_casts=0x10": "train.photo_casts must be at most 8 (got 0x10)",
        "train.photo_casts=1e3": "train.photo_casts must be at most 8 (got 1e3)",
        "components.warper.params.regularization=off": "components.warper.params.regularization must be a number "
        "(got off)",
        "train.steps=abc": "train.steps must be a whole number (got 'abc')",
        "train.background_rgb=[1, 2]": "train.background_rgb must have 3 items (got 2)",  # a length, not the value
        # An item of a list or section typed: as typed too (helper-159: "(got 511)", "(got 1000.0)").
        "train.background_rgb=[1, 2, 0x1FF]": "train.background_rgb.2 must be at most 255 (got 0x1FF)",
        "components.apps=[{name: adjust, params: {strength: 1e3}}]": "components.apps.0.params.strength must be at "
        "most 1 (got 1e3)",
        "train.background_rgb=[1, 2, '0x1FF']": "train.background_rgb.2 must be a whole number (got '0x1FF')",
    }
    for override, words in said.items():
        assert problems_of({}, (override,)) == [f"--set {override}: {words}"]
    assert problems_of({"train": {"steps": True, "photo_casts": 16}}) == [
        "train.steps: must be a whole number (got true)",
        "train.photo_casts: must be at most 8 (got 16)",
    ]


def test_a_refused_value_of_a_recipe_file_is_echoed_as_written(tmp_path: Path) -> None:
    """helper-159: a --set's value was echoed as typed, a recipe file's as YAML read it: `photo_casts: 0x10` said
    "(got 16)", `steps: yes` "(got true)", a number or word the file does not hold. Now as the file writes it, in a
    base file, a list or a `<<` merge too; a --set of the path is still echoed as typed."""
    (tmp_path / "child.yaml").write_text("extends: base.yaml\nevaluate: {max_photos: 1.5e0}\n")
    (tmp_path / "base.yaml").write_text(
        "train:\n  <<: {photo_casts: 0x10}\n  steps: yes\n  background_rgb: [1, 2, 0x1FF]\n"
    )
    with pytest.raises(RecipeError) as caught:
        load_recipe(tmp_path / "child.yaml", ["train.steps=2"])
    base = tmp_path / "base.yaml"
    assert sorted(str(p) for p in caught.value.problems) == [
        "evaluate.max_photos: must be a whole number (got 1.5e0)",
        f"train.background_rgb.2: must be at most 255 (got 0x1FF) (set in {base})",
        f"train.photo_casts: must be at most 8 (got 0x10) (set in {base})",
    ]
    with pytest.raises(RecipeError) as caught:
        load_recipe(tmp_path / "base.yaml", ["train.photo_casts=0x20"])
    assert sorted(str(p) for p in caught.value.problems) == [
        "--set train.photo_casts=0x20: train.photo_casts must be at most 8 (got 0x20)",
        "train.background_rgb.2: must be at most 255 (got 0x1FF)",
        "train.steps: must be a whole number (got yes)",
    ]


def test_a_refused_value_written_with_an_anchor_tag_or_over_lines_is_echoed_as_its_value(tmp_path: Path) -> None:
    """A node's text in the file began at its anchor or tag: `lr: &l yes` said "(got &l yes)", and so did the
    `*l` that repeats it; a plain scalar written over two lines was echoed with its line break, cutting the problem's
    line in two. Now the value alone, and YAML's one-line reading of the folded one."""
    (tmp_path / "r.yaml").write_text(
        "train:\n  lr: &l yes\n  identity_jitter: *l\n  steps: !!str 0x10\n  photo_casts: !!int 0x10\n"
        "  background: no\n    way\n"
    )
    with pytest.raises(RecipeError) as caught:
        load_recipe(tmp_path / "r.yaml")
    assert sorted(str(p) for p in caught.value.problems) == [
        "train.background: must be 'keep' or 'plain' (got 'no way')",
        "train.identity_jitter: must be a number (got yes)",
        "train.lr: must be a number (got yes)",
        "train.photo_casts: must be at most 8 (got 0x10)",
        "train.steps: must be a whole number (got '0x10')",
    ]


def test_a_recipe_through_a_symbolic_link_names_the_base_it_read(tmp_path: Path) -> None:
    """A linked recipe's `extends` is read from the link's folder (read_recipe), but recipe_files looked from the
    target's: a problem set in the base was said "set in" another file with YAML's reading of its value, and
    run.json named and hashed a base that was not read."""
    (tmp_path / "mine").mkdir()
    (tmp_path / "shared").mkdir()
    (tmp_path / "shared" / "real.yaml").write_text("extends: base.yaml\n")
    (tmp_path / "shared" / "base.yaml").write_text("extends: demo\n")  # not the one read
    (tmp_path / "mine" / "base.yaml").write_text("extends: demo\ntrain: {steps: yes}\n")
    (tmp_path / "mine" / "link.yaml").symlink_to(tmp_path / "shared" / "real.yaml")
    with pytest.raises(RecipeError) as caught:
        load_recipe(tmp_path / "mine" / "link.yaml")
    base = (tmp_path / "mine" / "base.yaml").resolve()
    assert [str(p) for p in caught.value.problems] == [f"train.steps: must be a whole number (got yes) (set in {base})"]
    assert recipe_files(tmp_path / "mine" / "link.yaml")[:2] == [(tmp_path / "shared" / "real.yaml").resolve(), base]


def test_a_bench_grid_key_set_by_path_says_to_set_the_grid_whole() -> None:
    """helper-150: `--set bench.grid.train.batch_size=[8]` made the grid {train: {batch_size: [8]}} (a grid's keys
    are dotted recipe paths) and was refused as "bench.grid.train: must be a list", naming no --set. A key without a
    dot may still be set by path, and the whole grid as ever."""
    assert problems_of({}, ("bench.grid.train.batch_size=[8]",)) == [
        "--set bench.grid.train.batch_size=[8]: bench.grid's keys are recipe paths, dots and all, so --set cannot "
        "reach one by path: set the grid whole, --set 'bench.grid={train.batch_size: [8]}'"
    ]
    assert resolve({}, ("bench.grid={train.batch_size: [8]}",)).recipe.bench.grid == {"train.batch_size": [8]}
    assert resolve({}, ("bench.grid.description=[a, b]",)).recipe.bench.grid == {"description": ["a", "b"]}


def test_extends_cycle_and_missing_base_are_errors(tmp_path: Path) -> None:
    (tmp_path / "a.yaml").write_text("extends: b.yaml\n")
    (tmp_path / "b.yaml").write_text("extends: a.yaml\n")
    with pytest.raises(RecipeError, match="recipes extend each other in a cycle"):
        load_recipe(tmp_path / "a.yaml")
    (tmp_path / "c.yaml").write_text("extends: nowhere.yaml\n")
    with pytest.raises(RecipeError, match=r"nowhere\.yaml") as error:
        load_recipe(tmp_path / "c.yaml")
    assert "c.yaml" in str(error.value) and "extends" in str(error.value)  # which recipe names the missing base


def test_a_key_given_twice_is_refused_and_a_merge_key_may_still_be_overridden(tmp_path: Path) -> None:
    """Before: PyYAML kept the second ``train:`` silently, dropping what the first one set."""
    from facekit.recipe import read_yaml

    twice = tmp_path / "twice.yaml"
    twice.write_text("train: {steps: 5}\ndata: {}\ntrain: {lr: 0.1}\n")
    with pytest.raises(RecipeError, match="first given at line 1 is given again at line 3"):
        read_yaml(twice)
    nested = tmp_path / "nested.yaml"
    nested.write_text("train:\n  steps: 5\n  steps: 6\n")
    with pytest.raises(RecipeError, match="line 2 is given again at line 3"):
        read_yaml(nested)
    flow = tmp_path / "flow.yaml"
    flow.write_text("train: {steps: 5, steps: 6}\n")  # on one line
    with pytest.raises(RecipeError, match="line 1 is given again at line 1"):
        read_yaml(flow)
    merged = tmp_path / "merged.yaml"
    merged.write_text("base: &b {steps: 5, lr: 0.1}\ntrain:\n  <<: *b\n  steps: 7\n")
    assert read_yaml(merged)["train"] == {"steps": 7, "lr": 0.1}


def test_a_yaml_alias_bomb_is_refused_quickly(tmp_path: Path) -> None:
    import time

    from facekit.recipe import read_yaml
    from tests.helpers import peak_in_fresh_process

    lines = ["a0: &a0 [x, x, x, x, x, x, x, x, x]"]
    lines += [f"a{i}: &a{i} [{', '.join([f'*a{i - 1}'] * 9)}]" for i in range(1, 9)]  # 72 aliases, 9^9 leaves
    bomb = tmp_path / "bomb.yaml"
    bomb.write_text("\n".join(lines) + "\ndescription: *a8\n")
    started = time.perf_counter()
    with pytest.raises(RecipeError, match="alias bomb"):
        read_yaml(bomb)
    assert time.perf_counter() - started < 10.0  # expanding its 9^9 leaves would take hours; a loaded CI box, ms
    code = (
        "from facekit.recipe import read_yaml\n"
        "try: read_yaml(sys.argv[1])\nexcept Exception as error: print(type(error).__name__)"
    )
    (error,), extra_kb = peak_in_fresh_process(code, str(bomb))
    assert error == "RecipeError" and extra_kb < 200_000, (error, extra_kb)
    deep = tmp_path / "deep.yaml"
    deep.write_text("a: " + "[" * 5000 + "]" * 5000 + "\n")
    with pytest.raises(RecipeError, match="nested too deeply"):
        read_yaml(deep)
    # The same under a high recursion limit, as in a process that ran mypy's API (2**14; ci125: this test, after
    # the CONTRIBUTING examples' mypy test, read the 5,000 levels without a word)
    high = "import sys\nsys.setrecursionlimit(2**14)\n" + code
    assert peak_in_fresh_process(high, str(deep))[0] == ["RecipeError"]


def test_a_folder_or_a_binary_file_is_no_recipe(tmp_path: Path) -> None:
    from facekit.recipe import read_yaml

    with pytest.raises(FacekitError, match="folder"):
        read_yaml(tmp_path)
    binary = tmp_path / "photo.yaml"
    binary.write_bytes(b"\xff\xd8\xff\xe0 not text")
    with pytest.raises(FacekitError, match="UTF-8"):
        read_yaml(binary)


def test_booleans_are_not_numbers_and_numbers_are_finite() -> None:
    component = "components.warper.params.regularization"  # a component's params: the same rules
    overrides = ("train.steps=true", "train.lr=.inf", "train.lr=.nan", "train.keep_every=false")
    for override in (*overrides, f"{component}=.inf", f"{component}=true"):
        with pytest.raises(RecipeError):
            resolve({}, overrides=[override])
    assert resolve({}, overrides=["train.lr=1"]).recipe.train.lr == 1.0


def test_a_yaml_error_names_the_place_without_echoing_the_file(tmp_path: Path) -> None:
    from facekit.recipe import read_yaml

    secret = tmp_path / "secret.yaml"
    secret.write_text("password: hunter2\n  broken: [\n")
    with pytest.raises(RecipeError) as error:
        read_yaml(secret)
    assert "line" in str(error.value) and "hunter2" not in str(error.value)


def test_extends_a_folder_or_a_non_recipe_is_one_line(tmp_path: Path) -> None:
    from facekit.recipe import read_recipe

    (tmp_path / "photo.jpg").write_bytes(b"\xff\xd8\xff\xe0 a jpeg, not text")
    (tmp_path / "notes.txt").write_text("password: secret\n  broken: [\n")
    for target, message in ((".", "folder"), ("photo.jpg", "UTF-8"), ("notes.txt", "line 2")):
        recipe = tmp_path / f"extends-{target.strip('.') or 'dot'}.yaml"
        recipe.write_text(f"extends: {target}\n")
        with pytest.raises(FacekitError, match=message) as error:
            read_recipe(recipe)
        assert "secret" not in str(error.value)


def test_a_path_override_keeps_the_path_as_written() -> None:
    """Before: facekit bench passed its cell folders through YAML, so a path with ' #' lost its tail (a comment)."""
    from facekit.recipe import path_override

    for path in ("runs/my #2 grid/cells/ab12", "yes", "null", "0123", "a: b", "[x]"):
        raw: dict = {}
        assert apply_overrides(raw, [path_override("train.output", path)]) == []
        assert raw["train"]["output"] == path


def test_a_text_field_takes_the_command_lines_text_as_written() -> None:
    """helper-74: `--set "evaluate.output=runs/eval #2"` lost ' #2' as a YAML comment and overwrote another model's
    results; `--set train.output=2024` was refused as a number. Numbers, lists and components still read as YAML."""
    raw: dict = {}
    given = ["evaluate.output=runs/eval #2", "train.output=2024", "infer.output=yes", "train.init=null"]
    assert apply_overrides(raw, [*given, "train.steps=5", "components.warper={name: tps}", "infer.inputs=[a, b]"]) == []
    assert raw["evaluate"]["output"] == "runs/eval #2" and raw["train"]["output"] == "2024"
    assert raw["infer"]["output"] == "yes" and raw["train"]["init"] is None and raw["train"]["steps"] == 5
    assert raw["components"]["warper"]["name"] == "tps" and raw["infer"]["inputs"] == ["a", "b"]
    # A component's param and a list item too; an empty required field is refused, not the current folder
    # (helper-76).
    more = ["components.warper.params.note=a #b", "infer.inputs.1=photos/party #1.jpg"]
    assert apply_overrides(raw, more) == [] and raw["components"]["warper"]["params"]["note"] == "a #b"
    assert raw["infer"]["inputs"] == ["a", "photos/party #1.jpg"]
    assert any(p.startswith("--set infer.output=: infer.output") for p in problems_of({}, ("infer.output=",)))


def test_every_loss_through_the_encoder_needs_a_differentiable_one() -> None:
    """identity, perceptual and separation all reach the decoder through the encoder's gradient."""
    onnx = {"encoder": {"name": "arcface-onnx"}}  # its card: not differentiable in torch
    for name in ("identity", "perceptual", "separation"):
        loss = {"identity": 0.0, name: 1.0}
        problems = problems_of({"components": onnx, "train": {"loss": loss}})
        assert problems == [
            f"train.loss.{name}: needs gradients through encoder 'arcface-onnx', which is not differentiable in torch "
            f"(its card says so): set train.loss.{name} to 0 or choose a differentiable encoder"
        ]
    resolve({"components": onnx, "train": {"loss": {"identity": 0.0}}})  # nothing through it: fine
    # With components.identity_encoder the terms run that one: it must be differentiable, the encoder need not be.
    resolve({"components": {**onnx, "identity_encoder": {"name": "sface"}}, "train": {"loss": {"identity": 1.0}}})
    assert problems_of({"train": {"loss": {"identity_own": 0.5}}}) == [
        "train.loss.identity_own: is the encoder's own identity term beside components.identity_encoder's; without "
        "an identity encoder, train.loss.identity is that term: set it, or name components.identity_encoder"
    ]
    problems = problems_of({"components": {"identity_encoder": {"name": "arcface-onnx"}}})
    assert problems == [
        "train.loss.identity: needs gradients through components.identity_encoder 'arcface-onnx', which is not "
        "differentiable in torch (its card says so): set train.loss.identity to 0 or choose a differentiable encoder"
    ]


def test_infer_takes_normalizes_options_and_refuses_what_normalize_refuses() -> None:
    """The infer stage takes what `facekit normalize` takes as options (face, photo detail, device), within the
    same bounds; a value normalize would refuse is a recipe problem before anything runs."""
    plan = resolve({"infer": {"face": "central", "detail": 0.5, "detail_shape": 0, "detail_forehead": 1}})
    assert (plan.recipe.infer.face, plan.recipe.infer.detail, plan.recipe.infer.detail_forehead) == ("central", 0.5, 1)
    for key, value in (("face", "leftmost"), ("detail", 3), ("detail_shape", -0.1), ("detail_forehead", 9)):
        assert key in InferSection.model_fields  # a refusal, not an unknown key
        with pytest.raises(RecipeError, match=f"infer.{key}"):
            resolve({"infer": {key: value}})


def test_infer_device_is_normalizes_device() -> None:
    """``infer.device`` takes what ``--device`` takes (cuda:N included); a GPU asked for where none is visible is
    refused naming the recipe value, before a run folder is made (the stage resolves it first)."""
    import torch

    from facekit.normalize import inference_device

    assert resolve({"infer": {"device": "cuda:1"}}).recipe.infer.device == "cuda:1"
    with pytest.raises(RecipeError, match=r"infer\.device"):
        resolve({"infer": {"device": "gpu"}})
    assert inference_device("cpu") == "cpu"
    assert inference_device("auto", "infer.device") == ("cuda" if torch.cuda.is_available() else "cpu")
    with pytest.raises(FacekitError, match=r"infer\.device 'tpu'"):
        inference_device("tpu", "infer.device")
    if not torch.cuda.is_available():
        with pytest.raises(FacekitError, match=r"infer\.device cuda:0: no GPU is visible here; use infer\.device cpu"):
            inference_device("cuda:0", "infer.device")


def test_an_unknown_key_names_the_nearest_field_of_its_section() -> None:
    """Before: 'train.stpes: extra field not permitted' without a hint, every problem on one line."""
    with pytest.raises(RecipeError) as caught:
        resolve({"trian": {}, "train": {"stpes": 3, "loss": {"identty": 1}}, "infer": {"zzz": 1}})
    message = str(caught.value)
    assert "\n  - train.stpes: extra field not permitted; did you mean 'steps'?" in message
    assert "train.loss.identty: extra field not permitted; did you mean 'identity'?" in message
    assert "trian: extra field not permitted; did you mean 'train'?" in message
    assert "infer.zzz: extra field not permitted\n" in message + "\n"  # nothing near: no guess


def test_the_face_rule_type_lists_the_face_choices() -> None:
    """Settings models take FaceRule, a Literal that must list FaceChoice's values (a rule added to one only)."""
    from typing import get_args

    from facekit.types import FACE_CHOICES, FaceRule

    assert get_args(FaceRule) == FACE_CHOICES


def test_a_sources_fields_are_its_own_and_a_folder_of_devtest_people_is_a_leak(tmp_path: Path) -> None:
    """Before: min_photos, people or subset on a folder source were accepted and ignored (one-photo people kept),
    and the train/test overlap check read only lfw sources, so LFW DevTest people copied into a folder trained."""
    folder = tmp_path / "photos"
    (folder / "Adrien_Brody").mkdir(parents=True)  # an LFW peopleDevTest person
    (folder / "anna").mkdir()
    train = {"source": "folder", "path": str(folder), "min_photos": 3}
    (problem,) = problems_of({"data": {"root": str(tmp_path), "train": [train]}})
    assert problem == (
        "data.train.0.min_photos: is not a setting of source 'folder' (people and min_photos are lfw's, subset "
        "london's, path folder's)"
    )
    lfw = tmp_path / "lfw"
    lfw.mkdir()
    (lfw / "peopleDevTest.txt").write_text("1\nAdrien_Brody\t3\n")
    train.pop("min_photos")
    problems = problems_of({"data": {"root": str(tmp_path), "train": [train]}})
    assert any("Adrien_Brody" in p for p in problems), problems
    missing = problems_of({"data": {"root": str(tmp_path), "train": [{"source": "folder", "path": "nope"}]}})
    assert missing == [
        f"data.train.0.path: folder not found: {tmp_path / 'nope'} (a relative path is under data.root, {tmp_path})"
    ]
    # A photo given where its folder belongs (helper-133: "folder not found" of a file that is there).
    (folder / "anna" / "one.jpg").write_bytes(b"a photo")
    photo = {"source": "folder", "path": str(folder / "anna" / "one.jpg")}
    assert problems_of({"data": {"root": str(tmp_path), "train": [photo]}}) == [
        f"data.train.0.path: {folder / 'anna' / 'one.jpg'} is a file: a folder source's path is a folder of people, "
        "PATH/<person>/<photo>"
    ]


def test_a_devtest_person_reached_through_a_link_is_a_leak_and_linked_photos_are_read(tmp_path: Path) -> None:
    """helper-69: a person folder that is a link (people/Someone -> stash/) was read for training but not walked by
    the overlap check, so a DevTest photo trained unnoticed; a linked folder inside a person's folder was not read."""
    from facekit.data.sources import folder_photos

    lfw = tmp_path / "lfw"
    lfw.mkdir()
    (lfw / "peopleDevTest.txt").write_text("1\nAdrien_Brody\t3\n")
    stash, people = tmp_path / "stash", tmp_path / "people"
    stash.mkdir()
    (stash / "Adrien_Brody_0001.jpg").write_bytes(b"photo")
    (people / "carl").mkdir(parents=True)
    (people / "Someone").symlink_to(stash)
    problems = problems_of({"data": {"root": str(tmp_path), "train": [{"source": "folder", "path": str(people)}]}})
    assert len(problems) == 1 and "holds 1 test person (Adrien_Brody) of LFW's" in problems[0], problems
    (people / "Someone").unlink()
    (people / "carl" / "x.jpg").symlink_to(stash / "Adrien_Brody_0001.jpg")  # a linked file is its target's photo
    problems = problems_of({"data": {"root": str(tmp_path), "train": [{"source": "folder", "path": str(people)}]}})
    assert len(problems) == 1 and "holds 1 test person (Adrien_Brody) of LFW's" in problems[0], problems
    (people / "carl" / "x.jpg").unlink()
    (tmp_path / "more").mkdir()
    for name in ("a.jpg", "b.jpg"):
        (tmp_path / "more" / name).write_bytes(b"photo")
    (people / "carl" / "linked").symlink_to(tmp_path / "more")
    (people / "carl" / "linked" / "up").symlink_to(people)  # a link back up is not walked (nor forever)
    (people / "carl" / "own.jpg").write_bytes(b"photo")
    (people / "ben").mkdir()
    (people / "ben" / "b.jpg").write_bytes(b"photo")
    (people / "carl" / "friend").symlink_to(people / "ben")  # another person's photos are not carl's (helper-71)
    # A person folder that is a link into the photo folder, or above it, is nobody's (helper-73: people/all -> the
    # data root trained on photos the overlap check never saw; an alias trained ben twice); a link to a hidden
    # folder inside, which no walk enters, is followed; a link above a linked person's own folder is not.
    (people / "alias").symlink_to(people / "ben")
    (people / "all").symlink_to(tmp_path)
    (people / ".store" / "ann").mkdir(parents=True)
    (people / ".store" / "ann" / "a2.jpg").write_bytes(b"photo")
    (people / "ann").symlink_to(people / ".store" / "ann")
    (tmp_path / "ext" / "dora").mkdir(parents=True)
    (tmp_path / "ext" / "dora" / "d1.jpg").write_bytes(b"photo")
    (tmp_path / "ext" / "eve").mkdir()
    (tmp_path / "ext" / "eve" / "e1.jpg").write_bytes(b"photo")
    (tmp_path / "ext" / "eve" / "up").symlink_to(tmp_path / "ext")
    (people / "eve").symlink_to(tmp_path / "ext" / "eve")
    # A linked file another walk reads anyway is left out: ben's photo is not carl's, carl's own photo under a second
    # name counts once; a photo kept outside the folder, or hidden inside it, is followed.
    (people / "carl" / "ben.jpg").symlink_to(people / "ben" / "b.jpg")
    (people / "carl" / "again.jpg").symlink_to(people / "carl" / "own.jpg")
    (tmp_path / "c2.jpg").write_bytes(b"photo")
    (people / "carl" / "outside.jpg").symlink_to(tmp_path / "c2.jpg")
    (people / ".store" / "c3.jpg").write_bytes(b"photo")
    (people / "carl" / "hidden.jpg").symlink_to(people / ".store" / "c3.jpg")
    # ... and one the walk reads as itself through a linked folder: eve's behind people/eve, carl's own behind his
    # linked folder (helper-76).
    (people / "carl" / "eves.jpg").symlink_to(tmp_path / "ext" / "eve" / "e1.jpg")
    (people / "carl" / "a_again.jpg").symlink_to(tmp_path / "more" / "a.jpg")
    everyone = folder_photos(people)
    assert sorted({p.identity for p in everyone}) == ["folder/ann", "folder/ben", "folder/carl", "folder/eve"]
    assert [p.path.name for p in everyone if p.identity == "folder/eve"] == ["e1.jpg"]
    assert [p.path.name for p in everyone if p.identity == "folder/ann"] == ["a2.jpg"]
    photos = [photo for photo in everyone if photo.identity == "folder/carl"]
    assert [p.path.relative_to(people).as_posix() for p in photos] == [
        "carl/hidden.jpg",
        "carl/linked/a.jpg",
        "carl/linked/b.jpg",
        "carl/outside.jpg",
        "carl/own.jpg",
    ]
    assert [p.path.name for p in folder_photos(people) if p.identity == "folder/ben"] == ["b.jpg"]


def test_loose_photos_sharing_a_name_with_a_person_or_each_other_stay_people_of_their_own(tmp_path: Path) -> None:
    """helper-107: anna.jpg loose beside anna/, or solo.jpg beside solo.png, were one identity (folder/anna,
    folder/solo), so four people were averaged into two although a loose photo is a person of its own."""
    from facekit.data.sources import folder_photos

    (tmp_path / "anna").mkdir()
    for name in ("anna/a1.jpg", "anna.jpg", "solo.jpg", "solo.png", "carl.jpg"):
        (tmp_path / name).write_bytes(b"photo")
    found = {p.path.relative_to(tmp_path).as_posix(): p.identity for p in folder_photos(tmp_path)}
    assert found == {
        "anna/a1.jpg": "folder/anna",
        "anna.jpg": "folder/anna.jpg",
        "carl.jpg": "folder/carl",
        "solo.jpg": "folder/solo.jpg",
        "solo.png": "folder/solo.png",
    }


def test_devtest_photos_loose_or_nested_in_a_folder_are_a_leak_too(tmp_path: Path) -> None:
    """Before: only a folder source's first-level folder names were read, so DevTest photos loose in it
    (Adrien_Brody_0001.jpg, each its own 'person') or one level deeper (people/Celine_Dion/...) trained unnoticed."""
    lfw = tmp_path / "lfw"
    lfw.mkdir()
    (lfw / "peopleDevTest.txt").write_text("2\nAdrien_Brody\t3\nCeline_Dion\t4\n")
    loose, nested, clean = tmp_path / "loose", tmp_path / "nested", tmp_path / "clean"
    loose.mkdir()
    (loose / "Adrien_Brody_0001.jpg").write_bytes(b"photo")
    (nested / "people" / "Celine_Dion").mkdir(parents=True)
    (nested / "people" / "Celine_Dion" / "x.jpg").write_bytes(b"photo")
    (clean / "anna").mkdir(parents=True)
    (clean / "anna" / "Adrien_Brody_fan_0001.jpg").write_bytes(b"photo")  # not his name once the number goes
    (clean / ".cache" / "Celine_Dion").mkdir(parents=True)  # hidden: the photo readers skip it too
    for folder, name in ((loose, "Adrien_Brody"), (nested, "Celine_Dion")):
        problems = problems_of({"data": {"root": str(tmp_path), "train": [{"source": "folder", "path": str(folder)}]}})
        assert problems == [
            f"data.train.0.path: holds 1 test person ({name}) of LFW's peopleDevTest.txt (what facekit eval and bench "
            "score on): never train on test people; train on others"
        ]
    resolve({"data": {"root": str(tmp_path), "train": [{"source": "folder", "path": str(clean)}]}})  # no problem
    # Camera file names are not people: alice's IMG_0001.jpg and bob's IMG_0002.jpg in a test folder (helper-45).
    camera_train, camera_test = tmp_path / "cam-train", tmp_path / "cam-test"
    for folder, person, number in ((camera_train, "alice", 1), (camera_test, "bob", 2)):
        (folder / person).mkdir(parents=True)
        (folder / person / f"IMG_{number:04d}.jpg").write_bytes(b"photo")
    sources = {"train": [{"source": "folder", "path": str(camera_train)}]}
    resolve({"data": {"root": str(tmp_path), **sources, "test": [{"source": "folder", "path": str(camera_test)}]}})


def test_no_stage_writes_inside_a_photo_folder_it_reads(tmp_path: Path) -> None:
    """Before: prepare.output inside the data.train folder was read back by the next prepare as a person named
    'prepared', its arrays and contact sheet as their photos."""
    (tmp_path / "photos" / "anna").mkdir(parents=True)
    raw = {
        "data": {"root": str(tmp_path), "train": [{"source": "folder", "path": "photos"}]},
        "prepare": {"output": str(tmp_path / "photos" / "prepared")},
    }
    (problem,) = problems_of(raw)
    assert problem.startswith("prepare.output: is inside data.train.0's photo folder") and "read as photos" in problem
    raw["prepare"]["output"] = str(tmp_path / "prepared")  # beside it: fine
    resolve(raw)


def test_a_run_folders_recipe_yaml_loads_again(tmp_path: Path) -> None:
    """A run folder's recipe.yaml lists every field, other sources' defaults included (a folder source's
    ``min_photos: 1``, ``people: null``); the stray-field check refuses only fields set to something of their own."""
    from facekit.recipe import load_recipe

    (tmp_path / "photos" / "anna").mkdir(parents=True)
    (tmp_path / "london" / "neutral_front").mkdir(parents=True)
    raw = {
        "data": {
            "root": str(tmp_path),
            "train": [{"source": "folder", "path": "photos"}],
            "test": [{"source": "london", "subset": "neutral_front"}],
        }
    }
    (tmp_path / "r.yaml").write_text(yaml.safe_dump(raw))
    plan = load_recipe(tmp_path / "r.yaml")
    dumped = plan.to_dict()
    assert dumped["data"]["train"][0]["min_photos"] == 1 and dumped["data"]["train"][0]["people"] is None
    (tmp_path / "again.yaml").write_text(yaml.safe_dump(dumped, sort_keys=False))
    assert load_recipe(tmp_path / "again.yaml").to_dict() == dumped


def test_two_stages_cannot_share_an_output_folder(tmp_path: Path) -> None:
    """Before: accepted; augment then overwrote prepare's contact sheet and infer refused prepare's manifest."""
    same = str(tmp_path / "all")
    raw = {stage: {"output": same} for stage in ("prepare", "augment", "train", "evaluate", "infer")}
    problems = problems_of(raw)
    assert "augment.output: is prepare.output's folder too: give each stage its own" in problems
    assert sum("prepare.output's folder too" in p for p in problems) == 4


def test_a_later_stages_settings_refusal_stops_the_run_before_the_first_stage(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """What `facekit check` says of a later stage from the settings alone (``STAGE_REFUSALS``: no decoder, a decoder
    without ``feature_size``, a warper the losses cannot pass through) stops a full run before its first stage, in the
    same words. Before, the train stage's were refused only once the whole prepare stage had run."""
    from facekit import pipeline
    from facekit.runs import RunDir

    ran: list[str] = []
    for stage in ("prepare", "train"):
        monkeypatch.setitem(
            pipeline.STAGE_RUNNERS, stage, lambda plan, options, stage=stage: ran.append(stage) or RunDir(tmp_path)
        )
    # The stand-in prepare stage reads no detector and no data.train, which this recipe leaves out: its refusals from
    # the settings, said first as the first stage's (in pipeline order, as `facekit check` lists them), go with it.
    monkeypatch.setitem(pipeline.STAGE_REFUSALS, "prepare", lambda plan: [])
    monkeypatch.setattr(pipeline, "finish_run", lambda run: None)
    monkeypatch.setattr(pipeline, "check_output_folders", lambda plan, stages: None)
    plan = resolve({"components": {"encoder": {"name": "dlib-resnet"}}, "train": {"output": str(tmp_path / "t")}})
    said = [str(problem) for problem in pipeline.run_refusals(plan, ["train"])]
    assert said and "components.decoder" in said[0]
    with pytest.raises(FacekitError) as refused:
        run_plan(plan, ["prepare", "train"])
    assert (str(refused.value), ran) == (said[0], [])


def test_a_later_stages_mistake_stops_the_run_before_the_first_stage(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """helper-69: a missing infer input, or a judge whose weights are not here, stopped `facekit run` after hours
    of training; a later stage's failure left the finished stages' lines unsaid."""
    from facekit import pipeline
    from facekit.runs import RunDir

    ran: list[str] = []

    def runner(name: str) -> object:
        def run(plan: object, options: object) -> RunDir:
            ran.append(name)
            if name == "infer":
                raise FacekitError("the infer stage failed")
            return RunDir(tmp_path / name, note=f"{name} done")

        return run

    for stage in ("prepare", "train", "evaluate", "infer"):
        monkeypatch.setitem(pipeline.STAGE_RUNNERS, stage, runner(stage))
    # The stand-in prepare stage reads no detector and no data.train, which these recipes leave out: its refusals
    # from the settings, said before anything else as the first stage's (pipeline order), go with it.
    monkeypatch.setitem(pipeline.STAGE_REFUSALS, "prepare", lambda plan: [])
    monkeypatch.setenv("FACEKIT_HOME", str(tmp_path / "home"))  # a store without VGG-Face's weights, on any machine
    monkeypatch.setattr(pipeline, "finish_run", lambda run: None)
    monkeypatch.setattr(pipeline, "check_output_folders", lambda plan, stages: None)
    # (an encoder and a decoder: the train stage's own refusals from the settings come first otherwise)
    parts = {"encoder": {"name": "dlib-resnet"}, "decoder": {"name": "paper", "params": {"image_size": 224}}}
    base = {"components": parts, "train": {"output": str(tmp_path / "t")}, "evaluate": {"output": str(tmp_path / "e")}}
    missing = resolve({**base, "infer": {"inputs": [str(tmp_path / "nope.jpg")], "output": str(tmp_path / "o")}})
    with pytest.raises(FacekitError, match=r"infer.inputs: no such photo or folder: .*nope\.jpg"):
        run_plan(missing, ["train", "infer"])
    judge = resolve({**base, "components": {**parts, "judge": {"name": "vggface"}}})
    with pytest.raises(FacekitError, match=r"needs the weight file vgg_face_dag\.pth"):
        run_plan(judge, ["train", "evaluate"])
    # What the train stage or the infer stage's output folder would stop on is found before prepare (helper-74: each
    # stopped the run after the whole prepare stage, or after training).
    (tmp_path / "photos").mkdir()
    (tmp_path / "a-file").write_text("mine")
    cases = {
        r"no GPU|CUDA|cuda": {"train": {**base["train"], "device": "cuda"}},
        r"train\.init: .*nope\.safetensors": {"train": {**base["train"], "init": str(tmp_path / "nope.safetensors")}},
        r"needs the weight file vgg_face_dag\.pth": {"components": {**parts, "encoder": {"name": "vggface"}}},
        r"infer\.output .*a-file is a file": {
            "infer": {"inputs": [str(tmp_path / "photos")], "output": str(tmp_path / "a-file")}
        },
        r"infer\.output .* is inside the input folder": {
            "infer": {"inputs": [str(tmp_path / "photos")], "output": str(tmp_path / "photos" / "out")}
        },
    }
    # A named model whose own components the recipe sets other params for (helper-76: refused only at the infer stage).
    from facekit.normalize import default_model_path

    (tmp_path / "one.jpg").write_bytes(b"")
    shipped = {
        "inputs": [str(tmp_path / "one.jpg")],
        "output": str(tmp_path / "o"),
        "checkpoint": str(default_model_path()),
    }
    warper = {"name": "rbf-linear", "params": {"regularization": 0.5}}
    cases[r"components\.warper\.params\.regularization is 0\.5"] = {
        "components": {**parts, "warper": warper},
        "infer": shipped,
    }
    monkeypatch.setattr("torch.cuda.is_available", lambda: False)  # the cuda case on a GPU machine too (helper-76)
    for message, changed in cases.items():
        with pytest.raises(FacekitError, match=message):
            run_plan(resolve({**base, **changed}), ["prepare", "train", *(["infer"] if "infer" in changed else [])])
    assert ran == []  # nothing ran: each was refused before the first stage
    assert not (tmp_path / "photos" / "out").exists()
    # A resumed training does not read train.init: its model may be gone (helper-76: refused up front).
    (tmp_path / "t2" / "checkpoints").mkdir(parents=True)
    (tmp_path / "t2" / "checkpoints" / "last.safetensors").write_bytes(b"")
    gone = {"output": str(tmp_path / "t2"), "init": str(tmp_path / "gone.safetensors")}
    run_plan(resolve({**base, "train": gone}), ["prepare", "train"], RunOptions(resume=True))
    assert ran == ["prepare", "train"]
    ran.clear()
    # A checkpoint the train stage will write may be named before it exists (helper-71: refused on a fresh run), but
    # not any path under train.output (helper-73: a typo passed, to fail after the training).
    (tmp_path / "here.jpg").write_bytes(b"")
    kept = {**base, "train": {**base["train"], "steps": 4, "keep_every": 2}}
    for name, written in (("last", True), ("step-000002", True), ("step-000003", False), ("lats", False)):
        ahead = tmp_path / "t" / "checkpoints" / f"{name}.safetensors"
        own = {"inputs": [str(tmp_path / "here.jpg")], "output": str(tmp_path / "o"), "checkpoint": str(ahead)}
        message = "the infer stage failed" if written else r"infer\.checkpoint not found"  # ran, or refused first
        with pytest.raises(FacekitError, match=message):
            run_plan(resolve({**kept, "infer": own}), ["train", "infer"])
    with pytest.raises(FacekitError, match=r"infer\.checkpoint not found"):  # without the train stage: refused
        run_plan(resolve({**kept, "infer": own}), ["evaluate", "infer"])
    ran.clear()
    (tmp_path / "here.jpg").write_bytes(b"")
    plan = resolve({**base, "infer": {"inputs": [str(tmp_path / "here.jpg")], "output": str(tmp_path / "o")}})
    said: list[str] = []
    with pytest.raises(FacekitError, match="the infer stage failed"):
        run_plan(plan, ["train", "evaluate", "infer"], on_stage=lambda done: said.append(done.note))
    assert said == ["train done", "evaluate done"]


def test_the_augment_stage_says_truly_why_it_is_skipped() -> None:
    """helper-74: with augment.enabled false (the no-augmentation ablation) it said "augment.count is 0: morphs are
    made on the fly", both halves false."""
    from facekit.pipeline import skip_reason

    off = skip_reason("augment", resolve({"augment": {"enabled": False, "count": 5}}))
    assert off == "augment.enabled is false: training uses the averages alone, no morphs"
    assert "augment.count is 0" in str(skip_reason("augment", resolve({"augment": {"count": 0}})))
    assert skip_reason("augment", resolve({"augment": {"count": 5}})) is None


def test_an_augment_stage_asked_for_with_nothing_to_write_says_which_setting_before_prepare_runs(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """helper-107: --stage prepare --stage augment with the demo's augment.count 0 ran prepare, then said
    "augment.enabled is false or augment.count is 0: nothing to materialise": not which, nor what to do."""
    from facekit import pipeline

    ran: list[str] = []
    monkeypatch.setitem(pipeline.STAGE_RUNNERS, "prepare", lambda plan, options: ran.append("prepare"))
    # (the stand-in prepare's refusals too: this recipe has no detector nor data.train, which prepare's settings
    # refusal, said first in pipeline order as `facekit check` lists them, would say before augment's)
    monkeypatch.setitem(pipeline.STAGE_REFUSALS, "prepare", lambda plan: [])
    base = {"prepare": {"output": str(tmp_path / "p")}, "augment": {"output": str(tmp_path / "a"), "count": 0}}
    with pytest.raises(FacekitError, match=r"\(augment\.count is 0: .*\): --set augment\.count=N writes N to look at"):
        run_plan(resolve(base), ["prepare", "augment"])
    off = {**base, "augment": {"output": str(tmp_path / "a"), "enabled": False}}
    with pytest.raises(FacekitError, match=r"\(augment\.enabled is false: .*\): --set augment\.enabled=true --set"):
        run_plan(resolve(off), ["augment"])
    assert ran == [] and not (tmp_path / "a").exists()


def test_a_missing_infer_input_is_named_as_infer_inputs_under_the_data_root_when_infer_runs_alone(
    tmp_path: Path,
) -> None:
    """helper-107: `facekit run mine.yaml --stage infer` with infer.inputs [new] said "no such photo or folder:
    ../shared/data/new" (from the folder scan), neither the setting nor that a relative input is under data.root;
    only a run with an earlier stage said so (check_later_stages)."""
    from facekit.pipeline import infer_items

    (tmp_path / "here.jpg").write_bytes(b"photo")
    plan = resolve({"data": {"root": str(tmp_path)}, "infer": {"inputs": ["here.jpg", "new"]}})
    with pytest.raises(FacekitError, match=r"^infer\.inputs: no such photo or folder: .*new \(a relative path is "):
        infer_items(plan)
    found = resolve({"data": {"root": str(tmp_path)}, "infer": {"inputs": ["here.jpg"]}})
    assert infer_items(found) == [str(tmp_path / "here.jpg")]
    # An absolute input not found is said as given, without the data.root hint (helper-221: the hint was said of
    # /photos/new too, as if it had been looked for under the data root).
    gone = tmp_path / "gone"
    absolute = resolve({"data": {"root": str(tmp_path)}, "infer": {"inputs": ["here.jpg", str(gone)]}})
    with pytest.raises(FacekitError) as info:
        infer_items(absolute)
    assert str(info.value) == f"infer.inputs: no such photo or folder: {gone}"


def test_photo_casts_need_photo_inputs() -> None:
    """helper-74: train.photo_casts without photo_inputs was accepted and did nothing (yet keyed the pool cache)."""
    (problem,) = problems_of({"train": {"photo_casts": 2}})
    assert problem.startswith("train.photo_casts: casts copies of train.photo_inputs' photos")
    resolve({"train": {"photo_casts": 2, "photo_inputs": 1}})


def test_recipes_extending_each_other_are_named_a_cycle_and_extends_must_be_a_path(tmp_path: Path) -> None:
    """Not pinned (helper-90's mutants): the cycle test above matches "cycle" in its own tmp folder's name, so without
    the check the recursion's "nested too deeply to be a recipe" passed it; ``extends: 5`` is a problem, not a
    TypeError."""
    (tmp_path / "a.yaml").write_text("extends: b.yaml\n")
    (tmp_path / "b.yaml").write_text("extends: a.yaml\n")
    with pytest.raises(RecipeError) as error:
        load_recipe(tmp_path / "a.yaml")
    assert "recipes extend each other in a cycle: " in str(error.value)
    (tmp_path / "number.yaml").write_text("extends: 5\ntrain: {steps: 3}\n")
    with pytest.raises(RecipeError, match="extends: must be the path of another recipe file"):
        load_recipe(tmp_path / "number.yaml")


def test_set_reaches_new_nested_params_and_says_where_it_cannot_go() -> None:
    """Not pinned (helper-90's mutants): a new nested key in a component's params is set (it was not read back); a key
    under a param that is a value, a list place that is no number and a list item that is no mapping are problems,
    not tracebacks."""
    raw: dict = {"components": {"warper": {"name": "tps", "params": {"boundary_points": 0}}}}
    assert apply_overrides(raw, ["components.warper.params.extra.deep=1"]) == []
    assert raw["components"]["warper"]["params"]["extra"] == {"deep": 1}
    (problem,) = apply_overrides(raw, ["components.warper.params.boundary_points.deep=1"])
    assert problem.message == "components.warper.params.boundary_points is not a mapping"
    (problem,) = apply_overrides({}, ["infer.inputs.first=a.jpg"])
    assert problem.message == "infer.inputs has 0 items"
    (problem,) = apply_overrides({"components": {"apps": ["attributes"]}}, ["components.apps.0.name=explore"])
    assert problem.message == "cannot set inside this list item"


def test_set_keeps_a_text_fields_value_as_written_where_yaml_would_change_it() -> None:
    """Not pinned (helper-90's mutants): a field that may be empty takes a number as text (``train.init=2024``), a
    value YAML cannot read (``[draft]/out``) is the text, not emptied, and the text is taken without the white space
    around it."""
    raw: dict = {}
    given = ["train.init=2024", "infer.output=[draft]/out", "evaluate.output= runs/eval "]
    assert apply_overrides(raw, given) == []
    assert raw["train"]["init"] == "2024" and raw["infer"]["output"] == "[draft]/out"
    assert raw["evaluate"]["output"] == "runs/eval"


def test_a_value_problem_gets_no_nearest_field_hint() -> None:
    """Not pinned (helper-90's mutants): only an unknown key gets "did you mean"; a bad value of a known key would be
    told to use the key it already uses ("did you mean 'steps'?")."""
    (problem,) = problems_of({}, ("train.steps=many",))
    assert problem.startswith("--set train.steps=many: train.steps must") and "did you mean" not in problem


def test_a_file_larger_than_a_recipe_is_refused_before_it_is_read(tmp_path: Path) -> None:
    """Not pinned (helper-90's mutants): read_yaml's bound of MAX_RECIPE_BYTES; a recipe of exactly that size reads."""
    from facekit.recipe import MAX_RECIPE_BYTES, read_yaml

    head = "train: {steps: 3}\n#"
    at_limit = tmp_path / "padded.yaml"
    at_limit.write_text(head + "x" * (MAX_RECIPE_BYTES - len(head) - 1) + "\n")
    assert at_limit.stat().st_size == MAX_RECIPE_BYTES and read_yaml(at_limit) == {"train": {"steps": 3}}
    larger = tmp_path / "larger.yaml"
    larger.write_text(head + "x" * (MAX_RECIPE_BYTES - len(head)) + "\n")
    with pytest.raises(FacekitError, match=r"bytes: not a recipe \(at most 1,000,000\)"):
        read_yaml(larger)


def test_signed_numbers_in_exponent_form_are_numbers_too(tmp_path: Path) -> None:
    """Not pinned (helper-90's mutants): as YAML 1.2 and JSON, ``-1e3`` and ``+2e2`` are numbers (only unsigned ones
    were tested; a field of any type, such as a bench grid's values, kept them as text)."""
    from facekit.recipe import read_yaml

    (tmp_path / "r.yaml").write_text("bench:\n  grid:\n    train.lr: [-1e3, +2e2, -5e-4]\n")
    assert read_yaml(tmp_path / "r.yaml")["bench"]["grid"]["train.lr"] == [-1000.0, 200.0, -5e-4]


def _count_opens(monkeypatch: pytest.MonkeyPatch) -> Counter[Path]:
    """Path.open made to count its calls per resolved path, from now on in the test."""
    opened: Counter[Path] = Counter()
    real_open = Path.open

    def counted_open(self: Path, *args: object, **kwargs: object) -> object:
        opened[self.resolve()] += 1
        return real_open(self, *args, **kwargs)  # type: ignore[call-overload]

    monkeypatch.setattr(Path, "open", counted_open)
    return opened


def test_load_recipe_reads_each_file_of_its_chain_once_and_hashes_what_it_parsed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """load_recipe read and parsed each file of the ``extends`` chain twice (read_recipe, then run.json's
    ``recipe_files``) and read it a third time for its sha256, and a bench cell's labels read the chain twice more:
    five reads of each file per cell of a grid. Now each file once, its sha256 of the bytes that were parsed."""
    import hashlib

    from facekit.bench import cells

    base = tmp_path / "base.yaml"
    base.write_text(f"data: {{root: {tmp_path}, train: [], test: []}}\nbench: {{grid: {{train.lr: [0.001, -1]}}}}\n")
    child = tmp_path / "child.yaml"
    child.write_text("extends: base.yaml\ntrain: {steps: 2}\n")
    opened = _count_opens(monkeypatch)
    kept, refused = cells(load_recipe(child))
    for cell in (kept, refused):  # a cell resolved, and one refused (whose problem is echoed from the text read)
        opened.clear()
        try:
            plan = load_recipe(child, list(cell), grid_cell=cell)
        except RecipeError as error:
            assert "train.lr must be greater than 0 (got -1)" in str(error)
        assert (opened[child.resolve()], opened[base.resolve()]) == (1, 1)
    assert [each["sha256"] for each in plan.recipe_files] == [
        hashlib.sha256(file.read_bytes()).hexdigest() for file in (child, base)
    ]


def test_unused_settings_name_their_base_file_from_the_reads_of_load_recipe(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Plan.unused_settings read and parsed the ``extends`` chain again (recipe_origins) to name the file that set
    each setting: a read of every file per call (facekit run, check and bench each warn), and a base edited since
    the plan was loaded was named for what the plan had not read. Now from the reads of load_recipe."""
    base = tmp_path / "base.yaml"
    base.write_text(f"data: {{root: {tmp_path}, train: [], test: []}}\naugment: {{enabled: false, count: 7}}\n")
    child = tmp_path / "child.yaml"
    child.write_text("extends: base.yaml\ntrain: {steps: 2}\n")
    plan = load_recipe(child)
    base.write_text("data: {root: elsewhere}\n")  # edited after the plan was read: not what the plan holds
    opened = _count_opens(monkeypatch)
    assert plan.unused_settings() == [
        f"augment.count: not used: augmentation is off (augment.enabled: false) (set in {base.resolve()})"
    ]
    assert not opened


@pytest.mark.parametrize("newline", ["\r\n", "\r"], ids=["crlf", "cr"])
def test_a_recipe_with_other_line_ends_or_a_bom_reads_as_with_newlines(tmp_path: Path, newline: str) -> None:
    """A recipe saved on Windows (CRLF, maybe a UTF-8 BOM) reads as the same file with \\n line ends, and a refused
    value of it is echoed as written: the file's text is decoded from its bytes as text mode read it (universal
    newlines), so YAML's marks fall on the text a value is echoed from."""
    from facekit.recipe import read_yaml

    lines = ["description: 'two", "  lines'", "train:", "  steps: 3", "  lr: yes", ""]
    plain, crlf, bom = (tmp_path / f"{name}.yaml" for name in ("plain", "other", "bom"))
    plain.write_bytes("\n".join(lines).encode())
    crlf.write_bytes(newline.join(lines).encode())
    bom.write_bytes(b"\xef\xbb\xbf" + newline.join(lines).encode())
    expected = {"description": "two lines", "train": {"steps": 3, "lr": True}}
    assert read_yaml(crlf) == read_yaml(bom) == read_yaml(plain) == expected
    for file in (crlf, bom):
        with pytest.raises(RecipeError) as caught:
            load_recipe(file)
        assert [str(p) for p in caught.value.problems] == ["train.lr: must be a number (got yes)"]


def test_a_bench_value_listed_twice_is_refused_at_its_own_place(tmp_path: Path) -> None:
    """Cells of a value listed twice (``yes`` and ``true`` are one value) have one text: before, the refusal of the
    later one named the first's place and echoed its spelling (bench.grid.train.steps.0 ... (got yes) for the
    ``true`` at 2); bench.placed_cells gives each cell's places."""
    from facekit.bench import cells, placed_cells

    (tmp_path / "grid.yaml").write_text("bench:\n  grid:\n    train.steps: [yes, 3, true]\n")
    plan = load_recipe(tmp_path / "grid.yaml")
    assert [tuple(cell) for cell in placed_cells(plan)] == cells(plan)
    said = []
    for cell in placed_cells(plan)[::2]:
        with pytest.raises(RecipeError) as caught:
            load_recipe(tmp_path / "grid.yaml", list(cell), grid_cell=cell)
        said += [str(p) for p in caught.value.problems]
    grid = tmp_path / "grid.yaml"
    assert said == [
        f"bench.grid.train.steps.0 of {grid} (cell {{train.steps: yes}}): train.steps must be a whole number (got yes)",
        f"bench.grid.train.steps.2 of {grid} (cell {{train.steps: true}}): train.steps must be a whole number "
        "(got true)",
    ]


def test_a_recipe_not_in_utf8_is_refused_in_one_line(tmp_path: Path) -> None:
    """Its bytes are decoded as read_text decoded them: a Latin-1 é is no UTF-8, said in the same line as before."""
    latin = tmp_path / "latin.yaml"
    latin.write_bytes("description: café\ntrain: {steps: 3}\n".encode("latin-1"))
    with pytest.raises(FacekitError) as caught:
        load_recipe(latin)
    assert str(caught.value) == f"{latin} is not a UTF-8 text file, so not a recipe"


def test_a_bench_cells_refused_value_is_echoed_as_written_at_its_place_in_the_grid(tmp_path: Path) -> None:
    """A grid's values were echoed as YAML read them, in the cell and in the refusal (``yes`` as true, ``1e3`` as
    1000.0, ``-1e-2`` as -0.01) and a refused value was not placed in its key's list; now as written, where written
    (the grid file of the chain that writes the key, or the --set that gives the grid), named by its place, as a
    --set's or a recipe file's value is."""
    from facekit.bench import cells

    (tmp_path / "base.yaml").write_text("bench:\n  grid:\n    train.steps: [1e3, yes]\n")
    (tmp_path / "grid.yaml").write_text(
        "extends: base.yaml\nbench:\n  grid:\n    components.warper:\n"
        "      - {name: tps, params: {regularization: 1e-2}}\n      - {name: tps, params: {regularization: -1e-2}}\n"
    )
    plan = load_recipe(tmp_path / "grid.yaml")
    said = []
    for cell in cells(plan)[1:]:
        with pytest.raises(RecipeError) as caught:
            load_recipe(tmp_path / "grid.yaml", list(cell), grid_cell=cell)
        said += [str(p) for p in caught.value.problems]
    base, grid = tmp_path / "base.yaml", tmp_path / "grid.yaml"
    kept, refused = "{name: tps, params: {regularization: 1e-2}}", "{name: tps, params: {regularization: -1e-2}}"
    assert said == [
        f"bench.grid.components.warper.1 of {grid} (cell {{train.steps: 1e3, components.warper: {refused}}}): "
        "components.warper.params.regularization must be at least 0 (got -1e-2)",
        f"bench.grid.train.steps.1 of {base} (cell {{train.steps: yes, components.warper: {kept}}}): train.steps must "
        "be a whole number (got yes)",
        f"bench.grid.train.steps.1 of {base} (cell {{train.steps: yes, components.warper: {refused}}}): train.steps "
        "must be a whole number (got yes)",
        f"bench.grid.components.warper.1 of {grid} (cell {{train.steps: yes, components.warper: {refused}}}): "
        "components.warper.params.regularization must be at least 0 (got -1e-2)",
    ]
    given = "bench.grid={train.steps: [0x10, 'x', 2.5e0]}"  # a grid given by --set: as typed there
    refused_cells = cells(load_recipe(tmp_path / "grid.yaml", [given]))[1:]
    said = []
    for cell in refused_cells:
        with pytest.raises(RecipeError) as caught:
            load_recipe(tmp_path / "grid.yaml", [given, *cell], grid_cell=cell)
        said += [str(p) for p in caught.value.problems]
    assert said == [
        f"bench.grid.train.steps.1 of --set {given} (cell {{train.steps: 'x'}}): train.steps must be a whole number "
        "(got 'x')",
        f"bench.grid.train.steps.2 of --set {given} (cell {{train.steps: 2.5e0}}): train.steps must be a whole number "
        "(got 2.5e0)",
    ]


@pytest.mark.parametrize("stage", ["evaluate", "infer"])
def test_a_missing_trained_model_says_where_a_relative_train_output_leads(
    stage: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """helper-188: `facekit run mine.yaml --stage infer` (or evaluate) from another folder than the training's said
    "checkpoint not found: runs/mine/train/checkpoints/last.safetensors" alone: now the folder that path is under, in
    `facekit check`'s words, and to run from the training's folder."""
    (tmp_path / "photo.jpg").write_bytes(b"")
    recipe = {
        "train": {"output": "runs/mine/train"},
        "evaluate": {"output": str(tmp_path / "eval")},
        "infer": {"inputs": [str(tmp_path / "photo.jpg")], "output": str(tmp_path / "infer")},
    }
    monkeypatch.setattr("torch.cuda.is_available", lambda: False)
    monkeypatch.chdir(tmp_path)
    model = Path("runs/mine/train/checkpoints/last.safetensors")
    with pytest.raises(FacekitError) as info:
        run_plan(resolve(recipe), [stage])
    assert str(info.value) == (
        f"checkpoint not found: {model} (relative outputs are under {tmp_path}, the folder the command runs in: run "
        "from the folder the train stage ran in, run the train stage first, or set train.output)"
    )
    if stage == "evaluate":  # `facekit eval RECIPE` says it too
        from facekit.evaluate import evaluate_plan

        (tmp_path / "mine.yaml").write_text(yaml.safe_dump(recipe))
        here = f"relative outputs are under {tmp_path}, the folder the command runs in: run from the folder the train"
        with pytest.raises(FacekitError, match=re.escape(f"(the recipe's train.output; {here}")):
            evaluate_plan("mine.yaml", None, "lfw-devtest", [], None, str(tmp_path / "e"))
    absolute = {**recipe, "train": {"output": str(tmp_path / "t")}}  # an absolute path is where it says
    with pytest.raises(FacekitError) as info:
        run_plan(resolve(absolute), [stage])
    assert str(info.value) == (
        f"checkpoint not found: {tmp_path / 't' / model.relative_to('runs/mine/train')} (run the train stage first, "
        "or set train.output)"
    )


def test_a_stopped_stages_rerun_command_keeps_the_runs_overrides() -> None:
    """helper-221: `facekit run walk.yaml --stage infer --set 'infer.inputs=[lfw/images/Colin_Powell]' --set
    infer.output=runs/cp` stopped by Ctrl+C said to run `facekit run walk.yaml --stage infer` again: the recipe's own
    inputs into its own folder, not the run that stopped. The command said is that run's, quoted for a shell."""
    from facekit.pipeline import augment_stopped, evaluate_stage_stopped, infer_stopped

    overrides = ("infer.inputs=[lfw/images/Colin_Powell]", "infer.output=runs/cp")
    again = "facekit run 'my recipe.yaml' --stage infer --set 'infer.inputs=[lfw/images/Colin_Powell]' --set "
    assert infer_stopped("Ctrl+C", 3, 10, "runs/cp", "my recipe.yaml", overrides=overrides) == (
        f"infer stage stopped by Ctrl+C: 3 of 10 photos finished, kept in runs/cp; `{again}infer.output=runs/cp` "
        "goes on with the other 7"
    )
    assert augment_stopped("SIGHUP", 0, 3, "m", "demo", ("augment.count=3",)) == (
        "augment stage stopped by SIGHUP before its first shard of morphs was whole: run `facekit run demo --stage "
        "augment --set augment.count=3` again"
    )
    assert evaluate_stage_stopped("SIGTERM", "e", "demo", ("evaluate.output=e",)).endswith(
        "run `facekit run demo --stage evaluate --set evaluate.output=e` again"
    )


def test_the_infer_stages_note_says_each_status_in_words() -> None:
    """The infer stage's line said its photos without a face by their status names: "12 exists, 1 no_face"."""
    from facekit.batch import Row, Summary
    from facekit.pipeline import infer_note

    statuses = ["ok", "done", "exists", "exists", "no_face", "unreadable", "detector_error", "unwritable"]
    summary = Summary([Row(f"{k}.jpg", status, None) for k, status in enumerate(statuses)])
    assert infer_note(summary, "runs/infer") == (
        "2 of 8 photos have their normalized face in runs/infer; 1 where the detector failed, 2 already there, 1 with "
        "no face found, 1 unreadable, 1 whose outputs could not be written (outputs made with another model, "
        "detector or settings are left alone: set infer.overwrite or infer.output)"
    )
