"""Exact global-cap search: fisc's backends against isc2021's own faiss pipeline, same run.

    python benchmarks/bench_search.py --nq 20000 --nr 100000 --d 256 [--out FILE]

Synthetic unit descriptors: ``nr`` random references; ``nq`` queries of which 20 % are noisy
copies of distinct references (noise norm drawn in [0.5, 3] before renormalising, so some
copies are hard) and the rest random with no match. Every query is in the ground truth and the
cap is ``10 x nq`` (leaderboard protocol).

Pipelines, each in a fresh subprocess that loads the same ``.npy`` files; peak memory is the
increase of the process's peak RSS (``VmHWM``, reset through ``/proc/self/clear_refs`` just
before the search, after loading the data and importing faiss/torch) over its RSS then:
- ``official``: isc2021's ``search_with_capped_res`` as its scripts do it: ``faiss.IndexFlatL2``,
  queries fed by ``query_iterator`` (batches 32, 64, ... up to 20k),
  ``faiss.contrib.exhaustive_search.range_search_max_results`` with initial radius 1e10,
  ``max_results = 2 x cap``, ``min_results = cap``, ``ngpu = 0``, then the result cropped to
  exactly ``cap`` with ``argpartition``; score = −distance (float32); μAP by a re-implementation
  of isc2021's ``precision_recall`` (sort by (score, not-TP) descending) and
  ``average_precision`` (Σ Δrecall · precision);
- ``fisc-faiss`` / ``fisc-torch``: ``fisc.search.exact.global_capped_search`` with that
  backend (float64-refined distances), μAP by ``fisc.metrics.micro_ap.micro_average_precision``.
Times are wall seconds of search + μAP (also search alone). Each pipeline's floor is the
wall time of the ``2·nq·nr·d`` distance arithmetic itself, done by the BLAS that pipeline calls
at the problem's own size: every query against every reference as float32 products of
4,096 x 16,384 blocks into one reused buffer, in a fresh process like the pipelines, best of
two passes. The BLAS is torch's for ``fisc-torch`` and the OpenBLAS bundled with faiss (called
through its ``cblas_sgemm``) for ``official`` and ``fisc-faiss``. ``--repeats`` rounds (3):
in each, every BLAS's floor, then the pipelines on that BLAS (in reverse order every other
round); a pipeline's ratios to its floor and to ``official`` are taken within a round (the
machine's speed drifts between minutes), and the table gives their median with the spread
over the rounds. The peak rate of each BLAS
on a 2048 × d by d × 32768 product (best of runs repeated until the best stops improving) and
the floor it would give are reported beside it. The row ``auto`` picks on this CPU
(:mod:`fisc.search.choose`) is marked.
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

PIPELINES = ("official", "fisc-faiss", "fisc-torch")


def make_data(nq: int, nr: int, d: int, seed: int = 0):
    rng = np.random.default_rng(seed)

    def unit(x):
        x /= np.linalg.norm(x, axis=1, keepdims=True)
        return x.astype(np.float32)

    r = np.empty((nr, d), np.float32)
    for s in range(0, nr, 50_000):
        r[s : s + 50_000] = unit(rng.standard_normal((min(50_000, nr - s), d)))
    q = unit(rng.standard_normal((nq, d)))
    n_match = nq // 5
    qrows = rng.choice(nq, n_match, replace=False)
    rrows = rng.choice(nr, n_match, replace=False)
    noise = unit(rng.standard_normal((n_match, d))) * rng.uniform(0.5, 3.0, (n_match, 1))
    q[qrows] = unit(r[rrows] + noise)
    gt = np.full(nq, -1, np.int64)
    gt[qrows] = rrows
    return q, r, gt


def official_search(xq, xb, num_results):
    """isc2021's ``search_with_capped_res`` (CPU)."""
    import faiss
    from faiss.contrib import exhaustive_search

    def query_iterator(x):
        bs, i = 32, 0
        while i < len(x):
            xi = x[i : i + bs]
            yield xi
            if bs < 20_000:
                bs *= 2
            i += len(xi)

    index = faiss.IndexFlatL2(xb.shape[1])
    index.add(xb)
    _, lims, dis, ids = exhaustive_search.range_search_max_results(
        index, query_iterator(xq), 1e10, max_results=2 * num_results, min_results=num_results,
        ngpu=0,
    )  # fmt: skip
    if len(dis) > num_results:
        mask = np.zeros(len(dis), bool)
        mask[dis.argpartition(num_results)[:num_results]] = True
        counts = [mask[lims[i] : lims[i + 1]].sum() for i in range(len(xq))]
        lims = np.r_[0, np.cumsum(counts)]
        dis, ids = dis[mask], ids[mask]
    qi = np.repeat(np.arange(len(xq)), np.diff(lims).astype(np.int64))
    return qi, ids.astype(np.int64), dis


