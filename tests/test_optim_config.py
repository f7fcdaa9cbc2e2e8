"""Optim config groups: each ``conf/optim/*.yaml`` builds its ``_target_`` optimizer, its keys
are checked against that optimizer's signature at start-up, it trains exactly as timm's
``create_optimizer_v2`` (fisc's optimizer before the yamls named their class) did, and run dirs
written before the yamls named their class keep their hash and resume."""

from __future__ import annotations

import copy

import pytest
import torch
from helpers.config import CONF
from omegaconf import OmegaConf
from timm.optim import create_optimizer_v2

from fisc.train.config import ConfigError, check_config
from fisc.train.optim import build_optimizer
from fisc.train.resolvers import config_hash
from fisc.train.resume import check_same_run
from fisc.train.run import train

OPTIM_YAMLS = sorted(p.stem for p in (CONF / "optim").glob("*.yaml"))


def _tiny_trainable() -> torch.nn.Module:
    """What ``configure_optimizers`` optimises, in small: a model with conv and linear weights,
    biases and a norm layer, and a loss with a 2-d weight; one frozen parameter."""
    torch.manual_seed(0)
    model = torch.nn.Sequential(
        torch.nn.Conv2d(3, 4, 3, bias=False),  # (a bias before a norm gets no gradient)
        torch.nn.BatchNorm2d(4),
        torch.nn.ReLU(),
        torch.nn.AdaptiveAvgPool2d(1),
        torch.nn.Flatten(),
        torch.nn.Linear(4, 6),
    )
    loss = torch.nn.Linear(6, 5, bias=False)
    frozen = torch.nn.Linear(2, 2)
    frozen.requires_grad_(False)
    return torch.nn.ModuleDict({"model": model, "loss": loss, "frozen": frozen})


def _steps(module: torch.nn.Module, opt: torch.optim.Optimizer, n: int = 4) -> None:
    gen = torch.Generator().manual_seed(1)
    for _ in range(n):
        x = torch.randn(3, 3, 8, 8, generator=gen)
        out = module["loss"](module["model"](x))
        opt.zero_grad()
        (out**2).mean().backward()
        opt.step()


@pytest.mark.parametrize("overrides", [[], ["optim.weight_decay=0.05"], ["optim.weight_decay=0"]])
@pytest.mark.parametrize("option", ["adamw", "sgd", "lars"])
def test_each_optimizer_trains_as_timms_create_optimizer_v2(option, overrides, compose_cfg):
    """Bit for bit, the parameters after a few steps equal those of timm's optimizer of the
    option's name built as fisc built it before (its param groups: no weight decay on biases
    and norm parameters; its defaults: Nesterov SGD, AdamW's betas and eps, LARS's trust)."""
    o = check_config(compose_cfg(f"optim={option}", *overrides))["optim"]
    lr = o.lr * 0.1  # any lr: the same one reaches both
    ours_module = _tiny_trainable()
    timm_module = copy.deepcopy(ours_module)
    ours = build_optimizer(o, ours_module, lr)
    momentum = {} if option == "adamw" else {"momentum": 0.9}  # what fisc passed timm
    expected = create_optimizer_v2(
        timm_module, option, lr=lr, weight_decay=o.weight_decay, **momentum
    )
    assert type(ours) is type(expected)
    assert len(ours.param_groups) == len(expected.param_groups) == (2 if o.weight_decay else 1)
    names = {id(p): n for n, p in ours_module.named_parameters()}
    timm_names = {id(p): n for n, p in timm_module.named_parameters()}
    for g, e in zip(ours.param_groups, expected.param_groups, strict=True):
        assert {k: v for k, v in g.items() if k != "params"} == {
            k: v for k, v in e.items() if k != "params"
        }
        assert [names[id(p)] for p in g["params"]] == [timm_names[id(p)] for p in e["params"]]
    _steps(ours_module, ours)
    _steps(timm_module, expected)
    moved = 0
    for (name, p), q in zip(ours_module.named_parameters(), timm_module.parameters(), strict=True):
        assert torch.equal(p, q), name
        moved += not torch.equal(p, _tiny_trainable().get_parameter(name))
    assert moved == 6  # every trainable parameter moved (the test is not vacuous)


def test_every_optim_yaml_names_a_target_and_its_momentum_reaches_it(compose_cfg):
    """Each yaml names its option and its class, and builds; where it has ``momentum``, that
    is its optimizer's momentum (AdamW's: beta1)."""
    assert {"adamw", "sgd", "lars"} <= set(OPTIM_YAMLS)
    for option in OPTIM_YAMLS:
        yaml = OmegaConf.load(CONF / "optim" / f"{option}.yaml")
        assert yaml.name == option and "_target_" in yaml
        momentum = ["optim.momentum=0.7"] if "momentum" in yaml else []
        o = check_config(compose_cfg(f"optim={option}", *momentum))["optim"]
        assert o._target_ == yaml._target_
        group = build_optimizer(o, torch.nn.Linear(2, 2), o.lr).param_groups[0]
        if momentum:
            assert group.get("momentum", group.get("betas", (None,))[0]) == 0.7, option


