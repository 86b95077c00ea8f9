"""Channel-order algebra, pure numpy: permutations of channels as index arrays.

Conventions: an *order* is a physical channel order (slot ``s`` holds logical channel
``order[s]``); a *copy* ``src`` is a physical reordering (output slot ``s`` takes slot
``src[s]``). The lowering replays MicroNet's shuffles and shifts on these arrays instead of on
data, and uses them to decide how a reordering that must move data is done.
"""

from __future__ import annotations

import numpy as np

INT64_MAX = np.iinfo(np.int64).max


def is_identity(order) -> bool:
    order = np.asarray(order)
    return bool(np.array_equal(order, np.arange(len(order))))


def grid_roll(src: np.ndarray) -> tuple[int, int, int, int] | None:
    """``(rows, cols, dr, dc)`` if ``src`` rolls a (rows, cols) channel grid on both axes."""
    c = len(src)
    for cols in range(2, c):
        if c % cols:
            continue
        rows = c // cols
        dr, dc = int(src[0]) // cols, int(src[0]) % cols
        a, b = np.divmod(np.arange(c), cols)
        if np.array_equal(src, ((a + dr) % rows) * cols + (b + dc) % cols):
            return rows, cols, dr, dc
    return None


def resolve_target(target: list[int], size: int) -> list[int]:
    """An ONNX Reshape target with its -1 filled in."""
    if -1 not in target:
        return target
    known = int(np.prod([t for t in target if t != -1]))
    return [size // known if t == -1 else t for t in target]


def logical_image(order: np.ndarray, src: np.ndarray) -> np.ndarray:
    """The physical copy ``src`` on a tensor stored in ``order``, as a map of logical channels."""
    image = np.empty(len(order), dtype=np.int64)
    image[order] = order[src]
    return image


def relabelled(src: np.ndarray, order: np.ndarray, new: np.ndarray) -> np.ndarray:
    """``src`` (a physical copy on a tensor stored in ``order``) if it were stored in ``new``."""
    return np.argsort(new)[logical_image(order, src)[new]]


def runs(src: np.ndarray) -> list[tuple[int, int]]:
    """Maximal runs of consecutive source indices: [(start, length), ...]."""
    found: list[list[int]] = []
    for v in src.tolist():
        if found and found[-1][0] + found[-1][1] == v:
            found[-1][1] += 1
        else:
            found.append([v, 1])
    return [tuple(r) for r in found]


def _interleaved_cycles(order: np.ndarray, image: np.ndarray) -> np.ndarray | None:
    """An order in which slot ``k*d + i`` holds step ``k`` of cycle ``i`` of ``image``: the copy
    is then a roll by ``d`` (two slices, one concatenation). None when cycles differ in length."""
    cycles, seen = [], np.zeros(len(order), dtype=bool)
    for start in order.tolist():
        if not seen[start]:
            cycle = [start]
            seen[start] = True
            while not seen[image[cycle[-1]]]:
                cycle.append(int(image[cycle[-1]]))
                seen[cycle[-1]] = True
            cycles.append(cycle)
    if len({len(cy) for cy in cycles}) != 1:
        return None
    return np.array(cycles, dtype=np.int64).T.reshape(-1)


def chain_order(order: np.ndarray, src: np.ndarray, block: int) -> np.ndarray | None:
    """A physical channel order for a conv output that makes the copy ``src`` contiguous.

    ``order`` is the conv output's physical order, ``src`` a physical reordering to be copied,
    ``block`` the size of the blocks the conv fixes (its groups: any order inside a block,
    blocks stay put). When ``src`` moves whole blocks (block ``b`` onto block ``beta(b)``),
    arranging block ``beta(b)`` as the image of block ``b`` makes each block one contiguous run;
    only where a cycle of blocks closes is a block rotated (two runs). For Dynamic Shift-Max's
    shift (roll the groups, roll inside each group) that is three slices and one concatenation
    instead of two rolls on a reshaped grid. None when ``src`` does not move whole blocks.
    """
    c = len(order)
    if c % block:
        return None
    image = logical_image(order, src)
    if block == c:
        return _interleaved_cycles(order, image)
    beta = []
    for b in range(c // block):
        targets = src[b * block:(b + 1) * block] // block
        if np.any(targets != targets[0]):
            return None
        beta.append(int(targets[0]))
    if sorted(beta) != list(range(len(beta))):
        return None
    new = order.copy()
    done: set[int] = set()
    for start in range(len(beta)):
        if start in done:
            continue
        done.add(start)
        b = start
        while beta[b] != start:
            nb = beta[b]
            new[nb * block:(nb + 1) * block] = image[new[b * block:(b + 1) * block]]
            done.add(nb)
            b = nb
    return new


def keeps_blocks(chosen: np.ndarray, default: np.ndarray, block: int) -> bool:
    """Whether ``chosen`` only reorders channels inside each ``block`` of ``default``."""
    return all(set(chosen[b:b + block].tolist()) == set(default[b:b + block].tolist())
               for b in range(0, len(default), block))


def permute_const(c: np.ndarray, order: np.ndarray, logical_rank: int) -> np.ndarray:
    """A constant broadcast against a tensor whose channels are stored in ``order``."""
    c = np.asarray(c)
    axis = c.ndim - (logical_rank - 1)  # logical axis 1, right-aligned broadcasting
    if axis < 0 or c.shape[axis] == 1:
        return c
    return np.take(c, order, axis=axis)


def image_relabelling(index: np.ndarray, source_shape: list[int]) -> np.ndarray | None:
    """For a lazy view ``index`` (flat logical indices into an (N, C, H, W) source), the channel
    map when the view is an image again that only relabels channels: output logical channel
    ``k`` = source logical channel ``result[k]``. None otherwise."""
    n, c, h, w = source_shape
    if not (index.ndim == 4 and index.shape[0] == n and index.shape[2:] == (h, w)):
        return None
    channel = index[0, :, 0, 0] // (h * w)
    expect = channel[:, None, None] * (h * w) + np.arange(h * w).reshape(h, w)
    if np.array_equal(index[0], expect) and np.array_equal(np.sort(channel), np.arange(c)):
        return channel
    return None


def multiplier_order(order_in: np.ndarray, mult: int) -> np.ndarray:
    """Output order of a depthwise conv with channel multiplier ``mult`` run on its input
    repeated ``mult`` times: physical channel ``j*C + s`` is logical ``order_in[s]*mult + j``."""
    return (order_in[None, :] * mult + np.arange(mult)[:, None]).reshape(-1)


def coefficient_order(hint: np.ndarray, out_channels: int) -> np.ndarray:
    """Output order of a Dynamic Shift-Max FC emitting ``out_channels // len(hint)``
    coefficient sets, each in the order ``hint`` of the data it multiplies."""
    c = len(hint)
    return (np.arange(out_channels // c)[:, None] * c + hint[None, :]).reshape(-1)
