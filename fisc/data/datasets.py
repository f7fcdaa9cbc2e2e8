"""torch Datasets over an :class:`ImageSet`: two augmented views for training, one
deterministic view for evaluation and extraction."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset

from fisc.augment.pipeline import ViewPipeline
from fisc.data.decode import DEFAULT_MAX_PIXELS, ImageDecodeError, load_rgb, load_rgb_array
from fisc.data.disc21 import ImageSet
from fisc.data.preprocess import Preprocess

log = logging.getLogger(__name__)


def one_opencv_thread_per_worker(num_workers: int) -> None:
    """Call before a DataLoader with ``num_workers`` forks its workers: with workers, OpenCV is
    set to one thread in this process, which the forked workers inherit. Left alone, OpenCV
    would run a pool of one thread per core in every worker (N workers x N threads on N cores).
    It cannot be set in the worker instead: ``cv2.setNumThreads`` in a process forked after
    OpenCV's pool started deadlocks. fisc's training process does no OpenCV work of its own when
    it has workers; without workers (``num_workers=0``) nothing is changed. Outputs do not
    depend on it (OpenCV splits work by rows, each row computed alike)."""
    if num_workers > 0:
        import cv2

        cv2.setNumThreads(1)


def _pasted_min_side(views: Sequence[ViewPipeline], min_side: int | None) -> int | None:
    """The short side down to which the other images that ops paste in (``paste_onto``,
    ``overlay_image``) decode: the data set's ``min_side``, or, when every view edits at a
    working size (``augment.work_side``) and none pastes in its first stage (which runs at
    the decoded resolution, before the shrink), the largest working side if that is smaller."""
    work = [getattr(v, "work_side", None) for v in views]
    if not min_side or None in work:
        return min_side
    if any(v.view.stages and v.view.stages[0].needs_other for v in views):
        return min_side
    return min(min_side, max(round(w * v.size) for w, v in zip(work, views, strict=True)))


def view_key(*key: int) -> np.ndarray | list[int]:
    """The seed of a view's generator: ``key`` as uint32 words when every part fits one (the
    words ``SeedSequence`` makes of a list of such ints, so the same generator, built in 11
    instead of 23 us), else the list itself."""
    if all(0 <= k < 2**32 for k in key):
        return np.array(key, np.uint32)
    return list(key)


class TwoViewDataset(Dataset):
    """Item ``i``: ``(view_a, view_b, gpu_seeds, i)`` with uint8 ``3 x size x size`` views and
    the per-sample seeds of their GPU stage. View ``v``'s randomness is keyed by
    ``(seed, epoch, i, v)``: the key is ``(epoch, i)`` (as the training sampler yields them)
    or ``i`` alone for epoch :attr:`epoch`.

    ``worker_gpu`` (one pipeline or ``None`` per view) applies the views' batched GPU ops here,
    per sample on CPU, when training has no GPU.
    """

    def __init__(
        self,
        images: ImageSet,
        views: Sequence[ViewPipeline],
        seed: int = 0,
        worker_gpu: Sequence[torch.nn.Module | None] | None = None,
        skip_log: str | Path | None = None,
        min_side: int | None = None,
    ):
        self.images = images
        self.views = list(views)
        self.seed = seed
        self.epoch = 0
        self.worker_gpu = list(worker_gpu) if worker_gpu is not None else [None] * len(views)
        self.skip_log = Path(skip_log) if skip_log is not None else None
        self._logged: set[int] = set()  # this process's skips already in skip_log
        self.min_side = min_side  # JPEGs may decode at reduced scale down to this short side
        self.other_min_side = _pasted_min_side(self.views, min_side)

    def __len__(self) -> int:
        return len(self.images)

    def load(self, index: int, min_side: int | None = None) -> tuple[int, np.ndarray]:
        """``(index, pixels)`` of image ``index`` (JPEGs decoded down to ``min_side``, by
        default the data set's); with ``skip_log`` set, an undecodable image
        is recorded there (``path<TAB>reason`` lines, appended by every worker) and replaced
        by the next decodable one in id order, the same whichever worker meets it."""
        n = len(self.images)
        for k in range(n):
            i = (index + k) % n
            try:
                return i, load_rgb_array(self.images.paths[i], min_side=min_side or self.min_side)
            except ImageDecodeError as e:
                if self.skip_log is None:
                    raise
                self._record(i, e)
        raise ImageDecodeError(self.images.paths[index], "and no other training image decodes")

    def _record(self, i: int, error: ImageDecodeError) -> None:
        """Append image ``i`` to ``skip_log`` unless it is there (the training process reads
        the file, logs each entry once and enforces the cap)."""
        if i in self._logged:
            return
        self._logged.add(i)
        path = str(self.images.paths[i])
        listed = self.skip_log.read_text(encoding="utf-8") if self.skip_log.is_file() else ""
        if any(line.split("\t", 1)[0] == path for line in listed.splitlines()):
            return
        reason = " ".join(str(error).split())
        with open(self.skip_log, "a", encoding="utf-8") as f:  # one short line: atomic append
            f.write(f"{path}\t{reason}\n")

    def other_image(self, rng: np.random.Generator) -> np.ndarray:
        """Another training image, for the ops that paste one image onto/under another."""
        return self.load(int(rng.integers(len(self.images))), self.other_min_side)[1]

    def view(self, img: np.ndarray, index: int, v: int, epoch: int) -> tuple[torch.Tensor, int]:
        rng = np.random.default_rng(view_key(self.seed, epoch, index, v))
        pixels, gpu_seed = self.views[v](img, rng, self.other_image)
        # HWC -> CHW by numpy's copy: 2.6x faster than torch's permute + contiguous at 224 px
        out = torch.from_numpy(pixels.transpose(2, 0, 1).copy())
        gpu = self.worker_gpu[v]
        if gpu is not None:
            with torch.no_grad():
                x = gpu(out[None].float().div_(255.0), torch.tensor([gpu_seed]))
            out = x[0].mul_(255.0).round_().clamp_(0, 255).to(torch.uint8)
        return out, gpu_seed

    def __getitem__(self, key: int | tuple[int, int]):
        epoch, index = key if isinstance(key, tuple) else (self.epoch, key)
        index, img = self.load(index)
        (a, seed_a), (b, seed_b) = (self.view(img, index, v, epoch) for v in range(2))
        # the same tensor as torch.tensor([seed_a, seed_b]), about 40 us faster per item
        return a, b, torch.from_numpy(np.array([seed_a, seed_b], np.int64)), index


class EvalImageDataset(Dataset):
    """Item ``i``: ``(tensor, i, ok)``, the tensor made by ``preprocess``. A file that cannot
    be decoded raises :class:`ImageDecodeError`, or with ``on_error="skip"`` is logged and
    returned with ``ok=False`` and a zero tensor that the caller must drop."""

    def __init__(
        self,
        images: ImageSet,
        preprocess: Preprocess,
        on_error: str = "raise",
        max_pixels: int = DEFAULT_MAX_PIXELS,
    ):
        if on_error not in ("raise", "skip"):
            raise ValueError(f"on_error must be 'raise' or 'skip', got {on_error!r}")
        self.images = images
        self.preprocess = preprocess
        self.on_error = on_error
        self.max_pixels = max_pixels

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, index: int):
        try:
            img = load_rgb(self.images.paths[index], self.max_pixels)
        except ImageDecodeError as e:
            if self.on_error == "raise":
                raise
            log.warning("skipping %s: %s", self.images.ids[index], e)
            size = self.preprocess.size
            return torch.zeros(3, size, size), index, False
        return self.preprocess(img), index, True
