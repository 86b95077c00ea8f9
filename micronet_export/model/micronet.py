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


class _BlockParts:
    """The parts of one DYMicroBlock, a line-by-line reading of the official constructor."""

    def __init__(self, cfg: VariantConfig, row: BlockRow, inp: int) -> None:
        self.cfg, self.row, self.inp = cfg, row, inp
        self.oup = row.c
        self.hidden = inp * row.c1 * row.c2
        self.reduction = cfg.REDUCTION * row.r
        self.gs1 = (row.g1, row.g2)
        self.gs2 = (row.g3, row.g4)

    def shift_max(self, channels, *, act_relu, init_a, init_b, reduction, groups, expansion) -> DYShiftMax:
        return DYShiftMax(channels, act_relu=act_relu, act_max=self.cfg.ACT_MAX, init_a=init_a,
                          init_b=init_b, reduction=reduction, groups=groups, expansion=expansion)

    def first_act(self, y: int, channels: int, expansion: bool) -> nn.Module:
        if y == 0:
            return nn.ReLU6()
        return self.shift_max(channels, act_relu=y == 2, init_a=self.cfg.INIT_A, init_b=self.cfg.INIT_B,
                              reduction=self.reduction, groups=self.gs1, expansion=expansion)

    def last_act(self, channels: int, groups: tuple[int, int], reduction: int) -> nn.Module:
        if self.row.y3 == 0:
            return nn.Sequential()
        init = self.cfg.INIT_A_BLOCK3
        return self.shift_max(channels, act_relu=False, init_a=(init[0], 0.0), init_b=(init[1], 0.0),
                              reduction=reduction, groups=groups, expansion=False)

    def maybe_shuffle(self, groups: int, when: bool = True) -> nn.Module:
        return ChannelShuffle(groups) if self.cfg.SHUFFLE and when else nn.Sequential()

    def depthwise_first(self, stride: int) -> list[nn.Module]:
        row, hidden, oup = self.row, self.hidden, self.oup
        return [
            DepthSpatialSepConv(self.inp, (row.c1, row.c2), row.ks, stride),
            self.first_act(row.y2, hidden, expansion=False),
            self.maybe_shuffle(row.g2),
            self.maybe_shuffle(hidden // 2, when=row.y2 != 0),
            GroupConv(hidden, oup, self.gs2),
            self.last_act(oup, self.gs2, self.reduction // 2),
            self.maybe_shuffle(row.g4),
            self.maybe_shuffle(oup // 2, when=oup % 2 == 0 and row.y3 != 0),
        ]

    def pointwise_first(self, stride: int) -> list[nn.Module]:
        row, hidden, oup = self.row, self.hidden, self.oup
        if row.y1 != 0 and row.y2 != 0:
            middle_shuffle = self.maybe_shuffle(hidden // 4)
        elif row.y1 == 0 and row.y2 == 0:
            middle_shuffle = nn.Sequential()
        else:
            middle_shuffle = ChannelShuffle(hidden // 2)
        return [
            GroupConv(self.inp, hidden, self.gs1),
            self.first_act(row.y1, hidden, expansion=False),
            self.maybe_shuffle(row.g2),
            DepthSpatialSepConv(hidden, (1, 1), row.ks, stride),
            nn.Sequential(),
            self.first_act(row.y2, hidden, expansion=True),
            middle_shuffle,
            GroupConv(hidden, oup, self.gs2),
            self.last_act(oup, self.gs2, self.reduction // 2 if oup < hidden else self.reduction),
            self.maybe_shuffle(row.g4),
            self.maybe_shuffle(oup // 2, when=row.y3 != 0),
        ]


def _micro_block(cfg: VariantConfig, row: BlockRow, inp: int, stride: int) -> DYMicroBlock:
    """One DYMicroBlock: the official constructor's three cases."""
    if cfg.POINTWISE != "group" or not cfg.DEPTHSEP:
        raise ValueError("only the 'group' pointwise and depth-separable MicroNet is implemented")
    parts = _BlockParts(cfg, row, inp)
    if row.g1 == 0:  # starts with the depthwise conv
        layers = parts.depthwise_first(stride)
    elif row.g4 == 0:  # last block: pointwise expansion only
        layers = [GroupConv(inp, parts.hidden, parts.gs1), parts.last_act(parts.hidden, parts.gs1, parts.reduction)]
    else:
        layers = parts.pointwise_first(stride)
    return DYMicroBlock(layers, residual=stride == 1 and inp == row.c)


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
