"""Batched GPU augmentation ops, run on CPU tensors (and on CUDA when there is one)."""

from __future__ import annotations

import pytest
import torch

from fisc.augment.gpu import CPU_CHUNK, GPU_OPS, GpuPipeline, build_gpu_op, build_gpu_pipeline
from fisc.augment.ops.base import OpConfigError

# each op with strong parameters: it must visibly change any textured image
STRONG = {
    "color_jitter": {"brightness": [1.3, 1.6], "saturation": [0.0, 0.3], "hue": [0.2, 0.3]},
    "grayscale": {},
    "blur": {"sigma": [1.5, 3.0]},
    "sharpen": {"factor": [3.0, 6.0]},
    "noise": {"std": [0.05, 0.1]},
    "erasing": {"area": [0.1, 0.3]},
    "hflip": {},
    "vflip": {},
    "affine": {
        "rotation": [20, 40],
        "scale": [0.7, 0.9],
        "shear": [-10, 10],
        "translate": [-0.1, 0.1],
    },
    "perspective": {"jitter": [0.15, 0.3], "fill": 0.5},
    "resized_crop": {"area": [0.2, 0.5]},
}
PARAMLESS = {"grayscale", "hflip", "vflip"}


def images(n: int, size: int = 32, seed: int = 0) -> torch.Tensor:
    """Textured colour images: a smooth gradient plus noise, in [0, 1]."""
    g = torch.Generator().manual_seed(seed)
    ramp = torch.linspace(0, 1, size)
    base = torch.stack(
        [
            ramp[None, :].expand(size, size),
            ramp[:, None].expand(size, size),
            torch.full((size, size), 0.5),
        ]
    )
    return (0.6 * base + 0.4 * torch.rand(n, 3, size, size, generator=g)).clamp(0, 1)


def strong(name: str, p: float = 1.0):
    return build_gpu_op(name, {"p": p, **STRONG[name]})


def test_every_op_has_strong_params():
    assert set(STRONG) == set(GPU_OPS)


@pytest.mark.parametrize("name", sorted(GPU_OPS))
def test_op_contract(name):
    x = images(4)
    seeds = torch.tensor([11, 12, 13, 14])
    op = strong(name)
    x0 = x.clone()
    y = op(x, seeds)
    assert torch.equal(x, x0)  # the input is not modified
    assert y.shape == x.shape and y.dtype == x.dtype and y.device == x.device
    assert y.min() >= 0 and y.max() <= 1
    # changes every image
    assert ((y - x).abs().flatten(1).amax(1) > 0.05).all()
    # same seeds: the same output; p = 0: identity
    assert torch.equal(op(x, seeds), y)
    assert torch.equal(build_gpu_op(name, {"p": 0.0, **STRONG[name]})(x, seeds), x)
    # different seeds: different outputs (param-less ops differ by whether they fire)
    if name in PARAMLESS:
        same = x[:1].expand(16, -1, -1, -1)
        z = strong(name, p=0.5)(same, torch.arange(16))
        changed = (z - same).flatten(1).abs().amax(1) > 0
        assert 0 < int(changed.sum()) < 16
    else:
        assert not torch.allclose(op(x, seeds + 100), y, atol=1e-3)


@pytest.mark.parametrize("p", [1.0, 0.5])
@pytest.mark.parametrize("name", sorted(GPU_OPS))
def test_batch_independence(name, p):
    op = strong(name, p=p)
    x = images(5, seed=1)
    seeds = torch.tensor([3, 1_000_003, -7, 2**40 + 5, 42])
    order = torch.tensor([3, 0, 4, 1, 2])
    batched = op(x[order], seeds[order])
    for pos, i in enumerate(order.tolist()):
        alone = op(x[i : i + 1], seeds[i : i + 1])
        torch.testing.assert_close(batched[pos : pos + 1], alone, atol=1e-5, rtol=0)


@pytest.mark.parametrize("name", sorted(GPU_OPS))
def test_large_batch_goes_in_chunks_unchanged(name):
    """CPU batches above CPU_CHUNK are edited chunk by chunk: still sample by sample."""
    x, seeds = images(CPU_CHUNK + 3, size=16, seed=3), torch.arange(CPU_CHUNK + 3) * 7
    for p in (1.0, 0.6):
        op = strong(name, p=p)
        out = op(x, seeds)
        for i in (0, CPU_CHUNK - 1, CPU_CHUNK + 2):
            alone = op(x[i : i + 1], seeds[i : i + 1])
            torch.testing.assert_close(out[i : i + 1], alone, atol=1e-5, rtol=0)


