"""Loading a frozen artifact: the verified :class:`~fisc.inference.DescriptorPipeline` of
its files (layout: :mod:`fisc.export.artifact`)."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import torch

from fisc.export.artifact import MODEL_FILE, ArtifactError
from fisc.export.card import _check_weights_metadata, card_model_config, read_card
from fisc.export.golden import check_golden
from fisc.export.manifest import artifact_hash, verify_manifest
from fisc.inference import DescriptorPipeline
from fisc.models.descriptor import DescriptorModel, ModelConfig, build_descriptor_model
from fisc.models.weights import WeightsConfig


def _rebuild(cfg: ModelConfig, weights: Path, postprocess: str | None = None) -> DescriptorModel:
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    try:
        _check_weights_metadata(weights, cfg, postprocess)
        state = load_file(str(weights))
    except (SafetensorError, OSError) as e:
        raise ArtifactError(f"{weights.name}: unreadable safetensors file ({e})") from e
    model = build_descriptor_model(dataclasses.replace(cfg, weights=WeightsConfig(source="none")))
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as e:
        raise ArtifactError(f"{weights.name}: weights do not fit the model card ({e})") from e
    return model.eval()


def _pipeline(cfg: ModelConfig, root: Path, pp_card: dict | None) -> DescriptorPipeline:
    """The pipeline of an artifact folder's own files: weights, and post-processor if any."""
    pp = None
    if pp_card:
        from fisc.postprocess.spec import PostProcessor

        path = root / pp_card["file"]
        try:
            pp = PostProcessor.load(path)
        except (OSError, ValueError, KeyError) as e:
            raise ArtifactError(f"{pp_card['file']}: unreadable post-processor ({e})") from e
        if pp.spec != pp_card["spec"] or pp.dims != pp_card["dims"]:
            raise ArtifactError(
                f"{pp_card['file']}: spec {pp.spec!r} ({pp.dims}-d) differs from the model "
                f"card's {pp_card['spec']!r} ({pp_card['dims']}-d)"
            )
    model = _rebuild(cfg, root / MODEL_FILE, pp_card["spec"] if pp_card else None)
    return DescriptorPipeline(model, cfg, pp)


def load_postprocessor(root: str | Path):
    """The artifact's fitted post-processor, or ``None`` if it was frozen without one."""
    card = read_card(root)
    if not card.get("postprocess"):
        return None
    from fisc.postprocess.spec import PostProcessor

    return PostProcessor.load(Path(root) / card["postprocess"]["file"])


def load_artifact(
    root: str | Path,
    verify: bool = True,
    tolerance: float = 0.0,
    device: str | torch.device = "cpu",
) -> DescriptorPipeline:
    """The artifact's :class:`~fisc.inference.DescriptorPipeline` (model in eval mode on
    ``device``, preprocessing, post-processor), its ``artifact_hash`` set.

    With ``verify`` the manifest is checked and the golden descriptors (model output and
    final descriptors of each role) are recomputed on ``device`` (``tolerance`` 0:
    bit-identical, as holds on CPU; allow some on GPU)."""
    root = Path(root)
    if not root.is_dir():
        raise ArtifactError(f"artifact directory {root} does not exist")
    digest = verify_manifest(root) if verify else artifact_hash(root)
    card = read_card(root)
    cfg = card_model_config(card)
    if not (root / MODEL_FILE).is_file():
        raise ArtifactError(f"{MODEL_FILE}: missing from artifact {root}")
    pipeline = _pipeline(cfg, root, card.get("postprocess"))
    pipeline.artifact_hash = digest
    if verify:
        check_golden(pipeline, root, tolerance, device)
    pipeline.to(device).model.eval()
    return pipeline
