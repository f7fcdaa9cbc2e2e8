"""The probe images of an artifact (fisc.export.probes)."""

from __future__ import annotations


def test_probe_images_are_deterministic(tmp_path):
    from fisc.export.probes import synthetic_probe_images

    a = synthetic_probe_images(tmp_path / "a")
    b = synthetic_probe_images(tmp_path / "b")
    assert a.ids == b.ids and len(a) == 8
    assert all(p.read_bytes() == q.read_bytes() for p, q in zip(a.paths, b.paths, strict=True))
