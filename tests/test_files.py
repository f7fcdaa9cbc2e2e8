"""fisc.files: atomic writes and the JSON writer the run records, reports and caches use."""

from __future__ import annotations

import json

import pytest

from fisc.files import atomic_path, write_json


def test_write_json_writes_the_json_text_and_a_newline_and_leaves_no_temp_file(tmp_path):
    obj = {"b": [1, 2.5, None], "a": "é ✓", "n": {"x": True}}
    path = tmp_path / "sub" / "r.json"  # parent made on the way
    write_json(path, obj)
    assert path.read_bytes() == (json.dumps(obj, indent=2) + "\n").encode()
    write_json(path, obj, indent=None, sort_keys=True)  # replaces the earlier file
    assert path.read_text() == '{"a": "\\u00e9 \\u2713", "b": [1, 2.5, null], "n": {"x": true}}\n'
    assert [p.name for p in path.parent.iterdir()] == ["r.json"]


def test_a_failed_write_keeps_the_old_file_and_no_temp_file(tmp_path):
    path = tmp_path / "r.json"
    path.write_text("old\n")
    with pytest.raises(TypeError):
        write_json(path, {"x": object()})  # not JSON: fails while writing
    assert path.read_text() == "old\n"
    with pytest.raises(RuntimeError), atomic_path(path) as tmp:
        tmp.write_text("half")
        raise RuntimeError("killed mid-write")
    assert path.read_text() == "old\n"
    assert [p.name for p in tmp_path.iterdir()] == ["r.json"]
