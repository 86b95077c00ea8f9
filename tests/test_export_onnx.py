"""`micronet-export --format onnx [--int8]`: artifacts, report, parity gate, bad input."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import pytest
from PIL import Image

import micronet_export.onnx_stage as onnx_stage
from micronet_export.errors import OutputExistsError, UserError
from micronet_export.export import ExportOptions, artifact_names, export
from micronet_export.onnx_export import summarize_graph
from micronet_export.parity import Thresholds

from conftest import blank_bilevel_png, checkpoint_with_card, reference_checkpoint
from test_cli import assert_one_line_error, run_cli, run_main

FP32_MAX_ABS_REL = 1e-4


@pytest.fixture(scope="module")
def onnx_int8_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("onnx-m0")
    # The plain quantizer's graph (int8_fallback="none"): the accuracy control has its own tests.
    report = export(ExportOptions(variant="m0", format="onnx", int8=True, checkpoint=reference_checkpoint("m0"),
                                  output=out, fail_on_parity=False, int8_fallback="none"))
    return out, report


def test_artifacts_and_report(onnx_int8_run):
    out, report = onnx_int8_run
    names = artifact_names("m0")
    assert sorted(p.name for p in out.iterdir()) == sorted([names["onnx_fp32"], names["onnx_int8"], "labels.txt", "report.json", "report.md"])
    data = json.loads((out / "report.json").read_text())
    assert {"variant", "input_size", "tool_version", "checkpoint", "artifacts", "timings_s"} <= set(data)
    assert data["checkpoint"]["sha256"] and len(data["checkpoint"]["sha256"]) == 64
    assert data["calibration"]["images"] == 160 and data["calibration"]["holdout"] == 40
    for art in data["artifacts"]:
        assert Path(art["path"]).is_file() and art["size_bytes"] == Path(art["path"]).stat().st_size
        assert sum(art["ops"].values()) > 100
        # The optimized graph's only Gathers are constant channel permutations (shuffles, shifts).
        assert art["graph"]["gather_nodes"] == art["graph"]["channel_gathers"] and art["graph"]["max_rank"] <= 4
    fp32 = data["artifacts"][0]
    assert fp32["graph"]["optimization"].startswith("auto for onnxruntime")
    assert fp32["precision"] == "fp32" and fp32["passed"]
    assert all(p["metrics"]["max_abs_rel"] <= FP32_MAX_ABS_REL for p in fp32["parity"])
    assert "micronet_m0_int8.onnx" in (out / "report.md").read_text()


def test_int8_graph_is_qdq_of_the_optimized_graph(onnx_int8_run):
    out, report = onnx_int8_run
    proto = onnx.load(out / artifact_names("m0")["onnx_int8"])
    summary = summarize_graph(proto)
    # int8 where ORT's int8 kernels win (quantize.slow_int8_convs): M0's three wide 1x1 convs and
    # the classifier's two GEMMs.
    assert summary.ops.get("QuantizeLinear", 0) >= 5 and summary.ops.get("DequantizeLinear", 0) >= 10
    assert summary.gather_nodes == summary.channel_gathers > 0 and summary.max_rank <= 4
    onnx.checker.check_model(proto, full_check=True)


def test_int8_keeps_slow_convs_float_with_uint8_activations(onnx_int8_run):
    from micronet_export.quantize import slow_int8_convs, slow_int8_gemms

    out, _ = onnx_int8_run
    proto = onnx.load(out / artifact_names("m0")["onnx_int8"])
    fp32 = onnx.load(out / artifact_names("m0")["onnx_fp32"])
    slow = slow_int8_convs(fp32) + slow_int8_gemms(fp32)
    # Float: the stem and the first block's composed conv (3-4 channels, 3x3), the 8 depthwise
    # convs (2 of them the composed multiplier pairs of blocks 2-3, passes/separable.py), the 7
    # grouped 1x1 convs with < 16 inputs per group, and the 30 Dynamic Shift-Max FCs (Gemms on
    # the pooled vector, passes/pixel_fc.py).
    assert len(slow_int8_convs(fp32)) == 2 + 8 + 7 and len(slow_int8_gemms(fp32)) == 30
    producer = {o: n for n in proto.graph.node for o in n.output}
    layers = {n.name: n for n in proto.graph.node if n.op_type in ("Conv", "Gemm")}
    for name in slow:
        weight = producer.get(layers[name].input[1])
        assert weight is None or weight.op_type != "DequantizeLinear", name  # float weights
    others = [n for n in layers.values() if n.name not in slow]
    # int8: M0's three wide 1x1 convs and the classifier's two Gemms
    assert len(others) == 5 and all(producer[n.input[1]].op_type == "DequantizeLinear" for n in others)
    inits = {i.name: i for i in proto.graph.initializer}
    zero_points = [inits[n.input[2]] for n in proto.graph.node if n.op_type == "QuantizeLinear"]
    assert zero_points and all(z.data_type == onnx.TensorProto.UINT8 for z in zero_points)


def test_int8_metrics_and_per_layer_error_are_reported(onnx_int8_run):
    _, report = onnx_int8_run
    int8 = report.artifacts[1]
    metrics = int8.parity[0]["metrics"]
    for key in ("cosine_mean", "cosine_min", "top1_agreement", "max_abs", "sqnr_db"):
        assert np.isfinite(metrics[key])
    assert -1.0 <= metrics["cosine_min"] <= metrics["cosine_mean"] <= 1.0
    modules = [row["module"] for row in int8.per_layer]
    assert "features.1" in modules and "features.7" in modules and "classifier.2" in modules
    by_module = {row["module"]: row["sqnr_db"] for row in int8.per_layer}
    # int8 error accumulates: the first block is quantized better than the last one.
    assert by_module["features.1"] > by_module["features.7"]


def test_parity_breach_fails_with_the_failing_cell(tmp_path):
    options = ExportOptions(variant="m0", format="onnx", checkpoint=reference_checkpoint("m0"), output=tmp_path,
                            fp32_thresholds=Thresholds(max_abs=1e-12))
    with pytest.raises(UserError, match=r"micronet_m0.onnx vs pytorch on .*max_abs .* \(needs <= 1e-12\)"):
        export(options)
    assert (tmp_path / "report.json").is_file()  # the evidence stays


def test_existing_artifacts_need_force(tmp_path):
    (tmp_path / "micronet_m0.onnx").write_bytes(b"old")
    with pytest.raises(OutputExistsError, match="already exists; pass --force"):
        export(ExportOptions(variant="m0", format="onnx", output=tmp_path))
    assert (tmp_path / "micronet_m0.onnx").read_bytes() == b"old"
    export(ExportOptions(variant="m0", format="onnx", output=tmp_path, force=True, fail_on_parity=False))
    assert onnx.load(tmp_path / "micronet_m0.onnx").graph.node


def test_no_partial_artifact_after_a_failure(tmp_path, monkeypatch):
    def broken(*args, **kwargs):
        raise UserError("quantizer exploded")

    monkeypatch.setattr(onnx_stage, "int8_stage", broken)
    with pytest.raises(UserError, match="quantizer exploded"):
        export(ExportOptions(variant="m0", format="onnx", int8=True, output=tmp_path))
    assert list(tmp_path.iterdir()) == []


def _photos(folder: Path, n: int) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    for i in range(n):
        Image.fromarray(rng.integers(0, 256, (64, 80, 3), dtype=np.uint8)).save(folder / f"p{i}.png")
    return folder


def test_user_calibration_folder_with_bad_files(tmp_path):
    calib = _photos(tmp_path / "calib", 12)
    (calib / "corrupt.jpg").write_bytes(b"\xff\xd8\xff\xe0 truncated")
    (calib / "readme.txt").write_text("ignored")
    blank_bilevel_png(calib / "bomb.png", 20_000, 10_000)  # over Pillow's decompression-bomb limit
    report = export(ExportOptions(variant="m0", format="onnx", int8=True, calibration=calib,
                                  output=tmp_path / "out", fail_on_parity=False, per_layer=False))
    assert report.calibration["skipped"] == 1 and report.calibration["skipped_files"] == ["corrupt.jpg"]
    assert report.calibration["too_large"] == 1 and report.calibration["too_large_files"] == ["bomb.png"]
    assert report.calibration["images"] + report.calibration["holdout"] == 12
    # int8 is always compared with fp32 on the same runtime: the same graph's MACs, counted in both files
    from micronet_export.int8.mac_share import onnx_mac_share

    int8 = next(a for a in report.artifacts if a.precision == "int8")
    fp32 = next(a for a in report.artifacts if a.precision == "fp32")
    vs = int8.int8["vs_fp32"]
    fp32_share, int8_share = onnx_mac_share(onnx.load(fp32.path)), onnx_mac_share(onnx.load(int8.path))
    assert fp32_share.int8_macs == 0 and vs["macs"]["total_macs"] == fp32_share.total_macs == int8_share.total_macs
    assert vs["macs"]["int8_macs"] == int8_share.int8_macs <= int8_share.total_macs
    assert vs["latency_ratio"] == round(vs["latency_ms"]["int8"] / vs["latency_ms"]["fp32"], 3)
    assert vs["size_ratio"] == round(vs["size_bytes"]["int8"] / vs["size_bytes"]["fp32"], 3)


@pytest.mark.parametrize("case,fragments", [
    ("missing", ["does not exist"]),
    ("empty", ["no images in"]),
    ("too_few", ["readable image(s)", "at least 10 needed"]),
])
def test_bad_calibration_folders_cli(tmp_path, capfd, case, fragments):
    calib = tmp_path / "calib"
    if case == "empty":
        calib.mkdir()
    elif case == "too_few":
        _photos(calib, 3)
        (calib / "bad.png").write_bytes(b"nope")
    out = tmp_path / "out"
    proc = run_main(capfd, "--variant", "m0", "--format", "onnx", "--int8", "--calibration", str(calib),
                    "--output", str(out))
    assert_one_line_error(proc, *fragments)
    assert not out.exists() or list(out.iterdir()) == []


def test_unwritable_output_cli(tmp_path, capfd):
    blocker = tmp_path / "a-file"
    blocker.write_text("x")
    assert_one_line_error(run_main(capfd, "--variant", "m0", "--format", "onnx", "--output", str(blocker)),
                          "not a folder")
    assert_one_line_error(run_main(capfd, "--variant", "m0", "--format", "onnx", "--output", str(blocker / "sub")),
                          "cannot create output folder")


def test_existing_artifacts_cli(tmp_path):
    (tmp_path / "micronet_m1.onnx").write_bytes(b"old")
    assert_one_line_error(run_cli("--variant", "m1", "--format", "onnx", "--output", str(tmp_path)),
                          "micronet_m1.onnx already exists", "--force")


@pytest.mark.parametrize("args,fragment", [
    (["--variant", "m9", "--format", "onnx"], "unknown variant 'm9'"),
    (["--variant", "m0", "--format", "onnx", "--opset", "9"], "--opset 9 is not supported"),
    (["--variant", "m0", "--format", "onnx", "--input-size", "100"], "multiple of 32"),
    (["--variant", "m0", "--format", "onnx", "--fp16"], "--fp16 is a TFLite precision"),
    (["--variant", "m0", "--format", "onnx", "--checkpoint", "/nonexistent.pth"], "does not exist"),
])
def test_option_errors_cli(tmp_path, capfd, args, fragment):
    assert_one_line_error(run_main(capfd, *args, "--output", str(tmp_path / "o")), fragment)


def test_force_replaces_an_earlier_run(tmp_path, capfd):
    earlier = {"micronet_m0_int8.tflite": b"an earlier 64 px 10-class int8 model", "micronet_m1.onnx": b"m1",
               "report.json": b"{}", "report.md": b"earlier"}
    for name, data in earlier.items():
        (tmp_path / name).write_bytes(data)
    (tmp_path / "notes.txt").write_text("the user's own file: not the tool's to remove")
    proc = run_main(capfd, "--variant", "m0", "--format", "onnx", "--output", str(tmp_path), "--force")
    assert proc.returncode == 0, proc.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["labels.txt", "micronet_m0.onnx", "notes.txt", "report.json", "report.md"]
    report = json.loads((tmp_path / "report.json").read_text())
    assert report["removed_stale"] == ["micronet_m0_int8.tflite", "micronet_m1.onnx"]
    assert "removed an earlier run's artifacts (--force): micronet_m0_int8.tflite, micronet_m1.onnx" in proc.stdout
    assert "micronet_m0_int8.tflite" in (tmp_path / "report.md").read_text()


def test_float_export_needs_no_calibration_photos(tmp_path):
    checkpoint = checkpoint_with_card(tmp_path / "weights", calibration=str(tmp_path / "no-photos-here"))
    out = tmp_path / "out"
    proc = run_cli("--variant", "m0", "--format", "onnx", "--checkpoint", str(checkpoint), "--output", str(out))
    assert proc.returncode == 0, proc.stderr
    warning, = proc.stderr.strip().splitlines()
    assert warning.startswith("warning: no calibration photos: parity ran on the 2 fixed random inputs only")
    report = json.loads((out / "report.json").read_text())
    assert report["calibration"]["note"].startswith("no calibration photos") and report["calibration"]["dir"] is None
    fp32, = report["artifacts"]
    assert [cell["inputs"] for cell in fp32["parity"]] == ["fixed random"] and fp32["passed"]
    assert fp32["parity"][0]["metrics"]["max_abs_rel"] <= FP32_MAX_ABS_REL


@pytest.mark.slow
@pytest.mark.parametrize("precision", ["fp32", "fp16"])
def test_float_tflite_needs_no_calibration_photos(tmp_path, precision):
    checkpoint = checkpoint_with_card(tmp_path / "weights", calibration=str(tmp_path / "no-photos-here"))
    report = export(ExportOptions(variant="m0", format="tflite", fp16=precision == "fp16", checkpoint=checkpoint,
                                  output=tmp_path / "out"))
    tflite = report.artifacts[-1]
    inputs = [cell["inputs"] for cell in tflite.parity]
    assert inputs[0] == "fixed random (LiteRT)" and inputs[-1].startswith("fixed random (tflite-runtime ")
    assert len(inputs) == len(set(inputs)) == 2 and tflite.passed
    assert any(note.startswith("no calibration photos") for note in tflite.notes)
