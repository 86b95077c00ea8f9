"""The int8 search's TFLite side: one calibration, then any plan in a fraction of a second.

The lowering is calibrated once (:func:`tflite_export.calibrate`: a float flatbuffer whose
activation tensors carry their min/max); a plan rewrites those min/max in place (the MLIR
quantizer derives every scale, and so every bias scale, from them) and names the op outputs
to keep in float (the quantizer's denylist). Units come from the TF name scopes the lowering
opens per ONNX node (:func:`units.unit_of_tflite_tensor`).
"""

from __future__ import annotations

import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx

from micronet_export.int8.learned_ranges import LearnedRanges, matched_ranges
from micronet_export.int8.ranges import TensorStats, choose_ranges, collect
from micronet_export.int8.search import Int8Plan
from micronet_export.int8.units import unit_of_tflite_tensor, unit_order
from micronet_export.parity import sqnr_db
from micronet_export.tflite_export import calibrate, quantize_calibrated, to_nhwc
from micronet_export.tflite_inspect import flatbuffer_utils

# Images whose activations feed the range statistics (more adds seconds, not accuracy: the
# statistics are per-image histograms whose mean settles within a few dozen photos).
STATS_IMAGES = 64


@dataclass
class CalibratedOp:
    """One op of the calibrated float model."""

    outputs: list[str]
    unit: str
    output_elements: int


@dataclass
class StatTensor:
    index: int
    name: str
    low: float
    high: float


def calibrated_ops(calibrated: bytes) -> tuple[list[CalibratedOp], list[StatTensor]]:
    """Ops (with their unit) and the activation tensors that carry calibration min/max."""
    model = flatbuffer_utils().convert_bytearray_to_object(bytearray(calibrated))
    graph = model.subgraphs[0]
    name = lambda i: graph.tensors[i].name.decode()
    ops: list[CalibratedOp] = []
    for op in graph.operators:
        first = name(op.outputs[0])
        # The graph output is renamed after the function's output ("Identity"), which drops
        # the scope: it belongs to the module of the op before it.
        unit = unit_of_tflite_tensor(first) if "/" in first or not ops else ops[-1].unit
        ops.append(CalibratedOp([name(i) for i in op.outputs], unit,
                                int(sum(np.prod(graph.tensors[i].shape) for i in op.outputs))))
    stats = []
    for i, tensor in enumerate(graph.tensors):
        q = tensor.quantization
        if q is not None and q.min is not None and len(q.min) == 1:
            stats.append(StatTensor(i, name(i), float(q.min[0]), float(q.max[0])))
    return ops, stats


def _input_index(flatbuffer: bytes) -> int:
    return int(flatbuffer_utils().convert_bytearray_to_object(bytearray(flatbuffer)).subgraphs[0].inputs[0])


def with_ranges(calibrated: bytes, ranges: dict[int, tuple[float, float]]) -> bytes:
    """``calibrated`` with the min/max of tensor ``index`` replaced by ``ranges[index]``."""
    if not ranges:
        return calibrated
    utils = flatbuffer_utils()
    model = utils.convert_bytearray_to_object(bytearray(calibrated))
    tensors = model.subgraphs[0].tensors
    for index, (low, high) in ranges.items():
        tensors[index].quantization.min = [float(low)]
        tensors[index].quantization.max = [float(high)]
    return bytes(utils.convert_object_to_bytearray(model))


