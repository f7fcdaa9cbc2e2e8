"""The inference contract (fisc.inference): one pipeline from a run to the submission.

What is evaluated is what is exported: a run fits its recipe's post-processor, freeze ships it,
Phase 1 / Phase 2 and the runtimes apply it per role, and the checks cover the final vectors.
"""

from __future__ import annotations

import dataclasses
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from helpers.config import REPO, tiny_overrides

from fisc.cli import main as cli
from fisc.data.disc21 import Disc21, list_images
from fisc.descriptors.h5io import read_submission, read_vectors
from fisc.inference import (
    DescriptorPipeline,
    fit_run_postprocessor,
    resolve_preprocess,
    run_postprocess_path,
)
from fisc.postprocess.spec import PostProcessor

SPEC = "pca8,l2,stretch3:2.5"  # role-dependent: queries and references differ


@pytest.fixture(scope="module")
def run_checkpoint(tmp_path_factory):
    """A run folder as training leaves it: ``config.yaml`` naming the recipe's spec and
    ``checkpoints/last.ckpt`` (resnet18, 16-d, 32 px, seeded random weights)."""
    from fisc.models.descriptor import ModelConfig, build_descriptor_model

    torch.manual_seed(0)
    cfg = ModelConfig(name="resnet18", dims=16, eval_size=32)
    run = tmp_path_factory.mktemp("run")
    (run / "checkpoints").mkdir()
    (run / "config.yaml").write_text(f"postprocess: {SPEC}\n")
    path = run / "checkpoints" / "last.ckpt"
    torch.save(
        {
            "hyper_parameters": {"model": dataclasses.asdict(cfg)},
            "state_dict": {
                "model." + k: v for k, v in build_descriptor_model(cfg).state_dict().items()
            },
        },
        path,
    )
    return path


@pytest.fixture(scope="module")
def fitted_run(run_checkpoint, tiny_minidisc):
    """The run's post-processor fitted beside its checkpoint (as fisc fit-postprocess does)."""
    train = list_images(tiny_minidisc / "images" / "training")
    fit_run_postprocessor(run_checkpoint, train, num_workers=0)
    return run_checkpoint


def _copy_run(checkpoint: Path, dst: Path) -> Path:
    shutil.copytree(checkpoint.parent.parent, dst)
    return dst / "checkpoints" / checkpoint.name


def _train_on(checkpoint: Path) -> None:
    """Change the checkpoint's weights in place, as further training would."""
    state = torch.load(checkpoint, weights_only=True)
    key = next(k for k in state["state_dict"] if k.endswith("projection.bias"))
    state["state_dict"][key] = state["state_dict"][key] + 0.1
    torch.save(state, checkpoint)


def _export_config(tmp_path: Path, root: Path, **over):
    from fisc.export.phase2 import ExportConfig

    paths = dict(phase1_dir=str(tmp_path / "phase1"), phase2_submission=str(tmp_path / "sub.h5"))
    base = dict(artifact=str(tmp_path / "art"), data_root=str(root), num_workers=0, **paths)
    base |= dict(phase1_queries="dev_ground_truth.csv", phase2_queries="phase2_ground_truth.csv")
    return ExportConfig(**{**base, **over})


# --- the pipeline ------------------------------------------------------------------------------


