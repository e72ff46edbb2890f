"""`evalsuite report RESULTS_DIR`: one static HTML page with every figure, table and the run metadata.

The page is built from saved results only: the figures are (re)drawn from the tidy tables by
`evalsuite.figures.make_figures` (or taken as they are with `make_figures=False`), every CSV below
the results directory appears with its first rows and a link to the whole file, and every
`meta.json` / `*.meta.json` is collected into a metadata table (command, seeds, judge model,
versions) with the full JSON (configs included) in a collapsible block.

Images are linked by paths relative to the page, so the page and the results directory travel
together; `embed=True` inlines the PNGs as base64 data URIs for a single self-contained file. The
page has no scripts and loads nothing from the network.
"""

from __future__ import annotations

import base64
import json
import math
import os
import platform
import re
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import pandas as pd

from corpora.errors import UserError
from evalsuite.figures import FIG_DPI, FigureResult
from evalsuite.results import read_table, results_dir_for

TEMPLATE_DIR = Path(__file__).resolve().parent / "templates"
TEMPLATE = "report.html.j2"
REPORT_FILE = "report.html"
TOP_ROWS = 10
MAX_META_CHARS = 60_000
MAX_FULL_READ_BYTES = 50_000_000
_SEED_KEY = re.compile(r"(^|_)seeds?$")


@dataclass
class ReportResult:
    path: Path
    figures: list[Any]  # evalsuite.figures.FigureResult
    tables: list[Path]
    metas: list[Path]


def _rel(path: Path, base: Path) -> str:
    return Path(os.path.relpath(path.resolve(), base.resolve())).as_posix()


def _png_size(path: Path) -> tuple[int, int]:
    """(width, height) from the PNG header (IHDR), without an image library."""
    with open(path, "rb") as handle:
        head = handle.read(24)
    if head[:8] != b"\x89PNG\r\n\x1a\n":
        raise UserError(f"{path} is not a PNG file")
    return int.from_bytes(head[16:20], "big"), int.from_bytes(head[20:24], "big")


# ----------------------------------------------------------------------------------------------
# metadata


def _walk(obj: Any, prefix: str = "") -> list[tuple[str, Any]]:
    """(dotted key, value) for every entry of nested dicts/lists."""
    out: list[tuple[str, Any]] = []
    if isinstance(obj, dict):
        for key, value in obj.items():
            dotted = f"{prefix}.{key}" if prefix else str(key)
            out.append((dotted, value))
            out += _walk(value, dotted)
    elif isinstance(obj, list):
        for i, value in enumerate(obj):
            out += _walk(value, f"{prefix}[{i}]")
    return out


def _short(value: Any) -> str:
    text = json.dumps(value, default=str) if not isinstance(value, str) else value
    return text if len(text) <= 80 else text[:77] + "..."


def meta_summary(meta: Any) -> dict[str, str]:
    """Command, seeds, judge model, versions and config keys found anywhere in a meta.json."""
    entries = _walk(meta)
    seeds = [f"{k}={_short(v)}" for k, v in entries
             if _SEED_KEY.search(k.rsplit(".", 1)[-1].lower()) and not isinstance(v, (dict, list)) and v is not None]
    judge = [f"{_short(v)}" for k, v in entries if re.search(r"(^|\.)judge\.model$", k) and v]
    judge += [f"at {_short(v)}" for k, v in entries if re.search(r"(^|\.)judge\.base_url$", k) and v]
    versions: dict[str, str] = {}
    for key, value in entries:
        if key.rsplit(".", 1)[-1] == "versions" and isinstance(value, dict):
            versions.update({str(k): str(v) for k, v in value.items() if not isinstance(v, (dict, list))})
    configs = sorted({k for k, v in entries if k.rsplit(".", 1)[-1].endswith("config") and isinstance(v, dict)})
    command = meta.get("command", "") if isinstance(meta, dict) else ""
    return {
        "command": str(command),
        "seeds": ", ".join(dict.fromkeys(seeds)) or "none recorded",
        "judge": " ".join(judge),
        "versions": ", ".join(f"{k} {v}" for k, v in versions.items()) or "none recorded",
        "configs": ", ".join(configs),
    }


