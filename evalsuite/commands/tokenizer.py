"""CLI commands: `evalsuite tokenizer train|report`.

Thin layer over corpora.tokenizers / corpora.tokenizer_report: those return data, these print a
rich table and write files.
"""

from __future__ import annotations

import json
from pathlib import Path

import typer

from corpora.errors import UserError

tokenizer_app = typer.Typer(
    help="Tokenizers: train a byte-level BPE on a corpus; compare tokenizers on corpora.",
    no_args_is_help=True,
)

DEFAULT_REPORT_CSV = Path("results") / "tokenizer" / "report.csv"


def register(app: typer.Typer) -> None:
    """Add the `tokenizer` command group to the root app."""
    app.add_typer(tokenizer_app, name="tokenizer")


@tokenizer_app.command("train")
def train(
    corpus: str = typer.Argument(..., help="A .txt (<|endoftext|>-separated) or .jsonl corpus, a directory, or a "
                                           "registry name of stories (tinystories-subset: fetched first)."),
    vocab_size: int = typer.Option(10_000, "--vocab-size", help="Largest vocabulary: 256 bytes + <|endoftext|> + merges."),
    output: Path | None = typer.Option(
        None, "--output", "--out", "-o",
        help="Directory to save the tokenizer into (default: with the corpus, tokenizer-bpe<VOCAB>/ in the corpus's "
             "folder, or in the cache folder of a registry source)."),
    min_frequency: int = typer.Option(2, "--min-frequency", min=1, help="Merge only pairs seen this often."),
    force: bool = typer.Option(False, "--force", help="Overwrite a tokenizer already saved in OUTPUT."),
    progress: bool = typer.Option(True, "--progress/--no-progress", help="Show the trainer's progress bar."),
) -> None:
    """Train a byte-level BPE (HF tokenizers) on a corpus and save it (tokenizer.json + meta)."""
    from rich.console import Console
    from rich.table import Table

    from corpora.documents import iter_documents
    from corpora.tokenizers import META_FILE, train_bpe

    corpus_path = _corpus_file(corpus)
    if output is None:  # saved with the corpus
        home = corpus_path if corpus_path.is_dir() else corpus_path.parent
        output = home / f"tokenizer-bpe{vocab_size}"
    if (output / META_FILE).exists() and not force:
        raise UserError(f"{output} already holds a tokenizer; pass --force to overwrite it")
    tok = train_bpe(iter_documents(corpus_path), vocab_size, min_frequency=min_frequency, progress=progress)
    tok.save(output)
    corpus = tok.extra_meta["corpus"]
    table = Table(title=f"trained {tok.name}", show_header=False)
    for key, value in (
        ("saved to", str(output)),
        ("identity", tok.identity),
        ("vocab size", f"{tok.vocab_size} (asked {vocab_size})"),
        ("eot id", str(tok.eot_id)),
        ("corpus", str(corpus_path)),
        ("documents", f"{corpus['n_documents']:,}"),
        ("characters", f"{corpus['n_chars']:,}"),
    ):
        table.add_row(key, value)
    Console().print(table)
    if tok.vocab_size < vocab_size:
        typer.secho(
            f"note: the corpus had pairs for only {tok.vocab_size} tokens at min frequency {min_frequency}",
            err=True,
        )


def _corpus_file(spec: str) -> Path:
    """A path as given, or the documents file of a registry source of stories (fetched into the cache)."""
    from corpora.fetch import fetch
    from corpora.sources import resolve_source

    source = resolve_source(spec)
    if source.is_local:
        assert source.path is not None
        return source.path
    if source.kind != "stories":
        raise UserError(f"{spec} is a {source.kind} source: train a tokenizer on text, e.g. the train.jsonl "
                        "of `evalsuite corpora build-cds`")
    fetched = fetch(source, progress=False)
    return fetched / source.filename if source.is_collection else fetched