class TFLiteInt8Backend:
    """:class:`search.Int8Backend` for LiteRT full-int8 models."""

    name = "tflite"

    def __init__(self, fp32_onnx: onnx.ModelProto, calibration: np.ndarray, *, stats_images: np.ndarray | None = None,
                 io_dtype: str = "int8", threads: int = 1, input_range: tuple[float, float] | None = None,
                 learned_ranges: LearnedRanges | None = None) -> None:
        self.calibrated = calibrate(fp32_onnx, calibration)
        # Every plan starts from the learned ranges where the simulation has them.
        self.learned = {}
        if learned_ranges is not None:
            indices = [t.index for t in calibrated_ops(self.calibrated)[1]]
            self.learned = matched_ranges(self.calibrated, indices, learned_ranges)
            self.calibrated = with_ranges(self.calibrated, self.learned)
        # Ranges no plan may change (raw pixels: 0..255 gives the input a scale of exactly 1).
        self.pinned = {_input_index(self.calibrated): input_range} if input_range is not None else {}
        self.calibrated = with_ranges(self.calibrated, self.pinned)
        self.ops, self.stat_tensors = calibrated_ops(self.calibrated)
        self.io_dtype = io_dtype
        self.threads = threads
        self._stats_images = (calibration if stats_images is None else stats_images)[:STATS_IMAGES]
        self._ranges: dict[str, dict[int, tuple[float, float]]] = {}
        self._tmp = tempfile.TemporaryDirectory(prefix="micronet-int8-")

    def units(self) -> list[str]:
        return unit_order([op.unit for op in self.ops])

    def known_units(self) -> list[str]:
        return self.units()  # every module with an op is a unit here

    def unit_cost(self, unit: str) -> float:
        return float(sum(op.output_elements for op in self.ops if op.unit == unit))

    def output_unit(self) -> str:
        return self.ops[-1].unit

    def input_unit(self) -> str:
        return self.ops[0].unit

    def ranges(self, method: str) -> dict[int, tuple[float, float]]:
        if method not in self._ranges:
            stats = self._collect() if method != "minmax" else {
                t.index: TensorStats(t.low, t.high, np.zeros(1)) for t in self.stat_tensors}
            self._ranges[method] = {**choose_ranges(stats, method), **self.pinned}
        return self._ranges[method]

    def _collect(self) -> dict[int, TensorStats]:
        from ai_edge_litert.interpreter import Interpreter, OpResolverType

        interp = Interpreter(model_content=self.calibrated, experimental_preserve_all_tensors=True,
                             experimental_op_resolver_type=OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES)
        interp.allocate_tensors()
        input_index = interp.get_input_details()[0]["index"]

        def run(image: np.ndarray) -> dict[int, np.ndarray]:
            interp.set_tensor(input_index, image[None])
            interp.invoke()
            return {t.index: interp.get_tensor(t.index) for t in self.stat_tensors}

        bounds = {t.index: (t.low, t.high) for t in self.stat_tensors}
        return collect(run, to_nhwc(self._stats_images), bounds)

    def build(self, plan: Int8Plan) -> bytes:
        calibrated = self.calibrated if plan.ranges == "minmax" else with_ranges(self.calibrated, self.ranges(plan.ranges))
        floats = set(plan.float_units)
        tensors = [name for op in self.ops if op.unit in floats for name in op.outputs]
        # A float op at the model's edge takes / gives float: quantizing the I/O of a float
        # island would only add the rounding the island is there to avoid.
        input_dtype = "float32" if self.input_unit() in floats else self.io_dtype
        output_dtype = "float32" if self.output_unit() in floats else self.io_dtype
        model = quantize_calibrated(calibrated, io_dtype=input_dtype, output_dtype=output_dtype, float_tensors=tensors)
        if not floats:
            return model
        from micronet_export.int8.tflite_islands import float_splits

        return float_splits(model)[0]

    def logits(self, artifact: bytes, images: np.ndarray) -> np.ndarray:
        from micronet_export.runtimes import run_tflite

        path = Path(self._tmp.name) / "candidate.tflite"
        path.write_bytes(artifact)
        return run_tflite(path, images, self.threads)

    def unit_sqnr(self, artifact: bytes, images: np.ndarray) -> list[dict]:
        """SQNR (dB) of each unit's last output, ``artifact`` vs the float calibrated model."""
        float_values = _all_tensors(self.calibrated, images)
        int8_values = _all_tensors(artifact, images)
        last: dict[str, str] = {}
        for op in self.ops:
            name = op.outputs[0]
            if name in float_values and name in int8_values and float_values[name].shape == int8_values[name].shape:
                last[op.unit] = name
        rows = []
        for unit in self.units():
            if unit in last:
                ref, got = float_values[last[unit]], int8_values[last[unit]]
                rows.append({"module": unit, "sqnr_db": round(sqnr_db(got, ref), 2),
                             "ref_absmax": float(np.abs(ref).max()), "ref_std": float(ref.std())})
        return rows


def _all_tensors(flatbuffer: bytes, images: np.ndarray) -> dict[str, np.ndarray]:
    """Every float or (dequantized) int8 tensor of ``flatbuffer`` on ``images``, by name."""
    from ai_edge_litert.interpreter import Interpreter, OpResolverType

    interp = Interpreter(model_content=flatbuffer, experimental_preserve_all_tensors=True,
                         experimental_op_resolver_type=OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES)
    interp.allocate_tensors()
    detail = interp.get_input_details()[0]
    per_image: dict[str, list] = {}
    for image in to_nhwc(images):
        x = image[None]
        if detail["dtype"] != np.float32:
            scale, zero = detail["quantization"]
            info = np.iinfo(detail["dtype"])
            x = np.clip(np.round(x / scale) + zero, info.min, info.max).astype(detail["dtype"])
        interp.set_tensor(detail["index"], x)
        interp.invoke()
        for d in interp.get_tensor_details():
            value = _dequantized(interp, d)
            if value is not None:
                per_image.setdefault(d["name"], []).append(value)
    return {name: np.stack(v) for name, v in per_image.items() if len(v) == len(images)}


def _dequantized(interp, detail) -> np.ndarray | None:
    try:
        value = interp.get_tensor(detail["index"])
    except ValueError:  # a tensor the plan never filled (constants of removed ops)
        return None
    scale, zero = detail["quantization"]
    if value.dtype in (np.int8, np.uint8) and scale:
        return (value.astype(np.float32) - zero) * scale
    return value.astype(np.float32) if value.dtype == np.float32 else None
