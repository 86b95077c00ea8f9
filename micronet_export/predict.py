"""``micronet-export predict``: the top-K classes of a few images, as an app would show them.

The model is a .tflite (LiteRT), an .onnx (ONNX Runtime) or a checkpoint (.pth / .pt, or a
shipped one by name) run in PyTorch. Every image goes through :func:`images.preprocess` at the
model's input size: an artifact's is fixed by its graph, a checkpoint's comes from its card
(else 224). Scores are the softmax of the logits; classes are ranked by the rule evaluate uses
(descending logit, ties by ascending class index), so both commands agree on top-1.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from micronet_export.errors import UserError
from micronet_export.evaluate import ranked
from micronet_export.evaluate_targets import ARTIFACT_SUFFIXES, CHECKPOINT_SUFFIXES, Target, resolve_target
from micronet_export.images import IMAGE_SUFFIXES, read_image
from micronet_export.model.variants import VARIANTS
from micronet_export.options import NAMED_CHECKPOINTS, resolve_checkpoint

DEFAULT_TOP = 5
DEFAULT_INPUT_SIZE = 224
RUNTIMES = {"tflite": "LiteRT", "onnx": "ONNX Runtime", "pytorch": "PyTorch"}


@dataclass(frozen=True)
class ClassScore:
    index: int
    name: str  # the model's class name, else the index as text
    score: float  # softmax probability


@dataclass(frozen=True)
class Prediction:
    image: str
    top: list[ClassScore]  # best first


@dataclass(frozen=True)
class PredictResult:
    model: str  # as the user gave it
    runtime: str  # LiteRT | ONNX Runtime | PyTorch
    weights: str  # the file the weights come from
    input_size: int
    input_size_source: str
    class_names_source: str
    predictions: list[Prediction]

    def as_dict(self) -> dict:
        return asdict(self)


def softmax(logits: np.ndarray) -> np.ndarray:
    """Row-wise softmax in float64 (the largest logit subtracted first: no overflow)."""
    z = np.asarray(logits, dtype=np.float64)
    z = np.exp(z - z.max(axis=1, keepdims=True))
    return z / z.sum(axis=1, keepdims=True)


def resolve_model(spec: str, variant: str | None = None) -> Target:
    """The artifact or checkpoint ``spec`` names, loaded once (a damaged file fails here)."""
    path = Path(resolve_checkpoint(spec))
    suffix = path.suffix.lower()
    shipped = ", ".join(NAMED_CHECKPOINTS)
    if suffix not in ARTIFACT_SUFFIXES + CHECKPOINT_SUFFIXES and spec.lower() not in VARIANTS:
        raise UserError(f"{spec}: predict runs a .tflite, an .onnx, a .pth / .pt checkpoint or a shipped checkpoint "
                        f"({shipped}); give one of those")
    if suffix and not path.is_file():
        raise UserError(f"{spec} does not exist: give the path of a .tflite / .onnx / .pth file, or a shipped "
                        f"checkpoint ({shipped})")
    if variant is not None and suffix in ARTIFACT_SUFFIXES:
        raise UserError(f"--variant applies to checkpoints; {path.name} fixes its own variant: drop --variant")
    return resolve_target(str(path), variant=variant)


def check_images(images: list[str | Path]) -> list[Path]:
    """Every image exists and has an image suffix, before a model is loaded."""
    if not images:
        raise UserError("give at least one image to predict on")
    paths = [Path(i) for i in images]
    for path in paths:
        if path.is_dir():
            raise UserError(f"image {path} is a folder: give image files (e.g. {path}/*.jpg)")
        if not path.is_file():
            raise UserError(f"image {path} does not exist: check the path")
        if path.suffix.lower() not in IMAGE_SUFFIXES:
            raise UserError(f"image {path}: unsupported suffix {path.suffix or '(none)'}; "
                            f"give a {', '.join(IMAGE_SUFFIXES)} file")
    return paths


def load_inputs(paths: list[Path], input_size: int) -> np.ndarray:
    arrays = []
    for path in paths:
        try:
            arrays.append(read_image(path, input_size).array)
        except Exception as exc:  # noqa: BLE001 - any decode failure is the same user error
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise UserError(f"cannot read image {path}: {first[:160]} (is it a valid image file?)") from None
    return np.stack(arrays).astype(np.float32)


def top_scores(logits: np.ndarray, names: tuple[str, ...] | None, k: int) -> list[list[ClassScore]]:
    """The ``k`` best classes of every row of ``logits``, best first."""
    probs = softmax(logits)
    order = ranked(logits)[:, :k]
    return [[ClassScore(int(c), names[c] if names else str(int(c)), float(p[c])) for c in row]
            for row, p in zip(order, probs)]


def predict(model: str | Path, images: list[str | Path], *, top: int = DEFAULT_TOP, variant: str | None = None,
            threads: int = 1) -> PredictResult:
    """Top-``top`` classes of each image under ``model`` (.tflite, .onnx, .pth / .pt, shipped name)."""
    if top < 1:
        raise UserError(f"--top takes a positive number of classes, got {top}")
    paths = check_images(images)
    target = resolve_model(str(model), variant)
    if target.input_size:
        size = target.input_size
        source = "the artifact's input" if target.size_is_fixed else "the checkpoint card"
    else:
        size, source = DEFAULT_INPUT_SIZE, "default; the checkpoint has no card"
    logits = target.predict(load_inputs(paths, size), threads)
    names = target.class_names.names if target.class_names else None
    if names is not None and len(names) != logits.shape[1]:
        names = None  # names of another head: indices are honest, the names would not be
    tops = top_scores(logits, names, min(top, logits.shape[1]))
    return PredictResult(model=str(model), runtime=RUNTIMES[target.kind], weights=target.weights, input_size=size,
                         input_size_source=source,
                         class_names_source=target.class_names.source if names else "none: class indices",
                         predictions=[Prediction(str(p), t) for p, t in zip(paths, tops)])


def format_predictions(result: PredictResult) -> str:
    """Per image: its path, then one ``rank. name score`` line per class."""
    width = max((len(s.name) for p in result.predictions for s in p.top), default=0)
    lines = []
    for p in result.predictions:
        lines.append(p.image)
        lines += [f"  {rank}. {s.name:<{width}}  {s.score:.4f}" for rank, s in enumerate(p.top, 1)]
    return "\n".join(lines)
