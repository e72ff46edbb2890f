"""The one option vocabulary of the commands: `-o/--out` for every output location, `--data-dir`,
`--device`, `--progress/--no-progress`. Old spellings (`--output`, `--out-dir`, `--csv`) stay as
hidden aliases so scripts keep working; `resolve_out` merges an alias into `--out`."""

from __future__ import annotations

from typing import TypeVar

from corpora.errors import UserError

T = TypeVar("T")


def resolve_out(out: T | None, alias: T | None, alias_name: str, default: T | None = None) -> T | None:
    """`--out` if given, else the old spelling's value, else `default`; both given and different is an error."""
    if out is not None and alias is not None and out != alias:
        raise UserError(f"give the output once: -o/--out {out} and {alias_name} {alias} disagree")
    if out is not None:
        return out
    return alias if alias is not None else default
