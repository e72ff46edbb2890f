"""MLU at corpus scale: both %mor styles counted on real lines, `_` compounds, fillers, the unintelligible rules."""

from __future__ import annotations

import pytest

from corpora.chat import clean_main_tier, parse_transcript
from corpora.errors import UserError
from corpora.mor import clan_item_morphemes, coarse_pos, mor_style_of_items
from evalsuite.childes import measures

# Real lines (speaker changed to CHI): Brown/Adam (UD-style %mor) and Providence/Naima/020424.cha (CLAN style).
UD_LINE = ("*CHI:\the had his bath before supper and he put his pajamas on and he this last night .\n"
           "%mor:\tpron|he-Prs-Nom-S3 verb|have-Fin-Ind-Past-S3 pron|his-Prs-Gen-S3 noun|bath adp|before "
           "noun|supper cconj|and pron|he-Prs-Nom-S3 verb|put-Fin-Ind-Past-S3 pron|his-Prs-Gen-S3 noun|pajama-Plur "
           "adv|on cconj|and pron|he-Prs-Nom-S3 det|this-Def-Dem adj|last-Pos-S1 noun|night .\n")
CLAN_LINE = ("*CHI:\tThey put cones , they put cones in the road to keep the cars from driving too close to the fire "
             "cause [: because] the fire's [: fire is] very hot .\n"
             "%mor:\tn:prop|They part|put&PASTP n|cone-PL cm|cm pro:sub|they v|put&ZERO n|cone-PL prep|in "
             "det:art|the n|road inf|to v|keep det:art|the n|car-PL prep|from part|drive-PRESP adv|too adj|close "
             "prep|to det:art|the n|fire conj|because det:art|the n|fire cop|be&3S adv|very adj|hot .\n")
CLAN_GONNA = ("*CHI:\tthat's gonna be the first book .\n"
              "%mor:\tpro:rel|that~aux|be&3S part|go&PRESP~inf|to cop|be det:art|the adj|first n|book .\n")


def _cha(body: str) -> bytes:
    return ("@UTF8\n@Begin\n@Languages:\teng\n@Participants:\tCHI Target_Child\n"
            "@ID:\teng|Mini|CHI|2;06.|female|||Target_Child|||\n" + body + "@End\n").encode()


def _morphemes(body: str) -> tuple[str, list[int]]:
    tr = parse_transcript("m.cha", _cha(body))
    return tr.mor_style, [measures.mor_morphemes(r["mor"], r["mor_words"], tr.mor_style) for r in tr.rows]


def test_ud_style_counts_regular_inflection_only():
    style, (n,) = _morphemes(UD_LINE)
    # 17 words; pajamas = pajama + s (regular plural); had, put: fused past, one morpheme each
    assert style == "ud" and n == 18


def test_clan_style_counts_dash_suffixes_not_fused_ones():
    style, (n,) = _morphemes(CLAN_LINE)
    # 26 stems; cones x2, cars (-PL) and driving (-PRESP) add one each; put&PASTP, put&ZERO, be&3S add none
    assert style == "clan" and n == 30
    _, (gonna,) = _morphemes(CLAN_GONNA)
    # that 's gonna be the first book: gonna's inf|to is not a morpheme of its own (CLAN, and UD's adv|gonna)
    assert gonna == 7


def test_clan_items():
    assert clan_item_morphemes("n|+n|fire+n|fighter-PL") == 2  # compound: one stem, plus the plural
    assert clan_item_morphemes("0det:art|a") == 0  # an omitted word
    assert clan_item_morphemes("n|toddle&dv-AGT") == 1  # derivation is not inflection
    assert clan_item_morphemes("co|um", frozenset({"um"})) == 0
    assert coarse_pos("n|cone-PL") == "NOUN" and coarse_pos("pro:sub|they") == "PRON"
    assert coarse_pos("noun|cookie-Plur") == "NOUN" and coarse_pos("cm|cm") == ""


def test_style_detection():
    assert mor_style_of_items(["aux|be-Fin-Ind-Pres-S3", "det|the-Def-Art"]) == "ud"
    assert mor_style_of_items(["aux|be&3S", "part|wear-PRESP", "det:art|a"]) == "clan"
    assert mor_style_of_items([]) == "none"


def test_mlu_eligible_rules():
    import pandas as pd

    frame = pd.DataFrame([clean_main_tier(t) for t in ("um .", "xxx .", "xxx cookie .", "more cookie .", "")])
    assert measures.mlu_eligible(frame).tolist() == [False, False, False, True, False]
    assert measures.mlu_eligible(frame, "clan").tolist() == [False, False, True, True, False]
    with pytest.raises(UserError, match="unintelligible rule"):
        measures.mlu_eligible(frame, "lenient")


def test_text_side_counts_a_compound_once():
    from evalsuite.childes.detectors import load_nlp

    out = clean_main_tier("thank_you mommy .")
    doc = load_nlp()(out["utterance"])
    assert measures.text_words(doc) == 3  # without the spans: thank, you, mommy
    assert measures.text_words(doc, compounds=out["compounds"]) == 2
    assert measures.text_morphemes(doc, compounds=out["compounds"]) == 2


def test_real_providence_transcript_is_clan_style(shared_data):
    """Providence (older %mor) against a UD corpus, on real transcripts: both give morpheme counts."""
    import zipfile

    talkbank = shared_data / "childes" / "talkbank"
    with zipfile.ZipFile(talkbank / "Providence.zip") as zf:
        data = zf.read("Providence/Naima/020424.cha")
    tr = parse_transcript("Providence/Naima/020424.cha", data)
    assert tr.mor_style == "clan" and tr.child == "Naima"
    counts = [measures.mor_morphemes(r["mor"], r["mor_words"], tr.mor_style) for r in tr.rows if r["mor"]]
    words = [r["n_words"] for r in tr.rows if r["mor"]]
    assert len(counts) > 100 and sum(counts) > sum(words)  # inflections add morphemes beyond the words


def test_free_to_is_a_morpheme_and_gonna_clitic_is_not():
    # Providence/Naima/020424.cha: "want [?] to do" has a free "to" (its own word), unlike gonna's ~inf|to
    _, (n,) = _morphemes("*CHI:\tthe bear want to do a toddler .\n%mor:\tdet:art|the n|bear v|want inf|to v|do "
                         "det:art|a n|toddle&dv-AGT .\n")
    assert n == 7
