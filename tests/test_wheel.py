"""The wheel works on its own: it carries the configs and the training command, and an
install of it runs from any directory, with no checkout beside it.

The wheel is built from a copy of the package's sources (setuptools reuses a ``build/``
folder, which would let stale files into the wheel), with no network (``--no-build-isolation``,
the environment's setuptools). The slow tests install it into a temporary target and run
``fisc minidisc``, ``fisc train``, ``fisc export-phase2``, ``fisc augment-gallery`` and the
demo's config composition in a temporary directory with only that target on ``PYTHONPATH``.
"""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import subprocess
import sys
import zipfile
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parent.parent  # (not conftest's: these tests import no torch)
SOURCES = ("pyproject.toml", "README.md", "fisc", "conf")  # what the build reads


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    src = tmp_path_factory.mktemp("wheel-src")
    for name in SOURCES:
        if (REPO / name).is_dir():
            ignore = shutil.ignore_patterns("__pycache__", "*.pyc", "local")
            shutil.copytree(REPO / name, src / name, ignore=ignore)
        else:
            shutil.copy2(REPO / name, src / name)
    (src / "conf" / "local").mkdir()  # machine settings (git-ignored) must not ship
    (src / "conf" / "local" / "default.yaml").write_text("num_workers: 1\n")
    dist = tmp_path_factory.mktemp("dist")
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "--no-index",
         "-q", "-w", str(dist), str(src)],
        check=True, capture_output=True, text=True,
    )  # fmt: skip
    (built,) = dist.glob("fisc-*.whl")
    return built


def test_wheel_holds_every_module_the_configs_and_entry_points(wheel):
    names = set(zipfile.ZipFile(wheel).namelist())
    modules = {p.relative_to(REPO).as_posix() for p in (REPO / "fisc").rglob("*.py")}
    assert modules and modules <= names, f"modules left out: {sorted(modules - names)}"
    configs = {
        "fisc/" + p.relative_to(REPO).as_posix()
        for p in (REPO / "conf").rglob("*.yaml")
        if p.relative_to(REPO / "conf").parts[0] != "local"
    }
    shipped = {n for n in names if n.startswith("fisc/conf/")}
    assert "fisc/conf/train.yaml" in configs and "fisc/conf/export/default.yaml" in configs
    assert shipped == configs  # every config, and nothing else (no conf/local/)
    info = next(n for n in names if n.endswith(".dist-info/entry_points.txt"))
    entry_points = zipfile.ZipFile(wheel).read(info).decode()
    assert "fisc = fisc.cli:main" in entry_points
    assert "fisc-train = fisc.train.app:main" in entry_points
    # the overlay edits' fonts and emoji come from AugLy's package files, a dependency
    metadata = zipfile.ZipFile(wheel).read(info.replace("entry_points.txt", "METADATA")).decode()
    assert "Requires-Dist: augly" in metadata


