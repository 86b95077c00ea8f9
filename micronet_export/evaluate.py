"""Top-1 / top-5 of PyTorch checkpoints, ONNX and TFLite artifacts on a labelled folder.

Labelled data: ImageFolder (``DIR/<class>/<image>``) or a CSV of ``file,label`` (``--labels
x.csv``, paths relative to DIR). Class indices: a class-names file (``--labels names.txt``, one
name per line in index order), folder names that are integers, or else sorted folder names
(torchvision's ImageFolder rule). Every target sees the same images through the one
preprocessing function.
"""

from __future__ import annotations

import csv
import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from micronet_export.errors import CalibrationError, UserError
from micronet_export.images import IMAGE_SUFFIXES, load_image

log = logging.getLogger(__name__)


@dataclass
class LabelledSet:
    paths: list[Path]
    labels: np.ndarray
    classes: list[str]


def _read_names(path: Path) -> list[str]:
    names = [line.strip() for line in path.read_text().splitlines() if line.strip()]
    if not names:
        raise UserError(f"labels file {path} is empty")
    return names


def load_labelled(data: str | Path, labels: str | Path | None = None, limit: int | None = None) -> LabelledSet:
    data = Path(data)
    if not data.is_dir():
        raise CalibrationError(f"data folder {data} does not exist or is not a folder")
    labels = Path(labels) if labels else None
    if labels is not None and not labels.is_file():
        raise UserError(f"labels file {labels} does not exist")
    pairs: list[tuple[Path, str]] = []
    if labels is not None and labels.suffix.lower() == ".csv":
        with labels.open(newline="") as f:
            for row in csv.reader(f):
                if not row or row[0].strip().lower() in ("file", "path", "filename"):
                    continue
                if len(row) < 2:
                    raise UserError(f"{labels}: row {row!r} is not 'file,label'")
                pairs.append((data / row[0].strip(), row[1].strip()))
        classes = sorted({lab for _, lab in pairs}, key=lambda s: (not s.isdigit(), int(s) if s.isdigit() else 0, s))
    else:
        for folder in sorted(p for p in data.iterdir() if p.is_dir()):
            for f in sorted(folder.rglob("*")):
                if f.is_file() and f.suffix.lower() in IMAGE_SUFFIXES:
                    pairs.append((f, folder.name))
        classes = sorted({lab for _, lab in pairs})
    if not pairs:
        raise CalibrationError(f"no labelled images in {data} (expected {data}/<class>/<image> or --labels file.csv)")
    if labels is not None and labels.suffix.lower() != ".csv":
        classes = _read_names(labels)
    index = {name: i for i, name in enumerate(classes)}
    out_labels = []
    for path, lab in pairs:
        if lab in index:
            out_labels.append(index[lab])
        elif lab.isdigit() and (labels is None or labels.suffix.lower() == ".csv" or int(lab) < len(classes)):
            out_labels.append(int(lab))
        else:
            raise UserError(f"unknown label {lab!r} for {path.name}; known: {', '.join(classes[:10])}"
                            + (" …" if len(classes) > 10 else ""))
    if all(name.isdigit() for name in classes) and labels is None:
        out_labels = [int(lab) for _, lab in pairs]
    if limit:
        pairs, out_labels = pairs[:limit], out_labels[:limit]
    return LabelledSet([p for p, _ in pairs], np.asarray(out_labels, dtype=np.int64), classes)


def load_images(paths: list[Path], input_size: int, progress: bool) -> np.ndarray:
    iterator = paths
    if progress:
        from tqdm import tqdm

        iterator = tqdm(paths, desc="images", unit="img", leave=False)
    arrays = []
    for p in iterator:
        try:
            arrays.append(load_image(p, input_size))
        except Exception as exc:  # noqa: BLE001 - any decode failure is the same user error
            raise CalibrationError(f"cannot read image {p}: {str(exc).splitlines()[0] if str(exc) else type(exc).__name__}") from None
    return np.stack(arrays)


def artifact_input_size(target: str) -> int | None:
    """Input size an artifact was exported for (None for a PyTorch target)."""
    path = Path(target)
    if path.suffix == ".onnx":
        import onnx

        dims = onnx.load(str(path), load_external_data=False).graph.input[0].type.tensor_type.shape.dim
        return int(dims[2].dim_value)
    if path.suffix == ".tflite":
        from micronet_export.tflite_export import litert_interpreter

        return int(litert_interpreter(path, xnnpack=False).get_input_details()[0]["shape"][1])
    return None


def predict(target: str, images: np.ndarray, *, variant: str, checkpoint: str | None, threads: int = 1) -> np.ndarray:
    from micronet_export.runtimes import run_onnx, run_tflite, run_torch

    path = Path(target)
    if path.suffix == ".onnx":
        return run_onnx(str(path), images, threads)
    if path.suffix == ".tflite":
        return run_tflite(path, images, threads)
    from micronet_export.model import create_model

    if path.suffix in (".pth", ".pt"):
        return run_torch(create_model(variant, checkpoint=path, num_classes=None), images)
    return run_torch(create_model(target, checkpoint=checkpoint, num_classes=None), images)


def topk_correct(logits: np.ndarray, labels: np.ndarray, k: int) -> np.ndarray:
    top = np.argsort(-logits, axis=1)[:, :k]
    return (top == labels[:, None]).any(axis=1)


def evaluate(
    targets: list[str],
    data: str | Path,
    *,
    labels: str | Path | None = None,
    limit: int | None = None,
    input_size: int | None = None,
    variant: str = "m0",
    checkpoint: str | None = None,
    threads: int = 1,
    progress: bool = False,
) -> dict:
    if not targets:
        raise UserError("nothing to evaluate: give a variant, a checkpoint, an .onnx or a .tflite")
    for t in targets:
        if Path(t).suffix in (".onnx", ".tflite", ".pth", ".pt") and not Path(t).is_file():
            raise UserError(f"{t} does not exist")
    sizes = {t: artifact_input_size(t) for t in targets}
    known = {s for s in sizes.values() if s}
    size = input_size or (known.pop() if len(known) == 1 else None) or 224
    for t, s in sizes.items():
        if s and s != size:
            raise UserError(f"{Path(t).name} takes {s}x{s} input, but this evaluation runs at {size}x{size}"
                            " (--input-size, or the other artifacts); evaluate artifacts of one size together")
    dataset = load_labelled(data, labels, limit)
    images = load_images(dataset.paths, size, progress)
    rows, first = [], None
    for t in targets:
        logits = predict(t, images, variant=variant, checkpoint=checkpoint, threads=threads)
        if logits.shape[1] <= int(dataset.labels.max()):
            raise UserError(f"{t} has {logits.shape[1]} classes but the data has label {int(dataset.labels.max())}")
        pred = logits.argmax(1)
        row = {"target": t, "images": int(len(images)),
               "top1": float(np.mean(pred == dataset.labels)),
               "top5": float(np.mean(topk_correct(logits, dataset.labels, min(5, logits.shape[1]))))}
        if first is None:
            first = pred
        row["agreement_with_first"] = float(np.mean(pred == first))
        rows.append(row)
    return {"data": str(data), "input_size": size, "classes": len(dataset.classes), "results": rows}
