"""Names that tie a runtime's tensors and nodes back to PyTorch modules.

Both runtimes see the same network under different names: ONNX node names carry the
TorchScript scope (``/features/features.6/layers/layers.1/Mul``), and the TFLite lowering
opens a TF name scope per ONNX node, so TFLite tensor names start with the module path
(``features.6.layers.1_22/add;...``, TF appends ``_N`` to reused scopes). A *unit* is the module
a user can keep in float: a stem, one layer of a micro-block (a grouped conv, a Dynamic
Shift-Max, a depth-separable conv), a head layer.
"""

from __future__ import annotations

import re

from micronet_export.errors import UserError

_SCOPE = re.compile(r"^/(.*)/[^/]+$")
_TF_UNIQUIFIER = re.compile(r"_\d+$")
# Scope of ops the lowering emits outside any module (the graph output).
GRAPH_SCOPE = "graph"


def module_path(node_name: str) -> str | None:
    """'/features/features.4/layers/layers.1/Max' -> 'features.4.layers.1'.

    TorchScript scopes repeat the parent's name for Sequential children ('features',
    'features.4', 'layers', 'layers.1'): a part that extends the previous one adds its suffix.
    """
    m = _SCOPE.match(node_name)
    if not m:
        return None
    parts, prev = [], None
    for part in (p for p in m.group(1).split("/") if p):
        parts.append(part[len(prev) + 1:] if prev and part.startswith(prev + ".") else part)
        prev = part
    return ".".join(parts) or None


def unit_of(path: str | None) -> str:
    """The unit of a module path: 'features.6.layers.1.conv.0' -> 'features.6.layers.1',
    'features.0.stem.0.conv.2' -> 'features.0.stem', 'classifier.2.linear.0' -> 'classifier.2'."""
    if not path:
        return GRAPH_SCOPE
    parts = path.split(".")
    if parts[0] == "features" and len(parts) >= 3:
        return ".".join(parts[:4] if parts[2] == "layers" else parts[:3])
    return ".".join(parts[:2])


def unit_of_node(node_name: str) -> str:
    return unit_of(module_path(node_name))


def unit_of_tflite_tensor(tensor_name: str) -> str:
    """TFLite fuses ops and joins their names with ';': the first name is the op that makes
    the tensor; its first path component is the TF name scope the lowering opened."""
    scope = tensor_name.split(";")[0].split("/")[0]
    return unit_of(_TF_UNIQUIFIER.sub("", scope))


def matches(unit: str, prefixes: tuple[str, ...] | list[str]) -> bool:
    """``unit`` is one of ``prefixes`` or inside one ('features.6' covers 'features.6.layers.1')."""
    return any(unit == p or unit.startswith(p + ".") for p in prefixes)


def unit_order(units: list[str]) -> list[str]:
    """Units in network order (first appearance), without repeats."""
    return list(dict.fromkeys(units))


def module_units(model) -> list[str]:
    """The units of a PyTorch model's leaf modules, in network order: what ``--keep-float`` may
    name, known before any export (a runtime's graph may fold a few of them away)."""
    leaves = [name for name, module in model.named_modules() if name and next(module.children(), None) is None]
    return unit_order([unit_of(name) for name in leaves] + [GRAPH_SCOPE])


def check_keep_float(names: tuple[str, ...] | list[str], known: list[str]) -> None:
    """Every ``--keep-float`` name must cover at least one of the ``known`` units."""
    unknown = [k for k in names if not any(matches(u, (k,)) for u in known)]
    if unknown:
        shown = [u for u in known if u != GRAPH_SCOPE][:6]
        raise UserError(f"--keep-float {unknown[0]!r} names no layer of this model; layers are "
                        f"{', '.join(shown)}, ... (module paths, as in the report's per-layer table)")
