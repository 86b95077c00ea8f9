"""A narrow ONNX → TensorFlow lowering for MicroNet's own op set, NHWC native.

Why not onnx2tf: on MicroNet it wraps the 4-D channel reshapes in TRANSPOSEs (511 ops, 78
TRANSPOSE for a gather-free M0) and its int8 model splits into many XNNPACK partitions. This
lowering knows the few ops our export formulation emits and keeps every activation NHWC:

* each ONNX tensor is carried as (TF tensor, ``perm``): physical axis ``i`` holds logical (ONNX)
  axis ``perm[i]``; images are ``(0, 2, 3, 1)``;
* a Transpose only relabels ``perm`` (no data moves); a Reshape is a physical reshape whenever
  the memory order allows (splitting or merging the channel axis of an NHWC tensor) and
  transposes only when it must (a channel shuffle's interleave);
* ``Max`` is emitted as ``b + relu(a - b)`` for int8: XNNPACK runs MAXIMUM only in float
  (LiteRT xnnpack_delegate.cc checks float types for it), and SUB with a fused RELU plus ADD
  stay int8 and delegated.

Anything outside this op set raises, naming the op: the lowering is narrow on purpose and
parity-tested (tests/test_tflite.py).
"""

from __future__ import annotations

import logging

import numpy as np
import onnx
from onnx import numpy_helper

log = logging.getLogger(__name__)

NHWC = (0, 2, 3, 1)
INT64_MAX = np.iinfo(np.int64).max


