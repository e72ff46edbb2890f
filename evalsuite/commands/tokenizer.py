"""CLI commands: `evalsuite tokenizer train|report`.

Thin layer over corpora.tokenizers / corpora.tokenizer_report: those return data, these print a
rich table and write files.
"""

from __future__ import annotations

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
    out: Path | None = typer.Option(
        None, "--out", "-o",
        help="Directory to save the tokenizer into (default: with the corpus, tokenizer-bpe<VOCAB>/ in the corpus's "
             "folder, or in the cache folder of a registry source)."),
    output_alias: Path | None = typer.Option(None, "--output", hidden=True, help="Old spelling of --out."),
    min_frequency: int = typer.Option(2, "--min-frequency", min=1, help="Merge only pairs seen this often."),
    force: bool = typer.Option(False, "--force", help="Overwrite a tokenizer already saved in OUTPUT."),
    progress: bool = typer.Option(True, "--progress/--no-progress", help="Show the trainer's progress bar."),
) -> None:
    """Train a byte-level BPE (HF tokenizers) on a corpus and save it (tokenizer.json + meta)."""
    from rich.console import Console
    from rich.table import Table

    from corpora.documents import iter_documents
    from corpora.tokenizers import META_FILE, train_bpe
    from evalsuite.commands._options import resolve_out

    output = resolve_out(out, output_alias, "--output")
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
    out: Path | None = typer.Option(None, "--out", "-o", help="CSV to write (default results/tokenizer/report.csv; a .meta.json goes beside it)."),
    csv_alias: Path | None = typer.Option(None, "--csv", hidden=True, help="Old spelling of --out."),
    data_dir: Path | None = typer.Option(None, "--data-dir", help="Reference data folder (for gpt2/)."),
) -> None:
    """Tokens per character and word, UNK rate, vocabulary use and article-token frequency."""
    from corpora.documents import read_documents
    from corpora.tokenizer_report import tokenizer_report
    from corpora.tokenizers import load_tokenizer
    from evalsuite.commands._options import resolve_out
    from evalsuite.results import write_meta, write_table

    csv = resolve_out(out, csv_alias, "--csv", DEFAULT_REPORT_CSV)
    specs = tokenizer or ["gpt2", "char"]
    corpora = _read_corpora(corpus_paths, read_documents)
    reference = next(iter(corpora.values()))
    toks = [load_tokenizer(spec, data_dir, docs=reference if spec == "char" else None) for spec in specs]
    frame = tokenizer_report(corpora, toks)
    for spec, tok in zip(specs, toks, strict=True):
        if spec == "char":  # say which corpus the vocabulary (and so the UNK rate) comes from
            built_here = frame["tokenizer_identity"] == tok.identity
            frame.loc[built_here, "unk_note"] = f"char vocabulary built from {next(iter(corpora))}"
    write_table(frame, csv)
    meta_path = write_meta(csv.with_suffix(".meta.json"),
                           _report_meta(corpus_paths, corpora, specs, toks, data_dir, frame, csv.name))
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


_R = "corpora.tokenizer_report.tokenizer_report"
REPORT_COLUMNS: dict[str, str] = {
    "corpus": "corpus name (file stem, or the path when two stems are equal)",
    "tokenizer": "tokenizer name",
    "tokenizer_identity": "tokenizer identity (changes when the vocabulary changes)",
    "vocab_size": "vocabulary size",
    "n_documents": "documents in the corpus",
    "n_chars": "characters of the documents",
    "n_words": "whitespace-separated words",
    "n_tokens": "tokens, each document encoded alone, no end-of-text tokens",
    "tokens_per_char": "n_tokens / n_chars",
    "tokens_per_word": "n_tokens / n_words",
    "unk_rate": "share of tokens that are the unknown token (0 by construction for byte-level BPE)",
    "unk_note": "why unk_rate is what it is (e.g. which corpus built the char vocabulary)",
    "vocab_used": "distinct token ids used on the corpus",
    "vocab_used_share": "vocab_used / vocab_size",
    "article_token_share": "share of tokens that are a whole-word article (the/a/an) token",
    "article_id_share": "share of tokens whose id is an article id (also inside words)",
    "share_the": "share of tokens that are a whole-word 'the'",
    "share_a": "share of tokens that are a whole-word 'a'",
    "share_an": "share of tokens that are a whole-word 'an'",
    "article_word_share": "share of whitespace words that are the/a/an",
    "article_ids": "article token ids derived from the tokenizer (corpora.tokenizers.article_token_ids)",
    "article_note": "why article shares are missing, when the tokenizer has no article tokens",
}


def _report_meta(paths, corpora, specs, toks, data_dir, frame, table_name: str) -> dict:
    from evalsuite.results import build_meta, column, describe_columns

    definitions = {name: column(text, _R) for name, text in REPORT_COLUMNS.items()}
    tokenizer_dirs = [Path(spec) for spec in specs if Path(spec).is_dir()]
    return build_meta(
        "tokenizer",
        config={"subcommand": "report", "tokenizers": list(specs), "data_dir": str(data_dir) if data_dir else None},
        inputs=[*paths, *tokenizer_dirs],
        columns={table_name: describe_columns(frame.columns, definitions, table_name)},
        outputs=[table_name],
        extra={
            "corpora": [
                {"name": name, "path": str(Path(path).resolve()), "n_documents": len(docs)}
                for (name, docs), path in zip(corpora.items(), paths, strict=True)
            ],
            "tokenizers": [
                {"spec": spec, "name": tok.name, "identity": tok.identity, "vocab_size": tok.vocab_size}
                for spec, tok in zip(specs, toks, strict=True)
            ],
            "counting": "each document encoded alone, no end-of-text tokens; words split on whitespace",
        },
    )


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
