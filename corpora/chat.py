"""Read CHAT (.cha) transcripts (CHILDES / TalkBank) into a tidy table of utterances.

pylangacq does the file handling (a .cha file, a directory searched recursively, or a TalkBank
.zip), the headers (@ID ages, participants) and the %mor alignment. What it does not give us is
the *produced* form of each word next to the transcriber's annotations, which is what a detector
must see to be compared with the human error codes: `throwed [: threw] [* +ed]` has to reach the
detector as "throwed", and the code `+ed` has to be remembered at that word's character span.
So the main tier is cleaned here, by the rules of the CHAT manual, into three strings:

- `utterance`: the words as produced, with phonological variants normalised to their target
  (`dat [: that]` -> "that") but morphological deviations kept (`goed [: went]` -> "goed"; the rule
  is purely string-based and never looks at the `[* ...]` codes, see `_keep_produced`). Exact
  repetitions marked `[/]` are kept (they are what the repetition detector measures); retracings
  with correction (`[//]`, `[///]`, `[/-]`, `[/?]`) are removed, as are fillers (`&-uh`), fragments
  (`&+fr`), events (`&=laughs`), unintelligible words (xxx, yyy, www) and pauses. Incomplete
  words are completed (`goin(g)` -> "going"), special-form markers dropped (`iss@c` -> "iss").
  A terminal mark (. ? !) from the CHAT terminator ends the string.
- `utterance_clan`: the same words with all retraced material (also `[/]`) removed: the word
  set CLAN's MLU counts; a `_` compound stays one word (thank_you). `n_words` counts these words
  less filled pauses (um, uh): compounds are one word, and a filler-only utterance has 0 words
  (`filler_only`), so it is not in an MLU denominator. `compounds` holds the [start, end] character
  span of each compound in `utterance` (where it reads "thank you") for text-side word counts.
- `target`: the transcriber's target words (`[: ...]` applied), retracings removed: what %mor
  analyses.

`annotations` lists, per utterance, the human codes at word level as dicts
`{start, end, word, target, code}` whose `start`/`end` are character offsets into `utterance`:
`[* code]` error codes (code as written, e.g. "+ed"; a bare `[*]` gives "*"), "[/]" for an
exact repetition, and "0word" for a word the transcriber marked as omitted (`0is`).
"""

from __future__ import annotations

import os
import re
import warnings
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from corpora.errors import UserError

CHILD = "CHI"

COLUMNS = [
    "file",
    "corpus",
    "child",
    "speaker",
    "age_months",
    "utt_index",
    "utterance",
    "utterance_clan",
    "target",
    "raw",
    "mor",
    "mor_words",
    "error_codes",
    "annotations",
    "postcodes",
    "n_words",
    "unintelligible",
    "mor_aligned",
    "compounds",
    "filler_only",
    "fully_unintelligible",
]
# Filled pauses written as words (um, uh): not words for MLU. The same set as
# evalsuite.childes.detectors.FILLERS (tests/test_chat.py checks they agree).
FILLERS = frozenset({"um", "uh", "er", "erm", "hm", "hmm", "mm", "ah"})

