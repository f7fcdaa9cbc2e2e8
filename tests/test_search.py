import json

import numpy as np
import pytest

from fisc.search import exact
from fisc.search.exact import global_capped_search, knn, per_query_search

BACKENDS = ["faiss", "torch"]


def as_pairs(qi, ri):
    return list(zip(qi.tolist(), ri.tolist(), strict=True))


def brute_dist2(q, r):
    q64, r64 = q.astype(np.float64), r.astype(np.float64)
    return ((q64[:, None, :] - r64[None, :, :]) ** 2).sum(axis=-1)


def brute_pairs(q, r, cap):
    dist = brute_dist2(q, r)
    pairs = sorted((float(dist[i, j]), i, j) for i in range(len(q)) for j in range(len(r)))
    return pairs[:cap]


@pytest.fixture(scope="module")
def data():
    rng = np.random.default_rng(1)
    r = rng.standard_normal((300, 24)).astype(np.float32)
    q = rng.standard_normal((57, 24)).astype(np.float32)
    q[:10] = r[:10] + 0.01 * rng.standard_normal((10, 24)).astype(np.float32)  # near-duplicates
    return q, r


@pytest.mark.parametrize("backend", BACKENDS)
def test_knn_matches_brute_force(data, backend):
    q, r = data
    dist, idx = knn(q, r, 8, backend=backend)
    assert dist.dtype == np.float32 and idx.dtype == np.int64 and dist.shape == (57, 8)
    full = brute_dist2(q, r)
    expected_idx = np.argsort(full, axis=1, kind="stable")[:, :8]
    np.testing.assert_array_equal(idx, expected_idx)
    expected = np.take_along_axis(full, expected_idx, 1)
    np.testing.assert_allclose(dist, expected, rtol=1e-4, atol=0)  # near-dups included
    assert np.all(np.diff(dist, axis=1) >= 0)


