"""MACs per conv / FC op counted from the artifact, and which of them run in int8."""

from __future__ import annotations

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from micronet_export.int8.mac_share import onnx_mac_share


def _conv_gemm_model(quantized_conv: bool) -> onnx.ModelProto:
    """Conv 3->8 (3x3, pad 1) on 8x8, global pool, Gemm 8->5 (transB)."""
    w = numpy_helper.from_array(np.ones((8, 3, 3, 3), np.float32), "w")
    fc = numpy_helper.from_array(np.ones((5, 8), np.float32), "fc")
    nodes = []
    conv_weight = "w"
    inits = [fc]
    if quantized_conv:
        inits += [numpy_helper.from_array(np.ones((8, 3, 3, 3), np.int8), "w_q"),
                  numpy_helper.from_array(np.array(0.1, np.float32), "w_s")]
        nodes.append(helper.make_node("DequantizeLinear", ["w_q", "w_s"], ["w_dq"]))
        conv_weight = "w_dq"
    else:
        inits.append(w)
    nodes += [helper.make_node("Conv", ["x", conv_weight], ["c"], pads=[1, 1, 1, 1]),
              helper.make_node("GlobalAveragePool", ["c"], ["p"]),
              helper.make_node("Flatten", ["p"], ["f"]),
              helper.make_node("Gemm", ["f", "fc"], ["y"], transB=1)]
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 8, 8])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 5])], inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])


CONV_MACS = 8 * 8 * 8 * (3 * 3 * 3)  # output elements x weights per output channel
GEMM_MACS = 5 * 8


def test_float_model_counts_every_mac_and_none_int8():
    share = onnx_mac_share(_conv_gemm_model(quantized_conv=False))
    assert (share.total_macs, share.int8_macs, share.total_ops, share.int8_ops) == (CONV_MACS + GEMM_MACS, 0, 2, 0)


def test_a_dequantized_weight_makes_its_conv_int8():
    share = onnx_mac_share(_conv_gemm_model(quantized_conv=True))
    assert (share.total_macs, share.int8_macs, share.int8_ops) == (CONV_MACS + GEMM_MACS, CONV_MACS, 1)
    assert abs(share.fraction - CONV_MACS / (CONV_MACS + GEMM_MACS)) < 1e-12
