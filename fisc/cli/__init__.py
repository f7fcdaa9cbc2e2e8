"""The ``fisc`` command: ``fisc {minidisc,train,extract,evaluate,demo} --help``.

The parser is :mod:`fisc.cli.parser`; what each command does, :mod:`fisc.commands`.
Convention: inputs and outputs are named options (``--images``, ``--out``, ``--gt``...);
every command exits non-zero with a one-line error on bad input.
"""

from __future__ import annotations

import logging
import os
import sys

from fisc.cli.parser import build_parser

__all__ = ["build_parser", "main"]

for _key, _value in (("WANDB_MODE", "offline"),):
    os.environ.setdefault(_key, _value)


ERRORS = (OSError, ValueError, KeyError, RuntimeError)  # bad input: one line, exit 2


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

        try:  # exit 1 is an invalid file; an unreadable id list is bad input, as below
            return validate_main(argv[1:]) or 0
        except ERRORS as e:
            return _error("validate-submission", e)
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
    except ERRORS as e:
        if args.verbose:
            raise
        return _error(args.command, e)
    return rc or 0


def _error(command: str, e: BaseException) -> int:
    """Report ``e`` as ``fisc <command>: error: ...`` (one line on stderr); the exit status 2."""
    # errors re-raised from DataLoader workers carry the worker's traceback: keep the cause
    lines = [line for line in str(e).strip().splitlines() if line.strip()] or [repr(e)]
    print(f"fisc {command}: error: {lines[-1]}", file=sys.stderr)
    return 2