def test_knn_backends_agree_and_tiling(data):
    q, r = data
    d_f, i_f = knn(q, r, 10, backend="faiss")
    d_t, i_t = knn(q, r, 10, backend="torch")
    d_s, i_s = knn(q, r, 10, backend="torch", query_tile=7, ref_tile=13)
    np.testing.assert_array_equal(i_f, i_t)
    np.testing.assert_array_equal(i_t, i_s)
    np.testing.assert_allclose(d_f, d_t, rtol=1e-4)
    np.testing.assert_array_equal(d_t, d_s)
    # k larger than a tile, and unrefined distances
    d_u, i_u = knn(q, r, 40, backend="torch", query_tile=5, ref_tile=11, refine=False)
    d_b, i_b = knn(q, r, 40, backend="torch", refine=False)
    np.testing.assert_array_equal(i_u, i_b)
    np.testing.assert_allclose(d_u, d_b, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("backend", BACKENDS)
def test_knn_ties_by_index_and_k_clamp(backend):
    r = np.array([[1.0, 0], [0, 1], [1, 0], [5, 5]], np.float32)
    q = np.array([[0.0, 0]], np.float32)
    dist, idx = knn(q, r, 10, backend=backend)  # k clamped to 4
    assert idx.tolist() == [[0, 1, 2, 3]]
    np.testing.assert_allclose(dist, [[1, 1, 1, 50]])


@pytest.mark.parametrize("backend", BACKENDS)
def test_per_query_search(data, backend):
    q, r = data
    qi, ri, dist = per_query_search(q, r, 3, backend=backend)
    assert qi.tolist() == np.repeat(np.arange(57), 3).tolist()
    d, i = knn(q, r, 3, backend=backend)
    np.testing.assert_array_equal(ri, i.ravel())
    np.testing.assert_array_equal(dist, d.ravel())


@pytest.mark.parametrize("backend", BACKENDS)
def test_global_cap_matches_brute_force(data, backend):
    q, r = data
    cap = 5 * len(q)
    qi, ri, dist = global_capped_search(q, r, cap, backend=backend)
    expected = brute_pairs(q, r, cap)
    assert as_pairs(qi, ri) == [(i, j) for _, i, j in expected]
    np.testing.assert_allclose(dist, [d for d, _, _ in expected], rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("backend", BACKENDS)
def test_global_cap_one_query_owns_most_pairs(backend, monkeypatch):
    # 20 queries, cap 60 (3 per query on average); query 4 sits in a tight cluster of 150
    # references, so it alone owns all 60 closest pairs: k must grow 3 -> 6 -> ... -> 96.
    rng = np.random.default_rng(7)
    d = 8
    centre = rng.standard_normal(d).astype(np.float32)
    r = 3 * rng.standard_normal((400, d)).astype(np.float32)
    r[100:250] = centre + 0.2 * rng.standard_normal((150, d)).astype(np.float32)
    q = 3 * rng.standard_normal((20, d)).astype(np.float32)
    q[4] = centre
    cap = 60
    calls = []
    real_knn = exact._knn

    def spy(qq, *args):
        calls.append((len(qq), args[1]))
        return real_knn(qq, *args)

    monkeypatch.setattr(exact, "_knn", spy)
    qi, ri, dist = global_capped_search(q, r, cap, backend=backend, query_tile=6, ref_tile=50)
    # all 20 queries with k0 = 4 * 3, then a few of them again with k doubling; query 4 last,
    # with k = 96 (its 96th neighbour is farther than its 60th, the cap-th pair)
    assert calls[0] == (20, 12) and calls[-1] == (1, 96)
    assert all(n < 5 for n, _ in calls[1:])
    expected = brute_pairs(q, r, cap)
    assert set(qi.tolist()) == {4}
    assert as_pairs(qi, ri) == [(i, j) for _, i, j in expected]
    # a cap that spills over into other queries
    cap = 170
    qi, ri, _ = global_capped_search(q, r, cap, backend=backend)
    assert as_pairs(qi, ri) == [(i, j) for _, i, j in brute_pairs(q, r, cap)]
    assert (qi == 4).sum() >= 150


@pytest.mark.parametrize("backend", BACKENDS)
def test_global_cap_ties_and_everything(backend):
    # identical queries and identical references: every distance ties; order = (q, r)
    q = np.ones((3, 2), np.float32)
    r = np.zeros((4, 2), np.float32)
    qi, ri, dist = global_capped_search(q, r, 5, backend=backend)
    assert as_pairs(qi, ri) == [(0, 0), (0, 1), (0, 2), (0, 3), (1, 0)]
    assert np.all(dist == 2.0)
    qi, ri, _ = global_capped_search(q, r, 100, backend=backend)  # cap >= n_q * n_r
    assert len(qi) == 12
    assert as_pairs(qi, ri) == [(i, j) for i in range(3) for j in range(4)]


def pair_bounds(q, r):
    """Each pair's rounding bound, ``c·(‖q‖² + ‖r‖²) + a``."""
    from fisc.search.backends import float32_error_terms

    c, a = float32_error_terms(q.shape[1])
    qn, rn = (np.einsum("ij,ij->i", x, x, dtype=np.float64) for x in (q, r))
    return c * (qn[:, None] + rn[None, :]) + a


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_global_cap_is_exact_whatever_the_float32_rounding_within_its_bound(monkeypatch, seed):
    """The backend ranks with float32 distances that may be off by up to each pair's rounding
    bound; the global search must still return the exact ``cap`` closest pairs. Grid points
    give many exact ties; a stand-in backend perturbs every distance by up to 0.99 x its bound,
    afresh at each search, before ranking, so that without the margins tied pairs fall on the
    wrong side of the cap-th distance, of a query's k-th, or of the refined cut."""
    rng = np.random.default_rng(seed)
    r = rng.integers(0, 3, (60, 4)).astype(np.float32)
    q = np.unique(rng.integers(0, 3, (25, 4)), axis=0).astype(np.float32)  # distinct queries
    full, bound = brute_dist2(q, r), pair_bounds(q, r)
    assert bound.max() < 1e-2  # integer distances: only ties can reorder
    row_of = {row.tobytes(): i for i, row in enumerate(q)}
    calls = []

    def fake_knn(qq, rr, k, *args):  # the searched queries' rows, perturbed anew each search
        rows = [row_of[x.tobytes()] for x in qq]
        noise = np.random.default_rng([seed, len(calls)]).uniform(-0.99, 0.99, (len(rows), 60))
        calls.append(k)
        d = full[rows] + noise * bound[rows]
        idx = np.argsort(d, axis=1, kind="stable")[:, :k]
        return np.take_along_axis(d, idx, 1).astype(np.float32), idx

    monkeypatch.setattr(exact, "_knn", fake_knn)
    for cap in (7, 30, 61, 200):
        for oversample in (1, 4):
            qi, ri, dist = global_capped_search(q, r, cap, oversample=oversample)
            expected = brute_pairs(q, r, cap)
            assert as_pairs(qi, ri) == [(i, j) for _, i, j in expected], (cap, oversample)
            np.testing.assert_array_equal(dist, [d for d, _, _ in expected])


@pytest.mark.parametrize("backend", BACKENDS)
def test_global_cap_one_huge_reference_does_not_widen_every_query_s_margin(backend, monkeypatch):
    """Unit descriptors and one reference 300 times longer: its rounding bound (about 1.5 here,
    more than the unit vectors' whole distance range) must stay its own. With one margin for
    every pair, every query was searched again up to all 300 references."""
    rng = np.random.default_rng(5)
    r = rng.standard_normal((300, 64)).astype(np.float32)
    q = rng.standard_normal((30, 64)).astype(np.float32)
    r /= np.linalg.norm(r, axis=1, keepdims=True)
    q /= np.linalg.norm(q, axis=1, keepdims=True)
    r[11] *= 300
    assert pair_bounds(q, r).max() > 1.0
    searched, real_knn = [], exact._knn

    def spy(qq, *args):
        searched.append(len(qq) * args[1])  # (query, neighbour) pairs asked for
        return real_knn(qq, *args)

    monkeypatch.setattr(exact, "_knn", spy)
    qi, ri, _ = global_capped_search(q, r, 30, backend=backend)
    assert as_pairs(qi, ri) == [(i, j) for _, i, j in brute_pairs(q, r, 30)]
    assert sum(searched) <= 2 * 30 * 4  # the first search (30 x 4) and at most as much again


@pytest.mark.parametrize("backend", BACKENDS)
def test_global_cap_is_exact_below_float32_s_normal_range(backend):
    """Distances of a few subnormal steps: float32 computes one query's as 0 though it is 31
    steps away, while another's is 8 steps exactly. The bound's absolute part keeps the
    second, the true closest, in the refined cut."""
    d = 64
    r = np.zeros((1, d), np.float32)
    q = np.full((22, d), 10.0, np.float32)  # 20 far queries ...
    q[0] = np.float32(np.sqrt(0.49 * 2.0**-149))  # ... exactly 64 x 0.49 = 31.4 steps away
    q[1] = 0
    q[1, 0] = np.float32(2.0**-73)  # ... exactly 2^-146 = 8 steps away
    qi, ri, dist = global_capped_search(q, r, 1, backend=backend)
    assert qi.tolist() == [1] and dist[0] == np.float32(2.0**-146)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("oversample", [1, 4])
def test_global_cap_grows_a_query_whose_kth_distance_ties_the_cap(backend, oversample):
    # 8 identical queries at the origin; 2 references at squared distance 4, then 10 at exactly
    # 1. With cap < 10 every cap-th pool distance t is 1, equal to every query's k-th distance:
    # query 0 owns the whole cap (ties go to the lower query), which it can only get by being
    # searched again although its k-th distance is not below t, only equal to it.
    eye = np.eye(5, dtype=np.float32)
    r = np.concatenate([2 * eye[:2], eye, -eye])
    q = np.zeros((8, 5), np.float32)
    for cap in (8, 10, 12, 25):
        qi, ri, dist = global_capped_search(q, r, cap, backend=backend, oversample=oversample)
        expected = brute_pairs(q, r, cap)
        assert as_pairs(qi, ri) == [(i, j) for _, i, j in expected], cap
        np.testing.assert_array_equal(dist, [d for d, _, _ in expected])


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("n_q", [1, 30])  # one query, and a batch
def test_knn_exact_duplicate_references_keep_the_lower_indices(backend, n_q):
    """Tie rule, on both backends and any tiling: among references at the same distance, the
    lower index comes first, and when k cuts through a tie the lower indices are retained."""
    rng = np.random.default_rng(3)
    base = rng.standard_normal((4, 16)).astype(np.float32)
    r = base[rng.integers(0, 4, 90)]  # 90 references, each an exact copy of one of 4 vectors
    q = rng.standard_normal((n_q, 16)).astype(np.float32)
    expected = np.argsort(brute_dist2(q, r), axis=1, kind="stable")  # stable: lower index first
    for k in (1, 5, 23, 89):
        for tiles in ({}, {"query_tile": 7, "ref_tile": 13}):
            _, idx = knn(q, r, k, backend=backend, **tiles)
            np.testing.assert_array_equal(idx, expected[:, :k], err_msg=f"k={k} {tiles}")


def test_torch_tensor_inputs(data):
    torch = pytest.importorskip("torch")
    q, r = data
    d1, i1 = knn(torch.from_numpy(q), torch.from_numpy(r).double(), 5, backend="torch")
    d2, i2 = knn(q, r, 5, backend="faiss")
    np.testing.assert_array_equal(i1, i2)


def test_input_errors(data):
    q, r = data
    bad = q.copy()
    bad[[3, 9], 1] = np.nan
    bad[11, 0] = np.inf
    with pytest.raises(ValueError, match=r"query descriptors: 3 of 57 rows .*\[3, 9, 11\]"):
        knn(bad, r, 5)
    with pytest.raises(ValueError, match="reference descriptors: 1 of"):
        global_capped_search(q, np.vstack([r, bad[3:4]]), 10)
    with pytest.raises(ValueError, match="query dimension 24 != reference dimension 23"):
        knn(q, r[:, :23], 5)
    with pytest.raises(ValueError, match="reference descriptors are empty"):
        per_query_search(q, r[:0], 5)
    with pytest.raises(ValueError, match="2-D"):
        knn(q[0], r, 5)
    with pytest.raises(ValueError, match="cap must be"):
        global_capped_search(q, r, 0)
    with pytest.raises(ValueError, match="k must be"):
        knn(q, r, 0)
    with pytest.raises(ValueError, match="backend"):
        knn(q, r, 1, backend="annoy")
    with pytest.raises(ValueError, match="no GPU support"):  # faiss-cpu here
        knn(q, r, 1, backend="faiss", device="cuda")


@pytest.mark.gpu
def test_torch_cuda_matches_cpu(data):
    torch = pytest.importorskip("torch")
    if not torch.cuda.is_available():
        pytest.skip("no CUDA device")
    q, r = data
    d_c, i_c = knn(q, r, 10, backend="torch", device="cuda", query_tile=16, ref_tile=64)
    d_f, i_f = knn(q, r, 10, backend="torch", device="cpu")
    np.testing.assert_array_equal(i_c, i_f)
    np.testing.assert_allclose(d_c, d_f, rtol=1e-4)
    qi, ri, _ = global_capped_search(q, r, 200, backend="torch", device="cuda")
    assert as_pairs(qi, ri) == [(i, j) for _, i, j in brute_pairs(q, r, 200)]


@pytest.mark.gpu
def test_faiss_gpu_matches_cpu(data):
    faiss = pytest.importorskip("faiss")
    if not hasattr(faiss, "StandardGpuResources") or faiss.get_num_gpus() == 0:
        pytest.skip("faiss without GPU support")
    q, r = data
    d_g, i_g = knn(q, r, 10, backend="faiss", device="cuda")
    d_c, i_c = knn(q, r, 10, backend="faiss")
    np.testing.assert_array_equal(i_g, i_c)
    np.testing.assert_allclose(d_g, d_c, rtol=1e-4)


# --- auto: the backend measured faster on this machine, cached --------------------------------


@pytest.fixture
def choice_cache(tmp_path, monkeypatch):
    from fisc.search import choose

    monkeypatch.setenv("FISC_CACHE_DIR", str(tmp_path))
    monkeypatch.delenv("FISC_SEARCH_BACKEND", raising=False)
    monkeypatch.setattr(choose, "_memo", {})
    return choose


def _timer(seconds, calls):
    def measure():
        calls.append(1)
        return dict(seconds)

    return measure


@pytest.mark.parametrize("faster", BACKENDS)
def test_auto_picks_the_backend_measured_faster_and_caches_it(choice_cache, faster):
    choose = choice_cache
    slower = next(b for b in BACKENDS if b != faster)
    calls = []
    choice, reason = choose.cpu_backend(_timer({faster: 1.0, slower: 3.0}, calls))
    assert choice == faster and "measured" in reason and calls == [1]
    [record] = json.loads(choose.cache_path().read_text())
    assert record["choice"] == faster and record["key"] == choose.machine_key()
    assert record["seconds"] == {faster: 1.0, slower: 3.0}
    # a new process (no memo) reads the cache and does not measure again
    choose._memo.clear()
    assert choose.cpu_backend(_timer({faster: 9.0, slower: 1.0}, calls))[0] == faster
    assert calls == [1]
    # and search(backend="auto") on the CPU uses it
    assert exact._resolve_backend("auto", "cpu") == faster
    assert exact._resolve_backend("auto", "cuda") == "torch"


def test_auto_measures_again_for_another_machine_or_a_bad_cache(choice_cache):
    choose = choice_cache
    calls = []
    choose.cpu_backend(_timer({"faiss": 1.0, "torch": 2.0}, calls))
    path = choose.cache_path()
    [record] = json.loads(path.read_text())
    record["key"]["cores"] += 1  # measured with another core count
    path.write_text(json.dumps([record]))
    choose._memo.clear()
    assert choose.cpu_backend(_timer({"faiss": 2.0, "torch": 1.0}, calls))[0] == "torch"
    assert len(calls) == 2
    assert len(json.loads(path.read_text())) == 2  # both machines' entries kept
    choose._memo.clear()  # this machine again: its own entry, not measured, not the other's
    assert choose.cpu_backend(_timer({"faiss": 1.0, "torch": 9.0}, calls))[0] == "torch"
    assert len(calls) == 2
    path.write_text("{not json")
    choose._memo.clear()
    assert choose.cpu_backend(_timer({"faiss": 1.0, "torch": 2.0}, calls))[0] == "faiss"
    assert len(calls) == 3 and json.loads(path.read_text())[0]["choice"] == "faiss"


def test_auto_pinned_by_environment_and_unwritable_cache(choice_cache, monkeypatch, tmp_path):
    choose = choice_cache
    monkeypatch.setenv("FISC_SEARCH_BACKEND", "torch")
    assert choose.cpu_backend(_timer({"faiss": 1.0, "torch": 2.0}, calls := [])) == (
        "torch", "pinned by FISC_SEARCH_BACKEND")  # fmt: skip
    assert calls == []
    monkeypatch.setenv("FISC_SEARCH_BACKEND", "numpy")
    with pytest.raises(ValueError, match="FISC_SEARCH_BACKEND"):
        choose.cpu_backend()
    monkeypatch.delenv("FISC_SEARCH_BACKEND")
    blocker = tmp_path / "file"
    blocker.write_text("")
    monkeypatch.setenv("FISC_CACHE_DIR", str(blocker / "sub"))  # a file where a folder must be
    assert choose.cpu_backend(_timer({"faiss": 2.0, "torch": 1.0}, calls))[0] == "torch"


def test_measure_times_both_backends_on_a_small_probe(choice_cache):
    seconds = choice_cache.measure(probe=(16, 512, 8, 4), repeats=1)
    assert set(seconds) == set(BACKENDS) and all(0 < s < 60 for s in seconds.values())


def test_faiss_loader_noise_is_not_logged():
    import subprocess
    import sys

    code = ("import logging; logging.basicConfig(level=logging.INFO); import numpy as np; "
            "from fisc.search.exact import knn; "
            "print(knn(np.eye(3, 4, dtype=np.float32), np.eye(5, 4, dtype=np.float32), 1, "
            "backend='faiss')[1].ravel().tolist())")  # fmt: skip
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[0, 1, 2]"
    assert "faiss.loader" not in out.stderr and "ModuleNotFoundError" not in out.stderr


# --- mutation triage: behaviour the tests above left unchecked --------------------------------


def _spy_backends(monkeypatch):
    """Record which backend search_knn runs, with the options it passes."""
    from fisc.search import backends
    from fisc.search import torch_knn as tk

    calls = []
    real_faiss, real_torch = backends.faiss_knn, tk.torch_knn

    def faiss_spy(q, r, k, device, query_tile, on_tile):
        calls.append(("faiss", {"device": device, "query_tile": query_tile}))
        return real_faiss(q, r, k, device, query_tile, on_tile)

    def torch_spy(q, r, k, **kw):
        calls.append(("torch", {n: kw[n] for n in ("device", "query_tile", "ref_tile")}))
        return real_torch(q, r, k, **kw)

    monkeypatch.setattr(backends, "faiss_knn", faiss_spy)
    monkeypatch.setattr(tk, "torch_knn", torch_spy)
    return calls


@pytest.mark.parametrize("backend", BACKENDS)
def test_each_search_runs_the_backend_asked_for_with_its_tiles(data, backend, monkeypatch):
    q, r = data
    calls = _spy_backends(monkeypatch)
    tiles = {"query_tile": 21, "ref_tile": 37}
    knn(q, r, 3, backend=backend, **tiles)
    per_query_search(q, r, 3, backend=backend, **tiles)
    global_capped_search(q, r, 30, backend=backend, **tiles)
    assert {b for b, _ in calls} == {backend} and len(calls) >= 3
    expected = {"device": "cpu", "query_tile": 21}
    if backend == "torch":
        expected["ref_tile"] = 37
    assert all(kw == expected for _, kw in calls)


@pytest.mark.parametrize("pinned", BACKENDS)
def test_default_backend_is_auto(choice_cache, data, pinned, monkeypatch):
    q, r = data
    monkeypatch.setenv("FISC_SEARCH_BACKEND", pinned)
    calls = _spy_backends(monkeypatch)
    knn(q, r, 2)
    per_query_search(q, r, 2)
    global_capped_search(q, r, 20)
    assert {b for b, _ in calls} == {pinned} and len(calls) >= 3


def test_per_query_search_passes_both_tile_sizes(data):
    q, r = data
    for bad in ({"query_tile": 0}, {"ref_tile": 0}):  # the torch backend refuses either
        with pytest.raises(ValueError, match="query_tile and ref_tile"):
            per_query_search(q, r, 2, backend="torch", **bad)


@pytest.mark.parametrize("backend", BACKENDS)
def test_progress_true_shows_a_pair_count_bar_in_every_search(data, backend, capsys):
    q, r = data
    total = f"{len(q) * len(r) / 1000:.1f}k/{len(q) * len(r) / 1000:.1f}k"  # 17.1k/17.1k
    for search in (
        lambda p: knn(q, r, 3, backend=backend, progress=p),
        lambda p: per_query_search(q, r, 3, backend=backend, progress=p),
        lambda p: global_capped_search(q, r, 20, backend=backend, progress=p),
    ):
        search(False)
        assert capsys.readouterr().err == ""
        search(True)
        err = capsys.readouterr().err
        assert "k-NN search (57 x 300, k=" in err and total in err and " pairs/s" in err


def test_query_tiles_merge_only_a_short_last_tile():
    from fisc.search.backends import query_tiles

    assert query_tiles(5, 2) == [(0, 2), (2, 4), (4, 5)]  # min_tile 1: nothing merged
    assert query_tiles(25, 20, 20) == [(0, 25)]  # a last tile of 5 < 20 joins the first
    assert query_tiles(40, 20, 20) == [(0, 20), (20, 40)]  # a last tile of exactly 20 stays
    assert query_tiles(45, 20, 20) == [(0, 20), (20, 45)]
    assert query_tiles(7, 20, 20) == [(0, 7)]


def test_faiss_knn_tiles_and_float32_distances(data):
    from fisc.search.backends import faiss_knn

    q, r = data
    steps = []
    d_all, i_all = faiss_knn(q, r, 4, query_tile=None, on_tile=steps.append)
    assert steps == [57 * 300]  # None: all queries in one tile
    steps.clear()
    d, i = faiss_knn(q, r, 4, query_tile=20, on_tile=steps.append)
    assert steps == [20 * 300, 37 * 300]  # the last 17 queries join the tile before
    np.testing.assert_array_equal(i, i_all)
    assert d.dtype == np.float32
    d_u, _ = knn(q, r, 4, backend="faiss", refine=False)
    assert d_u.dtype == np.float32


def test_faiss_knn_on_a_gpu_device_builds_the_gpu_index_on_that_device(data, monkeypatch):
    """faiss-gpu is stood in for by a fake module whose GPU index checks its arguments and
    searches with the CPU flat index."""
    import sys
    import types

    import faiss as real

    from fisc.search.backends import faiss_knn

    made = []

    class Resources:
        pass

    class Config:
        device = "unset"

    def gpu_index(resources, d, config):
        assert isinstance(resources, Resources) and isinstance(config, Config)
        made.append((d, config.device))
        return real.IndexFlatL2(d)

    fake = types.SimpleNamespace(
        IndexFlatL2=real.IndexFlatL2,
        StandardGpuResources=Resources,
        GpuIndexFlatConfig=Config,
        GpuIndexFlatL2=gpu_index,
    )
    monkeypatch.setitem(sys.modules, "faiss", fake)
    q, r = data
    expected = knn(q, r, 5, backend="faiss", refine=False)
    for device, number in (("cuda", 0), ("cuda:0", 0), ("cuda:1", 1), ("cuda:12", 12)):
        d, i = faiss_knn(q, r, 5, device)
        assert made[-1] == (24, number), device
        np.testing.assert_array_equal(i, expected[1])
        np.testing.assert_array_equal(d, expected[0])


def test_faiss_has_gpu_needs_gpu_support_and_a_gpu(monkeypatch):
    import sys
    import types

    def fake(n_gpus, support=True):
        mod = types.SimpleNamespace(get_num_gpus=lambda: n_gpus)
        if support:
            mod.StandardGpuResources = object
        return mod

    for mod, expected in ((fake(0), False), (fake(1), True), (fake(2), True),
                          (fake(1, support=False), False), (None, False)):  # fmt: skip
        monkeypatch.setitem(sys.modules, "faiss", mod)  # None: import faiss fails
        assert exact._faiss_has_gpu() is expected, (mod, expected)


def test_global_cap_of_one_and_the_searches_it_takes(monkeypatch):
    """cap = 1 is valid. With distinct distances, the pool's cap-th distance t is the smallest:
    with oversample 4 no query's 4th distance reaches it (a single search); with one query and
    oversample 1 its 1st distance is t, so it is searched once more with k = 2, whose 2nd
    distance is beyond t (two searches)."""
    rng = np.random.default_rng(5)
    r = rng.standard_normal((200, 6)).astype(np.float32)
    q = rng.standard_normal((5, 6)).astype(np.float32)
    calls = []
    real_knn = exact._knn

    def spy(qq, *args):
        calls.append((len(qq), args[1]))
        assert len(calls) < 30, "searching without end"
        return real_knn(qq, *args)

    monkeypatch.setattr(exact, "_knn", spy)
    for backend in BACKENDS:
        # one query, three identical references, cap 2: k0 = 3 is every reference; its 3rd
        # distance ties t but it has no more references to search
        calls.clear()
        qi, ri, _ = global_capped_search(np.zeros((1, 2)), np.ones((3, 2)), 2, backend=backend)
        assert as_pairs(qi, ri) == [(0, 0), (0, 1)] and calls == [(1, 3)]
        calls.clear()
        qi, ri, dist = global_capped_search(q, r, 1, backend=backend)
        [(_, i, j)] = brute_pairs(q, r, 1)
        assert as_pairs(qi, ri) == [(i, j)] and calls == [(5, 4)]
        calls.clear()
        qi, ri, _ = global_capped_search(q[2:3], r, 1, backend=backend, oversample=1)
        assert calls == [(1, 1), (1, 2)]
        assert ri.tolist() == [int(np.argmin(brute_dist2(q[2:3], r)))]


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("d", [8, 256])
def test_backend_float32_distances_stay_within_the_rounding_bound(backend, d, monkeypatch):
    """The bound the global search relies on holds for both backends' own float32 distances,
    on data made for cancellation (a large common offset: the norms dwarf the distances).
    faiss is made to take its matrix-product path (it scans differences for small batches)."""
    faiss = pytest.importorskip("faiss")
    monkeypatch.setattr(faiss.cvar, "distance_compute_blas_threshold", 0)
    rng = np.random.default_rng(d)
    offset = 30 * rng.standard_normal(d)
    r = (offset + rng.standard_normal((400, d))).astype(np.float32)
    q = (offset + rng.standard_normal((40, d))).astype(np.float32)
    dist, idx = knn(q, r, 400, backend=backend, refine=False)
    error = np.abs(dist - np.take_along_axis(brute_dist2(q, r), idx, 1))
    assert error.max() > 0  # the float32 distances do err here
    assert np.all(error <= np.take_along_axis(pair_bounds(q, r), idx, 1))


def test_torch_search_runs_full_float32_products_whatever_the_callers_setting(monkeypatch):
    """A caller's TF32 / bfloat16 setting is off while the torch search multiplies, and back
    after it; a setting made with torch's per-backend API does not break the search."""
    torch = pytest.importorskip("torch")
    from fisc.search import torch_knn

    matmuls = [torch.backends.cuda.matmul, torch.backends.mkldnn.matmul]
    if not all(hasattr(m, "fp32_precision") for m in matmuls):
        pytest.skip("torch without per-backend float32 precision settings")
    seen, real_addmm = [], torch.addmm

    def spy(*args, **kwargs):
        seen.append([m.fp32_precision for m in matmuls])
        return real_addmm(*args, **kwargs)

    monkeypatch.setattr(torch_knn.torch, "addmm", spy)
    saved = [m.fp32_precision for m in matmuls]
    try:
        matmuls[0].fp32_precision, matmuls[1].fp32_precision = "tf32", "bf16"
        q = np.eye(3, 4, dtype=np.float32)
        _, idx = torch_knn.torch_knn(q, q, 2)
        assert idx[:, 0].tolist() == [0, 1, 2]
        assert seen and all(s == ["ieee", "ieee"] for s in seen)
        assert [m.fp32_precision for m in matmuls] == ["tf32", "bf16"]  # restored
    finally:
        for m, value in zip(matmuls, saved, strict=True):
            m.fp32_precision = value


def test_exact_dist2_covers_every_row_when_chunked():
    from fisc.search.backends import exact_dist2

    rng = np.random.default_rng(2)
    d, k = 2000, 1000  # k * d = 2e6: chunks of 2 rows
    q = rng.standard_normal((5, d)).astype(np.float32)
    r = rng.standard_normal((k, d)).astype(np.float32)
    idx = np.stack([rng.permutation(k) for _ in range(5)])
    expected = np.take_along_axis(brute_dist2(q, r), idx, 1)
    np.testing.assert_allclose(exact_dist2(q, r, idx), expected, rtol=1e-6)


def test_exact_pair_dist2_covers_every_pair_when_chunked():
    from fisc.search.backends import exact_pair_dist2

    rng = np.random.default_rng(4)
    d = 2000  # chunks of 2,000 pairs: 4,001 pairs make three, the last of one pair
    q = rng.standard_normal((7, d)).astype(np.float32)
    r = rng.standard_normal((30, d)).astype(np.float32)
    qi, ri = rng.integers(0, 7, 4001), rng.integers(0, 30, 4001)
    expected = brute_dist2(q, r)[qi, ri]
    np.testing.assert_allclose(exact_pair_dist2(q, r, qi, ri), expected, rtol=1e-6)


def test_descriptor_checks_edge_cases():
    torch = pytest.importorskip("torch")
    from fisc.search.exact import check_descriptors

    t = torch.ones((2, 3), requires_grad=True)  # a tensor needing grad is detached first
    np.testing.assert_array_equal(check_descriptors(t, "query"), np.ones((2, 3), np.float32))
    np.testing.assert_array_equal(check_descriptors(np.ones((4, 1)), "query"), np.ones((4, 1)))
    big = np.full((1, 2), 3e38, np.float32)  # finite, although its float32 row sum is not:
    with pytest.raises(ValueError, match=r"1 of 1 rows have squared norms above 2.1e\+37"):
        check_descriptors(big, "query")  # refused for its distances, not as non-finite
    large = np.full((3, 2), 3e18, np.float32)  # squared norm 1.8e37: distances fit float32
    np.testing.assert_array_equal(check_descriptors(large, "query"), large)
    large[1] = 4e18  # 3.2e37
    with pytest.raises(ValueError, match=r"\(first rows: \[1\]\); scale the descriptors down"):
        check_descriptors(large, "reference")
    with pytest.raises(ValueError, match="reference descriptors must be numeric, got dtype <U1"):
        check_descriptors(np.array([["a"]]), "reference")
    bad = np.zeros((8, 2))
    bad[1:7, 0] = np.nan
    with pytest.raises(ValueError, match=r"6 of 8 rows have non-finite values \(first rows: "
                       r"\[1, 2, 3, 4, 5\]\)"):  # fmt: skip
        check_descriptors(bad, "query")
    with pytest.raises(ValueError, match="oversample must be >= 1, got 0"):
        global_capped_search(np.ones((1, 2)), np.ones((1, 2)), 1, oversample=0)


# --- mutation triage: the auto choice, its cache and its probe ----------------------------------


def test_cache_path_defaults_to_the_home_cache(monkeypatch, tmp_path):
    from fisc.search import choose

    monkeypatch.delenv("FISC_CACHE_DIR", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))
    assert choose.cache_path() == tmp_path / ".cache" / "fisc" / "search_backend.json"


def test_cpu_model_reads_the_model_name_line(monkeypatch):
    import io
    import platform

    from fisc.search import choose

    cpuinfo = "processor\t: 0\nvendor_id\t: Acme\nmodel name\t: Acme X9: rev 2 @ 3.0GHz\n"

    def fake_open(path, *a, **kw):
        if path != "/proc/cpuinfo":
            raise FileNotFoundError(path)
        return io.StringIO(cpuinfo)

    monkeypatch.setattr(choose, "open", fake_open, raising=False)
    assert choose._cpu_model() == "Acme X9: rev 2 @ 3.0GHz"

    def no_file(path, *a, **kw):
        raise OSError(path)

    monkeypatch.setattr(choose, "open", no_file, raising=False)
    monkeypatch.setattr(platform, "processor", lambda: "")
    monkeypatch.setattr(platform, "machine", lambda: "riscv64")
    assert choose._cpu_model() == "riscv64"


def test_machine_key_fields_and_cores(monkeypatch):
    import os

    import faiss
    import torch

    from fisc.search import choose

    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0, 2, 5}, raising=False)
    monkeypatch.setattr(os, "cpu_count", lambda: 64)
    assert choose.machine_key() == {
        "cpu": choose._cpu_model(),
        "cores": 3,  # the usable cores, not the machine's
        "torch_threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "faiss": faiss.__version__,
    }
    monkeypatch.delattr(os, "sched_getaffinity")
    assert choose.machine_key()["cores"] == 64


