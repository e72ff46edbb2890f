"""Strict config loading: presets, dotted overrides with type coercion, clear errors, validation."""

from __future__ import annotations

import pytest
import yaml
from conftest import run_cli

from corpora.errors import UserError
from trainers.config import RunConfig, config_from_dict, list_presets, load_config


def test_all_presets_load_and_resolve_schedule():
    assert {"spinnet-28m", "baseline-28m", "spinnet-tiny", "baseline-tiny"} <= set(list_presets())
    for name in ("spinnet-28m", "baseline-28m", "spinnet-tiny", "baseline-tiny"):
        cfg = load_config(name)
        assert cfg.train.lr_decay_iters == cfg.train.max_iters
        assert cfg.train.min_lr == pytest.approx(cfg.train.lr / 10)
    spin = load_config("spinnet-28m").model
    assert (spin.family, spin.n_layer, spin.n_head, spin.d_model, spin.vocab_size) == ("spinnet", 8, 8, 512, 50257)
    assert (spin.algebra_n, spin.ternary, spin.n_components) == (8, True, 8)
    base = load_config("baseline-28m").model
    assert (base.family, base.algebra_n, base.ternary, base.n_components) == ("baseline", None, None, 8)


def test_overrides_are_coerced_from_field_types():
    cfg = load_config(
        "spinnet-tiny",
        [
            "train.lr=3e-4",
            "model.octonion_attention=true",
            "train.snapshot_steps=[100, 200]",
            "train.snapshot_val_losses=4.0,3.5",
            "model.act_bits=8",
            "train.max_iters=1e3",
            "train.data=/tmp/x.bin",
            "train.compile=no",
        ],
    )
    assert cfg.train.lr == 3e-4 and isinstance(cfg.train.lr, float)
    assert cfg.train.min_lr == pytest.approx(3e-5)
    assert cfg.model.octonion_attention is True
    assert cfg.train.snapshot_steps == [100, 200]
    assert cfg.train.snapshot_val_losses == [4.0, 3.5]
    assert cfg.model.act_bits == 8
    assert cfg.train.max_iters == 1000 and cfg.train.lr_decay_iters == 1000
    assert cfg.train.data == "/tmp/x.bin"
    assert cfg.train.compile is False
    assert load_config("spinnet-tiny", ["model.act_bits=8", "model.act_bits=null"]).model.act_bits is None


@pytest.mark.parametrize(
    ("override", "fragment"),
    [
        ("model.octonion_atention=true", "did you mean 'octonion_attention'"),
        ("trian.lr=1", "did you mean 'train'"),
        ("train.learning_rate=1", "unknown config key 'train.learning_rate'"),
        ("train.max_iters=abc", "must be an integer"),
        ("train.max_iters=10.5", "must be an integer"),
        ("model.ternary=maybe", "must be true or false"),
        ("train.lr=fast", "must be a number"),
        ("model.family=spinet", "did you mean 'spinnet'"),
        ("model.n_layer=null", "must be an integer"),
        ("lr=3e-4", "section.key"),
        ("train.lr", "section.key=value"),
    ],
)
def test_bad_overrides_raise_user_error(override, fragment):
    with pytest.raises(UserError, match=None) as info:
        load_config("spinnet-tiny", [override])
    assert fragment in str(info.value)


def test_unknown_preset_suggests_a_name():
    with pytest.raises(UserError, match="did you mean 'spinnet-tiny'"):
        load_config("spinet-tiny")
    with pytest.raises(UserError, match="not found"):
        load_config("/nonexistent/run.yaml")


def test_yaml_file_with_unknown_nested_key(tmp_path):
    path = tmp_path / "run.yaml"
    path.write_text(yaml.safe_dump({"model": {"family": "spinnet", "n_layers": 2}, "train": {}}))
    with pytest.raises(UserError, match="did you mean 'n_layer'"):
        load_config(path)
    path.write_text(yaml.safe_dump({"model": {}, "training": {}}))
    with pytest.raises(UserError, match="unknown config section 'training'"):
        load_config(path)
    path.write_text("model:\n  d_model: [1, 2\n")
    with pytest.raises(UserError, match="not valid YAML"):
        load_config(path)


def test_yaml_exponent_floats_are_accepted(tmp_path):
    path = tmp_path / "run.yaml"
    path.write_text("model:\n  vocab_size: 100\ntrain:\n  lr: 3e-4\n")  # PyYAML reads 3e-4 as a string
    assert load_config(path).train.lr == 3e-4


