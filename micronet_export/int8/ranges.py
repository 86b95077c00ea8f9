"""Activation ranges for static int8: min/max, or the range that keeps each image's error low.

Min/max fits the most extreme calibration image. On networks whose late activations change
scale from image to image (MicroNet's reference weights: the largest image's activations are
50-200x the median image's), that range leaves a typical image a handful of the 256 levels,
and its features quantize to zero. ``relmse`` picks, per tensor, the range that minimises the
*mean over images of the relative* squared quantization error (clipping included): what a
per-image metric like logit cosine feels. The few images beyond the range are clipped
instead of every other image being crushed.

Statistics are per-image histograms of |x| on logarithmic bins (per sign), so small images
are resolved as well as large ones, and the error of any candidate range is computed from the
histogram without touching the data again.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

import numpy as np

RANGE_METHODS = ("minmax", "relmse")
LOG_BINS = 256
# Bins span |x| from DYNAMIC_RANGE * R to R (R: the tensor's largest magnitude).
DYNAMIC_RANGE = 1e-5
# Candidate ranges: the min/max range times 2^(-k/4), k = 0 .. SHRINK_STEPS - 1 (down to
# about 1/3000 of it, enough for the 200x image-to-image scale changes seen).
SHRINK_STEPS = 48
LEVELS = 255
# Values per tensor and image that enter the histogram.
MAX_SAMPLES_PER_IMAGE = 1 << 16


@dataclass
class TensorStats:
    """Per-image statistics of one tensor: exact min/max and log histograms per sign."""

    low: float
    high: float
    edges: np.ndarray
    histograms: list[np.ndarray] = field(default_factory=list)  # each (2, LOG_BINS): +, -

    @classmethod
    def for_bounds(cls, low: float, high: float) -> "TensorStats":
        top = max(abs(low), abs(high), 1e-12)
        edges = np.concatenate([[0.0], np.geomspace(top * DYNAMIC_RANGE, top, LOG_BINS)])
        return cls(low=float(low), high=float(high), edges=edges)

    def add(self, values: np.ndarray) -> None:
        flat = np.asarray(values, dtype=np.float32).ravel()
        if flat.size > MAX_SAMPLES_PER_IMAGE:  # a regular subsample sees the same distribution
            flat = flat[:: -(-flat.size // MAX_SAMPLES_PER_IMAGE)]
        magnitude = np.abs(flat)
        first = self.edges[1]
        with np.errstate(divide="ignore"):
            index = 1 + np.floor(np.log(magnitude / first) / np.log(self.edges[2] / first))
        index = np.clip(np.nan_to_num(index, nan=0.0, neginf=0.0), 0, LOG_BINS - 1).astype(np.int64)
        positive = flat > 0
        hist = np.zeros((2, LOG_BINS))
        hist[0] = np.bincount(index[positive], minlength=LOG_BINS)
        hist[1] = np.bincount(index[~positive], minlength=LOG_BINS)
        self.histograms.append(hist)


def collect(run: Callable[[np.ndarray], dict[str, np.ndarray]], images: Iterable[np.ndarray],
            bounds: dict[str, tuple[float, float]]) -> dict[str, TensorStats]:
    """Histograms of every tensor in ``bounds`` over ``images``; ``run(image)`` returns the
    tensors of one image by name. Values beyond the bounds land in the outermost bin."""
    stats = {name: TensorStats.for_bounds(lo, hi) for name, (lo, hi) in bounds.items()}
    for image in images:
        values = run(image)
        for name, s in stats.items():
            if name in values:
                s.add(values[name])
    return stats


def _bin_centres(edges: np.ndarray) -> np.ndarray:
    lower = np.maximum(edges[:-1], edges[1] * 0.5)
    return np.sqrt(lower * edges[1:])


def relative_errors(stats: TensorStats, lows: np.ndarray, highs: np.ndarray) -> np.ndarray:
    """For each candidate range (lows[k], highs[k]): the mean over images of (quantization +
    clipping error energy) / signal energy."""
    hists = np.stack(stats.histograms)  # (images, 2, bins)
    centres = _bin_centres(stats.edges)
    energy = (hists * centres**2).sum(axis=(1, 2))
    steps = (highs - lows) / LEVELS
    # Below half a step a value rounds to zero (error x^2); above, the error is uniform.
    rounding = np.where(centres[None] < steps[:, None] / 2, centres[None] ** 2, steps[:, None] ** 2 / 12.0)
    errors = np.empty((len(lows), 2, LOG_BINS))
    for side, limits in ((0, highs), (1, -lows)):
        clipped = centres[None] > limits[:, None]
        errors[:, side] = np.where(clipped, (centres[None] - limits[:, None]) ** 2, rounding)
    per_image = np.einsum("isb,ksb->ik", hists, errors)
    seen = energy > 0
    if not seen.any():
        return np.zeros(len(lows))
    return (per_image[seen] / energy[seen, None]).mean(axis=0)


def relmse_range(stats: TensorStats) -> tuple[float, float]:
    """The min/max range shrunk by the factor that minimises :func:`relative_errors`."""
    low, high = min(stats.low, 0.0), max(stats.high, 0.0)
    if high - low <= 0 or not stats.histograms:
        return low, high
    shrink = 2.0 ** (-np.arange(SHRINK_STEPS) / 4)
    best = int(np.argmin(relative_errors(stats, low * shrink, high * shrink)))
    return low * shrink[best], high * shrink[best]


def choose_ranges(stats: dict[str, TensorStats], method: str) -> dict[str, tuple[float, float]]:
    if method == "minmax":
        return {name: (s.low, s.high) for name, s in stats.items()}
    if method == "relmse":
        return {name: relmse_range(s) for name, s in stats.items()}
    raise ValueError(f"unknown range method {method!r}; valid: {', '.join(RANGE_METHODS)}")
