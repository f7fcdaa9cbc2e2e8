"""Evaluate several post-processing specs on the same descriptors, one table row per spec."""

from __future__ import annotations

from collections.abc import Mapping

from fisc.descriptors.h5io import Descriptors
from fisc.evaluation import evaluate
from fisc.postprocess.spec import PostProcessor


def sweep(
    specs: list[str],
    train: Descriptors,
    queries: Descriptors,
    references: Descriptors,
    ground_truth: Mapping[str, str | None],
    **evaluate_kwargs,
) -> list[dict]:
    """Fit each spec on ``train`` only, transform queries and references, and score them.

    Returns rows ``{spec, micro_ap, recall_at_p90, recall_at_1, dims}``; ``evaluate_kwargs`` go to
    :func:`fisc.evaluation.evaluate` (``protocol``, ``backend``...).
    """
    rows = []
    for spec in specs:
        pp = PostProcessor(spec).fit(train)
        q = pp.transform(queries, role="query")
        r = pp.transform(references, role="reference")
        kw = {"max_dims": pp.max_dims, **evaluate_kwargs}
        res = evaluate(q, r, ground_truth, **kw)
        rows.append(
            {
                "spec": spec,
                "micro_ap": res.micro_ap,
                "recall_at_p90": res.recall_at_p90,
                "recall_at_1": res.recall_at_1,
                "dims": res.dims,
            }
        )
    return rows


def sweep_table(rows: list[dict]) -> str:
    """A Markdown table of :func:`sweep` rows."""
    lines = ["| spec | μAP | R@P90 | R@1 | dims |", "|---|---:|---:|---:|---:|"]
    for r in rows:
        lines.append(
            f"| `{r['spec']}` | {r['micro_ap']:.4f} | {r['recall_at_p90']:.4f} | "
            f"{r['recall_at_1']:.4f} | {r['dims']} |"
        )
    return "\n".join(lines)