def official_micro_ap(y_true: np.ndarray, scores: np.ndarray, n_gt: int) -> float:
    """isc2021's precision_recall + average_precision: ties ranked false positives first."""
    order = np.lexsort((~y_true, scores))[::-1]
    y = y_true[order]
    precision = np.cumsum(y) / np.arange(1, len(y) + 1)
    recall = np.cumsum(y) / n_gt
    return float(np.sum(np.diff(recall, prepend=0.0) * precision))


def _status_kib(key: str) -> int:
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith(key + ":"))


def _reset_peak_rss() -> None:
    """Reset VmHWM (the peak RSS) to the current RSS (Linux >= 4.0)."""
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")


def _cores() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()


def worker(pipeline: str, data: Path) -> dict:
    if pipeline.startswith("floor-"):
        return dict(pipeline=pipeline, seconds=sustained_floor(pipeline[6:], data))
    q, r, gt = (np.load(data / f"{n}.npy") for n in ("q", "r", "gt"))
    import faiss  # noqa: F401
    import torch

    from fisc.data.ids import format_id
    from fisc.metrics.micro_ap import micro_average_precision
    from fisc.search.exact import global_capped_search

    torch.set_num_threads(_cores())
    cap, n_gt = 10 * len(q), int((gt >= 0).sum())
    q_ids = np.array([format_id("query", i) for i in range(len(q))])
    r_ids = np.array([format_id("reference", i) for i in range(len(r))])
    ground_truth = {q_ids[i]: (r_ids[g] if g >= 0 else None) for i, g in enumerate(gt)}
    _reset_peak_rss()
    rss0 = _status_kib("VmRSS")
    t0 = time.perf_counter()
    if pipeline == "official":
        qi, ri, d2 = official_search(q, r, cap)
        t1 = time.perf_counter()
        ap = official_micro_ap(gt[qi] == ri, -d2, n_gt)
    else:
        qi, ri, d2 = global_capped_search(q, r, cap, backend=pipeline.split("-")[1])
        t1 = time.perf_counter()
        ap = micro_average_precision(q_ids[qi], r_ids[ri], -d2.astype(np.float64), ground_truth)
        ap = ap.micro_ap
    t2 = time.perf_counter()
    peak = _status_kib("VmHWM")
    # cross-check: the other metric implementation on the same list
    if pipeline == "official":
        ap_other = micro_average_precision(
            q_ids[qi], r_ids[ri], -d2.astype(np.float64), ground_truth
        )
        ap_other = ap_other.micro_ap
    else:
        ap_other = official_micro_ap(gt[qi] == ri, -d2.astype(np.float64), n_gt)
    return dict(
        pipeline=pipeline, seconds=t2 - t1 + (t1 - t0), search_seconds=t1 - t0,
        peak_rss_increase_mib=(peak - rss0) / 1024, micro_ap=ap, micro_ap_other_metric=ap_other,
        n_predictions=len(qi),
    )  # fmt: skip


def _faiss_sgemm():
    """``cblas_sgemm`` of the BLAS that faiss itself calls (the OpenBLAS bundled in the
    faiss-cpu wheel), or None when faiss links a BLAS this cannot find."""
    import ctypes
    import glob

    import faiss

    libs = sorted(glob.glob(os.path.join(os.path.dirname(faiss.__file__), "..", "faiss_cpu.libs",
                                         "lib*blas*.so*")))  # fmt: skip
    if not libs:
        return None
    fn = ctypes.CDLL(libs[0]).cblas_sgemm
    ptr, i = ctypes.c_void_p, ctypes.c_int
    fn.argtypes = [i, i, i, i, i, i, ctypes.c_float, ptr, i, ptr, i, ctypes.c_float, ptr, i]
    return fn


def _best_until_stable(fn, min_runs: int = 5, max_runs: int = 40, patience: int = 5) -> float:
    """Best wall time of ``fn``, repeated until the best has not improved by more than 1 % for
    ``patience`` runs in a row (at least ``min_runs``, at most ``max_runs``)."""
    fn()
    best, since = float("inf"), 0
    for n in range(max_runs):
        t = time.perf_counter()
        fn()
        dt = time.perf_counter() - t
        since = 0 if dt < 0.99 * best else since + 1
        best = min(best, dt)
        if n + 1 >= min_runs and since >= patience:
            break
    return best


