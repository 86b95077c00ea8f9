"""Top-1 of the shipped Fashion-MNIST MicroNet-M0: PyTorch fp32 vs ONNX Runtime int8 vs TFLite
int8 (and fp32), on the full 10,000-image test split (Debian's dataset-fashion-mnist).

    apt-get install dataset-fashion-mnist
    python benchmarks/accuracy_fashion_mnist.py [--limit N] [--output benchmarks/results]

Prints a table and writes accuracy_fashion_mnist.json / .md. Calibration uses 200 training
images (models/fashion_mnist_calibration), never test images.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "models"))

from micronet_export.evaluate import evaluate  # noqa: E402
from micronet_export.export import ExportOptions, artifact_names, export  # noqa: E402
from micronet_export.report import format_table  # noqa: E402

CHECKPOINT = ROOT / "models" / "micronet_m0_fashion_mnist.pth"
CALIBRATION = ROOT / "models" / "fashion_mnist_calibration"


def main(argv=None) -> int:
    from fashion_mnist_images import write_images

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--limit", type=int, help="first N test images (default: all 10,000)")
    p.add_argument("--output", type=Path, default=ROOT / "benchmarks" / "results")
    args = p.parse_args(argv)
    card = json.loads(CHECKPOINT.with_suffix(".json").read_text())
    size = card["input_size"]
    args.output.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="fmnist-") as tmp:
        tmp = Path(tmp)
        t0 = time.time()
        n = write_images(tmp / "test", "test")
        print(f"wrote {n} test images in {time.time() - t0:.0f} s", file=sys.stderr)
        names = artifact_names("m0")
        common = dict(variant="m0", checkpoint=CHECKPOINT, calibration=CALIBRATION, input_size=size,
                      fail_on_parity=False, per_layer=False)
        # One folder per run: a folder holds one run's artifacts (--force replaces them all).
        onnx_int8, tflite_int8, tflite_fp32 = tmp / "onnx-int8", tmp / "tflite-int8", tmp / "tflite-fp32"
        export(ExportOptions(format="onnx", int8=True, output=onnx_int8, **common))
        export(ExportOptions(format="tflite", int8=True, output=tflite_int8, **common))
        export(ExportOptions(format="tflite", output=tflite_fp32, **common))
        targets = [str(CHECKPOINT), str(onnx_int8 / names["onnx_fp32"]), str(onnx_int8 / names["onnx_int8"]),
                   str(tflite_fp32 / names["tflite_fp32"]), str(tflite_int8 / names["tflite_int8"])]
        result = evaluate(targets, tmp / "test", labels=tmp / "test" / "classes.txt", limit=args.limit,
                          input_size=size, variant="m0")
    fp32 = result["results"][0]["top1"]
    rows = []
    for r, label in zip(result["results"], ["PyTorch fp32 (checkpoint)", "ONNX Runtime fp32", "ONNX Runtime int8 (QDQ)",
                                            "TFLite fp32 (LiteRT)", "TFLite int8 (LiteRT)"]):
        r["label"] = label
        r["top1_drop_points"] = round(100 * (fp32 - r["top1"]), 2)
        rows.append([label, str(r["images"]), f"{100 * r['top1']:.2f}", f"{100 * r['top5']:.2f}",
                     f"{r['top1_drop_points']:+.2f}", f"{100 * r['agreement_with_first']:.2f}"])
    table = format_table(["model", "images", "top-1 %", "top-5 %", "top-1 drop (points)", "agrees with fp32 %"], rows)
    print(table)
    result["card"] = {k: card[k] for k in ("test_top1", "input_size", "command")}
    (args.output / "accuracy_fashion_mnist.json").write_text(json.dumps(result, indent=2) + "\n")
    (args.output / "accuracy_fashion_mnist.md").write_text("```\n" + table + "\n```\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
