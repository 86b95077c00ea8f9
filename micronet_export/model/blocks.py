"""The few blocks MicroNet is made of.

Module nesting and indices follow the official ``backbone/micronet.py`` exactly (down to the
empty ``nn.Sequential`` placeholders), so an official state_dict loads with strict key
matching and no key map. Each block that moves channels computes in one of two formulations:

* ``"export"``: 4-D reshapes, slices and concatenations (no Gather, no 5-D tensor), and the
  Dynamic Shift-Max coefficient path as 1x1 convolutions on ``(N, C, 1, 1)`` with the
  hard-sigmoid affine folded into one scale and offset;
* ``"official"``: the official arithmetic (index gather, 5-D views, Linear layers), our own
  code, kept as the oracle for equivalence tests and as the naive baseline for benchmarks.
"""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from micronet_export.model.shift import (
    shift_channels,
    shift_channels_official,
    shuffle_channels,
    shuffle_channels_official,
)

FORMULATIONS = ("export", "official")


def make_divisible(v: float, divisor: int, min_value: int | None = None) -> int:
    """MobileNet's channel rounding, as the official ``_make_divisible``."""
    if min_value is None:
        min_value = divisor
    new_v = max(min_value, int(v + divisor / 2) // divisor * divisor)
    if new_v < 0.9 * v:
        new_v += divisor
    return new_v


class HSigmoid(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.relu6(x + 3.0) / 6.0


class HSwish(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * (F.relu6(x + 3.0) / 6.0)


class ChannelShuffle(nn.Module):
    """Parameter-free; official name kept so the module tree reads the same."""

    def __init__(self, groups: int) -> None:
        super().__init__()
        self.groups = groups
        self.formulation = "export"

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.formulation == "official":
            return shuffle_channels_official(x, self.groups)
        return shuffle_channels(x, self.groups)

    def extra_repr(self) -> str:
        return f"groups={self.groups}"


class SpatialSepConvSF(nn.Module):
    """Stem: (k,1) conv, BN, depthwise-grouped (1,k) conv, BN, channel shuffle."""

    def __init__(self, inp: int, oups: tuple[int, int], kernel_size: int, stride: int) -> None:
        super().__init__()
        oup1, oup2 = oups
        k = kernel_size
        self.conv = nn.Sequential(
            nn.Conv2d(inp, oup1, (k, 1), (stride, 1), (k // 2, 0), bias=False),
            nn.BatchNorm2d(oup1),
            nn.Conv2d(oup1, oup1 * oup2, (1, k), (1, stride), (0, k // 2), bias=False, groups=oup1),
            nn.BatchNorm2d(oup1 * oup2),
            ChannelShuffle(oup1),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(x)


class StemLayer(nn.Module):
    def __init__(self, inp: int, oup: int, stride: int, groups: tuple[int, int]) -> None:
        super().__init__()
        g1, g2 = groups
        if g1 * g2 == 2 * oup:
            # The official MaxGroupPooling branch; no released variant uses it.
            raise ValueError("stem with MaxGroupPooling is not part of MicroNet M0-M3")
        self.stem = nn.Sequential(SpatialSepConvSF(inp, groups, 3, stride), nn.ReLU6())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.stem(x)


class DepthSpatialSepConv(nn.Module):
    """Depthwise (k,1) conv with channel multiplier ``exp1``, BN, depthwise (1,k) conv x ``exp2``, BN."""

    def __init__(self, inp: int, expand: tuple[int, int], kernel_size: int, stride: int) -> None:
        super().__init__()
        exp1, exp2 = expand
        hidden = inp * exp1
        oup = hidden * exp2
        k = kernel_size
        self.conv = nn.Sequential(
            nn.Conv2d(inp, hidden, (k, 1), (stride, 1), (k // 2, 0), bias=False, groups=inp),
            nn.BatchNorm2d(hidden),
            nn.Conv2d(hidden, oup, (1, k), (1, stride), (0, k // 2), bias=False, groups=hidden),
            nn.BatchNorm2d(oup),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(x)


class GroupConv(nn.Module):
    """Grouped 1x1 conv + BN (``groups[0]`` groups, as the official code)."""

    def __init__(self, inp: int, oup: int, groups: tuple[int, int]) -> None:
        super().__init__()
        self.conv = nn.Sequential(
            nn.Conv2d(inp, oup, 1, 1, 0, bias=False, groups=groups[0]),
            nn.BatchNorm2d(oup),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(x)


class DYShiftMax(nn.Module):
    """Dynamic Shift-Max (MicroNet eq. 6).

    ``out = max_k(a_k * x + b_k * shift(x))`` over ``exp/2`` branches, with ``a_k, b_k`` per
    channel from a squeeze-excite style FC on the pooled input. Official hyper-parameters:
    ``act_max`` is doubled internally, the FC ends in a hard sigmoid, and the coefficient is
    ``(hsig - 0.5) * act_max + init``.
    """

    def __init__(
        self,
        channels: int,
        *,
        act_relu: bool,
        act_max: float,
        init_a: tuple[float, float],
        init_b: tuple[float, float],
        reduction: int,
        groups: tuple[int, int],
        expansion: bool,
    ) -> None:
        super().__init__()
        self.channels = channels
        self.exp = 4 if act_relu else 2
        self.act_max = act_max * 2
        squeeze = max(make_divisible(channels // reduction, 4), 4)
        self.fc = nn.Sequential(
            nn.Linear(channels, squeeze),
            nn.ReLU(),
            nn.Linear(squeeze, channels * self.exp),
            HSigmoid(),
        )
        g = groups[1] if groups is not None else 1
        if g != 1 and expansion:
            g = channels // g
        self.g = g
        self.gc = channels // g
        self.formulation = "export"
        # Coefficients in the order the FC emits them: a1, b1[, a2, b2].
        inits = [init_a[0], init_b[0]] + ([init_a[1], init_b[1]] if self.exp == 4 else [])
        self.init = tuple(float(v) for v in inits)
        offset = torch.tensor(inits, dtype=torch.float32).repeat_interleave(channels)
        # Not persistent: derived from the config, absent from official checkpoints.
        self.register_buffer("coeff_offset", (offset - self.act_max / 2).view(1, -1, 1, 1), persistent=False)

    def extra_repr(self) -> str:
        return f"channels={self.channels}, exp={self.exp}, g={self.g}, gc={self.gc}"

    def coefficients(self, x: torch.Tensor) -> torch.Tensor:
        """Per-channel ``a1, b1[, a2, b2]`` stacked on dim 1, shape ``(N, exp*C, 1, 1)``."""
        fc1, fc2 = self.fc[0], self.fc[2]
        pooled = x.mean(dim=(2, 3), keepdim=True)
        hidden = F.relu(F.conv2d(pooled, fc1.weight[:, :, None, None], fc1.bias))
        # relu6(z + 3) / 6 scaled to [-act_max/2, act_max/2] and offset by init, with the +3
        # folded into the bias and the two affines folded into one.
        z = F.conv2d(hidden, fc2.weight[:, :, None, None], fc2.bias + 3.0)
        return F.relu6(z) * (self.act_max / 6.0) + self.coeff_offset

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.formulation == "official":
            return self._forward_official(x)
        coeffs = torch.split(self.coefficients(x), self.channels, dim=1)
        shifted = shift_channels(x, self.g)
        out = x * coeffs[0] + shifted * coeffs[1]
        if self.exp == 4:
            out = torch.maximum(out, x * coeffs[2] + shifted * coeffs[3])
        return out

    def _forward_official(self, x: torch.Tensor) -> torch.Tensor:
        b, c, _, _ = x.size()
        y = F.adaptive_avg_pool2d(x, 1).view(b, c)
        y = self.fc(y).view(b, self.channels * self.exp, 1, 1)
        y = (y - 0.5) * self.act_max
        x2 = shift_channels_official(x, self.g)
        parts = torch.split(y, self.channels, dim=1)
        if self.exp == 4:
            a1, b1, a2, b2 = parts
            z1 = x * (a1 + self.init[0]) + x2 * (b1 + self.init[1])
            z2 = x * (a2 + self.init[2]) + x2 * (b2 + self.init[3])
            return torch.max(z1, z2)
        a1, b1 = parts
        return x * (a1 + self.init[0]) + x2 * (b1 + self.init[1])


class DYMicroBlock(nn.Module):
    """A micro-block: layers in the official order, identity residual when shapes allow."""

    def __init__(self, layers: list[nn.Module], residual: bool) -> None:
        super().__init__()
        self.layers = nn.Sequential(*layers)
        self.identity = residual

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.layers(x)
        if self.identity:
            out = out + x
        return out


class SwishLinear(nn.Module):
    """Linear + BatchNorm1d + h-swish.

    The export formulation folds the BatchNorm into the Linear (the ONNX exporter folds
    Conv+BN but not Gemm+BN): left unfolded, int8 has to quantize the pre-BN outputs with one
    per-tensor scale although their per-channel ranges differ by orders of magnitude.
    """

    def __init__(self, inp: int, oup: int) -> None:
        super().__init__()
        self.linear = nn.Sequential(nn.Linear(inp, oup), nn.BatchNorm1d(oup), HSwish())
        self.formulation = "export"

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        linear, bn, act = self.linear
        if self.formulation == "official" or self.training:
            return self.linear(x)
        scale = bn.weight / torch.sqrt(bn.running_var + bn.eps)
        weight = linear.weight * scale[:, None]
        bias = (linear.bias - bn.running_mean) * scale + bn.bias
        return act(F.linear(x, weight, bias))
