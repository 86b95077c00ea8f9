"""``micronet-export predict`` on real runtimes: the shipped Fashion-MNIST checkpoint in PyTorch
against its fp32 TFLite (LiteRT) and ONNX (ONNX Runtime) exports, and the one-line errors."""

from __future__ import annotations

import json
import shlex
from pathlib import Path

import numpy as np
import pytest

from micronet_export.export import artifact_names
from micronet_export.images import list_images, load_image, project_path
from micronet_export.model import create_model
from micronet_export.parity import FP32_THRESHOLDS
from micronet_export.predict import predict, softmax
from micronet_export.report import ArtifactReport, Report
from micronet_export.runtimes import run_torch

from conftest import SHIPPED
from test_cli import assert_one_line_error, run_main

PHOTOS = project_path("models/fashion_mnist_calibration")
CLASSES = tuple(json.loads(SHIPPED.with_suffix(".json").read_text())["classes"])
INPUT_SIZE = 64


@pytest.fixture(scope="module")
def images() -> list[Path]:
    """Two photos of each class: every class is some image's top-1."""
    by_class: dict[str, list[Path]] = {}
    for path in list_images(PHOTOS):
        by_class.setdefault(path.parent.name, []).append(path)
    return [p for paths in by_class.values() for p in paths[:2]]


@pytest.fixture(scope="module")
def tflite(fashion_fp32_run) -> Path:
    return fashion_fp32_run / artifact_names("m0")["tflite_fp32"]


@pytest.fixture(scope="module")
def onnx(fashion_fp32_run) -> Path:
    return fashion_fp32_run / artifact_names("m0")["onnx_fp32"]


@pytest.fixture(scope="module")
def torch_logits(images) -> np.ndarray:
    model = create_model("m0", checkpoint=SHIPPED, num_classes=None)
    return run_torch(model, np.stack([load_image(p, INPUT_SIZE) for p in images]))


@pytest.fixture(scope="module")
def from_checkpoint(images):
    return predict("fashion-mnist", images, top=len(CLASSES))


def scores_by_index(result) -> np.ndarray:
    out = np.full((len(result.predictions), len(CLASSES)), np.nan)
    for row, p in enumerate(result.predictions):
        for s in p.top:
            out[row, s.index] = s.score
    return out


def probability_tolerance(torch_logits: np.ndarray) -> float:
    """What fp32 round-off may move a probability. The export's fp32 gate bounds the artifact's
    logits to max_abs_rel (1e-4) of the largest |logit|; softmax moves p_i by
    p_i * (dz_i - sum_j p_j dz_j), at most 2 p_i (1 - p_i) max|dz| <= max|dz| / 2."""
    return 0.5 * FP32_THRESHOLDS.max_abs_rel * float(np.abs(torch_logits).max())


def test_checkpoint_scores_are_the_softmax_of_its_logits(from_checkpoint, torch_logits):
    assert from_checkpoint.runtime == "PyTorch" and from_checkpoint.input_size == INPUT_SIZE
    np.testing.assert_allclose(scores_by_index(from_checkpoint), softmax(torch_logits), rtol=0, atol=1e-12)


@pytest.mark.parametrize("artifact", ["tflite", "onnx"])
def test_fp32_artifact_agrees_with_checkpoint(artifact, request, images, from_checkpoint, torch_logits):
    result = predict(request.getfixturevalue(artifact), images, top=len(CLASSES))
    assert result.runtime == {"tflite": "LiteRT", "onnx": "ONNX Runtime"}[artifact]
    assert result.input_size == INPUT_SIZE and result.input_size_source == "the artifact's input"
    assert [p.top[0].index for p in result.predictions] == [p.top[0].index for p in from_checkpoint.predictions]
    tol = probability_tolerance(torch_logits)
    assert 0 < tol < 1e-2  # a bound that can fail: the model's logits are not huge
    np.testing.assert_allclose(scores_by_index(result), scores_by_index(from_checkpoint), rtol=0, atol=tol)
    # the photos span every class, so a mix-up of classes or images would show
    assert len({p.top[0].index for p in result.predictions}) >= len(CLASSES) // 2


