"""What a run records in its folder: ``config.yaml`` and ``run_info.json`` (per launch: git
SHA, package versions, data fingerprint) when it starts, ``train_result.json``
(:class:`TrainResult`) when it ends."""

from __future__ import annotations

import json
import logging
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from omegaconf import DictConfig, OmegaConf

from fisc.checkpoints import load_checkpoint
from fisc.files import atomic_path, write_json
from fisc.provenance import git_dirty, git_sha, package_versions

log = logging.getLogger(__name__)


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
    write_json(info_path, {"launches": launches})


def write_train_result(path: Path, result: TrainResult) -> None:
    """``train_result.json`` at ``path``, written atomically."""
    write_json(path, asdict(result))


def _recorded_fit_minutes(run_dir: Path, default: float) -> float:
    try:
        recorded = json.loads((run_dir / "train_result.json").read_text()).get("fit_minutes")
    except (OSError, ValueError, AttributeError):
        return default
    return recorded if isinstance(recorded, (int, float)) else default


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
