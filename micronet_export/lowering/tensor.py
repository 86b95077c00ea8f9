"""How one ONNX tensor is carried through the lowering: a TF value plus its layout."""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np

from micronet_export.channel_order import is_identity

log = logging.getLogger(__name__)

# Physical axis i of an image holds logical (ONNX NCHW) axis NHWC[i].
NHWC = (0, 2, 3, 1)


@dataclass(eq=False)
class Lowered:
    """One ONNX tensor as lowered.

    * ``value``: a ``tf.Tensor``, or an ``np.ndarray`` for a constant;
    * ``perm``: physical axis ``i`` holds logical (ONNX) axis ``perm[i]``;
    * ``shape``: the logical (ONNX) shape;
    * ``corder``: for tensors with a channel axis (logical axis 1), physical channel ``s`` holds
      logical channel ``corder[s]`` (``None``: in order). Channel shuffles and Dynamic
      Shift-Max's shift only change ``corder``; convolutions absorb it into their weights;
    * ``view``: a lazy channel view (the reshape/transpose/slice/concat chains that spell a
      shuffle or a shift in ONNX): ``value`` is then the source ``Lowered`` and ``view`` holds,
      for each logical element, its flat logical index in the source;
    * ``hint``: the channel order a squeeze-excite style FC should emit, so its coefficients
      line up with the tensor they multiply;
    * ``gathered``: the tensor is a reordering of another one (materialise it, not its partner);
    * ``origin``: name of the ONNX tensor whose handler made ``value`` (views and relabellings
      keep their source's): the key of every side table (recipes, producers, planning).
    """

    value: object
    perm: tuple | None
    shape: list
    corder: np.ndarray | None = None
    view: np.ndarray | None = None
    hint: np.ndarray | None = None
    gathered: bool = False
    origin: str | None = None

    def __post_init__(self) -> None:
        self.perm = tuple(self.perm) if self.perm is not None else tuple(range(len(self.shape)))
        self.shape = list(self.shape)
        if self.corder is not None:
            self.corder = None if is_identity(self.corder) else np.asarray(self.corder, dtype=np.int64)

    @classmethod
    def constant(cls, value: np.ndarray) -> "Lowered":
        return cls(value, None, np.shape(value))

    @property
    def is_const(self) -> bool:
        return isinstance(self.value, np.ndarray)

    def order(self, channels: int) -> np.ndarray:
        return self.corder if self.corder is not None else np.arange(channels)

    @property
    def channel_axis(self) -> int:
        """Physical index of the channel axis (logical axis 1)."""
        return self.perm.index(1)

    def with_value(self, value, corder=None) -> "Lowered":
        """The same logical tensor, ``value`` physically in ``corder`` (a new TF value)."""
        return Lowered(value, self.perm, self.shape, corder)


def as_perm(tf, t: Lowered, perm) -> object:
    """The TF value of ``t`` laid out with ``perm`` (a transpose only when they differ)."""
    perm = tuple(perm)
    if t.is_const:
        c = t.value
        if c.ndim < len(perm):
            c = c.reshape((1,) * (len(perm) - c.ndim) + c.shape)
        return c.transpose(perm) if c.ndim == len(perm) and c.ndim > 1 else c
    if t.perm == perm:
        return t.value
    log.debug("lowering inserts a transpose %s -> %s", t.perm, perm)
    # physical(new)[i] = logical perm[i] = physical(old)[t.perm.index(perm[i])]
    return tf.transpose(t.value, [t.perm.index(p) for p in perm])
