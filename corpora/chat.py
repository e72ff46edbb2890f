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
  set CLAN's MLU counts.
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
from collections.abc import Sequence
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
]

# Tokens of a CHAT main tier: a bracketed code (may contain spaces), a group bracket, or a word.
_TOKEN_RE = re.compile(r"\[[^\]]*\]|[<>]|[^\s<>\[\]]+")
_PAUSE_RE = re.compile(r"^\((\.+|[\d.:]+)\)$")
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

    for tok in _TOKEN_RE.findall(tier):
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
        words.append(_Word(produced=form, target=form, group=gid))
    return words, terminator, postcodes, unintelligible


def _clean_form_phrase(text: str) -> str:
    return " ".join(f for f in (_clean_form(t) for t in text.split()) if f)


def clean_main_tier(tier: str) -> dict:
    """Clean one CHAT main tier: utterance, utterance_clan, target, annotations, postcodes."""
    words, terminator, postcodes, unintelligible = _parse_main_tier(tier)
    utt_parts: list[str] = []
    spans: dict[tuple[str, int], dict] = {}  # one annotation per code application (a <group> is one span)
    order: list[tuple[str, int]] = []
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
            if k > 0:
                continue
            for code, app in w.codes:
                annotate(code, app, start, pos, shown, w.target)
            if w.repeated >= 0:
                annotate("[/]", w.repeated, start, pos, shown, w.target)
            elif w.times > 1:
                annotate("[/]", -1, start, pos, shown, w.target)
    kept = [w for w in words if not w.retraced and w.repeated < 0 and w.produced and not w.excluded]
    clan = [c for c in (w.produced if _keep_produced(w.produced, w.target) else w.target for w in kept) if c]
    target = [w.target for w in words if not w.retraced and w.repeated < 0 and w.target and not w.excluded]
    utterance = " ".join(utt_parts)
    return {
        "utterance": f"{utterance} {terminator}" if utterance else "",
        "utterance_clan": " ".join(clan),
        "target": " ".join(target),
        "annotations": [spans[k] for k in order],
        "error_codes": [spans[k]["code"] for k in order if spans[k]["code"] != "[/]"],
        "postcodes": postcodes,
        "n_words": len(" ".join(clan).split()),
        "unintelligible": unintelligible,
    }


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
            raise UserError(f"not a zip file: {path}") from err
    elif path.suffix.lower() != ".cha":
        raise UserError(f"expected a .cha file, a directory of .cha files or a TalkBank .zip: {path}")
    if path.suffix.lower() != ".zip":
        for file in [path] if path.is_file() else sorted(path.rglob("*.cha")):
            _check_complete(file)
    return path


def _check_complete(file: Path) -> None:
    """A CHAT file ends with an @End line; one without it was cut short (a partial download or copy),
    and its last utterance would be read as if whole."""
    with file.open("rb") as handle:
        handle.seek(max(0, file.stat().st_size - 256))
        tail = handle.read()
    # "replace": the seek may cut a multi-byte character; only the last line's ASCII matters here
    lines = tail.decode("utf-8", errors="replace").rstrip().splitlines()
    if not lines or lines[-1].strip() != "@End":
        raise UserError(f"{file}: no @End line at its end: the CHAT file is cut short or not CHAT "
                        "(re-download or re-copy it)")


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
    return age.years * 12 + age.months + age.days / DAYS_PER_MONTH


def _relative(file_path: str, root: Path) -> str:
    try:
        return str(Path(file_path).resolve().relative_to(root.resolve() if root.is_dir() else root.parent.resolve()))
    except ValueError:
        return file_path


def read_chat(
    path: str | os.PathLike,
    *,
    speakers: Sequence[str] | None = (CHILD,),
) -> pd.DataFrame:
    """Utterances of a .cha file, a directory of .cha files (recursive) or a TalkBank .zip.

    `speakers`: participant codes to keep (default the target child, CHI); None keeps everyone.
    `age_months` is the target child's age from its @ID header at that recording (NaN if absent).
    `mor` holds the %mor items (clitics split at "~"), `mor_words` the word each item belongs to
    (from pylangacq's alignment; empty where the tiers do not align).
    """
    import pylangacq

    source = _collect_sources(Path(path).expanduser())
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # misaligned %mor: tokens come back empty; handled below
            reader = pylangacq.read_chat(str(source), strict=False)
    except (ValueError, OSError) as err:
        raise UserError(f"cannot read CHAT data {source}: {err}") from err
    if reader.n_files == 0:
        raise UserError(f"no CHAT files read from {source}")
    rows: list[dict] = []
    headers = reader.headers()
    file_paths = reader.file_paths
    utterances_by_file = reader.utterances(by_file=True)
    keep = set(speakers) if speakers is not None else None
    for file_path, header, utterances in zip(file_paths, headers, utterances_by_file, strict=True):
        participants = header.participants
        child = next((p for p in participants if p.code == CHILD), None)
        age = _age_in_months(child.age) if child is not None and child.age is not None else float("nan")
        corpus = (child.corpus if child is not None and child.corpus else None) or next(
            (p.corpus for p in participants if p.corpus), ""
        )
        child_name = _child_name(participants, file_path)
        rel = _relative(file_path, source)
        for index, utt in enumerate(u for u in utterances if u.participant is not None):
            if keep is not None and utt.participant not in keep:
                continue
            raw = (utt.tiers or {}).get(utt.participant, "")
            cleaned = clean_main_tier(raw)
            mor, mor_words = _mor_items(utt)
            rows.append(
                {
                    "file": rel,
                    "corpus": corpus,
                    "child": child_name,
                    "speaker": utt.participant,
                    "age_months": age,
                    "utt_index": index,
                    "raw": raw,
                    "mor": mor,
                    "mor_words": mor_words,
                    **cleaned,
                }
            )
    frame = pd.DataFrame(rows, columns=COLUMNS)
    if frame.empty:
        wanted = ", ".join(sorted(keep)) if keep else "any speaker"
        raise UserError(f"no utterances of {wanted} in {source}")
    return frame


def _mor_items(utt) -> tuple[list[str], list[str]]:
    """%mor items split at clitic boundaries, with the surface word of each (where aligned)."""
    tokens = utt.tokens or []
    items = [t for t in tokens if t.pos not in ("", None) and t.pos != "cm"]
    if items:
        mor = [f"{t.pos}|{t.mor}" for t in items]
        words = [t.word for t in items]
        return mor, words
    tier = (utt.tiers or {}).get("%mor", "")
    mor = [part for item in tier.split() for part in item.split("~") if "|" in part and not part.startswith("cm|")]
    return mor, [""] * len(mor)
