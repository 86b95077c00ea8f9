"""What an export run is asked to do: :class:`ExportOptions`, checked and completed by
:meth:`ExportOptions.normalized` (defaults from the checkpoint's card) before anything runs."""

from __future__ import annotations

import logging
from dataclasses import dataclass, replace
from pathlib import Path

from micronet_export.errors import UserError
from micronet_export.images import project_path
from micronet_export.int8.search import FALLBACKS, Int8Options, Int8Target
from micronet_export.int8.units import check_keep_float, module_units
from micronet_export.model.micronet import MicroNet, get_variant
from micronet_export.onnx_export import DEFAULT_OPSET, check_input_size
from micronet_export.passes import MODES as OPTIMIZE_MODES
from micronet_export.parity import FP16_THRESHOLDS, FP32_THRESHOLDS, INT8_THRESHOLDS, Thresholds
from micronet_export.quantize import CALIBRATION_METHODS

log = logging.getLogger(__name__)

FORMATS = ("onnx", "tflite")
ORT_INT8_OPS = {"conv": ("Conv", "Gemm"), "all": None}
# Opset 13 is the first with Split-as-input; the TorchScript exporter stops at 20.
MIN_OPSET, MAX_OPSET = 13, 20
# The command-line flag of each parity bound, for the one-line error a bad value gets.
THRESHOLD_FLAGS = {
    "fp32": {"max_abs_rel": "--fp32-max-abs-rel"},
    "fp16": {"cosine_mean": "--fp16-min-cosine"},
    "int8": {"cosine_mean": "--int8-min-cosine", "top1_agreement": "--int8-min-top1"},
}


# Shipped trained checkpoints, by the name `--checkpoint NAME` takes: a card beside each (same
# name, .json) records its input size, classes, calibration set, source and licence.
NAMED_CHECKPOINTS = {
    "imagenet": "models/micronet_m0_imagenet.pth",
    "fashion-mnist": "models/micronet_m0_fashion_mnist.pth",
}
# Used when no --checkpoint is given (the "embedded defaults"): the weights users actually have.
DEFAULT_CHECKPOINTS = {"m0": "imagenet"}


def default_checkpoint(variant: str) -> Path | None:
    name = DEFAULT_CHECKPOINTS.get(variant)
    path = project_path(NAMED_CHECKPOINTS[name]) if name else None
    return path if path is not None and path.is_file() else None


def resolve_checkpoint(checkpoint: str | Path | None) -> str | Path | None:
    """A shipped checkpoint's name (``imagenet``) to its file; any other value is a path."""
    if isinstance(checkpoint, str) and checkpoint in NAMED_CHECKPOINTS and not Path(checkpoint).exists():
        return project_path(NAMED_CHECKPOINTS[checkpoint])
    return checkpoint


def checkpoint_card(checkpoint) -> dict:
    if not checkpoint:
        return {}
    card = Path(checkpoint).with_suffix(".json")
    if card.is_file():
        import json

        try:
            return json.loads(card.read_text())
        except ValueError:
            log.warning("warning: ignoring unreadable checkpoint card %s", card)
    return {}


