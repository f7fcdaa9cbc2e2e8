"""Augmentation pipelines: per view, CPU stages of edit ops (in DataLoader workers) and a
batched GPU stage (after the batch reaches the device).

A view config::

    stages:                       # CPU, in order
      - select: all               # every op, each with its own probability p
        order: fixed              # or random
        ops: {crop: {p: 1.0, area: [0.1, 1.0]}, hflip: {p: 0.5}}
      - select: [1, 4]            # a chain of 1-4 distinct ops, drawn with weights p,
        order: random             # applied in random order (each always fires)
        ops: {text: {p: 1.0}, emoji: {p: 1.0}, jpeg: {p: 0.5}}
    gpu: {color_jitter: {p: 0.8}, blur: {p: 0.3}}   # batched ops (fisc.augment.gpu)

Every random choice of sample ``i``'s view ``v`` in epoch ``e`` comes from
``numpy.random.default_rng([seed, e, i, v])``, including the per-sample seed handed to the GPU
stage: replaying gives identical views whatever the worker, batch or device.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import cv2
import numpy as np

from fisc.augment.ops import OPS, OpConfigError, build_op
from fisc.augment.ops.base import Op, OtherProvider
from fisc.augment.ops.geometric import resize_to

SELECT_ALL = "all"


@dataclass
class Stage:
    ops: list[Op]
    select: tuple[int, int] | None  # None: every op with its own p; else chain length range
    random_order: bool
    # (the ops' p, the chain's draw probabilities, how many are positive), see _chain_weights
    _weights: tuple[tuple[float, ...], np.ndarray, int] | None = field(
        default=None, init=False, repr=False, compare=False
    )

    @classmethod
    def from_config(cls, cfg: Mapping[str, Any], where: str) -> Stage:
        unknown = sorted(set(cfg) - {"ops", "select", "order"})
        if unknown:
            raise OpConfigError(f"{where}: unknown key(s) {unknown} (ops, select, order)")
        ops_cfg = cfg.get("ops") or {}
        if not ops_cfg:
            raise OpConfigError(f"{where}: a stage needs at least one op")
        ops = []
        for name, op_cfg in ops_cfg.items():
            try:
                ops.append(_build_cpu_op(name, op_cfg))
            except OpConfigError as e:
                raise OpConfigError(f"{where}: {e}") from e
        select = cfg.get("select", SELECT_ALL)
        if select == SELECT_ALL:
            chain = None
        else:
            if not (isinstance(select, Sequence) and len(select) == 2):
                raise OpConfigError(f"{where}.select must be 'all' or [min, max], got {select!r}")
            lo, hi = int(select[0]), int(select[1])
            if not 0 <= lo <= hi <= len(ops):
                raise OpConfigError(f"{where}.select={select} needs 0 <= min <= max <= {len(ops)}")
            if all(op.p == 0 for op in ops):
                raise OpConfigError(f"{where}: chain weights (p) are all zero")
            chain = (lo, hi)
        order = cfg.get("order", "fixed")
        if order not in ("fixed", "random"):
            raise OpConfigError(f"{where}.order must be 'fixed' or 'random', got {order!r}")
        return cls(ops, chain, order == "random")

    @property
    def needs_other(self) -> bool:
        return any(op.needs_other for op in self.ops)

    def _chain_weights(self) -> tuple[np.ndarray, int]:
        """The chain's draw probabilities (the ops' ``p``, normalised) and how many are
        positive; worked out again only when an op's ``p`` has changed."""
        ps = tuple(op.p for op in self.ops)
        if self._weights is None or self._weights[0] != ps:
            weights = np.array(ps, dtype=np.float64)
            self._weights = (ps, weights / weights.sum(), int((weights > 0).sum()))
        return self._weights[1], self._weights[2]

    def __call__(
        self, img: np.ndarray, rng: np.random.Generator, other: OtherProvider | None
    ) -> np.ndarray:
        if self.select is None:
            order = rng.permutation(len(self.ops)) if self.random_order else range(len(self.ops))
            for i in order:
                img = self.ops[i](img, rng, other)
            return img
        p, positive = self._chain_weights()
        k = int(rng.integers(self.select[0], self.select[1] + 1))
        chosen = draw_distinct(rng, p, min(k, positive))
        if not self.random_order:
            chosen.sort()
        for i in chosen:
            img = self.ops[i].edit(img, rng, other)
        return img


