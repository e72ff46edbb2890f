"""`evalsuite diagnose`: every check on a real tiny run, and faults planted in copies of it are caught."""

from __future__ import annotations

import json
import math
import re

import numpy as np
import pandas as pd
import pytest
from _tiny_run import copy_run, stories, tiny_run

from corpora.errors import UserError
from corpora.tokenized import read_meta, write_tokenized
from corpora.tokenizers import article_token_ids, load_tokenizer, train_char
from evalsuite.cli import main
from evalsuite.diagnose import diagnose
from evalsuite.generate import checkpoint_id


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    return tiny_run(tmp_path_factory)


@pytest.fixture(scope="module")
def healthy(run_dir):
    return diagnose(run_dir).set_index("check")


def test_a_spinnet_with_the_mixer_off_fails_unless_the_run_asked_for_it(run_dir, tmp_path):
    run = copy_run(run_dir, tmp_path / "run")
    config = run / "best" / "config.json"
    _edit_json(config, model__octonion_attention=False)  # what every study run had, by a config bug
    row = diagnose(run).set_index("check").loc["octonion_mixer"]
    assert row["status"] == "fail" and "did not ask" in row["detail"]
    _edit_json(config, model__ablations=["mixer-off"])
    assert diagnose(run).set_index("check").loc["octonion_mixer", "status"] == "pass"


def _edit_json(path, **changes):
    data = json.loads(path.read_text())
    for dotted, value in changes.items():
        target = data
        *parents, key = dotted.split("__")
        for p in parents:
            target = target[p]
        target[key] = value
    path.write_text(json.dumps(data))


def test_every_check_has_a_row_and_the_healthy_run_passes_its_consistency_checks(healthy):
    expected = ["config_strict", "octonion_mixer", "vocab_size", "embedding_share", "vocab_coverage", "training_progress", "epochs",
                "tokens_per_parameter", "best_vs_latest", "train_val_gap", "lr_decay_iters", "min_lr", "warmup",
                "tokenizer_identity", "dataset_identity", "article_frequency"]
    assert list(healthy.index) == expected
    for check in ("config_strict", "octonion_mixer", "vocab_size", "training_progress", "lr_decay_iters", "min_lr",
                  "tokenizer_identity", "dataset_identity"):
        assert healthy.loc[check, "status"] == "pass", (check, healthy.loc[check, "detail"])
    assert set(healthy["status"]) <= {"pass", "warn", "fail", "skip"}
    assert healthy.loc["article_frequency", "status"] == "skip"  # no samples given
    # a 6-step run on 60 stories is undertrained by any rule of thumb, and says so
    assert healthy.loc["tokens_per_parameter", "status"] == "warn"


def test_numbers_are_computed_from_the_run_files(run_dir, healthy):
    state = json.loads((run_dir / "best" / "trainer_state.json").read_text())
    train_meta = read_meta(state["data"]["train_path"])
    assert healthy.loc["epochs", "value"] == pytest.approx(state["tokens_seen"] / train_meta.n_tokens)
    tok = load_tokenizer(run_dir / "best" / "tokenizer")
    assert str(tok.vocab_size) in healthy.loc["vocab_size", "detail"].replace(",", "")
    from safetensors import safe_open

    with safe_open(str(run_dir / "best" / "model.safetensors"), "pt") as f:
        shapes = {k: f.get_slice(k).get_shape() for k in f.keys()}  # noqa: SIM118
    total = sum(int(np.prod(s)) for s in shapes.values())
    assert healthy.loc["embedding_share", "value"] == pytest.approx(np.prod(shapes["wte.weight"]) / total)
    array = np.fromfile(state["data"]["train_path"], dtype=train_meta.dtype)
    unused = 1 - len(np.unique(array)) / tok.vocab_size
    assert f"{unused:.1%}" in healthy.loc["vocab_coverage", "detail"]
    assert healthy.loc["vocab_coverage", "value"] == pytest.approx(train_meta.n_tokens / tok.vocab_size)


@pytest.mark.parametrize(
    ("changes", "check", "status"),
    [
        ({"train__force_schedule": True, "train__lr_decay_iters": 18}, "lr_decay_iters", "fail"),  # never finishes
        ({"train__force_schedule": True, "train__lr_decay_iters": 3}, "lr_decay_iters", "warn"),  # floor early
        ({"train__min_lr": 3e-3}, "min_lr", "warn"),  # = lr: no decay at all
        ({"train__min_lr": 6e-3}, "min_lr", "fail"),  # above lr
        ({"train__warmup_iters": 6}, "warmup", "fail"),  # warmup never ends
        ({"train__warmup_iters": 0}, "warmup", "warn"),
    ],
)
def test_planted_schedule_faults_are_flagged(run_dir, tmp_path, changes, check, status):
    run = copy_run(run_dir, tmp_path / "run")
    _edit_json(run / "best" / "config.json", **changes)
    frame = diagnose(run).set_index("check")
    assert frame.loc[check, "status"] == status, frame.loc[check, "detail"]
    assert frame.loc[check, "advice"]


