"""What every stage of an export run reads: its options, photos, PyTorch references, output
folder, report and stage timer (:class:`ExportRun`)."""

from __future__ import annotations

import logging
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from micronet_export.errors import CalibrationError
from micronet_export.images import DEFAULT_CALIBRATION_DIR, load_folder
from micronet_export.options import ExportOptions, checkpoint_card
from micronet_export.output import StagedOutput, artifact_names
from micronet_export.parity import Thresholds, conditioned
from micronet_export.report import Report
from micronet_export.runtimes import run_torch, run_torch_float64

if TYPE_CHECKING:
    from micronet_export.int8.learned_ranges import LearnedRanges
    from micronet_export.int8.weights import Int8Weights

log = logging.getLogger(__name__)

# One image in HOLDOUT_EVERY is kept out of calibration and used for int8 parity.
HOLDOUT_EVERY = 5
MIN_CALIBRATION_IMAGES = 10
FIXED_INPUT_SEED = 20211011
FIXED_INPUTS = 2


class StageTimer:
    def __init__(self) -> None:
        self.timings: dict[str, float] = {}

    @contextmanager
    def stage(self, name: str):
        log.info("%s ...", name)
        start = time.perf_counter()
        yield
        self.timings[name] = self.timings.get(name, 0.0) + time.perf_counter() - start


