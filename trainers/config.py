"""Run configuration: one strict dataclass for the model, one for training, and the YAML loader.

A run is described by `RunConfig(model=ModelConfig, train=TrainConfig)`. It comes from a preset
(`trainers/presets/<name>.yaml`) or a YAML file, plus dotted overrides such as `train.lr=3e-4`.

Strictness is the point of this module: a mistyped key (`model.octonion_atention=true`) or a value
of the wrong type is a `UserError` with a did-you-mean suggestion, never a silently ignored setting.
Values are coerced from the declared field types (YAML reads `3e-4` as a string, so floats written
in exponent form are accepted for float fields). The resolved config (`to_dict()` / `save_yaml()`)
has every field filled in (min_lr, lr_decay_iters) and is what gets written next to checkpoints.

Fields are added to `TrainConfig` by the training loop as it needs them; every field needs a
default and a type hint that `_coerce` understands (bool, int, float, str, None, list[...], Literal).
"""

from __future__ import annotations

import dataclasses
import difflib
import math
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import yaml

from corpora.errors import UserError

PRESET_DIR = Path(__file__).resolve().parent / "presets"
ALGEBRA_DIMS = (1, 2, 4, 8, 16)
# Default seed of the train/validation document split. It is NOT the training seed: runs that differ
# only in train.seed must be scored on the same validation documents.
DEFAULT_SPLIT_SEED = 20_231_001
# What `model.ablations` may name, and the setting each label must come with (so a label never
# describes a run that did not actually switch the thing off).
ABLATIONS = {
    "mixer-off": "model.octonion_attention=false",
    "ternary-off": "model.ternary=false",
    "shuffled-table": "model.algebra_table=shuffled",
}


