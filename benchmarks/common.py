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
    """(``"m0 fp32"``, flatbuffer) for every variant, fp32 and plain min/max int8, 224 px, from
    the graph the TFLite stage reads (the plain export through the TFLite target's passes)."""
    from micronet_export.onnx_export import export_onnx
    from micronet_export.passes import optimize
    from micronet_export.tflite_export import convert

    photos = load_folder(DEFAULT_CALIBRATION_DIR).arrays[:calibration_images]
    for variant in variants:
        proto = optimize(export_onnx(variant_model(variant, tmp)), "tflite").model
        for precision in ("fp32", "int8"):
            yield f"{variant} {precision}", convert(proto, precision, calibration=photos).flatbuffer


def graph_stats(flatbuffer: bytes) -> dict:
    """Op histogram, op count, XNNPACK partitions, TRANSPOSE and GATHER count of a .tflite."""
    from micronet_export.tflite_inspect import delegation, op_histogram

    ops = op_histogram(flatbuffer)
    graph = delegation(flatbuffer)
    return {"ops": ops, "num_ops": int(sum(ops.values())), "xnnpack_partitions": graph["xnnpack_partitions"],
            "ops_outside_xnnpack": graph["ops_outside_xnnpack"], "transposes": ops.get("TRANSPOSE", 0),
            "gathers": ops.get("GATHER", 0) + ops.get("GATHER_ND", 0)}


def official_onnx(model):
    """The path a user takes today: the official formulation, torch.onnx, then onnxsim."""
    import copy

    from micronet_export.onnx_export import simplify, to_onnx_model

    return simplify(to_onnx_model(copy.deepcopy(model).set_formulation("official").eval()))


def interleaved_p50(paths: dict, sample, rounds: int = 30, runs: int = 10, threads: int = 1) -> dict:
    """p50 latency (ms) of each model in ``paths`` ({key: .onnx/.tflite path}), measured in
    one process in interleaved rounds (each round runs every model ``runs`` times), so that
    machine noise hits all of them alike and their ratios hold within the run."""
    import time

    import numpy as np

    from micronet_export.profile.runner import OnnxModel, TFLiteModel

    models = {}
    for key, path in paths.items():
        model = OnnxModel(str(path), threads) if str(path).endswith(".onnx") else TFLiteModel("litert", str(path), threads)
        model.set_input(sample)
        for _ in range(runs):
            model.invoke()
        models[key] = model
    times = {key: [] for key in models}
    for _ in range(rounds):
        for key, model in models.items():
            for _ in range(runs):
                start = time.perf_counter()
                model.invoke()
                times[key].append(time.perf_counter() - start)
    return {key: round(float(np.median(t)) * 1e3, 4) for key, t in times.items()}


def ort_op_breakdown(path, sample, runs: int = 200, threads: int = 1) -> dict[str, float]:
    """ONNX Runtime's own profile: mean kernel ms per op type (the profiler's trace goes to a
    temporary folder the runner removes)."""
    from collections import defaultdict

    from micronet_export.profile.runner import OnnxModel

    model = OnnxModel(str(path), threads, profile=True)
    model.set_input(sample)
    for _ in range(runs):
        model.invoke()
    by_type: dict[str, float] = defaultdict(float)
    for row in model.op_profile():
        by_type[row["op"]] += row["ms"]
    return dict(sorted(((k, round(v, 4)) for k, v in by_type.items()), key=lambda kv: -kv[1]))


ONNX2TF_ENV = Path("/work/envs/onnx2tf/bin/python")
LITERT_TORCH_ENV = Path("/work/envs/litert-torch/bin/python")


def onnx2tf_convert(python, official, out_dir: Path, calib, int8: bool) -> Path | None:
    """onnx2tf as a user runs it on the onnxsim-simplified official export; its download of a
    sample calibration file is replaced by our photos (it would fail offline)."""
    import subprocess
    import sys
    import time

    import numpy as np
    import onnx

    work = out_dir / ("o2t_int8" if int8 else "o2t_fp32")
    work.mkdir(parents=True, exist_ok=True)
    onnx.save(official, work / "official_simplified.onnx")
    nhwc = np.ascontiguousarray(calib.transpose(0, 2, 3, 1))
    np.save(work / "calibration_image_sample_data_20x128x128x3_float32.npy", nhwc[:20])
    np.save(work / "calib.npy", nhwc)
    cmd = [str(python), "-m", "onnx2tf", "-i", str(work / "official_simplified.onnx"), "-o", str(work / "saved"), "-osd"]
    if int8:
        cmd += ["-oiqt", "-qt", "per-channel", "-cind", "input", str(work / "calib.npy"),
                "[[[[0.485,0.456,0.406]]]]", "[[[[0.229,0.224,0.225]]]]"]
    start = time.time()
    proc = subprocess.run(cmd, cwd=work, capture_output=True, text=True, timeout=1800)
    if proc.returncode != 0:
        print(f"onnx2tf failed ({'int8' if int8 else 'fp32'}): {proc.stderr.strip().splitlines()[-1:]}", file=sys.stderr)
        return None
    found = sorted((work / "saved").glob("*_full_integer_quant.tflite" if int8 else "*_float32.tflite"))
    print(f"onnx2tf {'int8' if int8 else 'fp32'}: {time.time() - start:.0f} s", file=sys.stderr)
    return found[0] if found else None


def litert_torch_convert(python, variant: str, checkpoint: Path, out_dir: Path, calib) -> dict[str, Path]:
    """litert-torch fp32 and PT2E int8 of the official formulation (benchmarks/litert_torch_convert.py
    in its own environment); {} when it fails."""
    import subprocess
    import sys

    import numpy as np

    out_dir.mkdir(parents=True, exist_ok=True)
    np.save(out_dir / "calibration.npy", calib)
    proc = subprocess.run([str(python), str(ROOT / "benchmarks" / "litert_torch_convert.py"), "--variant", variant,
                           "--checkpoint", str(checkpoint), "--calibration", str(out_dir / "calibration.npy"),
                           "--output", str(out_dir)], capture_output=True, text=True, timeout=3600)
    if proc.returncode != 0:
        print(f"litert-torch failed: {proc.stderr.strip().splitlines()[-1:]}", file=sys.stderr)
        return {}
    return {p: out_dir / f"litert_torch_{p}.tflite" for p in ("fp32", "int8")}
