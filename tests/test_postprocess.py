"""Post-processing steps, specs, save/load, reference independence and a small sweep."""

from __future__ import annotations

import hashlib
import re
from dataclasses import asdict

import numpy as np
import pytest

from fisc.descriptors import Descriptors
from fisc.postprocess import (
    DBA,
    NES,
    PCA,
    Center,
    IscNorm,
    PCAWhiten,
    PostProcessor,
    ScoreNorm,
    Stretch,
    parse_spec,
    sweep,
    sweep_table,
)
from fisc.postprocess.steps import L2

LONG_SPEC = "center,pca_whiten12:1e-4,l2,dba5:3,l2,nes4:0.35,score_norm3:1.0"


def _unit(x):
    return x / np.linalg.norm(x, axis=1, keepdims=True)


@pytest.fixture(scope="module")
def data():
    rng = np.random.default_rng(0)
    scales = np.linspace(3.0, 0.3, 16)
    train = (rng.standard_normal((300, 16)) * scales).astype(np.float32)
    x = (rng.standard_normal((300, 16)) * scales).astype(np.float32)  # > BLOCK rows
    return train, x


def _all_steps():
    return [
        Center(),
        PCA(d=8),
        PCAWhiten(d=8, eps=1e-6),
        L2(),
        DBA(k=5, alpha=3.0),
        NES(k=4, beta=0.35),
        ScoreNorm(k=3, lam=1.0, sides="qr"),
        ScoreNorm(k=3, lam=0.5, sides="q"),
        IscNorm(k=3, factor=1.5, reduction="min"),
        IscNorm(k=3, factor=0.5, reduction="mean"),
        Stretch(k=5, alpha=2.5),
    ]


def test_pca_matches_svd(data):
    train, x = data
    pca = PCA(d=6).fit(train)
    t64 = train.astype(np.float64)
    mean = t64.mean(0)
    _, s, vt = np.linalg.svd(t64 - mean, full_matrices=False)
    y = pca.transform(train).astype(np.float64)
    var = y.var(0, ddof=1)
    assert np.all(np.diff(var) < 0)  # decreasing variance
    np.testing.assert_allclose(var, s[:6] ** 2 / (len(train) - 1), rtol=1e-4)
    proj = pca.state()["proj"]
    np.testing.assert_allclose(proj.T @ proj, np.eye(6), atol=1e-10)  # orthonormal axes
    np.testing.assert_allclose(np.abs(proj.T @ vt[:6].T), np.eye(6), atol=1e-8)  # same axes
    expect = (x.astype(np.float64) - mean) @ proj
    np.testing.assert_allclose(pca.transform(x), expect, rtol=1e-5, atol=1e-5)


def test_whitening_gives_identity_covariance(data):
    train, _ = data
    w = PCAWhiten(d=10, eps=0.0).fit(train)
    cov = np.cov(w.transform(train).astype(np.float64), rowvar=False)
    np.testing.assert_allclose(cov, np.eye(10), atol=1e-5)


def test_center_and_l2(data):
    train, x = data
    np.testing.assert_allclose(Center().fit(train).transform(x), x - train.mean(0), atol=1e-5)
    np.testing.assert_allclose(np.linalg.norm(L2().transform(x), axis=1), 1.0, rtol=1e-6)


# Hand-built example: 2-d training set, one query x = (1, 0).
TRAIN2 = np.array([[1.0, 0.0], [0.0, 1.0], [0.6, 0.8], [-1.0, 0.0]], dtype=np.float32)
X2 = np.array([[1.0, 0.0]], dtype=np.float32)


def test_dba_by_hand():
    # similarities to x: 1, 0, 0.6, -1 -> top-2: t0 (s=1), t2 (s=0.6); weights s^2: 1, 0.36
    out = DBA(k=2, alpha=2.0).fit(TRAIN2).transform(X2)
    expect = np.array([1.0, 0.0]) + 1.0 * np.array([1.0, 0.0]) + 0.36 * np.array([0.6, 0.8])
    expect /= 1.0 + 1.0 + 0.36
    np.testing.assert_allclose(out[0], expect, rtol=1e-6)


