"""Configs compose, every experiment and every named backbone trains a step, and a tiny
train -> extract -> evaluate run agrees with the validation inside training."""

from __future__ import annotations

import csv
import json
from importlib import metadata
from pathlib import Path

import pytest
from helpers.config import CONF

from fisc.cli import main as fisc_main
from fisc.train.config import ConfigError, check_config
from fisc.train.run import train

EXPERIMENTS = sorted(p.stem for p in (CONF / "experiment").glob("*.yaml"))
SMALL = [
    "model.train_size=32",
    "model.eval_size=32",
    "batch_size=8",
    "eval_batch_size=16",
    "num_workers=0",
]


def tiny_data(root: Path) -> list[str]:
    return [f"data.root={root}", "data.build_if_missing=false"]


@pytest.mark.parametrize("experiment", EXPERIMENTS)
def test_every_experiment_runs_fast_dev_run(experiment, compose_cfg, tiny_minidisc):
    """Each recipe as written (loss, head, optimizer, augmentations, stages), at tiny scale:
    on CPU, without hub weights, with each progressive stage at 32 + 16k px. A GPU recipe runs
    under ``trainer=cpu`` with its GPU trainer's data settings (work side, decode scale)."""
    from omegaconf import OmegaConf

    plain = compose_cfg(f"experiment={experiment}")
    recipe = OmegaConf.to_container(plain, resolve=False)  # decode_min_side: ${model.train_size}
    cpu = [] if plain.trainer.accelerator == "cpu" else [
        "trainer=cpu", f"augment.work_side={recipe['augment']['work_side']}",
        f"data.decode_min_side={recipe['data']['decode_min_side']}"]  # fmt: skip
    offline = [] if plain.model.weights.source != "hub" else ["model.weights.source=none"]
    cfg = compose_cfg(
        f"experiment={experiment}",
        *cpu,
        *offline,
        *tiny_data(tiny_minidisc),
        *SMALL,
        "+trainer.fast_dev_run=1",
        "ckpt_path=null",
    )
    for k, stage in enumerate(cfg.stages):
        stage.train_size = 32 + 16 * k
    kept = OmegaConf.to_container(cfg, resolve=False)  # the recipe's data settings, kept
    assert kept["augment"]["work_side"] == recipe["augment"]["work_side"]
    assert kept["data"]["decode_min_side"] == recipe["data"]["decode_min_side"]
    OmegaConf.set_struct(cfg, False)
    if cfg.loss.name == "contrastive_xbm":
        cfg.loss.memory_warmup = 0
    result = train(cfg)
    stages = len(plain.stages)
    run_dirs = (
        [Path(result.run_dir)]
        if not stages
        else [Path(cfg.run_dir) / f"stage{k}" for k in range(stages)]
    )
    assert result.run_dir == str(run_dirs[-1])
    for run_dir in run_dirs:
        assert (run_dir / "config.yaml").is_file()
        info = json.loads((run_dir / "run_info.json").read_text())
        assert info["launches"][-1]["versions"]["torch"] == metadata.version("torch")


@pytest.mark.parametrize(
    "model,arch",
    [
        ("vit_b", "VisionTransformer"),
        ("vit_s", "VisionTransformer"),
        ("resnet50", "ResNet"),
        ("effnetv2_m", "EfficientNet"),
    ],
)
def test_named_backbones_build_and_train(model, arch, compose_cfg, tiny_minidisc):
    cfg = compose_cfg(
        f"model={model}",
        *tiny_data(tiny_minidisc),
        *SMALL,
        "model.weights.source=none",
        "+trainer.fast_dev_run=1",
    )
    groups = check_config(cfg)
    from fisc.models.descriptor import build_descriptor_model

    net = build_descriptor_model(groups["model"])
    assert type(net.backbone).__name__ == arch
    expected_name = {
        "vit_b": "vit_base_patch16_224",
        "vit_s": "vit_small_patch16_224",
        "resnet50": "resnet50",
        "effnetv2_m": "tf_efficientnetv2_m",
    }[model]
    assert net.backbone.pretrained_cfg["architecture"] == expected_name
    train(cfg)


