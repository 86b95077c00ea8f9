"""Ctrl-C that always ends a run as interrupted.

Python turns SIGINT into a KeyboardInterrupt wherever the main thread is, and a library that
catches every exception there (an optional import under a bare ``except:``, say) swallows it:
the run would go on and end as a success. The handler here also records the interrupt, and the
output folder and the CLI check that record before they commit or report success.
"""

from __future__ import annotations

import signal
import threading
from contextlib import contextmanager

_interrupted = threading.Event()


def _on_sigint(signum, frame):
    _interrupted.set()
    raise KeyboardInterrupt


@contextmanager
def sigint_recorded():
    """Record SIGINT for :func:`raise_if_interrupted` while the block runs (main thread only)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    _interrupted.clear()
    previous = signal.signal(signal.SIGINT, _on_sigint)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)


def raise_if_interrupted() -> None:
    """Raise KeyboardInterrupt if SIGINT arrived, even if something swallowed its exception."""
    if _interrupted.is_set():
        raise KeyboardInterrupt
