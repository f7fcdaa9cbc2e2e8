"""``fisc evaluate``: descriptors (or a submission file) against ground truth, a scored list
of predictions, or a sweep of post-processing specs; optionally a report."""

from __future__ import annotations

from pathlib import Path


def cmd_evaluate(args) -> None:
    """``fisc evaluate``."""
    from fisc.challenge import load_ground_truth
    from fisc.evaluation import evaluate, read_inputs, results_table

    for out in (args.json, args.write_predictions):
        if out and Path(out).exists() and not args.overwrite:
            raise FileExistsError(f"{out} exists (pass --overwrite to replace it)")
    if args.report and not args.overwrite:
        from fisc.reports import REPORT_FILES

        there = [n for n in REPORT_FILES if (Path(args.report) / n).exists()]
        if there:
            raise FileExistsError(
                f"{args.report} already holds a report ({', '.join(there)}; pass --overwrite "
                f"to replace it)"
            )
    if args.predictions:
        evaluate_predictions(args)
        return
    queries, references, name = read_inputs(
        args.query or None, args.reference or None, args.submission or None
    )
    if args.postprocess:
        if args.write_predictions:
            raise ValueError("--write-predictions writes one system's list: not with --postprocess")
        sweep(args, queries, references)
        return
    truth = load_ground_truth(args.gt, disc_ids=args.disc_ids)
    result = evaluate(
        queries,
        references,
        truth,
        predictions_path=args.write_predictions,
        **eval_options(args),
    )
    print(results_table({name: result}))
    if args.write_predictions:
        print(f"written: {args.write_predictions} ({result.n_predictions} predictions)")
    if args.json:
        result.to_json(args.json)
        print(f"written: {args.json}")
    if args.report:
        from fisc.reports import write_report

        images = image_files(args.images) if args.images else None
        written = write_report(
            args.report,
            queries,
            references,
            load_ground_truth(args.gt, disc_ids=args.disc_ids),
            result=result,
            images=images,
            name=name,
            backend=args.backend,
        )
        print("report: " + ", ".join(str(p) for p in written.values()))


def evaluate_predictions(args) -> None:
    """``fisc evaluate --predictions CSV``: a scored list, as isc2021's compute_metrics.py."""
    from fisc.challenge import load_ground_truth
    from fisc.evaluation import evaluate_predictions as score_predictions
    from fisc.evaluation import results_table
    from fisc.metrics.micro_ap import load_predictions

    given = [flag for flag, value in (
        ("--submission", args.submission), ("--query", args.query),
        ("--reference", args.reference), ("--train", args.train),
        ("--postprocess", args.postprocess), ("--report", args.report),
        ("--write-predictions", args.write_predictions),
    ) if value]  # fmt: skip
    if given:
        raise ValueError(
            f"--predictions is scored as given, without descriptors: not with {', '.join(given)}"
        )
    truth = load_ground_truth(args.gt, disc_ids=args.disc_ids)
    q, r, s = load_predictions(args.predictions, disc_ids=args.disc_ids)
    result = score_predictions(q, r, s, truth, protocol=args.protocol, cap=args.cap)
    print(results_table({Path(args.predictions).stem: result}))
    if args.json:
        result.to_json(args.json)
        print(f"written: {args.json}")


def eval_options(args) -> dict:
    """The search and protocol options of ``fisc evaluate``, as keywords."""
    return {"protocol": args.protocol, "k": args.k, "cap": args.cap, "backend": args.backend,
            "disc_ids": args.disc_ids}  # fmt: skip


def image_files(folders: list[str]) -> dict[str, Path]:
    """``{image id: file}`` of every image in ``folders`` (a report's gallery)."""
    from fisc.data.disc21 import list_images

    files = {}
    for folder in folders:
        found = list_images(folder)
        files.update(zip(found.ids, found.paths, strict=True))
    return files


def sweep(args, queries, references) -> None:
    """Post-processing specs fitted on training descriptors, one table row per spec."""
    from fisc.challenge import load_ground_truth
    from fisc.descriptors.h5io import read_vectors
    from fisc.files import write_json
    from fisc.postprocess import sweep as sweep_specs
    from fisc.postprocess import sweep_table

    if not args.train:
        raise ValueError(
            "--postprocess needs --train FILE: descriptors of training images "
            "(post-processing is never fitted on queries or references)"
        )
    from fisc.descriptors.h5io import read_attrs

    for path in filter(None, (args.query, args.reference, args.submission, args.train)):
        done = read_attrs(path).get("fisc_postprocess")
        if done:
            raise ValueError(
                f"{path} holds descriptors already post-processed with {done!r}: "
                "--postprocess needs raw descriptors (fisc extract --checkpoint)"
            )
    rows = sweep_specs(
        args.postprocess,
        read_vectors(args.train),
        queries,
        references,
        load_ground_truth(args.gt, disc_ids=args.disc_ids),
        **eval_options(args),
    )
    print(sweep_table(rows))
    if args.json:
        write_json(args.json, rows)
        print(f"written: {args.json}")
