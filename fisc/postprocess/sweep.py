"""Evaluate several post-processing specs on the same descriptors, one table row per spec."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, fields

from fisc.descriptors import Descriptors
from fisc.evaluation import EvalResult, evaluate, results_table
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

    Every spec is parsed before the first is fitted, so a bad spec anywhere in the list fails
    at once, before any search. Returns rows ``{spec, <every EvalResult field>}`` (what a plain
    ``fisc evaluate`` reports); ``evaluate_kwargs`` go to :func:`fisc.evaluation.evaluate`
    (``protocol``, ``backend``...).
    """
    processors = [PostProcessor(spec) for spec in specs]  # ValueError naming a bad token
    rows = []
    for pp in processors:
        pp.fit(train)
        q = pp.transform(queries, role="query")
        r = pp.transform(references, role="reference")
        kw = {"max_dims": pp.max_dims, **evaluate_kwargs}
        rows.append({"spec": pp.spec, **asdict(evaluate(q, r, ground_truth, **kw))})
    return rows


def sweep_table(rows: list[dict]) -> str:
    """A Markdown table of :func:`sweep` rows: the columns of ``fisc evaluate``'s table, one row
    per spec."""
    names = [f.name for f in fields(EvalResult)]
    return results_table({f"`{r['spec']}`": EvalResult(**{k: r[k] for k in names}) for r in rows})
