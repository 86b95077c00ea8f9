"""The pipeline: model → ONNX → optimized ONNX → artifacts → parity checks → report.

:func:`export` is what ``micronet-export --variant m0 --format onnx|tflite`` runs. Each stage
is one function of the run (:class:`run_context.ExportRun`) and the graph it is given: the
ONNX stage (:mod:`onnx_stage`) and the TFLite stage (:mod:`tflite_stage`) both read the same
graph and each returns its report entries. The output folder is handled by
:mod:`micronet_export.output`: every file is staged and renamed into place only when the whole
run got that far, a failure leaves nothing behind, and an earlier run's artifacts are replaced
only with ``force``.
"""

from __future__ import annotations

import logging

import onnx

from micronet_export.errors import ParityError
from micronet_export.int8.stage import int8_stage
from micronet_export.model import create_model
from micronet_export.model.checkpoint import sha256_file
from micronet_export.onnx_export import export_onnx
from micronet_export.onnx_stage import onnx_fp32_artifact, onnx_int8_artifact
from micronet_export.options import (  # noqa: F401 - the public names of the pipeline
    DEFAULT_CHECKPOINTS, FORMATS, ORT_INT8_OPS, ExportOptions, checkpoint_card, default_checkpoint,
    resolve_checkpoint,
)
from micronet_export.passes import optimize
from micronet_export.output import artifact_names, check_existing, staged_output
from micronet_export.report import REPORT_JSON, REPORT_MD, ArtifactReport, Report, write_report
from micronet_export.run_context import (  # noqa: F401 - re-exported for callers of the pipeline
    FIXED_INPUTS, HOLDOUT_EVERY, MIN_CALIBRATION_IMAGES, NO_PHOTOS_NOTE, ExportRun, ParityImages, References,
    StageTimer, class_names_for, fixed_inputs, labels_for, parity_images, split_calibration,
)
from micronet_export.tflite_metadata import LABELS_FILE, labels_text

log = logging.getLogger(__name__)


def _build_model(opts: ExportOptions):
    model = create_model(opts.variant, checkpoint=opts.checkpoint, num_classes=None)
    checkpoint = {"path": None, "sha256": None}
    if opts.checkpoint:
        card = checkpoint_card(opts.checkpoint)
        checkpoint = {"path": str(opts.checkpoint), "sha256": sha256_file(opts.checkpoint),
                      **{key: card[key] for key in ("source", "license", "license_notice") if card.get(key)}}
    return model, checkpoint


def export(options: ExportOptions) -> Report:
    """Run the pipeline; returns the report (also written as report.json / report.md).

    Raises :class:`ParityError` after writing everything when a threshold is breached and
    ``options.fail_on_parity`` is set.
    """
    opts = options.normalized()
    names = artifact_names(opts.variant)
    files = [names[k] for k in opts.planned()] + [REPORT_JSON, REPORT_MD]
    check_existing(opts.output, files, opts.force)  # before the slow steps; staged_output checks again
    timer = StageTimer()
    with timer.stage("build model"):
        model, checkpoint = _build_model(opts)
    with timer.stage("load images"):
        images = parity_images(opts, explicit=options.calibration is not None)
    with timer.stage("reference logits"):
        refs = References.of(model, fixed_inputs(opts.input_size), images.holdout, opts.fp32_thresholds)
    labels = class_names_for(opts.checkpoint, model.num_classes)
    if labels is not None:
        files.append(LABELS_FILE)
    with staged_output(opts.output, files, opts.force) as out:
        if labels is not None:  # the class names beside the artifacts, as inside each .tflite
            out.path(LABELS_FILE).write_bytes(labels_text(labels))
        report = Report(variant=opts.variant, input_size=opts.input_size, checkpoint=checkpoint,
                        calibration=images.summary, removed_stale=[p.name for p in out.stale])
        run = ExportRun(opts, model, images, refs, out, report, timer)
        graph = _write_artifacts(run)
        if opts.emulate and opts.format == "tflite":
            from micronet_export.emulate.advice import add_core_answers

            with timer.stage("emulated arm answers"):
                add_core_answers(report, opts, graph, images.calibration, out.staging)
        report.timings_s = timer.timings
        out.path(REPORT_JSON)
        write_report(report, out.staging)
    if not report.passed and opts.fail_on_parity:
        raise ParityError("parity failed: " + "; ".join(report.failures()[:3]) + f" (see {opts.output / REPORT_MD})",
                          report)
    return report


