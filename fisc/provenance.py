"""Where a result comes from: the checkout's commit (and whether it has uncommitted changes),
the versions of the packages in use and the sha256 of files.

Run records (``run_info.json``), artifact cards, Phase 1 records and fitted post-processors
name their inputs with these. Light imports only.
"""

from __future__ import annotations

import hashlib
import subprocess
from importlib import metadata
from pathlib import Path

from fisc.paths import source_root

VERSIONED = (
    "fisc",
    "torch",
    "torchvision",
    "pytorch-lightning",
    "timm",
    "kornia",
    "faiss-cpu",
    "hydra-core",
    "wandb",
    "h5py",
    "numpy",
    "pillow",
)


def git_sha() -> str | None:
    """The checkout's commit; ``None`` for an installed fisc (whose folder may sit inside some
    other repository, e.g. a virtualenv in a project's tree)."""
    root = source_root()
    if root is None:
        return None
    try:
        out = subprocess.run(
            ["git", "rev-parse", "HEAD"],
            capture_output=True,
            text=True,
            cwd=root,
            timeout=10,
        )
        return out.stdout.strip() or None
    except (OSError, subprocess.SubprocessError):
        return None


def sha256_of(path: str | Path, chunk: int = 1 << 20) -> str:
    """The sha256 of a file's bytes, as lowercase hex, read ``chunk`` bytes at a time."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def package_versions() -> dict[str, str | None]:
    """The installed version of each of :data:`VERSIONED` (``None``: not installed)."""
    versions = {}
    for name in VERSIONED:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = None
    return versions


def git_dirty() -> bool | None:
    """Whether the checkout has uncommitted changes to tracked files; ``None`` for an installed
    fisc or when git cannot tell."""
    root = source_root()
    if root is None:
        return None
    try:
        out = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            capture_output=True,
            text=True,
            timeout=10,
            cwd=root,
        )
        return bool(out.stdout.strip()) if out.returncode == 0 else None
    except (OSError, subprocess.SubprocessError):
        return None