class _Lowered:
    __slots__ = ("value", "perm", "shape")

    def __init__(self, value, perm, shape):
        self.value = value  # tf.Tensor (or np.ndarray for a constant)
        self.perm = tuple(perm) if perm is not None else tuple(range(len(shape)))
        self.shape = list(shape)  # logical (ONNX) shape

    @property
    def is_const(self) -> bool:
        return isinstance(self.value, np.ndarray)


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

    def __init__(self, model: onnx.ModelProto, *, int8_friendly: bool) -> None:
        self.model = model
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

    def _find_hard_swish(self) -> dict[str, str]:
        """Mul nodes computing ``x * clip(x + 3, 0, 6) / 6`` -> name of ``x``.

        TFLiteConverter fuses that pattern into HARD_SWISH, which XNNPACK runs in float only;
        for int8 the lowering writes ``(x / 6) * relu6(x + 3)``, which it leaves as MUL, ADD
        (fused RELU6) and MUL, all delegated.
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

    def _binary(self, tf, a: _Lowered, b: _Lowered, op):
        ref = a if not a.is_const else b
        perm = ref.perm if len(ref.shape) >= max(len(a.shape), len(b.shape)) else tuple(range(max(len(a.shape), len(b.shape))))
        rank = len(perm)
        va = self._as_perm(tf, a, perm) if (not a.is_const or a.value.ndim > 0) else a.value
        vb = self._as_perm(tf, b, perm) if (not b.is_const or b.value.ndim > 0) else b.value
        shape = list(np.broadcast_shapes(tuple(a.shape), tuple(b.shape)))
        if a.is_const and b.is_const:
            return _Lowered(op(np.asarray(a.value), np.asarray(b.value)), None, shape)
        cast = lambda v: tf.constant(v.astype(np.float32)) if isinstance(v, np.ndarray) else v
        return _Lowered(op(cast(va), cast(vb)), perm if rank == len(shape) else None, shape)

    # -- ops -------------------------------------------------------------------------------
    def build(self):
        """Returns a Python function of one NHWC float tensor (for tf.function tracing)."""
        import tensorflow as tf

        def fn(x):
            env = {self.input_name: _Lowered(x, NHWC, self.shapes[self.input_name])}
            for node in self.model.graph.node:
                if node.op_type == "Constant":
                    continue
                handler = getattr(self, f"_op_{node.op_type}", None)
                if handler is None:
                    raise NotImplementedError(f"ONNX op {node.op_type} ({node.name}) is outside the MicroNet lowering")
                outs = handler(tf, node, [self._get(env, i) if i else None for i in node.input], _attrs(node))
                if not isinstance(outs, list):
                    outs = [outs]
                for name, out in zip(node.output, outs):
                    if name in self.shapes:
                        out.shape = self.shapes[name]
                    env[name] = out
            result = env[self.output_name]
            return self._as_perm(tf, result, tuple(range(len(result.shape))))

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
        xv = self._as_perm(tf, x, NHWC)
        c_in = x.shape[1]
        same = (sh, sw) == (1, 1) and (pt, pb) == ((kh - 1) // 2,) * 2 and (pl, pr) == ((kw - 1) // 2,) * 2 and kh % 2 and kw % 2
        if same:
            padding = "SAME"
        else:
            if any((pt, pl, pb, pr)):
                xv = tf.pad(xv, [[0, 0], [pt, pb], [pl, pr], [0, 0]])
            padding = "VALID"
        out_c = w.shape[0]
        if group == 1:
            y = tf.nn.conv2d(xv, w.transpose(2, 3, 1, 0), strides=[1, sh, sw, 1], padding=padding)
        elif group == c_in and w.shape[1] == 1:
            mult = out_c // c_in
            kernel = w.reshape(c_in, mult, kh, kw).transpose(2, 3, 0, 1)
            y = tf.nn.depthwise_conv2d(xv, kernel, strides=[1, sh, sw, 1], padding=padding)
        else:
            # Grouped conv: TF infers groups from filter in-channels; TFLite CONV_2D and
            # XNNPACK both run it as one op.
            y = tf.nn.conv2d(xv, w.transpose(2, 3, 1, 0), strides=[1, sh, sw, 1], padding=padding)
        if bias is not None:
            y = tf.nn.bias_add(y, bias.astype(np.float32))
        return _Lowered(y, NHWC, [0, 0, 0, 0])

    def _op_Relu(self, tf, node, inputs, a):
        x = inputs[0]
        return _Lowered(tf.nn.relu(x.value), x.perm, x.shape)

    def _op_Clip(self, tf, node, inputs, a):
        x = inputs[0]
        lo = float(inputs[1].value) if len(inputs) > 1 and inputs[1] is not None else -np.inf
        hi = float(inputs[2].value) if len(inputs) > 2 and inputs[2] is not None else np.inf
        if lo == 0.0 and hi == 6.0:
            y = tf.nn.relu6(x.value)
        elif lo == 0.0 and hi == np.inf:
            y = tf.nn.relu(x.value)
        else:
            y = tf.clip_by_value(x.value, lo, hi)
        return _Lowered(y, x.perm, x.shape)

    def _op_Add(self, tf, node, inputs, a):
        return self._binary(tf, inputs[0], inputs[1], lambda p, q: p + q)

    def _op_Sub(self, tf, node, inputs, a):
        return self._binary(tf, inputs[0], inputs[1], lambda p, q: p - q)

    def _op_Mul(self, tf, node, inputs, a):
        if node.name in self.hard_swish:
            x = inputs[list(node.input).index(self.hard_swish[node.name])]
            return _Lowered((x.value * (1.0 / 6.0)) * tf.nn.relu6(x.value + 3.0), x.perm, x.shape)
        return self._binary(tf, inputs[0], inputs[1], lambda p, q: p * q)

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
        y = tf.reduce_mean(x.value, axis=self._reduce_axes(x, axes), keepdims=True)
        return _Lowered(y, x.perm, x.shape)

    def _op_GlobalAveragePool(self, tf, node, inputs, a):
        x = inputs[0]
        return _Lowered(tf.reduce_mean(x.value, axis=self._reduce_axes(x, [2, 3]), keepdims=True), x.perm, x.shape)

    def _op_Transpose(self, tf, node, inputs, a):
        x = inputs[0]
        p = a["perm"]
        # new logical axis j = old logical axis p[j]; the data stays where it is.
        inv = {old: new for new, old in enumerate(p)}
        return _Lowered(x.value, [inv[q] for q in x.perm], [x.shape[q] for q in p])

    def _reshape(self, tf, x: _Lowered, target: list[int]):
        src = list(x.shape)
        if -1 in target:
            known = int(np.prod([t for t in target if t != -1]))
            target = [int(np.prod(src)) // known if t == -1 else t for t in target]
        if x.is_const:
            return _Lowered(x.value.reshape(target), None, target)
        # NCHW image -> grouped channel view (N, a, b, H*W): physically (N, H*W, a, b).
        if x.perm == NHWC and len(target) == 4 and target[0] == src[0] and target[1] * target[2] == src[1] and target[3] == src[2] * src[3]:
            return _Lowered(tf.reshape(x.value, [target[0], target[3], target[1], target[2]]), (0, 3, 1, 2), target)
        # grouped view -> another grouped view of the same pixels (two shuffles in a row, merged
        # by onnxsim): interleave if the layout says so, then split the channels anew.
        if len(src) == 4 and len(target) == 4 and src[3] == target[3] and src[1] * src[2] == target[1] * target[2] \
                and x.perm in ((0, 3, 1, 2), (0, 3, 2, 1)):
            v = x.value if x.perm == (0, 3, 1, 2) else tf.transpose(x.value, [0, 1, 3, 2])
            return _Lowered(tf.reshape(v, [target[0], target[3], target[1], target[2]]), (0, 3, 1, 2), target)
        # grouped view (N, a, b, HW) stored (N, HW, a, b) -> NCHW image stored NHWC.
        if len(src) == 4 and len(target) == 4 and src[1] * src[2] == target[1] and src[3] == target[2] * target[3]:
            if x.perm == (0, 3, 1, 2):
                return _Lowered(tf.reshape(x.value, [target[0], target[2], target[3], target[1]]), NHWC, target)
            if x.perm == (0, 3, 2, 1):  # after a relabelled shuffle transpose: interleave for real
                v = tf.transpose(x.value, [0, 1, 3, 2])
                return _Lowered(tf.reshape(v, [target[0], target[2], target[3], target[1]]), NHWC, target)
        # (N, C, 1, 1) -> (N, C): a flatten of a pooled tensor.
        if len(target) == 2 and x.perm == NHWC and src[2] == src[3] == 1:
            return _Lowered(tf.reshape(x.value, target), None, target)
        log.warning("generic reshape %s -> %s with layout %s: transposes inserted", src, target, x.perm)
        logical = self._as_perm(tf, x, tuple(range(len(src))))
        y = tf.reshape(logical, target)
        if len(target) == 4:
            return _Lowered(tf.transpose(y, list(NHWC)), NHWC, target)
        return _Lowered(y, None, target)

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
        rank = len(x.shape)
        # Explicit sizes: XNNPACK does not delegate a SLICE whose size holds -1.
        begin, size = [0] * rank, [x.shape[x.perm[i]] for i in range(rank)]
        for st, en, ax in zip(starts, ends, axes):
            ax %= rank
            dim = x.shape[ax]
            st = max(0, st + dim if st < 0 else min(st, dim))
            en = max(0, en + dim if en < 0 else min(en, dim))
            phys = x.perm.index(ax)
            begin[phys], size[phys] = st, en - st
        if x.is_const:
            raise NotImplementedError("Slice of a constant")
        return _Lowered(tf.slice(x.value, begin, size), x.perm, x.shape)

    def _op_Concat(self, tf, node, inputs, a):
        ref = next(t for t in inputs if not t.is_const)
        axis = int(a["axis"]) % len(ref.shape)
        values = [self._as_perm(tf, t, ref.perm) for t in inputs]
        return _Lowered(tf.concat(values, axis=ref.perm.index(axis)), ref.perm, ref.shape)

    def _op_Split(self, tf, node, inputs, a):
        x = inputs[0]
        axis = int(a.get("axis", 0)) % len(x.shape)
        if len(inputs) > 1 and inputs[1] is not None:
            sizes = [int(s) for s in inputs[1].value.tolist()]
        elif "split" in a:
            sizes = list(a["split"])
        else:
            n = len(node.output)
            sizes = [x.shape[axis] // n] * n
        # Equal parts as SPLIT (XNNPACK runs it); SPLIT_V only when sizes differ.
        split = len(sizes) if len(set(sizes)) == 1 else sizes
        parts = tf.split(x.value, split, axis=x.perm.index(axis))
        return [_Lowered(p, x.perm, x.shape) for p in parts]

    def _op_Gemm(self, tf, node, inputs, a):
        x, b = inputs[0], inputs[1]
        c = inputs[2] if len(inputs) > 2 else None
        if a.get("transA", 0) or a.get("alpha", 1.0) != 1.0 or a.get("beta", 1.0) != 1.0:
            raise NotImplementedError("Gemm with transA/alpha/beta is not used by MicroNet")
        w = b.value.T if a.get("transB", 0) else b.value
        xv = self._as_perm(tf, x, (0, 1))
        y = tf.matmul(xv, w.astype(np.float32))
        if c is not None:
            y = y + c.value.astype(np.float32)
        return _Lowered(y, None, [x.shape[0], w.shape[1]])

    def _op_Identity(self, tf, node, inputs, a):
        return inputs[0]
