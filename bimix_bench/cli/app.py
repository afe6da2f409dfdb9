"""The `bimix-bench` command line. One module per command group; this file wires them up
and turns user mistakes into one clear line on stderr and exit status 2."""

from __future__ import annotations

import sys
import warnings

import typer

try:  # typer >= 0.20 vendors its own copy of click
    from typer._click import exceptions as click_exceptions
    from typer._click.utils import echo
except ImportError:  # older typer runs on click itself
    from click import exceptions as click_exceptions
    from click import echo

# Command modules register themselves on `app` when imported.
from bimix_bench.cli import (  # noqa: F401
    check_cmd, compare_cmd, gates_cmd, list_cmd, run_cmd, speed_cmd, sweep_cmd,
)
from bimix_bench.cli.application import app
from bimix_bench.errors import UsageError


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
