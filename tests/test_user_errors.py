"""Issue 15's user mistakes at the command line: each one exits non-zero with exactly one
``error:`` line, no traceback, and leaves every file and folder as it was.

The CLI runs in a child process where the process matters (Ctrl-C, a full disk, one case of
each command), else its main() runs in this process (``run_main``), which spares each case an
interpreter start-up that imports torch."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from micronet_export.export import artifact_names
from micronet_export.images import project_path

from conftest import checkpoint_with_card, reference_checkpoint, skip_unless_ci
from test_cli import assert_one_line_error, run_cli, run_main, tree

SHIPPED = project_path("models/micronet_m0_fashion_mnist.pth")
SLICE = Path(__file__).parent / "data" / "fashion_mnist_slice"
# A tmpfs this small holds no M0 model (the shipped one's ONNX is 1.6 MB): the write fails.
SMALL_TMPFS = "512k"
INTERRUPT_EXIT = 130


def assert_untouched(proc, before: dict, folder: Path, *fragments: str) -> None:
    assert_one_line_error(proc, *fragments)
    assert tree(folder) == before


class _PrintsWhenLoaded:
    def __reduce__(self):
        return (print, ("pickled code ran",))


@pytest.mark.parametrize("command", ["export", "evaluate", "check"])
def test_text_file_as_checkpoint(tmp_path, capfd, command):
    hello = tmp_path / "hello.pth"
    hello.write_text("hello\n")  # torch's unpickler said "KeyError: 101"
    before = tree(tmp_path)
    args = {
        "export": ["--variant", "m0", "--format", "onnx", "--checkpoint", str(hello), "--output", str(tmp_path / "out")],
        "evaluate": ["evaluate", str(hello), "--data", str(SLICE)],
        "check": ["check", "--formats", "onnx", "--precisions", "fp32", "--checkpoint", str(hello),
                  "--output", str(tmp_path / "check")],
    }[command]
    run = run_cli if command == "export" else lambda *a: run_main(capfd, *a)
    assert_untouched(run(*args), before, tmp_path, f"{hello} is not a readable PyTorch checkpoint (not a torch.save file)")


def test_pickled_code_checkpoint_is_refused_for_safety(tmp_path, capfd):
    path = tmp_path / "pickled.pth"
    torch.save({"state_dict": {}, "hook": _PrintsWhenLoaded()}, path, _use_new_zipfile_serialization=False)
    before = tree(tmp_path)
    proc = run_main(capfd, "--variant", "m0", "--format", "onnx", "--checkpoint", str(path),
                    "--output", str(tmp_path / "out"))
    assert_untouched(proc, before, tmp_path, "refused for safety", "pickled Python code (print)")
    assert "pickled code ran" not in proc.stdout


@pytest.mark.parametrize("command", ["export", "evaluate", "check"])
def test_nan_weights_are_refused_before_any_work(tmp_path, capfd, command):
    state = torch.load(SHIPPED, weights_only=True)
    state = state.get("state_dict", state)
    weight = next(k for k, v in state.items() if v.is_floating_point() and v.ndim == 4)
    state[weight] = torch.full_like(state[weight], float("nan"))
    path = tmp_path / "nan.pth"
    torch.save(state, path)
    before = tree(tmp_path)
    args = {
        "export": ["--variant", "m0", "--format", "onnx", "--int8", "--parity-warn-only", "--checkpoint", str(path),
                   "--output", str(tmp_path / "out")],
        "evaluate": ["evaluate", str(path), "--data", str(SLICE)],
        "check": ["check", "--formats", "onnx", "--precisions", "fp32", "--checkpoint", str(path),
                  "--output", str(tmp_path / "check")],
    }[command]
    assert_untouched(run_main(capfd, *args), before, tmp_path, f"checkpoint {path} holds non-finite (NaN or inf)",
                     weight)


@pytest.mark.parametrize("command", ["export", "evaluate"])
def test_m1_weights_as_m0_suggest_m1(tmp_path, capfd, command):
    m1 = str(reference_checkpoint("m1"))
    args = ["--variant", "m0", "--format", "onnx", "--checkpoint", m1, "--output", str(tmp_path / "out")] \
        if command == "export" else ["evaluate", m1, "--variant", "m0", "--data", str(SLICE)]
    assert_untouched(run_main(capfd, *args), {}, tmp_path, "holds MicroNet-m1 weights, not m0", "pass --variant m1")


@pytest.mark.parametrize("args", [
    ["--variant", "m0", "--format", "onnx"],  # was: exported at the default size
    ["info", "--variant", "m0"],
    ["evaluate", str(SHIPPED), "--data", str(SLICE)],
    ["check", "--formats", "onnx", "--precisions", "fp32"],
], ids=["export", "info", "evaluate", "check"])
def test_input_size_zero(tmp_path, capfd, args):
    proc = run_main(capfd, *args, "--input-size", "0", *(["--output", str(tmp_path / "out")] if "--format" in args else []))
    assert_untouched(proc, {}, tmp_path, "--input-size must be a positive multiple of 32, got 0")


def test_evaluate_variant_without_weights_is_refused(tmp_path):
    assert_untouched(run_cli("evaluate", "m1", "--data", str(SLICE)), {}, tmp_path,
                     "m1 has no shipped trained weights: pass --checkpoint PATH, or --random-init")


def test_int8_without_calibration_photos_says_pass_calibration(tmp_path, capfd):
    checkpoint = checkpoint_with_card(tmp_path / "weights", calibration=str(tmp_path / "photos-that-are-not-there"))
    before = tree(tmp_path)
    proc = run_main(capfd, "--variant", "m0", "--format", "onnx", "--int8", "--checkpoint", str(checkpoint),
                   "--output", str(tmp_path / "out"))
    assert_untouched(proc, before, tmp_path, "int8 needs calibration photos", "pass --calibration DIR")


def test_folder_of_an_earlier_run_needs_force(tmp_path, capfd):
    (tmp_path / "micronet_m0_int8.tflite").write_bytes(b"an earlier run")  # not a file this run writes
    before = tree(tmp_path)
    proc = run_main(capfd, "--variant", "m0", "--format", "onnx", "--output", str(tmp_path))
    assert_untouched(proc, before, tmp_path, "micronet_m0_int8.tflite already exists", "--force")


@pytest.fixture
def truncated(tmp_path, shipped_artifacts) -> dict[str, Path]:
    names = artifact_names("m0")
    out = {}
    for key in ("onnx_int8", "tflite_int8"):
        data = (shipped_artifacts / names[key]).read_bytes()
        out[key] = tmp_path / names[key]
        out[key].write_bytes(data[: len(data) // 2])
    return out


@pytest.mark.parametrize("command", ["info", "evaluate"])
@pytest.mark.parametrize("key,kind", [("tflite_int8", "TFLite"), ("onnx_int8", "ONNX")])
def test_truncated_artifact(tmp_path, capfd, truncated, command, key, kind):
    before = tree(tmp_path)
    args = [command, str(truncated[key])] + (["--data", str(SLICE)] if command == "evaluate" else [])
    # info on a truncated .tflite was a struct.error traceback
    assert_untouched(run_main(capfd, *args), before, tmp_path, f"is not a readable {kind} model", "truncated")


@pytest.mark.parametrize("folders,fragments", [
    (["3_Bag", "1_Trouser"], ["'3_Bag' says class 3, but 'Bag' is class 8"]),
    (["Bag", "Shoes"], ["'Shoes' is neither one of the class names of the checkpoint card"]),
], ids=["number-contradicts-name", "unknown-name-among-names"])
def test_evaluate_folders_that_contradict_the_class_names(tmp_path, capfd, folders, fragments):
    images = sorted(SLICE.rglob("*.png"))
    for folder, image in zip(folders, images):
        (tmp_path / folder).mkdir()
        shutil.copy(image, tmp_path / folder / image.name)
    before = tree(tmp_path)
    assert_untouched(run_main(capfd, "evaluate", str(SHIPPED), "--data", str(tmp_path)), before, tmp_path, *fragments)


@pytest.fixture
def small_tmpfs(tmp_path):
    mount = tmp_path / "small-disk"
    mount.mkdir()
    proc = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={SMALL_TMPFS}", "tmpfs", str(mount)],
                          capture_output=True, text=True)
    if proc.returncode != 0:
        skip_unless_ci(f"cannot mount a tmpfs here (needs root with CAP_SYS_ADMIN): {proc.stderr.strip()}")
    try:
        yield mount
    finally:
        subprocess.run(["umount", str(mount)], check=True)


@pytest.mark.slow  # runs the export up to its first write (~10 s each)
@pytest.mark.parametrize("output", ["new/nested", "."], ids=["folder-the-run-creates", "existing-folder"])
def test_full_disk_is_one_line_and_leaves_nothing(small_tmpfs, output):
    (small_tmpfs / "mine.txt").write_text("a file that was there before")
    before = tree(small_tmpfs)
    target = small_tmpfs / output
    proc = run_cli("--variant", "m0", "--format", "onnx", "--output", str(target))
    assert_untouched(proc, before, small_tmpfs, "no space left on device writing",
                     f"{target / 'micronet_m0.onnx'}; free space or pick --output")


def test_ctrl_c_leaves_nothing(tmp_path):
    out = tmp_path / "new" / "out"
    proc = subprocess.Popen([sys.executable, "-m", "micronet_export.cli", "--variant", "m0", "--format", "tflite",
                             "--output", str(out)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 300
    while not out.exists() and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.01)
    assert proc.poll() is None, "the export ended before its output folder appeared"
    os.kill(proc.pid, signal.SIGINT)  # what Ctrl-C sends, mid-run (the TFLite conversion takes seconds)
    stdout, stderr = proc.communicate(timeout=300)
    assert proc.returncode == INTERRUPT_EXIT
    assert stderr.strip() == "error: interrupted"
    assert tree(tmp_path) == {}


def test_ctrl_c_that_a_library_swallows_still_commits_nothing(tmp_path):
    from micronet_export.interrupt import sigint_recorded
    from micronet_export.output import staged_output

    out = tmp_path / "new" / "out"
    with sigint_recorded(), pytest.raises(KeyboardInterrupt):
        with staged_output(out, ["report.json"], force=False) as staged:
            staged.path("report.json").write_text("{}")
            try:  # what an optional import under a bare ``except:`` does with Ctrl-C
                os.kill(os.getpid(), signal.SIGINT)
                time.sleep(1)
            except BaseException:
                pass
    assert tree(tmp_path) == {}


@pytest.mark.parametrize("args,fragment", [
    (["--format", "onnx", "--int8", "--raw-pixels"], "--raw-pixels makes a TFLite model take RGB values"),
    (["--format", "tflite", "--raw-pixels", "--normalized-input"], "not allowed with argument --raw-pixels"),
    (["--format", "tflite", "--int8", "--raw-pixels", "--io-dtype", "float32"], "--io-dtype uint8 or int8"),
    (["--format", "onnx", "--int8", "--int8-fallback", "sometimes"], "invalid choice: 'sometimes'"),
    (["--format", "onnx", "--int8", "--int8-target-cosine", "1.5"], "--int8-target-cosine takes a number in (0, 1]"),
], ids=["raw-pixels-onnx", "raw-pixels-and-normalized", "raw-pixels-float-io", "fallback", "target"])
def test_int8_option_mistakes(tmp_path, capfd, args, fragment):
    proc = run_main(capfd, "--variant", "m0", *args, "--output", str(tmp_path / "out"))
    assert_untouched(proc, {}, tmp_path, fragment)


EXPORT = ["--variant", "m0", "--format", "onnx"]
CHECK = ["check", "--formats", "onnx", "--precisions", "fp32,int8"]


@pytest.mark.parametrize("args,fragment", [
    (EXPORT + ["--int8", "--int8-min-top1", "-1"], "--int8-min-top1 takes a number in [0, 1], got -1.0"),
    (EXPORT + ["--int8", "--int8-min-top1", "1.01"], "--int8-min-top1 takes a number in [0, 1], got 1.01"),
    (EXPORT + ["--int8", "--int8-min-cosine", "inf"], "--int8-min-cosine takes a number in [-1, 1], got inf"),
    (EXPORT + ["--int8", "--int8-min-cosine", "nan"], "--int8-min-cosine takes a number in [-1, 1], got nan"),
    (EXPORT + ["--fp32-max-abs-rel", "-1"], "--fp32-max-abs-rel takes a finite number > 0, got -1.0"),
    (EXPORT + ["--fp32-max-abs-rel", "0"], "--fp32-max-abs-rel takes a finite number > 0, got 0.0"),
    (EXPORT + ["--int8", "--int8-target-top1", "nan"], "--int8-target-top1 takes a number in (0, 1], got nan"),
    (CHECK + ["--int8-min-top1", "-1"], "--int8-min-top1 takes a number in [0, 1], got -1.0"),
    (CHECK + ["--fp16-min-cosine=-inf"], "--fp16-min-cosine takes a number in [-1, 1], got -inf"),
    (CHECK + ["--fp32-max-abs-rel", "inf"], "--fp32-max-abs-rel takes a finite number > 0, got inf"),
    (CHECK + ["--emulate", "cortex-a53", "--emu-int8-min-top1", "2"], "--emu-int8-min-top1 takes a number in [0, 1]"),
    (CHECK + ["--emulate", "cortex-a53", "--emu-int8-max-steps", "-3"], "--emu-int8-max-steps takes a finite number >= 0"),
])
def test_thresholds_out_of_range_are_refused_before_any_work(tmp_path, capfd, args, fragment):
    proc = run_main(capfd, *args, "--output", str(tmp_path / "out"))
    assert_untouched(proc, {}, tmp_path, fragment)


@pytest.mark.parametrize("args,fragment", [
    (EXPORT + ["--keep-float", "classifier"], "--keep-float shapes an int8 model: use it with --int8"),
    (EXPORT + ["--int8-target-cosine", "0.99"], "--int8-target-cosine shapes an int8 model: use it with --int8"),
    (EXPORT + ["--int8", "--keep-float", "features.9"], "--keep-float 'features.9' names no layer of this model"),
    (EXPORT + ["--int8", "--keep-float", "features.6,classifer"], "--keep-float 'classifer' names no layer"),
], ids=["keep-float-fp32", "target-fp32", "unknown-module", "typo"])
def test_int8_only_options_are_checked_up_front(tmp_path, capfd, args, fragment):
    proc = run_main(capfd, *args, "--output", str(tmp_path / "out"))
    assert_untouched(proc, {}, tmp_path, fragment)


def test_known_keep_float_modules_pass_the_up_front_check():
    from micronet_export.export import ExportOptions

    for names in (("classifier",), ("features.6", "features.0.stem"), ("features.1.layers.4",)):
        ExportOptions(variant="m0", format="onnx", int8=True, keep_float=names).normalized()
