"""Quantization-aware distillation: the folding is exact, the simulation rounds where int8
rounds, and fine-tuning lowers the simulated int8 error."""

from __future__ import annotations

import numpy as np
import torch

from conftest import SHIPPED, rel_l2
from micronet_export.images import load_folder, project_path
from micronet_export.int8.distill import DistillOptions, distill, fold_batchnorm, official_state_dict
from micronet_export.int8.fake_quant import ActivationQuantizer, WeightQuantizer, simulate_int8
from micronet_export.model import create_model
from micronet_export.model.checkpoint import read_state_dict

FASHION_SIZE = 64
PLAIN = project_path("tests/data/fashion_mnist_plain/micronet_m0_fashion_mnist_plain.pth")


def fashion_photos(count: int) -> np.ndarray:
    return load_folder(project_path("models/fashion_mnist_calibration"), input_size=FASHION_SIZE, limit=count).arrays


def test_folded_state_dict_loads_officially_and_computes_the_same(tmp_path):
    model = create_model("m0", checkpoint=SHIPPED, num_classes=None)
    folded, folds = fold_batchnorm(model)
    assert len(folds) > 20  # every conv of M0 is followed by a BatchNorm
    state = official_state_dict(dict(folded.named_parameters()), read_state_dict(SHIPPED), folds)
    torch.save(state, tmp_path / "folded.pth")
    reloaded = create_model("m0", checkpoint=tmp_path / "folded.pth", num_classes=None)
    x = torch.from_numpy(fashion_photos(8))
    with torch.no_grad():
        # float32 folding: a few ulps per layer over ~30 layers
        assert rel_l2(reloaded(x), model(x)) < 1e-5
        assert rel_l2(folded(x), model(x)) < 1e-5


def test_weight_quantizer_rounds_each_channel_to_its_own_step():
    weight = torch.randn(6, 4, 3, 3) * torch.tensor([1e-3, 1e-2, 0.1, 1.0, 10.0, 100.0])[:, None, None, None]
    rounded = WeightQuantizer()(weight)
    step = weight.abs().amax(dim=(1, 2, 3)) / 127
    error = (rounded - weight).abs().amax(dim=(1, 2, 3))
    assert torch.all(error <= step / 2 * (1 + 1e-5))
    levels = rounded / step[:, None, None, None]
    assert torch.allclose(levels, levels.round(), atol=1e-3)  # on the integer grid


def test_activation_quantizer_keeps_zero_exact_and_rounds_within_half_a_step():
    quantizer = ActivationQuantizer()
    x = torch.linspace(-1.0, 3.0, 1001)
    quantizer.observing = True
    quantizer(x)
    quantizer.observing = False
    step = 4.0 / 255
    got = quantizer(torch.cat([x, torch.zeros(1)]))
    assert got[-1].item() == 0.0
    assert (got[:-1] - x).abs().max().item() <= step / 2 + 1e-6


def test_simulation_without_quantizers_is_the_float_model_and_with_them_differs():
    model = create_model("m0", checkpoint=SHIPPED, num_classes=None)
    folded, _ = fold_batchnorm(model)
    photos = torch.from_numpy(fashion_photos(16))
    simulation = simulate_int8(folded, photos[:2])
    assert len(simulation.weights) >= 40 and len(simulation.activations) > len(simulation.weights)
    simulation.observe_ranges(photos)
    with torch.no_grad():
        reference = model(photos)
    simulation.set_enabled(activations=False, weights=False)
    assert rel_l2(simulation.logits(photos), reference) < 1e-5
    simulation.set_enabled(activations=True, weights=True)
    # 8-bit rounding at ~150 points: well above float error, well below a broken model
    assert 1e-3 < rel_l2(simulation.logits(photos), reference) < 0.5


def test_distillation_lowers_the_simulated_int8_error():
    # trained without activation noise: plain int8 loses a quarter of its top-1 agreement
    model = create_model("m0", checkpoint=PLAIN, num_classes=None)
    photos = fashion_photos(32)
    result = distill(model, photos, DistillOptions(steps=30, batch_size=8, learning_rate=1e-4, recalibrate_every=10))
    assert len(result.losses) == 30
    assert result.after.kl < 0.6 * result.before.kl, (result.before, result.after)
    reloaded = create_model("m0", num_classes=10)
    reloaded.load_state_dict(result.state_dict)  # official key layout, strict


