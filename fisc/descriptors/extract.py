"""Descriptor extraction: eval mode, per-image preprocessing, no gradient, checked output."""

from __future__ import annotations

import logging
from collections.abc import Sequence

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader
from tqdm.auto import tqdm

from fisc.data.datasets import EvalImageDataset
from fisc.data.disc21 import ImageSet
from fisc.descriptors.h5io import Descriptors

log = logging.getLogger(__name__)


class NonFiniteDescriptorError(FloatingPointError):
    """The model produced NaN or inf for some images; ``ids`` names them."""

    def __init__(self, ids: Sequence[str]):
        self.ids = list(ids)
        super().__init__(f"non-finite descriptors for {len(self.ids)} images, e.g. {self.ids[:5]}")


@torch.inference_mode()
def extract_descriptors(
    model: nn.Module,
    images: ImageSet,
    size: int,
    mean: Sequence[float],
    std: Sequence[float],
    batch_size: int = 64,
    num_workers: int = 0,
    device: str | torch.device = "cpu",
    on_error: str = "raise",
    progress: bool = True,
    desc: str = "extract",
) -> tuple[Descriptors, list[str]]:
    """Descriptors of ``images`` (rows in id order) and the ids skipped as undecodable.

    ``on_error="raise"`` stops at the first bad file with an error naming it;
    ``"skip"`` logs it, leaves it out and lists it in the second return value.
    """
    dataset = EvalImageDataset(images, size, mean, std, on_error=on_error)
    loader = DataLoader(dataset, batch_size=batch_size, num_workers=num_workers, shuffle=False)
    was_training = model.training
    model.eval().to(device)
    out: np.ndarray | None = None
    keep = np.zeros(len(images), dtype=bool)
    try:
        for pixels, index, ok in tqdm(loader, desc=desc, unit="batch", disable=not progress):
            index, ok = index.numpy(), ok.numpy().astype(bool)
            if not ok.any():
                continue
            vectors = model(pixels[ok].to(device)).float().cpu().numpy()
            if out is None:
                out = np.empty((len(images), vectors.shape[1]), dtype=np.float32)
            out[index[ok]] = vectors
            keep[index[ok]] = True
    finally:
        model.train(was_training)
    ids = np.asarray(images.ids)
    skipped = ids[~keep].tolist()
    if out is None:
        raise ValueError(f"no image of {len(images)} could be decoded")
    vectors = out[keep]
    bad = ~np.isfinite(vectors).all(axis=1)
    if bad.any():
        raise NonFiniteDescriptorError(ids[keep][bad].tolist())
    if skipped:
        log.warning("skipped %d undecodable images: %s", len(skipped), skipped[:10])
    return Descriptors(ids[keep], vectors), skipped
