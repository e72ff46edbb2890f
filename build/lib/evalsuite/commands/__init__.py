"""One module per command group; each exposes `register(app: typer.Typer)`."""

from evalsuite.commands import (
    childes,
    corpora,
    demo,
    diagnose,
    dim_probe,
    figures,
    generate,
    gpt_eval,
    tokenizer,
    train,
)

COMMAND_MODULES = [corpora, tokenizer, train, generate, gpt_eval, dim_probe, childes, figures, diagnose, demo]
