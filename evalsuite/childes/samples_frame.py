"""samples.jsonl as the DataFrame childes-compare and childes-age use: one row per sample, read
through the one samples reader (evalsuite.samples.read_samples, one defaulting rule)."""

from __future__ import annotations

import os
from collections.abc import Sequence

import pandas as pd

from corpora.errors import UserError
from evalsuite.samples import read_samples as read_sample_records

SAMPLE_REQUIRED = ("completion", "val_loss")


def read_samples(paths: Sequence[str | os.PathLike]) -> pd.DataFrame:
    """samples.jsonl files (DEVELOPING.md format) -> one row per sample; clear errors for bad lines."""
    rows = []
    # one reader and one defaulting rule for checkpoint_id/prompt (evalsuite.samples.read_samples)
    for record in read_sample_records(paths, require=SAMPLE_REQUIRED) if paths else []:
        path, lineno = record["samples_file"], record["samples_line"]
        try:
            val_loss = float(record["val_loss"])
            val_bpc = float(record["val_bpc"]) if record.get("val_bpc") is not None else float("nan")
        except (TypeError, ValueError) as err:
            raise UserError(f"{path}:{lineno}: val_loss/val_bpc must be numbers") from err
        rows.append({
            "samples_file": path, "line": lineno, "checkpoint_id": record["checkpoint_id"],
            "checkpoint": str(record["checkpoint"]),
            "model_family": record.get("model_family") or "",
            "prompt_id": record["prompt_id"], "prompt": record["prompt"],
            "completion": record["completion"], "val_loss": val_loss, "val_bpc": val_bpc,
            "tokens_seen": record.get("tokens_seen"),
        })
    frame = pd.DataFrame(rows)
    if frame.empty:
        raise UserError("the samples files hold no samples")
    per_ckpt = frame.groupby("checkpoint_id")[["val_loss", "val_bpc"]].nunique(dropna=False)
    bad = per_ckpt[(per_ckpt.val_loss > 1) | (per_ckpt.val_bpc > 1)]
    if not bad.empty:
        raise UserError(f"checkpoint(s) with more than one val_loss/val_bpc: {', '.join(bad.index[:5])}")
    return frame