@dataclass
class ModelConfig:
    """Architecture. `family` picks SpinNet (hypercomplex ternary linears) or the dense baseline."""

    family: Literal["spinnet", "baseline"] = "spinnet"
    # None means "take it from the tokenizer at train time"; build_model needs it set.
    vocab_size: int | None = None
    n_layer: int = 8
    n_head: int = 8
    d_model: int = 512
    max_seq_len: int = 512
    mlp: Literal["gelu", "swiglu"] = "gelu"
    mlp_ratio: float = 4.0
    dropout: float = 0.0
    # SpinNet-only fields: null resolves to the SpinNet default (8, true); a baseline must leave them
    # null, so that no setting is accepted and then silently ignored.
    # Dimension of the Cayley-Dickson algebra (8 = octonions).
    algebra_n: int | None = None
    # BitNet b1.58 ternary weights (false = full-precision hypercomplex ablation).
    ternary: bool | None = None
    # null = float activations, 8 = 8-bit absmax per-token activation quantization.
    act_bits: int | None = None
    # Octonion head mixer in attention (needs n_head % 8 == 0). null resolves to true for SpinNet (the
    # seeds' architecture) and false for the baseline. A SpinNet without it must say so in
    # `ablations` ("mixer-off"); `evalsuite diagnose` fails a SpinNet checkpoint whose mixer is off
    # without that label (the original study runs had it off by a config bug).
    octonion_attention: bool | None = None
    # Labels of what this run deliberately switches off, each checked against its setting:
    # "mixer-off" (octonion_attention=false), "ternary-off" (ternary=false), "shuffled-table"
    # (algebra_table=shuffled). SpinNet only.
    ablations: list[str] = field(default_factory=list)
    # The multiplication table of the n-component block layers (and of the head mixer):
    # "cayley-dickson" (the algebra), or "shuffled": a random signed Latin square of the same size drawn
    # from `table_seed` (trainers.algebra.shuffled_table), identical in parameters and FLOPs, so that a
    # comparison isolates the algebra itself (the control of the sedenion TinyStories study).
    algebra_table: Literal["cayley-dickson", "shuffled"] = "cayley-dickson"
    # Seed of the shuffled table (null resolves to 0 with algebra_table=shuffled; must stay null otherwise).
    table_seed: int | None = None
    # BitNet's SubLN: an RMSNorm (learnable gain) on the input of every quantized linear, as BitNet
    # b1.58's BitLinear does, so the absmax activation scale and the ternary weights always see
    # unit-RMS inputs. Default false: the checkpoints before this option have no such norms, and its
    # effect on this data has not been measured yet. SpinNet only.
    subln: bool = False
    # Quantization of the (tied) token embedding, used in the forward pass (straight-through
    # estimator while training) and stored as such in a .spinnet file, so logits stay identical:
    # "none" (float), "int8" (per-row absmax, 127 levels, one float32 scale per row) or
    # "ternary" (per-row absmean trits, one float32 scale per row).
    embedding_quant: Literal["none", "int8", "ternary"] = "none"
    # Baseline only: how many contiguous components dim-probe splits the hidden state into (control).
    component_split: int = 8
    # dtype of the residual stream (the embedding output and every block's sum) under mixed precision:
    # "float32" keeps it float32 while the GEMMs run in bf16 (autocast's default); "autocast" keeps it
    # in the autocast dtype, as Megatron-LM does by default (fp32_residual_connection=False): half the
    # memory traffic of the norms and residual adds (a quarter of a 28M step on an H100), at the cost of
    # a bf16 sum. Only under autocast (training on CUDA); without it the stream is float32 either way.
    residual_dtype: Literal["float32", "autocast"] = "float32"
    init_std: float = 0.02
    rope_base: float = 10000.0
    norm_eps: float = 1e-5

    def __post_init__(self) -> None:
        if self.family == "spinnet":
            self.algebra_n = 8 if self.algebra_n is None else self.algebra_n
            self.ternary = True if self.ternary is None else self.ternary
            if self.octonion_attention is None:
                _check(
                    self.n_head % 8 == 0,
                    f"SpinNet's octonion head mixer needs model.n_head divisible by 8 (got {self.n_head}); "
                    "to train without it set model.octonion_attention=false and model.ablations=[mixer-off]",
                )
                self.octonion_attention = True
        else:
            for name in ("algebra_n", "ternary", "act_bits"):
                _check(
                    getattr(self, name) is None,
                    f"model.{name} applies only to family spinnet; leave it null for a baseline",
                )
            _check(not self.ablations, "model.ablations applies only to family spinnet")
            _check(self.algebra_table == "cayley-dickson", "model.algebra_table applies only to family spinnet")
            _check(not self.subln, "model.subln applies only to family spinnet (the quantized linears)")
            self.octonion_attention = bool(self.octonion_attention)
        if self.algebra_table == "shuffled":
            self.table_seed = 0 if self.table_seed is None else self.table_seed
        else:
            _check(self.table_seed is None, "model.table_seed applies only with model.algebra_table=shuffled")
        for label in self.ablations:
            _check(label in ABLATIONS, f"unknown ablation '{label}'{_suggest(label, ABLATIONS)}; known: {', '.join(ABLATIONS)}")
        _check(len(set(self.ablations)) == len(self.ablations), "model.ablations lists a label twice")
        # A label must describe what the run does. The converse (every switched-off part labelled)
        # is enforced when training starts (`unlabelled_ablations`), not here: checkpoints written
        # before the labels existed must still load (and `diagnose` then reports them).
        for label, on in self.ablation_settings().items():
            _check(
                on or label not in self.ablations,
                f"model.ablations lists '{label}' but the run does not have {ABLATIONS[label]}",
            )
        _check(self.vocab_size is None or self.vocab_size > 0, "model.vocab_size must be positive")
        _check(self.n_layer >= 1, "model.n_layer must be >= 1")
        _check(self.n_head >= 1 and self.d_model >= 1, "model.n_head and model.d_model must be >= 1")
        _check(
            self.d_model % self.n_head == 0,
            f"model.d_model={self.d_model} is not divisible by model.n_head={self.n_head}",
        )
        _check(self.head_dim % 2 == 0, f"head dim d_model/n_head={self.head_dim} must be even (rotary)")
        _check(
            self.family != "spinnet" or self.algebra_n in ALGEBRA_DIMS,
            f"model.algebra_n={self.algebra_n} must be one of {ALGEBRA_DIMS}",
        )
        _check(self.component_split >= 1, "model.component_split must be >= 1")
        n = self.n_components
        _check(
            self.d_model % n == 0,
            f"model.d_model={self.d_model} is not divisible by the component count {n} "
            f"({'algebra_n' if self.family == 'spinnet' else 'component_split'})",
        )
        _check(self.mlp_ratio > 0, "model.mlp_ratio must be positive")
        if self.family == "spinnet":
            _check(
                self.mlp_hidden % self.n_components == 0,
                f"MLP hidden size {self.mlp_hidden} is not divisible by model.algebra_n={self.algebra_n}",
            )
        _check(0.0 <= self.dropout < 1.0, "model.dropout must be in [0, 1)")
        _check(self.act_bits in (None, 8), f"model.act_bits must be null or 8, got {self.act_bits}")
        _check(
            not self.octonion_attention or self.n_head % 8 == 0,
            f"model.octonion_attention needs model.n_head divisible by 8, got n_head={self.n_head}",
        )
        _check(self.max_seq_len >= 1, "model.max_seq_len must be >= 1")

    def ablation_settings(self) -> dict[str, bool]:
        """For each known ablation label, whether this config switches that part off (SpinNet)."""
        if self.family != "spinnet":
            return {label: False for label in ABLATIONS}
        return {
            "mixer-off": self.octonion_attention is False,
            "ternary-off": self.ternary is False,
            "shuffled-table": self.algebra_table == "shuffled",
        }

    def unlabelled_ablations(self) -> list[str]:
        """Labels of parts this SpinNet config switches off without naming them in `ablations`."""
        return [label for label, on in self.ablation_settings().items() if on and label not in self.ablations]

    @property
    def head_dim(self) -> int:
        return self.d_model // self.n_head

    @property
    def n_components(self) -> int:
        """n of the algebra for SpinNet; the control split for the baseline."""
        if self.family == "spinnet":
            assert self.algebra_n is not None  # resolved in __post_init__
            return self.algebra_n
        return self.component_split

    @property
    def mlp_hidden(self) -> int:
        """GELU: ratio*d. SwiGLU: 2/3 of that (three matrices instead of two), rounded up to 64."""
        if self.mlp == "gelu":
            return int(round(self.mlp_ratio * self.d_model))
        hidden = int(round(2 * self.mlp_ratio * self.d_model / 3))
        return 64 * math.ceil(hidden / 64)


