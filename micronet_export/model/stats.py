"""Parameter and multiply-add counts, the way the MicroNet paper counts them.

Hook-based, batch 1: Conv2d ``out_h*out_w*out_c*(in_c/groups)*kh*kw``, Linear ``in*out``
(classifier and the Dynamic Shift-Max FCs reported separately). Dynamic Shift-Max's elementwise
products (``a*x + b*shift(x)`` per branch: 2 per element and branch) are reported separately too;
BN, activations, pooling and additions are not counted.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import torch
import torch.nn as nn

from micronet_export.model.blocks import DYShiftMax


@dataclass
class MAdds:
    conv: int = 0
    linear_classifier: int = 0
    linear_dynamic: int = 0
    dyshiftmax_elementwise: int = 0

    @property
    def conv_linear(self) -> int:
        return self.conv + self.linear_classifier + self.linear_dynamic

    @property
    def total(self) -> int:
        return self.conv_linear + self.dyshiftmax_elementwise

    def as_dict(self) -> dict[str, int]:
        return {**asdict(self), "conv_linear": self.conv_linear, "total": self.total}


def count_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


@torch.no_grad()
def count_madds(model: nn.Module, input_size: int = 224) -> MAdds:
    counts = MAdds()
    dynamic_linears = {id(m.fc[0]) for m in model.modules() if isinstance(m, DYShiftMax)}
    dynamic_linears |= {id(m.fc[2]) for m in model.modules() if isinstance(m, DYShiftMax)}
    hooks = []

    def on_conv(m: nn.Conv2d, _inp, out):
        kh, kw = m.kernel_size
        counts.conv += out.shape[2] * out.shape[3] * m.out_channels * (m.in_channels // m.groups) * kh * kw

    def on_shift_max(m: DYShiftMax, inp, _out):
        x = inp[0]
        counts.dyshiftmax_elementwise += x.shape[1] * x.shape[2] * x.shape[3] * m.exp

    def linear_madds(m: nn.Linear) -> int:
        return m.in_features * m.out_features

    for m in model.modules():
        if isinstance(m, nn.Conv2d):
            hooks.append(m.register_forward_hook(on_conv))
        elif isinstance(m, DYShiftMax):
            hooks.append(m.register_forward_hook(on_shift_max))
            # The export formulation runs the FCs as 1x1 convs on pooled features; count the
            # Linear weights directly so both formulations give the same number.
            counts.linear_dynamic += linear_madds(m.fc[0]) + linear_madds(m.fc[2])
        elif isinstance(m, nn.Linear) and id(m) not in dynamic_linears:
            counts.linear_classifier += linear_madds(m)
    was_training = model.training
    model.eval()
    try:
        model(torch.zeros(1, 3, input_size, input_size))
    finally:
        for h in hooks:
            h.remove()
        model.train(was_training)
    return counts
