"""ONNX Runtime static int8 quantization (QDQ, per-channel weights) and where it hurts.

Calibration data is a list of preprocessed photos (see :mod:`images`), fed by
:class:`calibration_reader`. :func:`per_layer_error` names each block's int8 error by its
PyTorch module path, so a user sees which layer to keep in float or recalibrate.
"""

from __future__ import annotations

import logging
import tempfile
from collections.abc import Iterable
from pathlib import Path

import numpy as np
import onnx

from micronet_export.errors import UserError
from micronet_export.int8.units import module_path
from micronet_export.onnx_shapes import tensor_shapes
from micronet_export.parity import sqnr_db
from micronet_export.runtimes import onnx_session, run_onnx

log = logging.getLogger(__name__)

CALIBRATION_METHODS = ("minmax", "percentile", "entropy")


def calibration_reader(arrays: np.ndarray, input_name: str = "input"):
    """An ORT CalibrationDataReader over (N, 3, S, S) float32 arrays, one sample per batch."""
    from onnxruntime.quantization import CalibrationDataReader

    class _Reader(CalibrationDataReader):
        def __init__(self) -> None:
            self._items = iter(arrays)

        def get_next(self):
            sample = next(self._items, None)
            return None if sample is None else {input_name: sample[None].astype(np.float32)}

    return _Reader()


# ONNX Runtime's QLinearConv pays off only on convs with enough work per output: it runs in
# NHWC behind transposes and requantizes every output, so a conv with fewer input channels per
# group than this, a depthwise conv, or a conv on one pixel costs more in int8 than in float.
MIN_INT8_INPUTS_PER_GROUP = 16


def _conv_kind(weight_dims, group: int, input_pixels: int) -> str | None:
    """Why ORT runs this conv slower in int8 than in float, or None (ratios per conv:
    benchmarks/results/ort_int8_breakdown.md)."""
    out_c, in_per_group, kh, kw = weight_dims
    if group > 1 and in_per_group == 1:
        # no depthwise int8 kernel applies to a channel multiplier (one tiny GEMM per group),
        # and the plain depthwise int8 kernel loses to the NCHWc float one
        return "depthwise"
    if group == 1 and kh * kw > 1 and min(out_c, in_per_group) < 8:
        # the stem and the first block's composed conv: 3-4 inputs or outputs, K = C*k*k and
        # the output channels padded in the int8 kernels, plus the NHWC transposes around them
        return "narrow spatial"
    if input_pixels == 1:
        return "one pixel"  # Dynamic Shift-Max's FCs: quantize/requantize cost more than the FC
    if group > 1 and in_per_group < MIN_INT8_INPUTS_PER_GROUP:
        return "few inputs per group"
    return None


def slow_int8_convs(model: onnx.ModelProto) -> list[str]:
    """Conv nodes that ONNX Runtime's CPU kernels run slower in int8 than in float (see
    :func:`_conv_kind`); the quantizer keeps them float."""
    weights = {i.name: i.dims for i in model.graph.initializer}
    pixels = {name: int(np.prod([d or 1 for d in dims[2:]])) for name, dims in tensor_shapes(model).items()}
    slow = []
    for node in model.graph.node:
        if node.op_type != "Conv" or node.input[1] not in weights:
            continue
        group = next((a.i for a in node.attribute if a.name == "group"), 1)
        if _conv_kind(weights[node.input[1]], group, pixels.get(node.input[0], 0)) is not None:
            slow.append(node.name)
    return slow


# A Gemm on one vector (Dynamic Shift-Max's FCs, the classifier) pays for int8 only when
# reading its weights dominates: below this many weights, quantizing its input and
# dequantizing its output cost more than the float Gemm (M0-M3's Shift-Max FCs: 0.3k-127k
# weights; the ImageNet classifiers 246k-1M).
MIN_INT8_GEMM_WEIGHTS = 1 << 17


def slow_int8_gemms(model: onnx.ModelProto) -> list[str]:
    """Gemm nodes too small for int8 to pay on ONNX Runtime's CPU kernels (see above)."""
    weights = {i.name: i.dims for i in model.graph.initializer}
    return [n.name for n in model.graph.node if n.op_type == "Gemm" and n.input[1] in weights
            and int(np.prod(weights[n.input[1]])) < MIN_INT8_GEMM_WEIGHTS]