@dataclass
class TrainConfig:
    """Optimisation, data and bookkeeping. The training loop adds the fields it needs here."""

    lr: float = 6e-4
    # None -> lr / 10 (resolved at load time and written to the saved config).
    min_lr: float | None = None
    warmup_iters: int = 100
    # None -> max_iters. Any other value is refused unless force_schedule=true.
    lr_decay_iters: int | None = None
    max_iters: int = 5000
    batch_size: int = 32
    grad_accum: int = 1
    block_size: int = 256
    weight_decay: float = 0.1
    beta1: float = 0.9
    beta2: float = 0.95
    grad_clip: float = 1.0
    eval_interval: int = 250
    # Validation tokens scored at every evaluation: null = the whole validation split; otherwise the
    # first eval_tokens // block_size blocks of a fixed, evenly spaced set of non-overlapping blocks
    # (trainers.data.fixed_eval_blocks). Independent of batch_size and of the training seed.
    eval_tokens: int | None = None
    # Legacy (configs before eval_tokens): eval_tokens = eval_iters x batch_size x block_size, the
    # number of tokens the old loop scored; the blocks are then chosen as eval_tokens says.
    eval_iters: int | None = None
    log_interval: int = 10
    seed: int = 1337
    # Seed of the train/validation document split (raw-text data), separate from `seed`.
    split_seed: int = DEFAULT_SPLIT_SEED
    # "cosine": linear warmup, cosine decay to min_lr, constant weight decay.
    # "bitnet-two-stage": BitNet b1.58's schedule (trainers.train.schedule_at): stage 1 (first half)
    # warmup + cosine from lr to 8/15 lr with weight decay cosine-decayed from weight_decay to 0;
    # stage 2 restarts at lr/3, cosine to min_lr, weight decay 0 (the 2B4T report: 1.5e-3 -> 8e-4,
    # then 5e-4 -> 0; weight decay 0.1, then 0).
    schedule: Literal["cosine", "bitnet-two-stage"] = "cosine"
    device: str = "auto"
    dtype: Literal["auto", "float32", "bfloat16", "float16"] = "auto"
    compile: bool = False
    # torch.compile mode when compile is true ("default", or "reduce-overhead" / "max-autotune" with
    # CUDA graphs, "max-autotune-no-cudagraphs"); any other mode than "default" needs compile=true.
    compile_mode: Literal["default", "reduce-overhead", "max-autotune", "max-autotune-no-cudagraphs"] = "default"
    article_loss_weight: float = 1.0
    snapshot_steps: list[int] = field(default_factory=list)
    snapshot_val_losses: list[float] = field(default_factory=list)
    # Tokenized .bin (with its .json sidecar) or raw text (.txt/.jsonl/directory) to tokenize.
    data: str | None = None
    # Validation .bin when `data` is a .bin (default: val.bin beside it); raw text is split instead:
    # by document, val_fraction of the distinct documents, seeded by `seed`.
    val_data: str | None = None
    val_fraction: float = 0.1
    # corpora.tokenizers.load_tokenizer spec: "char", "gpt2", or a saved tokenizer directory.
    tokenizer: str = "gpt2"
    out_dir: str = "runs/default"
    force_schedule: bool = False

    def __post_init__(self) -> None:
        _check(self.lr > 0, "train.lr must be positive")
        if self.min_lr is None:
            self.min_lr = self.lr / 10
        if self.lr_decay_iters is None:
            self.lr_decay_iters = self.max_iters
        _check(self.max_iters >= 1, "train.max_iters must be >= 1")
        _check(
            self.force_schedule or self.lr_decay_iters == self.max_iters,
            f"train.lr_decay_iters={self.lr_decay_iters} differs from train.max_iters={self.max_iters}; "
            "the cosine schedule must end at the last step (set train.force_schedule=true to allow it)",
        )
        _check(0 <= self.min_lr <= self.lr, "train.min_lr must be in [0, train.lr]")
        _check(self.warmup_iters >= 0, "train.warmup_iters must be >= 0")
        for name in ("batch_size", "grad_accum", "block_size", "eval_interval", "log_interval"):
            _check(getattr(self, name) >= 1, f"train.{name} must be >= 1")
        _check(self.eval_iters is None or self.eval_iters >= 1, "train.eval_iters must be >= 1 (or null)")
        if self.eval_iters is not None:
            legacy = self.eval_iters * self.batch_size * self.block_size
            # both given (a saved resolved config has both) must agree, or one of them did not take effect
            _check(
                self.eval_tokens in (None, legacy),
                f"train.eval_iters={self.eval_iters} means {legacy} tokens, but train.eval_tokens={self.eval_tokens}; "
                "set only train.eval_tokens",
            )
            self.eval_tokens = legacy
        _check(
            self.eval_tokens is None or self.eval_tokens >= self.block_size,
            f"train.eval_tokens must be at least train.block_size={self.block_size} (or null = whole split)",
        )
        _check(self.grad_clip >= 0, "train.grad_clip must be >= 0 (0 disables clipping)")
        _check(self.article_loss_weight >= 0, "train.article_loss_weight must be >= 0")
        _check(0.0 < self.val_fraction < 1.0, "train.val_fraction must be strictly between 0 and 1")
        _check(self.compile or self.compile_mode == "default",
               f"train.compile_mode={self.compile_mode} has no effect without train.compile=true")


