"""Where the CPU data path stands against its two CPU targets, drawn from the result files of
``bench_train.py --rounds`` and ``ab_trees.py`` under ``benchmarks/results/``
(``make plot-throughput`` writes ``benchmarks/results/throughput.png``):

- left: the CPU cores one 3,659 views/s device (ResNet-50 at 224 px on one H100, model step
  alone) needs for ``disc_full`` on the DISC21-like folder at 224 px: one dot per round of every
  interleaved run, a bar at each run's median, per settings, beside the line at 12 cores;
- right: one core's views/s relative to the issue-time code in the same run, side by side
  (``ab_trees.py``, whose first tree is labelled ``issue``), for ``disc_full`` per data set and
  settings: the median over rounds, and each round where the file keeps them, beside the line
  at 2x.

Each file is one run on one machine; the figure shows the runs as they were taken, their
spread included, and nothing averaged across them.
"""

from __future__ import annotations

import argparse
import json
import re
import statistics
from pathlib import Path

RESULTS = Path(__file__).resolve().parent / "results"
# bench_train.py's H100_RESNET50_VIEWS_S (ResNet-50 at 224 px, one H100, model step alone),
# which its files record as info.target_views_per_s; not imported: bench_train loads torch
TARGET_VIEWS_PER_S = 3659.0
CORES_GOAL = 12
SPEEDUP_GOAL = 2.0


def settings_label(work_side: float | None, decode_min_side: int | None, size: int) -> str:
    """The README's names for the data path settings a row ran with: the GPU feed is
    ``augment.work_side=1`` with JPEGs decoded down to the training ``size``; the defaults
    decode down to twice it (``None``: a tree that predates the setting)."""
    if work_side == 1 and decode_min_side == size:
        return "GPU feed"
    if decode_min_side not in (None, 2 * size):
        return f"decode_min_side={decode_min_side}"
    return "work_side=1" if work_side == 1 else "defaults"


def run_date(path: Path, info: dict) -> str:
    """The date in the file's name, else the one in its ``when``, else the name itself."""
    for text in (path.name, info.get("when", "")):
        if m := re.search(r"\d{4}-\d{2}-\d{2}", text):
            return m.group(0)
    return path.stem


def _row_settings(row: dict) -> str:
    """A ``bench_train.py`` row's settings: the ones it records having applied (since
    2026-12-02), else those its Hydra overrides name."""
    if "decode_min_side" in row:
        return settings_label(row.get("work_side"), row["decode_min_side"], row["train_size"])
    pairs = [*row.get("base_overrides", []), *row.get("overrides", [])]  # the variant's last
    overrides = dict(o.split("=", 1) for o in pairs if "=" in o)
    work_side, min_side = (
        overrides.get(k) for k in ("augment.work_side", "data.decode_min_side")
    )  # absent or null: the default
    return settings_label(
        float(work_side) if work_side not in (None, "null", "None") else None,
        int(min_side) if min_side not in (None, "null", "None") else None,
        row["train_size"],
    )


def cores_runs(
    paths: list[Path], data: str = "disc21like", augment: str = "disc_full", size: int = 224
) -> list:
    """Per interleaved ``bench_train.py`` run and settings: the cores for the target, per round,
    for ``augment`` on ``data`` at training size ``size``."""
    runs = []
    for path in paths:
        doc = json.loads(path.read_text())
        info = doc.get("info", {})
        target = info.get("target_views_per_s", TARGET_VIEWS_PER_S)
        for row in doc.get("rows", []):
            per_core = row.get("loader_views_per_core_s_rounds")
            if (row.get("data"), row.get("augment"), row.get("train_size")) != (
                data,
                augment,
                size,
            ) or not per_core:
                continue
            cores = [target / r for r in per_core]
            runs.append(
                {
                    "file": path.name,
                    "date": run_date(path, info),
                    "settings": _row_settings(row),
                    "cores": cores,
                    "median": statistics.median(cores),
                }
            )
    return runs


def speedup_runs(paths: list[Path], augment: str = "disc_full") -> list:
    """Per ``ab_trees.py`` run measured against the issue-time code: each tree of the checkout
    being measured (labels ``now``, ``now_*``), its median ratio and, where kept, each round's."""
    runs = []
    for path in paths:
        doc = json.loads(path.read_text())
        info = doc.get("info", {})
        rows = [r for r in doc.get("rows", []) if r.get("augment") == augment]
        if not rows or rows[0].get("label") != "issue":
            continue  # not measured against the issue-time code
        ref = rows[0].get("views_per_s_rounds")
        size = info.get("size")
        data = {96: "minidisc, 96 px", 224: "DISC21-like, 224 px"}.get(size, f"{size} px")
        for row in rows[1:]:
            if row["label"] != "now" and not row["label"].startswith("now_"):
                continue
            rounds = row.get("views_per_s_rounds")
            per_round = [x / y for x, y in zip(rounds, ref, strict=True)] if rounds and ref else []
            runs.append(
                {
                    "file": path.name,
                    "date": run_date(path, info),
                    "data": data,
                    "settings": settings_label(row.get("work_side"), row.get("min_side"), size),
                    "median": row["ratio_to_first_median"],
                    "rounds": per_round,
                }
            )
    return runs


COLOURS = {"defaults": "tab:gray", "work_side=1": "tab:blue", "GPU feed": "tab:orange"}


