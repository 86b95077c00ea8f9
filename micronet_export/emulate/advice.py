"""Per-core answer to "fp32 or int8?", from emulated instruction counts.

Used by ``micronet-export … --emulate CORE[,CORE]`` (report.json ``emulation``, report.md) and
by benchmarks/arm_counts.py. The answer compares steady-state guest instructions per invoke on
LiteRT (XNNPACK), the runtime that has int8 kernels for ARM; tflite-runtime 2.14's numbers are
reported beside it. Instructions are not cycles (one SDOT does 16 multiply-adds, one FMLA 4),
so a ratio near 1 is a tie, not a verdict.
"""

from __future__ import annotations

import logging
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path

from micronet_export.emulate.cores import Core
from micronet_export.errors import UserError

log = logging.getLogger(__name__)

DECIDING_RUNTIME = "litert"
# Below this int8/fp32 instruction ratio int8 is the answer; at or above it fp32 is (int8 is
# 4x smaller either way, which the reason says).
INT8_WINS_BELOW = 1.0


@dataclass(frozen=True)
class CoreAnswer:
    core: str
    fp32_instructions: float  # per invoke, LiteRT
    int8_instructions: float
    int8_over_fp32: float
    dot_product_per_invoke: float  # int8, LiteRT
    tflite_runtime_fp32_instructions: float | None
    tflite_runtime_int8_instructions: float | None
    ship: str  # "int8" | "fp32"
    reason: str

    def as_dict(self) -> dict:
        return asdict(self)


def _by_runtime(records: list[dict], runtime: str) -> dict | None:
    return next((r for r in records if r.get("runtime") == runtime), None)


def answer(core: Core, fp32_records: list[dict], int8_records: list[dict]) -> CoreAnswer:
    fp32, int8 = _by_runtime(fp32_records, DECIDING_RUNTIME), _by_runtime(int8_records, DECIDING_RUNTIME)
    ratio = int8["instructions_per_invoke"] / fp32["instructions_per_invoke"]
    ship = "int8" if ratio < INT8_WINS_BELOW else "fp32"
    kernels = "SDOT kernels" if int8["dot_product_per_invoke"] else "no dot-product kernels (no SDOT on this core)"
    reason = (f"LiteRT int8 runs {ratio:.2f}x fp32's instructions per invoke on {core.name} ({kernels}); "
              + ("int8 is also 4x smaller" if ship == "int8" else "keep int8 only where its 4x smaller file matters"))
    tr_fp32, tr_int8 = _by_runtime(fp32_records, "tflite_runtime"), _by_runtime(int8_records, "tflite_runtime")
    return CoreAnswer(core.name, fp32["instructions_per_invoke"], int8["instructions_per_invoke"], round(ratio, 3),
                      int8["dot_product_per_invoke"], tr_fp32 and tr_fp32["instructions_per_invoke"],
                      tr_int8 and tr_int8["instructions_per_invoke"], ship, reason)


def core_answers(fp32_artifact: Path, int8_artifact: Path, cores: list[Core]) -> list[CoreAnswer]:
    from micronet_export.emulate.profiling import profile_core

    answers = []
    for core in cores:
        records = profile_core([fp32_artifact, int8_artifact], core, runs=1)
        by_model = lambda path: [r for r in records if r["model"] == path.name]
        answers.append(answer(core, by_model(fp32_artifact), by_model(int8_artifact)))
    return answers


def add_core_answers(report, opts, fp32_onnx, calibration, out_dir: Path) -> None:
    """The export hook: fp32 and int8 TFLite of this run's model (``out_dir`` holds what the run
    wrote; the one it did not write is converted into a temporary folder) → ``report.emulation``."""
    from micronet_export.emulate.cores import parse_cores

    try:
        answers = _answers_for_export(report, opts, fp32_onnx, calibration, out_dir, parse_cores(opts.emulate))
    except UserError as exc:
        # The artifacts are in place by now: an emulation problem must not cost the report.
        log.warning("warning: emulation: %s", exc)
        report.emulation = {"error": str(exc)}
        return
    report.emulation = {"answers": [a.as_dict() for a in answers],
                        "note": "steady-state guest instructions per invoke under qemu-user (1 thread); "
                                "instructions are not cycles"}


def _answers_for_export(report, opts, fp32_onnx, calibration, out_dir: Path, cores: list[Core]) -> list[CoreAnswer]:
    from micronet_export.output import artifact_names
    from micronet_export.tflite_export import convert

    names = artifact_names(opts.variant)
    with tempfile.TemporaryDirectory(prefix="micronet-emu-advice-") as tmp:
        paths = {}
        for precision, key in (("fp32", "tflite_fp32"), ("int8", "tflite_int8")):
            written = out_dir / names[key]  # the run's staging folder while the export runs
            if written.is_file() and any(Path(a.path).name == written.name and a.precision == precision
                                         for a in report.artifacts):
                paths[precision] = written
            else:
                paths[precision] = Path(tmp) / names[key]
                paths[precision].write_bytes(convert(fp32_onnx, precision, calibration=calibration,
                                                          io_dtype=opts.io_dtype).flatbuffer)
        return core_answers(paths["fp32"], paths["int8"], cores)
