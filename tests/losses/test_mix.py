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


def _views(n=5, h=16, w=12, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.rand(n, 3, h, w, generator=g) + torch.arange(n).view(n, 1, 1, 1)


def test_pairs_are_row_i_with_the_next_row_wrapping_over_the_batch():
    views, ids = _views(), torch.tensor([7, 3, 9, 1, 5])
    torch.manual_seed(0)
    _, primary, partner, _ = mix_images(views, ids, 3)
    assert primary.tolist() == [7, 3, 9] and partner.tolist() == [3, 9, 1]
    _, primary, partner, _ = mix_images(views, ids, 5)
    assert primary.tolist() == [7, 3, 9, 1, 5] and partner.tolist() == [3, 9, 1, 5, 7]


def test_no_mixed_image_and_too_few_rows():
    views, ids = _views(), torch.arange(5)
    for count in (0, -2):
        mixed, primary, partner, lam = mix_images(views, ids, count)
        assert mixed.shape == (0, 3, 16, 12) and mixed.dtype == views.dtype
        assert primary.shape == partner.shape == lam.shape == (0,)
        assert primary.dtype == ids.dtype and lam.dtype == views.dtype
    with pytest.raises(ValueError, match="^cannot make 6 mixed images from a batch of 5$"):
        mix_images(views, ids, 6)
    with pytest.raises(ValueError, match="^cannot make 1 mixed images from a batch of 1$"):
        mix_images(views[:1], ids[:1], 1)
    mix_images(views[:2], ids[:2], 2)  # two rows are enough


def test_mixup_blends_every_pixel_with_a_clamped_beta_weight():
    views, ids = _views(), torch.arange(5)
    before = views.clone()
    lams = []
    for seed in range(40):
        torch.manual_seed(seed)
        mixed, _, _, lam = mix_images(views, ids, 5, alpha=0.2, cutmix_prob=0.0)
        for i in range(5):
            want = lam[i] * views[i] + (1 - lam[i]) * views[(i + 1) % 5]
            torch.testing.assert_close(mixed[i], want, rtol=0, atol=1e-6)
        lams.append(lam)
    assert torch.equal(views, before)  # the inputs are not written
    lam = torch.cat(lams)
    assert lam.dtype == torch.float32
    # Beta(0.2, 0.2) puts most of its mass near 0 and 1: clamped to [0.05, 0.95]
    assert float(lam.min()) == pytest.approx(0.05) and float(lam.max()) == pytest.approx(0.95)
    # P(Beta(0.2, 0.2) < 0.05) = 0.291 (scipy.stats.beta.cdf): the share clamped at 0.05
    assert 0.19 < float((lam == lam.min()).float().mean()) < 0.39
    torch.manual_seed(0)
    _, _, _, lam = mix_images(views, ids, 5, alpha=1000.0, cutmix_prob=0.0)
    assert float((lam - 0.5).abs().max()) < 0.1  # a large alpha concentrates λ at 1/2


def _box(mixed, a, b):
    """The rows and columns where ``mixed`` takes ``b`` (every pixel is from ``a`` or ``b``)."""
    from_b = (mixed == b).all(0)
    assert torch.equal(from_b | (mixed == a).all(0), torch.ones_like(from_b))
    rows, cols = from_b.any(1).nonzero().flatten(), from_b.any(0).nonzero().flatten()
    box = torch.zeros_like(from_b)
    box[rows.min() : rows.max() + 1, cols.min() : cols.max() + 1] = True
    assert torch.equal(from_b, box)  # one rectangle
    return int(rows.min()), int(rows.max()) + 1, int(cols.min()), int(cols.max()) + 1


def test_cutmix_pastes_one_box_of_the_partner_and_lambda_is_the_area_left():
    views, ids = _views(h=16, w=12), torch.arange(5)
    tops, bottoms, lefts, rights = set(), set(), set(), set()
    for seed in range(60):
        torch.manual_seed(seed)
        mixed, _, _, lam = mix_images(views, ids, 5, alpha=1.0, cutmix_prob=1.0)
        for i in range(5):
            y0, y1, x0, x1 = _box(mixed[i], views[i], views[(i + 1) % 5])
            assert 1 <= y1 - y0 <= 15 and 1 <= x1 - x0 <= 11  # each source keeps a row/column
            assert float(lam[i]) == pytest.approx(1 - (y1 - y0) * (x1 - x0) / (16 * 12))
            tops.add(y0), bottoms.add(y1), lefts.add(x0), rights.add(x1)
    # every position of the box is drawn, the edges included
    assert 0 in tops and 16 in bottoms and 0 in lefts and 12 in rights
    # λ ~ Beta(1000, 1000) ≈ 1/2: the box's sides are about sqrt(1/2) of the image's
    torch.manual_seed(0)
    mixed, _, _, lam = mix_images(views, ids, 5, alpha=1000.0, cutmix_prob=1.0)
    for i in range(5):
        y0, y1, x0, x1 = _box(mixed[i], views[i], views[(i + 1) % 5])
        assert y1 - y0 in (11, 12) and x1 - x0 in (8, 9)


def test_cutmix_prob_is_the_share_of_cut_rows():
    views, ids = _views(), torch.arange(5)
    cut = 0
    for seed in range(80):
        torch.manual_seed(seed)
        mixed, _, _, _ = mix_images(views, ids, 5, cutmix_prob=0.25)
        for i in range(5):
            # a cut row has pixels equal to its first source; a blend has none
            cut += bool((mixed[i] == views[i]).all(0).any())
    assert 0.18 < cut / 400 < 0.32


def test_defaults_are_uniform_lambda_and_half_cutmix():
    """alpha 1: λ ~ Beta(1, 1), uniform (then clamped): P(λ < 0.25) = 0.25; cutmix_prob 0.5."""
    views, ids = _views(), torch.arange(5)
    torch.manual_seed(0)
    lams = torch.cat([mix_images(views, ids, 5, cutmix_prob=0.0)[3] for _ in range(80)])
    assert 0.2 < float((lams < 0.25).float().mean()) < 0.3  # Beta(2, 2): 0.156
    cut = 0
    for _ in range(80):
        mixed = mix_images(views, ids, 5)[0]
        cut += sum(bool((mixed[i] == views[i]).all(0).any()) for i in range(5))
    assert 0.4 < cut / 400 < 0.6


def test_box_sides_stay_between_one_pixel_and_one_short_of_the_side():
    """λ is clamped to [0.05, 0.95]: at 0.95 a 3-pixel side keeps a 1-pixel box
    (round(3 x 0.224) = 1), at 0.05 a 3-pixel box is cut to 2 so a row of each source stays;
    at 16 x 12 px the extremes are 4 x 3 and 15 x 11."""
    for (h, w), low, high in (((3, 3), (1, 1), (2, 2)), ((16, 12), (4, 3), (15, 11))):
        views, ids = _views(h=h, w=w), torch.arange(5)
        sides = set()
        for seed in range(40):
            torch.manual_seed(seed)  # alpha 0.1: λ mostly at the clamps
            mixed, _, _, _ = mix_images(views, ids, 5, alpha=0.1, cutmix_prob=1.0)
            for i in range(5):
                y0, y1, x0, x1 = _box(mixed[i], views[i], views[(i + 1) % 5])
                sides.add((y1 - y0, x1 - x0))
        assert min(sides) == low and max(sides) == high
