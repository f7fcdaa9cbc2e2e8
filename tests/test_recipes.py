"""Training features of the recipes: progressive stages, initial weights, growing ArcFace
classes, LR scaling, run media, Hydra multirun, W&B sweep files (W&B runs: test_wandb.py)."""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml
from helpers.config import CONF, tiny_overrides
from omegaconf import OmegaConf

from fisc.models.descriptor import ModelConfig
from fisc.models.weights import WeightsConfig
from fisc.train.config import ConfigError, OptimConfig, check_config, typed
from fisc.train.run import train

ROOT = CONF.parent
SWEEPS = sorted((ROOT / "experiments" / "sweeps").glob("*.yaml"))


def _state(ckpt, prefix):
    state = torch.load(ckpt, map_location="cpu", weights_only=True)["state_dict"]
    return {k[len(prefix) :]: v for k, v in state.items() if k.startswith(prefix)}


def test_progressive_stages_chain_and_resume(compose_cfg, tiny_minidisc, tmp_path):
    """Each stage trains at its size from the previous stage's last weights; ArcFace's class
    set grows with the stage's training images; a relaunch skips finished stages."""
    from fisc.train.checkpointing import load_initial_weights
    from fisc.train.module import CopyDetectionModule

    cfg = compose_cfg(
        *tiny_overrides(tiny_minidisc),
        "loss=arcface",
        f"run_dir={tmp_path}/run",
        "stages=[{train_size:32,epochs:1,train_images:12},{train_size:48,epochs:1,lr_scale:0.5}]",
    )
    result = train(cfg)
    s0, s1 = tmp_path / "run" / "stage0", tmp_path / "run" / "stage1"
    assert result.last_checkpoint == str(s1 / "checkpoints" / "last.ckpt")
    c0, c1 = (OmegaConf.load(s / "config.yaml") for s in (s0, s1))
    assert (c0.model.train_size, c1.model.train_size) == (32, 48)
    assert c0.init_from is None and c1.init_from == str(s0 / "checkpoints" / "last.ckpt")
    assert c0.data.max_train_images == 12 and c1.data.max_train_images is None
    # the class head grew from 12 to 24 classes; stage 1 started from stage 0's rows
    w0 = _state(c1.init_from, "loss.")["weight"]
    assert w0.shape[0] == 12 and _state(result.last_checkpoint, "loss.")["weight"].shape[0] == 24
    module = CopyDetectionModule(
        model=typed(c1, "model"),
        loss=OmegaConf.to_container(c1.loss),
        optim=typed(c1, "optim"),
        batch_size=8,
        num_classes=24,
        load_weights=False,
    )
    load_initial_weights(module, c1.init_from)
    assert torch.equal(module.loss.weight[:12], w0)
    for k, v in _state(c1.init_from, "model.").items():
        assert torch.equal(module.model.state_dict()[k], v), k
    # a relaunch finds both stages done and trains nothing
    launches = json.loads((s1 / "run_info.json").read_text())["launches"]
    assert train(cfg).last_checkpoint == result.last_checkpoint
    assert json.loads((s1 / "run_info.json").read_text())["launches"] == launches
    assert json.loads((tmp_path / "run" / "train_result.json").read_text())["run_dir"] == str(s1)


def test_lr_scaling_rules():
    from fisc.train.module import CopyDetectionModule

    def lr(rule, batch, scale=1.0):
        m = CopyDetectionModule(
            model=ModelConfig(name="resnet18", dims=8, weights=WeightsConfig(source="none")),
            loss={"_target_": "fisc.losses.infonce_koleo.InfoNCEKoLeoLoss"},
            optim=OptimConfig(name="sgd", lr=0.1, base_batch=256, lr_scaling=rule),
            batch_size=batch,
            lr_scale=scale,
        )
        return m.scaled_lr()

    assert lr("linear", 1024) == pytest.approx(0.4)
    assert lr("sqrt", 1024) == pytest.approx(0.2)
    assert lr("none", 1024) == pytest.approx(0.1)
    assert lr("linear", 128, scale=0.5) == pytest.approx(0.025)