def test_pipeline_roles_apply_the_fitted_postprocessor(fitted_run, tiny_minidisc):
    data = Disc21(tiny_minidisc)
    refs, train = data.images("reference"), data.images("training")
    raw = DescriptorPipeline.from_checkpoint(fitted_run)
    post = DescriptorPipeline.from_checkpoint(fitted_run, postprocess="run")
    assert raw.postprocessor is None and post.postprocess_spec == SPEC and post.dims == 9
    # independent expectation: fit the same spec by hand on per-image training descriptors
    t, _ = raw.raw(train, per_image=True)
    by_hand = PostProcessor(SPEC).fit(t)
    r, _ = raw.raw(refs, per_image=True)
    for role in ("query", "reference"):
        got, _ = post.describe(refs, role, per_image=True)
        want = by_hand.transform(r, role=role)
        np.testing.assert_array_equal(got.vectors, want.vectors)
        assert got.ids.tolist() == list(refs.ids)
    q = post.queries(refs, per_image=True).vectors
    ref = post.references(refs, per_image=True).vectors
    assert not np.array_equal(q, ref)  # stretch: the roles differ
    np.testing.assert_allclose(ref[:, -1], 0.0)  # references get a zero coordinate
    with pytest.raises(ValueError, match="role must be one of"):
        post.describe(refs, "training")


def test_fit_record_names_checkpoint_and_fit_set(fitted_run, tiny_minidisc):
    from fisc.postprocess.spec import ids_digest
    from fisc.provenance import sha256_of

    pp = PostProcessor.load(run_postprocess_path(fitted_run))
    train = list_images(tiny_minidisc / "images" / "training")
    assert pp.fit_set["count"] == len(train) == 24
    assert pp.fit_set["ids_sha256"] == ids_digest(train.ids)
    assert pp.fit_set["checkpoint_sha256"] == sha256_of(fitted_run)
    summary = json.loads(run_postprocess_path(fitted_run).with_suffix(".json").read_text())
    assert summary["spec"] == SPEC and summary["dims"] == 9


def test_postprocessor_of_another_checkpoint_is_refused(fitted_run, tmp_path):
    ckpt = _copy_run(fitted_run, tmp_path / "run")
    _train_on(ckpt)
    with pytest.raises(ValueError, match="fitted on another checkpoint"):
        DescriptorPipeline.from_checkpoint(ckpt, postprocess="run")
    from fisc.export.freeze import freeze

    with pytest.raises(ValueError, match="fitted on another checkpoint"):
        freeze(ckpt, tmp_path / "art")
    assert not (tmp_path / "art").exists()


# --- freeze ---------------------------------------------------------------------------------


def test_freeze_takes_the_runs_postprocessor_by_default(fitted_run, tmp_path):
    from fisc.export.card import read_card
    from fisc.export.freeze import freeze
    from fisc.export.load import load_artifact

    art = freeze(fitted_run, tmp_path / "art")
    card = read_card(art)
    pp = card["postprocess"]
    assert pp["spec"] == SPEC and pp["dims"] == 9 and card["dims"] == 9
    assert pp["fit_set"]["count"] == 24 and len(pp["fit_set"]["ids_sha256"]) == 64
    assert card["golden"]["final"] == {
        "query": "golden_query.h5",
        "reference": "golden_reference.h5",
    }
    assert card["preprocess"]["eval_size"] == 32
    pipeline = load_artifact(art)
    assert pipeline.postprocess_spec == SPEC
    golden_q = read_vectors(art / "golden_query.h5")
    golden_r = read_vectors(art / "golden_reference.h5")
    assert golden_q.vectors.shape == golden_r.vectors.shape == (8, 9)
    assert not np.array_equal(golden_q.vectors, golden_r.vectors)
    # --no-postprocess: the raw model, no final golden files
    assert cli(["freeze", "--checkpoint", str(fitted_run), "--out", str(tmp_path / "raw"),
                "--no-postprocess"]) == 0  # fmt: skip
    assert read_card(tmp_path / "raw")["postprocess"] is None
    assert not (tmp_path / "raw" / "golden_query.h5").exists()


def test_freeze_refuses_a_run_whose_recipe_postprocesses_without_a_fit(run_checkpoint, tmp_path):
    from fisc.export.artifact import ArtifactError
    from fisc.export.freeze import freeze

    ckpt = _copy_run(run_checkpoint, tmp_path / "run")
    run_postprocess_path(ckpt).unlink(missing_ok=True)
    run_postprocess_path(ckpt).with_suffix(".json").unlink(missing_ok=True)
    with pytest.raises(ArtifactError, match="fit-postprocess.*--no-postprocess"):
        freeze(ckpt, tmp_path / "art")
    assert not (tmp_path / "art").exists()