def test_config_errors_are_clear(compose_cfg):
    with pytest.raises(ConfigError, match="dimz"):
        check_config(compose_cfg("+model.dimz=3"))
    with pytest.raises(ConfigError, match="gpu_stage"):
        check_config(compose_cfg("augment.gpu_stage=nowhere"))
    with pytest.raises(ConfigError, match="data.root"):
        check_config(compose_cfg("data=disc21"))
    with pytest.raises(ConfigError, match="batchsize"):
        check_config(compose_cfg("+batchsize=32"))
    with pytest.raises(ConfigError, match="max_epoch"):
        check_config(compose_cfg("+trainer.max_epoch=3"))


def test_missing_split_folder_is_named(tmp_path):
    from fisc.data.disc21 import DatasetLayoutError, Disc21

    (tmp_path / "images" / "reference").mkdir(parents=True)
    with pytest.raises(DatasetLayoutError, match="images/query"):
        Disc21(tmp_path).images("query")


def _val_map(run_dir: str) -> tuple[list[int], list[float]]:
    """(epoch, val/micro_ap) of every validation, over all launches (csv/version_N) of a run."""
    rows = []
    for path in sorted((Path(run_dir) / "csv").glob("version_*/metrics.csv")):
        with open(path) as f:
            rows += [r for r in csv.DictReader(f) if r.get("val/micro_ap")]
    return [int(r["epoch"]) for r in rows], [float(r["val/micro_ap"]) for r in rows]


def test_train_extract_evaluate_and_resume(compose_cfg, tiny_minidisc, tmp_path):
    overrides = [
        *tiny_data(tiny_minidisc),
        *SMALL,
        "run_dir=" + str(tmp_path / "run"),
        "ckpt_path=auto",
        "trainer.limit_train_batches=2",
    ]
    first = train(compose_cfg(*overrides, "trainer.max_epochs=1"))
    assert first.last_checkpoint and first.best_checkpoint
    # resume: same run dir, one more epoch, continues from last.ckpt
    second = train(compose_cfg(*overrides, "trainer.max_epochs=2"))
    epochs, val = _val_map(second.run_dir)
    assert epochs == [0, 1]  # the second launch ran epoch 1 only, after restoring epoch 0

    ckpt = second.last_checkpoint
    gt = tiny_minidisc / "dev_ground_truth.csv"
    q, r, out = tmp_path / "q.h5", tmp_path / "r.h5", tmp_path / "eval.json"
    queries, references = tiny_minidisc / "images/query", tiny_minidisc / "images/reference"
    assert (
        cli(
            "extract",
            "--checkpoint",
            ckpt,
            "--images",
            queries,
            "--split",
            "query",
            "--gt",
            gt,
            "--out",
            q,
            "--workers",
            0,
        )
        == 0
    )
    assert (
        cli("extract", "--checkpoint", ckpt, "--images", references, "--out", r, "--workers", 0)
        == 0
    )
    assert cli("evaluate", "--query", q, "--reference", r, "--gt", gt, "--json", out) == 0
    result = json.loads(out.read_text())
    assert result["n_queries"] == 12 and result["dims"] == 256
    # the offline path scores exactly what validation inside training scored
    assert result["micro_ap"] == pytest.approx(val[-1], abs=1e-6)
    # existing outputs are not overwritten silently
    assert cli("extract", "--checkpoint", ckpt, "--images", references, "--out", r) == 2


def cli(*args) -> int:
    """The ``fisc`` command with these arguments; its exit status."""
    return fisc_main([str(a) for a in args])


