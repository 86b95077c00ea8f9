"""Depthwise-style convs in the forms ONNX Runtime runs fastest.

* A (k,1) conv followed by a (1,k) depthwise-with-multiplier conv and nothing in between (the
  stem, and every depth-separable pair once BatchNorm is folded) is one k x k conv: the
  product of the two kernels, the first conv's bias pushed through the second. Where the
  second conv's zero padding met the first conv's bias, the composite conv sees the bias; a
  constant added to those border columns takes it back out, so the result is exact.
* A depthwise conv with a channel multiplier m runs in ONNX Runtime as one tiny GEMM per group;
  the same conv on its input repeated m times (one Gather) is a plain depthwise conv, which
  ONNX Runtime's NCHWc kernels run when the channels fill its 16-wide blocks. Composing the
  pair first makes that one repeat and one depthwise conv for both.
"""

from __future__ import annotations

import numpy as np
import onnx

from micronet_export.passes.graph_edit import GraphEditor, attribute


def _conv(node, edit: GraphEditor):
    if node.op_type != "Conv" or node.input[1] not in edit.consts:
        return None
    if list(attribute(node, "dilations", [1, 1])) != [1, 1]:
        return None
    w = edit.consts[node.input[1]]
    b = edit.consts[node.input[2]] if len(node.input) > 2 and node.input[2] else np.zeros(w.shape[0], np.float32)
    if len(node.input) > 2 and node.input[2] and node.input[2] not in edit.consts:
        return None
    return w, b, int(attribute(node, "group", 1)), list(attribute(node, "strides", [1, 1])), \
        list(attribute(node, "pads", [0, 0, 0, 0]))


def _pair(first, second, edit: GraphEditor, consumers, outputs) -> bool:
    a, b = _conv(first, edit), _conv(second, edit)
    if a is None or b is None or first.output[0] in outputs or len(consumers.get(first.output[0], [])) != 1:
        return False
    (wa, _, _, sa, pa), (wb, _, gb, sb, pb) = a, b
    return wa.shape[3] == 1 and wb.shape[2] == 1 and wb.shape[1] == 1 and gb == wa.shape[0] \
        and sa[1] == 1 and sb[0] == 1 and pa[1] == pa[3] == 0 and pb[0] == pb[2] == 0


def _composite(a, b, in_width: int):
    (wa, ba, ga, sa, pa), (wb, bb, _, sb, pb) = a, b
    mult = wb.shape[0] // wa.shape[0]
    source = np.arange(wb.shape[0]) // mult  # first conv's channel each output reads
    kernel = wb[:, 0, 0, None, None, :] * wa[source][:, :, :, 0, None]  # (out, in/g, kh, 1) x (out, 1, 1, kw)
    bias = bb + ba[source] * wb[:, 0, 0, :].sum(axis=1)
    out_width = (in_width + pb[1] + pb[3] - wb.shape[3]) // sb[1] + 1
    columns = np.arange(out_width)[:, None] * sb[1] + np.arange(wb.shape[3])[None, :] - pb[1]
    outside = (columns < 0) | (columns >= in_width)  # (out_width, kw): taps on the second conv's padding
    correction = -(wb[:, 0, 0, :] * ba[source][:, None]) @ outside.T.astype(wb.dtype)  # (out, out_width)
    attrs = {"group": ga, "strides": [sa[0], sb[1]], "pads": [pa[0], pb[1], pa[2], pb[3]],
             "kernel_shape": [wa.shape[2], wb.shape[3]]}
    return kernel.astype(np.float32), bias.astype(np.float32), correction.astype(np.float32), attrs


# Which form a composed pair takes in ONNX Runtime (M0, AVX-512; benchmarks/results/ort_passes.md):
# * "dense": the stem (its first conv is dense) and a pair on at most DENSE_COMPOSITE_MAX_INPUTS
#   channels (M0's first block): ORT runs a dense conv on few input channels with its direct
#   NCHWc kernel, a grouped one with one input per group as one tiny GEMM per group;
# * "repeat": a wider pair with channel multipliers whose output fills whole NCHWc blocks
#   (REPEAT_CHANNEL_MULTIPLE: 16 is the AVX-512 block, and a multiple of AVX2's 8): its input
#   repeated by one Gather, then one plain depthwise k x k conv, which NCHWc runs;
# * otherwise the pair stays: its depthwise convs already run in NCHWc.
DENSE_COMPOSITE_MAX_INPUTS = 4
REPEAT_CHANNEL_MULTIPLE = 16


