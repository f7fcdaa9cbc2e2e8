"""Reading a frozen artifact's files (layout: :mod:`fisc.export.artifact`): its model, rebuilt
from the model card and ``model.safetensors``, and its post-processor, after checking the
manifest. :meth:`fisc.inference.DescriptorPipeline.from_artifact` assembles them into a pipeline
and checks its golden descriptors; this module builds no pipeline, so that the dependency runs
one way (inference -> export)."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import TYPE_CHECKING

from fisc.export.artifact import MODEL_FILE, ArtifactError
from fisc.export.card import _check_weights_metadata, card_model_config, read_card
from fisc.export.manifest import artifact_hash, verify_manifest
from fisc.models.descriptor import DescriptorModel, ModelConfig, build_descriptor_model
from fisc.models.weights import WeightsConfig

if TYPE_CHECKING:
    from fisc.postprocess.spec import PostProcessor


@dataclasses.dataclass
class ArtifactParts:
    """What an artifact folder holds: the model (eval mode), its config, the post-processor
    (``None`` if frozen without one) and the artifact hash."""

    model: DescriptorModel
    model_cfg: ModelConfig
    postprocessor: PostProcessor | None
    artifact_hash: str


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


def model_and_postprocessor(
    cfg: ModelConfig, root: Path, pp_card: dict | None
) -> tuple[DescriptorModel, PostProcessor | None]:
    """An artifact folder's own files: weights, and post-processor if any."""
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
    return model, pp


def read_artifact(root: str | Path, verify: bool = True) -> ArtifactParts:
    """The parts of the artifact at ``root``; with ``verify`` its manifest is checked first
    (:func:`~fisc.export.manifest.verify_manifest`)."""
    root = Path(root)
    if not root.is_dir():
        raise ArtifactError(f"artifact directory {root} does not exist")
    digest = verify_manifest(root) if verify else artifact_hash(root)
    card = read_card(root)
    cfg = card_model_config(card)
    if not (root / MODEL_FILE).is_file():
        raise ArtifactError(f"{MODEL_FILE}: missing from artifact {root}")
    model, pp = model_and_postprocessor(cfg, root, card.get("postprocess"))
    return ArtifactParts(model, cfg, pp, digest)