def _product(blas: str, d: int):
    """``product(a, b, c)``: ``c[:len(a), :len(b)] = a · bᵀ`` in float32 by ``blas``
    (``faiss``: the OpenBLAS bundled with faiss, through its ``cblas_sgemm``; ``torch``;
    ``numpy``), for row-major numpy arrays of ``d`` columns and a C-contiguous buffer ``c``."""
    if blas == "faiss":
        sgemm = _faiss_sgemm()
        return lambda a, b, c: sgemm(101, 111, 112, len(a), len(b), d, 1.0, a.ctypes.data, d,
                                     b.ctypes.data, d, 0.0, c.ctypes.data, c.shape[1])  # fmt: skip
    if blas == "torch":
        import torch

        return lambda a, b, c: torch.mm(torch.from_numpy(a), torch.from_numpy(b).T,
                                        out=torch.from_numpy(c)[: len(a), : len(b)])  # fmt: skip
    return lambda a, b, c: np.matmul(a, b.T, out=c[: len(a), : len(b)])


def gemm_rate(d: int, threads: int) -> dict:
    """float32 multiply rate (FLOP/s) of each BLAS the pipelines use, on a 2048 x d by
    d x 32768 product (the shape of one distance block) into one buffer: torch's
    (``fisc-torch``) and the one bundled with faiss (``official``, ``fisc-faiss``), numpy's for
    reference."""
    import torch

    torch.set_num_threads(threads)
    m, n = 2048, 32768
    a = np.random.default_rng(1).standard_normal((m, d), dtype=np.float32)
    b = np.random.default_rng(2).standard_normal((n, d), dtype=np.float32)
    c = np.empty((m, n), np.float32)
    names = ["numpy", "torch"] + (["faiss"] if _faiss_sgemm() is not None else [])
    runs = {name: functools.partial(_product(name, d), a, b, c) for name in names}
    return {name: 2 * m * n * d / _best_until_stable(fn) for name, fn in runs.items()}


FLOOR_BLOCK = (4096, 16384)  # queries x references per product of the sustained floor


def sustained_floor(blas: str, data: Path, passes: int = 2) -> float:
    """Best wall seconds, over ``passes``, of every query times every reference by ``blas``
    (:func:`_product`) in float32 blocks of :data:`FLOOR_BLOCK` into one reused buffer: the
    distance arithmetic of the whole search at this machine's sustained rate."""
    import torch

    q, r = (np.load(data / f"{n}.npy") for n in ("q", "r"))
    torch.set_num_threads(_cores())
    bq, br = FLOOR_BLOCK
    out = np.empty((bq, br), np.float32)
    product = _product(blas, q.shape[1])

    def one_pass():
        for i in range(0, len(q), bq):
            a = q[i : i + bq]
            for j in range(0, len(r), br):
                product(a, r[j : j + br], out)

    best = float("inf")
    for _ in range(passes):
        t = time.perf_counter()
        one_pass()
        best = min(best, time.perf_counter() - t)
    return best


def blas_of(pipeline: str, rates: dict) -> str:
    """The BLAS whose rate is ``pipeline``'s floor."""
    if pipeline == "fisc-torch":
        return "torch"
    return "faiss" if "faiss" in rates else "numpy"


def _median(values) -> float:
    return float(np.median(values))


