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
from fisc.augment.ops import OpConfigError, build_op
from fisc.augment.ops.geometric import resize_to
from fisc.augment.pipeline import AugmentConfig, Stage, View, ViewPipeline, shrink_to_short_side
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


@pytest.mark.parametrize(
    "work_sides,min_side,expected",
    [
        ((1.0, 1.0), 96, 48),  # both views at 48 px: pasted images decode down to 48
        ((1.0, 3.0), 96, 96),  # the larger working side (144) is above the data's 96
        ((1.0, None), 96, 96),  # one view at full resolution: as the data set decodes
        ((1.0, 1.0), None, None),  # decode_min_side 0: everything in full
        ((1.0, 1.0, "first"), 96, 96),  # pasting in the first stage (before the shrink)
    ],
)
def test_pasted_images_decode_at_the_working_size(
    tiny_minidisc, monkeypatch, work_sides, min_side, expected
):
    """With ``augment.work_side`` set for both views, the other images that paste ops draw
    decode down to the working size; the item's own image as the data set says."""
    import fisc.data.datasets as datasets

    images = Disc21(tiny_minidisc).images("training")
    paste = Stage([build_op("paste_onto", {"p": 1.0})], None, False)
    crop = Stage([build_op("crop", {"p": 1.0})], None, False)
    first = work_sides[-1] == "first"  # the paste in the first stage, else in the second
    stages = [paste] if first else [crop, paste]
    views = [ViewPipeline(View(stages), 48, w) for w in work_sides[:2]]
    ds = TwoViewDataset(images, views, seed=3, min_side=min_side)
    asked = []

    def recording(path, min_side=None):
        asked.append(min_side)
        return np.full((60, 80, 3), 128, np.uint8)

    monkeypatch.setattr(datasets, "load_rgb_array", recording)
    ds[0]
    assert asked == [min_side, expected, expected]  # the item, then one paste per view


