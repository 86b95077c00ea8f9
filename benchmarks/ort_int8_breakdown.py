"""Where ONNX Runtime spends MicroNet's time, fp32 vs int8, per op type, in one run.

    python benchmarks/ort_int8_breakdown.py [--variant m0] [--runs 200] [--output benchmarks/results]

Models: our optimized fp32 ONNX graph (micronet_export.passes, realistic random weights, as
benchmarks/latency.py) and its int8 QDQ models: the CLI's default (Conv/Gemm in int8, uint8
activations, the convs ORT runs slower in int8 kept float: quantize.slow_int8_convs), every
conv in int8 (no cost model), the same with int8 activations (ORT's usual recipe), and every
op in int8. For each: p50 latency (1 thread, fresh process) and kernel time per op
type from ONNX Runtime's profiler (a second session, so the profiler stays out of the p50).

The bound it prints: the int8 model's kernel time outside conv / GEMM nodes, over the fp32
model's total. If that alone exceeds 0.8, no int8 conv kernel, however fast, brings that int8
graph under 0.8x fp32 on this machine: the quantize/dequantize, layout and float elementwise
nodes int8 adds cost more than the convs can save. Writes ort_int8_breakdown.json / .md.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

import onnx

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import ort_op_breakdown  # noqa: E402

from micronet_export.model.random_weights import realistic_weights  # noqa: E402

from micronet_export import create_model  # noqa: E402
from micronet_export.options import ORT_INT8_OPS  # noqa: E402
from micronet_export.images import DEFAULT_CALIBRATION_DIR, load_folder  # noqa: E402
from micronet_export.onnx_export import export_onnx  # noqa: E402
from micronet_export.passes import optimize  # noqa: E402
from micronet_export.profile import ProfileOptions  # noqa: E402
from micronet_export.profile.targets import profile_local  # noqa: E402
from micronet_export.quantize import quantize_onnx  # noqa: E402
from micronet_export.report import format_table  # noqa: E402

CONV_OPS = {"Conv", "FusedConv", "QLinearConv", "Gemm", "FusedGemm", "QGemm", "ConvInteger", "MatMulInteger"}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--variant", default="m0")
    p.add_argument("--runs", type=int, default=200)
    p.add_argument("--output", type=Path, default=ROOT / "benchmarks" / "results")
    args = p.parse_args(argv)
    photos = load_folder(DEFAULT_CALIBRATION_DIR).arrays
    calib = photos[:100]
    fp32 = optimize(export_onnx(realistic_weights(create_model(args.variant), photos[:64])), "onnxruntime").model
    variants = {
        "fp32": None,
        "int8 (CLI default)": {"op_types": ORT_INT8_OPS["conv"]},
        "int8, every conv": {"op_types": ORT_INT8_OPS["conv"], "keep_slow_convs_float": False},
        "int8, int8 activations, every conv": {"op_types": ORT_INT8_OPS["conv"], "keep_slow_convs_float": False,
                                               "activation_type": "int8"},
        "int8, every op": {"op_types": None},
    }
    rows, results = [], {}
    with tempfile.TemporaryDirectory(prefix="micronet-ort-") as tmp:
        for name, kwargs in variants.items():
            path = Path(tmp) / f"{len(results)}.onnx"
            model = fp32 if kwargs is None else quantize_onnx(fp32, calib, **kwargs)
            onnx.save(model, path)
            p50 = profile_local(path, 1, ProfileOptions(runs=args.runs, warmup=20))["latency_ms"]["p50"]
            by_type = ort_op_breakdown(path, photos[100], runs=args.runs)
            results[name] = {"p50_ms": p50, "nodes": len(model.graph.node), "kernel_ms_by_type": by_type}
    base = results["fp32"]
    fp32_kernel = sum(base["kernel_ms_by_type"].values())
    for name, r in results.items():
        by_type = r["kernel_ms_by_type"]
        total = sum(by_type.values())
        conv = sum(v for k, v in by_type.items() if k in CONV_OPS)
        r["kernel_ms"] = total
        r["conv_kernel_ms"] = conv
        r["p50_vs_fp32"] = r["p50_ms"] / base["p50_ms"]
        r["non_conv_vs_fp32_total"] = (total - conv) / fp32_kernel
        top = sorted(by_type.items(), key=lambda kv: -kv[1])[:4]
        rows.append([name, str(r["nodes"]), f"{r['p50_ms']:.3f}", f"{r['p50_vs_fp32']:.2f}", f"{total:.3f}", f"{conv:.3f}",
                     f"{r['non_conv_vs_fp32_total']:.2f}", ", ".join(f"{k} {v:.2f}" for k, v in top)])
    table = format_table(["model", "nodes", "p50 ms", "p50 / fp32", "kernel ms (profiled)", "conv/GEMM ms",
                          "non-conv / fp32 total", "top op types (ms)"], rows)
    print(table)
    args.output.mkdir(parents=True, exist_ok=True)
    (args.output / "ort_int8_breakdown.json").write_text(json.dumps({"variant": args.variant, "results": results},
                                                                   indent=2) + "\n")
    (args.output / "ort_int8_breakdown.md").write_text(f"{args.variant}, ONNX Runtime CPU, 1 thread\n\n```\n{table}\n```\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
