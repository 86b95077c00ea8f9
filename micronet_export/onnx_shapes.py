"""Every tensor's shape in an ONNX graph, from ONNX shape inference (one place for it)."""

from __future__ import annotations

import onnx


def tensor_shapes(model: onnx.ModelProto) -> dict[str, list[int]]:
    """Name -> dims of every graph input, intermediate tensor and output; 0 for a dim that
    inference left unknown."""
    inferred = onnx.shape_inference.infer_shapes(model)
    return {vi.name: [d.dim_value for d in vi.type.tensor_type.shape.dim]
            for vi in list(inferred.graph.input) + list(inferred.graph.value_info) + list(inferred.graph.output)}
