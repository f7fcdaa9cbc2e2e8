"""Turning the ``data`` config into image sets: minidisc (built on demand), DISC21, a folder."""

from __future__ import annotations

import logging
from pathlib import Path

from fisc.challenge import load_ground_truth
from fisc.data.disc21 import DatasetLayoutError, Disc21, ImageSet, list_images
from fisc.train.config import ConfigError, DataConfig
from fisc.train.datamodule import ValidationSet

log = logging.getLogger(__name__)
KINDS = ("minidisc", "disc21", "folder")


def resolve_data(cfg: DataConfig) -> tuple[ImageSet, ValidationSet | None]:
    if cfg.kind not in KINDS:
        raise ConfigError(f"data.kind must be one of {KINDS}, got {cfg.kind!r}")
    if not 0 <= cfg.max_bad_fraction < 1:
        raise ConfigError(f"data.max_bad_fraction must be in [0, 1), got {cfg.max_bad_fraction}")
    root = Path(cfg.root)
    if cfg.kind == "minidisc" and cfg.build_if_missing:
        from fisc.data.minidisc import MinidiscSpec, build_minidisc

        try:
            spec = MinidiscSpec(**cfg.minidisc)
        except TypeError as e:
            raise ConfigError(f"data.minidisc: {e}") from e
        build_minidisc(root, spec)
    if cfg.kind == "folder":
        train = list_images(cfg.train_folder or root, recursive=True)
    elif cfg.train_folder:
        train = list_images(cfg.train_folder)
    else:
        train = Disc21(root).images("training")
    if cfg.max_train_images is not None:
        if cfg.max_train_images < 2:
            raise ConfigError(f"data.max_train_images must be >= 2, got {cfg.max_train_images}")
        train = train.subset(train.ids[: cfg.max_train_images])  # the first N by id
    validation = None
    if cfg.val_ground_truth:
        gt_path = root / cfg.val_ground_truth
        if not gt_path.is_file():
            raise DatasetLayoutError(f"validation ground truth {gt_path} does not exist")
        ground_truth = load_ground_truth(gt_path)
        data = Disc21(root)
        validation = ValidationSet(
            data.queries(ground_truth), data.images("reference"), ground_truth
        )
    log.info(
        "training images: %d; validation: %s",
        len(train),
        "none"
        if validation is None
        else f"{len(validation.queries)} queries x {len(validation.references)} references",
    )
    return train, validation
