"""ONNX → TFLite fp32 / fp16 / full-int8, and what the interpreter makes of it.

The ONNX graph is lowered to a TF function with an NHWC input (:mod:`tflite_lowering`) and
converted by TFLiteConverter; int8 is full-integer (int8 weights and activations), calibrated
on the same photos and preprocessing as the ONNX int8 model.
"""

from __future__ import annotations

import collections
import contextlib
import logging
import os
from pathlib import Path

import numpy as np
import onnx

from micronet_export.errors import UserError
from micronet_export.tflite_lowering import Lowering

log = logging.getLogger(__name__)

PRECISIONS = ("fp32", "fp16", "int8")
IO_DTYPES = ("int8", "uint8", "float32")


@contextlib.contextmanager
def quiet_native_output(stdout: bool = True, stderr: bool = True):
    """Silence C/C++ prints on fd 1/2 (TF's absl/oneDNN notices, the MLIR quantizer's
    "fully_quantize:" line, LiteRT's "Created ... XNNPACK delegate"). Python exceptions still
    propagate; they carry the real errors."""
    import sys

    if os.environ.get("MICRONET_EXPORT_NATIVE_LOGS"):  # debugging a native crash
        yield
        return
    fds = [fd for fd, on in ((1, stdout), (2, stderr)) if on]
    for stream in (sys.stdout, sys.stderr):
        stream.flush()
    saved = {fd: os.dup(fd) for fd in fds}
    with open(os.devnull, "wb") as devnull:
        for fd in fds:
            os.dup2(devnull.fileno(), fd)
    try:
        yield
    finally:
        for fd, copy in saved.items():
            os.dup2(copy, fd)
            os.close(copy)


def _quiet_tf():
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    with quiet_native_output():
        import tensorflow as tf

    tf.get_logger().setLevel(logging.ERROR)
    logging.getLogger("absl").setLevel(logging.ERROR)
    return tf


