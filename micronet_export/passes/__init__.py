"""MicroNet's ONNX -> ONNX rewrites, run once before the runtimes split.

:func:`optimize` takes the plain export (gather-free, rank <= 4) and returns the graph a
runtime should run: channel shuffles and Dynamic Shift-Max's shift as one channel Gather each
(:mod:`channel_gather`), spatial means as pooling (:mod:`pooling`), the stem's separable pair
as one conv (:mod:`separable`), permutations folded into neighbouring conv weights
(:mod:`fold_gather`). Which pass runs for which target is :mod:`cost`'s decision. Every pass
keeps the function (float32 round-off aside; parity is checked against PyTorch) and names
new nodes inside the module scope of the nodes they replace, so int8 units and TFLite name
scopes still map them to PyTorch modules.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import onnx

from micronet_export.passes.activations import clip_scales_folded, hard_swish_as_op
from micronet_export.passes.channel_scale import channel_scales_as_batchnorm
from micronet_export.onnx_shapes import tensor_shapes
from micronet_export.passes.channel_gather import channel_permutations
from micronet_export.passes.cost import TARGETS, passes_for
from micronet_export.passes.fold_gather import gathers_folded_into_convs
from micronet_export.passes.pixel_fc import pixel_fcs_as_gemm
from micronet_export.passes.pooling import spatial_means_as_pooling
from micronet_export.passes.separable import separable_pairs_composed

MODES = ("auto", "none")


@dataclass
class OptimizedGraph:
    model: onnx.ModelProto
    target: str
    mode: str
    applied: dict[str, int] = field(default_factory=dict)  # pass -> rewrites made

    def describe(self) -> str:
        done = [f"{name} x{count}" for name, count in self.applied.items() if count]
        return f"{self.mode} for {self.target}: " + (", ".join(done) if done else "no rewrite")


def _run(name: str, model: onnx.ModelProto) -> tuple[onnx.ModelProto, int]:
    if name == "channel_permutations":
        return channel_permutations(model)
    if name == "spatial_means_as_pooling":
        return spatial_means_as_pooling(model)
    if name == "separable_pairs_composed":
        return separable_pairs_composed(model, {k: v for k, v in tensor_shapes(model).items() if len(v) == 4})
    if name == "clip_scales_folded":
        return clip_scales_folded(model)
    if name == "hard_swish_as_op":
        return hard_swish_as_op(model)
    if name == "pixel_fcs_as_gemm":
        return pixel_fcs_as_gemm(model)
    if name == "channel_scales_as_batchnorm":
        return channel_scales_as_batchnorm(model, tensor_shapes(model))
    if name == "gathers_folded_into_convs":
        return gathers_folded_into_convs(model)
    raise ValueError(f"unknown pass {name!r}")


def optimize(model: onnx.ModelProto, target: str, mode: str = "auto") -> OptimizedGraph:
    """The graph ``target`` runs: the plain export with ``mode="none"``, else the passes the
    cost model picks for it, in order."""
    if mode not in MODES:
        raise ValueError(f"unknown optimization mode {mode!r}; valid: {', '.join(MODES)}")
    if target not in TARGETS:
        raise ValueError(f"unknown target {target!r}; valid: {', '.join(TARGETS)}")
    result = OptimizedGraph(model, target, mode)
    if mode == "none":
        return result
    for name in passes_for(target):
        result.model, result.applied[name] = _run(name, result.model)
    produced = {o for node in result.model.graph.node for o in node.output}
    stale = [vi for vi in result.model.graph.value_info if vi.name not in produced]
    for vi in stale:  # shapes of tensors the passes removed
        result.model.graph.value_info.remove(vi)
    onnx.checker.check_model(result.model)
    return result
