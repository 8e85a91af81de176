"""The autograd layer's imports point one way (tensor -> Function/engine -> ops -> methods)."""

from __future__ import annotations

import ast
from pathlib import Path

import ddpgrad

PACKAGE = Path(ddpgrad.__file__).parent
LAYER = ("tensor", "random", "backend", "autograd", "ops")


def _module_name(path):
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _layer_modules():
    found = {}
    for path in PACKAGE.rglob("*.py"):
        name = _module_name(path)
        if name.split(".")[1:2] and name.split(".")[1] in LAYER:
            found[name] = path
    return found


def _imports(name, path, modules):
    """Layer modules that ``name`` imports, at module level or inside functions."""
    package = name if path.name == "__init__.py" else name.rsplit(".", 1)[0]
    top, nested = set(), set()
    tree = ast.parse(path.read_text())
    top_level = set(map(id, tree.body))
    for node in ast.walk(tree):
        if not isinstance(node, ast.ImportFrom) or not node.level:
            continue
        base = package
        for _ in range(node.level - 1):
            base = base.rsplit(".", 1)[0]
        base = f"{base}.{node.module}" if node.module else base
        submodules = {f"{base}.{a.name}" for a in node.names} & set(modules)
        # ``from . import sub`` loads only ``sub``; any other form also runs the package's __init__
        targets = submodules if node.module is None and len(submodules) == len(node.names) else submodules | {base}
        hits = {t for t in targets if t in modules and t != name}
        (top if id(node) in top_level else nested).update(hits)
    return top, nested


def test_autograd_layer_has_no_function_local_imports_and_no_cycle():
    modules = _layer_modules()
    graph, local = {}, []
    for name, path in modules.items():
        top, nested = _imports(name, path, modules)
        graph[name] = top
        local += [f"{name} imports {n} inside a function" for n in sorted(nested)]
    assert not local, "\n".join(local)

    state = {}

    def visit(node, trail):
        state[node] = "open"
        for nxt in graph[node]:
            if state.get(nxt) == "open":
                raise AssertionError("import cycle: " + " -> ".join(trail + [nxt]))
            if nxt not in state:
                visit(nxt, trail + [nxt])
        state[node] = "done"

    for name in graph:
        if name not in state:
            visit(name, [name])


def test_tensor_module_imports_only_the_backend():
    top, nested = _imports("ddpgrad.tensor", PACKAGE / "tensor.py", _layer_modules())
    assert top == {"ddpgrad.backend"} and not nested


def test_every_tensor_method_that_computes_is_bound_from_the_methods_table():
    from ddpgrad.ops import methods

    table = set(methods.FUNCTIONS) | {n + "_" for n in methods.INPLACE} | set(methods.RESHAPING) | set(methods.BOUND)
    tree = ast.parse((PACKAGE / "tensor.py").read_text())
    tensor_class = next(n for n in tree.body if isinstance(n, ast.ClassDef) and n.name == "Tensor")
    defined_in_tensor_py = {n.name for n in tensor_class.body if isinstance(n, ast.FunctionDef)}
    assert not defined_in_tensor_py & table, sorted(defined_in_tensor_py & table)
    for name in ("sum", "exp", "add_", "__add__", "__iadd__", "backward", "to", "clone", "__setitem__"):
        assert name in table and getattr(ddpgrad.Tensor, name) is not None