@pytest.mark.parametrize(
    ("overrides", "fragment"),
    [
        (["model.d_model=36", "model.n_head=6"], "not divisible by the component count 8"),
        (["model.d_model=64", "model.n_head=5"], "not divisible by model.n_head"),
        (["model.algebra_n=3"], "must be one of"),
        (["model.n_head=4", "model.octonion_attention=true"], "n_head divisible by 8"),
        (["train.lr_decay_iters=100"], "force_schedule"),
        (["train.block_size=1000"], "exceeds model.max_seq_len"),
        (["train.min_lr=1"], "min_lr"),
    ],
)
def test_validation_errors(overrides, fragment):
    with pytest.raises(UserError) as info:
        load_config("spinnet-tiny", overrides)
    assert fragment in str(info.value)


def test_forced_schedule_and_explicit_min_lr_are_kept():
    cfg = load_config("spinnet-tiny", ["train.lr_decay_iters=100", "train.force_schedule=true", "train.min_lr=0"])
    assert cfg.train.lr_decay_iters == 100 and cfg.train.max_iters == 200 and cfg.train.min_lr == 0.0


def test_spinnet_only_fields_are_refused_for_the_baseline():
    for override in ("model.ternary=false", "model.algebra_n=4", "model.act_bits=8"):
        with pytest.raises(UserError, match="applies only to family spinnet"):
            load_config("baseline-tiny", [override])


def test_resolved_config_round_trips_through_yaml(tmp_path):
    cfg = load_config("spinnet-28m", ["model.octonion_attention=true", "train.snapshot_steps=[5]"])
    saved = cfg.save_yaml(tmp_path / "config.yaml")
    again = load_config(saved)
    assert again == cfg and isinstance(again, RunConfig)
    assert config_from_dict(cfg.to_dict()) == cfg
    assert yaml.safe_load(saved.read_text())["train"]["min_lr"] == pytest.approx(1.5e-4)


# ---------------------------------------------------------------------------------------------
# strict YAML and numbers (issue 12)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("model:\n  family: spinnet\nmodel:\n  n_layer: 2\n", "duplicate key 'model'"),
        ("model:\n  n_layer: 2\n  n_layer: 3\n", "duplicate key 'n_layer'"),
        ("train:\n  lr: .inf\n", "finite number"),
        ("train:\n  lr: .nan\n", "finite number"),
    ],
)
def test_duplicate_keys_and_non_finite_numbers_in_yaml_are_refused(tmp_path, text, message):
    path = tmp_path / "c.yaml"
    path.write_text(text, encoding="utf-8")
    with pytest.raises(UserError, match=message):
        load_config(path)


@pytest.mark.parametrize("override", ["train.lr=inf", "train.lr=nan", "train.weight_decay=-inf", "model.dropout=nan"])
def test_non_finite_overrides_are_refused(override):
    with pytest.raises(UserError, match="finite number"):
        load_config("spinnet-tiny", [override])


def test_non_utf8_config_is_one_error_line(tmp_path, capsys):
    path = tmp_path / "c.yaml"
    path.write_bytes(b"model:\n  family: spin\xffnet\n")
    with pytest.raises(UserError, match="not UTF-8"):
        load_config(path)
    dup = tmp_path / "d.yaml"
    dup.write_text("model:\n  octonion_attention: true\nmodel:\n  n_layer: 2\n", encoding="utf-8")
    for bad in (path, dup):
        assert run_cli(["train", "--config", str(bad)]) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and err[0].startswith("error: ") and "Traceback" not in err[0]


def test_spinnet_presets_have_the_mixer_on_and_record_it():
    for name in ("spinnet-tiny", "spinnet-28m", "spinnet-3m"):
        cfg = load_config(name)
        assert cfg.model.octonion_attention is True and cfg.to_dict()["model"]["octonion_attention"] is True
    assert load_config("spinnet-tiny", ["model.octonion_attention=null"]).model.octonion_attention is True
    assert load_config("baseline-tiny").model.octonion_attention is False


def test_legacy_eval_iters_becomes_a_token_count_and_must_agree_with_eval_tokens():
    cfg = load_config("spinnet-tiny", ["train.eval_iters=3", "train.batch_size=4", "train.block_size=32"])
    assert cfg.train.eval_tokens == 3 * 4 * 32
    assert config_from_dict(cfg.to_dict()).train.eval_tokens == 384  # the saved resolved config reloads
    with pytest.raises(UserError, match="set only train.eval_tokens"):
        load_config("spinnet-tiny", ["train.eval_iters=3", "train.eval_tokens=1000"])
    assert load_config("spinnet-tiny").train.eval_tokens is None  # the whole validation split