# Tokens of a CHAT main tier: a bracketed code (may contain spaces), a group bracket, or a word.
_TOKEN_RE = re.compile(r"\[[^\]]*\]|[<>]|[^\s<>\[\]]+")
_PAUSE_RE = re.compile(r"^\((\.+|[\d.:]+)\)$")
# Media bullets: time alignment to the recording, `\x15 14100_14876 \x15` (NAK-delimited). Not words.
_BULLET_RE = re.compile("\x15[^\x15]*\x15")
_TERMINATORS = {
    ".": ".", "?": "?", "!": "!", "+...": ".", "+..?": "?", "+/.": ".", "+/?": "?", "+//.": ".",
    "+//?": "?", "+!?": "?", "+\"/.": ".", "+\".": ".", "+.": ".", "+/??": "?", "+?": "?", "+!": "!",
}
_LINKERS = {"+<", "+,", "++", "+^", "+\"", "+'", "+≈", "+≋", "+"}
_UNINTELLIGIBLE = {"xxx", "yyy", "www", "xx", "yy"}
_RETRACE_DROP = {"[//]", "[///]", "[/-]", "[/?]"}
# Inflectional endings whose presence on the produced form (and absence on the target) marks a
# morphological rather than phonological deviation: goed/went, mens/men, mine's/mine, falled/fell.
_SUFFIXES = ("'s", "s", "ed", "d", "ing", "er", "est", "en")
# Personal pronoun forms (a closed class): a substitution between two of them is a case or
# person error (my [: I] [* case], me [: I]), never a pronunciation variant, so it is kept.
_PRONOUNS = frozenset({
    "i", "me", "my", "mine", "myself", "we", "us", "our", "ours", "ourselves", "you", "your", "yours",
    "yourself", "he", "him", "his", "himself", "she", "her", "hers", "herself", "it", "its", "itself",
    "they", "them", "their", "theirs", "themselves",
})
# Characters CHAT puts inside words that are not letters: lengthening, syllable pause, stress,
# intonation arrows, overlap and satellite markers.
_WORD_NOISE_RE = re.compile(r"[:^ˈˌ↑↓⇗↗→↘⇘∞≈≋°▔▁☺♋⁎∬Ϋ∮⇔∲§∾↫⌈⌉⌊⌋‡„“”\"]")


@dataclass
class _Word:
    produced: str
    target: str
    group: int  # index of the innermost <...> group, -1 if none
    codes: list[tuple[str, int]] = field(default_factory=list)  # (code, id of that code's application)
    repeated: int = -1  # [/]: exact repetition, kept in `utterance`; id of the application
    retraced: bool = False  # [//] etc.: removed everywhere
    excluded: bool = False  # [e]: excluded from analyses
    times: int = 1  # [x N]
    compound: bool = False  # ice_cream, thank_you: one word for MLU


def _clean_form(form: str) -> str:
    """One CHAT word -> its orthographic form ('' if nothing is left)."""
    form = form.split("@", 1)[0]  # special-form markers: iss@c, a@l, feeled@n
    form = form.replace("(", "").replace(")", "")  # goin(g) -> going
    form = _WORD_NOISE_RE.sub("", form)
    form = form.replace("_", " ").replace("+", "")  # compounds: graham_cracker, choo+choo
    return form.strip()


def _keep_produced(produced: str, target: str) -> bool:
    """Keep the produced form of `produced [: target]` when it differs by an inflectional ending.

    String-only (no lexicon, no error codes): the produced form ends in -s/'s/-ed/-d/-ing/-er/-est/-en
    and the target does not end in that same ending (goed/went, mines/mine, falled/fell, mens/men)
    or ends in it on a shorter stem with the same first letter (haves/has: a different inflection of one
    word, where a mispronunciation such as dis/this or dat's/that's changes the onset),
    or the target is the produced form plus an ending (two cookie [: cookies]: an omission), or
    both are personal pronouns (my [: I]: a case error).
    Phonological variants (dat/that, dis/this, dese/these) go to the target.
    """
    p, t = produced.lower(), target.lower()
    if not p or not t or p == t or " " in t:
        return False
    if p in _PRONOUNS and t in _PRONOUNS:
        return True
    for suf in _SUFFIXES:
        if p.endswith(suf) and len(p) > len(suf) + 1:
            if not t.endswith(suf):
                return True
            # both carry the ending but on different stems of one word (haves/has, fulled/filled):
            # same first letter, and the produced stem is longer than the target's
            stem_p, stem_t = p[: -len(suf)], t[: -len(suf)]
            if stem_p[:1] == stem_t[:1] and len(stem_p) > len(stem_t):
                return True
        if t.endswith(suf) and t[: -len(suf)] == p:
            return True
    return False


