"""Resuming a run: which checkpoint to resume from, and refusing to resume one whose
recipe or data changed since it was saved. (Agreement between the ranks of a distributed launch:
:mod:`fisc.train.resume_guard`.)"""

from __future__ import annotations

import glob
import hashlib
import json
import logging
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from fisc.checkpoints import newest_valid_checkpoint, readable
from fisc.train.config import key_default
from fisc.train.lock import live_holder
from fisc.train.resolvers import RESUMABLE_CHANGES

log = logging.getLogger(__name__)


def _flatten(d: dict, prefix: str = "") -> dict[str, Any]:
    out = {}
    for k, v in d.items():
        if isinstance(v, dict) and v:
            out.update(_flatten(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = v
    return out


def recipe_changes(saved: Path, cfg: DictConfig) -> list[str]:
    """The recipe keys (model, loss, data, ...) whose value in ``cfg`` differs from the saved
    config.yaml ``saved``, as ``"key: before -> now"``. A key the saved config lacks (added by a
    newer fisc) is no change when it holds its default; so is a ``_target_`` it lacks that
    names the class of the saved option (``loss.name``)."""
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
        changed.append(f"{key}: {before.get(key, '(absent)')!r} -> {now.get(key, '(absent)')!r}")
    return changed


def check_same_run(saved: Path, cfg: DictConfig) -> None:
    """Refuse to resume a run whose recipe (model, loss, data, ...) has changed
    (:func:`recipe_changes`)."""
    changed = recipe_changes(saved, cfg)
    if changed:
        raise ValueError(
            f"cannot resume {saved.parent}: the config differs from its saved config.yaml in "
            f"{', '.join(changed[:8])}{' ...' if len(changed) > 8 else ''}; use another "
            f"run_dir, or ckpt_path=null to start afresh"
        )


def _mtime(path: Path) -> float:
    try:
        return path.stat().st_mtime
    except OSError:  # removed since it was listed (another launch's clean-up)
        return 0.0


def note_unfinished_siblings(run_dir: Path, cfg: DictConfig, most: int = 2) -> list[Path]:
    """A fresh launch: log the unfinished runs of the same ``run_name`` beside ``run_dir`` (a
    ``last.ckpt``, no ``train_result.json``), newest first, up to ``most``, with the recipe keys
    that differ. The default run dir is named after a hash of the recipe, so a recipe changed
    by accident, or by a newer fisc (``trainer=gpu`` setting the GPU-feeding data settings
    since 2026-12-01), starts a new run instead of resuming the old one; this says so, and how
    to resume it instead. Runs whose launch is training now (their lock held: a sweep's
    parallel jobs, say) are not unfinished and are left out. Returns the runs named."""
    name = str(cfg.get("run_name") or "")
    if not name or not run_dir.name.startswith(f"{name}-"):
        return []  # not a default run dir (<run_name>-<recipe hash>)
    siblings = [
        d
        for d in run_dir.parent.glob(f"{glob.escape(name)}-*")
        if d != run_dir
        and (d / "config.yaml").is_file()
        and (d / "checkpoints" / "last.ckpt").is_file()
        and not (d / "train_result.json").is_file()
        and live_holder(d) is None  # not a run training now (a sweep's parallel jobs)
    ]
    siblings.sort(key=lambda d: _mtime(d / "checkpoints" / "last.ckpt"), reverse=True)
    for d in siblings[:most]:
        try:
            changed = recipe_changes(d / "config.yaml", cfg)
        except Exception as e:  # a best-effort notice: another run's broken file stops nothing
            changed = [f"(its config.yaml is unreadable: {type(e).__name__})"]
        shown = ", ".join(changed[:4]) + (" ..." if len(changed) > 4 else "")
        log.warning(
            "starting a new run in %s; the unfinished run %s (same run_name) differs in %s: to "
            "resume it instead, relaunch with those keys as it had them, or with run_dir=%s",
            run_dir,
            d,
            shown or "nothing but keys a resume may change",
            d,
        )
    return siblings[:most]


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
