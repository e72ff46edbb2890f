"""childes-compare as a library: child utterances by age vs model stories by checkpoint.

`childes_compare(childes_paths, samples_paths, config)` returns a `CompareResult` of tidy
DataFrames and a `CompareSummary`; it never prints. The command in evalsuite/commands/childes_compare.py
writes the tables (and chat_issues.csv) and prints them.

Child side at corpus scale: the utterances come from the parse cache
(evalsuite.childes.parse_cache.load_child_utterances: every transcript read or reported, its issues in
`CompareResult.chat_issues`, counts in meta `chat_transcripts`), and the spaCy parse + detector rows of each
transcript are cached too (`analyze_children_cached`: Parquet under `<cache>/childes_units/<unit_code_key>/`,
keyed by the transcript's sha256 and file name; the key hashes the detector/measure code, the unit-building
functions of this module, spaCy's and its model's versions, the CHAT reading code and context_window), plus
one shard per source for warm runs. Only uncached transcripts are parsed, by `n_workers` spawned processes;
a warm run loads no spaCy pipeline.

Units: a child utterance (CHI tier; utterances with any unintelligible word are left out, as in
Brown's MLU rules) or a story sentence. Rates are per 100 units: the share of units with at least
one hit of that error type, with a Wilson 95 % interval that treats units as independent (units
cluster within transcripts and stories, so the interval is too narrow by the design effect).

Model stories: the text analysed is prompt + completion (the prompt gives context, e.g. antecedents),
but only sentences that start inside the completion are counted.
"""

from __future__ import annotations

import functools
import hashlib
import inspect
import json
import math
import os
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

import numpy as np
import pandas as pd

from corpora.errors import UserError
from evalsuite.childes import detectors, measures, validation
from evalsuite.childes.detectors import ERROR_TYPES, SPACY_MODEL, iter_detect, load_nlp
from evalsuite.childes.samples_frame import SAMPLE_REQUIRED, read_samples  # noqa: F401 (re-exported)
from evalsuite.hypothesis import HYPOTHESIS, SEED_TOKENS_PER_CHAR, seed_nats_to_bpc
from evalsuite.stats import bootstrap_ci, bootstrap_mean_cis, wilson_cis

SUB_KINDS = {"pronoun_antecedent": ("gender_mismatch", "no_antecedent")}
GENRE_CAVEAT = (
    "Genre differs: CHILDES units are spoken child utterances (CHI tier, conversation), model units are "
    "sentences of written stories; rates are normalised per utterance/sentence, but sentence length, "
    "dialogue and narrative tense differ by genre, so levels are not directly comparable."
)


@dataclass
class CompareConfig:
    """Settings of one comparison; unknown keys are an error (`from_dict`)."""

    bin_months: int = 6
    n_bootstrap: int = 1000
    seed: int = 0
    batch_size: int = 256
    n_process: int = 1
    context_window: int = 3
    mattr_window: int = 50
    min_units_per_transcript: int = 50
    n_workers: int = 2  # processes that read transcripts and parse child utterances not yet cached
    use_cache: bool = True  # the parse cache and the per-transcript unit cache ($EVALSUITE_CACHE)
    age_model: str = ""  # folder of a saved childes-age model; "" = the shipped one (SHIPPED_AGE_MODEL)
    refit_age_model: bool = False  # fit and cross-validate the age model on the given children instead

    @classmethod
    def from_dict(cls, values: dict) -> CompareConfig:
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise UserError(f"unknown childes-compare setting(s): {', '.join(unknown)} (known: {', '.join(sorted(known))})")
        config = cls(**values)
        config.validate()
        return config

    def validate(self) -> None:
        if self.bin_months <= 0:
            raise UserError("bin_months must be positive")
        if self.n_bootstrap < 100:
            raise UserError("n_bootstrap must be at least 100")
        if self.n_workers < 1:
            raise UserError("n_workers must be at least 1")
        if self.age_model and self.refit_age_model:
            raise UserError("give either an age model folder or refit_age_model, not both")
        if self.n_process < 1 or self.batch_size < 1 or self.context_window < 0 or self.mattr_window < 2:
            raise UserError("n_process, batch_size >= 1, context_window >= 0, mattr_window >= 2")


@dataclass
class CompareSummary:
    n_children: int = 0
    n_transcripts: int = 0
    n_child_utterances: int = 0
    n_checkpoints: int = 0
    n_story_sentences: int = 0
    verdict: str = ""
    statements: list[str] = field(default_factory=list)
    caveats: list[str] = field(default_factory=list)
    loss_age: dict | None = None


@dataclass
class CompareResult:
    rates: pd.DataFrame
    measures: pd.DataFrame
    units: pd.DataFrame
    hits: pd.DataFrame
    validation: pd.DataFrame
    disagreements: pd.DataFrame
    code_inventory: pd.DataFrame
    mlu_agreement: pd.DataFrame
    mlu_summary: dict
    summary: CompareSummary
    meta: dict
    dev_age_cv: pd.DataFrame = field(default_factory=pd.DataFrame)
    dev_checkpoint_ages: pd.DataFrame = field(default_factory=pd.DataFrame)
    chat_issues: pd.DataFrame = field(default_factory=pd.DataFrame)
    transcripts: pd.DataFrame = field(default_factory=pd.DataFrame)


# ----------------------------------------------------------------------------- inputs


def load_children(paths: Sequence[str | os.PathLike], config: CompareConfig | None = None, progress: bool = False):
    """Child utterances, chat_issues and transcript list from the parse cache
    (evalsuite.childes.parse_cache.load_child_utterances: every transcript read or reported)."""
    from evalsuite.childes.parse_cache import load_child_utterances

    config = config or CompareConfig()
    loaded = load_child_utterances(paths, progress=progress, n_workers=config.n_workers, use_cache=config.use_cache)
    if loaded.utterances.empty:
        raise UserError("no child (CHI) utterances in the given CHAT data")
    if loaded.utterances["age_months"].isna().all():
        raise UserError("no child age in the @ID headers of the CHAT files: cannot bin by age")
    return loaded


def read_children(paths: Sequence[str | os.PathLike], config: CompareConfig | None = None) -> pd.DataFrame:
    return load_children(paths, config).utterances


# ----------------------------------------------------------------------------- analysis