def _parse_main_tier(tier: str) -> tuple[list[_Word], str, list[str], bool]:
    """Split a main tier into words with their codes; returns (words, terminator, postcodes, unintelligible)."""
    words: list[_Word] = []
    group_starts: list[tuple[int, int]] = []  # (group id, index of first word)
    closed_group: tuple[int, int, int] | None = None  # (id, first, last+1) of the group just closed
    next_group = 0
    terminator = "."
    postcodes: list[str] = []
    unintelligible = False

    applications = iter(range(1_000_000))

    def scope() -> list[_Word]:
        """The words the next code applies to: the group just closed, else the last word."""
        if closed_group is not None:
            return words[closed_group[1] : closed_group[2]]
        return words[-1:]

    for tok in _TOKEN_RE.findall(_BULLET_RE.sub(" ", tier)):
        if tok == "<":
            group_starts.append((next_group, len(words)))
            next_group += 1
            closed_group = None
            continue
        if tok == ">":
            if group_starts:
                gid, first = group_starts.pop()
                closed_group = (gid, first, len(words))
            continue
        if tok.startswith("["):
            inner = tok[1:-1].strip()
            targets = scope()
            if inner.startswith("::") or inner.startswith(":"):
                repl = _clean_form_phrase(inner.lstrip(":").strip())
                if len(targets) == 1 and repl:
                    targets[0].target = repl
                elif targets and repl:  # a group replaced as a whole: first word carries it
                    targets[0].target = repl
                    for w in targets[1:]:
                        w.target = ""
            elif inner.startswith("*"):
                code, app = inner[1:].strip() or "*", next(applications)
                for w in targets:
                    w.codes.append((code, app))
            elif tok == "[/]":
                app = next(applications)
                for w in targets:
                    w.repeated = app
            elif tok in _RETRACE_DROP:
                for w in targets:
                    w.retraced = True
            elif inner == "e":
                for w in targets:
                    w.excluded = True
            elif inner.startswith("x ") and inner[2:].strip().isdigit():
                for w in targets:
                    w.times = int(inner[2:].strip())
            elif inner.startswith("+ ") or inner.startswith("+"):
                postcodes.append(inner.lstrip("+").strip())
            # [?] [!] [!!] [= ..] [=! ..] [% ..] [<] [>] [- lang] [^ ..]: no effect on the words
            continue
        closed_group = None
        if tok in _TERMINATORS:
            terminator = _TERMINATORS[tok]
            continue
        if tok in _LINKERS or _PAUSE_RE.match(tok) or tok.startswith("&") or tok.startswith("·"):
            continue
        if tok.startswith("+") and not any(c.isalnum() for c in tok):
            continue  # other terminators/linkers
        if tok.lower() in _UNINTELLIGIBLE:
            unintelligible = True
            continue
        if tok.startswith("0"):
            omitted = _clean_form(tok[1:])
            if omitted:
                words.append(_Word(produced="", target=omitted, group=-1, codes=[("0" + omitted, -1)]))
            continue
        form = _clean_form(tok)
        if not form or not any(c.isalnum() for c in form):
            continue
        gid = group_starts[-1][0] if group_starts else -1
        compound = "_" in tok.split("@", 1)[0] and " " in form
        words.append(_Word(produced=form, target=form, group=gid, compound=compound))
    return words, terminator, postcodes, unintelligible


def _clean_form_phrase(text: str) -> str:
    return " ".join(f for f in (_clean_form(t) for t in text.split()) if f)


