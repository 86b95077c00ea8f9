from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from micronet_export.model.random_weights import randomize, recalibrate_bn  # noqa: F401 - fixtures' helpers

REFERENCE = Path(__file__).parent / "data" / "reference"
VARIANTS = ("m0", "m1", "m2", "m3")
REFERENCE_VARIANTS = ("m0", "m1")


def pytest_configure(config):
    torch.set_num_threads(2)


@pytest.fixture(scope="session")
def manifest() -> dict:
    return json.loads((REFERENCE / "MANIFEST.json").read_text())


@pytest.fixture(scope="session")
def reference_inputs() -> torch.Tensor:
    return torch.load(REFERENCE / "inputs.pt", weights_only=True)


def reference_checkpoint(variant: str) -> Path:
    return REFERENCE / f"official_state_dict_{variant}.pt"


def reference_logits(variant: str) -> torch.Tensor:
    return torch.load(REFERENCE / f"official_logits_{variant}.pt", weights_only=True)


def rel_l2(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).norm() / b.norm())
