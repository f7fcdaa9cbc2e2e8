"""``MANIFEST.sha256`` of an artifact (or runtime export) folder: writing it, checking a
folder against it, and writing a folder that gets one when complete."""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from fisc.export.artifact import MANIFEST_FILE, ArtifactError
from fisc.provenance import sha256_of


def _artifact_files(root: Path) -> list[str]:
    """Every file under ``root`` except the manifest, as sorted posix relative paths."""
    return sorted(
        p.relative_to(root).as_posix()
        for p in root.rglob("*")
        if p.is_file() and p.relative_to(root).as_posix() != MANIFEST_FILE
    )


def write_manifest(root: Path) -> str:
    """Write ``MANIFEST.sha256`` for every file under ``root``; return the artifact hash."""
    lines = [f"{sha256_of(root / rel)}  {rel}\n" for rel in _artifact_files(root)]
    (root / MANIFEST_FILE).write_text("".join(lines), encoding="ascii")
    return sha256_of(root / MANIFEST_FILE)


def artifact_hash(root: str | Path) -> str:
    """The artifact's hash: the sha256 of its manifest file (not verified: see verify_manifest)."""
    manifest = Path(root) / MANIFEST_FILE
    if not manifest.is_file():
        raise ArtifactError(f"{manifest}: missing (manifest check)")
    return sha256_of(manifest)


def verify_manifest(root: str | Path) -> str:
    """Check every file against the manifest (present, same sha256, none unlisted);
    return the artifact hash."""
    root = Path(root)
    manifest = root / MANIFEST_FILE
    if not manifest.is_file():
        raise ArtifactError(f"{MANIFEST_FILE}: missing from artifact {root} (manifest check)")
    listed: dict[str, str] = {}
    for n, line in enumerate(manifest.read_text(encoding="ascii").splitlines(), 1):
        digest, sep, rel = line.partition("  ")
        if not sep or len(digest) != 64 or not rel:
            raise ArtifactError(f"{MANIFEST_FILE}:{n}: malformed line {line!r} (manifest check)")
        listed[rel] = digest
    problems = []
    for rel, digest in listed.items():
        path = root / rel
        if not path.is_file():
            problems.append(f"{rel}: listed in the manifest but missing (manifest check)")
        elif sha256_of(path) != digest:
            problems.append(f"{rel}: sha256 differs from the manifest (tampered; manifest check)")
    for rel in _artifact_files(root):
        if rel not in listed:
            problems.append(f"{rel}: not listed in the manifest (manifest check)")
    if problems:
        raise ArtifactError(f"artifact {root} failed verification: " + "; ".join(problems))
    return sha256_of(manifest)


@contextmanager
def manifested_dir(out_dir: Path) -> Iterator[Path]:
    """Yield a temporary sibling folder of ``out_dir`` to fill; on success write its
    ``MANIFEST.sha256``, make it read-only-friendly (0644/0755) and rename it to ``out_dir``
    (which must not exist); on any error remove it."""
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.", suffix=".tmp", dir=out_dir.parent))
    try:
        yield tmp
        write_manifest(tmp)
        for p in [tmp, *tmp.rglob("*")]:
            os.chmod(p, 0o755 if p.is_dir() else 0o644)
        if out_dir.exists():
            raise FileExistsError(f"{out_dir} appeared while it was being written")
        os.rename(tmp, out_dir)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
