"""Emulated aarch64: the core table, the plugin's instruction classes and output, the user
errors (fast); the real qemu-user runs (slow: profile --target emu:CORE, check --emulate)."""

from __future__ import annotations

import json
import shutil
import subprocess
import xml.etree.ElementTree as ET

import numpy as np
import pytest

from micronet_export.emulate.advice import answer
from micronet_export.emulate.compare import ModelIO, emulated_vs_x86
from micronet_export.emulate.cores import CORES, parse_cores
from micronet_export.emulate.counts import parse_plugin_output
from micronet_export.emulate.debian import system_mirrors
from micronet_export.emulate.environment import PLUGIN_SOURCES
from micronet_export.errors import UserError
from micronet_export.parity import Thresholds
from micronet_export.profile.targets import parse_target

from conftest import skip_unless_ci
from test_cli import assert_one_line_error, run_cli


# Encodings from GNU as (aarch64-linux-gnu-as -march=armv8.6-a+i8mm+dotprod+bf16+fp16).
ENCODINGS = {
    0x4E829420: ("sdot v0.4s, v1.16b, v2.16b", "dot"), 0x0E829420: ("sdot v0.2s, v1.8b, v2.8b", "dot"),
    0x6E859483: ("udot v3.4s, v4.16b, v5.16b", "dot"), 0x4FA2E820: ("sdot v0.4s, v1.16b, v2.4b[3]", "dot"),
    0x2F9FE020: ("udot v0.2s, v1.8b, v31.4b[0]", "dot"),
    0x4E82A420: ("smmla", "i8mm"), 0x6E82A420: ("ummla", "i8mm"), 0x4E82AC20: ("usmmla", "i8mm"),
    0x4E829C20: ("usdot (vector)", "i8mm"), 0x4FA2F020: ("usdot (element)", "i8mm"), 0x4F22F020: ("sudot", "i8mm"),
    0x4E22CC20: ("fmla v0.4s", "fmla"), 0x4E62CC20: ("fmla v0.2d", "fmla"), 0x0E22CC20: ("fmla v0.2s", "fmla"),
    0x4FA21820: ("fmla v0.4s, .s[3]", "fmla"), 0x4FC21820: ("fmla v0.2d, .d[1]", "fmla"),
    0x0E628020: ("smlal", "int_mul"), 0x4E628020: ("smlal2", "int_mul"), 0x0E22C020: ("smull", "int_mul"),
    0x2E228020: ("umlal", "int_mul"), 0x6E22C020: ("umull2", "int_mul"),
    # neighbours in the encoding space that must stay unclassified
    0x4E420C20: ("fmla v0.8h (fp16)", "insns"), 0x4EA2CC20: ("fmls", "insns"), 0x4E606820: ("sadalp", "insns"),
    0x6E42FC20: ("bfdot", "insns"), 0x4EA29420: ("mla", "insns"), 0x6E22DC20: ("fmul", "insns"),
    0x6E828420: ("sqrdmlah", "insns"), 0x0E62A020: ("smlsl", "insns"), 0x8B020020: ("add x0, x1, x2", "insns"),
    0x3DC00020: ("ldr q0, [x1]", "insns"),
}

PLUGIN_OUTPUT = """format micronet-insn-count 1
total.insns 392951525
window.closed 1
window.insns 5239939
window.dot 0
window.i8mm 0
window.fmla 1815965
window.int_mul 0
"""


# -- fast: parsing, tables, errors -----------------------------------------------------------

def cli_in_process(capsys, *args: str) -> subprocess.CompletedProcess:
    """The CLI's main() in this process (no interpreter start-up per call), as run_cli returns it."""
    from micronet_export.cli import main

    capsys.readouterr()
    code = main(list(args))
    out = capsys.readouterr()
    return subprocess.CompletedProcess(list(args), code, out.out, out.err)


@pytest.mark.parametrize("target,core", [("emu:cortex-a72", "cortex-a72"), ("emu:Cortex-A76", "cortex-a76"),
                                         ("emu:neoverse-n1", "neoverse-n1"), ("emu:cortex-a53", "cortex-a53")])
def test_parse_emu_target(target, core):
    assert parse_target(target) == ("emu", {"core": core})


