"""The Typer application object that every command module registers its command on. It sits
apart from app.py (which imports the command modules and runs them) so that command modules
and the entry point do not import each other."""

from __future__ import annotations

import typer
from typer.core import TyperCommand, TyperGroup


def _hide_flag_types(params: list) -> list:
    """Boolean flags (--help, --update, --checkpoints/--no-checkpoints) take no value: show no
    `<bool>` type beside them in the help (recent typer prints one for every parameter)."""
    for param in params:
        if getattr(param, "is_flag", False) and param.metavar is None:
            param.metavar = ""
    return params


class _Command(TyperCommand):
    def get_params(self, ctx):  # noqa: D102
        return _hide_flag_types(super().get_params(ctx))


class _Group(TyperGroup):
    def get_params(self, ctx):  # noqa: D102
        return _hide_flag_types(super().get_params(ctx))


class _App(typer.Typer):
    """typer.Typer whose commands render flags without a value marker (see _hide_flag_types)."""

    def command(self, *args, cls=None, **kwargs):  # noqa: D102
        return super().command(*args, cls=cls or _Command, **kwargs)


app = _App(
    cls=_Group,
    name="bimix-bench",
    help="Matched-budget benchmarks of BiMix-LM against Transformer, Mamba-style and "
    "linear-attention token mixers: train and score every model under one budget, record "
    "quality and tokens/s, compare runs.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    # Markdown joins a docstring's wrapped lines into paragraphs that reflow to the terminal.
    rich_markup_mode="markdown",
)