def _tamper_postprocessor(path: Path) -> None:
    """Shift the PCA mean in a fitted .npz: a valid file, other final descriptors."""
    with np.load(path, allow_pickle=False) as z:
        arrays = {k: z[k] for k in z.files}
    arrays["0/mean"] = arrays["0/mean"] + 0.05
    with open(path, "wb") as f:
        np.savez(f, **arrays)


def test_golden_check_fails_on_a_tampered_postprocessor(fitted_run, tmp_path):
    from fisc.export.artifact import ArtifactError
    from fisc.export.freeze import freeze
    from fisc.export.load import load_artifact
    from fisc.export.manifest import write_manifest

    art = freeze(fitted_run, tmp_path / "art")
    _tamper_postprocessor(art / "postprocess.npz")
    with pytest.raises(ArtifactError, match=r"postprocess\.npz: sha256 differs"):
        load_artifact(art)
    write_manifest(art)  # a consistent manifest: only the golden check can catch it now
    with pytest.raises(ArtifactError, match=r"golden descriptors differ from golden_query\.h5"):
        load_artifact(art)


def test_phase2_reference_recheck_fails_on_a_tampered_postprocessor(
    fitted_run, tiny_minidisc, tmp_path
):
    from fisc.export.freeze import freeze
    from fisc.export.load import load_artifact
    from fisc.export.phase2 import ExportError, export_phase1, recheck_references

    art = freeze(fitted_run, tmp_path / "art")
    ec = _export_config(tmp_path, tiny_minidisc, checkpoint=None, artifact=str(art))
    export_phase1(ec)
    refs = read_vectors(tmp_path / "phase1" / "references.h5")
    assert refs.vectors.shape == (16, 9)  # Phase 1 references are final descriptors
    references = Disc21(tiny_minidisc).images("reference")
    sample = np.arange(len(refs.ids))
    pipeline = load_artifact(art)
    assert recheck_references(pipeline, references, refs, sample, ec) == 0.0
    bad = tmp_path / "bad.npz"
    shutil.copyfile(art / "postprocess.npz", bad)
    _tamper_postprocessor(bad)
    tampered = pipeline.with_postprocessor(PostProcessor.load(bad))
    with pytest.raises(ExportError, match="recomputed reference descriptors differ"):
        recheck_references(tampered, references, refs, sample, ec)
    raw = pipeline.with_postprocessor(None)  # the model's raw output is not what was shipped
    with pytest.raises(ExportError, match="shape"):
        recheck_references(raw, references, refs, sample, ec)


# --- runtimes -------------------------------------------------------------------------------


def test_runtime_exports_match_the_eager_pipeline_in_both_roles(fitted_run, tmp_path):
    import fisc.export.runtime as runtime
    from fisc.export.freeze import freeze
    from fisc.export.load import load_artifact

    art = freeze(fitted_run, tmp_path / "art")
    card = runtime.export_runtimes(art, tmp_path / "rt")
    assert card["postprocess"]["spec"] == SPEC
    assert (tmp_path / "rt" / "postprocess.npz").is_file()
    pipeline = load_artifact(art)
    probe = list_images(art / "probe")
    batch = runtime.probe_batch(pipeline, art / "probe", 32, 32)
    for fmt, e in card["exports"].items():
        assert {c.get("role") for c in e["checks"]} == {None, "query", "reference"}
        loaded = runtime.load_runtime_pipeline(tmp_path / "rt", fmt)
        for role in ("query", "reference"):
            want, _ = pipeline.describe(probe, role, per_image=True)
            got = loaded(batch, role)
            assert got.shape == (8, 9)
            np.testing.assert_allclose(got, want.vectors, atol=1e-5, err_msg=f"{fmt} {role}")

    # a runtime that dropped the role (queries post-processed as references) is refused
    def one_role(self, images, role):
        return self.postprocessor.transform_array(np.asarray(self.run(images)), role="reference")

    original = runtime.RuntimePipeline.__call__
    runtime.RuntimePipeline.__call__ = one_role
    try:
        with pytest.raises(runtime.RuntimeExportError, match="'role': 'query'") as err:
            runtime.export_runtimes(art, tmp_path / "rt2", ["torchscript"])
        assert "at 3 of 9 checks" in str(err.value)  # the three query-role rows, no others
    finally:
        runtime.RuntimePipeline.__call__ = original
    assert not (tmp_path / "rt2").exists()


