"""fisc's Python API: ``fisc.load`` and ``fisc.evaluate`` (also reachable as ``fisc.api.*``).

Both are thin: :func:`load` is :func:`fisc.inference.load_pipeline`, which ``fisc extract``
runs, and :func:`evaluate` is :func:`fisc.evaluation.evaluate` on the inputs ``fisc evaluate``
reads. Nothing heavy is imported until they are called, so ``import fisc`` stays cheap.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import torch

    from fisc.descriptors import Descriptors
    from fisc.evaluation import EvalResult
    from fisc.inference import DescriptorPipeline


def load(
    path: str | Path,
    device: str | torch.device = "cpu",
    *,
    postprocess: str | Path | None = None,
    size: int | None = None,
) -> DescriptorPipeline:
    """The :class:`~fisc.inference.DescriptorPipeline` stored at ``path``, model on ``device``.

    ``path`` is what ``fisc extract`` takes:

    - a frozen artifact folder (``fisc freeze``): verified (manifest, then its golden
      descriptors recomputed on ``device``) and loaded with its own preprocessing and
      post-processor; the final descriptors are the shipped ones;
    - a fisc training checkpoint (``.ckpt``): the model's raw descriptors, or with
      ``postprocess="run"`` the run's fitted post-processor beside the checkpoint
      (``<name>.postprocess.npz``), or ``postprocess=<file.npz>``; ``size`` overrides the
      eval size (not with a post-processor).

    The pipeline turns images into descriptors: ``pipeline.queries(images)`` and
    ``pipeline.references(images)`` (``images`` from :func:`fisc.list_images`) return
    :class:`~fisc.descriptors.Descriptors` (``ids``, float32 ``vectors``), computed on
    the model's device. Anything else at ``path`` raises an error that says what it is.
    """
    from fisc.inference import load_pipeline, source_kind

    kind = source_kind(path)
    return load_pipeline(**{kind: path}, postprocess=postprocess, size=size, device=device)


def evaluate(
    queries: Descriptors | str | Path | None = None,
    references: Descriptors | str | Path | None = None,
    *,
    gt: Mapping[str, str | None] | str | Path,
    submission: str | Path | None = None,
    protocol: str = "leaderboard",
    k: int = 10,
    cap: int | None = None,
    backend: str = "auto",
    disc_ids: bool = False,
) -> EvalResult:
    """Score descriptors as ``fisc evaluate`` does; returns its
    :class:`~fisc.evaluation.EvalResult` (``micro_ap``, ``recall_at_p90``, ``recall_at_1``,
    ``recall_at_10``, counts; ``to_json(path)``).

    - ``queries``, ``references``: :class:`~fisc.descriptors.Descriptors` (e.g. from
      ``pipeline.queries(...)``) or per-set ``.h5`` files as ``fisc extract`` writes them;
      or instead ``submission``: one submission file (``query``, ``reference``, ``*_ids``);
    - ``gt``: the ground-truth CSV (``query_id,reference_id``; an empty reference: no match)
      or a ``{query_id: reference_id or None}`` mapping;
    - ``protocol``: ``leaderboard`` (default), ``isc2021`` (``cap`` pooled pairs, default
      500,000) or ``per_query`` (``k`` neighbours per query); ``backend``: ``auto``,
      ``faiss`` or ``torch``; ``disc_ids``: require DISC21 ids (``Q%05d``, ``R%06d``).
    """
    from fisc.challenge import load_ground_truth
    from fisc.evaluation import evaluate as score
    from fisc.evaluation import read_inputs

    q, r, _ = read_inputs(queries, references, submission)
    truth = gt if isinstance(gt, Mapping) else load_ground_truth(gt, disc_ids=disc_ids)
    return score(q, r, truth, protocol=protocol, k=k, cap=cap, backend=backend, disc_ids=disc_ids)
