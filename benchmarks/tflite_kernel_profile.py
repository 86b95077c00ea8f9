"""Instructions per XNNPACK kernel for M0's TFLite fp32 and int8 models (callgrind), one run.

    python benchmarks/tflite_kernel_profile.py [--variant m0] [--invokes 10] [--output benchmarks/results]

LiteRT's Python API has no op profiler, so this counts instructions with valgrind's callgrind
(Debian: apt-get install valgrind): each model runs in a fresh interpreter once with 0 extra
invokes and once with N; the difference divided by N is one invoke, attributed to the kernel
functions (XNNPACK micro-kernels are named by operator and data type). Both models come from
the same export (realistic random weights, as benchmarks/latency.py), so the table shows where
int8 costs more than fp32 on this CPU, kernel family by kernel family.
Writes tflite_kernel_profile.json / .md.
"""

from __future__ import annotations

import argparse
import json
import re
import shutil
import subprocess
import sys
import tempfile
from collections import defaultdict
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(Path(__file__).resolve().parent))

from micronet_export.model.random_weights import realistic_weights  # noqa: E402

from micronet_export import create_model  # noqa: E402
from micronet_export.images import DEFAULT_CALIBRATION_DIR, load_folder  # noqa: E402
from micronet_export.onnx_export import export_onnx  # noqa: E402
from micronet_export.report import format_table  # noqa: E402
from micronet_export.tflite_export import convert  # noqa: E402

INVOKE = """
import sys, numpy as np
from ai_edge_litert.interpreter import Interpreter
it = Interpreter(model_path=sys.argv[1], num_threads=1)
it.allocate_tensors()
d = it.get_input_details()[0]
it.set_tensor(d["index"], np.zeros(d["shape"], d["dtype"]))
for _ in range(1 + int(sys.argv[2])):
    it.invoke()
"""

# Kernel families: (label, regex on the function name).
FAMILIES = [
    ("conv, spatial kernel (igemm)", r"_igemm_"),
    ("conv 1x1 / FC (gemm)", r"_gemm_"),
    ("depthwise conv", r"_dwconv_"),
    ("elementwise multiply", r"_vmul"),
    ("elementwise add/sub", r"_vadd|_vsub"),
    ("elementwise max / clamp", r"_vmax|_vclamp"),
    ("mean", r"_rdsum|_rsum"),
    ("copies (slice, concat, pad)", r"memcpy|memmove|_copy_|slice|univector_strided|_pad"),
]


def callgrind_self_cost(path: Path, invokes: int, work: Path) -> dict[str, int]:
    out = work / f"cg.{path.stem}.{invokes}"
    script = work / "invoke.py"
    script.write_text(INVOKE)
    subprocess.run(["valgrind", "--tool=callgrind", f"--callgrind-out-file={out}", sys.executable, str(script),
                    str(path), str(invokes)], check=True, capture_output=True)
    text = subprocess.run(["callgrind_annotate", "--threshold=100", "--inclusive=no", str(out)],
                          check=True, capture_output=True, text=True).stdout
    cost = {}
    for line in text.splitlines():
        m = re.match(r"\s*([\d,]+)\s+\([^)]*\)\s+(?:\*\s+)?(.*)$", line)
        if m and "PROGRAM TOTALS" not in m.group(2):
            cost[m.group(2).strip()] = int(m.group(1).replace(",", ""))
    return cost


def per_invoke(path: Path, invokes: int, work: Path) -> dict[str, float]:
    base, many = callgrind_self_cost(path, 0, work), callgrind_self_cost(path, invokes, work)
    return {k: (many.get(k, 0) - base.get(k, 0)) / invokes for k in set(base) | set(many)}


def by_family(cost: dict[str, float]) -> dict[str, float]:
    families: dict[str, float] = defaultdict(float)
    for name, v in cost.items():
        if v <= 0:
            continue
        label = next((lab for lab, rx in FAMILIES if re.search(rx, name)), "other (runtime, dispatch)")
        families[label] += v
    return dict(families)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--variant", default="m0")
    p.add_argument("--invokes", type=int, default=10)
    p.add_argument("--output", type=Path, default=ROOT / "benchmarks" / "results")
    args = p.parse_args(argv)
    if shutil.which("valgrind") is None or shutil.which("callgrind_annotate") is None:
        print("valgrind not found: apt-get install valgrind", file=sys.stderr)
        return 2
    photos = load_folder(DEFAULT_CALIBRATION_DIR).arrays
    graph = export_onnx(realistic_weights(create_model(args.variant), photos[:64]))
    families = {}
    with tempfile.TemporaryDirectory(prefix="micronet-cg-") as tmp:
        work = Path(tmp)
        for precision in ("fp32", "int8"):
            path = work / f"{args.variant}_{precision}.tflite"
            path.write_bytes(convert(graph, precision, calibration=photos[:100]).flatbuffer)
            families[precision] = by_family(per_invoke(path, args.invokes, work))
    labels = [lab for lab, _ in FAMILIES] + ["other (runtime, dispatch)"]
    rows = []
    for lab in labels + ["total"]:
        f, q = ((sum(families[k].values()) for k in ("fp32", "int8")) if lab == "total"
                else (families["fp32"].get(lab, 0.0), families["int8"].get(lab, 0.0)))
        rows.append([lab, f"{f / 1e6:.2f}", f"{q / 1e6:.2f}", f"{q / f:.2f}" if f else "-"])
    table = format_table(["kernel family", "fp32 M instr/invoke", "int8 M instr/invoke", "int8 / fp32"], rows)
    print(table)
    args.output.mkdir(parents=True, exist_ok=True)
    (args.output / "tflite_kernel_profile.json").write_text(json.dumps({"variant": args.variant, "families": families},
                                                                      indent=2) + "\n")
    (args.output / "tflite_kernel_profile.md").write_text(
        f"{args.variant}, LiteRT + XNNPACK, 1 thread, callgrind instructions per invoke\n\n```\n{table}\n```\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