def test_last_checkpoint_every_n_optimizer_steps_by_default_100(compose_cfg, tmp_path):
    """The README's default: ``last.ckpt`` every 100 optimizer steps, mid-epoch; an epoch's
    last batch is left to the end-of-epoch save that follows it; ``null`` saves at epoch ends
    only. What run.py passes on is what the trainer is given (checked by the launch tests)."""
    from types import SimpleNamespace

    from fisc.train.checkpointing import LastCheckpoint

    every = compose_cfg().checkpoint_every_n_steps
    assert every == 100
    saved = []

    def batch_end(cb, step, per_epoch=250):
        done = (step - 1) % per_epoch + 1  # batches of this epoch, one step each
        progress = SimpleNamespace(current=SimpleNamespace(processed=done))
        loop = SimpleNamespace(epoch_loop=SimpleNamespace(batch_progress=progress))
        trainer = SimpleNamespace(
            global_step=step,
            num_training_batches=per_epoch,
            fit_loop=loop,
            save_checkpoint=lambda p: saved.append((step, p)),
        )
        cb.on_train_batch_end(trainer, None, None, None, done - 1)

    cb = LastCheckpoint(tmp_path, every)
    for step in range(1, 601):
        batch_end(cb, step)
    # 500 ends epoch 1 (250 batches an epoch): its save is the epoch end's
    assert saved == [(s, tmp_path / "last.ckpt") for s in (100, 200, 300, 400, 600)]
    saved.clear()
    for step in range(1, 601):
        batch_end(LastCheckpoint(tmp_path, None), step)
    assert saved == []


def test_last_checkpoint_is_the_final_state_and_a_finished_run_trains_nothing(
    compose_cfg, tiny_minidisc, tmp_path
):
    """Validation only at epoch 1 of 3: last.ckpt must still hold the final step (Lightning's
    save_last alone would keep epoch 1's), and relaunching the finished run changes nothing."""
    import torch

    cfg = compose_cfg(*tiny_data(tiny_minidisc), *SMALL, f"run_dir={tmp_path / 'run'}",
                      "ckpt_path=auto", "trainer.max_epochs=3", "trainer.limit_train_batches=2",
                      "trainer.check_val_every_n_epoch=2")  # fmt: skip
    first = train(cfg)
    last = torch.load(first.last_checkpoint, map_location="cpu", weights_only=True)
    assert (last["global_step"], last["epoch"]) == (6, 2)
    assert first.best_checkpoint and "epoch001" in first.best_checkpoint
    # the training launch's time is what the run reports; a relaunch that trains nothing keeps
    # it (a sentinel stands in for it, so that a rewrite shows)
    result_file = tmp_path / "run" / "train_result.json"
    recorded = json.loads(result_file.read_text())
    assert recorded["fit_minutes"] == first.fit_minutes and first.fit_minutes >= 0
    result_file.write_text(json.dumps({**recorded, "fit_minutes": 123.45}))
    again = train(cfg)
    after = torch.load(again.last_checkpoint, map_location="cpu", weights_only=True)
    assert after["global_step"] == 6
    assert all(torch.equal(after["state_dict"][k], v) for k, v in last["state_dict"].items())
    assert again.fit_minutes == 123.45
    assert json.loads(result_file.read_text())["fit_minutes"] == 123.45
    longer = train(compose_cfg(*tiny_data(tiny_minidisc), *SMALL, f"run_dir={tmp_path / 'run'}",
                               "ckpt_path=auto", "trainer.max_epochs=4",
                               "trainer.limit_train_batches=2",
                               "trainer.check_val_every_n_epoch=2"))  # fmt: skip
    assert longer.fit_minutes != 123.45  # it trained: its own time


