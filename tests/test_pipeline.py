"""Augmentation pipelines: configs, reproducibility in DataLoader workers, GPU stage placement."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
import torch
from helpers.config import CONF
from omegaconf import OmegaConf
from torch.utils.data import DataLoader

from fisc.augment.gpu import build_gpu_pipeline
from fisc.augment.ops import OpConfigError
from fisc.augment.pipeline import AugmentConfig, shrink_to_short_side
from fisc.data.datasets import TwoViewDataset
from fisc.data.disc21 import Disc21
from fisc.train.config import ConfigError, check_config

PIPELINES = sorted(p.stem for p in (CONF / "augment").glob("*.yaml"))
REQUIRED = {"basic", "sscd_advanced", "isc1st", "disc_full"}


def load(name: str) -> AugmentConfig:
    return AugmentConfig(
        **OmegaConf.to_container(OmegaConf.load(CONF / "augment" / f"{name}.yaml"))
    )


def test_required_pipelines_exist():
    assert REQUIRED <= set(PIPELINES)


def test_disc_full_covers_every_op():
    from fisc.augment.ops import OPS

    named = {op for stage in load("disc_full").views[0]["stages"] for op in stage["ops"]}
    assert named == set(OPS)


def test_isc1st_views_are_asymmetric():
    views = load("isc1st").build(64)
    assert len(views) == 2
    names = [{op.name for s in v.view.stages for op in s.ops} for v in views]
    assert names[0] != names[1] and {"paste_onto", "overlay_image"} <= names[1]


@pytest.mark.parametrize("name", PIPELINES)
def test_pipeline_views_are_reproducible_and_sized(name, tiny_minidisc):
    images = Disc21(tiny_minidisc).images("training")
    cfg = load(name)
    ds = TwoViewDataset(
        images,
        cfg.build(48),
        seed=5,
        worker_gpu=[
            build_gpu_pipeline(v["gpu"]) if v.get("gpu") else None for v in (cfg.views * 2)[:2]
        ],
    )
    a, b, seeds, idx = ds[3]
    assert a.shape == b.shape == (3, 48, 48) and a.dtype == torch.uint8
    a2, b2, seeds2, _ = ds[3]
    assert torch.equal(a, a2) and torch.equal(b, b2) and torch.equal(seeds, seeds2)
    ds.epoch = 1
    a3, _, seeds3, _ = ds[3]
    assert not torch.equal(seeds, seeds3)  # a new epoch draws new edits
    assert seeds[0] != seeds[1]  # the two views differ in their randomness


def test_workers_give_the_same_batches(tiny_minidisc):
    images = Disc21(tiny_minidisc).images("training")
    cfg = load("sscd_advanced")
    gpu = [build_gpu_pipeline(cfg.views[0]["gpu"])] * 2
    ds = TwoViewDataset(images, cfg.build(32), seed=1, worker_gpu=gpu)
    batches = []
    for workers in (0, 2):
        loader = DataLoader(ds, batch_size=6, num_workers=workers, shuffle=False)
        batches.append([b[0] for b in loader])
    for x, y in zip(*batches, strict=True):
        assert torch.equal(x, y)


def test_gpu_stage_on_device_equals_stage_in_workers(tiny_minidisc):
    """The same GPU ops per sample in a worker, or on the batch after transfer: same views."""
    images = Disc21(tiny_minidisc).images("training")
    cfg = load("sscd_advanced")
    views = cfg.build(32)
    gpu = build_gpu_pipeline(cfg.views[0]["gpu"])
    in_worker = TwoViewDataset(images, views, seed=2, worker_gpu=[gpu, gpu])
    raw = TwoViewDataset(images, views, seed=2)
    batch_worker = [in_worker[i] for i in range(4)]
    a_raw = torch.stack([raw[i][0] for i in range(4)]).float() / 255
    seeds = torch.stack([raw[i][2] for i in range(4)])
    on_device = gpu(a_raw, seeds[:, 0])
    from_worker = torch.stack([b[0] for b in batch_worker]).float() / 255
    assert (on_device - from_worker).abs().max() <= 1 / 255 + 1e-6  # uint8 rounding only


def test_bad_pipeline_configs_fail_at_start_up(compose_cfg):
    with pytest.raises(ConfigError, match="nope"):
        check_config(compose_cfg("+augment.views.0.stages.0.ops.nope={p: 1.0}"))
    with pytest.raises(ConfigError, match="blur.sigma"):
        check_config(compose_cfg("augment.views.0.stages.0.ops.blur.sigma=[0.5, 99.0]"))
    with pytest.raises(OpConfigError, match="select"):
        AugmentConfig(views=[{"stages": [{"ops": {"jpeg": {}}, "select": [2, 5]}]}]).build(32)
    with pytest.raises(OpConfigError, match="gpu"):
        AugmentConfig(views=[{"stages": [], "gpu": {"warp_drive": {}}}]).build(32)


def test_galleries_show_every_op_and_view(tmp_path):
    from fisc.augment import gallery
    from fisc.augment.ops import OPS

    src = np.random.default_rng(0).integers(0, 255, (40, 60, 3), np.uint8)
    sheet = gallery.ops_gallery([src, src[::-1].copy()], levels=(0.3, 1.0))
    assert sheet.size == (120 + 6 * gallery.TILE, gallery.LABEL + 4 + len(OPS) * gallery.TILE)
    pipes = {"isc1st": load("isc1st"), "basic": load("basic")}
    sheet = gallery.pipeline_gallery(pipes, src, [src], size=32, samples=3)
    assert sheet.size[1] == gallery.LABEL + 4 + 4 * gallery.TILE  # 2 pipelines x 2 views
    gallery.save_png(sheet, tmp_path / "g.png")
    assert (tmp_path / "g.png").stat().st_size > 0


def test_excluded_ops_never_run():
    cfg = load("disc_full")
    cfg.exclude_ops = ["meme", "screenshot", "crop"]
    views = cfg.build(32)
    names = {op.name for v in views for s in v.view.stages for op in s.ops}
    assert not names & {"meme", "screenshot", "crop"} and "text" in names
    assert len(views[0].view.stages) == 1  # the crop-only stage is gone
    with pytest.raises(OpConfigError, match="exclude_ops"):
        AugmentConfig(views=cfg.views, exclude_ops=["nope"])


def test_work_side_shrinks_after_the_first_stage_only():
    """``work_side``: the first stage (the crop) edits the source's pixels, the later stages a
    copy whose shorter side is work_side x the view size (aspect kept, area interpolation)."""
    img = np.random.default_rng(1).integers(0, 255, (90, 120, 3), np.uint8)
    two_flips = {"stages": [{"ops": {"hflip": {"p": 1.0}}}, {"ops": {"hflip": {"p": 1.0}}}]}
    seen = []

    class Recorder:  # passes the image through the op it wraps, noting the shape it got
        def __init__(self, op):
            self.op, self.p, self.needs_other = op, op.p, False

        def __call__(self, x, rng, other):
            seen.append(x.shape[:2])
            return self.op(x, rng, other)

    view = AugmentConfig(views=[two_flips], work_side=1.5).build(32)[0]
    for stage in view.view.stages:
        stage.ops = [Recorder(op) for op in stage.ops]
    out, _ = view(img, np.random.default_rng(0))
    assert seen == [(90, 120), (48, 64)]  # 90 x 120 -> shorter side 1.5 x 32 = 48
    area = cv2.INTER_AREA
    expected = cv2.resize(
        cv2.resize(img, (64, 48), interpolation=area), (32, 32), interpolation=area
    )
    assert np.array_equal(out, expected)
    # tall images keep their aspect too; images already small enough are left alone
    assert shrink_to_short_side(img.transpose(1, 0, 2).copy(), 48).shape == (64, 48, 3)
    assert shrink_to_short_side(img, 90) is img

    plain, _ = AugmentConfig(views=[two_flips]).build(32)[0](img, np.random.default_rng(0))
    assert np.array_equal(plain, cv2.resize(img, (32, 32), interpolation=area))
    for bad in (0.5, "big"):
        with pytest.raises(OpConfigError, match="work_side"):
            AugmentConfig(views=[two_flips], work_side=bad)


class _Tag:
    """A stand-in op that leaves the image alone and notes in ``log`` that it ran."""

    needs_other = False

    def __init__(self, name, log, p=1.0):
        self.name, self.log, self.p = name, log, p

    def edit(self, img, rng, other=None):
        self.log[-1].append(self.name)
        return img

    def __call__(self, img, rng, other=None):
        if rng.random() < self.p:
            return self.edit(img, rng, other)
        return img


def _runs(stage, log, n=600):
    """The names of the ops each of ``n`` calls of ``stage`` ran, in order."""
    img = np.zeros((4, 4, 3), np.uint8)
    rng = np.random.default_rng(0)
    for _ in range(n):
        log.append([])
        assert stage(img, rng, None) is img
    return log


@pytest.mark.parametrize("lo,hi", [(1, 3), (0, 2), (2, 2), (3, 5)])
def test_chain_lengths_cover_min_to_max(lo, hi):
    """``select: [lo, hi]``: every chain length lo..hi occurs, none outside, distinct ops."""
    from fisc.augment.pipeline import Stage

    log = []
    stage = Stage([_Tag(c, log) for c in "abcdef"], (lo, hi), random_order=False)
    runs = _runs(stage, log)
    assert {len(r) for r in runs} == set(range(lo, hi + 1))
    assert all(len(set(r)) == len(r) for r in runs)


@pytest.mark.parametrize("select", [(2, 2), None])
def test_random_order_shuffles_and_fixed_order_does_not(select):
    """``order: random``: both orders of a 2-op stage occur (chain or every op); ``fixed``:
    always the configured order."""
    from fisc.augment.pipeline import Stage

    for random_order, expected in ((True, {"ab", "ba"}), (False, {"ab"})):
        log = []
        stage = Stage([_Tag("a", log), _Tag("b", log)], select, random_order)
        assert {"".join(r) for r in _runs(stage, log, n=200)} == expected
    # three ops in a random chain of 3: all 6 orders
    log = []
    stage = Stage([_Tag(c, log) for c in "abc"], (3, 3) if select else None, True)
    assert len({"".join(r) for r in _runs(stage, log)}) == 6
