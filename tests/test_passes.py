"""The MicroNet ONNX passes: each rewrite exact on a small hand-made graph, the optimized M0/M1
graphs equal to PyTorch on the reference inputs, new nodes inside their module's scope, and
the TFLite target's graph converted to the same TFLite graph as the plain export."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
import torch

from micronet_export import create_model
from micronet_export.int8.units import module_path
from micronet_export.model.shift import shift_channels, shuffle_channels
from micronet_export.onnx_export import export_onnx, summarize_graph
from micronet_export.passes import optimize
from micronet_export.passes.activations import clip_scales_folded, hard_swish_as_op
from micronet_export.passes.channel_scale import channel_scales_as_batchnorm
from micronet_export.onnx_shapes import tensor_shapes
from micronet_export.passes.channel_gather import channel_permutations
from micronet_export.passes.fold_gather import gathers_folded_into_convs
from micronet_export.passes.pixel_fc import pixel_fcs_as_gemm
from micronet_export.passes.pooling import spatial_means_as_pooling
from micronet_export.passes.separable import separable_pairs_composed
from micronet_export.runtimes import onnx_session, run_onnx, run_torch

from conftest import REFERENCE_VARIANTS, reference_checkpoint

# A rewrite only reorders float32 sums: a few ulps of the largest logit (the composed stem
# sums 9 products where the pair summed 3 and 3).
REWRITE_MAX_ABS_REL = 1e-5
# The optimized graph against PyTorch: the export's fp32 parity bound.
FP32_MAX_ABS_REL = 1e-4


def _onnx(module: torch.nn.Module, shape, tmp_path) -> onnx.ModelProto:
    path = tmp_path / "m.onnx"
    torch.onnx.export(module.eval(), torch.randn(*shape), path, input_names=["input"], output_names=["logits"],
                      opset_version=17, dynamo=False)
    return onnx.load(path)


def _max_abs_rel(a: onnx.ModelProto, b: onnx.ModelProto, x: np.ndarray) -> float:
    want = run_onnx(onnx_session(a.SerializeToString()), x)
    got = run_onnx(onnx_session(b.SerializeToString()), x)
    return float(np.abs(got - want).max() / np.abs(want).max())


class _ShuffleShift(torch.nn.Module):
    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.conv = torch.nn.Conv2d(12, 12, 1, groups=3)

    def forward(self, x):
        y = shuffle_channels(self.conv(x), 3)
        return y * 0.5 + shift_channels(y, 4) * torch.relu(y).mean((2, 3), keepdim=True)


def test_view_chains_become_one_gather_each(tmp_path):
    graph = _onnx(_ShuffleShift(), (1, 12, 6, 6), tmp_path)
    assert {"Transpose", "Slice", "Concat"} <= {n.op_type for n in graph.graph.node}
    out, made = channel_permutations(graph)
    ops = [n.op_type for n in out.graph.node]
    assert made == 2 and ops.count("Gather") == 2
    assert not {"Transpose", "Slice", "Concat", "Reshape"} & set(ops)
    x = np.random.default_rng(0).standard_normal((2, 12, 6, 6)).astype(np.float32)
    assert _max_abs_rel(graph, out, x) == 0.0  # a Gather copies exactly what the views copied


class _SeparablePair(torch.nn.Module):
    """A (3,1) stride-(2,1) conv, then a (1,3) depthwise conv with a channel multiplier and
    stride (1,2), both with biases (folded BatchNorm) large enough that a wrong border shows.
    ``first_groups`` 1 is the stem's shape; ``first_groups == inputs`` makes the first conv
    depthwise with a multiplier too (MicroNet's blocks 1-3)."""

    def __init__(self, inputs: int, middle: int, outputs: int, first_groups: int, seed: int):
        super().__init__()
        torch.manual_seed(seed)
        self.a = torch.nn.Conv2d(inputs, middle, (3, 1), (2, 1), (1, 0), groups=first_groups)
        self.b = torch.nn.Conv2d(middle, outputs, (1, 3), (1, 2), (0, 1), groups=middle)
        with torch.no_grad():
            self.a.bias.uniform_(0.5, 1.5)

    def forward(self, x):
        return self.b(self.a(x))


def _composed(pair: _SeparablePair, tmp_path, seed: int):
    """(graph, composed graph, number of pairs composed, max abs error relative to the output)."""
    inputs = pair.a.in_channels
    graph = _onnx(pair, (1, inputs, 16, 16), tmp_path)
    out, made = separable_pairs_composed(graph, tensor_shapes(graph))
    x = np.random.default_rng(seed).standard_normal((2, inputs, 16, 16)).astype(np.float32)
    return out, made, _max_abs_rel(graph, out, x)


def test_separable_pair_composes_exactly_borders_included(tmp_path):
    out, made, error = _composed(_SeparablePair(3, 2, 4, first_groups=1, seed=1), tmp_path, seed=1)
    assert made == 1 and [n.op_type for n in out.graph.node] == ["Conv", "Add"]
    assert [d for d in out.graph.node[0].attribute if d.name == "kernel_shape"][0].ints == [3, 3]
    assert error <= REWRITE_MAX_ABS_REL


def test_grouped_pair_on_few_channels_composes_into_one_dense_conv(tmp_path):
    # MicroNet's first block after the stem: multiplier 2 twice on 4 channels
    out, made, error = _composed(_SeparablePair(4, 8, 16, first_groups=4, seed=3), tmp_path, seed=4)
    assert made == 1 and [n.op_type for n in out.graph.node] == ["Conv", "Add"]
    conv = out.graph.node[0]
    assert [a.i for a in conv.attribute if a.name == "group"] == [1]
    weights = {i.name: onnx.numpy_helper.to_array(i) for i in out.graph.initializer}
    assert weights[conv.input[1]].shape == (16, 4, 3, 3)
    assert error <= REWRITE_MAX_ABS_REL


def test_wider_multiplier_pair_becomes_one_repeat_and_one_depthwise_conv(tmp_path):
    out, made, error = _composed(_SeparablePair(8, 16, 32, first_groups=8, seed=3), tmp_path, seed=11)
    assert made == 1 and [n.op_type for n in out.graph.node] == ["Gather", "Conv", "Add"]
    assert [a.i for a in out.graph.node[1].attribute if a.name == "group"] == [32]  # plain depthwise
    assert error <= REWRITE_MAX_ABS_REL


class _Activations(torch.nn.Module):
    """Dynamic Shift-Max's scaled hard sigmoid after a 1x1 conv, and h-swish written out the way
    model/blocks.py writes it."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(5)
        self.conv = torch.nn.Conv2d(6, 8, 1)

    def forward(self, x):
        gate = torch.clamp(self.conv(x), 0.0, 1.0) * 2.5
        total = x.sum()
        return gate * x.mean() + total * (torch.clamp(total + 3.0, 0.0, 6.0) / 6.0)


def test_clip_scale_and_hard_swish_fold_exactly(tmp_path):
    graph = _onnx(_Activations(), (1, 6, 5, 5), tmp_path)
    scaled, scales = clip_scales_folded(graph)
    swished, swishes = hard_swish_as_op(scaled)
    ops = [n.op_type for n in swished.graph.node]
    assert scales == 1 and swishes == 1
    assert ops.count("Mul") == len([n for n in graph.graph.node if n.op_type == "Mul"]) - 2 and "Div" not in ops
    x = np.random.default_rng(6).standard_normal((2, 6, 5, 5)).astype(np.float32)
    assert _max_abs_rel(graph, swished, x) <= REWRITE_MAX_ABS_REL


class _ConvShuffle(torch.nn.Module):
    def __init__(self):
        super().__init__()
        torch.manual_seed(2)
        self.conv = torch.nn.Conv2d(3, 8, 3, padding=1)

    def forward(self, x):
        return torch.relu(shuffle_channels(self.conv(x), 2)).mean((2, 3), keepdim=True)


def test_permutation_after_a_dense_conv_moves_into_its_weights(tmp_path):
    graph = _onnx(_ConvShuffle(), (1, 3, 8, 8), tmp_path)
    gathered, _ = channel_permutations(graph)
    folded, made = gathers_folded_into_convs(gathered)
    pooled, pools = spatial_means_as_pooling(folded)
    assert made == 1 and pools == 1
    assert [n.op_type for n in pooled.graph.node] == ["Conv", "Relu", "GlobalAveragePool"]
    x = np.random.default_rng(2).standard_normal((2, 3, 8, 8)).astype(np.float32)
    assert _max_abs_rel(graph, pooled, x) <= REWRITE_MAX_ABS_REL


@pytest.mark.parametrize("variant", REFERENCE_VARIANTS)
def test_optimized_graph_matches_pytorch_and_keeps_module_scopes(variant, reference_inputs):
    model = create_model(variant, checkpoint=reference_checkpoint(variant))
    plain = export_onnx(model)
    optimized = optimize(plain, "onnxruntime")
    # Every shuffle and shift is one Gather; the stem pair is one conv; every hard sigmoid's scale
    # is folded and h-swish is one node (the avgpool's and the classifier's).
    assert optimized.applied["clip_scales_folded"] >= 14 and optimized.applied["hard_swish_as_op"] == 3
    assert optimized.applied["channel_scales_as_batchnorm"] >= 40 and optimized.applied["pixel_fcs_as_gemm"] == 15
    assert optimized.applied["channel_permutations"] >= 15 and optimized.applied["separable_pairs_composed"] >= 1
    summary = summarize_graph(optimized.model)
    assert summary.gather_nodes == summary.channel_gathers and summary.max_rank <= 4
    assert len(optimized.model.graph.node) < 0.7 * len(plain.graph.node)
    x = reference_inputs.numpy()
    want = run_torch(model, x)
    got = run_onnx(onnx_session(optimized.model.SerializeToString()), x)
    assert np.abs(got - want).max() <= FP32_MAX_ABS_REL * np.abs(want).max()
    plain_nodes = {n.name for n in plain.graph.node}
    for node in optimized.model.graph.node:
        if node.name not in plain_nodes:  # made by a pass: named inside the module it replaces
            assert module_path(node.name), node.name


def test_none_keeps_the_plain_export():
    plain = export_onnx(create_model("m0"), input_size=64)
    assert optimize(plain, "onnxruntime", "none").model is plain
    with pytest.raises(ValueError, match="optimization mode"):
        optimize(plain, "onnxruntime", "fast")


@pytest.mark.slow  # two TFLite conversions; tests/test_tflite_graph_snapshot.py checks M0-M3 in the slow tier too
def test_tflite_target_graph_lowers_to_the_same_tflite_graph():
    from micronet_export.tflite_export import convert
    from micronet_export.tflite_inspect import op_histogram

    plain = export_onnx(create_model("m0", checkpoint=reference_checkpoint("m0")), input_size=64)
    optimized = optimize(plain, "tflite")
    for ort_only in ("separable_pairs_composed", "clip_scales_folded", "hard_swish_as_op",
                     "channel_scales_as_batchnorm", "pixel_fcs_as_gemm"):  # passes/cost.py
        assert ort_only not in optimized.applied
    assert op_histogram(convert(optimized.model, "fp32").flatbuffer) == op_histogram(convert(plain, "fp32").flatbuffer)


class _ChannelProducts(torch.nn.Module):
    """Dynamic Shift-Max's products: one coefficient vector cut by a Split into per-channel
    factors of a 7x7 map, plus one factor that something else reads too."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(7)
        self.fc = torch.nn.Conv2d(16, 32, 1)

    def forward(self, x):
        coef = torch.sigmoid(self.fc(x.mean((2, 3), keepdim=True)))
        a, b = torch.split(coef, 16, dim=1)
        lone = x.amax((2, 3), keepdim=True)
        return torch.maximum(x * a, x * b) + x * lone + lone


def test_channel_products_become_exact_batchnorm_scales(tmp_path):
    graph = _onnx(_ChannelProducts(), (1, 16, 7, 7), tmp_path)
    out, made = channel_scales_as_batchnorm(graph, tensor_shapes(graph))
    ops = [n.op_type for n in out.graph.node]
    assert made == 3 and ops.count("BatchNormalization") == 3 and "Mul" not in ops
    assert ops.count("Reshape") == 2  # the Split's input once, the lone factor once
    onnx.checker.check_model(out, full_check=True)
    x = np.random.default_rng(8).standard_normal((1, 16, 7, 7)).astype(np.float32)
    assert _max_abs_rel(graph, out, x) == 0.0  # (x - 0) / sqrt(1 + 0) * a + 0 is x * a


class _PooledFCs(torch.nn.Module):
    """Dynamic Shift-Max's coefficient path: pooled vector, 1x1 conv, ReLU, 1x1 conv, clamp."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(9)
        self.fc1, self.fc2 = torch.nn.Conv2d(16, 4, 1), torch.nn.Conv2d(4, 16, 1)

    def forward(self, x):
        coef = torch.clamp(self.fc2(torch.relu(self.fc1(x.mean((2, 3), keepdim=True)))), 0.0, 1.0) - 0.5
        return x * coef


def test_pooled_fcs_become_gemms_on_the_flat_vector(tmp_path):
    graph = _onnx(_PooledFCs(), (1, 16, 5, 5), tmp_path)
    pooled, _ = spatial_means_as_pooling(graph)
    out, made = pixel_fcs_as_gemm(pooled)
    ops = [n.op_type for n in out.graph.node]
    assert made == 1 and ops.count("Gemm") == 2 and "Conv" not in ops
    assert ops.count("Flatten") == 1 and ops.count("Reshape") == 1  # back to (1, 16, 1, 1) for the Mul
    onnx.checker.check_model(out, full_check=True)
    x = np.random.default_rng(10).standard_normal((1, 16, 5, 5)).astype(np.float32)
    assert _max_abs_rel(graph, out, x) <= REWRITE_MAX_ABS_REL
