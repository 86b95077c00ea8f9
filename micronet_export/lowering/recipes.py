"""How to recompute a tensor with its channels repeated, keyed by ONNX tensor name.

A depthwise conv with a channel multiplier runs on its input repeated along channels (see
:mod:`ops_conv`). When that input comes from a conv (through activations and other depthwise
convs), the conv can emit the repeats itself: XNNPACK computes a tile of output channels at
once (:data:`cost.REPEAT_GEMM_TILE`, :data:`cost.REPEAT_DEPTHWISE_TILE`), so within a tile the
repeats cost no extra work and no op, where a CONCATENATION copies every pixel.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from micronet_export.lowering.cost import REPEAT_DEPTHWISE_TILE, REPEAT_GEMM_TILE


@dataclass(frozen=True)
class ActivationRecipe:
    fn: object  # the TF activation
    input_origin: str | None


@dataclass(frozen=True)
class DenseConvRecipe:
    input_value: object  # the TF value the conv read (padded, in its input order)
    kernel: np.ndarray  # HWIO
    bias: np.ndarray | None
    strides: list[int]
    padding: str


@dataclass(frozen=True)
class DepthwiseRecipe:
    source_origin: str | None  # the conv's input before the multiplier's repeat and the pad
    mult: int
    pad: list | None
    kernel: np.ndarray  # HW(C*mult)1
    bias: np.ndarray | None
    strides: list[int]
    padding: str


def tiled(tf, recipes: dict, origin: str | None, m: int):
    """``concat([value] * m)`` along channels for the tensor named ``origin``, recomputed by
    the ops that made it; None when the chain does not allow it at no extra cost."""
    recipe = recipes.get(origin) if origin is not None else None
    if recipe is None:
        return None
    if isinstance(recipe, ActivationRecipe):
        inner = tiled(tf, recipes, recipe.input_origin, m)
        return None if inner is None else recipe.fn(inner)
    if isinstance(recipe, DenseConvRecipe):
        if recipe.kernel.shape[3] * m > REPEAT_GEMM_TILE:
            return None
        y = tf.nn.conv2d(recipe.input_value, np.tile(recipe.kernel, (1, 1, 1, m)), strides=recipe.strides,
                         padding=recipe.padding)
    else:
        if recipe.kernel.shape[2] * m > REPEAT_DEPTHWISE_TILE:
            return None
        inner = tiled(tf, recipes, recipe.source_origin, m * recipe.mult)
        if inner is None:
            return None
        if recipe.pad is not None:
            inner = tf.pad(inner, recipe.pad)
        y = tf.nn.depthwise_conv2d(inner, np.tile(recipe.kernel, (1, 1, m, 1)), strides=recipe.strides,
                                   padding=recipe.padding)
    return y if recipe.bias is None else tf.nn.bias_add(y, np.tile(recipe.bias, m))
