"""``benchmarks/ab_trees.py``: checkouts compared side by side, each in its own interpreter."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

ROOT = Path(__file__).resolve().parent.parent
_PATH = ROOT / "benchmarks" / "ab_trees.py"
_spec = importlib.util.spec_from_file_location("ab_trees", _PATH)
ab = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(ab)


def test_tree_specs_parse_and_bad_ones_say_why(tmp_path):
    assert ab.parse_tree(f"new={ROOT}:1:224") == {
        "label": "new",
        "tree": str(ROOT),
        "work_side": 1.0,
        "min_side": 224,
    }
    assert ab.parse_tree(f"old={ROOT}::448") == {
        "label": "old",
        "tree": str(ROOT),
        "work_side": None,
        "min_side": 448,
    }
    assert ab.parse_tree(f"plain={ROOT}")["work_side"] is None
    for spec, says in (
        ("nolabel", "expected LABEL=TREE"),
        (f"={ROOT}", "expected LABEL=TREE"),
        (f"a={ROOT}:1:2:3", "at most TREE:WORK_SIDE:DECODE_MIN_SIDE"),
        (f"a={tmp_path}", "is not a fisc checkout"),
    ):
        with pytest.raises(SystemExit, match=says):
            ab.parse_tree(spec)


def noise_jpegs(tmp_path, n: int, shape: tuple[int, int, int]):
    """A folder of ``n`` random-noise JPEGs of ``shape``."""
    folder = tmp_path / "images"
    folder.mkdir()
    rng = np.random.default_rng(0)
    for i in range(n):
        Image.fromarray(rng.integers(0, 255, shape, np.uint8)).save(folder / f"{i}.jpg")
    return folder


def test_two_trees_measured_in_turn_with_their_settings(tmp_path):
    """Both labels measured every round; the first is the reference (ratio exactly 1); each
    row says which settings its tree applied (work_side on the views, the decode scale on
    the training set)."""
    folder = noise_jpegs(tmp_path, 4, (80, 100, 3))
    out = tmp_path / "ab.json"
    cmd = [
        sys.executable,
        str(_PATH),
        "--tree",
        f"a={ROOT}",
        "--tree",
        f"b={ROOT}:1:40",
        "--folder",
        str(folder),
        "--augment",
        "basic",
        "--size",
        "32",
        "--items",
        "2",
        "--rounds",
        "2",
        "--warm",
        "6",
        "--out",
        str(out),
    ]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "basic round 2/2: a " in done.stdout and "| basic | b | 1.0 | 40 |" in done.stdout
    result = json.loads(out.read_text())
    assert result["info"]["warm"] == 6  # more warm-up items than images: they wrap round
    rows = result["rows"]
    assert [(r["label"], r["augment"]) for r in rows] == [("a", "basic"), ("b", "basic")]
    assert rows[0]["ratio_to_first_median"] == 1.0
    assert rows[0]["applied"] == {"work_side": None, "min_side": None, "keep_freed_memory": True}
    assert rows[1]["applied"] == {"work_side": 1.0, "min_side": 40, "keep_freed_memory": True}
    for r in rows:
        lo, hi = r["views_per_s_min_max"]
        assert 0 < lo <= r["views_per_s_median"] <= hi
        # every round's rate is kept, and the summary is theirs
        assert len(r["views_per_s_rounds"]) == 2
        assert (min(r["views_per_s_rounds"]), max(r["views_per_s_rounds"])) == (lo, hi)


def test_rate_summary_is_median_range_and_median_ratio():
    """Shared with bench_views: rates 2, 4, 6 against 1, 2, 2 give median 4, range 2-6 and
    per-round ratios 2, 2, 3 whose median is 2."""
    assert ab.rate_summary([2.0, 4.0, 6.0], [1.0, 2.0, 2.0]) == (4.0, [2.0, 6.0], 2.0)
    assert ab.rate_summary([1.23456], [3.0]) == (1.2, [1.2, 1.2], 0.412)


def test_one_op_alone_is_timed_per_tree(tmp_path):
    """``--augment op:NAME``: the op's calls/s per tree, the row naming the op."""
    folder = noise_jpegs(tmp_path, 3, (50, 70, 3))
    out = tmp_path / "ops.json"
    cmd = [sys.executable, str(_PATH), "--tree", f"a={ROOT}", "--tree", f"b={ROOT}",
           "--folder", str(folder), "--augment", "op:meme", "--size", "32", "--items", "4",
           "--warm", "2", "--rounds", "1", "--out", str(out)]  # fmt: skip
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    rows = json.loads(out.read_text())["rows"]
    assert [(r["label"], r["augment"]) for r in rows] == [("a", "op:meme"), ("b", "op:meme")]
    assert all(r["applied"]["op"] == "meme" and r["views_per_s_median"] > 0 for r in rows)
