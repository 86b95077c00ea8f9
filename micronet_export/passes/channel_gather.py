"""Channel permutations spelled as view chains become one ``Gather(axis=1)`` each.

The export formulation writes MicroNet's channel shuffles (Reshape, Transpose, Reshape) and
Dynamic Shift-Max's shift (Reshape, two Slice + Concat rolls, Reshape) with 4-D views, so the
plain ONNX has no Gather. Replayed on index arrays (:mod:`micronet_export.channel_order`), each
chain that comes back to an (N, C, H, W) image is a permutation of channels: one Gather with
constant indices says the same in one node. ONNX Runtime copies it as whole channel planes;
the TFLite emitter turns it into a relabelling of channels (no op) and decides there how to
move data when it must.
"""

from __future__ import annotations

import numpy as np
import onnx

from micronet_export.channel_order import INT64_MAX, image_relabelling, resolve_target
from micronet_export.onnx_shapes import tensor_shapes
from micronet_export.passes.graph_edit import GraphEditor, attribute

VIEW_OPS = ("Reshape", "Transpose", "Slice", "Split", "Concat", "Identity")


def _opens_view(shape: list[int], target: list[int]) -> bool:
    return len(shape) == 4 and all(shape) and len(target) == 4 and target[0] == shape[0] \
        and target[1] * target[2] == shape[1] and target[3] == shape[2] * shape[3]


def _slice(view: np.ndarray, node, consts) -> np.ndarray:
    starts, ends = consts[node.input[1]].tolist(), consts[node.input[2]].tolist()
    axes = consts[node.input[3]].tolist() if len(node.input) > 3 and node.input[3] else list(range(len(starts)))
    steps = consts[node.input[4]].tolist() if len(node.input) > 4 and node.input[4] else [1] * len(starts)
    index = [slice(None)] * view.ndim
    for st, en, ax, step in zip(starts, ends, axes, steps):
        index[ax % view.ndim] = slice(st, min(en, INT64_MAX), step)
    return view[tuple(index)]


def _replay(node, views: dict, consts) -> list[np.ndarray] | None:
    """The index arrays of ``node``'s outputs if all its data inputs are views of one source."""
    data = [i for i in node.input[:1]] if node.op_type != "Concat" else list(node.input)
    if not all(i in views for i in data) or len({views[i][0] for i in data}) != 1:
        return None
    view = views[data[0]][1]
    if node.op_type == "Reshape":
        return [view.reshape(resolve_target([int(v) for v in consts[node.input[1]].tolist()], view.size))]
    if node.op_type == "Transpose":
        return [view.transpose(attribute(node, "perm"))]
    if node.op_type == "Slice":
        return [_slice(view, node, consts)]
    if node.op_type == "Identity":
        return [view]
    if node.op_type == "Concat":
        return [np.concatenate([views[i][1] for i in data], axis=int(attribute(node, "axis")))]
    axis = int(attribute(node, "axis", 0)) % view.ndim
    if len(node.input) > 1 and node.input[1]:
        sizes = [int(s) for s in consts[node.input[1]].tolist()]
    else:
        sizes = list(attribute(node, "split", [view.shape[axis] // len(node.output)] * len(node.output)))
    return np.split(view, np.cumsum(sizes)[:-1], axis=axis)


def channel_permutations(model: onnx.ModelProto) -> tuple[onnx.ModelProto, int]:
    """``model`` with every view chain that permutes channels replaced by one Gather; returns
    the model and the number of Gathers made. Chains whose intermediate views other ops read
    are left alone."""
    out = onnx.ModelProto()
    out.CopyFrom(model)
    edit = GraphEditor(out)
    shapes = tensor_shapes(out)
    views: dict[str, tuple[str, np.ndarray]] = {}  # tensor -> (source tensor, index array)
    images: list[tuple[onnx.NodeProto, str, str, np.ndarray]] = []  # (last node, output, source, channels)
    for node in list(out.graph.node):
        if node.op_type not in VIEW_OPS:
            continue
        if node.op_type == "Reshape" and node.input[0] not in views and node.input[1] in edit.consts:
            shape = shapes.get(node.input[0], [])
            target = resolve_target([int(v) for v in edit.consts[node.input[1]].tolist()], int(np.prod(shape or [0])))
            if _opens_view(shape, target):
                views[node.input[0]] = (node.input[0], np.arange(int(np.prod(shape))).reshape(shape))
        results = _replay(node, views, edit.consts)
        if results is None:
            continue
        source = views[node.input[0]][0]
        for name, index in zip(node.output, results):
            views[name] = (source, index)
            channels = image_relabelling(index, shapes[source]) if name != source else None
            if channels is not None:
                images.append((node, name, source, channels))
    made = 0
    for node, name, source, channels in images:
        gather = edit.make_node("Gather", [source, edit.add_const(f"{name}_channels", channels.astype(np.int64))],
                                node, "ChannelGather", axis=1)
        edit.insert_after(node, [gather])
        edit.rename_input(name, gather.output[0])
        for graph_output in out.graph.output:
            if graph_output.name == name:
                raise ValueError("a channel permutation as the graph output is not a MicroNet graph")
        made += 1
    edit.remove_dead()
    return out, made
