"""A narrow ONNX → TensorFlow lowering for MicroNet's own op set, NHWC native.

Why not onnx2tf: on MicroNet it wraps the 4-D channel reshapes in TRANSPOSEs (511 ops, 78
TRANSPOSE for a gather-free M0) and its int8 model splits into many XNNPACK partitions. This
lowering knows the few ops our export formulation emits and keeps every activation NHWC:

* each ONNX tensor is carried as (TF tensor, ``perm``): physical axis ``i`` holds logical (ONNX)
  axis ``perm[i]``; images are ``(0, 2, 3, 1)``;
* and ``corder``: physical channel ``s`` holds logical channel ``corder[s]``. Channel shuffles
  (reshape/transpose/reshape in ONNX) are replayed on an index array and only change
  ``corder``; convolutions, per-channel constants and the Dynamic Shift-Max FCs absorb it into
  their weights. No TRANSPOSE is left. A shuffle that mixes the groups of the grouped 1x1 conv
  after it makes that conv dense (block-diagonal weights, permuted): more MACs, but XNNPACK's
  dense GEMM is cheaper than moving every pixel's channels (``stats["extra_macs"]``). In
  float, an expanding conv keeps its groups behind a permutation conv when that is cheaper;
* Dynamic Shift-Max's shift is the one reordering that must move data. XNNPACK copies slices
  and concatenations pixel by pixel, so on few channels the shift is a 1x1 conv with a 0/1
  matrix (exact, and cheaper than the copy: see INSTR_PER_PIECE); on many, a planning pass
  (``Lowering.planned``) lets the conv before it emit its channels in an order that makes the
  shift a roll (2–3 slices and one concatenation), else it is copied as a roll of the channel
  grid or as its runs of contiguous channels;
* a depthwise conv with a channel multiplier repeats its input along channels and runs as a
  plain depthwise conv: XNNPACK runs a multiplier as a grouped GEMM using 1–3 of 8 columns,
  which a callgrind profile showed as a third of M0's instructions. The repeats come from the
  convs that made the input when they fit in their tile (``_tiled``), else from a 1x1 conv
  (float) or a concatenation (int8);
* the hard sigmoid's affine that makes Dynamic Shift-Max's coefficients is one 1x1 depthwise
  conv with a bias instead of MUL and ADD;
* ``Max`` is emitted as ``b + relu(a - b)`` for int8: XNNPACK runs MAXIMUM only in float
  (LiteRT xnnpack_delegate.cc checks float types for it), and SUB with a fused RELU plus ADD
  stay int8 and delegated.

Anything outside this op set raises, naming the op: the lowering is narrow on purpose and
parity-tested (tests/test_tflite.py, tests/test_tflite_lowering.py).
"""

from __future__ import annotations

import logging

import numpy as np
import onnx
from onnx import numpy_helper

log = logging.getLogger(__name__)

NHWC = (0, 2, 3, 1)
INT64_MAX = np.iinfo(np.int64).max
# TFLite's XNNPACK delegate maps CONCATENATION to xnn_define_concatenate2..5.
MAX_CONCAT_INPUTS = 5
# Cost model for a channel reordering that must move data (instructions per pixel, from a
# callgrind profile of M0 in LiteRT/XNNPACK on x86): each contiguous piece is copied twice
# (SLICE, then CONCATENATION), about 18 instructions per pixel each; a grid roll is two rolls
# of two pieces; a 1x1 conv runs at about 20 MACs per instruction.
INSTR_PER_PIECE = 36
GRID_ROLL_PIECES = 4
INSTR_PER_MAC = 1 / 20
# XNNPACK's x86 kernels compute 16 channels per depthwise tile and, for a GEMM with at most 8
# outputs, 8 per tile (f32 10x8, QS8 3x8c8): up to those widths a conv can emit repeats of its
# outputs at no extra cost (see Lowering._tiled). Past 8, the stem's GEMM took the 5x16 kernel
# and 50 % more instructions (callgrind).
REPEAT_DEPTHWISE_TILE = 16
REPEAT_GEMM_TILE = 8


class _Lowered:
    """One ONNX tensor as lowered: a TF value plus how its data is laid out.

    * ``perm``: physical axis ``i`` holds logical (ONNX) axis ``perm[i]``;
    * ``corder``: for tensors with a channel axis (logical axis 1), physical channel ``s`` holds
      logical channel ``corder[s]`` (``None``: in order). Channel shuffles and Dynamic
      Shift-Max's shift only change ``corder``; convolutions absorb it into their weights;
    * ``view``: a lazy channel view (the reshape/transpose/slice/concat chains that spell a
      shuffle or a shift in ONNX): ``value`` is then the source ``_Lowered`` and ``view`` holds,
      for each logical element, its flat logical index in the source;
    * ``hint``: the channel order a squeeze-excite style FC should emit, so its coefficients
      line up with the tensor they multiply;
    * ``gathered``: the tensor is a reordering of another one (materialise it, not its partner).
    """

    __slots__ = ("value", "perm", "shape", "corder", "view", "hint", "gathered")

    def __init__(self, value, perm, shape, corder=None, *, view=None, hint=None, gathered=False):
        self.value = value  # tf.Tensor (or np.ndarray for a constant)
        self.perm = tuple(perm) if perm is not None else tuple(range(len(shape)))
        self.shape = list(shape)  # logical (ONNX) shape
        self.corder = None if corder is None or _is_identity(corder) else np.asarray(corder, dtype=np.int64)
        self.view = view
        self.hint = hint
        self.gathered = gathered

    @property
    def is_const(self) -> bool:
        return isinstance(self.value, np.ndarray)

    def order(self, channels: int) -> np.ndarray:
        return self.corder if self.corder is not None else np.arange(channels)


def _is_identity(order) -> bool:
    order = np.asarray(order)
    return bool(np.array_equal(order, np.arange(len(order))))


def _grid_roll(src: np.ndarray) -> tuple[int, int, int, int] | None:
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


