"""``train(cfg)``: build everything from a composed Hydra config and fit. ``train.py`` and
``fisc demo`` both call it."""

from __future__ import annotations

import hashlib
import json
import logging
import os
import subprocess
import time
import warnings
from dataclasses import asdict, dataclass
from importlib import metadata
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
import torch
from omegaconf import DictConfig, OmegaConf
from pytorch_lightning.callbacks import Checkpoint, ModelCheckpoint, TQDMProgressBar
from pytorch_lightning.utilities.rank_zero import rank_zero_only

from fisc.checkpoints import (
    atomic_checkpoint_io,
    check_output_dir,
    load_checkpoint,
    newest_valid_checkpoint,
    readable,
    remove_stale_partials,
)
from fisc.determinism import deterministic_kernels, fixed_threads
from fisc.files import atomic_path
from fisc.malloc import keep_freed_memory
from fisc.paths import source_root
from fisc.provenance import git_sha
from fisc.train.config import (
    ConfigError,
    LoggerConfig,
    check_config,
    key_default,
)
from fisc.train.datamodule import CopyDetectionDataModule, ResumeCheck, SkippedImages
from fisc.train.lock import RunLock, is_rank_zero_process
from fisc.train.media import RunMedia
from fisc.train.module import CopyDetectionModule
from fisc.train.resolvers import RESUMABLE_CHANGES
from fisc.train.resume_guard import ResumeAgreement
from fisc.train.sources import resolve_data

log = logging.getLogger(__name__)
VERSIONED = (
    "fisc",
    "torch",
    "torchvision",
    "pytorch-lightning",
    "timm",
    "kornia",
    "faiss-cpu",
    "hydra-core",
    "wandb",
    "h5py",
    "numpy",
    "pillow",
)


@dataclass
class TrainResult:
    run_dir: str
    best_checkpoint: str | None
    last_checkpoint: str | None
    best_score: float | None
    postprocess: dict | None = None  # the recipe's post-processor, fitted for last_checkpoint
    # wall time of the launch that finished the run (fit only); a relaunch of a finished run,
    # which trains no step, keeps the figure of the launch that did
    fit_minutes: float | None = None


def package_versions() -> dict[str, str | None]:
    versions = {}
    for name in VERSIONED:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = None
    return versions


def git_dirty() -> bool | None:
    root = source_root()
    if root is None:
        return None
    try:
        out = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            capture_output=True,
            text=True,
            timeout=10,
            cwd=root,
        )
        return bool(out.stdout.strip()) if out.returncode == 0 else None
    except (OSError, subprocess.SubprocessError):
        return None


