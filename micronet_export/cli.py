"""Command line: parse, call the library, print. No logic of its own.

``micronet-export [export] --variant m0 --format tflite --int8`` is the main job; ``info`` is a
sub-command. User errors print one line on stderr and exit non-zero, without a traceback.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path

from micronet_export import __version__
from micronet_export.errors import ParityError, UserError
from micronet_export.model.variants import VARIANTS


def _info(argv: list[str]) -> int:
    from micronet_export.info import format_info, variant_info

    p = argparse.ArgumentParser(prog="micronet-export info",
                                description="Describe a MicroNet variant, or read an artifact's metadata.")
    p.add_argument("artifact", nargs="?", help=".onnx or .tflite written by micronet-export")
    p.add_argument("--variant", help=f"one of {', '.join(VARIANTS)}")
    p.add_argument("--input-size", type=int, default=224)
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")
    args = p.parse_args(argv)
    if args.artifact:
        from micronet_export.metadata import read_metadata

        meta = read_metadata(args.artifact)
        if not meta:
            raise UserError(f"{args.artifact} carries no micronet-export metadata (was it written by this tool?)")
        print(json.dumps(meta, indent=2) if args.json else "\n".join(f"{k:<28} {v}" for k, v in meta.items()))
        return 0
    if not args.variant:
        raise UserError("give --variant m0..m3 or an artifact path")
    info = variant_info(args.variant, input_size=args.input_size)
    print(json.dumps(info, indent=2) if args.json else format_info(info))
    return 0


def _thresholds(base, **overrides):
    from dataclasses import replace

    return replace(base, **{k: v for k, v in overrides.items() if v is not None})


def _export_emulation(args) -> tuple[str, ...]:
    if not args.emulate:
        return ()
    from micronet_export.emulate.cores import parse_cores

    if args.format != "tflite":
        raise UserError("--emulate answers fp32 vs int8 for TFLite on ARM: use it with --format tflite")
    return tuple(c.name for c in parse_cores(args.emulate))


def _export(argv: list[str]) -> int:
    from micronet_export.export import FORMATS, ExportOptions, export
    from micronet_export.parity import FP16_THRESHOLDS, FP32_THRESHOLDS, INT8_THRESHOLDS
    from micronet_export.quantize import CALIBRATION_METHODS
    from micronet_export.report import HEADER, format_table, summary_rows

    p = argparse.ArgumentParser(
        prog="micronet-export",
        description="Export MicroNet to ONNX / TFLite with parity checks. "
        "Sub-commands: info (describe a variant).",
    )
    p.add_argument("--variant", required=True, help=f"one of {', '.join(VARIANTS)}")
    p.add_argument("--format", required=True, choices=FORMATS)
    prec = p.add_mutually_exclusive_group()
    prec.add_argument("--int8", action="store_true", help="full-integer int8, calibrated on photos")
    prec.add_argument("--fp16", action="store_true", help="TFLite with float16 weights")
    p.add_argument("--checkpoint", help="official-format MicroNet checkpoint (.pth); default for m0: the shipped "
                   "Fashion-MNIST checkpoint (models/micronet_m0_fashion_mnist.pth), else random init")
    p.add_argument("--random-init", action="store_true", help="ignore the shipped default checkpoint")
    p.add_argument("--calibration", help="folder of images (jpg/png/webp/bmp); default: the checkpoint card's set, "
                   "else the 200 photos in calibration/")
    p.add_argument("--calibration-method", default="minmax", choices=CALIBRATION_METHODS)
    p.add_argument("--ort-int8-ops", default="conv", choices=("conv", "all"),
                   help="ONNX int8 scope: Conv/Gemm only (default; Dynamic Shift-Max math stays float) or every op")
    p.add_argument("--output", help="output folder (default models/<variant>/)")
    p.add_argument("--opset", type=int, default=17)
    p.add_argument("--input-size", type=int, help="multiple of 32 (default: the checkpoint card's, else 224)")
    p.add_argument("--dynamic-batch", action="store_true", help="ONNX with a dynamic batch axis")
    p.add_argument("--io-dtype", default="int8", choices=("int8", "uint8", "float32"), help="int8 TFLite input/output type")
    p.add_argument("--int8-target-cosine", type=float,
                   help="int8 accuracy control: mean logit cosine to keep vs fp32 (default: --int8-min-cosine)")
    p.add_argument("--int8-target-top1", type=float, help="top-1 agreement to keep vs fp32 (default: --int8-min-top1)")
    p.add_argument("--keep-float", default="", metavar="MODULES",
                   help="comma-separated modules kept in float in int8 models, e.g. features.6,classifier")
    p.add_argument("--int8-fallback", default="auto", choices=("auto", "none"),
                   help="auto: better ranges, then float islands when plain int8 misses the target; none: plain int8")
    p.add_argument("--force", action="store_true", help="overwrite existing artifacts")
    p.add_argument("--threads", type=int, default=1, help="threads for the parity runs")
    p.add_argument("--no-per-layer", action="store_true", help="skip the per-layer int8 error table")
    p.add_argument("--parity-warn-only", action="store_true", help="report parity breaches but exit 0")
    p.add_argument("--fp32-max-abs-rel", type=float, help=f"default {FP32_THRESHOLDS.max_abs_rel}")
    p.add_argument("--int8-min-cosine", type=float, help=f"mean logit cosine, default {INT8_THRESHOLDS.cosine_mean}")
    p.add_argument("--int8-min-top1", type=float, help=f"top-1 agreement, default {INT8_THRESHOLDS.top1_agreement}")
    p.add_argument("--json", action="store_true", help="print the report JSON instead of the table")
    p.add_argument("--emulate", metavar="CORE[,CORE]", help="add a per-core fp32-vs-int8 answer to the report "
                   "(TFLite: instructions per invoke on emulated ARM cores, cortex-a53/a72/a76, neoverse-n1)")
    args = p.parse_args(argv)
    emulate = _export_emulation(args)
    # Stage progress on a terminal only: piped stderr (CI, tests) carries warnings and errors.
    logging.getLogger().setLevel(logging.INFO if sys.stderr.isatty() and not args.json else logging.WARNING)
    options = ExportOptions(
        variant=args.variant, format=args.format, int8=args.int8, fp16=args.fp16, checkpoint=args.checkpoint,
        random_init=args.random_init,
        calibration=args.calibration, output=args.output, opset=args.opset, input_size=args.input_size,
        dynamic_batch=args.dynamic_batch, calibration_method=args.calibration_method, io_dtype=args.io_dtype,
        ort_int8_ops=args.ort_int8_ops, int8_target_cosine=args.int8_target_cosine,
        int8_target_top1=args.int8_target_top1, int8_fallback=args.int8_fallback,
        keep_float=tuple(m.strip() for m in args.keep_float.split(",") if m.strip()),
        force=args.force, per_layer=not args.no_per_layer, fail_on_parity=not args.parity_warn_only,
        fp32_thresholds=_thresholds(FP32_THRESHOLDS, max_abs_rel=args.fp32_max_abs_rel),
        int8_thresholds=_thresholds(INT8_THRESHOLDS, cosine_mean=args.int8_min_cosine, top1_agreement=args.int8_min_top1),
        fp16_thresholds=FP16_THRESHOLDS, progress=sys.stderr.isatty() and not args.json, threads=args.threads,
        emulate=emulate,
    )
    try:
        report, error = export(options), None
    except ParityError as exc:
        report, error = exc.report, exc
    if args.json:
        print(json.dumps(report.as_dict(), indent=2))
    else:
        print(format_table(HEADER, summary_rows(report)))
        print(f"report: {Path(options.output or Path('models') / report.variant) / 'report.md'}")
        ckpt = report.checkpoint.get("path")
        print(f"weights: {ckpt or 'random initialisation (no checkpoint)'}; input {report.input_size}x{report.input_size}; "
              f"calibration: {report.calibration.get('dir')}")
    if error is not None:
        raise error
    for failure in report.failures():
        print(f"warning: parity: {failure}", file=sys.stderr)
    return 0


def _evaluate(argv: list[str]) -> int:
    from micronet_export.evaluate import evaluate
    from micronet_export.report import format_table

    p = argparse.ArgumentParser(prog="micronet-export evaluate",
                                description="Top-1/top-5 of checkpoints and artifacts on a labelled folder.")
    p.add_argument("targets", nargs="+", metavar="ARTIFACT_OR_VARIANT",
                   help="m0..m3 (with --checkpoint), a .pth checkpoint, an .onnx or a .tflite")
    p.add_argument("--data", required=True, help="DIR/<class>/<image>, or DIR with --labels file.csv")
    p.add_argument("--labels", help="file.csv (file,label) or a class-names file (one per line, index order)")
    p.add_argument("--limit", type=int, help="first N images only")
    p.add_argument("--input-size", type=int, help="default: the artifacts' size, else 224")
    p.add_argument("--variant", default="m0", help="variant of .pth targets (default m0)")
    p.add_argument("--checkpoint", help="checkpoint for variant targets")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--json", action="store_true")
    args = p.parse_args(argv)
    result = evaluate(args.targets, args.data, labels=args.labels, limit=args.limit, input_size=args.input_size,
                      variant=args.variant, checkpoint=args.checkpoint, threads=args.threads,
                      progress=sys.stderr.isatty() and not args.json)
    if args.json:
        print(json.dumps(result, indent=2))
    else:
        rows = [[r["target"], str(r["images"]), f"{100 * r['top1']:.2f}", f"{100 * r['top5']:.2f}",
                 f"{100 * r['agreement_with_first']:.2f}"] for r in result["results"]]
        print(format_table(["target", "images", "top-1 %", "top-5 %", "agrees with first %"], rows))
    return 0


def _emulated_runtimes(text: str) -> tuple[str, ...]:
    from micronet_export.emulate.qemu import RUNTIMES

    names = tuple(n.strip() for n in text.split(",") if n.strip())
    bad = [n for n in names if n not in RUNTIMES]
    if bad or not names:
        raise UserError(f"unknown --emu-runtimes {', '.join(bad) or '(none)'}; valid: {', '.join(RUNTIMES)}")
    return names


def _profile(argv: list[str]) -> int:
    from micronet_export.profile import ProfileOptions, format_profile, plot_profile, profile

    p = argparse.ArgumentParser(prog="micronet-export profile", description="Latency of .tflite / .onnx models.")
    p.add_argument("artifacts", nargs="+", metavar="ARTIFACT")
    p.add_argument("--threads", default="1", help="comma-separated thread counts, e.g. 1,2,4")
    p.add_argument("--runs", type=int, default=100)
    p.add_argument("--warmup", type=int, default=10)
    p.add_argument("--target", default="local", help="local | adb[:SERIAL] | ssh:[USER@]HOST[:PORT] | emu:CORE "
                   "(qemu-user: cortex-a53, cortex-a72, cortex-a76, neoverse-n1; instruction counts, parity vs x86)")
    p.add_argument("--emu-runtimes", default="litert,tflite_runtime", help="runtimes an emu: target runs")
    p.add_argument("--no-xnnpack", action="store_true", help="TFLite default kernels instead of XNNPACK")
    p.add_argument("--cpus", help="pin to CPUs (local/ssh), e.g. 0")
    p.add_argument("--benchmark-binary", help="TFLite benchmark_model binary (pushed over adb; run locally if given)")
    p.add_argument("--identity", help="ssh private key file")
    p.add_argument("--known-hosts", help="ssh known_hosts file (host-key checking stays on)")
    p.add_argument("--ssh-option", action="append", default=[], help="extra ssh -o option, repeatable")
    p.add_argument("--remote-python", default="python3")
    p.add_argument("--json", action="store_true")
    p.add_argument("--plot", help="write a PNG: latency by threads, top ops")
    args = p.parse_args(argv)
    try:
        threads = [int(t) for t in args.threads.split(",") if t.strip()]
    except ValueError:
        raise UserError(f"--threads takes comma-separated integers, got {args.threads!r}") from None
    opts = ProfileOptions(threads=threads, runs=args.runs, warmup=args.warmup, xnnpack=not args.no_xnnpack,
                          cpus=args.cpus, benchmark_binary=args.benchmark_binary, identity=args.identity,
                          known_hosts=args.known_hosts, ssh_options=args.ssh_option, remote_python=args.remote_python,
                          emulated_runtimes=_emulated_runtimes(args.emu_runtimes))
    results = profile(args.artifacts, args.target, opts)
    if args.plot:
        plot_profile(results, args.plot)
    if args.json:
        print(json.dumps({"target": args.target, "results": results}, indent=2))
    else:
        print(format_profile(results))
        if args.plot:
            print(f"plot: {args.plot}")
    return 0


def _emulation_check_args(p: argparse.ArgumentParser) -> None:
    from micronet_export.emulate.compare import EMULATED_FLOAT_THRESHOLDS, EMULATED_INT8_THRESHOLDS

    p.add_argument("--emulate", metavar="CORE[,CORE]", help="also compare each TFLite artifact on these emulated "
                   "ARM cores (qemu-user) with x86: cortex-a53, cortex-a72, cortex-a76, neoverse-n1")
    p.add_argument("--emu-int8-max-steps", type=float,
                   help=f"int8 vs x86, output steps, default {EMULATED_INT8_THRESHOLDS.max_steps:g}")
    p.add_argument("--emu-int8-min-top1", type=float,
                   help=f"int8 vs x86 top-1 agreement, default {EMULATED_INT8_THRESHOLDS.top1_agreement}")
    p.add_argument("--emu-float-max-abs-rel", type=float,
                   help=f"fp32/fp16 vs x86, default {EMULATED_FLOAT_THRESHOLDS.max_abs_rel}")


def _emulated_check(args):
    if not args.emulate:
        return None
    from micronet_export.emulate.cells import EmulatedCheck
    from micronet_export.emulate.compare import EMULATED_FLOAT_THRESHOLDS, EMULATED_INT8_THRESHOLDS
    from micronet_export.emulate.cores import parse_cores

    return EmulatedCheck(
        cores=tuple(parse_cores(args.emulate)),
        int8=_thresholds(EMULATED_INT8_THRESHOLDS, max_steps=args.emu_int8_max_steps, top1_agreement=args.emu_int8_min_top1),
        float_=_thresholds(EMULATED_FLOAT_THRESHOLDS, max_abs_rel=args.emu_float_max_abs_rel))


def _check(argv: list[str]) -> int:
    from micronet_export.check import format_rows, run_check, write_junit
    from micronet_export.export import ExportOptions
    from micronet_export.parity import FP16_THRESHOLDS, FP32_THRESHOLDS, INT8_THRESHOLDS

    p = argparse.ArgumentParser(prog="micronet-export check",
                                description="Parity matrix as a CI gate: exit 0 when every cell holds, 1 otherwise.")
    p.add_argument("--variants", default="m0")
    p.add_argument("--formats", default="onnx,tflite")
    p.add_argument("--precisions", default="fp32,int8")
    p.add_argument("--checkpoint", action="append", default=[], metavar="[VARIANT=]PATH",
                   help="checkpoint for all variants, or VARIANT=PATH (repeatable)")
    p.add_argument("--calibration", help="calibration folder (default: the embedded photos)")
    p.add_argument("--input-size", type=int)
    p.add_argument("--random-init", action="store_true", help="ignore the shipped default checkpoint")
    p.add_argument("--output", help="keep the artifacts here (default: a temporary folder)")
    p.add_argument("--fp32-max-abs-rel", type=float, help=f"default {FP32_THRESHOLDS.max_abs_rel}")
    p.add_argument("--fp16-min-cosine", type=float, help=f"default {FP16_THRESHOLDS.cosine_mean}")
    p.add_argument("--int8-min-cosine", type=float, help=f"default {INT8_THRESHOLDS.cosine_mean}")
    p.add_argument("--int8-min-top1", type=float, help=f"default {INT8_THRESHOLDS.top1_agreement}")
    p.add_argument("--junit", help="write JUnit XML here")
    p.add_argument("--json", action="store_true")
    _emulation_check_args(p)
    args = p.parse_args(argv)
    emulated = _emulated_check(args)
    checkpoints, default_ckpt = {}, None
    for item in args.checkpoint:
        variant, sep, path = item.partition("=")
        if sep and variant.lower() in VARIANTS:
            checkpoints[variant.lower()] = path
        else:
            default_ckpt = item
    base = ExportOptions(
        checkpoint=default_ckpt, calibration=args.calibration, input_size=args.input_size, random_init=args.random_init,
        fp32_thresholds=_thresholds(FP32_THRESHOLDS, max_abs_rel=args.fp32_max_abs_rel),
        fp16_thresholds=_thresholds(FP16_THRESHOLDS, cosine_mean=args.fp16_min_cosine),
        int8_thresholds=_thresholds(INT8_THRESHOLDS, cosine_mean=args.int8_min_cosine, top1_agreement=args.int8_min_top1),
    )
    logging.getLogger().setLevel(logging.INFO if sys.stderr.isatty() and not args.json else logging.WARNING)
    rows = run_check(args.variants, args.formats, args.precisions, checkpoints=checkpoints, base=base, output=args.output,
                     emulated=emulated)
    if args.junit:
        write_junit(rows, args.junit)
    failed = [r for r in rows if not r["passed"]]
    if args.json:
        print(json.dumps({"passed": not failed, "cells": rows}, indent=2))
    else:
        print(format_rows(rows))
        print(f"{len(rows) - len(failed)} passed, {len(failed)} failed")
    return 1 if failed else 0


SUBCOMMANDS = {"info": _info, "export": _export, "evaluate": _evaluate, "profile": _profile, "check": _check}


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    logging.basicConfig(level=logging.WARNING, format="%(message)s", stream=sys.stderr)
    if argv and argv[0] in ("--version", "-V"):
        print(f"micronet-export {__version__}")
        return 0
    command = argv.pop(0) if argv and argv[0] in SUBCOMMANDS else "export"
    try:
        return SUBCOMMANDS[command](argv)
    except UserError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print("error: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:  # output piped into head & co.
        sys.stderr.close()
        return 0


if __name__ == "__main__":
    sys.exit(main())
