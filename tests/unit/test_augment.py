"""Random morphs on synthetic identities: neighbours, one morph, the dataset (with workers) and materialising."""

from __future__ import annotations

import json
import os
from typing import Any

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader

from facekit.data.augment import (
    MorphDataset,
    contact_sheet,
    materialise,
    nearest_neighbours,
    procedural_landmarks,
    random_morph,
    synthetic_identities,
)
from facekit.data.poisson import face_mask
from facekit.errors import FacekitError

SIZE = 48


@pytest.fixture(scope="module")
def data() -> dict[str, np.ndarray]:
    return synthetic_identities(12, SIZE, seed=3, jitter_px=1.0)


def test_procedural_landmarks_look_like_a_face() -> None:
    lm = procedural_landmarks(224)
    assert lm.shape == (68, 2) and lm.dtype == np.float32
    assert (lm >= 0).all() and (lm <= 223).all()
    assert lm[36:42, 0].mean() < lm[42:48, 0].mean()  # left eye left of right eye
    assert lm[36:48, 1].mean() < lm[30, 1] < lm[48:68, 1].mean() < lm[8, 1]  # eyes, nose tip, mouth, chin


def test_nearest_neighbours_match_brute_force() -> None:
    rng = np.random.default_rng(0)
    n, k = 40, 5
    lms = rng.normal(0, 3, (n, 6, 2)).astype(np.float32)
    tex = rng.integers(0, 256, (n, 8, 8, 3), dtype=np.uint8)
    got = nearest_neighbours(lms, tex, k, texture_weight=2.0, texture_size=None, chunk=7)
    flat_l = lms.reshape(n, -1).astype(np.float64)
    flat_t = tex.reshape(n, -1).astype(np.float64) / 255
    d = ((flat_l[:, None] - flat_l[None]) ** 2).sum(-1) + 2.0 * ((flat_t[:, None] - flat_t[None]) ** 2).sum(-1)
    np.fill_diagonal(d, np.inf)
    np.testing.assert_array_equal(got, np.argsort(d, axis=1)[:, :k])
    assert not (got == np.arange(n)[:, None]).any()


def test_nearest_neighbours_never_self_even_with_duplicates() -> None:
    lms = np.zeros((6, 3, 2), np.float32)
    tex = np.zeros((6, 4, 4, 3), np.uint8)  # all identical: every distance is 0
    got = nearest_neighbours(lms, tex, 5, texture_size=None)
    assert not (got == np.arange(6)[:, None]).any()
    assert all(sorted(row) == sorted(set(range(6)) - {i}) for i, row in enumerate(got.tolist()))
    with pytest.raises(ValueError):
        nearest_neighbours(lms, tex, 6)


def _morph(data: dict[str, np.ndarray], index: int, seed: int, **kw: object):
    nb = nearest_neighbours(data["landmarks"], data["textures"], 3)
    return random_morph(
        index,
        np.random.default_rng(seed),
        data["landmarks"],
        data["textures"],
        data["mean_landmarks"],
        data["backgrounds"],
        nb,
        blur_px=1.5,
        **kw,
    )


def test_random_morph_shapes_and_interpolation(data) -> None:
    m = _morph(data, 2, seed=5)
    assert m.image.shape == (SIZE, SIZE, 3) and m.image.dtype == np.float32
    assert m.texture.shape == (SIZE, SIZE, 3) and m.landmarks.shape == (68, 2)
    assert 0.0 <= m.image.min() and m.image.max() <= 1.0
    assert m.seed == 2 and m.partner != 2
    a, b = m.landmark_weight, m.texture_weight
    assert 0 < a < 1 and 0 < b < 1
    li, lj = data["landmarks"][2], data["landmarks"][m.partner]
    np.testing.assert_allclose(m.landmarks, (1 - a) * li + a * lj, atol=1e-5)
    ti, tj = data["textures"][2] / 255.0, data["textures"][m.partner] / 255.0
    np.testing.assert_allclose(m.texture, (1 - b) * ti + b * tj, atol=1e-5)


