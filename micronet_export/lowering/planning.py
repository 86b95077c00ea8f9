"""Which channel order each conv emits, so that Dynamic Shift-Max's shifts are cheap copies.

Which order suits a conv is only known once its output reaches a shift, so the lowering is
traced twice: a scout trace records the wishes (:meth:`ConvOrderPlan.wish`), and the traced
lowering applies them (:meth:`ConvOrderPlan.chosen`). Keyed by ONNX tensor names.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from micronet_export.channel_order import chain_order, keeps_blocks, relabelled, runs


@dataclass(frozen=True)
class FreeOrder:
    """A conv output whose channel order is free inside each block of ``block`` channels."""

    conv_output: str
    block: int
    order: np.ndarray


@dataclass
class ConvOrderPlan:
    # Output channel orders chosen for convs (by conv output name), applied in this trace.
    chosen_orders: dict[str, np.ndarray] = field(default_factory=dict)
    # What this trace found: the orders that would make its shifts cheaper.
    wanted_orders: dict[str, np.ndarray] = field(default_factory=dict)
    # Convs whose order reaches a shift through a channel-multiplier depthwise conv (which
    # moves channels): changing it would break that shift's runs, so the plan leaves it.
    kept_orders: set[str] = field(default_factory=set)
    # Tensor name -> the free-order conv output it is (see FreeOrder).
    free: dict[str, FreeOrder] = field(default_factory=dict)
    # Tensor name -> the conv whose channels it carries through a multiplier depthwise conv.
    inherited: dict[str, str] = field(default_factory=dict)

    def chosen(self, conv_output: str, default: np.ndarray, block: int) -> np.ndarray:
        """``default`` output order, or the planned one if it keeps every block's channels."""
        chosen = self.chosen_orders.get(conv_output)
        if chosen is None or not keeps_blocks(chosen, default, block):
            return default
        return chosen

    def wish(self, origin: str | None, src: np.ndarray) -> None:
        """Record the order that makes the copy ``src`` of tensor ``origin`` fewer runs."""
        if origin is None:
            return
        if origin in self.inherited:
            self.kept_orders.add(self.inherited[origin])
        free = self.free.get(origin)
        if free is None:
            return
        better = chain_order(free.order, src, free.block)
        if better is not None and free.conv_output not in self.chosen_orders \
                and len(runs(relabelled(src, free.order, better))) < len(runs(src)):
            self.wanted_orders[free.conv_output] = better

    def next_plan(self) -> "ConvOrderPlan":
        """The plan for the next trace: the wishes, but for the kept orders."""
        return ConvOrderPlan({k: v for k, v in self.wanted_orders.items() if k not in self.kept_orders})
