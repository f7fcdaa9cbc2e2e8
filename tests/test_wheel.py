"""The wheel works on its own: it carries the configs and the training command, and an
install of it runs the README's commands from any directory, with no checkout beside it.

The wheel is built from a copy of the package's sources (setuptools reuses a ``build/``
folder, which would let stale files into the wheel), with no network (``--no-build-isolation``,
the environment's setuptools). The slow tests install it into a temporary target and run, in a
temporary directory with only that target on ``PYTHONPATH`` and at a tiny size, every command
the README shows that is not checkout-only (the README lists those): ``fisc minidisc``,
``fisc-train`` / ``fisc train`` (a run, a ``-m`` sweep, ``debug=fast``, the Optuna search),
``fisc demo`` with each row of its table reproduced by ``fisc extract`` and ``fisc evaluate``,
the options of both (sharded extraction under torchrun included), ``fisc fit-postprocess``,
``fisc freeze``, ``fisc export-runtime``, ``fisc export-phase1`` / ``export-phase2``,
``fisc validate-submission``, ``fisc augment-gallery``, ``python -m fisc.cli`` and the Python
API (``fisc.load``, ``fisc.list_images``, ``fisc.evaluate``). About 3.5 minutes on the 2-core
build machine under load; the fast tier only builds the wheel and reads it.
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

import h5py
import numpy as np
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
    assert "fisc/conf/train.yaml" in configs and "fisc/conf/export.yaml" in configs
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

    def fails(self, *command: str) -> subprocess.CompletedProcess:
        done = subprocess.run(list(command), cwd=self.work, env=self.env, capture_output=True,
                              text=True, timeout=300)  # fmt: skip
        assert done.returncode != 0, f"{command} succeeded:\n{done.stdout}\n{done.stderr}"
        return done

    def extract_and_evaluate(self, source: list[str], prefix: str) -> dict:
        """``fisc extract`` of the Phase 2 queries and the references from ``source`` (its
        options), then ``fisc evaluate --json``: the scores it wrote."""
        for images, split in ((Q, "query"), (R, "reference")):
            self.fisc("extract", *source, "--images", images, "--split", split,
                      "--out", f"{prefix}_{split}.h5")  # fmt: skip
        self.fisc("evaluate", "--query", f"{prefix}_query.h5", "--reference",
                  f"{prefix}_reference.h5", "--gt", PHASE2_GT,
                  "--json", f"{prefix}.json")  # fmt: skip
        return json.loads((self.work / f"{prefix}.json").read_text())

    def python(self, script: str, *args: str) -> dict:
        """``script`` run by the installed fisc; it prints one JSON object last."""
        return json.loads(self.run(sys.executable, "-c", script, *args).strip().splitlines()[-1])


def read_h5(path: Path) -> tuple[list[str], np.ndarray]:
    """Ids and vectors of a descriptor file, read with h5py alone (not with fisc)."""
    with h5py.File(path, "r") as f:
        names = [n.decode() if isinstance(n, bytes) else str(n) for n in f["image_names"][()]]
        return names, f["vectors"][()]


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


DATA = ["data.root=data/mini", "data.build_if_missing=false"]
TINY = ["model.train_size=32", "model.eval_size=32", "batch_size=8", "num_workers=0"]
Q, R, T = (f"data/mini/images/{split}" for split in ("query", "reference", "training"))
PHASE2_GT = "data/mini/phase2_ground_truth.csv"


@pytest.fixture(scope="module")
def data(installed) -> Path:
    """``fisc minidisc`` with a relative root: data/mini under the working directory."""
    installed.fisc("minidisc", "--root", "data/mini", "--n-train", "24", "--n-reference", "16",
                   "--n-dev-queries", "12", "--n-phase2-queries", "12", "--n-novel-queries",
                   "12", "--match-fraction", "0.5", "--image-size", "64")  # fmt: skip
    return installed.work / "data" / "mini"


@pytest.fixture(scope="module")
def trained(installed, data) -> Path:
    """``fisc-train experiment=smoke`` on it, with a post-processor the run fits at its end."""
    installed.run(str(installed.site / "bin" / "fisc-train"), "experiment=smoke", *DATA,
                  "run_dir=runs/smoke", "trainer.limit_train_batches=1",
                  "postprocess='pca_whiten8,l2'")  # fmt: skip
    return installed.work / "runs" / "smoke"


@pytest.mark.slow
def test_installed_minidisc_and_train_commands(installed, data, trained):
    for command in (
        [str(installed.site / "bin" / "fisc-train")],
        [str(installed.site / "bin" / "fisc"), "train"],
    ):
        assert "train is powered by Hydra" in installed.run(*command, "--help")
    manifest = json.loads((data / "minidisc.json").read_text())
    assert (data / "dev_ground_truth.csv").is_file() and (data / "novel_ground_truth.csv").is_file()
    assert len(list((data / "images" / "training").iterdir())) == 24, manifest.keys()
    assert (trained / "checkpoints" / "last.ckpt").is_file() and (trained / "train.log").is_file()
    hydra = (trained / ".hydra" / "hydra.yaml").read_text()
    assert f"path: {installed.site / 'fisc' / 'conf'}" in hydra  # the packaged configs
    info = json.loads((trained / "run_info.json").read_text())["launches"][0]
    assert info["git_sha"] is None and info["git_dirty"] is None
    result = json.loads((trained / "train_result.json").read_text())
    assert result["postprocess"]["spec"] == "pca_whiten8,l2" and result["postprocess"]["dims"] == 8
    assert (installed.work / result["postprocess"]["file"]).is_file()  # relative: as given


@pytest.mark.slow
def test_installed_multirun_debug_and_optuna_search(installed, data):
    """``fisc train -m`` (a sweep: one run dir per job), ``debug=fast`` (its own dir) and the
    Optuna search (the sweep extra; skipped without it)."""
    installed.fisc("train", "-m", "experiment=smoke", *DATA, "trainer.limit_train_batches=1",
                   "paths.output_dir=sweep", "loss.temperature=0.05,0.1")  # fmt: skip
    runs = sorted((installed.work / "sweep" / "runs").iterdir())
    assert len(runs) == 2, runs
    temperatures = {yaml.safe_load((r / "config.yaml").read_text())["loss"]["temperature"]
                    for r in runs}  # fmt: skip
    assert temperatures == {0.05, 0.1}
    assert all((r / "checkpoints" / "last.ckpt").is_file() for r in runs)

    installed.fisc("train", "experiment=smoke", *DATA, "debug=fast", "paths.output_dir=dbg")
    (debug_run,) = (installed.work / "dbg" / "debug" / "fast").iterdir()
    assert (debug_run / "checkpoints" / "last.ckpt").is_file()

    if importlib.util.find_spec("hydra_plugins.hydra_optuna_sweeper") is None:
        pytest.skip("the sweep extra (hydra-optuna-sweeper) is not installed")
    installed.fisc("train", "-m", "hparams_search=demo_optuna", "experiment=smoke", *DATA,
                   "hydra.sweeper.n_trials=2", "batch_size=8", "trainer.limit_train_batches=1",
                   "paths.output_dir=optuna", "hydra.sweep.dir=optuna/sweep")  # fmt: skip
    found = yaml.safe_load((installed.work / "optuna" / "sweep" / "optimization_results.yaml")
                           .read_text())  # fmt: skip
    assert set(found["best_params"]) == {"optim.lr", "loss.temperature"}  # batch_size: fixed
    assert 0.0 <= found["best_value"] <= 1.0
    assert len(list((installed.work / "optuna" / "runs").iterdir())) == 2


@pytest.mark.slow
def test_installed_training_under_torchrun(installed, data):
    """The README's installed form of a multi-process launch: ``torchrun ... -m fisc.cli train``
    (2 gloo processes on CPU, one step): one run, rank 0's records, rank 1's own log."""
    installed.run(sys.executable, "-m", "torch.distributed.run", "--standalone",
                  "--nproc_per_node", "2", "-m", "fisc.cli", "train", "experiment=smoke", *DATA,
                  "trainer=ddp", "trainer.accelerator=cpu", "trainer.devices=2",
                  "trainer.sync_batchnorm=false", "trainer.precision=32-true",
                  "trainer.limit_train_batches=1", "run_dir=runs/ddp")  # fmt: skip
    run = installed.work / "runs" / "ddp"
    result = json.loads((run / "train_result.json").read_text())
    assert Path(result["last_checkpoint"]).name == "last.ckpt"
    import torch

    ckpt = torch.load(run / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=False)
    assert ckpt["global_step"] == 1  # one step of the 2-process job
    assert (run / "train_rank1.log").is_file() and not (run / "train_rank0.log").exists()
    assert len(json.loads((run / "run_info.json").read_text())["launches"]) == 1  # rank 0 only


@pytest.fixture(scope="module")
def demo(installed, data) -> Path:
    """``fisc demo`` at a tiny size: the demo recipe (its weights package when installed)."""
    out = installed.fisc("demo", *DATA, "paths.output_dir=demo_out", "trainer.max_epochs=1",
                         "trainer.limit_train_batches=1", "model.train_size=32",
                         "model.eval_size=32", "batch_size=8", "num_workers=0",
                         "postprocess='pca_whiten8,l2'")  # fmt: skip
    assert "minidisc phase2 split" in out
    return installed.work / "demo_out" / "demo"


@pytest.mark.slow
def test_installed_demo_rows_come_back_from_fisc_extract_and_evaluate(installed, demo):
    """The demo's table, and each row of its Phase 2 table reproduced by the README's
    ``fisc extract`` / ``fisc evaluate`` commands."""
    assert (demo / "train" / "checkpoints" / "last.ckpt").is_file()  # the demo's run dir
    assert "margin of the shipped system over pHash" in (demo / "results.md").read_text()
    table = json.loads((demo / "results.json").read_text())
    assert set(table) == {"dev", "phase2", "novel"}
    rows = table["phase2"]
    ckpt = "demo_out/demo/train/checkpoints/last.ckpt"
    systems = {  # name prefix in the table -> extra fisc extract options (none: from Q, R)
        "fisc trained (": ["--checkpoint", ckpt],
        "fisc trained + pca_whiten8,l2": ["--checkpoint", ckpt, "--postprocess", "run"],
        "before training": ["--checkpoint", ckpt, "--baseline", "untrained"],
        "pHash": ["--baseline", "phash"],
    }
    assert len(rows) == len(systems)
    for k, (prefix, source) in enumerate(systems.items()):
        (name,) = [n for n in rows if n.startswith(prefix)]
        got = installed.extract_and_evaluate(source, f"rows/{k}")
        for metric in ("micro_ap", "recall_at_p90", "recall_at_1", "n_queries"):
            assert got[metric] == pytest.approx(rows[name][metric], abs=1e-9), (name, metric)


@pytest.mark.slow
def test_installed_extract_and_evaluate_options(installed, trained):
    """``fisc extract --gt``, sharded extraction under torchrun, and ``fisc evaluate``'s
    scored-list round trip, report, post-processing sweep and isc2021 protocol."""
    ckpt = str(trained / "checkpoints" / "last.ckpt")
    installed.fisc("extract", "--checkpoint", ckpt, "--images", Q, "--split", "query", "--gt",
                   PHASE2_GT, "--out", "ev/q.h5")  # fmt: skip
    # one image per forward pass here and in the ranks below, so their descriptors can be equal
    installed.fisc("extract", "--checkpoint", ckpt, "--images", R, "--split", "reference",
                   "--out", "ev/r.h5", "--batch-size", "1")  # fmt: skip
    installed.fisc("extract", "--checkpoint", ckpt, "--images", T, "--split", "training",
                   "--out", "ev/t.h5")  # fmt: skip
    gt = (installed.work / PHASE2_GT).read_text().split()[1:]
    ids, vectors = read_h5(installed.work / "ev" / "q.h5")
    assert ids == sorted(line.split(",")[0] for line in gt)  # only --gt's queries
    assert vectors.shape == (12, 256) and vectors.dtype == np.float32

    # several processes: rank 0 merges the shards into the single-process file
    installed.run(sys.executable, "-m", "torch.distributed.run", "--standalone",
                  "--nproc_per_node", "2", "-m", "fisc.cli", "extract", "--checkpoint", ckpt,
                  "--images", R, "--split", "reference", "--out", "ev/r_sharded.h5",
                  "--workers", "0", "--batch-size", "1")  # fmt: skip
    one, sharded = read_h5(installed.work / "ev" / "r.h5"), read_h5(
        installed.work / "ev" / "r_sharded.h5")  # fmt: skip
    assert sharded[0] == one[0]
    np.testing.assert_array_equal(sharded[1], one[1])

    pair = ["--query", "ev/q.h5", "--reference", "ev/r.h5", "--gt", PHASE2_GT]
    installed.fisc("evaluate", *pair, "--json", "ev/eval.json", "--write-predictions",
                   "ev/preds.csv", "--report", "ev/report",
                   "--images", Q, "--images", R)  # fmt: skip
    installed.fisc("evaluate", "--predictions", "ev/preds.csv", "--gt", PHASE2_GT, "--json",
                   "ev/preds.json")  # fmt: skip
    scored = json.loads((installed.work / "ev" / "eval.json").read_text())
    again = json.loads((installed.work / "ev" / "preds.json").read_text())
    for metric in ("micro_ap", "recall_at_p90"):
        assert again[metric] == pytest.approx(scored[metric], abs=1e-12), metric
    assert again["source"] == "predictions" and 0.0 <= scored["micro_ap"] <= 1.0
    report = installed.work / "ev" / "report"
    assert {"results.json", "results.md", "pr_curve.png", "gallery.html"} <= {
        p.name for p in report.iterdir()}  # fmt: skip

    installed.fisc("evaluate", *pair, "--train", "ev/t.h5", "--postprocess", "l2",
                   "--postprocess", "center,pca8,l2", "--json", "ev/sweep.json")  # fmt: skip
    sweep = json.loads((installed.work / "ev" / "sweep.json").read_text())
    assert [(r["spec"], r["dims"]) for r in sweep] == [("l2", 256), ("center,pca8,l2", 8)]
    out = installed.fisc("evaluate", *pair, "--protocol", "isc2021")
    assert "isc2021" in out


@pytest.fixture(scope="module")
def exported(installed, trained) -> dict[str, Path]:
    """``fisc freeze`` of the smoke run (its fitted post-processor), ``fisc export-runtime``,
    then ``fisc export-phase1`` and ``fisc export-phase2`` on the packaged export config."""
    ckpt = str(trained / "checkpoints" / "last.ckpt")
    installed.fisc("freeze", "--checkpoint", ckpt, "--out", "export/artifact")
    installed.fisc("export-runtime", "export/artifact", "--out", "export/rt", "--format",
                   "torchscript")  # fmt: skip
    settings = ["--set", f"checkpoint={ckpt}", "--set", "artifact=export/artifact",
                "--set", "data_root=data/mini", "--set", "phase1_dir=export/phase1",
                "--set", "phase2_submission=export/phase2/sub.h5", "--set",
                "runtime_dir=export/runtime", "--set", "runtime_formats=[torchscript]"]  # fmt: skip
    installed.fisc("export-phase1", *settings)
    summary = installed.fisc("export-phase2", *settings)
    w = installed.work / "export"
    return {"artifact": w / "artifact", "runtime": w / "rt", "phase1": w / "phase1",
            "phase2": w / "phase2" / "sub.h5", "summary": summary}  # fmt: skip


@pytest.mark.slow
def test_installed_freeze_export_and_validate(installed, trained, exported):
    """Its default --config is the packaged conf/export.yaml."""
    artifact = exported["artifact"]
    assert {"model.safetensors", "postprocess.npz", "model_card.json", "MANIFEST.sha256"} <= {
        p.name for p in artifact.iterdir()}  # fmt: skip
    card = json.loads((artifact / "model_card.json").read_text())
    assert "pca_whiten8,l2" in json.dumps(card)
    assert (exported["runtime"] / "descriptor.torchscript.pt").is_file()
    assert (exported["runtime"] / "runtime.json").is_file()
    assert (exported["phase1"] / "phase1.json").is_file()
    assert exported["phase2"].is_file(), exported["summary"]
    assert (installed.work / "export" / "runtime").is_dir() and "runtime" in exported["summary"]

    sub = str(exported["phase2"])
    assert "OK" in installed.fisc("validate-submission", sub, "--queries", PHASE2_GT)
    refused = installed.fails(str(installed.site / "bin" / "fisc"), "validate-submission", sub,
                              "--queries", "data/mini/dev_ground_truth.csv")  # fmt: skip
    assert "INVALID" in refused.stdout  # Phase 2's queries are not the dev split's
    installed.fisc("evaluate", "--submission", sub, "--gt", PHASE2_GT, "--json", "export/p2.json")
    scored = json.loads((installed.work / "export" / "p2.json").read_text())
    assert scored["n_queries"] == 12 and 0.0 <= scored["micro_ap"] <= 1.0

    ckpt = str(trained / "checkpoints" / "last.ckpt")
    installed.fisc("fit-postprocess", "--checkpoint", ckpt, "--train-images", T,
                   "--spec", "center,l2", "--out", "export/center.npz")  # fmt: skip
    fitted = np.load(installed.work / "export" / "center.npz")
    assert fitted.files, "an empty post-processor file"


API = """
import json, os, sys
import numpy as np
import fisc