def clean_main_tier(tier: str) -> dict:
    """Clean one CHAT main tier: utterance, utterance_clan, target, annotations, postcodes."""
    words, terminator, postcodes, unintelligible = _parse_main_tier(tier)
    utt_parts: list[str] = []
    spans: dict[tuple[str, int], dict] = {}  # one annotation per code application (a <group> is one span)
    order: list[tuple[str, int]] = []
    compounds: list[list[int]] = []  # [start, end] of each `_` compound in `utterance`
    pos = 0

    def annotate(code: str, app: int, start: int, end: int, word: str, target: str) -> None:
        key = (code, app)
        if app >= 0 and key in spans:
            span = spans[key]
            span["end"], span["word"], span["target"] = end, f"{span['word']} {word}", f"{span['target']} {target}"
            return
        if app < 0:
            key = (code, -1 - len(order))
        spans[key] = {"start": start, "end": end, "word": word, "target": target, "code": code}
        order.append(key)

    for w in words:
        if w.retraced:
            continue
        if not w.produced:  # an omitted word (0is): annotate the gap where it would be
            annotate(w.codes[0][0], -1, pos, pos, "", w.target)
            continue
        shown = w.produced if _keep_produced(w.produced, w.target) else w.target
        if not shown:
            continue
        for k in range(w.times):
            if utt_parts:
                pos += 1
            start = pos
            utt_parts.append(shown)
            pos += len(shown)
            if w.compound and shown == w.produced:
                compounds.append([start, pos])
            if k > 0:
                continue
            for code, app in w.codes:
                annotate(code, app, start, pos, shown, w.target)
            if w.repeated >= 0:
                annotate("[/]", w.repeated, start, pos, shown, w.target)
            elif w.times > 1:
                annotate("[/]", -1, start, pos, shown, w.target)
    kept = [w for w in words if not w.retraced and w.repeated < 0 and w.produced and not w.excluded]
    # a `_` compound stays one word here (CLAN counts thank_you, ice_cream as one word and one morpheme)
    clan = [c.replace(" ", "_") if w.compound and c == w.produced else c
            for w, c in ((w, w.produced if _keep_produced(w.produced, w.target) else w.target) for w in kept) if c]
    n_words = sum(1 for c in clan if c.lower() not in FILLERS)
    target = [w.target for w in words if not w.retraced and w.repeated < 0 and w.target and not w.excluded]
    utterance = " ".join(utt_parts)
    return {
        "utterance": f"{utterance} {terminator}" if utterance else "",
        "utterance_clan": " ".join(clan),
        "target": " ".join(target),
        "annotations": [spans[k] for k in order],
        "error_codes": [spans[k]["code"] for k in order if spans[k]["code"] != "[/]"],
        "postcodes": postcodes,
        "n_words": n_words,
        "unintelligible": unintelligible,
        "compounds": compounds,
        # only filled pauses (um, uh): no word for MLU, so the utterance leaves MLU's denominator too
        "filler_only": n_words == 0 and bool(clan),
        # no intelligible word at all (xxx .): CLAN's MLU leaves it out; a partly unintelligible one it keeps
        "fully_unintelligible": unintelligible and n_words == 0,
    }


ISSUE_COLUMNS = ["source", "file", "corpus", "utt_index", "speaker", "severity", "kind", "message"]
# severity: "error" = the transcript was not read (no utterances from it); "warning" = read, with a
# problem recorded (strict-mode rejection read non-strictly, a %mor tier that does not align with its
# words); "info" = read, listed because something a measure needs is absent (no %mor, no child age).
_MISALIGN_RE = re.compile(r"participant '([^']*)':\n\s*Main tier: (.*?)\n\s*%mor tier:", re.S)
_DATE_STEM_RE = re.compile(r"^\d{4,8}[a-z]?$", re.I)
_GENERIC_NAMES = {"", "target_child", "child", "chi"}


@dataclass
class Transcript:
    """One transcript read (or not): its rows (one dict per kept utterance), issues and header facts."""

    file: str
    source: str = ""
    sha256: str = ""
    corpus: str = ""
    child: str = ""
    child_id: str = ""
    age_months: float = float("nan")
    mor_style: str = "none"
    strict_ok: bool = False
    n_utterances: int = 0
    rows: list[dict] = field(default_factory=list)
    issues: list[dict] = field(default_factory=list)

    @property
    def error(self) -> str | None:
        """The message of the issue that kept this transcript from being read, else None."""
        return next((i["message"] for i in self.issues if i["severity"] == "error"), None)

    def issue(self, kind: str, message: str, severity: str = "warning", utt_index=None, speaker: str = "") -> None:
        self.issues.append({"source": self.source, "file": self.file, "corpus": self.corpus, "utt_index": utt_index,
                            "speaker": speaker, "severity": severity, "kind": kind, "message": message})


def check_chat_text(data: bytes) -> tuple[str | None, str, str]:
    """Decode and check the frame of a transcript: (text or None, issue kind, message).

    A transcript must be UTF-8 and run from @Begin to a final @End line; one cut off (mid-line or
    after a complete line) has no @End and is reported, never read as a silently shorter transcript.
    """
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as err:
        return None, "not_utf8", f"not UTF-8 text (invalid byte at offset {err.start})"
    text = text.lstrip("\ufeff")
    lines = [ln.strip() for ln in text.splitlines()]
    if "@Begin" not in lines[:20]:
        return None, "no_begin", "no @Begin header line: not a CHAT transcript"
    last = next((ln for ln in reversed(lines) if ln), "")
    if last != "@End":
        where = "mid-line" if not text.endswith(("\n", "\r")) else "after a complete line"
        return None, "no_end", f"no @End line: the transcript is cut off ({where})"
    return text, "", ""


