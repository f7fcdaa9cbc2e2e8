"""W&B runs, checked offline on what wandb writes to disk (wandb 0.31 offline writes no
config.yaml or wandb-summary.json: everything is in the run's ``.wandb`` transaction log, read
here record by record): the whole config, best-value summaries, one run id across resumes and
a new one for a fresh start, checkpoints as artifacts, ``wandb.watch``."""

from __future__ import annotations

import json
import struct
import time
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from helpers.config import tiny_overrides

from fisc.train.config import ConfigError, LoggerConfig, check_config
from fisc.train.loggers import make_logger
from fisc.train.run import train
from fisc.train.wandb_run import BEST_KEY, WANDB_ID_FILE, BestScoreSummary, wandb_run_id


def wandb_records(path: Path) -> list:
    """The protobuf records of a ``.wandb`` file: a 7-byte header (``:W&B``, magic, version),
    then LevelDB-log chunks in 32 KiB blocks (crc32c, length, type; full / first / middle /
    last), as wandb's own datastore writes them."""
    from wandb.proto import wandb_internal_pb2 as pb

    data = path.read_bytes()
    assert data[:4] == b":W&B"
    records, pending, at, block = [], b"", 7, 32768
    while at + 7 <= len(data):
        if block - at % block < 7:  # too little room left for a chunk header: padding
            at += block - at % block
            continue
        _crc, size, kind = struct.unpack("<IHB", data[at : at + 7])
        if kind == 0:
            break
        pending += data[at + 7 : at + 7 + size]
        at += 7 + size
        if kind in (1, 4):  # full, or last of several
            record = pb.Record()
            record.ParseFromString(pending)
            records.append(record)
            pending = b""
    return records


def _key(item) -> str:
    return item.key or "/".join(item.nested_key)


class OfflineRun:
    """What one launch wrote: its run record, config, history rows, summary, metrics."""

    def __init__(self, folder: Path, wait_s: float = 10.0):
        self.folder = folder
        # W&B's service process writes the log; once, on a clean-clone CI run, the file held
        # no run record yet when read right after wandb.finish(): read again for a while (a
        # log that never gets its run record still fails below)
        deadline = time.monotonic() + wait_s
        while True:
            records = wandb_records(next(folder.glob("run-*.wandb")))
            if any(r.WhichOneof("record_type") == "run" for r in records):
                break
            if time.monotonic() > deadline:
                break
            time.sleep(0.2)
        by = lambda kind: [r for r in records if r.WhichOneof("record_type") == kind]  # noqa: E731
        (run,) = by("run")
        self.run = run.run
        self.config = {i.key: json.loads(i.value_json) for i in run.run.config.update}
        for r in by("config"):
            self.config.update({_key(i): json.loads(i.value_json) for i in r.config.update})
        self.history = [
            {_key(i): json.loads(i.value_json) for i in r.history.item} for r in by("history")
        ]
        self.summary: dict = {}
        for r in by("summary"):
            self.summary.update({_key(i): json.loads(i.value_json) for i in r.summary.update})
        self.metrics = {r.metric.name: r.metric for r in by("metric") if r.metric.name}
        self.artifacts = [r.artifact for r in by("artifact")]

    def values(self, key: str) -> list:
        return [row[key] for row in self.history if key in row]


def offline_runs(run_dir: Path) -> list[OfflineRun]:
    """Every launch's offline run folder, oldest first (the folder names start with the time)."""
    return [OfflineRun(p) for p in sorted((run_dir / "wandb").glob("offline-run-*"))]


@pytest.fixture
def wandb_offline(monkeypatch, tmp_path):
    """W&B offline, with its settings, cache and artifact staging under tmp_path."""
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")
    for var in ("WANDB_DIR", "WANDB_DATA_DIR", "WANDB_CACHE_DIR", "WANDB_CONFIG_DIR"):
        monkeypatch.setenv(var, str(tmp_path / "wandb_home" / var.lower()))
    monkeypatch.delenv("WANDB_SWEEP_ID", raising=False)


def test_logger_switches_reach_the_logger(compose_cfg, tmp_path, wandb_offline):
    # the defaults of conf/logger/wandb.yaml: no artifacts, no watch
    groups = check_config(compose_cfg("logger=wandb"))
    assert (groups["logger"].log_model, groups["logger"].watch) == (False, None)
    groups = check_config(
        compose_cfg("logger=wandb", "logger.log_model=all", "logger.watch=parameters")
    )
    assert (groups["logger"].log_model, groups["logger"].watch) == ("all", "parameters")
    logger = make_logger(groups["logger"], tmp_path / "run", "r", run_config={"seed": 3})
    assert logger._log_model == "all"  # what Lightning's after_save_checkpoint acts on
    assert logger._wandb_init["mode"] == "offline"  # W&B's own offline mode ...
    assert logger._offline is False  # ... not Lightning's, which refuses log_model
    assert logger.run_config == {"seed": 3}
    for wrong in ("logger.log_model=best", "logger.watch=grads", "logger.watch_log_freq=0"):
        with pytest.raises(ConfigError, match=wrong.split("=")[0].split(".")[1]):
            check_config(compose_cfg("logger=wandb", wrong))


