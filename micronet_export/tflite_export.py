"""ONNX → TFLite fp32 / fp16 / full-int8: a converter returning a :class:`TFLiteConversion`.

The ONNX graph (the optimized one, see :mod:`micronet_export.passes`) is lowered to a TF
function with an NHWC input (:mod:`micronet_export.lowering`) and converted by
TFLiteConverter; int8 is full-integer (int8 weights and activations), calibrated on the same
photos and preprocessing as the ONNX int8 model. What LiteRT makes of the result:
:mod:`micronet_export.tflite_inspect`.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field

import numpy as np
import onnx

from micronet_export.errors import UserError
from micronet_export.lowering import Lowering
from micronet_export.quiet import import_tensorflow, quiet_native_output
from micronet_export.tflite_scales import repair_degenerate_scales

log = logging.getLogger(__name__)

PRECISIONS = ("fp32", "fp16", "int8")
IO_DTYPES = ("int8", "uint8", "float32")


@dataclass
class TFLiteConversion:
    """One converted model: the flatbuffer, and what the lowering did to get there."""

    flatbuffer: bytes
    precision: str
    lowering: dict = field(default_factory=dict)  # LoweringStats of the traced lowering
    seconds: float = 0.0


def to_nhwc(batch: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(batch.transpose(0, 2, 3, 1))


def _converter(fp32_onnx: onnx.ModelProto, int8_friendly: bool):
    tf = import_tensorflow()
    lowering = Lowering.planned(fp32_onnx, int8_friendly=int8_friendly)
    fn, concrete = lowering.trace()
    return tf, tf.lite.TFLiteConverter.from_concrete_functions([concrete], fn), lowering


def _run_converter(converter) -> bytes:
    import warnings

    with quiet_native_output(), warnings.catch_warnings():
        warnings.simplefilter("ignore")  # "Statistics for quantized inputs were expected"
        return converter.convert()


def _calibrated(fp32_onnx: onnx.ModelProto, calibration: np.ndarray) -> tuple[bytes, Lowering]:
    if calibration is None or not len(calibration):
        raise UserError("int8 TFLite needs calibration images; pass --calibration DIR (a folder of photos)")
    tf, converter, lowering = _converter(fp32_onnx, int8_friendly=True)
    samples = to_nhwc(calibration)

    def representative():
        for s in samples:
            yield [s[None]]

    converter.optimizations = [tf.lite.Optimize.DEFAULT]
    converter.representative_dataset = representative
    converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
    converter._experimental_calibrate_only = True  # noqa: SLF001 - the documented debugger path
    return _run_converter(converter), lowering


def calibrate(fp32_onnx: onnx.ModelProto, calibration: np.ndarray) -> bytes:
    """The int8 lowering as a float flatbuffer whose activation tensors carry the min/max seen
    on ``calibration`` (NCHW float32): the input of :func:`quantize_calibrated`.

    TFLiteConverter's full-int8 path is exactly these two steps (calibrate, then the MLIR
    quantizer); splitting them lets the int8 plan change ranges and keep float islands
    without calibrating again.
    """
    return _calibrated(fp32_onnx, calibration)[0]


def quantize_calibrated(calibrated: bytes, *, io_dtype: str = "int8", output_dtype: str | None = None,
                        float_tensors: list[str] | tuple[str, ...] = ()) -> bytes:
    """Full-integer model from a :func:`calibrate` flatbuffer. ``float_tensors`` names op
    outputs to keep in float (the MLIR quantizer's denylist: QUANTIZE / DEQUANTIZE at the
    island's borders, which XNNPACK runs inside the same partition)."""
    tf = import_tensorflow()
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


def convert(fp32_onnx: onnx.ModelProto, precision: str, *, calibration: np.ndarray | None = None,
            io_dtype: str = "int8") -> TFLiteConversion:
    """``fp32_onnx`` as TFLite at ``precision``; ``calibration`` is NCHW float32. int8 here is
    the plain min/max model; :mod:`micronet_export.int8` chooses better plans."""
    if precision not in PRECISIONS:
        raise UserError(f"unknown TFLite precision {precision!r}; valid: {', '.join(PRECISIONS)}")
    start = time.perf_counter()
    if precision == "int8":
        calibrated, lowering = _calibrated(fp32_onnx, calibration)
        flatbuffer = quantize_calibrated(calibrated, io_dtype=io_dtype)
    else:
        tf, converter, lowering = _converter(fp32_onnx, int8_friendly=False)
        if precision == "fp16":
            converter.optimizations = [tf.lite.Optimize.DEFAULT]
            converter.target_spec.supported_types = [tf.float16]
        flatbuffer = _run_converter(converter)
    return TFLiteConversion(flatbuffer, precision, lowering.stats.as_dict(), round(time.perf_counter() - start, 2))
