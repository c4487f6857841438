"""Where a front end's CPU goes under warm load, in µs per call.

Two views, both taken while h2load (or the Python generator) drives warm calls at c=16:

- per thread, from /proc/PID/task/TID/stat (user and system time, exact, no overhead), with
  the threads named by `py-spy dump` where py-spy is installed;
- per function, sampled by py-spy (non-blocking, 250 Hz, with thread ids): the functions with
  the most time of their own, and the gateway's functions by inclusive time, each converted to
  µs per call (samples / rate / calls). Frames in native code (the event loop, gRPC's C core)
  show as the Python frame that called into it.

Without py-spy, or when it may not attach, a separate gateway runs under cProfile instead and is
stopped cleanly so that it writes its profile.
"""

from __future__ import annotations

import io
import json
import os
import pstats
import re
import shutil
import subprocess
import sys
import threading
from collections import Counter
from pathlib import Path
from typing import Any

from benchmarks.bench import Bench, Measurement
from benchmarks.procs import CLOCK_TICKS, Service

RATE_HZ = 250
# Leaf frames that are a thread waiting, not working.
_WAITING = ("Condition.wait", "Event.wait", "Thread.run (", "_poll_wrapper", "select", "sleep")


def py_spy() -> str | None:
    beside = Path(sys.executable).with_name("py-spy")
    return str(beside) if beside.exists() else shutil.which("py-spy")


def thread_ticks(pid: int) -> dict[int, tuple[int, int]]:
    """{tid: (user ticks, system ticks)} of every live thread of `pid`."""
    found: dict[int, tuple[int, int]] = {}
    try:
        tids = os.listdir(f"/proc/{pid}/task")
    except OSError:
        return found
    for tid in tids:
        try:
            text = Path(f"/proc/{pid}/task/{tid}/stat").read_text()
        except OSError:
            continue
        fields = text[text.rindex(")") + 2 :].split()
        found[int(tid)] = (int(fields[11]), int(fields[12]))
    return found


def thread_names(pid: int) -> dict[int, str]:
    """{tid: name}: the main thread, Python threads by name (py-spy), others by their comm."""
    names: dict[int, str] = {pid: "main (event loop)"}
    try:
        for tid in os.listdir(f"/proc/{pid}/task"):
            if int(tid) != pid:
                comm = Path(f"/proc/{pid}/task/{tid}/comm").read_text().strip()
                names[int(tid)] = f"{comm} (native)" if comm != "python" else "python thread"
    except OSError:
        pass
    spy = py_spy()
    if spy is None:
        return names
    try:
        done = subprocess.run(
            [spy, "dump", "--pid", str(pid), "--json", "--nonblocking"],
            capture_output=True,
            text=True,
            timeout=30,
            check=False,
        )
        for thread in json.loads(done.stdout):
            tid = thread.get("os_thread_id") or thread.get("thread_id")
            name = thread.get("thread_name")
            if isinstance(tid, int) and name and tid != pid:
                names[tid] = name
    except (OSError, subprocess.SubprocessError, ValueError, TypeError):
        pass  # names from /proc only
    return names


def fold(raw: str, calls: float, top: int = 20) -> dict[str, Any]:
    """Top functions in µs per call from py-spy's raw output recorded with --threads."""
    own: Counter[str] = Counter()
    inclusive: Counter[str] = Counter()
    per_thread: Counter[str] = Counter()
    for line in raw.splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not stack or not count_text.isdigit():
            continue
        count = int(count_text)
        frames = stack.split(";")
        thread = next((f for f in frames if f.startswith("thread ")), "thread ?")
        label = re.sub(r"^thread \((0x)?[0-9a-fA-F]+\): ?", "", thread) or "?"
        frames = [f for f in frames if not f.startswith(("process ", "thread "))]
        if not frames:
            continue
        leaf = frames[-1]
        if any(mark in leaf for mark in _WAITING):
            continue
        per_thread[label] += count
        own[f"{leaf} [{label}]"] += count
        for frame in set(frames):
            inclusive[frame] += count

    def us(count: int) -> float:
        return count / RATE_HZ / calls * 1e6 if calls else 0.0

    return {
        "calls": calls,
        "threads_us": {label: us(n) for label, n in per_thread.most_common()},
        "self_us": [(frame, us(n)) for frame, n in own.most_common(top)],
        "inclusive_gateway_us": [
            (frame, us(n))
            for frame, n in inclusive.most_common()
            if "gateway/" in frame
            and "cli.py" not in frame
            and "runtime.py" not in frame
            and "__main__" not in frame
        ][:top],
    }


def _load(
    bench: Bench,
    service: Service,
    seconds: float,
    box: list[Measurement],
    cold: list[Path] | None = None,
    via: str | None = None,
) -> None:
    """Warm load on `service` for `seconds` (h2load, else the Python generator); with `cold`
    token files, the Python generator with a new token per call. With `via`, the calls go
    there (an Envoy in front of `service`, its authorizer) and `service`'s CPU is counted."""
    address = via or service.address
    if cold is not None:
        measurement, _ = bench.pygen(
            address,
            calls=10**9,
            concurrency=16,
            front=service.pid,
            tokens=cold,
            max_seconds=seconds,
        )
        box.append(measurement)
    elif bench.tools.get("h2load"):
        box.append(bench.h2load(address, 16, seconds, bench.warm_token, service.pid))
    else:
        measurement, _ = bench.pygen(
            address,
            calls=int(seconds * 1500),
            concurrency=16,
            front=service.pid,
            token_file=bench.warm_token_file,
        )
        box.append(measurement)


