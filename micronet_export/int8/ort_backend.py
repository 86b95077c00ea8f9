"""The int8 search's ONNX Runtime side: QDQ models from one calibration.

ORT calibrates once and writes its calibration cache (the per-tensor ranges it wants); every
later plan passes a cache, either that one (``minmax``) or one with ranges chosen from our own
statistics of the same tensors (``relmse``), and names the nodes of float units in
``nodes_to_exclude``. Units come from the TorchScript scopes in the node names.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import numpy as np
import onnx

from micronet_export.int8.ranges import choose_ranges, collect
from micronet_export.int8.search import Int8Plan
from micronet_export.int8.units import unit_of_node, unit_order
from micronet_export.onnx_shapes import tensor_shapes
from micronet_export.quantize import (
    _with_outputs, quantize_onnx, read_range_cache, slow_int8_convs, slow_int8_gemms, write_range_cache,
)


def _output_elements(model: onnx.ModelProto) -> dict[str, int]:
    return {name: int(np.prod([d if d > 0 else 1 for d in dims])) for name, dims in tensor_shapes(model).items()}


class OrtInt8Backend:
    """:class:`search.Int8Backend` for ONNX Runtime static QDQ models."""

    name = "onnxruntime"

    def __init__(self, fp32_onnx: onnx.ModelProto, calibration: np.ndarray, *, stats_images: np.ndarray | None = None,
                 op_types: tuple[str, ...] | None = ("Conv", "Gemm"), threads: int = 1,
                 calibration_method: str = "minmax") -> None:
        self.fp32 = fp32_onnx
        self.calibration_method = calibration_method
        self.op_types = op_types
        self.threads = threads
        self._tmp = tempfile.TemporaryDirectory(prefix="micronet-int8-ort-")
        self._caches = {"minmax": Path(self._tmp.name) / "minmax.json"}
        self._calibration = calibration
        self._stats_images = calibration if stats_images is None else stats_images
        sizes = _output_elements(fp32_onnx)
        self._nodes = [(n.name, unit_of_node(n.name), sum(sizes.get(o, 0) for o in n.output))
                       for n in fp32_onnx.graph.node if n.op_type != "Constant"]
        # Only modules with a node the quantizer makes int8 are units: keeping any other one
        # float changes nothing, and "every unit float" would be the float model.
        # The cost model's float nodes, once: every candidate build excludes them.
        self._slow = slow_int8_convs(fp32_onnx) + slow_int8_gemms(fp32_onnx)
        self._int8_units = {unit_of_node(n.name) for n in fp32_onnx.graph.node
                            if (op_types is None or n.op_type in op_types) and n.name not in self._slow}

    def units(self) -> list[str]:
        return unit_order([unit for _, unit, _ in self._nodes if unit in self._int8_units])

    def known_units(self) -> list[str]:
        """Every module of the graph (what --keep-float may name; most are float anyway)."""
        return unit_order([unit for _, unit, _ in self._nodes])

    def unit_cost(self, unit: str) -> float:
        return float(sum(size for _, u, size in self._nodes if u == unit))

    def output_unit(self) -> str:
        return self._nodes[-1][1]

    def _cache(self, method: str) -> Path:
        if method not in self._caches:
            minmax = read_range_cache(self._minmax_cache())
            names = sorted(minmax)
            session_model = _with_outputs(self.fp32, names)
            from micronet_export.runtimes import onnx_session

            session = onnx_session(session_model, self.threads)
            input_name = session.get_inputs()[0].name

            def run(image: np.ndarray) -> dict[str, np.ndarray]:
                return dict(zip(names, session.run(names, {input_name: image[None]})))

            stats = collect(run, self._stats_images, minmax)
            path = Path(self._tmp.name) / f"{method}.json"
            write_range_cache(path, choose_ranges(stats, method))
            self._caches[method] = path
        return self._caches[method]

    def _minmax_cache(self) -> Path:
        path = self._caches["minmax"]
        if not path.is_file():
            # ORT's own calibrator (the plain model's ranges), which writes the cache.
            quantize_onnx(self.fp32, self._calibration, method=self.calibration_method, op_types=self.op_types,
                          range_cache=path)
        return path

    def build(self, plan: Int8Plan) -> onnx.ModelProto:
        cache = self._minmax_cache() if plan.ranges == "minmax" else self._cache(plan.ranges)
        floats = set(plan.float_units)
        excluded = [name for name, unit, _ in self._nodes if unit in floats]
        # ORT checks that a cache's method is the one asked for; our own ranges are stored as MinMax.
        method = self.calibration_method if plan.ranges == "minmax" else "minmax"
        return quantize_onnx(self.fp32, None, method=method, op_types=self.op_types, nodes_to_exclude=excluded + self._slow,
                             keep_slow_convs_float=False, range_cache=cache)

    def logits(self, artifact: onnx.ModelProto, images: np.ndarray) -> np.ndarray:
        from micronet_export.runtimes import run_onnx

        return run_onnx(artifact.SerializeToString(), images, self.threads)
