"""HDF5 round trips, extraction (bad files, non-finite output, batch independence), evaluation
of files made elsewhere."""

from __future__ import annotations

import json
import os

import h5py
import numpy as np
import pytest
import torch
from PIL import Image

from fisc.data.decode import ImageDecodeError
from fisc.data.disc21 import list_images
from fisc.data.preprocess import Preprocess
from fisc.descriptors import Descriptors
from fisc.descriptors.extract import NonFiniteDescriptorError, extract_descriptors
from fisc.descriptors.h5io import read_submission, read_vectors, write_submission, write_vectors
from fisc.evaluation import evaluate


def test_working_file_round_trip(tmp_path):
    d = Descriptors(np.array(["R000002", "R000001"]), np.random.rand(2, 5).astype(np.float32))
    write_vectors(tmp_path / "r.h5", d)
    back = read_vectors(tmp_path / "r.h5")
    assert back.ids.tolist() == ["R000002", "R000001"]
    np.testing.assert_array_equal(back.vectors, d.vectors)
    with h5py.File(tmp_path / "r.h5") as f:
        assert f["vectors"].dtype == np.float32 and f["image_names"].dtype.kind == "S"
    assert not list(tmp_path.glob(".*.tmp"))  # no temporary left behind


def test_submission_round_trip_sorted(tmp_path):
    q = Descriptors(np.array(["Q00001", "Q00000"]), np.arange(6, dtype=np.float64).reshape(2, 3))
    r = Descriptors(np.array(["R000000"]), np.ones((1, 3)))
    write_submission(tmp_path / "s.h5", q, r)
    q2, r2 = read_submission(tmp_path / "s.h5")
    assert q2.ids.tolist() == ["Q00000", "Q00001"]
    np.testing.assert_array_equal(q2.vectors, [[3, 4, 5], [0, 1, 2]])
    assert q2.vectors.dtype == np.float32 and r2.ids.tolist() == ["R000000"]


def test_failed_write_keeps_previous_file(tmp_path):
    good = Descriptors(np.array(["R000000"]), np.ones((1, 2), np.float32))
    write_vectors(tmp_path / "r.h5", good)
    with pytest.raises(ValueError):
        write_vectors(tmp_path / "r.h5", Descriptors(np.array(["Rü"]), np.zeros((1, 2))))
    np.testing.assert_array_equal(read_vectors(tmp_path / "r.h5").vectors, good.vectors)


def _folder(tmp_path, n=5):
    rng = np.random.default_rng(0)
    for i in range(n):
        Image.fromarray(rng.integers(0, 255, (20 + i, 30, 3), np.uint8)).save(
            tmp_path / f"R{i:06d}.png"
        )
    return tmp_path


class MeanColour(torch.nn.Module):
    def forward(self, x):
        return torch.nn.functional.normalize(x.mean(dim=(2, 3)) + 3.0, dim=1)


def test_extraction_is_batch_independent(tmp_path):
    images = list_images(_folder(tmp_path), "reference")
    one, _ = extract_descriptors(
        MeanColour(), images, Preprocess(16, (0.5,) * 3, (0.5,) * 3), batch_size=1, progress=False
    )
    many, _ = extract_descriptors(
        MeanColour(), images, Preprocess(16, (0.5,) * 3, (0.5,) * 3), batch_size=4, progress=False
    )
    assert one.ids.tolist() == list(images.ids)
    np.testing.assert_array_equal(one.vectors, many.vectors)


def test_bad_file_raises_or_is_skipped(tmp_path):
    folder = _folder(tmp_path)
    (folder / "R000009.jpg").write_bytes(b"not a jpeg")
    images = list_images(folder, "reference")
    with pytest.raises(ImageDecodeError, match="R000009.jpg"):
        extract_descriptors(
            MeanColour(), images, Preprocess(16, (0.5,) * 3, (0.5,) * 3), progress=False
        )
    d, skipped = extract_descriptors(
        MeanColour(),
        images,
        Preprocess(16, (0.5,) * 3, (0.5,) * 3),
        on_error="skip",
        progress=False,
    )
    assert skipped == ["R000009"]
    assert "R000009" not in d.ids and len(d.ids) == 5
    assert np.isfinite(d.vectors).all()


