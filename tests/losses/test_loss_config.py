"""Loss config groups: each ``conf/loss/*.yaml`` builds its ``_target_`` class, its keys are
checked against that class's constructor at start-up, and run dirs written before losses named
their class (no ``_target_``) keep their hash and resume."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from helpers.config import CONF, tiny_overrides
from omegaconf import OmegaConf

from fisc.losses import build_loss
from fisc.losses.infonce_koleo import InfoNCEKoLeoLoss
from fisc.train.config import ConfigError, check_config
from fisc.train.resolvers import config_hash
from fisc.train.run import train

LOSS_YAMLS = sorted(p.stem for p in (CONF / "loss").glob("*.yaml"))


# yaml values that differ from the constructor's default on purpose
RECIPE_VALUES = {
    # the 1st-place recipe's memory; the class alone keeps none (its default, 0)
    ("contrastive_xbm", "memory_size"): 0,
}


class RenamedInfoNCE(InfoNCEKoLeoLoss):
    """Another class with the same arguments (a ``_target_`` change alone)."""


@pytest.mark.parametrize("option", LOSS_YAMLS)
def test_every_loss_yaml_builds_its_target_with_its_values(option, compose_cfg):
    cfg = compose_cfg(f"loss={option}")
    loss = check_config(cfg)["loss"]
    built = build_loss(loss, dims=16, num_classes=10)
    yaml = OmegaConf.load(CONF / "loss" / f"{option}.yaml")
    assert f"{type(built).__module__}.{type(built).__qualname__}" == yaml._target_
    for key, value in yaml.items():
        if key not in ("_target_", "name"):
            assert getattr(built, key) == value, key  # every key reaches the constructor


@pytest.mark.parametrize("option", LOSS_YAMLS)
def test_the_constructors_defaults_are_the_yamls_values(option):
    """``fisc.losses.<module>.<Loss>()`` from Python builds what ``loss=<option>`` builds: each
    argument the yaml sets is the constructor's default (the yaml documents them), but those of
    :data:`RECIPE_VALUES`, whose class defaults it names."""
    import inspect

    from fisc.targets import locate

    yaml = OmegaConf.load(CONF / "loss" / f"{option}.yaml")
    cls = locate(yaml._target_)
    params = inspect.signature(cls.__init__).parameters
    runtime = {k: v for k, v in {"dims": 16, "num_classes": 10}.items() if k in params}
    built = cls(**runtime)  # every other argument at its default
    for key, value in yaml.items():
        if key not in ("_target_", "name"):
            same = params[key].default == value
            assert same != ((option, key) in RECIPE_VALUES), key
            default = value if same else RECIPE_VALUES[option, key]
            assert params[key].default == default and getattr(built, key) == default, key


@pytest.mark.parametrize(
    "overrides,message",
    [
        (["+loss.margin=0.5"], "loss infonce_koleo does not use ['margin']"),
        (["loss=arcface", "+loss.temperature=0.1"], "loss arcface does not use ['temperature']"),
        (["loss.temperature=warm"], "temperature"),
        (["loss=contrastive_xbm", "loss.memory_size=1.5"], "memory_size"),
        (["loss=arcface", "+loss.num_classes=5"], "['num_classes'] are set by the run"),
        (["loss.temperature=0"], "temperature must be > 0"),  # the constructor's own check
        (["loss=arcface", "loss.margin=2.0"], "margin must be in [0, pi/2)"),
        (["loss._target_=fisc.losses.nope.Loss"], "cannot import _target_"),
        (["loss._target_=torch.nn.MSELoss"], "not a fisc.losses.TrainingLoss"),
        (["~loss._target_"], "needs a _target_"),
    ],
)
def test_a_bad_loss_config_stops_the_launch_before_the_run_dir(
    overrides, message, compose_cfg, tmp_path
):
    cfg = compose_cfg(*overrides, f"run_dir={tmp_path}/run")
    with pytest.raises(ConfigError) as e:
        train(cfg)
    assert message in str(e.value)
    assert "'loss'" in str(e.value)  # the group is named
    assert not (tmp_path / "run").exists()


def test_loss_values_are_converted_to_the_constructors_types(compose_cfg):
    loss = check_config(compose_cfg("loss.temperature=1", "loss.memory_size=4096"))["loss"]
    assert type(loss["temperature"]) is float and loss["temperature"] == 1.0
    assert type(loss["memory_size"]) is int and loss["memory_size"] == 4096


def _without_targets(node):
    if isinstance(node, dict):
        return {k: _without_targets(v) for k, v in node.items() if k != "_target_"}
    return node


def test_config_hash_leaves_targets_out(compose_cfg):
    """A config as fisc composed it before losses had a _target_ hashes the same (so its
    default run dir is found again); a loss value still changes the hash."""
    for option in LOSS_YAMLS:
        now = compose_cfg(f"loss={option}")
        assert "_target_" in now.loss
        old = OmegaConf.create(_without_targets(OmegaConf.to_container(now, resolve=False)))
        assert config_hash(_root_=now) == config_hash(_root_=old)
    other = compose_cfg("loss.temperature=0.07")
    assert config_hash(_root_=other) != config_hash(_root_=compose_cfg())


def test_a_run_saved_without_loss_target_resumes(compose_cfg, tiny_minidisc, tmp_path):
    """config.yaml from before loss._target_ existed: the same loss resumes; another class
    under the same option name is refused."""
    args = [*tiny_overrides(tiny_minidisc), f"run_dir={tmp_path}/run", "ckpt_path=auto"]
    train(compose_cfg(*args))
    saved = tmp_path / "run" / "config.yaml"
    old = OmegaConf.load(saved)
    del old.loss["_target_"]
    saved.write_text(OmegaConf.to_yaml(old))
    resumed = train(compose_cfg(*args, "trainer.max_epochs=2"))
    launches = json.loads((tmp_path / "run" / "run_info.json").read_text())["launches"]
    assert len(launches) == 2
    assert torch.load(resumed.last_checkpoint, weights_only=True)["epoch"] == 1
    saved.write_text(OmegaConf.to_yaml(old))  # again without _target_
    other = f"loss._target_={__name__}.RenamedInfoNCE"
    with pytest.raises(ValueError, match=r"loss\._target_: '\(absent\)' -> 'test_loss_config"):
        train(compose_cfg(*args, "trainer.max_epochs=3", other))
    assert Path(saved).is_file()