@pytest.mark.parametrize("alpha", [2.0, 3.0])
def test_dba_negative_similarities_get_zero_weight(alpha):
    # k = 4 takes every training row: similarities 1, 0.6, 0, -1. The weights are
    # max(s, 0)^alpha = 1, 0.6^alpha, 0, 0: t1 (s=0) and t3 (s=-1) add nothing, even where
    # (-1)^alpha would be +1 (alpha=2) or -1 (alpha=3).
    out = DBA(k=4, alpha=alpha).fit(TRAIN2).transform(X2)
    w2 = 0.6**alpha
    expect = (np.array([1.0, 0.0]) + np.array([1.0, 0.0]) + w2 * np.array([0.6, 0.8])) / (2 + w2)
    np.testing.assert_allclose(out[0], expect, rtol=1e-6)


def test_nes_by_hand():
    # top-2 neighbours t0, t2; mean (0.8, 0.4); x - 0.5*mean = (0.6, -0.2) -> normalised
    out = NES(k=2, beta=0.5).fit(TRAIN2).transform(X2)
    np.testing.assert_allclose(out[0], np.array([0.6, -0.2]) / np.sqrt(0.4), rtol=1e-6)


@pytest.mark.parametrize("sides", ["qr", "q"])
def test_score_norm_formula(data, sides):
    train, x = data
    train, q, r = _unit(train), _unit(x[:40]), _unit(x[40:100])
    lam, k = 0.7, 3
    step = ScoreNorm(k=k, lam=lam, sides=sides).fit(train)
    qq = step.transform(q, role="query").astype(np.float64)
    rr = step.transform(r, role="reference").astype(np.float64)
    d2 = ((qq[:, None, :] - rr[None, :, :]) ** 2).sum(-1)
    # independent b(x): mean of the top-k similarities to training, float64 brute force
    t64 = train.astype(np.float64)
    b_q = np.sort(q.astype(np.float64) @ t64.T, axis=1)[:, -k:].mean(1)
    b_r = np.sort(r.astype(np.float64) @ t64.T, axis=1)[:, -k:].mean(1)
    qr = q.astype(np.float64) @ r.astype(np.float64).T
    if sides == "qr":
        expect = 2 * (qr - lam * b_q[:, None] - lam * b_r[None, :]) - 2 - 4 * lam
    else:
        expect = 2 * (qr - lam * b_q[:, None]) - 2 - 2 * lam
    np.testing.assert_allclose(-d2, expect, atol=1e-5)
    assert qq.shape[1] == r.shape[1] + len(sides)


def test_stretch_formula(data):
    train, x = data
    train, q, r = _unit(train), _unit(x[:30]), _unit(x[30:80])
    alpha, k = 2.5, 5
    step = Stretch(k=k, alpha=alpha).fit(train)
    qq = step.transform(q, role="query").astype(np.float64)
    rr = step.transform(r, role="reference").astype(np.float64)
    d2 = ((qq[:, None, :] - rr[None, :, :]) ** 2).sum(-1)
    b = np.sort(q.astype(np.float64) @ train.astype(np.float64).T, axis=1)[:, -k:].mean(1)
    beta = alpha * np.maximum(b, 0.1)
    big_m = 1 / (0.1 * alpha) ** 2
    expect = 2 * (q.astype(np.float64) @ r.astype(np.float64).T) / beta[:, None] - big_m - 1
    np.testing.assert_allclose(-d2, expect, atol=1e-4)
    with pytest.raises(ValueError, match="role"):
        step.transform(q)


def _apply(step, x, role="reference"):
    return step.transform(x, role=role if step.role_dependent else None)


@pytest.mark.parametrize("step", _all_steps(), ids=repr)
def test_row_independence_and_frozen_state(data, step):
    train, x = data
    train, x = _unit(train), _unit(x)
    step.fit(train)
    before = {k: np.array(v, copy=True) for k, v in step.state().items()}
    rng = np.random.default_rng(1)
    for role in ("query", "reference"):
        full = _apply(step, x, role)
        for subset in (rng.choice(len(x), 37, replace=False), [5], np.arange(100, 300)):
            sub = _apply(step, x[subset], role)
            assert np.array_equal(sub, full[subset]), f"{step!r}: rows depend on other rows"
        bigger = _apply(step, np.concatenate([x[::-1], train[:50]]), role)
        assert np.array_equal(bigger[: len(x)][::-1], full)
    after = step.state()
    assert before.keys() == after.keys()
    for key in before:
        assert np.array_equal(before[key], after[key]), f"{step!r}: transform changed {key}"


