"""No import circle in the project: the csd package and scripts/ read as a graph of imports (every import statement,
at module level or inside a function, parsed with ast, nothing imported) has no cycle."""
from __future__ import annotations

import ast
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def module_files() -> dict[str, Path]:
    """Module name -> file: csd.* by package path, scripts/<name>.py as `scripts.<name>` (a script imports another
    by its bare name, scripts/ being on sys.path)."""
    modules = {}
    for path in sorted((REPO / "csd").rglob("*.py")):
        parts = path.relative_to(REPO).with_suffix("").parts
        modules[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    for path in sorted((REPO / "scripts").glob("*.py")):
        modules[f"scripts.{path.stem}"] = path
    return modules


def imported(name: str, path: Path, modules: dict[str, Path]) -> set[str]:
    """The project modules ``name`` (in ``path``) imports: the named module, or for ``from package import name`` the
    submodule when there is one; relative imports resolved. Naming a submodule is not counted as importing its
    package's __init__ too (Python runs it first, but a package whose __init__ gathers its submodules is no circle)."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    targets = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                base = ".".join([*package.split(".")[:len(package.split(".")) - node.level + 1], base]).strip(".")
            names = [f"{base}.{alias.name}" if f"{base}.{alias.name}" in modules else base for alias in node.names]
        else:
            continue
        for target in names:
            if name.startswith("scripts.") and f"scripts.{target}" in modules:
                target = f"scripts.{target}"
            while target and target not in modules:  # `import csd.x.name` of a function: its module
                target = target.rpartition(".")[0]
            if target:
                targets.add(target)
    return targets - {name}


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components with more than one module (Tarjan), each sorted."""
    index, low, stack, on_stack, found = {}, {}, [], set(), []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for target in sorted(graph.get(node, ())):
            if target not in index:
                visit(target)
                low[node] = min(low[node], low[target])
            elif target in on_stack:
                low[node] = min(low[node], index[target])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return found


def import_graph() -> dict[str, set[str]]:
    modules = module_files()
    return {name: imported(name, path, modules) for name, path in modules.items()}


def test_the_cycle_finder_finds_a_circle():
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert cycles({"a": {"b"}, "b": set()}) == []


def test_relative_imports_resolve_to_their_module(tmp_path):
    (tmp_path / "loss.py").write_text("from . import base\nfrom .base import Objective\nfrom ..config import compose\n")
    modules = {"csd.config": None, "csd.losses": None, "csd.losses.base": None, "csd.losses.loss": None}
    assert imported("csd.losses.loss", tmp_path / "loss.py", modules) == {"csd.losses.base", "csd.config"}


def test_imports_are_read_from_every_kind_of_statement():
    graph = import_graph()
    assert "csd.results.collect" in graph["csd.results.publish"]           # from csd.results.collect import ...
    assert "csd.results.plots" in graph["csd.results.publish"]             # inside a function
    assert {"csd.results.collect", "csd.results.publish"} <= graph["scripts.collect_results"]
    assert "scripts.mini_table1" in graph["scripts.quickstart"]           # a script importing a script by bare name
    assert "csd.losses.base" in graph["csd.losses.divergences"]            # a module-level import


def test_the_project_has_no_import_cycle():
    assert cycles(import_graph()) == []
