"""Conv: weights absorb the input's channel order and choose the output's.

* depthwise, possibly with a channel multiplier m: XNNPACK runs a multiplier > 1 as a grouped
  GEMM using 1-3 of 8 columns, so the input is repeated m times along channels (by the convs
  that made it when they fit their tile, else a 1x1 conv in float, else a CONCATENATION) and
  the conv is a plain depthwise;
* dense: an FC of Dynamic Shift-Max emits its coefficients in the order of the data they
  multiply; a spatial conv emits the order the plan chose;
* grouped: when every physical input block is one logical group, the weights are permuted
  within and across groups and the conv stays grouped; a shuffle that mixes groups makes it
  dense (block-diagonal weights, permuted), or, in float and when cheaper, a permutation conv
  puts the input in order first.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from micronet_export.lowering import cost
from micronet_export.channel_order import coefficient_order, multiplier_order
from micronet_export.lowering.planning import FreeOrder
from micronet_export.lowering.recipes import DenseConvRecipe, DepthwiseRecipe, tiled
from micronet_export.lowering.registry import handles
from micronet_export.lowering.tensor import NHWC, Lowered, as_perm


@dataclass
class ConvSpec:
    weight: np.ndarray  # OIHW, logical channel order
    bias: np.ndarray | None
    group: int
    strides: list[int]  # NHWC
    pads: tuple[int, int, int, int]  # top, left, bottom, right

    @classmethod
    def of(cls, inputs, a) -> "ConvSpec":
        if a.get("dilations", [1, 1]) != [1, 1]:
            raise NotImplementedError("dilated conv is not used by MicroNet")
        bias = inputs[2].value if len(inputs) > 2 and inputs[2] is not None else None
        sh, sw = a.get("strides", [1, 1])
        return cls(inputs[1].value, bias, int(a.get("group", 1)), [1, sh, sw, 1], tuple(a.get("pads", [0, 0, 0, 0])))

    @property
    def out_channels(self) -> int:
        return self.weight.shape[0]

    @property
    def is_same_padding(self) -> bool:
        kh, kw = self.weight.shape[2:]
        pt, pl, pb, pr = self.pads
        return self.strides[1:3] == [1, 1] and (pt, pb) == ((kh - 1) // 2,) * 2 and (pl, pr) == ((kw - 1) // 2,) * 2 \
            and bool(kh % 2) and bool(kw % 2)


@dataclass
class ConvOut:
    """What one branch of the handler made: the output, its order and what it may repeat."""

    value: object
    order: np.ndarray | None
    recipe: object = None
    free_block: int = 0  # size of the output blocks whose inner order this conv chose


@handles("Conv")
def conv(lw, node, inputs, a):
    x, spec = inputs[0], ConvSpec.of(inputs, a)
    source_origin = x.origin if x.perm == NHWC else None
    xv = as_perm(lw.tf, x, NHWC)
    depthwise = spec.group == x.shape[1] and spec.weight.shape[1] == 1
    if depthwise and spec.out_channels > x.shape[1]:
        xv = _multiplier_input(lw, xv, source_origin, x.shape[1], spec.out_channels // x.shape[1])
    xv, pad, padding = _padded(lw.tf, xv, spec)
    if depthwise:
        out = _depthwise(lw.tf, xv, x, spec, padding, pad, source_origin)
    elif spec.group == 1:
        out = _dense(lw, node, xv, x, spec, padding)
    else:
        out = _grouped(lw, node, xv, x, spec, padding)
    y = out.value
    if spec.bias is not None:
        bias = (spec.bias if out.order is None else spec.bias[out.order]).astype(np.float32)
        y = lw.tf.nn.bias_add(y, bias)
        if out.recipe is not None:
            out.recipe = _with_bias(out.recipe, bias)
    name = node.output[0]
    if out.recipe is not None:
        lw.recipes[name] = out.recipe
    if x.corder is not None:
        lw.stats.absorbed_reorders += 1
    _track_inheritance(lw, node, depthwise and spec.out_channels > x.shape[1], depthwise, source_origin)
    if out.free_block:
        order = np.arange(spec.out_channels) if out.order is None else out.order
        lw.plan.free[name] = FreeOrder(name, out.free_block, order)
    hint = x.hint if x.shape[2] == x.shape[3] == 1 else None  # FC1 -> ReLU -> FC2
    return Lowered(y, NHWC, [0, 0, 0, 0], out.order, hint=hint)


def _with_bias(recipe, bias):
    from dataclasses import replace

    return replace(recipe, bias=bias)


def _track_inheritance(lw, node, multiplier: bool, depthwise: bool, source_origin: str | None) -> None:
    """Which conv's channel order this depthwise output carries (see ConvOrderPlan.kept_orders)."""
    if multiplier:
        origin = lw.graph.upstream_conv(node.input[0])
        if origin is not None:
            lw.plan.inherited[node.output[0]] = origin
    elif depthwise and source_origin in lw.plan.inherited:
        lw.plan.inherited[node.output[0]] = lw.plan.inherited[source_origin]


def _multiplier_input(lw, xv, source_origin: str | None, c_in: int, mult: int):
    """The input of a channel-multiplier depthwise conv repeated ``mult`` times along channels,
    before the PAD so that XNNPACK fuses the PAD into the depthwise conv."""
    tf = lw.tf
    repeated = tiled(tf, lw.recipes, source_origin, mult)
    if repeated is not None:
        lw.stats.producer_repeats += 1
        return repeated
    if not lw.int8_friendly and cost.repeat_conv_is_cheaper(c_in, mult):
        repeat = np.tile(np.eye(c_in, dtype=np.float32), (1, mult)).reshape(1, 1, c_in, c_in * mult)
        lw.stats.permutation_convs += 1
        return tf.nn.conv2d(xv, repeat, strides=[1, 1, 1, 1], padding="VALID")
    return tf.concat([xv] * mult, axis=3)


