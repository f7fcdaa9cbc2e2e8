"""A cross-batch memory (FIFO of past embeddings and their instance ids), shared by the losses
that take negatives beyond the current batch (``contrastive_xbm``, ``infonce_koleo``).

The memory is run state, not weights: it is saved in checkpoints (a resumed run continues with
its memory, not an empty one), while a new stage or an ``init_from`` run starts empty
(``RUN_STATE`` names the buffers to leave out). Every rank enqueues the gathered global batch,
so the memories stay identical across ranks. Entries are detached: they act as extra
candidates for the current batch, not as trained rows.
"""

from __future__ import annotations

import torch

from fisc.losses.base import TrainingLoss


class CrossBatchMemory(TrainingLoss):
    """Mixin for a loss module: ``_init_memory(size, warmup)`` in ``__init__``, then
    ``memory()`` (the entries to use now, or ``None``) and ``_enqueue(emb, ids)`` per step."""

    RUN_STATE = ("mem_emb", "mem_ids", "mem_steps")

    def _init_memory(self, size: int, warmup: int = 0) -> None:
        if size < 0:
            raise ValueError(f"memory_size must be >= 0, got {size}")
        if warmup < 0:
            raise ValueError(f"memory_warmup must be >= 0, got {warmup}")
        self.memory_size, self.memory_warmup = size, warmup
        self.register_buffer("mem_emb", torch.zeros(0))
        self.register_buffer("mem_ids", torch.zeros(0, dtype=torch.long))
        self.register_buffer("mem_steps", torch.zeros((), dtype=torch.long))

    @property
    def steps(self) -> int:
        """Training steps seen (enqueue calls), the clock of ``memory_warmup``."""
        return int(self.mem_steps)

    def memory(self) -> tuple[torch.Tensor, torch.Tensor] | None:
        """``(embeddings, ids)`` to use as extra candidates now, or ``None`` (no memory, still
        warming up, or empty)."""
        if self.memory_size == 0 or self.steps < self.memory_warmup or not len(self.mem_ids):
            return None
        return self.mem_emb, self.mem_ids

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):
        for name in ("mem_emb", "mem_ids"):  # the memory's length varies: take the saved shape
            saved = state_dict.get(prefix + name)
            if saved is not None:
                setattr(self, name, torch.empty_like(saved, device=getattr(self, name).device))
        for name in self.RUN_STATE:  # a checkpoint from before the memory was saved: start empty
            state_dict.setdefault(prefix + name, getattr(self, name))
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)

    @torch.no_grad()
    def _enqueue(self, emb: torch.Tensor, ids: torch.Tensor) -> None:
        """Count a training step and push ``emb`` (newest first), dropping the oldest."""
        if not self.training:
            return
        self.mem_steps += 1
        if self.memory_size == 0:
            return
        if self.mem_emb.numel() == 0:
            self.mem_emb = emb.new_zeros(0, emb.shape[1])
        self.mem_emb = torch.cat([emb.detach(), self.mem_emb])[: self.memory_size]
        self.mem_ids = torch.cat([ids, self.mem_ids.to(ids.device)])[: self.memory_size]
