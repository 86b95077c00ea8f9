"""The emulated-ARM flags of ``export``, ``profile`` and ``check`` (parsing only; cli.py calls these)."""

from __future__ import annotations

import argparse
from dataclasses import replace

from micronet_export.errors import UserError


def export_cores(emulate: str | None, fmt: str) -> tuple[str, ...]:
    if not emulate:
        return ()
    from micronet_export.emulate.cores import parse_cores

    if fmt != "tflite":
        raise UserError("--emulate answers fp32 vs int8 for TFLite on ARM: use it with --format tflite")
    return tuple(c.name for c in parse_cores(emulate))


def emulated_runtimes(text: str) -> tuple[str, ...]:
    from micronet_export.emulate.qemu import RUNTIMES

    names = tuple(n.strip() for n in text.split(",") if n.strip())
    bad = [n for n in names if n not in RUNTIMES]
    if bad or not names:
        raise UserError(f"unknown --emu-runtimes {', '.join(bad) or '(none)'}; valid: {', '.join(RUNTIMES)}")
    return names


def add_check_args(p: argparse.ArgumentParser) -> None:
    from micronet_export.emulate.compare import EMULATED_FLOAT_THRESHOLDS, EMULATED_INT8_THRESHOLDS

    p.add_argument("--emulate", metavar="CORE[,CORE]", help="also compare each TFLite artifact on these emulated "
                   "ARM cores (qemu-user) with x86: cortex-a53, cortex-a72, cortex-a76, neoverse-n1")
    p.add_argument("--emu-int8-max-steps", type=float,
                   help=f"int8 vs x86, output steps, default {EMULATED_INT8_THRESHOLDS.max_steps:g}")
    p.add_argument("--emu-int8-min-top1", type=float,
                   help=f"int8 vs x86 top-1 agreement, default {EMULATED_INT8_THRESHOLDS.top1_agreement}")
    p.add_argument("--emu-float-max-abs-rel", type=float,
                   help=f"fp32/fp16 vs x86, default {EMULATED_FLOAT_THRESHOLDS.max_abs_rel}")


def check_options(args: argparse.Namespace):
    """The check's emulated cells (None without --emulate)."""
    if not args.emulate:
        return None
    from micronet_export.emulate.cells import EmulatedCheck
    from micronet_export.emulate.compare import EMULATED_FLOAT_THRESHOLDS, EMULATED_INT8_THRESHOLDS
    from micronet_export.emulate.cores import parse_cores

    pick = lambda base, **kw: replace(base, **{k: v for k, v in kw.items() if v is not None})  # noqa: E731
    int8 = pick(EMULATED_INT8_THRESHOLDS, max_steps=args.emu_int8_max_steps, top1_agreement=args.emu_int8_min_top1)
    float_ = pick(EMULATED_FLOAT_THRESHOLDS, max_abs_rel=args.emu_float_max_abs_rel)
    int8.check_ranges({"max_steps": "--emu-int8-max-steps", "top1_agreement": "--emu-int8-min-top1"},
                      "emulated int8 threshold")
    float_.check_ranges({"max_abs_rel": "--emu-float-max-abs-rel"}, "emulated float threshold")
    return EmulatedCheck(cores=tuple(parse_cores(args.emulate)), int8=int8, float_=float_)