def _padded(tf, xv, spec: ConvSpec):
    if spec.is_same_padding:
        return xv, None, "SAME"
    pt, pl, pb, pr = spec.pads
    if any(spec.pads):
        pad = [[0, 0], [pt, pb], [pl, pr], [0, 0]]
        return tf.pad(xv, pad), pad, "VALID"
    return xv, None, "VALID"


def _depthwise(tf, xv, x: Lowered, spec: ConvSpec, padding: str, pad, source_origin) -> ConvOut:
    c_in, out_c = x.shape[1], spec.out_channels
    kh, kw = spec.weight.shape[2:]
    mult = out_c // c_in
    order_out = multiplier_order(x.order(c_in), mult)
    kernel = spec.weight[order_out].reshape(out_c, 1, kh, kw).transpose(2, 3, 0, 1)
    y = tf.nn.depthwise_conv2d(xv, kernel, strides=spec.strides, padding=padding)
    return ConvOut(y, order_out, DepthwiseRecipe(source_origin, mult, pad, kernel, None, spec.strides, padding))


def _dense(lw, node, xv, x: Lowered, spec: ConvSpec, padding: str) -> ConvOut:
    out_c, free_block, order_out = spec.out_channels, 0, None
    if x.hint is not None and x.shape[2] == x.shape[3] == 1 and out_c % len(x.hint) == 0:
        # An FC of Dynamic Shift-Max: its coefficients come out in the order of the data they
        # multiply, so no reordering is needed downstream.
        order_out = coefficient_order(x.hint, out_c)
    elif x.shape[2] * x.shape[3] > 1:
        order_out = lw.plan.chosen(node.output[0], np.arange(out_c), out_c)
        free_block = out_c
    rows = spec.weight if order_out is None else spec.weight[order_out]
    kernel = rows[:, x.order(x.shape[1])].transpose(2, 3, 1, 0)
    y = lw.tf.nn.conv2d(xv, kernel, strides=spec.strides, padding=padding)
    return ConvOut(y, order_out, DenseConvRecipe(xv, kernel, None, spec.strides, padding), free_block)


def _grouped(lw, node, xv, x: Lowered, spec: ConvSpec, padding: str) -> ConvOut:
    tf, w, group = lw.tf, spec.weight, spec.group
    c_in, out_c = x.shape[1], spec.out_channels
    kh, kw = w.shape[2:]
    k_in, n_out = c_in // group, out_c // group
    order_in = x.order(c_in)
    blocks = order_in.reshape(group, k_in) // k_in
    mixed = not np.all(blocks == blocks[:, :1])
    if mixed and not lw.int8_friendly and kh == kw == 1 and cost.grouped_behind_permutation_is_cheaper(c_in, k_in, out_c):
        xv = lw.materializer.permutation_conv(tf, xv, np.argsort(order_in))
        order_in = np.arange(c_in)
        blocks, mixed = order_in.reshape(group, k_in) // k_in, False
    if mixed:
        return _densified(lw, node, xv, order_in, spec, padding)
    # Every physical input block is one logical group: permute weights within and across
    # groups, and the conv stays grouped (TF infers the groups from the filter's in-channels;
    # TFLite CONV_2D and XNNPACK run it as one grouped op).
    groups_of = blocks[:, 0]
    order_out = (groups_of[:, None] * n_out + np.arange(n_out)[None, :]).reshape(-1)
    order_out = lw.plan.chosen(node.output[0], order_out, n_out)
    local = order_in.reshape(group, k_in) - groups_of[:, None] * k_in
    rows = w[order_out].reshape(group, n_out, k_in, kh, kw)
    kernel = np.stack([rows[b][:, local[b]] for b in range(group)]).reshape(out_c, k_in, kh, kw)
    y = tf.nn.conv2d(xv, kernel.transpose(2, 3, 1, 0), strides=spec.strides, padding=padding)
    return ConvOut(y, order_out, free_block=n_out)


def _densified(lw, node, xv, order_in: np.ndarray, spec: ConvSpec, padding: str) -> ConvOut:
    """A grouped conv whose input order mixes its groups, as a dense conv with the
    block-diagonal weights permuted (cheaper than moving every pixel's channels)."""
    w, group = spec.weight, spec.group
    out_c, c_in = spec.out_channels, len(order_in)
    kh, kw = w.shape[2:]
    k_in, n_out = c_in // group, out_c // group
    dense = np.zeros((out_c, c_in, kh, kw), dtype=w.dtype)
    for g in range(group):
        dense[g * n_out:(g + 1) * n_out, g * k_in:(g + 1) * k_in] = w[g * n_out:(g + 1) * n_out]
    order_out = lw.plan.chosen(node.output[0], np.arange(out_c), out_c)
    out_h, out_w = lw.graph.shapes[node.output[0]][2:]
    lw.stats.densified_convs += 1
    lw.stats.extra_macs += (c_in - k_in) * out_c * kh * kw * out_h * out_w
    y = lw.tf.nn.conv2d(xv, dense[order_out][:, order_in].transpose(2, 3, 1, 0), strides=spec.strides, padding=padding)
    return ConvOut(y, order_out, free_block=out_c)
