"""Batched GPU pipelines: ops applied in turn to a batch, each sample with its own draws
(the GPU counterpart of a view's CPU stages in :mod:`fisc.augment.pipeline`)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torch import Tensor, nn

from fisc.augment.gpu.base import build_gpu_op, check_batch, mix_seed
from fisc.augment.registry import OpConfigError


class GpuPipeline(nn.Module):
    """Ops applied in turn to a batch. ``order="fixed"``: config order; ``"random"``: each
    sample runs the ops in its own random order (drawn from its seed). An op's random
    parameters depend on its position in the config, not on when it runs."""

    def __init__(
        self,
        ops: Mapping[str, Mapping[str, Any] | None] | Sequence[tuple[str, Mapping[str, Any]]],
        order: str = "fixed",
    ):
        super().__init__()
        if order not in ("fixed", "random"):
            raise OpConfigError(f"GPU pipeline order must be 'fixed' or 'random', got {order!r}")
        items = list(ops.items()) if isinstance(ops, Mapping) else list(ops)
        for item in items:
            if isinstance(item, str) or not isinstance(item, Sequence) or len(item) != 2:
                raise OpConfigError(f"GPU pipeline entry must be (op name, config), got {item!r}")
        self.order = order
        self.ops = nn.ModuleList()
        for index, (name, cfg) in enumerate(items):
            op = build_gpu_op(str(name), cfg)
            op.index = index
            self.ops.append(op)

    def extra_repr(self) -> str:
        return f"order={self.order!r}"

    def forward(self, x: Tensor, seeds: Tensor) -> Tensor:
        check_batch(x, seeds)
        seeds = seeds.detach().cpu()
        draws = [op.draw(seeds) for op in self.ops]
        x = x.clone()  # then edited in place, op after op
        if self.order == "fixed":
            for op, (fire, u, keys) in zip(self.ops, draws, strict=True):
                idx = [i for i, f in enumerate(fire) if f]
                if idx:
                    op.edit(x, idx, u, keys, inplace=True)
            return x.clamp_(0.0, 1.0)
        # each sample runs the ops that fire for it, in its own order; at each step, the
        # samples whose next op is k are edited together (only non-empty groups are run)
        gen, chains = torch.Generator(), []
        for i, s in enumerate(seeds.tolist()):
            gen.manual_seed(mix_seed(s, -1, salt=0x6F72646572))
            perm = torch.randperm(len(self.ops), generator=gen).tolist()
            chains.append([k for k in perm if draws[k][0][i]])
        for step in range(max(map(len, chains), default=0)):
            for k, op in enumerate(self.ops):
                idx = [i for i, c in enumerate(chains) if len(c) > step and c[step] == k]
                if idx:
                    op.edit(x, idx, draws[k][1], draws[k][2], inplace=True)
        return x.clamp_(0.0, 1.0)


def build_gpu_pipeline(cfg: Any) -> GpuPipeline:
    """A pipeline from a config: ``{op: {p: .., param: ..}, ...}``, a list of ``[op, cfg]``
    pairs, or ``{"ops": <either>, "order": "fixed" | "random"}`` (OmegaConf objects too)."""
    try:
        from omegaconf import OmegaConf

        if OmegaConf.is_config(cfg):
            cfg = OmegaConf.to_container(cfg, resolve=True)
    except ImportError:  # pragma: no cover
        pass
    if isinstance(cfg, Mapping) and "ops" in cfg:
        extra = sorted(set(cfg) - {"ops", "order"})
        if extra:
            raise OpConfigError(f"GPU pipeline config has unknown key(s) {extra}")
        return GpuPipeline(cfg["ops"], order=cfg.get("order", "fixed"))
    if not isinstance(cfg, (Mapping, Sequence)) or isinstance(cfg, str):
        raise OpConfigError(f"GPU pipeline config must be a mapping or a list, got {cfg!r}")
    return GpuPipeline(cfg)
