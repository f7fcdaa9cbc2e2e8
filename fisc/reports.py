"""Evaluation reports: results table, precision-recall curve and a gallery of errors.

:func:`write_report` writes into one folder, each file atomically:
- ``results.json`` / ``results.md``: the :class:`~fisc.evaluation.EvalResult` table, the P90
  operating point of the pooled list and the gallery entries;
- ``pr_curve.png``: precision against recall of the leaderboard pooled list (the
  ``10 x n_queries`` closest pairs of the ground-truth queries), the P90 point marked with its
  recall and score threshold, μAP in the title; the same figures are in the PNG's text metadata
  (key ``fisc``, JSON);
- ``gallery.html`` and thumbnails in ``gallery/``: the strongest false positives (query,
  retrieved reference, the query's true reference if any) and the missed matches (ground-truth
  pairs absent from the pooled list), plus the lowest-ranked true positives; only when
  ``images`` maps ids to image files.
"""

from __future__ import annotations

import hashlib
import html
import json
import re
from collections.abc import Mapping
from dataclasses import asdict
from pathlib import Path

import numpy as np

from fisc.descriptors import Descriptors
from fisc.evaluation import EvalResult, evaluate, results_table
from fisc.files import atomic_path, write_json
from fisc.metrics.micro_ap import micro_average_precision, precision_recall_curve
from fisc.search.exact import global_capped_search

THUMB = 160


def _pair_score(q: np.ndarray, r: np.ndarray) -> float:
    d = q.astype(np.float64) - r.astype(np.float64)
    return -float(d @ d)


