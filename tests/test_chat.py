"""CHAT reading: main-tier cleaning by hand-written lines, and reading files, folders and zips."""

from __future__ import annotations

import re
import zipfile
from pathlib import Path

import pytest

from corpora.chat import clean_main_tier, read_chat
from corpora.errors import UserError

MINI_CHA = """@UTF8
@Begin
@Languages:\teng
@Participants:\tCHI Target_Child, MOT Mother
@ID:\teng|Mini|CHI|2;06.15|female|||Target_Child|||
@ID:\teng|Mini|MOT||female|||Mother|||
*CHI:\tI goed [: went] [* +ed] home .
%mor:\tpron|I-Prs-Nom-S1 verb|go-Fin-Ind-Past-S1 adv|home .
*MOT:\tyou went home ?
%mor:\tpron|you-Prs-Nom-S2 verb|go-Fin-Ind-Past-S2 adv|home ?
*CHI:\t<I want> [/] I want dat [: that] cookie .
%mor:\tpron|I-Prs-Nom-S1 verb|want-Fin-Ind-Pres-S1 det|that-Def-Dem noun|cookie .
*CHI:\txxx .
@End
"""


def _span(out: dict, ann: dict) -> str:
    return out["utterance"][ann["start"] : ann["end"]]


def test_replacement_keeps_morphological_error_and_normalises_pronunciation():
    out = clean_main_tier("dat [: that] mines [: mine] [* +s-pos] .")
    assert out["utterance"] == "that mines ."
    assert out["target"] == "that mine"
    (ann,) = out["annotations"]
    assert ann["code"] == "+s-pos" and _span(out, ann) == "mines" and ann["target"] == "mine"


def test_overregularized_verb_is_kept_with_its_code_span():
    out = clean_main_tier("the chicken throwed [: threw] [* +ed] it to me (.) and wash [?] it .")
    assert out["utterance"] == "the chicken throwed it to me and wash it ."
    assert [(_span(out, a), a["code"]) for a in out["annotations"]] == [("throwed", "+ed")]
    assert out["error_codes"] == ["+ed"]


def test_case_error_between_pronouns_is_kept():
    out = clean_main_tier("my [: I] [* case] can't eat .")
    assert out["utterance"].startswith("my can't eat")


def test_retracing_with_correction_is_removed_and_repetition_kept():
    out = clean_main_tier("somebody <take it> [//] (.) goin(g) take it .")
    assert out["utterance"] == "somebody going take it ."
    out = clean_main_tier("<I want> [/] I want cookie .")
    assert out["utterance"] == "I want I want cookie ."
    assert out["utterance_clan"] == "I want cookie"
    (ann,) = out["annotations"]
    assert ann["code"] == "[/]" and _span(out, ann) == "I want"


def test_fillers_events_pauses_and_special_forms_are_dropped():
    out = clean_main_tier("&-uh I [/] I want &=laughs iss@c (.) no: +...")
    assert out["utterance"] == "I I want iss no ."
    assert out["n_words"] == 4  # I want iss no (the repeated I is not counted)


def test_unintelligible_is_flagged_and_postcodes_kept():
    out = clean_main_tier("xxx top a [: of] [* fil] can . [+ RES]")
    assert out["unintelligible"] is True
    assert out["postcodes"] == ["RES"]
    assert out["utterance"] == "top of can ."


def test_omitted_word_annotates_a_gap():
    out = clean_main_tier("he 0is going ?")
    assert out["utterance"] == "he going ?"
    assert out["target"] == "he is going"
    (ann,) = out["annotations"]
    assert ann["code"] == "0is" and ann["start"] == ann["end"] == 2


def test_group_error_code_is_one_span():
    out = clean_main_tier("<two mans> [* +s] went .")
    (ann,) = out["annotations"]
    assert _span(out, ann) == "two mans"


def _write_mini(folder: Path) -> Path:
    child_dir = folder / "Mini" / "Ann"
    child_dir.mkdir(parents=True)
    path = child_dir / "020615.cha"
    path.write_text(MINI_CHA, encoding="utf-8")
    return path