def test_a_schedule_cut_just_short_is_described_as_cut_not_as_steps_at_the_floor(run_dir, tmp_path):
    run = copy_run(run_dir, tmp_path / "run")
    _edit_json(run / "best" / "config.json", train__force_schedule=True, train__max_iters=100, train__lr_decay_iters=101)
    row = diagnose(run).set_index("check").loc["lr_decay_iters"]
    assert row["status"] == "warn"
    assert "cut 1 steps before its end" in row["advice"] and "floor" not in row["advice"]


def test_a_lr_schedule_that_never_finishes_reports_the_final_lr(run_dir, tmp_path):
    run = copy_run(run_dir, tmp_path / "run")
    _edit_json(run / "best" / "config.json", train__force_schedule=True, train__lr_decay_iters=60)
    row = diagnose(run).set_index("check").loc["lr_decay_iters"]
    assert row["value"] == pytest.approx(10.0)  # lr_decay_iters / max_iters
    final = float(re.search(r"lr at the last step ([0-9.e-]+)", row["detail"]).group(1))
    assert final > 0.9 * 3e-3  # still near the peak lr 3e-3 after 6 of 60 decay steps
    assert "never finished" in row["advice"]


def test_a_mistyped_config_key_fails_config_strict(run_dir, tmp_path):
    run = copy_run(run_dir, tmp_path / "run")
    _edit_json(run / "best" / "config.json", train__learning_rate=1e-3)
    row = diagnose(run).set_index("check").loc["config_strict"]
    assert row["status"] == "fail" and "learning_rate" in row["detail"]


def test_latest_worse_than_best_is_reported_in_nats_and_bits_per_char(run_dir, tmp_path):
    run = copy_run(run_dir, tmp_path / "run")
    state_path = run / "latest" / "trainer_state.json"
    state = json.loads(state_path.read_text())
    _edit_json(state_path, val_loss=state["best_val_loss"] + 0.5)
    row = diagnose(run).set_index("check").loc["best_vs_latest"]
    assert row["status"] == "warn"
    assert row["value"] == pytest.approx(0.5)
    factor = state["data"]["val_tokens"] / (state["data"]["val_chars"] * math.log(2))
    assert f"{0.5 * factor:.4f} bits/char" in row["detail"]


def test_a_corpus_made_by_another_tokenizer_fails_the_identity_check(run_dir, tmp_path):
    docs = stories(5)
    char_tok = train_char(docs)
    bin_path = tmp_path / "other.bin"
    write_tokenized(docs, char_tok, bin_path)
    row = diagnose(run_dir, corpus=bin_path).set_index("check").loc["tokenizer_identity"]
    assert row["status"] == "fail"
    assert char_tok.identity in row["detail"]


def test_a_tokenizer_larger_than_the_embedding_fails_vocab_size(run_dir, tmp_path):
    run = copy_run(run_dir, tmp_path / "run")
    import shutil

    from corpora.tokenizers import train_bpe

    shutil.rmtree(run / "best" / "tokenizer")
    bigger = train_bpe(stories(200, seed=3), vocab_size=600)
    bigger.save(run / "best" / "tokenizer")
    frame = diagnose(run).set_index("check")
    assert frame.loc["vocab_size", "status"] == "fail"
    assert frame.loc["tokenizer_identity", "status"] == "fail"


def test_a_changed_training_array_fails_dataset_identity(run_dir, tmp_path):
    run = copy_run(run_dir, tmp_path / "run")
    _edit_json(run / "best" / "trainer_state.json", data__train_tokens=123)
    row = diagnose(run).set_index("check").loc["dataset_identity"]
    assert row["status"] == "fail" and "recorded 123" in row["detail"]


def _samples(path, ckpt, completions):
    cid = checkpoint_id(ckpt)
    with open(path, "w", encoding="utf-8") as handle:
        for i, text in enumerate(completions):
            handle.write(json.dumps({"prompt_id": f"p{i}", "prompt": "Once", "completion": text,
                                     "checkpoint": str(ckpt), "checkpoint_id": cid}) + "\n")
    return path


