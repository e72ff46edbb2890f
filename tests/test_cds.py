"""Real-register sources (tinystories-subset, childes), the CHILDES scan/catalogue and build-cds.

Small slices of the shared data only: a few small zips of the 51, never the whole collection.
"""

from __future__ import annotations

import csv
import io
import json
import zipfile
from dataclasses import replace
from pathlib import Path

import pandas as pd
import pytest

import corpora.sources as sources_module
from corpora.cds import (
    Issue,
    Transcript,
    build_cds,
    catalogue,
    clean_utterance,
    scan_collection,
    scan_transcript,
    split_groups,
)
from corpora.errors import UserError
from corpora.fetch import fetch
from corpora.sources import load_registry
from evalsuite.cli import main

SMALL = ("Bates", "Bliss", "McMillan")  # 100 + 7 + 3 transcripts, 0.6 MB


def talkbank(shared_data: Path) -> Path:
    return shared_data / "childes" / "talkbank"


def small_childes(registry_source, names=SMALL):
    """The registry's childes collection cut to a few zips (same URL, mirror and provenance)."""
    keep = [f for f in registry_source.files if f.endswith(".tsv") or Path(f).stem in names]
    return replace(registry_source, files=tuple(keep))


def run_cli(capsys, *argv: str) -> tuple[int, str, str]:
    with pytest.raises(SystemExit) as exited:
        main(list(argv))
    out, err = capsys.readouterr()
    return exited.value.code, out, err


@pytest.fixture(autouse=True)
def wide_terminal(monkeypatch):
    monkeypatch.setenv("COLUMNS", "250")


# --- registry ----------------------------------------------------------------------------------


def test_registry_lists_both_real_register_sources(shared_data):
    registry = load_registry()
    stories, childes = registry["tinystories-subset"], registry["childes"]
    assert stories.url is None and stories.mirror_subdir == "tinystories"
    assert set(stories.files) == {"tinystories_subset.jsonl", "tinystories_valid_subset.jsonl", "PROVENANCE.tsv"}
    zips = sorted(Path(f).name for f in childes.files if f.endswith(".zip"))
    assert zips == sorted(p.name for p in talkbank(shared_data).glob("*.zip"))  # every shared zip, no other
    assert childes.provenance == "PROVENANCE.tsv" and childes.url.startswith("https://childes.talkbank.org/")


def test_url_null_needs_a_mirror_subdir(tmp_path):
    registry = tmp_path / "sources.yaml"
    registry.write_text("sources:\n  - {name: x, kind: stories, url: null, filename: x.txt, license: L, "
                        "citation: C, sha256: null, size: null}\n")
    with pytest.raises(UserError, match="mirror_subdir"):
        load_registry(registry)


# --- fetch through the mirror path -------------------------------------------------------------


def test_tinystories_subset_is_fetched_from_the_reference_data(shared_data, tmp_path, monkeypatch):
    monkeypatch.setenv("EVALSUITE_DATA", str(shared_data))
    monkeypatch.delenv("EVALSUITE_MIRROR", raising=False)
    folder = fetch(load_registry()["tinystories-subset"], cache_dir=tmp_path, progress=False)
    assert folder == tmp_path / "tinystories-subset"
    copied = folder / "tinystories_subset.jsonl"
    assert copied.read_bytes() == (shared_data / "tinystories" / copied.name).read_bytes()
    assert (folder / "tinystories_subset.jsonl.sha256").is_file()  # verified like any download


def test_without_reference_data_the_subset_says_where_to_find_it(tmp_path, monkeypatch):
    monkeypatch.delenv("EVALSUITE_DATA", raising=False)
    monkeypatch.delenv("EVALSUITE_MIRROR", raising=False)
    monkeypatch.chdir(tmp_path)
    with pytest.raises(UserError, match="EVALSUITE_DATA"):
        fetch(load_registry()["tinystories-subset"], cache_dir=tmp_path / "cache", progress=False)


