"""CHILDES at corpus scale without a full parse: a fast text scan of the transcripts in TalkBank zips,
the per-corpus catalogue that `evalsuite corpora info childes` prints, and the child-directed-speech
(CDS) training corpus of `evalsuite corpora build-cds`.

Why a scan and not pylangacq: pylangacq reads about 12,000 utterances/s here (Brown.zip, 185K
utterances, 15 s), and it needs every tier aligned; the CDS corpus needs only the headers (who is
who) and the main tiers of the adults, so a line scan over the zip members does it in a fraction of
the time. The CHAT markup of each main tier is cleaned by `corpora.chat.clean_main_tier` (the one
cleaner of the project: the same rules as the child utterances that childes-compare reads), and
`clean_utterance` turns its result into plain text. Nothing is dropped silently: a transcript that
is not UTF-8, is cut off (no `@End`), or has no usable headers is a row of `issues`, and a zip that
cannot be opened is one too.

Speaker roles come from the @ID headers (field 8), else from @Participants (its last word).
"""

from __future__ import annotations

import hashlib
import os
import random
import re
import zipfile
from collections import Counter, defaultdict
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

from corpora.chat import DAYS_PER_MONTH, clean_main_tier
from corpora.errors import UserError

CHILD = "CHI"
# Roles (CHAT manual, @ID field 8) whose speech counts as child-directed adult speech. A closed list on
# purpose: ambiguous roles (Relative, Visitor, Friend, Participant, Male, Female, Other, Unidentified ...)
# may be children, so they are left out and counted in the build's meta, never guessed.
ADULT_ROLES = frozenset({
    "Mother", "Father", "Grandmother", "Grandfather", "Investigator", "Adult", "Caretaker", "Babysitter",
    "Teacher", "Therapist", "Observer", "Experimenter", "Nurse", "Doctor", "Aunt", "Uncle", "Target_Adult",
})
SPLITS = ("train", "validation", "test")
_AGE_RE = re.compile(r"^(\d+);(\d{1,2})?(?:\.(\d{0,2}))?$")  # 2;03.04, 1;08. and 3; occur
# Transcript names that are recording dates or ages (020304.cha, 2-11-92.cha, 011000a.cha): the child is
# the folder, not the file.
_DATED_STEM = re.compile(r"^(\d{6}[a-z]?|\d{1,2}-\d{1,2}-\d{2,4})$")
_OLD_POS = frozenset({"v", "n", "pro", "prep", "mod", "co", "conj", "inf", "qn", "poss", "on", "neg", "wh"})
_NEW_POS = frozenset({"verb", "noun", "pron", "propn", "adp", "cconj", "sconj", "intj", "num", "punct"})
_CODE_RE = re.compile(r"\[\*[^\]]*\]")
_NON_NAMES = frozenset({"target_child", "child", "target-child", "unidentified", "boy", "girl"})


@dataclass
class Transcript:
    """What the scan reads from one .cha file."""

    corpus: str
    path: str  # path inside the zip, e.g. Brown/Adam/020304.cha
    sha256: str
    roles: dict[str, str]  # speaker code -> role
    child_name: str | None  # the CHI name in @Participants when it is a name, not a role
    age_months: float | None  # CHI age from @ID, None when absent
    age_text: str  # as written in @ID (2;03.04), "" when absent
    n_chi_utterances: int
    mor_style: str  # new-UD | old | none
    n_error_codes: int  # [* ...] codes anywhere in the transcript (as CATALOGUE.tsv counts them)
    tiers: list[tuple[str, str]] = field(default_factory=list)  # (speaker, raw main tier), non-CHI only

    @property
    def folder(self) -> str:
        return str(PurePosixPath(self.path).parent)


@dataclass(frozen=True)
class Issue:
    """One file that could not be read (or read only in part), with the reason."""

    corpus: str
    path: str
    problem: str