def test_read_chat_file_folder_and_zip_agree(tmp_path):
    path = _write_mini(tmp_path)
    from_file = read_chat(path)
    from_dir = read_chat(tmp_path / "Mini")
    archive = tmp_path / "Mini.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        zf.write(path, "Mini/Ann/020615.cha")
    from_zip = read_chat(archive)
    for frame in (from_file, from_dir, from_zip):
        assert frame["utterance"].tolist() == ["I goed home .", "I want I want that cookie .", ""]
        assert set(frame["speaker"]) == {"CHI"}
        assert frame["age_months"].iloc[0] == pytest.approx(30 + 15 / (365.25 / 12))  # 2;06.15
        assert frame["child"].iloc[0] == "Ann"  # no name in @Participants: the folder's name
        assert frame["corpus"].iloc[0] == "Mini"
    assert from_file["mor"].iloc[0] == ["pron|I-Prs-Nom-S1", "verb|go-Fin-Ind-Past-S1", "adv|home"]
    assert from_file["error_codes"].iloc[0] == ["+ed"]
    assert bool(from_file["unintelligible"].iloc[2]) and from_file["n_words"].iloc[2] == 0
    everyone = read_chat(path, speakers=None)
    assert everyone["speaker"].tolist() == ["CHI", "MOT", "CHI", "CHI"]


def test_read_chat_bad_inputs(tmp_path):
    with pytest.raises(UserError, match="not found"):
        read_chat(tmp_path / "nope")
    with pytest.raises(UserError, match="no .cha files"):
        read_chat(tmp_path)
    (tmp_path / "notes.txt").write_text("hello", encoding="utf-8")
    with pytest.raises(UserError, match="expected a .cha file"):
        read_chat(tmp_path / "notes.txt")
    (tmp_path / "broken.zip").write_bytes(b"not a zip")
    with pytest.raises(UserError, match="not a zip"):
        read_chat(tmp_path / "broken.zip")
    path = _write_mini(tmp_path / "x")
    with pytest.raises(UserError, match="no utterances of FAT"):
        read_chat(path, speakers=["FAT"])


@pytest.mark.shared_data
def test_read_brown_file_matches_the_raw_text(shared_data):
    path = shared_data / "childes" / "Brown" / "Eve" / "020000a.cha"
    raw = path.read_text(encoding="utf-8")
    chi_lines = [line for line in raw.splitlines() if line.startswith("*CHI:")]
    frame = read_chat(path)
    assert len(frame) == len(chi_lines)
    assert frame["age_months"].iloc[0] == pytest.approx(24.0)
    assert frame["child"].iloc[0] == "Eve" and frame["corpus"].iloc[0] == "Brown"
    coded = sum(len(re.findall(r"\[\* [^\]]+\]", line)) for line in chi_lines)
    assert sum(len(c) for c in frame["error_codes"]) == coded > 0
    for utt, anns in zip(frame["utterance"], frame["annotations"], strict=True):
        for ann in anns:
            if ann["end"] > ann["start"]:
                assert utt[ann["start"] : ann["end"]] == ann["word"]
    # no CHAT markup survives cleaning
    assert not frame["utterance"].str.contains(r"[\[\]<>&@]|\bxxx\b").any()
    assert (frame["mor"].str.len() > 0).mean() > 0.95


def test_age_on_day_30_stays_in_its_month(tmp_path):
    """2;11.30 is two years old: with days / 30 it became 36.0 months (3;00.00) and moved age bin."""
    path = tmp_path / "Ann" / "021130.cha"
    path.parent.mkdir()
    path.write_text(MINI_CHA.replace("2;06.15", "2;11.30"), encoding="utf-8")
    age = read_chat(path)["age_months"].iloc[0]
    assert 35.9 < age < 36.0


# ----------------------------------------------------------------------------- corpus scale: issues, styles


def _cha(body: str, age: str = "2;06.15") -> str:
    return (
        "@UTF8\n@Begin\n@Languages:\teng\n@Participants:\tCHI Target_Child, MOT Mother\n"
        f"@ID:\teng|Mini|CHI|{age}|female|||Target_Child|||\n@ID:\teng|Mini|MOT||female|||Mother|||\n"
        f"{body}@End\n"
    )


GOOD = _cha("*CHI:\tI want cookie .\n%mor:\tpron|I-Prs-Nom-S1 verb|want-Fin-Ind-Pres-S1 noun|cookie .\n")
# Bates/Free20/vicki.cha's illegal notation: strict mode rejects the file, non-strict reads it
STRICT_FAIL = _cha("*CHI:\t&=0they want it .\n%mor:\tpron|they verb|want-Fin-Ind-Pres-P3 pron|it .\n"
                   "*CHI:\tmore juice .\n%mor:\tadj|more noun|juice .\n")


def test_strict_rejection_and_misalignment_are_recorded_and_reading_goes_on():
    from corpora.chat import parse_transcript

    tr = parse_transcript("Mini/vicki.cha", STRICT_FAIL.encode())
    assert not tr.strict_ok and tr.error is None
    kinds = [(i["kind"], i["utt_index"]) for i in tr.issues]
    assert ("strict_parse_error", None) in kinds
    assert ("mor_misalignment", 0) in kinds  # the warning is tied to its utterance
    assert [r["utterance"] for r in tr.rows] == ["want it .", "more juice ."]
    assert [r["mor_aligned"] for r in tr.rows] == [False, True]


