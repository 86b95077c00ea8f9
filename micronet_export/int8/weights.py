"""The weights the int8 artifacts are made from: the checkpoint's, or fine-tuned for int8.

With ``--int8-distill STEPS`` the TFLite int8 model is quantized from a copy of the network
fine-tuned by distillation from the fp32 network on the calibration
photos (:mod:`micronet_export.int8.distill`); the fp32 / fp16 artifacts, the parity reference
and every gate keep the original network. What was fine-tuned, from which weights, and how the
simulated int8 moved is recorded here for the report and the artifacts' metadata.
"""

from __future__ import annotations

import sys
from dataclasses import asdict, dataclass

import numpy as np

from micronet_export.int8.distill import Agreement, DistillOptions, distill
from micronet_export.int8.learned_ranges import LearnedRanges


@dataclass(frozen=True)
class Int8Weights:
    method: str  # "distillation"
    teacher_sha256: str | None  # the fp32 checkpoint the int8 weights were distilled from
    steps: int
    photos: int
    seconds: float
    simulated_before: Agreement  # simulated int8 vs fp32 on the held-out photos
    simulated_after: Agreement
    learned_ranges: int  # activation ranges learned with the weights (0: re-observed min/max)

    @property
    def summary(self) -> str:
        teacher = self.teacher_sha256[:16] + "…" if self.teacher_sha256 else "random initialisation"
        ranges = f", with {self.learned_ranges} learned activation ranges" if self.learned_ranges else ""
        return (f"fine-tuned for int8 by distillation from the fp32 network (checkpoint sha256 {teacher}): "
                f"{self.steps} steps on {self.photos} unlabelled calibration photos{ranges}; fp32 artifacts keep "
                "the original weights")

    def as_dict(self) -> dict:
        return {**asdict(self), "summary": self.summary}


def distilled_model(model, calibration: np.ndarray, holdout: np.ndarray, steps: int, *,
                    teacher_sha256: str | None, progress: bool = False):
    """(fine-tuned copy of ``model`` in eval mode, its :class:`Int8Weights` record, the learned
    activation ranges or None)."""
    from micronet_export.model import create_model

    def report_progress(step: int, total: int, loss: float) -> None:
        print(f"\rint8 distillation: step {step}/{total}, loss {loss:.3f}", end="" if step < total else "\n",
              file=sys.stderr, flush=True)

    check = holdout if len(holdout) else None
    result = distill(model, calibration, DistillOptions(steps=steps), check_photos=check,
                     progress=report_progress if progress else None)
    student = create_model(model.variant, num_classes=model.num_classes)
    student.load_state_dict(result.state_dict)
    record = Int8Weights("distillation", teacher_sha256, steps, len(calibration), result.seconds,
                         result.before, result.after, len(result.ranges))
    learned = LearnedRanges(result.ranges, result.signatures, calibration) if result.ranges else None
    return student.eval(), record, learned
