"""A PyTorch simulation of full-integer int8 that gradients flow through.

The model is captured with ``torch.export`` (MicroNet's shifts and shuffles read shapes, which
``torch.fx`` symbolic tracing cannot follow) and a fake-quantizer is put where an int8 runtime
rounds: on every conv / linear weight (symmetric per output channel, levels -127..127, as both
runtimes quantize weights) and on the output of every op that computes on activations
(asymmetric per tensor, -128..127, range = min/max over the calibration photos, as the
converters' default calibration). A conv, linear or add directly followed by its activation is
rounded once, after the activation: the runtimes fuse the two (also across a channel shuffle
between them). Views, slices and
concatenations do not round (they move int8 values unchanged).

Convolutions must already have their BatchNorm folded in (:func:`distill.fold_batchnorm`):
the runtimes quantize the folded weights.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import torch
import torch.nn as nn

ACTIVATION_LEVELS = (-128, 127)
WEIGHT_LEVELS = 127
# Batch size when observing ranges or running the simulation over many photos.
CHUNK = 32


def _aten_sets():
    aten = torch.ops.aten
    weighted = {aten.conv2d.default, aten.linear.default}
    computing = weighted | {aten.add.Tensor, aten.mul.Tensor, aten.maximum.default, aten.relu.default,
                            aten.relu6.default, aten.hardtanh.default, aten.mean.dim,
                            aten.adaptive_avg_pool2d.default, aten.div.Tensor, aten.sub.Tensor}
    fused_activations = {aten.relu.default, aten.relu6.default, aten.hardtanh.default}
    moves = {aten.reshape.default, aten.view.default, aten.transpose.int, aten.permute.default,
             aten.clone.default, aten.unsqueeze.default, aten.squeeze.dim}
    return weighted, computing, fused_activations, moves


def _fuses_with_activation(node, fused_activations, moves) -> bool:
    """The node's only consumer is an activation, possibly behind channel moves: the
    exporters move a channel shuffle between a conv and its ReLU into the conv's weights or
    past the ReLU (elementwise, so it commutes), and the runtimes then fuse the two."""
    while len(node.users) == 1:
        (node,) = node.users
        if node.target in fused_activations:
            return True
        if node.target not in moves:
            return False
    return False


class ActivationQuantizer(nn.Module):
    """Per-tensor asymmetric int8 fake quantization with an observed min/max range, which
    :meth:`learn_range` makes trainable (each end scaled by a learned positive factor)."""

    def __init__(self) -> None:
        super().__init__()
        self.register_buffer("low", torch.tensor(0.0))
        self.register_buffer("high", torch.tensor(0.0))
        self.observing = False
        self.enabled = True
        self.log_low: nn.Parameter | None = None
        self.log_high: nn.Parameter | None = None

    def learn_range(self) -> list[nn.Parameter]:
        """Train the range from the observed one: log-factors, so each end keeps its sign."""
        self.log_low, self.log_high = nn.Parameter(torch.zeros(())), nn.Parameter(torch.zeros(()))
        return [self.log_low, self.log_high]

    def range(self) -> tuple[torch.Tensor, torch.Tensor]:
        """The range in use; it always holds zero (exact zero padding and ReLU zeros), as in
        both runtimes."""
        low, high = self.low, self.high
        if self.log_low is not None:
            low, high = low * torch.exp(self.log_low), high * torch.exp(self.log_high)
        return torch.clamp(low, max=0.0), torch.clamp(high, min=0.0)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.observing:
            self.low = torch.minimum(self.low, x.detach().min())
            self.high = torch.maximum(self.high, x.detach().max())
            return x
        if not self.enabled:
            return x
        low, high = self.range()
        qmin, qmax = ACTIVATION_LEVELS
        scale = torch.clamp((high - low) / (qmax - qmin), min=1e-12)
        if self.log_low is None:
            zero = torch.round(qmin - low / scale).clamp(qmin, qmax).to(torch.int32)
            return torch.fake_quantize_per_tensor_affine(x, scale, zero, qmin, qmax)
        # Straight-through rounding: gradients reach x inside the range and the range's ends.
        zero = qmin - low / scale
        zero = zero + (zero.round() - zero).detach()
        levels = torch.clamp(x / scale + zero, qmin, qmax)
        levels = levels + (levels.round() - levels).detach()
        return (levels - zero) * scale


class WeightQuantizer(nn.Module):
    """Per-output-channel symmetric int8 fake quantization of a weight (scale = max|w| / 127)."""

    def __init__(self) -> None:
        super().__init__()
        self.enabled = True

    def forward(self, weight: torch.Tensor) -> torch.Tensor:
        if not self.enabled:
            return weight
        scale = weight.detach().reshape(weight.shape[0], -1).abs().amax(dim=1).clamp(min=1e-30) / WEIGHT_LEVELS
        zero = torch.zeros(weight.shape[0], dtype=torch.int32)
        return torch.fake_quantize_per_channel_affine(weight, scale, zero, 0, -WEIGHT_LEVELS, WEIGHT_LEVELS)


@dataclass
class Int8Simulation:
    """The captured model with its quantizers; ``module`` trains like any nn.Module."""

    module: nn.Module
    activations: list[ActivationQuantizer]
    weights: list[WeightQuantizer]

    def set_enabled(self, *, activations: bool, weights: bool) -> None:
        for q in self.activations:
            q.enabled = activations
        for q in self.weights:
            q.enabled = weights

    def observe_ranges(self, images: torch.Tensor) -> None:
        """Reset every activation range to the min/max seen on ``images``."""
        for q in self.activations:
            q.observing = True
            q.low.fill_(0.0)
            q.high.fill_(0.0)
        try:
            with torch.no_grad():
                for start in range(0, len(images), CHUNK):
                    self.module(images[start:start + CHUNK])
        finally:
            for q in self.activations:
                q.observing = False

    def logits(self, images: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            return torch.cat([self.module(images[s:s + CHUNK]) for s in range(0, len(images), CHUNK)])

    def signatures(self, images: torch.Tensor) -> list[tuple[float, float, float]]:
        """(min, max, mean) of what reaches each activation quantizer in float (no rounding
        anywhere) over ``images``: what identifies the same tensor in an exported graph."""
        seen: dict[int, list[tuple[float, float, float]]] = {}

        def recorder(index):
            def hook(_module, inputs, _output):
                x = inputs[0].detach()
                seen.setdefault(index, []).append((x.min().item(), x.max().item(), x.double().mean().item() * len(x)))
            return hook

        handles = [q.register_forward_hook(recorder(i)) for i, q in enumerate(self.activations)]
        states = [(q.enabled, q.observing) for q in self.activations], [q.enabled for q in self.weights]
        self.set_enabled(activations=False, weights=False)
        try:
            with torch.no_grad():
                for start in range(0, len(images), CHUNK):
                    self.module(images[start:start + CHUNK])
        finally:
            for handle in handles:
                handle.remove()
            for q, (enabled, _) in zip(self.activations, states[0]):
                q.enabled = enabled
            for q, enabled in zip(self.weights, states[1]):
                q.enabled = enabled
        return [(min(v[0] for v in seen[i]), max(v[1] for v in seen[i]), sum(v[2] for v in seen[i]) / len(images))
                for i in range(len(self.activations))]


def _depends_on_input(graph) -> set:
    dependent = set()
    for node in graph.nodes:
        if node.op == "placeholder" or any(n in dependent for n in node.all_input_nodes):
            dependent.add(node)
    return dependent


def _insert_after(module, node, name: str, quantizer: nn.Module) -> None:
    module.add_submodule(name, quantizer)
    with module.graph.inserting_after(node):
        rounded = module.graph.call_module(name, (node,))
    node.replace_all_uses_with(rounded, delete_user_cb=lambda user: user is not rounded)


def simulate_int8(model: nn.Module, example: torch.Tensor) -> Int8Simulation:
    """``model`` (BatchNorm folded, eval mode) with int8 fake quantization; ranges still unset
    (call :meth:`Int8Simulation.observe_ranges`). Parameters keep their names in ``model``."""
    batch = torch.export.Dim("batch", min=1, max=4096)
    module = torch.export.export(model, (example,), dynamic_shapes={"x": {0: batch}}).module()
    weighted, computing, fused_activations, moves = _aten_sets()
    dependent = _depends_on_input(module.graph)
    activations: list[ActivationQuantizer] = []
    weights: list[WeightQuantizer] = []
    for node in list(module.graph.nodes):
        if node.op != "call_function":
            continue
        if node.target in weighted:
            weight = node.args[1]
            quantizer = WeightQuantizer()
            module.add_submodule(f"int8_weight_{len(weights)}", quantizer)
            with module.graph.inserting_before(node):
                rounded = module.graph.call_module(f"int8_weight_{len(weights)}", (weight,))
            node.replace_input_with(weight, rounded)
            weights.append(quantizer)
        if node in dependent and node.target in computing:
            fused = _fuses_with_activation(node, fused_activations, moves)
            if fused and (node.target in weighted or node.target == torch.ops.aten.add.Tensor):
                continue
            activations.append(ActivationQuantizer())
            _insert_after(module, node, f"int8_activation_{len(activations) - 1}", activations[-1])
    image = next(n for n in module.graph.nodes if n.op == "placeholder")
    activations.append(ActivationQuantizer())
    _insert_after(module, image, "int8_input", activations[-1])
    module.graph.lint()
    module.recompile()
    return Int8Simulation(module, activations, weights)


def trainable_parameters(simulation: Int8Simulation) -> Iterable[nn.Parameter]:
    """The network's own parameters (learned ranges excluded)."""
    ranges = [p for q in simulation.activations for p in (q.log_low, q.log_high) if p is not None]
    return [p for p in simulation.module.parameters() if p.requires_grad and not any(p is r for r in ranges)]
