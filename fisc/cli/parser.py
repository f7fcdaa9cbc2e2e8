"""The ``fisc`` command: ``fisc {minidisc,train,extract,evaluate,demo} --help``.

Convention: inputs and outputs are named options (``--images``, ``--out``, ``--gt``...);
every command exits non-zero with a one-line error on bad input.
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
import os
import sys
from pathlib import Path

for _key, _value in (("WANDB_MODE", "offline"),):
    os.environ.setdefault(_key, _value)


def _minidisc(args) -> None:
    from fisc.data.minidisc import MinidiscSpec, build_minidisc

    spec = MinidiscSpec(
        n_train=args.n_train,
        n_reference=args.n_reference,
        n_dev_queries=args.n_dev_queries,
        n_phase2_queries=args.n_phase2_queries,
        n_novel_queries=args.n_novel_queries,
        novel_match_fraction=args.novel_match_fraction,
        match_fraction=args.match_fraction,
        image_size=args.image_size,
        seed=args.seed,
    )
    root = build_minidisc(args.root, spec, overwrite=args.overwrite)
    print(f"minidisc ready at {root}")


def _extract_source(args):
    """``(pipeline or None, role)`` for ``fisc extract``: a checkpoint (raw, or with
    ``--postprocess``), a frozen artifact (final descriptors), or a baseline."""
    from fisc.inference import load_pipeline

    sources = [bool(args.checkpoint), bool(args.artifact)]
    if args.baseline == "phash":
        if any(sources) or args.postprocess or args.size or args.on_error != "raise":
            raise ValueError(
                "--baseline phash takes no --checkpoint, --artifact, --postprocess, --size "
                "or --on-error skip"
            )
        if int(os.environ.get("WORLD_SIZE", "1")) > 1:
            raise ValueError("--baseline phash runs in one process (no torchrun)")
        return None, args.role
    if sum(sources) != 1:
        raise ValueError("give one of --checkpoint CKPT, --artifact DIR or --baseline phash")
    if args.baseline == "untrained":
        from fisc.baselines.untrained import untrained_pipeline
        from fisc.models.checkpoint import checkpoint_model_config

        if not args.checkpoint or args.postprocess:
            raise ValueError(
                "--baseline untrained needs --checkpoint (its architecture and starting "
                "weights) and takes no --postprocess"
            )
        cfg = checkpoint_model_config(args.checkpoint)
        return untrained_pipeline(cfg, args.seed, size=args.size), args.role or "reference"
    pipeline = load_pipeline(
        args.checkpoint or None,
        args.artifact or None,
        postprocess=args.postprocess,
        size=args.size,
        device=args.device,
    )
    role = args.role or (args.split if args.split in ("query", "reference") else None)
    if pipeline.postprocessor is not None and pipeline.postprocessor.role_dependent and not role:
        raise ValueError(
            f"post-processing {pipeline.postprocess_spec!r} differs between queries and "
            "references: give --role query|reference"
        )
    return pipeline, role or "reference"


def _extract(args) -> None:
    from fisc.baselines.phash import phash_descriptors
    from fisc.challenge import load_ground_truth
    from fisc.data.disc21 import list_images
    from fisc.descriptors.h5io import write_vectors
    from fisc.files import atomic_path

    if Path(args.out).exists() and not args.overwrite:
        raise FileExistsError(f"{args.out} exists (pass --overwrite to replace it)")
    images = list_images(args.images, args.split)
    if args.gt:
        images = images.subset(load_ground_truth(args.gt))
    pipeline, role = _extract_source(args)
    if pipeline is None:
        descriptors, skipped = phash_descriptors(images, progress=True), []
    elif int(os.environ.get("WORLD_SIZE", "1")) > 1:  # launched by torchrun: a shard per rank
        _extract_distributed(args, pipeline, role, images)
        return
    else:
        descriptors, skipped = pipeline.describe(
            images,
            role,
            batch_size=args.batch_size,
            num_workers=args.workers,
            device=args.device,
            on_error=args.on_error,
            progress=True,
        )
    write_vectors(args.out, descriptors, attrs=_labels(pipeline, role))
    skip_file = Path(f"{args.out}.skipped.txt")
    if skipped:
        with atomic_path(skip_file) as tmp:
            tmp.write_text("\n".join(skipped) + "\n")
        print(f"skipped {len(skipped)} undecodable images, listed in {skip_file}")
    else:
        skip_file.unlink(missing_ok=True)  # no stale list from an earlier run
    what = f", {pipeline.postprocess_spec} as {role}" if pipeline and pipeline.postprocessor else ""
    print(
        f"wrote {len(descriptors.ids)} x {descriptors.vectors.shape[1]} descriptors{what} "
        f"to {args.out}"
    )


def _labels(pipeline, role) -> dict:
    """File attributes saying what the descriptors are: post-processed (spec) and in which
    role, so that ``fisc evaluate --postprocess`` never post-processes them twice."""
    if pipeline is None or pipeline.postprocessor is None:
        return {"fisc_postprocess": ""}
    return {"fisc_postprocess": pipeline.postprocess_spec, "fisc_role": role}


def _extract_distributed(args, pipeline, role, images) -> None:
    import torch
    import torch.distributed as dist

    from fisc.descriptors.h5io import read_attrs, read_vectors, write_vectors
    from fisc.descriptors.sharded import extract_shard, merge_shards

    cuda = torch.cuda.is_available()
    dist.init_process_group("nccl" if cuda else "gloo")
    rank = dist.get_rank()
    device = f"cuda:{int(os.environ.get('LOCAL_RANK', 0))}" if cuda else "cpu"
    shard_dir = Path(f"{args.out}.shards")
    try:
        extract_shard(
            pipeline.model,
            images,
            pipeline.preprocess,
            shard_dir,
            batch_size=args.batch_size,
            num_workers=args.workers,
            device=device,
            on_error=args.on_error,
            progress=rank == 0,
        )
        dist.barrier()
        if rank == 0:
            shards = sorted(shard_dir.glob("shard-*.h5"))
            if pipeline.postprocessor is None:
                merge_shards(shards, images, args.out)
            else:  # raw rows merged aside, post-processed (row by row) into --out
                staging = Path(f"{args.out}.raw.h5")
                merge_shards(shards, images, staging)
                missing = read_attrs(staging).get("missing")
                labels = _labels(pipeline, role)
                if missing is not None:
                    labels["missing"] = missing
                final = pipeline.finalize(read_vectors(staging), role)
                write_vectors(args.out, final, attrs=labels)
                staging.unlink()
            for shard in shards:
                shard.unlink()
            shard_dir.rmdir()
            print(f"merged {len(shards)} shards into {args.out}")
        dist.barrier()
    finally:
        dist.destroy_process_group()


def _fit_postprocess(args) -> None:
    from fisc.data.disc21 import list_images
    from fisc.inference import fit_run_postprocessor, run_postprocess_path

    out = Path(args.out) if args.out else run_postprocess_path(args.checkpoint)
    if out.exists() and not args.overwrite:
        raise FileExistsError(f"{out} exists (pass --overwrite to refit it)")
    path, pp = fit_run_postprocessor(
        args.checkpoint,
        list_images(args.train_images, recursive=args.recursive),
        args.spec,
        out=out,
        batch_size=args.batch_size,
        num_workers=args.workers,
        device=args.device,
        progress=True,
    )
    print(
        f"fitted {pp.spec!r} on {pp.fit_set['count']} training images: "
        f"{pp.in_dims}-d -> {pp.dims}-d, written to {path}"
    )


def _evaluate(args) -> None:
    from fisc.challenge import load_ground_truth
    from fisc.evaluation import evaluate, read_inputs, results_table

    for out in (args.json, args.write_predictions):
        if out and Path(out).exists() and not args.overwrite:
            raise FileExistsError(f"{out} exists (pass --overwrite to replace it)")
    if args.predictions:
        _evaluate_predictions(args)
        return
    queries, references, name = read_inputs(
        args.query or None, args.reference or None, args.submission or None
    )
    if args.postprocess:
        if args.write_predictions:
            raise ValueError("--write-predictions writes one system's list: not with --postprocess")
        _sweep(args, queries, references)
        return
    truth = load_ground_truth(args.gt, disc_ids=args.disc_ids)
    result = evaluate(
        queries,
        references,
        truth,
        predictions_path=args.write_predictions,
        **_eval_options(args),
    )
    print(results_table({name: result}))
    if args.write_predictions:
        print(f"written: {args.write_predictions} ({result.n_predictions} predictions)")
    if args.json:
        result.to_json(args.json)
        print(f"written: {args.json}")
    if args.report:
        from fisc.reports import write_report

        images = _image_files(args.images) if args.images else None
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


def _evaluate_predictions(args) -> None:
    """``fisc evaluate --predictions CSV``: a scored list, as isc2021's compute_metrics.py."""
    from fisc.challenge import load_ground_truth
    from fisc.evaluation import evaluate_predictions, results_table
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
    result = evaluate_predictions(q, r, s, truth, protocol=args.protocol, cap=args.cap)
    print(results_table({Path(args.predictions).stem: result}))
    if args.json:
        result.to_json(args.json)
        print(f"written: {args.json}")