def test_watch_passes_its_settings(tmp_path, wandb_offline, monkeypatch):
    from fisc.train.wandb_run import watch

    logger = make_logger(LoggerConfig(kind="wandb"), tmp_path / "run", "r")
    calls = []
    monkeypatch.setattr(logger, "watch", lambda model, **kw: calls.append((model, kw)))
    module = SimpleNamespace(model=torch.nn.Linear(2, 2), loss=torch.nn.Linear(2, 1))
    watch(logger, module, None, 10)
    assert calls == []  # watch: null is off
    watch(logger, module, "gradients", 7)
    kw = {"log": "gradients", "log_freq": 7, "log_graph": False}
    assert calls == [([module.model, module.loss], kw)]


def test_run_id_kept_per_run_dir_and_renewed_for_a_fresh_start(tmp_path):
    first = wandb_run_id(tmp_path / "a")
    assert first == (tmp_path / "a" / WANDB_ID_FILE).read_text().strip()
    assert wandb_run_id(tmp_path / "a") == first  # a relaunch that resumes
    assert wandb_run_id(tmp_path / "b") != first  # another run dir
    fresh = wandb_run_id(tmp_path / "a", fresh=True)  # training from scratch in the same dir
    assert fresh != first and (tmp_path / "a" / WANDB_ID_FILE).read_text().strip() == fresh


def test_best_score_summary_spans_launches():
    """The best of the restored best score and this validation's; nothing during the sanity
    check or on other ranks."""
    summary: dict = {}
    logger = SimpleNamespace(experiment=SimpleNamespace(summary=summary))
    checkpoint = SimpleNamespace(best_model_score=torch.tensor(0.7))
    callback = BestScoreSummary(logger, checkpoint)

    def trainer(score, zero=True, sanity=False):
        return SimpleNamespace(
            is_global_zero=zero,
            sanity_checking=sanity,
            callback_metrics={"val/micro_ap": torch.tensor(score)},
        )

    callback.on_validation_end(trainer(0.9, sanity=True), None)
    callback.on_validation_end(trainer(0.9, zero=False), None)
    assert summary == {}
    callback.on_train_start(trainer(0.0), None)  # a resumed launch: the earlier best
    assert summary[BEST_KEY] == pytest.approx(0.7)
    callback.on_validation_end(trainer(0.5), None)  # worse than an earlier launch's best
    assert summary[BEST_KEY] == pytest.approx(0.7)
    callback.on_validation_end(trainer(0.8), None)  # better: before ModelCheckpoint sees it
    assert summary[BEST_KEY] == pytest.approx(0.8)
    checkpoint.best_model_score = None  # the first validation of a run
    callback.on_validation_end(trainer(0.25), None)
    assert summary[BEST_KEY] == pytest.approx(0.25)


