"""The package's shape, as the style rules state it: no import cycle between modules, no
module over MAX_MODULE_LINES, no function over MAX_FUNCTION_LINES unless it only declares
command-line arguments (marked ARGPARSE_MARK), and no committed profiler dump or large file."""

from __future__ import annotations

import ast
import subprocess
from pathlib import Path

PACKAGE = Path(__file__).resolve().parent.parent / "micronet_export"
MAX_MODULE_LINES = 400
MAX_FUNCTION_LINES = 60
ARGPARSE_MARK = "argparse declarations"
MAX_TRACKED_BYTES = 8 * 1024 * 1024


def _module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imports(path: Path, modules: set[str]) -> set[str]:
    """Modules of the package that ``path`` imports, at any depth (function-level included)."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        names = []
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names = [node.module] + [f"{node.module}.{a.name}" for a in node.names]
        for name in names:
            while name and name not in modules:
                name = name.rpartition(".")[0]
            if name and name != "micronet_export":
                found.add(name)
    return found


def _graph() -> dict[str, set[str]]:
    files = {_module_name(p): p for p in PACKAGE.rglob("*.py")}
    modules = set(files)
    # A package's __init__ importing its own modules is how packages expose their API, and a
    # module importing its parent package only reaches that API: not a cycle of jobs.
    return {m: {i for i in _imports(p, modules) if not i.startswith(m + ".") and not m.startswith(i + ".")}
            for m, p in files.items()}


def test_no_import_cycle():
    graph = _graph()
    state: dict[str, int] = {}
    cycles = []

    def visit(module, stack):
        state[module] = 1
        for dep in sorted(graph.get(module, ())):
            if state.get(dep) == 1:
                cycles.append(stack[stack.index(dep):] + [dep])
            elif dep not in state:
                visit(dep, stack + [dep])
        state[module] = 2

    for module in sorted(graph):
        if module not in state:
            visit(module, [module])
    assert not cycles, cycles


def test_module_and_function_sizes():
    too_long = []
    for path in sorted(PACKAGE.rglob("*.py")):
        text = path.read_text()
        lines = text.count("\n")
        if lines > MAX_MODULE_LINES:
            too_long.append(f"{path.relative_to(PACKAGE)}: {lines} lines")
        for node in ast.walk(ast.parse(text)):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                length = node.end_lineno - node.lineno + 1
                source = ast.get_source_segment(text, node) or ""
                if length > MAX_FUNCTION_LINES and ARGPARSE_MARK not in source:
                    too_long.append(f"{path.relative_to(PACKAGE)}:{node.lineno} {node.name}: {length} lines")
    assert not too_long, too_long


def test_no_profiler_dump_or_large_file_is_tracked():
    root = PACKAGE.parent
    tracked = subprocess.run(["git", "ls-files"], cwd=root, capture_output=True, text=True)
    if tracked.returncode != 0:
        return  # not a git checkout (an installed copy): nothing is tracked
    files = [f for f in tracked.stdout.splitlines() if (root / f).is_file()]
    assert not [f for f in files if Path(f).name.startswith("onnxruntime_profile_")]
    assert not [f for f in files if (root / f).stat().st_size > MAX_TRACKED_BYTES]