def test_unknown_core_lists_the_valid_ones(tmp_path, capsys):
    model = tmp_path / "m.tflite"
    model.write_bytes(b"not parsed before the target")
    # the real command line once (exit code, stderr of a fresh process) ...
    assert_one_line_error(run_cli("profile", str(model), "--target", "emu:cortex-a99"),
                          "unknown emulated core 'cortex-a99'", "cortex-a53, cortex-a72, cortex-a76, neoverse-n1")
    # ... and the other mistakes through the same main()
    cli = lambda *args: cli_in_process(capsys, *args)
    assert_one_line_error(cli("profile", str(model), "--target", "emu:"), "emu:CORE")
    assert_one_line_error(cli("check", "--emulate", "cortex-a72,pi4"), "unknown emulated core 'pi4'")
    assert_one_line_error(cli("profile", str(model), "--target", "emu:cortex-a72", "--threads", "2"), "--threads 1")
    assert_one_line_error(cli("--variant", "m0", "--format", "onnx", "--emulate", "cortex-a72"), "--format tflite")
    assert_one_line_error(cli("profile", str(model), "--target", "emu:cortex-a72", "--emu-runtimes", "tflite"),
                          "unknown --emu-runtimes tflite")


def test_missing_qemu_names_the_package(tmp_path, capsys, monkeypatch):
    model = tmp_path / "m.tflite"
    model.write_bytes(b"x")
    empty = tmp_path / "bin"
    empty.mkdir()
    monkeypatch.setenv("PATH", str(empty))  # a machine without qemu-user, for real
    assert_one_line_error(cli_in_process(capsys, "profile", str(model), "--target", "emu:cortex-a72"),
                          "qemu-aarch64 not found", "apt-get install qemu-user")


def test_parse_cores_keeps_order_and_drops_repeats():
    assert [c.name for c in parse_cores("cortex-a76, cortex-a72,cortex-a76")] == ["cortex-a76", "cortex-a72"]
    with pytest.raises(UserError, match="no emulated core"):
        parse_cores(" , ")


def test_cpuinfo_matches_qemus_midr_and_hwcaps():
    a76, a72 = CORES["cortex-a76"], CORES["cortex-a72"]
    text = a76.cpuinfo(2)
    assert text.count("processor\t:") == 2
    # MIDR 0x414fd0b1: Arm (0x41), r4p1, part 0xd0b
    assert "CPU implementer\t: 0x41" in text and "CPU variant\t: 0x4" in text
    assert "CPU part\t: 0xd0b" in text and "CPU revision\t: 1" in text
    assert "asimddp" in text and "asimddp" not in a72.cpuinfo(1)
    assert (a72.part, a72.variant, a72.revision) == (0xD08, 0, 3)
    assert [c.dot_product for c in CORES.values()] == [False, False, True, True]


def test_plugin_classifies_instruction_encodings(tmp_path):
    gcc = shutil.which("gcc")
    if gcc is None:
        skip_unless_ci("gcc is not installed; .ci/run installs it")
    driver = tmp_path / "classify.c"
    driver.write_text('#include <stdio.h>\n#include <stdlib.h>\n#include "insn_classes.h"\n'
                      "int main(int argc, char **argv) { for (int i = 1; i < argc; i++) "
                      'printf("%s\\n", insn_class_names[classify_insn((uint32_t)strtoul(argv[i], 0, 16))]); return 0; }\n')
    subprocess.run([gcc, "-Wall", "-Werror", "-I", str(PLUGIN_SOURCES), "-o", str(tmp_path / "classify"), str(driver)],
                   check=True)
    words = list(ENCODINGS)
    out = subprocess.run([str(tmp_path / "classify"), *(f"{w:08x}" for w in words)], capture_output=True, text=True,
                         check=True).stdout.split()
    assert {ENCODINGS[w][0]: c for w, c in zip(words, out)} == {name: c for name, c in ENCODINGS.values()}


def test_plugin_output_parser():
    counts = parse_plugin_output(PLUGIN_OUTPUT)
    assert counts.windows == 1 and counts.instructions == 5_239_939 and counts.fmla == 1_815_965
    assert counts.process_instructions == 392_951_525
    per = counts.per_invoke(5)
    assert per["instructions"] == pytest.approx(5_239_939 / 5) and per["dot_product"] == 0
    with pytest.raises(UserError, match="no result"):
        parse_plugin_output("")
    with pytest.raises(UserError, match="never closed"):
        parse_plugin_output(PLUGIN_OUTPUT.replace("window.closed 1", "window.closed 0"))
    with pytest.raises(UserError, match="lacks i8mm"):
        parse_plugin_output(PLUGIN_OUTPUT.replace("window.i8mm 0\n", ""))
    with pytest.raises(UserError, match="unreadable"):
        parse_plugin_output(PLUGIN_OUTPUT.replace("window.dot 0", "window.dot many"))