def _meta_files(results_dir: Path, exclude: Path) -> list[Path]:
    files = [p for p in results_dir.rglob("*meta.json") if p.is_file() and exclude not in p.parents]
    return sorted(files)


def _meta_entries(files: list[Path], base: Path, results_dir: Path) -> list[dict[str, Any]]:
    entries = []
    for path in files:
        try:
            meta = json.loads(path.read_text(encoding="utf-8"))
        except UnicodeDecodeError as err:
            raise UserError(f"{path}: not UTF-8 text (byte {err.start}); fix or remove the file") from None
        except json.JSONDecodeError as err:
            raise UserError(f"{path}: not valid JSON ({err.msg}, line {err.lineno}); fix or remove the file") from None
        text = json.dumps(meta, indent=2, default=str, ensure_ascii=False)
        if len(text) > MAX_META_CHARS:
            text = text[:MAX_META_CHARS] + f"\n... ({len(text) - MAX_META_CHARS:,} more characters in the file)"
        entries.append({"label": _rel(path, results_dir), "href": _rel(path, base), "json": text, **meta_summary(meta)})
    return entries


# ----------------------------------------------------------------------------------------------
# tables


def _table_files(results_dir: Path, exclude: Path) -> list[Path]:
    return sorted(p for p in results_dir.rglob("*.csv") if p.is_file() and exclude not in p.parents)


_STATUS_CELL = re.compile(r"<td>(pass|warn|fail)</td>")


def _table_entries(files: list[Path], base: Path, results_dir: Path, top_rows: int) -> list[dict[str, Any]]:
    entries = []
    for path in files:
        large = path.stat().st_size > MAX_FULL_READ_BYTES  # only the top rows of a large table are read
        frame = read_table(path, nrows=top_rows if large else None)
        shown = frame.head(top_rows)
        html = shown.to_html(index=False, escape=True, na_rep="", border=0, classes="data",
                             float_format=lambda v: f"{v:.4g}")
        html = _STATUS_CELL.sub(r'<td class="status-\1">\1</td>', html)
        entries.append({
            "label": _rel(path, results_dir), "href": _rel(path, base), "html": html,
            "n_rows": f"more than {len(frame)} (large file, not counted)" if large else len(frame),
            "n_cols": frame.shape[1], "shown": len(shown), "truncated": large or len(frame) > len(shown),
        })
    return entries


# ----------------------------------------------------------------------------------------------
# figures


def _figure_entries(results: list[Any], base: Path, results_dir: Path, embed: bool) -> tuple[list[dict], list]:
    drawn, skipped = [], []
    for fig in results:
        if fig.skipped:
            skipped.append((fig.name, fig.skipped))
            continue
        png = next(p for p in fig.paths if p.suffix == ".png")
        width, _ = _png_size(png)
        if embed:
            src = "data:image/png;base64," + base64.b64encode(png.read_bytes()).decode("ascii")
        else:
            src = _rel(png, base)
        drawn.append({
            # shown at the figure's physical size (PNG at FIG_DPI, CSS pixels at 96 per inch)
            "name": fig.name, "src": src, "width": min(round(width * 96 / FIG_DPI), 1300), "caption": fig.caption,
            "links": [(p.name, _rel(p, base)) for p in fig.paths],
            "inputs": [(_rel(p, results_dir), _rel(p, base)) for p in fig.inputs],
        })
    return drawn, skipped


def _existing_figures(figures_dir: Path) -> list[Any]:
    """The figures already in `figures_dir`, with captions and inputs from its figures.json."""
    from evalsuite.figures import read_manifest

    manifest = {e["name"]: e for e in read_manifest(figures_dir)}
    out = []
    for png in sorted(figures_dir.glob("*.png")):
        entry = manifest.get(png.stem, {})
        paths = [p for p in (png.with_suffix(".pdf"), png) if p.is_file()]
        inputs = [Path(p) for p in entry.get("inputs", []) if Path(p).is_file()]
        out.append(FigureResult(png.stem, paths, None, inputs, entry.get("caption") or "(caption not recorded)"))
    out += [FigureResult(e["name"], [], e["skipped"]) for e in manifest.values()
            if e.get("skipped") and not (figures_dir / f"{e['name']}.png").is_file()]
    return out