def _run_tag(name: str) -> str:
    """A run file's name without what every such file shares: ``rounds30`` for
    ``train_cpu_disc21like_rounds30_2026-12-01.json``."""
    stem = re.sub(r"_?\d{4}-\d{2}-\d{2}", "", Path(name).stem)
    return stem.removeprefix("train_cpu_disc21like").strip("_") or "run"


CORES_YMAX = 40.0  # the cores axis's top; rounds above it are marked at the top


def _groups(ax, labels: list[str]) -> None:
    """Separate and name runs of equal ``labels`` along the x axis."""
    i = 0
    while i < len(labels):
        j = i
        while j < len(labels) and labels[j] == labels[i]:
            j += 1
        if i:
            ax.axvline(i - 0.5, color="0.8", lw=0.8)
        ax.text(
            (i + j - 1) / 2,
            1.0,
            labels[i],
            transform=ax.get_xaxis_transform(),
            ha="center",
            va="bottom",
            fontsize=8,
        )
        i = j


def draw(cores: list, speedups: list, out: Path):
    """Writes the figure to ``out`` (PNG) and returns it."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(13, 5.6), layout="constrained")
    left, right = fig.subplots(1, 2)
    for ax, runs, key, goal, goal_text in (
        (left, cores, "cores", CORES_GOAL, f"goal: at most {CORES_GOAL} cores"),
        (right, speedups, "rounds", SPEEDUP_GOAL, f"goal: at least {SPEEDUP_GOAL:g}x"),
    ):
        # a stray round (a cold first round took 68 cores) would squash every other dot: the
        # cores axis stops at CORES_YMAX and such rounds are drawn at its top, marked, valued
        top = CORES_YMAX if ax is left else float("inf")
        for x, run in enumerate(runs):
            c = COLOURS.get(run["settings"], "tab:green")
            inside = [v for v in run[key] if v <= top]
            if inside:
                ax.scatter([x] * len(inside), inside, s=14, color=c, alpha=0.6)
            for v in (v for v in run[key] if v > top):
                ax.scatter([x], [0.96 * top], s=30, color=c, marker="^")
                ax.annotate(f"{v:.0f}", (x, 0.96 * top), xytext=(6, -3), textcoords="offset points",
                            fontsize=7, color=c)  # fmt: skip
            ax.hlines(min(run["median"], top), x - 0.3, x + 0.3, color=c, lw=2.5)
        ax.axhline(goal, color="k", ls="--", lw=1)
        ax.annotate(
            goal_text,
            (0, goal),
            xycoords=("axes fraction", "data"),
            xytext=(3, 3),
            textcoords="offset points",
            fontsize=8,
        )
        ax.set_xticks(range(len(runs)), [r["date"] for r in runs])
        ax.tick_params(axis="x", labelsize=7, labelrotation=60)
        ax.set_xlim(-0.6, max(len(runs), 1) - 0.4)
        ax.set_ylim(bottom=0)
        if any(v > top for run in runs for v in run[key]):
            ax.set_ylim(0, top)
    _groups(left, [_run_tag(r["file"]) for r in cores])
    _groups(right, [r["data"] for r in speedups])
    left.set_ylabel(f"CPU cores per {TARGET_VIEWS_PER_S:,.0f} views/s device")
    left.set_title(
        "Cores to feed one GPU: disc_full, DISC21-like folder, 224 px (bench_train)\n",
        fontsize=10,
    )
    right.axhline(1.0, color="k", lw=0.5)
    right.set_ylabel("views/s on one core, x the issue-time code")
    right.set_title("disc_full beside the issue-time code (ab_trees)\n", fontsize=10)
    handles = [left.scatter([], [], color=c, label=name) for name, c in COLOURS.items()]
    handles.append(left.scatter([], [], color="0.5", marker="_", s=120, lw=2.5, label="median"))
    fig.legend(
        handles=handles,
        loc="outside lower center",
        ncols=4,
        fontsize=8,
        title="dots: rounds (where the file keeps them)",
        title_fontsize=8,
    )
    out.parent.mkdir(parents=True, exist_ok=True)
    FigureCanvasAgg(fig).print_png(out)
    return fig


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--results", type=Path, default=RESULTS, help="folder of result files")
    p.add_argument("--out", type=Path, default=RESULTS / "throughput.png")
    a = p.parse_args(argv)
    files = sorted(a.results.glob("*.json"))
    cores = cores_runs([f for f in files if f.name.startswith("train_cpu")])
    speedups = speedup_runs([f for f in files if f.name.startswith("ab_trees")])
    if not cores and not speedups:
        raise SystemExit(f"no interleaved bench_train or ab_trees result in {a.results}")
    order = list(COLOURS)
    cores.sort(
        key=lambda r: (
            r["date"],
            r["file"],
            order.index(r["settings"]) if r["settings"] in order else 9,
        )
    )
    speedups.sort(key=lambda r: (r["data"], r["date"], r["file"]))
    for r in cores:
        print(
            f"{r['file']}: {r['settings']}: cores median {r['median']:.1f} "
            f"({min(r['cores']):.1f}-{max(r['cores']):.1f}, {len(r['cores'])} rounds)"
        )
    for r in speedups:
        print(f"{r['file']}: {r['data']}, {r['settings']}: {r['median']:.2f}x the issue-time code")
    draw(cores, speedups, a.out)
    print(f"wrote {a.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
