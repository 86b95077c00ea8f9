"""TFLite graph snapshot of M0–M3: op histogram and XNNPACK partitions, fp32 and int8, 224 px.

    python benchmarks/tflite_graph_snapshot.py [--variants m0,m1,m2,m3] [--check] [--save-dir DIR]

Weights: the reference state_dicts for M0 / M1, realistic random weights for M2 / M3
(benchmarks/common.py); int8 is the plain min/max model calibrated on the first 64 photos of
``calibration/``. Without ``--check`` it writes ``benchmarks/results/tflite_graph_snapshot.json``;
with ``--check`` it compares the graphs made now with that file and exits 1 when a model has
more ops, another op histogram, more than one partition or any TRANSPOSE / GATHER (a refactor
of the lowering must keep the graphs; an optimization may only remove ops). ``--save-dir``
keeps the flatbuffers (e.g. to time them against a later version).
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import ROOT, graph_stats, snapshot_models  # noqa: E402

SNAPSHOT = ROOT / "benchmarks" / "results" / "tflite_graph_snapshot.json"
CALIBRATION_IMAGES = 64


def compare(now: dict, then: dict) -> list[str]:
    """Regressions of ``now`` against ``then`` (same keys), one line each."""
    problems = []
    for key, was in then.items():
        got = now.get(key)
        if got is None:
            continue
        if got["num_ops"] > was["num_ops"]:
            problems.append(f"{key}: {got['num_ops']} ops, snapshot {was['num_ops']}")
        elif got["num_ops"] == was["num_ops"] and got["ops"] != was["ops"]:
            problems.append(f"{key}: op histogram changed: {got['ops']} vs {was['ops']}")
        if got["xnnpack_partitions"] != 1 or got["ops_outside_xnnpack"]:
            problems.append(f"{key}: {got['xnnpack_partitions']} partitions, {got['ops_outside_xnnpack']} ops outside")
        if got["transposes"] or got["gathers"]:
            problems.append(f"{key}: {got['transposes']} TRANSPOSE, {got['gathers']} GATHER")
    return problems


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--variants", default="m0,m1,m2,m3")
    p.add_argument("--check", action="store_true", help="compare with the saved snapshot instead of writing it")
    p.add_argument("--save-dir", type=Path, help="keep the .tflite files here")
    args = p.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="micronet-snapshot-") as tmp:
        now = {}
        for key, flatbuffer in snapshot_models(args.variants.split(","), Path(tmp), CALIBRATION_IMAGES):
            now[key] = graph_stats(flatbuffer)
            print(f"{key}: {now[key]['num_ops']} ops, {now[key]['xnnpack_partitions']} partition(s)", file=sys.stderr)
            if args.save_dir:
                args.save_dir.mkdir(parents=True, exist_ok=True)
                (args.save_dir / f"{key.replace(' ', '_')}.tflite").write_bytes(flatbuffer)
    if args.check:
        problems = compare(now, json.loads(SNAPSHOT.read_text())["models"])
        print("\n".join(problems) or "no regression against the snapshot")
        return 1 if problems else 0
    SNAPSHOT.write_text(json.dumps({"input_size": 224, "calibration_images": CALIBRATION_IMAGES, "models": now},
                                   indent=2) + "\n")
    print(f"wrote {SNAPSHOT}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