@tokenizer_app.command("report")
def report(
    corpus_paths: list[Path] = typer.Argument(..., help="Corpora (.txt/.jsonl files or directories); the first is the reference."),
    tokenizer: list[str] | None = typer.Option(
        None, "--tokenizer", "-t",
        help="'gpt2', 'char' (vocabulary built from the first corpus) or a saved tokenizer directory; "
             "repeat for several. Default: gpt2 and char.",
    ),
    csv: Path = typer.Option(DEFAULT_REPORT_CSV, "--csv", help="Where to write the table (a .meta.json goes beside it)."),
    data_dir: Path | None = typer.Option(None, "--data-dir", help="Reference data folder (for gpt2/)."),
) -> None:
    """Tokens per character and word, UNK rate, vocabulary use and article-token frequency."""
    from corpora.documents import read_documents
    from corpora.tokenizer_report import tokenizer_report
    from corpora.tokenizers import load_tokenizer

    specs = tokenizer or ["gpt2", "char"]
    corpora = _read_corpora(corpus_paths, read_documents)
    reference = next(iter(corpora.values()))
    toks = [load_tokenizer(spec, data_dir, docs=reference if spec == "char" else None) for spec in specs]
    frame = tokenizer_report(corpora, toks)
    for spec, tok in zip(specs, toks, strict=True):
        if spec == "char":  # say which corpus the vocabulary (and so the UNK rate) comes from
            built_here = frame["tokenizer_identity"] == tok.identity
            frame.loc[built_here, "unk_note"] = f"char vocabulary built from {next(iter(corpora))}"
    csv.parent.mkdir(parents=True, exist_ok=True)
    frame.to_csv(csv, index=False)
    meta_path = csv.with_suffix(".meta.json")
    meta_path.write_text(json.dumps(_report_meta(corpus_paths, corpora, specs, toks, data_dir), indent=2) + "\n")
    _print_report(frame)
    typer.echo(f"wrote {csv} and {meta_path}")


def _read_corpora(paths: list[Path], read_documents) -> dict[str, list[str]]:
    stems = [p.stem for p in paths]
    corpora: dict[str, list[str]] = {}
    for path, stem in zip(paths, stems, strict=True):
        name = stem if stems.count(stem) == 1 else str(path)
        if name in corpora:
            raise UserError(f"corpus {path} given twice")
        corpora[name] = read_documents(path)
    return corpora


def _report_meta(paths, corpora, specs, toks, data_dir) -> dict:
    from datetime import datetime, timezone
    from importlib.metadata import version

    return {
        "command": "evalsuite tokenizer report",
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "corpora": [
            {"name": name, "path": str(Path(path).resolve()), "n_documents": len(docs)}
            for (name, docs), path in zip(corpora.items(), paths, strict=True)
        ],
        "tokenizers": [
            {"spec": spec, "name": tok.name, "identity": tok.identity, "vocab_size": tok.vocab_size}
            for spec, tok in zip(specs, toks, strict=True)
        ],
        "data_dir": str(data_dir) if data_dir else None,
        "versions": {"evalsuite": version("evalsuite"), "tokenizers": version("tokenizers")},
        "counting": "each document encoded alone, no end-of-text tokens; words split on whitespace",
    }


def _print_report(frame) -> None:
    from rich.console import Console
    from rich.table import Table

    shown = [
        ("corpus", "corpus", "{}"),
        ("tokenizer", "tokenizer", "{}"),
        ("vocab_size", "vocab", "{:,}"),
        ("n_tokens", "tokens", "{:,}"),
        ("tokens_per_char", "tok/char", "{:.3f}"),
        ("tokens_per_word", "tok/word", "{:.3f}"),
        ("unk_rate", "UNK rate", "{:.4f}"),
        ("vocab_used_share", "vocab used", "{:.4f}"),
        ("article_token_share", "article tok", "{:.4f}"),
        ("share_the", "the", "{:.4f}"),
        ("share_a", "a", "{:.4f}"),
        ("share_an", "an", "{:.4f}"),
        ("article_word_share", "article words", "{:.4f}"),
    ]
    table = Table(title="tokenizer report (shares are per token; article words per whitespace word)")
    for _, header, _ in shown:
        table.add_column(header, justify="left" if header in ("corpus", "tokenizer") else "right")
    for record in frame.to_dict("records"):
        cells = []
        for column, _, fmt in shown:
            value = record[column]
            cells.append("n/a" if isinstance(value, float) and value != value else fmt.format(value))
        table.add_row(*cells)
    console = Console()
    if not console.is_terminal:  # piped or logged: keep all columns rather than folding to 80
        console = Console(width=200)
    console.print(table)
    notes = {
        f"{r['tokenizer']}: {note}"
        for r in frame.to_dict("records")
        for note in (r["unk_note"], r["article_note"])
        if note
    }
    for note in sorted(notes):
        console.print(f"note: {note}")
