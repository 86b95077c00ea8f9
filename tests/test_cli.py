"""The command line: output a person reads, JSON a machine reads, one-line errors."""

from __future__ import annotations

import json
import logging
import subprocess
import sys
from pathlib import Path


def run_cli(*args: str, timeout: float = 300) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "micronet_export.cli", *args],
        capture_output=True, text=True, timeout=timeout,
    )


def run_main(capfd, *args: str) -> subprocess.CompletedProcess:
    """The CLI's ``main()`` in this process: what ``run_cli`` checks, without starting an
    interpreter that imports torch again (the fast tier's error cases). Logging goes to stderr as
    in a fresh process; output on fd 1/2, native libraries' included, is what ``capfd`` holds. An
    exception main() does not turn into an ``error:`` line fails the test with its traceback."""
    from micronet_export.cli import main

    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    root.handlers = []  # pytest's log capture would swallow the CLI's warnings
    capfd.readouterr()
    try:
        code = main(list(args))
    finally:
        root.handlers = handlers
        root.setLevel(level)
    out, err = capfd.readouterr()
    return subprocess.CompletedProcess(list(args), code, out, err)


def assert_one_line_error(proc: subprocess.CompletedProcess, *fragments: str) -> None:
    assert proc.returncode != 0
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, proc.stderr
    assert lines[0].startswith("error: ")
    assert "Traceback" not in proc.stderr
    for fragment in fragments:
        assert fragment in lines[0]


def tree(folder: Path) -> dict[str, tuple[bool, int, int]]:
    """Everything under ``folder`` (hidden files included): path -> (is a folder, size, mtime),
    to show that a failed command left the disk as it was."""
    if not folder.exists():
        return {}
    return {str(p.relative_to(folder)): (p.is_dir(), p.stat().st_size if p.is_file() else 0, p.stat().st_mtime_ns)
            for p in sorted(folder.rglob("*"))}


def test_top_level_help_lists_every_subcommand():
    from micronet_export.cli import SUBCOMMANDS

    proc = run_cli("--help")
    assert proc.returncode == 0, proc.stderr
    listed = proc.stdout.split("sub-commands:")[1]
    for name in SUBCOMMANDS:
        assert f"\n  {name} " in listed, name


def test_argument_errors_are_one_line(tmp_path, capfd):
    assert_one_line_error(run_cli("--variant", "m0", "--output", str(tmp_path / "o")), "--format", "--help")
    assert_one_line_error(run_main(capfd, "evaluate", "m0", "--data", str(tmp_path), "--limit", "0"),
                          "--limit: expected a positive integer, got '0'")
    assert tree(tmp_path) == {}


def test_info_table(capfd):
    proc = run_main(capfd, "info", "--variant", "m0")
    assert proc.returncode == 0, proc.stderr
    assert "parameters        1,019,590" in proc.stdout
    assert "MAdds total       4.05 M" in proc.stdout
    assert "0 Gather, max rank 4" in proc.stdout


def test_info_json(capfd):
    proc = run_main(capfd, "info", "--variant", "m3", "--json")
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