def test_closed_mouths_with_coincident_inner_lips_morph(data) -> None:
    """dlib puts a closed mouth's inner-lip points on top of each other; the warp must not fail on that."""
    closed = {k: np.array(v) for k, v in data.items()}
    closed["landmarks"][:, 65] = closed["landmarks"][:, 61]
    closed["landmarks"][:, 66] = closed["landmarks"][:, 62]
    closed["mean_landmarks"][65] = closed["mean_landmarks"][61]
    m = _morph(closed, 1, seed=3)
    assert np.isfinite(m.image).all()


def test_random_morph_is_deterministic_for_a_fixed_rng(data) -> None:
    m1, m2, m3 = _morph(data, 4, seed=9), _morph(data, 4, seed=9), _morph(data, 4, seed=10)
    np.testing.assert_array_equal(m1.image, m2.image)
    assert (m1.partner, m1.landmark_weight) == (m2.partner, m2.landmark_weight)
    assert m3.landmark_weight != m1.landmark_weight


def test_zero_weights_give_back_the_seed(data) -> None:
    # a large colour weight switches off the Poisson colour shift, leaving only the two warps' resampling
    m = _morph(data, 1, seed=0, landmark_weight=0.0, texture_weight=0.0, colour_weight=100.0)
    np.testing.assert_array_equal(m.landmarks, data["landmarks"][1])
    np.testing.assert_allclose(m.texture, data["textures"][1] / 255.0, atol=1e-6)
    # the synthetic background is the texture warped to the seed's landmarks: the morph reproduces it in the face
    face = face_mask(data["landmarks"][1], SIZE, SIZE, 0.0) > 0
    inner = face & (np.abs(np.gradient(face.astype(np.float32))).sum(0) == 0)
    err = np.abs(m.image - data["backgrounds"][1] / 255.0)[inner]
    assert err.mean() < 0.02
    other = _morph(data, 1, seed=0, landmark_weight=0.0, texture_weight=1.0, colour_weight=100.0)
    assert np.abs(other.image - data["backgrounds"][1] / 255.0)[inner].mean() > 2 * err.mean()


def _dataset(data: dict[str, np.ndarray], length: int = 6) -> MorphDataset:
    return MorphDataset(
        data["landmarks"],
        data["textures"],
        data["mean_landmarks"],
        data["backgrounds"],
        length=length,
        seed=7,
        k=3,
        blur_px=1.5,
    )


def test_dataset_items(data) -> None:
    ds = _dataset(data)
    item = ds[3]
    assert item["image"].shape == (3, SIZE, SIZE) and item["image"].dtype == torch.float32
    assert item["texture"].shape == (3, SIZE, SIZE) and item["landmarks"].shape == (68, 2)
    assert torch.equal(ds[3]["image"], item["image"])
    assert not torch.equal(ds[2]["image"], item["image"])
    with pytest.raises(IndexError):
        ds[6]


def test_dataset_paths_and_workers_match_in_process(data, tmp_path) -> None:
    paths = {}
    for name in ("landmarks", "textures", "mean_landmarks", "backgrounds"):
        paths[name] = str(tmp_path / f"{name}.npy")
        np.save(paths[name], data[name])
    ds_paths = MorphDataset(
        paths["landmarks"],
        paths["textures"],
        paths["mean_landmarks"],
        paths["backgrounds"],
        length=6,
        seed=7,
        k=3,
        blur_px=1.5,
    )
    ref = [_dataset(data)[i] for i in range(6)]
    got = list(DataLoader(ds_paths, batch_size=None, num_workers=2))
    for a, b in zip(ref, got, strict=True):
        for key in a:
            assert torch.equal(a[key], b[key]), key