def test_offline_run_holds_config_best_summaries_and_one_id(compose_cfg, tmp_path, wandb_offline):
    """Without training: the logger as train() builds it, fed what Lightning feeds it."""
    import wandb
    from omegaconf import OmegaConf

    cfg = compose_cfg("logger=wandb", "seed=3", "data.root=/data/disc")
    groups = check_config(cfg)
    config = OmegaConf.to_container(cfg, resolve=True)
    run_dir = tmp_path / "run"

    def launch(scores: dict[int, float]) -> None:
        logger = make_logger(groups["logger"], run_dir, "r", run_config=config)
        logger.log_hyperparams({"num_classes": 24, "lr_scale": 0.5})  # the module's
        for step, score in scores.items():
            logger.log_metrics({"val/micro_ap": score, "val/recall_at_1": score / 2}, step=step)
        wandb.finish()

    launch({1: 0.5, 2: 0.3})  # the best first: the summary must not keep the last
    run_id = (run_dir / WANDB_ID_FILE).read_text().strip()
    (first,) = offline_runs(run_dir)
    assert first.run.run_id == run_id and first.folder.name.endswith(run_id)
    assert first.run.resume  # sync appends to the W&B run of that id, if there is one
    # 1. every group of the resolved config, and the module's hyperparameters under "module"
    logged = {k: v for k, v in first.config.items() if k not in ("_wandb", "module")}
    assert logged == config
    assert {"data", "augment", "model", "loss", "optim", "trainer", "logger", "seed"} <= set(logged)
    assert logged["seed"] == 3 and logged["data"]["root"] == "/data/disc"
    assert logged["trainer"]["accelerator"] == "cpu" and logged["augment"]["name"] == "basic"
    assert first.config["module"] == {"num_classes": 24, "lr_scale": 0.5}
    # 3. validation summaries keep the maximum
    for key in ("val/micro_ap", "val/recall_at_p90", "val/recall_at_1"):
        assert first.metrics[key].summary.max and not first.metrics[key].summary.last, key
    assert first.summary["val/micro_ap"] == {"max": 0.5}
    assert first.summary["val/recall_at_1"] == {"max": 0.25}
    # 4. a relaunch of the run dir: the same id, another offline folder. W&B names the folder
    # by the launch's second and the run id, so a relaunch within the same second (only a test
    # is that fast; seen once on a fast CI run) would write into the first one's folder
    time.sleep(1.01 - time.time() % 1)
    launch({3: 0.4})
    first, second = offline_runs(run_dir)
    assert second.run.run_id == run_id and second.folder.name.endswith(run_id)
    assert second.values("trainer/global_step") == [3]


@pytest.mark.slow
def test_training_offline_resume_artifacts_watch_and_fresh_start(
    compose_cfg, tiny_minidisc, tmp_path, wandb_offline
):
    """Three tiny trainings in one run dir: the first with log_model=all and watch=all, the
    second resumes it with one more epoch, the third starts afresh (ckpt_path=null)."""
    run_dir = tmp_path / "run"
    args = [
        *tiny_overrides(tiny_minidisc),
        "logger=wandb",
        "logger.mode=offline",
        "ckpt_path=auto",
        f"run_dir={run_dir}",
        "data.max_train_images=8",  # one batch of 8 is a whole epoch
    ]
    train(compose_cfg(*args, "logger.log_model=all", "logger.watch=all", "logger.watch_log_freq=1"))
    run_id = (run_dir / WANDB_ID_FILE).read_text().strip()
    (first,) = offline_runs(run_dir)
    assert first.run.run_id == run_id
    assert first.config["data"]["max_train_images"] == 8
    assert first.config["trainer"]["max_epochs"] == 1
    assert first.config["module"]["num_classes"] == 8  # one class per training image
    assert first.summary["val/micro_ap"] == {"max": first.values("val/micro_ap")[-1]}
    assert first.summary[BEST_KEY] == pytest.approx(first.values("val/micro_ap")[-1])
    # log_model=all: the best checkpoint as a model artifact; watch=all: both histograms
    assert [(a.type, a.name) for a in first.artifacts] == [("model", f"model-{run_id}")]
    keys = {k for row in first.history for k in row}
    assert any(k.startswith("gradients/") for k in keys), sorted(keys)
    assert any(k.startswith("parameters/") for k in keys), sorted(keys)

    # relaunched with one more epoch: resumes last.ckpt and continues the same W&B run, with
    # Lightning's trainer/global_step (every metric's x axis) going on where it stopped
    done = torch.load(run_dir / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)
    result = train(compose_cfg(*args, "trainer.max_epochs=2"))
    first, second = offline_runs(run_dir)
    assert second.run.run_id == run_id and second.folder.name.endswith(run_id)
    assert done["global_step"] == 1 and max(first.values("trainer/global_step")) <= 1
    steps = second.values("trainer/global_step")
    assert steps and min(steps) >= 1, steps
    both = first.values("val/micro_ap") + second.values("val/micro_ap")
    assert len(both) == 2 and result.best_score == pytest.approx(max(both))
    assert second.summary[BEST_KEY] == pytest.approx(max(both))  # the best of both launches
    assert second.config["trainer"]["max_epochs"] == 2
    for run in (first, second):  # W&B media: augmentation samples, PR curve, retrieval gallery
        media = {p.name.rsplit("_", 2)[0] for p in run.folder.rglob("*.png")}
        assert {"augment_samples", "pr_curve", "false_positives"} <= media, media

    # training from scratch in the same run dir is another W&B run
    train(compose_cfg(*args, "ckpt_path=null"))
    fresh_id = (run_dir / WANDB_ID_FILE).read_text().strip()
    runs = offline_runs(run_dir)
    assert fresh_id != run_id and len(runs) == 3 and runs[-1].run.run_id == fresh_id
    assert min(runs[-1].values("trainer/global_step")) == 0
