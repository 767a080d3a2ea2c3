"Import layering of headbook/: imports point only downward (ARCHITECTURE.md) and no module-level import cycles."
import ast
from pathlib import Path
import pytest

# Layer of each top-level part of headbook/ (a package or a module). A module may import its own layer and
# anything with a lower number, nothing above. Parts at the same rank may import each other (cycles are
# caught separately). Extend this table when a package is added.
LAYERS = {
    "geometry": 0,
    "models": 1,
    "render": 2, "implicit": 2, "eval": 2,
    "data": 3, "landmarks": 3,
    "fit": 4, "sheap": 4, "nphm": 4, "tempeh": 4, "imavatar": 4,   # methods
    "cli": 5,
}
# Leaves with their own rules: `train` is used by methods and imports only the core below it; `viz` may
# import anything below the methods. Both are given as the highest layer they may import.
LEAVES = {"train": 3, "viz": 3}
# Parts that must not import each other even though they share a layer (no method imports another method).
METHODS = {"fit", "sheap", "nphm", "tempeh", "imavatar"}
# Top-level files that are not part of the layering (re-export or generated index).
IGNORE = {"__init__", "_modidx"}

ROOT = Path(__file__).resolve().parent.parent / "headbook"


def part_of(module: str) -> str:
    "headbook.models.flame -> models; headbook.cli -> cli."
    return module.split(".")[1]


def rank(part: str, as_importer: bool) -> int:
    if part in LEAVES: return LEAVES[part] if as_importer else 3.5   # a leaf sits between data and methods
    if part not in LAYERS: raise KeyError(f"headbook.{part} is in no layer: add it to LAYERS in tests/test_layers.py")
    return LAYERS[part]


def module_name(path: Path, root: Path) -> str:
    rel = path.relative_to(root.parent).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] == "__init__": parts = parts[:-1]
    return ".".join(parts)


def resolve(node: ast.ImportFrom, module: str, is_pkg: bool) -> str:
    "The absolute module an ImportFrom names (relative imports resolved against `module`)."
    if node.level == 0: return node.module or ""
    base = module.split(".") if is_pkg else module.split(".")[:-1]
    base = base[:len(base) - (node.level - 1)]
    return ".".join(base + ([node.module] if node.module else []))


def imports(root: Path = ROOT) -> list[tuple[str, str, int, bool]]:
    "(importer, imported headbook module, line, at module level) for every headbook import under `root`."
    out = []
    for path in sorted(root.rglob("*.py")):
        mod = module_name(path, root); is_pkg = path.name == "__init__.py"
        tree = ast.parse(path.read_text(), str(path))
        top = {id(n) for n in tree.body}
        for node in ast.walk(tree):
            names = []
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = resolve(node, mod, is_pkg)
                names = [base]
                # `from headbook.models import flame` imports the submodule headbook.models.flame
                names += [f"{base}.{a.name}" for a in node.names
                          if (root.parent / Path(*f"{base}.{a.name}".split("."))).with_suffix(".py").exists()]
            for n in names:
                if n == "headbook" or n.startswith("headbook."):
                    out.append((mod, n, node.lineno, id(node) in top))
    return out


def upward_imports(root: Path = ROOT) -> list[str]:
    bad = []
    for mod, target, line, _ in imports(root):
        if mod.count(".") < 1 or target.count(".") < 1: continue      # headbook/__init__ or `import headbook`
        a, b = part_of(mod), part_of(target)
        if a == b or a in IGNORE or b in IGNORE: continue
        if a in METHODS and b in METHODS:
            bad.append(f"{mod}:{line} imports {target}: no method imports another method"); continue
        if rank(b, as_importer=False) > rank(a, as_importer=True):
            bad.append(f"{mod}:{line} imports {target} (layer {b} sits above {a})")
    return bad


def module_cycles(root: Path = ROOT) -> list[list[str]]:
    """Cycles in the graph of imports between headbook modules (a package is its __init__). Imports inside
    functions count too: moving an import into a function hides a cycle from Python, not from the design."""
    graph: dict[str, set[str]] = {}
    for mod, target, _, _ in imports(root):
        graph.setdefault(mod, set())
        if target != mod: graph[mod].add(target)
    cycles, state, stack = [], {}, []
    def visit(n):
        state[n] = 1; stack.append(n)
        for m in sorted(graph.get(n, ())):
            if m not in graph: continue
            if state.get(m) == 1: cycles.append(stack[stack.index(m):] + [m])
            elif m not in state: visit(m)
        stack.pop(); state[n] = 2
    for n in sorted(graph):
        if n not in state: visit(n)
    return cycles


def test_every_part_has_a_layer():
    parts = {p.stem if p.is_file() else p.name for p in ROOT.iterdir()
             if (p.is_dir() and (p / "__init__.py").exists()) or (p.suffix == ".py")}
    missing = sorted(parts - set(LAYERS) - set(LEAVES) - IGNORE)
    assert not missing, f"add these parts of headbook/ to LAYERS in tests/test_layers.py: {missing}"


def test_imports_point_downward():
    bad = upward_imports()
    assert not bad, "upward imports:\n  " + "\n  ".join(bad)


def test_no_import_cycles():
    cyc = module_cycles()
    assert not cyc, "import cycles:\n  " + "\n  ".join(" -> ".join(c) for c in cyc)


def test_models_flame_imports_no_source():
    "The layer knows no head-model source; the sources and the registry import it (issue 11)."
    targets = {t for m, t, _, _ in imports() if m == "headbook.models.flame"}
    assert not targets & {"headbook.models.synthhead", "headbook.models.ict", "headbook.models.assets",
                          "headbook.models.registry", "headbook.models.embeddings"}, targets


def test_checker_catches_upward_import_and_cycle(tmp_path):
    "The checks themselves: an eval module importing data, and a two-module cycle, are both reported."
    pkg = tmp_path / "headbook"
    for d in ("eval", "data", "geometry"):
        (pkg / d).mkdir(parents=True); (pkg / d / "__init__.py").write_text("")
    (pkg / "__init__.py").write_text("")
    (pkg / "eval" / "now.py").write_text("from ..data.now import read_pp\n")
    (pkg / "data" / "now.py").write_text("def read_pp(): pass\n")
    (pkg / "geometry" / "a.py").write_text("from headbook.geometry import b\n")
    (pkg / "geometry" / "b.py").write_text("def f():\n    from .a import x\n")   # a cycle dodged in a function
    assert any("headbook.eval.now" in b and "headbook.data.now" in b for b in upward_imports(pkg))
    assert any(set(c) == {"headbook.geometry.a", "headbook.geometry.b"} for c in module_cycles(pkg))
