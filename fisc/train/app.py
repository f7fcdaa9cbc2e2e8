"""The training command, one Hydra app behind ``python train.py``, ``fisc train`` and
``fisc-train``: ``[model=vit_b] [trainer=gpu] [key=value ...]``.

``-m key=a,b ...`` (Hydra multirun) runs one job per combination. With the default run dir
(``runs/<run_name>-<config hash>``) each job gets that dir plus a digest of its own overrides,
so the same sweep relaunched resumes every job where it stopped; with a ``run_dir`` that names
no config hash, each job runs in Hydra's ``<paths.output_dir>/multirun/<time>/<job number>``.

The configs are :func:`fisc.paths.config_dir` (the checkout's ``conf/``, or the copy inside an
installed wheel); relative paths in them are relative to the directory you run from. Light
imports only until the task runs, so that ``--help`` and shell completion load no torch.
"""

from __future__ import annotations

import hashlib
import os
import sys

from omegaconf import DictConfig, OmegaConf, open_dict

import fisc.train.resolvers  # noqa: F401  (registers ${config_hash:}; imports no torch)
from fisc.paths import config_dir


def task(cfg: DictConfig) -> float | None:
    """One training job on the composed config ``cfg``."""
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    from fisc.train.run import train

    hydra_cfg = HydraConfig.get()
    if hydra_cfg.mode == RunMode.MULTIRUN:  # jobs of one sweep must not share a run dir
        hashed = "${config_hash:}" in str(OmegaConf.to_container(cfg, resolve=False)["run_dir"])
        if hashed:  # jobs differing only in resumable keys (e.g. epochs) still get their own
            overrides = "\n".join(sorted(hydra_cfg.overrides.task))
            run_dir = f"{cfg.run_dir}-{hashlib.sha256(overrides.encode()).hexdigest()[:6]}"
        else:
            run_dir = hydra_cfg.runtime.output_dir
        with open_dict(cfg):
            cfg.run_dir = run_dir
            cfg.run_name = f"{cfg.run_name}-{hydra_cfg.job.num}"
        print(f"job {hydra_cfg.job.num}: run dir {run_dir}", flush=True)
    result = train(cfg)
    print(f"best checkpoint: {result.best_checkpoint}  best val μAP: {result.best_score}")
    return result.best_score


def _other_rank_overrides(args: list[str]) -> list[str]:
    """A rank other than 0 started by torchrun or srun (each rank composes the config itself):
    Hydra would write its ``.hydra/`` files and ``train.log`` into the run dir that rank 0 also
    writes (on a shared filesystem, the same files); this rank logs to ``train_rank<N>.log``
    there and keeps no ``.hydra/``. Nothing when Lightning's own launcher already set these
    (its workers get ``hydra.job.name=train_ddp_process_<N>``), or for rank 0."""
    from fisc.train.lock import launch_rank

    rank = launch_rank()
    if rank == 0 or any(a.lstrip("+").startswith(("hydra.job.name=", "hydra.output_subdir="))
                        for a in args):  # fmt: skip
        return []
    return ["hydra.output_subdir=null", f"hydra.job.name=train_rank{rank}"]


def main(argv: list[str] | None = None, prog: str | None = None) -> None:
    """Run the Hydra app on ``argv`` (default: the command line), named ``prog`` in its help.
    Hydra reads ``sys.argv``, so it is set for the call and restored after."""
    os.environ.setdefault("WANDB_MODE", "offline")
    import hydra

    app = hydra.main(version_base="1.3", config_path=str(config_dir()), config_name="train")(task)
    saved = sys.argv
    args = saved[1:] if argv is None else list(argv)
    extra = _other_rank_overrides(args)
    if argv is None and not extra:
        app()
        return
    sys.argv = [prog or saved[0], *args, *extra]
    try:
        app()
    finally:
        sys.argv = saved


if __name__ == "__main__":
    main()
