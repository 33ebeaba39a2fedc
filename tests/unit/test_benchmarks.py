"""The benchmark scripts' own rules: which rows a grid section shows, and when a section is not written."""

from __future__ import annotations

import os
import re
import sys
from pathlib import Path
from typing import Any

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))


def row(cell: str, sha: str, evaluation: dict[str, Any], rate: float | None = 0.5) -> dict[str, Any]:
    judges = {} if rate is None else {"sface": {"identity_pass_rate": rate, "identity": {"median": 0.4}}}
    return {
        "cell": [f"train.lr={cell}"],
        "recipe_hash": sha,
        "git_sha": sha,
        "train_steps": 10,
        "train_seconds": 1.0,
        "pool_seconds": 0.5,
        "evaluation": evaluation,
        "metrics": {"photos": evaluation["max_photos"], "judges": judges},
    }


def test_a_grid_section_shows_each_cells_last_row_scored_as_the_last_run() -> None:
    """helper-75: every row of results.jsonl was listed (a cell twice, stale runs with other judges), a judge a row
    lacks read 0.0 %, and the caption took the first row's steps and photos."""
    from grid_results import current_rows

    old = {"judges": ["sface"], "max_photos": 100, "photo_detail": "off"}
    new = {**old, "max_photos": 150, "data": "helen-test"}
    rows = [row("0.1", "a", old), row("0.2", "b", old), row("0.1", "c", new), row("0.2", "d", new, rate=None)]
    assert [r["recipe_hash"] for r in current_rows(rows)] == ["c", "d"]
    assert [r["recipe_hash"] for r in current_rows(rows[:2])] == ["a", "b"]
    assert current_rows([]) == []
    # The last bench's own list, when it wrote one: it may have shown cached rows older than others (helper-76).
    last = {"recipe_hashes": ["a", "b"], "evaluation": old}
    assert [r["recipe_hash"] for r in current_rows(rows, last)] == ["a", "b"]


def test_a_grid_section_lists_a_failed_cell_with_its_reason(tmp_path: Path, monkeypatch: Any) -> None:
    """A bench records a cell that failed (its training diverged) as a row with ``failed`` and no metrics; the
    section shows it as failed, with its reason (before: a KeyError on its metrics)."""
    import json

    import grid_results

    evaluation = {"judges": ["sface"], "max_photos": 100, "photo_detail": "off"}
    failed = {
        key: value for key, value in row("0.9", "b", evaluation).items() if key not in ("metrics", "pool_seconds")
    }
    failed["failed"] = "training diverged at step 2: its loss is nan"
    (tmp_path / "results.jsonl").write_text(
        "".join(json.dumps(r) + "\n" for r in (row("0.1", "a", evaluation), failed))
    )
    written: list[str] = []
    monkeypatch.setattr(grid_results, "write_section", lambda name, body: written.append(body))
    monkeypatch.setattr(sys, "argv", ["grid_results.py", str(tmp_path)])
    grid_results.main()
    assert "| 0.1 | a | 50.0% | 0.400 |" in written[0] and "| 0.9 | b | failed | failed |" in written[0]
    assert "Failed cell 0.9: training diverged at step 2" in written[0]


def test_a_cells_label_shows_the_params_its_components_are_given() -> None:
    """Before: a grid over the warper's regularization labelled every cell "tps" in the table, plot, report and
    RESULTS.md: cells that differ read as one."""
    from facekit.bench import cell_label

    cells = [
        ['components.encoder.name="sface"', 'components.warper={"name": "tps", "params": {"regularization": 0.01}}'],
        ['components.warper={"name": "tps", "params": {"regularization": 0.1, "padding_mode": "zeros"}}'],
        ['components.warper={"name": "piecewise-affine"}', 'components.decoder.params.norm="batch"', "train.lr=0.001"],
    ]
    assert [cell_label({"cell": cell}) for cell in cells] == [
        "sface, tps(regularization=0.01)",
        'tps(regularization=0.1, padding_mode="zeros")',
        "piecewise-affine, batch, 0.001",
    ]