def _flatten(d: dict, prefix: str = "") -> dict[str, Any]:
    out = {}
    for k, v in d.items():
        if isinstance(v, dict) and v:
            out.update(_flatten(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = v
    return out


def check_same_run(saved: Path, cfg: DictConfig) -> None:
    """Refuse to resume a run whose recipe (model, loss, data, ...) has changed. A key the
    saved config lacks (added by a newer fisc) is no change when it holds its default; so is
    a ``_target_`` it lacks that names the class of the saved option (``loss.name``)."""
    before = _flatten(OmegaConf.to_container(OmegaConf.load(saved), resolve=False))
    now = _flatten(OmegaConf.to_container(cfg, resolve=True))
    changed = []
    for key in sorted(set(before) | set(now)):
        if key.split(".")[0] in RESUMABLE_CHANGES or before.get(key) == now.get(key):
            continue
        if key not in before and (
            now[key] in (None, [], {}) or now[key] == key_default(key, before, now)
        ):
            continue
        changed.append(key)
    if changed:
        shown = ", ".join(
            f"{k}: {before.get(k, '(absent)')!r} -> {now.get(k, '(absent)')!r}" for k in changed[:8]
        )
        raise ValueError(
            f"cannot resume {saved.parent}: the config differs from its saved config.yaml in "
            f"{shown}{' ...' if len(changed) > 8 else ''}; use another run_dir, or "
            f"ckpt_path=null to start afresh"
        )


def data_fingerprint(train, validation) -> str:
    """sha256 of the training and validation image ids with their file sizes, and the
    validation ground truth: a data set rebuilt or edited under the same path changes it."""
    h = hashlib.sha256()
    parts = [("train", train)]
    if validation is not None:
        parts += [("query", validation.queries), ("reference", validation.references)]
    for role, images in parts:
        for image_id, path in zip(images.ids, images.paths, strict=True):
            h.update(f"{role}\t{image_id}\t{Path(path).stat().st_size}\n".encode())
    if validation is not None:
        for q, r in sorted(validation.ground_truth.items()):
            h.update(f"gt\t{q}\t{r}\n".encode())
    return h.hexdigest()


def check_same_data(run_dir: Path, fingerprint: str) -> None:
    """Refuse to resume a run whose training or validation data changed since its last launch."""
    info_path = run_dir / "run_info.json"
    if not info_path.is_file():
        return
    launches = json.loads(info_path.read_text())["launches"]
    before = next((x["data"] for x in reversed(launches) if x.get("data")), None)
    if before is not None and before != fingerprint:
        raise ValueError(
            f"cannot resume {run_dir}: its training/validation images (ids, file sizes) or "
            f"ground truth changed since its last launch; use another run_dir, or "
            f"ckpt_path=null to start afresh"
        )


def write_run_info(run_dir: Path, cfg: DictConfig, data: str | None = None) -> None:
    """Keep the resolved config, and per launch the git SHA, package versions and the data
    fingerprint."""
    run_dir.mkdir(parents=True, exist_ok=True)
    with atomic_path(run_dir / "config.yaml") as tmp:
        tmp.write_text(OmegaConf.to_yaml(cfg, resolve=True))
    info_path = run_dir / "run_info.json"
    launches = json.loads(info_path.read_text())["launches"] if info_path.is_file() else []
    launches.append(
        {
            "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            "git_sha": git_sha(),
            "git_dirty": git_dirty(),
            "versions": package_versions(),
            "data": data,
            "threads": torch.get_num_threads(),
            "deterministic": torch.are_deterministic_algorithms_enabled(),
        }
    )
    with atomic_path(info_path) as tmp:
        tmp.write_text(json.dumps({"launches": launches}, indent=2) + "\n")


SKIPPED_IMAGES = "skipped_images.txt"  # training images that could not be decoded


def make_logger(
    cfg: LoggerConfig,
    run_dir: Path,
    run_name: str,
    run_config: dict | None = None,
    fresh: bool = False,
):
    """The run's Lightning logger. W&B: ``run_config`` (the resolved config) becomes the run's
    config; the run id is kept in the run dir and reused unless ``fresh`` (training starts
    from scratch), so a resumed run continues its W&B run."""
    if cfg.kind == "csv":
        from pytorch_lightning.loggers import CSVLogger

        # a new version_N per launch: a resumed run never overwrites earlier metrics
        return CSVLogger(save_dir=str(run_dir), name="csv")
    if cfg.kind == "wandb":
        from fisc.train.wandb_run import RunWandbLogger, wandb_run_id

        if cfg.mode not in ("offline", "online", "disabled"):
            raise ValueError(f"logger.mode must be offline | online | disabled, got {cfg.mode!r}")
        sweep = os.environ.get("WANDB_SWEEP_ID")
        if sweep and cfg.mode != "online":
            raise ValueError(
                f"a W&B sweep agent (sweep {sweep}) needs logger.mode=online to report "
                f"val/micro_ap to the sweep; got logger.mode={cfg.mode}"
            )
        if sweep:  # the agent picks the run id (W&B ignores ours): a relaunch is a new W&B run
            log.info("W&B sweep %s: the agent assigns the run id", sweep)
        return RunWandbLogger(
            run_config=run_config,
            project=cfg.project,
            name=run_name,
            save_dir=str(run_dir),
            group=cfg.group,
            tags=list(cfg.tags),
            # offline stays W&B's mode, not Lightning's ``offline=True``, which refuses
            # log_model: offline artifacts are kept with the run and uploaded by `wandb sync`
            mode=cfg.mode,
            log_model=cfg.log_model,
            id=None if sweep else wandb_run_id(run_dir, fresh=fresh),
            resume=None if sweep else "allow",
        )
    raise ValueError(f"logger.kind must be csv | wandb, got {cfg.kind!r}")


class LastCheckpoint(Checkpoint):
    """``last.ckpt``: the state every ``every_n_steps`` optimizer steps, at the end of every
    epoch and after every validation during training, whatever the monitored metric did
    (Lightning's ``save_last`` rewrites it only when the best checkpoint changes). Written
    atomically by the trainer's checkpoint IO. (A ``Checkpoint``: Lightning runs its hooks after
    the other callbacks', so after validation it sees the best checkpoint just saved.)"""

    def __init__(self, dirpath: Path, every_n_steps: int | None = None):
        self.path = Path(dirpath) / "last.ckpt"
        self.every_n_steps = every_n_steps

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        step = trainer.global_step
        if self.every_n_steps and step % self.every_n_steps == 0 and not _epoch_end(trainer):
            trainer.save_checkpoint(self.path)

    def on_train_epoch_end(self, trainer, pl_module) -> None:
        trainer.save_checkpoint(self.path)

    def on_validation_end(self, trainer, pl_module) -> None:
        # after an epoch's validation too, so that last.ckpt knows the best checkpoint so far
        if trainer.training or (trainer.state.fn == "fit" and not trainer.sanity_checking):
            trainer.save_checkpoint(self.path)


def checkpoint_bytes(module: torch.nn.Module) -> int:
    """About the size of one checkpoint: weights and buffers, plus two optimizer moments."""
    params = sum(p.numel() * p.element_size() for p in module.parameters())
    buffers = sum(b.numel() * b.element_size() for b in module.buffers())
    return 3 * params + buffers


def _epoch_end(trainer) -> bool:
    """The batch just trained is the epoch's last (its end-of-epoch save follows)."""
    done = trainer.fit_loop.epoch_loop.batch_progress.current.processed
    return done >= trainer.num_training_batches


def resume_path(ckpt_path: str | None, ckpt_dir: Path) -> str | None:
    """``null``: fresh; ``auto``: ``last.ckpt`` of this run dir if present (if unreadable, the
    newest readable checkpoint there, with a warning); else a path."""
    if ckpt_path in (None, "", "none"):
        return None
    if ckpt_path == "auto":
        last = ckpt_dir / "last.ckpt"
        if not last.is_file():
            return None
        if readable(last):
            return str(last)
        fallback = newest_valid_checkpoint(ckpt_dir, exclude=last)
        log.warning(
            "%s is unreadable (truncated or corrupt); resuming from %s instead",
            last,
            fallback or "scratch (no readable checkpoint)",
        )
        return str(fallback) if fallback is not None else None
    if not Path(ckpt_path).is_file():
        raise FileNotFoundError(f"ckpt_path {ckpt_path} does not exist")
    return ckpt_path


def _moved_best(ckpt_dir: Path, old: Path, score: float | None) -> tuple[str | None, float | None]:
    """The run folder was moved or copied: Lightning restores only the old folder's best path
    (and drops its score). Use the same file in this folder, with the score it was saved with."""
    here = ckpt_dir / old.name
    if not here.is_file():
        log.warning("best checkpoint %s is gone and not in %s; none reported", old, ckpt_dir)
        return None, None
    if score is None:
        state = load_checkpoint(here, "best checkpoint")
        for key, value in state.get("callbacks", {}).items():
            if key.startswith("ModelCheckpoint") and value.get("best_model_score") is not None:
                score = float(value["best_model_score"])
    return str(here), score


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
    run_dir = Path(cfg.run_dir)
    previous = cfg.init_from
    result = None
    for k, stage in enumerate(groups["stages"]):
        stage_cfg = cfg.copy()
        OmegaConf.set_struct(stage_cfg, False)
        stage_cfg.stages = []
        stage_cfg.run_dir = str(run_dir / f"stage{k}")
        stage_cfg.init_from = previous
        stage_cfg.model.train_size = stage.train_size
        stage_cfg.trainer.max_epochs = stage.epochs
        if stage.train_images is not None:
            stage_cfg.data.max_train_images = stage.train_images
        stage_cfg.run_name = f"{cfg.run_name}-stage{k}"
        done = Path(stage_cfg.run_dir) / "train_result.json"
        if done.is_file():  # finished in an earlier launch
            result = TrainResult(**json.loads(done.read_text()))
            log.info("stage %d already trained: %s", k, result.last_checkpoint)
        else:
            log.info("stage %d: %d px, %d epochs", k, stage.train_size, stage.epochs)
            result = _train_one(stage_cfg, check_config(stage_cfg), lr_scale=stage.lr_scale)
        previous = result.last_checkpoint
    assert result is not None
    return _finish(cfg, groups, result, run_dir)


def _finish(
    cfg: DictConfig, groups: dict, result: TrainResult, run_dir: Path | None = None
) -> TrainResult:
    """Fit the recipe's post-processor for the last checkpoint (rank 0) and write the run's
    ``train_result.json``, which names it."""
    if rank_zero_only.rank != 0:
        return result
    result.postprocess = fit_postprocess(cfg, groups, result.last_checkpoint)
    with atomic_path(Path(run_dir or result.run_dir) / "train_result.json") as tmp:
        tmp.write_text(json.dumps(asdict(result), indent=2) + "\n")
    return result


def check_postprocess_fit_set(cfg: DictConfig, groups: dict) -> None:
    """Before training: the recipe's post-processing can be fitted on the training split
    (e.g. ``pca255`` needs 256 images), so a run never fails at its end for that reason."""
    spec = cfg.get("postprocess")
    if not spec or cfg.trainer.get("fast_dev_run"):  # fast_dev_run writes no checkpoint
        return
    from fisc.postprocess.spec import PostProcessor

    need = PostProcessor(spec).min_fit_rows()
    train_images, _ = resolve_data(groups["data"])
    if len(train_images) < need:
        raise ConfigError(
            f"postprocess {spec!r} is fitted on the training split at the end of training and "
            f"needs at least {need} training images; the data has {len(train_images)}. Use a "
            "smaller spec (e.g. pca_whiten8,l2) or postprocess=null"
        )


class StepSpan(pl.Callback):
    """The optimizer step a launch started training from (after any resume); none when the
    run was already finished (Lightning then skips the fit loop, and this hook)."""

    def __init__(self):
        self.first: int | None = None

    def on_train_start(self, trainer, pl_module):
        self.first = trainer.global_step

    def trained(self, trainer) -> bool:
        return self.first is not None and trainer.global_step > self.first


def _recorded_fit_minutes(run_dir: Path, default: float) -> float:
    try:
        recorded = json.loads((run_dir / "train_result.json").read_text()).get("fit_minutes")
    except (OSError, ValueError, AttributeError):
        return default
    return recorded if isinstance(recorded, (int, float)) else default


def fit_postprocess(cfg: DictConfig, groups: dict, checkpoint: str | None) -> dict | None:
    """The recipe's ``postprocess`` fitted on the training split's descriptors of
    ``checkpoint`` and saved beside it (``last.postprocess.npz`` + ``.json``); reused when one
    fitted with the same spec for the same checkpoint is there. ``None`` without a spec."""
    spec = cfg.get("postprocess")
    if not spec or checkpoint is None or cfg.trainer.get("fast_dev_run"):
        return None  # fast_dev_run: a debugging pass, not a run to ship
    from fisc.inference import fit_run_postprocessor, run_postprocess_path
    from fisc.postprocess.spec import PostProcessor
    from fisc.provenance import sha256_of

    path = run_postprocess_path(checkpoint)
    pp = None
    if path.is_file():
        try:
            pp = PostProcessor.load(path)
        except (OSError, ValueError, KeyError) as e:
            log.warning("refitting the post-processor: %s is unreadable (%s)", path, e)
        fitted_for = (pp.fit_set or {}).get("checkpoint_sha256") if pp is not None else None
        if pp is not None and (pp.spec != spec or fitted_for != sha256_of(checkpoint)):
            pp = None
    if pp is None:
        train_images, _ = resolve_data(groups["data"])
        accelerator = str(cfg.trainer.get("accelerator", "cpu"))
        device = "cuda" if accelerator != "cpu" and torch.cuda.is_available() else "cpu"
        log.info("fitting post-processing %r on %d training images", spec, len(train_images))
        path, pp = fit_run_postprocessor(
            checkpoint,
            train_images,
            spec,
            device=device,
            batch_size=cfg.eval_batch_size,
            num_workers=cfg.num_workers,
            progress=True,
            per_image=device == "cpu",  # CPU: the fit does not depend on batching
        )
    log.info("post-processor %r (%d-d) for %s: %s", pp.spec, pp.dims, checkpoint, path)
    return {"file": str(path), "spec": pp.spec, "dims": pp.dims, "fit_set": pp.fit_set}


def load_initial_weights(module: CopyDetectionModule, path: str) -> None:
    """Model (strictly) and loss (e.g. ArcFace classes, possibly fewer) weights from a fisc
    checkpoint, for a fresh run that starts where another ended."""
    state = load_checkpoint(path, "init_from")["state_dict"]
    model = {k[len("model.") :]: v for k, v in state.items() if k.startswith("model.")}
    module.model.load_state_dict(model, strict=True)
    loss = {k[len("loss.") :]: v for k, v in state.items() if k.startswith("loss.")}
    for name in getattr(module.loss, "RUN_STATE", ()):  # e.g. a cross-batch memory starts empty
        loss.pop(name, None)
    if loss:
        module.loss.load_state_dict(loss, strict=True)
    log.info("initial weights from %s", path)


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
    resume = resume_path(cfg.ckpt_path, ckpt_dir)
    if resume is not None and (run_dir / "config.yaml").is_file():
        check_same_run(run_dir / "config.yaml", cfg)
    train_images, validation = resolve_data(groups["data"])
    fingerprint = data_fingerprint(train_images, validation)
    if resume is not None:
        check_same_data(run_dir, fingerprint)
    if is_rank_zero_process():  # one record per launch, however many ranks and nodes
        write_run_info(run_dir, cfg, fingerprint)
    skip_log = run_dir / SKIPPED_IMAGES if groups["data"].skip_bad_images else None
    datamodule = build_datamodule(cfg, groups, train_images, validation, skip_log)
    module = build_module(cfg, groups, len(train_images), lr_scale)
    if cfg.get("init_from") and resume is None:
        load_initial_weights(module, cfg.init_from)
    check_output_dir(run_dir, 2 * checkpoint_bytes(module))
    monitor = "val/micro_ap" if validation is not None else None
    checkpoint = ModelCheckpoint(
        dirpath=ckpt_dir,
        monitor=monitor,
        mode="max",
        save_top_k=1,
        filename="best-epoch{epoch:03d}" if monitor else "epoch{epoch:03d}",
        auto_insert_metric_name=False,
    )
    history = []
    if cfg.get("keep_every_n_epochs"):
        if int(cfg.keep_every_n_epochs) < 1:
            raise ConfigError(f"keep_every_n_epochs must be >= 1, got {cfg.keep_every_n_epochs}")
        history = [
            ModelCheckpoint(  # every N epochs, all kept: the points of a learning curve
                dirpath=ckpt_dir / "history",
                filename="epoch{epoch:03d}-step{step:06d}",
                auto_insert_metric_name=False,
                every_n_epochs=int(cfg.keep_every_n_epochs),
                save_top_k=-1,
                monitor=None,
                save_on_train_epoch_end=True,  # without waiting for a validation epoch
            )
        ]
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
        plugins=[atomic_checkpoint_io()],
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
        if groups["logger"].kind == "wandb" and trainer.is_global_zero:
            import wandb

            wandb.finish()  # a later launch (resume, next stage) starts its own W&B process
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
        with atomic_path(run_dir / "train_result.json") as tmp:
            tmp.write_text(json.dumps(asdict(result), indent=2) + "\n")
    return result
