"""The `bimix-bench` command line. One module per command group; this file wires them up
and turns user mistakes into one clear line on stderr and exit status 2."""

from __future__ import annotations

import sys
import warnings

import typer
from typer.core import TyperCommand, TyperGroup

try:  # typer >= 0.20 vendors its own copy of click
    from typer._click import exceptions as click_exceptions
    from typer._click.utils import echo
except ImportError:  # older typer runs on click itself
    from click import exceptions as click_exceptions
    from click import echo

from bimix_bench.errors import UsageError


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

# Command modules register themselves on `app` when imported.
from bimix_bench.cli import compare_cmd, list_cmd, run_cmd  # noqa: E402,F401

for _optional in ("gates_cmd", "speed_cmd", "check_cmd"):
    try:
        __import__(f"bimix_bench.cli.{_optional}")
    except ModuleNotFoundError as _err:
        if _err.name != f"bimix_bench.cli.{_optional}":
            raise


def _show_warning(message, category, filename, lineno, file=None, line=None) -> None:
    """Warnings on one line, `warning: MESSAGE`, instead of Python's two-line format with the
    source file, line and code (meaningless to someone running the command)."""
    text = " ".join(str(message).split())
    try:
        (file or sys.stderr).write(f"warning: {text}\n")
    except OSError:  # stderr gone: nothing sensible left to do with a warning
        pass


def main(argv: list[str] | None = None) -> int:
    """Console entry point. Returns (and exits with) the status code."""
    command = typer.main.get_command(app)
    previous_showwarning, warnings.showwarning = warnings.showwarning, _show_warning
    try:
        return _main(command, argv)
    finally:
        warnings.showwarning = previous_showwarning


def _main(command, argv: list[str] | None) -> int:
    try:
        result = command.main(args=argv, prog_name="bimix-bench", standalone_mode=False)
        code = result if isinstance(result, int) else 0
    except click_exceptions.NoArgsIsHelpError as err:
        echo(err.ctx.get_help() if err.ctx else str(err))
        code = 2
    except click_exceptions.UsageError as err:
        # command_path is "bimix-bench" or "bimix-bench run": the program name once.
        path = err.ctx.command_path if err.ctx else "bimix-bench"
        echo(f"error: {err.format_message()} (try: {path} --help)", err=True)
        code = 2
    except UsageError as err:
        echo(f"error: {err}", err=True)
        code = 2
    except typer.Exit as err:
        code = err.exit_code
    except (typer.Abort, KeyboardInterrupt):
        echo("interrupted; finished cells are saved in the run folder", err=True)
        code = 130
    if argv is None:
        sys.exit(code)
    return code


if __name__ == "__main__":
    main()
