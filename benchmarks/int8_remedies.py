"""int8 remedies on the hard cases, each alone and combined, for LiteRT and ONNX Runtime.

    python benchmarks/int8_remedies.py [--cases m0-ref,m1-ref,m0-plain,m2-random,m3-random]
                                       [--runtimes tflite,onnxruntime] [--output benchmarks/results]

Cases: the official-format reference state_dicts of M0 and M1 (224 px; heavy-tailed late
activations whose scale changes 50-200x from photo to photo), the plain-trained Fashion-MNIST
M0 (tests/data/fashion_mnist_plain, 64 px, trained without activation noise) and M2/M3 with
realistic random weights (224 px). Photos are split as the export splits them: 1 in 5 held
out for parity, and of the rest 1 in 4 for the search's validation.

Remedies: ``plain`` (min/max ranges: what the tool always made), ``relmse`` (per-image
relative-error ranges), ``cle`` (cross-layer equalization, then min/max), ``bias`` (bias
correction of weight rounding, then min/max), ``cle+bias+relmse``, and ``auto`` (the export's
search: the cheapest of those ranges plus float islands that meets the target on validation
photos). Each row: held-out logit cosine (mean, min) and top-1 agreement against PyTorch fp32,
for the Fashion-MNIST case also top-1 on all 10,000 test images (needs Debian's
dataset-fashion-mnist), latency p50 (1 thread, interleaved with the fp32 model of the same
runtime) and the export time of ``auto``. Writes int8_remedies.json / .md.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "models"))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import host_cpu  # noqa: E402

from micronet_export import create_model  # noqa: E402
from micronet_export.export import split_calibration  # noqa: E402
from micronet_export.images import load_folder, project_path  # noqa: E402
from micronet_export.int8.passes import correct_bias, equalize  # noqa: E402
from micronet_export.int8.search import Int8Options, Int8Plan  # noqa: E402
from micronet_export.int8.distill import DistillOptions, distill  # noqa: E402
from micronet_export.int8.learned_ranges import LearnedRanges  # noqa: E402
from micronet_export.int8.mac_share import onnx_mac_share, tflite_mac_share  # noqa: E402
from micronet_export.int8.stage import artifact_bytes, int8_stage, latency_p50, split_validation  # noqa: E402
from micronet_export.model.random_weights import realistic_weights  # noqa: E402
from micronet_export.onnx_export import export_onnx  # noqa: E402
from micronet_export.parity import compare  # noqa: E402
from micronet_export.report import format_table  # noqa: E402
from micronet_export.runtimes import run_torch  # noqa: E402

REFERENCE = ROOT / "tests" / "data" / "reference"
PLAIN = ROOT / "tests" / "data" / "fashion_mnist_plain" / "micronet_m0_fashion_mnist_plain.pth"
IMAGENET = ROOT / "models" / "micronet_m0_imagenet.pth"
CASES = {
    "m0-imagenet": ("m0", IMAGENET, 224, "calibration"),
    "m0-ref": ("m0", REFERENCE / "official_state_dict_m0.pt", 224, "calibration"),
    "m1-ref": ("m1", REFERENCE / "official_state_dict_m1.pt", 224, "calibration"),
    "m0-plain": ("m0", PLAIN, 64, "models/fashion_mnist_calibration"),
    "m2-random": ("m2", None, 224, "calibration"),
    "m3-random": ("m3", None, 224, "calibration"),
}
REMEDIES = ("plain", "relmse", "cle", "bias", "cle+bias+relmse", "auto", "distill", "distill+auto")
PASS_IMAGES = 32


def _backend(runtime: str, fp32, calib: np.ndarray, learned=None):
    stats_images, _ = split_validation(calib)
    if runtime == "tflite":
        from micronet_export.int8.tflite_backend import TFLiteInt8Backend

        return TFLiteInt8Backend(fp32, calib, stats_images=stats_images, learned_ranges=learned)
    from micronet_export.int8.ort_backend import OrtInt8Backend

    return OrtInt8Backend(fp32, calib, stats_images=stats_images)


@dataclass
class Remedy:
    artifact: object
    backend: object  # runs the artifact (logits)
    plan: Int8Plan
    seconds: float = 0.0


@dataclass
class Distilled:
    """Weights fine-tuned for int8 by distillation from the case's fp32 model."""

    graph: object  # their fp32 ONNX
    seconds: float
    simulated_before: dict
    simulated_after: dict
    learned: object = None  # the activation ranges learned with them (TFLite only)


