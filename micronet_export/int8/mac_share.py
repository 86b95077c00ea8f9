"""How much of a model's multiply-accumulate work runs in int8, read from the artifact itself.

The int8 search keeps some modules float; counting modules hides that one float depthwise pair
is cheap and one float 1x1 conv is not. MACs per conv / depthwise / fully-connected op:
output elements times the weight elements feeding each output channel.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import onnx

INT8_DTYPES = (np.int8, np.uint8)
TFLITE_MAC_OPS = {"CONV_2D": 0, "FULLY_CONNECTED": 0, "DEPTHWISE_CONV_2D": -1}  # axis of the output channels
ONNX_MAC_OPS = ("Conv", "Gemm", "MatMul")


@dataclass(frozen=True)
class MacShare:
    int8_macs: int
    total_macs: int
    int8_ops: int
    total_ops: int

    @property
    def fraction(self) -> float:
        return self.int8_macs / self.total_macs if self.total_macs else 0.0

    def as_dict(self) -> dict:
        return {"int8_macs": self.int8_macs, "total_macs": self.total_macs, "int8_ops": self.int8_ops,
                "total_ops": self.total_ops, "int8_mac_fraction": round(self.fraction, 4)}


def tflite_mac_share(flatbuffer: bytes) -> MacShare:
    from micronet_export.tflite_inspect import litert_interpreter

    interp = litert_interpreter(flatbuffer, xnnpack=False)
    tensors = {t["index"]: t for t in interp.get_tensor_details()}
    int8_macs = total = int8_ops = ops = 0
    for op in interp._get_ops_details():
        axis = TFLITE_MAC_OPS.get(op["op_name"])
        if axis is None:
            continue
        activation, weight = tensors[int(op["inputs"][0])], tensors[int(op["inputs"][1])]
        out_elements = int(np.prod(tensors[int(op["outputs"][0])]["shape"]))
        macs = out_elements * int(np.prod(weight["shape"])) // int(weight["shape"][axis])
        ops, total = ops + 1, total + macs
        if activation["dtype"] in INT8_DTYPES:
            int8_ops, int8_macs = int8_ops + 1, int8_macs + macs
    return MacShare(int8_macs, total, int8_ops, ops)


def onnx_mac_share(model: onnx.ModelProto) -> MacShare:
    """A Conv / Gemm / MatMul runs in int8 in a QDQ model when its weight comes out of a
    DequantizeLinear (ONNX Runtime fuses that pattern into an integer kernel)."""
    from micronet_export.onnx_shapes import tensor_shapes

    shapes = tensor_shapes(model)
    initializers = {i.name: list(i.dims) for i in model.graph.initializer}
    dequantized = {n.output[0]: n.input[0] for n in model.graph.node if n.op_type == "DequantizeLinear"}
    int8_macs = total = int8_ops = ops = 0
    for node in model.graph.node:
        if node.op_type not in ONNX_MAC_OPS or len(node.input) < 2:
            continue
        weight_name = node.input[1]
        source = dequantized.get(weight_name, weight_name)
        weight = initializers.get(source) or shapes.get(weight_name)
        out = shapes.get(node.output[0])
        if not weight or not out:
            continue
        per_output = int(np.prod(weight)) // int(weight[0]) if node.op_type == "Conv" else int(weight[0])
        if node.op_type == "Gemm" and any(a.name == "transB" and a.i for a in node.attribute):
            per_output = int(weight[1])
        macs = int(np.prod([d or 1 for d in out])) * per_output  # an unknown (dynamic) batch counts as 1
        ops, total = ops + 1, total + macs
        if weight_name in dequantized:
            int8_ops, int8_macs = int8_ops + 1, int8_macs + macs
    return MacShare(int8_macs, total, int8_ops, ops)
