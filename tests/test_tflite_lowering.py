"""The lowering's channel-order bookkeeping, on small hand-made ONNX graphs and on M0."""

from __future__ import annotations

import numpy as np
import onnx
import torch

from micronet_export.model.shift import shift_channels, shuffle_channels
from micronet_export.runtimes import run_tflite
from micronet_export.tflite_export import convert, op_histogram
from micronet_export.tflite_lowering import Lowering, _grid_roll, _runs


def test_runs_and_grid_roll():
    assert _runs(np.array([2, 3, 4, 0, 1])) == [(2, 3), (0, 2)]
    # Dynamic Shift-Max's shift with g=4 groups of 3: groups roll by one, channels inside too.
    g, gc = 4, 3
    src = np.array([((i // gc + 1) % g) * gc + (i % gc + 1) % gc for i in range(g * gc)])
    assert _grid_roll(src) == (4, 3, 1, 1)
    assert _grid_roll(np.array([0, 2, 1, 3])) is None  # a transpose, not a roll


class _ShuffleShiftConv(torch.nn.Module):
    """shuffle -> grouped 1x1 conv -> shift * coefficient: every reordering the lowering tracks."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.dw = torch.nn.Conv2d(4, 8, 3, padding=1, groups=4)  # channel multiplier 2
        self.conv = torch.nn.Conv2d(8, 12, 1, groups=2)
        self.coeff = torch.nn.Parameter(torch.randn(1, 12, 1, 1))

    def forward(self, x):
        y = shuffle_channels(self.dw(x), 4)
        y = self.conv(y)
        out = torch.relu(y * self.coeff + shift_channels(y, 4) * 0.5)
        return out.mean((2, 3), keepdim=True).flatten(1)  # (N, C) as MicroNet's logits


def _onnx(model, shape, path):
    torch.onnx.export(model, torch.randn(*shape), path, input_names=["input"], output_names=["logits"],
                      opset_version=17, dynamo=False)
    return onnx.load(path)


def test_reorders_become_weights_and_rolls_not_transposes(tmp_path):
    model = _ShuffleShiftConv().eval()
    graph = _onnx(model, (1, 4, 8, 8), tmp_path / "m.onnx")
    assert {n.op_type for n in graph.graph.node} >= {"Transpose", "Slice", "Concat"}
    flatbuffer = convert(graph, "fp32")
    ops = op_histogram(flatbuffer)
    assert "TRANSPOSE" not in ops and "GATHER" not in ops
    x = np.random.default_rng(0).standard_normal((2, 4, 8, 8)).astype(np.float32)
    with torch.no_grad():
        want = model(torch.from_numpy(x)).numpy()
    path = tmp_path / "m.tflite"
    path.write_bytes(flatbuffer)
    got = run_tflite(path, x)
    assert np.abs(got - want).max() <= 1e-5


def test_lowering_stats_on_m0(tmp_path):
    from micronet_export import create_model
    from micronet_export.onnx_export import export_onnx

    import tensorflow as tf
    lowering = Lowering(export_onnx(create_model("m0")), int8_friendly=True)
    tf.function(lowering.build(), input_signature=[tf.TensorSpec(lowering.input_shape_nhwc, tf.float32)]).get_concrete_function()
    stats = lowering.stats
    # 15 Dynamic Shift-Max shifts materialised, every shuffle absorbed by a conv.
    assert stats["materialised_reorders"] == 15
    assert stats["absorbed_reorders"] >= 9
    # Shuffles that mix groups make 9 grouped 1x1 convs dense: the MAdds this costs are counted.
    assert stats["densified_convs"] == 9 and 4_000_000 < stats["extra_macs"] < 6_000_000
