"""The CPU side of the op protocol (:class:`Op`) and of the op registry (:data:`OPS`).

A CPU op edits one ``HxWx3 uint8`` RGB image. Its randomness comes only from the
``numpy.random.Generator`` it is given, so a (seed, epoch, index, view) keyed generator
replays the same edit. Parameters are validated when the op is built (from a pipeline config),
never mid-epoch: an unknown parameter or an out-of-range value raises :class:`OpConfigError`.

Writing an op::

    @register
    class Blur(Op):
        name = "blur"
        params = {"sigma": Param((0.5, 4.0), lo=0.0, hi=50.0)}

        @bounded  # from fisc.augment.ops.geometric: RGB uint8 in, 8..2048 px a side out
        def apply(self, img, rng, other=None):
            sigma = self.uniform(rng, "sigma")
            return cv2.GaussianBlur(img, (0, 0), sigma)

Names, parameters, ``p`` and their validation are shared with the GPU ops
(:class:`fisc.augment.registry.OpSpec`), and so is the registry: ``@register`` files the class
as the CPU implementation of its name in :data:`fisc.augment.registry.REGISTRY`; :data:`OPS` is
that registry's CPU view (name -> class).

``Param(default, lo, hi, intensity)`` declares a range ``(a, b)`` with
``lo <= a <= b <= hi``, or a number (bounded the same way), a bool or a string (not checked).
``Op.at(level)`` builds the op at an intensity level in [0, 1] (for galleries and tests):
each range parameter with an ``intensity`` direction collapses to the single point ``level``
of the way from the mild to the strong end of its *default* range (``"up"``: ``a`` to ``b``;
``"down"``: ``b`` to ``a``); every other parameter keeps its default.

The ops themselves live in ``geometric``, ``photometric``, ``overlay`` and ``composite``
(imported by ``fisc.augment.ops``). Their ``apply`` is wrapped in
:func:`fisc.augment.ops.geometric.bounded`: gray or RGBA input is accepted, the input array is
never modified, and outputs keep both sides within ``MIN_SIDE``..``MAX_SIDE`` (8..2048 px).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any, ClassVar, cast

import numpy as np

from fisc.augment.registry import REGISTRY, OpConfigError, OpSpec, Param, register

__all__ = ["OPS", "Image", "Op", "OpConfigError", "OtherProvider", "Param", "build_op", "register"]

Image = np.ndarray  # HxWx3 uint8 RGB
OtherProvider = Callable[[np.random.Generator], Image]  # draws another image of the data set


class Op(OpSpec):
    """Base class of CPU edit ops; subclasses set ``name``, ``params`` and ``apply``."""

    kind: ClassVar[str] = "cpu"
    needs_other: ClassVar[bool] = False  # True: apply() needs another image (``other``)

    # -- helpers for apply() ------------------------------------------------------------
    def uniform(self, rng: np.random.Generator, key: str) -> float:
        """``rng.uniform(a, b)``'s number: its formula, ``a + (b - a) * u`` on one standard
        uniform double ``u``, without its argument handling (1 instead of 4-5 us a call)."""
        a, b = self.values[key]
        return float(a) + (float(b) - float(a)) * rng.random() if b > a else float(a)

    def randint(self, rng: np.random.Generator, key: str) -> int:
        a, b = self.values[key]
        return int(rng.integers(int(round(a)), int(round(b)) + 1))

    # -- the edit -------------------------------------------------------------------------
    def apply(self, img: Image, rng: np.random.Generator, other: Image | None = None) -> Image:
        raise NotImplementedError

    def __call__(
        self, img: Image, rng: np.random.Generator, other: OtherProvider | None = None
    ) -> Image:
        """Apply with probability ``p``; the draw for ``p`` is always made, so later draws do
        not depend on whether this op fired."""
        fire = rng.random() < self.p
        return self.edit(img, rng, other) if fire else img

    def edit(
        self, img: Image, rng: np.random.Generator, other: OtherProvider | None = None
    ) -> Image:
        """Apply unconditionally (chains pick ops themselves): draw the other image if the op
        needs one, edit, and check the output."""
        background = None
        if self.needs_other:
            if other is None:
                raise OpConfigError(f"op {self.name!r} needs another image: give a provider")
            background = other(rng)
        out = self.apply(img, rng, background)
        if out.dtype != np.uint8 or out.ndim != 3 or out.shape[2] != 3:
            raise AssertionError(f"op {self.name} returned {out.dtype} {out.shape}")
        return out

    def __repr__(self) -> str:
        return f"{type(self).__name__}(p={self.p}, {self.values})"


OPS = cast(Mapping[str, type[Op]], REGISTRY.view("cpu"))  # name -> CPU op class


def build_op(name: str, cfg: Mapping[str, Any] | None = None) -> Op:
    """A CPU op from its registry name and config (``p`` plus its parameters)."""
    return cast(Op, REGISTRY.build(name, "cpu", cfg))
