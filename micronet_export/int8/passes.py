"""Function-preserving ONNX rewrites from data-free quantization (Nagel et al., ICCV 2019).

Both change the float model so that int8 loses less, and leave its float function as it was
(up to float32 round-off); both runtimes then quantize the rewritten model. Whether they pay
off on MicroNet is measured in ``benchmarks/int8_remedies.py``; the export's search does not
use them (see README, "int8 accuracy").

* :func:`equalize` (cross-layer equalization): where a Conv feeds only another Conv with
  nothing in between (MicroNet's depth-separable (k,1) -> (1,k) pairs and its stem), scale
  each intermediate channel so that every channel spans the shared per-tensor int8 range,
  and undo the scale in the next conv's weights.
* :func:`correct_bias` (bias correction): int8 weight rounding shifts each output channel's
  mean by (W_int8 - W) . E[x]; subtract that from the bias (per-channel symmetric weights,
  scale = max|w| / 127, as both runtimes quantize them).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import onnx
from onnx import numpy_helper

WEIGHT_LEVELS = 127
MAX_EQUALIZATION = 16.0


@dataclass
class ConvPair:
    first: onnx.NodeProto
    second: onnx.NodeProto


def _attribute(node, name: str, default):
    return next((onnx.helper.get_attribute_value(a) for a in node.attribute if a.name == name), default)


class _Weights:
    """Copy-on-write access to a model's initializers (onnxsim shares equal ones between nodes)."""

    def __init__(self, model: onnx.ModelProto) -> None:
        self.model = model
        self.by_name = {i.name: i for i in model.graph.initializer}

    def get(self, name: str) -> np.ndarray:
        return numpy_helper.to_array(self.by_name[name]).copy()

    def set(self, node, slot: int, value: np.ndarray, tag: str) -> None:
        name = f"{node.name or node.output[0]}::{tag}"
        tensor = numpy_helper.from_array(value.astype(np.float32), name)
        self.model.graph.initializer.append(tensor)
        self.by_name[name] = tensor
        node.input[slot] = name


def _channel_values(model: onnx.ModelProto, names: list[str], images: np.ndarray) -> dict[str, np.ndarray]:
    from micronet_export.quantize import _with_outputs
    from micronet_export.runtimes import onnx_session, run_onnx

    values = run_onnx(onnx_session(_with_outputs(model, names)), images, outputs=names)
    return dict(zip(names, values))


def conv_pairs(model: onnx.ModelProto) -> list[ConvPair]:
    consumers: dict[str, list] = {}
    for node in model.graph.node:
        for name in node.input:
            consumers.setdefault(name, []).append(node)
    constants = {i.name for i in model.graph.initializer}
    outputs = {o.name for o in model.graph.output}
    pairs = []
    for node in model.graph.node:
        users = consumers.get(node.output[0], []) if node.op_type == "Conv" else []
        if len(users) == 1 and users[0].op_type == "Conv" and users[0].input[1] in constants \
                and node.input[1] in constants and node.output[0] not in outputs:
            pairs.append(ConvPair(node, users[0]))
    return pairs


def equalize(model: onnx.ModelProto, images: np.ndarray) -> tuple[onnx.ModelProto, int]:
    """Cross-layer equalization of every :func:`conv_pairs` pair; returns (model, pairs)."""
    out = onnx.ModelProto()
    out.CopyFrom(model)
    pairs = conv_pairs(out)
    values = _channel_values(out, [p.first.output[0] for p in pairs], images)
    weights = _Weights(out)
    for pair in pairs:
        reach = np.abs(values[pair.first.output[0]]).max(axis=(0, 2, 3))
        # Channel c is divided by s_c = reach_c / max(reach), so that all channels span the
        # shared range, but by at most MAX_EQUALIZATION (4 more bits): a near-dead channel
        # would otherwise get weights of 1e5 for no information (and LiteRT aborts on them).
        # The geometric mean of s is 1: the weights keep their overall size.
        scale = np.clip(reach / max(reach.max(), 1e-30), 1.0 / MAX_EQUALIZATION, 1.0)
        scale = scale / np.exp(np.mean(np.log(scale)))
        weights.set(pair.first, 1, weights.get(pair.first.input[1]) / scale[:, None, None, None], "equalized")
        if len(pair.first.input) > 2 and pair.first.input[2]:
            weights.set(pair.first, 2, weights.get(pair.first.input[2]) / scale, "equalized_bias")
        second = weights.get(pair.second.input[1])
        group = int(_attribute(pair.second, "group", 1))
        per_group_in, per_group_out = second.shape[1], second.shape[0] // group
        input_channel = (np.arange(second.shape[0]) // per_group_out)[:, None] * per_group_in + np.arange(per_group_in)
        weights.set(pair.second, 1, second * scale[input_channel][:, :, None, None], "equalized")
    return out, len(pairs)


def _fake_quant_per_channel(w: np.ndarray) -> np.ndarray:
    flat = w.reshape(len(w), -1)
    scale = np.maximum(np.abs(flat).max(axis=1), 1e-30) / WEIGHT_LEVELS
    return (np.clip(np.round(flat / scale[:, None]), -WEIGHT_LEVELS, WEIGHT_LEVELS) * scale[:, None]).reshape(w.shape)


def correct_bias(model: onnx.ModelProto, images: np.ndarray) -> tuple[onnx.ModelProto, int]:
    """Bias correction of int8 weight rounding for every Conv / Gemm with a bias."""
    out = onnx.ModelProto()
    out.CopyFrom(model)
    weights = _Weights(out)
    layers = [n for n in out.graph.node if n.op_type in ("Conv", "Gemm") and len(n.input) > 2 and n.input[2]
              and n.input[1] in weights.by_name and n.input[2] in weights.by_name]
    values = _channel_values(out, sorted({n.input[0] for n in layers}), images)
    for node in layers:
        x = values[node.input[0]]
        w = weights.get(node.input[1])
        delta = _fake_quant_per_channel(w) - w
        if node.op_type == "Gemm":
            if _attribute(node, "transB", 0) != 1:
                continue
            shift = delta @ x.reshape(len(x), -1).mean(axis=0)
        else:
            mean_in = x.mean(axis=(0, 2, 3))
            group = int(_attribute(node, "group", 1))
            per_group_in, per_group_out = w.shape[1], w.shape[0] // group
            channels = (np.arange(w.shape[0]) // per_group_out)[:, None] * per_group_in + np.arange(per_group_in)
            shift = (delta.sum(axis=(2, 3)) * mean_in[channels]).sum(axis=1)
        weights.set(node, 2, weights.get(node.input[2]) - shift, "bias_corrected")
    return out, len(layers)
