"""The lowering's channel-order algebra (pure numpy) and bookkeeping, on small hand-made ONNX
graphs and on M0."""

from __future__ import annotations

import numpy as np
import onnx
import torch

from micronet_export.model.shift import shift_channels, shuffle_channels
from micronet_export.runtimes import run_tflite
from micronet_export.lowering import Lowering
from micronet_export.channel_order import chain_order, grid_roll, relabelled, runs
from micronet_export.tflite_export import convert
from micronet_export.tflite_inspect import op_histogram


def test_runs_andgrid_roll():
    assert runs(np.array([2, 3, 4, 0, 1])) == [(2, 3), (0, 2)]
    # Dynamic Shift-Max's shift with g=4 groups of 3: groups roll by one, channels inside too.
    g, gc = 4, 3
    src = np.array([((i // gc + 1) % g) * gc + (i % gc + 1) % gc for i in range(g * gc)])
    assert grid_roll(src) == (4, 3, 1, 1)
    assert grid_roll(np.array([0, 2, 1, 3])) is None  # a transpose, not a roll


def _shift_src(g: int, gc: int) -> np.ndarray:
    return np.array([((i // gc + 1) % g) * gc + (i % gc + 1) % gc for i in range(g * gc)])


def test_chain_order_makes_the_shift_a_roll():
    # A conv free to emit any order: interleaving the shift's cycles turns it into a roll by
    # the number of cycles (gcd(g, gc)), two runs, whatever g and gc.
    for g, gc in ((4, 16), (8, 12), (2, 4), (12, 32)):
        src, order = _shift_src(g, gc), np.arange(g * gc)
        new = chain_order(order, src, block=g * gc)
        assert sorted(new.tolist()) == list(range(g * gc))
        moved = relabelled(src, order, new)
        d = np.gcd(g, gc)
        assert np.array_equal(moved, (np.arange(g * gc) + d) % (g * gc)), (g, gc)
        assert len(runs(moved)) == 2
    # A grouped conv keeps its groups in place: each group becomes one run, but the last, which
    # is rotated (3 runs instead of 2 per group).
    src, order = _shift_src(4, 16), np.arange(64)
    new = chain_order(order, src, block=16)
    for b in range(4):
        assert set(new[b * 16:(b + 1) * 16]) == set(range(b * 16, (b + 1) * 16))
    assert len(runs(relabelled(src, order, new))) == 3 < len(runs(src))
    # A copy that splits a block cannot be helped.
    assert chain_order(order, np.roll(np.arange(64), 3), block=16) is None


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
    flatbuffer = convert(graph, "fp32").flatbuffer
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

    def lowered(lowering):
        lowering.trace()
        return lowering

    graph = export_onnx(create_model("m0"))
    stats = lowered(Lowering(graph, int8_friendly=True)).stats
    # 15 Dynamic Shift-Max shifts materialised, every shuffle absorbed by a conv.
    assert stats.materialised_reorders == 15
    assert stats.absorbed_reorders >= 9
    # Shuffles that mix groups make 9 grouped 1x1 convs dense: the MAdds this costs are counted.
    assert stats.densified_convs == 9 and 4_000_000 < stats.extra_macs < 6_000_000
    # The 6 shifts on 8-48 channels are permutation convs; the channel repeats of the stem and of
    # the first block's first conv are emitted by the stem's conv (no CONCATENATION).
    assert stats.permutation_convs == 6
    assert stats.producer_repeats == 2

    # Planned: 8 convs emit orders that turn the shifts on 64-384 channels into 2-3 slices (the
    # three after depthwise convs inherit them). Two convs keep theirs: their channels reach a
    # shift through a channel-multiplier depthwise conv, which a new order would make costlier.
    planned = lowered(Lowering.planned(graph, int8_friendly=True))
    assert len(planned.plan.chosen_orders) == 8
    assert planned.stats.materialised_reorders == 15
    assert planned.stats.reorder_slices <= 20
    # One more dense conv: a shuffle now mixes the groups of the conv after a planned one.
    assert planned.stats.densified_convs == 10 and planned.stats.extra_macs < 6_000_000

    # fp32 also keeps 4 expanding convs grouped behind a permutation conv, and repeats few
    # channels with 1x1 convs: 2.4M MACs made dense instead of 5.5M.
    fp32 = lowered(Lowering.planned(graph, int8_friendly=False)).stats
    assert fp32.densified_convs == 7 and fp32.extra_macs < 2_500_000
    assert fp32.permutation_convs == 13
