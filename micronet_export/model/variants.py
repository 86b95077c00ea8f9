"""MicroNet M0–M3 as data.

Each variant is the official ``microconfig.py`` block table (same column names, same rows) plus
the overrides its ``scripts/eval_micronet_<v>.sh`` passes on the command line
(liyunsheng13/micronet @ ed89b26). Nothing here is derived: change a number and you have a
different network.

Block-table columns (official names)::

    s   stride              n   repeats          c   output channels     ks  kernel size
    c1, c2   channel expansion of the depthwise part (hidden = inp * c1 * c2)
    g1, g2   groups of the first pointwise conv / shift groups of its Dynamic Shift-Max
             (g1 == 0: the block starts with the depthwise conv)
    c3, g3, g4   hidden width (unused by the 'group' pointwise), groups of the second pointwise
             conv / shift groups of its Dynamic Shift-Max (g4 == 0: block ends after the first
             pointwise conv)
    y1, y2, y3   Dynamic Shift-Max mode of the three activation slots: 0 = none (ReLU6 or
             nothing), 1 = two-branch (exp 2), 2 = four-branch max (exp 4)
    r   multiplier of the squeeze reduction of the Dynamic Shift-Max FCs
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple


class BlockRow(NamedTuple):
    s: int
    n: int
    c: int
    ks: int
    c1: int
    c2: int
    g1: int
    g2: int
    c3: int
    g3: int
    g4: int
    y1: int
    y2: int
    y3: int
    r: int


@dataclass(frozen=True)
class VariantConfig:
    name: str
    NET_CONFIG: str
    blocks: tuple[BlockRow, ...]
    STEM_CH: int
    STEM_GROUPS: tuple[int, int]
    OUT_CH: int
    DROPOUT: float
    INIT_A: tuple[float, float]
    INIT_B: tuple[float, float]
    # Settings every eval script passes with the same value.
    INIT_A_BLOCK3: tuple[float, float] = (1.0, 0.0)
    ACT_MAX: float = 2.0
    REDUCTION: int = 8
    SHUFFLE: bool = True
    DEPTHSEP: bool = True
    POINTWISE: str = "group"
    STEM_MODE: str = "spatialsepsf"
    # Published numbers, for `info` and for the tests.
    num_params: int = 0
    readme_madds: str = ""


def _rows(table: list[list[int]]) -> tuple[BlockRow, ...]:
    return tuple(BlockRow(*row) for row in table)


VARIANTS: dict[str, VariantConfig] = {
    "m0": VariantConfig(
        name="m0",
        NET_CONFIG="msnx_dy6_exp4_4M_221",
        blocks=_rows([
            # s, n,   c, ks, c1, c2, g1, g2, c3, g3, g4, y1, y2, y3, r
            [2, 1,   8, 3, 2, 2,  0,  4,   8,  2,  2, 2, 0, 1, 1],
            [2, 1,  12, 3, 2, 2,  0,  8,  12,  4,  4, 2, 2, 1, 1],
            [2, 1,  16, 5, 2, 2,  0, 12,  16,  4,  4, 2, 2, 1, 1],
            [1, 1,  32, 5, 1, 4,  4,  4,  32,  4,  4, 2, 2, 1, 1],
            [2, 1,  64, 5, 1, 4,  8,  8,  64,  8,  8, 2, 2, 1, 1],
            [1, 1,  96, 3, 1, 4,  8,  8,  96,  8,  8, 2, 2, 1, 2],
            [1, 1, 384, 3, 1, 4, 12, 12,   0,  0,  0, 2, 2, 1, 2],
        ]),
        STEM_CH=4, STEM_GROUPS=(2, 2), OUT_CH=640, DROPOUT=0.05,
        INIT_A=(1.0, 1.0), INIT_B=(0.0, 0.0),
        num_params=1_019_590, readme_madds="4M",
    ),
    "m1": VariantConfig(
        name="m1",
        NET_CONFIG="msnx_dy6_exp6_6M_221",
        blocks=_rows([
            # s, n,   c, ks, c1, c2, g1, g2, c3, g3, g4, y1, y2, y3, r
            [2, 1,   8, 3, 2, 2,  0,  6,   8,  2,  2, 2, 0, 1, 1],
            [2, 1,  16, 3, 2, 2,  0,  8,  16,  4,  4, 2, 2, 1, 1],
            [2, 1,  16, 5, 2, 2,  0, 16,  16,  4,  4, 2, 2, 1, 1],
            [1, 1,  32, 5, 1, 6,  4,  4,  32,  4,  4, 2, 2, 1, 1],
            [2, 1,  64, 5, 1, 6,  8,  8,  64,  8,  8, 2, 2, 1, 1],
            [1, 1,  96, 3, 1, 6,  8,  8,  96,  8,  8, 2, 2, 1, 2],
            [1, 1, 576, 3, 1, 6, 12, 12,   0,  0,  0, 2, 2, 1, 2],
        ]),
        STEM_CH=6, STEM_GROUPS=(3, 2), OUT_CH=960, DROPOUT=0.05,
        INIT_A=(1.0, 1.0), INIT_B=(0.0, 0.0),
        num_params=1_777_587, readme_madds="6M",
    ),
    "m2": VariantConfig(
        name="m2",
        NET_CONFIG="msnx_dy9_exp6_12M_221",
        blocks=_rows([
            # s, n,   c, ks, c1, c2, g1, g2, c3, g3, g4, y1, y2, y3, r
            [2, 1,  12, 3, 2, 2,  0,  8,  12,  4,  4, 2, 0, 1, 1],
            [2, 1,  16, 3, 2, 2,  0, 12,  16,  4,  4, 2, 2, 1, 1],
            [1, 1,  24, 3, 2, 2,  0, 16,  24,  4,  4, 2, 2, 1, 1],
            [2, 1,  32, 5, 1, 6,  6,  6,  32,  4,  4, 2, 2, 1, 1],
            [1, 1,  32, 5, 1, 6,  8,  8,  32,  4,  4, 2, 2, 1, 2],
            [1, 1,  64, 5, 1, 6,  8,  8,  64,  8,  8, 2, 2, 1, 2],
            [2, 1,  96, 5, 1, 6,  8,  8,  96,  8,  8, 2, 2, 1, 2],
            [1, 1, 128, 3, 1, 6, 12, 12, 128,  8,  8, 2, 2, 1, 2],
            [1, 1, 768, 3, 1, 6, 16, 16,   0,  0,  0, 2, 2, 1, 2],
        ]),
        STEM_CH=8, STEM_GROUPS=(4, 2), OUT_CH=1024, DROPOUT=0.1,
        INIT_A=(1.0, 1.0), INIT_B=(0.0, 0.0),
        num_params=2_393_876, readme_madds="12M",
    ),
    "m3": VariantConfig(
        name="m3",
        NET_CONFIG="msnx_dy12_exp6_20M_020",
        blocks=_rows([
            # s, n,   c, ks, c1, c2, g1, g2, c3, g3, g4, y1, y2, y3, r
            [2, 1,  16, 3, 2, 2,  0, 12,  16,  4,  4, 0, 2, 0, 1],
            [2, 1,  24, 3, 2, 2,  0, 16,  24,  4,  4, 0, 2, 0, 1],
            [1, 1,  24, 3, 2, 2,  0, 24,  24,  4,  4, 0, 2, 0, 1],
            [2, 1,  32, 5, 1, 6,  6,  6,  32,  4,  4, 0, 2, 0, 1],
            [1, 1,  32, 5, 1, 6,  8,  8,  32,  4,  4, 0, 2, 0, 2],
            [1, 1,  64, 5, 1, 6,  8,  8,  48,  8,  8, 0, 2, 0, 2],
            [1, 1,  80, 5, 1, 6,  8,  8,  80,  8,  8, 0, 2, 0, 2],
            [1, 1,  80, 5, 1, 6, 10, 10,  80,  8,  8, 0, 2, 0, 2],
            [2, 1, 120, 5, 1, 6, 10, 10, 120, 10, 10, 0, 2, 0, 2],
            [1, 1, 120, 5, 1, 6, 12, 12, 120, 10, 10, 0, 2, 0, 2],
            [1, 1, 144, 3, 1, 6, 12, 12, 144, 12, 12, 0, 2, 0, 2],
            [1, 1, 864, 3, 1, 6, 12, 12,   0,  0,  0, 0, 2, 0, 2],
        ]),
        STEM_CH=12, STEM_GROUPS=(4, 3), OUT_CH=1024, DROPOUT=0.1,
        INIT_A=(1.0, 0.5), INIT_B=(0.0, 0.5),
        num_params=2_622_960, readme_madds="21M",
    ),
}
