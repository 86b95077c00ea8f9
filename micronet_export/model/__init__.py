"""MicroNet M0–M3: variant tables, blocks, checkpoints and the public constructor."""

from __future__ import annotations

from pathlib import Path

import torch

from micronet_export.errors import UserError
from micronet_export.model.blocks import FORMULATIONS
from micronet_export.model.checkpoint import load_into, read_state_dict
from micronet_export.model.micronet import MicroNet, get_variant
from micronet_export.model.variants import VARIANTS, VariantConfig

CLASSIFIER_WEIGHT = "classifier.2.linear.0.weight"

__all__ = ["MicroNet", "VariantConfig", "create_model", "list_variants", "get_variant"]


def list_variants() -> list[str]:
    return list(VARIANTS)


def create_model(
    variant: str,
    *,
    checkpoint: str | Path | None = None,
    num_classes: int | None = 1000,
    formulation: str = "export",
    seed: int = 0,
) -> MicroNet:
    """MicroNet ``variant`` in eval mode, optionally with an official-format checkpoint.

    Input: NCHW float, ImageNet mean/std normalised (1x3x224x224 for the official models; any
    multiple of 32). Output: logits. ``num_classes=None`` takes it from the checkpoint's
    classifier (1000 without a checkpoint). Without a checkpoint the weights are the official
    random initialisation drawn from ``seed``, so two exports of the same call are byte-identical.
    ``formulation="official"`` computes the same function the
    way the official code does (index gather, 5-D views): the oracle for equivalence tests.
    """
    cfg = get_variant(variant)
    if formulation not in FORMULATIONS:
        raise UserError(f"unknown formulation {formulation!r}; valid: {', '.join(FORMULATIONS)}")
    state_dict = read_state_dict(checkpoint) if checkpoint is not None else None
    if num_classes is None:
        head = state_dict.get(CLASSIFIER_WEIGHT) if state_dict is not None else None
        num_classes = int(head.shape[0]) if head is not None and head.ndim == 2 else 1000
    if int(num_classes) < 1:
        raise UserError(f"num_classes must be positive, got {num_classes}")
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = MicroNet(cfg, num_classes=int(num_classes))
    if state_dict is not None:
        load_into(model, state_dict, str(checkpoint))
    model.set_formulation(formulation)
    return model.eval()