def _augment_gallery(args) -> None:
    import numpy as np
    from omegaconf import OmegaConf

    from fisc.augment.gallery import ops_gallery, pipeline_gallery, save_png
    from fisc.augment.pipeline import AugmentConfig
    from fisc.data.procedural import load_photo, procedural_image
    from fisc.paths import config_dir

    photo = load_photo("astronaut")
    sources = [
        np.asarray(procedural_image(np.random.default_rng([3, 1]), 200, 150), dtype=np.uint8),
        photo if photo is not None else np.zeros((160, 160, 3), np.uint8),
    ]
    out = Path(args.out)
    save_png(ops_gallery(sources), out / "augment_ops.png")
    conf = config_dir() / "augment"
    names = args.pipelines or sorted(p.stem for p in conf.glob("*.yaml"))
    configs = {
        n: AugmentConfig(**OmegaConf.to_container(OmegaConf.load(conf / f"{n}.yaml")))
        for n in names
    }
    others = [
        np.asarray(procedural_image(np.random.default_rng([4, i]), 180, 180), dtype=np.uint8)
        for i in range(4)
    ]
    save_png(pipeline_gallery(configs, sources[1], others), out / "augment_pipelines.png")
    print(f"written: {out / 'augment_ops.png'}, {out / 'augment_pipelines.png'}")


