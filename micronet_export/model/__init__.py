"""MicroNet M0–M3: variant tables, blocks, checkpoints and the public constructor."""

from __future__ import annotations

from pathlib import Path

import torch

from micronet_export.errors import CheckpointError, UserError
from micronet_export.model.blocks import FORMULATIONS
from micronet_export.model.checkpoint import load_into, read_state_dict
from micronet_export.model.micronet import MicroNet, get_variant
from micronet_export.model.variants import VARIANTS, VariantConfig

CLASSIFIER_WEIGHT = "classifier.2.linear.0.weight"

__all__ = ["MicroNet", "VariantConfig", "create_model", "list_variants", "get_variant", "variants_fitting"]


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
        try:
            load_into(model, state_dict, str(checkpoint))
        except CheckpointError:
            fits = [v for v in variants_fitting(state_dict) if v != cfg.name]
            if not fits:
                raise
            raise CheckpointError(
                f"checkpoint {checkpoint} holds MicroNet-{fits[0]} weights, not {cfg.name} (every tensor shape fits "
                f"{fits[0]}): pass --variant {fits[0]}"
            ) from None
    model.set_formulation(formulation)
    return model.eval()



def _state_dict_shapes(variant: str, num_classes: int) -> dict[str, tuple[int, ...]]:
    with torch.device("meta"):  # shapes only: no memory, no weight initialisation
        model = MicroNet(get_variant(variant), num_classes=num_classes)
    return {k: tuple(v.shape) for k, v in model.state_dict().items()}


def variants_fitting(state_dict: dict[str, torch.Tensor]) -> list[str]:
    """Variants whose every key and tensor shape a state_dict matches (its own class count)."""
    head = state_dict.get(CLASSIFIER_WEIGHT)
    num_classes = int(head.shape[0]) if head is not None and head.ndim == 2 else 1000
    given = {k: tuple(v.shape) for k, v in state_dict.items()}
    return [v for v in VARIANTS if _state_dict_shapes(v, num_classes) == given]
