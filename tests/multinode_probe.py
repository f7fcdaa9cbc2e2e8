"""A Lightning callback for tests/test_multinode.py, imported by the training processes it
launches (``+callbacks.probe._target_=multinode_probe.GradientProbe``, with ``tests/`` on
``PYTHONPATH``). Kept apart from the test module so that importing it does not run
``conftest.py`` (which sets torch's thread count) inside a training process."""

from __future__ import annotations

from pathlib import Path

import torch
from pytorch_lightning import Callback


class GradientProbe(Callback):
    """Per optimizer step and rank: the rank's loss, its batch's image indices and the model's
    gradients as the optimizer sees them (after DDP's all-reduce, so the global-batch mean)
    and its weights after the step,
    saved to ``<out_dir>/step<k>-rank<r>.pt``."""

    def __init__(self, out_dir: str):
        self.out_dir = Path(out_dir)
        self._grads: dict[str, torch.Tensor] = {}

    def on_before_optimizer_step(self, trainer, pl_module, optimizer) -> None:
        self._grads = {
            name: p.grad.detach().clone()
            for name, p in pl_module.named_parameters()
            if p.grad is not None
        }

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        loss = outputs["loss"] if isinstance(outputs, dict) else outputs
        self.out_dir.mkdir(parents=True, exist_ok=True)
        torch.save(
            {
                "world_size": trainer.world_size,
                "num_nodes": trainer.num_nodes,
                "loss": loss.detach().double().cpu(),
                "index": batch[2].detach().cpu(),
                "grads": self._grads,
                "weights": {k: v.detach().clone() for k, v in pl_module.state_dict().items()},
            },
            self.out_dir / f"step{trainer.global_step}-rank{trainer.global_rank}.pt",
        )