def _descs(x, prefix):
    width = {"Q": 5, "R": 6, "T": 6}[prefix]  # DISC21 id formats
    return Descriptors(np.array([f"{prefix}{i:0{width}d}" for i in range(len(x))]), x)


def test_long_spec_independence_and_save_load(data, tmp_path):
    train, x = data
    pp = PostProcessor(LONG_SPEC).fit(_descs(train, "T"))
    state = [{k: np.array(v, copy=True) for k, v in s.state().items()} for s in pp.steps]
    refs = _descs(x, "R")
    full = pp.transform(refs, role="reference").vectors
    keep = np.sort(np.random.default_rng(2).choice(len(x), 50, replace=False))
    sub = pp.transform(Descriptors(refs.ids[keep], x[keep]), role="reference").vectors
    assert np.array_equal(sub, full[keep])
    assert full.shape == (len(x), 12 + 2) and full.dtype == np.float32
    for s, st in zip(pp.steps, state, strict=True):  # nothing refitted by transform
        assert all(np.array_equal(v, s.state()[k]) for k, v in st.items())

    path = tmp_path / "pp" / "post.npz"
    pp.save(path)
    loaded = PostProcessor.load(path)
    assert loaded.spec == LONG_SPEC and loaded.dims == pp.dims == 14
    for role in ("query", "reference"):
        assert np.array_equal(
            loaded.transform(refs, role=role).vectors, pp.transform(refs, role=role).vectors
        )
    with pytest.raises(ValueError, match="role"):
        pp.transform(refs)


@pytest.mark.parametrize(
    "text, token",
    [
        ("l2,pcaw256", "pcaw256"),
        ("pca", "pca"),
        ("l2x", "l2x"),
        ("nes10:0.3:4", "nes10:0.3:4"),
        ("dba10:abc", "dba10:abc"),
        ("score_norm3:1:z", "score_norm3:1:z"),
        ("center,,l2", "empty token"),
    ],
)
def test_bad_specs(text, token):
    with pytest.raises(ValueError, match=token):
        parse_spec(text)


def test_spec_parsing_and_dims_limit(data):
    steps = parse_spec("center,pca128,l2,nes10:0.35")
    assert [s.name for s in steps] == ["center", "pca", "l2", "nes"]
    assert steps[1].d == 128 and (steps[3].k, steps[3].beta) == (10, 0.35)
    sn = parse_spec("pca_whiten256,l2,score_norm3:1.0")[-1]
    assert (sn.k, sn.lam, sn.sides) == (3, 1.0, "qr")
    wide = np.random.default_rng(0).standard_normal((20, 300)).astype(np.float32)
    with pytest.raises(ValueError, match="'l2'.*300-d"):
        PostProcessor("l2").fit(wide)
    assert PostProcessor("l2,maxdim300").fit(wide).dims == 300


def _planted(rng, n, d, prefix, common):
    """Unit-ish descriptors with a strong shared 'distractor' direction of random strength."""
    x = rng.standard_normal((n, d)) + np.outer(rng.normal(4.0, 1.5, n), common)
    return _descs(x.astype(np.float32), prefix)


def test_sweep_fits_on_the_training_set_only():
    """A sweep row is the evaluation of descriptors transformed with parameters fitted on the
    training set. References and queries vary mostly in dims 0-7, the training set only in
    dims 8-15: ``pca8`` fitted on it projects on dims 8-15 (any orthonormal basis of them gives
    the same distances, so the expectation is just those columns, centred), where matches are
    lost; fitted on the references it would keep dims 0-7, where they are found."""
    from fisc.evaluation import evaluate

    rng = np.random.default_rng(5)
    scale = np.r_[np.ones(8), np.full(8, 0.3)]
    refs = _descs((rng.standard_normal((150, 16)) * scale).astype(np.float32), "R")
    qv = rng.standard_normal((60, 16)) * scale
    qv[:40] = refs.vectors[:40] + 0.3 * rng.standard_normal((40, 16))  # edited copies
    queries = _descs(qv.astype(np.float32), "Q")
    gt = {q: (refs.ids[i] if i < 40 else None) for i, q in enumerate(queries.ids)}
    t = np.zeros((300, 16))
    t[:, 8:] = 3.0 * rng.standard_normal((300, 8)) + 1.0
    train = _descs(t.astype(np.float32), "T")

    def projected(dims, mean):
        def f(x):
            return Descriptors(x.ids, (x.vectors[:, dims] - mean[dims]).astype(np.float32))

        return evaluate(f(queries), f(refs), gt, backend="torch").micro_ap

    on_train = projected(slice(8, 16), train.vectors.mean(0))
    on_refs = projected(slice(0, 8), refs.vectors.mean(0))
    assert on_refs > on_train + 0.5  # the data tell the two fits apart
    (row,) = sweep(["pca8"], train, queries, refs, gt, backend="torch")
    assert row["dims"] == 8
    assert row["micro_ap"] == pytest.approx(on_train, abs=1e-6)


