"""Loading a frozen artifact: the verified :class:`~fisc.inference.DescriptorPipeline` of
its files (layout: :mod:`fisc.export.artifact`; reading the files: :mod:`fisc.export.read`)."""

from __future__ import annotations

from pathlib import Path

import torch

from fisc.export.card import read_card
from fisc.export.read import model_and_postprocessor
from fisc.inference import DescriptorPipeline
from fisc.models.descriptor import ModelConfig


def _pipeline(cfg: ModelConfig, root: Path, pp_card: dict | None) -> DescriptorPipeline:
    """The pipeline of an artifact folder's own files: weights, and post-processor if any."""
    model, pp = model_and_postprocessor(cfg, root, pp_card)
    return DescriptorPipeline(model, cfg, pp)


def load_postprocessor(root: str | Path):
    """The artifact's fitted post-processor, or ``None`` if it was frozen without one."""
    card = read_card(root)
    if not card.get("postprocess"):
        return None
    from fisc.postprocess.spec import PostProcessor

    return PostProcessor.load(Path(root) / card["postprocess"]["file"])


def load_artifact(
    root: str | Path,
    verify: bool = True,
    tolerance: float = 0.0,
    device: str | torch.device = "cpu",
) -> DescriptorPipeline:
    """The artifact's :class:`~fisc.inference.DescriptorPipeline` (model in eval mode on
    ``device``, preprocessing, post-processor), its ``artifact_hash`` set.

    With ``verify`` the manifest is checked and the golden descriptors (model output and
    final descriptors of each role) are recomputed on ``device`` (``tolerance`` 0:
    bit-identical, as holds on CPU; allow some on GPU)."""
    return DescriptorPipeline.from_artifact(root, verify=verify, tolerance=tolerance, device=device)
