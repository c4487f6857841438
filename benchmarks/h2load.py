"""Drives unary gRPC calls with h2load and reads what it measured.

h2load speaks HTTP/2, not gRPC, but a unary gRPC call is an HTTP/2 POST with
`content-type: application/grpc`, `te: trailers` and a body holding the 5-byte frame header and
the serialized request, so h2load can send it. It sees only HTTP 200: whether the call really
returned grpc-status 0 is checked separately (benchmarks.check). Per-request latencies come
from its --log-file. With `h1` it sends HTTP/1.1 GETs instead (the REST door's calls), one
request at a time per connection: HTTP/1.1 clients do not pipeline.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

from benchmarks.procs import CpuWindow

_FINISHED = re.compile(r"finished in ([\d.]+)(m?s), ([\d.]+) req/s")
_REQUESTS = re.compile(
    r"requests: (\d+) total, (\d+) started, (\d+) done, (\d+) succeeded, (\d+) failed, "
    r"(\d+) errored, (\d+) timeout"
)


@dataclass
class H2loadResult:
    """One h2load run: throughput, per-request latencies (µs) and front-end CPU."""

    seconds: float
    rps: float
    succeeded: int
    failed: int
    errored: int
    latencies_us: list[int]
    non_200: int
    cpu_s: dict[int, float]
    sys_s: dict[int, float]


def available() -> str | None:
    return shutil.which("h2load")


def connections_for(concurrency: int) -> tuple[int, int]:
    """(connections, streams per connection): up to 16 connections, the rest multiplexed."""
    connections = min(concurrency, 16)
    return connections, max(1, concurrency // connections)


def parse_summary(text: str) -> tuple[float, float, int, int, int]:
    """(seconds, req/s, succeeded, failed, errored) from h2load's summary."""
    finished = _FINISHED.search(text)
    requests = _REQUESTS.search(text)
    if finished is None or requests is None:
        raise ValueError(f"unexpected h2load output:\n{text[-2000:]}")
    seconds = float(finished.group(1)) / (1000.0 if finished.group(2) == "ms" else 1.0)
    return (
        seconds,
        float(finished.group(3)),
        int(requests.group(4)),
        int(requests.group(5)),
        int(requests.group(6)),
    )


def parse_log(path: Path) -> tuple[list[int], int]:
    """(latencies in µs, how many answers were not HTTP 200) from h2load's --log-file."""
    latencies: list[int] = []
    non_200 = 0
    with path.open() as log:
        for line in log:
            parts = line.split("\t")
            if len(parts) < 3:
                continue
            if parts[1] != "200":
                non_200 += 1
            latencies.append(int(parts[2]))
    return latencies, non_200


def argv_for(
    url: str,
    body: Path | None,
    *,
    concurrency: int,
    seconds: float,
    token: str | None,
    log_path: Path,
    h1: bool = False,
) -> list[str]:
    """h2load's command line: a gRPC POST of `body`, or with `h1` an HTTP/1.1 GET of `url`."""
    # HTTP/1.1 has no streams (h2load's -m would pipeline): one connection per request in flight.
    connections, streams = (concurrency, 1) if h1 else connections_for(concurrency)
    argv = [
        "h2load",
        "-D",
        f"{round(seconds * 1000)}ms",
        "-c",
        str(connections),
        "-m",
        str(streams),
        "-t",
        "1",
        f"--log-file={log_path}",
    ]
    if h1:
        argv.append("--h1")
    else:
        argv += ["-H", "content-type: application/grpc", "-H", "te: trailers"]
    if body is not None:
        argv += ["-d", str(body)]
    if token is not None:
        argv += ["-H", f"authorization: Bearer {token}"]
    argv.append(url)
    return argv


def run(
    url: str,
    body: Path | None,
    *,
    concurrency: int,
    seconds: float,
    token: str | None,
    log_path: Path,
    cpu_pids: list[int],
    h1: bool = False,
) -> H2loadResult:
    """One timed run; CPU of `cpu_pids` (process trees) is counted over h2load's lifetime."""
    argv = argv_for(
        url,
        body,
        concurrency=concurrency,
        seconds=seconds,
        token=token,
        log_path=log_path,
        h1=h1,
    )
    window = CpuWindow(cpu_pids)
    window.start()
    done = subprocess.run(argv, capture_output=True, text=True, timeout=seconds + 60)
    cpu = window.stop()
    if done.returncode != 0:
        raise RuntimeError(f"h2load failed ({done.returncode}): {done.stderr[-2000:]}")
    elapsed, rps, succeeded, failed, errored = parse_summary(done.stdout)
    latencies, non_200 = parse_log(log_path)
    log_path.unlink(missing_ok=True)
    return H2loadResult(
        elapsed, rps, succeeded, failed, errored, latencies, non_200, cpu, window.system
    )