def quantize_onnx(
    fp32_model: onnx.ModelProto,
    calibration: np.ndarray | None,
    *,
    method: str = "minmax",
    per_channel: bool = True,
    nodes_to_exclude: Iterable[str] = (),
    op_types: Iterable[str] | None = None,
    keep_slow_convs_float: bool = True,
    activation_type: str = "uint8",
    range_cache: str | Path | None = None,
) -> onnx.ModelProto:
    """Static QDQ int8 of ``fp32_model`` calibrated on ``calibration``.

    Activations are uint8 (asymmetric) and weights int8 per channel: the U8S8 pairing ONNX
    Runtime's x86 kernels are built for; with int8 activations it leaves convs as
    DequantizeLinear + float Conv instead of fusing them into QLinearConv.

    ``range_cache``: ORT's calibration cache (JSON of per-tensor ranges). When the file exists
    its ranges are used and ``calibration`` is not read; otherwise ORT calibrates and writes it,
    so later plans of the same model skip calibration (see :mod:`micronet_export.int8`).
    """
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static

    methods = {"minmax": CalibrationMethod.MinMax, "percentile": CalibrationMethod.Percentile,
               "entropy": CalibrationMethod.Entropy}
    if method not in methods:
        raise UserError(f"unknown calibration method {method!r}; valid: {', '.join(CALIBRATION_METHODS)}")
    cached = range_cache is not None and Path(range_cache).is_file()
    root = logging.getLogger()
    saved_level = root.level
    # quantize_static logs "consider pre-processing" hints on the root logger.
    root.setLevel(logging.ERROR)
    try:
        with tempfile.TemporaryDirectory(prefix="micronet-quant-") as tmp:
            src, dst = Path(tmp) / "fp32.onnx", Path(tmp) / "int8.onnx"
            onnx.save(fp32_model, src)
            quantize_static(
                str(src), str(dst), None if cached else calibration_reader(calibration),
                quant_format=QuantFormat.QDQ,
                per_channel=per_channel,
                activation_type={"uint8": QuantType.QUInt8, "int8": QuantType.QInt8}[activation_type],
                weight_type=QuantType.QInt8,
                calibrate_method=methods[method],
                nodes_to_exclude=list(nodes_to_exclude) + (slow_int8_convs(fp32_model) + slow_int8_gemms(fp32_model)
                                                    if keep_slow_convs_float else []),
                op_types_to_quantize=list(op_types) if op_types else None,
                extra_options={"CalibTensorRangeSymmetric": False, "ActivationSymmetric": False},
                calibration_cache_path=str(range_cache) if range_cache is not None else None,
            )
            return onnx.load(dst)
    finally:
        root.setLevel(saved_level)


def read_range_cache(path: str | Path) -> dict[str, tuple[float, float]]:
    from onnxruntime.quantization.calibrate import load_tensors_data

    data = load_tensors_data(path)
    return {name: tuple(float(v) for v in data[name].range_value) for name in data}


def write_range_cache(path: str | Path, ranges: dict[str, tuple[float, float]]) -> None:
    from onnxruntime.quantization import CalibrationMethod
    from onnxruntime.quantization.calibrate import TensorsData, save_tensors_data

    data = {name: (np.float32(low), np.float32(high)) for name, (low, high) in ranges.items()}
    save_tensors_data(TensorsData(CalibrationMethod.MinMax, data), path)


def module_outputs(model: onnx.ModelProto, depth: int = 3) -> dict[str, str]:
    """PyTorch module path (up to ``depth`` dotted levels) -> name of its last output tensor."""
    last: dict[str, str] = {}
    for node in model.graph.node:
        path = module_path(node.name)
        if not path or not node.output:
            continue
        parts = path.split(".")
        for k in range(1, min(depth, len(parts)) + 1):
            last[".".join(parts[:k])] = node.output[0]
    return last


def _with_outputs(model: onnx.ModelProto, names: list[str]) -> bytes:
    m = onnx.ModelProto()
    m.CopyFrom(model)
    existing = {o.name for o in m.graph.output}
    for name in names:
        if name not in existing:
            m.graph.output.append(onnx.helper.make_tensor_value_info(name, onnx.TensorProto.FLOAT, None))
    return m.SerializeToString()


def per_layer_error(
    fp32_model: onnx.ModelProto, int8_model: onnx.ModelProto, images: np.ndarray, *, depth: int = 4
) -> list[dict]:
    """SQNR (dB) of each module's output, int8 graph vs fp32 graph, in graph order."""
    outputs = module_outputs(fp32_model, depth)
    int8_names = {o for n in int8_model.graph.node for o in n.output}
    order = {o: i for i, n in enumerate(fp32_model.graph.node) for o in n.output}
    consumers: dict[str, list] = {}
    for node in fp32_model.graph.node:
        for i in node.input:
            consumers.setdefault(i, []).append(node)
    chosen: dict[str, str] = {}
    for path, tensor in outputs.items():
        if path.count(".") < 1:
            continue
        if tensor not in int8_names:
            # The quantizer folds a Relu/Clip into its producer and renames the producer's
            # output to the activation's: follow it.
            act = [n for n in consumers.get(tensor, []) if n.op_type in ("Relu", "Clip")]
            tensor = act[0].output[0] if act else tensor
        if tensor in int8_names:
            chosen[path] = tensor
    paths = sorted(chosen, key=lambda p: (order.get(chosen[p], 0), p.count(".")))
    tensors = [chosen[p] for p in paths]
    ref = run_onnx(onnx_session(_with_outputs(fp32_model, tensors)), images, outputs=tensors)
    got = run_onnx(onnx_session(_with_outputs(int8_model, tensors)), images, outputs=tensors)
    rows = []
    for path, r, g in zip(paths, ref, got):
        rows.append({"module": path, "sqnr_db": round(sqnr_db(g, r), 2),
                     "ref_absmax": float(np.abs(r).max()), "ref_std": float(r.std())})
    return rows
