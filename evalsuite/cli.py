"""The `evalsuite` command line: a thin typer layer over library functions.

Each command lives in `evalsuite/commands/<name>.py` and exposes `register(app)`.
Heavy imports (torch, spaCy, pandas) happen inside the command functions so that
`evalsuite --help` stays fast. Library code never prints; commands do.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager

import click
import typer

from corpora.errors import UserError
from evalsuite.commands import COMMAND_MODULES

try:  # typer >= 0.2x vendors its own click: its usage errors are not click.ClickException
    from typer._click.exceptions import ClickException as _TyperClickException
    from typer._click.exceptions import UsageError as _TyperUsageError
except ImportError:  # pragma: no cover - older typer uses click itself
    _TyperClickException = click.ClickException
    _TyperUsageError = click.UsageError

app = typer.Typer(
    name="evalsuite",
    help="Train small LMs on children's stories and measure how their language develops.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


def version_line() -> str:
    """`evalsuite <version> (git <commit>[, dirty])`, or `(not a git checkout)` for an installed wheel."""
    from corpora.provenance import code_version

    cv = code_version()
    if cv["git_commit"] is None:
        where = "not a git checkout"
    else:
        where = f"git {cv['git_commit']}" + (", uncommitted changes" if cv["git_dirty"] else "")
    return f"evalsuite {cv['version'] or 'unknown'} ({where})"


def _print_version(value: bool) -> None:
    if value:
        typer.echo(version_line())
        raise typer.Exit()


@app.callback()
def _root(
    version: bool = typer.Option(False, "--version", is_eager=True, callback=_print_version,
                                 help="Print the package version and git commit, then exit."),
) -> None:
    """Train small LMs on children's stories and measure how their language develops."""


for module in COMMAND_MODULES:
    module.register(app)


# Width of rich output when stdout is not a terminal (a pipe, a file, a CI log): rich would fall back
# to 80 columns and cut or fold table cells; wide enough for every table the commands print.
PIPED_WIDTH = 200


@contextmanager
def piped_width(width: int = PIPED_WIDTH) -> Iterator[None]:
    """Tables print at full width when piped: sets COLUMNS (which every rich Console reads) unless the
    user set it or stdout is a terminal; restored afterwards."""
    if "COLUMNS" in os.environ or _isatty(sys.stdout):
        yield
        return
    os.environ["COLUMNS"] = str(width)
    try:
        yield
    finally:
        os.environ.pop("COLUMNS", None)


def _isatty(stream: object) -> bool:
    try:
        return bool(stream.isatty())  # type: ignore[attr-defined]
    except (AttributeError, ValueError):  # a replaced or closed stream
        return False


def main(argv: list[str] | None = None) -> None:
    """Entry point: user errors become one line on stderr and exit code 2."""
    from evalsuite.results import invocation

    recorded = ["evalsuite", *(sys.argv[1:] if argv is None else argv)]
    try:
        with invocation(recorded), piped_width():
            code = app(args=argv, prog_name="evalsuite", standalone_mode=False)
    except UserError as err:
        typer.secho(f"error: {err}", fg="red", err=True)
        sys.exit(2)
    except (click.exceptions.Abort, typer.Abort):
        typer.secho("aborted", err=True)
        sys.exit(130)
    except (click.UsageError, _TyperUsageError) as err:
        if type(err).__name__ == "NoArgsIsHelpError":  # `evalsuite CMD` alone: its help, as click prints it
            err.show()
            sys.exit(err.exit_code)
        # a bad option value is bad input like any other: one line, the command's --help named
        where = f" (see '{err.ctx.command_path} --help')" if err.ctx is not None else ""
        typer.secho(f"error: {err.format_message()}{where}", fg="red", err=True)
        sys.exit(err.exit_code)
    except (click.ClickException, _TyperClickException) as err:
        err.show()
        sys.exit(err.exit_code)
    sys.exit(code if isinstance(code, int) else 0)


if __name__ == "__main__":
    main()
