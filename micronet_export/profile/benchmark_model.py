"""Parse the text TFLite's ``benchmark_model`` prints (averages and the op-profiling table).

Two generations of its summary line are understood:
``Average inference timings in us: Warmup: 83235, Init: 38467, Inference: 79760.9`` and
``Inference timings in us: Init: 38467, First inference: 9000, Warmup (avg): 8323.5,
Inference (avg): 7976.09``; the ``Timings (microseconds): count=… min=… max=… avg=… std=…``
line; the memory footprint line; and the ``============ <table> ============`` blocks of
``--enable_op_profiling=true`` (tab-separated, bracketed headers).
"""

from __future__ import annotations

import re

_NUM = r"([-+]?\d+(?:\.\d+)?(?:[eE][-+]?\d+)?)"


def _floats(text: str) -> dict[str, float]:
    return {k: float(v) for k, v in re.findall(r"(\w[\w ()]*?)=\s*" + _NUM, text)}


def parse_benchmark_output(text: str) -> dict:
    """The numbers of one benchmark_model run, in milliseconds, as the profile report schema."""
    result: dict = {}
    m = re.search(r"inference timings in us:(.*)", text, flags=re.IGNORECASE)
    if m:
        fields = {k.strip().lower(): float(v) for k, v in re.findall(r"([A-Za-z][A-Za-z ()]*):\s*" + _NUM, m.group(1))}
        init = fields.get("init")
        inference = fields.get("inference (avg)", fields.get("inference"))
        warmup = fields.get("warmup (avg)", fields.get("warmup"))
        result["init_ms"] = init / 1e3 if init is not None else None
        result["first_inference_ms"] = fields["first inference"] / 1e3 if "first inference" in fields else None
        result["warmup_ms"] = warmup / 1e3 if warmup is not None else None
        result["mean_ms"] = inference / 1e3 if inference is not None else None
    timing_lines = re.findall(r"Timings \(microseconds\):(.*)", text)
    if timing_lines:
        # The last one is the regular (not warm-up) run.
        t = {k.strip(): v for k, v in _floats(timing_lines[-1]).items()}
        result["latency_ms"] = {
            "count": int(t.get("count", 0)),
            "min": t.get("min", 0) / 1e3, "max": t.get("max", 0) / 1e3,
            "mean": t.get("avg", 0) / 1e3, "std": t.get("std", 0) / 1e3,
        }
        for key, name in (("p50", "p50"), ("median", "p50"), ("p90", "p90"), ("p95", "p95"), ("p99", "p99")):
            if key in t:
                result["latency_ms"][name] = t[key] / 1e3
    m = re.search(r"Memory footprint delta from the start of the tool \(MB\):\s*init=" + _NUM + r"\s+overall=" + _NUM, text)
    if m:
        result["memory_mb"] = {"init": float(m.group(1)), "overall": float(m.group(2))}
    m = re.search(r"Peak memory footprint \(MB\):\s*init=" + _NUM + r"\s+overall=" + _NUM, text)
    if m:
        result["peak_memory_mb"] = {"init": float(m.group(1)), "overall": float(m.group(2))}
    tables = parse_tables(text)
    if tables:
        result["op_tables"] = tables
        by_type = tables.get("Summary by node type")
        if by_type:
            result["ops_by_type"] = [
                {"op": r["Node type"], "count": int(r["count"]), "ms": r["avg ms"], "percent": r["avg %"]} for r in by_type
            ]
        run_order = tables.get("Run Order")
        if run_order:
            result["ops"] = [{"op": r["node type"], "name": r.get("Name", ""), "ms": r["avg ms"], "percent": r["%"]}
                             for r in run_order]
    m = re.search(r"(\d+) nodes observed", text)
    if m:
        result["nodes_observed"] = int(m.group(1))
    return result


def _cell(value: str):
    v = value.strip().rstrip("%")
    try:
        return float(v)
    except ValueError:
        text = value.strip()
        return text[1:-1] if text.startswith("[") and text.endswith("]") else text


def parse_tables(text: str) -> dict[str, list[dict]]:
    """``=== Title ===`` blocks: a bracketed, tab-separated header then rows until a blank line."""
    tables: dict[str, list[dict]] = {}
    lines = text.splitlines()
    i = 0
    while i < len(lines):
        m = re.match(r"^=+\s*(.*?)\s*=+\s*$", lines[i].strip())
        if not m or i + 1 >= len(lines):
            i += 1
            continue
        title = m.group(1)
        header = [h for h in re.findall(r"\[([^\]]+)\]", lines[i + 1])]
        rows = []
        j = i + 2
        while j < len(lines) and lines[j].strip() and not lines[j].strip().startswith("="):
            cells = [c for c in re.split(r"\t+", lines[j].strip()) if c.strip()]
            if len(cells) >= len(header) and header:
                row = {h: _cell(c) for h, c in zip(header, cells)}
                if len(cells) > len(header):  # a name with tabs: keep the rest together
                    row[header[-1]] = _cell("\t".join(cells[len(header) - 1:]))
                rows.append(row)
            elif header and len(cells) == len(header) - 1:  # empty trailing Name
                rows.append({h: _cell(c) for h, c in zip(header, cells + [""])})
            j += 1
        if header:
            tables[title] = rows
        i = j
    return tables
