"""A narrow ONNX → TensorFlow lowering for MicroNet's own op set, NHWC native.

Each ONNX tensor is carried as a TF value plus its layout (:mod:`tensor`): the axis
permutation (images are NHWC) and the physical channel order. Channel shuffles are replayed
on index arrays (:mod:`ops_views`, :mod:`channel_order`) and absorbed by the weights of the
convs and per-channel constants around them (:mod:`ops_conv`, :mod:`ops_elementwise`); no
TRANSPOSE is left. The few reorderings that must move data are made into ops by
:mod:`materialize`, as the cost model (:mod:`cost`) and the conv-order plan (:mod:`planning`)
decide. Handlers are found by op type (:mod:`registry`); anything outside MicroNet's op set
raises, naming the op: the lowering is narrow on purpose and parity-tested.
"""

from micronet_export.lowering.builder import Lowering, LoweringStats

__all__ = ["Lowering", "LoweringStats"]
