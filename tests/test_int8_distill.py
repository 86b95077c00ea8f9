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