def _form(first_group: int, inputs: int, outputs: int, one_input_per_group: bool) -> str | None:
    if first_group == 1 or inputs <= DENSE_COMPOSITE_MAX_INPUTS:
        return "dense"
    if one_input_per_group and outputs > inputs and outputs % REPEAT_CHANNEL_MULTIPLE == 0:
        return "repeat"
    return None


def _dense(kernel: np.ndarray, group: int, inputs: int) -> np.ndarray:
    """A grouped conv's kernel (out, in/group, kh, kw) as the dense kernel (out, in, kh, kw)."""
    dense = np.zeros((kernel.shape[0], inputs) + kernel.shape[2:], kernel.dtype)
    per_group_in, per_group_out = inputs // group, kernel.shape[0] // group
    for out in range(kernel.shape[0]):
        start = (out // per_group_out) * per_group_in
        dense[out, start:start + per_group_in] = kernel[out]
    return dense


def _composite_nodes(first, second, form: str, edit: GraphEditor, shapes) -> list[onnx.NodeProto]:
    inputs = shapes[first.input[0]][1]
    kernel, bias, correction, attrs = _composite(_conv(first, edit), _conv(second, edit), shapes[first.output[0]][3])
    source, nodes = first.input[0], []
    if form == "dense":
        kernel, attrs["group"] = _dense(kernel, attrs["group"], inputs), 1
    else:  # output o reads input channel o // (outputs / inputs): repeat the input that way
        repeat = np.arange(kernel.shape[0]) // (kernel.shape[0] // inputs)
        nodes.append(edit.make_node("Gather", [source, edit.add_const(f"{second.name}_repeat", repeat.astype(np.int64))],
                                    second, "MultiplierRepeat", axis=1))
        source, attrs["group"] = nodes[-1].output[0], kernel.shape[0]
    nodes.append(edit.make_node("Conv", [source, edit.add_const(f"{second.name}_composite_w", kernel),
                                         edit.add_const(f"{second.name}_composite_b", bias)], second, "SeparableConv",
                                **attrs))
    if np.any(correction):
        # Stored at the output's full shape: ONNX Runtime adds same-shape tensors faster than it
        # broadcasts a (1, C, 1, W) constant over the rows.
        border = np.broadcast_to(correction[None, :, None, :], shapes[second.output[0]]).astype(np.float32)
        nodes.append(edit.make_node("Add", [nodes[-1].output[0], edit.add_const(f"{second.name}_border", border)],
                                    second, "SeparableBorder"))
    return nodes


def separable_pairs_composed(model: onnx.ModelProto, shapes: dict[str, list[int]]) -> tuple[onnx.ModelProto, int]:
    """Each (k,1) conv -> (1,k) depthwise pair that ``_form`` picks, as one k x k conv (dense, or
    depthwise on repeated input) + a border constant."""
    out = onnx.ModelProto()
    out.CopyFrom(model)
    edit = GraphEditor(out)
    consumers, outputs, done = edit.consumers(), edit.outputs, 0
    for first in list(out.graph.node):
        users = consumers.get(first.output[0], [])
        if len(users) != 1 or not _pair(first, users[0], edit, consumers, outputs):
            continue
        second, (weights, _, group, _, _) = users[0], _conv(first, edit)
        form = _form(group, shapes[first.input[0]][1], shapes[second.output[0]][1], weights.shape[1] == 1)
        if form is None:
            continue
        nodes = _composite_nodes(first, second, form, edit, shapes)
        edit.insert_after(second, nodes)
        edit.replace_output(second, nodes[-1])
        done += 1
    edit.remove_dead()
    return out, done
