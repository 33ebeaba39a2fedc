"""Figures for the explore app from LFW DevTest photos (people the models never saw): models side by side (the
paper's Figs. 8 and 16) and an interpolation between two people with the independent judge's scores under it.

    python examples/explore_figures.py --overwrite [--model dlib --model sface] [--checkpoint 'LABEL=FILE' ...]
                                       [--compare FILE] [--interpolate FILE]     # default: docs/explore-*.jpg

Columns: every ``--model`` (default: every shipped model present) and every ``--checkpoint``.
"""

from __future__ import annotations

import argparse
import textwrap
from pathlib import Path

import numpy as np
from _common import REPO, add_figure_file, add_overwrite, data_root, figure_path
from PIL import Image, ImageDraw

from facekit.apps.explore import Explorer, interpolation_figure
from facekit.errors import FacekitError
from facekit.normalize import Normalizer, resolve_model, shipped_models

COMPARE = [
    "Amelie_Mauresmo/Amelie_Mauresmo_0001.jpg",
    "Amelie_Mauresmo/Amelie_Mauresmo_0004.jpg",
    "Alvaro_Uribe/Alvaro_Uribe_0001.jpg",
    "Alvaro_Uribe/Alvaro_Uribe_0006.jpg",
    "Ann_Veneman/Ann_Veneman_0001.jpg",
    "Ann_Veneman/Ann_Veneman_0003.jpg",
    "Ben_Affleck/Ben_Affleck_0002.jpg",
    "Ben_Affleck/Ben_Affleck_0005.jpg",
]
INTERPOLATE = ("Amelie_Mauresmo/Amelie_Mauresmo_0002.jpg", "Alvaro_Uribe/Alvaro_Uribe_0003.jpg")


def with_footer(image: np.ndarray, paragraphs: list[str]) -> Image.Image:
    """``image`` with ``paragraphs`` of text wrapped under it."""
    lines = [line for text in paragraphs for line in textwrap.wrap(text, width=image.shape[1] // 6)]
    height = 14 * len(lines) + 8
    figure = Image.new("RGB", (image.shape[1], image.shape[0] + height), (255, 255, 255))
    figure.paste(Image.fromarray(image), (0, 0))
    draw = ImageDraw.Draw(figure)
    for index, line in enumerate(lines):
        draw.text((4, image.shape[0] + 4 + 14 * index), line, fill=(0, 0, 0))
    return figure


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", action="append", default=[], help="a shipped model (repeatable)")
    parser.add_argument("--checkpoint", action="append", default=[], help="LABEL=FILE of a model file (repeatable)")
    compare_figure = (
        f"the comparison figure (the models side by side, a column each, on {len(COMPARE)} photos of "
        f"{len(COMPARE) // 2} people, each model's within-person distances under it)"
    )
    add_figure_file(parser, "--compare", REPO / "docs" / "explore-compare.jpg", compare_figure)
    interpolate_figure = (
        "the interpolation figure (the first model's faces from one person to another, the judge's scores under them)"
    )
    add_figure_file(parser, "--interpolate", REPO / "docs" / "explore-interpolate.jpg", interpolate_figure)
    add_overwrite(parser)
    args = parser.parse_args()
    compare = figure_path(parser, args.compare, args.overwrite, "--compare")
    interpolate = figure_path(parser, args.interpolate, args.overwrite, "--interpolate")
    if any("=" not in item for item in args.checkpoint):
        parser.error("--checkpoint: LABEL=FILE (e.g. 'my model=runs/train/x/checkpoints/last.safetensors')")
    images = data_root() / "lfw" / "images"
    missing = [name for name in [*COMPARE, *INTERPOLATE] if not (images / name).is_file()]
    if missing:  # before the models load (a missing photo ended in a TypeError after all of them)
        raise SystemExit(f"{images} lacks {missing[0]}{' and others' if len(missing) > 1 else ''}: see the data README")
    try:
        wanted = [(name, resolve_model(name)) for name in args.model or shipped_models()]
        wanted += [(label, resolve_model(None, path)) for label, path in (i.split("=", 1) for i in args.checkpoint)]
    except FacekitError as error:
        raise SystemExit(str(error)) from None
    models = [(label, Normalizer.from_checkpoint(path)) for label, path in wanted]
    explorer = Explorer(models[0][1], steps=8)

    comparison = explorer.compare([images / name for name in COMPARE], models)

    def distance(value: float | None) -> str:
        return "n/a" if value is None else f"{value:.3f}"  # (no judged pair: a model without outputs)

    footer = [
        f"{row['model']}: {row['judge']} ({row['metric']}) within a person: normalized faces "
        f"{distance(row['outputs_mean_distance'])}, the photos {distance(row['inputs_mean_distance'])} "
        f"({row['people']} people)"
        for row in comparison.summary
    ]
    compare.parent.mkdir(parents=True, exist_ok=True)
    with_footer(comparison.grid(cell=112), footer).save(compare, quality=88)

    first, second = (images / name for name in INTERPOLATE)
    result = explorer.interpolate(first, second, names=[Path(n).name for n in INTERPOLATE])
    interpolate.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(interpolation_figure(result)).save(interpolate, quality=88)
    for path in (compare, interpolate):
        print(path, f"{Path(path).stat().st_size / 1e3:.0f} kB")


if __name__ == "__main__":
    main()
