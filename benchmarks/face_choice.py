"""Which face of a photo with several: the largest, or the one the photo is framed around (``--face central``).

    python benchmarks/face_choice.py [--pairs pairsDevTrain.txt] [--folds 10]

LFW's photos are 250 px crops centred on their subject, and about one in twenty shows another face, sometimes a larger
one. For each rule (:func:`facekit.normalize.choose_face`) the shipped model normalizes every photo of the pairs (the
default pipeline, and the decoder's face alone from the same pass), and SFace through its own pipeline (YuNet + its
5-point template), taking the face by the same rule in the photos, scores LFW verification on the photos and on the
normalized faces. Also counted: photos where dlib finds several faces, and where the two rules take different ones.
Choose on ``pairsDevTrain.txt`` (View 1 training people: selection data); ``pairs.txt`` is the quality report's.

Writes the ``face-choice`` section of benchmarks/RESULTS.md.
"""

from __future__ import annotations

import argparse
import shlex
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import numpy as np
from quality import SharedDetections, normalize_all
from results import machine, publish
from rich.progress import track

from facekit.evaluate import read_pairs, tenfold_accuracy
from facekit.fidelity import OwnPipelineJudge
from facekit.images import load_rgb
from facekit.normalize import FACE_CHOICES, Normalizer, choose_face
from facekit.recipe import DataSection


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--pairs", default="pairsDevTrain.txt", choices=["pairsDevTrain.txt", "pairsDevTest.txt", "pairs.txt"]
    )
    parser.add_argument("--folds", type=int, default=10, help="folds (View 1 is dealt into this many)")
    parser.add_argument("--max-pairs", type=int, default=0, help="every n-th pair so that at most this many (0: all)")
    parser.add_argument("--no-write", action="store_true", help="do not rewrite RESULTS.md")
    args = parser.parse_args()
    if args.folds < 2:
        parser.error("--folds must be at least 2 (each fold's threshold comes from the others)")

    started = time.perf_counter()
    root = DataSection().resolved_root()
    pairs = read_pairs(root, args.folds, args.pairs)
    if args.max_pairs:
        pairs = pairs[:: max(1, -(-len(pairs) // args.max_pairs))]
    paths = sorted({p for pair in pairs for p in (pair.first, pair.second)})
    where = {p: i for i, p in enumerate(paths)}
    images = [load_rgb(p)[0] for p in track(paths, description=f"reading {len(paths)} pair photos")]
    same = np.array([pair.same for pair in pairs])
    fold_of = np.array([pair.fold for pair in pairs])
    first, second = (np.array([where[getattr(p, side)] for p in pairs]) for side in ("first", "second"))

    detector = None
    rows, boxes = [], {}
    for rule in FACE_CHOICES:
        normalizer = Normalizer.from_checkpoint(None, face=rule)
        detector = detector or SharedDetections(normalizer.detector)  # one detection pass for both rules
        normalizer.detector = detector
        judge = OwnPipelineJudge.build("sface", face=rule)
        outcomes = normalize_all(normalizer, images, [p.stem for p in paths], rule)
        boxes[rule] = [o.face.box if o.face is not None else None for o in outcomes]

        def accuracy(embeddings: np.ndarray, judge: OwnPipelineJudge = judge) -> dict:
            scores = judge.scores(embeddings[first], embeddings[second])
            return tenfold_accuracy(scores, same, fold_of, judge.higher_is_same)

        faces = [o.face for o in outcomes]
        rows.append(
            (
                rule,
                accuracy(judge.embed(images)),
                accuracy(judge.embed([f.image if f is not None else None for f in faces])),
                accuracy(judge.embed([f.decoder_image if f is not None else None for f in faces])),
            )
        )
    assert detector is not None
    several = sum(len(detector.detect_array(image)) > 1 for image in images if image is not None)
    differ = sum(a != b for a, b in zip(boxes["largest"], boxes["central"], strict=True))
    yunet = OwnPipelineJudge.build("sface").detector
    judge_several = sum(len(yunet.detect_array(image)) > 1 for image in images if image is not None)
    judge_differ = sum(
        choose_face(found, image.shape, "largest") != choose_face(found, image.shape, "central")
        for image in images
        if image is not None and len(found := yunet.detect_array(image)) > 1
    )

    def cell(result: dict) -> str:
        return f"{result['accuracy']:.2%} ± {result['std']:.2%}"

    lines = [
        f"## Which face of a photo with several (`python benchmarks/face_choice.py {shlex.join(sys.argv[1:])}`)",
        "",
        f"Machine: {machine()}; {time.perf_counter() - started:.0f} s in all. {len(pairs)} pairs of {args.pairs} "
        f"({args.folds}-fold, threshold chosen on the other folds), {len(paths)} photos. dlib's detector finds "
        f"several faces in {several} of them, and the two rules take a different one in {differ}; YuNet (the "
        f"judge's) finds several in {judge_several}, the rules differing in {judge_differ}. Each rule is applied by "
        "the normalizer and by the judge alike.",
        "",
        "| face taken | photos (no normalization) | default pipeline | decoder alone |",
        "|---|---|---|---|",
        *(f"| {rule} | {cell(photos)} | {cell(default)} | {cell(alone)} |" for rule, photos, default, alone in rows),
    ]
    publish("face-choice", lines, write=not args.no_write)


if __name__ == "__main__":
    main()
