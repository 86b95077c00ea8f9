"""Pick the cheapest int8 plan that keeps the logits close to float, for either runtime.

A plan says how activation ranges are chosen and which units (PyTorch modules) stay float.
Candidates, cheapest first, each built with the real runtime and scored on validation images
(calibration photos not used to calibrate) against the float model's logits:

1. ``minmax`` ranges, nothing float: exactly the model the tool always made. A checkpoint
   that meets the target gets this one.
2. ``relmse`` ranges (see :mod:`ranges`): same ops, same speed.
3. Float islands: each unit's own int8 damage is measured with only that unit in int8; units
   are ranked by damage per unit of cost, and the shortest prefix of that ranking that meets
   the target is found by bisection. A pruning pass then puts back into int8 the units the
   target does not need. This is the layer-wise accuracy-control loop of NNCF's
   ``quantize_with_accuracy_control`` and TF's selective quantization, bounded in trials.

If nothing meets the target, the plan that came closest is returned with ``met=False`` and
the export's parity gate fails, as it should.
"""

from __future__ import annotations

import logging
import time
from dataclasses import asdict, dataclass, field
from typing import Protocol

import numpy as np

from micronet_export.int8.units import check_keep_float, matches
from micronet_export.parity import cosine, top1_agreement

log = logging.getLogger(__name__)

FALLBACKS = ("auto", "none")
# The search aims this much inside the cosine target (1 - cosine at most this fraction of the
# allowed 1 - target): the validation set is a few dozen photos and the parity gate judges
# other ones.
COSINE_MARGIN = 0.75
# And no validation image may be broken: a plan that clips a few images' activations to
# death can pass on the mean and then fail on other photos. Each image's 1 - cosine may be at
# most this multiple of the allowed mean.
WORST_IMAGE_FACTOR = 5.0
MAX_PRUNE_TRIALS = 12


@dataclass(frozen=True)
class Int8Plan:
    """How to quantize: activation range method and the units kept in float."""

    ranges: str = "minmax"
    float_units: tuple[str, ...] = ()

    def describe(self) -> str:
        islands = f", {len(self.float_units)} float unit(s)" if self.float_units else ""
        return f"{self.ranges} ranges{islands}"


@dataclass(frozen=True)
class Int8Target:
    cosine: float = 0.98
    top1: float = 0.90

    def met_by(self, cos_mean: float, cos_min: float, top1: float) -> bool:
        allowed = 1.0 - self.cosine
        return (1.0 - cos_mean <= COSINE_MARGIN * allowed and 1.0 - cos_min <= WORST_IMAGE_FACTOR * allowed
                and top1 >= self.top1)


@dataclass(frozen=True)
class Int8Options:
    target: Int8Target = Int8Target()
    fallback: str = "auto"  # "none": the plain min/max model, whatever its accuracy
    keep_float: tuple[str, ...] = ()  # units (or module prefixes) the user keeps in float


@dataclass
class Trial:
    stage: str
    plan: Int8Plan
    cosine_mean: float
    cosine_min: float
    top1_agreement: float
    met: bool
    seconds: float

    def as_dict(self) -> dict:
        d = asdict(self)
        d["plan"] = {"ranges": self.plan.ranges, "float_units": list(self.plan.float_units)}
        return d


@dataclass
class UnitSensitivity:
    """One unit's own int8 damage: logit cosine with only this unit in int8."""

    unit: str
    cost_share: float
    cosine_only_int8: float
    top1_only_int8: float


@dataclass
class SearchResult:
    plan: Int8Plan
    met: bool
    artifact: object
    trials: list[Trial] = field(default_factory=list)
    sensitivity: list[UnitSensitivity] = field(default_factory=list)

    def as_dict(self) -> dict:
        return {"plan": {"ranges": self.plan.ranges, "float_units": list(self.plan.float_units)},
                "met": self.met, "trials": [t.as_dict() for t in self.trials],
                "sensitivity": [asdict(s) for s in self.sensitivity]}


class Int8Backend(Protocol):
    """What the search needs from a runtime (see tflite_backend / ort_backend)."""

    def units(self) -> list[str]: ...  # modules whose int8-or-float choice changes the model

    def known_units(self) -> list[str]: ...  # every module --keep-float may name

    def unit_cost(self, unit: str) -> float: ...

    def build(self, plan: Int8Plan) -> object: ...

    def logits(self, artifact: object, images: np.ndarray) -> np.ndarray: ...


