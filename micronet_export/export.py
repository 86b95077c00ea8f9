"""The pipeline: model → ONNX → artifacts → parity checks → report.

:func:`export` is what ``micronet-export --variant m0 --format onnx|tflite`` runs. The output
folder is handled by :mod:`micronet_export.output`: every file is staged and renamed into place
only when the whole run got that far, a failure leaves nothing behind, and an earlier run's
artifacts are replaced only with ``force``.
"""

from __future__ import annotations

import logging
import time
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx

from micronet_export.errors import CalibrationError, ParityError
from micronet_export.images import DEFAULT_CALIBRATION_DIR, load_folder
from micronet_export.int8.stage import int8_stage
from micronet_export.metadata import artifact_metadata, set_onnx_metadata
from micronet_export.model import create_model
from micronet_export.model.checkpoint import sha256_file
from micronet_export.onnx_export import export_onnx, summarize_graph
from micronet_export.options import (  # noqa: F401 - the public names of the pipeline
    DEFAULT_CHECKPOINTS, FORMATS, ORT_INT8_OPS, ExportOptions, checkpoint_card, default_checkpoint,
)
from micronet_export.output import StagedOutput, artifact_names, check_existing, staged_output
from micronet_export.parity import Thresholds, check, conditioned
from micronet_export.quantize import per_layer_error
from micronet_export.report import REPORT_JSON, REPORT_MD, ArtifactReport, Report, write_report
from micronet_export.runtimes import onnx_session, run_onnx, run_torch, run_torch_float64

log = logging.getLogger(__name__)

# One image in HOLDOUT_EVERY is kept out of calibration and used for int8 parity.
HOLDOUT_EVERY = 5
MIN_CALIBRATION_IMAGES = 10
FIXED_INPUT_SEED = 20211011
FIXED_INPUTS = 2


class _Timer:
    def __init__(self) -> None:
        self.timings: dict[str, float] = {}

    @contextmanager
    def stage(self, name: str):
        log.info("%s ...", name)
        start = time.perf_counter()
        yield
        self.timings[name] = self.timings.get(name, 0.0) + time.perf_counter() - start