def test_article_frequency_uses_the_tokenizers_article_ids(run_dir, tmp_path):
    ckpt = run_dir / "best"
    tok = load_tokenizer(ckpt / "tokenizer")
    groups = article_token_ids(tok)
    ids = {i for group in groups.values() for i in group}
    assert ids, "the trained BPE has article tokens"
    like_corpus = _samples(tmp_path / "good.jsonl", ckpt, stories(30, seed=7))
    frame = diagnose(run_dir, samples=like_corpus).set_index("check")
    row = frame.loc["article_frequency"]
    assert row["status"] == "pass", row["detail"]
    texts = stories(30, seed=7)
    n = k = 0
    for text in texts:  # independent count from character offsets: an article id that is a whole word
        enc, offsets = tok.encode_with_offsets(text)
        n += len(enc)
        for i, (start, end) in zip(enc, offsets, strict=True):
            before = text[start - 1] if start > 0 else " "
            after = text[end] if end < len(text) else " "
            glued = (text[start].isalpha() and before.isalpha()) or after.isalpha()
            k += i in ids and not glued
    assert row["n"] == n and row["value"] == pytest.approx(k / n)
    # with 320 tokens "The" is two pieces (" T", "he"): the token-level share is below the word-level one
    words = sum(len(re.findall(r"\b(?:the|a|an)\b", t, flags=re.IGNORECASE)) for t in texts)
    assert 0 < k < words
    assert row["ci_low"] < row["value"] < row["ci_high"]
    for article_ids in groups.values():  # the advice names the derived ids, decoded
        for i in article_ids:
            assert f"{i}={tok.decode([i])!r}" in row["advice"]
    assert "262, 264, 389" in row["advice"]
    assert {"article_frequency[the]", "article_frequency[a]"} <= set(frame.index)


def test_stories_without_articles_fail_the_article_check(run_dir, tmp_path):
    ckpt = run_dir / "best"
    stripped = [re.sub(r"\b([Tt]he|[Aa]n?) ", "", s) for s in stories(30, seed=7)]
    samples = _samples(tmp_path / "bad.jsonl", ckpt, stripped)
    row = diagnose(run_dir, samples=samples).set_index("check").loc["article_frequency"]
    assert row["status"] == "fail"
    assert row["value"] == 0.0 and row["p_value"] < 0.05
    assert "fewer articles" in row["advice"]


def test_samples_from_another_checkpoint_are_not_used(run_dir, tmp_path):
    path = tmp_path / "other.jsonl"
    path.write_text(json.dumps({"prompt": "x", "completion": "the cat", "checkpoint": "/elsewhere/run/best",
                                "checkpoint_id": "run/best-0123456789", "tokens_seen": -1}) + "\n")
    row = diagnose(run_dir, samples=path).set_index("check").loc["article_frequency"]
    assert row["status"] == "skip" and "no sample was generated by this checkpoint" in row["detail"]


def test_char_tokenizer_counts_articles_as_words(tmp_path):
    from corpora.tokenizers import CharTokenizer
    from evalsuite.diagnose import _word_article_counts

    assert article_token_ids(CharTokenizer("abc ")) == {"the": [], "a": [], "an": []}
    counts, total = _word_article_counts(["The cat saw a dog and an apple.", "Anna ate the cake"])
    assert counts == {"the": 2, "a": 1, "an": 1} and total == 12


def test_gpt2_advice_decodes_the_ids_a_hard_coded_list_would_watch(shared_data):
    from evalsuite.diagnose import _id_note

    tok = load_tokenizer("gpt2", shared_data)
    note = _id_note(tok, {a: ids for a, ids in article_token_ids(tok).items() if ids})
    assert "262=' the', 264=' s', 389=' are'" in note
    assert "257=' a'" in note and "281=' an'" in note


def test_cli_writes_csv_and_meta_and_strict_sets_the_exit_code(run_dir, tmp_path, capsys):
    out = tmp_path / "diag.csv"
    with pytest.raises(SystemExit) as done:
        main(["diagnose", str(run_dir), "-o", str(out)])
    assert done.value.code == 0  # warnings do not fail the command
    frame = pd.read_csv(out)
    assert "warn" in set(frame["status"])
    meta = json.loads(out.with_suffix(".meta.json").read_text())
    assert meta["status_counts"]["warn"] >= 1 and meta["thresholds"]["epochs_warn"] == 4.0
    text = capsys.readouterr().out
    assert "tokens_per_parameter" in text and "warn" in text
    with pytest.raises(SystemExit) as done:
        main(["diagnose", str(run_dir), "-o", str(out), "--strict"])
    assert done.value.code == 1
    with pytest.raises(SystemExit) as done:
        main(["diagnose", str(tmp_path / "missing")])
    assert done.value.code == 2


def test_bad_inputs_are_user_errors(run_dir, tmp_path):
    with pytest.raises(UserError, match="samples file not found"):
        diagnose(run_dir, samples=tmp_path / "none.jsonl")
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"prompt": "x"}\n')
    with pytest.raises(UserError, match="string 'completion'"):
        diagnose(run_dir, samples=bad)