def _eval_options(args) -> dict:
    return {"protocol": args.protocol, "k": args.k, "cap": args.cap, "backend": args.backend,
            "disc_ids": args.disc_ids}  # fmt: skip


def _image_files(folders: list[str]) -> dict[str, Path]:
    from fisc.data.disc21 import list_images

    files = {}
    for folder in folders:
        found = list_images(folder)
        files.update(zip(found.ids, found.paths, strict=True))
    return files


def _sweep(args, queries, references) -> None:
    """Post-processing specs fitted on training descriptors, one table row per spec."""
    import json

    from fisc.challenge import load_ground_truth
    from fisc.descriptors.h5io import read_vectors
    from fisc.files import atomic_path
    from fisc.postprocess import sweep, sweep_table

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
    rows = sweep(
        args.postprocess,
        read_vectors(args.train),
        queries,
        references,
        load_ground_truth(args.gt, disc_ids=args.disc_ids),
        **_eval_options(args),
    )
    print(sweep_table(rows))
    if args.json:
        with atomic_path(args.json) as tmp:
            tmp.write_text(json.dumps(rows, indent=2) + "\n")
        print(f"written: {args.json}")


def _freeze(args) -> None:
    from fisc.export.freeze import freeze

    postprocess = None if args.no_postprocess else (args.postprocess or "run")
    if args.no_postprocess and args.postprocess:
        raise ValueError("give --postprocess FILE or --no-postprocess, not both")
    out = freeze(args.checkpoint, args.out, postprocess=postprocess)
    from fisc.export.card import read_card

    pp = read_card(out).get("postprocess")
    what = f"post-processing {pp['spec']!r} ({pp['dims']}-d)" if pp else "no post-processing"
    print(f"frozen artifact: {out} ({what})")