def _write_artifacts(run: ExportRun) -> onnx.ModelProto:
    """Every artifact of the run into ``run.out``, in data-flow order: the plain export, the
    graph ONNX Runtime runs (fp32, int8), the graph the TFLite emitter reads; returns the
    last graph a stage read (the emulated-ARM answer converts it again)."""
    opts = run.opts
    with run.timer.stage("onnx export"):
        plain = export_onnx(run.model, input_size=opts.input_size, opset=opts.opset, dynamic_batch=opts.dynamic_batch)
    with run.timer.stage("onnx optimization"):
        ort = optimize(plain, "onnxruntime", opts.onnx_optimize)
    fp32, ort_holdout = onnx_fp32_artifact(run, ort.model, ort.describe())
    run.report.artifacts.append(fp32)
    if "onnx_int8" in opts.planned():
        run.report.artifacts.append(onnx_int8_artifact(run, ort.model, ort_holdout))
    if opts.format == "tflite":
        int8_plain = _distilled_export(run) if opts.int8 and opts.int8_distill_steps else plain
        return _tflite_artifact(run, plain, int8_plain)
    return ort.model


def _distilled_export(run: ExportRun) -> onnx.ModelProto:
    """The plain ONNX export of the network fine-tuned for TFLite int8 (``--int8-distill``); the
    run records what was fine-tuned for the report and the int8 artifact's metadata."""
    from micronet_export.int8.weights import distilled_model

    opts = run.opts
    with run.timer.stage("int8 distillation"):
        student, record, learned = distilled_model(run.model, run.images.calibration, run.images.holdout,
                                          opts.int8_distill_steps, teacher_sha256=run.report.checkpoint["sha256"],
                                          progress=opts.progress)
    run.int8_weights, run.int8_ranges = record, learned
    run.report.int8_weights = record.as_dict()
    with run.timer.stage("onnx export (int8 weights)"):
        return export_onnx(student, input_size=opts.input_size, opset=opts.opset, dynamic_batch=opts.dynamic_batch)


def _tflite_artifact(run: ExportRun, plain: onnx.ModelProto, int8_plain: onnx.ModelProto) -> onnx.ModelProto:
    """The TFLite stage on the TFLite target's graph (``int8_plain``'s for int8); returns that graph."""
    from micronet_export.tflite_stage import tflite_artifact

    with run.timer.stage("onnx optimization"):
        optimized = optimize(plain, "tflite", run.opts.onnx_optimize)
    stage, graph = None, optimized.model
    if run.opts.raw_pixels and not run.opts.int8:
        from micronet_export.input_normalization import fold_normalization

        graph = fold_normalization(graph)
    if run.opts.int8:
        int8_graph = optimized.model if int8_plain is plain else optimize(int8_plain, "tflite", run.opts.onnx_optimize).model
        with run.timer.stage("tflite int8 quantization"):
            stage, graph = _tflite_int8(run, int8_graph)
    art = tflite_artifact(run, graph, int8=stage)
    art.graph["optimization"] = optimized.describe()
    if not run.images.has_photos:
        _parity_on_fixed_inputs_only(art)
    run.report.artifacts.append(art)
    return optimized.model


def _tflite_int8(run: ExportRun, graph: onnx.ModelProto):
    """The TFLite int8 stage; with ``raw_pixels`` on the graph that takes RGB bytes (and photos
    as bytes), pinned to an input scale of exactly 1."""
    opts, images = run.opts, run.images
    if not opts.raw_pixels:
        return int8_stage("tflite", graph, images.calibration, run.reference_of, opts.int8_options(),
                          io_dtype=opts.io_dtype, threads=opts.threads, learned_ranges=run.int8_ranges,
                          per_layer_images=images.holdout[:8] if opts.per_layer else None), graph
    from micronet_export.input_normalization import PIXEL_RANGE, fold_normalization, from_raw_pixels, to_raw_pixels

    raw_graph = fold_normalization(graph)
    stage = int8_stage("tflite", raw_graph, to_raw_pixels(images.calibration),
                       lambda x: run.reference_of(from_raw_pixels(x)), opts.int8_options(), io_dtype=opts.io_dtype,
                       threads=opts.threads, input_range=PIXEL_RANGE, learned_ranges=_in_pixels(run.int8_ranges),
                       per_layer_images=to_raw_pixels(images.holdout[:8]) if opts.per_layer else None)
    return stage, raw_graph


def _in_pixels(learned):
    """Learned ranges for the graph that takes pixels: the same tensors after the input."""
    if learned is None:
        return None
    from dataclasses import replace

    from micronet_export.input_normalization import to_raw_pixels

    return replace(learned, images=to_raw_pixels(learned.images))


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
