"""Figures for the explore app from LFW DevTest photos (people the models never saw): models side by side (the
paper's Figs. 8 and 16) and an interpolation between two people with the independent judge's scores under it.

    python examples/explore_figures.py [--model dlib --model sface] [--checkpoint 'LABEL=FILE' ...]
                                       [--compare docs/explore-compare.jpg] [--interpolate docs/explore-interpolate.jpg]

Columns: every ``--model`` (default: every shipped model present) and every ``--checkpoint``.
"""

from __future__ import annotations

import argparse
import textwrap
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from facekit.apps.explore import Explorer, interpolation_figure
from facekit.normalize import Normalizer, resolve_model, shipped_models
from facekit.recipe import DataSection

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
    parser.add_argument("--compare", default="docs/explore-compare.jpg")
    parser.add_argument("--interpolate", default="docs/explore-interpolate.jpg")
    args = parser.parse_args()
    images = DataSection().resolved_root() / "lfw" / "images"
    wanted = [(name, resolve_model(name)) for name in args.model or shipped_models()]
    wanted += [(label, resolve_model(None, path)) for label, path in (item.split("=", 1) for item in args.checkpoint)]
    models = [(label, Normalizer.from_checkpoint(path)) for label, path in wanted]
    explorer = Explorer(models[0][1], steps=8)

    comparison = explorer.compare([images / name for name in COMPARE], models)
    footer = [
        f"{row['model']}: {row['judge']} ({row['metric']}) within a person: normalized faces "
        f"{row['outputs_mean_distance']:.3f}, the photos {row['inputs_mean_distance']:.3f} ({row['people']} people)"
        for row in comparison.summary
    ]
    Path(args.compare).parent.mkdir(parents=True, exist_ok=True)
    with_footer(comparison.grid(cell=112), footer).save(args.compare, quality=88)

    first, second = (images / name for name in INTERPOLATE)
    result = explorer.interpolate(first, second, names=[Path(n).name for n in INTERPOLATE])
    Image.fromarray(interpolation_figure(result)).save(args.interpolate, quality=88)
    for path in (args.compare, args.interpolate):
        print(path, f"{Path(path).stat().st_size / 1e3:.0f} kB")


if __name__ == "__main__":
    main()
