"""A tiny trained model through inference, export, evaluation and the bench grid."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
import yaml
from PIL import Image

import facekit
from facekit.checkpoints import export_model
from facekit.errors import FacekitError
from facekit.evaluate import Judge, evaluate_normalizer, lfw_devtest
from facekit.normalize import Normalizer
from facekit.recipe import resolve
from facekit.train import train
from tests.helpers import run_cli
from tests.train.test_train import SIZE, prepared, tiny_recipe  # noqa: F401 - the fixture is shared

pytest.importorskip("dlib")


@pytest.fixture(scope="module")
def checkpoint(prepared: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:  # noqa: F811
    output = tmp_path_factory.mktemp("model")
    train(resolve(tiny_recipe(prepared, output, steps=4, checkpoint_every=4)))
    return output / "checkpoints" / "last.safetensors"


def lfw(data_root: Path, name: str, index: int = 1) -> np.ndarray:
    return np.asarray(Image.open(data_root / "lfw" / "images" / name / f"{name}_{index:04d}.jpg").convert("RGB"))


def bench_grid(data: Path, tmp_path: Path, grid: dict[str, Any], max_photos: int = 2, steps: int = 2) -> Path:
    """A tiny recipe on the prepared set ``data`` (:func:`tiny_recipe`, checkpoints every 2 steps) with a bench
    section of ``grid`` judged by dlib into ``tmp_path / "bench"``, written to ``tmp_path / "grid.yaml"``."""
    raw: dict[str, Any] = tiny_recipe(data, tmp_path / "unused", steps=steps, checkpoint_every=2)
    raw["bench"] = {"grid": grid, "max_photos": max_photos, "judges": ["dlib-resnet"]}
    raw["bench"]["output"] = str(tmp_path / "bench")
    recipe = tmp_path / "grid.yaml"
    recipe.write_text(yaml.safe_dump(raw))
    return recipe


def stub_training(monkeypatch: pytest.MonkeyPatch, checkpoint: Path) -> None:
    """Each bench cell's training stubbed: the tiny model ``checkpoint`` is the cell's last checkpoint."""
    import shutil

    def trained(plan: Any, resume: bool = False, progress: bool = False, offered_pool: Any = None, **_: Any) -> Path:
        folder = Path(plan.recipe.train.output)
        (folder / "checkpoints").mkdir(parents=True, exist_ok=True)
        shutil.copyfile(checkpoint, folder / "checkpoints" / "last.safetensors")
        return folder

    monkeypatch.setattr("facekit.train.train", trained)


def test_normalizer_round_trip(checkpoint: Path, data_root: Path) -> None:
    normalizer = Normalizer.from_checkpoint(checkpoint)
    face = normalizer.normalize(lfw(data_root, "Adrien_Brody"))
    assert face.image.shape == (32, 32, 3) and face.image.dtype == np.uint8
    assert face.landmarks.shape == (68, 2) and face.source_landmarks.shape == (68, 2)
    blank = np.full((120, 120, 3), 90, np.uint8)
    outcomes = normalizer.normalize_many([blank, None, lfw(data_root, "Ben_Affleck", 2)], ["blank", "bad", "ben"])
    assert [o.status for o in outcomes] == ["no_face", "unreadable", "ok"]
    with pytest.raises(facekit.FacekitError, match="found no face in this 120 x 120 photo"):
        normalizer.normalize(blank)


def test_export_keeps_outputs_and_drops_optimizer(checkpoint: Path, tmp_path: Path, data_root: Path) -> None:
    exported = tmp_path / "model.safetensors"
    size = export_model(checkpoint, exported)
    assert size < checkpoint.stat().st_size / 2
    from facekit.locks import current_umask

    # The user's usual permissions, as every other output has (before: 0600, safetensors' own, for checkpoints too).
    for made in (exported, checkpoint):
        assert made.stat().st_mode & 0o777 == 0o666 & ~current_umask(), oct(made.stat().st_mode)
    with pytest.raises(FacekitError, match="exists: --overwrite"):
        export_model(checkpoint, exported)
    with pytest.raises(FacekitError, match="checkpoint not found"):  # said first (before: "exists: --overwrite")
        export_model(tmp_path / "missing.safetensors", exported)
    with pytest.raises(FacekitError, match="is the checkpoint itself"):
        export_model(checkpoint, checkpoint, overwrite=True)
    for overwrite in (True, False):  # (helper-69: without --overwrite, "exists: --overwrite replaces it")
        with pytest.raises(FacekitError, match="is a folder"):
            export_model(checkpoint, tmp_path, overwrite=overwrite)
    from safetensors.torch import save_file

    save_file({"features": torch.zeros(2, 3)}, str(tmp_path / "pool.safetensors"))  # a training pool, say
    with pytest.raises(FacekitError, match="not a facekit training checkpoint"):  # before: a model with no weights
        export_model(tmp_path / "pool.safetensors", tmp_path / "empty.safetensors")
    assert not (tmp_path / "empty.safetensors").exists()
    (tmp_path / "bad.json").write_text("{not json")
    with pytest.raises(FacekitError, match="cannot be read as JSON"):
        export_model(checkpoint, tmp_path / "other.safetensors", metrics=tmp_path / "bad.json")
    # Not there, or a folder: said in words (before: "cannot be read as JSON: [Errno 2] No such file or directory").
    wrote = "give the metrics.json a `facekit eval` or benchmarks/quality.py wrote"
    with pytest.raises(FacekitError) as missing:
        export_model(checkpoint, tmp_path / "other.safetensors", metrics=tmp_path / "missing.json")
    assert str(missing.value) == f"--metrics {tmp_path / 'missing.json'}: no such file: {wrote}"
    (tmp_path / "eval").mkdir()
    with pytest.raises(FacekitError) as folder:
        export_model(checkpoint, tmp_path / "other.safetensors", metrics=tmp_path / "eval")
    assert str(folder.value) == f"--metrics {tmp_path / 'eval'} is a folder: {wrote}"
    (tmp_path / "eval" / "metrics.json").write_text("{}")  # the file inside it is named
    with pytest.raises(FacekitError) as folder:
        export_model(checkpoint, tmp_path / "other.safetensors", metrics=tmp_path / "eval")
    assert (
        str(folder.value) == f"--metrics {tmp_path / 'eval'} is a folder: {wrote} ({tmp_path / 'eval/metrics.json'}?)"
    )
    # A model file exported again (the shipped model given new figures) keeps its weights and provenance (before:
    # exported_from named the model file itself and the training checkpoint was no longer said).
    from facekit.checkpoints import read_checkpoint

    again = tmp_path / "again.safetensors"
    export_model(exported, again)
    (first, first_meta), (second, second_meta) = read_checkpoint(exported), read_checkpoint(again)
    assert first.keys() == second.keys() and all(torch.equal(first[k], second[k]) for k in first)
    assert second_meta["exported_from"] == first_meta["exported_from"] == str(checkpoint)
    assert second_meta["re_exported_from"] == str(exported) and "re_exported_from" not in first_meta
    photo = lfw(data_root, "Celine_Dion")
    full = Normalizer.from_checkpoint(checkpoint).normalize(photo)
    small = Normalizer.from_checkpoint(exported).normalize(photo)
    assert np.abs(full.image.astype(int) - small.image.astype(int)).max() <= 2  # fp16 weights
    assert np.allclose(full.landmarks, small.landmarks, atol=0.05)


def test_cli_normalize_writes_files_and_statuses(checkpoint: Path, tmp_path: Path, data_root: Path) -> None:
    photos = tmp_path / "photos"
    photos.mkdir()
    Image.fromarray(lfw(data_root, "Amelie_Mauresmo", 2)).save(photos / "amelie.jpg")
    Image.fromarray(np.full((100, 100, 3), 200, np.uint8)).save(photos / "wall.png")
    (photos / "broken.jpg").write_bytes(b"not a jpeg")
    out = tmp_path / "out"
    result = run_cli("normalize", str(photos), "-o", str(out), "--checkpoint", str(checkpoint))
    assert result.returncode == 3, result.stderr  # ran, but some photos have no output
    assert "1 of 3 photos have their normalized face" in result.stdout
    for status in ("ok", "no_face", "unreadable"):
        assert status in result.stdout
    record = json.loads((out / "amelie.json").read_text())
    assert len(record["landmarks"]) == 68 and record["status"] == "ok"
    assert (out / "amelie.png").is_file() and (out / "amelie_side.png").is_file() and (out / "grid.png").is_file()


def test_the_infer_stage_says_its_progress_as_normalize_does(
    checkpoint: Path,
    tmp_path: Path,
    data_root: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """`facekit run --stage infer` said nothing until its last line, however many photos it normalized, where
    `facekit normalize` on the same photos shows a bar (in a log: lines with the rate and ETA)."""
    from facekit.pipeline import RunOptions, run_infer_stage

    monkeypatch.setenv("FACEKIT_PROGRESS_INTERVAL", "0")
    for variable in ("FORCE_COLOR", "TTY_COMPATIBLE"):  # (either makes rich take captured output for a terminal)
        monkeypatch.delenv(variable, raising=False)
    photos = tmp_path / "photos"
    photos.mkdir()
    for index in (1, 2):
        Image.fromarray(lfw(data_root, "Amelie_Mauresmo", index)).save(photos / f"amelie{index}.jpg")
    recipe = tiny_recipe(Path("unused"), tmp_path / "unused")
    recipe["infer"] = {"inputs": [str(photos)], "checkpoint": str(checkpoint), "output": str(tmp_path / "out")}
    run_infer_stage(resolve(recipe), RunOptions())
    err = capsys.readouterr().err
    # Moved as each photo's detection ends (most of a photo), before the batch's rows (helper-196): not 0 % until the
    # end; the count is of the photos written (b64ec6d), the percentage moves through each.
    assert "normalizing: 0/2 (45 %)" in err and "normalizing: 0/2 (90 %)" in err
    assert "normalizing: 2/2 (100 %) done in" in err
    assert " photo/s" in err or " s/photo" in err


def test_export_records_only_metrics_of_the_model_it_writes(
    checkpoint: Path,
    prepared: Path,  # noqa: F811
    tmp_path: Path,
    data_root: Path,
) -> None:
    """Before: --metrics took any JSON, so a model file could carry another model's (or an older step's) figures."""
    from facekit.checkpoints import read_checkpoint_meta

    photos = lfw_devtest(data_root, 3)
    judge = Judge("dlib-resnet", facekit.load_component("encoder", "dlib-resnet").eval())
    evaluate_normalizer(Normalizer.from_checkpoint(checkpoint), photos, [judge], tmp_path / "eval")
    metrics = tmp_path / "eval" / "metrics.json"
    exported = tmp_path / "model.safetensors"
    export_model(checkpoint, exported, metrics=metrics)
    recorded = read_checkpoint_meta(exported)["metrics"]
    assert recorded["weights_sha256"] == Normalizer.from_checkpoint(exported).meta["weights_sha256"]  # fp16 alike
    other = train(resolve(tiny_recipe(prepared, tmp_path / "other", steps=1)))
    with pytest.raises(FacekitError, match=r"measured another model \(weights "):
        export_model(other / "checkpoints" / "last.safetensors", tmp_path / "wrong.safetensors", metrics=metrics)
    quality = tmp_path / "quality.json"  # benchmarks/quality.py's rows: one of them must be this model's
    quality.write_text(json.dumps({"v3": {"weights_sha256": recorded["weights_sha256"]}, "baseline": {}}))
    export_model(checkpoint, tmp_path / "from-quality.safetensors", metrics=quality)
    (tmp_path / "hand.json").write_text(json.dumps({"pass_rate": 0.99}))
    with pytest.raises(FacekitError, match="does not say which model it measured"):
        export_model(checkpoint, tmp_path / "hand.safetensors", metrics=tmp_path / "hand.json")
    assert not (tmp_path / "wrong.safetensors").exists() and not (tmp_path / "hand.safetensors").exists()


def test_a_plain_cnn_model_is_evaluated_on_its_frames_mean_face(
    prepared: Path,  # noqa: F811
    tmp_path: Path,
    data_root: Path,
) -> None:
    """helper-74: a decoder without landmarks (the plain-cnn ablation) ended every evaluation with a TypeError; its
    faces are cropped by the frame's mean face, and no landmark error is made up for it."""
    raw = tiny_recipe(prepared, tmp_path / "plain", steps=2, checkpoint_every=2)
    raw["components"]["decoder"] = {"name": "plain-cnn", "params": {"image_size": SIZE, "grid": 4, "channels": 16}}
    trained = train(resolve(raw)) / "checkpoints" / "last.safetensors"
    judge = Judge("dlib-resnet", facekit.load_component("encoder", "dlib-resnet").eval())
    normalizer = Normalizer.from_checkpoint(trained)
    metrics = evaluate_normalizer(normalizer, lfw_devtest(data_root, 3), [judge], tmp_path / "eval")
    assert metrics["normalized"] == 3
    assert metrics["judges"]["dlib-resnet"]["identity_pass_rate"] == pass_rate_of(tmp_path / "eval", "dlib-resnet", 3)
    assert metrics["landmarks"]["nme_vs_predicted"] == _stats_of_nothing()


