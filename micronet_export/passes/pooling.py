"""``ReduceMean`` over H and W (keepdims) as ``GlobalAveragePool``: the same mean, one op both
runtimes know as pooling (ONNX Runtime runs it in its NCHWc layout without reordering; the
TFLite emitter lowers both to one MEAN)."""

from __future__ import annotations

import onnx
from onnx import helper

from micronet_export.onnx_shapes import tensor_shapes
from micronet_export.passes.graph_edit import GraphEditor, attribute


def _spatial_mean(node, edit: GraphEditor, ranks: dict[str, int]) -> bool:
    if node.op_type != "ReduceMean" or not attribute(node, "keepdims", 1) or ranks.get(node.input[0]) != 4:
        return False
    axes = attribute(node, "axes")
    if axes is None and len(node.input) > 1 and node.input[1] in edit.consts:
        axes = edit.consts[node.input[1]].tolist()
    return axes is not None and sorted(a % 4 for a in axes) == [2, 3]


def spatial_means_as_pooling(model: onnx.ModelProto) -> tuple[onnx.ModelProto, int]:
    out = onnx.ModelProto()
    out.CopyFrom(model)
    edit = GraphEditor(out)
    ranks = {name: len(dims) for name, dims in tensor_shapes(out).items()}
    done = 0
    for index, node in enumerate(list(out.graph.node)):
        if _spatial_mean(node, edit, ranks):
            pool = helper.make_node("GlobalAveragePool", [node.input[0]], list(node.output),
                                    name=edit.unique(node.name.rsplit("/", 1)[0] + "/GlobalAveragePool"))
            out.graph.node.remove(node)
            out.graph.node.insert(index, pool)
            done += 1
    edit.remove_dead()
    return out, done
