"""Descriptor extraction: eval mode, per-image preprocessing, no gradient, checked output."""

from __future__ import annotations

import logging
from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader, Subset
from tqdm.auto import tqdm

from fisc.data.datasets import EvalImageDataset, one_opencv_thread_per_worker
from fisc.data.disc21 import ImageSet
from fisc.data.preprocess import Preprocess
from fisc.descriptors import Descriptors

log = logging.getLogger(__name__)


class NonFiniteDescriptorError(FloatingPointError):
    """The model produced NaN or inf for some images; ``ids`` names them."""

    def __init__(self, ids: Sequence[str]):
        self.ids = list(ids)
        super().__init__(f"non-finite descriptors for {len(self.ids)} images, e.g. {self.ids[:5]}")


@torch.inference_mode()
def iter_descriptors(
    model: nn.Module,
    images: ImageSet,
    prep: Preprocess,
    indices: Sequence[int] | None = None,
    batch_size: int = 64,
    num_workers: int = 0,
    device: str | torch.device = "cpu",
    on_error: str = "raise",
    progress: bool = True,
    desc: str = "extract",
    per_image: bool = False,
) -> Iterator[tuple[np.ndarray, np.ndarray | None]]:
    """Yield ``(dataset indices, float32 vectors)`` per batch, in eval mode, of the images at
    ``indices`` (default: all). Undecodable images (``on_error="skip"``) are left out of the
    batch; non-finite outputs raise :class:`NonFiniteDescriptorError` naming the images.

    ``per_image=True`` runs the model on one image at a time: CPU kernels then see the same
    shapes whatever the batch, its size or order, so a descriptor is bit-identical however it
    was batched (batched BLAS/oneDNN kernels differ in the last bits, ~1e-7). Exports use it.
    """
    dataset = EvalImageDataset(images, prep, on_error=on_error)
    if indices is not None:
        dataset = Subset(dataset, list(indices))
    one_opencv_thread_per_worker(num_workers)
    loader = DataLoader(dataset, batch_size=batch_size, num_workers=num_workers, shuffle=False)
    was_training = model.training
    model.eval().to(device)
    try:
        for pixels, index, ok in tqdm(loader, desc=desc, unit="batch", disable=not progress):
            index, ok = index.numpy(), ok.numpy().astype(bool)
            if not ok.any():
                continue
            x = pixels[ok].to(device)
            out = torch.cat([model(x[i : i + 1]) for i in range(len(x))]) if per_image else model(x)
            vectors = out.float().cpu().numpy()
            bad = ~np.isfinite(vectors).all(axis=1)
            if bad.any():
                raise NonFiniteDescriptorError([images.ids[i] for i in index[ok][bad]])
            yield index[ok], vectors
    finally:
        model.train(was_training)


def extract_descriptors(
    model: nn.Module, images: ImageSet, prep: Preprocess, **options: Any
) -> tuple[Descriptors, list[str]]:
    """Descriptors of ``images`` (rows in id order) and the ids skipped as undecodable.

    ``options``: the keyword options of :func:`iter_descriptors` (``batch_size``,
    ``num_workers``, ``device``, ``on_error``, ``progress``, ``desc``, ``per_image``), with
    its defaults; every image is extracted (no ``indices``). ``on_error="raise"`` stops at the
    first bad file with an error naming it; ``"skip"`` logs it, leaves it out and lists it in
    the second return value.
    """
    out: np.ndarray | None = None
    keep = np.zeros(len(images), dtype=bool)
    for index, vectors in iter_descriptors(model, images, prep, None, **options):
        if out is None:
            out = np.empty((len(images), vectors.shape[1]), dtype=np.float32)
        out[index] = vectors
        keep[index] = True
    if out is None:
        raise ValueError(f"no image of {len(images)} could be decoded")
    ids = np.asarray(images.ids)
    skipped = ids[~keep].tolist()
    if skipped:
        log.warning("skipped %d undecodable images: %s", len(skipped), skipped[:10])
    return Descriptors(ids[keep], out[keep]), skipped
