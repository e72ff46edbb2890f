"""`.spinnet` packing: trit round-trips, bit-exact logits after reload, sizes measured on disk."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import save_file

from corpora.errors import UserError
from corpora.tokenizers import CharTokenizer
from trainers.compress import (
    compress,
    load_spinnet,
    pack_trits,
    read_header,
    round_floats_like_spinnet,
    unpack_trits,
)
from trainers.config import config_from_dict, load_config
from trainers.layers import HypercomplexLinear
from trainers.model import build_model

TEXT = "Once upon a time, a little dog named Max found a red ball. He was very happy!"


@pytest.mark.parametrize("packing", ["trits5", "trits2"])
def test_trit_round_trip_for_every_length(packing):
    rng = np.random.default_rng(0)
    per_byte = 5 if packing == "trits5" else 4
    for length in [0, 1, 2, 3, 4, 5, 6, 7, 9, 10, 11, 23, 1001]:
        trits = rng.integers(-1, 2, size=length).astype(np.int8)
        packed = pack_trits(trits, packing)
        assert len(packed) == math.ceil(length / per_byte)
        assert np.array_equal(unpack_trits(packed, length, packing), trits)
    every_pattern = np.array(np.meshgrid(*[[-1, 0, 1]] * 5)).reshape(5, -1).T.reshape(-1)  # all 243 bytes
    packed = np.frombuffer(pack_trits(every_pattern, "trits5"), dtype=np.uint8)
    assert len(set(packed.tolist())) == 243 and packed.max() == 242
    with pytest.raises(ValueError):
        pack_trits(np.array([0, 2]), packing)
    with pytest.raises(ValueError):
        unpack_trits(b"\x00\x00", 3, packing)  # wrong byte count for 3 trits


def make_checkpoint(root: Path, **model_overrides) -> tuple[Path, torch.nn.Module]:
    """A training-style checkpoint dir: safetensors weights, config.json, tokenizer/, state, optimizer."""
    tok = CharTokenizer.from_documents([TEXT])
    overrides = [f"model.vocab_size={tok.vocab_size}"] + [f"model.{k}={v}" for k, v in model_overrides.items()]
    cfg = load_config("spinnet-tiny", overrides)
    torch.manual_seed(0)
    model = build_model(cfg.model)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    idx = torch.tensor([tok.encode(TEXT)[:33]])
    for _ in range(2):  # a couple of real steps so the weights are not just their init
        model(idx[:, :-1], targets=idx[:, 1:]).loss.backward()
        optimizer.step()
        optimizer.zero_grad()
    ckpt = root / "best"
    ckpt.mkdir(parents=True)
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(ckpt / "model.safetensors"))
    (ckpt / "config.json").write_text(json.dumps(cfg.to_dict()))
    (ckpt / "trainer_state.json").write_text(json.dumps({"iter_num": 2, "val_loss": 3.5, "rng": {"x": [1]}}))
    torch.save(optimizer.state_dict(), ckpt / "optimizer.pt")
    tok.save(ckpt / "tokenizer")
    return ckpt, model.eval()


def test_reloaded_logits_are_bit_identical(tmp_path):
    ckpt, model = make_checkpoint(tmp_path, octonion_attention="true")
    idx = torch.randint(0, model.config.vocab_size, (2, 24), generator=torch.Generator().manual_seed(1))

    report = compress(tmp_path, tmp_path / "m.spinnet")  # a run dir: uses best/
    loaded = load_spinnet(tmp_path / "m.spinnet")
    assert all(m.weight is None and m.frozen_trits.dtype == torch.int8
               for m in loaded.model.modules() if isinstance(m, HypercomplexLinear))
    reference = round_floats_like_spinnet(model, "float16")  # embeddings/norms/mixer rounded to fp16
    with torch.no_grad():
        assert torch.equal(loaded.model(idx).logits, reference(idx).logits)
    assert report.max_abs_logit_diff_vs_rounded_reference == 0.0
    assert report.max_abs_logit_diff_vs_checkpoint > 0.0  # fp16 rounding does change logits, a little
    assert report.max_abs_logit_diff_vs_checkpoint < 1e-2

    compress(ckpt, tmp_path / "m32.spinnet", float_dtype="float32", packing="trits2")
    _, fresh = make_checkpoint(tmp_path / "again", octonion_attention="true")
    exact = load_spinnet(tmp_path / "m32.spinnet").model
    with torch.no_grad():
        assert torch.equal(exact(idx).logits, fresh(idx).logits)  # nothing rounded: the checkpoint itself


def test_header_tokenizer_and_state_travel_with_the_file(tmp_path):
    ckpt, _ = make_checkpoint(tmp_path)
    compress(ckpt, tmp_path / "m.spinnet")
    header, _ = read_header(tmp_path / "m.spinnet")
    assert header["version"] == 2 and header["config"]["model"]["family"] == "spinnet"
    assert header["state"] == {"iter_num": 2, "val_loss": 3.5}  # scalars only (no RNG blobs)
    loaded = load_spinnet(tmp_path / "m.spinnet")
    assert loaded.config == config_from_dict(json.loads((ckpt / "config.json").read_text()))
    assert loaded.tokenizer.encode(TEXT) == CharTokenizer.from_documents([TEXT]).encode(TEXT)
    assert loaded.tokenizer.decode(loaded.tokenizer.encode("a dog")) == "a dog"


def test_sizes_and_ratios_come_from_the_files_on_disk(tmp_path):
    ckpt, model = make_checkpoint(tmp_path)
    for packing, bits in (("trits5", 8 / 5), ("trits2", 2.0)):
        out = tmp_path / f"{packing}.spinnet"
        report = compress(ckpt, out, packing=packing)
        assert report.file_bytes == out.stat().st_size
        ckpt_bytes = sum(p.stat().st_size for p in ckpt.rglob("*") if p.is_file())
        assert report.checkpoint_dir_bytes == ckpt_bytes
        assert report.ratio_vs_checkpoint == pytest.approx(ckpt_bytes / out.stat().st_size)
        assert report.safetensors_bytes == (ckpt / "model.safetensors").stat().st_size
        assert report.ratio_vs_fp32_weights == pytest.approx(4 * model.num_parameters() / out.stat().st_size)
        layers = [m for m in model.modules() if isinstance(m, HypercomplexLinear)]
        n_weights = sum(m.weight.numel() for m in layers)
        per_byte = 5 if packing == "trits5" else 4
        assert report.n_ternary_weights == n_weights
        assert report.ternary_bytes == sum(math.ceil(m.weight.numel() / per_byte) for m in layers)
        assert report.bits_per_ternary_weight == pytest.approx(bits, abs=0.01)
        assert report.scale_bytes == 4 * len(layers)
        assert report.float_bytes == 2 * (model.num_parameters() - n_weights)
        parts = report.ternary_bytes + report.scale_bytes + report.float_bytes
        assert report.file_bytes == parts + report.file_payload_bytes + report.header_bytes
        assert report.ratio_vs_checkpoint > report.ratio_vs_fp32_weights > 1


def test_refuses_what_it_cannot_pack_and_detects_corruption(tmp_path):
    ckpt, _ = make_checkpoint(tmp_path / "spin")
    out = tmp_path / "m.spinnet"
    compress(ckpt, out)
    data = bytearray(out.read_bytes())
    data[-10] ^= 0xFF
    (tmp_path / "bad.spinnet").write_bytes(bytes(data))
    with pytest.raises(UserError, match="corrupt"):
        load_spinnet(tmp_path / "bad.spinnet")
    (tmp_path / "junk.spinnet").write_bytes(b"not a spinnet file at all")
    with pytest.raises(UserError, match="not a .spinnet file"):
        load_spinnet(tmp_path / "junk.spinnet")
    with pytest.raises(UserError, match="checkpoint directory"):
        compress(tmp_path / "spin" / "best" / "tokenizer", tmp_path / "x.spinnet")
    float_ckpt, _ = make_checkpoint(tmp_path / "float", ternary="false")
    with pytest.raises(UserError, match="only ternary SpinNet"):
        compress(float_ckpt, tmp_path / "y.spinnet")


def test_in_memory_model_is_packed_without_touching_it(tmp_path):
    torch.manual_seed(3)
    model = build_model(load_config("spinnet-tiny", ["model.vocab_size=40"]).model).train()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    report = compress(model, tmp_path / "m.spinnet", float_dtype="float32")
    assert model.training and all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    assert report.checkpoint_dir_bytes is None and report.max_abs_logit_diff_vs_checkpoint == 0.0
    loaded = load_spinnet(tmp_path / "m.spinnet")
    assert loaded.tokenizer is None
    idx = torch.randint(0, 40, (1, 16))
    with torch.no_grad():
        assert torch.equal(loaded.model(idx).logits, model.eval()(idx).logits)


# ---------------------------------------------------------------------------------------------
# issue 12: the whole file is checksummed, every corruption is one clear line, quantized embeddings


def _rewrite(src: Path, dst: Path, edit) -> None:
    """Write `src` to `dst` with its header JSON edited by `edit(dict)`, keeping the file otherwise valid
    EXCEPT for the whole-file checksum (which an editor would not know to update)."""
    import struct

    raw = src.read_bytes()
    magic, version, header_len = struct.unpack("<8sIQ", raw[:20])
    header = json.loads(raw[20:20 + header_len])
    edit(header)
    new = json.dumps(header, separators=(",", ":")).encode()
    dst.write_bytes(struct.pack("<8sIQ", magic, version, len(new)) + new + raw[20 + header_len:])


def _with_checksum(body: bytes) -> bytes:
    import hashlib

    return body + hashlib.sha256(body).digest()


def test_every_corruption_is_one_clear_error(tmp_path):
    import struct

    ckpt, _ = make_checkpoint(tmp_path / "spin", octonion_attention="true")
    good = tmp_path / "m.spinnet"
    compress(ckpt, good)
    raw = good.read_bytes()
    header_len = struct.unpack("<8sIQ", raw[:20])[2]
    cases = {}
    _rewrite(good, tmp_path / "nhead.spinnet", lambda h: h["config"]["model"].update(n_head=16))
    cases["nhead"] = (tmp_path / "nhead.spinnet", "corrupt")
    _rewrite(good, tmp_path / "val.spinnet", lambda h: h["state"].update(val_loss=0.1))
    cases["val"] = (tmp_path / "val.spinnet", "corrupt")
    (tmp_path / "trunc.spinnet").write_bytes(raw[: len(raw) // 2])
    cases["trunc"] = (tmp_path / "trunc.spinnet", "corrupt or truncated|truncated")
    (tmp_path / "short.spinnet").write_bytes(raw[:10])
    cases["short"] = (tmp_path / "short.spinnet", "too short")
    (tmp_path / "huge.spinnet").write_bytes(raw[:12] + struct.pack("<Q", 2**62) + raw[20:])
    cases["huge"] = (tmp_path / "huge.spinnet", "header length field")
    for name, version in (("v0", 0), ("v1", 1)):
        (tmp_path / f"{name}.spinnet").write_bytes(raw[:8] + struct.pack("<I", version) + raw[12:])
        cases[name] = (tmp_path / f"{name}.spinnet", f"version {version} is not supported")
    bad_json = b"{not json" + b" " * 10
    body = struct.pack("<8sIQ", b"SPINNET\x00", 2, len(bad_json)) + bad_json
    (tmp_path / "json.spinnet").write_bytes(_with_checksum(body))
    cases["json"] = (tmp_path / "json.spinnet", "not valid UTF-8 JSON")
    bad_utf8 = b'{"a": "\xff\xfe"}'
    body = struct.pack("<8sIQ", b"SPINNET\x00", 2, len(bad_utf8)) + bad_utf8
    (tmp_path / "utf8.spinnet").write_bytes(_with_checksum(body))
    cases["utf8"] = (tmp_path / "utf8.spinnet", "not valid UTF-8 JSON")
    flipped = bytearray(raw)
    flipped[20 + header_len // 2] ^= 0x01  # one bit inside the header
    (tmp_path / "flip.spinnet").write_bytes(bytes(flipped))
    cases["flip"] = (tmp_path / "flip.spinnet", "corrupt")
    for name, (path, message) in cases.items():
        with pytest.raises(UserError, match=message) as err:
            load_spinnet(path)
        assert "\n" not in str(err.value), name
    assert load_spinnet(good).model is not None  # the untouched file still loads


@pytest.mark.parametrize("quant", ["int8", "ternary"])
def test_quantized_embedding_logits_stay_bit_identical(tmp_path, quant):
    ckpt, model = make_checkpoint(tmp_path, embedding_quant=quant)
    report = compress(ckpt, tmp_path / "m.spinnet", float_dtype="float32")
    loaded = load_spinnet(tmp_path / "m.spinnet").model
    assert loaded.frozen_emb_codes is not None and loaded.frozen_emb_codes.dtype == torch.int8
    idx = torch.randint(0, model.config.vocab_size, (2, 24), generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        assert torch.equal(loaded(idx).logits, model(idx).logits)
    assert report.max_abs_logit_diff_vs_checkpoint == 0.0
    v, d = model.wte.weight.shape
    code_bytes = v * d if quant == "int8" else math.ceil(v * d / 5)  # int8, or 5 trits per byte
    assert report.embedding_bytes == code_bytes + 4 * v  # + one float32 scale per row
    f16 = compress(ckpt, tmp_path / "h.spinnet")  # norms in float16: equal to the rounded reference
    reference = round_floats_like_spinnet(model, "float16")
    with torch.no_grad():
        assert torch.equal(load_spinnet(tmp_path / "h.spinnet").model(idx).logits, reference(idx).logits)
    assert f16.max_abs_logit_diff_vs_rounded_reference == 0.0


@pytest.mark.slow
def test_ternary_embedding_brings_a_small_model_under_four_bits_per_parameter(tmp_path):
    cfg = load_config("spinnet-1m", ["model.vocab_size=10000", "model.embedding_quant=ternary"])
    torch.manual_seed(0)
    model = build_model(cfg.model)
    report = compress(model, tmp_path / "m.spinnet", run_config=cfg)
    assert report.bits_per_parameter == pytest.approx(8 * report.file_bytes / report.n_parameters)
    assert report.bits_per_parameter <= 4.0
    plain = compress(build_model(load_config("spinnet-1m", ["model.vocab_size=10000"]).model), tmp_path / "p.spinnet")
    assert plain.bits_per_parameter > 10  # float16 embeddings dominate otherwise


def test_subln_and_shuffled_table_models_pack_exactly(tmp_path):
    ckpt, model = make_checkpoint(tmp_path, subln="true", algebra_table="shuffled", ablations="[shuffled-table]")
    compress(ckpt, tmp_path / "m.spinnet", float_dtype="float32")
    loaded = load_spinnet(tmp_path / "m.spinnet")
    assert loaded.config.model.subln and loaded.config.model.table_seed == 0
    idx = torch.randint(0, model.config.vocab_size, (1, 20), generator=torch.Generator().manual_seed(4))
    with torch.no_grad():
        assert torch.equal(loaded.model(idx).logits, model(idx).logits)