@pytest.mark.parametrize("order", ["fixed", "random"])
def test_pipeline_batch_independence_and_replay(order):
    pipe = GpuPipeline({n: {"p": 0.6, **STRONG[n]} for n in GPU_OPS}, order=order)
    x = images(5, seed=2)
    seeds = torch.tensor([5, 6, 7, 8, 9])
    x0 = x.clone()
    out = pipe(x, seeds)
    assert torch.equal(x, x0)
    assert torch.equal(pipe(x, seeds), out)
    rev = torch.arange(4, -1, -1)
    torch.testing.assert_close(pipe(x[rev], seeds[rev]), out[rev], atol=1e-5, rtol=0)
    for i in (0, 3):
        alone = pipe(x[i : i + 1], seeds[i : i + 1])
        torch.testing.assert_close(alone, out[i : i + 1], atol=1e-5, rtol=0)


def test_random_order_differs_per_sample():
    ops = [("hflip", {}), ("resized_crop", {"area": [0.3, 0.3], "ratio": [1, 1]})]
    fixed = GpuPipeline(ops)
    rand = GpuPipeline(ops, order="random")
    x = images(1).expand(12, -1, -1, -1)
    seeds = torch.arange(12)
    same = [torch.allclose(a, b) for a, b in zip(fixed(x, seeds), rand(x, seeds), strict=True)]
    assert any(same) and not all(same)


# -- semantics against independent expectations ------------------------------------------------
def test_flips_match_torch_flip():
    x, seeds = images(3), torch.arange(3)
    assert torch.equal(build_gpu_op("hflip")(x, seeds), torch.flip(x, dims=(3,)))
    assert torch.equal(build_gpu_op("vflip")(x, seeds), torch.flip(x, dims=(2,)))


def test_grayscale_is_luma_on_equal_channels():
    x = images(2)
    y = build_gpu_op("grayscale")(x, torch.arange(2))
    luma = 0.299 * x[:, 0] + 0.587 * x[:, 1] + 0.114 * x[:, 2]
    for c in range(3):
        torch.testing.assert_close(y[:, c], luma, atol=2e-3, rtol=0)


def test_affine_rotation_90_is_rot90():
    x = images(2, size=33)
    op = build_gpu_op("affine", {"rotation": [90, 90], "scale": [1, 1]})
    y = op(x, torch.arange(2))
    expected = torch.rot90(x, k=1, dims=(2, 3))  # counter-clockwise
    torch.testing.assert_close(y[..., 1:-1, 1:-1], expected[..., 1:-1, 1:-1], atol=1e-4, rtol=0)


def test_brightness_factor_multiplies():
    x = images(3)
    for f in (0.5, 1.7):
        cfg = {"brightness": [f, f], "contrast": [1, 1], "saturation": [1, 1], "hue": [0, 0]}
        y = build_gpu_op("color_jitter", cfg)(x, torch.arange(3))
        torch.testing.assert_close(y, (x * f).clamp(0, 1), atol=1e-6, rtol=0)


def test_noise_std_and_blur_of_flat_image():
    flat = torch.full((2, 3, 48, 48), 0.5)
    y = build_gpu_op("noise", {"std": [0.05, 0.05]})(flat, torch.arange(2))
    assert abs(float((y - flat).std()) - 0.05) < 0.003 and abs(float((y - flat).mean())) < 0.003
    z = build_gpu_op("blur", {"sigma": [4.0, 4.0]})(flat, torch.arange(2))
    torch.testing.assert_close(z, flat)


def test_erasing_fills_one_box_with_one_colour():
    x = images(6, size=40)
    y = build_gpu_op("erasing", {"area": [0.1, 0.2], "ratio": [0.5, 2.0]})(x, torch.arange(6))
    for img, out in zip(x, y, strict=True):
        changed = (img != out).any(0)
        rows, cols = changed.any(1).nonzero(), changed.any(0).nonzero()
        h, w = int(rows.max() - rows.min() + 1), int(cols.max() - cols.min() + 1)
        assert 0.1 * 1600 * 0.8 <= h * w <= 0.2 * 1600 * 1.2
        box = out[:, int(rows.min()) : int(rows.max()) + 1, int(cols.min()) : int(cols.max()) + 1]
        assert torch.equal(box, box[:, :1, :1].expand_as(box))


def test_full_resized_crop_is_identity():
    x = images(2, size=24)
    op = build_gpu_op("resized_crop", {"area": [1.0, 1.0], "ratio": [1.0, 1.0]})
    torch.testing.assert_close(op(x, torch.arange(2)), x, atol=1e-5, rtol=0)


