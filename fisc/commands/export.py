"""``fisc freeze`` (checkpoint -> frozen artifact), ``fisc export-runtime`` (TorchScript /
ONNX) and ``fisc export-phase1`` / ``export-phase2`` (submission files)."""

from __future__ import annotations

import dataclasses
from pathlib import Path


def cmd_freeze(args) -> None:
    """``fisc freeze``."""
    from fisc.export.freeze import freeze

    postprocess = None if args.no_postprocess else (args.postprocess or "run")
    if args.no_postprocess and args.postprocess:
        raise ValueError("give --postprocess FILE or --no-postprocess, not both")
    out = freeze(args.checkpoint, args.out, postprocess=postprocess)
    from fisc.export.card import read_card

    pp = read_card(out).get("postprocess")
    what = f"post-processing {pp['spec']!r} ({pp['dims']}-d)" if pp else "no post-processing"
    print(f"frozen artifact: {out} ({what})")


def cmd_export_runtime(args) -> None:
    """``fisc export-runtime``."""
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


def cmd_export(args) -> None:
    """``fisc export-phase1`` and ``fisc export-phase2``."""
    from omegaconf import OmegaConf

    from fisc.export.phase2 import ExportConfig, export_phase1, run_export

    if args.config is None:
        from fisc.paths import config_dir

        args.config = str(config_dir() / "export.yaml")
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