def _load_paths(package_dir: Path):
    """``fisc/paths.py`` loaded as if it lived in ``package_dir``."""
    package_dir.mkdir(parents=True, exist_ok=True)
    shutil.copy2(REPO / "fisc" / "paths.py", package_dir / "paths.py")
    spec = importlib.util.spec_from_file_location("fisc_paths_probe", package_dir / "paths.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_config_dir_is_the_checkout_else_the_packaged_copy(tmp_path):
    from fisc.paths import config_dir, source_root

    assert source_root() == REPO and config_dir() == REPO / "conf"
    installed = tmp_path / "site-packages" / "fisc"
    (installed / "conf").mkdir(parents=True)
    with pytest.raises(FileNotFoundError, match="configs are missing"):
        _load_paths(installed).config_dir()
    (installed / "conf" / "train.yaml").write_text("seed: 0\n")
    paths = _load_paths(installed)
    assert paths.source_root() is None and paths.config_dir() == installed / "conf"
    # a checkout: conf/ beside the package, with pyproject.toml
    checkout = tmp_path / "checkout"
    (checkout / "conf").mkdir(parents=True)
    (checkout / "conf" / "train.yaml").write_text("seed: 0\n")
    (checkout / "pyproject.toml").write_text("")
    assert _load_paths(checkout / "fisc").config_dir() == checkout / "conf"


def _hydra_cfg(command: list[str], cwd: Path) -> str:
    out = subprocess.run(command, cwd=cwd, capture_output=True, text=True, check=True)
    return out.stdout


def test_fisc_train_is_the_app_of_train_py(tmp_path):
    """Same configs, same composed job and Hydra settings (run dir, job name, search path)."""
    overrides = ["experiment=smoke", f"run_dir={tmp_path}/run", "--cfg", "all"]
    repo_entry = _hydra_cfg([sys.executable, "train.py", *overrides], REPO)
    cli = _hydra_cfg([sys.executable, "-m", "fisc.cli", "train", *overrides], REPO)
    assert cli == repo_entry
    cfg = yaml.safe_load(cli)
    assert cfg["hydra"]["run"]["dir"] == "${run_dir}" and cfg["run_dir"] == f"{tmp_path}/run"
    assert cfg["hydra"]["job"]["name"] == "train"  # train.log, whichever entry point
    assert cfg["trainer"]["limit_train_batches"] == 2  # experiment=smoke composed
    helped = _hydra_cfg([sys.executable, "-m", "fisc.cli", "--help"], REPO)
    assert "train" in helped.split("{", 1)[1].split("}", 1)[0]  # listed as a subcommand


def _run(command: list[str], cwd: Path, env: dict, timeout: int = 600) -> str:
    done = subprocess.run(command, cwd=cwd, env=env, capture_output=True, text=True,
                          timeout=timeout)  # fmt: skip
    assert done.returncode == 0, f"{command}: rc {done.returncode}\n{done.stdout}\n{done.stderr}"
    return done.stdout + done.stderr


@dataclass
class Installed:
    site: Path  # the pip --target folder: the only fisc on PYTHONPATH
    work: Path  # the directory the commands run in, outside the repo
    env: dict

    def run(self, *command: str, timeout: int = 900) -> str:
        return _run(list(command), self.work, self.env, timeout)

    def fisc(self, *args: str) -> str:
        return self.run(str(self.site / "bin" / "fisc"), *args)


@pytest.fixture(scope="module")
def installed(wheel, tmp_path_factory) -> Installed:
    root = tmp_path_factory.mktemp("installed")
    if shutil.which("git"):  # inside another repository: fisc must not record its commit
        subprocess.run(["git", "init", "-q", str(root)], check=True)
    site = root / "site"
    subprocess.run(
        [sys.executable, "-m", "pip", "install", "--no-deps", "--no-index", "-q", "--target",
         str(site), str(wheel)],
        check=True, capture_output=True, text=True,
    )  # fmt: skip
    work = root / "work"
    work.mkdir()
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME")}
    env.update(PYTHONPATH=str(site), WANDB_MODE="disabled", HF_HUB_OFFLINE="1")
    inst = Installed(site, work, env)
    probe = "import fisc, fisc.paths; print(fisc.__file__); print(fisc.paths.config_dir())"
    where = inst.run(sys.executable, "-c", probe).split()
    assert Path(where[0]).is_relative_to(site), where  # the installed wheel, not the checkout
    assert Path(where[1]) == site / "fisc" / "conf"
    return inst


@pytest.fixture(scope="module")
def trained(installed) -> Path:
    """``fisc minidisc`` (relative root) and ``fisc train experiment=smoke`` on it."""
    installed.fisc("minidisc", "--root", "data/mini", "--n-train", "24", "--n-reference", "16",
                   "--n-dev-queries", "12", "--n-phase2-queries", "12", "--n-novel-queries", "0",
                   "--image-size", "64")  # fmt: skip
    installed.fisc("train", "experiment=smoke", "data.root=data/mini",
                   "data.build_if_missing=false", "run_dir=runs/smoke",
                   "trainer.limit_train_batches=1")  # fmt: skip
    return installed.work / "runs" / "smoke"


@pytest.mark.slow
def test_installed_train_commands(installed, trained):
    for command in (
        [str(installed.site / "bin" / "fisc-train")],
        [str(installed.site / "bin" / "fisc"), "train"],
    ):
        assert "train is powered by Hydra" in installed.run(*command, "--help")
    assert (trained / "checkpoints" / "last.ckpt").is_file() and (trained / "train.log").is_file()
    hydra = (trained / ".hydra" / "hydra.yaml").read_text()
    assert f"path: {installed.site / 'fisc' / 'conf'}" in hydra  # the packaged configs
    assert (installed.work / "data" / "mini" / "dev_ground_truth.csv").is_file()
    info = json.loads((trained / "run_info.json").read_text())["launches"][0]
    assert info["git_sha"] is None and info["git_dirty"] is None


@pytest.mark.slow
def test_installed_export_phase2(installed, trained):
    """Its default --config is the packaged conf/export/default.yaml."""
    summary = installed.fisc(
        "export-phase2", "--set", f"checkpoint={trained}/checkpoints/last.ckpt",
        "--set", "artifact=export/artifact", "--set", "data_root=data/mini",
        "--set", "phase1_dir=export/phase1", "--set", "phase2_submission=export/phase2/sub.h5",
        "--set", "runtime_dir=export/runtime", "--set", "runtime_formats=[torchscript]",
    )  # fmt: skip
    assert (installed.work / "export" / "phase2" / "sub.h5").is_file(), summary
    assert (installed.work / "export" / "runtime").is_dir() and "runtime" in summary


@pytest.mark.slow
def test_installed_augment_gallery(installed):
    """Every packaged augment pipeline (none given: all of conf/augment)."""
    out = installed.fisc("augment-gallery", "--out", "gallery")
    assert (installed.work / "gallery" / "augment_pipelines.png").stat().st_size > 0, out


@pytest.mark.slow
def test_installed_demo_composes_the_packaged_config(installed):
    demo = (  # fisc demo up to its training, which is stopped here
        "import fisc.demo as d\n"
        "class Composed(Exception): pass\n"
        "def train(cfg): raise Composed(cfg.run_dir)\n"
        "d.train = train\n"
        "try: d.run_demo(['paths.output_dir=demo_out'])\n"
        "except Composed as e: print('composed', e)\n"
    )
    assert "composed demo_out/demo/train" in installed.run(sys.executable, "-c", demo)
