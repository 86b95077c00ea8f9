"""Activations and elementwise arithmetic, with per-channel constants in the tensor's order."""

from __future__ import annotations

import numpy as np

from micronet_export.channel_order import permute_const
from micronet_export.lowering.recipes import ActivationRecipe
from micronet_export.lowering.registry import handles
from micronet_export.lowering.tensor import NHWC, Lowered, as_perm


def activation(lw, node, x: Lowered, fn) -> Lowered:
    lw.recipes[node.output[0]] = ActivationRecipe(fn, x.origin)
    return Lowered(fn(x.value), x.perm, x.shape, x.corder, hint=x.hint)


@handles("Relu")
def relu(lw, node, inputs, a):
    return activation(lw, node, inputs[0], lw.tf.nn.relu)


@handles("Clip")
def clip(lw, node, inputs, a):
    tf, x = lw.tf, inputs[0]
    lo = float(inputs[1].value) if len(inputs) > 1 and inputs[1] is not None else -np.inf
    hi = float(inputs[2].value) if len(inputs) > 2 and inputs[2] is not None else np.inf
    if lo == 0.0 and hi == 6.0:
        return activation(lw, node, x, tf.nn.relu6)
    if lo == 0.0 and hi == np.inf:
        return activation(lw, node, x, tf.nn.relu)
    return activation(lw, node, x, lambda v: tf.clip_by_value(v, lo, hi))


@handles("Add")
def add(lw, node, inputs, a):
    return affine_as_depthwise(lw, inputs) or binary(lw, inputs[0], inputs[1], lambda p, q: p + q)


def affine_as_depthwise(lw, inputs) -> Lowered | None:
    """``t * scale + offset`` on a pooled (N, C, 1, 1) tensor as one 1x1 depthwise conv.

    Dynamic Shift-Max maps its hard sigmoid to coefficients with a MUL and an ADD; one
    DEPTHWISE_CONV_2D with a bias does both (delegated in fp32 and int8). The MUL left
    without a consumer is pruned by the converter.
    """
    if len(inputs) != 2 or sum(t.is_const for t in inputs) != 1:
        return None
    offset, scaled = (inputs[0], inputs[1]) if inputs[0].is_const else (inputs[1], inputs[0])
    found = lw.scaled.get(scaled.origin)
    if found is None:
        return None
    t, scale = found
    n, c, h, w = t.shape
    if offset.value.size not in (1, c) or scale.size not in (1, c) or t.perm != NHWC:
        return None
    order = t.order(c)
    weight = np.broadcast_to(np.asarray(scale, dtype=np.float32).reshape(-1), (c,))[order]
    bias = np.broadcast_to(np.asarray(offset.value, dtype=np.float32).reshape(-1), (c,))[order]
    tf = lw.tf
    y = tf.nn.depthwise_conv2d(t.value, weight.reshape(1, 1, c, 1), strides=[1, 1, 1, 1], padding="VALID")
    return Lowered(tf.nn.bias_add(y, bias), NHWC, t.shape, t.corder, hint=t.hint)


@handles("Sub")
def sub(lw, node, inputs, a):
    return binary(lw, inputs[0], inputs[1], lambda p, q: p - q)


@handles("Mul")
def mul(lw, node, inputs, a):
    if node.name in lw.hard_swish:
        x = inputs[list(node.input).index(lw.hard_swish[node.name])]
        return hard_swish(lw.tf, x)
    out = binary(lw, inputs[0], inputs[1], lambda p, q: p * q)
    x, scale = (inputs[1], inputs[0]) if inputs[0].is_const else (inputs[0], inputs[1])
    if scale.is_const and not x.is_const and len(x.shape) == 4 and x.shape[2] == x.shape[3] == 1:
        lw.scaled[node.output[0]] = (x, np.asarray(scale.value))
    return out


def hard_swish(tf, x: Lowered) -> Lowered:
    """``x * relu6(x + 3) / 6`` as ``(x / 2) * (clamp(x / 3, -1, 1) + 1)``.

    TFLiteConverter fuses the ONNX pattern into HARD_SWISH, which XNNPACK runs in float only;
    this form stays MUL (fused RELU_N1_TO_1), ADD, MUL and MUL, all delegated in int8. Written
    as relu6(x + 3), the ADD's input/output scale ratio is |x|max / 6, which XNNPACK's QS8 ADD
    refuses past 256 (wide random classifiers reach that).
    """
    unit = tf.minimum(tf.maximum(x.value * (1.0 / 3.0), -1.0), 1.0)
    return Lowered((x.value * 0.5) * (unit + 1.0), x.perm, x.shape, x.corder)


@handles("Div")
def div(lw, node, inputs, a):
    b = inputs[1]
    if b.is_const:  # division by a constant: a multiply, which TFLite fuses better
        inverse = Lowered(np.asarray(1.0 / b.value.astype(np.float64), dtype=np.float32), None, b.shape)
        return binary(lw, inputs[0], inverse, lambda p, q: p * q)
    return binary(lw, inputs[0], b, lambda p, q: p / q)


@handles("Max")
def maximum(lw, node, inputs, a):
    tf = lw.tf
    if lw.int8_friendly:
        # XNNPACK runs MAXIMUM only in float; SUB with a fused RELU plus ADD stay int8.
        return binary(lw, inputs[0], inputs[1], lambda p, q: q + tf.nn.relu(p - q))
    return binary(lw, inputs[0], inputs[1], tf.maximum)


def _common_order(lw, a: Lowered, b: Lowered) -> tuple[Lowered, Lowered]:
    """Both operands in one channel order: reorder the shifted/shuffled one, else the smaller."""
    oa, ob = a.order(a.shape[1]), b.order(b.shape[1])
    if np.array_equal(oa, ob):
        return a, b
    move_a = a.gathered and not b.gathered or (a.gathered == b.gathered and np.prod(a.shape) < np.prod(b.shape))
    if move_a:
        return Lowered(lw.materializer.in_order(lw.tf, a, ob), a.perm, a.shape, ob), b
    return a, Lowered(lw.materializer.in_order(lw.tf, b, oa), b.perm, b.shape, oa)


def binary(lw, a: Lowered, b: Lowered, op) -> Lowered:
    tf = lw.tf
    shape = list(np.broadcast_shapes(tuple(a.shape), tuple(b.shape)))
    if a.is_const and b.is_const:
        return Lowered(op(np.asarray(a.value), np.asarray(b.value)), None, shape)
    ref = a if not a.is_const else b
    rank_max = max(len(a.shape), len(b.shape))
    perm = ref.perm if len(ref.shape) >= rank_max else tuple(range(rank_max))
    rank = len(perm)
    order = None
    has_channels = rank in (2, 4) and len(shape) == rank
    if has_channels:
        if not a.is_const and not b.is_const:
            a, b = _common_order(lw, a, b)
            order = a.order(shape[1])
        else:
            order = ref.order(shape[1])
        if a.is_const:
            a = Lowered(permute_const(a.value, order, rank), None, np.shape(a.value))
        if b.is_const:
            b = Lowered(permute_const(b.value, order, rank), None, np.shape(b.value))
    va = as_perm(tf, a, perm) if (not a.is_const or a.value.ndim > 0) else a.value
    vb = as_perm(tf, b, perm) if (not b.is_const or b.value.ndim > 0) else b.value
    cast = lambda v: tf.constant(v.astype(np.float32)) if isinstance(v, np.ndarray) else v  # noqa: E731
    hint = a.hint if a.hint is not None else b.hint
    return Lowered(op(cast(va), cast(vb)), perm if rank == len(shape) else None, shape,
                   order if has_channels else None, hint=hint)
