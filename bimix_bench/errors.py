"""Errors that mean "the user asked for something invalid" (CLI: one line, exit 2)."""


class UsageError(Exception):
    """Bad input from the user: unknown name, malformed config, unreadable path..."""


class SkipCell(Exception):
    """A (task, model, seed) cell cannot run here (missing data or optional kernel); the
    reason goes into the record with status "skipped"."""
