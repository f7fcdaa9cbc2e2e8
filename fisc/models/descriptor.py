"""The descriptor model: timm backbone -> pooling -> linear projection (<= 256) -> L2."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any

import timm
import torch
import torch.nn.functional as F
from torch import nn

from fisc.models.pooling import GeM, TokenPool
from fisc.models.weights import WeightsConfig, WeightsError, load_into, read_state_dict

log = logging.getLogger(__name__)

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


@dataclass
class ModelConfig:
    """Everything needed to rebuild a descriptor model and its input preprocessing."""

    name: str = "mobilenetv2_100"  # a timm architecture
    dims: int = 256
    pooling: str = "gem"  # gem | avg | cls | mean_tokens
    gem_p: float = 3.0
    gem_learnable: bool = False
    projection_bn: bool = False  # linear -> BN -> L2 (ISC 1st place) instead of linear -> L2
    train_size: int = 96  # training crop side (px)
    eval_size: int = 128  # evaluation images are resized to eval_size x eval_size
    mean: list[float] = field(default_factory=lambda: list(IMAGENET_MEAN))
    std: list[float] = field(default_factory=lambda: list(IMAGENET_STD))
    model_kwargs: dict[str, Any] = field(default_factory=dict)  # extra timm.create_model kwargs
    weights: WeightsConfig = field(default_factory=WeightsConfig)


class DescriptorModel(nn.Module):
    """Maps a normalised image batch ``(B, 3, H, W)`` to L2-normalised descriptors ``(B, dims)``."""

    def __init__(self, backbone: nn.Module, pool: nn.Module, dims: int, projection_bn: bool):
        super().__init__()
        if not 1 <= dims <= 256:
            raise ValueError(f"descriptor dims must be in [1, 256] (DISC21 rule), got {dims}")
        self.backbone = backbone
        self.pool = pool
        self.projection = nn.Linear(backbone.num_features, dims)
        self.bn = nn.BatchNorm1d(dims) if projection_bn else nn.Identity()

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        features = self.backbone.forward_features(images)
        return F.normalize(self.bn(self.projection(self.pool(features))), dim=-1)


def _pooling(cfg: ModelConfig, backbone: nn.Module) -> nn.Module:
    if cfg.pooling == "gem":
        return GeM(cfg.gem_p, learnable=cfg.gem_learnable)
    if cfg.pooling == "avg":
        return GeM(1.0)
    if cfg.pooling in ("cls", "mean_tokens"):
        prefix = getattr(backbone, "num_prefix_tokens", 1)
        return TokenPool("cls" if cfg.pooling == "cls" else "mean", prefix)
    raise ValueError(f"unknown pooling {cfg.pooling!r} (gem | avg | cls | mean_tokens)")


def build_backbone(cfg: ModelConfig) -> nn.Module:
    """The timm architecture ``cfg.name`` with its weights loaded and its classifier removed."""
    if cfg.name not in timm.list_models() and cfg.name.split(".")[0] not in timm.list_models():
        raise ValueError(f"{cfg.name!r} is not a timm architecture")
    w = cfg.weights
    kwargs = dict(cfg.model_kwargs)
    if w.source == "hub":
        try:
            backbone = timm.create_model(cfg.name, pretrained=True, **kwargs)
        except Exception as e:  # no network, unknown tag...
            raise WeightsError(
                f"could not fetch pretrained {cfg.name!r} from timm's hub ({type(e).__name__}: "
                f"{e}); name a local file instead: model.weights.source=file model.weights.path=..."
            ) from e
    elif w.source in ("file", "none"):
        backbone = timm.create_model(cfg.name, pretrained=False, **kwargs)
        if w.source == "file":
            if not w.path:
                raise WeightsError("model.weights.source=file needs model.weights.path")
            load_into(backbone, read_state_dict(w.path, w.sha256), w)
            log.info("loaded %s weights from %s", cfg.name, w.path)
    else:
        raise ValueError(f"unknown weights source {w.source!r} (none | hub | file)")
    backbone.reset_classifier(0)
    return backbone


def build_descriptor_model(cfg: ModelConfig) -> DescriptorModel:
    backbone = build_backbone(cfg)
    return DescriptorModel(backbone, _pooling(cfg, backbone), cfg.dims, cfg.projection_bn)
