"""evaluate (labelled accuracy), check (CI gate), metadata round-trip, reproducible bytes, and
the shipped trained checkpoint."""

from __future__ import annotations

import hashlib
import json
import xml.etree.ElementTree as ET
from pathlib import Path

import numpy as np
import pytest

from micronet_export import create_model
from micronet_export.evaluate import TopTies, load_images, ranked, topk_correct
from micronet_export.export import ExportOptions, artifact_names, export
from micronet_export.images import project_path
from micronet_export.metadata import read_metadata
from micronet_export.runtimes import run_onnx, run_tflite

from conftest import export_onnx_and_tflite_int8
from test_cli import assert_one_line_error, run_cli, run_main

SLICE = Path(__file__).parent / "data" / "fashion_mnist_slice"
SHIPPED = project_path("models/micronet_m0_fashion_mnist.pth")
TRAINED_MIN_TEST_TOP1 = 0.85
# issue 7's bar, measured on all 10,000 test images by benchmarks/accuracy_fashion_mnist.py;
# here on the committed 100-image slice.
SLICE_MAX_INT8_DROP = 0.01
SLICE_MIN_TOP1 = 0.80


def test_shipped_checkpoint_is_trained():
    card = json.loads(SHIPPED.with_suffix(".json").read_text())
    assert card["test_top1"] >= TRAINED_MIN_TEST_TOP1 and card["test_images"] == 10_000
    assert card["input_size"] == 64 and len(card["classes"]) == 10
    model = create_model("m0", checkpoint=SHIPPED, num_classes=None)  # strict, official keys
    assert model.num_classes == 10


@pytest.mark.slow  # exports the shipped int8 models (tens of seconds)
def test_evaluate_table_has_every_target(shipped_artifacts):
    names = artifact_names("m0")
    targets = [str(SHIPPED), str(shipped_artifacts / names["onnx_int8"]), str(shipped_artifacts / names["tflite_int8"])]
    proc = run_cli("evaluate", *targets, "--data", str(SLICE), "--labels", str(SLICE / "classes.txt"), "--json")
    assert proc.returncode == 0, proc.stderr
    result = json.loads(proc.stdout)
    assert result["input_size"] == 64 and result["classes"] == 10
    rows = result["results"]
    assert [r["target"] for r in rows] == targets
    assert all(r["images"] == 100 for r in rows)
    assert rows[0]["top1"] >= SLICE_MIN_TOP1 and rows[0]["agreement_with_first"] == 1.0
    for r in rows[1:]:
        assert r["top1"] >= rows[0]["top1"] - SLICE_MAX_INT8_DROP, r
        assert r["agreement_with_first"] >= 0.95 and r["top5"] >= r["top1"]
    table = run_cli("evaluate", *targets, "--data", str(SLICE), "--labels", str(SLICE / "classes.txt"), "--limit", "20")
    assert table.returncode == 0 and "top-1 %" in table.stdout and table.stdout.count("\n") >= 5
    # Ties counted on each runtime's own logits, ranked by the one rule.
    labels = np.array([int(p.parent.name.split("_")[0]) for p in sorted(SLICE.rglob("*.png"))])
    images = load_images(sorted(SLICE.rglob("*.png")), 64, progress=False)
    for row, logits in zip(rows[1:], (run_onnx(targets[1], images), run_tflite(targets[2], images))):
        shared = (logits == logits.max(1, keepdims=True)).sum(1) > 1
        assert row["top1_ties"] == int(shared.sum()), row
        assert row["top1"] == pytest.approx(float(np.mean(ranked(logits)[:, 0] == labels)), abs=1e-12)


def test_ties_rank_by_lowest_class_index_and_are_counted():
    logits = np.array([[1.0, 3.0, 3.0, 0.5, 3.0, 2.0],   # 3-way tie at the top, label among them
                       [0.0, 1.0, 2.0, 2.0, 2.0, 2.0],   # 4-way tie at the top, label not among them
                       [5.0, 1.0, 1.0, 1.0, 1.0, 1.0]],  # no tie at the top, 5-way below it
                      np.float32)
    labels = np.array([4, 0, 0])
    assert ranked(logits).tolist() == [[1, 2, 4, 5, 0, 3], [2, 3, 4, 5, 1, 0], [0, 1, 2, 3, 4, 5]]
    assert TopTies.of(logits, labels) == TopTies(images=2, label_tied=1)
    # the top-5 boundary cuts the second row's ties the same way: class 0 is 6th, never in the top 5
    assert topk_correct(logits, labels, 5).tolist() == [True, False, True]
    # the same ranking for the same values in another dtype (an int8 model's dequantized output)
    steps = np.round(logits * 2).astype(np.int8)
    assert ranked(steps.astype(np.float64) / 2).tolist() == ranked(logits).tolist()


def test_evaluate_table_counts_ties(capfd):
    proc = run_main(capfd, "evaluate", str(SHIPPED), "--data", str(SLICE), "--limit", "20")
    assert proc.returncode == 0, proc.stderr
    assert "top-1 ties" in proc.stdout and "0 (0 with the label)" in proc.stdout


def test_evaluate_csv_labels(tmp_path):
    csv = tmp_path / "labels.csv"
    files = sorted(SLICE.rglob("*.png"))[:12]
    csv.write_text("file,label\n" + "".join(f"{f.relative_to(SLICE)},{int(f.parent.name.split('_')[0])}\n" for f in files))
    proc = run_cli("evaluate", str(SHIPPED), "--data", str(SLICE), "--labels", str(csv), "--json")
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["results"][0]["images"] == 12