# ----------------------------------------------------------------------------------------------
# summary: the study's verdicts, what they rest on, sample stories (the top of the page)

SAMPLES_PER_CHECKPOINT = 3
STORY_CHARS = 700  # a completion shown on the page is cut here (the full text is in samples.jsonl)


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except UnicodeDecodeError as err:
        raise UserError(f"{path}: not UTF-8 text (byte {err.start}); fix or remove the file") from None
    except json.JSONDecodeError as err:
        raise UserError(f"{path}: not valid JSON ({err.msg}, line {err.lineno}); fix or remove the file") from None


def _num(value: Any, fmt: str = ".3g") -> str:
    try:
        value = float(value)
    except (TypeError, ValueError):
        return ""
    return format(value, fmt) if math.isfinite(value) else ""


def _metas_of(results_dir: Path, exclude: Path, command: str) -> list[tuple[Path, dict]]:
    out = []
    for path in _meta_files(results_dir, exclude):
        meta = _read_json(path)
        if isinstance(meta, dict) and meta.get("command") == command:
            out.append((path, meta))
    return out


def _loss_to_age(results_dir: Path, exclude: Path) -> list[dict[str, Any]]:
    """childes-compare's verdict on the loss -> age hypothesis, its test, and the per-checkpoint ages with
    intervals it rests on: the loss-to-age test (meta summary `loss_age`) over checkpoint_dev_ages.csv (the
    childes-age model, which gives no age outside its range). A folder written before that model
    (checkpoint_ages.csv of the old error-profile model only) is shown as such, labelled superseded."""
    found = []
    for path, meta in _metas_of(results_dir, exclude, "childes-compare"):
        summary = meta.get("summary") or {}
        rows = []
        dev_ages, old_ages = path.with_name("checkpoint_dev_ages.csv"), path.with_name("checkpoint_ages.csv")
        test = summary.get("loss_age") or {}
        if test or dev_ages.is_file() or not old_ages.is_file():
            evidence = (f"within-run Spearman rho = {_num(test.get('combined_rho'), '+.2f')} between validation loss "
                        f"(bits per character) and predicted age, one-sided p = {_num(test.get('p_negative'), '.2g')} "
                        f"(stratified permutation), n = {test.get('n_checkpoints', '?')} in-range checkpoints of "
                        f"{test.get('n_runs', '?')} run(s), power {_num(test.get('power'), '.2f')}; "
                        f"{test.get('reason', '')}" if test else "no test: " + str(summary.get("verdict")))
            study = "loss -> developmental age (childes-compare, childes-age model)"
            if dev_ages.is_file():
                for r in read_table(dev_ages).to_dict("records"):
                    rows.append({"checkpoint": r.get("checkpoint_id", ""), "val_bpc": _num(r.get("val_bpc"), ".3f"),
                                 "age": f"{_num(r.get('predicted_age_months', float('nan')) / 12, '.1f')} y "
                                        f"[{_num(r.get('ci_low', float('nan')) / 12, '.1f')}, "
                                        f"{_num(r.get('ci_high', float('nan')) / 12, '.1f')}]",
                                 "note": "" if r.get("in_range") in (True, "True") else
                                         f"no age: {r.get('out_of_range_reason') or 'out of range'}"})
            columns = ["checkpoint", "val_bpc", "age", "note"]
        else:  # written before the childes-age model: the old error-profile model's ages, superseded
            old = summary.get("spearman_bpc") or summary.get("spearman_loss") or {}
            unit = "bits per character" if summary.get("spearman_bpc") else "nats/token"
            evidence = (f"Spearman rho = {_num(old.get('rho'), '.2f')} between validation loss ({unit}) and estimated "
                        f"age, p = {_num(old.get('p'), '.2g')} ({old.get('p_method', 'method not recorded')}), "
                        f"n = {old.get('n', '?')} checkpoints" if old else "no test: " + str(summary.get("verdict")))
            study = "loss -> developmental age (childes-compare, superseded error-profile age model)"
            for r in read_table(old_ages).to_dict("records"):
                rows.append({"checkpoint": r.get("checkpoint", ""), "val_bpc": _num(r.get("val_bpc"), ".3f"),
                             "age": f"{_num(r.get('age_months', float('nan')) / 12, '.1f')} y "
                                    f"[{_num(r.get('ci_low', float('nan')) / 12, '.1f')}, "
                                    f"{_num(r.get('ci_high', float('nan')) / 12, '.1f')}]",
                             "band": r.get("hypothesised_band", ""),
                             "note": "extrapolated" if r.get("extrapolated") is True else ""})
            columns = ["checkpoint", "val_bpc", "age", "band", "note"]
        found.append({
            "study": study, "verdict": str(summary.get("verdict", "not recorded")), "evidence": evidence,
            "control": (f"CHILDES reference: {summary.get('n_children', '?')} children, "
                        f"{summary.get('n_child_utterances', '?')} utterances in {summary.get('n_transcripts', '?')} "
                        "transcripts; detectors validated against the transcribers' codes (validation.csv)"),
            "caveats": [str(c) for c in summary.get("caveats") or []],
            "rows": rows, "row_columns": columns, "source": _rel(path, results_dir),
        })
    return found


