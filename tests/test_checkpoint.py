"""Checkpoint directories: atomic replacement, crash recovery, RNG round trips, and load_checkpoint
from a checkpoint dir, a run dir (best/) and a .spinnet file."""

from __future__ import annotations

import json
import os
import random

import numpy as np
import pytest
import torch

from corpora.errors import UserError
from corpora.tokenizers import train_char
from trainers import checkpoint as ckpt
from trainers.compress import compress
from trainers.config import load_config
from trainers.model import build_model

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture()
def parts(shared_data):
    """A tiny SpinNet with the real sample's char vocabulary, its config and tokenizer."""
    docs = [d.strip() for d in (shared_data / "tinystories" / "tinystories_sample.txt").read_text().split(
        "<|endoftext|>") if d.strip()]
    tok = train_char(docs)
    config = load_config("spinnet-tiny", [f"model.vocab_size={tok.vocab_size}", "model.d_model=32",
                                          "model.n_layer=1", "model.octonion_attention=true"])
    torch.manual_seed(0)
    model = build_model(config.model)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    idx = torch.randint(0, tok.vocab_size, (2, 16))
    model(idx, targets=idx).loss.backward()
    optimizer.step()
    return model, optimizer, config, tok, idx


def write(run_dir, name, parts, **state):
    model, optimizer, config, tok, _ = parts
    return ckpt.write_checkpoint(run_dir, name, model=model, config=config, tokenizer=tok,
                                 state={"iter_num": 1, "val_loss": 3.0, **state}, optimizer=optimizer)


def test_checkpoint_holds_everything_and_loads_back(parts, tmp_path):
    model, optimizer, config, tok, idx = parts
    path = write(tmp_path, "latest", parts, iter_num=7)
    assert sorted(p.name for p in path.iterdir()) == [
        "config.json", "model.safetensors", "optimizer.pt", "tokenizer", "trainer_state.json"]
    saved = json.loads((path / "config.json").read_text())
    assert saved.pop("code_version")["package"] == "evalsuite"  # provenance beside the settings
    assert saved == config.to_dict()
    loaded = ckpt.load_checkpoint(path)
    assert loaded.state["iter_num"] == 7 and loaded.tokenizer.identity == tok.identity
    assert loaded.config.model.octonion_attention is True
    assert loaded.model.blocks[0].attn.mixer is not None and not loaded.model.training
    model.eval()
    with torch.no_grad():
        assert torch.equal(loaded.model(idx).logits, model(idx).logits)
    fresh = torch.optim.AdamW(build_model(config.model).parameters(), lr=1e-3)
    ckpt.load_optimizer_state(fresh, path)
    saved_avg = next(iter(optimizer.state.values()))["exp_avg"]
    assert torch.equal(next(iter(fresh.state.values()))["exp_avg"], saved_avg)
    # nothing but the finished directory is left behind
    assert [p.name for p in tmp_path.iterdir()] == ["latest"]