def test_top_k_sorted_named_and_at_most_one(tflite, images):
    result = predict(tflite, images, top=3)
    assert result.class_names_source == f"the metadata of {tflite.name}"
    for p in result.predictions:
        scores = [s.score for s in p.top]
        assert len(p.top) == 3
        assert scores == sorted(scores, reverse=True)
        assert 0 < sum(scores) <= 1
        assert [s.name for s in p.top] == [CLASSES[s.index] for s in p.top]
    # labels.txt beside the artifact holds the same names, in index order
    assert tuple((tflite.parent / "labels.txt").read_text().split()) == CLASSES


def test_top_beyond_the_classes_is_all_of_them(images):
    result = predict(SHIPPED, images[:1], top=50)
    assert len(result.predictions[0].top) == len(CLASSES)
    assert sum(s.score for s in result.predictions[0].top) == pytest.approx(1.0, abs=1e-9)


def test_cli_json_has_the_library_numbers(capfd, tflite, images):
    expected = predict(tflite, images[:2], top=2).as_dict()
    proc = run_main(capfd, "predict", str(tflite), *map(str, images[:2]), "--top", "2", "--json")
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout) == expected
    assert "LiteRT" in proc.stderr and "64x64" in proc.stderr


def test_cli_text_lists_rank_name_score(capfd, images):
    proc = run_main(capfd, "predict", "fashion-mnist", str(images[0]), "--top", "2")
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    assert lines[0] == str(images[0])
    assert lines[1].split()[0] == "1." and lines[1].split()[1] in CLASSES
    assert lines[2].split()[0] == "2." and len(lines) == 3


def test_missing_image_is_one_error_line(capfd, tmp_path):
    missing = tmp_path / "missing.png"
    assert_one_line_error(run_main(capfd, "predict", "fashion-mnist", str(missing)), str(missing), "does not exist")


@pytest.mark.parametrize("case", ["unreadable image", "image suffix", "model suffix", "missing model",
                                  "variant of an artifact"])
def test_user_errors_are_one_line(capfd, tmp_path, images, case):
    broken = tmp_path / "broken.png"
    broken.write_bytes(b"not a png")
    notes = tmp_path / "notes.txt"
    notes.write_text("hello")
    args, fragment = {
        "unreadable image": (["fashion-mnist", str(broken)], "cannot read image"),
        "image suffix": (["fashion-mnist", str(notes)], "unsupported suffix .txt"),
        "model suffix": ([str(notes), str(images[0])], "predict runs a .tflite"),
        "missing model": ([str(tmp_path / "m.tflite"), str(images[0])], "does not exist"),
        "variant of an artifact": ([str(tmp_path / "notes.onnx"), str(images[0]), "--variant", "m0"], "--variant"),
    }[case]
    if case == "variant of an artifact":
        Path(args[0]).write_text("x")
    assert_one_line_error(run_main(capfd, "predict", *args), fragment)


def test_export_follow_up_commands_run(capfd, tflite):
    from micronet_export.cli import SUBCOMMANDS
    from micronet_export.follow_up import follow_up_commands

    report = Report(variant="m0", input_size=INPUT_SIZE, checkpoint={}, calibration={"dir": str(PHOTOS)},
                    artifacts=[ArtifactReport(path=str(tflite), format="tflite", precision="fp32", size_bytes=0, ops={})])
    lines = follow_up_commands(report)
    assert len(lines) == 3
    commands = [shlex.split(line, comments=True) for line in lines]
    assert [c[:2] for c in commands] == [["micronet-export", name] for name in ("predict", "evaluate", "profile")]
    for command in commands:
        assert str(tflite) in command
        SUBCOMMANDS[command[1]][0]().parse_args(command[2:])  # valid flags (a parse error raises)
    proc = run_main(capfd, *commands[0][1:])
    assert proc.returncode == 0, proc.stderr
