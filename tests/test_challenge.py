"""The challenge's rules in one place (fisc.challenge) and the CSV reader they share
(fisc.files.read_csv_rows): one set of submission checks for files and for descriptors."""

from __future__ import annotations

import h5py
import numpy as np
import pytest

from fisc.challenge import (
    check_submission_descriptors,
    read_id_list,
    submission_problems,
    validate_submission,
)
from fisc.challenge import validate_submission_main as validate_main
from fisc.descriptors import Descriptors
from fisc.files import read_csv_rows

HEADER = ("query_id", "reference_id")


# --- read_csv_rows ------------------------------------------------------------------------


def test_csv_rows_are_stripped_with_their_lines_and_blank_lines_skipped(tmp_path):
    p = tmp_path / "a.csv"
    p.write_text("\ufeffquery_id , reference_id\n\nQ1, R1\n , \nQ2,\n", encoding="utf-8")
    assert list(read_csv_rows(p, HEADER)) == [(3, ["Q1", "R1"]), (5, ["Q2", ""])]


@pytest.mark.parametrize(
    "text, message",
    [
        ("Q1,R1\n", r"a\.csv:1: expected header 'query_id,reference_id', got \['Q1', 'R1'\]"),
        ("", r"a\.csv:1: expected header 'query_id,reference_id', got an empty file"),
        ("query_id,reference_id\nQ1,R1\n\nQ2\n", r"a\.csv:4: expected 2 fields .* got 1"),
        ("query_id,reference_id\nQ1,R1,x\n", r"a\.csv:2: expected 2 fields .* got 3"),
    ],
)
def test_csv_row_errors_name_file_and_line(tmp_path, text, message):
    p = tmp_path / "a.csv"
    p.write_text(text)
    with pytest.raises(ValueError, match=message):
        list(read_csv_rows(p, HEADER))


def test_csv_optional_header(tmp_path):
    p = tmp_path / "a.csv"
    p.write_text("Q1,R1\nQ2,R2\n")
    assert [f for _, f in read_csv_rows(p, HEADER, header_optional=True)] == [
        ["Q1", "R1"],
        ["Q2", "R2"],
    ]
    p.write_text("query_id,reference_id\nQ1,R1\n")
    assert list(read_csv_rows(p, HEADER, header_optional=True)) == [(2, ["Q1", "R1"])]
    p.write_text("")
    assert list(read_csv_rows(p, HEADER, header_optional=True)) == []


# --- ground truth and id lists ------------------------------------------------------------


def test_id_list_from_ground_truth_is_read_as_ground_truth(tmp_path):
    gt = tmp_path / "gt.csv"
    gt.write_text("query_id,reference_id\nimages/Q00002.jpg,R000009\nQ00000,\nQ00001,R000003\n")
    assert read_id_list(gt, "query") == (["Q00000", "Q00001", "Q00002"], True)
    assert read_id_list(gt, "reference") == (["R000003", "R000009"], False)
    gt.write_text("query_id,reference_id\nQ00000,R000001\nQ00000,\n")
    with pytest.raises(ValueError, match=r"gt\.csv:3: duplicate query id 'Q00000'"):
        read_id_list(gt, "query")


# --- submission checks --------------------------------------------------------------------


def _parts(n_q=3, n_r=4, d=8):
    rng = np.random.default_rng(0)
    vectors = {
        "query": rng.standard_normal((n_q, d)).astype(np.float32),
        "reference": rng.standard_normal((n_r, d)).astype(np.float32),
    }
    ids = {
        "query": [f"Q{i:05d}" for i in range(n_q)],
        "reference": [f"R{i:06d}" for i in range(n_r)],
    }
    return vectors, ids


def test_valid_parts_have_no_problems():
    assert submission_problems(*_parts()) == []
    assert submission_problems(*_parts(d=256)) == []
    assert submission_problems(*_parts(d=1)) == []


