"""The package's shape: every module imports, and no two subpackages import each other — not even through
imports hidden inside functions (a cycle there is a layering mistake waiting for a module-level import)."""

from __future__ import annotations

import ast
import importlib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = {"ptyfast": ROOT / "ptyfast", "ptyfast.kernels": ROOT / "kernels", "ptyfast.export": ROOT / "export"}
OPTIONAL = {"cupy", "tensorrt", "torch", "distributed", "dask", "onnxruntime", "onnx", "dask_cuda"}


def modules() -> dict[str, Path]:
    out = {}
    for pkg, folder in PACKAGES.items():
        for path in folder.rglob("*.py"):
            parts = list(path.relative_to(folder).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts = parts[:-1]
            out[".".join([pkg, *parts])] = path
    return out


def layer(module: str) -> str:
    """The unit of layering: a subpackage (ptyfast.runtime) or a top-level module (ptyfast.scan)."""
    return ".".join(module.split(".")[:2])


def imported(path: Path) -> set[str]:
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.add(node.module)
        elif isinstance(node, ast.Import):
            names.update(a.name for a in node.names)
    return {n for n in names if n.split(".")[0] == "ptyfast"}


@pytest.mark.parametrize("name", sorted(m for m in modules() if not m.endswith("__main__")))  # __main__ runs the CLI
def test_every_module_imports(name):
    try:
        importlib.import_module(name)
    except ModuleNotFoundError as exc:
        if exc.name and exc.name.split(".")[0] in OPTIONAL:
            pytest.skip(f"{name} needs the optional package {exc.name}")
        raise


def test_no_import_cycle_between_subpackages():
    graph: dict[str, set[str]] = {}
    for name, path in modules().items():
        for target in imported(path):
            a, b = layer(name), layer(target)
            if a != b and a != "ptyfast" and b != "ptyfast":  # the root package's __init__ only holds the version
                graph.setdefault(a, set()).add(b)
    # depth-first search for a back edge; report the cycle it closes
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(v):
        state[v] = 1
        stack.append(v)
        for w in sorted(graph.get(v, ())):
            if state.get(w) == 1:
                raise AssertionError("import cycle: " + " → ".join(stack[stack.index(w):] + [w]))
            if w not in state:
                visit(w)
        stack.pop()
        state[v] = 2

    for v in sorted(graph):
        if v not in state:
            visit(v)


@pytest.mark.parametrize("script", sorted(p.name for p in (ROOT / "benchmarks").glob("*.py")))
def test_benchmark_scripts_import_only_what_exists(script):
    """Benchmarks import ptyfast lazily inside main(); a rename must not break them unnoticed (it once did:
    ptychi_compare.py imported a helper that had moved)."""
    missing = []
    for node in ast.walk(ast.parse((ROOT / "benchmarks" / script).read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.split(".")[0] == "ptyfast":
            module = importlib.import_module(node.module)
            for alias in node.names:
                if not hasattr(module, alias.name):
                    try:
                        importlib.import_module(f"{node.module}.{alias.name}")
                    except ImportError:
                        missing.append(f"{node.module}.{alias.name}")
    assert not missing, f"{script} imports names that do not exist: {missing}"
