"""The ``facekit`` command line: thin Typer commands over the Python API.

Known errors (:class:`~facekit.errors.FacekitError`) print one line and exit 2 (recipe problems: `facekit check`'s
list, or one of them as `facekit run` and the stage commands refuse it) or 1 (anything else);
``FACEKIT_DEBUG=1`` shows the traceback instead. Unknown errors are bugs and propagate.
"""

from __future__ import annotations

import atexit
import errno
import gc
import inspect
import os
import re
import stat
import sys
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.cells import cell_len
from rich.console import Console
from rich.segment import SegmentLines
from rich.table import Table
from rich.text import Text
from rich.tree import Tree

import facekit
from facekit.apps import FUSE_WEIGHT, FuseChoice, Mapping, Only, Region
from facekit.detail import FOREHEAD_LIMIT, DetailSettings, detail_settings
from facekit.errors import (
    ENVIRONMENT_ERRNOS,
    ComponentNotFoundError,
    FacekitError,
    Interrupted,
    ParamsError,
    Problem,
    Terminated,
    debug_requested,
    did_you_mean,
    sigterm_raises,
    stops_said,
)
from facekit.types import FACE_CHOICE_HELP, KINDS, FaceChoice, face_record


def option_value_message(error: typer.BadParameter) -> str:
    """What a value Typer refused for an option or argument is said as: in the words a recipe's or a ``--set``'s
    refused value is (:func:`facekit.registry.pydantic_problems`), "must be 'largest' or 'central' (got 'middle')",
    "must be from 0 to 2 (got 3)", "must be a whole number (got 'abc')". Typer parses values with pydantic, whose
    words reached the user ("Value error, 'middle' is not one of 'largest', 'central'.", "Input should be less than
    or equal to 2"). A refusal that is not pydantic's (an option's own check: ``-o ""``) is kept as it is."""
    from pydantic import ValidationError

    from facekit.registry import _BOUND_WORDS, _refused_value

    cause = error.__cause__
    if not isinstance(cause, ValidationError) or not cause.errors():
        return error.message
    first = cause.errors()[0]
    kind, given, context = first["type"], first.get("input"), first.get("ctx") or {}
    if kind == "value_error":  # Typer's own check, a choice: "'middle' is not one of 'largest', 'central'."
        said = str(context.get("error", first["msg"].removeprefix("Value error, ")))
        choice = re.fullmatch(r"(.+) is not one of ('.*')\.", said)
        if choice is None:
            return said.rstrip(".")
        choices = re.findall(r"'([^']*)'", choice[2])
        listed = " or ".join(", ".join(repr(c) for c in choices).rsplit(", ", 1))
        hint = did_you_mean(str(given), choices)
        return f"must be {listed} (got {choice[1]}){'; ' + hint if hint else ''}"
    if kind in _BOUND_WORDS and kind != "multiple_of":  # a number, so shown as typed (an option's min and max)
        low, high = getattr(error.param, "min", None), getattr(error.param, "max", None)
        if low is not None and high is not None:
            return f"must be from {low:g} to {high:g} (got {given})"
        bound = next(iter(context.values()))
        return f"must be {_BOUND_WORDS[kind]} {bound:g} (got {given})"
    return _refused_value(kind, context, first["msg"], given)


#: ``--help``'s own help, in the style of every other option's (a few words, lower case, no full stop: helper-232;
#: Typer's is "Show this message and exit.").
HELP_HELP = "show this message and exit"


class FacekitGroup(typer.core.TyperGroup):
    """The ``facekit`` command group and its groups (models, explore): every command's refused option values
    (:func:`option_value_message`) said in facekit's words. A subcommand's options are parsed inside its group's
    ``invoke``, so the top group's covers every command, the plugins' and the nested groups' included; Typer still
    prints it in its box, exit 2. Each command's ``--help`` reads as its other options do (:data:`HELP_HELP`)."""

    def invoke(self, ctx: Any) -> Any:
        try:
            return super().invoke(ctx)
        except typer.BadParameter as error:
            error.message = option_value_message(error)
            raise

    def get_help_option(self, ctx: Any) -> Any:
        option = super().get_help_option(ctx)
        if option is not None:
            option.help = HELP_HELP
        return option

    def get_command(self, ctx: Any, cmd_name: str) -> Any:
        # (the help option is made once per command and kept: the one its own --help and its help page show)
        command = super().get_command(ctx, cmd_name)
        option = command.get_help_option(ctx) if command is not None else None
        if option is not None:
            option.help = HELP_HELP
        return command


