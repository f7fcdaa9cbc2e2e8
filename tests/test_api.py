"""The Python API (``fisc.load``, ``fisc.evaluate``), the torch.hub entry point and what an
artifact's ``model.safetensors`` says about itself.

Each result is compared with what the ``fisc`` command (or the pipeline it runs) gives for the
same input, so the API can only be a second door to the same path, never a second path.
"""

from __future__ import annotations

import dataclasses
import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from helpers.config import REPO

import fisc
from fisc.cli import main as cli
from fisc.data.disc21 import list_images
from fisc.descriptors import Descriptors
from fisc.descriptors.h5io import read_vectors, write_submission, write_vectors
from fisc.inference import DescriptorPipeline, fit_run_postprocessor

SPEC = "pca8,l2,stretch3:2.5"  # role-dependent: queries and references differ


@pytest.fixture(scope="module")
def run_ckpt(tmp_path_factory, tiny_minidisc):
    """A run as training leaves it (resnet18, 16-d, 32 px, seeded random weights), with its
    recipe's post-processor fitted beside the checkpoint."""
    from fisc.models.descriptor import ModelConfig, build_descriptor_model

    torch.manual_seed(0)
    cfg = ModelConfig(name="resnet18", dims=16, eval_size=32)
    run = tmp_path_factory.mktemp("run")
    (run / "checkpoints").mkdir()
    (run / "config.yaml").write_text(f"postprocess: {SPEC}\n")
    path = run / "checkpoints" / "last.ckpt"
    state = build_descriptor_model(cfg).state_dict()
    torch.save(
        {
            "hyper_parameters": {"model": dataclasses.asdict(cfg)},
            "state_dict": {"model." + k: v for k, v in state.items()},
        },
        path,
    )
    fit_run_postprocessor(path, list_images(tiny_minidisc / "images" / "training"), num_workers=0)
    return path


@pytest.fixture(scope="module")
def artifact(run_ckpt, tmp_path_factory):
    from fisc.export.freeze import freeze

    return freeze(run_ckpt, tmp_path_factory.mktemp("art") / "artifact")


@pytest.fixture(scope="module")
def refs(tiny_minidisc):
    return list_images(tiny_minidisc / "images" / "reference")


def _extract(tmp_path, name, *source):
    out = tmp_path / f"{name}.h5"
    assert cli(["extract", *source, "--workers", "0", "--device", "cpu", "--out", str(out)]) == 0
    return read_vectors(out)


# --- import fisc stays cheap --------------------------------------------------------------------

PROBE = """
import sys
import fisc
heavy = ("torch", "timm", "numpy", "pytorch_lightning", "cv2")
print("IMPORT", sorted(m for m in heavy if m in sys.modules))
names = (fisc.load, fisc.evaluate, fisc.__version__)
print("ATTRIBUTES", sorted(m for m in heavy if m in sys.modules))
"""


def test_import_fisc_loads_no_torch_until_used():
    out = subprocess.run([sys.executable, "-c", PROBE], cwd=REPO, capture_output=True,
                         text=True, check=True).stdout.splitlines()  # fmt: skip
    # neither importing fisc nor looking up its API functions loads torch: calling them does
    assert out == ["IMPORT []", "ATTRIBUTES []"]


def test_lazy_names_are_the_modules_own():
    from fisc.evaluation import EvalResult
    from fisc.inference import DescriptorPipeline as Pipeline

    assert fisc.DescriptorPipeline is Pipeline and fisc.EvalResult is EvalResult
    assert fisc.list_images is list_images and fisc.Descriptors is Descriptors
    assert {"load", "evaluate", "list_images"} <= set(dir(fisc)) and set(fisc.__all__) <= set(
        dir(fisc)
    )
    with pytest.raises(AttributeError, match="no attribute 'nope'"):
        fisc.nope  # noqa: B018


# --- fisc.load: the pipeline fisc extract runs --------------------------------------------------


def test_load_checkpoint_gives_the_cli_descriptors(run_ckpt, refs, tmp_path):
    images = ["--images", str(refs.paths[0].parent)]
    pipeline = fisc.load(run_ckpt)
    assert isinstance(pipeline, DescriptorPipeline) and pipeline.postprocessor is None
    got = pipeline.references(refs)
    cli_raw = _extract(tmp_path, "raw", "--checkpoint", str(run_ckpt), *images)
    assert got.ids.tolist() == cli_raw.ids.tolist() == list(refs.ids)
    np.testing.assert_array_equal(got.vectors, cli_raw.vectors)
    np.testing.assert_array_equal(
        got.vectors, DescriptorPipeline.from_checkpoint(run_ckpt).references(refs).vectors
    )
    # the run's post-processor, in the query role
    post = fisc.load(run_ckpt, postprocess="run")
    assert post.postprocess_spec == SPEC and post.dims == 9
    cli_post = _extract(tmp_path, "post", "--checkpoint", str(run_ckpt), "--postprocess", "run",
                        "--role", "query", *images)  # fmt: skip
    np.testing.assert_array_equal(post.queries(refs).vectors, cli_post.vectors)
    # another eval size
    small = fisc.load(str(run_ckpt), size=24)
    assert small.preprocess.size == 24
    cli_small = _extract(tmp_path, "small", "--checkpoint", str(run_ckpt), "--size", "24", *images)
    np.testing.assert_array_equal(small.references(refs).vectors, cli_small.vectors)


