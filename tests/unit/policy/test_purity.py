"""The policy core stays pure: no grpc, no clock, no I/O on the deciding path."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

import gateway.policy

PACKAGE = Path(gateway.policy.__file__).parent
MODULES = sorted(PACKAGE.rglob("*.py"))  # with the CEL compiler in policy/cel/
CLOCKS = {"now", "utcnow", "today", "time", "monotonic", "perf_counter", "time_ns"}


@pytest.mark.parametrize("path", MODULES, ids=[p.relative_to(PACKAGE).as_posix() for p in MODULES])
def test_no_grpc_and_no_clock(path: Path) -> None:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            assert not any(a.name.split(".")[0] == "grpc" for a in node.names), path.name
        if isinstance(node, ast.ImportFrom):
            assert (node.module or "").split(".")[0] != "grpc", path.name
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute):
            assert node.func.attr not in CLOCKS, f"{path.name}:{node.lineno} reads a clock"


def test_deciding_does_not_import_grpc() -> None:
    # Deciding must not need grpc (gateway.errors, which the loader raises from, imports none).
    code = (
        "import sys\n"
        "from gateway.policy import evaluate, explain, Caller, AccessRequest, Decision\n"
        "from gateway.policy.cel import compile_condition\n"
        "import gateway.errors\n"
        "compile_condition('resource.name.matches(\"^projects/\")')\n"
        "assert 'grpc' not in sys.modules, 'grpc imported'\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, cwd=PACKAGE.parent.parent)


# Every module of the package, subpackages included (the CEL compiler in policy/cel/, or
# policy/conditions.py where it still stands).
EVERY_MODULE = sorted(PACKAGE.rglob("*.py"))
# The reading half: the loader reads policy files. Every other module is the deciding half.
READING = {"loader.py"}
DECIDING = [p for p in EVERY_MODULE if p.relative_to(PACKAGE).as_posix() not in READING]
FILE_MODULES = {"os", "io", "pathlib", "shutil", "tempfile", "glob", "fileinput", "mmap"}
FILE_CALLS = {"open", "read_text", "read_bytes", "write_text", "write_bytes", "iterdir"}
FILE_CALLS |= {"listdir", "scandir", "unlink", "mkdir", "makedirs", "rmdir"}
# The one read left in the deciding half: the role catalogue, the package's own data file,
# read once (cached) when the loader first asks. Moving it into the loader means changing the
# policy tools that import it from roles.py; until then it is allowed here and nowhere else.
KNOWN_READS = {("roles.py", "_catalogue")}
KNOWN_IMPORTS = {("roles.py", "importlib.resources")}


def _module_id(path: Path) -> str:
    return path.relative_to(PACKAGE).as_posix()


def _imported(node: ast.AST) -> list[str]:
    """Dotted names an import statement brings in (`from a import b` gives a and a.b)."""
    if isinstance(node, ast.Import):
        return [alias.name for alias in node.names]
    if isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
        return [node.module] + [f"{node.module}.{alias.name}" for alias in node.names]
    return []


def _known_nodes(tree: ast.Module, name: str) -> set[int]:
    """ids of the nodes inside the functions KNOWN_READS allows for this module."""
    allowed = {function for module, function in KNOWN_READS if module == name}
    inside: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef) and node.name in allowed:
            inside.update(id(child) for child in ast.walk(node))
    return inside


def _gc_uses(name: str, text: str) -> list[str]:
    """Where a module imports or touches the garbage collector."""
    found = []
    for node in ast.walk(ast.parse(text)):
        if any(imported.split(".")[0] == "gc" for imported in _imported(node)):
            found.append(f"{name}:{node.lineno} imports gc")
        value = node.value if isinstance(node, ast.Attribute) else None
        if isinstance(value, ast.Name) and value.id == "gc":
            found.append(f"{name}:{node.lineno} touches gc")
    return found


def _file_io(name: str, text: str) -> list[str]:
    """Where a module imports a file-handling module or calls a file operation."""
    tree = ast.parse(text)
    known = _known_nodes(tree, name)
    found = []
    for node in ast.walk(tree):
        for imported in _imported(node):
            if (name, imported) in KNOWN_IMPORTS:
                continue
            if imported.split(".")[0] in FILE_MODULES or imported == "importlib.resources":
                found.append(f"{name}:{node.lineno} imports {imported}")
        if not isinstance(node, ast.Call) or id(node) in known:
            continue
        if isinstance(node.func, ast.Name) and node.func.id == "open":
            found.append(f"{name}:{node.lineno} opens a file")
        if isinstance(node.func, ast.Attribute) and node.func.attr in FILE_CALLS:
            found.append(f"{name}:{node.lineno} calls {node.func.attr}")
    return found


@pytest.mark.parametrize("path", EVERY_MODULE, ids=[_module_id(p) for p in EVERY_MODULE])
def test_no_garbage_collector(path: Path) -> None:
    # The collector's pause around a load is process-wide: its callers' business (runtime.py).
    assert _gc_uses(_module_id(path), path.read_text(encoding="utf-8")) == []


@pytest.mark.parametrize("path", DECIDING, ids=[_module_id(p) for p in DECIDING])
def test_deciding_half_does_no_file_io(path: Path) -> None:
    assert _file_io(_module_id(path), path.read_text(encoding="utf-8")) == []


BREAKS_PURITY = {
    "import gc": (_gc_uses, "import gc\n"),
    "from gc import": (_gc_uses, "from gc import disable\n"),
    "gc call": (_gc_uses, "def f():\n    gc.disable()\n"),
    "open": (_file_io, "def f():\n    return open('x').read()\n"),
    "pathlib": (_file_io, "from pathlib import Path\n"),
    "os.path": (_file_io, "import os.path\n"),
    "from os import": (_file_io, "from os import stat\n"),
    "read_text": (_file_io, "def f(p):\n    return p.read_text()\n"),
    "importlib.resources": (_file_io, "from importlib import resources\n"),
    "a known read elsewhere": (_file_io, "def _catalogue(p):\n    return p.read_text()\n"),
}


@pytest.mark.parametrize("case", BREAKS_PURITY)
def test_the_purity_checks_catch_what_they_forbid(case: str) -> None:
    # A check that sees nothing would pass too: each forbidden form must be found.
    check, text = BREAKS_PURITY[case]
    assert check("evaluator.py", text)


def test_the_known_read_is_allowed_only_where_it_stands() -> None:
    text = "from importlib import resources\ndef _catalogue(p):\n    return p.read_text()\n"
    assert _file_io("roles.py", text) == []
    assert _file_io("roles.py", text + "def other(p):\n    return p.read_text()\n")
