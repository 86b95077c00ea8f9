"""The command line: output a person reads, JSON a machine reads, one-line errors."""

from __future__ import annotations

import json
import subprocess
import sys




def run_cli(*args: str, timeout: float = 300) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "micronet_export.cli", *args],
        capture_output=True, text=True, timeout=timeout,
    )


def assert_one_line_error(proc: subprocess.CompletedProcess, *fragments: str) -> None:
    assert proc.returncode != 0
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, proc.stderr
    assert lines[0].startswith("error: ")
    assert "Traceback" not in proc.stderr
    for fragment in fragments:
        assert fragment in lines[0]


def test_info_table():
    proc = run_cli("info", "--variant", "m0")
    assert proc.returncode == 0, proc.stderr
    assert "parameters        1,019,590" in proc.stdout
    assert "MAdds total       4.05 M" in proc.stdout
    assert "0 Gather, max rank 4" in proc.stdout


def test_info_json():
    proc = run_cli("info", "--variant", "m3", "--json")
    assert proc.returncode == 0, proc.stderr
    info = json.loads(proc.stdout)
    assert info["params"] == 2_622_960
    assert info["madds"]["total"] == 20_807_520
    assert info["onnx"]["gather_nodes"] == 0 and info["onnx"]["max_rank"] <= 4
    assert info["layers"]["dyshiftmax_exp4"] == 11
    assert sum(info["onnx"]["ops"].values()) == info["onnx"]["num_nodes"]


def test_unknown_variant_is_one_line():
    assert_one_line_error(run_cli("info", "--variant", "m5"), "unknown variant 'm5'", "m0, m1, m2, m3")


def test_version():
    proc = run_cli("--version")
    assert proc.returncode == 0 and proc.stdout.startswith("micronet-export ")