def test_load_artifact_is_verified_and_ships_what_was_evaluated(artifact, run_ckpt, refs, tmp_path):
    from fisc.export.manifest import verify_manifest

    pipeline = fisc.load(artifact)
    assert pipeline.artifact_hash == verify_manifest(artifact)
    assert pipeline.postprocess_spec == SPEC and pipeline.preprocess.size == 32
    images = ["--images", str(refs.paths[0].parent)]
    cli_q = _extract(tmp_path, "q", "--artifact", str(artifact), "--role", "query", *images)
    np.testing.assert_array_equal(pipeline.queries(refs).vectors, cli_q.vectors)
    # the frozen artifact gives what the run's checkpoint + fitted post-processor gave
    evaluated = fisc.load(run_ckpt, postprocess="run")
    for role in ("query", "reference"):
        shipped, _ = pipeline.describe(refs, role)
        np.testing.assert_array_equal(shipped.vectors, evaluated.describe(refs, role)[0].vectors)


def test_extraction_runs_where_the_model_is(run_ckpt, refs, monkeypatch):
    import fisc.inference as inference

    seen = []
    monkeypatch.setattr(
        inference, "extract_descriptors", lambda *a, **kw: seen.append(kw["device"]) or (None, [])
    )
    pipeline = fisc.load(run_ckpt)
    assert pipeline.device == torch.device("cpu")
    pipeline.raw(refs)
    assert pipeline.to("meta") is pipeline and pipeline.device == torch.device("meta")
    pipeline.raw(refs)
    pipeline.raw(refs, device="cpu")  # an explicit device wins
    assert seen == [torch.device("cpu"), torch.device("meta"), "cpu"]


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_load_on_cuda_verifies_and_extracts_there(artifact, refs):
    from fisc.export.golden import GPU_GOLDEN_TOLERANCE

    pipeline = fisc.load(artifact, device="cuda")  # golden check on the GPU, GPU tolerance
    assert pipeline.device.type == "cuda"
    got = pipeline.references(refs)
    assert pipeline.device.type == "cuda"  # extraction did not move the model back
    want = fisc.load(artifact).references(refs)
    np.testing.assert_allclose(got.vectors, want.vectors, atol=GPU_GOLDEN_TOLERANCE)


def test_a_zero_byte_checkpoint_is_named_unreadable_not_an_index_error(tmp_path):
    """torch raises a bare EOFError (no message) on an empty file: the error still names the
    file, as for any truncated checkpoint."""
    from fisc.checkpoints import CorruptCheckpointError, load_checkpoint

    zero = tmp_path / "zero.ckpt"
    zero.write_bytes(b"")
    with pytest.raises(CorruptCheckpointError, match=r"zero\.ckpt is unreadable .*: EOFError$"):
        load_checkpoint(zero)


