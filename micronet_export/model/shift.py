"""Channel permutations of MicroNet, in two formulations.

The official code moves channels with an index gather (``x[:, index]``) and 5-D views. Mobile
runtimes handle neither well: a Gather blocks int8 and XNNPACK delegation, and 5-D tensors
force layout transposes in TFLite. The export formulation below does the same permutations
with 4-D reshapes, slices and concatenations only; ``tests/test_shift.py`` proves the two equal
for every (g, gc) that M0–M3 use.
"""

from __future__ import annotations

import torch


def official_shift_index(channels: int, groups: int) -> torch.Tensor:
    """The official Dynamic Shift-Max index, built the way ``activation.py`` builds it.

    Channel ``c = gi*gc + cj`` of the shifted tensor is input channel
    ``((gi+1) % g)*gc + (cj+1) % gc``: a roll by one group and, inside each group, by one channel.
    """
    gc = channels // groups
    index = torch.arange(channels).view(1, groups, gc, 1, 1)
    first_group, other_groups = torch.split(index, [1, groups - 1], dim=1)
    index = torch.cat((other_groups, first_group), dim=1)
    first_chan, other_chans = torch.split(index, [1, gc - 1], dim=2)
    index = torch.cat((other_chans, first_chan), dim=2)
    return index.reshape(channels).long()


def _spatial(x: torch.Tensor) -> tuple[int, int]:
    # Python ints on purpose: under ONNX tracing they become constants, so the reshape targets
    # stay static (batch as -1) even when the batch axis is dynamic.
    return int(x.shape[2]), int(x.shape[3])


def _roll_left(x: torch.Tensor, dim: int) -> torch.Tensor:
    # torch.roll exports to ONNX as Slice+Concat too, but only for constant shifts on some
    # exporters; spelling it out keeps the graph the same under every exporter.
    if x.shape[dim] == 1:
        return x
    return torch.cat((x.narrow(dim, 1, x.shape[dim] - 1), x.narrow(dim, 0, 1)), dim=dim)


def shift_channels(x: torch.Tensor, groups: int) -> torch.Tensor:
    """Gather-free Dynamic Shift-Max shift of an NCHW tensor (see :func:`official_shift_index`).

    The rolls run on a 4-D view ``(N, g, gc, H*W)``: slices and one concatenation per roll.
    """
    c = int(x.shape[1])
    h, w = _spatial(x)
    gc = c // groups
    y = x.reshape(-1, groups, gc, h * w)
    y = _roll_left(_roll_left(y, 1), 2)
    return y.reshape(-1, c, h, w)


def shift_channels_official(x: torch.Tensor, groups: int) -> torch.Tensor:
    """The official shift: an index gather along channels."""
    return x[:, official_shift_index(x.shape[1], groups)]


def shuffle_channels(x: torch.Tensor, groups: int) -> torch.Tensor:
    """ShuffleNet channel shuffle (``out[j*g + i] = in[i*cpg + j]``) on a 4-D view."""
    c = int(x.shape[1])
    h, w = _spatial(x)
    if groups in (1, c):
        return x
    y = x.reshape(-1, groups, c // groups, h * w).transpose(1, 2)
    return y.reshape(-1, c, h, w)


def shuffle_channels_official(x: torch.Tensor, groups: int) -> torch.Tensor:
    """The official channel shuffle: a 5-D view, a transpose and a copy."""
    b, c, h, w = x.size()
    y = x.view(b, groups, c // groups, h, w)
    y = torch.transpose(y, 1, 2).contiguous()
    return y.view(b, -1, h, w)


def shuffle_permutation(channels: int, groups: int) -> torch.Tensor:
    """``perm`` such that ``shuffle_channels(x, groups) == x[:, perm]``."""
    return torch.arange(channels).view(groups, channels // groups).t().reshape(-1)
