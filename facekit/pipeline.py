"""Stages of a recipe run, in order: prepare -> augment -> train -> evaluate -> infer.

A stage whose implementation has not landed is ``None`` here: its recipe section still validates, but running it
raises :class:`StageNotBuiltError` before anything is written. Each runner takes the resolved plan and returns the
run folder it wrote.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from pathlib import Path

from facekit.errors import StageNotBuiltError
from facekit.recipe import STAGES, Plan
from facekit.runs import RunDir

StageRunner = Callable[[Plan], RunDir]


def run_prepare_stage(plan: Plan) -> RunDir:
    """The prepare stage (facekit.data.prepare), with a progress bar; its run record goes beside the dataset."""
    from facekit.data.prepare import run_prepare
    from facekit.runs import start_run

    run = start_run(plan, "prepare", Path(plan.recipe.prepare.output) / "runs")
    report = run_prepare(plan, progress=True)
    (run.path / "summary.json").write_text(json.dumps(report.summary, indent=2) + "\n")
    return run


def run_augment_stage(plan: Plan) -> RunDir:
    """Materialise ``augment.count`` random morphs of the prepared set into shards, plus a 64-morph contact sheet."""
    import numpy as np
    from PIL import Image

    from facekit.data.augment import contact_sheet, materialise, morph_dataset
    from facekit.errors import FacekitError
    from facekit.runs import start_run

    augment = plan.recipe.augment
    if not augment.enabled or augment.count == 0:
        raise FacekitError("augment.enabled is false or augment.count is 0: nothing to materialise")
    dataset = morph_dataset(plan, length=augment.count)
    run = start_run(plan, "augment", Path(augment.output) / "runs")
    materialise(dataset, augment.count, augment.output, workers=plan.recipe.prepare.workers)
    picks = np.random.default_rng(plan.recipe.train.seed).choice(
        augment.count, size=min(64, augment.count), replace=False
    )
    sheet = contact_sheet([np.round(dataset.morph(int(i)).image.clip(0, 1) * 255).astype(np.uint8) for i in picks])
    Image.fromarray(sheet).save(Path(augment.output) / "contact_sheet.png")
    return run


# Filled in as each capability lands (see the project's issues): train (#6), evaluate (#7), infer (#6).
STAGE_RUNNERS: dict[str, StageRunner | None] = {stage: None for stage in STAGES}
STAGE_RUNNERS["prepare"] = run_prepare_stage
STAGE_RUNNERS["augment"] = run_augment_stage


def stages_to_run(requested: Sequence[str] | None) -> list[str]:
    """The requested stages in pipeline order (all of them when none are requested)."""
    if not requested:
        return list(STAGES)
    unknown = [s for s in requested if s not in STAGES]
    if unknown:
        raise StageNotBuiltError(f"unknown stage {unknown[0]!r}; stages: {', '.join(STAGES)}")
    return [s for s in STAGES if s in requested]


def run_plan(plan: Plan, stages: Sequence[str] | None = None) -> list[Path]:
    """Run ``stages`` of ``plan``; refuses up front (writing nothing) if one is not built yet."""
    todo = stages_to_run(stages)
    missing = [s for s in todo if STAGE_RUNNERS[s] is None]
    if missing:
        raise StageNotBuiltError(
            f"stage{'s' if len(missing) > 1 else ''} {', '.join(missing)} of {plan.source} "
            f"{'are' if len(missing) > 1 else 'is'} not built yet in facekit; the recipe validates "
            f"(`facekit check {plan.source}`), but only these stages run today: "
            f"{', '.join(s for s, r in STAGE_RUNNERS.items() if r is not None) or 'none'}"
        )
    outputs = []
    for stage in todo:
        runner = STAGE_RUNNERS[stage]
        assert runner is not None
        outputs.append(runner(plan).path)
    return outputs