def _child_id(corpus: str, participant_name: str, file: str) -> str:
    """A heuristic child identity: corpus + the CHI name from @Participants when it is a name; else the
    folder for date-named files (longitudinal corpora: Brown/Adam/020304.cha); else the file stem with
    trailing digits removed (cross-sectional: Bates/Free20/amy.cha, Bernstein/.../alice3.cha)."""
    if participant_name.lower() not in _GENERIC_NAMES:
        name = participant_name
    else:
        stem, parent = Path(file).stem, Path(file).parent.name
        name = parent if (_DATE_STEM_RE.match(stem) and parent) else (stem.rstrip("0123456789_-") or stem)
    return f"{corpus}/{name.lower()}"


def parse_transcript(
    file: str,
    data: bytes,
    *,
    speakers: Sequence[str] | None = (CHILD,),
    source: str = "",
    origin: str | None = None,
) -> Transcript:
    """Read one transcript's bytes: strict pylangacq first; if strict mode rejects it, non-strict, with the
    rejection recorded; mor/word misalignment warnings recorded per utterance. Never raises for a bad
    transcript: the reason is an issue of severity "error" and the transcript has no rows.
    `origin`: the path whose folders name the child when @Participants gives no name (default `file`)."""
    import hashlib

    import pylangacq

    tr = Transcript(file=file, source=source, sha256=hashlib.sha256(data).hexdigest())
    text, kind, message = check_chat_text(data)
    if text is None:
        tr.issue(kind, message, "error")
        return tr
    caught: list[warnings.WarningMessage] = []
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            reader = pylangacq.CHAT.from_strs([text], ids=[file], parallel=False, strict=True)
        tr.strict_ok = True
    except ValueError as err:
        tr.issue("strict_parse_error", _one_line(str(err).split(": ", 1)[-1]))
        try:
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always")
                reader = pylangacq.CHAT.from_strs([text], ids=[file], parallel=False, strict=False)
        except ValueError as err2:
            tr.issue("unreadable", _one_line(f"pylangacq cannot read it: {err2}"), "error")
            return tr
    _fill_transcript(tr, reader, speakers, caught, origin or file)
    return tr


def _one_line(text: str, limit: int = 300) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _fill_transcript(tr: Transcript, reader, speakers, caught, origin: str) -> None:
    from corpora.mor import mor_style_of_items

    participants = reader.headers()[0].participants if reader.n_files else []
    child = next((p for p in participants if p.code == CHILD), None)
    tr.corpus = (child.corpus if child is not None and child.corpus else None) or next(
        (p.corpus for p in participants if p.corpus), "")
    tr.child = _child_name(participants, origin)
    tr.child_id = _child_id(tr.corpus or Path(tr.file).parts[0], child.name if child is not None else "", origin)
    for issue in tr.issues:
        issue["corpus"] = tr.corpus
    if child is None:
        tr.issue("no_child", "no CHI participant in @Participants/@ID", "info")
    elif child.age is None:
        tr.issue("no_child_age", "the CHI @ID header gives no age: age_months is empty, never guessed", "info")
    else:
        tr.age_months = _age_in_months(child.age)
    utterances = [u for u in (reader.utterances(by_file=True)[0] if reader.n_files else []) if u.participant is not None]
    tr.n_utterances = len(utterances)
    if not utterances:
        tr.issue("no_utterances", "the transcript holds no utterances", "warning")
    mor_tiers = [(u.tiers or {}).get("%mor", "") for u in utterances]
    tr.mor_style = mor_style_of_items(item for tier in mor_tiers for item in tier.split())
    if tr.mor_style == "none":
        tr.issue("no_mor", "no %mor tier: morpheme counts from %mor are empty", "info")
    by_tier: dict[tuple[str, str], list[int]] = {}
    for index, utt in enumerate(utterances):
        key = (utt.participant, " ".join((utt.tiers or {}).get(utt.participant, "").split()))
        by_tier.setdefault(key, []).append(index)
    for w in caught:
        msg = str(w.message)
        m = _MISALIGN_RE.search(msg)
        if m is None:
            tr.issue("parser_warning", _one_line(msg))
            continue
        speaker, tier = m.group(1), " ".join(m.group(2).split())
        hits = by_tier.get((speaker, tier), [])
        index = hits.pop(0) if hits else None
        tr.issue("mor_misalignment", _one_line(msg.split("\n", 1)[0] + "; " + m.group(2)), "warning", index, speaker)
    keep = set(speakers) if speakers is not None else None
    rel = tr.file
    for index, utt in enumerate(utterances):
        if keep is not None and utt.participant not in keep:
            continue
        raw = (utt.tiers or {}).get(utt.participant, "")
        cleaned = clean_main_tier(raw)
        mor, mor_words, aligned = _mor_items(utt)
        tr.rows.append({
            "file": rel, "corpus": tr.corpus, "child": tr.child, "speaker": utt.participant,
            "age_months": tr.age_months, "utt_index": index, "raw": raw, "mor": mor, "mor_words": mor_words,
            "mor_aligned": aligned, **cleaned,
        })


