"""``train(cfg)``: build everything from a composed Hydra config and fit. ``train.py`` and
``fisc demo`` both call it.

The steps of one run, each in the module that owns it: resume checks (:mod:`fisc.train.resume`),
run records (:mod:`fisc.train.records`), the logger (:mod:`fisc.train.loggers`), checkpoints
(:mod:`fisc.train.checkpointing`), stages (:mod:`fisc.train.stages`) and the recipe's
post-processor (:mod:`fisc.train.postprocessing`)."""

from __future__ import annotations

import logging
import os
import time
import warnings
from pathlib import Path

import pytorch_lightning as pl
from omegaconf import DictConfig, OmegaConf
from pytorch_lightning.callbacks import ModelCheckpoint, TQDMProgressBar
from pytorch_lightning.utilities.rank_zero import rank_zero_only

from fisc.checkpoints import check_output_dir, remove_stale_partials
from fisc.determinism import deterministic_kernels, fixed_threads
from fisc.malloc import keep_freed_memory
from fisc.train.checkpointing import (
    AtomicCheckpointIO,
    LastCheckpoint,
    StepSpan,
    best_checkpoint,
    checkpoint_bytes,
    history_checkpoints,
    load_initial_weights,
)
from fisc.train.config import check_config
from fisc.train.datamodule import CopyDetectionDataModule, ResumeCheck, SkippedImages
from fisc.train.lock import RunLock, is_rank_zero_process
from fisc.train.loggers import make_logger
from fisc.train.media import RunMedia
from fisc.train.module import CopyDetectionModule
from fisc.train.postprocessing import check_postprocess_fit_set, fit_postprocess
from fisc.train.records import (
    TrainResult,
    _moved_best,
    _recorded_fit_minutes,
    write_run_info,
    write_train_result,
)
from fisc.train.resume import (
    check_same_data,
    check_same_run,
    data_fingerprint,
    note_unfinished_siblings,
    resume_path,
)
from fisc.train.resume_guard import ResumeAgreement
from fisc.train.sources import resolve_data
from fisc.train.stages import finished_stage, stage_config

log = logging.getLogger(__name__)
SKIPPED_IMAGES = "skipped_images.txt"  # training images that could not be decoded


def train(cfg: DictConfig) -> TrainResult:
    """Fit one run, or with ``stages`` one run per stage (``<run_dir>/stage<k>``), each at
    its training size, starting from the previous stage's last checkpoint. With
    ``deterministic=true`` everything runs under deterministic kernels and a fixed thread
    count (``threads``, else the CPU count), so a rerun on the same machine gives the same bits;
    both are restored afterwards."""
    deterministic = bool(cfg.get("deterministic"))
    threads = cfg.get("threads") or (os.cpu_count() if deterministic else None)
    keep_freed_memory()  # no page-fault storm at every step (fisc/malloc.py)
    with fixed_threads(threads), deterministic_kernels(deterministic):
        return _train(cfg)


def _train(cfg: DictConfig) -> TrainResult:
    groups = check_config(cfg)
    check_postprocess_fit_set(cfg, groups)
    run_dir = Path(cfg.run_dir)
    if not is_rank_zero_process():  # a DDP worker, on this node or another: rank 0 holds the
        return _train_stages(cfg, groups)  # run dir (on a shared filesystem: one lock in all)
    with RunLock(run_dir):
        remove_stale_partials(run_dir)
        return _train_stages(cfg, groups)


def _train_stages(cfg: DictConfig, groups: dict) -> TrainResult:
    if not groups["stages"]:
        return _finish(cfg, groups, _train_one(cfg, groups))
    previous = cfg.init_from
    result = None
    for k, stage in enumerate(groups["stages"]):
        stage_cfg = stage_config(cfg, k, stage, previous)
        result = finished_stage(stage_cfg, k)  # finished in an earlier launch
        if result is None:
            log.info("stage %d: %d px, %d epochs", k, stage.train_size, stage.epochs)
            result = _train_one(stage_cfg, check_config(stage_cfg), lr_scale=stage.lr_scale)
        previous = result.last_checkpoint
    assert result is not None
    return _finish(cfg, groups, result, Path(cfg.run_dir))