# --- one place builds the transform ------------------------------------------------------------


def _transform_reads(source: str) -> list[tuple[int, str]]:
    """Code (not comments or strings) that reads ``eval_size``/``mean``/``std`` as attributes
    (not ``.mean()`` calls), indexes ``["eval_size"]``, or builds a transform by hand."""
    import ast

    tree = ast.parse(source)
    called = {id(n.func) for n in ast.walk(tree) if isinstance(n, ast.Call)}
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Attribute) and node.attr in ("eval_size", "mean", "std"):
            if id(node) not in called:
                found.append((node.lineno, f".{node.attr}"))
        elif isinstance(node, ast.Subscript) and isinstance(node.slice, ast.Constant):
            if node.slice.value == "eval_size":
                found.append((node.lineno, '["eval_size"]'))
        elif isinstance(node, ast.Call):
            f = node.func
            name = f.id if isinstance(f, ast.Name) else getattr(f, "attr", None)
            if name in ("Preprocess", "normalise", "eval_tensor"):
                found.append((node.lineno, f"{name}(...)"))
    return sorted(found)


def test_no_transform_is_built_outside_the_pipeline():
    """``eval_size``, ``mean`` and ``std`` of a model config are read, and a transform is built,
    only in fisc/data/preprocess.py (``resolve_preprocess``, and the
    transform itself); the model config defines them."""
    allowed = {"fisc/inference.py", "fisc/data/preprocess.py", "fisc/models/descriptor.py"}
    offenders = []
    for folder in ("fisc", "experiments", "benchmarks"):
        for path in sorted((REPO / folder).rglob("*.py")):
            rel = path.relative_to(REPO).as_posix()
            if rel not in allowed:
                offenders += [
                    f"{rel}:{n}: {what}" for n, what in _transform_reads(path.read_text())
                ]
    assert offenders == []
    # the check itself sees what it should, and not .mean() calls or strings
    hits = _transform_reads(
        "x = cfg.eval_size\ny = Preprocess(8, m.mean, m.std)\nz = a.mean()\nw = d['eval_size']\n"
        "s = 'cfg.eval_size'\n"
    )
    assert [w for _, w in hits] == [".eval_size", ".mean", ".std", "Preprocess(...)",
                                    '["eval_size"]']  # fmt: skip


def test_resolve_preprocess_follows_the_model_config():
    from fisc.models.descriptor import ModelConfig

    cfg = ModelConfig(eval_size=48, mean=[0.5, 0.4, 0.3], std=[0.2, 0.2, 0.2])
    prep = resolve_preprocess(cfg)
    assert (prep.size, prep.mean, prep.std) == (48, (0.5, 0.4, 0.3), (0.2, 0.2, 0.2))
    assert resolve_preprocess(cfg, size=64).size == 64
    from PIL import Image

    img = Image.new("RGB", (10, 20), (255, 0, 51))
    x = prep(img)
    assert x.shape == (3, 48, 48)
    np.testing.assert_allclose(x[:, 0, 0].numpy(), [(1 - 0.5) / 0.2, -0.4 / 0.2, (0.2 - 0.3) / 0.2],
                               rtol=1e-6)  # fmt: skip


