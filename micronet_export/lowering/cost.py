"""The lowering's cost model for LiteRT / XNNPACK, in named constants.

Units are x86 instructions per pixel, read off callgrind profiles of M0 in LiteRT with XNNPACK
(the measurements: benchmarks/results/lowering_notes.md). XNNPACK copies SLICE and
CONCATENATION pixel by pixel, so moving channels costs per contiguous piece, while a 1x1
conv costs per multiply-accumulate.
"""

from __future__ import annotations

# XNNPACK's delegate maps CONCATENATION to xnn_define_concatenate2..5.
MAX_CONCAT_INPUTS = 5
# Each contiguous piece of a channel copy is copied twice (SLICE, then CONCATENATION).
INSTR_PER_PIECE = 36
# A roll of a (rows, cols) channel grid is two rolls of two pieces each.
GRID_ROLL_PIECES = 4
# A 1x1 conv runs at about 20 multiply-accumulates per instruction.
INSTR_PER_MAC = 1 / 20
# XNNPACK's x86 kernels compute 16 channels per depthwise tile and, for a GEMM with at most 8
# outputs, 8 per tile (f32 10x8, QS8 3x8c8): up to those widths a conv emits repeats of its
# outputs at no extra cost. Past 8 the GEMM takes a wider kernel and costs more.
REPEAT_DEPTHWISE_TILE = 16
REPEAT_GEMM_TILE = 8


def permutation_conv_is_cheaper(channels: int, pieces: int) -> bool:
    """A reordering of ``channels`` as a 1x1 conv with a 0/1 matrix (C*C MACs) rather than a
    copy of ``pieces`` contiguous runs."""
    return channels * channels * INSTR_PER_MAC < pieces * INSTR_PER_PIECE


def repeat_conv_is_cheaper(channels: int, mult: int) -> bool:
    """Repeating ``channels`` ``mult`` times with a 1x1 conv rather than a CONCATENATION of
    whole pixels (float only: tiny int8 GEMMs requantize and pad K and N to 8, and cost more
    than the copy)."""
    return mult * channels * channels * INSTR_PER_MAC < mult * INSTR_PER_PIECE / 2


def grouped_behind_permutation_is_cheaper(c_in: int, k_in: int, out_c: int) -> bool:
    """An expanding 1x1 conv whose input order mixes its groups: a permutation conv
    (c_in^2 MACs) plus the grouped conv, against the dense conv (c_in*out_c MACs); the margin
    of 2 keeps it to clear wins (float only: in int8 the extra requantizing GEMM costs more)."""
    return 2 * (c_in * c_in + k_in * out_c) < c_in * out_c


def reorder_pieces(runs: int, grid_roll: bool) -> int:
    return GRID_ROLL_PIECES if grid_roll else runs
