"""The minidisc specs the tests build, in one place."""

from __future__ import annotations

from fisc.data.minidisc import MinidiscSpec

# the session's tiny minidisc (``tiny_minidisc`` in tests/conftest.py), read by the training,
# inference and export tests: 12 queries in each phase, 16 references
TINY_SPEC = MinidiscSpec(
    n_train=24,
    n_reference=16,
    n_dev_queries=12,
    n_phase2_queries=12,
    n_novel_queries=12,
    match_fraction=0.5,
    image_size=64,
    seed=0,
)

# tests/test_minidisc.py's builds (twice, compared byte for byte): 0.25 x 10 queries a phase
# gives 2.5 matches, to check the rounding
SMALL_SPEC = MinidiscSpec(
    n_train=20,
    n_reference=15,
    n_dev_queries=10,
    n_phase2_queries=10,
    match_fraction=0.25,
    image_size=64,
    seed=3,
    n_novel_queries=20,
)
