"""Mixed positives (fisc.losses.mix): the mixup and cutmix images and their targets."""

from __future__ import annotations

import pytest
import torch

from fisc.losses.mix import mix_images


def test_mix_images_mixup_and_cutmix():
    torch.manual_seed(0)
    views = torch.stack([torch.full((3, 8, 8), float(v)) for v in range(4)])
    ids = torch.tensor([10, 11, 12, 13])
    mixed, primary, partner, lam = mix_images(views, ids, 4, cutmix_prob=0.5)
    assert primary.tolist() == [10, 11, 12, 13] and partner.tolist() == [11, 12, 13, 10]
    for i in range(4):
        a, b = float(i), float((i + 1) % 4)
        # every pixel is a (λ-weighted) mix of the two sources; the mean gives λ back
        expected_mean = lam[i] * a + (1 - lam[i]) * b
        assert float(mixed[i].mean()) == pytest.approx(float(expected_mean), abs=1e-5)
        assert 0.0 < float(lam[i]) < 1.0
