"""int8 quality of M0–M3 on hard weights: ONNX Runtime int8 and TFLite full-int8 vs fp32.

    python benchmarks/int8_quality.py [--variants m0,m1,m2,m3] [--output benchmarks/results]

Weights: the official-format reference state_dicts for M0 and M1 (tests/data/reference: random
but non-degenerate, BatchNorm recalibrated, heavy-tailed late activations) and, for M2 and M3
(no reference exists), the realistic random weights of benchmarks/latency.py. Each runs the
library's export exactly as the CLI does (default calibration photos, 1 in 5 held out), with the
parity gate off, and reports the held-out metrics: ORT int8 vs ORT fp32 and TFLite int8 (LiteRT)
vs PyTorch. Trained weights are judged by benchmarks/accuracy_fashion_mnist.py instead.
Writes int8_quality.json / .md.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(Path(__file__).resolve().parent))

from latency import realistic_weights  # noqa: E402

from micronet_export import create_model  # noqa: E402
from micronet_export.export import ExportOptions, export  # noqa: E402
from micronet_export.images import DEFAULT_CALIBRATION_DIR, load_folder  # noqa: E402
from micronet_export.report import format_table  # noqa: E402

REFERENCE = ROOT / "tests" / "data" / "reference"


def checkpoint_for(variant: str, tmp: Path) -> tuple[Path, str]:
    path = REFERENCE / f"official_state_dict_{variant}.pt"
    if path.is_file():
        return path, "reference state_dict"
    photos = load_folder(DEFAULT_CALIBRATION_DIR).arrays
    model = realistic_weights(create_model(variant), photos[:64])
    path = tmp / f"{variant}_random.pt"
    torch.save(model.state_dict(), path)
    return path, "realistic random (latency.py)"


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--variants", default="m0,m1,m2,m3")
    p.add_argument("--output", type=Path, default=ROOT / "benchmarks" / "results")
    args = p.parse_args(argv)
    rows, results = [], []
    with tempfile.TemporaryDirectory(prefix="micronet-int8q-") as tmp:
        tmp = Path(tmp)
        for variant in args.variants.split(","):
            checkpoint, weights = checkpoint_for(variant, tmp)
            for fmt in ("onnx", "tflite"):
                report = export(ExportOptions(variant=variant, format=fmt, int8=True, checkpoint=checkpoint,
                                              output=tmp / f"{variant}_{fmt}", fail_on_parity=False, per_layer=False))
                art = next(a for a in report.artifacts if a.precision == "int8")
                block = next(b for b in art.parity if b["inputs"] in ("held-out images", "held-out images (LiteRT)"))
                m = block["metrics"]
                results.append({"variant": variant, "weights": weights, "artifact": Path(art.path).name,
                                "reference": block["reference"], **m})
                rows.append([variant, weights, Path(art.path).name, block["reference"], f"{m['cosine_mean']:.4f}",
                             f"{m['cosine_min']:.4f}", f"{m['top1_agreement']:.3f}", f"{m['sqnr_db']:.1f}"])
    table = format_table(["variant", "weights", "artifact", "against", "cosine mean", "cosine min", "top-1 agreement",
                          "SQNR dB"], rows)
    print(table)
    args.output.mkdir(parents=True, exist_ok=True)
    (args.output / "int8_quality.json").write_text(json.dumps(results, indent=2) + "\n")
    (args.output / "int8_quality.md").write_text(f"Held-out calibration photos (1 in 5), 224x224.\n\n```\n{table}\n```\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