def _dim_probe(results_dir: Path, exclude: Path) -> list[dict[str, Any]]:
    """dim-probe's claims (claims.csv, deepest layer) and how the probe compares with its controls."""
    found = []
    for claims_path in sorted(p for p in results_dir.rglob("claims.csv") if exclude not in p.parents):
        claims = read_table(claims_path)
        if claims.empty or not {"layer", "category", "verdict"} <= set(claims.columns):
            continue
        if "role" in claims.columns:  # one block per model: the verdicts are the probed model's rows
            claims = claims[claims["role"] == "probed"]
        last = claims[claims["layer"] == claims["layer"].max()]
        counts = last["verdict"].value_counts()
        verdict = ", ".join(f"{n} {v}" for v, n in counts.items()) + f" of {len(last)} claimed categories " \
                  f"(layer {int(claims['layer'].max())})"
        control = "no controls.csv"
        controls_path = claims_path.with_name("controls.csv")
        if controls_path.is_file():
            controls = read_table(controls_path)
            if {"control", "layer", "exceeds_control"} <= set(controls.columns):
                deep = controls[controls["layer"] == controls["layer"].max()]
                control = "; ".join(
                    f"beats the {name} control in {int(sub['exceeds_control'].astype(bool).sum())} of {len(sub)} "
                    "categories (specialisation excess, bootstrap 95% CI above 0)"
                    for name, sub in deep.groupby("control", sort=False))
        rows = [{"category": r["category"], "claimed": r.get("claimed", ""), "measured": r.get("measured_by_mean", ""),
                 "ranks [CI]": r.get("claimed_rank_mean_ci", ""), "verdict": r["verdict"]}
                for r in last.to_dict("records")]
        found.append({"study": "octonion components specialise by word category (dim-probe)", "verdict": verdict,
                      "evidence": "claimed components' rank among all components, bootstrap intervals over documents",
                      "control": control, "caveats": [], "rows": rows,
                      "row_columns": ["category", "claimed", "measured", "ranks [CI]", "verdict"],
                      "source": _rel(claims_path, results_dir)})
    return found


