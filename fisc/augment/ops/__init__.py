"""CPU edit ops, one registered class per edit family (see :mod:`fisc.augment.ops.base`).

Importing this package fills the CPU side of the op registry
(:data:`fisc.augment.registry.REGISTRY`; :data:`OPS` is its CPU view, name -> op class). The
batched GPU implementations live in :mod:`fisc.augment.gpu`, whose modules mirror these::

    from fisc.augment.ops import build_op
    op = build_op("crop", {"p": 0.5, "area": [0.1, 0.6]})
    out = op(img, rng)              # HxWx3 uint8 in, HxWx3 uint8 out (8..2048 px a side)
    out = build_op("paste_onto")(img, rng, other=provider)  # composite ops
"""

from fisc.augment.ops import composite, geometric, overlay, photometric  # noqa: F401 (fill the registry)
from fisc.augment.ops.base import OPS, Op, OpConfigError, Param, build_op, register
from fisc.augment.ops.geometric import MAX_SIDE, MIN_SIDE, as_rgb, fit_size

__all__ = [
    "MAX_SIDE",
    "MIN_SIDE",
    "OPS",
    "Op",
    "OpConfigError",
    "Param",
    "as_rgb",
    "build_op",
    "fit_size",
    "register",
]
