"""Quantization-aware fine-tuning by distillation from the fp32 model, on unlabelled photos.

The student is the fp32 network with its BatchNorms folded and int8 simulated where the
runtimes round (:mod:`fake_quant`); the teacher is the unchanged fp32 network. The loss is
the KL divergence of the student's class distribution from the teacher's on randomly cropped
and flipped calibration photos: no labels are needed, and what is learned is exactly "give the
fp32 answers through int8 arithmetic". Activation ranges are learned with the weights (from the
observed min/max; :mod:`learned_ranges` carries them into TFLite), or re-observed on the
calibration photos as the weights move, as a converter would set them.

The result is an official-format state_dict (folded convs, identity BatchNorms carrying the
folded bias), so every existing path loads and exports it unchanged; it is meant for int8
artifacts only (fp32 artifacts keep the original weights).
"""

from __future__ import annotations

import copy
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from micronet_export.int8.fake_quant import Int8Simulation, simulate_int8, trainable_parameters

# Crops cover this share of the photo's side at least (then resized back): enough variety that
# 100-200 photos do not get memorised, still whole objects.
MIN_CROP_SIDE = 0.55


@dataclass
class DistillOptions:
    steps: int = 300
    batch_size: int = 8
    learning_rate: float = 1e-4
    recalibrate_every: int = 25
    seed: int = 0
    # Learn each activation range too (from the observed min/max, straight-through rounding);
    # off: ranges re-observed every ``recalibrate_every`` steps, as a converter would set them.
    learn_ranges: bool = True
    range_learning_rate: float = 1e-2  # on log-factors of the range's ends


@dataclass
class Agreement:
    """Simulated int8 vs the fp32 teacher on some photos."""

    cosine: float
    top1: float
    kl: float  # mean KL divergence of the int8 class distribution from the fp32 one


@dataclass
class DistillResult:
    state_dict: dict[str, torch.Tensor]
    options: DistillOptions
    seconds: float
    before: Agreement
    after: Agreement
    losses: list[float] = field(default_factory=list)
    # With learned ranges: each rounding point's range, and its float (min, max, mean) on the
    # training photos with the tuned weights, which finds the same tensor in an exported graph.
    ranges: list[tuple[float, float]] = field(default_factory=list)
    signatures: list[tuple[float, float, float]] = field(default_factory=list)


@dataclass
class FoldedConv:
    """A conv whose following BatchNorm was folded into its weight and a new bias."""

    conv: str
    batchnorm: str
    eps: float


def fold_batchnorm(model: nn.Module) -> tuple[nn.Module, list[FoldedConv]]:
    """A copy of ``model`` (eval) with each Conv2d -> BatchNorm2d pair of a Sequential folded."""
    folded = copy.deepcopy(model).eval()
    pairs: list[FoldedConv] = []
    for name, module in folded.named_modules():
        if not isinstance(module, nn.Sequential):
            continue
        for index in range(len(module) - 1):
            conv, bn = module[index], module[index + 1]
            if not (isinstance(conv, nn.Conv2d) and isinstance(bn, nn.BatchNorm2d)):
                continue
            with torch.no_grad():
                scale = bn.weight / torch.sqrt(bn.running_var + bn.eps)
                bias = conv.bias if conv.bias is not None else torch.zeros_like(scale)
                conv.weight.copy_(conv.weight * scale[:, None, None, None])
                conv.bias = nn.Parameter((bias - bn.running_mean) * scale + bn.bias)
            module[index + 1] = nn.Identity()
            prefix = f"{name}." if name else ""
            pairs.append(FoldedConv(f"{prefix}{index}", f"{prefix}{index + 1}", float(bn.eps)))
    return folded, pairs


def official_state_dict(tuned: dict[str, torch.Tensor], original: dict[str, torch.Tensor],
                        folds: list[FoldedConv]) -> dict[str, torch.Tensor]:
    """``tuned`` (a folded model's parameters) in the official key layout of ``original``: each
    folded conv keeps its weight, and its BatchNorm becomes the identity plus the folded bias
    (running_var = 1 - eps makes the BatchNorm's scale exactly 1)."""
    out = {key: value.detach().clone() for key, value in original.items()}
    for key, value in tuned.items():
        if key in out and out[key].shape == value.shape:
            out[key] = value.detach().clone()
    for fold in folds:
        bias = tuned[f"{fold.conv}.bias"].detach().clone()
        out[f"{fold.batchnorm}.weight"] = torch.ones_like(bias)
        out[f"{fold.batchnorm}.bias"] = bias
        out[f"{fold.batchnorm}.running_mean"] = torch.zeros_like(bias)
        out[f"{fold.batchnorm}.running_var"] = torch.full_like(bias, 1.0 - fold.eps)
    return out


