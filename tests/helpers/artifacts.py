"""Altering a frozen artifact in the export tests: always on a copy."""

from __future__ import annotations

from pathlib import Path


def copy_artifact(artifact: Path, tmp_path: Path) -> Path:
    """A copy of ``artifact`` in ``tmp_path / "copy"`` (the fixture's artifact stays intact)."""
    import shutil

    dst = tmp_path / "copy"
    shutil.copytree(artifact, dst)
    return dst


def resave_changed_weight(art: Path) -> None:
    """Rewrite ``model.safetensors`` with the projection's weights moved by 0.01 (a valid file,
    other weights)."""
    import torch
    from safetensors.torch import load_file, save_file

    state = load_file(str(art / "model.safetensors"))
    state["projection.weight"] = state["projection.weight"] + 0.01 * torch.ones(1)
    save_file(state, str(art / "model.safetensors"), metadata={"format": "pt"})
