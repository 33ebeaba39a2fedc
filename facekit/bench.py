"""`facekit bench RECIPE`: short trainings over a grid of overrides (encoders x warpers x decoders), each evaluated.

The recipe's ``bench.grid`` maps recipe paths to values; every combination is one cell, trained for ``train.steps``
into ``<bench.output>/cells/<hash>/`` and evaluated on ``bench.max_photos`` photos of ``bench.data`` under every
judge (HELEN's test photos by default: a grid chooses settings, and LFW DevTest is for reporting only).
Each cell appends one JSON line to ``<bench.output>/results.jsonl`` (overrides, their values as the grid writes
them, recipe hash, git sha, versions, device, timings, metrics); the run ends with a table, a plot and
``report.html``. Finished cells (same recipe hash) are not trained again, so an interrupted bench resumes. A cell that
fails on its own (a FacekitError: its training diverged, a component of its has no weights, the recipe refuses its
settings) is that cell's row with ``failed``, its reason, instead of its metrics; the other cells go on, and the next
bench tries it again.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import logging
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from facekit.errors import FacekitError, SettingsRefused
from facekit.recipe import Plan, grid_cells_as_written, load_recipe, path_override

if TYPE_CHECKING:
    from facekit.pool import CachedPool
    from facekit.train import TrainingDiverged

logger = logging.getLogger(__name__)


def cells(plan: Plan) -> list[tuple[str, ...]]:
    """Every combination of the grid as ``key=value`` override strings."""
    return [tuple(cell) for cell in placed_cells(plan)]


def placed_cells(plan: Plan) -> list[dict[str, int]]:
    """:func:`cells`, each ``key=value`` with the place of its value in its key's list of ``bench.grid``, for
    :func:`~facekit.recipe.load_recipe`'s ``grid_cell`` to name a refused value by: a value listed twice (``[yes,
    0.1, true]``) makes cells of one text, told apart only by their places (before, a refusal of the third named the
    first, ``bench.grid.train.lr.0 ... (got yes)``)."""
    grid = plan.recipe.bench.grid
    keys = list(grid)
    return [
        {f"{key}={json.dumps(grid[key][n])}": n for key, n in zip(keys, places, strict=True)}
        for places in itertools.product(*(range(len(grid[k])) for k in keys))
    ]


def read_in_a_cell(recipe: str, overrides: list[str], plan: Plan) -> set[str]:
    """Of the settings ``plan`` (the recipe with ``overrides``) leaves unused (:meth:`Recipe.unused_settings`), those
    some cell of its grid reads, as that cell switches their part on."""
    from facekit.errors import FacekitError

    unused = {name for name, _ in plan.recipe.unused_settings()}
    read: set[str] = set()
    for cell in cells(plan) if unused else []:
        try:  # a cell the recipe refuses is said by the bench itself
            cell_plan = load_recipe(recipe, [*overrides, *cell], grid_cell=cell)
            read |= unused - {name for name, _ in cell_plan.recipe.unused_settings()}
        except FacekitError:
            continue
    return read


#: Grid keys that would change the prepared data: a bench trains every cell on prepare.output as it is.
DATA_KEYS = ("prepare.", "data.", "components.detector")


#: What a bench writes in bench.output (and a fresh bench's folder may hold nothing else).
BENCH_ENTRIES = ("results.jsonl", "pass_rates.png", "report.html", "cells", "last.json")
#: How a bench's own files begin (facekit.batch.refuse_foreign_folder).
BENCH_SIGNATURES = {
    "results.jsonl": b'"recipe_hash"',
    "report.html": b"<title>facekit bench</title>",
    "last.json": b'"recipe_hashes"',  # (helper-77: a user's last.json passed for the bench's)
}


def recipe_hash(plan: Plan, prepared: str | None = None) -> str:
    """A cell's name: the settings that shape its trained weights, and the digest of the prepared arrays it trains on
    (``prepared``; a set prepared again from other photos makes every cell new). Settings a resumed training may
    change but its length (how often it writes, where it runs: ``facekit.train.RESUMABLE_CHANGES``), the stages a
    cell does not run (evaluate, infer, bench: its scoring is the bench's own, compared apart) and the output paths
    leave the name as it is (helper-70: ``--set evaluate.max_photos=3`` or ``train.sample_every=2`` trained every
    cell again, hours on a real grid). ``train.device`` stays in it (another device, other arithmetic), and so does
    every setting the grid varies, whatever it is: cells of one grid never share a name (helper-71: a grid over
    ``train.sample_every`` trained its first cell and showed it twice). Components' params count as their Params
    read them (:func:`_params_as_read`): ``10`` and ``10.0``, or a default given and left out, are one name."""
    return _kept_name(plan, prepared, _params_as_read(plan))


def spelled_recipe_hash(plan: Plan, prepared: str | None = None) -> str:
    """A cell's name as benches before 2026-12-05 gave it (:func:`recipe_hash` of its components' params as spelled):
    their cells are found under it, not trained again."""
    return _kept_name(plan, prepared, plan.to_dict())


def _params_as_read(plan: Plan) -> dict[str, Any]:
    """``plan``'s recipe with each component's params as its Params read them, defaults left out: the recipe keeps
    them as spelled, a free mapping (before: ``regularization: 10`` and ``10.0``, or ``{name: tps}`` and ``{name:
    tps, params: {regularization: 0.0}}``, were two cells, the same training twice, and a rerun spelled otherwise
    did not find its cells done)."""
    settings = plan.to_dict()
    for key, component in plan.components.items():
        slot, _, index = key.partition(".")  # a list slot's items are "slot.N"
        ref = settings["components"][slot]
        ref = ref[int(index)] if index else ref
        ref["params"] = component.params.model_dump(mode="json", exclude_defaults=True)
    return settings


def _kept_name(plan: Plan, prepared: str | None, settings: dict[str, Any]) -> str:
    """:func:`_cell_name` of the paths of ``settings`` (``plan``'s recipe as a dict) that shape a cell's weights."""
    from facekit.train import FREE_ON_RESUME, RESUMABLE_CHANGES

    free = RESUMABLE_CHANGES - {"train.steps", "train.device"} | ({"prepare.output"} if prepared else set())
    axes = tuple(plan.recipe.bench.grid)

    def kept(path: str) -> bool:
        if any(path == axis or path.startswith(f"{axis}.") for axis in axes):
            return True
        return path not in free and not path.startswith(FREE_ON_RESUME)

    return _cell_name({path: value for path, value in _flat(settings).items() if kept(path)}, prepared)


def legacy_recipe_hash(plan: Plan, prepared: str | None = None) -> str:
    """A cell's name as benches before 2026-12-04 gave it (the whole recipe but its bench and infer sections): their
    cells are found under it, not trained again."""
    return _cell_name({k: v for k, v in plan.to_dict().items() if k not in ("bench", "infer")}, prepared)


def _cell_name(settings: dict[str, Any], prepared: str | None) -> str:
    """12 hex digits of the sha256 of ``settings`` and the prepared arrays' digest (when known)."""
    cell = {**settings, **({"prepared_arrays_sha256": prepared} if prepared is not None else {})}
    return hashlib.sha256(json.dumps(cell, sort_keys=True).encode()).hexdigest()[:12]


def _flat(settings: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """A recipe's dict as {dotted path: value} (mappings opened, lists kept whole)."""
    flat: dict[str, Any] = {}
    for key, value in settings.items():
        if isinstance(value, dict) and value:
            flat.update(_flat(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = value
    return flat


def bench_judges(plan: Plan) -> list[tuple[str, dict[str, Any], Any]]:
    """The judges a bench of ``plan`` scores its cells with, each as (encoder name, the params it is built with where
    they are not its defaults, :attr:`facekit.evaluate.Judge.params`, and the resolved component it is built from, or
    None: built from those params): ``bench.judges``, else the recipe's components.encoder and components.judge with
    theirs, as the evaluate stage picks them (:func:`facekit.evaluate.evaluate_plan`). An item of ``bench.judges``
    is built as :func:`facekit.recipe.bench_judge` says: with params, as `facekit eval --judge NAME:KEY=VALUE` builds
    its judge (components.judge's params updated with them where it is that encoder); a name alone is
    components.judge's, else components.encoder's, with its params, else the encoder with its defaults; an item that
    is an earlier one again the recipe refuses as it loads, as eval refuses a --judge given twice. A judge is its name
    AND params: before, a components.judge of the
    encoder's name with other params (facenet of another variant) was the only judge, and the encoder, never built,
    did not judge; and a listed name was components.judge's or the defaults, never components.encoder's nor any
    other params (no item could have them)."""
    from facekit.recipe import bench_judge

    settings = plan.recipe.bench
    wanted: list[tuple[str, dict[str, Any], Any]] = []  # (name, params, the component it is built from)
    if settings.judges:
        wanted = [(ref.name, *bench_judge(ref, plan.components)) for ref in settings.judges]
    else:
        wanted = [
            (plan.components[key].spec.name, _built_params(plan.components[key]), plan.components[key])
            for key in ("encoder", "judge")
            if key in plan.components
        ]
    chosen: list[tuple[str, dict[str, Any], Any]] = []
    for name, params, component in wanted:
        if all((name, params) != (other, theirs) for other, theirs, _ in chosen):  # (default-model's dlib-resnet twice)
            chosen.append((name, params, component))
    return chosen


def _built_params(component: Any) -> dict[str, Any]:
    """The params a resolved ``component`` (or None: defaults) is built with, less its defaults."""
    return component.params.model_dump(mode="json", exclude_defaults=True) if component is not None else {}


def scoring(settings: Any, judges: Sequence[tuple[str, dict[str, Any]]]) -> dict[str, Any]:
    """How a bench scores its cells (``bench`` settings, its ``judges`` as :func:`bench_judges` gives their names and
    params): a cached row counts only if its ``evaluation`` is this. The judges are their keys in metrics.json
    (:func:`facekit.evaluate.judge_keys`: the name, for one judge per encoder) and their params count where they are
    not their defaults (another variant is another judge); with its defaults a judge is the one that rows built by
    name before components.judge was read were scored by, and those rows stand, as do rows scored before a judge of
    the encoder's name with other params judged beside it (their keys and params are these)."""
    from facekit.evaluate import judge_keys

    keys = judge_keys(judges)
    evaluation: dict[str, Any] = {"judges": sorted(keys), "max_photos": settings.max_photos, "photo_detail": "off"}
    params = {key: given for key, (_, given) in zip(keys, judges, strict=True) if given}
    if params:
        evaluation["judge_params"] = params
    if settings.data != "lfw-devtest":  # benches before bench.data scored on DevTest: their rows stand for it
        evaluation["data"] = settings.data
    return evaluation


def run_bench(recipe: str, overrides: list[str], progress: bool = True) -> tuple[list[dict[str, Any]], Path]:
    """Train and evaluate every cell of ``recipe``'s grid; returns the rows and the output folder. A second bench
    into the same bench.output at the same time is refused (before: both trained, or no-op resumed, the same cells
    and appended each its rows, the second's training times a fraction of a second)."""
    from facekit.errors import stops_said
    from facekit.locks import exclusive

    output = load_recipe(recipe, overrides).recipe.bench.output
    stop = BenchStop(Path(output) / "results.jsonl")
    with exclusive(output, "bench"), stops_said(stop.line):  # (a folder it made goes with it)
        return _run_bench(recipe, overrides, progress, stop)


@dataclass
class BenchStop:
    """Where a bench is, for what a stop (Ctrl+C, SIGTERM, SIGHUP) says: its cells finished, each a row of
    ``results`` that the same bench run again skips, and the cell it was training or scoring, which it goes on with
    from that cell's checkpoint (before: the CLI's general line, or a training's that named neither the finished
    cells nor the bench)."""

    results: Path
    rows: list[dict[str, Any]] = field(default_factory=list)  # this bench's cells so far, failed ones too
    total: int | None = None  # its cells, once each one's recipe is read
    refused: int = 0  # of which its recipe refuses (their values in the grid): run again, it refuses them again
    cell: str = ""  # the cell in hand (cell_words), "" between cells
    checkpoint: Path | None = None  # the cell in hand's
    steps: int = 0  # the cell in hand's train.steps

    def line(self, by: str) -> str:
        """What the bench stopped by ``by`` left and what the same `facekit bench` does when run again."""
        if self.total is None:
            return f"bench stopped by {by} before its first cell: no cell was trained; run it again"
        finished = sum("failed" not in row for row in self.rows)
        if finished:
            kept = f"{finished} of {self.total} cells are finished in {self.results}; the same `facekit bench` again "
            kept += "skips them and"
        else:
            kept = f"none of its {self.total} cells is finished yet; the same `facekit bench` again"
        # Refused cells are refused again, not gone on with (before: "goes on with the others" counted them).
        refused = ""
        if self.refused:
            cells = "cell its recipe refuses is" if self.refused == 1 else "cells its recipe refuses are"
            refused = f"; the {self.refused} {cells} only refused again (the reasons are in {self.results})"
        others = self.total - finished - self.refused  # (the failed among them tried again)
        if not self.cell or self.checkpoint is None:  # between cells
            if others <= 0:  # (its table, plot and report)
                return f"bench stopped by {by} as it finished: {kept} writes its table, plot and report{refused}"
            if not finished:
                then = "trains them" if not self.refused else f"trains the other {others}"
            else:
                then = "goes on with the others" if not self.refused else f"goes on with the other {others}"
            return f"bench stopped by {by}: {kept} {then}{refused}"
        step = _step_of(self.checkpoint)
        if step is None:
            then = f"trains cell {self.cell} from its start (it was stopped before its first checkpoint)"
        elif step >= self.steps:
            then = f"scores cell {self.cell}, whose training {self.checkpoint} holds whole"
        else:
            then = f"goes on with cell {self.cell} from step {step}, which {self.checkpoint} holds"
        return f"bench stopped by {by}: {kept} {then}{refused}"


def _step_of(checkpoint: Path) -> int | None:
    """The step ``checkpoint`` holds; None where there is none (yet) or it cannot be read."""
    from facekit.checkpoints import read_checkpoint_meta

    try:
        return int(read_checkpoint_meta(checkpoint)["step"])
    except (FacekitError, OSError, KeyError, TypeError, ValueError):
        return None


def _run_bench(recipe: str, overrides: list[str], progress: bool, stop: BenchStop) -> tuple[list[dict[str, Any]], Path]:
    import torch

    from facekit.checkpoints import read_checkpoint_meta
    from facekit.detail import DECODER_ONLY
    from facekit.errors import FacekitError
    from facekit.evaluate import Judge, evaluate_normalizer, judge_encoder, judge_keys, photo_set
    from facekit.locks import exclusive
    from facekit.normalize import Normalizer, inference_device
    from facekit.runs import describe_device
    from facekit.train import TrainingDiverged, prepared_data_id, train

    base = load_recipe(recipe, overrides)
    settings = base.recipe.bench
    if not settings.grid:  # one unlabelled cell would be a training, not a comparison
        raise SettingsRefused(
            f"{recipe} has no bench.grid: list the settings to compare, e.g. bench: {{grid: {{train.lr: [0.001, "
            "0.0003]}} (benchmarks/*.yaml); `facekit run` trains one recipe"
        )
    varied = [key for key in settings.grid if key.startswith(DATA_KEYS)]
    if varied:
        raise FacekitError(
            f"bench.grid varies {', '.join(varied)}, which would change the prepared data: every cell trains on "
            f"{base.recipe.prepare.output} as it is. Prepare each variant into its own prepare.output (facekit run "
            "RECIPE --stage prepare --set prepare.output=...) and bench them one grid each"
        )
    # Each cell's model is scored on infer.device, as the evaluate stage scores a recipe's (it ran on the CPU
    # whatever the recipe said); a GPU that is not there is said before the first cell trains.
    inference_device(base.recipe.infer.device, "infer.device")
    prepared = (prepared_data_id(Path(base.recipe.prepare.output)) or {}).get("arrays_sha256")
    output = Path(settings.output)
    check_bench_folder(output)
    check_prepared_for_cells(recipe, overrides, Path(base.recipe.prepare.output))
    output.mkdir(parents=True, exist_ok=True)
    (output / "last.json").unlink(missing_ok=True)  # written when this bench ends: a killed one leaves none (helper-77)
    results = output / "results.jsonl"
    # A failed cell's row is its history, not its result: the next bench tries it again.
    done = {row["recipe_hash"]: row for row in _read_rows(results) if "failed" not in row}
    chosen = bench_judges(base)
    if not chosen:
        raise FacekitError("bench needs judges: set bench.judges, components.encoder or components.judge")
    # Each built with its params (the encoder's and components.judge's from their components), keyed in each cell's
    # metrics.json as the evaluate stage keys them: before, by name alone and with no params.
    judges = [
        Judge(name, judge_encoder(name, component, None, None if component is not None else params), params)
        for name, params, component in chosen
    ]
    names = judge_keys([(name, params) for name, params, _ in chosen])  # (what the plot and report draw)
    photos = photo_set(base.data_root, settings.data, settings.max_photos)
    if not photos:
        where = f"no photos under {base.data_root} (set data.root or FACEKIT_DATA)"
        raise FacekitError(f"bench.data {settings.data}: {where}")
    # Every cell's recipe first: one the recipe refuses is said before anything trains, and is that cell's failed
    # row, not the end of the grid (an encoders x warpers product may hold one pair that cannot go together).
    plans: list[tuple[tuple[str, ...], Plan | FacekitError]] = []
    placed = placed_cells(base)
    # Each cell's values as its grid writes them (1e3, not 1000.0), for its row, its label and the lines naming it.
    written = grid_cells_as_written(recipe, overrides, placed)
    for places, shown in zip(placed, written, strict=True):
        cell = tuple(places)
        try:
            plans.append((cell, load_recipe(recipe, [*overrides, *cell], grid_cell=places)))
        except FacekitError as error:
            # The reason once, where it is read after the run (the command's summary, the cell's row): before
            # (helper-144), this line said it too, so a failed cell's reason came twice on the terminal and in a log.
            words = cell_words(cell, shown)
            logger.warning("bench cell %s is refused, the other cells go on (%s)", words, reason_at(results))
            plans.append((cell, error))
    if plans and all(isinstance(plan, FacekitError) for _, plan in plans):  # a misspelt grid: nothing to compare
        raise next(plan for _, plan in plans if isinstance(plan, FacekitError))
    refuse_same_cells(
        [
            (cell_words(cell, shown), plan)
            for (cell, plan), shown in zip(plans, written, strict=True)
            if not isinstance(plan, FacekitError)
        ],
        prepared,
    )
    # How a cell is scored: a cached row counts only if it was scored the same way (its training is reused anyway).
    evaluation = scoring(settings, [(name, params) for name, params, _ in chosen])
    rows = stop.rows
    stop.total = len(plans)
    stop.refused = sum(isinstance(plan, FacekitError) for _, plan in plans)
    for (cell, plan), places, shown in zip(plans, placed, written, strict=True):
        if isinstance(plan, FacekitError):  # named by its overrides: it has no recipe to hash
            about = {"recipe_hash": _cell_name({"refused_cell": list(cell)}, prepared), **_provenance(cell, shown)}
            rows.append(_failed(results, {**about, "evaluation": evaluation}, 0.0, plan))
            continue
        # Benched before the name read params as their component does, or before it left out what trains nothing:
        # its finished row under an earlier name, else its checkpoint there (a cell cut short, or whose scoring
        # failed: before, it trained again from step 0 under the new name).
        # (Not `names`, the judges' the plot and report are drawn for: before, they were drawn for these hashes.)
        hashes = [recipe_hash(plan, prepared), spelled_recipe_hash(plan, prepared), legacy_recipe_hash(plan, prepared)]
        begun = [name for name in hashes if (output / "cells" / name / "checkpoints" / "last.safetensors").is_file()]
        digest = next((name for name in hashes if name in done), begun[0] if begun else hashes[0])
        if digest in done and done[digest].get("evaluation") == evaluation:
            # Shown as the grid now writes it (a row of a bench before rows kept it has none; its values are these)
            same = sorted(done[digest].get("cell", [])) == sorted(cell)
            rows.append({**done[digest], AS_WRITTEN: shown} if same else done[digest])
            continue
        folder = output / "cells" / digest
        about = {
            "recipe_hash": digest,
            **_provenance(cell, shown),
            "device": describe_device(plan.recipe.train.device),
            "torch_threads": torch.get_num_threads(),
            "train_steps": plan.recipe.train.steps,
            "evaluation": evaluation,
        }
        start = time.perf_counter()
        stop.cell, stop.checkpoint = cell_words(cell, shown), folder / "checkpoints" / "last.safetensors"
        stop.steps = plan.recipe.train.steps
        try:  # a cell's own failure is its row; Ctrl+C and facekit's own bugs stop the bench
            plan = load_recipe(recipe, [*overrides, *cell, path_override("train.output", folder)], grid_cell=places)
            logger.info("bench cell %s: %s", digest, cell_words(cell, shown))
            # A cell killed part-way goes on from its checkpoint; a new one starts (resume only where one is). Its
            # time is every run's: the checkpoint carries the earlier runs' (before: the last run's alone).
            checkpoint = folder / "checkpoints" / "last.safetensors"
            before = _elapsed(read_checkpoint_meta(checkpoint)) if checkpoint.is_file() else 0.0
            # An earlier cell's pool, checked as it is copied in, is passed on as read: not read and checked again.
            # (Passed straight on, not held here: its tensors are not kept into the next cell.) Copied in under the
            # cell's training lock, taken first: before, it was copied before the training took it, so a training
            # of that folder already running (a `facekit run` into it, a second bench) had its folder written into.
            with exclusive(folder, "training"):  # (a folder it made and nothing was written to goes with it)
                train(
                    plan,
                    resume=checkpoint.is_file(),
                    progress=progress,
                    offered_pool=_reuse_pool(output / "cells", folder, plan),
                    output_locked=True,
                    stop_line=stop.line,  # (its training's stop is the bench's: said as the bench's)
                )
            trained = before + time.perf_counter() - start
            # Of which making (or reading) the training pool, every run's: the first cell of an encoder makes it, the
            # others copy it (helper-70: their times were compared as training times).
            pool = read_checkpoint_meta(checkpoint).get("pool_seconds")
            if digest in done:  # scored again another way: its training was the earlier row's (here: nothing to do)
                trained = float(done[digest].get("train_seconds", trained))
                pool = done[digest].get("pool_seconds")
            scored_on = inference_device(plan.recipe.infer.device, "infer.device")
            normalizer = Normalizer.from_checkpoint(checkpoint, detail=DECODER_ONLY, device=scored_on)
            metrics = evaluate_normalizer(normalizer, photos, judges, folder / "eval", progress=progress)
        except FacekitError as error:
            if isinstance(error, TrainingDiverged):  # its advice is for a train.output of one's own: the bench's is
                error = diverged_cell(error, cell, shown)
            words = cell_words(cell, shown)
            logger.warning("bench cell %s failed, the other cells go on (%s)", words, reason_at(results))
            rows.append(_failed(results, about, time.perf_counter() - start, error))
            stop.cell = ""
            continue
        row = {
            **about,
            "eval_device": scored_on,
            "train_seconds": round(trained, 1),
            "pool_seconds": pool,
            "metrics": metrics,
        }
        _append(results, row)
        rows.append(row)
        stop.cell = ""
    _plot(rows, names, output / "pass_rates.png")
    _report(rows, names, output)
    # Which rows this bench showed (its cached ones append nothing): what benchmarks/grid_results.py publishes.
    last = {"recipe_hashes": [row["recipe_hash"] for row in rows], "evaluation": evaluation}
    (output / "last.json").write_text(json.dumps(last, indent=1) + "\n")
    return rows, output


def reason_at(results: Path) -> str:
    """Where a failed cell's reason is, for the line said as it fails: `facekit bench` lists each failed cell with its
    reason when the grid ends (as `facekit normalize` lists each failed photo in its table), and its row in
    ``results`` keeps it, for a bench that was stopped before its end."""
    return f"its reason is listed when the bench ends, and in {results}"


def diverged_cell(
    error: TrainingDiverged, cell: tuple[str, ...], written: dict[str, Any] | None = None
) -> FacekitError:
    """A bench cell's divergence, said for a bench: the bench sets the cell's train.output (so not "into another
    train.output" or "with train.init", a single training's advice), and lowering train.lr where the grid varies it
    renames that cell alone, while elsewhere (the recipe, --set) it renames, so trains again, every cell. The grid's
    lr is named as it writes it (``written``: the cell's :func:`~facekit.recipe.grid_cells_as_written`), to be
    found there (``1e8``, not ``100000000.0``)."""
    value = next(
        (
            shown_value(json.loads(item.split("=", 1)[1]), (written or {}).get("train.lr"))
            for item in cell
            if item.startswith("train.lr=")
        ),
        None,
    )
    where = (
        f"replace train.lr {value} in bench.grid with a lower value: the same `facekit bench` then trains that cell "
        "anew and keeps the finished ones"
        if value is not None
        else f"lower train.lr ({error.lr:g}, the recipe's: bench.grid does not vary it) in the recipe or with --set "
        "train.lr=...; every cell then trains anew (the lr is part of each cell's name)"
    )
    return FacekitError(
        f"training diverged at step {error.step}: {error.problem}; nothing of that step was written "
        f"({error.kept or 'no checkpoint yet'}): {where}"
    )


def check_prepared_for_cells(recipe: str, overrides: list[str], folder: Path) -> None:
    """Refuse, before any cell, a prepare.output that holds no prepared set: every cell trains on it (the grid may
    not vary it), so each would fail alike. Before (helper-133), a fresh checkout's `facekit bench
    benchmarks/encoders_x_warps.yaml` failed its 6 cells with the same "not a prepared dataset" twice each and exit
    3; now one line says which command prepares it."""
    import shlex

    from facekit.train import check_prepared_has_faces

    if (folder / "landmarks.npy").is_file():
        return  # a set: whether it is this recipe's is each cell's training's check
    if not any((folder / name).is_file() for name in ("identities.json", "summary.json")):
        given = "".join(f" --set {shlex.quote(value)}" for value in overrides if value.startswith(DATA_KEYS))
        raise FacekitError(
            f"prepare.output {folder} is not a prepared set yet, and every cell of bench.grid trains on it: prepare "
            f"it first: facekit run {shlex.quote(recipe)} --stage prepare{given}"
        )
    check_prepared_has_faces(folder)  # a prepare that kept nobody, or arrays deleted since: its own line


def refuse_same_cells(plans: list[tuple[str, Plan]], prepared: str | None) -> None:
    """Refuse a grid two cells of which are one training (a value listed twice): before, the second was "trained" by
    a no-op resume of the first's checkpoint, scored again and shown as another cell, its training time a fraction of
    a second. Each cell is given as its words (:func:`cell_words`: ``0.1`` and ``0.10`` are told apart as written)."""
    seen: dict[str, str] = {}
    for words, plan in plans:
        digest = recipe_hash(plan, prepared)
        if digest in seen:
            raise FacekitError(
                f"bench.grid cells {seen[digest]} and {words} are the same training (recipe hash {digest}): list each "
                "value of bench.grid once"
            )
        seen[digest] = words


def _elapsed(meta: dict[str, Any]) -> float:
    """The seconds a checkpoint's training took up to it, every run's (``elapsed_seconds``; in a checkpoint written
    before 2026-12-05, its loop's and its last run's pool's)."""
    fallback = float(meta.get("train_seconds", 0.0)) + float(meta.get("pool_seconds") or 0.0)
    return float(meta.get("elapsed_seconds", fallback))


def _provenance(cell: tuple[str, ...], written: dict[str, Any]) -> dict[str, Any]:
    """What a row of ``cell`` begins with: its overrides, their values as its grid writes them (``written``:
    :data:`AS_WRITTEN`), the git sha and the package versions."""
    import facekit
    from facekit.runs import git_sha, package_versions

    versions = {"facekit": facekit.__version__, **package_versions()}
    return {"cell": list(cell), AS_WRITTEN: written, "git_sha": git_sha(), "versions": versions}


def _failed(results: Path, about: dict[str, Any], seconds: float, error: FacekitError) -> dict[str, Any]:
    """A cell's failed row (``about`` it, the seconds it ran, ``failed``: the error's line), appended to ``results``."""
    row = {**about, "train_seconds": round(seconds, 1), "failed": str(error)}
    _append(results, row)
    return row


def _append(results: Path, row: dict[str, Any]) -> None:
    with results.open("a", encoding="utf-8") as handle:
        handle.write(json.dumps(row) + "\n")


def _reuse_pool(cells_folder: Path, folder: Path, plan: Plan) -> CachedPool | None:
    """Offer the cell an earlier cell's cached training pool: the first whole one (:func:`facekit.pool.read_pool`)
    cached under a key of this cell's pool (:func:`facekit.pool.pool_keys`: the same prepared set, pool,
    augmentation, seed, encoders, photo inputs and background), copied into the cell; returned as read and checked,
    for the cell's training to take as it is (before, the training read and checked the copy again: 1-2 s more per
    cell for a 1.5 GB pool). None when the cell has a pool of its own or no earlier one is its. (Before, a pool of
    the same encoder was offered whatever the rest of its key: in a grid over train.seed or train.pool_size it was
    read, checked and copied in, and the training, finding another key, made its own while the offered tensors
    stayed in memory for the whole cell, two pools where one is needed.) The caller holds ``folder``'s training lock.

    Pools that carry their checksum are offered first. One cached before the checksum gets it in the cell's copy
    (:func:`facekit.pool.cached_pool`), never in the earlier cell's file, which is that cell's training's (rewriting
    it would need its lock, and the pool's size written once more, for what the copy already holds); before, the old
    one, first by name, was offered to every later cell, each of which computed the checksum and rewrote it again."""
    from facekit.pool import CHECKSUM_KEY, PoolNotWhole, pool_header, pool_keys, read_pool
    from facekit.train import copy_atomic

    target = folder / "pool.safetensors"
    if target.exists():
        return None
    try:
        _, keys = pool_keys(plan)
    except FacekitError:  # no prepared set: the cell's training says so
        return None
    found = []
    for candidate in sorted(cells_folder.glob("*/pool.safetensors")):
        if candidate == target:
            continue
        try:
            header = pool_header(candidate)  # (its header alone: another cell's pool is not read)
        except PoolNotWhole:  # not offered: the cell would make it again, and so would every cell after it
            continue
        if header.get("key") in keys:
            found.append((CHECKSUM_KEY not in header, candidate))
    for _, candidate in sorted(found):
        try:
            offered = read_pool(candidate)
        except PoolNotWhole:
            continue
        folder.mkdir(parents=True, exist_ok=True)  # (its lock made it, and removes it if nothing is written)
        copy_atomic(candidate, target)  # a bench killed while copying leaves no cut-short pool
        return offered
    return None


def check_bench_folder(output: Path) -> None:
    """Refuse a bench.output holding files of the user's that the bench would replace: a ``report.html`` or
    ``results.jsonl`` facekit did not write, a ``pass_rates.png`` in a folder without a bench's results, and, in a
    folder not yet a bench's, any file (helper-70: a user's report.html and pass_rates.png were replaced)."""
    from facekit.batch import refuse_foreign_folder

    resumed = (output / "results.jsonl").is_file()
    own = ["*"] if resumed else [name for name in BENCH_ENTRIES if name != "pass_rates.png"]
    refuse_foreign_folder(output, own, "bench.output", BENCH_SIGNATURES)


def _read_rows(path: Path) -> list[dict[str, Any]]:
    if not path.is_file():
        return []
    rows = []
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            rows.append(json.loads(line))
        except json.JSONDecodeError:  # a torn last line from a killed run
            continue
    return rows


def train_time(row: dict[str, Any]) -> str:
    """A cell's training seconds, with the part spent making its training pool when known (``12.3 (pool 8.6)``)."""
    pool = row.get("pool_seconds")
    return f"{row['train_seconds']}" + (f" (pool {pool:.1f})" if isinstance(pool, int | float) else "")


#: A row's key holding its cell's values as its grid writes them (:func:`facekit.recipe.grid_cells_as_written`:
#: {key: the value, each scalar its text}); rows of benches before it have none, and show the JSON's values.
AS_WRITTEN = "cell_as_written"


def shown_value(value: Any, written: Any, nested: bool = False) -> str:
    """A cell's ``value`` as its grid writes it (``written``: its :data:`AS_WRITTEN` entry, None where not known):
    ``1e3``, ``0.10``, ``yes`` where the JSON holds ``1000.0``, ``0.1``, ``true`` (helper-199: a user did not find
    their value in the table); lists and mappings in YAML's flow style, holding theirs. A value without it (a quoted
    scalar, a row of an earlier bench): JSON's text within another (``nested``), else ``str``, as before."""
    if isinstance(written, str):
        return written
    if isinstance(value, list) and isinstance(written, list) and len(written) == len(value):
        return f"[{', '.join(shown_value(inner, text, True) for inner, text in zip(value, written, strict=True))}]"
    if isinstance(value, dict) and isinstance(written, dict):
        return (
            f"{{{', '.join(f'{key}: {shown_value(inner, written.get(key), True)}' for key, inner in value.items())}}}"
        )
    return json.dumps(value) if nested else str(value)


def cell_words(cell: tuple[str, ...], written: dict[str, Any]) -> str:
    """``train.lr=1e3 train.seed=0``: a cell's overrides with their values as its grid writes them (``written``,
    :data:`AS_WRITTEN`; an override without one as it is), for the lines that name a cell."""
    words = []
    for item in cell:
        key, _, text = item.partition("=")
        words.append(f"{key}={shown_value(json.loads(text), written[key], True)}" if key in written else item)
    return " ".join(words)


def cell_label(row: dict[str, Any]) -> str:
    """``dlib-resnet, tps(regularization=0.01)``: the values of a cell, component refs shown by name and the params
    they are given (before: by name alone, so a grid over a warper's regularization showed "tps" for every cell, in the
    table, the plot and the report alike), each as the grid writes it where the row says (:data:`AS_WRITTEN`)."""
    written = row.get(AS_WRITTEN) or {}
    labels = []
    for item in row["cell"]:
        key, _, text = item.partition("=")
        value, shown = json.loads(text), written.get(key)
        if isinstance(value, dict) and "name" in value:
            params = value.get("params") or {}
            given_at = shown.get("params") if isinstance(shown, dict) else None
            given_at = given_at if isinstance(given_at, dict) else {}
            given = ", ".join(f"{name}={shown_value(params[name], given_at.get(name), True)}" for name in params)
            name = shown_value(value["name"], shown.get("name") if isinstance(shown, dict) else None)
            labels.append(f"{name}({given})" if given else name)
        else:
            labels.append(shown_value(value, shown))
    return ", ".join(labels)


def pass_rate(row: dict[str, Any], judge: str) -> float | None:
    """``judge``'s identity pass rate of a cell; None where it did not judge it (or the cell failed)."""
    values = row["metrics"]["judges"].get(judge) if "metrics" in row else None
    return None if values is None else float(values["identity_pass_rate"])


#: The longest a plot's label is, in characters: a judge's or a cell's label holding a path (a judge's weights file)
#: was wider than the figure, and matplotlib warned "Tight layout not applied" on the user's terminal, the plot's
#: margins cut. The report and the table keep the whole label.
PLOT_LABEL = 48


def _short(label: str, mark: str = "") -> str:
    """``mark`` and ``label``, or its start and end around an ellipsis where both are longer than
    :data:`PLOT_LABEL`."""
    room = PLOT_LABEL - len(mark)
    if len(label) <= room:
        return f"{mark}{label}"
    head = room // 3
    return f"{mark}{label[:head]}…{label[len(label) - (room - head - 1) :]}"


def _marks(labels: Sequence[str]) -> list[str]:
    """What begins each of ``labels`` on a plot and in the report: ``#N `` (its place, from 1) where its cut
    (:func:`_short`) is another's too, nothing elsewhere. Two judges' or cells' labels that differ only in their cut
    middle (two weights files in one long folder) were one label in the legend; the report writes the mark before
    the whole label, so each is found there."""
    cuts = Counter(_short(label) for label in labels)
    return [f"#{place} " if cuts[_short(label)] > 1 else "" for place, label in enumerate(labels, 1)]


def _plot(rows: list[dict[str, Any]], judges: list[str], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    cells = [cell_label(r) for r in rows]
    labels = [  # (failed: not 0 %)
        _short(cell, mark) + (" (failed)" if "failed" in r else "")
        for cell, mark, r in zip(cells, _marks(cells), rows, strict=True)
    ]
    figure, axis = plt.subplots(figsize=(max(5.0, 1.2 * len(rows) + 2), 3.6), dpi=100)
    width = 0.8 / max(1, len(judges))
    for j, (judge, mark) in enumerate(zip(judges, _marks(judges), strict=True)):
        rates = [pass_rate(r, judge) for r in rows]
        values = [float("nan") if rate is None else rate for rate in rates]  # no bar where a cell was not scored
        axis.bar(np.arange(len(rows)) + j * width, values, width=width, label=_short(judge, mark))
    axis.set_xticks(np.arange(len(rows)) + width * (len(judges) - 1) / 2, labels, rotation=20, ha="right", fontsize=8)
    axis.set_ylabel("identity pass rate")
    axis.set_ylim(0, 1)
    axis.legend()
    figure.tight_layout()
    figure.savefig(path)
    plt.close(figure)


def _report(rows: list[dict[str, Any]], judges: list[str], output: Path) -> None:
    import html

    from facekit.report import write_report

    # Each judge and cell with the mark the plot gives it (where its cut label is another's: _marks)
    head = "".join(
        f"<th>{html.escape(mark + j)} pass rate</th>" for j, mark in zip(judges, _marks(judges), strict=True)
    )
    cells = [cell_label(row) for row in rows]
    body = ""
    for row, cell, mark in zip(rows, cells, _marks(cells), strict=True):
        rates = "".join(
            "<td>-</td>" if pass_rate(row, j) is None else f"<td>{pass_rate(row, j):.1%}</td>" for j in judges
        )
        if "failed" in row:  # its reason where its figures would be
            rates = f'<td colspan="{max(1, len(judges))}">failed: {html.escape(row["failed"])}</td>'
        body += (
            f"<tr><td>{html.escape(mark + cell)}</td><td>{row['recipe_hash']}</td>{rates}"
            f"<td>{row.get('train_steps', '-')}</td><td>{train_time(row)}</td></tr>"
        )
    table = (
        "<h2>Cells</h2><table><tr><th>cell</th><th>recipe hash</th>"
        f"{head}<th>steps</th><th>train s</th></tr>{body}</table>"
    )
    failed = sum("failed" in row for row in rows)
    summary = {"cells": len(rows), **({"failed cells": failed} if failed else {}), "judges": judges}
    write_report(output / "report.html", "facekit bench", summary, [], [output / "pass_rates.png"], [table])
