"""The export command's arguments (the main job): parser and the options it becomes."""

from __future__ import annotations

import argparse
import sys

from micronet_export.cli_args import Parser, positive_int, thresholds
from micronet_export.model.variants import VARIANTS

SUBCOMMAND_HELP = {
    "export": "(the default) export a variant to ONNX / TFLite with parity checks and a report",
    "info": "describe a variant, or print the metadata an .onnx / .tflite carries",
    "evaluate": "top-1 / top-5 of checkpoints and artifacts on a labelled image folder",
    "profile": "latency of .onnx / .tflite models, locally, over adb or over ssh",
    "check": "parity matrix as a CI gate (exit 1 when a cell fails)",
    "predict": "top-K classes and scores of images under an artifact or a checkpoint",
}


def export_parser() -> argparse.ArgumentParser:
    from micronet_export.export import FORMATS
    from micronet_export.parity import FP32_THRESHOLDS, INT8_THRESHOLDS
    from micronet_export.quantize import CALIBRATION_METHODS

    p = Parser(
        prog="micronet-export",
        usage="micronet-export [export] --variant V --format {onnx,tflite} [options]\n"
              "       micronet-export {info,evaluate,profile,check,predict} ...  (COMMAND --help for each)",
        description="Export MicroNet to ONNX / TFLite with parity checks.\n\nsub-commands:\n"
        + "\n".join(f"  {name:<10} {text}" for name, text in SUBCOMMAND_HELP.items()),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--variant", required=True, help=f"one of {', '.join(VARIANTS)}")
    p.add_argument("--format", required=True, choices=FORMATS)
    prec = p.add_mutually_exclusive_group()
    prec.add_argument("--int8", action="store_true", help="full-integer int8, calibrated on photos")
    prec.add_argument("--fp16", action="store_true", help="TFLite with float16 weights")
    p.add_argument("--checkpoint", help="official-format MicroNet checkpoint (.pth) or a shipped one by name: imagenet "
                   "(default for m0, the official ImageNet M0), fashion-mnist; other variants: random init")
    p.add_argument("--random-init", action="store_true", help="ignore the shipped default checkpoint")
    p.add_argument("--calibration", help="folder of images (jpg/png/webp/bmp); default: the checkpoint card's set, "
                   "else the 200 photos in calibration/ (a float export without any runs parity on random inputs)")
    p.add_argument("--calibration-method", default="minmax", choices=CALIBRATION_METHODS)
    p.add_argument("--ort-int8-ops", default="conv", choices=("conv", "all"),
                   help="ONNX int8 scope: Conv/Gemm only (default; Dynamic Shift-Max math stays float) or every op")
    p.add_argument("--onnx-optimize", default="auto", choices=("auto", "none"),
                   help="auto: the MicroNet graph passes for each runtime (default); none: the plain torch.onnx export")
    p.add_argument("--output", help="output folder (default models/<variant>/)")
    p.add_argument("--opset", type=int, default=17)
    p.add_argument("--input-size", type=int, help="multiple of 32 (default: the checkpoint card's, else 224)")
    p.add_argument("--dynamic-batch", action="store_true", help="ONNX with a dynamic batch axis")
    p.add_argument("--io-dtype", choices=("int8", "uint8", "float32"),
                   help="int8 TFLite input/output type (default: uint8 with --raw-pixels, what MediaPipe takes; else int8)")
    pixels = p.add_mutually_exclusive_group()
    pixels.add_argument("--raw-pixels", action="store_const", const=True, dest="raw_pixels",
                        help="TFLite takes the RGB values 0..255, mean/std folded into the model (the default of fp32 / fp16; "
                        "with --int8 the MediaPipe form: uint8 pixels)")
    pixels.add_argument("--normalized-input", action="store_const", const=False, dest="raw_pixels",
                        help="TFLite takes (x / 255 - mean) / std per channel, as the ONNX model does (the default of --int8)")
    _int8_arguments(p)
    p.add_argument("--force", action="store_true",
                   help="replace an earlier run's artifacts in the output folder (those this run does not write are removed)")
    p.add_argument("--threads", type=positive_int, default=1, help="threads for the parity runs")
    p.add_argument("--no-per-layer", action="store_true", help="skip the per-layer int8 error table")
    p.add_argument("--parity-warn-only", action="store_true", help="report parity breaches but exit 0")
    p.add_argument("--fp32-max-abs-rel", type=float, help=f"default {FP32_THRESHOLDS.max_abs_rel}")
    p.add_argument("--int8-min-cosine", type=float, help=f"mean logit cosine, default {INT8_THRESHOLDS.cosine_mean}")
    p.add_argument("--int8-min-top1", type=float, help=f"top-1 agreement, default {INT8_THRESHOLDS.top1_agreement}")
    p.add_argument("--json", action="store_true", help="print the report JSON instead of the table")
    p.add_argument("--emulate", metavar="CORE[,CORE]", help="add a per-core fp32-vs-int8 answer to the report "
                   "(TFLite: instructions per invoke on emulated ARM cores, cortex-a53/a72/a76, neoverse-n1)")
    return p


def _int8_arguments(p: argparse.ArgumentParser) -> None:
    """The options that shape an int8 model."""
    p.add_argument("--int8-target-cosine", type=float,
                   help="int8 accuracy control: mean logit cosine to keep vs fp32 (default: --int8-min-cosine)")
    p.add_argument("--int8-target-top1", type=float, help="top-1 agreement to keep vs fp32 (default: --int8-min-top1)")
    p.add_argument("--keep-float", default="", metavar="MODULES",
                   help="comma-separated modules kept in float in int8 models, e.g. features.6,classifier")
    p.add_argument("--int8-fallback", choices=("auto", "none"),
                   help="auto (the default): better ranges, then float islands when plain int8 misses the target; "
                   "none (the default with --int8-distill): plain int8")
    p.add_argument("--int8-distill", type=int, default=0, metavar="STEPS",
                   help="TFLite int8: fine-tune its weights for STEPS steps by distillation from the fp32 model on the "
                   "calibration photos (no labels; fp32 artifacts keep the original weights; 0: off, the default)")


def export_options(args: argparse.Namespace):
    from micronet_export.emulate.cli_args import export_cores
    from micronet_export.export import ExportOptions
    from micronet_export.parity import FP16_THRESHOLDS, FP32_THRESHOLDS, INT8_THRESHOLDS

    return ExportOptions(
        variant=args.variant, format=args.format, int8=args.int8, fp16=args.fp16, checkpoint=args.checkpoint,
        random_init=args.random_init, calibration=args.calibration, output=args.output, opset=args.opset,
        input_size=args.input_size, dynamic_batch=args.dynamic_batch, calibration_method=args.calibration_method,
        io_dtype=args.io_dtype, raw_pixels=args.raw_pixels, ort_int8_ops=args.ort_int8_ops,
        onnx_optimize=args.onnx_optimize,
        int8_target_cosine=args.int8_target_cosine,
        int8_target_top1=args.int8_target_top1, int8_fallback=args.int8_fallback,
        int8_distill_steps=args.int8_distill,
        keep_float=tuple(m.strip() for m in args.keep_float.split(",") if m.strip()),
        emulate=export_cores(args.emulate, args.format), force=args.force, per_layer=not args.no_per_layer,
        fail_on_parity=not args.parity_warn_only,
        fp32_thresholds=thresholds(FP32_THRESHOLDS, max_abs_rel=args.fp32_max_abs_rel),
        int8_thresholds=thresholds(INT8_THRESHOLDS, cosine_mean=args.int8_min_cosine, top1_agreement=args.int8_min_top1),
        fp16_thresholds=FP16_THRESHOLDS, progress=sys.stderr.isatty() and not args.json, threads=args.threads,
    )