def split_calibration(arrays: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Deterministic split: every HOLDOUT_EVERY-th image (sorted by path) is held out."""
    idx = np.arange(len(arrays))
    hold = idx % HOLDOUT_EVERY == HOLDOUT_EVERY - 1
    return arrays[~hold], arrays[hold]


def fixed_inputs(input_size: int) -> np.ndarray:
    rng = np.random.default_rng(FIXED_INPUT_SEED)
    return rng.standard_normal((FIXED_INPUTS, 3, input_size, input_size)).astype(np.float32)


@dataclass
class ParityImages:
    """The photos of a run: int8 ranges come from ``calibration``, parity also runs on
    ``holdout`` (never calibrated on). Both are empty when a float run found no photos."""

    calibration: np.ndarray
    holdout: np.ndarray
    summary: dict  # the report's "calibration" entry

    @property
    def has_photos(self) -> bool:
        return len(self.holdout) > 0


@dataclass
class References:
    """The PyTorch logits every artifact is checked against, and the fp32 bounds they allow
    (see :func:`parity.conditioned`: never tighter than float32 itself gets on those inputs).
    Without photos the fixed inputs stand in for the held-out ones."""

    fixed: np.ndarray
    holdout: np.ndarray
    fixed_logits: np.ndarray
    holdout_logits: np.ndarray
    fp32_fixed: Thresholds
    fp32_holdout: Thresholds

    @classmethod
    def of(cls, model, fixed: np.ndarray, holdout: np.ndarray, fp32: Thresholds) -> "References":
        fixed_logits = run_torch(model, fixed)
        fp32_fixed = conditioned(fp32, fixed_logits, run_torch_float64(model, fixed))
        if not len(holdout):
            return cls(fixed, fixed, fixed_logits, fixed_logits, fp32_fixed, fp32_fixed)
        holdout_logits = run_torch(model, holdout)
        return cls(fixed, holdout, fixed_logits, holdout_logits, fp32_fixed,
                   conditioned(fp32, holdout_logits, run_torch_float64(model, holdout)))


NO_PHOTOS_NOTE = (f"no calibration photos: parity ran on the {FIXED_INPUTS} fixed random inputs only; "
                  "pass --calibration DIR to check on photos too")


def parity_images(opts: ExportOptions, explicit: bool) -> ParityImages:
    """The run's photos. A folder the user named must be usable; when the default one is not
    (e.g. an install without calibration/), int8 stops and a float export goes on without."""
    calib_dir = Path(opts.calibration) if opts.calibration else DEFAULT_CALIBRATION_DIR
    try:
        images = load_folder(calib_dir, input_size=opts.input_size, min_images=MIN_CALIBRATION_IMAGES,
                             progress=opts.progress)
    except CalibrationError as exc:
        if explicit:
            raise
        if opts.int8:
            raise CalibrationError(f"int8 needs calibration photos: {exc}; pass --calibration DIR (at least "
                                   f"{MIN_CALIBRATION_IMAGES} photos like the ones the model will see)") from None
        log.warning("warning: %s (%s)", NO_PHOTOS_NOTE, exc)
        empty = np.zeros((0, 3, opts.input_size, opts.input_size), np.float32)
        return ParityImages(empty, empty, {"dir": None, "images": 0, "holdout": 0, "note": NO_PHOTOS_NOTE})
    calib, holdout = split_calibration(images.arrays)
    summary = {"dir": str(calib_dir), "images": int(len(calib)), "holdout": int(len(holdout)),
               "skipped": len(images.skipped), "non_image_files": len(images.ignored), "method": opts.calibration_method,
               "skipped_files": [p.name for p, _ in images.skipped[:20]], "too_large": len(images.too_large),
               "too_large_files": [p.name for p, _ in images.too_large[:20]], "downscaled": len(images.downscaled)}
    return ParityImages(calib, holdout, summary)


def labels_for(checkpoint, num_classes: int) -> str:
    """Label source recorded in the artifacts: the checkpoint's card, else ImageNet-1k."""
    classes = checkpoint_card(checkpoint).get("classes")
    if classes and len(classes) == num_classes:
        import json

        return json.dumps(classes)
    if num_classes == 1000:
        return "imagenet-1k-classes.tsv (micronet_export/labels; standard ImageNet-1k index order)"
    return f"{num_classes} classes (no label file)"


def class_names_for(checkpoint, num_classes: int) -> tuple[str, ...] | None:
    """The class names the artifacts carry as labels (the card's, else ImageNet-1k's for a
    1000-class model); None when they are not known."""
    from micronet_export.class_names import IMAGENET_CLASSES, imagenet_names

    classes = checkpoint_card(checkpoint).get("classes")
    if classes and len(classes) == num_classes:
        return tuple(str(c) for c in classes)
    return imagenet_names().names if num_classes == IMAGENET_CLASSES else None


def weights_author(checkpoint) -> str:
    """Who made the weights, for the standard metadata's ``author``: the card's ``author``."""
    if not checkpoint:
        return "none: random initialisation (micronet-export)"
    return checkpoint_card(checkpoint).get("author") or f"not recorded (checkpoint {Path(checkpoint).name})"


@dataclass
class ExportRun:
    """One export run as its stages see it. Data flows one way: each stage reads this and the
    graph it is given, writes its artifact into ``out`` and returns its report entry."""

    opts: ExportOptions
    model: object  # the PyTorch model (export formulation)
    images: ParityImages
    refs: References
    out: StagedOutput
    report: Report
    timer: StageTimer = field(default_factory=StageTimer)
    # Set when the int8 artifacts are made from fine-tuned weights (--int8-distill).
    int8_weights: Int8Weights | None = None
    int8_ranges: LearnedRanges | None = None  # activation ranges learned with those weights

    @property
    def names(self) -> dict[str, str]:
        return artifact_names(self.opts.variant)

    def reference_of(self, images: np.ndarray) -> np.ndarray:
        """The float logits int8 must keep (PyTorch)."""
        return run_torch(self.model, images)

    def metadata(self, layout: str, precision: str, quantization: str) -> dict[str, str]:
        from micronet_export.metadata import artifact_metadata

        opts = self.opts
        meta = artifact_metadata(variant=opts.variant, input_size=opts.input_size, layout=layout, precision=precision,
                                 num_classes=self.model.num_classes, checkpoint_sha256=self.report.checkpoint["sha256"],
                                 quantization=quantization, labels=labels_for(opts.checkpoint, self.model.num_classes),
                                 weights_license=self.report.checkpoint.get("license_notice"),
                                 raw_pixels=opts.raw_pixels and layout == "NHWC")
        if precision == "int8" and self.int8_weights is not None:
            meta["micronet.int8_weights"] = self.int8_weights.summary
        return meta

    def standard_metadata(self, meta: dict[str, str]):
        """The standard TFLite metadata beside ``meta`` (the artifact's ``micronet.*`` entry)."""
        from micronet_export.metadata import standard_metadata

        return standard_metadata(meta, labels=class_names_for(self.opts.checkpoint, self.model.num_classes),
                                 author=weights_author(self.opts.checkpoint))
