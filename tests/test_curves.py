"""Learning curves (experiments/curves/curves.py): checkpoints kept every N epochs, each scored
once on every split, baselines as flat lines, a table and a plot; a rerun scores from cache."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
from helpers.config import REPO, tiny_overrides
from PIL import Image


@pytest.mark.slow  # three subprocess runs of the study, ~60 s on 2 cores (make test-all)
def test_curves_train_keep_score_and_resume(tiny_minidisc, tmp_path):
    from fisc.challenge import load_ground_truth
    from fisc.data.disc21 import Disc21
    from fisc.evaluation import evaluate
    from fisc.inference import DescriptorPipeline, subset

    cmd = [sys.executable, "experiments/curves/curves.py", "--recipes", "demo", "--epochs", "2",
           "--every", "1", "--out", str(tmp_path / "out"), "--results", str(tmp_path / "res"),
           "--", *tiny_overrides(tiny_minidisc), "trainer.limit_train_batches=2",
           "postprocess='pca_whiten8,l2'"]  # fmt: skip
    env = {**os.environ, "WANDB_MODE": "disabled", "HF_HUB_OFFLINE": "1"}
    first = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
    assert first.returncode == 0, first.stderr[-3000:]
    saved = json.loads((tmp_path / "res" / "results.json").read_text())
    points = saved["curves"][0]["points"]
    assert [p["step"] for p in points] == [2, 4]  # 2 steps per epoch, one kept per epoch
    for p in points:
        for split in ("dev", "phase2", "novel"):
            assert set(p[split]) == {"raw", "post"}
    assert set(saved["baselines"]) == {"untrained mobilenetv2_100", "pHash (64-bit)"}
    # an independent score of the step-4 checkpoint, raw, dev split
    history = tmp_path / "out" / "demo" / "seed0" / "checkpoints" / "history"
    ckpt = next(history.glob("*step000004.ckpt"))
    gt = load_ground_truth(tiny_minidisc / "dev_ground_truth.csv")
    data = Disc21(tiny_minidisc)
    pipe = DescriptorPipeline.from_checkpoint(ckpt)
    q = pipe.raw(data.queries(gt), batch_size=64)[0]
    r = pipe.raw(data.images("reference"), batch_size=64)[0]
    assert abs(evaluate(subset(q, gt), r, gt).micro_ap - points[1]["dev"]["raw"]["micro_ap"]) < 1e-6
    with Image.open(tmp_path / "res" / "curves.png") as im:
        assert im.format == "PNG" and im.size[0] > 1000
    table = (tmp_path / "res" / "results.md").read_text().splitlines()
    assert len(table) == 2 + 2 + 2  # header, rule, two points, two baselines
    # again: nothing retrains, every score comes from its cache, the same results
    stamp = ckpt.stat().st_mtime_ns
    (tmp_path / "res" / "results.json").unlink()
    again = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
    assert again.returncode == 0, again.stderr[-3000:]
    assert ckpt.stat().st_mtime_ns == stamp and "Epoch 0" not in again.stderr
    again_saved = json.loads((tmp_path / "res" / "results.json").read_text())
    for run in (*saved["curves"], *again_saved["curves"]):  # the time of the last launch only
        run.pop("fit_minutes")
    assert again_saved == saved
    # a cached run trained with another recipe is refused, not scored as this one's curve
    changed = [*cmd[:-1], "postprocess='pca_whiten4,l2'", "loss.temperature=0.2"]
    other = subprocess.run(changed, cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
    assert other.returncode != 0 and "loss.temperature" in other.stderr, other.stderr[-2000:]


@pytest.mark.slow  # a subprocess training, ~30 s on 2 cores (make test-all)
def test_gpu_quality_script_runs_tiny_on_cpu(tmp_path):
    """experiments/gpu/quality.py --tiny: builds its minidisc, trains the best recipe with a time
    cap, scores every split next to pHash, and records the run (what the GPU run will do)."""
    from fisc.baselines.phash import phash_descriptors
    from fisc.challenge import load_ground_truth
    from fisc.data.disc21 import Disc21
    from fisc.evaluation import evaluate

    cmd = [sys.executable, "experiments/gpu/quality.py", "--tiny", "--data-dir",
           str(tmp_path / "data"), "--out", str(tmp_path / "out"), "--results",
           str(tmp_path / "res")]  # fmt: skip
    env = {**os.environ, "WANDB_MODE": "disabled", "HF_HUB_OFFLINE": "1"}
    done = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    (saved,) = [json.loads(p.read_text()) for p in (tmp_path / "res").glob("*.json")]
    assert saved["steps"] == 2 and "max_time" in saved["command"]
    assert set(saved["scores"]) >= {"dev", "phase2", "novel"}
    assert set(saved["scores"]["phase2"]) == {"raw", "post"}
    root = tmp_path / "data" / "minidisctiny64"
    gt = load_ground_truth(root / "novel_ground_truth.csv")
    data = Disc21(root)
    q = phash_descriptors(data.queries(gt), progress=False)
    r = phash_descriptors(data.images("reference"), progress=False)
    expected = evaluate(q, r, gt).micro_ap
    assert abs(saved["pHash (64-bit)"]["novel"]["raw"]["micro_ap"] - expected) < 1e-9


def test_every_ablation_variant_is_a_valid_config():
    sys.path.insert(0, str(REPO / "experiments" / "ablations"))
    import ablate
    from hydra import compose, initialize_config_dir

    from fisc.train.config import check_config

    def steps(overrides: list[str]) -> int:
        with initialize_config_dir(str(REPO / "conf"), version_base="1.3"):
            cfg = compose("train", overrides=["experiment=demo", *overrides])
        check_config(cfg)  # raises ConfigError on a bad key or value
        per_epoch = cfg.trainer.limit_train_batches
        per_epoch = per_epoch if isinstance(per_epoch, int) else ablate.EPOCH
        return cfg.trainer.max_epochs * per_epoch

    demo_steps = steps([])
    for name, (_, overrides) in ablate.VARIANTS.items():
        if name in ablate.FULL_DEMO:  # today's demo recipe (no BASE) at the demo's own budget
            assert steps(overrides) == demo_steps, name
        else:
            assert steps([*ablate.BASE, *overrides]) <= ablate.BUDGET_STEPS, name  # no extra


def test_an_ablation_run_of_another_length_is_refused_not_reused(tmp_path):
    """A cached run trained for other epochs than the variant now asks (the `demo` variant
    after its epochs changed) stops the study instead of being reported as this recipe."""
    sys.path.insert(0, str(REPO / "experiments" / "ablations"))
    import ablate

    run_dir = tmp_path / "demo" / "seed0"
    run_dir.mkdir(parents=True)
    (run_dir / "config.yaml").write_text("trainer:\n  max_epochs: 3\n")
    (run_dir / "scores.json").write_text('{"variant": "demo"}')
    with pytest.raises(SystemExit, match="trained for 3 epochs"):
        ablate.run("demo", 0, [], tmp_path)
    epochs = ablate.study._compose("demo", []).trainer.max_epochs
    (run_dir / "config.yaml").write_text(f"trainer:\n  max_epochs: {epochs}\n")
    assert ablate.run("demo", 0, [], tmp_path) == {"variant": "demo"}  # same length: cached


def _curves_module():
    sys.path.insert(0, str(REPO / "experiments" / "curves"))
    import curves

    return curves


def test_curves_summary_gives_mean_sd_and_margins_over_seeds():
    curves = _curves_module()

    def point(step, value):
        raw = {"micro_ap": value - 0.1, "recall_at_p90": 0.2}
        return {
            "step": step,
            "dev": {"raw": raw, "post": {"micro_ap": value, "recall_at_p90": 0.5}},
        }

    runs = {("long", 0): [point(10, 0.1), point(20, 0.70)], ("long", 1): [point(20, 0.74)],
            ("long", 2): [point(20, 0.72)]}  # fmt: skip
    ph = {"dev": {"raw": {"micro_ap": 0.40, "recall_at_p90": 0.4}}}

    def untrained(s):
        post = {"micro_ap": 0.45 + 0.01 * s, "recall_at_p90": 0.3}
        return {"dev": {"raw": {"micro_ap": 0.1, "recall_at_p90": 0.1}, "post": post}}

    base = {s: {"pHash (64-bit)": ph, "untrained m": untrained(s)} for s in (0, 1, 2)}
    text = curves.summary(runs, base, {("long", 0): 40.0, ("long", 1): 41.5, ("long", 2): None})
    lines = {tuple(c.strip() for c in line.split("|")[1:5]): line for line in text.splitlines()
             if line.startswith("| dev")}  # fmt: skip
    # last points 0.70, 0.74, 0.72 (post): mean 0.72, sample sd 0.02; pHash 0.40 (no spread):
    # margin +0.32 = 16 spreads; untrained 0.45/0.46/0.47: mean 0.46, sd 0.01, margin +0.26 = 13
    ph = lines[("dev", "μAP", "0.720 ± 0.020", "pHash (64-bit)")]
    assert "0.400 ± 0.000 | +0.320 | 16.0 |" in ph
    un = lines[("dev", "μAP", "0.720 ± 0.020", "untrained m")]
    assert "0.460 ± 0.010 | +0.260 | 13.0 |" in un
    r = lines[("dev", "R@P90", "0.500 ± 0.000", "pHash (64-bit)")]
    assert "+0.100 | 0.0" not in r and r.rstrip().endswith("| – |")  # no spread at all: no ratio
    assert "training 40.0 / 41.5 min" in text and "seeds 0, 1, 2, step 20" in text


def test_curves_baselines_cache_is_kept_only_for_the_same_data_backbone_and_postprocessing(
    tmp_path, monkeypatch
):
    curves = _curves_module()
    cfg = curves.study._compose("long", [])
    key = {"data": str(cfg.data.root), "model": curves.check_config(cfg)["model"].name,
           "postprocess": cfg.postprocess}  # fmt: skip
    rows = {"pHash (64-bit)": {"dev": {"raw": {"micro_ap": 0.4}}}}
    data = (None, {"dev": {}}, None, None, None)
    (tmp_path / "baselines-seed1.json").write_text(json.dumps({"key": key, "rows": rows}))

    def recompute(*a, **k):
        raise RuntimeError("recomputed")

    monkeypatch.setattr(curves, "untrained_pipeline", recompute)
    assert curves.baselines(cfg, data, 1, tmp_path) == rows  # same key: from the cache
    for stale_key in ({"postprocess": "pca_whiten128,l2"}, {"data": "data/minidisc640"}):
        stale = {"key": {**key, **stale_key}, "rows": rows}
        (tmp_path / "baselines-seed1.json").write_text(json.dumps(stale))
        with pytest.raises(RuntimeError, match="recomputed"):
            curves.baselines(cfg, data, 1, tmp_path)
    (tmp_path / "baselines-seed1.json").write_text(json.dumps(rows))  # an old file without key
    with pytest.raises(RuntimeError, match="recomputed"):
        curves.baselines(cfg, data, 1, tmp_path)