def test_cpu_backend_without_faiss(choice_cache, monkeypatch):
    import sys

    monkeypatch.setitem(sys.modules, "faiss", None)
    assert choice_cache.cpu_backend(_timer({"faiss": 1.0, "torch": 2.0}, calls := [])) == (
        "torch", "faiss is not installed")  # fmt: skip
    assert calls == []


def test_cached_record_memo_and_logs(choice_cache, monkeypatch, tmp_path, caplog):
    from datetime import datetime, timedelta

    choose = choice_cache
    nested = tmp_path / "a" / "b"  # a cache folder whose parents do not exist yet
    monkeypatch.setenv("FISC_CACHE_DIR", str(nested))
    path = choose.cache_path()
    caplog.set_level("DEBUG", logger=choose.__name__)
    calls = []
    choice, reason = choose.cpu_backend(_timer({"faiss": 2.0, "torch": 1.25}, calls))
    assert choice == "torch" and calls == [1]
    assert "(faiss 2.000 s, torch 1.250 s on the probe search;" in reason and str(path) in reason
    [record] = json.loads(path.read_text())
    assert record["probe"] == {"queries": 1024, "references": 16384, "dims": 256, "k": 64}
    when = datetime.fromisoformat(record["measured_at"])
    assert when.utcoffset() == timedelta(0)
    messages = [rec.getMessage() for rec in caplog.records]
    import re

    pattern = rf"search backend: measured in (\d+\.\d) s, cached in {re.escape(str(path))}"
    took = [re.fullmatch(pattern, m) for m in messages]
    assert any(took) and float(next(t for t in took if t)[1]) < 30  # seconds this call took
    assert "search backend auto -> torch (faiss 2.000 s, torch 1.250 s on the probe)" in messages
    assert f"search backend auto -> torch: {reason}" in messages
    # the same process answers from memory, without reading the cache again
    path.unlink()
    assert choose.cpu_backend(_timer({"faiss": 1.0, "torch": 2.0}, calls)) == (choice, reason)
    assert calls == [1]


