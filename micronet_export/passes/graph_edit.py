"""Small, explicit edits of an ONNX graph: who consumes what, constants, node names in the
module scope of the nodes they replace, and removal of what nothing reads any more."""

from __future__ import annotations

import numpy as np
import onnx
from onnx import helper, numpy_helper


class GraphEditor:
    def __init__(self, model: onnx.ModelProto) -> None:
        self.model = model
        self.graph = model.graph
        self.consts: dict[str, np.ndarray] = {i.name: numpy_helper.to_array(i) for i in self.graph.initializer}
        for node in self.graph.node:
            if node.op_type == "Constant":
                value = next(a for a in node.attribute if a.name == "value")
                self.consts[node.output[0]] = numpy_helper.to_array(value.t)
        self._names = {n.name for n in self.graph.node} | {o for n in self.graph.node for o in n.output} | set(self.consts)

    def producer(self) -> dict[str, onnx.NodeProto]:
        return {o: n for n in self.graph.node for o in n.output}

    def consumers(self) -> dict[str, list[onnx.NodeProto]]:
        found: dict[str, list] = {}
        for node in self.graph.node:
            for name in node.input:
                found.setdefault(name, []).append(node)
        return found

    @property
    def outputs(self) -> set[str]:
        return {o.name for o in self.graph.output}

    def unique(self, name: str) -> str:
        candidate, k = name, 1
        while candidate in self._names:
            candidate, k = f"{name}_{k}", k + 1
        self._names.add(candidate)
        return candidate

    def add_const(self, name: str, value: np.ndarray) -> str:
        name = self.unique(name)
        self.graph.initializer.append(numpy_helper.from_array(np.asarray(value), name))
        self.consts[name] = np.asarray(value)
        return name

    def make_node(self, op_type: str, inputs: list[str], scope_of: onnx.NodeProto, suffix: str, **attrs) -> onnx.NodeProto:
        """A node named inside the module scope of ``scope_of`` ('/features/.../ShiftGather'), so
        int8 units and TFLite name scopes still map it to its PyTorch module."""
        scope = scope_of.name.rsplit("/", 1)[0]
        name = self.unique(f"{scope}/{suffix}")
        return helper.make_node(op_type, inputs, [self.unique(f"{name}_output_0")], name=name, **attrs)

    def rename_input(self, old: str, new: str) -> None:
        for node in self.graph.node:
            for i, name in enumerate(node.input):
                if name == old:
                    node.input[i] = new

    def replace_output(self, old: onnx.NodeProto, last: onnx.NodeProto) -> None:
        """Everything that read ``old``'s output reads ``last``'s; a graph output keeps its name
        (``last`` takes it over and ``old`` goes)."""
        name = old.output[0]
        if name in self.outputs:
            self.graph.node.remove(old)
            # The graph holds a copy of ``last`` (repeated fields copy on insert): rename that one.
            placed = next(n for n in self.graph.node if n.name == last.name)
            self.rename_input(placed.output[0], name)
            placed.output[0] = name
        else:
            self.rename_input(name, last.output[0])

    def remove_dead(self) -> int:
        """Remove nodes whose outputs nothing reads, and initializers no node reads."""
        removed = 0
        while True:
            read = {i for n in self.graph.node for i in n.input} | self.outputs
            dead = [n for n in self.graph.node if not any(o in read for o in n.output)]
            if not dead:
                break
            for node in dead:
                self.graph.node.remove(node)
            removed += len(dead)
        read = {i for n in self.graph.node for i in n.input}
        for init in [i for i in self.graph.initializer if i.name not in read]:
            self.graph.initializer.remove(init)
        return removed

    def insert_after(self, anchor: onnx.NodeProto, nodes: list[onnx.NodeProto]) -> None:
        """Put ``nodes`` right after ``anchor`` (keeps the node list topologically sorted)."""
        index = list(self.graph.node).index(anchor) + 1
        for k, node in enumerate(nodes):
            self.graph.node.insert(index + k, node)


def attribute(node, name: str, default=None):
    return next((helper.get_attribute_value(a) for a in node.attribute if a.name == name), default)
