"""One run of the self-contained runner under qemu-user, as one ARM core.

The guest is the runner itself (micronet_export/profile/runner.py, the file the Pi image
copies), started by the arm64 Python of the environment with the image's wheels. With
``counted_invokes`` the runner brackets that many invokes with the plugin's marker calls and
the plugin's counts come back with the runner's JSON.
"""

from __future__ import annotations

import json
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from micronet_export.emulate.counts import InstructionCounts, parse_plugin_output
from micronet_export.emulate.cores import Core
from micronet_export.emulate.environment import Environment, guest_command, guest_environment  # noqa: F401
from micronet_export.errors import UserError
from micronet_export.profile.runner import RUNNER
from micronet_export.runtimes import as_model_input

RUNTIMES = ("litert", "tflite_runtime")
# Emulation is ~50-100x slower than the host: a few timed runs say enough about wall time.
EMULATED_MAX_RUNS = 10
EMULATED_MAX_WARMUP = 3
DEFAULT_COUNTED_INVOKES = 3
TIMEOUT_S = 3600.0


@dataclass
class EmulatedRun:
    core: Core
    runtime: str
    record: dict  # the runner's JSON
    counts: InstructionCounts | None
    counted_invokes: int
    outputs: np.ndarray | None
    wall_s: float  # the whole emulated process, start-up included

    def per_invoke(self) -> dict[str, float]:
        return self.counts.per_invoke(self.counted_invokes) if self.counts else {}


def run_emulated(env: Environment, core: Core, model: str | Path, runtime: str, *, inputs: np.ndarray | None = None,
                 counted_invokes: int = 0, runs: int = 0, warmup: int = 2, timeout: float = TIMEOUT_S) -> EmulatedRun:
    if runtime not in RUNTIMES:
        raise UserError(f"unknown emulated runtime {runtime!r}; valid: {', '.join(RUNTIMES)}")
    model = Path(model).resolve()
    with tempfile.TemporaryDirectory(prefix="micronet-emu-") as tmp:
        tmpdir = Path(tmp)
        args = [str(RUNNER), str(model), "--runtime", runtime, "--threads", "1",
                "--runs", str(min(runs, EMULATED_MAX_RUNS)), "--warmup", str(min(warmup, EMULATED_MAX_WARMUP))]
        if inputs is not None:
            # Normalised photos in, as for the x86 runner: a raw-pixel model gets them as pixels.
            np.save(tmpdir / "inputs.npy", np.ascontiguousarray(as_model_input(model, inputs), np.float32))
            args += ["--inputs", str(tmpdir / "inputs.npy"), "--outputs", str(tmpdir / "outputs.npy")]
        if counted_invokes:
            args += ["--marker-invokes", str(counted_invokes)]
        counts_file = tmpdir / "counts.txt" if counted_invokes else None
        start = time.perf_counter()
        try:
            proc = subprocess.run(guest_command(env, core, args, counts_file), capture_output=True, text=True,
                                  env=guest_environment(env, tmpdir), timeout=timeout)
        except subprocess.TimeoutExpired:
            raise UserError(f"emu:{core.name}: {runtime} on {model.name} timed out after {timeout:.0f} s") from None
        wall = time.perf_counter() - start
        if proc.returncode != 0:
            last = (proc.stderr.strip().splitlines() or [f"exit code {proc.returncode}"])[-1]
            raise UserError(f"emu:{core.name}: {runtime} failed on {model.name}: {last}")
        record = _last_json(proc.stdout, core)
        counts = parse_plugin_output(counts_file.read_text() if counts_file.is_file() else "") if counts_file else None
        outputs = np.load(tmpdir / "outputs.npy") if inputs is not None else None
    return EmulatedRun(core, runtime, record, counts, counted_invokes, outputs, wall)


def _last_json(stdout: str, core: Core) -> dict:
    for line in reversed(stdout.strip().splitlines()):
        if line.startswith("{"):
            return json.loads(line)
    raise UserError(f"emu:{core.name}: the runner printed no result")
