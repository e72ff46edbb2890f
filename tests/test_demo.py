"""The demo's plan: every step is a real evalsuite command whose options parse, and data gaps are explained."""

from __future__ import annotations

from pathlib import Path

import pytest
import typer

from corpora.errors import UserError
from evalsuite.cli import app
from evalsuite.demo import SAMPLE_NOTE, plan_demo


def _parse(args: list[str]) -> None:
    """Resolve and parse the command line exactly as the CLI would, without running the command."""
    group = typer.main.get_command(app)
    ctx = group.make_context("evalsuite", list(args), resilient_parsing=False)
    name, command, rest = group.resolve_command(ctx, _remaining(ctx))
    while hasattr(command, "resolve_command") and rest:  # nested groups (corpora, tokenizer)
        sub_ctx = command.make_context(name, rest)
        name, command, rest = command.resolve_command(sub_ctx, _remaining(sub_ctx))
    command.make_context(name, rest)


def _remaining(ctx) -> list[str]:
    # click >= 8.2 (and typer's vendored copy) keep the subcommand name in _protected_args
    protected = getattr(ctx, "_protected_args", None) or getattr(ctx, "protected_args", [])
    return [*protected, *ctx.args]


def test_every_step_parses_as_a_real_command(tmp_path: Path, shared_data: Path) -> None:
    plan = plan_demo(tmp_path / "demo", data_dir=shared_data, judge_base_url="http://127.0.0.1:9/v1",
                     judge_model="m", childes_files=4)
    names = [step.name for step in plan.steps]
    assert names[:2] == ["train spinnet-tiny", "train baseline-tiny"]
    assert {"generate stories", "dim-probe SpinNet", "childes-compare", "gpt-eval", "figures", "report"} <= set(names)
    for step in plan.steps:
        assert step.skip_reason is None, step.name
        _parse(step.args)
    childes = next(s for s in plan.steps if s.name == "childes-compare")
    picked = [childes.args[i + 1] for i, a in enumerate(childes.args) if a == "--childes"]
    assert len(picked) == 4 and {Path(p).parent.name for p in picked} == {"Adam", "Eve"}


def test_sample_corpus_gets_a_validation_story(tmp_path: Path, shared_data: Path) -> None:
    plan = plan_demo(tmp_path / "demo", data_dir=shared_data)
    assert plan.corpus_note == SAMPLE_NOTE
    train = plan.steps[0].args
    assert "train.val_fraction=0.2" in train  # 5 stories: 0.1 would leave validation empty


def test_without_reference_data_childes_and_judge_are_skipped_with_reasons(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.delenv("EVALSUITE_DATA", raising=False)
    monkeypatch.chdir(tmp_path)
    corpus = tmp_path / "stories.txt"
    corpus.write_text("One day a cat sat.<|endoftext|>A dog ran home.", encoding="utf-8")
    plan = plan_demo(tmp_path / "demo", corpus=corpus)
    skipped = {s.name: s.skip_reason for s in plan.steps if s.skip_reason}
    assert set(skipped) == {"childes-compare", "gpt-eval"}
    assert "EVALSUITE_DATA" in skipped["childes-compare"] and "--base-url" in skipped["gpt-eval"]


def test_missing_corpus_is_a_user_error(tmp_path: Path) -> None:
    with pytest.raises(UserError, match="corpus not found"):
        plan_demo(tmp_path / "demo", corpus=tmp_path / "nope.txt")


def test_too_few_steps_for_the_snapshots_is_a_user_error(tmp_path: Path, shared_data: Path) -> None:
    with pytest.raises(UserError, match="at least 3 training steps"):
        plan_demo(tmp_path / "demo", data_dir=shared_data, max_iters=2)
