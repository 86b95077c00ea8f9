"""The export's int8 stage for either runtime: search a plan, measure what it costs.

``int8_stage`` builds the runtime's backend, runs :func:`search.search` on validation photos
(calibration photos the range statistics never saw), and returns the chosen artifact with
what the report shows: the plan, every trial, each unit's sensitivity and int8 error, and
the latency the float islands cost against the plain int8 model.
"""

from __future__ import annotations

import logging
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import onnx

from micronet_export.int8.search import Int8Options, Int8Plan, SearchResult, search

log = logging.getLogger(__name__)

# One in VALIDATION_EVERY calibration photos scores the candidates; the others feed the range
# statistics (the min/max calibration of the plain model keeps using all of them, so that
# model stays exactly what the tool always made).
VALIDATION_EVERY = 4
MIN_VALIDATION_IMAGES = 4
LATENCY_ROUNDS, LATENCY_RUNS = 5, 30


@dataclass
class Int8Stage:
    artifact: object
    result: SearchResult
    summary: dict = field(default_factory=dict)

    @property
    def plan(self) -> Int8Plan:
        return self.result.plan


def split_validation(calibration: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(statistics images, validation images) from the calibration photos."""
    index = np.arange(len(calibration))
    validation = index % VALIDATION_EVERY == VALIDATION_EVERY - 1
    if validation.sum() < MIN_VALIDATION_IMAGES:
        return calibration, calibration  # too few photos to hold any out: score in-sample
    return calibration[~validation], calibration[validation]


def int8_stage(runtime: str, fp32: onnx.ModelProto, calibration: np.ndarray, reference_of, options: Int8Options, *,
               io_dtype: str = "int8", op_types=("Conv", "Gemm"), threads: int = 1, per_layer_images=None,
               calibration_method: str = "minmax", input_range: tuple[float, float] | None = None) -> Int8Stage:
    """``reference_of(images)`` gives the float logits to match (PyTorch)."""
    stats_images, validation = split_validation(calibration)
    if runtime == "tflite":
        from micronet_export.int8.tflite_backend import TFLiteInt8Backend

        backend = TFLiteInt8Backend(fp32, calibration, stats_images=stats_images, io_dtype=io_dtype, threads=threads,
                                    input_range=input_range)
    else:
        from micronet_export.int8.ort_backend import OrtInt8Backend

        backend = OrtInt8Backend(fp32, calibration, stats_images=stats_images, op_types=op_types, threads=threads,
                                 calibration_method=calibration_method)
    start = time.perf_counter()
    result = search(backend, validation, reference_of(validation), options)
    summary = {
        "plan": {"ranges": result.plan.ranges, "float_units": list(result.plan.float_units)},
        "target": {"cosine_mean": options.target.cosine, "top1_agreement": options.target.top1},
        "target_met_on_validation": result.met, "validation_images": int(len(validation)),
        "search_seconds": round(time.perf_counter() - start, 2),
        "trials": [t.as_dict() for t in result.trials],
        "sensitivity": [s.__dict__ for s in result.sensitivity],
    }
    if result.plan != Int8Plan("minmax"):
        plain = backend.build(Int8Plan("minmax"))
        summary["latency_ms"] = _latency(runtime, {"chosen": result.artifact, "plain int8": plain}, calibration[0], threads)
    if per_layer_images is not None and hasattr(backend, "unit_sqnr"):
        summary["per_unit_sqnr"] = backend.unit_sqnr(result.artifact, per_layer_images)
    return Int8Stage(result.artifact, result, summary)


def _latency(runtime: str, artifacts: dict[str, object], sample: np.ndarray, threads: int) -> dict[str, float]:
    """p50 of each artifact, interleaved rounds so machine noise hits all alike."""
    from micronet_export.profile.runner import OnnxModel, TFLiteModel

    with tempfile.TemporaryDirectory(prefix="micronet-int8-lat-") as tmp:
        models = {}
        for name, artifact in artifacts.items():
            if runtime == "tflite":
                path = Path(tmp) / f"{len(models)}.tflite"
                path.write_bytes(artifact)
                models[name] = TFLiteModel("litert", str(path), threads)
            else:
                models[name] = OnnxModel(artifact.SerializeToString(), threads)
            models[name].set_input(sample)
        times = {name: [] for name in models}
        for _ in range(LATENCY_ROUNDS):
            for name, model in models.items():
                model.invoke()
                for _ in range(LATENCY_RUNS):
                    t = time.perf_counter()
                    model.invoke()
                    times[name].append(time.perf_counter() - t)
    return {name: round(float(np.median(v)) * 1e3, 4) for name, v in times.items()}