def test_sweep_postprocessing_beats_plain_l2(monkeypatch):
    rng = np.random.default_rng(0)
    d = 24
    common = _unit(rng.standard_normal((1, d)))[0]
    train = _planted(rng, 400, d, "T", common)
    refs = _planted(rng, 200, d, "R", common)
    queries = _planted(rng, 100, d, "Q", common)
    gt: dict[str, str | None] = {}
    qv = queries.vectors.copy()
    for i in range(60):  # planted matches: edited copies of a reference, own distractor strength
        signal = refs.vectors[i] - (refs.vectors[i] @ common) * common
        qv[i] = signal + rng.standard_normal(d) + rng.normal(4.0, 1.5) * common
        gt[queries.ids[i]] = refs.ids[i]
    for i in range(60, 100):
        gt[queries.ids[i]] = None
    queries = Descriptors(queries.ids, qv.astype(np.float32))
    specs = [
        "l2",
        "center,l2",
        "l2,nes10:0.35",
        "l2,stretch5:2.5",
        "pca_whiten16,l2,score_norm3:0.5",
    ]
    rows = sweep(specs, train, queries, refs, gt, backend="torch")
    by = {r["spec"]: r for r in rows}
    plain = by["l2"]["micro_ap"]  # about 0.43 here; center 0.79, nes 0.56, stretch 0.81
    assert by["center,l2"]["micro_ap"] > plain + 0.2
    assert by["l2,nes10:0.35"]["micro_ap"] > plain + 0.05
    assert by["l2,stretch5:2.5"]["micro_ap"] > plain + 0.2
    assert by["pca_whiten16,l2,score_norm3:0.5"]["dims"] == 18
    table = sweep_table(rows)
    assert table.count("\n") == len(specs) + 1 and "`center,l2`" in table
    # the columns of a plain evaluate, in the table and the rows
    from fisc.evaluation import EvalResult, evaluate, results_table

    plain_eval = evaluate(queries, refs, gt, backend="torch")
    assert set(rows[0]) == {"spec"} | set(asdict(plain_eval))
    assert table.splitlines()[0] == results_table({"x": plain_eval}).splitlines()[0]
    assert isinstance(EvalResult(**{k: v for k, v in rows[0].items() if k != "spec"}), EvalResult)
    # a bad spec anywhere in the list fails before any search
    calls = []
    import sys

    module = sys.modules["fisc.postprocess.sweep"]  # the package's `sweep` is the function
    monkeypatch.setattr(module, "evaluate", lambda *a, **k: calls.append(1))
    with pytest.raises(ValueError, match="nope"):
        sweep([*specs, "l2,nope3"], train, queries, refs, gt, backend="torch")
    assert calls == []


# Contracts the mutation run found unpinned (docs/mutation.md, "Real gaps").


@pytest.mark.parametrize("cls, kw", [(PCA, {}), (PCAWhiten, {"eps": 1e-6})])
def test_pca_needs_d_plus_one_rows_and_at_most_d_in_dims(cls, kw):
    rng = np.random.default_rng(3)
    x = rng.standard_normal((7, 6)).astype(np.float32)
    assert cls(d=6, **kw).fit(x).transform(x).shape == (7, 6)  # n = d + 1, d = d_in: both fine
    with pytest.raises(ValueError, match="needs ≥ 7 training rows"):
        cls(d=6, **kw).fit(x[:6])  # n = d
    with pytest.raises(ValueError, match="≥ 6 input dims"):
        cls(d=6, **kw).fit(x[:, :5])  # d > d_in
    assert cls(d=6, **kw).out_dims(6) == 6
    with pytest.raises(ValueError, match="cannot give more dims"):
        cls(d=6, **kw).out_dims(5)


