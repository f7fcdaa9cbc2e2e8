"""minidisc: a small, byte-reproducible data set in the DISC21 layout.

:func:`build_minidisc` writes under ``root``::

    images/training/T000000.jpg ...     images/reference/R000000.jpg ...
    images/query/Q00000.jpg ... (dev)   images/query/Q50000.jpg ... (phase 2)
    images/query/Q90000.jpg ... (novel edits)
    dev_ground_truth.csv  phase2_ground_truth.csv  novel_ground_truth.csv  minidisc.json

Source images (training, references, distractors and paste-onto backgrounds are four
disjoint pools) are procedural pictures plus, for about one image in six, a cell of one of
the scikit-image photos; the photos are split between training, references and distractors
so that no photo serves two roles (see :mod:`fisc.data.procedural`). Every image has its
own generator ``np.random.default_rng([seed, role_code, index])``, so no image depends on
the order in which others were made.

Queries: ``round_half_up(match_fraction * n)`` of the ``n`` queries of each phase are
edited copies of references (distinct references where there are enough, dev and phase 2
using different ones where possible); the rest are edited copies of distractors, one
distractor per query. Edits: a chain of 1..``max_edits`` distinct ops of
:mod:`fisc.augment.ops` drawn from ``query_ops`` (dev queries never get ``heldout_ops``, which
phase 2 adds, as the challenge's Phase 2 added unseen edits); ``paste_onto`` and
``overlay_image`` take their other image from the background pool. Queries are shuffled
within each phase.

Novel-edits split (``n_novel_queries``, ids ``Q90000..``, ``novel_ground_truth.csv``): a
``novel_match_fraction`` of its queries are edited references, the rest distractors, and every
query carries 1-2 edits of :mod:`fisc.data.novel_edits` (geometric, photometric and overlay
edits that are not fisc ops, so no training pipeline can produce them), mixed with 0..
``max_edits - 1`` dev edits, in random order. It measures generalisation to unseen edits on
more matches than the Phase 2 split holds. Its images use their own random streams: adding it
leaves every other file byte-identical.

``minidisc.json`` holds the spec, per-query source and edit names, the photo split, the
sha256 of every other file and ``"complete": true``. Files are JPEG (quality 90, no EXIF,
no timestamps), so the same spec and seed give the same bytes (given the same library
versions and the same photos available). The set is written into a temporary sibling
folder and moved into place when complete.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import multiprocessing
import os
import shutil
import uuid
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
from PIL import Image
from tqdm import tqdm

from fisc.augment.ops import OPS, build_op
from fisc.data import procedural
from fisc.data.ids import format_id
from fisc.data.novel_edits import FAMILIES as NOVEL_FAMILIES
from fisc.data.novel_edits import NOVEL_EDITS
from fisc.provenance import sha256_of

# 2: queries edited with fisc.augment.ops, held-out ops for phase 2; 3: the novel-edits split
FORMAT_VERSION = 3
# edits that make queries: every op of fisc.augment.ops (all docs/protocol.md families)
QUERY_OPS = (
    "crop",
    "pad",
    "resize",
    "aspect",
    "rotate",
    "rotate90",
    "hflip",
    "vflip",
    "perspective",
    "skew",
    "blur",
    "sharpen",
    "noise",
    "jpeg",
    "pixelize",
    "shuffle_pixels",
    "brightness",
    "contrast",
    "saturation",
    "hue",
    "color_jitter",
    "grayscale",
    "opacity",
    "channel",
    "text",
    "emoji",
    "stripes",
    "meme",
    "screenshot",
    "paste_onto",
    "overlay_image",
)
# used for phase 2 queries only, as Phase 2 of the challenge added edits unseen in Phase 1
HELDOUT_OPS = ("meme", "screenshot")
MANIFEST = "minidisc.json"
JPEG_QUALITY = 90
ROLE_CODES = {
    "training": 1,
    "reference": 2,
    "distractor": 3,
    "background": 4,
    "query": 5,
    "plan": 6,
    "photo_cells": 7,
}
PHOTO_ROLES = ("training", "reference", "distractor")
PHOTO_EVERY = 6  # image i of a role is cut from a photo when i % PHOTO_EVERY == PHOTO_EVERY // 2
N_BACKGROUNDS = 64
PHASE2_FIRST_QUERY = 50_000
NOVEL_FIRST_QUERY = 90_000
NOVEL_PLAN_STREAM = 2  # default_rng([seed, ROLE_CODES["plan"], 2]) shuffles the novel split


log = logging.getLogger(__name__)


class MinidiscError(RuntimeError):
    """A minidisc folder that cannot be reused or read."""


@dataclass(frozen=True)
class MinidiscSpec:
    n_train: int = 1000
    n_reference: int = 400
    n_dev_queries: int = 300  # Phase 1 queries: ids Q00000..
    n_phase2_queries: int = 300  # Phase 2 rehearsal queries: ids Q50000..
    match_fraction: float = 0.25  # queries that are edited references (rest: distractors)
    image_size: int = 160  # longest side of generated source images
    seed: int = 0
    query_ops: tuple[str, ...] = QUERY_OPS  # ops that edit queries (fisc.augment.ops names)
    heldout_ops: tuple[str, ...] = HELDOUT_OPS  # of those, the ones dev queries never get
    max_edits: int = 3  # each query gets a chain of 1..max_edits distinct ops
    n_novel_queries: int = 400  # novel-edits split: ids Q90000..; 0: none
    novel_match_fraction: float = 0.4  # of those, edited references (rest: distractors)

    def __post_init__(self):  # configs hand lists over
        object.__setattr__(self, "query_ops", tuple(self.query_ops))
        object.__setattr__(self, "heldout_ops", tuple(self.heldout_ops))

    def validate(self) -> None:
        limits = {
            "n_train": 10**6,
            "n_reference": 10**6,
            "n_dev_queries": PHASE2_FIRST_QUERY,
            "n_phase2_queries": PHASE2_FIRST_QUERY,
            "n_novel_queries": 100_000 - NOVEL_FIRST_QUERY,
        }
        for name, limit in limits.items():
            value = getattr(self, name)
            if not isinstance(value, int) or not 0 <= value <= limit:
                raise ValueError(f"MinidiscSpec.{name}={value!r} must be an int in [0, {limit}]")
        for name in ("match_fraction", "novel_match_fraction"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ValueError(f"{name}={getattr(self, name)} must be in [0, 1]")
        if not 32 <= self.image_size <= 1024:
            raise ValueError(f"image_size={self.image_size} must be in [32, 1024]")
        if not isinstance(self.seed, int) or self.seed < 0:
            raise ValueError(f"seed={self.seed!r} must be a non-negative int")
        unknown = sorted(set(self.query_ops) - set(OPS))
        if unknown:
            raise ValueError(f"query_ops: unknown ops {unknown}; known: {sorted(OPS)}")
        if not set(self.heldout_ops) <= set(self.query_ops):
            raise ValueError("heldout_ops must be a subset of query_ops")
        dev_ops = set(self.query_ops) - set(self.heldout_ops)
        if not 1 <= self.max_edits <= len(dev_ops):
            raise ValueError(f"max_edits={self.max_edits} must be in [1, {len(dev_ops)}]")
        if self.n_reference == 0 and (self.n_matches() != (0, 0) or self.n_novel_matches()):
            raise ValueError("matching queries need at least one reference")

    def n_matches(self) -> tuple[int, int]:
        """Matching queries (dev, phase 2): ``floor(match_fraction * n + 0.5)`` each."""
        return (
            _round_half_up(self.match_fraction * self.n_dev_queries),
            _round_half_up(self.match_fraction * self.n_phase2_queries),
        )

    def n_novel_matches(self) -> int:
        """Matching queries of the novel-edits split."""
        return _round_half_up(self.novel_match_fraction * self.n_novel_queries)


def _round_half_up(x: float) -> int:
    return int(math.floor(x + 0.5))


# --------------------------------------------------------------------------- sources


def role_photos(seed: int) -> dict[str, tuple[str, ...]]:
    """Disjoint split of the available photos between training, references, distractors."""
    names = procedural.photo_names()
    perm = np.random.default_rng([seed, ROLE_CODES["plan"], 1]).permutation(len(names))
    return {role: tuple(sorted(names[j] for j in perm[k::3])) for k, role in enumerate(PHOTO_ROLES)}


def source_image(
    seed: int, role: str, index: int, image_size: int, photos: dict[str, tuple[str, ...]]
) -> Image.Image:
    """Source image ``index`` of ``role`` (a pristine, unedited RGB image)."""
    code = ROLE_CODES[role]
    rng = np.random.default_rng([seed, code, index])
    size = procedural.target_size(rng, image_size)
    names = photos.get(role, ())
    if names and index % PHOTO_EVERY == PHOTO_EVERY // 2:
        j = index // PHOTO_EVERY
        p, variant = j % len(names), j // len(names)
        if variant < procedural.MAX_VARIANTS:
            cells = np.random.default_rng([seed, ROLE_CODES["photo_cells"], code, p])
            cell = int(cells.permutation(procedural.MAX_VARIANTS)[variant])
            img = procedural.photo_variant(procedural.load_photo(names[p]), cell, rng, size)
            if img is not None:
                return img
    return procedural.procedural_image(rng, *size)


# --------------------------------------------------------------------------- plan


def plan_queries(spec: MinidiscSpec) -> list[tuple[str, str, str, int]]:
    """``(query_id, phase, source_role, source_index)`` for every query, by query id."""
    rng = np.random.default_rng([spec.seed, ROLE_CODES["plan"], 0])
    m_dev, m_p2 = spec.n_matches()
    m_novel = spec.n_novel_matches()
    perm = rng.permutation(spec.n_reference) if spec.n_reference else np.zeros(0, int)
    refs = [int(perm[j % spec.n_reference]) for j in range(m_dev + m_p2 + m_novel)]
    plan, n_distractors = [], 0
    phases = (
        ("dev", spec.n_dev_queries, refs[:m_dev], 0, rng),
        ("phase2", spec.n_phase2_queries, refs[m_dev : m_dev + m_p2], PHASE2_FIRST_QUERY, rng),
        (
            "novel",
            spec.n_novel_queries,
            refs[m_dev + m_p2 :],
            NOVEL_FIRST_QUERY,
            np.random.default_rng([spec.seed, ROLE_CODES["plan"], NOVEL_PLAN_STREAM]),
        ),
    )
    for phase, n, matched, first, shuffle in phases:
        sources = [("reference", r) for r in matched]
        sources += [("distractor", n_distractors + k) for k in range(n - len(matched))]
        n_distractors += n - len(matched)
        for q, k in enumerate(shuffle.permutation(n)):
            plan.append((format_id("query", first + q), phase, *sources[int(k)]))
    return plan


# --------------------------------------------------------------------------- writing


def _save_jpeg(img: Image.Image, path: Path) -> str:
    img.convert("RGB").save(path, format="JPEG", quality=JPEG_QUALITY, optimize=False)
    return sha256_of(path)


def _write_text(path: Path, text: str) -> str:
    data = text.encode("utf-8")
    path.write_bytes(data)
    return hashlib.sha256(data).hexdigest()


def _ground_truth_csv(rows: list[tuple[str, str]]) -> str:
    return "query_id,reference_id\n" + "".join(f"{q},{r}\n" for q, r in sorted(rows))


def _make_items(
    tmp: Path, spec: MinidiscSpec, photos: dict[str, tuple[str, ...]], items: list[tuple]
) -> list[tuple[str, str, dict | None]]:
    """Write the images of ``items``; return ``(relative path, sha256, query info)`` each."""
    out = []
    size = spec.image_size

    def background(rng: np.random.Generator) -> np.ndarray:
        img = source_image(spec.seed, "background", int(rng.integers(N_BACKGROUNDS)), size, {})
        return np.asarray(img.convert("RGB"), dtype=np.uint8)

    ops = {name: build_op(name) for name in spec.query_ops}
    allowed = {
        "dev": sorted(set(spec.query_ops) - set(spec.heldout_ops)),
        "phase2": sorted(spec.query_ops),
    }

    for item in items:
        if item[0] != "query":
            role, i = item
            rel = f"images/{role}/{format_id(role, i)}.jpg"
            out.append(
                (rel, _save_jpeg(source_image(spec.seed, role, i, size, photos), tmp / rel), None)
            )
            continue
        _, qid, phase, role, index = item
        src = source_image(spec.seed, role, index, size, photos)
        rng = np.random.default_rng([spec.seed, ROLE_CODES["query"], int(qid[1:])])
        if phase == "novel":
            names = _novel_chain(rng, allowed["dev"], spec.max_edits)
        else:
            names = [
                str(n)
                for n in rng.choice(
                    allowed[phase], replace=False, size=int(rng.integers(1, spec.max_edits + 1))
                )
            ]
        pixels = np.asarray(src.convert("RGB"), dtype=np.uint8)
        for name in names:
            if name in NOVEL_EDITS:
                pixels = NOVEL_EDITS[name](pixels, rng)
            else:
                pixels = ops[name].edit(pixels, rng, background)
        img = Image.fromarray(pixels)
        rel = f"images/query/{qid}.jpg"
        info = {
            "phase": phase,
            "edits": names,
            "source": format_id("reference", index) if role == "reference" else "distractor",
        }
        if role == "distractor":
            info["distractor_index"] = index
        out.append((rel, _save_jpeg(img, tmp / rel), info))
    return out


def _novel_chain(rng: np.random.Generator, known: list[str], max_edits: int) -> list[str]:
    """1-2 novel edits and 0..max_edits-1 known (dev) edits, in random order."""
    novel = rng.choice(sorted(NOVEL_EDITS), replace=False, size=int(rng.integers(1, 3)))
    extra = rng.choice(known, replace=False, size=int(rng.integers(0, max_edits)))
    names = [str(n) for n in (*novel, *extra)]
    return [names[int(i)] for i in rng.permutation(len(names))]


def _generate(tmp: Path, spec: MinidiscSpec, progress: bool, workers: int) -> None:
    photos = role_photos(spec.seed)
    plan = plan_queries(spec)
    for sub in ("training", "reference", "query"):
        (tmp / "images" / sub).mkdir(parents=True)
    items: list[tuple] = [("training", i) for i in range(spec.n_train)]
    items += [("reference", i) for i in range(spec.n_reference)]
    items += [("query", *entry) for entry in plan]
    workers = max(1, int(workers))
    chunk = 32
    chunks = [items[k : k + chunk] for k in range(0, len(items), chunk)]
    results: list[tuple[str, str, dict | None]] = []
    with tqdm(total=len(items), desc="minidisc", unit="img", disable=not progress) as bar:
        if workers == 1:
            for c in chunks:
                res = _make_items(tmp, spec, photos, c)
                results += res
                bar.update(len(res))
        else:  # spawn: safe even when the caller has threads (torch, OpenMP) running
            ctx = multiprocessing.get_context("spawn")
            with ProcessPoolExecutor(workers, mp_context=ctx) as pool:
                futures = [pool.submit(_make_items, tmp, spec, photos, c) for c in chunks]
                try:
                    for fut in futures:
                        res = fut.result()
                        results += res
                        bar.update(len(res))
                except BaseException:
                    for fut in futures:
                        fut.cancel()
                    raise
    files = {rel: sha for rel, sha, _ in results}
    queries = {rel[len("images/query/") : -4]: info for rel, _, info in results if info}
    truth: dict[str, list[tuple[str, str]]] = {"dev": [], "phase2": [], "novel": []}
    for qid, info in queries.items():
        truth[info["phase"]].append((qid, "" if info["source"] == "distractor" else info["source"]))
    for phase in ("dev", "phase2", "novel"):
        if phase == "novel" and not spec.n_novel_queries:
            continue
        rel = f"{phase}_ground_truth.csv"
        files[rel] = _write_text(tmp / rel, _ground_truth_csv(truth[phase]))
    m_dev, m_p2 = spec.n_matches()
    manifest = {
        "format": "minidisc",
        "version": FORMAT_VERSION,
        "spec": asdict(spec),
        "counts": {
            "training": spec.n_train,
            "reference": spec.n_reference,
            "dev_queries": spec.n_dev_queries,
            "dev_matches": m_dev,
            "phase2_queries": spec.n_phase2_queries,
            "phase2_matches": m_p2,
            "novel_queries": spec.n_novel_queries,
            "novel_matches": spec.n_novel_matches(),
            "distractors": len(plan) - m_dev - m_p2 - spec.n_novel_matches(),
            "backgrounds": N_BACKGROUNDS,
        },
        "novel_edits": {family: list(names) for family, names in NOVEL_FAMILIES.items()},
        "photos": {role: list(names) for role, names in photos.items()},
        "queries": dict(sorted(queries.items())),
        "files": dict(sorted(files.items())),
        "complete": True,
    }
    _write_text(tmp / MANIFEST, json.dumps(manifest, indent=1, sort_keys=True) + "\n")


# --------------------------------------------------------------------------- public API


def load_minidisc_manifest(root: str | Path) -> dict:
    """The manifest of a complete minidisc at ``root``; :class:`MinidiscError` otherwise."""
    path = Path(root) / MANIFEST
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError as exc:
        raise MinidiscError(f"{root} is not a minidisc: {MANIFEST} is missing") from exc
    except (OSError, ValueError) as exc:
        raise MinidiscError(f"cannot read {path}: {exc}") from exc
    if not isinstance(manifest, dict) or manifest.get("complete") is not True:
        raise MinidiscError(f"{path} does not describe a complete minidisc")
    return manifest


def _reusable(root: Path, spec: MinidiscSpec) -> bool | None:
    """True: complete with this spec; None: absent or an empty folder; False: anything else."""
    if not root.exists() and not root.is_symlink():
        return None
    if root.is_dir() and not root.is_symlink() and not any(root.iterdir()):
        return None
    try:
        manifest = load_minidisc_manifest(root)
    except MinidiscError:
        return False
    as_json = json.loads(json.dumps(asdict(spec)))  # tuples compare as the lists JSON holds
    return manifest.get("version") == FORMAT_VERSION and manifest.get("spec") == as_json


def _older_version(root: Path, spec: MinidiscSpec) -> bool:
    """``root`` holds a complete minidisc of an older format version whose spec agrees with
    ``spec`` on every field it has (derived data that fisc regenerates)."""
    try:
        manifest = load_minidisc_manifest(root)
    except MinidiscError:
        return False
    version, old = manifest.get("version"), manifest.get("spec")
    if not (isinstance(version, int) and version < FORMAT_VERSION and isinstance(old, dict)):
        return False
    new = json.loads(json.dumps(asdict(spec)))
    return all(k in new and new[k] == v for k, v in old.items())


def build_minidisc(
    root: str | Path,
    spec: MinidiscSpec = MinidiscSpec(),
    progress: bool = True,
    overwrite: bool = False,
    workers: int = 1,
) -> Path:
    """Build the minidisc of ``spec`` at ``root`` (or reuse it) and return ``root``.

    An existing complete minidisc with the same spec (and format version) is reused as is,
    even with ``overwrite``; one of an older format version with the same spec is rebuilt (a
    warning says so). Anything else at ``root`` (another spec, an incomplete set,
    other files) raises :class:`MinidiscError` unless ``overwrite=True``, which replaces it.
    An empty folder counts as absent. The set is written to a hidden temporary sibling and
    moved into place at the end, so an interrupted build never leaves ``root`` behind.
    ``workers > 1`` shares the work among that many spawned processes (call it under an
    ``if __name__ == "__main__":`` guard); the bytes written do not depend on it.
    """
    spec.validate()
    root = Path(root)
    state = _reusable(root, spec)
    if state:
        return root
    if state is False and not overwrite and _older_version(root, spec):
        log.warning(
            "%s was built by an older minidisc format: rebuilding it (same seed and "
            "spec give the same images for the splits it already had)",
            root,
        )
        overwrite = True
    if state is False and not overwrite:
        raise MinidiscError(
            f"{root} exists but is not a complete minidisc of this spec and format version "
            f"{FORMAT_VERSION} ({asdict(spec)}); delete it, use another root, or replace it "
            f"(overwrite=True, or `fisc minidisc --root {root} --overwrite`)"
        )
    root.parent.mkdir(parents=True, exist_ok=True)
    tag = f"{os.getpid()}-{uuid.uuid4().hex[:8]}"
    tmp = root.parent / f".{root.name}.partial-{tag}"
    tmp.mkdir()
    old = root.parent / f".{root.name}.old-{tag}"
    try:
        _generate(tmp, spec, progress, workers)
        if state is False:  # overwrite: move the old content aside, delete it afterwards
            os.replace(root, old)
        try:
            os.replace(tmp, root)
        except BaseException:
            if state is False:
                os.replace(old, root)
            raise
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    if state is False:
        if old.is_dir() and not old.is_symlink():
            shutil.rmtree(old, ignore_errors=True)
        else:
            old.unlink(missing_ok=True)
    return root
