"""Fully connected layers on a pooled pixel as ``Gemm`` for ONNX Runtime.

Dynamic Shift-Max computes its coefficients from ``GlobalAveragePool(x)`` with two 1x1 convs
on a (1, C, 1, 1) tensor. ONNX Runtime runs such a conv in its NCHWc layout, with a reorder
before and after each one; as ``Gemm`` on the flattened (1, C) vector it needs none. The
chain from the pooling on is rewritten in 2-D: each 1x1 conv becomes a Gemm (weights
squeezed, transposed by the node), unary activations stay, a constant added or multiplied is
flattened, and the chain's result is made (1, K, 1, 1) again unless a Reshape reads it anyway.
"""

from __future__ import annotations

import numpy as np
import onnx
from onnx import helper

from micronet_export.passes.graph_edit import GraphEditor, attribute

UNARY = ("Relu", "Clip", "Sigmoid", "HardSigmoid", "HardSwish")
WITH_CONSTANT = ("Add", "Mul", "Sub")


def _pixel_fc(node, edit: GraphEditor) -> bool:
    weights = edit.consts.get(node.input[1]) if node.op_type == "Conv" else None
    return weights is not None and weights.ndim == 4 and weights.shape[2:] == (1, 1) \
        and int(attribute(node, "group", 1)) == 1 and not any(attribute(node, "pads", [0]))


def _flattenable(node, name: str, edit: GraphEditor) -> bool:
    if _pixel_fc(node, edit):
        return True
    others = [i for i in node.input if i and i != name]
    if node.op_type in UNARY:
        return node.input[0] == name and all(i in edit.consts for i in others)
    return node.op_type in WITH_CONSTANT and len(others) == 1 and others[0] in edit.consts


def _chain(start: str, edit: GraphEditor, consumers) -> list[onnx.NodeProto]:
    """The single-consumer nodes from ``start`` on that can run on the flattened vector, or []
    when they hold no 1x1 conv."""
    chain, name = [], start
    while name not in edit.outputs and len(consumers.get(name, [])) == 1:
        node = consumers[name][0]
        if not _flattenable(node, name, edit):
            break
        chain.append(node)
        name = node.output[0]
    return chain if any(_pixel_fc(n, edit) for n in chain) else []


def _to_2d(node, edit: GraphEditor) -> None:
    if _pixel_fc(node, edit):
        weights = edit.consts[node.input[1]][:, :, 0, 0]
        node.op_type = "Gemm"
        node.input[1] = edit.add_const(f"{node.name}_gemm_w", weights)
        del node.attribute[:]
        node.attribute.append(helper.make_attribute("transB", 1))
    elif node.op_type in WITH_CONSTANT:
        for k, name in enumerate(node.input):
            value = edit.consts.get(name)
            if value is not None and value.ndim > 2:
                node.input[k] = edit.add_const(f"{node.name}_2d", value.reshape(1, -1))


def _back_to_4d(end, edit: GraphEditor, readers) -> onnx.NodeProto:
    """The Reshape that makes ``end``'s (1, K) result (1, K, 1, 1) again for ``readers``."""
    name, shape = end.output[0], edit.add_const(f"{end.name}_4d", np.array([0, -1, 1, 1], np.int64))
    if name in edit.outputs:
        end.output[0] = edit.unique(f"{name}_2d")
        back = helper.make_node("Reshape", [end.output[0], shape], [name], name=edit.unique(f"{end.name}_4d"))
    else:
        back = edit.make_node("Reshape", [name, shape], end, "PixelBack")
        for reader in readers:
            reader.input[list(reader.input).index(name)] = back.output[0]
    return back


def pixel_fcs_as_gemm(model: onnx.ModelProto) -> tuple[onnx.ModelProto, int]:
    out = onnx.ModelProto()
    out.CopyFrom(model)
    edit = GraphEditor(out)
    consumers, done = edit.consumers(), 0
    for pool in [n for n in out.graph.node if n.op_type == "GlobalAveragePool"]:
        chain = _chain(pool.output[0], edit, consumers)
        if not chain:
            continue
        # Edit the chain's nodes before inserting any: the graph's node list copies on insert.
        flat = edit.make_node("Flatten", [pool.output[0]], pool, "PooledFlat", axis=1)
        chain[0].input[list(chain[0].input).index(pool.output[0])] = flat.output[0]
        for node in chain:
            _to_2d(node, edit)
        readers = consumers.get(chain[-1].output[0], [])
        if chain[-1].output[0] in edit.outputs or not all(r.op_type == "Reshape" for r in readers):
            edit.insert_after(chain[-1], [_back_to_4d(chain[-1], edit, readers)])
        edit.insert_after(pool, [flat])
        done += 1
    for info in list(out.graph.value_info):  # the chain's tensors are 2-D now: ONNX infers shapes again
        out.graph.value_info.remove(info)
    edit.remove_dead()
    return out, done
