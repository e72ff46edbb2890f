"""benchmarks/train_throughput.py: every flag takes effect in its mode or is refused (CPU only)."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest

from corpora.errors import UserError
from trainers.model import build_model

pytestmark = pytest.mark.usefixtures("one_torch_thread")
REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def bench():
    spec = importlib.util.spec_from_file_location("train_throughput", REPO / "benchmarks" / "train_throughput.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_vocab_size_reaches_the_built_model_even_where_the_preset_sets_one(bench):
    args = bench.parse_args(["--vocab-size", "10000", "--batch-size", "2", "--block-size", "8"])
    cfg = bench.build_case("baseline-28m", 2, args)  # the preset says 50257
    assert cfg.model.vocab_size == 10000
    assert build_model(cfg.model).wte.weight.shape[0] == 10000
    assert (cfg.train.batch_size, cfg.train.block_size) == (2, 8)


def test_throughput_rows_report_what_was_built(bench, tmp_path):
    assert bench.main(["--presets", "baseline-tiny", "--device", "cpu", "--vocab-size", "48", "--batch-size", "1", "3",
                       "--block-size", "8", "--warmup", "1", "--steps", "2", "--set", "model.n_layer=1",
                       "--out", str(tmp_path)]) == 0
    meta = json.loads((tmp_path / "train_throughput.json").read_text())
    assert [(r["batch_size"], r["block_size"], r["vocab_size"]) for r in meta["rows"]] == [(1, 8, 48), (3, 8, 48)]
    assert all(r["variant"] == "eager" and r["compile"] is False for r in meta["rows"])
    assert meta["settings"]["vocab_size"] == 48 and "tokens" not in meta["settings"]  # only this mode's flags
    assert all(r["n_params"] == sum(p.numel() for p in build_model(
        bench.build_case("baseline-tiny", 1, bench.parse_args(["--vocab-size", "48", "--block-size", "8", "--set",
                                                               "model.n_layer=1"])).model).parameters())
               for r in meta["rows"])


@pytest.mark.parametrize("argv, message", [
    (["--train", "--warmup", "3"], "--warmup has no effect in train mode"),
    (["--train", "--variants", "compile"], "--variants has no effect in train mode"),
    (["--tokens", "5"], "--tokens has no effect in throughput mode"),
    (["--resume"], "--resume has no effect in throughput mode"),
    (["--prepare", "x.txt", "--batch-size", "4"], "--batch-size has no effect in prepare mode"),
    (["--chunk-tokens", "64"], "applies only to the compile-chunked-ce variant"),
])
def test_flags_outside_their_mode_are_refused(bench, argv, message, capsys):
    with pytest.raises(UserError, match=message):
        bench.parse_args(argv)
    assert bench.main(argv) == 2
    assert message in capsys.readouterr().err


def test_train_mode_applies_batch_block_and_vocab_overrides(bench):
    args = bench.parse_args(["--train", "--data", "d", "--batch-size", "6", "--block-size", "24", "--vocab-size", "99"])
    assert bench.train_overrides(args) == ["train.batch_size=6", "train.block_size=24", "model.vocab_size=99"]
    assert bench.train_overrides(bench.parse_args(["--train", "--data", "d"])) == []  # the preset's values
    assert bench.applied_settings(bench.parse_args(["--train", "--data", "d"]), "train")["batch_size"] == "preset's"
    with pytest.raises(UserError, match="one --batch-size"):
        bench.train_overrides(bench.parse_args(["--train", "--data", "d", "--batch-size", "2", "4"]))


def test_unknown_variant_and_cuda_only_variants_are_refused_on_cpu(bench, capsys):
    assert bench.main(["--presets", "baseline-tiny", "--device", "cpu", "--vocab-size", "32",
                       "--variants", "nope"]) == 2
    assert "unknown variant" in capsys.readouterr().err
    assert bench.main(["--presets", "baseline-tiny", "--device", "cpu", "--vocab-size", "32",
                       "--variants", "cudagraphs-loss"]) == 2
    assert "needs CUDA" in capsys.readouterr().err


def test_compile_mode_needs_compile_and_does_not_block_resume():
    from trainers.config import load_config
    from trainers.train import RESUMABLE_CHANGES

    with pytest.raises(UserError, match="has no effect without train.compile=true"):
        load_config("baseline-tiny", ["train.compile_mode=reduce-overhead"])
    cfg = load_config("baseline-tiny", ["train.compile=true", "train.compile_mode=max-autotune-no-cudagraphs"])
    assert cfg.train.compile_mode == "max-autotune-no-cudagraphs"
    with pytest.raises(UserError):
        load_config("baseline-tiny", ["train.compile=true", "train.compile_mode=fast"])
    assert "compile_mode" in RESUMABLE_CHANGES  # how it is compiled does not change what is computed


def test_repeats_interleave_rounds_and_report_each_rounds_ratio(bench, tmp_path):
    assert bench.main(["--presets", "baseline-tiny", "spinnet-tiny", "--device", "cpu", "--vocab-size", "48",
                       "--batch-size", "1", "--block-size", "8", "--warmup", "1", "--steps", "2", "--repeats", "3",
                       "--out", str(tmp_path)]) == 0
    meta = json.loads((tmp_path / "train_throughput.json").read_text())
    assert meta["settings"]["repeats"] == 3
    base, spin = meta["rows"]
    assert base["rounds"] == spin["rounds"] == 3 and base["timed_steps"] == 6 and len(spin["round_step_ms"]) == 3
    # the tiny presets share d_model x n_layer: spinnet-tiny's ratio to baseline-tiny within each round
    assert spin["round_ratios_vs_baseline"] == [a / b for a, b in zip(spin["round_step_ms"], base["round_step_ms"], strict=True)]
    assert base["round_ratios_vs_baseline"] == [1.0, 1.0, 1.0]
    assert "3 rounds x 2 event-timed steps" in (tmp_path / "train_throughput.md").read_text()
    assert bench.main(["--repeats", "0"]) == 2


def test_a_variants_own_setting_reaches_the_model_and_clashes_are_refused(bench):
    args = bench.parse_args(["--vocab-size", "48", "--block-size", "8"])
    cfg = bench.build_case("baseline-tiny", 1, args, bench.VARIANTS["compile-loss-cdt-bf16res"]["set"])
    assert cfg.model.residual_dtype == "autocast"
    clash = bench.parse_args(["--vocab-size", "48", "--set", "model.residual_dtype=float32"])
    with pytest.raises(UserError, match="clashes"):
        bench.build_case("baseline-tiny", 1, clash, ["model.residual_dtype=autocast"])
    assert bench.main(["--presets", "baseline-tiny", "--device", "cpu", "--vocab-size", "32",
                       "--variants", "compile-loss-cdt-bf16res"]) == 2  # no bf16 autocast on the CPU here


def test_a_spinnet_only_variant_skips_baselines_and_takes_its_ratio_against_the_named_baseline_variant(
        bench, tmp_path, monkeypatch):
    for name, batched in (("eager-batched", True), ("eager-perlayer", False)):
        monkeypatch.setitem(bench.VARIANTS, name, {"compile": None, "loss": "outside", "adam": "fused",
                                                   "batch_quantize": batched, "spinnet_only": True,
                                                   "baseline_variant": "eager"})
    assert bench.applicable(["baseline-tiny", "spinnet-tiny"], "eager-perlayer") == ["spinnet-tiny"]
    assert bench.main(["--presets", "baseline-tiny", "spinnet-tiny", "--device", "cpu", "--vocab-size", "48",
                       "--batch-size", "1", "--block-size", "8", "--warmup", "1", "--steps", "2",
                       "--variants", "eager", "eager-batched", "eager-perlayer", "--out", str(tmp_path)]) == 0
    rows = json.loads((tmp_path / "train_throughput.json").read_text())["rows"]
    assert [(r["preset"], r["variant"], r["quantisation"]) for r in rows] == [
        ("baseline-tiny", "eager", "n/a"), ("spinnet-tiny", "eager", "per layer"),  # the default batches on CUDA
        ("spinnet-tiny", "eager-batched", "batched"), ("spinnet-tiny", "eager-perlayer", "per layer")]
    assert rows[3]["step_time_ratio_vs_baseline"] == rows[3]["step_time_ms"] / rows[0]["step_time_ms"]


def test_variant_model_applies_the_variants_model_switches(bench):
    import torch

    args = bench.parse_args(["--vocab-size", "48", "--block-size", "8"])
    cfg = bench.build_case("spinnet-tiny", 1, args)
    model = bench.variant_model(cfg, bench.VARIANTS["compile-loss-einsum-mixer"], torch.device("cpu"))
    assert not model.blocks[0].attn.fold_mixer and model.batch_quantize is None
    model = bench.variant_model(cfg, bench.VARIANTS["compile-loss-perlayer-quant"], torch.device("cpu"))
    assert model.blocks[0].attn.fold_mixer and model.batch_quantize is False


def test_a_stack_variant_trains_n_models_and_reports_aggregate_tokens_against_one_model(bench, tmp_path):
    assert bench.main(["--presets", "spinnet-tiny", "--device", "cpu", "--vocab-size", "48", "--batch-size", "2",
                       "--block-size", "8", "--warmup", "1", "--steps", "2", "--repeats", "2",
                       "--variants", "eager", "eager-stack4", "--out", str(tmp_path)]) == 0
    one, stack = json.loads((tmp_path / "train_throughput.json").read_text())["rows"]
    assert (one["models_stacked"], stack["models_stacked"]) == (1, 4)
    # four models' tokens per step, against one model's row of the same preset and shape
    assert stack["tokens_per_s"] == pytest.approx(4 * 2 * 8 / (stack["step_time_ms"] / 1000))
    assert stack["tokens_per_s_vs_one_model"] == stack["tokens_per_s"] / one["tokens_per_s"]
    assert stack["round_ratios_vs_one_model"] == pytest.approx(
        [4 * b / a for a, b in zip(stack["round_step_ms"], one["round_step_ms"], strict=True)])
    assert one["tokens_per_s_vs_one_model"] is None
    assert "tokens/s vs one model" in (tmp_path / "train_throughput.md").read_text()