def test_pca_axes_point_towards_their_largest_coefficient(data):
    """The sign convention that makes a fit reproducible across BLAS builds: each axis is
    oriented so that its largest-magnitude coefficient is positive."""
    train, _ = data
    for pca in (PCA(d=8).fit(train), PCA(d=8).fit(-train), PCAWhiten(d=8, eps=0.0).fit(train)):
        proj = pca.state()["proj"]
        top = proj[np.abs(proj).argmax(0), np.arange(proj.shape[1])]
        assert np.all(top > 0)
    # the input's sign does not flip the output: the same axes, the same projections
    a, b = PCA(d=8).fit(train), PCA(d=8).fit(-train)
    np.testing.assert_allclose(a.state()["proj"], b.state()["proj"], atol=1e-12)


def test_whitening_eps_shrinks_each_axis_by_variance_over_variance_plus_eps(data):
    train, _ = data
    eps = 0.5
    w = PCAWhiten(d=10, eps=eps).fit(train)
    variance = w.state()["variance"]
    got = w.transform(train).astype(np.float64).var(0, ddof=1)
    np.testing.assert_allclose(got, variance / (variance + eps), rtol=1e-5)
    assert parse_spec("pca_whiten10")[0].eps == 1e-6  # the documented default


@pytest.mark.parametrize("step", _all_steps(), ids=repr)
def test_every_step_outputs_float32(data, step):
    train, x = data
    fitted = step.fit(_unit(train) if step.name not in ("center", "pca", "pca_whiten") else train)
    role = "query" if step.role_dependent else None
    assert fitted.transform(_unit(x).astype(np.float64), role=role).dtype == np.float32


@pytest.mark.parametrize(
    "spec, need",
    [("l2", 1), ("center,l2", 1), ("pca7,l2", 8), ("pca_whiten4,l2,dba12", 12),
     ("l2,nes3", 3), ("pca15,l2,nes3", 16), ("l2,score_norm9:1.0", 9), ("l2,stretch6", 6)],
)  # fmt: skip
def test_min_fit_rows_is_the_fewest_rows_fit_accepts(spec, need):
    """Checked against fit itself: the spec fits on ``need`` rows and refuses ``need - 1``."""
    pp = PostProcessor(spec)
    assert pp.min_fit_rows() == need
    x = np.random.default_rng(1).standard_normal((need, 20)).astype(np.float32)
    PostProcessor(spec).fit(x)
    with pytest.raises(ValueError):
        PostProcessor(spec).fit(x[: need - 1])


def test_save_load_keeps_the_fit_set_and_refuses_unfitted(data, tmp_path):
    train, x = data
    pp = PostProcessor("pca_whiten8:0.25,l2")
    with pytest.raises(RuntimeError, match="saved before fit"):
        pp.save(tmp_path / "early.npz")
    assert not (tmp_path / "early.npz").exists()
    with pytest.raises(RuntimeError, match="before fit"):
        pp.transform_array(x)
    pp.fit(_descs(train, "T"), checkpoint_sha256="abc")
    assert pp.fit_set == {
        "count": 300,
        "ids_sha256": pp.fit_set["ids_sha256"],
        "checkpoint_sha256": "abc",
    }
    pp.save(tmp_path / "pp.npz")
    loaded = PostProcessor.load(tmp_path / "pp.npz")
    assert loaded.fit_set == pp.fit_set and loaded.in_dims == 16 and loaded.dims == 8
    assert loaded.steps[0].eps == 0.25 and repr(loaded) == "PostProcessor('pca_whiten8:0.25,l2')"
    assert np.array_equal(loaded.transform_array(x), pp.transform_array(x))
    assert loaded.transform_array(x).dtype == np.float32


def test_step_repr_names_class_and_parameters():
    assert repr(parse_spec("pca_whiten8:0.5")[0]) == "PCAWhiten(d=8, eps=0.5)"
    assert repr(parse_spec("score_norm3:1.0:q")[0]) == "ScoreNorm(k=3, lam=1.0, sides='q')"
    assert repr(L2()) == "L2()"
    with pytest.raises(RuntimeError, match=r"PCA\(d=4\) used before fit"):
        PCA(d=4).transform(np.zeros((2, 8), np.float32))


