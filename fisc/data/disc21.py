"""Image sets on disk: the DISC21 layout (``images/{training,reference,query}``) or any folder."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

from fisc.data.ids import check_id

SPLITS = ("training", "reference", "query")
IMAGE_SUFFIXES = frozenset({".jpg", ".jpeg", ".png", ".webp", ".bmp", ".tif", ".tiff", ".gif"})


class DatasetLayoutError(FileNotFoundError):
    """A data set folder that does not have the expected layout."""


@dataclass(frozen=True)
class ImageSet:
    """Image ids and their files, sorted by id."""

    ids: tuple[str, ...]
    paths: tuple[Path, ...]

    def __len__(self) -> int:
        return len(self.ids)

    def subset(self, ids: Iterable[str]) -> ImageSet:
        """The images named by ``ids`` (sorted by id); unknown ids raise ``KeyError``."""
        index = {image_id: i for i, image_id in enumerate(self.ids)}
        wanted = sorted(set(ids))
        missing = [i for i in wanted if i not in index]
        if missing:
            raise KeyError(f"{len(missing)} ids not in the image set, e.g. {missing[:5]}")
        return ImageSet(tuple(wanted), tuple(self.paths[index[i]] for i in wanted))


def list_images(folder: str | Path, split: str | None = None, recursive: bool = False) -> ImageSet:
    """Images under ``folder``; the id is the file name minus its extension.

    With ``split`` (``"training"``, ``"reference"``, ``"query"``) every id must have that
    split's DISC21 format. Without it any image folder serves (e.g. a training set);
    ``recursive`` then also looks in sub-folders and ids become relative paths.
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise DatasetLayoutError(f"image folder {folder} does not exist")
    pattern = "**/*" if recursive else "*"
    found: dict[str, Path] = {}
    for path in folder.glob(pattern):
        if path.suffix.lower() not in IMAGE_SUFFIXES or not path.is_file():
            continue
        rel = path.relative_to(folder).with_suffix("")
        image_id = rel.as_posix()
        if split is not None:
            check_id(split, image_id)
        if image_id in found:
            raise DatasetLayoutError(
                f"two files share the id {image_id!r}: {found[image_id]}, {path}"
            )
        found[image_id] = path
    if not found:
        raise DatasetLayoutError(f"no images ({', '.join(sorted(IMAGE_SUFFIXES))}) in {folder}")
    ids = tuple(sorted(found))
    return ImageSet(ids, tuple(found[i] for i in ids))


class Disc21:
    """A data set in the DISC21 layout under ``root``."""

    def __init__(self, root: str | Path):
        self.root = Path(root)
        if not self.root.is_dir():
            raise DatasetLayoutError(f"data set root {self.root} does not exist")

    def folder(self, split: str) -> Path:
        if split not in SPLITS:
            raise ValueError(f"unknown split {split!r}; expected one of {SPLITS}")
        return self.root / "images" / split

    def images(self, split: str) -> ImageSet:
        folder = self.folder(split)
        if not folder.is_dir():
            layout = f"{self.root}/images/{{{','.join(SPLITS)}}}"
            raise DatasetLayoutError(f"missing split folder {folder} (DISC21 layout: {layout})")
        return list_images(folder, split)

    def queries(self, ground_truth: Mapping[str, str | None]) -> ImageSet:
        """The query images listed in ``ground_truth``, checked against the folders."""
        queries = self.images("query")
        check_ground_truth(ground_truth, queries.ids, self.images("reference").ids)
        return queries.subset(ground_truth)


def check_ground_truth(
    ground_truth: Mapping[str, str | None],
    query_ids: Iterable[str],
    reference_ids: Iterable[str],
) -> None:
    """Raise ``ValueError`` if the ground truth names queries or references that do not exist."""
    queries, references = set(query_ids), set(reference_ids)
    bad_q = sorted(q for q in ground_truth if q not in queries)
    bad_r = sorted({r for r in ground_truth.values() if r is not None and r not in references})
    problems = []
    if bad_q:
        problems.append(f"{len(bad_q)} unknown query ids (e.g. {bad_q[:5]})")
    if bad_r:
        problems.append(f"{len(bad_r)} unknown reference ids (e.g. {bad_r[:5]})")
    if problems:
        raise ValueError("ground truth does not match the images: " + "; ".join(problems))
