"""Train a copy-detection descriptor: ``python train.py [model=vit_b] [trainer=gpu] [...]``.

The repo's entry to the Hydra app of :mod:`fisc.train.app` (installed: ``fisc train`` or
``fisc-train``, the same app): its docstring tells multirun (``-m key=a,b``) and run dirs.
"""

import os

os.environ.setdefault("WANDB_MODE", "offline")

from fisc.train.app import main  # noqa: E402

if __name__ == "__main__":
    main()
