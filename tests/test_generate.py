"""Story generation: prompt sets, sampling filters, batching, stop at <|endoftext|>, samples.jsonl."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch

from corpora.errors import UserError
from evalsuite.cli import main
from evalsuite.generate import (
    Prompt,
    SamplingConfig,
    filter_logits,
    generate_ids,
    generate_samples,
    load_prompt_set,
)

DOCS = [
    "Once upon a time there was a little girl named Mia. She had a red kite.",
    "Tom had a small blue truck. He played with it every day in the sand!",
    'One day, a cat said, "Hello, dog." The dog was happy, and they played.',
]
SAMPLE_FIELDS = {"prompt_id", "prompt", "completion", "checkpoint", "checkpoint_id", "val_loss", "val_bpc",
                 "tokens_seen", "model_family", "temperature", "top_k", "top_p", "max_new_tokens", "seed"}


pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def tiny_checkpoint(tmp_path_factory) -> Path:
    """A real (untrained) baseline-tiny model saved as a checkpoint directory by trainers.checkpoint."""
    from corpora.tokenizers import train_char
    from trainers.checkpoint import write_checkpoint
    from trainers.config import load_config
    from trainers.model import build_model

    tok = train_char(DOCS)
    cfg = load_config("baseline-tiny", [f"model.vocab_size={tok.vocab_size}", "train.block_size=32"])
    torch.manual_seed(0)
    model = build_model(cfg.model)
    run = tmp_path_factory.mktemp("run")
    state = {"iter_num": 7, "tokens_seen": 1234, "val_loss": 3.25, "val_bpc": 4.69, "best_val_loss": 3.25}
    return write_checkpoint(run, "best", model=model, config=cfg, tokenizer=tok, state=state)


@pytest.fixture
def prompt_file(tmp_path) -> Path:
    path = tmp_path / "mine.jsonl"
    lines = [{"id": "p1", "prompt": "Once upon a time there was a"}, {"id": "p2", "prompt": "Tom had a small"},
             {"id": "p3", "prompt": "One day, a cat said, "}]
    path.write_text("\n".join(json.dumps(x) for x in lines) + "\n")
    return path


def test_builtin_prompt_set_is_labelled_and_unique():
    ps = load_prompt_set("tinystories")
    assert len(ps.prompts) == 50
    assert len({p.id for p in ps.prompts}) == 50 and len({p.text for p in ps.prompts}) == 50
    assert "Written for the evalsuite project" in ps.meta["source"]
    # cut mid-sentence, like the TinyStories evaluation prompts: no final full stop
    assert sum(not p.text.endswith((".", "!", '"')) for p in ps.prompts) >= 45


def test_user_prompt_files(tmp_path):
    txt = tmp_path / "b.txt"
    txt.write_text("First beginning\n\n  Second beginning  \n")
    assert [p.text for p in load_prompt_set(txt).prompts] == ["First beginning", "Second beginning"]
    eot = tmp_path / "c.txt"
    eot.write_text("A story\nthat spans lines<|endoftext|>Another one<|endoftext|>")
    assert [p.text for p in load_prompt_set(eot).prompts] == ["A story\nthat spans lines", "Another one"]
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"id": "x", "prompt": "a"}\n{"id": "x", "prompt": "b"}\n')
    with pytest.raises(UserError, match="duplicate ids"):
        load_prompt_set(bad)
    typo = tmp_path / "typo.jsonl"
    typo.write_text('{"id": "x", "promt": "a"}\n')
    with pytest.raises(UserError, match="unknown key"):
        load_prompt_set(typo)
    with pytest.raises(UserError, match="prompt set not found"):
        load_prompt_set(tmp_path / "missing.jsonl")


def test_filter_logits_top_k_and_top_p():
    logits = torch.log(torch.tensor([[0.5, 0.3, 0.15, 0.05]]))
    p = filter_logits(logits, 1.0, None, 1.0)
    assert torch.allclose(p, torch.tensor([[0.5, 0.3, 0.15, 0.05]]), atol=1e-6)
    p = filter_logits(logits, 1.0, 2, 1.0)
    assert torch.allclose(p, torch.tensor([[0.625, 0.375, 0.0, 0.0]]), atol=1e-6)
    p = filter_logits(logits, 1.0, None, 0.8)  # 0.5 + 0.3 reaches 0.8: keep two
    assert torch.allclose(p, torch.tensor([[0.625, 0.375, 0.0, 0.0]]), atol=1e-6)
    p = filter_logits(logits, 1.0, None, 0.81)  # needs the third token too
    assert (p[0, :3] > 0).all() and p[0, 3] == 0
    p = filter_logits(logits, 0.5, None, 1.0)  # temperature sharpens
    assert p[0, 0] > 0.5


class CountdownModel(torch.nn.Module):
    """Scripted next-token logits (a test double for the model interface): favours token 3 until the
    context holds `stop_after` non-eot tokens after the last eot, then favours eot (id 1)."""

    def __init__(self, stop_after: int, vocab: int = 6):
        super().__init__()
        self.stop_after, self.vocab = stop_after, vocab
        self.batch_sizes: list[int] = []

    def forward(self, idx, targets=None, return_hidden=False):
        self.batch_sizes.append(idx.shape[0])
        logits = torch.zeros(idx.shape[0], idx.shape[1], self.vocab)
        for b in range(idx.shape[0]):
            row = idx[b].tolist()
            since = len(row) - 1 - max(i for i, t in enumerate(row) if t == 1) if 1 in row else len(row)
            logits[b, -1, 1 if since >= self.stop_after else 3] = 10.0
        return type("Out", (), {"logits": logits})()


def test_stops_at_eot_and_excludes_it():
    model = CountdownModel(stop_after=5)
    prompts = [(Prompt("a", "x"), [1, 2]), (Prompt("b", "y"), [1, 2, 2, 2])]
    seqs = generate_ids(model, prompts, eot_id=1, block_size=64,
                        sampling=SamplingConfig(temperature=0, max_new_tokens=50))
    assert [s.finish_reason for s in seqs] == ["eot", "eot"]
    assert seqs[0].ids[seqs[0].n_prompt:] == [3, 3, 3, 3]  # 1 prompt token + 4 generated = 5, then eot
    assert seqs[1].ids[seqs[1].n_prompt:] == [3, 3]
    assert 1 not in seqs[0].ids[1:]


def test_length_limit_and_equal_length_batching():
    model = CountdownModel(stop_after=1000)
    prompts = [(Prompt(str(i), "x"), [1] + [2] * n) for i, n in enumerate([3, 3, 5, 4])]
    seqs = generate_ids(model, prompts, eot_id=1, block_size=8, sampling=SamplingConfig(temperature=0, max_new_tokens=6))
    assert all(s.finish_reason == "length" and len(s.ids) - s.n_prompt == 6 for s in seqs)
    # Shorter prompts catch up, then all four move together: far fewer passes than 4 x 6.
    assert max(model.batch_sizes) == 4
    assert len(model.batch_sizes) <= (6 - 4) + 6 + 1


def test_same_seed_same_text_and_fields(tiny_checkpoint, prompt_file):
    ps = load_prompt_set(prompt_file)
    cfg = SamplingConfig(temperature=1.0, top_k=20, top_p=0.95, max_new_tokens=40, seed=7, batch_size=4)
    first = generate_samples([tiny_checkpoint], ps, cfg)
    again = generate_samples([tiny_checkpoint], ps, cfg)
    assert [r["completion"] for r in first] == [r["completion"] for r in again]
    other = generate_samples([tiny_checkpoint], ps, SamplingConfig(**{**cfg.__dict__, "seed": 8}))
    assert [r["completion"] for r in other] != [r["completion"] for r in first]
    # one sequence at a time gives the same stories: a story does not depend on its batch
    single = generate_samples([tiny_checkpoint], ps, SamplingConfig(**{**cfg.__dict__, "batch_size": 1}))
    assert [r["completion"] for r in single] == [r["completion"] for r in first]
    row = first[0]
    assert set(row) >= SAMPLE_FIELDS
    assert row["val_loss"] == 3.25 and row["val_bpc"] == 4.69 and row["tokens_seen"] == 1234
    assert row["model_family"] == "baseline" and row["seed"] == 7 and row["top_k"] == 20
    assert row["checkpoint_id"].startswith(f"{tiny_checkpoint.parent.name}/best-")
    assert [r["prompt_id"] for r in first] == ["p1", "p2", "p3"]
    for r in first:
        assert r["n_completion_tokens"] <= 40 and r["finish_reason"] in ("eot", "length")
        assert len(r["completion"]) == r["n_completion_tokens"]  # char tokenizer: one char per token


def test_context_longer_than_block_size_is_cropped(tiny_checkpoint):
    ps = [Prompt("long", "Once upon a time there was a little girl named Mia. She had a red kite.")]
    from evalsuite.generate import PromptSet

    rows = generate_samples([tiny_checkpoint], PromptSet("x", "x", ps, {}),
                            SamplingConfig(temperature=0, max_new_tokens=30))
    assert rows[0]["n_prompt_tokens"] > 32 and rows[0]["n_completion_tokens"] > 0


def test_unknown_characters_are_a_user_error(tiny_checkpoint, tmp_path):
    bad = tmp_path / "zz.txt"
    bad.write_text("Zebra quizzes ✓\n")
    with pytest.raises(UserError, match="does not know"):
        generate_samples([tiny_checkpoint], load_prompt_set(bad), SamplingConfig(max_new_tokens=5))


def test_cli_writes_samples_jsonl(tiny_checkpoint, prompt_file, tmp_path):
    out = tmp_path / "gen" / "samples.jsonl"
    argv = ["generate", str(tiny_checkpoint.parent), "--prompts", str(prompt_file), "--out", str(out),
            "--max-new-tokens", "20", "--seed", "3", "--temperature", "0.9"]
    with pytest.raises(SystemExit) as exit_info:
        main(argv)
    assert exit_info.value.code == 0
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert len(rows) == 3 and all(set(r) >= SAMPLE_FIELDS for r in rows)
    assert rows[0]["checkpoint"] == str(tiny_checkpoint.parent)  # run dir given: best/ was used
    meta = json.loads((out.parent / "meta.json").read_text())
    assert meta["sampling"]["seed"] == 3 and meta["checkpoints"][0]["stories"] == 3
    assert not math.isnan(rows[0]["val_loss"])
    with pytest.raises(SystemExit) as exit_info:
        main(["generate", str(tmp_path / "nope")])
    assert exit_info.value.code == 2


def test_gpt_eval_on_a_checkpoint_generates_then_judges(tiny_checkpoint, prompt_file, tmp_path):
    from judge_scripted import ScriptedBackend

    from evalsuite.judge.server import ChatServer

    out = tmp_path / "ge"
    backend = ScriptedBackend()
    with ChatServer(backend) as server:
        argv = ["gpt-eval", str(tiny_checkpoint), "--prompts", str(prompt_file), "--gen-max-new-tokens", "15",
                "--base-url", server.base_url, "--model", "scripted-judge", "--cache", str(tmp_path / "c.sqlite"),
                "--out", str(out), "--no-progress", "--n-bootstrap", "200"]
        with pytest.raises(SystemExit) as exit_info:
            main(argv)
        assert exit_info.value.code == 0
        assert server.requests_seen == 3
    samples = list((out / "samples").glob("*.jsonl"))
    assert len(samples) == 1
    rows = [json.loads(line) for line in samples[0].read_text().splitlines()]
    judged = {json.loads(line)["completion"] for line in (out / "judgments.jsonl").read_text().splitlines()}
    assert judged == {r["completion"] for r in rows}  # the generated stories are what was judged
    import pandas as pd

    summary = pd.read_csv(out / "summary.csv")
    assert set(summary.checkpoint_id) == {rows[0]["checkpoint_id"]} and (summary.val_loss == 3.25).all()