def parse_age(text: str) -> float | None:
    """CHAT y;mm.dd -> months (days / 30.44, as corpora.chat does); None when empty or not an age."""
    match = _AGE_RE.match(text.strip())
    if not match:
        return None
    years, months, days = (int(g) if g else 0 for g in match.groups())
    return years * 12 + months + days / DAYS_PER_MONTH


def _logical_lines(text: str) -> list[str]:
    """CHAT lines with their tab-indented continuations joined on."""
    lines: list[str] = []
    for line in text.splitlines():
        if line.startswith("\t") and lines:
            lines[-1] += " " + line.strip()
        elif line:
            lines.append(line)
    return lines


def _mor_vote(tier: str) -> int:
    """+1 per UD-style POS (verb|, noun|, pron| ...), -1 per old-style POS (v|, n|, pro| ...)."""
    vote = 0
    for item in tier.split():
        pos = item.split("|", 1)[0].split(":", 1)[0] if "|" in item else ""
        vote += (pos in _NEW_POS) - (pos in _OLD_POS)
    return vote


def scan_transcript(corpus: str, path: str, data: bytes, *, keep_tiers: bool = True) -> Transcript | Issue:
    """Read one transcript's headers and main tiers. An Issue (never an exception) for unreadable data."""
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as err:
        return Issue(corpus, path, f"not UTF-8 (byte {err.start}: {data[err.start:err.start + 1]!r})")
    lines = _logical_lines(text.lstrip("\ufeff"))
    codes = len(_CODE_RE.findall(text))
    if not lines or lines[-1].strip() != "@End":
        return Issue(corpus, path, "no @End line: the transcript is cut off")
    roles: dict[str, str] = {}
    child_name = None
    age, age_text, age_from = None, "", ""
    chi, mor_votes, mor_lines = 0, 0, 0
    tiers: list[tuple[str, str]] = []
    for line in lines:
        head, _, rest = line.partition(":")
        if head == "@Participants":
            for part in rest.split(","):
                words = part.split()
                if len(words) >= 2:
                    roles.setdefault(words[0], words[-1])
                    if words[0] == CHILD and len(words) == 3 and words[1].lower() not in _NON_NAMES:
                        child_name = words[1]
        elif head == "@ID":
            fields = rest.strip().split("|")
            if len(fields) >= 8 and fields[2]:
                roles[fields[2]] = fields[7] or roles.get(fields[2], "")
                # the child's age: CHI's, else the first Target_Child's (Gathercole codes children LUK, GIL)
                if fields[3] and (fields[2] == CHILD or (fields[7] == "Target_Child" and age_from != CHILD
                                                         and age is None)):
                    age, age_text, age_from = parse_age(fields[3]), fields[3], fields[2]
        elif head.startswith("*"):
            speaker = head[1:]
            if speaker == CHILD:
                chi += 1
            elif keep_tiers:
                tiers.append((speaker, rest.strip()))
        elif head == "%mor":
            mor_lines += 1
            mor_votes += _mor_vote(rest)
    if not roles:
        return Issue(corpus, path, "no @Participants/@ID headers")
    style = "none" if mor_lines == 0 else ("old" if mor_votes < 0 else "new-UD")
    return Transcript(corpus=corpus, path=path, sha256=hashlib.sha256(data).hexdigest(), roles=roles,
                      child_name=child_name, age_months=age, age_text=age_text if age is not None else "", n_chi_utterances=chi, mor_style=style,
                      n_error_codes=codes, tiers=tiers)