def iter_transcripts(path: str | os.PathLike) -> Iterator[tuple[str, bytes | None, str]]:
    """(file name, bytes or None, read error) of every .cha transcript of a file, folder or TalkBank zip.

    Names: the file name for a single file, the path below the folder, the member path in a zip
    (Brown/Adam/020304.cha). A member that cannot be extracted (CRC error, truncated archive) comes back
    with bytes None and the reason, so that it is listed, not skipped. A missing path, a folder without
    .cha files or a zip that is not a zip at all raises UserError."""
    source = _collect_sources(Path(path).expanduser())
    if source.is_dir():
        for f in sorted(source.rglob("*.cha")):
            try:
                yield str(f.relative_to(source)), f.read_bytes(), ""
            except OSError as err:
                yield str(f.relative_to(source)), None, f"cannot read: {err}"
    elif source.suffix.lower() == ".zip":
        import zipfile
        import zlib

        with zipfile.ZipFile(source) as zf:
            for info in sorted(zf.infolist(), key=lambda i: i.filename):
                if info.is_dir() or not info.filename.lower().endswith(".cha"):
                    continue
                try:
                    yield info.filename, zf.read(info), ""
                except (zipfile.BadZipFile, zlib.error, EOFError, OSError) as err:
                    yield info.filename, None, f"corrupt zip member: {err}"
    else:
        yield source.name, source.read_bytes(), ""


def _collect_sources(path: Path) -> Path:
    if not path.exists():
        raise UserError(f"CHAT path not found: {path}")
    if path.is_dir():
        if not any(path.rglob("*.cha")):
            raise UserError(f"no .cha files under {path}")
    elif path.suffix.lower() == ".zip":
        import zipfile

        try:
            with zipfile.ZipFile(path) as zf:
                if not any(n.lower().endswith(".cha") for n in zf.namelist()):
                    raise UserError(f"no .cha files in {path}")
        except zipfile.BadZipFile as err:
            raise UserError(f"not a zip file (corrupt or truncated archive): {path}") from err
    elif path.suffix.lower() != ".cha":
        raise UserError(f"expected a .cha file, a directory of .cha files or a TalkBank .zip: {path}")
    return path


def _child_name(participants, file_path: str) -> str:
    """The target child's name from @Participants; else the folder that holds the file (Brown/Adam)."""
    for p in participants:
        if p.code == CHILD and p.name and p.name != "Target_Child":
            return p.name
    parent = Path(file_path).parent.name
    return parent or Path(file_path).stem


DAYS_PER_MONTH = 365.25 / 12


def _age_in_months(age) -> float:
    """CHAT age y;mm.dd -> months. Days count as days / 30.44 (a mean month), not days / 30 as pylangacq's
    in_months() does: with /30, 2;11.30 becomes 36.0 months, i.e. three years, and lands in the next age bin."""
    # y;mm or y; without days (some TalkBank @ID headers): the missing parts count as 0
    return (age.years or 0) * 12 + (age.months or 0) + (age.days or 0) / DAYS_PER_MONTH


