"""The pipeline: model → ONNX → artifacts → parity checks → report.

:func:`export` is what ``micronet-export --variant m0 --format onnx|tflite`` runs. Every artifact
is written under a temporary name and renamed into place only when the whole run got that far,
so an error leaves no partial file behind; existing artifacts are never overwritten without
``force``.
"""

from __future__ import annotations

import logging
import os
import shutil
import tempfile
import time
from contextlib import contextmanager
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import onnx

from micronet_export.errors import OutputExistsError, ParityError, UserError
from micronet_export.images import DEFAULT_CALIBRATION_DIR, load_folder, project_path
from micronet_export.int8.search import FALLBACKS, Int8Options, Int8Target
from micronet_export.int8.stage import int8_stage
from micronet_export.metadata import artifact_metadata, set_onnx_metadata
from micronet_export.model import create_model
from micronet_export.model.checkpoint import sha256_file
from micronet_export.model.micronet import get_variant
from micronet_export.onnx_export import DEFAULT_OPSET, export_onnx, summarize_graph
from micronet_export.parity import FP16_THRESHOLDS, FP32_THRESHOLDS, INT8_THRESHOLDS, Thresholds, check, conditioned
from micronet_export.quantize import CALIBRATION_METHODS, per_layer_error
from micronet_export.report import REPORT_JSON, REPORT_MD, ArtifactReport, Report, write_report
from micronet_export.runtimes import onnx_session, run_onnx, run_torch, run_torch_float64

log = logging.getLogger(__name__)

FORMATS = ("onnx", "tflite")
ORT_INT8_OPS = {"conv": ("Conv", "Gemm"), "all": None}
# One image in HOLDOUT_EVERY is kept out of calibration and used for int8 parity.
HOLDOUT_EVERY = 5
MIN_CALIBRATION_IMAGES = 10
FIXED_INPUT_SEED = 20211011
FIXED_INPUTS = 2
# Opset 13 is the first with Split-as-input; the TorchScript exporter stops at 20.
MIN_OPSET, MAX_OPSET = 13, 20


# Shipped trained checkpoints, used when no --checkpoint is given (the "embedded defaults"):
# a card beside each (same name, .json) records its input size, classes and calibration set.
DEFAULT_CHECKPOINTS = {"m0": "models/micronet_m0_fashion_mnist.pth"}


def default_checkpoint(variant: str) -> Path | None:
    rel = DEFAULT_CHECKPOINTS.get(variant)
    path = project_path(rel) if rel else None
    return path if path is not None and path.is_file() else None


def checkpoint_card(checkpoint) -> dict:
    if not checkpoint:
        return {}
    card = Path(checkpoint).with_suffix(".json")
    if card.is_file():
        import json

        try:
            return json.loads(card.read_text())
        except ValueError:
            log.warning("ignoring unreadable checkpoint card %s", card)
    return {}


