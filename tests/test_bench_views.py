"""``benchmarks/bench_views.py --per-op``: every op's time in a view, the pasted images' decode
apart, and how much faster a view could get if ops cost nothing."""

from __future__ import annotations

import importlib.util
import math
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from fisc.augment.ops import base
from fisc.augment.pipeline import AugmentConfig
from fisc.data.datasets import TwoViewDataset
from fisc.data.disc21 import list_images

_BENCH = Path(__file__).resolve().parent.parent / "benchmarks"
sys.path.insert(0, str(_BENCH))  # bench_views imports its sibling scripts
try:
    _spec = importlib.util.spec_from_file_location("bench_views", _BENCH / "bench_views.py")
    bv = importlib.util.module_from_spec(_spec)
    _spec.loader.exec_module(bv)
finally:
    sys.path.remove(str(_BENCH))


def test_ceiling_is_the_time_left_inverted():
    assert bv.ceiling([]) == 1.0
    assert bv.ceiling([0.5]) == pytest.approx(2.0)
    assert bv.ceiling([0.25, 0.25, 0.3]) == pytest.approx(5.0)
    assert bv.ceiling([0.6, 0.4]) == math.inf


class _Clock:
    """Stands in for the ``time`` module in bench_views: time moves only when told to."""

    def __init__(self):
        self.now = 0.0

    def perf_counter(self) -> float:
        return self.now


class _Waiter(base.Op):
    """Not registered: its edit takes ``ms`` on the clock (and draws the other image when its
    class needs one)."""

    name = "waiter"
    params = {}
    clock = _Clock()
    ms = 0.0

    def apply(self, img, rng, other=None):
        self.clock.now += self.ms / 1000
        return img.copy()


def test_timed_ops_counts_each_op_and_keeps_the_pasted_decode_apart(monkeypatch):
    clock = _Clock()
    monkeypatch.setattr(bv, "time", clock)
    img = np.zeros((16, 16, 3), np.uint8)
    rng = np.random.default_rng(0)

    def slow_other(_rng):  # the other image's decode: 30 ms
        clock.now += 0.030
        return img

    op = _Waiter()
    op.clock, op.ms = clock, 10.0
    pasting = type("PastingWaiter", (_Waiter,), {"name": "paster", "needs_other": True})()
    pasting.clock, pasting.ms = clock, 5.0
    plain_edit = base.Op.edit
    with bv.timed_ops() as spent:
        for _ in range(3):
            op.edit(img, rng, slow_other)  # does not need the other image: never drawn
        pasting(img, rng, slow_other)  # p = 1: through __call__, as select-all stages call
        pasting.edit(img, rng, slow_other)
    assert base.Op.edit is plain_edit  # put back
    assert set(spent) == {"waiter", "paster", bv.PASTED}
    assert spent["waiter"] == [pytest.approx(0.030), 3]  # 3 x 10 ms, no decode in it
    assert spent["paster"] == [pytest.approx(0.010), 2]  # its own 2 x 5 ms, not the decodes
    assert spent[bv.PASTED] == [pytest.approx(0.060), 2]  # two images drawn, 30 ms each
    op.edit(img, rng)  # outside: no longer timed
    assert spent["waiter"][1] == 3


def test_timed_ops_puts_edit_back_when_an_op_fails():
    plain_edit = base.Op.edit
    op = _Waiter()
    op.apply = lambda *a, **k: (_ for _ in ()).throw(RuntimeError("broken op"))
    with pytest.raises(RuntimeError, match="broken op"), bv.timed_ops() as spent:
        op.edit(np.zeros((8, 8, 3), np.uint8), np.random.default_rng(0))
    assert base.Op.edit is plain_edit
    assert spent["waiter"][1] == 1  # the failed call still counted


def test_op_shares_on_a_pipeline_of_known_ops(tmp_path):
    """Every op with p = 1 in a select-all stage runs once a view; shares are of the pass."""
    rng = np.random.default_rng(1)
    for i in range(4):
        Image.fromarray(rng.integers(0, 256, (40, 48, 3), np.uint8)).save(tmp_path / f"{i}.jpg")
    cfg = AugmentConfig(
        name="t",
        views=[{"stages": [{"select": "all", "ops": {"hflip": {"p": 1.0}, "stripes": {"p": 1.0},
                                                      "paste_onto": {"p": 1.0}}}]}],
    )  # fmt: skip
    ds = TwoViewDataset(list_images(tmp_path), cfg.build(32), seed=0)
    got = bv.op_shares(ds, [0, 1, 2, 3, 0])
    ops = got["ops"]
    assert set(ops) == {"hflip", "stripes", "paste_onto", bv.PASTED}
    for name in ("hflip", "stripes", "paste_onto", bv.PASTED):  # paste_onto draws one image
        assert ops[name]["calls_per_view"] == 1.0
    assert ops["hflip"]["gpu_form"] and not ops["stripes"]["gpu_form"]
    assert not ops["paste_onto"]["gpu_form"]
    shares = [r["share"] for r in ops.values()]
    assert all(s > 0 for s in shares) and sum(shares) < 1
    assert shares == sorted(shares, reverse=True)  # largest first
    total = got["us_per_view"]
    assert sum(r["us_per_view"] for r in ops.values()) < total
    for r in ops.values():  # each op's share is its time over the pass's
        assert r["share"] == pytest.approx(r["us_per_view"] / total, abs=2e-3)