app = typer.Typer(
    cls=FacekitGroup,
    name="facekit",
    help="Turn face photos into normalized faces: frontal, neutral, evenly lit, same identity.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


def _console(stderr: bool) -> Console:
    """A terminal's console is rich's own (lines wrap at the window's width). Piped output (a log, CI, grep) gets
    tables 160 columns wide instead of rich's 80-column default, so names are not folded, and every line whole
    (soft wrap): a message or path longer than 160 columns was cut in two there, and grep for it in the log failed.
    Markup is off: file names, recipe values and messages are the user's ("photo [edited].jpg" prints as it is, a
    name like "[/]" cannot break a table); colour comes from Text styles only."""
    terminal = (sys.stderr if stderr else sys.stdout).isatty()
    return Console(stderr=stderr, width=None if terminal else 160, soft_wrap=not terminal, markup=False)


console = _console(stderr=False)
#: The columns of a per-photo status table (:func:`report_rows`).
STATUS_COLUMNS = ("photo", "status", "output or reason")
err_console = _console(stderr=True)


def print_block(block: Table | Tree) -> None:
    """A table or tree on stdout. In a terminal, rich's. In a log (lines unwrapped: :func:`_console`), rich still
    lays both out to the console's 160 columns: a table keeps them (its cells fold as in a terminal, its title and
    caption centred over it; one wider than the console comes out whole, on its own line), and a tree, whose lines
    rich cut at that width, gets the width its longest line needs, each line whole."""
    if not console.soft_wrap:
        console.print(block)
    elif isinstance(block, Table):
        notes = [note for note in (block.title, block.caption) if note]
        console.print(block, soft_wrap=any(cell_len(str(note)) > console.width for note in notes))
    else:
        unbounded = console.options.update(width=sys.maxsize, no_wrap=True, overflow="ignore")
        width = max(console.width, console.measure(block, options=unbounded).maximum)
        lines = console.render_lines(block, unbounded.update_width(width), pad=False)
        console.print(SegmentLines(lines, new_lines=True))


def say_error(message: str, label: str = "error") -> None:
    """``label: message`` on stderr, the label red, the message as it is."""
    err_console.print(Text.assemble((label, "red"), f": {message}"), highlight=False, soft_wrap=True)


KIND_ALIASES = {f"{k}s": k for k in KINDS} | {k: k for k in KINDS}
#: What a command's recipe argument takes (facekit.recipe.find_recipe).
RECIPE_HELP = "recipe YAML file, or a shipped recipe's name (facekit list recipes)"


class PhotosStopped:
    """What a photo command (normalize, adjust, attributes, avatar) stopped by Ctrl+C, SIGTERM or SIGHUP says: how
    many of its photos it finished, kept in ``out``, and that the same command run again goes on with the rest (each
    skips the photos whose outputs it finds made with the same settings, status 'done', and attributes keeps their
    rows). Before: the CLI's one line listing what every command does. :meth:`saying` is the block that says it,
    from after the photos are planned (``total`` of them; a stop before has written nothing); :meth:`counting` counts
    each finished photo (each row; where ``finished`` is given, each row it says is: the rows of a photo its rerun
    does again, normalize's, adjust's and avatar's without outputs, no face found or unreadable, attributes' unreadable
    or unwritable, are not said finished; attributes' rows of a photo without a face it keeps, and they are)."""

    def __init__(self, command: str, out: str, total: int, finished: Callable[[Any], bool] | None = None) -> None:
        self.command, self.out, self.total, self.finished = command, out, total, finished
        self.done = 0
        self.without = 0  # rows of photos left without outputs, which the rerun looks at again

    def counting(self, on_row: Callable[[Any], object]) -> Callable[[Any], None]:
        """``on_row`` (the progress bar's advance), each row counted first (its outputs are written by then)."""

        def counted(row: Any) -> None:
            if self.finished is None or self.finished(row):
                self.done += 1
            else:
                self.without += 1
            on_row(row)

        return counted

    @contextmanager
    def bar(self, label: str) -> Iterator[Callable[[Any], None]]:
        """A progress bar over the ``total`` photos, ``label`` on it; yields the ``on_row`` that counts each row and
        moves the bar."""
        from facekit.progress import Progress

        with Progress(console=console, transient=True) as progress:
            task = progress.add_task(label, total=self.total, unit="photo")
            yield self.counting(lambda row: progress.advance(task))

    def line(self, by: str) -> str:
        if not self.done:  # (stopped while the model loads, or before its first photo's outputs)
            return f"{self.command} stopped by {by} before its first photo was done: run the same command again"
        rest = self.total - self.done
        said = f"{self.command} stopped by {by}: {self.done} of {self.total} photos finished, kept in {self.out}"
        if rest <= 0:
            return said
        from facekit.batch import without_output

        return f"{said}; run the same command again to go on with the other {rest}{without_output(self.without)}"

    @contextmanager
    def saying(self) -> Iterator[PhotosStopped]:
        with stops_said(self.line):
            yield self


def report_rows(title: str, columns: Sequence[str], rows: Sequence[Sequence[str]], summary: str, failed: int) -> None:
    """The end of every per-photo command: a status table (a row per photo), one summary line, and exit code 3
    (``EXIT_SOME_FAILED``) when ``failed`` photos got no output."""
    from facekit.batch import EXIT_SOME_FAILED

    table = Table(title=title)
    for column in columns:
        table.add_column(column, overflow="fold")
    for row in rows:  # file names are the user's: plain text (the consoles' markup is off)
        table.add_row(*(str(cell) for cell in row))
    print_block(table)
    console.print(summary)
    if failed:
        raise typer.Exit(EXIT_SOME_FAILED)


def _version(value: bool) -> None:
    if value:
        console.print(f"facekit {facekit.__version__}")
        raise typer.Exit()


@app.callback()
def main_callback(
    version: Annotated[
        bool, typer.Option("--version", callback=_version, is_eager=True, help="show the version and exit")
    ] = False,
) -> None:
    """facekit: normalized faces from identity features."""


@app.command()
def plugins() -> None:
    """List the loaded plugins, those left out and any that failed to load. Each loaded one with its distribution,
    version and hooks; each left out with FACEKIT_PLUGINS or FACEKIT_DISABLE_PLUGINS, whichever left it out (and
    names there no plugin has)."""
    from facekit.plugins import get_plugin_state

    state = get_plugin_state()
    table = Table(title="facekit plugins")
    for column in ("name", "distribution", "version", "hooks"):
        table.add_column(column)
    for info in state.plugins:
        table.add_row(info.name, info.distribution, info.version, ", ".join(info.hooks))
    print_block(table)
    for skipped in dict.fromkeys(state.skipped):  # a distribution twice on sys.path: one line
        console.print(f"skipped: {skipped.name} ({skipped.distribution}), left out by {skipped.by}")
    installed = state.installed
    for variable, name in state.unknown_names:
        hint = did_you_mean(name, installed, cutoff=0.7)
        say_error(
            f"{variable} names {name!r}, which no installed plugin is called{'; ' + hint if hint else ''} "
            f"(installed: {', '.join(installed) or 'none'})",
            "warning",
        )
    from facekit.plugins import ENTRY_POINT_GROUP, misgrouped_entry_points, quiet_plugin_warnings
    from facekit.registry import HOOK_FAILURES, get_registries

    for group, name, distribution in misgrouped_entry_points():  # Python ignores them: the plugin never loads
        say_error(
            f"{distribution} declares entry point {name!r} in group {group!r}, which facekit does not read: declare "
            f"it under [project.entry-points.{ENTRY_POINT_GROUP}] in its pyproject.toml and reinstall it",
            "warning",
        )

    for info in state.plugins:  # (helper-223: listed with an empty hooks cell, registering nothing, and no word why)
        if not info.hooks:
            say_error(
                f"plugin {info.name!r} ({info.distribution}) implements no facekit hook: its entry point names "
                f"{info.module}, in which no function is marked @facekit.hookimpl; point the entry point at the module "
                "that defines its register_* hooks and reinstall it",
                "warning",
            )
    with quiet_plugin_warnings():  # each failure is said once, below
        get_registries()  # runs every plugin's registration hooks: a hook that raises is reported here
    messages = [failure.message() for failure in state.failures] + HOOK_FAILURES + COMMAND_FAILURES
    for message in messages:
        say_error(message, "load error")
    if messages:
        raise typer.Exit(1)


@app.command("list")
def list_command(
    kind: Annotated[
        str | None,
        typer.Argument(
            help="detectors, encoders, decoders, warpers, apps or recipes (default: every kind of component, "
            "not the recipes)"
        ),
    ] = None,
) -> None:
    """List the registered components, or the shipped recipes. Each component with the plugin that provides it and
    its model-card fields; each recipe by the name check, run and the other recipe commands take."""
    from facekit.registry import get_registry

    if kind in ("recipes", "recipe"):
        _list_recipes()
        return
    if kind is not None and kind not in KIND_ALIASES:
        choices = ", ".join([*(f"{k}s" for k in KINDS), "recipes"])
        raise FacekitError(f"unknown kind {kind!r}; choose one of: {choices}")
    kinds = [KIND_ALIASES[kind]] if kind else list(KINDS)
    table = Table(title="facekit components")
    for column in ("kind", "name", "plugin", "summary", "card"):
        table.add_column(column, overflow="fold")
    for k in kinds:
        for spec in get_registry(k):  # type: ignore[arg-type]
            card = spec.card.summary_fields() if spec.card else {}
            table.add_row(k, spec.name, spec.plugin, spec.summary, "\n".join(f"{a}: {b}" for a, b in card.items()))
    print_block(table)


def _list_recipes() -> None:
    """The shipped recipes: name and description, and the folder their files are in (to copy one and edit it)."""
    from facekit.recipe import read_recipe, shipped_recipes

    shipped = shipped_recipes()
    folder = next(iter(shipped.values())).parent
    table = Table(title="facekit recipes", caption=f"files: {folder}/NAME.yaml (facekit check NAME prints one)")
    for column in ("name", "description"):
        table.add_column(column, overflow="fold")
    for name, file in shipped.items():
        table.add_row(name, str(read_recipe(file).get("description", "")))
    print_block(table)


SetOption = Annotated[
    list[str] | None, typer.Option("--set", "-s", help="override a recipe value: --set train.steps=100 (repeatable)")
]


@app.command()
def check(
    recipe: Annotated[str, typer.Argument(help=RECIPE_HELP)],
    stage: Annotated[
        list[str] | None,
        typer.Option(
            "--stage",
            help="the stages `facekit run --stage` would run (repeatable; default: those a plain `facekit run` runs): "
            "prepare, augment, train, evaluate or infer",
        ),
    ] = None,
    set_: SetOption = None,
) -> None:
    """Validate a recipe and show the resolved plan (components, params, stages) as a tree. Refuses what `facekit
    run` with the same --stage and --set would refuse from the settings alone (before it reads data or loads a
    model); what the machine lacks (a GPU, weights, photos) is left to run."""
    from facekit.pipeline import run_refusals, stages_to_run
    from facekit.recipe import find_recipe, load_recipe

    stages_to_run(stage)  # an unknown --stage: refused as by `facekit run`, before the recipe is read
    # (and what `facekit run --stage ...` would refuse: a stage that does not run refuses nothing)
    plan = load_recipe(recipe, overrides=set_ or [], checks=lambda plan: run_refusals(plan, stage))
    file = find_recipe(recipe)
    shipped = f" (shipped: {file})" if file != Path(recipe) else ""  # where to copy it from, to edit it
    tree = Tree(Text.assemble((recipe, "bold"), " ", ("valid", "green"), shipped))
    comps = tree.add("components")
    # Training gives the decoder the encoder's feature size whatever the recipe says (facekit.train.build_decoder):
    # show that value, from the encoder's card, rather than the decoder's default.
    encoder = plan.components.get("encoder")
    encoder_features = encoder.spec.card.feature_size if encoder is not None and encoder.spec.card else None
    for slot, resolved in plan.components.items():
        node = comps.add(Text.assemble(f"{slot}: ", (resolved.spec.name, "cyan"), f" ({resolved.spec.plugin})"))
        for key, value in resolved.params.model_dump().items():
            if slot == "decoder" and key == "feature_size" and encoder_features and value != encoder_features:
                node.add(f"{key} = {encoder_features!r} (the encoder's; training replaces the recipe's {value!r})")
            else:
                node.add(f"{key} = {value!r}")
    data = plan.to_dict()
    for section in ("data", "prepare", "augment", "train", "infer", "evaluate", "bench"):
        _add_mapping(tree.add(section), data[section])
    # Where the relative paths lead: data.root unset means $FACEKIT_DATA or the default, outputs are under the
    # folder the command runs in.
    root = plan.recipe.data.resolved_root()
    tree.add(f"data is read from {root.resolve()}; relative outputs are under {Path.cwd()}")
    print_block(tree)
    _warn_unused_settings(plan.unused_settings(stages=stage))  # (as `facekit run` warns)


def _warn_unused_settings(lines: list[str]) -> None:
    """Say each of a recipe's unused settings (Plan.unused_settings) in yellow, on stderr."""
    for line in lines:
        _say_warning(line)


def _say_warning(line: str) -> None:
    """``warning: line`` in yellow on stderr, as the commands' other warnings."""
    err_console.print(f"warning: {line}", style="yellow", highlight=False, soft_wrap=True)


def _add_mapping(node: Tree, value: Any) -> None:
    if isinstance(value, dict):
        for key, item in value.items():
            scalars = isinstance(item, list) and not any(isinstance(v, (dict, list)) for v in item)
            if isinstance(item, (dict, list)) and item and not scalars:
                _add_mapping(node.add(str(key)), item)
            else:
                node.add(f"{key} = {item!r}")
    elif isinstance(value, list):
        for i, item in enumerate(value):
            if isinstance(item, (dict, list)):
                _add_mapping(node.add(f"[{i}]"), item)
            else:  # (a list of scalars and mappings, bench.judges' names beside {name, params}: before, "[0]" alone)
                node.add(f"[{i}] = {item!r}")


@app.command()
def run(
    recipe: Annotated[str, typer.Argument(help=RECIPE_HELP)],
    stage: Annotated[
        list[str] | None,
        typer.Option(
            "--stage",
            help="prepare, augment, train, evaluate or infer (repeatable; default: every stage with something to do: "
            "not augment when augment.enabled is false or augment.count 0, nor infer when infer.inputs is empty)",
        ),
    ] = None,
    set_: SetOption = None,
    resume: Annotated[bool, typer.Option(help="continue train.output's last checkpoint")] = False,
) -> None:
    """Run a recipe's stages (by default every one with something to do) and print the run folders written. Exit 3
    when the infer stage left some photos without a normalized face (as `facekit normalize`)."""
    from facekit.batch import EXIT_SOME_FAILED
    from facekit.pipeline import RunOptions, run_plan
    from facekit.recipe import load_recipe
    from facekit.runs import is_rank_zero

    plan = load_recipe(recipe, overrides=set_ or [])
    # Under torchrun every rank runs this command: rank 0 alone says the warnings and what each stage wrote (before,
    # each rank did, and rank 1's train line, read before rank 0 saved the last step, said "step 0 of train.steps").
    speaks = is_rank_zero()
    if speaks:
        _warn_unused_settings(plan.unused_settings(stages=stage))  # (all stages run without --stage)

    def said(done: Any) -> None:  # as each stage ends: a later stage's failure leaves the finished ones said
        # (one line however long, in a log too: grep finds it whole; helper-175's loss summary made it pass 160)
        if speaks:
            console.print(f"{done.stage}: {done.note or f'wrote {done.path}'}", soft_wrap=True)

    results = run_plan(plan, stage, RunOptions(resume=resume), said)
    if any(result.failed for result in results):
        raise typer.Exit(EXIT_SOME_FAILED)


@app.command()
def prepare(
    recipe: Annotated[str, typer.Argument(help=f"{RECIPE_HELP}: its data, prepare and components.detector")],
    shard: Annotated[str, typer.Option(help="process every n-th identity: i/n (a cluster splits the work)")] = "0/1",
    set_: SetOption = None,
) -> None:
    """Build a recipe's training set: detect, filter, align, average per person, textures (resumable)."""
    from facekit.data.prepare import Shard, check_preparable, run_prepare
    from facekit.recipe import load_recipe
    from facekit.runs import finish_run, start_run

    plan = load_recipe(recipe, overrides=set_ or [])
    _warn_unused_settings(plan.unused_settings(stages=["prepare"]))  # its own stage's settings alone
    parsed = Shard.parse(shard)
    groups = check_preparable(plan)  # a refused run leaves no folder and no run record
    runs = []

    def record() -> None:  # its run record, under the shard's lock: a prepare refused as another's leaves none
        runs.append(start_run(plan, "prepare", f"{plan.recipe.prepare.output}/runs"))

    report = run_prepare(plan, shard=parsed, progress=True, groups=groups, on_locked=record)
    run = runs[0]
    console.print(
        f"processed {report.processed_identities} identities ({report.processed_photos} photos) "
        f"in {report.seconds:.1f} s"
        + (f", {report.processed_photos / report.seconds:.2f} photos/s" if report.processed_photos else "")
    )
    if not report.finished:
        finish_run(run)
        console.print(f"shard {shard} done; the dataset is built when every shard has run: {report.output}")
        return
    summary = report.summary
    table = Table(title=f"prepare: {report.output}")
    table.add_column("status / reason")
    faces = summary.get("faces_kept", 0) != summary.get("photos_kept", 0)  # keep_all_faces: kept rows are faces
    table.add_column("faces (and photos without one)" if faces else "photos", justify="right")
    for status, count in sorted(summary["status"].items()):
        table.add_row(status, str(count))
    for reason, count in sorted(summary["reasons"].items(), key=lambda item: -item[1]):
        table.add_row(f"  rejected: {reason}", str(count))
    print_block(table)
    from facekit.pipeline import prepare_note

    # Nobody kept: a FacekitError, as from `facekit run`; the run folder is left unfinished, as there.
    prepare_note(summary, str(report.output))
    finish_run(run)
    console.print(
        f"{summary['identities_kept']} averaged identities from {summary.get('photos_kept', '?')} of "
        f"{summary['photos']} photos ({', '.join(f'{k}: {v}' for k, v in summary.get('sources', {}).items())}); "
        f"contact sheet: {report.output / 'contact_sheet.png'}"
    )


def output_folder(value: str | None) -> str | None:
    """``-o``'s check: an empty value (``-o ""``, an unset shell variable) is a usage error rather than the current
    folder."""
    if value is not None and not value.strip():
        raise typer.BadParameter("an empty output folder; give one (-o . for the current folder)")
    return value


#: ``--face``: which face of a photo with several each command takes (:func:`facekit.normalize.choose_face`).
FaceOption = Annotated[FaceChoice, typer.Option(help=FACE_CHOICE_HELP)]
#: ``--device`` of every command that runs the normalizer (normalize, adjust, attributes, explore, eval; the avatar
#: and serve plugins' too): where its encoder and decoder run. Each command checks it with
#: :func:`facekit.normalize.inference_device` before its slow work (model loads, Gradio), so a wrong one costs a second.
DeviceOption = Annotated[str, typer.Option(help="cpu, cuda, cuda:N, mps, xpu or auto (a GPU when one is visible)")]


#: ``--overwrite`` of the commands that write per-photo outputs into -o (its help says the default once).
OverwriteOption = Annotated[
    bool, typer.Option(help="replace outputs already in -o (default: leave them)", show_default=False)
]
#: ``--overwrite`` of adjust (and avatar's, in its plugin): what is already made from the same photo and settings
#: stays 'done' either way (helper-65: the help said it replaced every output; attributes' does measure again).
REDO_HELP = (
    "replace outputs in -o made from another input or other settings, or not by facekit (default: leave them, "
    "status 'exists'); outputs of this photo with these settings stay 'done': delete them to make them again"
)
PhotoOverwriteOption = Annotated[bool, typer.Option(help=REDO_HELP, show_default=False)]


@app.command()
def normalize(
    photos: Annotated[list[str], typer.Argument(help="photos or folders of photos")],
    out: Annotated[str, typer.Option("--out", "-o", help="output folder", callback=output_folder)] = "normalized",
    checkpoint: Annotated[str | None, typer.Option(help="trained model file (default: the shipped --model)")] = None,
    model: Annotated[
        str | None, typer.Option(help="a shipped model by its encoder: dlib (default) or sface (facekit models list)")
    ] = None,
    batch_size: Annotated[int, typer.Option(min=1, help="photos read, normalized and written at a time")] = 16,
    overwrite: Annotated[
        bool,
        typer.Option(
            help="replace outputs that differ from what this run writes: made from another input, model or settings, "
            "or files facekit did not make (default: leave them, status 'exists')",
            show_default=False,
        ),
    ] = False,
    inside_inputs: Annotated[
        bool, typer.Option(help="allow -o inside an input folder (it is then skipped when scanning)")
    ] = False,
    device: DeviceOption = "cpu",
    detail: Annotated[
        float | None,
        typer.Option(
            min=0.0,
            max=2.0,
            help=f"strength of the photo's fine detail on the face (0: the decoder's face alone, shape included; "
            f"default {DetailSettings().strength:g} behind a 68-point detector, else 0)",
        ),
    ] = None,
    detail_shape: Annotated[
        float | None,
        typer.Option(
            min=0.0,
            max=1.0,
            help=f"how far the face's jaw, brows, nose and eyes move towards the photo's own shape (0: the decoder's "
            f"landmarks; default {DetailSettings().shape:g})",
        ),
    ] = None,
    detail_forehead: Annotated[
        float | None,
        typer.Option(
            min=0.0,
            max=FOREHEAD_LIMIT,
            help=f"how far above the brows the photo's detail reaches, in interocular distances (0: the landmarks' "
            f"hull, brows to chin; default {DetailSettings().forehead:g}: forehead and hairline)",
        ),
    ] = None,
    face: FaceOption = FaceChoice.LARGEST,
    size: Annotated[
        int | None,
        typer.Option(
            min=32,
            max=1024,
            help="side of the output in pixels (default: the model's own, 112 for the shipped models): the "
            "decoder's face is resampled and the photo's detail taken at this size, so a larger output holds finer "
            "detail where the photo has it",
        ),
    ] = None,
) -> None:
    """Normalize one face of each photo (the largest, or --face central). Writes OUT/NAME.png, NAME.json (landmarks,
    hashes), NAME_side.png, manifest.jsonl and grid.png. Exit 0 when every photo has its output, 3 when some have
    none (see the table)."""
    from facekit.batch import FINISHED, normalize_planned, plan_folder
    from facekit.normalize import Normalizer, inference_device, resolve_model
    from facekit.progress import PhotoCount, Progress

    # Bad inputs or -o are reported before the model loads.
    plan = plan_folder(photos, out, batch_size, inside_inputs, inside_option="--inside-inputs")
    stopped = PhotosStopped("normalize", out, len(plan.planned), lambda row: row.status in FINISHED)
    with stopped.saying():
        path = resolve_model(model, checkpoint)
        runs_on = inference_device(device)
        settings = detail_settings(detail, detail_shape, detail_forehead)  # None: the library's default, by detector
        normalizer = Normalizer.from_checkpoint(path, device=runs_on, detail=settings, face=face.value, size=size)
        with Progress(console=console, transient=True) as progress:
            task = progress.add_task("normalizing", total=len(plan.planned), unit="photo")
            with PhotoCount(progress, task) as count:  # moved per photo, as its detection ends, not per batch
                on_row = stopped.counting(count.row)
                summary = normalize_planned(
                    normalizer, plan, path, overwrite, on_row=on_row, on_detected=count.detected
                )
    done = len(summary.rows) - summary.failed
    grid = f"; grid: {summary.grid}" if summary.grid else f"; {summary.grid_left}" if summary.grid_left else ""
    report_rows(
        f"facekit normalize -> {out}",
        STATUS_COLUMNS,
        [(row.input, row.status, row.output or row.reason) for row in summary.rows],
        f"{done} of {len(summary.rows)} photos have their normalized face in {out}{grid}",
        summary.failed,
    )


def _corrector(method: str, params: dict[str, Any]) -> Any:
    """The app named ``method`` if it corrects photos (its params take ``strength``, it has ``correct(photo)``);
    an app that does something else (attributes, avatar) is named as such, with the methods there are."""
    import facekit

    apps = facekit.get_registry("app")

    def corrects(name: str) -> bool:
        return "strength" in apps.get(name).params.model_fields

    methods = [name for name in apps.names() if corrects(name)]
    try:  # two plugins registering it is their error (DuplicateComponentError), not "no such method"
        spec = apps.get(method)
    except ComponentNotFoundError:  # the methods there are, not every app (attributes, avatar, explore)
        hint = did_you_mean(method, methods)
        raise FacekitError(
            f"--method {method}: no such method; methods: {', '.join(methods)}{'; ' + hint if hint else ''}"
        ) from None
    if "strength" in spec.params.model_fields:
        corrector = spec.build(params, kind="app", asked_for=f"--method {method}")
        if callable(getattr(corrector, "correct", None)):
            return corrector
    raise FacekitError(f"--method {method}: the {method} app does not correct photos; methods: {', '.join(methods)}")


def _as_options(problems: Sequence[Problem]) -> str:
    """Problems of an app's params said in the command line's options, which are its settings' names with dashes:
    "--refine: works in linear light and needs --mapping gains; ...", not the params' "refine: ... mapping gains"
    (the settings a cross-field rule reads, its ``about``, are named in its message); a rule's problems at several
    settings in one line ("--fuse, --refine: ...")."""
    said: dict[str, list[str]] = {}
    for problem in problems:
        message = problem.message
        for name in problem.about:
            message = re.sub(rf"\b{re.escape(name)}\b", f"--{name.replace('_', '-')}", message)
        options = said.setdefault(message, [])
        options += [f"--{problem.path.replace('_', '-')}"] if problem.path else []
    return "; ".join(f"{', '.join(options)}: {message}" if options else message for message, options in said.items())


@app.command()
def adjust(
    photos: Annotated[list[str], typer.Argument(help="photos or folders of photos")],
    out: Annotated[str, typer.Option("--out", "-o", help="output folder", callback=output_folder)] = "adjusted",
    method: Annotated[
        str,
        typer.Option(
            help="adjust (from the normalized face), gray-world, white-patch, shades-of-gray, gray-edge or xphoto "
            "(OpenCV's learning-based white balance)"
        ),
    ] = "adjust",
    strength: Annotated[float, typer.Option(min=0.0, max=1.0, help="0: unchanged .. 1: the full correction")] = 1.0,
    only: Annotated[Only, typer.Option(help="both, white-balance or exposure (adjust only)")] = "both",
    all_faces: Annotated[
        bool, typer.Option(help="average every face found (default: one face, see --face)", show_default=False)
    ] = False,
    face: FaceOption = FaceChoice.LARGEST,
    checkpoint: Annotated[str | None, typer.Option(help="model file for adjust (default: the shipped --model)")] = None,
    model: Annotated[
        str | None, typer.Option(help="adjust: a shipped model by its encoder: dlib (default) or sface")
    ] = None,
    mapping: Annotated[
        Mapping, typer.Option(help="adjust: gains (von Kries in linear RGB) or ycrcb (the paper's YCrCb map)")
    ] = "gains",
    region: Annotated[
        Region, typer.Option(help="adjust: skin (cheeks and forehead) or box (the paper's central face box)")
    ] = "skin",
    fuse: Annotated[
        FuseChoice,
        typer.Option(
            help="adjust: combine the face's white balance with global estimators': agreement (each weighted by how "
            "well it agrees with the face), one of white-patch, gray-world, shades-of-gray, gray-edge (mixed at "
            "--fuse-weight), or none (the face alone); auto: white-patch with --mapping gains, else none"
        ),
    ] = "auto",
    fuse_weight: Annotated[
        float | None,
        typer.Option(
            min=0.0,
            max=1.0,
            help=f"adjust: the face's share when fused with one named estimator (default: {FUSE_WEIGHT})",
        ),
    ] = None,
    refine: Annotated[
        int,
        typer.Option(
            min=0, max=3, help="adjust: rounds of normalizing the face again from the corrected photo (--mapping gains)"
        ),
    ] = 0,
    overwrite: PhotoOverwriteOption = False,
    device: DeviceOption = "cpu",
) -> None:
    """Correct the white balance and exposure of whole photos from their normalized face (paper Sec. 7.4). Writes
    OUT/NAME.jpg for a JPEG, else OUT/NAME.png (BMP, TIFF, WebP and GIF too; a 16-bit PNG or RGB TIFF as a 16-bit
    PNG), in RGB (an 8-bit grey photo in grey while it stays grey), ICC profile and EXIF kept; NAME_before_after.png
    and NAME.json (the shift, the face used). A photo without a face is left unchanged. Exit 3 when some photos were
    not adjusted."""
    from facekit.apps.adjust import ADJUST_OUTPUTS, FINISHED, adjust_files
    from facekit.batch import plan_folder

    plan = plan_folder(photos, out, outputs=ADJUST_OUTPUTS)  # bad inputs or -o are reported before any model loads
    params: dict[str, Any] = {"strength": strength}
    given = {
        "--only": only != "both",
        "--all-faces": all_faces,
        "--face": face != FaceChoice.LARGEST,
        "--checkpoint": checkpoint is not None,
        "--model": model is not None,
        "--mapping": mapping != "gains",
        "--region": region != "skin",
        "--fuse": fuse != "auto",
        "--fuse-weight": fuse_weight is not None,
        "--refine": refine != 0,
        "--device": device != "cpu",
    }
    if method != "adjust" and any(given.values()):
        named = [flag for flag, set_ in given.items() if set_]
        what, them = ("an option", "it") if len(named) == 1 else ("options", "them")
        raise FacekitError(
            f"{', '.join(named)}: {what} of --method adjust only; {method} estimates from the whole photo: leave "
            f"{them} out"
        )
    if method == "adjust":  # its params check --only, --mapping and --fuse
        from facekit.normalize import SHIPPED_MODELS

        if model not in (None, next(iter(SHIPPED_MODELS))):  # by name; the default's records stay as before
            params.update(model=model)
        params.update(only=only, all_faces=all_faces, mapping=mapping, checkpoint=checkpoint, region=region)
        if face_record(face) is not None:  # given only when not the largest: records made before --face stay "done"
            params.update(face=face.value)
        if fuse_weight is not None and fuse in ("none", "agreement"):  # neither mixes by a fixed share
            raise FacekitError(f"--fuse-weight: the face's share beside one estimator; --fuse {fuse} takes none")
        mixing = [flag for flag in ("--fuse", "--fuse-weight") if given[flag]]
        if only == "exposure" and mixing:  # (before: accepted and unused)
            raise FacekitError(
                f"{' and '.join(mixing)}: the white balance's mix of the face and the scene; --only exposure corrects "
                "no white balance (the exposure is the face's alone)"
            )
        weight = FUSE_WEIGHT if fuse_weight is None else fuse_weight  # in the records as before: reruns stay "done"
        params.update(fuse=None if fuse == "none" else fuse, fuse_weight=weight, refine=refine)
    # (the checks above write nothing) A photo adjust made no file for (no face, unreadable) is done again: not
    # finished (before: every row was said finished, kept).
    stopped = PhotosStopped("adjust", out, len(plan.planned), lambda row: row.status in FINISHED)
    with stopped.saying():
        # Where it runs is not what it makes: left out of the records (a rerun on another device is still "done").
        runs_on: dict[str, str] = {}
        if method == "adjust":  # before the model loads; the others need no torch (facekit.normalize imports it)
            from facekit.normalize import inference_device

            runs_on["device"] = inference_device(device)
        try:
            corrector = _corrector(method, {**params, **runs_on})
        except ParamsError as error:  # a rule of the adjust app's params (fuse, refine with --mapping ycrcb...)
            raise FacekitError(_as_options(error.problems)) from None
        settings = {"method": method, **params}  # in each record: a rerun with the same is "done"
        if method == "adjust":
            from facekit.models import sha256_file
            from facekit.normalize import resolve_model

            settings["model_sha256"] = sha256_file(resolve_model(model, checkpoint))
        with stopped.bar("adjusting") as on_row:
            rows = adjust_files(plan, corrector, on_row=on_row, overwrite=overwrite, settings=settings)
    failed = sum(row.status not in FINISHED for row in rows)
    report_rows(
        f"facekit adjust ({method}) -> {out}",
        STATUS_COLUMNS,
        [(row.input, row.status, row.output or row.record.get("reason", "")) for row in rows],
        f"{len(rows) - failed} of {len(rows)} photos adjusted in {out}",
        failed,
    )


@app.command("eval")
def eval_command(
    recipe: Annotated[
        str | None,
        typer.Argument(
            help="recipe, a file or a shipped recipe's name (its evaluate section and train.output's model)"
        ),
    ] = None,
    checkpoint: Annotated[
        str | None, typer.Option(help="a model file (default: the recipe's, else the shipped --model)")
    ] = None,
    model: Annotated[
        str | None, typer.Option(help="a shipped model by its encoder: dlib (default) or sface (facekit models list)")
    ] = None,
    data: Annotated[
        str, typer.Option(help="the photos evaluated: lfw-devtest (LFW peopleDevTest.txt's people, never trained on)")
    ] = "lfw-devtest",
    judge: Annotated[
        list[str] | None,
        typer.Option(
            help="judge encoder (repeatable), NAME or NAME:KEY=VALUE[,...] for its params (e.g. "
            "facenet:variant=casia-webface-tf; a value may hold commas, and one in quotes ',KEY=' too; one encoder "
            "twice with other params: two judges); default: the training encoder and the recipe's components.judge"
        ),
    ] = None,
    max_photos: Annotated[
        int | None, typer.Option(min=1, help="photos to evaluate (default: the recipe's evaluate.max_photos, or 500)")
    ] = None,
    pairs: Annotated[
        int,
        typer.Option(
            min=0,
            max=10,
            help="also LFW pairs.txt verification on this many folds (10 = all; at least 2: the threshold is chosen "
            "on the other folds)",
        ),
    ] = 0,
    baseline: Annotated[str | None, typer.Option(help="evaluate a baseline instead of a model: frontalize")] = None,
    out: Annotated[
        str | None,
        typer.Option(
            "--out",
            "-o",
            help="output folder (default: the recipe's evaluate.output, else runs/eval)",
            callback=output_folder,
        ),
    ] = None,
    set_: SetOption = None,
    overwrite: Annotated[
        bool,
        typer.Option(
            help="replace an earlier evaluation's files in -o (default: stop before measuring)", show_default=False
        ),
    ] = False,
    device: DeviceOption = "cpu",
) -> None:
    """Measure a model's identity preservation, consistency and landmark plausibility: metrics.json, report.html. A
    model is judged on its own faces (photo detail off); benchmarks/quality.py measures the default output."""
    from facekit.evaluate import evaluate_plan, params_text
    from facekit.normalize import inference_device

    if pairs == 1:
        raise FacekitError("--pairs 1 would choose the threshold on the pairs it scores: give 2-10 folds (or 0)")
    runs_on = inference_device(device)  # the model and the judges run there (a recipe's infer.device is for `run`)

    metrics, folder = evaluate_plan(
        recipe,
        checkpoint,
        data,
        judge or [],
        max_photos,
        out,
        set_ or [],
        pairs,
        baseline,
        overwrite,
        model,
        device=runs_on,
    )
    table = Table(title=f"facekit eval ({metrics['normalized']} of {metrics['photos']} photos normalized)")
    # The pair columns are the medians of the judge's score between two normalized faces (before: headed "same
    # person" alone, and blank without a word where no two photos were one person's).
    columns = ("judge", "metric", "threshold", "identity pass rate", "same person, median", "different people, median")
    for column in columns:
        table.add_column(column)
    for name, values in metrics["judges"].items():
        given = params_text(values.get("params", {})) if "encoder" not in values else ""  # (else in its key)
        table.add_row(
            f"{name} ({given})" if given else name,
            values["distance"],
            str(values["threshold"]),
            f"{values['identity_pass_rate']:.1%}",
            str(values["consistency_same_person"].get("median", "-")),
            str(values["consistency_different_people"].get("median", "-")),
        )
    print_block(table)
    same = metrics.get("same_person_pairs") or {}
    if same.get("pairs"):  # a few people with many photos make most pairs: say whose the medians are
        console.print(
            f"same person: {same['pairs']} pairs of {same['people']} people (one person: "
            f"{same['largest_share']:.0%} of them); different people: {metrics['different_people_pairs']} pairs"
        )
    elif metrics["normalized"]:
        console.print(
            f"same person: no pairs (no two of the {metrics['normalized']} photos normalized show one person; the "
            "photos are spread over LFW DevTest's people): a larger --max-photos has some",
            style="yellow",
        )
    for name, columns in metrics.get("lfw_pairs", {}).items():
        if isinstance(columns, dict):
            console.print(
                f"LFW pairs ({name}): originals {columns['originals']['accuracy']:.2%}, "
                f"normalized {columns['normalized']['accuracy']:.2%}"
            )
    console.print(f"wrote {folder / 'metrics.json'} and {folder / 'report.html'}")


@app.command()
def bench(
    recipe: Annotated[
        str, typer.Argument(help="a recipe with a bench.grid section, e.g. benchmarks/encoders_x_warps.yaml")
    ],
    set_: SetOption = None,
) -> None:
    """Train briefly on each cell of a recipe's grid of overrides and evaluate it: results.jsonl, table, plot,
    report."""
    from facekit.batch import EXIT_SOME_FAILED
    from facekit.bench import cell_label, read_in_a_cell, run_bench, train_time
    from facekit.recipe import find_grid, load_recipe

    find_grid(recipe)  # (one not found: a path, the grids not being installed; not the shipped recipes' list)
    # The recipe's own, less those a cell reads (it turns their part on); a cell that turns a part off knows it.
    plan = load_recipe(recipe, set_ or [])
    _warn_unused_settings(plan.unused_settings(read=read_in_a_cell(recipe, set_ or [], plan)))
    rows, output = run_bench(recipe, set_ or [])
    judges = load_judges(rows)
    table = Table(title=f"facekit bench ({len(rows)} cells)")
    for column in ("cell", "recipe hash", *(f"{j} pass" for j in judges), "train s"):
        table.add_column(column)
    for row in rows:
        table.add_row(cell_label(row), row["recipe_hash"], *bench_rates(row, judges), train_time(row))
    print_block(table)
    console.print(f"wrote {output / 'results.jsonl'}, {output / 'pass_rates.png'} and {output / 'report.html'}")
    failed = [row for row in rows if "failed" in row]
    for row in failed:
        say_error(f"{cell_label(row)}: {row['failed']}", "failed cell")
    if failed:  # the others are finished and kept; a cell's failure is not the grid's
        console.print(
            f"{len(failed)} of {len(rows)} cells failed; the others are kept: the same `facekit bench` again tries "
            "only the failed ones"
        )
        raise typer.Exit(EXIT_SOME_FAILED)


def bench_rates(row: dict[str, Any], judges: list[str]) -> list[str]:
    """A bench cell's pass rate under each judge: "-" where it did not judge it (not 0 %), "failed" for a failed
    cell."""
    from facekit.bench import pass_rate

    if "failed" in row:
        return ["failed"] * len(judges)
    return ["-" if (rate := pass_rate(row, j)) is None else f"{rate:.1%}" for j in judges]


def load_judges(rows: list[dict[str, Any]]) -> list[str]:
    return sorted({j for row in rows if "metrics" in row for j in row["metrics"]["judges"]})


@app.command("export")
def export(
    checkpoint: Annotated[
        str, typer.Argument(help="a training checkpoint (train.output/checkpoints/last.safetensors)")
    ],
    out: Annotated[str, typer.Argument(help="the model file to write (.safetensors)")],
    metrics: Annotated[str | None, typer.Option(help="a metrics.json to record in the model")] = None,
    overwrite: Annotated[bool, typer.Option(help="replace an existing OUT")] = False,
) -> None:
    """Strip a checkpoint to its fp16 weights and provenance (recipe, step, git sha, metrics), as the shipped models."""
    from facekit.checkpoints import export_model

    before = _file_state(out)

    def stopped(by: str) -> str:  # (the model file is renamed into place whole: it is the old one or the new one)
        if _file_state(out) != before:
            return f"export stopped by {by} as it finished: {out} is written whole"
        if before is None:  # (no file there before: none now)
            return f"export stopped by {by}: {out} was not written (a model file is never half-written); run it again"
        return f"export stopped by {by}: {out} is as it was (a model file is never half-written); run it again"

    with stops_said(stopped):
        size = export_model(checkpoint, out, metrics, overwrite)
    console.print(f"wrote {out} ({size / 1e6:.1f} MB)")


def _file_state(path: str | Path) -> tuple[int, ...] | None:
    """``path``'s inode, size and modification time (None: no file there, or none that can be looked at): whether a
    command replaced it (:data:`facekit.filestate.CONTENTS`)."""
    from facekit.filestate import CONTENTS, file_state

    return file_state(path, CONTENTS, (OSError,))


models_app = typer.Typer(
    cls=FacekitGroup,
    no_args_is_help=True,
    help="Manage the offline model store ($FACEKIT_HOME/models): list, verify, import, bundle.",
)
app.add_typer(models_app, name="models")


@models_app.command("list")
def models_list() -> None:
    """List the weight files the components know, with licence and where each was found, and the models facekit
    ships (--model NAME)."""
    from facekit.models import read_manifest, status, store_dir
    from facekit.normalize import SHIPPED_LICENCE, model_path, shipped_models

    table = Table(title=f"model files (store: {store_dir()})")
    for column in ("component", "file", "licence", "found at"):
        table.add_column(column, overflow="fold")
    for name in shipped_models():
        path = model_path(name, verify=False)
        table.add_row(f"--model {name} (shipped)", path.name, SHIPPED_LICENCE, str(path))
    rows = status()
    for row in rows:
        table.add_row(row["component"], row["file"], row["licence"], row["where"])
    known = {row["file"] for row in rows}
    for name, entry in read_manifest().items():
        if name not in known:
            table.add_row("(imported)", name, entry.licence, str(store_dir() / name))
    print_block(table)


@models_app.command("verify")
def models_verify() -> None:
    """Re-hash the shipped models and every file in the store against their sha256 (exit 1 if any differs)."""
    from facekit.models import ChecksumError, leftover_in_use, leftover_size, leftovers, store_dir, verify_store
    from facekit.normalize import model_path, shipped_models

    results = []
    for name in shipped_models():
        try:
            model_path(name)  # the check every load makes
            verdict = "ok"
        except ChecksumError as error:
            verdict = str(error)
        results.append((f"shipped model {name} ({model_path(name, verify=False)})", verdict))
    stored = verify_store()
    results += stored
    for name, verdict in results:
        mark = ("ok", "green") if verdict == "ok" else ("BAD", "red")
        # One line each, whatever the width (before: wrapped at 160 columns in a log, between the two sha256s).
        console.print(Text.assemble(mark, f" {name}" if verdict == "ok" else f" {name}: {verdict}"), soft_wrap=True)
    if not stored:
        console.print(f"the store is empty ({store_dir()})")
    for left in leftovers():  # (before: not a word; a killed import's part copy held its space unseen)
        in_use = leftover_in_use(left)  # (asked before the size: an import that ends meanwhile removes its own)
        if (size := leftover_size(left)) is None:
            continue  # (an import running now has finished with it)
        if not in_use:
            said = "was left by an import that was stopped: remove it"
        elif left.parent == store_dir():
            said = (
                "was left by an import that was stopped, or is being written by the one running now: remove it once "
                "that import has finished"
            )
        else:
            said = "is the scratch folder of an import running now, which removes it as it finishes"
        console.print(f"note: {left} ({size / 1e6:.1f} MB) {said}", soft_wrap=True)
    if any(verdict != "ok" for _, verdict in results):
        raise typer.Exit(1)


@models_app.command("import")
def models_import(
    path: Annotated[str, typer.Argument(help="a weight file, or a tar made by `facekit models bundle`")],
    licence: Annotated[str | None, typer.Option(help="licence, for files no model card knows")] = None,
    source: Annotated[str | None, typer.Option(help="where the file came from")] = None,
) -> None:
    """Copy a weight file, or every file of a bundle, into the store, each verified by its sha256. A weight file
    against the model cards, a bundle's files against the sha256 it recorded (with their licences)."""
    from facekit.models import (
        bundle_manifest,
        import_bundle,
        import_file,
        known_sources,
        manifest_identity,
        manifest_replaced,
        store_dir,
    )

    manifest = bundle_manifest(Path(path).expanduser())
    # The manifest as it was once this import held the store's lock: replaced last, once all is stored, the import's
    # commit point. Before, as it was when the command began: another import committing while this one waited for the
    # lock (or unpacked a bundle) made a stop say "stored whole" of a file that was not stored.
    # (The import's own commit-point check, models.manifest_replaced: the same fields the rollback compares.)
    listed: list[tuple[int, ...] | None] = []

    def locked() -> None:
        listed.append(manifest_identity())

    def waiting() -> None:  # (before: nothing said while another import held the store)
        err_console.print(
            f"waiting for another import into {store_dir()} to finish...", highlight=False, soft_wrap=True
        )

    def stopped(by: str) -> str:
        name = Path(path).name
        if listed and manifest_replaced(listed[0]):
            return f"models import stopped by {by} as it finished: {name} is stored whole in {store_dir()}"
        if manifest is not None:
            return (
                f"models import stopped by {by}: nothing of {name} was stored (a bundle is stored whole or not at "
                "all); run it again"
            )
        return f"models import stopped by {by}: {name} was not stored; run it again"

    with stops_said(stopped):
        if manifest is not None:  # before: "not a file any model card knows"
            if licence is not None or source is not None:
                raise FacekitError(
                    "a bundle's files carry their own licence and source: leave out --licence and --source"
                )
            entries = import_bundle(path, manifest, warn=_say_warning, on_locked=locked, on_waiting=waiting)
        else:
            entries = [import_file(path, licence=licence, source=source, on_locked=locked, on_waiting=waiting)]
    for entry in entries:
        console.print(f"stored {entry.file} (sha256 {entry.sha256}, {entry.licence}) in {store_dir()}")
    given = Path(path).name
    if manifest is None and entries[0].file != given:
        # A file named as one card's weights whose bytes are another's (a copy under the wrong name) was stored
        # under the other's name with only the "stored" line above; the file it was named as is still missing.
        named = next((component for component, known in known_sources() if known.file == given), None)
        if named is not None:
            err_console.print(
                f"warning: {given} is named as the weights file of {named}, but its sha256 is {entries[0].file}'s "
                f"(stored under that name): {named}'s {given} is still missing; import the real one",
                style="yellow",
                highlight=False,
                soft_wrap=True,
            )


@models_app.command("bundle")
def models_bundle(
    recipe: Annotated[
        str, typer.Argument(help="recipe, a file or a shipped recipe's name, whose components' weights to pack")
    ],
    out: Annotated[
        str,
        typer.Argument(
            help="output .tar; on the other machine `facekit models import OUT` (or unpack it into $FACEKIT_HOME)"
        ),
    ],
    set_: SetOption = None,
    overwrite: Annotated[bool, typer.Option(help="replace an existing OUT")] = False,
) -> None:
    """Pack the weight files a recipe loads into one tar, for an air-gapped machine. Each component the recipe names,
    each component of its bench grid's cells and each of its bench.judges is built with its params and the files it
    loads are packed (a variant's file, a file its `weights` param names); one that cannot load (a missing file)
    stops the bundle with the file to place. Models chosen outside the recipe (explore's judge, a shipped normalizing
    model) are not: add them as components.judge, or copy their files."""
    from facekit.bench import bench_judges, cell_words, placed_cells
    from facekit.models import bundle, recording_weights
    from facekit.progress import status
    from facekit.recipe import grid_cells_as_written, load_recipe
    from facekit.registry import get_registry

    plan = load_recipe(recipe, overrides=set_ or [])
    # Before: only the recipe's own components were packed; a bench grid over components.encoder.name, or its
    # bench.judges, loaded weights the other machine did not have, and the bench stopped at its first such cell.
    # (kind, name, params) -> (where its weights param is, where the recipe asked for it, kind, spec, params)
    wanted: dict[str, tuple[str, str, str, Any, Any]] = {}
    placed = placed_cells(plan) if plan.recipe.bench.grid else []
    # Each cell named as the bench names it, its values as the grid writes them (before: their JSON, 1000.0 for 1e3)
    written = grid_cells_as_written(recipe, set_ or [], placed) if placed else []
    for places, shown in [({}, {}), *zip(placed, written, strict=True)]:
        overrides = tuple(places)
        cell = load_recipe(recipe, [*(set_ or []), *overrides], grid_cell=places) if overrides else plan
        for key, component in cell.components.items():
            in_cell = f" (bench cell {cell_words(overrides, shown)})" if overrides else ""
            wanted.setdefault(
                f"{component.kind}:{component.spec.name}:{component.params.model_dump_json()}",
                (
                    f"components.{key}.params.weights{in_cell}",
                    f"components.{key}{in_cell}",
                    component.kind,
                    component.spec,
                    component.params,
                ),
            )
    # Each of bench.judges as the bench builds it (one that is components.judge's or .encoder's is packed with them)
    for name, judge_params, component in bench_judges(plan) if plan.recipe.bench.judges else []:
        if component is None:
            spec = get_registry("encoder").get(name)
            params = spec.validate_params(judge_params)
            where = f"bench.judges {name}"
            wanted.setdefault(f"encoder:{name}:{params.model_dump_json()}", (where, where, "encoder", spec, params))
    before = _file_state(out)

    def stopped(by: str) -> str:  # (the tar is renamed into place whole: it is the old one or the new one)
        if _file_state(out) != before:
            return f"models bundle stopped by {by} as it finished: {out} is written whole"
        return f"models bundle stopped by {by}: {out} is as it was (a bundle is never half-written); run it again"

    with stops_said(stopped):  # (building the components writes nothing)
        sources: list[Any] = []
        with status(console, "building the recipe's components to see which weight files they load"):
            for where, asked_for, kind, spec, params in wanted.values():
                # Before: every file with a checksum on each card was packed, whatever the params chose; a file the
                # params named, or one without a checksum, was left out without a word (helper-69).
                with recording_weights() as used:
                    spec.build(params, kind=kind, asked_for=asked_for)
                sources += used
                given = getattr(params, "weights", None)
                for source, path in used if given else []:
                    console.print(
                        f"{where}: {path} is packed as models/{source.file}; on the other machine leave "
                        "the param out (the store has the file) or point it there"
                    )
                if not used and spec.card is not None:  # loads its weights later, if at all: the card's
                    sources += [weights for weights in spec.card.weights if weights.sha256]
        # The recipe and every base it extends (before: the files recipe_origins named, which leaves out a base
        # whose every setting the recipe overrides, and --overwrite replaced that base with the tar), as load_recipe
        # read them.
        files = bundle(sources, out, overwrite, inputs=[Path(each["file"]) for each in plan.recipe_files])
    console.print(f"wrote {out}: {', '.join(files) or 'no weight files needed'}")


@app.command()
def attributes(
    photos: Annotated[list[str], typer.Argument(help="photos or folders of photos")],
    out: Annotated[str, typer.Option("--out", "-o", help="output folder", callback=output_folder)] = "attributes",
    model: Annotated[
        str | None, typer.Option(help="a shipped model by its encoder: dlib (default) or sface (facekit models list)")
    ] = None,
    checkpoint: Annotated[str | None, typer.Option(help="trained model file (default: the shipped --model)")] = None,
    batch_size: Annotated[int, typer.Option(min=1, help="photos read and normalized at a time")] = 16,
    face: FaceOption = FaceChoice.LARGEST,
    overwrite: OverwriteOption = False,
    device: DeviceOption = "cpu",
) -> None:
    """Measure skin tone and face shape on each photo's normalized face instead of the photo. Skin tone as ITA
    (degrees, CIELAB D65, median over both cheeks and a forehead patch placed from the predicted landmarks), face
    shape as landmark ratios. Writes OUT/attributes.csv, attributes.json and NAME_attributes.png (the region drawn).
    A rerun into the same -o with the same model and --face resumes: unchanged photos keep their rows. Exit 3 when
    some photos have no measures (see the table)."""
    from facekit.apps.attributes import ATTRIBUTE_OUTPUTS, REUSED, TABLES, attributes_files, check_tables_clear
    from facekit.batch import plan_folder
    from facekit.models import sha256_file
    from facekit.normalize import inference_device, resolve_model

    plan = plan_folder(photos, out, batch_size, outputs=ATTRIBUTE_OUTPUTS)  # bad inputs or -o before the model loads
    # Finished: the rows its rerun keeps (a photo without a face too); an unreadable photo's, or one whose picture
    # could not be written, it measures again (before: every row was said finished, kept).
    stopped = PhotosStopped("attributes", out, len(plan.planned), lambda row: row.status in REUSED)
    with stopped.saying():
        runs_on = inference_device(device)
        model_sha256 = sha256_file(resolve_model(model, checkpoint))  # an earlier run's tables with it are resumed
        check_tables_clear(plan, overwrite, model_sha256, face.value)
        measurer = facekit.load_component(
            "app", "attributes", model=model, checkpoint=checkpoint, face=face.value, device=runs_on
        )
        measurer.normalizer  # noqa: B018 - load (and check) the model before the progress bar starts
        with stopped.bar("measuring") as on_row:
            rows = attributes_files(plan, measurer, on_row=on_row, overwrite=overwrite, model_sha256=model_sha256)
    lines = []
    for row in rows:
        values = row.values
        numbers = ["", "", "", ""]
        if row.status == "ok":
            numbers = [f"{values['ita_degrees']:.1f}", values["ita_category"]]
            numbers += [f"{values['face_width_height']:.3f}", f"{values['nose_mouth_width']:.3f}"]
        lines.append((row.input, row.status, *numbers, row.reason))
    failed = sum(row.status != "ok" for row in rows)
    report_rows(
        f"facekit attributes -> {out}",
        ("photo", "status", "ITA (deg)", "skin tone", "face w/h", "nose/mouth", "reason"),
        lines,
        f"{len(rows) - failed} of {len(rows)} photos measured: {Path(out) / TABLES[0]}, {Path(out) / TABLES[1]}",
        failed,
    )


explore_app = typer.Typer(
    cls=FacekitGroup,
    no_args_is_help=True,
    help="Explore what the model's features encode: interpolate between faces, compare models.",
)
app.add_typer(explore_app, name="explore")


@explore_app.command("interpolate")
def explore_interpolate(
    a: Annotated[str, typer.Argument(help="photo A")],
    b: Annotated[str, typer.Argument(help="photo B")],
    out: Annotated[str, typer.Option("--out", "-o", help="output folder", callback=output_folder)] = "explore",
    steps: Annotated[int, typer.Option("--steps", "-n", min=2, max=256, help="frames, A and B included")] = 8,
    spherical: Annotated[
        bool, typer.Option(help="slerp the standardised features' directions instead of a straight line")
    ] = False,
    model: Annotated[
        str | None, typer.Option(help="a shipped model by its encoder: dlib (default) or sface (facekit models list)")
    ] = None,
    checkpoint: Annotated[str | None, typer.Option(help="trained model file (default: the shipped --model)")] = None,
    judge: Annotated[
        str | None,
        typer.Option(
            help="judge encoder with a detector of its own (dlib-resnet, sface, arcface), NAME or NAME:KEY=VALUE[,...] "
            "for its params (e.g. arcface:weights=FILE; a value may hold commas, and one in quotes ',KEY=' too; "
            "default: independent of the model: dlib-resnet <-> sface)"
        ),
    ] = None,
    face: FaceOption = FaceChoice.LARGEST,
    overwrite: OverwriteOption = False,
    device: DeviceOption = "cpu",
) -> None:
    """Decode the path between the encoder features of the faces of photos A and B (the largest, or --face central).
    Writes OUT/interpolate.png (frames, with the independent judge's score of each against A and B plotted under
    them), interpolate_strip.png, interpolate.gif and interpolate.json."""
    from facekit.apps.explore import INTERPOLATE_FILES, write_interpolation
    from facekit.batch import check_fixed_outputs
    from facekit.locks import exclusive

    target = Path(out)
    for photo in (a, b):
        if Path(photo).is_dir():
            raise FacekitError(f"{photo} is a folder: interpolate goes between two photos")
        if not Path(photo).is_file():
            raise FacekitError(f"no such photo: {photo}")
    from facekit.normalize import inference_device
    from facekit.progress import status

    runs_on = inference_device(device)  # the model runs there; the judge on the CPU (Explorer)
    stopped = explore_stopped("explore interpolate", target, INTERPOLATE_FILES)
    with stops_said(stopped):  # (to its last line: a stop as it prints says its files are whole)
        # One run at a time into -o (as normalize's); outputs and inputs checked before any model loads.
        with exclusive(target, "explore interpolate"):
            check_fixed_outputs(target, INTERPOLATE_FILES, [a, b], overwrite, "facekit explore interpolate")
            explorer = facekit.load_component(
                "app",
                "explore",
                model=model,
                checkpoint=checkpoint,
                steps=steps,
                spherical=spherical,
                judge=judge,
                face=face.value,
                device=runs_on,
            )
            # The model and the judge loaded apart: an unknown --model, or a judge whose weights are missing, is refused
            # before "encoding, decoding and judging" starts (before: after, with the photos encoded and decoded).
            with status(console, "loading the model and the judge"):
                explorer.judge_for(explorer.normalizer)
            with status(console, "encoding, decoding and judging"):
                result = explorer.interpolate(a, b, names=[a, b])
            written = write_interpolation(result, target, [a, b], overwrite)
        print_block(interpolation_table(result))
        for name in result.photos_without_face:
            console.print(
                f"the judge ({result.judge}) finds no face in {name}: no scores against it (nan)", style="yellow"
            )
        if result.frames_without_face:
            console.print(
                f"the judge finds no face in {result.frames_without_face} of the frames (nan)", style="yellow"
            )
        console.print("wrote " + ", ".join(str(path) for path in written))


def explore_stopped(command: str, out: Path, names: Sequence[str]) -> Callable[[str], str]:
    """The stop line of an explore ``command`` that writes ``names`` into ``out`` as one set
    (:func:`facekit.apps.explore.write_together`: those it made are removed on a stop, so the rerun finds none of them
    there; one there before, with --overwrite, stays replaced), from the files' state now and when it ended."""
    before = {name: _file_state(out / name) for name in names}

    def stopped(by: str) -> str:
        changed = [name for name in names if _file_state(out / name) != before[name]]
        if len(changed) == len(names):
            return f"{command} stopped by {by} as it finished: {', '.join(names)} in {out} are written whole"
        if changed:  # (--overwrite: files of an earlier run replaced, their old content gone)
            return (
                f"{command} stopped by {by}: {', '.join(changed)} in {out} replaced, the other files are still the "
                "earlier run's; run it again with --overwrite to write them all"
            )
        kept = [name for name in names if before[name] is not None]
        still = f" ({', '.join(kept)} as they were)" if kept else ""
        return f"{command} stopped by {by}: none of its files was written into {out}{still}; run it again"

    return stopped


def interpolation_table(result: Any) -> Table:
    """`explore interpolate`'s table: a row per frame, its t with the decimals that tell the frames apart (two, or
    three from ``-n 102``: before, always two, and ``-n 256`` showed 0.00 twice, 0.01 three times); the judge and its
    metric in the caption."""
    # The title short, the detail in a caption as wide as the table is made (the console's width at most): the table
    # is four narrow columns, and its title, with the folder and the judge, wrapped onto three lines in their width
    # (the folder is in the "wrote" line after it).
    caption = f"to A, to B: {result.metric}, judge {result.judge}"
    table = Table(title="facekit explore interpolate", caption=caption, min_width=len(caption))
    for column in ("frame", "t", "to A", "to B"):
        table.add_column(column)
    places = 2
    while len({f"{t:.{places}f}" for t in result.t}) < len(set(result.t)) and places < 6:
        places += 1
    for index, (t, to_a, to_b) in enumerate(zip(result.t, result.to_a, result.to_b, strict=True)):
        table.add_row(str(index), f"{t:.{places}f}", f"{to_a:.3f}", f"{to_b:.3f}")
    return table


@explore_app.command("compare")
def explore_compare(
    photos: Annotated[list[str], typer.Argument(help="photos or folders of photos (a row each)")],
    out: Annotated[str, typer.Option("--out", "-o", help="output folder", callback=output_folder)] = "explore",
    model: Annotated[
        list[str] | None,
        typer.Option(help="a shipped model, a column each (repeatable): dlib, sface (default: every shipped model)"),
    ] = None,
    checkpoint: Annotated[list[str] | None, typer.Option(help="a model file, a column each (repeatable)")] = None,
    cell: Annotated[int, typer.Option(min=32, max=512, help="pixels per grid cell")] = 128,
    face: FaceOption = FaceChoice.LARGEST,
    overwrite: OverwriteOption = False,
    device: DeviceOption = "cpu",
) -> None:
    """Normalize the photos with each model and compare them (every shipped model unless --model or --checkpoint name
    some). One face of each (--face). Writes OUT/compare.png (a row per photo: the photo aligned, then each model's
    normalized face), and each model's consistency: per person with several photos (a folder given is read as in
    training: a sub-folder is a person, at any depth, a photo beside them one of its own; else the photo's folder; in
    a single folder of LFW-style Name_NNNN files, the name), the mean pairwise distance of the normalized faces under
    a judge independent of the model, beside the same for the photos (compare.csv, compare.json). Exit 3 when some
    photo has no output."""
    from facekit.apps.explore import (
        COMPARE_FILES,
        people_rule_warning,
        status_and_reason,
        unscored_people,
        write_comparison,
    )
    from facekit.batch import EXIT_SOME_FAILED, check_fixed_outputs, scan_inputs
    from facekit.locks import exclusive
    from facekit.normalize import inference_device, resolve_model, shipped_models
    from facekit.progress import Progress

    target = Path(out)
    check_fixed_outputs(target, COMPARE_FILES, [], overwrite, "facekit explore compare")
    runs_on = inference_device(device)  # every model runs there; the judges on the CPU (Explorer)
    stopped = explore_stopped("explore compare", target, COMPARE_FILES)
    with stops_said(stopped):  # (to its last line: a stop as it prints says its files are whole)
        # One run at a time into -o (as normalize's).
        with exclusive(target, "explore compare"):
            scanned = scan_inputs(photos, target)
            found = [path for path, _ in scanned]
            check_fixed_outputs(target, COMPARE_FILES, found, overwrite, "facekit explore compare")
            if (warning := people_rule_warning(found)) is not None:
                console.print(f"warning: {warning}", style="yellow")
            wanted = [(name, resolve_model(name, None)) for name in (model or [])]
            wanted += [(Path(file).stem, resolve_model(None, file)) for file in (checkpoint or [])]
            wanted = wanted or [(name, resolve_model(name, None)) for name in shipped_models()]
            if not wanted:
                raise FacekitError("no shipped model is installed: pass --checkpoint FILE (or reinstall facekit)")
            explorer = facekit.load_component("app", "explore", face=face.value, device=runs_on)
            loaded: dict[Path, Any] = {}
            models, labels = [], []
            for label, path in wanted:
                unique, count = label, 2
                while unique in labels:
                    unique, count = f"{label}-{count}", count + 1
                labels.append(unique)
                key = path.resolve()
                if key not in loaded:
                    loaded[key] = explorer.load_normalizer(path)
                models.append((unique, loaded[key]))
            with Progress(console=console, transient=True) as progress:
                task = progress.add_task("normalizing and judging", total=len(found) * len(models), unit="photo")
                result = explorer.compare(
                    found,
                    models,
                    on_step=lambda n: progress.advance(task, n),
                    relative_names=[name for _, name in scanned],
                )
            written = write_comparison(result, target, found, cell, overwrite)
        table = Table(title=f"facekit explore compare -> {out}")
        for column in ("photo", "person", *labels):
            table.add_column(column, overflow="fold")
        for i, photo in enumerate(result.photos):
            cells = [status_and_reason(*result.status[label][i]) for label in labels]
            table.add_row(photo, result.persons[i], *cells)
        print_block(table)
        summary = Table(title="consistency: mean pairwise judge distance within a person (lower: more alike)")
        for column in ("model", "judge", "metric", "people", "photos judged", "normalized faces", "input photos"):
            summary.add_column(column)
        for row in result.summary:
            values = [row["outputs_mean_distance"], row["inputs_mean_distance"]]
            texts = ["-" if v is None else f"{v:.4f}" for v in values]
            judged = f"{row['judged']} of {row['photos']}"
            summary.add_row(row["model"], row["judge"], row["metric"], str(row["people"]), judged, *texts)
        print_block(summary)
        if (unscored := unscored_people(result.persons)) is not None:
            console.print(unscored, style="yellow")
        console.print("wrote " + ", ".join(str(path) for path in written))
        if any(status != "ok" for label in labels for status, _ in result.status[label]):
            raise typer.Exit(EXIT_SOME_FAILED)


#: Plugins whose register_commands failed or would have replaced a command; `facekit plugins` reports them.
COMMAND_FAILURES: list[str] = []
#: Plugins whose commands this process has added (main() may run more than once in a process: tests, embedding).
_COMMANDS_ADDED: set[str] = set()


def _register_plugin_commands() -> None:
    """Each plugin's commands, one plugin at a time: one that raises, or that would replace a command already
    there (facekit's own or another plugin's), is left out and reported; the CLI and `facekit plugins` still work."""
    from facekit.plugins import get_plugin_state

    for impl in get_plugin_state().manager.hook.register_commands.get_hookimpls():
        if impl.plugin_name in _COMMANDS_ADDED:
            continue
        _COMMANDS_ADDED.add(impl.plugin_name)
        before = _names_of(app.registered_commands, app.registered_groups)
        commands, groups = list(app.registered_commands), list(app.registered_groups)
        problem = None
        try:
            impl.function(app=app)
        except Exception as error:  # noqa: BLE001  (a broken plugin must not take the whole CLI down)
            problem = f"failed in register_commands: {type(error).__name__}: {error}"
        else:
            added = [c for c in app.registered_commands if c not in commands]
            added_groups = [g for g in app.registered_groups if g not in groups]
            taken = sorted(before & _names_of(added, added_groups))
            if taken:
                problem = f"registers command(s) {', '.join(taken)}, which facekit already has"
        if problem is not None:
            app.registered_commands[:], app.registered_groups[:] = commands, groups
            COMMAND_FAILURES.append(
                f"plugin {impl.plugin_name!r} {problem}: its commands are left out. Fix or uninstall it, or set "
                f"FACEKIT_DISABLE_PLUGINS={impl.plugin_name} to skip it"
            )
    _short_helps(app)


def first_sentence(text: str) -> str:
    """The first sentence of a docstring's first paragraph on one line ("" for none)."""
    paragraph = " ".join(inspect.cleandoc(text).split("\n\n")[0].split())
    return re.split(r"(?<=[.!?])\s+(?=[A-Z`])", paragraph, maxsplit=1)[0]


def _short_helps(typer_app: typer.Typer) -> None:
    """Each command of ``typer_app`` and its groups listed by its docstring's first sentence: Typer's rich help kept
    the docstring's own line breaks in the command list, which then wrapped into ragged rows."""
    for info in typer_app.registered_commands:
        if info.short_help is None:
            info.short_help = first_sentence(info.help or inspect.getdoc(info.callback) or "")
    for group in typer_app.registered_groups:
        if group.typer_instance is not None:
            _short_helps(group.typer_instance)


def _names_of(commands: list[Any], groups: list[Any]) -> set[str]:
    """The CLI names of Typer's registered ``commands`` and ``groups`` (a command's default name is its function's)."""
    names = {c.name or (c.callback.__name__.replace("_", "-") if c.callback else "") for c in commands}
    return names | {g.name or g.typer_instance.info.name or "" for g in groups if g.typer_instance}


#: The exit status of a command line the command cannot take (Typer's, for its own usage errors).
USAGE_ERROR = 2


def _set_split_in_two(args: list[str]) -> str | None:
    """The line for a ``--set KEY VALUE`` typed with a space for the '=' (``facekit run demo --set train.steps 5``),
    whose VALUE Typer took for an extra argument ("Got unexpected extra argument (5)", in a box, saying nothing of
    --set: helper-188), else None. The command line is parsed as Typer's click would, only when a --set is given."""
    if {"--help", "--version"} & set(args):  # (those two answer, as before)
        return None
    if not any(word in ("--set", "-s") or word.startswith("--set=") for word in args):
        return None
    command: Any = typer.main.get_command(app)
    name = "facekit"
    while isinstance(getattr(command, "commands", None), dict):  # a group: its options (--help) take no value
        words = [i for i, word in enumerate(args) if not word.startswith("-")]
        if not words or args[words[0]] not in command.commands:
            return None
        name, command, args = args[words[0]], command.commands[args[words[0]]], args[words[0] + 1 :]
    ctx = command.make_context(name, list(args), resilient_parsing=True)  # (no usage error raised, no callbacks)
    lacking = {value for value in ctx.params.get("set_") or [] if "=" not in value}
    # The KEY after --set or -s, or in --set=KEY (the option's '=' typed, not the value's), and the word after it.
    keyed: list[tuple[str, str]] = []
    for at, word in enumerate(args[: len(args) - 1]):
        if word in ("--set", "-s") and at + 2 < len(args):
            keyed.append((args[at + 1], args[at + 2]))
        elif word.startswith("--set="):
            keyed.append((word.removeprefix("--set="), args[at + 1]))
    for key, value in keyed:
        # The word after it is meant: a negative number, which no option is (click took ``-5`` for one and said "No
        # such option: -5": helper-199), or a word not an option that Typer left over (with no extra argument, a
        # --set without '=' is said by the recipe's own check)
        if key in lacking and (_is_number(value) or (ctx.args and not value.startswith("-"))):
            return f"--set takes KEY=VALUE: --set {key}={value}"
    return None


def _is_number(word: str) -> bool:
    """Whether ``word`` reads as a number (``-5``, ``-1e-3``, ``-.5``; not ``-x`` nor ``--stage``)."""
    try:
        float(word)
    except ValueError:
        return False
    return True


def main(argv: list[str] | None = None) -> int:
    """Console-script entry point: run the app, turning known errors into one line and an exit code."""
    # Before torch loads: OpenMP's default spin-waiting slows torch whenever another process holds the cores (a
    # training in the background): 345 vs 287 ms per photo for normalize, RESULTS.md "omp-wait".
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    if argv is None:  # the command itself (console script, python -m facekit): the process ends when it returns
        # Python's shutdown runs full garbage collections over every object left, torch's hundreds of thousands
        # among them: 1.7-3.0 s after `facekit normalize` returned on a busy 2-core machine, 0.5-0.7 s with them
        # frozen first. The outputs are written and closed by then; the other atexit handlers still run, and objects
        # freed by reference counting are still finalized: only cycles left at exit are not collected.
        atexit.register(gc.freeze)
    from facekit.errors import quiet_pillow_size_warning

    quiet_pillow_size_warning()
    try:
        # SIGTERM and SIGHUP (the terminal closed; not under nohup) end any command as Ctrl+C does (a training's and a
        # prepare's say more: their own handlers inside).
        with sigterm_raises(TERMINATED_MESSAGE):
            _register_plugin_commands()
            split = _set_split_in_two(sys.argv[1:] if argv is None else argv)
            if split is not None:
                say_error(split)
                return USAGE_ERROR
            # Typer's standalone mode handles usage errors and --help itself (by SystemExit); our errors pass through.
            app(args=argv, prog_name="facekit")
    except FacekitError as exc:
        if debug_requested():
            raise
        say_error(str(exc))
        return exc.exit_code
    except SystemExit as exc:
        if exc.code == INTERRUPTED:  # Typer's Ctrl-C: it says nothing
            say_error(_interrupted_message(exc))
        return exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
    except Terminated as exc:  # SIGTERM or SIGHUP (Typer lets it through: not a KeyboardInterrupt)
        if debug_requested():
            raise
        say_error(str(exc))
        return exc.exit_code
    except KeyboardInterrupt as exc:  # Ctrl-C before Typer runs the command (while the plugins and torch load)
        if debug_requested():
            raise
        say_error(_interrupted_message(exc))
        return INTERRUPTED
    except OSError as exc:
        # The machine's limits, not a facekit bug: a full disk or a folder the user may not write, from any stage.
        if exc.errno not in _ENVIRONMENT_ERRNOS or debug_requested():
            raise
        say_error(_os_error_line(exc))
        return 1
    return 0


def _os_error_line(exc: OSError) -> str:
    """The one line for an OSError of the machine's limits (:data:`_ENVIRONMENT_ERRNOS`): what, where, what to do."""
    where = f" ({exc.filename})" if exc.filename else ""
    hints = {
        errno.ENOSPC: "free some space",
        errno.EDQUOT: "free some space",
        errno.ENOTDIR: "a part of the path is a file, not a folder",
        errno.EEXIST: "a file is in the way of a folder",
        errno.EISDIR: "it is a folder: give a file name",
        # (before: "check the folder's permissions", which no chmod mends)
        errno.EROFS: "the file system is mounted read-only: choose a folder on a disk mounted read-write",
        # (before: a traceback; a write to a terminal that hung up is a stop, facekit.errors.sigterm_raises)
        errno.EIO: "a disk failed to read or write: check it (`dmesg` says more), or use a folder on another disk",
    }
    hint = hints.get(exc.errno or 0)
    if hint is None:
        # Before: "check the folder's permissions" whatever the path was (a weight file the user may not read too).
        try:
            mode = os.stat(exc.filename).st_mode if exc.filename else None
        except (TypeError, ValueError, OSError):
            mode = None
        what = "its" if mode is None else "the folder's" if stat.S_ISDIR(mode) else "the file's"
        hint = f"check {what} permissions"  # "its": no path, or one that cannot be stat'ed; neither is said
    return f"{exc.strerror}{where}: {hint}"


#: The exit code of a command stopped by Ctrl-C (128 + SIGINT), as Typer exits.
INTERRUPTED = 130
#: What a stop by Ctrl+C says where no command's own line does: before any command started (while the plugins and
#: torch load), in a command that writes nothing (list, check, plugins, models list and verify), or outside a
#: command's own block (normalize planning its photos, or printing its table once they are written). Every command
#: that writes says what it left and what running it again does (:func:`facekit.errors.stops_said`; before: this
#: line listed them all, whichever command ran; explore and serve were the last to get theirs).
INTERRUPTED_MESSAGE = "interrupted: what was written stays"


def _interrupted_message(stop: BaseException) -> str:
    """What a command stopped by Ctrl-C says: the :class:`facekit.errors.Interrupted` message of the command that
    raised one (a training's: the step its checkpoint holds; Typer's exit 130 holds it as its cause), else the
    general line."""
    seen: BaseException | None = stop
    visited: set[int] = set()
    while seen is not None and id(seen) not in visited:
        if isinstance(seen, Interrupted):
            return str(seen)
        visited.add(id(seen))
        seen = seen.__cause__ or seen.__context__
    return INTERRUPTED_MESSAGE


#: What a command stopped by SIGTERM or SIGHUP says, ``{signal}`` its name (exit 143 or 129:
#: :class:`facekit.errors.Terminated`).
TERMINATED_MESSAGE = "stopped by {signal}" + INTERRUPTED_MESSAGE.removeprefix("interrupted")

#: OSErrors that are the machine's or the user's paths, not a facekit bug: one line, exit 1.
_ENVIRONMENT_ERRNOS = ENVIRONMENT_ERRNOS


if __name__ == "__main__":
    sys.exit(main())
