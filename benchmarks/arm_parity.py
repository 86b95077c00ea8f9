"""M0's TFLite artifacts on emulated ARM cores vs the same artifacts on x86: the check cells.

    python benchmarks/arm_parity.py [--cores cortex-a72,cortex-a76]

Runs ``check --formats tflite --precisions fp32,int8 --emulate CORES`` (the library call) for
M0 with the shipped Fashion-MNIST checkpoint (64 px, its calibration images) and with the
reference state_dict (224 px, the calibration photos): every held-out image through LiteRT and
tflite-runtime on each emulated core and on this host. Writes arm_parity.json / .md.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

from micronet_export.check import run_check  # noqa: E402
from micronet_export.emulate.cells import EmulatedCheck  # noqa: E402
from micronet_export.emulate.cores import parse_cores  # noqa: E402
from micronet_export.export import ExportOptions  # noqa: E402
from micronet_export.report import format_table  # noqa: E402

WEIGHTS = {"shipped Fashion-MNIST checkpoint (64 px)": None,
           "reference state_dict (224 px)": ROOT / "tests" / "data" / "reference" / "official_state_dict_m0.pt"}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--cores", default="cortex-a72,cortex-a76")
    p.add_argument("--output", type=Path, default=ROOT / "benchmarks" / "results")
    args = p.parse_args(argv)
    spec = EmulatedCheck(cores=tuple(parse_cores(args.cores)))
    cells, rows = [], []
    for weights, checkpoint in WEIGHTS.items():
        base = ExportOptions(checkpoint=checkpoint)
        for row in run_check("m0", "tflite", "fp32,int8", base=base, emulated=spec):
            if "emu:" not in row["inputs"]:
                continue
            m = row["metrics"]
            cells.append({"weights": weights, **row})
            rows.append([weights, row["artifact"], row["reference"], row["inputs"], str(m["samples"]),
                         f"{m['max_steps']:g}" if "max_steps" in m else "-", f"{m['max_abs']:.2e}",
                         f"{100 * m['top1_agreement']:.1f}",
                         f"{m['x86_top1_margin_steps_median']:g}" if "max_steps" in m else "-",
                         "PASS" if row["passed"] else "FAIL: " + "; ".join(row["failures"])])
    table = format_table(["weights", "artifact", "reference", "emulated on", "images", "max steps", "max abs",
                          "top-1 agreement %", "x86 top-1 margin, median steps", "default gate"], rows)
    print(table)
    args.output.mkdir(parents=True, exist_ok=True)
    (args.output / "arm_parity.json").write_text(json.dumps(cells, indent=2) + "\n")
    (args.output / "arm_parity.md").write_text(
        "Same artifact, same runtime: emulated ARM core (qemu-user) vs this x86 host, on the held-out calibration "
        "images (1 in 5, never calibrated on). int8: max difference in output quantization steps; x86 top-1 "
        "margin: x86's own top-1 minus top-2 logit (median over the images), in steps.\n\n"
        f"```\n{table}\n```\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
