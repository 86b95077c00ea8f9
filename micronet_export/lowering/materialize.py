"""Reorderings that no weight can absorb, made into ops.

A tensor whose physical channel order differs from the one an op needs is copied: as a 1x1
conv with a 0/1 matrix when it has few channels, else as a roll of its channel grid or as few
contiguous channel slices as the two orders allow, then concatenated (XNNPACK runs SLICE and
CONCATENATION; it has no GATHER). :mod:`cost` decides between them.
"""

from __future__ import annotations

import numpy as np

from micronet_export.lowering import cost
from micronet_export.channel_order import grid_roll, runs
from micronet_export.lowering.tensor import Lowered


class Materializer:
    """Copies channel orders into TF ops; caches each (tensor, order) pair, because Dynamic
    Shift-Max multiplies its shifted input twice."""

    def __init__(self, plan, stats) -> None:
        self.plan = plan
        self.stats = stats
        self._cache: dict[tuple, object] = {}

    def in_order(self, tf, t: Lowered, target: np.ndarray | None):
        """``t``'s TF value with physical channel ``s`` = logical channel ``target[s]``; also
        records the order the producing conv should emit to make the copy a roll."""
        channels = t.shape[1]
        target = np.arange(channels) if target is None else np.asarray(target)
        current = t.order(channels)
        if np.array_equal(current, target):
            return t.value
        key = (t.origin, current.tobytes(), target.tobytes())
        if t.origin is not None and key in self._cache:
            return self._cache[key]
        src = np.argsort(current)[target]
        self.plan.wish(t.origin, src)
        value = self._copy(tf, t, src)
        self.stats.materialised_reorders += 1
        if t.origin is not None:
            self._cache[key] = value
        return value

    def _copy(self, tf, t: Lowered, src: np.ndarray):
        axis, rank, channels = t.channel_axis, len(t.shape), len(src)
        pieces = runs(src)
        grid = grid_roll(src) if rank == 4 and axis == 3 and len(pieces) > 3 else None
        if rank == 4 and axis == 3 and cost.permutation_conv_is_cheaper(
                channels, cost.reorder_pieces(len(pieces), grid is not None)):
            return self.permutation_conv(tf, t.value, src)
        if grid is not None:
            return _grid_roll(tf, t, *grid)
        self.stats.reorder_slices += len(pieces)
        return _slices_concatenated(tf, t, pieces)

    def permutation_conv(self, tf, value, src: np.ndarray):
        """``value`` with physical channel ``s`` taken from channel ``src[s]``, as a 1x1 conv
        with a 0/1 matrix: exact in float, and in int8 its output range is its input's."""
        channels = len(src)
        permutation = np.zeros((1, 1, channels, channels), dtype=np.float32)
        permutation[0, 0, src, np.arange(channels)] = 1.0
        self.stats.permutation_convs += 1
        return tf.nn.conv2d(value, permutation, strides=[1, 1, 1, 1], padding="VALID")


def _slices_concatenated(tf, t: Lowered, pieces: list[tuple[int, int]]):
    axis, rank = t.channel_axis, len(t.shape)
    values = []
    for start, length in pieces:
        begin, size = [0] * rank, [t.shape[t.perm[i]] for i in range(rank)]
        begin[axis], size[axis] = start, length
        values.append(tf.slice(t.value, begin, size))
    # XNNPACK delegates a CONCATENATION of at most MAX_CONCAT_INPUTS inputs.
    step = cost.MAX_CONCAT_INPUTS
    while len(values) > 1:
        values = [p[0] if len(p) == 1 else tf.concat(p, axis=axis)
                  for p in (values[i:i + step] for i in range(0, len(values), step))]
    return values[0]


def _grid_roll(tf, t: Lowered, rows: int, cols: int, dr: int, dc: int):
    """Channels as a (rows, cols) grid, each axis rolled left: Dynamic Shift-Max's shift
    (a roll of the groups and a roll inside each group) in six ops whatever the groups."""
    n, h, w, c = [t.shape[0], t.shape[2], t.shape[3], t.shape[1]]
    y = tf.reshape(t.value, [n, h * w, rows, cols])
    for axis, size, shift in ((2, rows, dr), (3, cols, dc)):
        if shift % size:
            begin, head, tail = [0, 0, 0, 0], [n, h * w, rows, cols], [n, h * w, rows, cols]
            begin[axis], head[axis], tail[axis] = shift, size - shift, shift
            y = tf.concat([tf.slice(y, begin, head), tf.slice(y, [0, 0, 0, 0], tail)], axis=axis)
    return tf.reshape(y, [n, h, w, c])