def test_clean_file_has_no_issues_and_listed_absences():
    from corpora.chat import parse_transcript

    tr = parse_transcript("a.cha", GOOD.encode())
    assert tr.strict_ok and tr.issues == [] and tr.mor_style == "ud" and tr.age_months == pytest.approx(30.49, abs=0.01)
    bare = parse_transcript("b.cha", _cha("*CHI:\tmore juice .\n", age="").encode())
    assert {i["kind"] for i in bare.issues} == {"no_child_age", "no_mor"}
    assert bare.age_months != bare.age_months  # NaN: never guessed
    assert bare.rows[0]["mor"] == [] and bare.rows[0]["n_words"] == 2


@pytest.mark.parametrize(
    ("data", "kind", "words"),
    [
        (GOOD.encode("utf-8").replace(b"cookie", b"cook\xe9"), "not_utf8", "not UTF-8"),
        (GOOD.encode()[: GOOD.index("noun|") + 3], "no_end", "cut off (mid-line)"),
        (GOOD.replace("@End\n", "").encode(), "no_end", "no @End line"),
    ],
)
def test_bad_transcript_single_file_is_one_error_and_in_a_zip_a_row(tmp_path, data, kind, words):
    from corpora.chat import parse_transcript, read_chat_with_issues

    tr = parse_transcript("bad.cha", data)
    assert tr.rows == [] and tr.issues[0]["kind"] == kind and tr.issues[0]["severity"] == "error"
    bad = tmp_path / "bad.cha"
    bad.write_bytes(data)
    with pytest.raises(UserError, match=re.escape(words)):
        read_chat(bad)
    archive = tmp_path / "Mini.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        zf.writestr("Mini/Ann/020615.cha", GOOD)
        zf.writestr("Mini/Ann/020701.cha", data)
    frame, issues = read_chat_with_issues(archive)
    assert frame["file"].tolist() == ["Mini/Ann/020615.cha"]  # the good one is read ...
    (row,) = issues.itertuples()  # ... and the bad one listed, not dropped
    assert (row.file, row.kind, row.severity) == ("Mini/Ann/020701.cha", kind, "error")
    assert [i["kind"] for i in read_chat(archive).attrs["chat_issues"]] == [kind]


def test_corrupt_zip_given_directly_is_one_error(tmp_path):
    archive = tmp_path / "Mini.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        zf.writestr("Mini/Ann/020615.cha", GOOD)
    archive.write_bytes(archive.read_bytes()[:40])  # truncated download
    with pytest.raises(UserError, match="not a zip file"):
        read_chat(archive)


def test_compounds_are_one_word_and_fillers_none():
    out = clean_main_tier("thank_you mommy .")
    assert out["utterance"] == "thank you mommy ."
    assert out["utterance_clan"] == "thank_you mommy" and out["n_words"] == 2
    assert [out["utterance"][a:b] for a, b in out["compounds"]] == ["thank you"]
    um = clean_main_tier("um .")
    assert um["n_words"] == 0 and um["filler_only"] and not um["fully_unintelligible"]
    assert clean_main_tier("um cookie .")["n_words"] == 1
    assert clean_main_tier("xxx .")["fully_unintelligible"]
    part = clean_main_tier("xxx cookie .")
    assert part["unintelligible"] and not part["fully_unintelligible"] and part["n_words"] == 1


def test_chat_fillers_match_the_detectors():
    from corpora.chat import FILLERS
    from evalsuite.childes.detectors import FILLERS as DETECTOR_FILLERS

    assert set(FILLERS) == set(DETECTOR_FILLERS)


def test_every_shared_transcript_of_a_corpus_is_read_or_reported(shared_data):
    """Bates (100 transcripts): strict failures (&=0 notation) are read non-strictly and listed."""
    from corpora.chat import read_transcripts

    trs = list(read_transcripts(shared_data / "childes" / "talkbank" / "Bates.zip"))
    assert len(trs) == 100 and all(t.error is None for t in trs)
    strict_failed = {t.file for t in trs if not t.strict_ok}
    assert "Bates/Free20/vicki.cha" in strict_failed
    assert all(any(i["kind"] == "strict_parse_error" for i in t.issues) for t in trs if not t.strict_ok)
    assert {t.mor_style for t in trs} == {"ud"}


def test_media_bullets_are_not_words():
    # Providence/Naima/020424.cha: time-aligned tiers end in a NAK-delimited bullet
    out = clean_main_tier("why ? \x1514100_14876\x15")
    assert out["utterance"] == "why ?" and out["n_words"] == 1
