"""The shape of the ``fisc`` package: no import cycle, low-level packages free of the training
stack.

The import graph is read from the source with :mod:`ast`, without importing anything: an edge
``a -> b`` for every ``import`` / ``from ... import`` in module ``a`` that names fisc module
``b``, at module level or inside a function (a lazy import still ties the two modules together),
with relative imports resolved. ``from pkg import name`` points at ``pkg.name`` when that is a
module, else at ``pkg``. Imports under ``if TYPE_CHECKING:`` are left out: they never run.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

FISC = Path(__file__).resolve().parents[1] / "fisc"

# low-level packages and modules, usable without the training stack
LOW_LEVEL = (
    "fisc.metrics",
    "fisc.search",
    "fisc.losses",
    "fisc.postprocess",
    "fisc.files",
    "fisc.challenge",
    "fisc.provenance",
    "fisc.targets",
)
TRAINING_STACK = ("pytorch_lightning", "lightning", "lightning_fabric", "hydra", "wandb")


def module_files(root: Path) -> dict[str, Path]:
    """``{dotted module name: file}`` for every ``.py`` file under the package ``root``."""
    modules = {}
    for path in sorted(root.rglob("*.py")):
        parts = list(path.relative_to(root.parent).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        modules[".".join(parts)] = path
    return modules


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _imports(tree: ast.AST) -> list[ast.Import | ast.ImportFrom]:
    """Every import statement of ``tree`` at any depth, except under ``if TYPE_CHECKING:``."""
    found = []
    stack = [tree]
    while stack:
        node = stack.pop()
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            found.append(node)
        if isinstance(node, ast.If) and _is_type_checking(node.test):
            stack.extend(node.orelse)
            continue
        stack.extend(ast.iter_child_nodes(node))
    return found


def imported_names(module: str, is_package: bool, tree: ast.AST) -> list[tuple[str, str | None]]:
    """``(module, name)`` pairs imported by ``module``: ``name`` is ``None`` for ``import m``,
    the imported name for ``from m import name``; relative imports resolved."""
    pairs: list[tuple[str, str | None]] = []
    for node in _imports(tree):
        if isinstance(node, ast.Import):
            pairs += [(alias.name, None) for alias in node.names]
            continue
        base = node.module or ""
        if node.level:
            package = module.split(".") if is_package else module.split(".")[:-1]
            anchor = package[: len(package) - (node.level - 1)]
            base = ".".join(anchor + ([node.module] if node.module else []))
        pairs += [(base, alias.name) for alias in node.names]
    return pairs


def import_graph(root: Path) -> dict[str, set[str]]:
    """``{module: modules of the same package tree it imports}`` (see the module docstring)."""
    files = module_files(root)
    graph: dict[str, set[str]] = {name: set() for name in files}
    for name, path in files.items():
        tree = ast.parse(path.read_text(), filename=str(path))
        for target, imported in imported_names(name, path.name == "__init__.py", tree):
            if imported is not None and f"{target}.{imported}" in files:
                target = f"{target}.{imported}"
            while target and target not in files:  # `import fisc.a.b` of a module fisc.a.b
                target = target.rpartition(".")[0]
            if target and target != name:
                graph[name].add(target)
    return graph


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import cycle ``[a, b, ..., a]`` of ``graph``, or ``None`` when it has none."""
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        path.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                return path[path.index(nxt) :] + [nxt]
            if nxt not in state and (cycle := visit(nxt)) is not None:
                return cycle
        path.pop()
        state[node] = 2
        return None

    for start in sorted(graph):
        if start not in state and (cycle := visit(start)) is not None:
            return cycle
    return None


def test_the_graph_sees_module_level_lazy_and_relative_imports_but_not_type_checking(tmp_path):
    pkg = tmp_path / "pkg"
    (pkg / "sub").mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    (pkg / "sub" / "__init__.py").write_text("from . import c\n")
    (pkg / "a.py").write_text("import os\nfrom pkg.sub import c\n")
    (pkg / "b.py").write_text(
        "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from pkg import a\n"
        "def f():\n    from .sub.c import g\n"
    )
    (pkg / "sub" / "c.py").write_text("def g():\n    from ..b import f\n")
    graph = import_graph(pkg)
    assert graph == {
        "pkg": set(),
        "pkg.a": {"pkg.sub.c"},
        "pkg.b": {"pkg.sub.c"},  # lazy and relative; the TYPE_CHECKING import left out
        "pkg.sub": {"pkg.sub.c"},
        "pkg.sub.c": {"pkg.b"},  # two levels up, inside a function
    }
    cycle = find_cycle(graph)
    assert cycle[0] == cycle[-1] and sorted(cycle[1:]) == ["pkg.b", "pkg.sub.c"]
    assert find_cycle({**graph, "pkg.sub.c": set()}) is None


def test_fisc_has_no_import_cycle():
    graph = import_graph(FISC)
    # the reader sees fisc's imports (a lazy one, a relative one's package): not an empty graph
    assert "fisc.search.torch_knn" in graph["fisc.search.backends"]
    assert "fisc.train.config" in graph["fisc.train.run"]
    cycle = find_cycle(graph)
    assert cycle is None, "import cycle in fisc: " + " -> ".join(cycle)


@pytest.mark.parametrize("low", LOW_LEVEL)
def test_low_level_packages_import_no_training_stack(low):
    files = module_files(FISC)
    checked = {
        name: path for name, path in files.items() if name == low or name.startswith(low + ".")
    }
    assert checked, f"{low} is not a fisc module or package"
    offenders = []
    for name, path in checked.items():
        tree = ast.parse(path.read_text(), filename=str(path))
        for target, _ in imported_names(name, path.name == "__init__.py", tree):
            if target.split(".")[0] in TRAINING_STACK:
                offenders.append(f"{name} imports {target}")
    assert not offenders, "; ".join(offenders)


# the modules that run training (and so may import Lightning, Hydra, W&B); the README's
# "nothing below fisc/train imports Lightning or Hydra" is this test
TRAINING_LAYER = ("fisc.train", "fisc.demo", "fisc.commands", "fisc.cli")


def test_only_the_training_layer_imports_the_training_stack():
    offenders = []
    for name, path in module_files(FISC).items():
        if any(name == top or name.startswith(top + ".") for top in TRAINING_LAYER):
            continue
        tree = ast.parse(path.read_text(), filename=str(path))
        for target, _ in imported_names(name, path.name == "__init__.py", tree):
            if target.split(".")[0] in TRAINING_STACK:
                offenders.append(f"{name} imports {target}")
    assert not offenders, "; ".join(offenders)
