"""Pieces every command shares: the consoles and parsing of comma-separated options."""

from __future__ import annotations

from rich.console import Console

from bimix_bench.errors import UsageError

console = Console()
err_console = Console(stderr=True)


def split_names(value: str | None) -> list[str] | None:
    """"a,b , c" -> ["a", "b", "c"]; None or "" -> None (meaning: the default set)."""
    if not value:
        return None
    names = [v.strip() for v in value.split(",") if v.strip()]
    return names or None


def parse_seeds(value: str | None) -> list[int] | None:
    names = split_names(value)
    if names is None:
        return None
    try:
        return [int(v) for v in names]
    except ValueError:
        raise UsageError(f"--seeds expects comma-separated integers, got {value!r}") from None