def _export_runtime(args) -> None:
    from fisc.export.runtime import export_runtimes

    card = export_runtimes(
        args.artifact,
        args.out,
        args.format or ["torchscript", "onnx"],
        dynamic_resolution=args.dynamic_resolution,
        tolerance=args.tolerance,
    )
    for fmt, e in card["exports"].items():
        print(
            f"{fmt:>12}: {Path(args.out) / e['file']}  max |export - eager| "
            f"{e['max_abs_diff']:.2e} over {len(e['checks'])} checks"
        )
    print(f"input {card['input']['shape']}, artifact {card['artifact_hash'][:16]}...")


def _validate_submission(args) -> int:
    from fisc.challenge import validate_submission_main as validate_main

    return validate_main(args.rest)


def _export(args) -> None:
    from omegaconf import OmegaConf

    from fisc.export.phase2 import ExportConfig, export_phase1, run_export

    if args.config is None:
        from fisc.paths import config_dir

        args.config = str(config_dir() / "export" / "default.yaml")
    merged = OmegaConf.merge(OmegaConf.load(args.config), OmegaConf.from_dotlist(args.set))
    values = OmegaConf.to_container(merged, resolve=True)
    known = {f.name for f in dataclasses.fields(ExportConfig)}
    unknown = sorted(set(values) - known)
    if unknown:
        raise SystemExit(f"{args.config}: unknown export keys {unknown}; known: {sorted(known)}")
    ec = ExportConfig(**values)
    if args.command == "export-phase1":
        print(f"phase 1 outputs: {export_phase1(ec)}")
        return
    summary = run_export(ec)
    for key, value in summary.items():
        print(f"{key:>22}: {value}")


def _train(args) -> None:
    """Reached only after top-level options (``fisc -v train ...``); ``fisc train ...`` goes
    straight to Hydra (see :func:`main`)."""
    from fisc.train.app import main as train_main

    train_main(args.overrides, prog="fisc train")


