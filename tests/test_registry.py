"""The one op registry (fisc.augment.registry): one entry per op name with its CPU and/or GPU
implementation, clear errors for a missing one, shared validation, no import cycle."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

from fisc.augment.gpu import GPU_OPS, GpuOp, build_gpu_op
from fisc.augment.ops import OPS, Op, build_op
from fisc.augment.pipeline import AugmentConfig
from fisc.augment.registry import REGISTRY, OpConfigError, OpSpec, Param, Registry

REPO = Path(__file__).resolve().parent.parent
# written out here, not read from the registry: what each side is documented to hold
CPU_ONLY = {
    "crop", "pad", "resize", "aspect", "rotate", "rotate90", "skew", "jpeg", "pixelize",
    "shuffle_pixels", "brightness", "contrast", "saturation", "hue", "opacity", "channel",
    "text", "emoji", "stripes", "meme", "screenshot", "paste_onto", "overlay_image",
}  # fmt: skip
BOTH = {"blur", "sharpen", "noise", "color_jitter", "grayscale", "hflip", "vflip", "perspective"}
GPU_ONLY = {"affine", "resized_crop", "erasing"}


def _subclasses(base: type) -> set[type]:
    out = set()
    for sub in base.__subclasses__():
        out |= {sub} | _subclasses(sub)
    return out


def test_one_entry_per_name_with_the_implementations_it_claims():
    expected = {n: ("cpu",) for n in CPU_ONLY}
    expected |= {n: ("cpu", "gpu") for n in BOTH} | {n: ("gpu",) for n in GPU_ONLY}
    assert {name: entry.kinds for name, entry in REGISTRY.entries.items()} == expected
    for name, entry in REGISTRY.entries.items():
        assert entry.name == name
        if entry.cpu is not None:
            assert issubclass(entry.cpu, Op) and entry.cpu.name == name and OPS[name] is entry.cpu
        if entry.gpu is not None:
            assert issubclass(entry.gpu, GpuOp) and entry.gpu.name == name
            assert GPU_OPS[name] is entry.gpu
    assert len(OPS) == len(CPU_ONLY | BOTH) and len(GPU_OPS) == len(BOTH | GPU_ONLY)
    assert "jpeg" not in GPU_OPS and "affine" not in OPS
    # every concrete op class of either side is the registered one for its (name, kind)
    for base in (Op, GpuOp):
        for cls in _subclasses(base):
            if cls.name and cls.__module__.startswith("fisc."):
                assert REGISTRY.entries[cls.name].impls[cls.kind] is cls


def test_an_implementation_that_does_not_exist_fails_clearly():
    with pytest.raises(OpConfigError, match=r"unknown GPU op 'jpeg': it has only a CPU") as e:
        build_gpu_op("jpeg", {"p": 0.5})
    listed = str(e.value).split("known GPU ops:")[1]
    assert all(repr(n) in listed for n in BOTH | GPU_ONLY) and "'jpeg'" not in listed
    with pytest.raises(OpConfigError, match=r"unknown CPU op 'affine': it has only a GPU"):
        build_op("affine")
    with pytest.raises(OpConfigError, match=r"unknown GPU op 'fancy'; known GPU ops: \["):
        build_gpu_op("fancy")
    # from a config: a CPU-only op named in a view's gpu stage stops the build
    with pytest.raises(OpConfigError, match=r"views\[0\]\.gpu: unknown GPU op 'jpeg'"):
        AugmentConfig(views=[{"stages": [], "gpu": {"jpeg": {"p": 0.5}}}]).build(32)


def test_a_name_takes_one_implementation_per_kind():
    reg = Registry()

    class CpuThing(OpSpec):
        name, kind = "thing", "cpu"

    class GpuThing(OpSpec):
        name, kind = "thing", "gpu"

    class CpuAgain(OpSpec):
        name, kind = "thing", "cpu"

    reg.register(CpuThing)
    reg.register(GpuThing)
    assert list(reg.entries) == ["thing"] and reg.entries["thing"].impls == {
        "cpu": CpuThing,
        "gpu": GpuThing,
    }
    with pytest.raises(ValueError, match="registered twice"):
        reg.register(CpuAgain)
    assert reg.get("thing", "cpu") is CpuThing
    assert isinstance(reg.build("thing", "gpu", {"p": 0.25}), GpuThing)


def test_both_sides_validate_a_config_alike():
    """Names shared by both sides check p and unknown keys with the same code and messages."""
    for name in sorted(BOTH):
        for build in (build_op, build_gpu_op):
            with pytest.raises(OpConfigError, match=rf"{name}\.p must be in \[0, 1\], got 1\.5"):
                build(name, {"p": 1.5})
            with pytest.raises(OpConfigError, match=rf"{name}\.p must be a number"):
                build(name, {"p": "often"})
            with pytest.raises(OpConfigError, match=rf"op '{name}' has no parameter\(s\) \['x'\]"):
                build(name, {"x": 1})
            with pytest.raises(OpConfigError, match="config must be a mapping"):
                build(name, [("p", 0.5)])
    # OmegaConf lists are plain ranges on both sides
    from omegaconf import OmegaConf

    cfg = OmegaConf.create({"p": 0.5, "sigma": [1.0, 2.0]})
    assert build_op("blur", cfg).values["sigma"] == (1.0, 2.0)
    assert build_gpu_op("blur", cfg).values["sigma"] == (1.0, 2.0)
    # at(): the same intensity rule on both sides
    spec = {"sigma": Param((1.0, 3.0))}
    for base in (Op, GpuOp):
        cls = type("Probe", (base,), {"name": "probe", "params": spec})
        assert cls.at(0.25).values["sigma"] == (1.5, 1.5) and cls.at(0.25).p == 1.0


def _module_imports(path: Path, package: str) -> set[str]:
    """The ``fisc.augment`` modules that ``path`` imports at module level (not in functions)."""
    root = REPO / "fisc" / "augment"

    def resolve(name: str) -> str | None:
        rel = Path(*name.split(".")[2:]) if name.count(".") >= 2 else Path()
        if (root / rel).with_suffix(".py").is_file():
            return name
        return name if (root / rel / "__init__.py").is_file() else None

    found = set()
    for node in ast.parse(path.read_text(encoding="utf-8")).body:
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names if a.name.startswith(package)}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            if not node.module.startswith(package):
                continue
            # `from pkg import module`: the modules; `from module import name`: the module
            modules = {m for m in (f"{node.module}.{a.name}" for a in node.names) if resolve(m)}
            found |= modules or {node.module}
    return found


def test_augment_modules_import_without_a_cycle():
    root = REPO / "fisc" / "augment"
    graph = {}
    for path in root.rglob("*.py"):
        parts = path.relative_to(REPO).with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        graph[name] = _module_imports(path, "fisc.augment")
    assert {"fisc.augment.registry", "fisc.augment.gpu.base", "fisc.augment.ops.base"} <= set(graph)
    assert graph["fisc.augment.registry"] == set()  # the registry imports no implementation

    def visit(node: str, path: list[str], done: set[str]) -> None:
        if node in path:
            raise AssertionError(f"import cycle: {' -> '.join(path[path.index(node) :] + [node])}")
        if node in done:
            return
        for nxt in graph.get(node, ()):
            visit(nxt, path + [node], done)
        done.add(node)

    done: set[str] = set()
    for module in graph:
        visit(module, [], done)


def test_cpu_ops_load_without_torch():
    """DataLoader workers and the minidisc generator build CPU ops: no torch, no kornia. A
    view naming a GPU-only op in a CPU stage still hears that it is one (the GPU side is
    loaded for that error)."""
    code = (
        "import sys, fisc.augment.ops, fisc.augment.pipeline as P\n"
        "P.AugmentConfig(views=[{'stages': [{'ops': {'crop': {}}}]}]).build(32)\n"
        "print(sorted(m for m in ('torch', 'kornia', 'fisc.augment.gpu') if m in sys.modules))\n"
        "try:\n"
        "    P.AugmentConfig(views=[{'stages': [{'ops': {'affine': {}}}]}]).build(32)\n"
        "except P.OpConfigError as e:\n"
        "    print(e)\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, check=True
    )
    loaded, error = out.stdout.strip().split("\n")
    assert loaded == "[]"
    assert error.startswith("augment.views[0].stages[0]: unknown CPU op 'affine': it has only")
    assert "only a GPU implementation" in error