def iter_zip(zip_path: Path, *, keep_tiers: bool = True) -> Iterator[Transcript | Issue]:
    """Scan every .cha member of one TalkBank zip (corpus = the zip's name); a bad zip is one Issue."""
    if zip_path.suffix.lower() == ".cha":  # one transcript given directly: corpus = its folder
        yield scan_transcript(zip_path.parent.name, f"{zip_path.parent.name}/{zip_path.name}",
                              zip_path.read_bytes(), keep_tiers=keep_tiers)
        return
    corpus = zip_path.stem
    try:
        with zipfile.ZipFile(zip_path) as archive:
            members = sorted(n for n in archive.namelist() if n.lower().endswith(".cha"))
            if not members:
                yield Issue(corpus, zip_path.name, "no .cha files in the zip")
            for name in members:
                try:
                    data = archive.read(name)
                except (zipfile.BadZipFile, OSError) as err:  # a damaged member: report it, keep going
                    yield Issue(corpus, name, f"cannot read from the zip ({err})")
                    continue
                yield scan_transcript(corpus, name, data, keep_tiers=keep_tiers)
    except (zipfile.BadZipFile, OSError) as err:
        yield Issue(corpus, zip_path.name, f"not a readable zip ({err})")


def childes_zips(path: str | os.PathLike) -> list[Path]:
    """The zips of a CHILDES collection folder, or [path] for one zip or one .cha transcript;
    UserError when there are none."""
    root = Path(path).expanduser()
    if root.is_file():
        if root.suffix.lower() not in (".zip", ".cha"):
            raise UserError(f"expected a TalkBank .zip, a folder of them, or a .cha transcript: {root}")
        return [root]
    if not root.is_dir():
        raise UserError(f"CHILDES path not found: {root}")
    zips = sorted(root.glob("*.zip"))
    if not zips:
        raise UserError(f"no .zip corpora in {root}")
    return zips


def scan_collection(
    zips: Iterable[Path], *, keep_tiers: bool = True
) -> tuple[list[Transcript], list[Issue]]:
    transcripts: list[Transcript] = []
    issues: list[Issue] = []
    for zip_path in zips:
        for item in iter_zip(zip_path, keep_tiers=keep_tiers):
            (transcripts if isinstance(item, Transcript) else issues).append(item)
    return transcripts, issues


# --- the catalogue (`corpora info childes`) ---------------------------------------------------


def _full_age(text: str) -> str:
    """1;08. -> 1;08.00, 3;4 -> 3;04.00 (CATALOGUE.tsv's spelling)."""
    match = _AGE_RE.match(text.strip())
    assert match is not None  # only called for ages that parsed
    years, months, days = (int(g) if g else 0 for g in match.groups())
    return f"{years};{months:02d}.{days:02d}"


def catalogue(transcripts: list[Transcript], issues: list[Issue], *, by: str = "corpus"):
    """Per corpus (by="corpus") or per folder (by="dir", the rows of CATALOGUE.tsv): children,
    transcripts, CHI utterances, CHI age range, transcripts without an age, with %mor, %mor style(s),
    `[* ...]` codes and unreadable files. A pandas DataFrame."""
    import pandas as pd

    groups: dict[str, list[Transcript]] = defaultdict(list)
    for t in transcripts:
        groups[t.corpus if by == "corpus" else t.folder].append(t)
    bad = Counter(i.corpus if by == "corpus" else str(PurePosixPath(i.path).parent) for i in issues)
    children = child_ids(transcripts)
    rows = []
    for key in sorted(set(groups) | set(bad)):
        group = groups.get(key, [])
        ages = sorted((t.age_months, _full_age(t.age_text)) for t in group if t.age_months is not None)
        styles = Counter(t.mor_style for t in group if t.mor_style != "none")
        rows.append({
            by: key,
            "children": len({children[t.path] for t in group}),
            "transcripts": len(group),
            "chi_utterances": sum(t.n_chi_utterances for t in group),
            "age_min": ages[0][1] if ages else "n/a",
            "age_max": ages[-1][1] if ages else "n/a",
            "files_no_age": sum(t.age_months is None for t in group),
            "files_with_mor": sum(t.mor_style != "none" for t in group),
            "mor_style": "+".join(sorted(styles)) if styles else "none",
            "error_codes": sum(t.n_error_codes for t in group),
            "unreadable": bad.get(key, 0),
        })
    return pd.DataFrame(rows)