def test_cache_with_a_bad_entry_for_this_machine_is_replaced(choice_cache, caplog):
    choose = choice_cache
    path = choose.cache_path()
    path.write_text(json.dumps([{"key": choose.machine_key(), "choice": "annoy"}]))
    assert choose.cpu_backend(_timer({"faiss": 1.0, "torch": 2.0}, [])) == choose._memo[str(path)]
    [record] = json.loads(path.read_text())  # the bad entry for the same key is dropped
    assert record["choice"] == "faiss"
    choose._memo.clear()
    path.write_text("5")  # valid JSON, not a list
    assert choose.cpu_backend(_timer({"faiss": 2.0, "torch": 1.0}, []))[0] == "torch"
    path.write_text("{bad")
    choose._memo.clear()
    caplog.set_level("WARNING", logger=choose.__name__)
    choose.cpu_backend(_timer({"faiss": 2.0, "torch": 1.0}, []))
    message = caplog.records[0].getMessage()  # read again before writing: logged twice
    assert message.startswith(f"search backend cache {path} is unreadable (Expecting")
    assert message.endswith("): measuring again")


def test_unwritable_cache_is_logged(choice_cache, monkeypatch, tmp_path, caplog):
    choose = choice_cache
    blocker = tmp_path / "file"
    blocker.write_text("")
    monkeypatch.setenv("FISC_CACHE_DIR", str(blocker / "sub"))
    caplog.set_level("WARNING", logger=choose.__name__)
    choose.cpu_backend(_timer({"faiss": 2.0, "torch": 1.0}, []))
    message = caplog.records[-1].getMessage()  # after the unreadable-cache warnings
    path = blocker / "sub" / "search_backend.json"
    assert message.startswith(f"could not cache the search backend choice in {path} (")
    assert "Errno" in message


