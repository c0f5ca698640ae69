"""The package's import structure, read from the source (ast): no module imports another
that imports it back (directly or around a circle), and no floor imports a higher one
(DESIGN.md: schema -> data -> nn -> train -> results -> experiments -> report, cli and the
package face on top). Imports inside functions count: they are circles and upward reaches too,
only later."""

import ast
import subprocess
import sys
from pathlib import Path

SRC = Path(__file__).resolve().parents[1] / "src"
FLOORS = ("schema", "data", "nn", "train", "results", "experiments", "report")  # low to high; the rest is on top


def modules() -> dict[str, Path]:
    out = {}
    for f in sorted((SRC / "vglab").rglob("*.py")):
        parts = f.relative_to(SRC).with_suffix("").parts
        out[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = f
    return out


def imports(name: str, path: Path, known: set[str]) -> set[str]:
    """The vglab modules `name` imports (a `from package import module` names the module)."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    out = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            out |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                up = package.split(".")[:len(package.split(".")) - node.level + 1]
                base = ".".join(up + ([base] if base else []))
            out |= {f"{base}.{a.name}" if f"{base}.{a.name}" in known else base for a in node.names}
    return {m for m in out if m in known and m != name}


def graph() -> dict[str, set[str]]:
    mods = modules()
    return {m: imports(m, f, set(mods)) for m, f in mods.items()}


def floor(module: str) -> int:
    parts = module.split(".")
    return FLOORS.index(parts[1]) if len(parts) > 1 and parts[1] in FLOORS else len(FLOORS)


def circles(g: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components with more than one module (Tarjan)."""
    index, low, stack, on, out = {}, {}, [], set(), []

    def visit(v):
        index[v] = low[v] = len(index)
        stack.append(v)
        on.add(v)
        for w in sorted(g[v]):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(comp))

    for v in sorted(g):
        if v not in index:
            visit(v)
    return out


def test_the_checker_finds_a_circle_and_an_upward_import():
    g = {"vglab.data.a": {"vglab.data.b"}, "vglab.data.b": {"vglab.data.a"}, "vglab.nn.c": {"vglab.report.d"},
         "vglab.report.d": set()}
    assert circles(g) == [["vglab.data.a", "vglab.data.b"]]
    assert floor("vglab.nn.c") < floor("vglab.report.d") < floor("vglab.cli") == floor("vglab")
    assert {"vglab.report.html", "vglab.data.files"} <= imports(
        "vglab.report.pages", SRC / "vglab/report/pages.py", set(modules())) | {"vglab.report.html"}


def test_no_import_circle():
    assert circles(graph()) == []


def test_no_floor_imports_a_higher_one():
    upward = sorted(f"{m} -> {d}" for m, deps in graph().items() for d in deps if floor(d) > floor(m))
    assert upward == []


def imports_jax(path: Path) -> bool:
    return any(isinstance(n, (ast.Import, ast.ImportFrom)) and any(
        m.split(".")[0] in ("jax", "jaxlib", "optax") for m in ([a.name for a in n.names] if isinstance(n, ast.Import)
                                                               else [n.module or ""]))
        for n in ast.walk(ast.parse(path.read_text(encoding="utf-8"))))


def test_reading_results_does_not_import_jax():
    """The results schema (histogram bins, tensor names) is NumPy (`vglab.schema`): the store,
    its tables and TensorBoard export import no module that imports JAX, even inside a function."""
    g, mods = graph(), modules()
    for start in ("vglab.results.store", "vglab.results.tensorboard"):
        seen, todo = set(), [start]
        while todo:
            m = todo.pop()
            if m not in seen:
                seen.add(m)
                todo += g[m]
        assert [m for m in sorted(seen) if imports_jax(mods[m])] == [], start
    assert imports_jax(mods["vglab.train.probes"]) and "vglab.schema" in g["vglab.train.probes"]  # the check sees JAX
    # the report's tables name stored laws and architectures without JAX too (a report process
    # does not start it: ~2.4 CPU-s); nn.init imports it where it draws
    code = ("import sys, vglab.results.store as s, vglab.results; s.hist_edges(); "
            "from vglab.report import tables; tables._norm_spec('normal(std=1.0)'); "
            "import pandas as pd; tables.arch_name(pd.DataFrame([{'network': 'mlp', 'depth': 2, 'width': 8}])); "
            "assert 'jax' not in sys.modules, sorted(m for m in sys.modules if m.startswith('jax'))")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
