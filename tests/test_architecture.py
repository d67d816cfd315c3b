"""The module dependency order of docs/architecture.md, checked against the imports of the source (module-level and
inside functions alike): a unit imports only itself and units of lower layers, and nerfstudio only from the layers
that say so."""

from __future__ import annotations

import ast
from pathlib import Path

PKG = Path(__file__).resolve().parents[1] / "tttlrm_ns"

# (layer, unit); a unit is a module, a package, or a package's module named on its own. Keep in step with the
# "Dependency order" section of docs/architecture.md.
LAYERS = {
    "tttlrm_ns": 0, "conventions": 0, "sh": 0, "checkpoint_io": 0, "provenance": 0,
    "gaussians": 1, "geometry": 1,
    "render": 2, "model": 2, "data": 2, "synth": 2, "eval.metrics": 2, "eval.lpips_weights": 2, "eval.protocol": 2,
    "eval.holdout_scenes": 2,
    "infer": 3, "triplane": 3,  # triplane: the network, volume rendering, held-out renders (pure torch)
    "train": 4,  # the trainer's parts: config, data, losses, parallel, checkpoints, the Gaussian model kind
    "triplane.train": 5,  # the triplane model kind: built on the trainer's parts, used by the trainer
    "train.kinds": 6, "train.loop": 6, "train.__main__": 6,  # the registry of model kinds and the trainer
    "data.dataparser": 7, "ns": 7, "method_configs": 7, "triplane.ns": 7, "triplane.mesh_export": 7,
    "eval": 8,  # runner, cli, report, scaling, race, stress, learning_curve: the evaluation apps
}
GLUE_LAYER = 7  # the nerfstudio glue, whose units may import each other
NERFSTUDIO_LAYERS = {GLUE_LAYER, 8}


def _unit(module: str) -> str:
    """'tttlrm_ns.data.dataparser' -> 'data.dataparser'; 'tttlrm_ns.render.splat' -> 'render'."""
    parts = module.split(".")[1:]
    for n in (2, 1):
        if ".".join(parts[:n]) in LAYERS:
            return ".".join(parts[:n])
    if not parts or not ((PKG / parts[0]).is_dir() or (PKG / f"{parts[0]}.py").is_file()):
        return "tttlrm_ns"  # the package itself, or a name defined in its __init__ (BUNDLED_CHECKPOINT)
    return parts[0]


def _module(path: Path) -> str:
    return ".".join(path.relative_to(PKG.parent).with_suffix("").parts).removesuffix(".__init__")


def _imports(path: Path, module: str) -> set[str]:
    """Absolute names of everything ``path`` imports (``from a import b`` gives ``a.b``, which may be a module)."""
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:  # relative: resolve against this module's package
                pkg = module.split(".") if path.name == "__init__.py" else module.split(".")[:-1]
                base = ".".join(pkg[: len(pkg) - node.level + 1] + ([base] if base else []))
            names |= {f"{base}.{a.name}" for a in node.names}
    return names


def _graph() -> dict[str, set[str]]:
    edges: dict[str, set[str]] = {}
    for path in PKG.rglob("*.py"):
        module = _module(path)
        src = _unit(module)
        for name in _imports(path, module):
            top = name.split(".")[0]
            if top == "nerfstudio" or top == "tttlrm_ns":
                dst = "nerfstudio" if top == "nerfstudio" else _unit(name)
                if dst != src:
                    edges.setdefault(src, set()).add(dst)
    return edges


def test_every_unit_has_a_layer():
    units = {_unit(_module(p)) for p in PKG.rglob("*.py")}
    assert units <= set(LAYERS), f"units missing from LAYERS (and from docs/architecture.md): {units - set(LAYERS)}"


def test_imports_follow_the_dependency_order():
    """Lower layers only; within a layer only the same package (eval.metrics -> eval.lpips_weights, train.loop ->
    train.kinds) or the nerfstudio glue of layer 7 (ns <-> method_configs <-> data.dataparser <-> triplane.ns)."""
    bad = []
    for src, dsts in sorted(_graph().items()):
        for dst in sorted(dsts):
            if dst == "nerfstudio":
                if LAYERS[src] not in NERFSTUDIO_LAYERS:
                    bad.append(f"{src} (layer {LAYERS[src]}) imports nerfstudio")
                continue
            same_package = src.split(".")[0] == dst.split(".")[0]
            if LAYERS[dst] > LAYERS[src] or (LAYERS[dst] == LAYERS[src] and not same_package and LAYERS[src] != GLUE_LAYER):
                bad.append(f"{src} (layer {LAYERS[src]}) imports {dst} (layer {LAYERS[dst]})")
    assert not bad, "imports against docs/architecture.md:\n" + "\n".join(bad)


def test_the_document_lists_the_same_layers():
    text = (PKG.parent / "docs" / "architecture.md").read_text()
    for unit in LAYERS:
        if unit != "tttlrm_ns":
            shown = unit.replace(".", "/") + ("/" if (PKG / unit.replace(".", "/")).is_dir() else ".py")
            assert shown in text, f"docs/architecture.md does not mention {shown}"


def _module_graph() -> dict[str, set[str]]:
    """module -> the modules of tttlrm_ns it imports (anywhere in the file: module level, functions, TYPE_CHECKING).

    ``from a import b`` names module ``a.b`` if that is a module, else module ``a``. The packages above an imported
    module (whose ``__init__`` Python runs first) are not edges: every submodule would then form a cycle with its own
    package's ``__init__``.
    """
    paths = {_module(p): p for p in PKG.rglob("*.py")}

    def resolve(name: str) -> str | None:
        parts = name.split(".")
        for n in range(len(parts), 0, -1):
            if ".".join(parts[:n]) in paths:
                return ".".join(parts[:n])
        return None

    graph = {}
    for module, path in paths.items():
        graph[module] = {m for name in _imports(path, module) if (m := resolve(name)) is not None and m != module}
    return graph


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """One cycle (as a path a -> ... -> a) per strongly connected component of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    components = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph[v]):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = set()
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.add(w)
                if w == v:
                    break
            if len(component) > 1:
                components.append(component)

    for v in sorted(graph):
        if v not in index:
            visit(v)
    out = []
    for component in components:  # a shortest way back to the start, inside the component
        start = min(component)
        paths = {start: [start]}
        queue = [start]
        while queue:
            v = queue.pop(0)
            for w in sorted(graph[v] & component):
                if w == start:
                    out.append(paths[v] + [start])
                    queue = []
                    break
                if w not in paths:
                    paths[w] = paths[v] + [w]
                    queue.append(w)
    return out


def test_cycle_finder_finds_a_cycle():
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a", "d"}, "d": set(), "e": {"e"}}
    assert _cycles(graph) == [["a", "b", "c", "a"]]
    assert _cycles({"a": {"b"}, "b": set()}) == []


def test_no_import_cycles_between_modules():
    """No module of tttlrm_ns imports, directly or through others, a module that imports it back: a cycle hides a
    dependency the layers do not show, and one import at module level makes the import order matter."""
    cycles = _cycles(_module_graph())
    assert not cycles, "import cycles between modules:\n" + "\n".join(" -> ".join(c) for c in cycles)
