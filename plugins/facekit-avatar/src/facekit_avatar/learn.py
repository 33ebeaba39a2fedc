"""Learn the avatar's colour model from a prepared training set (``facekit prepare`` output: per-person averages).

    python -m facekit_avatar.learn runs/data/default112 --sfm PATH/sfm_shape_3448.bin \
        -o plugins/facekit-avatar/src/facekit_avatar/data/colour_model.npz

People are split (seeded) into a training part and a held-out part (``--holdout``); the held-out part measures the
reconstruction: the error of the colour model's fit on each held-out face's confident vertices, and its prediction of
vertices it did not see (fit on a random half of the confident vertices, error on the other half), both against the
mean colour alone. Prints the figures and writes them beside the model as JSON.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

from facekit_avatar.colour import COLOUR_PRIOR, ColourModel, Samples, learn, sample_vertices
from facekit_avatar.fit import fit_shape
from facekit_avatar.model import SurreyModel, load_model


def sample_dataset(
    model: SurreyModel, images: np.ndarray, landmarks: np.ndarray, chunk: int = 64, progress: bool = True
) -> Samples:
    """Fit and sample every (image, landmarks) pair, ``chunk`` at a time."""
    from facekit.progress import track

    parts = []
    starts = range(0, len(images), chunk)
    for start in track(starts, description="fitting and sampling", unit="batch") if progress else starts:
        imgs = np.asarray(images[start : start + chunk])
        lms = np.asarray(landmarks[start : start + chunk], np.float32)
        fit = fit_shape(model, lms, imgs.shape[1])
        parts.append(sample_vertices(model, fit, imgs, lms, imgs.shape[1]))
    return Samples(
        colours=np.concatenate([p.colours for p in parts]),
        confidence=np.concatenate([p.confidence for p in parts]),
        image_xy=np.concatenate([p.image_xy for p in parts]),
    )


def held_out_errors(
    colour_model: ColourModel, samples: Samples, threshold: float = 0.3, seed: int = 0
) -> dict[str, float]:
    """RMS errors in 8-bit levels on held-out faces' confident vertices (see the module docstring)."""
    rng = np.random.default_rng(seed)
    fit_err, mean_err, predict_err, predict_mean_err = [], [], [], []
    for colours, confidence in zip(samples.colours, samples.confidence, strict=True):
        seen = confidence >= threshold
        weights = seen.astype(np.float32)
        recon = colour_model.reconstruct(colour_model.fit(colours[None], weights[None]))[0]
        fit_err.append(((recon - colours)[seen] ** 2).mean())
        mean_err.append(((colour_model.mean - colours)[seen] ** 2).mean())
        half = seen & (rng.random(seen.shape) < 0.5)
        other = seen & ~half
        predicted = colour_model.reconstruct(colour_model.fit(colours[None], half.astype(np.float32)[None]))[0]
        predict_err.append(((predicted - colours)[other] ** 2).mean())
        predict_mean_err.append(((colour_model.mean - colours)[other] ** 2).mean())

    def rms(values: list[float]) -> float:
        return float(np.sqrt(np.mean(values)) * 255)

    return {
        "fit_rms_levels": rms(fit_err),
        "mean_only_rms_levels": rms(mean_err),
        "predict_unseen_rms_levels": rms(predict_err),
        "predict_unseen_mean_only_rms_levels": rms(predict_mean_err),
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("prepared", help="a facekit prepare output folder (averages.npy, landmarks.npy)")
    parser.add_argument("--sfm", default=None, help="sfm_shape_3448.bin (default: the facekit model store)")
    parser.add_argument("-o", "--out", required=True, help="the .npz to write")
    parser.add_argument("--components", type=int, default=20)
    parser.add_argument("--holdout", type=float, default=0.1, help="share of people held out for the errors")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    folder = Path(args.prepared)
    images = np.load(folder / "averages.npy", mmap_mode="r")
    landmarks = np.load(folder / "landmarks.npy", mmap_mode="r")
    samples = sample_dataset(load_model(args.sfm), images, landmarks)
    order = np.random.default_rng(args.seed).permutation(len(images))
    cut = round(len(order) * args.holdout)
    held, train = order[:cut], order[cut:]
    colour_model = learn(samples.colours[train], samples.confidence[train], args.components)
    held_samples = Samples(samples.colours[held], samples.confidence[held], samples.image_xy[held])
    errors = held_out_errors(colour_model, held_samples)
    report = {"people_train": len(train), "people_held_out": len(held), "components": args.components}
    report.update(errors, colour_prior=COLOUR_PRIOR)
    colour_model.save(args.out)
    Path(args.out).with_suffix(".json").write_text(json.dumps(report, indent=2) + "\n")
    sys.stdout.write(json.dumps(report, indent=2) + "\n")


if __name__ == "__main__":
    main()