@dataclass
class RunConfig:
    model: ModelConfig = field(default_factory=ModelConfig)
    train: TrainConfig = field(default_factory=TrainConfig)

    def __post_init__(self) -> None:
        _check(
            self.train.block_size <= self.model.max_seq_len,
            f"train.block_size={self.train.block_size} exceeds model.max_seq_len={self.model.max_seq_len}",
        )

    def to_dict(self) -> dict[str, Any]:
        return {"model": dataclasses.asdict(self.model), "train": dataclasses.asdict(self.train)}

    def save_yaml(self, path: str | Path) -> Path:
        path = Path(path)
        path.write_text(yaml.safe_dump(self.to_dict(), sort_keys=False))
        return path


SECTIONS: dict[str, type] = {"model": ModelConfig, "train": TrainConfig}
# Top-level keys a saved config.json may carry beside the sections: provenance, not settings
# (checkpoints record corpora.provenance.code_version() there).
METADATA_KEYS = ("code_version",)


def _check(ok: bool, message: str) -> None:
    if not ok:
        raise UserError(message)


def _suggest(name: str, choices: typing.Iterable[str]) -> str:
    match = difflib.get_close_matches(name, list(choices), n=1, cutoff=0.6)
    return f" (did you mean '{match[0]}'?)" if match else ""


