"""MicroNet M0–M3: variant tables, blocks, checkpoints and the public constructor."""

from __future__ import annotations

from pathlib import Path

import torch

from micronet_export.errors import UserError
from micronet_export.model.blocks import FORMULATIONS
from micronet_export.model.checkpoint import load_into, read_state_dict
from micronet_export.model.micronet import MicroNet, get_variant
from micronet_export.model.variants import VARIANTS, VariantConfig

__all__ = ["MicroNet", "VariantConfig", "create_model", "list_variants", "get_variant"]


def list_variants() -> list[str]:
    return list(VARIANTS)


def create_model(
    variant: str,
    *,
    checkpoint: str | Path | None = None,
    num_classes: int = 1000,
    formulation: str = "export",
) -> MicroNet:
    """MicroNet ``variant`` in eval mode, optionally with an official-format checkpoint.

    Input: NCHW float, ImageNet mean/std normalised (1x3x224x224 for the official models; any
    multiple of 32). Output: logits. ``formulation="official"`` computes the same function the
    way the official code does (index gather, 5-D views): the oracle for equivalence tests.
    """
    cfg = get_variant(variant)
    if formulation not in FORMULATIONS:
        raise UserError(f"unknown formulation {formulation!r}; valid: {', '.join(FORMULATIONS)}")
    if int(num_classes) < 1:
        raise UserError(f"num_classes must be positive, got {num_classes}")
    model = MicroNet(cfg, num_classes=int(num_classes))
    if checkpoint is not None:
        load_into(model, read_state_dict(checkpoint), str(checkpoint))
    model.set_formulation(formulation)
    return model.eval()


def torch_threads_default() -> None:
    torch.set_num_threads(max(1, torch.get_num_threads()))