def _finish(
    cfg: DictConfig, groups: dict, result: TrainResult, run_dir: Path | None = None
) -> TrainResult:
    """Fit the recipe's post-processor for the last checkpoint (rank 0) and write the run's
    ``train_result.json``, which names it."""
    if rank_zero_only.rank != 0:
        return result
    result.postprocess = fit_postprocess(cfg, groups, result.last_checkpoint)
    write_train_result(Path(run_dir or result.run_dir) / "train_result.json", result)
    return result


def build_datamodule(
    cfg: DictConfig, groups: dict, train_images, validation, skip_log: Path | None = None
) -> CopyDetectionDataModule:
    """The training run's data module (also what ``make bench-train`` times)."""
    return CopyDetectionDataModule(
        train_images,
        validation,
        groups["augment"],
        groups["model"],
        cfg.batch_size,
        num_workers=cfg.num_workers,
        seed=cfg.seed,
        eval_batch_size=cfg.eval_batch_size,
        skip_log=skip_log,
        decode_min_side=(
            2 * groups["model"].train_size
            if groups["data"].decode_min_side is None
            else groups["data"].decode_min_side
        ),
    )


def build_module(
    cfg: DictConfig, groups: dict, num_classes: int, lr_scale: float = 1.0
) -> CopyDetectionModule:
    """The training run's LightningModule (model, loss, optimizer settings)."""
    return CopyDetectionModule(
        model=groups["model"],
        loss=groups["loss"],
        optim=groups["optim"],
        batch_size=cfg.batch_size,
        num_classes=num_classes,
        lr_scale=lr_scale,
        load_weights=not cfg.get("init_from"),
    )


def _train_one(cfg: DictConfig, groups: dict, lr_scale: float = 1.0) -> TrainResult:
    pl.seed_everything(cfg.seed, workers=True)
    run_dir = Path(cfg.run_dir)
    ckpt_dir = run_dir / "checkpoints"
    resume, train_images, validation = _prepare_launch(cfg, groups, run_dir, ckpt_dir)
    skip_log = run_dir / SKIPPED_IMAGES if groups["data"].skip_bad_images else None
    datamodule = build_datamodule(cfg, groups, train_images, validation, skip_log)
    module = build_module(cfg, groups, len(train_images), lr_scale)
    if cfg.get("init_from") and resume is None:
        load_initial_weights(module, cfg.init_from)
    check_output_dir(run_dir, 2 * checkpoint_bytes(module))
    monitor = "val/micro_ap" if validation is not None else None
    checkpoint = best_checkpoint(ckpt_dir, monitor)
    history = history_checkpoints(cfg, ckpt_dir)
    logger = make_logger(
        groups["logger"],
        run_dir,
        cfg.run_name,
        run_config=OmegaConf.to_container(cfg, resolve=True),
        fresh=resume is None,
    )
    wandb_extras = []
    if groups["logger"].kind == "wandb":
        from fisc.train.wandb_run import BestScoreSummary, watch

        watch(logger, module, groups["logger"].watch, groups["logger"].watch_log_freq)
        wandb_extras = [BestScoreSummary(logger, checkpoint)] if monitor else []
    trainer_args = OmegaConf.to_container(cfg.trainer, resolve=True)
    if cfg.get("deterministic"):  # Lightning would otherwise switch deterministic algorithms off
        trainer_args["deterministic"] = True
    span = StepSpan()
    trainer = pl.Trainer(
        **trainer_args,
        default_root_dir=str(run_dir),
        logger=logger,
        plugins=[AtomicCheckpointIO()],
        callbacks=[
            ResumeAgreement(resume, run_dir, cfg.ckpt_path),  # DDP: every rank, one checkpoint
            checkpoint,
            LastCheckpoint(ckpt_dir, cfg.get("checkpoint_every_n_steps")),
            ResumeCheck(),
            span,
            *(
                [SkippedImages(skip_log, len(train_images), groups["data"].max_bad_fraction)]
                if skip_log is not None
                else []
            ),
            *history,
            TQDMProgressBar(refresh_rate=max(1, cfg.progress_refresh)),
            *([RunMedia(run_dir, groups["logger"].gallery)] if groups["logger"].media else []),
            *wandb_extras,
            *groups.get("callbacks", []),  # the callbacks group's (conf/callbacks/)
        ],
    )
    started = time.perf_counter()
    _fit(trainer, module, datamodule, resume, groups["logger"].kind == "wandb")
    return _result(trainer, checkpoint, span, run_dir, ckpt_dir, started)


