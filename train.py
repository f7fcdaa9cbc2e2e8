"""Train a copy-detection descriptor: ``python train.py [model=vit_b] [trainer=gpu] [...]``.

``python train.py -m key=a,b ...`` (Hydra multirun) runs one job per combination, each in its
own ``<paths.output_dir>/multirun/<time>/<job number>`` run dir.
"""

import os

os.environ.setdefault("WANDB_MODE", "offline")

import hydra  # noqa: E402
from omegaconf import DictConfig, open_dict  # noqa: E402

import fisc.train.config  # noqa: E402,F401  (registers the ${config_hash:} resolver)


@hydra.main(version_base="1.3", config_path="conf", config_name="train")
def main(cfg: DictConfig) -> float | None:
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    from fisc.train.run import train

    hydra_cfg = HydraConfig.get()
    if hydra_cfg.mode == RunMode.MULTIRUN:  # jobs of one sweep must not share a run dir
        with open_dict(cfg):
            cfg.run_dir = hydra_cfg.runtime.output_dir
            cfg.run_name = f"{cfg.run_name}-{hydra_cfg.job.num}"
    result = train(cfg)
    print(f"best checkpoint: {result.best_checkpoint}  best val μAP: {result.best_score}")
    return result.best_score


if __name__ == "__main__":
    main()