def _demo(args) -> None:
    from fisc.demo import run_demo

    run_demo(args.overrides)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="fisc", description=__doc__.split("\n")[0])
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("minidisc", help="generate the minidisc data set (DISC21 layout)")
    p.add_argument("--root", default="data/minidisc")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--n-train", type=int, default=1000)
    p.add_argument("--n-reference", type=int, default=400)
    p.add_argument("--n-dev-queries", type=int, default=300)
    p.add_argument("--n-phase2-queries", type=int, default=300)
    p.add_argument("--match-fraction", type=float, default=0.25)
    p.add_argument(
        "--n-novel-queries", type=int, default=400, help="novel-edits split (Q90000..); 0: none"
    )
    p.add_argument("--novel-match-fraction", type=float, default=0.4)
    p.add_argument("--image-size", type=int, default=160)
    p.add_argument("--overwrite", action="store_true", help="replace an existing, different set")
    p.set_defaults(func=_minidisc)

    p = sub.add_parser(
        "train",
        help="train a descriptor: the Hydra app of train.py ('fisc train --help' for its options)",
        add_help=False,
    )
    p.add_argument("overrides", nargs=argparse.REMAINDER, help="[-m] [key=value ...]")
    p.set_defaults(func=_train)

    p = sub.add_parser("extract", help="descriptors of a folder of images (HDF5 working format)")
    p.add_argument("--checkpoint", help="a fisc training checkpoint (.ckpt): raw descriptors")
    p.add_argument(
        "--artifact", help="a frozen artifact (fisc freeze): final descriptors of --role"
    )
    p.add_argument(
        "--baseline",
        choices=("untrained", "phash"),
        help="untrained: --checkpoint's backbone before training (random projection, --seed); "
        "phash: 64-bit perceptual hash",
    )
    p.add_argument("--seed", type=int, default=0, help="--baseline untrained: projection seed")
    p.add_argument(
        "--postprocess",
        metavar="run|FILE",
        help="with --checkpoint: apply the run's fitted post-processor (run) or a fitted .npz",
    )
    p.add_argument(
        "--role",
        choices=("query", "reference"),
        help="role of the images for post-processing (default: --split if query/reference)",
    )
    p.add_argument("--images", required=True, help="image folder (e.g. <disc21>/images/reference)")
    p.add_argument(
        "--split",
        choices=("query", "reference", "training"),
        default=None,
        help="check ids against this DISC21 split's format",
    )
    p.add_argument("--gt", help="only the queries listed in this ground-truth CSV")
    p.add_argument("--out", required=True, help="output .h5 (datasets vectors, image_names)")
    p.add_argument("--size", type=int, default=None, help="override the model's eval size")
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--device", default="auto", help="auto (default): cuda if available, else cpu")
    p.add_argument(
        "--on-error",
        choices=("raise", "skip"),
        default="raise",
        help="undecodable image: stop (default) or log, skip and list it",
    )
    p.add_argument("--overwrite", action="store_true")
    p.set_defaults(func=_extract)

    p = sub.add_parser("evaluate", help="μAP, R@P90, recall@1/10 of descriptors or predictions")
    p.add_argument("--query", help="query descriptors (vectors, image_names)")
    p.add_argument("--reference", help="reference descriptors (vectors, image_names)")
    p.add_argument("--submission", help="or one submission file (query, reference, *_ids)")
    p.add_argument(
        "--predictions",
        metavar="CSV",
        help="or a scored list query_id,reference_id,score (isc2021's compute_metrics.py "
        "input; higher = more confident), scored as given",
    )
    p.add_argument("--gt", required=True, help="ground-truth CSV (query_id,reference_id)")
    p.add_argument(
        "--protocol", choices=("leaderboard", "isc2021", "per_query"), default="leaderboard"
    )
    p.add_argument("--k", type=int, default=10, help="per_query protocol: neighbours per query")
    p.add_argument(
        "--cap",
        type=int,
        default=None,
        help="isc2021 protocol: pooled pairs (500000); with --predictions: the most accepted "
        "(default: 500000 under isc2021, no limit otherwise)",
    )
    p.add_argument("--backend", choices=("auto", "faiss", "torch"), default="auto")
    p.add_argument(
        "--disc-ids", action="store_true", help="require DISC21 ids (default: any unique ids)"
    )
    p.add_argument(
        "--report",
        metavar="DIR",
        help="write results, a precision-recall curve (PNG) and an error gallery here",
    )
    p.add_argument(
        "--images",
        action="append",
        metavar="FOLDER",
        help="image folders for the report's gallery (query and reference folders)",
    )
    p.add_argument("--train", help="training-image descriptors, to fit --postprocess on")
    p.add_argument(
        "--postprocess",
        action="append",
        metavar="SPEC",
        help="post-processing spec, e.g. 'l2' or 'center,pca_whiten128,l2,nes10:0.35'"
        "; repeat to sweep several into one table",
    )
    p.add_argument("--json", help="also write the results here")
    p.add_argument(
        "--write-predictions",
        metavar="CSV",
        help="also write the scored list (query_id,reference_id,score; score = -squared L2), "
        "which --predictions scores to the same figures",
    )
    p.add_argument(
        "--overwrite",
        action="store_true",
        help="replace an existing --json or --write-predictions file",
    )
    p.set_defaults(func=_evaluate)

    p = sub.add_parser("augment-gallery", help="PNG grids of every edit op and pipeline")
    p.add_argument(
        "--out", default="docs", help="folder for augment_ops.png, augment_pipelines.png"
    )
    p.add_argument("pipelines", nargs="*", help="conf/augment names (default: all)")
    p.set_defaults(func=_augment_gallery)

    p = sub.add_parser("freeze", help="checkpoint -> frozen artifact (weights, card, golden)")
    p.add_argument("--checkpoint", required=True)
    p.add_argument("--out", required=True, help="artifact folder (must not exist)")
    p.add_argument(
        "--postprocess",
        metavar="FILE",
        help="a fitted post-processor .npz (default: the run's, beside the checkpoint)",
    )
    p.add_argument(
        "--no-postprocess", action="store_true", help="freeze the raw model, no post-processor"
    )
    p.set_defaults(func=_freeze)

    p = sub.add_parser(
        "fit-postprocess",
        help="fit a run's post-processing on training images, beside its checkpoint",
    )
    p.add_argument("--checkpoint", required=True)
    p.add_argument("--train-images", required=True, help="training image folder")
    p.add_argument("--spec", help="post-processing spec (default: the run's recipe spec)")
    p.add_argument("--out", help="output .npz (default: <checkpoint>.postprocess.npz beside it)")
    p.add_argument("--recursive", action="store_true", help="search --train-images recursively")
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--device", default="cpu")
    p.add_argument("--overwrite", action="store_true")
    p.set_defaults(func=_fit_postprocess)

    p = sub.add_parser(
        "export-runtime", help="frozen artifact -> TorchScript/ONNX, checked against eager"
    )
    p.add_argument("artifact", help="artifact folder (from fisc freeze)")
    p.add_argument("--out", required=True, help="runtime folder (must not exist)")
    p.add_argument(
        "--format",
        action="append",
        choices=["torchscript", "onnx"],
        help="repeat for several (default: both)",
    )
    p.add_argument(
        "--dynamic-resolution",
        action="store_true",
        help="dynamic H, W too (refused for 'same'-padding backbones)",
    )
    p.add_argument("--tolerance", type=float, default=1e-5, help="max |export - eager|")
    p.set_defaults(func=_export_runtime)

    p = sub.add_parser(
        "validate-submission", help="check a submission file (docs/protocol.md)", add_help=False
    )
    p.add_argument("rest", nargs=argparse.REMAINDER, help="FILE [--queries LIST] ...")
    p.set_defaults(func=_validate_submission)

    for name, what in (
        ("export-phase1", "frozen artifact -> Phase 1 descriptors, once"),
        ("export-phase2", "freeze/Phase 1 if missing, then the Phase 2 submission"),
    ):
        p = sub.add_parser(name, help=what)
        p.add_argument("--config", help="export config (default: fisc's conf/export/default.yaml)")
        p.add_argument(
            "--set",
            action="append",
            default=[],
            metavar="KEY=VALUE",
            help="override a config value",
        )
        p.set_defaults(func=_export)

    p = sub.add_parser("demo", help="build minidisc, train, extract, evaluate: one table")
    p.add_argument("overrides", nargs="*", help="Hydra overrides, e.g. trainer.max_epochs=2")
    p.set_defaults(func=_demo)
    return parser


