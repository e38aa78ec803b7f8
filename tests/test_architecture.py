"""The package's shape: every module imports, no two subpackages import each other — not even through
imports hidden inside functions (a cycle there is a layering mistake waiting for a module-level import) — and no
two modules import each other at module level, directly or through others."""

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
    cycle = find_cycle(graph)
    assert cycle is None, "import cycle: " + " → ".join(cycle)


def module_level_imports(name: str, path: Path, known: set[str]) -> set[str]:
    """The ptyfast modules ``name`` imports when it is imported: the imports at its top level (also inside
    top-level ``if``/``try`` blocks, but not under ``if TYPE_CHECKING``), not those inside functions or classes,
    which run later. ``from a.b import c`` is an import of module ``a.b.c`` when that is a module, else of
    ``a.b``; relative imports are resolved against the module's package."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]

    def statements(body):
        for node in body:
            if isinstance(node, ast.If):
                test = ast.unparse(node.test)
                if "TYPE_CHECKING" not in test:
                    yield from statements(node.body)
                yield from statements(node.orelse)
            elif isinstance(node, ast.Try):
                for block in (node.body, node.orelse, node.finalbody, *(h.body for h in node.handlers)):
                    yield from statements(block)
            else:
                yield node

    out = set()
    for node in statements(ast.parse(path.read_text()).body):
        if isinstance(node, ast.Import):
            out.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join(anchor + ([base] if base else []))
            for alias in node.names:
                out.add(f"{base}.{alias.name}" if f"{base}.{alias.name}" in known else base)
    return {m for m in out if m in known and m != name}


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One cycle of ``graph`` (its nodes in order, the first repeated at the end), or None: a depth-first
    search for a back edge."""
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(v):
        state[v] = 1
        stack.append(v)
        for w in sorted(graph.get(v, ())):
            if state.get(w) == 1:
                return stack[stack.index(w):] + [w]
            if w not in state:
                found = visit(w)
                if found:
                    return found
        stack.pop()
        state[v] = 2
        return None

    for v in sorted(graph):
        if v not in state:
            found = visit(v)
            if found:
                return found
    return None


def test_no_import_cycle_between_modules():
    """No module imports itself through others at import time (ptyfast/, kernels/, export/): the layering holds
    module by module, not only between subpackages. Imports inside functions are lazy and not counted."""
    found = modules()
    known = set(found)
    graph = {name: module_level_imports(name, path, known) for name, path in found.items()}
    cycle = find_cycle(graph)
    assert cycle is None, "module-level import cycle: " + " → ".join(cycle)


def test_the_cycle_finder_finds_cycles():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": set()}) is None


def test_module_level_imports_skip_functions_and_resolve_submodules(tmp_path):
    path = tmp_path / "m.py"
    path.write_text("import ptyfast.a\nfrom ptyfast.pkg import sub, name\nfrom . import sibling\n"
                    "try:\n    from ptyfast import guarded\nexcept ImportError:\n    pass\n"
                    "if TYPE_CHECKING:\n    import ptyfast.typing_only\n"
                    "def f():\n    import ptyfast.lazy\n")
    known = {"ptyfast.a", "ptyfast.pkg", "ptyfast.pkg.sub", "ptyfast.x.sibling", "ptyfast.guarded",
             "ptyfast.typing_only", "ptyfast.lazy"}
    assert module_level_imports("ptyfast.x.m", path, known) == {"ptyfast.a", "ptyfast.pkg", "ptyfast.pkg.sub",
                                                                "ptyfast.x.sibling", "ptyfast.guarded"}


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
