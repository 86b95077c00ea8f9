"""Activation patterns in the fewest ONNX Runtime nodes.

ONNX Runtime pays a fixed cost per node, and MicroNet's small tensors (Dynamic Shift-Max's
coefficient vectors, the classifier's) make it a large share of their time:

* ``Conv -> Clip(lo, hi) -> Mul(scalar s > 0)``, Dynamic Shift-Max's hard sigmoid scaled by its
  lambda: the conv's weights and bias scaled by ``s`` and the clip's bounds too give the same
  values (``clip(y, lo, hi) * s = clip(s*y, s*lo, s*hi)`` for ``s > 0``) with one node fewer,
  and ONNX Runtime then fuses the clip into the conv;
* ``x * Clip(x + 3, 0, 6) / 6`` (h-swish as PyTorch exports it, four nodes) as the one
  ``HardSwish`` node of opset 14, which ONNX Runtime runs as one kernel.
"""

from __future__ import annotations

import numpy as np
import onnx

from micronet_export.passes.graph_edit import GraphEditor


def _scalar(edit: GraphEditor, name: str) -> float | None:
    value = edit.consts.get(name)
    return float(value.reshape(())) if value is not None and value.size == 1 else None


def _scaled_clip(mul, edit: GraphEditor, producer, consumers):
    """(conv, clip, s) when ``mul`` scales a conv's clip that nothing else reads, else None."""
    for data, factor in (mul.input, mul.input[::-1]):
        s = _scalar(edit, factor)
        clip = producer.get(data)
        if s is None or s <= 0 or clip is None or clip.op_type != "Clip" or len(clip.input) != 3:
            continue
        conv = producer.get(clip.input[0])
        if conv is None or conv.op_type != "Conv" or len(conv.input) != 3 or conv.input[1] not in edit.consts \
                or conv.input[2] not in edit.consts or None in (_scalar(edit, clip.input[1]), _scalar(edit, clip.input[2])):
            continue
        if len(consumers.get(data, [])) == 1 and len(consumers.get(clip.input[0], [])) == 1 \
                and data not in edit.outputs and clip.input[0] not in edit.outputs:
            return conv, clip, s
    return None


def clip_scales_folded(model: onnx.ModelProto) -> tuple[onnx.ModelProto, int]:
    out = onnx.ModelProto()
    out.CopyFrom(model)
    edit = GraphEditor(out)
    producer, consumers, done = edit.producer(), edit.consumers(), 0
    for mul in [n for n in out.graph.node if n.op_type == "Mul"]:
        found = _scaled_clip(mul, edit, producer, consumers)
        if found is None or mul.output[0] in edit.outputs:
            continue
        conv, clip, s = found
        conv.input[1] = edit.add_const(f"{conv.name}_scaled_w", (edit.consts[conv.input[1]] * s).astype(np.float32))
        conv.input[2] = edit.add_const(f"{conv.name}_scaled_b", (edit.consts[conv.input[2]] * s).astype(np.float32))
        lo, hi = (_scalar(edit, name) * s for name in clip.input[1:])
        clip.input[1] = edit.add_const(f"{clip.name}_scaled_min", np.array(lo, np.float32))
        clip.input[2] = edit.add_const(f"{clip.name}_scaled_max", np.array(hi, np.float32))
        edit.rename_input(mul.output[0], clip.output[0])
        done += 1
    edit.remove_dead()
    return out, done


def _hard_swish_input(mul, edit: GraphEditor, producer) -> str | None:
    """``x`` when ``mul`` is ``x * Clip(x + 3, 0, 6) / 6``."""
    for x, gate in (mul.input, mul.input[::-1]):
        div = producer.get(gate)
        if div is None or div.op_type != "Div" or _scalar(edit, div.input[1]) != 6.0:
            continue
        clip = producer.get(div.input[0])
        if clip is None or clip.op_type != "Clip" or len(clip.input) != 3 \
                or (_scalar(edit, clip.input[1]), _scalar(edit, clip.input[2])) != (0.0, 6.0):
            continue
        add = producer.get(clip.input[0])
        if add is None or add.op_type != "Add" or x not in add.input or len(set(add.input)) != 2:
            continue
        if _scalar(edit, next(i for i in add.input if i != x)) == 3.0:
            return x
    return None


def hard_swish_as_op(model: onnx.ModelProto) -> tuple[onnx.ModelProto, int]:
    opset = next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), 0)
    if opset < 14:  # HardSwish is an opset-14 operator
        return model, 0
    out = onnx.ModelProto()
    out.CopyFrom(model)
    edit = GraphEditor(out)
    producer, done = edit.producer(), 0
    for mul in [n for n in out.graph.node if n.op_type == "Mul"]:
        x = _hard_swish_input(mul, edit, producer)
        if x is None:
            continue
        node = edit.make_node("HardSwish", [x], mul, "HardSwish")
        edit.insert_after(mul, [node])
        edit.replace_output(mul, node)
        done += 1
    edit.remove_dead()
    return out, done