def test_a_new_optimizer_is_one_yaml(compose_cfg):
    """A class fisc has no code for: its yaml's keys are its arguments, checked and converted
    to its types (``eps: 1`` becomes 1.0), and reach it."""
    o = check_config(
        compose_cfg(
            "optim._target_=torch.optim.RAdam",
            "optim.name=radam",
            "~optim.momentum",
            "+optim.eps=1",
            "+optim.decoupled_weight_decay=true",
            "optim.lr=0.02",
        )
    )["optim"]
    assert o.args == {"eps": 1.0, "decoupled_weight_decay": True}
    assert type(o.args["eps"]) is float
    opt = build_optimizer(o, torch.nn.Linear(2, 3), 0.5)
    assert type(opt) is torch.optim.RAdam
    group = opt.param_groups[-1]
    assert (group["eps"], group["decoupled_weight_decay"], group["lr"]) == (1.0, True, 0.5)


def test_optim_overrides_keep_working(compose_cfg):
    o = check_config(compose_cfg("optim=sgd", "optim.lr=0.5", "optim.momentum=0.8"))["optim"]
    assert (o.lr, o.args) == (0.5, {"momentum": 0.8})
    group = build_optimizer(o, torch.nn.Linear(2, 2), o.lr).param_groups[0]
    assert (group["lr"], group["momentum"], group["nesterov"]) == (0.5, 0.8, True)


@pytest.mark.parametrize(
    "overrides,message",
    [
        (["+optim.betas=[0.9,0.99]"], "optim adamw does not use ['betas']"),
        (["optim=sgd", "+optim.eps=1e-8"], "optim sgd does not use ['eps']"),
        (["optim=lars", "+optim.trust_coef=0.01"], "optim lars does not use ['trust_coef']"),
        (["optim.momentum=fast"], "momentum"),
        (["optim=sgd", "optim.momentum=-0.5"], "Invalid momentum value"),  # SGD's own check
        (["+optim.params=1"], "['params'] are set by the run"),
        (["optim._target_=torch.optim.Nope"], "cannot import _target_"),
        (["optim._target_=torch.nn.Linear"], "is not an optimizer"),
        (["~optim._target_"], "needs a _target_"),
        (["optim.lr=fast"], "lr"),
    ],
)
def test_a_bad_optim_config_stops_the_launch_before_the_run_dir(
    overrides, message, compose_cfg, tmp_path
):
    cfg = compose_cfg(*overrides, f"run_dir={tmp_path}/run")
    with pytest.raises(ConfigError) as e:
        train(cfg)
    assert message in str(e.value)
    assert "'optim'" in str(e.value)  # the group is named
    assert not (tmp_path / "run").exists()


# ${config_hash:} of these configs as fisc computed it before the optim yamls named their
# class (main at c63a325): the default run dirs of runs started then
HASHES_BEFORE_TARGETS = {
    (): "c78a37fb2f",
    ("experiment=demo",): "076ea44999",
    ("optim=sgd",): "5b11fd97a5",
    ("optim=lars",): "b19d9b5f68",
}


@pytest.mark.skipif(
    (CONF / "local" / "default.yaml").is_file(), reason="conf/local/default.yaml changes hashes"
)
@pytest.mark.parametrize("overrides", list(HASHES_BEFORE_TARGETS))
def test_run_dirs_keep_their_hash(overrides, compose_cfg):
    assert config_hash(_root_=compose_cfg(*overrides)) == HASHES_BEFORE_TARGETS[overrides]


def _saved(cfg, tmp_path, drop=("_target_",)):
    """``cfg`` saved as a run's config.yaml, without the optim keys ``drop``."""
    data = OmegaConf.to_container(cfg, resolve=True)
    for key in drop:
        del data["optim"][key]
    path = tmp_path / "config.yaml"
    path.write_text(OmegaConf.to_yaml(data))
    return path


@pytest.mark.parametrize("option", ["adamw", "sgd", "lars"])
def test_a_config_saved_without_optim_target_resumes(option, compose_cfg, tmp_path):
    cfg = compose_cfg(f"optim={option}")
    check_same_run(_saved(cfg, tmp_path), cfg)  # no error
    other = compose_cfg(f"optim={option}", "optim._target_=torch.optim.Adagrad", "~optim.momentum")
    with pytest.raises(ValueError, match=r"optim\._target_: '\(absent\)' -> 'torch.optim.Adagrad'"):
        check_same_run(_saved(cfg, tmp_path), other)


def test_an_optimizer_argument_new_since_the_run_resumes_at_its_default(compose_cfg, tmp_path):
    """A yaml that gains a key the saved config lacks: no change when it holds the optimizer's
    default (AdamW's beta2 0.999, LARS's trust_coeff 0.001), a change otherwise."""
    cases = [("adamw", "beta2", 0.999, 0.99), ("lars", "trust_coeff", 0.001, 0.01)]
    for option, key, default, other in cases:
        saved = _saved(compose_cfg(f"optim={option}"), tmp_path, drop=("_target_",))
        check_same_run(saved, compose_cfg(f"optim={option}", f"+optim.{key}={default}"))
        with pytest.raises(ValueError, match=rf"optim\.{key}: '\(absent\)' -> {other}"):
            check_same_run(saved, compose_cfg(f"optim={option}", f"+optim.{key}={other}"))