# More contracts the mutation run found unpinned (docs/mutation.md, "Survivors killed...").


def test_training_descriptors_are_named_in_fit_errors():
    x = np.ones((4, 3), np.float32)
    x[1, 2] = np.nan
    for spec in ("center", "pca2"):
        with pytest.raises(ValueError, match="^training descriptors contain NaN or inf"):
            PostProcessor(spec).fit(x)
        with pytest.raises(ValueError, match=r"^training descriptors must be a non-empty 2-D"):
            parse_spec(spec)[0].fit(np.ones((4, 0), np.float32))
    for bad in (np.ones(3, np.float32), np.ones((0, 3), np.float32)):
        with pytest.raises(ValueError, match=rf"non-empty n × d array, got \({len(bad)},"):
            PostProcessor("l2").fit(bad)


def test_center_mean_is_computed_in_float64():
    # float32 rows 2^24, 1, 0, 0: a float32 sum drops the 1 (mean 2^22); in float64 the mean
    # is 2^22 + 0.25, so the row 2^22 centres to -0.25 (exact in float32)
    train = np.array([[2.0**24], [1.0], [0.0], [0.0]], np.float32)
    step = Center().fit(train)
    assert step.state()["mean"].tolist() == [2.0**22 + 0.25]
    assert step.transform(np.array([[2.0**22]], np.float32)).tolist() == [[-0.25]]


def test_l2_normalises_float32_rows_whose_squares_overflow_float32():
    # 3e20² = 9e40 > float32's largest 3.4e38: the norm is taken in float64
    x = np.array([[3e20, 4e20], [-3e19, 4e19]], np.float32)
    np.testing.assert_allclose(L2().transform(x), [[0.6, 0.8], [-0.6, 0.8]], rtol=1e-6)


def test_isc_norm_column_is_zero_below_similarity_minus_one():
    # a query opposite its only training neighbour, norm 3: similarity -3, clipped to -1, so
    # a(q) = sqrt(2 factor (1 - 1)) = 0 (not the square root of a negative number)
    step = IscNorm(k=1, factor=1.0, reduction="min").fit(np.array([[1.0, 0.0]], np.float32))
    out = step.transform(np.array([[-3.0, 0.0]], np.float32), role="query")
    assert out.tolist() == [[-3.0, 0.0, 0.0]]


def test_stretched_queries_have_squared_norm_m_below_the_floor_too():
    # similarities 0 and 0.05 to the training rows: below the floor 0.1, so beta = 0.1 alpha,
    # q' = [q / beta, 0] and ||q'||² = 1 / (0.1 alpha)² = M, as for every other unit query
    alpha = 2.5
    train = np.array([[1.0, 0.0, 0.0]], np.float32)
    step = Stretch(k=1, alpha=alpha).fit(train)
    q = _unit(np.array([[0.0, 1.0, 0.0], [0.05, 0.0, np.sqrt(1 - 0.05**2)]], np.float32))
    out = step.transform(q, role="query").astype(np.float64)
    np.testing.assert_allclose((out**2).sum(1), 1 / (0.1 * alpha) ** 2, rtol=1e-6)
    np.testing.assert_allclose(out[:, -1], 0.0, atol=1e-6)


@pytest.mark.parametrize("spec", ["l2,isc_norm3:1.0", "l2,stretch3", "l2,score_norm3:1.0:q"])
def test_query_column_steps_add_the_dims_they_report(data, spec):
    train, x = data
    pp = PostProcessor(spec).fit(train)
    out = pp.transform_array(x[:5], role="query")
    assert pp.dims == 17 and out.shape == (5, 17)
    with pytest.raises(ValueError, match="gives 257-d descriptors > 256"):
        PostProcessor(spec).fit(np.ones((5, 256), np.float32))


def test_role_error_names_the_step():
    step = IscNorm(k=1, factor=1.5, reduction="min").fit(TRAIN2)
    with pytest.raises(ValueError, match=r"^step IscNorm\(k=1, factor=1.5, reduction='min'\) "):
        step.transform(X2)


