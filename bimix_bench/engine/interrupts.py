"""Remember a Ctrl-C (SIGINT) or SIGTERM even when library code swallows the exception it raised.

A SIGINT that lands while Triton runs `ptxas` kills the compiler too, and Triton reports that as
a compile error: without this flag the runner would record a failed cell and train the next
one, and a time-limited job would never stop. `run_cell` checks `interrupted()` before it
records any failure; `execute` watches for the signals while it runs.
"""

from __future__ import annotations

import contextlib
import signal
import threading

_interrupted = threading.Event()


def _handle(signum, frame) -> None:
    _interrupted.set()
    raise KeyboardInterrupt


@contextlib.contextmanager
def watching():
    """Route SIGINT and SIGTERM through the flag while the block runs; the previous handlers
    come back afterwards. Outside the main thread signals cannot be handled: a no-op there."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    _interrupted.clear()
    previous = {sig: signal.signal(sig, _handle) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def interrupted() -> bool:
    return _interrupted.is_set()
