"""One progress line on a terminal (rewritten in place), nothing when stderr is piped."""

from __future__ import annotations

import sys


class ProgressLine:
    def __init__(self, enabled: bool, total: int, label: str = "aarch64 emulation, first use") -> None:
        self.enabled = enabled
        self.total = total
        self.label = label
        self.current = 0

    def step(self, what: str) -> None:
        self.current += 1
        if self.enabled:
            sys.stderr.write(f"\r\033[K{self.label} [{self.current}/{self.total}]: {what} ...")
            sys.stderr.flush()

    def done(self, message: str) -> None:
        if self.enabled:
            sys.stderr.write(f"\r\033[K{message}\n")
            sys.stderr.flush()