# --- who is who: children and split groups ----------------------------------------------------


def _stem_key(t: Transcript) -> str | None:
    """'Bates:amy' for Bates/Free20/amy.cha and Bates/Free28/amy.cha; None for dated file names."""
    stem = PurePosixPath(t.path).stem.lower()
    if _DATED_STEM.match(stem):
        return None
    return f"{t.corpus}:{re.sub(r'[0-9]+[a-z]?$', '', stem) or stem}"


def _identity_keys(t: Transcript) -> list[str]:
    """Every hint of which child a transcript belongs to. Two transcripts that share any hint are put
    in the same split group, so no child can end up in two splits under any of these readings:
    each folder below the corpus (Brown/Adam, Demetras2/Jimmy and Demetras2/Jimmy/mother), the CHI
    name in @Participants, the file's own folder when the file is named by date or age
    (Braunwald/020424.cha: a diary corpus), else the file name without its trailing number
    (Bates/Free20/amy.cha and Bates/Free28/amy.cha; Edinburgh/alistair1507.cha -> alistair)."""
    parts = PurePosixPath(t.path).parts[:-1]
    keys = [f"folder:{'/'.join(parts[:i])}" for i in range(2, len(parts) + 1)]
    if t.child_name:
        keys.append(f"name:{t.corpus}:{t.child_name.lower()}")
    stem = _stem_key(t)
    keys.append(f"folder:{t.folder}" if stem is None else f"stem:{stem}")
    return keys


def child_ids(transcripts: list[Transcript]) -> dict[str, str]:
    """transcript path -> child id (an estimate, for counts and the manifest): the CHI name when
    @Participants gives one, else the folder for files named by date or age, else the corpus and the
    file name without its trailing number. Splits use the coarser `split_groups`."""
    ids: dict[str, str] = {}
    for t in transcripts:
        stem = _stem_key(t)
        if t.child_name:
            ids[t.path] = f"{t.corpus}/{t.child_name}"
        elif stem is None:
            ids[t.path] = t.folder
        else:
            ids[t.path] = f"{t.corpus}/{stem.split(':', 1)[1]}"
    return ids


def split_groups(transcripts: list[Transcript]) -> dict[str, str]:
    """transcript path -> split group (union of every transcript sharing an identity key)."""
    parent: dict[str, str] = {}

    def find(x: str) -> str:
        while parent.setdefault(x, x) != x:
            parent[x] = parent[parent[x]]
            x = parent[x]
        return x

    for t in transcripts:
        keys = _identity_keys(t)
        for key in keys[1:]:
            a, b = find(keys[0]), find(key)
            if a != b:
                parent[max(a, b)] = min(a, b)
    return {t.path: find(_identity_keys(t)[0]) for t in transcripts}


def assign_splits(group_words: dict[str, int], seed: int, fractions: tuple[float, float] = (0.1, 0.1)) -> dict[str, str]:
    """Whole groups to train / validation / test: in a seeded shuffled order, each group goes to the
    split furthest below its share of the words (validation, test = `fractions`, train the rest).
    Whole groups only, so a child is in exactly one split."""
    order = sorted(group_words)
    random.Random(seed).shuffle(order)
    total = sum(group_words.values())
    targets = {"train": (1 - sum(fractions)) * total, "validation": fractions[0] * total, "test": fractions[1] * total}
    filled = dict.fromkeys(SPLITS, 0)
    result: dict[str, str] = {}
    for group in order:
        split = max((s for s in SPLITS if targets[s] > 0), key=lambda s: targets[s] - filled[s])
        filled[split] += group_words[group]
        result[group] = split
    return result


# --- the child-directed-speech corpus ----------------------------------------------------------


_BULLET_RE = re.compile("\x15[^\x15]*\x15")  # media time marks, \x151234_5678\x15
_UNINTELLIGIBLE_COMMA = re.compile(r"\b(xxx|yyy|www),")