# --- extract: every demo row from the CLI ---------------------------------------------------------


def test_extract_reproduces_artifact_baselines_and_postprocessed_rows(
    fitted_run, tiny_minidisc, tmp_path
):
    from fisc.baselines.phash import phash_descriptors
    from fisc.baselines.untrained import untrained_pipeline
    from fisc.export.freeze import freeze
    from fisc.export.load import load_artifact

    refs_dir = tiny_minidisc / "images" / "reference"
    refs = list_images(refs_dir)
    art = freeze(fitted_run, tmp_path / "art")
    common = ["--images", str(refs_dir), "--workers", "0", "--device", "cpu"]
    assert cli(["extract", "--artifact", str(art), "--role", "query", *common,
                "--out", str(tmp_path / "a.h5")]) == 0  # fmt: skip
    want = load_artifact(art).queries(refs)
    got = read_vectors(tmp_path / "a.h5")
    np.testing.assert_allclose(got.vectors, want.vectors, atol=1e-6)
    assert got.vectors.shape == (16, 9)
    # a role-dependent post-processor needs a role
    assert cli(["extract", "--artifact", str(art), *common, "--out", str(tmp_path / "b.h5")]) == 2
    # the run's post-processor on a checkpoint, as reference (split gives the role)
    assert cli(["extract", "--checkpoint", str(fitted_run), "--postprocess", "run",
                "--split", "reference", *common, "--out", str(tmp_path / "c.h5")]) == 0  # fmt: skip
    np.testing.assert_allclose(
        read_vectors(tmp_path / "c.h5").vectors, load_artifact(art).references(refs).vectors,
        atol=1e-6,
    )  # fmt: skip
    # baselines: untrained backbone (seeded projection) and pHash
    assert cli(["extract", "--checkpoint", str(fitted_run), "--baseline", "untrained",
                "--seed", "3", *common, "--out", str(tmp_path / "u.h5")]) == 0  # fmt: skip
    model_cfg = DescriptorPipeline.from_checkpoint(fitted_run).model_cfg
    expected = untrained_pipeline(model_cfg, seed=3).references(refs)
    np.testing.assert_allclose(read_vectors(tmp_path / "u.h5").vectors, expected.vectors, atol=1e-6)
    assert cli(["extract", "--baseline", "phash", *common, "--out", str(tmp_path / "p.h5")]) == 0
    np.testing.assert_array_equal(
        read_vectors(tmp_path / "p.h5").vectors, phash_descriptors(refs, progress=False).vectors
    )


def test_fit_postprocess_cli_writes_beside_the_checkpoint(run_checkpoint, tiny_minidisc, tmp_path):
    ckpt = _copy_run(run_checkpoint, tmp_path / "run")
    run_postprocess_path(ckpt).unlink(missing_ok=True)
    train = str(tiny_minidisc / "images" / "training")
    args = ["fit-postprocess", "--checkpoint", str(ckpt), "--train-images", train,
            "--workers", "0"]  # fmt: skip
    assert cli(args) == 0
    pp = PostProcessor.load(run_postprocess_path(ckpt))
    assert pp.spec == SPEC and pp.fit_set["count"] == 24  # the run's recipe spec by default
    assert cli(args) == 2  # exists: not refitted without --overwrite
    assert cli([*args, "--spec", "pca4,l2", "--overwrite"]) == 0
    assert PostProcessor.load(run_postprocess_path(ckpt)).dims == 4


# --- from a training run to the submission ---------------------------------------------------


@pytest.fixture(scope="module")
def trained_run(tiny_minidisc, tmp_path_factory):
    """A tiny training run whose recipe post-processes with query stretching."""
    from hydra import compose, initialize_config_dir

    from fisc.train.run import train

    out = tmp_path_factory.mktemp("trained")
    with initialize_config_dir(str(REPO / "conf"), version_base="1.3"):
        cfg = compose(
            "train",
            overrides=[
                "experiment=isc3rd_mini",
                *tiny_overrides(tiny_minidisc),
                f"run_dir={out / 'run'}",
                f"postprocess='{SPEC}'",
                "trainer.limit_train_batches=2",
                "logger.media=false",
            ],
        )
    return train(cfg)


