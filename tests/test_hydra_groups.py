"""The Hydra groups around a run: extra Lightning callbacks (``callbacks``), debug modes
(``debug``) and an Optuna search (``hparams_search``)."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import pytorch_lightning as pl
import yaml
from helpers.config import CONF, tiny_overrides
from omegaconf import OmegaConf

from fisc.train.callbacks import build_callbacks
from fisc.train.config import ConfigError, check_config
from fisc.train.run import train

ROOT = CONF.parent
DEBUG_MODES = sorted(p.stem for p in (CONF / "debug").glob("*.yaml"))
HERE = Path(__file__).stem  # this module, as a _target_ sees it (tests/ is on sys.path)


class MarkHooks(pl.Callback):
    """Appends ``<hook> <global step>`` to ``path`` when training starts and ends."""

    def __init__(self, path: str):
        self.path = Path(path)

    def _mark(self, hook: str, trainer) -> None:
        with open(self.path, "a") as f:
            f.write(f"{hook} {trainer.global_step}\n")

    def on_train_start(self, trainer, pl_module) -> None:
        self._mark("on_train_start", trainer)

    def on_train_end(self, trainer, pl_module) -> None:
        self._mark("on_train_end", trainer)


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_default_callbacks_are_built_in_order(compose_cfg):
    from pytorch_lightning.callbacks import EarlyStopping, LearningRateMonitor, ModelSummary

    built = build_callbacks(compose_cfg())
    assert [type(c) for c in built] == [ModelSummary, LearningRateMonitor]
    built = build_callbacks(compose_cfg("callbacks=early_stopping", "callbacks.lr_monitor=null"))
    assert [type(c) for c in built] == [ModelSummary, EarlyStopping]
    assert (built[1].monitor, built[1].mode) == ("val/micro_ap", "max")
    assert build_callbacks(compose_cfg("callbacks=none")) == []
    # Lightning refuses a ModelSummary when summaries are off: the trainer flag wins
    off = build_callbacks(compose_cfg("+trainer.enable_model_summary=false"))
    assert [type(c) for c in off] == [LearningRateMonitor]


def test_a_callback_added_on_relaunch_runs_and_the_run_resumes(
    compose_cfg, tiny_minidisc, tmp_path
):
    """``+callbacks.<name>._target_=...`` builds the user's callback (interpolations resolve
    against the whole config) and its hooks run; adding it to a run's relaunch is a resumable
    change: the same run dir, continued from its last.ckpt."""
    # 8 training images: one whole batch per epoch (a resume after an epoch cut short by
    # trainer.limit_train_batches is refused by fisc's resume check, whatever the callbacks)
    base = [*tiny_overrides(tiny_minidisc), "data.max_train_images=8", "logger.media=false"]
    first = train(compose_cfg(*base, "callbacks=none"))
    marks = Path(first.run_dir) / "marks.txt"
    assert not marks.exists()
    again = train(
        compose_cfg(
            *base,
            "trainer.max_epochs=2",
            "trainer.log_every_n_steps=1",
            f"+callbacks.mark._target_={HERE}.MarkHooks",
            "+callbacks.mark.path=${run_dir}/marks.txt",
        )
    )
    assert again.run_dir == first.run_dir
    # one batch per epoch: the relaunch started at step 1 (resumed), not 0, and ended at 2
    assert marks.read_text().split("\n") == ["on_train_start 1", "on_train_end 2", ""]
    # the default LearningRateMonitor logged the relaunch's learning rates (the first had none)
    versions = sorted((Path(first.run_dir) / "csv").glob("version_*/metrics.csv"))
    headers = [p.read_text().splitlines()[0].split(",") for p in versions]
    assert [any(h.startswith("lr-") for h in hs) for hs in headers] == [False, True]


@pytest.mark.parametrize(
    "override,message",
    [
        ("+callbacks.oops._target_=no_such_module.Callback", "callbacks.oops: cannot build"),
        ("+callbacks.lr_monitor.no_such_keyword=1", "callbacks.lr_monitor: cannot build"),
        ("+callbacks.odd._target_=collections.OrderedDict", "callbacks.odd: .* not a py"),
        ("+callbacks.bare.patience=3", "callbacks.bare: needs a _target_"),
        ("+trainer.callbacks=[]", "callbacks group"),
    ],
)
def test_bad_callbacks_stop_the_launch_with_the_key(override, message, compose_cfg, tmp_path):
    cfg = compose_cfg(f"run_dir={tmp_path}/run", override)
    with pytest.raises(ConfigError, match=message):
        train(cfg)
    assert not (tmp_path / "run").exists()  # refused before the run dir was made


def test_callbacks_do_not_change_the_run_dir(compose_cfg):
    """The run dir is named after the recipe's hash: callbacks are not part of it."""
    dirs = {
        compose_cfg(*choice).run_dir
        for choice in ([], ["callbacks=none"], ["callbacks=early_stopping"],
                       ["+callbacks.x._target_=pytorch_lightning.callbacks.Timer"])
    }  # fmt: skip
    assert len(dirs) == 1, dirs


