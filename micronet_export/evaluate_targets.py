"""What ``evaluate`` runs: a variant, a .pth checkpoint, an .onnx or a .tflite, each resolved
once to its weights, input size and class names, with a one-line error for a file that cannot
be read (a truncated model, a text file as checkpoint) before any image is loaded."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from micronet_export.class_names import ClassNames, from_metadata, imagenet_names
from micronet_export.errors import CheckpointError, UserError
from micronet_export.model import create_model, get_variant, variants_fitting
from micronet_export.model.checkpoint import read_state_dict
from micronet_export.model.variants import VARIANTS

CHECKPOINT_SUFFIXES = (".pth", ".pt")
ARTIFACT_SUFFIXES = (".onnx", ".tflite")
# PyTorch runs this many images at a time (all 10,000 Fashion-MNIST test images at once would
# hold every activation of the batch in memory).
TORCH_BATCH = 256


@dataclass
class Target:
    spec: str  # as the user wrote it
    kind: str  # "onnx" | "tflite" | "pytorch"
    input_size: int | None
    size_is_fixed: bool  # an artifact's graph size (fixed) or the size a checkpoint was trained at
    class_names: ClassNames | None
    weights: str  # the file the weights come from, or "random initialisation"
    variant: str | None = None  # PyTorch targets
    model: object | None = None  # PyTorch targets: the MicroNet, weights loaded (a misfit fails early)
    named_by_variant: bool = False  # the user wrote "m0", not a file

    def predict(self, images: np.ndarray, threads: int = 1) -> np.ndarray:
        from micronet_export.runtimes import run_onnx, run_tflite, run_torch

        if self.kind == "onnx":
            return run_onnx(self.spec, images, threads)
        if self.kind == "tflite":
            return run_tflite(self.spec, images, threads)
        batches = range(0, len(images), TORCH_BATCH)
        return np.concatenate([run_torch(self.model, images[i:i + TORCH_BATCH]) for i in batches])


def _unreadable(spec: str, what: str, exc: Exception) -> UserError:
    first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    return UserError(f"{spec} is not a readable {what} model (truncated or not written by an exporter?): {first[:160]}")


def _onnx_target(spec: str) -> Target:
    import onnx

    from micronet_export.runtimes import onnx_session

    try:
        proto = onnx.load(spec, load_external_data=False)
        size = int(proto.graph.input[0].type.tensor_type.shape.dim[2].dim_value)
        onnx_session(proto.SerializeToString())  # what ONNX Runtime makes of it, before any image is read
    except Exception as exc:  # noqa: BLE001 - protobuf / ORT errors of a damaged file alike
        raise _unreadable(spec, "ONNX", exc) from None
    meta = {p.key: p.value for p in proto.metadata_props}
    names = from_metadata(meta.get("micronet.labels"), f"the metadata of {Path(spec).name}")
    return Target(spec, "onnx", size, True, names, weights=spec)


def _tflite_target(spec: str) -> Target:
    from micronet_export.metadata import read_metadata
    from micronet_export.tflite_inspect import litert_interpreter

    try:
        size = int(litert_interpreter(spec, xnnpack=False).get_input_details()[0]["shape"][1])
    except Exception as exc:  # noqa: BLE001 - the interpreter's errors of a damaged file alike
        raise _unreadable(spec, "TFLite", exc) from None
    meta = read_metadata(spec)
    names = from_metadata(meta.get("micronet.labels"), f"the metadata of {Path(spec).name}")
    return Target(spec, "tflite", size, True, names, weights=spec)


def _card_names(card: dict, card_path: Path, num_classes: int) -> ClassNames | None:
    classes = card.get("classes")
    if isinstance(classes, list) and len(classes) == num_classes:
        return ClassNames(tuple(map(str, classes)), f"the checkpoint card {card_path}")
    return imagenet_names() if num_classes == 1000 else None


def _checkpoint_target(spec: str, path: Path, variant: str | None) -> Target:
    from micronet_export.export import checkpoint_card

    state_dict = read_state_dict(path)
    card = checkpoint_card(path)
    if variant is None:
        variant = card.get("variant")
    if variant is None:
        fits = variants_fitting(state_dict)
        if not fits:
            raise CheckpointError(f"{path} fits no MicroNet variant ({', '.join(VARIANTS)}): is it a MicroNet "
                                  "checkpoint? pass --variant to see which keys differ")
        variant = fits[0]
    model = create_model(variant, checkpoint=path, num_classes=None)  # weights of another variant fail here
    size = card.get("input_size")
    return Target(spec, "pytorch", int(size) if size else None, False,
                  _card_names(card, path.with_suffix(".json"), model.num_classes), weights=str(path),
                  variant=model.variant, model=model)


def _variant_target(spec: str, checkpoint: str | None, random_init: bool) -> Target:
    from micronet_export.export import default_checkpoint, resolve_checkpoint

    checkpoint = resolve_checkpoint(checkpoint)
    variant = get_variant(spec).name
    if checkpoint and random_init:
        raise UserError("--checkpoint and --random-init exclude each other")
    if random_init:
        return Target(spec, "pytorch", None, False, imagenet_names(), weights="random initialisation (--random-init)",
                      variant=variant, model=create_model(variant), named_by_variant=True)
    path = Path(checkpoint) if checkpoint else default_checkpoint(variant)
    if path is None:
        raise UserError(f"{variant} has no shipped trained weights: pass --checkpoint PATH, or --random-init "
                        "to score random weights")
    target = _checkpoint_target(spec, path, variant)
    target.named_by_variant = True
    if not checkpoint:
        target.weights = f"{path} (the shipped default)"
    return target


def resolve_target(spec: str, *, variant: str | None = None, checkpoint: str | None = None,
                   random_init: bool = False) -> Target:
    path = Path(spec)
    suffix = path.suffix.lower()
    if suffix in ARTIFACT_SUFFIXES + CHECKPOINT_SUFFIXES and not path.is_file():
        raise UserError(f"{spec} does not exist")
    if suffix == ".onnx":
        return _onnx_target(spec)
    if suffix == ".tflite":
        return _tflite_target(spec)
    if suffix in CHECKPOINT_SUFFIXES:
        return _checkpoint_target(spec, path, variant)
    if suffix or path.exists():
        raise UserError(f"{spec} is neither a variant ({', '.join(VARIANTS)}) nor a .pth / .pt, .onnx or .tflite file")
    return _variant_target(spec, checkpoint, random_init)