def test_an_item_is_its_views_pixels_channel_first(tiny_minidisc):
    """Item ``i``'s tensors are the views' ``H x W x RGB`` pixels as ``RGB x H x W``: each
    view made here from the decoded image with its key ``(seed, epoch, i, v)``."""
    from fisc.data.decode import load_rgb_array

    images = Disc21(tiny_minidisc).images("training")
    views = load("disc_full").build(40)
    ds = TwoViewDataset(images, views, seed=7)
    ds.epoch = 2
    for i in (0, 5):
        got = ds[i]
        for v in range(2):
            rng = np.random.default_rng([7, 2, i, v])
            pixels, gpu_seed = views[v](load_rgb_array(images.paths[i]), rng, ds.other_image)
            assert pixels.shape == (40, 40, 3)
            expected = torch.tensor([[[pixels[y, x, c] for x in range(40)] for y in range(40)]
                                     for c in range(3)], dtype=torch.uint8)  # fmt: skip
            assert torch.equal(got[v], expected), (i, v)
            assert int(got[2][v]) == gpu_seed


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
    copy whose shorter side is work_side x the view size (aspect kept; a shrink by under 2x is
    bilinear)."""
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
    area, linear = cv2.INTER_AREA, cv2.INTER_LINEAR
    # 1.875x: bilinear; the final resize to the view resamples as the shrink does: 64 x 48
    # -> 32 x 32 is under 2x on the short side, so bilinear (area with work_side unset)
    expected = cv2.resize(cv2.resize(img, (64, 48), interpolation=linear), (32, 32))
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


def test_a_chain_follows_weights_changed_after_it_was_built():
    """The stage keeps its draw probabilities between calls; an op's ``p`` changed after
    the stage was built counts from the next call on."""
    from fisc.augment.pipeline import Stage

    log = []
    a, b = _Tag("a", log, p=1.0), _Tag("b", log, p=0.0)
    stage = Stage([a, b], (1, 1), random_order=False)
    assert {tuple(r) for r in _runs(stage, log, n=30)} == {("a",)}
    a.p, b.p = 0.0, 2.0
    log.clear()
    assert {tuple(r) for r in _runs(stage, log, n=30)} == {("b",)}
    a.p = 2.0  # now equal weights: both occur
    log.clear()
    assert {tuple(r) for r in _runs(stage, log, n=60)} == {("a",), ("b",)}


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


# ------------------------------------------------------------ configs: what each key builds


def _three_ops(**stage):
    return {"ops": {"hflip": {"p": 1.0}, "vflip": {"p": 1.0}, "jpeg": {"p": 1.0}}, **stage}


def _stage(**stage):
    return AugmentConfig(views=[{"stages": [_three_ops(**stage)]}]).build(32)[0].view.stages[0]


def test_stage_config_sets_the_chain_range_and_the_order():
    assert _stage().select is None and _stage(select="all").select is None
    assert _stage(select=[1, 3]).select == (1, 3)  # max = every op of the stage
    assert _stage(select=[2, 2]).select == (2, 2)  # min = max: a fixed chain length
    assert _stage(select=(0, 1)).select == (0, 1)
    assert _stage().random_order is False and _stage(order="fixed").random_order is False
    assert _stage(order="random").random_order is True
    assert _stage(select=[1, 2], order="random").random_order is True
    # a chain draws only among ops of non-zero weight; it is refused when there are none
    stage = _stage(select=[1, 1], ops={"hflip": {"p": 0.0}, "vflip": {"p": 1.0}})
    assert [op.p for op in stage.ops] == [0.0, 1.0]


def test_config_errors_name_the_view_the_stage_and_the_key():
    """Every config error says where it is (``augment.views[v].stages[s]``) and what is
    wrong; the second view's second stage is the bad one here."""
    import re

    def error(bad_stage=None, bad_view=None, **cfg):
        good = {"stages": [_three_ops()]}
        view = bad_view if bad_view is not None else {"stages": [_three_ops(), bad_stage]}
        with pytest.raises(OpConfigError) as e:
            AugmentConfig(views=[good, view], **cfg).build(32)
        return str(e.value)

    where = "augment.views[1].stages[1]"
    assert error(_three_ops(opz=1)) == f"{where}: unknown key(s) ['opz'] (ops, select, order)"
    assert error({"ops": {}}) == f"{where}: a stage needs at least one op"
    assert error({"select": "all"}) == f"{where}: a stage needs at least one op"
    assert error(_three_ops(select=[1, 2, 3])) == (
        f"{where}.select must be 'all' or [min, max], got [1, 2, 3]"
    )
    assert error(_three_ops(select=[3, 2])) == f"{where}.select=[3, 2] needs 0 <= min <= max <= 3"
    assert error(_three_ops(select=[1, 4])) == f"{where}.select=[1, 4] needs 0 <= min <= max <= 3"
    zero = {"ops": {"hflip": {"p": 0.0}, "vflip": {"p": 0.0}}, "select": [1, 1]}
    assert error(zero) == f"{where}: chain weights (p) are all zero"
    assert error(_three_ops(order="shuffled")) == (
        f"{where}.order must be 'fixed' or 'random', got 'shuffled'"
    )
    assert error({"ops": {"nope": {}}}).startswith(f"{where}: unknown CPU op 'nope'")
    assert error(bad_view={"stages": [], "stage": []}) == (
        "augment.views[1]: unknown key(s) ['stage'] (stages, gpu)"
    )
    assert error(bad_view={"stages": [], "gpu": {"warp_drive": {}}}).startswith(
        "augment.views[1].gpu: "
    )
    with pytest.raises(OpConfigError, match=re.escape("augment.views: at least one view")):
        AugmentConfig(views=[]).build(32)
    with pytest.raises(OpConfigError, match=re.escape("augment.gpu_stage must be one of")):
        AugmentConfig(views=[], gpu_stage="cpu")


def test_work_side_accepts_any_number_from_one():
    for side in (1, 1.0, 2, 1.25):
        assert AugmentConfig(views=[], work_side=side).work_side == side
    for bad in (0.99, 0, -2, "2", [2]):
        with pytest.raises(OpConfigError, match="work_side must be null or a number >= 1"):
            AugmentConfig(views=[], work_side=bad)


def test_a_view_keeps_its_gpu_ops_and_a_single_view_serves_both():
    gpu = {"blur": {"p": 0.5}}
    views = AugmentConfig(views=[{"stages": [], "gpu": gpu}]).build(32)
    assert len(views) == 2 and views[0] is views[1]
    assert views[0].view.gpu == gpu
    two = AugmentConfig(views=[{"stages": []}, {"stages": [], "gpu": gpu}]).build(32)
    assert len(two) == 2 and two[0].view.gpu == {} and two[1].view.gpu == gpu