def test_each_broken_part_is_one_problem():
    vectors, ids = _parts()
    vectors["reference"][2, 5] = np.inf
    assert submission_problems(vectors, ids) == [
        "reference: 1 rows with NaN or inf values (rows e.g. 2)"
    ]
    vectors, ids = _parts()
    ids["reference"][3] = "R000001"
    assert submission_problems(vectors, ids) == [
        "reference_ids: 1 duplicate ids (e.g. 'R000001')",
        "reference_ids: ids are not sorted (1 rows out of order, first at row 3: "
        "'R000002' before 'R000001')",
    ]
    vectors, ids = _parts()
    ids["query"][0] = "q0"
    assert submission_problems(vectors, ids) == [
        "query_ids: 1 malformed query ids, expected Q + 5 digits (e.g. 'q0')",
        "query_ids: ids are not sorted (1 rows out of order, first at row 1: 'q0' before 'Q00001')",
    ]
    assert submission_problems(vectors, ids, disc_ids=False, stored=False) == []
    vectors, ids = _parts(d=257)
    assert submission_problems(vectors, ids) == [
        "query: 257 dims, expected 1 to 256",
        "reference: 257 dims, expected 1 to 256",
    ]
    assert submission_problems(vectors, ids, max_dims=300) == []
    vectors, ids = _parts()
    vectors["query"] = vectors["query"][:, :4]
    assert submission_problems(vectors, ids) == ["query has 4 dims but reference has 8"]
    vectors, ids = _parts()
    ids["query"] = ids["query"][:2]
    assert submission_problems(vectors, ids) == ["query: 3 rows but 2 ids in query_ids"]
    vectors, ids = _parts(n_r=0)
    assert submission_problems(vectors, ids) == ["reference: no descriptors (0 rows)"]


def test_file_rules_apply_to_stored_parts_only():
    vectors, ids = _parts()
    vectors["query"] = vectors["query"].astype(np.float64)
    ids["reference"] = ids["reference"][::-1]
    vectors["reference"] = vectors["reference"][::-1]
    problems = submission_problems(vectors, ids)
    assert len(problems) == 2
    assert problems[0] == "query: dtype float64, expected float32"
    assert problems[1].startswith("reference_ids: ids are not sorted (3 rows out of order")
    assert submission_problems(vectors, ids, stored=False) == []


def test_descriptors_in_memory_get_the_same_checks():
    vectors, ids = _parts()
    q = Descriptors(np.array(ids["query"]), vectors["query"])
    r = Descriptors(np.array(ids["reference"]), vectors["reference"])
    check_submission_descriptors(q, r, disc_ids=True)  # valid: no error
    nan = vectors["query"].copy()
    nan[1, 0] = np.nan
    with pytest.raises(ValueError, match=r"query: 1 rows with NaN or inf values \(rows e\.g\. 1\)"):
        check_submission_descriptors(Descriptors(q.ids, nan), r)
    empty = Descriptors(np.array([], dtype=str), np.zeros((0, 8), np.float32))
    with pytest.raises(ValueError, match=r"query: no descriptors \(0 rows\)"):
        check_submission_descriptors(empty, r)
    with pytest.raises(ValueError, match="query: 9 dims, expected 1 to 8"):
        wide = np.ones((4, 9), np.float32)
        check_submission_descriptors(Descriptors(q.ids, wide[:3]), Descriptors(r.ids, wide), 8)


def test_an_empty_submission_file_fails(tmp_path):
    path = tmp_path / "s.h5"
    with h5py.File(path, "w") as f:
        f["query"] = np.zeros((0, 8), np.float32)
        f["reference"] = np.ones((1, 8), np.float32)
        f["query_ids"] = np.array([], dtype="S6")
        f["reference_ids"] = np.array([b"R000000"])
    assert validate_submission(path) == ["query: no descriptors (0 rows)"]


# --- submission files, as `fisc validate-submission` checks them ----------------------------

QUERIES = [f"Q{i:05d}" for i in range(5)]


