"""One module per command group; each exposes `register(app: typer.Typer)`."""

from evalsuite.commands import (
    childes,
    childes_age,
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

COMMAND_MODULES = [corpora, tokenizer, train, generate, gpt_eval, dim_probe, childes, childes_age, figures, diagnose, demo]