def test_nan_descriptors_are_an_error(tmp_path):
    class Broken(torch.nn.Module):
        def forward(self, x):
            out = torch.ones(x.shape[0], 4)
            out[0] = float("nan")
            return out

    images = list_images(_folder(tmp_path), "reference")
    with pytest.raises(NonFiniteDescriptorError, match="R000000"):
        extract_descriptors(
            Broken(), images, Preprocess(8, (0.5,) * 3, (0.5,) * 3), batch_size=8, progress=False
        )


def test_evaluate_planted_matches_and_bad_inputs():
    rng = np.random.default_rng(0)
    refs = rng.normal(size=(50, 8)).astype(np.float32)
    r_ids = np.array([f"R{i:06d}" for i in range(50)])
    q = refs[:10] + 0.01 * rng.normal(size=(10, 8)).astype(np.float32)
    q_ids = np.array([f"Q{i:05d}" for i in range(10)])
    gt = {f"Q{i:05d}": f"R{i:06d}" for i in range(10)}
    result = evaluate(Descriptors(q_ids, q), Descriptors(r_ids, refs), gt)
    assert result.micro_ap == pytest.approx(1.0)
    assert result.recall_at_1 == 1.0 and result.n_predictions == 100
    with pytest.raises(ValueError, match="unknown reference"):
        evaluate(Descriptors(q_ids, q), Descriptors(r_ids, refs), {**gt, "Q00000": "R999999"})
    with pytest.raises(ValueError, match="256"):
        evaluate(
            Descriptors(q_ids, np.zeros((10, 300), np.float32)),
            Descriptors(r_ids, np.zeros((50, 300), np.float32)),
            gt,
        )
    with pytest.raises(ValueError, match="malformed reference ids"):
        bad = np.array([f"R{i}" for i in range(50)])
        evaluate(Descriptors(q_ids, q), Descriptors(bad, refs), gt, disc_ids=True)
    # any other id scheme scores the same when DISC21's is not asked for
    other_q = np.array([f"query_{i}" for i in range(10)])
    other_r = np.array([f"img-{i}" for i in range(50)])
    other = evaluate(Descriptors(other_q, q), Descriptors(other_r, refs),
                     {f"query_{i}": f"img-{i}" for i in range(10)})  # fmt: skip
    assert other.micro_ap == result.micro_ap and other.recall_at_1 == result.recall_at_1
    with pytest.raises(ValueError, match="duplicate"):
        evaluate(Descriptors(q_ids, q), Descriptors(np.array(["R000000"] * 50), refs), gt)
    with pytest.raises(ValueError, match="no descriptor"):
        evaluate(Descriptors(q_ids[:5], q[:5]), Descriptors(r_ids, refs), gt)


def test_written_files_get_the_usual_mode(tmp_path):
    d = Descriptors(np.array(["R000000"]), np.ones((1, 2), np.float32))
    write_vectors(tmp_path / "r.h5", d)
    mask = os.umask(0)
    os.umask(mask)
    assert (tmp_path / "r.h5").stat().st_mode & 0o777 == 0o666 & ~mask


def test_bad_descriptor_files_are_named(tmp_path):
    (tmp_path / "junk.h5").write_text("not hdf5")
    with pytest.raises(ValueError, match="junk.h5"):
        read_vectors(tmp_path / "junk.h5")
    with h5py.File(tmp_path / "nan.h5", "w") as f:
        f["vectors"] = np.array([[np.nan, 1.0]], np.float32)
        f["image_names"] = np.array([b"R000000"])
    with pytest.raises(ValueError, match="nan.h5.*non-finite"):
        read_vectors(tmp_path / "nan.h5")
    with h5py.File(tmp_path / "f64.h5", "w") as f:
        f["vectors"] = np.zeros((1, 2))
        f["image_names"] = np.array([b"R000000"])
    with pytest.raises(ValueError, match="f64.h5.*float32"):
        read_vectors(tmp_path / "f64.h5")