REFERENCES = [f"R{i:06d}" for i in range(7)]


def _write(path, **override):
    rng = np.random.default_rng(0)
    data = {
        "query": rng.standard_normal((len(QUERIES), 8)).astype(np.float32),
        "reference": rng.standard_normal((len(REFERENCES), 8)).astype(np.float32),
        "query_ids": np.array([q.encode() for q in QUERIES], dtype="S6"),
        "reference_ids": np.array([r.encode() for r in REFERENCES], dtype="S7"),
    }
    data.update(override)
    with h5py.File(path, "w") as f:
        for name, value in data.items():
            if value is not None:
                f.create_dataset(name, data=value)
    return path


def test_valid_submission_passes(tmp_path, capsys):
    path = _write(tmp_path / "sub.h5")
    assert validate_submission(path, QUERIES, REFERENCES) == []
    assert validate_main([str(path)]) == 0
    assert "OK" in capsys.readouterr().out


def _one_failure(path, *words, **kwargs):
    failures = validate_submission(path, **kwargs)
    assert len(failures) == 1, failures
    for word in words:
        assert word in failures[0], failures
    return failures[0]


def test_missing_dataset(tmp_path):
    _one_failure(_write(tmp_path / "s.h5", reference_ids=None), "missing", "reference_ids")


def test_float64(tmp_path):
    vectors = np.zeros((len(QUERIES), 8), dtype=np.float64) + 0.5
    _one_failure(_write(tmp_path / "s.h5", query=vectors), "query", "float64", "float32")


def test_nan_row(tmp_path):
    vectors = np.ones((len(REFERENCES), 8), dtype=np.float32)
    vectors[3, 2] = np.nan
    line = _one_failure(_write(tmp_path / "s.h5", reference=vectors), "reference", "NaN")
    assert "3" in line


def test_too_many_dims(tmp_path):
    path = _write(
        tmp_path / "s.h5",
        query=np.ones((len(QUERIES), 257), np.float32),
        reference=np.ones((len(REFERENCES), 257), np.float32),
    )
    failures = validate_submission(path)
    assert len(failures) == 2 and all("257 dims" in f for f in failures), failures


def test_dims_differ(tmp_path):
    path = _write(tmp_path / "s.h5", query=np.ones((len(QUERIES), 4), np.float32))
    _one_failure(path, "4 dims", "8")


def test_unsorted_ids(tmp_path):
    ids = np.array([q.encode() for q in QUERIES[::-1]], dtype="S6")
    _one_failure(_write(tmp_path / "s.h5", query_ids=ids), "query_ids", "not sorted")


def test_duplicate_id(tmp_path):
    refs = REFERENCES[:-1] + [REFERENCES[-2]]
    ids = np.array([r.encode() for r in refs], dtype="S7")
    _one_failure(_write(tmp_path / "s.h5", reference_ids=ids), "duplicate", "R000005")


def test_malformed_id(tmp_path):
    ids = np.array([q.encode() for q in QUERIES[:-1] + ["Q1234"]], dtype="S6")
    _one_failure(_write(tmp_path / "s.h5", query_ids=ids), "malformed", "Q1234")


def test_row_count_mismatch(tmp_path):
    path = _write(tmp_path / "s.h5", query=np.ones((len(QUERIES) + 1, 8), np.float32))
    _one_failure(path, "6 rows", "5 ids")


def test_ids_against_lists(tmp_path, capsys):
    path = _write(tmp_path / "s.h5")
    line = _one_failure(path, "missing", "Q00005", query_ids=QUERIES + ["Q00005"])
    assert line.startswith("query_ids: 1 ids")
    _one_failure(path, "not in the list", "R000006", reference_ids=REFERENCES[:-1])
    listing = tmp_path / "queries.txt"
    listing.write_text("\n".join(QUERIES[:3]) + "\n")
    assert validate_main([str(path), "--queries", str(listing)]) == 1
    out = capsys.readouterr().out
    assert "INVALID" in out and "2 ids in the file" in out