def test_private_apt_uses_the_systems_debian_mirrors(tmp_path):
    (tmp_path / "debian.sources").write_text(
        "Types: deb\nURIs: http://mirror.example/debian\nSuites: bookworm bookworm-updates\nComponents: main\n\n"
        "Types: deb\nURIs: http://mirror.example/debian-security\nSuites: bookworm-security\nComponents: main\n")
    (tmp_path / "nodesource.sources").write_text("Types: deb\nURIs: https://deb.nodesource.com/node_20.x\nSuites: nodistro\n")
    (tmp_path / "extra.list").write_text("# comment\ndeb [arch=amd64] http://mirror.example/debian bookworm-backports main\n")
    mirrors = system_mirrors([tmp_path])
    assert [(m.uri, m.suites) for m in mirrors] == [
        ("http://mirror.example/debian", ("bookworm", "bookworm-updates", "bookworm-backports")),
        ("http://mirror.example/debian-security", ("bookworm-security",))]
    assert [m.uri for m in system_mirrors([tmp_path / "none"])] == ["http://deb.debian.org/debian",
                                                                    "http://deb.debian.org/debian-security"]


def test_int8_difference_in_output_steps():
    scale = 0.125
    x86 = np.array([[1.0, 2.0, -1.0], [0.5, 0.0, 0.25]], np.float32)
    arm = x86 + np.array([[0.0, 3 * scale, 0.0], [scale, 0.0, 0.0]], np.float32)
    metrics = emulated_vs_x86(arm, x86, ModelIO((1, 3, 64, 64), scale))
    assert metrics["max_steps"] == 3 and metrics["top1_agreement"] == 1.0
    # x86 margins: 2.0 - 1.0 = 8 steps and 0.5 - 0.25 = 2 steps
    assert metrics["x86_top1_margin_steps_median"] == pytest.approx((8 + 2) / 2)
    assert Thresholds(max_steps=2).failures(metrics) == ["max_steps 3 (needs <= 2)"]
    assert "max_steps" not in emulated_vs_x86(arm, x86, ModelIO((1, 3, 64, 64), None))


def _record(runtime: str, instructions: float, dots: float = 0.0) -> dict:
    return {"runtime": runtime, "instructions_per_invoke": instructions, "dot_product_per_invoke": dots}


def test_answer_ships_int8_only_where_it_costs_fewer_instructions():
    fp32 = [_record("litert", 1_046_717), _record("tflite_runtime", 1_202_644)]
    a76 = answer(CORES["cortex-a76"], fp32, [_record("litert", 968_372, 93_560), _record("tflite_runtime", 5_692_427)])
    assert a76.ship == "int8" and a76.int8_over_fp32 == pytest.approx(968_372 / 1_046_717, abs=1e-3)
    assert "SDOT" in a76.reason and a76.tflite_runtime_int8_instructions == 5_692_427
    a72 = answer(CORES["cortex-a72"], [_record("litert", 1_021_769)], [_record("litert", 1_300_608)])
    assert a72.ship == "fp32" and a72.tflite_runtime_int8_instructions is None


# -- slow: the real qemu-user ---------------------------------------------------------------

def _require_qemu() -> None:
    if shutil.which("qemu-aarch64") is None:
        skip_unless_ci("qemu-aarch64 is not installed; .ci/run installs qemu-user")


@pytest.fixture(scope="module")
def m0_tflite(tmp_path_factory):
    """The shipped M0 (64 px) as TFLite fp32 and int8: the main job's artifacts."""
    from micronet_export.export import ExportOptions, export

    _require_qemu()
    import shutil

    from micronet_export.export import artifact_names

    out = tmp_path_factory.mktemp("emu-m0")
    for key in ("tflite_fp32", "tflite_int8"):
        # One folder per run (a folder holds one run's artifacts), then both side by side.
        run = out / key
        export(ExportOptions(variant="m0", format="tflite", checkpoint="fashion-mnist", int8=key == "tflite_int8",
                             output=run, per_layer=False))
        shutil.copy(run / artifact_names("m0")[key], out)
    return out


def _profile(*args: str) -> list[dict]:
    proc = run_cli("profile", *args, "--runs", "2", "--json", timeout=1800)
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout)["results"]


