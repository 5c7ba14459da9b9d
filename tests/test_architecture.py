"""The engine's shape, checked from its source: no import cycle (function-level imports counted),
small modules and functions, the UI kept out, and a front door that opens without torch."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
ENGINE = ROOT / "engine"
MAX_MODULE_LINES = 400
MAX_FUNCTION_LINES = 60
#: the one function allowed to be long: the training loop reads top to bottom (STYLE: one loop)
LONG_FUNCTIONS = {("engine/run/train.py", "run_loop")}


def module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def engine_modules() -> dict[str, Path]:
    return {module_name(p): p for p in ENGINE.rglob("*.py")}


def imports_of(path: Path, modules: set[str]) -> set[str]:
    """The engine modules `path` imports anywhere in it, at the top or inside a function."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        names = []
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            # `from engine import rng` imports the module engine.rng; `from engine.x import f`, engine.x
            names = [f"{node.module}.{a.name}" if f"{node.module}.{a.name}" in modules else node.module for a in node.names]
        for name in names:
            while name and name not in modules:
                name = name.rpartition(".")[0]
            if name:
                found.add(name)
    return found


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected groups of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in graph[v]:
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


def test_no_import_cycle_in_the_engine_counting_function_level_imports():
    modules = engine_modules()
    graph = {name: imports_of(path, set(modules)) - {name} for name, path in modules.items()}
    assert cycles(graph) == []


def test_the_cycle_finder_finds_a_cycle():
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


def test_the_engine_never_imports_the_ui():
    modules = engine_modules()
    for name, path in modules.items():
        tree = ast.parse(path.read_text(encoding="utf-8"))
        imported = {a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
        imported |= {n.module for n in ast.walk(tree) if isinstance(n, ast.ImportFrom) and n.module}
        ui = {m for m in imported if m.split(".")[0] in ("wizard", "questionary", "rich", "prompt_toolkit")}
        assert not ui, f"{name} imports {ui}"


def test_modules_and_functions_stay_small():
    too_long = []
    for path in sorted(ENGINE.rglob("*.py")):
        source = path.read_text(encoding="utf-8")
        where = path.relative_to(ROOT).as_posix()
        if source.count("\n") > MAX_MODULE_LINES:
            too_long.append(f"{where}: {source.count(chr(10))} lines")
        for node in ast.walk(ast.parse(source)):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                length = node.end_lineno - node.lineno + 1
                if length > MAX_FUNCTION_LINES and (where, node.name) not in LONG_FUNCTIONS:
                    too_long.append(f"{where}: {node.name}() {length} lines")
    assert too_long == []


def test_the_front_door_opens_without_torch():
    code = "import sys, engine; print(sorted(engine.__all__)[:3], 'torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=ROOT).stdout
    assert out.strip().endswith("False"), out


#: modules whose docstrings promise no torch: the wizard and preflight import them
TORCH_FREE = (
    "engine.config.rules",
    "engine.data.dataset",
    "engine.data.lint",
    "engine.data.plan",
    "engine.models.checkpoint_file",
    "engine.network.blocks",
    "engine.queue.preflight",
    "engine.run.prompts",
    "wizard.flow",
)


def test_the_torch_free_modules_import_without_torch():
    code = f"import sys; import {', '.join(TORCH_FREE)}; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=ROOT).stdout
    assert out.strip() == "False"