def _cuda() -> bool:
    try:
        import torch

        return torch.cuda.is_available()
    except ImportError:
        return False


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    if argv[:1] == ["validate-submission"]:  # its own parser, so its options and -h pass through
        from fisc.challenge import validate_submission_main as validate_main

        return validate_main(argv[1:]) or 0
    if argv[:1] == ["train"]:  # Hydra's own parser: its options (-m, --cfg, --help) pass through
        from fisc.train.app import main as train_main

        train_main(argv[1:], prog="fisc train")  # exits non-zero itself on a failed run
        return 0
    args = build_parser().parse_args(argv)
    if getattr(args, "device", None) == "auto":  # here, not in the parser: --help needs no torch
        args.device = "cuda" if _cuda() else "cpu"
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(levelname)s %(name)s: %(message)s",
    )
    from fisc.malloc import keep_freed_memory

    keep_freed_memory()  # extraction and training allocate per batch (fisc/malloc.py)
    try:
        rc = args.func(args)
    except (OSError, ValueError, KeyError, RuntimeError) as e:
        if args.verbose:
            raise
        # errors re-raised from DataLoader workers carry the worker's traceback: keep the cause
        lines = [line for line in str(e).strip().splitlines() if line.strip()] or [repr(e)]
        print(f"fisc {args.command}: error: {lines[-1]}", file=sys.stderr)
        return 2
    return rc or 0


if __name__ == "__main__":
    sys.exit(main())
