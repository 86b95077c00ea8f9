"""What the counting plugin (plugin/insn_count.c) writes, read back into numbers."""

from __future__ import annotations

from dataclasses import dataclass

from micronet_export.errors import UserError

FORMAT_LINE = "format micronet-insn-count 1"


@dataclass(frozen=True)
class InstructionCounts:
    """Guest instructions inside the marked windows (summed over closed windows)."""

    windows: int
    instructions: int
    dot_product: int  # SDOT / UDOT
    i8mm: int  # SMMLA / UMMLA / USMMLA / USDOT / SUDOT
    fmla: int  # FMLA vector / by element (single, double)
    int_widening_mul: int  # SMULL / UMULL / SMLAL / UMLAL
    process_instructions: int  # the whole process, Python start-up included

    def per_invoke(self, invokes: int) -> dict[str, float]:
        if invokes < 1:
            raise ValueError("invokes must be >= 1")
        return {"instructions": self.instructions / invokes, "dot_product": self.dot_product / invokes,
                "i8mm": self.i8mm / invokes, "fmla": self.fmla / invokes,
                "int_widening_mul": self.int_widening_mul / invokes}


_KEYS = {"window.closed": "windows", "window.insns": "instructions", "window.dot": "dot_product",
         "window.i8mm": "i8mm", "window.fmla": "fmla", "window.int_mul": "int_widening_mul",
         "total.insns": "process_instructions"}


def parse_plugin_output(text: str) -> InstructionCounts:
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    if not lines or lines[0] != FORMAT_LINE:
        raise UserError("the instruction-counting plugin wrote no result (did the emulated run crash?)")
    values: dict[str, int] = {}
    for line in lines[1:]:
        key, _, value = line.partition(" ")
        if key in _KEYS:
            try:
                values[_KEYS[key]] = int(value)
            except ValueError:
                raise UserError(f"unreadable count in the plugin's output: {line!r}") from None
    missing = sorted(set(_KEYS.values()) - set(values))
    if missing:
        raise UserError(f"the plugin's output lacks {', '.join(missing)}")
    if values["windows"] < 1:
        raise UserError("the emulated runner never closed a counting window (no marker call reached the plugin)")
    return InstructionCounts(**values)