def test_resized_crop_zooms_in():
    """A crop of a quarter of the area shows each image row band at twice the size."""
    x = torch.linspace(0, 1, 32).view(1, 1, 1, 32).expand(3, 3, 32, 32).contiguous()
    op = build_gpu_op("resized_crop", {"area": [0.25, 0.25], "ratio": [1.0, 1.0]})
    y = op(x, torch.arange(3))
    span = y[:, 0, 0, -1] - y[:, 0, 0, 0]  # horizontal range covered by the crop
    torch.testing.assert_close(span, torch.full((3,), 15 / 31), atol=1e-4, rtol=0)


# -- configuration -----------------------------------------------------------------------------
def test_config_errors_name_the_problem():
    with pytest.raises(OpConfigError, match="unknown GPU op 'fancy'"):
        build_gpu_pipeline({"blur": {}, "fancy": {"p": 0.5}})
    with pytest.raises(OpConfigError, match=r"'blur'.*\['radius'\]"):
        build_gpu_pipeline({"blur": {"radius": 3}})
    with pytest.raises(OpConfigError, match=r"blur\.sigma"):
        build_gpu_pipeline({"blur": {"sigma": [0.5, 500]}})
    with pytest.raises(OpConfigError, match=r"noise\.std"):
        build_gpu_op("noise", {"std": [0.2, 0.1]})
    with pytest.raises(OpConfigError, match=r"erasing\.p"):
        build_gpu_op("erasing", {"p": 1.5})
    with pytest.raises(OpConfigError, match="order"):
        build_gpu_pipeline({"ops": {"hflip": {}}, "order": "shuffled"})
    with pytest.raises(OpConfigError, match="unknown key"):
        build_gpu_pipeline({"ops": {"hflip": {}}, "mode": "x"})


def test_pipeline_from_omegaconf_and_list():
    from omegaconf import OmegaConf

    cfg = OmegaConf.create(
        {
            "ops": {
                "color_jitter": {"p": 0.8, "brightness": [0.6, 1.4]},
                "blur": {"sigma": [0.5, 1.0]},
            },
            "order": "random",
        }
    )
    pipe = build_gpu_pipeline(cfg)
    assert [op.name for op in pipe.ops] == ["color_jitter", "blur"] and pipe.order == "random"
    twice = build_gpu_pipeline([["blur", {"p": 0.5}], ["blur", {"p": 0.5}]])
    assert [op.index for op in twice.ops] == [0, 1]


def test_all_ops_pipeline_on_a_batch():
    pipe = build_gpu_pipeline({n: {"p": 0.8, **STRONG[n]} for n in GPU_OPS})
    x = images(4, size=64)
    y = pipe(x, torch.arange(4))
    assert y.shape == (4, 3, 64, 64) and y.min() >= 0 and y.max() <= 1
    assert not torch.allclose(y, x)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_matches_cpu():
    """Same seeds, same views on CUDA (within 1e-3), except the noise field: it is drawn on the
    batch's device, whose generator streams differ; there we check its statistics."""
    x, seeds = images(4, size=64), torch.tensor([1, 2, 3, 4])
    cfg = {n: {"p": 0.8, **STRONG[n]} for n in GPU_OPS if n != "noise"}
    for order in ("fixed", "random"):
        pipe = GpuPipeline(cfg, order=order)
        cpu = pipe(x, seeds)
        gpu = pipe(x.cuda(), seeds.cuda())
        assert gpu.device.type == "cuda"
        torch.testing.assert_close(gpu.cpu(), cpu, atol=1e-3, rtol=0)
    flat = torch.full((4, 3, 64, 64), 0.5, device="cuda")
    noise = build_gpu_op("noise", {"std": [0.05, 0.05]})
    y = noise(flat, seeds)
    assert torch.equal(noise(flat, seeds), y)
    torch.testing.assert_close(noise(flat[2:3], seeds[2:3]), y[2:3], atol=1e-6, rtol=0)
    assert abs(float((y - flat).std()) - 0.05) < 0.003


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.parametrize("name", sorted(GPU_OPS))
def test_cuda_batch_independence(name):
    op = strong(name, p=0.7)
    x = images(5, seed=1).cuda()
    seeds = torch.tensor([3, 1_000_003, -7, 2**40 + 5, 42], device="cuda")
    order = torch.tensor([3, 0, 4, 1, 2], device="cuda")
    batched = op(x[order], seeds[order])
    assert torch.equal(op(x[order], seeds[order]), batched)
    for pos, i in enumerate(order.tolist()):
        alone = op(x[i : i + 1], seeds[i : i + 1])
        torch.testing.assert_close(batched[pos : pos + 1], alone, atol=1e-5, rtol=0)
