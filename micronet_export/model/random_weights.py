"""Random but realistic MicroNet weights, for benchmarks and tests where no checkpoint exists.

The official initialisation gives near-zero activations (BatchNorm statistics of 0 and 1 on
untrained convs), which says nothing about a trained network. These helpers draw weights the
way ``shared/reference`` documents for its state_dicts (Linear N(0, 0.2^2), BatchNorm affine
U(0.7, 1.3) / N(0, 0.1^2)) and re-estimate BatchNorm statistics on real photos, so every path
carries signal of a realistic size.
"""

from __future__ import annotations

import numpy as np
import torch


_BATCHNORMS = (torch.nn.BatchNorm2d, torch.nn.BatchNorm1d)


def _draw_reference_affine(m: torch.nn.Module, g: torch.Generator) -> None:
    """The reference state_dicts' Linear N(0, 0.2^2) (bias N(0, 0.05^2)) and BatchNorm affine."""
    if isinstance(m, torch.nn.Linear):
        m.weight.normal_(0, 0.2, generator=g)
        m.bias.normal_(0, 0.05, generator=g)
    elif isinstance(m, _BATCHNORMS):
        m.weight.uniform_(0.7, 1.3, generator=g)
        m.bias.normal_(0, 0.1, generator=g)


def randomize(model: torch.nn.Module, seed: int) -> torch.nn.Module:
    """Non-degenerate random weights everywhere, BatchNorm statistics included (eval mode)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, torch.nn.Conv2d):
                m.weight.normal_(0, (2.0 / (m.weight[0].numel())) ** 0.5, generator=g)
            _draw_reference_affine(m, g)
            if isinstance(m, _BATCHNORMS):
                m.running_mean.normal_(0, 0.1, generator=g)
                m.running_var.uniform_(0.5, 2.0, generator=g)
    return model


def recalibrate_bn(model: torch.nn.Module, images) -> torch.nn.Module:
    """BatchNorm statistics re-estimated on ``images`` (cumulative average, one batch), so
    random weights give normalised, well-conditioned activations."""
    for m in model.modules():
        if isinstance(m, _BATCHNORMS):
            m.reset_running_stats()
            m.momentum = None
    model.train()
    with torch.no_grad():
        model(torch.as_tensor(images))
    return model.eval()


def realistic_weights(model: torch.nn.Module, images: np.ndarray, seed: int = 0) -> torch.nn.Module:
    """Official-init convs, reference-style Linear and BatchNorm affine, BatchNorm statistics
    from ``images``: the recipe of the reference state_dicts, for variants that have none."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in model.modules():
            _draw_reference_affine(m, g)
    return recalibrate_bn(model, images)
