#!/usr/bin/env python3
"""Self-contained model runner: standard library + numpy + whichever runtime the host has.

Copied as-is to a Raspberry Pi (ssh target) and used locally for the runtimes that cannot
share a process with TensorFlow (tflite-runtime). It never imports micronet_export.

    python3 runner.py MODEL [--runtime auto|litert|tflite_runtime|onnxruntime] [--inputs X.npy]
                      [--outputs Y.npy] [--threads N] [--runs N] [--warmup N] [--no-xnnpack]
                      [--marker-invokes N]

Inputs are float32 NCHW batches (the project's preprocessing); layout changes and int8 I/O
quantization happen here. Prints one JSON object on stdout.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import socket
import sys
import time

import numpy as np

RUNTIMES = ("litert", "tflite_runtime", "onnxruntime")
# This file, as copied to targets and run by the emulator.
RUNNER = os.path.abspath(__file__)
# Marker for micronet-export's instruction-counting qemu plugin (emulate/plugin/insn_count.c):
# getpid() with extra arguments, which the kernel ignores and the plugin watches for.
AARCH64_SYS_GETPID = 172
MARKER_MAGIC = 0x4D4E4554
MARKER_OPEN, MARKER_CLOSE = 1, 2


def _tflite_interpreter(runtime: str, model: str, threads: int, xnnpack: bool):
    if runtime == "litert":
        from ai_edge_litert import interpreter as mod
        import ai_edge_litert as pkg
    else:
        from tflite_runtime import interpreter as mod
        import tflite_runtime as pkg
    kwargs = {"model_path": model, "num_threads": threads}
    if not xnnpack:
        kwargs["experimental_op_resolver_type"] = mod.OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES
    interp = _quietly(lambda: mod.Interpreter(**kwargs))
    interp.allocate_tensors()
    return interp, getattr(pkg, "__version__", "unknown")


def _quietly(make):
    """Run ``make`` with fd 2 silenced: LiteRT prints "INFO: Created TensorFlow Lite XNNPACK
    delegate" from C++; exceptions still propagate."""
    sys.stderr.flush()
    saved = os.dup(2)
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, 2)
    try:
        return make()
    finally:
        os.dup2(saved, 2)
        os.close(saved)
        os.close(devnull)


class TFLiteModel:
    def __init__(self, runtime: str, model: str, threads: int, xnnpack: bool = True) -> None:
        self.interp, self.version = _tflite_interpreter(runtime, model, threads, xnnpack)
        self.inp = self.interp.get_input_details()[0]
        self.out = self.interp.get_output_details()[0]

    def set_input(self, sample_nchw: np.ndarray) -> None:
        shape = list(self.inp["shape"])
        # NHWC unless the model takes the sample's own layout (litert-torch keeps PyTorch's NCHW).
        nchw = len(shape) == 4 and shape[1:] == list(sample_nchw.shape) and shape[3] != shape[1]
        x = np.ascontiguousarray(sample_nchw if nchw else sample_nchw.transpose(1, 2, 0))[None]
        dtype = self.inp["dtype"]
        if dtype != np.float32:
            scale, zero = self.inp["quantization"]
            info = np.iinfo(dtype)
            x = np.clip(np.round(x / scale) + zero, info.min, info.max).astype(dtype)
        self.interp.set_tensor(self.inp["index"], x)

    def invoke(self) -> None:
        self.interp.invoke()

    def output(self) -> np.ndarray:
        y = self.interp.get_tensor(self.out["index"])
        if self.out["dtype"] != np.float32:
            scale, zero = self.out["quantization"]
            y = (y.astype(np.float32) - zero) * scale
        return y.astype(np.float32)