def test_childes_zips_are_checked_against_provenance(shared_data, tmp_path):
    source = small_childes(load_registry()["childes"])
    folder = fetch(source, cache_dir=tmp_path / "cache", mirror=str(talkbank(shared_data)), progress=False)
    assert sorted(p.name for p in folder.glob("*.zip")) == sorted(f"{n}.zip" for n in SMALL)
    assert (folder / ".provenance-ok").is_file()

    # a mirror whose Bliss.zip holds one altered transcript is refused, naming that transcript
    mirror = tmp_path / "mirror"
    mirror.mkdir()
    for name in ("CATALOGUE.tsv", "PROVENANCE.tsv", "Bates.zip", "McMillan.zip"):
        (mirror / name).write_bytes((talkbank(shared_data) / name).read_bytes())
    with zipfile.ZipFile(talkbank(shared_data) / "Bliss.zip") as src, \
            zipfile.ZipFile(mirror / "Bliss.zip", "w") as dst:
        edited = False
        for info in src.infolist():
            data = src.read(info)
            if info.filename.endswith(".cha") and not edited:
                data, edited = data.replace(b"@End", b"@Comment:\tedited\n@End"), True
            dst.writestr(info, data)
    with pytest.raises(UserError, match=r"Bliss/.*\.cha has sha256"):
        fetch(source, cache_dir=tmp_path / "cache2", mirror=str(mirror), progress=False)


# --- the scan and the catalogue -----------------------------------------------------------------


def test_catalogue_matches_catalogue_tsv_for_a_few_corpora(shared_data):
    zips = [talkbank(shared_data) / f"{n}.zip" for n in SMALL]
    transcripts, issues = scan_collection(zips, keep_tiers=False)
    assert issues == []
    mine = catalogue(transcripts, issues, by="dir").set_index("dir")
    ref = pd.read_csv(talkbank(shared_data) / "CATALOGUE.tsv", sep="\t").set_index("dir")
    ref = ref[ref.index.str.split("/").str[0].isin(SMALL)]
    assert sorted(mine.index) == sorted(ref.index)
    for folder, row in ref.iterrows():
        got = mine.loc[folder]
        assert got["transcripts"] == row["files"], folder
        assert got["chi_utterances"] == row["CHI_utts"], folder
        assert got["files_with_mor"] == row["files_with_mor"] and got["mor_style"] == row["mor_style"], folder
        assert f"{got['age_min']}-{got['age_max']}" == row["age_range_CHI"], folder


def test_old_and_new_mor_styles_are_told_apart(shared_data):
    with zipfile.ZipFile(talkbank(shared_data) / "Providence.zip") as archive:
        name = next(n for n in archive.namelist() if n.startswith("Providence/Naima/") and n.endswith(".cha"))
        old = scan_transcript("Providence", name, archive.read(name), keep_tiers=False)
    with zipfile.ZipFile(talkbank(shared_data) / "Bliss.zip") as archive:
        name = next(n for n in archive.namelist() if n.endswith(".cha"))
        new = scan_transcript("Bliss", name, archive.read(name), keep_tiers=False)
    assert isinstance(old, Transcript) and old.mor_style == "old"
    assert isinstance(new, Transcript) and new.mor_style == "new-UD"


GOOD = ("@UTF8\n@Begin\n@Participants:\tCHI Target_Child, MOT Mother\n"
        "@ID:\teng|T|CHI|2;06.|female|||Target_Child|||\n@ID:\teng|T|MOT|||||Mother|||\n"
        "*MOT:\tdo you want the ball@o ?\n*CHI:\tball [* m] .\n*MOT:\t&-um here it\n\tis .\n@End\n")


def test_bad_transcripts_are_issues_not_exceptions():
    good = scan_transcript("T", "T/a.cha", GOOD.encode())
    assert isinstance(good, Transcript) and good.age_months == 30 and good.n_chi_utterances == 1
    assert good.roles == {"CHI": "Target_Child", "MOT": "Mother"} and good.n_error_codes == 1
    assert good.tiers == [("MOT", "do you want the ball@o ?"), ("MOT", "&-um here it is .")]
    cut = scan_transcript("T", "T/b.cha", GOOD[:-20].encode())
    latin = scan_transcript("T", "T/c.cha", GOOD.replace("ball", "bäll").encode("latin-1"))
    assert isinstance(cut, Issue) and "@End" in cut.problem
    assert isinstance(latin, Issue) and "not UTF-8" in latin.problem


def test_corrupt_zip_is_one_listed_issue(tmp_path):
    bad = tmp_path / "Broken.zip"
    bad.write_bytes(b"PK\x03\x04 this is not a zip")
    transcripts, issues = scan_collection([bad])
    assert transcripts == [] and len(issues) == 1 and "not a readable zip" in issues[0].problem


def test_clean_utterance_is_plain_text():
    assert clean_utterance("&-um <I want> [/] I want the ball@o [: balls] +...") == "I want I want the ball."
    assert clean_utterance("xxx .") == "" and clean_utterance("xxx, you know +...") == "you know."
    assert clean_utterance("do you want it ?") == "do you want it?"
    assert clean_utterance("look at the doggie . \x15123_4567\x15") == "look at the doggie."  # media bullet