@dataclass
class ExportOptions:
    variant: str = "m0"
    format: str = "onnx"
    int8: bool = False
    fp16: bool = False
    checkpoint: str | Path | None = None
    calibration: str | Path | None = None
    output: str | Path | None = None
    opset: int = DEFAULT_OPSET
    input_size: int | None = None  # None: the checkpoint card's, else 224
    random_init: bool = False  # ignore the shipped default checkpoint
    dynamic_batch: bool = False
    calibration_method: str = "minmax"
    # ORT int8 scope: "conv" quantizes Conv/Gemm (weights and their activations) and keeps the
    # Dynamic Shift-Max elementwise math float, which int8 rounds worst; "all" quantizes every
    # op (accuracy and latency of both: benchmarks/results/ort_int8_breakdown.md).
    ort_int8_ops: str = "conv"
    # "auto": the MicroNet ONNX passes for each runtime (micronet_export.passes); "none": the
    # plain torch.onnx export for both.
    onnx_optimize: str = "auto"
    # int8 TFLite input/output type; None: uint8 with raw pixels (what MediaPipe and the Task
    # Library take: they refuse int8 input), else int8.
    io_dtype: str | None = None
    # TFLite takes the RGB values 0..255 (mean/std folded into the first conv), so that app
    # frameworks need no per-channel normalisation (MediaPipe refuses it). None: yes for fp32 /
    # fp16 TFLite; no for int8, whose float-island search on the ImageNet M0 misses the parity
    # gate with pixel input (README, "MediaPipe"); False: the normalised input of ONNX.
    raw_pixels: bool | None = None
    # int8 accuracy control (micronet_export.int8): the plain min/max model when it keeps the
    # logits within the targets (default: the int8 parity thresholds), else better ranges,
    # else the fewest float islands that do; "none" always ships the plain model.
    int8_target_cosine: float | None = None
    int8_target_top1: float | None = None
    keep_float: tuple[str, ...] = ()
    # None: "auto", or "none" with int8_distill_steps (float islands in fine-tuned weights only
    # move the model toward the tuned float network, which has drifted from the original).
    int8_fallback: str | None = None
    # Quantization-aware distillation of the int8 models' weights (micronet_export.int8.distill):
    # this many steps on the calibration photos, 0 = off. fp32 / fp16 artifacts never change.
    int8_distill_steps: int = 0
    # Emulated ARM cores for the report's per-core fp32-vs-int8 answer (micronet_export.emulate).
    emulate: tuple[str, ...] = ()
    force: bool = False
    per_layer: bool = True
    fail_on_parity: bool = True
    fp32_thresholds: Thresholds = FP32_THRESHOLDS
    fp16_thresholds: Thresholds = FP16_THRESHOLDS
    int8_thresholds: Thresholds = INT8_THRESHOLDS
    progress: bool = False
    threads: int = 1

    def normalized(self) -> "ExportOptions":
        variant = get_variant(self.variant).name
        checkpoint = resolve_checkpoint(self.checkpoint)
        if checkpoint is None and not self.random_init:
            checkpoint = default_checkpoint(variant)
        card = checkpoint_card(checkpoint)
        input_size = self.input_size if self.input_size is not None else int(card.get("input_size", 224))
        calibration = self.calibration
        if calibration is None and card.get("calibration"):
            calibration = project_path(card["calibration"])
        if self.format not in FORMATS:
            raise UserError(f"unknown format {self.format!r}; valid: {', '.join(FORMATS)}")
        if self.int8 and self.fp16:
            raise UserError("--int8 and --fp16 exclude each other: pick one precision per run")
        if self.fp16 and self.format != "tflite":
            raise UserError("--fp16 is a TFLite precision; use --format tflite")
        if self.calibration_method not in CALIBRATION_METHODS:
            raise UserError(f"unknown calibration method {self.calibration_method!r}; valid: {', '.join(CALIBRATION_METHODS)}")
        if self.ort_int8_ops not in ORT_INT8_OPS:
            raise UserError(f"unknown --ort-int8-ops {self.ort_int8_ops!r}; valid: {', '.join(ORT_INT8_OPS)}")
        if self.onnx_optimize not in OPTIMIZE_MODES:
            raise UserError(f"unknown --onnx-optimize {self.onnx_optimize!r}; valid: {', '.join(OPTIMIZE_MODES)}")
        if self.int8_distill_steps < 0:
            raise UserError(f"--int8-distill takes a number of steps >= 0, got {self.int8_distill_steps}")
        if self.int8_distill_steps and self.format != "tflite":
            # The distillation simulates full-integer int8; ONNX Runtime's int8 keeps Dynamic
            # Shift-Max and the convs its cost model prefers float, where the tuned weights only drift.
            raise UserError("--int8-distill tunes weights for full-integer int8: use it with --format tflite")
        fallback = self.int8_fallback or ("none" if self.int8_distill_steps else "auto")
        if fallback not in FALLBACKS:
            raise UserError(f"unknown --int8-fallback {fallback!r}; valid: {', '.join(FALLBACKS)}")
        self.check_thresholds()
        self._check_int8_only(variant)
        wants_pixels = self.raw_pixels if self.raw_pixels is not None else self.format == "tflite" and not self.int8
        io_dtype = self.io_dtype if self.io_dtype is not None else "uint8" if wants_pixels else "int8"
        if io_dtype not in ("int8", "uint8", "float32"):
            raise UserError(f"unknown --io-dtype {io_dtype!r}; valid: int8, uint8, float32")
        raw_pixels = self._raw_pixels(io_dtype)
        if not MIN_OPSET <= self.opset <= MAX_OPSET:
            raise UserError(f"--opset {self.opset} is not supported; use {MIN_OPSET}..{MAX_OPSET} (default {DEFAULT_OPSET})")
        check_input_size(input_size)
        output = Path(self.output) if self.output else Path("models") / variant
        return replace(self, variant=variant, output=output, checkpoint=checkpoint, input_size=input_size,
                       calibration=calibration, io_dtype=io_dtype, raw_pixels=raw_pixels, int8_fallback=fallback)

    def _raw_pixels(self, io_dtype: str) -> bool:
        """Whether the TFLite artifact takes the RGB values 0..255 (see ``raw_pixels``)."""
        allowed = self.format == "tflite" and not (self.int8 and io_dtype == "float32")
        if self.raw_pixels is None:
            return allowed and not self.int8
        if self.raw_pixels and not allowed:
            raise UserError("--raw-pixels makes a TFLite model take RGB values 0..255: use it with --format tflite "
                            "(with --int8: --io-dtype uint8 or int8)")
        return self.raw_pixels

    def check_thresholds(self) -> None:
        """Every parity bound and int8 target in range (``check`` calls this before its runs)."""
        for precision, bounds in (("fp32", self.fp32_thresholds), ("fp16", self.fp16_thresholds),
                                  ("int8", self.int8_thresholds)):
            bounds.check_ranges(THRESHOLD_FLAGS[precision], f"{precision} threshold")
        for name, value in (("--int8-target-cosine", self.int8_target_cosine), ("--int8-target-top1", self.int8_target_top1)):
            if value is not None and not 0.0 < value <= 1.0:
                raise UserError(f"{name} takes a number in (0, 1], got {value}")

    def _check_int8_only(self, variant: str) -> None:
        """Options that only shape an int8 model, refused without --int8 rather than ignored;
        ``--keep-float`` names checked against the model's modules before any work."""
        given = [flag for flag, value in (("--keep-float", self.keep_float),
                                          ("--int8-target-cosine", self.int8_target_cosine is not None),
                                          ("--int8-target-top1", self.int8_target_top1 is not None),
                                          ("--int8-distill", self.int8_distill_steps != 0)) if value]
        if given and not self.int8:
            raise UserError(f"{given[0]} shapes an int8 model: use it with --int8")
        if self.keep_float:
            import torch

            with torch.device("meta"):  # module names only: no memory, no weight initialisation
                model = MicroNet(get_variant(variant), num_classes=1)
            check_keep_float(self.keep_float, module_units(model))

    def int8_options(self) -> Int8Options:
        cosine = self.int8_target_cosine if self.int8_target_cosine is not None else self.int8_thresholds.cosine_mean
        top1 = self.int8_target_top1 if self.int8_target_top1 is not None else self.int8_thresholds.top1_agreement
        return Int8Options(target=Int8Target(cosine=cosine if cosine is not None else 0.98,
                                             top1=top1 if top1 is not None else 0.0),
                           fallback=self.int8_fallback or "auto", keep_float=tuple(self.keep_float))

    def planned(self) -> list[str]:
        """Artifact keys this run writes, in order."""
        keys = ["onnx_fp32"]
        if self.format == "onnx" and self.int8:
            keys.append("onnx_int8")
        if self.format == "tflite":
            keys.append("tflite_int8" if self.int8 else "tflite_fp16" if self.fp16 else "tflite_fp32")
        return keys
