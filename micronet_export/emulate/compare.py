"""Emulated ARM outputs against the same artifact on this x86 host, same runtime.

int8 is judged in output quantization steps (the logits' int8 grid): ARM and x86 XNNPACK
kernels requantize with different rounding, so a model can differ by a step here and there
that later layers carry on. fp32 is judged like every other fp32 cell (max abs relative to the
largest logit): only the order of float operations differs.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from micronet_export.errors import UserError
from micronet_export.parity import FP32_THRESHOLDS, Thresholds, compare

# int8: a step of rounding in each requantizing op may grow through the layers after it;
# 16 steps (1/16 of the int8 range) is far from any answer-changing difference, which the
# top-1 bound catches on its own. fp32 / fp16 (fp16 weights, fp32 compute): float32 round-off.
EMULATED_INT8_THRESHOLDS = Thresholds(max_steps=16, top1_agreement=0.90)
EMULATED_FLOAT_THRESHOLDS = FP32_THRESHOLDS


@dataclass(frozen=True)
class ModelIO:
    input_shape_nchw: tuple[int, int, int, int]
    output_scale: float | None  # set for quantized outputs

    @property
    def quantized(self) -> bool:
        return self.output_scale is not None


def model_io(path: str | Path) -> ModelIO:
    from micronet_export.profile.runner import _quietly

    from ai_edge_litert.interpreter import Interpreter

    interp = _quietly(lambda: Interpreter(model_path=str(path)))
    n, h, w, c = (int(d) for d in interp.get_input_details()[0]["shape"])
    scale, _ = interp.get_output_details()[0]["quantization"]
    return ModelIO((n, c, h, w), float(scale) if scale else None)


@functools.lru_cache(maxsize=4)
def holdout_images(calibration_dir: str | Path, input_size: int) -> np.ndarray:
    """The images an export holds out of calibration (same loader, same split)."""
    from micronet_export.run_context import MIN_CALIBRATION_IMAGES, split_calibration
    from micronet_export.images import load_folder

    images = load_folder(Path(calibration_dir), input_size=input_size, min_images=MIN_CALIBRATION_IMAGES)
    return split_calibration(images.arrays)[1]


def parity_images(io: ModelIO, count: int = 4) -> np.ndarray:
    """Real photos for ``profile --target emu:``'s parity: the first held-out calibration photos
    at the model's size. Not noise: on random-weight networks (reference state_dicts, M2/M3's
    benchmark weights) standard-normal inputs drive activations into a regime where float
    reordering alone moves logits by tens of percents (ONNX Runtime vs PyTorch on x86 included)."""
    from micronet_export.images import DEFAULT_CALIBRATION_DIR

    _, _, h, w = io.input_shape_nchw
    if h != w:
        raise UserError(f"emulated parity needs a square input, the model takes {h}x{w}")
    return holdout_images(str(DEFAULT_CALIBRATION_DIR), h)[:count]


def emulated_vs_x86(emulated: np.ndarray, x86: np.ndarray, io: ModelIO) -> dict[str, float]:
    metrics = compare(emulated, x86)
    if io.quantized:
        metrics["max_steps"] = round(metrics["max_abs"] / io.output_scale, 3)
        # How decided x86's own answers are: top-1 minus top-2 logit, in steps. Where it is
        # within a few steps (flat int8 logits, e.g. random weights), top-1 agreement
        # measures ties, not kernels.
        top2 = np.sort(np.asarray(x86, np.float64).reshape(len(x86), -1), axis=1)[:, -2:]
        metrics["x86_top1_margin_steps_median"] = round(float(np.median(top2[:, 1] - top2[:, 0])) / io.output_scale, 3)
    return metrics


def thresholds_for(io: ModelIO, int8: Thresholds = EMULATED_INT8_THRESHOLDS,
                   float_: Thresholds = EMULATED_FLOAT_THRESHOLDS) -> Thresholds:
    return int8 if io.quantized else float_