def pass_rate_of(folder: Path, judge: str, photos: int) -> float:
    """The pass rate from the distances the evaluation saved (dlib: under 0.6), photos without an output failing
    (helper-80: the tests checked only 0 <= rate <= 1)."""
    distances = np.load(folder / f"identity-{judge}.npy")
    return round(float((distances < 0.6).sum()) / photos, 4)


def _stats_of_nothing() -> Any:
    from facekit.evaluate import _stats

    return _stats(np.array([]))


def test_evaluation_metrics_and_report(checkpoint: Path, tmp_path: Path, data_root: Path) -> None:
    judge = Judge("dlib-resnet", facekit.load_component("encoder", "dlib-resnet").eval())
    photos = lfw_devtest(data_root, 8)
    assert len({p.path for p in photos}) == 8
    metrics = evaluate_normalizer(Normalizer.from_checkpoint(checkpoint), photos, [judge], tmp_path)
    assert metrics["photos"] == 8 and metrics["normalized"] >= 6
    values = metrics["judges"]["dlib-resnet"]
    assert values["identity_pass_rate"] == pass_rate_of(tmp_path, "dlib-resnet", 8) and values["threshold"] == 0.6
    assert values["identity"]["mean"] > 0
    assert json.loads((tmp_path / "metrics.json").read_text()) == metrics
    report = (tmp_path / "report.html").read_text()
    assert report.count("<img") >= 3 and "data:image/png;base64," in report
    assert (tmp_path / "identity-dlib-resnet.png").is_file()


