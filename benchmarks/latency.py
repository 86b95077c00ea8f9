"""Latency of MicroNet M0–M3 on this machine, ours vs the official formulation, in one run.

    python benchmarks/latency.py [--variants m0,m1,m2,m3] [--threads 1,2] [--runs 100]
                                 [--onnx2tf-python /path/to/venv/bin/python]

For each variant (non-degenerate random weights, BatchNorm re-estimated on the calibration
photos, so int8 scales are realistic):
  ours      export formulation → ONNX → ORT fp32 / ORT int8 (QDQ) → TFLite fp32 / int8 (LiteRT, XNNPACK)
  official  official formulation (index gather, 5-D views) → torch.onnx → ORT fp32 / ORT int8;
            → onnx2tf 1.29.24 fp32 / int8 when --onnx2tf-python names an environment that has it
            (onnx2tf pins TF 2.19 / numpy 1.26 / protobuf 4 with ==, so it lives outside ours)
Also times the main job cold (`micronet-export --variant m0 --format tflite --int8`) and its
peak RSS. Every latency comes from runner.py in a fresh process; ratios are taken within this
one run. Writes latency.md, latency.json and latency.png under --output.
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
import torch

ROOT = Path(__file__).resolve().parent.parent
TOP_OPS_SAVED = 20

from micronet_export import create_model  # noqa: E402
from micronet_export.export import ORT_INT8_OPS  # noqa: E402
from micronet_export.images import DEFAULT_CALIBRATION_DIR, load_folder  # noqa: E402
from micronet_export.onnx_export import export_onnx, summarize_graph, to_onnx_model  # noqa: E402
from micronet_export.profile import ProfileOptions, plot_profile  # noqa: E402
from micronet_export.profile.targets import profile_local  # noqa: E402
from micronet_export.model.random_weights import realistic_weights  # noqa: E402
from micronet_export.quantize import quantize_onnx  # noqa: E402
from micronet_export.report import format_table  # noqa: E402
from micronet_export.tflite_export import convert  # noqa: E402
from micronet_export.tflite_inspect import delegation, op_histogram  # noqa: E402


def onnx2tf_convert(python: str, onnx_path: Path, out_dir: Path, calib: np.ndarray, int8: bool) -> Path | None:
    """onnx2tf as a user runs it; its download of a sample calibration file is replaced by our
    photos (it would fail offline).

    The TorchScript export is simplified with onnxsim first: on the raw export (883 nodes)
    onnx2tf 1.29.24 stops in its Reshape handler ("Output tensors of a Functional model must be
    the output of a TensorFlow Layer", on a constant shape), with TF 2.19 as with 2.21.
    """
    import onnxsim

    work = out_dir / ("o2t_int8" if int8 else "o2t_fp32")
    work.mkdir(parents=True, exist_ok=True)
    simplified, ok = onnxsim.simplify(onnx.load(onnx_path))
    if not ok:
        print("onnxsim could not check the simplified official model", file=sys.stderr)
    onnx_path = work / "official_simplified.onnx"
    onnx.save(simplified, onnx_path)
    nhwc = np.ascontiguousarray(calib.transpose(0, 2, 3, 1))
    np.save(work / "calibration_image_sample_data_20x128x128x3_float32.npy", nhwc[:20])
    np.save(work / "calib.npy", nhwc)
    cmd = [python, "-m", "onnx2tf", "-i", str(onnx_path), "-o", str(work / "saved"), "-osd"]
    if int8:
        cmd += ["-oiqt", "-qt", "per-channel", "-cind", "input", str(work / "calib.npy"),
                "[[[[0.485,0.456,0.406]]]]", "[[[[0.229,0.224,0.225]]]]"]
    start = time.time()
    proc = subprocess.run(cmd, cwd=work, capture_output=True, text=True, timeout=1800)
    if proc.returncode != 0:
        print(f"onnx2tf failed ({'int8' if int8 else 'fp32'}): {proc.stderr.strip().splitlines()[-1:]}", file=sys.stderr)
        return None
    candidates = sorted((work / "saved").glob("*_full_integer_quant.tflite" if int8 else "*_float32.tflite"))
    print(f"onnx2tf {'int8' if int8 else 'fp32'}: {time.time() - start:.0f} s", file=sys.stderr)
    return candidates[0] if candidates else None


def main_job_cold(tmp: Path) -> dict:
    out = tmp / "main-job"
    start = time.time()
    before = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    proc = subprocess.run([sys.executable, "-m", "micronet_export.cli", "--variant", "m0", "--format", "tflite", "--int8",
                           "--output", str(out), "--force"], capture_output=True, text=True, cwd=ROOT)
    wall = time.time() - start
    rss = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    return {"command": "micronet-export --variant m0 --format tflite --int8", "exit_code": proc.returncode,
            "wall_s": round(wall, 2), "peak_rss_mb": round(max(rss, before) / 1024, 1)}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--variants", default="m0,m1,m2,m3")
    p.add_argument("--threads", default="1,2")
    p.add_argument("--runs", type=int, default=100)
    p.add_argument("--onnx2tf-python", help="python of an environment with onnx2tf 1.29.24 installed")
    p.add_argument("--onnx2tf-variants", default="m0", help="onnx2tf takes minutes per model: variants to convert")
    p.add_argument("--output", type=Path, default=ROOT / "benchmarks" / "results")
    args = p.parse_args(argv)
    threads = [int(t) for t in args.threads.split(",")]
    photos = load_folder(DEFAULT_CALIBRATION_DIR).arrays
    calib = photos[:100]
    opts = ProfileOptions(threads=threads, runs=args.runs, warmup=10)
    args.output.mkdir(parents=True, exist_ok=True)
    results, rows = [], []
    with tempfile.TemporaryDirectory(prefix="micronet-bench-") as tmp:
        tmp = Path(tmp)
        job = main_job_cold(tmp)
        for variant in args.variants.split(","):
            model = realistic_weights(create_model(variant), photos[:64])
            ours = export_onnx(model)
            official = to_onnx_model(_official_copy(model))
            arts = {}
            for name, proto in (("ours", ours), ("official", official)):
                onnx.save(proto, tmp / f"{variant}_{name}_fp32.onnx")
                # As the CLI ships it: Conv/Gemm in int8 (the default --ort-int8-ops).
                onnx.save(quantize_onnx(proto, calib, op_types=ORT_INT8_OPS["conv"]), tmp / f"{variant}_{name}_int8.onnx")
                arts[(name, "ort", "fp32")] = tmp / f"{variant}_{name}_fp32.onnx"
                arts[(name, "ort", "int8")] = tmp / f"{variant}_{name}_int8.onnx"
            for prec in ("fp32", "int8"):
                path = tmp / f"{variant}_ours_{prec}.tflite"
                path.write_bytes(convert(ours, prec, calibration=calib).flatbuffer)
                arts[("ours", "litert", prec)] = path
            if args.onnx2tf_python and variant in args.onnx2tf_variants.split(","):
                for prec in ("fp32", "int8"):
                    got = onnx2tf_convert(args.onnx2tf_python, arts[("official", "ort", "fp32")], tmp / variant, calib,
                                          prec == "int8")
                    if got:
                        arts[("official", "litert", prec)] = got
            for (form, runtime, prec), path in arts.items():
                ops = op_histogram(path) if path.suffix == ".tflite" else summarize_graph(onnx.load(path)).ops
                graph = delegation(path) if path.suffix == ".tflite" else {}
                for r in [profile_local(path, t, opts) for t in threads]:
                    r.update(variant=variant, formulation=form, engine=runtime, precision=prec,
                             num_ops=int(sum(ops.values())), transposes=int(ops.get("TRANSPOSE", ops.get("Transpose", 0))),
                             gathers=int(sum(v for k, v in ops.items() if k.upper().startswith("GATHER"))), **graph)
                    r["model"] = f"{variant} {form} {runtime} {prec}"
                    results.append(r)
    for r in results:
        rows.append([r["variant"], r["formulation"], r["engine"], r["precision"], str(r["threads"]),
                     f"{r['latency_ms']['p50']:.3f}", f"{r['latency_ms']['p90']:.3f}", str(r["num_ops"]),
                     str(r.get("xnnpack_partitions", "-")), str(r["transposes"]), str(r["gathers"])])
    table = format_table(["variant", "formulation", "engine", "precision", "threads", "p50 ms", "p90 ms", "ops",
                          "XNNPACK partitions", "transposes", "gathers"], rows)

    def p50(v, form, eng, prec, t=1):
        for r in results:
            if (r["variant"], r["formulation"], r["engine"], r["precision"], r["threads"]) == (v, form, eng, prec, t):
                return r["latency_ms"]["p50"]
        return None

    ratios = []
    for v in args.variants.split(","):
        pairs = {
            "ORT int8 / ORT fp32 (ours)": (p50(v, "ours", "ort", "int8"), p50(v, "ours", "ort", "fp32")),
            "ORT fp32 ours / official": (p50(v, "ours", "ort", "fp32"), p50(v, "official", "ort", "fp32")),
            "LiteRT int8 / LiteRT fp32 (ours)": (p50(v, "ours", "litert", "int8"), p50(v, "ours", "litert", "fp32")),
            "LiteRT fp32 ours / onnx2tf fp32": (p50(v, "ours", "litert", "fp32"), p50(v, "official", "litert", "fp32")),
            "LiteRT int8 ours / onnx2tf int8": (p50(v, "ours", "litert", "int8"), p50(v, "official", "litert", "int8")),
        }
        for k, (a, b) in pairs.items():
            if a and b:
                ratios.append([v, k, f"{a / b:.2f}"])
    ratio_table = format_table(["variant", "ratio (1 thread, p50)", "value"], ratios)
    machine = {"cpu": results[0].get("cpu") if results else None, "cores": os.cpu_count(),
               "python": platform.python_version(), "torch": torch.__version__}
    print(table)
    print()
    print(ratio_table)
    print(f"\nmain job cold: {job}")
    print(f"machine: {machine}")
    # The 20 slowest ORT nodes per model are enough to read; all of them made a 1 MB file.
    saved = [dict(r, ops=r.get("ops", [])[:TOP_OPS_SAVED]) for r in results]
    (args.output / "latency.json").write_text(json.dumps({"machine": machine, "main_job": job, "results": saved,
                                                         "ratios": ratios}, indent=2, default=str) + "\n")
    (args.output / "latency.md").write_text(
        f"Machine: {machine}\n\n```\n{table}\n```\n\n```\n{ratio_table}\n```\n\nMain job, cold: {job}\n")
    plot_profile([dict(r, ops=[]) for r in results if r["variant"] == args.variants.split(",")[0]],
                 args.output / "latency.png")
    return 0


def _official_copy(model):
    import copy

    return copy.deepcopy(model).set_formulation("official").eval()


if __name__ == "__main__":
    sys.exit(main())
