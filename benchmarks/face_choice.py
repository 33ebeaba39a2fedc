"""Which face of a photo with several: the largest, or the one the photo is framed around (``--face central``).

    python benchmarks/face_choice.py [--pairs pairsDevTrain.txt] [--folds 10] [--max-pairs N] [--no-write]

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
from quality import (
    PairPhotos,
    SharedDetections,
    accuracy_cell,
    check_pair_arguments,
    normalize_all,
    pair_arguments,
)
from results import machine, publish

from facekit.fidelity import OwnPipelineJudge
from facekit.normalize import Normalizer, choose_face
from facekit.recipe import DataSection
from facekit.types import FACE_CHOICES


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    pair_arguments(parser)
    args = parser.parse_args()
    check_pair_arguments(parser, args)

    started = time.perf_counter()
    root = DataSection().resolved_root()
    pairs = PairPhotos.read(root, args.folds, args.pairs, args.max_pairs)
    images, paths = pairs.images, pairs.paths

    detector = yunet = None
    rows, boxes = [], {}
    for rule in FACE_CHOICES:
        normalizer = Normalizer.from_checkpoint(None, face=rule)
        detector = detector or SharedDetections(normalizer.detector, images)  # one detection pass for both rules
        normalizer.detector = detector
        judge = OwnPipelineJudge.build("sface", face=rule)
        yunet = yunet or SharedDetections(judge.detector, images)  # the judge's detections too, once for both rules
        judge.detector = yunet
        outcomes = normalize_all(normalizer, images, [p.stem for p in paths], rule)
        faces = [o.face for o in outcomes]
        boxes[rule] = [f.box if f is not None else None for f in faces]
        rows.append(
            (
                rule,
                pairs.accuracy(judge, judge.embed(images)),
                pairs.accuracy(judge, judge.embed([f.image if f is not None else None for f in faces])),
                pairs.accuracy(judge, judge.embed([f.decoder_image if f is not None else None for f in faces])),
            )
        )
    assert detector is not None and yunet is not None
    several = sum(len(detector.detect_array(image)) > 1 for image in images if image is not None)
    differ = sum(a != b for a, b in zip(boxes["largest"], boxes["central"], strict=True))
    judge_several = sum(len(yunet.detect_array(image)) > 1 for image in images if image is not None)
    judge_differ = sum(
        choose_face(found, image.shape, "largest") != choose_face(found, image.shape, "central")
        for image in images
        if image is not None and len(found := yunet.detect_array(image)) > 1
    )

    command = shlex.join(["python", "benchmarks/face_choice.py", *sys.argv[1:]])
    lines = [
        f"## Which face of a photo with several (`{command}`)",
        "",
        f"Machine: {machine()}; {time.perf_counter() - started:.0f} s in all. {len(pairs.same)} pairs of {args.pairs} "
        f"({args.folds}-fold, threshold chosen on the other folds), {len(paths)} photos. dlib's detector finds "
        f"several faces in {several} of them, and the two rules take a different one in {differ}; YuNet (the "
        f"judge's) finds several in {judge_several}, the rules differing in {judge_differ}. Each rule is applied by "
        "the normalizer and by the judge alike.",
        "",
        "| face taken | photos (no normalization) | default pipeline | decoder alone |",
        "|---|---|---|---|",
        *(f"| {rule} | {' | '.join(accuracy_cell(r) for r in results)} |" for rule, *results in rows),
    ]
    publish("face-choice", lines, write=not args.no_write)


if __name__ == "__main__":
    main()