def test_materialise_resumes_and_never_duplicates(data, tmp_path) -> None:
    ds = _dataset(data, length=30)
    out = tmp_path / "morphs"
    first = materialise(ds, 30, out, shard_size=10, workers=0, progress=False)
    assert [p.name for p in first] == ["shard-00000", "shard-00001", "shard-00002"]
    mtimes = {p.name: os.stat(p / "images.npy").st_mtime_ns for p in first}
    last = np.load(out / "shard-00002" / "images.npy")
    for f in (out / "shard-00002").iterdir():
        f.unlink()
    (out / "shard-00002").rmdir()
    second = materialise(ds, 30, out, shard_size=10, workers=2, progress=False)
    assert [p.name for p in second] == ["shard-00002"]
    for name in ("shard-00000", "shard-00001"):
        assert os.stat(out / name / "images.npy").st_mtime_ns == mtimes[name]
    np.testing.assert_array_equal(np.load(out / "shard-00002" / "images.npy"), last)
    items = np.concatenate([np.load(out / f"shard-{s:05d}" / "items.npy") for s in range(3)])
    np.testing.assert_array_equal(items, np.arange(30))
    index = json.loads((out / "index.json").read_text())
    assert index["count"] == 30 and [s["count"] for s in index["shards"]] == [10, 10, 10]
    images = np.load(out / "shard-00001" / "images.npy", mmap_mode="r")
    assert images.shape == (10, SIZE, SIZE, 3) and images.dtype == np.uint8
    expected = np.round(ds[13]["image"].numpy().transpose(1, 2, 0) * 255).astype(np.uint8)
    np.testing.assert_array_equal(images[3], expected)
    assert materialise(ds, 30, out, shard_size=10, workers=0, progress=False) == []