def _resolve_target(target: list[int], size: int) -> list[int]:
    """An ONNX Reshape target with its -1 filled in."""
    if -1 not in target:
        return target
    known = int(np.prod([t for t in target if t != -1]))
    return [size // known if t == -1 else t for t in target]


def _chain_order(order: np.ndarray, src: np.ndarray, block: int) -> np.ndarray | None:
    """A physical channel order for a conv output that makes the copy ``src`` contiguous.

    ``order`` is the conv output's physical order (slot ``s`` holds logical ``order[s]``), ``src``
    a physical reordering to be copied (output slot ``s`` takes slot ``src[s]``), ``block`` the
    size of the blocks the conv fixes (its groups: any order inside a block, blocks stay put).
    When ``src`` moves whole blocks (block ``b`` onto block ``beta(b)``), arranging block
    ``beta(b)`` as the image of block ``b`` makes each block one contiguous run; only where a
    cycle of blocks closes is a block rotated (two runs). For Dynamic Shift-Max's shift (roll the
    groups, roll inside each group) that is three slices and one concatenation instead of two
    rolls on a reshaped grid. None when ``src`` does not move whole blocks.
    """
    c = len(order)
    if c % block:
        return None
    logical_image = _logical_image(order, src)
    if block == c:
        # Any order: interleave the cycles (slot k*d + i holds step k of cycle i), and the copy
        # is a roll by d: two slices and one concatenation.
        cycles, seen = [], np.zeros(c, dtype=bool)
        for start in order.tolist():
            if not seen[start]:
                cycle = [start]
                seen[start] = True
                while not seen[logical_image[cycle[-1]]]:
                    cycle.append(int(logical_image[cycle[-1]]))
                    seen[cycle[-1]] = True
                cycles.append(cycle)
        if len({len(cy) for cy in cycles}) != 1:
            return None
        return np.array(cycles, dtype=np.int64).T.reshape(-1)
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
            new[nb * block:(nb + 1) * block] = logical_image[new[b * block:(b + 1) * block]]
            done.add(nb)
            b = nb
    return new


def _logical_image(order: np.ndarray, src: np.ndarray) -> np.ndarray:
    """The physical copy ``src`` on a tensor stored in ``order``, as a map of logical channels."""
    image = np.empty(len(order), dtype=np.int64)
    image[order] = order[src]
    return image


def _relabelled(src: np.ndarray, order: np.ndarray, new: np.ndarray) -> np.ndarray:
    """``src`` (a physical copy on a tensor stored in ``order``) if it were stored in ``new``."""
    return np.argsort(new)[_logical_image(order, src)[new]]


def _runs(src: np.ndarray) -> list[tuple[int, int]]:
    """Maximal runs of consecutive source indices: [(start, length), ...]."""
    runs = []
    for v in src.tolist():
        if runs and runs[-1][0] + runs[-1][1] == v:
            runs[-1][1] += 1
        else:
            runs.append([v, 1])
    return [tuple(r) for r in runs]


def _scope_of(node_name: str) -> str:
    from micronet_export.int8.units import GRAPH_SCOPE, module_path

    return module_path(node_name) or GRAPH_SCOPE


def _attrs(node) -> dict:
    return {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}


def _shapes(model: onnx.ModelProto) -> dict[str, list[int]]:
    inferred = onnx.shape_inference.infer_shapes(model)
    out = {}
    for vi in list(inferred.graph.input) + list(inferred.graph.value_info) + list(inferred.graph.output):
        dims = vi.type.tensor_type.shape.dim
        out[vi.name] = [d.dim_value if d.dim_value > 0 else 1 for d in dims]
    return out


class Lowering:
    """Builds ``fn(x_nhwc) -> logits`` from a static-shape ONNX MicroNet graph."""

    def __init__(self, model: onnx.ModelProto, *, int8_friendly: bool,
                 conv_orders: dict[str, np.ndarray] | None = None) -> None:
        self.model = model
        # Output channel orders chosen for convs by a planning pass (see ``planned``).
        self.conv_orders = dict(conv_orders or {})
        self.wanted_orders: dict[str, np.ndarray] = {}
        # Convs whose order reaches a shift through a channel-multiplier depthwise conv (which
        # moves channels): changing it would break that shift's runs, so the plan leaves it.
        self.kept_orders: set[str] = set()
        self._producers: dict = {}
        self._inherited: dict = {}
        self._scaled: dict = {}
        self._recipes: dict = {}
        self._node_of = {o: n for n in model.graph.node for o in n.output}
        self.int8_friendly = int8_friendly
        self.shapes = _shapes(model)
        self.consts: dict[str, np.ndarray] = {i.name: numpy_helper.to_array(i) for i in model.graph.initializer}
        for node in model.graph.node:
            if node.op_type == "Constant":
                self.consts[node.output[0]] = numpy_helper.to_array(_attrs(node)["value"])
        self.input_name = model.graph.input[0].name
        self.output_name = model.graph.output[0].name
        self.hard_swish = self._find_hard_swish() if int8_friendly else {}
        in_shape = self.shapes[self.input_name]
        self.input_shape_nhwc = [in_shape[0], in_shape[2], in_shape[3], in_shape[1]]
        # What the channel-order bookkeeping did, for the report and the tests.
        self.stats = {"absorbed_reorders": 0, "materialised_reorders": 0, "reorder_slices": 0,
                      "densified_convs": 0, "extra_macs": 0, "permutation_convs": 0,
                      "producer_repeats": 0}
        self._materialised: dict = {}

    @classmethod
    def planned(cls, model: onnx.ModelProto, *, int8_friendly: bool) -> "Lowering":
        """A lowering whose convs emit the channel orders that make the shifts cheapest.

        Which order suits a conv is only known once its output reaches a Dynamic Shift-Max
        shift, so one trace (discarded) records the wishes and the returned lowering applies them.
        """
        import tensorflow as tf

        scout = cls(model, int8_friendly=int8_friendly)
        tf.function(scout.build(), input_signature=[tf.TensorSpec(scout.input_shape_nhwc, tf.float32)],
                    autograph=False).get_concrete_function()
        orders = {k: v for k, v in scout.wanted_orders.items() if k not in scout.kept_orders}
        return cls(model, int8_friendly=int8_friendly, conv_orders=orders)

    def _upstream_conv(self, name: str) -> str | None:
        """The output of the nearest non-depthwise conv whose channels ``name`` carries."""
        for _ in range(64):
            node = self._node_of.get(name)
            if node is None:
                return None
            if node.op_type == "Conv":
                w = self.consts[node.input[1]]
                if not (int(_attrs(node).get("group", 1)) > 1 and w.shape[1] == 1):
                    return node.output[0]
                name = node.input[0]
                continue
            # Follow the feature map, not the per-channel coefficients.
            inputs = [i for i in node.input if i and i not in self.consts]
            if not inputs:
                return None
            name = max(inputs, key=lambda i: int(np.prod(self.shapes.get(i, [0]))))
        return None

    def _find_hard_swish(self) -> dict[str, str]:
        """Mul nodes computing ``x * clip(x + 3, 0, 6) / 6`` -> name of ``x``.

        TFLiteConverter fuses that pattern into HARD_SWISH, which XNNPACK runs in float only;
        for int8 the lowering writes ``(x / 2) * (clamp(x / 3, -1, 1) + 1)``, which it leaves as
        MUL (fused RELU_N1_TO_1), ADD, MUL and MUL, all delegated.
        """
        producer = {o: n for n in self.model.graph.node for o in n.output}

        def const(name, value):
            return name in self.consts and self.consts[name].size == 1 and float(self.consts[name]) == value

        found = {}
        for node in self.model.graph.node:
            if node.op_type != "Mul":
                continue
            for x_name, other in ((node.input[0], node.input[1]), (node.input[1], node.input[0])):
                div = producer.get(other)
                if not div or div.op_type != "Div" or not const(div.input[1], 6.0):
                    continue
                clip = producer.get(div.input[0])
                if not clip or clip.op_type != "Clip" or not (const(clip.input[1], 0.0) and const(clip.input[2], 6.0)):
                    continue
                add = producer.get(clip.input[0])
                if add and add.op_type == "Add" and x_name in add.input and any(const(i, 3.0) for i in add.input):
                    found[node.name] = x_name
        return found

    # -- helpers ---------------------------------------------------------------------------
    def _get(self, env, name) -> _Lowered:
        if name in env:
            return env[name]
        if name in self.consts:
            c = self.consts[name]
            return _Lowered(c, None, c.shape)
        raise KeyError(name)

    @staticmethod
    def _as_perm(tf, t: _Lowered, perm) -> object:
        """The TF value of ``t`` laid out with ``perm`` (a transpose only when they differ)."""
        perm = tuple(perm)
        if t.is_const:
            c = t.value
            if c.ndim < len(perm):
                c = c.reshape((1,) * (len(perm) - c.ndim) + c.shape)
            return c.transpose(perm) if c.ndim == len(perm) and c.ndim > 1 else c
        if t.perm == perm:
            return t.value
        log.debug("lowering inserts a transpose %s -> %s", t.perm, perm)
        # physical(new)[i] = logical perm[i] = physical(old)[t.perm.index(perm[i])]
        return tf.transpose(t.value, [t.perm.index(p) for p in perm])

    def _channel_axis(self, t: _Lowered) -> int:
        """Physical index of the channel axis (logical axis 1)."""
        return t.perm.index(1)

    def _in_order(self, tf, t: _Lowered, target: np.ndarray | None):
        """``t``'s TF value with physical channel ``s`` = logical channel ``target[s]``.

        A reordering that no weight can absorb is a permutation conv when the tensor has few
        channels (see INSTR_PER_PIECE), else copied as a grid roll or as few contiguous channel
        slices as the two orders allow, then concatenated (XNNPACK runs SLICE and
        CONCATENATION; it has no GATHER). It also records the order the producing conv should
        emit to make the copy a roll (``wanted_orders``, see ``planned``). Results are cached:
        Dynamic Shift-Max multiplies its shifted input twice.
        """
        channels = t.shape[1]
        target = np.arange(channels) if target is None else np.asarray(target)
        current = t.order(channels)
        if np.array_equal(current, target):
            return t.value
        key = (id(t.value), current.tobytes(), target.tobytes())
        if key in self._materialised:
            return self._materialised[key][1]
        inverse = np.argsort(current)
        src = inverse[target]
        if id(t.value) in self._inherited:
            self.kept_orders.add(self._inherited[id(t.value)][0])
        producer = self._producers.get(id(t.value))
        if producer is not None:
            name, block, order, _ = producer
            better = _chain_order(order, src, block)
            if better is not None and name not in self.conv_orders and len(_runs(_relabelled(src, order, better))) < len(_runs(src)):
                self.wanted_orders[name] = better
        axis = self._channel_axis(t)
        rank = len(t.shape)
        runs = _runs(src)
        grid = _grid_roll(src) if rank == 4 and axis == 3 and len(runs) > 3 else None
        pieces_copied = GRID_ROLL_PIECES if grid is not None else len(runs)
        if rank == 4 and axis == 3 and channels * channels * INSTR_PER_MAC < pieces_copied * INSTR_PER_PIECE:
            # Few channels: a 1x1 conv with a 0/1 permutation matrix is exact and much cheaper
            # than copying: XNNPACK copies slices and concatenations pixel by pixel (about 18
            # instructions per pixel and piece in a callgrind profile), while a GEMM over C
            # channels costs about C*C/20 instructions per pixel.
            value = self._permutation_conv(tf, t.value, src)
        elif grid is not None:
            value = self._grid_roll(tf, t, *grid)
        else:
            pieces = []
            for start, length in runs:
                begin, size = [0] * rank, [t.shape[t.perm[i]] for i in range(rank)]
                begin[axis], size[axis] = start, length
                pieces.append(tf.slice(t.value, begin, size))
            # XNNPACK delegates a CONCATENATION of at most MAX_CONCAT_INPUTS inputs.
            while len(pieces) > 1:
                pieces = [p[0] if len(p) == 1 else tf.concat(p, axis=axis)
                          for p in (pieces[i:i + MAX_CONCAT_INPUTS] for i in range(0, len(pieces), MAX_CONCAT_INPUTS))]
            value = pieces[0]
            self.stats["reorder_slices"] += len(runs)
        self.stats["materialised_reorders"] += 1
        self._materialised[key] = (t, value)  # keep t alive so id() stays unique
        return value

    def _permutation_conv(self, tf, value, src: np.ndarray):
        """``value`` with physical channel ``s`` taken from channel ``src[s]``, as a 1x1 conv
        with a 0/1 matrix: exact in float, and in int8 its output range is its input's."""
        channels = len(src)
        permutation = np.zeros((1, 1, channels, channels), dtype=np.float32)
        permutation[0, 0, src, np.arange(channels)] = 1.0
        self.stats["permutation_convs"] += 1
        return tf.nn.conv2d(value, permutation, strides=[1, 1, 1, 1], padding="VALID")

    @staticmethod
    def _grid_roll(tf, t: _Lowered, rows: int, cols: int, dr: int, dc: int):
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

    @staticmethod
    def _permute_const(c: np.ndarray, order: np.ndarray, logical_rank: int) -> np.ndarray:
        """A constant broadcast against a tensor whose channels are stored in ``order``."""
        c = np.asarray(c)
        axis = c.ndim - (logical_rank - 1)  # logical axis 1, right-aligned broadcasting
        if axis < 0 or c.shape[axis] == 1:
            return c
        return np.take(c, order, axis=axis)

    def _binary(self, tf, a: _Lowered, b: _Lowered, op):
        shape = list(np.broadcast_shapes(tuple(a.shape), tuple(b.shape)))
        if a.is_const and b.is_const:
            return _Lowered(op(np.asarray(a.value), np.asarray(b.value)), None, shape)
        ref = a if not a.is_const else b
        perm = ref.perm if len(ref.shape) >= max(len(a.shape), len(b.shape)) else tuple(range(max(len(a.shape), len(b.shape))))
        rank = len(perm)
        order = None
        has_channels = rank in (2, 4) and len(shape) == rank
        if has_channels:
            channels = shape[1]
            if not a.is_const and not b.is_const:
                oa, ob = a.order(a.shape[1]), b.order(b.shape[1])
                if not np.array_equal(oa, ob):
                    # Reorder one side: the shifted/shuffled one, else the smaller one.
                    move_a = a.gathered and not b.gathered or (
                        a.gathered == b.gathered and np.prod(a.shape) < np.prod(b.shape))
                    if move_a:
                        a = _Lowered(self._in_order(tf, a, ob), a.perm, a.shape, ob)
                    else:
                        b = _Lowered(self._in_order(tf, b, oa), b.perm, b.shape, oa)
                order = a.order(channels)
            else:
                order = ref.order(channels)
            if a.is_const:
                a = _Lowered(self._permute_const(a.value, order, rank), None, np.shape(a.value))
            if b.is_const:
                b = _Lowered(self._permute_const(b.value, order, rank), None, np.shape(b.value))
        va = self._as_perm(tf, a, perm) if (not a.is_const or a.value.ndim > 0) else a.value
        vb = self._as_perm(tf, b, perm) if (not b.is_const or b.value.ndim > 0) else b.value
        cast = lambda v: tf.constant(v.astype(np.float32)) if isinstance(v, np.ndarray) else v
        hint = a.hint if a.hint is not None else b.hint
        return _Lowered(op(cast(va), cast(vb)), perm if rank == len(shape) else None, shape,
                        order if has_channels else None, hint=hint)

    # -- ops -------------------------------------------------------------------------------
    def build(self):
        """Returns a Python function of one NHWC float tensor (for tf.function tracing)."""
        import tensorflow as tf

        def fn(x):
            env = {self.input_name: _Lowered(x, NHWC, self.shapes[self.input_name])}
            for node in self.model.graph.node:
                if node.op_type == "Constant":
                    continue
                inputs = [self._get(env, i) if i else None for i in node.input]
                if inputs and inputs[0] is not None and inputs[0].view is not None:
                    handler = getattr(self, f"_view_{node.op_type}", None)
                else:
                    handler = getattr(self, f"_op_{node.op_type}", None)
                if handler is None:
                    raise NotImplementedError(f"ONNX op {node.op_type} ({node.name}) is outside the MicroNet lowering")
                # TF op names carry the PyTorch module path, so TFLite tensor names map back to
                # `features.6.layers.1` (per-layer error, float islands).
                with tf.name_scope(_scope_of(node.name)):
                    outs = handler(tf, node, inputs, _attrs(node))
                if not isinstance(outs, list):
                    outs = [outs]
                for name, out in zip(node.output, outs):
                    if name in self.shapes and out.view is None:
                        out.shape = self.shapes[name]
                    env[name] = out
            result = env[self.output_name]
            value = self._in_order(tf, result, None) if len(result.shape) in (2, 4) else result.value
            return self._as_perm(tf, _Lowered(value, result.perm, result.shape), tuple(range(len(result.shape))))

        return fn

    def _op_Conv(self, tf, node, inputs, a):
        x, w = inputs[0], inputs[1]
        bias = inputs[2].value if len(inputs) > 2 and inputs[2] is not None else None
        w = w.value
        group = int(a.get("group", 1))
        kh, kw = w.shape[2], w.shape[3]
        sh, sw = a.get("strides", [1, 1])
        pt, pl, pb, pr = a.get("pads", [0, 0, 0, 0])
        if a.get("dilations", [1, 1]) != [1, 1]:
            raise NotImplementedError("dilated conv is not used by MicroNet")
        xv = source = self._as_perm(tf, x, NHWC)
        c_in = x.shape[1]
        out_c = w.shape[0]
        order_in = x.order(c_in)
        same = (sh, sw) == (1, 1) and (pt, pb) == ((kh - 1) // 2,) * 2 and (pl, pr) == ((kw - 1) // 2,) * 2 and kh % 2 and kw % 2
        depthwise = group == c_in and w.shape[1] == 1
        free_block = 0  # size of the output blocks whose inner order this conv can choose
        recipe = None  # how to recompute this conv with its outputs repeated (see _tiled)
        if depthwise and out_c > c_in:
            # The multiplier's input repeat (see below) goes before the PAD, so that XNNPACK
            # can fuse the PAD into the depthwise conv. Few channels, float: a 1x1 conv with a
            # 0/1 matrix repeats them for less than a CONCATENATION (copied pixel by pixel, see
            # INSTR_PER_PIECE); M0 fp32 1.00 -> 0.82 ms. Not in int8, where these tiny QS8
            # GEMMs (requantizing, K and N padded to 8) made M0 1.48 -> 1.96 ms.
            mult = out_c // c_in
            tiled = self._tiled(tf, source, mult)
            if tiled is not None:
                xv = tiled
                self.stats["producer_repeats"] += 1
            elif not self.int8_friendly and mult * c_in * c_in * INSTR_PER_MAC < mult * INSTR_PER_PIECE / 2:
                repeat = np.tile(np.eye(c_in, dtype=np.float32), (1, mult)).reshape(1, 1, c_in, out_c)
                xv = tf.nn.conv2d(xv, repeat, strides=[1, 1, 1, 1], padding="VALID")
                self.stats["permutation_convs"] += 1
            else:
                xv = tf.concat([xv] * mult, axis=3)
        pad = None
        if same:
            padding = "SAME"
        else:
            if any((pt, pl, pb, pr)):
                pad = [[0, 0], [pt, pb], [pl, pr], [0, 0]]
                xv = tf.pad(xv, pad)
            padding = "VALID"
        if depthwise:
            # Depthwise, possibly with a channel multiplier m. XNNPACK runs a multiplier > 1 as
            # a grouped GEMM with 1-3 useful columns out of 8 (the slowest op of the network in
            # a profile), so the input is repeated m times along channels instead (one
            # CONCATENATION of whole pixels) and the conv is a plain depthwise: physical output
            # channel j*C + s is logical channel order_in[s]*m + j.
            mult = out_c // c_in
            order_out = (order_in[None, :] * mult + np.arange(mult)[:, None]).reshape(-1)
            kernel = w[order_out].reshape(out_c, 1, kh, kw).transpose(2, 3, 0, 1)
            y = tf.nn.depthwise_conv2d(xv, kernel, strides=[1, sh, sw, 1], padding=padding)
            recipe = ("depthwise", source, mult, pad, kernel)
        elif group == 1:
            order_out = None
            if x.hint is not None and x.shape[2] == x.shape[3] == 1 and out_c % len(x.hint) == 0:
                # An FC of Dynamic Shift-Max: emit its coefficients in the order of the data
                # they multiply, so no reordering is needed downstream.
                c = len(x.hint)
                order_out = (np.arange(out_c // c)[:, None] * c + x.hint[None, :]).reshape(-1)
            elif x.shape[2] * x.shape[3] > 1:
                order_out = self._chosen_order(node, np.arange(out_c), out_c)
                free_block = out_c
            rows = w if order_out is None else w[order_out]
            kernel = rows[:, order_in].transpose(2, 3, 1, 0)
            y = tf.nn.conv2d(xv, kernel, strides=[1, sh, sw, 1], padding=padding)
            recipe = ("dense", xv, kernel)
        else:
            k_in, n_out = c_in // group, out_c // group
            blocks = order_in.reshape(group, k_in) // k_in
            mixed = not np.all(blocks == blocks[:, :1])
            if mixed and not self.int8_friendly and kh == kw == 1 and 2 * (c_in * c_in + k_in * out_c) < c_in * out_c:
                # An expanding conv whose input order mixes its groups: putting the input in
                # order with a permutation conv (c_in^2 MACs per pixel) and keeping the groups
                # costs less than half the dense conv (M0: 4 convs, -2.3M MACs, fp32 -3 %;
                # int8 +2 %, so float only).
                xv = self._permutation_conv(tf, xv, np.argsort(order_in))
                order_in = np.arange(c_in)
                blocks = order_in.reshape(group, k_in) // k_in
                mixed = False
            if not mixed:
                # Every physical input block is one logical group: permute weights within and
                # across groups, and the conv stays grouped.
                groups_of = blocks[:, 0]
                order_out = (groups_of[:, None] * n_out + np.arange(n_out)[None, :]).reshape(-1)
                order_out = self._chosen_order(node, order_out, n_out)
                free_block = n_out
                local = order_in.reshape(group, k_in) - groups_of[:, None] * k_in
                rows = w[order_out].reshape(group, n_out, k_in, kh, kw)
                kernel = np.stack([rows[b][:, local[b]] for b in range(group)]).reshape(out_c, k_in, kh, kw)
                # TF infers the groups from the filter's in-channels; TFLite CONV_2D and
                # XNNPACK run it as one grouped op.
                y = tf.nn.conv2d(xv, kernel.transpose(2, 3, 1, 0), strides=[1, sh, sw, 1], padding=padding)
            else:
                # A shuffle folded into this conv mixes its groups: it becomes dense, with the
                # block-diagonal weights permuted (cheaper than moving the channels of every
                # pixel, and no TRANSPOSE).
                dense = np.zeros((out_c, c_in, kh, kw), dtype=w.dtype)
                for g in range(group):
                    dense[g * n_out:(g + 1) * n_out, g * k_in:(g + 1) * k_in] = w[g * n_out:(g + 1) * n_out]
                order_out = self._chosen_order(node, np.arange(out_c), out_c)
                free_block = out_c
                self.stats["densified_convs"] += 1
                out_h, out_w = self.shapes[node.output[0]][2:]
                self.stats["extra_macs"] += (c_in - k_in) * out_c * kh * kw * out_h * out_w
                log.debug("conv %s made dense (%d groups, %d->%d, %dx%d): its input order mixes groups", node.name, group, c_in, out_c, out_h, out_w)
                y = tf.nn.conv2d(xv, dense[order_out][:, order_in].transpose(2, 3, 1, 0), strides=[1, sh, sw, 1],
                                 padding=padding)
        if bias is not None:
            bias = (bias if order_out is None else bias[order_out]).astype(np.float32)
            y = tf.nn.bias_add(y, bias)
        if recipe is not None:
            self._recipes[id(y)] = (*recipe, bias, [1, sh, sw, 1], padding, y)
        if x.corder is not None:
            self.stats["absorbed_reorders"] += 1
        hint = x.hint if x.shape[2] == x.shape[3] == 1 else None  # FC1 -> ReLU -> FC2
        if depthwise and out_c > c_in:
            origin = self._upstream_conv(node.input[0])
            if origin is not None:
                self._inherited[id(y)] = (origin, y)
        elif depthwise and id(source) in self._inherited:
            self._inherited[id(y)] = (self._inherited[id(source)][0], y)
        if free_block:
            # Its output order is free inside each block: a shift of this output may ask for one.
            self._producers[id(y)] = (node.output[0], free_block, np.arange(out_c) if order_out is None else order_out, y)
        return _Lowered(y, NHWC, [0, 0, 0, 0], order_out, hint=hint)

    def _tiled(self, tf, value, m: int):
        """``concat([value] * m)`` along channels, recomputed by the ops that made ``value``.

        A depthwise conv with a channel multiplier needs its input repeated. When that input
        comes from a conv (through activations and other depthwise convs), the conv can emit
        the repeats itself: XNNPACK computes a tile of output channels at once (see
        REPEAT_GEMM_TILE), so within a tile the repeats cost no extra work and no op, where a
        CONCATENATION copies every pixel (M0's stem and first block: 112x224 and 112x112).
        None when the chain does not allow it.
        """
        recipe = self._recipes.get(id(value))
        if recipe is None:
            return None
        if recipe[0] == "act":
            inner = self._tiled(tf, recipe[2], m)
            return None if inner is None else recipe[1](inner)
        if recipe[0] == "dense":
            _, xin, kernel, bias, strides, padding, _ = recipe
            if kernel.shape[3] * m > REPEAT_GEMM_TILE:
                return None
            y = tf.nn.conv2d(xin, np.tile(kernel, (1, 1, 1, m)), strides=strides, padding=padding)
        else:
            _, source, mult, pad, kernel, bias, strides, padding, _ = recipe
            if kernel.shape[2] * m > REPEAT_DEPTHWISE_TILE:
                return None
            inner = self._tiled(tf, source, m * mult)
            if inner is None:
                return None
            if pad is not None:
                inner = tf.pad(inner, pad)
            y = tf.nn.depthwise_conv2d(inner, np.tile(kernel, (1, 1, m, 1)), strides=strides, padding=padding)
        return y if bias is None else tf.nn.bias_add(y, np.tile(bias, m))

    def _chosen_order(self, node, default: np.ndarray, block: int) -> np.ndarray:
        """``default`` output order, or the planned one if it keeps every block's channels."""
        chosen = self.conv_orders.get(node.output[0])
        if chosen is None:
            return default
        for b in range(0, len(default), block):
            if set(chosen[b:b + block].tolist()) != set(default[b:b + block].tolist()):
                return default
        return chosen

    def _activation(self, x: _Lowered, fn) -> _Lowered:
        y = fn(x.value)
        self._recipes[id(y)] = ("act", fn, x.value, y)
        return _Lowered(y, x.perm, x.shape, x.corder, hint=x.hint)

    def _op_Relu(self, tf, node, inputs, a):
        return self._activation(inputs[0], tf.nn.relu)

    def _op_Clip(self, tf, node, inputs, a):
        x = inputs[0]
        lo = float(inputs[1].value) if len(inputs) > 1 and inputs[1] is not None else -np.inf
        hi = float(inputs[2].value) if len(inputs) > 2 and inputs[2] is not None else np.inf
        if lo == 0.0 and hi == 6.0:
            return self._activation(x, tf.nn.relu6)
        if lo == 0.0 and hi == np.inf:
            return self._activation(x, tf.nn.relu)
        return self._activation(x, lambda v: tf.clip_by_value(v, lo, hi))

    def _op_Add(self, tf, node, inputs, a):
        return self._affine_as_depthwise(tf, inputs) or self._binary(tf, inputs[0], inputs[1], lambda p, q: p + q)

    def _affine_as_depthwise(self, tf, inputs) -> _Lowered | None:
        """``t * scale + offset`` on a pooled (N, C, 1, 1) tensor as one 1x1 depthwise conv.

        Dynamic Shift-Max maps its hard sigmoid to coefficients with a MUL and an ADD; one
        DEPTHWISE_CONV_2D with a bias does both (15 ops fewer in M0, delegated in fp32 and int8).
        The MUL left without a consumer is pruned by the converter.
        """
        if len(inputs) != 2 or sum(t.is_const for t in inputs) != 1:
            return None
        offset, scaled = (inputs[0], inputs[1]) if inputs[0].is_const else (inputs[1], inputs[0])
        found = self._scaled.get(id(scaled.value))
        if found is None:
            return None
        t, scale = found[0], found[1]
        n, c, h, w = t.shape
        if offset.value.size not in (1, c) or scale.size not in (1, c) or t.perm != NHWC:
            return None
        order = t.order(c)
        weight = np.broadcast_to(np.asarray(scale, dtype=np.float32).reshape(-1), (c,))[order]
        bias = np.broadcast_to(np.asarray(offset.value, dtype=np.float32).reshape(-1), (c,))[order]
        y = tf.nn.depthwise_conv2d(t.value, weight.reshape(1, 1, c, 1), strides=[1, 1, 1, 1], padding="VALID")
        y = tf.nn.bias_add(y, bias)
        return _Lowered(y, NHWC, t.shape, t.corder, hint=t.hint)

    def _op_Sub(self, tf, node, inputs, a):
        return self._binary(tf, inputs[0], inputs[1], lambda p, q: p - q)

    def _op_Mul(self, tf, node, inputs, a):
        if node.name in self.hard_swish:
            x = inputs[list(node.input).index(self.hard_swish[node.name])]
            # relu6(x + 3) / 6 = (clamp(x / 3, -1, 1) + 1) / 2: the clamp fuses into the MUL as
            # RELU_N1_TO_1. Written as relu6(x + 3), the ADD's input/output scale ratio is
            # |x|max / 6, which XNNPACK's QS8 ADD refuses past 256 (random-weight classifiers
            # reach 305 and left two ADDs outside XNNPACK).
            unit = tf.minimum(tf.maximum(x.value * (1.0 / 3.0), -1.0), 1.0)
            return _Lowered((x.value * 0.5) * (unit + 1.0), x.perm, x.shape, x.corder)
        out = self._binary(tf, inputs[0], inputs[1], lambda p, q: p * q)
        x, scale = (inputs[1], inputs[0]) if inputs[0].is_const else (inputs[0], inputs[1])
        if scale.is_const and not x.is_const and len(x.shape) == 4 and x.shape[2] == x.shape[3] == 1:
            self._scaled[id(out.value)] = (x, np.asarray(scale.value), out)
        return out

    def _op_Div(self, tf, node, inputs, a):
        b = inputs[1]
        if b.is_const:  # division by a constant: a multiply, which TFLite fuses better
            return self._binary(tf, inputs[0], _Lowered(np.asarray(1.0 / b.value.astype(np.float64), dtype=np.float32), None, b.shape), lambda p, q: p * q)
        return self._binary(tf, inputs[0], b, lambda p, q: p / q)

    def _op_Max(self, tf, node, inputs, a):
        if self.int8_friendly:
            return self._binary(tf, inputs[0], inputs[1], lambda p, q: q + tf.nn.relu(p - q))
        return self._binary(tf, inputs[0], inputs[1], tf.maximum)

    def _reduce_axes(self, x: _Lowered, axes) -> list[int]:
        rank = len(x.shape)
        return sorted(x.perm.index(ax % rank) for ax in axes)

    def _op_ReduceMean(self, tf, node, inputs, a):
        x = inputs[0]
        axes = a.get("axes")
        if axes is None and len(inputs) > 1 and inputs[1] is not None:
            axes = inputs[1].value.tolist()
        keep = bool(a.get("keepdims", 1))
        if not keep:
            raise NotImplementedError("ReduceMean without keepdims is not used by MicroNet")
        if sorted(ax % len(x.shape) for ax in axes) != [2, 3]:
            raise NotImplementedError("ReduceMean over other than the spatial axes is not used by MicroNet")
        return self._op_GlobalAveragePool(tf, node, inputs, a)

    def _op_GlobalAveragePool(self, tf, node, inputs, a):
        x = inputs[0]
        y = tf.reduce_mean(x.value, axis=self._reduce_axes(x, [2, 3]), keepdims=True)
        return _Lowered(y, x.perm, x.shape, x.corder, hint=x.order(x.shape[1]))

    def _op_Transpose(self, tf, node, inputs, a):
        x = inputs[0]
        p = a["perm"]
        if x.corder is not None:
            raise NotImplementedError("Transpose of a reordered tensor is outside the MicroNet lowering")
        # new logical axis j = old logical axis p[j]; the data stays where it is.
        inv = {old: new for new, old in enumerate(p)}
        return _Lowered(x.value, [inv[q] for q in x.perm], [x.shape[q] for q in p])

    # -- lazy channel views --------------------------------------------------------------------
    # MicroNet's channel shuffles and Dynamic Shift-Max shift are reshape/transpose/slice/concat
    # chains on an (N, g, C/g, H*W) view. They are replayed on an index array instead of data;
    # when the chain comes back to an (N, C, H, W) image, what it computed is a channel
    # permutation, which only changes ``corder``.
    def _reshape(self, tf, x: _Lowered, target: list[int]):
        src = list(x.shape)
        target = _resolve_target(target, int(np.prod(src)))
        if x.is_const:
            return _Lowered(x.value.reshape(target), None, target)
        if x.perm == NHWC and len(src) == 4 and len(target) == 4 and target[0] == src[0] \
                and target[1] * target[2] == src[1] and target[3] == src[2] * src[3]:
            index = np.arange(int(np.prod(src))).reshape(src)
            return self._view_result(x, index.reshape(target))
        # (N, C, 1, 1) -> (N, C): a flatten of a pooled tensor.
        if len(target) == 2 and x.perm == NHWC and src[2] == src[3] == 1:
            return _Lowered(tf.reshape(x.value, target), None, target, x.corder)
        log.warning("generic reshape %s -> %s with layout %s: transposes inserted", src, target, x.perm)
        logical = self._as_perm(tf, _Lowered(self._in_order(tf, x, None), x.perm, x.shape), tuple(range(len(src))))
        y = tf.reshape(logical, target)
        if len(target) == 4:
            return _Lowered(tf.transpose(y, list(NHWC)), NHWC, target)
        return _Lowered(y, None, target)

    def _view_result(self, source: _Lowered, index: np.ndarray) -> _Lowered:
        """A lazy view, or, once it is an image again, ``source`` with its channels relabelled."""
        n, c, h, w = source.shape
        if index.ndim == 4 and index.shape[0] == n and index.shape[2:] == (h, w):
            channel = index[0, :, 0, 0] // (h * w)
            expect = channel[:, None, None] * (h * w) + np.arange(h * w).reshape(h, w)
            if np.array_equal(index[0], expect) and np.array_equal(np.sort(channel), np.arange(c)):
                # output logical channel k = source logical channel[k]; same physical data.
                order = np.argsort(channel)[source.order(c)]
                return _Lowered(source.value, NHWC, [n, c, h, w], order, gathered=True)
        return _Lowered(source, None, list(index.shape), view=index)

    def _view_Reshape(self, tf, node, inputs, a):
        x = inputs[0]
        target = _resolve_target([int(v) for v in inputs[1].value.tolist()], x.view.size)
        return self._view_result(x.value, x.view.reshape(target))

    def _view_Transpose(self, tf, node, inputs, a):
        x = inputs[0]
        return self._view_result(x.value, x.view.transpose(a["perm"]))

    def _view_Slice(self, tf, node, inputs, a):
        x = inputs[0]
        starts, ends = inputs[1].value.tolist(), inputs[2].value.tolist()
        axes = inputs[3].value.tolist() if len(inputs) > 3 and inputs[3] is not None else list(range(len(starts)))
        steps = inputs[4].value.tolist() if len(inputs) > 4 and inputs[4] is not None else [1] * len(starts)
        index = [slice(None)] * x.view.ndim
        for st, en, ax, step in zip(starts, ends, axes, steps):
            index[ax % x.view.ndim] = slice(st, min(en, INT64_MAX), step)
        return self._view_result(x.value, x.view[tuple(index)])

    def _view_Concat(self, tf, node, inputs, a):
        if any(t.view is None or t.value is not inputs[0].value for t in inputs):
            raise NotImplementedError("Concat of channel views of different tensors is outside the MicroNet lowering")
        return self._view_result(inputs[0].value, np.concatenate([t.view for t in inputs], axis=int(a["axis"])))

    def _view_Split(self, tf, node, inputs, a):
        x = inputs[0]
        axis = int(a.get("axis", 0)) % x.view.ndim
        sizes = self._split_sizes(node, inputs, a, x.view.shape[axis])
        parts = np.split(x.view, np.cumsum(sizes)[:-1], axis=axis)
        return [self._view_result(x.value, p) for p in parts]

    def _view_Identity(self, tf, node, inputs, a):
        return inputs[0]

    # -- the remaining data movement --------------------------------------------------------
    def _op_Reshape(self, tf, node, inputs, a):
        return self._reshape(tf, inputs[0], [int(v) for v in inputs[1].value.tolist()])

    def _op_Flatten(self, tf, node, inputs, a):
        x = inputs[0]
        axis = int(a.get("axis", 1))
        return self._reshape(tf, x, [int(np.prod(x.shape[:axis])), int(np.prod(x.shape[axis:]))])

    def _op_Slice(self, tf, node, inputs, a):
        x = inputs[0]
        starts, ends = inputs[1].value.tolist(), inputs[2].value.tolist()
        axes = inputs[3].value.tolist() if len(inputs) > 3 and inputs[3] is not None else list(range(len(starts)))
        steps = inputs[4].value.tolist() if len(inputs) > 4 and inputs[4] is not None else [1] * len(starts)
        if any(s != 1 for s in steps):
            raise NotImplementedError("strided Slice is not used by MicroNet")
        if x.is_const:
            raise NotImplementedError("Slice of a constant")
        rank = len(x.shape)
        value = self._in_order(tf, x, None) if rank in (2, 4) else x.value
        # Explicit sizes: XNNPACK does not delegate a SLICE whose size holds -1.
        begin, size = [0] * rank, [x.shape[x.perm[i]] for i in range(rank)]
        for st, en, ax in zip(starts, ends, axes):
            ax %= rank
            dim = x.shape[ax]
            st = max(0, st + dim if st < 0 else min(st, dim))
            en = max(0, en + dim if en < 0 else min(en, dim))
            phys = x.perm.index(ax)
            begin[phys], size[phys] = st, en - st
        return _Lowered(tf.slice(value, begin, size), x.perm, x.shape)

    def _op_Concat(self, tf, node, inputs, a):
        ref = next(t for t in inputs if not t.is_const)
        axis = int(a["axis"]) % len(ref.shape)
        values = [self._as_perm(tf, _Lowered(self._in_order(tf, t, None), t.perm, t.shape) if not t.is_const else t, ref.perm)
                  for t in inputs]
        return _Lowered(tf.concat(values, axis=ref.perm.index(axis)), ref.perm, ref.shape)

    @staticmethod
    def _split_sizes(node, inputs, a, dim) -> list[int]:
        if len(inputs) > 1 and inputs[1] is not None:
            return [int(s) for s in inputs[1].value.tolist()]
        if "split" in a:
            return list(a["split"])
        return [dim // len(node.output)] * len(node.output)

    def _op_Split(self, tf, node, inputs, a):
        x = inputs[0]
        axis = int(a.get("axis", 0)) % len(x.shape)
        sizes = self._split_sizes(node, inputs, a, x.shape[axis])
        value, corders = x.value, [None] * len(sizes)
        if axis == 1 and x.corder is not None:
            # Keep the order if every physical part holds exactly one logical part.
            bounds = np.cumsum([0] + sizes)
            parts = [x.corder[bounds[i]:bounds[i + 1]] - bounds[i] for i in range(len(sizes))]
            if all(np.array_equal(np.sort(p), np.arange(n)) for p, n in zip(parts, sizes)):
                corders = parts
            else:
                value = self._in_order(tf, x, None)
        # Equal parts as SPLIT (XNNPACK runs it); SPLIT_V only when sizes differ.
        split = len(sizes) if len(set(sizes)) == 1 else sizes
        pieces = tf.split(value, split, axis=x.perm.index(axis))
        return [_Lowered(p, x.perm, x.shape, o, hint=x.hint) for p, o in zip(pieces, corders)]

    def _op_Gemm(self, tf, node, inputs, a):
        x, b = inputs[0], inputs[1]
        c = inputs[2] if len(inputs) > 2 else None
        if a.get("transA", 0) or a.get("alpha", 1.0) != 1.0 or a.get("beta", 1.0) != 1.0:
            raise NotImplementedError("Gemm with transA/alpha/beta is not used by MicroNet")
        w = b.value.T if a.get("transB", 0) else b.value
        xv = self._as_perm(tf, x, (0, 1))
        w = w[x.order(x.shape[1])]  # rows follow the input's channel order
        y = tf.matmul(xv, w.astype(np.float32))
        if c is not None:
            y = y + c.value.astype(np.float32)
        return _Lowered(y, None, [x.shape[0], w.shape[1]])

    def _op_Identity(self, tf, node, inputs, a):
        return inputs[0]