def draw_distinct(rng: np.random.Generator, p: np.ndarray, k: int) -> list[int]:
    """``k`` distinct indices drawn with probabilities ``p`` (1-D, non-negative, summing to 1,
    as the chains' weights are: unlike numpy's call, nothing checks that; ``k`` at most the
    number of positive entries): the indices, in their order, that ``rng.choice(len(p), size=k,
    replace=False, p=p)`` returns, from the same random numbers, without that call's argument
    checks and set operations (3 of 31 ops: 5.5 instead of 22 us here, of a view's 1 ms on
    minidisc). Each round draws one uniform
    number per index still missing and maps it through the cumulative distribution of the
    weights not yet drawn; a round's repeats are dropped, keeping first occurrences, and drawn
    again in the next round."""
    p = np.asarray(p, dtype=np.float64)  # as numpy's choice takes it (no copy if already so)
    if k > np.count_nonzero(p > 0):
        raise ValueError(f"cannot draw {k} distinct indices from {np.count_nonzero(p > 0)} weights")
    found: list[int] = []
    weights = p
    while len(found) < k:
        u = rng.random(k - len(found))
        if found:  # a later round: the weights not yet drawn (a copy; p is the caller's)
            if weights is p:
                weights = p.copy()
            weights[found] = 0.0
        cdf = np.cumsum(weights)
        cdf /= cdf[-1]
        for i in cdf.searchsorted(u, side="right").tolist():
            if i not in found:
                found.append(i)
    return found


def _build_cpu_op(name: str, cfg: Mapping[str, Any] | None) -> Op:
    """:func:`build_op`; for a name with no CPU op, the GPU side of the registry is loaded
    first (torch, kornia: on this error path only), so that the error says if it has a GPU
    op."""
    if name not in OPS:
        import fisc.augment.gpu  # noqa: F401

    return build_op(name, cfg)


@dataclass
class View:
    stages: list[Stage]
    gpu: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def from_config(cls, cfg: Mapping[str, Any], where: str) -> View:
        unknown = sorted(set(cfg) - {"stages", "gpu"})
        if unknown:
            raise OpConfigError(f"{where}: unknown key(s) {unknown} (stages, gpu)")
        stages = [
            Stage.from_config(s, f"{where}.stages[{i}]")
            for i, s in enumerate(cfg.get("stages") or [])
        ]
        gpu = dict(cfg.get("gpu") or {})
        if gpu:
            from fisc.augment.gpu import build_gpu_pipeline

            try:
                build_gpu_pipeline(gpu)  # validate now, not mid-epoch
            except OpConfigError as e:
                raise OpConfigError(f"{where}.gpu: {e}") from e
        return cls(stages, gpu)


class ViewPipeline:
    """Makes the CPU part of one view: ``size x size`` uint8 RGB, plus the sample's GPU seed.

    ``work_side``: after the view's first stage (its crop), an image whose shorter side exceeds
    ``work_side x size`` is downscaled, aspect kept, to that shorter side, so the later stages
    edit about as many pixels as the view ends with rather than the source's (a 615 x 460 px
    photo edited for a 224 px view: 4.2x fewer pixels at ``work_side=1``), and the result is
    brought to ``size x size`` as the shrink resamples (:func:`resize_to`; on 40 DISC21-like
    crops to 224 px, bilinear took 0.15 ms where OpenCV's general area interpolation took
    1.0 ms); the training set
    then also decodes the images that ops paste in at the working size. None: the stages run
    at the source's resolution and the view is made by area interpolation."""

    def __init__(self, view: View, size: int, work_side: float | None = None):
        self.view = view
        self.size = size
        self.work_side = work_side

    @property
    def needs_other(self) -> bool:
        return any(s.needs_other for s in self.view.stages)

    def __call__(
        self, img: np.ndarray, rng: np.random.Generator, other: OtherProvider | None = None
    ) -> tuple[np.ndarray, int]:
        for k, stage in enumerate(self.view.stages):
            img = stage(img, rng, other)
            if k == 0 and self.work_side is not None:
                img = shrink_to_short_side(img, round(self.work_side * self.size))
        if img.shape[:2] != (self.size, self.size):
            if self.work_side is not None:  # resampled as the working-size shrink
                img = resize_to(img, self.size, self.size)
            else:
                shrink = min(img.shape[:2]) > self.size
                interpolation = cv2.INTER_AREA if shrink else cv2.INTER_LINEAR
                img = cv2.resize(img, (self.size, self.size), interpolation=interpolation)
        gpu_seed = int(rng.integers(0, 2**62))
        return np.ascontiguousarray(img), gpu_seed