def pooled_predictions(
    queries: Descriptors,
    references: Descriptors,
    ground_truth: Mapping[str, str | None],
    backend: str = "auto",
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Leaderboard pooled list ``(query ids, reference ids, scores)``, best first."""
    in_gt = np.isin(queries.ids, list(ground_truth))
    q_ids, q_vec = queries.ids[in_gt], queries.vectors[in_gt]
    qi, ri, d2 = global_capped_search(q_vec, references.vectors, 10 * len(q_ids), backend=backend)
    return q_ids[qi], references.ids[ri], -d2.astype(np.float64)


def error_cases(
    queries: Descriptors,
    references: Descriptors,
    ground_truth: Mapping[str, str | None],
    pooled: tuple[np.ndarray, np.ndarray, np.ndarray],
    n: int = 12,
) -> dict[str, list[dict]]:
    """The ``n`` strongest false positives, the missed matches and the weakest true positives.

    Scores are ``-squared L2`` (float64). Missed matches (ground-truth pairs not in the pooled
    list) come closest first; each entry carries the pair's own score.
    """
    pq, pr, ps = pooled
    q_row = {q: i for i, q in enumerate(queries.ids.tolist())}
    r_row = {r: i for i, r in enumerate(references.ids.tolist())}

    def true_pair(qid: str) -> tuple[str | None, float | None]:
        ref = ground_truth.get(qid)
        if ref is None:
            return None, None
        s = _pair_score(queries.vectors[q_row[qid]], references.vectors[r_row[ref]])
        return ref, s

    pairs = zip(pq.tolist(), pr.tolist(), strict=True)
    is_tp = np.array([ground_truth.get(q) == r for q, r in pairs], bool)
    order = np.lexsort((is_tp.astype(np.int8), -ps))  # pessimistic: FP first among ties
    rank = np.empty(order.size, np.int64)
    rank[order] = np.arange(1, order.size + 1)

    false_positives = []
    for i in order[~is_tp[order]][:n]:
        ref, s = true_pair(str(pq[i]))
        false_positives.append(
            dict(
                query=str(pq[i]),
                reference=str(pr[i]),
                score=float(ps[i]),
                rank=int(rank[i]),
                true_reference=ref,
                true_score=s,
            )
        )
    found = set(zip(pq[is_tp].tolist(), pr[is_tp].tolist(), strict=True))
    missed = []
    for qid, ref in ground_truth.items():
        if ref is not None and (qid, ref) not in found:
            missed.append(dict(query=qid, reference=ref, score=true_pair(qid)[1]))
    missed.sort(key=lambda e: (-e["score"], e["query"]))
    weakest = [
        dict(query=str(pq[i]), reference=str(pr[i]), score=float(ps[i]), rank=int(rank[i]))
        for i in order[is_tp[order]][::-1][:n]
    ]
    return {"false_positives": false_positives, "missed": missed[:n], "weakest_found": weakest}


def _plot_pr(path: Path, precision, recall, metrics, title: str) -> None:
    # the Agg canvas directly, not pyplot: no global backend switch, no GUI, thread-safe
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(6, 4.5), dpi=100)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    ax.plot(recall, precision, lw=1.5, label="pooled list")
    ax.axhline(0.9, color="grey", lw=0.8, ls=":")
    if metrics.threshold_at_p90 is not None:
        r90 = metrics.recall_at_p90
        ok = np.flatnonzero(precision >= 0.9)
        end = ok[np.argmax(recall[ok] == recall[ok].max())]  # the R@P90 prefix's last item
        ax.plot([r90], [precision[end]], "o", color="C3", label="P90 operating point")
        ax.annotate(
            f"R@P90 = {r90:.4f}\nscore ≥ {metrics.threshold_at_p90:.6g}",
            (r90, precision[end]),
            xytext=(-110 if r90 > 0.6 else 8, -36),
            textcoords="offset points",
            fontsize=8,
            arrowprops=dict(arrowstyle="-", color="C3", lw=0.8),
        )
    else:
        ax.text(0.02, 0.05, "precision never reaches 0.9", fontsize=8, transform=ax.transAxes)
    ax.set(xlim=(0, 1.02), ylim=(0, 1.02), xlabel="recall", ylabel="precision")
    ax.set_title(f"{title}: μAP = {metrics.micro_ap:.4f}")
    ax.grid(alpha=0.3)
    ax.legend(loc="lower left", fontsize=8)
    meta = {k: getattr(metrics, k) for k in ("micro_ap", "recall_at_p90", "threshold_at_p90")}
    meta["n_predictions"] = metrics.n_predictions
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", metadata={"fisc": json.dumps(meta)})


def _thumbnail(src: Path, dst: Path) -> None:
    from PIL import Image

    with Image.open(src) as im:
        im = im.convert("RGB")
        im.thumbnail((THUMB, THUMB))
        with atomic_path(dst) as tmp:
            im.save(tmp, format="JPEG", quality=85)


def thumbnail_name(img_id: str) -> str:
    """A file name for an id's thumbnail that stays inside the gallery folder and needs no
    escaping in HTML or a URL: the id's safe characters plus a digest of the whole id (ids
    that differ only in unsafe characters get different names)."""
    safe = re.sub(r"[^A-Za-z0-9_-]", "_", img_id)[:64]
    return f"{safe}-{hashlib.sha1(img_id.encode('utf-8')).hexdigest()[:10]}.jpg"


def _write_gallery(out: Path, cases: dict, images: Mapping[str, Path]) -> Path:
    thumbs = out / "gallery"
    done: dict[str, str | None] = {}

    def cell(img_id: str | None, caption: str) -> str:
        if img_id is None:
            return '<td class="none">—</td>'
        if img_id not in done:
            src = images.get(img_id)
            if src is not None and Path(src).is_file():
                name = thumbnail_name(img_id)
                _thumbnail(Path(src), thumbs / name)
                done[img_id] = f"gallery/{name}"
            else:
                done[img_id] = None
        alt = html.escape(img_id, quote=True)
        img = f'<img src="{done[img_id]}" alt="{alt}">' if done[img_id] else ""
        return f"<td>{img}<br>{html.escape(img_id)}<br><small>{html.escape(caption)}</small></td>"

    def score(s) -> str:
        return "" if s is None else f"score {s:.6g}"

    parts = [
        "<!doctype html><html><head><meta charset='utf-8'><title>fisc error gallery</title>",
        "<style>body{font-family:sans-serif}td{text-align:center;padding:4px;vertical-align:top}"
        "img{max-width:160px;max-height:160px}.none{color:#999}</style></head><body>",
    ]
    sections = (
        ("false_positives", "Strongest false positives", ("query", "retrieved", "true reference")),
        ("missed", "Missed matches (not in the pooled list)", ("query", "true reference")),
        ("weakest_found", "Lowest-ranked true positives", ("query", "true reference")),
    )
    for kind, title, heads in sections:
        parts.append(f"<h2>{title} ({len(cases[kind])})</h2><table>")
        parts.append("<tr>" + "".join(f"<th>{h}</th>" for h in heads) + "</tr>")
        for e in cases[kind]:
            rank = f"rank {e['rank']}, " if "rank" in e else ""
            row = cell(e["query"], "") + cell(e["reference"], rank + score(e["score"]))
            if kind == "false_positives":
                row += cell(e["true_reference"], score(e["true_score"]))
            attrs = f'data-kind="{kind}" data-query="{html.escape(e["query"])}"'
            attrs += f' data-reference="{html.escape(e["reference"])}"'
            parts.append(f"<tr {attrs}>{row}</tr>")
        parts.append("</table>")
    parts.append("</body></html>")
    path = out / "gallery.html"
    with atomic_path(path) as tmp:
        tmp.write_text("\n".join(parts) + "\n", encoding="utf-8")
    return path


# what write_report may write into its folder (fisc evaluate --report refuses to replace them)
REPORT_FILES = ("results.json", "results.md", "pr_curve.png", "gallery.html")


def write_report(
    out_dir: str | Path,
    queries: Descriptors,
    references: Descriptors,
    ground_truth: Mapping[str, str | None],
    result: EvalResult | None = None,
    images: Mapping[str, str | Path] | None = None,
    n_gallery: int = 12,
    name: str = "system",
    backend: str = "auto",
) -> dict[str, Path]:
    """Write the evaluation report into ``out_dir``; return ``{kind: path}`` of what was written.

    ``result`` defaults to ``evaluate(queries, references, ground_truth)`` (leaderboard). The
    curve and gallery always use the leaderboard pooled list. ``images`` maps query and
    reference ids to image files; without it the gallery is skipped (noted in ``results.md``).
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    if result is None:
        result = evaluate(queries, references, ground_truth, backend=backend)
    pooled = pooled_predictions(queries, references, ground_truth, backend=backend)
    metrics = micro_average_precision(*pooled, ground_truth)
    precision, recall, _ = precision_recall_curve(*pooled, ground_truth)
    cases = error_cases(queries, references, ground_truth, pooled, n_gallery)
    paths: dict[str, Path] = {}

    _plot_pr(out / "pr_curve.png", precision, recall, metrics, name)
    paths["pr_curve"] = out / "pr_curve.png"
    if images:
        paths["gallery"] = _write_gallery(out, cases, images)
        note = "Gallery: [gallery.html](gallery.html)."
    else:
        note = "No gallery: no images were given."

    summary = {
        "systems": {name: asdict(result)},
        "pooled": {
            "protocol": "leaderboard",
            "micro_ap": metrics.micro_ap,
            "recall_at_p90": metrics.recall_at_p90,
            "threshold_at_p90": metrics.threshold_at_p90,
            "n_predictions": metrics.n_predictions,
            "n_gt_pairs": metrics.n_gt_pairs,
            "n_true_positives": metrics.n_true_positives,
        },
        "gallery": cases,
    }
    write_json(out / "results.json", summary)
    paths["json"] = out / "results.json"
    thr = "none" if metrics.threshold_at_p90 is None else f"{metrics.threshold_at_p90:.6g}"
    md = [
        results_table({name: result}),
        "",
        f"Leaderboard pooled list: {metrics.n_predictions} predictions, "
        f"{metrics.n_true_positives} of {metrics.n_gt_pairs} ground-truth pairs found; "
        f"R@P90 = {metrics.recall_at_p90:.4f} at score ≥ {thr}. "
        f"{metrics.n_gt_pairs - metrics.n_true_positives} missed. ![PR curve](pr_curve.png)",
        "",
        note,
    ]
    with atomic_path(out / "results.md") as tmp:
        tmp.write_text("\n".join(md) + "\n", encoding="utf-8")
    paths["markdown"] = out / "results.md"
    return paths
