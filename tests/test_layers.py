"""The code's layers (docs/layout.md): each module imports only from its own layer or
the layers below it, and no imports form a cycle. Imports inside functions count as well."""

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).parents[1]

# Bottom to top. A module belongs to the layer of the longest prefix that names it.
LAYERS = [
    ("utilities", ["bnlab", "bnlab.util"]),  # `bnlab` itself holds only the version
    ("science", ["bnlab.norms", "bnlab.models", "bnlab.probes"]),
    ("data", ["bnlab.data"]),
    ("config", ["bnlab.config"]),
    ("store", ["bnlab.store"]),
    ("training", ["bnlab.training"]),
    ("launching", ["bnlab.launch"]),
    ("command lines", ["bnlab.cli"]),
    ("figures", ["experiments"]),
]


def module_names(packages=("bnlab", "experiments")) -> dict[str, Path]:
    names = {}
    for package in packages:
        for path in (ROOT / package).rglob("*.py"):
            parts = list(path.relative_to(ROOT).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts.pop()
            names[".".join(parts)] = path
    return names


def imports_of(source: str, modules) -> set[str]:
    """The modules of `modules` that `source` imports, anywhere in it. `from a import b` imports the module
    a.b where there is one, else a."""
    targets = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            targets.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            for alias in node.names:
                sub = f"{node.module}.{alias.name}"
                targets.add(sub if sub in modules else node.module)
    return {t for t in targets if t in modules}


def import_graph() -> dict[str, set[str]]:
    """{module: the bnlab and experiments modules it imports}."""
    modules = module_names()
    return {name: imports_of(path.read_text(), modules) - {name} for name, path in modules.items()}


def layer_of(module: str) -> int:
    matches = [(len(prefix), i) for i, (_, prefixes) in enumerate(LAYERS) for prefix in prefixes
               if module == prefix or module.startswith(prefix + ".")]
    assert matches, f"{module} belongs to no layer: add it to LAYERS"
    return max(matches)[1]


def upward_imports(graph: dict[str, set[str]]) -> list[str]:
    return sorted(f"{a} ({LAYERS[layer_of(a)][0]}) imports {b} ({LAYERS[layer_of(b)][0]})"
                  for a, targets in graph.items() for b in targets if layer_of(b) > layer_of(a))


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """One cycle through each strongly connected group of modules (Tarjan's algorithm)."""
    index, low, on_stack, stack, found = {}, {}, set(), [], []

    def visit(v):
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph.get(v, ())):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            group = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                group.append(w)
                if w == v:
                    break
            if len(group) > 1:
                found.append(sorted(group))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


def test_every_module_imports_only_its_own_layer_and_those_below():
    assert upward_imports(import_graph()) == []


def test_no_import_cycles():
    assert cycles(import_graph()) == []


def test_every_module_has_a_layer_and_the_layers_are_all_used():
    graph = import_graph()
    used = {layer_of(m) for m in graph}
    assert used == set(range(len(LAYERS)))


def test_the_checks_catch_an_upward_import_and_a_cycle():
    graph = {"bnlab.config": {"bnlab.store.runs"}, "bnlab.store.runs": {"bnlab.config"},
             "bnlab.data.cifar10": {"bnlab.util.files"}}
    assert upward_imports(graph) == ["bnlab.config (config) imports bnlab.store.runs (store)"]
    assert cycles(graph) == [["bnlab.config", "bnlab.store.runs"]]
    with pytest.raises(AssertionError, match="no layer"):
        layer_of("somewhere.else")


def test_the_import_graph_sees_every_kind_of_import():
    modules = module_names()
    source = ("import numpy\nimport bnlab.config\nfrom bnlab import store\nfrom bnlab.store import lock, find_run\n"
              "def f():\n    from experiments.lib.runs import sweep\n")
    assert imports_of(source, modules) == {"bnlab.config", "bnlab.store", "bnlab.store.lock", "experiments.lib.runs"}
    graph = import_graph()
    assert "bnlab.store.runs" in graph["bnlab.store"]  # the package re-exports the run store
    assert "bnlab.data.cifar10" in graph["bnlab.data.datasets"]


def test_a_figure_module_imports_no_other_figure_module():
    """What figures share lives in experiments.lib, so a figure reads on its own."""
    graph = import_graph()
    figures = {m for m in graph if m.startswith("experiments.") and m.count(".") == 1 and m != "experiments.cli"}
    from experiments import figure_names

    assert figures == {f"experiments.{name.replace('-', '_')}" for name in figure_names()}  # one module per figure
    assert sorted(f"{a} imports {b}" for a in figures for b in graph[a] if b in figures) == []