def test_step_rebuilt_from_its_in_memory_state(data):
    train, x = data
    for step in _all_steps():
        step.fit(_unit(train))
        again = type(step).from_state(step.state())  # parameters as Python values, not arrays
        assert repr(again) == repr(step)
        assert np.array_equal(_apply(again, _unit(x)), _apply(step, _unit(x)))


def test_pca_fit_memory_grows_with_n_times_d_not_n_squared():
    # 4000 × 8 rows: the full SVD's 4000 × 4000 U would take 128 MB
    import tracemalloc

    x = np.random.default_rng(0).standard_normal((4000, 8))
    tracemalloc.start()
    try:
        PCA(d=4).fit(x)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 16 * x.nbytes


def test_unfitted_processor_and_the_fit_set_it_records(data):
    train, _ = data
    pp = PostProcessor("l2")
    assert (pp.dims, pp.in_dims, pp.fit_set) == (None, None, None)
    pp.fit(_descs(train[:3], "T"))
    expect = hashlib.sha256(b"T000000\nT000001\nT000002\n").hexdigest()
    assert pp.fit_set == {"count": 3, "ids_sha256": expect}
    assert PostProcessor("l2").fit(train[:3]).fit_set == {"count": 3, "ids_sha256": None}


def test_fit_transforms_the_training_rows_through_every_step_but_the_last(data):
    train, _ = data
    pp = PostProcessor("l2,isc_norm3,center")
    last = pp.steps[-1]
    last.transform = lambda *a, **k: pytest.fail("the last step's output is never used")
    pp.fit(train)
    # center was fitted on the training rows as references: l2(train) with a 0 column
    expect = np.r_[_unit(train.astype(np.float64)).mean(0), 0.0]
    np.testing.assert_allclose(last.state()["mean"], expect, atol=1e-6)


def test_transform_array_refuses_other_shapes_and_non_finite_values(data):
    train, x = data
    pp = PostProcessor("l2").fit(train)
    for bad in (x[:3, :5], x[0]):
        with pytest.raises(
            ValueError, match=re.escape(f"expected n × 16 descriptors, got shape {bad.shape}")
        ):
            pp.transform_array(bad)
    y = x[:3].copy()
    y[1, 0] = np.inf
    with pytest.raises(ValueError, match="descriptors contain NaN or inf"):
        pp.transform_array(y)


def test_a_spec_without_steps_outputs_float32(data):
    train, x = data
    pp = PostProcessor("maxdim300").fit(train)
    out = pp.transform_array(x.astype(np.float64))
    assert out.dtype == np.float32 and np.array_equal(out, x)


def test_saved_fit_set_ignores_keyword_order_and_old_files_load(data, tmp_path):
    train, x = data
    a = PostProcessor("l2").fit(train, run="r1", checkpoint_sha256="c1")
    b = PostProcessor("l2").fit(train, checkpoint_sha256="c1", run="r1")
    a.save(tmp_path / "a.npz")
    b.save(tmp_path / "b.npz")
    with np.load(tmp_path / "a.npz") as za, np.load(tmp_path / "b.npz") as zb:
        assert str(za["fit_set"]) == str(zb["fit_set"])
        old = {k: za[k] for k in za.files if k != "fit_set"}  # a file from before fit_set
    np.savez(tmp_path / "old.npz", **old)
    loaded = PostProcessor.load(tmp_path / "old.npz")
    assert loaded.fit_set is None and np.array_equal(
        loaded.transform_array(x), a.transform_array(x)
    )


def test_load_refuses_pickled_arrays(tmp_path):
    # an .npz holding an object array would run pickle code on load
    np.savez(tmp_path / "evil.npz", spec=np.array(["l2"], dtype=object), in_dims=np.array(4))
    with pytest.raises(ValueError, match="allow_pickle"):
        PostProcessor.load(tmp_path / "evil.npz")


def test_sweep_passes_evaluate_options_and_the_spec_maxdim(data):
    train, x = data
    rng = np.random.default_rng(7)
    wide = [_descs(rng.standard_normal((n, 300)).astype(np.float32), p) for n, p in
            ((20, "T"), (6, "Q"), (8, "R"))]  # fmt: skip
    gt = {q: None for q in wide[1].ids} | {wide[1].ids[0]: wide[2].ids[0]}
    (row,) = sweep(["l2,maxdim300"], *wide, gt, backend="torch", protocol="isc2021")
    assert row["dims"] == 300 and row["protocol"] == "isc2021"