def distill_case(model, calib: np.ndarray, size: int, steps: int) -> Distilled:
    stats_images, validation = split_validation(calib)
    result = distill(model, stats_images, DistillOptions(steps=steps), check_photos=validation,
                     progress=lambda step, total, loss: print(f"  distill {step}/{total} loss {loss:.3f}", file=sys.stderr))
    fine_tuned = create_model(model.variant, num_classes=model.num_classes)
    fine_tuned.load_state_dict(result.state_dict)
    learned = LearnedRanges(result.ranges, result.signatures, stats_images) if result.ranges else None
    return Distilled(export_onnx(fine_tuned.eval(), input_size=size), result.seconds,
                     vars(result.before), vars(result.after), learned)


def _distilled_remedies(runtime: str, model, calib: np.ndarray, distilled: Distilled) -> dict[str, Remedy]:
    """Plain int8 and the export's search on the distilled weights, judged (like every remedy)
    against the original fp32 model."""
    learned = distilled.learned if runtime == "tflite" else None
    backend = _backend(runtime, distilled.graph, calib, learned)
    out = {"distill": Remedy(backend.build(Int8Plan("minmax")), backend, Int8Plan("minmax"), distilled.seconds)}
    start = time.perf_counter()
    stage = int8_stage(runtime, distilled.graph, calib, lambda x: run_torch(model, x), Int8Options(),
                       learned_ranges=learned)
    out["distill+auto"] = Remedy(stage.artifact, backend, stage.plan, distilled.seconds + time.perf_counter() - start)
    return out


def _artifacts(runtime: str, model, fp32, calib: np.ndarray) -> dict[str, Remedy]:
    base = _backend(runtime, fp32, calib)
    out = {name: Remedy(base.build(plan), base, plan) for name, plan in
           (("plain", Int8Plan("minmax")), ("relmse", Int8Plan("relmse")))}
    equalized, _ = equalize(fp32, calib[:PASS_IMAGES])
    corrected, _ = correct_bias(fp32, calib[:PASS_IMAGES])
    both, _ = correct_bias(equalized, calib[:PASS_IMAGES])
    for name, graph, plan in (("cle", equalized, Int8Plan("minmax")), ("bias", corrected, Int8Plan("minmax")),
                              ("cle+bias+relmse", both, Int8Plan("relmse"))):
        backend = _backend(runtime, graph, calib)
        out[name] = Remedy(backend.build(plan), backend, plan)
    start = time.perf_counter()
    stage = int8_stage(runtime, fp32, calib, lambda x: run_torch(model, x), Int8Options())
    out["auto"] = Remedy(stage.artifact, base, stage.plan, time.perf_counter() - start)
    return out


def _fp32_artifact(runtime: str, fp32):
    if runtime == "tflite":
        from micronet_export.tflite_export import convert

        return convert(fp32, "fp32").flatbuffer
    return fp32


def _mac_share(runtime: str, artifact) -> float:
    share = tflite_mac_share(artifact) if runtime == "tflite" else onnx_mac_share(artifact)
    return round(share.fraction, 4)


