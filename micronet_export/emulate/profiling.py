"""``profile --target emu:CORE``: instruction counts, parity vs x86 and emulated wall time.

One record per (artifact, runtime), in the shape of the other targets' records plus an
``emulated`` block. Latency fields are renamed ``emulated_*``: wall time under qemu says
little about a real core and must not be read as one.
"""

from __future__ import annotations

from pathlib import Path

from micronet_export.emulate.compare import emulated_vs_x86, model_io, parity_images, thresholds_for
from micronet_export.emulate.cores import Core
from micronet_export.emulate.environment import Environment, prepare
from micronet_export.emulate.qemu import DEFAULT_COUNTED_INVOKES, RUNTIMES, EmulatedRun, run_emulated
from micronet_export.errors import UserError


def profile_core(artifacts: list[Path], core: Core, *, runtimes=RUNTIMES, runs: int = 5, warmup: int = 2,
                 counted_invokes: int = DEFAULT_COUNTED_INVOKES, env: Environment | None = None) -> list[dict]:
    from micronet_export.runtimes import run_in_runner

    for artifact in artifacts:
        if artifact.suffix != ".tflite":
            raise UserError(f"emulated targets run .tflite models (LiteRT, tflite-runtime); {artifact.name} is not one")
    env = env or prepare()
    records = []
    for artifact in artifacts:
        io = model_io(artifact)
        inputs = parity_images(io)
        for runtime in runtimes:
            x86, _ = run_in_runner(artifact, inputs, runtime)
            run = run_emulated(env, core, artifact, runtime, inputs=inputs, counted_invokes=counted_invokes,
                               runs=max(runs, 1), warmup=warmup)
            metrics = emulated_vs_x86(run.outputs, x86, io)
            thresholds = thresholds_for(io)
            records.append(emulated_record(run, env, metrics, thresholds.failures(metrics)))
    return records


def emulated_record(run: EmulatedRun, env: Environment, parity_metrics: dict, parity_failures: list[str]) -> dict:
    record = dict(run.record)
    per_invoke = run.per_invoke()
    record.update({
        "target": f"emu:{run.core.name}",
        "cpu": f"{run.core.name} (emulated: {env.qemu_version})",
        "emulated_wall_ms": record.pop("latency_ms", None),
        "emulated_init_ms": record.pop("init_ms", None),
        "emulated_peak_rss_mb": record.pop("peak_rss_mb", None),
        "instructions_per_invoke": per_invoke.get("instructions"),
        "dot_product_per_invoke": per_invoke.get("dot_product"),
        "i8mm_per_invoke": per_invoke.get("i8mm"),
        "fmla_per_invoke": per_invoke.get("fmla"),
        "int_widening_mul_per_invoke": per_invoke.get("int_widening_mul"),
        "parity_vs_x86": {"reference": f"x86 {run.runtime}", "inputs": f"{len(run.outputs)} held-out calibration photos",
                          "metrics": parity_metrics, "passed": not parity_failures, "failures": parity_failures},
        "emulated": {"core": run.core.name, "midr": f"0x{run.core.midr:08x}", "dot_product": run.core.dot_product,
                     "i8mm": run.core.i8mm, "qemu": env.qemu_version, "counted_invokes": run.counted_invokes,
                     "process_wall_s": round(run.wall_s, 2),
                     "note": "instructions are not cycles; wall times are under emulation"},
    })
    return record


def _parity_text(record: dict) -> str:
    metrics = record["parity_vs_x86"]["metrics"]
    if "max_steps" in metrics:
        text = f"{metrics['max_steps']:g} steps, top-1 {100 * metrics['top1_agreement']:.0f} %"
    else:
        text = f"max abs {metrics['max_abs']:.1e}"
    return text if record["parity_vs_x86"]["passed"] else "FAIL " + text


def format_emulated(results: list[dict]) -> str:
    from micronet_export.report import format_table

    rows = [[r["model"], r["target"], f"{r['runtime']} {r.get('runtime_version') or ''}".strip(),
             f"{r['instructions_per_invoke'] / 1e6:.3f}", f"{r['dot_product_per_invoke'] / 1e3:.1f}",
             f"{r['i8mm_per_invoke'] / 1e3:.1f}", f"{r['fmla_per_invoke'] / 1e3:.1f}", str(r.get("xnnpack_partitions")),
             _parity_text(r), "-" if not r.get("emulated_wall_ms") else f"{r['emulated_wall_ms']['p50']:.1f}"]
            for r in results]
    table = format_table(["model", "target", "runtime", "M instr/invoke", "k SDOT", "k i8mm", "k FMLA",
                          "XNNPACK partitions", "vs x86", "emulated wall p50 ms"], rows)
    first = results[0]["emulated"]
    return (f"{table}\ndevice: {first['core']} emulated by {first['qemu']} (MIDR {first['midr']}); steady-state "
            f"guest instructions per invoke over {first['counted_invokes']} invokes, 1 thread. "
            "Instructions are not cycles; wall times are under emulation, not the core's.")


def plot_emulated(results: list[dict], path: Path) -> Path:
    """Instructions per invoke by model and runtime (wall time under emulation is not plotted)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    labels = [f"{r['model']}\n{r['runtime']}" for r in results]
    fig, ax = plt.subplots(figsize=(max(6.0, 1.6 * len(results)), 4.8))
    total = [r["instructions_per_invoke"] / 1e6 for r in results]
    dots = [r["dot_product_per_invoke"] / 1e6 for r in results]
    ax.bar(range(len(results)), total, color="tab:blue", label="all instructions")
    ax.bar(range(len(results)), dots, color="tab:orange", label="SDOT/UDOT")
    ax.set_xticks(range(len(results)))
    ax.set_xticklabels(labels, fontsize=8)
    ax.set_ylabel("M guest instructions per invoke")
    ax.set_title(f"{results[0]['target']} (qemu-user; instructions are not cycles)")
    ax.grid(axis="y", alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
