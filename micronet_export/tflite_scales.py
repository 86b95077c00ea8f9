"""Give constant-zero int8 activations a usable scale (and requantize the biases that depend
on it), so LiteRT's XNNPACK delegate accepts the model."""

from __future__ import annotations

import numpy as np

# Activation scales below this come from tensors that were constant zero on the calibration
# data (e.g. a Dynamic Shift-Max squeeze FC whose ReLU units are all dead in a trained model):
# TFLiteConverter gives them a ~1e-8 scale, the bias of the next conv a ~1e-9 scale, and
# LiteRT 2.x's XNNPACK delegate then fails ("failed to create XNNPACK runtime", 2.1) or aborts
# the process ("double free or corruption", 2.2/2.3). Any sane scale represents the zeros.
DEGENERATE_SCALE = 1e-6
REPAIRED_SCALE = 1.0 / 128


def repair_degenerate_scales(flatbuffer: bytes) -> tuple[bytes, list[str]]:
    """Give constant-zero activations a usable scale and requantize the biases that depend on
    it (bias scale = input scale x weight scale). Returns the model and the repaired tensors."""
    from tensorflow.lite.python import schema_py_generated as schema
    from tensorflow.lite.tools import flatbuffer_utils

    model = flatbuffer_utils.convert_bytearray_to_object(bytearray(flatbuffer))
    repaired: list[str] = []
    weighted = {schema.BuiltinOperator.CONV_2D, schema.BuiltinOperator.DEPTHWISE_CONV_2D,
                schema.BuiltinOperator.FULLY_CONNECTED}
    for subgraph in model.subgraphs:
        fixed: set[int] = set()
        for i, tensor in enumerate(subgraph.tensors):
            q = tensor.quantization
            has_data = model.buffers[tensor.buffer].data is not None and len(model.buffers[tensor.buffer].data)
            if q is not None and q.scale is not None and len(q.scale) == 1 and 0 < q.scale[0] < DEGENERATE_SCALE \
                    and not has_data:
                q.scale = [REPAIRED_SCALE]
                fixed.add(i)
                repaired.append(tensor.name.decode() if isinstance(tensor.name, bytes) else str(tensor.name))
        if not fixed:
            continue
        for op in subgraph.operators:
            code = model.operatorCodes[op.opcodeIndex]
            builtin = max(code.builtinCode, code.deprecatedBuiltinCode)
            if builtin not in weighted or len(op.inputs) < 3 or op.inputs[0] not in fixed or op.inputs[2] < 0:
                continue
            weights, bias = subgraph.tensors[op.inputs[1]], subgraph.tensors[op.inputs[2]]
            w_scale = np.asarray(weights.quantization.scale, np.float64)
            old = np.asarray(bias.quantization.scale, np.float64)
            new = REPAIRED_SCALE * w_scale
            buf = model.buffers[bias.buffer]
            values = np.frombuffer(bytes(bytearray(buf.data)), dtype=np.int32).astype(np.float64)
            values = np.clip(np.round(values * old / new), -(2**31), 2**31 - 1).astype(np.int32)
            buf.data = np.frombuffer(values.tobytes(), dtype=np.uint8)
            bias.quantization.scale = new.astype(np.float32).tolist()
    return bytes(flatbuffer_utils.convert_object_to_bytearray(model)), repaired
