"""Tests of fisc.data.minidisc: a reproducible mini data set in the DISC21 layout."""

from __future__ import annotations

import csv
import dataclasses
import hashlib
import json
import math
from pathlib import Path

import numpy as np
import pytest
from helpers.minidisc import SMALL_SPEC
from PIL import Image

from fisc.data import minidisc as M
from fisc.data.ids import check_id

# SMALL_SPEC: 0.25 * 10 = 2.5 queries: documented rounding is half up, so 3 matches per phase.
EXPECTED_MATCHES = 3


def file_hashes(root: Path) -> dict[str, str]:
    return {
        p.relative_to(root).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


def read_gt(path: Path) -> list[tuple[str, str]]:
    with open(path, newline="") as fh:
        rows = list(csv.reader(fh))
    assert rows[0] == ["query_id", "reference_id"]
    return [tuple(r) for r in rows[1:]]


def leftovers(root: Path) -> list[Path]:
    return [p for p in root.parent.iterdir() if p.name.startswith(f".{root.name}.")]


@pytest.fixture(scope="module")
def built(tmp_path_factory) -> tuple[Path, Path]:
    a = M.build_minidisc(tmp_path_factory.mktemp("a") / "md", SMALL_SPEC, progress=False)
    b = M.build_minidisc(tmp_path_factory.mktemp("b") / "md", SMALL_SPEC, progress=False)
    return a, b


def test_byte_identical_builds(built):
    a, b = built
    ha, hb = file_hashes(a), file_hashes(b)
    assert ha == hb
    assert len(ha) == 20 + 15 + 20 + 20 + 4  # images, three CSVs, the manifest
    listed = M.load_minidisc_manifest(a)["files"]
    assert listed == {k: v for k, v in ha.items() if k != M.MANIFEST}


def test_layout_and_ids(built):
    root = built[0]
    names = {
        s: sorted(p.stem for p in (root / "images" / s).iterdir())
        for s in ("training", "reference", "query")
    }
    assert names["training"] == [f"T{i:06d}" for i in range(20)]
    assert names["reference"] == [f"R{i:06d}" for i in range(15)]
    assert names["query"] == [f"Q{i:05d}" for i in range(10)] + [
        f"Q{i:05d}" for i in range(50000, 50010)
    ] + [f"Q{i:05d}" for i in range(90000, 90020)]  # fmt: skip
    for split, ids in names.items():
        for i in ids:
            check_id(split, i)
    for p in (root / "images").rglob("*"):
        if p.is_file():
            assert p.suffix == ".jpg"
            with Image.open(p) as im:
                assert im.format == "JPEG" and im.mode == "RGB"
                assert not im.getexif()
                assert min(im.size) >= 32
    for p in (root / "images" / "training").iterdir():
        with Image.open(p) as im:
            assert max(im.size) == 64 and 0.6 - 0.02 <= im.size[0] / im.size[1] <= 1.6 + 0.03


def test_ground_truth(built):
    root = built[0]
    refs = {p.stem for p in (root / "images" / "reference").iterdir()}
    dev, p2 = read_gt(root / "dev_ground_truth.csv"), read_gt(root / "phase2_ground_truth.csv")
    assert [q for q, _ in dev] == [f"Q{i:05d}" for i in range(10)]
    assert [q for q, _ in p2] == [f"Q{i:05d}" for i in range(50000, 50010)]
    dev_refs, p2_refs = [r for _, r in dev if r], [r for _, r in p2 if r]
    assert len(dev_refs) == len(p2_refs) == EXPECTED_MATCHES
    assert set(dev_refs + p2_refs) <= refs
    assert len(set(dev_refs + p2_refs)) == 2 * EXPECTED_MATCHES  # distinct, phases disjoint
    text = (root / "dev_ground_truth.csv").read_bytes()
    assert text.startswith(b"query_id,reference_id\n") and b"\r" not in text
    manifest = M.load_minidisc_manifest(root)
    for q, r in dev + p2:
        info = manifest["queries"][q]
        assert info["source"] == (r or "distractor")
        assert 1 <= len(info["edits"]) <= 3 and len(set(info["edits"])) == len(info["edits"])
        assert info["phase"] == ("dev" if q < "Q50000" else "phase2")
        if info["phase"] == "dev":  # held-out edits appear in phase 2 only
            assert not set(info["edits"]) & set(M.HELDOUT_OPS)
    assert manifest["spec"] == {
        "n_train": 20,
        "n_reference": 15,
        "n_dev_queries": 10,
        "n_phase2_queries": 10,
        "match_fraction": 0.25,
        "image_size": 64,
        "seed": 3,
        "query_ops": list(M.QUERY_OPS),
        "heldout_ops": list(M.HELDOUT_OPS),
        "max_edits": 3,
        "n_novel_queries": 20,
        "novel_match_fraction": 0.4,
    }
    assert manifest["complete"] is True


def _thumbs(folder: Path) -> dict[str, np.ndarray]:
    out = {}
    for p in sorted(folder.iterdir()):
        with Image.open(p) as im:
            out[p.stem] = np.asarray(im.convert("RGB").resize((16, 16)), dtype=np.float32)
    return out


def test_sources_distinct_across_roles(built):
    root = built[0]
    train, ref = (
        file_hashes(root / "images" / "training"),
        file_hashes(root / "images" / "reference"),
    )
    assert not set(train.values()) & set(ref.values())
    assert len(set(train.values())) == 20 and len(set(ref.values())) == 15
    t, r = _thumbs(root / "images" / "training"), _thumbs(root / "images" / "reference")
    images = list(t.values()) + list(r.values())
    dists = [np.abs(x - y).mean() for i, x in enumerate(images) for y in images[i + 1 :]]
    assert min(dists) > 3.0  # no near-duplicates among sources, even across roles
    photos = M.load_minidisc_manifest(root)["photos"]
    used = [name for names in photos.values() for name in names]
    assert len(used) == len(set(used))


def test_query_counts_follow_rounding():
    for n, f in [(10, 0.25), (7, 0.5), (3, 0.1), (100, 0.2), (5, 1.0), (9, 0.0)]:
        spec = M.MinidiscSpec(
            n_dev_queries=n, n_phase2_queries=n, match_fraction=f, n_reference=4, n_novel_queries=0
        )
        plan = M.plan_queries(spec)
        matched = [p for p in plan if p[2] == "reference"]
        assert len(matched) == 2 * math.floor(n * f + 0.5)
        distractors = sorted(p[3] for p in plan if p[2] == "distractor")
        assert distractors == list(range(2 * n - len(matched)))  # one distractor per query


def test_references_reused_only_when_needed():
    spec = M.MinidiscSpec(
        n_reference=3, n_dev_queries=4, n_phase2_queries=2, match_fraction=1.0, n_novel_queries=0
    )
    plan = M.plan_queries(spec)
    dev = [p[3] for p in plan if p[1] == "dev"]
    assert sorted(set(dev)) == [0, 1, 2] and len(dev) == 4
    p2 = [p[3] for p in plan if p[1] == "phase2"]
    assert len(p2) == 2 and len(set(p2)) == 2


def test_queries_are_shuffled():
    plan = M.plan_queries(M.MinidiscSpec(n_dev_queries=100, n_phase2_queries=0, n_novel_queries=0))
    positions = [i for i, p in enumerate(plan) if p[2] == "reference"]
    assert len(positions) == 25 and positions != list(range(25)) and max(positions) > 50


def test_reuse_mismatch_overwrite(tmp_path):
    root = tmp_path / "md"
    spec = M.MinidiscSpec(
        n_train=3, n_reference=3, n_dev_queries=2, n_phase2_queries=2, image_size=48, seed=1
    )
    M.build_minidisc(root, spec, progress=False)
    stamp = (root / M.MANIFEST).stat().st_mtime_ns
    assert M.build_minidisc(root, spec, progress=False) == root
    assert (root / M.MANIFEST).stat().st_mtime_ns == stamp  # reused, not rebuilt
    other = dataclasses.replace(spec, seed=2)
    with pytest.raises(M.MinidiscError, match="overwrite=True"):
        M.build_minidisc(root, other, progress=False)
    assert M.load_minidisc_manifest(root)["spec"]["seed"] == 1
    M.build_minidisc(root, other, progress=False, overwrite=True)
    assert M.load_minidisc_manifest(root)["spec"]["seed"] == 2
    assert leftovers(root) == []


def test_incomplete_and_empty_roots(tmp_path):
    spec = M.MinidiscSpec(
        n_train=2, n_reference=2, n_dev_queries=1, n_phase2_queries=1, image_size=40
    )
    junk = tmp_path / "junk"
    junk.mkdir()
    (junk / "note.txt").write_text("x")
    with pytest.raises(M.MinidiscError):
        M.build_minidisc(junk, spec, progress=False)
    half = tmp_path / "half"
    half.mkdir()
    (half / M.MANIFEST).write_text(json.dumps({"spec": {}, "complete": False}))
    with pytest.raises(M.MinidiscError):
        M.build_minidisc(half, spec, progress=False)
    with pytest.raises(M.MinidiscError):
        M.load_minidisc_manifest(half)
    M.build_minidisc(half, spec, progress=False, overwrite=True)
    assert not (half / "note.txt").exists() and M.load_minidisc_manifest(half)["complete"]
    empty = tmp_path / "empty"
    empty.mkdir()
    M.build_minidisc(empty, spec, progress=False)
    assert M.load_minidisc_manifest(empty)["complete"]
    with pytest.raises(M.MinidiscError):
        M.load_minidisc_manifest(tmp_path / "nothing")


def test_killed_build_leaves_nothing(tmp_path, monkeypatch):
    spec = M.MinidiscSpec(
        n_train=6, n_reference=4, n_dev_queries=2, n_phase2_queries=2, image_size=40
    )
    real, calls = M.source_image, []

    def dying(*args, **kwargs):
        calls.append(1)
        if len(calls) > 7:
            raise KeyboardInterrupt("killed")
        return real(*args, **kwargs)

    monkeypatch.setattr(M, "source_image", dying)
    root = tmp_path / "md"
    with pytest.raises(KeyboardInterrupt):
        M.build_minidisc(root, spec, progress=False, workers=1)
    assert not root.exists() and leftovers(root) == []
    # an existing set being overwritten survives a failed rebuild
    monkeypatch.setattr(M, "source_image", real)
    M.build_minidisc(root, spec, progress=False)
    before = file_hashes(root)
    monkeypatch.setattr(M, "source_image", dying)
    calls.clear()
    with pytest.raises(KeyboardInterrupt):
        M.build_minidisc(
            root,
            M.MinidiscSpec(n_train=9, image_size=40),
            progress=False,
            overwrite=True,
            workers=1,
        )
    assert file_hashes(root) == before and leftovers(root) == []


def test_workers_do_not_change_bytes(tmp_path, built):
    root = M.build_minidisc(tmp_path / "w2", SMALL_SPEC, progress=False, workers=2)
    assert file_hashes(root) == file_hashes(built[0])


def test_seed_changes_data(tmp_path, built):
    spec = dataclasses.replace(SMALL_SPEC, seed=4)
    root = M.build_minidisc(tmp_path / "s4", spec, progress=False)
    a, b = file_hashes(root), file_hashes(built[0])
    assert a.keys() == b.keys()
    assert sum(a[k] != b[k] for k in a) > 0.9 * len(a)


@pytest.mark.parametrize(
    "bad",
    [
        dict(n_train=-1),
        dict(match_fraction=1.5),
        dict(image_size=16),
        dict(n_dev_queries=50001),
        dict(seed=-1),
        dict(n_reference=0),
    ],
)
def test_bad_specs(tmp_path, bad):
    with pytest.raises(ValueError):
        M.build_minidisc(tmp_path / "x", M.MinidiscSpec(**bad), progress=False)
    assert not (tmp_path / "x").exists()


def test_heldout_ops_reach_phase2_only(tmp_path):
    spec = M.MinidiscSpec(
        n_train=4,
        n_reference=20,
        n_dev_queries=20,
        n_phase2_queries=20,
        image_size=48,
        seed=1,
        query_ops=("jpeg", "meme", "blur"),
        heldout_ops=("meme",),
        max_edits=2,
    )
    root = M.build_minidisc(tmp_path / "m", spec, progress=False)
    queries = M.load_minidisc_manifest(root)["queries"]
    dev = [set(q["edits"]) for q in queries.values() if q["phase"] == "dev"]
    p2 = [set(q["edits"]) for q in queries.values() if q["phase"] == "phase2"]
    assert all(e <= {"jpeg", "blur"} for e in dev)
    assert any("meme" in e for e in p2)
    with pytest.raises(ValueError, match="unknown ops"):
        M.MinidiscSpec(query_ops=("jpeg", "nope")).validate()


# --- the novel-edits split ------------------------------------------------------------------


def test_novel_split_every_query_carries_an_edit_no_training_view_can_make(built):
    """Each novel-split query (matching or not) carries at least one edit of
    fisc.data.novel_edits; those edits are not ops, so no augmentation pipeline can name them,
    and the split covers geometric, photometric and overlay edits."""
    from omegaconf import OmegaConf

    from fisc.augment.ops import OPS
    from fisc.augment.ops.base import OpConfigError
    from fisc.augment.pipeline import AugmentConfig
    from fisc.data.novel_edits import FAMILIES, NOVEL_EDITS

    root = built[0]
    novel = read_gt(root / "novel_ground_truth.csv")
    assert [q for q, _ in novel] == [f"Q{i:05d}" for i in range(90000, 90020)]
    matches = [r for _, r in novel if r]
    assert len(matches) == 8 and len(novel) - len(matches) > len(matches)  # round(0.4 * 20)
    queries = M.load_minidisc_manifest(root)["queries"]
    seen = set()
    for q, r in novel:
        info = queries[q]
        assert info["phase"] == "novel" and info["source"] == (r or "distractor")
        held_out = set(info["edits"]) & set(NOVEL_EDITS)
        assert 1 <= len(held_out) <= 2, info
        assert set(info["edits"]) - held_out <= set(M.QUERY_OPS) - set(M.HELDOUT_OPS)
        seen |= held_out
    assert len({f for f, names in FAMILIES.items() if set(names) & seen}) == 3  # all families
    # never in a training view: not an op, and every shipped pipeline builds from ops only
    assert not set(NOVEL_EDITS) & set(OPS)
    conf = Path(__file__).resolve().parent.parent / "conf" / "augment"
    for path in sorted(conf.glob("*.yaml")):
        cfg = AugmentConfig(**OmegaConf.to_container(OmegaConf.load(path)))
        for view in cfg.build(96):
            names = {op.name for stage in view.view.stages for op in stage.ops}
            names |= set(view.view.gpu)
            assert names and not names & set(NOVEL_EDITS), path.name
    bad = {"name": "x", "views": [{"stages": [{"ops": {"lens": {"p": 1.0}}}]}]}
    with pytest.raises(OpConfigError, match="lens"):
        AugmentConfig(**bad).build(96)


def test_adding_the_novel_split_leaves_every_other_file_identical(tmp_path, built):
    without = M.build_minidisc(
        tmp_path / "md", dataclasses.replace(SMALL_SPEC, n_novel_queries=0), progress=False
    )
    a, b = file_hashes(built[0]), file_hashes(without)
    others = {k: v for k, v in a.items() if k != M.MANIFEST and not k.startswith(
        ("images/query/Q9", "novel_"))}  # fmt: skip
    assert others == {k: v for k, v in b.items() if k != M.MANIFEST}
    assert not (without / "novel_ground_truth.csv").exists()


def test_an_older_format_with_the_same_spec_is_rebuilt_another_spec_is_not(tmp_path):
    spec = M.MinidiscSpec(n_train=3, n_reference=3, n_dev_queries=2, n_phase2_queries=2,
                          n_novel_queries=4, image_size=40)  # fmt: skip
    root = M.build_minidisc(tmp_path / "md", spec, progress=False)
    manifest = json.loads((root / M.MANIFEST).read_text())
    old = {k: v for k, v in manifest["spec"].items() if not k.startswith(("n_novel", "novel_"))}
    (root / M.MANIFEST).write_text(json.dumps({**manifest, "version": 2, "spec": old}))
    (root / "novel_ground_truth.csv").unlink()
    M.build_minidisc(root, spec, progress=False)  # rebuilt, no overwrite needed
    assert M.load_minidisc_manifest(root)["version"] == M.FORMAT_VERSION
    assert (root / "novel_ground_truth.csv").is_file()
    (root / M.MANIFEST).write_text(
        json.dumps({**manifest, "version": 2, "spec": {**old, "seed": 9}})
    )
    with pytest.raises(M.MinidiscError, match="overwrite"):
        M.build_minidisc(root, spec, progress=False)