def test_load_refuses_what_it_cannot_load_and_says_why(artifact, run_ckpt, tmp_path):
    from fisc.checkpoints import CheckpointError, CorruptCheckpointError
    from fisc.export.artifact import ArtifactError

    with pytest.raises(FileNotFoundError, match=r"absent\.ckpt does not exist"):
        fisc.load(tmp_path / "absent.ckpt")
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(IsADirectoryError, match="is a folder, not a checkpoint file"):
        fisc.load(empty)
    run_dir = run_ckpt.parent.parent
    with pytest.raises(IsADirectoryError, match=r"it is a run folder, whose checkpoint is .*last"):
        fisc.load(run_dir)
    with pytest.raises(ValueError, match="model weights only.*load the artifact folder"):
        fisc.load(artifact / "model.safetensors")
    runtime = tmp_path / "runtime"
    runtime.mkdir()
    (runtime / "runtime.json").write_text("{}")
    (runtime / "MANIFEST.sha256").write_text("")
    with pytest.raises(ValueError, match="TorchScript/ONNX export"):
        fisc.load(runtime)
    text = tmp_path / "notes.txt"
    text.write_text("not a checkpoint")
    with pytest.raises(CheckpointError, match=r"checkpoint .*notes\.txt"):
        fisc.load(text)
    truncated = tmp_path / "truncated.ckpt"
    truncated.write_bytes(run_ckpt.read_bytes()[:4096])
    with pytest.raises(CorruptCheckpointError, match=r"truncated\.ckpt is unreadable"):
        fisc.load(truncated)
    plain = tmp_path / "plain.pt"
    torch.save({"weight": torch.zeros(2)}, plain)
    with pytest.raises(ValueError, match=r"plain\.pt is not a fisc training checkpoint"):
        fisc.load(plain)
    with pytest.raises(ValueError, match="an artifact is frozen"):
        fisc.load(artifact, postprocess="run")
    with pytest.raises(ValueError, match="give postprocess or size, not both"):
        fisc.load(run_ckpt, postprocess="run", size=24)
    tampered = tmp_path / "tampered"
    shutil.copytree(artifact, tampered)
    (tampered / "model_card.json").chmod(0o644)
    with open(tampered / "model_card.json", "a") as f:
        f.write(" ")
    with pytest.raises(ArtifactError, match=r"model_card\.json: sha256 differs"):
        fisc.load(tampered)
    no_manifest = tmp_path / "no_manifest"
    shutil.copytree(artifact, no_manifest)
    (no_manifest / "MANIFEST.sha256").unlink()
    with pytest.raises(ArtifactError, match=r"MANIFEST\.sha256: missing"):
        fisc.load(no_manifest)


# --- torch.hub ----------------------------------------------------------------------------------


def test_torch_hub_entry_is_fisc_load(artifact, run_ckpt, refs):
    hub = torch.hub.load(str(REPO), "fisc_descriptor", path=str(artifact), source="local")
    assert isinstance(hub, DescriptorPipeline)
    assert hub.artifact_hash == fisc.load(artifact).artifact_hash
    np.testing.assert_array_equal(
        hub.references(refs).vectors, fisc.load(artifact).references(refs).vectors
    )
    post = torch.hub.load(str(REPO), "fisc_descriptor", path=str(run_ckpt), postprocess="run",
                          source="local")  # fmt: skip
    np.testing.assert_array_equal(
        post.queries(refs).vectors, fisc.load(run_ckpt, postprocess="run").queries(refs).vectors
    )


# --- fisc.evaluate: the scoring fisc evaluate runs ----------------------------------------------


@pytest.fixture(scope="module")
def scored(tmp_path_factory):
    """Descriptor files of 6 queries (4 with a match) x 8 references, and their ground truth."""
    rng = np.random.default_rng(0)
    folder = tmp_path_factory.mktemp("scored")
    r_ids = np.array([f"R{i:06d}" for i in range(8)])
    q_ids = np.array([f"Q{i:05d}" for i in range(6)])
    r = rng.standard_normal((8, 16)).astype(np.float32)
    q = rng.standard_normal((6, 16)).astype(np.float32)
    q[:4] = r[[2, 5, 0, 7]] + 1.5 * rng.standard_normal((4, 16)).astype(np.float32)
    truth = {"Q00000": "R000002", "Q00001": "R000005", "Q00002": "R000000", "Q00003": "R000007",
             "Q00004": None, "Q00005": None}  # fmt: skip
    gt = folder / "gt.csv"
    gt.write_text("query_id,reference_id\n" + "".join(f"{k},{v or ''}\n" for k, v in truth.items()))
    queries, references = Descriptors(q_ids, q), Descriptors(r_ids, r)
    write_vectors(folder / "q.h5", queries)
    write_vectors(folder / "r.h5", references)
    write_submission(folder / "sub.h5", queries, references)
    return folder, queries, references, truth


def test_evaluate_returns_what_the_cli_scores(scored, tmp_path):
    folder, queries, references, truth = scored
    files = [str(folder / "q.h5"), str(folder / "r.h5")]
    gt = str(folder / "gt.csv")
    for protocol, extra in (("leaderboard", []), ("per_query", ["--k", "3"])):
        out = tmp_path / f"{protocol}.json"
        args = ["evaluate", "--query", files[0], "--reference", files[1], "--gt", gt]
        assert cli([*args, "--protocol", protocol, *extra, "--json", str(out)]) == 0
        want = json.loads(out.read_text())
        k = int(extra[1]) if extra else 10
        from_files = fisc.evaluate(*files, gt=gt, protocol=protocol, k=k)
        assert isinstance(from_files, fisc.EvalResult)
        assert dataclasses.asdict(from_files) == want
        in_memory = fisc.evaluate(queries, references, gt=truth, protocol=protocol, k=k)
        assert dataclasses.asdict(in_memory) == want
    submission = fisc.evaluate(submission=folder / "sub.h5", gt=gt)
    assert dataclasses.asdict(submission) == dataclasses.asdict(fisc.evaluate(*files, gt=gt))
    assert submission.n_gt_pairs == 4 and submission.n_queries == 6


