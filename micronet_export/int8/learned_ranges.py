"""Activation ranges learned in the PyTorch int8 simulation, carried into a TFLite model.

The simulation's rounding points and the calibrated flatbuffer's tensors are the same tensors
under different names. What identifies one in the other is what it carries: its float
(min, max, mean) over the same photos, computed here by running the calibrated flatbuffer
itself, agrees with the simulation's to float round-off, and differs between distinct
tensors. Copies (padding, concatenation, a channel permutation) share it and get the same
range, as they should. The converter's own statistics cannot be matched: it records some
tensors before fusing their activation (a fused ReLU output keeps its pre-ReLU range).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

# Signatures agree to float32 round-off of the two runtimes; distinct tensors differ by far more.
RELATIVE_TOLERANCE = 1e-3


@dataclass(frozen=True)
class LearnedRanges:
    ranges: list[tuple[float, float]]  # per simulated rounding point
    signatures: list[tuple[float, float, float]]  # (min, max, mean) of each point on ``images``
    images: np.ndarray  # NCHW, in the input form of the model the ranges go into


def tensor_signatures(calibrated: bytes, indices: list[int], images: np.ndarray) -> dict[int, tuple[float, float, float]]:
    """(min, max, mean) of each tensor ``index`` of the float flatbuffer over ``images``."""
    from ai_edge_litert.interpreter import Interpreter, OpResolverType

    from micronet_export.tflite_export import to_nhwc

    interp = Interpreter(model_content=calibrated, experimental_preserve_all_tensors=True,
                         experimental_op_resolver_type=OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES)
    interp.allocate_tensors()
    input_index = interp.get_input_details()[0]["index"]
    low = {i: np.inf for i in indices}
    high = {i: -np.inf for i in indices}
    total = {i: 0.0 for i in indices}
    for image in to_nhwc(images):
        interp.set_tensor(input_index, image[None])
        interp.invoke()
        for i in indices:
            v = interp.get_tensor(i)
            low[i], high[i] = min(low[i], float(v.min())), max(high[i], float(v.max()))
            total[i] += float(v.astype(np.float64).mean())
    return {i: (low[i], high[i], total[i] / len(images)) for i in indices}


def matched_ranges(calibrated: bytes, indices: list[int], learned: LearnedRanges) -> dict[int, tuple[float, float]]:
    """Tensor index -> learned range, for every tensor whose signature is a rounding point's."""
    found = tensor_signatures(calibrated, indices, learned.images)
    out: dict[int, tuple[float, float]] = {}
    for signature, learned_range in zip(learned.signatures, learned.ranges):
        span = max(signature[1] - signature[0], 1e-6)
        for index, candidate in found.items():
            if all(abs(a - b) <= RELATIVE_TOLERANCE * span + 1e-6 for a, b in zip(candidate, signature)):
                out[index] = learned_range
    return out
