"""Latency of MicroNet M0–M3 on this machine, ours vs the paths users take today, in one run.

    python benchmarks/latency.py [--variants m0,m1,m2,m3] [--rounds 30] [--runs 10]
        [--onnx2tf-python /work/envs/onnx2tf/bin/python] [--onnx2tf-variants m0]
        [--litert-torch-python /work/envs/litert-torch/bin/python] [--litert-torch-variants m0]

Per variant (reference weights for M0/M1, realistic random weights for M2/M3, 224 px, 1 thread):
  ours        export formulation → torch.onnx → MicroNet passes (micronet_export.passes):
              ORT fp32, ORT int8 (QDQ of the optimized graph, the CLI's default scope),
              TFLite fp32 / int8 (LiteRT, XNNPACK) from the TFLite target's graph;
  official    official formulation → torch.onnx → onnxsim: ORT fp32 (what a user runs today);
              → onnx2tf 1.29.24 fp32 / int8 (its own environment, README);
  litert-torch  official formulation → litert-torch fp32 / PT2E int8 (its own environment).
Every latency of a variant comes from one process, its models timed in interleaved rounds
(benchmarks/common.py), so their ratios hold within the run. ONNX Runtime's per-op-type profile
of our fp32 and int8 graphs and of the official one says where the time goes. Also times the main
job cold. Writes latency.md and latency.json under --output.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import onnx

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import (  # noqa: E402
    LITERT_TORCH_ENV, ONNX2TF_ENV, ROOT, checkpoint_for, graph_stats, host_cpu, interleaved_p50, litert_torch_convert,
    official_onnx, onnx2tf_convert, ort_op_breakdown,
)

from micronet_export import create_model  # noqa: E402
from micronet_export.images import DEFAULT_CALIBRATION_DIR, load_folder  # noqa: E402
from micronet_export.onnx_export import export_onnx  # noqa: E402
from micronet_export.options import ORT_INT8_OPS  # noqa: E402
from micronet_export.passes import optimize  # noqa: E402
from micronet_export.quantize import quantize_onnx  # noqa: E402
from micronet_export.report import format_table  # noqa: E402
from micronet_export.tflite_export import convert  # noqa: E402

RATIOS = {  # name -> (numerator, denominator): keys of the timed artifacts
    "ORT fp32 ours / official (torch.onnx + onnxsim)": ("ours ort fp32", "official ort fp32"),
    "ORT fp32 ours / plain export (--onnx-optimize none)": ("ours ort fp32", "plain ort fp32"),
    "ORT int8 / ORT fp32 (ours)": ("ours ort int8", "ours ort fp32"),
    "LiteRT fp32 ours / onnx2tf fp32": ("ours litert fp32", "onnx2tf litert fp32"),
    "LiteRT int8 ours / onnx2tf int8": ("ours litert int8", "onnx2tf litert int8"),
    "LiteRT fp32 ours / litert-torch fp32": ("ours litert fp32", "litert-torch litert fp32"),
    "LiteRT int8 ours / litert-torch PT2E int8": ("ours litert int8", "litert-torch litert int8"),
    "LiteRT int8 / LiteRT fp32 (ours)": ("ours litert int8", "ours litert fp32"),
}


def main_job_cold(tmp: Path) -> dict:
    out = tmp / "main-job"
    start = time.time()
    before = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    proc = subprocess.run([sys.executable, "-m", "micronet_export.cli", "--variant", "m0", "--format", "tflite", "--int8",
                           "--output", str(out), "--force"], capture_output=True, text=True, cwd=ROOT)
    rss = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    return {"command": "micronet-export --variant m0 --format tflite --int8", "exit_code": proc.returncode,
            "wall_s": round(time.time() - start, 2), "peak_rss_mb": round(max(rss, before) / 1024, 1)}


def artifacts_of(variant: str, args, tmp: Path, calib: np.ndarray) -> tuple[dict[str, Path], dict]:
    """Every artifact of ``variant`` the run times, keyed 'ours ort fp32' etc., and notes."""
    checkpoint, weights = checkpoint_for(variant, tmp)
    model = create_model(variant, checkpoint=checkpoint)
    plain = export_onnx(model)
    ort, tfl = optimize(plain, "onnxruntime"), optimize(plain, "tflite")
    paths, notes = {}, {"weights": weights, "ort_passes": ort.describe(), "tflite_passes": tfl.describe()}
    graphs = {"plain ort fp32": plain, "ours ort fp32": ort.model, "official ort fp32": official_onnx(model),
              "ours ort int8": quantize_onnx(ort.model, calib, op_types=ORT_INT8_OPS["conv"])}
    for key, proto in graphs.items():
        paths[key] = tmp / f"{variant} {key}.onnx".replace(" ", "_")
        onnx.save(proto, paths[key])
    for precision in ("fp32", "int8"):
        paths[f"ours litert {precision}"] = tmp / f"{variant}_ours_{precision}.tflite"
        paths[f"ours litert {precision}"].write_bytes(convert(tfl.model, precision, calibration=calib).flatbuffer)
    if args.onnx2tf_python and variant in args.onnx2tf_variants.split(","):
        for precision in ("fp32", "int8"):
            got = onnx2tf_convert(args.onnx2tf_python, graphs["official ort fp32"], tmp / variant, calib, precision == "int8")
            if got:
                paths[f"onnx2tf litert {precision}"] = got
    if args.litert_torch_python and variant in args.litert_torch_variants.split(","):
        for precision, path in litert_torch_convert(args.litert_torch_python, variant, checkpoint, tmp / f"{variant}_lt",
                                                    calib).items():
            paths[f"litert-torch litert {precision}"] = path
    return paths, notes


def measure(variant: str, paths: dict[str, Path], args, sample: np.ndarray) -> dict:
    p50 = interleaved_p50(paths, sample, rounds=args.rounds, runs=args.runs)
    rows = {}
    for key, path in paths.items():
        if path.suffix == ".tflite":
            stats = graph_stats(path.read_bytes())
        else:
            stats = {"num_ops": len(onnx.load(path).graph.node)}
        rows[key] = {"p50_ms": p50[key], **stats}
    profiles = {key: ort_op_breakdown(paths[key], sample) for key in ("ours ort fp32", "ours ort int8", "official ort fp32")}
    ratios = {name: round(p50[a] / p50[b], 3) for name, (a, b) in RATIOS.items() if a in p50 and b in p50}
    return {"variant": variant, "models": rows, "ratios": ratios, "ort_profile_ms_by_op": profiles}


def write(results: list[dict], machine: dict, job: dict, output: Path) -> None:
    rows = [[r["variant"], key, f"{m['p50_ms']:.3f}", str(m["num_ops"]), str(m.get("xnnpack_partitions", "-")),
             str(m.get("transposes", "-")), str(m.get("gathers", "-"))]
            for r in results for key, m in r["models"].items()]
    table = format_table(["variant", "model", "p50 ms", "ops", "XNNPACK partitions", "TRANSPOSE", "GATHER"], rows)
    ratio_rows = [[r["variant"], name, f"{v:.2f}"] for r in results for name, v in r["ratios"].items()]
    ratio_table = format_table(["variant", "ratio (1 thread, p50, one run)", "value"], ratio_rows)
    profile_rows = [[r["variant"], key, f"{sum(p.values()):.3f}", ", ".join(f"{k} {v:.3f}" for k, v in list(p.items())[:7])]
                    for r in results for key, p in r["ort_profile_ms_by_op"].items()]
    profile_table = format_table(["variant", "ORT model", "kernel ms (profiled)", "top op types (ms)"], profile_rows)
    print(table, ratio_table, profile_table, sep="\n\n")
    (output / "latency.json").write_text(json.dumps({"machine": machine, "main_job": job, "results": results},
                                                    indent=2) + "\n")
    (output / "latency.md").write_text(
        f"Machine: {machine['cpu']}, {machine['cores']} cores, Python {machine['python']}; 1 thread; each variant's "
        f"models timed in one process, interleaved.\n\n```\n{table}\n```\n\n```\n{ratio_table}\n```\n\n"
        f"ONNX Runtime's profiler, kernel time per op type (profiling adds its own overhead per node):\n\n"
        f"```\n{profile_table}\n```\n\nMain job, cold: {job}\n")


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--variants", default="m0,m1,m2,m3")
    p.add_argument("--rounds", type=int, default=30)
    p.add_argument("--runs", type=int, default=10)
    p.add_argument("--onnx2tf-python", default=str(ONNX2TF_ENV) if ONNX2TF_ENV.is_file() else None,
                   help="python of an environment with onnx2tf 1.29.24")
    p.add_argument("--onnx2tf-variants", default="m0", help="onnx2tf takes minutes per model: variants to convert")
    p.add_argument("--litert-torch-python", default=str(LITERT_TORCH_ENV) if LITERT_TORCH_ENV.is_file() else None,
                   help="python of an environment with litert-torch 0.10.0")
    p.add_argument("--litert-torch-variants", default="m0,m1,m2,m3")
    p.add_argument("--no-main-job", action="store_true")
    p.add_argument("--output", type=Path, default=ROOT / "benchmarks" / "results")
    args = p.parse_args(argv)
    photos = load_folder(DEFAULT_CALIBRATION_DIR).arrays
    calib, sample = photos[:100], photos[100]
    results = []
    with tempfile.TemporaryDirectory(prefix="micronet-bench-") as tmp:
        job = {} if args.no_main_job else main_job_cold(Path(tmp))
        for variant in args.variants.split(","):
            paths, notes = artifacts_of(variant, args, Path(tmp), calib)
            results.append({**measure(variant, paths, args, sample), **notes})
    machine = {"cpu": host_cpu(), "cores": os.cpu_count(), "python": platform.python_version()}
    args.output.mkdir(parents=True, exist_ok=True)
    write(results, machine, job, args.output)
    return 0


if __name__ == "__main__":
    sys.exit(main())
