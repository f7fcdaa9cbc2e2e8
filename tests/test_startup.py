"""The entry points' help imports no torch (what made ``fisc --help`` take seconds): checked
by the modules loaded, not by timing (``benchmarks/bench_startup.py`` times them)."""

from __future__ import annotations

import subprocess
import sys

from helpers.config import REPO

PROBE = """
import runpy, sys
sys.argv = {argv!r}
try:
    runpy.run_{kind}({target!r}, run_name="__main__")
except SystemExit:
    pass
heavy = sorted(m for m in ("torch", "timm", "pytorch_lightning", "cv2") if m in sys.modules)
print("HEAVY", heavy)
"""


def heavy_modules(kind: str, target: str, argv: list[str]) -> str:
    code = PROBE.format(kind=kind, target=target, argv=argv)
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True,
                         text=True, check=True).stdout  # fmt: skip
    assert "usage" in out.lower() or "powered by Hydra" in out, out
    return out.strip().splitlines()[-1]


def test_fisc_help_imports_no_torch():
    assert heavy_modules("module", "fisc.cli", ["fisc", "--help"]) == "HEAVY []"
    assert heavy_modules("module", "fisc.cli", ["fisc", "extract", "--help"]) == "HEAVY []"


def test_train_help_imports_no_torch():
    assert heavy_modules("path", str(REPO / "train.py"), ["train.py", "--help"]) == "HEAVY []"


def test_start_up_probe_notes_each_milestone_once_in_order(tmp_path, monkeypatch):
    """``make bench-startup``'s callback: one line per milestone, the first time it is
    reached (later batches and calls add nothing)."""
    import json

    monkeypatch.syspath_prepend(str(REPO / "benchmarks"))
    from startup_probe import Milestones

    out = tmp_path / "m.jsonl"
    probe = Milestones(str(out))
    probe.on_fit_start(None, None)
    probe.on_train_start(None, None)
    for i in range(3):
        probe.on_train_batch_start(None, None, None, i)
    probe.on_fit_start(None, None)
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert [r["event"] for r in rows] == ["callbacks", "fit_start", "train_start", "first_batch"]


def test_start_up_probe_is_built_from_the_override_the_benchmark_passes(
    compose_cfg, tmp_path, monkeypatch
):
    """``bench_startup.py`` adds the probe as ``+callbacks.startup_probe._target_=...``: fisc's
    config check builds it from that, and building it notes the first milestone."""
    import json

    monkeypatch.syspath_prepend(str(REPO / "benchmarks"))  # as the benchmark's PYTHONPATH
    from startup_probe import Milestones

    from fisc.train.callbacks import build_callbacks

    out = tmp_path / "m.jsonl"
    cfg = compose_cfg("+callbacks.startup_probe._target_=startup_probe.Milestones",
                      f"+callbacks.startup_probe.out={out}")  # fmt: skip
    built = [c for c in build_callbacks(cfg) if isinstance(c, Milestones)]
    assert len(built) == 1 and built[0].out == out
    assert [json.loads(line)["event"] for line in out.read_text().splitlines()] == ["callbacks"]
