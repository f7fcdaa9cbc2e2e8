"""fisc: training and evaluation of image copy-detection descriptors (ISC 2021 / DISC21).

The Python API (README, "Python API")::

    import fisc

    pipeline = fisc.load("artifacts/demo")  # a frozen artifact folder, or a training .ckpt
    queries = pipeline.queries(fisc.list_images("images/query"))
    references = pipeline.references(fisc.list_images("images/reference"))
    result = fisc.evaluate(queries, references, gt="gt.csv")

The names below are imported on first use (PEP 562), so ``import fisc`` loads neither torch
nor timm: the ``fisc`` command's ``--help`` stays fast.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

__version__ = "0.1.0"

# public name -> the module that defines it
_LAZY = {
    "load": "fisc.api",
    "evaluate": "fisc.api",
    "list_images": "fisc.data.disc21",
    "DescriptorPipeline": "fisc.inference",
    "Descriptors": "fisc.descriptors",
    "EvalResult": "fisc.evaluation",
}

__all__ = [
    "DescriptorPipeline",
    "Descriptors",
    "EvalResult",
    "__version__",
    "evaluate",
    "list_images",
    "load",
]

if TYPE_CHECKING:
    from fisc.api import evaluate, load
    from fisc.data.disc21 import list_images
    from fisc.descriptors import Descriptors
    from fisc.evaluation import EvalResult
    from fisc.inference import DescriptorPipeline


def __getattr__(name: str):
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'fisc' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value  # later look-ups skip this function
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_LAZY))