# --- build-cds ---------------------------------------------------------------------------------


def _zip(path: Path, files: dict[str, str | bytes]) -> Path:
    with zipfile.ZipFile(path, "w") as archive:
        for name, text in files.items():
            archive.writestr(name, text.encode() if isinstance(text, str) else text)
    return path


def test_split_groups_keep_each_child_in_one_group():
    def t(path, name=None):
        return Transcript("C", path, "", {"CHI": "Target_Child"}, name, None, "", 0, "none", 0)

    items = [t("C/Free20/amy.cha"), t("C/Free28/amy.cha"), t("C/Kid/mother/020101.cha"),
             t("C/Kid/father/020102.cha"), t("D/alistair1507.cha"), t("D/alistair1603.cha"), t("D/bea1507.cha")]
    groups = split_groups(items)
    assert groups["C/Free20/amy.cha"] == groups["C/Free28/amy.cha"]  # same child across folders
    assert groups["C/Kid/mother/020101.cha"] == groups["C/Kid/father/020102.cha"]  # one child, two parents
    assert groups["D/alistair1507.cha"] == groups["D/alistair1603.cha"] != groups["D/bea1507.cha"]


def test_build_cds_cli_writes_splits_by_child_and_lists_bad_files(shared_data, tmp_path, capsys):
    extra = _zip(tmp_path / "Extra.zip", {
        "Extra/Ann/020101.cha": GOOD, "Extra/Ann/020201.cha": GOOD.replace("ball", "cup"),
        "Extra/Bob/030101.cha": GOOD[:-20], "Extra/Cy/030101.cha": GOOD.encode("utf-16"),
    })
    out = tmp_path / "cds"
    code, stdout, err = run_cli(capsys, "corpora", "build-cds", "-o", str(out), "--seed", "3",
                                "--childes", str(talkbank(shared_data) / "Bates.zip"),
                                "--childes", str(talkbank(shared_data) / "Bliss.zip"), "--childes", str(extra))
    assert code == 0, err
    manifest = pd.read_csv(out / "manifest.csv")
    assert set(manifest.columns) >= {"corpus", "child", "child_age_months", "speaker_roles", "utterances", "words"}
    assert manifest.groupby("split_group")["split"].nunique().max() == 1
    assert manifest.groupby("child")["split"].nunique().max() == 1  # no child in two splits
    assert set(manifest["split"]) <= {"train", "validation", "test"}
    assert not manifest["speaker_roles"].str.contains("CHI=").any()
    issues = pd.read_csv(out / "cds_issues.csv")
    unreadable = issues[issues["problem"] != "no utterance of an adult role"]
    assert set(unreadable["file"]) == {"Extra/Bob/030101.cha", "Extra/Cy/030101.cha"}  # listed, not dropped
    with zipfile.ZipFile(talkbank(shared_data) / "Bates.zip") as a, zipfile.ZipFile(talkbank(shared_data) / "Bliss.zip") as b:
        expected = sum(n.endswith(".cha") for n in a.namelist() + b.namelist()) + 2
    assert len(manifest) + int((issues["problem"] == "no utterance of an adult role").sum()) == expected
    docs = [json.loads(line) for s in ("train", "validation", "test")
            for line in (out / f"{s}.jsonl").read_text(encoding="utf-8").splitlines()]
    assert len(docs) == len(manifest)
    ann = next(d for d in docs if d["file"] == "Extra/Ann/020101.cha")
    assert ann["text"] == "do you want the ball?\nhere it is."  # the mother only; markup cleaned
    assert sum(len(d["text"].split()) for d in docs) == manifest["words"].sum()
    meta = json.loads((out / "meta.json").read_text())
    assert meta["seeds"] == {"split": 3} and meta["summary"]["documents"] == len(manifest)
    from corpora.tokenizers import load_tokenizer

    tok = load_tokenizer(out / "tokenizer-bpe10000")  # saved with the corpus, trained on train only
    assert tok.identity == meta["tokenizer"]["identity"]
    train_chars = sum(len(json.loads(line)["text"]) for line in (out / "train.jsonl").read_text().splitlines())
    assert tok.extra_meta["corpus"]["n_chars"] == train_chars
    # same seed -> same split; the tool refuses to write into a folder it did not create
    again = build_cds([talkbank(shared_data) / "Bates.zip", talkbank(shared_data) / "Bliss.zip", extra], seed=3)
    assert {p: s for p, s in again.splits.items()} == dict(zip(manifest["file"], manifest["split"], strict=True))
    other = tmp_path / "mine"
    other.mkdir()
    (other / "notes.txt").write_text("keep")
    code, _, err = run_cli(capsys, "corpora", "build-cds", "-o", str(other), "--childes", str(extra),
                           "--vocab-size", "0")
    assert code == 2 and err.startswith("error: ") and (other / "notes.txt").read_text() == "keep"


