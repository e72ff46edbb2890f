"""One command from each package family writes a meta.json that validates against the one schema
(evalsuite.results): the full command line, the code version, the inputs with their sha256 and a
definition + computing function for every column of every table it wrote."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest
from conftest import run_cli

from corpora.provenance import file_sha256
from evalsuite.results import META_SCHEMA, validate_meta

pytestmark = pytest.mark.usefixtures("one_torch_thread")

TINY = ["--set", "train.block_size=32", "--set", "train.batch_size=4", "--set", "train.eval_iters=2",
        "--set", "train.val_fraction=0.2", "--set", "train.warmup_iters=1", "--set", "model.d_model=32",
        "--set", "model.n_layer=1", "--set", "train.max_iters=4", "--set", "train.eval_interval=2"]


def _meta(path: Path) -> dict:
    meta = json.loads(path.read_text(encoding="utf-8"))
    assert validate_meta(meta) == [], validate_meta(meta)
    assert meta["schema"] == META_SCHEMA
    assert meta["code_version"]["version"] and meta["code_version"]["package"] == "evalsuite"
    assert meta["argv"] and meta["command"]
    return meta


def _check_columns_cover(meta: dict, table: str, columns) -> None:
    described = meta["columns"][table]
    assert list(described) == list(columns)  # every column, in table order, and nothing invented
    for entry in described.values():
        # a dotted name of a function in this project
        assert entry["computed_by"].split(".")[0] in ("evalsuite", "corpora", "trainers"), entry


def test_tokenizer_report_meta(sample, tmp_path):
    out = tmp_path / "tok" / "report.csv"
    assert run_cli(["tokenizer", "report", str(sample), "-t", "char", "-o", str(out)]) == 0
    meta = _meta(out.with_suffix(".meta.json"))
    assert meta["command"] == "tokenizer"
    assert meta["argv"] == ["evalsuite", "tokenizer", "report", str(sample), "-t", "char", "-o", str(out)]
    _check_columns_cover(meta, "report.csv", pd.read_csv(out).columns)
    assert meta["inputs"][0]["sha256"] == file_sha256(sample)
    assert meta["tokenizers"][0]["spec"] == "char"


@pytest.mark.slow
def test_train_then_generate_diagnose_dynamics_meta(sample, tmp_path):
    run = tmp_path / "run"
    assert run_cli(["train", "--config", "baseline-tiny", "--data", str(sample), "-o", str(run), "--no-progress",
                    *TINY]) == 0
    meta = _meta(run / "meta.json")  # trainers family
    assert meta["command"] == "train" and meta["seeds"]["train.seed"] == meta["config"]["train"]["seed"]
    assert meta["inputs"][0]["sha256"] == file_sha256(sample)
    assert "component_grad_norms" in meta["columns"]["metrics_stream.jsonl"]

    samples = tmp_path / "gen" / "samples.jsonl"
    assert run_cli(["generate", str(run), "-o", str(samples), "--limit", "2", "--max-new-tokens", "8",
                    "--prompts", str(sample)]) == 0
    meta = _meta(samples.parent / "meta.json")
    first = json.loads(samples.read_text(encoding="utf-8").splitlines()[0])
    assert set(first) <= set(meta["columns"]["samples.jsonl"])
    assert meta["seeds"] == {"seed": 1337} and meta["sampling"]["seed"] == 1337

    diag = tmp_path / "diag" / "d.csv"
    assert run_cli(["diagnose", str(run), "--samples", str(samples), "-o", str(diag)]) == 0
    meta = _meta(diag.with_suffix(".meta.json"))
    _check_columns_cover(meta, "d.csv", pd.read_csv(diag).columns)
    assert meta["columns"]["d.csv"]["ci_low"]["computed_by"] == "evalsuite.stats.wilson_ci"
    assert {r["path"] for r in meta["inputs"]} >= {str(samples)}

    dyn = tmp_path / "dyn"
    assert run_cli(["dynamics", str(run), "-o", str(dyn), "--checkpoints", "best", "--no-progress"]) == 0
    meta = _meta(dyn / "meta.json")
    for table in ("curves.csv", "gap.csv", "ranks.csv"):
        _check_columns_cover(meta, table, pd.read_csv(dyn / table).columns)
    assert meta["inputs"][0]["sha256"] == file_sha256(run / "metrics_stream.jsonl")


def test_old_option_spellings_are_hidden_aliases(sample, tmp_path, capsys):
    out = tmp_path / "r.csv"
    assert run_cli(["tokenizer", "report", str(sample), "-t", "char", "--csv", str(out)]) == 0
    assert out.is_file()
    capsys.readouterr()
    assert run_cli(["tokenizer", "report", "--help"]) == 0
    text = capsys.readouterr().out
    assert "--out" in text and "--csv" not in text
    # both spellings, disagreeing: one clear error
    assert run_cli(["tokenizer", "report", str(sample), "-t", "char", "-o", str(out), "--csv",
                    str(tmp_path / "other.csv")]) == 2


def test_version_prints_package_version_and_commit(capsys):
    from corpora.provenance import code_version

    assert run_cli(["--version"]) == 0
    text = capsys.readouterr().out
    cv = code_version()
    assert text.startswith(f"evalsuite {cv['version']}")
    if cv["git_commit"]:
        assert cv["git_commit"] in text


def test_every_command_lives_in_a_module_named_after_it():
    from evalsuite.cli import app

    seen = {}
    for info in app.registered_commands:
        seen[info.name] = info.callback.__module__
    for group in app.registered_groups:
        seen[group.name] = group.typer_instance.registered_commands[0].callback.__module__
    assert {"train", "compress", "generate", "dynamics", "diagnose", "figures", "report", "childes-compare",
            "dim-probe", "gpt-eval", "demo", "corpora", "tokenizer"} <= set(seen)
    for name, module in seen.items():
        assert module == f"evalsuite.commands.{name.replace('-', '_')}", (name, module)


def test_every_output_option_is_spelled_out():
    """-o/--out everywhere (old spellings only as hidden aliases)."""
    import click
    import typer.main

    from evalsuite.cli import app

    root = typer.main.get_command(app)
    checked = 0
    for name, cmd in root.commands.items():
        subs = cmd.commands.items() if isinstance(cmd, click.Group) else [(name, cmd)]
        for sub_name, sub in subs:
            for param in sub.params:
                names = set(getattr(param, "opts", []))
                if names & {"--output", "--out-dir", "--csv"}:
                    assert param.hidden, (sub_name, names)
                if "--out" in names:
                    assert "-o" in names, (sub_name, names)
                    checked += 1
    assert checked >= 10


def test_validate_meta_reports_the_old_flat_columns_form():
    from evalsuite.results import build_meta

    meta = build_meta("dim-probe", columns={"t.csv": {"mean": {"definition": "d", "computed_by": "x.y"}}})
    meta["columns"] = {"mean": "a note, not a definition + function"}
    assert any("not a mapping" in p for p in validate_meta(meta))


def _described_columns_exist(meta: dict, out: Path) -> None:
    """Every column a meta.json describes is a column of the table it names (nothing invented); a
    templated name (`n_<CATEGORY>`) stands for the columns it matches."""
    import re

    for table, described in meta["columns"].items():
        path = out / table
        if path.suffix == ".csv" and path.is_file() and path.read_text(encoding="utf-8").strip():
            columns = list(pd.read_csv(path).columns)
            for name in described:
                pattern = re.compile("".join(".+" if part.startswith("<") else re.escape(part)
                                             for part in re.split(r"(<[^>]+>)", name)))
                assert any(pattern.fullmatch(c) for c in columns), (table, name, columns)


def test_dim_probe_meta(tmp_path, tmp_path_factory):
    from _tiny_run import tiny_run

    out = tmp_path / "probe"
    assert run_cli(["dim-probe", str(tiny_run(tmp_path_factory)), "--no-controls", "--permutations", "10",
                    "--bootstrap", "10", "--out", str(out), "--no-progress"]) == 0
    meta = _meta(out / "meta.json")
    assert meta["command"] == "dim-probe" and meta["argv"][:2] == ["evalsuite", "dim-probe"]
    assert "dim_probe.csv" in meta["columns"]
    _described_columns_exist(meta, out)


def _fully_described(meta: dict, out: Path) -> None:
    """Every CSV table the run wrote into `out` has a columns entry naming each of its columns, in order."""
    tables = sorted(p.name for p in out.glob("*.csv"))
    assert tables, out
    for name in tables:
        assert name in meta["columns"], (name, sorted(meta["columns"]))
        _check_columns_cover(meta, name, pd.read_csv(out / name).columns)
        for entry in meta["columns"][name].values():
            assert entry["definition"].strip() and "." in entry["computed_by"], (name, entry)


def _samples(path: Path) -> Path:
    rows = [{"prompt_id": f"p{i}", "prompt": "Once upon a time there was a dog.", "checkpoint_id": ck,
             "completion": " The dog ran to the park. It was happy." if i % 2 else " Dog ran to park. Dog was happy."}
            for ck in ("ck-a", "ck-b") for i in range(3)]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


def test_gpt_eval_meta_rubric_offline_and_validity(tmp_path):
    """gpt-eval's three writers: rubric grades from the loopback scripted judge the judge tests use,
    judge-free scores (no judge), and the judge-free validity check on a tiny corpus."""
    from judge_scripted import ScriptedBackend

    from evalsuite.judge.server import ChatServer

    samples = _samples(tmp_path / "samples.jsonl")
    out = tmp_path / "rubric"
    with ChatServer(ScriptedBackend()) as server:
        assert run_cli(["gpt-eval", str(samples), "--base-url", server.base_url, "--model", "scripted-judge",
                        "--cache", str(tmp_path / "c.sqlite"), "--out", str(out), "--no-progress",
                        "--n-bootstrap", "200"]) == 0
    meta = _meta(out / "meta.json")
    assert meta["command"] == "gpt-eval" and meta["inputs"][0]["sha256"] == file_sha256(samples)
    assert {"summary.csv", "free_scores.csv", "free_story_scores.csv"} <= set(meta["columns"])
    assert meta["columns"]["summary.csv"]["ci_low"]["computed_by"] == "evalsuite.stats.bootstrap_ci"
    assert {"judgments.csv", "story_scores.csv", "categories.csv"} <= set(meta["columns"])
    for key in ("checkpoint_id", "score", "mean"):
        assert key in meta["columns"]["summary.csv"]
    _described_columns_exist(meta, out)
    _fully_described(meta, out)

    free = tmp_path / "free"
    assert run_cli(["gpt-eval", str(samples), "--judge-mode", "free", "--no-local-judge", "--out", str(free),
                    "--no-progress", "--n-bootstrap", "200"]) == 0
    meta = _meta(free / "meta.json")
    assert meta["config"]["mode"] == "free" and "summary.csv" not in meta["columns"]
    _check_columns_cover(meta, "free_scores.csv", pd.read_csv(free / "free_scores.csv").columns)
    _described_columns_exist(meta, free)
    _fully_described(meta, free)

    corpus = tmp_path / "stories.txt"
    corpus.write_text("<|endoftext|>".join(
        f"Once upon a time, {name} had a red ball. {name} went to the park with the dog. The dog saw a cat and ran "
        f"after it. {name} laughed and threw the ball. She was happy, and they played until the sun went down."
        for name in ("Lily", "Mia", "Anna")), encoding="utf-8")
    val = tmp_path / "val"
    assert run_cli(["gpt-eval", "--validate", "--judge-mode", "free", "--corpus", str(corpus), "--rates", "1.0",
                    "--out", str(val), "--no-progress"]) == 0
    meta = _meta(val / "validity_meta.json")
    assert meta["config"]["mode"] == "validate" and meta["config"]["n_stories"] == 3
    assert meta["inputs"][0]["sha256"] == file_sha256(corpus)
    _check_columns_cover(meta, "validity.csv", pd.read_csv(val / "validity.csv").columns)
    _described_columns_exist(meta, val)
    _fully_described(meta, val)
    assert {"validity_pairs.csv", "validity_scores.csv", "validity_verdicts.csv"} <= set(meta["columns"])

    # the rubric validity check (--validate with a judge): validation_meta.json is the schema's meta, and
    # keeps its own keys (corpus, n_stories, rates, match, rubric, judge, run) at the top level
    def grades(completion: str) -> dict:
        g = 9 if "Once upon a time" in completion or completion.count(" the ") > 1 else 3
        return {"assessment": "scripted", "grammar": g, "creativity": 5, "consistency": g, "plot": g,
                "age_group": "C"}

    rub = tmp_path / "rubric_val"
    with ChatServer(ScriptedBackend(grades=grades)) as server:
        assert run_cli(["gpt-eval", "--validate", "--corpus", str(corpus), "--base-url", server.base_url,
                        "--model", "s", "--cache", str(tmp_path / "c.sqlite"), "--out", str(rub), "--no-progress",
                        "--rates", "1.0", "--n-bootstrap", "200"]) == 0
    meta = _meta(rub / "validation_meta.json")
    assert meta["command"] == "gpt-eval" and meta["config"]["mode"] == "validate"
    assert meta["inputs"][0]["sha256"] == file_sha256(corpus)
    for key in ("corpus", "n_stories", "rates", "match", "rubric", "judge", "run", "policy", "versions"):
        assert key in meta, key
    assert meta["n_stories"] == 3 and meta["run"]["judgments"] == 15
    assert set(meta["columns"]) == {"validation_pairs.csv", "validation_trend.csv", "validation_story_scores.csv"}
    _fully_described(meta, rub)
