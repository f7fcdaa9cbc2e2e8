"""Descriptor post-processing steps, fitted on training descriptors only.

Every step has ``fit(train) -> self`` (the only place parameters are estimated, always from the
training set), ``transform(x, role=None)`` that maps each row using that row and the fitted
parameters alone (reference independence, see docs/protocol.md), ``state()`` and ``from_state``.

Row independence is made bit-exact: matrix products always run on blocks of exactly ``BLOCK``
rows (the last block is zero-padded), in float64, so a row goes through the same BLAS call
whichever other rows share its set; the output is float32.

Neighbour steps (``dba``, ``nes``, ``score_norm``, ``isc_norm``, ``stretch``) use inner-product
similarity to the stored training descriptors, so their inputs should be L2-normalised (put
``l2`` before).

Role-dependent steps (``score_norm``, ``isc_norm``, ``stretch``) append coordinates that differ
between queries and references (``role="query"`` or ``"reference"``); each side is still a
function of the row alone. Why: with an identical map ``x -> [x, a(x)]`` on both sides,
``||q'-r'||² = ||q-r||² + (a(q)-a(r))²`` always has the cross term ``-2 a(q) a(r)``, and no finite
symmetric embedding can add independent per-side offsets (the Gram matrix would need a full-rank
diagonal part), so an exact L2-compatible score normalisation needs the sides to differ.

``score_norm`` (k, λ; SSCD-style, b(x) = mean of the top-k training similarities of x, clipped
to ≥ -1): with ``a(x) = sqrt(2 λ (1 + b(x)))``
    query      q' = [q, a(q), 0]        reference  r' = [r, 0, a(r)]        (sides="qr")
    query      q' = [q, a(q)]           reference  r' = [r, 0]              (sides="q", SSCD)
so that, for unit q and r,
    -||q'-r'||² = 2 (q·r - λ b(q) - λ b(r)) - 2 - 4λ        (sides="qr")
    -||q'-r'||² = 2 (q·r - λ b(q)) - 2 - 2λ                  (sides="q")
i.e. the squared distance ranks pairs exactly by the normalised similarity.

``isc_norm`` (n, factor, reduction; isc2021's ``scripts/score_normalization.py``): isc2021 scores
a pair by the inner product ``q·r − factor · s_n(q)``, ``s_n(q)`` the n-th largest similarity of
q to the training descriptors (reduction ``min``, isc2021's default; ``mean``: the mean of the
top n), with no change on the reference side. fisc searches by L2, so the same score is made a
distance as ``score_norm``'s ``sides="q"``: with ``a(q) = sqrt(2 · factor · (1 + s_n(q)))``
    query      q' = [q, a(q)]           reference  r' = [r, 0]
and, for unit q and r, ``-||q'-r'||² = 2 (q·r − factor · s_n(q)) − 2 − 2 factor``: an increasing
affine map of isc2021's score with constants common to every pair, so every ranking (per query
and pooled over queries, hence μAP) is isc2021's. ``isc_norm{n}:f:mean`` equals
``score_norm{n}:f:q``.

``stretch`` (k, α; 3rd place): queries are scaled by ``1/β(q)``, ``β(q) = α max(b(q), 0.1)``,
and get one coordinate ``sqrt(M - 1/β(q)²)`` with ``M = 1/(0.1 α)²`` (so every query has squared
norm ``M``); references get ``0``. For unit q, r: ``-||q'-r'||² = 2 q·r/β(q) - M - 1``, exactly the
stretched similarity up to an affine map.
"""

from __future__ import annotations

import numpy as np

BLOCK = 256  # rows per matrix product; fixed so that a row's arithmetic never depends on others
TRAIN_CHUNK = 8192  # training rows per product in the neighbour search
ROLES = ("query", "reference")


def _as2d(x, name: str = "descriptors") -> np.ndarray:
    x = np.asarray(x)
    if x.ndim != 2 or x.shape[1] == 0:
        raise ValueError(f"{name} must be a non-empty 2-D array (n × d), got shape {x.shape}")
    if not np.isfinite(x).all():
        raise ValueError(f"{name} contain NaN or inf")
    return x


def _blocked_matmul(x: np.ndarray, w: np.ndarray) -> np.ndarray:
    """``x @ w`` in float64, computed on zero-padded blocks of exactly ``BLOCK`` rows."""
    x = np.asarray(x, dtype=np.float64)
    w = np.ascontiguousarray(w, dtype=np.float64)
    out = np.empty((len(x), w.shape[1]), dtype=np.float64)
    buf = np.zeros((BLOCK, x.shape[1]), dtype=np.float64)
    for start in range(0, len(x), BLOCK):
        rows = x[start : start + BLOCK]
        buf[: len(rows)] = rows
        buf[len(rows) :] = 0.0
        out[start : start + len(rows)] = (buf @ w)[: len(rows)]
    return out


