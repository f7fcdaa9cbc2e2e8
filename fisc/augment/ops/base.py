"""The edit-op interface shared by every CPU op.

An op edits one ``HxWx3 uint8`` RGB image. Its randomness comes only from the
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
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np

Image = np.ndarray  # HxWx3 uint8 RGB
OtherProvider = Callable[[np.random.Generator], Image]  # draws another image of the data set


class OpConfigError(ValueError):
    """An op or pipeline configuration that cannot work: unknown name, parameter or range."""


@dataclass(frozen=True)
class Param:
    """A tunable parameter: ``default`` is a ``(min, max)`` range or a scalar; ``lo``/``hi``
    bound what a config may ask for. ``intensity`` says which end of the range is the strong
    edit: ``"up"`` (larger = stronger), ``"down"`` (smaller = stronger) or ``None`` (neither)."""

    default: Any
    lo: float | None = None
    hi: float | None = None
    intensity: str | None = "up"

    def check(self, op: str, key: str, value: Any) -> Any:
        if isinstance(self.default, tuple):
            if not (isinstance(value, (list, tuple)) and len(value) == 2):
                raise OpConfigError(f"{op}.{key} must be a [min, max] range, got {value!r}")
            a, b = (float(v) for v in value)
            if a > b:
                raise OpConfigError(f"{op}.{key}: min {a} > max {b}")
            bounds = [a, b]
        elif isinstance(self.default, bool) or isinstance(self.default, str):
            return value
        else:
            bounds = [float(value)]
        for v in bounds:
            if (self.lo is not None and v < self.lo) or (self.hi is not None and v > self.hi):
                raise OpConfigError(f"{op}.{key}={value!r} is outside [{self.lo}, {self.hi}]")
        return tuple(bounds) if isinstance(self.default, tuple) else value


class Op:
    """Base class of CPU edit ops; subclasses set ``name``, ``params`` and ``apply``."""

    name: ClassVar[str] = ""
    params: ClassVar[dict[str, Param]] = {}
    needs_other: ClassVar[bool] = False  # True: apply() needs another image (``other``)

    def __init__(self, p: float = 1.0, **kwargs: Any):
        if not 0.0 <= float(p) <= 1.0:
            raise OpConfigError(f"{self.name}.p must be in [0, 1], got {p}")
        unknown = sorted(set(kwargs) - set(self.params))
        if unknown:
            raise OpConfigError(
                f"op {self.name!r} has no parameter(s) {unknown}; it has {sorted(self.params)}"
            )
        self.p = float(p)
        self.values = {
            k: spec.check(self.name, k, kwargs.get(k, spec.default))
            for k, spec in self.params.items()
        }

    # -- helpers for apply() ------------------------------------------------------------
    def uniform(self, rng: np.random.Generator, key: str) -> float:
        a, b = self.values[key]
        return float(rng.uniform(a, b)) if b > a else float(a)

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

    @classmethod
    def at(cls, level: float, **fixed: Any) -> Op:
        """This op at intensity ``level`` in [0, 1]: every range parameter with a direction
        collapses to one point, ``level`` of the way from its mild to its strong end."""
        kwargs = dict(fixed)
        for key, spec in cls.params.items():
            if key in kwargs or not isinstance(spec.default, tuple) or spec.intensity is None:
                continue
            a, b = spec.default
            mild, strong = (a, b) if spec.intensity == "up" else (b, a)
            v = mild + level * (strong - mild)
            kwargs[key] = (v, v)
        return cls(p=1.0, **kwargs)

    def __repr__(self) -> str:
        return f"{type(self).__name__}(p={self.p}, {self.values})"


OPS: dict[str, type[Op]] = {}


def register(cls: type[Op]) -> type[Op]:
    if not cls.name or cls.name in OPS:
        raise ValueError(f"op name {cls.name!r} is empty or registered twice")
    OPS[cls.name] = cls
    return cls


def build_op(name: str, cfg: Mapping[str, Any] | None = None) -> Op:
    """An op from its registry name and config (``p`` plus its parameters)."""
    if name not in OPS:
        raise OpConfigError(f"unknown op {name!r}; known ops: {sorted(OPS)}")
    return OPS[name](**dict(cfg or {}))
