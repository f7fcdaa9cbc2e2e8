"""The training losses, built by name from a LossConfig (see conf/loss/)."""

from __future__ import annotations

from torch import nn


def build_loss(cfg, dims: int, num_classes: int | None = None) -> nn.Module:
    """``cfg`` is a :class:`fisc.train.config.LossConfig`; ``num_classes`` (the number of
    training images) is needed by ``arcface`` only."""
    if cfg.name == "infonce_koleo":
        from fisc.losses.infonce_koleo import InfoNCEKoLeoLoss

        return InfoNCEKoLeoLoss(
            cfg.temperature, cfg.entropy_weight, memory_size=cfg.memory_size,
            memory_warmup=cfg.memory_warmup,
        )  # fmt: skip
    if cfg.name == "contrastive_xbm":
        from fisc.losses.contrastive_xbm import ContrastiveXBMLoss

        return ContrastiveXBMLoss(
            cfg.pos_margin, cfg.neg_margin, cfg.memory_size, cfg.memory_warmup
        )
    if cfg.name == "arcface":
        from fisc.losses.arcface import ArcFaceLoss

        if not num_classes:
            raise ValueError("the arcface loss needs the number of training images")
        return ArcFaceLoss(num_classes, dims, cfg.margin, cfg.scale)
    raise ValueError(f"unknown loss {cfg.name!r} (infonce_koleo | contrastive_xbm | arcface)")
