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
