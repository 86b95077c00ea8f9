"""Lazy channel views: MicroNet's channel shuffles and Dynamic Shift-Max shift in ONNX are
reshape/transpose/slice/concat chains on an (N, g, C/g, H*W) view. They are replayed on an
index array instead of data; when the chain comes back to an (N, C, H, W) image, what it
computed is a channel permutation, which only changes the tensor's ``corder``."""

from __future__ import annotations

import numpy as np

from micronet_export.channel_order import INT64_MAX, image_relabelling, resolve_target
from micronet_export.lowering.registry import handles
from micronet_export.lowering.tensor import NHWC, Lowered


def view_result(source: Lowered, index: np.ndarray) -> Lowered:
    """A lazy view, or, once it is an image again, ``source`` with its channels relabelled."""
    channel = image_relabelling(index, source.shape)
    if channel is not None:
        # output logical channel k = source logical channel[k]; same physical data.
        order = np.argsort(channel)[source.order(source.shape[1])]
        return Lowered(source.value, NHWC, list(source.shape), order, gathered=True, origin=source.origin)
    return Lowered(source, None, list(index.shape), view=index)


def start_view(x: Lowered, target: list[int]) -> Lowered | None:
    """The (N, C, H, W) -> (N, g, C/g, H*W) reshape that opens a channel view, else None."""
    src = list(x.shape)
    if x.perm == NHWC and len(src) == 4 and len(target) == 4 and target[0] == src[0] \
            and target[1] * target[2] == src[1] and target[3] == src[2] * src[3]:
        index = np.arange(int(np.prod(src))).reshape(src)
        return view_result(x, index.reshape(target))
    return None


@handles("Reshape", view=True)
def view_reshape(lw, node, inputs, a):
    x = inputs[0]
    target = resolve_target([int(v) for v in inputs[1].value.tolist()], x.view.size)
    return view_result(x.value, x.view.reshape(target))


@handles("Transpose", view=True)
def view_transpose(lw, node, inputs, a):
    x = inputs[0]
    return view_result(x.value, x.view.transpose(a["perm"]))


def slice_arguments(inputs) -> tuple[list, list, list, list]:
    starts, ends = inputs[1].value.tolist(), inputs[2].value.tolist()
    axes = inputs[3].value.tolist() if len(inputs) > 3 and inputs[3] is not None else list(range(len(starts)))
    steps = inputs[4].value.tolist() if len(inputs) > 4 and inputs[4] is not None else [1] * len(starts)
    return starts, ends, axes, steps


@handles("Slice", view=True)
def view_slice(lw, node, inputs, a):
    x = inputs[0]
    index = [slice(None)] * x.view.ndim
    for st, en, ax, step in zip(*slice_arguments(inputs)):
        index[ax % x.view.ndim] = slice(st, min(en, INT64_MAX), step)
    return view_result(x.value, x.view[tuple(index)])


@handles("Concat", view=True)
def view_concat(lw, node, inputs, a):
    if any(t.view is None or t.value is not inputs[0].value for t in inputs):
        raise NotImplementedError("Concat of channel views of different tensors is outside the MicroNet lowering")
    return view_result(inputs[0].value, np.concatenate([t.view for t in inputs], axis=int(a["axis"])))


def split_sizes(node, inputs, a, dim) -> list[int]:
    if len(inputs) > 1 and inputs[1] is not None:
        return [int(s) for s in inputs[1].value.tolist()]
    if "split" in a:
        return list(a["split"])
    return [dim // len(node.output)] * len(node.output)


@handles("Split", view=True)
def view_split(lw, node, inputs, a):
    x = inputs[0]
    axis = int(a.get("axis", 0)) % x.view.ndim
    sizes = split_sizes(node, inputs, a, x.view.shape[axis])
    parts = np.split(x.view, np.cumsum(sizes)[:-1], axis=axis)
    return [view_result(x.value, p) for p in parts]


@handles("Identity", view=True)
def view_identity(lw, node, inputs, a):
    return inputs[0]


@handles("Gather")
def channel_gather(lw, node, inputs, a):
    """A Gather of whole channels with constant indices (the optimized graph's shuffles and
    shifts): a relabelling of the source's channels, like a view chain that ends in an image."""
    x, indices = inputs
    channels = np.asarray(indices.value) if indices is not None and indices.is_const else None
    if channels is None or int(a.get("axis", 0)) != 1 or x.perm != NHWC or channels.ndim != 1 \
            or not np.array_equal(np.sort(channels), np.arange(x.shape[1])):
        raise NotImplementedError(f"Gather other than a channel permutation ({node.name}) is outside the MicroNet "
                                  "lowering")
    order = np.argsort(channels)[x.order(x.shape[1])]
    return Lowered(x.value, NHWC, list(x.shape), order, gathered=True, origin=x.origin)
