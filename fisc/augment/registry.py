"""The one op registry and the parameter protocol that CPU and GPU ops share.

An op name (``blur``, ``affine``, ...) means one edit family, named the same way in a view's
CPU ``stages`` and in its ``gpu`` stage. Each name has one :class:`OpEntry` in
:data:`REGISTRY`, holding its implementations by kind:

- ``"cpu"``: an :class:`fisc.augment.ops.Op` (numpy, one ``HxWx3 uint8`` image), from the
  modules of :mod:`fisc.augment.ops`;
- ``"gpu"``: a :class:`fisc.augment.gpu.GpuOp` (torch, a ``(B, 3, H, W)`` float batch), from
  the modules of :mod:`fisc.augment.gpu`, which mirror them.

The two kinds of one name keep their own parameters and defaults (a batched edit is not the
same code as a per-image one), but build and validate them the same way (:class:`OpSpec`).

This module imports neither numpy-side nor torch-side ops. Each implementation package fills
its kind when imported (its ``__init__`` imports its op modules, which ``@register`` their
classes): ``import fisc.augment.ops`` gives the CPU side (no torch, for DataLoader workers and
the minidisc generator) and ``import fisc.augment.gpu`` gives both, since it imports the CPU
package first. The import graph is ``registry <- ops <- gpu``, with no cycle.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar, TypeVar

KINDS = ("cpu", "gpu")
_LABEL = {"cpu": "CPU", "gpu": "GPU"}
_WHERE = {"cpu": "a view's CPU `stages`", "gpu": "a view's `gpu` stage"}


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


def plain(value: Any) -> Any:
    """Config values (OmegaConf ListConfig included) to plain Python lists."""
    if isinstance(value, Sequence) and not isinstance(value, (str, bytes)):
        return [plain(v) for v in value]
    return value


S = TypeVar("S", bound="OpSpec")


class OpSpec:
    """What every op, CPU or GPU, is built from: a ``name``, its ``kind``, its ``params`` and a
    probability ``p``. Building one validates its config (never mid-epoch): ``p`` must be a
    number in [0, 1], every key a declared parameter and every value within its bounds, else
    :class:`OpConfigError`. After it, ``self.p`` is a float and ``self.values`` holds every
    parameter (ranges as ``(min, max)`` float tuples)."""

    name: ClassVar[str] = ""
    kind: ClassVar[str] = ""  # "cpu" (fisc.augment.ops.Op) or "gpu" (fisc.augment.gpu.GpuOp)
    params: ClassVar[dict[str, Param]] = {}

    p: float
    values: dict[str, Any]

    def __init__(self, p: float = 1.0, **kwargs: Any):
        self.p, self.values = self.validate(p, kwargs)

    @classmethod
    def validate(cls, p: Any, kwargs: Mapping[str, Any]) -> tuple[float, dict[str, Any]]:
        """``(p, values)`` of a config, checked against ``params``."""
        try:
            p = float(p)
        except (TypeError, ValueError):
            raise OpConfigError(f"{cls.name}.p must be a number in [0, 1], got {p!r}") from None
        if not 0.0 <= p <= 1.0:
            raise OpConfigError(f"{cls.name}.p must be in [0, 1], got {p}")
        unknown = sorted(set(kwargs) - set(cls.params))
        if unknown:
            raise OpConfigError(
                f"op {cls.name!r} has no parameter(s) {unknown}; it has {sorted(cls.params)}"
            )
        values = {
            k: spec.check(cls.name, k, plain(kwargs.get(k, spec.default)))
            for k, spec in cls.params.items()
        }
        return p, values

    @classmethod
    def at(cls: type[S], level: float, **fixed: Any) -> S:
        """This op at intensity ``level`` in [0, 1] (``p = 1``): every range parameter with a
        direction collapses to one point, ``level`` of the way from the mild to the strong end
        of its *default* range (``"up"``: min to max; ``"down"``: max to min); every other
        parameter keeps its default unless given in ``fixed``."""
        kwargs = dict(fixed)
        for key, spec in cls.params.items():
            if key in kwargs or not isinstance(spec.default, tuple) or spec.intensity is None:
                continue
            a, b = spec.default
            mild, strong = (a, b) if spec.intensity == "up" else (b, a)
            v = mild + level * (strong - mild)
            kwargs[key] = (v, v)
        return cls(p=1.0, **kwargs)


@dataclass
class OpEntry:
    """One op name and its implementations, by kind."""

    name: str
    impls: dict[str, type[OpSpec]] = field(default_factory=dict)

    @property
    def cpu(self) -> type[OpSpec] | None:
        return self.impls.get("cpu")

    @property
    def gpu(self) -> type[OpSpec] | None:
        return self.impls.get("gpu")

    @property
    def kinds(self) -> tuple[str, ...]:
        return tuple(k for k in KINDS if k in self.impls)


class KindView(Mapping[str, type[OpSpec]]):
    """The registry seen from one kind: name -> implementation class, in registration order
    (read-only, live)."""

    def __init__(self, registry: Registry, kind: str):
        self._registry, self._kind = registry, kind

    def __getitem__(self, name: str) -> type[OpSpec]:
        entry = self._registry.entries.get(name)
        if entry is None or self._kind not in entry.impls:
            raise KeyError(name)
        return entry.impls[self._kind]

    def __iter__(self) -> Iterator[str]:
        return iter(list(self._registry.order[self._kind]))

    def __len__(self) -> int:
        return len(self._registry.order[self._kind])

    def __repr__(self) -> str:
        return f"{_LABEL[self._kind]} ops {list(self)}"


class Registry:
    """Op name -> :class:`OpEntry` (its CPU and/or GPU implementation)."""

    def __init__(self) -> None:
        self.entries: dict[str, OpEntry] = {}
        self.order: dict[str, list[str]] = {k: [] for k in KINDS}

    def register(self, cls: type[S]) -> type[S]:
        """Class decorator: ``cls`` becomes the ``cls.kind`` implementation of ``cls.name``."""
        if not cls.name:
            raise ValueError(f"op class {cls.__qualname__} has no name")
        if cls.kind not in KINDS:
            raise ValueError(f"op {cls.name!r}: kind must be one of {KINDS}, got {cls.kind!r}")
        entry = self.entries.setdefault(cls.name, OpEntry(cls.name))
        if cls.kind in entry.impls:
            raise ValueError(f"{_LABEL[cls.kind]} op {cls.name!r} is registered twice")
        entry.impls[cls.kind] = cls
        self.order[cls.kind].append(cls.name)
        return cls

    def view(self, kind: str) -> KindView:
        """Name -> class of the ``kind`` implementations."""
        if kind not in KINDS:
            raise ValueError(f"kind must be one of {KINDS}, got {kind!r}")
        return KindView(self, kind)

    def get(self, name: str, kind: str) -> type[OpSpec]:
        """The ``kind`` implementation of op ``name``; :class:`OpConfigError` naming the ones
        that exist if there is none."""
        entry = self.entries.get(name)
        if entry is not None and kind in entry.impls:
            return entry.impls[kind]
        label = _LABEL[kind]
        known = f"known {label} ops: {sorted(self.order[kind])}"
        if entry is None:
            raise OpConfigError(f"unknown {label} op {name!r}; {known}")
        has = " and ".join(_LABEL[k] for k in entry.kinds)
        where = " or ".join(_WHERE[k] for k in entry.kinds)
        raise OpConfigError(
            f"unknown {label} op {name!r}: it has only a {has} implementation (use it in "
            f"{where}); {known}"
        )

    def build(self, name: str, kind: str, cfg: Mapping[str, Any] | None = None) -> OpSpec:
        """An op of ``kind`` from its name and config (``p`` plus its parameters)."""
        cls = self.get(name, kind)
        if cfg is not None and not isinstance(cfg, Mapping):
            raise OpConfigError(
                f"{_LABEL[kind]} op {name!r}: config must be a mapping, got {cfg!r}"
            )
        return cls(**{str(k): v for k, v in dict(cfg or {}).items()})


REGISTRY = Registry()
register = REGISTRY.register
