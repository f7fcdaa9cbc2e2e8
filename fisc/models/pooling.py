"""Global pooling of backbone features into one vector per image."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class GeM(nn.Module):
    """Generalised-mean pooling over the spatial grid: ``(mean x^p)^(1/p)``.

    ``p=1`` is average pooling, large ``p`` approaches max pooling. ``p`` is fixed unless
    ``learnable``. Features are clamped at ``eps`` first, as the mean of fractional powers
    needs non-negative inputs.
    """

    def __init__(self, p: float = 3.0, eps: float = 1e-6, learnable: bool = False):
        super().__init__()
        if p <= 0:
            raise ValueError(f"GeM p must be > 0, got {p}")
        p_tensor = torch.tensor(float(p))
        if learnable:
            self.p = nn.Parameter(p_tensor)
        else:
            self.register_buffer("p", p_tensor)
        self.eps = eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, C, H, W) -> (B, C)
        if x.ndim != 4:
            raise ValueError(f"GeM expects (B, C, H, W) features, got shape {tuple(x.shape)}")
        p = self.p.to(x.dtype)
        pooled = F.adaptive_avg_pool2d(x.clamp(min=self.eps).pow(p), 1).flatten(1)
        return pooled.pow(1.0 / p)

    def extra_repr(self) -> str:
        return f"p={float(self.p):.2f}, eps={self.eps}"


class TokenPool(nn.Module):
    """Pooling for transformer outputs ``(B, N, C)``: the class token or the mean of patches."""

    def __init__(self, mode: str = "cls", num_prefix_tokens: int = 1):
        super().__init__()
        if mode not in ("cls", "mean"):
            raise ValueError(f"token pooling mode must be 'cls' or 'mean', got {mode!r}")
        self.mode = mode
        self.num_prefix_tokens = num_prefix_tokens

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.ndim != 3:
            raise ValueError(f"token pooling expects (B, N, C) tokens, got {tuple(x.shape)}")
        if self.mode == "cls":
            return x[:, 0]
        return x[:, self.num_prefix_tokens :].mean(dim=1)