def test_deterministic_reruns_are_bit_identical(compose_cfg, tiny_minidisc, tmp_path):
    """deterministic=true: two fresh runs of one config give the same weights, bit for bit,
    and the run records it; the process's torch settings are restored afterwards."""
    import torch

    before = (torch.get_num_threads(), torch.are_deterministic_algorithms_enabled())
    weights, infos = [], []
    for k in range(2):
        run = tmp_path / f"run{k}"
        cfg = compose_cfg(*tiny_data(tiny_minidisc), *SMALL, f"run_dir={run}", "ckpt_path=null",
                          "trainer.max_epochs=2", "trainer.limit_train_batches=2",
                          "deterministic=true", "threads=1")  # fmt: skip
        result = train(cfg)
        ckpt = torch.load(result.last_checkpoint, map_location="cpu", weights_only=True)
        weights.append(ckpt["state_dict"])
        infos.append(json.loads((run / "run_info.json").read_text())["launches"][-1])
    assert weights[0].keys() == weights[1].keys()
    assert all(torch.equal(weights[0][k], weights[1][k]) for k in weights[0])
    assert infos[0]["threads"] == 1 and infos[0]["deterministic"] is True
    assert (torch.get_num_threads(), torch.are_deterministic_algorithms_enabled()) == before
    with pytest.raises(ConfigError, match="threads"):
        check_config(compose_cfg("threads=0"))


def test_plain_folder_trains_without_validation(compose_cfg, tiny_minidisc, tmp_path,
                                                monkeypatch):  # fmt: skip
    import fisc.train.run as run

    kept = []
    monkeypatch.setattr(run, "keep_freed_memory", lambda: kept.append(True))
    nested = tmp_path / "photos" / "holiday"
    nested.mkdir(parents=True)
    for path in list((tiny_minidisc / "images" / "training").iterdir())[:10]:
        (nested / path.name).write_bytes(path.read_bytes())
    cfg = compose_cfg(
        "data=folder", f"data.root={tmp_path / 'photos'}", *SMALL, "+trainer.fast_dev_run=1"
    )
    train(cfg)
    assert kept == [True]  # training keeps freed memory (fisc/malloc.py)


def test_wandb_logger_config_builds(compose_cfg, tiny_minidisc):
    cfg = compose_cfg(
        "logger=wandb",
        "logger.mode=disabled",
        *tiny_data(tiny_minidisc),
        *SMALL,
        "+trainer.fast_dev_run=1",
    )
    train(cfg)


def test_cli_scores_a_submission_file(tmp_path, tiny_minidisc, capsys):
    import numpy as np

    from fisc.challenge import load_ground_truth
    from fisc.descriptors import Descriptors
    from fisc.descriptors.h5io import write_submission

    gt = load_ground_truth(tiny_minidisc / "dev_ground_truth.csv")
    refs = sorted(p.stem for p in (tiny_minidisc / "images" / "reference").iterdir())
    rng = np.random.default_rng(0)
    r_vec = rng.normal(size=(len(refs), 16)).astype(np.float32)
    q_ids = sorted(gt)
    # a perfect system: each matched query sits on its reference, the others far away
    q_vec = np.stack(
        [r_vec[refs.index(gt[q])] if gt[q] else 100 + rng.normal(size=16) for q in q_ids]
    ).astype(np.float32)
    sub = tmp_path / "sub.h5"
    write_submission(sub, Descriptors(np.array(q_ids), q_vec), Descriptors(np.array(refs), r_vec))
    assert (
        fisc_main(
            [
                "evaluate",
                "--submission",
                str(sub),
                "--gt",
                str(tiny_minidisc / "dev_ground_truth.csv"),
                "--json",
                str(tmp_path / "e.json"),
            ]
        )
        == 0
    )
    result = json.loads((tmp_path / "e.json").read_text())
    assert result["micro_ap"] == pytest.approx(1.0) and result["recall_at_1"] == 1.0
    assert "| sub |" in capsys.readouterr().out
    # wrong usage is a one-line error with exit status 2
    assert (
        fisc_main(
            [
                "evaluate",
                "--submission",
                str(sub),
                "--query",
                str(sub),
                "--gt",
                str(tiny_minidisc / "dev_ground_truth.csv"),
            ]
        )
        == 2
    )
    assert (
        fisc_main(
            [
                "evaluate",
                "--submission",
                str(tmp_path / "none.h5"),
                "--gt",
                str(tiny_minidisc / "dev_ground_truth.csv"),
            ]
        )
        == 2
    )


