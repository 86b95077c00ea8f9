"""Dynamic Shift-Max's per-channel products as ``BatchNormalization`` nodes for ONNX Runtime.

``x * a`` with ``x`` of shape (1, C, H, W) and a runtime coefficient ``a`` of shape
(1, C, 1, 1) is a broadcast Mul; ONNX Runtime runs it as one short loop per channel, whose
overhead dominates on MicroNet's late feature maps (7x7, 14x14). ``BatchNormalization`` with
scale ``a``, zero bias and mean, unit variance and zero epsilon is the same product, exactly
(``(x - 0) / sqrt(1 + 0) * a + 0``), run by a kernel built for per-channel scales.
BatchNormalization takes its scale as a 1-D tensor: the coefficient vector is flattened once,
before the Split that cuts it into Dynamic Shift-Max's coefficients, when nothing else reads
that Split; otherwise each coefficient is flattened on its own.
"""

from __future__ import annotations

import numpy as np
import onnx

from micronet_export.passes.graph_edit import GraphEditor, attribute


def _channel_products(model, edit: GraphEditor, shapes) -> list[tuple[onnx.NodeProto, str, str]]:
    """(mul, data, coefficient) for every Mul of a (1,C,H,W) tensor by a runtime (1,C,1,1) one."""
    found = []
    for mul in [n for n in model.graph.node if n.op_type == "Mul"]:
        for data, coef in (mul.input, mul.input[::-1]):
            sd, sc = shapes.get(data), shapes.get(coef)
            if coef in edit.consts or not sd or not sc or len(sd) != 4 or len(sc) != 4:
                continue
            if sd[0] == sc[0] == 1 and sd[1] == sc[1] and sc[2:] == [1, 1] and sd[2] * sd[3] > 1:
                found.append((mul, data, coef))
                break
    return found


def _flatten_splits(edit: GraphEditor, coefficients: list[str], shapes) -> dict[str, str]:
    """Flatten the input of every channel Split whose outputs are all coefficients: the Split
    then cuts 1-D parts, which are the flattened coefficients themselves. ``coefficients`` is
    in graph order, so the new nodes and constants are too (a set would order them by the
    process's string-hash seed and change the file's bytes from one run to the next)."""
    producer, flat = edit.producer(), {}
    for split in {producer[c].name: producer[c] for c in coefficients if c in producer}.values():
        shape = shapes.get(split.input[0])
        axis = attribute(split, "axis", 0)
        if split.op_type != "Split" or not shape or shape[2:] != [1, 1] or axis != 1 \
                or not all(o in coefficients for o in split.output) or split.input[0] in edit.outputs:
            continue
        reshape = edit.make_node("Reshape", [split.input[0], edit.add_const(f"{split.name}_flat_shape",
                                                                            np.array([shape[1]], np.int64))],
                                 split, "CoefficientsFlat")
        edit.graph.node.insert(list(edit.graph.node).index(split), reshape)
        split.input[0] = reshape.output[0]
        next(a for a in split.attribute if a.name == "axis").i = 0
        flat.update({o: o for o in split.output})
    for info in [vi for vi in edit.graph.value_info if vi.name in flat]:  # now 1-D: ONNX infers them again
        edit.graph.value_info.remove(info)
    return flat


def channel_scales_as_batchnorm(model: onnx.ModelProto, shapes: dict[str, list[int]]) -> tuple[onnx.ModelProto, int]:
    out = onnx.ModelProto()
    out.CopyFrom(model)
    edit = GraphEditor(out)
    products = _channel_products(out, edit, shapes)
    flat = _flatten_splits(edit, list(dict.fromkeys(coef for _, _, coef in products)), shapes)
    for mul, data, coef in products:
        channels = shapes[coef][1]
        if coef not in flat:
            reshape = edit.make_node("Reshape", [coef, edit.add_const(f"{mul.name}_flat_shape",
                                                                      np.array([channels], np.int64))],
                                     mul, "CoefficientFlat")
            edit.graph.node.insert(list(edit.graph.node).index(mul), reshape)
            flat[coef] = reshape.output[0]
        zeros = edit.add_const(f"{mul.name}_zeros", np.zeros(channels, np.float32))
        ones = edit.add_const(f"{mul.name}_ones", np.ones(channels, np.float32))
        scale = edit.make_node("BatchNormalization", [data, flat[coef], zeros, zeros, ones], mul, "ChannelScale",
                               epsilon=0.0)
        edit.insert_after(mul, [scale])
        edit.replace_output(mul, scale)
    edit.remove_dead()
    return out, len(products)