def test_bad_file_in_a_worker_keeps_its_type_and_name(tmp_path):
    folder = _folder(tmp_path)
    (folder / "R000009.jpg").write_bytes(b"")
    images = list_images(folder, "reference")
    with pytest.raises(ImageDecodeError, match="R000009.jpg"):
        extract_descriptors(
            MeanColour(),
            images,
            Preprocess(16, (0.5,) * 3, (0.5,) * 3),
            num_workers=2,
            batch_size=2,
            progress=False,
        )


# --- extraction over ranks: shards keyed by index, merged with dedup == single process ------


def _shard_worker(rank: int, folder: str, shard_dir: str, init_file: str):
    import torch.distributed as dist

    from fisc.descriptors.extract import Preprocess
    from fisc.descriptors.sharded import extract_shard

    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=2)
    try:
        images = list_images(folder, "reference")
        extract_shard(
            MeanColour(),
            images,
            Preprocess(16, (0.5,) * 3, (0.5,) * 3),
            shard_dir,
            batch_size=2,
            progress=False,
        )
        dist.barrier()
    finally:
        dist.destroy_process_group()


@pytest.mark.ddp
def test_two_rank_shards_merge_to_the_single_process_file(tmp_path):
    from fisc.descriptors.sharded import merge_shards, rank_indices

    (tmp_path / "imgs").mkdir()
    folder = _folder(tmp_path / "imgs", n=5)
    shard_dir = tmp_path / "shards"
    torch.multiprocessing.spawn(
        _shard_worker, nprocs=2, args=(str(folder), str(shard_dir), str(tmp_path / "init"))
    )
    assert rank_indices(5, 1, 2) == [1, 3, 0]  # padded: index 0 appears on both ranks
    images = list_images(folder, "reference")
    merged = read_vectors(
        merge_shards(sorted(shard_dir.glob("shard-*.h5")), images, tmp_path / "merged.h5")
    )
    single, _ = extract_descriptors(
        MeanColour(), images, Preprocess(16, (0.5,) * 3, (0.5,) * 3), progress=False
    )
    assert merged.ids.tolist() == single.ids.tolist()
    np.testing.assert_array_equal(merged.vectors, single.vectors)


def test_per_image_extraction_is_bit_identical_however_batched(tmp_path):
    """A real CNN: alone, in batches of any size, in any order, with other images or not."""
    from fisc.data.disc21 import ImageSet
    from fisc.models.descriptor import ModelConfig, build_descriptor_model

    torch.manual_seed(0)
    model = build_descriptor_model(ModelConfig(name="resnet18", dims=32)).eval()
    images = list_images(_folder(tmp_path, n=7), "reference")
    prep = (48, (0.5,) * 3, (0.5,) * 3)
    base, _ = extract_descriptors(
        model, images, Preprocess(*prep), batch_size=7, progress=False, per_image=True
    )
    for batch_size in (1, 3):
        d, _ = extract_descriptors(
            model, images, Preprocess(*prep), batch_size=batch_size, progress=False, per_image=True
        )
        np.testing.assert_array_equal(d.vectors, base.vectors)
    reversed_set = ImageSet(images.ids[::-1], images.paths[::-1])  # other order, same ids
    d, _ = extract_descriptors(
        model, reversed_set, Preprocess(*prep), batch_size=4, progress=False, per_image=True
    )
    order = np.argsort(d.ids)
    np.testing.assert_array_equal(d.vectors[order], base.vectors)
    alone, _ = extract_descriptors(
        model, images.subset([images.ids[3]]), Preprocess(*prep), progress=False, per_image=True
    )
    np.testing.assert_array_equal(alone.vectors[0], base.vectors[3])
    again, _ = extract_descriptors(
        model, images, Preprocess(*prep), batch_size=7, progress=False, per_image=True
    )
    np.testing.assert_array_equal(again.vectors, base.vectors)  # and across runs