def _judge_validity(results_dir: Path, exclude: Path) -> list[dict[str, Any]]:
    """gpt-eval --validate: does the judge rank clean stories above corrupted ones?"""
    found = []
    for path in sorted(p for p in results_dir.rglob("validation_pairs.csv") if exclude not in p.parents):
        pairs = read_table(path)
        if pairs.empty or not {"corruption", "clean_higher", "n_pairs"} <= set(pairs.columns):
            continue
        clean, total = int(pairs["clean_higher"].sum()), int(pairs["n_pairs"].sum())
        ties = int(pairs["ties"].sum()) if "ties" in pairs else 0
        significant = int((pairs.get("sign_test_p", pd.Series(dtype=float)) < 0.05).sum())
        verdict = (f"clean above corrupted in {clean} of {total} pairs ({ties} ties); "
                   f"{significant} of {len(pairs)} corruption x rate cells significant (sign test p < .05)")
        rows = [{"corruption": r["corruption"], "dimension": r.get("dimension", ""), "rate": _num(r.get("rate"), ".2g"),
                 "clean higher": f"{int(r['clean_higher'])}/{int(r['n_pairs'])}",
                 "mean drop [CI]": f"{_num(r.get('mean_drop'), '.2f')} [{_num(r.get('drop_ci_low'), '.2f')}, "
                                   f"{_num(r.get('drop_ci_high'), '.2f')}]",
                 "p": _num(r.get("sign_test_p"), ".2g")} for r in pairs.to_dict("records")]
        found.append({"study": "judge validity (gpt-eval --validate)", "verdict": verdict,
                      "evidence": "real stories vs controlled corruptions of the same stories",
                      "control": "the clean story is each pair's control", "caveats": [], "rows": rows,
                      "row_columns": ["corruption", "dimension", "rate", "clean higher", "mean drop [CI]", "p"],
                      "source": _rel(path, results_dir)})
    return found


def _judge_scores(results_dir: Path, exclude: Path) -> list[dict[str, Any]]:
    """gpt-eval's mean score per checkpoint with its bootstrap CI."""
    from evalsuite.results import candidate_dirs

    found = []
    for d in candidate_dirs("gpt-eval"):
        for path in sorted(p for p in results_dir.rglob(f"{d}/summary.csv") if exclude not in p.parents):
            table = read_table(path)
            if table.empty or not {"checkpoint_id", "score", "mean"} <= set(table.columns):
                continue
            rows = [{"checkpoint": r["checkpoint_id"], "score": r["score"],
                     "mean [95% CI]": f"{_num(r['mean'], '.2f')} [{_num(r.get('ci_low'), '.2f')}, "
                                      f"{_num(r.get('ci_high'), '.2f')}]",
                     "n stories": r.get("n_stories", "")} for r in table.to_dict("records")
                    if r["score"] != "age_group_index"]
            found.append({"study": "judge scores per checkpoint (gpt-eval)",
                          "verdict": f"{table['checkpoint_id'].nunique()} checkpoints x {table['score'].nunique()} scores",
                          "evidence": "mean of per-story scores, bootstrap 95% CI over stories",
                          "control": "judge validity above (clean vs corrupted stories)", "caveats": [], "rows": rows,
                          "row_columns": ["checkpoint", "score", "mean [95% CI]", "n stories"],
                          "source": _rel(path, results_dir)})
    return found


_SETTING_KEYS = (  # (label, dotted key in a meta.json) for what the verdicts rest on
    ("corpus", "config.train.data"), ("corpus", "corpus"), ("tokenizer", "config.train.tokenizer"),
    ("model", "config.model.family"), ("data mixer", "config.train.mixer"), ("data mixer", "config.mixer"),
    ("prompts", "config.prompts"), ("CHILDES", "inputs.childes"), ("sampling", "sampling"),
)


def _settings(results_dir: Path, exclude: Path) -> list[dict[str, str]]:
    """Corpus, tokenizer, model, mixer, prompts and code version of every command's meta.json."""
    rows = []
    for path in _meta_files(results_dir, exclude):
        meta = _read_json(path)
        if not isinstance(meta, dict):
            continue
        flat = dict(_walk(meta))
        found = {}
        for label, key in _SETTING_KEYS:
            if key in flat and flat[key] not in (None, "", [], {}) and label not in found:
                found[label] = _short(flat[key])
        code = _code_line(meta.get("code_version"))
        rows.append({"file": _rel(path, results_dir), "command": str(meta.get("command", "")),
                     "settings": "; ".join(f"{k}: {v}" for k, v in found.items()) or "(none recorded)",
                     "code": code})
        rows += _checkpoint_settings(meta, code)
    return rows