@pytest.mark.parametrize(
    "override,message",
    [
        (["+loss.margin=0.5"], "does not use ['margin']"),
        (["optim._target_=torch.optim.Adamm"], "unknown optimizer"),
        (["optim.lr_scaling=cubic"], "lr_scaling"),
        (["stages=[{train_size:8,epochs:1}]"], "stages[0]"),
        (["stages=[{epochs:1}]"], "stages"),
        (["postprocess=pca_whiten"], "postprocess"),
        (["postprocess='l2,stretch5'"], "257-d descriptors > 256"),  # 256-d model + 1
        (["loss=arcface", "+loss.temperature=0.1"], "does not use ['temperature']"),
    ],
)
def test_recipe_config_errors(override, message, compose_cfg):
    with pytest.raises(ConfigError) as e:
        check_config(compose_cfg(*override))
    assert message in str(e.value)


def test_validation_reports_written_per_epoch(compose_cfg, tiny_minidisc, tmp_path):
    run_dir = tmp_path / "run"
    train(compose_cfg(*tiny_overrides(tiny_minidisc), f"run_dir={run_dir}", "trainer.max_epochs=2"))
    for epoch in (0, 1):
        out = run_dir / "val_reports" / f"epoch{epoch:03d}"
        assert (out / "pr_curve.png").is_file() and (out / "gallery.html").is_file()
        pooled = json.loads((out / "results.json").read_text())["pooled"]
        with open(next((run_dir / "csv").glob("version_*/metrics.csv"))) as f:
            metrics = list(csv.DictReader(f))
        logged = [float(r["val/micro_ap"]) for r in metrics if r.get("val/micro_ap")]
        assert pooled["micro_ap"] == pytest.approx(logged[epoch], abs=1e-6)


def test_hydra_multirun_offline(tiny_minidisc, tmp_path):
    """One run dir per job, named after the recipe and the job's overrides; the same sweep
    launched again resumes every job in its own dir."""
    env = {**os.environ, "WANDB_MODE": "disabled", "HF_HUB_OFFLINE": "1"}
    out = tmp_path / "out"
    cmd = [
        sys.executable,
        "train.py",
        "-m",
        f"paths.output_dir={out}",
        "loss.temperature=0.05,0.2",
        *tiny_overrides(tiny_minidisc),
        "logger.media=false",
        "hydra.sweep.dir=" + str(out / "sweep"),
    ]
    runs = []
    for launch in (1, 2):
        proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
        assert proc.returncode == 0, proc.stderr[-3000:]
        dirs = sorted(p.parent for p in (out / "runs").glob("*/config.yaml"))
        assert len(dirs) == 2, dirs
        temps = {OmegaConf.load(d / "config.yaml").loss.temperature: d for d in dirs}
        assert sorted(temps) == [0.05, 0.2]
        for d in dirs:
            assert OmegaConf.load(d / "config.yaml").run_dir == str(d)
            info = json.loads((d / "run_info.json").read_text())
            assert len(info["launches"]) == launch  # the relaunch resumed, in the same dir
            assert (d / "checkpoints" / "last.ckpt").is_file()
        runs.append(temps)
    assert runs[0] == runs[1]


@pytest.mark.parametrize("sweep", SWEEPS, ids=[p.stem for p in SWEEPS])
def test_sweep_files_name_real_config_keys(sweep, compose_cfg):
    spec = yaml.safe_load(sweep.read_text())
    assert spec["program"] == "train.py" and spec["metric"]["name"] == "val/micro_ap"
    command = spec["command"]
    assert command[:3] == ["${env}", "${interpreter}", "${program}"]
    assert command[-1] == "${args_no_hyphens}"  # key=value: Hydra override syntax
    fixed = command[3:-1]
    # an agent's runs must report online, or the sweep never sees val/micro_ap
    assert {"logger=wandb", "logger.mode=online"} <= set(fixed)
    base = compose_cfg(*fixed)
    for key, values in spec["parameters"].items():
        missing = object()
        assert OmegaConf.select(base, key, default=missing) is not missing, key
        samples = values.get("values") or [values.get("min"), values.get("max")]
        for value in samples:  # every value passes the typed config checks
            check_config(compose_cfg(*fixed, f"{key}={value}"))


