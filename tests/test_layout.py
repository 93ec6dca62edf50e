"""The package shows the pipeline: imports run one way, down the stages, with no circles.

The graph is read from the source (every ``import`` of a wbvb module, at module level or inside a
function), so a circle cannot hide behind an import moved into a function; then every module is
imported on its own, with no other wbvb module loaded, as a fresh interpreter would.
"""
from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

PACKAGE = Path(__file__).resolve().parent.parent / "wbvb"

# sweep -> teacher -> train -> feed -> store -> models -> config -> {storage, tasks, analysis, distill_types}:
# a unit may import units of a lower rank (and itself); the bottom units may import each other.
RANK = {"sweep": 7, "teacher": 6, "train": 5, "feed": 4, "store": 3, "models": 2, "config": 1,
        "storage": 0, "tasks": 0, "analysis": 0, "distill_types": 0}


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}


def unit(module: str) -> str:
    return module.split(".")[1] if "." in module else ""


def imports(module: str) -> list[tuple[str, int, bool]]:
    """(imported wbvb module, line, inside a function) for every import statement of ``module``."""
    tree = ast.parse(MODULES[module].read_text())
    out = []

    def visit(node, in_function: bool):
        for child in ast.iter_child_nodes(node):
            inner = in_function or isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda))
            if isinstance(child, ast.Import):
                out.extend((a.name, child.lineno, in_function) for a in child.names if a.name.startswith("wbvb"))
            elif isinstance(child, ast.ImportFrom) and child.module and child.module.startswith("wbvb"):
                for a in child.names:  # `from wbvb.x import y`: y may be a module of its own
                    sub = f"{child.module}.{a.name}"
                    out.append((sub if sub in MODULES else child.module, child.lineno, in_function))
            visit(child, inner)

    visit(tree, False)
    return out


GRAPH = {m: sorted({t for t, _, _ in imports(m) if t != m}) for m in MODULES}


def find_cycle(graph: dict[str, list[str]]) -> list[str]:
    """One import circle as a list of modules (first == last), or []."""
    state: dict[str, int] = {}
    stack: list[str] = []

    def dfs(m: str) -> list[str]:
        state[m] = 1
        stack.append(m)
        for n in graph.get(m, []):
            if state.get(n) == 1:
                return stack[stack.index(n):] + [n]
            if n not in state:
                found = dfs(n)
                if found:
                    return found
        stack.pop()
        state[m] = 2
        return []

    for m in graph:
        if m not in state:
            found = dfs(m)
            if found:
                return found
    return []


def test_the_cycle_finder_finds_a_circle():
    assert find_cycle({"a": ["b"], "b": ["c"], "c": ["a"]}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": ["b"], "b": ["c"], "c": []}) == []


def test_no_import_circle():
    cycle = find_cycle(GRAPH)
    assert not cycle, "import circle: " + " -> ".join(cycle)


def test_imports_run_down_the_pipeline():
    units = {unit(m) for m in MODULES} - {""}
    assert units == set(RANK), f"a package or module outside the layout: {sorted(units ^ set(RANK))}"
    wrong = []
    for m, targets in GRAPH.items():
        for t in targets:
            a, b = unit(m), unit(t)
            if a and b and a != b and not (RANK[a] > RANK[b] or RANK[a] == RANK[b] == 0):
                wrong.append(f"{m} imports {t} ({a} -> {b} runs up the pipeline)")
    assert not wrong, "\n".join(wrong)


def test_no_wbvb_import_inside_a_function():
    """An import placed in a function is how a circle hides; third-party lazy imports are not checked."""
    found = [f"{MODULES[m].relative_to(PACKAGE.parent)}:{line} imports {t}"
             for m in MODULES for t, line, inside in imports(m) if inside]
    assert not found, "\n".join(found)


def test_every_module_imports_on_its_own():
    """Each module imported with no other wbvb module loaded first, as a fresh interpreter would."""
    names = [m for m in MODULES if not m.endswith("__main__")]
    code = (
        "import importlib, sys, traceback\n"
        f"failed = []\nfor name in {names!r}:\n"
        "    for k in [k for k in sys.modules if k == 'wbvb' or k.startswith('wbvb.')]:\n"
        "        del sys.modules[k]\n"
        "    try:\n        importlib.import_module(name)\n"
        "    except Exception:\n        failed.append(name + ': ' + traceback.format_exc(limit=3))\n"
        "print('\\n'.join(failed)); sys.exit(1 if failed else 0)\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=PACKAGE.parent,
                         timeout=300)
    assert out.returncode == 0, out.stdout + out.stderr