@pytest.mark.slow
def test_emulated_profile_counts_sdot_and_repeats_exactly(m0_tflite):
    fp32, int8 = str(m0_tflite / "micronet_m0_float32.tflite"), str(m0_tflite / "micronet_m0_int8.tflite")
    a76 = _profile(fp32, int8, "--target", "emu:cortex-a76", "--emu-runtimes", "litert")
    assert [(r["model"], r["runtime"], r["target"]) for r in a76] == [
        ("micronet_m0_float32.tflite", "litert", "emu:cortex-a76"), ("micronet_m0_int8.tflite", "litert", "emu:cortex-a76")]
    for r in a76:
        assert r["machine"] == "aarch64" and r["xnnpack_partitions"] == 1 and r["parity_vs_x86"]["passed"]
        assert r["emulated_wall_ms"]["p50"] > 0 and "latency_ms" not in r
    float_rec, int8_rec = a76
    # FEAT_DotProd: XNNPACK's int8 kernels use SDOT; the float model has none.
    assert int8_rec["dot_product_per_invoke"] > 0 and float_rec["dot_product_per_invoke"] == 0
    assert float_rec["fmla_per_invoke"] > 0
    assert int8_rec["parity_vs_x86"]["metrics"]["top1_agreement"] == 1.0
    again = _profile(int8, "--target", "emu:cortex-a76", "--emu-runtimes", "litert")[0]
    # Deterministic: the same guest code on the same input, one thread, inline counters.
    assert again["instructions_per_invoke"] == int8_rec["instructions_per_invoke"]
    assert again["dot_product_per_invoke"] == int8_rec["dot_product_per_invoke"]
    a72 = _profile(int8, "--target", "emu:cortex-a72", "--emu-runtimes", "litert,tflite_runtime")
    assert [r["dot_product_per_invoke"] for r in a72] == [0, 0]  # no SDOT on Cortex-A72
    assert a72[1]["xnnpack_partitions"] == 0  # tflite-runtime 2.14: no XNNPACK int8


@pytest.mark.slow
def test_check_emulate_gate(tmp_path, m0_tflite):
    junit = tmp_path / "emu.xml"
    ok = run_cli("check", "--checkpoint", "fashion-mnist", "--formats", "tflite", "--precisions", "int8",
                 "--emulate", "cortex-a72,cortex-a76",
                 "--junit", str(junit), "--json", timeout=1800)
    assert ok.returncode == 0, ok.stdout[-2000:] + ok.stderr
    cells = [c for c in json.loads(ok.stdout)["cells"] if "emu:" in c["inputs"]]
    assert sorted((c["reference"].split()[1], c["inputs"]) for c in cells) == sorted(
        (rt, f"held-out images (emu:{core})") for rt in ("litert", "tflite_runtime") for core in ("cortex-a72", "cortex-a76"))
    for c in cells:
        assert c["metrics"]["top1_agreement"] == 1.0 and c["metrics"]["max_steps"] <= c["thresholds"]["max_steps"]
    suite = ET.parse(junit).getroot()
    assert int(suite.get("failures")) == 0 and int(suite.get("tests")) == len(json.loads(ok.stdout)["cells"])
    measured = max(c["metrics"]["max_steps"] for c in cells if "a76" in c["inputs"])
    assert measured > 0  # ARM and x86 int8 kernels requantize with different rounding
    tight = run_cli("check", "--checkpoint", "fashion-mnist", "--formats", "tflite", "--precisions", "int8",
                    "--emulate", "cortex-a76",
                    "--emu-int8-max-steps", str(measured / 2), "--junit", str(junit), timeout=1800)
    assert tight.returncode == 1 and "FAIL: max_steps" in tight.stdout
    assert any("max_steps" in f.get("message") for f in ET.parse(junit).getroot().findall(".//failure"))


@pytest.mark.slow
def test_export_report_answers_fp32_or_int8_per_core(tmp_path, m0_tflite):
    out = tmp_path / "m0"
    proc = run_cli("--variant", "m0", "--checkpoint", "fashion-mnist", "--format", "tflite", "--int8",
                   "--emulate", "cortex-a76", "--output", str(out),
                   "--json", timeout=1800)
    assert proc.returncode == 0, proc.stderr
    report = json.loads((out / "report.json").read_text())
    [a76] = report["emulation"]["answers"]
    assert a76["core"] == "cortex-a76" and a76["dot_product_per_invoke"] > 0
    assert a76["int8_over_fp32"] == pytest.approx(a76["int8_instructions"] / a76["fp32_instructions"], abs=1e-3)
    assert a76["ship"] == ("int8" if a76["int8_over_fp32"] < 1 else "fp32")
    # the fp32 model was converted for the comparison only: the run wrote its int8 artifact
    assert not (out / "micronet_m0_float32.tflite").exists()
    assert "## fp32 or int8, per ARM core (emulated)" in (out / "report.md").read_text()
