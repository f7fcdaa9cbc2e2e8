"""Reproduces the known resume gap (README, "What a training run survives"): the demo recipe,
killed right after its step-15 checkpoint (the end of epoch 0) and relaunched, against the same
recipe uninterrupted, both stopped once ``last.ckpt`` reaches step 20; prints whether the
weights are identical.

    python experiments/resume/resume_gap.py w2                   # num_workers=2 (default): DIFF
    python experiments/resume/resume_gap.py w0 num_workers=0     # SAME (2026-11-30)

About 3 minutes on 2 cores. Runs go to /tmp/resume_gap_<name>_{a,b}.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[2]


def run_until(run: Path, step: int, log: Path, extra: list[str]) -> dict:
    cmd = [sys.executable, str(ROOT / "train.py"), "experiment=demo", f"run_dir={run}",
           "checkpoint_every_n_steps=5", *extra]  # fmt: skip
    env = {**os.environ, "WANDB_MODE": "disabled"}
    with open(log, "w") as out:
        p = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, env=env, cwd=ROOT)
    last = run / "checkpoints" / "last.ckpt"
    while True:
        time.sleep(0.2)
        if p.poll() is not None:
            raise SystemExit(f"training ended early, see {log}")
        try:
            ckpt = torch.load(last, map_location="cpu", weights_only=True)
        except Exception:  # noqa: BLE001  (absent, or being replaced)
            continue
        if ckpt["global_step"] >= step:
            p.send_signal(signal.SIGKILL)
            p.wait()
            return ckpt


def main() -> None:
    name, extra = (sys.argv[1], sys.argv[2:]) if len(sys.argv) > 1 else ("w2", [])
    a, b = Path(f"/tmp/resume_gap_{name}_a"), Path(f"/tmp/resume_gap_{name}_b")
    for d in (a, b):
        shutil.rmtree(d, ignore_errors=True)
    straight = run_until(a, 20, a.with_suffix(".log"), extra)
    first = run_until(b, 15, b.with_name(b.name + "1.log"), extra)
    resumed = run_until(b, 20, b.with_name(b.name + "2.log"), extra)
    print(name, "steps", straight["global_step"], first["global_step"], resumed["global_step"])
    same = all(torch.equal(v, resumed["state_dict"][k]) for k, v in straight["state_dict"].items())
    print(name, "SAME" if same else "DIFF")


if __name__ == "__main__":
    main()