def _summary(p, runs, floors, official, rates, flops, default) -> dict:
    """One pipeline's row: medians over the rounds, and each round's figures. Ratios are taken
    within a round (against that round's floor and official run), then their median."""
    if len({r["micro_ap"] for r in runs}) != 1:
        sys.exit(f"{p}: μAP differs between rounds: {[r['micro_ap'] for r in runs]}")
    seconds = [r["seconds"] for r in runs]
    row = dict(runs[-1], seconds=_median(seconds), seconds_each=seconds,
               search_seconds=_median([r["search_seconds"] for r in runs]),
               peak_rss_increase_mib=max(r["peak_rss_increase_mib"] for r in runs))  # fmt: skip
    row["blas"] = blas_of(p, rates)
    row["floor_seconds"] = _median(floors)
    row["floor_seconds_each"] = floors
    row["floor_ratio_each"] = [t / f for t, f in zip(seconds, floors, strict=True)]
    row["floor_ratio"] = _median(row["floor_ratio_each"])
    row["peak_rate_floor_seconds"] = flops / rates[row["blas"]]
    row["peak_rate_floor_ratio"] = row["seconds"] / row["peak_rate_floor_seconds"]
    row["cpu_default"] = p == f"fisc-{default}"
    if official:
        base = [r["seconds"] for r in official]
        row["time_ratio_vs_official_each"] = [t / b for t, b in zip(seconds, base, strict=True)]
        row["time_ratio_vs_official"] = _median(row["time_ratio_vs_official_each"])
        row["abs_micro_ap_diff_vs_official"] = abs(row["micro_ap"] - official[0]["micro_ap"])
    return row


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--nq", type=int, default=20_000)
    ap.add_argument("--nr", type=int, default=100_000)
    ap.add_argument("--d", type=int, default=256)
    ap.add_argument("--out", type=Path, default=REPO / "benchmarks/results/search_cpu.json")
    ap.add_argument("--pipelines", nargs="+", default=list(PIPELINES), choices=PIPELINES)
    ap.add_argument("--repeats", type=int, default=3, help="rounds of every pipeline and floor")
    ap.add_argument("--worker", help=argparse.SUPPRESS)
    ap.add_argument("--data", type=Path, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.worker:
        print(json.dumps(worker(args.worker, args.data)))
        return

    load0 = os.getloadavg()
    rates = gemm_rate(args.d, _cores())
    flops = 2 * args.nq * args.nr * args.d
    from fisc.search.choose import cpu_backend

    default, reason = cpu_backend()
    rows, floors = {}, {}
    with tempfile.TemporaryDirectory() as tmp:
        q, r, gt = make_data(args.nq, args.nr, args.d)
        for name, a in (("q", q), ("r", r), ("gt", gt)):
            np.save(Path(tmp) / f"{name}.npy", a)
        del q, r

        def run(job: str) -> dict:
            cmd = [sys.executable, __file__, "--worker", job, "--data", tmp]
            res = subprocess.run(cmd, capture_output=True, text=True, check=False)
            if res.returncode:
                sys.exit(f"{job} failed:\n{res.stderr}")
            return json.loads(res.stdout.strip().splitlines()[-1])

        # rounds: in each, every BLAS's sustained floor just before the pipelines that use it
        for n in range(args.repeats):
            for blas in dict.fromkeys(blas_of(p, rates) for p in args.pipelines):
                floors.setdefault(blas, []).append(run(f"floor-{blas}")["seconds"])
                print(f"  round {n + 1}: floor ({blas} BLAS) {floors[blas][-1]:.2f} s",
                      file=sys.stderr)  # fmt: skip
                same = [p for p in args.pipelines if blas_of(p, rates) == blas]
                for p in same if n % 2 == 0 else same[::-1]:  # alternate who goes first
                    rows.setdefault(p, []).append(run(p))
                    print(f"  round {n + 1}: {p} {rows[p][-1]['seconds']:.2f} s", file=sys.stderr)
    rows = {p: _summary(p, runs, floors[blas_of(p, rates)], rows.get("official"), rates, flops,
                        default) for p, runs in rows.items()}  # fmt: skip

    print(f"nq={args.nq} nr={args.nr} d={args.d} cap={10 * args.nq}; {args.repeats} rounds; "
          "float32 matmul peak " + ", ".join(f"{k} {v / 1e9:.1f}" for k, v in rates.items())
          + " GFLOP/s (best of runs repeated until stable); floor: the whole "
          f"{args.nq:,} x {args.nr:,} product in {FLOOR_BLOCK[0]:,} x {FLOOR_BLOCK[1]:,} blocks, "
          "best of 2 passes, in each round just before the pipelines on that BLAS")  # fmt: skip
    print(f"auto on this CPU -> {default}: {reason}")
    print("medians over the rounds; ratios taken within each round, [min-max] over the rounds")
    head = f"{'pipeline':12} {'time s':>8} {'peak MiB':>9} {'μAP':>10} {'|ΔμAP|':>8} "
    print(head + f"{'×official':>16} {'floor s':>8} {'×floor':>16} {'peak-rate ×':>12}")
    for p, row in rows.items():
        diff = row.get("abs_micro_ap_diff_vs_official", float("nan"))
        vs = row.get("time_ratio_vs_official_each", [float("nan")])
        fl = row["floor_ratio_each"]
        vs_median = row.get("time_ratio_vs_official", float("nan"))
        print(f"{p:12} {row['seconds']:8.2f} {row['peak_rss_increase_mib']:9.0f} "
              f"{row['micro_ap']:10.7f} {diff:8.1e} "
              f"{vs_median:5.2f} [{min(vs):.2f}-{max(vs):.2f}] {row['floor_seconds']:8.2f} "
              f"{row['floor_ratio']:5.2f} [{min(fl):.2f}-{max(fl):.2f}] "
              f"{row['peak_rate_floor_ratio']:12.2f}"
              + ("  <- auto" if row["cpu_default"] else ""))  # fmt: skip
    result = dict(
        nq=args.nq, nr=args.nr, d=args.d, cap=10 * args.nq, repeats=args.repeats,
        cpu_count=_cores(),
        load_average_at_start=load0, floor_block=list(FLOOR_BLOCK),
        machine=platform.processor() or platform.machine(), gemm_flops=rates,
        auto=dict(backend=default, reason=reason),
        goals=dict(time_ratio_vs_official=1.0, abs_micro_ap_diff=1e-6, floor_ratio=2.0),
        pipelines=rows,
    )  # fmt: skip
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