@pytest.mark.slow  # exports the shipped int8 models (tens of seconds)
def test_evaluate_errors(tmp_path, shipped_artifacts):
    empty = tmp_path / "empty"
    empty.mkdir()
    assert_one_line_error(run_cli("evaluate", str(SHIPPED), "--data", str(empty)), "no labelled images")
    names = tmp_path / "names.txt"
    names.write_text("cat\ndog\n")
    assert_one_line_error(run_cli("evaluate", str(SHIPPED), "--data", str(SLICE), "--labels", str(names)), "unknown label")
    corrupt = tmp_path / "data" / "0_T-shirt_top"
    corrupt.mkdir(parents=True)
    (corrupt / "bad.png").write_bytes(b"\x89PNG broken")
    assert_one_line_error(run_cli("evaluate", str(SHIPPED), "--data", str(tmp_path / "data")), "cannot read image")
    other = tmp_path / "other"
    export(ExportOptions(variant="m0", format="onnx", input_size=96, output=other, fail_on_parity=False))
    assert_one_line_error(run_cli("evaluate", str(other / "micronet_m0.onnx"),
                                  str(shipped_artifacts / artifact_names("m0")["onnx_int8"]), "--data", str(SLICE)),
                          "takes", "input")


@pytest.mark.slow  # exports the shipped int8 models (tens of seconds)
def test_metadata_round_trips(shipped_artifacts):
    names = artifact_names("m0")
    sha = hashlib.sha256(SHIPPED.read_bytes()).hexdigest()
    for key, layout in (("onnx_fp32", "NCHW"), ("onnx_int8", "NCHW"), ("tflite_int8", "NHWC")):
        proc = run_cli("info", str(shipped_artifacts / names[key]), "--json")
        assert proc.returncode == 0, proc.stderr
        meta = json.loads(proc.stdout)
        assert meta == read_metadata(shipped_artifacts / names[key])
        assert meta["micronet.variant"] == "m0" and meta["micronet.input_size"] == "64"
        assert meta["micronet.input_layout"] == layout
        assert meta["micronet.checkpoint_sha256"] == sha
        assert json.loads(meta["micronet.mean"]) == [0.485, 0.456, 0.406]
        assert json.loads(meta["micronet.labels"])[0] == "T-shirt_top"
        assert meta["micronet.tool"].startswith("micronet-export ")
    assert "full integer" in read_metadata(shipped_artifacts / names["tflite_int8"])["micronet.quantization"]


@pytest.mark.slow  # exports the shipped int8 models (tens of seconds)
def test_two_exports_are_byte_identical(tmp_path, shipped_artifacts):
    names = artifact_names("m0")
    export_onnx_and_tflite_int8(tmp_path)
    for key in ("onnx_fp32", "onnx_int8", "tflite_int8"):
        assert (tmp_path / names[key]).read_bytes() == (shipped_artifacts / names[key]).read_bytes(), key


def test_onnx_bytes_do_not_depend_on_the_string_hash_seed(tmp_path):
    """Two processes with different string-hash seeds write the same ONNX bytes (fp32 and int8):
    an export in one process twice cannot see an order that follows Python's set/dict hashing."""
    import os
    import subprocess
    import sys

    names = artifact_names("m0")
    for seed in ("1", "2"):
        proc = subprocess.run(
            [sys.executable, "-m", "micronet_export.cli", "--variant", "m0", "--format", "onnx", "--int8",
             "--checkpoint", str(SHIPPED), "--output", str(tmp_path / seed), "--no-per-layer", "--parity-warn-only"],
            capture_output=True, text=True, timeout=300, env={**os.environ, "PYTHONHASHSEED": seed})
        assert proc.returncode == 0, proc.stderr
    for key in ("onnx_fp32", "onnx_int8"):
        assert (tmp_path / "1" / names[key]).read_bytes() == (tmp_path / "2" / names[key]).read_bytes(), key


@pytest.mark.slow  # exports the shipped int8 models (tens of seconds)
def test_check_gate(tmp_path):
    junit = tmp_path / "parity.xml"
    ok = run_cli("check", "--variants", "m0", "--formats", "onnx,tflite", "--precisions", "fp32", "--junit", str(junit))
    assert ok.returncode == 0, ok.stdout + ok.stderr
    assert "FAIL" not in ok.stdout
    suite = ET.parse(junit).getroot()
    assert suite.tag == "testsuite" and int(suite.get("failures")) == 0 and int(suite.get("tests")) >= 4
    # Past what any model with an int8 layer reaches: the accuracy control's float islands keep
    # at least one layer int8, so the gate fails instead of shipping a float model.
    bad = run_cli("check", "--variants", "m0", "--formats", "onnx", "--precisions", "int8",
                  "--int8-min-cosine", "1.0", "--junit", str(junit))
    assert bad.returncode == 1
    assert "micronet_m0_int8.onnx" in bad.stdout and "FAIL: cosine_mean" in bad.stdout
    suite = ET.parse(junit).getroot()
    failures = suite.findall(".//failure")
    assert int(suite.get("failures")) == len(failures) >= 1
    assert "cosine_mean" in failures[0].get("message")


@pytest.mark.slow
def test_check_default_matrix_passes():
    proc = run_cli("check", "--variants", "m0", "--formats", "onnx,tflite", "--precisions", "fp32,int8", "--json")
    data = json.loads(proc.stdout)
    assert proc.returncode == 0, [c["failures"] for c in data["cells"] if not c["passed"]]
    assert data["passed"] and len(data["cells"]) == 8
    assert {c["precision"] for c in data["cells"]} == {"fp32", "int8"}
