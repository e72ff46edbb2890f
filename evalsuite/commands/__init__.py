"""One module per command, named after it; each exposes `register(app: typer.Typer)`."""

from evalsuite.commands import (
    childes_age,
    childes_compare,
    compress,
    corpora,
    demo,
    diagnose,
    dim_probe,
    dynamics,
    figures,
    generate,
    gpt_eval,
    report,
    tokenizer,
    train,
)

COMMAND_MODULES = [
    corpora, tokenizer, train, compress, generate, gpt_eval, dim_probe, childes_compare, childes_age, figures, report,
    diagnose, dynamics, demo,
]