def test_a_cells_label_shows_its_values_as_the_grid_writes_them(tmp_path: Path, monkeypatch: Any) -> None:
    """helper-199: a grid written ``train.lr: [1e3, 0.10, yes]`` was shown as 1000.0, 0.1 and True in the bench's
    table, plot and report and in RESULTS.md, values the grid does not hold; a row keeps its cell as written
    (``cell_as_written``) and is shown so. A row of an earlier bench, without it, is shown by its JSON as before."""
    import json

    import grid_results

    from facekit.bench import AS_WRITTEN, cell_label, cell_words

    warper = 'components.warper={"name": "tps", "params": {"regularization": 0.01, "padding_mode": "zeros"}}'
    cell = ["train.lr=1000.0", "train.background_rgb=[1, 2, 31]", warper, "train.seed=true"]
    written = {
        "train.lr": "1e3",
        "train.background_rgb": ["1", "2", "0x1F"],
        "components.warper": {"name": "tps", "params": {"regularization": "1e-2", "padding_mode": None}},
        "train.seed": "yes",
    }
    assert cell_label({"cell": cell, AS_WRITTEN: written}) == (
        '1e3, [1, 2, 0x1F], tps(regularization=1e-2, padding_mode="zeros"), yes'
    )
    assert cell_label({"cell": cell}) == '1000.0, [1, 2, 31], tps(regularization=0.01, padding_mode="zeros"), True'
    assert cell_words(tuple(cell), written) == (
        "train.lr=1e3 train.background_rgb=[1, 2, 0x1F] components.warper={name: tps, params: {regularization: 1e-2, "
        'padding_mode: "zeros"}} train.seed=yes'
    )
    assert cell_words(tuple(cell[:1]), {}) == "train.lr=1000.0"  # (not found in the grid: the override as it is)
    # RESULTS.md's section: the row as written, an older row as before
    evaluation = {"judges": ["sface"], "max_photos": 100, "photo_detail": "off"}
    rows = [{**row("0.1", "a", evaluation), AS_WRITTEN: {"train.lr": "0.10"}}, row("1000.0", "b", evaluation)]
    (tmp_path / "results.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    sections: list[str] = []
    monkeypatch.setattr(grid_results, "write_section", lambda name, body: sections.append(body))
    monkeypatch.setattr(sys, "argv", ["grid_results.py", str(tmp_path)])
    grid_results.main()
    assert "| 0.10 | a | 50.0% |" in sections[0] and "| 1000.0 | b | 50.0% |" in sections[0]


def test_a_sections_notes_are_kept_when_its_script_rewrites_it(tmp_path: Path, monkeypatch: Any) -> None:
    """Before: a rerun of `benchmarks/adjust.py --memory` dropped the section's before rows and notes (measured by
    other commands, written below the script's table). What follows the section's notes marker is kept."""
    import results

    page = tmp_path / "RESULTS.md"
    marker = results.notes_marker("s")
    page.write_text(f"# r\n\n<!-- s:start -->\nold 0.5\n\n{marker}\nbefore: 0.7\n<!-- s:end -->\n\nafter\n")
    monkeypatch.setattr(results, "RESULTS", page)
    results.write_section("s", "new 0.6\n")
    assert page.read_text() == f"# r\n\n<!-- s:start -->\nnew 0.6\n\n{marker}\nbefore: 0.7\n<!-- s:end -->\n\nafter\n"
    results.write_section("s", f"new 0.8\n\n{marker}\nits own notes")  # a body with notes of its own: as given
    assert "before: 0.7" not in page.read_text() and "its own notes\n<!-- s:end -->" in page.read_text()


def test_a_section_with_nan_figures_is_not_written(tmp_path: Path, monkeypatch: Any) -> None:
    """helper-75: a run without data wrote "0 photos ... nan" over the published HELEN figures."""
    import pytest
    import results

    page = tmp_path / "RESULTS.md"
    page.write_text("# r\n\n<!-- s:start -->\nold 0.5\n<!-- s:end -->\n")
    monkeypatch.setattr(results, "RESULTS", page)
    kept = page.read_text()
    for body in ("| 0 | nan | nan% |", "mean NaN"):
        with pytest.raises(SystemExit, match="NaN figures"):
            results.write_section("s", body)
        assert page.read_text() == kept
    results.write_section("s", "new 0.6 (financial, Nancy)")
    assert "new 0.6" in page.read_text() and "old" not in page.read_text()
    assert [p.name for p in tmp_path.iterdir()] == ["RESULTS.md"]  # no temporary left beside it


def test_the_gpu_pack_gives_back_the_prepared_set(tmp_path: Path) -> None:
    """benchmarks/gpu_224.py: the set that travels compressed comes back as a prepared set's arrays, images within a
    few grey levels (WebP / JPEG), landmarks and identities exact."""
    import json

    import numpy as np
    from gpu_224 import pack_set, unpack
    from scipy.ndimage import gaussian_filter

    prepared, pack_dir, back = tmp_path / "set", tmp_path / "pack", tmp_path / "back"
    prepared.mkdir()
    pack_dir.mkdir()
    rng = np.random.default_rng(0)
    smooth = gaussian_filter(rng.uniform(0, 255, (3, 64, 64, 3)), sigma=(0, 3, 3, 0))
    images = np.clip((smooth - smooth.mean()) * 3 + 128, 0, 255).astype(np.uint8)
    np.save(prepared / "averages.npy", images)
    np.save(prepared / "textures.npy", images[::-1].copy())
    np.save(prepared / "landmarks.npy", rng.uniform(0, 64, (3, 68, 2)).astype(np.float32))
    np.save(prepared / "mean_landmarks.npy", rng.uniform(0, 64, (68, 2)).astype(np.float32))
    (prepared / "identities.json").write_text(json.dumps([{"identity": f"p{i}"} for i in range(3)]))
    pack_set(prepared, pack_dir)
    unpack(back, pack_dir)
    for name in ("averages", "textures"):
        original, restored = np.load(prepared / f"{name}.npy"), np.load(back / f"{name}.npy")
        assert restored.shape == original.shape and restored.dtype == np.uint8
        assert np.abs(restored.astype(float) - original).mean() < 3
    for name in ("landmarks", "mean_landmarks"):
        np.testing.assert_array_equal(np.load(back / f"{name}.npy"), np.load(prepared / f"{name}.npy"))
    assert (back / "identities.json").read_text() == (prepared / "identities.json").read_text()


def test_the_gpu_runs_photo_inputs_are_found_by_person(tmp_path: Path, monkeypatch: Any) -> None:
    """The photo features made from one prepared set feed another (other rows, other people): each goes to its
    person's row, those of people the set lacks are left out, and the embedding is the encoder's layers after its
    feature pool on them; features made with other photo settings than the run's are refused (helper-78)."""
    import json
    import types

    import gpu_224
    import numpy as np
    import pytest
    import torch

    from facekit.errors import FacekitError

    train = types.SimpleNamespace(photo_inputs=8, photo_max_yaw_deg=40.0, photo_casts=2, photo_cast_sigma=0.1, seed=0)
    recipe = types.SimpleNamespace(train=train)
    names = np.asarray(["ann", "bob", "zed", "ann"])
    features = np.arange(4 * 6, dtype=np.float16).reshape(4, 6) / 10
    settings = json.dumps(gpu_224.photo_settings(recipe))
    np.savez(tmp_path / "photos.npz", identity=names, features=features, settings=settings)
    monkeypatch.setattr(gpu_224, "PACK", tmp_path)
    last = torch.nn.Linear(6, 2)

    class Doubling(torch.nn.Module):  # the feature pool itself: must not be applied again
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return 2 * x

    from facekit_dlib.resnet import DlibResNet

    net = types.SimpleNamespace(layers=[torch.nn.Identity(), Doubling(), last], feature_index=1)
    net.parameters = last.parameters
    net.embed_features = lambda features: DlibResNet.embed_features(net, features)  # (the network's own, on these)
    faces = types.SimpleNamespace(identities=[{"identity": "bob"}, {"identity": "ann"}])
    targets, got_features, embeddings, own = gpu_224.packed_photo_inputs(recipe, faces, types.SimpleNamespace(net=net))
    assert targets.tolist() == [1, 0, 1] and own is None
    expected = torch.from_numpy(features[[0, 1, 3]].astype(np.float32))
    torch.testing.assert_close(got_features, expected)
    torch.testing.assert_close(embeddings, last(expected).detach())
    train.photo_casts = 0
    with pytest.raises(FacekitError, match="photo_casts"):
        gpu_224.packed_photo_inputs(recipe, faces, types.SimpleNamespace(net=net))


def test_the_gpu_runs_pool_helpers_change_no_number() -> None:
    """The plain background in threads is the plain background (also with fewer images than threads' chunks), and
    the encoder's pass moved to the GPU is the plain pass where there is none."""
    import json

    import gpu_224
    import numpy as np
    import torch

    from facekit.pool import embed_and_features, plain_background

    rng = np.random.default_rng(1)
    face = Path(__file__).resolve().parents[2] / "facekit" / "testing_data" / "face.json"
    mean = np.asarray(json.loads(face.read_text())["ibug68"], np.float32) * 112 / 200  # (a 200 px photo's points)
    for count in (3, 70):
        images = rng.integers(0, 256, (count, 64, 64, 3), dtype=np.uint8)
        textures = rng.integers(0, 256, (count, 64, 64, 3), dtype=np.uint8)
        landmarks = (mean[None] * 64 / 112 + rng.normal(0, 1, (count, 68, 2))).astype(np.float32)
        plain = plain_background(images, textures, landmarks, mean * 64 / 112, (128, 128, 128))
        threaded = gpu_224.in_threads(plain_background)(images, textures, landmarks, mean * 64 / 112, (128, 128, 128))
        for a, b in zip(plain, threaded, strict=True):
            np.testing.assert_array_equal(a, b)
    encoder = torch.nn.Linear(5, 3)
    encoder.embed_and_features = lambda x: (encoder(x), x)  # type: ignore[method-assign,assignment]
    inputs = torch.randn(4, 5)
    plain_pass = embed_and_features(encoder, inputs)
    moved = gpu_224.encode_on_gpu(embed_and_features)(encoder, inputs)  # (its outputs come back to the CPU)
    for a, b in zip(plain_pass, moved, strict=True):
        assert b.device.type == "cpu"
        torch.testing.assert_close(b, a, atol=1e-5, rtol=0)  # (equal on a machine without a GPU)


def test_a_framed_photo_is_the_photo_in_the_outputs_frame_and_the_plain_one_greys_only_the_background() -> None:
    """verification_levers.py --framed-photos: the photo moved by the similarity onto the output's landmarks."""
    import numpy as np
    from verification_levers import framed_photo

    from facekit.pool import background_mask
    from facekit.testing import real_face

    face = real_face()
    photo = np.pad(face.image, ((30, 10), (20, 20), (0, 0)), constant_values=17)  # the face off centre, dark edges
    shifted = face.ibug68 + np.array([20.0, 30.0])
    output = type("Face", (), {"image": face.image, "landmarks": face.ibug68, "source_landmarks": shifted})()
    framed = framed_photo(photo, output)
    assert framed is not None and framed.shape == face.image.shape
    assert np.abs(framed.astype(int) - face.image.astype(int)).mean() < 1.0  # the shift undone, nothing else
    plain = framed_photo(photo, output, plain=True)
    assert plain is not None
    mask = background_mask(face.ibug68, face.image.shape[0])
    assert (plain[mask > 0.999] == framed[mask > 0.999]).all() and (plain[mask < 0.001] == 128).all()
    double = framed_photo(photo, output, scale=2)
    assert double is not None and double.shape == (2 * face.image.shape[0], 2 * face.image.shape[1], 3)
    assert framed_photo(None, output) is None and framed_photo(photo, None) is None


def test_the_exaggerated_decoder_moves_only_the_part_its_mode_names(shipped_normalizer: Any) -> None:
    """verification_levers.py @shape:K / @texture:K move the landmarks / texture alone away from the mean face;
    @output:K both; K 1 is the shipped decoder's face."""
    import torch
    from verification_levers import Exaggerated, Wrapped

    decoder = shipped_normalizer.decoder
    features = torch.randn(3, decoder.feature_size, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        z = decoder.standardise(features)
        hidden = decoder.shared(z)
        plain = Wrapped(decoder).render(decoder.predict_landmarks(hidden), decoder.texture_head(hidden))
        runs = {mode: Exaggerated(decoder, mode, 1.5)(features) for mode in ("shape", "texture", "output")}
        same = Exaggerated(decoder, "output", 1.0)(features)
    torch.testing.assert_close(same.image, plain.image)
    torch.testing.assert_close(runs["shape"].texture, plain.texture)
    torch.testing.assert_close(runs["texture"].landmarks, plain.landmarks)
    assert not torch.allclose(runs["shape"].landmarks, plain.landmarks)
    assert not torch.allclose(runs["texture"].texture, plain.texture)
    torch.testing.assert_close(runs["output"].landmarks, runs["shape"].landmarks)
    torch.testing.assert_close(runs["output"].texture, runs["texture"].texture)


def test_a_bench_whose_judge_has_its_default_params_keeps_its_cached_rows() -> None:
    """6703953 counted components.judge's params in how a row was scored even when they were its defaults (dlib-resnet
    has none: judge_params {'dlib-resnet': {}}), so every row of benchmarks/default_model_grid.yaml scored before it
    (its judge built by name, the same judge) was scored again. Another variant is still another scoring."""
    from facekit.bench import bench_judges, scoring
    from facekit.recipe import load_recipe

    root = Path(__file__).resolve().parents[2]
    grid = load_recipe(str(root / "benchmarks" / "default_model_grid.yaml"))
    settings = grid.recipe.bench
    before = {"judges": ["dlib-resnet", "sface"], "max_photos": 150, "photo_detail": "off", "data": settings.data}
    assert scoring(settings, [judge[:2] for judge in bench_judges(grid)]) == before
    facenet = load_recipe(
        str(root / "benchmarks" / "default_model_grid.yaml"),
        [
            "bench.judges=[dlib-resnet, facenet]",
            "components.judge.name=facenet",
            "components.judge.params.variant=casia-webface-tf",
        ],
    )
    variant = scoring(settings, [judge[:2] for judge in bench_judges(facenet)])
    assert variant["judge_params"] == {"facenet": {"variant": "casia-webface-tf"}}


def test_bench_judges_take_params_as_eval_judges_do() -> None:
    """bench.judges listed names only: a name that was components.encoder's was built with its defaults, not the
    encoder's params, and there was no bench counterpart of `facekit eval --judge facenet:variant=casia-webface-tf`.
    An item may now be {name, params}, built with them and keyed as eval keys it; a name alone is components.judge's,
    else components.encoder's, with its params; a misspelt param or unknown name is refused at its path."""
    from facekit.bench import bench_judges, scoring
    from facekit.recipe import RecipeError, load_recipe

    grid = str(Path(__file__).resolve().parents[2] / "benchmarks" / "default_model_grid.yaml")
    encoder = ["components.encoder.name=facenet", "components.encoder.params.variant=casia-webface"]
    variant = "bench.judges=[facenet, {name: facenet, params: {variant: casia-webface-tf}}, sface]"
    plan = load_recipe(grid, [*encoder, variant])
    chosen = [judge[:2] for judge in bench_judges(plan)]
    assert chosen == [
        ("facenet", {"variant": "casia-webface"}),  # (the encoder's params: before, the default variant)
        ("facenet", {"variant": "casia-webface-tf"}),
        ("sface", {}),
    ]
    assert bench_judges(plan)[0][2] is plan.components["encoder"] and bench_judges(plan)[1][2] is None
    assert scoring(plan.recipe.bench, chosen)["judge_params"] == {
        "facenet": {"variant": "casia-webface"},
        "facenet (variant=casia-webface-tf)": {"variant": "casia-webface-tf"},
    }
    # The resolved recipe a run records writes the items as they were given
    assert plan.to_dict()["bench"]["judges"][::2] == ["facenet", "sface"]
    with pytest.raises(RecipeError) as refused:
        load_recipe(grid, ["bench.judges=[{name: facenet, params: {varaint: casia-webface-tf}}, sfce]"])
    said = str(refused.value)
    assert "bench.judges.0.params.varaint: extra field not permitted; did you mean 'variant'?" in said, said
    assert "bench.judges.1: unknown encoder 'sfce'" in said, said
    with pytest.raises(RecipeError, match=r"bench.judges.1 must be an encoder's name \(sface\) or a mapping"):
        load_recipe(grid, ["bench.judges=[sface, 3]"])


def test_a_bench_judge_listed_twice_is_refused_and_its_params_update_the_recipes_judge_as_eval_s() -> None:
    """helper-231: bench.judges dropped an item that was an earlier one again without a word (the table had a judge
    fewer than the list), where `facekit eval --judge` refuses a repeat; and an item with params was built with them
    and the defaults, where eval's --judge NAME:KEY=VALUE updates components.judge's params when it is that encoder
    (helper-102: --judge facenet:sha256=null beside a CASIA judge was a vggface2 one). Both now as eval: the repeat
    refused at its path as the recipe loads, the params the recipe's judge's updated."""
    from facekit.bench import bench_judges
    from facekit.recipe import RecipeError, load_recipe

    grid = str(Path(__file__).resolve().parents[2] / "benchmarks" / "default_model_grid.yaml")
    casia = ["components.judge.name=facenet", "components.judge.params.variant=casia-webface-tf"]
    plan = load_recipe(grid, [*casia, "bench.judges=[{name: facenet, params: {sha256: null}}, sface]"])
    chosen = bench_judges(plan)
    assert [judge[:2] for judge in chosen] == [("facenet", {"variant": "casia-webface-tf"}), ("sface", {})]
    assert chosen[0][2] is plan.components["judge"]  # (the recipe's judge itself: before, a vggface2 one)
    with_weights = load_recipe(grid, [*casia, "bench.judges=[{name: facenet, params: {weights: w.pt}}]"])
    assert bench_judges(with_weights)[0][:2] == ("facenet", {"variant": "casia-webface-tf", "weights": "w.pt"})
    for judges, said in [
        ("[sface, dlib-resnet, sface]", "bench.judges.2: sface with its default params is bench.judges.0 again"),
        (  # a name alone is components.judge's: the same judge as the item that sets its params to what they are
            "[facenet, {name: facenet, params: {sha256: null}}]",
            "bench.judges.1: facenet with params {'variant': 'casia-webface-tf'} is bench.judges.0 again",
        ),
    ]:
        with pytest.raises(RecipeError) as refused:
            load_recipe(grid, [*casia, f"bench.judges={judges}"])
        assert f"{said}: list each judge (encoder and params) once" in str(refused.value), refused.value
    # One encoder with other params is another judge (the variant the item sets over the recipe's judge's)
    other = load_recipe(grid, [*casia, "bench.judges=[facenet, {name: facenet, params: {variant: vggface2}}]"])
    assert [judge[:2] for judge in bench_judges(other)] == [
        ("facenet", {"variant": "casia-webface-tf"}),
        ("facenet", {}),
    ]


def test_quality_says_a_misused_option_or_a_missing_model_in_one_line(tmp_path: Path) -> None:
    """Before: `python benchmarks/quality.py --model model.safetensors` (no NAME=), `--detail new=abc` and a model file
    that is not there (the README's command with a typo) each ended in a traceback."""
    import subprocess

    script = Path(__file__).resolve().parents[2] / "benchmarks" / "quality.py"
    model = tmp_path / "model.safetensors"
    cases = {
        ("--model", str(model)): "--model takes NAME=PATH",
        ("--model", f"new={model}"): f"error: checkpoint not found: {model}",
        ("--model", f"new={tmp_path}"): f"error: checkpoint {tmp_path} is a folder",
        ("--model", f"new={model}", "--detail", "new=abc"): "--detail new=abc: could not convert",
        ("--model", f"new={model}", "--detail", "new=5"): "--detail new=5: detail strength must be in [0, 2]",
        ("--model", f"new={model}", "--detector", "new=hog"): "--detector takes NAME=KEY:VALUE",
    }
    env = {k: v for k, v in os.environ.items() if k != "FACEKIT_DEBUG"}
    for args, expected in cases.items():
        done = subprocess.run(
            [sys.executable, str(script), *args, "--no-write", "--photos", "1", "--folds", "0", "--out", str(tmp_path)],
            capture_output=True,
            text=True,
            env=env,
            timeout=120,
        )
        assert done.returncode in (1, 2) and expected in done.stderr, (args, done.stderr)
        assert "Traceback" not in done.stderr, (args, done.stderr)
    assert not (tmp_path / "metrics.json").exists()


def test_shared_detections_detect_a_shared_photo_once_through_the_pipeline() -> None:
    """benchmarks/quality.py's SharedDetections remembered a photo by the identity of its array, but the pipeline hands
    the detector a copy (facekit.normalize.detect_guarded): no photo was ever found again, and every method and judge
    detected every photo anew (normalize_speed.py's 'detected once, not timed' timed detection)."""
    import numpy as np
    from quality import SharedDetections

    from facekit.normalize import detect_guarded
    from facekit.types import FaceDetection

    class Counted:
        card = None
        calls = 0

        def detect_array(self, image: np.ndarray) -> list[FaceDetection]:
            Counted.calls += 1
            return [FaceDetection((1.0, 1.0, 9.0, 9.0), 1.0)] if image.mean() > 0 else []

    photos = [np.full((12, 12, 3), value, np.uint8) for value in (0, 1, 2)]
    shared = SharedDetections(Counted(), photos)
    for _ in range(3):
        found = [detect_guarded(shared, photo, "photo") for photo in photos]  # (each on a copy of the photo)
        assert [(len(faces), why) for faces, why in found] == [(0, ""), (1, ""), (1, "")]
    assert Counted.calls == 3
    other = np.full((12, 12, 3), 3, np.uint8)  # not shared: detected each time
    assert shared.detect_array(other) and shared.detect_array(other) and Counted.calls == 5


def test_quality_detector_param_value_may_hold_commas() -> None:
    """`benchmarks/quality.py --detector NAME=KEY:VALUE[,KEY:VALUE]` split at every comma, so a value holding one (a
    weight file's name) was refused as not KEY:VALUE. It now splits as --judge does (facekit.evaluate.param_items,
    with ':' for '='): where a KEY: follows, a quoted value holding anything."""
    import pytest
    from quality import detector_params

    assert detector_params("face_detector:hog") == {"face_detector": "hog"}
    assert detector_params("face_detector:hog, upsample:2") == {"face_detector": "hog", "upsample": "2"}
    assert detector_params("weights:/m/a,b.onnx,upsample:1") == {"weights": "/m/a,b.onnx", "upsample": "1"}
    assert detector_params("weights:'/m/a,x:1.onnx',x:2") == {"weights": "/m/a,x:1.onnx", "x": "2"}
    # An empty item between commas is refused (helper-147: `hog,,upsample:1` read as face_detector "hog,").
    empty = re.escape("an empty param (nothing between two commas, or a comma at an end) is not KEY:VALUE")
    assert detector_params("weights:/m/a,,b.onnx") == {"weights": "/m/a,,b.onnx"}
    for bad, said in (
        ("hog", "'hog' is not KEY:VALUE"),
        ("w,x:1", "'w' is not KEY:VALUE"),
        ("a:1,a:2", "twice"),
        ("face_detector:hog,,upsample:1", empty),
        ("face_detector:hog, ,upsample:1", empty),
    ):
        with pytest.raises(ValueError, match=said):
            detector_params(bad)


def test_quality_times_a_method_after_its_first_call() -> None:
    """benchmarks/quality.py's 'ms/photo after detection' timed the first method's first call (torch's first kernels,
    lazily built state: 0.29 against 0.15 s of CPU for 8 photos) with its photos; detection and one untimed photo
    come first."""
    import time

    import numpy as np
    from quality import timed_normalize

    class Method:
        def __init__(self) -> None:
            self.detector = self
            self.detected: list[int] = []
            self.calls = 0

        def detect_array(self, image: np.ndarray) -> list[Any]:
            self.detected.append(int(image[0, 0, 0]))
            return []

        def normalize_many(self, images: list[Any], names: list[str]) -> list[str]:
            self.calls += 1
            if self.calls == 1:
                time.sleep(0.5)  # the first call's set-up
            return names

    method = Method()
    images = [None, *(np.full((4, 4, 3), value, np.uint8) for value in (1, 2))]
    outcomes, seconds = timed_normalize(method, images, ["a", "b", "c"], "fake")
    assert outcomes == ["a", "b", "c"] and method.detected == [1, 2]
    assert seconds < 0.25


def test_the_warp_scaling_table_says_how_many_repeats_its_medians_are_of(monkeypatch: Any, capsys: Any) -> None:
    """benchmarks/warp.py's scaling table took the median of max(2, repeats - 2) runs under a caption that said only
    "median (min) ms of {repeats}" (the first table's): with --quick, 3 said and 2 taken (a median of 2 is their
    mean)."""
    import torch
    import warp

    used: list[int] = []

    def fake(contenders: dict[str, Any], batch: int, size: int, backward: bool, repeats: int, device: str) -> Any:
        used.append(repeats)
        return {k: 0.01 for k in contenders} | {f"{k}:min": 0.01 for k in contenders}

    monkeypatch.setattr(warp, "time_round_robin", fake)
    monkeypatch.setattr(warp, "available_contenders", lambda: ({"facekit": None, "naive": None}, []))
    warp.main(["--quick", "--no-memory", "--no-write", "--threads", str(torch.get_num_threads())])  # (threads kept)
    printed = capsys.readouterr().out
    assert used == [3, 3, 3, 3, 2, 2, 2]
    assert "median (min) ms of 3 interleaved repeats" in printed
    assert "Scaling (batch 4, fwd+bwd, ms; median (min) of 2 interleaved repeats):" in printed


def test_the_augment_section_says_how_many_morphs_each_rate_is_of(monkeypatch: Any, capsys: Any) -> None:
    """benchmarks/augment.py timed the in-process rate at 2 torch threads on half the morphs of the others, under
    "{count} morphs each after warm-up"."""
    import augment
    import numpy as np
    import torch

    timed: list[tuple[int, int]] = []

    def rate(dataset: Any, count: int, workers: int) -> float:
        timed.append((count, workers))
        return 1.0

    data = {"landmarks": np.zeros((2, 68, 2)), "textures": np.zeros((2, 224, 224, 3), np.uint8)}
    monkeypatch.setattr(
        augment, "synthetic_identities", lambda *args, **kwargs: {**data, "mean_landmarks": None, "backgrounds": None}
    )
    monkeypatch.setattr(augment, "poisson_rows", lambda runs, data: ([], {}))
    monkeypatch.setattr(augment, "MorphDataset", lambda *args, **kwargs: None)
    monkeypatch.setattr(augment, "morph_rate", rate)
    monkeypatch.setattr(augment.sys, "argv", ["augment.py", "--quick", "--no-write"])
    threads = torch.get_num_threads()
    try:
        augment.main()
    finally:
        torch.set_num_threads(threads)
    assert timed == [(5, 0), (10, 0), (10, 2)]
    assert "10 morphs each after warm-up (5 with torch at 2 threads)" in capsys.readouterr().out


def test_a_trial_run_of_startup_leaves_results_md_alone(tmp_path: Path, monkeypatch: Any, capsys: Any) -> None:
    """benchmarks/startup.py had no --no-write: any run (`--runs 1` to try it) rewrote the startup section."""
    import results
    import startup

    page = tmp_path / "RESULTS.md"
    page.write_text("# r\n\n<!-- startup:start -->\nold\n<!-- startup:end -->\n")
    monkeypatch.setattr(results, "RESULTS", page)
    monkeypatch.setattr(startup, "median_seconds", lambda command, runs: (0.25, [0.25] * runs))
    monkeypatch.setattr(startup.sys, "argv", ["startup.py", "--runs", "1", "--no-write"])
    startup.main()
    assert "old" in page.read_text() and "| `facekit --help` | 0.250 | 0.250 |" in capsys.readouterr().out
    monkeypatch.setattr(startup.sys, "argv", ["startup.py", "--runs", "1"])
    startup.main()
    assert "old" not in page.read_text() and "| `facekit --help` | 0.250 | 0.250 |" in page.read_text()


def test_the_adjust_selection_sections_say_which_cast_photos_no_method_was_scored_on(
    monkeypatch: Any, capsys: Any
) -> None:
    """benchmarks/adjust.py --selection (and --model) left the cast photos in which no face was found out of every
    row without a word ("100 neutral photos ... 0 skipped"); the report's section said how many."""
    import types

    import adjust

    counts = {"photos": 100, "skipped": 2, "no_face": {"scene background": 3, "studio background": 1}}
    monkeypatch.setattr(adjust, "known_casts", lambda *args, **kwargs: ({}, counts))
    monkeypatch.setattr(adjust, "FaceAdjuster", lambda *args, **kwargs: types.SimpleNamespace(normalizer=None))
    said = "2 skipped where the background segmentation (GrabCut) failed; no face found in the cast photo, so no "
    said += "method scored: 3 with the scene background, 1 with the studio one"
    for argv in (["--selection"], ["--selection", "--model", "a=a.safetensors", "--model", "b=b.safetensors"]):
        monkeypatch.setattr(adjust.sys, "argv", ["adjust.py", *argv, "--no-write"])
        adjust.main()
        printed = capsys.readouterr().out.replace("\n", " ")
        assert said in printed, argv
    assert f"a: {said}; b: {said}." in printed


def test_the_avatar_section_says_its_pass_rates_count_a_photo_sface_cannot_find_as_a_fail() -> None:
    """benchmarks/avatar.py scores every photo against its render, a photo in which SFace's detector finds no face
    included (the worst score: a fail in every column), where quality.py leaves such photos out; the section said
    neither (1 of its 100 DevTest photos: the normalized faces' 99.0 % is all of those SFace can judge)."""
    import numpy as np
    from avatar import photos_without_a_face

    inputs = np.ones((4, 3))
    inputs[2] = np.nan
    assert photos_without_a_face(inputs).startswith("SFace's detector finds no face in 1 of these 4 photos themselves")


BENCHMARKS = Path(__file__).resolve().parents[2] / "benchmarks"


class _Parsed(Exception):
    """A script's command line parsed: its main() is stopped there, before it measures anything."""


class _Refused(Exception):
    """A script's parser refused its command line (argparse's message)."""


def heading_problems(page: str, monkeypatch: Any) -> list[str]:
    """What keeps each RESULTS.md section's heading command from being rerun as written: a ``python benchmarks/X.py``
    whose script is gone or whose parser refuses its options (the script's own ``main()``, stopped where it parses),
    a section the script would write under another name (it rewrites whole sections between their markers, so the
    rerun would append a second one and leave this one stale), a ``facekit bench`` recipe that is gone."""
    import argparse
    import importlib
    import re
    import shlex

    real_parse = argparse.ArgumentParser.parse_args

    def parse_then_stop(self: argparse.ArgumentParser, args: Any = None, namespace: Any = None) -> Any:
        raise _Parsed(real_parse(self, args, namespace), spellings(self))

    def spellings(parser: argparse.ArgumentParser) -> set[str]:
        """The parser's options as spelled (argparse takes a prefix too, which a new option can make ambiguous)."""
        found = set(parser._option_string_actions)
        for action in parser._actions:
            if isinstance(action, argparse._SubParsersAction):
                found.update(*(spellings(sub) for sub in action.choices.values()))
        return found

    def refuse(self: argparse.ArgumentParser, message: str) -> Any:
        raise _Refused(message)

    monkeypatch.setattr(argparse.ArgumentParser, "parse_args", parse_then_stop)
    monkeypatch.setattr(argparse.ArgumentParser, "error", refuse)
    # benchmarks/normalize_folder.py sets it on import, as the CLI does: restored after the test.
    monkeypatch.setenv("OMP_WAIT_POLICY", os.environ.get("OMP_WAIT_POLICY", "PASSIVE"))
    problems = []
    sections = re.findall(r"<!-- (\S+):start -->\n(.*?)<!-- \1:end -->", page, re.S)
    assert sections, "no section found: the markers' form changed?"
    for name, body in sections:
        heading = body.split("\n", 1)[0]
        for recipe in re.findall(r"`facekit bench (\S+)`", heading):
            if not (BENCHMARKS.parent / recipe).is_file():
                problems.append(f"{name}: facekit bench {recipe}: no such recipe")
        for command in re.findall(r"`(python benchmarks/[^`]+)`", heading):
            words = shlex.split(command)
            script = BENCHMARKS / Path(words[1]).name
            if not script.is_file():
                problems.append(f"{name}: {words[1]}: no such script")
                continue
            monkeypatch.setattr(sys, "argv", [str(script), *words[2:]])
            try:
                importlib.import_module(script.stem).main()  # (warp.py's and gpu_224.py's take argv=None)
                problems.append(f"{name}: {words[1]} ran without parsing a command line")
                continue
            except _Refused as refused:
                problems.append(f"{name}: {words[1]} refuses its command: {refused}")
                continue
            except _Parsed as parsed:
                args, spelled = parsed.args
            for word in words[2:]:
                option = word.split("=", 1)[0]
                if option.startswith("--") and option not in spelled:
                    problems.append(f"{name}: {words[1]} has no option spelled {option}")
            source = script.read_text()
            if "publish(" not in source and "write_section(" not in source:
                continue  # writes no section (gpu_224.py): its section is written by hand
            module = sys.modules[script.stem]
            written = module.section(args) if hasattr(module, "section") else getattr(args, "section", None)
            if written is None:  # a script that writes one section, named where it writes it
                named = set(re.findall(r'(?<!def )\b(?:publish|write_section)\(\s*"([^"]+)"', source))
                computed = re.search(r'(?<!def )\b(?:publish|write_section)\(\s*[^"\s]', source)
                if len(named) != 1 or computed:  # before: any section the script named anywhere passed
                    problems.append(f"{name}: {words[1]} writes a section per mode: give it section(args)")
                    continue
                (written,) = named
            if written != name:
                problems.append(f"{name}: {words[1]} writes section {written!r}")
    return problems


def test_every_results_heading_command_is_one_its_script_accepts(monkeypatch: Any) -> None:
    """Each figure is reproducible from the command in its section's heading (helper-139's audit: the commands
    parsed, but a grid section's rerun wrote over the other grid's section and gpu-224's named no step to run)."""
    assert heading_problems((BENCHMARKS / "RESULTS.md").read_text(), monkeypatch) == []


def test_a_heading_command_the_script_would_not_run_as_written_is_named(monkeypatch: Any) -> None:
    page = (
        "<!-- quality-x:start -->\n## Q (`python benchmarks/quality.py --photoz 100 --section quality-x`)\n"
        "<!-- quality-x:end -->\n"
        "<!-- quality-y:start -->\n## Q (`python benchmarks/quality.py --photo 9 --section quality-z`)\n"
        "<!-- quality-y:end -->\n"
        "<!-- omp:start -->\n## O (`python benchmarks/omp_wait.py`)\n<!-- omp:end -->\n"
        "<!-- gone:start -->\n## G (`python benchmarks/gone.py --x 1`) (`facekit bench benchmarks/gone.yaml`)\n"
        "<!-- gone:end -->\n"
        "<!-- landmarks-dlib:start -->\n## L (`python benchmarks/landmarks.py --detector dlib`)\n"
        "<!-- landmarks-dlib:end -->\n"
        # A script with a section per mode: the mode the heading names must write this one (before: any section the
        # script could write passed, its name being somewhere in the script).
        "<!-- adjust-profiles:start -->\n## A (`python benchmarks/adjust.py --memory`)\n<!-- adjust-profiles:end -->\n"
        "<!-- attributes-selection:start -->\n## A (`python benchmarks/attributes.py`)\n"
        "<!-- attributes-selection:end -->\n"
        "<!-- correspondence-devtest:start -->\n## C (`python benchmarks/correspondence.py`)\n"
        "<!-- correspondence-devtest:end -->\n"
    )
    problems = heading_problems(page, monkeypatch)
    assert problems == [
        "quality-x: benchmarks/quality.py refuses its command: unrecognized arguments: --photoz 100",
        "quality-y: benchmarks/quality.py has no option spelled --photo",  # (argparse takes it for --photos)
        "quality-y: benchmarks/quality.py writes section 'quality-z'",
        "omp: benchmarks/omp_wait.py writes section 'omp-wait'",
        "gone: facekit bench benchmarks/gone.yaml: no such recipe",
        "gone: benchmarks/gone.py: no such script",
        "adjust-profiles: benchmarks/adjust.py writes section 'adjust-memory'",
        "attributes-selection: benchmarks/attributes.py writes section 'attributes'",
        "correspondence-devtest: benchmarks/correspondence.py writes section 'correspondence'",
    ]


def test_the_adjust_memory_photos_include_a_turned_one_read_as_the_upright_one(tmp_path: Path) -> None:
    """benchmarks/adjust.py --memory measured upright photos only; a phone's JPEG is often stored turned, with an EXIF
    orientation the reading undoes. Its row's photo is stored turned (orientation 6) and read upright as the upright
    row's picture: the same size, the values within the JPEG's rounding."""
    import numpy as np
    from adjust import LARGE_PHOTOS, camera_jpeg
    from PIL import Image

    from facekit.images import load_rgb

    assert (8000, 6000, "sRGB", 6) in LARGE_PHOTOS
    source = tmp_path / "london" / "smiling_front" / "005_08.jpg"  # the photo enlarged: a gradient stands in
    source.parent.mkdir(parents=True)
    rows, columns = np.mgrid[0:32, 0:48]
    Image.fromarray(np.dstack([columns * 5, rows * 7, 40 + columns + rows]).astype(np.uint8)).save(source)
    read = {}
    for orientation in (1, 6):
        path = tmp_path / f"photo-{orientation}.jpg"
        camera_jpeg(tmp_path, path, 96, 64, "sRGB", orientation)
        with Image.open(path) as stored:
            assert stored.size == ((96, 64) if orientation == 1 else (64, 96))
            assert stored.getexif()[0x0112] == orientation
        read[orientation] = load_rgb(path)[0]
    upright, turned = read[1], read[6]
    assert upright is not None and turned is not None and turned.shape == upright.shape == (64, 96, 3)
    assert np.abs(turned.astype(int) - upright.astype(int)).mean() < 2


def test_quality_pair_scores_say_each_pairs_call_at_its_folds_threshold(tmp_path: Path) -> None:
    """benchmarks/quality.py --pair-scores: every pair's score, the threshold its fold was judged at (chosen on the
    other folds) and whether it was called right, per method, so that the pairs a method loses and the photos keep can
    be listed (helper-207). The calls agree with the folds' accuracy; a failed pair (worst score) is called
    different."""
    import csv

    import numpy as np
    from quality import pair_calls, write_pair_scores

    from facekit.evaluate import tenfold_accuracy

    rng = np.random.default_rng(0)
    same = np.array([True, False] * 20)
    folds = np.repeat(np.arange(4), 10)
    scores = np.where(same, 0.6, 0.1) + rng.normal(0, 0.2, len(same))
    scores[2] = -1.0  # a same-person pair with no face: the worst score
    calls = pair_calls(scores, same, folds, higher_is_same=True)
    accuracy = tenfold_accuracy(scores, same, folds, True)["accuracy"]
    per_fold = [np.mean([c["right"] for c, f in zip(calls, folds, strict=True) if f == fold]) for fold in range(4)]
    assert round(float(np.mean(per_fold)), 4) == accuracy
    assert calls[2]["right"] is False and calls[2]["score"] == -1.0
    assert len({c["threshold"] for c in calls[:10]}) == 1  # one threshold a fold
    distances = pair_calls(-scores, same, folds, higher_is_same=False)  # a distance judge calls the same pairs
    assert [c["right"] for c in distances] == [c["right"] for c in calls]

    pairs = [
        {"fold": int(f), "same": bool(s), "first": f"a{k}.jpg", "second": f"b{k}.jpg"}
        for k, (f, s) in enumerate(zip(folds, same, strict=True))
    ]
    path = tmp_path / "pairs.csv"
    write_pair_scores(path, pairs, {"photos": calls, "default": distances})
    rows = list(csv.DictReader(path.open()))
    assert len(rows) == len(same) and rows[2]["first"] == "a2.jpg" and rows[2]["same"] == "1"
    assert rows[2]["photos score"] == "-1.0" and rows[2]["photos right"] == "0"
    assert list(rows[0])[-3:] == ["default score", "default threshold", "default right"]


def test_a_bench_plot_of_a_judge_named_with_its_weights_path_keeps_its_layout(tmp_path: Path) -> None:
    """A judge keyed with its params (``sface (weights=/a/long/path.onnx)``) labelled the plot's bars whole: the legend
    was wider than the figure and matplotlib warned "Tight layout not applied" on the user's terminal (ci139). Plot
    labels are cut in the middle; the report keeps them whole."""
    import warnings

    from facekit.bench import PLOT_LABEL, _plot, _short

    key = "sface (weights=/tmp/pytest-of-root/pytest-99/test_a_bench_judges_e0/models/face_recognition_sface.onnx)"
    rows = [{"cell": ["train.lr=0.001"], "metrics": {"judges": {key: {"identity_pass_rate": 0.8}}}}]
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        _plot(rows, ["sface", key], tmp_path / "pass_rates.png")
    assert (tmp_path / "pass_rates.png").stat().st_size > 0
    assert _short(key) == "sface (weights=/…ls/face_recognition_sface.onnx)" and len(_short(key)) == PLOT_LABEL
    assert _short("sface") == "sface"


def test_plot_labels_cut_alike_are_told_apart_in_the_plot_and_report(tmp_path: Path, monkeypatch: Any) -> None:
    """dc0edf0 cut a plot's labels in the middle past 48 characters: two judges whose weights files differ only in
    the cut middle (two runs' folders) shared one legend label, and two such cells one tick label. Each such label
    now begins with its place (#N), which the report writes before the whole label."""
    import matplotlib.pyplot as plt

    from facekit.bench import PLOT_LABEL, _plot, _report

    folder = "/home/someone/models/exported-2026-12-0{}/candidates/face_recognition_sface.onnx"
    judges = ["sface", *(f"sface (weights={folder.format(day)})" for day in (1, 2))]
    rows = [
        {
            "cell": [f'components.judge.params.weights="{folder.format(day)}"'],
            "recipe_hash": f"abc{day}",
            "train_steps": 10,
            "train_seconds": 1.0,
            "metrics": {"judges": {judge: {"identity_pass_rate": 0.5} for judge in judges}},
        }
        for day in (1, 2)
    ]
    drawn: list[Any] = []
    monkeypatch.setattr(plt, "close", drawn.append)
    _plot(rows, judges, tmp_path / "pass_rates.png")
    (axis,) = drawn[0].axes
    legend = [text.get_text() for text in axis.get_legend().get_texts()]
    ticks = [text.get_text() for text in axis.get_xticklabels()]
    plt.close(drawn[0])
    assert legend[0] == "sface" and legend[1].startswith("#2 ") and legend[2].startswith("#3 "), legend
    assert ticks[0].startswith("#1 ") and ticks[1].startswith("#2 "), ticks
    assert all(len(label) <= PLOT_LABEL for label in legend + ticks)
    assert len(set(legend)) == 3 and len(set(ticks)) == 2
    monkeypatch.setattr("facekit.report.write_report", lambda path, title, summary, a, b, tables: drawn.append(tables))
    _report(rows, judges, tmp_path)
    (table,) = drawn[-1]
    assert f"<th>#3 {judges[2]} pass rate</th>" in table and "<th>sface pass rate</th>" in table
    assert f"<td>#2 {folder.format(2)}</td>" in table, table
