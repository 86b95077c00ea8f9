"""Per-op handlers of the lowering, found by ONNX op type.

A handler is ``fn(lowering, node, inputs, attrs) -> Lowered | list[Lowered]``. ``view``
handlers run when the first input is a lazy channel view (see :mod:`ops_views`).
"""

from __future__ import annotations

HANDLERS: dict[str, object] = {}
VIEW_HANDLERS: dict[str, object] = {}


def handles(*op_types: str, view: bool = False):
    table = VIEW_HANDLERS if view else HANDLERS

    def register(fn):
        for op_type in op_types:
            table[op_type] = fn
        return fn

    return register


def handler_for(op_type: str, on_view: bool):
    return (VIEW_HANDLERS if on_view else HANDLERS).get(op_type)
