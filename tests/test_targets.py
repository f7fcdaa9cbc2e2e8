"""fisc.targets: finding a config's ``_target_`` and checking the arguments it sets."""

from __future__ import annotations

import collections
import dataclasses
import os.path
import sys

import pytest

from fisc.targets import checked_args, locate, locate_target, target_label


class Refused(ValueError):
    pass


def test_locate_imports_the_longest_module_then_attributes():
    assert locate("os.path.join") is os.path.join
    assert locate("collections.OrderedDict.fromkeys") == collections.OrderedDict.fromkeys
    with pytest.raises(ImportError, match="no module in 'nosuchpackage.x'"):
        locate("nosuchpackage.x")
    with pytest.raises(AttributeError):
        locate("os.path.nosuchname")


def test_locate_reaches_a_submodule_its_package_does_not_import(tmp_path, monkeypatch):
    (tmp_path / "pkg_fisc_test").mkdir()
    (tmp_path / "pkg_fisc_test" / "__init__.py").write_text("")
    (tmp_path / "pkg_fisc_test" / "sub.py").write_text("Y = 2\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    assert locate("pkg_fisc_test.sub.Y") == 2
    for name in ("pkg_fisc_test", "pkg_fisc_test.sub"):
        sys.modules.pop(name, None)


def test_locate_reraises_a_missing_import_inside_an_existing_module(tmp_path, monkeypatch):
    # the module exists but imports a package that does not: that error, not "no module"
    (tmp_path / "brokenpkg_fisc_test.py").write_text("import nosuchdependency_xyz\nX = 1\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    with pytest.raises(ModuleNotFoundError) as info:
        locate("brokenpkg_fisc_test.X")
    assert info.value.name == "nosuchdependency_xyz"
    sys.modules.pop("brokenpkg_fisc_test", None)


def _callable(target, obj):
    if not callable(obj):
        raise TypeError(f"{target} is not callable")


def test_locate_target_names_the_label_and_what_is_wrong():
    kw = dict(label="thing t", error=Refused, what="thing class", example="a.B", check=_callable)
    assert locate_target({"_target_": "os.path.join"}, **kw) is os.path.join
    with pytest.raises(Refused, match=r"^thing t: needs a _target_, the thing class's import "):
        locate_target({"name": "t"}, **kw)
    with pytest.raises(Refused, match=r"\(e\.g\. a\.B\)"):
        locate_target({"_target_": ""}, **kw)
    with pytest.raises(
        Refused, match=r"^thing t: bad: cannot import _target_ 'os\.sep': os\.sep is"
    ):
        locate_target({"_target_": "os.sep"}, **{**kw, "unknown": "bad: "})
    with pytest.raises(Refused, match="cannot import _target_ 'nosuchpackage.X'") as info:
        locate_target({"_target_": "nosuchpackage.X"}, **kw)
    assert isinstance(info.value.__cause__, ImportError)


def test_target_label():
    assert target_label("loss", {"name": "arcface", "_target_": "a.B"}) == "loss arcface"
    assert target_label("optim", {"_target_": "a.B"}) == "optim a.B"
    assert target_label("optim", {}) == "optim (unnamed)"


@dataclasses.dataclass
class Schema:
    margin: float
    scale: int = 3
    tag: str | None = None


def _check(given, **kw):
    base = dict(label="loss x", target="m.X", run_args={"dims": "the size"}, error=Refused)
    return checked_args(given, Schema, **{**base, **kw})


def test_checked_args_converts_only_what_is_given():
    out = _check({"margin": 1, "tag": None})
    assert out == {"margin": 1.0, "tag": None}
    assert type(out["margin"]) is float
    assert _check({"margin": 0.5, "scale": 4}) == {"margin": 0.5, "scale": 4}


def test_checked_args_refusals_name_label_and_key():
    with pytest.raises(
        Refused, match=r"^loss x: \['dims'\] are set by the run \(dims: the size\)!$"
    ):
        _check({"dims": 3, "margin": 1.0}, run_hint="!")
    with pytest.raises(
        Refused,
        match=r"^loss x does not use \['other'\]; remove them "
        r"\(m\.X takes \['margin', 'scale', 'tag'\]; hint\)$",
    ):
        _check({"margin": 1.0, "other": 2}, known_hint="; hint")
    with pytest.raises(Refused, match=r"(?s)^loss x \(m\.X\): .*scale"):
        _check({"margin": 1.0, "scale": "many"})
    with pytest.raises(Refused, match=r"(?s)^loss x \(m\.X\): .*margin"):
        _check({"scale": 2})  # a required argument missing


def test_signature_schema_keeps_the_configurable_parameters():
    from fisc.targets import signature_schema

    class Loss:
        def __init__(self, dims: int, margin: float, *args, scale: int = 3, **kw):
            pass

    hints = {"margin": float, "scale": int}
    schema = signature_schema(
        Loss.__init__, hints, skip={"dims"}, name="LossFields", type_of=lambda h: (h, "t")
    )
    fields = {f.name: f for f in dataclasses.fields(schema)}
    assert schema.__name__ == "LossFields" and list(fields) == ["margin", "scale"]
    assert fields["margin"].type == (float, "t") and fields["scale"].default == 3
    assert fields["margin"].default is dataclasses.MISSING
