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
    r = 10 * rng.standard_normal((400, d)).astype(np.float32)
    r[100:250] = centre + 0.05 * rng.standard_normal((150, d)).astype(np.float32)
    q = 10 * rng.standard_normal((20, d)).astype(np.float32)
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
@pytest.mark.parametrize("n_q", [1, 30])  # faiss: a plain scan below 20 queries, BLAS above
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
