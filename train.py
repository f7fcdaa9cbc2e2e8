"""Train a copy-detection descriptor: ``python train.py [model=vit_b] [trainer=gpu] [...]``."""

import os

os.environ.setdefault("WANDB_MODE", "offline")

import hydra  # noqa: E402
from omegaconf import DictConfig  # noqa: E402


@hydra.main(version_base="1.3", config_path="conf", config_name="train")
def main(cfg: DictConfig) -> float | None:
    from fisc.train.run import train

    result = train(cfg)
    print(f"best checkpoint: {result.best_checkpoint}  best val μAP: {result.best_score}")
    return result.best_score


if __name__ == "__main__":
    main()
