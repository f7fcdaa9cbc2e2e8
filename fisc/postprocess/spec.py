"""Declarative post-processing specs, in the spirit of SSCD's codec strings.

Grammar: ``spec := token ("," token)*``, ``token := name [int] (":" param)*``, no spaces needed.

| token | meaning | defaults |
|---|---|---|
| ``center`` | subtract the training mean | |
| ``pca{d}`` | PCA to d dims | d required |
| ``pca_whiten{d}[:eps]`` | PCA-whitening to d dims | eps = 1e-6 |
| ``l2`` | L2 normalisation | |
| ``dba{k}[:alpha]`` | database-side augmentation with training neighbours | k = 10, alpha = 3 |
| ``nes{k}[:beta]`` | negative embedding subtraction | k = 10, beta = 0.35 |
| ``score_norm{k}[:lam[:sides]]`` | score normalisation, sides ``qr`` or ``q`` | 3, 1.0, qr |
| ``isc_norm{n}[:factor[:red]]`` | isc2021's score normalisation, ``min`` / ``mean`` | 10, 1, min |
| ``stretch{k}[:alpha]`` | query stretching | k = 5, alpha = 2.5 |
| ``maxdim{n}`` | allow n output dims (default 256); not a step | |

Examples: ``"l2"``, ``"pca_whiten256,l2"``, ``"center,pca128,l2,nes10:0.35"``,
``"pca_whiten254,l2,score_norm3:1.0"`` (score_norm adds 2 dims, 1 with ``:q``),
``"pca255,l2,isc_norm10:2.0"`` (isc2021's ``--n 10 --factor 2``; adds 1 dim).
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np

from fisc.challenge import MAX_DIMS
from fisc.descriptors import Descriptors
from fisc.files import atomic_path
from fisc.postprocess.steps import STEPS, Step

# name -> (default int, [(param, type, default), ...]); int default None means required
_GRAMMAR: dict[str, tuple[str, int | None, list[tuple[str, type, object]]]] = {
    "center": ("", None, []),
    "pca": ("d", None, []),
    "pca_whiten": ("d", None, [("eps", float, 1e-6)]),
    "l2": ("", None, []),
    "dba": ("k", 10, [("alpha", float, 3.0)]),
    "nes": ("k", 10, [("beta", float, 0.35)]),
    "score_norm": ("k", 3, [("lam", float, 1.0), ("sides", str, "qr")]),
    "isc_norm": ("k", 10, [("factor", float, 1.0), ("reduction", str, "min")]),
    "stretch": ("k", 5, [("alpha", float, 2.5)]),
}
_NAMES = sorted([*_GRAMMAR, "maxdim"], key=len, reverse=True)


def _parse_token(token: str, spec: str) -> tuple[str, dict]:
    def bad(why: str) -> ValueError:
        return ValueError(f"post-processing spec {spec!r}: bad token {token!r}: {why}")

    name = next((n for n in _NAMES if token.startswith(n)), None)
    if name is None:
        raise bad(f"unknown step (known: {', '.join(sorted(_NAMES))})")
    rest = token[len(name) :]
    head, *args = rest.split(":")
    if name == "maxdim":
        if not head.isdigit() or args:
            raise bad("expected maxdim<n>")
        return name, {"n": int(head)}
    int_name, int_default, params = _GRAMMAR[name]
    kw: dict = {}
    if head:
        if not int_name or not head.isdigit() or int(head) < 1:
            raise bad(f"unexpected {head!r} after {name!r}")
        kw[int_name] = int(head)
    elif int_name:
        if int_default is None:
            raise bad(f"{name} needs its {int_name}, e.g. {name}128")
        kw[int_name] = int_default
    if len(args) > len(params):
        raise bad(f"{name} takes at most {len(params)} ':' parameter(s)")
    for i, (pname, ptype, default) in enumerate(params):
        if i < len(args):
            try:
                kw[pname] = ptype(args[i])
            except ValueError:
                raise bad(f"parameter {pname}={args[i]!r} is not a {ptype.__name__}") from None
        else:
            kw[pname] = default
    if name == "score_norm" and kw["sides"] not in ("qr", "q"):
        raise bad("score_norm sides must be 'qr' or 'q'")
    if name == "isc_norm" and kw["reduction"] not in ("min", "mean"):
        raise bad("isc_norm reduction must be 'min' (the n-th similarity) or 'mean'")
    for weight in ("lam", "factor"):
        if kw.get(weight, 0.0) < 0:
            raise bad(f"{weight} must be ≥ 0")
    if name == "pca_whiten" and kw["eps"] < 0:
        raise bad("eps must be ≥ 0")
    return name, kw


def _parse(text: str) -> tuple[list[Step], int]:
    if not isinstance(text, str) or not text.strip():
        raise ValueError(f"post-processing spec must be a non-empty string, got {text!r}")
    steps: list[Step] = []
    max_dims = MAX_DIMS
    for token in (t.strip() for t in text.split(",")):
        if not token:
            raise ValueError(f"post-processing spec {text!r}: empty token")
        name, kw = _parse_token(token, text)
        if name == "maxdim":
            max_dims = kw["n"]
        else:
            steps.append(STEPS[name](**kw))
    return steps, max_dims


def parse_spec(text: str) -> list[Step]:
    """The (unfitted) steps of a spec string; ``ValueError`` naming any bad token."""
    return _parse(text)[0]


def ids_digest(ids) -> str:
    """sha256 of image ids, one per line in the given order: names a fit set."""
    h = hashlib.sha256()
    for i in ids:
        h.update(f"{i}\n".encode())
    return h.hexdigest()


class PostProcessor:
    """A spec's steps, fitted in order on the training descriptors, then applied to any set."""

    def __init__(self, spec: str):
        self.spec = spec
        self.steps, self.max_dims = _parse(spec)
        self.dims: int | None = None
        self.in_dims: int | None = None
        self.fit_set: dict | None = None  # what it was fitted on: count, ids_sha256 (+ caller's)

    @property
    def role_dependent(self) -> bool:
        return any(s.role_dependent for s in self.steps)

    def _check_dims(self, d_in: int) -> int:
        d = d_in
        for s in self.steps:
            d = s.out_dims(d)
        if d > self.max_dims:
            raise ValueError(
                f"post-processing spec {self.spec!r} gives {d}-d descriptors > {self.max_dims}: "
                f"reduce the dims (e.g. a pca step) or add 'maxdim{d}' to the spec"
            )
        return d

    def min_fit_rows(self) -> int:
        """The fewest training descriptors the spec can be fitted on (PCA to d needs d + 1,
        a neighbour step with k neighbours needs k)."""
        need = 1
        for step in self.steps:
            if "d" in step.params:
                need = max(need, step.d + 1)
            if "k" in step.params:
                need = max(need, step.k)
        return need

    def fit(self, train: Descriptors | np.ndarray, **fit_info) -> PostProcessor:
        """Fit every step on the training descriptors, each on the previous steps' output.
        The fit set's size and (for :class:`Descriptors`) a hash of its ids are recorded in
        :attr:`fit_set`, with any JSON-able ``fit_info`` (e.g. the checkpoint's sha256)."""
        x = train.vectors if isinstance(train, Descriptors) else np.asarray(train)
        if x.ndim != 2 or len(x) == 0:
            raise ValueError(f"training descriptors must be a non-empty n × d array, got {x.shape}")
        self.dims = self._check_dims(x.shape[1])
        self.in_dims = x.shape[1]
        ids_sha256 = ids_digest(train.ids) if isinstance(train, Descriptors) else None
        self.fit_set = {"count": int(len(x)), "ids_sha256": ids_sha256, **fit_info}
        for i, step in enumerate(self.steps):
            step.fit(x)
            if i + 1 < len(self.steps):
                # role-dependent steps are last in practice; training rows pass as references
                x = step.transform(x, role="reference" if step.role_dependent else None)
        return self

    def transform_array(self, x: np.ndarray, role: str | None = None) -> np.ndarray:
        if self.in_dims is None:
            raise RuntimeError(f"PostProcessor({self.spec!r}) used before fit() or load()")
        x = np.asarray(x)
        if x.ndim != 2 or x.shape[1] != self.in_dims:
            raise ValueError(f"expected n × {self.in_dims} descriptors, got shape {x.shape}")
        if not np.isfinite(x).all():
            raise ValueError("descriptors contain NaN or inf")
        for step in self.steps:
            x = step.transform(x, role=role)
        return np.asarray(x, dtype=np.float32)

    def transform(self, descriptors: Descriptors, role: str | None = None) -> Descriptors:
        """Post-processed descriptors; ``role`` ('query'/'reference') is needed by
        ``score_norm`` and ``stretch``."""
        return Descriptors(descriptors.ids, self.transform_array(descriptors.vectors, role))

    def save(self, path: str | Path) -> None:
        """Write the spec and every fitted parameter to an ``.npz`` file, atomically."""
        if self.in_dims is None:
            raise RuntimeError(f"PostProcessor({self.spec!r}) saved before fit()")
        arrays = {
            "spec": np.array(self.spec),
            "in_dims": np.array(self.in_dims),
            "fit_set": np.array(json.dumps(self.fit_set, sort_keys=True)),
        }
        for i, step in enumerate(self.steps):
            for key, value in step.state().items():
                arrays[f"{i}/{key}"] = np.asarray(value)
        with atomic_path(path) as tmp, open(tmp, "wb") as f:
            np.savez(f, **arrays)

    @classmethod
    def load(cls, path: str | Path) -> PostProcessor:
        with np.load(path, allow_pickle=False) as z:
            pp = cls(str(z["spec"]))
            pp.in_dims = int(z["in_dims"])
            pp.dims = pp._check_dims(pp.in_dims)
            pp.fit_set = json.loads(str(z["fit_set"])) if "fit_set" in z.files else None
            for i, step in enumerate(pp.steps):
                prefix = f"{i}/"
                state = {k[len(prefix) :]: z[k] for k in z.files if k.startswith(prefix)}
                pp.steps[i] = type(step).from_state(state)
        return pp

    def __repr__(self) -> str:
        return f"PostProcessor({self.spec!r})"
