"""The TFLite graphs of M0–M3 (fp32, int8; 224 px) against the recorded snapshot: no op count
above it, the same histogram at the same count, one XNNPACK partition, no TRANSPOSE / GATHER."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "benchmarks"))


@pytest.mark.slow
def test_tflite_graphs_do_not_regress_against_the_snapshot():
    from tflite_graph_snapshot import main

    assert main(["--check"]) == 0
