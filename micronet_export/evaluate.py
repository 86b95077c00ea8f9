"""Top-1 / top-5 of PyTorch checkpoints, ONNX and TFLite artifacts on a labelled folder.

Labelled data: ImageFolder (``DIR/<class>/<image>``) or a CSV of ``file,label`` (``--labels
x.csv``, paths relative to DIR). Labels map to class indices by the rules of
:mod:`micronet_export.class_names`, against the class names the targets carry (artifact metadata,
checkpoint card, ImageNet-1k for 1000 classes) or a names file (``--labels names.txt``). The
input size is the artifacts', else the checkpoint card's, else 224. Every target sees the same
images through the one preprocessing function.
"""

from __future__ import annotations

import csv
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from micronet_export.class_names import ClassNames, LabelMapping, from_file, map_labels
from micronet_export.errors import CalibrationError, UserError
from micronet_export.evaluate_targets import Target, resolve_target
from micronet_export.images import IMAGE_SUFFIXES, load_image
from micronet_export.onnx_export import check_input_size

DEFAULT_INPUT_SIZE = 224


@dataclass
class LabelledSet:
    paths: list[Path]
    labels: np.ndarray  # class index per image
    classes: int  # distinct labels in the data
    rule: str  # which rule mapped the labels to class indices


@dataclass
class _RawLabels:
    paths: list[Path]
    labels: list[str]
    kind: str  # "folder" or "CSV label"


def _read_csv(data: Path, labels: Path) -> _RawLabels:
    paths, values = [], []
    with labels.open(newline="") as f:
        for row in csv.reader(f):
            if not row or row[0].strip().lower() in ("file", "path", "filename"):
                continue
            if len(row) < 2:
                raise UserError(f"{labels}: row {row!r} is not 'file,label'")
            paths.append(data / row[0].strip())
            values.append(row[1].strip())
    return _RawLabels(paths, values, "CSV label")


def _read_folders(data: Path) -> _RawLabels:
    paths, values = [], []
    for folder in sorted(p for p in data.iterdir() if p.is_dir()):
        for f in sorted(folder.rglob("*")):
            if f.is_file() and f.suffix.lower() in IMAGE_SUFFIXES:
                paths.append(f)
                values.append(folder.name)
    return _RawLabels(paths, values, "folder")


def load_labelled(data: str | Path, labels: str | Path | None = None, limit: int | None = None,
                  class_names: ClassNames | None = None) -> LabelledSet:
    """Images and class indices; ``class_names`` are the models' (a names file overrides them)."""
    data = Path(data)
    if not data.is_dir():
        raise CalibrationError(f"data folder {data} does not exist or is not a folder")
    labels = Path(labels) if labels else None
    if labels is not None and not labels.is_file():
        raise UserError(f"labels file {labels} does not exist")
    is_csv = labels is not None and labels.suffix.lower() == ".csv"
    raw = _read_csv(data, labels) if is_csv else _read_folders(data)
    if not raw.paths:
        raise CalibrationError(f"no labelled images in {data} (expected {data}/<class>/<image> or --labels file.csv)")
    if labels is not None and not is_csv:
        class_names = from_file(labels)
    mapping: LabelMapping = map_labels(raw.labels, class_names, raw.kind)
    paths, indices = raw.paths, mapping.indices
    if limit:
        paths, indices = paths[:limit], indices[:limit]
    return LabelledSet(paths, indices, len(set(raw.labels)), mapping.rule)


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


def choose_input_size(targets: list[Target], requested: int | None) -> tuple[int, str]:
    """The one input size of this evaluation and where it comes from. An artifact's size is fixed;
    a checkpoint's card size is what it was trained at."""
    if requested is not None:
        check_input_size(requested)
    fixed = {t.spec: t.input_size for t in targets if t.size_is_fixed}
    trained = {t.spec: t.input_size for t in targets if not t.size_is_fixed and t.input_size}
    if requested is not None:
        size, source = requested, "--input-size"
    elif len(set(fixed.values())) > 1:
        by_size = sorted(fixed.items(), key=lambda item: item[1])
        (a, size_a), (b, size_b) = by_size[0], by_size[-1]
        raise UserError(f"{Path(a).name} takes {size_a}x{size_a} input and {Path(b).name} {size_b}x{size_b}; "
                        "evaluate artifacts of one size together")
    elif fixed:
        size, source = next(iter(fixed.values())), "the artifacts' input"
    elif len(set(trained.values())) > 1:
        raise UserError("the checkpoints' cards give different input sizes; pass --input-size")
    elif trained:
        size, source = next(iter(trained.values())), "the checkpoint card"
    else:
        size, source = DEFAULT_INPUT_SIZE, "default; no artifact or card gives one"
    for spec, s in fixed.items():
        if s != size:
            raise UserError(f"{Path(spec).name} takes {s}x{s} input, but this evaluation runs at {size}x{size}"
                            f" ({source}); evaluate artifacts of one size together")
    for spec, s in trained.items():
        if s != size and source != "--input-size":
            raise UserError(f"{Path(spec).name} was trained at {s}x{s} (its card), the artifacts take {size}x{size}; "
                            "pass --input-size to choose, or evaluate them separately")
    return size, source


