"""The report's markdown section of the emulated per-core answer (see :mod:`advice`)."""

from __future__ import annotations


def format_markdown(emulation: dict) -> list[str]:
    if "error" in emulation:
        return ["", "## fp32 or int8, per ARM core (emulated)", "", f"not measured: {emulation['error']}"]
    out = ["", "## fp32 or int8, per ARM core (emulated)", "",
           "| core | LiteRT fp32 M instr | LiteRT int8 M instr | int8/fp32 | SDOT per invoke | "
           "tflite-runtime fp32 / int8 M instr | ship |", "|---|---:|---:|---:|---:|---:|---|"]
    for a in emulation.get("answers", []):
        tr = (f"{a['tflite_runtime_fp32_instructions'] / 1e6:.2f} / {a['tflite_runtime_int8_instructions'] / 1e6:.2f}"
              if a.get("tflite_runtime_int8_instructions") else "-")
        out.append(f"| {a['core']} | {a['fp32_instructions'] / 1e6:.2f} | {a['int8_instructions'] / 1e6:.2f} | "
                   f"{a['int8_over_fp32']:.2f} | {a['dot_product_per_invoke'] / 1e3:.1f} k | {tr} | **{a['ship']}** |")
    out += [""] + [f"- {a['core']}: {a['reason']}" for a in emulation.get("answers", [])]
    out.append(f"- {emulation.get('note', '')}")
    return out
