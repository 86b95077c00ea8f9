"""``check --emulate CORE[,CORE]``: parity cells of a TFLite artifact on emulated ARM vs x86.

Each (runtime, core) gets one cell in check's row format: the artifact's outputs on the
held-out calibration images (the export's own split), emulated vs this host, same runtime.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from micronet_export.emulate.compare import (EMULATED_FLOAT_THRESHOLDS, EMULATED_INT8_THRESHOLDS, emulated_vs_x86,
                                             model_io, thresholds_for)
from micronet_export.emulate.cores import Core
from micronet_export.emulate.environment import Environment, prepare
from micronet_export.emulate.qemu import RUNTIMES, run_emulated
from micronet_export.parity import Thresholds


@dataclass(frozen=True)
class EmulatedCheck:
    cores: tuple[Core, ...]
    int8: Thresholds = EMULATED_INT8_THRESHOLDS
    float_: Thresholds = EMULATED_FLOAT_THRESHOLDS
    runtimes: tuple[str, ...] = RUNTIMES


def emulated_cells(artifact: Path, variant: str, precision: str, holdout: np.ndarray, spec: EmulatedCheck,
                   env: Environment | None = None) -> list[dict]:
    from micronet_export.runtimes import run_in_runner

    env = env or prepare()
    io = model_io(artifact)
    thresholds = thresholds_for(io, spec.int8, spec.float_)
    rows = []
    for runtime in spec.runtimes:
        x86, info = run_in_runner(artifact, holdout, runtime)
        for core in spec.cores:
            run = run_emulated(env, core, artifact, runtime, inputs=holdout)
            metrics = emulated_vs_x86(run.outputs, x86, io)
            failures = thresholds.failures(metrics)
            rows.append({"variant": variant, "artifact": artifact.name, "format": "tflite", "precision": precision,
                         "reference": f"x86 {runtime} {info['runtime_version']}",
                         "inputs": f"held-out images (emu:{core.name})", "metrics": metrics,
                         "thresholds": thresholds.as_dict(), "failures": failures, "passed": not failures})
    return rows
