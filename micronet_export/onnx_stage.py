"""The export's ONNX Runtime artifacts: the fp32 graph as ORT runs it and its int8 QDQ model,
each written, described and parity-checked."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import onnx

from micronet_export.int8.stage import int8_stage
from micronet_export.metadata import set_onnx_metadata
from micronet_export.onnx_export import summarize_graph
from micronet_export.options import ORT_INT8_OPS
from micronet_export.parity import check
from micronet_export.quantize import per_layer_error
from micronet_export.report import ArtifactReport
from micronet_export.run_context import NO_PHOTOS_NOTE, ExportRun
from micronet_export.runtimes import onnx_session, run_onnx

log = logging.getLogger(__name__)


def onnx_fp32_artifact(run: ExportRun, graph: onnx.ModelProto, optimization: str) -> tuple[ArtifactReport, np.ndarray]:
    """Write ``graph`` (what ORT runs) and check it against PyTorch; returns the report entry
    and ORT's logits on the held-out photos (the int8 model's reference), or None."""
    name = run.names["onnx_fp32"]
    with run.timer.stage("onnx export"):
        set_onnx_metadata(graph, run.metadata("NCHW", "fp32", "none"))
        onnx.save(graph, run.out.path(name))
    with run.timer.stage("onnx parity"):
        refs, images = run.refs, run.images
        session = onnx_session(run.out.staging / name, run.opts.threads)
        art = onnx_artifact_report(run.out.staging / name, graph, "fp32", run.out.folder)
        art.graph["optimization"] = optimization
        art.parity = [check(run_onnx(session, refs.fixed), refs.fixed_logits, refs.fp32_fixed, reference="pytorch",
                            inputs="fixed random").as_dict()]
        holdout = run_onnx(session, images.holdout) if images.has_photos else None
        if images.has_photos:
            art.parity.append(check(holdout, refs.holdout_logits, refs.fp32_holdout, reference="pytorch",
                                    inputs="held-out images").as_dict())
        else:
            art.notes.append(NO_PHOTOS_NOTE)
    return art, holdout


def onnx_int8_artifact(run: ExportRun, fp32: onnx.ModelProto, ort_holdout: np.ndarray) -> ArtifactReport:
    """The int8 QDQ model of ``fp32`` (the graph ORT runs), checked against ORT fp32."""
    opts, calib = run.opts, run.images.calibration
    path = run.out.path(run.names["onnx_int8"])
    with run.timer.stage("onnx int8 quantization"):
        stage = int8_stage("onnxruntime", fp32, calib, run.reference_of, opts.int8_options(),
                           op_types=ORT_INT8_OPS[opts.ort_int8_ops], threads=opts.threads,
                           calibration_method=opts.calibration_method)
        int8 = stage.artifact
        scope = "Conv/Gemm" if opts.ort_int8_ops == "conv" else "every op"
        islands = f"; float islands: {', '.join(stage.plan.float_units)}" if stage.plan.float_units else ""
        set_onnx_metadata(int8, run.metadata(
            "NCHW", "int8", f"onnxruntime static QDQ ({scope}), uint8 activations and per-channel int8 weights "
            f"(float: convs ORT runs slower in int8{islands}), {stage.plan.ranges} ranges from {len(calib)} images"))
        onnx.save(int8, path)
    with run.timer.stage("onnx int8 parity"):
        art = onnx_artifact_report(path, int8, "int8", run.out.folder)
        got = run_onnx(onnx_session(path, opts.threads), run.images.holdout)
        art.parity = [check(got, ort_holdout, opts.int8_thresholds, reference="onnxruntime fp32",
                            inputs="held-out images").as_dict()]
        art.int8 = stage.summary
        if stage.warning:
            art.notes.append(stage.warning)
            log.warning("warning: %s", stage.warning)
        if opts.per_layer:
            art.per_layer = per_layer_error(fp32, int8, run.images.holdout[:8])
    return art


def onnx_artifact_report(path: Path, proto: onnx.ModelProto, precision: str, out_dir: Path) -> ArtifactReport:
    summary = summarize_graph(proto)
    inp, out = proto.graph.input[0], proto.graph.output[0]
    dims = lambda vi: [d.dim_value or d.dim_param for d in vi.type.tensor_type.shape.dim]  # noqa: E731
    return ArtifactReport(
        path=str(out_dir / path.name), format="onnx", precision=precision, size_bytes=path.stat().st_size,
        ops=summary.ops,
        io={"input": {"name": inp.name, "shape": dims(inp), "dtype": "float32", "layout": "NCHW"},
            "output": {"name": out.name, "shape": dims(out), "dtype": "float32"}},
        graph={"gather_nodes": summary.gather_nodes, "channel_gathers": summary.channel_gathers, "max_rank": summary.max_rank, "opset": proto.opset_import[0].version},
    )