@pytest.mark.parametrize("mode", DEBUG_MODES)
@pytest.mark.parametrize("experiment", [None, "demo"])
def test_debug_configs_run_apart_from_real_runs(mode, experiment, compose_cfg, tmp_path):
    """Each debug mode composes, passes the config checks, and runs afresh in its own dir
    under <output_dir>/debug/, whatever run dir the recipe names (demo: a fixed one)."""
    chosen = [f"experiment={experiment}"] if experiment else []
    real = compose_cfg(*chosen)
    cfg = compose_cfg(*chosen, f"debug={mode}")
    check_config(cfg)
    run_dir = Path(cfg.run_dir)
    assert run_dir.parent == tmp_path / "out" / "debug" / mode
    assert run_dir.name == Path(real.run_dir).name or experiment == "demo"
    assert cfg.ckpt_path is None and cfg.logger.kind == "csv" and cfg.num_workers == 0
    assert cfg.trainer.devices == 1 and cfg.trainer.max_epochs >= 1
    # debug changes only resumable keys otherwise: the recipe trained is the real one's
    ignore = {"run_dir", "ckpt_path", "num_workers", "trainer", "logger"}
    strip = lambda c: {k: v for k, v in OmegaConf.to_container(c).items() if k not in ignore}  # noqa: E731
    assert strip(cfg) == strip(real)


def test_debug_modes_set_their_trainer_flags(compose_cfg):
    flags = {m: compose_cfg(f"debug={m}").trainer for m in DEBUG_MODES}
    assert flags["fast"].fast_dev_run == 1
    assert flags["overfit"].overfit_batches > 0
    assert flags["limit"].limit_train_batches < 10 and flags["limit"].max_epochs > 1
    assert flags["profiler"].profiler == "simple"
    assert flags["default"].max_epochs == 1


def test_debug_fast_leaves_the_real_run_alone(compose_cfg, tiny_minidisc, tmp_path):
    """A trained run, then ``debug=fast`` of the same recipe: one batch each way in seconds,
    in the debug dir; the real run's checkpoint and launch record are untouched."""
    base = [*tiny_overrides(tiny_minidisc), "logger.media=false"]
    real = train(compose_cfg(*base))
    last = Path(real.last_checkpoint)
    before = (_sha(last), _sha(Path(real.run_dir) / "run_info.json"))
    debug = train(compose_cfg(*base, "debug=fast"))
    assert Path(debug.run_dir).parent == tmp_path / "out" / "debug" / "fast"
    assert Path(debug.run_dir).name == Path(real.run_dir).name  # the same recipe
    assert (_sha(last), _sha(Path(real.run_dir) / "run_info.json")) == before
    saved = OmegaConf.load(Path(debug.run_dir) / "config.yaml")
    assert saved.trainer.fast_dev_run == 1 and saved.ckpt_path is None
    assert debug.best_score is None  # fast_dev_run: no best checkpoint


def _sweep_space(cfg) -> dict:
    """The Optuna search space of a composed config: key -> Hydra sweep object."""
    from hydra.core.override_parser.overrides_parser import OverridesParser

    params = OmegaConf.to_container(cfg.hydra.sweeper.params)
    parsed = OverridesParser.create().parse_overrides([f"{k}={v}" for k, v in params.items()])
    return {o.key_or_group: o.value() for o in parsed}


def test_optuna_search_config_composes_over_the_demo(compose_cfg, tmp_path):
    """``hparams_search=demo_optuna``: the Optuna sweeper maximising what train.py returns,
    over the demo recipe; every searched key is a real config key and both ends of its range
    (every choice) pass the config checks."""
    from hydra import compose, initialize_config_dir
    from hydra.core.override_parser.types import ChoiceSweep, IntervalSweep

    with initialize_config_dir(str(CONF), version_base="1.3"):
        cfg = compose("train", ["hparams_search=demo_optuna"], return_hydra_config=True)
    sweeper = cfg.hydra.sweeper
    assert sweeper._target_.endswith("optuna_sweeper.OptunaSweeper")
    assert sweeper.direction == "maximize" and sweeper.storage is None
    assert 1 <= sweeper.n_trials <= 20 and sweeper.sampler.seed is not None
    assert cfg.hydra.runtime.choices.experiment == "demo"
    space = _sweep_space(cfg)
    assert {"optim.lr", "loss.temperature", "batch_size"} <= set(space)
    for key, sweep in space.items():
        assert OmegaConf.select(cfg, key, default=None) is not None, key
        if isinstance(sweep, IntervalSweep):
            assert sweep.start < sweep.end
            values = [sweep.start, sweep.end]
        else:
            assert isinstance(sweep, ChoiceSweep), (key, sweep)
            values = list(sweep.list)
        for value in values:
            check_config(compose_cfg("experiment=demo", f"{key}={value}"))
    assert "log" in space["optim.lr"].tags


