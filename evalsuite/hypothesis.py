"""The seed's loss-to-age hypothesis in a unit every tokenizer shares.

The seed stated its bands in nats/token of GPT-2 on TinyStories. To compare checkpoints of any
tokenizer they are converted to bits per character with GPT-2's tokens per character on TinyStories
text, counted as corpora.tokenized counts it (each document's tokens plus its end-of-text token, over
its characters): 911 / 3,709 on the reference sample (shared/data/tinystories, 5 stories; a test
recomputes it). A sample of 5 stories: the converted edges carry that uncertainty (a few per cent).
"""

from __future__ import annotations

import math

SEED_TOKENS_PER_CHAR = 911 / 3709


def seed_nats_to_bpc(nats_per_token: float) -> float:
    """A loss of the seed's run (GPT-2 on TinyStories, nats/token) in bits per character."""
    return nats_per_token * SEED_TOKENS_PER_CHAR / math.log(2)
