"""PyTorch → ONNX: export, simplify, check.

The TorchScript exporter (``dynamo=False``) is used on purpose: at opset 17 the dynamo exporter
emits opset 18 and its down-converter fails on ReduceMean (onnx version_converter
axes_input_to_attribute), and with static shapes the TorchScript exporter already folds every
shape computation into constants, so the graph carries no Shape/Gather chain.
"""

from __future__ import annotations

import collections
import logging
import warnings
from dataclasses import dataclass, field

import onnx
import torch

from micronet_export.errors import UserError

log = logging.getLogger(__name__)

DEFAULT_OPSET = 17
INPUT_NAME = "input"
OUTPUT_NAME = "logits"
GATHER_OPS = frozenset({"Gather", "GatherND", "GatherElements"})
MAX_RANK = 4


@dataclass
class GraphSummary:
    """What a deployer wants to know about a graph before shipping it."""

    ops: dict[str, int]
    num_nodes: int
    gather_nodes: int
    max_rank: int
    # Gathers of whole channels with constant indices (the optimized graph's shuffles and shifts).
    channel_gathers: int = 0
    high_rank_tensors: list[str] = field(default_factory=list)

    def as_dict(self) -> dict:
        return {
            "ops": self.ops,
            "num_nodes": self.num_nodes,
            "gather_nodes": self.gather_nodes,
            "channel_gathers": self.channel_gathers,
            "max_rank": self.max_rank,
            "high_rank_tensors": self.high_rank_tensors[:10],
        }


def op_histogram(model: onnx.ModelProto) -> dict[str, int]:
    counts = collections.Counter(node.op_type for node in model.graph.node)
    return dict(sorted(counts.items(), key=lambda kv: (-kv[1], kv[0])))


def _is_channel_gather(node, graph) -> bool:
    constants = {i.name for i in graph.initializer}
    axis = next((a.i for a in node.attribute if a.name == "axis"), 0)
    return node.op_type == "Gather" and axis == 1 and node.input[1] in constants


def summarize_graph(model: onnx.ModelProto) -> GraphSummary:
    """Op histogram, Gather-family count and the largest tensor rank (after shape inference)."""
    inferred = onnx.shape_inference.infer_shapes(model)
    ranks: dict[str, int] = {}
    g = inferred.graph
    for vi in list(g.input) + list(g.output) + list(g.value_info):
        t = vi.type.tensor_type
        if t.HasField("shape"):
            ranks[vi.name] = len(t.shape.dim)
    for init in g.initializer:
        ranks[init.name] = len(init.dims)
    for node in g.node:
        if node.op_type == "Constant":
            for attr in node.attribute:
                if attr.name == "value":
                    ranks[node.output[0]] = len(attr.t.dims)
    ops = op_histogram(model)
    high = sorted(name for name, r in ranks.items() if r > MAX_RANK)
    return GraphSummary(
        ops=ops,
        num_nodes=len(model.graph.node),
        gather_nodes=sum(ops.get(op, 0) for op in GATHER_OPS),
        channel_gathers=sum(_is_channel_gather(n, g) for n in g.node),
        max_rank=max(ranks.values(), default=0),
        high_rank_tensors=high,
    )


def to_onnx_model(
    model: torch.nn.Module,
    *,
    input_size: int = 224,
    opset: int = DEFAULT_OPSET,
    dynamic_batch: bool = False,
) -> onnx.ModelProto:
    """The raw ``torch.onnx.export`` graph (no simplification), as a ModelProto in memory."""
    import io

    check_input_size(input_size)
    buf = io.BytesIO()
    dummy = torch.zeros(1, 3, input_size, input_size)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the TorchScript exporter's deprecation notice
        torch.onnx.export(
            model.eval(),
            (dummy,),
            buf,
            dynamo=False,
            opset_version=opset,
            input_names=[INPUT_NAME],
            output_names=[OUTPUT_NAME],
            dynamic_axes={INPUT_NAME: {0: "batch"}, OUTPUT_NAME: {0: "batch"}} if dynamic_batch else None,
            do_constant_folding=True,
        )
    return onnx.load_from_string(buf.getvalue())


def simplify(model: onnx.ModelProto) -> onnx.ModelProto:
    """onnxsim with a check that it kept the function; returns the input if it cannot."""
    import onnxsim

    simplified, ok = onnxsim.simplify(model)
    if not ok:
        log.warning("onnxsim could not validate the simplified graph; keeping the exported one")
        return model
    return simplified


def check_input_size(input_size: int) -> None:
    """MicroNet downsamples by 32: other sizes break its stride-2 stages."""
    if input_size < 32 or input_size % 32:
        raise UserError(f"--input-size must be a positive multiple of 32, got {input_size}")


def export_onnx(
    model: torch.nn.Module,
    *,
    input_size: int = 224,
    opset: int = DEFAULT_OPSET,
    dynamic_batch: bool = False,
    simplified: bool = True,
) -> onnx.ModelProto:
    """Export, simplify and fully check; the graph must be Gather-free and rank <= 4."""
    proto = to_onnx_model(model, input_size=input_size, opset=opset, dynamic_batch=dynamic_batch)
    if simplified:
        proto = simplify(proto)
    onnx.checker.check_model(proto, full_check=True)
    return proto
