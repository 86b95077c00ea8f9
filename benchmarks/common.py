"""Helpers the benchmark scripts share: which weights a variant is measured with, the CPU."""

from __future__ import annotations

import platform
from pathlib import Path

import torch

from micronet_export import create_model
from micronet_export.images import DEFAULT_CALIBRATION_DIR, load_folder
from micronet_export.model.random_weights import realistic_weights

ROOT = Path(__file__).resolve().parent.parent
REFERENCE = ROOT / "tests" / "data" / "reference"


def checkpoint_for(variant: str, tmp: Path) -> tuple[Path, str]:
    """The official-format reference state_dict where one exists (M0, M1), else realistic
    random weights (micronet_export.model.random_weights) saved under ``tmp``."""
    path = REFERENCE / f"official_state_dict_{variant}.pt"
    if path.is_file():
        return path, "reference state_dict"
    photos = load_folder(DEFAULT_CALIBRATION_DIR).arrays
    model = realistic_weights(create_model(variant), photos[:64])
    path = tmp / f"{variant}_random.pt"
    torch.save(model.state_dict(), path)
    return path, "realistic random"


def host_cpu() -> str:
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return platform.processor() or platform.machine()
