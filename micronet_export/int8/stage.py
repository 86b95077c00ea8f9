"""The export's int8 stage for either runtime: search a plan, measure what it costs.

``int8_stage`` builds the runtime's backend, runs :func:`search.search` on validation photos
(calibration photos the range statistics never saw), and returns the chosen artifact with
what the report shows: the plan, every trial, each unit's sensitivity and int8 error, and
what the int8 model buys against fp32 on the same runtime (size, modules in int8, latency).
"""

from __future__ import annotations

import logging
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import onnx

from micronet_export.int8.mac_share import onnx_mac_share, tflite_mac_share
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

    @property
    def warning(self) -> str | None:
        vs_fp32 = self.summary.get("vs_fp32")
        return fp32_comparison_warning(vs_fp32) if vs_fp32 else None


def split_validation(calibration: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(statistics images, validation images) from the calibration photos."""
    index = np.arange(len(calibration))
    validation = index % VALIDATION_EVERY == VALIDATION_EVERY - 1
    if validation.sum() < MIN_VALIDATION_IMAGES:
        return calibration, calibration  # too few photos to hold any out: score in-sample
    return calibration[~validation], calibration[validation]


def int8_stage(runtime: str, fp32: onnx.ModelProto, calibration: np.ndarray, reference_of, options: Int8Options, *,
               io_dtype: str = "int8", op_types=("Conv", "Gemm"), threads: int = 1, per_layer_images=None,
               calibration_method: str = "minmax", input_range: tuple[float, float] | None = None,
               learned_ranges=None) -> Int8Stage:
    """``reference_of(images)`` gives the float logits to match (PyTorch); ``learned_ranges``
    (TFLite, :class:`learned_ranges.LearnedRanges`) replace the calibrated ranges they match."""
    stats_images, validation = split_validation(calibration)
    if runtime == "tflite":
        from micronet_export.int8.tflite_backend import TFLiteInt8Backend

        backend = TFLiteInt8Backend(fp32, calibration, stats_images=stats_images, io_dtype=io_dtype, threads=threads,
                                    input_range=input_range, learned_ranges=learned_ranges)
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
    if getattr(backend, "learned", None):
        summary["learned_ranges_applied"] = len(backend.learned)
    summary["vs_fp32"] = compare_with_fp32(runtime, fp32, backend, result, calibration[0], threads)
    if per_layer_images is not None and hasattr(backend, "unit_sqnr"):
        summary["per_unit_sqnr"] = backend.unit_sqnr(result.artifact, per_layer_images)
    return Int8Stage(result.artifact, result, summary)


def artifact_bytes(runtime: str, artifact) -> bytes:
    return artifact if runtime == "tflite" else artifact.SerializeToString()


def fp32_artifact(runtime: str, fp32: onnx.ModelProto):
    """The float model of the same runtime, the one int8 has to beat."""
    if runtime != "tflite":
        return fp32
    from micronet_export.tflite_export import convert

    return convert(fp32, "fp32").flatbuffer


def compare_with_fp32(runtime: str, fp32: onnx.ModelProto, backend, result: SearchResult, sample: np.ndarray,
                      threads: int) -> dict:
    """What the chosen int8 model buys against fp32 on the same runtime, measured in this run:
    file size, the share of conv/FC MACs (and of int8-capable modules) in int8, latency (p50)."""
    float_model = fp32_artifact(runtime, fp32)
    models = {"int8": result.artifact, "fp32": float_model}
    if result.plan != Int8Plan("minmax"):
        models["plain int8"] = backend.build(Int8Plan("minmax"))
    latency = latency_p50(runtime, models, sample, threads)
    units = backend.units()
    int8_units = [u for u in units if u not in result.plan.float_units]
    share = tflite_mac_share(result.artifact) if runtime == "tflite" else onnx_mac_share(result.artifact)
    return {
        "macs": share.as_dict(),
        "size_bytes": {name: len(artifact_bytes(runtime, a)) for name, a in models.items()},
        "size_ratio": round(len(artifact_bytes(runtime, result.artifact)) / len(artifact_bytes(runtime, float_model)), 3),
        "int8_units": len(int8_units), "units": len(units),
        "latency_ms": latency, "latency_ratio": round(latency["int8"] / latency["fp32"], 3),
        "threads": threads,
    }


def fp32_comparison_warning(vs_fp32: dict) -> str | None:
    """One line when the int8 model buys little against fp32 (a user exports int8 for speed
    and size: say it when it gives neither)."""
    problems = [what for what, bad in (
        (f"not faster than fp32 ({vs_fp32['latency_ratio']:.2f}x its latency)", vs_fp32["latency_ratio"] >= 1.0),
        (f"{vs_fp32['size_ratio']:.2f}x the size of fp32", vs_fp32["size_ratio"] > 0.5),
        (f"only {100 * vs_fp32['macs']['int8_mac_fraction']:.0f} % of its MACs in int8",
         vs_fp32["macs"]["int8_mac_fraction"] < 0.5)) if bad]
    if not problems:
        return None
    return ("this int8 model is " + ", ".join(problems) + " on this machine; the search kept modules float "
            "to hold the accuracy target (see the int8 plan in report.md)")


def latency_p50(runtime: str, artifacts: dict[str, object], sample: np.ndarray, threads: int) -> dict[str, float]:
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
