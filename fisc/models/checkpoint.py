"""Rebuilding the descriptor model from a training checkpoint (no Lightning needed)."""

from __future__ import annotations

from pathlib import Path

from fisc.checkpoints import load_checkpoint
from fisc.models.descriptor import DescriptorModel, ModelConfig, build_descriptor_model
from fisc.models.weights import WeightsConfig


def _read(path: str | Path) -> tuple[ModelConfig, dict, dict]:
    """``(model config, its dict without weights, state dict)`` of a fisc training checkpoint."""
    path = Path(path)
    ckpt = load_checkpoint(path)
    try:
        model_dict = dict(ckpt["hyper_parameters"]["model"])
        state = ckpt["state_dict"]
    except (KeyError, TypeError) as e:
        raise ValueError(
            f"{path} is not a fisc training checkpoint (no model hyper-parameters)"
        ) from e
    weights = model_dict.pop("weights", {})
    return ModelConfig(**model_dict, weights=WeightsConfig(**weights)), model_dict, state


def checkpoint_model_config(path: str | Path) -> ModelConfig:
    """The model config a fisc training checkpoint was trained with (no model is built)."""
    return _read(path)[0]


def load_checkpoint_model(path: str | Path) -> tuple[DescriptorModel, ModelConfig]:
    """The descriptor model stored in a fisc training checkpoint, in eval mode, on CPU."""
    cfg, model_dict, state = _read(path)
    model = build_descriptor_model(
        ModelConfig(**{**model_dict, "weights": WeightsConfig(source="none")})
    )
    prefix = "model."
    model_state = {k[len(prefix) :]: v for k, v in state.items() if k.startswith(prefix)}
    model.load_state_dict(model_state, strict=True)
    return model.eval(), cfg
