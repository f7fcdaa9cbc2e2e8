import json
import re

import numpy as np
import pytest
from PIL import Image

from fisc.data.ids import format_id
from fisc.descriptors import Descriptors
from fisc.metrics.micro_ap import micro_average_precision
from fisc.reports import thumbnail_name, write_report
from fisc.search.exact import global_capped_search

pytest.importorskip("matplotlib")

NQ, NR, D = 22, 300, 16
QID = np.array([format_id("query", i) for i in range(NQ)])
RID = np.array([format_id("reference", i) for i in range(NR)])


def _unit(x):
    return (x / np.linalg.norm(x, axis=-1, keepdims=True)).astype(np.float32)


@pytest.fixture(scope="module")
def planted():
    """20 ground-truth queries: 0-13 noisy copies of references 0-13 (found); 14 is the
    antipode of its true reference 14 (missed); 15 has no match but is a near-exact copy of
    reference 200 (the strongest false positive); 16 has no match; 17 copies reference 250 while
    its true reference 17 is reference 250's antipode (a false positive ranked after the
    true positives, and missed);
    18-19 random with no match. Queries 20-21 are outside the ground truth (copies of
    references 100-101: ignored by the leaderboard protocol)."""
    rng = np.random.default_rng(0)
    r = _unit(rng.standard_normal((NR, D)))
    r[17] = -r[250]
    q = _unit(rng.standard_normal((NQ, D)))
    q[:14] = _unit(r[:14] + 0.01 * rng.standard_normal((14, D)))
    q[14] = -r[14]
    q[15] = _unit(r[200] + 1e-4 * rng.standard_normal(D))
    q[17] = _unit(r[250] + 0.05 * rng.standard_normal(D))
    q[20:] = r[100:102]
    gt = {QID[i]: (RID[i] if i < 15 or i == 17 else None) for i in range(20)}
    return Descriptors(QID, q), Descriptors(RID, r), gt


def _images(tmp_path, ids):
    paths = {}
    for n, i in enumerate(ids):
        p = tmp_path / "img" / f"{i}.png"
        p.parent.mkdir(exist_ok=True)
        Image.new("RGB", (40 + n, 30), (10 * n % 255, 80, 160)).save(p)
        paths[i] = p
    return paths


def test_report_files_and_p90_point(planted, tmp_path):
    queries, references, gt = planted
    imgs = _images(tmp_path, [QID[15], RID[200], QID[14], RID[14], QID[17], RID[17], RID[250]])
    out = tmp_path / "report"
    paths = write_report(out, queries, references, gt, images=imgs, n_gallery=5)
    assert set(paths) == {"json", "markdown", "pr_curve", "gallery"}
    assert not list(out.glob(".*.tmp"))  # atomic writes left no temporaries

    summary = json.loads((out / "results.json").read_text())
    md = (out / "results.md").read_text()
    assert "| system |" in md and "gallery.html" in md

    # independent recomputation of the pooled list and its P90 operating point
    gq = np.isin(QID, list(gt))
    qi, ri, d2 = global_capped_search(queries.vectors[gq], references.vectors, 10 * gq.sum())
    m = micro_average_precision(QID[gq][qi], RID[ri], -d2.astype(np.float64), gt)
    pooled = summary["pooled"]
    assert pooled["recall_at_p90"] == m.recall_at_p90 > 0
    assert pooled["threshold_at_p90"] == m.threshold_at_p90
    assert pooled["micro_ap"] == summary["systems"]["system"]["micro_ap"] == m.micro_ap
    assert pooled["n_predictions"] == 200 and pooled["n_gt_pairs"] == 16

    with Image.open(out / "pr_curve.png") as im:
        im.load()
        assert im.format == "PNG" and im.size[0] > 100
        meta = json.loads(im.text["fisc"])
    assert meta["recall_at_p90"] == m.recall_at_p90
    assert meta["threshold_at_p90"] == m.threshold_at_p90

    gal = summary["gallery"]
    fp0, fp1 = gal["false_positives"][:2]
    assert (fp0["query"], fp0["reference"], fp0["true_reference"]) == (QID[15], RID[200], None)
    assert (fp1["query"], fp1["reference"], fp1["true_reference"]) == (QID[17], RID[250], RID[17])
    assert fp0["rank"] == 1 and fp1["true_score"] < -3.9
    assert {(e["query"], e["reference"]) for e in gal["missed"]} == {
        (QID[14], RID[14]),
        (QID[17], RID[17]),
    }
    assert all(e["query"] not in (QID[20], QID[21]) for e in gal["false_positives"])
    assert len(gal["false_positives"]) == 5 and len(gal["weakest_found"]) == 5

    page = (out / "gallery.html").read_text()
    assert page.startswith("<!doctype html>") and page.rstrip().endswith("</html>")
    rows = re.findall(r'data-kind="(\w+)" data-query="(\w+)" data-reference="(\w+)"', page)
    fps = [(q, r) for k, q, r in rows if k == "false_positives"]
    assert fps[0] == (QID[15], RID[200]) and len(fps) == 5
    assert {(q, r) for k, q, r in rows if k == "missed"} == {(QID[14], RID[14]), (QID[17], RID[17])}
    for i in (QID[15], RID[200], RID[17]):
        assert f'src="gallery/{thumbnail_name(i)}"' in page
        with Image.open(out / "gallery" / thumbnail_name(i)) as im:
            assert max(im.size) <= 160


