"""The ``fisc`` command's argument parser: every subcommand's options and help texts."""

from __future__ import annotations

import argparse

from fisc.commands.evaluate import cmd_evaluate
from fisc.commands.export import cmd_export, cmd_export_runtime, cmd_freeze
from fisc.commands.extract import cmd_extract, cmd_fit_postprocess
from fisc.commands.other import (
    cmd_augment_gallery,
    cmd_demo,
    cmd_minidisc,
    cmd_train,
    cmd_validate_submission,
)

DESCRIPTION = "The ``fisc`` command: ``fisc {minidisc,train,extract,evaluate,demo} --help``."


def build_parser() -> argparse.ArgumentParser:
    """The ``fisc`` command's parser: one subparser per command, each bound to its
    ``cmd_<command>`` function (``args.func``)."""
    parser = argparse.ArgumentParser(prog="fisc", description=DESCRIPTION)
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
    p.set_defaults(func=cmd_minidisc)

    p = sub.add_parser(
        "train",
        help="train a descriptor: the Hydra app of train.py ('fisc train --help' for its options)",
        add_help=False,
    )
    p.add_argument("overrides", nargs=argparse.REMAINDER, help="[-m] [key=value ...]")
    p.set_defaults(func=cmd_train)

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
    p.set_defaults(func=cmd_extract)

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
        help="replace an existing --json or --write-predictions file, or a --report DIR report",
    )
    p.set_defaults(func=cmd_evaluate)

    p = sub.add_parser("augment-gallery", help="PNG grids of every edit op and pipeline")
    p.add_argument(
        "--out", default="docs", help="folder for augment_ops.png, augment_pipelines.png"
    )
    p.add_argument("pipelines", nargs="*", help="conf/augment names (default: all)")
    p.set_defaults(func=cmd_augment_gallery)

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
    p.set_defaults(func=cmd_freeze)

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
    p.set_defaults(func=cmd_fit_postprocess)

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
    p.set_defaults(func=cmd_export_runtime)

    p = sub.add_parser(
        "validate-submission", help="check a submission file (docs/protocol.md)", add_help=False
    )
    p.add_argument("rest", nargs=argparse.REMAINDER, help="FILE [--queries LIST] ...")
    p.set_defaults(func=cmd_validate_submission)

    for name, what in (
        ("export-phase1", "frozen artifact -> Phase 1 descriptors, once"),
        ("export-phase2", "freeze/Phase 1 if missing, then the Phase 2 submission"),
    ):
        p = sub.add_parser(name, help=what)
        p.add_argument("--config", help="export config (default: fisc's conf/export.yaml)")
        p.add_argument(
            "--set",
            action="append",
            default=[],
            metavar="KEY=VALUE",
            help="override a config value",
        )
        p.set_defaults(func=cmd_export)

    p = sub.add_parser("demo", help="build minidisc, train, extract, evaluate: one table")
    p.add_argument("overrides", nargs="*", help="Hydra overrides, e.g. trainer.max_epochs=2")
    p.set_defaults(func=cmd_demo)
    return parser