def split_calibration(arrays: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Deterministic split: every HOLDOUT_EVERY-th image (sorted by path) is held out."""
    idx = np.arange(len(arrays))
    hold = idx % HOLDOUT_EVERY == HOLDOUT_EVERY - 1
    return arrays[~hold], arrays[hold]


def fixed_inputs(input_size: int) -> np.ndarray:
    rng = np.random.default_rng(FIXED_INPUT_SEED)
    return rng.standard_normal((FIXED_INPUTS, 3, input_size, input_size)).astype(np.float32)


@dataclass
class ParityImages:
    """The photos of a run: int8 ranges come from ``calibration``, parity also runs on
    ``holdout`` (never calibrated on). Both are empty when a float run found no photos."""

    calibration: np.ndarray
    holdout: np.ndarray
    summary: dict  # the report's "calibration" entry

    @property
    def has_photos(self) -> bool:
        return len(self.holdout) > 0


@dataclass
class References:
    """The PyTorch logits every artifact is checked against, and the fp32 bounds they allow
    (see :func:`parity.conditioned`: never tighter than float32 itself gets on those inputs).
    Without photos the fixed inputs stand in for the held-out ones."""

    fixed: np.ndarray
    holdout: np.ndarray
    fixed_logits: np.ndarray
    holdout_logits: np.ndarray
    fp32_fixed: Thresholds
    fp32_holdout: Thresholds

    @classmethod
    def of(cls, model, fixed: np.ndarray, holdout: np.ndarray, fp32: Thresholds) -> "References":
        fixed_logits = run_torch(model, fixed)
        fp32_fixed = conditioned(fp32, fixed_logits, run_torch_float64(model, fixed))
        if not len(holdout):
            return cls(fixed, fixed, fixed_logits, fixed_logits, fp32_fixed, fp32_fixed)
        holdout_logits = run_torch(model, holdout)
        return cls(fixed, holdout, fixed_logits, holdout_logits, fp32_fixed,
                   conditioned(fp32, holdout_logits, run_torch_float64(model, holdout)))


NO_PHOTOS_NOTE = (f"no calibration photos: parity ran on the {FIXED_INPUTS} fixed random inputs only; "
                  "pass --calibration DIR to check on photos too")


def parity_images(opts: ExportOptions, explicit: bool) -> ParityImages:
    """The run's photos. A folder the user named must be usable; when the default one is not
    (e.g. an install without calibration/), int8 stops and a float export goes on without."""
    calib_dir = Path(opts.calibration) if opts.calibration else DEFAULT_CALIBRATION_DIR
    try:
        images = load_folder(calib_dir, input_size=opts.input_size, min_images=MIN_CALIBRATION_IMAGES,
                             progress=opts.progress)
    except CalibrationError as exc:
        if explicit:
            raise
        if opts.int8:
            raise CalibrationError(f"int8 needs calibration photos: {exc}; pass --calibration DIR (at least "
                                   f"{MIN_CALIBRATION_IMAGES} photos like the ones the model will see)") from None
        log.warning("warning: %s (%s)", NO_PHOTOS_NOTE, exc)
        empty = np.zeros((0, 3, opts.input_size, opts.input_size), np.float32)
        return ParityImages(empty, empty, {"dir": None, "images": 0, "holdout": 0, "note": NO_PHOTOS_NOTE})
    calib, holdout = split_calibration(images.arrays)
    summary = {"dir": str(calib_dir), "images": int(len(calib)), "holdout": int(len(holdout)),
               "skipped": len(images.skipped), "non_image_files": len(images.ignored), "method": opts.calibration_method,
               "skipped_files": [p.name for p, _ in images.skipped[:20]]}
    return ParityImages(calib, holdout, summary)


def _build_model(opts: ExportOptions):
    model = create_model(opts.variant, checkpoint=opts.checkpoint, num_classes=None)
    checkpoint = {"path": None, "sha256": None}
    if opts.checkpoint:
        checkpoint = {"path": str(opts.checkpoint), "sha256": sha256_file(opts.checkpoint)}
    return model, checkpoint


def export(options: ExportOptions) -> Report:
    """Run the pipeline; returns the report (also written as report.json / report.md).

    Raises :class:`ParityError` after writing everything when a threshold is breached and
    ``options.fail_on_parity`` is set.
    """
    opts = options.normalized()
    names = artifact_names(opts.variant)
    out_dir = Path(opts.output)
    files = [names[k] for k in opts.planned()] + [REPORT_JSON, REPORT_MD]
    check_existing(out_dir, files, opts.force)  # before the slow steps; staged_output checks again
    timer = _Timer()
    with timer.stage("build model"):
        model, checkpoint = _build_model(opts)
    with timer.stage("load images"):
        images = parity_images(opts, explicit=options.calibration is not None)
    with staged_output(out_dir, files, opts.force) as out:
        report = Report(variant=opts.variant, input_size=opts.input_size, checkpoint=checkpoint,
                        calibration=images.summary, removed_stale=[p.name for p in out.stale])
        fp32 = _write_artifacts(opts, model, images, out, report, timer)
        if opts.emulate and opts.format == "tflite":
            from micronet_export.emulate.advice import add_core_answers

            with timer.stage("emulated arm answers"):
                add_core_answers(report, opts, fp32, images.calibration, out.staging)
        report.timings_s = timer.timings
        out.path(REPORT_JSON)
        write_report(report, out.staging)
    if not report.passed and opts.fail_on_parity:
        raise ParityError("parity failed: " + "; ".join(report.failures()[:3]) + f" (see {out_dir / REPORT_MD})", report)
    return report


def _write_artifacts(opts: ExportOptions, model, images: ParityImages, out: StagedOutput, report: Report,
                     timer: _Timer) -> onnx.ModelProto:
    """Every artifact of the run into ``out``; returns the fp32 ONNX graph (the later stages' input)."""
    names, staging, planned = artifact_names(opts.variant), out.staging, opts.planned()
    labels = labels_for(opts.checkpoint, model.num_classes)

    def metadata(layout: str, precision: str, quantization: str) -> dict[str, str]:
        return artifact_metadata(variant=opts.variant, input_size=opts.input_size, layout=layout, precision=precision,
                                 num_classes=model.num_classes, checkpoint_sha256=report.checkpoint["sha256"],
                                 quantization=quantization, labels=labels, raw_pixels=opts.raw_pixels and layout == "NHWC")

    with timer.stage("reference logits"):
        refs = References.of(model, fixed_inputs(opts.input_size), images.holdout, opts.fp32_thresholds)
    with timer.stage("onnx export"):
        fp32 = export_onnx(model, input_size=opts.input_size, opset=opts.opset, dynamic_batch=opts.dynamic_batch)
        set_onnx_metadata(fp32, metadata("NCHW", "fp32", "none"))
        onnx.save(fp32, out.path(names["onnx_fp32"]))
    with timer.stage("onnx parity"):
        session = onnx_session(staging / names["onnx_fp32"], opts.threads)
        art = _onnx_artifact(staging / names["onnx_fp32"], fp32, "fp32", out.folder)
        art.parity = [check(run_onnx(session, refs.fixed), refs.fixed_logits, refs.fp32_fixed, reference="pytorch",
                            inputs="fixed random").as_dict()]
        ort_holdout = run_onnx(session, images.holdout) if images.has_photos else None
        if images.has_photos:
            art.parity.append(check(ort_holdout, refs.holdout_logits, refs.fp32_holdout, reference="pytorch",
                                    inputs="held-out images").as_dict())
        else:
            art.notes.append(NO_PHOTOS_NOTE)
        report.artifacts.append(art)
    reference_of = lambda x: run_torch(model, x)  # noqa: E731 - the float logits int8 must keep
    if "onnx_int8" in planned:
        report.artifacts.append(_onnx_int8(opts, fp32, images, ort_holdout, reference_of, out.path(names["onnx_int8"]),
                                           out.folder, metadata, timer))
    if opts.format == "tflite":
        from micronet_export.tflite_export import tflite_artifacts

        stage, graph = None, fp32
        if opts.int8:
            with timer.stage("tflite int8 quantization"):
                stage, graph = _tflite_int8(opts, fp32, images, reference_of)
        out.path(next(names[k] for k in planned if k.startswith("tflite")))  # written inside tflite_artifacts
        arts = tflite_artifacts(graph, opts, staging, out.folder, names, images.calibration, refs, metadata, timer,
                                int8=stage)
        if not images.has_photos:
            for art in arts:
                _parity_on_fixed_inputs_only(art)
        report.artifacts.extend(arts)
    return fp32


def _tflite_int8(opts: ExportOptions, fp32: onnx.ModelProto, images: ParityImages, reference_of):
    """The TFLite int8 stage; with ``raw_pixels`` on the graph that takes RGB bytes (and photos
    as bytes), pinned to an input scale of exactly 1."""
    if not opts.raw_pixels:
        return int8_stage("tflite", fp32, images.calibration, reference_of, opts.int8_options(), io_dtype=opts.io_dtype,
                          threads=opts.threads, per_layer_images=images.holdout[:8] if opts.per_layer else None), fp32
    from micronet_export.input_normalization import PIXEL_RANGE, fold_normalization, from_raw_pixels, to_raw_pixels

    graph = fold_normalization(fp32)
    stage = int8_stage("tflite", graph, to_raw_pixels(images.calibration), lambda x: reference_of(from_raw_pixels(x)),
                       opts.int8_options(), io_dtype=opts.io_dtype, threads=opts.threads, input_range=PIXEL_RANGE,
                       per_layer_images=to_raw_pixels(images.holdout[:8]) if opts.per_layer else None)
    return stage, graph


def _onnx_int8(opts: ExportOptions, fp32: onnx.ModelProto, images: ParityImages, ort_holdout: np.ndarray,
               reference_of, path: Path, out_dir: Path, metadata, timer: _Timer) -> ArtifactReport:
    calib = images.calibration
    with timer.stage("onnx int8 quantization"):
        stage = int8_stage("onnxruntime", fp32, calib, reference_of, opts.int8_options(),
                           op_types=ORT_INT8_OPS[opts.ort_int8_ops], threads=opts.threads,
                           calibration_method=opts.calibration_method)
        int8 = stage.artifact
        scope = "Conv/Gemm" if opts.ort_int8_ops == "conv" else "every op"
        islands = f"; float islands: {', '.join(stage.plan.float_units)}" if stage.plan.float_units else ""
        set_onnx_metadata(int8, metadata(
            "NCHW", "int8", f"onnxruntime static QDQ ({scope}), uint8 activations and per-channel int8 weights "
            f"(float: convs ORT runs slower in int8{islands}), {stage.plan.ranges} ranges from {len(calib)} images"))
        onnx.save(int8, path)
    with timer.stage("onnx int8 parity"):
        art = _onnx_artifact(path, int8, "int8", out_dir)
        got = run_onnx(onnx_session(path, opts.threads), images.holdout)
        art.parity = [check(got, ort_holdout, opts.int8_thresholds, reference="onnxruntime fp32",
                            inputs="held-out images").as_dict()]
        art.int8 = stage.summary
        if opts.per_layer:
            art.per_layer = per_layer_error(fp32, int8, images.holdout[:8])
    return art


def _parity_on_fixed_inputs_only(art: ArtifactReport) -> None:
    """Without photos the TFLite checks ran the fixed random inputs in the held-out images' slot:
    name them as what they are, once each."""
    seen, cells = set(), []
    for cell in art.parity:
        cell["inputs"] = cell["inputs"].replace("held-out images", "fixed random")
        if (cell["reference"], cell["inputs"]) not in seen:
            seen.add((cell["reference"], cell["inputs"]))
            cells.append(cell)
    art.parity = cells
    art.notes.append(NO_PHOTOS_NOTE)


def labels_for(checkpoint, num_classes: int) -> str:
    """Label source recorded in the artifacts: the checkpoint's card, else ImageNet-1k."""
    classes = checkpoint_card(checkpoint).get("classes")
    if classes and len(classes) == num_classes:
        import json

        return json.dumps(classes)
    if num_classes == 1000:
        return "imagenet-1k-classes.tsv (micronet_export/labels; standard ImageNet-1k index order)"
    return f"{num_classes} classes (no label file)"


def _onnx_artifact(path: Path, proto: onnx.ModelProto, precision: str, out_dir: Path) -> ArtifactReport:
    summary = summarize_graph(proto)
    inp, out = proto.graph.input[0], proto.graph.output[0]
    dims = lambda vi: [d.dim_value or d.dim_param for d in vi.type.tensor_type.shape.dim]
    return ArtifactReport(
        path=str(out_dir / path.name), format="onnx", precision=precision, size_bytes=path.stat().st_size,
        ops=summary.ops,
        io={"input": {"name": inp.name, "shape": dims(inp), "dtype": "float32", "layout": "NCHW"},
            "output": {"name": out.name, "shape": dims(out), "dtype": "float32"}},
        graph={"gather_nodes": summary.gather_nodes, "max_rank": summary.max_rank, "opset": proto.opset_import[0].version},
    )
