"""Train a copy-detection descriptor: ``python train.py [model=vit_b] [trainer=gpu] [...]``.

``python train.py -m key=a,b ...`` (Hydra multirun) runs one job per combination. With the
default run dir (``runs/<run_name>-<config hash>``) each job gets that dir plus a digest of its
own overrides, so the same sweep relaunched resumes every job where it stopped; with a
``run_dir`` that names no config hash, each job runs in Hydra's
``<paths.output_dir>/multirun/<time>/<job number>``.
"""

import os

os.environ.setdefault("WANDB_MODE", "offline")

import hashlib  # noqa: E402

import hydra  # noqa: E402
from omegaconf import DictConfig, OmegaConf, open_dict  # noqa: E402

import fisc.train.resolvers  # noqa: E402,F401  (registers ${config_hash:}; imports no torch)


@hydra.main(version_base="1.3", config_path="conf", config_name="train")
def main(cfg: DictConfig) -> float | None:
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


if __name__ == "__main__":
    main()
