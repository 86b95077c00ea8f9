"""``micronet-export check``: the parity matrix as a CI gate.

Exports every requested (variant, format, precision) with the normal pipeline, collects every
parity cell (PyTorch ↔ ONNX Runtime ↔ LiteRT / tflite-runtime; with ``emulated``, each TFLite
artifact on emulated ARM cores vs x86), prints one table, writes JUnit XML on request, and fails
when any cell breaches its threshold.
"""

from __future__ import annotations

import logging
import tempfile
from dataclasses import replace
from pathlib import Path
from xml.sax.saxutils import escape, quoteattr

from micronet_export.errors import UserError
from micronet_export.export import ExportOptions, export
from micronet_export.model.variants import VARIANTS

log = logging.getLogger(__name__)

PRECISIONS_BY_FORMAT = {"onnx": ("fp32", "int8"), "tflite": ("fp32", "fp16", "int8")}


def _split(text: str | list[str], valid, what: str) -> list[str]:
    items = [t.strip().lower() for t in (text.split(",") if isinstance(text, str) else text) if t.strip()]
    bad = [t for t in items if t not in valid]
    if bad or not items:
        raise UserError(f"unknown {what} {', '.join(bad) or '(none)'}; valid: {', '.join(valid)}")
    return items


def plan(variants, formats, precisions) -> list[tuple[str, str, str]]:
    variants = _split(variants, tuple(VARIANTS), "variant")
    formats = _split(formats, tuple(PRECISIONS_BY_FORMAT), "format")
    precisions = _split(precisions, ("fp32", "fp16", "int8"), "precision")
    jobs = [(v, f, p) for v in variants for f in formats for p in precisions if p in PRECISIONS_BY_FORMAT[f]]
    if not jobs:
        raise UserError("no valid (format, precision) pair: ONNX takes fp32/int8, TFLite fp32/fp16/int8")
    return jobs


def run_check(
    variants="m0", formats="onnx,tflite", precisions="fp32,int8", *,
    checkpoints: dict[str, str] | None = None, base: ExportOptions | None = None, output: str | Path | None = None,
    emulated=None,
) -> list[dict]:
    """One row per parity cell: variant, artifact, precision, reference, inputs, metrics, passed.

    ``emulated`` (an :class:`micronet_export.emulate.cells.EmulatedCheck`) adds the emulated
    ARM cells of every TFLite artifact."""
    base = base or ExportOptions()
    base.check_thresholds()  # before the first export: a bad bound would otherwise show after it
    checkpoints = checkpoints or {}
    rows = []
    with tempfile.TemporaryDirectory(prefix="micronet-check-") as tmp:
        jobs = plan(variants, formats, precisions)
        for variant, fmt, precision in jobs:
            if fmt == "onnx" and precision == "fp32" and (variant, "onnx", "int8") in jobs:
                continue  # the int8 run checks the fp32 ONNX model too
            out = Path(output or tmp) / variant / f"{fmt}-{precision}"
            options = replace(base, variant=variant, format=fmt, int8=precision == "int8", fp16=precision == "fp16",
                              checkpoint=checkpoints.get(variant, base.checkpoint), output=out, force=True,
                              per_layer=False, fail_on_parity=False)
            log.info("check %s %s %s", variant, fmt, precision)
            report = export(options)
            for art in report.artifacts:
                if fmt == "tflite" and art.format == "onnx":
                    continue  # checked by the ONNX job
                for cell in art.parity:
                    rows.append({"variant": variant, "artifact": Path(art.path).name, "format": art.format,
                                 "precision": art.precision, "reference": cell["reference"], "inputs": cell["inputs"],
                                 "metrics": cell["metrics"], "thresholds": cell["thresholds"],
                                 "failures": cell["failures"], "passed": cell["passed"]})
            if emulated is not None and fmt == "tflite":
                rows += _emulated_rows(report, variant, precision, emulated)
    return rows


def _emulated_rows(report, variant: str, precision: str, emulated) -> list[dict]:
    from micronet_export.emulate.cells import emulated_cells
    from micronet_export.emulate.compare import holdout_images

    holdout = holdout_images(report.calibration["dir"], report.input_size)
    art = next(a for a in report.artifacts if a.format == "tflite")
    log.info("check %s tflite %s on emulated %s", variant, precision, ", ".join(c.name for c in emulated.cores))
    return emulated_cells(Path(art.path), variant, precision, holdout, emulated)


def format_rows(rows: list[dict]) -> str:
    from micronet_export.report import format_table

    def f(v):
        return f"{v:.3g}" if isinstance(v, float) and abs(v) < 1e-2 and v else f"{v:.4f}" if isinstance(v, float) else str(v)

    steps = any("max_steps" in r["metrics"] for r in rows)  # int8 cells vs emulated ARM
    table = [[r["variant"], r["artifact"], r["precision"], f"{r['reference']} / {r['inputs']}",
              f(r["metrics"]["max_abs_rel"]), f(r["metrics"]["cosine_mean"]), f(r["metrics"]["top1_agreement"]),
              *([f(r["metrics"].get("max_steps", "-"))] if steps else []),
              "PASS" if r["passed"] else "FAIL: " + "; ".join(r["failures"])] for r in rows]
    return format_table(["variant", "artifact", "precision", "reference / inputs", "max_abs_rel", "cosine_mean",
                         "top1_agreement", *(["max_steps"] if steps else []), "result"], table)


def write_junit(rows: list[dict], path: str | Path) -> Path:
    """JUnit XML: one testcase per parity cell, a <failure> naming the breached bound."""
    path = Path(path)
    failures = sum(not r["passed"] for r in rows)
    cases = []
    for r in rows:
        name = f"{r['artifact']} vs {r['reference']} on {r['inputs']}"
        body = ""
        if not r["passed"]:
            msg = "; ".join(r["failures"])
            body = f"<failure message={quoteattr(msg)} type=\"parity\">{escape(str(r['metrics']))}</failure>"
        cases.append(f'  <testcase classname={quoteattr("micronet-export." + r["variant"] + "." + r["precision"])} '
                     f'name={quoteattr(name)} time="0">{body}</testcase>')
    xml = ('<?xml version="1.0" encoding="utf-8"?>\n'
           f'<testsuite name="micronet-export parity" tests="{len(rows)}" failures="{failures}" errors="0">\n'
           + "\n".join(cases) + "\n</testsuite>\n")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(xml)
    return path