def _code_line(cv: Any) -> str:
    if not isinstance(cv, dict):
        return "not recorded"
    if not cv.get("git_commit"):
        return str(cv.get("version") or "not recorded")
    return (f"{cv.get('version') or '?'} (git {str(cv['git_commit'])[:12]}"
            f"{', uncommitted changes' if cv.get('git_dirty') else ''})")


def _train_code(run_dir: Path) -> str | None:
    """The code version `evalsuite train` recorded in the run's meta.json."""
    try:
        meta = json.loads((run_dir / "meta.json").read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        return None
    return _code_line(meta.get("code_version")) if isinstance(meta, dict) else None


def _checkpoint_settings(meta: dict, code: str) -> list[dict[str, str]]:
    """The training settings of the checkpoints a generate run read (their config.json): corpus,
    tokenizer, family, steps, seed -- what every downstream verdict rests on."""
    rows, seen = [], set()
    for entry in meta.get("checkpoints") or []:
        ckpt = Path(str(entry.get("checkpoint", ""))) if isinstance(entry, dict) else None
        if ckpt is None:
            continue
        config_file = next((c for c in (ckpt / "config.json", ckpt / "best" / "config.json") if c.is_file()), None)
        if config_file is None:
            continue
        try:
            config = json.loads(config_file.read_text(encoding="utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError):
            continue  # the checkpoint's own readers report it; the page still names the file
        train, model = config.get("train") or {}, config.get("model") or {}
        key = (model.get("family"), train.get("data"), train.get("tokenizer"), train.get("max_iters"))
        if key in seen:
            continue
        seen.add(key)
        parts = {"model": model.get("family"), "corpus": train.get("data"), "tokenizer": train.get("tokenizer"),
                 "val_fraction": train.get("val_fraction"), "steps": train.get("max_iters"), "seed": train.get("seed"),
                 "data mixer": train.get("mixer")}
        run_dir = ckpt.parent if ckpt.name in ("best", "latest") or ckpt.name.startswith("step_") else ckpt
        rows.append({"file": str(run_dir), "command": "train (checkpoint config.json)",
                     "settings": "; ".join(f"{k}: {_short(v)}" for k, v in parts.items() if v not in (None, "")),
                     "code": _train_code(run_dir) or f"{code} (of generate; the run's meta.json is absent)"})
    return rows


def _sample_stories(results_dir: Path, exclude: Path, per_checkpoint: int) -> list[dict[str, Any]]:
    """The first stories of each checkpoint in every samples.jsonl: beginning, completion, and the
    judge's scores of that story when gpt-eval scored it (story_scores.csv)."""
    from evalsuite.samples import read_samples

    scores: dict[tuple[str, str], dict[str, str]] = {}
    for path in sorted(p for p in results_dir.rglob("story_scores.csv") if exclude not in p.parents):
        table = read_table(path)
        if {"checkpoint_id", "story"} <= set(table.columns):
            numeric = [c for c in table.columns if c not in ("checkpoint_id", "story")
                       and pd.api.types.is_numeric_dtype(table[c]) and not c.startswith(("n_", "repeat"))]
            for r in table.to_dict("records"):
                story = str(r["story"]).split("#")[0]
                scores[(str(r["checkpoint_id"]), story)] = {c: _num(r[c], ".2g") for c in numeric if _num(r[c])}
    checkpoints: dict[str, dict[str, Any]] = {}
    for path in sorted(p for p in results_dir.rglob("samples.jsonl") if exclude not in p.parents):
        for record in read_samples([path]):
            ckpt = str(record["checkpoint_id"])
            entry = checkpoints.setdefault(ckpt, {"checkpoint": ckpt, "val_loss": _num(record.get("val_loss"), ".3f"),
                                                  "val_bpc": _num(record.get("val_bpc"), ".3f"),
                                                  "source": _rel(path, results_dir), "stories": []})
            if len(entry["stories"]) >= per_checkpoint:
                continue
            completion = str(record.get("completion", ""))
            entry["stories"].append({
                "prompt_id": str(record.get("prompt_id", "")), "beginning": str(record.get("prompt", "")),
                "completion": completion[:STORY_CHARS] + (" [...]" if len(completion) > STORY_CHARS else ""),
                "scores": scores.get((ckpt, str(record.get("prompt_id", ""))), {}),
            })
    return list(checkpoints.values())


def build_summary(results_dir: str | os.PathLike, *, exclude: str | os.PathLike | None = None,
                  samples_per_checkpoint: int = SAMPLES_PER_CHECKPOINT) -> dict[str, Any]:
    """What the page opens with: `verdicts` (each study's verdict, its test and interval, its control,
    the rows it rests on), `settings` (corpus, tokenizer, mixer, code version per command) and
    `samples` (a few stories per checkpoint with their scores), read from the saved results only."""
    results = Path(results_dir).expanduser()
    skip = Path(exclude).expanduser() if exclude is not None else results_dir_for(results, "figures")
    verdicts = [*_loss_to_age(results, skip), *_dim_probe(results, skip), *_judge_validity(results, skip),
                *_judge_scores(results, skip)]
    return {"verdicts": verdicts, "settings": _settings(results, skip),
            "samples": _sample_stories(results, skip, samples_per_checkpoint)}


# ----------------------------------------------------------------------------------------------
# entry point


def build_report(
    results_dir: str | os.PathLike,
    out: str | os.PathLike | None = None,
    *,
    make_figures: bool = True,
    figures_dir: str | os.PathLike | None = None,
    embed: bool = False,
    top_rows: int = TOP_ROWS,
    title: str = "evalsuite report",
) -> ReportResult:
    """Write the HTML report (default `<results_dir>/report.html`) and return what went into it."""
    import jinja2

    from evalsuite import figures as figs

    results = Path(results_dir).expanduser()
    if not results.is_dir():
        raise UserError(f"results directory not found: {results}")
    page = Path(out).expanduser() if out is not None else results / REPORT_FILE
    page.parent.mkdir(parents=True, exist_ok=True)
    base = page.parent
    fig_dir = Path(figures_dir).expanduser() if figures_dir is not None else results_dir_for(results, "figures")
    fig_results = figs.make_figures(results, fig_dir) if make_figures else _existing_figures(fig_dir)
    drawn, skipped = _figure_entries(fig_results, base, results, embed)
    table_files = _table_files(results, fig_dir)
    meta_files = _meta_files(results, fig_dir)
    if not drawn and not table_files and not meta_files:
        # an empty page is not a report: say what was expected instead of writing one
        raise UserError(f"nothing to report in {results}: no figure inputs, no *.csv tables and no *meta.json "
                        "files below it (run e.g. `evalsuite dynamics RUN -o RESULTS/dynamics` first)")
    from corpora.provenance import code_version

    cv = code_version()  # the code that drew the page: package version and, in a checkout, the commit
    evalsuite_version = (cv["version"] or "(source tree)") + (
        f" (git {cv['git_commit'][:12]}{', uncommitted changes' if cv['git_dirty'] else ''})" if cv["git_commit"] else "")
    env = jinja2.Environment(loader=jinja2.FileSystemLoader(str(TEMPLATE_DIR)), autoescape=True,
                             undefined=jinja2.StrictUndefined)
    html = env.get_template(TEMPLATE).render(
        title=title, generated=datetime.now(timezone.utc).isoformat(timespec="seconds"),
        results_dir=str(results.resolve()), evalsuite_version=evalsuite_version,
        python_version=platform.python_version(), figures=drawn, skipped=skipped,
        metas=_meta_entries(meta_files, base, results), summary=build_summary(results, exclude=fig_dir),
        tables=_table_entries(table_files, base, results, top_rows),
    )
    tmp = page.with_name(f".{page.name}.tmp-{os.getpid()}")
    tmp.write_text(html, encoding="utf-8")
    os.replace(tmp, page)
    return ReportResult(page, fig_results, table_files, meta_files)
