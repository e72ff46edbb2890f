"""The seed's loss-to-age hypothesis (one table for childes-compare and the figures), and the same
bands in a unit every tokenizer shares.

The seed stated its bands in nats/token of GPT-2 on TinyStories. To compare checkpoints of any
tokenizer they are converted to bits per character with GPT-2's tokens per character on TinyStories
text, counted as corpora.tokenized counts it (each document's tokens plus its end-of-text token, over
its characters): 911 / 3,709 on the reference sample (shared/data/tinystories, 5 stories; a test
recomputes it). A sample of 5 stories: the converted edges carry that uncertainty (a few per cent).
"""

from __future__ import annotations

import math

# The seed's hypothesis: validation loss (nats/token, as in the original SpinNet run) -> age band
# (low, high, age_low_months, age_high_months, label); loss 3.0-3.5 is not in the seed's table.
HYPOTHESIS: tuple[tuple[float, float, float, float, str], ...] = (
    (3.5, math.inf, 24.0, 36.0, "2-3 y"),
    (2.5, 3.0, 36.0, 48.0, "3-4 y"),
    (2.0, 2.5, 48.0, 60.0, "4-5 y"),
    (1.5, 2.0, 60.0, 72.0, "5-6 y"),
    (-math.inf, 1.5, 72.0, math.inf, "6+ y"),
)

SEED_TOKENS_PER_CHAR = 911 / 3709


def seed_nats_to_bpc(nats_per_token: float) -> float:
    """A loss of the seed's run (GPT-2 on TinyStories, nats/token) in bits per character."""
    return nats_per_token * SEED_TOKENS_PER_CHAR / math.log(2)


def hypothesis_band(val_loss: float, val_bpc: float | None = None) -> tuple[str, float, float]:
    """The seed's age band for a checkpoint: looked up in bits per character (the bands converted with
    SEED_TOKENS_PER_CHAR) when val_bpc is known, so that any tokenizer compares; else in nats/token."""
    use_bpc = val_bpc is not None and math.isfinite(val_bpc)
    value = val_bpc if use_bpc else val_loss
    for lo, hi, a_lo, a_hi, label in HYPOTHESIS:
        if use_bpc:
            lo, hi = seed_nats_to_bpc(lo), seed_nats_to_bpc(hi)
        if lo <= value < hi:
            return label, a_lo, a_hi
    return "not in the seed's table", float("nan"), float("nan")
