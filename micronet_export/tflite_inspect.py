"""What LiteRT makes of a .tflite: its ops as written, its XNNPACK partitions, its I/O."""

from __future__ import annotations

import collections
from pathlib import Path

import numpy as np

from micronet_export.quiet import quiet_native_output


def flatbuffer_utils():
    """TensorFlow's flatbuffer reader/writer for .tflite files (TensorFlow imported quietly)."""
    from micronet_export.quiet import import_tensorflow

    import_tensorflow()
    from tensorflow.lite.tools import flatbuffer_utils as utils

    return utils


def litert_interpreter(model: bytes | str | Path, threads: int = 1, *, xnnpack: bool = True):
    from ai_edge_litert.interpreter import Interpreter, OpResolverType

    kwargs = {"num_threads": threads}
    if not xnnpack:
        kwargs["experimental_op_resolver_type"] = OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES
    with quiet_native_output(stdout=False):
        if isinstance(model, (bytes, bytearray)):
            interp = Interpreter(model_content=bytes(model), **kwargs)
        else:
            interp = Interpreter(model_path=str(model), **kwargs)
        interp.allocate_tensors()
    return interp


def op_histogram(model: bytes | str | Path) -> dict[str, int]:
    """Ops of the model as written (before any delegate)."""
    interp = litert_interpreter(model, xnnpack=False)
    counts = collections.Counter(op["op_name"] for op in interp._get_ops_details())
    return dict(sorted(counts.items(), key=lambda kv: (-kv[1], kv[0])))


def delegation(model: bytes | str | Path) -> dict:
    """XNNPACK partitions and the ops left to the default kernels.

    LiteRT lists the nodes of the execution plan's graph after delegation: one DELEGATE node
    per XNNPACK partition plus the original nodes. The ops that still run on their own are
    those whose outputs are needed and not produced by a partition: walk back from the
    model outputs.
    """
    interp = litert_interpreter(model, xnnpack=True)
    ops = interp._get_ops_details()
    delegates = [op for op in ops if op["op_name"] == "DELEGATE"]
    produced_by_delegate = {int(t) for op in delegates for t in op["outputs"]}
    producer = {int(t): op for op in ops if op["op_name"] != "DELEGATE" for t in op["outputs"]}
    counted: set[int] = set()
    needed = [int(d["index"]) for d in interp.get_output_details()]
    needed += [int(t) for op in delegates for t in op["inputs"]]
    left, seen = [], set()
    while needed:
        t = needed.pop()
        if t in seen or t in produced_by_delegate or t not in producer:
            continue
        seen.add(t)
        op = producer[t]
        if op["index"] in counted:
            continue
        counted.add(op["index"])
        left.append(op["op_name"])
        needed.extend(int(i) for i in op["inputs"] if i >= 0)
    return {"xnnpack_partitions": len(delegates), "ops_outside_xnnpack": len(left),
            "ops_outside_xnnpack_by_type": dict(collections.Counter(left))}


def io_details(model: bytes | str | Path) -> dict:
    interp = litert_interpreter(model, xnnpack=False)

    def describe(d):
        scale, zero = d["quantization"]
        out = {"name": d["name"], "shape": [int(s) for s in d["shape"]], "dtype": np.dtype(d["dtype"]).name}
        if scale:
            out.update(scale=float(scale), zero_point=int(zero))
        return out

    return {"input": {**describe(interp.get_input_details()[0]), "layout": "NHWC"},
            "output": describe(interp.get_output_details()[0])}
