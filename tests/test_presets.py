"""Presets for the real data (issue 12): every preset builds; parameter-matched baselines match
SpinNet's non-embedding parameters; ablations differ from their parent in exactly what they name;
the shuffled-table control is a signed Latin square unlike Cayley-Dickson; --list-presets."""

from __future__ import annotations

import pytest
import torch
from conftest import run_cli

from trainers.algebra import cayley_dickson_table, product_table, shuffled_table
from trainers.config import list_presets, load_config
from trainers.model import build_model, preset_parameter_counts

SIZES = ("1m", "3m", "8m")


def counts(name: str) -> dict:
    return preset_parameter_counts(name)


def test_every_preset_loads_and_builds():
    names = list_presets()
    for size in SIZES:
        assert {f"spinnet-{size}", f"baseline-{size}-matched", f"baseline-{size}-shape"} <= set(names)
    for key in ("n1", "n2", "n4", "n16", "fp", "nomixer", "shuffled"):
        assert f"spinnet-3m-{key}" in names
    for name in names:
        row = counts(name)
        assert row["non_embedding"] > 0
        cfg = load_config(name)
        if cfg.model.family == "spinnet":
            assert cfg.model.unlabelled_ablations() == []  # every switched-off part is labelled


def test_family_spans_1m_to_8m_non_embedding_with_the_10k_vocabulary_and_regularisation():
    sizes = [counts(f"spinnet-{s}")["non_embedding"] for s in SIZES]
    assert 1.0e6 <= sizes[0] < sizes[1] < sizes[2] <= 8.5e6
    for s in SIZES:
        cfg = load_config(f"spinnet-{s}")
        assert cfg.train.tokenizer == "bpe:10000" and counts(f"spinnet-{s}")["vocab_size"] == 10000
        assert cfg.model.dropout == 0.2 and cfg.train.weight_decay == 0.1 and cfg.train.eval_tokens is None


@pytest.mark.parametrize("size", SIZES)
def test_matched_baseline_has_spinnet_non_embedding_parameters(size):
    spin = counts(f"spinnet-{size}")["non_embedding"]
    matched = counts(f"baseline-{size}-matched")["non_embedding"]
    shape = counts(f"baseline-{size}-shape")
    assert abs(matched / spin - 1) < 0.02
    spin_cfg, shape_cfg = load_config(f"spinnet-{size}").model, load_config(f"baseline-{size}-shape").model
    assert (shape_cfg.d_model, shape_cfg.n_layer) == (spin_cfg.d_model, spin_cfg.n_layer)
    assert shape["non_embedding"] > 7 * spin  # dense: about 8x the block weights
    assert f"{matched:,}" in (load_config.__globals__["PRESET_DIR"] / f"baseline-{size}-matched.yaml").read_text()


def test_ablations_differ_from_spinnet_3m_in_what_they_name():
    base = load_config("spinnet-3m").to_dict()["model"]
    expected = {
        "n1": {"algebra_n": 1}, "n2": {"algebra_n": 2}, "n4": {"algebra_n": 4}, "n16": {"algebra_n": 16},
        "fp": {"ternary": False, "ablations": ["ternary-off"]},
        "nomixer": {"octonion_attention": False, "ablations": ["mixer-off"]},
        "shuffled": {"algebra_table": "shuffled", "table_seed": 0, "ablations": ["shuffled-table"]},
    }
    for key, diff in expected.items():
        model = load_config(f"spinnet-3m-{key}").to_dict()["model"]
        assert {k: v for k, v in model.items() if base[k] != v} == diff, key
    shuffled = counts("spinnet-3m-shuffled")["non_embedding"]
    assert shuffled == counts("spinnet-3m")["non_embedding"]  # identical parameters


@pytest.mark.parametrize("n", [2, 4, 8, 16])
def test_shuffled_table_is_a_signed_latin_square_unlike_cayley_dickson(n):
    sign, index = shuffled_table(n, seed=0)
    rows = {tuple(sorted(r)) for r in index.tolist()}
    cols = {tuple(sorted(c)) for c in index.T.tolist()}
    assert rows == cols == {tuple(range(n))}  # every row and column a permutation
    assert set(sign.flatten().tolist()) <= {-1, 1}
    cd_sign, cd_index = cayley_dickson_table(n)
    assert not (torch.equal(sign, cd_sign) and torch.equal(index, cd_index))
    again = shuffled_table(n, seed=0)
    assert torch.equal(again[0], sign) and torch.equal(again[1], index)  # a seed names one table
    other = shuffled_table(n, seed=1)
    assert n <= 2 or not (torch.equal(other[0], sign) and torch.equal(other[1], index))
    assert torch.equal(product_table(n)[1], cd_index)


def test_shuffled_model_and_sedenion_model_run_with_the_same_parameter_count():
    base = load_config("spinnet-tiny", ["model.vocab_size=30"]).model
    shuffled = load_config("spinnet-tiny", ["model.vocab_size=30", "model.algebra_table=shuffled",
                                            "model.ablations=[shuffled-table]"]).model
    torch.manual_seed(0)
    a = build_model(base)
    torch.manual_seed(0)
    b = build_model(shuffled)
    assert a.num_parameters() == b.num_parameters() and a.estimate_flops_per_token() == b.estimate_flops_per_token()
    idx = torch.randint(0, 30, (2, 16))
    with torch.no_grad():
        assert not torch.equal(a(idx).logits, b(idx).logits)  # same weights, another table
    sed = build_model(load_config("spinnet-tiny", ["model.vocab_size=30", "model.algebra_n=16"]).model)
    out = sed(idx, targets=idx)
    out.loss.backward()
    assert torch.isfinite(out.loss) and sed.n_components == 16


def test_list_presets_prints_embedding_and_non_embedding_counts(capsys):
    assert run_cli(["train", "--list-presets"]) in (0, None)
    out = capsys.readouterr().out
    assert "non-embedding" in out and "spinnet-3m-shuffled" in out
    assert f"{counts('spinnet-3m')['non_embedding']:,}" in out and "5,120,000" in out
