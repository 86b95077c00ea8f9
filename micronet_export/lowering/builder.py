"""The lowering itself: walk the ONNX graph once, call each node's handler, return the TF
function of one NHWC image."""

from __future__ import annotations

from dataclasses import asdict, dataclass

import onnx

# Registers the handlers.
from micronet_export.lowering import ops_conv, ops_elementwise, ops_layout, ops_views  # noqa: F401
from micronet_export.lowering.graph import OnnxGraph, attrs, scope_of
from micronet_export.lowering.materialize import Materializer
from micronet_export.lowering.planning import ConvOrderPlan
from micronet_export.lowering.registry import handler_for
from micronet_export.lowering.tensor import NHWC, Lowered, as_perm


@dataclass
class LoweringStats:
    """What the channel-order bookkeeping did, for the report and the tests."""

    absorbed_reorders: int = 0  # shuffles folded into a conv's weights
    materialised_reorders: int = 0  # reorderings copied (shifts, mostly)
    reorder_slices: int = 0  # contiguous pieces those copies took
    densified_convs: int = 0  # grouped convs made dense by a shuffle that mixes their groups
    extra_macs: int = 0  # what that costs
    permutation_convs: int = 0  # reorderings and repeats done as 0/1 1x1 convs
    producer_repeats: int = 0  # multiplier inputs repeated by the convs that made them

    def as_dict(self) -> dict:
        return asdict(self)


class Lowering:
    """Builds ``fn(x_nhwc) -> logits`` from a static-shape ONNX MicroNet graph.

    ``int8_friendly``: choose the forms XNNPACK keeps in int8 (see the handlers).
    ``plan``: channel orders chosen for convs; :meth:`planned` makes one.
    """

    def __init__(self, model: onnx.ModelProto, *, int8_friendly: bool, plan: ConvOrderPlan | None = None) -> None:
        self.graph = OnnxGraph(model)
        self.int8_friendly = int8_friendly
        self.plan = plan or ConvOrderPlan()
        self.stats = LoweringStats()
        self.materializer = Materializer(self.plan, self.stats)
        self.hard_swish = self.graph.hard_swish_muls() if int8_friendly else {}
        # Tensor name -> how to recompute it with repeated channels (recipes.tiled).
        self.recipes: dict[str, object] = {}
        # Tensor name -> (pooled input, constant scale) of a Mul, for affine_as_depthwise.
        self.scaled: dict[str, tuple] = {}
        self.tf = None

    @property
    def input_shape_nhwc(self) -> list[int]:
        return self.graph.input_shape_nhwc

    @classmethod
    def planned(cls, model: onnx.ModelProto, *, int8_friendly: bool) -> "Lowering":
        """A lowering whose convs emit the channel orders that make the shifts cheapest: one
        scout trace (discarded) records the wishes, the returned lowering applies them."""
        scout = cls(model, int8_friendly=int8_friendly)
        scout.trace()
        return cls(model, int8_friendly=int8_friendly, plan=scout.plan.next_plan())

    def trace(self):
        """The concrete TF function of this lowering (TF's tracing runs every handler)."""
        import tensorflow as tf

        fn = tf.function(self.build(), input_signature=[tf.TensorSpec(self.input_shape_nhwc, tf.float32, name="input")],
                         autograph=False)
        return fn, fn.get_concrete_function()

    def build(self):
        """Returns a Python function of one NHWC float tensor (for tf.function tracing)."""
        import tensorflow as tf

        self.tf = tf

        def fn(x):
            env = {self.graph.input_name: Lowered(x, NHWC, self.graph.shapes[self.graph.input_name],
                                                  origin=self.graph.input_name)}
            for node in self.graph.nodes:
                if node.op_type != "Constant":
                    self._lower_node(env, node)
            result = env[self.graph.output_name]
            value = self.materializer.in_order(tf, result, None) if len(result.shape) in (2, 4) else result.value
            return as_perm(tf, Lowered(value, result.perm, result.shape), tuple(range(len(result.shape))))

        return fn

    def _input(self, env, name) -> Lowered:
        if name in env:
            return env[name]
        if name in self.graph.consts:
            return Lowered.constant(self.graph.consts[name])
        raise KeyError(name)

    def _lower_node(self, env: dict, node) -> None:
        inputs = [self._input(env, i) if i else None for i in node.input]
        on_view = bool(inputs and inputs[0] is not None and inputs[0].view is not None)
        handler = handler_for(node.op_type, on_view)
        if handler is None:
            raise NotImplementedError(f"ONNX op {node.op_type} ({node.name}) is outside the MicroNet lowering")
        # TF op names carry the PyTorch module path, so TFLite tensor names map back to
        # `features.6.layers.1` (per-layer error, float islands).
        with self.tf.name_scope(scope_of(node.name)):
            outs = handler(self, node, inputs, attrs(node))
        for name, out in zip(node.output, outs if isinstance(outs, list) else [outs]):
            if name in self.graph.shapes and out.view is None:
                out.shape = self.graph.shapes[name]
            if out.origin is None:
                out.origin = name
            env[name] = out