def train_topk(x: np.ndarray, train: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """The ``k`` most similar (inner product) training rows of each row of ``x``.

    Returns ``(sims, idx)``, both ``(n, k)``, sorted by decreasing similarity then index; the
    similarities are recomputed per row from the selected vectors (float64).
    """
    if k > len(train):
        raise ValueError(f"k={k} neighbours requested from {len(train)} training descriptors")
    x64 = np.asarray(x, dtype=np.float64)
    best_s = np.full((len(x), 0), -np.inf)
    best_i = np.zeros((len(x), 0), dtype=np.int64)
    for start in range(0, len(train), TRAIN_CHUNK):
        chunk = np.asarray(train[start : start + TRAIN_CHUNK], dtype=np.float64)
        s = _blocked_matmul(x64, chunk.T)
        i = np.broadcast_to(np.arange(start, start + len(chunk)), s.shape)
        s, i = np.concatenate([best_s, s], axis=1), np.concatenate([best_i, i], axis=1)
        order = np.lexsort((i, -s), axis=1)[:, :k]  # ties broken by the lower index
        best_s, best_i = np.take_along_axis(s, order, 1), np.take_along_axis(i, order, 1)
    neigh = np.asarray(train, dtype=np.float64)[best_i]  # (n, k, d)
    sims = (neigh * x64[:, None, :]).sum(axis=-1)
    return sims, best_i


class Step:
    """Base class; subclasses set ``name`` and the parameter names in ``params``."""

    name = ""
    params: tuple[str, ...] = ()
    role_dependent = False

    def __init__(self, **kw):
        for p in self.params:
            setattr(self, p, kw[p])
        self._fitted: dict[str, np.ndarray] = {}

    @property
    def fitted(self) -> bool:
        return bool(self._fitted) or not self._fit_keys()

    def _fit_keys(self) -> tuple[str, ...]:
        return ()

    def _check_fitted(self):
        if not self.fitted:
            raise RuntimeError(f"step {self!r} used before fit()")

    def fit(self, train: np.ndarray) -> Step:
        return self

    def transform(self, x: np.ndarray, role: str | None = None) -> np.ndarray:
        raise NotImplementedError

    def out_dims(self, d: int) -> int:
        return d

    def state(self) -> dict[str, np.ndarray | float]:
        out: dict[str, np.ndarray | float] = {p: getattr(self, p) for p in self.params}
        out.update(self._fitted)
        return out

    @classmethod
    def from_state(cls, state: dict) -> Step:
        kw = {}
        for p in cls.params:
            v = state[p]
            v = v.item() if isinstance(v, np.ndarray) else v
            kw[p] = v
        step = cls(**kw)
        step._fitted = {k: np.asarray(state[k]) for k in step._fit_keys()}
        return step

    def __repr__(self) -> str:
        args = ", ".join(f"{p}={getattr(self, p)!r}" for p in self.params)
        return f"{type(self).__name__}({args})"


class Center(Step):
    name = "center"

    def _fit_keys(self):
        return ("mean",)

    def fit(self, train):
        self._fitted = {"mean": _as2d(train, "training descriptors").mean(0, dtype=np.float64)}
        return self

    def transform(self, x, role=None):
        self._check_fitted()
        return (np.asarray(x, np.float64) - self._fitted["mean"]).astype(np.float32)


class PCA(Step):
    """Project the centred descriptors on the top ``d`` principal axes of the training set."""

    name = "pca"
    params = ("d",)
    whiten = False

    def _fit_keys(self):
        return ("mean", "proj", "variance")

    def fit(self, train):
        train = _as2d(train, "training descriptors").astype(np.float64)
        n, d_in = train.shape
        if self.d > min(n - 1, d_in):
            raise ValueError(
                f"{self.name}{self.d}: needs ≥ {self.d + 1} training rows and "
                f"≥ {self.d} input dims, got {n} × {d_in}"
            )
        mean = train.mean(0)
        _, s, vt = np.linalg.svd(train - mean, full_matrices=False)
        comps = vt[: self.d]
        comps *= np.where(comps[np.arange(self.d), np.abs(comps).argmax(1)] < 0, -1.0, 1.0)[:, None]
        variance = s[: self.d] ** 2 / (n - 1)
        proj = comps.T
        if self.whiten:
            proj = proj / np.sqrt(variance + self.eps)
        self._fitted = {"mean": mean, "proj": proj, "variance": variance}
        return self

    def transform(self, x, role=None):
        self._check_fitted()
        x = np.asarray(x, np.float64) - self._fitted["mean"]
        return _blocked_matmul(x, self._fitted["proj"]).astype(np.float32)

    def out_dims(self, d):
        if self.d > d:
            raise ValueError(f"{self.name}{self.d} cannot give more dims than its {d}-d input")
        return self.d


class PCAWhiten(PCA):
    """PCA to ``d`` dims, each axis divided by ``sqrt(variance + eps)``."""

    name = "pca_whiten"
    params = ("d", "eps")
    whiten = True


class L2(Step):
    name = "l2"

    def transform(self, x, role=None):
        x = np.asarray(x, np.float64)
        norm = np.sqrt((x * x).sum(axis=1, keepdims=True))
        return (x / np.maximum(norm, 1e-12)).astype(np.float32)


class _Neighbours(Step):
    """Base of the steps that look up the ``k`` nearest training descriptors."""

    def _fit_keys(self):
        return ("train",)

    def fit(self, train):
        train = _as2d(train, "training descriptors")
        if len(train) < self.k:
            raise ValueError(f"{self.name}{self.k}: only {len(train)} training descriptors")
        self._fitted = {"train": np.array(train, dtype=np.float32)}
        return self

    def _topk(self, x):
        self._check_fitted()
        return train_topk(x, self._fitted["train"], self.k)


class DBA(_Neighbours):
    """x ← (x + Σ w_i t_i) / (1 + Σ w_i), t_i the k nearest training rows, w_i = max(s_i, 0)^α."""

    name = "dba"
    params = ("k", "alpha")

    def transform(self, x, role=None):
        sims, idx = self._topk(x)
        w = np.maximum(sims, 0.0) ** self.alpha
        neigh = self._fitted["train"][idx].astype(np.float64)
        y = np.asarray(x, np.float64) + (w[:, :, None] * neigh).sum(axis=1)
        return (y / (1.0 + w.sum(axis=1, keepdims=True))).astype(np.float32)


class NES(_Neighbours):
    """Negative embedding subtraction: x ← normalise(x − β · mean of k nearest training rows)."""

    name = "nes"
    params = ("k", "beta")

    def transform(self, x, role=None):
        _, idx = self._topk(x)
        y = np.asarray(x, np.float64) - self.beta * self._fitted["train"][idx].astype(
            np.float64
        ).mean(axis=1)
        return L2().transform(y)


def _check_role(step: Step, role: str | None) -> str:
    if role not in ROLES:
        raise ValueError(
            f"step {step!r} treats queries and references differently: pass "
            f"role='query' or role='reference', got {role!r}"
        )
    return role


class ScoreNorm(_Neighbours):
    """Score normalisation by the mean top-k training similarity; see the module docstring."""

    name = "score_norm"
    params = ("k", "lam", "sides")
    role_dependent = True

    def out_dims(self, d):
        return d + len(self.sides)

    def transform(self, x, role=None):
        role = _check_role(self, role)
        sims, _ = self._topk(x)
        b = np.maximum(sims.mean(axis=1), -1.0)
        a = np.sqrt(2.0 * self.lam * (1.0 + b))
        extra = np.zeros((len(b), len(self.sides)))
        if role == "query":
            extra[:, 0] = a
        elif self.sides == "qr":
            extra[:, 1] = a
        return np.concatenate([np.asarray(x, np.float64), extra], axis=1).astype(np.float32)


def _with_column(x: np.ndarray, column: np.ndarray | None = None) -> np.ndarray:
    """``x`` with one more coordinate (zeros when ``column`` is None), as float32: how the
    query-side score corrections (stretching, isc2021's normalisation) reach an L2 search."""
    extra = np.zeros((len(x), 1)) if column is None else np.asarray(column)[:, None]
    return np.concatenate([x, extra], axis=1).astype(np.float32)


class _QueryColumn(_Neighbours):
    """Base of the role-dependent steps that give every row one more coordinate: references
    get ``[r, 0]``; a query's side, :meth:`_query`, is computed from its top-k training
    similarities."""

    role_dependent = True

    def out_dims(self, d):
        return d + 1

    def transform(self, x, role=None):
        role = _check_role(self, role)
        x = np.asarray(x, np.float64)
        if role == "reference":
            return _with_column(x)
        sims, _ = self._topk(x)
        return self._query(x, sims)

    def _query(self, x: np.ndarray, sims: np.ndarray) -> np.ndarray:
        """The transformed queries ``x`` (float64), given ``sims``, their (n, k) top-k
        training similarities."""
        raise NotImplementedError


class IscNorm(_QueryColumn):
    """isc2021's score normalisation by the n-th (or mean top-n) training similarity of the
    query; see the module docstring."""

    name = "isc_norm"
    params = ("k", "factor", "reduction")

    def _query(self, x, sims):
        s_n = sims[:, -1] if self.reduction == "min" else sims.mean(axis=1)
        a = np.sqrt(2.0 * self.factor * (1.0 + np.maximum(s_n, -1.0)))
        return _with_column(x, a)


class Stretch(_QueryColumn):
    """Query stretching by α · mean top-k training similarity; see the module docstring."""

    name = "stretch"
    params = ("k", "alpha")
    floor = 0.1

    def _query(self, x, sims):
        beta = self.alpha * np.maximum(sims.mean(axis=1), self.floor)
        big_m = 1.0 / (self.floor * self.alpha) ** 2
        extra = np.sqrt(np.maximum(big_m - 1.0 / beta**2, 0.0))
        return _with_column(x / beta[:, None], extra)


STEPS: dict[str, type[Step]] = {
    cls.name: cls for cls in (Center, PCA, PCAWhiten, L2, DBA, NES, ScoreNorm, IscNorm, Stretch)
}
