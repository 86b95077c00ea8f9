"""Wall time and peak memory of whole exports, cold (a fresh process each, as a user runs them).

    python benchmarks/export_time.py [--output benchmarks/results]

The main job on the embedded defaults (the official ImageNet M0, 224 px), the same weights for
ONNX Runtime, the shipped Fashion-MNIST M0 (64 px, whose plain int8 model meets the int8
target: no search) and the reference M0 state_dict (224 px, both runtimes). Beside time and
memory, what each int8 artifact buys against fp32 on the same runtime in the same run (the
report's ``vs_fp32``): share of conv/FC MACs in int8, size and latency ratios. Writes
export_time.json / .md.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import REFERENCE, ROOT, host_cpu  # noqa: E402

from micronet_export.report import format_table  # noqa: E402

CLI = [sys.executable, "-m", "micronet_export.cli"]
CASES = {
    "main job (m0 imagenet, 224 px, tflite int8)": ["--variant", "m0", "--format", "tflite", "--int8"],
    "m0 imagenet, 224 px, onnx int8": ["--variant", "m0", "--format", "onnx", "--int8"],
    "m0 fashion-mnist, 64 px, tflite int8": ["--variant", "m0", "--format", "tflite", "--int8",
                                             "--checkpoint", "fashion-mnist"],
    "m0 reference, 224 px, tflite int8": ["--variant", "m0", "--format", "tflite", "--int8", "--checkpoint",
                                          str(REFERENCE / "official_state_dict_m0.pt")],
    "m0 reference, 224 px, onnx int8": ["--variant", "m0", "--format", "onnx", "--int8", "--checkpoint",
                                        str(REFERENCE / "official_state_dict_m0.pt")],
}


def run(args: list[str], output: Path) -> dict:
    start = time.perf_counter()
    proc = subprocess.run(["/usr/bin/time", "-f", "%M", *CLI, *args, "--output", str(output), "--json"],
                          capture_output=True, text=True, cwd=ROOT)
    seconds = time.perf_counter() - start
    peak_kb = int(proc.stderr.strip().splitlines()[-1])
    report = json.loads(proc.stdout)
    int8 = next((a.get("int8", {}) for a in report["artifacts"] if a["precision"] == "int8"), {})
    return {"exit": proc.returncode, "seconds": round(seconds, 1), "peak_rss_gb": round(peak_kb / 2**20, 2),
            "int8_search_seconds": int8.get("search_seconds"), "float_modules": len(int8.get("plan", {}).get("float_units", [])),
            "passed": report["passed"], "vs_fp32": int8.get("vs_fp32")}


def _vs_fp32_cells(vs: dict | None) -> list[str]:
    if not vs:
        return ["-", "-", "-"]
    return [f"{100 * vs['macs']['int8_mac_fraction']:.0f} %", f"{vs['size_ratio']:.2f}x", f"{vs['latency_ratio']:.2f}x"]


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--output", type=Path, default=ROOT / "benchmarks" / "results")
    args = p.parse_args(argv)
    results = {}
    with tempfile.TemporaryDirectory(prefix="micronet-export-time-") as tmp:
        for i, (name, case) in enumerate(CASES.items()):
            results[name] = run(case, Path(tmp) / str(i))
            print(f"{name}: {results[name]}", file=sys.stderr)
    rows = [[name, f"{r['seconds']:.1f}", f"{r['peak_rss_gb']:.2f}",
             "-" if r["int8_search_seconds"] is None else f"{r['int8_search_seconds']:.1f}", str(r["float_modules"]),
             *_vs_fp32_cells(r["vs_fp32"]), "PASS" if r["passed"] else "FAIL"] for name, r in results.items()]
    table = format_table(["export (cold, one process)", "wall s", "peak RSS GB", "int8 search s", "float modules",
                          "int8 MACs", "size vs fp32", "latency vs fp32", "parity"], rows)
    print(table)
    args.output.mkdir(parents=True, exist_ok=True)
    (args.output / "export_time.json").write_text(json.dumps({"cpu": host_cpu(), "results": results}, indent=2) + "\n")
    (args.output / "export_time.md").write_text(f"One run on {host_cpu()}, 2 cores, 1 thread; int8 vs fp32: the same runtime, the "
                                                f"same run.\n\n"
                                                f"```\n{table}\n```\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