def test_bench_grid_rows_and_resume(prepared: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:  # noqa: F811
    from facekit import pool

    built: list[int] = []
    real_build = pool.build_pool
    monkeypatch.setattr(pool, "build_pool", lambda *a, **k: built.append(1) or real_build(*a, **k))
    checked: list[int] = []  # the pool's checksums computed: written with it, or checked when it is read
    real_checksum = pool.pool_checksum
    monkeypatch.setattr(pool, "pool_checksum", lambda *a, **k: checked.append(1) or real_checksum(*a, **k))
    recipe = bench_grid(prepared, tmp_path, {"components.warper": [{"name": "rbf-linear"}, {"name": "tps"}]}, 3)
    from facekit.bench import run_bench

    rows, output = run_bench(str(recipe), [], progress=False)
    # The first cell made the pool and wrote its checksum; the second was offered it, checked once (before: the
    # bench checked it, and the training read and checked the copy again, 1-2 s more per cell at 1.5 GB).
    assert len(checked) == 2
    assert len(rows) == 2 and len({r["recipe_hash"] for r in rows}) == 2
    # Scored on HELEN's photos, people never trained on: a grid chooses settings, and DevTest is for reports only
    # (helper-75: the default model's norm and jitter were chosen on DevTest figures).
    assert [r["evaluation"]["data"] for r in rows] == ["helen-test"] * 2
    assert [r["eval_device"] for r in rows] == ["cpu"] * 2  # infer.device, where the cells' models were scored
    shown = json.loads((output / "last.json").read_text())  # what grid_results.py publishes
    assert shown["recipe_hashes"] == [r["recipe_hash"] for r in rows] and shown["evaluation"] == rows[0]["evaluation"]
    assert len(built) == 1  # the second cell (another warper, the same pool) took the first's (before: rebuilt it)
    lines = (output / "results.jsonl").read_text().splitlines()
    assert len(lines) == 2 and all("git_sha" in json.loads(line) for line in lines)
    assert (output / "pass_rates.png").is_file() and "<table>" in (output / "report.html").read_text()
    # Drawn for its judges (before: for the last cell's recipe hashes, each a column of "-" and no bar)
    assert "<th>dlib-resnet pass rate</th>" in (output / "report.html").read_text()
    # The first cell made the training pool, the second copied it: each row says its pool's part (helper-70).
    pools = [row["pool_seconds"] for row in rows]
    assert all(isinstance(p, float) for p in pools) and pools[0] > pools[1], pools
    assert "(pool " in (output / "report.html").read_text()
    again, _ = run_bench(str(recipe), [], progress=False)  # finished cells are not trained again
    assert [r["recipe_hash"] for r in again] == [r["recipe_hash"] for r in rows]
    assert len((output / "results.jsonl").read_text().splitlines()) == 2
    # Settings that train nothing differently leave the cells as they are (helper-70: each one trained every cell
    # again).
    import facekit.bench as bench
    from facekit.recipe import load_recipe

    def no_training(*args: Any, **kwargs: Any) -> None:
        raise AssertionError("a finished cell was trained again")

    # ... but what a grid varies names its cells apart, whatever it is, and so does the device (helper-71: a grid
    # over train.sample_every trained one cell and showed it twice; cpu and cuda cells shared a name).
    raw = yaml.safe_load(recipe.read_text())
    axes = {**raw, "bench": {**raw["bench"], "grid": {"train.sample_every": [1, 2], "train.device": ["cpu", "cuda"]}}}
    (tmp_path / "axes.yaml").write_text(yaml.safe_dump(axes))
    grid = load_recipe(str(tmp_path / "axes.yaml"), [])
    names = {bench.recipe_hash(load_recipe(str(tmp_path / "axes.yaml"), list(cell))) for cell in bench.cells(grid)}
    assert len(names) == 4
    free = ["train.sample_every=1", "train.checkpoint_every=1", "evaluate.max_photos=2", f"train.output={tmp_path}/x"]
    with monkeypatch.context() as patch:
        patch.setattr("facekit.train.train", no_training)
        kept, _ = run_bench(str(recipe), free, progress=False)
        assert [r["recipe_hash"] for r in kept] == [r["recipe_hash"] for r in rows]
        # A component's params spelled otherwise are the same cells (before: 4.0 for 4 trained every cell again).
        respelled, _ = run_bench(str(recipe), ["components.decoder.params.grid=4.0"], progress=False)
        assert [r["recipe_hash"] for r in respelled] == [r["recipe_hash"] for r in rows]
        # ... and cells a bench named by the params as spelled (before 2026-12-05) are found under that name.
        from facekit.train import prepared_data_id

        prepared_sha = (prepared_data_id(prepared) or {}).get("arrays_sha256")
        spelled = ["components.decoder.params.grid=4.0"]
        names = {}
        for cell, row in zip(bench.cells(load_recipe(str(recipe), [])), rows, strict=True):
            names[row["recipe_hash"]] = bench.spelled_recipe_hash(
                load_recipe(str(recipe), [*spelled, *cell]), prepared_sha
            )
        assert all(new != old for new, old in names.items())
        text = (output / "results.jsonl").read_text()
        for new, old in names.items():
            (output / "cells" / new).rename(output / "cells" / old)
            text = text.replace(new, old)
        (output / "results.jsonl").write_text(text)
        found, _ = run_bench(str(recipe), spelled, progress=False)
        assert [r["recipe_hash"] for r in found] == list(names.values())
        for new, old in names.items():  # named as this bench names them again, for what follows
            (output / "cells" / old).rename(output / "cells" / new)
            text = text.replace(old, new)
        (output / "results.jsonl").write_text(text)
    # Scored another way (more photos): the trained cells are scored again, not shown with the old figures.
    rescored, _ = run_bench(str(recipe), ["bench.max_photos=4"], progress=False)
    assert [r["evaluation"]["max_photos"] for r in rescored] == [4, 4]
    # Its training is the earlier row's, time included (before: the no-op resume's fraction of a second).
    assert [r["train_seconds"] for r in rescored] == [r["train_seconds"] for r in rows]
    assert [r["metrics"]["photos"] for r in rescored] == [4, 4]
    assert len((output / "results.jsonl").read_text().splitlines()) == 4
    # Cells named as benches before 2026-12-04 named them are found under that name, not trained again.
    with monkeypatch.context() as patch:
        patch.setattr("facekit.train.train", no_training)
        renamed = {}
        for cell, row in zip(bench.cells(load_recipe(str(recipe), [])), rows, strict=True):
            old = bench.legacy_recipe_hash(load_recipe(str(recipe), list(cell)), prepared_sha)
            (output / "cells" / row["recipe_hash"]).rename(output / "cells" / old)
            renamed[row["recipe_hash"]] = old
        text = (output / "results.jsonl").read_text()
        for new, old in renamed.items():
            text = text.replace(new, old)
        (output / "results.jsonl").write_text(text)
        legacy, _ = run_bench(str(recipe), ["bench.max_photos=4"], progress=False)
        assert [r["recipe_hash"] for r in legacy] == list(renamed.values())
    # A judge the recipe configures (components.judge) judges the cells with its params, as the evaluate stage's
    # does (before: bench built every judge by name, so FaceNet judged as its default variant, whose weights are not
    # here, and a judge's other variant passed for the same scoring).
    judged = ["bench.max_photos=4", "bench.judges=[]", "components.judge.name=facenet"]
    variant, _ = run_bench(str(recipe), [*judged, "components.judge.params.variant=casia-webface-tf"], progress=False)
    assert [r["recipe_hash"] for r in variant] == [r["recipe_hash"] for r in rows]  # a judge names no cell apart
    assert [r["evaluation"]["judges"] for r in variant] == [["dlib-resnet", "facenet"]] * 2
    assert variant[0]["evaluation"]["judge_params"]["facenet"]["variant"] == "casia-webface-tf"
    assert all(r["metrics"]["judges"]["facenet"]["identity"] for r in variant), variant[0]["metrics"]["judges"]
    assert len((output / "results.jsonl").read_text().splitlines()) == 6


def test_a_bench_judges_with_its_encoder_and_a_judge_of_its_name_with_other_params(
    prepared: Path,  # noqa: F811
    checkpoint: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """bench picked its judges by name: a components.judge of the encoder's name with other params (SFace from another
    weights file here; FaceNet of another variant) was the only judge and the encoder never judged, and each judge was
    built without its params, so metrics.json recorded none. Both judge now, keyed as the evaluate stage keys them
    (the first under its name), and a row a bench before scored with the same judges still counts as done."""
    import html

    from facekit_opencv.sface import SOURCE

    import facekit.bench as bench
    from facekit.models import resolve_weights

    weights = str(resolve_weights(SOURCE, None, what="SFace encoder"))
    recipe = bench_grid(prepared, tmp_path, {"train.seed": [0]})
    raw = yaml.safe_load(recipe.read_text())
    raw["components"]["encoder"] = {"name": "sface"}
    raw["components"]["judge"] = {"name": "sface", "params": {"weights": weights}}
    raw["bench"]["judges"] = []
    recipe.write_text(yaml.safe_dump(raw))

    stub_training(monkeypatch, checkpoint)
    (row,), output = bench.run_bench(str(recipe), [], progress=False)
    other = f"sface (weights={weights})"
    assert row["evaluation"]["judges"] == ["sface", other], row["evaluation"]
    assert row["evaluation"]["judge_params"] == {other: {"weights": weights}}
    judges = row["metrics"]["judges"]
    assert list(judges) == ["sface", other], list(judges)
    assert "params" not in judges["sface"] and "encoder" not in judges["sface"]
    assert judges[other]["params"] == {"weights": weights} and judges[other]["encoder"] == "sface"
    assert judges[other]["identity"] == judges["sface"]["identity"]  # (the same network, from its own file)
    assert f"<th>{html.escape(other)} pass rate</th>" in (output / "report.html").read_text()
    # One judge per encoder (the judge's params those of the encoder): keyed as before, so a row scored by a bench
    # before this (one judge, by name) still counts as done: neither trained nor scored again.
    before = {"judges": ["sface"], "max_photos": 2, "photo_detail": "off", "data": "helen-test"}  # (its scoring key)
    (output / "results.jsonl").write_text(json.dumps({**row, "evaluation": before}) + "\n")

    def not_again(*args: Any, **kwargs: Any) -> None:
        raise AssertionError("a cell scored with the same judges was trained or scored again")

    monkeypatch.setattr("facekit.train.train", not_again)
    monkeypatch.setattr("facekit.evaluate.evaluate_normalizer", not_again)
    (kept,), _ = bench.run_bench(str(recipe), ["components.judge.params.weights=null"], progress=False)
    assert kept["recipe_hash"] == row["recipe_hash"] and kept["metrics"] == row["metrics"]
    assert len((output / "results.jsonl").read_text().splitlines()) == 1


def test_a_bench_judge_listed_with_params_is_built_with_them(
    prepared: Path,  # noqa: F811
    checkpoint: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """bench.judges listed names only, so SFace from another weights file (eval's --judge sface:weights=FILE) could
    not judge a bench. An item with params is built with them, beside the same encoder by name, and keyed as the
    evaluate stage keys it."""

    from facekit_opencv.sface import SOURCE

    import facekit.bench as bench
    from facekit.models import resolve_weights

    weights = str(resolve_weights(SOURCE, None, what="SFace encoder"))
    recipe = bench_grid(prepared, tmp_path, {"train.seed": [0]})
    raw = yaml.safe_load(recipe.read_text())
    raw["bench"]["judges"] = ["sface", {"name": "sface", "params": {"weights": weights}}]
    recipe.write_text(yaml.safe_dump(raw))
    from facekit.registry import load_component as real_load

    built: list[dict[str, Any]] = []

    def load_component(kind: str, name: str, **params: Any) -> Any:  # (what each judge is built with)
        built.append({"kind": kind, "name": name, **params})
        return real_load(kind, name, **params)

    stub_training(monkeypatch, checkpoint)
    monkeypatch.setattr("facekit.registry.load_component", load_component)
    (row,), _ = bench.run_bench(str(recipe), [], progress=False)
    assert {"kind": "encoder", "name": "sface", "weights": weights} in built, built
    other = f"sface (weights={weights})"
    assert row["evaluation"]["judges"] == ["sface", other] and row["evaluation"]["judge_params"] == {
        other: {"weights": weights}
    }
    assert row["metrics"]["judges"][other]["params"] == {"weights": weights}


def test_a_cell_whose_params_are_respelled_is_resumed_not_failed(prepared: Path, tmp_path: Path) -> None:  # noqa: F811
    """A default param given (or left out) names the same bench cell (facekit.bench._params_as_read), but a cell so
    named that was scored another way, or cut short, is resumed, and --resume compared the params as spelled: the
    finished cell's row became "--resume would continue ... under another recipe (components.warper.params.
    boundary_points changed ...)", on every rerun (helper-125, reviewing ba94742 by rerunning a one-cell grid)."""
    from facekit.bench import run_bench

    recipe = bench_grid(prepared, tmp_path, {"train.lr": [0.001]})
    (first,), _ = run_bench(str(recipe), [], progress=False)
    # rbf-linear's boundary_points at its default, given; scored on one photo more, so the cell is resumed.
    respelled = ["components.warper.params.boundary_points=3", "bench.max_photos=3"]
    (again,), _ = run_bench(str(recipe), respelled, progress=False)
    assert "failed" not in again, again["failed"]
    assert again["recipe_hash"] == first["recipe_hash"] and again["metrics"]["photos"] == 3
    assert again["train_seconds"] == first["train_seconds"]  # its training is the first run's


def test_a_cell_begun_under_its_spelled_name_goes_on_from_its_checkpoint(
    prepared: Path,  # noqa: F811
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A bench before 2026-12-05 named its cells by their params as spelled; one of its cells killed after its
    checkpoint but before its row (part-way through a long training), or whose scoring failed, was looked for under
    that name among the finished rows only, so the next bench trained it again from step 0 in a new folder (helper-125,
    reviewing ba94742)."""
    import facekit.bench as bench
    from facekit.recipe import load_recipe
    from facekit.train import prepared_data_id

    recipe = bench_grid(prepared, tmp_path, {"train.lr": [0.001]})
    spelled = ["components.warper.params.boundary_points=3"]
    (row,), output = bench.run_bench(str(recipe), spelled, progress=False)
    prepared_sha = (prepared_data_id(prepared) or {}).get("arrays_sha256")
    (cell,) = bench.cells(load_recipe(str(recipe), []))
    old = bench.spelled_recipe_hash(load_recipe(str(recipe), [*spelled, *cell]), prepared_sha)
    assert old != row["recipe_hash"]
    # As the older bench left it: the cell's folder under its spelled name, its checkpoint, no finished row (here:
    # its scoring failed).
    (output / "cells" / row["recipe_hash"]).rename(output / "cells" / old)
    failed = {**row, "recipe_hash": old, "failed": "scoring failed"}
    del failed["metrics"]
    (output / "results.jsonl").write_text(json.dumps(failed) + "\n")
    trained: list[tuple[Path, bool]] = []

    def record(plan: Any, resume: bool = False, progress: bool = False, offered_pool: Any = None, **_: Any) -> Path:
        trained.append((Path(plan.recipe.train.output), resume))
        raise FacekitError("stopped here by the test")

    monkeypatch.setattr("facekit.train.train", record)
    bench.run_bench(str(recipe), spelled, progress=False)
    assert trained == [(output / "cells" / old, True)]


def test_a_cell_diverging_at_the_recipes_lr_says_to_lower_it_there(
    prepared: Path,  # noqa: F811
    tmp_path: Path,
) -> None:
    """A grid that does not vary train.lr: the cell diverged at the recipe's (here --set's), so that is the lr to
    lower, and doing so trains every cell anew (the lr is part of each cell's name); the bench's folder is not the
    user's to change (before: "into another train.output, or from ... with train.init")."""
    from facekit.bench import run_bench

    recipe = bench_grid(prepared, tmp_path, {"train.seed": [0]})
    rows, _ = run_bench(str(recipe), ["train.lr=1e8"], progress=False)
    failed = rows[0]["failed"]
    assert failed.startswith("training diverged at step 2: ") and "train.output" not in failed
    assert failed.endswith(
        "; nothing of that step was written (no checkpoint yet): lower train.lr (1e+08, the recipe's: bench.grid "
        "does not vary it) in the recipe or with --set train.lr=...; every cell then trains anew (the lr is part of "
        "each cell's name)"
    )


def test_a_cell_that_fails_is_its_row_and_the_others_go_on(
    prepared: Path,  # noqa: F811
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Before: one cell whose training diverged (or that the recipe refused) stopped the whole grid with its error,
    and the cells after it were never trained; now it is that cell's failed row, the others go on, the command exits
    3, and the next bench tries the failed cells again and keeps the finished ones."""
    # lr 1e8 diverges at step 2 (test_train.py); -1 is refused by the recipe (train.lr > 0).
    recipe = bench_grid(prepared, tmp_path, {"train.lr": [1e8, -1, 0.001]})
    from facekit.bench import run_bench

    rows, output = run_bench(str(recipe), [], progress=False)
    assert [("failed" in row, "metrics" in row) for row in rows] == [(True, False), (True, False), (False, True)]
    assert rows[0]["failed"].startswith("training diverged at step 2") and "train.lr" in rows[1]["failed"]
    # The refused value named by the grid it is written in (before: `--set train.lr=-1`, never typed).
    assert (
        f"bench.grid.train.lr.1 of {recipe} (cell {{train.lr: -1}}): train.lr must be greater than 0"
        in rows[1]["failed"]
    )
    # The advice is a bench's (the bench sets each cell's train.output): the grid's lr to lower, not another
    # train.output or train.init, a single training's (before: both, neither of which a bench cell can take).
    assert rows[0]["failed"].endswith(
        "replace train.lr 100000000.0 in bench.grid with a lower value: the same `facekit bench` then trains that "
        "cell anew and keeps the finished ones"
    )
    assert "train.output" not in rows[0]["failed"] and "train.init" not in rows[0]["failed"]
    assert len({row["recipe_hash"] for row in rows}) == 3
    lines = [json.loads(line) for line in (output / "results.jsonl").read_text().splitlines()]
    assert lines == rows  # each recorded as it happened, the failed ones with their reason
    report = (output / "report.html").read_text()
    assert "failed: training diverged at step 2" in report and report.count("failed: ") == 2
    assert json.loads((output / "last.json").read_text())["recipe_hashes"] == [row["recipe_hash"] for row in rows]
    # Run again (the command, as a user would): the finished cell is kept, the failed ones are tried again.
    result = run_cli("bench", str(recipe))
    assert result.returncode == 3, result.stdout + result.stderr
    assert "2 of 3 cells failed" in result.stdout and "tries only the failed ones" in result.stdout
    # Each reason once, in the summary naming its cell; the line said as a cell fails names it and points there
    # (before: the reason on that line too, so twice on the terminal and in a log).
    assert result.stderr.count("training diverged at step 2") == 1, result.stderr
    assert result.stderr.count("train.lr must be greater than 0") == 1, result.stderr
    assert "failed cell: 100000000.0: training diverged at step 2" in result.stderr
    pointer = f"the other cells go on (its reason is listed when the bench ends, and in {output / 'results.jsonl'})"
    assert f"bench cell train.lr=-1 is refused, {pointer}" in result.stderr
    assert f"bench cell train.lr=100000000.0 failed, {pointer}" in result.stderr
    again = [json.loads(line) for line in (output / "results.jsonl").read_text().splitlines()]
    assert len(again) == 5 and [r["recipe_hash"] for r in again[3:]] == [r["recipe_hash"] for r in rows[:2]]
    assert all("failed" in row for row in again[3:])
    # Every cell refused (a misspelt grid): nothing to compare, the recipe's error as it is.
    raw = yaml.safe_load(recipe.read_text())
    raw["bench"]["grid"] = {"train.lr": [-1, 0]}
    recipe.write_text(yaml.safe_dump(raw))
    with pytest.raises(FacekitError, match=r"train\.lr"):
        run_bench(str(recipe), [], progress=False)


def test_a_refused_value_listed_twice_is_named_at_each_of_its_places(
    prepared: Path,  # noqa: F811
    tmp_path: Path,
) -> None:
    """The two cells of a value listed twice have one text: before, both rows named the first's place."""
    from facekit.bench import run_bench

    recipe = bench_grid(prepared, tmp_path, {"train.lr": [-1, 0.001, -1]})
    rows, _ = run_bench(str(recipe), [], progress=False)
    assert [re.findall(r"bench\.grid\.train\.lr\.\d", row.get("failed", "")) for row in rows] == [
        ["bench.grid.train.lr.0"],
        [],
        ["bench.grid.train.lr.2"],
    ]


def test_a_grids_values_are_shown_as_its_file_writes_them(
    prepared: Path,  # noqa: F811
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """helper-199: a grid written ``train.lr: [1e3, 0.10, yes]`` was shown as 1000.0, 0.1 and True in the bench's
    table, plot, report and the lines naming a cell (results.jsonl keeps JSON): a user could not find their value.
    Each row keeps its cell as its grid writes it, and every one of those shows it so; two values one training, as
    written (0.10 and 0.1), are told apart in their refusal."""
    import matplotlib.axes

    import facekit.bench as bench

    base = bench_grid(prepared, tmp_path, {"train.lr": [0.001]})
    recipe = tmp_path / "written.yaml"
    recipe.write_text(f"extends: {base.name}\nbench:\n  grid:\n    train.lr: [1e3, 0.10, yes]\n")

    def stopped(*args: Any, **kwargs: Any) -> None:  # (no training: each cell a failed row, named as it fails)
        raise FacekitError("stopped here by the test")

    monkeypatch.setattr("facekit.train.train", stopped)
    ticks: list[list[str]] = []
    real_ticks = matplotlib.axes.Axes.set_xticks
    monkeypatch.setattr(
        matplotlib.axes.Axes,
        "set_xticks",
        lambda axis, at, labels=None, **kw: ticks.append(list(labels or [])) or real_ticks(axis, at, labels, **kw),
    )
    with caplog.at_level("WARNING", logger="facekit.bench"):
        rows, output = bench.run_bench(str(recipe), [], progress=False)
    assert [row["cell"] for row in rows] == [["train.lr=1000.0"], ["train.lr=0.1"], ["train.lr=true"]]
    assert [row[bench.AS_WRITTEN] for row in rows] == [{"train.lr": text} for text in ("1e3", "0.10", "yes")]
    assert [bench.cell_label(row) for row in rows] == ["1e3", "0.10", "yes"]  # the table's, the report's
    assert ticks == [["1e3 (failed)", "0.10 (failed)", "yes (failed)"]]  # the plot's
    report = (output / "report.html").read_text()
    assert all(f"<tr><td>{text}</td>" in report for text in ("1e3", "0.10", "yes")), report
    said = caplog.text
    assert "bench cell train.lr=yes is refused" in said and "bench cell train.lr=1e3 failed" in said, said
    assert "bench cell train.lr=0.10 failed" in said and "1000.0" not in said and "true" not in said, said
    assert [json.loads(line) for line in (output / "results.jsonl").read_text().splitlines()] == rows
    recipe.write_text(f"extends: {base.name}\nbench:\n  grid:\n    train.lr: [0.10, 0.1]\n")
    with pytest.raises(FacekitError, match=r"bench\.grid cells train\.lr=0\.10 and train\.lr=0\.1 are the same"):
        bench.run_bench(str(recipe), [], progress=False)


def test_a_resumed_cells_time_is_every_runs(prepared: Path, tmp_path: Path) -> None:  # noqa: F811
    """Before: a cell killed and resumed was reported with the seconds of its last run alone (here ~1 s instead of
    the 1,000 its first run spent), its pool's too; the checkpoint now carries the seconds spent before."""
    from facekit.bench import cells, recipe_hash, run_bench
    from facekit.checkpoints import read_checkpoint, read_checkpoint_meta, write_model_file
    from facekit.recipe import load_recipe, path_override
    from facekit.train import prepared_data_id

    output = tmp_path / "bench"
    recipe = bench_grid(prepared, tmp_path, {"train.lr": [0.001]}, steps=4)
    (cell,) = cells(load_recipe(str(recipe), []))
    digest = recipe_hash(load_recipe(str(recipe), list(cell)), (prepared_data_id(prepared) or {}).get("arrays_sha256"))
    folder = output / "cells" / digest
    train(load_recipe(str(recipe), [*cell, "train.steps=2", path_override("train.output", folder)]))  # then killed
    last = folder / "checkpoints" / "last.safetensors"
    tensors, meta = read_checkpoint(last)
    assert meta["elapsed_seconds"] >= meta["train_seconds"] + meta["pool_seconds"]  # setup and pool included
    write_model_file(last, tensors, {**meta, "elapsed_seconds": 1000.0, "pool_seconds": 600.0})  # a long first run
    (row,), _ = run_bench(str(recipe), [], progress=False)
    assert read_checkpoint_meta(last)["step"] == 4  # resumed, not trained afresh
    assert 1000 < row["train_seconds"] < 1100 and 600 <= row["pool_seconds"] < 700, row
    assert read_checkpoint_meta(last)["elapsed_seconds"] > 1000  # carried on for the next resume


def test_a_stopped_bench_says_its_finished_cells_and_the_step_it_goes_on_from(
    prepared: Path,  # noqa: F811
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """helper-206: Ctrl+C in `facekit bench` said the training's line (its checkpoint, nothing of the cells finished)
    and SIGTERM the CLI's general line. Both say which cells are finished in results.jsonl, that the same bench
    skips them, and the step it goes on with the cell in hand from; run again, it does so."""
    import signal

    import facekit.train as training
    from facekit.bench import BenchStop
    from facekit.cli import INTERRUPTED, main
    from facekit.errors import Terminated

    recipe = bench_grid(prepared, tmp_path, {"train.lr": [0.001, 0.002]}, steps=4)
    results = tmp_path / "bench" / "results.jsonl"
    trained: list[Path] = []  # each step's cell folder
    cells: list[Path] = []  # each cell's, in order
    stop: BaseException | None = KeyboardInterrupt()
    real_log = training._log

    def log(output: Path, writer: Any, step: int, *args: Any) -> None:
        trained.append(output)
        cells.extend([] if output in cells else [output])
        if stop is not None and step == 3 and output == cells[-1] != cells[0]:  # the second cell, its checkpoint at 2
            raise stop
        real_log(output, writer, step, *args)

    monkeypatch.setattr(training, "_log", log)
    assert main(["bench", str(recipe)]) == INTERRUPTED
    second = trained[-1] / "checkpoints" / "last.safetensors"
    then = f"skips them and goes on with cell train.lr=0.002 from step 2, which {second} holds"
    finished = f"1 of 2 cells are finished in {results}; the same `facekit bench` again {then}"
    assert capsys.readouterr().err.splitlines()[-1] == f"error: bench stopped by Ctrl+C: {finished}"
    stop = Terminated("stopped by {signal}", signal.SIGTERM)
    trained.clear()
    assert main(["bench", str(recipe)]) == 143
    assert capsys.readouterr().err.splitlines()[-1] == f"error: bench stopped by SIGTERM: {finished}"
    assert set(trained) == {cells[1]}  # the finished cell was skipped
    stop = None
    trained.clear()
    assert main(["bench", str(recipe)]) == 0
    assert len(results.read_text().splitlines()) == 2 and set(trained) == {second.parent.parent}
    # Before a cell's first checkpoint, and before any cell:
    said = BenchStop(results, total=2, cell="train.lr=0.002", checkpoint=tmp_path / "none", steps=4)
    assert said.line("SIGHUP") == (
        "bench stopped by SIGHUP: none of its 2 cells is finished yet; the same `facekit bench` again trains cell "
        "train.lr=0.002 from its start (it was stopped before its first checkpoint)"
    )
    assert BenchStop(results).line("Ctrl+C") == (
        "bench stopped by Ctrl+C before its first cell: no cell was trained; run it again"
    )
    # A cell its recipe refuses is refused again by the rerun, not gone on with (before: "goes on with the others",
    # and with every other cell finished, no word of the table the rerun writes).
    rows = [{"recipe_hash": "a"}, {"recipe_hash": "b", "failed": "refused"}, {"recipe_hash": "c", "failed": "x"}]
    refused = f"the 1 cell its recipe refuses is only refused again (the reasons are in {results})"
    kept = f"2 of 4 cells are finished in {results}; the same `facekit bench` again skips them and"
    said = BenchStop(results, rows=[*rows, {"recipe_hash": "d"}], total=4, refused=1)
    assert said.line("Ctrl+C") == f"bench stopped by Ctrl+C: {kept} goes on with the other 1; {refused}"
    said = BenchStop(results, rows=[rows[0], rows[1], {"recipe_hash": "d"}], total=3, refused=1)
    assert said.line("SIGTERM") == (
        f"bench stopped by SIGTERM as it finished: {kept.replace('of 4', 'of 3')} writes its table, plot and report; "
        f"{refused}"
    )
    said = BenchStop(results, rows=rows[1:2], total=3, refused=1)
    assert said.line("SIGHUP") == (
        "bench stopped by SIGHUP: none of its 3 cells is finished yet; the same `facekit bench` again trains the "
        f"other 2; {refused}"
    )


def test_a_stopped_bench_says_its_refused_cells_are_refused_again(
    prepared: Path,  # noqa: F811
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """Before: a bench with a cell its recipe refuses, stopped, said the rerun "goes on with the others", though the
    refused cell is only refused again."""
    import facekit.train as training
    from facekit.cli import INTERRUPTED, main

    recipe = bench_grid(prepared, tmp_path, {"train.lr": [-1, 0.001]}, steps=4)
    results = tmp_path / "bench" / "results.jsonl"

    def log(output: Path, writer: Any, step: int, *args: Any) -> None:
        raise KeyboardInterrupt  # (the trained cell's first step)

    monkeypatch.setattr(training, "_log", log)
    assert main(["bench", str(recipe)]) == INTERRUPTED
    assert (
        capsys.readouterr()
        .err.splitlines()[-1]
        .endswith(
            "(it was stopped before its first checkpoint); the 1 cell its recipe refuses is only refused again (the "
            f"reasons are in {results})"
        )
    )


def test_a_grid_whose_cells_are_one_training_is_refused(prepared: Path, tmp_path: Path) -> None:  # noqa: F811
    """Before: a value listed twice was trained once, "trained" again by a no-op resume, scored twice and shown as
    two cells, the second one's time a fraction of a second. A component's param spelled two ways (``1`` and
    ``1.0``, its default given and left out) is one value too (before: two cells, the same training twice)."""
    from facekit.bench import run_bench

    tps = [{"name": "tps", "params": {"regularization": 1}}, {"name": "tps", "params": {"regularization": 1.0}}]
    default = [{"name": "tps"}, {"name": "tps", "params": {"regularization": 0.0}}]
    for grid in (
        {"train.lr": [0.001, 0.002, 0.001]},
        {"train.lr": [0.001], "train.seed": [0, 0]},
        {"components.warper": tps},
        {"components.warper": default},
        {"components.decoder.params.grid": [4, 4.0]},
    ):
        with pytest.raises(FacekitError, match=r"bench\.grid cells .* and .* are the same training"):
            run_bench(str(bench_grid(prepared, tmp_path, grid)), [], progress=False)
        assert not (tmp_path / "bench" / "results.jsonl").exists() and not (tmp_path / "bench" / "cells").exists()


def test_a_second_bench_into_the_same_output_is_refused(prepared: Path, tmp_path: Path) -> None:  # noqa: F811
    """Before: two benches into one bench.output each trained (or no-op resumed) the same cells and appended its
    rows, so every cell was listed twice, the second time with a fraction of a second's training."""
    from facekit.bench import run_bench
    from facekit.locks import exclusive

    output = tmp_path / "bench"
    recipe = bench_grid(prepared, tmp_path, {"train.lr": [0.001]})
    with exclusive(output, "bench"), pytest.raises(FacekitError, match="another facekit bench is writing into"):
        run_bench(str(recipe), [], progress=False)
    assert not output.exists()  # nothing of the refused bench's, and the holder's empty folder went with it


def test_tampered_damaged_or_absurd_models_are_refused(checkpoint: Path, tmp_path: Path, data_root: Path) -> None:
    import torch

    from facekit.checkpoints import read_checkpoint, read_checkpoint_meta
    from facekit.errors import FacekitError
    from facekit.models import ChecksumError

    exported = tmp_path / "model.safetensors"
    export_model(checkpoint, exported)
    data = bytearray(exported.read_bytes())
    data[-3] ^= 0x01  # one flipped bit in the last tensor's bytes
    tampered = tmp_path / "tampered.safetensors"
    tampered.write_bytes(bytes(data))
    with pytest.raises(ChecksumError, match="damaged"):
        read_checkpoint(tampered)
    from safetensors import safe_open
    from safetensors.torch import load_file, save_file

    with safe_open(str(exported), framework="pt") as handle:
        header = handle.metadata()
    meta = json.loads(header["facekit"])
    meta["warper_params"] = {**meta.get("warper_params", {}), "regularization": 9.99}  # edited by hand
    edited = tmp_path / "edited.safetensors"
    save_file(load_file(str(exported)), str(edited), metadata={**header, "facekit": json.dumps(meta)})
    with pytest.raises(ChecksumError, match="its metadata does not match"):
        read_checkpoint(edited)
    with pytest.raises(ChecksumError, match="its metadata does not match"):  # the header alone, as reports read it
        read_checkpoint_meta(edited)
    assert read_checkpoint_meta(tampered) == read_checkpoint(exported)[1]  # tensors are not read: no tensor check
    garbage = tmp_path / "garbage.safetensors"
    garbage.write_bytes(b"\xff" * 64)
    with pytest.raises(FacekitError, match="not a readable"):
        read_checkpoint(garbage)
    normalizer = Normalizer.from_checkpoint(exported)
    with torch.no_grad():
        normalizer.decoder.mean_landmarks += 8000.0  # what a flipped exponent bit did to a landmark
    with pytest.raises(FacekitError, match="far outside"):
        normalizer.normalize(lfw(data_root, "Adrien_Brody"))


def test_the_shipped_model_matches_its_recorded_checksum() -> None:
    from facekit.models import sha256_file
    from facekit.normalize import default_model_path, default_model_sha256

    assert sha256_file(default_model_path(verify=False)) == default_model_sha256()
    result = run_cli("models", "verify")
    text = " ".join(result.stdout.split())
    assert result.returncode == 0 and "ok shipped model dlib" in text, result.stdout


def test_shipped_models_are_chosen_by_name() -> None:
    from facekit.errors import FacekitError
    from facekit.normalize import SHIPPED_MODELS, default_model_path, model_path, resolve_model, shipped_models

    assert "dlib" in shipped_models() and set(shipped_models()) <= set(SHIPPED_MODELS)
    assert resolve_model() == resolve_model("dlib") == default_model_path()
    assert resolve_model(None, str(default_model_path())) == default_model_path()
    with pytest.raises(FacekitError, match=r"checkpoint not found: some/file\.safetensors"):
        resolve_model(None, "some/file.safetensors")  # said before any work
    with pytest.raises(FacekitError, match="not both"):
        resolve_model("dlib", "some/file.safetensors")
    with pytest.raises(FacekitError, match=r"no shipped model named 'arcface'.*dlib, sface"):
        model_path("arcface")
    for name in shipped_models():
        assert model_path(name).is_file()


def test_the_sface_model_normalizes_with_its_own_encoder(data_root: Path) -> None:
    """The second shipped model reads SFace features (its metadata names the encoder it was trained on)."""
    from facekit.normalize import Normalizer, model_path, shipped_models

    if "sface" not in shipped_models():
        pytest.skip("the SFace model is not in this install")
    normalizer = Normalizer.from_checkpoint(model_path("sface"))
    assert normalizer.meta["encoder"] == "sface" and normalizer.encoder.card.embedding_size == 128
    face = normalizer.normalize(lfw(data_root, "Adrien_Brody"))
    assert face.image.shape == (112, 112, 3) and face.landmarks.shape == (68, 2)


def test_bench_never_replaces_a_users_report_or_plot(tmp_path: Path) -> None:
    """helper-70: a bench.output holding the user's report.html and pass_rates.png had both replaced."""
    from facekit.bench import check_bench_folder, run_bench
    from facekit.errors import FacekitError

    folder = tmp_path / "mine"
    folder.mkdir()
    (folder / "report.html").write_text("my own notes")
    recipe = tmp_path / "grid.yaml"
    recipe.write_text(yaml.safe_dump({"bench": {"grid": {"train.lr": [0.1, 0.2]}, "output": str(folder)}}))
    with pytest.raises(FacekitError, match=r"bench.output .* holds files facekit did not write there \(report.html\)"):
        run_bench(str(recipe), [], progress=False)  # before any cell trains
    (folder / "report.html").unlink()
    (folder / "last.json").write_text("{}")  # a user's last.json does not pass for the bench's (helper-77)
    with pytest.raises(FacekitError, match=r"last\.json"):
        check_bench_folder(folder)
    (folder / "last.json").unlink()
    (folder / "pass_rates.png").write_bytes(b"\x89PNG mine")
    with pytest.raises(FacekitError, match=r"pass_rates\.png"):
        check_bench_folder(folder)
    (folder / "results.jsonl").write_text('{"recipe_hash": "abc"}\n')  # a bench's folder: its plot is its own
    (folder / "notes.txt").write_text("mine, and no name the bench writes")
    check_bench_folder(folder)
    (folder / "report.html").write_text("my own notes")
    with pytest.raises(FacekitError, match=r"report\.html"):
        check_bench_folder(folder)
    assert (folder / "report.html").read_text() == "my own notes"


def test_bench_without_a_grid_is_refused(tmp_path: Path) -> None:
    """Before: one unlabelled cell was trained and scored on 100 photos, exit 0."""
    from facekit.bench import run_bench
    from facekit.errors import FacekitError

    recipe = tmp_path / "one.yaml"
    recipe.write_text(yaml.safe_dump({"bench": {"max_photos": 3, "output": str(tmp_path / "bench")}}))
    with pytest.raises(FacekitError, match=r"has no bench\.grid"):
        run_bench(str(recipe), [], progress=False)
    assert not (tmp_path / "bench").exists()


def test_bench_without_a_prepared_set_says_so_once_before_any_cell(tmp_path: Path) -> None:
    """helper-133: a fresh checkout's `facekit bench benchmarks/encoders_x_warps.yaml` (README's line) trained no cell
    and failed all 6 alike, "not a prepared dataset" twice each and exit 3; now one line names the command that
    prepares the set every cell trains on, and nothing is written."""
    from facekit.bench import run_bench
    from facekit.errors import FacekitError

    recipe = tmp_path / "grid.yaml"
    grid = {"train.lr": [0.001, 0.0003]}
    bench = tmp_path / "bench"
    recipe.write_text(yaml.safe_dump({"bench": {"grid": grid, "output": str(bench)}}))
    unprepared = tmp_path / "not prepared"
    with pytest.raises(FacekitError) as refused:
        run_bench(str(recipe), [f"prepare.output={unprepared}"], progress=False)
    assert str(refused.value) == (
        f"prepare.output {unprepared} is not a prepared set yet, and every cell of bench.grid trains on it: prepare "
        f"it first: facekit run {recipe} --stage prepare --set 'prepare.output={unprepared}'"
    )
    assert not bench.exists()
    # A prepare that kept nobody: its own line, still before any cell.
    unprepared.mkdir()
    (unprepared / "identities.json").write_text("[]")
    with pytest.raises(FacekitError, match=r"holds no faces \(0 people\)"):
        run_bench(str(recipe), [f"prepare.output={unprepared}"], progress=False)
    assert not bench.exists()


@pytest.mark.skipif(torch.cuda.is_available(), reason="the refusal is for a machine without a GPU")
def test_bench_scores_on_infer_device_and_says_a_missing_gpu_first(tmp_path: Path) -> None:
    """Before: bench scored every cell's model on the CPU whatever infer.device said (the evaluate stage's device), and
    nothing told a recipe that asked for a GPU; now the device is checked before the first cell trains."""
    from facekit.bench import run_bench
    from facekit.errors import FacekitError

    recipe = tmp_path / "grid.yaml"
    grid = {"train.lr": [0.001, 0.0003]}
    recipe.write_text(yaml.safe_dump({"bench": {"grid": grid, "output": str(tmp_path / "bench")}}))
    with pytest.raises(FacekitError, match=r"infer\.device cuda: no GPU"):
        run_bench(str(recipe), ["infer.device=cuda"], progress=False)
    assert not (tmp_path / "bench").exists()


def test_bench_refuses_a_grid_over_the_prepared_data(tmp_path: Path) -> None:
    """Before: a grid over prepare.interocular_px trained every cell on the same prepared set and reported the cells
    as if they differed."""
    from facekit.bench import run_bench
    from facekit.errors import FacekitError

    recipe = tmp_path / "grid.yaml"
    grid = {"prepare.interocular_px": [20, 27.5], "train.lr": [0.001]}
    recipe.write_text(yaml.safe_dump({"bench": {"grid": grid, "output": str(tmp_path / "bench")}}))
    with pytest.raises(FacekitError, match=r"bench\.grid varies prepare\.interocular_px, which would change"):
        run_bench(str(recipe), [], progress=False)
    assert not (tmp_path / "bench").exists()
    # The data and the detector too (RELIABILITY's row said so; helper-79 found only prepare.* tested).
    for key, values in (
        ("data.train", [[{"source": "london", "subset": "neutral_front"}], [{"source": "london", "subset": "canada"}]]),
        ("components.detector.name", ["dlib", "dlib-5pt"]),
        ("components.detector.params.upsample", [0, 1]),
    ):
        recipe.write_text(yaml.safe_dump({"bench": {"grid": {key: values}, "output": str(tmp_path / "bench")}}))
        with pytest.raises(FacekitError, match=rf"bench\.grid varies {key.replace('.', '[.]')}"):
            run_bench(str(recipe), [], progress=False)
        assert not (tmp_path / "bench").exists()


def test_a_cut_short_cached_pool_is_made_again(prepared: Path, tmp_path: Path) -> None:  # noqa: F811
    """Before: a bench killed while copying one cell's pool to the next left a cut-short pool.safetensors, and every
    later run of that cell stopped with safetensors' traceback."""
    from safetensors.torch import load_file

    from facekit.bench import _reuse_pool

    first = train(resolve(tiny_recipe(prepared, tmp_path / "first", steps=1)))
    pool = (first / "pool.safetensors").read_bytes()  # (its header's order varies: compared by its tensors)
    second = tmp_path / "second"
    second.mkdir()
    (second / "pool.safetensors").write_bytes(pool[: len(pool) // 3])
    cells = tmp_path / "cells"  # the cut-short pool as a bench cell's: not offered to other cells
    (cells / "cut").mkdir(parents=True)
    (cells / "cut" / "pool.safetensors").write_bytes(pool[: len(pool) // 3])
    assert _reuse_pool(cells, cells / "next", resolve(tiny_recipe(prepared, cells / "next", steps=1))) is None
    assert not (cells / "next").exists()
    out = train(resolve(tiny_recipe(prepared, second, steps=1)))
    again, made = load_file(str(out / "pool.safetensors")), load_file(str(first / "pool.safetensors"))
    assert again.keys() == made.keys() and all(torch.equal(again[k], made[k]) for k in made)  # made again, the same


def test_a_cell_is_offered_only_a_pool_made_for_it(
    prepared: Path,  # noqa: F811
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The bench offered a cell any earlier cell's pool of the same encoder: in a grid over train.seed (or the pool's
    size, photo inputs, background) it read and checked that pool, copied it in and handed its tensors to a training
    that, finding another key, made its own pool while the offered one stayed in memory for the whole cell
    (helper-135, reviewing a1071c2). Now a cell is offered only a pool cached under a key of its own pool's."""
    import shutil

    import facekit.bench as bench

    made = train(resolve(tiny_recipe(prepared, tmp_path / "first", steps=1))) / "pool.safetensors"  # seed 0
    recipe = bench_grid(prepared, tmp_path, {"train.seed": [0, 1]})
    earlier = tmp_path / "bench" / "cells" / "earlier"
    earlier.mkdir(parents=True)
    shutil.copyfile(made, earlier / "pool.safetensors")
    offered: dict[int, Any] = {}

    def record(plan: Any, resume: bool = False, progress: bool = False, offered_pool: Any = None, **_: Any) -> Path:
        offered[plan.recipe.train.seed] = offered_pool
        raise FacekitError("stopped here by the test")

    monkeypatch.setattr("facekit.train.train", record)
    rows, output = bench.run_bench(str(recipe), [], progress=False)
    assert offered[0] is not None and offered[1] is None
    copied = [path.parent.name for path in (output / "cells").glob("*/pool.safetensors")]
    assert sorted(copied) == sorted(["earlier", rows[0]["recipe_hash"]])  # none copied into seed 1's cell


def test_a_cells_pool_is_copied_in_only_under_its_training_lock(
    prepared: Path,  # noqa: F811
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Before: the bench copied an earlier cell's pool into a cell's folder and only then did the cell's training
    take the folder's lock, so a training already in that folder (a `facekit run` into it, another bench) had its
    folder written into, and both wrote the same temporary file. Now the lock is taken first: a folder another
    training holds gets nothing (the cell is a failed row), and the copy is made while the bench holds it."""
    import shutil

    import facekit.bench as bench
    from facekit.locks import exclusive
    from facekit.recipe import load_recipe
    from facekit.train import prepared_data_id

    made = train(resolve(tiny_recipe(prepared, tmp_path / "first", steps=1))) / "pool.safetensors"  # seed 0
    recipe = bench_grid(prepared, tmp_path, {"train.seed": [0]})
    earlier = tmp_path / "bench" / "cells" / "earlier"
    earlier.mkdir(parents=True)
    shutil.copyfile(made, earlier / "pool.safetensors")
    (cell,) = bench.cells(load_recipe(str(recipe), []))
    prepared_sha = (prepared_data_id(prepared) or {}).get("arrays_sha256")
    digest = bench.recipe_hash(load_recipe(str(recipe), list(cell), grid_cell=cell), prepared_sha)
    folder = tmp_path / "bench" / "cells" / digest
    with exclusive(folder, "training"):  # another training of the cell's folder, running
        (row,), _ = bench.run_bench(str(recipe), [], progress=False)
        assert row["failed"].startswith(f"another facekit training is writing into {folder} right now")
        assert sorted(path.name for path in folder.iterdir()) == [".facekit.lock"]  # no pool, no temporary file
    held: list[bool] = []

    def record(plan: Any, resume: bool = False, progress: bool = False, offered_pool: Any = None, **_: Any) -> Path:
        assert offered_pool is not None and (folder / "pool.safetensors").is_file()
        with pytest.raises(FacekitError, match="another facekit training"), exclusive(folder, "training"):
            pass
        held.append(True)  # the copy is in, and the bench still holds the folder for the cell's training
        raise FacekitError("stopped here by the test")

    monkeypatch.setattr("facekit.train.train", record)
    bench.run_bench(str(recipe), [], progress=False)
    assert held == [True]


def test_a_pool_cached_before_the_checksum_is_offered_after_one_that_carries_it(
    prepared: Path,  # noqa: F811
    tmp_path: Path,
) -> None:
    """A cell's pool cached before pools carried a checksum gets it only in the copy the next cell's training
    rewrites (the earlier cell's file is its own, not the bench's to rewrite), and the bench offered the old one
    first by name to every cell after it, each of which computed the checksum and rewrote the pool again. Now a
    pool that carries its checksum is offered first; the old one only where there is no other."""
    from safetensors.torch import load_file, save_file

    from facekit import pool
    from facekit.bench import _reuse_pool

    made = train(resolve(tiny_recipe(prepared, tmp_path / "first", steps=1))) / "pool.safetensors"
    header, tensors = pool.pool_header(made), load_file(str(made))
    cells = tmp_path / "cells"
    for name in ("a", "b"):
        (cells / name).mkdir(parents=True)
    save_file(tensors, str(cells / "a" / "pool.safetensors"), metadata={"key": header["key"]})  # before the checksum
    (cells / "b" / "pool.safetensors").write_bytes(made.read_bytes())
    offered = _reuse_pool(cells, cells / "c", resolve(tiny_recipe(prepared, cells / "c", steps=1)))
    assert offered is not None and offered.checksum == header[pool.CHECKSUM_KEY]
    assert (cells / "c" / "pool.safetensors").read_bytes() == made.read_bytes()
    for name in ("b", "c"):  # the old one alone: offered, and left as it was
        (cells / name / "pool.safetensors").unlink()
    offered = _reuse_pool(cells, cells / "d", resolve(tiny_recipe(prepared, cells / "d", steps=1)))
    assert offered is not None and offered.checksum is None
    assert pool.pool_header(cells / "a" / "pool.safetensors") == {"key": header["key"]}


def test_a_damaged_pool_is_not_offered_to_the_next_cell(prepared: Path, tmp_path: Path) -> None:  # noqa: F811
    """A cell's cached pool whose tensors fail their checksum is made again in that cell (1a5ec64), but the bench
    offered the damaged one, first by name, to every cell after it, and each made the pool again (11 minutes at the
    paper's scale); a whole pool of another cell was there to copy (helper-125's review)."""
    from facekit.bench import _reuse_pool

    made = (train(resolve(tiny_recipe(prepared, tmp_path / "first", steps=1))) / "pool.safetensors").read_bytes()
    cells = tmp_path / "cells"
    damaged = bytearray(made)
    damaged[-100] ^= 0x10  # a byte of the last tensor's data
    for name, data in (("a", bytes(damaged)), ("b", made)):
        (cells / name).mkdir(parents=True)
        (cells / name / "pool.safetensors").write_bytes(data)
    _reuse_pool(cells, cells / "c", resolve(tiny_recipe(prepared, cells / "c", steps=1)))
    assert (cells / "c" / "pool.safetensors").read_bytes() == made
