"""``fisc extract`` (descriptors of a folder of images, in one process or a shard per rank
under torchrun) and ``fisc fit-postprocess``."""

from __future__ import annotations

import os
from pathlib import Path


def extract_source(args):
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


def cmd_extract(args) -> None:
    """``fisc extract``."""
    from fisc.baselines.phash import phash_descriptors
    from fisc.challenge import load_ground_truth
    from fisc.data.disc21 import list_images
    from fisc.descriptors.h5io import write_vectors

    if Path(args.out).exists() and not args.overwrite:
        raise FileExistsError(f"{args.out} exists (pass --overwrite to replace it)")
    images = list_images(args.images, args.split)
    if args.gt:
        images = images.subset(load_ground_truth(args.gt))
    pipeline, role = extract_source(args)
    if pipeline is None:
        descriptors, skipped = phash_descriptors(images, progress=True), []
    elif int(os.environ.get("WORLD_SIZE", "1")) > 1:  # launched by torchrun: a shard per rank
        from fisc.descriptors.sharded import extract_distributed

        merged = extract_distributed(
            pipeline,
            images,
            role,
            args.out,
            labels(pipeline, role),
            batch_size=args.batch_size,
            num_workers=args.workers,
            on_error=args.on_error,
        )
        if merged is not None:  # rank 0: the images every rank skipped, as one list
            print(f"merged {merged} shards into {args.out}")
            report_skipped(args.out, missing_ids(args.out))
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
    write_vectors(args.out, descriptors, attrs=labels(pipeline, role))
    report_skipped(args.out, skipped)
    what = f", {pipeline.postprocess_spec} as {role}" if pipeline and pipeline.postprocessor else ""
    print(
        f"wrote {len(descriptors.ids)} x {descriptors.vectors.shape[1]} descriptors{what} "
        f"to {args.out}"
    )


def labels(pipeline, role) -> dict:
    """File attributes saying what the descriptors are: post-processed (spec) and in which
    role, so that ``fisc evaluate --postprocess`` never post-processes them twice."""
    if pipeline is None or pipeline.postprocessor is None:
        return {"fisc_postprocess": ""}
    return {"fisc_postprocess": pipeline.postprocess_spec, "fisc_role": role}


def cmd_fit_postprocess(args) -> None:
    """``fisc fit-postprocess``."""
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


def missing_ids(out: str | Path) -> list[str]:
    """The ids a merged extraction left out (its ``missing`` attribute): the images skipped."""
    import numpy as np

    from fisc.descriptors.h5io import decode_ids, read_attrs

    missing = read_attrs(out).get("missing")
    return [] if missing is None else decode_ids(np.atleast_1d(missing)).tolist()


def report_skipped(out: str | Path, skipped: list[str]) -> None:
    """``<out>.skipped.txt`` lists the skipped images (one id a line), or is removed when there
    are none, so that no list from an earlier run is left beside a new output."""
    from fisc.files import atomic_path

    skip_file = Path(f"{out}.skipped.txt")
    if skipped:
        with atomic_path(skip_file) as tmp:
            tmp.write_text("\n".join(skipped) + "\n")
        print(f"skipped {len(skipped)} undecodable images, listed in {skip_file}")
    else:
        skip_file.unlink(missing_ok=True)