def read_transcripts(
    path: str | os.PathLike, *, speakers: Sequence[str] | None = (CHILD,)
) -> Iterator[Transcript]:
    """Every transcript of a file, folder or zip, parsed (serially); unreadable ones carry an error issue."""
    root = Path(path).expanduser()
    source = str(root)
    for name, data, error in iter_transcripts(path):
        if data is None:
            tr = Transcript(file=name, source=source)
            tr.issue("corrupt_member", error, "error")
            yield tr
        else:
            origin = source if root.suffix.lower() == ".cha" else str(root / name) if root.is_dir() else name
            yield parse_transcript(name, data, speakers=speakers, source=source, origin=origin)


def issues_frame(issues: Iterable[dict]) -> pd.DataFrame:
    """The tidy chat_issues table (ISSUE_COLUMNS), utt_index as a nullable integer."""
    frame = pd.DataFrame(list(issues), columns=ISSUE_COLUMNS)
    frame["utt_index"] = frame["utt_index"].astype("Int64")
    return frame


def read_chat_with_issues(
    path: str | os.PathLike, *, speakers: Sequence[str] | None = (CHILD,)
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """`read_chat`'s utterances plus the chat_issues table of every transcript (see ISSUE_COLUMNS).

    A single .cha file given directly that cannot be read raises UserError (one line); inside a folder
    or zip an unreadable transcript is an "error" row of the issues table and reading goes on.
    """
    frame, issues = _read_chat_rows(path, speakers)
    return frame, issues_frame(issues)


def _read_chat_rows(path: str | os.PathLike, speakers: Sequence[str] | None) -> tuple[pd.DataFrame, list[dict]]:
    single = Path(path).expanduser().suffix.lower() == ".cha"
    rows: list[dict] = []
    issues: list[dict] = []
    n_read = 0
    for tr in read_transcripts(path, speakers=speakers):
        if single and tr.error:
            raise UserError(f"cannot read CHAT file {path}: {tr.error}")
        n_read += tr.error is None
        rows.extend(tr.rows)
        issues.extend(tr.issues)
    if n_read == 0:
        first = next((i for i in issues if i["severity"] == "error"), None)
        reason = f"{first['file']}: {first['message']}" if first else "no transcripts found"
        raise UserError(f"no CHAT transcript could be read from {path} ({reason})")
    frame = pd.DataFrame(rows, columns=COLUMNS)
    if frame.empty:
        wanted = ", ".join(sorted(speakers)) if speakers else "any speaker"
        raise UserError(f"no utterances of {wanted} in {path}")
    return frame, issues


def read_chat(
    path: str | os.PathLike,
    *,
    speakers: Sequence[str] | None = (CHILD,),
) -> pd.DataFrame:
    """Utterances of a .cha file, a directory of .cha files (recursive) or a TalkBank .zip.

    `speakers`: participant codes to keep (default the target child, CHI); None keeps everyone.
    `age_months` is the target child's age from its @ID header at that recording (NaN if absent).
    `mor` holds the %mor items (clitics split at "~"), `mor_words` the word each item belongs to
    (from pylangacq's alignment; empty where the tiers do not align, `mor_aligned` False).
    Transcripts that cannot be read inside a folder or zip are not dropped silently: their issues
    (rows of the chat_issues table as dicts, `issues_frame` makes the table) are attached as
    `frame.attrs["chat_issues"]`; `read_chat_with_issues` returns the table itself.
    """
    frame, issues = _read_chat_rows(path, speakers)
    frame.attrs["chat_issues"] = issues  # plain dicts: pd.concat compares attrs, a DataFrame there breaks it
    return frame


def _mor_items(utt) -> tuple[list[str], list[str], bool]:
    """%mor items split at clitic boundaries, the surface word of each (where aligned), and whether the
    tiers aligned (False when pylangacq could not align %mor with the words: surface words are empty)."""
    tokens = utt.tokens or []
    items = [t for t in tokens if t.pos not in ("", None) and t.pos != "cm"]
    if items:
        mor = [f"{t.pos}|{t.mor}" for t in items]
        words = [t.word for t in items]
        return mor, words, True
    tier = (utt.tiers or {}).get("%mor", "")
    mor = [part for item in tier.split() for part in item.split("~") if "|" in part and not part.startswith("cm|")]
    return mor, [""] * len(mor), not mor