class _Scorer:
    def __init__(self, backend: Int8Backend, images: np.ndarray, reference: np.ndarray, target: Int8Target):
        self.backend, self.images, self.reference, self.target = backend, images, reference, target
        self.trials: list[Trial] = []
        self.built: dict[Int8Plan, object] = {}

    def __call__(self, stage: str, plan: Int8Plan, record: bool = True) -> Trial:
        start = time.perf_counter()
        artifact = self.backend.build(plan)
        got = self.backend.logits(artifact, self.images)
        cos = cosine(got, self.reference)
        top1 = top1_agreement(got, self.reference)
        trial = Trial(stage, plan, float(cos.mean()), float(cos.min()), top1,
                      self.target.met_by(float(cos.mean()), float(cos.min()), top1), time.perf_counter() - start)
        if record:
            self.trials.append(trial)
            self.built[plan] = artifact
            log.info("int8 %s: %s -> cosine %.4f, top-1 %.3f", stage, plan.describe(), trial.cosine_mean, top1)
        return trial

    def result(self, trial: Trial) -> SearchResult:
        return SearchResult(trial.plan, trial.met, self.built[trial.plan], self.trials)


def _closest(trials: list[Trial]) -> Trial:
    return max(trials, key=lambda t: (t.met, t.cosine_mean, t.top1_agreement))


def search(backend: Int8Backend, images: np.ndarray, reference: np.ndarray, options: Int8Options) -> SearchResult:
    """The cheapest plan meeting ``options.target`` on ``images`` (float logits ``reference``)."""
    score = _Scorer(backend, images, reference, options.target)
    all_units = backend.units()
    known = backend.known_units()
    check_keep_float(options.keep_float, known)
    forced = tuple(u for u in known if matches(u, options.keep_float))
    first = score("baseline", Int8Plan("minmax", forced))
    if first.met or options.fallback == "none":
        return score.result(first)
    ranged = score("ranges", Int8Plan("relmse", forced))
    if ranged.met:
        return score.result(ranged)
    candidates = [u for u in all_units if u not in forced]
    sensitivity = _sensitivity(score, all_units, candidates)
    ranking = [s.unit for s in sorted(sensitivity, key=lambda s: -(1.0 - s.cosine_only_int8) / max(s.cost_share, 1e-6))]
    best = _shortest_prefix(score, forced, ranking)
    if best.met:
        best = _prune(score, best, forced, backend)
    result = score.result(best if best.met else _closest(score.trials))
    result.sensitivity = sensitivity
    return result


def _sensitivity(score: _Scorer, all_units: list[str], candidates: list[str]) -> list[UnitSensitivity]:
    total = sum(score.backend.unit_cost(u) for u in candidates) or 1.0
    out = []
    for unit in candidates:
        others = tuple(u for u in all_units if u != unit)
        trial = score("sensitivity", Int8Plan("relmse", others), record=False)
        out.append(UnitSensitivity(unit, score.backend.unit_cost(unit) / total, trial.cosine_mean, trial.top1_agreement))
    return out


def _shortest_prefix(score: _Scorer, forced: tuple[str, ...], ranking: list[str]) -> Trial:
    """Bisection on k: the first k units of ``ranking`` in float (plus ``forced``), k below
    len(ranking): an int8 artifact keeps at least one layer in int8 (with every layer float it
    would be the float model under an int8 name, meeting any target)."""
    plan = lambda k: Int8Plan("relmse", forced + tuple(ranking[:k]))
    top = len(ranking) - 1
    high = score("float islands", plan(max(top, 0)))
    if not high.met:
        return high
    lo, hi, best = 0, top, high
    while hi - lo > 1:
        mid = (lo + hi) // 2
        trial = score("float islands", plan(mid))
        if trial.met:
            hi, best = mid, trial
        else:
            lo = mid
    return best


def _prune(score: _Scorer, best: Trial, forced: tuple[str, ...], backend: Int8Backend) -> Trial:
    """Try each float unit back in int8, most expensive first; keep what still meets."""
    removable = sorted((u for u in best.plan.float_units if u not in forced), key=backend.unit_cost, reverse=True)
    for unit in removable[:MAX_PRUNE_TRIALS]:
        plan = Int8Plan("relmse", tuple(u for u in best.plan.float_units if u != unit))
        trial = score("prune", plan)
        if trial.met:
            best = trial
    return best