def artifact_names(variant: str) -> dict[str, str]:
    return {
        "onnx_fp32": f"micronet_{variant}.onnx",
        "onnx_int8": f"micronet_{variant}_int8.onnx",
        "tflite_fp32": f"micronet_{variant}_float32.tflite",
        "tflite_fp16": f"micronet_{variant}_float16.tflite",
        "tflite_int8": f"micronet_{variant}_int8.tflite",
    }


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
    # Dynamic Shift-Max elementwise math float; "all" quantizes every op. On the shipped M0
    # "conv" was 2.2 top-1 points more accurate (measured with int8 activations, before uint8);
    # at 224x224 it is also faster (1.64 vs 1.87 ms, benchmarks/results/ort_int8_breakdown.md).
    ort_int8_ops: str = "conv"
    io_dtype: str = "int8"
    # int8 accuracy control (micronet_export.int8): the plain min/max model when it keeps the
    # logits within the targets (default: the int8 parity thresholds), else better ranges,
    # else the fewest float islands that do; "none" always ships the plain model.
    int8_target_cosine: float | None = None
    int8_target_top1: float | None = None
    keep_float: tuple[str, ...] = ()
    int8_fallback: str = "auto"
    force: bool = False
    per_layer: bool = True
    fail_on_parity: bool = True
    fp32_thresholds: Thresholds = FP32_THRESHOLDS
    fp16_thresholds: Thresholds = FP16_THRESHOLDS
    int8_thresholds: Thresholds = INT8_THRESHOLDS
    progress: bool = False
    threads: int = 1
    # Emulated ARM cores for the report's per-core fp32-vs-int8 answer (micronet_export.emulate).
    emulate: tuple[str, ...] = ()

    def normalized(self) -> "ExportOptions":
        variant = get_variant(self.variant).name
        checkpoint = self.checkpoint
        if checkpoint is None and not self.random_init:
            checkpoint = default_checkpoint(variant)
        card = checkpoint_card(checkpoint)
        input_size = self.input_size or int(card.get("input_size", 224))
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
        if self.int8_fallback not in FALLBACKS:
            raise UserError(f"unknown --int8-fallback {self.int8_fallback!r}; valid: {', '.join(FALLBACKS)}")
        for name, value in (("--int8-target-cosine", self.int8_target_cosine), ("--int8-target-top1", self.int8_target_top1)):
            if value is not None and not 0.0 < value <= 1.0:
                raise UserError(f"{name} takes a number in (0, 1], got {value}")
        if self.io_dtype not in ("int8", "uint8", "float32"):
            raise UserError(f"unknown --io-dtype {self.io_dtype!r}; valid: int8, uint8, float32")
        if not MIN_OPSET <= self.opset <= MAX_OPSET:
            raise UserError(f"--opset {self.opset} is not supported; use {MIN_OPSET}..{MAX_OPSET} (default {DEFAULT_OPSET})")
        if input_size < 32 or input_size % 32:
            raise UserError(f"--input-size must be a positive multiple of 32, got {input_size}")
        output = Path(self.output) if self.output else Path("models") / variant
        return replace(self, variant=variant, output=output, checkpoint=checkpoint, input_size=input_size,
                       calibration=calibration)

    def int8_options(self) -> Int8Options:
        cosine = self.int8_target_cosine if self.int8_target_cosine is not None else self.int8_thresholds.cosine_mean
        top1 = self.int8_target_top1 if self.int8_target_top1 is not None else self.int8_thresholds.top1_agreement
        return Int8Options(target=Int8Target(cosine=cosine if cosine is not None else 0.98,
                                             top1=top1 if top1 is not None else 0.0),
                           fallback=self.int8_fallback, keep_float=tuple(self.keep_float))

    def planned(self) -> list[str]:
        """Artifact keys this run writes, in order."""
        keys = ["onnx_fp32"]
        if self.format == "onnx" and self.int8:
            keys.append("onnx_int8")
        if self.format == "tflite":
            keys.append("tflite_int8" if self.int8 else "tflite_fp16" if self.fp16 else "tflite_fp32")
        return keys


class _Timer:
    def __init__(self) -> None:
        self.timings: dict[str, float] = {}

    @contextmanager
    def stage(self, name: str):
        log.info("%s ...", name)
        start = time.perf_counter()
        yield
        self.timings[name] = self.timings.get(name, 0.0) + time.perf_counter() - start


def _check_existing(folder: Path, files: list[str], force: bool) -> None:
    if folder.exists() and not folder.is_dir():
        raise UserError(f"output path {folder} is not a folder")
    existing = [f for f in files if (folder / f).exists()]
    if existing and not force:
        raise OutputExistsError(
            f"{folder / existing[0]} already exists" + (f" (+{len(existing) - 1} more)" if len(existing) > 1 else "")
            + "; pass --force to overwrite or --output to write elsewhere"
        )


def _prepare_output(folder: Path, files: list[str], force: bool) -> None:
    _check_existing(folder, files, force)
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise UserError(f"cannot create output folder {folder}: {exc.strerror or exc}") from None
    if not folder.is_dir():
        raise UserError(f"output path {folder} is not a folder")
    if not os.access(folder, os.W_OK | os.X_OK):
        raise UserError(f"output folder {folder} is not writable; pick another with --output")


