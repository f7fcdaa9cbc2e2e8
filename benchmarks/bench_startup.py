"""Start-up time of fisc's entry points: median of N runs of ``fisc --help`` and
``python train.py --help``, each beside ``python -c pass`` (the interpreter alone) in the same
loop, so machine load shows in both.

    python benchmarks/bench_startup.py [--runs 5]
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
COMMANDS = {
    "python -c pass": [sys.executable, "-c", "pass"],
    "fisc --help": [sys.executable, "-m", "fisc.cli", "--help"],
    "fisc extract --help": [sys.executable, "-m", "fisc.cli", "extract", "--help"],
    "python train.py --help": [sys.executable, str(ROOT / "train.py"), "--help"],
}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--runs", type=int, default=5)
    a = p.parse_args()
    times: dict[str, list[float]] = {name: [] for name in COMMANDS}
    for _ in range(a.runs):  # interleaved: a load spike hits every command alike
        for name, cmd in COMMANDS.items():
            t = time.perf_counter()
            subprocess.run(cmd, cwd=ROOT, check=True, stdout=subprocess.DEVNULL)
            times[name].append(time.perf_counter() - t)
    base = statistics.median(times["python -c pass"])
    print(f"| command | median s ({a.runs} runs) | min–max s | minus `python -c pass` |")
    print("|---|---|---|---|")
    for name, ts in times.items():
        med = statistics.median(ts)
        print(f"| `{name}` | {med:.2f} | {min(ts):.2f}–{max(ts):.2f} | {med - base:+.2f} |")


if __name__ == "__main__":
    main()