def test_partial_validation_scores_covered_images(compose_cfg, tiny_minidisc, tmp_path):
    cfg = compose_cfg(
        *tiny_data(tiny_minidisc),
        *SMALL,
        "eval_batch_size=4",
        "+trainer.limit_val_batches=2",
        "trainer.max_epochs=1",
        "trainer.limit_train_batches=1",
        f"run_dir={tmp_path / 'run'}",
    )
    train(cfg)  # 8 of 12 queries, 8 of 16 references: scored on those, not an error


def test_resume_refuses_a_changed_recipe(compose_cfg, tiny_minidisc, tmp_path):
    base = [
        *tiny_data(tiny_minidisc),
        *SMALL,
        f"run_dir={tmp_path / 'run'}",
        "ckpt_path=auto",
        "trainer.max_epochs=1",
        "trainer.limit_train_batches=1",
    ]
    train(compose_cfg(*base))
    with pytest.raises(ValueError, match="loss"):
        train(compose_cfg(*base, "loss.temperature=0.2"))
    launches = json.loads((tmp_path / "run" / "run_info.json").read_text())["launches"]
    assert len(launches) == 1  # the refused launch wrote nothing


def test_demo_reports_every_system_on_both_splits(tiny_minidisc, tmp_path):
    from fisc.demo import run_demo

    rows = run_demo(
        [
            *tiny_data(tiny_minidisc),
            *SMALL,
            f"run_dir={tmp_path / 'demo' / 'train'}",
            "trainer.max_epochs=1",
            "trainer.limit_train_batches=1",
            "postprocess='pca_whiten8,l2'",  # 24 training images: the demo's 128 dims won't fit
        ],
        progress=False,
    )
    saved = json.loads((tmp_path / "demo" / "results.json").read_text())
    assert set(saved) == {"dev", "phase2", "novel"}  # the tiny minidisc has a novel split
    for split, systems in saved.items():
        assert list(systems) == [
            "fisc trained (mobilenetv2_100, 256-d)",
            "fisc trained + pca_whiten8,l2 (8-d)",
            "before training (mobilenetv2_100, 256-d)",
            "pHash (imagehash, 64-bit)",
        ]
        assert systems["fisc trained + pca_whiten8,l2 (8-d)"]["dims"] == 8
        assert {r["protocol"] for r in systems.values()} == {"leaderboard"}
        assert {r["n_queries"] for r in systems.values()} == {12}
        assert rows[split][next(iter(systems))].micro_ap == next(iter(systems.values()))["micro_ap"]
    assert (tmp_path / "demo" / "descriptors" / "trained_reference.h5").is_file()
    report = (tmp_path / "demo" / "results.md").read_text()
    for split, systems in saved.items():  # the margin of the shipped (post-processed) system
        ours, phash = systems["fisc trained + pca_whiten8,l2 (8-d)"], systems[
            "pHash (imagehash, 64-bit)"]  # fmt: skip
        margin = ours["micro_ap"] - phash["micro_ap"]
        assert f"over pHash: μAP {margin:+.4f}" in report.split(f"minidisc {split} split")[1]


def test_conf_local_overrides_the_defaults_and_is_ignored_by_git(tmp_path):
    import shutil
    import subprocess

    from hydra import compose, initialize_config_dir

    conf = tmp_path / "conf"
    shutil.copytree(CONF, conf)
    (conf / "local").mkdir(exist_ok=True)
    (conf / "local" / "default.yaml").write_text("# @package _global_\nnum_workers: 7\n")
    with initialize_config_dir(str(conf), version_base="1.3"):
        assert compose("train").num_workers == 7
    repo = CONF.parent
    if (repo / ".git").exists():
        ignored = subprocess.run(["git", "check-ignore", "-q", "conf/local/default.yaml"],
                                 cwd=repo, check=False)  # fmt: skip
        assert ignored.returncode == 0, "conf/local/ must be git-ignored (machine settings)"