def test_training_fits_the_recipes_postprocessor(trained_run):
    pp = trained_run.postprocess
    assert pp is not None and pp["spec"] == SPEC and pp["fit_set"]["count"] == 24
    assert Path(pp["file"]) == run_postprocess_path(trained_run.last_checkpoint)
    saved = json.loads((Path(trained_run.run_dir) / "train_result.json").read_text())
    assert saved["postprocess"]["file"] == pp["file"]
    DescriptorPipeline.from_checkpoint(trained_run.last_checkpoint, postprocess="run")


def test_exported_submission_scores_as_the_evaluated_postprocessing(
    trained_run, tiny_minidisc, tmp_path
):
    """Train -> freeze -> export-phase2 -> evaluate --submission gives the μAP of
    evaluate --train --postprocess SPEC on descriptors of the same checkpoint, not the raw one."""
    ckpt = trained_run.last_checkpoint
    gt = str(tiny_minidisc / "phase2_ground_truth.csv")
    images = tiny_minidisc / "images"
    art = tmp_path / "artifact"
    assert cli(["freeze", "--checkpoint", ckpt, "--out", str(art)]) == 0
    sets = [f"artifact={art}", f"data_root={tiny_minidisc}", f"phase1_dir={tmp_path / 'p1'}",
            f"phase2_submission={tmp_path / 'p2.h5'}", "runtime_formats=[]", "num_workers=0",
            "checkpoint=null"]  # fmt: skip
    conf = str(REPO / "conf" / "export.yaml")
    assert cli(["export-phase2", "--config", conf, *[a for s in sets for a in ("--set", s)]]) == 0
    q, r = read_submission(tmp_path / "p2.h5")
    assert q.vectors.shape[1] == r.vectors.shape[1] == 9
    # the submitted vectors are the run's pipeline in each role, bit for bit
    run_pipeline = DescriptorPipeline.from_checkpoint(ckpt, postprocess="run")
    data = Disc21(tiny_minidisc)
    want_q = run_pipeline.queries(data.images("query").subset(q.ids), per_image=True)
    np.testing.assert_array_equal(q.vectors, want_q.vectors)
    want_r = run_pipeline.references(data.images("reference"), per_image=True)
    np.testing.assert_array_equal(r.vectors, want_r.vectors)
    assert cli(["evaluate", "--submission", str(tmp_path / "p2.h5"), "--gt", gt,
                "--json", str(tmp_path / "sub.json")]) == 0  # fmt: skip
    shipped = json.loads((tmp_path / "sub.json").read_text())["micro_ap"]

    def extract(split, out, *extra):
        assert cli(["extract", "--checkpoint", ckpt, "--images", str(images / split),
                    "--split", split, "--out", str(tmp_path / out), "--batch-size", "1",
                    "--workers", "0", "--device", "cpu", *extra]) == 0  # fmt: skip

    extract("query", "q.h5", "--gt", gt)
    extract("reference", "r.h5")
    extract("training", "t.h5")
    pair = ["--query", str(tmp_path / "q.h5"), "--reference", str(tmp_path / "r.h5"), "--gt", gt]
    assert cli(["evaluate", *pair, "--train", str(tmp_path / "t.h5"), "--postprocess", SPEC,
                "--json", str(tmp_path / "sweep.json")]) == 0  # fmt: skip
    evaluated = json.loads((tmp_path / "sweep.json").read_text())[0]["micro_ap"]
    assert cli(["evaluate", *pair, "--json", str(tmp_path / "raw.json")]) == 0
    raw = json.loads((tmp_path / "raw.json").read_text())["micro_ap"]
    assert abs(shipped - evaluated) <= 1e-6, (shipped, evaluated, raw)
    assert abs(shipped - raw) > 1e-6, (shipped, evaluated, raw)