def clean_utterance(raw: str) -> str:
    """A CHAT main tier -> plain text: media time marks removed (pylangacq removes them before
    corpora.chat sees a tier; this scan reads the raw line), then `corpora.chat.clean_main_tier`
    (the project's one CHAT cleaner), with the terminal mark attached ("you want it ?" -> "you want it?")."""
    raw = _UNINTELLIGIBLE_COMMA.sub(r"\1 ,", _BULLET_RE.sub(" ", raw))  # "xxx," is xxx then a comma
    text = clean_main_tier(raw)["utterance"]
    return re.sub(r" ([.?!])$", r"\1", text)


@dataclass
class CdsDocument:
    corpus: str
    path: str
    sha256: str
    child: str
    group: str
    age_months: float | None
    speakers: dict[str, str]  # code -> role of the adults whose utterances are in the document
    utterances: list[str]

    @property
    def text(self) -> str:
        return "\n".join(self.utterances)

    @property
    def words(self) -> int:
        return sum(len(u.split()) for u in self.utterances)


@dataclass
class CdsBuild:
    documents: list[CdsDocument]
    splits: dict[str, str]  # document path -> split
    issues: list[Issue]
    skipped_roles: Counter  # role -> utterances left out (not in ADULT_ROLES, not CHI)
    empty_transcripts: list[str]  # transcripts read fine but with no adult utterance


def build_cds(zips: Iterable[Path], seed: int = 0, fractions: tuple[float, float] = (0.1, 0.1)) -> CdsBuild:
    """Adult utterances of every transcript, cleaned to plain text, one document per transcript,
    split train/validation/test by child (see `split_groups`) with `seed`."""
    transcripts, issues = scan_collection(zips)
    children = child_ids(transcripts)
    groups = split_groups(transcripts)
    documents: list[CdsDocument] = []
    skipped: Counter = Counter()
    empty: list[str] = []
    for t in transcripts:
        utterances: list[str] = []
        speakers: dict[str, str] = {}
        for speaker, raw in t.tiers:
            role = t.roles.get(speaker, "")
            if role not in ADULT_ROLES:
                skipped[role or f"(no role for {speaker})"] += 1
                continue
            text = clean_utterance(raw)
            if text:
                utterances.append(text)
                speakers[speaker] = role
        if not utterances:
            empty.append(t.path)
            continue
        documents.append(CdsDocument(t.corpus, t.path, t.sha256, children[t.path], groups[t.path],
                                     t.age_months, speakers, utterances))
    group_words: Counter = Counter()
    for doc in documents:
        group_words[doc.group] += doc.words
    by_group = assign_splits(dict(group_words), seed, fractions)
    splits = {doc.path: by_group[doc.group] for doc in documents}
    return CdsBuild(documents, splits, issues, skipped, empty)


# --- cached catalogue of a fetched collection --------------------------------------------------

CATALOGUE_VERSION = "1"  # bump when the scan or the catalogue columns change
CATALOGUE_CACHE = "scan_catalogue.csv"


def cached_catalogue(folder: Path, by: str = "corpus"):
    """`catalogue` of the zips in a fetched collection folder, computed once and kept beside them
    (`scan_catalogue[-dir].csv` + a key file naming the zips' recorded sha256 and this code's version)."""
    import pandas as pd

    from corpora.fetch import read_sidecar

    zips = childes_zips(folder)
    key = f"v{CATALOGUE_VERSION} by={by}\n" + "\n".join(
        f"{z.name} {read_sidecar(z) or z.stat().st_size}" for z in zips) + "\n"
    name = CATALOGUE_CACHE if by == "corpus" else CATALOGUE_CACHE.replace(".csv", f"-{by}.csv")
    table, stamp = folder / name, folder / (name + ".key")
    if table.is_file() and stamp.is_file() and stamp.read_text(encoding="utf-8") == key:
        return pd.read_csv(table, keep_default_na=False), True
    transcripts, issues = scan_collection(zips, keep_tiers=False)
    frame = catalogue(transcripts, issues, by=by)
    tmp = table.with_name(table.name + ".tmp")
    frame.to_csv(tmp, index=False)
    os.replace(tmp, table)
    stamp.write_text(key, encoding="utf-8")
    return frame, False


