"""The untrained-backbone baseline: a recipe's backbone with its starting (e.g. ImageNet)
weights and a fresh random projection, as a :class:`~fisc.inference.DescriptorPipeline`."""

from __future__ import annotations

import torch

from fisc.inference import DescriptorPipeline
from fisc.models.descriptor import ModelConfig, build_descriptor_model


def untrained_pipeline(
    cfg: ModelConfig, seed: int = 0, size: int | None = None
) -> DescriptorPipeline:
    """``cfg``'s model as it is before training; the projection is drawn with ``seed``, so the
    same seed gives the same descriptors (the demo, the study and ``fisc extract --baseline
    untrained`` agree)."""
    torch.manual_seed(seed)
    return DescriptorPipeline(build_descriptor_model(cfg), cfg, size=size)
