"""Start-up time of fisc's entry points: median of N runs of ``fisc --help`` and
``python train.py --help``, each beside ``python -c pass`` (the interpreter alone) in the same
loop, so machine load shows in both; with ``--train``, also how long ``python train.py``
takes from launch to its first training step, and where that time goes.

    python benchmarks/bench_startup.py [--runs 5] [--train] [-- TRAIN OVERRIDES]

``--train`` launches ``train.py`` (the default run, or the Hydra overrides after ``--``) into a
temporary run dir with a callback (``benchmarks/startup_probe.py``) that notes the wall-clock
time of four milestones: ``callbacks`` (imports done, config composed and checked: the
callbacks are built by the config check), ``fit_start`` (data resolved, data module, model and
trainer built), ``train_start`` and ``first_batch`` (the first batch handed to the training
step: workers started and the first views made); the run is then
stopped. Beside it, in the same loop, ``python -c "import torch"`` and ``python -c "import
pytorch_lightning, timm, hydra"``, each timed from launch to the end of its imports: the stack
alone, in a fresh interpreter.
One untimed launch first (it builds minidisc if missing and warms the file cache).
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
COMMANDS = {
    "python -c pass": [sys.executable, "-c", "pass"],
    "fisc --help": [sys.executable, "-m", "fisc.cli", "--help"],
    "fisc extract --help": [sys.executable, "-m", "fisc.cli", "extract", "--help"],
    "python train.py --help": [sys.executable, str(ROOT / "train.py"), "--help"],
}
# the stack's imports in a fresh interpreter, timed from launch to the end of the import
# (the interpreter's exit, which takes a second with torch loaded, left out): each prints
# time.time() when its imports are done
IMPORTS = {
    "import torch": "import torch",
    "import pytorch_lightning, timm, hydra": "import pytorch_lightning, timm, hydra",
}
MILESTONES = ("callbacks", "fit_start", "train_start", "first_batch")


def time_to_first_step(overrides: list[str], timeout: float = 300.0) -> dict[str, float]:
    """Seconds from launching ``train.py`` to each milestone; the run is stopped after the
    first batch (SIGTERM to its process group, then SIGKILL)."""
    with tempfile.TemporaryDirectory(prefix="fisc-startup-") as tmp:
        marks = Path(tmp) / "milestones.jsonl"
        cmd = [sys.executable, str(ROOT / "train.py"), f"run_dir={tmp}/run", *overrides,
               "+callbacks.startup_probe._target_=startup_probe.Milestones",
               f"+callbacks.startup_probe.out={marks}"]  # fmt: skip
        paths = [str(ROOT / "benchmarks"), os.environ.get("PYTHONPATH", "")]
        env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, paths))}
        log = (Path(tmp) / "train.log").open("w")
        start = time.time()
        proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT,
                                start_new_session=True)  # fmt: skip
        try:
            seen: dict[str, float] = {}
            while "first_batch" not in seen:
                if proc.poll() is not None:
                    log.close()
                    tail = (Path(tmp) / "train.log").read_text()[-3000:]
                    raise SystemExit(f"train.py exited ({proc.returncode}) before its first "
                                     f"training step:\n{tail}")  # fmt: skip
                if time.time() - start > timeout:
                    raise SystemExit(f"no first training step within {timeout:.0f} s")
                if marks.is_file():  # whole lines only; an event's first time (with stages,
                    for line in marks.read_text().splitlines(keepends=True):  # one per stage)
                        if line.endswith("\n"):
                            row = json.loads(line)
                            seen.setdefault(row["event"], row["time"] - start)
                time.sleep(0.02)
        finally:  # the whole process group: the run's workers and helpers too
            for sig in (signal.SIGTERM, signal.SIGKILL):
                try:
                    os.killpg(proc.pid, sig)
                except ProcessLookupError:
                    break
                try:
                    proc.wait(timeout=20)
                    time.sleep(0.5)  # children leaving after the leader
                except subprocess.TimeoutExpired:
                    pass
            proc.wait()
            log.close()
    return seen


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--runs", type=int, default=5)
    p.add_argument("--train", action="store_true",
                   help="also time train.py from launch to its first training step")  # fmt: skip
    p.add_argument("overrides", nargs="*", help="train.py's Hydra overrides (after --)")
    a = p.parse_args()
    imports = IMPORTS if a.train else {}
    if a.train:
        time_to_first_step(a.overrides)  # untimed: minidisc built if missing, caches warm
    times: dict[str, list[float]] = {name: [] for name in [*COMMANDS, *imports]}
    train: dict[str, list[float]] = {m: [] for m in MILESTONES}
    for _ in range(a.runs):  # interleaved: a load spike hits every command alike
        for name, cmd in COMMANDS.items():
            t = time.perf_counter()
            subprocess.run(cmd, cwd=ROOT, check=True, stdout=subprocess.DEVNULL)
            times[name].append(time.perf_counter() - t)
        for name, code in imports.items():
            t = time.time()
            cmd = [sys.executable, "-c", f"{code}; import time; print(time.time())"]
            out = subprocess.run(cmd, cwd=ROOT, check=True, capture_output=True, text=True).stdout
            times[name].append(float(out.split()[-1]) - t)
        if a.train:
            for m, s in time_to_first_step(a.overrides).items():
                train[m].append(s)
    base = statistics.median(times["python -c pass"])
    print(f"| command | median s ({a.runs} runs) | min–max s | minus `python -c pass` |")
    print("|---|---|---|---|")
    for name, ts in times.items():
        med = statistics.median(ts)
        print(f"| `{name}` | {med:.2f} | {min(ts):.2f}–{max(ts):.2f} | {med - base:+.2f} |")
    if a.train:
        what = " ".join(["python train.py", *a.overrides])
        print(f"| `{what}`, launch to: | | | |")
        for m in MILESTONES:
            ts = train[m]
            med = statistics.median(ts)
            print(f"| {m} | {med:.2f} | {min(ts):.2f}–{max(ts):.2f} | {med - base:+.2f} |")


if __name__ == "__main__":
    main()
