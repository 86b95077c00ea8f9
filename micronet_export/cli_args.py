"""argparse pieces every sub-command shares."""

from __future__ import annotations

import argparse

from micronet_export.errors import UserError


class Parser(argparse.ArgumentParser):
    """argparse whose errors are one ``error:`` line like every other user mistake."""

    def error(self, message: str):
        raise UserError(f"{message} (see {self.prog} --help)")


def positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}")
    return value


def thresholds(base, **overrides):
    """``base`` with the bounds the user gave (None: keep the default)."""
    from dataclasses import replace

    return replace(base, **{k: v for k, v in overrides.items() if v is not None})
