"""`evalsuite figures`: each figure draws from saved tidy results, at a known pixel size, or skips with a reason."""

from __future__ import annotations

import re

import numpy as np
import pandas as pd
import pytest
from _tiny_run import tiny_figures, tiny_results, tiny_run

from evalsuite import figures as figs
from evalsuite.cli import main


def _pdf_size_inches(path):
    match = re.search(rb"/MediaBox\s*\[\s*0\s+0\s+([\d.]+)\s+([\d.]+)\s*\]", path.read_bytes())
    assert match, f"no MediaBox in {path}"
    return float(match.group(1)) / 72, float(match.group(2)) / 72


def _png(path):
    from PIL import Image

    with Image.open(path) as image:
        return image.size, np.asarray(image.convert("L"), dtype=float)


@pytest.fixture(scope="module")
def results_dir(tmp_path_factory):
    return tiny_results(tmp_path_factory)


@pytest.fixture(scope="module")
def drawn(tmp_path_factory):
    return {r.name: r for r in tiny_figures(tmp_path_factory)}


def test_every_figure_is_drawn_as_pdf_and_png_from_the_saved_results(drawn, results_dir):
    assert set(drawn) == set(figs.FIGURES)
    for name, result in drawn.items():
        assert result.skipped is None, (name, result.skipped)
        assert [p.suffix for p in result.paths] == [".pdf", ".png"]
        assert all(p.parent == results_dir / "figures" and p.stat().st_size > 5000 for p in result.paths)
        assert result.inputs and all(p.is_file() for p in result.inputs)
        assert result.caption
        name_, paths, skipped = result  # unpacks as (name, paths, skipped)
        assert name_ == name and skipped is None


def test_png_pixel_size_is_the_figure_size_at_the_fixed_dpi_and_the_image_is_not_blank(drawn):
    for name, result in drawn.items():
        pdf, png = result.paths
        width_in, height_in = _pdf_size_inches(pdf)
        (width, height), gray = _png(png)
        assert (width, height) == (round(width_in * figs.FIG_DPI), round(height_in * figs.FIG_DPI)), name
        assert gray.std() > 10, f"{name} looks blank"
        assert (gray < 100).mean() > 0.002, f"{name} has almost no dark pixels (no text or lines)"
    (width, height), _ = _png(drawn["loss_curves"].paths[1])
    assert (width, height) == (1950, 690)  # 13 x 4.6 inches at 150 dpi


def test_a_manifest_records_inputs_and_captions(drawn, results_dir):
    manifest = {e["name"]: e for e in figs.read_manifest(results_dir / "figures")}
    assert set(manifest) == set(drawn)
    for name, result in drawn.items():
        assert manifest[name]["caption"] == result.caption
        assert manifest[name]["inputs"] == [str(p.resolve()) for p in result.inputs]


def test_figures_read_only_their_inputs(drawn, results_dir):
    assert drawn["loss_curves"].inputs[0] == results_dir / "dynamics" / "curves.csv"
    assert drawn["rubric_scores"].inputs == [results_dir / "gpt_eval" / "summary.csv"]
    assert drawn["age_vs_loss"].inputs == [results_dir / "childes-compare" / "checkpoint_ages.csv",
                                           results_dir / "gpt_eval" / "summary.csv"]
    assert "judge's age-group guess" in drawn["age_vs_loss"].caption
    assert "error-profile age model" in drawn["age_vs_loss"].caption
    assert drawn["error_rates"].inputs == [results_dir / "childes-compare" / "rates.csv"]
    assert drawn["benchmarks"].inputs == [results_dir / "benchmarks" / "compression.csv"]


def test_an_empty_results_dir_skips_every_figure_with_its_reason(tmp_path, caplog):
    caplog.set_level("INFO", logger="evalsuite.figures")
    results = figs.make_figures(tmp_path)
    assert [r.name for r in results] == list(figs.FIGURES)
    for result in results:
        assert result.paths == [] and result.skipped
        assert str(tmp_path) in result.skipped or "under" in result.skipped
    assert not (tmp_path / "figures").exists() or not any((tmp_path / "figures").iterdir())
    assert "evalsuite dynamics" in results[0].skipped
    assert sum("skipped" in rec.message for rec in caplog.records) == len(figs.FIGURES)


def test_an_incomplete_table_is_skipped_with_the_missing_columns(tmp_path):
    (tmp_path / "gpt_eval").mkdir()
    pd.DataFrame({"checkpoint_id": ["a"], "score": ["grammar"], "mean": [5.0]}).to_csv(
        tmp_path / "gpt_eval" / "summary.csv", index=False)
    result = figs.draw("rubric_scores", tmp_path, tmp_path / "figures")
    assert result.skipped and "lacks columns ['ci_low', 'ci_high']" in result.skipped
    assert not (tmp_path / "figures" / "rubric_scores.png").exists()
    (tmp_path / "dim-probe").mkdir()
    pd.DataFrame({"layer": [0], "component": ["e0"], "category": ["ALL"], "ratio": [1.0], "p_adj": [None]}).to_csv(
        tmp_path / "dim-probe" / "dim_probe.csv", index=False)
    assert "no category rows" in figs.draw("dimprobe_heatmap", tmp_path, tmp_path / "figures").skipped


def test_loss_curves_fall_back_to_metrics_streams(tmp_path_factory, tmp_path):
    import shutil

    run = tiny_run(tmp_path_factory)
    shutil.copy(run / "metrics_stream.jsonl", tmp_path / "metrics_stream.jsonl")
    result = figs.draw("loss_curves", tmp_path, tmp_path / "figs")
    assert result.skipped is None and result.inputs == [tmp_path / "metrics_stream.jsonl"]


def test_hypothesis_table_matches_the_mission_and_childes_compare():
    from evalsuite.childes.compare import HYPOTHESIS as CHILDES_HYPOTHESIS

    bands = {(low, high): (a, b) for low, high, a, b, _ in figs.HYPOTHESIS}
    assert bands[(3.5, float("inf"))] == (2.0, 3.0)
    assert bands[(2.5, 3.0)] == (3.0, 4.0)
    assert bands[(2.0, 2.5)] == (4.0, 5.0)
    assert bands[(1.5, 2.0)] == (5.0, 6.0)
    assert bands[(0.0, 1.5)] == (6.0, float("inf"))
    # the same bands childes-compare tests (it keeps ages in months and the lowest band open below)
    theirs = {(max(low, 0.0), high): (a / 12, b / 12) for low, high, a, b, _ in CHILDES_HYPOTHESIS}
    assert theirs == bands


def test_cli_draws_only_the_asked_figures(results_dir, tmp_path, capsys):
    with pytest.raises(SystemExit) as done:
        main(["figures", str(results_dir), "-o", str(tmp_path), "--only", "benchmarks"])
    assert done.value.code == 0
    assert sorted(p.name for p in tmp_path.iterdir()) == ["benchmarks.pdf", "benchmarks.png", "figures.json"]
    assert "1 of 1 figures drawn" in capsys.readouterr().out
    with pytest.raises(SystemExit) as done:
        main(["figures", str(results_dir), "--only", "nonsense"])
    assert done.value.code == 2
