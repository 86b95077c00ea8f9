"""Latency profiling of exported artifacts: local, Android (adb), boards (ssh), and instruction
counts on emulated ARM cores (emu:CORE).

:func:`profile` returns one record per (artifact, thread count); :func:`format_profile` and
:func:`plot_profile` turn them into a table and a PNG.
"""

from __future__ import annotations

from pathlib import Path

from micronet_export.errors import UserError
from micronet_export.profile.targets import (AdbTarget, ProfileOptions, SshTarget, parse_target, profile_emulated,
                                             profile_local)

__all__ = ["ProfileOptions", "profile", "format_profile", "plot_profile"]

ARTIFACT_SUFFIXES = (".tflite", ".onnx")


def profile(artifacts: list[str | Path], target: str = "local", options: ProfileOptions | None = None) -> list[dict]:
    opts = options or ProfileOptions()
    paths = [Path(a) for a in artifacts]
    if not paths:
        raise UserError("nothing to profile: give one or more .tflite / .onnx files")
    for p in paths:
        if not p.is_file():
            raise UserError(f"{p} does not exist")
        if p.suffix not in ARTIFACT_SUFFIXES:
            raise UserError(f"{p.name} is not a .tflite or .onnx model")
    if any(t < 1 for t in opts.threads):
        raise UserError("--threads takes positive counts, e.g. 1,2,4")
    if opts.runs < 1:
        raise UserError("--runs must be at least 1")
    kind, params = parse_target(target)
    if kind == "local":
        return [profile_local(p, t, opts) for p in paths for t in opts.threads]
    if kind == "emu":
        return profile_emulated(paths, params["core"], opts.threads, opts)
    if kind == "ssh":
        return SshTarget(params["user"], params["host"], params["port"], opts).profile(paths, opts.threads)
    return AdbTarget(params["serial"], opts).profile(paths, opts.threads)


def _ms(v) -> str:
    return "-" if v is None else f"{v:.3f}"


def format_profile(results: list[dict], top_ops: int = 8) -> str:
    from micronet_export.report import format_table

    if results and all(r.get("emulated") for r in results):
        from micronet_export.emulate.profiling import format_emulated

        return format_emulated(results)
    rows = []
    for r in results:
        lat = r.get("latency_ms") or {}
        rows.append([r["model"], r.get("target", "local"), f"{r.get('runtime')} {r.get('runtime_version') or ''}".strip(),
                     str(r["threads"]), _ms(lat.get("p50")), _ms(lat.get("p90")), _ms(lat.get("p99")),
                     _ms(lat.get("min")), _ms(lat.get("mean")), _ms(r.get("init_ms")),
                     "-" if r.get("peak_rss_mb") is None else f"{r['peak_rss_mb']:.0f}",
                     f"{(r.get('model_size_bytes') or 0) / 1024:.0f}"])
    out = [format_table(["model", "target", "runtime", "threads", "p50 ms", "p90 ms", "p99 ms", "min ms", "mean ms",
                         "init ms", "peak RSS MB", "size KiB"], rows)]
    first = results[0] if results else {}
    device = first.get("device") or {"cpu": first.get("cpu"), "host": first.get("hostname"), "cpus": first.get("cpus")}
    out.append("device: " + ", ".join(f"{k} {v}" for k, v in device.items() if v is not None))
    for r in results:
        ops = r.get("ops") or []
        if ops:
            out.append(f"top ops, {r['model']} @ {r['threads']} thread(s):")
            for op in ops[:top_ops]:
                out.append(f"  {op.get('op', '?'):<24} {op['ms']:8.4f} ms  {op.get('name', '')}")
            break
    return "\n".join(out)


def plot_profile(results: list[dict], path: str | Path, top_ops: int = 12) -> Path:
    """Latency (p50, p90 band) by thread count per model, and the top ops by time."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    path = Path(path)
    if results and all(r.get("emulated") for r in results):
        from micronet_export.emulate.profiling import plot_emulated

        return plot_emulated(results, path)
    with_ops = next((r for r in results if r.get("ops")), None)
    fig, axes = plt.subplots(1, 2 if with_ops else 1, figsize=(13 if with_ops else 7, 4.8), squeeze=False)
    ax = axes[0][0]
    models = sorted({(r["model"], r.get("target", "local")) for r in results})
    for model, target in models:
        rs = sorted((r for r in results if r["model"] == model and r.get("target", "local") == target), key=lambda r: r["threads"])
        threads = [r["threads"] for r in rs]
        p50 = [(r.get("latency_ms") or {}).get("p50") for r in rs]
        p90 = [(r.get("latency_ms") or {}).get("p90") or p for r, p in zip(rs, p50)]
        label = model if target == "local" else f"{model} ({target})"
        ax.plot(threads, p50, marker="o", label=label)
        ax.fill_between(threads, p50, p90, alpha=0.15)
    ax.set_xlabel("threads")
    ax.set_ylabel("latency per image, ms (p50; band to p90)")
    ax.set_title("MicroNet latency by thread count")
    ax.set_xticks(sorted({r["threads"] for r in results}))
    ax.set_ylim(bottom=0)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    if with_ops:
        ax2 = axes[0][1]
        ops = with_ops["ops"][:top_ops][::-1]
        labels = [f"{o.get('op', '?')} {'/'.join(str(o.get('name', '')).strip('/').split('/')[-3:])[-40:]}" for o in ops]
        ax2.barh(range(len(ops)), [o["ms"] for o in ops], color="tab:orange")
        ax2.set_yticks(range(len(ops)))
        ax2.set_yticklabels(labels, fontsize=7)
        ax2.set_xlabel("time per run, ms")
        ax2.set_title(f"top {len(ops)} ops: {with_ops['model']} @ {with_ops['threads']} thread(s)")
        ax2.grid(axis="x", alpha=0.3)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