def test_run_dir_loads_best_and_errors_are_user_errors(parts, tmp_path):
    write(tmp_path, "latest", parts, iter_num=9)
    ckpt.copy_checkpoint(tmp_path / "latest", tmp_path, "best", state_update={"iter_num": 4})
    assert ckpt.load_checkpoint(tmp_path).state["iter_num"] == 4  # a run dir means best/
    with pytest.raises(UserError, match="not found"):
        ckpt.load_checkpoint(tmp_path / "nope")
    (tmp_path / "empty").mkdir()
    with pytest.raises(UserError, match="neither a checkpoint"):
        ckpt.load_checkpoint(tmp_path / "empty")
    # weights that do not fit the config are refused, not half-loaded
    cfg = json.loads((tmp_path / "best" / "config.json").read_text())
    cfg["model"]["d_model"] = 64
    (tmp_path / "best" / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(UserError, match="do not match"):
        ckpt.load_checkpoint(tmp_path / "best")


def test_a_crash_while_writing_keeps_the_old_checkpoint(parts, tmp_path, monkeypatch):
    write(tmp_path, "latest", parts, iter_num=1)

    def broken_save(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(torch, "save", broken_save)
    with pytest.raises(OSError, match="disk full"):
        write(tmp_path, "latest", parts, iter_num=2)
    monkeypatch.undo()
    assert ckpt.read_state(tmp_path / "latest")["iter_num"] == 1
    assert [p.name for p in tmp_path.iterdir()] == ["latest"]  # the temp dir was removed


def test_a_crash_between_the_renames_is_recovered(parts, tmp_path, monkeypatch):
    write(tmp_path, "latest", parts, iter_num=1)
    real_rename = os.rename
    calls = []

    def rename_then_die(src, dst):
        calls.append((src, dst))
        if len(calls) == 2:  # old latest moved aside, new one not yet in place
            raise KeyboardInterrupt
        real_rename(src, dst)

    monkeypatch.setattr(os, "rename", rename_then_die)
    with pytest.raises(KeyboardInterrupt):
        write(tmp_path, "latest", parts, iter_num=2)
    monkeypatch.undo()
    assert not (tmp_path / "latest").exists()
    # readers still find the last complete checkpoint, and recovery puts it back in place
    assert ckpt.read_state(ckpt.resolve_checkpoint(tmp_path, prefer="latest"))["iter_num"] == 1
    actions = ckpt.recover_run_dir(tmp_path)
    assert any("restored latest" in a for a in actions)
    assert [p.name for p in tmp_path.iterdir()] == ["latest"]
    assert ckpt.read_state(tmp_path / "latest")["iter_num"] == 1


def test_rng_state_round_trips_through_json():
    gen = torch.Generator().manual_seed(3)
    random.seed(1)
    np.random.seed(2)
    torch.manual_seed(4)
    state = json.loads(json.dumps(ckpt.capture_rng_state(gen)))
    first = (random.random(), np.random.rand(), torch.rand(3), torch.rand(2, generator=gen), np.random.randn())
    random.seed(99)
    np.random.seed(99)
    torch.manual_seed(99)
    gen.manual_seed(99)
    ckpt.restore_rng_state(state, gen)
    again = (random.random(), np.random.rand(), torch.rand(3), torch.rand(2, generator=gen), np.random.randn())
    assert first[0] == again[0] and first[1] == again[1] and first[4] == again[4]
    assert torch.equal(first[2], again[2]) and torch.equal(first[3], again[3])


def test_load_checkpoint_reads_a_spinnet_file(parts, tmp_path):
    model, _, _, tok, idx = parts
    write(tmp_path / "run", "latest", parts, iter_num=5)
    ckpt.copy_checkpoint(tmp_path / "run" / "latest", tmp_path / "run", "best")
    out = tmp_path / "model.spinnet"
    compress(tmp_path / "run", out, float_dtype="float32")
    loaded = ckpt.load_checkpoint(out)
    assert loaded.path == out and loaded.state["iter_num"] == 5
    assert loaded.tokenizer.identity == tok.identity
    assert loaded.config.model.octonion_attention is True
    model.eval()
    with torch.no_grad():  # float32 packing: bit-identical logits
        assert torch.equal(loaded.model(idx).logits, model(idx).logits)


# ---------------------------------------------------------------------------------------------
# model.safetensors integrity (issue 12)


@pytest.mark.parametrize("damage", ["truncate", "empty", "bitflip"])
def test_damaged_weights_are_one_clear_error_for_every_loader(parts, tmp_path, damage):
    from evalsuite.diagnose import diagnose
    from trainers.checkpoint import MODEL_FILE

    path = write(tmp_path, "best", parts, iter_num=3)
    state = ckpt.read_state(path)
    from corpora.provenance import file_sha256

    assert state["model_sha256"] == file_sha256(path / MODEL_FILE)
    weights = path / MODEL_FILE
    data = bytearray(weights.read_bytes())
    if damage == "truncate":
        weights.write_bytes(bytes(data[: len(data) // 2]))
    elif damage == "empty":
        weights.write_bytes(b"")
    else:
        data[len(data) - 7] ^= 0x10  # a weight, not the header: safetensors alone would not notice
        weights.write_bytes(bytes(data))
    loaders = [
        lambda: ckpt.load_checkpoint(path),
        lambda: ckpt.load_checkpoint(tmp_path),  # run dir -> best/
        lambda: compress(path, tmp_path / "x.spinnet"),
        lambda: diagnose(path),
    ]
    for load in loaders:
        with pytest.raises(UserError, match="model.safetensors") as err:
            load()
        assert "\n" not in str(err.value)


def test_one_reader_falls_back_to_latest_and_to_crash_leftovers(parts, tmp_path):
    write(tmp_path, "latest", parts, iter_num=4)
    assert ckpt.load_checkpoint(tmp_path).path == tmp_path / "latest"  # a run dir without best/
    os.rename(tmp_path / "latest", tmp_path / "latest.old-abcd1234")  # a crash between the two renames
    loaded = ckpt.load_checkpoint(tmp_path)
    assert loaded.path == tmp_path / "latest.old-abcd1234" and loaded.state["iter_num"] == 4
    compress(tmp_path, tmp_path / "m.spinnet")  # compress reads through the same reader
    assert ckpt.load_checkpoint(tmp_path / "m.spinnet").state["iter_num"] == 4
