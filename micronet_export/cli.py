"""Command line: parse, call the library, print. No logic of its own.

``micronet-export [export] --variant m0 --format tflite --int8`` is the main job; ``info``,
``evaluate``, ``profile``, ``check`` and ``predict`` are sub-commands. User errors (argument errors included)
print one ``error:`` line on stderr and exit non-zero, without a traceback.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path

from micronet_export import __version__
from micronet_export.cli_args import Parser, positive_int, thresholds
from micronet_export.cli_export import SUBCOMMAND_HELP, export_options, export_parser
from micronet_export.errors import ParityError, UserError
from micronet_export.interrupt import raise_if_interrupted, sigint_recorded
from micronet_export.model.variants import VARIANTS




def _info_parser() -> argparse.ArgumentParser:
    p = Parser(prog="micronet-export info", description="Describe a MicroNet variant, or read an artifact's metadata.")
    p.add_argument("artifact", nargs="?", help=".onnx or .tflite written by micronet-export")
    p.add_argument("--variant", help=f"one of {', '.join(VARIANTS)}")
    p.add_argument("--input-size", type=int, default=224, help="multiple of 32 (default 224)")
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")
    return p


def _info(args: argparse.Namespace) -> int:
    from micronet_export.info import format_info, variant_info

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


def _export(args: argparse.Namespace) -> int:
    from micronet_export.export import export
    from micronet_export.follow_up import follow_up_commands
    from micronet_export.report import HEADER, format_table, summary_rows

    # Stage progress on a terminal only: piped stderr (CI, tests) carries warnings and errors.
    logging.getLogger().setLevel(logging.INFO if sys.stderr.isatty() and not args.json else logging.WARNING)
    options = export_options(args)
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
        calibration = report.calibration.get("dir") or report.calibration.get("note")
        print(f"weights: {ckpt or 'random initialisation (no checkpoint)'}; input {report.input_size}x{report.input_size}; "
              f"calibration: {calibration}")
        if report.removed_stale:
            print(f"removed an earlier run's artifacts (--force): {', '.join(report.removed_stale)}")
        if error is None:
            print("\n".join(follow_up_commands(report)))
    if error is not None:
        raise error
    for failure in report.failures():
        print(f"warning: parity: {failure}", file=sys.stderr)
    return 0


def _evaluate_parser() -> argparse.ArgumentParser:
    p = Parser(prog="micronet-export evaluate",
                description="Top-1/top-5 of checkpoints and artifacts on a labelled folder. Class indices and input "
                "size come from the artifacts' metadata or the checkpoint's card; stderr says which rule mapped "
                "the labels.")
    p.add_argument("targets", nargs="+", metavar="TARGET",
                   help="m0..m3 (the shipped or --checkpoint weights), a .pth checkpoint, an .onnx or a .tflite")
    p.add_argument("--data", required=True, help="DIR/<class>/<image>, or DIR with --labels file.csv")
    p.add_argument("--labels", help="file.csv (file,label) or a class-names file (one per line, index order)")
    p.add_argument("--limit", type=positive_int, help="first N images only")
    p.add_argument("--input-size", type=int, help="default: the artifacts' size, else the checkpoint card's, else 224")
    p.add_argument("--variant", help="variant of .pth targets (default: the card's, else the one the weights fit)")
    p.add_argument("--checkpoint", help="checkpoint for variant targets")
    p.add_argument("--random-init", action="store_true", help="score a variant target with random weights")
    p.add_argument("--threads", type=positive_int, default=1)
    p.add_argument("--json", action="store_true")
    return p


def _evaluate(args: argparse.Namespace) -> int:
    from micronet_export.evaluate import evaluate
    from micronet_export.report import format_table

    result = evaluate(args.targets, args.data, labels=args.labels, limit=args.limit, input_size=args.input_size,
                      variant=args.variant, checkpoint=args.checkpoint, random_init=args.random_init,
                      threads=args.threads, progress=sys.stderr.isatty() and not args.json)
    weights = "".join(f"; {spec}: weights {w}" for spec, w in result["variant_weights"].items())
    print(f"evaluate: labels: {result['label_rule']}; input {result['input_size']}x{result['input_size']} "
          f"({result['input_size_source']}){weights}", file=sys.stderr)
    if args.json:
        print(json.dumps(result, indent=2))
    else:
        rows = [[r["target"], str(r["images"]), f"{100 * r['top1']:.2f}", f"{100 * r['top5']:.2f}",
                 f"{100 * r['agreement_with_first']:.2f}", f"{r['top1_ties']} ({r['top1_ties_label_tied']} with the label)"]
                for r in result["results"]]
        print(format_table(["target", "images", "top-1 %", "top-5 %", "agrees with first %", "top-1 ties"], rows))
        if any(r["top1_ties"] for r in result["results"]):
            print("top-1 ties: images whose largest logit several classes share; ranked by logit, then lowest class "
                  "index, for every target")
    return 0


def _profile_parser() -> argparse.ArgumentParser:
    p = Parser(prog="micronet-export profile", description="Latency of .tflite / .onnx models.")
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
    return p


def _profile(args: argparse.Namespace) -> int:
    from micronet_export.emulate.cli_args import emulated_runtimes
    from micronet_export.profile import ProfileOptions, format_profile, plot_profile, profile

    try:
        threads = [int(t) for t in args.threads.split(",") if t.strip()]
    except ValueError:
        raise UserError(f"--threads takes comma-separated integers, got {args.threads!r}") from None
    opts = ProfileOptions(threads=threads, runs=args.runs, warmup=args.warmup, xnnpack=not args.no_xnnpack,
                          cpus=args.cpus, benchmark_binary=args.benchmark_binary, identity=args.identity,
                          known_hosts=args.known_hosts, ssh_options=args.ssh_option, remote_python=args.remote_python,
                          emulated_runtimes=emulated_runtimes(args.emu_runtimes))
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


def _check_parser() -> argparse.ArgumentParser:
    from micronet_export.parity import FP16_THRESHOLDS, FP32_THRESHOLDS, INT8_THRESHOLDS

    p = Parser(prog="micronet-export check",
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
    from micronet_export.emulate.cli_args import add_check_args

    add_check_args(p)
    return p


def _check(args: argparse.Namespace) -> int:
    from micronet_export.check import format_rows, run_check, write_junit
    from micronet_export.emulate.cli_args import check_options
    from micronet_export.export import ExportOptions
    from micronet_export.parity import FP16_THRESHOLDS, FP32_THRESHOLDS, INT8_THRESHOLDS

    checkpoints, default_ckpt = {}, None
    for item in args.checkpoint:
        variant, sep, path = item.partition("=")
        if sep and variant.lower() in VARIANTS:
            checkpoints[variant.lower()] = path
        else:
            default_ckpt = item
    base = ExportOptions(
        checkpoint=default_ckpt, calibration=args.calibration, input_size=args.input_size, random_init=args.random_init,
        fp32_thresholds=thresholds(FP32_THRESHOLDS, max_abs_rel=args.fp32_max_abs_rel),
        fp16_thresholds=thresholds(FP16_THRESHOLDS, cosine_mean=args.fp16_min_cosine),
        int8_thresholds=thresholds(INT8_THRESHOLDS, cosine_mean=args.int8_min_cosine, top1_agreement=args.int8_min_top1),
    )
    logging.getLogger().setLevel(logging.INFO if sys.stderr.isatty() and not args.json else logging.WARNING)
    rows = run_check(args.variants, args.formats, args.precisions, checkpoints=checkpoints, base=base, output=args.output,
                     emulated=check_options(args))
    if args.junit:
        write_junit(rows, args.junit)
    failed = [r for r in rows if not r["passed"]]
    if args.json:
        print(json.dumps({"passed": not failed, "cells": rows}, indent=2))
    else:
        print(format_rows(rows))
        print(f"{len(rows) - len(failed)} passed, {len(failed)} failed")
    return 1 if failed else 0


def _predict_parser() -> argparse.ArgumentParser:
    p = Parser(prog="micronet-export predict", description="Top-K classes (softmax scores) of images.")
    p.add_argument("model", metavar="MODEL", help=".tflite, .onnx, .pth / .pt, or a shipped checkpoint's name")
    p.add_argument("images", nargs="+", metavar="IMAGE", help="jpg / png / webp / bmp files")
    p.add_argument("--top", type=positive_int, default=5, help="classes per image (default 5)")
    p.add_argument("--variant", help="variant of a checkpoint (default: the card's, else the one the weights fit)")
    p.add_argument("--threads", type=positive_int, default=1)
    p.add_argument("--json", action="store_true", help="print JSON instead of text")
    return p


def _predict(args: argparse.Namespace) -> int:
    from micronet_export.predict import format_predictions, predict

    result = predict(args.model, args.images, top=args.top, variant=args.variant, threads=args.threads)
    print(f"predict: {result.runtime}, weights {result.weights}; input {result.input_size}x{result.input_size} "
          f"({result.input_size_source}); class names: {result.class_names_source}", file=sys.stderr)
    print(json.dumps(result.as_dict(), indent=2) if args.json else format_predictions(result))
    return 0


# name -> (parser, runner). tests/test_readme.py checks that README lists every one of these
# sub-commands and every flag of their parsers.
SUBCOMMANDS = {
    "export": (export_parser, _export),
    "info": (_info_parser, _info),
    "evaluate": (_evaluate_parser, _evaluate),
    "profile": (_profile_parser, _profile),
    "check": (_check_parser, _check),
    "predict": (_predict_parser, _predict),
}


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    logging.basicConfig(level=logging.WARNING, format="%(message)s", stream=sys.stderr)
    if argv and argv[0] in ("--version", "-V"):
        print(f"micronet-export {__version__}")
        return 0
    command = argv.pop(0) if argv and argv[0] in SUBCOMMANDS else "export"
    build_parser, run = SUBCOMMANDS[command]
    try:
        with sigint_recorded():
            code = run(build_parser().parse_args(argv))
            raise_if_interrupted()
        return code
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
