"""One way to stand up the world: free ports and loop threads come from gateway.testing only.

tests/, hardening/ and benchmarks/ must not grow their own free-port finder (a socket bound to
port 0, or any `socket.socket(` with a `bind(`) or loop thread (`class LoopThread`, a
`run_forever` target), nor edit the import path (`sys.path`, `PYTHONPATH`): gateway.testing is
importable everywhere without it.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
SCANNED = ("tests", "hardening", "benchmarks")
THIS = Path(__file__).resolve()


def _sources() -> list[Path]:
    return sorted(
        path for top in SCANNED for path in (REPO / top).rglob("*.py") if path.resolve() != THIS
    )


def _calls(tree: ast.AST, name: str) -> bool:
    """Whether the module calls something ending in `name` (`socket.socket`, `probe.bind`, ...)."""
    for node in ast.walk(tree):
        if isinstance(node, ast.Call):
            func = node.func
            called = func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", "")
            if called == name:
                return True
    return False


def _problems(path: Path) -> list[str]:
    text = path.read_text()
    tree = ast.parse(text, str(path))
    found = []
    if _calls(tree, "socket") and _calls(tree, "bind"):
        found.append("binds its own socket (a free-port finder): use gateway.testing.ports")
    if re.search(r"bind\(\(\s*[\"']127\.0\.0\.1[\"']\s*,\s*0\s*\)\)", text):
        found.append("binds port 0 itself: use gateway.testing.ports.free_port")
    for node in ast.walk(tree):
        if isinstance(node, ast.ClassDef) and node.name == "LoopThread":
            found.append("defines a LoopThread: use gateway.testing.loop")
    if re.search(r"\brun_forever\b", text):
        found.append("runs an event loop forever on a thread: use gateway.testing.loop")
    if re.search(r"\bsys\.path\b", text):
        found.append("touches sys.path")
    if re.search(r"[\"']PYTHONPATH[\"']", text):
        found.append("sets PYTHONPATH for a child")
    return found


@pytest.mark.parametrize("top", SCANNED)
def test_no_own_ports_loops_or_path_edits(top: str) -> None:
    offenders = {
        str(path.relative_to(REPO)): problems
        for path in _sources()
        if path.relative_to(REPO).parts[0] == top and (problems := _problems(path))
    }
    assert not offenders, offenders


def test_the_scan_sees_each_kind_of_copy(tmp_path: Path) -> None:
    """The patterns above catch the copies this test was written to keep out."""
    copy = tmp_path / "copy.py"
    copy.write_text(
        "import socket, sys, asyncio, threading\n"
        "def free_port():\n"
        "    with socket.socket() as probe:\n"
        "        probe.bind(('127.0.0.1', 0))\n"
        "        return probe.getsockname()[1]\n"
        "class LoopThread:\n"
        "    def __init__(self):\n"
        "        self.loop = asyncio.new_event_loop()\n"
        "        threading.Thread(target=self.loop.run_forever).start()\n"
        "sys.path.insert(0, '.')\n"
        "env = {'PYTHONPATH': '.'}\n"
    )
    assert len(_problems(copy)) == 6
