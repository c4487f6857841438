"""Runs the real `opsgate` CLI in a fresh interpreter, from the repository root, as users do."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def opsgate(*args: str | Path) -> subprocess.CompletedProcess[str]:
    """`python -m gateway ARGS`: its exit code, stdout and stderr (a minute at most)."""
    return subprocess.run(
        [sys.executable, "-m", "gateway", *map(str, args)],
        capture_output=True,
        text=True,
        cwd=ROOT,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
        timeout=60,
        check=False,
    )
