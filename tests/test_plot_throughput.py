"""``benchmarks/plot_throughput.py``: the result files it reads, read as the runs recorded them."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest

_PATH = Path(__file__).resolve().parent.parent / "benchmarks" / "plot_throughput.py"
_spec = importlib.util.spec_from_file_location("plot_throughput", _PATH)
plot = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(plot)


def _bench_train_row(variant, overrides, rounds, data="disc21like", augment="disc_full"):
    return {
        "data": data,
        "augment": augment,
        "variant": variant,
        "overrides": overrides,
        "train_size": 224,
        "loader_views_per_core_s_rounds": rounds,
    }


def _ab_row(label, work_side, min_side, ratio, rounds=None, augment="disc_full"):
    row = {
        "label": label,
        "augment": augment,
        "work_side": work_side,
        "min_side": min_side,
        "ratio_to_first_median": ratio,
    }
    if rounds is not None:
        row["views_per_s_rounds"] = rounds
    return row


def test_cores_are_the_target_over_each_round_s_rate(tmp_path):
    path = tmp_path / "train_cpu_disc21like_rounds_2026-12-01.json"
    rows = [
        _bench_train_row("default", [], [200.0, 100.0, 400.0]),
        _bench_train_row("fast", ["augment.work_side=1", "data.decode_min_side=224"], [305.0]),
        _bench_train_row("ws1", ["augment.work_side=1"], [250.0]),
        _bench_train_row("other", [], [1.0], augment="basic"),  # not disc_full: left out
        _bench_train_row("mini", [], [1.0], data="minidisc"),  # not DISC21-like: left out
        {**_bench_train_row("single", [], None)},  # one timing, no rounds: left out
        {**_bench_train_row("small", [], [1.0]), "train_size": 96},  # another size: left out
        # the settings a row records having applied win over its overrides (trainer=gpu sets
        # them without naming them); else the base overrides, then the variant's
        {**_bench_train_row("gpu", [], [500.0]), "work_side": 1.0, "decode_min_side": 224},
        {
            **_bench_train_row("base", ["data.decode_min_side=null"], [1000.0]),
            "base_overrides": ["augment.work_side=1", "data.decode_min_side=224"],
        },
    ]
    path.write_text(json.dumps({"info": {"target_views_per_s": 1000.0}, "rows": rows}))
    runs = plot.cores_runs([path])
    assert [(r["settings"], r["date"]) for r in runs] == [
        ("defaults", "2026-12-01"),
        ("GPU feed", "2026-12-01"),
        ("work_side=1", "2026-12-01"),
        ("GPU feed", "2026-12-01"),
        ("work_side=1", "2026-12-01"),  # the variant's null: the default decode scale
    ]
    assert runs[0]["cores"] == [5.0, 10.0, 2.5]  # 1000 views/s over 200, 100, 400 per core
    assert runs[0]["median"] == 5.0
    assert runs[1]["cores"] == pytest.approx([1000 / 305])


def test_speedups_only_against_the_issue_time_code_and_for_the_checkout_measured(tmp_path):
    ours = tmp_path / "ab_trees_minidisc_x.json"
    rows = [
        _ab_row("issue", None, None, 1.0, rounds=[100.0, 200.0]),
        _ab_row("start", 1.0, 96, 1.5, rounds=[1.0, 1.0]),  # another checkout: left out
        _ab_row("now", None, 192, 1.1, rounds=[110.0, 260.0]),
        _ab_row("now_fast", 1.0, 96, 1.4, rounds=[150.0, 260.0]),
        _ab_row("now_ws1", 1.0, 192, 1.3),  # an older file: no rounds kept
        _ab_row("issue", None, None, 1.0, augment="basic"),
        _ab_row("now", None, 192, 9.0, augment="basic"),  # not disc_full: left out
    ]
    info = {"size": 96, "when": "2026-11-30 22:25 UTC"}
    ours.write_text(json.dumps({"info": info, "rows": rows}))
    other = tmp_path / "ab_trees_disc21like_2026-12-01.json"  # first tree is not "issue"
    other.write_text(
        json.dumps(
            {
                "info": {"size": 224},
                "rows": [_ab_row("start", None, None, 1.0), _ab_row("now", None, None, 2.0)],
            }
        )
    )
    runs = plot.speedup_runs([ours, other])
    assert [(r["settings"], r["median"]) for r in runs] == [
        ("defaults", 1.1),
        ("GPU feed", 1.4),
        ("work_side=1", 1.3),
    ]
    assert runs[0]["rounds"] == pytest.approx([1.1, 1.3])  # 110/100, 260/200
    assert runs[1]["rounds"] == pytest.approx([1.5, 1.3])
    assert runs[2]["rounds"] == []
    assert {r["date"] for r in runs} == {"2026-11-30"}  # from info's "when": none in the name
    assert {r["data"] for r in runs} == {"minidisc, 96 px"}


def test_settings_are_named_from_work_side_and_the_decode_scale():
    assert plot.settings_label(None, None, 96) == "defaults"  # a tree without the setting
    assert plot.settings_label(None, 192, 96) == "defaults"  # twice the size: the default
    assert plot.settings_label(1.0, 192, 96) == "work_side=1"
    assert plot.settings_label(1.0, 96, 96) == "GPU feed"
    assert plot.settings_label(None, 96, 96) == "decode_min_side=96"


def test_the_figure_is_written_from_the_folder_and_an_empty_one_says_so(tmp_path, capsys):
    pytest.importorskip("matplotlib")
    path = tmp_path / "train_cpu_disc21like_rounds_2026-12-01.json"
    rows = [_bench_train_row("default", [], [200.0, 100.0])]
    path.write_text(json.dumps({"info": {}, "rows": rows}))
    out = tmp_path / "fig" / "t.png"
    assert plot.main(["--results", str(tmp_path), "--out", str(out)]) == 0
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    # the default target: 3,659 views/s over 200 and 100 views per core-second
    assert "defaults: cores median 27.4 (18.3-36.6, 2 rounds)" in capsys.readouterr().out
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(SystemExit, match="no interleaved bench_train or ab_trees result"):
        plot.main(["--results", str(empty), "--out", str(out)])


def test_a_stray_round_is_marked_at_the_cores_axis_top_not_stretching_it(tmp_path):
    """A cold round of 68 cores would squash the others: the axis stops at CORES_YMAX and that
    round is marked there with its value; without one the axis is scaled to the data."""
    pytest.importorskip("matplotlib")
    run = {"settings": "defaults", "median": 24.0, "date": "d", "file": "f_2026-12-02.json"}
    stray = dict(run, cores=[24.0, 68.1, 23.0])
    fig = plot.draw([stray], [], tmp_path / "a.png")
    left = fig.axes[0]
    assert left.get_ylim() == (0.0, plot.CORES_YMAX)
    assert [t.get_text() for t in left.texts if t.get_text().isdigit()] == ["68"]
    # the dots: the two rounds under the cap, and one marked at its top (0.96 x the cap)
    from matplotlib.collections import PathCollection  # scatter's, not hlines' LineCollection

    dots = [c for c in left.collections if isinstance(c, PathCollection)]
    points = [tuple(xy) for c in dots for xy in c.get_offsets()]
    assert sorted(y for _, y in points) == [23.0, 24.0, 0.96 * plot.CORES_YMAX]
    fig = plot.draw([dict(run, cores=[24.0, 23.0])], [], tmp_path / "b.png")
    left = fig.axes[0]
    assert left.get_ylim()[1] < plot.CORES_YMAX
    assert not [t for t in left.texts if t.get_text().isdigit()]
