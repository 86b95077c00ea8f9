"""An int8 TFLite with a float island is the same file in every process.

The MLIR quantizer emits the DEQUANTIZEs after an int8 SPLIT in an order that changes from
process to process (seen: two exports of the Fashion-MNIST M0 with features.1 kept float
differed in the numbering of one SPLIT's outputs). A hash seed does not decide that order,
so two processes agree by chance half the time: the in-process test below builds the other
emission order itself and checks that the float-SPLIT pass gives the same bytes for both.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from micronet_export import create_model
from micronet_export.images import load_folder, project_path
from micronet_export.int8.tflite_islands import float_splits
from micronet_export.onnx_export import export_onnx
from micronet_export.tflite_export import quantize_calibrated
from micronet_export.tflite_inspect import flatbuffer_utils

SHIPPED = project_path("models/micronet_m0_fashion_mnist.pth")
CALIBRATION = project_path("models/fashion_mnist_calibration")
ISLAND = "features.1."  # holds a Dynamic Shift-Max, whose coefficients go through a SPLIT
_SPLIT, _DEQUANTIZE = 49, 6  # schema.BuiltinOperator values

# Builds the M0 int8 model with the ISLAND units float and writes its bytes to argv[1].
BUILD = f"""
import sys
from pathlib import Path
from micronet_export import create_model
from micronet_export.images import load_folder, project_path
from micronet_export.int8.search import Int8Plan
from micronet_export.int8.tflite_backend import TFLiteInt8Backend
from micronet_export.onnx_export import export_onnx

model = create_model("m0", checkpoint=project_path({str(SHIPPED)!r}), num_classes=None)
images = load_folder(project_path({str(CALIBRATION)!r}), input_size=64).arrays[:16]
backend = TFLiteInt8Backend(export_onnx(model, input_size=64), images)
floats = tuple(u for u in backend.units() if u.startswith({ISLAND!r}))
Path(sys.argv[1]).write_bytes(backend.build(Int8Plan("minmax", floats)))
"""


@pytest.fixture(scope="module")
def quantized_with_island() -> bytes:
    """The quantizer's output (before the float-SPLIT pass) with the ISLAND units float."""
    from micronet_export.int8.tflite_backend import TFLiteInt8Backend

    model = create_model("m0", checkpoint=SHIPPED, num_classes=None)
    images = load_folder(CALIBRATION, input_size=64).arrays[:16]
    backend = TFLiteInt8Backend(export_onnx(model, input_size=64), images)
    tensors = [name for op in backend.ops if op.unit.startswith(ISLAND) for name in op.outputs]
    return quantize_calibrated(backend.calibrated, float_tensors=tensors)


def other_dequantize_order(flatbuffer: bytes) -> bytes:
    """``flatbuffer`` as the quantizer writes it when it emits the two DEQUANTIZEs after the
    first int8 SPLIT the other way round: the first DEQUANTIZE (and so the lower-numbered
    tensor) takes the SPLIT's second output, and the readers follow."""
    utils = flatbuffer_utils()
    model = utils.convert_bytearray_to_object(bytearray(flatbuffer))
    graph = model.subgraphs[0]
    code = lambda op: max(model.operatorCodes[op.opcodeIndex].builtinCode,
                          model.operatorCodes[op.opcodeIndex].deprecatedBuiltinCode)
    reader = {int(t): op for op in graph.operators if code(op) == _DEQUANTIZE for t in op.inputs}
    split = next(op for op in graph.operators if code(op) == _SPLIT and len(op.outputs) == 2
                 and all(int(t) in reader for t in op.outputs))
    first, second = (reader[int(t)] for t in split.outputs)
    first.inputs, second.inputs = list(second.inputs), list(first.inputs)
    swap = {int(first.outputs[0]): int(second.outputs[0]), int(second.outputs[0]): int(first.outputs[0])}
    for op in graph.operators:
        op.inputs = [swap.get(int(t), int(t)) for t in op.inputs]
    return bytes(utils.convert_object_to_bytearray(model))


def test_float_splits_do_not_depend_on_the_quantizers_dequantize_order(quantized_with_island):
    other = other_dequantize_order(quantized_with_island)
    assert other != quantized_with_island
    model, rewired = float_splits(quantized_with_island)
    assert rewired >= 1
    assert float_splits(other) == (model, rewired)


def test_int8_tflite_with_a_float_island_does_not_depend_on_the_process(tmp_path):
    """Two processes with string-hash seeds 1 and 2 write the same bytes."""
    root = Path(__file__).resolve().parent.parent
    paths = {seed: tmp_path / f"{seed}.tflite" for seed in ("1", "2")}
    procs = {seed: subprocess.Popen([sys.executable, "-c", BUILD, str(path)], cwd=root, stdout=subprocess.PIPE,
                                    stderr=subprocess.PIPE, text=True, env={**os.environ, "PYTHONHASHSEED": seed})
             for seed, path in paths.items()}
    for seed, proc in procs.items():
        _, err = proc.communicate(timeout=300)
        assert proc.returncode == 0, err
    assert paths["1"].read_bytes() == paths["2"].read_bytes()
