"""Emulated ARM cores: instructions per invoke, fp32 vs int8, LiteRT vs tflite-runtime.

    python benchmarks/arm_counts.py [--models m0@64,m0@224,m1@224,m2@224,m3@224]
                                    [--cores cortex-a53,cortex-a72,cortex-a76,neoverse-n1]

Each model is exported (TFLite fp32 and full-int8, the library's pipeline) and profiled with
``--target emu:CORE`` on every core: steady-state guest instructions per invoke (qemu-user +
the counting plugin, 1 thread), SDOT / i8mm / FMLA counts, and the outputs against the same
artifact on this x86 host (4 held-out calibration photos). Weights: M0 at 64 the shipped
Fashion-MNIST checkpoint; at 224 the reference state_dicts for M0/M1 and, for M2/M3, the
realistic random weights (benchmarks/common.py).
Instructions are not cycles. Writes arm_counts.json / .md.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import checkpoint_for, host_cpu  # noqa: E402

from micronet_export.emulate.advice import answer  # noqa: E402
from micronet_export.emulate.cores import parse_cores  # noqa: E402
from micronet_export.emulate.environment import prepare  # noqa: E402
from micronet_export.emulate.profiling import profile_core  # noqa: E402
from micronet_export.export import ExportOptions, artifact_names, export  # noqa: E402
from micronet_export.report import format_table  # noqa: E402

DEFAULT_MODELS = "m0@64,m0@224,m1@224,m2@224,m3@224"
DEFAULT_CORES = "cortex-a53,cortex-a72,cortex-a76,neoverse-n1"


def export_pair(variant: str, size: int, tmp: Path) -> tuple[dict[str, Path], str]:
    if size == 64 and variant == "m0":
        checkpoint, weights = None, "shipped Fashion-MNIST checkpoint"
    else:
        checkpoint, weights = checkpoint_for(variant, tmp)
    paths = {}
    for precision in ("fp32", "int8"):
        out = tmp / f"{variant}_{size}_{precision}"  # a folder holds one run's artifacts
        # The plain int8 model (no accuracy control): the question is how each core runs int8
        # kernels, and on random weights the accuracy control keeps most layers in float.
        export(ExportOptions(variant=variant, format="tflite", int8=precision == "int8", checkpoint=checkpoint,
                             input_size=size, output=out, fail_on_parity=False, per_layer=False,
                             int8_fallback="none"))
        paths[precision] = out / artifact_names(variant)["tflite_" + precision]
    return paths, weights


def rows_for(model: str, weights: str, paths: dict[str, Path], records: list[dict]) -> list[dict]:
    rows = []
    for r in records:
        precision = "fp32" if r["model"] == paths["fp32"].name else "int8"
        parity = r["parity_vs_x86"]["metrics"]
        rows.append({"model": model, "weights": weights, "precision": precision, "core": r["emulated"]["core"],
                     "runtime": r["runtime"], "runtime_version": r["runtime_version"],
                     "xnnpack_partitions": r["xnnpack_partitions"],
                     "instructions_per_invoke": r["instructions_per_invoke"],
                     "dot_product_per_invoke": r["dot_product_per_invoke"], "i8mm_per_invoke": r["i8mm_per_invoke"],
                     "fmla_per_invoke": r["fmla_per_invoke"], "int_widening_mul_per_invoke": r["int_widening_mul_per_invoke"],
                     "vs_x86_max_abs": parity["max_abs"], "vs_x86_max_abs_rel": parity["max_abs_rel"], "vs_x86_max_steps": parity.get("max_steps"),
                     "vs_x86_top1_agreement": parity["top1_agreement"],
                     "emulated_wall_p50_ms": (r.get("emulated_wall_ms") or {}).get("p50")})
    return rows


def table(rows: list[dict], answers: list[dict]) -> str:
    def get(model, core, runtime, precision):
        return next(r for r in rows if (r["model"], r["core"], r["runtime"], r["precision"]) == (model, core, runtime, precision))

    out = []
    for a in answers:
        lf, li = get(a["model"], a["core"], "litert", "fp32"), get(a["model"], a["core"], "litert", "int8")
        tf, ti = get(a["model"], a["core"], "tflite_runtime", "fp32"), get(a["model"], a["core"], "tflite_runtime", "int8")
        out.append([a["model"], a["core"], f"{lf['instructions_per_invoke'] / 1e6:.2f} M",
                    f"{li['instructions_per_invoke'] / 1e6:.2f} M", f"{a['int8_over_fp32']:.2f}",
                    f"{li['dot_product_per_invoke'] / 1e3:.1f} k", f"{tf['instructions_per_invoke'] / 1e6:.2f} M",
                    f"{ti['instructions_per_invoke'] / 1e6:.2f} M",
                    f"{ti['instructions_per_invoke'] / tf['instructions_per_invoke']:.2f}",
                    f"{max(li['vs_x86_max_steps'], 0):g} / {max(ti['vs_x86_max_steps'], 0):g}",
                    f"{max(lf['vs_x86_max_abs_rel'], tf['vs_x86_max_abs_rel']):.1e}",
                    f"{min(li['vs_x86_top1_agreement'], ti['vs_x86_top1_agreement']):.2f}", a["ship"]])
    return format_table(["model", "core", "LiteRT fp32", "LiteRT int8", "int8/fp32", "SDOT/invoke", "tfl-rt fp32",
                         "tfl-rt int8", "int8/fp32", "int8 steps vs x86 (LiteRT / tfl-rt)", "fp32 max_abs_rel vs x86",
                         "int8 top-1 vs x86", "ship"], out)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--models", default=DEFAULT_MODELS, help="VARIANT@SIZE, comma-separated")
    p.add_argument("--cores", default=DEFAULT_CORES)
    p.add_argument("--output", type=Path, default=ROOT / "benchmarks" / "results")
    args = p.parse_args(argv)
    cores = parse_cores(args.cores)
    start = time.perf_counter()
    env = prepare()
    rows, answers = [], []
    with tempfile.TemporaryDirectory(prefix="micronet-arm-") as tmp:
        for spec in args.models.split(","):
            variant, _, size = spec.partition("@")
            paths, weights = export_pair(variant, int(size), Path(tmp))
            for core in cores:
                records = profile_core([paths["fp32"], paths["int8"]], core, runs=3, env=env)
                model_rows = rows_for(spec, weights, paths, records)
                rows += model_rows
                by_model = lambda path: [r for r in records if r["model"] == path.name]
                answers.append({"model": spec, **answer(core, by_model(paths["fp32"]), by_model(paths["int8"])).as_dict()})
                print(f"{spec} {core.name}: {answers[-1]['ship']} ({time.perf_counter() - start:.0f} s)", flush=True)
    text = table(rows, answers)
    print(text)
    header = (f"Host: {host_cpu()} (x86_64), {env.qemu_version}; guest: Debian bookworm arm64 Python 3.11 with "
              "docker/Dockerfile.rpi's wheels. Steady-state guest instructions per invoke, 1 thread "
              "(instructions are not cycles: one SDOT does 16 multiply-adds, one FMLA 4). "
              "vs x86: the same artifact and runtime on the host, 4 held-out calibration photos; fp32 max_abs_rel = "
              "max abs / max abs logit.")
    args.output.mkdir(parents=True, exist_ok=True)
    (args.output / "arm_counts.json").write_text(json.dumps(
        {"host": header, "rows": rows, "answers": answers, "wall_s": round(time.perf_counter() - start, 1)}, indent=2) + "\n")
    (args.output / "arm_counts.md").write_text(f"{header}\n\n```\n{text}\n```\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