def _prepare_launch(cfg: DictConfig, groups: dict, run_dir: Path, ckpt_dir: Path):
    """``(resume, train_images, validation)``: the checkpoint to resume from (refused if the
    recipe or the data changed since it was saved), the data, and this launch's record."""
    resume = resume_path(cfg.ckpt_path, ckpt_dir)
    if resume is not None and (run_dir / "config.yaml").is_file():
        check_same_run(run_dir / "config.yaml", cfg)
    elif resume is None and cfg.ckpt_path == "auto" and is_rank_zero_process():
        note_unfinished_siblings(run_dir, cfg)
    train_images, validation = resolve_data(groups["data"])
    fingerprint = data_fingerprint(train_images, validation)
    if resume is not None:
        check_same_data(run_dir, fingerprint)
    if is_rank_zero_process():  # one record per launch, however many ranks and nodes
        write_run_info(run_dir, cfg, fingerprint)
    return resume, train_images, validation


def _fit(trainer: pl.Trainer, module, datamodule, resume: str | None, uses_wandb: bool) -> None:
    """``trainer.fit``, resuming from ``resume``; a W&B run is finished however it ends."""
    # fisc restores the data position itself (the datamodule's state): Lightning's warning
    # that a plain DataLoader cannot resume mid-epoch does not apply
    warnings.filterwarnings("ignore", message=".*dataloader is not resumable.*")
    try:
        trainer.fit(module, datamodule=datamodule, ckpt_path=resume, weights_only=True)
    except ValueError as e:  # torch's Optimizer.load_state_dict on a differently built optimizer
        if resume is None or "parameter group" not in str(e):
            raise
        raise ValueError(
            f"cannot resume {resume}: its optimizer state does not fit the optimizer this "
            f"fisc builds ({e}); it was probably written by an older fisc. Start afresh with "
            f"ckpt_path=null (or another run_dir), or from its weights with init_from={resume}"
        ) from e
    finally:
        if uses_wandb and trainer.is_global_zero:
            import wandb

            wandb.finish()  # a later launch (resume, next stage) starts its own W&B process


def _result(
    trainer: pl.Trainer,
    checkpoint: ModelCheckpoint,
    span: StepSpan,
    run_dir: Path,
    ckpt_dir: Path,
    started: float,
) -> TrainResult:
    """The launch's :class:`TrainResult` (``started``: when the fit began, ``perf_counter``),
    written to ``train_result.json`` by rank 0."""
    best = checkpoint.best_model_path or None
    last = str(ckpt_dir / "last.ckpt") if (ckpt_dir / "last.ckpt").is_file() else None
    score = float(checkpoint.best_model_score) if checkpoint.best_model_score is not None else None
    if best is not None and not Path(best).is_file():
        best, score = _moved_best(ckpt_dir, Path(best), score)
    minutes = round((time.perf_counter() - started) / 60, 2)
    if not span.trained(trainer):  # a finished run relaunched: keep the training launch's time
        minutes = _recorded_fit_minutes(run_dir, minutes)
    result = TrainResult(str(run_dir), best, last, score, fit_minutes=minutes)
    if trainer.is_global_zero:  # the other ranks (other nodes too) share rank 0's run dir
        write_train_result(run_dir / "train_result.json", result)
    return result
