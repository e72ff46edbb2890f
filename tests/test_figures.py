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
    assert drawn["age_vs_loss"].inputs == [results_dir / "childes-compare" / "checkpoint_dev_ages.csv",
                                           results_dir / "gpt_eval" / "summary.csv"]
    assert "judge's age-group guess" in drawn["age_vs_loss"].caption
    assert "childes-age model" in drawn["age_vs_loss"].caption
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


# ----------------------------------------------------------------------------------------------
# every panel has data (not only a PNG that is not blank)


def _draw_capturing(name, results_dir, out_dir, monkeypatch):
    """Draw one figure and return (result, the matplotlib Figure) before it is closed."""
    captured = []
    real_save = figs._save

    def save(fig, out, fig_name):
        captured.append(fig)
        return real_save(fig, out, fig_name)

    monkeypatch.setattr(figs, "_save", save)
    result = figs.draw(name, results_dir, out_dir)
    assert result.skipped is None, result.skipped
    return result, captured[0]


def _has_data(ax) -> bool:
    """A panel shows data: a line with points, a filled collection (errorbars, meshes, scatter), a
    bar, or a table. A lone 'no data' text does not count."""
    from matplotlib.patches import Rectangle

    lines = [ln for ln in ax.get_lines() if len(ln.get_xdata()) > 0 and np.isfinite(np.asarray(ln.get_ydata(), float)).any()]
    collections = [c for c in ax.collections if len(getattr(c, "get_offsets", lambda: [])()) or c.get_paths()]
    bars = [p for p in ax.patches if isinstance(p, Rectangle) and p.get_height() not in (0, None)]
    return bool(lines or collections or bars or ax.tables)


def _data_panels(fig):
    return [ax for ax in fig.axes if ax.axison and ax.get_label() != "<colorbar>"]


@pytest.mark.parametrize("name", sorted(figs.FIGURES))
def test_every_panel_of_every_figure_has_data(name, results_dir, tmp_path, monkeypatch):
    _, fig = _draw_capturing(name, results_dir, tmp_path, monkeypatch)
    panels = _data_panels(fig)
    assert panels
    for i, ax in enumerate(panels):
        assert _has_data(ax), f"{name}: panel {i} ({ax.get_title()!r}) is empty"


def _copy_results(results_dir, dest):
    import shutil

    shutil.copytree(results_dir, dest, ignore=shutil.ignore_patterns("figures"))
    return dest


def test_dynamics_third_panel_has_data_when_only_best_was_analysed(results_dir, tmp_path, monkeypatch):
    """The demo runs `dynamics --checkpoints best`: the zero-weight panel kept only step_*/latest rows
    and was drawn empty."""
    res = _copy_results(results_dir, tmp_path / "res")
    for table in ("ranks.csv", "component_summary.csv"):
        path = res / "dynamics" / table
        frame = pd.read_csv(path)
        frame[frame["checkpoint"] == "best"].to_csv(path, index=False)
    _, fig = _draw_capturing("dynamics", res, tmp_path / "f", monkeypatch)
    ax_zero = _data_panels(fig)[2]
    assert ax_zero.get_title() == "SpinNet ternary weights at zero"
    assert _has_data(ax_zero)
    best = pd.read_csv(res / "dynamics" / "component_summary.csv")
    share = best.loc[best["layer"] == "all", "zero_weight_share"].iloc[0]
    assert any(np.isclose(ln.get_ydata(), share).any() for ln in ax_zero.get_lines())


def test_age_vs_loss_shows_negative_estimates_and_marks_them(results_dir, tmp_path, monkeypatch):
    res = _copy_results(results_dir, tmp_path / "res")
    path = res / "childes-compare" / "checkpoint_dev_ages.csv"
    ages = pd.read_csv(path)
    ages.loc[0, ["predicted_age_months", "ci_low", "ci_high"]] = [-6.0, -30.0, 10.0]
    ages.to_csv(path, index=False)
    result, fig = _draw_capturing("age_vs_loss", res, tmp_path / "f", monkeypatch)
    ax_loss, ax_bpc = _data_panels(fig)[:2]
    for ax in (ax_loss, ax_bpc):
        low, _ = ax.get_ylim()
        assert low <= -30.0 / 12, ax.get_ylim()  # the whole interval is on the axis, not cut at 0
        assert any("not an age" in t.get_text() for t in ax.texts)
    assert "below age 0" in result.caption


def test_age_vs_loss_keeps_zero_as_the_floor_without_negative_estimates(results_dir, tmp_path, monkeypatch):
    _, fig = _draw_capturing("age_vs_loss", results_dir, tmp_path / "f", monkeypatch)
    assert _data_panels(fig)[0].get_ylim()[0] == 0.0


def test_age_vs_loss_bands_are_drawn_in_bits_per_character_only(results_dir, tmp_path, monkeypatch):
    """The hypothesis' bands are GPT-2 nats/token: shading them behind another tokenizer's nats/token
    compares different units. Only the bits-per-character panel carries them, converted."""
    from matplotlib.patches import Rectangle

    from evalsuite.hypothesis import seed_nats_to_bpc

    _, fig = _draw_capturing("age_vs_loss", results_dir, tmp_path / "f", monkeypatch)
    ax_loss, ax_bpc = _data_panels(fig)[:2]
    assert not [p for p in ax_loss.patches if isinstance(p, Rectangle)]
    bands = [p for p in ax_bpc.patches if isinstance(p, Rectangle) and p.get_facecolor()[3] > 0]
    assert bands
    lo, hi = sorted(ax_bpc.get_xlim())
    edges = {round(e, 6) for p in bands for e in (p.get_x(), p.get_x() + p.get_width())}
    inner = [seed_nats_to_bpc(v) for v in (1.5, 2.0, 2.5, 3.0) if lo < seed_nats_to_bpc(v) < hi]
    assert all(round(e, 6) in edges for e in inner), (inner, edges)


def test_heatmap_offers_only_the_marks_its_permutations_can_reach(results_dir, tmp_path, monkeypatch):
    import json

    res = _copy_results(results_dir, tmp_path / "res")
    table = pd.read_csv(res / "dim-probe" / "dim_probe.csv")
    table.loc[table["category"] != "ALL", "p_adj"] = 0.0001  # below anything 500 permutations can give
    table.to_csv(res / "dim-probe" / "dim_probe.csv", index=False)
    (res / "dim-probe" / "meta.json").write_text(json.dumps({"summary": {"config": {"permutations": 500}}}))
    result, fig = _draw_capturing("dimprobe_heatmap", res, tmp_path / "f", monkeypatch)
    ax = _data_panels(fig)[0]
    assert "***" not in ax.get_xlabel() and "**" in ax.get_xlabel()
    assert not any("***" in t.get_text() for t in ax.texts)
    assert "500 within-document label permutations" in result.caption and "***" not in result.caption
    assert figs.reachable_star_levels(5000) == figs.STAR_LEVELS
    assert [m for _, m in figs.reachable_star_levels(199)] == ["**", "*"]  # smallest p 0.005
    assert [m for _, m in figs.reachable_star_levels(99)] == ["*"]  # smallest p 0.01 is not < .01
    assert figs.reachable_star_levels(None) == figs.STAR_LEVELS
