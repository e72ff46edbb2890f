"""`evalsuite report`: one static HTML page with every figure, table and metadata file; checked in Chromium."""

from __future__ import annotations

import base64
import json
import shutil
import tempfile
from html.parser import HTMLParser
from pathlib import Path
from urllib.parse import unquote

import pandas as pd
import pytest
from _tiny_run import tiny_figures, tiny_results

from corpora.errors import UserError
from evalsuite.cli import main
from evalsuite.report import build_report, meta_summary

CHROME_FLAGS = ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                "--disable-background-networking", "--disable-component-update", "--disable-sync")


class _Page(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.images: list[str] = []
        self.links: list[str] = []
        self.scripts = 0
        self.text: list[str] = []

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        if tag == "img":
            self.images.append(attrs["src"])
        elif tag == "a" and not attrs.get("href", "").startswith("#"):
            self.links.append(attrs["href"])
        elif tag == "script":
            self.scripts += 1

    def handle_data(self, data):
        self.text.append(data)


def _parse(path: Path) -> _Page:
    page = _Page()
    page.feed(path.read_text(encoding="utf-8"))
    return page


@pytest.fixture(scope="module")
def results(tmp_path_factory):
    tiny_figures(tmp_path_factory)  # draws results/figures once per session
    return tiny_results(tmp_path_factory)


@pytest.fixture(scope="module")
def linked(results, tmp_path_factory):
    out = tmp_path_factory.mktemp("report") / "site" / "report.html"
    return build_report(results, out, make_figures=False)


def test_the_page_links_every_figure_table_and_metadata_file(linked, results):
    page = _parse(linked.path)
    base = linked.path.parent
    pngs = sorted((results / "figures").glob("*.png"))
    assert len(pngs) == 8 and len(page.images) == len(pngs)
    for src in page.images:  # relative links that resolve from the page's folder
        assert not src.startswith(("/", "data:", "http")) and (base / unquote(src)).is_file()
    csvs = sorted(results.rglob("*.csv"))
    targets = {(base / unquote(href)).resolve() for href in page.links}
    assert {p.resolve() for p in csvs} <= targets
    assert {p.resolve() for p in results.rglob("*meta.json") if "figures" not in p.parts} <= targets
    assert page.scripts == 0  # a static page: nothing to run, nothing fetched


def test_figures_taken_as_drawn_keep_their_captions_and_inputs(linked, tmp_path_factory):
    text = " ".join(_parse(linked.path).text)
    for fig in tiny_figures(tmp_path_factory):
        assert fig.caption in text
        for path in fig.inputs:
            assert path.name in text
    assert "caption not recorded" not in text


def test_the_page_shows_configs_versions_seeds_and_the_judge_model(linked):
    text = " ".join(_parse(linked.path).text)
    assert "tiny-judge-7b" in text and "http://127.0.0.1:8080/v1" in text  # gpt_eval/meta.json
    assert "runs[0].seed=1337" in text  # the training seed from dynamics/meta.json
    assert '"lr_decay_iters": 6' in text  # the run's resolved config, in full
    assert "torch" in text and "pandas" in text  # versions
    curves = pd.read_csv(next(p for p in linked.tables if p.name == "curves.csv"))
    assert f"{len(curves)} rows" in text  # each table says how big it is and shows its top rows


def test_meta_summary_finds_seeds_judge_and_versions_at_any_depth():
    meta = {"command": "x", "runs": [{"config": {"train": {"seed": 7}}, "seed": 7}],
            "judge": {"model": "m", "base_url": "u"}, "bootstrap": {"seed": 3}, "versions": {"torch": "2"},
            "inputs": {"versions": {"numpy": "1"}}}
    summary = meta_summary(meta)
    assert "runs[0].seed=7" in summary["seeds"] and "bootstrap.seed=3" in summary["seeds"]
    assert summary["judge"] == "m at u"
    assert summary["versions"] == "torch 2, numpy 1"
    assert "runs[0].config" in summary["configs"]


def test_embed_inlines_the_png_bytes(results, tmp_path):
    out = build_report(results, tmp_path / "one.html", make_figures=False, embed=True)
    page = _parse(out.path)
    assert len(page.images) == 8
    drawn = {p.read_bytes() for p in (results / "figures").glob("*.png")}
    for src in page.images:
        assert src.startswith("data:image/png;base64,")
        assert base64.b64decode(src.split(",", 1)[1]) in drawn


def test_skipped_figures_are_listed_with_their_reasons_and_statuses_are_marked(tmp_path):
    (tmp_path / "diagnose").mkdir()
    pd.DataFrame({"check": ["epochs", "warmup"], "status": ["warn", "pass"], "value": [9.0, 0.1]}).to_csv(
        tmp_path / "diagnose" / "run-best.csv", index=False)
    out = build_report(tmp_path)
    html = out.path.read_text()
    assert out.path == tmp_path / "report.html"
    assert all(fig.skipped for fig in out.figures)
    for fig in out.figures:
        assert fig.name in html and fig.skipped.replace("`", "&#96;")[:40] in html.replace("`", "&#96;")
    assert '<td class="status-warn">warn</td>' in html
    assert "No meta.json files found" in html


def test_cli_report_and_bad_input(results, tmp_path, capsys):
    out = tmp_path / "r.html"
    with pytest.raises(SystemExit) as done:
        main(["report", str(results), "-o", str(out), "--no-redraw"])
    assert done.value.code == 0 and out.is_file()
    assert "wrote" in capsys.readouterr().out
    with pytest.raises(UserError, match="results directory not found"):
        build_report(tmp_path / "missing")


def _chrome_driver():
    """A headless Chromium under chromedriver, or a skip that says what is missing."""
    try:
        from selenium import webdriver
        from selenium.webdriver.chrome.options import Options
        from selenium.webdriver.chrome.service import Service
    except ImportError:
        pytest.skip("selenium is not installed: pip install -e '.[dev]'")
    binary = next((shutil.which(n) for n in ("chromium", "chromium-browser", "google-chrome") if shutil.which(n)), None)
    driver = shutil.which("chromedriver")
    if binary is None or driver is None:
        pytest.skip("headless Chromium absent: apt-get install chromium chromium-driver (Debian)")
    options = Options()
    options.binary_location = binary
    profile = tempfile.mkdtemp(prefix="chromium-profile-")
    for flag in (*CHROME_FLAGS, f"--user-data-dir={profile}"):
        options.add_argument(flag)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    browser = webdriver.Chrome(service=Service(driver), options=options)
    return browser, profile


@pytest.mark.slow
def test_the_page_loads_in_headless_chromium_with_every_image_rendered(linked, results, tmp_path):
    embedded = build_report(results, tmp_path / "embedded.html", make_figures=False, embed=True)
    browser, profile = _chrome_driver()
    try:
        for page in (linked.path, embedded.path):
            browser.get(page.resolve().as_uri())
            state = browser.execute_script("return document.readyState")
            images = browser.execute_script(
                "return Array.from(document.images).map(i => [i.getAttribute('alt'), i.complete, i.naturalWidth])")
            errors = [e for e in browser.get_log("browser") if e["level"] in ("SEVERE", "ERROR")]
            assert state == "complete"
            assert errors == [], errors
            assert len(images) == 8
            for alt, complete, width in images:
                assert complete and width > 0, f"{alt} did not render in {page.name}"
        # the check can fail: a page with a broken image shows naturalWidth 0 and a console error
        broken = tmp_path / "broken.html"
        broken.write_text('<!DOCTYPE html><html><head><link rel="icon" href="data:,"></head>'
                          '<body><img src="missing.png" alt="x"></body></html>')
        browser.get(broken.resolve().as_uri())
        width = browser.execute_script("return document.images[0].naturalWidth")
        assert width == 0 and any(e["level"] == "SEVERE" for e in browser.get_log("browser"))
    finally:
        browser.quit()
        shutil.rmtree(profile, ignore_errors=True)


def test_the_report_meta_json_summaries_are_json_readable(results):
    for path in results.rglob("*meta.json"):
        assert isinstance(json.loads(path.read_text()), dict)


# ----------------------------------------------------------------------------------------------
# the summary at the top of the page


STUDY = Path(__file__).resolve().parents[1] / "results" / "study"


def _section_text(html: str, section: str) -> str:
    import re

    start = html.index(f'<section id="{section}">')
    end = html.index("</section>", start)
    return re.sub(r"\s+", " ", re.sub(r"<[^>]+>", " ", html[start:end])).replace("&#39;", "'").replace("&gt;", ">")


@pytest.fixture(scope="module")
def study_page(tmp_path_factory):
    """The report of the committed study outputs (real childes-compare, dim-probe and judge-validity
    results), figures taken as they are."""
    if not (STUDY / "childes-compare" / "meta.json").is_file():
        pytest.skip("results/study is not in this checkout")
    out = tmp_path_factory.mktemp("study_report") / "report.html"
    build_report(STUDY, out, make_figures=False)
    return out.read_text(encoding="utf-8")


def test_the_page_opens_with_the_summary_then_figures_then_tables(study_page):
    positions = [study_page.index(marker) for marker in
                 ('<section id="summary">', '<section id="settings">', '<section id="samples">',
                  '<h2 id="figures">', '<h2 id="tables">', '<h2 id="metadata">')]
    assert positions == sorted(positions)


def test_summary_states_the_loss_to_age_verdict_with_its_test_and_the_ages_it_rests_on(study_page):
    meta = json.loads((STUDY / "childes-compare" / "meta.json").read_text(encoding="utf-8"))
    text = _section_text(study_page, "summary")
    summary = meta["summary"]
    assert f"Verdict: {summary['verdict']}" in text
    test = summary["spearman_bpc"]
    assert f"Spearman rho = {test['rho']:.2f}" in text and f"p = {test['p']:.2g}" in text
    assert f"n = {test['n']} checkpoints" in text
    ages = pd.read_csv(STUDY / "childes-compare" / "checkpoint_ages.csv")
    first = ages.iloc[0]
    assert (f"{first['age_months'] / 12:.1f} y [{first['ci_low'] / 12:.1f}, {first['ci_high'] / 12:.1f}]") in text
    assert all(str(c) in text for c in ages["checkpoint"])
    assert summary["caveats"][0] in text


def test_summary_counts_the_dim_probe_claims_and_the_controls_they_face(study_page):
    claims = pd.read_csv(STUDY / "dim-probe" / "claims.csv")
    last = claims[claims["layer"] == claims["layer"].max()]
    text = _section_text(study_page, "summary")
    for verdict, n in last["verdict"].value_counts().items():
        assert f"{n} {verdict}" in text
    controls = pd.read_csv(STUDY / "dim-probe" / "controls.csv")
    deep = controls[controls["layer"] == controls["layer"].max()]
    for name, sub in deep.groupby("control"):
        assert f"beats the {name} control in {int(sub['exceeds_control'].sum())} of {len(sub)} categories" in text


def test_summary_reports_judge_validity_from_the_clean_vs_corrupted_pairs(study_page):
    pairs = pd.read_csv(STUDY / "gpt_eval_validate_local" / "validation_pairs.csv")
    text = _section_text(study_page, "summary")
    assert f"clean above corrupted in {int(pairs['clean_higher'].sum())} of {int(pairs['n_pairs'].sum())} pairs" in text


def test_summary_names_data_settings_and_code_version(study_page):
    text = _section_text(study_page, "settings")
    meta = json.loads((STUDY / "childes-compare" / "meta.json").read_text(encoding="utf-8"))
    assert "childes-compare" in text
    assert meta["inputs"]["childes"][0] in text


def test_summary_shows_sample_stories_per_checkpoint_with_beginning_and_completion(results, tmp_path_factory,
                                                                                 tmp_path, capsys):
    from _tiny_run import tiny_run

    res = tmp_path / "res"
    shutil.copytree(results, res, ignore=shutil.ignore_patterns("figures"))
    run = tiny_run(tmp_path_factory)
    samples = res / "generate" / "samples.jsonl"
    with pytest.raises(SystemExit) as exit_info:
        main(["generate", str(run / "best"), str(run / "step_0000003"), "--limit", "4", "--max-new-tokens", "12",
              "-o", str(samples)])
    assert exit_info.value.code == 0
    page = tmp_path / "report.html"
    build_report(res, page, make_figures=False)
    settings = _section_text(page.read_text(encoding="utf-8"), "settings")
    config = json.loads((run / "best" / "config.json").read_text(encoding="utf-8"))
    assert "train (checkpoint config.json)" in settings and f"steps: {config['train']['max_iters']}" in settings
    assert f"model: {config['model']['family']}" in settings
    text = _section_text(page.read_text(encoding="utf-8"), "samples")
    records = [json.loads(line) for line in samples.read_text(encoding="utf-8").splitlines()]
    ids = list(dict.fromkeys(r["checkpoint_id"] for r in records))
    assert len(ids) == 2 and all(i in text for i in ids)
    for ckpt in ids:
        mine = [r for r in records if r["checkpoint_id"] == ckpt]
        for r in mine[:3]:  # three stories per checkpoint, beginning then completion
            assert " ".join(r["prompt"].split()) in text
            assert " ".join(r["completion"].split())[:40] in text
        assert " ".join(mine[3]["prompt"].split()) not in text  # the fourth is left to samples.jsonl


def test_summary_counts_only_the_probed_models_claims_not_the_control_rows(tmp_path):
    """claims.csv v2 holds one block per model; the controls' rows (verdict 'control') are not verdicts."""
    folder = tmp_path / "results" / "dim-probe"
    folder.mkdir(parents=True)
    rows = [{"model": "probe", "role": "probed", "layer": 2, "category": c, "verdict": v}
            for c, v in (("NOUN", "refuted"), ("VERB", "not_distinguishable_from_control"))]
    rows += [{"model": m, "role": "control", "layer": 2, "category": c, "verdict": "control"}
             for m in ("untrained", "baseline") for c in ("NOUN", "VERB")]
    pd.DataFrame(rows).to_csv(folder / "claims.csv", index=False)
    out = tmp_path / "report.html"
    build_report(tmp_path / "results", out, make_figures=False)
    text = _section_text(out.read_text(encoding="utf-8"), "summary")
    assert "1 refuted, 1 not_distinguishable_from_control of 2 claimed categories" in text
    assert "4 control" not in text and " control, " not in text


def test_summary_quotes_the_childes_age_model_ages_and_labels_an_old_folder_superseded(tmp_path):
    """childes-compare's verdict rests on checkpoint_dev_ages.csv (the childes-age model) and the loss-to-age
    test in meta summary `loss_age`; a folder of the old error-profile model (checkpoint_ages.csv only) is
    shown labelled as superseded, never as the current model."""
    new, old = tmp_path / "results" / "new" / "childes-compare", tmp_path / "results" / "old" / "childes-compare"
    new.mkdir(parents=True)
    old.mkdir(parents=True)
    loss_age = {"verdict": "not testable with this design", "reason": "1 checkpoint(s) in range", "n_checkpoints": 1,
                "n_runs": 1, "combined_rho": float("nan"), "p_negative": float("nan"), "power": float("nan")}
    (new / "meta.json").write_text(json.dumps({"command": "childes-compare", "summary": {
        "verdict": loss_age["verdict"], "loss_age": loss_age, "caveats": []}}), encoding="utf-8")
    pd.DataFrame([{"checkpoint_id": "run/step_1", "val_bpc": 1.1, "predicted_age_months": 36.0, "ci_low": 30.0,
                   "ci_high": 42.0, "in_range": True, "out_of_range_reason": ""},
                  {"checkpoint_id": "run/step_2", "val_bpc": 0.9, "predicted_age_months": float("nan"),
                   "ci_low": float("nan"), "ci_high": float("nan"), "in_range": False,
                   "out_of_range_reason": "mlu_m above the training range"}]).to_csv(new / "checkpoint_dev_ages.csv",
                                                                                    index=False)
    (old / "meta.json").write_text(json.dumps({"command": "childes-compare", "summary": {
        "verdict": "supported", "spearman_bpc": {"rho": -1.0, "p": 0.0167, "n": 5, "p_method": "exact"}}}),
        encoding="utf-8")
    pd.DataFrame([{"checkpoint": "x", "val_bpc": 1.0, "age_months": 48.0, "ci_low": 40.0, "ci_high": 56.0,
                   "hypothesised_band": "4-5 y", "extrapolated": True}]).to_csv(old / "checkpoint_ages.csv", index=False)
    out = tmp_path / "report.html"
    build_report(tmp_path / "results", out, make_figures=False)
    text = _section_text(out.read_text(encoding="utf-8"), "summary")
    assert "childes-age model" in text and "run/step_1" in text and "3.0 y [2.5, 3.5]" in text
    assert "no age: mlu_m above the training range" in text
    assert "n = 1 in-range checkpoints of 1 run(s)" in text
    assert "superseded error-profile age model" in text and "Spearman rho = -1.00" in text
