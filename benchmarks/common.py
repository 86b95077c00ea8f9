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


def variant_model(variant: str, tmp: Path):
    """The PyTorch model a benchmark measures for ``variant`` (see :func:`checkpoint_for`)."""
    checkpoint, _ = checkpoint_for(variant, tmp)
    return create_model(variant, checkpoint=checkpoint)


def snapshot_models(variants, tmp: Path, calibration_images: int):
    """(``"m0 fp32"``, flatbuffer) for every variant, fp32 and plain min/max int8, 224 px."""
    from micronet_export.onnx_export import export_onnx
    from micronet_export.tflite_export import convert

    photos = load_folder(DEFAULT_CALIBRATION_DIR).arrays[:calibration_images]
    for variant in variants:
        proto = export_onnx(variant_model(variant, tmp))
        for precision in ("fp32", "int8"):
            yield f"{variant} {precision}", convert(proto, precision, calibration=photos)


def graph_stats(flatbuffer: bytes) -> dict:
    """Op histogram, op count, XNNPACK partitions, TRANSPOSE and GATHER count of a .tflite."""
    from micronet_export.tflite_export import delegation, op_histogram

    ops = op_histogram(flatbuffer)
    graph = delegation(flatbuffer)
    return {"ops": ops, "num_ops": int(sum(ops.values())), "xnnpack_partitions": graph["xnnpack_partitions"],
            "ops_outside_xnnpack": graph["ops_outside_xnnpack"], "transposes": ops.get("TRANSPOSE", 0),
            "gathers": ops.get("GATHER", 0) + ops.get("GATHER_ND", 0)}