def threads_cpu(
    bench: Bench, service: Service, seconds: float, via: str | None = None
) -> dict[str, Any]:
    """CPU per call of each thread of `service` under warm load at c=16 (sent to `via`)."""
    names = thread_names(service.pid)
    before = thread_ticks(service.pid)
    box: list[Measurement] = []
    _load(bench, service, seconds, box, via=via)
    after = thread_ticks(service.pid)
    calls = max(box[0].calls, 1)
    rows: list[dict[str, Any]] = []
    for tid, (user, system) in after.items():
        was = before.get(tid, (0, 0))
        du, ds = user - was[0], system - was[1]
        if du + ds == 0:
            continue
        rows.append(
            {
                "thread": names.get(tid, f"thread {tid}"),
                "user_us": du / CLOCK_TICKS / calls * 1e6,
                "sys_us": ds / CLOCK_TICKS / calls * 1e6,
            }
        )
    rows.sort(key=lambda r: -(r["user_us"] + r["sys_us"]))
    return {"calls": calls, "rps": box[0].rps, "cpu_us": box[0].cpu_us, "threads": rows}


def sample(
    bench: Bench,
    service: Service,
    seconds: float,
    name: str,
    cold: list[Path] | None = None,
    via: str | None = None,
) -> dict[str, Any]:
    """py-spy `service` while it serves warm (or cold) load, sent to `via` if given; raises if
    py-spy is unusable."""
    spy = py_spy()
    if spy is None:
        raise RuntimeError("py-spy not installed")
    out = bench.dir / f"{name}.pyspy.txt"
    argv = [
        spy,
        "record",
        "--pid",
        str(service.pid),
        "--duration",
        f"{seconds:g}",
        "--rate",
        str(RATE_HZ),
        "--format",
        "raw",
        "--function",
        "--threads",
        "--nonblocking",
        "--output",
        str(out),
    ]
    box: list[Measurement] = []
    load = threading.Thread(
        target=_load, args=(bench, service, seconds + 1.5, box, cold, via), daemon=True
    )
    load.start()
    done = subprocess.run(argv, capture_output=True, text=True, timeout=seconds + 60, check=False)
    load.join()
    if done.returncode != 0 or not out.exists():
        raise RuntimeError(f"py-spy failed: {done.stderr.strip()[-500:]}")
    calls = box[0].rps * seconds if box else 0.0  # the load runs longer than the sampling
    folded = fold(out.read_text(), calls)
    folded["tool"] = f"py-spy, non-blocking, {RATE_HZ} Hz, all threads"
    return folded


def cprofile_gateway(bench: Bench, seconds: float) -> dict[str, Any]:
    """A gateway under cProfile (main thread only), warm load, then a clean stop."""
    out = bench.dir / "gateway.cprofile"
    service = bench.start_gateway(
        "opsgate-cprofile", prefix=[sys.executable, "-m", "cProfile", "-o", str(out)]
    )
    _load(bench, service, seconds, [])
    bench.stop(service)
    text = io.StringIO()
    stats = pstats.Stats(str(out), stream=text)
    stats.strip_dirs().sort_stats("tottime").print_stats(20)
    stats.sort_stats("cumtime").print_stats(20)
    return {"tool": "cProfile (main thread; py-spy unavailable)", "text": text.getvalue()}


def profile(
    bench: Bench, services: dict[str, Service], seconds: float, cold: bool
) -> dict[str, Any]:
    """Thread CPU and sampled profiles of the gateway and, for contrast, the fast forwarder;
    with `cold`, also the gateway under cold load (a new token and principal per call)."""
    results: dict[str, Any] = {}
    for key in ("opsgate", "forwarder-fast"):
        service = services.get(key)
        if service is None:
            continue
        entry: dict[str, Any] = {"threads": threads_cpu(bench, service, seconds)}
        try:
            entry["sampled"] = sample(bench, service, seconds, key)
        except Exception as exc:
            if key == "opsgate":
                bench.note(f"py-spy unusable ({exc}); cProfile used instead")
                entry["sampled"] = cprofile_gateway(bench, seconds)
            else:
                entry["sampled"] = {"error": str(exc)}
        results[key] = entry
    gateway = services.get("opsgate")
    if cold and gateway is not None and py_spy() is not None:
        files = bench.identity.sign_many(
            "profile-cold",
            int((seconds + 3) * 2500),
            algorithm="RS256",
            email_pattern="profiled{i}@bench.example",
        )
        try:
            results["opsgate (cold caches)"] = {
                "sampled": sample(bench, gateway, seconds, "opsgate-cold", files)
            }
        except Exception as exc:
            results["opsgate (cold caches)"] = {"sampled": {"error": str(exc)}}
    return results
