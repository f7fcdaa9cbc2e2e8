"""Frozen descriptor artifacts: a training checkpoint as a self-describing, verifiable folder.

An artifact directory holds

- ``model.safetensors``: the DescriptorModel state dict (backbone + pooling + head) only;
  its metadata (:func:`weights_metadata`) names the timm model, the head, the input and the
  post-processing, so the file says what it is without fisc, and loading checks it against
  the model card;
- ``model_card.json``: what is needed to rebuild the model and its input preprocessing
  (timm name and version, ModelConfig, resize policy, mean/std, dims, pooling), the
  post-processor if any, the training config the checkpoint carries, git SHA, torch version;
- ``probe/``: a fixed probe set of images (by default 8 synthetic PNGs from a seeded rng);
- ``golden.h5``: the model's descriptors of the probe images (before post-processing);
- ``golden_query.h5``, ``golden_reference.h5``: with a post-processor, the final descriptors
  of the probe images in each role (what the pipeline ships);
- ``postprocess.npz``: the fitted post-processor, when one is frozen with the model (by
  default the run's, ``<checkpoint>.postprocess.npz`` beside the checkpoint, fitted at the
  end of training or by ``fisc fit-postprocess``);
- ``MANIFEST.sha256``: ``sha256  relative/path`` for every other file, sorted by path.

The artifact hash is the sha256 of the manifest file. :func:`~fisc.export.load.load_artifact`
verifies the manifest, rebuilds the pipeline (model, preprocessing, post-processor) from the
card, loads the weights strictly and recomputes the golden descriptors; any failed check raises
:class:`ArtifactError` naming the file and check.

The jobs are split by module: :mod:`fisc.export.probes` (the probe images),
:mod:`fisc.export.manifest` (``MANIFEST.sha256``), :mod:`fisc.export.card` (model card and
weights metadata), :mod:`fisc.export.golden` (golden descriptors and their check),
:mod:`fisc.export.freeze` (checkpoint -> artifact) and :mod:`fisc.export.load`
(artifact -> pipeline). This module holds what they share: the format and file names.
"""

from __future__ import annotations

FORMAT = "fisc-artifact/1"
MODEL_FILE = "model.safetensors"
CARD_FILE = "model_card.json"
GOLDEN_FILE = "golden.h5"
PROBE_DIR = "probe"
POSTPROCESS_FILE = "postprocess.npz"
MANIFEST_FILE = "MANIFEST.sha256"
GOLDEN_FINAL_FILES = {"query": "golden_query.h5", "reference": "golden_reference.h5"}


class ArtifactError(RuntimeError):
    """An artifact that is incomplete, tampered with, or does not reproduce its golden output."""