def _unit_record(pu, exclude: Sequence[tuple[int, int]] = (), compounds: Sequence[Sequence[int]] = ()) -> dict:
    span, offset = pu.span, pu.offset
    hits = [asdict(h) for h in pu.hits]
    rec = {
        "doc_id": pu.doc_id, "unit_index": pu.index, "text": span.text,
        "n_words": measures.text_words(span, exclude, offset, compounds),
        "n_morphemes": measures.text_morphemes(span, exclude, offset, compounds),
        "n_clauses": measures.clause_count(span),
        "words": [w for w in measures.word_types(span)],
        "hits": hits,
    }
    for t in ERROR_TYPES:
        rec[f"has_{t}"] = any(h["error_type"] == t for h in hits)
    return rec


def analyze_child_utterances(
    frame: pd.DataFrame, config: CompareConfig, nlp=None, progress: bool = False
) -> pd.DataFrame:
    """Parse and detect every analysable child utterance (>= 1 word, no unintelligible word)."""
    nlp = nlp or load_nlp()
    df = frame[(frame["n_words"] > 0) & ~frame["unintelligible"]].reset_index(drop=True)
    docs = nlp.pipe(df["utterance"].tolist(), batch_size=config.batch_size, n_process=config.n_process)
    if progress:
        from tqdm import tqdm

        docs = tqdm(docs, total=len(df), desc="parse child utterances", unit="utt")
    units = ((file, doc, 0) for file, doc in zip(df["file"], docs, strict=True))
    records = []
    for pu, row in zip(iter_detect(units, config.context_window), df.itertuples(index=False), strict=True):
        exclude = [(a["start"], a["end"]) for a in row.annotations if a["code"] == "[/]"]
        # `_` compounds (thank_you) are one word, as CLAN and the %mor side count them
        rec = _unit_record(pu, exclude, getattr(row, "compounds", ()))
        rec.update({
            "source": "childes", "file": row.file, "corpus": row.corpus, "child": row.child,
            "age_months": row.age_months, "utt_index": row.utt_index, "annotations": [dict(a) for a in row.annotations],
            "mor_morphemes": measures.mor_morphemes(row.mor, row.mor_words),
            "mor_n_items": len(row.mor), "clan_words": len(row.utterance_clan.split()),
        })
        records.append(rec)
    return pd.DataFrame(records)


def _text_key(utterance: str, annotations, compounds) -> tuple:
    """What a child unit's row depends on besides its context: the text, the `[/]` spans MLU leaves out and
    the `_` compounds it counts as one word."""
    exclude = tuple((int(a["start"]), int(a["end"])) for a in annotations if a["code"] == "[/]")
    return utterance, exclude, tuple(tuple(int(x) for x in c) for c in (compounds if compounds is not None else ()))


def analyze_texts(keys: Sequence[tuple], nlp, batch_size: int = 256) -> list[dict]:
    """The context-free part of a child unit's row for each distinct `_text_key`: one spaCy parse per
    distinct text, the unit measures, the hits of every detector except pronoun_antecedent
    (`detectors.context_free_hits`, split around it as detect_span runs them), that detector's candidates
    and the unit's mention genders (the context of the next units). `_assemble_units` resolves the pronouns per unit against its context."""
    texts = list(dict.fromkeys(k[0] for k in keys))
    docs = dict(zip(texts, nlp.pipe(texts, batch_size=batch_size), strict=True))
    out = []
    for text, exclude, compounds in keys:
        span = docs[text][:]
        before, after = ([asdict(h) for h in hits] for hits in detectors.context_free_hits(span, 0))
        out.append({
            "text": span.text, "n_words": measures.text_words(span, exclude, 0, compounds),
            "n_morphemes": measures.text_morphemes(span, exclude, 0, compounds),
            "n_clauses": measures.clause_count(span), "words": measures.word_types(span),
            "before": before, "after": after, "pronouns": detectors.pronoun_candidates(span, 0),
            "mentions": frozenset(m.gender for m in detectors.unit_mentions(span)),
        })
    return out


def _assemble_units(rows: pd.DataFrame, keys: list[tuple], analyses: dict[tuple, dict], context_window: int) -> pd.DataFrame:
    """One transcript's unit rows (the columns and values of `analyze_child_utterances`) from the per-text
    analyses: pronoun_antecedent resolved against the mention genders of the `context_window` previous
    units of the transcript (detectors.iter_detect's context, which never crosses a document)."""
    from collections import deque

    history: deque[frozenset] = deque(maxlen=context_window)
    cols: dict[str, list] = {c: [] for c in ("doc_id", "unit_index", "text", "n_words", "n_morphemes", "n_clauses",
                                             "words", "hits", *(f"has_{t}" for t in ERROR_TYPES))}
    for index, (key, doc_id) in enumerate(zip(keys, rows["file"], strict=True)):
        a = analyses[key]
        context = frozenset().union(*history) if history else frozenset()
        hits = a["before"] + [asdict(h) for h in detectors.resolve_pronouns(a["pronouns"], context)] + a["after"]
        history.append(a["mentions"])
        types = {h["error_type"] for h in hits}
        for col, value in (("doc_id", doc_id), ("unit_index", index), ("text", a["text"]), ("n_words", a["n_words"]),
                           ("n_morphemes", a["n_morphemes"]), ("n_clauses", a["n_clauses"]), ("words", a["words"]),
                           ("hits", hits)):
            cols[col].append(value)
        for t in ERROR_TYPES:
            cols[f"has_{t}"].append(t in types)
    if not cols["doc_id"]:
        return pd.DataFrame()
    cols["source"] = ["childes"] * len(keys)
    for col in ("file", "corpus", "child", "age_months", "utt_index"):
        cols[col] = rows[col].tolist()
    cols["annotations"] = [[dict(a) for a in anns] for anns in rows["annotations"]]
    cols["mor_morphemes"] = [measures.mor_morphemes(m, w) for m, w in zip(rows["mor"], rows["mor_words"], strict=True)]
    cols["mor_n_items"] = [len(m) for m in rows["mor"]]
    cols["clan_words"] = [len(u.split()) for u in rows["utterance_clan"]]
    return pd.DataFrame(cols)