def test_names_with_paths_and_extensions_read_as_ids(tmp_path, capsys):
    """Descriptor files naming rows as other tools do (``dir/Q00001.jpg``) evaluate like plain
    ids; ``--disc-ids`` still refuses a scheme that is not DISC21's."""
    from fisc.cli import main
    from fisc.data.ids import normalise_name
    from fisc.descriptors.h5io import read_vectors, write_vectors

    assert normalise_name("query/Q00042.jpg") == "Q00042"
    assert normalise_name("C:\\data\\img_7.PNG") == "img_7"
    assert normalise_name("scan.v2") == "scan.v2" and normalise_name(".jpg") == ".jpg"
    rng = np.random.default_rng(3)
    refs = rng.normal(size=(30, 8)).astype(np.float32)
    q = refs[:6] + 0.3 * rng.normal(size=(6, 8)).astype(np.float32)
    q_names = [f"images/query/q_{i}.jpg" for i in range(6)]
    r_names = [f"images\\refs\\r_{i}.jpeg" for i in range(30)]
    write_vectors(tmp_path / "q.h5", Descriptors(np.array(q_names), q))
    write_vectors(tmp_path / "r.h5", Descriptors(np.array(r_names), refs))
    assert read_vectors(tmp_path / "q.h5").ids.tolist() == [f"q_{i}" for i in range(6)]
    gt = tmp_path / "gt.csv"
    gt.write_text("query_id,reference_id\n" + "".join(f"q_{i}.jpg,r_{i}\n" for i in range(5))
                  + "q_5,\n")  # fmt: skip
    args = ["evaluate", "--query", str(tmp_path / "q.h5"), "--reference", str(tmp_path / "r.h5"),
            "--gt", str(gt), "--json", str(tmp_path / "res.json")]  # fmt: skip
    assert main(args) == 0
    named = json.loads((tmp_path / "res.json").read_text())
    truth = {f"q_{i}": (f"r_{i}" if i < 5 else None) for i in range(6)}
    plain = evaluate(Descriptors(np.array([f"q_{i}" for i in range(6)]), q),
                     Descriptors(np.array([f"r_{i}" for i in range(30)]), refs), truth)  # fmt: skip
    assert named["micro_ap"] == plain.micro_ap and named["n_gt_pairs"] == 5
    capsys.readouterr()
    assert main([*args[:-2], "--disc-ids"]) == 2
    assert "not a query id" in capsys.readouterr().err


def test_the_skip_list_of_a_merged_extraction_is_its_missing_ids(tmp_path, capsys):
    """Under torchrun rank 0 lists the images every rank skipped, read from the merged file's
    ``missing`` attribute, in ``<out>.skipped.txt`` as a single process does; a run with
    nothing skipped removes an earlier run's list."""
    from fisc.commands.extract import missing_ids, report_skipped

    out = tmp_path / "refs.h5"
    ids = np.array(["R000001", "R000002"])
    write_vectors(out, Descriptors(ids, np.zeros((2, 4), np.float32)),
                  attrs={"missing": np.array([b"R000000", b"R000003"])})  # fmt: skip
    assert missing_ids(out) == ["R000000", "R000003"]
    report_skipped(out, missing_ids(out))
    listed = tmp_path / "refs.h5.skipped.txt"
    assert listed.read_text() == "R000000\nR000003\n"
    assert "skipped 2 undecodable images" in capsys.readouterr().out
    write_vectors(out, Descriptors(ids, np.zeros((2, 4), np.float32)))
    assert missing_ids(out) == []
    report_skipped(out, missing_ids(out))
    assert not listed.exists()
