"""report.json / report.md: one schema for every artifact the tool writes.

Schema (see DESIGN.md)::

    {"variant", "input_size", "tool_version", "checkpoint": {"path", "sha256", ["source", "license",
     "license_notice"] when its card gives them},
     "calibration": {...}, "artifacts": [{"path", "format", "precision", "size_bytes",
     "ops": {op: count}, "io": {...}, "graph": {...}, "parity": [{"reference", "inputs",
     "metrics", "thresholds", "passed", "failures"}], "per_layer": [...]}],
     "removed_stale": [file names], "timings_s": {stage: seconds}, "passed"}

``removed_stale``: artifacts of an earlier run in the output folder that this run did not write
and removed (``--force``), so that the folder holds exactly what the report describes.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

from micronet_export import __version__

REPORT_JSON = "report.json"
REPORT_MD = "report.md"


@dataclass
class ArtifactReport:
    path: str
    format: str
    precision: str
    size_bytes: int
    ops: dict[str, int]
    io: dict = field(default_factory=dict)
    graph: dict = field(default_factory=dict)
    parity: list[dict] = field(default_factory=list)
    per_layer: list[dict] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    int8: dict = field(default_factory=dict)  # the int8 plan search (micronet_export.int8.stage)

    @property
    def passed(self) -> bool:
        return all(p["passed"] for p in self.parity)

    def as_dict(self) -> dict:
        return {
            "path": self.path, "format": self.format, "precision": self.precision,
            "size_bytes": self.size_bytes, "ops": self.ops, "io": self.io, "graph": self.graph,
            "parity": self.parity, "per_layer": self.per_layer, "notes": self.notes,
            **({"int8": self.int8} if self.int8 else {}), "passed": self.passed,
        }


@dataclass
class Report:
    variant: str
    input_size: int
    checkpoint: dict
    calibration: dict = field(default_factory=dict)
    artifacts: list[ArtifactReport] = field(default_factory=list)
    removed_stale: list[str] = field(default_factory=list)
    timings_s: dict[str, float] = field(default_factory=dict)
    # Per-core fp32-vs-int8 answer from emulated ARM (export --emulate); empty otherwise.
    emulation: dict = field(default_factory=dict)
    # What the int8 artifacts' weights are when they are not the checkpoint's (--int8-distill).
    int8_weights: dict = field(default_factory=dict)

    @property
    def passed(self) -> bool:
        return all(a.passed for a in self.artifacts)

    def failures(self) -> list[str]:
        out = []
        for a in self.artifacts:
            for p in a.parity:
                for f in p["failures"]:
                    out.append(f"{Path(a.path).name} vs {p['reference']} on {p['inputs']}: {f}")
        return out

    def as_dict(self) -> dict:
        return {
            "variant": self.variant,
            "input_size": self.input_size,
            "tool_version": __version__,
            "checkpoint": self.checkpoint,
            "calibration": self.calibration,
            "artifacts": [a.as_dict() for a in self.artifacts],
            "removed_stale": self.removed_stale,
            "timings_s": {k: round(v, 3) for k, v in self.timings_s.items()},
            "passed": self.passed,
            **({"emulation": self.emulation} if self.emulation else {}),
            **({"int8_weights": self.int8_weights} if self.int8_weights else {}),
        }


def _fmt(v) -> str:
    if isinstance(v, float):
        return f"{v:.3g}" if abs(v) < 1e-2 and v != 0 else f"{v:.4f}"
    return str(v)


_SHOWN_METRICS = ("max_abs", "cosine_mean", "cosine_min", "top1_agreement", "sqnr_db")


def summary_rows(report: Report) -> list[list[str]]:
    rows = []
    for a in report.artifacts:
        for p in a.parity or [None]:
            metrics = p["metrics"] if p else {}
            rows.append([
                Path(a.path).name, a.precision, f"{a.size_bytes / 1024:.0f} KiB", str(sum(a.ops.values())),
                (f"{p['reference']} / {p['inputs']}" if p else "-"),
                *[_fmt(metrics[m]) if m in metrics else "-" for m in _SHOWN_METRICS],
                ("PASS" if p["passed"] else "FAIL") if p else "-",
            ])
    return rows


HEADER = ["artifact", "precision", "size", "ops", "reference / inputs", *_SHOWN_METRICS, "parity"]


def format_table(header: list[str], rows: list[list[str]]) -> str:
    widths = [max(len(str(c)) for c in col) for col in zip(header, *rows)]
    line = lambda cells: "  ".join(str(c).ljust(w) for c, w in zip(cells, widths)).rstrip()
    return "\n".join([line(header), line(["-" * w for w in widths]), *map(line, rows)])


def to_markdown(report: Report) -> str:
    d = report.as_dict()
    out = [f"# MicroNet-{report.variant.upper()} export report", "",
           f"- input: 1x3x{report.input_size}x{report.input_size} (ONNX NCHW), tool {__version__}",
           f"- checkpoint: {report.checkpoint.get('path') or 'none (random init)'}"
           + (f" (sha256 {report.checkpoint['sha256'][:16]}…)" if report.checkpoint.get("sha256") else "")
           + (f"; licence: {report.checkpoint['license_notice']}" if report.checkpoint.get("license_notice") else "")]
    c = report.calibration
    if c.get("dir"):
        out.append(f"- calibration: {c.get('images')} images from {c.get('dir')} ({c.get('method')}),"
                   f" {c.get('skipped', 0)} skipped; parity on {c.get('holdout')} held-out images")
    elif c.get("note"):
        out.append(f"- calibration: {c['note']}")
    if report.int8_weights:
        w = report.int8_weights
        out.append(f"- int8 weights: {w['summary']}; simulated int8 vs fp32 on the held-out photos: cosine "
                   f"{w['simulated_before']['cosine']} -> {w['simulated_after']['cosine']}, top-1 agreement "
                   f"{w['simulated_before']['top1']} -> {w['simulated_after']['top1']} ({w['seconds']} s)")
    if report.removed_stale:
        out.append("- removed artifacts of an earlier run that this run did not write (--force): "
                   + ", ".join(report.removed_stale))
    out += ["", "| " + " | ".join(HEADER) + " |", "|" + "---|" * len(HEADER)]
    out += ["| " + " | ".join(r) + " |" for r in summary_rows(report)]
    for a in report.artifacts:
        out += ["", f"## {Path(a.path).name}", "", "ops: " + ", ".join(f"{k} {v}" for k, v in a.ops.items())]
        if a.io:
            out.append("io: `" + json.dumps(a.io) + "`")
        for note in a.notes:
            out.append(f"- {note}")
        if a.int8:
            out += _int8_markdown(a.int8)
        if a.per_layer:
            sens = any("cosine_only_int8" in r for r in a.per_layer)
            out += ["", "Per-layer int8 error (SQNR of each module's output vs fp32, dB; lower is worse"
                    + ("; sensitivity: logit cosine with only that module in int8" if sens else "") + "):", "",
                    "| module | SQNR dB |" + (" cosine, only this int8 |" if sens else ""),
                    "|---|---:|" + ("---:|" if sens else "")]
            out += [f"| {r['module']} | {r['sqnr_db']:.1f} |"
                    + (f" {r['cosine_only_int8']:.4f} |" if "cosine_only_int8" in r else " - |" if sens else "")
                    for r in a.per_layer]
    if report.emulation:
        from micronet_export.emulate.markdown import format_markdown

        out += format_markdown(report.emulation)
    out += ["", "timings (s): " + ", ".join(f"{k} {v}" for k, v in d["timings_s"].items()),
            "", f"**{'PASSED' if report.passed else 'FAILED'}**", ""]
    return "\n".join(out)


def _int8_markdown(int8: dict) -> list[str]:
    """The int8 plan search: target, chosen plan, float islands and their latency, trials."""
    target, plan = int8["target"], int8["plan"]
    units = plan["float_units"]
    out = ["", "int8 plan:", "",
           f"- target: mean logit cosine >= {target['cosine_mean']:g}, top-1 agreement >= {target['top1_agreement']:g} "
           f"on {int8['validation_images']} validation photos: {'met' if int8['target_met_on_validation'] else 'NOT met'}",
           f"- chosen: {plan['ranges']} ranges, "
           + (f"{len(units)} module(s) kept in float: {', '.join(units)}" if units else "no module kept float by the search")]
    vs = int8.get("vs_fp32")
    if vs:
        out += _vs_fp32_markdown(vs)
    out += ["", "| stage | plan | cosine mean | cosine min | top-1 | meets target |", "|---|---|---:|---:|---:|---|"]
    for t in int8["trials"]:
        n = len(t["plan"]["float_units"])
        out.append(f"| {t['stage']} | {t['plan']['ranges']}{f', {n} float' if n else ''} | {t['cosine_mean']:.4f} | "
                   f"{t['cosine_min']:.4f} | {t['top1_agreement']:.3f} | {'yes' if t['met'] else 'no'} |")
    return out


def _vs_fp32_markdown(vs: dict) -> list[str]:
    """The int8 model against fp32 on the same runtime, measured in the same run."""
    macs, lat, size = vs["macs"], vs["latency_ms"], vs["size_bytes"]
    lines = [f"- in int8: {100 * macs['int8_mac_fraction']:.0f} % of the conv/FC MACs ({macs['int8_ops']} of "
             f"{macs['total_ops']} conv/FC ops; {vs['int8_units']} of {vs['units']} int8-capable modules)",
             f"- against fp32 on the same runtime: size {size['int8'] / 1e6:.2f} MB vs {size['fp32'] / 1e6:.2f} MB "
             f"({vs['size_ratio']:.2f}x); latency ({vs['threads']} thread(s), p50) {lat['int8']:.3f} ms vs "
             f"{lat['fp32']:.3f} ms ({vs['latency_ratio']:.2f}x)"]
    if "plain int8" in lat:
        lines.append(f"- the plain int8 model (no float islands): {lat['plain int8']:.3f} ms")
    return lines


def write_report(report: Report, folder: Path) -> tuple[Path, Path]:
    js, md = folder / REPORT_JSON, folder / REPORT_MD
    js.write_text(json.dumps(report.as_dict(), indent=2) + "\n")
    md.write_text(to_markdown(report))
    return js, md
