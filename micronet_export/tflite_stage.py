"""The export's TFLite artifact: converted (or taken from the int8 stage), given its metadata,
inspected (ops, XNNPACK partitions, I/O) and parity-checked on LiteRT and tflite-runtime."""

from __future__ import annotations

import logging

import onnx

from micronet_export.metadata import add_tflite_metadata
from micronet_export.parity import check
from micronet_export.report import ArtifactReport
from micronet_export.run_context import ExportRun
from micronet_export.runtimes import run_in_runner, run_tflite
from micronet_export.tflite_export import convert
from micronet_export.tflite_inspect import delegation, io_details, op_histogram

KEYS = {"int8": "tflite_int8", "fp16": "tflite_fp16", "fp32": "tflite_fp32"}
TFLITE_RUNTIME_INT8_NOTE = ("tflite-runtime {version} runs this int8 model on its builtin kernels: its pip build's "
                            "XNNPACK delegate takes float models only. For XNNPACK int8 on a Raspberry Pi, use "
                            "ai-edge-litert (aarch64 wheels for Python 3.11).")

log = logging.getLogger(__name__)


def precision_of(opts) -> str:
    return "int8" if opts.int8 else "fp16" if opts.fp16 else "fp32"


def _quantization(run: ExportRun, precision: str, int8) -> str:
    if precision != "int8":
        return {"fp32": "none", "fp16": "float16 weights, float32 compute"}[precision]
    plan = ""
    if int8 is not None:
        islands = f": {', '.join(int8.plan.float_units)}" if int8.plan.float_units else ""
        plan = f", {int8.plan.describe()}{islands}"
        learned = int8.summary.get("learned_ranges_applied")
        if learned:
            plan += f" ({learned} activation ranges learned with the fine-tuned weights)"
    return (f"full integer: int8 weights (per-channel) and activations, {run.opts.io_dtype} input/output, "
            f"TFLiteConverter calibration on {len(run.images.calibration)} images{plan}")


def tflite_artifact(run: ExportRun, graph: onnx.ModelProto, int8=None) -> ArtifactReport:
    """The run's TFLite artifact from ``graph``; ``int8``: the int8 stage's result
    (:mod:`micronet_export.int8.stage`) for an int8 run."""
    opts, precision = run.opts, precision_of(run.opts)
    path = run.out.path(run.names[KEYS[precision]])
    with run.timer.stage(f"tflite {precision} conversion"):
        lowering = {}
        if int8 is not None:
            flatbuffer = int8.artifact
        else:
            conversion = convert(graph, precision, calibration=run.images.calibration, io_dtype=opts.io_dtype)
            flatbuffer, lowering = conversion.flatbuffer, conversion.lowering
        meta = run.metadata("NHWC", precision, _quantization(run, precision, int8))
        path.write_bytes(add_tflite_metadata(flatbuffer, meta, run.standard_metadata(meta)))
    with run.timer.stage(f"tflite {precision} parity"):
        art = ArtifactReport(path=str(run.out.folder / path.name), format="tflite", precision=precision,
                             size_bytes=path.stat().st_size, ops=op_histogram(path), io=io_details(path),
                             graph=delegation(path))
        _check_parity(run, art, path, precision)
        if int8 is not None:
            art.int8 = int8.summary
            if int8.warning:
                art.notes.append(int8.warning)
                log.warning("warning: %s", int8.warning)
            art.per_layer = _with_sensitivity(int8.summary.get("per_unit_sqnr", []), int8.summary.get("sensitivity", []))
        art.graph["gather_ops"] = sum(art.ops.get(op, 0) for op in ("GATHER", "GATHER_ND"))
        art.graph["transpose_ops"] = art.ops.get("TRANSPOSE", 0)
        if lowering:
            art.graph["lowering"] = lowering
    return art


def _check_parity(run: ExportRun, art: ArtifactReport, path, precision: str) -> None:
    opts, refs = run.opts, run.refs
    thresholds = {"int8": opts.int8_thresholds, "fp16": opts.fp16_thresholds, "fp32": refs.fp32_holdout}[precision]
    litert = run_tflite(path, refs.holdout, opts.threads)
    art.parity.append(check(litert, refs.holdout_logits, thresholds, reference="pytorch",
                            inputs="held-out images (LiteRT)").as_dict())
    if precision == "fp32":
        art.parity.insert(0, check(run_tflite(path, refs.fixed, opts.threads), refs.fixed_logits, refs.fp32_fixed,
                                   reference="pytorch", inputs="fixed random (LiteRT)").as_dict())
    pi, info = run_in_runner(path, refs.holdout, "tflite_runtime", opts.threads)
    art.parity.append(check(pi, refs.holdout_logits, thresholds, reference="pytorch",
                            inputs=f"held-out images (tflite-runtime {info['runtime_version']})").as_dict())
    art.graph["tflite_runtime_xnnpack_partitions"] = info.get("xnnpack_partitions")
    if precision == "int8" and info.get("xnnpack_partitions") == 0:
        art.notes.append(TFLITE_RUNTIME_INT8_NOTE.format(version=info["runtime_version"]))


def _with_sensitivity(rows: list[dict], sensitivity: list[dict]) -> list[dict]:
    by_unit = {s["unit"]: s for s in sensitivity}
    return [{**r, **({"cosine_only_int8": by_unit[r["module"]]["cosine_only_int8"]} if r["module"] in by_unit else {})}
            for r in rows]