MANIFEST_COLUMNS = {
    "corpus": "CHILDES corpus (the zip's name)",
    "file": "transcript path inside the zip",
    "sha256": "sha256 of the transcript's bytes",
    "child": "estimated child id (corpora.cds.child_ids): CHI name, child folder, or file name",
    "split_group": "union of every transcript sharing a child hint (corpora.cds.split_groups): the unit of the split",
    "split": "train | validation | test (whole split groups, seeded shuffle, filled to the word shares)",
    "child_age_months": "target child's age at the recording from @ID (y*12 + m + d/30.44); empty when absent",
    "speaker_roles": "adult speakers kept, CODE=Role;... (roles from @ID, else @Participants)",
    "utterances": "adult utterances in the document (non-empty after cleaning)",
    "words": "whitespace-separated words of the document",
}


def write_cds(build: CdsBuild, out_dir: Path) -> dict:
    """Write `<out>/{train,validation,test}.jsonl` (one JSON object per transcript: text + who and
    when), `manifest.csv`, `cds_issues.csv` (every transcript left out, with why); returns counts."""
    import json

    import pandas as pd

    out_dir.mkdir(parents=True, exist_ok=True)
    handles = {s: (out_dir / f"{s}.jsonl.tmp").open("w", encoding="utf-8") for s in SPLITS}
    rows = []
    try:
        for doc in build.documents:
            split = build.splits[doc.path]
            record = {"text": doc.text, "corpus": doc.corpus, "file": doc.path, "child": doc.child,
                      "child_age_months": doc.age_months, "split": split}
            handles[split].write(json.dumps(record, ensure_ascii=False) + "\n")
            rows.append({"corpus": doc.corpus, "file": doc.path, "sha256": doc.sha256, "child": doc.child,
                         "split_group": doc.group, "split": split,
                         "child_age_months": None if doc.age_months is None else round(doc.age_months, 3),
                         "speaker_roles": ";".join(f"{c}={r}" for c, r in sorted(doc.speakers.items())),
                         "utterances": len(doc.utterances), "words": doc.words})
    finally:
        for handle in handles.values():
            handle.close()
    for split in SPLITS:
        os.replace(out_dir / f"{split}.jsonl.tmp", out_dir / f"{split}.jsonl")
    manifest = pd.DataFrame(rows, columns=list(MANIFEST_COLUMNS))
    manifest.to_csv(out_dir / "manifest.csv", index=False)
    issues = [{"corpus": i.corpus, "file": i.path, "problem": i.problem} for i in build.issues]
    issues += [{"corpus": p.split("/", 1)[0], "file": p, "problem": "no utterance of an adult role"}
               for p in build.empty_transcripts]
    pd.DataFrame(issues, columns=["corpus", "file", "problem"]).to_csv(out_dir / "cds_issues.csv", index=False)
    per_split = manifest.groupby("split").agg(documents=("file", "size"), words=("words", "sum"),
                                              utterances=("utterances", "sum"), children=("child", "nunique"),
                                              groups=("split_group", "nunique"))
    return {
        "splits": {s: {k: int(v) for k, v in per_split.loc[s].items()} if s in per_split.index else
                   {"documents": 0, "words": 0, "utterances": 0, "children": 0, "groups": 0} for s in SPLITS},
        "documents": len(manifest),
        "words": int(manifest["words"].sum()),
        "issues": len(build.issues),
        "transcripts_without_adult_speech": len(build.empty_transcripts),
        "skipped_roles": dict(build.skipped_roles.most_common()),
        "largest_group_word_share": float(manifest.groupby("split_group")["words"].sum().max()
                                          / max(1, manifest["words"].sum())) if len(manifest) else 0.0,
    }