def analyze_stories(samples: pd.DataFrame, config: CompareConfig, nlp=None, progress: bool = False) -> pd.DataFrame:
    """Parse each story (prompt + completion) and detect per sentence; keep sentences of the completion."""
    nlp = nlp or load_nlp()
    texts = (samples["prompt"] + samples["completion"]).tolist()
    docs = nlp.pipe(texts, batch_size=max(1, config.batch_size // 16), n_process=config.n_process)
    if progress:
        from tqdm import tqdm

        docs = tqdm(docs, total=len(texts), desc="parse stories", unit="story")
    counted: dict[tuple[str, int], bool] = {}
    meta = samples.reset_index(drop=True)

    def sentences():
        for i, doc in enumerate(docs):
            prompt_len = len(meta.at[i, "prompt"])
            doc_id = f"{meta.at[i, 'checkpoint_id']}#{i}"
            for k, sent in enumerate(doc.sents):
                counted[(doc_id, k)] = sent.start_char >= prompt_len and any(t.is_alpha for t in sent)
                yield doc_id, sent, sent.start_char

    records = []
    for pu in iter_detect(sentences(), config.context_window):
        if not counted[(pu.doc_id, pu.index)]:
            continue
        i = int(pu.doc_id.rsplit("#", 1)[1])
        rec = _unit_record(pu)
        rec.update({
            "source": "model", "sample_index": i, "checkpoint_id": meta.at[i, "checkpoint_id"],
            "checkpoint": meta.at[i, "checkpoint"], "model_family": meta.at[i, "model_family"],
            "val_loss": meta.at[i, "val_loss"], "val_bpc": meta.at[i, "val_bpc"],
            "samples_file": meta.at[i, "samples_file"], "line": meta.at[i, "line"],
        })
        records.append(rec)
    return pd.DataFrame(records)


# ----------------------------------------------------------------------------- per-transcript unit cache

UNIT_CACHE_FORMAT = 2  # 2: words / hits / annotations as Parquet lists, not JSON text
# the code whose output a cached unit row is: the detectors, the measures and lexicon they use, and of this
# module only the two functions that build unit rows (hashed by source), so that editing the tables or the
# verdict text here does not throw away hours of parsing
UNIT_CODE_FILES = ("evalsuite/childes/detectors.py", "evalsuite/childes/measures.py", "evalsuite/childes/lexicon.py")
UNIT_CODE_FUNCTIONS = ("_unit_record", "analyze_child_utterances", "_list_types", "_write_units", "_read_units", "_read_shards",
                       "_text_key", "analyze_texts", "_assemble_units", "_analysable")
_LIST_COLUMNS = ("words", "hits", "annotations")  # nested Python objects, stored as Parquet lists (_list_types)
# below this many uncached utterances, spawning workers (each loads spaCy, ~5-10 s) costs more than it saves
POOL_MIN_UTTERANCES = 5000
_ROOT = Path(__file__).resolve().parents[2]


def spacy_model_version() -> str:
    """`name version` of the spaCy model, read from its meta.json without importing spaCy."""
    import importlib.util

    spec = importlib.util.find_spec(SPACY_MODEL)
    if spec is None or not spec.submodule_search_locations:
        raise UserError(f"spaCy model {SPACY_MODEL} is not installed")
    meta = json.loads((Path(list(spec.submodule_search_locations)[0]) / "meta.json").read_text(encoding="utf-8"))
    return f"{meta['name']} {meta['version']}"


@functools.lru_cache(maxsize=8)
def unit_code_key(context_window: int) -> str:
    """Hash of what a cached unit row depends on: the analysis code, spaCy and its model, the parse
    cache's code key (CHAT reading) and the one setting that changes detections (context_window)."""
    from importlib.metadata import version

    from evalsuite.childes.parse_cache import code_key

    h = hashlib.sha256(f"format={UNIT_CACHE_FORMAT};spacy={version('spacy')};model={spacy_model_version()};"
                       f"parse={code_key()};context_window={context_window}".encode())
    for rel in UNIT_CODE_FILES:
        h.update(rel.encode() + b"\0" + (_ROOT / rel).read_bytes())
    for name in UNIT_CODE_FUNCTIONS:
        h.update(name.encode() + b"\0" + inspect.getsource(globals()[name]).encode())
    for tsv in sorted((_ROOT / "evalsuite/childes/data").glob("*.tsv")):  # lexicon tables the detectors read
        h.update(tsv.name.encode() + b"\0" + tsv.read_bytes())
    return h.hexdigest()[:16]


def unit_cache_root(context_window: int, cache_dir: str | os.PathLike | None = None) -> Path:
    from corpora.paths import cache_dir as default_cache

    base = Path(cache_dir).expanduser() if cache_dir is not None else default_cache()
    return base / "childes_units" / unit_code_key(context_window)


def _unit_file(root: Path, sha256: str, file: str) -> Path:
    tag = hashlib.sha1(file.encode()).hexdigest()[:10]
    return root / sha256[:2] / f"{sha256}-{tag}.parquet"


def _list_types() -> dict:
    """Arrow types of the nested unit columns: stored as native Parquet lists (format 2; format 1 stored JSON
    text, whose decoding was a third of a warm corpus-scale run)."""
    import pyarrow as pa

    s, i = pa.string(), pa.int64()
    return {"words": pa.list_(s),
            "hits": pa.list_(pa.struct([("error_type", s), ("kind", s), ("start", i), ("end", i), ("text", s)])),
            "annotations": pa.list_(pa.struct([("start", i), ("end", i), ("word", s), ("target", s), ("code", s)]))}


def _write_units(path: Path, units: pd.DataFrame) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    types = _list_types()
    nested = [c for c in _LIST_COLUMNS if c in units]
    table = pa.Table.from_pandas(units.drop(columns=nested), preserve_index=False)
    for col in nested:  # fixed types: an all-empty column would otherwise be list<null>
        table = table.append_column(col, pa.array(units[col].tolist(), type=types[col]))
    table = table.select([c for c in units.columns])
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(f".tmp{os.getpid()}")
    pq.write_table(table, tmp)
    os.replace(tmp, path)  # atomic: a concurrent reader never sees half a file


def _read_units(path: Path) -> pd.DataFrame | None:
    """A cached unit frame; the nested columns come back as numpy object arrays (of str / of dicts with the
    fields of `_list_types`), which every consumer iterates like the lists that were written."""
    import pyarrow.parquet as pq

    try:
        return pq.read_table(path).to_pandas()
    except (OSError, ValueError):
        return None  # absent or unreadable: recompute


def _read_shards(root: Path, groups: list[pd.DataFrame], parts: dict[int, pd.DataFrame]) -> tuple[dict, int]:
    """Fill `parts` from the per-source shards (one Parquet file per CHAT source holding all its
    transcripts' units: a warm run reads one file per corpus, not one per transcript). A shard is keyed by
    the source path and every member's file name and sha256, so a changed or added transcript misses it.
    Returns ({shard path to write: the group indices of its source}, shards read)."""
    by_source: dict[str, list[int]] = {}
    for i, rows in enumerate(groups):
        by_source.setdefault(str(rows["source"].iloc[0]) if "source" in rows else "", []).append(i)
    shards: dict[Path, list[int]] = {}
    n_read = 0
    for source, members in by_source.items():
        listing = "\n".join(f"{groups[i]['file'].iloc[0]}\t{groups[i]['sha256'].iloc[0]}" for i in members)
        key = hashlib.sha256((source + "\n" + listing).encode()).hexdigest()
        shard = root / "sources" / f"{key}.parquet"
        cached = _read_units(shard) if shard.exists() else None
        if cached is None:
            shards[shard] = members
            continue
        n_read += 1
        if members == list(range(members[0], members[0] + len(members))):
            # the shard holds its members' rows in member order, and the members are consecutive transcripts:
            # its rows are already the concatenation the caller builds (no split into thousands of frames)
            parts[members[0]] = cached
            parts.update((i, pd.DataFrame()) for i in members[1:])
            continue
        by_doc = {doc: g.reset_index(drop=True) for doc, g in cached.groupby("doc_id", sort=False)} if len(cached) else {}
        for i in members:
            parts[i] = by_doc.get(str(groups[i]["file"].iloc[0]), pd.DataFrame())
    return shards, n_read


_WORKER_NLP = None


def _unit_worker_init() -> None:
    global _WORKER_NLP
    _WORKER_NLP = load_nlp()


def _texts_work(job: tuple[int, list[tuple], int]) -> tuple[int, list[dict]]:
    """`analyze_texts` on one chunk of distinct texts (in a worker)."""
    index, keys, batch_size = job
    return index, analyze_texts(keys, _WORKER_NLP, batch_size)


@functools.lru_cache(maxsize=1)
def _shared_nlp():
    return load_nlp()


# distinct texts per job sent to a worker: big enough for spaCy's batching, small enough to balance two workers
TEXT_CHUNK = 2000


def _analysable(rows: pd.DataFrame) -> pd.DataFrame:
    """The child utterances that are units: >= 1 word and no unintelligible word."""
    return rows[(rows["n_words"] > 0) & ~rows["unintelligible"]].reset_index(drop=True)


def analyze_children_cached(
    frame: pd.DataFrame, config: CompareConfig, progress: bool = False, cache_dir: str | os.PathLike | None = None
) -> tuple[pd.DataFrame, dict]:
    """The rows of `analyze_child_utterances` per transcript, cached as Parquet keyed by the transcript's
    sha256 (and file name) under `<cache>/childes_units/<unit_code_key>/`. Only uncached transcripts are
    analysed, and each distinct (text, `[/]` spans, compounds) of all of them is parsed and run through the
    detectors once (`analyze_texts`, by a pool of `config.n_workers` spawned processes when there are many);
    the rows are then assembled per transcript with their own context (`_assemble_units`). Returns (units,
    stats): the units in the frame's transcript order (the same rows as one `analyze_child_utterances` call:
    detector context never crosses a transcript), how many transcripts came from the cache / were computed,
    how many utterances they had and how many distinct texts spaCy parsed."""
    root = unit_cache_root(config.context_window, cache_dir) if config.use_cache and "sha256" in frame else None
    keys = ["sha256", "file"] if "sha256" in frame else ["file"]
    # the transcripts (groupby(keys, sort=False) order) as row positions: a warm run needs only each transcript's
    # first row (its file, sha256 and source: the shard and cache keys), not thousands of sub-frames of every column
    ids = frame.groupby(keys, sort=False).ngroup().to_numpy(dtype=np.int64, na_value=-1)  # -1: a NaN key, dropped
    order = np.argsort(ids, kind="stable")  # stable: a transcript's rows keep their order
    bounds = np.searchsorted(ids[order], np.arange((ids.max() if len(ids) else -1) + 2))
    heads = frame[[c for c in ("sha256", "file", "source") if c in frame]].iloc[order[bounds[:-1]]]
    groups = [heads.iloc[[i]] for i in range(len(bounds) - 1)]
    parts: dict[int, pd.DataFrame] = {}
    shards, shards_read = _read_shards(root, groups, parts) if root is not None else ({}, 0)
    todo: list[tuple[int, pd.DataFrame, list[tuple], str]] = []  # group index, analysable rows, text keys, cache file
    transcripts: list[pd.DataFrame] | None = None
    for i in range(len(groups)):
        if i in parts:
            continue
        if transcripts is None:
            # a transcript to compute: split the frame once, as groupby does (a take per transcript instead would
            # concatenate every chunk of the frame's chunked Arrow string columns each time: quadratic)
            transcripts = [g for _, g in frame.groupby(keys, sort=False)]
        rows = transcripts[i]
        cache_file = ""
        if root is not None:
            path = _unit_file(root, str(rows["sha256"].iloc[0]), str(rows["file"].iloc[0]))
            cached = _read_units(path) if path.exists() else None
            if cached is not None:
                parts[i] = cached
                continue
            cache_file = str(path)
        units = _analysable(rows)
        text_keys = [_text_key(u, a, c) for u, a, c in zip(
            units["utterance"], units["annotations"], units["compounds"] if "compounds" in units else [()] * len(units),
            strict=True)]
        todo.append((i, units, text_keys, cache_file))
    distinct = list(dict.fromkeys(k for _, _, text_keys, _ in todo for k in text_keys))
    distinct.sort(key=lambda k: k[0])
    chunks: list[list[tuple]] = []
    for k in distinct:  # a new chunk only between two texts: the variants of one text are parsed once
        if not chunks or (len(chunks[-1]) >= TEXT_CHUNK and chunks[-1][-1][0] != k[0]):
            chunks.append([])
        chunks[-1].append(k)
    n_todo = sum(len(t[1]) for t in todo)
    pooled = len(chunks) > 1 and config.n_workers > 1 and len(distinct) >= POOL_MIN_UTTERANCES
    analyses: dict[tuple, dict] = {}
    bar = None
    if progress and distinct:
        from tqdm import tqdm

        bar = tqdm(total=len(distinct), desc="parse distinct child utterances (uncached transcripts)", unit="text")
    jobs = [(j, chunk, config.batch_size) for j, chunk in enumerate(chunks)]
    if pooled:
        import multiprocessing as mp

        # spawn, not fork: the parent may hold spaCy/torch threads (scripts need the __main__ guard)
        with mp.get_context("spawn").Pool(config.n_workers, initializer=_unit_worker_init) as pool:
            for j, result in pool.imap_unordered(_texts_work, jobs):
                analyses.update(zip(chunks[j], result, strict=True))
                if bar is not None:
                    bar.update(len(result))
    else:
        for _, chunk, batch_size in jobs:
            analyses.update(zip(chunk, analyze_texts(chunk, _shared_nlp(), batch_size), strict=True))
            if bar is not None:
                bar.update(len(chunk))
    if bar is not None:
        bar.close()
    for i, units, text_keys, cache_file in todo:
        parts[i] = _assemble_units(units, text_keys, analyses, config.context_window)
        if cache_file:
            _write_units(Path(cache_file), parts[i])
    for shard, members in shards.items():  # a source read transcript by transcript: write its shard
        found = [parts[i] for i in members if len(parts[i])]
        _write_units(shard, pd.concat(found, ignore_index=True) if found else pd.DataFrame())
    frames = [parts[i] for i in range(len(groups)) if len(parts[i])]
    units = pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()
    stats = {"transcripts": len(groups), "from_cache": len(groups) - len(todo), "computed": len(todo),
             "source_shards_read": shards_read, "utterances_parsed": n_todo, "distinct_texts_parsed": len(distinct),
             "spacy_docs_parsed": len({k[0] for k in distinct}),
             "worker_processes": config.n_workers if pooled else 0,
             "cache": str(root) if root is not None else None}
    return units, stats


# ----------------------------------------------------------------------------- tables


def age_bin_label(age: float, width: int) -> tuple[int, str]:
    start = int(age // width) * width
    return start, f"{start}-{start + width}"


GROUP_COLUMNS = ("source", "child", "age_months", "checkpoint_id", "model_family", "val_loss", "val_bpc")


def _group_keys(units: pd.DataFrame, config: CompareConfig, columns: Sequence[str] | None = None
                ) -> list[tuple[dict, pd.DataFrame]]:
    """(group key, its units) per child x age bin, all children x age bin, and checkpoint; `columns`: the
    unit columns a caller needs in the groups (all when None: at corpus scale, copying the nested columns
    into thousands of sub-frames costs more than the statistics)."""
    groups: list[tuple[dict, pd.DataFrame]] = []
    if "source" not in units:
        return groups
    if columns is not None:
        units = units[[c for c in dict.fromkeys((*GROUP_COLUMNS, *columns)) if c in units]]
    child = units[units["source"] == "childes"]
    if not child.empty:
        # a transcript without a CHI age in its @ID header gets its own bin rather than a crash
        by_age = {a: age_bin_label(a, config.bin_months) if a == a else (math.nan, "age unknown")
                  for a in child["age_months"].unique()}
        nan_label = next((v for a, v in by_age.items() if a != a), None)  # NaN is no dict key to look up
        labels = [by_age[a] if a == a else nan_label for a in child["age_months"]]
        child = child.assign(age_bin_start=[lo for lo, _ in labels], age_bin=[lab for _, lab in labels])
        # one groupby, not one boolean mask per child (thousands of children at corpus scale)
        for who, sub in [*child.groupby("child", sort=True), ("all", child)]:
            for (start, label), g in sub.groupby(["age_bin_start", "age_bin"], dropna=False):
                groups.append(({"source": "childes", "child": who, "age_bin": label, "age_bin_start": start,
                                "unit": "utterance"}, g))
    model = units[units["source"] == "model"]
    for ckpt, g in model.groupby("checkpoint_id", sort=False) if not model.empty else []:
        groups.append(({"source": "model", "checkpoint": ckpt, "model_family": g["model_family"].iloc[0],
                        "val_loss": g["val_loss"].iloc[0], "val_bpc": g["val_bpc"].iloc[0],
                        "unit": "sentence"}, g))
    return groups


def _hit_counts(units: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Per unit (aligned to units.index): hits of each rate name (type, and type/kind for SUB_KINDS), and
    whether the unit has one of the sub-kinds; one pass over the hits instead of one per group and type."""
    names = [n for t in ERROR_TYPES for n in (t, *(f"{t}/{k}" for k in SUB_KINDS.get(t, ())))]
    column = {n: i for i, n in enumerate(names)}
    counts = np.zeros((len(units), len(names)), dtype=np.int64)
    flags = [f"has_{t}" for t in ERROR_TYPES]
    # a unit with a hit of a counted type has that type's has_ flag (iter_detect / _assemble_units set them from
    # the hits): only those units are visited, not every unit of the corpus
    rows = (np.flatnonzero(units[flags].to_numpy(dtype=bool).any(axis=1)) if all(f in units for f in flags)
            else range(len(units)))
    all_hits = units["hits"].to_numpy()
    for row in rows:
        for h in all_hits[row]:
            t = h["error_type"]
            if t in column:
                counts[row, column[t]] += 1
                sub = column.get(f"{t}/{h['kind']}")
                if sub is not None:
                    counts[row, sub] += 1
    frame = pd.DataFrame(counts, index=units.index, columns=names)
    return frame, frame > 0


RATE_COLUMNS = tuple(f"has_{t}" for t in ERROR_TYPES)
MEASURE_COLUMNS = ("n_morphemes", "n_words", "n_clauses", "words", "file", "doc_id")


def rate_table(units: pd.DataFrame, config: CompareConfig, groups: list[tuple[dict, pd.DataFrame]] | None = None
               ) -> pd.DataFrame:
    """Rates per group; `groups`: `_group_keys(units, config, <columns incl. RATE_COLUMNS>)` of a units frame with
    a RangeIndex, when the caller has them already (childes_compare shares one grouping with measure_table)."""
    rows = []
    if groups is None or not isinstance(units.index, pd.RangeIndex) or units.index.start != 0 or units.index.step != 1:
        units = units.reset_index(drop=True)  # group indices are then row positions (the index is not in the output)
        groups = _group_keys(units, config, RATE_COLUMNS)
    if not groups:
        return _order_columns(pd.DataFrame(rows))
    hit_counts, has_sub = _hit_counts(units)
    # one integer matrix (units x [has_<type>..., hits per rate name..., has_<sub-kind>...]) summed over each group's
    # rows by position: thousands of groups, so no per-group pandas .loc / Series sums (the same integer sums)
    names = list(hit_counts.columns)
    subs = [f"{t}/{kind}" for t in ERROR_TYPES for kind in SUB_KINDS.get(t, ())]
    matrix = np.column_stack([units[f"has_{t}"].to_numpy(dtype=np.int64) for t in ERROR_TYPES]
                             + [hit_counts.to_numpy(dtype=np.int64), has_sub[subs].to_numpy(dtype=np.int64)])
    at_has = {t: j for j, t in enumerate(ERROR_TYPES)}
    at_hits = {n: len(ERROR_TYPES) + j for j, n in enumerate(names)}
    at_sub = {n: len(ERROR_TYPES) + len(names) + j for j, n in enumerate(subs)}
    for key, g in groups:
        n = len(g)
        sums = matrix[g.index.to_numpy()].sum(axis=0)
        for t in ERROR_TYPES:
            entries = [(t, int(sums[at_has[t]]))]
            entries += [(f"{t}/{kind}", int(sums[at_sub[f"{t}/{kind}"]])) for kind in SUB_KINDS.get(t, ())]
            for name, count in entries:
                rows.append(({**key, "error_type": name}, count, n, int(sums[at_hits[name]])))
    # one vectorised Wilson call for every row (thousands of scalar statsmodels calls took seconds)
    los, his = wilson_cis(np.array([r[1] for r in rows]), np.array([r[2] for r in rows]))
    return _order_columns(pd.DataFrame([
        {**key, "rate": 100.0 * count / n, "ci_low": 100.0 * lo, "ci_high": 100.0 * hi, "n": n, "count": count,
         "hits": hits} for (key, count, n, hits), lo, hi in zip(rows, los, his, strict=True)]))


def _mean_ci(values, config: CompareConfig) -> tuple[float, float, float, int]:
    """Mean and percentile bootstrap CI over units (evalsuite.stats.bootstrap_ci)."""
    ci = bootstrap_ci(np.asarray(list(values), dtype=float), n_boot=config.n_bootstrap, seed=config.seed)
    return ci.estimate, ci.ci_low, ci.ci_high, ci.n


def _mean_cis(columns: Sequence[np.ndarray], config: CompareConfig) -> list[tuple[float, float, float, int]]:
    """`_mean_ci` of each of several equally long columns, from one shared draw (evalsuite.stats.bootstrap_mean_cis)."""
    return [(ci.estimate, ci.ci_low, ci.ci_high, ci.n)
            for ci in bootstrap_mean_cis(columns, n_boot=config.n_bootstrap, seed=config.seed)]


def measure_table(units: pd.DataFrame, config: CompareConfig, groups: list[tuple[dict, pd.DataFrame]] | None = None
                  ) -> pd.DataFrame:
    """Measures per group; `groups`: `_group_keys(units, config, <columns incl. MEASURE_COLUMNS>)`, when the caller
    has them already."""
    rows = []
    doc_col = {"childes": "file", "model": "doc_id"}
    if groups is None:
        groups = _group_keys(units, config, MEASURE_COLUMNS)
    # a transcript lies whole in its child's age-bin group and in the all-children group: its MATTR / TTR are
    # computed once and reused when a group holds all of its units (same words in the same order, so the same value)
    totals = {src: units.loc[units["source"] == src, col].value_counts(dropna=True).to_dict()
              for src, col in doc_col.items() if col in units} if groups else {}
    lexical: dict[tuple[str, object], tuple[float, float]] = {}
    for key, g in groups:
        cols = (("mlu_morphemes", "n_morphemes"), ("mlu_words", "n_words"), ("clause_density", "n_clauses"))
        for (name, _), (value, lo, hi, _) in zip(cols, _mean_cis([g[c].to_numpy() for _, c in cols], config), strict=True):
            rows.append({**key, "measure": name, "value": value, "ci_low": lo, "ci_high": hi, "n": len(g),
                         "ci_method": "percentile bootstrap over units"})
        source, col = key["source"], doc_col[key["source"]]
        sizes = g.groupby(col).size()  # the documents in groupby order, as the per-document lists were built
        total = totals.get(source, {})
        todo = [d for d, k in sizes.items() if (source, d) not in lexical or k != total.get(d)]
        values: dict[object, tuple[float, float]] = {}
        if todo:
            sub = g if len(todo) == len(sizes) else g[g[col].isin(todo)]
            for d, words in sub.groupby(col)["words"].agg(lambda s: [w for ws in s for w in ws]).items():
                values[d] = (measures.mattr(words, config.mattr_window), measures.ttr(words))
                if sizes[d] == total.get(d):
                    lexical[(source, d)] = values[d]
        per_doc = [values[d] if d in values else lexical[(source, d)] for d in sizes.index]
        for j, name in enumerate(("mattr", "ttr")):
            vals = [v[j] for v in per_doc]
            value, lo, hi, _ = _mean_ci(vals, config)
            rows.append({**key, "measure": name, "value": value, "ci_low": lo, "ci_high": hi, "n": len(vals),
                         "ci_method": "mean over documents, percentile bootstrap over documents"})
    return _order_columns(pd.DataFrame(rows))


ORDER = ["source", "child", "age_bin", "age_bin_start", "checkpoint", "model_family", "val_loss", "val_bpc", "unit"]


def _order_columns(frame: pd.DataFrame) -> pd.DataFrame:
    if frame.empty:
        return frame
    for col in ORDER:
        if col not in frame:
            frame[col] = np.nan
    return frame[ORDER + [c for c in frame.columns if c not in ORDER]]


def hits_table(units: pd.DataFrame) -> pd.DataFrame:
    """Every hit with the unit text it came from (traceability)."""
    rows = []
    if units.empty:
        return pd.DataFrame(rows)
    # only units with a hit give rows (a minority at corpus scale); plain lists, not element-wise iteration over
    # Arrow-backed columns
    units = units[[len(hs) > 0 for hs in units["hits"]]]
    none = [None] * len(units)
    columns = (list(units.index), *(units[c].tolist() if c in units else none for c in (
        "source", "doc_id", "checkpoint_id", "child", "age_months", "hits", "text")))
    # plain column iteration: iterrows builds a Series per unit, minutes at corpus scale
    for idx, source, doc_id, ckpt, child, age, hs, text in zip(*columns, strict=True):
        for h in hs:
            rows.append({"unit_row": idx, "source": source, "doc_id": doc_id,
                         "checkpoint": ckpt if source == "model" else None,
                         "child": child if source == "childes" else None,
                         "age_months": age, **h, "unit_text": text})
    return pd.DataFrame(rows)


# ----------------------------------------------------------------------------- entry point


def childes_compare(
    childes_paths: Sequence[str | os.PathLike],
    samples_paths: Sequence[str | os.PathLike] = (),
    config: CompareConfig | None = None,
    progress: bool = False,
) -> CompareResult:
    config = config or CompareConfig()
    config.validate()
    if not childes_paths:
        raise UserError("no CHILDES data given")
    import time

    clock = {"start": time.perf_counter()}

    def lap(stage: str) -> None:  # wall seconds per stage, in meta `stage_seconds` (what a slow run spent on what)
        clock[stage] = time.perf_counter()

    samples = read_samples(samples_paths) if samples_paths else None
    loaded = load_children(childes_paths, config, progress)
    frame = loaded.utterances
    lap("read_chat")
    child_units, unit_stats = analyze_children_cached(frame, config, progress)
    if child_units.empty:
        raise UserError("no analysable child utterances (all empty or unintelligible)")
    lap("child_units")
    story_units = analyze_stories(samples, config, _shared_nlp(), progress) if samples is not None else pd.DataFrame()
    units = pd.concat([child_units, story_units], ignore_index=True)
    lap("story_units")

    summary = CompareSummary(
        n_children=int(child_units["child"].nunique()), n_transcripts=int(child_units["file"].nunique()),
        n_child_utterances=len(child_units),
        n_checkpoints=int(story_units["checkpoint_id"].nunique()) if not story_units.empty else 0,
        n_story_sentences=len(story_units),
    )
    val, disagreements = validation.validate_by_split(child_units, n_boot=config.n_bootstrap, seed=config.seed)
    inventory = validation.code_inventory(child_units)
    mlu_per_file, mlu_summary = validation.mlu_agreement(child_units)
    lap("validation")

    _summarise(summary, val, mlu_summary, samples)
    dev_cv, dev_ages, age_model_info = _developmental_ages(frame, samples, config, summary)
    lap("age_model")
    # one grouping (child x age bin, checkpoint) for both tables: splitting 1.4 M units into groups costs seconds
    groups = _group_keys(units, config, (*RATE_COLUMNS, *MEASURE_COLUMNS))
    rates, measure_rows = rate_table(units, config, groups), measure_table(units, config, groups)
    hits = hits_table(units)
    lap("tables")
    meta = _meta(config, childes_paths, samples_paths, summary)
    meta["chat_transcripts"] = transcript_counts(loaded.transcripts, loaded.issues)
    meta["unit_cache"] = unit_stats
    meta["age_model"] = age_model_info
    names = list(clock)
    meta["stage_seconds"] = {b: round(clock[b] - clock[a], 2) for a, b in zip(names, names[1:], strict=False)}
    return CompareResult(
        rates=rates, measures=measure_rows, units=units,
        hits=hits, validation=val, disagreements=disagreements, code_inventory=inventory,
        mlu_agreement=mlu_per_file, mlu_summary=mlu_summary, summary=summary, meta=meta,
        dev_age_cv=dev_cv, dev_checkpoint_ages=dev_ages, chat_issues=loaded.issues, transcripts=loaded.transcripts,
    )


# column definitions of chat_issues.csv (corpora.chat.ISSUE_COLUMNS), for the commands that write it
CHAT_ISSUE_DEFS = {
    "source": ("the CHAT path given (file, folder or TalkBank zip)", "corpora.chat.parse_transcript"),
    "file": ("transcript inside the source (empty when the whole source could not be read)", "corpora.chat.parse_transcript"),
    "corpus": ("corpus the transcript belongs to", "corpora.chat.parse_transcript"),
    "utt_index": ("utterance index in the transcript for a per-utterance issue, else empty", "corpora.chat.parse_transcript"),
    "speaker": ("speaker of that utterance, else empty", "corpora.chat.parse_transcript"),
    "severity": ("error: transcript not read; warning: read with a problem; info: read, something a measure "
                 "needs is absent", "corpora.chat.parse_transcript"),
    "kind": ("the problem (strict_parse_error, mor_misalignment, no_mor, no_child_age, corrupt_member, ...)",
             "corpora.chat.parse_transcript"),
    "message": ("pylangacq's or the reader's message", "corpora.chat.parse_transcript"),
}



def transcript_counts(transcripts: pd.DataFrame, issues: pd.DataFrame) -> dict:
    """How many transcripts were found, read, read with a warning, listed with an info note, and not read
    (the numbers a command prints so that a run is never silently over fewer transcripts)."""
    def files(severity: str) -> int:
        rows = issues[issues["severity"] == severity]
        return int(rows[["source", "file"]].drop_duplicates().shape[0])

    sources_unreadable = int((issues["kind"] == "unreadable_source").sum())
    return {"found": len(transcripts), "read": int(transcripts["read"].sum()),
            "unreadable": int((~transcripts["read"]).sum()), "with_warnings": files("warning"),
            "with_info": files("info"), "with_issues": int(issues[["source", "file"]].drop_duplicates().shape[0]),
            "issue_rows": len(issues), "sources_unreadable": sources_unreadable}


# the age model shipped with the package (`evalsuite childes-age --fit` on every shared CHILDES child; its
# cv_summary.csv and meta.json lie beside it): childes-compare applies it instead of refitting on every run
SHIPPED_AGE_MODEL = Path(__file__).resolve().parent / "data" / "age_model"


def _saved_model_info(directory: Path) -> dict:
    """What meta.json records of a saved age model: where it is, the code version and training set it came from."""
    info: dict = {"source": "saved", "path": str(directory)}
    meta_file = directory / "meta.json"
    if meta_file.is_file():
        meta = json.loads(meta_file.read_text(encoding="utf-8"))
        info |= {"code_version": meta.get("code_version"), "created_utc": meta.get("created_utc"),
                 "n_training_children": meta.get("n_children"), "n_training_transcripts": meta.get("n_transcripts"),
                 "fit_config": meta.get("config")}
    return info


def _developmental_ages(frame: pd.DataFrame, samples: pd.DataFrame | None, config: CompareConfig,
                        summary: CompareSummary) -> tuple[pd.DataFrame, pd.DataFrame, dict]:
    """The childes-age model (evalsuite.childes.developmental_age) applied to the checkpoints, and the
    loss-to-age test of evalsuite.childes.loss_age: its verdict is the verdict. By default the model is the
    shipped one (or `config.age_model`), with the by-child/by-corpus CV saved beside it; with
    `config.refit_age_model` it is fit and cross-validated on these children (minutes at corpus scale).
    Returns (CV summary, checkpoint ages, meta `age_model`)."""
    from evalsuite.childes import developmental_age as dev
    from evalsuite.childes.age_features import document_features, sentences_frame
    from evalsuite.childes.loss_age import LossAgeConfig, loss_age_test

    fit_config = dev.AgeFitConfig(min_utterances=config.min_units_per_transcript, n_boot=config.n_bootstrap,
                                  seed=config.seed)
    model, no_model_reason = None, ""
    if config.refit_age_model:
        docs = document_features(frame, "file")
        n_children = dev.training_table(docs, fit_config)["child_id"].nunique()
        fit = dev.fit_and_validate(docs, fit_config) if n_children >= 3 else None
        cv = fit.summary if fit is not None else pd.DataFrame()
        model = fit.model if fit is not None else None
        ages_range = (fit_config.min_age_months, fit_config.max_age_months)
        info = {"source": "refit on the given children", "n_training_children": int(n_children),
                "fit_config": asdict(fit_config)}
        described = "fit on these children"
        no_model_reason = (f"no age model: {n_children} child(ren) with ages {ages_range[0]:g}-{ages_range[1]:g} "
                           "months (needs >= 3)")
    else:
        directory = Path(config.age_model).expanduser() if config.age_model else SHIPPED_AGE_MODEL
        model = dev.load_model(directory)
        directory = directory if directory.is_dir() else directory.parent
        info = _saved_model_info(directory)
        info["source"] = "shipped" if directory == SHIPPED_AGE_MODEL else "saved"
        cv_file = directory / "cv_summary.csv"
        cv = pd.read_csv(cv_file) if cv_file.is_file() else pd.DataFrame()
        info["cv_summary"] = str(cv_file) if cv_file.is_file() else None
        fitted = info.get("fit_config") or {}
        ages_range = (fitted.get("min_age_months", fit_config.min_age_months),
                      fitted.get("max_age_months", fit_config.max_age_months))
        commit = (info.get("code_version") or {}).get("git_commit") or "unknown"
        described = (f"{info['source']} model {directory.name}, fit at commit {commit[:10]} on "
                     f"{info.get('n_training_children', '?')} children; its own CV, not refit on these children")
    for row in cv.itertuples(index=False):
        summary.statements.append(
            f"Age model ({described}; {row.scheme}, {row.n_children} children, {row.n_transcripts} transcripts aged "
            f"{ages_range[0]:g}-{ages_range[1]:g} months): {row.method} MAE {row.mae_months:.1f} "
            f"[{row.mae_ci_low:.1f}, {row.mae_ci_high:.1f}] months.")
    if samples is None:
        return cv, pd.DataFrame(), info
    table = samples.assign(run=[dev.run_of(c, f) for c, f in zip(samples["checkpoint"], samples["samples_file"], strict=True)])
    ckpt_docs = document_features(sentences_frame(table), "checkpoint_id", clan_unintelligible=False)
    if model is not None:
        ages = dev.apply_model(model, pd.DataFrame(), ckpt_docs)
    else:
        ages = ckpt_docs.assign(predicted_age_months=math.nan, ci_low=math.nan, ci_high=math.nan, in_range=False,
                                out_of_range_reason=no_model_reason)
    result = loss_age_test(ages, LossAgeConfig(seed=config.seed))
    summary.loss_age = result.as_dict()
    summary.statements.append(result.statement())
    summary.verdict = result.verdict
    return cv, ages, info


def _summarise(summary, val, mlu_summary, samples) -> None:
    s = summary.statements
    s.append(f"CHILDES: {summary.n_child_utterances} analysable CHI utterances from {summary.n_transcripts} "
             f"transcripts of {summary.n_children} child(ren).")
    for _, row in val.iterrows():
        if row["n_codes"] >= validation.MIN_CODES_FOR_ESTIMATE:
            s.append(f"Validation {row['target']} ({row['split']}: {row['corpora']}): precision {row['precision']:.2f} "
                     f"[{row['precision_ci_low']:.2f}, {row['precision_ci_high']:.2f}] "
                     f"({int(row['tp_hits'])}/{int(row['n_hits'])}), recall {row['recall']:.2f} "
                     f"[{row['recall_ci_low']:.2f}, {row['recall_ci_high']:.2f}] "
                     f"({int(row['tp_codes'])}/{int(row['n_codes'])} human codes).")
    m = mlu_summary.get("morphemes", {})
    if m:
        s.append(f"MLU in morphemes, text parse vs %mor, per transcript (n = {mlu_summary['n_files']}): Pearson r = "
                 f"{m['pearson_r']:.3f}, Lin's CCC = {m['ccc']:.3f}, mean difference {m['mean_diff']:+.3f}, "
                 f"mean |difference| {m['mean_abs_diff']:.3f} morphemes ({100 * m['mean_abs_rel_diff']:.1f} %); "
                 f"{100 * m['utterances_exact']:.1f} % of utterances count identically.")
    if samples is None:
        summary.verdict = "cannot be tested"
        s.append("No model samples given: the loss-to-age hypothesis cannot be tested.")
    else:  # the verdict is the loss-to-age test's (_developmental_ages)
        summary.caveats.append(
            "The seed's bands are in nats/token of GPT-2 on TinyStories; they are compared with val_bpc in bits per "
            f"character ({SEED_TOKENS_PER_CHAR:.4f} GPT-2 tokens per character, measured on 5 TinyStories stories).")
    summary.caveats.append(GENRE_CAVEAT)
    summary.caveats.append("Rates: share of units with >= 1 hit, x100; Wilson 95 % CI treating units as independent "
                           "(units cluster within transcripts/stories, so the true interval is wider).")
    summary.caveats.append("pronoun_antecedent in conversation counts exophoric reference (a person in the room) as "
                           "no_antecedent; compare its gender_mismatch sub-kind across genres.")


def _meta(config, childes_paths, samples_paths, summary) -> dict:
    import platform
    from importlib.metadata import version

    import pylangacq

    return {
        "command": "childes-compare",
        "config": asdict(config),
        "inputs": {"childes": [str(p) for p in childes_paths], "samples": [str(p) for p in samples_paths]},
        "versions": {"python": platform.python_version(), "spacy": version("spacy"),
                     "spacy_model": spacy_model_version(), "pylangacq": pylangacq.__version__,
                     "scikit-learn": version("scikit-learn"), "pandas": pd.__version__, "numpy": np.__version__},
        "ci_method": {"rates": "Wilson score 95% over units (independence assumed)",
                      "measures": "percentile bootstrap 95%",
                      "age": "evalsuite.childes.developmental_age prediction interval (checkpoint_dev_ages.csv)"},
        "hypothesis_bands_nats_per_token": [list(b) for b in HYPOTHESIS],
        "hypothesis_bands_bits_per_char": [[seed_nats_to_bpc(b[0]), seed_nats_to_bpc(b[1]), *b[2:]] for b in HYPOTHESIS],
        "seed_tokens_per_char": SEED_TOKENS_PER_CHAR,
        "summary": asdict(summary),
    }
