from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import torch

from micronet_export.model.random_weights import randomize, recalibrate_bn  # noqa: F401 - fixtures' helpers
from micronet_export.export import ExportOptions, artifact_names, export
from micronet_export.images import project_path

REFERENCE = Path(__file__).parent / "data" / "reference"
# CI sets CI=true and installs every system dependency (.ci/run): there a missing one is a failure,
# never a skip that would hide the check.
IN_CI = os.environ.get("CI") == "true"


def skip_unless_ci(reason: str) -> None:
    """Skip locally when a system dependency is missing; fail in CI, which must run the check."""
    if IN_CI:
        pytest.fail(f"{reason} (CI must run this check)")
    pytest.skip(reason)
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


SHIPPED = project_path("models/micronet_m0_fashion_mnist.pth")


def checkpoint_with_card(folder: Path, **changes) -> Path:
    """A copy of the shipped checkpoint whose card (the .json beside it) differs by ``changes``."""
    import shutil

    folder.mkdir(parents=True, exist_ok=True)
    checkpoint = folder / "fashion.pth"
    shutil.copy(SHIPPED, checkpoint)
    card = json.loads(SHIPPED.with_suffix(".json").read_text())
    checkpoint.with_suffix(".json").write_text(json.dumps({**card, **changes}))
    return checkpoint


def export_onnx_and_tflite_int8(out: Path) -> Path:
    """The shipped checkpoint's int8 ONNX and int8 TFLite, gathered in ``out`` (each run in its
    own folder: a folder holds one run, --force would replace the other's artifacts)."""
    names = artifact_names("m0")
    for fmt, key in (("onnx", "onnx_int8"), ("tflite", "tflite_int8")):
        run_dir = out / f"run-{fmt}"
        export(ExportOptions(variant="m0", format=fmt, int8=True, checkpoint=SHIPPED, output=run_dir, per_layer=False,
                             fail_on_parity=False))
        for name in {names["onnx_fp32"], names[key]}:
            (run_dir / name).replace(out / name)
    return out


@pytest.fixture(scope="session")
def shipped_artifacts(tmp_path_factory):
    return export_onnx_and_tflite_int8(tmp_path_factory.mktemp("shipped"))


@pytest.fixture(scope="session")
def fashion_fp32_run(tmp_path_factory) -> Path:
    """The shipped checkpoint's fp32 TFLite export: the folder holding it, its fp32 ONNX and labels.txt."""
    out = tmp_path_factory.mktemp("fashion-fp32")
    export(ExportOptions(variant="m0", format="tflite", checkpoint=SHIPPED, output=out))
    return out


def blank_bilevel_png(path, width: int, height: int) -> None:
    """A valid all-black 1-bit PNG of any declared size in a few kB (rows of zero bytes deflate
    to almost nothing), written chunk by chunk: no image of that size is ever in memory."""
    import struct
    import zlib

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    row = bytes(1 + (width + 7) // 8)  # filter byte 0, then the packed pixels
    deflate, parts = zlib.compressobj(9), []
    for _ in range(height):
        parts.append(deflate.compress(row))
    parts.append(deflate.flush())
    ihdr = struct.pack(">IIBBBBB", width, height, 1, 0, 0, 0, 0)  # 1 bit, grayscale
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", b"".join(parts)) + chunk(b"IEND", b""))