def test_evaluate_scores_a_known_answer(scored):
    _, queries, references, truth = scored
    # every matching query is its reference exactly: each true pair comes first, at distance 0
    exact = queries.vectors.copy()
    exact[:4] = references.vectors[[2, 5, 0, 7]]
    result = fisc.evaluate(Descriptors(queries.ids, exact), references, gt=truth)
    assert result.micro_ap == pytest.approx(1.0)
    assert result.recall_at_1 == result.recall_at_10 == 1.0 and result.dims == 16


def test_evaluate_wants_one_kind_of_input(scored):
    folder, queries, references, truth = scored
    with pytest.raises(ValueError, match="not both"):
        fisc.evaluate(queries, references, gt=truth, submission=folder / "sub.h5")
    with pytest.raises(ValueError, match="both query descriptors and reference descriptors"):
        fisc.evaluate(queries, gt=truth)
    with pytest.raises(ValueError, match="malformed query ids"):
        ids = np.array([f"img{i}" for i in range(6)])
        fisc.evaluate(Descriptors(ids, queries.vectors), references, gt={}, disc_ids=True)


# --- what model.safetensors says about itself ---------------------------------------------------


def _metadata(path: Path) -> dict:
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as f:
        return f.metadata()


def test_weights_file_names_its_model_head_and_input(artifact, run_ckpt):
    from safetensors.torch import load_file

    meta = _metadata(artifact / "model.safetensors")
    assert meta["format"] == "pt" and meta["fisc.format"] == "fisc-artifact/1"
    assert meta["timm.model"] == "resnet18" and meta["timm.model_kwargs"] == "{}"
    import timm

    assert meta["timm.version"] == timm.__version__
    assert meta["descriptor.head"] == "gem(p=3.0) -> linear(512->16) -> l2"  # resnet18: 512
    assert meta["descriptor.dims"] == "16" and meta["descriptor.pooling"] == "gem"
    assert meta["fisc.postprocess"] == SPEC
    assert json.loads(meta["input"]) == {"eval_size": 32, "resize": "square resize, bilinear",
                                         "mean": [0.485, 0.456, 0.406],
                                         "std": [0.229, 0.224, 0.225]}  # fmt: skip
    card = json.loads((artifact / "model_card.json").read_text())
    assert json.loads(meta["fisc.model_config"]) == {
        k: v for k, v in card["model"].items() if k != "weights"
    }
    # and the tensors are the checkpoint's model
    ckpt = torch.load(run_ckpt, weights_only=True)["state_dict"]
    weights = load_file(str(artifact / "model.safetensors"))
    assert set(weights) == {k.removeprefix("model.") for k in ckpt}
    for key, value in weights.items():
        assert torch.equal(value, ckpt["model." + key]), key


def _resave(artifact: Path, dst: Path, **metadata) -> Path:
    """A copy of the artifact whose weights file carries ``metadata``, manifest rewritten (as
    if frozen that way)."""
    from safetensors.torch import load_file, save_file

    from fisc.export.manifest import write_manifest

    shutil.copytree(artifact, dst)
    for p in [dst, *dst.rglob("*")]:
        p.chmod(0o755 if p.is_dir() else 0o644)
    weights = dst / "model.safetensors"
    save_file(load_file(str(weights)), str(weights), metadata=metadata)
    write_manifest(dst)
    return dst


def test_loading_checks_the_weights_metadata(artifact, refs, tmp_path):
    from fisc.export.artifact import ArtifactError

    meta = _metadata(artifact / "model.safetensors")
    config = json.loads(meta["fisc.model_config"])
    other = _resave(artifact, tmp_path / "other", **{
        **meta, "fisc.model_config": json.dumps({**config, "pooling": "avg"})})  # fmt: skip
    with pytest.raises(ArtifactError, match=r"model\.safetensors: .*another model.*metadata check"):
        fisc.load(other)
    other_pp = _resave(artifact, tmp_path / "other_pp", **{**meta, "fisc.postprocess": "l2"})
    with pytest.raises(ArtifactError, match=r"post-processing 'l2'.*metadata check"):
        fisc.load(other_pp)
    # a weights file frozen before fisc wrote metadata still loads, to the same descriptors
    legacy = fisc.load(_resave(artifact, tmp_path / "legacy", format="pt"))
    np.testing.assert_array_equal(
        legacy.references(refs).vectors, fisc.load(artifact).references(refs).vectors
    )