class OnnxModel:
    def __init__(self, model: str, threads: int, profile: bool = False) -> None:
        import onnxruntime as ort

        opts = ort.SessionOptions()
        self._profile_dir = None
        if profile:
            import tempfile

            # ORT writes its trace here; op_profile() reads it and removes the folder.
            self._profile_dir = tempfile.mkdtemp(prefix="ort-profile-")
            opts.enable_profiling = True
            opts.profile_file_prefix = os.path.join(self._profile_dir, "trace")
        opts.intra_op_num_threads = threads
        opts.inter_op_num_threads = 1
        opts.log_severity_level = 3
        self.session = ort.InferenceSession(model, opts, providers=["CPUExecutionProvider"])
        self.name = self.session.get_inputs()[0].name
        self.version = ort.__version__
        self.feed = None
        self.result = None

    def set_input(self, sample_nchw: np.ndarray) -> None:
        self.feed = {self.name: sample_nchw[None].astype(np.float32)}

    def invoke(self) -> None:
        self.result = self.session.run(None, self.feed)[0]

    def output(self) -> np.ndarray:
        return self.result.astype(np.float32)

    def op_profile(self) -> list[dict]:
        """Per-node mean times from ONNX Runtime's trace (kernel time events)."""
        import shutil

        path = self.session.end_profiling()
        try:
            with open(path) as f:
                events = json.load(f)
        finally:
            shutil.rmtree(self._profile_dir, ignore_errors=True)
        totals: dict[str, list] = {}
        for e in events:
            if e.get("cat") == "Node" and e.get("name", "").endswith("_kernel_time"):
                name = e["name"][: -len("_kernel_time")]
                entry = totals.setdefault(name, [e.get("args", {}).get("op_name", "?"), 0.0, 0])
                entry[1] += e.get("dur", 0) / 1e3
                entry[2] += 1
        rows = [{"name": n, "op": op, "ms": ms / max(c, 1), "calls": c} for n, (op, ms, c) in totals.items()]
        return sorted(rows, key=lambda r: -r["ms"])


def counted_invokes(model, count: int) -> None:
    """``count`` invokes between the two marker calls (aarch64 Linux only)."""
    if platform.machine() != "aarch64":
        raise SystemExit("error: --marker-invokes marks the loop for the aarch64 emulator's plugin; run it on aarch64")
    import ctypes

    syscall = ctypes.CDLL(None, use_errno=True).syscall
    syscall(AARCH64_SYS_GETPID, MARKER_MAGIC, MARKER_OPEN)
    for _ in range(count):
        model.invoke()
    syscall(AARCH64_SYS_GETPID, MARKER_MAGIC, MARKER_CLOSE)


def pick_runtime(model: str, requested: str) -> str:
    if model.endswith(".onnx"):
        return "onnxruntime"
    if requested != "auto":
        return requested
    for name, module in (("litert", "ai_edge_litert"), ("tflite_runtime", "tflite_runtime")):
        try:
            __import__(module)
            return name
        except ImportError:
            continue
    raise SystemExit("error: no TFLite runtime on this host (pip install ai-edge-litert or tflite-runtime)")


def cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.lower().startswith(("model name", "hardware", "cpu model")):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def peak_rss_mb() -> float:
    """This process's own peak resident memory. Linux's ru_maxrss survives fork and exec: a
    runner started by a large process reports that process's peak. VmHWM belongs to the
    address space exec made, so it is the runner's alone; ru_maxrss is the fallback elsewhere."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024.0  # kB
    except OSError:
        pass
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return rss / 1024.0 if sys.platform != "darwin" else rss / (1024.0 * 1024.0)


def percentile(values, q):
    return float(np.percentile(np.asarray(values), q))


def parse_args(argv=None):
    # argparse declarations only.
    p = argparse.ArgumentParser(description="Run a .tflite / .onnx model and time it.")
    p.add_argument("model")
    p.add_argument("--runtime", default="auto", choices=("auto",) + RUNTIMES)
    p.add_argument("--inputs", help="float32 NCHW .npy; default: one zero image of the model's size")
    p.add_argument("--outputs", help="write the float32 outputs for --inputs here (.npy)")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--runs", type=int, default=0)
    p.add_argument("--warmup", type=int, default=5)
    p.add_argument("--no-xnnpack", action="store_true")
    p.add_argument("--cpus", help="pin to these CPUs, e.g. 0 or 0,1 (Linux)")
    p.add_argument("--profile-ops", action="store_true", help="per-op times (ONNX Runtime's profiler)")
    p.add_argument("--marker-invokes", type=int, default=0,
                   help="after the timed runs, N more invokes between marker calls for an emulator's counting plugin")
    return p.parse_args(argv)


def default_inputs(model, runtime: str) -> np.ndarray:
    """One zero image of the model's input size, NCHW."""
    if runtime == "onnxruntime":
        shape = [d if isinstance(d, int) else 1 for d in model.session.get_inputs()[0].shape]
        return np.zeros(shape, np.float32)
    n, h, w, c = model.inp["shape"]
    return np.zeros((1, c, h, w), np.float32)