@dataclass
class References:
    """The PyTorch logits every artifact is checked against, and the fp32 bounds they allow
    (see :func:`parity.conditioned`: never tighter than float32 itself gets on those inputs)."""

    fixed: np.ndarray
    holdout: np.ndarray
    fixed_logits: np.ndarray
    holdout_logits: np.ndarray
    fp32_fixed: Thresholds
    fp32_holdout: Thresholds

    @classmethod
    def of(cls, model, fixed: np.ndarray, holdout: np.ndarray, fp32: Thresholds) -> "References":
        fixed_logits, holdout_logits = run_torch(model, fixed), run_torch(model, holdout)
        return cls(fixed, holdout, fixed_logits, holdout_logits,
                   conditioned(fp32, fixed_logits, run_torch_float64(model, fixed)),
                   conditioned(fp32, holdout_logits, run_torch_float64(model, holdout)))


def split_calibration(arrays: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Deterministic split: every HOLDOUT_EVERY-th image (sorted by path) is held out."""
    idx = np.arange(len(arrays))
    hold = idx % HOLDOUT_EVERY == HOLDOUT_EVERY - 1
    return arrays[~hold], arrays[hold]


def fixed_inputs(input_size: int) -> np.ndarray:
    rng = np.random.default_rng(FIXED_INPUT_SEED)
    return rng.standard_normal((FIXED_INPUTS, 3, input_size, input_size)).astype(np.float32)


def export(options: ExportOptions) -> Report:
    """Run the pipeline; returns the report (also written as report.json / report.md).

    Raises :class:`ParityError` after writing everything when a threshold is breached and
    ``options.fail_on_parity`` is set.
    """
    opts = options.normalized()
    names = artifact_names(opts.variant)
    out_dir = Path(opts.output)
    planned = opts.planned()
    artifact_files = [names[k] for k in planned] + [REPORT_JSON, REPORT_MD]
    _check_existing(out_dir, artifact_files, opts.force)

    timer = _Timer()
    checkpoint = {"path": None, "sha256": None}
    with timer.stage("build model"):
        model = create_model(opts.variant, checkpoint=opts.checkpoint, num_classes=None)
        if opts.checkpoint:
            checkpoint = {"path": str(opts.checkpoint), "sha256": sha256_file(opts.checkpoint)}
    with timer.stage("load images"):
        calib_dir = Path(opts.calibration) if opts.calibration else DEFAULT_CALIBRATION_DIR
        images = load_folder(calib_dir, input_size=opts.input_size, min_images=MIN_CALIBRATION_IMAGES,
                             progress=opts.progress)
        calib, holdout = split_calibration(images.arrays)
    _prepare_output(out_dir, artifact_files, opts.force)
    report = Report(
        variant=opts.variant, input_size=opts.input_size, checkpoint=checkpoint,
        calibration={"dir": str(calib_dir), "images": int(len(calib)), "holdout": int(len(holdout)),
                     "skipped": len(images.skipped), "method": opts.calibration_method,
                     "skipped_files": [p.name for p, _ in images.skipped[:20]]},
    )
    labels = labels_for(opts.checkpoint, model.num_classes)

    def metadata(layout: str, precision: str, quantization: str) -> dict[str, str]:
        return artifact_metadata(variant=opts.variant, input_size=opts.input_size, layout=layout, precision=precision,
                                 num_classes=model.num_classes, checkpoint_sha256=checkpoint["sha256"],
                                 quantization=quantization, labels=labels)

    staging = Path(tempfile.mkdtemp(prefix=".micronet-export-", dir=out_dir))
    try:
        with timer.stage("reference logits"):
            refs = References.of(model, fixed_inputs(opts.input_size), holdout, opts.fp32_thresholds)
        with timer.stage("onnx export"):
            fp32 = export_onnx(model, input_size=opts.input_size, opset=opts.opset, dynamic_batch=opts.dynamic_batch)
            set_onnx_metadata(fp32, metadata("NCHW", "fp32", "none"))
            onnx.save(fp32, staging / names["onnx_fp32"])
        with timer.stage("onnx parity"):
            session = onnx_session(staging / names["onnx_fp32"], opts.threads)
            ort_holdout = run_onnx(session, holdout)
            art = _onnx_artifact(staging / names["onnx_fp32"], fp32, "fp32", out_dir)
            art.parity = [
                check(run_onnx(session, refs.fixed), refs.fixed_logits, refs.fp32_fixed, reference="pytorch",
                      inputs="fixed random").as_dict(),
                check(ort_holdout, refs.holdout_logits, refs.fp32_holdout, reference="pytorch",
                      inputs="held-out images").as_dict(),
            ]
            report.artifacts.append(art)
        reference_of = lambda images: run_torch(model, images)  # noqa: E731 - float logits to match
        if "onnx_int8" in planned:
            with timer.stage("onnx int8 quantization"):
                stage = int8_stage("onnxruntime", fp32, calib, reference_of, opts.int8_options(),
                                   op_types=ORT_INT8_OPS[opts.ort_int8_ops], threads=opts.threads,
                                   calibration_method=opts.calibration_method)
                int8 = stage.artifact
                scope = "Conv/Gemm" if opts.ort_int8_ops == "conv" else "every op"
                set_onnx_metadata(int8, metadata(
                    "NCHW", "int8", f"onnxruntime static QDQ ({scope}), uint8 activations and per-channel int8 weights "
                    f"(float: convs ORT runs slower in int8{stage_islands(stage)}), {stage.plan.ranges} ranges from "
                    f"{len(calib)} images"))
                onnx.save(int8, staging / names["onnx_int8"])
            with timer.stage("onnx int8 parity"):
                art = _onnx_artifact(staging / names["onnx_int8"], int8, "int8", out_dir)
                got = run_onnx(onnx_session(staging / names["onnx_int8"], opts.threads), holdout)
                art.parity = [check(got, ort_holdout, opts.int8_thresholds, reference="onnxruntime fp32",
                                    inputs="held-out images").as_dict()]
                art.int8 = stage.summary
                if opts.per_layer:
                    art.per_layer = per_layer_error(fp32, int8, holdout[:8])
                report.artifacts.append(art)
        if opts.format == "tflite":
            from micronet_export.tflite_export import tflite_artifacts

            stage = None
            if opts.int8:
                with timer.stage("tflite int8 quantization"):
                    stage = int8_stage("tflite", fp32, calib, reference_of, opts.int8_options(), io_dtype=opts.io_dtype,
                                       threads=opts.threads, per_layer_images=holdout[:8] if opts.per_layer else None)
            report.artifacts.extend(tflite_artifacts(fp32, opts, staging, out_dir, names, calib, refs, metadata, timer,
                                                     int8=stage))
        keep = [names[k] for k in planned]
        for name in keep:
            os.replace(staging / name, out_dir / name)
        if opts.emulate and opts.format == "tflite":
            from micronet_export.emulate.advice import add_core_answers

            with timer.stage("emulated arm answers"):
                add_core_answers(report, opts, fp32, calib, out_dir)
        report.timings_s = timer.timings
        write_report(report, out_dir)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    if not report.passed and opts.fail_on_parity:
        raise ParityError("parity failed: " + "; ".join(report.failures()[:3]) + f" (see {out_dir / REPORT_MD})", report)
    return report


def stage_islands(stage) -> str:
    units = stage.plan.float_units
    return f"; float islands: {', '.join(units)}" if units else ""


def labels_for(checkpoint, num_classes: int) -> str:
    """Label source recorded in the artifacts: the checkpoint's card, else ImageNet-1k."""
    classes = checkpoint_card(checkpoint).get("classes")
    if classes and len(classes) == num_classes:
        import json

        return json.dumps(classes)
    if num_classes == 1000:
        return "imagenet-1k-classes.tsv (micronet_export/labels; standard ImageNet-1k index order)"
    return f"{num_classes} classes (no label file)"


def _onnx_artifact(path: Path, proto: onnx.ModelProto, precision: str, out_dir: Path) -> ArtifactReport:
    summary = summarize_graph(proto)
    inp, out = proto.graph.input[0], proto.graph.output[0]
    dims = lambda vi: [d.dim_value or d.dim_param for d in vi.type.tensor_type.shape.dim]
    return ArtifactReport(
        path=str(out_dir / path.name), format="onnx", precision=precision, size_bytes=path.stat().st_size,
        ops=summary.ops,
        io={"input": {"name": inp.name, "shape": dims(inp), "dtype": "float32", "layout": "NCHW"},
            "output": {"name": out.name, "shape": dims(out), "dtype": "float32"}},
        graph={"gather_nodes": summary.gather_nodes, "max_rank": summary.max_rank, "opset": proto.opset_import[0].version},
    )