def test_same_config_same_run_dir_resumes(compose_cfg, tiny_minidisc):
    """By default a run lives in runs/<name>-<config hash> with ckpt_path=auto: relaunching
    the same recipe (even with more epochs) resumes it; another recipe gets its own dir."""
    first = train(compose_cfg(*tiny_overrides(tiny_minidisc)))
    again = train(compose_cfg(*tiny_overrides(tiny_minidisc), "trainer.max_epochs=2"))
    other = train(compose_cfg(*tiny_overrides(tiny_minidisc), "seed=5"))
    assert first.run_dir == again.run_dir != other.run_dir
    assert Path(first.run_dir).name.startswith("mobilenetv2_100-")
    launches = json.loads(Path(first.run_dir, "run_info.json").read_text())["launches"]
    assert len(launches) == 2
    ckpt = torch.load(again.last_checkpoint, map_location="cpu", weights_only=True)
    assert ckpt["global_step"] == 2  # the second launch continued the first


def test_moved_run_dir_resumes_with_its_own_best_checkpoint(compose_cfg, tiny_minidisc, tmp_path):
    """A finished run folder copied elsewhere and relaunched: Lightning keeps only the old
    folder's best path; the result must name the best checkpoint in the new folder, and its
    score."""
    import shutil

    first = train(
        compose_cfg(*tiny_overrides(tiny_minidisc), f"run_dir={tmp_path}/a", "ckpt_path=auto")
    )
    assert first.best_checkpoint and first.best_score is not None
    shutil.move(tmp_path / "a", tmp_path / "b")
    again = train(
        compose_cfg(*tiny_overrides(tiny_minidisc), f"run_dir={tmp_path}/b", "ckpt_path=auto")
    )
    assert again.best_checkpoint == str(
        tmp_path / "b" / Path(first.best_checkpoint).relative_to(tmp_path / "a")
    )
    assert Path(again.best_checkpoint).is_file()
    assert again.best_score == pytest.approx(first.best_score)


def test_wandb_logger_under_a_sweep_agent(monkeypatch, tmp_path):
    """Under ``wandb agent`` (WANDB_SWEEP_ID set) the agent owns the run id, so fisc neither
    forces nor records one; an offline logger there is refused (the sweep would see nothing)."""
    from fisc.train.config import LoggerConfig
    from fisc.train.loggers import make_logger

    monkeypatch.delenv("WANDB_SWEEP_ID", raising=False)
    alone = make_logger(LoggerConfig(kind="wandb", mode="offline"), tmp_path / "a", "r")
    assert alone._wandb_init["id"] == (tmp_path / "a" / "wandb_run_id").read_text().strip()
    monkeypatch.setenv("WANDB_SWEEP_ID", "abc123")
    swept = make_logger(LoggerConfig(kind="wandb", mode="online"), tmp_path / "b", "r")
    assert swept._wandb_init.get("id") is None
    assert not (tmp_path / "b" / "wandb_run_id").exists()
    with pytest.raises(ValueError, match="logger.mode=online"):
        make_logger(LoggerConfig(kind="wandb", mode="offline"), tmp_path / "c", "r")


def test_warmup_then_cosine_matches_torch_schedulers():
    """Linear warm-up to the peak, then the same curve as torch's CosineAnnealingLR down to
    lr * min_lr_ratio at the last step."""
    from fisc.train.module import warmup_cosine

    base, warmup, total, ratio = 0.4, 5, 25, 0.01
    ours = [base * warmup_cosine(s, warmup, total, ratio) for s in range(total + 1)]
    assert ours[:warmup] == pytest.approx([base * (s + 1) / (warmup + 1) for s in range(warmup)])
    assert all(a < b for a, b in zip(ours[:warmup], ours[1 : warmup + 1], strict=True))
    opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=base)
    cosine = torch.optim.lr_scheduler.CosineAnnealingLR(
        opt, T_max=total - warmup, eta_min=base * ratio
    )
    reference = []
    for _ in range(total - warmup + 1):
        reference.append(opt.param_groups[0]["lr"])
        opt.step()
        cosine.step()
    assert ours[warmup:] == pytest.approx(reference, rel=1e-9, abs=1e-12)
    assert ours[warmup] == pytest.approx(base) and ours[-1] == pytest.approx(base * ratio)


