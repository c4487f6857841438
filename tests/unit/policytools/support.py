"""Helpers for the policy tool tests: write fixture files, run `opsgate policy ...` in-process."""

from __future__ import annotations

import contextlib
import io
import textwrap
from dataclasses import dataclass
from pathlib import Path

from gateway.cli import main

GET = "contactcenterinsights.operations.get"
LIST = "contactcenterinsights.operations.list"
CANCEL = "contactcenterinsights.operations.cancel"
OP = "projects/p/locations/l/operations/o"
WHEN = "2026-06-01T12:00:00Z"

# A custom profile that routes only GetOperation on plain operations.
GET_ONLY_PROFILE = """\
service: contactcenterinsights.googleapis.com
routes:
  GetOperation:
    - pattern: projects/*/locations/*/operations/*
      permission: contactcenterinsights.operations.get
"""


@dataclass(frozen=True)
class Result:
    code: int
    out: str
    err: str


def write(directory: Path, name: str, text: str) -> Path:
    path = directory / name
    path.write_text(textwrap.dedent(text), encoding="utf-8")
    return path


def line_of(path: Path, needle: str, occurrence: int = 1) -> int:
    """1-based line of the n-th line of the file containing `needle`."""
    seen = 0
    for number, line in enumerate(path.read_text().splitlines(), start=1):
        if needle in line:
            seen += 1
            if seen == occurrence:
                return number
    raise AssertionError(f"{needle!r} not in {path}")


def opsgate(*args: str | Path) -> Result:
    """`opsgate ARGS...` in this process, with what it printed and its exit status."""
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            code = main([str(a) for a in args])
        except SystemExit as exc:  # argparse usage errors
            code = exc.code if isinstance(exc.code, int) else 2
    return Result(code, out.getvalue(), err.getvalue())
