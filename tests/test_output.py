"""What the commands print: no markup accidents (bracketed text survives), full-width tables when
stdout is piped, and progress that moves on long inputs."""

from __future__ import annotations

import json
import os
from types import SimpleNamespace

import pytest
from _tiny_run import tiny_run

from evalsuite.cli import PIPED_WIDTH, main, piped_width

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _run(argv, capsys) -> tuple[int, str, str]:
    capsys.readouterr()
    with pytest.raises(SystemExit) as exit_info:
        main(argv)
    captured = capsys.readouterr()
    return exit_info.value.code, captured.out, captured.err


def test_diagnose_prints_one_row_per_article_with_its_bracketed_name(tmp_path_factory, tmp_path, capsys):
    """rich used to read `[the]` as a markup tag and print four identical `article_frequency` rows."""
    run = tiny_run(tmp_path_factory)
    samples = tmp_path / "samples.jsonl"
    lines = [{"prompt": "Once upon a time,", "completion": " the cat saw a dog and an owl in the park. The end."}
             for _ in range(4)]
    samples.write_text("".join(json.dumps(r) + "\n" for r in lines), encoding="utf-8")
    out_csv = tmp_path / "[weird] name.csv"
    code, out, _ = _run(["diagnose", str(run), "--samples", str(samples), "-o", str(out_csv)], capsys)
    assert code == 0
    import pandas as pd

    checks = pd.read_csv(out_csv)["check"].tolist()
    bracketed = [c for c in checks if c.startswith("article_frequency[")]
    assert bracketed, checks  # the CSV has them: every one must be printed under its own name
    for name in bracketed:
        assert name in out, (name, out)
    assert str(out_csv.name) in out  # a path with brackets is printed as given


def test_piped_tables_are_not_cut_at_80_columns(tmp_path_factory, tmp_path, capsys):
    run = tiny_run(tmp_path_factory)
    out_csv = tmp_path / ("a-long-folder-name-" * 4) / "diagnose.csv"
    code, out, _ = _run(["diagnose", str(run), "-o", str(out_csv)], capsys)
    assert code == 0
    assert max(len(line) for line in out.splitlines()) > 80
    assert str(out_csv) in out.replace("\n", "")  # the path is printed whole
    assert str(out_csv) in out  # ... on one line


def test_piped_width_leaves_a_user_columns_setting_and_restores_the_environment(monkeypatch):
    monkeypatch.delenv("COLUMNS", raising=False)
    with piped_width():  # pytest's stdout is not a terminal
        assert os.environ["COLUMNS"] == str(PIPED_WIDTH)
    assert "COLUMNS" not in os.environ
    monkeypatch.setenv("COLUMNS", "99")
    with piped_width():
        assert os.environ["COLUMNS"] == "99"
    assert os.environ["COLUMNS"] == "99"


def test_the_install_hint_keeps_its_extra_in_gpt_eval_help(capsys, monkeypatch):
    monkeypatch.setenv("COLUMNS", "250")
    code, out, _ = _run(["gpt-eval", "--help"], capsys)
    assert code == 0
    assert "pip install -e '.[judge]'" in out
    assert "(.[judge])" in out


def test_dim_probe_batches_long_documents_one_by_one_so_its_bar_moves():
    """40 documents of ~14k tokens were one step of 32 documents: the bar sat at 0% for minutes."""
    from evalsuite.dimprobe.probe import BATCH_CHARS, _batch_len

    long_docs = [SimpleNamespace(text="x" * 60_000) for _ in range(40)]
    assert _batch_len(long_docs, 0, 32) == 1
    short = [SimpleNamespace(text="x" * 1000) for _ in range(100)]
    assert _batch_len(short, 0, 32) == 32  # short stories keep the configured batch
    assert _batch_len(short, 90, 32) == 10
    mixed = [SimpleNamespace(text="x" * (BATCH_CHARS // 3)) for _ in range(10)]
    assert _batch_len(mixed, 0, 32) == 3
