"""The machine and the tools: versions for the report, h2load and nginx found or installed.

A missing tool never fails the harness: as root with apt-get it installs `nghttp2-client` and
`nginx-light`; otherwise, or if that fails, the rows that need the tool are skipped and the
report says why.
"""

from __future__ import annotations

import importlib.metadata
import os
import platform
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

APT_PACKAGES = ("nghttp2-client", "nginx-light")
TOOLS = {"h2load": "nghttp2-client", "nginx": "nginx-light"}


def _which(tool: str) -> str | None:
    # nginx lives in /usr/sbin, which a non-root PATH may lack.
    return shutil.which(tool) or shutil.which(tool, path="/usr/sbin:/usr/local/sbin:/sbin")


def ensure_tools(install: bool) -> tuple[dict[str, str | None], list[str]]:
    """({tool: path or None}, notes). Tries apt-get once when allowed and something is missing."""
    found = {tool: _which(tool) for tool in TOOLS}
    notes: list[str] = []
    missing = [tool for tool, path in found.items() if path is None]
    if not missing:
        return found, notes
    can_apt = os.geteuid() == 0 and shutil.which("apt-get") is not None
    if install and can_apt:
        started = time.monotonic()
        packages = [TOOLS[tool] for tool in missing]
        ok = _apt(["install", "-y", *packages]) or (
            _apt(["update"]) and _apt(["install", "-y", *packages])
        )
        found = {tool: _which(tool) for tool in TOOLS}
        took = time.monotonic() - started
        state = "installed" if ok else "could not install"
        notes.append(f"apt-get {state} {', '.join(packages)} ({took:.0f} s, before timing began)")
    elif install:
        notes.append(
            f"{', '.join(missing)} missing and not installable here (needs root and apt-get): "
            f"install {', '.join(TOOLS[t] for t in missing)} to get those rows"
        )
    for tool, path in found.items():
        if path is None:
            notes.append(f"{tool} unavailable: rows that need it are skipped")
    return found, notes


def _apt(args: list[str]) -> bool:
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    try:
        done = subprocess.run(
            ["apt-get", *args], capture_output=True, timeout=600, env=env, check=False
        )
    except (OSError, subprocess.TimeoutExpired):
        return False
    return done.returncode == 0


def _package(name: str) -> str | None:
    try:
        return importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
        return None


def nginx_version(path: str | None) -> str | None:
    if path is None:
        return None
    done = subprocess.run([path, "-v"], capture_output=True, text=True, check=False)
    match = re.search(r"nginx/([\d.]+)", done.stderr + done.stdout)
    return match.group(1) if match else None


def h2load_version(path: str | None) -> str | None:
    if path is None:
        return None
    done = subprocess.run([path, "--version"], capture_output=True, text=True, check=False)
    match = re.search(r"nghttp2/([\d.]+)", done.stdout + done.stderr)
    return match.group(1) if match else None


def envoy_version() -> str | None:
    """The Envoy the envoy phase starts (gateway.testing.envoy finds it), or None."""
    from gateway.testing.envoy import envoy_available, envoy_binary

    if not envoy_available():
        return None
    done = subprocess.run(
        [envoy_binary(), "--version"], capture_output=True, text=True, timeout=60, check=False
    )
    match = re.search(r"/(\d+\.\d+\.\d+)/", done.stdout + done.stderr)
    return match.group(1) if match else None


def versions(tools: dict[str, str | None]) -> dict[str, str | None]:
    from gateway import __version__ as opsgate_version

    return {
        "python": platform.python_version(),
        "opsgate": opsgate_version,
        "grpcio": _package("grpcio"),
        "protobuf": _package("protobuf"),
        "uvloop": _package("uvloop"),
        "pyjwt": _package("pyjwt"),
        "cryptography": _package("cryptography"),
        "nginx": nginx_version(tools.get("nginx")),
        "h2load": h2load_version(tools.get("h2load")),
        "envoy": envoy_version(),
        "cedarpy": _package("cedarpy"),
        "casbin": _package("casbin"),
        "matplotlib": _package("matplotlib"),
        "py-spy": _package("py-spy"),
    }


def machine() -> dict[str, Any]:
    model = None
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    memory_kb = None
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                memory_kb = int(line.split()[1])
    except OSError:
        pass
    return {
        "cpu_model": model or platform.processor() or "unknown",
        "cores": os.cpu_count(),
        "usable_cores": len(os.sched_getaffinity(0)),
        "memory_gib": round(memory_kb / 1024 / 1024, 1) if memory_kb else None,
        "kernel": platform.release(),
        "platform": platform.platform(),
        "load_average_at_start": os.getloadavg(),
        "python_executable": sys.executable,
    }
