"""``benchmarks/mutation.py``: equivalent mutants are matched by what they change."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
import time
from pathlib import Path

import pytest

_PATH = Path(__file__).resolve().parent.parent / "benchmarks" / "mutation.py"
_spec = importlib.util.spec_from_file_location("fisc_mutation_tool", _PATH)
tool = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(tool)

ENTRY = {
    "function": "fisc.metrics.micro_ap.x__labelled",
    "changes": [["code = np.full(n, -1)", "code = np.full(n, -2)"]],
    "reason": "any negative code matches no reference",
}


def test_equivalent_matched_by_function_and_changes_not_by_number():
    changes = [(12, "code = np.full(n, -1)", "code = np.full(n, -2)")]
    for n in (3, 62):  # mutmut's number shifts when the function is edited: irrelevant
        name = f"fisc.metrics.micro_ap.x__labelled__mutmut_{n}"
        assert tool.equivalent_reason(name, changes, [ENTRY]) == ENTRY["reason"]
    other_function = "fisc.metrics.micro_ap.x__factorize__mutmut_3"
    assert tool.equivalent_reason(other_function, changes, [ENTRY]) is None
    other_change = [(12, "code = np.full(n, -1)", "code = np.full(n, 1)")]
    name = "fisc.metrics.micro_ap.x__labelled__mutmut_3"
    assert tool.equivalent_reason(name, other_change, [ENTRY]) is None
    assert tool.equivalent_reason(name, [*changes, (13, "a", "b")], [ENTRY]) is None


def test_equivalents_file_needs_a_reason(tmp_path):
    path = tmp_path / "eq.json"
    path.write_text(json.dumps([ENTRY]))
    assert tool.load_equivalents(path) == [ENTRY]
    path.write_text(json.dumps([{**ENTRY, "reason": " "}]))
    with pytest.raises(ValueError, match="reason"):
        tool.load_equivalents(path)
    assert tool.load_equivalents(tmp_path / "absent.json") == []
    assert isinstance(tool.load_equivalents(), list)  # the repo's own list parses


def test_mutant_diff_leaves_out_decorators_and_the_def_line():
    import ast

    source = (
        "@staticmethod\n"
        "def x_init__mutmut_orig(n):\n    m = n * 2\n    return m + 1\n"
        "@staticmethod\n"
        "def x_init__mutmut_4(n):\n    m = n * 2\n    return m + 2\n"
        "def x_plain__mutmut_orig(n):\n    return n\n"
        "def x_plain__mutmut_1(n):\n    return None\n"
    )
    funcs = {f.name: f for f in ast.parse(source).body}
    assert tool.mutant_diff("p.py", "fisc.m.x_init__mutmut_4", funcs) == [
        (4, "return m + 1", "return m + 2")
    ]
    assert tool.mutant_diff("p.py", "fisc.m.x_plain__mutmut_1", funcs) == [
        (2, "return n", "return None")
    ]


def test_summary_counts_each_mutant_once_and_equivalents_outside_the_rate(monkeypatch):
    """5 mutants: 2 killed, 1 timeout, 2 survivors of which 1 is listed as equivalent."""
    codes = {f"fisc.metrics.micro_ap.x__labelled__mutmut_{i}": c for i, c in
             enumerate([1, 1, 36, 0, 0])}  # fmt: skip
    changes = {
        "fisc.metrics.micro_ap.x__labelled__mutmut_3": [(12, *ENTRY["changes"][0])],
        "fisc.metrics.micro_ap.x__labelled__mutmut_4": [(12, "a = 1", "a = 2")],
    }
    monkeypatch.setattr(tool, "load_results", lambda path: codes)
    monkeypatch.setattr(tool, "_functions", lambda path: {})
    monkeypatch.setattr(tool, "mutant_diff", lambda path, name, funcs: changes[name])
    monkeypatch.setattr(tool, "survivor_kind", lambda path, name, funcs: "code")
    s = tool.summarize(["fisc/metrics/micro_ap.py"], [ENTRY])
    assert (s["mutants"], s["killed"], s["timeout"], s["survived"], s["equivalent"]) == (
        5,
        2,
        1,
        1,
        1,
    )
    assert s["kill_rate"] == round(2 / 4, 4)
    assert s["not_killed"]["equivalent"] == ["fisc.metrics.micro_ap.x__labelled__mutmut_3"]
    assert s["not_killed"]["survived (code)"] == ["fisc.metrics.micro_ap.x__labelled__mutmut_4"]


def _fake_mutmut(tmp_path: Path, *args: str, cwd: Path) -> subprocess.Popen:
    """A process whose command line reads like mutmut's (``.../mutmut run ...``), sleeping."""
    script = tmp_path / "bin" / "mutmut"
    script.parent.mkdir(exist_ok=True)
    script.write_text(f"#!{sys.executable}\nimport time\ntime.sleep(60)\n")
    script.chmod(0o755)
    proc = subprocess.Popen([str(script), *args], cwd=cwd)
    # Popen returns once exec has begun; the kernel fills /proc/<pid>/cmdline a moment later
    # (1 run in 15 read it empty here): wait for it, as a real run would long have
    cmdline = Path(f"/proc/{proc.pid}/cmdline")
    deadline = time.monotonic() + 10
    while b"mutmut" not in cmdline.read_bytes() and time.monotonic() < deadline:
        time.sleep(0.01)
    return proc


@pytest.mark.skipif(not Path("/proc/self/cmdline").exists(), reason="reads Linux's /proc")
def test_a_second_run_refuses_while_a_mutmut_run_works_in_the_checkout(tmp_path, monkeypatch):
    checkout, elsewhere = tmp_path / "repo", tmp_path / "other"
    (checkout / "mutants").mkdir(parents=True)
    elsewhere.mkdir()
    monkeypatch.setattr(tool, "ROOT", checkout)
    # were the guard to let it through, the run must not replace pytest with mutmut, and the
    # working directory and thread variables it sets first are put back after the test
    monkeypatch.setattr(tool.os, "execv", lambda *a: pytest.fail("mutmut was started"))
    monkeypatch.chdir(tmp_path)
    for var in tool.THREAD_ENV:
        monkeypatch.setenv(var, "1")
    procs = [
        _fake_mutmut(tmp_path, "results", cwd=checkout),  # not a run
        _fake_mutmut(tmp_path, "run", "x.*", cwd=elsewhere),  # another checkout's run
    ]
    try:
        assert tool.running_mutmut() == []
        procs.append(_fake_mutmut(tmp_path, "run", "--max-children", "2", cwd=checkout / "mutants"))
        assert tool.running_mutmut() == [procs[-1].pid]
        assert tool.running_mutmut(elsewhere) == [procs[1].pid]
        assert tool.main(["run", "--modules", "datapath"]) == 2
    finally:
        for p in procs:
            p.kill()
            p.wait()
    assert tool.running_mutmut() == []