def _cv2_threads() -> int:
    import cv2

    return cv2.getNumThreads()


class _Cv2Threads:
    """A training set whose items report the OpenCV thread count where they are made."""

    def __len__(self):
        return 64

    def __getitem__(self, key):
        return _cv2_threads()


def _eval_images_reporting_threads():
    from fisc.data.datasets import EvalImageDataset

    class ThreadImages(EvalImageDataset):
        def __getitem__(self, i):
            pixels, index, ok = super().__getitem__(i)
            return pixels.new_full(pixels.shape, _cv2_threads()), index, ok

    return ThreadImages


def test_loader_workers_compute_on_one_opencv_thread(compose_cfg, tiny_minidisc, monkeypatch):
    """OpenCV starts a thread per core in each worker unless told otherwise: with N workers on N
    cores that is N x N threads. Training, validation and extraction loaders with workers pin
    it to one (set before the fork: setting it in a forked worker deadlocks OpenCV); without
    workers the process keeps its own setting."""
    import cv2
    import numpy as np
    import torch

    import fisc.descriptors.extract as extract_mod
    import fisc.train.datamodule as datamodule_mod
    from fisc.train.run import build_datamodule
    from fisc.train.sources import resolve_data

    images = _eval_images_reporting_threads()
    monkeypatch.setattr(datamodule_mod, "EvalImageDataset", images)
    monkeypatch.setattr(extract_mod, "EvalImageDataset", images)
    saved = cv2.getNumThreads()

    class FirstPixel(torch.nn.Module):  # extraction: the "descriptor" is a worker's count
        def forward(self, x):
            return x.flatten(1)[:, :2].float()

    try:
        for workers, expected in ((0, 3), (1, 1)):
            cv2.setNumThreads(3)
            # OpenCV's pool running in this process before the workers fork
            cv2.resize(np.zeros((1500, 1500, 3), np.uint8), (700, 700))
            cfg = compose_cfg(*tiny_data(tiny_minidisc), f"num_workers={workers}", "batch_size=8")
            groups = check_config(cfg)
            train_images, validation = resolve_data(groups["data"])
            dm = build_datamodule(cfg, groups, train_images, validation)
            dm.train_set = _Cv2Threads()
            assert next(iter(dm.train_dataloader())).tolist() == [expected] * 8
            pixels, _, _ = next(iter(dm.val_dataloader()[0]))
            assert set(pixels.unique().tolist()) == {expected}
            cv2.setNumThreads(3)
            seen = [v for _, vec in extract_mod.iter_descriptors(
                FirstPixel(), validation.references, dm.preprocess, num_workers=workers,
                progress=False) for v in vec[:, 0]]  # fmt: skip
            assert seen and set(seen) == {float(expected)}
    finally:
        cv2.setNumThreads(saved)


def test_runs_training_now_are_not_named_unfinished_but_a_killed_one_is(compose_cfg, tmp_path):
    """A sweep's parallel jobs share a run_name: a launch must not call the others, whose
    locks are held, unfinished runs. A run whose launch was killed (its lock file still names
    a PID that is gone) and one whose launch ended (the file emptied) are named; a holder on
    another host cannot be checked and counts as training."""
    import json
    import os
    import socket
    import subprocess
    import sys

    from fisc.train.lock import RunLock, live_holder
    from fisc.train.records import write_run_info
    from fisc.train.resume import note_unfinished_siblings

    base = ["trainer.max_epochs=1"]

    def left_behind(value: float) -> Path:
        cfg = compose_cfg(*base, f"loss.temperature={value}")
        d = Path(cfg.run_dir)
        (d / "checkpoints").mkdir(parents=True)
        write_run_info(d, cfg)
        (d / "checkpoints" / "last.ckpt").write_bytes(b"")
        return d

    running, killed, ended, remote = (left_behind(v) for v in (0.2, 0.3, 0.4, 0.5))
    cfg = compose_cfg(*base)
    me = Path(cfg.run_dir)
    gone = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                          capture_output=True, text=True, check=True)  # fmt: skip
    holder = {"host": socket.gethostname(), "pid": int(gone.stdout), "started": "then"}
    (killed / ".lock").write_text(json.dumps(holder))
    with RunLock(ended):
        pass
    (remote / ".lock").write_text(json.dumps({**holder, "host": "elsewhere"}))  # a gone PID here
    with RunLock(running):
        assert live_holder(running)["pid"] == os.getpid()
        assert live_holder(killed) is None and live_holder(ended) is None
        assert live_holder(remote)["host"] == "elsewhere"
        named = note_unfinished_siblings(me, cfg, most=10)
        assert sorted(named) == sorted([killed, ended])
    # once its launch has let go, the run that was training is an unfinished run like any
    assert sorted(note_unfinished_siblings(me, cfg, most=10)) == sorted([running, killed, ended])