def augment(batch: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """A random square crop (side >= MIN_CROP_SIDE) of each photo, resized back, half flipped."""
    size = batch.shape[-1]
    out = torch.empty_like(batch)
    for i in range(len(batch)):
        side = int(size * (MIN_CROP_SIDE + (1 - MIN_CROP_SIDE) * torch.rand(1, generator=generator).item()))
        top, left = (int(torch.randint(0, size - side + 1, (1,), generator=generator)) for _ in range(2))
        crop = F.interpolate(batch[i:i + 1, :, top:top + side, left:left + side], size=(size, size),
                             mode="bilinear", align_corners=False)
        out[i] = crop[0].flip(-1) if torch.rand(1, generator=generator).item() < 0.5 else crop[0]
    return out


def agreement(student: torch.Tensor, teacher: torch.Tensor) -> Agreement:
    cosine = F.cosine_similarity(student, teacher, dim=1).mean().item()
    top1 = (student.argmax(1) == teacher.argmax(1)).float().mean().item()
    return Agreement(round(cosine, 4), round(top1, 4), round(_distillation_loss(student, teacher).item(), 5))


def _distillation_loss(student: torch.Tensor, teacher: torch.Tensor) -> torch.Tensor:
    return F.kl_div(F.log_softmax(student, 1), F.log_softmax(teacher, 1), log_target=True, reduction="batchmean")


def distill(model: nn.Module, photos: np.ndarray, options: DistillOptions | None = None, *,
            check_photos: np.ndarray | None = None,
            progress: Callable[[int, int, float], None] | None = None) -> DistillResult:
    """Fine-tune ``model`` (an official-format MicroNet, eval) for int8 on ``photos`` (NCHW
    float32, preprocessed). ``check_photos`` (default: ``photos``) measure the simulated int8
    agreement before and after; ``progress(step, steps, loss)`` is called every few steps."""
    options = options or DistillOptions()
    torch.manual_seed(options.seed)
    generator = torch.Generator().manual_seed(options.seed)
    start = time.perf_counter()
    teacher = copy.deepcopy(model).eval()
    student, folds = fold_batchnorm(model)
    train = torch.from_numpy(np.ascontiguousarray(photos, dtype=np.float32))
    check = train if check_photos is None else torch.from_numpy(np.ascontiguousarray(check_photos, dtype=np.float32))
    simulation = simulate_int8(student, train[:2])
    simulation.observe_ranges(train)
    with torch.no_grad():
        reference = torch.cat([teacher(check[s:s + 32]) for s in range(0, len(check), 32)])
    before = agreement(simulation.logits(check), reference)
    groups = [{"params": trainable_parameters(simulation), "lr": options.learning_rate}]
    if options.learn_ranges:
        groups.append({"params": [p for q in simulation.activations for p in q.learn_range()],
                       "lr": options.range_learning_rate})
    optimizer = torch.optim.Adam(groups)
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, max(options.steps, 1))
    losses = []
    for step in range(options.steps):
        if step and step % options.recalibrate_every == 0 and not options.learn_ranges:
            simulation.observe_ranges(train)
        batch = augment(train[torch.randint(0, len(train), (options.batch_size,), generator=generator)], generator)
        with torch.no_grad():
            target = teacher(batch)
        loss = _distillation_loss(simulation.module(batch), target)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        schedule.step()
        losses.append(round(loss.item(), 5))
        if progress is not None and (step + 1) % options.recalibrate_every == 0:
            progress(step + 1, options.steps, float(np.mean(losses[-options.recalibrate_every:])))
    ranges, signatures = [], []
    if options.learn_ranges:
        with torch.no_grad():
            ranges = [tuple(float(v) for v in q.range()) for q in simulation.activations]
        signatures = simulation.signatures(train)
    else:
        simulation.observe_ranges(train)
    after = agreement(simulation.logits(check), reference)
    tuned = {k: v for k, v in simulation.module.named_parameters() if "int8_" not in k}
    state = official_state_dict(tuned, model.state_dict(), folds)
    return DistillResult(state, options, round(time.perf_counter() - start, 1), before, after, losses, ranges, signatures)


def simulated_agreement(model: nn.Module, calibration: np.ndarray, photos: np.ndarray) -> Agreement:
    """Simulated int8 of ``model`` (ranges from ``calibration``) vs its own fp32 on ``photos``."""
    folded, _ = fold_batchnorm(model)
    calibration_t = torch.from_numpy(np.ascontiguousarray(calibration, dtype=np.float32))
    photos_t = torch.from_numpy(np.ascontiguousarray(photos, dtype=np.float32))
    simulation: Int8Simulation = simulate_int8(folded, calibration_t[:2])
    simulation.observe_ranges(calibration_t)
    with torch.no_grad():
        reference = model(photos_t)
    return agreement(simulation.logits(photos_t), reference)
