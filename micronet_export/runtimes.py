"""Run an artifact on numpy inputs: PyTorch, ONNX Runtime, LiteRT, tflite-runtime.

Every runner takes NCHW float32 batches (the output of :func:`images.preprocess`) and returns
float32 logits; layout changes and int8 (de)quantization of model I/O happen here, once.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np


def onnx_session(model: str | Path | bytes, threads: int = 1):
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.log_severity_level = 3  # ORT warns about unused initializers in quantized graphs
    source = model if isinstance(model, bytes) else str(model)
    return ort.InferenceSession(source, options, providers=["CPUExecutionProvider"])


def run_onnx(model, batch: np.ndarray, threads: int = 1, outputs: list[str] | None = None) -> list[np.ndarray] | np.ndarray:
    """Logits for ``batch`` (N, 3, S, S), one sample at a time (works for static batch 1)."""
    session = model if hasattr(model, "run") else onnx_session(model, threads)
    name = session.get_inputs()[0].name
    results = [session.run(outputs, {name: sample[None].astype(np.float32)}) for sample in batch]
    if outputs is None:
        return np.concatenate([r[0] for r in results])
    return [np.concatenate([r[i] for r in results]) for i in range(len(outputs))]


def run_torch(model, batch: np.ndarray) -> np.ndarray:
    import torch

    with torch.no_grad():
        return model(torch.from_numpy(np.ascontiguousarray(batch, dtype=np.float32))).numpy()


def run_torch_float64(model, batch: np.ndarray) -> np.ndarray:
    """The same network in float64 (a copy): how far float32 itself is from exact."""
    import copy

    import torch

    with torch.no_grad():
        return copy.deepcopy(model).double()(torch.from_numpy(np.asarray(batch, dtype=np.float64))).numpy()


RUNNER = Path(__file__).resolve().parent / "profile" / "runner.py"


def as_model_input(model: str | Path, batch: np.ndarray) -> np.ndarray:
    """``batch`` (normalised, as images.preprocess makes it) in the pixels the artifact takes."""
    from micronet_export.metadata import tflite_takes_raw_pixels

    if Path(model).suffix == ".tflite" and tflite_takes_raw_pixels(model):
        from micronet_export.input_normalization import denormalize

        return denormalize(batch)
    return batch


def run_tflite(model: str | Path, batch: np.ndarray, threads: int = 1) -> np.ndarray:
    """LiteRT (XNNPACK) in this process; int8/uint8 I/O (de)quantized with the model's params,
    normalised images turned back into pixel values for a raw-pixel model."""
    from micronet_export.profile.runner import TFLiteModel
    from micronet_export.quiet import quiet_native_output

    batch = as_model_input(model, batch)
    with quiet_native_output(stdout=False):  # LiteRT's "INFO: Created ... XNNPACK delegate" line
        m = TFLiteModel("litert", str(model), threads)
    outs = []
    for sample in batch:
        m.set_input(sample)
        m.invoke()
        outs.append(m.output())
    return np.concatenate(outs)


def run_in_runner(model: str | Path, batch: np.ndarray, runtime: str, threads: int = 1,
                  python: str | None = None, timeout: float = 600) -> tuple[np.ndarray, dict]:
    """Outputs and the runner's JSON, from a child process (tflite-runtime cannot share a
    process with TensorFlow)."""
    import json
    import subprocess
    import sys
    import tempfile

    from micronet_export.errors import UserError

    with tempfile.TemporaryDirectory(prefix="micronet-run-") as tmp:
        inputs, outputs = Path(tmp) / "inputs.npy", Path(tmp) / "outputs.npy"
        np.save(inputs, as_model_input(model, batch).astype(np.float32))
        proc = subprocess.run(
            [python or sys.executable, str(RUNNER), str(model), "--runtime", runtime, "--inputs", str(inputs),
             "--outputs", str(outputs), "--threads", str(threads)],
            capture_output=True, text=True, timeout=timeout,
        )
        if proc.returncode != 0:
            last = (proc.stderr.strip().splitlines() or ["no output"])[-1]
            raise UserError(f"{runtime} could not run {Path(model).name}: {last}")
        return np.load(outputs), json.loads(proc.stdout.strip().splitlines()[-1])