def list_presets() -> list[str]:
    return sorted(p.stem for p in PRESET_DIR.glob("*.yaml"))


def _field_types(cls: type) -> dict[str, Any]:
    return typing.get_type_hints(cls)


def _coerce(value: Any, tp: Any, key: str) -> Any:
    """Return `value` as type `tp`, converting strings (from --set or YAML) where that is unambiguous."""
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if origin in (typing.Union, types.UnionType):
        is_null = value is None or (isinstance(value, str) and value.strip().lower() in ("null", "none", "~"))
        if is_null and type(None) in args:
            return None
        errors = []
        for arg in args:
            if arg is type(None):
                continue
            try:
                return _coerce(value, arg, key)
            except UserError as err:
                errors.append(str(err))
        raise UserError(errors[0] if errors else f"{key}: bad value {value!r}")
    if origin is Literal:
        if value not in args:
            raise UserError(f"{key} must be one of {list(args)}, got {value!r}{_suggest(str(value), map(str, args))}")
        return value
    if origin is list:
        (item_tp,) = args
        if isinstance(value, str):
            text = value.strip()
            if text.startswith("["):
                value = yaml.safe_load(text)
            else:
                value = [v for v in (s.strip() for s in text.split(",")) if v]
        if not isinstance(value, (list, tuple)):
            raise UserError(f"{key} must be a list, got {value!r}")
        return [_coerce(v, item_tp, f"{key}[{i}]") for i, v in enumerate(value)]
    if tp is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.strip().lower() in ("true", "yes", "on", "1"):
            return True
        if isinstance(value, str) and value.strip().lower() in ("false", "no", "off", "0"):
            return False
        raise UserError(f"{key} must be true or false, got {value!r}")
    if tp is int:
        if isinstance(value, bool):
            raise UserError(f"{key} must be an integer, got {value!r}")
        if isinstance(value, int):
            return value
        try:
            number = float(value) if isinstance(value, (str, float)) else None
        except ValueError:
            number = None
        if number is not None and math.isfinite(number) and number.is_integer():
            return int(number)
        raise UserError(f"{key} must be an integer, got {value!r}")
    if tp is float:
        if isinstance(value, bool):
            raise UserError(f"{key} must be a number, got {value!r}")
        try:
            number = float(value)
        except (TypeError, ValueError):
            raise UserError(f"{key} must be a number, got {value!r}") from None
        if not math.isfinite(number):
            raise UserError(f"{key} must be a finite number, got {value!r}")
        return number
    if tp is str:
        if isinstance(value, (str, int, float)) and not isinstance(value, bool):
            return str(value)
        raise UserError(f"{key} must be a string, got {value!r}")
    raise TypeError(f"config field {key} has a type the loader does not handle: {tp}")


def _build_section(cls: type, raw: dict[str, Any], section: str) -> Any:
    if not isinstance(raw, dict):
        raise UserError(f"config section '{section}' must be a mapping, got {type(raw).__name__}")
    hints = _field_types(cls)
    names = [f.name for f in dataclasses.fields(cls)]
    kwargs = {}
    for key, value in raw.items():
        if key not in names:
            raise UserError(f"unknown config key '{section}.{key}'{_suggest(str(key), names)}")
        kwargs[key] = _coerce(value, hints[key], f"{section}.{key}")
    return cls(**kwargs)