def test_a_stop_as_materialises_bar_starts_stops_the_bar(data, tmp_path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A Ctrl+C (or SIGTERM) whose handler ran as the morphs' bar returned from its start, before the ``try`` that
    stops it: the bar stayed started (the terminal's cursor hidden after the command's line). Raised here as the start
    returns."""
    from facekit.progress import Progress

    bars: list[Progress] = []
    real_start = Progress.start

    def start_then_stop(self: Progress) -> None:
        real_start(self)
        bars.append(self)
        raise KeyboardInterrupt  # as Ctrl+C would, as the start returns

    monkeypatch.setattr(Progress, "start", start_then_stop)
    with pytest.raises(KeyboardInterrupt):
        materialise(_dataset(data, length=10), 10, tmp_path / "morphs", shard_size=10, workers=0, progress=True)
    assert len(bars) == 1 and not bars[0].live.is_started


def test_an_error_as_materialises_workers_shut_down_still_stops_the_bar(
    data, tmp_path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Before: an exception from the closing of the morphs' iterator (its workers' shut-down; a stop landing there)
    skipped the bar's stop, and the terminal's cursor stayed hidden after the command's line."""
    from facekit.data import augment
    from facekit.progress import Progress

    bars: list[Progress] = []
    real_start = Progress.start

    def started(self: Progress) -> None:
        real_start(self)
        bars.append(self)

    class ClosingFails:
        def __init__(self, loader: Any) -> None:
            self.batches = iter(loader)

        def __next__(self) -> Any:
            return next(self.batches)

        def close(self) -> None:
            raise KeyboardInterrupt  # as Ctrl+C would, as the workers shut down

    monkeypatch.setattr(Progress, "start", started)
    monkeypatch.setattr(augment, "data_batches", ClosingFails)
    with pytest.raises(KeyboardInterrupt):
        materialise(_dataset(data, length=10), 10, tmp_path / "morphs", shard_size=10, workers=0, progress=True)
    assert len(bars) == 1 and not bars[0].live.is_started


def test_materialise_after_the_count_or_the_data_changed(data, tmp_path) -> None:
    out = tmp_path / "morphs"
    materialise(_dataset(data, length=25), 25, out, shard_size=10, workers=0, progress=False, fingerprint={"a": 1})
    more = materialise(
        _dataset(data, length=30), 30, out, shard_size=10, workers=0, progress=False, fingerprint={"a": 1}
    )
    assert [p.name for p in more] == ["shard-00002"]  # held items 20-24 only: made again with 20-29
    items = np.concatenate([np.load(out / f"shard-{s:05d}" / "items.npy") for s in range(3)])
    np.testing.assert_array_equal(items, np.arange(30))
    with pytest.raises(FacekitError, match="other prepared data or settings"):
        materialise(_dataset(data, length=30), 30, out, shard_size=10, workers=0, progress=False, fingerprint={"a": 2})

    # A run killed before its index.json, then run with another fingerprint (another seed): the killed run's shards
    # are made again, not kept (before: kept, and index.json then named the new seed over the old morphs).
    (out / "index.json").unlink()
    again = materialise(
        _dataset(data, length=30), 30, out, shard_size=10, workers=0, progress=False, fingerprint={"a": 2}
    )
    assert [p.name for p in again] == ["shard-00000", "shard-00001", "shard-00002"]
    assert (
        materialise(_dataset(data, length=30), 30, out, shard_size=10, workers=0, progress=False, fingerprint={"a": 2})
        == []
    )
    # Shards made before shards kept their fingerprint, under an index.json of this one: kept, not made again
    # (helper-55: every existing augment folder was rebuilt in full after the upgrade).
    for shard in ("shard-00000", "shard-00001", "shard-00002"):
        (out / shard / "fingerprint.json").unlink()
    kept = materialise(
        _dataset(data, length=30), 30, out, shard_size=10, workers=0, progress=False, fingerprint={"a": 2}
    )
    assert kept == [] and (out / "shard-00001" / "fingerprint.json").is_file()
    # A shard the index does not list (a killed run's, beyond its count) is made again, not vouched for.
    more = materialise(
        _dataset(data, length=40), 40, out, shard_size=10, workers=0, progress=False, fingerprint={"a": 2}
    )
    (out / "shard-00003" / "fingerprint.json").unlink()
    (out / "index.json").write_text((out / "index.json").read_text().replace('"count": 40', '"count": 30'))
    index = json.loads((out / "index.json").read_text())
    index["shards"] = index["shards"][:3]
    (out / "index.json").write_text(json.dumps(index))
    again = materialise(
        _dataset(data, length=40), 40, out, shard_size=10, workers=0, progress=False, fingerprint={"a": 2}
    )
    assert [p.name for p in more] == ["shard-00003"] and [p.name for p in again] == ["shard-00003"]


def test_contact_sheet_layout() -> None:
    imgs = np.zeros((5, 4, 6, 3), np.float32)
    imgs[4] = 1.0
    sheet = contact_sheet(imgs, cols=2, pad=1)
    assert sheet.shape == (3 * 5 + 1, 2 * 7 + 1, 3) and sheet.dtype == np.uint8
    assert (sheet[11:15, 1:7] == 255).all() and (sheet[1:5, 1:7] == 0).all()


def test_one_prepared_person_is_told_to_add_people_not_to_lower_neighbours(tmp_path) -> None:
    """helper-185: a folder of one person's photos, trained with augmentation on, was told to lower
    augment.neighbours, which no value helps (1 is refused as well): a morph needs two people. Two or more people
    and too many neighbours: the value that works is named."""
    from types import SimpleNamespace

    from facekit.data.augment import check_neighbours

    def plan(people: int, neighbours: int) -> SimpleNamespace:
        np.save(tmp_path / "landmarks.npy", np.zeros((people, 68, 2), np.float32))
        recipe = SimpleNamespace(
            prepare=SimpleNamespace(output=str(tmp_path)), augment=SimpleNamespace(neighbours=neighbours)
        )
        return SimpleNamespace(recipe=recipe)

    with pytest.raises(
        FacekitError, match=r"morphs between people, and .* has 1 prepared: add people to data\.train or"
    ):
        check_neighbours(plan(1, 1))
    with pytest.raises(FacekitError, match=r"lower augment\.neighbours \(--set augment\.neighbours=2\)"):
        check_neighbours(plan(3, 5))
    check_neighbours(plan(3, 2))  # two neighbours of three people: a morph can be made


def test_full_weights_give_the_partners_landmarks_and_texture(data) -> None:
    """The morph's other end: a = b = 1 is the partner's shape and texture exactly (on the seed's background)."""
    m = _morph(data, 1, seed=0, landmark_weight=1.0, texture_weight=1.0)
    np.testing.assert_array_equal(m.landmarks, data["landmarks"][m.partner])
    np.testing.assert_allclose(m.texture, data["textures"][m.partner] / 255.0, atol=1e-6)
    assert np.isfinite(m.image).all() and 0.0 <= m.image.min() and m.image.max() <= 1.0


def test_materialise_starts_its_workers_before_its_bar(data, tmp_path, monkeypatch: pytest.MonkeyPatch) -> None:
    """As the training pool does: the DataLoader's workers are forked before the bar's refresh thread runs (before,
    after it: a worker forked while that thread held a lock, the console's that the bar's stderr takes, was born
    with it held, and a warning it wrote waited forever)."""
    import threading

    import rich.live

    from facekit.data import augment

    running: list[list[threading.Thread]] = []
    real = augment.data_batches

    def recorded(loader: Any) -> Any:
        running.append([t for t in threading.enumerate() if isinstance(t, rich.live._RefreshThread)])
        return real(loader)

    monkeypatch.setattr(augment, "data_batches", recorded)
    materialise(_dataset(data, length=10), 10, tmp_path / "morphs", shard_size=10, workers=0, progress=True)
    assert running == [[]]


def test_a_second_materialise_into_the_same_folder_is_refused(data, tmp_path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Before: no lock, so a second augment run into the folder while the first wrote a shard wrote the same shards,
    each removing the other's ``shard-XXXXX.tmp/`` in progress. Run here as the first writes its first shard: it is
    refused in one line, and the first finishes whole."""
    from facekit.data import augment

    out = tmp_path / "morphs"
    real = augment._write_shard
    refused: list[str] = []

    def write(*args: Any) -> Any:
        if not refused:
            refused.append("")  # the second run's own shards are written as they are
            with pytest.raises(FacekitError) as info:
                materialise(_dataset(data, length=10), 10, out, shard_size=10, workers=0, progress=False)
            refused[0] = str(info.value)
        return real(*args)

    monkeypatch.setattr(augment, "_write_shard", write)
    written = materialise(_dataset(data, length=10), 10, out, shard_size=10, workers=0, progress=False)
    assert refused == [
        f"another facekit augment is writing into {out} right now: wait for it to finish, or choose another output "
        "folder"
    ]
    assert [p.name for p in written] == ["shard-00000"]
    assert sorted(p.name for p in out.iterdir()) == [".facekit.lock", "index.json", "shard-00000"]
    np.testing.assert_array_equal(np.load(out / "shard-00000" / "items.npy"), np.arange(10))


class _FailsAtItem(torch.utils.data.Dataset):
    """Rows of a morph's shape, and a failure (as a stop would come) at item ``bad``, raised inside torch's iterator."""

    def __init__(self, length: int, bad: int) -> None:
        self.length, self.bad = length, bad

    def __len__(self) -> int:
        return self.length

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        if index == self.bad:
            raise ValueError("failed here")
        return {"image": torch.zeros(3, 4, 4), "texture": torch.zeros(3, 4, 4), "landmarks": torch.zeros(68, 2)}


def test_materialises_workers_end_with_it_while_its_error_is_kept(tmp_path) -> None:
    """An error or a stop inside the DataLoader's ``next`` has a traceback holding torch's iterator (its frames'
    ``self``): dropping materialise's own reference in its finally left the workers running for as long as the error
    was kept (a notebook keeps the last one), each with its copy of the data set. They are shut down there now."""
    import multiprocessing

    before = set(multiprocessing.active_children())
    with pytest.raises(ValueError, match="failed here") as kept:
        materialise(_FailsAtItem(10, 3), 10, tmp_path / "morphs", shard_size=10, workers=1, progress=False)
    assert kept.value.__traceback__ is not None
    assert set(multiprocessing.active_children()) - before == set()


def test_a_morphs_index_cut_short_is_one_line_not_a_traceback(tmp_path: Any) -> None:
    """helper-236: index.json was written with write_text at the end of materialise, and one cut short by a kill made
    every later augment run into the folder end in a JSONDecodeError's traceback. It is written whole now (a temporary
    renamed over it), and one cut short by an earlier facekit is refused in one line naming the folder."""
    from facekit.data.augment import check_morphs_folder

    out = tmp_path / "morphs"
    out.mkdir()
    (out / "index.json").write_text('{"fingerprint": {"seed": 1}, "sha')
    with pytest.raises(FacekitError, match=r"index\.json is not an index of morphs .*: remove .*morphs, or choose"):
        check_morphs_folder(out, {"seed": 1})
