"""``train(cfg)``: build everything from a composed Hydra config and fit. ``train.py`` and
``fisc demo`` both call it."""

from __future__ import annotations

import json
import logging
import subprocess
import time
from dataclasses import asdict, dataclass
from importlib import metadata
from pathlib import Path

import pytorch_lightning as pl
from omegaconf import DictConfig, OmegaConf
from pytorch_lightning.callbacks import ModelCheckpoint, TQDMProgressBar

from fisc.descriptors.h5io import atomic_path
from fisc.train.config import LoggerConfig, check_config
from fisc.train.datamodule import CopyDetectionDataModule
from fisc.train.module import CopyDetectionModule
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


def git_sha() -> str | None:
    try:
        out = subprocess.run(
            ["git", "rev-parse", "HEAD"],
            capture_output=True,
            text=True,
            cwd=Path(__file__).resolve().parent,
            timeout=10,
        )
        return out.stdout.strip() or None
    except (OSError, subprocess.SubprocessError):
        return None


def package_versions() -> dict[str, str | None]:
    versions = {}
    for name in VERSIONED:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = None
    return versions


def git_dirty() -> bool | None:
    try:
        out = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            capture_output=True,
            text=True,
            timeout=10,
            cwd=Path(__file__).resolve().parent,
        )
        return bool(out.stdout.strip()) if out.returncode == 0 else None
    except (OSError, subprocess.SubprocessError):
        return None


# keys that may change between launches of one run (resume): where and how long it runs
RESUMABLE_CHANGES = (
    "trainer",
    "run_dir",
    "ckpt_path",
    "num_workers",
    "eval_batch_size",
    "progress_refresh",
    "paths",
    "logger",
)


def check_same_run(saved: Path, cfg: DictConfig) -> None:
    """Refuse to resume a run whose recipe (model, loss, data, ...) has changed."""
    before = OmegaConf.to_container(OmegaConf.load(saved), resolve=False)
    now = OmegaConf.to_container(cfg, resolve=True)
    changed = sorted(
        k
        for k in set(before) | set(now)
        if k not in RESUMABLE_CHANGES and before.get(k) != now.get(k)
    )
    if changed:
        raise ValueError(
            f"cannot resume {saved.parent}: the config differs in {changed} from the saved "
            f"config.yaml; use another run_dir, or ckpt_path=null to start afresh"
        )


def write_run_info(run_dir: Path, cfg: DictConfig) -> None:
    """Keep the resolved config, and per launch the git SHA and package versions."""
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
        }
    )
    with atomic_path(info_path) as tmp:
        tmp.write_text(json.dumps({"launches": launches}, indent=2) + "\n")


def make_logger(cfg: LoggerConfig, run_dir: Path, run_name: str):
    if cfg.kind == "csv":
        from pytorch_lightning.loggers import CSVLogger

        # a new version_N per launch: a resumed run never overwrites earlier metrics
        return CSVLogger(save_dir=str(run_dir), name="csv")
    if cfg.kind == "wandb":
        from pytorch_lightning.loggers import WandbLogger

        if cfg.mode not in ("offline", "online", "disabled"):
            raise ValueError(f"logger.mode must be offline | online | disabled, got {cfg.mode!r}")
        return WandbLogger(
            project=cfg.project,
            name=run_name,
            save_dir=str(run_dir),
            group=cfg.group,
            tags=list(cfg.tags),
            mode=cfg.mode,
            offline=cfg.mode == "offline",
        )
    raise ValueError(f"logger.kind must be csv | wandb, got {cfg.kind!r}")


def resume_path(ckpt_path: str | None, ckpt_dir: Path) -> str | None:
    """``null``: fresh; ``auto``: ``last.ckpt`` of this run dir if present; else a path."""
    if ckpt_path in (None, "", "none"):
        return None
    if ckpt_path == "auto":
        last = ckpt_dir / "last.ckpt"
        return str(last) if last.is_file() else None
    if not Path(ckpt_path).is_file():
        raise FileNotFoundError(f"ckpt_path {ckpt_path} does not exist")
    return ckpt_path


def train(cfg: DictConfig) -> TrainResult:
    groups = check_config(cfg)
    pl.seed_everything(cfg.seed, workers=True)
    run_dir = Path(cfg.run_dir)
    ckpt_dir = run_dir / "checkpoints"
    resume = resume_path(cfg.ckpt_path, ckpt_dir)
    if resume is not None and (run_dir / "config.yaml").is_file():
        check_same_run(run_dir / "config.yaml", cfg)
    write_run_info(run_dir, cfg)
    train_images, validation = resolve_data(groups["data"])
    datamodule = CopyDetectionDataModule(
        train_images,
        validation,
        groups["augment"],
        groups["model"],
        cfg.batch_size,
        num_workers=cfg.num_workers,
        seed=cfg.seed,
        eval_batch_size=cfg.eval_batch_size,
    )
    module = CopyDetectionModule(
        model=asdict(groups["model"]),
        loss=asdict(groups["loss"]),
        optim=asdict(groups["optim"]),
        batch_size=cfg.batch_size,
    )
    monitor = "val/micro_ap" if validation is not None else None
    checkpoint = ModelCheckpoint(
        dirpath=ckpt_dir,
        monitor=monitor,
        mode="max",
        save_last=True,
        save_top_k=1,
        filename="best-epoch{epoch:03d}" if monitor else "epoch{epoch:03d}",
        auto_insert_metric_name=False,
    )
    trainer = pl.Trainer(
        **OmegaConf.to_container(cfg.trainer, resolve=True),
        default_root_dir=str(run_dir),
        logger=make_logger(groups["logger"], run_dir, cfg.run_name),
        callbacks=[checkpoint, TQDMProgressBar(refresh_rate=max(1, cfg.progress_refresh))],
    )
    trainer.fit(module, datamodule=datamodule, ckpt_path=resume)
    best = checkpoint.best_model_path or None
    last = str(ckpt_dir / "last.ckpt") if (ckpt_dir / "last.ckpt").is_file() else None
    score = float(checkpoint.best_model_score) if checkpoint.best_model_score is not None else None
    result = TrainResult(str(run_dir), best, last, score)
    with atomic_path(run_dir / "train_result.json") as tmp:
        tmp.write_text(json.dumps(asdict(result), indent=2) + "\n")
    return result
