"""Data movement the views do not absorb, pooling and the classifier's Gemm."""

from __future__ import annotations

import logging

import numpy as np

from micronet_export.channel_order import resolve_target
from micronet_export.lowering.ops_views import slice_arguments, split_sizes, start_view
from micronet_export.lowering.registry import handles
from micronet_export.lowering.tensor import NHWC, Lowered, as_perm

log = logging.getLogger(__name__)


def reshape(lw, x: Lowered, target: list[int]) -> Lowered:
    tf, src = lw.tf, list(x.shape)
    target = resolve_target(target, int(np.prod(src)))
    if x.is_const:
        return Lowered(x.value.reshape(target), None, target)
    view = start_view(x, target)
    if view is not None:
        return view
    if len(target) == 2 and x.perm == NHWC and src[2] == src[3] == 1:
        # (N, C, 1, 1) -> (N, C): a flatten of a pooled tensor.
        return Lowered(tf.reshape(x.value, target), None, target, x.corder)
    log.warning("generic reshape %s -> %s with layout %s: transposes inserted", src, target, x.perm)
    in_order = Lowered(lw.materializer.in_order(tf, x, None), x.perm, x.shape)
    y = tf.reshape(as_perm(tf, in_order, tuple(range(len(src)))), target)
    if len(target) == 4:
        return Lowered(tf.transpose(y, list(NHWC)), NHWC, target)
    return Lowered(y, None, target)


@handles("Reshape")
def reshape_op(lw, node, inputs, a):
    return reshape(lw, inputs[0], [int(v) for v in inputs[1].value.tolist()])


@handles("Flatten")
def flatten(lw, node, inputs, a):
    x = inputs[0]
    axis = int(a.get("axis", 1))
    return reshape(lw, x, [int(np.prod(x.shape[:axis])), int(np.prod(x.shape[axis:]))])


@handles("Transpose")
def transpose(lw, node, inputs, a):
    x, p = inputs[0], a["perm"]
    if x.corder is not None:
        raise NotImplementedError("Transpose of a reordered tensor is outside the MicroNet lowering")
    # new logical axis j = old logical axis p[j]; the data stays where it is.
    inv = {old: new for new, old in enumerate(p)}
    return Lowered(x.value, [inv[q] for q in x.perm], [x.shape[q] for q in p], origin=x.origin)


@handles("Slice")
def slice_op(lw, node, inputs, a):
    x = inputs[0]
    starts, ends, axes, steps = slice_arguments(inputs)
    if any(s != 1 for s in steps):
        raise NotImplementedError("strided Slice is not used by MicroNet")
    if x.is_const:
        raise NotImplementedError("Slice of a constant")
    rank = len(x.shape)
    value = lw.materializer.in_order(lw.tf, x, None) if rank in (2, 4) else x.value
    # Explicit sizes: XNNPACK does not delegate a SLICE whose size holds -1.
    begin, size = [0] * rank, [x.shape[x.perm[i]] for i in range(rank)]
    for st, en, ax in zip(starts, ends, axes):
        ax %= rank
        dim = x.shape[ax]
        st = max(0, st + dim if st < 0 else min(st, dim))
        en = max(0, en + dim if en < 0 else min(en, dim))
        phys = x.perm.index(ax)
        begin[phys], size[phys] = st, en - st
    return Lowered(lw.tf.slice(value, begin, size), x.perm, x.shape)


@handles("Concat")
def concat(lw, node, inputs, a):
    tf = lw.tf
    ref = next(t for t in inputs if not t.is_const)
    axis = int(a["axis"]) % len(ref.shape)
    values = [as_perm(tf, t if t.is_const else Lowered(lw.materializer.in_order(tf, t, None), t.perm, t.shape), ref.perm)
              for t in inputs]
    return Lowered(tf.concat(values, axis=ref.perm.index(axis)), ref.perm, ref.shape)


@handles("Split")
def split(lw, node, inputs, a):
    x = inputs[0]
    axis = int(a.get("axis", 0)) % len(x.shape)
    sizes = split_sizes(node, inputs, a, x.shape[axis])
    value, corders = x.value, [None] * len(sizes)
    if axis == 1 and x.corder is not None:
        # Keep the order if every physical part holds exactly one logical part.
        bounds = np.cumsum([0] + sizes)
        parts = [x.corder[bounds[i]:bounds[i + 1]] - bounds[i] for i in range(len(sizes))]
        if all(np.array_equal(np.sort(p), np.arange(n)) for p, n in zip(parts, sizes)):
            corders = parts
        else:
            value = lw.materializer.in_order(lw.tf, x, None)
    # Equal parts as SPLIT (XNNPACK runs it); SPLIT_V only when sizes differ.
    pieces = lw.tf.split(value, len(sizes) if len(set(sizes)) == 1 else sizes, axis=x.perm.index(axis))
    return [Lowered(p, x.perm, x.shape, o, hint=x.hint) for p, o in zip(pieces, corders)]


@handles("Identity")
def identity(lw, node, inputs, a):
    return inputs[0]


@handles("ReduceMean")
def reduce_mean(lw, node, inputs, a):
    x = inputs[0]
    axes = a.get("axes")
    if axes is None and len(inputs) > 1 and inputs[1] is not None:
        axes = inputs[1].value.tolist()
    if not bool(a.get("keepdims", 1)):
        raise NotImplementedError("ReduceMean without keepdims is not used by MicroNet")
    if sorted(ax % len(x.shape) for ax in axes) != [2, 3]:
        raise NotImplementedError("ReduceMean over other than the spatial axes is not used by MicroNet")
    return global_average_pool(lw, node, inputs, a)


@handles("GlobalAveragePool")
def global_average_pool(lw, node, inputs, a):
    x = inputs[0]
    rank = len(x.shape)
    axes = sorted(x.perm.index(ax % rank) for ax in (2, 3))
    y = lw.tf.reduce_mean(x.value, axis=axes, keepdims=True)
    return Lowered(y, x.perm, x.shape, x.corder, hint=x.order(x.shape[1]))


@handles("Gemm")
def gemm(lw, node, inputs, a):
    x, b = inputs[0], inputs[1]
    c = inputs[2] if len(inputs) > 2 else None
    if a.get("transA", 0) or a.get("alpha", 1.0) != 1.0 or a.get("beta", 1.0) != 1.0:
        raise NotImplementedError("Gemm with transA/alpha/beta is not used by MicroNet")
    w = b.value.T if a.get("transB", 0) else b.value
    w = w[x.order(x.shape[1])]  # rows follow the input's channel order
    y = lw.tf.matmul(as_perm(lw.tf, x, (0, 1)), w.astype(np.float32))
    if c is not None:
        y = y + c.value.astype(np.float32)
    return Lowered(y, None, [x.shape[0], w.shape[1]])