def test_resume_refuses_changed_data(compose_cfg, tiny_minidisc, tmp_path):
    """A data set rebuilt or edited under the same path: the run does not silently continue
    on other images."""
    import shutil

    from PIL import Image

    root = tmp_path / "minidisc"
    shutil.copytree(tiny_minidisc, root)
    args = [*tiny_overrides(root), f"run_dir={tmp_path}/run", "ckpt_path=auto"]
    first = train(compose_cfg(*args))
    info = json.loads(Path(first.run_dir, "run_info.json").read_text())
    assert len(info["launches"][0]["data"]) == 64
    victim = sorted((root / "images" / "training").iterdir())[0]
    with Image.open(victim) as im:
        im.convert("RGB").transpose(Image.Transpose.FLIP_LEFT_RIGHT).save(victim, quality=30)
    with pytest.raises(ValueError, match="changed since its last launch"):
        train(compose_cfg(*args, "trainer.max_epochs=2"))
    # a fresh start in the same dir is allowed, and recorded with the new fingerprint
    fresh = train(compose_cfg(*args[:-1], "ckpt_path=null"))
    launches = json.loads(Path(fresh.run_dir, "run_info.json").read_text())["launches"]
    assert launches[-1]["data"] != launches[0]["data"]


def test_resume_refuses_a_changed_recipe_but_not_new_default_keys(
    compose_cfg, tiny_minidisc, tmp_path
):
    """A recipe change in an existing run dir is refused with the dotted key and both values;
    a run saved by an older fisc (fewer keys) still resumes when the new keys hold defaults."""
    args = [*tiny_overrides(tiny_minidisc), f"run_dir={tmp_path}/run", "ckpt_path=auto"]
    train(compose_cfg(*args))
    saved = tmp_path / "run" / "config.yaml"
    old = OmegaConf.load(saved)
    del old.data["max_train_images"], old.loss["mix_alpha"], old["stages"]
    saved.write_text(OmegaConf.to_yaml(old))
    train(compose_cfg(*args, "trainer.max_epochs=2"))
    launches = json.loads((tmp_path / "run" / "run_info.json").read_text())["launches"]
    assert len(launches) == 2
    with pytest.raises(ValueError, match=r"loss\.temperature: 0\.05 -> 0\.2") as err:
        train(compose_cfg(*args, "loss.temperature=0.2"))
    assert "max_epochs" not in str(err.value)  # trainer keys may change on resume
    # the resumed launch saved the full config: the new key is now on record
    with pytest.raises(ValueError, match=r"data\.max_train_images: None -> 10"):
        train(compose_cfg(*args, "data.max_train_images=10"))


def test_resume_with_an_incompatible_optimizer_state_says_what_to_do(
    compose_cfg, tiny_minidisc, tmp_path
):
    """A checkpoint whose optimizer was built differently (e.g. by an older fisc, before the
    no-decay parameter group) is refused with the way out, not torch's bare message."""
    args = [*tiny_overrides(tiny_minidisc), f"run_dir={tmp_path}/run", "ckpt_path=auto"]
    first = train(compose_cfg(*args))
    ckpt = torch.load(first.last_checkpoint, map_location="cpu", weights_only=False)
    opt = ckpt["optimizer_states"][0]
    assert len(opt["param_groups"]) == 2  # decay and no-decay
    merged = opt["param_groups"][0]["params"] + opt["param_groups"][1]["params"]
    opt["param_groups"] = [dict(opt["param_groups"][0], params=merged)]  # one group, as before
    torch.save(ckpt, first.last_checkpoint)
    with pytest.raises(ValueError, match="older fisc.*ckpt_path=null.*init_from="):
        train(compose_cfg(*args, "trainer.max_epochs=2"))