def test_hostile_ids_stay_inside_the_report_and_out_of_the_html(planted, tmp_path):
    """Ids are data, never paths or markup: ``../`` ids write no file outside the gallery
    folder, ``<script>`` ids appear escaped, ids differing only in unsafe characters keep
    their own thumbnails."""
    from fisc.evaluation import evaluate

    queries, references, gt = planted
    hostile = {QID[15]: "../../escape", RID[200]: "<script>alert(1)</script>",
               RID[17]: "..\\evil/../x", RID[250]: "..\\evil/../y"}  # fmt: skip
    rename = np.vectorize(lambda i: hostile.get(i, i))
    q, r = Descriptors(rename(queries.ids), queries.vectors), Descriptors(
        rename(references.ids), references.vectors)  # fmt: skip
    g = {hostile.get(k, k): (hostile.get(v, v) if v else v) for k, v in gt.items()}
    out = tmp_path / "deep" / "report"
    src = tmp_path / "src"
    src.mkdir()
    imgs = {}
    for n, i in enumerate([*hostile.values(), QID[17], RID[14]]):  # files named safely here
        imgs[i] = src / f"{n}.png"
        Image.new("RGB", (40, 30), (20 * n, 80, 160)).save(imgs[i])
    result = evaluate(q, r, g, disc_ids=False)
    write_report(out, q, r, g, result=result, images=imgs, n_gallery=5)
    written = {p for p in tmp_path.rglob("*") if p.is_file()} - {p for p in imgs.values()}
    assert written and all(out in p.parents for p in written), sorted(map(str, written))
    page = (out / "gallery.html").read_text()
    assert "<script>" not in page and "&lt;script&gt;alert(1)&lt;/script&gt;" in page
    names = {thumbnail_name(i) for i in hostile.values()}
    assert len(names) == len(hostile)
    shown = [i for i in hostile.values() if f'src="gallery/{thumbnail_name(i)}"' in page]
    assert len(shown) >= 3 and all((out / "gallery" / thumbnail_name(i)).is_file() for i in shown)


def test_report_without_images_skips_gallery(planted, tmp_path):
    queries, references, gt = planted
    paths = write_report(tmp_path, queries, references, gt)
    assert "gallery" not in paths and not (tmp_path / "gallery.html").exists()
    assert "No gallery" in (tmp_path / "results.md").read_text()
    assert (tmp_path / "pr_curve.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_the_cli_does_not_replace_a_report_without_overwrite(tmp_path, capsys):
    """``fisc evaluate --report DIR`` on a folder already holding a report refuses, naming the
    files, and leaves them as they were; ``--overwrite`` replaces them."""
    from fisc.cli import main
    from fisc.descriptors.h5io import write_vectors

    rng = np.random.default_rng(0)
    refs = rng.normal(size=(12, 8)).astype(np.float32)
    write_vectors(tmp_path / "q.h5", Descriptors(np.array([f"q{i}" for i in range(4)]), refs[:4]))
    write_vectors(tmp_path / "r.h5", Descriptors(np.array([f"r{i}" for i in range(12)]), refs))
    gt = tmp_path / "gt.csv"
    gt.write_text("query_id,reference_id\n" + "".join(f"q{i},r{i}\n" for i in range(4)))
    report = tmp_path / "rep"
    report.mkdir()
    (report / "results.json").write_text("MINE")
    args = ["evaluate", "--query", str(tmp_path / "q.h5"), "--reference", str(tmp_path / "r.h5"),
            "--gt", str(gt), "--report", str(report)]  # fmt: skip
    capsys.readouterr()
    assert main(args) == 2
    err = capsys.readouterr().err
    assert "already holds a report (results.json;" in err and "--overwrite" in err
    assert (report / "results.json").read_text() == "MINE"
    assert not (report / "results.md").exists()  # nothing else written either
    assert main([*args, "--overwrite"]) == 0
    assert json.loads((report / "results.json").read_text())["pooled"]["n_gt_pairs"] == 4
    fresh = tmp_path / "fresh"
    assert main([*args[:-1], str(fresh)]) == 0 and (fresh / "results.md").is_file()
