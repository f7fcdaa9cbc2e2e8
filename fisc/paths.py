"""Where fisc's files are: the Hydra config tree, and the source checkout when there is one.

In a checkout (``pip install -e .``, or ``python train.py`` at the repo root) the configs are
the repo's top-level ``conf/``, so that an edit there is what runs. A wheel carries a copy of
that tree as ``fisc/conf`` (``pyproject.toml`` maps ``conf/`` there at build time), used when
fisc is not running from a checkout. Light imports only: ``fisc --help`` uses this.
"""

from __future__ import annotations

from pathlib import Path

PACKAGE_DIR = Path(__file__).resolve().parent


def source_root() -> Path | None:
    """The checkout this ``fisc`` package is imported from (the folder holding ``fisc/``,
    ``conf/`` and ``pyproject.toml``), or ``None`` for an installed copy."""
    root = PACKAGE_DIR.parent
    if (root / "pyproject.toml").is_file() and (root / "conf" / "train.yaml").is_file():
        return root
    return None


def config_dir() -> Path:
    """The Hydra config tree (holding ``train.yaml``): the checkout's ``conf/``, otherwise the
    copy packaged inside fisc."""
    root = source_root()
    if root is not None:
        return root / "conf"
    packaged = PACKAGE_DIR / "conf"
    if not (packaged / "train.yaml").is_file():
        raise FileNotFoundError(
            f"fisc's configs are missing: neither a checkout's conf/ beside {PACKAGE_DIR} nor "
            f"the packaged {packaged}/train.yaml (reinstall fisc from its wheel or checkout)"
        )
    return packaged