def test_gpu_only_op_in_a_cpu_stage_is_named_as_such_and_cpu_configs_do_not_load_torch(
    tmp_path,
):
    """A GPU-only op in a CPU stage: the error says it has a GPU implementation, while a
    CPU-only config never imports the GPU side (torch): checked in a fresh interpreter, since
    this test module has imported it."""
    import os
    import subprocess
    import sys
    from pathlib import Path

    import fisc

    with pytest.raises(OpConfigError, match="unknown CPU op 'affine': it has only a GPU"):
        AugmentConfig(views=[{"stages": [{"ops": {"affine": {}}}]}]).build(32)
    code = (
        "import sys\n"
        "from fisc.augment.pipeline import AugmentConfig\n"
        "AugmentConfig(views=[{'stages': [{'ops': {'hflip': {}, 'jpeg': {}}}]}]).build(32)\n"
        "print('torch' in sys.modules, 'fisc.augment.gpu' in sys.modules)\n"
    )
    root = Path(fisc.__file__).resolve().parent.parent
    env = {**os.environ, "PYTHONPATH": str(root)}
    # cwd: the tree fisc was loaded from (under mutmut, its copy, where mutmut finds its config)
    out = subprocess.run(
        [sys.executable, "-c", code], env=env, cwd=root, capture_output=True, text=True
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["False", "False"]


# --------------------------------------------------------------------- exclude_ops, chains


def test_exclude_ops_shortens_chains_and_drops_emptied_stages():
    """Ops left out of a stage shorten its chain range to the ops left (min and max each
    capped); an every-op stage stays one; a stage left without ops is dropped."""
    view = {
        "stages": [
            _three_ops(select=[1, 3]),
            {"ops": {"vflip": {}, "blur": {}}},
            {"ops": {"jpeg": {}}, "select": [1, 1]},
            _three_ops(select=[3, 3], order="random"),
            _three_ops(select=[0, 1]),
        ]
    }
    stages = AugmentConfig(views=[view], exclude_ops=["jpeg", "hflip"]).build(32)[0].view.stages
    assert [[op.name for op in s.ops] for s in stages] == [["vflip"], ["vflip", "blur"]] + [
        ["vflip"]
    ] * 2
    assert [s.select for s in stages] == [(1, 1), None, (1, 1), (0, 1)]
    assert [s.random_order for s in stages] == [False, False, True, False]
    stages = AugmentConfig(views=[view], exclude_ops=["jpeg"]).build(32)[0].view.stages
    assert [s.select for s in stages] == [(1, 2), None, (2, 2), (0, 1)]
    # nothing excluded: the config as written
    stages = AugmentConfig(views=[view]).build(32)[0].view.stages
    assert [s.select for s in stages] == [(1, 3), None, (1, 1), (3, 3), (0, 1)]


def test_chain_draws_ops_by_weight_and_never_one_of_weight_zero():
    from fisc.augment.pipeline import Stage

    log = []
    stage = Stage([_Tag("a", log, 0.9), _Tag("b", log, 0.1), _Tag("c", log, 0.0)], (1, 1), False)
    runs = _runs(stage, log, n=1000)
    counts = {c: sum(r == [c] for r in runs) for c in "abc"}
    # binomial(1000, 0.9): mean 900, sd 9.5
    assert counts["c"] == 0 and 860 < counts["a"] < 940 and counts["a"] + counts["b"] == 1000
    # a chain of 2 with one op of non-zero weight: that op alone
    log = []
    stage = Stage([_Tag("a", log, 0.0), _Tag("b", log, 0.5)], (2, 2), True)
    assert all(r == ["b"] for r in _runs(stage, log, n=50))


def test_distinct_draws_are_numpys_weighted_choice_without_replacement():
    """``draw_distinct`` returns what ``Generator.choice(n, k, replace=False, p=p)`` returns
    from the same generator state, in the same order, and leaves the generator where that call
    leaves it: the chains' views stay what they were. Weights with zeros, very uneven ones
    (repeats within a round, so more rounds: 2,761 of these 4,280 draws need several), every k
    from 0 to the positive count."""
    from fisc.augment.pipeline import draw_distinct

    gen = np.random.default_rng(7)
    cases = [np.full(31, 1.0), np.arange(1.0, 9.0), np.array([50.0, 1, 0, 1, 0, 0.5, 1e-3])]
    cases += [gen.random(12) * (gen.random(12) > 0.3) for _ in range(6)]
    for w in cases:
        p = w / w.sum()
        for k in range(int(np.count_nonzero(p)) + 1):  # k=0: select [0, n] allows it
            for seed in range(40):
                mine, ref = np.random.default_rng([seed, k]), np.random.default_rng([seed, k])
                got = draw_distinct(mine, p, k)
                want = ref.choice(len(p), size=k, replace=False, p=p)
                assert got == want.tolist(), (w, k, seed)
                assert mine.random() == ref.random()  # the same draws were consumed
    p = np.array([0.5, 0.5, 0.0])
    assert draw_distinct(np.random.default_rng(0), p, 2) in ([0, 1], [1, 0])
    with pytest.raises(ValueError, match="2 weights"):
        draw_distinct(np.random.default_rng(0), p, 3)


def test_every_op_stage_hands_the_other_image_provider_to_its_ops():
    from fisc.augment.pipeline import Stage

    stage = Stage.from_config({"ops": {"paste_onto": {"p": 1.0}}}, "s")
    img = np.random.default_rng(0).integers(0, 255, (40, 40, 3), np.uint8)
    drawn = []

    def other(rng):
        drawn.append(1)
        return np.full((50, 60, 3), 200, np.uint8)

    out = stage(img, np.random.default_rng(0), other)
    assert drawn == [1] and out.dtype == np.uint8 and out.ndim == 3


# ------------------------------------------------------------ the view's final resize, seed


def test_final_resize_is_area_only_when_both_sides_shrink():
    """With ``work_side`` unset, the view ends ``size x size`` by area interpolation when the
    shorter side is larger than ``size`` (both sides shrink), bilinear otherwise; an image
    already ``size x size`` is returned as it is, not copied."""
    view = AugmentConfig(views=[{"stages": []}]).build(32)[0]
    rng = np.random.default_rng(3)
    for shape, interpolation in (
        ((20, 20, 3), cv2.INTER_LINEAR),  # upscaled
        ((32, 48, 3), cv2.INTER_LINEAR),  # shorter side = size: only the longer one shrinks
        ((24, 48, 3), cv2.INTER_LINEAR),
        ((33, 48, 3), cv2.INTER_AREA),
        ((48, 40, 3), cv2.INTER_AREA),
    ):
        img = rng.integers(0, 255, shape, np.uint8)
        out, _ = view(img, np.random.default_rng(0))
        linear = cv2.resize(img, (32, 32), interpolation=cv2.INTER_LINEAR)
        area = cv2.resize(img, (32, 32), interpolation=cv2.INTER_AREA)
        assert not np.array_equal(linear, area)  # the input tells the two apart
        expected = linear if interpolation == cv2.INTER_LINEAR else area
        assert np.array_equal(out, expected), shape
    img = rng.integers(0, 255, (32, 32, 3), np.uint8)
    out, _ = view(img, np.random.default_rng(0))
    assert out is img


def test_gpu_seed_is_the_views_last_draw_uniform_in_0_to_2_pow_62():
    """With no stage the generator makes one draw: the GPU seed, ``integers(0, 2**62)``
    (non-negative, an int64 for the seed tensor)."""
    view = AugmentConfig(views=[{"stages": []}]).build(8)[0]
    img = np.zeros((8, 8, 3), np.uint8)
    seeds = [view(img, np.random.default_rng(k))[1] for k in range(300)]
    assert seeds == [int(np.random.default_rng(k).integers(0, 2**62)) for k in range(300)]
    assert all(isinstance(s, int) and 0 <= s < 2**62 for s in seeds)
    assert max(seeds) > 2**61  # the whole range is used


def test_shrink_keeps_the_aspect_down_to_one_pixel():
    """Shorter side -> ``side``, the longer one scaled by the same factor and rounded (at
    least 1 px)."""
    for (h, w), side, expected in (
        ((10, 10), 1, (1, 1)),
        ((11, 10), 1, (1, 1)),  # 1.1 rounds to 1
        ((10, 11), 1, (1, 1)),
        ((10, 25), 2, (2, 5)),
        ((25, 10), 2, (5, 2)),
        ((10, 26), 4, (4, 10)),  # 10.4
        ((27, 10), 4, (11, 4)),  # 10.8
        ((30, 30), 7, (7, 7)),
    ):
        img = np.random.default_rng(h * w).integers(0, 255, (h, w, 3), np.uint8)
        out = shrink_to_short_side(img, side)
        assert out.shape == (*expected, 3), ((h, w), side)
        assert np.array_equal(out, resize_to(img, *expected[::-1])), ((h, w), side)


def test_view_keys_seed_the_generator_numpy_makes_of_the_list():
    """The uint32 words fisc hands to ``default_rng`` give the generator of the plain list
    ``[seed, epoch, index, view]``, whose parts may exceed 32 bits (a large seed)."""
    from fisc.data.datasets import view_key

    for key in ((7, 2, 5, 1), (0, 0, 0, 0), (2**32 - 1, 3, 999_999, 1), (2**40 + 3, 1, 2, 0)):
        got = np.random.default_rng(view_key(*key)).random(6)
        assert np.array_equal(got, np.random.default_rng(list(key)).random(6)), key
    assert isinstance(view_key(2**32, 0, 0, 0), list)
