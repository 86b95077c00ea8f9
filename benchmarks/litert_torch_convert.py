"""PyTorch -> TFLite with litert-torch, as a user of that tool runs it: the official
formulation of MicroNet, fp32 and PT2E int8 (per-channel symmetric weights, calibrated on
photos). Runs in its own environment (litert-torch pins its own TF-free stack):

    /work/envs/litert-torch/bin/python benchmarks/litert_torch_convert.py --variant m0 \
        --checkpoint W.pt --calibration photos.npy --output DIR

Writes DIR/litert_torch_fp32.tflite and DIR/litert_torch_int8.tflite; prints one JSON line.
Imports only the model package of micronet_export (torch), never its ONNX / TF side.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import numpy as np  # noqa: E402
import torch  # noqa: E402


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--variant", required=True)
    p.add_argument("--checkpoint")
    p.add_argument("--calibration", required=True, help="float32 NCHW .npy of calibration photos")
    p.add_argument("--output", type=Path, required=True)
    args = p.parse_args(argv)
    import litert_torch
    from litert_torch.quantize import pt2e_quantizer
    from litert_torch.quantize.quant_config import QuantConfig
    from torchao.quantization.pt2e import quantize_pt2e

    from micronet_export.model import create_model

    model = create_model(args.variant, checkpoint=args.checkpoint, formulation="official").eval()
    photos = torch.from_numpy(np.load(args.calibration))
    sample = (photos[:1],)
    args.output.mkdir(parents=True, exist_ok=True)
    times = {}
    start = time.time()
    litert_torch.convert(model, sample).export(str(args.output / "litert_torch_fp32.tflite"))
    times["fp32_s"] = round(time.time() - start, 1)
    start = time.time()
    quantizer = pt2e_quantizer.PT2EQuantizer().set_global(
        pt2e_quantizer.get_symmetric_quantization_config(is_per_channel=True, is_dynamic=False))
    exported = torch.export.export(model, sample).module()
    prepared = quantize_pt2e.prepare_pt2e(exported, quantizer)
    with torch.no_grad():
        for image in photos:
            prepared(image[None])
    quantized = quantize_pt2e.convert_pt2e(prepared, fold_quantize=False)
    litert_torch.convert(quantized, sample, quant_config=QuantConfig(pt2e_quantizer=quantizer)).export(
        str(args.output / "litert_torch_int8.tflite"))
    times["int8_s"] = round(time.time() - start, 1)
    print(json.dumps({"litert_torch": getattr(litert_torch, "__version__", "?"), "torch": torch.__version__, **times}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
