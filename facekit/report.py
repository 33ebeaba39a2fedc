"""One self-contained HTML report (images inlined as base64 PNG): tables of metrics, plots, image grids."""

from __future__ import annotations

import base64
import html
import io
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

STYLE = """
body{font-family:system-ui,sans-serif;margin:2em;color:#222;max-width:1200px}
table{border-collapse:collapse;margin:1em 0}td,th{border:1px solid #ccc;padding:4px 8px;text-align:left;font-size:14px}
th{background:#f3f3f3}img{margin:4px;border:1px solid #ddd}.grid img{max-width:280px}
"""


def png_data_uri(image: np.ndarray | Path) -> str:
    """A ``data:image/png;base64,...`` URI of an (H, W, 3) uint8 array or a PNG file."""
    if isinstance(image, Path):
        data = image.read_bytes()
    else:
        from PIL import Image

        buffer = io.BytesIO()
        Image.fromarray(image).save(buffer, format="PNG")
        data = buffer.getvalue()
    return "data:image/png;base64," + base64.b64encode(data).decode("ascii")


def _flatten(prefix: str, value: Any, rows: list[tuple[str, str]]) -> None:
    if isinstance(value, dict) and not value and prefix:  # (before: left out, so a figure with no pairs vanished)
        rows.append((prefix, "none"))
    elif isinstance(value, dict):
        for key, item in value.items():
            _flatten(f"{prefix}.{key}" if prefix else str(key), item, rows)
    else:
        rows.append((prefix, str(value)))


def metrics_table(metrics: dict[str, Any]) -> str:
    rows: list[tuple[str, str]] = []
    _flatten("", metrics, rows)
    body = "".join(f"<tr><td>{html.escape(k)}</td><td>{html.escape(v)}</td></tr>" for k, v in rows)
    return f"<table><tr><th>metric</th><th>value</th></tr>{body}</table>"


def write_report(
    path: Path,
    title: str,
    metrics: dict[str, Any],
    examples: Sequence[np.ndarray],
    plots: Sequence[Path],
    tables: Sequence[str] = (),
) -> Path:
    """Write ``path``: the title, extra HTML ``tables``, the plots, the example images and the metrics table."""
    parts = [f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title>"]
    parts.append(f"<style>{STYLE}</style></head><body><h1>{html.escape(title)}</h1>")
    parts.extend(tables)
    if plots:
        parts.append("<h2>Plots</h2>")
        parts.extend(f"<img class='plot' alt='{html.escape(p.stem)}' src='{png_data_uri(p)}'>" for p in plots)
    if examples:
        parts.append("<h2>Examples: input photo | normalized face with predicted landmarks</h2><div class='grid'>")
        parts.extend(f"<img class='example' alt='example {i}' src='{png_data_uri(e)}'>" for i, e in enumerate(examples))
        parts.append("</div>")
    parts.append("<h2>All metrics</h2>" + metrics_table(metrics) + "</body></html>")
    path.write_text("\n".join(parts), encoding="utf-8")
    return path