def run_case(name: str, runtime: str, test_set, distill_steps: int = 0, distilled: dict | None = None) -> list[dict]:
    """Rows of every remedy; ``distilled`` caches each case's distillation across runtimes."""
    variant, checkpoint, size, calibration = CASES[name]
    photos = load_folder(project_path(calibration), input_size=size).arrays
    model = create_model(variant, checkpoint=checkpoint, num_classes=None)
    if checkpoint is None:
        model = realistic_weights(model, photos[:64])
    fp32 = export_onnx(model, input_size=size)
    calib, holdout = split_calibration(photos)
    want = run_torch(model, holdout)
    rows = []
    artifacts = _artifacts(runtime, model, fp32, calib)
    if distill_steps:
        distilled = {} if distilled is None else distilled
        if name not in distilled:
            distilled[name] = distill_case(model, calib, size, distill_steps)
        artifacts.update(_distilled_remedies(runtime, model, calib, distilled[name]))
    fp32_artifact = _fp32_artifact(runtime, fp32)
    fp32_size = len(artifact_bytes(runtime, fp32_artifact))
    latency = latency_p50(runtime, {"fp32": fp32_artifact, **{k: v.artifact for k, v in artifacts.items()}},
                          holdout[0], threads=1)
    test_top1 = None
    if test_set is not None and name == "m0-plain":
        x, y = test_set
        test_top1 = {"fp32": float((run_torch(model, x).argmax(1) == y).mean())}
    for remedy in (r for r in REMEDIES if r in artifacts):
        remedy_run = artifacts[remedy]
        artifact, backend = remedy_run.artifact, remedy_run.backend
        m = compare(backend.logits(artifact, holdout), want)
        row = {"case": name, "runtime": runtime, "remedy": remedy, "cosine_mean": m["cosine_mean"],
               "cosine_min": m["cosine_min"], "top1_agreement": m["top1_agreement"],
               "latency_ms": latency[remedy], "fp32_latency_ms": latency["fp32"],
               "latency_vs_fp32": latency[remedy] / latency["fp32"],
               "int8_mac_share": _mac_share(runtime, artifact),
               "size_vs_fp32": round(len(artifact_bytes(runtime, artifact)) / fp32_size, 3)}
        if remedy in ("distill", "distill+auto"):
            row.update(export_seconds=round(remedy_run.seconds, 1))
        if remedy in ("auto", "distill+auto"):
            row.update(search_seconds=round(remedy_run.seconds, 1), plan=remedy_run.plan.describe(),
                       float_units=list(remedy_run.plan.float_units))
        if test_top1 is not None:
            top1 = float((backend.logits(artifact, test_set[0]).argmax(1) == test_set[1]).mean())
            row.update(test_top1=top1, test_top1_drop_points=round(100 * (test_top1["fp32"] - top1), 2))
        rows.append(row)
        print(f"{name} {runtime} {remedy}: cosine {m['cosine_mean']:.4f} top-1 {m['top1_agreement']:.3f}", file=sys.stderr)
    return rows


def fashion_test_set(size: int = 64):
    try:
        from PIL import Image
        from train_fashion_mnist import load_split

        from micronet_export.images import preprocess
        images, labels = load_split("test")
    except (OSError, ImportError) as exc:
        print(f"Fashion-MNIST test split unavailable ({exc}); apt-get install dataset-fashion-mnist", file=sys.stderr)
        return None
    x = np.stack([preprocess(Image.fromarray(i, mode="L"), size) for i in images]).astype(np.float32)
    return x, labels.astype(np.int64)


def _table(rows: list[dict]) -> str:
    header = ["case", "runtime", "remedy", "cosine mean", "cosine min", "top-1 agr.", "test top-1 drop", "ms",
              "x fp32", "int8 MACs", "size x fp32", "float units"]
    body = [[r["case"], r["runtime"], r["remedy"], f"{r['cosine_mean']:.4f}", f"{r['cosine_min']:.4f}",
             f"{r['top1_agreement']:.3f}", f"{r['test_top1_drop_points']:+.2f}" if "test_top1_drop_points" in r else "-",
             f"{r['latency_ms']:.3f}", f"{r['latency_vs_fp32']:.2f}", f"{100 * r['int8_mac_share']:.0f} %",
             f"{r['size_vs_fp32']:.2f}",
             str(len(r["float_units"])) if "float_units" in r else "-"] for r in rows]
    return format_table(header, body)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--cases", default=",".join(CASES))
    p.add_argument("--runtimes", default="tflite,onnxruntime")
    p.add_argument("--output", type=Path, default=ROOT / "benchmarks" / "results")
    p.add_argument("--distill-steps", type=int, default=DistillOptions().steps,
                   help="steps of quantization-aware distillation (0: skip the distill remedies)")
    args = p.parse_args(argv)
    cases = args.cases.split(",")
    distilled: dict = {}
    test_set = fashion_test_set() if "m0-plain" in cases else None
    rows = [row for case in cases for runtime in args.runtimes.split(",") for row in run_case(case, runtime, test_set, args.distill_steps, distilled)]
    table = _table(rows)
    print(table)
    cpu = host_cpu()
    args.output.mkdir(parents=True, exist_ok=True)
    (args.output / "int8_remedies.json").write_text(json.dumps({"cpu": cpu, "rows": rows}, indent=2) + "\n")
    (args.output / "int8_remedies.md").write_text(
        f"Held-out photos (1 in 5 of each case's calibration folder), 1 thread, one run on {cpu}.\n\n```\n{table}\n```\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
