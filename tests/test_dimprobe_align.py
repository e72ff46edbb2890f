"""dim-probe alignment of model tokens to spaCy words, windows, and residual capture."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from _dimprobe_fixtures import stories, tiny_probe_model, word_tokenizer

from evalsuite.dimprobe.align import align_tokens, char_owner, load_spacy, token_labels
from evalsuite.dimprobe.collect import (
    ModelUnderProbe,
    PreparedDoc,
    capture_residuals,
    forward_docs,
    plan_windows,
)


def spans(words_and_starts):
    starts = np.array([s for _, s in words_and_starts])
    ends = starts + np.array([len(w) for w, _ in words_and_starts])
    return starts, ends


def test_subwords_belong_to_the_covering_word():
    text = "The dog don't run."
    # spaCy words: The dog do n't run .
    starts, ends = spans([("The", 0), ("dog", 4), ("do", 8), ("n't", 10), ("run", 14), (".", 17)])
    # GPT-2-like pieces: "The", " dog", " don", "'t", " r", "un", "." and a whitespace-only piece
    offsets = np.array([[0, 3], [3, 7], [7, 11], [11, 13], [13, 15], [15, 17], [17, 18], [3, 4]])
    owner = align_tokens(offsets, starts, ends, text)
    # " don" covers "do" (2 chars) and "n" of "n't" (1 char): the majority word wins
    assert owner.tolist() == [0, 1, 2, 3, 4, 4, 5, -1]
    assert char_owner(starts, ends, text).tolist()[:5] == [0, 0, 0, -1, 1]


def test_tie_goes_to_the_earlier_word_and_byte_pieces_share_a_character():
    text = "ab“c"
    starts, ends = spans([("ab", 0), ("“", 2), ("c", 3)])
    # one token over "b“" (tie: 1 char each), two byte pieces of the curly quote, then "c"
    offsets = np.array([[1, 3], [2, 3], [2, 3], [3, 4], [4, 4]])
    assert align_tokens(offsets, starts, ends, text).tolist() == [0, 1, 1, 2, -1]


def test_token_labels_copy_word_labels():
    word_labels = np.array([[True, False], [False, True]])
    labels = token_labels(np.array([0, -1, 1, 1]), word_labels)
    assert labels.tolist() == [[True, False], [False, False], [False, True], [False, True]]


@pytest.mark.parametrize("kind", ["char", "bpe"])
def test_real_tokenizers_align_every_non_space_token(kind):
    from corpora.tokenizers import train_char

    docs = stories(6, seed=3) + ["\u201cWow,\u201d said Zoë. \u201cCaf\u00e9!\u201d"]
    tok = train_char(docs) if kind == "char" else word_tokenizer(docs)
    nlp = load_spacy()
    for text, doc in zip(docs, nlp.pipe(docs), strict=True):
        starts = np.array([t.idx for t in doc])
        ends = starts + np.array([len(t.text) for t in doc])
        ids, offsets = tok.encode_with_offsets(text)
        owner = align_tokens(np.asarray(offsets), starts, ends, text)
        for (a, b), w in zip(offsets, owner, strict=True):
            piece = text[a:b]
            if piece.strip():
                assert w >= 0, piece
                # the word owns at least one character of the piece
                assert set(range(a, b)) & set(range(starts[w], ends[w])), (piece, doc[int(w)].text)
            else:
                assert w == -1


def test_windows_credit_every_position_once_with_context():
    for n_tokens, block, stride in [(10, 64, 32), (63, 64, 32), (64, 64, 32), (200, 64, 32), (200, 64, 16)]:
        windows = plan_windows(n_tokens, block, stride)
        credited = np.zeros(n_tokens + 1, dtype=int)
        for a, b, c in windows:
            assert 0 <= a < c <= b <= a + block
            credited[c:b] += 1
            if a > 0:
                assert c - a >= block - stride  # each credited position sees this much context
        assert credited[0] == 0 and (credited[1:] == 1).all()


def test_capture_matches_return_hidden_and_windows_match_direct_forward():
    docs = stories(2, seed=5)
    tok = word_tokenizer(docs)
    run = tiny_probe_model(tok, block_size=32)
    model = run.model
    ids = tok.encode(docs[0])
    idx = torch.tensor([[tok.eot_id, *ids[:31]]])
    with torch.inference_mode():
        reference = model(idx, return_hidden=True).hidden
        with capture_residuals(model, [0, 1, 2], stop=False) as store:
            model(idx)
    for layer in range(3):
        torch.testing.assert_close(store[layer], reference[layer])
    # forward_docs: a short document equals one direct forward of [eot] + ids
    doc = PreparedDoc(0, np.array(ids[:31]), np.zeros((31, 1), bool), np.ones(31, bool), 100, 0)
    out = forward_docs(run, [doc], [0, 2], need_mags=True, need_nll=True, statistic="norm")[0]
    direct = torch.stack([reference[0][0, 1:], reference[2][0, 1:]], dim=1)  # (T, L, D)
    expected = torch.linalg.vector_norm(direct.view(31, 2, 8, 8), dim=-1).numpy()
    np.testing.assert_allclose(out.mags, expected, rtol=1e-5, atol=1e-6)
    # the default statistic is the share of the token's whole norm
    shares = forward_docs(run, [doc], [0, 2], need_mags=True)[0].mags
    np.testing.assert_allclose(shares, expected / np.linalg.norm(expected, axis=-1, keepdims=True), rtol=1e-5)
    # token i's loss: predicting token i + 1 (end-of-text after the last) from token i's state
    logits = model(idx).logits[0, 1:]
    targets = torch.tensor([*ids[1:31], tok.eot_id])
    nll = torch.nn.functional.cross_entropy(logits, targets, reduction="none").detach().numpy()
    np.testing.assert_allclose(out.nll, nll, rtol=1e-5, atol=1e-5)
    # a long document in overlapping windows: the first window's tokens are the direct forward's
    long_ids = np.array((ids * 3)[:80])
    long_doc = PreparedDoc(1, long_ids, np.zeros((80, 1), bool), np.ones(80, bool), 300, 0)
    long_out = forward_docs(run, [long_doc], [2], need_mags=True, statistic="norm")[0]
    with torch.inference_mode():
        first = model(torch.tensor([[tok.eot_id, *long_ids[:31]]]), return_hidden=True).hidden[2][0, 1:]
    np.testing.assert_allclose(long_out.mags[:31, 0],
                               torch.linalg.vector_norm(first.view(31, 8, 8), dim=-1).numpy(), rtol=1e-5, atol=1e-6)
    assert long_out.mags.shape == (80, 1, 8) and (long_out.mags[31:] > 0).all()


def test_analysed_mask_selects_tokens():
    docs = stories(1, seed=2)
    tok = word_tokenizer(docs)
    run: ModelUnderProbe = tiny_probe_model(tok)
    ids = np.array(tok.encode(docs[0])[:20])
    analysed = np.zeros(20, bool)
    analysed[5:] = True
    out = forward_docs(run, [PreparedDoc(0, ids, np.zeros((20, 1), bool), analysed, 50, 0)], [1])[0]
    full = forward_docs(run, [PreparedDoc(0, ids, np.zeros((20, 1), bool), np.ones(20, bool), 50, 0)], [1])[0]
    np.testing.assert_allclose(out.mags, full.mags[5:])