source, queries, references, gt, out = sys.argv[1:6]
pipeline = fisc.load(source) if not source.endswith(".ckpt") else fisc.load(source,
                                                                            postprocess="run")
q = pipeline.queries(fisc.list_images(queries))
r = pipeline.references(fisc.list_images(references))
os.makedirs(os.path.dirname(out), exist_ok=True)
np.save(out + "_q.npy", q.vectors)
result = fisc.evaluate(q, r, gt=gt)
print(json.dumps({"fisc": fisc.__file__, "ids": [str(i) for i in q.ids],
                  "micro_ap": result.micro_ap, "recall_at_p90": result.recall_at_p90}))
"""


@pytest.mark.slow
def test_installed_python_api(installed, trained, exported):
    """``fisc.load`` (artifact; checkpoint + its run's post-processor), ``fisc.list_images``
    and ``fisc.evaluate`` give what ``fisc extract`` and ``fisc evaluate`` give."""
    ckpt = str(trained / "checkpoints" / "last.ckpt")
    for name, source, cli in (
        ("artifact", str(exported["artifact"]), ["--artifact", str(exported["artifact"])]),
        ("checkpoint", ckpt, ["--checkpoint", ckpt, "--postprocess", "run"]),
    ):
        got = installed.python(API, source, Q, R, PHASE2_GT, f"api/{name}")
        assert Path(got["fisc"]).is_relative_to(installed.site)
        scored = installed.extract_and_evaluate(cli, f"api/{name}")
        ids, vectors = read_h5(installed.work / "api" / f"{name}_query.h5")
        assert got["ids"] == ids
        np.testing.assert_array_equal(np.load(installed.work / "api" / f"{name}_q.npy"), vectors)
        assert got["micro_ap"] == scored["micro_ap"], name
        assert got["recall_at_p90"] == scored["recall_at_p90"], name


@pytest.mark.slow
def test_installed_augment_gallery(installed):
    """Every packaged augment pipeline (none given: all of conf/augment)."""
    out = installed.fisc("augment-gallery", "--out", "gallery")
    assert (installed.work / "gallery" / "augment_pipelines.png").stat().st_size > 0, out
    assert (installed.work / "gallery" / "augment_ops.png").stat().st_size > 0, out
    assert "usage" in installed.run(sys.executable, "-m", "fisc.cli", "--help")
