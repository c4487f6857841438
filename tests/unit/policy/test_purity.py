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
    # gateway.errors (which the loader raises from) imports grpc; deciding must not need it.
    code = (
        "import sys\n"
        "from gateway.policy import evaluate, explain, Caller, AccessRequest, Decision\n"
        "from gateway.policy.cel import compile_condition\n"
        "compile_condition('resource.name.matches(\"^projects/\")')\n"
        "assert 'grpc' not in sys.modules, 'grpc imported'\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, cwd=PACKAGE.parent.parent)
