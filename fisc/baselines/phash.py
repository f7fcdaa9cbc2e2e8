"""Perceptual-hash baseline (imagehash's pHash) as an L2-searchable descriptor.

Each bit becomes ±1, so the squared L2 distance between two descriptors is 4 x the Hamming
distance of the hashes: L2 search ranks exactly as Hamming search does.
"""

from __future__ import annotations

import imagehash
import numpy as np
from tqdm.auto import tqdm

from fisc.data.decode import load_rgb
from fisc.data.disc21 import ImageSet
from fisc.descriptors import Descriptors


def phash_vector(img, hash_size: int = 8) -> np.ndarray:
    bits = imagehash.phash(img, hash_size=hash_size).hash.reshape(-1)
    return np.where(bits, 1.0, -1.0).astype(np.float32)


def phash_descriptors(images: ImageSet, hash_size: int = 8, progress: bool = True) -> Descriptors:
    vectors = np.stack(
        [
            phash_vector(load_rgb(path), hash_size)
            for path in tqdm(images.paths, desc="pHash", unit="img", disable=not progress)
        ]
    )
    return Descriptors(np.asarray(images.ids), vectors)