def test_relaunch_reuses_the_fit_and_a_new_spec_refits(trained_run, tiny_minidisc, tmp_path):
    from hydra import compose, initialize_config_dir

    from fisc.train.postprocessing import fit_postprocess

    run = _copy_run(Path(trained_run.last_checkpoint), tmp_path / "run")
    fitted = run_postprocess_path(run)
    stamp = fitted.stat().st_mtime_ns
    with initialize_config_dir(str(REPO / "conf"), version_base="1.3"):
        cfg = compose("train", overrides=[*tiny_overrides(tiny_minidisc), f"postprocess='{SPEC}'"])
    from fisc.train.config import check_config

    groups = check_config(cfg)
    assert fit_postprocess(cfg, groups, str(run))["spec"] == SPEC
    assert fitted.stat().st_mtime_ns == stamp  # same spec, same checkpoint: not refitted
    cfg.postprocess = "pca4,l2"
    assert fit_postprocess(cfg, groups, str(run))["dims"] == 4
    assert PostProcessor.load(fitted).spec == "pca4,l2"


def test_a_spec_the_training_split_cannot_fit_stops_at_start_up(compose_cfg, tiny_minidisc):
    from fisc.train.config import ConfigError, check_config
    from fisc.train.run import train

    cfg = compose_cfg(*tiny_overrides(tiny_minidisc), "postprocess='pca_whiten64,l2'")
    with pytest.raises(ConfigError, match="needs at least 65 training images; the data has 24"):
        train(cfg)
    assert not (Path(cfg.run_dir) / "checkpoints").exists()  # nothing trained
    wide = compose_cfg(*tiny_overrides(tiny_minidisc), "model.dims=16", "postprocess='pca20,l2'")
    with pytest.raises(ConfigError, match="pca20 cannot give more dims than its 16-d input"):
        check_config(wide)


def test_evaluate_refuses_to_postprocess_twice(fitted_run, tiny_minidisc, tmp_path, capsys):
    images = tiny_minidisc / "images"
    gt = str(tiny_minidisc / "dev_ground_truth.csv")
    common = ["--workers", "0", "--device", "cpu", "--postprocess", "run"]
    for split, extra in (
        ("query", ["--gt", gt]),
        ("reference", []),
        ("training", ["--role", "reference"]),
    ):
        assert cli(["extract", "--checkpoint", str(fitted_run), "--images", str(images / split),
                    "--split", split, "--out", str(tmp_path / f"{split}.h5"), *common,
                    *extra]) == 0  # fmt: skip
    rc = cli(["evaluate", "--query", str(tmp_path / "query.h5"), "--reference",
              str(tmp_path / "reference.h5"), "--gt", gt, "--train", str(tmp_path / "training.h5"),
              "--postprocess", "l2"])  # fmt: skip
    assert rc == 2
    assert "already post-processed with 'pca8,l2,stretch3:2.5'" in capsys.readouterr().err
    # without --postprocess the final descriptors score as they are
    assert cli(["evaluate", "--query", str(tmp_path / "query.h5"), "--reference",
                str(tmp_path / "reference.h5"), "--gt", gt]) == 0  # fmt: skip


def test_export_refuses_an_artifact_of_another_checkpoint(fitted_run, tiny_minidisc, tmp_path):
    from fisc.export.phase2 import ExportError, run_export

    ckpt = _copy_run(fitted_run, tmp_path / "run")
    ec = _export_config(tmp_path, tiny_minidisc, checkpoint=str(ckpt))
    run_export(ec)
    _train_on(ckpt)
    ec.phase2_submission = str(tmp_path / "sub2.h5")
    with pytest.raises(ExportError, match="frozen from another checkpoint"):
        run_export(ec)
    assert not (tmp_path / "sub2.h5").exists()
