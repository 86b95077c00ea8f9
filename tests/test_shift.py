"""The gather-free shift and shuffle equal the official index gather / 5-D views."""

from __future__ import annotations

import pytest
import torch

from micronet_export import create_model
from micronet_export.model.blocks import ChannelShuffle, DYShiftMax
from micronet_export.model.shift import (
    official_shift_index,
    shift_channels,
    shift_channels_official,
    shuffle_channels,
    shuffle_channels_official,
    shuffle_permutation,
)

from conftest import VARIANTS


def _used(kind):
    pairs = set()
    for v in VARIANTS:
        for m in create_model(v).modules():
            if kind is DYShiftMax and isinstance(m, DYShiftMax):
                pairs.add((m.g, m.gc))
            elif kind is ChannelShuffle and isinstance(m, ChannelShuffle):
                pairs.add((m.groups, None))
    return sorted(pairs, key=lambda p: (p[0], p[1] or 0))


SHIFT_GROUPS = _used(DYShiftMax)


def test_every_manifest_g_gc_is_covered(manifest):
    from_manifest = set()
    for v in VARIANTS:
        from_manifest |= {tuple(p) for p in manifest["summary_all_variants"][v]["dyshiftmax_distinct_g_gc"]}
    assert from_manifest == set(SHIFT_GROUPS)


def _index_from_formula(g: int, gc: int) -> list[int]:
    # The official statement: c = gi*gc + cj takes ((gi+1) mod g)*gc + (cj+1) mod gc.
    return [((gi + 1) % g) * gc + (cj + 1) % gc for gi in range(g) for cj in range(gc)]


@pytest.mark.parametrize("g,gc", SHIFT_GROUPS)
def test_shift_equals_official_index(g, gc):
    c = g * gc
    assert official_shift_index(c, g).tolist() == _index_from_formula(g, gc)
    x = torch.randn(2, c, 5, 3)
    expected = x[:, torch.tensor(_index_from_formula(g, gc))]
    assert torch.equal(shift_channels(x, g), expected)
    assert torch.equal(shift_channels_official(x, g), expected)


@pytest.mark.parametrize("g,gc", SHIFT_GROUPS)
def test_shift_is_not_the_identity_or_a_single_roll(g, gc):
    # Guards the test above against an index that degenerates for some (g, gc).
    x = torch.arange(g * gc, dtype=torch.float32).view(1, -1, 1, 1)
    y = shift_channels(x, g).flatten().long().tolist()
    assert sorted(y) == list(range(g * gc))
    if g > 1 and gc > 1:
        assert y[0] == gc + 1


def _used_shuffles() -> list[tuple[int, int]]:
    """(groups, channels) of every ChannelShuffle in M0–M3, read off a forward pass."""
    seen = set()

    def hook(m, inp, _out):
        seen.add((m.groups, inp[0].shape[1]))

    for v in VARIANTS:
        model = create_model(v)
        for m in model.modules():
            if isinstance(m, ChannelShuffle):
                m.register_forward_hook(hook)
        with torch.no_grad():
            model(torch.zeros(1, 3, 64, 64))
    return sorted(seen)


@pytest.mark.parametrize("groups,channels", _used_shuffles())
def test_shuffle_equals_official_5d_view(groups, channels):
    x = torch.randn(3, channels, 4, 6)
    ref = shuffle_channels_official(x, groups)
    assert torch.equal(shuffle_channels(x, groups), ref)
    assert torch.equal(x[:, shuffle_permutation(channels, groups)], ref)
