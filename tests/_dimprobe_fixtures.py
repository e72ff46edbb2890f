"""Shared helpers for the dim-probe tests: small stories written here, tiny real models."""

from __future__ import annotations

import random

import numpy as np
import torch

NAMES = ["Tom", "Lily", "Ben", "Mia", "Sam", "Anna"]
ANIMALS = ["dog", "cat", "bird", "frog", "bunny", "duck"]
THINGS = ["ball", "kite", "box", "cake", "tree", "boat", "hat", "flower"]
PLACES = ["park", "garden", "forest", "house", "river"]
ADJ = ["big", "small", "red", "shiny", "soft", "old"]
FEEL = ["happy", "sad", "angry", "scared", "excited"]
VERBS = ["found", "saw", "liked", "wanted", "made", "took"]


def story(rng: random.Random) -> str:
    """A short TinyStories-like story with nouns, verbs, pronouns, emotion words and dialogue."""
    name, friend = rng.sample(NAMES, 2)
    animal, thing, thing2 = rng.choice(ANIMALS), rng.choice(THINGS), rng.choice(THINGS)
    place, adj, feel, verb = rng.choice(PLACES), rng.choice(ADJ), rng.choice(FEEL), rng.choice(VERBS)
    lines = [
        f"Once upon a time, {name} went to the {place} with a {animal}.",
        f"{name} {verb} a {adj} {thing} near the {thing2}. {name} was very {feel}.",
        f"\"Look at my {thing}!\" said {name}. \"It is so {adj}.\"",
        f"{friend} smiled and said, \u201cCan I play with it too?\u201d",
        f"They played with the {thing} all day, and the {animal} ran after them.",
        f"At night, they went home. {name} hugged {friend} and felt {rng.choice(FEEL)}.",
    ]
    rng.shuffle(lines[1:5])
    return "\n".join(lines)


def stories(n: int, seed: int = 0) -> list[str]:
    rng = random.Random(seed)
    return [story(rng) for _ in range(n)]


def tiny_config(vocab_size: int, family: str = "spinnet", n_layer: int = 2, d_model: int = 64):
    from trainers.config import ModelConfig

    if family == "spinnet":
        return ModelConfig(family="spinnet", vocab_size=vocab_size, n_layer=n_layer, n_head=8, d_model=d_model,
                           max_seq_len=128)
    return ModelConfig(family="baseline", vocab_size=vocab_size, n_layer=n_layer, n_head=8, d_model=d_model,
                       max_seq_len=128)


def tiny_probe_model(tokenizer, *, seed: int = 0, family: str = "spinnet", name: str = "probe", block_size: int = 64):
    from evalsuite.dimprobe.collect import ModelUnderProbe
    from trainers.model import build_model

    torch.manual_seed(seed)
    model = build_model(tiny_config(tokenizer.vocab_size, family)).eval()
    return ModelUnderProbe(name=name, model=model, tokenizer=tokenizer, block_size=block_size,
                           n_components=model.n_components, description=f"tiny {family} (seed {seed})")


def word_tokenizer(docs: list[str]):
    """A byte-level BPE trained on the docs with room for every word: words become single tokens."""
    from corpora.tokenizers import train_bpe

    return train_bpe(docs, vocab_size=2000, min_frequency=1)


class PlantedSignal:
    """Adds `amount` to component k of the residual stream (after every block) at the positions whose
    input token id is in `token_ids`: a model forced to fire component k on those tokens."""

    def __init__(self, model: torch.nn.Module, n_components: int, k: int, token_ids: set[int], amount: float):
        self.ids = torch.tensor(sorted(token_ids), dtype=torch.long)
        width = model.config.d_model // n_components
        self.sl = slice(k * width, (k + 1) * width)
        self.amount = amount
        self.current: torch.Tensor | None = None
        self.handles = [model.register_forward_pre_hook(self._grab)]
        self.handles += [b.register_forward_hook(self._plant) for b in model.blocks]

    def _grab(self, module, args):
        self.current = torch.isin(args[0], self.ids)

    def _plant(self, module, args, out):
        out = out.clone()
        out[..., self.sl] += self.amount * self.current[..., None].to(out.dtype)
        return out

    def remove(self) -> None:
        for h in self.handles:
            h.remove()


class NoiseBlocks:
    """Replaces every block's output by seeded Gaussian noise: states that carry no information
    about the text, so every category label is unrelated to them (the null)."""

    def __init__(self, model: torch.nn.Module, seed: int = 0):
        self.gen = torch.Generator().manual_seed(seed)
        self.handles = [b.register_forward_hook(self._noise) for b in model.blocks]

    def _noise(self, module, args, out):
        return torch.randn(out.shape, generator=self.gen, dtype=out.dtype)

    def remove(self) -> None:
        for h in self.handles:
            h.remove()


def noun_token_ids(docs: list[str], tokenizer, min_share: float = 0.95) -> set[int]:
    """Token ids that spaCy tags NOUN in at least `min_share` of their occurrences in `docs`."""
    from evalsuite.dimprobe.align import align_tokens, load_spacy

    nlp = load_spacy()
    hits: dict[int, list[bool]] = {}
    for text, doc in zip(docs, nlp.pipe(docs), strict=True):
        starts = np.array([t.idx for t in doc])
        ends = starts + np.array([len(t.text) for t in doc])
        ids, offsets = tokenizer.encode_with_offsets(text)
        owner = align_tokens(np.asarray(offsets).reshape(-1, 2), starts, ends, text)
        for tid, w in zip(ids, owner, strict=True):
            if w >= 0:
                hits.setdefault(tid, []).append(doc[int(w)].pos_ == "NOUN")
    return {tid for tid, h in hits.items() if np.mean(h) >= min_share}
