"""What the lowering reads off the static-shape ONNX graph: shapes, constants, producers,
the module scope of each node and the patterns it lowers as a whole (hard swish)."""

from __future__ import annotations

import numpy as np
import onnx
from onnx import numpy_helper

from micronet_export.onnx_shapes import tensor_shapes

# How far back :meth:`OnnxGraph.upstream_conv` follows a feature map.
MAX_UPSTREAM_STEPS = 64


def attrs(node) -> dict:
    return {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}


def scope_of(node_name: str) -> str:
    """The PyTorch module path of an ONNX node (its TF name scope in the lowering)."""
    from micronet_export.int8.units import GRAPH_SCOPE, module_path

    return module_path(node_name) or GRAPH_SCOPE


def _shapes(model: onnx.ModelProto) -> dict[str, list[int]]:
    return {name: [d if d > 0 else 1 for d in dims] for name, dims in tensor_shapes(model).items()}


def is_depthwise(weight: np.ndarray, group: int) -> bool:
    return group > 1 and weight.shape[1] == 1


class OnnxGraph:
    def __init__(self, model: onnx.ModelProto) -> None:
        self.model = model
        self.nodes = list(model.graph.node)
        self.node_of = {o: n for n in self.nodes for o in n.output}
        self.shapes = _shapes(model)
        self.consts: dict[str, np.ndarray] = {i.name: numpy_helper.to_array(i) for i in model.graph.initializer}
        for node in self.nodes:
            if node.op_type == "Constant":
                self.consts[node.output[0]] = numpy_helper.to_array(attrs(node)["value"])
        self.input_name = model.graph.input[0].name
        self.output_name = model.graph.output[0].name

    @property
    def input_shape_nhwc(self) -> list[int]:
        n, c, h, w = self.shapes[self.input_name]
        return [n, h, w, c]

    def is_scalar(self, name: str, value: float) -> bool:
        return name in self.consts and self.consts[name].size == 1 and float(self.consts[name]) == value

    def upstream_conv(self, name: str) -> str | None:
        """The output of the nearest non-depthwise conv whose channels ``name`` carries."""
        for _ in range(MAX_UPSTREAM_STEPS):
            node = self.node_of.get(name)
            if node is None:
                return None
            if node.op_type == "Conv":
                if not is_depthwise(self.consts[node.input[1]], int(attrs(node).get("group", 1))):
                    return node.output[0]
                name = node.input[0]
                continue
            # Follow the feature map, not the per-channel coefficients.
            inputs = [i for i in node.input if i and i not in self.consts]
            if not inputs:
                return None
            name = max(inputs, key=lambda i: int(np.prod(self.shapes.get(i, [0]))))
        return None

    def hard_swish_muls(self) -> dict[str, str]:
        """Mul nodes computing ``x * clip(x + 3, 0, 6) / 6`` -> name of ``x``."""
        found = {}
        for node in self.nodes:
            if node.op_type != "Mul":
                continue
            for x_name, other in ((node.input[0], node.input[1]), (node.input[1], node.input[0])):
                if self._is_hard_sigmoid_of(other, x_name):
                    found[node.name] = x_name
        return found

    def _is_hard_sigmoid_of(self, name: str, x_name: str) -> bool:
        div = self.node_of.get(name)
        if not div or div.op_type != "Div" or not self.is_scalar(div.input[1], 6.0):
            return False
        clip = self.node_of.get(div.input[0])
        if not clip or clip.op_type != "Clip" or not (self.is_scalar(clip.input[1], 0.0)
                                                      and self.is_scalar(clip.input[2], 6.0)):
            return False
        add = self.node_of.get(clip.input[0])
        return bool(add and add.op_type == "Add" and x_name in add.input
                    and any(self.is_scalar(i, 3.0) for i in add.input))