def test_measure_times_the_default_search_of_each_backend(choice_cache, monkeypatch, capsys):
    """Each backend: one untimed call on fewer queries, then three timed ones on the whole
    probe, all with knn's default tiles and refinement, on the same data in every run."""
    import inspect

    from fisc.search import backends

    calls = []

    def fake_search(q, r, k, backend, device, query_tile, ref_tile, refine, show=False):
        calls.append((backend, q.shape, r.shape, k, device, query_tile, ref_tile, refine, show))
        calls[-1] += (q.copy(),)
        return None, None

    monkeypatch.setattr(backends, "search_knn", fake_search)
    seconds = choice_cache.measure()
    assert set(seconds) == set(BACKENDS)
    defaults = {n: p.default for n, p in inspect.signature(knn).parameters.items()}
    options = ("cpu", defaults["query_tile"], defaults["ref_tile"], defaults["refine"], False)
    assert [c[0] for c in calls] == ["faiss"] * 4 + ["torch"] * 4
    for i, c in enumerate(calls):
        warm = i % 4 == 0
        assert c[4:9] == options
        assert c[2:4] == ((16384, 256), 64)
        assert (c[1][0] < 1024) if warm else (c[1] == (1024, 256))
    first = [c[-1] for c in calls]
    calls.clear()
    choice_cache.measure(probe=(1024, 16384, 256, 64), repeats=1)
    np.testing.assert_array_equal(calls[1][-1], first[1])  # the same probe data every time


def test_measure_shows_no_progress_bar(choice_cache, capsys):
    choice_cache.measure(probe=(16, 512, 8, 4), repeats=1)
    assert capsys.readouterr().err == ""