def timed_invokes(model, sample: np.ndarray, warmup: int, runs: int) -> list[float]:
    """Milliseconds of each of ``runs`` invokes after ``warmup`` untimed ones."""
    times = []
    model.set_input(sample)
    for _ in range(warmup):
        model.invoke()
    for _ in range(runs):
        start = time.perf_counter()
        model.invoke()
        times.append((time.perf_counter() - start) * 1e3)
    return times


def describe_run(args, model, runtime: str, init_ms: float, runs: int, samples: int) -> dict:
    return {
        "runner": "micronet_export.profile.runner",
        "model": os.path.basename(args.model),
        "model_size_bytes": os.path.getsize(args.model),
        "runtime": runtime,
        "runtime_version": model.version,
        "xnnpack": runtime != "onnxruntime" and not args.no_xnnpack,
        # What the delegate took: tflite-runtime 2.14's pip build runs int8 models without
        # XNNPACK (0 partitions) although it delegates float ones.
        "xnnpack_partitions": (None if runtime == "onnxruntime" else
                               sum(op["op_name"] == "DELEGATE" for op in model.interp._get_ops_details())),
        "threads": args.threads,
        "pid": os.getpid(),
        "hostname": socket.gethostname(),
        # Set by sshd for remote sessions: shows which connection ran the numbers.
        "ssh_connection": os.environ.get("SSH_CONNECTION"),
        "machine": platform.machine(),
        "python": platform.python_version(),
        "numpy": np.__version__,
        "init_ms": round(init_ms, 3),
        "runs": runs,
        "marker_invokes": args.marker_invokes,
        "samples": samples,
        "cpu": cpu_model(),
        "cpus": sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None,
        "peak_rss_mb": round(peak_rss_mb(), 1),
    }


def main(argv=None) -> int:
    args = parse_args(argv)
    if args.cpus:
        os.sched_setaffinity(0, {int(c) for c in args.cpus.split(",")})
    runtime = pick_runtime(args.model, args.runtime)
    t0 = time.perf_counter()
    if runtime == "onnxruntime":
        model = OnnxModel(args.model, args.threads)
    else:
        model = TFLiteModel(runtime, args.model, args.threads, xnnpack=not args.no_xnnpack)
    init_ms = (time.perf_counter() - t0) * 1e3
    inputs = np.load(args.inputs).astype(np.float32) if args.inputs else default_inputs(model, runtime)
    outputs = []
    for sample in inputs:
        model.set_input(sample)
        model.invoke()
        outputs.append(model.output())
    if args.outputs:
        np.save(args.outputs, np.concatenate(outputs))
    times = timed_invokes(model, inputs[0], args.warmup, args.runs) if args.runs > 0 else []
    if args.marker_invokes > 0:
        model.set_input(inputs[0])
        counted_invokes(model, args.marker_invokes)
    result = describe_run(args, model, runtime, init_ms, len(times), int(len(inputs)))
    if args.profile_ops and runtime == "onnxruntime":
        # A second, profiling session: the profiler's overhead stays out of the latencies.
        profiled = OnnxModel(args.model, args.threads, profile=True)
        profiled.set_input(inputs[0])
        for _ in range(max(args.runs, 10)):
            profiled.invoke()
        result["ops"] = profiled.op_profile()[:200]
    if times:
        result["latency_ms"] = {
            "p50": percentile(times, 50), "p90": percentile(times, 90), "p99": percentile(times, 99),
            "min": float(np.min(times)), "mean": float(np.mean(times)),
        }
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
