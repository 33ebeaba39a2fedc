"""The shipped recipes (the repository's recipes/, the wheel's facekit/recipes/) are given by name: `facekit run demo`
works for a user who installed the wheels and has no checkout (before: the recipes were only in the checkout's
recipes/, so every README command that named one failed after `pip install`)."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest

from facekit.errors import FacekitError
from facekit.recipe import find_recipe, load_recipe, recipe_files, recipes_folder, shipped_recipes
from tests.helpers import REPO, run_cli

SHIPPED = REPO / "recipes"
NAMES = sorted(shipped_recipes())


def test_every_recipe_file_in_the_package_has_its_name() -> None:
    assert {SHIPPED / f"{name}.yaml" for name in NAMES} == set(SHIPPED.rglob("*.yaml"))
    assert {"demo", "paper", "default-model", "ablations/no-identity"} <= set(NAMES)
    # one copy: the checkout's (the wheel maps it to facekit/recipes/; a second would drift from the shipped one)
    assert recipes_folder() == SHIPPED and not (REPO / "facekit" / "recipes").exists()


@pytest.mark.parametrize("name", NAMES)
def test_facekit_check_takes_each_shipped_recipe_by_name_from_any_folder(
    name: str, data_root: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """From a folder with no recipes in it, as a user of the wheels runs it; its ``extends`` chain is read from the
    shipped siblings (a shipped ablation's ``../paper.yaml``)."""
    from facekit.cli import main

    monkeypatch.setenv("FACEKIT_DATA", str(data_root.resolve()))
    monkeypatch.chdir(tmp_path)
    assert main(["check", name]) == 0, capsys.readouterr().err
    said = capsys.readouterr().out
    assert f"{name} valid (shipped: {SHIPPED / name}.yaml)" in " ".join(said.split())
    assert all(file.is_relative_to(SHIPPED) for file in recipe_files(name))


def test_a_file_of_the_name_in_the_working_folder_is_the_recipe_meant(
    data_root: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A path always means the file, and so does a name a file there has; a shipped recipe is the name's only when
    there is no such file."""
    monkeypatch.setenv("FACEKIT_DATA", str(data_root.resolve()))
    monkeypatch.chdir(tmp_path)
    assert load_recipe("demo").recipe.description == "facekit demo on the CPU (minutes)"
    Path("demo").write_text("extends: paper\ndescription: mine\n")  # a shipped recipe's name extends it
    assert load_recipe("demo").recipe.description == "mine"
    assert load_recipe("demo").recipe.train.steps == load_recipe("paper").recipe.train.steps
    with pytest.raises(FacekitError, match=r"^recipe not found: demo\.yaml \(a shipped recipe is given by its name"):
        load_recipe("demo.yaml")  # a path, so a file: never the shipped one
    Path("ablations").mkdir()  # a folder is no recipe: the name is the shipped one
    assert find_recipe("ablations/no-identity") == SHIPPED / "ablations" / "no-identity.yaml"


def test_a_file_of_the_working_folder_refused_under_a_shipped_name_says_it_was_read_instead(
    data_root: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`facekit run demo` beside a file called demo that is no recipe (notes, a script) said only "demo: the top level
    must be a mapping of sections": which demo was read, and how to give the shipped one, are said with it."""
    monkeypatch.setenv("FACEKIT_DATA", str(data_root.resolve()))
    monkeypatch.chdir(tmp_path)
    shipped = SHIPPED / "demo.yaml"
    shadow = f"demo (the working folder's file demo, read instead of the shipped recipe of that name: give {shipped})"
    for text, problem in [
        ("- my notes\n", "the top level must be"),
        ("extends: paper\ntrain: {steps: x}\n", "train.steps"),
    ]:
        Path("demo").write_text(text)
        with pytest.raises(FacekitError) as error:
            load_recipe("demo")
        assert str(error.value).startswith(f"{shadow}: 1 problem: {problem}"), str(error.value)
        assert "\n" not in str(error.value)
    Path("demo").unlink()  # the shipped recipe's own refusal is named as before
    with pytest.raises(FacekitError, match=r"^demo: 1 problem: --set train.steps=x"):
        load_recipe("demo", ["train.steps=x"])


def test_a_name_that_is_neither_a_file_nor_shipped_is_one_line_listing_the_shipped_names(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    with pytest.raises(FacekitError) as error:
        find_recipe("demoo")
    said = str(error.value)
    assert "\n" not in said and said.startswith("no recipe file or shipped recipe named 'demoo' (did you mean 'demo'?)")
    assert said.endswith(f"the shipped ones: {', '.join(shipped_recipes())}")
    # The checkout's path to a recipe, typed where there is no checkout, and an extends that named it, say the name.
    with pytest.raises(FacekitError, match=r"recipe not found: recipes/ablations/no-identity\.yaml \(.*: ablations/no"):
        load_recipe("recipes/ablations/no-identity.yaml")
    Path("mine.yaml").write_text("extends: ../recipes/paper.yaml\n")
    with pytest.raises(FacekitError, match=r"shipped recipe is given by its name alone: extends: paper\)"):
        load_recipe("mine.yaml")


def test_facekit_list_recipes_names_each_with_its_description() -> None:
    listing = run_cli("list", "recipes")
    assert listing.returncode == 0, listing.stderr
    rows = {cells[1].strip(): cells[2].strip() for cells in (line.split("│") for line in listing.stdout.splitlines())
            if len(cells) > 3}  # fmt: skip
    assert set(rows) == set(NAMES) and rows["demo"] == "facekit demo on the CPU (minutes)"
    assert all(rows.values()), rows
    assert str(SHIPPED) in listing.stdout  # where to copy one from, to edit it
    assert "apps, recipes" in run_cli("list", "recipez").stderr


def test_a_shipped_recipe_run_by_name_writes_under_the_working_folder(data_root: Path, tmp_path: Path) -> None:
    """Its relative outputs (runs/...) are under the folder the user runs from, never beside the recipe in the
    installed package."""
    before = sorted(SHIPPED.rglob("*"))
    photo = sorted((data_root / "lfw" / "images" / "Adrien_Brody").glob("*.jpg"))[0]
    done = run_cli(
        "run", "demo", "--stage", "infer", "--set", "infer.checkpoint=dlib", "--set", f"infer.inputs=[{photo}]",
        cwd=tmp_path, env={"FACEKIT_DATA": str(data_root.resolve())},
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert (tmp_path / "runs" / "infer" / "demo" / f"{photo.stem}.png").is_file()
    (record,) = (tmp_path / "runs" / "infer" / "demo").rglob("run.json")
    info = json.loads(record.read_text())
    assert info["recipe"] == "demo"  # the name given: `facekit run demo` reruns it
    assert info["recipe_files"][0] == {  # and the file read
        "file": str((SHIPPED / "demo.yaml").resolve()),
        "shipped": "demo",
        "sha256": hashlib.sha256((SHIPPED / "demo.yaml").read_bytes()).hexdigest(),
    }
    assert sorted(SHIPPED.rglob("*")) == before


@pytest.mark.parametrize("name", [name for name in NAMES if name.startswith("ablations/")])
def test_a_shipped_recipe_starts_from_a_model_found_from_any_folder(
    name: str, data_root: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Its train.init is a shipped model by name (or a run of another shipped recipe, under the working folder too):
    before, four ablations named facekit/assets/default-model.safetensors, a path that is there only from the
    checkout's top folder, so `facekit run ablations/hair --stage train` failed from any other folder and for every
    user of the wheels ("train.init: ... is not a readable facekit model")."""
    from facekit.normalize import SHIPPED_MODELS, model_file
    from facekit.pipeline import check_later_stages

    monkeypatch.setenv("FACEKIT_DATA", str(data_root.resolve()))
    monkeypatch.chdir(tmp_path)
    plan = load_recipe(name, ["train.device=cpu"])  # (the paper's ablations train on a GPU)
    init = plan.recipe.train.init
    assert init is None or init in SHIPPED_MODELS or init.startswith("runs/"), init
    if init in SHIPPED_MODELS:
        assert model_file(init).is_file()
        check_later_stages(plan, ["prepare", "train"])  # the run's check before its first stage reads train.init


def test_resuming_a_run_started_from_the_shipped_model_by_path_is_no_change_of_train_init(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A run started (from the checkout) before the ablations named the shipped model by name resumes under them."""
    from facekit.train import recipe_changes

    monkeypatch.chdir(REPO)
    assert (
        recipe_changes({"train": {"init": "facekit/assets/default-model.safetensors"}}, {"train": {"init": "dlib"}})
        == []
    )
    assert recipe_changes(
        {"train": {"init": "facekit/assets/sface-model.safetensors"}}, {"train": {"init": "dlib"}}
    ) == ["train.init"]


def test_a_shipped_name_typed_with_backslashes_as_on_windows_is_that_recipe(
    data_root: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """`facekit check ablations\\no-identity`, as typed on Windows: on Linux and macOS a backslash is no separator, so
    it was "no recipe file or shipped recipe named ..."; a file of that exact name in the working folder is still the
    one meant, and an ``extends:`` so typed names the shipped recipe too."""
    from facekit.cli import main

    monkeypatch.setenv("FACEKIT_DATA", str(data_root.resolve()))
    monkeypatch.chdir(tmp_path)
    shipped = SHIPPED / "ablations" / "no-identity.yaml"
    assert find_recipe("ablations\\no-identity") == shipped
    assert main(["check", "ablations\\no-identity"]) == 0, capsys.readouterr().err
    assert f"(shipped: {shipped})" in " ".join(capsys.readouterr().out.split())
    Path("mine.yaml").write_text("extends: ablations\\no-identity\ndescription: mine\n")
    assert recipe_files("mine.yaml")[1] == shipped
    Path("ablations\\no-identity").write_text("extends: demo\n")  # (a file's name on Linux): the file, as ever
    assert find_recipe("ablations\\no-identity") == Path("ablations\\no-identity")


def test_an_empty_recipe_name_is_said_to_be_empty(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """`facekit check ""` said ". is a folder, not a recipe file" (the empty path is the working folder), and an
    ``extends: ""`` that the recipe's own folder is one."""
    from facekit.cli import main

    monkeypatch.chdir(tmp_path)
    for given in ("", " "):
        assert main(["check", given]) == 2
        said = capsys.readouterr().err.strip()
        assert said.startswith("error: the recipe name is empty: give a recipe file's path or a shipped recipe's name")
        assert said.endswith(f"({', '.join(shipped_recipes())})") and "folder" not in said
    Path("mine.yaml").write_text('extends: ""\n')
    with pytest.raises(FacekitError, match=r"^mine\.yaml: 1 problem: extends: is empty: give another recipe"):
        load_recipe("mine.yaml")


def test_a_misspelled_recipe_file_suggests_the_file_of_its_folder(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """helper-188: `facekit run mine.yam` beside mine.yaml listed the shipped recipes and suggested none of the files
    there: the nearest recipe file of the folder the name points into is suggested (a name without its suffix too),
    beside the shipped name meant."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "sub").mkdir()
    for file in ("mine.yaml", "notes.yml", "sub/mine.yaml", "mine.txt"):
        Path(file).write_text("{}\n")
    listed = f"; the shipped ones: {', '.join(shipped_recipes())}"
    named = "no recipe file or shipped recipe named"
    cases = {
        "mine.yam": f"{named} 'mine.yam' (did you mean 'mine.yaml'?){listed}",
        "mine": f"{named} 'mine' (did you mean 'mine.yaml'?){listed}",
        "sub/mine.yam": f"{named} 'sub/mine.yam' (did you mean 'sub/mine.yaml'?){listed}",
        "mne.yaml": "recipe not found: mne.yaml (did you mean 'mine.yaml'?)",
        "Mine.yaml": "recipe not found: Mine.yaml (did you mean 'mine.yaml'?)",
        "note.yml": "recipe not found: note.yml (did you mean 'notes.yml'?)",
        "demoo": f"{named} 'demoo' (did you mean 'demo'?){listed}",
        "demo.yaml": "recipe not found: demo.yaml (a shipped recipe is given by its name alone: demo)",  # not mine.yaml
        "nowhere/mine.yam": f"{named} 'nowhere/mine.yam'{listed}",
    }
    for given, said in cases.items():
        with pytest.raises(FacekitError) as error:
            find_recipe(given)
        assert str(error.value) == said
    Path("demp.yaml").write_text("{}\n")  # a file and a shipped name alike
    with pytest.raises(
        FacekitError, match=r"^no recipe file or shipped recipe named 'demp' \(did you mean 'demp\.yaml' or 'demo'\?\)"
    ):
        find_recipe("demp")
    with pytest.raises(FacekitError) as error:
        find_recipe("Demp.yaml")
    assert str(error.value) == "recipe not found: Demp.yaml (did you mean 'demp.yaml'?)"


@pytest.mark.parametrize(
    ("given", "meant"),
    [
        ("Demo", "demo"),
        ("PAPER", "paper"),
        ("Ablations/No-Identity", "ablations/no-identity"),
        ("ablations\\NO-IDENTITY", "ablations/no-identity"),
    ],
)
def test_a_shipped_name_in_another_case_is_suggested_never_run(
    given: str, meant: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The did-you-mean was difflib's, case-sensitive: `facekit check PAPER` suggested nothing. Only a suggestion: the
    shipped recipe of another case is not run in its place (a file of that name would be, on a case-insensitive
    file system)."""
    monkeypatch.chdir(tmp_path)
    with pytest.raises(FacekitError) as error:
        find_recipe(given)
    assert str(error.value).startswith(f"no recipe file or shipped recipe named '{given}' (did you mean '{meant}'?);")
    with pytest.raises(FacekitError) as error:
        find_recipe(f"{given}.yaml")
    assert str(error.value) == f"recipe not found: {given}.yaml (a shipped recipe is given by its name alone: {meant})"
    Path("mine.yaml").write_text(f"extends: {given}\n")  # and as the base of a recipe of the user's
    with pytest.raises(FacekitError) as error:
        load_recipe("mine.yaml")
    assert str(error.value).endswith(f"folder; nor a shipped recipe's name: did you mean '{meant}'?)")
    Path("mine.yaml").write_text("extends: nothing-like-it\n")
    with pytest.raises(FacekitError, match=r"folder; nor a shipped recipe's name: facekit list recipes names them\)$"):
        load_recipe("mine.yaml")


def test_a_typo_in_an_extends_file_name_suggests_the_nearest_recipe_file_as_extends_takes_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """helper-188: `extends: bse.yaml` beside base.yaml said the file not found and nothing more, while the same
    typo as a recipe name on the command line got 'did you mean'. The nearest recipe file where it looked is
    suggested, as written after extends: (relative to the recipe's folder), never the recipe itself."""
    monkeypatch.chdir(tmp_path)
    Path("base.yaml").write_text("extends: demo\n")
    (tmp_path / "sub").mkdir()
    for recipe, base, meant in (
        ("mine.yaml", "bse.yaml", "did you mean 'base.yaml'"),
        ("sub/mine.yaml", "../bse.yaml", "did you mean '../base.yaml'"),
        ("mine.yaml", "bse", "nor a shipped recipe's name: did you mean 'base.yaml'"),  # (a name: the file first)
    ):
        Path(recipe).write_text(f"extends: {base}\n")
        with pytest.raises(FacekitError) as error:
            load_recipe(recipe)
        assert str(error.value).endswith(f"relative to this recipe's folder; {meant}?)"), error
    Path("mine.yaml").write_text("extends: mine.yml\n")  # (itself, a cycle: not suggested)
    with pytest.raises(FacekitError, match=r"relative to this recipe's folder\)$"):
        load_recipe("mine.yaml")


def test_bench_refuses_a_grid_not_found_as_a_path_not_a_shipped_name(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """The grids (benchmarks/*.yaml) are not in the wheel: `facekit bench benchmarks/encoders_x_warps.yaml` from
    another folder said "recipe not found" alone, and a grid's name "no ... shipped recipe named", listing the shipped
    recipes, none of which has a grid. Now: the path looked for, and the checkout's grid of that name where there is
    one."""
    from facekit import recipe
    from facekit.cli import main

    monkeypatch.chdir(tmp_path)
    grid = (REPO / "benchmarks" / "encoders_x_warps.yaml").resolve()
    for given in ("benchmarks/encoders_x_warps.yaml", "encoders_x_warps"):
        assert main(["bench", given]) == 2
        said = " ".join(capsys.readouterr().err.split())
        assert said == (
            f"error: grid recipe not found: {given} (looked for {tmp_path / given}: a grid is given by its file's "
            f"path, the bench grids not being installed with facekit; the one of that name in facekit's source "
            f"checkout: {grid})"
        )
    wheel = tmp_path / "site-packages" / "facekit" / "recipes"  # an installed wheel's: no checkout beside it
    wheel.mkdir(parents=True)
    monkeypatch.setattr(recipe, "recipes_folder", lambda: wheel)
    with pytest.raises(FacekitError, match=r"installed with facekit; they are in a source checkout of facekit, bench"):
        recipe.find_grid("benchmarks/encoders_x_warps.yaml")


def test_bench_says_an_empty_grid_path_is_empty_and_lists_the_checkouts_grids(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """`facekit bench ""` said the recipe name was empty and listed the shipped recipes, none of which has a grid; and
    a grid not found, run from facekit's source checkout, said the grids "are in a source checkout of facekit". Now
    the empty path is said as `facekit run ""` says it, and both name the checkout's grids (or, from a wheel, where
    they are)."""
    from facekit import recipe
    from facekit.cli import main

    monkeypatch.chdir(tmp_path)
    grids = ", ".join(str(file) for file in sorted((REPO / "benchmarks").resolve().glob("*.yaml")))
    for given in ("", " "):
        assert main(["bench", given]) == 2
        said = " ".join(capsys.readouterr().err.split())
        assert said == (
            "error: the grid recipe's path is empty: give a bench grid's file path (facekit's source checkout has "
            f"{grids})"
        )
    assert main(["bench", "no-such-grid.yaml"]) == 2
    assert " ".join(capsys.readouterr().err.split()).endswith(
        f"not being installed with facekit; facekit's source checkout has {grids})"
    )
    wheel = tmp_path / "site-packages" / "facekit" / "recipes"  # an installed wheel's: no checkout beside it
    wheel.mkdir(parents=True)
    monkeypatch.setattr(recipe, "recipes_folder", lambda: wheel)
    with pytest.raises(FacekitError) as error:
        recipe.find_grid("")
    assert str(error.value) == (
        "the grid recipe's path is empty: give a bench grid's file path (they are in a source checkout of facekit, "
        "benchmarks/*.yaml)"
    )
