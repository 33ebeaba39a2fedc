"""The benchmark scripts' own rules: which rows a grid section shows, and when a section is not written."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

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