def test_a_fresh_run_names_the_unfinished_runs_its_recipe_change_left_behind(
    compose_cfg, tiny_minidisc, tmp_path, caplog
):
    """The default run dir is named after the recipe's hash, so a relaunch with a changed
    recipe starts a new run: the launch says which unfinished runs of the same name it left
    (newest first, with the keys that differ); finished runs, explicit run dirs and
    ``ckpt_path=null`` launches are not noted."""
    import logging
    import os

    from fisc.train.records import write_run_info
    from fisc.train.resume import note_unfinished_siblings

    base = [*tiny_data(tiny_minidisc), *SMALL, "trainer.max_epochs=1",
            "trainer.limit_train_batches=1", "logger.media=false"]  # fmt: skip
    runs = Path(compose_cfg(*base).run_dir).parent

    def left_behind(overrides, finished=False, age=0.0):
        cfg = compose_cfg(*base, *overrides)
        d = Path(cfg.run_dir)
        (d / "checkpoints").mkdir(parents=True)
        write_run_info(d, cfg)  # its config.yaml, as a launch writes it
        (d / "checkpoints" / "last.ckpt").write_bytes(b"")
        os.utime(d / "checkpoints" / "last.ckpt", (1e9 + age, 1e9 + age))
        if finished:
            (d / "train_result.json").write_text("{}")
        return d

    old = left_behind(["loss.temperature=0.2"], age=1)
    older = left_behind(["loss.temperature=0.3", "optim.lr=0.01"], age=0)
    left_behind(["loss.temperature=0.4"], finished=True, age=2)
    other_name = left_behind(["run_name=other"], age=4)
    cfg = compose_cfg(*base)
    assert note_unfinished_siblings(Path(cfg.run_dir), cfg) == [old, older]
    assert note_unfinished_siblings(Path(cfg.run_dir), cfg, most=1) == [old]
    assert note_unfinished_siblings(runs / "mine", cfg) == []  # an explicit run dir
    assert other_name.parent == runs  # set-up: beside them, so the name filter is what left it out

    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="fisc.train.resume"):
        train(compose_cfg(*base, "ckpt_path=null"))
    assert "unfinished run" not in caplog.text
    with caplog.at_level(logging.WARNING, logger="fisc.train.resume"):
        train(compose_cfg(*base, "loss.temperature=0.07"))
    notes = [r.getMessage() for r in caplog.records if "unfinished run" in r.getMessage()]
    assert len(notes) == 2 and str(old) in notes[0] and str(older) in notes[1]
    assert "loss.temperature: 0.2 -> 0.07" in notes[0]
    assert "loss.temperature: 0.3 -> 0.07" in notes[1] and "optim.lr: 0.01 -> " in notes[1]
    (old / "config.yaml").write_text("model: [unclosed\n")  # another run's broken file
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="fisc.train.resume"):
        train(compose_cfg(*base, "loss.temperature=0.08"))  # launches all the same
    assert "config.yaml is unreadable" in caplog.text