def test_ground_truth_csv_lists(tmp_path):
    gt = tmp_path / "gt.csv"
    gt.write_text("query_id,reference_id\nQ00000,R000001\nQ00001,\nQ00002,R000009\n")
    assert read_id_list(gt, "query") == (["Q00000", "Q00001", "Q00002"], True)
    assert read_id_list(gt, "reference") == (["R000001", "R000009"], False)
    path = _write(tmp_path / "s.h5")
    assert validate_main([str(path), "--references", str(gt)]) == 1  # R000009 missing


def test_not_hdf5(tmp_path):
    bad = tmp_path / "x.h5"
    bad.write_text("nope")
    assert "not a readable HDF5" in validate_submission(bad)[0]
    assert validate_submission(tmp_path / "absent.h5")[0].endswith("does not exist")


@pytest.mark.parametrize("flag", ["--help", "-h"])
def test_validate_submission_help_through_fisc(flag, capsys):
    from fisc.cli import main

    with pytest.raises(SystemExit) as e:
        main(["validate-submission", flag])
    assert e.value.code == 0
    assert "usage: fisc validate-submission" in capsys.readouterr().out


def test_validate_submission_through_fisc_reports_failures(tmp_path, capsys):
    from fisc.cli import main

    bad = tmp_path / "x.h5"
    bad.write_text("nope")
    assert main(["validate-submission", str(bad)]) != 0
    captured = capsys.readouterr()
    assert "not a readable HDF5" in captured.out + captured.err


@pytest.mark.parametrize("problem", ["malformed", "missing"])
def test_validate_submission_bad_id_list_is_a_one_line_error_through_fisc(
    tmp_path, capsys, problem
):
    """A list that cannot be read is bad input, not a failed check: one line on stderr, exit 2
    (as every fisc command), not a traceback with the exit status of an invalid file (1)."""
    from fisc.cli import main

    sub = tmp_path / "sub.h5"
    sub.write_text("nope")
    gt = tmp_path / "gt.csv"
    if problem == "malformed":  # a duplicate query: load_ground_truth refuses it
        gt.write_text("query_id,reference_id\nQ00001,R000001\nQ00001,R000002\n")
    assert main(["validate-submission", str(sub), "--queries", str(gt)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("fisc validate-submission: error: ") and len(err.splitlines()) == 1
    assert str(gt) in err


def test_rows_too_long_for_float32_distances_are_named_by_their_row_in_the_file():
    """Squared norms above 2**124 (float32 distances overflow) are refused before any search,
    naming the rows of the whole split, not of the queries the ground truth keeps; rows with
    NaN or inf are reported as such only, and a row just under the bound passes."""
    from fisc.evaluation import evaluate
    from fisc.search.exact import SQUARED_NORM_MAX

    vectors, ids = _parts(n_q=5)
    q = vectors["query"].copy()
    q[:] = 0.1
    q[3] = 0.0
    q[3, 0] = np.float32(2.0**62.1)  # squared: 2**124.2
    q[2] = 0.0
    q[2, 0] = np.float32(2.0**61.9)  # squared: 2**123.8, allowed
    assert float(q[3, 0]) ** 2 > SQUARED_NORM_MAX > float(q[2, 0]) ** 2
    q[1, 0] = np.inf
    queries = Descriptors(np.array(ids["query"]), q)
    refs = Descriptors(np.array(ids["reference"]), vectors["reference"])
    truth = {ids["query"][0]: ids["reference"][0], ids["query"][3]: None}
    with pytest.raises(ValueError) as err:
        evaluate(queries, refs, truth)
    message = str(err.value)
    assert "query: 1 rows with squared norms above 2.1e+37" in message
    assert "(rows e.g. 3)" in message and "(rows e.g. 1)" in message  # huge; inf
    assert message.count("squared norms") == 1
