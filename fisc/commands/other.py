"""The other ``fisc`` commands: ``minidisc`` and ``augment-gallery`` (generated images), and
``train``, ``demo`` and ``validate-submission``, which hand over to another entry point."""

from __future__ import annotations

from pathlib import Path


def cmd_minidisc(args) -> None:
    """``fisc minidisc``."""
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


def cmd_augment_gallery(args) -> None:
    """``fisc augment-gallery``."""
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


def cmd_train(args) -> None:
    """Reached only after top-level options (``fisc -v train ...``); ``fisc train ...`` goes
    straight to Hydra (see :func:`fisc.cli.main`)."""
    from fisc.train.app import main as train_main

    train_main(args.overrides, prog="fisc train")


def cmd_demo(args) -> None:
    """``fisc demo``."""
    from fisc.demo import run_demo

    run_demo(args.overrides)


def cmd_validate_submission(args) -> int:
    """``fisc validate-submission`` (reached only after top-level options, as
    :func:`cmd_train`)."""
    from fisc.challenge import validate_submission_main as validate_main

    return validate_main(args.rest)
