"""Raw-pixel input: the ImageNet normalisation moved inside the model (the TFLite default).

An app then feeds the RGB values of the resized, centre-cropped image as they are (0..255, NHWC
in TFLite; uint8 for int8, float32 for fp32 / fp16) instead of computing
``(x / 255 - mean) / std`` itself: what MediaPipe Tasks asks of a model, since it applies one
mean and std to all channels and refuses per-channel ones. The ONNX graph gets one
per-channel ``Add(-255 * mean)`` in front of the first conv, whose weights absorb the
``1 / (255 * std)``: exact, zero padding included (a zero of the centred input is the mean,
which is what the normalised model pads with). For int8 the input tensor's range is pinned to
0..255 (scale 1), so a uint8 input takes the bytes unchanged.
"""

from __future__ import annotations

import numpy as np
import onnx
from onnx import numpy_helper

from micronet_export.errors import UserError
from micronet_export.images import IMAGENET_MEAN, IMAGENET_STD

PIXEL_RANGE = (0.0, 255.0)


def fold_normalization(model: onnx.ModelProto) -> onnx.ModelProto:
    """``model`` taking raw RGB values 0..255 instead of normalised ones."""
    out = onnx.ModelProto()
    out.CopyFrom(model)
    graph = out.graph
    input_name = graph.input[0].name
    consumers = [n for n in graph.node if input_name in n.input]
    if len(consumers) != 1 or consumers[0].op_type != "Conv":
        raise UserError("--raw-pixels needs a model whose input feeds one convolution")
    conv = consumers[0]
    weights = {i.name: i for i in graph.initializer}
    if conv.input[1] not in weights:
        raise UserError("--raw-pixels needs the first convolution's weights as constants")
    mean = np.asarray(IMAGENET_MEAN, np.float32)
    std = np.asarray(IMAGENET_STD, np.float32)
    w = numpy_helper.to_array(weights[conv.input[1]]) / (255.0 * std)[None, :, None, None]
    scaled = numpy_helper.from_array(w.astype(np.float32), f"{conv.input[1]}::raw_pixels")
    offset = numpy_helper.from_array((-255.0 * mean).reshape(1, 3, 1, 1), "raw_pixels_offset")
    graph.initializer.extend([scaled, offset])
    centred = "input_centred"
    add = onnx.helper.make_node("Add", [input_name, offset.name], [centred], name="/input_normalization/Add")
    conv.input[0], conv.input[1] = centred, scaled.name
    graph.node.insert(list(graph.node).index(conv), add)
    onnx.checker.check_model(out)
    return out


def to_raw_pixels(batch: np.ndarray) -> np.ndarray:
    """Normalised NCHW images (images.preprocess) back to their RGB values 0..255."""
    mean = np.asarray(IMAGENET_MEAN, np.float32)[None, :, None, None]
    std = np.asarray(IMAGENET_STD, np.float32)[None, :, None, None]
    return np.clip(np.round((batch * std + mean) * 255.0), *PIXEL_RANGE).astype(np.float32)


def denormalize(batch: np.ndarray) -> np.ndarray:
    """Normalised NCHW images as pixel values, exactly (no rounding or clipping: a uint8 input
    rounds and clips when it is quantized, a float one takes any value)."""
    mean = np.asarray(IMAGENET_MEAN, np.float32)[None, :, None, None]
    std = np.asarray(IMAGENET_STD, np.float32)[None, :, None, None]
    return ((batch * std + mean) * 255.0).astype(np.float32)


def from_raw_pixels(batch: np.ndarray) -> np.ndarray:
    mean = np.asarray(IMAGENET_MEAN, np.float32)[None, :, None, None]
    std = np.asarray(IMAGENET_STD, np.float32)[None, :, None, None]
    return ((batch / 255.0 - mean) / std).astype(np.float32)
