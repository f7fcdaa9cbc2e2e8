"""What an artifact says about itself: the model card (``model_card.json``) and the
metadata of its weights file, written when freezing and checked when loading."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

import timm

from fisc.export.artifact import CARD_FILE, FORMAT, ArtifactError
from fisc.models.descriptor import DescriptorModel, ModelConfig
from fisc.models.weights import WeightsConfig


def _jsonable(value: Any) -> Any:
    return json.loads(json.dumps(value, default=str, sort_keys=True))


def _head(model: DescriptorModel, cfg: ModelConfig) -> str:
    """The head in words, e.g. ``gem(p=3.0) -> linear(1280->256) -> l2``."""
    pool = {
        "gem": f"gem(p={cfg.gem_p}{', learnable' if cfg.gem_learnable else ''})",
        "avg": "avg",
        "cls": "cls token",
        "mean_tokens": "mean of tokens",
    }.get(cfg.pooling, cfg.pooling)
    linear = f"linear({model.projection.in_features}->{model.projection.out_features})"
    return " -> ".join([pool, linear, *(["batchnorm"] if cfg.projection_bn else []), "l2"])


def _model_config_json(cfg: ModelConfig) -> str:
    """The ModelConfig, weights source aside (the weights are the file's), as sorted JSON."""
    model = {k: v for k, v in dataclasses.asdict(cfg).items() if k != "weights"}
    return json.dumps(_jsonable(model), sort_keys=True)


def weights_metadata(
    model: DescriptorModel, cfg: ModelConfig, postprocess: str | None
) -> dict[str, str]:
    """The safetensors metadata of an artifact's ``model.safetensors`` (strings only): what
    the weights are, readable by any safetensors reader (``safe_open(f).metadata()``).

    ``timm.model`` / ``timm.version`` / ``timm.model_kwargs``: the backbone;
    ``descriptor.head``: pooling -> projection -> normalisation; ``descriptor.dims`` and
    ``descriptor.pooling``; ``input``: the preprocessing (JSON); ``fisc.postprocess``: the
    spec the artifact applies after the model (``postprocess.npz``; ``none``: none);
    ``fisc.model_config``: the full ModelConfig (JSON), which :func:`load_artifact` checks
    against the model card."""
    from fisc.data.preprocess import resolve_preprocess

    return {
        "format": "pt",
        "fisc.format": FORMAT,
        "fisc.model_config": _model_config_json(cfg),
        "fisc.postprocess": postprocess or "none",
        "timm.model": cfg.name,
        "timm.version": timm.__version__,
        "timm.model_kwargs": json.dumps(_jsonable(cfg.model_kwargs), sort_keys=True),
        "descriptor.head": _head(model, cfg),
        "descriptor.dims": str(cfg.dims),
        "descriptor.pooling": cfg.pooling,
        "input": json.dumps(resolve_preprocess(cfg).card(), sort_keys=True),
    }


def _check_weights_metadata(weights: Path, cfg: ModelConfig, postprocess: str | None) -> None:
    """Weights whose metadata names another model or post-processing than the model card
    are refused; files without fisc metadata (frozen before it was written) pass."""
    from safetensors import safe_open

    with safe_open(str(weights), framework="pt") as f:
        meta = f.metadata() or {}
    saved = meta.get("fisc.model_config")
    try:
        saved = json.loads(saved) if saved is not None else None
    except ValueError as e:
        raise ArtifactError(f"{weights.name}: metadata fisc.model_config is not JSON ({e})") from e
    if saved is not None and saved != json.loads(_model_config_json(cfg)):
        raise ArtifactError(
            f"{weights.name}: its metadata describes another model ({meta.get('timm.model')}, "
            f"{meta.get('descriptor.dims')}-d, {meta.get('descriptor.pooling')}) than the model "
            f"card ({cfg.name}, {cfg.dims}-d, {cfg.pooling}) (metadata check)"
        )
    saved_pp = meta.get("fisc.postprocess")
    if saved_pp is not None and saved_pp != (postprocess or "none"):
        raise ArtifactError(
            f"{weights.name}: its metadata says post-processing {saved_pp!r}, the model card "
            f"{postprocess or 'none'!r} (metadata check)"
        )


def read_card(root: str | Path) -> dict:
    path = Path(root) / CARD_FILE
    if not path.is_file():
        raise ArtifactError(f"{CARD_FILE}: missing from artifact {root}")
    try:
        card = json.loads(path.read_text(encoding="utf-8"))
    except ValueError as e:
        raise ArtifactError(f"{CARD_FILE}: not valid JSON ({e})") from e
    if card.get("format") != FORMAT:
        raise ArtifactError(f"{CARD_FILE}: format {card.get('format')!r}, expected {FORMAT!r}")
    return card


def card_model_config(card: dict) -> ModelConfig:
    """The ModelConfig of a model card, with weights source ``none`` (they come from the
    artifact's safetensors file)."""
    model = dict(card["model"])
    model.pop("weights", None)
    return ModelConfig(**model, weights=WeightsConfig(source="none"))