def choose_class_names(targets: list[Target]) -> ClassNames | None:
    named = [t for t in targets if t.class_names is not None]
    for t in named[1:]:
        if t.class_names.names != named[0].class_names.names:
            raise UserError(f"{t.spec} and {named[0].spec} carry different class names "
                            f"({', '.join(t.class_names.names[:3])}, … vs {', '.join(named[0].class_names.names[:3])}, …); "
                            "evaluate them separately")
    return named[0].class_names if named else None


def ranked(logits: np.ndarray) -> np.ndarray:
    """Class indices by descending logit, equal logits in ascending class index: one rule for
    the outputs of every runtime (a stable sort; argsort's default is not, and an int8 model's
    coarse logits tie often)."""
    return np.argsort(-np.asarray(logits), axis=1, kind="stable")


def topk_correct(logits: np.ndarray, labels: np.ndarray, k: int) -> np.ndarray:
    return (ranked(logits)[:, :k] == labels[:, None]).any(axis=1)


@dataclass
class TopTies:
    """Images whose largest logit is shared by several classes (top-1 decided by the rule of
    :func:`ranked`), and those of them with the true label among the tied classes (whose
    top-1 score the rule decides)."""

    images: int
    label_tied: int

    @classmethod
    def of(cls, logits: np.ndarray, labels: np.ndarray) -> "TopTies":
        top = logits.max(axis=1, keepdims=True)
        tied = (logits == top).sum(axis=1) > 1
        label_at_top = logits[np.arange(len(labels)), labels] == top[:, 0]
        return cls(int(tied.sum()), int((tied & label_at_top).sum()))


def _score(target: Target, images: np.ndarray, labels: np.ndarray, threads: int) -> dict:
    logits = target.predict(images, threads)
    if logits.shape[1] <= int(labels.max()):
        raise UserError(f"{target.spec} has {logits.shape[1]} classes but the data has label {int(labels.max())}")
    order = ranked(logits)
    ties = TopTies.of(logits, labels)
    return {"target": target.spec, "images": int(len(images)), "prediction": order[:, 0],
            "top1": float(np.mean(order[:, 0] == labels)),
            "top5": float(np.mean(topk_correct(logits, labels, min(5, logits.shape[1])))),
            "top1_ties": ties.images, "top1_ties_label_tied": ties.label_tied}


def evaluate(
    targets: list[str],
    data: str | Path,
    *,
    labels: str | Path | None = None,
    limit: int | None = None,
    input_size: int | None = None,
    variant: str | None = None,
    checkpoint: str | None = None,
    random_init: bool = False,
    threads: int = 1,
    progress: bool = False,
) -> dict:
    if not targets:
        raise UserError("nothing to evaluate: give a variant, a checkpoint, an .onnx or a .tflite")
    if limit is not None and limit < 1:
        raise UserError(f"--limit must be a positive number of images, got {limit}")
    resolved = [resolve_target(t, variant=variant, checkpoint=checkpoint, random_init=random_init) for t in targets]
    size, size_source = choose_input_size(resolved, input_size)
    dataset = load_labelled(data, labels, limit, choose_class_names(resolved))
    images = load_images(dataset.paths, size, progress)
    rows = [_score(t, images, dataset.labels, threads) for t in resolved]
    first = rows[0]["prediction"]
    for row in rows:
        row["agreement_with_first"] = float(np.mean(row.pop("prediction") == first))
    variant_weights = {t.spec: t.weights for t in resolved if t.named_by_variant}
    return {"data": str(data), "input_size": size, "input_size_source": size_source, "label_rule": dataset.rule,
            "variant_weights": variant_weights, "classes": dataset.classes, "results": rows}
