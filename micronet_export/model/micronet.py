"""MicroNet assembled from a variant table (see ``variants.py``) and the blocks."""

from __future__ import annotations

import math

import torch
import torch.nn as nn

from micronet_export.errors import UserError
from micronet_export.model.blocks import (
    FORMULATIONS,
    ChannelShuffle,
    DepthSpatialSepConv,
    DYMicroBlock,
    DYShiftMax,
    GroupConv,
    HSwish,
    StemLayer,
    SwishLinear,
)
from micronet_export.model.variants import VARIANTS, BlockRow, VariantConfig


def _micro_block(cfg: VariantConfig, row: BlockRow, inp: int, stride: int) -> DYMicroBlock:
    """One DYMicroBlock, a line-by-line reading of the official constructor's three cases."""
    oup = row.c
    hidden = inp * row.c1 * row.c2
    reduction = cfg.REDUCTION * row.r
    gs1 = (row.g1, row.g2)
    gs2 = (row.g3, row.g4)
    shuffle = cfg.SHUFFLE

    def shift_max(channels, *, act_relu, init_a, init_b, reduction, groups, expansion):
        return DYShiftMax(channels, act_relu=act_relu, act_max=cfg.ACT_MAX, init_a=init_a,
                          init_b=init_b, reduction=reduction, groups=groups, expansion=expansion)

    def first_act(y: int, channels: int, expansion: bool) -> nn.Module:
        if y == 0:
            return nn.ReLU6()
        return shift_max(channels, act_relu=y == 2, init_a=cfg.INIT_A, init_b=cfg.INIT_B,
                         reduction=reduction, groups=gs1, expansion=expansion)

    def last_act(channels: int, groups: tuple[int, int], reduction: int) -> nn.Module:
        if row.y3 == 0:
            return nn.Sequential()
        return shift_max(channels, act_relu=False, init_a=(cfg.INIT_A_BLOCK3[0], 0.0),
                         init_b=(cfg.INIT_A_BLOCK3[1], 0.0), reduction=reduction,
                         groups=groups, expansion=False)

    def maybe_shuffle(groups: int, when: bool = True) -> nn.Module:
        return ChannelShuffle(groups) if shuffle and when else nn.Sequential()

    if cfg.POINTWISE != "group" or not cfg.DEPTHSEP:
        raise ValueError("only the 'group' pointwise and depth-separable MicroNet is implemented")

    if row.g1 == 0:  # starts with the depthwise conv
        layers = [
            DepthSpatialSepConv(inp, (row.c1, row.c2), row.ks, stride),
            first_act(row.y2, hidden, expansion=False),
            maybe_shuffle(row.g2),
            maybe_shuffle(hidden // 2, when=row.y2 != 0),
            GroupConv(hidden, oup, gs2),
            last_act(oup, gs2, reduction // 2),
            maybe_shuffle(row.g4),
            maybe_shuffle(oup // 2, when=oup % 2 == 0 and row.y3 != 0),
        ]
    elif row.g4 == 0:  # last block: pointwise expansion only
        layers = [GroupConv(inp, hidden, gs1), last_act(hidden, gs1, reduction)]
    else:
        if row.y1 != 0 and row.y2 != 0:
            middle_shuffle = maybe_shuffle(hidden // 4)
        elif row.y1 == 0 and row.y2 == 0:
            middle_shuffle = nn.Sequential()
        else:
            middle_shuffle = ChannelShuffle(hidden // 2)
        layers = [
            GroupConv(inp, hidden, gs1),
            first_act(row.y1, hidden, expansion=False),
            maybe_shuffle(row.g2),
            DepthSpatialSepConv(hidden, (1, 1), row.ks, stride),
            nn.Sequential(),
            first_act(row.y2, hidden, expansion=True),
            middle_shuffle,
            GroupConv(hidden, oup, gs2),
            last_act(oup, gs2, reduction // 2 if oup < hidden else reduction),
            maybe_shuffle(row.g4),
            maybe_shuffle(oup // 2, when=row.y3 != 0),
        ]
    return DYMicroBlock(layers, residual=stride == 1 and inp == oup)


class MicroNet(nn.Module):
    """MicroNet (Li et al., ICCV 2021). Input NCHW, ImageNet-normalised; output logits.

    Any input size that is a multiple of 32 works; the official models use 224.
    """

    def __init__(self, cfg: VariantConfig, num_classes: int = 1000) -> None:
        super().__init__()
        self.variant = cfg.name
        self.num_classes = num_classes
        layers: list[nn.Module] = [StemLayer(3, cfg.STEM_CH, stride=2, groups=cfg.STEM_GROUPS)]
        channels = cfg.STEM_CH
        for row in cfg.blocks:
            for i in range(row.n):
                layers.append(_micro_block(cfg, row, channels, row.s if i == 0 else 1))
                channels = row.c
        self.features = nn.Sequential(*layers)
        self.avgpool = nn.Sequential(nn.ReLU6(), nn.AdaptiveAvgPool2d((1, 1)), HSwish())
        self.classifier = nn.Sequential(
            SwishLinear(channels, cfg.OUT_CH),
            nn.Dropout(cfg.DROPOUT),
            SwishLinear(cfg.OUT_CH, num_classes),
        )
        self.formulation = "export"
        self._initialize_weights()

    def _initialize_weights(self) -> None:
        """The official initialisation (what an untrained MicroNet looks like)."""
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                n = m.kernel_size[0] * m.kernel_size[1] * m.out_channels
                nn.init.normal_(m.weight, 0.0, math.sqrt(2.0 / n))
                if m.bias is not None:
                    nn.init.zeros_(m.bias)
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
            elif isinstance(m, nn.Linear):
                nn.init.normal_(m.weight, 0.0, 0.01)
                if m.bias is not None:
                    nn.init.zeros_(m.bias)

    def set_formulation(self, formulation: str) -> "MicroNet":
        if formulation not in FORMULATIONS:
            raise UserError(f"unknown formulation {formulation!r}; valid: {', '.join(FORMULATIONS)}")
        for module in self.modules():
            if hasattr(module, "formulation"):
                module.formulation = formulation
        return self

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.features(x)
        x = self.avgpool(x)
        x = torch.flatten(x, 1)
        return self.classifier(x)


def get_variant(variant: str) -> VariantConfig:
    key = str(variant).lower()
    if key not in VARIANTS:
        raise UserError(f"unknown variant {variant!r}; valid variants: {', '.join(VARIANTS)}")
    return VARIANTS[key]