def test_build_cds_on_a_corrupt_zip_is_one_error_line(tmp_path, capsys):
    bad = tmp_path / "Broken.zip"
    bad.write_bytes(b"not a zip at all")
    code, _, err = run_cli(capsys, "corpora", "build-cds", "-o", str(tmp_path / "o"), "--childes", str(bad))
    assert code == 2 and len(err.strip().splitlines()) == 1 and "not a readable zip" in err
    assert "Traceback" not in err


# --- corpora info ------------------------------------------------------------------------------


def test_info_tinystories_subset_prints_documents_and_words(shared_data, monkeypatch, capsys):
    monkeypatch.setenv("EVALSUITE_DATA", str(shared_data))
    code, out, err = run_cli(capsys, "corpora", "info", "tinystories-subset")
    assert code == 0, err
    assert "6,499" in out and "1,072,116" in out  # README: 6,499 stories, 1.07M words
    rows = [json.loads(line) for line in (shared_data / "tinystories" / "tinystories_valid_subset.jsonl")
            .read_text(encoding="utf-8").splitlines() if line.strip()]
    assert f"{sum(len(r['text'].split()) for r in rows):,}" in out


def test_info_childes_prints_each_corpus(shared_data, monkeypatch, capsys):
    small = small_childes(load_registry()["childes"])
    registry = {**load_registry(), "childes": small}
    monkeypatch.setattr(sources_module, "load_registry", lambda path=None: registry)
    monkeypatch.setenv("EVALSUITE_DATA", str(shared_data))
    code, out, err = run_cli(capsys, "corpora", "info", "childes")
    assert code == 0, err
    ref = list(csv.DictReader(io.StringIO((talkbank(shared_data) / "CATALOGUE.tsv").read_text()), delimiter="\t"))
    bates = sum(int(r["CHI_utts"]) for r in ref if r["dir"].startswith("Bates/"))
    line = next(line for line in out.splitlines() if "Bates" in line)
    assert f"{bates:,}" in line and "new-UD" in line and "1;08.00" in line
    assert "text scan" in out


def test_fetch_command_on_a_collection(shared_data, monkeypatch, tmp_path, capsys):
    monkeypatch.setenv("EVALSUITE_DATA", str(shared_data))
    code, out, err = run_cli(capsys, "corpora", "fetch", "tinystories-subset", "--cache-dir", str(tmp_path),
                             "--no-progress")
    assert code == 0, err
    assert "3 files" in out and (tmp_path / "tinystories-subset" / "tinystories_valid_subset.jsonl").is_file()


@pytest.mark.parametrize(("text", "problem"), [
    (GOOD[:-20].encode(), "cut off"),
    (GOOD.replace("ball", "bäll").encode("latin-1"), "not UTF-8"),
])
def test_build_cds_on_one_bad_transcript_is_one_error_line(tmp_path, capsys, text, problem):
    bad = tmp_path / "Kid" / "020101.cha"
    bad.parent.mkdir()
    bad.write_bytes(text)
    code, _, err = run_cli(capsys, "corpora", "build-cds", "-o", str(tmp_path / "o"), "--childes", str(bad),
                           "--vocab-size", "0")
    assert code == 2 and len(err.strip().splitlines()) == 1 and problem in err and err.startswith("error: ")


def test_build_cds_reads_one_good_transcript_given_directly(tmp_path, capsys):
    good = tmp_path / "Kid" / "020101.cha"
    good.parent.mkdir()
    good.write_text(GOOD, encoding="utf-8")
    code, _, err = run_cli(capsys, "corpora", "build-cds", "-o", str(tmp_path / "o"), "--childes", str(good),
                           "--vocab-size", "0")
    assert code == 0, err
    manifest = pd.read_csv(tmp_path / "o" / "manifest.csv")
    assert list(manifest["file"]) == ["Kid/020101.cha"] and list(manifest["speaker_roles"]) == ["MOT=Mother"]