def to_nhwc(batch: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(batch.transpose(0, 2, 3, 1))


def _converter(fp32_onnx: onnx.ModelProto, int8_friendly: bool):
    tf = _quiet_tf()
    lowering = Lowering.planned(fp32_onnx, int8_friendly=int8_friendly)
    fn = tf.function(lowering.build(), input_signature=[tf.TensorSpec(lowering.input_shape_nhwc, tf.float32, name="input")],
                     autograph=False)
    return tf, tf.lite.TFLiteConverter.from_concrete_functions([fn.get_concrete_function()], fn)


def _run_converter(converter) -> bytes:
    import warnings

    with quiet_native_output(), warnings.catch_warnings():
        warnings.simplefilter("ignore")  # "Statistics for quantized inputs were expected"
        return converter.convert()


def calibrate(fp32_onnx: onnx.ModelProto, calibration: np.ndarray) -> bytes:
    """The int8 lowering as a float flatbuffer whose activation tensors carry the min/max seen
    on ``calibration`` (NCHW float32): the input of :func:`quantize_calibrated`.

    TFLiteConverter's full-int8 path is exactly these two steps (calibrate, then the MLIR
    quantizer); splitting them lets the int8 plan change ranges and keep float islands
    without calibrating again.
    """
    if calibration is None or not len(calibration):
        raise UserError("int8 TFLite needs calibration images; pass --calibration DIR (a folder of photos)")
    tf, converter = _converter(fp32_onnx, int8_friendly=True)
    samples = to_nhwc(calibration)

    def representative():
        for s in samples:
            yield [s[None]]

    converter.optimizations = [tf.lite.Optimize.DEFAULT]
    converter.representative_dataset = representative
    converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
    converter._experimental_calibrate_only = True  # noqa: SLF001 - the documented debugger path
    return _run_converter(converter)


def quantize_calibrated(calibrated: bytes, *, io_dtype: str = "int8", output_dtype: str | None = None,
                        float_tensors: list[str] | tuple[str, ...] = ()) -> bytes:
    """Full-integer model from a :func:`calibrate` flatbuffer. ``float_tensors`` names op
    outputs to keep in float (the MLIR quantizer's denylist: QUANTIZE / DEQUANTIZE at the
    island's borders, which XNNPACK runs inside the same partition)."""
    tf = _quiet_tf()
    from tensorflow.lite.python import convert as tf_convert

    dtypes = {"int8": tf.int8, "uint8": tf.uint8, "float32": tf.float32}
    with quiet_native_output():
        flatbuffer = tf_convert.mlir_quantize(
            calibrated, input_data_type=dtypes[io_dtype], output_data_type=dtypes[output_dtype or io_dtype],
            denylisted_nodes=list(float_tensors) or None)
    flatbuffer, repaired = repair_degenerate_scales(flatbuffer)
    if repaired:
        log.info("gave %d constant-zero int8 tensor(s) a usable scale: %s", len(repaired), ", ".join(repaired[:3]))
    return flatbuffer


def convert(
    fp32_onnx: onnx.ModelProto,
    precision: str,
    *,
    calibration: np.ndarray | None = None,
    io_dtype: str = "int8",
) -> bytes:
    """TFLite flatbuffer of ``fp32_onnx`` at ``precision``; ``calibration`` is NCHW float32.
    int8 here is the plain min/max model; :mod:`micronet_export.int8` chooses better plans."""
    if precision not in PRECISIONS:
        raise UserError(f"unknown TFLite precision {precision!r}; valid: {', '.join(PRECISIONS)}")
    if precision == "int8":
        return quantize_calibrated(calibrate(fp32_onnx, calibration), io_dtype=io_dtype)
    tf, converter = _converter(fp32_onnx, int8_friendly=False)
    if precision == "fp16":
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
        converter.target_spec.supported_types = [tf.float16]
    return _run_converter(converter)


# -- inspecting a flatbuffer ------------------------------------------------------------

def litert_interpreter(model: bytes | str | Path, threads: int = 1, *, xnnpack: bool = True):
    from ai_edge_litert.interpreter import Interpreter, OpResolverType

    kwargs = {"num_threads": threads}
    if not xnnpack:
        kwargs["experimental_op_resolver_type"] = OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES
    with quiet_native_output(stdout=False):
        if isinstance(model, (bytes, bytearray)):
            interp = Interpreter(model_content=bytes(model), **kwargs)
        else:
            interp = Interpreter(model_path=str(model), **kwargs)
        interp.allocate_tensors()
    return interp


def op_histogram(model: bytes | str | Path) -> dict[str, int]:
    """Ops of the model as written (before any delegate)."""
    interp = litert_interpreter(model, xnnpack=False)
    counts = collections.Counter(op["op_name"] for op in interp._get_ops_details())
    return dict(sorted(counts.items(), key=lambda kv: (-kv[1], kv[0])))


def delegation(model: bytes | str | Path) -> dict:
    """XNNPACK partitions and the ops left to the default kernels.

    LiteRT lists the nodes of the execution plan's graph after delegation: one DELEGATE node
    per XNNPACK partition plus the original nodes. The ops that still run on their own are
    those whose outputs are needed and not produced by a partition: walk back from the
    model outputs.
    """
    interp = litert_interpreter(model, xnnpack=True)
    ops = interp._get_ops_details()
    delegates = [op for op in ops if op["op_name"] == "DELEGATE"]
    produced_by_delegate = {int(t) for op in delegates for t in op["outputs"]}
    producer = {int(t): op for op in ops if op["op_name"] != "DELEGATE" for t in op["outputs"]}
    counted: set[int] = set()
    needed = [int(d["index"]) for d in interp.get_output_details()]
    needed += [int(t) for op in delegates for t in op["inputs"]]
    left, seen = [], set()
    while needed:
        t = needed.pop()
        if t in seen or t in produced_by_delegate or t not in producer:
            continue
        seen.add(t)
        op = producer[t]
        if op["index"] in counted:
            continue
        counted.add(op["index"])
        left.append(op["op_name"])
        needed.extend(int(i) for i in op["inputs"] if i >= 0)
    return {"xnnpack_partitions": len(delegates), "ops_outside_xnnpack": len(left),
            "ops_outside_xnnpack_by_type": dict(collections.Counter(left))}


def io_details(model: bytes | str | Path) -> dict:
    interp = litert_interpreter(model, xnnpack=False)

    def describe(d):
        scale, zero = d["quantization"]
        out = {"name": d["name"], "shape": [int(s) for s in d["shape"]], "dtype": np.dtype(d["dtype"]).name}
        if scale:
            out.update(scale=float(scale), zero_point=int(zero))
        return out

    return {"input": {**describe(interp.get_input_details()[0]), "layout": "NHWC"},
            "output": describe(interp.get_output_details()[0])}


def tflite_artifacts(fp32_onnx, opts, staging: Path, out_dir: Path, names: dict, calib, refs, metadata, timer,
                     int8=None) -> list:
    """Convert, inspect and parity-check the TFLite artifact of this run (export stage).
    ``refs``: the run's :class:`export.References`.
    ``int8``: the int8 stage's result (:mod:`micronet_export.int8.stage`) for an int8 run."""
    from micronet_export.parity import check
    from micronet_export.report import ArtifactReport
    from micronet_export.runtimes import run_in_runner, run_tflite

    precision = "int8" if opts.int8 else "fp16" if opts.fp16 else "fp32"
    key = {"int8": "tflite_int8", "fp16": "tflite_fp16", "fp32": "tflite_fp32"}[precision]
    path = staging / names[key]
    with timer.stage(f"tflite {precision} conversion"):
        from micronet_export.metadata import add_tflite_metadata

        quantization = {
            "fp32": "none",
            "fp16": "float16 weights, float32 compute",
            "int8": f"full integer: int8 weights (per-channel) and activations, {opts.io_dtype} input/output, "
                    f"TFLiteConverter calibration on {len(calib)} images"
                    + (f", {int8.plan.describe()}" + (f": {', '.join(int8.plan.float_units)}" if int8.plan.float_units
                                                       else "") if int8 is not None else ""),
        }[precision]
        flatbuffer = int8.artifact if int8 is not None else convert(fp32_onnx, precision, calibration=calib,
                                                                     io_dtype=opts.io_dtype)
        path.write_bytes(add_tflite_metadata(flatbuffer, metadata("NHWC", precision, quantization)))
    with timer.stage(f"tflite {precision} parity"):
        art = ArtifactReport(path=str(out_dir / path.name), format="tflite", precision=precision,
                             size_bytes=path.stat().st_size, ops=op_histogram(path), io=io_details(path),
                             graph=delegation(path))
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
            art.notes.append(f"tflite-runtime {info['runtime_version']} runs this int8 model on its builtin kernels: "
                             "its pip build's XNNPACK delegate takes float models only. For XNNPACK int8 on a "
                             "Raspberry Pi, use ai-edge-litert (aarch64 wheels for Python 3.11).")
        if int8 is not None:
            art.int8 = int8.summary
            art.per_layer = _with_sensitivity(int8.summary.get("per_unit_sqnr", []), int8.summary.get("sensitivity", []))
        art.graph["gather_ops"] = sum(art.ops.get(op, 0) for op in ("GATHER", "GATHER_ND"))
        art.graph["transpose_ops"] = art.ops.get("TRANSPOSE", 0)
    return [art]


def _with_sensitivity(rows: list[dict], sensitivity: list[dict]) -> list[dict]:
    by_unit = {s["unit"]: s for s in sensitivity}
    return [{**r, **({"cosine_only_int8": by_unit[r["module"]]["cosine_only_int8"]} if r["module"] in by_unit else {})}
            for r in rows]


# Activation scales below this come from tensors that were constant zero on the calibration
# data (e.g. a Dynamic Shift-Max squeeze FC whose ReLU units are all dead in a trained model):
# TFLiteConverter gives them a ~1e-8 scale, the bias of the next conv a ~1e-9 scale, and
# LiteRT 2.x's XNNPACK delegate then fails ("failed to create XNNPACK runtime", 2.1) or aborts
# the process ("double free or corruption", 2.2/2.3). Any sane scale represents the zeros.
DEGENERATE_SCALE = 1e-6
REPAIRED_SCALE = 1.0 / 128


def repair_degenerate_scales(flatbuffer: bytes) -> tuple[bytes, list[str]]:
    """Give constant-zero activations a usable scale and requantize the biases that depend on
    it (bias scale = input scale x weight scale). Returns the model and the repaired tensors."""
    from tensorflow.lite.python import schema_py_generated as schema
    from tensorflow.lite.tools import flatbuffer_utils

    model = flatbuffer_utils.convert_bytearray_to_object(bytearray(flatbuffer))
    repaired: list[str] = []
    weighted = {schema.BuiltinOperator.CONV_2D, schema.BuiltinOperator.DEPTHWISE_CONV_2D,
                schema.BuiltinOperator.FULLY_CONNECTED}
    for subgraph in model.subgraphs:
        fixed: set[int] = set()
        for i, tensor in enumerate(subgraph.tensors):
            q = tensor.quantization
            has_data = model.buffers[tensor.buffer].data is not None and len(model.buffers[tensor.buffer].data)
            if q is not None and q.scale is not None and len(q.scale) == 1 and 0 < q.scale[0] < DEGENERATE_SCALE \
                    and not has_data:
                q.scale = [REPAIRED_SCALE]
                fixed.add(i)
                repaired.append(tensor.name.decode() if isinstance(tensor.name, bytes) else str(tensor.name))
        if not fixed:
            continue
        for op in subgraph.operators:
            code = model.operatorCodes[op.opcodeIndex]
            builtin = max(code.builtinCode, code.deprecatedBuiltinCode)
            if builtin not in weighted or len(op.inputs) < 3 or op.inputs[0] not in fixed or op.inputs[2] < 0:
                continue
            weights, bias = subgraph.tensors[op.inputs[1]], subgraph.tensors[op.inputs[2]]
            w_scale = np.asarray(weights.quantization.scale, np.float64)
            old = np.asarray(bias.quantization.scale, np.float64)
            new = REPAIRED_SCALE * w_scale
            buf = model.buffers[bias.buffer]
            values = np.frombuffer(bytes(bytearray(buf.data)), dtype=np.int32).astype(np.float64)
            values = np.clip(np.round(values * old / new), -(2**31), 2**31 - 1).astype(np.int32)
            buf.data = np.frombuffer(values.tobytes(), dtype=np.uint8)
            bias.quantization.scale = new.astype(np.float32).tolist()
    return bytes(flatbuffer_utils.convert_object_to_bytearray(model)), repaired