def shrink_to_short_side(img: np.ndarray, side: int) -> np.ndarray:
    """``img`` downscaled (aspect kept) so that its shorter side is ``side``; unchanged if it is
    not longer. Resampled as the ops resample (:func:`resize_to`: an integer-factor box filter,
    then bilinear), 4-9x faster than OpenCV's general area interpolation at the factors a
    working-size shrink meets (1-3x)."""
    h, w = img.shape[:2]
    if min(h, w) <= side:
        return img
    f = side / min(h, w)
    size = (side, max(1, round(w * f))) if h <= w else (max(1, round(h * f)), side)
    return resize_to(img, size[1], size[0])


def build_views(
    views_cfg: Sequence[Mapping[str, Any]], size: int, work_side: float | None = None
) -> list[ViewPipeline]:
    """The view pipelines of an ``augment`` config (at least two views for contrastive training;
    a single view is used for both)."""
    if not views_cfg:
        raise OpConfigError("augment.views: at least one view is needed")
    views = [
        ViewPipeline(View.from_config(v, f"augment.views[{i}]"), size, work_side)
        for i, v in enumerate(views_cfg)
    ]
    return views if len(views) > 1 else views * 2


GPU_STAGES = ("auto", "device", "workers")


@dataclass
class AugmentConfig:
    """The ``augment`` config group: a named pipeline of training views."""

    name: str = "basic"
    # where the views' `gpu` ops run: on the training device after transfer, or per sample in
    # the DataLoader workers (same results: the ops are batch independent); auto = device
    # when it is a GPU, else workers
    gpu_stage: str = "auto"
    views: list[dict[str, Any]] = field(default_factory=list)
    # CPU ops left out of every stage (held-out edits: train without them, evaluate on them)
    exclude_ops: list[str] = field(default_factory=list)
    # after each view's first stage, images are downscaled to a shorter side of at most
    # work_side x the view size (aspect kept); null: the later stages edit at full resolution
    work_side: float | None = None

    def __post_init__(self):
        if self.gpu_stage not in GPU_STAGES:
            raise OpConfigError(f"augment.gpu_stage must be one of {GPU_STAGES}")
        if self.work_side is not None and not (
            isinstance(self.work_side, (int, float)) and self.work_side >= 1
        ):
            raise OpConfigError(
                f"augment.work_side must be null or a number >= 1 (x the view size), "
                f"got {self.work_side!r}"
            )
        unknown = sorted(set(self.exclude_ops) - set(OPS))
        if unknown:
            raise OpConfigError(f"augment.exclude_ops: unknown ops {unknown}")

    def build(self, size: int) -> list[ViewPipeline]:
        """Every view's CPU pipeline; raises :class:`OpConfigError` on any bad op or value."""
        views = [_without(v, set(self.exclude_ops)) for v in self.views]
        return build_views(views, size, self.work_side)


def _without(view: Mapping[str, Any], excluded: set[str]) -> dict[str, Any]:
    """``view`` minus the excluded ops; stages left empty are dropped, chains shortened."""
    if not excluded:
        return dict(view)
    stages = []
    for stage in view.get("stages") or []:
        ops = {k: v for k, v in (stage.get("ops") or {}).items() if k not in excluded}
        if not ops:
            continue
        stage = {**stage, "ops": ops}
        select = stage.get("select", SELECT_ALL)
        if select != SELECT_ALL:
            stage["select"] = [min(int(select[0]), len(ops)), min(int(select[1]), len(ops))]
        stages.append(stage)
    return {**view, "stages": stages}