def test_optuna_search_runs_trials_and_names_the_best(tiny_minidisc, tmp_path):
    """Two tiny trials end to end: each job trains with its own sampled values, in its own run
    dir, and the sweeper's results file names the better one's values and val μAP."""
    env = {**os.environ, "WANDB_MODE": "disabled", "HF_HUB_OFFLINE": "1", "PYTHONPATH": str(ROOT)}
    out, sweep_dir = tmp_path / "out", tmp_path / "sweep"
    cmd = [
        sys.executable,
        "train.py",
        "-m",
        "hparams_search=demo_optuna",
        "experiment=smoke",
        f"paths.output_dir={out}",
        *tiny_overrides(tiny_minidisc),  # batch_size=8 here: fixed, out of the search
        "logger.media=false",
        "callbacks=none",
        "hydra.sweeper.n_trials=2",
        f"hydra.sweep.dir={sweep_dir}",
    ]
    proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stderr[-3000:]
    runs = sorted(p.parent for p in (out / "runs").glob("*/config.yaml"))
    assert len(runs) == 2, runs
    jobs = []
    for run in runs:
        saved = OmegaConf.load(run / "config.yaml")
        score = json.loads((run / "train_result.json").read_text())["best_score"]
        jobs.append(({"optim.lr": saved.optim.lr, "loss.temperature": saved.loss.temperature},
                     saved.batch_size, score))  # fmt: skip
    (a, batch_a, _), (b, batch_b, _) = jobs
    assert batch_a == batch_b == 8
    for key in a:  # sampled, not the recipe's, and not the same twice
        assert a[key] != b[key], key
        lo, hi = (0.03, 0.15) if key == "loss.temperature" else (3e-4, 3e-3)
        assert lo <= a[key] <= hi and lo <= b[key] <= hi
    results = yaml.safe_load((sweep_dir / "optimization_results.yaml").read_text())
    best = max(score for _, _, score in jobs)
    assert results["best_value"] == pytest.approx(best)
    assert any(results["best_params"] == pytest.approx(p) for p, _, s in jobs if s == best)


def test_export_settings_are_not_a_training_config_group(compose_cfg):
    """conf/export.yaml is read by the export commands, not composed into a training run: it is
    no group Hydra could merge into train.yaml (the old conf/export/ folder was one), so
    ``+export=default`` is a plain unknown key, refused at start-up."""
    cfg = compose_cfg("+export=default")
    assert cfg.export == "default"  # a value, not the export settings merged in
    with pytest.raises(ConfigError, match="export"):
        check_config(cfg)
    settings = yaml.safe_load((Path(__file__).parents[1] / "conf" / "export.yaml").read_text())
    assert {"checkpoint", "artifact"} <= set(settings)


@pytest.mark.parametrize("trainer", ["gpu", "ddp"])
def test_gpu_trainers_choose_the_gpu_feeding_data_settings(trainer, compose_cfg):
    """``trainer=gpu`` and ``trainer=ddp`` make the CPU edits after a view's first crop run at
    the view size (``augment.work_side=1``) and JPEGs decode down to the view size
    (``data.decode_min_side`` = the train size, stage by stage), whichever pipeline or
    recipe is chosen; ``trainer=cpu`` keeps full resolution and twice the train size; an
    override on the command line wins. The two settings are part of the recipe: a GPU run's
    default run dir is not the CPU run's (the trainer's own flags would not change it)."""
    from fisc.train.stages import stage_config

    def settings(*overrides):
        groups = check_config(compose_cfg(*overrides))
        return groups["augment"].work_side, groups["data"].decode_min_side

    assert settings("trainer=cpu", "model.train_size=160") == (None, None)
    assert settings(f"trainer={trainer}", "model.train_size=160") == (1, 160)
    assert settings(f"trainer={trainer}", "augment=isc1st", "model.train_size=96") == (1, 96)
    assert settings(f"trainer={trainer}", "augment.work_side=null",
                    "data.decode_min_side=null") == (None, None)  # fmt: skip
    assert settings(f"trainer={trainer}", "augment.work_side=2") == (2, 96)
    # a GPU recipe that picks its own pipeline (isc1st) and trains at 256, 384, 512 px
    cfg = compose_cfg("experiment=isc1st_effv2m", f"trainer={trainer}")
    stages = check_config(cfg)["stages"]
    for k, stage in enumerate(stages):
        groups = check_config(stage_config(cfg, k, stage, None))
        assert groups["augment"].work_side == 1
        assert groups["data"].decode_min_side == stage.train_size
    assert [s.train_size for s in stages] == [256, 384, 512]
    run_dir = {t: compose_cfg(f"trainer={t}").run_dir for t in ("cpu", "gpu", "ddp")}
    assert run_dir["gpu"] == run_dir["ddp"] != run_dir["cpu"]
    assert compose_cfg("trainer=cpu", "trainer.precision=bf16-mixed").run_dir == run_dir["cpu"]
