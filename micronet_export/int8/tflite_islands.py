"""A flatbuffer post-pass that keeps float islands float across SPLIT.

The MLIR quantizer's denylist keeps named ops in float, but it quantizes a SPLIT anyway: a
float producer and float consumers then get QUANTIZE -> SPLIT (int8) -> DEQUANTIZE around it.
Dynamic Shift-Max splits its coefficients [a1, b1, a2, b2] this way, so a "float" Dynamic
Shift-Max still sees its coefficients on one shared int8 grid, where b (about +-0.1) gets a
step of 0.02. This pass removes that round trip: the SPLIT reads the float tensor and writes
the tensors its DEQUANTIZEs wrote.
"""

from __future__ import annotations

from micronet_export.tflite_inspect import flatbuffer_utils

_SPLIT, _SPLIT_V, _QUANTIZE, _DEQUANTIZE = 49, 102, 114, 6  # schema.BuiltinOperator values


def _builtin(model, op) -> int:
    code = model.operatorCodes[op.opcodeIndex]
    return max(code.builtinCode, code.deprecatedBuiltinCode)


def float_splits(flatbuffer: bytes) -> tuple[bytes, int]:
    """``flatbuffer`` with every QUANTIZE -> SPLIT -> DEQUANTIZE round trip made a float
    SPLIT; returns the model and how many SPLITs changed.

    The same input gives the same bytes in every process: the MLIR quantizer emits the
    DEQUANTIZEs of one SPLIT in an order that changes from process to process (the tensors
    they write are numbered in that order), so the SPLIT's outputs are renumbered by
    position (:func:`_canonical_outputs`) instead of taking the DEQUANTIZEs' tensors as
    they come."""
    utils = flatbuffer_utils()
    model = utils.convert_bytearray_to_object(bytearray(flatbuffer))
    graph = model.subgraphs[0]
    producer = {t: op for op in graph.operators for t in op.outputs}
    consumers: dict[int, list] = {}
    for op in graph.operators:
        for t in op.inputs:
            consumers.setdefault(t, []).append(op)
    graph_outputs = set(graph.outputs)
    removed: list = []
    renamed: dict[int, int] = {}
    rewired = 0
    for op in graph.operators:
        if _builtin(model, op) not in (_SPLIT, _SPLIT_V):
            continue
        data_slot = 1 if _builtin(model, op) == _SPLIT else 0  # SPLIT: (axis, data); SPLIT_V: (data, sizes, axis)
        quantize = producer.get(op.inputs[data_slot])
        if quantize is None or _builtin(model, quantize) != _QUANTIZE:
            continue
        users = [consumers.get(t, []) for t in op.outputs]
        if any(t in graph_outputs for t in op.outputs) or not all(
                len(u) == 1 and _builtin(model, u[0]) == _DEQUANTIZE for u in users):
            continue
        op.inputs[data_slot] = quantize.inputs[0]
        renamed.update(_canonical_outputs(graph, op, [u[0].outputs[0] for u in users]))
        removed += [u[0] for u in users]
        rewired += 1
        if len(consumers[quantize.outputs[0]]) == 1:
            removed.append(quantize)
    if not removed:
        return flatbuffer, 0
    graph.operators = [op for op in graph.operators if not any(op is r for r in removed)]
    for reader in (op for op in graph.operators if any(t in renamed for t in op.inputs)):
        reader.inputs = [renamed.get(t, t) for t in reader.inputs]
    if any(t in renamed for t in graph.outputs):
        graph.outputs = [renamed.get(t, t) for t in graph.outputs]
    return bytes(utils.convert_object_to_bytearray(model)), rewired


def _canonical_outputs(graph, split, dequantized: list[int]) -> dict[int, int]:
    """Make ``split`` write the ``dequantized`` tensors (its DEQUANTIZEs' outputs, in the
    order of its own outputs) numbered in ascending order by position, whatever order the
    quantizer emitted the DEQUANTIZEs in; returns old -> new tensor index for their readers.

    Each new tensor takes the shape of the SPLIT's own output at that position (SPLIT_V's
    parts may differ in size); names, float type and the absent quantization stay with the
    index, as the quantizer gives them out in emission order too."""
    numbered = sorted(dequantized)
    for position, index in enumerate(numbered):
        own = graph.tensors[split.outputs[position]]
        graph.tensors[index].shape = own.shape
        graph.tensors[index].shapeSignature = own.shapeSignature
    split.outputs = numbered
    return {old: new for old, new in zip(dequantized, numbered) if old != new}