def config_from_dict(raw: dict[str, Any]) -> RunConfig:
    """Strictly build a RunConfig from {'model': {...}, 'train': {...}} (missing keys take defaults)."""
    if not isinstance(raw, dict):
        raise UserError("a config must be a mapping with 'model' and 'train' sections")
    for key in raw:
        if key not in SECTIONS and key not in METADATA_KEYS:
            raise UserError(f"unknown config section '{key}'{_suggest(str(key), SECTIONS)}; use 'model' or 'train'")
    model = _build_section(ModelConfig, raw.get("model") or {}, "model")
    train = _build_section(TrainConfig, raw.get("train") or {}, "train")
    return RunConfig(model=model, train=train)


class StrictLoader(yaml.SafeLoader):
    """yaml.SafeLoader that refuses a key given twice in one mapping (plain PyYAML keeps the last
    one silently, so a second `model:` section would drop the first)."""


def _construct_mapping(loader: StrictLoader, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
    seen: dict[Any, Any] = {}
    for key_node, _ in node.value:
        key = loader.construct_object(key_node, deep=deep)
        if key in seen:
            line = key_node.start_mark.line + 1
            raise UserError(
                f"line {line}: duplicate key '{key}' (first at line {seen[key]}); each key and section may appear once"
            )
        seen[key] = key_node.start_mark.line + 1
    return loader.construct_mapping(node, deep=deep)


StrictLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _construct_mapping)


def _read_source(preset_or_yaml: str | Path) -> dict[str, Any]:
    text = str(preset_or_yaml)
    path = Path(text).expanduser()
    looks_like_path = path.suffix in (".yaml", ".yml") or "/" in text or path.exists()
    if not looks_like_path:
        path = PRESET_DIR / f"{text}.yaml"
        if not path.is_file():
            presets = list_presets()
            raise UserError(f"unknown preset '{text}'{_suggest(text, presets)}; presets: {', '.join(presets)}")
    elif not path.is_file():
        raise UserError(f"config file not found: {path}")
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as err:
        raise UserError(f"{path}: not UTF-8 text (byte {err.start})") from None
    try:
        raw = yaml.load(text, Loader=StrictLoader)  # noqa: S506 (StrictLoader is a SafeLoader)
    except UserError as err:
        raise UserError(f"{path}: {err}") from None
    except yaml.YAMLError as err:
        raise UserError(f"{path}: not valid YAML ({' '.join(str(err).split())})") from None
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise UserError(f"{path}: expected a mapping with 'model' and 'train' sections")
    return raw


def _apply_override(raw: dict[str, Any], override: str) -> None:
    if "=" not in override:
        raise UserError(f"override '{override}' must look like section.key=value (e.g. train.lr=3e-4)")
    dotted, value = override.split("=", 1)
    parts = dotted.strip().split(".")
    if len(parts) != 2 or not all(parts):
        raise UserError(f"override key '{dotted}' must be section.key, e.g. model.n_layer or train.lr")
    section, key = parts
    if section not in SECTIONS:
        raise UserError(f"unknown config section '{section}'{_suggest(section, SECTIONS)}; use 'model' or 'train'")
    names = [f.name for f in dataclasses.fields(SECTIONS[section])]
    if key not in names:
        raise UserError(f"unknown config key '{section}.{key}'{_suggest(key, names)}")
    # Coerce now so a bad value names the override, not the YAML file.
    hints = _field_types(SECTIONS[section])
    section_raw = raw.setdefault(section, {}) or {}
    raw[section] = section_raw
    section_raw[key] = _coerce(value.strip(), hints[key], f"{section}.{key}")


def load_config(preset_or_yaml: str | Path, overrides: list[str] | None = None) -> RunConfig:
    """Load a preset name or YAML path, apply `section.key=value` overrides, validate, resolve defaults."""
    raw = _read_source(preset_or_yaml)
    for override in overrides or []:
        _apply_override(raw, override)
    return config_from_dict(raw)


def preset_vocab_size(config: RunConfig) -> int | None:
    """The vocabulary a preset's model will have: model.vocab_size, else what its tokenizer spec
    implies (bpe:N -> N, gpt2 -> 50257); None for a char vocabulary (it comes from the corpus)."""
    if config.model.vocab_size is not None:
        return config.model.vocab_size
    spec = config.train.tokenizer
    if spec.startswith("bpe:") and spec[4:].isdigit():
        return int(spec[4:])
    return 50257 if spec == "gpt2" else None