class _ConvShuffleReLU6(torch.nn.Module):
    """conv -> channel shuffle -> ReLU6, as MicroNet's stem: the exporters fold the shuffle
    into the conv and the runtimes fuse the ReLU6, so int8 rounds once, after the ReLU6."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = torch.nn.Conv2d(3, 8, 3, padding=1)

    def forward(self, x):
        y = self.conv(x)
        n, c, h, w = y.shape
        y = y.reshape(n, 2, c // 2, h, w).transpose(1, 2).reshape(n, c, h, w)
        return torch.nn.functional.relu6(y)


def test_simulation_rounds_a_conv_once_after_its_relu_across_a_channel_shuffle():
    torch.manual_seed(0)
    model = _ConvShuffleReLU6().eval()
    with torch.no_grad():
        model.conv.bias.fill_(3.0)  # most outputs inside (0, 6), some far above: a wide pre-ReLU range
        model.conv.weight.mul_(20.0)
    x = torch.randn(4, 3, 8, 8)
    simulation = simulate_int8(model, x[:2])
    assert len(simulation.activations) == 2  # the input and the ReLU6 output, not the conv output
    simulation.observe_ranges(x)
    simulation.set_enabled(activations=True, weights=False)
    with torch.no_grad():
        reference = model(x)
    x_rounded = simulation.activations[-1](x)  # the input quantizer, observed on x
    with torch.no_grad():
        exact = model(x_rounded)
    # one rounding of [0, 6] on 255 steps: at most half a step from the float result
    assert (simulation.logits(x) - exact).abs().max().item() <= 6.0 / 255 / 2 + 1e-5
    assert (exact - reference).abs().max().item() > 0  # the input rounding is real


def test_int8_distill_fine_tunes_only_the_int8_artifacts_and_says_so(tmp_path):
    from micronet_export.export import ExportOptions, export
    from micronet_export.metadata import read_metadata
    from micronet_export.output import artifact_names
    from micronet_export.runtimes import run_tflite, run_torch

    names = artifact_names("m0")
    runs = {}
    for steps in (0, 60):
        out = tmp_path / f"steps{steps}"
        report = export(ExportOptions(variant="m0", format="tflite", int8=True, checkpoint=PLAIN, output=out,
                                      int8_fallback="none", int8_distill_steps=steps, per_layer=False,
                                      fail_on_parity=False))
        runs[steps] = (out, report)
    (plain_dir, plain_report), (tuned_dir, tuned_report) = runs[0], runs[60]
    # fp32 artifacts keep the checkpoint's weights: byte for byte what a run without it writes
    assert (tuned_dir / names["onnx_fp32"]).read_bytes() == (plain_dir / names["onnx_fp32"]).read_bytes()
    meta = read_metadata(tuned_dir / names["tflite_int8"])
    assert "distillation" in meta["micronet.int8_weights"] and "60 steps" in meta["micronet.int8_weights"]
    assert "micronet.int8_weights" not in read_metadata(plain_dir / names["tflite_int8"])
    assert "micronet.int8_weights" not in read_metadata(tuned_dir / names["onnx_fp32"])
    record = tuned_report.as_dict()["int8_weights"]
    assert record["steps"] == 60 and record["teacher_sha256"] == tuned_report.checkpoint["sha256"]
    assert "int8_weights" not in plain_report.as_dict()
    # the learned ranges reach the TFLite model: most rounding points found their tensor
    # (the rest, e.g. a multiply the converter folds into a depthwise conv, have none)
    summary = next(a for a in tuned_report.artifacts if a.path.endswith(".tflite")).int8
    assert record["learned_ranges"] > 100 and summary["learned_ranges_applied"] >= record["learned_ranges"] // 2, summary.get("learned_ranges_applied")
    # judged against the original fp32 network on photos neither run trained or calibrated on
    photos = load_folder(project_path("models/fashion_mnist_calibration"), input_size=FASHION_SIZE).arrays[-40:]
    reference = run_torch(create_model("m0", checkpoint=PLAIN, num_classes=None), photos)

    def kl(path):
        got = torch.from_numpy(run_tflite(path, photos)).double()
        want = torch.from_numpy(reference).double()
        return torch.nn.functional.kl_div(got.log_softmax(1), want.log_softmax(1), log_target=True,
                                          reduction="batchmean").item()

    plain_kl, tuned_kl = kl(plain_dir / names["tflite_int8"]), kl(tuned_dir / names["tflite_int8"])
    # the real LiteRT int8 model gets closer to fp32, not just the simulation (measured: 0.42x)
    assert tuned_kl < 0.6 * plain_kl, (plain_kl, tuned_kl)
