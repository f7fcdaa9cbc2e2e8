"""The recipes study script (experiments/recipes/study.py): its table, its plot, and (slow) an
end-to-end run on the tiny minidisc that caches per-run scores and resumes without retraining."""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
from pathlib import Path

import pytest
from helpers.config import CONF, tiny_overrides
from omegaconf import OmegaConf
from PIL import Image

ROOT = CONF.parent
sys.path.insert(0, str(ROOT / "experiments" / "recipes"))
import study  # noqa: E402


def _row(recipe, seed, dev, p2, post=True):
    def split(v):
        out = {"raw": {"micro_ap": v, "recall_at_p90": v / 2}}
        if post:
            out["post"] = {"micro_ap": v + 0.1, "recall_at_p90": v / 3}
        return out

    return {
        "recipe": recipe,
        "seed": seed,
        "postprocess": "l2" if post else None,
        "dev": split(dev),
        "phase2": split(p2),
    }


ROWS = [
    _row("a", 0, 0.40, 0.50),
    _row("a", 1, 0.44, 0.56),
    _row("a", 2, 0.39, 0.53),
    _row("b", 0, 0.30, 0.20),
    _row("pHash", None, 0.25, 0.35, post=False),
]


def test_novel_split_columns_where_rows_have_it():
    novel = [dict(r, novel={"raw": {"micro_ap": 0.2 + i / 10, "recall_at_p90": 0.1}})
             for i, r in enumerate(ROWS[:2])]  # fmt: skip
    lines = study.table(novel + ROWS[2:]).splitlines()
    head = [c.strip() for c in lines[0].split("|")[1:-1]]
    assert head[-4:] == ["novel edits μAP", "novel edits μAP post", "novel edits R@P90",
                         "novel edits R@P90 post"]  # fmt: skip
    a = [c.strip() for c in lines[2].split("|")[1:-1]]
    assert a[-4] == f"{statistics.mean([0.2, 0.3]):.3f} ± {statistics.stdev([0.2, 0.3]):.3f}"
    b = [c.strip() for c in lines[3].split("|")[1:-1]]
    assert b[-4:] == ["–"] * 4  # rows scored before the split existed


def test_table_is_mean_and_sample_sd_over_seeds():
    lines = study.table(ROWS).splitlines()
    assert len(lines) == 2 + 3  # header, rule, one line per system
    a = [c.strip() for c in lines[2].split("|")[1:-1]]
    assert a[0] == "a" and a[2] == "0,1,2"
    dev = [0.40, 0.44, 0.39]
    assert a[3] == f"{statistics.mean(dev):.3f} ± {statistics.stdev(dev):.3f}"
    post = [v + 0.1 for v in [0.50, 0.56, 0.53]]
    assert a[8] == f"{statistics.mean(post):.3f} ± {statistics.stdev(post):.3f}"
    assert a[5] == f"{statistics.mean(dev) / 2:.3f} ± {statistics.stdev(dev) / 2:.3f}"  # R@P90
    b = [c.strip() for c in lines[3].split("|")[1:-1]]
    assert b[3] == "0.300"  # one seed: no spread
    ph = [c.strip() for c in lines[4].split("|")[1:-1]]
    assert ph[1] == "`none`" and ph[2] == "–" and ph[4] == "–" and ph[7] == "0.350"


def test_one_baseline_with_two_post_processings_is_two_systems():
    other = [dict(r, postprocess="pca4,l2") for r in ROWS[3:4]]
    lines = study.table(ROWS + other).splitlines()
    names = [line.split("|")[1].strip() for line in lines[2:]]
    assert names == ["a", "b + l2", "pHash", "b + pca4,l2"]


def test_plot_writes_a_png(tmp_path):
    study.plot(ROWS, tmp_path / "results.png")
    with Image.open(tmp_path / "results.png") as im:
        assert im.format == "PNG" and im.size[0] > 600
    assert [p.name for p in tmp_path.iterdir()] == ["results.png"]  # nothing temporary left


@pytest.mark.slow
def test_study_end_to_end_caches_and_resumes(tiny_minidisc, tmp_path):
    tiny = [*tiny_overrides(tiny_minidisc), "postprocess='pca_whiten8,l2'"]
    cmd = [
        sys.executable, "experiments/recipes/study.py", "--recipes", "demo", "--seeds", "0", "1",
        "--out", str(tmp_path / "study"), "--results", str(tmp_path / "results"),
        "--baseline-postprocess", "pca_whiten8,l2",
        "--baseline-postprocess", "pca8,l2,stretch5:2.5", "--", *tiny,
    ]  # fmt: skip
    env = {**os.environ, "WANDB_MODE": "disabled", "HF_HUB_OFFLINE": "1"}
    first = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=900)
    assert first.returncode == 0, first.stderr[-3000:]
    saved = OmegaConf.load(tmp_path / "study" / "demo" / "seed0" / "config.yaml")
    assert saved.data.root == str(tiny_minidisc) and saved.postprocess == "pca_whiten8,l2"
    rows = json.loads((tmp_path / "results" / "results.json").read_text())
    untrained = "untrained mobilenetv2_100"
    assert [(r["recipe"], r["seed"], r["postprocess"]) for r in rows] == [
        ("demo", 0, "pca_whiten8,l2"), ("demo", 1, "pca_whiten8,l2"),
        (untrained, 0, "pca_whiten8,l2"), (untrained, 1, "pca_whiten8,l2"),
        (untrained, 0, "pca8,l2,stretch5:2.5"), (untrained, 1, "pca8,l2,stretch5:2.5"),
        ("pHash (64-bit)", None, None),
    ]  # fmt: skip
    for r in rows[:6]:
        for split in ("dev", "phase2", "novel"):
            for kind in ("raw", "post"):
                assert 0.0 <= r[split][kind]["micro_ap"] <= 1.0
    assert (tmp_path / "results" / "results.png").is_file()
    ckpt = Path(json.loads((tmp_path / "study/demo/seed0/train_result.json").read_text())[
        "last_checkpoint"])  # fmt: skip
    stamp = ckpt.stat().st_mtime_ns
    # the same command again: every run is cached, nothing retrains, the same table comes out
    (tmp_path / "results" / "results.json").unlink()
    again = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=900)
    assert again.returncode == 0, again.stderr[-3000:]
    assert "== demo" not in again.stdout
    assert ckpt.stat().st_mtime_ns == stamp
    assert json.loads((tmp_path / "results" / "results.json").read_text()) == rows
